// PROXY protocol v1 (text) and v2 (binary) header parsing, per the HAProxy
// specification (proxy-protocol.txt). A listener with proxy_protocol = true expects one
// header before any SMTP traffic, and only from trusted_proxies.
//
// The parser is pure: it looks at the bytes received so far and says whether the header
// is complete, needs more bytes, or is malformed. A v1 header is at most 107 octets; a v2
// header at most 16 + kMaxProxyV2Payload, so a peer can never make us buffer more.
// LOCAL (v2) and UNKNOWN (v1) headers carry no address: the connection's own is used.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <string_view>

namespace postern {

constexpr size_t kMaxProxyV1 = 107;
constexpr size_t kMaxProxyV2Payload = 4096;

struct ProxyHeader {
  bool has_address = false;  // false for LOCAL / UNKNOWN
  sockaddr_storage source{};
  sockaddr_storage destination{};
};

enum class ProxyParse { kNeedMore, kDone, kInvalid };

ProxyParse parseProxyHeader(std::string_view data, ProxyHeader& out, size_t& consumed);

}  // namespace postern
