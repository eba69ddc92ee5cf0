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
  bool str(std::string& s) {
    uint32_t n;
    if (!u32(n) || d_.size() - pos_ < n) return false;
    s.assign(d_.substr(pos_, n));
    pos_ += n;
    return true;
  }
  size_t pos() const { return pos_; }
  size_t left() const { return d_.size() - pos_; }

 private:
  std::string_view d_;
  size_t pos_ = 0;
};

// Writes the header for the payload appended since `start` (header space reserved).
void finishRecord(std::string& out, size_t start) {
  auto payload_len = static_cast<uint32_t>(out.size() - start - kRecordHeaderSize);
  setU32(out, start, payload_len);
  uint32_t crc = crc32c(0, out.data() + start + 8, payload_len + 1);
  setU32(out, start + 4, crc);
}

size_t beginRecord(std::string& out, RecordType type) {
  size_t start = out.size();
  out.append(8, '\0');
  out.push_back(static_cast<char>(type));
  return start;
}

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

bool parseQueueId(std::string_view text, uint64_t& id) {
  if (text.size() != 16) return false;
  id = 0;
  for (char c : text) {
    int v = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                   : -1;
    if (v < 0) return false;
    id = id << 4 | static_cast<uint64_t>(v);
  }
  return true;
}

namespace {

// Everything of a Message record up to its body; returns the CRC so far (type byte and
// payload without the body), with the length already set for a body of body_size.
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
  size_t head_payload = out.size() - start - kRecordHeaderSize;
  setU32(out, start, static_cast<uint32_t>(head_payload + body_size));
  return crc32c(0, out.data() + start + 8, head_payload + 1);
}

}  // namespace

void encodeMessageHead(std::string& out, const Envelope& env, std::string_view body) {
  encodeMessageHead(out, env, std::span<const std::string_view>(&body, 1));
}

void encodeMessageHead(std::string& out, const Envelope& env,
                       std::span<const std::string_view> body) {
  uint64_t size = 0;
  for (std::string_view piece : body) size += piece.size();
  size_t start = 0;
  uint32_t crc = encodeHeadWithoutCrc(out, env, size, start);
  for (std::string_view piece : body) crc = crc32c(crc, piece.data(), piece.size());
  setU32(out, start + 4, crc);
}

void encodeMessageHead(std::string& out, const Envelope& env, uint64_t body_size,
                       uint32_t body_crc) {
  size_t start = 0;
  uint32_t crc = encodeHeadWithoutCrc(out, env, body_size, start);
  setU32(out, start + 4, crc32cCombine(crc, body_crc, body_size));
}

void encodeMessage(std::string& out, const Envelope& env, std::string_view body,
                   size_t& body_offset) {
  size_t start = out.size();
  encodeMessageHead(out, env, body);
  body_offset = out.size() - start;
  out.append(body);
}

void encodeDone(std::string& out, uint64_t id, uint32_t rcpt_index) {
  size_t start = beginRecord(out, RecordType::kDone);
  putU64(out, id);
  putU32(out, rcpt_index);
  finishRecord(out, start);
}

std::optional<DecodedRecord> decodeRecord(std::string_view data) {
  if (data.size() < kRecordHeaderSize) return std::nullopt;
  Reader head(data);
  uint32_t len, crc;
  head.u32(len);
  head.u32(crc);
  if (len > kMaxRecordPayload || data.size() - kRecordHeaderSize < len) return std::nullopt;
  if (crc32c(0, data.data() + 8, len + 1) != crc) return std::nullopt;

  DecodedRecord rec;
  rec.type = static_cast<RecordType>(data[8]);
  rec.size = kRecordHeaderSize + len;
  Reader r(data.substr(kRecordHeaderSize, len));
  switch (rec.type) {
    case RecordType::kMessage: {
      uint64_t received, body_len;
      uint32_t nrcpt;
      if (!r.u64(rec.envelope.id) || !r.u64(received) || !r.str(rec.envelope.sender) ||
          !r.u32(nrcpt) || nrcpt > len) {
        return std::nullopt;
      }
      rec.envelope.received_ms = static_cast<int64_t>(received);
      rec.envelope.recipients.resize(nrcpt);
      Envelope& e = rec.envelope;
      for (auto& rc : e.recipients) {
        if (!r.str(rc)) return std::nullopt;
      }
      uint8_t flags = 0;
      if (!r.u8(flags) || flags > 1 || !r.str(e.dsn_ret) || !r.str(e.dsn_envid)) {
        return std::nullopt;
      }
      e.smtputf8 = flags == 1;
      e.dsn_notify.resize(nrcpt);
      e.dsn_orcpt.resize(nrcpt);
      for (uint32_t i = 0; i < nrcpt; ++i) {
        if (!r.str(e.dsn_notify[i]) || !r.str(e.dsn_orcpt[i])) return std::nullopt;
      }
      if (!r.u64(body_len) || body_len != r.left()) return std::nullopt;
      rec.body_offset = kRecordHeaderSize + r.pos();
      rec.body_size = body_len;
      return rec;
    }
    case RecordType::kDone:
      if (!r.u64(rec.done_id) || !r.u32(rec.done_rcpt) || r.left() != 0) return std::nullopt;
      return rec;
  }
  return std::nullopt;
}

}  // namespace postern
