// Delivery: the outbound side of one worker. Takes spooled messages, routes each
// recipient (Router) to a next hop (Destination: a smarthost, or a domain's MX hosts
// found with c-ares), keeps a pool of SmtpClient connections per next hop, and turns
// per-recipient results into spool records:
//
//   2xx                     -> Done
//   4xx, no connection      -> retry after backoff (Scheduler)
//   5xx, permanent DNS      -> bounce (RFC 3464 notice to the sender), then Done
//   too old (queue_lifetime)-> bounce with 4.4.7, then Done
//
// Recipients of one message that share a next hop go in one transaction; a message with
// several next hops is split into one job per hop (the spool holds it until every part
// is done). A bounce's Done records are written in the same write as the notice, after
// it, so a crash duplicates the notice at worst and never loses it.
//
// Rewrite-forward: a message deferred again while it sits in an older segment than the
// active one is appended anew (pending recipients only, new queue id) so the old segment
// can be deleted; the old id's Done records go in the same write, after it.
//
// A next hop none of whose addresses could be used (connect, greeting or required TLS
// failed) is backed off as a whole: what is queued for it is deferred, and new messages
// wait until the backoff ends instead of hammering it.
//
// reload() takes a new configuration (SIGHUP): routes, per-hop limits, retry and
// lifetime settings and outbound TLS apply to every attempt that starts afterwards; a
// message already on a connection finishes where it is (see Destination).
//
// One concern per file, as Postfix splits its SMTP client (smtp_connect.c, smtp_proto.c,
// smtp_trouble.c):
//   delivery.cc                 dispatch and the connection pool: enqueue and recovery,
//                               routing to a Destination, waiting jobs (park/unpark),
//                               DNS, opening connections, backoff, the timer, reload, stop
//   delivery_outcome.cc         what a result means: Done, defer (with rewrite-forward),
//                               bounce, expiry
//   delivery_notices.h/.cc      DeliveryNotices: notices to the sender (failed, delayed,
//                               relayed), composed, spooled and handed back for delivery
//   delivery_queue_actions.cc   the operator's queue tools: list, count, flush, remove,
//                               bounce now, requeue, hold and release
// The SMTP dialogue itself is SmtpClient's (smtp_client.h).
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/config.h"
#include "core/metrics.h"
#include "core/result.h"
#include "core/tls.h"
#include "queue/bounce.h"
#include "queue/queue_entry.h"
#include "queue/scheduler.h"
#include "queue/spool.h"
#include "relay/outbound/delivery_notices.h"
#include "relay/outbound/destination.h"
#include "relay/outbound/smtp_client.h"
#include "relay/outbound/tls_reports.h"
#include "relay/routing/next_hop_guard.h"
#include "relay/routing/resolver.h"
#include "relay/routing/router.h"
#include "relay/routing/sts_policies.h"

namespace postern {

class Delivery final : public ClientOwner {
 public:
  // verifying: the context for routes with tls = "required" (TlsContexts::verifying).
  Delivery(uv_loop_t* loop, Spool& spool, std::shared_ptr<const Config> config,
           std::shared_ptr<const TlsContext> verifying, WorkerMetrics& metrics);
  ~Delivery();

  // Sets up DNS and TLS; fails with the reason it cannot run.
  Status init();

  void enqueue(SpooledMessage message);
  // A message found by recovery: its envelope is read back from the spool.
  void enqueue(SpooledRef message);
  // All that recovery found, taken up a slice per loop iteration (each is a read and a
  // routing), so that a backlog of millions does not hold up the sessions meanwhile.
  void recover(std::vector<SpooledRef> messages);
  // Switches to a new configuration and its verifying context.
  void reload(std::shared_ptr<const Config> config, std::shared_ptr<const TlsContext> verifying);
  // Stops new attempts and ends idle connections; a message on a connection finishes
  // (its result is recorded, then QUIT), since cutting it after the final dot could have
  // it delivered twice. done() turns true once every connection is closed.
  void stop();
  // The drain deadline: ends the connections still busy (their messages are retried
  // after the restart).
  void abort();
  bool done() const { return stopping_ && clients_ == 0; }

  // ClientOwner: the SmtpClient callbacks (jobFinished in delivery_outcome.cc).
  void clientReady(SmtpClient* client, bool first_time) override;
  void jobFinished(SmtpClient* client, std::unique_ptr<DeliveryJob> job,
                   std::vector<RecipientResult> results) override;
  void clientClosed(SmtpClient* client) override;
  TlsSessionCache& tlsSessions() override { return tls_sessions_; }
  BodyReadCounts& bodyReads() override { return metrics_.body_reads; }

  // Admin (queue tools; delivery_queue_actions.cc). Entries for every job, wherever it
  // waits; then actions on the jobs of one message by queue id. A job on a connection right
  // now is left alone.
  std::vector<QueueEntry> queueEntries() const;
  size_t flush(uint64_t id);  // 0: everything deferred, and backed-off next hops retried
  size_t remove(uint64_t id);
  size_t bounceNow(uint64_t id);
  // Routes the message's waiting jobs afresh, as at arrival (after a change of routes), and
  // tries them now. Held jobs are left held.
  size_t requeue(uint64_t id);
  // Hold: the message's jobs wait, undelivered and unexpired, until released, also across
  // restarts (its marker, Spool::setHeld); a job on a connection is held if its attempt
  // ends deferred. Release routes them afresh and tries them now. done(jobs, ok) comes once
  // the marker is made or removed durably (ok false: it is not, and the hold holds only
  // until a restart); jobs 0: nothing of that id to hold or release.
  using ActionDone = std::function<void(size_t jobs, bool ok)>;
  void hold(uint64_t id, ActionDone done);
  void release(uint64_t id, ActionDone done);
  // The file range of a queued message's content (for `postern queue show --body`, read
  // by the admin thread, not on this loop); nullopt if no job of that id is here.
  struct BodyLocation {
    std::string path;
    uint64_t offset = 0;
    uint64_t size = 0;
  };
  std::optional<BodyLocation> bodyLocation(uint64_t id) const;
  // Open outbound connections by SmtpClient::phase().
  std::map<std::string, size_t> connectionPhases() const;
  // Jobs waiting, being attempted, held, and the oldest arrival among them (Unix ms; 0: none).
  void queueCounts(size_t& ready, size_t& deferred, size_t& active, size_t& held,
                   int64_t& oldest_ms) const;

  uv_loop_t* loop() const override { return loop_; }
  Spool& spool() const override { return spool_; }

 private:
  // Dispatch and pool (delivery.cc).
  Destination& destinationFor(const std::string& recipient);
  Destination& destinationFor(const DeliveryJob& job);
  void dispatch(std::unique_ptr<DeliveryJob> job);
  void dispatch(ParkedJob job);
  // A waiting job in its compact form (scheduler.h); whole: keep the DeliveryJob too.
  ParkedJob park(std::unique_ptr<DeliveryJob> job, bool whole);
  // The job again with its envelope; nullptr if that cannot be read back (logged; the
  // message stays in the spool, and the next start's recovery deals with it).
  std::unique_ptr<DeliveryJob> unpark(ParkedJob job);
  // The message of a waiting job with its envelope, for queue listings; fails as unpark.
  Result<SpooledMessage> peek(const ParkedJob& job) const;
  void pump(Destination& d);
  void resolve(Destination& d);
  // tls = "dane": the TLSA records of the secure hosts among the answer, then pump().
  void lookUpTlsa(Destination& d);
  // tls = "mta-sts" or "dane" MX routes: the domain's MTA-STS policy, then pump().
  void lookUpSts(Destination& d);
  // A connection's TLS outcome, for the metrics and (under a policy) the TLS reports:
  // once it is ready, or when it failed before that because of TLS.
  void reportTls(const SmtpClient& client);
  void openClient(Destination& d);
  bool startJob(Destination& d, SmtpClient* c);
  void destinationFailed(Destination& d, const std::string& why);
  const RouteConfig* routeAfterReload(const Destination& d) const;
  void retire(std::unique_ptr<Destination> d);
  template <class F>
  void forEachDestination(F f) const {
    for (const auto& [key, d] : destinations_) f(*d);
    for (const auto& d : retired_) f(*d);
  }
  void armTimer();
  static void onTimer(uv_timer_t* t);
  static void onRecoverIdle(uv_idle_t* h);

  // Outcome (delivery_outcome.cc).
  // retry_at (loop time, 0: the job's own backoff) is for a next hop that is down: its
  // jobs wait for the hop's retry together, in order, and are not rewritten meanwhile.
  // tls: how the connection was protected (SmtpClient::tlsSummary), "" without one.
  void finishJob(std::unique_ptr<DeliveryJob> job, const std::vector<RecipientResult>& results,
                 const std::string& relay, uint64_t retry_at = 0, const std::string& tls = "");
  void deferJob(std::unique_ptr<DeliveryJob> job, uint64_t retry_at);

  // Queue actions (delivery_queue_actions.cc): the waiting jobs of one message, taken out
  // (held ones too if with_held), parked or with their envelopes.
  std::vector<ParkedJob> takeParked(uint64_t id, bool with_held);
  std::vector<std::unique_ptr<DeliveryJob>> takeJobs(uint64_t id, bool with_held);
  // Jobs of message id on a connection right now.
  size_t activeJobs(uint64_t id) const;
  bool isHeld(uint64_t id) const { return held_ids_.count(id) != 0; }
  // Puts a job aside as held (a deferred attempt of a held message, a recovered one).
  void parkHeld(ParkedJob job);
  // Message id was held and has no held job left (finished on a connection, deleted or
  // bounced): the hold ends and its marker goes.
  void endHold(uint64_t id);

  uv_loop_t* loop_;
  Spool& spool_;
  std::shared_ptr<const Config> config_;
  WorkerMetrics& metrics_;
  Router router_;
  NextHopGuard guard_;
  Resolver resolver_;
  StsPolicies sts_;  // after resolver_, which it uses
  TlsReports reports_;
  Scheduler scheduler_;
  DeliveryNotices notices_;
  std::shared_ptr<const TlsContext> tls_opportunistic_;
  std::shared_ptr<const TlsContext> tls_dane_;       // tls = "dane" hosts with TLSA records
  std::shared_ptr<const TlsContext> tls_verifying_;  // for routes with tls = "required"
  TlsSessionCache tls_sessions_;  // a reload empties it (a new ca_file checks afresh)
  std::unordered_map<std::string, std::unique_ptr<Destination>> destinations_;
  // Retired by a reload, with connections still finishing their messages.
  std::vector<std::unique_ptr<Destination>> retired_;
  uint64_t next_serial_ = 1;
  std::shared_ptr<const std::string> last_reply_;  // the latest parked, to share
  size_t clients_ = 0;                             // open SmtpClients over all destinations
  uv_timer_t timer_;
  bool stopping_ = false;
  // Held messages (hold()): their ids, and their jobs by id.
  std::unordered_set<uint64_t> held_ids_;
  std::multimap<uint64_t, ParkedJob> held_;
  std::vector<SpooledRef> recovering_;  // recover(): still to enqueue from recovering_next_
  size_t recovering_next_ = 0;
  uv_idle_t recover_idle_;
};

}  // namespace postern
