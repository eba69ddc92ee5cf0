#include "relay/relay_policy.h"

#include "core/smtp_command.h"

namespace postern {

bool isRelayClient(const Config& config, const IpAddress& client) {
  for (const auto& net : config.relay_networks) {
    if (net.contains(client)) return true;
  }
  return false;
}

bool mayRelayTo(const Config& config, bool relay_client, std::string_view mailbox) {
  if (relay_client) return true;
  std::string_view domain = domainOf(mailbox);
  // RFC 5321 §4.5.1: "postmaster" without a domain must always be accepted.
  if (domain.empty()) return equalsIgnoreCase(mailbox, "postmaster");
  if (domain.back() == '.') domain.remove_suffix(1);
  for (const auto& d : config.accept_domains) {
    if (equalsIgnoreCase(domain, d)) return true;
  }
  return false;
}

}  // namespace postern
