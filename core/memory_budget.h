// MemoryBudget: one bound, for the whole process, on the memory that clients make the
// relay hold: envelopes (recipients) and message bodies being received. Each session's
// own limits (recipients, message_memory) bound one session; this bounds their sum, so
// 20,000 connections each at its limits cannot take the machine's memory.
//
// Shared by every worker thread without a lock (one relaxed atomic). Callers charge in
// coarse steps (a recipient, 16 KiB of body), not per octet. Past the limit, new
// envelope memory is refused (MAIL and RCPT get 452 4.3.1 until memory frees) and bodies
// go to their spill file at once instead of growing in memory.
#pragma once

#include <atomic>
#include <cstddef>

namespace postern {

class MemoryBudget {
 public:
  explicit MemoryBudget(size_t limit) : limit_(limit) {}

  // Takes n octets if they fit; false (nothing taken) if they would pass the limit.
  bool tryCharge(size_t n) {
    size_t used = used_.load(std::memory_order_relaxed);
    do {
      if (used + n > limit_.load(std::memory_order_relaxed)) return false;
    } while (!used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
    return true;
  }
  // Takes n octets whatever the limit (memory already in use that must be accounted).
  void charge(size_t n) { used_.fetch_add(n, std::memory_order_relaxed); }
  void release(size_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }

  bool exhausted() const {
    return used_.load(std::memory_order_relaxed) >= limit_.load(std::memory_order_relaxed);
  }
  size_t used() const { return used_.load(std::memory_order_relaxed); }
  size_t limit() const { return limit_.load(std::memory_order_relaxed); }
  void setLimit(size_t limit) { limit_.store(limit, std::memory_order_relaxed); }

 private:
  std::atomic<size_t> limit_;
  std::atomic<size_t> used_{0};
};

}  // namespace postern
