#include "queue/spool_dirs.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/write_all.h"
#include "queue/record.h"

namespace postern {
namespace {

namespace fs = std::filesystem;

fs::path segmentPath(const fs::path& dir, unsigned id) { return dir / segmentFileName(id); }

std::vector<uint32_t> idsIn(const fs::path& dir) {
  std::error_code ec;
  return postern::segmentIds(dir.string(), ec);
}

bool syncDir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

std::vector<uint32_t> segmentIds(const std::string& dir, std::error_code& ec) {
  std::vector<uint32_t> ids;
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

std::string segmentFileName(uint32_t id) {
  char name[32];
  std::snprintf(name, sizeof name, "seg-%08x.log", id);
  return name;
}

std::optional<uint64_t> readSpoolSalt(const std::string& dir, const std::vector<uint32_t>& ids) {
  std::ifstream in(dir + "/salt");
  std::string text;
  if (in >> text && text.size() == 16 && text.find_first_not_of("0123456789abcdef") == text.npos) {
    return std::stoull(text, nullptr, 16);
  }
  for (uint32_t id : ids) {
    int fd = ::open((dir + "/" + segmentFileName(id)).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char head[kSegmentHeaderSize];
    const bool got = ::pread(fd, head, sizeof head, 0) == static_cast<ssize_t>(sizeof head);
    ::close(fd);
    if (got) {
      if (auto salt = decodeSegmentHeader({head, sizeof head})) return salt;
    }
  }
  return std::nullopt;
}

bool writeSpoolSalt(const std::string& dir, uint64_t salt) {
  char text[32];
  const int n =
      std::snprintf(text, sizeof text, "%016llx\n", static_cast<unsigned long long>(salt));
  const std::string tmp = dir + "/salt.tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return false;
  std::vector<iovec> iov{{text, static_cast<size_t>(n)}};
  bool ok = writeAll(fd, iov) && ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  return ok && ::rename(tmp.c_str(), (dir + "/salt").c_str()) == 0;
}

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
    auto existing = idsIn(target);
    unsigned next = existing.empty() ? 1 : existing.back() + 1;
    for (unsigned id : idsIn(e.path())) {
      fs::rename(segmentPath(e.path(), id), segmentPath(target, next++), ec);
      if (ec) return e.path().string() + ": " + ec.message();
    }
    if (!syncDir(target) || !syncDir(e.path())) return target.string() + ": fsync failed";
    fs::remove(e.path(), ec);  // only if now empty; a leftover file keeps it
  }
  return "";
}

}  // namespace postern
