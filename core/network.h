// IP networks in CIDR notation ("127.0.0.0/8", "::1/128") and socket address helpers.
//
// Used for relay control: a client address is matched against the configured
// relay_networks. IPv4-mapped IPv6 client addresses (::ffff:a.b.c.d) match IPv4 networks,
// because a dual-stack listener reports IPv4 clients that way.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace postern {

struct IpAddress {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};  // v4 uses the first 4

  static std::optional<IpAddress> parse(std::string_view text);
  static std::optional<IpAddress> fromSockaddr(const sockaddr* sa);
  std::string toString() const;
  bool operator==(const IpAddress&) const = default;
  bool isUnspecified() const;  // 0.0.0.0 or ::
  bool isLoopback() const;     // 127.0.0.0/8 or ::1
  // Not a public unicast address: unspecified, loopback, private (RFC 1918, RFC 4193
  // fc00::/7), shared (100.64.0.0/10), link-local, multicast or broadcast. Such an
  // address in an MX answer would aim the relay's SMTP client inside the network.
  bool isInternal() const;
};

class Network {
 public:
  // Returns nullopt for malformed text; a bare address means a host network (/32, /128).
  static std::optional<Network> parse(std::string_view cidr);
  bool contains(const IpAddress& addr) const;
  bool operator==(const Network&) const = default;

 private:
  IpAddress base_;
  int prefix_ = 0;
};

// "host:port" or "[v6]:port" into a sockaddr_storage (numeric addresses only); nullopt for
// anything else. Each caller says in its own words what it expected.
std::optional<sockaddr_storage> parseHostPort(std::string_view text);
// "host:port" split without resolving (the host may be a name); nullopt if text is not
// that shape.
struct HostPort {
  std::string host;
  uint16_t port = 0;
};
std::optional<HostPort> splitHostPort(std::string_view text);

}  // namespace postern
