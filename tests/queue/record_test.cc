#include "queue/record.h"

#include <gtest/gtest.h>

#include "queue/crc32c.h"

namespace postern {
namespace {

TEST(Crc32c, KnownVector) {
  // RFC 3720 B.4: CRC32C of "123456789".
  EXPECT_EQ(crc32c(0, "123456789", 9), 0xE3069283u);
  std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(0, zeros.data(), zeros.size()), 0x8A9136AAu);
}

TEST(Crc32c, CombineEqualsTheCrcOfTheConcatenation) {
  std::string data;
  for (int i = 0; i < 300000; ++i) data.push_back(static_cast<char>((i * 131) ^ (i >> 7)));
  const uint32_t whole = crc32c(0, data.data(), data.size());
  for (size_t split :
       {size_t{0}, size_t{1}, size_t{9}, size_t{4096}, size_t{123457}, data.size()}) {
    const uint32_t a = crc32c(0, data.data(), split);
    const uint32_t b = crc32c(0, data.data() + split, data.size() - split);
    EXPECT_EQ(crc32cCombine(a, b, data.size() - split), whole) << "split at " << split;
  }
  // B itself checksummed in pieces, as a spilled body is.
  uint32_t b = crc32c(0, data.data() + 10, 1000);
  b = crc32c(b, data.data() + 1010, data.size() - 1010);
  EXPECT_EQ(crc32cCombine(crc32c(0, data.data(), 10), b, data.size() - 10), whole);
}

constexpr uint64_t kSalt = 0x5a17'0000'1234'abcdull;

std::optional<DecodedRecord> decode(std::string_view data, uint64_t salt = kSalt) {
  RecordRead r = readRecord(data, salt);
  if (r.status != RecordStatus::kOk) return std::nullopt;
  return r.record;
}

TEST(Record, MessageRoundTrip) {
  Envelope env;
  env.id = 0x1122334455667788ull;
  env.received_ms = 1700000000123;
  env.sender = "s@x.test";
  env.recipients = {"a@y.test", "b@z.test"};
  env.smtputf8 = true;
  env.dsn_ret = "HDRS";
  env.dsn_envid = "QQ+2Bx";
  env.dsn_notify = {"", "SUCCESS,FAILURE"};
  env.dsn_orcpt = {"", "rfc822;b@z.test"};
  std::string out;
  size_t body_offset = 0;
  encodeMessage(out, env, "Subject: hi\r\n\r\nbody\r\n", body_offset, kSalt);
  encodeDone(out, env.id, 1, kSalt);

  auto rec = decode(out);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->type, RecordType::kMessage);
  EXPECT_EQ(rec->envelope.id, env.id);
  EXPECT_EQ(rec->envelope.received_ms, env.received_ms);
  EXPECT_EQ(rec->envelope.sender, env.sender);
  EXPECT_EQ(rec->envelope.recipients, env.recipients);
  EXPECT_TRUE(rec->envelope.smtputf8);
  EXPECT_EQ(rec->envelope.dsn_ret, "HDRS");
  EXPECT_EQ(rec->envelope.dsn_envid, "QQ+2Bx");
  EXPECT_EQ(rec->envelope.dsn_notify, env.dsn_notify);
  EXPECT_EQ(rec->envelope.dsn_orcpt, env.dsn_orcpt);
  EXPECT_EQ(rec->body_offset, body_offset);
  EXPECT_EQ(out.substr(rec->body_offset, rec->body_size), "Subject: hi\r\n\r\nbody\r\n");

  auto done = decode(std::string_view(out).substr(rec->size));
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->type, RecordType::kDone);
  EXPECT_EQ(done->done_id, env.id);
  EXPECT_EQ(done->done_rcpt, 1u);
}

TEST(Record, TornOrCorruptIsRejected) {
  Envelope env;
  env.id = 1;
  env.recipients = {"a@b"};
  std::string out;
  size_t off;
  encodeMessage(out, env, "x\r\n", off, kSalt);
  for (size_t cut = 0; cut < out.size(); ++cut) {
    RecordRead r = readRecord(std::string_view(out).substr(0, cut), kSalt);
    EXPECT_NE(r.status, RecordStatus::kOk) << cut;
    // Once the header is whole, the reader knows the record is torn and how long it is.
    if (cut >= kRecordHeaderSize) {
      EXPECT_EQ(r.status, RecordStatus::kTorn) << cut;
      EXPECT_EQ(r.size, out.size());
    }
  }
  for (size_t i = 0; i < out.size(); ++i) {
    std::string bad = out;
    bad[i] ^= 0x20;
    RecordRead r = readRecord(bad, kSalt);
    EXPECT_NE(r.status, RecordStatus::kOk) << i;
    // A flip in the payload leaves a header whose length can be trusted.
    EXPECT_EQ(r.status,
              i < kRecordHeaderSize ? RecordStatus::kBadHeader : RecordStatus::kBadPayload)
        << i;
  }
}

// The header CRC is seeded with the spool's salt: a record made without it (say, forged
// inside a message body) is not taken for a record of this spool.
TEST(Record, HeaderNeedsTheSpoolsSalt) {
  Envelope env;
  env.id = 7;
  env.recipients = {"a@b"};
  std::string out;
  size_t off;
  encodeMessage(out, env, "x\r\n", off, kSalt);
  EXPECT_TRUE(decode(out).has_value());
  EXPECT_EQ(readRecord(out, kSalt + 1).status, RecordStatus::kBadHeader);
  // Found again after garbage, but only with the right salt.
  std::string data = std::string(100, 'g') + out;
  EXPECT_EQ(findNextRecord(data, 0, kSalt), 100u);
  EXPECT_EQ(findNextRecord(data, 0, kSalt + 1), data.size());
}

TEST(Record, SegmentHeader) {
  std::string h = encodeSegmentHeader(kSalt);
  EXPECT_EQ(h.size(), kSegmentHeaderSize);
  EXPECT_TRUE(isFormat2Segment(h));
  EXPECT_EQ(decodeSegmentHeader(h), kSalt);
  h[10] ^= 1;
  EXPECT_TRUE(isFormat2Segment(h));
  EXPECT_EQ(decodeSegmentHeader(h), std::nullopt);
}

TEST(Record, QueueIdIsSixteenHexDigits) { EXPECT_EQ(queueIdString(0xABCull), "0000000000000ABC"); }

TEST(Record, QueueIdParsesBack) {
  EXPECT_EQ(parseQueueId(queueIdString(0x01A2020062A40101ull)), 0x01A2020062A40101ull);
  EXPECT_EQ(parseQueueId("00000000000abcdf"), 0xABCDFull);
  EXPECT_FALSE(parseQueueId("0000000000000ABG"));
  EXPECT_FALSE(parseQueueId("ABC"));
  EXPECT_FALSE(parseQueueId("00000000000000ABC"));
}

}  // namespace
}  // namespace postern
