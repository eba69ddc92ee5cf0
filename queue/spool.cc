#include "queue/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unordered_map>

#include "core/assert.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"
#include "core/write_all.h"
#include "queue/crc32c.h"
#include "queue/record.h"
#include "queue/segment_replay.h"
#include "queue/spool_dirs.h"

namespace postern {

namespace {

// Done records written without a message to carry them wait at most this long.
constexpr uint64_t kDoneFlushMs = 100;
// While writes fail: how often, and with how many bytes, the disk is tried again.
constexpr uint64_t kProbeMs = 1000;
constexpr size_t kProbeBytes = 4096;

// Copies a spilled body to fd in pieces (never the whole body in memory). copy_file_range
// would spare the copy through user space, but it refuses an O_APPEND destination.
bool copySpill(int fd, const SpillFile& spill) {
  constexpr size_t kPiece = 1 << 20;
  std::unique_ptr<char[]> buf(new char[kPiece]);
  for (uint64_t off = 0; off < spill.size();) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kPiece, spill.size() - off));
    ssize_t n = ::pread(spill.fd(), buf.get(), want, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;  // the file is shorter than what was written to it
      return false;
    }
    std::vector<iovec> iov{{buf.get(), static_cast<size_t>(n)}};
    if (!writeAll(fd, iov)) return false;
    off += static_cast<uint64_t>(n);
  }
  return true;
}

// "/seg-XXXXXXXX.log", to append to a spool directory's path.
std::string segmentName(uint32_t id) { return "/" + segmentFileName(id); }

bool preadAll(int fd, char* out, size_t size, uint64_t offset) {
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::pread(fd, out + got, size - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

// The envelope of message id at ref in the segment open at fd.
bool readEnvelopeAt(int fd, uint64_t id, const StoredRef& ref, uint64_t salt, Envelope& env) {
  if (ref.head_size == 0 || ref.head_size > ref.body_offset) return false;
  std::string head(ref.head_size, '\0');
  if (!preadAll(fd, head.data(), head.size(), ref.body_offset - ref.head_size) ||
      crc32c(0, head.data(), head.size()) != ref.head_crc) {
    return false;
  }
  std::optional<Envelope> decoded = decodeMessageHead(head, salt, ref.body_size);
  if (!decoded || decoded->id != id) return false;
  env = std::move(*decoded);
  return true;
}


}  // namespace

struct Spool::Recovery {
  struct Found {
    uint32_t id;
    int fd;
    uint64_t size;
    uint64_t salt;
    bool keep;  // a damaged range of it could not be quarantined
  };
  std::vector<Found> segments;
  std::vector<SpooledRef> recovered;
  uint64_t max_id = 0;
  uint64_t bytes = 0;  // read
  uint64_t quarantined_bytes = 0;
  double seconds = 0;
  std::string error;  // the first segment that could not be read; replay stopped there
};


// One group commit: everything the I/O thread needs, owned here so the loop thread and
// the I/O thread never share Spool state while the write runs.
struct Spool::Batch {
  Spool* spool;
  int fd;
  int dir_fd;  // >= 0: fsync the directory too (a segment was created)
  uint32_t segment;
  uint64_t start;      // segment size before the batch
  bool probe = false;  // no records: kProbeBytes written, synced and truncated away
  std::vector<PendingMessage> messages;
  std::string done;
  std::vector<PendingMark> marks;
  int hold_fd = -1;
  bool ok = false;
  bool truncate_failed = false;  // the segment's end is unknown now
  int error = 0;
  double seconds = 0;  // writev + fdatasync
};

Spool::Spool(uv_loop_t* loop, std::string dir, unsigned index, size_t segment_limit)
    : loop_(loop),
      dir_(std::move(dir)),
      segment_limit_(segment_limit),
      io_(loop, work, afterWork),
      index_(index & 0xff) {
  uv_prepare_init(loop_, &prepare_);
  prepare_.data = this;
  uv_timer_init(loop_, &done_timer_);
  done_timer_.data = this;
  uv_timer_init(loop_, &probe_timer_);
  probe_timer_.data = this;
  id_base_ = static_cast<uint64_t>(unixMillis()) << 16;
}

Spool::~Spool() {
  POSTERN_ASSERT(!in_flight_);
  if (replay_thread_.joinable()) {
    replay_stop_ = true;
    replay_thread_.join();
    if (replayed_) {
      for (const auto& f : replayed_->segments) ::close(f.fd);
    }
  }
  for (auto& [id, seg] : segments_) ::close(seg.fd);
  if (dir_fd_ >= 0) ::close(dir_fd_);
  if (hold_fd_ >= 0) ::close(hold_fd_);
}

void Spool::close() {
  if (closed_) return;
  closed_ = true;
  if (replay_thread_.joinable()) {
    // A replay still running is stopped between segments and dropped: it changed nothing
    // but the quarantine, and the next start replays again.
    replay_stop_ = true;
    replay_thread_.join();
    if (replayed_) {
      for (const auto& f : replayed_->segments) ::close(f.fd);
      replayed_.reset();
    }
  }
  if (replay_async_open_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&replay_async_), nullptr);
    replay_async_open_ = false;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&done_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&probe_timer_), nullptr);
  io_.close();  // after the batch in flight, if any, has come back
}

std::string Spool::segmentPath(uint32_t id) const { return dir_ + segmentName(id); }

uint64_t Spool::nextId() { return id_base_ + (id_counter_++ << 8) + index_; }

// A whole segment mapped for reading: no buffer to zero and no copy, which were most of a
// replay's time with read(2) (the page cache is mapped in, MAP_POPULATE, in big steps).
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (base_ != nullptr) ::munmap(base_, size_);
  }
  bool open(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return false;
    size_ = static_cast<size_t>(st.st_size);
    if (size_ == 0) return true;
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) return false;
    base_ = p;
    ::madvise(base_, size_, MADV_SEQUENTIAL);
    return true;
  }
  std::string_view data() const {
    return base_ == nullptr ? std::string_view() : std::string_view(static_cast<char*>(base_), size_);
  }

 private:
  void* base_ = nullptr;
  size_t size_ = 0;
};

Result<std::vector<SpooledMessage>> readSpoolOffline(const std::string& dir) {
  Result<std::vector<uint32_t>> listed = segmentIds(dir);
  if (!listed) return fail(listed.error());
  const std::vector<uint32_t>& ids = *listed;
  std::vector<SpooledMessage> pending;
  const uint64_t salt = readSpoolSalt(dir, ids).value_or(0);
  std::unordered_map<uint64_t, SpooledRef> messages;
  std::vector<uint64_t> order;
  std::map<uint32_t, uint64_t> salts;  // segment -> its records' salt
  for (uint32_t id : ids) {
    int fd = ::open((dir + segmentName(id)).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;  // deleted by a running relay meanwhile
    MappedFile map;  // the same read as a start's replay
    const bool ok = map.open(fd);
    ::close(fd);  // a mapping outlives its descriptor
    if (ok) salts[id] = replaySegment(map.data(), id, salt, messages, order).salt.value_or(salt);
  }
  std::map<uint32_t, int> fds;  // segment -> fd, for reading envelopes back
  for (uint64_t mid : order) {
    const SpooledRef& m = messages[mid];
    if (m.finished()) continue;
    int& fd = fds.try_emplace(m.ref.segment, -1).first->second;
    if (fd < 0) fd = ::open((dir + segmentName(m.ref.segment)).c_str(), O_RDONLY | O_CLOEXEC);
    SpooledMessage full;
    if (fd < 0 || !readEnvelopeAt(fd, m.id, m.ref, salts[m.ref.segment], full.envelope)) continue;
    full.ref = m.ref;
    full.done = m.done.toVector(m.recipients);
    pending.push_back(std::move(full));
  }
  for (auto& [id, fd] : fds) {
    if (fd >= 0) ::close(fd);
  }
  return pending;
}

Status Spool::openSegment(uint32_t id) {
  int fd = ::open(segmentPath(id).c_str(), O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return fail(segmentPath(id) + ": " + std::strerror(errno));
  // The header goes to the page cache now and is made durable by the segment's first
  // group commit (fdatasync), before any record in it is acknowledged.
  const std::string header = encodeSegmentHeader(salt_);
  if (::write(fd, header.data(), header.size()) != static_cast<ssize_t>(header.size())) {
    Error err = fail(segmentPath(id) + ": " + std::strerror(errno ? errno : EIO));
    ::close(fd);
    ::unlink(segmentPath(id).c_str());
    return err;
  }
  segments_[id] = Segment{fd, header.size(), 0, salt_};
  active_ = id;
  dir_dirty_ = true;
  return {};
}

Result<std::vector<uint32_t>> Spool::prepare() {
  if (Status made = createDurableDirectories(dir_); !made) return fail(made.error());
  dir_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) return fail(dir_ + ": " + std::strerror(errno));

  const std::string hold_dir = dir_ + "/" + kHoldDir;
  if (Status made = createDurableDirectories(hold_dir); !made) return fail(made.error());
  hold_fd_ = ::open(hold_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (hold_fd_ < 0) return fail(hold_dir + ": " + std::strerror(errno));
  for (uint64_t id : readHoldMarkers(dir_)) held_at_start_.insert(id);

  Result<std::vector<uint32_t>> listed = segmentIds(dir_);
  if (!listed) return listed;
  std::vector<uint32_t> old_ids = std::move(*listed);
  // The salt file first; a lost one is found again in a segment header, or made anew.
  const std::optional<uint64_t> from_file = readSpoolSalt(dir_, {});
  const std::optional<uint64_t> found = from_file ? from_file : readSpoolSalt(dir_, old_ids);
  salt_ = found ? *found : std::stoull(randomHex(8), nullptr, 16);
  if (!from_file) {
    if (Status written = writeSpoolSalt(dir_, salt_); !written) return fail(written.error());
  }
  // New ids must not meet old ones, and new mail is taken before the replay has seen them
  // all. An id is the clock in ms << 16 plus 256 per message (queue ids run ahead of the
  // clock only past 256 messages a millisecond), so ids made after the newest segment's
  // last write are new ones, even if the clock has been set back since. adopt() checks
  // once the replay knows the largest id.
  for (uint32_t id : old_ids) {
    struct stat st;
    if (::stat(segmentPath(id).c_str(), &st) != 0) continue;
    const auto mtime_ms = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000 +
                          static_cast<uint64_t>(st.st_mtim.tv_nsec) / 1000000;
    id_base_ = std::max(id_base_, (mtime_ms + 1000) << 16);
    old_bytes_ += static_cast<uint64_t>(st.st_size);
  }
  if (Status opened = openSegment(old_ids.empty() ? 1 : old_ids.back() + 1); !opened) {
    return fail(opened.error());
  }
  return old_ids;
}

Spool::Recovery Spool::replay(const std::vector<uint32_t>& ids) const {
  Recovery r;
  const uint64_t start = uv_hrtime();
  std::unordered_map<uint64_t, SpooledRef> messages;
  std::vector<uint64_t> order;
  uint64_t last_log = start;
  for (size_t i = 0; i < ids.size() && !replay_stop_; ++i) {
    const uint32_t id = ids[i];
    int fd = ::open(segmentPath(id).c_str(), O_RDWR | O_CLOEXEC);
    MappedFile map;
    if (fd < 0 || !map.open(fd)) {
      r.error = segmentPath(id) + ": " + std::strerror(errno ? errno : EIO);
      if (fd >= 0) ::close(fd);
      break;
    }
    const std::string_view data = map.data();
    SegmentReplay sr = replaySegment(data, id, salt_, messages, order);
    bool keep = false;
    for (const DamagedRange& range : sr.damaged) {
      keep = !quarantine(id, data, range, r.quarantined_bytes) || keep;
    }
    r.segments.push_back({id, fd, data.size(), sr.salt.value_or(salt_), keep});
    r.bytes += data.size();
    if (const uint64_t now = uv_hrtime(); now - last_log > 1'000'000'000 && i + 1 < ids.size()) {
      last_log = now;  // a long replay says how far it has come, once a second
      logEvent(spdlog::level::info, "spool_replaying",
               {{"dir", dir_},
                {"segments", uint64_t{i + 1}},
                {"of", uint64_t{ids.size()}},
                {"bytes", r.bytes},
                {"messages", uint64_t{order.size()}}});
    }
  }
  r.recovered.reserve(order.size());
  for (uint64_t mid : order) {
    SpooledRef& m = messages[mid];
    r.max_id = std::max(r.max_id, mid);
    if (!m.finished()) r.recovered.push_back(std::move(m));
  }
  r.seconds = static_cast<double>(uv_hrtime() - start) / 1e9;
  return r;
}

void Spool::adopt(Recovery& r, std::vector<SpooledRef>& recovered) {
  for (const auto& f : r.segments) segments_[f.id] = Segment{f.fd, f.size, 0, f.salt, f.keep};
  for (const SpooledRef& m : r.recovered) segments_[m.ref.segment].live++;
  quarantined_bytes_ += r.quarantined_bytes;
  const uint64_t floor = (r.max_id + 256) & ~uint64_t{0xff};
  if (nextId() < floor) {
    // The clock went back past a segment's last write and its mtime: ids made since the
    // start may repeat old ones. Not expected; said loudly, and no more from now on.
    logEvent(spdlog::level::critical, "spool_id_overlap",
             {{"dir", dir_}, {"largest_old_id", queueIdString(r.max_id)}});
    id_base_ = floor;
    id_counter_ = 0;
  }
  if (!r.error.empty()) {
    logEvent(spdlog::level::critical, "spool_replay_failed",
             {{"error", r.error}, {"action", "that segment and later ones are left alone"}});
  }
  logEvent(spdlog::level::info, "spool_replayed",
           {{"dir", dir_},
            {"segments", uint64_t{r.segments.size()}},
            {"bytes", r.bytes},
            {"seconds", r.seconds},
            {"mb_per_s", r.seconds > 0 ? static_cast<double>(r.bytes) / 1e6 / r.seconds : 0.0}});
  for (const auto& f : r.segments) maybeDelete(f.id);
  // Markers of messages that are finished (delivered, deleted or bounced while held, and
  // the marker's removal lost to a crash) go now; a leftover one is harmless meanwhile.
  if (!held_at_start_.empty() && r.error.empty()) {
    std::unordered_set<uint64_t> live;
    for (const SpooledRef& m : r.recovered) {
      if (held_at_start_.count(m.id)) live.insert(m.id);
    }
    for (uint64_t id : held_at_start_) {
      if (!live.count(id)) ::unlinkat(hold_fd_, queueIdString(id).c_str(), 0);
    }
    held_at_start_ = std::move(live);
  }
  recovered = std::move(r.recovered);
}

Result<std::vector<SpooledRef>> Spool::open() {
  Result<std::vector<uint32_t>> ids = prepare();
  if (!ids) return fail(ids.error());
  Recovery r = replay(*ids);
  if (!r.error.empty()) {
    for (const auto& f : r.segments) ::close(f.fd);
    return fail(r.error);
  }
  std::vector<SpooledRef> recovered;
  adopt(r, recovered);
  return recovered;
}

Status Spool::openAsync(RecoveredCallback done) {
  Result<std::vector<uint32_t>> prepared = prepare();
  if (!prepared) return fail(prepared.error());
  std::vector<uint32_t> ids = std::move(*prepared);
  replay_done_ = std::move(done);
  logEvent(spdlog::level::info, "spool_replay_started",
           {{"dir", dir_}, {"segments", uint64_t{ids.size()}}, {"bytes", old_bytes_}});
  uv_async_init(loop_, &replay_async_, onReplayDone);
  replay_async_.data = this;
  replay_async_open_ = true;
  replay_thread_ = std::thread([this, ids = std::move(ids)] {
    replayed_ = std::make_unique<Recovery>(replay(ids));
    uv_async_send(&replay_async_);
  });
  return {};
}

void Spool::onReplayDone(uv_async_t* h) {
  auto* self = static_cast<Spool*>(h->data);
  if (!self->replay_thread_.joinable()) return;
  self->replay_thread_.join();
  uv_close(reinterpret_cast<uv_handle_t*>(&self->replay_async_), nullptr);
  self->replay_async_open_ = false;
  std::vector<SpooledRef> recovered;
  self->adopt(*self->replayed_, recovered);
  self->replayed_.reset();
  if (!self->closed_) self->replay_done_(std::move(recovered));
}

bool Spool::quarantine(uint32_t id, std::string_view data, const DamagedRange& range,
                       uint64_t& fresh_bytes) const {
  // Kept, not thrown away: an operator can look at what was there (Postfix's "corrupt"
  // queue). A range quarantined at an earlier start is not copied again.
  const std::string qdir = dir_ + "/quarantine";
  const std::string path = qdir + "/" + quarantineFileName({id, range.offset, range.length});
  const Status made = createDurableDirectories(qdir);
  std::string err = made ? "" : made.error();  // for the log line; "" while all goes well
  bool fresh = false;
  if (err.empty()) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd >= 0) {
      fresh = true;
      std::vector<iovec> iov{{const_cast<char*>(data.data() + range.offset), range.length}};
      bool ok = writeAll(fd, iov) && ::fsync(fd) == 0;
      ok = ::close(fd) == 0 && ok;
      int dfd = ::open(qdir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      ok = ok && dfd >= 0 && ::fsync(dfd) == 0;
      if (dfd >= 0) ::close(dfd);
      if (!ok) err = path + ": " + std::strerror(errno);
    } else if (errno != EEXIST) {
      err = path + ": " + std::strerror(errno);
    }
  }
  if (!fresh && err.empty()) return true;
  logEvent(range.tail ? spdlog::level::warn : spdlog::level::err,
           range.tail ? "spool_torn_tail" : "spool_damaged",
           {{"segment", segmentPath(id)},
            {"offset", range.offset},
            {"length", range.length},
            {"quarantine", err.empty() ? path : "failed: " + err + "; the segment is kept"}});
  if (!err.empty()) return false;
  fresh_bytes += range.length;
  return true;
}

void Spool::maybeDelete(uint32_t id) {
  auto it = segments_.find(id);
  if (it == segments_.end() || id == active_ || it->second.live > 0 || it->second.keep) return;
  ::close(it->second.fd);
  ::unlink(segmentPath(id).c_str());
  segments_.erase(it);
}

void Spool::append(const Envelope& env, std::string body, CommitCallback cb, std::string trailer) {
  MessageBody pieces;
  pieces.adopt(std::move(body));
  append(env, std::move(pieces), std::move(cb), std::move(trailer));
}

void Spool::append(const Envelope& env, MessageBody body, CommitCallback cb, std::string trailer) {
  PendingMessage p;
  encodeMessageHead(p.head, env, body.pieces(), salt_);
  p.body = std::move(body);
  p.trailer = std::move(trailer);
  queue(std::move(p), std::move(cb));
}

void Spool::append(const Envelope& env, std::unique_ptr<SpillFile> body, CommitCallback cb,
                   std::string prefix) {
  PendingMessage p;
  const uint32_t crc =
      prefix.empty() ? body->crc()
                     : crc32cCombine(crc32c(0, prefix.data(), prefix.size()), body->crc(), body->size());
  encodeMessageHead(p.head, env, prefix.size() + body->size(), crc, salt_);
  p.spill = std::move(body);
  p.prefix = std::move(prefix);
  queue(std::move(p), std::move(cb));
}

void Spool::queue(PendingMessage p, CommitCallback cb) {
  p.cb = std::move(cb);
  pending_.push_back(std::move(p));
  scheduleFlush();
}

void Spool::setHeld(uint64_t id, bool held, std::function<void(bool ok)> done) {
  pending_marks_.push_back(PendingMark{id, held, std::move(done)});
  scheduleFlush();
}

void Spool::markDone(uint64_t id, uint32_t rcpt) {
  encodeDone(pending_done_, id, rcpt, salt_);
  if (!in_flight_ && pending_.empty() && !closed_) {
    uv_timer_start(&done_timer_, onDoneTimer, kDoneFlushMs, 0);
  }
}

uint64_t Spool::bytes() const {
  uint64_t total = 0;
  for (const auto& [id, seg] : segments_) total += seg.size;
  return total;
}

void Spool::retain(const StoredRef& ref) {
  auto it = segments_.find(ref.segment);
  POSTERN_ASSERT(it != segments_.end() && it->second.live > 0);
  ++it->second.live;
}

void Spool::release(const StoredRef& ref) {
  auto it = segments_.find(ref.segment);
  POSTERN_ASSERT(it != segments_.end() && it->second.live > 0);
  --it->second.live;
  maybeDelete(ref.segment);
}

Result<std::string> Spool::readBody(const StoredRef& ref) const {
  auto it = segments_.find(ref.segment);
  if (it == segments_.end()) return fail("segment " + std::to_string(ref.segment) + " is gone");
  std::string out(ref.body_size, '\0');
  if (!preadAll(it->second.fd, out.data(), out.size(), ref.body_offset)) {
    return fail("segment " + std::to_string(ref.segment) + ": the body cannot be read");
  }
  return out;
}

Result<BodyFile> Spool::openBody(const StoredRef& ref) const {
  auto it = segments_.find(ref.segment);
  if (it == segments_.end()) return fail("segment " + std::to_string(ref.segment) + " is gone");
  if (ref.body_offset + ref.body_size > it->second.size) {
    return fail("segment " + std::to_string(ref.segment) + " ends before the body does");
  }
  // Asked again before each read: a segment deleted meanwhile is gone, not a closed (and
  // perhaps reused) descriptor. Segments are closed only when deleted or with the Spool.
  const uint32_t segment = ref.segment;
  auto fd = [this, segment] {
    auto s = segments_.find(segment);
    return s == segments_.end() ? -1 : s->second.fd;
  };
  return BodyFile{fd, ref.body_offset, ref.body_size};
}

Result<Envelope> Spool::readEnvelope(uint64_t id, const StoredRef& ref) const {
  auto it = segments_.find(ref.segment);
  if (it == segments_.end()) return fail("segment " + std::to_string(ref.segment) + " is gone");
  Envelope out;
  if (!readEnvelopeAt(it->second.fd, id, ref, it->second.salt, out)) {
    return fail("segment " + std::to_string(ref.segment) +
                ": the record's head cannot be read back as written");
  }
  return out;
}

void Spool::scheduleFlush() {
  // The prepare handle runs once the current iteration's callbacks are done and before
  // the loop next blocks, so every session that reached end-of-data in this iteration
  // joins the same batch, whichever callback (read, timer, commit) it came from.
  if (!in_flight_ && !closed_) uv_prepare_start(&prepare_, onPrepare);
}

void Spool::onPrepare(uv_prepare_t* h) {
  auto* self = static_cast<Spool*>(h->data);
  uv_prepare_stop(h);
  self->flush();
}

void Spool::onDoneTimer(uv_timer_t* h) { static_cast<Spool*>(h->data)->flush(); }

void Spool::onProbeTimer(uv_timer_t* h) {
  auto* self = static_cast<Spool*>(h->data);
  if (self->closed_ || !self->write_failed_) return;
  self->flush(self->pending_.empty() && self->pending_done_.empty());
}

void Spool::flush(bool probe) {
  if (broken_) {
    // Fail-stop: nothing is written after garbage of unknown length. Done records are
    // dropped (the recipients are delivered again after the restart: at least once).
    pending_done_.clear();
    auto refused = std::move(pending_);
    pending_.clear();
    for (auto& m : refused) m.cb(false, StoredRef{});
    auto marks = std::move(pending_marks_);
    pending_marks_.clear();
    for (auto& m : marks) {
      if (m.done) m.done(false);
    }
    return;
  }
  if (in_flight_ ||
      (!probe && pending_.empty() && pending_done_.empty() && pending_marks_.empty())) {
    return;
  }
  uv_timer_stop(&done_timer_);
  Segment& active = segments_[active_];
  if (active.size >= segment_limit_) {
    uint32_t old = active_;
    if (Status opened = openSegment(active_ + 1); opened) {
      maybeDelete(old);
    } else {
      logEvent(spdlog::level::err, "spool_rotate_failed", {{"error", opened.error()}});
    }
  }
  auto* batch = new Batch;
  batch->spool = this;
  batch->fd = segments_[active_].fd;
  batch->dir_fd = dir_dirty_ ? dir_fd_ : -1;
  batch->segment = active_;
  batch->start = segments_[active_].size;
  batch->probe = probe;
  batch->messages.swap(pending_);
  batch->done.swap(pending_done_);
  batch->marks.swap(pending_marks_);
  batch->hold_fd = hold_fd_;
  in_flight_ = true;
  const bool submitted = io_.submit(batch);  // one batch in flight at a time: room for it
  POSTERN_ASSERT(submitted);
}

// Makes or removes hold markers, then makes that durable with one fsync of the directory.
void Spool::writeMarks(int hold_fd, std::vector<PendingMark>& marks) {
  bool changed = false;
  for (auto& m : marks) {
    const std::string name = queueIdString(m.id);
    if (m.held) {
      int fd = ::openat(hold_fd, name.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
      m.ok = fd >= 0 && ::close(fd) == 0;
    } else {
      m.ok = ::unlinkat(hold_fd, name.c_str(), 0) == 0 || errno == ENOENT;
    }
    changed = changed || m.ok;
  }
  if (changed && ::fsync(hold_fd) != 0) {
    for (auto& m : marks) m.ok = false;
  }
}

void Spool::work(void* batch) {
  auto* b = static_cast<Batch*>(batch);
  if (!b->marks.empty()) writeMarks(b->hold_fd, b->marks);
  if (b->messages.empty() && b->done.empty() && !b->probe) {
    b->ok = true;  // markers only: the segment is not touched
    return;
  }
  std::vector<iovec> iov;
  iov.reserve(4 * b->messages.size() + 2);
  const uint64_t start = uv_hrtime();
  b->ok = true;
  for (auto& m : b->messages) {
    iov.push_back({m.head.data(), m.head.size()});
    if (!m.prefix.empty()) iov.push_back({m.prefix.data(), m.prefix.size()});
    if (m.spill) {
      // What is gathered so far goes out first, then the spilled body after its head.
      b->ok = writeAll(b->fd, iov) && copySpill(b->fd, *m.spill);
      iov.clear();
      if (!b->ok) break;
    } else {
      for (std::string_view piece : m.body.pieces()) {
        iov.push_back({const_cast<char*>(piece.data()), piece.size()});
      }
    }
    if (!m.trailer.empty()) iov.push_back({m.trailer.data(), m.trailer.size()});
  }
  if (!b->done.empty()) iov.push_back({b->done.data(), b->done.size()});
  static const std::string kZeros(kProbeBytes, '\0');
  if (b->probe) iov.push_back({const_cast<char*>(kZeros.data()), kZeros.size()});
  b->ok = b->ok && writeAll(b->fd, iov) && ::fdatasync(b->fd) == 0 &&
          (b->dir_fd < 0 || ::fsync(b->dir_fd) == 0);
  if (!b->ok) b->error = errno;
  // Leave no partial record behind that later records would follow (O_APPEND: the next
  // write goes to the new end), nor the probe's bytes.
  if ((!b->ok || b->probe) && ::ftruncate(b->fd, static_cast<off_t>(b->start)) != 0) {
    b->ok = false;
    b->error = errno;
    b->truncate_failed = true;
  }
  b->seconds = static_cast<double>(uv_hrtime() - start) / 1e9;
}

void Spool::afterWork(void* batch) {
  auto* b = static_cast<Batch*>(batch);
  Spool* self = b->spool;
  self->in_flight_ = false;
  Segment& seg = self->segments_[b->segment];
  for (auto& m : b->marks) {
    if (!m.ok) {
      logEvent(spdlog::level::err, "hold_marker_failed",
               {{"id", queueIdString(m.id)}, {"held", m.held}, {"dir", self->dir_}});
    }
    if (m.done) m.done(m.ok);
  }
  if (b->messages.empty() && b->done.empty() && !b->probe) {  // markers only
    delete b;
    return self->scheduleNext();
  }
  if (!b->probe) self->fsync_.observe(b->seconds);
  const bool was_failing = self->write_failed_;
  self->write_failed_ = !b->ok;
  if (was_failing && b->ok) {
    logEvent(spdlog::level::info, "spool_writable", {{"dir", self->dir_}});
  }
  if (b->ok) {
    if (b->dir_fd >= 0) self->dir_dirty_ = false;
    uint64_t offset = b->start;
    for (auto& m : b->messages) {
      seg.live++;
      m.cb(true, StoredRef{b->segment, static_cast<uint32_t>(m.head.size()),
                           offset + m.head.size(), m.bodySize(),
                           crc32c(0, m.head.data(), m.head.size())});
      offset += m.head.size() + m.bodySize() + m.trailer.size();
    }
    seg.size = offset + b->done.size();
  } else if (const bool retry = b->probe || (was_failing && b->messages.empty()); !retry) {
    // Logged when writes start failing or a message is refused, not at every retry.
    logEvent(spdlog::level::err, "spool_write_failed",
             {{"segment", self->segmentPath(b->segment)},
              {"error", std::strerror(b->error)},
              {"messages", uint64_t{b->messages.size()}}});
  }
  if (b->truncate_failed && !self->broken_) {
    self->broken_ = true;
    logEvent(spdlog::level::critical, "spool_broken",
             {{"segment", self->segmentPath(b->segment)},
              {"error", std::strerror(b->error)},
              {"action", "no more writes; mail refused with 452 until a restart"}});
  }
  if (!b->ok) {
    // Keep the Done records for the next attempt; the messages are refused (452).
    if (!self->broken_) self->pending_done_.insert(0, b->done);
    for (auto& m : b->messages) m.cb(false, StoredRef{});
  }
  delete b;
  self->scheduleNext();
}

void Spool::scheduleNext() {
  if (!pending_.empty() || !pending_marks_.empty()) {
    scheduleFlush();
  } else if (!pending_done_.empty() && !closed_) {
    uv_timer_start(&done_timer_, onDoneTimer, kDoneFlushMs, 0);
  } else if (write_failed_ && !broken_ && !closed_) {
    uv_timer_start(&probe_timer_, onProbeTimer, kProbeMs, 0);
  }
}

}  // namespace postern
