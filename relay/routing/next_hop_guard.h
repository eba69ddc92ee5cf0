// NextHopGuard: the addresses delivery must never connect to.
//
// A next hop that is this relay itself (one of its listeners, by route or by an MX
// answer) would make every message loop through it until the hop limit: that is a
// permanent failure, "mail loops back to myself" (5.4.6), never a connection. An MX
// answer (or implicit MX) whose hosts resolve to internal addresses (loopback, private,
// link-local, unspecified: IpAddress::isInternal) is refused unless the route allows it
// (allow_internal_mx), so a domain's owner cannot aim the relay's SMTP client inside the
// network. A smarthost named by a route is the operator's choice and may be internal.
//
// Built once from the listeners (which need a restart to change) and the machine's
// interface addresses, for listeners on a wildcard address.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/network.h"
#include "relay/routing/resolver.h"

namespace postern {

class NextHopGuard {
 public:
  // interfaces: this machine's addresses (for listeners on 0.0.0.0 or ::).
  NextHopGuard(const std::vector<ListenerConfig>& listeners,
               const std::vector<IpAddress>& interfaces);
  // The machine's interface addresses (uv_interface_addresses).
  static std::vector<IpAddress> localInterfaces();

  // Would a connection to this address and port reach one of our listeners?
  bool isSelf(const IpAddress& addr, uint16_t port) const;

  // Drops the addresses delivery must not use from a successful resolution of name (for
  // an MX answer also every address after the first of our own, RFC 5321 §5.1). When
  // none is left, the resolution becomes a permanent failure saying why.
  void filter(HopResolution& r, const std::string& name, bool by_mx, bool allow_internal) const;

 private:
  struct Endpoint {
    IpAddress addr;
    uint16_t port;
    bool wildcard;
  };
  std::vector<Endpoint> listeners_;
  std::vector<IpAddress> interfaces_;
};

}  // namespace postern
