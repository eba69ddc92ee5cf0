#include "relay/routing/resolver.h"

#include <gtest/gtest.h>

#include <map>

namespace postern {
namespace {

// A DNS response for example.com MX with the given answer TTLs (RFC 1035 wire format,
// answer names compressed to the question).
std::vector<unsigned char> mxResponse(std::vector<uint32_t> ttls) {
  std::vector<unsigned char> m = {0x12, 0x34, 0x81, 0x80, 0, 1, 0, static_cast<unsigned char>(ttls.size()), 0, 0, 0, 0};
  for (const char* label : {"example", "com"}) {
    m.push_back(static_cast<unsigned char>(strlen(label)));
    m.insert(m.end(), label, label + strlen(label));
  }
  m.insert(m.end(), {0, 0, 15, 0, 1});
  for (uint32_t ttl : ttls) {
    m.insert(m.end(), {0xc0, 12, 0, 15, 0, 1});
    m.insert(m.end(), {static_cast<unsigned char>(ttl >> 24), static_cast<unsigned char>(ttl >> 16),
                       static_cast<unsigned char>(ttl >> 8), static_cast<unsigned char>(ttl)});
    m.insert(m.end(), {0, 4, 0, 10, 0xc0, 12});  // preference 10, exchange example.com
  }
  return m;
}

TEST(ResolverTest, AnswerMinTtl) {
  auto m = mxResponse({3600, 300, 900});
  EXPECT_EQ(dnsAnswerMinTtl(m.data(), static_cast<int>(m.size())), 300);
  auto none = mxResponse({});
  EXPECT_EQ(dnsAnswerMinTtl(none.data(), static_cast<int>(none.size())), -1);
  // RFC 2181 §8: a TTL with the top bit set counts as zero.
  auto odd = mxResponse({0x80000000u, 60});
  EXPECT_EQ(dnsAnswerMinTtl(odd.data(), static_cast<int>(odd.size())), 0);
  // A truncated answer gives what was readable, never reads past the end.
  auto cut = mxResponse({100, 50});
  EXPECT_EQ(dnsAnswerMinTtl(cut.data(), static_cast<int>(cut.size()) - 14), 100);
  EXPECT_EQ(dnsAnswerMinTtl(cut.data(), 5), -1);
}

TEST(ResolverTest, MxOrderedByPreferenceEqualOnesShuffled) {
  std::minstd_rand rng(7);
  std::map<std::string, int> first_seen;
  for (int round = 0; round < 200; ++round) {
    std::vector<MxRecord> mx = {{"c", 20}, {"a", 10}, {"b", 10}, {"d", 30}};
    orderMx(mx, rng);
    ASSERT_EQ(mx.size(), 4u);
    EXPECT_EQ(mx[0].preference, 10u);
    EXPECT_EQ(mx[1].preference, 10u);
    EXPECT_EQ(mx[2].host, "c");
    EXPECT_EQ(mx[3].host, "d");
    ++first_seen[mx[0].host];
  }
  // Both equal-preference hosts come first sometimes (RFC 5321 §5.1 spreads the load).
  EXPECT_GT(first_seen["a"], 20);
  EXPECT_GT(first_seen["b"], 20);
}

// A response for example.com TLSA (type 52) with the given records' rdata.
std::vector<unsigned char> tlsaResponse(const std::vector<std::vector<unsigned char>>& rdatas,
                                        unsigned char rcode = 0) {
  std::vector<unsigned char> m = {0x12, 0x34, 0x81, static_cast<unsigned char>(0xa0 | rcode),
                                  0, 1, 0, static_cast<unsigned char>(rdatas.size()), 0, 0, 0, 0};
  for (const char* label : {"example", "com"}) {
    m.push_back(static_cast<unsigned char>(strlen(label)));
    m.insert(m.end(), label, label + strlen(label));
  }
  m.insert(m.end(), {0, 0, 52, 0, 1});
  for (const auto& rd : rdatas) {
    m.insert(m.end(), {0xc0, 12, 0, 52, 0, 1, 0, 0, 1, 0});
    m.push_back(static_cast<unsigned char>(rd.size() >> 8));
    m.push_back(static_cast<unsigned char>(rd.size()));
    m.insert(m.end(), rd.begin(), rd.end());
  }
  return m;
}

TEST(ResolverTest, TlsaRecordsAndResponseStatus) {
  auto m = tlsaResponse({{3, 1, 1, 0xab, 0xcd}, {2, 0, 2, 0xef}});
  std::vector<TlsaRecord> got = parseTlsaAnswer(m.data(), static_cast<int>(m.size()));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], (TlsaRecord{3, 1, 1, "\xab\xcd"}));
  EXPECT_EQ(got[1], (TlsaRecord{2, 0, 2, "\xef"}));
  EXPECT_EQ(responseStatus(m.data(), static_cast<int>(m.size())), ARES_SUCCESS);
  // A record too short for its three octets, or cut off, ends the walk; nothing is read
  // past the end.
  auto short_rd = tlsaResponse({{3, 1}});
  EXPECT_TRUE(parseTlsaAnswer(short_rd.data(), static_cast<int>(short_rd.size())).empty());
  EXPECT_EQ(parseTlsaAnswer(m.data(), static_cast<int>(m.size()) - 1).size(), 1u);
  EXPECT_TRUE(parseTlsaAnswer(m.data(), 11).empty());
  auto none = tlsaResponse({});
  EXPECT_EQ(responseStatus(none.data(), static_cast<int>(none.size())), ARES_ENODATA);
  auto nx = tlsaResponse({}, 3);
  EXPECT_EQ(responseStatus(nx.data(), static_cast<int>(nx.size())), ARES_ENOTFOUND);
  auto servfail = tlsaResponse({}, 2);
  EXPECT_EQ(responseStatus(servfail.data(), static_cast<int>(servfail.size())), ARES_ESERVFAIL);
  EXPECT_EQ(responseStatus(m.data(), 5), ARES_EBADRESP);
}

}  // namespace
}  // namespace postern
