#include "core/milter_protocol.h"

#include <gtest/gtest.h>

#include <string>

namespace postern {
namespace milter {
namespace {

using namespace std::string_literals;

TEST(MilterProtocol, EncodesPacketsAsLibmilterReadsThem) {
  EXPECT_EQ(encode(kEndOfHeaders), "\0\0\0\x01N"s);
  EXPECT_EQ(encodeOptions(6, 0x1ff, 0x1fffff), "\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff"s);
  EXPECT_EQ(encodeConnect("mail.client.test", '4', 2525, "192.0.2.1"),
            "\0\0\0\x1f"
            "Cmail.client.test\0"
            "4\x09\xdd"
            "192.0.2.1\0"s);
  EXPECT_EQ(encodeConnect("unknown", 'U', 0, ""),
            "\0\0\0\x0a"
            "Cunknown\0U"s);
  EXPECT_EQ(encodeStrings(kMail, {"<a@b.test>", "SIZE=10"}), "\0\0\0\x14M<a@b.test>\0SIZE=10\0"s);
  EXPECT_EQ(encodeMacros(kConnect, {{"j", "relay.test"}, {"{daemon_name}", "postern"}}),
            "\0\0\0\x25"
            "DCj\0relay.test\0{daemon_name}\0postern\0"s);
}

TEST(MilterProtocol, ReadsPacketsInAnyPiecesAndRefusesBadLengths) {
  const std::string stream = encode(kContinue) + encode(kReplyCode, "550 5.7.1 no\0"s) +
                             encode(kAddHeader, "X-Spam\0yes\0"s);
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    MilterReader r;
    r.feed(stream.substr(0, cut));
    std::vector<Packet> got;
    Packet p;
    while (r.next(p) == MilterReader::Status::kPacket) got.push_back(p);
    r.feed(stream.substr(cut));
    while (r.next(p) == MilterReader::Status::kPacket) got.push_back(p);
    ASSERT_EQ(got.size(), 3u) << cut;
    EXPECT_EQ(got[0].code, kContinue);
    EXPECT_EQ(got[1].data, "550 5.7.1 no\0"s);
    EXPECT_EQ(got[2].code, kAddHeader);
    EXPECT_EQ(r.buffered(), 0u);
  }
  MilterReader zero;
  zero.feed("\0\0\0\0"s);
  Packet p;
  EXPECT_EQ(zero.next(p), MilterReader::Status::kBad);
  MilterReader huge;
  huge.feed(
      "\x7f\xff\xff\xff"
      "c"s);
  EXPECT_EQ(huge.next(p), MilterReader::Status::kBad);  // never waits for 2 GiB
}

TEST(MilterProtocol, ParsesTheOptionsAnswerWithMacroLists) {
  std::string data = "\0\0\0\x06\0\0\0\x21\0\0\0\x10"s;
  auto o = parseOptions(data);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->protocol, 0x10u);
  EXPECT_EQ(o->version, 6u);
  EXPECT_EQ(o->actions, 0x21u);
  o = parseOptions(data + "\0\0\0\x02{mail_addr} {auth_authen}\0"s);
  ASSERT_TRUE(o);
  ASSERT_EQ(o->macros.size(), 1u);
  EXPECT_EQ(o->macros[0], (std::pair<uint32_t, std::string>{2, "{mail_addr} {auth_authen}"}));
  EXPECT_FALSE(parseOptions(data.substr(0, 11)));
  EXPECT_FALSE(parseOptions(data + "\0\0\0\x02no-nul"s));
}

TEST(MilterProtocol, ReplyCodesCannotForgeReplyLines) {
  auto r = parseReplyCode("550 5.7.1 rejected by policy\0"s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, 550);
  EXPECT_EQ(r->lines, std::vector<std::string>{"5.7.1 rejected by policy"});
  r = parseReplyCode("451-4.7.1 first\r\n451 4.7.1 second");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->lines, (std::vector<std::string>{"4.7.1 first", "4.7.1 second"}));
  for (std::string bad :
       {"250 ok"s, "55 short"s, "550 a\r\n250 smuggled"s, "550 a\nb"s, "550-no last line"s,
        "550 a\r\n550 b"s, "550 bell\x07"s, "550 caf\xc3\xa9"s, "5x0 y"s, "550 a\0b"s, ""s}) {
    EXPECT_FALSE(parseReplyCode(bad)) << bad;
  }
}

TEST(MilterProtocol, StringsAndHeaderChanges) {
  EXPECT_EQ(parseStrings("a\0bc\0"s), (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(parseStrings(""), std::vector<std::string>{});
  EXPECT_FALSE(parseStrings("no nul"));
  auto h = parseHeaderChange("\0\0\0\x02X-Spam-Score\0 5.1\0"s);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->index, 2u);
  EXPECT_EQ(h->name, "X-Spam-Score");
  EXPECT_EQ(h->value, " 5.1");
  EXPECT_FALSE(
      parseHeaderChange("\0\0\0\x01"
                        "Bad Name\0v\0"s));
  EXPECT_FALSE(
      parseHeaderChange("\0\0\0\x01"
                        "X\0v\0extra\0"s));
  EXPECT_FALSE(parseHeaderChange("\0\0"s));
}

}  // namespace
}  // namespace milter
}  // namespace postern
