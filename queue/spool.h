// Spool: one worker's durable message store, an append-only log of segment files under
// spool_dir/wN/ (seg-<8 hex digits>.log), records as in queue/record.h.
//
// Contract: append()'s callback reports ok only after the Message record is written and
// fdatasync()ed; only then may the session answer 250. All messages appended during one
// loop iteration go out in one batch: one writev and one fdatasync on the spool's own I/O
// thread (group commit; queue/io_thread.h, handed over and back through lock-free rings),
// while the next batch collects. Done records ride along with the
// next batch (losing one in a crash only means a duplicate delivery, which at-least-once
// allows). A failed write or sync truncates the segment back to where the batch began and
// reports !ok to every message in it, so the session answers 452 4.3.1: nothing is
// acknowledged that is not on disk. While writes fail and nothing else is waiting to be
// written, a probe (a small write and fdatasync, truncated away again) runs every second,
// so writeFailing() (and /readyz) turns false once the disk takes writes again, without
// needing mail that a relay reported unready would no longer get. If the truncation
// itself fails, the segment's end is unknown and any later record could land after
// garbage: the spool is broken for good (fail-stop): nothing more is written, every
// message gets 452 4.3.1 and writeFailing() stays true until a restart replays it.
//
// Recovery (open): segments are replayed in order (queue/segment_replay.h); a damaged
// record costs only itself: reading goes on at the next intact record, and the damaged
// octets are copied to wN/quarantine/ (a torn tail from a crash too) with a log line;
// every recipient without a Done is returned for delivery. A segment whose messages are all
// finished is deleted. Each start writes to a new segment, so a torn tail is never appended to. All
// methods run on the loop thread.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include "core/metrics.h"
#include "core/result.h"
#include "queue/body_reader.h"
#include "queue/envelope.h"
#include "queue/io_thread.h"
#include "queue/recipient_flags.h"
#include "queue/spill_file.h"

namespace postern {

struct StoredRef {
  uint32_t segment = 0;
  uint32_t head_size = 0;    // the record's header and envelope, right before the body
  uint64_t body_offset = 0;  // within the segment file
  uint64_t body_size = 0;
  // CRC32C of the head as written: what is read back later must still be it (the
  // record's own payload CRC covers the body too, which a read of the head does not see).
  uint32_t head_crc = 0;
};

struct SpooledMessage {
  Envelope envelope;
  StoredRef ref;
  std::vector<bool> done;  // per recipient
  bool held = false;       // quarantined on arrival (its hold marker is written)
};

// A spooled message known by where it lies, without its envelope (Spool::readEnvelope
// reads that back): what recovery returns, 72 octets a message however long its addresses.
struct SpooledRef {
  uint64_t id = 0;
  int64_t received_ms = 0;
  StoredRef ref;
  uint32_t recipients = 0;
  RecipientFlags done;

  // Every recipient is done: nothing left to deliver.
  bool finished() const {
    for (uint32_t i = 0; i < recipients; ++i) {
      if (!done.test(i)) return false;
    }
    return true;
  }
};

using CommitCallback = std::function<void(bool ok, const StoredRef& ref)>;

struct DamagedRange;  // queue/segment_replay.h

class Spool {
 public:
  // index: the worker's number, folded into every queue id so ids from different
  // workers never collide.
  Spool(uv_loop_t* loop, std::string dir, unsigned index = 0, size_t segment_limit = 64u << 20);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Creates the directory if needed and replays it: every message with recipients still
  // to deliver, oldest first.
  Result<std::vector<SpooledRef>> open();
  // The same, but the segments already there are replayed on a thread of their own while
  // the loop runs (and the spool takes new messages, into a new segment): done(recovered)
  // comes on the loop once the replay is over (not if close() comes first). An error
  // opening the directory is returned; one reading an old segment is logged, and that
  // segment is left alone, neither replayed nor deleted.
  using RecoveredCallback = std::function<void(std::vector<SpooledRef> recovered)>;
  Status openAsync(RecoveredCallback done);
  bool replaying() const { return replay_thread_.joinable(); }

  uint64_t nextId();

  // Queues a message for the next group commit. The body is moved in and written from
  // where it is (writev), not copied into the record. trailer (encoded records) is
  // written right after this message in the same write and shares its fate: on failure
  // neither is retried.
  void append(const Envelope& env, std::string body, CommitCallback cb, std::string trailer = {});
  // The same for a body in pieces (views into the read buffers it arrived in, which it
  // keeps pinned until the commit is done): writev'd from where they lie, not copied.
  void append(const Envelope& env, MessageBody body, CommitCallback cb, std::string trailer = {});
  // The same for a body in a SpillFile: it is copied into the segment on the I/O thread
  // (in pieces, never held whole in memory) and closed after the commit.
  // prefix (fields added at the end, a DKIM-Signature) goes before the file's content.
  void append(const Envelope& env, std::unique_ptr<SpillFile> body, CommitCallback cb,
              std::string prefix = {});
  // A SpillFile in this spool's directory (same file system and quota as the segments).
  Result<std::unique_ptr<SpillFile>> newSpill() const { return SpillFile::create(dir_); }

  // The segment new messages go to; a message elsewhere keeps an older segment alive.
  uint32_t activeSegment() const { return active_; }

  // Recipient rcpt of message id needs no more delivery attempts.
  void markDone(uint64_t id, uint32_t rcpt);
  // One more holder of the message at ref (a message split between next hops is held by
  // each part); every holder calls release() once.
  void retain(const StoredRef& ref);
  // Every recipient of the message at ref is done: its segment may be freed.
  void release(const StoredRef& ref);

  Result<std::string> readBody(const StoredRef& ref) const;
  // The file range of a committed message's body, to read in pieces (BodyReader); the
  // segment may be deleted meanwhile (the reader then fails). Fails if the segment is not
  // this spool's or is shorter than the body. Valid while this Spool is.
  Result<BodyFile> openBody(const StoredRef& ref) const;
  // Reads back the envelope of message id at ref (its record's header is checked again:
  // the disk may have changed since). False if it cannot be read or is not that message.
  Result<Envelope> readEnvelope(uint64_t id, const StoredRef& ref) const;

  // Holds message id (held) or releases it, durably: its marker in wN/hold/ is made or
  // removed, and the directory fsynced, by the I/O thread with the next batch; done(ok)
  // comes on the loop after. done may be empty.
  void setHeld(uint64_t id, bool held, std::function<void(bool ok)> done);
  // The messages that were held when the spool opened (markers of messages no longer in
  // the spool are removed once the replay is over).
  bool heldAtStart(uint64_t id) const { return held_at_start_.count(id) != 0; }

  // dir/seg-XXXXXXXX.log.
  std::string segmentPath(uint32_t id) const;

  // Flushes nothing further and closes the loop handles (for shutdown).
  void close();

  size_t segmentCount() const { return segments_.size(); }
  uint64_t bytes() const;  // all segments
  // Time each batch's writev + fdatasync took; whether the latest batch failed.
  const Histogram& fsyncSeconds() const { return fsync_; }
  bool writeFailing() const { return write_failed_ || broken_; }
  bool broken() const { return broken_; }
  // The salt of this spool's record headers (queue/record.h), for records encoded
  // elsewhere (Done trailers).
  uint64_t salt() const { return salt_; }
  // Octets of damaged records copied to the quarantine directory since start.
  uint64_t quarantinedBytes() const { return quarantined_bytes_; }
  bool busy() const {
    return in_flight_ || !pending_.empty() || !pending_done_.empty() || !pending_marks_.empty();
  }

 private:
  struct Segment {
    int fd = -1;
    uint64_t size = 0;
    size_t live = 0;    // committed messages with recipients still to deliver
    uint64_t salt = 0;  // its records' (another spool's, for a segment merged from one)
    bool keep = false;  // damage in it could not be quarantined: never deleted
  };
  struct Recovery;  // what replaying the old segments found
  struct PendingMessage {
    std::string head;  // record header and envelope
    MessageBody body;
    std::unique_ptr<SpillFile> spill;  // the body instead, when it did not stay in memory
    std::string prefix;                // before the spill's content, part of the body
    std::string trailer;
    CommitCallback cb;
    uint64_t bodySize() const { return spill ? prefix.size() + spill->size() : body.size(); }
  };
  struct PendingMark {  // setHeld()
    uint64_t id = 0;
    bool held = false;
    std::function<void(bool ok)> done;
    bool ok = false;
  };
  struct Batch;

  Status openSegment(uint32_t id);
  void maybeDelete(uint32_t id);
  // Directory, salt, id base and a new active segment; returns the segments there before,
  // to be replayed.
  Result<std::vector<uint32_t>> prepare();
  // Reads and replays the old segments (any thread: touches no member but const ones).
  Recovery replay(const std::vector<uint32_t>& ids) const;
  // Takes over what replay() found, on the loop.
  void adopt(Recovery& r, std::vector<SpooledRef>& recovered);
  static void onReplayDone(uv_async_t* h);
  // Copies a damaged range of segment id into dir/quarantine/ and logs it; adds the
  // octets newly quarantined to fresh. False if the copy could not be made: then the
  // segment must stay, since those octets are nowhere else.
  bool quarantine(uint32_t id, std::string_view data, const DamagedRange& range,
                  uint64_t& fresh) const;
  void queue(PendingMessage p, CommitCallback cb);  // for the next group commit
  void scheduleFlush();
  // After a batch: the next one if anything waits, else the Done timer or the probe.
  void scheduleNext();
  void flush(bool probe = false);
  static void onPrepare(uv_prepare_t* h);
  static void onDoneTimer(uv_timer_t* h);
  static void onProbeTimer(uv_timer_t* h);
  static void work(void* batch);
  static void writeMarks(int hold_fd, std::vector<PendingMark>& marks);
  static void afterWork(void* batch);

  uv_loop_t* loop_;
  std::string dir_;
  size_t segment_limit_;
  int dir_fd_ = -1;
  int hold_fd_ = -1;  // wN/hold
  std::unordered_set<uint64_t> held_at_start_;
  std::map<uint32_t, Segment> segments_;
  uint32_t active_ = 0;
  bool dir_dirty_ = false;  // a segment was created since the last directory fsync

  std::vector<PendingMessage> pending_;
  std::string pending_done_;
  std::vector<PendingMark> pending_marks_;
  bool in_flight_ = false;
  uv_prepare_t prepare_;
  uv_timer_t done_timer_;
  uv_timer_t probe_timer_;
  bool closed_ = false;
  IoThread io_;  // runs work(); afterWork() comes back on the loop
  Histogram fsync_;
  bool write_failed_ = false;
  bool broken_ = false;  // a failed write could not be truncated away: fail-stop
  uint64_t salt_ = 0;
  uint64_t quarantined_bytes_ = 0;
  // openAsync: the replay's thread, its result, and the wake-up that hands it over.
  std::thread replay_thread_;
  std::unique_ptr<Recovery> replayed_;
  uv_async_t replay_async_;
  bool replay_async_open_ = false;
  std::atomic<bool> replay_stop_{false};
  RecoveredCallback replay_done_;
  uint64_t old_bytes_ = 0;  // the segments there at the start, to replay

  // Queue ids: id_base_ (a multiple of 256, from the clock or past the largest recovered
  // id) + counter * 256 + worker index.
  uint64_t id_base_ = 0;
  uint64_t id_counter_ = 0;
  unsigned index_ = 0;
};

// Reads a spool directory (one worker's wN) without changing it, for queue tools that run
// beside or instead of the relay: every message with recipients still to deliver, their
// done flags set. Segments deleted meanwhile are skipped.
Result<std::vector<SpooledMessage>> readSpoolOffline(const std::string& dir);

}  // namespace postern
