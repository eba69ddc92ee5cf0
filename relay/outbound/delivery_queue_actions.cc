// Delivery's side of the operator's queue tools (admin API, postern queue): a listing of
// every job wherever it waits (ready for a next hop, deferred, held, or on a connection),
// the counts for metrics, and flush, remove, bounce, requeue, hold and release by queue id.
// A job on a connection right now is left alone by the actions; it finishes where it is
// (a hold catches it if its attempt ends deferred).
//
// Failure: a waiting job whose envelope cannot be read back is left out of a listing and
// skipped by the actions, which log it (spool_unreadable); its message stays in the spool.
#include <algorithm>

#include "core/clock.h"
#include "core/log.h"
#include "relay/outbound/delivery.h"

namespace postern {

std::vector<QueueEntry> Delivery::queueEntries() const {
  std::vector<QueueEntry> out;
  auto add = [&](const SpooledMessage& m, unsigned attempts, const std::string& last_reply,
                 const std::string& state, const std::string& hop) {
    QueueEntry e = entryFromSpool(m);
    e.state = state;
    e.attempts = attempts;
    e.next_hop = hop;
    e.last_reply = last_reply;
    out.push_back(std::move(e));
  };
  // A waiting job's envelope is read back from the spool (one small read each).
  auto addParked = [&](const ParkedJob& p, const std::string& state, const std::string& hop) {
    Result<SpooledMessage> m = peek(p);
    if (!m) return false;  // unreadable: left out of the listing
    add(*m, p.attempts, p.last_reply ? *p.last_reply : "", state, hop);
    return true;
  };
  forEachDestination([&](const Destination& d) {
    for (const auto& job : d.ready) addParked(job, "ready", d.key);
    for (const SmtpClient* c : d.clients) {
      if (const DeliveryJob* job = c->job()) {
        add(job->message, job->attempts, job->last_reply, "active", d.key);
      }
    }
  });
  for (const auto& [id, job] : held_) addParked(job, "held", "");
  const uint64_t now = uv_now(loop_);
  const int64_t wall = unixMillis();
  scheduler_.forEachDeferred([&](const ParkedJob& job, uint64_t when) {
    if (addParked(job, "deferred", "")) {
      out.back().next_attempt_ms = wall + static_cast<int64_t>(when > now ? when - now : 0);
    }
  });
  std::sort(out.begin(), out.end(),
            [](const QueueEntry& a, const QueueEntry& b) { return a.received_ms < b.received_ms; });
  return out;
}

void Delivery::queueCounts(size_t& ready, size_t& deferred, size_t& active, size_t& held,
                           int64_t& oldest_ms) const {
  ready = active = 0;
  deferred = scheduler_.deferredCount();
  held = held_.size();
  oldest_ms = 0;
  auto older = [&](int64_t t) {
    if (oldest_ms == 0 || t < oldest_ms) oldest_ms = t;
  };
  forEachDestination([&](const Destination& d) {
    ready += d.ready.size();
    if (!d.ready.empty()) older(d.ready.front().message.received_ms);  // oldest first
    for (const SmtpClient* c : d.clients) {
      if (c->job() != nullptr) {
        ++active;
        older(c->job()->message.envelope.received_ms);
      }
    }
  });
  scheduler_.forEachDeferred(
      [&](const ParkedJob& job, uint64_t) { older(job.message.received_ms); });
  for (const auto& [id, job] : held_) older(job.message.received_ms);
}

std::map<std::string, size_t> Delivery::connectionPhases() const {
  std::map<std::string, size_t> out;
  forEachDestination([&](const Destination& d) {
    for (const SmtpClient* c : d.clients) ++out[c->phase()];
  });
  return out;
}

std::vector<ParkedJob> Delivery::takeParked(uint64_t id, bool with_held) {
  std::vector<ParkedJob> parked = scheduler_.takeDeferred(id);
  for (auto& [key, d] : destinations_) {
    for (auto it = d->ready.begin(); it != d->ready.end();) {
      if (it->message.id == id) {
        parked.push_back(std::move(*it));
        it = d->ready.erase(it);
      } else {
        ++it;
      }
    }
  }
  if (with_held) {
    auto [from, to] = held_.equal_range(id);
    for (auto it = from; it != to; ++it) parked.push_back(std::move(it->second));
    held_.erase(from, to);
  }
  return parked;
}

std::vector<std::unique_ptr<DeliveryJob>> Delivery::takeJobs(uint64_t id, bool with_held) {
  std::vector<std::unique_ptr<DeliveryJob>> jobs;
  for (auto& p : takeParked(id, with_held)) {
    if (auto job = unpark(std::move(p))) jobs.push_back(std::move(job));
  }
  return jobs;
}

size_t Delivery::flush(uint64_t id) {
  if (stopping_) return 0;
  size_t n = scheduler_.flush(id);
  if (id == 0) {
    for (auto& [key, d] : destinations_) d->down_until = 0;
  }
  while (auto parked = scheduler_.takeReady()) {
    auto job = unpark(std::move(*parked));
    if (!job) continue;
    // An operator's flush is a retry now, also when the message's next hop is backed off.
    destinationFor(*job).down_until = 0;
    dispatch(std::move(job));
  }
  if (id == 0) {
    std::vector<Destination*> all;
    for (auto& [key, d] : destinations_) all.push_back(d.get());
    for (Destination* d : all) pump(*d);
  }
  logEvent(spdlog::level::info, "queue_flush",
           {{"id", id ? queueIdString(id) : "all"}, {"jobs", uint64_t{n}}});
  return n;
}

size_t Delivery::remove(uint64_t id) {
  auto jobs = takeJobs(id, true);
  for (auto& job : jobs) {
    for (uint32_t i : job->pendingRecipients()) {
      logEvent(spdlog::level::warn, "deleted",
               {{"id", queueIdString(id)}, {"rcpt", job->message.envelope.recipients[i]}});
      spool_.markDone(id, i);
    }
    spool_.release(job->message.ref);
  }
  if (isHeld(id)) endHold(id);
  return jobs.size();
}

size_t Delivery::bounceNow(uint64_t id) {
  auto jobs = takeJobs(id, true);
  for (auto& job : jobs) {
    std::vector<RecipientResult> results;
    for (uint32_t i : job->pendingRecipients()) {
      results.push_back({i, 554, "5.0.0 returned to the sender by the relay's administrator"});
    }
    finishJob(std::move(job), results, "");  // ends a hold with the last held job
  }
  return jobs.size();
}

size_t Delivery::requeue(uint64_t id) {
  if (stopping_) return 0;
  auto jobs = takeJobs(id, false);
  // Each job goes through routing as a new arrival would: its recipients may belong to
  // other next hops now. Its hold on the spool passes to the jobs it splits into.
  for (auto& job : jobs) enqueue(std::move(job->message));
  logEvent(spdlog::level::info, "requeued",
           {{"id", queueIdString(id)}, {"jobs", uint64_t{jobs.size()}}});
  return jobs.size();
}

size_t Delivery::activeJobs(uint64_t id) const {
  size_t n = 0;
  forEachDestination([&](const Destination& d) {
    for (const SmtpClient* c : d.clients) {
      if (const DeliveryJob* job = c->job(); job && job->message.envelope.id == id) ++n;
    }
  });
  return n;
}

void Delivery::parkHeld(ParkedJob job) {
  const uint64_t id = job.message.id;
  held_.emplace(id, std::move(job));
}

void Delivery::endHold(uint64_t id) {
  if (held_.count(id) != 0) return;  // another part of it is still held
  held_ids_.erase(id);
  spool_.setHeld(id, false, {});  // a marker left by a failure is removed at the next start
}

void Delivery::hold(uint64_t id, ActionDone done) {
  std::vector<ParkedJob> jobs = takeParked(id, false);
  const size_t n = jobs.size() + activeJobs(id);
  if (n == 0) return done(held_.count(id), true);  // unknown, gone, or held already
  held_ids_.insert(id);
  for (auto& job : jobs) parkHeld(std::move(job));
  logEvent(spdlog::level::info, "held", {{"id", queueIdString(id)}, {"jobs", uint64_t{n}}});
  spool_.setHeld(id, true, [done = std::move(done), n](bool ok) { done(n, ok); });
}

void Delivery::release(uint64_t id, ActionDone done) {
  if (!isHeld(id)) return done(0, true);
  held_ids_.erase(id);
  std::vector<ParkedJob> jobs;
  auto [from, to] = held_.equal_range(id);
  for (auto it = from; it != to; ++it) jobs.push_back(std::move(it->second));
  held_.erase(from, to);
  const size_t n = jobs.size();
  logEvent(spdlog::level::info, "released", {{"id", queueIdString(id)}, {"jobs", uint64_t{n}}});
  // Routed afresh: a message held since a start was never split between next hops.
  for (auto& p : jobs) {
    if (stopping_) break;  // the marker stays; the next start holds it again
    if (auto job = unpark(std::move(p))) enqueue(std::move(job->message));
  }
  if (stopping_) return done(n, false);
  spool_.setHeld(id, false, [done = std::move(done), n](bool ok) { done(n, ok); });
}

std::optional<Delivery::BodyLocation> Delivery::bodyLocation(uint64_t id) const {
  std::optional<BodyLocation> out;
  auto at = [&](const StoredRef& ref) {
    out = BodyLocation{spool_.segmentPath(ref.segment), ref.body_offset, ref.body_size};
  };
  forEachDestination([&](const Destination& d) {
    for (const auto& job : d.ready) {
      if (job.message.id == id) at(job.message.ref);
    }
    for (const SmtpClient* c : d.clients) {
      if (const DeliveryJob* job = c->job(); job && job->message.envelope.id == id) {
        at(job->message.ref);
      }
    }
  });
  scheduler_.forEachDeferred([&](const ParkedJob& job, uint64_t) {
    if (job.message.id == id) at(job.message.ref);
  });
  if (auto it = held_.find(id); it != held_.end()) at(it->second.message.ref);
  return out;
}

}  // namespace postern
