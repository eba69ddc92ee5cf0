// Spool directories across restarts: each worker N owns spool_dir/wN. When the relay
// restarts with fewer workers, the directories of workers that no longer exist would
// never be read again; mergeOrphanSpools() moves their segments into the directory of
// worker (K mod workers) first, renumbered after that directory's own segments, with a
// rename (atomic per file) and directory fsyncs. A crash part-way leaves every segment in
// one directory or the other, and the next start finishes the move.
#pragma once

#include <string>

namespace postern {

// Returns "" or the error.
std::string mergeOrphanSpools(const std::string& spool_dir, unsigned workers);

// Creates dir and whatever of its parents is missing, each made durable (its parent
// directory fsynced), so a segment written into it cannot vanish with its directory
// entry after a power loss. Returns "" or the error.
std::string createDurableDirectories(const std::string& dir);

}  // namespace postern
