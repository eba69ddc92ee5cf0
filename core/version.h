// The build's version: the release number from CMakeLists.txt's project() and the git
// revision it was built from (`git describe --always --dirty --tags`, "unknown" outside a
// clone), generated at build time by cmake/version.cmake. Shown by `postern --version`,
// the `starting` log line and the postern_build_info metric.
#pragma once

#include <string>

namespace postern {

extern const char* const kVersion;
extern const char* const kRevision;

// "postern 0.1.0 (5fc9a2d-dirty), OpenSSL 3.0.19 ..., libuv 1.44.2": what --version prints.
std::string versionLine();
// The TLS library and the event loop as loaded at run time (the shared objects may differ
// from the headers built against).
std::string opensslVersion();
std::string libuvVersion();

}  // namespace postern
