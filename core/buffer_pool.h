// BufferPool: a per-worker free list of equally sized read buffers.
//
// Sessions hold a read buffer only while it has unread bytes, so 10,000 idle connections
// cost no buffer memory; the pool keeps up to max_free buffers for reuse and frees the
// rest. Not thread-safe: one pool per worker loop.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

namespace postern {

class BufferPool {
 public:
  BufferPool(size_t buffer_size, size_t max_free)
      : buffer_size_(buffer_size), max_free_(max_free) {}

  std::unique_ptr<char[]> take();
  void give(std::unique_ptr<char[]> buffer);

  size_t bufferSize() const { return buffer_size_; }
  size_t freeCount() const { return free_.size(); }

 private:
  size_t buffer_size_;
  size_t max_free_;
  std::vector<std::unique_ptr<char[]>> free_;
};

}  // namespace postern
