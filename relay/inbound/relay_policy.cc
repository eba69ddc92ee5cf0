#include "relay/inbound/relay_policy.h"

#include "core/domain.h"
#include "core/smtp_command.h"

namespace postern {

bool isRelayClient(const Config& config, const IpAddress& client) {
  for (const auto& net : config.relay_networks) {
    if (net.contains(client)) return true;
  }
  return false;
}

RcptPolicy checkRecipient(const Config& config, bool relay_client, std::string_view mailbox,
                          bool source_route) {
  if (relay_client) return RcptPolicy::kAllowed;
  std::string_view domain = domainOf(mailbox);
  // RFC 5321 §4.5.1: "postmaster" without a domain must always be accepted.
  if (domain.empty()) {
    return equalsIgnoreCase(mailbox, "postmaster") ? RcptPolicy::kAllowed
                                                   : RcptPolicy::kRelayDenied;
  }
  if (source_route || hasRoutingLocalPart(mailbox) || isDomainLiteral(domain)) {
    return RcptPolicy::kRoutingDenied;
  }
  auto canonical = canonicalDomain(domain);
  if (!canonical) return RcptPolicy::kRelayDenied;
  for (const auto& d : config.accept_domains) {
    if (*canonical == d) return RcptPolicy::kAllowed;
  }
  return RcptPolicy::kRelayDenied;
}

const RecipientCheck* recipientCheckFor(const Config& config, std::string_view mailbox) {
  if (config.recipient_checks.empty()) return nullptr;
  const std::string_view domain = domainOf(mailbox);
  for (const auto& c : config.recipient_checks) {
    if (equalsIgnoreCase(domain, c.domain)) return &c;
  }
  return nullptr;
}

}  // namespace postern
