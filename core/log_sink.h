// LogSink: the process's stderr log sink, with per-thread batching and no lock.
//
// spdlog's stderr sink takes one mutex shared by every worker and writes (flushes) each
// line on its own: two write(2)s and a contended lock per relayed message. Here each
// thread formats into its own buffer with its own copy of the formatter. A thread that
// batches (a worker loop: batchThreadLog(true)) keeps its lines until flushThreadLog(),
// which the loop calls once per iteration before it waits for I/O, or until the buffer
// passes kFlushBytes; any other thread writes each line at once. Lines go out whole: a
// write carries complete lines only, at most PIPE_BUF octets unless one line is longer,
// so lines of different threads never interleave on a pipe (docker, journald). A line
// is late by at most one loop iteration, and lost only if the process dies in it.
#pragma once

#include <spdlog/sinks/sink.h>

#include <memory>
#include <string>

namespace postern {

class LogSink final : public spdlog::sinks::sink {
 public:
  explicit LogSink(int fd) : fd_(fd) {}

  void log(const spdlog::details::log_msg& msg) override;
  void flush() override;  // this thread's lines
  void set_pattern(const std::string& pattern) override;
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override;

 private:
  int fd_;
  std::unique_ptr<spdlog::formatter> formatter_;  // set before threads log; copied per thread
  unsigned generation_ = 0;                       // bumped when the formatter changes
};

// This thread keeps its lines until flushThreadLog() (on) or writes each at once (off,
// which also flushes).
void batchThreadLog(bool on);
void flushThreadLog();

}  // namespace postern
