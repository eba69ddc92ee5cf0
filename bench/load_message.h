// The postern-load test message: how the source builds it and how the sink verifies it.
//
// Every message carries `X-Postern-Load: seq=<n> sum=<16 hex digits> ts=<ns>` where sum is
// FNV-1a 64 over the unstuffed body (every octet after the blank line that ends the
// header block, line terminators included) and ts is CLOCK_REALTIME when DATA started.
// The body is printable lines of at most 78 octets, several of them starting with "."
// (one is a lone "."), so the transport must dot-stuff and unstuff correctly or the sum
// breaks. The sink accepts any headers before or after the tag (a relay prepends
// Received:), so only the body and the tag itself must arrive unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace postern {

inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
inline constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

inline uint64_t fnv1a64(std::string_view data, uint64_t h = kFnvOffset) {
  for (char c : data) {
    h ^= static_cast<unsigned char>(c);
    h *= kFnvPrime;
  }
  return h;
}

struct MessageSpec {
  size_t size = 1024;  // approximate unstuffed size, headers included
  std::string from = "load@source.test";
  std::string to_domain = "sink.test";
  int recipients = 1;
};

class MessageBuilder {
 public:
  explicit MessageBuilder(MessageSpec spec);

  const std::vector<std::string>& recipients() const { return rcpts_; }
  const std::string& from() const { return spec_.from; }

  // Appends message seq as it goes on the wire after "354": dot-stuffed, CRLF lines, and
  // the terminating ".\r\n".
  void build(uint64_t seq, int64_t ts_ns, std::string& wire);

 private:
  const std::string& dateHeader(int64_t ts_ns);
  uint64_t appendBody(uint64_t seq, size_t target, std::string& wire) const;

  MessageSpec spec_;
  std::vector<std::string> rcpts_;
  std::string to_header_;  // "To: a,\r\n b\r\n"
  std::string id_suffix_;  // ".<run id>@<from domain>>"
  int64_t date_sec_ = -1;
  std::string date_;
};

// The value of an X-Postern-Load header.
struct LoadTag {
  uint64_t seq = 0;
  uint64_t sum = 0;
  int64_t ts_ns = 0;
};

// Parses "seq=N sum=HEX ts=N" (any order, all three required).
bool parseLoadTag(std::string_view value, LoadTag& out);

// Checks one received message, fed line by line after dot-unstuffing, without the final
// ".". Header lines are scanned for the tag; body lines are hashed as received, with the
// terminator they arrived with, so a changed line ending also counts as corruption.
class MessageVerifier {
 public:
  void reset();
  void addLine(std::string_view text, bool crlf);
  // Part of the message was lost (e.g. a line over the sink's bound was dropped).
  void markDamaged() { damaged_ = true; }

  bool tagged() const { return tagged_; }
  // Tag present, sum matches, nothing dropped.
  bool intact() const { return tagged_ && !damaged_ && !in_headers_ && sum_ == tag_.sum; }
  const LoadTag& tag() const { return tag_; }

 private:
  bool in_headers_ = true;
  bool tagged_ = false;
  bool damaged_ = false;
  LoadTag tag_;
  uint64_t sum_ = kFnvOffset;
};

}  // namespace postern
