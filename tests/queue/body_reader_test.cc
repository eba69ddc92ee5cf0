// BodyReader against a real file and a real loop, both ways a piece is read (at once from
// the page cache, and on libuv's thread pool): the pieces in order and bounded, the body
// shorter than its record says, and stop() with reads in flight.
#include "queue/body_reader.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace postern {
namespace {

class BodyReaderTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    uv_loop_init(&loop_);
    char path[] = "/tmp/body_reader_test.XXXXXX";
    fd_ = mkstemp(path);
    ASSERT_GE(fd_, 0);
    unlink(path);
  }
  void TearDown() override {
    ::close(fd_);
    uv_loop_close(&loop_);
  }

  void write(const std::string& data) {
    ASSERT_EQ(::pwrite(fd_, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  }
  BodyFile file(uint64_t offset, uint64_t size) {
    return BodyFile{[this] { return fd_; }, offset, size};
  }

  // Takes every piece as it comes, as SmtpClient does; returns what was read.
  std::string drain(BodyReader& r, size_t& pieces, size_t& largest) {
    std::string got;
    while (!r.finished() && !r.failed()) {
      while (auto piece = r.front()) {
        ++pieces;
        largest = std::max(largest, piece->size());
        got.append(*piece);
        const bool last = r.frontIsLast();
        r.pop();
        if (last) {
          EXPECT_TRUE(r.finished());
        }
      }
      if (r.finished() || r.failed()) break;
      uv_run(&loop_, UV_RUN_ONCE);
    }
    return got;
  }

  static void onReady(void* ctx) { ++*static_cast<int*>(ctx); }
  bool cache() const { return GetParam(); }
  bool nowaitWorks() const {
    char c;
    iovec iov{&c, 1};
    return ::preadv2(fd_, &iov, 1, 0, RWF_NOWAIT) >= 0 || errno == EAGAIN;
  }

  uv_loop_t loop_;
  int fd_ = -1;
  int ready_ = 0;
  BodyReadCounts counts_;
};

TEST_P(BodyReaderTest, ReadsTheRangeInBoundedPiecesInOrder) {
  std::string data(300 * 1024 + 17, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + i * 7 % 26);
  write(data);
  BodyReader r(&loop_, onReady, &ready_, &counts_, cache());
  r.start(file(100, data.size() - 200));
  size_t pieces = 0, largest = 0;
  EXPECT_EQ(drain(r, pieces, largest), data.substr(100, data.size() - 200));
  EXPECT_TRUE(r.finished());
  EXPECT_EQ(largest, BodyReader::kPiece);
  EXPECT_EQ(pieces, 5u);  // 300 KiB - 183 octets in pieces of 64 KiB
  // A file just written is in the page cache: read without the thread pool, no callback,
  // where the file system takes RWF_NOWAIT (the fresh-check machine's /tmp did not: there
  // the reader falls back to the pool, as it must).
  if (cache() && nowaitWorks()) {
    EXPECT_EQ(ready_, 0);
    EXPECT_EQ(counts_.cache, 5u);
    EXPECT_EQ(counts_.pool, 0u);
  } else {
    EXPECT_GE(ready_, 5);
    EXPECT_EQ(counts_.cache, 0u);
    EXPECT_EQ(counts_.pool, 5u);
  }
  EXPECT_EQ(r.reading(), 0u);
}

TEST_P(BodyReaderTest, EmptyBodyIsFinishedAtOnce) {
  BodyReader r(&loop_, onReady, &ready_, &counts_, cache());
  r.start(BodyFile{});
  EXPECT_TRUE(r.finished());
  EXPECT_FALSE(r.front().has_value());
}

TEST_P(BodyReaderTest, FileEndingBeforeTheBodyFails) {
  write(std::string(100 * 1024, 'x'));
  BodyReader r(&loop_, onReady, &ready_, &counts_, cache());
  r.start(file(0, 200 * 1024));  // the record says more than the file holds: damage
  size_t pieces = 0, largest = 0;
  std::string got = drain(r, pieces, largest);
  EXPECT_TRUE(r.failed());
  EXPECT_FALSE(r.finished());
  EXPECT_EQ(r.error(), "the spool file ends before the body does");
  EXPECT_LE(got.size(), 100u * 1024);
  while (r.reading() > 0) uv_run(&loop_, UV_RUN_ONCE);
}

TEST_P(BodyReaderTest, FileGoneBetweenPiecesFails) {
  write(std::string(200 * 1024, 'z'));
  bool gone = false;
  BodyReader r(&loop_, onReady, &ready_, &counts_, cache());
  r.start(BodyFile{[&] { return gone ? -1 : fd_; }, 0, 200 * 1024});
  while (!r.front() && !r.failed()) uv_run(&loop_, UV_RUN_ONCE);
  ASSERT_FALSE(r.failed());
  gone = true;  // its segment deleted while the first piece is being sent
  r.pop();      // the first slot would read the third piece now: it cannot
  EXPECT_TRUE(r.failed());
  EXPECT_EQ(r.error(), "the body's spool file is gone");
  EXPECT_FALSE(r.finished());
  while (r.reading() > 0) uv_run(&loop_, UV_RUN_ONCE);
}

TEST_P(BodyReaderTest, StopReadsNothingMoreAndLetsTheReadsInFlightEnd) {
  if (cache()) GTEST_SKIP() << "reads from the page cache are never in flight";
  write(std::string(1024 * 1024, 'y'));
  BodyReader r(&loop_, onReady, &ready_, &counts_, cache());
  r.start(file(0, 1024 * 1024));
  EXPECT_EQ(r.reading(), 2u);  // two pieces asked for at once
  r.stop();
  while (r.reading() > 0) uv_run(&loop_, UV_RUN_ONCE);
  EXPECT_EQ(ready_, 2);
  ASSERT_TRUE(r.front().has_value());
  r.pop();
  EXPECT_EQ(r.reading(), 0u);  // the freed buffer asks for nothing after stop()
  EXPECT_EQ(uv_run(&loop_, UV_RUN_NOWAIT), 0);
}

INSTANTIATE_TEST_SUITE_P(BothPaths, BodyReaderTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "PageCache" : "ThreadPool"; });

}  // namespace
}  // namespace postern
