// `postern spool check DIR`, like Postfix's `postsuper -s`: reads a spool without changing
// it (a spool_dir with wN directories, or one wN) and reports, per segment, its format,
// intact records and damaged octet ranges, the messages still queued, and what earlier
// starts quarantined (queue/quarantine_list.h: each range read from its file's name; an
// entry whose name is not one the spool makes is flagged, not trusted). For a stopped
// relay or a copied volume; a running relay may delete a segment meanwhile, which is
// skipped.
#pragma once

#include <string>

namespace postern {

// Appends the report to out. Returns 0 when nothing is damaged or quarantined, 1 when
// something is, 2 when dir cannot be read.
int checkSpool(const std::string& dir, std::string& out);

}  // namespace postern
