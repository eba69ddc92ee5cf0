// Spool directories across restarts: each worker N owns spool_dir/wN. When the relay
// restarts with fewer workers, the directories of workers that no longer exist would
// never be read again; mergeOrphanSpools() moves their segments into the directory of
// worker (K mod workers) first, renumbered after that directory's own segments, with a
// rename (atomic per file) and directory fsyncs. A crash part-way leaves every segment in
// one directory or the other, and the next start finishes the move.
//
// The names of the files in those directories are made and read here, in one place: a
// segment's (seg-XXXXXXXX.log), a quarantined range's (seg-XXXXXXXX.log.OFFSET+LENGTH,
// queue/spool.h) and a hold marker's (hold/<queue id>). A directory on disk is input from outside:
// the parsers take only the exact shape the writers produce and answer nullopt for anything else.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace postern {

Status mergeOrphanSpools(const std::string& spool_dir, unsigned workers);

// The ids of dir's segment files (seg-XXXXXXXX.log), in order.
Result<std::vector<uint32_t>> segmentIds(const std::string& dir);
// "seg-XXXXXXXX.log".
std::string segmentFileName(uint32_t id);
// The id of a name segmentFileName() makes (8 lowercase hex digits); nullopt otherwise.
std::optional<uint32_t> parseSegmentFileName(std::string_view name);

// A damaged octet range of a segment, as its copy in wN/quarantine/ is named.
struct QuarantineName {
  uint32_t segment = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const QuarantineName&) const = default;
};
// "seg-XXXXXXXX.log.OFFSET+LENGTH", both numbers in decimal.
std::string quarantineFileName(const QuarantineName& q);
// The inverse, strictly: a segment file name, '.', then OFFSET '+' LENGTH as decimal
// digits without sign or leading zeros, within 64 bits, the range's end too. nullopt for
// anything else.
std::optional<QuarantineName> parseQuarantineFileName(std::string_view name);

// Held messages (`postern queue hold`): an empty file wN/hold/<queue id> per message, made
// and removed durably by the spool's I/O thread (Spool::setHeld). A marker, not a record
// in the log: a record in a newer segment than its message's could be deleted with that
// segment while the message lives on, and the hold would be lost at the next start.
constexpr const char* kHoldDir = "hold";
// The queue ids of dir/hold's markers (names exactly as queueIdString makes them; anything
// else there is ignored). Empty when the directory is missing.
std::vector<uint64_t> readHoldMarkers(const std::string& dir);

// The spool's salt (queue/record.h) from dir/salt, else from the first of the segments
// whose header is intact; nullopt if neither has one.
std::optional<uint64_t> readSpoolSalt(const std::string& dir, const std::vector<uint32_t>& ids);
// Writes dir/salt durably (a temporary file renamed over it).
Status writeSpoolSalt(const std::string& dir, uint64_t salt);

// Creates dir and whatever of its parents is missing, each made durable (its parent
// directory fsynced), so a segment written into it cannot vanish with its directory
// entry after a power loss.
Status createDurableDirectories(const std::string& dir);

}  // namespace postern
