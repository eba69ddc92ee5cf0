#include "core/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>
#include <string>

namespace postern {
namespace {

constexpr char kV2Signature[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                   '\n', 'Q',  'U',  'I',  'T',  '\n'};

bool parsePort(std::string_view s, uint16_t& port) {
  unsigned v = 0;
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc{} || r.ptr != s.data() + s.size() || v > 65535) return false;
  port = static_cast<uint16_t>(v);
  return true;
}

bool parseAddr(std::string_view text, bool v6, uint16_t port, sockaddr_storage& out) {
  // inet_pton() stops at a NUL, so the text is checked here first.
  for (char c : text) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
              c == '.' || c == ':';
    if (!ok) return false;
  }
  std::string s(text);
  std::memset(&out, 0, sizeof out);
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&out);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    return inet_pton(AF_INET6, s.c_str(), &a->sin6_addr) == 1;
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&out);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  return inet_pton(AF_INET, s.c_str(), &a->sin_addr) == 1;
}

ProxyParse parseV1(std::string_view data, ProxyHeader& out, size_t& consumed) {
  size_t lf = data.substr(0, kMaxProxyV1).find('\n');
  if (lf == std::string_view::npos) {
    return data.size() >= kMaxProxyV1 ? ProxyParse::kInvalid : ProxyParse::kNeedMore;
  }
  if (lf == 0 || data[lf - 1] != '\r') return ProxyParse::kInvalid;
  std::string_view line = data.substr(0, lf - 1);
  consumed = lf + 1;
  // Fields are separated by exactly one space, with none at either end.
  if (line.empty() || line.back() == ' ' || line.find("  ") != std::string_view::npos) {
    return ProxyParse::kInvalid;
  }
  // "PROXY" SP proto SP src SP dst SP sport SP dport, single spaces.
  std::string_view parts[6];
  size_t n = 0;
  while (n < 6) {
    size_t sp = line.find(' ');
    parts[n++] = line.substr(0, sp);
    if (sp == std::string_view::npos) {
      line = {};
      break;
    }
    line.remove_prefix(sp + 1);
  }
  if (n < 2 || parts[0] != "PROXY") return ProxyParse::kInvalid;
  if (parts[1] == "UNKNOWN") {
    out.has_address = false;
    return ProxyParse::kDone;
  }
  bool v6 = parts[1] == "TCP6";
  if ((!v6 && parts[1] != "TCP4") || n != 6 || !line.empty()) return ProxyParse::kInvalid;
  uint16_t sport = 0, dport = 0;
  if (!parsePort(parts[4], sport) || !parsePort(parts[5], dport) ||
      !parseAddr(parts[2], v6, sport, out.source) ||
      !parseAddr(parts[3], v6, dport, out.destination)) {
    return ProxyParse::kInvalid;
  }
  out.has_address = true;
  return ProxyParse::kDone;
}

ProxyParse parseV2(std::string_view data, ProxyHeader& out, size_t& consumed) {
  if (data.size() < 16) return ProxyParse::kNeedMore;
  auto byte = [&](size_t i) { return static_cast<unsigned char>(data[i]); };
  unsigned version = byte(12) >> 4, command = byte(12) & 0x0f;
  unsigned family = byte(13) >> 4, transport = byte(13) & 0x0f;
  size_t len = (size_t{byte(14)} << 8) | byte(15);
  if (version != 2 || command > 1 || len > kMaxProxyV2Payload) return ProxyParse::kInvalid;
  if (data.size() < 16 + len) return ProxyParse::kNeedMore;
  consumed = 16 + len;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data() + 16);
  out.has_address = false;
  if (command == 0) return ProxyParse::kDone;  // LOCAL: health check from the proxy itself
  if (transport != 1 || (family != 1 && family != 2)) {
    // UNSPEC, UDP or UNIX: accepted, but no TCP address to use.
    return family <= 3 && transport <= 2 ? ProxyParse::kDone : ProxyParse::kInvalid;
  }
  if (family == 1) {
    if (len < 12) return ProxyParse::kInvalid;
    auto* s = reinterpret_cast<sockaddr_in*>(&out.source);
    auto* d = reinterpret_cast<sockaddr_in*>(&out.destination);
    std::memset(&out.source, 0, sizeof out.source);
    std::memset(&out.destination, 0, sizeof out.destination);
    s->sin_family = d->sin_family = AF_INET;
    std::memcpy(&s->sin_addr, p, 4);
    std::memcpy(&d->sin_addr, p + 4, 4);
    std::memcpy(&s->sin_port, p + 8, 2);
    std::memcpy(&d->sin_port, p + 10, 2);
  } else {
    if (len < 36) return ProxyParse::kInvalid;
    auto* s = reinterpret_cast<sockaddr_in6*>(&out.source);
    auto* d = reinterpret_cast<sockaddr_in6*>(&out.destination);
    std::memset(&out.source, 0, sizeof out.source);
    std::memset(&out.destination, 0, sizeof out.destination);
    s->sin6_family = d->sin6_family = AF_INET6;
    std::memcpy(&s->sin6_addr, p, 16);
    std::memcpy(&d->sin6_addr, p + 16, 16);
    std::memcpy(&s->sin6_port, p + 32, 2);
    std::memcpy(&d->sin6_port, p + 34, 2);
  }
  out.has_address = true;
  return ProxyParse::kDone;
}

}  // namespace

ProxyParse parseProxyHeader(std::string_view data, ProxyHeader& out, size_t& consumed) {
  consumed = 0;
  if (data.empty()) return ProxyParse::kNeedMore;
  // Decide the version from as many signature bytes as have arrived.
  size_t n = std::min(data.size(), sizeof kV2Signature);
  if (std::memcmp(data.data(), kV2Signature, n) == 0) {
    return n < sizeof kV2Signature ? ProxyParse::kNeedMore : parseV2(data, out, consumed);
  }
  constexpr std::string_view kV1 = "PROXY ";
  size_t m = std::min(data.size(), kV1.size());
  if (data.substr(0, m) != kV1.substr(0, m)) return ProxyParse::kInvalid;
  return m < kV1.size() ? ProxyParse::kNeedMore : parseV1(data, out, consumed);
}

}  // namespace postern
