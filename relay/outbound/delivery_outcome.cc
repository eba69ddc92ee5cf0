// Delivery's outcome policy, in the spirit of Postfix's smtp_trouble.c: what a finished
// attempt means for each recipient. 2xx is Done; a final failure (5xx, an invalid reply, a
// permanent DNS answer, an operator's bounce) bounces; 4xx defers the job for a retry, or
// bounces it with 4.4.7 once it is past delivery.queue_lifetime. A job deferred again from
// a segment older than the active one is rewritten forward (see delivery.h).
//
// Failure: a Done record, a bounce or a rewrite that does not reach the spool leaves the
// recipient pending there, so the next start's recovery tries it again: a crash can
// repeat a delivery attempt or a notice, never lose a message.
#include "core/clock.h"
#include "core/log.h"
#include "core/smtp_reply.h"
#include "queue/record.h"
#include "relay/outbound/delivery.h"

namespace postern {

void Delivery::jobFinished(SmtpClient* client, std::unique_ptr<DeliveryJob> job,
                           std::vector<RecipientResult> results) {
  Destination& d = client->destination();
  if (!client->offersDsn()) notices_.notifySuccess(*job, results, client->host());
  // Labelled by next hop for smarthost routes, by route for MX ones ("mx:*"): one label
  // per recipient domain would grow without bound.
  const std::string label = d.route.isMx() ? "mx:" + d.route.domain : d.key;
  metrics_.delivery[label].observe(static_cast<double>(uv_now(loop_) - job->started_ms) / 1000);
  finishJob(std::move(job), results, client->host(), 0, client->tlsSummary());
  pump(d);
}

void Delivery::finishJob(std::unique_ptr<DeliveryJob> job,
                         const std::vector<RecipientResult>& results, const std::string& relay,
                         uint64_t retry_at, const std::string& tls) {
  const Envelope& env = job->message.envelope;
  const std::string qid = queueIdString(env.id);
  bool retry = false;
  std::vector<FailedRecipient> failed;
  // Seconds since the message arrived, as Postfix's delay= (queue time plus this attempt).
  const double delay = static_cast<double>(unixMillis() - env.received_ms) / 1000;
  for (const auto& r : results) {
    const std::string& rcpt = env.recipients[r.index];
    const ReplyClass cls = classifyReply(r.code);
    const std::string reply = std::to_string(r.code) + " " + r.text;
    if (cls == ReplyClass::kTransient) {
      retry = true;
      ++metrics_.deferred;
      job->last_reply = reply;
      logEvent(spdlog::level::info, "deferred",
               {{"id", qid},
                {"rcpt", rcpt},
                {"relay", relay},
                {"code", r.code},
                {"reply", r.text},
                {"delay", delay},
                {"attempts", uint64_t{job->attempts + 1}},
                {"tls", tls}});
      continue;
    }
    // Anything but success or a temporary failure is final (an invalid code included).
    const bool ok = cls == ReplyClass::kSuccess;
    logEvent(ok ? spdlog::level::info : spdlog::level::warn, ok ? "delivered" : "bounced",
             {{"id", qid},
              {"rcpt", rcpt},
              {"relay", relay},
              {"code", r.code},
              {"reply", r.text},
              {"delay", delay},
              {"tls", tls}});
    job->message.done[r.index] = true;
    ++(ok ? metrics_.delivered : metrics_.bounced);
    if (ok) {
      spool_.markDone(env.id, r.index);
    } else {
      failed.push_back({r.index, statusFromReply(r.code, r.text), relay.empty() ? "" : reply, relay,
                        relay.empty() ? r.text : relay + " said: " + reply});
    }
  }
  const int64_t age_ms = unixMillis() - env.received_ms;
  if (retry && age_ms > static_cast<int64_t>(config_->delivery.queue_lifetime * 1000)) {
    for (uint32_t i : job->pendingRecipients()) {
      logEvent(spdlog::level::warn, "expired",
               {{"id", qid}, {"rcpt", env.recipients[i]}, {"reply", job->last_reply}});
      job->message.done[i] = true;
      ++metrics_.expired;
      failed.push_back({i, "4.4.7", job->last_reply, relay,
                        "message expired after " + std::to_string(age_ms / 1000) +
                            " s in the queue; last error: " + job->last_reply});
    }
    retry = false;
  }
  if (!failed.empty()) {
    notices_.bounce(*job, std::move(failed), !retry);  // releases the message when it finishes it
  } else if (!retry) {
    spool_.release(job->message.ref);
  }
  if (!retry && isHeld(env.id)) endHold(env.id);  // held while on a connection, and finished
  if (retry) {
    notices_.warnDelayed(*job);
    deferJob(std::move(job), retry_at);
  }
}

void Delivery::deferJob(std::unique_ptr<DeliveryJob> job, uint64_t retry_at) {
  if (isHeld(job->message.envelope.id)) {  // held while it was on a connection
    ++job->attempts;
    return parkHeld(park(std::move(job), false));
  }
  if (retry_at != 0) {
    ++job->attempts;
    scheduler_.deferUntil(park(std::move(job), false), retry_at);
    armTimer();
    return;
  }
  const StoredRef old_ref = job->message.ref;
  const bool rewrite = !stopping_ && old_ref.segment != spool_.activeSegment();
  Result<std::string> body = rewrite ? spool_.readBody(old_ref) : fail("not rewritten");
  if (!body) {
    scheduler_.defer(park(std::move(job), false), uv_now(loop_));
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
    encodeDone(trailer, old.id, i, spool_.salt());
  }
  auto held = std::make_shared<std::unique_ptr<DeliveryJob>>(std::move(job));
  spool_.append(
      fresh, std::move(*body),
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
        scheduler_.defer(park(std::move(job), false), uv_now(loop_));
        armTimer();
      },
      std::move(trailer));
}

}  // namespace postern
