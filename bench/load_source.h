// postern-load source: C concurrent SMTP client connections on one libuv loop sending N
// test messages (see load_message.h) to one server, then a report on stdout.
//
// Each message is tried until it gets a reply to its transaction: 2xx counts as
// accepted, 4xx as tempfail, 5xx as rejected, and none of those is resent. A message
// whose connection broke before its final reply is sent again (same seq) on another
// connection, so the far end may legitimately see it twice. Connection failures are
// counted, retried after a short delay, and the whole run gives up at --timeout. The exit
// status is 0 exactly when every message was accepted.
//
// Result line fields: sent = distinct messages whose transaction began; accepted /
// tempfail / rejected = messages by the class of the reply that decided them; errors =
// connection failures (a 421 counts here and, if it answered a message, as tempfail);
// msgs_per_s = accepted / elapsed_s; latencies are from handing the body and final "."
// to the kernel until the reply, over every message that got that far (p50, p99, p99.9
// and max, exact nearest-rank). With --starttls every connection upgrades to TLS first,
// and the line ends with tls_resumed = handshakes that resumed a session. With
// --tls-resume every new connection offers the session the source last obtained (one
// session shared by all connections, as a client reusing its last ticket would), so only
// the first connections, and any whose offer the server refuses, run a full handshake.
//
// --ack-log FILE writes the seq of every message answered 2xx, one decimal number per
// line, flushed as it is written, so a test can tell exactly which messages the server
// acknowledged (and follow progress while the run goes on). A seq appears at most once.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench/load_message.h"
#include "bench/load_stats.h"
#include "core/tls.h"

namespace postern {

class LoadClient;

struct SourceOptions {
  std::string server = "127.0.0.1:2525";
  uint64_t messages = 1000;
  int concurrency = 10;
  int messages_per_connection = 100;
  int pipelining = 0;       // >0 always, <0 never, 0 when the server offers it
  bool starttls = false;    // STARTTLS after EHLO on every connection, then EHLO again
  bool tls_resume = false;  // with starttls: offer the last session obtained
  double timeout_s = 120;
  bool quiet = false;
  std::string ack_log;  // file for the seq of each message answered 2xx; empty: none
  MessageSpec message;
};

class Source {
 public:
  explicit Source(SourceOptions opts);
  ~Source();
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;

  // Runs to completion or timeout, prints the report, returns the exit status.
  int run();

  // The interface LoadClient uses.
  uv_loop_t* loop() { return &loop_; }
  const sockaddr* server() const { return reinterpret_cast<const sockaddr*>(&addr_); }
  const SourceOptions& options() const { return opts_; }
  MessageBuilder& builder() { return builder_; }
  bool stopping() const { return stopping_; }
  const std::string& heloName() const { return helo_name_; }
  const TlsContext* tlsContext() const { return tls_.get(); }
  // --tls-resume: the session a new connection offers (nullptr: none yet, or no option).
  const TlsSession& tlsSession() const { return tls_session_; }
  // --tls-resume: a connection's session, ready once the server has answered inside TLS;
  // replaces the one offered so far (the newest ticket lives longest). nullptr: ignored.
  void obtainedSession(TlsSession session);
  // A TLS handshake resumed a session.
  void tlsResumed() { ++tls_resumed_; }

  // Hands out the next message to send (a retried one first); false when none is left.
  bool claim(uint64_t& seq);
  // A transaction for seq began (MAIL was written).
  void began(uint64_t seq);
  // The message's connection failed before its final reply: send it again.
  void requeue(uint64_t seq);
  // code is the reply that decided message seq; latency_ns 0 when no body was sent.
  void outcome(uint64_t seq, int code, uint64_t latency_ns);
  void connectionError(std::string_view what);
  void connected() { ++connections_; }
  // The client closed its connection and is not reconnecting (nothing left to claim).
  void clientParked(LoadClient* client);

 private:
  static void onTick(uv_timer_t* t);
  static void onTimeout(uv_timer_t* t);
  static void onGrace(uv_timer_t* t);
  static void onSignal(uv_signal_t* s, int signum);
  void progress();
  void finish();  // every message has its outcome: let the connections QUIT
  void stop();    // close every handle so that uv_run returns
  void report();
  size_t openClients() const;

  SourceOptions opts_;
  uv_loop_t loop_{};
  sockaddr_storage addr_{};
  MessageBuilder builder_;
  std::string helo_name_;
  std::unique_ptr<TlsContext> tls_;
  TlsSession tls_session_;
  std::vector<std::unique_ptr<LoadClient>> clients_;
  uv_timer_t tick_{};
  uv_timer_t timeout_{};
  uv_timer_t grace_{};
  uv_signal_t sigint_{};
  uv_signal_t sigterm_{};

  uint64_t next_seq_ = 1;
  std::vector<uint64_t> retry_;
  std::vector<bool> began_;  // by seq: a transaction was started at least once
  uint64_t sent_ = 0;        // distinct messages whose transaction began
  uint64_t accepted_ = 0;
  uint64_t tempfail_ = 0;
  uint64_t rejected_ = 0;
  uint64_t errors_ = 0;
  uint64_t connections_ = 0;
  uint64_t tls_resumed_ = 0;
  uint64_t last_accepted_ = 0;
  LatencyRecorder latency_;
  std::FILE* ack_log_ = nullptr;
  uint64_t start_ns_ = 0;
  uint64_t end_ns_ = 0;
  bool finishing_ = false;
  bool stopping_ = false;
  bool timed_out_ = false;
};

}  // namespace postern
