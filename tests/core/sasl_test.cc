#include "core/sasl.h"

#include <gtest/gtest.h>

#include <string>

namespace postern {
namespace {

using namespace std::string_literals;

TEST(Base64, DecodesWhatRfc4648Says) {
  EXPECT_EQ(decodeBase64("Zm9vYmFy"), "foobar");
  EXPECT_EQ(decodeBase64("Zm9vYg=="), "foob");
  EXPECT_EQ(decodeBase64("Zm9vYmE="), "fooba");
  EXPECT_EQ(decodeBase64("AGFsaWNlAHNlY3JldA=="), "\0alice\0secret"s);
  EXPECT_EQ(decodeBase64("="), "");  // RFC 4954: an empty initial response
  EXPECT_EQ(encodeBase64("foob"), "Zm9vYg==");
}

TEST(Base64, RefusesEverythingElse) {
  for (const char* bad : {"", "Zm9", "Zm9vY", "Zm9v YmFy", "Zm9v\r\n", "Zm=v", "Z===", "====",
                          "Zm9vYg=a", "Zm9*", "Zm9vYh==" /* pad bits not zero */, "Zm9vYmF="}) {
    EXPECT_FALSE(decodeBase64(bad).has_value()) << bad;
  }
}

TEST(PlainResponse, SplitsAtTheTwoNuls) {
  auto r = parsePlainResponse("\0alice\0secret"s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->authzid, "");
  EXPECT_EQ(r->authcid, "alice");
  EXPECT_EQ(r->password, "secret");
  r = parsePlainResponse("admin\0alice\0pw with spaces"s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->authzid, "admin");
  EXPECT_EQ(r->password, "pw with spaces");
  for (std::string bad : {"alice\0secret"s, "\0\0secret"s, "\0alice\0"s, "\0a\0b\0c"s, ""s}) {
    EXPECT_FALSE(parsePlainResponse(bad)) << bad.size();
  }
}

TEST(SaslMechanismName, PlainAndLoginInAnyCase) {
  EXPECT_EQ(parseMechanism("PLAIN"), SaslMechanism::kPlain);
  EXPECT_EQ(parseMechanism("login"), SaslMechanism::kLogin);
  EXPECT_EQ(parseMechanism("CRAM-MD5"), SaslMechanism::kUnknown);
  EXPECT_EQ(parseMechanism("PLAINX"), SaslMechanism::kUnknown);
}

}  // namespace
}  // namespace postern
