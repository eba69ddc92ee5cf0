// Delivery: the outbound side of one worker. Takes spooled messages, keeps a pool of
// SmtpClient connections to the next hop, hands each ready connection the next ready job,
// and turns per-recipient results into spool records:
//
//   2xx        -> Done
//   4xx        -> retry after backoff (Scheduler)
//   5xx        -> Done, logged as bounced (bounce messages are not generated yet)
//   too old    -> Done, logged as expired (queue_lifetime)
//
// Rewrite-forward: a message deferred again while it sits in an older segment than the
// active one is appended anew (pending recipients only, new queue id) so the old segment
// can be deleted; the old id's Done records are written in the same write, after it, so
// a crash duplicates at worst and never loses.
//
// A connection that fails before it was ever usable counts against the destination as a
// whole: everything ready for it waits for the host backoff instead of hammering it.
// Today there is one next hop: the route for "*".
#pragma once

#include <uv.h>

#include <memory>
#include <set>
#include <vector>

#include "core/config.h"
#include "queue/scheduler.h"
#include "queue/spool.h"
#include "relay/smtp_client.h"

namespace postern {

class Delivery {
 public:
  Delivery(uv_loop_t* loop, Spool& spool, const Config& config);
  ~Delivery();

  // Rejects configurations it cannot serve; returns "" or the reason.
  std::string init();

  void enqueue(SpooledMessage message);
  // Stops new attempts, ends connections; done() turns true once all are closed.
  void stop();
  bool done() const { return stopping_ && clients_.empty(); }

  // SmtpClient callbacks.
  void clientReady(SmtpClient* client, bool first_time);
  void jobFinished(SmtpClient* client, std::unique_ptr<DeliveryJob> job,
                   std::vector<RecipientResult> results);
  void clientClosed(SmtpClient* client);

  uv_loop_t* loop() const { return loop_; }
  Spool& spool() const { return spool_; }
  const Config& config() const { return config_; }

 private:
  void pump();
  void deferJob(std::unique_ptr<DeliveryJob> job);
  void armTimer();
  static void onTimer(uv_timer_t* t);

  uv_loop_t* loop_;
  Spool& spool_;
  const Config& config_;
  Scheduler scheduler_;
  sockaddr_storage next_hop_{};
  std::string next_hop_text_;
  std::set<SmtpClient*> clients_;
  size_t connecting_ = 0;  // clients not yet ready
  size_t active_ = 0;      // jobs currently on a connection
  unsigned host_failures_ = 0;
  uint64_t host_down_until_ = 0;
  uv_timer_t timer_;
  bool stopping_ = false;
};

}  // namespace postern
