#include "relay/inbound/auth_throttle.h"

#include "relay/inbound/connection_limiter.h"

namespace postern {

AuthThrottle::Bucket& AuthThrottle::bucket(const IpAddress& ip) {
  return buckets_[clientHash(ip, ipv6_prefix_) % kBuckets];
}

bool AuthThrottle::blocked(const IpAddress& ip, uint64_t now_ms, size_t max_failures,
                           uint64_t window_ms) {
  Bucket& b = bucket(ip);
  const uint64_t since = b.since.load(std::memory_order_relaxed);
  if (since == 0 || now_ms - since >= window_ms) return false;  // none, or long ago
  return b.failures.load(std::memory_order_relaxed) >= max_failures;
}

void AuthThrottle::failed(const IpAddress& ip, uint64_t now_ms, uint64_t window_ms) {
  Bucket& b = bucket(ip);
  const uint64_t since = b.since.load(std::memory_order_relaxed);
  if (since == 0 || now_ms - since >= window_ms) {
    b.since.store(now_ms, std::memory_order_relaxed);
    b.failures.store(1, std::memory_order_relaxed);
    return;
  }
  b.failures.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace postern
