#include "queue/io_thread.h"

#include "core/assert.h"

namespace postern {

IoThread::IoThread(uv_loop_t* loop, Fn run, Fn done, size_t capacity)
    : run_(run), done_(done), to_thread_(capacity), to_loop_(capacity) {
  uv_async_init(loop, &async_, onAsync);
  async_.data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&async_));
}

IoThread::~IoThread() {
  POSTERN_ASSERT(in_flight_ == 0);
  join();
}

bool IoThread::submit(void* job) {
  POSTERN_ASSERT(!closing_);
  if (in_flight_ == to_thread_.capacity()) return false;
  if (!thread_.joinable()) thread_ = std::thread([this] { threadMain(); });
  if (in_flight_++ == 0) uv_ref(reinterpret_cast<uv_handle_t*>(&async_));
  // Cannot be full: every job in the ring is also counted in in_flight_.
  const bool pushed = to_thread_.push(job);
  POSTERN_ASSERT(pushed);
  wake_.notify();
  return true;
}

void IoThread::threadMain() {
  for (;;) {
    const uint32_t seen = wake_.prepare();  // before looking, so no push goes unseen
    if (void* job = to_thread_.pop()) {
      run_(job);
      // Cannot be full: a job is in at most one of the two rings.
      const bool pushed = to_loop_.push(job);
      POSTERN_ASSERT(pushed);
      uv_async_send(&async_);
      continue;
    }
    if (stop_.load(std::memory_order_acquire)) return;
    wake_.wait(seen);
  }
}

void IoThread::onAsync(uv_async_t* h) {
  auto* self = static_cast<IoThread*>(h->data);
  // uv_async_send coalesces: one wake-up may stand for several jobs.
  while (void* job = self->to_loop_.pop()) {
    if (--self->in_flight_ == 0) uv_unref(reinterpret_cast<uv_handle_t*>(h));
    self->done_(job);
  }
  if (self->closing_ && self->in_flight_ == 0) self->close();
}

void IoThread::close() {
  closing_ = true;
  if (in_flight_ > 0) return;  // onAsync closes once the last job is back
  // Joined first: the thread may still be inside uv_async_send for the last job, which
  // must not meet a closed handle.
  join();
  auto* h = reinterpret_cast<uv_handle_t*>(&async_);
  if (!uv_is_closing(h)) uv_close(h, nullptr);
}

void IoThread::join() {
  if (!thread_.joinable()) return;
  stop_.store(true, std::memory_order_release);
  wake_.notify();
  thread_.join();
}

}  // namespace postern
