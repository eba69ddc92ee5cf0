#include "relay/delivery.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>

#include "core/clock.h"
#include "core/log.h"
#include "core/smtp_reply.h"
#include "queue/record.h"

namespace postern {
namespace {

// After an opportunistic STARTTLS handshake fails, a next hop gets plain text this long.
constexpr uint64_t kPlainAfterTlsFailureMs = 3600'000;
// A DNS answer is used for at least this long, whatever its TTL (see resolve()).
constexpr uint64_t kMinAnswerMs = 1000;
// The first jobs of a next hop's queue wait whole; the rest have their envelopes read back
// from the spool when their turn comes (ParkedJob): a short queue costs no reads, a long
// one no memory beyond its index.
constexpr size_t kWholeJobsPerHop = 256;

uint64_t addSaturating(uint64_t a, uint64_t b) { return b > UINT64_MAX - a ? UINT64_MAX : a + b; }

// "4.4.1 why" unless why already starts with an enhanced status code.
std::string withStatus(const std::string& status, const std::string& why) {
  if (why.size() > 2 && (why[0] == '4' || why[0] == '5') && why[1] == '.') return why;
  return status + " " + why;
}

}  // namespace

Delivery::Delivery(uv_loop_t* loop, Spool& spool, std::shared_ptr<const Config> config,
                   std::shared_ptr<const TlsContext> verifying, WorkerMetrics& metrics)
    : loop_(loop),
      spool_(spool),
      config_(std::move(config)),
      metrics_(metrics),
      router_(config_->routes),
      guard_(config_->listeners, NextHopGuard::localInterfaces()),
      resolver_(loop, config_->dns),
      scheduler_(config_->delivery.retry_min, config_->delivery.retry_max),
      tls_verifying_(std::move(verifying)) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  uv_idle_init(loop_, &recover_idle_);
  recover_idle_.data = this;
}

Delivery::~Delivery() = default;

std::string Delivery::init() {
  if (std::string err = resolver_.init(); !err.empty()) return "dns: " + err;
  std::string err;
  tls_opportunistic_ = TlsContext::createUnverifiedClient(err);
  if (!tls_opportunistic_) return "outbound tls: " + err;
  return "";
}

void Delivery::reload(std::shared_ptr<const Config> config,
                      std::shared_ptr<const TlsContext> verifying) {
  if (stopping_) return;
  config_ = std::move(config);
  // Connections that hold the old context keep it until they end.
  tls_verifying_ = std::move(verifying);
  router_ = Router(config_->routes);
  scheduler_.setBackoff(config_->delivery.retry_min, config_->delivery.retry_max);
  // Every waiting job is routed afresh: a new exact or suffix route can take a domain
  // away from a destination that is otherwise kept.
  std::vector<ParkedJob> waiting;
  for (auto it = destinations_.begin(); it != destinations_.end();) {
    Destination& d = *it->second;
    for (auto& job : d.ready) waiting.push_back(std::move(job));
    d.ready.clear();
    if (const RouteConfig* r = routeAfterReload(d)) {
      d.route = *r;
      ++it;
    } else {
      retire(std::move(it->second));
      it = destinations_.erase(it);
    }
  }
  for (auto& job : waiting) dispatch(std::move(job));  // which keeps each queue oldest first
  armTimer();
}

const RouteConfig* Delivery::routeAfterReload(const Destination& d) const {
  if (d.route.isMx()) {
    const RouteConfig* r = router_.route(d.name);
    return r->isMx() ? r : nullptr;
  }
  for (const RouteConfig& r : config_->routes) {
    if (r.domain == d.route.domain) return r.next_hop == d.route.next_hop ? &r : nullptr;
  }
  return nullptr;
}

void Delivery::retire(std::unique_ptr<Destination> d) {
  if (d->clients.empty()) return;  // an answer still being resolved for it is dropped
  logEvent(spdlog::level::info, "next_hop_retired",
           {{"next_hop", d->key}, {"connections", uint64_t{d->clients.size()}}});
  d->retired = true;
  // Idle connections end now; busy ones when their message is done (clientReady).
  for (SmtpClient* c : std::vector<SmtpClient*>(d->clients.begin(), d->clients.end())) {
    if (c->idle()) c->shutdown();
  }
  retired_.push_back(std::move(d));
}

Destination& Delivery::destinationFor(const std::string& recipient) {
  const std::string domain = recipientDomain(recipient);
  const RouteConfig* route = router_.route(domain);
  std::string key = route->isMx() ? "mx:" + domain : "route:" + route->domain;
  auto& slot = destinations_[key];
  if (!slot) {
    slot = std::make_unique<Destination>();
    slot->key = std::move(key);
    slot->serial = next_serial_++;
    slot->route = *route;
    slot->port = config_->delivery.smtp_port;
    if (route->isMx()) {
      slot->name = domain;
    } else if (!splitHostPort(route->next_hop, slot->name, slot->port)) {
      slot->name = route->next_hop;  // a host name without a port
    }
  }
  return *slot;
}

Destination& Delivery::destinationFor(const DeliveryJob& job) {
  std::vector<uint32_t> pending = job.pendingRecipients();
  return destinationFor(job.message.envelope.recipients[pending.empty() ? 0 : pending[0]]);
}

void Delivery::enqueue(SpooledMessage message) {
  const Envelope& env = message.envelope;
  if (message.done.size() != env.recipients.size()) {
    message.done.assign(env.recipients.size(), false);
  }
  // Recipients grouped by next hop, in order of first appearance.
  std::vector<std::pair<Destination*, std::vector<bool>>> groups;
  for (uint32_t i = 0; i < env.recipients.size(); ++i) {
    if (message.done[i]) continue;
    Destination* d = &destinationFor(env.recipients[i]);
    auto it = std::find_if(groups.begin(), groups.end(), [d](auto& g) { return g.first == d; });
    if (it == groups.end()) {
      groups.emplace_back(d, std::vector<bool>(env.recipients.size(), false));
      it = groups.end() - 1;
    }
    it->second[i] = true;
  }
  if (groups.empty()) {
    spool_.release(message.ref);
    return;
  }
  for (size_t g = 1; g < groups.size(); ++g) {
    // A part per further next hop; each part holds the message in the spool.
    auto job = std::make_unique<DeliveryJob>();
    job->message = message;
    for (size_t i = 0; i < env.recipients.size(); ++i) {
      job->message.done[i] = message.done[i] || !groups[g].second[i];
    }
    spool_.retain(message.ref);
    dispatch(std::move(job));
  }
  auto job = std::make_unique<DeliveryJob>();
  for (size_t i = 0; i < env.recipients.size(); ++i) {
    message.done[i] = message.done[i] || !groups[0].second[i];
  }
  job->message = std::move(message);
  dispatch(std::move(job));
}

void Delivery::enqueue(SpooledRef message) {
  SpooledMessage whole;
  if (!spool_.readEnvelope(message.id, message.ref, whole.envelope)) {
    logEvent(spdlog::level::err, "spool_unreadable",
             {{"id", queueIdString(message.id)}, {"segment", uint64_t{message.ref.segment}}});
    return;  // the segment is kept: it holds a message not finished
  }
  whole.ref = message.ref;
  whole.done = message.done.toVector(whole.envelope.recipients.size());
  enqueue(std::move(whole));
}

void Delivery::recover(std::vector<SpooledRef> messages) {
  if (stopping_ || messages.empty()) return;
  if (recovering_next_ < recovering_.size()) {
    recovering_.insert(recovering_.end(), std::make_move_iterator(messages.begin()),
                       std::make_move_iterator(messages.end()));
    return;
  }
  recovering_ = std::move(messages);
  recovering_next_ = 0;
  uv_idle_start(&recover_idle_, onRecoverIdle);
}

void Delivery::onRecoverIdle(uv_idle_t* h) {
  // A few milliseconds of work per iteration: reads of envelopes the replay just had in
  // the page cache.
  constexpr size_t kSlice = 2048;
  auto* self = static_cast<Delivery*>(h->data);
  const size_t end = std::min(self->recovering_.size(), self->recovering_next_ + kSlice);
  for (; self->recovering_next_ < end && !self->stopping_; ++self->recovering_next_) {
    self->enqueue(std::move(self->recovering_[self->recovering_next_]));
  }
  if (self->stopping_ || self->recovering_next_ == self->recovering_.size()) {
    uv_idle_stop(h);
    std::vector<SpooledRef>().swap(self->recovering_);  // its memory back
    self->recovering_next_ = 0;
  }
}

void Delivery::dispatch(std::unique_ptr<DeliveryJob> job) {
  Destination& d = destinationFor(*job);
  // Oldest first: a job back from a retry goes before what arrived while it waited. The
  // queue is in order, so its place is found by halving (a walk from the back cost a
  // flush of 2,000 old jobs into a queue of 500,000 a billion steps), and a new arrival,
  // the usual case, is checked first.
  const int64_t received = job->message.envelope.received_ms;
  auto pos = d.ready.end();
  if (!d.ready.empty() && d.ready.back().message.received_ms > received) {
    pos = std::upper_bound(d.ready.begin(), d.ready.end(), received,
                           [](int64_t t, const ParkedJob& p) { return t < p.message.received_ms; });
  }
  const bool whole = static_cast<size_t>(pos - d.ready.begin()) < kWholeJobsPerHop;
  d.ready.insert(pos, park(std::move(job), whole));
  pump(d);
}

void Delivery::dispatch(ParkedJob job) {
  if (auto whole = unpark(std::move(job))) dispatch(std::move(whole));
}

ParkedJob Delivery::park(std::unique_ptr<DeliveryJob> job, bool whole) {
  ParkedJob p;
  const SpooledMessage& m = job->message;
  p.message.id = m.envelope.id;
  p.message.received_ms = m.envelope.received_ms;
  p.message.ref = m.ref;
  p.message.recipients = static_cast<uint32_t>(m.envelope.recipients.size());
  p.message.done = RecipientFlags(m.done);
  p.attempts = job->attempts;
  p.delay_warned = job->delay_warned;
  if (!job->last_reply.empty()) {
    // The jobs of one failed next hop share its reply instead of a copy each.
    if (!last_reply_ || *last_reply_ != job->last_reply) {
      last_reply_ = std::make_shared<const std::string>(job->last_reply);
    }
    p.last_reply = last_reply_;
  }
  if (whole) p.whole = std::move(job);
  return p;
}

std::unique_ptr<DeliveryJob> Delivery::unpark(ParkedJob p) {
  if (p.whole) {
    p.whole->attempts = p.attempts;
    p.whole->delay_warned = p.delay_warned;
    return std::move(p.whole);
  }
  auto job = std::make_unique<DeliveryJob>();
  if (!spool_.readEnvelope(p.message.id, p.message.ref, job->message.envelope)) {
    logEvent(spdlog::level::err, "spool_unreadable",
             {{"id", queueIdString(p.message.id)}, {"segment", uint64_t{p.message.ref.segment}}});
    return nullptr;  // its segment is kept (still live): the next start's recovery decides
  }
  job->message.ref = p.message.ref;
  job->message.done = p.message.done.toVector(p.message.recipients);
  job->attempts = p.attempts;
  job->delay_warned = p.delay_warned;
  if (p.last_reply) job->last_reply = *p.last_reply;
  return job;
}

bool Delivery::peek(const ParkedJob& p, SpooledMessage& out) const {
  if (p.whole) {
    out = p.whole->message;
    return true;
  }
  if (!spool_.readEnvelope(p.message.id, p.message.ref, out.envelope)) return false;
  out.ref = p.message.ref;
  out.done = p.message.done.toVector(p.message.recipients);
  return true;
}

void Delivery::pump(Destination& d) {
  if (stopping_ || d.ready.empty()) return;
  const uint64_t now = uv_now(loop_);
  if (now < d.down_until) return armTimer();
  if (d.dns == Destination::Dns::kResolving) return;
  if (d.dns == Destination::Dns::kNone || now >= d.resolved_until) return resolve(d);
  if (d.resolution.status == HopResolution::Status::kPermanent) {
    // The domain cannot receive mail (no such domain, null MX, no address): bounce.
    while (!d.ready.empty()) {
      auto job = unpark(std::move(d.ready.front()));
      d.ready.pop_front();
      if (!job) continue;
      std::vector<RecipientResult> results;
      for (uint32_t i : job->pendingRecipients()) results.push_back({i, 550, d.resolution.error});
      finishJob(std::move(job), results, "");
    }
    return;
  }
  // A connection that has carried its messages_per_connection is not reused; its own
  // clientReady() ends it, which makes room for a new one.
  auto reusable = [&d](const SmtpClient* c) {
    return c->idle() && c->messagesSent() < d.route.messages_per_connection;
  };
  std::vector<SmtpClient*> clients(d.clients.begin(), d.clients.end());
  size_t spare = d.connecting;  // connections that could take the next message
  bool held = false;            // max_rate holds the next message back
  for (SmtpClient* c : clients) {
    if (!reusable(c)) continue;
    if (held || d.ready.empty() || !startJob(d, c)) {
      held = !d.ready.empty();
      ++spare;
    }
  }
  // With max_rate, a new connection only when the next message may start and no
  // connection is free for it; else max_connections idle ones would wait for their turn,
  // time out and be opened again.
  const bool rated = d.route.max_rate > 0;
  // This worker's share of the hop's connections (see destination.h).
  const size_t max_connections = std::max<size_t>(1, d.route.max_connections / config_->workers);
  while (!d.ready.empty() && d.clients.size() < max_connections &&
         (rated ? spare == 0 && uv_now(loop_) >= d.next_send : d.ready.size() > d.connecting)) {
    openClient(d);
    ++spare;
  }
  if (rated && !d.ready.empty() && uv_now(loop_) < d.next_send) armTimer();
}

void Delivery::resolve(Destination& d) {
  d.dns = Destination::Dns::kResolving;
  auto done = [this, key = d.key, serial = d.serial](HopResolution r) {
    if (stopping_) return;
    auto it = destinations_.find(key);
    if (it == destinations_.end() || it->second->serial != serial) return;
    Destination& d = *it->second;
    const uint64_t now = uv_now(loop_);
    d.dns = Destination::Dns::kDone;
    // A failed lookup is asked again at the next attempt (after the hop's backoff). An
    // answer lives for its TTL, but always serves the attempt it was asked for: with
    // TTL 0, or a permanent failure (no TTL), pump() would otherwise ask again at once,
    // forever, and never deliver or bounce.
    d.resolved_until = r.status == HopResolution::Status::kTemporary
                           ? now
                           : addSaturating(now, std::max(r.ttl_ms, kMinAnswerMs));
    d.next_address = 0;
    guard_.filter(r, d.name, d.route.isMx(), d.route.allow_internal_mx);
    d.resolution = std::move(r);
    if (d.resolution.status == HopResolution::Status::kTemporary) {
      return destinationFailed(d, d.resolution.error);
    }
    pump(d);
  };
  if (d.route.isMx()) {
    resolver_.resolveMx(d.name, d.port, std::move(done));
  } else {
    resolver_.resolveHost(d.name, d.port, std::move(done));
  }
}

void Delivery::openClient(Destination& d) {
  const auto& addrs = d.resolution.addresses;
  ClientOptions o;
  o.address_index = d.next_address % addrs.size();
  o.round = d.round;
  o.target = addrs[o.address_index];
  o.tls = d.route.tls;
  if (o.tls == TlsPolicy::kRequired) {
    o.tls_context = tls_verifying_;
  } else if (o.tls == TlsPolicy::kOpportunistic && uv_now(loop_) >= d.plain_until) {
    o.tls_context = tls_opportunistic_;
  }
  const DeliveryConfig& dc = config_->delivery;
  o.hostname = config_->hostname;
  o.connect_timeout = dc.connect_timeout;
  o.greeting_timeout = dc.greeting_timeout;
  o.command_timeout = dc.command_timeout;
  o.data_timeout = dc.data_timeout;
  o.idle_timeout = dc.idle_timeout;
  auto* c = new SmtpClient(*this, d, std::move(o));
  d.clients.insert(c);
  ++d.connecting;
  ++clients_;
  c->start();
}

bool Delivery::startJob(Destination& d, SmtpClient* c) {
  if (d.ready.empty()) return false;
  if (d.route.max_rate > 0) {
    const uint64_t now = uv_now(loop_);
    if (now < d.next_send) {
      armTimer();
      return false;
    }
    // This worker's share of the rate, as an interval in fractions of a millisecond (a
    // rate above 1000/s must not round to "unlimited"); up to 1 ms of unused credit
    // carries over, so the rate holds across the loop clock's millisecond steps.
    const double interval = 1000.0 * config_->workers / d.route.max_rate;
    d.next_send = std::max(d.next_send, static_cast<double>(now) - 1.0) + interval;
  }
  std::unique_ptr<DeliveryJob> job;
  while (!job && !d.ready.empty()) {
    job = unpark(std::move(d.ready.front()));
    d.ready.pop_front();
  }
  if (!job) return false;
  job->started_ms = uv_now(loop_);
  c->deliver(std::move(job));
  return true;
}

void Delivery::clientReady(SmtpClient* client, bool first_time) {
  Destination& d = client->destination();
  if (first_time) {
    --d.connecting;
    d.failures = 0;
  }
  if (stopping_ || d.retired || client->messagesSent() >= d.route.messages_per_connection) {
    client->shutdown();
    return;
  }
  startJob(d, client);
}

void Delivery::jobFinished(SmtpClient* client, std::unique_ptr<DeliveryJob> job,
                           std::vector<RecipientResult> results) {
  Destination& d = client->destination();
  if (!client->offersDsn()) notifySuccess(*job, results, client->host());
  // Labelled by next hop for smarthost routes, by route for MX ones ("mx:*"): one label
  // per recipient domain would grow without bound.
  const std::string label = d.route.isMx() ? "mx:" + d.route.domain : d.key;
  metrics_.delivery[label].observe(static_cast<double>(uv_now(loop_) - job->started_ms) / 1000);
  finishJob(std::move(job), results, client->host());
  pump(d);
}

void Delivery::finishJob(std::unique_ptr<DeliveryJob> job,
                         const std::vector<RecipientResult>& results, const std::string& relay,
                         uint64_t retry_at) {
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
                {"attempts", uint64_t{job->attempts + 1}}});
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
              {"delay", delay}});
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
    bounce(*job, std::move(failed), !retry);  // releases the message when it finishes it
  } else if (!retry) {
    spool_.release(job->message.ref);
  }
  if (retry) {
    warnDelayed(*job);
    deferJob(std::move(job), retry_at);
  }
}

void Delivery::bounce(DeliveryJob& job, std::vector<FailedRecipient> failed, bool job_finished) {
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

std::optional<std::vector<std::string>> Delivery::composeNotice(const DeliveryJob& job,
                                                                std::vector<FailedRecipient> rcpts,
                                                                DsnAction action) {
  const Envelope& env = job.message.envelope;
  std::string original;
  if (!spool_.readBody(job.message.ref, original)) {
    logEvent(spdlog::level::err, "bounce_failed",
             {{"id", queueIdString(env.id)}, {"error", "cannot read body"}});
    return std::nullopt;
  }
  BounceInput in;
  in.reporting_mta = config_->hostname;
  in.original = &env;
  in.failed = std::move(rcpts);
  in.original_message = original;
  in.size_limit = config_->delivery.bounce_size_limit;
  in.now_ms = unixMillis();
  in.action = action;
  in.retry_until_ms =
      env.received_ms + static_cast<int64_t>(config_->delivery.queue_lifetime * 1000);
  return composeNotices(in);
}

void Delivery::spoolNotice(const Envelope& original, std::vector<std::string> notices,
                           const char* kind, std::string trailer, std::function<void(bool)> after) {
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
        if (ok && !stopping_) enqueue(SpooledMessage{dsn, ref, {}});
      },
      std::move(trailer));
}

void Delivery::notifySuccess(const DeliveryJob& job, const std::vector<RecipientResult>& results,
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

void Delivery::warnDelayed(DeliveryJob& job) {
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

void Delivery::deferJob(std::unique_ptr<DeliveryJob> job, uint64_t retry_at) {
  if (retry_at != 0) {
    ++job->attempts;
    scheduler_.deferUntil(park(std::move(job), false), retry_at);
    armTimer();
    return;
  }
  const StoredRef old_ref = job->message.ref;
  std::string body;
  if (stopping_ || old_ref.segment == spool_.activeSegment() || !spool_.readBody(old_ref, body)) {
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
        scheduler_.defer(park(std::move(job), false), uv_now(loop_));
        armTimer();
      },
      std::move(trailer));
}

void Delivery::clientClosed(SmtpClient* client) {
  Destination& d = client->destination();
  d.clients.erase(client);
  --clients_;
  if (!client->everReady()) {
    --d.connecting;
    // Connections opened in parallel fail together: the first failure of a round backs the
    // hop off (and counts it), the others of that round only close.
    if (!stopping_ && client->round() == d.round) {
      if (client->tlsFailed() && d.route.tls == TlsPolicy::kOpportunistic) {
        // Opportunistic TLS must not keep mail from a hop that cannot do it: go plain.
        d.plain_until = uv_now(loop_) + kPlainAfterTlsFailureMs;
        logEvent(spdlog::level::warn, "tls_fallback",
                 {{"next_hop", d.key}, {"relay", client->host()}, {"error", client->error()}});
      } else {
        // This address is unusable for now: the next connection tries the next one, and a
        // round in which none worked backs the whole next hop off.
        d.next_address = std::max(d.next_address, client->addressIndex() + 1);
        if (d.next_address >= d.resolution.addresses.size()) {
          d.next_address = 0;
          destinationFailed(d, client->error());
        }
      }
    }
  }
  delete client;
  if (d.retired) {
    if (d.clients.empty()) {
      std::erase_if(retired_, [&d](const auto& r) { return r.get() == &d; });
    }
    return;
  }
  pump(d);
}

void Delivery::destinationFailed(Destination& d, const std::string& why) {
  ++d.failures;
  ++d.round;
  const uint64_t backoff = scheduler_.backoffMs(d.failures);
  d.down_until = uv_now(loop_) + backoff;
  const std::string reason = withStatus("4.4.1", why);
  logEvent(spdlog::level::warn, "next_hop_down",
           {{"next_hop", d.key}, {"error", reason}, {"retry_in_ms", backoff}});
  auto parked = std::move(d.ready);
  d.ready.clear();
  for (auto& p : parked) {
    auto job = unpark(std::move(p));
    if (!job) continue;
    std::vector<RecipientResult> results;
    for (uint32_t i : job->pendingRecipients()) results.push_back({i, 451, reason});
    finishJob(std::move(job), results, "", d.down_until);
  }
  armTimer();
}

void Delivery::armTimer() {
  if (stopping_) return;
  // Only ever armed for a future event (a deferred job's due time, a backed-off or
  // rate-limited next hop): a 0 ms timer re-armed while connections are being set up
  // would starve the loop of I/O.
  const uint64_t now = uv_now(loop_);
  int64_t next = scheduler_.nextDue(now);
  for (const auto& [key, d] : destinations_) {
    if (d->ready.empty()) continue;
    uint64_t wake = std::max(d->down_until, static_cast<uint64_t>(std::ceil(d->next_send)));
    if (wake > now && (next < 0 || static_cast<int64_t>(wake - now) < next)) {
      next = static_cast<int64_t>(wake - now);
    }
  }
  if (next >= 0)
    uv_timer_start(&timer_, onTimer, static_cast<uint64_t>(std::max<int64_t>(next, 1)), 0);
}

void Delivery::onTimer(uv_timer_t* t) {
  auto* self = static_cast<Delivery*>(t->data);
  self->scheduler_.promote(uv_now(self->loop_));
  while (auto job = self->scheduler_.takeReady()) self->dispatch(std::move(*job));
  const uint64_t now = uv_now(self->loop_);
  std::vector<Destination*> waiting;
  for (auto it = self->destinations_.begin(); it != self->destinations_.end();) {
    Destination& d = *it->second;
    if (d.idle() && now >= d.down_until) {
      it = self->destinations_.erase(it);  // nothing queued, nothing remembered to honour
      continue;
    }
    if (!d.ready.empty()) waiting.push_back(&d);
    ++it;
  }
  for (Destination* d : waiting) self->pump(*d);
  self->armTimer();
}

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
    SpooledMessage m;
    if (!peek(p, m)) return false;
    add(m, p.attempts, p.last_reply ? *p.last_reply : "", state, hop);
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

void Delivery::queueCounts(size_t& ready, size_t& deferred, size_t& active,
                           int64_t& oldest_ms) const {
  ready = active = 0;
  deferred = scheduler_.deferredCount();
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
  scheduler_.forEachDeferred([&](const ParkedJob& job, uint64_t) { older(job.message.received_ms); });
}

std::vector<std::unique_ptr<DeliveryJob>> Delivery::takeJobs(uint64_t id) {
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
  std::vector<std::unique_ptr<DeliveryJob>> jobs;
  for (auto& p : parked) {
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
  auto jobs = takeJobs(id);
  for (auto& job : jobs) {
    for (uint32_t i : job->pendingRecipients()) {
      logEvent(spdlog::level::warn, "deleted",
               {{"id", queueIdString(id)}, {"rcpt", job->message.envelope.recipients[i]}});
      spool_.markDone(id, i);
    }
    spool_.release(job->message.ref);
  }
  return jobs.size();
}

size_t Delivery::bounceNow(uint64_t id) {
  auto jobs = takeJobs(id);
  for (auto& job : jobs) {
    std::vector<RecipientResult> results;
    for (uint32_t i : job->pendingRecipients()) {
      results.push_back({i, 554, "5.0.0 returned to the sender by the relay's administrator"});
    }
    finishJob(std::move(job), results, "");
  }
  return jobs.size();
}

void Delivery::stop() {
  stopping_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&recover_idle_), nullptr);
  resolver_.close();
  forEachDestination([](const Destination& d) {
    for (auto* c : std::set<SmtpClient*>(d.clients)) {
      if (c->job() == nullptr) c->shutdown();  // clientReady() ends the others
    }
  });
}

void Delivery::abort() {
  forEachDestination([](const Destination& d) {
    for (auto* c : std::set<SmtpClient*>(d.clients)) c->shutdown();
  });
}

}  // namespace postern
