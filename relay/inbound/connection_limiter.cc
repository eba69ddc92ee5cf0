#include "relay/inbound/connection_limiter.h"

namespace postern {

std::atomic<uint32_t>& ConnectionLimiter::bucket(const IpAddress& ip) {
  // FNV-1a over the address bytes (of IPv6, the prefix's bits only).
  uint64_t h = 1469598103934665603ull;
  const unsigned bits = ip.v6 ? ipv6_prefix_ : 32;
  for (unsigned i = 0; i * 8 < bits; ++i) {
    const unsigned keep = bits - i * 8 >= 8 ? 8 : bits - i * 8;
    const auto mask = static_cast<uint8_t>(0xff00u >> keep);
    h = (h ^ (ip.bytes[i] & mask)) * 1099511628211ull;
  }
  return per_ip_[h % kBuckets];
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
