#include "bench/load_stats.h"

#include <uv.h>

#include <algorithm>
#include <cmath>
#include <ctime>

namespace postern {

uint64_t monotonicNs() { return uv_hrtime(); }

int64_t realtimeNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void LatencyRecorder::sort() {
  if (!sorted_) {
    std::sort(samples_.begin(), samples_.end());
    sorted_ = true;
  }
}

double LatencyRecorder::percentileMs(double q) {
  if (samples_.empty()) return 0;
  sort();
  // Nearest rank: the smallest sample with at least q of all samples at or below it.
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(samples_.size())));
  rank = std::clamp<size_t>(rank, 1, samples_.size());
  return static_cast<double>(samples_[rank - 1]) / 1e6;
}

double LatencyRecorder::maxMs() {
  if (samples_.empty()) return 0;
  sort();
  return static_cast<double>(samples_.back()) / 1e6;
}

}  // namespace postern
