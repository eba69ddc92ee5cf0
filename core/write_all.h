// writeAll: writes every byte an iovec list names, with as few writev(2) calls as the
// kernel allows (IOV_MAX at a time, resuming after short writes and EINTR). Returns false
// with errno set on the first failure; iov is consumed on the way.
#pragma once

#include <sys/uio.h>

#include <vector>

namespace postern {

bool writeAll(int fd, std::vector<iovec>& iov);

}  // namespace postern
