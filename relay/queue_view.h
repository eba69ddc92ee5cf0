// Queue views: what `postern queue` and the admin endpoint show of the queue, rendered
// the same way whether the entries come from the running relay or from reading a spool
// offline. JSON for programs, aligned text for people, and a summary by destination
// domain and age like Postfix's qshape. The quarantine (queue/quarantine_list.h) the same
// way: one row per quarantined range, with what was ignored and whether the listing was
// cut short.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "queue/quarantine_list.h"
#include "queue/queue_entry.h"

namespace postern {

std::string queueJson(const std::vector<QueueEntry>& entries);
std::string queueText(const std::vector<QueueEntry>& entries, int64_t now_ms);
std::string queueEntryText(const QueueEntry& e, int64_t now_ms);
// Messages per recipient domain (pending recipients counted once per domain) and age
// bucket: total, then 5m, 10m, 20m, 40m, 80m, 160m, 320m, 640m, 1280m and older.
std::string queueSummary(const std::vector<QueueEntry>& entries, int64_t now_ms);

// {"ranges":[{"worker","segment","offset","length","size","path","quarantined_ms"}...],
//  "count","bytes","truncated","ignored":[paths],"errors":[...]}
std::string quarantineJson(const QuarantineListing& q);
// A table (times in UTC), then what was ignored or unreadable, then the totals.
std::string quarantineText(const QuarantineListing& q);
// "quarantined: N range(s), B octets" and a pointer to the full listing: for the summary.
std::string quarantineSummary(const QuarantineListing& q);

}  // namespace postern
