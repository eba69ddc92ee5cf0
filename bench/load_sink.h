// postern-load sink: a fast SMTP server that accepts everything and verifies each message
// built by the source (see load_message.h).
//
// Counts messages received, unique sequence numbers, duplicates and corrupt messages
// (tag missing, checksum mismatch, or part of the message dropped), and the end-to-end
// latency from the source's DATA timestamp to arrival. Stops once --expect unique
// messages have arrived and the 250 to the last one has been written, or at --timeout,
// or on SIGINT/SIGTERM; then prints the `sink ...` result line on stdout (and to
// --report). Its last_unix_s field is the wall-clock time of the last new message, so a
// script can measure end to end from when it started the source. Exit status 0 exactly when unique
// == expect and nothing was corrupt.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <string>
#include <unordered_set>

#include "bench/load_message.h"
#include "bench/load_stats.h"

namespace postern {

class SinkSession;

struct SinkOptions {
  std::string listen = "127.0.0.1:2526";
  uint64_t expect = 0;
  double timeout_s = 120;
  std::string report;  // file for the result line; empty: stdout only
  std::string hostname = "sink.test";
  bool quiet = false;
};

class Sink {
 public:
  explicit Sink(SinkOptions opts);
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  int run();

  // The interface SinkSession uses.
  uv_loop_t* loop() { return &loop_; }
  const std::string& hostname() const { return opts_.hostname; }
  void sessionClosed(SinkSession* session) { sessions_.erase(session); }
  // Counts one complete message; true when it was the last one expected.
  bool record(const MessageVerifier& message);
  // The reply to the last expected message has been written: end the run.
  void finish() { stop(); }

 private:
  static void onConnection(uv_stream_t* server, int status);
  static void onTick(uv_timer_t* t);
  static void onTimeout(uv_timer_t* t);
  static void onSignal(uv_signal_t* s, int signum);
  bool listen();
  void progress();
  void stop();
  int report();

  SinkOptions opts_;
  uv_loop_t loop_{};
  uv_tcp_t listener_{};
  uv_timer_t tick_{};
  uv_timer_t timeout_{};
  uv_signal_t sigint_{};
  uv_signal_t sigterm_{};
  std::unordered_set<SinkSession*> sessions_;
  std::unordered_set<uint64_t> seen_;
  bool stopping_ = false;
  bool timed_out_ = false;

  uint64_t connections_ = 0;
  uint64_t received_ = 0;
  uint64_t unique_ = 0;
  uint64_t duplicates_ = 0;
  uint64_t corrupt_ = 0;
  uint64_t last_received_ = 0;
  uint64_t start_ns_ = 0;
  uint64_t first_accept_ns_ = 0;
  uint64_t last_message_ns_ = 0;
  int64_t last_unique_realtime_ns_ = 0;  // CLOCK_REALTIME of the last new message
  LatencyRecorder e2e_;
};

}  // namespace postern
