#include "relay/inbound/relay_policy.h"

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

TEST(RelayPolicy, NoSenderSpecifiedRoutingFromOutside) {
  Config c;
  c.accept_domains = {"accepted.test", "xn--bcher-kva.example"};
  for (const char* rcpt : {"user%foreign.test@accepted.test", "foreign.test!user@accepted.test",
                           "user@foreign.test@accepted.test", "\"user@foreign.test\"@accepted.test",
                           "user@[192.0.2.1]"}) {
    EXPECT_EQ(checkRecipient(c, false, rcpt), RcptPolicy::kRoutingDenied) << rcpt;
    EXPECT_EQ(checkRecipient(c, true, rcpt), RcptPolicy::kAllowed) << rcpt;
  }
  EXPECT_EQ(checkRecipient(c, false, "user@accepted.test", true), RcptPolicy::kRoutingDenied);
  EXPECT_EQ(checkRecipient(c, false, "user@BÜCHER.example"), RcptPolicy::kAllowed);
  EXPECT_EQ(checkRecipient(c, false,
                           "user@b\xc3\xbc"
                           "cher.example."),
            RcptPolicy::kAllowed);
}

}  // namespace
}  // namespace postern
