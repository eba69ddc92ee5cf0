#include "relay/relay_policy.h"

#include <gtest/gtest.h>

namespace postern {
namespace {

TEST(RelayPolicy, NeverAnOpenRelay) {
  Config c;
  c.relay_networks = {Network::parse("127.0.0.1/32").value()};
  c.accept_domains = {"accepted.test"};
  auto inside = IpAddress::parse("127.0.0.1").value();
  auto outside = IpAddress::parse("127.0.0.2").value();
  EXPECT_TRUE(isRelayClient(c, inside));
  EXPECT_FALSE(isRelayClient(c, outside));

  EXPECT_TRUE(mayRelayTo(c, true, "x@foreign.test"));
  EXPECT_FALSE(mayRelayTo(c, false, "x@foreign.test"));
  EXPECT_TRUE(mayRelayTo(c, false, "x@accepted.test"));
  EXPECT_TRUE(mayRelayTo(c, false, "x@ACCEPTED.test."));
  EXPECT_FALSE(mayRelayTo(c, false, "x@sub.accepted.test"));
  EXPECT_FALSE(mayRelayTo(c, false, "x@accepted.test.evil"));
  EXPECT_FALSE(mayRelayTo(c, false, "\"x@accepted.test\"@foreign.test"));
  EXPECT_TRUE(mayRelayTo(c, false, "Postmaster"));
  EXPECT_FALSE(mayRelayTo(c, false, "someone"));
}

}  // namespace
}  // namespace postern
