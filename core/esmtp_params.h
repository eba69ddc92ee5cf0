// Validation of ESMTP MAIL/RCPT parameter values we accept: DSN (RFC 3461 §4) and the
// xtext encoding they use. Pure functions; the session turns a false into 501 5.5.4.
#pragma once

#include <string_view>

namespace postern {

// xtext (RFC 3461 §4): printable ASCII except "+" and "=", or "+" and two upper-case hex.
bool isXtext(std::string_view s);
// NOTIFY: "NEVER", or a comma list of SUCCESS, FAILURE, DELAY without repeats.
bool isValidNotify(std::string_view s);
// ORCPT: addr-type ";" xtext, at most 500 octets.
bool isValidOrcpt(std::string_view s);
// RET: FULL or HDRS.
bool isValidRet(std::string_view s);
// ENVID: xtext, at most 100 octets.
bool isValidEnvid(std::string_view s);

}  // namespace postern
