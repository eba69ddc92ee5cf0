#include "relay/routing/next_hop_guard.h"

#include <uv.h>

#include <algorithm>

namespace postern {
namespace {

uint16_t portOf(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(ss).sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(ss).sin6_port);
  return 0;
}

}  // namespace

NextHopGuard::NextHopGuard(const std::vector<ListenerConfig>& listeners,
                           const std::vector<IpAddress>& interfaces)
    : interfaces_(interfaces) {
  for (const auto& l : listeners) {
    const std::optional<sockaddr_storage> ss = parseHostPort(l.address);
    if (!ss) continue;  // loadConfig has checked it
    auto ip = IpAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&*ss));
    if (!ip) continue;
    listeners_.push_back({*ip, portOf(*ss), ip->isUnspecified()});
  }
}

std::vector<IpAddress> NextHopGuard::localInterfaces() {
  std::vector<IpAddress> out;
  uv_interface_address_t* list = nullptr;
  int n = 0;
  if (uv_interface_addresses(&list, &n) != 0) return out;
  for (int i = 0; i < n; ++i) {
    if (auto ip = IpAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&list[i].address))) {
      out.push_back(*ip);
    }
  }
  uv_free_interface_addresses(list, n);
  return out;
}

bool NextHopGuard::isSelf(const IpAddress& addr, uint16_t port) const {
  // Connecting to 0.0.0.0 or :: reaches this host, as loopback does.
  const bool local = addr.isUnspecified() || addr.isLoopback() ||
                     std::find(interfaces_.begin(), interfaces_.end(), addr) != interfaces_.end();
  for (const auto& l : listeners_) {
    if (l.port != port) continue;
    if (l.addr == addr) return true;
    if (local && (l.wildcard || (addr.isUnspecified() && l.addr.isLoopback()))) return true;
  }
  return false;
}

void NextHopGuard::filter(HopResolution& r, const std::string& name, bool by_mx,
                          bool allow_internal) const {
  if (r.status != HopResolution::Status::kOk) return;
  bool self = false, internal = false;
  std::vector<HopAddress> kept;
  for (auto& h : r.addresses) {
    auto ip = IpAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&h.addr));
    if (ip && isSelf(*ip, portOf(h.addr))) {
      self = true;
      // RFC 5321 §5.1: MX hosts that are not better than this relay are not tried
      // (the answer is in preference order). A smarthost's other addresses may be.
      if (by_mx) break;
      continue;
    }
    if (!ip || (by_mx && !allow_internal && ip->isInternal())) {
      internal = true;
      continue;
    }
    kept.push_back(std::move(h));
  }
  r.addresses = std::move(kept);
  if (!r.addresses.empty()) return;
  r.status = HopResolution::Status::kPermanent;
  r.error = self ? "5.4.6 mail for " + name + " loops back to myself"
            : internal
                ? "5.4.4 MX hosts of " + name + " have internal addresses only, which are refused"
                : "5.4.4 " + name + " has no usable address";
}

}  // namespace postern
