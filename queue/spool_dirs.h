// Spool directories across restarts: each worker N owns spool_dir/wN. When the relay
// restarts with fewer workers, the directories of workers that no longer exist would
// never be read again; mergeOrphanSpools() moves their segments into the directory of
// worker (K mod workers) first, renumbered after that directory's own segments, with a
// rename (atomic per file) and directory fsyncs. A crash part-way leaves every segment in
// one directory or the other, and the next start finishes the move.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

namespace postern {

// Returns "" or the error.
std::string mergeOrphanSpools(const std::string& spool_dir, unsigned workers);

// The ids of dir's segment files (seg-XXXXXXXX.log), in order.
std::vector<uint32_t> segmentIds(const std::string& dir, std::error_code& ec);
// "seg-XXXXXXXX.log".
std::string segmentFileName(uint32_t id);

// The spool's salt (queue/record.h) from dir/salt, else from the first of the segments
// whose header is intact; nullopt if neither has one.
std::optional<uint64_t> readSpoolSalt(const std::string& dir, const std::vector<uint32_t>& ids);
// Writes dir/salt durably (a temporary file renamed over it).
bool writeSpoolSalt(const std::string& dir, uint64_t salt);

// Creates dir and whatever of its parents is missing, each made durable (its parent
// directory fsynced), so a segment written into it cannot vanish with its directory
// entry after a power loss. Returns "" or the error.
std::string createDurableDirectories(const std::string& dir);

}  // namespace postern
