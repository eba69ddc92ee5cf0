// Admin: the operator's HTTP endpoint (default 127.0.0.1:9025) on the main thread's loop.
//
//   GET  /healthz                  200 while the process serves requests
//   GET  /readyz                   200, or 503 while draining or when a spool cannot write
//   GET  /metrics                  Prometheus text format, worker="N" on every sample
//   GET  /queue[?format=text]      every queued message (JSON, or a table)
//   GET  /queue/summary            messages by recipient domain and age (like qshape),
//                                  and the quarantine's count and octets
//   GET  /queue/quarantine[?format=text]
//                                  the damaged spool ranges starts have quarantined
//   GET  /queue/ID[?format=text]   one message
//   POST /queue/flush              retry everything deferred now (and backed-off hops)
//   GET  /queue/ID/body            one message's content as spooled (message/rfc822)
//   POST /queue/ID/flush|delete|bounce|requeue|hold|release
//   GET  /queue/select?SELECTION   the ids a selection matches (relay/queue_selection.h)
//   POST /queue/select/ACTION?SELECTION
//                                  the action on every message the selection matches;
//                                  {"messages":N}, those it acted on
//
// The queue API (every /queue path) answers only clients in admin.queue_networks
// (default: loopback, which `postern queue` run on the same host or pod is; 403 to anyone
// else) that present its bearer token ("Authorization: Bearer T", relay/admin_token.h;
// 401 without it): it shows envelope addresses and can delete mail. The health and
// metrics paths answer whoever can reach the address (probes, Prometheus).
//
// Answers that need a worker's state are computed on each worker's own loop (Worker::post)
// and gathered back here through a uv_async; a worker that does not answer within 2 s
// makes the request fail with 503 rather than hang. The quarantine is read from
// spool_dir/wN/quarantine/ here, on request (a bounded directory listing,
// queue/quarantine_list.h). One request per connection, bounded in size and time; nothing
// here is on the mail path.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "core/network.h"
#include "core/result.h"
#include "relay/queue_view.h"

namespace postern {

class Worker;

class Admin {
 public:
  Admin(uv_loop_t* loop, std::string address, std::vector<Network> queue_networks,
        std::string token, std::string spool_dir, std::vector<Worker*> workers,
        std::function<bool()> draining, std::function<std::string()> process_metrics);
  ~Admin();
  // Binds the address; fails with why not.
  Status start();
  void close();

  // What one worker contributes to an answer.
  struct WorkerAnswer {
    std::string text;
    std::vector<QueueEntry> entries;
    size_t count = 0;
    bool spool_ok = true;
    std::string body_path;  // GET /queue/ID/body: where the worker's copy lies
    uint64_t body_offset = 0;
    uint64_t body_size = 0;
  };

 private:
  struct Conn;
  struct Gather;
  struct Shared;
  using Ask = std::function<void(Worker&, WorkerAnswer&)>;
  // An answer a worker gives later (after a spool write): reply() exactly once, from that
  // worker's loop.
  using Reply = std::function<void(WorkerAnswer)>;
  using AskLater = std::function<void(Worker&, Reply)>;
  using Finish = std::function<void(std::vector<WorkerAnswer>&)>;

  static void onConnection(uv_stream_t* server, int status);
  static void onAsync(uv_async_t* h);
  void handle(Conn* c, const std::string& method, const std::string& target);
  void askWorkers(Conn* c, Ask ask, Finish finish);
  void askWorkersLater(Conn* c, AskLater ask, Finish finish);
  static void answerAction(Conn* c, const std::string& action, std::vector<WorkerAnswer>& all,
                           const char* key, int none_status);
  // GET /queue/ID/body: read here from the file range a worker named.
  void sendBody(Conn* c, const std::vector<WorkerAnswer>& all);

  uv_loop_t* loop_;
  std::string address_;
  std::vector<Network> queue_networks_;
  std::string token_;
  std::string spool_dir_;
  std::vector<Worker*> workers_;
  std::function<bool()> draining_;
  std::function<std::string()> process_metrics_;  // the process's lines (process_metrics.h)
  uv_tcp_t listener_;
  bool listening_ = false;
  // Open connections: close() ends them too, or one that never sends its request keeps
  // the loop (and so the process) alive for kReadTimeoutMs after the drain.
  std::set<Conn*> conns_;
  std::shared_ptr<Shared> shared_;
};

// Groups per-worker sample lines ("family\tsample") into one Prometheus text document
// with a HELP and TYPE line per family.
std::string renderMetrics(const std::vector<std::string>& per_worker);

}  // namespace postern
