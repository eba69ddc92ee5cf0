// BodyReader: a spooled message's body read in bounded pieces without blocking the loop,
// for delivery. A piece in the page cache (a message delivered soon after it arrived) is
// read at once with preadv2(RWF_NOWAIT), which never waits for the disk; the rest is read
// by libuv file requests (uv_fs_read, on libuv's thread pool), so a body that is not in
// the page cache (a long backlog) never blocks the loop either. Memory stays at two pieces
// however large the message: while one piece is being sent the other is being read.
//
// Use: start() with the body's file (Spool::openBody),
// then each time the ready callback fires, take front() while it has a piece, send it and
// pop() it once sent (its buffer then reads the next piece). finished() once every piece
// has been popped (at once for an empty body); failed() if a read failed or the file ended
// early (the body is shorter than its record says: damage), and nothing more is read then.
// front(), finished() and failed() can change in start() and pop() (a piece read from the
// page cache at once) as well as before the ready callback, which comes only for reads
// that went to the thread pool.
//
// Lifetime: a read in flight refers to the reader and its buffers, and libuv cannot take it
// back once it runs. stop() reads nothing more; the owner frees the reader only when
// reading() is 0 (the ready callback fires as each outstanding read ends).
#pragma once

#include <uv.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/metrics.h"

namespace postern {

// A body's octets within a file. fd says where the file is now, asked again before each
// read on the loop: its descriptor, or -1 once it is gone (a spool segment deleted), so a
// descriptor closed and reused meanwhile is never read. Reads on the thread pool, which
// cannot ask, use a duplicate made when the first of them is needed.
struct BodyFile {
  std::function<int()> fd;
  uint64_t offset = 0;
  uint64_t size = 0;
};

class BodyReader {
 public:
  using Ready = void (*)(void* ctx);
  static constexpr size_t kPiece = 64 * 1024;

  // counts, when given, outlives the reader and counts its pieces by where they came from.
  // try_cache false: every read goes to the thread pool (tests of that path).
  BodyReader(uv_loop_t* loop, Ready ready, void* ctx, BodyReadCounts* counts = nullptr,
             bool try_cache = true);
  ~BodyReader();
  BodyReader(const BodyReader&) = delete;
  BodyReader& operator=(const BodyReader&) = delete;

  // Starts reading file's range. A reader is started once.
  void start(BodyFile file);
  // The next piece in order, once read; nullopt while it is being read (or none is left).
  std::optional<std::string_view> front() const;
  // front() is the body's last piece.
  bool frontIsLast() const;
  // Done with front(): its buffer goes on to read the next piece not yet asked for.
  void pop();
  bool finished() const { return started_ && popped_ == file_.size && !failed(); }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  // Reads in flight.
  size_t reading() const { return reading_; }
  // Nothing more is read (the owner is closing); reads in flight still end.
  void stop() { stopped_ = true; }

 private:
  struct Slot {
    uv_fs_t req;
    BodyReader* reader = nullptr;
    std::unique_ptr<char[]> buf;
    uint64_t offset = 0;  // within the body
    size_t want = 0;      // octets of the piece
    size_t have = 0;      // of them read so far
    bool busy = false;    // reading or holding a piece not yet popped
    bool pooled = false;  // some of the piece was read on the thread pool
  };

  enum class Step { kDone, kPending, kFailed };  // kFailed: error_ says why
  void fill(Slot& s);
  Step readMore(Slot& s);
  int loopFd();  // the file's descriptor now, or -1 with error_ set
  int poolFd();  // a duplicate of it for the thread pool, or -1 with error_ set
  static void onRead(uv_fs_t* req);

  uv_loop_t* loop_;
  Ready ready_;
  void* ctx_;
  BodyReadCounts* counts_;
  BodyFile file_;
  int pool_fd_ = -1;
  bool started_ = false;
  bool stopped_ = false;
  bool try_cache_;
  uint64_t asked_ = 0;   // octets of the body given to a slot to read
  uint64_t popped_ = 0;  // octets of the body popped
  size_t front_ = 0;     // slot holding the next piece in order
  size_t reading_ = 0;
  std::string error_;
  std::array<Slot, 2> slots_;
};

}  // namespace postern
