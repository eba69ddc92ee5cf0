#include "core/memory_budget.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace postern {
namespace {

TEST(MemoryBudget, ChargesUpToTheLimit) {
  MemoryBudget b(100);
  EXPECT_TRUE(b.tryCharge(60));
  EXPECT_FALSE(b.tryCharge(41));
  EXPECT_TRUE(b.tryCharge(40));
  EXPECT_TRUE(b.exhausted());
  b.release(50);
  EXPECT_FALSE(b.exhausted());
  b.charge(70);  // unconditional: memory already in use
  EXPECT_EQ(b.used(), 120u);
  EXPECT_FALSE(b.tryCharge(1));
  b.setLimit(200);
  EXPECT_TRUE(b.tryCharge(80));
}

// Threads charging at once never take more than the limit (run under TSan by make tsan).
TEST(MemoryBudget, ConcurrentChargesStayBounded) {
  MemoryBudget b(10000);
  std::atomic<size_t> taken{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        if (b.tryCharge(7)) taken += 7;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(taken.load(), 10000u);
  EXPECT_GT(taken.load(), 10000u - 7);
  EXPECT_EQ(b.used(), taken.load());
}

}  // namespace
}  // namespace postern
