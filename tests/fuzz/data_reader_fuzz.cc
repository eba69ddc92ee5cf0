// libFuzzer target for core/data_reader.* (with core/line_splitter.* and core/input_buffer.*
// in front of it, as a session uses them).
//
// Input layout: byte 0 picks DATA or BDAT and the bare-line-ending mode, byte 1 the line
// limit, byte 2 the size limit, byte 3 the InputBuffer slack, byte 4 (low 3 bits) how many
// read lengths follow; then those read lengths (0: all the rest), cycled to cut the
// stream into reads or chunks; then the stream itself.
//
// DATA: after each end of data the reader is reset for a new message, as for the next
// DATA command. Traps when: an end is reported anywhere but right after the first
// CRLF "." CRLF of the message (counting the CRLF that ended the DATA command); stored
// content without an error holds a bare CR or bare LF; the content exceeds the size
// limit; or the result differs from a whole-stream reference model (so splitting the
// stream into reads can never change the outcome). BDAT: the content without an error
// is the stream with every bare CR / bare LF made CRLF (and in reject mode is the stream
// itself); an error is always justified by the stream; the content before reset() is
// kept.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/data_reader.h"
#include "core/input_buffer.h"
#include "core/line_splitter.h"
#include "tests/fuzz/fuzz_check.h"

namespace postern {
namespace {

constexpr std::string_view kHeader = "Received: by fuzz\r\n";
constexpr size_t kMaxLines[8] = {2, 3, 4, 5, 9, 16, 80, 1000};
constexpr size_t kMaxSizes[4] = {0, 10, 100, 1 << 20};
constexpr size_t kSlack[4] = {0, 1, 7, 4096};

bool hasBareCr(std::string_view s) {  // a CR not followed by LF, also at the very end
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n')) return true;
  }
  return false;
}

bool hasBareLf(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return true;
  }
  return false;
}

bool hasBareCrOrLf(std::string_view s) { return hasBareCr(s) || hasBareLf(s); }

struct Message {
  bool ended = false;
  size_t end_at = 0;  // stream offset just past the end-of-data line
  std::string content;
  DataError error = DataError::kNone;
};

// The DATA rules applied to the whole stream at once, line by line, without InputBuffer
// or LineSplitter: what any way of cutting the stream into reads must give.
std::vector<Message> modelData(std::string_view raw, size_t max_line, size_t max_size,
                               BareLineEnding mode) {
  const size_t bound = max_line + 1;
  std::vector<Message> msgs(1);
  bool prev_crlf = true;
  size_t size = 0;
  size_t pos = 0;
  for (;;) {
    size_t lf = raw.find('\n', pos);
    if (lf == std::string_view::npos) break;
    std::string_view text = raw.substr(pos, lf - pos);
    const bool crlf = !text.empty() && text.back() == '\r';
    if (crlf) text.remove_suffix(1);
    const bool too_long = lf + 1 - pos > bound;
    pos = lf + 1;
    const bool was_crlf = prev_crlf;
    prev_crlf = crlf;
    Message& m = msgs.back();
    if (crlf && was_crlf && !too_long && text == ".") {
      m.ended = true;
      m.end_at = pos;
      msgs.emplace_back();
      size = 0;
      continue;
    }
    auto fail = [&](DataError e) {
      if (m.error != DataError::kNone) return;
      m.error = e;
      m.content.clear();
    };
    auto add = [&](std::string_view t) {
      if (m.error != DataError::kNone) return;
      if (t.size() + 2 > max_line) return fail(DataError::kLineTooLong);
      size += t.size() + 2;
      if (size > max_size) return fail(DataError::kTooBig);
      m.content.append(t);
      m.content.append("\r\n");
    };
    if (m.error != DataError::kNone) continue;
    if (too_long) {
      fail(DataError::kLineTooLong);
      continue;
    }
    const bool has_cr = text.find('\r') != std::string_view::npos;
    if (mode == BareLineEnding::kReject) {
      if (!crlf) {
        fail(DataError::kBareLf);
      } else if (has_cr) {
        fail(DataError::kBareCr);
      } else {
        if (!text.empty() && text.front() == '.') text.remove_prefix(1);
        add(text);
      }
      continue;
    }
    if (!text.empty() && text.front() == '.') text.remove_prefix(1);
    for (size_t cr; (cr = text.find('\r')) != std::string_view::npos;) {
      add(text.substr(0, cr));
      text.remove_prefix(cr + 1);
    }
    add(text);
  }
  return msgs;
}

class Cutter {
 public:
  explicit Cutter(std::vector<size_t> lengths) : lengths_(std::move(lengths)) {}
  // Length of the next read, at most left.
  size_t next(size_t left) {
    if (lengths_.empty()) return left;
    size_t n = lengths_[i_++ % lengths_.size()];
    return n == 0 ? left : std::min(n, left);
  }

 private:
  std::vector<size_t> lengths_;
  size_t i_ = 0;
};

void fuzzData(std::string_view raw, size_t max_line, size_t max_size, BareLineEnding mode,
              size_t slack, Cutter cutter) {
  DataReader reader(max_line, max_size, mode);
  InputBuffer buf(reader.splitterBound() + slack);
  LineSplitter splitter(reader.splitterBound());

  std::vector<Message> got(1);
  // The content is pinned in buf (zero-copy, as in a session): a buffer reused while
  // pinned would show as content that differs from the model.
  MessageBody body;
  body.setSource(&buf);
  body.adopt(std::string(kHeader));
  reader.reset(body);
  std::string out = body.str();
  // Offset of the CRLF that precedes the message: the DATA command's, then the end line's.
  size_t msg_start = 0;
  const std::string framed = "\r\n" + std::string(raw);  // framed[i + 2] == raw[i]

  size_t fed = 0;
  while (fed < raw.size()) {
    auto w = buf.writable();
    FUZZ_CHECK(!w.empty());  // the splitter must always leave room to make progress
    size_t n = std::min(w.size(), cutter.next(raw.size() - fed));
    std::memcpy(w.data(), raw.data() + fed, n);
    buf.commit(n);
    fed += n;
    Line line;
    while (splitter.next(buf, line)) {
      const bool end = reader.feed(line, body);
      out = body.str();
      FUZZ_CHECK(body.size() == out.size());
      FUZZ_CHECK(out.size() >= kHeader.size() && out.compare(0, kHeader.size(), kHeader) == 0);
      FUZZ_CHECK(out.size() - kHeader.size() <= max_size);
      if (reader.error() == DataError::kNone)
        FUZZ_CHECK(reader.size() == out.size() - kHeader.size());
      if (!end) continue;

      const size_t end_at = fed - buf.size();
      // The end is the first CRLF "." CRLF of this message, and nothing else.
      FUZZ_CHECK(end_at >= msg_start + 3);
      FUZZ_CHECK(framed.find("\r\n.\r\n", msg_start) + 5 == end_at + 2);
      if (reader.error() == DataError::kNone) {
        FUZZ_CHECK(!hasBareCrOrLf(std::string_view(out).substr(kHeader.size())));
      } else {
        FUZZ_CHECK(out == kHeader);
      }
      got.back().ended = true;
      got.back().end_at = end_at;
      got.back().content = out.substr(kHeader.size());
      got.back().error = reader.error();
      got.emplace_back();
      msg_start = end_at;
      body.clear();
      body.adopt(std::string(kHeader));
      reader.reset(body);
      out = body.str();
    }
  }
  got.back().content = out.substr(kHeader.size());
  got.back().error = reader.error();
  if (reader.error() == DataError::kNone) FUZZ_CHECK(!hasBareCrOrLf(got.back().content));

  const std::vector<Message> want = modelData(raw, max_line, max_size, mode);
  FUZZ_CHECK(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    FUZZ_CHECK(got[i].ended == want[i].ended);
    FUZZ_CHECK(got[i].end_at == want[i].end_at);
    FUZZ_CHECK(got[i].error == want[i].error);
    FUZZ_CHECK(got[i].content == want[i].content);
  }
}

// Every bare CR and bare LF made CRLF; a CR at the very end counts as bare.
std::string normalise(std::string_view raw) {
  std::string s;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\r') {
      s += "\r\n";
      if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
    } else if (raw[i] == '\n') {
      s += "\r\n";
    } else {
      s += raw[i];
    }
  }
  return s;
}

size_t longestLine(std::string_view s) {  // octets before CRLF; the last line may lack it
  size_t longest = 0;
  size_t pos = 0;
  for (;;) {
    size_t eol = s.find("\r\n", pos);
    size_t len = (eol == std::string_view::npos ? s.size() : eol) - pos;
    longest = std::max(longest, len);
    if (eol == std::string_view::npos) return longest;
    pos = eol + 2;
  }
}

void fuzzChunks(std::string_view raw, size_t max_line, size_t max_size, BareLineEnding mode,
                Cutter cutter) {
  DataReader reader(max_line, max_size, mode);
  MessageBody body;
  body.adopt(std::string(kHeader));
  reader.reset(body);
  size_t fed = 0;
  do {  // at least one chunk, possibly empty
    size_t n = cutter.next(raw.size() - fed);
    reader.feedChunk(raw.substr(fed, n), body);
    fed += n;
    FUZZ_CHECK(body.size() - kHeader.size() <= max_size);
  } while (fed < raw.size());
  reader.finishChunks(body);
  const std::string out = body.str();

  const std::string norm = normalise(raw);
  const bool bare_lf = hasBareLf(raw);
  const bool bare_cr = hasBareCr(raw);
  const bool too_big = norm.size() > max_size;
  const bool too_long = longestLine(norm) + 2 > max_line;
  const bool reject = mode == BareLineEnding::kReject;
  const bool ok = !(reject && (bare_lf || bare_cr)) && !too_big && !too_long;

  FUZZ_CHECK(out.compare(0, kHeader.size(), kHeader) == 0);
  switch (reader.error()) {
    case DataError::kNone:
      FUZZ_CHECK(ok);
      FUZZ_CHECK(std::string_view(out).substr(kHeader.size()) == norm);
      FUZZ_CHECK(reader.size() == norm.size());
      if (reject) FUZZ_CHECK(norm == raw);
      break;
    case DataError::kBareLf:
      FUZZ_CHECK(reject && bare_lf);
      break;
    case DataError::kBareCr:
      FUZZ_CHECK(reject && bare_cr);
      break;
    case DataError::kTooBig:
      FUZZ_CHECK(too_big);
      break;
    case DataError::kLineTooLong:
      FUZZ_CHECK(too_long);
      break;
  }
  if (reader.error() != DataError::kNone) FUZZ_CHECK(out == kHeader);
}

}  // namespace
}  // namespace postern

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace postern;
  if (size < 5) return 0;
  const bool bdat = data[0] & 1;
  const auto mode = (data[0] & 2) ? BareLineEnding::kNormalise : BareLineEnding::kReject;
  const size_t max_line = kMaxLines[data[1] & 7];
  const size_t max_size = kMaxSizes[data[2] & 3];
  const size_t slack = kSlack[data[3] & 3];
  const size_t n_lengths = std::min<size_t>(data[4] & 7, size - 5);
  std::vector<size_t> lengths(data + 5, data + 5 + n_lengths);
  const size_t skip = 5 + n_lengths;
  const std::string_view raw(reinterpret_cast<const char*>(data) + skip, size - skip);

  if (bdat) {
    fuzzChunks(raw, max_line, max_size, mode, Cutter(std::move(lengths)));
  } else {
    fuzzData(raw, max_line, max_size, mode, slack, Cutter(std::move(lengths)));
  }
  return 0;
}
