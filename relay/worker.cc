#include "relay/worker.h"

#include "core/log.h"
#include "relay/session.h"

namespace postern {
namespace {

// How long a drain waits for sessions and deliveries before closing them regardless.
constexpr uint64_t kDrainMs = 10000;

}  // namespace

Worker::Worker(const Config& config, unsigned index) : config_(config), index_(index) {
  uv_loop_init(&loop_);
}

Worker::~Worker() {
  spool_.reset();
  uv_loop_close(&loop_);
}

std::string Worker::start() {
  spool_ = std::make_unique<Spool>(&loop_, config_.spool_dir + "/w" + std::to_string(index_));
  delivery_ = std::make_unique<Delivery>(&loop_, *spool_, config_);
  if (std::string err = delivery_->init(); !err.empty()) return err;

  std::vector<SpooledMessage> recovered;
  if (std::string err = spool_->open(recovered); !err.empty()) return "spool: " + err;
  logEvent(spdlog::level::info, "spool_recovered",
           {{"dir", config_.spool_dir}, {"messages", uint64_t{recovered.size()}}});
  for (auto& m : recovered) delivery_->enqueue(std::move(m));

  if (!config_.tls.certificate.empty()) {
    std::string err;
    tls_ = TlsContext::create(config_.tls.certificate, config_.tls.private_key, err);
    if (!tls_) return "tls: " + err;
  }

  for (const auto& l : config_.listeners) {
    sockaddr_storage addr;
    parseHostPort(l.address, addr);
    auto* listener = new Listener{{}, this, &l};
    uv_tcp_init(&loop_, &listener->tcp);
    listener->tcp.data = listener;
    listeners_.push_back(listener);
    int rc = uv_tcp_bind(&listener->tcp, reinterpret_cast<sockaddr*>(&addr), 0);
    if (rc == 0) {
      rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener->tcp), 1024, onConnection);
    }
    if (rc != 0) return "listen " + l.address + ": " + uv_strerror(rc);
    logEvent(spdlog::level::info, "listening", {{"address", l.address}});
  }

  uv_signal_init(&loop_, &sigterm_);
  sigterm_.data = this;
  uv_signal_start(&sigterm_, onSignal, SIGTERM);
  uv_signal_init(&loop_, &sigint_);
  sigint_.data = this;
  uv_signal_start(&sigint_, onSignal, SIGINT);
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
  return "";
}

void Worker::run() {
  uv_run(&loop_, UV_RUN_DEFAULT);
  closeListeners();  // still open only when start() failed half-way
  // Anything still open (a start() that failed half-way) is closed here.
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

void Worker::closeListeners() {
  for (Listener* l : listeners_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp),
             [](uv_handle_t* h) { delete static_cast<Listener*>(h->data); });
  }
  listeners_.clear();
}

bool Worker::admitConnection(const IpAddress& ip) {
  size_t& n = per_ip_[ip.toString()];
  if (connections_ >= config_.limits.connections || n >= config_.limits.connections_per_ip) {
    if (n == 0) per_ip_.erase(ip.toString());
    return false;
  }
  ++n;
  ++connections_;
  return true;
}

void Worker::releaseConnection(const IpAddress& ip) {
  auto it = per_ip_.find(ip.toString());
  if (it != per_ip_.end() && --it->second == 0) per_ip_.erase(it);
  --connections_;
}

void Worker::onSignal(uv_signal_t* h, int signum) {
  auto* w = static_cast<Worker*>(h->data);
  logEvent(spdlog::level::info, "shutdown", {{"signal", signum}});
  w->stop();
}

void Worker::stop() {
  if (stopping_) return;
  stopping_ = true;
  closeListeners();
  uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
  for (Session* s : std::set<Session*>(sessions_)) s->shutdown();
  delivery_->stop();
  drain_deadline_ = uv_now(&loop_) + kDrainMs;
  uv_timer_start(&drain_timer_, onDrainTimer, 20, 20);
}

void Worker::onDrainTimer(uv_timer_t* t) {
  auto* w = static_cast<Worker*>(t->data);
  bool past = uv_now(&w->loop_) >= w->drain_deadline_;
  if (past) {
    for (Session* s : std::set<Session*>(w->sessions_)) s->shutdown();
  }
  if ((w->sessions_.empty() && !w->spool_->busy() && w->delivery_->done()) || past) {
    if (w->spool_->busy()) return;  // a commit in flight must finish: it may hold a 250
    uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
    w->spool_->close();
  }
}

}  // namespace postern
