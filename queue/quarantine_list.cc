#include "queue/quarantine_list.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <tuple>

namespace postern {
namespace {

// "wN" as the relay names a worker's directory (N decimal, no leading zero); else nullopt.
std::optional<unsigned> parseWorkerDir(std::string_view name) {
  constexpr size_t kMaxDigits = 9;  // fits an unsigned
  if (name.size() < 2 || name.size() > 1 + kMaxDigits || name[0] != 'w') return std::nullopt;
  if (name.size() > 2 && name[1] == '0') return std::nullopt;
  unsigned n = 0;
  for (char c : name.substr(1)) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<unsigned>(c - '0');
  }
  return n;
}

void sortListing(QuarantineListing& out) {
  std::sort(out.ranges.begin(), out.ranges.end(), [](const auto& a, const auto& b) {
    return std::tie(a.worker, a.range.segment, a.range.offset, a.range.length) <
           std::tie(b.worker, b.range.segment, b.range.offset, b.range.length);
  });
  std::sort(out.ignored.begin(), out.ignored.end());
}

// Reads dir's entry names (not . and ..) into names, counting them against the limit.
// false with out.errors added if dir cannot be read; a missing dir is empty when
// missing_ok.
bool readNames(const std::string& dir, bool missing_ok, QuarantineListing& out, size_t limit,
               std::vector<std::string>& names) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (missing_ok && (errno == ENOENT || errno == ENOTDIR)) return true;
    out.errors.push_back(printableName(dir) + ": " + std::strerror(errno));
    return false;
  }
  bool ok = true;
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(d);
    if (e == nullptr) {
      if (errno != 0) {
        out.errors.push_back(printableName(dir) + ": " + std::strerror(errno));
        ok = false;
      }
      break;
    }
    const std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (out.examined >= limit) {
      out.truncated = true;
      break;
    }
    ++out.examined;
    names.emplace_back(name);
  }
  ::closedir(d);
  return ok;
}

}  // namespace

uint64_t QuarantineListing::bytes() const {
  uint64_t n = 0;
  for (const auto& r : ranges) n += r.range.length;
  return n;
}

std::string printableName(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (unsigned char c : name) {
    if (c < 0x20 || c >= 0x7f || c == '\\') {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", c);
      out += esc;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

void listWorkerQuarantine(const std::string& worker_dir, unsigned worker, QuarantineListing& out,
                          size_t limit) {
  const std::string dir = worker_dir + "/quarantine";
  std::vector<std::string> names;
  readNames(dir, true, out, limit, names);
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    const auto range = parseQuarantineFileName(name);
    struct stat st;
    // Not followed: a link could point anywhere, and the spool never makes one.
    const int rc = range ? ::lstat(path.c_str(), &st) : -1;
    // A file gone between the listing and the lstat (an operator cleaning up) is gone.
    if (rc != 0 && range && errno == ENOENT) continue;
    if (rc != 0 || !S_ISREG(st.st_mode)) {
      out.ignored.push_back(printableName(path));
      continue;
    }
    QuarantinedRange r;
    r.worker = worker;
    r.range = *range;
    r.path = path;
    r.mtime_ms = int64_t{st.st_mtim.tv_sec} * 1000 + st.st_mtim.tv_nsec / 1000000;
    r.size = static_cast<uint64_t>(st.st_size);
    out.ranges.push_back(std::move(r));
  }
  sortListing(out);
}

QuarantineListing listQuarantine(const std::string& spool_dir, size_t limit) {
  QuarantineListing out;
  std::vector<std::string> names;
  if (!readNames(spool_dir, false, out, limit, names)) return out;
  std::vector<std::pair<unsigned, std::string>> workers;
  for (const std::string& name : names) {
    if (auto n = parseWorkerDir(name)) workers.emplace_back(*n, spool_dir + "/" + name);
  }
  std::sort(workers.begin(), workers.end());
  for (const auto& [n, dir] : workers) listWorkerQuarantine(dir, n, out, limit);
  return out;
}

}  // namespace postern
