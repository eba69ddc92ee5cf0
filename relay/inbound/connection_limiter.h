// ConnectionLimiter: the total and per-client-IP connection limits, shared by every
// worker thread without a lock.
//
// Per-IP counts live in a fixed table of atomic counters indexed by a hash of the
// address (of an IPv6 address, its first ipv6_prefix bits: one client may own a whole
// /64), so the memory is bounded whatever the number of clients. Two addresses that
// share a bucket share its count: the limit can only be reached early (never exceeded),
// and with 64K buckets that needs a collision among the few busiest clients.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/network.h"

namespace postern {

// FNV-1a over a client's address octets (of IPv6, the first ipv6_prefix bits only): the
// key of the per-client tables here and in AuthThrottle.
uint64_t clientHash(const IpAddress& ip, unsigned ipv6_prefix);

class ConnectionLimiter {
 public:
  // ipv6_prefix is fixed for the process (admit and release must hash alike).
  ConnectionLimiter(size_t total, size_t per_ip, unsigned ipv6_prefix = 128)
      : max_total_(total), max_per_ip_(per_ip), ipv6_prefix_(ipv6_prefix) {}

  // Takes a slot for a new connection from ip; false if a limit is reached.
  bool admit(const IpAddress& ip);
  void release(const IpAddress& ip);

  size_t total() const { return total_.load(std::memory_order_relaxed); }

  // New limits (a reload): connections already admitted stay; new ones are held to them.
  void setLimits(size_t total, size_t per_ip) {
    max_total_.store(total, std::memory_order_relaxed);
    max_per_ip_.store(per_ip, std::memory_order_relaxed);
  }

 private:
  static constexpr size_t kBuckets = 65536;
  std::atomic<uint32_t>& bucket(const IpAddress& ip);

  std::atomic<size_t> max_total_;
  std::atomic<size_t> max_per_ip_;
  const unsigned ipv6_prefix_;
  std::atomic<size_t> total_{0};
  std::array<std::atomic<uint32_t>, kBuckets> per_ip_{};
};

}  // namespace postern
