#include "core/input_buffer.h"

#include <cstring>

#include "core/assert.h"
#include "core/buffer_pool.h"

namespace postern {

InputBuffer::InputBuffer(size_t capacity)
    : data_(std::make_unique<char[]>(capacity)), capacity_(capacity) {}

InputBuffer::InputBuffer(BufferPool& pool) : pool_(&pool), capacity_(pool.bufferSize()) {}

InputBuffer::~InputBuffer() {
  if (pool_ != nullptr) pool_->give(std::move(data_));
}

void InputBuffer::release() {
  if (pool_ == nullptr || begin_ != end_ || !data_) return;
  pool_->give(std::move(data_));
  begin_ = end_ = 0;
}

std::span<char> InputBuffer::writable() {
  if (!data_) data_ = pool_->take();
  // Only the partial line at the end is ever moved; lines already handed out are consumed.
  if (begin_ == end_) {
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
  begin_ += n;
  if (begin_ == end_) begin_ = end_ = 0;
}

}  // namespace postern
