#include "queue/spill_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "queue/crc32c.h"

namespace postern {

std::unique_ptr<SpillFile> SpillFile::create(const std::string& dir, std::string& err) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // A file system without O_TMPFILE: a named file, unlinked before it is used.
    std::string path = dir + "/spill-XXXXXX";
    fd = ::mkostemp(path.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(path.c_str());
  }
  if (fd < 0) {
    err = dir + ": " + std::strerror(errno);
    return nullptr;
  }
  return std::unique_ptr<SpillFile>(new SpillFile(fd));
}

SpillFile::~SpillFile() { ::close(fd_); }

bool SpillFile::append(std::string_view data) {
  if (error_ != 0) return false;
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      error_ = errno;
      return false;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  crc_ = crc32c(crc_, data.data(), data.size());
  size_ += data.size();
  return true;
}

}  // namespace postern
