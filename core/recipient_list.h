// RecipientList: the recipients that exist at a domain, read from a file, for refusing
// unknown ones at RCPT (550 5.1.1) instead of accepting them and bouncing later to a
// sender who is usually forged (backscatter).
//
// The file has one entry per line: an address ("user@example.com") or a catch-all for a
// whole domain ("@example.com"); blank lines and lines starting with '#' are ignored.
// Domains are kept in canonical form (core/domain.h) and local parts compared without
// regard to case, as Postfix's lookup tables do. Read at start, by check-config and on
// every reload (SIGHUP), as part of the configuration.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>

namespace postern {

class RecipientList {
 public:
  // Reads path; throws ConfigError naming path:line for an unreadable file or a bad entry.
  static std::shared_ptr<const RecipientList> load(const std::string& path);
  // From text (tests); where names the source in errors.
  static std::shared_ptr<const RecipientList> parse(std::string_view text,
                                                    const std::string& where);

  // mailbox in canonical form (canonicalMailbox).
  bool contains(std::string_view mailbox) const;
  size_t size() const { return entries_.size(); }

 private:
  std::unordered_set<std::string> entries_;  // lower-case "user@domain" and "@domain"
};

}  // namespace postern
