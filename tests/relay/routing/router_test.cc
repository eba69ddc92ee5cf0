#include "relay/routing/router.h"

#include <gtest/gtest.h>

namespace postern {
namespace {

std::vector<RouteConfig> routes() {
  return {{.domain = "example.com", .next_hop = "10.0.0.1:25"},
          {.domain = "*.example.com", .next_hop = "10.0.0.2:25"},
          {.domain = "*.deep.example.com", .next_hop = "10.0.0.3:25"},
          {.domain = "*", .next_hop = "mx"}};
}

TEST(RouterTest, ExactThenLongestSuffixThenDefault) {
  auto r = routes();
  Router router(r);
  EXPECT_EQ(router.route("example.com")->next_hop, "10.0.0.1:25");
  EXPECT_EQ(router.route("EXAMPLE.Com")->next_hop, "10.0.0.1:25");
  EXPECT_EQ(router.route("a.example.com")->next_hop, "10.0.0.2:25");
  EXPECT_EQ(router.route("a.b.example.com")->next_hop, "10.0.0.2:25");
  EXPECT_EQ(router.route("x.deep.example.com")->next_hop, "10.0.0.3:25");
  // "*.deep.example.com" is for subdomains only; deep.example.com itself is one.
  EXPECT_EQ(router.route("deep.example.com")->next_hop, "10.0.0.2:25");
  EXPECT_EQ(router.route("notexample.com")->next_hop, "mx");
  EXPECT_EQ(router.route("com")->next_hop, "mx");
  EXPECT_EQ(router.route("")->next_hop, "mx");
}

TEST(RouterTest, RecipientDomain) {
  EXPECT_EQ(recipientDomain("User@Example.COM"), "example.com");
  EXPECT_EQ(recipientDomain("\"a@b\"@c.org"), "c.org");
  EXPECT_EQ(recipientDomain("postmaster"), "");
}

}  // namespace
}  // namespace postern
