// Server: the whole relay process. Starts one Worker per configured worker, each on its
// own thread with its own loop, spool directory and delivery pool, and keeps the main
// thread for signals and, in handoff mode, for the single acceptor.
//
// Accepting: with accept_mode = "reuseport" (default) every worker binds every listener
// with SO_REUSEPORT and the kernel spreads connections; with "handoff" the main thread
// accepts and passes sockets round-robin to the workers through their lock-free queues.
//
// Before workers start, spool directories of workers that no longer exist (the worker
// count went down) are merged into the remaining ones, so no message is left behind.
// SIGTERM/SIGINT: stop accepting, drain every worker, join, exit 0.
// SIGHUP: read the configuration file again (relay/reload.h), and if it passes, give it
// to every worker on its own loop; the last worker to switch logs config_reloaded. A
// refused reload logs reload_failed with the reason, and nothing changes. With
// [server] reload_on_change, a change of the file does the same (relay/config_watch.h).
#pragma once

#include <uv.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/result.h"
#include "relay/config_watch.h"
#include "relay/process_metrics.h"
#include "relay/admin.h"
#include "relay/inbound/auth_throttle.h"
#include "relay/inbound/connection_limiter.h"
#include "relay/worker.h"

namespace postern {

class Server {
 public:
  // config_path is read again on SIGHUP; spool_override (if not empty) replaced
  // server.spool_dir on the command line.
  // tls: what loadReferencedFiles read for config.
  Server(std::shared_ptr<const Config> config, TlsContexts tls, std::string config_path,
         std::string spool_override);
  ~Server();
  // Runs until a signal ends it. Returns the process exit status.
  int run();

 private:
  Status startAcceptors();
  void stop();
  void reload();
  static void onSignal(uv_signal_t* h, int signum);
  static void onHangup(uv_signal_t* h, int signum);
  static void onConnection(uv_stream_t* server, int status);
  static void onWorkerExit(uv_async_t* h);

  struct Acceptor {
    uv_tcp_t tcp;
    Server* server;
    const ListenerConfig* config;
  };

  // The start-up configuration: listeners and workers keep pointers into it, so it lives
  // as long as the Server. current_ is the latest one given to the workers.
  const std::shared_ptr<const Config> startup_;
  const Config& config_;
  const TlsContexts startup_tls_;
  std::shared_ptr<const Config> current_;
  const std::string config_path_;
  const std::string spool_override_;
  unsigned reloads_ = 0;
  ReloadStats reload_stats_;  // for /metrics (on loop_, as reload() and the admin are)
  ConnectionLimiter limiter_;
  MemoryBudget memory_;  // every worker's sessions together
  AuthThrottle auth_throttle_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  uv_loop_t loop_;
  uv_signal_t sigterm_;
  uv_signal_t sigint_;
  uv_signal_t sighup_;
  ConfigWatch watch_{&loop_};  // [server] reload_on_change
  std::vector<Acceptor*> acceptors_;
  size_t next_worker_ = 0;
  bool stopping_ = false;
  // The admin endpoint stays up while workers drain (so /readyz can say so) and closes
  // once every worker thread has finished.
  std::unique_ptr<Admin> admin_;
  uv_async_t worker_exit_;
  std::atomic<unsigned> workers_running_{0};
};

}  // namespace postern
