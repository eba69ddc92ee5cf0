// Wall-clock time for what leaves the process or outlives it (queue ids, Received:
// dates, queue lifetime). Timers and deadlines use the loop's monotonic uv_now() instead.
#pragma once

#include <chrono>
#include <cstdint>

namespace postern {

inline int64_t unixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace postern
