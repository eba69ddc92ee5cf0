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
//
// Pinning (zero-copy DATA): a MessageBody may hold a reference on the storage (storage())
// to keep views of consumed bytes. While anyone else holds it the buffer is pinned: bytes
// before the write position are never moved or overwritten; where it would compact or
// start over, writable() takes a fresh buffer and moves only the unread tail (a partial
// line) into it, and release() just lets go of its reference. The pinned storage goes
// back to the pool when its last holder lets go (all on the loop thread).
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
  void clear() { begin_ = end_; }  // the space is reclaimed by writable()

  // The storage, for a MessageBody to pin; whether text lies in it.
  const std::shared_ptr<char[]>& storage() const { return data_; }
  bool holds(std::string_view text) const {
    return data_ && text.data() >= data_.get() && text.data() + text.size() <= data_.get() + end_;
  }
  bool pinned() const { return data_ && data_.use_count() > 1; }

  size_t size() const { return end_ - begin_; }
  size_t capacity() const { return capacity_; }
  bool full() const { return begin_ == 0 && end_ == capacity_; }

 private:
  std::shared_ptr<char[]> take();
  void replaceStorage();

  std::shared_ptr<char[]> data_;
  BufferPool* pool_ = nullptr;
  size_t capacity_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace postern
