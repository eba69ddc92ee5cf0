// RecipientFlags: one "done" flag per recipient of a queued message, in 16 octets for up to
// 64 recipients (nearly every message); the flags of a larger message's further recipients
// live on the heap. Waiting messages keep these instead of a std::vector<bool> (40 octets
// plus its heap block): with a backlog of millions, the queue's memory is its index.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace postern {

class RecipientFlags {
 public:
  RecipientFlags() = default;
  explicit RecipientFlags(const std::vector<bool>& flags) {
    for (size_t i = 0; i < flags.size(); ++i) {
      if (flags[i]) set(i);
    }
  }
  RecipientFlags(const RecipientFlags& o)
      : low_(o.low_), high_(o.high_ ? std::make_unique<std::vector<bool>>(*o.high_) : nullptr) {}
  RecipientFlags& operator=(const RecipientFlags& o) {
    if (this != &o) *this = RecipientFlags(o);
    return *this;
  }
  RecipientFlags(RecipientFlags&&) noexcept = default;
  RecipientFlags& operator=(RecipientFlags&&) noexcept = default;

  bool test(size_t i) const {
    if (i < 64) return (low_ >> i & 1) != 0;
    return high_ && i - 64 < high_->size() && (*high_)[i - 64];
  }
  void set(size_t i) {
    if (i < 64) {
      low_ |= uint64_t{1} << i;
      return;
    }
    if (!high_) high_ = std::make_unique<std::vector<bool>>();
    if (high_->size() <= i - 64) high_->resize(i - 63, false);
    (*high_)[i - 64] = true;
  }
  // The flags of recipients 0 .. n-1.
  std::vector<bool> toVector(size_t n) const {
    std::vector<bool> out(n, false);
    for (size_t i = 0; i < n; ++i) out[i] = test(i);
    return out;
  }

 private:
  uint64_t low_ = 0;
  std::unique_ptr<std::vector<bool>> high_;  // recipients 64 and on
};

}  // namespace postern
