#include "queue/spool.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <optional>

namespace postern {
namespace {

namespace fs = std::filesystem;

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("postern_spool_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    uv_loop_init(&loop_);
  }
  void TearDown() override {
    uv_loop_close(&loop_);
    fs::remove_all(dir_);
  }

  // Opens a spool, runs fn(spool, recovered) and the loop until the spool is idle.
  template <typename Fn>
  void withSpool(Fn fn, size_t segment_limit = 64u << 20) {
    auto spool = std::make_unique<Spool>(&loop_, dir_.string(), 0, segment_limit);
    Result<std::vector<SpooledRef>> opened = spool->open();
    ASSERT_TRUE(opened) << opened.error();
    fn(*spool, *opened);
    while (spool->busy()) uv_run(&loop_, UV_RUN_ONCE);
    spool->close();
    uv_run(&loop_, UV_RUN_DEFAULT);
  }

  Envelope env(Spool& s, std::vector<std::string> rcpts) {
    Envelope e;
    e.id = s.nextId();
    e.received_ms = 1;
    e.sender = "sender@x.test";
    e.recipients = std::move(rcpts);
    return e;
  }

  std::vector<fs::path> segments() {
    std::vector<fs::path> out;
    for (auto& e : fs::directory_iterator(dir_)) {
      if (e.path().filename().string().starts_with("seg-")) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path dir_;
  uv_loop_t loop_;
};

TEST_F(SpoolTest, CommittedMessagesAreRecoveredUntilDone) {
  std::vector<uint64_t> ids;
  withSpool([&](Spool& s, auto& rec) {
    EXPECT_TRUE(rec.empty());
    int committed = 0;
    for (int i = 0; i < 3; ++i) {
      Envelope e = env(s, {"a@y.test", "b@y.test"});
      ids.push_back(e.id);
      s.append(e, "body " + std::to_string(i) + "\r\n", [&](bool ok, const StoredRef& ref) {
        EXPECT_TRUE(ok);
        std::string body;
        {
      Result<std::string> read = s.readBody(ref);
      EXPECT_TRUE(read) << (read ? "" : read.error());
      if (read) body = *read;
    }
        EXPECT_EQ(body.substr(0, 5), "body ");
        ++committed;
      });
    }
    while (committed < 3) uv_run(&loop_, UV_RUN_ONCE);
    s.markDone(ids[0], 0);
    s.markDone(ids[0], 1);
    s.markDone(ids[1], 1);
  });
  // "Restart": message 0 is done, message 1 has recipient 0 left, message 2 both.
  withSpool([&](Spool& s, auto& rec) {
    ASSERT_EQ(rec.size(), 2u);
    EXPECT_EQ(rec[0].id, ids[1]);
    EXPECT_EQ(rec[0].done.toVector(2), (std::vector<bool>{false, true}));
    EXPECT_EQ(rec[1].id, ids[2]);
    EXPECT_EQ(rec[1].recipients, 2u);
    EXPECT_EQ(rec[1].received_ms, 1);
    std::string body;
    {
      Result<std::string> read = s.readBody(rec[1].ref);
      ASSERT_TRUE(read) << (read ? "" : read.error());
      if (read) body = *read;
    }
    EXPECT_EQ(body, "body 2\r\n");
    EXPECT_GT(s.nextId(), ids[2]);
    // Recovery keeps where a message lies; its envelope is read back when it is due.
    Envelope e;
    {
      Result<Envelope> read = s.readEnvelope(ids[2], rec[1].ref);
      ASSERT_TRUE(read) << (read ? "" : read.error());
      if (read) e = *read;
    }
    EXPECT_EQ(e.sender, "sender@x.test");
    EXPECT_EQ(e.recipients, (std::vector<std::string>{"a@y.test", "b@y.test"}));
    EXPECT_FALSE(s.readEnvelope(ids[1], rec[1].ref)) << "another message's id";
  });
}

TEST_F(SpoolTest, AnEnvelopeDamagedAfterRecoveryIsNotReadBack) {
  uint64_t id = 0;
  withSpool([&](Spool& s, auto&) {
    Envelope e = env(s, {"a@y.test"});
    id = e.id;
    bool done = false;
    s.append(e, "body\r\n", [&](bool ok, const StoredRef&) { done = ok; });
    while (!done) uv_run(&loop_, UV_RUN_ONCE);
  });
  withSpool([&](Spool& s, auto& rec) {
    ASSERT_EQ(rec.size(), 1u);
    Envelope e;
    {
      Result<Envelope> read = s.readEnvelope(id, rec[0].ref);
      ASSERT_TRUE(read) << (read ? "" : read.error());
      if (read) e = *read;
    }
    // A bit flipped in the sender while the relay runs (17-octet record header, id, arrival
    // time, the sender's length): it must not be read back as this message's sender.
    const auto seg = segments()[0];
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(rec[0].ref.body_offset - rec[0].ref.head_size + 17 + 8 + 8 + 4);
    f.seekg(at);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(at);
    f.write(&c, 1);
    f.close();
    EXPECT_FALSE(s.readEnvelope(id, rec[0].ref));
  });
}

TEST_F(SpoolTest, TornTailIsSkippedAndEverythingBeforeKept) {
  withSpool([&](Spool& s, auto&) {
    int committed = 0;
    for (int i = 0; i < 2; ++i) {
      s.append(env(s, {"a@y.test"}), "message " + std::to_string(i) + "\r\n",
               [&](bool ok, const StoredRef&) { committed += ok; });
    }
    while (committed < 2) uv_run(&loop_, UV_RUN_ONCE);
  });
  auto segs = segments();
  ASSERT_EQ(segs.size(), 1u);
  auto size = fs::file_size(segs[0]);
  fs::resize_file(segs[0], size - 3);  // tear the last record
  withSpool([&](Spool& s, auto& rec) {
    ASSERT_EQ(rec.size(), 1u);
    std::string body;
    {
      Result<std::string> read = s.readBody(rec[0].ref);
      ASSERT_TRUE(read) << (read ? "" : read.error());
      if (read) body = *read;
    }
    EXPECT_EQ(body, "message 0\r\n");
  });
}

TEST_F(SpoolTest, FinishedSegmentsAreDeleted) {
  withSpool(
      [&](Spool& s, auto&) {
        std::vector<std::pair<uint64_t, StoredRef>> done;
        for (int i = 0; i < 4; ++i) {
          Envelope e = env(s, {"a@y.test"});
          s.append(e, std::string(200, 'x') + "\r\n", [&, id = e.id](bool ok, const StoredRef& r) {
            ASSERT_TRUE(ok);
            done.emplace_back(id, r);
          });
          while (done.size() < static_cast<size_t>(i + 1)) uv_run(&loop_, UV_RUN_ONCE);
        }
        EXPECT_GE(s.segmentCount(), 3u);  // 100-byte limit: a segment per message or so
        for (auto& [id, ref] : done) {
          s.markDone(id, 0);
          s.release(ref);
        }
        EXPECT_EQ(s.segmentCount(), 1u);  // only the active one is left
      },
      100);
  withSpool([&](Spool&, auto& rec) { EXPECT_TRUE(rec.empty()); });
  EXPECT_EQ(segments().size(), 1u);
}

// A write that fails (here: the file size limit, EFBIG) is reported as not committed,
// leaves nothing behind in the segment, and does not stop later messages.
TEST_F(SpoolTest, FailedWriteIsRefusedAndTruncatedAway) {
  std::vector<uint64_t> ids;
  withSpool([&](Spool& s, auto&) {
    auto commit = [&](const std::string& body) {
      std::optional<bool> result;
      Envelope e = env(s, {"a@y.test"});
      s.append(e, body, [&](bool ok, const StoredRef&) { result = ok; });
      while (!result) uv_run(&loop_, UV_RUN_ONCE);
      if (*result) ids.push_back(e.id);
      return *result;
    };
    ASSERT_TRUE(commit("first\r\n"));
    auto seg = segments()[0];
    auto size_before = fs::file_size(seg);

    std::signal(SIGXFSZ, SIG_IGN);
    rlimit old{};
    getrlimit(RLIMIT_FSIZE, &old);
    rlimit tight = old;
    tight.rlim_cur = size_before + 100;
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &tight), 0);
    bool big_ok = commit(std::string(4096, 'x') + "\r\n");
    setrlimit(RLIMIT_FSIZE, &old);

    EXPECT_FALSE(big_ok);
    EXPECT_EQ(fs::file_size(seg), size_before);  // the partial record was cut off
    EXPECT_TRUE(s.writeFailing());
    // With nothing to write, the spool still finds out that the disk takes writes again
    // (its probe), so a relay reported unready does not stay so for want of mail. Bounded:
    // a probe runs every second.
    uv_timer_t bound;
    uv_timer_init(&loop_, &bound);
    bool expired = false;
    bound.data = &expired;
    uv_timer_start(
        &bound, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, 10000, 0);
    while (s.writeFailing() && !expired) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&bound), nullptr);
    EXPECT_FALSE(s.writeFailing());
    EXPECT_EQ(fs::file_size(seg), size_before);  // the probe left nothing behind
    EXPECT_TRUE(commit("after\r\n"));
  });
  withSpool([&](Spool& s, auto& rec) {
    ASSERT_EQ(rec.size(), 2u);
    EXPECT_EQ(rec[0].id, ids[0]);
    EXPECT_EQ(rec[1].id, ids[1]);
    std::string body;
    {
      Result<std::string> read = s.readBody(rec[1].ref);
      ASSERT_TRUE(read) << (read ? "" : read.error());
      if (read) body = *read;
    }
    EXPECT_EQ(body, "after\r\n");
  });
}

TEST_F(SpoolTest, SpilledBodiesShareABatchWithBodiesInMemory) {
  // 3 MiB, more than the 1 MiB pieces the copy works in, written to the spill in parts.
  std::string big;
  for (size_t i = 0; big.size() < (3u << 20) + 12345; ++i) {
    big += "line " + std::to_string(i) + " of a large message\r\n";
  }
  std::vector<uint64_t> ids;
  withSpool([&](Spool& s, auto&) {
    auto made = s.newSpill();
    ASSERT_TRUE(made) << made.error();
    std::unique_ptr<SpillFile> spill = std::move(*made);
    for (size_t off = 0; off < big.size(); off += 100000) {
      ASSERT_TRUE(spill->append(std::string_view(big).substr(off, 100000)));
    }
    EXPECT_EQ(spill->size(), big.size());
    // Three messages in one batch: in memory, spilled, in memory.
    int done = 0;
    for (int i = 0; i < 3; ++i) {
      Envelope e = env(s, {"r" + std::to_string(i) + "@y.test"});
      ids.push_back(e.id);
      auto cb = [&](bool ok, const StoredRef&) { done += ok ? 1 : 100; };
      if (i == 1) {
        s.append(e, std::move(spill), cb);
      } else {
        s.append(e, "small " + std::to_string(i) + "\r\n", cb);
      }
    }
    while (done < 3) uv_run(&loop_, UV_RUN_ONCE);
    EXPECT_EQ(done, 3);
  });
  // The spill file was unnamed: only the segment is in the directory.
  EXPECT_EQ(segments().size(), 1u);
  withSpool([&](Spool& s, auto& rec) {
    ASSERT_EQ(rec.size(), 3u);  // recovery checks every record's CRC
    std::string body;
    {
      Result<std::string> read = s.readBody(rec[1].ref);
      ASSERT_TRUE(read) << (read ? "" : read.error());
      if (read) body = *read;
    }
    EXPECT_EQ(rec[1].id, ids[1]);
    EXPECT_TRUE(body == big) << body.size() << " octets instead of " << big.size();
    {
      Result<std::string> read = s.readBody(rec[2].ref);
      ASSERT_TRUE(read) << (read ? "" : read.error());
      if (read) body = *read;
    }
    EXPECT_EQ(body, "small 2\r\n");
  });
}

TEST_F(SpoolTest, UnwritableSpoolDirectoryFailsToOpen) {
  fs::create_directories(dir_.parent_path());
  std::ofstream(dir_.string()) << "not a directory";
  Spool s(&loop_, dir_.string());
  Result<std::vector<SpooledRef>> opened = s.open();
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error(), "");
  s.close();
  uv_run(&loop_, UV_RUN_DEFAULT);
  fs::remove(dir_);
}

}  // namespace
}  // namespace postern
