#include "relay/worker.h"

#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/log_sink.h"
#include "core/random.h"
#include "relay/inbound/listen_socket.h"
#include "relay/inbound/session.h"

namespace postern {
namespace {

// Read buffers kept for reuse per worker.
constexpr size_t kFreeBuffers = 256;

}  // namespace

Worker::Worker(std::shared_ptr<const Config> config, TlsContexts tls, unsigned index,
               ConnectionLimiter& limiter, MemoryBudget& memory, AuthThrottle& auth_throttle)
    : config_(config),
      startup_(config),
      index_(index),
      limiter_(limiter),
      memory_(memory),
      auth_throttle_(auth_throttle),
      buffers_(Session::bufferSize(config->limits), kFreeBuffers),
      tls_(std::move(tls)) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &stop_async_, onStopAsync);
  stop_async_.data = this;
  uv_async_init(&loop_, &handoff_async_, onHandoffAsync);
  handoff_async_.data = this;
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
  uv_async_init(&loop_, &task_async_, onTaskAsync);
  task_async_.data = this;
  // This thread's log lines go out once per iteration, before the loop waits (log_sink.h).
  handshakes_ = std::make_unique<HandshakeGate>(&loop_, config_->limits.tls_handshakes_per_turn);
  uv_prepare_init(&loop_, &log_prepare_);
  uv_prepare_start(&log_prepare_, [](uv_prepare_t*) { flushThreadLog(); });
  uv_unref(reinterpret_cast<uv_handle_t*>(&log_prepare_));
}

Worker::~Worker() {
  spool_.reset();
  uv_loop_close(&loop_);
}

Status Worker::start(bool own_listeners) {
  spool_ = std::make_unique<Spool>(&loop_, config_->spool_dir + "/w" + std::to_string(index_),
                                   index_, config_->segment_size);
  delivery_ = std::make_unique<Delivery>(&loop_, *spool_, config_, tls_.verifying, metrics_);
  if (Status delivery = delivery_->init(); !delivery) return delivery;
  prober_ = std::make_unique<RecipientProber>(&loop_, config_);
  if (Status probes = prober_->init(); !probes) {
    return fail("recipient probes: dns: " + probes.error());
  }

  // The spool takes mail at once; what it held is replayed meanwhile, off the loop.
  auto recovered = [this](std::vector<SpooledRef> messages) {
    logEvent(spdlog::level::info, "spool_recovered",
             {{"worker", uint64_t{index_}},
              {"dir", config_->spool_dir},
              {"messages", uint64_t{messages.size()}}});
    delivery_->recover(std::move(messages));
  };
  if (Status spool = spool_->openAsync(recovered); !spool) return fail("spool: " + spool.error());

  if (!own_listeners) return {};

  for (const auto& l : startup_->listeners) {
    // loadConfig has checked the address.
    const sockaddr_storage addr = parseHostPort(l.address).value_or(sockaddr_storage{});
    Result<int> fd = openListenSocket(addr, true);
    if (!fd) return fail("listen " + l.address + ": " + fd.error());
    auto* listener = new Listener{{}, this, &l};
    uv_tcp_init(&loop_, &listener->tcp);
    listener->tcp.data = listener;
    listeners_.push_back(listener);
    int rc = uv_tcp_open(&listener->tcp, *fd);
    if (rc == 0) {
      rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener->tcp), 1024, onConnection);
    }
    if (rc != 0) return fail("listen " + l.address + ": " + uv_strerror(rc));
  }
  return {};
}

void Worker::reload(std::shared_ptr<const Config> config, const TlsContexts& tls) {
  if (stopping_) return;
  delivery_->reload(config, tls.verifying);
  prober_->reload(config);
  config_ = std::move(config);
  tls_ = tls;
  handshakes_->setPerTurn(config_->limits.tls_handshakes_per_turn);
}

void Worker::run() {
  batchThreadLog(true);
  uv_run(&loop_, UV_RUN_DEFAULT);
  abandon();
  batchThreadLog(false);
}

void Worker::abandon() {
  // Closes whatever is still open (all of it when start() failed) and lets the close
  // callbacks run.
  closeListeners();
  if (prober_) prober_->stop();
  if (spool_) spool_->close();  // first: it stops a replay thread before its handle goes
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
}

void Worker::onConnection(uv_stream_t* server, int status) {
  auto* l = static_cast<Listener*>(server->data);
  if (status < 0 || l->worker->stopping_) return;
  Session::accept(*l->worker, *l->config, server);
}

void Worker::handoff(int fd, const ListenerConfig* listener) {
  handoffs_.enqueue(Handoff{fd, listener});
  uv_async_send(&handoff_async_);
}

void Worker::onHandoffAsync(uv_async_t* h) { static_cast<Worker*>(h->data)->drainHandoffs(); }

void Worker::drainHandoffs() {
  Handoff batch[64];
  size_t n;
  while ((n = handoffs_.try_dequeue_bulk(batch, 64)) > 0) {
    for (size_t i = 0; i < n; ++i) {
      if (stopping_) {
        ::close(batch[i].fd);
      } else {
        Session::adopt(*this, *batch[i].listener, batch[i].fd);
      }
    }
  }
}

void Worker::closeListeners() {
  for (Listener* l : listeners_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp),
             [](uv_handle_t* h) { delete static_cast<Listener*>(h->data); });
  }
  listeners_.clear();
}

void Worker::requestStop() { uv_async_send(&stop_async_); }

void Worker::onStopAsync(uv_async_t* h) { static_cast<Worker*>(h->data)->stop(); }

void Worker::stop() {
  if (stopping_) return;
  stopping_ = true;
  closeListeners();
  drainHandoffs();
  uv_close(reinterpret_cast<uv_handle_t*>(&stop_async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&handoff_async_), nullptr);
  for (Session* s : std::set<Session*>(sessions_)) s->shutdown();
  delivery_->stop();
  prober_->stop();
  drain_deadline_ = uv_now(&loop_) + static_cast<uint64_t>(config_->drain_timeout * 1000);
  uv_timer_start(&drain_timer_, onDrainTimer, 20, 20);
}

void Worker::onDrainTimer(uv_timer_t* t) {
  auto* w = static_cast<Worker*>(t->data);
  bool past = uv_now(&w->loop_) >= w->drain_deadline_;
  if (past) {
    for (Session* s : std::set<Session*>(w->sessions_)) s->shutdown(true);
    w->delivery_->abort();
  }
  if ((w->sessions_.empty() && !w->spool_->busy() && w->delivery_->done()) || past) {
    if (w->spool_->busy()) return;  // a commit in flight must finish: it may hold a 250
    uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
    w->spool_->close();
    {
      std::lock_guard<std::mutex> lock(w->tasks_mutex_);
      w->tasks_closed_ = true;
    }
    w->runTasks();  // whoever posted them is waiting for an answer
    uv_close(reinterpret_cast<uv_handle_t*>(&w->task_async_), nullptr);
  }
}

bool Worker::post(std::function<void()> task) {
  std::lock_guard<std::mutex> lock(tasks_mutex_);
  if (tasks_closed_) return false;
  tasks_.push_back(std::move(task));
  uv_async_send(&task_async_);
  return true;
}

void Worker::onTaskAsync(uv_async_t* h) { static_cast<Worker*>(h->data)->runTasks(); }

void Worker::runTasks() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(tasks_mutex_);
    tasks.swap(tasks_);
  }
  for (auto& t : tasks) t();
}

std::string Worker::metricsText() const {
  const std::string w = "worker=\"" + std::to_string(index_) + "\"";
  std::string out;
  auto sample = [&](const char* family, const std::string& labels, double v) {
    addFamilySample(out, family, labels, v);
  };
  auto histogram = [&](const char* family, const std::string& labels, const Histogram& h) {
    addFamilyHistogram(out, family, labels, h);
  };
  const WorkerMetrics& m = metrics_;
  sample("postern_connections_total", w, double(m.connections));
  std::map<std::string, size_t> states;
  for (const Session* s : sessions_) ++states[s->stateName()];
  for (const char* st : {"proxy", "connected", "ready", "mail", "rcpt", "data", "bdat", "commit"}) {
    sample("postern_sessions", w + ",state=\"" + st + "\"", double(states[st]));
  }
  sample("postern_tls_handshake_failures_total", w, double(m.tls_failures));
  sample("postern_dkim_signatures_total", w + ",result=\"signed\"", double(m.dkim_signed));
  sample("postern_dkim_signatures_total", w + ",result=\"failed\"", double(m.dkim_failed));
  sample("postern_auth_total", w + ",result=\"ok\"", double(m.auth_ok));
  sample("postern_auth_total", w + ",result=\"failed\"", double(m.auth_failures));
  sample("postern_messages_accepted_total", w, double(m.messages_accepted));
  sample("postern_message_bytes_accepted_total", w, double(m.bytes_accepted));
  for (const auto& [status, n] : m.rejected) {
    sample("postern_replies_rejected_total", w + ",status=\"" + promEscape(status) + "\"",
           double(n));
  }
  for (const auto& [key, n] : m.tls_policy) {
    sample("postern_outbound_tls_policy_total",
           w + ",policy=\"" + key.first + "\",result=\"" + key.second + "\"", double(n));
  }
  for (const auto& [key, n] : m.milter_actions) {
    sample("postern_milter_actions_total",
           w + ",milter=\"" + promEscape(key.first) + "\",action=\"" + key.second + "\"",
           double(n));
  }
  for (const auto& [reason, n] : m.messages_rejected) {
    sample("postern_messages_rejected_total", w + ",reason=\"" + promEscape(reason) + "\"",
           double(n));
  }
  for (auto [result, n] : {std::pair{"delivered", m.delivered}, std::pair{"deferred", m.deferred},
                           std::pair{"bounced", m.bounced}, std::pair{"expired", m.expired}}) {
    sample("postern_recipients_total", w + ",result=\"" + result + "\"", double(n));
  }
  for (auto [result, n] : {std::pair{"ok", m.dns_ok}, std::pair{"temporary", m.dns_temporary},
                           std::pair{"permanent", m.dns_permanent}}) {
    sample("postern_dns_lookups_total", w + ",result=\"" + result + "\"", double(n));
  }
  for (auto [result, n] :
       {std::pair{"ready", m.outbound_ready}, std::pair{"failed", m.outbound_failed}}) {
    sample("postern_outbound_connections_total", w + ",result=\"" + result + "\"", double(n));
  }
  sample("postern_outbound_tls_failures_total", w, double(m.outbound_tls_failures));
  {
    const std::map<std::string, size_t> phases =
        delivery_ ? delivery_->connectionPhases() : std::map<std::string, size_t>{};
    for (const char* phase : {"opening", "idle", "busy", "closing"}) {
      auto it = phases.find(phase);
      sample("postern_outbound_connections_open", w + ",state=\"" + phase + "\"",
             it == phases.end() ? 0.0 : double(it->second));
    }
  }
  size_t ready = 0, deferred = 0, active = 0, held = 0;
  int64_t oldest = 0;
  if (delivery_) delivery_->queueCounts(ready, deferred, active, held, oldest);
  for (auto [state, n] : {std::pair{"ready", ready}, std::pair{"deferred", deferred},
                          std::pair{"active", active}, std::pair{"held", held}}) {
    sample("postern_queue_jobs", w + ",state=\"" + state + "\"", double(n));
  }
  double age = oldest == 0 ? 0 : double(std::max<int64_t>(unixMillis() - oldest, 0)) / 1000;
  sample("postern_queue_oldest_age_seconds", w, age);
  if (spool_) {
    sample("postern_spool_bytes", w, double(spool_->bytes()));
    sample("postern_spool_segments", w, double(spool_->segmentCount()));
    sample("postern_spool_write_failing", w, spool_->writeFailing() ? 1 : 0);
    sample("postern_spool_quarantined_bytes_total", w, double(spool_->quarantinedBytes()));
    histogram("postern_spool_fsync_seconds", w, spool_->fsyncSeconds());
  }
  for (auto [path, n] :
       {std::pair{"cache", m.body_reads.cache}, std::pair{"pool", m.body_reads.pool}}) {
    sample("postern_body_pieces_read_total", w + ",path=\"" + path + "\"", double(n));
  }
  for (const auto& [hop, h] : m.delivery) {
    histogram("postern_delivery_seconds", w + ",next_hop=\"" + promEscape(hop) + "\"", h);
  }
  return out;
}

std::string Worker::newSessionId() {
  // PREFIX-WORKER-N: the prefix, random per process, tells one run's sessions from the
  // next's; N counts this worker's sessions.
  static const std::string prefix = randomHex(2);
  return prefix + "-" + std::to_string(index_) + "-" + std::to_string(++sessions_started_);
}

}  // namespace postern
