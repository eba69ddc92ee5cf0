#include "relay/inbound/milter_edit.h"

#include <gtest/gtest.h>

#include <string>

namespace postern {
namespace {

using namespace std::string_literals;

milter::Packet packet(char code, std::string data) { return milter::Packet{code, std::move(data)}; }

std::string change(uint32_t index, const std::string& name, const std::string& value) {
  std::string out(4, '\0');
  out[0] = static_cast<char>(index >> 24);
  out[1] = static_cast<char>(index >> 16);
  out[2] = static_cast<char>(index >> 8);
  out[3] = static_cast<char>(index);
  return out + name + '\0' + value + '\0';
}

TEST(MilterEdit, SplitsTheHeaderSectionWithFoldsAsSendmailSendsThem) {
  const std::string msg =
      "Received: from a\r\n\tby b\r\nSubject:  hello\r\nX-Empty:\r\n\r\nbody\r\n";
  HeaderSection h = parseHeaderSection(msg);
  ASSERT_EQ(h.fields.size(), 3u);
  EXPECT_EQ(h.fields[0].name, "Received");
  EXPECT_EQ(h.fields[0].value, "from a\n\tby b");
  EXPECT_EQ(h.fields[1].value, "hello");
  EXPECT_EQ(h.fields[2].value, "");
  EXPECT_TRUE(h.complete && h.blank_line);
  EXPECT_EQ(msg.substr(h.body_begin), "body\r\n");
  EXPECT_EQ(serializeHeaders(h.fields, true) + msg.substr(h.body_begin), msg);
}

TEST(MilterEdit, ALineThatIsNotAFieldStartsTheBody) {
  HeaderSection h = parseHeaderSection("Subject: x\r\nnot a field\r\nmore\r\n");
  ASSERT_EQ(h.fields.size(), 1u);
  EXPECT_TRUE(h.complete);
  EXPECT_FALSE(h.blank_line);
  EXPECT_EQ(h.body_begin, 12u);
  // Cut inside the header section (a scan window): what is whole is taken.
  HeaderSection cut = parseHeaderSection("A: 1\r\nB: 2\r\nC: partial");
  EXPECT_EQ(cut.fields.size(), 2u);
  EXPECT_FALSE(cut.complete);
}

TEST(MilterEdit, AppliesAddInsertChangeAndDelete) {
  std::vector<MilterHeader> f =
      parseHeaderSection("Subject: a\r\nX-Tag: 1\r\nX-Tag: 2\r\n\r\n").fields;
  EXPECT_TRUE(applyHeaderEdit(f, packet(milter::kAddHeader, "X-New\0v\0"s)));
  EXPECT_TRUE(applyHeaderEdit(f, packet(milter::kInsertHeader, change(0, "X-Top", "t"))));
  EXPECT_TRUE(applyHeaderEdit(f, packet(milter::kChangeHeader, change(2, "x-tag", "two"))));
  EXPECT_TRUE(applyHeaderEdit(f, packet(milter::kChangeHeader, change(1, "Subject", ""))));
  EXPECT_TRUE(applyHeaderEdit(f, packet(milter::kChangeHeader, change(1, "X-Missing", "m"))));
  EXPECT_EQ(serializeHeaders(f, true),
            "X-Top: t\r\nX-Tag: 1\r\nX-Tag: two\r\nX-New: v\r\nX-Missing: m\r\n\r\n");
  // An index past the end inserts at the end.
  EXPECT_TRUE(applyHeaderEdit(f, packet(milter::kInsertHeader, change(99, "X-End", "e"))));
  EXPECT_EQ(f.back().name, "X-End");
}

TEST(MilterEdit, RefusesMalformedEditsAndNeverLetsAValueStartAField) {
  std::vector<MilterHeader> f;
  EXPECT_FALSE(applyHeaderEdit(f, packet(milter::kAddHeader, "Bad Name\0v\0"s)));
  EXPECT_FALSE(applyHeaderEdit(f, packet(milter::kAddHeader, "X-A:\0v\0"s)));
  EXPECT_FALSE(applyHeaderEdit(f, packet(milter::kAddHeader, "X-A\0v"s)));  // no final NUL
  EXPECT_FALSE(applyHeaderEdit(f, packet(milter::kChangeHeader, "\0\0"s)));
  EXPECT_TRUE(f.empty());
  EXPECT_TRUE(applyHeaderEdit(f, packet(milter::kAddHeader, "X-A\0one\nBcc: x@y\r\n\tkept\0"s)));
  EXPECT_EQ(f[0].raw, "X-A: one\r\n\tBcc: x@y\r\n\tkept\r\n");
  EXPECT_EQ(foldValue("a\r\n"), "a");  // no empty fold at the end
  EXPECT_EQ(foldValue("nul\0here"s), "nul here");
}

TEST(MilterEdit, NormalizesAReplacedBodyToCrlfLines) {
  EXPECT_EQ(normalizeBody("a\nb\rc\r\nd"), "a\r\nb\r\nc\r\nd\r\n");
  EXPECT_EQ(normalizeBody(""), "");
  EXPECT_EQ(normalizeBody("x\r\n"), "x\r\n");
}

}  // namespace
}  // namespace postern
