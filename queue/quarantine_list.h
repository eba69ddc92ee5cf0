// What earlier starts quarantined (queue/spool.h): the entries of every
// spool_dir/wN/quarantine/, each a damaged octet range of a segment named
// seg-XXXXXXXX.log.OFFSET+LENGTH (queue/spool_dirs.h). For `postern queue quarantine`, its
// admin route and `postern spool check`, online or offline alike.
//
// Contract: only reads directories and lstat()s their entries (no file is opened, no
// symlink followed), so it is cheap and safe to run beside a relay. The directories are
// input from outside: an entry whose name is not one the spool makes, or that is not a
// regular file, is reported as ignored (its name made printable), never trusted; at most
// `limit` entries are looked at in all, then the listing stops and says so. A directory
// that cannot be read is reported and the others are still listed. Nothing throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "queue/spool_dirs.h"

namespace postern {

inline constexpr size_t kMaxQuarantineEntries = 10000;

struct QuarantinedRange {
  unsigned worker = 0;  // the N of wN
  QuarantineName range;
  std::string path;
  int64_t mtime_ms = 0;  // Unix ms: when the start that found the damage copied it
  uint64_t size = 0;     // octets in the file (range.length unless the copy was cut short)
};

struct QuarantineListing {
  std::vector<QuarantinedRange> ranges;  // by worker, segment, offset
  std::vector<std::string> ignored;      // printable paths of entries that are not ranges
  std::vector<std::string> errors;       // "path: why" for directories not read
  size_t examined = 0;                   // entries looked at, against the limit
  bool truncated = false;                // the limit was reached: there may be more
  uint64_t bytes() const;                // sum of the ranges' lengths
};

// Lists spool_dir/wN/quarantine for every worker directory wN (N in decimal, as the
// relay names them). A spool_dir without worker directories lists nothing.
QuarantineListing listQuarantine(const std::string& spool_dir,
                                 size_t limit = kMaxQuarantineEntries);
// Adds one worker directory's quarantine (worker_dir/quarantine; none is no error) to out,
// within what is left of limit.
void listWorkerQuarantine(const std::string& worker_dir, unsigned worker, QuarantineListing& out,
                          size_t limit = kMaxQuarantineEntries);

// name with every octet outside printable ASCII, and '\', written as \xNN: a file name
// off the disk, safe to print to a terminal or to put in JSON.
std::string printableName(std::string_view name);

}  // namespace postern
