// Relay control: who may send mail to which domain. Clients inside relay_networks may
// send anywhere; everyone else only to accept_domains, and without sender-specified
// routing ("%", "!" or "@" in the local part, a source route, a domain literal), which a
// downstream could follow to a domain the client may not relay to. Domains are compared
// in their canonical form (core/domain.h), the one routing and delivery use. There is no
// other path to an accepted recipient, so Postern is never an open relay.
#pragma once

#include <string_view>

#include "core/config.h"
#include "core/network.h"

namespace postern {

bool isRelayClient(const Config& config, const IpAddress& client);

enum class RcptPolicy {
  kAllowed,
  kRelayDenied,    // 554 5.7.1 Relay access denied
  kRoutingDenied,  // 554 5.7.1 sender-specified routing
};

// May a client (isRelayClient() already evaluated) send to this recipient? mailbox is in
// canonical form (canonicalMailbox); source_route: the client gave one (PathArg).
RcptPolicy checkRecipient(const Config& config, bool relay_client, std::string_view mailbox,
                          bool source_route = false);
// The [[recipients]] check for a canonical mailbox's domain, or nullptr.
const RecipientCheck* recipientCheckFor(const Config& config, std::string_view mailbox);

inline bool mayRelayTo(const Config& config, bool relay_client, std::string_view mailbox) {
  return checkRecipient(config, relay_client, mailbox) == RcptPolicy::kAllowed;
}

}  // namespace postern
