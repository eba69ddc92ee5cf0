#include "core/mta_sts.h"

#include <gtest/gtest.h>

#include <string>

namespace postern {
namespace mta_sts {
namespace {

TEST(MtaSts, TxtRecord) {
  EXPECT_EQ(parseTxt("v=STSv1; id=20160831085700Z;"), "20160831085700Z");
  EXPECT_EQ(parseTxt("v=STSv1;id=abc"), "abc");
  EXPECT_EQ(parseTxt("v=STSv1; id=abc; ext=1"), "abc");
  EXPECT_FALSE(parseTxt("v=STSv1;"));         // no id
  EXPECT_FALSE(parseTxt("id=abc; v=STSv1"));  // v= must come first
  EXPECT_FALSE(parseTxt("v=STSv2; id=abc"));
  EXPECT_FALSE(parseTxt("v=STSv1; id=a-b"));  // alphanumerics only
  EXPECT_FALSE(parseTxt("v=STSv1; id=" + std::string(33, 'a')));
  EXPECT_FALSE(parseTxt("v=STSv1; nonsense"));
}

TEST(MtaSts, PolicyFile) {
  auto p = parsePolicy(
      "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET\r\n"
      "max_age: 604800\r\nunknown: ignored\r\n");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, Policy::Mode::kEnforce);
  EXPECT_EQ(p->mx, (std::vector<std::string>{"mail.example.com", "*.example.net"}));
  EXPECT_EQ(p->max_age, 604800u);
  // LF line endings too; none needs no mx; max_age is capped at a year.
  auto none = parsePolicy("version: STSv1\nmode: none\nmax_age: 9999999999\n");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->max_age, kMaxAge);
  EXPECT_FALSE(parsePolicy("mode: enforce\nmx: a.b\nmax_age: 1\n"));         // version
  EXPECT_FALSE(parsePolicy("version: STSv1\nmode: enforce\nmax_age: 1\n"));  // no mx
  EXPECT_FALSE(parsePolicy("version: STSv1\nmode: sometimes\nmx: a.b\nmax_age: 1\n"));
  EXPECT_FALSE(parsePolicy("version: STSv1\nmode: testing\nmx: a.b\nmax_age: -1\n"));
  EXPECT_FALSE(parsePolicy("version: STSv1\nmode: testing\nmx: a..b\nmax_age: 1\n"));
  EXPECT_FALSE(parsePolicy("version: STSv1\nmode: testing\nmx: a b\nmax_age: 1\n"));
  EXPECT_FALSE(parsePolicy("version: STSv1\nmode testing\n"));
  EXPECT_FALSE(parsePolicy(std::string(kMaxPolicy + 1, '\n')));
}

TEST(MtaSts, MxMatching) {
  Policy p;
  p.mx = {"mail.example.com", "*.example.net"};
  EXPECT_TRUE(mxMatches(p, "mail.example.com"));
  EXPECT_TRUE(mxMatches(p, "MAIL.Example.com."));
  EXPECT_TRUE(mxMatches(p, "mx1.example.net"));
  EXPECT_FALSE(mxMatches(p, "example.net"));        // the wildcard needs a label
  EXPECT_FALSE(mxMatches(p, "a.mx1.example.net"));  // and only one
  EXPECT_FALSE(mxMatches(p, "other.example.com"));
  EXPECT_FALSE(mxMatches(p, "mail.example.com.evil"));
}

}  // namespace
}  // namespace mta_sts
}  // namespace postern
