#include "relay/connection_limiter.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace postern {
namespace {

TEST(ConnectionLimiter, PerIpAndTotal) {
  ConnectionLimiter l(3, 2);
  auto a = IpAddress::parse("192.0.2.1").value();
  auto b = IpAddress::parse("2001:db8::1").value();
  EXPECT_TRUE(l.admit(a));
  EXPECT_TRUE(l.admit(a));
  EXPECT_FALSE(l.admit(a));
  EXPECT_TRUE(l.admit(b));
  EXPECT_FALSE(l.admit(b));  // total reached
  l.release(a);
  EXPECT_TRUE(l.admit(b));
  EXPECT_EQ(l.total(), 3u);
}

// Many threads admitting and releasing at once never let the count pass the limit and
// return it to zero (run under TSan by `make tsan`).
TEST(ConnectionLimiter, ConcurrentAdmitsStayBounded) {
  ConnectionLimiter l(1000, 50);
  std::atomic<size_t> over{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto ip = IpAddress::parse("198.51.100." + std::to_string(t % 2)).value();
      for (int i = 0; i < 20000; ++i) {
        if (l.admit(ip)) {
          if (l.total() > 1000) over++;
          l.release(ip);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(over.load(), 0u);
  EXPECT_EQ(l.total(), 0u);
}

}  // namespace
}  // namespace postern
