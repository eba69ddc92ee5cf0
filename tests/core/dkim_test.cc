#include "core/dkim.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <string>

namespace postern {
namespace {

std::array<unsigned char, 32> sha256(const std::string& s) {
  std::array<unsigned char, 32> out{};
  unsigned n = 0;
  EVP_Digest(s.data(), s.size(), out.data(), &n, EVP_sha256(), nullptr);
  return out;
}

// The body hash of message fed in pieces cut at every position (a stream split anywhere
// must hash alike), against the hash of the canonical body expected.
void expectBody(const std::string& message, const std::string& canonical) {
  const auto want = sha256(canonical);
  for (size_t cut = 0; cut <= message.size(); ++cut) {
    DkimHasher h;
    h.feed(std::string_view(message).substr(0, cut));
    h.feed(std::string_view(message).substr(cut));
    EXPECT_EQ(h.finishBody(), want) << "cut at " << cut << " of " << message;
  }
  DkimHasher byte;  // and one octet at a time
  for (char c : message) byte.feed(std::string_view(&c, 1));
  EXPECT_EQ(byte.finishBody(), want);
}

TEST(Dkim, RelaxedHeadersAsRfc6376Shows) {
  // RFC 6376 §3.4.5.
  EXPECT_EQ(dkimRelaxedHeader("A: X\r\n"), "a:X");
  EXPECT_EQ(dkimRelaxedHeader("B : Y\t\r\n\tZ  \r\n"), "b:Y Z");
  EXPECT_EQ(dkimRelaxedHeader("Subject: Re:  hello\r\n"), "subject:Re: hello");
}

TEST(Dkim, RelaxedBodyAsRfc6376ShowsWhereverTheStreamIsCut) {
  expectBody("A: X\r\n\r\n C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n");
  expectBody("A: X\r\n\r\n", "");          // an empty body hashes as nothing
  expectBody("A: X\r\n\r\n\r\n\r\n", "");  // nor do empty lines alone
  expectBody("A: X\r\n\r\nno CRLF at the end", "no CRLF at the end\r\n");
  expectBody("A: X\r\n\r\na\r\n\r\nb\r\n", "a\r\n\r\nb\r\n");  // inner empty lines stay
  expectBody("A: X\r\n\r\na\rb \r\n", "a\rb\r\n");             // a lone CR is content
  expectBody("\r\nbody without headers\r\n", "body without headers\r\n");
}

TEST(Dkim, KeepsTheHeaderSectionAndFindsTheFromDomain) {
  DkimHasher h;
  h.feed("Received: x\r\nFrom: \"Doe, J. <j@evil.test>\" <j@Example.COM> (comment, here)\r\n");
  h.feed("To: a@b.test\r\n\r\nbody\r\n");
  EXPECT_EQ(h.headerSection(),
            "Received: x\r\nFrom: \"Doe, J. <j@evil.test>\" <j@Example.COM> (comment, here)\r\n"
            "To: a@b.test\r\n");
  EXPECT_EQ(h.fromDomain(), "example.com");
  for (const char* none : {"From: a@x.test, b@y.test\r\n\r\n", "To: a@x.test\r\n\r\n",
                           "From: a@x.test\r\nFrom: b@x.test\r\n\r\n", "From: nobody\r\n\r\n",
                           "From: <a@x.test\r\n\r\n"}) {
    DkimHasher n;
    n.feed(none);
    EXPECT_FALSE(n.fromDomain()) << none;
  }
}

TEST(Dkim, AnOversizedHeaderSectionIsNotSigned) {
  DkimHasher h;
  const std::string field = "X-Filler: " + std::string(990, 'x') + "\r\n";
  for (size_t i = 0; i < 300; ++i) h.feed(field);
  h.feed("\r\nbody\r\n");
  EXPECT_TRUE(h.overflowed());
  EXPECT_LE(h.headerSection().size(), DkimHasher::kMaxHeaderBytes);
}

}  // namespace
}  // namespace postern
