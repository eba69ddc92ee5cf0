#include "core/buffer_pool.h"

namespace postern {

std::unique_ptr<char[]> BufferPool::take() {
  if (free_.empty()) return std::make_unique_for_overwrite<char[]>(buffer_size_);
  auto b = std::move(free_.back());
  free_.pop_back();
  return b;
}

void BufferPool::give(std::unique_ptr<char[]> buffer) {
  if (buffer && free_.size() < max_free_) free_.push_back(std::move(buffer));
}

}  // namespace postern
