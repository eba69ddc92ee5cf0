#include "relay/inbound/connection_limiter.h"

namespace postern {

uint64_t clientHash(const IpAddress& ip, unsigned ipv6_prefix) {
  uint64_t h = 1469598103934665603ull;
  const unsigned bits = ip.v6 ? ipv6_prefix : 32;
  for (unsigned i = 0; i * 8 < bits; ++i) {
    const unsigned keep = bits - i * 8 >= 8 ? 8 : bits - i * 8;
    const auto mask = static_cast<uint8_t>(0xff00u >> keep);
    h = (h ^ (ip.bytes[i] & mask)) * 1099511628211ull;
  }
  return h;
}

std::atomic<uint32_t>& ConnectionLimiter::bucket(const IpAddress& ip) {
  return per_ip_[clientHash(ip, ipv6_prefix_) % kBuckets];
}

bool ConnectionLimiter::admit(const IpAddress& ip) {
  if (total_.fetch_add(1, std::memory_order_relaxed) >=
      max_total_.load(std::memory_order_relaxed)) {
    total_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  auto& b = bucket(ip);
  if (b.fetch_add(1, std::memory_order_relaxed) >= max_per_ip_.load(std::memory_order_relaxed)) {
    b.fetch_sub(1, std::memory_order_relaxed);
    total_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void ConnectionLimiter::release(const IpAddress& ip) {
  bucket(ip).fetch_sub(1, std::memory_order_relaxed);
  total_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace postern
