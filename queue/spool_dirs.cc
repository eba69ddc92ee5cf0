#include "queue/spool_dirs.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

namespace postern {
namespace {

namespace fs = std::filesystem;

std::vector<unsigned> segmentIds(const fs::path& dir) {
  std::vector<unsigned> ids;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    unsigned id = 0;
    char tail = 0;
    std::string name = e.path().filename().string();
    if (name.size() == 16 && std::sscanf(name.c_str(), "seg-%8x.lo%c", &id, &tail) == 2 &&
        tail == 'g') {
      ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

fs::path segmentPath(const fs::path& dir, unsigned id) {
  char name[32];
  std::snprintf(name, sizeof name, "seg-%08x.log", id);
  return dir / name;
}

bool syncDir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

std::string createDurableDirectories(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> missing;  // deepest first
  for (fs::path p = fs::absolute(dir, ec); !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    fs::create_directory(*it, ec);
    if (ec) return it->string() + ": " + ec.message();
    if (!syncDir(it->parent_path())) return it->parent_path().string() + ": fsync failed";
  }
  return "";
}

std::string mergeOrphanSpools(const std::string& spool_dir, unsigned workers) {
  std::error_code ec;
  if (!fs::is_directory(spool_dir, ec)) return "";
  for (const auto& e : fs::directory_iterator(spool_dir, ec)) {
    unsigned k = 0;
    char extra = 0;
    std::string name = e.path().filename().string();
    if (std::sscanf(name.c_str(), "w%u%c", &k, &extra) != 1 || k < workers) continue;
    fs::path target = fs::path(spool_dir) / ("w" + std::to_string(k % workers));
    if (std::string err = createDurableDirectories(target); !err.empty()) return err;
    auto existing = segmentIds(target);
    unsigned next = existing.empty() ? 1 : existing.back() + 1;
    for (unsigned id : segmentIds(e.path())) {
      fs::rename(segmentPath(e.path(), id), segmentPath(target, next++), ec);
      if (ec) return e.path().string() + ": " + ec.message();
    }
    if (!syncDir(target) || !syncDir(e.path())) return target.string() + ": fsync failed";
    fs::remove(e.path(), ec);  // only if now empty; a leftover file keeps it
  }
  return "";
}

}  // namespace postern
