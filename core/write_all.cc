#include "core/write_all.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>

namespace postern {

bool writeAll(int fd, std::vector<iovec>& iov) {
  size_t i = 0;
  while (i < iov.size()) {
    int n = static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX));
    ssize_t w = ::writev(fd, &iov[i], n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    auto left = static_cast<size_t>(w);
    while (i < iov.size() && left >= iov[i].iov_len) left -= iov[i++].iov_len;
    if (left > 0) {
      iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
      iov[i].iov_len -= left;
    }
  }
  return true;
}

}  // namespace postern
