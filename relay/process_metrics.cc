#include "relay/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>

#include "core/metrics.h"

namespace postern {
namespace {

double residentBytes() {
  long pages_total = 0, pages_resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  const int n = std::fscanf(f, "%ld %ld", &pages_total, &pages_resident);
  std::fclose(f);
  return n == 2 ? double(pages_resident) * double(sysconf(_SC_PAGESIZE)) : 0;
}

// /proc/self/fd is opened once and read again from its start at each scrape (procfs lists
// the descriptors as they are then): opening and closing it each time would take a
// descriptor number a worker just closed, which ThreadSanitizer, blind to libuv's own
// closes, reports as a race. Only the server's loop calls this.
double openFds() {
  static DIR* const d = opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  rewinddir(d);
  double n = 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  return n - 1;  // the directory's own descriptor
}

}  // namespace

std::string processMetricsText(const std::string& spool_dir, const ReloadStats& reloads) {
  std::string out;
  auto sample = [&](const char* family, const std::string& labels, double v) {
    addFamilySample(out, family, labels, v);
  };
  sample("process_resident_memory_bytes", "", residentBytes());
  sample("process_open_fds", "", openFds());
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    sample("process_max_fds", "", double(limit.rlim_cur));
  }
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) {
    auto secs = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
    sample("process_cpu_seconds_total", "", secs(usage.ru_utime) + secs(usage.ru_stime));
  }
  sample("process_start_time_seconds", "", reloads.started_at);
  // What an unprivileged writer may still use (f_bavail), as the relay runs as one.
  struct statvfs fs {};
  if (statvfs(spool_dir.c_str(), &fs) == 0) {
    sample("postern_spool_free_bytes", "", double(fs.f_bavail) * double(fs.f_frsize));
  }
  sample("postern_config_reloads_total", "result=\"ok\"", double(reloads.ok));
  sample("postern_config_reloads_total", "result=\"failed\"", double(reloads.failed));
  sample("postern_config_loaded_timestamp_seconds", "", reloads.loaded_at);
  return out;
}

}  // namespace postern
