// The /metrics lines that belong to the process rather than to a worker: its memory, file
// descriptors and CPU (the standard process_* families), the spool's free space, and what
// came of SIGHUP reloads. In the "family<TAB>sample" form Worker::metricsText uses, so
// renderMetrics (relay/admin.h) files them under their families.
#pragma once

#include <cstdint>
#include <string>

namespace postern {

// Kept by the server on its loop: reloads by result, and when the running configuration
// was loaded (at start, then at each reload that took effect).
struct ReloadStats {
  uint64_t ok = 0;
  uint64_t failed = 0;
  double started_at = 0;  // seconds since the epoch
  double loaded_at = 0;
};

std::string processMetricsText(const std::string& spool_dir, const ReloadStats& reloads);

}  // namespace postern
