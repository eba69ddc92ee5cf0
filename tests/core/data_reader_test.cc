// Tests for core/data_reader.*: the DATA body reader, driven the way a session drives it.
//
// Raw byte streams go through an InputBuffer and a LineSplitter bound to splitterBound()
// into DataReader::feed, whole, one byte at a time and split in two at every offset; all
// splits must give the same result. The reader must end a message only on CRLF "." CRLF,
// whatever bare CR / bare LF combination the client sends (SMTP smuggling), in both
// BareLineEnding modes. The BDAT entry points (feedChunk / finishChunks) are tested at the
// end with the same split discipline.
#include "core/data_reader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/input_buffer.h"
#include "core/line_splitter.h"

namespace postern {
namespace {

constexpr size_t kMaxLine = 1000;  // 998 octets + CRLF, RFC 5321 §4.5.3.1.6
constexpr size_t kMaxSize = 1 << 20;

struct Message {
  bool ended = false;
  size_t end_at = 0;  // offset in the raw stream just past the end-of-data line
  std::string out;    // the caller's buffer: header + content
  DataError error = DataError::kNone;
  size_t size = 0;
  size_t received = 0;  // "Received:" fields in its header section
  std::string message_id;

  bool operator==(const Message&) const = default;
};

std::string visible(std::string_view s);

std::string errorName(DataError e) {
  switch (e) {
    case DataError::kNone:
      return "kNone";
    case DataError::kTooBig:
      return "kTooBig";
    case DataError::kLineTooLong:
      return "kLineTooLong";
    case DataError::kBareLf:
      return "kBareLf";
    case DataError::kBareCr:
      return "kBareCr";
  }
  return "?";
}

void PrintTo(const Message& m, std::ostream* os) {
  *os << "{ended=" << m.ended << " end_at=" << m.end_at << " out=\"" << visible(m.out)
      << "\" error=" << errorName(m.error) << " size=" << m.size << " received=" << m.received
      << "}";
}

// Shows CR and LF so a failing comparison can be read.
std::string visible(std::string_view s) {
  std::string v;
  for (char c : s) {
    if (c == '\r') {
      v += "\\r";
    } else if (c == '\n') {
      v += "\\n";
    } else {
      v += c;
    }
  }
  return v;
}

struct Options {
  BareLineEnding mode = BareLineEnding::kReject;
  size_t max_line = kMaxLine;
  size_t max_size = kMaxSize;
  std::string header;   // what the caller's buffer holds before reset()
  size_t capacity = 0;  // InputBuffer capacity; 0: the splitter bound (the tightest legal)

  // Chained setters: g++ 12 warns on designated initializers that skip members.
  Options withMode(BareLineEnding m) const {
    Options o = *this;
    o.mode = m;
    return o;
  }
  Options withMaxSize(size_t n) const {
    Options o = *this;
    o.max_size = n;
    return o;
  }
  Options withHeader(std::string h) const {
    Options o = *this;
    o.header = std::move(h);
    return o;
  }
  Options withCapacity(size_t n) const {
    Options o = *this;
    o.capacity = n;
    return o;
  }
};

// Reads messages from raw until it runs out: after each end of data the reader is reset on
// a fresh buffer (holding the header again), as a session would for the next DATA. The
// last element is the unfinished message (ended == false), possibly empty. `cuts` are the
// offsets at which one read ends and the next begins.
std::vector<Message> readAll(std::string_view raw, const Options& o,
                             const std::vector<size_t>& cuts) {
  DataReader reader(o.max_line, o.max_size, o.mode);
  InputBuffer buf(o.capacity != 0 ? o.capacity : reader.splitterBound());
  LineSplitter splitter(reader.splitterBound());
  std::vector<Message> msgs(1);
  // The reader's output pins the read buffer, so a buffer reused too early would show as
  // corrupted content in every split below.
  MessageBody body;
  body.setSource(&buf);
  body.adopt(o.header);
  reader.reset(body);

  size_t fed = 0;
  size_t next_cut = 0;
  while (fed < raw.size()) {
    size_t limit = raw.size();
    while (next_cut < cuts.size() && cuts[next_cut] <= fed) ++next_cut;
    if (next_cut < cuts.size()) limit = cuts[next_cut];
    auto w = buf.writable();
    size_t n = std::min(w.size(), limit - fed);
    if (n == 0) {
      ADD_FAILURE() << "InputBuffer full with no line to take at offset " << fed;
      break;
    }
    std::memcpy(w.data(), raw.data() + fed, n);
    buf.commit(n);
    fed += n;
    Line line;
    while (splitter.next(buf, line)) {
      Message& m = msgs.back();
      if (!reader.feed(line, body)) continue;
      m.out = body.str();
      m.ended = true;
      m.end_at = fed - buf.size();
      m.error = reader.error();
      m.size = reader.size();
      m.received = reader.receivedCount();
      m.message_id = reader.messageId();
      msgs.emplace_back();
      body.clear();
      body.adopt(o.header);
      reader.reset(body);
    }
  }
  msgs.back().out = body.str();
  msgs.back().error = reader.error();
  msgs.back().size = reader.size();
  msgs.back().received = reader.receivedCount();
  msgs.back().message_id = reader.messageId();
  return msgs;
}

// Runs raw whole, one byte per read, and split in two at every offset; checks that every
// split gives what the whole-stream read gives, and returns that.
std::vector<Message> readEverySplit(std::string_view raw, const Options& o = {}) {
  std::vector<Message> whole = readAll(raw, o, {});
  std::vector<size_t> every(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) every[i] = i + 1;
  EXPECT_EQ(readAll(raw, o, every), whole) << "one byte per read: " << visible(raw);
  for (size_t i = 1; i < raw.size(); ++i) {
    EXPECT_EQ(readAll(raw, o, {i}), whole) << "split at " << i << ": " << visible(raw);
  }
  return whole;
}

bool hasBareCrOrLf(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n')) return true;
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return true;
  }
  return false;
}

TEST(DataReader, NormalMessage) {
  const std::string raw = "Subject: hi\r\n\r\nbody line\r\n.\r\n";
  for (auto mode : {BareLineEnding::kReject, BareLineEnding::kNormalise}) {
    auto msgs = readEverySplit(raw, Options().withMode(mode));
    ASSERT_EQ(msgs.size(), 2u);
    EXPECT_TRUE(msgs[0].ended);
    EXPECT_EQ(msgs[0].end_at, raw.size());
    EXPECT_EQ(msgs[0].out, "Subject: hi\r\n\r\nbody line\r\n");
    EXPECT_EQ(msgs[0].error, DataError::kNone);
    EXPECT_EQ(msgs[0].size, msgs[0].out.size());
    EXPECT_EQ(msgs[1].out, "");  // nothing read into the next message
  }
}

// Loop detection counts "Received:" fields of the header section only, in any case and
// with blanks before the colon; a dot-stuffed one counts once unstuffed, one in the body
// or a longer field name does not.
const std::string kHopsMessage =
    "Received: from a\r\nRECEIVED : from b\r\n\tcontinued\r\nreceived:x\r\n"
    "Received-SPF: pass\r\nX-Received: y\r\nReceived\r\n\r\nReceived: in the body\r\n";

TEST(DataReader, CountsReceivedFieldsOfTheHeaderSection) {
  for (auto mode : {BareLineEnding::kReject, BareLineEnding::kNormalise}) {
    auto msgs = readEverySplit(kHopsMessage + ".\r\n", Options().withMode(mode));
    ASSERT_EQ(msgs.size(), 2u);
    EXPECT_EQ(msgs[0].received, 3u);
    EXPECT_EQ(msgs[1].received, 0u);  // reset for the next message
  }
  auto stuffed = readEverySplit("..Received: x\r\n.Received: y\r\n.\r\n");
  EXPECT_EQ(stuffed[0].received, 1u);  // ".Received: x" is no field name; "Received: y" is
  // The header section also ends at a line that cannot be a field; a long field name
  // (past the 16 octets looked at) does not end it.
  auto plain = readEverySplit(
      "Received: a\r\nX-A-Very-Long-Field-Name: v\r\nReceived: b\r\n"
      "body text: not a field\r\nReceived: c\r\n.\r\n");
  EXPECT_EQ(plain[0].received, 2u);
  // A header section that never ends still counts, line by line.
  std::string many;
  for (int i = 0; i < 60; ++i) many += "Received: hop\r\n";
  EXPECT_EQ(readAll(many + ".\r\n", Options(), {})[0].received, 60u);
}

// The accepted log line names the Message-ID: the first field's value in the header
// section, trimmed and bounded; not one in the body, not a longer field name.
TEST(DataReader, TakesTheFirstMessageIdOfTheHeaderSection) {
  auto msgs = readEverySplit(
      "X-Message-ID: <no@x>\r\nMESSAGE-ID :  <a.1@origin.test> \r\n"
      "Message-ID: <second@x>\r\n\r\nMessage-ID: <body@x>\r\n.\r\n"
      "Subject: none\r\n\r\nMessage-ID: <body@x>\r\n.\r\n");
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[0].message_id, "<a.1@origin.test>");
  EXPECT_EQ(msgs[1].message_id, "") << "reset for the next message";
  const std::string hostile(600, 'x');
  auto big = readAll("Message-ID: <" + hostile + ">\r\n.\r\n", Options(), {});
  EXPECT_EQ(big[0].message_id, "<" + hostile.substr(0, DataReader::kMessageIdMax - 1));
  auto stuffed = readEverySplit(".Message-ID: <dot@x>\r\n.\r\n");
  EXPECT_EQ(stuffed[0].message_id, "<dot@x>");
}

TEST(DataReaderChunks, TakesAMessageIdThatCameInOnePiece) {
  const std::string raw = "Subject: s\r\nMessage-ID:\t<c@x>\r\n\r\nbody\r\n";
  for (bool split : {false, true}) {
    DataReader reader(1000, kMaxSize, BareLineEnding::kReject);
    MessageBody body;
    reader.reset(body);
    const size_t cut = split ? raw.find("<c@") : raw.size();
    reader.feedChunk(std::string_view(raw).substr(0, cut), body);
    reader.feedChunk(std::string_view(raw).substr(cut), body);
    reader.finishChunks(body);
    EXPECT_EQ(reader.messageId(), split ? "" : "<c@x>") << "split: " << split;
  }
}

TEST(DataReader, EmptyMessage) {
  auto msgs = readEverySplit(".\r\n");
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_TRUE(msgs[0].ended);
  EXPECT_EQ(msgs[0].end_at, 3u);
  EXPECT_EQ(msgs[0].out, "");
  EXPECT_EQ(msgs[0].error, DataError::kNone);
}

TEST(DataReader, BytesAfterTheEndAreNotConsumed) {
  const std::string raw = "a\r\n.\r\nQUIT\r\n";
  DataReader reader(kMaxLine, kMaxSize, BareLineEnding::kReject);
  InputBuffer buf(4096);
  LineSplitter splitter(reader.splitterBound());
  MessageBody out;
  out.setSource(&buf);
  reader.reset(out);
  auto w = buf.writable();
  std::memcpy(w.data(), raw.data(), raw.size());
  buf.commit(raw.size());
  Line line;
  ASSERT_TRUE(splitter.next(buf, line));
  EXPECT_FALSE(reader.feed(line, out));
  ASSERT_TRUE(splitter.next(buf, line));
  EXPECT_TRUE(reader.feed(line, out));
  EXPECT_EQ(buf.readable(), "QUIT\r\n");
  EXPECT_EQ(out.str(), "a\r\n");
  EXPECT_EQ(out.pieces().size(), 1u);  // "a" and its CRLF, where they lie: one view
}

TEST(DataReader, NoEndWithoutTheDotLine) {
  auto msgs = readEverySplit("a\r\nb\r\n.");
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_FALSE(msgs[0].ended);
  EXPECT_EQ(msgs[0].out, "a\r\nb\r\n");
}

TEST(DataReader, RemovesTransparencyDots) {
  const std::string raw = "..x\r\n...\r\n..\r\nx.\r\n. y\r\n.\r\n";
  for (auto mode : {BareLineEnding::kReject, BareLineEnding::kNormalise}) {
    auto msgs = readEverySplit(raw, Options().withMode(mode));
    ASSERT_EQ(msgs.size(), 2u);
    EXPECT_TRUE(msgs[0].ended);
    EXPECT_EQ(msgs[0].end_at, raw.size());
    EXPECT_EQ(msgs[0].out, ".x\r\n..\r\n.\r\nx.\r\n y\r\n");
    EXPECT_EQ(msgs[0].error, DataError::kNone);
  }
}

TEST(DataReader, DotLineWithMoreOnItIsNotTheEnd) {
  // ".." is a stuffed ".", ". " and ".x" are content: only "." CRLF alone ends.
  const std::string raw = "a\r\n..\r\n. \r\n.x\r\n.\r\n";
  auto msgs = readEverySplit(raw);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].end_at, raw.size());
  EXPECT_EQ(msgs[0].out, "a\r\n.\r\n \r\nx\r\n");
}

TEST(DataReader, TwoMessagesBackToBack) {
  const std::string raw = "one\r\n.\r\ntwo\r\n.\r\n";
  auto msgs = readEverySplit(raw);
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[0].out, "one\r\n");
  EXPECT_EQ(msgs[0].end_at, 8u);
  EXPECT_EQ(msgs[1].out, "two\r\n");
  EXPECT_EQ(msgs[1].end_at, raw.size());
}

// A body whose only CRLF "." CRLF is the last five octets, with a would-be end sequence
// in between that some server might take for the end of data (SMTP smuggling).
struct Smuggle {
  std::string_view between;  // between "a" and the smuggled command
  DataError reject_error;
  std::string_view normalised;  // expected content in kNormalise mode
};

const Smuggle kSmuggles[] = {
    {"\n.\n", DataError::kBareLf, "a\r\n\r\nMAIL FROM:<evil@x>\r\n"},
    {"\n.\r\n", DataError::kBareLf, "a\r\n\r\nMAIL FROM:<evil@x>\r\n"},
    {"\r.\r\n", DataError::kBareCr, "a\r\n.\r\nMAIL FROM:<evil@x>\r\n"},
    {"\r\n.\r", DataError::kBareCr, "a\r\n\r\nMAIL FROM:<evil@x>\r\n"},
    {"\r\n.\n", DataError::kBareLf, "a\r\n\r\nMAIL FROM:<evil@x>\r\n"},
    {"\r.\r", DataError::kBareCr, "a\r\n.\r\nMAIL FROM:<evil@x>\r\n"},
    {"\r\r\n", DataError::kBareCr, "a\r\n\r\nMAIL FROM:<evil@x>\r\n"},
    {"\r\r\n.\r\r\n", DataError::kBareCr, "a\r\n\r\n\r\n\r\nMAIL FROM:<evil@x>\r\n"},
    {"\r\n.\r\r\n", DataError::kBareCr, "a\r\n\r\n\r\nMAIL FROM:<evil@x>\r\n"},
    {"\n", DataError::kBareLf, "a\r\nMAIL FROM:<evil@x>\r\n"},
    {"\r", DataError::kBareCr, "a\r\nMAIL FROM:<evil@x>\r\n"},
    {"\n\r\n.\r", DataError::kBareLf, "a\r\n\r\n\r\nMAIL FROM:<evil@x>\r\n"},
};

std::string smuggleStream(std::string_view between) {
  std::string raw = "a";
  raw += between;
  raw += "MAIL FROM:<evil@x>\r\n.\r\n";
  // The test input itself: the only real end of data is at the very end.
  EXPECT_EQ(("\r\n" + raw).find("\r\n.\r\n"), raw.size() - 3) << visible(raw);
  return raw;
}

TEST(DataReader, SmugglingRejectNeverEndsEarly) {
  for (const auto& s : kSmuggles) {
    std::string raw = smuggleStream(s.between);
    SCOPED_TRACE(visible(raw));
    auto msgs = readEverySplit(raw, Options().withMode(BareLineEnding::kReject));
    ASSERT_EQ(msgs.size(), 2u);  // exactly one message, then nothing
    EXPECT_TRUE(msgs[0].ended);
    EXPECT_EQ(msgs[0].end_at, raw.size());
    EXPECT_EQ(errorName(msgs[0].error), errorName(s.reject_error));
    EXPECT_EQ(visible(msgs[0].out), "");  // cut back to where the message started
    EXPECT_EQ(msgs[1].out, "");
  }
}

TEST(DataReader, SmugglingNormaliseNeverEndsEarly) {
  for (const auto& s : kSmuggles) {
    std::string raw = smuggleStream(s.between);
    SCOPED_TRACE(visible(raw));
    auto msgs = readEverySplit(raw, Options().withMode(BareLineEnding::kNormalise));
    ASSERT_EQ(msgs.size(), 2u);
    EXPECT_TRUE(msgs[0].ended);
    EXPECT_EQ(msgs[0].end_at, raw.size());
    EXPECT_EQ(errorName(msgs[0].error), "kNone");
    EXPECT_FALSE(hasBareCrOrLf(msgs[0].out)) << visible(msgs[0].out);
    EXPECT_EQ(visible(msgs[0].out), visible(s.normalised));
    EXPECT_EQ(msgs[0].size, msgs[0].out.size());
  }
}

TEST(DataReader, NormaliseExampleFromTheBrief) {
  const std::string raw = "a\n.\nMAIL FROM:<x>\r\n.\r\n";
  auto msgs = readEverySplit(raw, Options().withMode(BareLineEnding::kNormalise));
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].end_at, raw.size());
  EXPECT_EQ(visible(msgs[0].out), visible("a\r\n\r\nMAIL FROM:<x>\r\n"));
}

TEST(DataReader, BareLfDotLineAfterCrlfIsNotTheEnd) {
  // CRLF "." LF and LF "." CRLF: each side of the dot must be CRLF.
  for (std::string_view raw : {"a\r\n.\nb\r\n.\r\n", "a\n.\r\nb\r\n.\r\n"}) {
    for (auto mode : {BareLineEnding::kReject, BareLineEnding::kNormalise}) {
      auto msgs = readEverySplit(raw, Options().withMode(mode));
      ASSERT_EQ(msgs.size(), 2u) << visible(raw);
      EXPECT_EQ(msgs[0].end_at, raw.size()) << visible(raw);
    }
  }
}

TEST(DataReader, LineAtTheLimitPasses) {
  const std::string line(998, 'x');
  const std::string raw = line + "\r\n.\r\n";
  auto msgs = readEverySplit(raw);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(errorName(msgs[0].error), "kNone");
  EXPECT_EQ(msgs[0].out, line + "\r\n");
  EXPECT_EQ(msgs[0].end_at, raw.size());
}

TEST(DataReader, StuffedLineAtTheLimitPasses) {
  // 999 octets on the wire, 998 after the transparency dot goes.
  const std::string line = "." + std::string(997, 'x');
  const std::string raw = "." + line + "\r\n.\r\n";
  for (auto mode : {BareLineEnding::kReject, BareLineEnding::kNormalise}) {
    auto msgs = readEverySplit(raw, Options().withMode(mode));
    ASSERT_EQ(msgs.size(), 2u);
    EXPECT_EQ(errorName(msgs[0].error), "kNone");
    EXPECT_EQ(msgs[0].out, line + "\r\n");
    EXPECT_EQ(msgs[0].end_at, raw.size());
  }
}

TEST(DataReader, LineOneOctetOverTheLimitFails) {
  for (auto mode : {BareLineEnding::kReject, BareLineEnding::kNormalise}) {
    // 999 octets (fits the splitter, which allows for a dot, but not the reader) and
    // 1000 octets (too long for the splitter itself); then the end must still be found.
    for (size_t n : {999u, 1000u, 5000u}) {
      const std::string raw = "ok\r\n" + std::string(n, 'x') + "\r\nafter\r\n.\r\n";
      auto msgs = readEverySplit(raw, Options().withMode(mode));
      ASSERT_EQ(msgs.size(), 2u) << n;
      EXPECT_TRUE(msgs[0].ended);
      EXPECT_EQ(msgs[0].end_at, raw.size()) << n;
      EXPECT_EQ(errorName(msgs[0].error), "kLineTooLong") << n;
      EXPECT_EQ(msgs[0].out, "") << n;
    }
  }
}

TEST(DataReader, StuffedLineOverTheLimitFails) {
  // 1000 octets on the wire with a transparency dot: 999 after it, one too many.
  const std::string raw = ".." + std::string(998, 'x') + "\r\n.\r\n";
  auto msgs = readEverySplit(raw);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(errorName(msgs[0].error), "kLineTooLong");
  EXPECT_EQ(msgs[0].end_at, raw.size());
}

TEST(DataReader, TooLongLineEndingInCrlfThenDotEnds) {
  // The discarded line's CRLF straddles the splitter's cut: the dot after it still ends.
  for (size_t n : {999u, 1000u, 1001u, 1002u, 2001u}) {
    const std::string raw = std::string(n, 'y') + "\r\n.\r\nQUIT\r\n";
    auto msgs = readEverySplit(raw);
    ASSERT_GE(msgs.size(), 1u);
    EXPECT_TRUE(msgs[0].ended) << n;
    EXPECT_EQ(msgs[0].end_at, raw.size() - 6) << n;
    EXPECT_EQ(errorName(msgs[0].error), "kLineTooLong") << n;
  }
}

TEST(DataReader, TooLongLineEndingInBareLfThenDotDoesNotEnd) {
  for (size_t n : {999u, 1000u, 1001u, 2001u}) {
    const std::string raw = std::string(n, 'y') + "\n.\r\nMAIL FROM:<x>\r\n.\r\n";
    auto msgs = readEverySplit(raw);
    ASSERT_EQ(msgs.size(), 2u) << n;
    EXPECT_EQ(msgs[0].end_at, raw.size()) << n;
  }
}

TEST(DataReader, SizeLimit) {
  // max_size counts content octets including each CRLF, after unstuffing.
  Options o = Options().withMaxSize(10);
  auto fits = readEverySplit("abcd\r\n.ef\r\n.\r\n", o);  // 6 + 4 = 10
  ASSERT_EQ(fits.size(), 2u);
  EXPECT_EQ(errorName(fits[0].error), "kNone");
  EXPECT_EQ(fits[0].out, "abcd\r\nef\r\n");
  EXPECT_EQ(fits[0].size, 10u);

  const std::string raw = "abcd\r\nefg\r\nmore\r\n.\r\n";  // 6 + 5 = 11
  auto over = readEverySplit(raw, o);
  ASSERT_EQ(over.size(), 2u);
  EXPECT_EQ(errorName(over[0].error), "kTooBig");
  EXPECT_EQ(over[0].out, "");
  EXPECT_TRUE(over[0].ended);
  EXPECT_EQ(over[0].end_at, raw.size());
}

TEST(DataReader, SizeLimitInNormaliseModeCountsTheAddedCr) {
  Options o = Options().withMode(BareLineEnding::kNormalise).withMaxSize(6);
  auto over = readEverySplit("ab\nc\r\n.\r\n", o);  // "ab\r\nc\r\n" = 7 > 6
  ASSERT_EQ(over.size(), 2u);
  EXPECT_EQ(errorName(over[0].error), "kTooBig");
  auto exact = readEverySplit("ab\nc\r\n.\r\n",
                              Options().withMode(BareLineEnding::kNormalise).withMaxSize(7));
  ASSERT_EQ(exact.size(), 2u);
  EXPECT_EQ(errorName(exact[0].error), "kNone");
  EXPECT_EQ(exact[0].out, "ab\r\nc\r\n");
}

TEST(DataReader, HeaderBeforeResetIsKeptOnError) {
  const std::string header = "Received: from x\r\n";
  const std::vector<std::pair<std::string, DataError>> cases = {
      {"ok\r\nbad\nline\r\n.\r\n", DataError::kBareLf},
      {"ok\r\nbad\rline\r\n.\r\n", DataError::kBareCr},
      {"ok\r\n" + std::string(1200, 'z') + "\r\n.\r\n", DataError::kLineTooLong},
      {"ok\r\n" + std::string(900, 'z') + "\r\n" + std::string(900, 'z') + "\r\n.\r\n",
       DataError::kTooBig},
  };
  for (const auto& [raw, error] : cases) {
    auto msgs = readEverySplit(raw, Options().withMaxSize(1000).withHeader(header));
    ASSERT_EQ(msgs.size(), 2u);
    EXPECT_EQ(errorName(msgs[0].error), errorName(error));
    EXPECT_EQ(msgs[0].out, header);
    EXPECT_EQ(msgs[0].end_at, raw.size());
  }
  auto good = readEverySplit("body\r\n.\r\n", Options().withHeader(header));
  ASSERT_EQ(good.size(), 2u);
  EXPECT_EQ(good[0].out, header + "body\r\n");
  EXPECT_EQ(good[0].size, 6u);  // the header is not counted
}

TEST(DataReader, NothingIsStoredAfterAnError) {
  // The error is final even if later lines are fine; they are not appended.
  const std::string raw = "x\nlater\r\nlines\r\n.\r\n";
  auto msgs = readEverySplit(raw, Options().withHeader("H\r\n"));
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].out, "H\r\n");
  EXPECT_EQ(errorName(msgs[0].error), "kBareLf");
}

TEST(DataReader, ResetClearsTheError) {
  const std::string raw = "bad\n.\r\n\r\n.\r\ngood\r\n.\r\n";
  auto msgs = readEverySplit(raw);
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(errorName(msgs[0].error), "kBareLf");
  EXPECT_EQ(errorName(msgs[1].error), "kNone");
  EXPECT_EQ(msgs[1].out, "good\r\n");
}

TEST(DataReader, OutMovedAwayMidMessage) {
  // A session spills what the reader stored to a file (limits.message_memory) and calls
  // outMoved(): the reader goes on as if nothing happened, and an error after it leaves
  // the buffer empty rather than cut back to where the message began.
  DataReader reader(kMaxLine, kMaxSize, BareLineEnding::kReject);
  MessageBody out;
  out.adopt("H\r\n");
  reader.reset(out);
  std::string spilled;
  const std::vector<std::string> lines = {"one", "..two", "three", "."};
  bool ended = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    ended = reader.feed(Line{lines[i], true, false, {}}, out);
    if (i == 1) {
      spilled += out.str();
      out.clear();
      reader.outMoved();
    }
  }
  EXPECT_TRUE(ended);
  EXPECT_EQ(reader.error(), DataError::kNone);
  EXPECT_EQ(spilled + out.str(), "H\r\none\r\n.two\r\nthree\r\n");
  EXPECT_EQ(reader.size(), std::string("one\r\n.two\r\nthree\r\n").size());

  out.clear();
  out.adopt("H\r\n");
  reader.reset(out);
  reader.feed(Line{"fine", true, false, {}}, out);
  out.clear();
  reader.outMoved();
  reader.feed(Line{"more", true, false, {}}, out);
  reader.feed(Line{"bare", false, false, {}}, out);
  EXPECT_EQ(reader.error(), DataError::kBareLf);
  EXPECT_EQ(out.str(), "");
}

TEST(DataReader, SmallInputBufferCapacities) {
  // The tightest buffer (capacity == splitter bound) and a roomy one must agree.
  const std::string raw = std::string(990, 'a') + "\r\n" + std::string(400, 'b') + "\n" +
                          std::string(1500, 'c') + "\r\n.\r\n";
  for (auto mode : {BareLineEnding::kReject, BareLineEnding::kNormalise}) {
    Options tight = Options().withMode(mode);
    Options roomy = Options().withMode(mode).withCapacity(65536);
    std::vector<size_t> cuts;
    for (size_t i = 7; i < raw.size(); i += 7) cuts.push_back(i);
    auto a = readAll(raw, tight, cuts);
    auto b = readAll(raw, roomy, {});
    EXPECT_EQ(a, b);
    ASSERT_EQ(a.size(), 2u);
    EXPECT_EQ(a[0].end_at, raw.size());
    // Reject stops at the bare LF; normalise gets as far as the 1500-octet line.
    EXPECT_EQ(errorName(a[0].error), mode == BareLineEnding::kReject ? "kBareLf" : "kLineTooLong");
  }
}

// ---- BDAT (RFC 3030): feedChunk / finishChunks -----------------------------------------

struct ChunkResult {
  std::string out;
  DataError error = DataError::kNone;
  size_t size = 0;
  size_t received = 0;

  bool operator==(const ChunkResult&) const = default;
};

void PrintTo(const ChunkResult& r, std::ostream* os) {
  *os << "{out=\"" << visible(r.out) << "\" error=" << errorName(r.error) << " size=" << r.size
      << " received=" << r.received << "}";
}

// Feeds raw as chunks ending at `cuts`, then finishChunks().
ChunkResult chunks(std::string_view raw, const Options& o, const std::vector<size_t>& cuts) {
  DataReader reader(o.max_line, o.max_size, o.mode);
  ChunkResult r;
  MessageBody body;
  body.adopt(o.header);
  reader.reset(body);
  size_t from = 0;
  for (size_t cut : cuts) {
    reader.feedChunk(raw.substr(from, cut - from), body);
    from = cut;
  }
  reader.feedChunk(raw.substr(from), body);
  reader.finishChunks(body);
  r.out = body.str();
  r.error = reader.error();
  r.size = reader.size();
  r.received = reader.receivedCount();
  return r;
}

ChunkResult chunksEverySplit(std::string_view raw, const Options& o = {}) {
  ChunkResult whole = chunks(raw, o, {});
  std::vector<size_t> every;
  for (size_t i = 1; i < raw.size(); ++i) every.push_back(i);
  EXPECT_EQ(chunks(raw, o, every), whole) << "one byte per chunk: " << visible(raw);
  for (size_t i = 0; i <= raw.size(); ++i) {
    EXPECT_EQ(chunks(raw, o, {i}), whole) << "split at " << i << ": " << visible(raw);
  }
  return whole;
}

TEST(DataReaderChunks, ContentIsStoredVerbatim) {
  // No dot-stuffing and no end marker in BDAT: ".\r\n" is content.
  const std::string raw = "a\r\n.\r\n..b\r\n";
  for (auto mode : {BareLineEnding::kReject, BareLineEnding::kNormalise}) {
    auto r = chunksEverySplit(raw, Options().withMode(mode));
    EXPECT_EQ(errorName(r.error), "kNone");
    EXPECT_EQ(r.out, raw);
    EXPECT_EQ(r.size, raw.size());
  }
}

TEST(DataReaderChunks, CountsReceivedFieldsOfTheHeaderSection) {
  auto r = chunksEverySplit(kHopsMessage);
  EXPECT_EQ(r.received, 3u);
}

TEST(DataReaderChunks, BareLineEndsRejected) {
  const std::vector<std::pair<std::string, DataError>> cases = {
      {"a\nb\r\n", DataError::kBareLf}, {"a\rb\r\n", DataError::kBareCr},
      {"a\r\n.\n", DataError::kBareLf}, {"a\r\r\n", DataError::kBareCr},
      {"a\r\n.\r", DataError::kBareCr},  // trailing CR settled by finishChunks
      {"\n", DataError::kBareLf},       {"\r", DataError::kBareCr},
  };
  for (const auto& [raw, error] : cases) {
    auto r = chunksEverySplit(raw, Options().withMode(BareLineEnding::kReject).withHeader("H\r\n"));
    EXPECT_EQ(errorName(r.error), errorName(error)) << visible(raw);
    EXPECT_EQ(r.out, "H\r\n") << visible(raw);
  }
}

TEST(DataReaderChunks, BareLineEndsNormalised) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"a\nb\r\n", "a\r\nb\r\n"}, {"a\rb\r\n", "a\r\nb\r\n"},         {"a\r\r\n", "a\r\n\r\n"},
      {"a\r\n.\r", "a\r\n.\r\n"}, {"\n\r\r\n\n", "\r\n\r\n\r\n\r\n"}, {"x\r", "x\r\n"},
  };
  for (const auto& [raw, expected] : cases) {
    auto r = chunksEverySplit(raw, Options().withMode(BareLineEnding::kNormalise));
    EXPECT_EQ(errorName(r.error), "kNone") << visible(raw);
    EXPECT_EQ(visible(r.out), visible(expected)) << visible(raw);
    EXPECT_FALSE(hasBareCrOrLf(r.out)) << visible(raw);
    EXPECT_EQ(r.size, r.out.size()) << visible(raw);
  }
}

TEST(DataReaderChunks, LineLimit) {
  const std::string ok(998, 'x');
  auto a = chunksEverySplit(ok + "\r\n" + ok + "\r\n");
  EXPECT_EQ(errorName(a.error), "kNone");
  EXPECT_EQ(a.out, ok + "\r\n" + ok + "\r\n");

  // A dot is content in BDAT: it counts towards the line.
  auto b = chunksEverySplit("." + ok + "\r\n");
  EXPECT_EQ(errorName(b.error), "kLineTooLong");
  EXPECT_EQ(b.out, "");

  // Unterminated last line: still bounded.
  auto c = chunksEverySplit(std::string(999, 'x'));
  EXPECT_EQ(errorName(c.error), "kLineTooLong");
}

TEST(DataReaderChunks, SizeLimit) {
  auto fits = chunksEverySplit("abcd\r\nef\r\n", Options().withMaxSize(10));
  EXPECT_EQ(errorName(fits.error), "kNone");
  auto over = chunksEverySplit("abcd\r\nefg\r\n", Options().withMaxSize(10).withHeader("H"));
  EXPECT_EQ(errorName(over.error), "kTooBig");
  EXPECT_EQ(over.out, "H");
}

}  // namespace
}  // namespace postern
