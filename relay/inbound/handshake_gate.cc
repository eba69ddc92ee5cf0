#include "relay/inbound/handshake_gate.h"

#include <algorithm>

namespace postern {

HandshakeGate::HandshakeGate(uv_loop_t* loop, size_t per_turn)
    : per_turn_(std::max<size_t>(per_turn, 1)) {
  uv_check_init(loop, &check_);
  check_.data = this;
  uv_check_start(&check_, onCheck);
  uv_unref(reinterpret_cast<uv_handle_t*>(&check_));
  uv_idle_init(loop, &idle_);
  idle_.data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&idle_));
}

bool HandshakeGate::enter(void* who, Resume resume) {
  if (who == granted_) return true;           // counted when it was resumed
  if (queued_.count(who) != 0) return false;  // waiting already (more bytes arrived)
  // Those waiting go first: a newcomer waits behind them even if budget is left.
  if (queue_.empty() && used_ < per_turn_) {
    ++used_;
    return true;
  }
  queue_.push_back({who, resume});
  queued_.insert(who);
  updateIdle();
  return false;
}

void HandshakeGate::cancel(void* who) {
  if (queued_.erase(who) == 0) return;
  queue_.erase(
      std::find_if(queue_.begin(), queue_.end(), [who](const Waiter& w) { return w.who == who; }));
  updateIdle();
}

void HandshakeGate::onCheck(uv_check_t* h) {
  auto* g = static_cast<HandshakeGate*>(h->data);
  while (!g->queue_.empty() && g->used_ < g->per_turn_) {
    Waiter w = g->queue_.front();
    g->queue_.pop_front();
    g->queued_.erase(w.who);
    ++g->used_;
    g->granted_ = w.who;
    w.resume(w.who);  // may close the session, or queue it again for its next step
    g->granted_ = nullptr;
  }
  g->used_ = 0;  // a turn runs from one check to the next: timers, poll, then this
  g->updateIdle();
}

void HandshakeGate::updateIdle() {
  if (queue_.empty()) {
    uv_idle_stop(&idle_);
  } else if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&idle_))) {
    uv_idle_start(&idle_, [](uv_idle_t*) {});
  }
}

}  // namespace postern
