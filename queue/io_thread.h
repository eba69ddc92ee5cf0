// IoThread: one loop's own thread for blocking disk work (the spool's writev + fdatasync),
// with lock-free handoffs both ways.
//
// The loop thread submit()s a job into an SPSC ring and wakes the thread through an
// EventCount; the thread runs run(job), pushes the job into a second SPSC ring and wakes
// the loop with uv_async_send; the loop's async callback drains that ring and calls
// done(job) for each, in submission order. Nothing on the way takes a lock, and nothing
// is shared with other workers: libuv's thread pool, which it replaces here, is one
// queue behind one mutex for the whole process.
//
// While a job is in flight the async handle keeps the loop alive (as a uv_work_t
// would); otherwise it does not. At most `capacity` jobs are in flight: submit() refuses
// more. The thread starts on the first submit(). close() (loop thread) ends the thread and
// closes the handle once nothing is in flight; until then done() still runs.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstddef>
#include <thread>

#include "queue/spsc_ring.h"

namespace postern {

class IoThread {
 public:
  using Fn = void (*)(void* job);

  IoThread(uv_loop_t* loop, Fn run, Fn done, size_t capacity = 8);
  ~IoThread();  // joins the thread; nothing may be in flight
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  bool submit(void* job);
  void close();
  size_t inFlight() const { return in_flight_; }

 private:
  static void onAsync(uv_async_t* h);
  void threadMain();
  void join();

  Fn run_;
  Fn done_;
  SpscRing<void> to_thread_;
  SpscRing<void> to_loop_;
  EventCount wake_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  uv_async_t async_;
  size_t in_flight_ = 0;  // loop thread only
  bool closing_ = false;
};

}  // namespace postern
