#include "relay/outbound/delivery_notices.h"

#include <cstdlib>

#include "core/clock.h"
#include "core/log.h"
#include "core/smtp_reply.h"
#include "queue/record.h"
#include "relay/outbound/smtp_client.h"

namespace postern {

DeliveryNotices::DeliveryNotices(Spool& spool, std::shared_ptr<const Config> config,
                                 std::function<void(SpooledMessage)> queue)
    : spool_(spool), config_(std::move(config)), queue_(std::move(queue)) {}

void DeliveryNotices::bounce(DeliveryJob& job, std::vector<FailedRecipient> failed,
                             bool job_finished) {
  const Envelope& env = job.message.envelope;
  const std::string qid = queueIdString(env.id);
  std::vector<FailedRecipient> reported;
  for (const auto& f : failed) {
    if (notifyOnFailure(env.notifyOf(f.index))) reported.push_back(f);
  }
  if (!bounceWanted(env) || reported.empty()) {
    // The null sender gets no notice (a bounce never bounces), nor a NOTIFY without FAILURE.
    logEvent(spdlog::level::info, "bounce_suppressed",
             {{"id", qid}, {"why", env.sender.empty() ? "null sender" : "NOTIFY"}});
    for (const auto& f : failed) spool_.markDone(env.id, f.index);
    if (job_finished) spool_.release(job.message.ref);
    return;
  }
  auto notice = composeNotice(job, std::move(reported), DsnAction::kFailed);
  if (!notice) return;  // the message stays without Done records: the next start retries it
  std::string trailer;
  for (const auto& f : failed) encodeDone(trailer, env.id, f.index, spool_.salt());
  const StoredRef old = job.message.ref;
  if (!job_finished) spool_.retain(old);  // the original outlives its bounce's commit
  spoolNotice(env, std::move(*notice), "bounce", std::move(trailer), [this, old](bool ok) {
    if (ok) spool_.release(old);
  });
}

std::optional<std::vector<std::string>> DeliveryNotices::composeNotice(
    const DeliveryJob& job, std::vector<FailedRecipient> rcpts, DsnAction action) {
  const Envelope& env = job.message.envelope;
  Result<std::string> original = spool_.readBody(job.message.ref);
  if (!original) {
    logEvent(spdlog::level::err, "bounce_failed",
             {{"id", queueIdString(env.id)}, {"error", "cannot read body: " + original.error()}});
    return std::nullopt;
  }
  BounceInput in;
  in.reporting_mta = config_->hostname;
  in.original = &env;
  in.failed = std::move(rcpts);
  in.original_message = *original;
  in.size_limit = config_->delivery.bounce_size_limit;
  in.now_ms = unixMillis();
  in.action = action;
  in.retry_until_ms =
      env.received_ms + static_cast<int64_t>(config_->delivery.queue_lifetime * 1000);
  return composeNotices(in);
}

void DeliveryNotices::spoolNotice(const Envelope& original, std::vector<std::string> notices,
                                  const char* kind, std::string trailer,
                                  std::function<void(bool)> after) {
  if (notices.size() > 1) {
    // All but the last first, each once the one before is durable; the trailer (the
    // original's Done records) only with the last.
    std::string first = std::move(notices.front());
    notices.erase(notices.begin());
    spoolNotice(original, {std::move(first)}, kind, {},
                [this, original, rest = std::move(notices), kind, trailer = std::move(trailer),
                 after = std::move(after)](bool ok) mutable {
                  if (!ok || stopping_) return after(false);
                  spoolNotice(original, std::move(rest), kind, std::move(trailer),
                              std::move(after));
                });
    return;
  }
  std::string notice = std::move(notices.front());
  Envelope dsn;
  dsn.id = spool_.nextId();
  dsn.received_ms = unixMillis();
  dsn.recipients.push_back(original.sender);  // from <>: a notice of it is never sent
  dsn.smtputf8 = original.smtputf8;
  const std::string qid = queueIdString(original.id);
  spool_.append(
      dsn, std::move(notice),
      [this, dsn, qid, kind, after = std::move(after)](bool ok, const StoredRef& ref) {
        if (!ok) {
          logEvent(spdlog::level::err, "bounce_failed",
                   {{"id", qid},
                    {"kind", kind},
                    {"error", "spool write failed; retried at the next start"}});
        } else {
          logEvent(spdlog::level::info, "bounce_queued",
                   {{"id", qid},
                    {"kind", kind},
                    {"bounce_id", queueIdString(dsn.id)},
                    {"to", dsn.recipients[0]}});
        }
        after(ok);
        if (ok && !stopping_) queue_(SpooledMessage{dsn, ref, {}});
      },
      std::move(trailer));
}

void DeliveryNotices::notifySuccess(const DeliveryJob& job,
                                    const std::vector<RecipientResult>& results,
                                    const std::string& relay) {
  const Envelope& env = job.message.envelope;
  if (!bounceWanted(env)) return;
  std::vector<FailedRecipient> relayed;
  for (const auto& r : results) {
    if (classifyReply(r.code) == ReplyClass::kSuccess && notifyOnSuccess(env.notifyOf(r.index))) {
      relayed.push_back({r.index, "2.0.0", std::to_string(r.code) + " " + r.text, relay,
                         "relayed to " + relay + ", which offers no delivery notifications"});
    }
  }
  if (relayed.empty()) return;
  // Lost in a crash before it is spooled, a success notice is not sent again (the
  // recipients are done); the message itself is safe either way.
  if (auto notice = composeNotice(job, std::move(relayed), DsnAction::kRelayed)) {
    spoolNotice(env, std::move(*notice), "relayed", {}, [](bool) {});
  }
}

void DeliveryNotices::warnDelayed(DeliveryJob& job) {
  const Envelope& env = job.message.envelope;
  const double warn_after = config_->delivery.delay_warning;
  if (warn_after <= 0 || job.delay_warned || !bounceWanted(env)) return;
  if (unixMillis() - env.received_ms < static_cast<int64_t>(warn_after * 1000)) return;
  job.delay_warned = true;
  std::vector<FailedRecipient> delayed;
  for (uint32_t i : job.pendingRecipients()) {
    if (!notifyOnDelay(env.notifyOf(i))) continue;
    const int code = std::atoi(job.last_reply.c_str());
    const std::string text = job.last_reply.size() > 4 ? job.last_reply.substr(4) : "";
    delayed.push_back({i, statusFromReply(code / 100 == 4 ? code : 451, text), job.last_reply, "",
                       "not delivered yet: " + job.last_reply});
  }
  if (delayed.empty()) return;
  if (auto notice = composeNotice(job, std::move(delayed), DsnAction::kDelayed)) {
    spoolNotice(env, std::move(*notice), "delayed", {}, [](bool) {});
  }
}

}  // namespace postern
