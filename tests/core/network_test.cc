#include "core/network.h"

#include <gtest/gtest.h>

namespace postern {
namespace {

IpAddress ip(const char* s) { return IpAddress::parse(s).value(); }

TEST(Network, MatchesPrefixes) {
  auto n = Network::parse("127.0.0.0/8").value();
  EXPECT_TRUE(n.contains(ip("127.0.0.1")));
  EXPECT_TRUE(n.contains(ip("127.255.1.2")));
  EXPECT_FALSE(n.contains(ip("128.0.0.1")));
  EXPECT_FALSE(n.contains(ip("::1")));
  auto host = Network::parse("127.0.0.1").value();
  EXPECT_TRUE(host.contains(ip("127.0.0.1")));
  EXPECT_FALSE(host.contains(ip("127.0.0.2")));
  auto odd = Network::parse("10.1.2.0/23").value();
  EXPECT_TRUE(odd.contains(ip("10.1.3.255")));
  EXPECT_FALSE(odd.contains(ip("10.1.4.0")));
  auto v6 = Network::parse("2001:db8::/32").value();
  EXPECT_TRUE(v6.contains(ip("2001:db8:1::5")));
  EXPECT_FALSE(v6.contains(ip("2001:db9::5")));
}

TEST(Network, RejectsMalformed) {
  for (const char* bad :
       {"", "127.0.0.0/33", "::1/129", "1.2.3/8", "1.2.3.4/", "1.2.3.4/x", "host.example/8"}) {
    EXPECT_FALSE(Network::parse(bad).has_value()) << bad;
  }
}

TEST(Network, MappedV4ClientMatchesV4Network) {
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  sa.sin6_addr.s6_addr[10] = 0xff;
  sa.sin6_addr.s6_addr[11] = 0xff;
  sa.sin6_addr.s6_addr[12] = 127;
  sa.sin6_addr.s6_addr[15] = 1;
  auto a = IpAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sa)).value();
  EXPECT_FALSE(a.v6);
  EXPECT_EQ(a.toString(), "127.0.0.1");
}

TEST(Network, HostPort) {
  EXPECT_TRUE(parseHostPort("127.0.0.1:2525"));
  EXPECT_TRUE(parseHostPort("[::1]:25"));
  EXPECT_FALSE(parseHostPort("127.0.0.1"));
  EXPECT_FALSE(parseHostPort("127.0.0.1:99999"));
  EXPECT_FALSE(parseHostPort("mail.example:25"));
  const std::optional<HostPort> hp = splitHostPort("mail.example:25");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "mail.example");
  EXPECT_EQ(hp->port, 25);
  EXPECT_FALSE(splitHostPort("[]:25"));
}

TEST(IpAddress, InternalAddresses) {
  for (const char* a :
       {"0.0.0.0",         "127.0.0.1",       "127.9.9.9",   "10.1.2.3",   "172.16.0.1",
        "172.31.255.255",  "192.168.1.1",     "169.254.0.5", "100.64.0.1", "100.127.255.254",
        "224.0.0.1",       "255.255.255.255", "::",          "::1",        "fc00::1",
        "fd12:3456::1",    "fe80::1",         "febf::1",     "ff02::1",    "::ffff:10.0.0.1",
        "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(IpAddress::parse(a)->isInternal()) << a;
  }
  for (const char* a :
       {"8.8.8.8", "1.1.1.1", "172.15.255.255", "172.32.0.1", "192.169.0.1", "100.63.255.255",
        "100.128.0.1", "169.253.0.1", "2001:db8::1", "2a00:1450::1", "fec0::1", "::ffff:8.8.8.8"}) {
    EXPECT_FALSE(IpAddress::parse(a)->isInternal()) << a;
  }
}

}  // namespace
}  // namespace postern
