// One canonical form of a mail domain, used by relay control, routing and delivery alike
// (so that no spelling of a domain can pass one check and take another path):
// lower-case ASCII, without a trailing dot, international labels as IDNA2008 A-labels
// ("xn--..." via libidn2, with UTS #46 mapping, so "BÜCHER.example." and
// "xn--bcher-kva.example" are one domain).
//
// Also the sender-specified routing forms an untrusted client may not use (Postfix's
// allow_untrusted_routing = no): "%", "!" or a second "@" in the local part, and domain
// literals.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace postern {

// The canonical form, or nullopt if domain is not a valid domain name (empty, an empty
// label, a label IDNA refuses). A domain literal ("[192.0.2.1]") is returned as written.
std::optional<std::string> canonicalDomain(std::string_view domain);

// The mailbox with its domain in canonical form ("User@Example.COM." ->
// "User@example.com"; the local part is kept as written); nullopt if the domain is
// invalid. A mailbox without a domain ("postmaster") is returned unchanged.
std::optional<std::string> canonicalMailbox(std::string_view mailbox);

// The local part of a mailbox (up to its last "@"; all of it if there is none).
std::string_view localPartOf(std::string_view mailbox);

// "user%host@domain", "host!user@domain", "user@host@domain", "\"user@host\"@domain".
bool hasRoutingLocalPart(std::string_view mailbox);
// "user@[192.0.2.1]".
bool isDomainLiteral(std::string_view domain);

}  // namespace postern
