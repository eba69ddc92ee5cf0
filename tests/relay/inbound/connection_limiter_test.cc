#include "relay/inbound/connection_limiter.h"

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

// One IPv6 client owns a whole /64: its addresses share one count (the default prefix);
// the next /64 is another client. IPv4 is per address whatever the prefix.
TEST(ConnectionLimiter, Ipv6CountedPerPrefix) {
  ConnectionLimiter l(100, 2, 64);
  auto ip = [](const char* t) { return IpAddress::parse(t).value(); };
  EXPECT_TRUE(l.admit(ip("2001:db8:1:2::1")));
  EXPECT_TRUE(l.admit(ip("2001:db8:1:2:ffff::9")));
  EXPECT_FALSE(l.admit(ip("2001:db8:1:2:abcd:1234:5678:9abc")));
  EXPECT_TRUE(l.admit(ip("2001:db8:1:3::1")));  // the next /64
  EXPECT_TRUE(l.admit(ip("192.0.2.1")));
  EXPECT_TRUE(l.admit(ip("192.0.2.2")));
  l.release(ip("2001:db8:1:2::77"));  // any address of the prefix gives its slot back
  EXPECT_TRUE(l.admit(ip("2001:db8:1:2::1")));

  ConnectionLimiter odd(100, 1, 60);  // a prefix inside a byte
  EXPECT_TRUE(odd.admit(ip("2001:db8:1:20::1")));
  EXPECT_FALSE(odd.admit(ip("2001:db8:1:2f::1")));  // same /60
  EXPECT_TRUE(odd.admit(ip("2001:db8:1:30::1")));
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
