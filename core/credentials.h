// Credentials: the users SMTP AUTH accepts, read from `[auth] users_file` at start, by
// check-config and on every reload (SIGHUP), as part of the configuration.
//
// One user per line, "user:hash" or "user:hash:domain,domain,...", blank lines and lines
// starting with '#' ignored. The hash is a crypt(3) hash of a kind libxcrypt makes and
// that resists guessing: yescrypt ($y$, `postern passwd` makes these), bcrypt ($2b$,
// $2y$), scrypt ($7$), gost-yescrypt ($gy$) or sha512-crypt ($6$); anything older (DES,
// MD5, sha256-crypt) is refused at load. The domains, when given, are the only ones the
// user may put in MAIL FROM (553 5.7.1 otherwise). A user name is 1 to 255 printable
// ASCII octets without ':' or blanks; compared exactly.
//
// Checking a password costs milliseconds (that is the point of these hashes), so
// checkPassword() must not run on a loop thread: the session runs it on libuv's pool.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/result.h"

namespace postern {

struct UserEntry {
  std::string hash;
  std::vector<std::string> sender_domains;  // canonical; empty: any
};

class Credentials {
 public:
  // Reads path; throws ConfigError naming path:line for an unreadable file or a bad line.
  static std::shared_ptr<const Credentials> load(const std::string& path);
  // From text (tests); where names the source in errors.
  static std::shared_ptr<const Credentials> parse(std::string_view text, const std::string& where);

  const UserEntry* find(std::string_view user) const;
  size_t size() const { return users_.size(); }

 private:
  std::unordered_map<std::string, UserEntry> users_;
};

// Whether password matches hash (crypt_rn, then a comparison in constant time). Blocking:
// milliseconds of CPU by design.
bool checkPassword(const std::string& password, const std::string& hash);
// A yescrypt hash of password with a fresh salt, for the users file (`postern passwd`).
Result<std::string> hashPassword(const std::string& password);
// A hash of a password nobody has, checked when the user does not exist so that the
// answer takes as long as for a user that does (no user enumeration by timing).
const std::string& decoyHash();

}  // namespace postern
