#include "queue/spool_dirs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>

#include "queue/spool.h"

namespace postern {
namespace {

namespace fs = std::filesystem;

TEST(SpoolDirs, OrphanSegmentsMoveAfterTheTargetsOwn) {
  fs::path root = fs::path(::testing::TempDir()) / ("postern_dirs_" + std::to_string(getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "w0");
  fs::create_directories(root / "w1");
  fs::create_directories(root / "w3");
  std::ofstream(root / "w0" / "seg-00000002.log") << "w0";
  std::ofstream(root / "w1" / "seg-00000001.log") << "w1a";
  std::ofstream(root / "w1" / "seg-00000007.log") << "w1b";
  std::ofstream(root / "w3" / "seg-00000001.log") << "w3";

  Status merged = mergeOrphanSpools(root.string(), 1);
  ASSERT_TRUE(merged) << merged.error();
  EXPECT_FALSE(fs::exists(root / "w1"));
  EXPECT_FALSE(fs::exists(root / "w3"));
  auto read = [&](const char* name) {
    std::ifstream f(root / "w0" / name);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  EXPECT_EQ(read("seg-00000002.log"), "w0");
  // Order among moved segments is kept within each orphan directory.
  std::set<std::string> moved{read("seg-00000003.log"), read("seg-00000004.log"),
                              read("seg-00000005.log")};
  EXPECT_EQ(moved, (std::set<std::string>{"w1a", "w1b", "w3"}));
  EXPECT_EQ(read("seg-00000003.log") == "w1a", read("seg-00000004.log") == "w1b");
  fs::remove_all(root);
}

TEST(SpoolDirs, HoldMarkersMoveWithTheirSegmentsAndOnlyExactNamesCount) {
  fs::path root = fs::path(::testing::TempDir()) / ("postern_hold_" + std::to_string(getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "w0" / kHoldDir);
  fs::create_directories(root / "w1" / kHoldDir);
  std::ofstream(root / "w1" / "seg-00000001.log") << "w1";
  std::ofstream(root / "w0" / kHoldDir / "00000000000A0100");
  std::ofstream(root / "w1" / kHoldDir / "00000000000B0101");
  // Not markers: lower case (released by its upper-case name, so never), short, junk.
  std::ofstream(root / "w0" / kHoldDir / "00000000000a0200");
  std::ofstream(root / "w0" / kHoldDir / "0A0100");
  std::ofstream(root / "w0" / kHoldDir / "x");
  std::ofstream(root / "w0" / kHoldDir / "00000000000A0100.tmp");

  ASSERT_TRUE(mergeOrphanSpools(root.string(), 1));
  EXPECT_FALSE(fs::exists(root / "w1"));
  EXPECT_EQ(readHoldMarkers((root / "w0").string()), (std::vector<uint64_t>{0xA0100, 0xB0101}));
  EXPECT_TRUE(readHoldMarkers((root / "none").string()).empty());
  fs::remove_all(root);
}

TEST(SpoolDirs, CreatesMissingParentsAndRefusesAFile) {
  fs::path base = fs::temp_directory_path() / ("postern-durable-" + std::to_string(::getpid()));
  fs::remove_all(base);
  EXPECT_TRUE(createDurableDirectories((base / "a" / "b" / "w0").string()).ok());
  EXPECT_TRUE(fs::is_directory(base / "a" / "b" / "w0"));
  EXPECT_TRUE(createDurableDirectories((base / "a" / "b" / "w0").string()).ok());  // exists
  std::ofstream(base / "file") << "x";
  EXPECT_FALSE(createDurableDirectories((base / "file" / "w0").string()).ok());
  fs::remove_all(base);
}

TEST(SpoolDirs, NothingToDoWithoutASpool) {
  EXPECT_TRUE(mergeOrphanSpools("/nonexistent/postern-spool", 2).ok());
}

TEST(SpoolIds, WorkersNeverCollide) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Spool a(&loop, "/unused/a", 0), b(&loop, "/unused/b", 1);
    std::set<uint64_t> ids;
    for (int i = 0; i < 1000; ++i) {
      uint64_t x = a.nextId(), y = b.nextId();
      EXPECT_EQ(x & 0xff, 0u);
      EXPECT_EQ(y & 0xff, 1u);
      ids.insert(x);
      ids.insert(y);
    }
    EXPECT_EQ(ids.size(), 2000u);
    a.close();
    b.close();
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_loop_close(&loop);
}

TEST(SpoolNames, SegmentNamesRoundTripAndNothingElseParses) {
  for (uint32_t id : {0u, 1u, 0xabcdefu, 0xffffffffu}) {
    EXPECT_EQ(parseSegmentFileName(segmentFileName(id)), id);
  }
  // What sscanf("%8x") would have taken: upper case, a sign, "0x", blanks.
  for (const char* bad :
       {"seg-0000000A.log", "seg-+0000001.log", "seg-0x000001.log", "seg- 0000001.log",
        "seg-0000001.log", "seg-000000001.log", "seg-00000001.lo", "seg-00000001.logx",
        "SEG-00000001.log", "seg-0000000g.log", ""}) {
    EXPECT_EQ(parseSegmentFileName(bad), std::nullopt) << bad;
  }
}

TEST(SpoolNames, QuarantineNamesRoundTrip) {
  const QuarantineName cases[] = {
      {1, 0, 0}, {1, 24, 317}, {0xffffffffu, UINT64_MAX - 1, 1}, {0x10, 0, UINT64_MAX}};
  for (const QuarantineName& q : cases) {
    const std::string name = quarantineFileName(q);
    EXPECT_EQ(parseQuarantineFileName(name), q) << name;
  }
  EXPECT_EQ(quarantineFileName({0x2a, 4096, 77}), "seg-0000002a.log.4096+77");
}

TEST(SpoolNames, HostileQuarantineNamesAreRefused) {
  const std::string kNul("seg-00000001.log.1+2\0", 22);
  for (std::string_view bad : std::initializer_list<std::string_view>{
           "",
           ".",
           "..",
           "seg-00000001.log",
           "seg-00000001.log.",
           "seg-00000001.log.+",
           "seg-00000001.log.1+",
           "seg-00000001.log.+1",
           "seg-00000001.log.1",
           "seg-00000001.log.1-2",
           "seg-00000001.log.1+2+3",
           "seg-00000001.log.01+2",
           "seg-00000001.log.1+02",
           "seg-00000001.log.-1+2",
           "seg-00000001.log.1+-2",
           "seg-00000001.log. 1+2",
           "seg-00000001.log.1+2 ",
           "seg-00000001.log.0x1+2",
           "seg-00000001.log.1+2\n",
           "seg-00000001.log1+2",
           "seg-0000000A.log.1+2",
           "seg-00000001.log.1+2.tmp",
           "seg-00000001.log.18446744073709551616+0",  // offset past 64 bits
           "seg-00000001.log.0+18446744073709551616",  // length past 64 bits
           "seg-00000001.log.18446744073709551615+1",  // the end past 64 bits
           "seg-00000001.log.99999999999999999999999999999999999999+1",
           "../seg-00000001.log.1+2",
           "seg-00000001.log/1+2",
           "seg-00000001.log.\xd9\xa1+2",
           kNul}) {
    EXPECT_EQ(parseQuarantineFileName(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(parseQuarantineFileName("seg-00000001.log.18446744073709551615+0"),
            (QuarantineName{1, UINT64_MAX, 0}));
}

}  // namespace
}  // namespace postern
