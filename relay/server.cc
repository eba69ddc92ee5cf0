#include "relay/server.h"

#include <fcntl.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "queue/spool_dirs.h"
#include "relay/admin_token.h"
#include "relay/inbound/listen_socket.h"
#include "relay/reload.h"

namespace postern {

Server::Server(std::shared_ptr<const Config> config, TlsContexts tls, std::string config_path,
               std::string spool_override)
    : startup_(std::move(config)),
      config_(*startup_),
      startup_tls_(std::move(tls)),
      current_(startup_),
      config_path_(std::move(config_path)),
      spool_override_(std::move(spool_override)),
      limiter_(config_.limits.connections, config_.limits.connections_per_ip,
               config_.limits.ipv6_prefix),
      memory_(config_.limits.memory_budget),
      auth_throttle_(config_.limits.ipv6_prefix) {
  uv_loop_init(&loop_);
  reload_stats_.started_at = reload_stats_.loaded_at = double(unixMillis()) / 1000;
}

Server::~Server() { uv_loop_close(&loop_); }

int Server::run() {
  // Handled from the start: listeners accept as soon as a worker binds them, and a
  // SIGTERM that early must drain like any other, not kill the process. The loop picks
  // the signal up once it runs.
  uv_signal_init(&loop_, &sigterm_);
  sigterm_.data = this;
  uv_signal_start(&sigterm_, onSignal, SIGTERM);
  uv_signal_init(&loop_, &sigint_);
  sigint_.data = this;
  uv_signal_start(&sigint_, onSignal, SIGINT);
  uv_signal_init(&loop_, &sighup_);
  sighup_.data = this;
  uv_signal_start(&sighup_, onHangup, SIGHUP);
  Status started = mergeOrphanSpools(config_.spool_dir, config_.workers);
  for (unsigned i = 0; i < config_.workers && started; ++i) {
    workers_.push_back(std::make_unique<Worker>(startup_, startup_tls_, i, limiter_, memory_,
                                                auth_throttle_));
  }
  // The admin endpoint listens before any SMTP listener, so whoever sees port 25 open
  // can also ask /readyz (which waits for the workers' loops to answer).
  if (started && !config_.admin_address.empty()) {
    std::vector<Worker*> workers;
    for (auto& w : workers_) workers.push_back(w.get());
    Result<std::string> token = loadOrCreateAdminToken(config_);
    if (!token) {
      started = fail(token.error());
    } else {
      admin_ = std::make_unique<Admin>(
          &loop_, config_.admin_address, config_.admin_queue_networks, std::move(*token),
          config_.spool_dir, workers, [this] { return stopping_; },
          [this] { return processMetricsText(config_.spool_dir, reload_stats_); });
      started = admin_->start();
    }
  }
  for (size_t i = 0; i < workers_.size() && started; ++i) {
    started = workers_[i]->start(!config_.accept_handoff);
    if (!started) started = fail("worker " + std::to_string(i) + ": " + started.error());
  }
  if (started && config_.accept_handoff) started = startAcceptors();
  if (!started) {
    const std::string& err = started.error();
    logEvent(spdlog::level::err, "startup_failed", {{"error", err}});
    std::fprintf(stderr, "postern: %s\n", err.c_str());
    for (auto& w : workers_) w->abandon();
    for (Acceptor* a : acceptors_) {
      uv_close(reinterpret_cast<uv_handle_t*>(&a->tcp),
               [](uv_handle_t* h) { delete static_cast<Acceptor*>(h->data); });
    }
    if (admin_) admin_->close();
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sighup_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    return 1;
  }
  if (config_.reload_on_change) {
    if (int rc = watch_.start(config_path_, config_.reload_check_interval, [this] { reload(); });
        rc != 0) {
      logEvent(spdlog::level::err, "config_watch_failed",
               {{"config", config_path_}, {"error", uv_strerror(rc)}});
    }
  }
  for (const auto& l : config_.listeners) {
    logEvent(spdlog::level::info, "listening",
             {{"address", l.address},
              {"workers", uint64_t{config_.workers}},
              {"accept", config_.accept_handoff ? "handoff" : "reuseport"}});
  }

  uv_async_init(&loop_, &worker_exit_, onWorkerExit);
  worker_exit_.data = this;
  workers_running_ = static_cast<unsigned>(workers_.size());
  for (auto& w : workers_) {
    threads_.emplace_back([this, worker = w.get()] {
      worker->run();
      // Only the last one wakes the main loop, which then closes the handle.
      if (workers_running_.fetch_sub(1) == 1) uv_async_send(&worker_exit_);
    });
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& t : threads_) t.join();
  return 0;
}

Status Server::startAcceptors() {
  for (const auto& l : config_.listeners) {
    // loadConfig has checked the address.
    const sockaddr_storage addr = parseHostPort(l.address).value_or(sockaddr_storage{});
    Result<int> fd = openListenSocket(addr, false);
    if (!fd) return fail("listen " + l.address + ": " + fd.error());
    auto* a = new Acceptor{{}, this, &l};
    uv_tcp_init(&loop_, &a->tcp);
    a->tcp.data = a;
    acceptors_.push_back(a);
    int rc = uv_tcp_open(&a->tcp, *fd);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&a->tcp), 1024, onConnection);
    if (rc != 0) return fail("listen " + l.address + ": " + uv_strerror(rc));
  }
  return {};
}

void Server::onConnection(uv_stream_t* stream, int status) {
  auto* a = static_cast<Acceptor*>(stream->data);
  Server* s = a->server;
  if (status < 0 || s->stopping_) return;
  // libuv only lets a listener accept into a handle of its own loop, so the socket is
  // accepted here and a duplicate of it travels to the worker, which wraps it in its
  // loop; the local handle is closed (deleted in its close callback).
  auto* client = new uv_tcp_t;
  uv_tcp_init(&s->loop_, client);
  if (uv_accept(stream, reinterpret_cast<uv_stream_t*>(client)) == 0) {
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(client), &fd) == 0) {
      int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (dup >= 0) {
        s->workers_[s->next_worker_++ % s->workers_.size()]->handoff(dup, a->config);
      }
    }
  }
  uv_close(reinterpret_cast<uv_handle_t*>(client),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
}

void Server::onWorkerExit(uv_async_t* h) {
  auto* s = static_cast<Server*>(h->data);
  if (s->workers_running_.load() != 0) return;
  // Every worker has drained: nothing is left to report on.
  if (s->admin_) s->admin_->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&s->worker_exit_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&s->sigterm_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&s->sigint_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&s->sighup_), nullptr);
}

void Server::onSignal(uv_signal_t* h, int signum) {
  auto* s = static_cast<Server*>(h->data);
  if (s->stopping_) {
    logEvent(spdlog::level::info, "shutdown_in_progress", {{"signal", signum}});
    return;
  }
  logEvent(spdlog::level::info, "shutdown", {{"signal", signum}});
  s->stop();
}

void Server::onHangup(uv_signal_t* h, int) { static_cast<Server*>(h->data)->reload(); }

void Server::reload() {
  if (stopping_) {
    ++reload_stats_.failed;
    logEvent(spdlog::level::warn, "reload_failed", {{"error", "shutting down"}});
    return;
  }
  Result<ReloadPlan> prepared =
      prepareReload(config_path_, spool_override_, *current_, startup_tls_.tickets);
  if (!prepared) {
    ++reload_stats_.failed;
    logEvent(
        spdlog::level::err, "reload_failed",
        {{"config", config_path_}, {"error", prepared.error()}, {"kept", "running configuration"}});
    return;
  }
  const ReloadPlan plan = std::move(*prepared);
  std::string fixed;
  for (const auto& key : plan.restart_required) fixed += (fixed.empty() ? "" : ",") + key;
  if (!fixed.empty()) {
    logEvent(spdlog::level::warn, "reload_restart_required",
             {{"keys", fixed}, {"kept", "running values"}});
  }
  current_ = plan.config;
  ++reload_stats_.ok;
  reload_stats_.loaded_at = double(unixMillis()) / 1000;
  limiter_.setLimits(current_->limits.connections, current_->limits.connections_per_ip);
  memory_.setLimit(current_->limits.memory_budget);
  spdlog::set_level(spdlog::level::from_str(current_->log_level));
  // Every worker switches on its own loop; the last one to do so says it is done, so a
  // config_reloaded line means every new connection now gets the new configuration.
  auto left = std::make_shared<std::atomic<size_t>>(workers_.size());
  const unsigned generation = ++reloads_;
  for (auto& w : workers_) {
    Worker* worker = w.get();
    auto task = [worker, plan, left, generation] {
      worker->reload(plan.config, plan.tls);
      if (left->fetch_sub(1) == 1) {
        logEvent(spdlog::level::info, "config_reloaded", {{"generation", uint64_t{generation}}});
      }
    };
    // A worker that no longer takes tasks is draining: it has no new connections to give
    // the new configuration to.
    if (!worker->post(task)) left->fetch_sub(1);
  }
}

void Server::stop() {
  if (stopping_) return;
  stopping_ = true;
  watch_.close();
  for (Acceptor* a : acceptors_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&a->tcp),
             [](uv_handle_t* h) { delete static_cast<Acceptor*>(h->data); });
  }
  acceptors_.clear();
  // The signal handlers stay until the workers are done: a second SIGTERM during the
  // drain must not kill the process with the default action.
  for (auto& w : workers_) w->requestStop();
}

}  // namespace postern
