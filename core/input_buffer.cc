#include "core/input_buffer.h"

#include <cstring>

#include "core/assert.h"
#include "core/buffer_pool.h"

namespace postern {

InputBuffer::InputBuffer(size_t capacity) : capacity_(capacity) {}

InputBuffer::InputBuffer(BufferPool& pool) : pool_(&pool), capacity_(pool.bufferSize()) {}

InputBuffer::~InputBuffer() = default;  // the storage's deleter gives it back to the pool

std::shared_ptr<char[]> InputBuffer::take() {
  if (pool_ == nullptr) return std::shared_ptr<char[]>(new char[capacity_]);
  BufferPool* pool = pool_;
  return std::shared_ptr<char[]>(pool->take().release(),
                                 [pool](char* p) { pool->give(std::unique_ptr<char[]>(p)); });
}

void InputBuffer::release() {
  if (pool_ == nullptr || begin_ != end_ || !data_) return;
  data_.reset();  // to the pool now, or when the last body pinning it lets go
  begin_ = end_ = 0;
}

void InputBuffer::replaceStorage() {
  std::shared_ptr<char[]> fresh = take();
  std::memcpy(fresh.get(), data_.get() + begin_, end_ - begin_);
  end_ -= begin_;
  begin_ = 0;
  data_ = std::move(fresh);
}

std::span<char> InputBuffer::writable() {
  if (!data_) {
    data_ = take();
    begin_ = end_ = 0;
  }
  // Only the partial line at the end is ever moved; lines already handed out are consumed.
  if (pinned()) {
    if (capacity_ - end_ < capacity_ / 2) replaceStorage();
  } else if (begin_ == end_) {
    begin_ = end_ = 0;
  } else if (begin_ > 0 && capacity_ - end_ < capacity_ / 2) {
    std::memmove(data_.get(), data_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  return {data_.get() + end_, capacity_ - end_};
}

void InputBuffer::commit(size_t n) {
  POSTERN_ASSERT(end_ + n <= capacity_);
  end_ += n;
}

void InputBuffer::consume(size_t n) {
  POSTERN_ASSERT(begin_ + n <= end_);
  begin_ += n;  // not rewound here: views of the consumed bytes may still be in use
}

}  // namespace postern
