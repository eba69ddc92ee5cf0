// HandshakeGate: at most a few TLS handshake steps per turn of a worker's loop, so that a
// storm of new STARTTLS clients cannot stall the sessions already talking on that worker.
//
// A full handshake's first step costs the server a signature and a key exchange (tenths of
// a millisecond); a hundred of them arriving in one epoll batch would keep every other
// session on the loop waiting for all of them. Through the gate, a turn of the loop runs at
// most per_turn steps; the rest wait in arrival order, with their socket not read (so a
// waiting client cannot pile up bytes), and go in later turns, between which the loop
// polls again and the other sessions' commands and messages are answered.
//
// Use: before a handshake step a session calls enter(). true: go now. false: it waits, and
// the gate calls its resume function in a later turn (then enter() says true for it);
// cancel() when it closes while waiting. On the worker's loop only.
#pragma once

#include <uv.h>

#include <cstddef>
#include <deque>
#include <unordered_set>

namespace postern {

class HandshakeGate {
 public:
  using Resume = void (*)(void* who);

  HandshakeGate(uv_loop_t* loop, size_t per_turn);
  HandshakeGate(const HandshakeGate&) = delete;
  HandshakeGate& operator=(const HandshakeGate&) = delete;
  // Its handles are closed with the loop's others (uv_walk at the worker's end).

  bool enter(void* who, Resume resume);
  void cancel(void* who);
  size_t waiting() const { return queue_.size(); }
  void setPerTurn(size_t per_turn) { per_turn_ = per_turn < 1 ? 1 : per_turn; }

 private:
  struct Waiter {
    void* who;
    Resume resume;
  };
  static void onCheck(uv_check_t* h);
  void updateIdle();

  size_t per_turn_;
  size_t used_ = 0;          // steps run in this turn
  void* granted_ = nullptr;  // the waiter being resumed: its enter() is true
  std::deque<Waiter> queue_;
  std::unordered_set<void*> queued_;
  // After the turn's I/O: waiters take what budget is left, and the next turn starts.
  uv_check_t check_;
  uv_idle_t idle_;  // active while some wait, so the loop does not sleep in poll
};

}  // namespace postern
