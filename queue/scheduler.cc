#include "queue/scheduler.h"

#include <algorithm>

namespace postern {

std::vector<uint32_t> DeliveryJob::pendingRecipients() const {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < message.envelope.recipients.size(); ++i) {
    if (i >= message.done.size() || !message.done[i]) out.push_back(i);
  }
  return out;
}

Scheduler::Scheduler(double retry_min_s, double retry_max_s, uint64_t seed)
    : retry_min_ms_(static_cast<uint64_t>(retry_min_s * 1000)),
      retry_max_ms_(static_cast<uint64_t>(retry_max_s * 1000)),
      rng_(static_cast<std::minstd_rand::result_type>(seed)) {}

void Scheduler::setBackoff(double retry_min_s, double retry_max_s) {
  retry_min_ms_ = static_cast<uint64_t>(retry_min_s * 1000);
  retry_max_ms_ = static_cast<uint64_t>(retry_max_s * 1000);
}

void Scheduler::addReady(ParkedJob job) { ready_.push_back(std::move(job)); }

std::optional<ParkedJob> Scheduler::takeReady() {
  if (ready_.empty()) return std::nullopt;
  std::optional<ParkedJob> job = std::move(ready_.front());
  ready_.pop_front();
  return job;
}

uint64_t Scheduler::backoffMs(unsigned attempts) {
  uint64_t delay = retry_min_ms_;
  for (unsigned i = 1; i < attempts && delay < retry_max_ms_; ++i) delay *= 2;
  delay = std::min(delay, retry_max_ms_);
  std::uniform_int_distribution<uint64_t> jitter(0, delay / 10);
  return delay + jitter(rng_);
}

void Scheduler::defer(ParkedJob job, uint64_t now_ms) {
  ++job.attempts;
  uint64_t when = now_ms + backoffMs(job.attempts);
  deferred_.emplace(when, std::move(job));
}

void Scheduler::deferUntil(ParkedJob job, uint64_t when_ms) {
  deferred_.emplace(when_ms, std::move(job));
}

int64_t Scheduler::promote(uint64_t now_ms) {
  auto it = deferred_.begin();
  while (it != deferred_.end() && it->first <= now_ms) {
    ready_.push_back(std::move(it->second));
    it = deferred_.erase(it);
  }
  if (deferred_.empty()) return -1;
  return static_cast<int64_t>(deferred_.begin()->first - now_ms);
}

std::vector<ParkedJob> Scheduler::takeDeferred(uint64_t id) {
  std::vector<ParkedJob> out;
  for (auto it = deferred_.begin(); it != deferred_.end();) {
    if (it->second.message.id == id) {
      out.push_back(std::move(it->second));
      it = deferred_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

size_t Scheduler::flush(uint64_t id) {
  size_t n = 0;
  for (auto it = deferred_.begin(); it != deferred_.end();) {
    if (id == 0 || it->second.message.id == id) {
      ready_.push_back(std::move(it->second));
      it = deferred_.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

int64_t Scheduler::nextDue(uint64_t now_ms) const {
  if (deferred_.empty()) return -1;
  uint64_t when = deferred_.begin()->first;
  return when <= now_ms ? 0 : static_cast<int64_t>(when - now_ms);
}

}  // namespace postern
