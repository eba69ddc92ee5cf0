// Tests for core/proxy_protocol.*: PROXY protocol v1 and v2 header parsing.
//
// Valid headers must give kDone with the addresses and ports they carry and consume
// exactly the header, never the SMTP bytes after it; every proper prefix of a valid header
// must give kNeedMore; malformed headers (per the HAProxy specification's grammar) must
// give kInvalid. v2 headers are built byte by byte here.
#include "core/proxy_protocol.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace postern {
namespace {

using namespace std::string_literals;

std::string parseName(ProxyParse p) {
  switch (p) {
    case ProxyParse::kNeedMore:
      return "kNeedMore";
    case ProxyParse::kDone:
      return "kDone";
    case ProxyParse::kInvalid:
      return "kInvalid";
  }
  return "?";
}

// "192.0.2.1:25" or "[2001:db8::1]:25".
std::string endpoint(const sockaddr_storage& ss) {
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    return std::string(text) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return "family " + std::to_string(ss.ss_family);
}

struct Parsed {
  ProxyParse result;
  ProxyHeader header;
  size_t consumed;
};

Parsed parse(std::string_view data) {
  Parsed p{};
  p.consumed = 12345;  // must be overwritten
  p.result = parseProxyHeader(data, p.header, p.consumed);
  return p;
}

// Shows control octets so a failing input can be read.
std::string visible(std::string_view s) {
  std::string v;
  for (unsigned char c : s) {
    if (c == '\r') {
      v += "\\r";
    } else if (c == '\n') {
      v += "\\n";
    } else if (c < 0x20 || c >= 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      v += hex;
    } else {
      v += static_cast<char>(c);
    }
  }
  return v;
}

void expectEveryPrefixNeedsMore(std::string_view header) {
  for (size_t n = 0; n < header.size(); ++n) {
    Parsed p = parse(header.substr(0, n));
    EXPECT_EQ(parseName(p.result), "kNeedMore") << "prefix " << n << ": " << visible(header);
    EXPECT_EQ(p.consumed, 0u) << "prefix " << n;
  }
}

// ---- v1 -------------------------------------------------------------------------------

TEST(ProxyV1, Tcp4) {
  const std::string header = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n";
  Parsed p = parse(header + "EHLO client\r\n");
  ASSERT_EQ(parseName(p.result), "kDone");
  EXPECT_EQ(p.consumed, header.size());
  EXPECT_TRUE(p.header.has_address);
  EXPECT_EQ(endpoint(p.header.source), "192.0.2.1:56324");
  EXPECT_EQ(endpoint(p.header.destination), "198.51.100.2:25");
  expectEveryPrefixNeedsMore(header);
}

TEST(ProxyV1, Tcp6) {
  const std::string header = "PROXY TCP6 2001:db8::1 ::ffff:192.0.2.9 65535 0\r\n";
  Parsed p = parse(header + "EHLO client\r\n");
  ASSERT_EQ(parseName(p.result), "kDone");
  EXPECT_EQ(p.consumed, header.size());
  EXPECT_TRUE(p.header.has_address);
  EXPECT_EQ(endpoint(p.header.source), "[2001:db8::1]:65535");
  EXPECT_EQ(endpoint(p.header.destination), "[::ffff:192.0.2.9]:0");
  expectEveryPrefixNeedsMore(header);
}

TEST(ProxyV1, Unknown) {
  for (std::string header : {"PROXY UNKNOWN\r\n"s,
                             // The specification's worst case: exactly 107 octets.
                             "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"s}) {
    Parsed p = parse(header + "EHLO client\r\n");
    ASSERT_EQ(parseName(p.result), "kDone") << header;
    EXPECT_EQ(p.consumed, header.size());
    EXPECT_FALSE(p.header.has_address);
    expectEveryPrefixNeedsMore(header);
  }
}

TEST(ProxyV1, LongestTcp6HeaderFits) {
  const std::string header =
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  ASSERT_EQ(header.size(), kMaxProxyV1 - 3);  // "TCP6" is 3 octets shorter than "UNKNOWN"
  Parsed p = parse(header);
  ASSERT_EQ(parseName(p.result), "kDone");
  EXPECT_EQ(p.consumed, header.size());
  EXPECT_EQ(endpoint(p.header.source), "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
}

TEST(ProxyV1, OnlyTheHeaderIsConsumedWhenMoreArrivedWithIt) {
  const std::string header = "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n";
  // Even another PROXY line after it is left for the caller (and then is not SMTP).
  Parsed p = parse(header + header);
  ASSERT_EQ(parseName(p.result), "kDone");
  EXPECT_EQ(p.consumed, header.size());
}

TEST(ProxyV1, NoLineEndWithinTheBound) {
  // 106 octets without LF may still be a header; 107 cannot be (the LF would be 108th).
  std::string data = "PROXY UNKNOWN ";
  data.resize(kMaxProxyV1 - 1, 'x');
  EXPECT_EQ(parseName(parse(data).result), "kNeedMore");
  data.push_back('x');
  EXPECT_EQ(parseName(parse(data).result), "kInvalid");
  data.append(500, 'x');
  data.append("\r\n");
  EXPECT_EQ(parseName(parse(data).result), "kInvalid");
  // An LF at octet 108: too late, even with a valid-looking line.
  std::string late = "PROXY UNKNOWN ";
  late.resize(kMaxProxyV1 - 1, 'x');
  late += "\r\n";
  EXPECT_EQ(parseName(parse(late).result), "kInvalid");
}

TEST(ProxyV1, Invalid) {
  const std::vector<std::string> cases = {
      // Not a PROXY header at all.
      "EHLO x\r\n",
      "E",
      " PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
      // Keyword and protocol.
      "PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
      "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY UNKNOWNX\r\n",
      "PROXY\r\n",
      "PROXY \r\n",
      "PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
      // Line end.
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
      "PROXY UNKNOWN\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
      // Addresses.
      "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
      "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3.4 host.example 1 2\r\n",
      "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
      "PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
      "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
      "PROXY TCP6 2001:db8:::1 ::1 1 2\r\n",
      // Ports.
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 0x19 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n",
      // Field count and spacing.
      "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8\r\n",
      "PROXY TCP4\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
      "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1\t2\r\n",
  };
  for (const auto& c : cases) {
    EXPECT_EQ(parseName(parse(c).result), "kInvalid") << visible(c);
  }
}

TEST(ProxyV1, TrailingSpaceIsInvalid) {
  // The grammar ends the line right after the destination port: "... dport CRLF".
  EXPECT_EQ(parseName(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n").result), "kInvalid");
  EXPECT_EQ(parseName(parse("PROXY TCP6 ::1 ::2 1 2 \r\n").result), "kInvalid");
}

TEST(ProxyV1, NulInsideAnAddressIsInvalid) {
  // The address field is "1.2.3.4\0x"; it must not be read as "1.2.3.4".
  EXPECT_EQ(parseName(parse("PROXY TCP4 1.2.3.4\0x 5.6.7.8 1 2\r\n"s).result), "kInvalid");
  EXPECT_EQ(parseName(parse("PROXY TCP6 ::1 ::2\0:3 1 2\r\n"s).result), "kInvalid");
}

// ---- v2 -------------------------------------------------------------------------------

const std::string kSig("\r\n\r\n\0\r\nQUIT\n", 12);

std::string v2(uint8_t ver_cmd, uint8_t family, std::string_view payload,
               size_t declared_len = SIZE_MAX) {
  size_t len = declared_len == SIZE_MAX ? payload.size() : declared_len;
  std::string h = kSig;
  h.push_back(static_cast<char>(ver_cmd));
  h.push_back(static_cast<char>(family));
  h.push_back(static_cast<char>((len >> 8) & 0xff));
  h.push_back(static_cast<char>(len & 0xff));
  h.append(payload);
  return h;
}

std::string be16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v & 0xff)}; }

std::string ip4(const char* text) {
  in_addr a{};
  EXPECT_EQ(inet_pton(AF_INET, text, &a), 1);
  return {reinterpret_cast<const char*>(&a), 4};
}

std::string ip6(const char* text) {
  in6_addr a{};
  EXPECT_EQ(inet_pton(AF_INET6, text, &a), 1);
  return {reinterpret_cast<const char*>(&a), 16};
}

std::string tcp4Payload() {
  return ip4("192.0.2.1") + ip4("198.51.100.2") + be16(56324) + be16(25);
}

std::string tcp6Payload() {
  return ip6("2001:db8::1") + ip6("2001:db8::2") + be16(40000) + be16(587);
}

TEST(ProxyV2, Tcp4) {
  const std::string header = v2(0x21, 0x11, tcp4Payload());
  ASSERT_EQ(header.size(), 28u);
  Parsed p = parse(header + "EHLO client\r\n");
  ASSERT_EQ(parseName(p.result), "kDone");
  EXPECT_EQ(p.consumed, header.size());
  EXPECT_TRUE(p.header.has_address);
  EXPECT_EQ(endpoint(p.header.source), "192.0.2.1:56324");
  EXPECT_EQ(endpoint(p.header.destination), "198.51.100.2:25");
  expectEveryPrefixNeedsMore(header);
}

TEST(ProxyV2, Tcp6) {
  const std::string header = v2(0x21, 0x21, tcp6Payload());
  ASSERT_EQ(header.size(), 52u);
  Parsed p = parse(header + "EHLO client\r\n");
  ASSERT_EQ(parseName(p.result), "kDone");
  EXPECT_EQ(p.consumed, header.size());
  EXPECT_TRUE(p.header.has_address);
  EXPECT_EQ(endpoint(p.header.source), "[2001:db8::1]:40000");
  EXPECT_EQ(endpoint(p.header.destination), "[2001:db8::2]:587");
  expectEveryPrefixNeedsMore(header);
}

TEST(ProxyV2, TlvsAfterTheAddressesAreSkipped) {
  // PP2_TYPE_AUTHORITY "mx.example", PP2_TYPE_NOOP with 3 octets, PP2_TYPE_SSL-ish junk.
  std::string tlvs = "\x02"s + be16(10) + "mx.example" + "\x04"s + be16(3) + "abc" + "\x20"s +
                     be16(5) + "\x01\0\0\0\0"s;
  for (auto [family, addrs] :
       {std::pair{uint8_t{0x11}, tcp4Payload()}, std::pair{uint8_t{0x21}, tcp6Payload()}}) {
    const std::string header = v2(0x21, family, addrs + tlvs);
    Parsed p = parse(header + "EHLO client\r\n");
    ASSERT_EQ(parseName(p.result), "kDone");
    EXPECT_EQ(p.consumed, 16 + addrs.size() + tlvs.size());
    EXPECT_TRUE(p.header.has_address);
    EXPECT_EQ(endpoint(p.header.source),
              family == 0x11 ? "192.0.2.1:56324" : "[2001:db8::1]:40000");
    expectEveryPrefixNeedsMore(header);
  }
}

TEST(ProxyV2, LocalCarriesNoAddress) {
  for (const std::string& header :
       {v2(0x20, 0x00, ""), v2(0x20, 0x11, tcp4Payload()), v2(0x20, 0x21, tcp6Payload())}) {
    Parsed p = parse(header + "EHLO client\r\n");
    ASSERT_EQ(parseName(p.result), "kDone") << visible(header);
    EXPECT_EQ(p.consumed, header.size());
    EXPECT_FALSE(p.header.has_address);
    expectEveryPrefixNeedsMore(header);
  }
}

TEST(ProxyV2, UnspecCarriesNoAddress) {
  const std::string header = v2(0x21, 0x00, "");
  Parsed p = parse(header + "EHLO client\r\n");
  ASSERT_EQ(parseName(p.result), "kDone");
  EXPECT_EQ(p.consumed, 16u);
  EXPECT_FALSE(p.header.has_address);
}

TEST(ProxyV2, LargestPayloadIsAccepted) {
  const std::string header =
      v2(0x21, 0x11, tcp4Payload() + std::string(kMaxProxyV2Payload - 12, 'T'));
  Parsed p = parse(header);
  ASSERT_EQ(parseName(p.result), "kDone");
  EXPECT_EQ(p.consumed, 16 + kMaxProxyV2Payload);
  EXPECT_EQ(parseName(parse(std::string_view(header).substr(0, header.size() - 1)).result),
            "kNeedMore");
}

TEST(ProxyV2, Invalid) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"version 1", v2(0x11, 0x11, tcp4Payload())},
      {"version 0", v2(0x01, 0x11, tcp4Payload())},
      {"version 3", v2(0x31, 0x11, tcp4Payload())},
      {"version 15", v2(0xF1, 0x11, tcp4Payload())},
      {"command 2", v2(0x22, 0x11, tcp4Payload())},
      {"command 15", v2(0x2F, 0x11, tcp4Payload())},
      {"length over the maximum", v2(0x21, 0x11, tcp4Payload(), kMaxProxyV2Payload + 1)},
      {"length 0xffff", v2(0x21, 0x11, tcp4Payload(), 0xffff)},
      {"TCP4 length 11", v2(0x21, 0x11, tcp4Payload().substr(0, 11))},
      {"TCP4 length 0", v2(0x21, 0x11, "")},
      {"TCP6 length 35", v2(0x21, 0x21, tcp6Payload().substr(0, 35))},
      {"TCP6 with a TCP4-sized payload", v2(0x21, 0x21, tcp4Payload())},
      {"family 4", v2(0x21, 0x41, tcp4Payload())},
      {"transport 3", v2(0x21, 0x13, tcp4Payload())},
      {"signature off by one octet", "\r\n\r\n\0\r\nQUIX\n"s + "\x21\x11\0\x0c"s + tcp4Payload()},
  };
  for (const auto& [what, data] : cases) {
    EXPECT_EQ(parseName(parse(data).result), "kInvalid") << what;
  }
}

TEST(ProxyV2, OversizedLengthIsRejectedBeforeThePayloadArrives) {
  // 16 octets are enough to know: the caller must not wait for 64 KiB.
  const std::string header = v2(0x21, 0x11, "", kMaxProxyV2Payload + 1);
  ASSERT_EQ(header.size(), 16u);
  EXPECT_EQ(parseName(parse(header).result), "kInvalid");
}

TEST(ProxyHeader, EmptyInputNeedsMore) {
  // A default string_view has a null data(); nothing may be read through it (memcmp with
  // a null pointer is undefined even for 0 octets, and UBSan reports it).
  Parsed p = parse(std::string_view{});
  EXPECT_EQ(parseName(p.result), "kNeedMore");
  EXPECT_EQ(p.consumed, 0u);
}

TEST(ProxyV2, PlainSmtpIsNotAHeader) {
  EXPECT_EQ(parseName(parse("EHLO x\r\n").result), "kInvalid");
  EXPECT_EQ(parseName(parse("HELO x\r\n").result), "kInvalid");
  // A lone CRLF could start a v2 signature, so it waits; a CRLF then a command cannot.
  EXPECT_EQ(parseName(parse("\r\n").result), "kNeedMore");
  EXPECT_EQ(parseName(parse("\r\nEHLO x\r\n").result), "kInvalid");
}

}  // namespace
}  // namespace postern
