#include "queue/segment_replay.h"

#include <algorithm>

#include "queue/crc32c.h"
#include "queue/record.h"

namespace postern {
namespace {

void apply(const DecodedRecord& rec, std::string_view data, uint32_t id, size_t pos,
           std::unordered_map<uint64_t, SpooledRef>& messages, std::vector<uint64_t>& order) {
  if (rec.type == RecordType::kMessage) {
    SpooledRef m;
    m.id = rec.envelope.id;
    m.received_ms = rec.envelope.received_ms;
    m.ref = StoredRef{id, static_cast<uint32_t>(rec.body_offset), pos + rec.body_offset,
                      rec.body_size, crc32c(0, data.data() + pos, rec.body_offset)};
    m.recipients = rec.recipients;
    if (messages.emplace(m.id, std::move(m)).second) order.push_back(rec.envelope.id);
  } else if (auto it = messages.find(rec.done_id);
             it != messages.end() && rec.done_rcpt < it->second.recipients) {
    it->second.done.set(rec.done_rcpt);
  }
}

void damage(SegmentReplay& out, size_t from, size_t to, size_t end) {
  if (to <= from) return;
  // Adjacent ranges (a bad payload right after a bad header) are one.
  if (!out.damaged.empty() && out.damaged.back().offset + out.damaged.back().length == from) {
    out.damaged.back().length += to - from;
  } else {
    out.damaged.push_back({from, to - from, false});
  }
  out.damaged.back().tail = to == end;
}

SegmentReplay replayFormat1(std::string_view data, uint32_t id,
                            std::unordered_map<uint64_t, SpooledRef>& messages,
                            std::vector<uint64_t>& order) {
  SegmentReplay out;
  size_t pos = 0;
  while (pos < data.size()) {
    auto rec = decodeRecordV1(data.substr(pos), false);
    if (!rec) {
      damage(out, pos, data.size(), data.size());
      break;
    }
    apply(*rec, data, id, pos, messages, order);
    ++out.records;
    pos += rec->size;
  }
  return out;
}

}  // namespace

SegmentReplay replaySegment(std::string_view data, uint32_t id, uint64_t fallback_salt,
                            std::unordered_map<uint64_t, SpooledRef>& messages,
                            std::vector<uint64_t>& order) {
  // Format 2 by its segment header, or, if that was damaged, by records that carry the
  // spool's salt (a format 1 segment has none).
  if (!isFormat2Segment(data) && findNextRecord(data, 0, fallback_salt) == data.size()) {
    return replayFormat1(data, id, messages, order);
  }
  SegmentReplay out;
  out.salt = decodeSegmentHeader(data);
  const uint64_t salt = out.salt.value_or(fallback_salt);
  // A segment may be shorter than its header (a crash right after it was created).
  size_t pos = std::min(kSegmentHeaderSize, data.size());
  if (!out.salt) damage(out, 0, pos, data.size());
  while (pos < data.size()) {
    RecordRead r = readRecord(data.substr(pos), salt, false);
    switch (r.status) {
      case RecordStatus::kOk:
        apply(r.record, data, id, pos, messages, order);
        ++out.records;
        pos += r.size;
        continue;
      case RecordStatus::kBadPayload:
      case RecordStatus::kTorn:
      case RecordStatus::kBadHeader: {
        // Even an intact header's length is not followed: octets cut out of (or put into)
        // the payload would have it point into the middle of a later record. The next
        // intact header is where reading goes on.
        const size_t next = findNextRecord(data, pos, salt);
        damage(out, pos, next, data.size());
        pos = next;
        continue;
      }
    }
  }
  return out;
}

}  // namespace postern
