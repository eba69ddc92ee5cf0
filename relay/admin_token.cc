#include "relay/admin_token.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/random.h"
#include "core/write_all.h"

namespace postern {
namespace {

constexpr size_t kMinToken = 16;
constexpr size_t kMaxToken = 4096;

std::string trim(std::string s) {
  const char* blanks = " \t\r\n";
  s.erase(s.find_last_not_of(blanks) + 1);
  s.erase(0, s.find_first_not_of(blanks));
  return s;
}

}  // namespace

std::string adminTokenPath(const Config& config) {
  return config.admin_token_file.empty() ? config.spool_dir + "/admin.token"
                                         : config.admin_token_file;
}

Result<std::string> readAdminToken(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return fail("cannot read the admin token " + path + ": " + std::strerror(errno));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string token = trim(ss.str());
  if (token.size() < kMinToken || token.size() > kMaxToken) {
    return fail("the admin token in " + path + " must be 16 to 4096 characters");
  }
  for (char c : token) {
    if (c <= ' ' || c == 0x7f) {
      return fail("the admin token in " + path + " must be printable, without blanks");
    }
  }
  return token;
}

Result<std::string> loadOrCreateAdminToken(const Config& config) {
  const std::string path = adminTokenPath(config);
  if (!config.admin_token_file.empty() || ::access(path.c_str(), F_OK) == 0) {
    return readAdminToken(path);
  }
  std::error_code ec;
  std::filesystem::create_directories(config.spool_dir, ec);  // the spool may be new
  std::string token = randomHex(32);
  std::string line = token + "\n";
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0;
  if (ok) {
    std::vector<iovec> iov{{line.data(), line.size()}};
    ok = writeAll(fd, iov) && ::fsync(fd) == 0;
    ok = ::close(fd) == 0 && ok;
    ok = ok && ::rename(tmp.c_str(), path.c_str()) == 0;
  }
  if (!ok) {
    Error err = fail("cannot write the admin token " + path + ": " + std::strerror(errno));
    ::unlink(tmp.c_str());
    return err;
  }
  return token;
}

bool adminTokenMatches(const std::string& expected, std::string_view presented) {
  return !expected.empty() && presented.size() == expected.size() &&
         CRYPTO_memcmp(expected.data(), presented.data(), expected.size()) == 0;
}

}  // namespace postern
