#include "core/input_buffer.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/buffer_pool.h"

namespace postern {
namespace {

TEST(PooledInputBuffer, HoldsStorageOnlyWhileBytesAreUnread) {
  BufferPool pool(64, 2);
  InputBuffer in(pool);
  EXPECT_FALSE(in.holdsStorage());
  EXPECT_EQ(in.capacity(), 64u);
  EXPECT_TRUE(in.readable().empty());

  auto w = in.writable();
  ASSERT_EQ(w.size(), 64u);
  std::memcpy(w.data(), "NOOP\r\nNO", 8);
  in.commit(8);
  in.consume(6);
  in.release();  // "NO" is still unread: the buffer stays
  EXPECT_TRUE(in.holdsStorage());
  EXPECT_EQ(in.readable(), "NO");

  in.consume(2);
  in.release();
  EXPECT_FALSE(in.holdsStorage());
  EXPECT_EQ(pool.freeCount(), 1u);

  in.writable();  // reuses the pooled buffer
  EXPECT_EQ(pool.freeCount(), 0u);
}

TEST(BufferPool, KeepsAtMostMaxFree) {
  BufferPool pool(16, 1);
  auto a = pool.take();
  auto b = pool.take();
  pool.give(std::move(a));
  pool.give(std::move(b));
  EXPECT_EQ(pool.freeCount(), 1u);
}

}  // namespace
}  // namespace postern
