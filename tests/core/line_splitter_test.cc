#include "core/line_splitter.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace postern {
namespace {

void feed(InputBuffer& buf, std::string_view data) {
  auto w = buf.writable();
  ASSERT_GE(w.size(), data.size());
  std::memcpy(w.data(), data.data(), data.size());
  buf.commit(data.size());
}

std::vector<Line> drain(LineSplitter& s, InputBuffer& buf, std::vector<std::string>& texts) {
  std::vector<Line> lines;
  Line l;
  while (s.next(buf, l)) {
    texts.emplace_back(l.text);
    lines.push_back(l);
  }
  return lines;
}

TEST(LineSplitter, SplitsCrlfAndReportsBareLf) {
  InputBuffer buf(1024);
  LineSplitter s(100);
  feed(buf, "HELO a\r\nNOOP\nQUIT\r\npartial");
  std::vector<std::string> t;
  auto lines = drain(s, buf, t);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(t[0], "HELO a");
  EXPECT_TRUE(lines[0].crlf);
  EXPECT_EQ(t[1], "NOOP");
  EXPECT_FALSE(lines[1].crlf);
  EXPECT_EQ(t[2], "QUIT");
  EXPECT_EQ(buf.readable(), "partial");
}

TEST(LineSplitter, LineCompletedAcrossReads) {
  InputBuffer buf(64);
  LineSplitter s(32);
  feed(buf, "MAIL FROM:<a@");
  Line l;
  EXPECT_FALSE(s.next(buf, l));
  feed(buf, "b>\r");
  EXPECT_FALSE(s.next(buf, l));
  feed(buf, "\n");
  ASSERT_TRUE(s.next(buf, l));
  EXPECT_EQ(l.text, "MAIL FROM:<a@b>");
  EXPECT_TRUE(l.crlf);
}

TEST(LineSplitter, LineAtBoundIsKeptOneMoreOctetIsDiscarded) {
  InputBuffer buf(256);
  LineSplitter s(10);  // 8 octets + CRLF fit
  feed(buf, "12345678\r\n123456789\r\nok\r\n");
  std::vector<std::string> t;
  auto lines = drain(s, buf, t);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_FALSE(lines[0].too_long);
  EXPECT_EQ(t[0], "12345678");
  EXPECT_TRUE(lines[1].too_long);
  EXPECT_TRUE(lines[1].crlf);
  EXPECT_EQ(t[2], "ok");
}

TEST(LineSplitter, DiscardsLongLineAcrossManyReadsWithBoundedBuffer) {
  InputBuffer buf(64);
  LineSplitter s(16);
  Line l;
  for (int i = 0; i < 100; ++i) {
    feed(buf, std::string(40, 'x'));
    EXPECT_FALSE(s.next(buf, l));
    EXPECT_LT(buf.size(), 16u);
  }
  feed(buf, "x\r\nNOOP\r\n");
  ASSERT_TRUE(s.next(buf, l));
  EXPECT_TRUE(l.too_long);
  EXPECT_TRUE(l.crlf);
  ASSERT_TRUE(s.next(buf, l));
  EXPECT_EQ(l.text, "NOOP");
}

TEST(LineSplitter, DiscardedLineEndingInBareLfIsReportedAsSuch) {
  InputBuffer buf(64);
  LineSplitter s(8);
  feed(buf, "0123456789\n");
  Line l;
  ASSERT_TRUE(s.next(buf, l));
  EXPECT_TRUE(l.too_long);
  EXPECT_FALSE(l.crlf);
}

TEST(LineSplitter, CrSplitFromLfAtDiscardBoundary) {
  InputBuffer buf(64);
  LineSplitter s(8);
  feed(buf, "0123456\r");  // exactly the bound, no LF yet
  Line l;
  EXPECT_FALSE(s.next(buf, l));
  feed(buf, "\n");
  ASSERT_TRUE(s.next(buf, l));
  EXPECT_TRUE(l.too_long);
  EXPECT_TRUE(l.crlf);
}

TEST(InputBuffer, CompactsOnlyThePartialTail) {
  InputBuffer buf(16);
  feed(buf, "0123456789ab");
  buf.consume(10);
  auto w = buf.writable();
  EXPECT_EQ(w.size(), 14u);
  EXPECT_EQ(buf.readable(), "ab");
}

}  // namespace
}  // namespace postern
