// SpscRing and IoThread: order, bounds, and the loop-side bookkeeping. The threaded
// tests are the ones TSan checks (make tsan runs this file too).
#include "queue/io_thread.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace postern {
namespace {

TEST(SpscRingTest, FullAndEmptyAreReported) {
  SpscRing<int> ring(4);
  int items[5] = {0, 1, 2, 3, 4};
  EXPECT_EQ(ring.pop(), nullptr);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(ring.push(&items[i]));
  EXPECT_FALSE(ring.push(&items[4]));
  EXPECT_EQ(ring.pop(), &items[0]);
  EXPECT_TRUE(ring.push(&items[4]));  // the freed slot is reused
  for (int i = 1; i < 5; ++i) EXPECT_EQ(ring.pop(), &items[i]);
  EXPECT_EQ(ring.pop(), nullptr);
}

TEST(SpscRingTest, TwoThreadsKeepOrderAndLoseNothing) {
  constexpr size_t kItems = 200000;
  std::vector<size_t> values(kItems);
  for (size_t i = 0; i < kItems; ++i) values[i] = i;
  SpscRing<size_t> ring(64);  // small, so both the full and the empty path are taken
  std::thread producer([&] {
    for (size_t i = 0; i < kItems; ++i) {
      while (!ring.push(&values[i])) std::this_thread::yield();
    }
  });
  size_t next = 0;
  bool in_order = true;
  while (next < kItems) {
    size_t* v = ring.pop();
    if (v == nullptr) {
      std::this_thread::yield();
      continue;
    }
    in_order = in_order && *v == next;  // reads what the producer wrote before publishing
    ++next;
  }
  producer.join();
  EXPECT_TRUE(in_order);
  EXPECT_EQ(ring.pop(), nullptr);
}

struct Job {
  std::thread::id ran_on;
  int value = 0;
  int result = 0;
  std::vector<int>* finished = nullptr;
};

void runJob(void* p) {
  auto* j = static_cast<Job*>(p);
  j->ran_on = std::this_thread::get_id();
  j->result = j->value * 2;
}

void finishJob(void* p) {
  auto* j = static_cast<Job*>(p);
  j->finished->push_back(j->result);
}

class IoThreadTest : public ::testing::Test {
 protected:
  void SetUp() override { uv_loop_init(&loop_); }
  void TearDown() override { EXPECT_EQ(uv_loop_close(&loop_), 0); }
  // The handle lives inside io: its close callback must run before io goes.
  void closeAndRun(IoThread& io) {
    io.close();
    uv_run(&loop_, UV_RUN_DEFAULT);
  }
  uv_loop_t loop_;
};

TEST_F(IoThreadTest, JobsRunOffTheLoopAndComeBackInOrder) {
  std::vector<int> finished;
  IoThread io(&loop_, runJob, finishJob, 4);
  std::vector<Job> jobs(4);
  for (int i = 0; i < 4; ++i) {
    jobs[i].value = i;
    jobs[i].finished = &finished;
    ASSERT_TRUE(io.submit(&jobs[i]));
  }
  Job extra;
  EXPECT_FALSE(io.submit(&extra));  // capacity 4, all in flight
  EXPECT_EQ(io.inFlight(), 4u);
  // A job in flight keeps the loop running, as a uv_work_t would; then nothing does.
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(finished, (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(io.inFlight(), 0u);
  for (const Job& j : jobs) EXPECT_NE(j.ran_on, std::this_thread::get_id());
  closeAndRun(io);
}

TEST_F(IoThreadTest, ManyRoundsThroughOneThread) {
  // The thread sleeps between rounds, so every round tests a wake-up both ways.
  std::vector<int> finished;
  IoThread io(&loop_, runJob, finishJob, 2);
  Job job;
  job.finished = &finished;
  for (int round = 0; round < 2000; ++round) {
    job.value = round;
    ASSERT_TRUE(io.submit(&job));
    while (io.inFlight() > 0) uv_run(&loop_, UV_RUN_ONCE);
  }
  ASSERT_EQ(finished.size(), 2000u);
  EXPECT_EQ(finished.back(), 2 * 1999);
  closeAndRun(io);
}

TEST_F(IoThreadTest, CloseWithAJobInFlightWaitsForIt) {
  std::vector<int> finished;
  IoThread io(&loop_, runJob, finishJob);
  Job job;
  job.value = 21;
  job.finished = &finished;
  ASSERT_TRUE(io.submit(&job));
  closeAndRun(io);  // the handle stays open until the job is back
  EXPECT_EQ(finished, std::vector<int>{42});
}

TEST_F(IoThreadTest, ClosesWhenNeverUsed) {
  IoThread io(&loop_, runJob, finishJob);
  closeAndRun(io);
}

}  // namespace
}  // namespace postern
