// Worker: one event loop on its own thread and everything that runs on it: its listeners
// (SO_REUSEPORT mode), the inbound sessions, its spool (spool_dir/wN) and its delivery
// pool. A worker's loop is touched only by its own thread; other threads reach it only
// through requestStop() and handoff(), which use a lock-free queue and uv_async_send
// (coalescing wake-ups, so every wake-up drains the whole queue).
//
// Shutdown (requestStop): listeners close, idle sessions get 421 4.3.2, a session whose
// message is being committed gets its 250 first, the spool flushes, delivery connections
// end, and run() returns once every handle is closed.
//
// Configuration: the worker holds the current Config snapshot; reload() (posted by the
// Server on SIGHUP) swaps it with the STARTTLS context and hands it to delivery. A
// session keeps the snapshot it started with, as a Postfix smtpd process does, so a
// reload never changes the rules in the middle of a conversation.
#pragma once

#include <concurrentqueue/concurrentqueue.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "core/buffer_pool.h"
#include "core/config.h"
#include "core/memory_budget.h"
#include "core/metrics.h"
#include "core/network.h"
#include "core/result.h"
#include "core/tls.h"
#include "queue/spool.h"
#include "relay/inbound/auth_throttle.h"
#include "relay/inbound/connection_limiter.h"
#include "relay/inbound/handshake_gate.h"
#include "relay/inbound/recipient_probe.h"
#include "relay/inbound/session_host.h"
#include "relay/outbound/delivery.h"

namespace postern {

class Worker final : public SessionHost {
 public:
  Worker(std::shared_ptr<const Config> config, TlsContexts tls, unsigned index,
         ConnectionLimiter& limiter, MemoryBudget& memory, AuthThrottle& auth_throttle);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Opens the spool (recovering it) and, if own_listeners, binds the listeners with
  // SO_REUSEPORT. Called before run(), on any thread.
  Status start(bool own_listeners);
  // Runs the loop on the calling thread until shutdown completes.
  void run();
  // For a worker that will not run (another failed to start): closes its handles.
  void abandon();

  // Thread-safe.
  void requestStop();
  void handoff(int fd, const ListenerConfig* listener);

  // On this worker's loop (through post()): new sessions and delivery attempts use
  // config and tls from now on.
  void reload(std::shared_ptr<const Config> config, const TlsContexts& tls);

  uv_loop_t* loop() override { return &loop_; }
  unsigned index() const { return index_; }
  std::shared_ptr<const Config> configSnapshot() const override { return config_; }
  Spool& spool() override { return *spool_; }
  Delivery& delivery() { return *delivery_; }
  RecipientProber& prober() override { return *prober_; }
  BufferPool& bufferPool() override { return buffers_; }
  bool stopping() const override { return stopping_; }
  std::string newSessionId() override;
  const TlsContext* tls() const override { return tls_.server.get(); }
  HandshakeGate& handshakeGate() override { return *handshakes_; }

  WorkerMetrics& metrics() override { return metrics_; }
  // Thread-safe: runs task on this worker's loop (admin requests; not the hot path, so a
  // mutex is fine). False once the worker has stopped taking tasks.
  bool post(std::function<void()> task);
  // On this worker's loop: its Prometheus samples, each line prefixed with its metric
  // family's name and a tab so the admin endpoint can group families across workers.
  std::string metricsText() const;

  bool admitConnection(const IpAddress& ip) override { return limiter_.admit(ip); }
  void releaseConnection(const IpAddress& ip) override { limiter_.release(ip); }
  AuthThrottle& authThrottle() override { return auth_throttle_; }
  MemoryBudget& memory() override { return memory_; }

  void addSession(Session* s) override {
    sessions_.insert(s);
    ++metrics_.connections;
  }
  void removeSession(Session* s) override { sessions_.erase(s); }
  // Inbound hands every durable message to this worker's delivery.
  void accepted(SpooledMessage message) override { delivery_->enqueue(std::move(message)); }

 private:
  struct Listener {
    uv_tcp_t tcp;
    Worker* worker;
    const ListenerConfig* config;
  };
  struct Handoff {
    int fd;
    const ListenerConfig* listener;
  };

  void stop();
  void closeListeners();
  void drainHandoffs();
  static void onConnection(uv_stream_t* server, int status);
  static void onStopAsync(uv_async_t* h);
  static void onHandoffAsync(uv_async_t* h);
  static void onDrainTimer(uv_timer_t* t);
  static void onTaskAsync(uv_async_t* h);
  void runTasks();

  std::shared_ptr<const Config> config_;
  // Listeners (not reloadable) point into the start-up configuration, which stays alive.
  const std::shared_ptr<const Config> startup_;
  unsigned index_;
  uint64_t sessions_started_ = 0;  // for session ids
  ConnectionLimiter& limiter_;
  MemoryBudget& memory_;
  AuthThrottle& auth_throttle_;
  uv_loop_t loop_;
  BufferPool buffers_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<Delivery> delivery_;
  std::unique_ptr<RecipientProber> prober_;
  TlsContexts tls_;
  std::unique_ptr<HandshakeGate> handshakes_;  // made once loop_ is
  std::vector<Listener*> listeners_;           // freed in their close callbacks
  uv_async_t stop_async_;
  uv_async_t handoff_async_;
  moodycamel::ConcurrentQueue<Handoff> handoffs_;
  uv_timer_t drain_timer_;
  uint64_t drain_deadline_ = 0;
  bool stopping_ = false;
  std::set<Session*> sessions_;
  WorkerMetrics metrics_;
  uv_async_t task_async_;
  uv_prepare_t log_prepare_;
  std::mutex tasks_mutex_;
  std::vector<std::function<void()>> tasks_;  // guarded by tasks_mutex_
  bool tasks_closed_ = false;                 // guarded by tasks_mutex_
};

}  // namespace postern
