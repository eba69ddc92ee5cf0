// SpscRing: a bounded single-producer, single-consumer queue of pointers, lock-free.
//
// One thread calls push(), one other thread calls pop(); neither ever blocks or takes a
// lock. push() returns false when the ring is full and pop() returns nullptr when it is
// empty, so the caller decides what full means (the spool never has more batches in
// flight than the ring holds, and asserts it). Head and tail sit on their own cache lines
// so the two threads do not bounce one line between cores; each side keeps a cached copy
// of the other's index and reloads it only when the ring looks full (or empty).
//
// Waking the consumer is not the ring's job: pair it with an EventCount (a thread) or
// uv_async_send (a loop), and have the consumer drain the ring at every wake-up, since
// both coalesce.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/assert.h"

namespace postern {

template <typename T>
class SpscRing {
 public:
  // capacity: a power of two.
  explicit SpscRing(size_t capacity) : mask_(capacity - 1), slots_(new T*[capacity]) {
    POSTERN_ASSERT(capacity >= 2 && (capacity & mask_) == 0);
  }
  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;

  // Producer thread only.
  bool push(T* item) {
    const size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_cache_ > mask_) {
      head_cache_ = head_.load(std::memory_order_acquire);
      if (tail - head_cache_ > mask_) return false;
    }
    slots_[tail & mask_] = item;
    tail_.store(tail + 1, std::memory_order_release);  // publishes the slot
    return true;
  }

  // Consumer thread only.
  T* pop() {
    const size_t head = head_.load(std::memory_order_relaxed);
    if (head == tail_cache_) {
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (head == tail_cache_) return nullptr;
    }
    T* item = slots_[head & mask_];
    head_.store(head + 1, std::memory_order_release);  // frees the slot
    return item;
  }

  size_t capacity() const { return mask_ + 1; }

 private:
  const size_t mask_;
  const std::unique_ptr<T*[]> slots_;
  alignas(64) std::atomic<size_t> head_{0};  // next slot to pop; written by the consumer
  size_t tail_cache_ = 0;                    // consumer's copy of tail_
  alignas(64) std::atomic<size_t> tail_{0};  // next slot to push; written by the producer
  size_t head_cache_ = 0;                    // producer's copy of head_
};

// EventCount: lets a thread sleep until a producer has pushed something, without a lock
// and without a lost wake-up. The consumer reads prepare() BEFORE it looks at the queue
// and, finding it empty, wait()s on that value; a push made after the read bumps the
// count, so the wait returns at once.
//
// A futex of its own rather than std::atomic::wait: libstdc++ 12's wait spins first and
// calls sched_yield four times before it sleeps, which on this machine was four of the
// relay's ~29 system calls per message (strace -c -f). notify() makes the wake-up call
// only when the consumer is asleep or about to be: the waiter announces itself before it
// looks at the count, the producer bumps the count before it looks for waiters, and with
// both in sequentially consistent order one of them sees the other.
class EventCount {
 public:
  uint32_t prepare() const { return count_.load(std::memory_order_seq_cst); }
  void wait(uint32_t seen) {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    // FUTEX_WAIT sleeps only while the count is still `seen`; a wake-up or signal that
    // leaves it unchanged loops.
    while (count_.load(std::memory_order_seq_cst) == seen) futex(FUTEX_WAIT_PRIVATE, seen);
    waiters_.fetch_sub(1, std::memory_order_relaxed);
  }
  void notify() {
    count_.fetch_add(1, std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) > 0) futex(FUTEX_WAKE_PRIVATE, 1);
  }

 private:
  void futex(int op, uint32_t val) {
    ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&count_), op, val, nullptr, nullptr, 0);
  }

  std::atomic<uint32_t> count_{0};
  std::atomic<uint32_t> waiters_{0};
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
};

}  // namespace postern
