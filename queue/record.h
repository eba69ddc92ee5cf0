// Spool record encoding (format 2). A segment file starts with a 32-octet header
//
//   "PSTRSEG2" | u64 salt | u32 CRC32C(the 16 octets before) | 12 zero octets
//
// and then holds records
//
//   u32 magic "PSR2" | u32 payload length | u8 type | u32 CRC32C(type + payload)
//   | u32 CRC32C(salt + the 13 header octets before) | payload
//
// little-endian. Message records carry the envelope and the body; Done records mark one
// recipient of one message as finished.
//
// Why this shape: damage must cost only the records it touches. Past a damaged record the
// reader finds the next one by its magic and header CRC (queue/segment_replay.h). The header CRC is
// seeded with the spool's random salt, so a record forged inside a message body (anyone may send
// one) is not taken for a real one when damage makes the reader search: its author cannot know the
// salt.
//
// Segments of format 1 (no segment header; records "u32 length | u32 CRC | u8 type |
// payload") are still read, up to their first bad record.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/config.h"
#include "queue/envelope.h"

namespace postern {

enum class RecordType : uint8_t { kMessage = 1, kDone = 2 };

constexpr size_t kRecordHeaderSize = 17;
constexpr size_t kSegmentHeaderSize = 32;
// A record larger than this is treated as corrupt rather than trusted.
constexpr uint32_t kMaxRecordPayload = kMaxSpoolRecord;  // core/config.h

std::string encodeSegmentHeader(uint64_t salt);
// The salt of a format 2 segment header; nullopt if data does not start with an intact one.
std::optional<uint64_t> decodeSegmentHeader(std::string_view data);
// Whether data starts like a format 2 segment (its header's magic), intact or not.
bool isFormat2Segment(std::string_view data);

// Appends a Message record; body_offset receives the body's offset within `out`.
void encodeMessage(std::string& out, const Envelope& env, std::string_view body,
                   size_t& body_offset, uint64_t salt);
// Appends everything of a Message record but the body itself (the CRC covers the body),
// so the body can be written from where it already is (writev) instead of copied.
void encodeMessageHead(std::string& out, const Envelope& env, std::string_view body, uint64_t salt);
// The same for a body in pieces, checksummed where they lie.
void encodeMessageHead(std::string& out, const Envelope& env,
                       std::span<const std::string_view> body, uint64_t salt);
// The same for a body that is not in memory (a SpillFile): its size and crc32c(0, body).
void encodeMessageHead(std::string& out, const Envelope& env, uint64_t body_size, uint32_t body_crc,
                       uint64_t salt);
void encodeDone(std::string& out, uint64_t id, uint32_t rcpt_index, uint64_t salt);

struct DecodedRecord {
  RecordType type;
  size_t size = 0;          // whole record, header included
  Envelope envelope;        // kMessage (id and received_ms only, unless asked for)
  uint32_t recipients = 0;  // kMessage
  size_t body_offset = 0;  // kMessage: from the record start
  size_t body_size = 0;    // kMessage
  uint64_t done_id = 0;    // kDone
  uint32_t done_rcpt = 0;  // kDone
};

enum class RecordStatus {
  kOk,
  kBadHeader,   // no intact record header here
  kBadPayload,  // an intact header (so its size is known) over a damaged payload
  kTorn,        // an intact header whose payload runs past the end of data
};

struct RecordRead {
  RecordStatus status = RecordStatus::kBadHeader;
  size_t size = 0;       // kOk, kBadPayload, kTorn: the whole record's size, header included
  DecodedRecord record;  // kOk
};

// Reads the format 2 record at the start of data. Without `envelope`, a Message record's
// strings are checked but not copied (recovery keeps no more than where a message lies).
RecordRead readRecord(std::string_view data, uint64_t salt, bool envelope = true);
// The offset of the next intact record header in data after `from`, or data.size().
size_t findNextRecord(std::string_view data, size_t from, uint64_t salt);
// Decodes the format 1 record at the start of data; nullopt when it is torn or corrupt.
std::optional<DecodedRecord> decodeRecordV1(std::string_view data, bool envelope = true);
// Decodes a Message record's head (header and envelope, without the body) of either
// format, as read back from a segment; a format 2 header's CRC is checked (the payload's
// covers the body, not read here). nullopt unless it is exactly a Message head for a body
// of body_size octets.
std::optional<Envelope> decodeMessageHead(std::string_view head, uint64_t salt, uint64_t body_size);

}  // namespace postern
