#include "core/esmtp_params.h"

#include <gtest/gtest.h>

namespace postern {
namespace {

TEST(EsmtpParams, Xtext) {
  EXPECT_TRUE(isXtext("abc+2B+3D"));
  EXPECT_TRUE(isXtext(""));
  EXPECT_FALSE(isXtext("a=b"));
  EXPECT_FALSE(isXtext("a b"));
  EXPECT_FALSE(isXtext("+2"));
  EXPECT_FALSE(isXtext("+2b"));  // hex must be upper case
  EXPECT_FALSE(isXtext("caf\xc3\xa9"));
}

TEST(EsmtpParams, Notify) {
  EXPECT_TRUE(isValidNotify("NEVER"));
  EXPECT_TRUE(isValidNotify("success,FAILURE,Delay"));
  EXPECT_TRUE(isValidNotify("DELAY"));
  EXPECT_FALSE(isValidNotify("NEVER,SUCCESS"));
  EXPECT_FALSE(isValidNotify("SUCCESS,SUCCESS"));
  EXPECT_FALSE(isValidNotify("SUCCESS,"));
  EXPECT_FALSE(isValidNotify(""));
  EXPECT_FALSE(isValidNotify("SOMETIMES"));
}

TEST(EsmtpParams, OrcptRetEnvid) {
  EXPECT_TRUE(isValidOrcpt("rfc822;user@example.com"));
  EXPECT_TRUE(isValidOrcpt("utf-8;j+C3+B6rg@example.com"));
  EXPECT_FALSE(isValidOrcpt("rfc822"));
  EXPECT_FALSE(isValidOrcpt(";user@example.com"));
  EXPECT_FALSE(isValidOrcpt("rfc822;"));
  EXPECT_FALSE(isValidOrcpt("rfc 822;a@b"));
  EXPECT_FALSE(isValidOrcpt("rfc822;" + std::string(500, 'a')));
  EXPECT_TRUE(isValidRet("hdrs"));
  EXPECT_TRUE(isValidRet("FULL"));
  EXPECT_FALSE(isValidRet("BOTH"));
  EXPECT_TRUE(isValidEnvid("QQ314159"));
  EXPECT_FALSE(isValidEnvid(""));
  EXPECT_FALSE(isValidEnvid(std::string(101, 'a')));
}

}  // namespace
}  // namespace postern
