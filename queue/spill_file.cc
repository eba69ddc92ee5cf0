#include "queue/spill_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/write_all.h"
#include "queue/crc32c.h"

namespace postern {

Result<std::unique_ptr<SpillFile>> SpillFile::create(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // A file system without O_TMPFILE: a named file, unlinked before it is used.
    std::string path = dir + "/spill-XXXXXX";
    fd = ::mkostemp(path.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(path.c_str());
  }
  if (fd < 0) return fail(dir + ": " + std::strerror(errno));
  return std::unique_ptr<SpillFile>(new SpillFile(fd));
}

SpillFile::~SpillFile() { ::close(fd_); }

bool SpillFile::append(std::string_view data) {
  return writePieces(std::span<const std::string_view>(&data, 1));
}

bool SpillFile::append(const MessageBody& body) { return writePieces(body.pieces()); }

bool SpillFile::writePieces(std::span<const std::string_view> pieces) {
  if (error_ != 0) return false;
  std::vector<iovec> iov;
  iov.reserve(pieces.size());
  for (std::string_view p : pieces) iov.push_back({const_cast<char*>(p.data()), p.size()});
  if (!writeAll(fd_, iov)) {
    error_ = errno;
    return false;
  }
  for (std::string_view p : pieces) {
    crc_ = crc32c(crc_, p.data(), p.size());
    size_ += p.size();
  }
  return true;
}

}  // namespace postern
