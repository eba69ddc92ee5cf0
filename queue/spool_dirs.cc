#include "queue/spool_dirs.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
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
  return postern::segmentIds(dir.string()).value_or({});
}

bool syncDir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

Result<std::vector<uint32_t>> segmentIds(const std::string& dir) {
  std::error_code ec;
  std::vector<uint32_t> ids;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (auto id = parseSegmentFileName(e.path().filename().string())) ids.push_back(*id);
  }
  if (ec) return fail(dir + ": " + ec.message());
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<uint64_t> readHoldMarkers(const std::string& dir) {
  std::error_code ec;
  std::vector<uint64_t> ids;
  for (const auto& e : fs::directory_iterator(fs::path(dir) / kHoldDir, ec)) {
    const std::string name = e.path().filename().string();
    // Exactly the writer's spelling: a marker in lower case would be held again at every
    // start, since releasing it unlinks the upper-case name.
    if (auto id = parseQueueId(name); id && queueIdString(*id) == name) ids.push_back(*id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string segmentFileName(uint32_t id) {
  char name[32];
  std::snprintf(name, sizeof name, "seg-%08x.log", id);
  return name;
}

std::optional<uint32_t> parseSegmentFileName(std::string_view name) {
  // Not sscanf("%8x"): it skips blanks and takes a sign, "0x" or upper case, so names
  // that segmentFileName() never makes would map onto a segment path that is not them.
  constexpr std::string_view kHead = "seg-", kTail = ".log";
  constexpr size_t kDigits = 8;
  if (name.size() != kHead.size() + kDigits + kTail.size() || !name.starts_with(kHead) ||
      !name.ends_with(kTail)) {
    return std::nullopt;
  }
  uint32_t id = 0;
  for (char c : name.substr(kHead.size(), kDigits)) {
    unsigned digit = 0;
    if (c >= '0' && c <= '9') {
      digit = static_cast<unsigned>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<unsigned>(c - 'a' + 10);
    } else {
      return std::nullopt;
    }
    id = id << 4 | digit;
  }
  return id;
}

std::string quarantineFileName(const QuarantineName& q) {
  return segmentFileName(q.segment) + "." + std::to_string(q.offset) + "+" +
         std::to_string(q.length);
}

std::optional<QuarantineName> parseQuarantineFileName(std::string_view name) {
  constexpr size_t kSegment = 16;  // "seg-XXXXXXXX.log"
  if (name.size() <= kSegment || name[kSegment] != '.') return std::nullopt;
  auto segment = parseSegmentFileName(name.substr(0, kSegment));
  if (!segment) return std::nullopt;
  // All of digits as one decimal number.
  auto number = [](std::string_view digits) -> std::optional<uint64_t> {
    if (digits.empty() || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
    uint64_t v = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      const auto d = static_cast<uint64_t>(c - '0');
      if (v > (UINT64_MAX - d) / 10) return std::nullopt;
      v = v * 10 + d;
    }
    return v;
  };
  const std::string_view range = name.substr(kSegment + 1);
  const size_t plus = range.find('+');
  if (plus == std::string_view::npos) return std::nullopt;
  auto offset = number(range.substr(0, plus));
  auto length = number(range.substr(plus + 1));
  if (!offset || !length || *length > UINT64_MAX - *offset) return std::nullopt;
  return QuarantineName{*segment, *offset, *length};
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

Status writeSpoolSalt(const std::string& dir, uint64_t salt) {
  char text[32];
  const int n =
      std::snprintf(text, sizeof text, "%016llx\n", static_cast<unsigned long long>(salt));
  const std::string tmp = dir + "/salt.tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  bool ok = fd >= 0;
  if (ok) {
    std::vector<iovec> iov{{text, static_cast<size_t>(n)}};
    ok = writeAll(fd, iov) && ::fsync(fd) == 0;
    ok = ::close(fd) == 0 && ok;
    ok = ok && ::rename(tmp.c_str(), (dir + "/salt").c_str()) == 0;
  }
  if (!ok) return fail(dir + "/salt: " + std::strerror(errno));
  return {};
}

Status createDurableDirectories(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> missing;  // deepest first
  for (fs::path p = fs::absolute(dir, ec); !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    fs::create_directory(*it, ec);
    if (ec) return fail(it->string() + ": " + ec.message());
    if (!syncDir(it->parent_path())) return fail(it->parent_path().string() + ": fsync failed");
  }
  return {};
}

Status mergeOrphanSpools(const std::string& spool_dir, unsigned workers) {
  std::error_code ec;
  if (!fs::is_directory(spool_dir, ec)) return {};
  for (const auto& e : fs::directory_iterator(spool_dir, ec)) {
    unsigned k = 0;
    char extra = 0;
    std::string name = e.path().filename().string();
    if (std::sscanf(name.c_str(), "w%u%c", &k, &extra) != 1 || k < workers) continue;
    fs::path target = fs::path(spool_dir) / ("w" + std::to_string(k % workers));
    if (Status made = createDurableDirectories(target); !made) return made;
    auto existing = idsIn(target);
    unsigned next = existing.empty() ? 1 : existing.back() + 1;
    for (unsigned id : idsIn(e.path())) {
      fs::rename(segmentPath(e.path(), id), segmentPath(target, next++), ec);
      if (ec) return fail(e.path().string() + ": " + ec.message());
    }
    // Hold markers go along (queue ids are unique across workers: no name meets another).
    const fs::path held = e.path() / kHoldDir;
    if (fs::is_directory(held, ec)) {
      if (Status made = createDurableDirectories(target / kHoldDir); !made) return made;
      for (const auto& m : fs::directory_iterator(held, ec)) {
        fs::rename(m.path(), target / kHoldDir / m.path().filename(), ec);
        if (ec) return fail(m.path().string() + ": " + ec.message());
      }
      if (!syncDir(target / kHoldDir) || !syncDir(held))
        return fail(held.string() + ": fsync failed");
      fs::remove(held, ec);
    }
    if (!syncDir(target) || !syncDir(e.path())) return fail(target.string() + ": fsync failed");
    fs::remove(e.path(), ec);  // only if now empty; a leftover file keeps it
  }
  return {};
}

}  // namespace postern
