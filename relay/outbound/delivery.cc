// Delivery's dispatch and connection pool, in the spirit of Postfix's smtp_connect.c:
// messages in (enqueue, recovery), each job routed to its next hop's Destination and
// waiting there oldest first (parked), DNS for the hop, connections opened within its
// limits and handed jobs, a hop backed off when none of its addresses works, the timer,
// reload and stop. What a finished job means is delivery_outcome.cc's business.
//
// Failure: a waiting job whose envelope cannot be read back is logged and dropped from
// memory only; its message stays in the spool for the next start's recovery.
#include "relay/outbound/delivery.h"

#include <algorithm>
#include <cmath>

#include "core/log.h"

namespace postern {
namespace {

// A TLSA record as its presentation form ("3 1 1 ABCD..."), for the TLS reports.
std::string tlsaText(const TlsaRecord& r) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = std::to_string(r.usage) + " " + std::to_string(r.selector) + " " +
                    std::to_string(r.mtype) + " ";
  for (unsigned char c : r.data) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

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
      sts_(loop, resolver_, config_->spool_dir + "/mta-sts", config_->delivery.ca_file),
      reports_(
          loop, config_->tls_rpt.directory,
          config_->tls_rpt.organization.empty() ? config_->hostname : config_->tls_rpt.organization,
          config_->tls_rpt.contact.empty() ? "postmaster@" + config_->hostname
                                           : config_->tls_rpt.contact),
      scheduler_(config_->delivery.retry_min, config_->delivery.retry_max),
      notices_(spool, config_, [this](SpooledMessage m) { enqueue(std::move(m)); }),
      tls_verifying_(std::move(verifying)) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  uv_idle_init(loop_, &recover_idle_);
  recover_idle_.data = this;
}

Delivery::~Delivery() = default;

Status Delivery::init() {
  if (Status dns = resolver_.init(); !dns) return fail("dns: " + dns.error());
  Result<std::unique_ptr<TlsContext>> tls = TlsContext::createUnverifiedClient();
  if (!tls) return fail("outbound tls: " + tls.error());
  tls_opportunistic_ = std::move(*tls);
  Result<std::unique_ptr<TlsContext>> dane = TlsContext::createDaneClient();
  if (!dane) return fail("outbound tls: " + dane.error());
  tls_dane_ = std::move(*dane);
  return {};
}

void Delivery::reload(std::shared_ptr<const Config> config,
                      std::shared_ptr<const TlsContext> verifying) {
  if (stopping_) return;
  config_ = std::move(config);
  notices_.reload(config_);
  sts_.setCaFile(config_->delivery.ca_file);
  // Connections that hold the old context keep it until they end.
  tls_verifying_ = std::move(verifying);
  tls_sessions_.clear();
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
    } else if (std::optional<HostPort> hp = splitHostPort(route->next_hop)) {
      slot->name = std::move(hp->host);
      slot->port = hp->port;
    } else {
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
  const bool held = message.held;
  if (held) held_ids_.insert(env.id);
  // A quarantined arrival waits, unrouted further, until released.
  auto send = [&](std::unique_ptr<DeliveryJob> job) {
    if (held) return parkHeld(park(std::move(job), false));
    dispatch(std::move(job));
  };
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
    send(std::move(job));
  }
  auto job = std::make_unique<DeliveryJob>();
  for (size_t i = 0; i < env.recipients.size(); ++i) {
    message.done[i] = message.done[i] || !groups[0].second[i];
  }
  job->message = std::move(message);
  send(std::move(job));
}

void Delivery::enqueue(SpooledRef message) {
  // A recovered message is a parked job that has not been routed yet.
  ParkedJob parked;
  parked.message = std::move(message);
  if (spool_.heldAtStart(parked.message.id) || isHeld(parked.message.id)) {
    held_ids_.insert(parked.message.id);
    return parkHeld(std::move(parked));  // routed when released
  }
  if (auto job = unpark(std::move(parked))) enqueue(std::move(job->message));
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
  Result<Envelope> envelope = spool_.readEnvelope(p.message.id, p.message.ref);
  if (!envelope) {
    logEvent(spdlog::level::err, "spool_unreadable",
             {{"id", queueIdString(p.message.id)},
              {"segment", uint64_t{p.message.ref.segment}},
              {"error", envelope.error()}});
    return nullptr;  // its segment is kept (still live): the next start's recovery decides
  }
  job->message.envelope = std::move(*envelope);
  job->message.ref = p.message.ref;
  job->message.done = p.message.done.toVector(p.message.recipients);
  job->attempts = p.attempts;
  job->delay_warned = p.delay_warned;
  if (p.last_reply) job->last_reply = *p.last_reply;
  return job;
}

Result<SpooledMessage> Delivery::peek(const ParkedJob& p) const {
  if (p.whole) return p.whole->message;
  SpooledMessage out;
  Result<Envelope> envelope = spool_.readEnvelope(p.message.id, p.message.ref);
  if (!envelope) {
    return fail("the envelope of " + queueIdString(p.message.id) +
                " cannot be read back: " + envelope.error());
  }
  out.envelope = std::move(*envelope);
  out.ref = p.message.ref;
  out.done = p.message.done.toVector(p.message.recipients);
  return out;
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
    ++(r.status == HopResolution::Status::kOk          ? metrics_.dns_ok
       : r.status == HopResolution::Status::kTemporary ? metrics_.dns_temporary
                                                       : metrics_.dns_permanent);
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
    lookUpTlsa(d);
  };
  if (d.route.isMx()) {
    resolver_.resolveMx(d.name, d.port, std::move(done));
  } else {
    resolver_.resolveHost(d.name, d.port, std::move(done));
  }
}

void Delivery::lookUpTlsa(Destination& d) {
  d.tlsa.clear();
  std::set<std::string> hosts;
  if (d.route.tls == TlsPolicy::kDane) {
    for (const HopAddress& a : d.resolution.addresses) {
      if (a.secure) hosts.insert(a.host);
    }
  }
  if (hosts.empty()) return lookUpSts(d);
  d.dns = Destination::Dns::kResolving;  // until every TLSA answer and the policy are in
  auto pending = std::make_shared<size_t>(hosts.size());
  for (const std::string& host : hosts) {
    resolver_.resolveTlsa(host, d.port,
                          [this, key = d.key, serial = d.serial, host, pending](TlsaLookup t) {
                            if (stopping_) return;
                            auto it = destinations_.find(key);
                            if (it == destinations_.end() || it->second->serial != serial) return;
                            Destination& d = *it->second;
                            d.tlsa[host] = std::move(t);
                            if (--*pending > 0) return;
                            lookUpSts(d);
                          });
  }
}

void Delivery::lookUpSts(Destination& d) {
  d.sts.reset();
  d.sts_failure.clear();
  const bool wanted = d.route.isMx() && d.resolution.status == HopResolution::Status::kOk &&
                      (d.route.tls == TlsPolicy::kMtaSts || d.route.tls == TlsPolicy::kDane);
  if (!wanted) {
    d.dns = Destination::Dns::kDone;
    return pump(d);
  }
  d.dns = Destination::Dns::kResolving;
  sts_.lookup(d.name, d.route.allow_internal_mx,
              [this, key = d.key, serial = d.serial](StsAnswer a) {
                if (stopping_) return;
                auto it = destinations_.find(key);
                if (it == destinations_.end() || it->second->serial != serial) return;
                Destination& d = *it->second;
                d.sts = std::move(a.policy);
                d.sts_failure = std::move(a.failure);
                logEvent(spdlog::level::info, "mta_sts",
                         {{"domain", d.name},
                          {"mode", d.sts ? mta_sts::modeName(d.sts->mode) : "none"},
                          {"policy", d.sts ? "yes" : "no"},
                          {"how", a.note}});
                d.dns = Destination::Dns::kDone;
                pump(d);
              });
}

void Delivery::reportTls(const SmtpClient& client) {
  const ClientOptions& o = client.options();
  const char* policy = o.tls == TlsPolicy::kDane       ? "dane"
                       : o.sts                         ? "mta-sts"
                       : o.sts_testing                 ? "mta-sts-testing"
                       : o.tls == TlsPolicy::kRequired ? "required"
                       : o.tls == TlsPolicy::kNone     ? "none"
                                                       : "opportunistic";
  // A checked policy whose check failed counts as failed even when the connection went
  // on (testing mode).
  const bool checked = o.tls == TlsPolicy::kDane || o.tls == TlsPolicy::kRequired || o.sts_testing;
  const bool failed = !client.everReady() || (checked && !client.tlsRptResult().empty());
  ++metrics_.tls_policy[{policy, failed ? "failed" : "ok"}];
  if (o.rpt_type.empty()) return;
  std::optional<IpAddress> ip =
      IpAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&o.target.addr));
  reports_.record(TlsReportEntry{o.rpt_domain, o.rpt_type, o.rpt_policy, o.target.host,
                                 ip ? ip->toString() : "",
                                 o.rpt_failure.empty() ? client.tlsRptResult() : o.rpt_failure});
}

void Delivery::openClient(Destination& d) {
  const auto& addrs = d.resolution.addresses;
  ClientOptions o;
  o.address_index = d.next_address % addrs.size();
  o.round = d.round;
  o.target = addrs[o.address_index];
  o.tls = d.route.tls;
  if (o.tls == TlsPolicy::kDane) {
    // RFC 7672 §2.2: usable TLSA records make TLS mandatory and authenticated by them;
    // records none of which is usable make it mandatory only; none (or an insecure
    // host) leaves it opportunistic.
    o.tls = TlsPolicy::kOpportunistic;
    auto t = d.tlsa.find(o.target.host);
    if (t != d.tlsa.end() && t->second.status == TlsaLookup::Status::kRecords) {
      o.tls = TlsPolicy::kDane;
      o.tls_context = tls_dane_;
      o.tlsa = t->second.records;
      o.rpt_type = "tlsa";
      for (const TlsaRecord& r : o.tlsa) o.rpt_policy.push_back(tlsaText(r));
    } else if (t != d.tlsa.end() && t->second.status == TlsaLookup::Status::kFailed) {
      o.tls = TlsPolicy::kDane;  // not tried without knowing its records (§2.2)
      o.refuse = "4.7.5 " + t->second.error;
    } else {
      o.tls = TlsPolicy::kMtaSts;  // DANE does not apply: MTA-STS may (RFC 8461 §2)
    }
  }
  if (o.tls == TlsPolicy::kMtaSts) {
    // RFC 8461 §4.2, §5: in enforce mode only the policy's MX hosts, over TLS verified
    // for their names; testing and none (or no policy) stay opportunistic.
    o.tls = TlsPolicy::kOpportunistic;
    if (d.sts && d.sts->mode != mta_sts::Policy::Mode::kNone) {
      o.rpt_type = "sts";
      o.rpt_policy = {"version: STSv1", std::string("mode: ") + mta_sts::modeName(d.sts->mode)};
      for (const std::string& mx : d.sts->mx) o.rpt_policy.push_back("mx: " + mx);
      o.rpt_policy.push_back("max_age: " + std::to_string(d.sts->max_age));
    }
    if (!d.sts && !d.sts_failure.empty()) {
      // RFC 8460 §4.3.2: sessions to a domain whose published policy could not be had
      // are reported under "no-policy-found" with that failure.
      o.rpt_type = "no-policy-found";
      o.rpt_failure = d.sts_failure;
    }
    if (d.sts && d.sts->mode == mta_sts::Policy::Mode::kEnforce) {
      o.tls = TlsPolicy::kRequired;
      o.sts = true;
      if (!mta_sts::mxMatches(*d.sts, o.target.host)) {
        o.refuse = "4.7.5 MX host " + o.target.host + " is not in the MTA-STS policy of " + d.name;
      }
    } else if (d.sts && d.sts->mode == mta_sts::Policy::Mode::kTesting && tls_verifying_ &&
               uv_now(loop_) >= d.plain_until) {
      o.sts_testing = true;  // opportunistic, with the check the report needs
      o.tls_context = tls_verifying_;
    }
  }
  o.rpt_domain = d.name;
  if (o.tls == TlsPolicy::kRequired) {
    o.tls_context = tls_verifying_;
  } else if (o.tls == TlsPolicy::kOpportunistic && uv_now(loop_) >= d.plain_until &&
             !o.sts_testing) {
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
    ++metrics_.outbound_ready;
    reportTls(*client);
  }
  if (stopping_ || d.retired || client->messagesSent() >= d.route.messages_per_connection) {
    client->shutdown();
    return;
  }
  startJob(d, client);
}

void Delivery::clientClosed(SmtpClient* client) {
  Destination& d = client->destination();
  d.clients.erase(client);
  --clients_;
  if (client->tlsFailed()) ++metrics_.outbound_tls_failures;
  if (!client->everReady() && (!client->tlsRptResult().empty() || client->tlsFailed())) {
    reportTls(*client);
  }
  if (!client->everReady()) {
    --d.connecting;
    ++metrics_.outbound_failed;
    // Connections opened in parallel fail together: the first failure of a round backs the
    // hop off (and counts it), the others of that round only close.
    if (!stopping_ && client->round() == d.round) {
      if (client->tlsFailed() && client->tlsPolicy() == TlsPolicy::kOpportunistic) {
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

void Delivery::stop() {
  stopping_ = true;
  notices_.stop();
  sts_.stop();
  reports_.stop();
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
