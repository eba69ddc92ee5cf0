// Relay control: who may send mail to which domain. Clients inside relay_networks may
// send anywhere; everyone else only to accept_domains. There is no other path to an
// accepted recipient, so Postern is never an open relay.
#pragma once

#include <string_view>

#include "core/config.h"
#include "core/network.h"

namespace postern {

bool isRelayClient(const Config& config, const IpAddress& client);

// May a client (isRelayClient() already evaluated) send to this recipient?
bool mayRelayTo(const Config& config, bool relay_client, std::string_view mailbox);

}  // namespace postern
