// Scheduler: which spooled messages are ready for a delivery attempt and which wait.
//
// Pure bookkeeping with the time passed in (milliseconds on any monotonic clock), so it
// can be tested without a loop. A deferred job waits retry_min * 2^(attempts-1), capped at
// retry_max, with up to 10% random jitter so that a burst of failures does not retry as
// one burst.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <random>
#include <vector>

#include "queue/spool.h"

namespace postern {

// One delivery of some recipients of a spooled message to one next hop. A message whose
// recipients go to several next hops is split into one job per hop; the recipients a job
// does not carry are marked done in its copy of the message.
struct DeliveryJob {
  SpooledMessage message;
  unsigned attempts = 0;
  std::string last_reply;     // the latest temporary failure, for an expiry notice
  uint64_t started_ms = 0;    // loop time the current attempt began
  bool delay_warned = false;  // a delay notice went out (not remembered across restarts)

  // Recipients not yet done, by index into message.envelope.recipients.
  std::vector<uint32_t> pendingRecipients() const;
};

// A job waiting (for its retry, or in a next hop's queue) without its envelope, which is
// read back from the spool when it is taken up (Spool::readEnvelope): about 100 octets a
// job however long its addresses, so a backlog of millions fits in a few hundred MB. A job
// may keep its DeliveryJob whole instead (`whole`), which spares the read where the queue
// is short and the job about to go.
struct ParkedJob {
  SpooledRef message;  // id, arrival, where it lies, done flags
  unsigned attempts = 0;
  bool delay_warned = false;
  std::shared_ptr<const std::string> last_reply;  // shared by the jobs of one failure
  std::unique_ptr<DeliveryJob> whole;
};

class Scheduler {
 public:
  Scheduler(double retry_min_s, double retry_max_s, uint64_t seed = std::random_device{}());

  void addReady(ParkedJob job);
  std::optional<ParkedJob> takeReady();

  // Counts an attempt and parks the job for its backoff interval.
  void defer(ParkedJob job, uint64_t now_ms);
  // Parks the job until a given time without counting an attempt (destination down).
  void deferUntil(ParkedJob job, uint64_t when_ms);

  // Moves every deferred job that is due to the ready queue. Returns the delay until the
  // next deferred job is due, or -1 if none waits.
  int64_t promote(uint64_t now_ms);

  // The delay until the next deferred job is due (0 if one is overdue), or -1.
  int64_t nextDue(uint64_t now_ms) const;

  uint64_t backoffMs(unsigned attempts);
  // New retry settings (a reload): they apply from each job's next deferral.
  void setBackoff(double retry_min_s, double retry_max_s);

  // Admin: every deferred job with its due time; jobs of one message (by envelope id)
  // taken out; deferred jobs made due now (id 0: all). The latter two return a count.
  template <class F>
  void forEachDeferred(F f) const {
    for (const auto& [when, job] : deferred_) f(job, when);
  }
  std::vector<ParkedJob> takeDeferred(uint64_t id);
  size_t flush(uint64_t id);

  size_t readyCount() const { return ready_.size(); }
  size_t deferredCount() const { return deferred_.size(); }

 private:
  uint64_t retry_min_ms_;
  uint64_t retry_max_ms_;
  std::minstd_rand rng_;
  std::deque<ParkedJob> ready_;
  std::multimap<uint64_t, ParkedJob> deferred_;
};

}  // namespace postern
