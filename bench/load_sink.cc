#include "bench/load_sink.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "bench/load_sink_session.h"
#include "core/network.h"

namespace postern {
namespace {

constexpr uint64_t kTickMs = 1000;
constexpr int kBacklog = 1024;
constexpr uint64_t kLoggedCorrupt = 10;

void closeHandle(void* handle) {
  auto* h = static_cast<uv_handle_t*>(handle);
  if (!uv_is_closing(h)) uv_close(h, nullptr);
}

std::string formatAddress(const sockaddr_storage& ss) {
  auto ip = IpAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&ss));
  if (!ip) return "?";
  uint16_t port = ss.ss_family == AF_INET6
                      ? ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port)
                      : ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  std::string host = ip->toString();
  if (ip->v6) host = "[" + host + "]";
  return host + ":" + std::to_string(port);
}

}  // namespace

Sink::Sink(SinkOptions opts) : opts_(std::move(opts)) {
  seen_.reserve(opts_.expect);
  e2e_.reserve(opts_.expect);
}

int Sink::run() {
  uv_loop_init(&loop_);
  for (uv_timer_t* t : {&tick_, &timeout_}) {
    uv_timer_init(&loop_, t);
    t->data = this;
  }
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sigterm_);
  sigint_.data = sigterm_.data = this;
  uv_tcp_init(&loop_, &listener_);
  listener_.data = this;
  start_ns_ = monotonicNs();

  if (!listen()) {
    stop();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    return 2;
  }
  uv_signal_start(&sigint_, onSignal, SIGINT);
  uv_signal_start(&sigterm_, onSignal, SIGTERM);
  if (!opts_.quiet) uv_timer_start(&tick_, onTick, kTickMs, kTickMs);
  uv_timer_start(&timeout_, onTimeout, static_cast<uint64_t>(opts_.timeout_s * 1000), 0);

  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_run(&loop_, UV_RUN_DEFAULT);  // close callbacks still queued after stop()
  uv_loop_close(&loop_);
  return report();
}

bool Sink::listen() {
  const std::optional<sockaddr_storage> addr = parseHostPort(opts_.listen);
  if (!addr) {
    std::fprintf(stderr, "postern-load sink: --listen %s: expected numeric HOST:PORT\n",
                 opts_.listen.c_str());
    return false;
  }
  int r = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&*addr), 0);
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), kBacklog, onConnection);
  if (r != 0) {
    std::fprintf(stderr, "postern-load sink: listen on %s: %s\n", opts_.listen.c_str(),
                 uv_strerror(r));
    return false;
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  std::printf("sink listening %s\n", formatAddress(bound).c_str());
  std::fflush(stdout);
  return true;
}

void Sink::onConnection(uv_stream_t* server, int status) {
  auto* sink = static_cast<Sink*>(server->data);
  if (status < 0 || sink->stopping_) return;
  auto* session = new SinkSession(*sink);  // freed by its close callback
  sink->sessions_.insert(session);
  if (session->start(server)) {
    if (sink->first_accept_ns_ == 0) sink->first_accept_ns_ = monotonicNs();
    ++sink->connections_;
  }
}

bool Sink::record(const MessageVerifier& message) {
  ++received_;
  last_message_ns_ = monotonicNs();
  if (!message.intact()) {
    ++corrupt_;
    if (!opts_.quiet && corrupt_ <= kLoggedCorrupt) {
      if (message.tagged()) {
        std::fprintf(stderr, "postern-load sink: corrupt message seq=%llu (checksum mismatch)\n",
                     static_cast<unsigned long long>(message.tag().seq));
      } else {
        std::fprintf(stderr, "postern-load sink: corrupt message (no X-Postern-Load tag)\n");
      }
    }
    return false;
  }
  if (!seen_.insert(message.tag().seq).second) {
    ++duplicates_;
    return false;
  }
  ++unique_;
  int64_t now = realtimeNs();
  last_unique_realtime_ns_ = now;
  int64_t delta = now - message.tag().ts_ns;
  e2e_.add(delta > 0 ? static_cast<uint64_t>(delta) : 0);
  return unique_ == opts_.expect;
}

void Sink::stop() {
  if (stopping_) return;
  stopping_ = true;
  // Sessions remove themselves from the set in their close callbacks, which run later.
  std::vector<SinkSession*> open(sessions_.begin(), sessions_.end());
  for (SinkSession* s : open) s->close();
  for (void* h :
       {static_cast<void*>(&listener_), static_cast<void*>(&tick_), static_cast<void*>(&timeout_),
        static_cast<void*>(&sigint_), static_cast<void*>(&sigterm_)}) {
    closeHandle(h);
  }
}

void Sink::onTick(uv_timer_t* t) { static_cast<Sink*>(t->data)->progress(); }

void Sink::onTimeout(uv_timer_t* t) {
  auto* sink = static_cast<Sink*>(t->data);
  sink->timed_out_ = true;
  std::fprintf(stderr, "postern-load sink: timeout after %.0f s\n", sink->opts_.timeout_s);
  sink->stop();
}

void Sink::onSignal(uv_signal_t* sig, int signum) {
  std::fprintf(stderr, "postern-load sink: stopped by signal %d\n", signum);
  static_cast<Sink*>(sig->data)->stop();
}

void Sink::progress() {
  double t = static_cast<double>(monotonicNs() - start_ns_) / 1e9;
  std::fprintf(
      stderr,
      "sink %5.1fs: received %llu unique %llu/%llu duplicates %llu corrupt %llu "
      "connections %llu open %zu, %llu msgs/s\n",
      t, static_cast<unsigned long long>(received_), static_cast<unsigned long long>(unique_),
      static_cast<unsigned long long>(opts_.expect), static_cast<unsigned long long>(duplicates_),
      static_cast<unsigned long long>(corrupt_), static_cast<unsigned long long>(connections_),
      sessions_.size(), static_cast<unsigned long long>(received_ - last_received_));
  last_received_ = received_;
}

int Sink::report() {
  double elapsed = first_accept_ns_ != 0 && last_message_ns_ > first_accept_ns_
                       ? static_cast<double>(last_message_ns_ - first_accept_ns_) / 1e9
                       : 0;
  char line[512];
  std::snprintf(
      line, sizeof line,
      "sink received=%llu unique=%llu duplicates=%llu corrupt=%llu elapsed_s=%.3f "
      "p50_ms=%.3f p99_ms=%.3f max_ms=%.3f last_unix_s=%.6f\n",
      static_cast<unsigned long long>(received_), static_cast<unsigned long long>(unique_),
      static_cast<unsigned long long>(duplicates_), static_cast<unsigned long long>(corrupt_),
      elapsed, e2e_.percentileMs(0.5), e2e_.percentileMs(0.99), e2e_.maxMs(),
      static_cast<double>(last_unique_realtime_ns_) / 1e9);
  double rate = elapsed > 0 ? static_cast<double>(unique_) / elapsed : 0;
  std::printf(
      "postern-load sink: %llu of %llu expected messages, %.1f msgs/s, %llu connections%s\n",
      static_cast<unsigned long long>(unique_), static_cast<unsigned long long>(opts_.expect), rate,
      static_cast<unsigned long long>(connections_), timed_out_ ? ", TIMED OUT" : "");
  std::fputs(line, stdout);
  std::fflush(stdout);
  int status = unique_ == opts_.expect && corrupt_ == 0 ? 0 : 1;
  if (!opts_.report.empty()) {
    FILE* f = std::fopen(opts_.report.c_str(), "w");
    bool ok = f != nullptr;
    if (f != nullptr) {
      ok = std::fputs(line, f) >= 0;
      ok = std::fclose(f) == 0 && ok;
    }
    if (!ok) {
      std::perror(("postern-load sink: " + opts_.report).c_str());
      status = 1;
    }
  }
  return status;
}

}  // namespace postern
