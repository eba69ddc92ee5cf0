// Tests for core/message_body.* and the pinning side of core/input_buffer.*: a body keeps
// views of the bytes where they were read, and the buffer never reuses bytes a body holds.
#include "core/message_body.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/buffer_pool.h"
#include "core/input_buffer.h"

namespace postern {
namespace {

// Reads text into in as one read; returns the view of it.
std::string_view fill(InputBuffer& in, std::string_view text) {
  auto w = in.writable();
  EXPECT_GE(w.size(), text.size());
  std::memcpy(w.data(), text.data(), text.size());
  in.commit(text.size());
  std::string_view got = in.readable().substr(in.size() - text.size());
  return got;
}

TEST(MessageBody, ViewsOfTheSourceArePinnedNotCopied) {
  InputBuffer in(64);
  MessageBody body;
  body.setSource(&in);
  body.adopt("H: 1\r\n");
  std::string_view line = fill(in, "abc\r\ndef\r\n");
  body.append(line.substr(0, 3));  // "abc"
  body.append(line.substr(3, 2));  // its CRLF, right after it: the same piece
  body.appendStatic("\r\n");
  body.append(line.substr(5, 5));  // "def\r\n": not contiguous with the literal
  in.consume(in.size());
  EXPECT_EQ(body.str(), "H: 1\r\nabc\r\n\r\ndef\r\n");
  ASSERT_EQ(body.pieces().size(), 4u);
  EXPECT_EQ(body.pieces()[1].data(), line.data());  // no copy
  EXPECT_TRUE(in.pinned());
  // What a session bounds is the content and the piece list, not the whole read buffer a
  // small body pins (else a message_memory below the buffer size would spill every line).
  EXPECT_EQ(body.footprint(), 18u + body.pieces().capacity() * sizeof(std::string_view));
  body.clear();
  EXPECT_FALSE(in.pinned());
}

TEST(MessageBody, TextFromElsewhereIsCopied) {
  MessageBody body;
  std::string text = "from a temporary";
  body.append(text);
  text.assign(text.size(), 'x');
  EXPECT_EQ(body.str(), "from a temporary");
}

TEST(MessageBody, TruncateCutsInsideAPieceAndLetsLaterBuffersGo) {
  BufferPool pool(32, 4);
  InputBuffer in(pool);
  MessageBody body;
  body.setSource(&in);
  body.adopt("HEAD\r\n");
  body.append(fill(in, "0123456789"));
  in.consume(in.size());
  in.release();                         // pinned: only our reference goes
  body.append(fill(in, "abcdefghij"));  // a second buffer
  in.consume(in.size());
  EXPECT_TRUE(in.pinned());  // the second buffer, still the InputBuffer's own
  EXPECT_EQ(pool.freeCount(), 0u);
  body.truncate(8);
  EXPECT_EQ(body.str(), "HEAD\r\n01");
  EXPECT_EQ(body.size(), 8u);
  // The second buffer is no longer used by any piece: let go; the first is still held.
  EXPECT_FALSE(in.pinned());
  EXPECT_EQ(pool.freeCount(), 0u);
  body.clear();
  EXPECT_EQ(pool.freeCount(), 1u);  // the first, back with its last holder
  body.adopt("HEAD\r\n01");
  body.append(fill(in, "XY"));
  in.consume(in.size());
  EXPECT_EQ(body.str(), "HEAD\r\n01XY");
  body.truncate(6);
  EXPECT_EQ(body.str(), "HEAD\r\n");
}

TEST(PinnedInputBuffer, ConsumedBytesAreNotOverwrittenWhileHeld) {
  InputBuffer in(32);
  MessageBody body;
  body.setSource(&in);
  body.append(fill(in, "0123456789"));
  in.consume(in.size());
  // Unpinned, an empty buffer would start over at its front; pinned, it goes on after
  // the held bytes.
  std::string_view next = fill(in, "ab");
  EXPECT_EQ(body.str(), "0123456789");
  EXPECT_EQ(next.data(), body.pieces()[0].data() + 10);
  fill(in, "cdefgh");
  // Less than half left: a fresh buffer, with only the unread tail moved into it.
  auto w = in.writable();
  EXPECT_EQ(w.size(), 32u - 8u);
  EXPECT_EQ(in.readable(), "abcdefgh");
  EXPECT_NE(in.readable().data(), next.data());
  EXPECT_EQ(body.str(), "0123456789");
}

TEST(PinnedInputBuffer, StorageGoesBackToThePoolWithItsLastHolder) {
  BufferPool pool(32, 4);
  auto body = std::make_unique<MessageBody>();
  {
    InputBuffer in(pool);
    body->setSource(&in);
    body->append(fill(in, "held"));
    in.consume(in.size());
    in.release();
    EXPECT_FALSE(in.holdsStorage());
    EXPECT_EQ(pool.freeCount(), 0u);  // the body still has it
  }
  EXPECT_EQ(body->str(), "held");
  body.reset();
  EXPECT_EQ(pool.freeCount(), 1u);
}

TEST(PinnedInputBuffer, UnpinnedBufferStillStartsOver) {
  InputBuffer in(16);
  std::string_view first = fill(in, "0123456789");
  in.consume(in.size());
  std::string_view second = fill(in, "ab");
  EXPECT_EQ(second.data(), first.data());  // no body held it: the front is reused
}

}  // namespace
}  // namespace postern
