#include "relay/queue_selection.h"

#include <gtest/gtest.h>

namespace postern {
namespace {

constexpr int64_t kNow = 1'800'000'000'000;

QueueEntry entry(std::string sender, std::vector<std::string> rcpts, int64_t age_ms) {
  QueueEntry e;
  e.id = "0123456789ABCDEF";
  e.sender = std::move(sender);
  e.recipients = std::move(rcpts);
  e.received_ms = kNow - age_ms;
  return e;
}

TEST(QueueSelectionTest, EveryCriterionGivenMustMatch) {
  const QueueEntry e = entry("Alice@Origin.test", {"a@dest.test", "b@OTHER.test"}, 7200'000);
  QueueSelection s;
  EXPECT_FALSE(s.matches(e, kNow)) << "an empty selection matches nothing";
  s.all = true;
  EXPECT_TRUE(s.matches(e, kNow));
  s = {};
  s.domain = "other.TEST";
  EXPECT_TRUE(s.matches(e, kNow)) << "any recipient's domain, any case";
  s.domain = "test";
  EXPECT_FALSE(s.matches(e, kNow)) << "the whole domain, not a suffix";
  s.domain = "dest.test";
  s.sender = "alice@origin.TEST";
  EXPECT_TRUE(s.matches(e, kNow));
  s.older_than_ms = 3 * 3600'000;
  EXPECT_FALSE(s.matches(e, kNow)) << "two hours old is not older than three";
  s.older_than_ms = 3600'000;
  EXPECT_TRUE(s.matches(e, kNow));
  s.sender = "";
  EXPECT_FALSE(s.matches(e, kNow)) << "the null sender only";
  EXPECT_TRUE(s.matches(entry("", {"x@dest.test"}, 7200'000), kNow));
}

TEST(QueueSelectionTest, QueryRoundTripsAndBadInputIsRefused) {
  QueueSelection s;
  s.all = true;
  s.domain = "dest.test";
  s.sender = "a+tag&x=1@origin.test";
  s.older_than_ms = 90'000;
  Result<QueueSelection> back = parseSelection(selectionQuery(s));
  ASSERT_TRUE(back) << back.error();
  EXPECT_TRUE(back->all);
  EXPECT_EQ(back->domain, "dest.test");
  EXPECT_EQ(back->sender, s.sender);
  EXPECT_EQ(back->older_than_ms, 90'000);
  EXPECT_EQ(parseSelection("sender=%3C%3E")->sender, "");  // <>: the null sender
  EXPECT_FALSE(parseSelection("domain="));
  EXPECT_FALSE(parseSelection("all=yes"));
  EXPECT_FALSE(parseSelection("older_than=soon"));
  EXPECT_FALSE(parseSelection("older_than=0"));
  EXPECT_FALSE(parseSelection("sender=%4"));
  EXPECT_FALSE(parseSelection("sender=%zz"));
  EXPECT_FALSE(parseSelection("recipient=a@b"));
  EXPECT_TRUE(parseSelection("")->empty());
}

TEST(QueueSelectionTest, Ages) {
  EXPECT_EQ(parseAge("90"), 90'000);
  EXPECT_EQ(parseAge("90s"), 90'000);
  EXPECT_EQ(parseAge("30m"), 1'800'000);
  EXPECT_EQ(parseAge("2h"), 7'200'000);
  EXPECT_EQ(parseAge("3d"), 259'200'000);
  EXPECT_FALSE(parseAge(""));
  EXPECT_FALSE(parseAge("h"));
  EXPECT_FALSE(parseAge("-1s"));
  EXPECT_FALSE(parseAge("1w"));
  EXPECT_FALSE(parseAge("99999999999999999999d"));
}

}  // namespace
}  // namespace postern
