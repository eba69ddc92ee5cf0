#include "queue/body_reader.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>

namespace postern {

BodyReader::BodyReader(uv_loop_t* loop, Ready ready, void* ctx, BodyReadCounts* counts,
                       bool try_cache)
    : loop_(loop), ready_(ready), ctx_(ctx), counts_(counts), try_cache_(try_cache) {
  for (Slot& s : slots_) s.reader = this;
}

BodyReader::~BodyReader() {
  if (pool_fd_ >= 0) ::close(pool_fd_);
}

void BodyReader::start(BodyFile file) {
  file_ = std::move(file);
  started_ = true;
  if (file_.size == 0) return;  // finished already
  if (!file_.fd) {
    error_ = "no such body in the spool";
    return;
  }
  for (Slot& s : slots_) fill(s);
}

int BodyReader::loopFd() {
  const int fd = file_.fd();
  if (fd < 0) error_ = "the body's spool file is gone";
  return fd;
}

int BodyReader::poolFd() {
  const int fd = loopFd();  // still there? The duplicate would not say.
  if (fd < 0) return -1;
  if (pool_fd_ >= 0) return pool_fd_;
  // dup(), not fcntl(F_DUPFD_CLOEXEC): ThreadSanitizer follows a descriptor made by dup,
  // and would take the close of one it never saw made for a race with the last thread
  // that used the same number. Nothing here is ever exec'ed, CLOEXEC is for tidiness.
  pool_fd_ = ::dup(fd);
  if (pool_fd_ < 0) {
    error_ = std::string("dup: ") + std::strerror(errno);
    return -1;
  }
  ::fcntl(pool_fd_, F_SETFD, FD_CLOEXEC);
  return pool_fd_;
}

void BodyReader::fill(Slot& s) {
  if (stopped_ || failed() || asked_ >= file_.size) return;
  if (!s.buf) s.buf = std::make_unique_for_overwrite<char[]>(std::min<uint64_t>(kPiece, file_.size));
  s.offset = asked_;
  s.want = static_cast<size_t>(std::min<uint64_t>(kPiece, file_.size - asked_));
  s.have = 0;
  s.busy = true;
  s.pooled = false;
  asked_ += s.want;
  readMore(s);
}

BodyReader::Step BodyReader::readMore(Slot& s) {
  // From the page cache first (RWF_NOWAIT: never waits for the disk), which is where a
  // message delivered soon after it arrived lies: no thread pool round trip for it.
  while (try_cache_ && s.have < s.want) {
    const int fd = loopFd();
    if (fd < 0) return Step::kFailed;
    iovec iov{s.buf.get() + s.have, s.want - s.have};
    ssize_t n = ::preadv2(fd, &iov, 1,
                          static_cast<off_t>(file_.offset + s.offset + s.have), RWF_NOWAIT);
    if (n > 0) {
      s.have += static_cast<size_t>(n);
    } else if (n == 0) {
      error_ = "the spool file ends before the body does";
      return Step::kFailed;
    } else if (errno != EINTR) {
      if (errno != EAGAIN) try_cache_ = false;  // not supported here: the thread pool always
      break;
    }
  }
  if (s.have == s.want) {
    if (counts_ != nullptr) ++(s.pooled ? counts_->pool : counts_->cache);
    return Step::kDone;
  }
  const int fd = poolFd();
  if (fd < 0) return Step::kFailed;
  uv_buf_t buf = uv_buf_init(s.buf.get() + s.have, static_cast<unsigned>(s.want - s.have));
  s.req.data = &s;
  int rc = uv_fs_read(loop_, &s.req, fd, &buf, 1,
                      static_cast<int64_t>(file_.offset + s.offset + s.have), onRead);
  if (rc < 0) {
    error_ = std::string("read: ") + uv_strerror(rc);
    return Step::kFailed;
  }
  ++reading_;
  s.pooled = true;
  return Step::kPending;
}

void BodyReader::onRead(uv_fs_t* req) {
  auto& s = *static_cast<Slot*>(req->data);
  BodyReader* r = s.reader;
  const ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  --r->reading_;
  if (n < 0) {
    if (!r->failed()) r->error_ = std::string("read: ") + uv_strerror(static_cast<int>(n));
  } else if (n == 0) {
    if (!r->failed()) r->error_ = "the spool file ends before the body does";
  } else {
    s.have += static_cast<size_t>(n);
    if (s.have == s.want && r->counts_ != nullptr) ++r->counts_->pool;
    // A short read: the rest of the piece is asked for again.
    if (s.have < s.want && !r->stopped_ && !r->failed() && r->readMore(s) == Step::kPending) {
      return;
    }
  }
  r->ready_(r->ctx_);
}

std::optional<std::string_view> BodyReader::front() const {
  const Slot& s = slots_[front_];
  if (failed() || !s.busy || s.have < s.want) return std::nullopt;
  return std::string_view(s.buf.get(), s.want);
}

bool BodyReader::frontIsLast() const { return slots_[front_].offset + slots_[front_].want == file_.size; }

void BodyReader::pop() {
  Slot& s = slots_[front_];
  s.busy = false;
  popped_ += s.want;
  front_ = (front_ + 1) % slots_.size();
  fill(s);
}

}  // namespace postern
