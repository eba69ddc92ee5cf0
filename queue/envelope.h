// Envelope: what the spool stores about a message besides its body.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace postern {

struct Envelope {
  uint64_t id = 0;
  int64_t received_ms = 0;  // Unix time the 250 was due, in milliseconds
  std::string sender;       // empty for the null sender <>
  std::vector<std::string> recipients;

  // ESMTP parameters the client gave, passed on to the next hop when it supports them.
  bool smtputf8 = false;                // RFC 6531
  std::string dsn_ret;                  // RFC 3461 RET: "FULL", "HDRS" or empty
  std::string dsn_envid;                // RFC 3461 ENVID (xtext) or empty
  std::vector<std::string> dsn_notify;  // per recipient: NOTIFY value or empty
  std::vector<std::string> dsn_orcpt;   // per recipient: ORCPT value or empty

  // The DSN parameters of recipient i, or "" when it has none.
  const std::string& notifyOf(size_t i) const;
  const std::string& orcptOf(size_t i) const;
};

// Queue ids as shown in logs and replies: 16 upper-case hex digits.
std::string queueIdString(uint64_t id);
// The inverse (either case); nullopt unless text is exactly 16 hex digits.
std::optional<uint64_t> parseQueueId(std::string_view text);

}  // namespace postern
