// Envelope: what the spool stores about a message besides its body.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace postern {

struct Envelope {
  uint64_t id = 0;
  int64_t received_ms = 0;  // Unix time the 250 was due, in milliseconds
  std::string sender;       // empty for the null sender <>
  std::vector<std::string> recipients;
};

// Queue ids as shown in logs and replies: 16 upper-case hex digits.
std::string queueIdString(uint64_t id);

}  // namespace postern
