#include "queue/quarantine_list.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace postern {
namespace {

namespace fs = std::filesystem;

class SpoolQuarantineList : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("postern_qlist_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // A file of n octets at spool_dir/w<worker>/quarantine/name.
  fs::path put(const std::string& worker, const std::string& name, size_t n) {
    fs::path dir = root_ / worker / "quarantine";
    fs::create_directories(dir);
    std::ofstream(dir / name, std::ios::binary) << std::string(n, 'x');
    return dir / name;
  }

  fs::path root_;
};

TEST_F(SpoolQuarantineList, ListsRangesByWorkerSegmentAndOffset) {
  put("w1", "seg-00000002.log.10+5", 5);
  put("w0", "seg-00000003.log.100+20", 20);
  put("w0", "seg-00000001.log.7+3", 2);  // a copy cut short: its size says so
  put("w0", "seg-00000003.log.24+20", 20);
  fs::create_directories(root_ / "w2");  // no quarantine: nothing, and no error

  const QuarantineListing q = listQuarantine(root_.string());
  ASSERT_EQ(q.ranges.size(), 4u);
  EXPECT_EQ(q.ranges[0].worker, 0u);
  EXPECT_EQ(q.ranges[0].range, (QuarantineName{1, 7, 3}));
  EXPECT_EQ(q.ranges[0].size, 2u);
  EXPECT_EQ(q.ranges[0].path, (root_ / "w0/quarantine/seg-00000001.log.7+3").string());
  EXPECT_EQ(q.ranges[1].range, (QuarantineName{3, 24, 20}));
  EXPECT_EQ(q.ranges[2].range, (QuarantineName{3, 100, 20}));
  EXPECT_EQ(q.ranges[3].worker, 1u);
  EXPECT_EQ(q.ranges[3].range, (QuarantineName{2, 10, 5}));
  EXPECT_GT(q.ranges[3].mtime_ms, 0);
  EXPECT_EQ(q.bytes(), 3u + 20 + 20 + 5);
  EXPECT_TRUE(q.ignored.empty());
  EXPECT_TRUE(q.errors.empty());
  EXPECT_FALSE(q.truncated);
}

TEST_F(SpoolQuarantineList, HostileEntriesAreIgnoredAndNamedPrintably) {
  put("w0", "seg-00000001.log.7+3", 3);
  put("w0", "seg-00000001.log.07+3", 3);
  put("w0", "notes.txt", 1);
  put("w0", std::string("seg-00000001.log.1+2\x1b[2J", 24), 1);  // a terminal escape
  put("w0", "seg-00000001.log.1+2\xff", 1);
  fs::create_directories(root_ / "w0/quarantine/seg-00000001.log.9+9");  // not a file
  fs::create_symlink("/etc/passwd", root_ / "w0/quarantine/seg-00000001.log.5+5");
  put("w01", "seg-00000001.log.1+1", 1);  // not a worker directory the relay names
  put("wx", "seg-00000001.log.1+1", 1);
  std::ofstream(root_ / "admin.token") << "t";

  const QuarantineListing q = listQuarantine(root_.string());
  ASSERT_EQ(q.ranges.size(), 1u);
  EXPECT_EQ(q.ranges[0].range, (QuarantineName{1, 7, 3}));
  const std::string dir = (root_ / "w0/quarantine/").string();
  EXPECT_EQ(q.ignored, (std::vector<std::string>{
                           dir + "notes.txt",
                           dir + "seg-00000001.log.07+3",
                           dir + "seg-00000001.log.1+2\\x1b[2J",
                           dir + "seg-00000001.log.1+2\\xff",
                           dir + "seg-00000001.log.5+5",
                           dir + "seg-00000001.log.9+9",
                       }));
  EXPECT_TRUE(q.errors.empty());
}

TEST_F(SpoolQuarantineList, StopsAtTheLimitAndSaysSo) {
  for (int i = 0; i < 30; ++i) put("w0", "seg-00000001.log." + std::to_string(i) + "+1", 1);
  QuarantineListing q = listQuarantine(root_.string(), 20);
  EXPECT_TRUE(q.truncated);
  EXPECT_EQ(q.examined, 20u);
  EXPECT_EQ(q.ranges.size(), 19u);  // the spool_dir's own entry (w0) counts too
  q = listQuarantine(root_.string(), 31);
  EXPECT_FALSE(q.truncated);
  EXPECT_EQ(q.ranges.size(), 30u);
}

TEST_F(SpoolQuarantineList, AnUnreadableSpoolIsAnErrorNotACrash) {
  const QuarantineListing q = listQuarantine((root_ / "missing").string());
  EXPECT_TRUE(q.ranges.empty());
  ASSERT_EQ(q.errors.size(), 1u);
  EXPECT_NE(q.errors[0].find("missing"), std::string::npos);
}

TEST_F(SpoolQuarantineList, OneWorkerDirectory) {
  put("w3", "seg-0000000a.log.0+4", 4);
  QuarantineListing q;
  listWorkerQuarantine((root_ / "w3").string(), 3, q);
  ASSERT_EQ(q.ranges.size(), 1u);
  EXPECT_EQ(q.ranges[0].worker, 3u);
  EXPECT_EQ(q.ranges[0].range, (QuarantineName{10, 0, 4}));
  listWorkerQuarantine((root_ / "w4").string(), 4, q);  // none: no error
  EXPECT_TRUE(q.errors.empty());
}

TEST(SpoolPrintableName, EscapesWhatATerminalOrJsonWouldTakeForSomethingElse) {
  EXPECT_EQ(printableName("seg-00000001.log.1+2"), "seg-00000001.log.1+2");
  EXPECT_EQ(printableName(std::string("a\nb\x7f\\\xc3\xa9\0", 8)),
            "a\\x0ab\\x7f\\x5c\\xc3\\xa9\\x00");
}

}  // namespace
}  // namespace postern
