// libFuzzer target for queue/segment_replay.* and queue/record.*: the bytes of a spool
// segment come from a disk that may be damaged (DESIGN.md: the spool's bytes are input
// like any other), so replay must survive any of them.
//
// The input is either a whole segment (first octet even) or a mask (first octet odd)
// XORed into a valid segment of five records, so damage to real records is explored too.
// Besides ASan/UBSan findings, traps when: a damaged range or a recovered body lies outside
// the data; damaged ranges overlap, are out of order or empty; a recovered record overlaps
// a damaged range; with no damage at all, fewer than the five records are recovered.
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "queue/record.h"
#include "queue/segment_replay.h"
#include "tests/fuzz/fuzz_check.h"

namespace postern {
namespace {

constexpr uint64_t kSalt = 0x0f1e2d3c4b5a6978ull;

std::string validSegment() {
  std::string seg = encodeSegmentHeader(kSalt);
  for (int i = 0; i < 5; ++i) {
    Envelope e;
    e.id = 100 + i;
    e.sender = "s@x.test";
    e.recipients = {"r@y.test", "q@y.test"};
    size_t off = 0;
    encodeMessage(seg, e, "Subject: " + std::to_string(i) + "\r\n\r\nbody\r\n", off, kSalt);
    if (i % 2 == 1) encodeDone(seg, 100 + i - 1, 1, kSalt);
  }
  return seg;
}

}  // namespace
}  // namespace postern

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace postern;
  static const std::string kValid = validSegment();
  if (size == 0) return 0;
  std::string seg;
  if (data[0] % 2 == 0) {
    seg.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  } else {
    seg = kValid;
    for (size_t i = 1; i < size; ++i) seg[(i - 1) % seg.size()] ^= static_cast<char>(data[i]);
  }
  std::unordered_map<uint64_t, SpooledRef> messages;
  std::vector<uint64_t> order;
  SegmentReplay r = replaySegment(seg, 1, kSalt, messages, order);
  uint64_t last_end = 0;
  for (const DamagedRange& d : r.damaged) {
    FUZZ_CHECK(d.length > 0);
    FUZZ_CHECK(d.offset >= last_end);
    FUZZ_CHECK(d.offset + d.length <= seg.size());
    last_end = d.offset + d.length;
  }
  for (const auto& [id, m] : messages) {
    FUZZ_CHECK(m.ref.head_size > 0 && m.ref.head_size <= m.ref.body_offset);
    const uint64_t begin = m.ref.body_offset - m.ref.head_size;
    const uint64_t end = m.ref.body_offset + m.ref.body_size;
    FUZZ_CHECK(end <= seg.size() && begin <= end);
    // What recovery found, its envelope can be read back (as delivery does).
    const std::optional<Envelope> env = decodeMessageHead(
        std::string_view(seg).substr(begin, m.ref.head_size), kSalt, m.ref.body_size);
    FUZZ_CHECK(env);
    FUZZ_CHECK(env->id == id && env->recipients.size() == m.recipients);
    for (const DamagedRange& d : r.damaged) {
      FUZZ_CHECK(end <= d.offset || begin >= d.offset + d.length);
    }
  }
  if (seg == kValid) {
    FUZZ_CHECK(r.damaged.empty());
    FUZZ_CHECK(messages.size() == 5);
  }
  return 0;
}
