#include "relay/inbound/recipient_probe.h"

#include <algorithm>
#include <cctype>

#include "core/ascii.h"
#include "core/log.h"
#include "core/network.h"
#include "core/stream_write.h"

namespace postern {
namespace {

constexpr size_t kMaxInput = 16 * 1024;  // unanswered reply octets held
constexpr size_t kMaxLine = 4096;
constexpr size_t kMaxLines = 100;

}  // namespace

struct RecipientProber::Probe {
  enum class Step { kConnect, kGreeting, kEhlo, kMail, kRcpt, kQuit };

  RecipientProber* owner = nullptr;
  Target target;
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_connect_t req{};
  int handles = 0;
  Step step = Step::kConnect;
  std::string in;
  std::string text;  // the reply so far
  size_t lines = 0;
  bool reported = false;
  bool closing = false;

  void send(const std::string& line) {
    std::string out = line + "\r\n";
    if (!writeOut(reinterpret_cast<uv_stream_t*>(&tcp), out, nullptr, nullptr)) {
      fail("write failed");
    }
  }

  void report(ProbeVerdict v, std::string reply) {
    if (reported) return;
    reported = true;
    if (!owner->stopped_) owner->finished(target, v, std::move(reply));
  }

  void fail(std::string_view why) {
    if (!reported) {
      logEvent(spdlog::level::info, "recipient_probe_failed",
               {{"rcpt", target.mailbox}, {"error", why}});
    }
    report(ProbeVerdict::kUnavailable, std::string(why));
    close();
  }

  void close() {
    if (closing) return;
    closing = true;
    auto done = [](uv_handle_t* h) {
      auto* p = static_cast<Probe*>(h->data);
      if (--p->handles == 0) {
        p->owner->probes_.erase(p);
        delete p;
      }
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp), done);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), done);
  }

  void onReply(int code, const std::string& reply) {
    const std::string& hostname = owner->config_->hostname;
    switch (step) {
      case Step::kGreeting:
        if (code != 220) return fail("greeting: " + reply);
        step = Step::kEhlo;
        return send("EHLO " + hostname);
      case Step::kEhlo:
        if (code != 250) return fail("EHLO: " + reply);
        step = Step::kMail;
        return send("MAIL FROM:<>");
      case Step::kMail:
        if (code != 250) return fail("MAIL: " + reply);
        step = Step::kRcpt;
        return send("RCPT TO:<" + target.mailbox + ">");
      case Step::kRcpt:
        if (code / 100 == 2) {
          report(ProbeVerdict::kExists, reply);
        } else if (code / 100 == 5) {
          report(ProbeVerdict::kUnknown, std::to_string(code) + " " + reply);
        } else {
          return fail("RCPT: " + std::to_string(code) + " " + reply);
        }
        step = Step::kQuit;
        return send("QUIT");
      case Step::kQuit:
      case Step::kConnect:
        return close();
    }
  }

  // Complete reply lines in `in`, bounded in length and number.
  void consume() {
    size_t pos = 0;
    while (!closing) {
      size_t lf = in.find('\n', pos);
      if (lf == std::string::npos) break;
      std::string_view line(in.data() + pos, lf - pos);
      pos = lf + 1;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.size() > kMaxLine || line.size() < 3 || line[0] < '2' || line[0] > '5' ||
          !std::isdigit(static_cast<unsigned char>(line[1])) ||
          !std::isdigit(static_cast<unsigned char>(line[2])) ||
          (line.size() > 3 && line[3] != ' ' && line[3] != '-') || ++lines > kMaxLines) {
        return fail("malformed reply");
      }
      if (text.size() < kMaxLine) text.append(line.substr(std::min<size_t>(line.size(), 4)));
      if (line.size() > 3 && line[3] == '-') {
        text.push_back(' ');
        continue;
      }
      const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
      std::string reply = std::move(text);
      text.clear();
      lines = 0;
      onReply(code, reply);
    }
    in.erase(0, pos);
    if (in.size() > kMaxInput) fail("reply too long");
  }
};

RecipientProber::RecipientProber(uv_loop_t* loop, std::shared_ptr<const Config> config)
    : loop_(loop),
      config_(std::move(config)),
      router_(config_->routes),
      guard_(config_->listeners, NextHopGuard::localInterfaces()),
      resolver_(loop, config_->dns) {}

RecipientProber::~RecipientProber() = default;

Status RecipientProber::init() { return resolver_.init(); }

void RecipientProber::reload(std::shared_ptr<const Config> config) {
  config_ = std::move(config);
  router_ = Router(config_->routes);
}

void RecipientProber::stop() {
  if (stopped_) return;
  stopped_ = true;
  resolver_.close();
  for (Probe* p : std::set<Probe*>(probes_)) p->close();
}

ProbeAnswer RecipientProber::check(const RecipientCheck& check, const std::string& mailbox) {
  const std::string key = asciiLower(mailbox);
  const uint64_t now = uv_now(loop_);
  if (auto it = cache_.find(key); it != cache_.end()) {
    if (now < it->second.expires) return {it->second.verdict, it->second.reply};
    cache_.erase(it);
  }
  if (stopped_) return {ProbeVerdict::kUnavailable, ""};
  // This worker's share of the relay's probe connections (each worker probes for itself).
  const size_t share = std::max<size_t>(1, check.max_probes / std::max(1u, config_->workers));
  if (!pending_.contains(key) && pending_.size() < share) start(check, mailbox);
  return {ProbeVerdict::kPending, ""};
}

void RecipientProber::start(const RecipientCheck& check, const std::string& mailbox) {
  const std::string key = asciiLower(mailbox);
  pending_.insert(key);
  const std::string domain = recipientDomain(mailbox);
  const RouteConfig* route = router_.route(domain);
  std::string name = domain;
  uint16_t port = config_->delivery.smtp_port;
  if (!route->isMx()) {
    if (std::optional<HostPort> hp = splitHostPort(route->next_hop)) {
      name = std::move(hp->host);
      port = hp->port;
    } else {
      name = route->next_hop;
    }
  }
  Target target{key, mailbox, check.positive_ttl, check.negative_ttl};
  const uint64_t timeout_ms = static_cast<uint64_t>(check.probe_timeout * 1000);
  // Called only while the resolver is open (stop() cancels it), so this is alive.
  auto resolved = [this, target, name, mx = route->isMx(), allow = route->allow_internal_mx,
                   timeout_ms](HopResolution r) {
    guard_.filter(r, name, mx, allow);
    if (r.status != HopResolution::Status::kOk || r.addresses.empty()) {
      return finished(target, ProbeVerdict::kUnavailable, r.error);
    }
    auto* p = new Probe;
    p->owner = this;
    p->target = target;
    probes_.insert(p);
    uv_tcp_init(loop_, &p->tcp);
    uv_timer_init(loop_, &p->timer);
    p->tcp.data = p->timer.data = p->req.data = p;
    p->handles = 2;
    uv_timer_start(
        &p->timer, [](uv_timer_t* t) { static_cast<Probe*>(t->data)->fail("timeout"); }, timeout_ms,
        0);
    int rc =
        uv_tcp_connect(&p->req, &p->tcp, reinterpret_cast<const sockaddr*>(&r.addresses[0].addr),
                       [](uv_connect_t* req, int status) {
                         auto* p = static_cast<Probe*>(req->data);
                         if (p->closing) return;
                         if (status < 0) return p->fail(uv_strerror(status));
                         p->step = Probe::Step::kGreeting;
                         uv_read_start(
                             reinterpret_cast<uv_stream_t*>(&p->tcp),
                             [](uv_handle_t*, size_t, uv_buf_t* buf) {
                               static thread_local char scratch[4096];
                               *buf = uv_buf_init(scratch, sizeof scratch);
                             },
                             [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                               auto* p = static_cast<Probe*>(s->data);
                               if (p->closing) return;
                               if (n < 0) return p->fail("connection closed");
                               p->in.append(buf->base, static_cast<size_t>(n));
                               p->consume();
                             });
                       });
    if (rc != 0) p->fail(uv_strerror(rc));
  };
  if (route->isMx()) {
    resolver_.resolveMx(name, port, std::move(resolved));
  } else {
    resolver_.resolveHost(name, port, std::move(resolved));
  }
}

void RecipientProber::finished(const Target& t, ProbeVerdict verdict, std::string reply) {
  pending_.erase(t.key);
  // Quoted in our own 550: kept short of a reply line's 512 octets (RFC 5321 4.5.3.1.5).
  if (reply.size() > kQuotedReply) reply.resize(kQuotedReply);
  const double ttl = verdict == ProbeVerdict::kExists    ? t.positive_ttl
                     : verdict == ProbeVerdict::kUnknown ? t.negative_ttl
                                                         : kUnavailableMs / 1000.0;
  logEvent(spdlog::level::info, "recipient_probed",
           {{"rcpt", t.mailbox},
            {"result", verdict == ProbeVerdict::kExists    ? "exists"
                       : verdict == ProbeVerdict::kUnknown ? "unknown"
                                                           : "unavailable"},
            {"reply", reply}});
  remember(t.key,
           Entry{verdict, std::move(reply), uv_now(loop_) + static_cast<uint64_t>(ttl * 1000)});
}

void RecipientProber::remember(const std::string& key, Entry e) {
  if (cache_.size() >= kMaxEntries) {
    // Bounded: drop what has expired, and if that is not enough, everything (answers are
    // only a cache; the next RCPTs probe again).
    const uint64_t now = uv_now(loop_);
    std::erase_if(cache_, [now](const auto& kv) { return kv.second.expires <= now; });
    if (cache_.size() >= kMaxEntries) cache_.clear();
  }
  cache_[key] = std::move(e);
}

}  // namespace postern
