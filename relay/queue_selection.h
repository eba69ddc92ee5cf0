// A selection of queued messages for a bulk action, as postsuper and postqueue operators
// expect: `postern queue ACTION --domain D --sender S --older-than T`, or `--all`. Every
// criterion given must match. The CLI sends it as a query string to the admin endpoint:
// GET /queue/select answers with the matching queue ids (for the count and the
// confirmation), then POST /queue/select/ACTION has every worker act on what matches on
// its own loop, in one request.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "queue/queue_entry.h"

namespace postern {

struct QueueSelection {
  bool all = false;
  std::string domain;                 // some recipient still to deliver is at it
  std::optional<std::string> sender;  // this envelope sender ("" = the null sender <>)
  int64_t older_than_ms = 0;          // received at least this long ago; 0: any age
  std::string state;                  // only entries in this state ("held"); "": any

  // Nothing asked: a bulk action needs --all or a criterion.
  bool empty() const { return !all && domain.empty() && !sender && older_than_ms == 0; }
  // Addresses and domains compare without regard to ASCII case.
  bool matches(const QueueEntry& e, int64_t now_ms) const;
};

// "all=1&domain=D&sender=S&older_than=SECONDS&state=S", values percent-encoded.
std::string selectionQuery(const QueueSelection& s);
// The inverse; fails naming an unknown key or a bad value.
Result<QueueSelection> parseSelection(std::string_view query);
// "90", "90s", "30m", "2h", "3d": milliseconds, or nothing if not a duration.
std::optional<int64_t> parseAge(std::string_view text);

}  // namespace postern
