// AuthThrottle: failed SMTP AUTH attempts per client address, shared by every worker
// without a lock, so that guessing passwords is slow however the connections are spread
// (`[auth] max_failures` within `failure_window` seconds; then 454 4.7.0 for that address
// until the window has passed).
//
// Like ConnectionLimiter, a fixed table indexed by a hash of the address (of IPv6, its
// first ipv6_prefix bits): bounded memory whatever the number of clients. Two addresses
// that share a bucket share its count, so a guesser can at worst get a neighbour throttled
// early, never get more tries. Each bucket is a window start and a count, updated with
// relaxed atomics: two failures at the same instant may both start a window, which loses
// a count at worst.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/network.h"

namespace postern {

class AuthThrottle {
 public:
  explicit AuthThrottle(unsigned ipv6_prefix = 64) : ipv6_prefix_(ipv6_prefix) {}

  // Whether ip has had max_failures within window_ms before now_ms (any monotonic ms).
  bool blocked(const IpAddress& ip, uint64_t now_ms, size_t max_failures, uint64_t window_ms);
  // Counts a failure of ip at now_ms.
  void failed(const IpAddress& ip, uint64_t now_ms, uint64_t window_ms);

 private:
  static constexpr size_t kBuckets = 16384;
  struct Bucket {
    std::atomic<uint64_t> since{0};  // window start, ms
    std::atomic<uint32_t> failures{0};
  };
  Bucket& bucket(const IpAddress& ip);

  const unsigned ipv6_prefix_;
  std::array<Bucket, kBuckets> buckets_{};
};

}  // namespace postern
