// Damage to a spool costs only the records it touches (queue/segment_replay.h): a flipped
// bit, a zeroed 4 KiB page and a cut out of the middle of a segment, each recovering every
// record it did not touch, the damaged bytes kept in the quarantine directory. And format 1
// segments, written before record headers had their own CRC, are still read.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "queue/crc32c.h"
#include "queue/record.h"
#include "queue/spool.h"
#include "queue/spool_check.h"

namespace postern {
namespace {

namespace fs = std::filesystem;

class SpoolDamageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("postern_damage_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    uv_loop_init(&loop_);
  }
  void TearDown() override {
    uv_loop_close(&loop_);
    fs::remove_all(dir_);
  }

  struct Written {
    uint64_t id;
    uint64_t begin;  // the record's first octet in the segment
    uint64_t end;    // one past its last
    std::string body;
    std::string rcpt;
  };

  // Commits n messages of about 1 KB into one segment; returns where each record lies.
  std::vector<Written> writeMessages(int n) {
    std::vector<Written> out;
    run([&](Spool& s, std::vector<SpooledRef>&) {
      uint64_t prev_end = kSegmentHeaderSize;
      for (int i = 0; i < n; ++i) {
        Envelope e;
        e.id = s.nextId();
        e.received_ms = 1;
        e.sender = "s@x.test";
        e.recipients = {"r" + std::to_string(i) + "@y.test"};
        std::string body =
            "Subject: " + std::to_string(i) + "\r\n\r\n" + std::string(1000, 'a' + i % 26) + "\r\n";
        std::optional<StoredRef> ref;
        s.append(e, body, [&](bool ok, const StoredRef& r) {
          ASSERT_TRUE(ok);
          ref = r;
        });
        while (!ref) uv_run(&loop_, UV_RUN_ONCE);
        const uint64_t end = ref->body_offset + ref->body_size;
        out.push_back({e.id, prev_end, end, body, e.recipients[0]});
        prev_end = end;
      }
    });
    return out;
  }

  template <typename Fn>
  void run(Fn fn) {
    Spool spool(&loop_, dir_.string());
    Result<std::vector<SpooledRef>> opened = spool.open();
    ASSERT_TRUE(opened) << opened.error();
    fn(spool, *opened);
    while (spool.busy()) uv_run(&loop_, UV_RUN_ONCE);
    spool.close();
    uv_run(&loop_, UV_RUN_DEFAULT);
  }

  // Reopens the spool: the ids it recovered (with their bodies checked) and its quarantine.
  std::set<uint64_t> reopen(const std::vector<Written>& written, uint64_t* quarantined = nullptr) {
    std::set<uint64_t> ids;
    run([&](Spool& s, std::vector<SpooledRef>& recovered) {
      for (const auto& m : recovered) {
        ids.insert(m.id);
        std::string body;
        {
      Result<std::string> read = s.readBody(m.ref);
      EXPECT_TRUE(read) << (read ? "" : read.error());
      if (read) body = *read;
    }
        auto w = std::find_if(written.begin(), written.end(),
                              [&](const Written& x) { return x.id == m.id; });
        ASSERT_NE(w, written.end());
        EXPECT_EQ(body, w->body) << "a recovered body differs";
        // And its envelope reads back from where recovery says it lies (as delivery does).
        Envelope env;
        {
      Result<Envelope> read = s.readEnvelope(m.id, m.ref);
      EXPECT_TRUE(read) << (read ? "" : read.error());
      if (read) env = *read;
    }
        EXPECT_EQ(env.recipients, std::vector<std::string>{w->rcpt});
      }
      if (quarantined != nullptr) *quarantined = s.quarantinedBytes();
    });
    return ids;
  }

  fs::path firstSegment() {
    for (auto& e : fs::directory_iterator(dir_)) {
      if (e.path().filename() == "seg-00000001.log") return e.path();
    }
    ADD_FAILURE() << "no first segment";
    return {};
  }

  std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void write(const fs::path& p, const std::string& data) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << data;
  }

  std::vector<fs::path> quarantine() {
    std::vector<fs::path> out;
    if (!fs::exists(dir_ / "quarantine")) return out;
    for (auto& e : fs::directory_iterator(dir_ / "quarantine")) out.push_back(e.path());
    return out;
  }

  // The ids of the records that do not overlap [from, to).
  static std::set<uint64_t> untouched(const std::vector<Written>& w, uint64_t from, uint64_t to) {
    std::set<uint64_t> ids;
    for (const auto& x : w) {
      if (x.end <= from || x.begin >= to) ids.insert(x.id);
    }
    return ids;
  }

  fs::path dir_;
  uv_loop_t loop_;
};

TEST_F(SpoolDamageTest, FlippedBitCostsOneRecord) {
  auto w = writeMessages(10);
  fs::path seg = firstSegment();
  std::string data = read(seg);
  const uint64_t at = w[0].begin + (w[0].end - w[0].begin) / 2;  // in the first body
  data[at] ^= 0x04;
  write(seg, data);
  uint64_t quarantined = 0;
  EXPECT_EQ(reopen(w, &quarantined), untouched(w, at, at + 1));
  EXPECT_EQ(quarantined, w[0].end - w[0].begin);
  auto q = quarantine();
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(read(q[0]), data.substr(w[0].begin, w[0].end - w[0].begin));
  // The damaged segment stays while its other messages wait; the range is not copied twice.
  EXPECT_TRUE(fs::exists(seg));
  uint64_t again = 0;
  reopen(w, &again);
  EXPECT_EQ(again, 0u);
  EXPECT_EQ(quarantine().size(), 1u);
}

TEST_F(SpoolDamageTest, ASegmentIsKeptWhileItsDamageCannotBeQuarantined) {
  auto w = writeMessages(1);
  fs::path seg = firstSegment();
  std::string data = read(seg);
  data[w[0].begin + 100] ^= 0x01;  // the only message: nothing in the segment is live
  write(seg, data);
  write(dir_ / "quarantine", "a file where the directory should be");
  EXPECT_TRUE(reopen(w).empty());
  EXPECT_TRUE(fs::exists(seg)) << "deleted with its damaged octets copied nowhere";
  fs::remove(dir_ / "quarantine");
  uint64_t quarantined = 0;
  EXPECT_TRUE(reopen(w, &quarantined).empty());
  EXPECT_EQ(quarantined, w[0].end - w[0].begin);
  EXPECT_FALSE(fs::exists(seg)) << "every octet is accounted for now";
}

TEST_F(SpoolDamageTest, FlippedBitInAHeaderCostsOneRecord) {
  auto w = writeMessages(10);
  fs::path seg = firstSegment();
  std::string data = read(seg);
  data[w[3].begin + 5] ^= 0x40;  // the length field of the fourth record
  write(seg, data);
  EXPECT_EQ(reopen(w), untouched(w, w[3].begin, w[3].begin + 1));
}

TEST_F(SpoolDamageTest, ZeroedPageCostsOnlyTheRecordsOnIt) {
  auto w = writeMessages(12);
  fs::path seg = firstSegment();
  std::string data = read(seg);
  ASSERT_GT(data.size(), 3 * 4096u);
  std::fill(data.begin() + 4096, data.begin() + 8192, '\0');
  write(seg, data);
  auto expected = untouched(w, 4096, 8192);
  EXPECT_GE(expected.size(), 12u - 6);
  EXPECT_EQ(reopen(w), expected);
  ASSERT_EQ(quarantine().size(), 1u);
}

TEST_F(SpoolDamageTest, CutOutOfTheMiddleCostsOnlyWhatItTouches) {
  auto w = writeMessages(10);
  fs::path seg = firstSegment();
  std::string data = read(seg);
  const uint64_t from = w[4].begin + 100, to = w[5].begin + 200;
  data.erase(from, to - from);
  write(seg, data);
  // Records 4 and 5 lost their middle; the ones after moved but are found.
  std::set<uint64_t> expected = untouched(w, from, to);
  EXPECT_EQ(expected.size(), 8u);
  EXPECT_EQ(reopen(w), expected);
}

TEST_F(SpoolDamageTest, DamagedSegmentHeaderUsesTheSpoolsSalt) {
  auto w = writeMessages(5);
  fs::path seg = firstSegment();
  std::string data = read(seg);
  std::fill(data.begin(), data.begin() + kSegmentHeaderSize, '\0');
  write(seg, data);
  std::set<uint64_t> all;
  for (const auto& x : w) all.insert(x.id);
  EXPECT_EQ(reopen(w), all);
}

// A format 1 segment (records "u32 length | u32 CRC | u8 type | payload", no segment
// header), as earlier versions wrote them, is still replayed.
TEST_F(SpoolDamageTest, Format1SegmentsAreRead) {
  auto w = writeMessages(3);
  fs::path seg = firstSegment();
  const std::string v2 = read(seg);
  std::string v1;
  std::vector<Written> v1_written = w;
  std::string salt_text = read(dir_ / "salt");
  const uint64_t salt = std::stoull(salt_text, nullptr, 16);
  size_t pos = kSegmentHeaderSize;
  for (auto& x : v1_written) {
    RecordRead r = readRecord(std::string_view(v2).substr(pos), salt);
    ASSERT_EQ(r.status, RecordStatus::kOk);
    const std::string payload = v2.substr(pos + kRecordHeaderSize, r.size - kRecordHeaderSize);
    auto put = [&](uint32_t v) {
      for (int i = 0; i < 4; ++i) v1.push_back(static_cast<char>(v >> (8 * i)));
    };
    const char type = v2[pos + 8];
    uint32_t crc = crc32c(crc32c(0, &type, 1), payload.data(), payload.size());
    x.begin = v1.size();
    put(static_cast<uint32_t>(payload.size()));
    put(crc);
    v1.push_back(type);
    v1 += payload;
    x.end = v1.size();
    pos += r.size;
  }
  write(seg, v1);
  std::string report;
  EXPECT_EQ(checkSpool(dir_.string(), report), 0) << report;
  EXPECT_NE(report.find("format 1, 3 intact records"), std::string::npos) << report;
  std::set<uint64_t> all;
  for (const auto& x : w) all.insert(x.id);
  EXPECT_EQ(reopen(v1_written), all);
}

}  // namespace
}  // namespace postern
