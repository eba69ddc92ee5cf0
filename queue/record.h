// Spool record encoding. Each record on disk is
//
//   u32 payload length | u32 CRC32C(type byte + payload) | u8 type | payload
//
// little-endian. Message records carry the envelope and the body; Done records mark one
// recipient of one message as finished. A record whose length runs past the end of the
// file or whose CRC does not match is a torn write: the reader stops there.
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

constexpr size_t kRecordHeaderSize = 9;
// A record larger than this is treated as corrupt rather than trusted.
constexpr uint32_t kMaxRecordPayload = kMaxSpoolRecord;  // core/config.h

// Appends a Message record; body_offset receives the body's offset within `out`.
void encodeMessage(std::string& out, const Envelope& env, std::string_view body,
                   size_t& body_offset);
// Appends everything of a Message record but the body itself (the CRC covers the body),
// so the body can be written from where it already is (writev) instead of copied.
void encodeMessageHead(std::string& out, const Envelope& env, std::string_view body);
// The same for a body in pieces, checksummed where they lie.
void encodeMessageHead(std::string& out, const Envelope& env,
                       std::span<const std::string_view> body);
// The same for a body that is not in memory (a SpillFile): its size and crc32c(0, body).
void encodeMessageHead(std::string& out, const Envelope& env, uint64_t body_size,
                       uint32_t body_crc);
void encodeDone(std::string& out, uint64_t id, uint32_t rcpt_index);

struct DecodedRecord {
  RecordType type;
  size_t size = 0;         // whole record, header included
  Envelope envelope;       // kMessage
  size_t body_offset = 0;  // kMessage: from the record start
  size_t body_size = 0;    // kMessage
  uint64_t done_id = 0;    // kDone
  uint32_t done_rcpt = 0;  // kDone
};

// Decodes the record at the start of data; nullopt when it is torn or corrupt.
std::optional<DecodedRecord> decodeRecord(std::string_view data);

}  // namespace postern
