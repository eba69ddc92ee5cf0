#include "core/tls_stream.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/core/test_certificate.h"

namespace postern {
namespace {

class TlsStreamTest : public testing::Test {
 protected:
  void SetUp() override {
    auto server_ctx = TlsContext::create(certificate().cert, certificate().key);
    ASSERT_TRUE(server_ctx) << server_ctx.error();
    server_ctx_ = std::move(*server_ctx);
    auto client_ctx = TlsContext::createUnverifiedClient();
    ASSERT_TRUE(client_ctx) << client_ctx.error();
    client_ctx_ = std::move(*client_ctx);
    server_ = std::make_unique<TlsStream>(*server_ctx_, TlsConnection::Side::kServer, 16384);
    client_ = std::make_unique<TlsStream>(*client_ctx_, TlsConnection::Side::kClient, 16384);
  }

  // Seals plain on from (empty: only its pending records) and returns the ciphertext.
  static std::string wire(TlsStream& from, std::string plain = "") {
    std::string out;
    EXPECT_TRUE(from.seal(plain, out)) << from.error();
    EXPECT_TRUE(plain.empty() || !from.established());
    return out;
  }

  // Runs both handshakes, passing every record across, until both are established.
  void handshake() {
    for (int round = 0; round < 10; ++round) {
      ASSERT_NE(client_->handshake(), TlsStream::Handshake::kFailed) << client_->error();
      std::string c = wire(*client_);
      server_->received(c.data(), c.size());
      ASSERT_NE(server_->handshake(), TlsStream::Handshake::kFailed) << server_->error();
      std::string s = wire(*server_);
      client_->received(s.data(), s.size());
      if (client_->established() && server_->established()) return;
    }
    FAIL() << "handshake did not complete";
  }

  // Decrypts all that is available into a fresh InputBuffer of capacity cap, taking it out
  // as it comes; the final Read result goes to last.
  static std::string readAll(TlsStream& s, TlsStream::Read* last = nullptr, size_t cap = 4096) {
    InputBuffer in(cap);
    std::string got;
    TlsStream::Read r;
    while ((r = s.read(in)) == TlsStream::Read::kData) {
      got.append(in.readable());
      in.consume(in.size());
    }
    if (last != nullptr) *last = r;
    return got;
  }

  std::unique_ptr<TlsContext> server_ctx_;
  std::unique_ptr<TlsContext> client_ctx_;
  std::unique_ptr<TlsStream> server_;
  std::unique_ptr<TlsStream> client_;
};

TEST_F(TlsStreamTest, HandshakeCompletesBothWays) {
  EXPECT_FALSE(client_->established());
  handshake();
  EXPECT_EQ(client_->handshake(), TlsStream::Handshake::kDone);  // and stays done
  EXPECT_EQ(server_->describe().rfind("TLSv1.3 ", 0), 0u) << server_->describe();
}

TEST_F(TlsStreamTest, DataBothWays) {
  handshake();
  std::string c = wire(*client_, "EHLO client.test\r\n");
  server_->received(c.data(), c.size());
  TlsStream::Read last;
  EXPECT_EQ(readAll(*server_, &last), "EHLO client.test\r\n");
  EXPECT_EQ(last, TlsStream::Read::kNone);

  std::string s = wire(*server_, "250 ok\r\n");
  client_->received(s.data(), s.size());
  EXPECT_EQ(readAll(*client_), "250 ok\r\n");
}

TEST_F(TlsStreamTest, PlaintextWaitsForTheHandshake) {
  std::string plain = "EHLO early\r\n";
  std::string hello;
  ASSERT_TRUE(client_->seal(plain, hello));
  EXPECT_EQ(plain, "EHLO early\r\n");  // kept, not sent in the clear
  EXPECT_EQ(hello.find("EHLO"), std::string::npos);
  server_->received(hello.data(), hello.size());
  handshake();
  std::string c = wire(*client_, plain);
  server_->received(c.data(), c.size());
  EXPECT_EQ(readAll(*server_), "EHLO early\r\n");
}

TEST_F(TlsStreamTest, LargeDataIsDeliveredInBufferSizedPieces) {
  handshake();
  std::string body;
  for (int i = 0; body.size() < 200000; ++i) body += "line " + std::to_string(i) + "\r\n";
  std::string c = wire(*client_, body);
  server_->received(c.data(), c.size());
  InputBuffer in(1000);
  std::string got;
  for (;;) {
    TlsStream::Read r = server_->read(in);
    if (r == TlsStream::Read::kFull) {
      got.append(in.readable());  // the buffer bounds each piece; take it out and go on
      in.consume(in.size());
      continue;
    }
    if (r != TlsStream::Read::kData) break;
    EXPECT_LE(in.size(), 1000u);
  }
  got.append(in.readable());
  EXPECT_EQ(got, body);
}

TEST_F(TlsStreamTest, FullBufferDecryptsNothing) {
  handshake();
  std::string c = wire(*client_, "QUIT\r\n");
  server_->received(c.data(), c.size());
  InputBuffer in(4);
  std::span<char> w = in.writable();
  std::fill(w.begin(), w.end(), 'x');
  in.commit(w.size());
  EXPECT_EQ(server_->read(in), TlsStream::Read::kFull);
  in.consume(in.size());
  EXPECT_EQ(server_->read(in), TlsStream::Read::kData);
  EXPECT_EQ(in.readable(), "QUIT");
}

TEST_F(TlsStreamTest, CiphertextSplitAtEveryByteBoundary) {
  handshake();
  const std::string message = "MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n";
  std::string c = wire(*client_, message);
  ASSERT_GT(c.size(), message.size());
  for (size_t split = 0; split <= c.size(); ++split) {
    // Each round sends the same plaintext in a fresh record, fed in two pieces.
    std::string rec = split == 0 ? c : wire(*client_, message);
    ASSERT_EQ(rec.size(), c.size());
    server_->received(rec.data(), split);
    std::string got = readAll(*server_);
    if (split < rec.size()) {
      EXPECT_EQ(got, "") << "a record is decrypted only once complete; split " << split;
    }
    server_->received(rec.data() + split, rec.size() - split);
    got += readAll(*server_);
    EXPECT_EQ(got, message) << "split " << split;
  }
}

TEST_F(TlsStreamTest, HandshakeFedOneByteAtATime) {
  for (int round = 0; round < 10 && !(client_->established() && server_->established()); ++round) {
    ASSERT_NE(client_->handshake(), TlsStream::Handshake::kFailed);
    for (char ch : wire(*client_)) {
      server_->received(&ch, 1);
      ASSERT_NE(server_->handshake(), TlsStream::Handshake::kFailed) << server_->error();
    }
    for (char ch : wire(*server_)) {
      client_->received(&ch, 1);
      ASSERT_NE(client_->handshake(), TlsStream::Handshake::kFailed) << client_->error();
    }
  }
  ASSERT_TRUE(client_->established() && server_->established());
  std::string c = wire(*client_, "NOOP\r\n");
  for (char ch : c) server_->received(&ch, 1);
  EXPECT_EQ(readAll(*server_), "NOOP\r\n");
}

TEST_F(TlsStreamTest, GarbageInsteadOfAHandshakeFails) {
  const std::string garbage = "EHLO not-tls.example\r\n";
  server_->received(garbage.data(), garbage.size());
  EXPECT_EQ(server_->handshake(), TlsStream::Handshake::kFailed);
  EXPECT_FALSE(server_->error().empty());
  EXPECT_FALSE(server_->established());
  std::string alert = wire(*server_);  // whatever it says, no plaintext ever goes out
  EXPECT_EQ(alert.find("EHLO"), std::string::npos);
}

TEST_F(TlsStreamTest, GarbageAfterTheHandshakeFailsTheRead) {
  handshake();
  std::string garbage(64, '\x17');  // application-data record type, nonsense inside
  server_->received(garbage.data(), garbage.size());
  TlsStream::Read last;
  EXPECT_EQ(readAll(*server_, &last), "");
  EXPECT_EQ(last, TlsStream::Read::kFailed);
}

TEST_F(TlsStreamTest, VerifyingClientChecksTheName) {
  auto verifying_ctx = TlsContext::createVerifyingClient(certificate().cert);
  ASSERT_TRUE(verifying_ctx) << verifying_ctx.error();
  std::unique_ptr<TlsContext> verifying = std::move(*verifying_ctx);
  client_ = std::make_unique<TlsStream>(*verifying, TlsConnection::Side::kClient, 16384);
  client_->expectPeer("localhost", true);
  handshake();

  server_ = std::make_unique<TlsStream>(*server_ctx_, TlsConnection::Side::kServer, 16384);
  client_ = std::make_unique<TlsStream>(*verifying, TlsConnection::Side::kClient, 16384);
  client_->expectPeer("mx.example.test", true);
  TlsStream::Handshake h = TlsStream::Handshake::kPending;
  for (int round = 0; round < 10 && h == TlsStream::Handshake::kPending; ++round) {
    h = client_->handshake();
    std::string c = wire(*client_);
    server_->received(c.data(), c.size());
    server_->handshake();
    std::string s = wire(*server_);
    client_->received(s.data(), s.size());
  }
  EXPECT_EQ(h, TlsStream::Handshake::kFailed);
  EXPECT_NE(client_->error().find("mismatch"), std::string::npos) << client_->error();
}

TEST_F(TlsStreamTest, CloseNotifyEndsTheStream) {
  handshake();
  std::string c = wire(*client_, "QUIT\r\n");
  client_->shutdown();
  c += wire(*client_);
  server_->received(c.data(), c.size());
  TlsStream::Read last;
  EXPECT_EQ(readAll(*server_, &last), "QUIT\r\n");
  EXPECT_EQ(last, TlsStream::Read::kFailed);
  EXPECT_EQ(server_->error(), "closed by peer");
}

TEST(TlsContextTest, TheSecondCertificateIsEcdsaAndTheFirstIsNot) {
  const TestCertificate& rsa = rsaCertificate();
  const TestCertificate& ec = certificate();
  auto both = TlsContext::create(rsa.cert, rsa.key, ec.cert, ec.key);
  EXPECT_TRUE(both) << both.error();
  auto two_ec = TlsContext::create(ec.cert, ec.key, ec.cert, ec.key);
  ASSERT_FALSE(two_ec);
  EXPECT_NE(two_ec.error().find("must be RSA"), std::string::npos) << two_ec.error();
  auto two_rsa = TlsContext::create(rsa.cert, rsa.key, rsa.cert, rsa.key);
  ASSERT_FALSE(two_rsa);
  EXPECT_NE(two_rsa.error().find("not an ECDSA key"), std::string::npos) << two_rsa.error();
}

}  // namespace
}  // namespace postern
