// Worker: one event loop and everything that runs on it: the listeners, the inbound
// sessions, the spool and the delivery pool. A worker is touched only by its own thread.
// (Today the relay runs a single worker on the main thread.)
//
// Shutdown (SIGTERM/SIGINT): listeners close, idle sessions get 421 4.3.2, a session
// whose message is being committed gets its 250 first, the spool flushes, delivery
// connections end, and run() returns once every handle is closed.
#pragma once

#include <uv.h>

#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "core/network.h"
#include "queue/spool.h"
#include "relay/delivery.h"
#include "relay/tls.h"

namespace postern {

class Session;

class Worker {
 public:
  Worker(const Config& config, unsigned index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Opens the spool (recovering it), binds the listeners. Returns "" or the error.
  std::string start();
  // Runs the loop until shutdown completes.
  void run();

  uv_loop_t* loop() { return &loop_; }
  const Config& config() const { return config_; }
  Spool& spool() { return *spool_; }
  Delivery& delivery() { return *delivery_; }
  // The STARTTLS context, or nullptr when no certificate is configured.
  const TlsContext* tls() const { return tls_.get(); }
  bool stopping() const { return stopping_; }

  // Connection accounting for the total and per-IP limits.
  bool admitConnection(const IpAddress& ip);
  void releaseConnection(const IpAddress& ip);

  void addSession(Session* s) { sessions_.insert(s); }
  void removeSession(Session* s) { sessions_.erase(s); }

 private:
  void stop();
  void closeListeners();
  static void onConnection(uv_stream_t* server, int status);
  static void onSignal(uv_signal_t* h, int signum);
  static void onDrainTimer(uv_timer_t* t);

  const Config& config_;
  unsigned index_;
  uv_loop_t loop_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<Delivery> delivery_;
  struct Listener {
    uv_tcp_t tcp;
    Worker* worker;
    const ListenerConfig* config;
  };
  std::vector<Listener*> listeners_;  // freed in their close callbacks
  std::unique_ptr<TlsContext> tls_;
  uv_signal_t sigterm_;
  uv_signal_t sigint_;
  uv_timer_t drain_timer_;
  uint64_t drain_deadline_ = 0;
  bool stopping_ = false;
  std::set<Session*> sessions_;
  size_t connections_ = 0;
  std::unordered_map<std::string, size_t> per_ip_;
};

}  // namespace postern
