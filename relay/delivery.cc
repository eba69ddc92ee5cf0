#include "relay/delivery.h"

#include <algorithm>

#include "core/clock.h"
#include "core/log.h"
#include "core/smtp_reply.h"
#include "queue/record.h"

namespace postern {
Delivery::Delivery(uv_loop_t* loop, Spool& spool, const Config& config)
    : loop_(loop),
      spool_(spool),
      config_(config),
      scheduler_(config.delivery.retry_min, config.delivery.retry_max) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
}

Delivery::~Delivery() = default;

std::string Delivery::init() {
  for (const auto& r : config_.routes) {
    if (r.domain != "*") return "route for \"" + r.domain + "\": only domain \"*\" is supported";
    if (r.next_hop == "mx") return "next_hop = \"mx\" is not supported yet";
    if (!parseHostPort(r.next_hop, next_hop_)) {
      return "next_hop \"" + r.next_hop + "\" must be a numeric ip:port";
    }
    next_hop_text_ = r.next_hop;
  }
  if (next_hop_text_.empty()) return "a [[route]] with domain = \"*\" is required";
  return "";
}

void Delivery::enqueue(SpooledMessage message) {
  auto job = std::make_unique<DeliveryJob>();
  if (message.done.size() != message.envelope.recipients.size()) {
    message.done.assign(message.envelope.recipients.size(), false);
  }
  job->message = std::move(message);
  if (uv_now(loop_) < host_down_until_) {
    // The next hop is backed off; this message waits with the others.
    scheduler_.deferUntil(std::move(job), host_down_until_);
    armTimer();
    return;
  }
  scheduler_.addReady(std::move(job));
  pump();
}

void Delivery::pump() {
  if (stopping_) return;
  uint64_t now = uv_now(loop_);
  if (now < host_down_until_) return;
  for (auto* c : clients_) {
    if (scheduler_.readyCount() == 0) break;
    if (c->idle()) clientReady(c, false);
  }
  while (scheduler_.readyCount() > connecting_ &&
         clients_.size() < config_.delivery.connections_per_host) {
    auto* c = new SmtpClient(*this, next_hop_);
    clients_.insert(c);
    ++connecting_;
    c->start();
  }
}

void Delivery::clientReady(SmtpClient* client, bool first_time) {
  if (first_time) {
    --connecting_;
    host_failures_ = 0;
    host_down_until_ = 0;
  }
  if (stopping_ || client->messagesSent() >= config_.delivery.messages_per_connection) {
    client->shutdown();
    return;
  }
  if (auto job = scheduler_.takeReady()) {
    ++active_;
    client->deliver(std::move(job));
  }
}

void Delivery::jobFinished(SmtpClient*, std::unique_ptr<DeliveryJob> job,
                           std::vector<RecipientResult> results) {
  --active_;
  const Envelope& env = job->message.envelope;
  std::string qid = queueIdString(env.id);
  bool retry = false;
  for (const auto& r : results) {
    const std::string& rcpt = env.recipients[r.index];
    const ReplyClass cls = classifyReply(r.code);
    if (cls == ReplyClass::kTransient) {
      retry = true;
      logEvent(spdlog::level::info, "deferred",
               {{"id", qid},
                {"rcpt", rcpt},
                {"relay", next_hop_text_},
                {"code", r.code},
                {"reply", r.text},
                {"attempts", uint64_t{job->attempts + 1}}});
      continue;
    }
    // Anything but success or a temporary failure is final (an invalid code included).
    const bool ok = cls == ReplyClass::kSuccess;
    logEvent(ok ? spdlog::level::info : spdlog::level::warn, ok ? "delivered" : "bounced",
             {{"id", qid},
              {"rcpt", rcpt},
              {"relay", next_hop_text_},
              {"code", r.code},
              {"reply", r.text}});
    job->message.done[r.index] = true;
    spool_.markDone(env.id, r.index);
  }
  if (retry) {
    int64_t age_ms = unixMillis() - env.received_ms;
    if (age_ms > static_cast<int64_t>(config_.delivery.queue_lifetime * 1000)) {
      for (uint32_t i : job->pendingRecipients()) {
        logEvent(spdlog::level::warn, "expired", {{"id", qid}, {"rcpt", env.recipients[i]}});
        spool_.markDone(env.id, i);
      }
      spool_.release(job->message.ref);
    } else {
      deferJob(std::move(job));
    }
  } else {
    spool_.release(job->message.ref);
  }
  pump();
}

void Delivery::deferJob(std::unique_ptr<DeliveryJob> job) {
  const StoredRef old_ref = job->message.ref;
  std::string body;
  if (stopping_ || old_ref.segment == spool_.activeSegment() || !spool_.readBody(old_ref, body)) {
    scheduler_.defer(std::move(job), uv_now(loop_));
    armTimer();
    return;
  }
  const Envelope& old = job->message.envelope;
  Envelope fresh;
  fresh.id = spool_.nextId();
  fresh.received_ms = old.received_ms;  // the queue lifetime still counts from arrival
  fresh.sender = old.sender;
  fresh.smtputf8 = old.smtputf8;
  fresh.dsn_ret = old.dsn_ret;
  fresh.dsn_envid = old.dsn_envid;
  std::string trailer;
  for (uint32_t i : job->pendingRecipients()) {
    fresh.recipients.push_back(old.recipients[i]);
    fresh.dsn_notify.push_back(old.notifyOf(i));
    fresh.dsn_orcpt.push_back(old.orcptOf(i));
    encodeDone(trailer, old.id, i);
  }
  auto held = std::make_shared<std::unique_ptr<DeliveryJob>>(std::move(job));
  spool_.append(
      fresh, std::move(body),
      [this, held, fresh, old_ref](bool ok, const StoredRef& ref) {
        auto job = std::move(*held);
        if (ok) {
          logEvent(spdlog::level::info, "rewritten",
                   {{"id", queueIdString(job->message.envelope.id)},
                    {"new_id", queueIdString(fresh.id)}});
          spool_.release(old_ref);
          job->message.envelope = fresh;
          job->message.ref = ref;
          job->message.done.assign(fresh.recipients.size(), false);
        }
        if (stopping_) return;  // recovery at the next start retries it
        scheduler_.defer(std::move(job), uv_now(loop_));
        armTimer();
      },
      std::move(trailer));
}

void Delivery::clientClosed(SmtpClient* client) {
  if (!client->everReady()) {
    --connecting_;
    if (!stopping_) {
      // The destination could not be reached: park everything ready for it.
      ++host_failures_;
      uint64_t until = uv_now(loop_) + scheduler_.backoffMs(host_failures_);
      host_down_until_ = std::max(host_down_until_, until);
      while (auto job = scheduler_.takeReady()) scheduler_.deferUntil(std::move(job), until);
      armTimer();
    }
  }
  clients_.erase(client);
  delete client;
  pump();
}

void Delivery::armTimer() {
  if (stopping_) return;
  // Only ever armed for a time still ahead (the next deferred job's due time, or the next
  // hop's retry while ready jobs wait for it): a 0 ms timer re-armed while connections
  // are still being set up would starve the loop of I/O.
  uint64_t now = uv_now(loop_);
  int64_t next = scheduler_.promote(now);
  // Jobs parked by one failed connection fall due at that failure's backoff, but failures
  // of connections opened alongside it push the host's retry further out, and pump()
  // holds ready jobs until then: wake up then as well, or nothing would send them.
  if (scheduler_.readyCount() > 0 && now < host_down_until_) {
    auto host = static_cast<int64_t>(host_down_until_ - now);
    next = next < 0 ? host : std::min(next, host);
  }
  if (next >= 0) uv_timer_start(&timer_, onTimer, static_cast<uint64_t>(next), 0);
}

void Delivery::onTimer(uv_timer_t* t) {
  auto* d = static_cast<Delivery*>(t->data);
  d->armTimer();
  d->pump();
}

void Delivery::stop() {
  stopping_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  for (auto* c : std::set<SmtpClient*>(clients_)) c->shutdown();
}

}  // namespace postern
