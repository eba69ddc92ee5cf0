#include "core/result.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace postern {
namespace {

Result<int> half(int n) {
  if (n % 2 != 0) return fail(std::to_string(n) + " is odd");
  return n / 2;
}

Status check(bool good) {
  if (!good) return Error{"not good"};
  return {};
}

TEST(Result, HoldsTheValue) {
  Result<int> r = half(8);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(static_cast<bool>(r));
  EXPECT_EQ(r.value(), 4);
  EXPECT_EQ(*r, 4);
}

TEST(Result, HoldsTheReason) {
  Result<int> r = half(7);
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(static_cast<bool>(r));
  EXPECT_EQ(r.error(), "7 is odd");
}

TEST(Result, AStringValueIsNotAnError) {
  // The value and the reason are both strings here; which one it holds is not a guess.
  Result<std::string> value = std::string("token");
  Result<std::string> error = fail("token");
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, "token");
  EXPECT_EQ(value->size(), 5u);
  ASSERT_FALSE(error.ok());
  EXPECT_EQ(error.error(), "token");
}

TEST(Result, MovesAnOwnedValueOut) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(3);
  ASSERT_TRUE(r);
  std::unique_ptr<int> p = std::move(r).value();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 3);
  Result<std::unique_ptr<int>> again = std::make_unique<int>(5);
  std::unique_ptr<int> q = *std::move(again);
  EXPECT_EQ(*q, 5);
}

TEST(Result, ValueOrFallback) {
  EXPECT_EQ(half(8).value_or(-1), 4);
  EXPECT_EQ(half(7).value_or(-1), -1);
}

TEST(Status, SuccessOrReason) {
  Status good = check(true);
  EXPECT_TRUE(good.ok());
  Status bad = check(false);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), "not good");
}

TEST(Status, AnEmptyReasonIsStillAFailure) {
  // Success is not told by an empty string, unlike the "" convention Status replaced.
  Status s = fail("");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.error(), "");
}

TEST(ResultDeathTest, TheValueOfAFailureIsABug) {
  Result<int> r = half(3);
  EXPECT_DEATH((void)r.value(), "assertion failed");
  Result<int> v = half(2);
  EXPECT_DEATH((void)v.error(), "assertion failed");
}

}  // namespace
}  // namespace postern
