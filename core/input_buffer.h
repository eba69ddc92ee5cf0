// InputBuffer: one connection's read buffer, filled in place by libuv.
//
// Either owns its storage for life (capacity constructor) or borrows it from a
// BufferPool: then it takes a buffer on the first writable() and gives it back on
// release() when nothing unread is left, so an idle connection holds no buffer.
//
// alloc_cb hands libuv writable(), read_cb calls commit(n); parsers read readable() and
// consume() what they used. Views returned by readable() stay valid until the next
// writable() call, which may compact (move the unread tail to the front). Capacity is
// fixed at construction, so a connection's memory is bounded whatever the peer sends.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>

namespace postern {

class BufferPool;

class InputBuffer {
 public:
  explicit InputBuffer(size_t capacity);
  explicit InputBuffer(BufferPool& pool);
  ~InputBuffer();
  InputBuffer(const InputBuffer&) = delete;
  InputBuffer& operator=(const InputBuffer&) = delete;

  // Pooled buffers only: returns the storage to the pool if no unread byte is left.
  void release();
  bool holdsStorage() const { return data_ != nullptr; }

  // The free tail for the next read. Compacts first when the tail is smaller than the
  // unread bytes' share of the buffer would allow; empty only when the buffer is full.
  std::span<char> writable();
  void commit(size_t n);

  std::string_view readable() const { return {data_.get() + begin_, end_ - begin_}; }
  void consume(size_t n);
  void clear() { begin_ = end_ = 0; }

  size_t size() const { return end_ - begin_; }
  size_t capacity() const { return capacity_; }
  bool full() const { return begin_ == 0 && end_ == capacity_; }

 private:
  std::unique_ptr<char[]> data_;
  BufferPool* pool_ = nullptr;
  size_t capacity_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace postern
