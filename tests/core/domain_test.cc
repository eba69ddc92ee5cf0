#include "core/domain.h"

#include <gtest/gtest.h>

namespace postern {
namespace {

TEST(Domain, CanonicalForm) {
  EXPECT_EQ(canonicalDomain("Example.COM"), "example.com");
  EXPECT_EQ(canonicalDomain("example.com."), "example.com");
  EXPECT_EQ(canonicalDomain("BÜCHER.example."), "xn--bcher-kva.example");
  EXPECT_EQ(canonicalDomain("xn--bcher-kva.example"), "xn--bcher-kva.example");
  EXPECT_EQ(canonicalDomain("[192.0.2.1]"), "[192.0.2.1]");
  EXPECT_EQ(canonicalDomain(""), std::nullopt);
  EXPECT_EQ(canonicalDomain("."), std::nullopt);
  EXPECT_EQ(canonicalDomain("a..b"), std::nullopt);
  EXPECT_EQ(canonicalDomain(".a"), std::nullopt);
  EXPECT_EQ(canonicalDomain("a.b.."), std::nullopt);
  EXPECT_EQ(canonicalDomain(std::string(64, 'a') + ".test"), std::nullopt);
  EXPECT_EQ(canonicalDomain("\xff\xfe.test"), std::nullopt);  // not UTF-8
}

TEST(Domain, CanonicalMailboxKeepsTheLocalPart) {
  EXPECT_EQ(canonicalMailbox("User@Accepted.TEST."), "User@accepted.test");
  EXPECT_EQ(canonicalMailbox("\"a@b\"@Accepted.test"), "\"a@b\"@accepted.test");
  EXPECT_EQ(canonicalMailbox("postmaster"), "postmaster");
  EXPECT_EQ(canonicalMailbox("u@a..b"), std::nullopt);
}

TEST(Domain, RoutingForms) {
  EXPECT_TRUE(hasRoutingLocalPart("user%foreign.test@accepted.test"));
  EXPECT_TRUE(hasRoutingLocalPart("foreign.test!user@accepted.test"));
  EXPECT_TRUE(hasRoutingLocalPart("user@foreign.test@accepted.test"));
  EXPECT_TRUE(hasRoutingLocalPart("\"user@foreign.test\"@accepted.test"));
  EXPECT_FALSE(hasRoutingLocalPart("first.last+tag@accepted.test"));
  EXPECT_TRUE(isDomainLiteral("[192.0.2.1]"));
  EXPECT_FALSE(isDomainLiteral("accepted.test"));
}

}  // namespace
}  // namespace postern
