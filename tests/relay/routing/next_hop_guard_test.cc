#include "relay/routing/next_hop_guard.h"

#include <gtest/gtest.h>

namespace postern {
namespace {

HopAddress hop(const std::string& host, const std::string& ip_port) {
  HopAddress h;
  h.host = host;
  const std::optional<sockaddr_storage> addr = parseHostPort(ip_port);
  EXPECT_TRUE(addr) << ip_port;
  if (addr) h.addr = *addr;
  return h;
}

std::vector<ListenerConfig> listeners(std::initializer_list<const char*> addresses) {
  std::vector<ListenerConfig> out;
  for (const char* a : addresses) {
    ListenerConfig l;
    l.address = a;
    out.push_back(l);
  }
  return out;
}

IpAddress ip(const char* text) { return *IpAddress::parse(text); }

TEST(NextHopGuard, ListenerAddressAndPortIsSelf) {
  NextHopGuard g(listeners({"127.0.0.1:2525", "[::1]:2526"}), {});
  EXPECT_TRUE(g.isSelf(ip("127.0.0.1"), 2525));
  EXPECT_TRUE(g.isSelf(ip("::1"), 2526));
  EXPECT_TRUE(g.isSelf(ip("0.0.0.0"), 2525));  // connecting to 0.0.0.0 reaches loopback
  EXPECT_FALSE(g.isSelf(ip("127.0.0.1"), 2526));
  EXPECT_FALSE(g.isSelf(ip("127.0.0.2"), 2525));  // a listener on one loopback address
}

TEST(NextHopGuard, WildcardListenerIsEveryLocalAddress) {
  NextHopGuard g(listeners({"0.0.0.0:25"}), {ip("192.0.2.7"), ip("127.0.0.1")});
  EXPECT_TRUE(g.isSelf(ip("192.0.2.7"), 25));
  EXPECT_TRUE(g.isSelf(ip("127.0.0.5"), 25));  // all of 127/8 is this host
  EXPECT_FALSE(g.isSelf(ip("192.0.2.8"), 25));
  EXPECT_FALSE(g.isSelf(ip("192.0.2.7"), 26));
}

TEST(NextHopGuard, RouteToSelfBecomesALoopFailure) {
  NextHopGuard g(listeners({"127.0.0.1:2525"}), {});
  HopResolution r;
  r.addresses = {hop("127.0.0.1", "127.0.0.1:2525")};
  g.filter(r, "smarthost", false, false);
  EXPECT_EQ(r.status, HopResolution::Status::kPermanent);
  EXPECT_EQ(r.error.substr(0, 5), "5.4.6");
  EXPECT_NE(r.error.find("loops back to myself"), std::string::npos);
}

TEST(NextHopGuard, SmarthostMayBeInternal) {
  NextHopGuard g(listeners({"127.0.0.1:2525"}), {});
  HopResolution r;
  r.addresses = {hop("inside", "127.0.0.1:2526")};
  g.filter(r, "inside", false, false);
  EXPECT_EQ(r.status, HopResolution::Status::kOk);
  EXPECT_EQ(r.addresses.size(), 1u);
}

TEST(NextHopGuard, MxInternalAddressesRefusedUnlessAllowed) {
  NextHopGuard g(listeners({"127.0.0.1:2525"}), {});
  HopResolution r;
  r.addresses = {hop("mx1", "127.0.0.2:25"), hop("mx2", "[::1]:25")};
  HopResolution allowed = r;
  g.filter(r, "example.test", true, false);
  EXPECT_EQ(r.status, HopResolution::Status::kPermanent);
  EXPECT_EQ(r.error.substr(0, 5), "5.4.4");
  g.filter(allowed, "example.test", true, true);
  EXPECT_EQ(allowed.status, HopResolution::Status::kOk);
  EXPECT_EQ(allowed.addresses.size(), 2u);
}

TEST(NextHopGuard, MxHostsAfterSelfAreDropped) {
  NextHopGuard g(listeners({"0.0.0.0:25"}), {ip("192.0.2.7")});
  HopResolution r;
  r.addresses = {hop("better", "192.0.2.1:25"), hop("me", "192.0.2.7:25"),
                 hop("worse", "192.0.2.9:25")};
  g.filter(r, "example.test", true, false);
  ASSERT_EQ(r.status, HopResolution::Status::kOk);
  ASSERT_EQ(r.addresses.size(), 1u);
  EXPECT_EQ(r.addresses[0].host, "better");
  HopResolution only_me;
  only_me.addresses = {hop("me", "192.0.2.7:25"), hop("worse", "192.0.2.9:25")};
  g.filter(only_me, "example.test", true, false);
  EXPECT_EQ(only_me.status, HopResolution::Status::kPermanent);
  EXPECT_EQ(only_me.error.substr(0, 5), "5.4.6");
}

TEST(NextHopGuard, PublicMxAddressesPass) {
  NextHopGuard g(listeners({"127.0.0.1:2525"}), {});
  HopResolution r;
  r.addresses = {hop("mx", "192.0.2.1:25"), hop("mx", "[2001:db8::1]:25")};
  g.filter(r, "example.test", true, false);
  EXPECT_EQ(r.status, HopResolution::Status::kOk);
  EXPECT_EQ(r.addresses.size(), 2u);
}

}  // namespace
}  // namespace postern
