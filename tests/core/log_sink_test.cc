// Tests for core/log_sink.*: lines of a batching thread wait for flushThreadLog(), other
// threads' lines go out at once, and every line arrives whole and in its thread's order.
#include "core/log_sink.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

namespace postern {
namespace {

class LogSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A file opened for appending, as a log file is; each write(2) lands whole.
    char path[] = "/tmp/postern_log_sink_XXXXXX";
    fds_[1] = ::mkostemp(path, O_APPEND | O_CLOEXEC);
    ASSERT_GE(fds_[1], 0);
    fds_[0] = ::open(path, O_RDONLY | O_CLOEXEC);
    ::unlink(path);
    logger_ = std::make_shared<spdlog::logger>("test", std::make_shared<LogSink>(fds_[1]));
    logger_->set_pattern("%v");
  }
  void TearDown() override {
    batchThreadLog(false);
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  std::string drain() {  // what was written since the last drain
    std::string out;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fds_[0], buf, sizeof buf);
      if (n <= 0) return out;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  int fds_[2];
  std::shared_ptr<spdlog::logger> logger_;
};

TEST_F(LogSinkTest, UnbatchedLinesGoOutAtOnce) {
  logger_->info("one");
  EXPECT_EQ(drain(), "one\n");
}

TEST_F(LogSinkTest, BatchedLinesWaitForTheFlush) {
  batchThreadLog(true);
  logger_->info("one");
  logger_->info("two");
  EXPECT_EQ(drain(), "");
  flushThreadLog();
  EXPECT_EQ(drain(), "one\ntwo\n");
  batchThreadLog(false);  // nothing left: writes nothing more
  EXPECT_EQ(drain(), "");
}

TEST_F(LogSinkTest, ABigBatchGoesOutWithoutAFlush) {
  batchThreadLog(true);
  const std::string line(1000, 'x');
  for (int i = 0; i < 100; ++i) logger_->info(line);  // past the 64 KiB bound
  std::string got = drain();
  EXPECT_GE(got.size(), 64u * 1000);
  EXPECT_EQ(got.size() % 1001, 0u);  // whole lines only
  flushThreadLog();
  got += drain();
  EXPECT_EQ(got.size(), 100u * 1001);
}

TEST_F(LogSinkTest, ALineLongerThanPipeBufGoesOutWhole) {
  // The piece that holds it cannot end at a line end within PIPE_BUF: it runs to the LF.
  batchThreadLog(true);
  logger_->info("short");
  logger_->info(std::string(10000, 'L'));
  logger_->info("after");
  flushThreadLog();
  EXPECT_EQ(drain(), "short\n" + std::string(10000, 'L') + "\nafter\n");
}

TEST_F(LogSinkTest, ThreadsNeverSplitEachOthersLines) {
  // Lines longer than a quarter of PIPE_BUF, from two batching threads at once: every line
  // read back must be one of theirs, whole, and each thread's lines in its order.
  constexpr int kLines = 300;
  auto run = [this](char tag) {
    batchThreadLog(true);
    for (int i = 0; i < kLines; ++i) {
      logger_->info("{}{:04d}{}", tag, i, std::string(1200, tag));
      if (i % 7 == 0) flushThreadLog();
    }
    batchThreadLog(false);
  };
  std::thread a(run, 'a');
  std::thread b(run, 'b');
  a.join();
  b.join();
  std::string got = drain();
  int next[2] = {0, 0};
  size_t pos = 0;
  while (pos < got.size()) {
    size_t lf = got.find('\n', pos);
    ASSERT_NE(lf, std::string::npos);
    std::string_view line(got.data() + pos, lf - pos);
    ASSERT_EQ(line.size(), 1u + 4u + 1200u);
    const char tag = line[0];
    ASSERT_TRUE(tag == 'a' || tag == 'b');
    EXPECT_EQ(std::stoi(std::string(line.substr(1, 4))), next[tag - 'a']++);
    EXPECT_EQ(line.substr(5), std::string(1200, tag));
    pos = lf + 1;
  }
  EXPECT_EQ(next[0], kLines);
  EXPECT_EQ(next[1], kLines);
}

}  // namespace
}  // namespace postern
