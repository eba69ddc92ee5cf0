#include "core/credentials.h"

#include <gtest/gtest.h>

#include "core/config.h"

namespace postern {
namespace {

TEST(Credentials, ReadsUsersHashesAndDomains) {
  auto users = Credentials::parse(
      "# comment\n\nalice:$y$j9T$abc$def\r\nbob:$6$salt$hash:Example.COM,b.test\n"
      "carol:$2b$05$abcdefghijklmnopqrstuu5Nd4XUq3A8d8v8pIu2Dv5T8YkLYbbFG\n",
      "users");
  ASSERT_EQ(users->size(), 3u);
  ASSERT_NE(users->find("alice"), nullptr);
  EXPECT_EQ(users->find("alice")->hash, "$y$j9T$abc$def");
  EXPECT_TRUE(users->find("alice")->sender_domains.empty());
  EXPECT_EQ(users->find("bob")->sender_domains,
            (std::vector<std::string>{"example.com", "b.test"}));
  EXPECT_EQ(users->find("Alice"), nullptr);  // user names are exact
  EXPECT_EQ(users->find("dave"), nullptr);
}

TEST(Credentials, RefusesWeakHashesAndBadLinesNamingTheLine) {
  auto error = [](const std::string& text) {
    try {
      Credentials::parse(text, "users");
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(error("alice:$1$salt$md5"),
            "users:1: user alice: not a yescrypt, bcrypt, scrypt or "
            "sha512-crypt hash (`postern passwd` makes one)");
  EXPECT_NE(error("ok:$y$a$b\nalice:plaintext").find("users:2:"), std::string::npos);
  EXPECT_NE(error("alice").find("expected user:hash"), std::string::npos);
  EXPECT_NE(error("a b:$y$a$b").find("user name"), std::string::npos);
  EXPECT_NE(error("alice:$y$a$b\nalice:$y$c$d").find("listed twice"), std::string::npos);
  EXPECT_NE(error("alice:$y$a$b:").find("no domain"), std::string::npos);
  EXPECT_NE(error("alice:$y$a$b:[127.0.0.1]").find("is not a domain"), std::string::npos);
  EXPECT_NE(error(std::string(5000, 'x')).find("longer than 4096"), std::string::npos);
  // The hash is never quoted back in an error.
  EXPECT_EQ(error("alice:$1$secretsalt$x").find("secretsalt"), std::string::npos);
}

TEST(Credentials, ChecksPasswordsAgainstHashesItMakes) {
  Result<std::string> hash = hashPassword("correct horse");
  ASSERT_TRUE(hash) << hash.error();
  EXPECT_TRUE(hash->starts_with("$y$"));
  EXPECT_TRUE(checkPassword("correct horse", *hash));
  EXPECT_FALSE(checkPassword("correct hors", *hash));
  EXPECT_FALSE(checkPassword("", *hash));
  EXPECT_NE(*hashPassword("correct horse"), *hash);  // a fresh salt each time
  // sha512-crypt, as `openssl passwd -6 -salt saltsalt secret` makes it.
  EXPECT_TRUE(checkPassword(
      "secret",
      "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y7"
      "7vwPZN.Pq.H91p5hVO1"));
  EXPECT_FALSE(checkPassword("secret", "not a hash"));
  EXPECT_FALSE(checkPassword("secret", decoyHash()));
}

}  // namespace
}  // namespace postern
