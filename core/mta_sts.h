// MTA-STS (RFC 8461), the parts that are pure functions of their input: the
// _mta-sts TXT record, the policy file served at
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt, and MX host matching. Both the record
// and the policy come from outside (DNS, an HTTPS server): anything not exactly of their
// shape is refused, and the policy is bounded (kMaxPolicy octets, kMaxMx patterns).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace postern {
namespace mta_sts {

constexpr size_t kMaxPolicy = 64 * 1024;  // §3.3: at most 64 KiB
constexpr size_t kMaxMx = 100;            // mx lines taken from one policy
constexpr uint64_t kMaxAge = 31557600;    // §3.2: max_age at most a year

// "v=STSv1; id=20160831085700Z;": the id (1 to 32 letters and digits), or nullopt when the
// record is not a valid STS record.
std::optional<std::string> parseTxt(std::string_view txt);

struct Policy {
  enum class Mode { kEnforce, kTesting, kNone };
  Mode mode = Mode::kNone;
  std::vector<std::string> mx;  // lower-case patterns: "mail.example.com", "*.example.net"
  uint64_t max_age = 0;         // seconds
};

// The policy file (§3.2): "key: value" lines ending in CRLF or LF; version STSv1, mode,
// max_age and (unless mode is none) at least one mx are required; unknown keys are
// ignored. nullopt when it is not a valid policy.
std::optional<Policy> parsePolicy(std::string_view body);

// §4.1: an MX host (without a final dot, any case) matches a pattern exactly, or a
// "*.suffix" pattern when only its leftmost label differs.
bool mxMatches(const Policy& policy, std::string_view host);

const char* modeName(Policy::Mode mode);

}  // namespace mta_sts
}  // namespace postern
