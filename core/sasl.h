// SMTP AUTH (RFC 4954) exchanges for the PLAIN (RFC 4616) and LOGIN mechanisms: base64 as
// the protocol carries it, and the parts of a PLAIN response. Pure functions of their
// input, so the session's AUTH handling and the fuzzer (tests/fuzz/auth_fuzz.cc) share them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace postern {

// RFC 4648 base64 without line breaks, strictly: a length that is a multiple of 4, the
// alphabet only, '=' only as the last one or two characters, the bits padding leaves over
// zero (one spelling per response, RFC 4648 §3.5). "=" alone is an empty
// response (RFC 4954 §4). nullopt for anything else.
std::optional<std::string> decodeBase64(std::string_view text);
std::string encodeBase64(std::string_view data);

// PLAIN: "authzid NUL authcid NUL password". nullopt unless exactly two NULs separate
// them and authcid and password are not empty.
struct PlainResponse {
  std::string authzid;  // the identity to act as; empty: authcid's own
  std::string authcid;
  std::string password;
};
std::optional<PlainResponse> parsePlainResponse(std::string_view decoded);

// The mechanisms offered: "PLAIN" and "LOGIN" (compared without regard to case).
enum class SaslMechanism { kPlain, kLogin, kUnknown };
SaslMechanism parseMechanism(std::string_view name);

}  // namespace postern
