#include "core/domain.h"

#include <idn2.h>

#include <cstdlib>

#include "core/ascii.h"

namespace postern {

std::optional<std::string> canonicalDomain(std::string_view domain) {
  if (isDomainLiteral(domain)) return std::string(domain);
  if (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
  if (domain.empty() || domain.size() > 253) return std::nullopt;
  bool ascii = true;
  for (char c : domain) ascii &= static_cast<unsigned char>(c) < 0x80;
  std::string out;
  if (ascii) {
    out = asciiLower(domain);
  } else {
    char* converted = nullptr;
    const std::string input(domain);
    if (idn2_to_ascii_8z(input.c_str(), &converted, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) !=
        IDN2_OK) {
      return std::nullopt;
    }
    out = asciiLower(converted);
    idn2_free(converted);
  }
  // Labels: none empty ("a..b", ".a"), none over 63 octets (RFC 1035).
  size_t label = 0;
  for (char c : out) {
    if (c == '.') {
      if (label == 0) return std::nullopt;
      label = 0;
    } else if (++label > 63) {
      return std::nullopt;
    }
  }
  if (label == 0) return std::nullopt;
  return out;
}

std::optional<std::string> canonicalMailbox(std::string_view mailbox) {
  const size_t at = mailbox.rfind('@');
  if (at == std::string_view::npos) return std::string(mailbox);
  auto domain = canonicalDomain(mailbox.substr(at + 1));
  if (!domain) return std::nullopt;
  std::string out;
  out.reserve(at + 1 + domain->size());  // exact: recipients are kept as they are built
  out.append(mailbox.substr(0, at + 1)).append(*domain);
  return out;
}

std::string_view localPartOf(std::string_view mailbox) {
  const size_t at = mailbox.rfind('@');
  return at == std::string_view::npos ? mailbox : mailbox.substr(0, at);
}

bool hasRoutingLocalPart(std::string_view mailbox) {
  // Quoted or not: a quoted "user@host" is the same route to a downstream that unquotes.
  return localPartOf(mailbox).find_first_of("%!@") != std::string_view::npos;
}

bool isDomainLiteral(std::string_view domain) { return !domain.empty() && domain.front() == '['; }

}  // namespace postern
