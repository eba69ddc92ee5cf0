#include "core/network.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace postern {

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  std::string s(text);
  IpAddress a;
  if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) return a;
  if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
    a.v6 = true;
    return a;
  }
  return std::nullopt;
}

std::optional<IpAddress> IpAddress::fromSockaddr(const sockaddr* sa) {
  IpAddress a;
  if (sa->sa_family == AF_INET) {
    std::memcpy(a.bytes.data(), &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, 4);
    return a;
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      std::memcpy(a.bytes.data(), in6->sin6_addr.s6_addr + 12, 4);
      return a;
    }
    a.v6 = true;
    std::memcpy(a.bytes.data(), &in6->sin6_addr, 16);
    return a;
  }
  return std::nullopt;
}

bool IpAddress::isUnspecified() const {
  const size_t n = v6 ? 16 : 4;
  for (size_t i = 0; i < n; ++i) {
    if (bytes[i] != 0) return false;
  }
  return true;
}

bool IpAddress::isLoopback() const {
  if (!v6) return bytes[0] == 127;
  for (size_t i = 0; i < 15; ++i) {
    if (bytes[i] != 0) return false;
  }
  return bytes[15] == 1;
}

bool IpAddress::isInternal() const {
  if (isUnspecified() || isLoopback()) return true;
  if (v6 && std::all_of(bytes.begin(), bytes.begin() + 10, [](uint8_t x) { return x == 0; }) &&
      bytes[10] == 0xff && bytes[11] == 0xff) {
    IpAddress v4;  // ::ffff:a.b.c.d written out as IPv6
    std::copy(bytes.begin() + 12, bytes.end(), v4.bytes.begin());
    return v4.isInternal();
  }
  const uint8_t a = bytes[0], b = bytes[1];
  if (!v6) {
    return a == 0 || a == 10 || (a == 100 && (b & 0xc0) == 64) || (a == 169 && b == 254) ||
           (a == 172 && (b & 0xf0) == 16) || (a == 192 && b == 168) || a >= 224;
  }
  // fc00::/7 unique local, fe80::/10 link-local, ff00::/8 multicast. (A v4-mapped address
  // was turned into v4 by fromSockaddr.)
  return (a & 0xfe) == 0xfc || (a == 0xfe && (b & 0xc0) == 0x80) || a == 0xff;
}

std::string IpAddress::toString() const {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof buf);
  return buf;
}

std::optional<Network> Network::parse(std::string_view cidr) {
  size_t slash = cidr.find('/');
  auto addr = IpAddress::parse(cidr.substr(0, slash));
  if (!addr) return std::nullopt;
  int max = addr->v6 ? 128 : 32;
  int prefix = max;
  if (slash != std::string_view::npos) {
    auto digits = cidr.substr(slash + 1);
    auto res = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || res.ec != std::errc{} || res.ptr != digits.data() + digits.size() ||
        prefix < 0 || prefix > max) {
      return std::nullopt;
    }
  }
  Network n;
  n.base_ = *addr;
  n.prefix_ = prefix;
  return n;
}

bool Network::contains(const IpAddress& addr) const {
  if (addr.v6 != base_.v6) return false;
  int full = prefix_ / 8;
  if (std::memcmp(addr.bytes.data(), base_.bytes.data(), full) != 0) return false;
  int bits = prefix_ % 8;
  if (bits == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - bits));
  return (addr.bytes[full] & mask) == (base_.bytes[full] & mask);
}

std::optional<HostPort> splitHostPort(std::string_view text) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  std::string_view h = text.substr(0, colon);
  if (h.front() == '[') {
    if (h.back() != ']') return std::nullopt;
    h = h.substr(1, h.size() - 2);
  }
  auto digits = text.substr(colon + 1);
  unsigned value = 0;
  auto res = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (h.empty() || digits.empty() || res.ec != std::errc{} ||
      res.ptr != digits.data() + digits.size() || value > 65535) {
    return std::nullopt;
  }
  return HostPort{std::string(h), static_cast<uint16_t>(value)};
}

std::optional<sockaddr_storage> parseHostPort(std::string_view text) {
  const std::optional<HostPort> hp = splitHostPort(text);
  if (!hp) return std::nullopt;
  sockaddr_storage out;
  std::memset(&out, 0, sizeof out);
  auto* in4 = reinterpret_cast<sockaddr_in*>(&out);
  if (inet_pton(AF_INET, hp->host.c_str(), &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons(hp->port);
    return out;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
  if (inet_pton(AF_INET6, hp->host.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(hp->port);
    return out;
  }
  return std::nullopt;
}

}  // namespace postern
