#include "queue/scheduler.h"

#include <gtest/gtest.h>

#include <set>

namespace postern {
namespace {

std::unique_ptr<DeliveryJob> job(uint64_t id) {
  auto j = std::make_unique<DeliveryJob>();
  j->message.envelope.id = id;
  j->message.envelope.recipients = {"a@b", "c@d"};
  j->message.done = {false, true};
  return j;
}

TEST(Scheduler, BackoffDoublesToTheCapWithBoundedJitter) {
  Scheduler s(300, 4000, 42);
  const uint64_t expected[] = {300000, 600000, 1200000, 2400000, 4000000, 4000000};
  for (unsigned a = 1; a <= 6; ++a) {
    uint64_t d = s.backoffMs(a);
    EXPECT_GE(d, expected[a - 1]) << a;
    EXPECT_LE(d, expected[a - 1] * 11 / 10) << a;
  }
}

TEST(Scheduler, JitterSpreadsRetriesOfOneRound) {
  // A burst of failures must not come back as one burst: the delays for one attempt
  // count differ, and stay within 10% above the base.
  Scheduler s(300, 4000, 7);
  std::set<uint64_t> seen;
  for (int i = 0; i < 100; ++i) {
    uint64_t d = s.backoffMs(1);
    EXPECT_GE(d, 300000u);
    EXPECT_LE(d, 330000u);
    seen.insert(d);
  }
  EXPECT_GT(seen.size(), 50u);
  EXPECT_GT(*seen.rbegin() - *seen.begin(), 15000u);  // spread over more than half of 10%
}

TEST(Scheduler, DeferredJobsBecomeReadyInDueOrder) {
  Scheduler s(1, 10, 1);
  s.addReady(job(1));
  auto a = s.takeReady();
  EXPECT_EQ(s.takeReady(), nullptr);
  s.defer(std::move(a), 1000);  // due at ~2000
  s.deferUntil(job(2), 1500);
  EXPECT_EQ(s.promote(1000), 500);
  EXPECT_EQ(s.readyCount(), 0u);
  EXPECT_GT(s.promote(1500), 0);
  ASSERT_EQ(s.readyCount(), 1u);
  EXPECT_EQ(s.takeReady()->message.envelope.id, 2u);
  EXPECT_EQ(s.promote(2200), -1);
  auto back = s.takeReady();
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->attempts, 1u);
  EXPECT_EQ(back->pendingRecipients(), std::vector<uint32_t>{0});
}

}  // namespace
}  // namespace postern
