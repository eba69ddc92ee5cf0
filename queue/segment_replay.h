// Replaying one spool segment at start (and for the offline queue tools): its records in
// order, every intact one recovered, damage skipped and reported by byte range.
//
// Format 2 segments (queue/record.h) are read past damage: after a bad record (its header
// or its payload) reading goes on at the next intact header, found by its magic and its
// salted header CRC. (Not by the bad record's length, even with an intact header: octets
// cut out of a payload would have it point into the middle of a later record.) So a flipped bit, a
// zeroed page or a cut in the middle costs the records it touches and no others. Format 1 segments
// (before record headers had their own CRC) cannot be resynchronised: their first bad
// record ends them, and the rest is reported as one range.
//
// The caller keeps the damaged ranges (Spool copies them into its quarantine directory).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "queue/spool.h"

namespace postern {

struct DamagedRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool tail = false;  // runs to the end of the segment (a torn write after a crash, or damage)
};

struct SegmentReplay {
  std::vector<DamagedRange> damaged;
  std::optional<uint64_t> salt;  // a format 2 segment's own, when its header is intact
  size_t records = 0;
};

// Replays data (the whole segment id) into messages (where each lies and which recipients
// are done; envelopes are not kept), first appearance kept in `order`.
// fallback_salt: for a format 2 segment whose header is damaged (the spool's salt).
SegmentReplay replaySegment(std::string_view data, uint32_t id, uint64_t fallback_salt,
                            std::unordered_map<uint64_t, SpooledRef>& messages,
                            std::vector<uint64_t>& order);

}  // namespace postern
