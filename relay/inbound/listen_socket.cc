#include "relay/inbound/listen_socket.h"

#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace postern {

Result<int> openListenSocket(const sockaddr_storage& addr, bool reuseport) {
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(std::strerror(errno));
  int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (reuseport && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
    Error err = fail(std::string("SO_REUSEPORT: ") + std::strerror(errno));
    ::close(fd);
    return err;
  }
  socklen_t len = addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    Error err = fail(std::strerror(errno));
    ::close(fd);
    return err;
  }
  return fd;
}

}  // namespace postern
