#include "queue/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace postern {
namespace {

ParkedJob job(uint64_t id) {
  ParkedJob j;
  j.message.id = id;
  j.message.recipients = 2;
  j.message.done.set(1);
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
  ASSERT_TRUE(a.has_value());
  EXPECT_FALSE(s.takeReady().has_value());
  s.defer(std::move(*a), 1000);  // due at ~2000
  s.deferUntil(job(2), 1500);
  EXPECT_EQ(s.promote(1000), 500);
  EXPECT_EQ(s.readyCount(), 0u);
  EXPECT_GT(s.promote(1500), 0);
  ASSERT_EQ(s.readyCount(), 1u);
  EXPECT_EQ(s.takeReady()->message.id, 2u);
  EXPECT_EQ(s.promote(2200), -1);
  auto back = s.takeReady();
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->attempts, 1u);
  EXPECT_FALSE(back->message.done.test(0));
  EXPECT_TRUE(back->message.done.test(1));
}

TEST(Scheduler, TakesAndFlushesTheJobsOfOneMessage) {
  Scheduler s(1, 10, 1);
  s.deferUntil(job(7), 5000);
  s.deferUntil(job(8), 6000);
  s.deferUntil(job(7), 7000);
  EXPECT_EQ(s.takeDeferred(7).size(), 2u);
  EXPECT_EQ(s.deferredCount(), 1u);
  EXPECT_EQ(s.flush(0), 1u);
  EXPECT_EQ(s.takeReady()->message.id, 8u);
}

TEST(RecipientFlags, InlineAndBeyondSixtyFour) {
  RecipientFlags f;
  f.set(0);
  f.set(63);
  f.set(64);
  f.set(200);
  EXPECT_TRUE(f.test(0) && f.test(63) && f.test(64) && f.test(200));
  EXPECT_FALSE(f.test(1) || f.test(65) || f.test(199) || f.test(201) || f.test(100000));
  RecipientFlags copy = f;
  copy.set(5);
  EXPECT_FALSE(f.test(5));
  std::vector<bool> v = copy.toVector(202);
  EXPECT_EQ(std::count(v.begin(), v.end(), true), 5);
  EXPECT_EQ(RecipientFlags(v).toVector(202), v);
}

}  // namespace
}  // namespace postern
