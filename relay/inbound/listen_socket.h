// Listening sockets. libuv 1.44 (Debian 12) has no UV_TCP_REUSEPORT, so the socket is
// made here, with SO_REUSEPORT when several workers each bind the same address (the
// kernel then spreads connections across them), and handed to libuv with uv_tcp_open().
#pragma once

#include <sys/socket.h>

#include <string>

#include "core/result.h"

namespace postern {

// A bound, non-blocking socket.
Result<int> openListenSocket(const sockaddr_storage& addr, bool reuseport);

}  // namespace postern
