// The bearer token of the admin queue API (it shows envelope addresses and can delete
// and bounce mail, so reaching the port is not enough).
//
// With [admin] token_file set, the token is that file's content (whitespace around it
// ignored; at least 16 characters). Without it, the relay makes a random token at start
// (core/random.h, 256 bits) in <spool_dir>/admin.token, mode 0600, and keeps it across
// restarts; `postern queue --config FILE` reads the same file, so whoever may read the
// spool may use the queue API, as with Postfix's postqueue and the queue directory.
#pragma once

#include <string>

#include "core/config.h"
#include "core/result.h"

namespace postern {

// Where the token is for this configuration.
std::string adminTokenPath(const Config& config);

// The token in path; fails if it is missing, unreadable or too short.
Result<std::string> readAdminToken(const std::string& path);

// For the relay at start: the token, made first if it is the generated kind and missing.
Result<std::string> loadOrCreateAdminToken(const Config& config);

// Constant-time comparison of a presented token with the expected one.
bool adminTokenMatches(const std::string& expected, std::string_view presented);

}  // namespace postern
