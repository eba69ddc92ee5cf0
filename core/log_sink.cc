#include "core/log_sink.h"

#include <limits.h>
#include <spdlog/pattern_formatter.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "core/write_all.h"

namespace postern {
namespace {

constexpr size_t kFlushBytes = 64 * 1024;

struct ThreadLog {
  std::unique_ptr<spdlog::formatter> formatter;
  unsigned generation = 0;
  spdlog::memory_buf_t buf;
  bool batching = false;
  int fd = 2;
};

ThreadLog& threadLog() {
  thread_local ThreadLog t;
  return t;
}

// Writes buf in pieces of whole lines, each at most PIPE_BUF octets (a longer line alone).
void writeLines(int fd, spdlog::memory_buf_t& buf) {
  const char* p = buf.data();
  const char* end = p + buf.size();
  while (p < end) {
    const char* cut = p + std::min<size_t>(PIPE_BUF, end - p);
    if (cut < end) {
      const char* last_lf = static_cast<const char*>(memrchr(p, '\n', cut - p));
      if (last_lf != nullptr) {
        cut = last_lf + 1;
      } else {
        const void* lf = std::memchr(cut, '\n', end - cut);
        cut = lf != nullptr ? static_cast<const char*>(lf) + 1 : end;
      }
    }
    std::vector<iovec> iov{{const_cast<char*>(p), static_cast<size_t>(cut - p)}};
    writeAll(fd, iov);  // a failing log has nowhere to be reported: the lines are dropped
    p = cut;
  }
  buf.clear();
}

}  // namespace

void LogSink::log(const spdlog::details::log_msg& msg) {
  ThreadLog& t = threadLog();
  if (!t.formatter || t.generation != generation_) {
    t.formatter = formatter_->clone();
    t.generation = generation_;
  }
  t.fd = fd_;
  t.formatter->format(msg, t.buf);
  if (!t.batching || t.buf.size() >= kFlushBytes) writeLines(fd_, t.buf);
}

void LogSink::flush() { flushThreadLog(); }

void LogSink::set_pattern(const std::string& pattern) {
  set_formatter(std::make_unique<spdlog::pattern_formatter>(pattern));
}

void LogSink::set_formatter(std::unique_ptr<spdlog::formatter> formatter) {
  formatter_ = std::move(formatter);
  ++generation_;
}

void batchThreadLog(bool on) {
  threadLog().batching = on;
  if (!on) flushThreadLog();
}

void flushThreadLog() {
  ThreadLog& t = threadLog();
  if (t.buf.size() > 0) writeLines(t.fd, t.buf);
}

}  // namespace postern
