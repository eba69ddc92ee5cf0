// Micro-benchmarks of the receive path: LineSplitter::next over realistic DATA content and
// DataReader (LineSplitter + unstuffing + append) over whole messages, each against a
// baseline doing the least work over the same bytes (a memchr loop, a memcpy); and of its
// outbound mirror, DotStuffer, against the line-by-line scan it replaced.
//
// The "in place" benchmarks put the bytes in the InputBuffer once and, per iteration, only
// commit them again: after the splitter has consumed everything, writable() resets the
// indices without touching the bytes, exactly as read_cb commits what libuv wrote. So the
// measured work is the parser's alone. BM_LineSplitterRefill16K is the session's real
// shape instead: a 16 KiB buffer refilled with memcpy from whatever writable() offers.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <string_view>

#include "core/assert.h"
#include "core/data_reader.h"
#include "core/dot_stuffer.h"
#include "core/input_buffer.h"
#include "core/line_splitter.h"

namespace postern {
namespace {

constexpr size_t kDataLine = 1000;            // Limits::data_line default (998 + CRLF)
constexpr size_t kSessionBuffer = 16 * 1024;  // relay/session.cc bufferSize() with defaults
constexpr size_t kSplitCorpus = 64 * 1024;    // bytes split per iteration

// clang-format off
constexpr std::string_view kWords[] = {
    "the",     "relay",   "message", "delivery", "queue",   "of",      "and",   "to",
    "a",       "in",      "for",     "is",       "on",      "that",    "by",    "this",
    "with",    "you",     "it",      "not",      "or",      "be",      "are",   "from",
    "at",      "as",      "your",    "all",      "have",    "new",     "more", "an",
    "was",     "we",      "will",    "home",     "can",     "us",      "about", "if",
    "invoice", "meeting", "Monday",  "report",   "attached", "regards", "thanks", "please",
    "0.25",    "2024",    "=C3=A9",  "https://example.com/track?id=8812", "--",  "Q3"};
// clang-format on

constexpr std::string_view kHeaders[] = {
    "Received: from mail-ed1-f54.google.com (mail-ed1-f54.google.com [209.85.208.54]) by ",
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=20230601; ",
    "From: \"John Doe\" <john.doe+newsletter@example.org>",
    "To: alice@example.com, bob.smith@sub.example.net",
    "Subject: Re: Quarterly report and the meeting on Monday",
    "Date: Tue, 14 May 2024 09:21:07 +0200",
    "Message-ID: <CAF=9x7Q2b+0Yh3w@mail.example.org>",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=\"UTF-8\"",
    "Content-Transfer-Encoding: quoted-printable",
};

// Appends one line of exactly `len` octets including CRLF: header-like while headers
// remain, then words; a stuffed line ("..") when `stuffed`.
void appendLine(std::string& out, size_t len, std::mt19937& rng, size_t& header, bool stuffed) {
  size_t text = len - 2;
  std::string line;
  if (stuffed) line = "..";
  if (header < std::size(kHeaders)) line += kHeaders[header++];
  while (line.size() < text) {
    if (!line.empty() && line.back() != ' ') line += ' ';
    line += kWords[rng() % std::size(kWords)];
  }
  line.resize(text);
  if (!line.empty() && line.back() == ' ') line.back() = 'x';
  out += line;
  out += "\r\n";
}

// DATA content of exactly `bytes` octets, lines of 20–120 octets (CRLF included), one line
// in 40 dot-stuffed when `stuff` (the 13th, 53rd, ...: a 1 KiB message has one). `terminator`
// appends the final ".\r\n" (within the size).
std::string makeData(size_t bytes, uint32_t seed, bool stuff, bool terminator) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> len_dist(20, 120);
  std::string out;
  out.reserve(bytes);
  size_t header = 0;
  size_t line_no = 0;
  const size_t body = bytes - (terminator ? 3 : 0);
  while (out.size() < body) {
    size_t left = body - out.size();
    size_t len = len_dist(rng);
    if (left <= 120) {
      len = left;  // the last line takes what is left (at least 3 octets: see below)
    } else if (left - len < 20) {
      len = left - 20;
    }
    POSTERN_ASSERT(len >= 3);
    appendLine(out, len, rng, header, stuff && len >= 6 && line_no++ % 40 == 12);
  }
  if (terminator) out += ".\r\n";
  POSTERN_ASSERT(out.size() == bytes);
  return out;
}

size_t countLf(std::string_view s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

// An InputBuffer holding `bytes` at its front; rearm() commits them again once they have
// all been consumed, without copying (the bytes stay where the first copy put them).
class PrimedBuffer {
 public:
  PrimedBuffer(std::string_view bytes, size_t capacity)
      : buf_(std::max(capacity, bytes.size())), size_(bytes.size()) {
    std::span<char> w = buf_.writable();
    base_ = w.data();
    std::memcpy(w.data(), bytes.data(), bytes.size());
    buf_.commit(bytes.size());
    buf_.consume(bytes.size());
  }
  InputBuffer& rearm() {
    POSTERN_ASSERT(buf_.size() == 0);
    std::span<char> w = buf_.writable();
    POSTERN_ASSERT(w.data() == base_);
    buf_.commit(size_);
    return buf_;
  }

 private:
  InputBuffer buf_;
  size_t size_;
  const char* base_ = nullptr;
};

// ---- LineSplitter ------------------------------------------------------------------------

void BM_LineSplitter(benchmark::State& state) {
  const std::string data = makeData(kSplitCorpus, 1, false, false);
  const size_t lines = countLf(data);
  PrimedBuffer primed(data, data.size());
  LineSplitter splitter(kDataLine + 1);
  for (auto _ : state) {
    InputBuffer& buf = primed.rearm();
    Line line;
    size_t n = 0;
    while (splitter.next(buf, line)) {
      benchmark::DoNotOptimize(line);
      ++n;
    }
    if (n != lines) state.SkipWithError("wrong line count");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * data.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * lines));
}
BENCHMARK(BM_LineSplitter);

// Baseline: the least a splitter must do, memchr for each LF over the same bytes.
void BM_LineSplitter_MemchrBaseline(benchmark::State& state) {
  const std::string data = makeData(kSplitCorpus, 1, false, false);
  const size_t lines = countLf(data);
  for (auto _ : state) {
    const char* p = data.data();
    const char* end = p + data.size();
    size_t n = 0;
    while (p < end) {
      const char* lf = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      if (lf == nullptr) break;
      benchmark::DoNotOptimize(lf);
      p = lf + 1;
      ++n;
    }
    if (n != lines) state.SkipWithError("wrong line count");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * data.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * lines));
}
BENCHMARK(BM_LineSplitter_MemchrBaseline);

// The session's shape: a 16 KiB InputBuffer, refilled by memcpy (standing in for the
// kernel's copy in uv_read) with as much as writable() offers, partial lines compacted.
void BM_LineSplitterRefill16K(benchmark::State& state) {
  const std::string data = makeData(kSplitCorpus, 1, false, false);
  const size_t lines = countLf(data);
  InputBuffer buf(kSessionBuffer);
  LineSplitter splitter(kDataLine + 1);
  for (auto _ : state) {
    size_t off = 0;
    size_t n = 0;
    Line line;
    while (off < data.size()) {
      std::span<char> w = buf.writable();
      size_t k = std::min(w.size(), data.size() - off);
      std::memcpy(w.data(), data.data() + off, k);
      buf.commit(k);
      off += k;
      while (splitter.next(buf, line)) {
        benchmark::DoNotOptimize(line);
        ++n;
      }
    }
    if (n != lines || buf.size() != 0) state.SkipWithError("wrong line count");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * data.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * lines));
}
BENCHMARK(BM_LineSplitterRefill16K);

// Baseline for the refill shape: memcpy 16 KiB chunks into a buffer, memchr each LF.
void BM_LineSplitterRefill16K_Baseline(benchmark::State& state) {
  const std::string data = makeData(kSplitCorpus, 1, false, false);
  const size_t lines = countLf(data);
  std::string chunk(kSessionBuffer, '\0');
  for (auto _ : state) {
    size_t n = 0;
    for (size_t off = 0; off < data.size(); off += kSessionBuffer) {
      size_t k = std::min(kSessionBuffer, data.size() - off);
      std::memcpy(chunk.data(), data.data() + off, k);
      benchmark::ClobberMemory();
      const char* p = chunk.data();
      const char* end = p + k;
      while (p < end) {
        const char* lf =
            static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
        if (lf == nullptr) break;
        benchmark::DoNotOptimize(lf);
        p = lf + 1;
        ++n;
      }
    }
    if (n != lines) state.SkipWithError("wrong line count");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * data.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * lines));
}
BENCHMARK(BM_LineSplitterRefill16K_Baseline);

// ---- DataReader --------------------------------------------------------------------------

// A whole DATA transfer of range(0) octets (dot-stuffed lines, ".\r\n" at the end) through
// LineSplitter + DataReader into a MessageBody: views pinned in the read buffer, as a
// session reads DATA (the body is let go before the buffer is refilled).
void BM_DataReader(benchmark::State& state) {
  const auto size = static_cast<size_t>(state.range(0));
  const std::string msg = makeData(size, 2, true, true);
  DataReader reader(kDataLine, 25 * 1024 * 1024, BareLineEnding::kReject);
  LineSplitter splitter(reader.splitterBound());
  PrimedBuffer primed(msg, kSessionBuffer);
  MessageBody out;
  size_t pieces = 0;
  for (auto _ : state) {
    out.clear();
    InputBuffer& buf = primed.rearm();
    out.setSource(&buf);
    reader.reset(out);
    bool done = false;
    Line line;
    while (splitter.next(buf, line)) {
      if (reader.feed(line, out)) {
        done = true;
        break;
      }
    }
    pieces = out.pieces().size();
    benchmark::DoNotOptimize(out.pieces().data());
    benchmark::ClobberMemory();
    if (!done || reader.error() != DataError::kNone || buf.size() != 0) {
      state.SkipWithError("message not read whole");
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * msg.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["lines"] = static_cast<double>(countLf(msg));
  state.counters["stuffed"] = static_cast<double>(msg.size() - out.size() - 3);
  state.counters["pieces"] = static_cast<double>(pieces);  // iovecs the spool would write
}
BENCHMARK(BM_DataReader)->Arg(1024)->Arg(100 * 1024);

// Outbound: a 100 KB body (unstuffed, as spooled) dot-stuffed into views in the 64 KiB
// pieces BodyReader reads (queue/body_reader.h), against the line-by-line scan it replaced
// (BM_DotStuffPerLine, the same views). range(1): 0 text (dots mid-line, one line in 40
// starting with one), 1 base64 lines (no dot).
std::string stuffCorpus(size_t size, bool base64) {
  if (!base64) {
    std::string text = makeData(size, 3, true, false);
    std::string out;  // unstuffed: ".." at a line start back to "."
    for (size_t pos = 0; pos < text.size();) {
      size_t end = text.find('\n', pos);
      end = end == std::string::npos ? text.size() : end + 1;
      size_t skip = text.compare(pos, 2, "..") == 0 ? 1 : 0;
      out.append(text, pos + skip, end - pos - skip);
      pos = end;
    }
    return out;
  }
  constexpr std::string_view kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  while (out.size() < size) {
    for (size_t i = 0; i < 76; ++i) out += kB64[(out.size() * 7 + i) % kB64.size()];
    out += "\r\n";
  }
  return out;
}

constexpr size_t kBodyPiece = 64 * 1024;  // BodyReader::kPiece

void BM_DotStuffer(benchmark::State& state) {
  const std::string body = stuffCorpus(static_cast<size_t>(state.range(0)), state.range(1) != 0);
  std::vector<std::string_view> views;
  for (auto _ : state) {
    DotStuffer stuffer;
    views.clear();
    for (size_t pos = 0; pos < body.size(); pos += kBodyPiece) {
      stuffer.stuff(std::string_view(body).substr(pos, kBodyPiece), views);
    }
    stuffer.finish(views);
    benchmark::DoNotOptimize(views.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
  state.counters["views"] = static_cast<double>(views.size());
}
BENCHMARK(BM_DotStuffer)->Args({100 * 1024, 0})->Args({100 * 1024, 1});

// Baseline for BM_DotStuffer: the scan from line end to line end (one memchr per line).
void BM_DotStuffPerLine(benchmark::State& state) {
  const std::string body = stuffCorpus(static_cast<size_t>(state.range(0)), state.range(1) != 0);
  std::vector<std::string_view> views;
  for (auto _ : state) {
    views.clear();
    bool at_line_start = true;
    for (size_t off = 0; off < body.size(); off += kBodyPiece) {
      std::string_view piece = std::string_view(body).substr(off, kBodyPiece);
      size_t start = 0, pos = 0;
      while (pos < piece.size()) {
        if (at_line_start && piece[pos] == '.') {
          if (pos > start) views.push_back(piece.substr(start, pos - start));
          views.push_back(".");
          start = pos;
        }
        const size_t lf = piece.find('\n', pos);
        if (lf == std::string_view::npos) {
          at_line_start = false;
          break;
        }
        pos = lf + 1;
        at_line_start = true;
      }
      if (start < piece.size()) views.push_back(piece.substr(start));
    }
    views.push_back(".\r\n");
    benchmark::DoNotOptimize(views.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
  state.counters["views"] = static_cast<double>(views.size());
}
BENCHMARK(BM_DotStuffPerLine)->Args({100 * 1024, 0})->Args({100 * 1024, 1});

// Baseline (for BM_DataReader and BM_Crc32c): memcpy of the same number of octets.
void BM_Memcpy(benchmark::State& state) {
  const auto size = static_cast<size_t>(state.range(0));
  const std::string src = makeData(size, 2, true, true);
  std::string dst(size, '\0');
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), size);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_Memcpy)->Arg(1024)->Arg(100 * 1024);

}  // namespace

// Shared with micro_record.cc: a message body of exactly `bytes` octets (no terminator).
std::string microBenchBody(size_t bytes) { return makeData(bytes, 3, false, false); }

}  // namespace postern
