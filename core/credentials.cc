#include "core/credentials.h"

#include <crypt.h>
#include <openssl/crypto.h>

#include <cerrno>
#include <cstring>

#include "core/config.h"
#include "core/domain.h"
#include "core/random.h"

namespace postern {
namespace {

constexpr size_t kMaxLine = 4096;
constexpr size_t kMaxUser = 255;

bool strongHash(std::string_view h) {
  for (std::string_view prefix : {"$y$", "$gy$", "$2b$", "$2y$", "$7$", "$6$"}) {
    if (h.starts_with(prefix)) return true;
  }
  return false;
}

bool validUser(std::string_view u) {
  if (u.empty() || u.size() > kMaxUser) return false;
  for (unsigned char c : u) {
    if (c <= ' ' || c >= 0x7f || c == ':') return false;
  }
  return true;
}

}  // namespace

std::shared_ptr<const Credentials> Credentials::load(const std::string& path) {
  return parse(readReferencedFile(path), path);
}

std::shared_ptr<const Credentials> Credentials::parse(std::string_view text,
                                                      const std::string& where) {
  auto creds = std::make_shared<Credentials>();
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const size_t lf = text.find('\n');
    std::string_view line = text.substr(0, lf);
    text.remove_prefix(lf == std::string_view::npos ? text.size() : lf + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // Not quoted in errors: the line holds a hash.
    auto fail = [&](const std::string& why) {
      throw ConfigError(where + ":" + std::to_string(line_no) + ": " + why);
    };
    if (line.size() > kMaxLine) fail("line longer than 4096 octets");
    if (line.empty() || line.front() == '#') continue;
    const size_t c1 = line.find(':');
    if (c1 == std::string_view::npos) fail("expected user:hash or user:hash:domains");
    const std::string_view user = line.substr(0, c1);
    std::string_view rest = line.substr(c1 + 1);
    const size_t c2 = rest.find(':');
    const std::string_view hash = rest.substr(0, c2);
    if (!validUser(user)) fail("a user name is 1 to 255 printable octets without ':'");
    if (!strongHash(hash)) {
      fail("user " + std::string(user) +
           ": not a yescrypt, bcrypt, scrypt or sha512-crypt hash (`postern passwd` makes one)");
    }
    UserEntry entry{std::string(hash), {}};
    if (c2 != std::string_view::npos) {
      std::string_view domains = rest.substr(c2 + 1);
      while (!domains.empty()) {
        const size_t comma = domains.find(',');
        const std::string_view d = domains.substr(0, comma);
        domains.remove_prefix(comma == std::string_view::npos ? domains.size() : comma + 1);
        auto canonical = canonicalDomain(d);
        if (!canonical || isDomainLiteral(d)) {
          fail("user " + std::string(user) + ": \"" + std::string(d) + "\" is not a domain");
        }
        entry.sender_domains.push_back(*canonical);
      }
      if (entry.sender_domains.empty()) fail("user " + std::string(user) + ": no domain after ':'");
    }
    if (!creds->users_.emplace(std::string(user), std::move(entry)).second) {
      fail("user " + std::string(user) + " is listed twice");
    }
  }
  return creds;
}

const UserEntry* Credentials::find(std::string_view user) const {
  auto it = users_.find(std::string(user));
  return it == users_.end() ? nullptr : &it->second;
}

bool checkPassword(const std::string& password, const std::string& hash) {
  crypt_data data{};
  const char* out = crypt_rn(password.c_str(), hash.c_str(), &data, sizeof data);
  // libxcrypt answers a failure with a string starting with '*', never equal to a hash.
  if (out == nullptr || out[0] == '*') return false;
  const size_t n = std::strlen(out);
  return n == hash.size() && CRYPTO_memcmp(out, hash.data(), n) == 0;
}

Result<std::string> hashPassword(const std::string& password) {
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn("$y$", 0, nullptr, 0, salt, sizeof salt) == nullptr) {
    return fail(std::string("crypt_gensalt: ") + std::strerror(errno));
  }
  crypt_data data{};
  const char* out = crypt_rn(password.c_str(), salt, &data, sizeof data);
  if (out == nullptr || out[0] == '*') return fail(std::string("crypt: ") + std::strerror(errno));
  return std::string(out);
}

const std::string& decoyHash() {
  static const std::string hash = [] {
    Result<std::string> h = hashPassword(randomHex(16));
    return h ? *h : std::string("$y$j9T$decoy$");
  }();
  return hash;
}

}  // namespace postern
