// QueueEntry: one queued message as the operator sees it (`postern queue list`, the admin
// endpoint): what delivery knows of a job, or what a spool read offline holds. Rendering
// is relay/queue_view's; the entry lives here so delivery and the views share it without
// knowing each other.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "queue/spool.h"

namespace postern {

struct QueueEntry {
  std::string id;  // queueIdString
  std::string sender;
  std::vector<std::string> recipients;  // those still to deliver
  int64_t received_ms = 0;
  uint64_t size = 0;
  std::string state;            // "ready", "deferred", "active" or "spooled" (offline)
  int64_t next_attempt_ms = 0;  // Unix ms, deferred only
  unsigned attempts = 0;
  std::string next_hop;    // destination key, "" offline
  std::string last_reply;  // latest temporary failure, if any
};

// An entry for a message read from a spool (offline or just recovered).
QueueEntry entryFromSpool(const SpooledMessage& m);

}  // namespace postern
