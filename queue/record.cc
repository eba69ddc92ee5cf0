#include "queue/record.h"

#include <cstdio>
#include <cstring>

#include "queue/crc32c.h"

namespace postern {
namespace {

void putU32(std::string& out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out.append(b, 4);
}

void putU64(std::string& out, uint64_t v) {
  putU32(out, static_cast<uint32_t>(v));
  putU32(out, static_cast<uint32_t>(v >> 32));
}

void putStr(std::string& out, std::string_view s) {
  putU32(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

void setU32(std::string& out, size_t pos, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[pos + i] = static_cast<char>(v >> (8 * i));
}

// Bounds-checked little-endian reader over one record's payload.
class Reader {
 public:
  explicit Reader(std::string_view d) : d_(d) {}
  bool u32(uint32_t& v) {
    if (d_.size() - pos_ < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(d_[pos_ + i])} << (8 * i);
    pos_ += 4;
    return true;
  }
  bool u8(uint8_t& v) {
    if (d_.size() - pos_ < 1) return false;
    v = static_cast<uint8_t>(d_[pos_++]);
    return true;
  }
  bool u64(uint64_t& v) {
    uint32_t lo, hi;
    if (!u32(lo) || !u32(hi)) return false;
    v = lo | (uint64_t{hi} << 32);
    return true;
  }
  // A string, copied into s unless s is null (then only checked and skipped).
  bool str(std::string* s) {
    uint32_t n;
    if (!u32(n) || d_.size() - pos_ < n) return false;
    if (s != nullptr) s->assign(d_.substr(pos_, n));
    pos_ += n;
    return true;
  }
  size_t pos() const { return pos_; }
  size_t left() const { return d_.size() - pos_; }

 private:
  std::string_view d_;
  size_t pos_ = 0;
};

constexpr uint32_t kRecordMagic = 0x32525350;  // "PSR2"
constexpr std::string_view kSegmentMagic = "PSTRSEG2";
constexpr size_t kV1HeaderSize = 9;

uint32_t getU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

// CRC32C of the salt's eight octets, then of the header's first 13 octets.
uint32_t headerCrc(const char* header, uint64_t salt) {
  char s[8];
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(salt >> (8 * i));
  return crc32c(crc32c(0, s, 8), header, 13);
}

// Reserves a record header; the payload follows.
size_t beginRecord(std::string& out, RecordType type) {
  size_t start = out.size();
  putU32(out, kRecordMagic);
  putU32(out, 0);  // length
  out.push_back(static_cast<char>(type));
  putU32(out, 0);  // payload CRC
  putU32(out, 0);  // header CRC
  return start;
}

// Fills in the header of the record at start: payload length and CRC, then its own CRC.
void sealRecord(std::string& out, size_t start, uint32_t payload_len, uint32_t payload_crc,
                uint64_t salt) {
  setU32(out, start + 4, payload_len);
  setU32(out, start + 9, payload_crc);
  setU32(out, start + 13, headerCrc(out.data() + start, salt));
}

// For a record whose whole payload is in out after its header.
void finishRecord(std::string& out, size_t start, uint64_t salt) {
  auto payload_len = static_cast<uint32_t>(out.size() - start - kRecordHeaderSize);
  uint32_t crc = crc32c(0, out.data() + start + 8, 1);
  crc = crc32c(crc, out.data() + start + kRecordHeaderSize, payload_len);
  sealRecord(out, start, payload_len, crc, salt);
}

// A payload's fields; body_offset relative to the payload's start. Without `envelope`
// only a Message's id, arrival time and recipient count are kept. body_size: the body's
// octets that follow in payload, or (a head read back alone) nullopt for all of them.
std::optional<DecodedRecord> parsePayload(uint8_t type, std::string_view payload, bool envelope,
                                          std::optional<uint64_t> head_only = std::nullopt);

}  // namespace

const std::string& Envelope::notifyOf(size_t i) const {
  static const std::string kNone;
  return i < dsn_notify.size() ? dsn_notify[i] : kNone;
}

const std::string& Envelope::orcptOf(size_t i) const {
  static const std::string kNone;
  return i < dsn_orcpt.size() ? dsn_orcpt[i] : kNone;
}

std::string queueIdString(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llX", static_cast<unsigned long long>(id));
  return buf;
}

std::optional<uint64_t> parseQueueId(std::string_view text) {
  if (text.size() != 16) return std::nullopt;
  uint64_t id = 0;
  for (char c : text) {
    int v = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                   : -1;
    if (v < 0) return std::nullopt;
    id = id << 4 | static_cast<uint64_t>(v);
  }
  return id;
}

namespace {

// Everything of a Message record up to its body; returns the payload CRC so far (type
// byte and payload without the body). start receives the record's offset in out.
uint32_t encodeHeadWithoutCrc(std::string& out, const Envelope& env, uint64_t body_size,
                              size_t& start) {
  start = beginRecord(out, RecordType::kMessage);
  putU64(out, env.id);
  putU64(out, static_cast<uint64_t>(env.received_ms));
  putStr(out, env.sender);
  putU32(out, static_cast<uint32_t>(env.recipients.size()));
  for (const auto& r : env.recipients) putStr(out, r);
  out.push_back(env.smtputf8 ? 1 : 0);
  putStr(out, env.dsn_ret);
  putStr(out, env.dsn_envid);
  for (size_t i = 0; i < env.recipients.size(); ++i) {
    putStr(out, env.notifyOf(i));
    putStr(out, env.orcptOf(i));
  }
  putU64(out, body_size);
  const size_t head_payload = out.size() - start - kRecordHeaderSize;
  uint32_t crc = crc32c(0, out.data() + start + 8, 1);
  return crc32c(crc, out.data() + start + kRecordHeaderSize, head_payload);
}

uint32_t payloadLength(const std::string& out, size_t start, uint64_t body_size) {
  return static_cast<uint32_t>(out.size() - start - kRecordHeaderSize + body_size);
}

}  // namespace

std::string encodeSegmentHeader(uint64_t salt) {
  std::string h(kSegmentMagic);
  putU64(h, salt);
  putU32(h, crc32c(0, h.data(), 16));
  h.append(kSegmentHeaderSize - h.size(), '\0');
  return h;
}

bool isFormat2Segment(std::string_view data) { return data.starts_with(kSegmentMagic); }

std::optional<uint64_t> decodeSegmentHeader(std::string_view data) {
  if (data.size() < kSegmentHeaderSize || !isFormat2Segment(data)) return std::nullopt;
  if (crc32c(0, data.data(), 16) != getU32(data.data() + 16)) return std::nullopt;
  return uint64_t{getU32(data.data() + 8)} | uint64_t{getU32(data.data() + 12)} << 32;
}

void encodeMessageHead(std::string& out, const Envelope& env, std::string_view body,
                       uint64_t salt) {
  encodeMessageHead(out, env, std::span<const std::string_view>(&body, 1), salt);
}

void encodeMessageHead(std::string& out, const Envelope& env,
                       std::span<const std::string_view> body, uint64_t salt) {
  uint64_t size = 0;
  for (std::string_view piece : body) size += piece.size();
  size_t start = 0;
  uint32_t crc = encodeHeadWithoutCrc(out, env, size, start);
  for (std::string_view piece : body) crc = crc32c(crc, piece.data(), piece.size());
  sealRecord(out, start, payloadLength(out, start, size), crc, salt);
}

void encodeMessageHead(std::string& out, const Envelope& env, uint64_t body_size, uint32_t body_crc,
                       uint64_t salt) {
  size_t start = 0;
  uint32_t crc = encodeHeadWithoutCrc(out, env, body_size, start);
  sealRecord(out, start, payloadLength(out, start, body_size),
             crc32cCombine(crc, body_crc, body_size), salt);
}

void encodeMessage(std::string& out, const Envelope& env, std::string_view body,
                   size_t& body_offset, uint64_t salt) {
  size_t start = out.size();
  encodeMessageHead(out, env, body, salt);
  body_offset = out.size() - start;
  out.append(body);
}

void encodeDone(std::string& out, uint64_t id, uint32_t rcpt_index, uint64_t salt) {
  size_t start = beginRecord(out, RecordType::kDone);
  putU64(out, id);
  putU32(out, rcpt_index);
  finishRecord(out, start, salt);
}

RecordRead readRecord(std::string_view data, uint64_t salt, bool envelope) {
  RecordRead r;
  if (data.size() < kRecordHeaderSize || getU32(data.data()) != kRecordMagic ||
      headerCrc(data.data(), salt) != getU32(data.data() + 13)) {
    return r;  // kBadHeader
  }
  const uint32_t len = getU32(data.data() + 4);
  r.size = kRecordHeaderSize + uint64_t{len};
  if (len > kMaxRecordPayload) {
    r.status = RecordStatus::kBadHeader;  // cannot be one of ours, whatever its CRC says
    r.size = 0;
    return r;
  }
  if (data.size() < r.size) {
    r.status = RecordStatus::kTorn;
    return r;
  }
  const std::string_view payload = data.substr(kRecordHeaderSize, len);
  uint32_t crc = crc32c(0, data.data() + 8, 1);
  crc = crc32c(crc, payload.data(), payload.size());
  auto rec = crc == getU32(data.data() + 9)
                 ? parsePayload(static_cast<uint8_t>(data[8]), payload, envelope)
                 : std::nullopt;
  if (!rec) {
    r.status = RecordStatus::kBadPayload;
    return r;
  }
  r.status = RecordStatus::kOk;
  r.record = std::move(*rec);
  r.record.size = r.size;
  r.record.body_offset += kRecordHeaderSize;
  return r;
}

size_t findNextRecord(std::string_view data, size_t from, uint64_t salt) {
  char magic[4];
  for (int i = 0; i < 4; ++i) magic[i] = static_cast<char>(kRecordMagic >> (8 * i));
  for (size_t pos = from + 1; pos + kRecordHeaderSize <= data.size(); ++pos) {
    pos = data.find(std::string_view(magic, 4), pos);
    if (pos == std::string_view::npos || pos + kRecordHeaderSize > data.size()) break;
    if (readRecord(data.substr(pos, kRecordHeaderSize), salt).status != RecordStatus::kBadHeader) {
      return pos;
    }
  }
  return data.size();
}

std::optional<DecodedRecord> decodeRecordV1(std::string_view data, bool envelope) {
  if (data.size() < kV1HeaderSize) return std::nullopt;
  const uint32_t len = getU32(data.data());
  const uint32_t crc = getU32(data.data() + 4);
  if (len > kMaxRecordPayload || data.size() - kV1HeaderSize < len) return std::nullopt;
  if (crc32c(0, data.data() + 8, len + 1) != crc) return std::nullopt;
  auto rec =
      parsePayload(static_cast<uint8_t>(data[8]), data.substr(kV1HeaderSize, len), envelope);
  if (!rec) return std::nullopt;
  rec->size = kV1HeaderSize + len;
  rec->body_offset += kV1HeaderSize;
  return rec;
}

std::optional<Envelope> decodeMessageHead(std::string_view head, uint64_t salt,
                                          uint64_t body_size) {
  // Format 2 by its magic and salted header CRC; otherwise it can only be format 1.
  size_t header = kV1HeaderSize;
  if (head.size() >= kRecordHeaderSize && getU32(head.data()) == kRecordMagic &&
      headerCrc(head.data(), salt) == getU32(head.data() + 13)) {
    header = kRecordHeaderSize;
    if (getU32(head.data() + 4) != head.size() - header + body_size) return std::nullopt;
  } else if (head.size() < kV1HeaderSize || getU32(head.data()) != head.size() - header + body_size) {
    return std::nullopt;
  }
  if (static_cast<uint8_t>(head[8]) != static_cast<uint8_t>(RecordType::kMessage)) {
    return std::nullopt;
  }
  auto rec = parsePayload(head[8], head.substr(header), true, body_size);
  if (!rec || rec->body_offset + header != head.size()) return std::nullopt;
  return std::move(rec->envelope);
}

namespace {

std::optional<DecodedRecord> parsePayload(uint8_t type, std::string_view payload, bool envelope,
                                          std::optional<uint64_t> head_only) {
  const auto len = payload.size();
  DecodedRecord rec;
  rec.type = static_cast<RecordType>(type);
  Reader r(payload);
  switch (rec.type) {
    case RecordType::kMessage: {
      uint64_t received, body_len;
      uint32_t nrcpt;
      Envelope& e = rec.envelope;
      auto str = [&](std::string& s) { return r.str(envelope ? &s : nullptr); };
      if (!r.u64(e.id) || !r.u64(received) || !str(e.sender) || !r.u32(nrcpt) || nrcpt > len) {
        return std::nullopt;
      }
      e.received_ms = static_cast<int64_t>(received);
      rec.recipients = nrcpt;
      if (envelope) e.recipients.resize(nrcpt);
      for (uint32_t i = 0; i < nrcpt; ++i) {
        if (!r.str(envelope ? &e.recipients[i] : nullptr)) return std::nullopt;
      }
      uint8_t flags = 0;
      if (!r.u8(flags) || flags > 1 || !str(e.dsn_ret) || !str(e.dsn_envid)) {
        return std::nullopt;
      }
      e.smtputf8 = flags == 1;
      if (envelope) {
        e.dsn_notify.resize(nrcpt);
        e.dsn_orcpt.resize(nrcpt);
      }
      for (uint32_t i = 0; i < nrcpt; ++i) {
        if (!r.str(envelope ? &e.dsn_notify[i] : nullptr) ||
            !r.str(envelope ? &e.dsn_orcpt[i] : nullptr)) {
          return std::nullopt;
        }
      }
      if (!r.u64(body_len) || body_len != (head_only ? *head_only : r.left()) ||
          (head_only && r.left() != 0)) {
        return std::nullopt;
      }
      rec.body_offset = r.pos();
      rec.body_size = body_len;
      return rec;
    }
    case RecordType::kDone:
      if (!r.u64(rec.done_id) || !r.u32(rec.done_rcpt) || r.left() != 0) return std::nullopt;
      return rec;
  }
  return std::nullopt;
}

}  // namespace
}  // namespace postern
