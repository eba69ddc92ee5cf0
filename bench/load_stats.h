// Clocks and latency statistics shared by postern-load's source and sink.
//
// LatencyRecorder keeps every sample (8 bytes each; runs are bounded by --messages) so the
// percentiles are exact nearest-rank values, not histogram estimates. Percentiles of an
// empty recorder are 0. Nothing here allocates on the hot path except vector growth,
// which the owner avoids by calling reserve() with the expected count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace postern {

// Monotonic nanoseconds (uv_hrtime), for durations measured inside one process.
uint64_t monotonicNs();
// CLOCK_REALTIME nanoseconds, for timestamps compared across processes.
int64_t realtimeNs();

class LatencyRecorder {
 public:
  void reserve(size_t n) { samples_.reserve(n); }
  void add(uint64_t ns) {
    samples_.push_back(ns);
    sorted_ = false;
  }
  size_t count() const { return samples_.size(); }

  // q in [0, 1]; nearest-rank percentile in milliseconds.
  double percentileMs(double q);
  double maxMs();

 private:
  void sort();

  std::vector<uint64_t> samples_;
  bool sorted_ = true;
};

}  // namespace postern
