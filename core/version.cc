#include "core/version.h"

#include <openssl/crypto.h>
#include <uv.h>

namespace postern {

std::string opensslVersion() { return OpenSSL_version(OPENSSL_VERSION); }

std::string libuvVersion() { return uv_version_string(); }

std::string versionLine() {
  return std::string("postern ") + kVersion + " (" + kRevision + "), " + opensslVersion() +
         ", libuv " + libuvVersion();
}

}  // namespace postern
