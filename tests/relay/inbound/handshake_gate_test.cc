#include "relay/inbound/handshake_gate.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace postern {
namespace {

// Waiters are plain ints here; resume records the order and runs the step through enter().
struct Fixture {
  uv_loop_t loop;
  std::unique_ptr<HandshakeGate> gate;
  std::vector<int> resumed;
  std::vector<int> steps_run;

  uv_timer_t alive;  // stands for the sessions' sockets, which keep a worker's loop alive

  explicit Fixture(size_t per_turn) {
    uv_loop_init(&loop);
    gate = std::make_unique<HandshakeGate>(&loop, per_turn);
    uv_timer_init(&loop, &alive);
    uv_timer_start(&alive, [](uv_timer_t*) {}, 3600 * 1000, 0);
  }
  ~Fixture() {
    uv_walk(
        &loop,
        [](uv_handle_t* h, void*) {
          if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
};

Fixture* current = nullptr;

void resume(void* who) {
  int id = *static_cast<int*>(who);
  current->resumed.push_back(id);
  if (current->gate->enter(who, resume)) current->steps_run.push_back(id);
}

TEST(HandshakeGateTest, AtMostPerTurnStepsThenTheRestInLaterTurnsInOrder) {
  Fixture f(2);
  current = &f;
  int ids[5] = {0, 1, 2, 3, 4};
  // All five arrive in one turn (as from one epoll batch).
  uv_timer_t arrive;
  uv_timer_init(&f.loop, &arrive);
  arrive.data = ids;
  uv_timer_start(
      &arrive,
      [](uv_timer_t* t) {
        int* ids = static_cast<int*>(t->data);
        for (int i = 0; i < 5; ++i) {
          if (current->gate->enter(&ids[i], resume)) current->steps_run.push_back(ids[i]);
        }
        EXPECT_EQ(current->steps_run, (std::vector<int>{0, 1}));
        EXPECT_EQ(current->gate->waiting(), 3u);
        uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
      },
      0, 0);
  // Turns go by while some wait (the gate keeps the loop from sleeping in poll).
  uv_run(&f.loop, UV_RUN_NOWAIT);  // the arrivals; the check after it has no budget left
  EXPECT_EQ(f.resumed, std::vector<int>{});
  uv_run(&f.loop, UV_RUN_NOWAIT);  // a new turn: two more
  EXPECT_EQ(f.resumed, (std::vector<int>{2, 3}));
  uv_run(&f.loop, UV_RUN_NOWAIT);
  EXPECT_EQ(f.resumed, (std::vector<int>{2, 3, 4}));
  EXPECT_EQ(f.steps_run, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(f.gate->waiting(), 0u);
}

TEST(HandshakeGateTest, NewcomersWaitBehindThoseWaitingAndCancelledOnesAreSkipped) {
  Fixture f(1);
  current = &f;
  int a = 1, b = 2, c = 3;
  EXPECT_TRUE(f.gate->enter(&a, resume));   // this turn's one step
  EXPECT_FALSE(f.gate->enter(&b, resume));  // waits
  EXPECT_FALSE(f.gate->enter(&b, resume));  // more bytes for it: still one place in line
  EXPECT_EQ(f.gate->waiting(), 1u);
  uv_run(&f.loop, UV_RUN_NOWAIT);  // the turn ends with no budget left for b
  EXPECT_EQ(f.resumed, std::vector<int>{});
  EXPECT_FALSE(f.gate->enter(&c, resume));  // budget again, but b waits and goes first
  EXPECT_EQ(f.gate->waiting(), 2u);
  f.gate->cancel(&c);  // c closed while waiting
  EXPECT_EQ(f.gate->waiting(), 1u);
  uv_run(&f.loop, UV_RUN_NOWAIT);
  EXPECT_EQ(f.resumed, std::vector<int>{2});
  EXPECT_EQ(f.steps_run, std::vector<int>{2});
  f.gate->cancel(&c);  // not waiting: nothing happens
  EXPECT_EQ(f.gate->waiting(), 0u);
}

}  // namespace
}  // namespace postern
