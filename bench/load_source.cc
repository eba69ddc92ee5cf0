#include "bench/load_source.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "bench/load_client.h"
#include "core/network.h"

namespace postern {
namespace {

constexpr uint64_t kTickMs = 1000;
constexpr uint64_t kGraceMs = 5000;  // for connections to QUIT once everything is answered
constexpr uint64_t kLoggedErrors = 10;

void closeHandle(void* handle) {
  auto* h = static_cast<uv_handle_t*>(handle);
  if (!uv_is_closing(h)) uv_close(h, nullptr);
}

}  // namespace

Source::Source(SourceOptions opts) : opts_(std::move(opts)), builder_(opts_.message) {
  size_t at = opts_.message.from.rfind('@');
  helo_name_ = at == std::string::npos || at + 1 == opts_.message.from.size()
                   ? std::string("postern-load.test")
                   : opts_.message.from.substr(at + 1);
  latency_.reserve(opts_.messages);
  began_.resize(opts_.messages + 1);
}

Source::~Source() = default;

int Source::run() {
  const std::optional<sockaddr_storage> addr = parseHostPort(opts_.server);
  if (!addr) {
    std::fprintf(stderr, "postern-load source: --server %s: expected numeric HOST:PORT\n",
                 opts_.server.c_str());
    return 2;
  }
  addr_ = *addr;
  if (opts_.starttls) {
    Result<std::unique_ptr<TlsContext>> tls = TlsContext::createUnverifiedClient();
    if (!tls) {
      std::fprintf(stderr, "postern-load source: --starttls: %s\n", tls.error().c_str());
      return 2;
    }
    tls_ = std::move(*tls);
  }
  if (!opts_.ack_log.empty()) {
    ack_log_ = std::fopen(opts_.ack_log.c_str(), "w");
    if (ack_log_ == nullptr) {
      std::fprintf(stderr, "postern-load source: --ack-log %s: %s\n", opts_.ack_log.c_str(),
                   std::strerror(errno));
      return 2;
    }
  }
  uv_loop_init(&loop_);
  for (uv_timer_t* t : {&tick_, &timeout_, &grace_}) {
    uv_timer_init(&loop_, t);
    t->data = this;
  }
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sigterm_);
  sigint_.data = sigterm_.data = this;
  uv_signal_start(&sigint_, onSignal, SIGINT);
  uv_signal_start(&sigterm_, onSignal, SIGTERM);

  start_ns_ = monotonicNs();
  auto n = static_cast<size_t>(
      std::min<uint64_t>(static_cast<uint64_t>(opts_.concurrency), opts_.messages));
  for (size_t i = 0; i < n; ++i) clients_.push_back(std::make_unique<LoadClient>(*this));
  for (auto& c : clients_) c->resume();
  if (!opts_.quiet) uv_timer_start(&tick_, onTick, kTickMs, kTickMs);
  uv_timer_start(&timeout_, onTimeout, static_cast<uint64_t>(opts_.timeout_s * 1000), 0);

  uv_run(&loop_, UV_RUN_DEFAULT);
  // stop() closed every handle; one more turn runs any close callbacks still queued.
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  if (end_ns_ == 0) end_ns_ = monotonicNs();
  report();
  bool ack_log_ok = true;
  if (ack_log_ != nullptr) {
    ack_log_ok = std::ferror(ack_log_) == 0;
    ack_log_ok = std::fclose(ack_log_) == 0 && ack_log_ok;
    ack_log_ = nullptr;
    if (!ack_log_ok) {
      std::fprintf(stderr, "postern-load source: --ack-log %s: write failed\n",
                   opts_.ack_log.c_str());
    }
  }
  return accepted_ == opts_.messages && ack_log_ok ? 0 : 1;
}

bool Source::claim(uint64_t& seq) {
  if (stopping_ || finishing_) return false;
  if (!retry_.empty()) {
    seq = retry_.back();
    retry_.pop_back();
    return true;
  }
  if (next_seq_ > opts_.messages) return false;
  seq = next_seq_++;
  return true;
}

void Source::began(uint64_t seq) {
  if (!began_[seq]) {
    began_[seq] = true;
    ++sent_;
  }
}

void Source::requeue(uint64_t seq) {
  if (stopping_) return;
  retry_.push_back(seq);
  // A client that ran out of work may have closed its connection: give it this one.
  for (auto& c : clients_) {
    if (c->parked()) {
      c->resume();
      break;
    }
  }
}

void Source::outcome(uint64_t seq, int code, uint64_t latency_ns) {
  if (code / 100 == 2) {
    ++accepted_;
    if (ack_log_ != nullptr) {
      // Flushed per line: a reader following the file sees each 250 as it arrives.
      std::fprintf(ack_log_, "%llu\n", static_cast<unsigned long long>(seq));
      std::fflush(ack_log_);
    }
  } else if (code / 100 == 4) {
    ++tempfail_;
  } else {
    ++rejected_;
  }
  if (latency_ns > 0) latency_.add(latency_ns);
  if (accepted_ + tempfail_ + rejected_ == opts_.messages) finish();
}

void Source::obtainedSession(TlsSession session) {
  if (session) tls_session_ = std::move(session);
}

void Source::connectionError(std::string_view what) {
  // Once every message is answered, a peer that goes away early costs nothing.
  if (finishing_ || stopping_) return;
  ++errors_;
  if (opts_.quiet) return;
  if (errors_ <= kLoggedErrors) {
    std::fprintf(stderr, "postern-load source: connection error: %.*s\n",
                 static_cast<int>(what.size()), what.data());
  } else if (errors_ == kLoggedErrors + 1) {
    std::fprintf(stderr, "postern-load source: further connection errors not shown\n");
  }
}

void Source::clientParked(LoadClient* /*client*/) {
  if ((finishing_ || stopping_) && openClients() == 0) stop();
}

size_t Source::openClients() const {
  return static_cast<size_t>(
      std::count_if(clients_.begin(), clients_.end(), [](const auto& c) { return !c->closed(); }));
}

void Source::finish() {
  finishing_ = true;
  end_ns_ = monotonicNs();
  uv_timer_stop(&tick_);
  uv_timer_start(&grace_, onGrace, kGraceMs, 0);
  if (openClients() == 0) stop();
}

void Source::stop() {
  if (stopping_) return;
  stopping_ = true;
  for (auto& c : clients_) c->shut();
  for (void* h :
       {static_cast<void*>(&tick_), static_cast<void*>(&timeout_), static_cast<void*>(&grace_),
        static_cast<void*>(&sigint_), static_cast<void*>(&sigterm_)}) {
    closeHandle(h);
  }
}

void Source::onTick(uv_timer_t* t) { static_cast<Source*>(t->data)->progress(); }

void Source::onTimeout(uv_timer_t* t) {
  auto* s = static_cast<Source*>(t->data);
  if (s->end_ns_ == 0) s->end_ns_ = monotonicNs();
  s->timed_out_ = true;
  std::fprintf(stderr, "postern-load source: timeout after %.0f s\n", s->opts_.timeout_s);
  s->stop();
}

void Source::onGrace(uv_timer_t* t) { static_cast<Source*>(t->data)->stop(); }

void Source::onSignal(uv_signal_t* sig, int signum) {
  auto* s = static_cast<Source*>(sig->data);
  if (s->end_ns_ == 0) s->end_ns_ = monotonicNs();
  std::fprintf(stderr, "postern-load source: stopped by signal %d\n", signum);
  s->stop();
}

void Source::progress() {
  double t = static_cast<double>(monotonicNs() - start_ns_) / 1e9;
  std::fprintf(stderr,
               "source %5.1fs: accepted %llu/%llu tempfail %llu rejected %llu errors %llu "
               "connections %llu open %zu, %llu msgs/s\n",
               t, static_cast<unsigned long long>(accepted_),
               static_cast<unsigned long long>(opts_.messages),
               static_cast<unsigned long long>(tempfail_),
               static_cast<unsigned long long>(rejected_), static_cast<unsigned long long>(errors_),
               static_cast<unsigned long long>(connections_), openClients(),
               static_cast<unsigned long long>(accepted_ - last_accepted_));
  last_accepted_ = accepted_;
}

void Source::report() {
  double elapsed = static_cast<double>(end_ns_ - start_ns_) / 1e9;
  double rate = elapsed > 0 ? static_cast<double>(accepted_) / elapsed : 0;
  const char* mode = opts_.pipelining > 0 ? "on" : opts_.pipelining < 0 ? "off" : "auto";
  auto ull = [](uint64_t v) { return static_cast<unsigned long long>(v); };
  std::printf(
      "postern-load source: %llu messages of ~%zu bytes to %s, %d recipient(s), "
      "concurrency %d, %d per connection, pipelining %s%s%s%s\n",
      ull(opts_.messages), opts_.message.size, opts_.server.c_str(), opts_.message.recipients,
      opts_.concurrency, opts_.messages_per_connection, mode, opts_.starttls ? ", STARTTLS" : "",
      opts_.tls_resume ? " resuming sessions" : "", timed_out_ ? ", TIMED OUT" : "");
  std::printf("  accepted %llu  tempfail %llu  rejected %llu  unanswered %llu\n", ull(accepted_),
              ull(tempfail_), ull(rejected_),
              ull(opts_.messages - accepted_ - tempfail_ - rejected_));
  std::printf("  connections %llu  connection errors %llu\n", ull(connections_), ull(errors_));
  if (opts_.starttls) std::printf("  TLS handshakes resumed %llu\n", ull(tls_resumed_));
  std::printf("  elapsed %.3f s  %.1f msgs/s\n", elapsed, rate);
  std::printf(
      "  latency end-of-data to reply (ms): p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max "
      "%.3f  (%zu samples)\n",
      latency_.percentileMs(0.5), latency_.percentileMs(0.9), latency_.percentileMs(0.99),
      latency_.percentileMs(0.999), latency_.maxMs(), latency_.count());
  std::printf(
      "result sent=%llu accepted=%llu tempfail=%llu rejected=%llu errors=%llu elapsed_s=%.3f "
      "msgs_per_s=%.1f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f",
      ull(sent_), ull(accepted_), ull(tempfail_), ull(rejected_), ull(errors_), elapsed, rate,
      latency_.percentileMs(0.5), latency_.percentileMs(0.99), latency_.percentileMs(0.999),
      latency_.maxMs());
  if (opts_.starttls) std::printf(" tls_resumed=%llu", ull(tls_resumed_));
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace postern
