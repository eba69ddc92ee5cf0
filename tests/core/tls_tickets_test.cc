#include "core/tls_tickets.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "core/tls_session_cache.h"
#include "core/tls_stream.h"
#include "tests/core/test_certificate.h"

namespace postern {
namespace {

using std::chrono::seconds;

// The clock the keys age by in these tests.
TicketKeys::Clock::time_point fake_now;
TicketKeys::Clock::time_point fakeNow() { return fake_now; }

class TlsTicketsTest : public testing::Test {
 protected:
  void SetUp() override {
    fake_now = TicketKeys::Clock::now();
    keys_ = std::make_shared<TicketKeys>(seconds(3600));
    keys_->setClockForTest(&fakeNow);
    auto client = TlsContext::createUnverifiedClient();
    ASSERT_TRUE(client) << client.error();
    client_ctx_ = std::move(*client);
  }

  std::unique_ptr<TlsContext> server(std::shared_ptr<TicketKeys> keys) {
    auto ctx = TlsContext::create(certificate().cert, certificate().key, "", "", std::move(keys));
    EXPECT_TRUE(ctx) << ctx.error();
    return ctx ? std::move(*ctx) : nullptr;
  }

  static std::string wire(TlsStream& from) {
    std::string plain, out;
    EXPECT_TRUE(from.seal(plain, out)) << from.error();
    return out;
  }

  // A full exchange: handshake, then the server's first reply, which the client reads
  // (the TLS 1.3 ticket travels with it). Returns the client's stream.
  std::unique_ptr<TlsStream> connect(const TlsContext& server_ctx, const TlsSession& session) {
    auto c = std::make_unique<TlsStream>(*client_ctx_, TlsConnection::Side::kClient, 16384);
    TlsStream s(server_ctx, TlsConnection::Side::kServer, 16384);
    c->resume(session);
    for (int round = 0; round < 10 && !(c->established() && s.established()); ++round) {
      EXPECT_NE(c->handshake(), TlsStream::Handshake::kFailed) << c->error();
      std::string cw = wire(*c);
      s.received(cw.data(), cw.size());
      EXPECT_NE(s.handshake(), TlsStream::Handshake::kFailed) << s.error();
      std::string sw = wire(s);
      c->received(sw.data(), sw.size());
    }
    EXPECT_TRUE(c->established() && s.established());
    EXPECT_EQ(c->resumed(), s.resumed());
    std::string reply = "250 ok\r\n", out;
    EXPECT_TRUE(s.seal(reply, out));
    c->received(out.data(), out.size());
    InputBuffer in(4096);
    while (c->read(in) == TlsStream::Read::kData) {
    }
    EXPECT_EQ(in.readable(), "250 ok\r\n");
    return c;
  }

  std::shared_ptr<TicketKeys> keys_;
  std::unique_ptr<TlsContext> client_ctx_;
};

TEST_F(TlsTicketsTest, ReturningClientResumesOnAnotherContextWithTheSameKeys) {
  // Two contexts sharing keys: two workers, or the contexts before and after a reload.
  auto a = server(keys_), b = server(keys_);
  auto first = connect(*a, nullptr);
  EXPECT_FALSE(first->resumed());
  TlsSession session = first->resumable();
  ASSERT_NE(session, nullptr) << "no ticket arrived";
  auto second = connect(*b, session);
  EXPECT_TRUE(second->resumed());
  EXPECT_NE(second->describe().find(" resumed"), std::string::npos) << second->describe();
}

TEST_F(TlsTicketsTest, OtherKeysMakeAFullHandshake) {
  auto a = server(keys_);
  auto other = server(std::make_shared<TicketKeys>(seconds(3600)));
  TlsSession session = connect(*a, nullptr)->resumable();
  ASSERT_NE(session, nullptr);
  auto c = connect(*other, session);
  EXPECT_FALSE(c->resumed());
  EXPECT_NE(c->resumable(), nullptr);  // and it gets a ticket of the other's
}

TEST_F(TlsTicketsTest, APreviousKeyStillOpensForOneLifetimeThenIsForgotten) {
  auto a = server(keys_);
  TlsSession old = connect(*a, nullptr)->resumable();
  ASSERT_NE(old, nullptr);
  fake_now += seconds(3600 + 10);  // the key that sealed it is now the previous one
  auto c = connect(*a, old);
  EXPECT_TRUE(c->resumed()) << "a ticket of the previous key was refused";
  TlsSession renewed = c->resumable();
  ASSERT_NE(renewed, nullptr);
  fake_now += seconds(3600 + 10);  // two rotations: the first key is gone
  EXPECT_FALSE(connect(*a, old)->resumed());
  EXPECT_TRUE(connect(*a, renewed)->resumed()) << "the renewed ticket's key is the previous one";
}

TEST_F(TlsTicketsTest, KeysIdleForTwoLifetimesAreAllReplaced) {
  auto a = server(keys_);
  TlsSession old = connect(*a, nullptr)->resumable();
  ASSERT_NE(old, nullptr);
  fake_now += seconds(2 * 3600 + 10);  // nothing happened meanwhile; then one rotation
  EXPECT_FALSE(connect(*a, old)->resumed());
}

TEST_F(TlsTicketsTest, NoKeysNoTicket) {
  auto a = server(nullptr);
  auto c = connect(*a, nullptr);
  EXPECT_EQ(c->resumable(), nullptr);
}

TEST_F(TlsTicketsTest, ClientCacheKeepsSessionsPerServerAndContextBounded) {
  auto a = server(keys_);
  TlsSession s = connect(*a, nullptr)->resumable();
  ASSERT_NE(s, nullptr);
  sockaddr_storage addr{};
  addr.ss_family = AF_INET;
  auto other_ctx = TlsContext::createUnverifiedClient();
  ASSERT_TRUE(other_ctx);
  TlsSessionCache cache(2);
  const std::string k = TlsSessionCache::key(*client_ctx_, "mx.test", addr);
  EXPECT_NE(k, TlsSessionCache::key(**other_ctx, "mx.test", addr));
  EXPECT_NE(k, TlsSessionCache::key(*client_ctx_, "mx2.test", addr));
  cache.put(k, s);
  EXPECT_EQ(cache.find(k), s);
  EXPECT_EQ(cache.find(TlsSessionCache::key(*client_ctx_, "mx2.test", addr)), nullptr);
  cache.put("b", s);
  cache.put("c", s);  // past capacity: starts over
  EXPECT_LE(cache.size(), 2u);
  EXPECT_EQ(cache.find(k), nullptr);
}

}  // namespace
}  // namespace postern
