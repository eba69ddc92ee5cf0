#include "bench/load_message.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <utility>

#include "core/smtp_command.h"

namespace postern {
namespace {

constexpr size_t kMaxText = 76;  // octets of text per body line; 78 with CRLF
constexpr size_t kMinLines = 8;  // enough for every kind of line below to appear
constexpr std::string_view kTagName = "X-Postern-Load:";
// Three copies of a 64-character alphabet, so any 76-octet slice starting in the first
// copy is contiguous.
constexpr std::string_view kFill =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void appendNumber(std::string& out, uint64_t v, int base = 10) {
  char buf[24];
  auto res = std::to_chars(buf, buf + sizeof buf, v, base);
  out.append(buf, res.ptr);
}

std::string_view domainPart(std::string_view addr) {
  size_t at = addr.rfind('@');
  return at == std::string_view::npos ? std::string_view("localhost") : addr.substr(at + 1);
}

}  // namespace

MessageBuilder::MessageBuilder(MessageSpec spec) : spec_(std::move(spec)) {
  for (int j = 0; j < spec_.recipients; ++j) {
    rcpts_.push_back("rcpt" + std::to_string(j) + "@" + spec_.to_domain);
  }
  to_header_ = "To: ";
  for (size_t j = 0; j < rcpts_.size(); ++j) {
    if (j > 0) to_header_ += ",\r\n ";  // folded: one recipient per line stays under 78
    to_header_ += rcpts_[j];
  }
  to_header_ += "\r\n";
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  id_suffix_ = ".";
  appendNumber(id_suffix_, static_cast<uint64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec, 36);
  id_suffix_ += "@";
  id_suffix_ += domainPart(spec_.from);
  id_suffix_ += ">\r\n";
}

const std::string& MessageBuilder::dateHeader(int64_t ts_ns) {
  int64_t sec = ts_ns / 1000000000;
  if (sec != date_sec_) {
    date_sec_ = sec;
    time_t t = static_cast<time_t>(sec);
    tm parts{};
    gmtime_r(&t, &parts);
    char buf[64];
    size_t n = std::strftime(buf, sizeof buf, "Date: %a, %d %b %Y %H:%M:%S +0000\r\n", &parts);
    date_.assign(buf, n);
  }
  return date_;
}

void MessageBuilder::build(uint64_t seq, int64_t ts_ns, std::string& wire) {
  size_t start = wire.size();
  wire += "From: <";
  wire += spec_.from;
  wire += ">\r\n";
  wire += to_header_;
  wire += "Subject: postern-load ";
  appendNumber(wire, seq);
  wire += "\r\n";
  wire += dateHeader(ts_ns);
  wire += "Message-ID: <";
  appendNumber(wire, seq);
  wire += id_suffix_;
  wire += "X-Postern-Load: seq=";
  appendNumber(wire, seq);
  wire += " sum=";
  size_t sum_at = wire.size();
  wire += "0000000000000000 ts=";  // patched once the body has been hashed
  appendNumber(wire, static_cast<uint64_t>(ts_ns));
  wire += "\r\n\r\n";

  size_t header_len = wire.size() - start;
  size_t target = spec_.size > header_len ? spec_.size - header_len : 0;
  uint64_t sum = appendBody(seq, target, wire);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(sum));
  wire.replace(sum_at, 16, hex, 16);
  wire += ".\r\n";
}

// Appends about target unstuffed octets of body (at least kMinLines lines), dot-stuffed,
// and returns their checksum. Lines differ per message so that bodies swapped or spliced
// between messages are caught, not only damaged ones.
uint64_t MessageBuilder::appendBody(uint64_t seq, size_t target, std::string& wire) const {
  uint64_t sum = kFnvOffset;
  size_t done = 0;
  std::string line;
  line.reserve(kMaxText + 2);
  for (size_t i = 0; i < kMinLines || done < target; ++i) {
    line.clear();
    bool numbered = true;
    if (i % 8 == 3) {
      line = ".leading dot ";  // stuffed on the wire as "..leading dot"
    } else if (i % 8 == 6) {
      line = ".";  // a lone dot: it would end DATA if it were not stuffed
      numbered = false;
    } else if (i % 16 == 7) {
      numbered = false;  // an empty line inside the body, not the end of the headers
    } else if (i % 16 == 15) {
      line = "..";
      numbered = false;
    }
    if (numbered) {
      appendNumber(line, seq, 16);
      line += ':';
      appendNumber(line, i);
      line += ' ';
      size_t left = target > done + line.size() + 2 ? target - done - line.size() - 2 : 0;
      size_t fill = std::min(kMaxText - line.size(), left);
      size_t offset = (seq * 7 + i * 13) % 64;
      line.append(kFill.substr(offset, fill));
    }
    line += "\r\n";
    sum = fnv1a64(line, sum);
    done += line.size();
    if (line.front() == '.') wire += '.';
    wire += line;
  }
  return sum;
}

bool parseLoadTag(std::string_view value, LoadTag& out) {
  bool have_seq = false, have_sum = false, have_ts = false;
  while (!value.empty()) {
    size_t sp = value.find(' ');
    std::string_view tok = value.substr(0, sp);
    value = sp == std::string_view::npos ? std::string_view() : value.substr(sp + 1);
    if (tok.empty()) continue;
    size_t eq = tok.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = tok.substr(0, eq);
    std::string_view val = tok.substr(eq + 1);
    const char* end = val.data() + val.size();
    if (key == "seq") {
      have_seq = std::from_chars(val.data(), end, out.seq).ptr == end && !val.empty();
    } else if (key == "sum") {
      have_sum = std::from_chars(val.data(), end, out.sum, 16).ptr == end && !val.empty();
    } else if (key == "ts") {
      have_ts = std::from_chars(val.data(), end, out.ts_ns).ptr == end && !val.empty();
    }
  }
  return have_seq && have_sum && have_ts;
}

void MessageVerifier::reset() { *this = MessageVerifier(); }

void MessageVerifier::addLine(std::string_view text, bool crlf) {
  if (!in_headers_) {
    sum_ = fnv1a64(text, sum_);
    sum_ = fnv1a64(crlf ? std::string_view("\r\n") : std::string_view("\n"), sum_);
    return;
  }
  if (text.empty()) {
    in_headers_ = false;
    return;
  }
  if (!tagged_ && text.size() >= kTagName.size() &&
      equalsIgnoreCase(text.substr(0, kTagName.size()), kTagName)) {
    std::string_view value = text.substr(kTagName.size());
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
      value.remove_prefix(1);
    }
    tagged_ = parseLoadTag(value, tag_);
  }
}

}  // namespace postern
