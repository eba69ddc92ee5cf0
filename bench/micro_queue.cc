// Micro-benchmark of the cross-thread handoff: single producer (the benchmark thread),
// single consumer (a second thread, spinning), items are pointers. One iteration moves a
// batch of kBatch items and waits until the consumer has taken all of them, so the time
// is that of the whole transfer, not just of the pushes. moodycamel::ConcurrentQueue
// (Debian libconcurrentqueue-dev) against std::mutex + std::deque, first popping one item
// per call (with moodycamel's producer/consumer tokens), then draining in bulk as
// relay/worker.cc does with the handoff queue.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#if __has_include(<concurrentqueue/concurrentqueue.h>)
#include <concurrentqueue/concurrentqueue.h>
#define POSTERN_HAVE_MOODYCAMEL 1
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace postern {
namespace {

constexpr size_t kBatch = 16 * 1024;

inline void cpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

struct Item {
  uint64_t value;
};

// What the consumer publishes, on its own cache line.
struct alignas(64) Progress {
  std::atomic<uint64_t> consumed{0};
  std::atomic<bool> stop{false};
  uint64_t sum = 0;
};

// Runs the producer side: pushes kBatch items per iteration with push(Item*), then waits
// for the consumer. The consumer thread runs pop_loop(progress).
template <class Push, class PopLoop>
void runSpsc(benchmark::State& state, Push push, PopLoop pop_loop) {
  std::vector<Item> items(kBatch);
  for (size_t i = 0; i < kBatch; ++i) items[i].value = i;
  Progress progress;
  std::thread consumer([&] { pop_loop(progress); });
  uint64_t target = 0;
  for (auto _ : state) {
    for (size_t i = 0; i < kBatch; ++i) push(&items[i]);
    target += kBatch;
    while (progress.consumed.load(std::memory_order_acquire) < target) cpuRelax();
  }
  progress.stop.store(true, std::memory_order_release);
  consumer.join();
  const uint64_t expected = state.iterations() * (kBatch * (kBatch - 1) / 2);
  if (progress.consumed.load() != target || progress.sum != expected) {
    state.SkipWithError("items lost or duplicated");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBatch));
}

#ifdef POSTERN_HAVE_MOODYCAMEL
void BM_QueueSpscMoodycamel(benchmark::State& state) {
  moodycamel::ConcurrentQueue<Item*> q(kBatch);
  moodycamel::ProducerToken ptok(q);
  runSpsc(
      state,
      [&](Item* it) {
        if (!q.enqueue(ptok, it)) std::abort();
      },
      [&](Progress& p) {
        moodycamel::ConsumerToken ctok(q);
        uint64_t n = 0;
        uint64_t sum = 0;
        Item* it = nullptr;
        for (;;) {
          if (q.try_dequeue(ctok, it)) {
            sum += it->value;
            p.consumed.store(++n, std::memory_order_release);
          } else if (p.stop.load(std::memory_order_acquire)) {
            break;
          } else {
            cpuRelax();
          }
        }
        p.sum = sum;
      });
}
BENCHMARK(BM_QueueSpscMoodycamel)->UseRealTime();

// The consumer as relay/worker.cc drainHandoffs() runs it after uv_async_send: no tokens,
// enqueue() on the producer side, try_dequeue_bulk() of up to 64 on the consumer side.
void BM_QueueSpscMoodycamelBulk(benchmark::State& state) {
  moodycamel::ConcurrentQueue<Item*> q(kBatch);
  runSpsc(
      state,
      [&](Item* it) {
        if (!q.enqueue(it)) std::abort();
      },
      [&](Progress& p) {
        uint64_t n = 0;
        uint64_t sum = 0;
        Item* got[64];
        for (;;) {
          size_t k = q.try_dequeue_bulk(got, 64);
          if (k > 0) {
            for (size_t i = 0; i < k; ++i) sum += got[i]->value;
            n += k;
            p.consumed.store(n, std::memory_order_release);
          } else if (p.stop.load(std::memory_order_acquire)) {
            break;
          } else {
            cpuRelax();
          }
        }
        p.sum = sum;
      });
}
BENCHMARK(BM_QueueSpscMoodycamelBulk)->UseRealTime();
#endif

// Baseline: std::mutex + std::deque, one lock per push and per pop.
void BM_QueueSpsc_MutexDequeBaseline(benchmark::State& state) {
  std::mutex m;
  std::deque<Item*> q;
  runSpsc(
      state,
      [&](Item* it) {
        std::lock_guard lock(m);
        q.push_back(it);
      },
      [&](Progress& p) {
        uint64_t n = 0;
        uint64_t sum = 0;
        for (;;) {
          Item* it = nullptr;
          {
            std::lock_guard lock(m);
            if (!q.empty()) {
              it = q.front();
              q.pop_front();
            }
          }
          if (it != nullptr) {
            sum += it->value;
            p.consumed.store(++n, std::memory_order_release);
          } else if (p.stop.load(std::memory_order_acquire)) {
            break;
          } else {
            cpuRelax();
          }
        }
        p.sum = sum;
      });
}
BENCHMARK(BM_QueueSpsc_MutexDequeBaseline)->UseRealTime();

// Baseline for the bulk consumer: std::mutex + std::deque, the consumer taking everything
// queued in one lock (swap) and then working through it unlocked.
void BM_QueueSpsc_MutexDequeSwapBaseline(benchmark::State& state) {
  std::mutex m;
  std::deque<Item*> q;
  runSpsc(
      state,
      [&](Item* it) {
        std::lock_guard lock(m);
        q.push_back(it);
      },
      [&](Progress& p) {
        uint64_t n = 0;
        uint64_t sum = 0;
        std::deque<Item*> mine;
        for (;;) {
          {
            std::lock_guard lock(m);
            mine.swap(q);
          }
          if (!mine.empty()) {
            for (Item* it : mine) sum += it->value;
            n += mine.size();
            mine.clear();
            p.consumed.store(n, std::memory_order_release);
          } else if (p.stop.load(std::memory_order_acquire)) {
            break;
          } else {
            cpuRelax();
          }
        }
        p.sum = sum;
      });
}
BENCHMARK(BM_QueueSpsc_MutexDequeSwapBaseline)->UseRealTime();

}  // namespace
}  // namespace postern
