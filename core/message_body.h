// MessageBody: a message's content as a list of pieces, most of them views into the read
// buffers the bytes arrived in, so DATA goes from the socket to the spool's writev without
// being copied (dot-unstuffing and CRLF normalisation only split pieces).
//
// A piece that lies in the source InputBuffer pins that buffer (a reference on its
// storage): the InputBuffer then never moves or overwrites bytes it has handed out, and
// takes a fresh buffer instead of compacting (input_buffer.h). The buffer goes back to its
// pool when the last body holding it is gone. Contiguous views into one buffer merge into
// one piece, so a body that arrived in one read is one iovec. Anything else (the Received
// header, a CRLF that a bare LF lacked, text from elsewhere) is adopted, referenced as a
// static literal, or copied. footprint() is what a session bounds (limits.message_memory):
// the content plus the piece list. The buffers pinned for it hold at most about twice the
// content plus one buffer, since a pinned InputBuffer only moves on to a fresh buffer once
// more than half of the old one has been read; so a small body does not count its whole
// read buffer (which would spill every line when message_memory is below the buffer size).
#pragma once

#include <cstddef>
#include <forward_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace postern {

class InputBuffer;

class MessageBody {
 public:
  MessageBody() = default;
  MessageBody(MessageBody&&) noexcept = default;
  MessageBody& operator=(MessageBody&&) noexcept = default;
  MessageBody(const MessageBody&) = delete;
  MessageBody& operator=(const MessageBody&) = delete;

  // Text in buf's storage is pinned from now on rather than copied. buf must outlive
  // the appends (not the body).
  void setSource(const InputBuffer* buf) { source_ = buf; }

  void append(std::string_view text);        // pinned if in the source, else copied
  void appendStatic(std::string_view text);  // text outlives every body (a literal)
  void adopt(std::string text);              // moved in, not copied
  void prepend(std::string text);            // moved in before everything else

  // Keeps the first n octets; buffers only later pieces used are let go.
  void truncate(size_t n);
  void clear();

  size_t size() const { return size_; }
  size_t footprint() const { return size_ + pieces_.capacity() * sizeof(std::string_view); }
  const std::vector<std::string_view>& pieces() const { return pieces_; }
  std::string str() const;  // a copy, for tests and checks

 private:
  struct Held {
    std::shared_ptr<char[]> storage;
    size_t first_piece;  // index of the first piece in it
  };
  void add(std::string_view piece, const char* storage);

  const InputBuffer* source_ = nullptr;
  std::vector<std::string_view> pieces_;
  std::vector<Held> held_;
  // Nodes never move, so views stay valid; and an empty list allocates nothing (an empty
  // std::deque would cost every idle session some 600 octets).
  std::forward_list<std::string> owned_;
  const char* last_storage_ = nullptr;  // the buffer the last piece lies in, if pinned
  size_t size_ = 0;
};

}  // namespace postern
