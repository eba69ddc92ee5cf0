#include "relay/routing/resolver.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>

namespace postern {
namespace {

// Name-error and no-data answers are remembered briefly; they carry no usable TTL here.
constexpr uint64_t kNegativeTtlMs = 60'000;
// How many addresses one delivery attempt tries at most (Postfix: smtp_mx_address_limit).
constexpr size_t kMaxAddresses = 10;

std::once_flag g_ares_init;

bool isTemporary(int status) { return status != ARES_ENOTFOUND && status != ARES_ENODATA; }

// Skips a (possibly compressed) name; false if it runs off the message.
bool skipName(const unsigned char* msg, int len, const unsigned char*& p) {
  char* name = nullptr;
  long used = 0;
  if (ares_expand_name(p, msg, len, &name, &used) != ARES_SUCCESS) return false;
  ares_free_string(name);
  p += used;
  return p <= msg + len;
}

uint16_t be16(const unsigned char* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

constexpr int kTypeTlsa = 52;  // RFC 6698 (not in every arpa/nameser.h)
constexpr unsigned char kFlagAd = 0x20;  // in the header's fourth octet

bool parseIp(const std::string& host, sockaddr_storage& out) {
  std::memset(&out, 0, sizeof out);
  auto* in4 = reinterpret_cast<sockaddr_in*>(&out);
  if (inet_pton(AF_INET, host.c_str(), &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    return true;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
  if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    return true;
  }
  return false;
}

void setPort(sockaddr_storage& ss, uint16_t port) {
  if (ss.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
  }
}

}  // namespace

void orderMx(std::vector<MxRecord>& mx, std::minstd_rand& rng) {
  std::shuffle(mx.begin(), mx.end(), rng);
  std::stable_sort(mx.begin(), mx.end(), [](const MxRecord& a, const MxRecord& b) {
    return a.preference < b.preference;
  });
}

int responseStatus(const unsigned char* msg, int len) {
  if (len < NS_HFIXEDSZ) return ARES_EBADRESP;
  switch (msg[3] & 0x0f) {  // RCODE
    case ns_r_noerror:
      return be16(msg + 6) > 0 ? ARES_SUCCESS : ARES_ENODATA;
    case ns_r_formerr:
      return ARES_EFORMERR;
    case ns_r_servfail:
      return ARES_ESERVFAIL;
    case ns_r_nxdomain:
      return ARES_ENOTFOUND;
    case ns_r_notimpl:
      return ARES_ENOTIMP;
    case ns_r_refused:
      return ARES_EREFUSED;
    default:
      return ARES_EBADRESP;
  }
}

namespace {

// Calls take(type, ttl, rdata, rdlen) for each answer record whole within the message,
// until it answers false or the message ends.
template <typename Take>
void forEachAnswer(const unsigned char* msg, int len, Take take) {
  if (len < NS_HFIXEDSZ) return;
  const unsigned qdcount = be16(msg + 4);
  const unsigned ancount = be16(msg + 6);
  const unsigned char* p = msg + NS_HFIXEDSZ;
  const unsigned char* end = msg + len;
  for (unsigned i = 0; i < qdcount; ++i) {
    if (!skipName(msg, len, p) || end - p < 4) return;
    p += 4;
  }
  for (unsigned i = 0; i < ancount; ++i) {
    if (!skipName(msg, len, p) || end - p < 10) return;
    const uint16_t type = be16(p);
    const uint32_t ttl = static_cast<uint32_t>(p[4]) << 24 | static_cast<uint32_t>(p[5]) << 16 |
                         static_cast<uint32_t>(p[6]) << 8 | p[7];
    const uint16_t rdlen = be16(p + 8);
    p += 10;
    if (end - p < rdlen || !take(type, ttl, p, rdlen)) return;
    p += rdlen;
  }
}

}  // namespace

std::vector<TlsaRecord> parseTlsaAnswer(const unsigned char* msg, int len) {
  std::vector<TlsaRecord> out;
  forEachAnswer(msg, len, [&](uint16_t type, uint32_t, const unsigned char* rd, uint16_t rdlen) {
    if (type != kTypeTlsa) return true;
    if (rdlen < 3) return false;
    out.push_back(TlsaRecord{rd[0], rd[1], rd[2],
                             std::string(reinterpret_cast<const char*>(rd + 3), rdlen - 3u)});
    return true;
  });
  return out;
}

std::vector<std::string> parseTxtAnswer(const unsigned char* msg, int len) {
  std::vector<std::string> out;
  forEachAnswer(msg, len, [&](uint16_t type, uint32_t, const unsigned char* rd, uint16_t rdlen) {
    if (type != ns_t_txt) return true;
    std::string text;  // <length><octets>, repeated (RFC 1035 §3.3.14)
    for (uint16_t i = 0; i < rdlen;) {
      const uint8_t n = rd[i++];
      if (n > rdlen - i) return false;
      text.append(reinterpret_cast<const char*>(rd + i), n);
      i = static_cast<uint16_t>(i + n);
    }
    out.push_back(std::move(text));
    return true;
  });
  return out;
}

int64_t dnsAnswerMinTtl(const unsigned char* msg, int len) {
  int64_t min_ttl = -1;
  forEachAnswer(msg, len, [&](uint16_t, uint32_t ttl, const unsigned char*, uint16_t) {
    // RFC 2181 §8: a TTL with the top bit set is treated as zero.
    const int64_t t = ttl > 0x7fffffffu ? 0 : ttl;
    if (min_ttl < 0 || t < min_ttl) min_ttl = t;
    return true;
  });
  return min_ttl;
}

struct Resolver::Query {
  Resolver* resolver;
  std::string name;
  int type;
  AnswerCallback cb;
};

Resolver::Resolver(uv_loop_t* loop, const DnsConfig& config)
    : loop_(loop), config_(config), rng_(std::random_device{}()) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
}

Resolver::~Resolver() {
  closed_ = true;  // the loop's handles are gone by now; c-ares must not touch them
  if (channel_ != nullptr) ares_destroy(channel_);
}

Status Resolver::init() {
  std::call_once(g_ares_init, [] { ares_library_init(ARES_LIB_INIT_ALL); });
  ares_options opts{};
  opts.sock_state_cb = onSockState;
  opts.sock_state_cb_data = this;
  opts.timeout = static_cast<int>(config_.timeout * 1000);
  opts.tries = 2;
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
  int rc = ares_init_options(&channel_, &opts, mask);
  if (rc != ARES_SUCCESS) return fail(std::string("c-ares: ") + ares_strerror(rc));
  if (!config_.servers.empty()) {
    std::string csv;
    for (const auto& s : config_.servers) csv += (csv.empty() ? "" : ",") + s;
    rc = ares_set_servers_ports_csv(channel_, csv.c_str());
    if (rc != ARES_SUCCESS) return fail("dns.servers \"" + csv + "\": " + ares_strerror(rc));
  }
  return {};
}

void Resolver::query(const std::string& name, int type, AnswerCallback cb) {
  auto key = std::make_pair(name, type);
  if (auto it = cache_.find(key); it != cache_.end()) {
    if (it->second.expires > uv_now(loop_)) return cb(it->second);
    cache_.erase(it);
  }
  auto* q = new Query{this, name, type, std::move(cb)};
  // The query is made here rather than by ares_query() so that it can ask for the AD bit
  // (RFC 6840 §5.7: AD set in a query asks a validating resolver to say whether it
  // validated the answer).
  unsigned char* buf = nullptr;
  int len = 0;
  const int rc = ares_create_query(name.c_str(), ns_c_in, type, 0, 1, &buf, &len, 0);
  if (rc != ARES_SUCCESS) {
    std::unique_ptr<Query> owned(q);
    Answer a;
    a.status = rc;
    return owned->cb(a);
  }
  if (config_.dnssec) buf[3] |= kFlagAd;
  ares_send(channel_, buf, len, onAnswer, q);
  ares_free_string(buf);
  rearmTimer();
}

void Resolver::onAnswer(void* arg, int status, int, unsigned char* abuf, int alen) {
  std::unique_ptr<Query> q(static_cast<Query*>(arg));
  Resolver* r = q->resolver;
  if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED || r->closed_) return;
  Answer a;
  // ares_send() answers ARES_SUCCESS for any response: its RCODE and answer count say more.
  if (status == ARES_SUCCESS) status = responseStatus(abuf, alen);
  a.status = status;
  a.secure = r->config_.dnssec && abuf != nullptr && alen >= NS_HFIXEDSZ &&
             (abuf[3] & kFlagAd) != 0;
  int64_t ttl = -1;
  if (status == ARES_SUCCESS && q->type == kTypeTlsa) {
    a.tlsa = parseTlsaAnswer(abuf, alen);
    if (a.tlsa.empty()) a.status = ARES_ENODATA;  // a CNAME alone, or other types
    ttl = dnsAnswerMinTtl(abuf, alen);
  } else if (status == ARES_SUCCESS && q->type == ns_t_txt) {
    a.txt = parseTxtAnswer(abuf, alen);
    if (a.txt.empty()) a.status = ARES_ENODATA;
    ttl = dnsAnswerMinTtl(abuf, alen);
  } else if (status == ARES_SUCCESS && q->type == ns_t_mx) {
    ares_mx_reply* mx = nullptr;
    a.status = ares_parse_mx_reply(abuf, alen, &mx);
    for (ares_mx_reply* m = mx; m != nullptr; m = m->next) {
      a.mx.push_back({m->host, m->priority});
    }
    if (mx != nullptr) ares_free_data(mx);
    ttl = dnsAnswerMinTtl(abuf, alen);
  } else if (status == ARES_SUCCESS) {
    hostent* he = nullptr;
    if (q->type == ns_t_a) {
      ares_addrttl ttls[32];
      int n = 32;
      a.status = ares_parse_a_reply(abuf, alen, &he, ttls, &n);
      for (int i = 0; i < n; ++i) {
        sockaddr_storage ss{};
        auto* in4 = reinterpret_cast<sockaddr_in*>(&ss);
        in4->sin_family = AF_INET;
        in4->sin_addr = ttls[i].ipaddr;
        a.ips.push_back(ss);
        if (ttl < 0 || ttls[i].ttl < ttl) ttl = ttls[i].ttl;
      }
    } else {
      ares_addr6ttl ttls[32];
      int n = 32;
      a.status = ares_parse_aaaa_reply(abuf, alen, &he, ttls, &n);
      for (int i = 0; i < n; ++i) {
        sockaddr_storage ss{};
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
        in6->sin6_family = AF_INET6;
        std::memcpy(&in6->sin6_addr, &ttls[i].ip6addr, sizeof in6->sin6_addr);
        a.ips.push_back(ss);
        if (ttl < 0 || ttls[i].ttl < ttl) ttl = ttls[i].ttl;
      }
    }
    if (he != nullptr) ares_free_hostent(he);
    if (a.status == ARES_SUCCESS && a.ips.empty()) a.status = ARES_ENODATA;
  }
  uint64_t ttl_ms = kNegativeTtlMs;
  if (a.status == ARES_SUCCESS) ttl_ms = ttl < 0 ? 0 : static_cast<uint64_t>(ttl) * 1000;
  ttl_ms = std::min(ttl_ms, static_cast<uint64_t>(r->config_.max_ttl * 1000));
  a.expires = uv_now(r->loop_) + ttl_ms;
  // Answers and name errors are kept for their TTL; failures are asked again.
  const bool answer = a.status == ARES_SUCCESS || !isTemporary(a.status);
  if (answer && ttl_ms > 0) r->cache_[{q->name, q->type}] = a;
  q->cb(a);
}

void Resolver::addresses(
    const std::string& host, uint16_t port,
    std::function<void(int status, std::vector<HopAddress>, uint64_t ttl)> cb) {
  sockaddr_storage literal;
  if (parseIp(host, literal)) {
    setPort(literal, port);
    return cb(ARES_SUCCESS, {HopAddress{host, literal, false}}, UINT64_MAX);
  }
  // A and AAAA in parallel; the callback runs when both have answered.
  struct Pending {
    int remaining = 2;
    int status[2] = {ARES_SUCCESS, ARES_SUCCESS};
    std::vector<HopAddress> found[2];
    uint64_t expires = UINT64_MAX;
    bool secure = true;  // both answers (records or a denial) were
  };
  auto p = std::make_shared<Pending>();
  auto done = [this, p, host, port, cb](int slot, const Answer& a) {
    p->status[slot] = a.status;
    p->expires = std::min(p->expires, a.expires);
    p->secure = p->secure && a.secure;
    for (auto ss : a.ips) {
      setPort(ss, port);
      p->found[slot].push_back({host, ss, false});
    }
    if (--p->remaining > 0) return;
    std::vector<HopAddress> all = std::move(p->found[0]);  // IPv4 first
    all.insert(all.end(), p->found[1].begin(), p->found[1].end());
    for (HopAddress& h : all) h.secure = p->secure;
    int status = ARES_SUCCESS;
    if (all.empty()) {
      if (isTemporary(p->status[0]) || isTemporary(p->status[1])) {
        status = isTemporary(p->status[0]) ? p->status[0] : p->status[1];
      } else {
        status = p->status[0] == ARES_ENOTFOUND && p->status[1] == ARES_ENOTFOUND
                     ? ARES_ENOTFOUND
                     : ARES_ENODATA;
      }
    }
    uint64_t now = uv_now(loop_);
    cb(status, std::move(all), p->expires > now ? p->expires - now : 0);
  };
  query(host, ns_t_a, [done](const Answer& a) { done(0, a); });
  query(host, ns_t_aaaa, [done](const Answer& a) { done(1, a); });
}

void Resolver::resolveHost(const std::string& host, uint16_t port, Callback cb) {
  addresses(host, port, [host, cb](int status, std::vector<HopAddress> found, uint64_t ttl) {
    HopResolution r;
    r.ttl_ms = ttl;
    if (status == ARES_SUCCESS) {
      r.addresses = std::move(found);
    } else if (isTemporary(status)) {
      r.status = HopResolution::Status::kTemporary;
      r.error = "4.4.3 address lookup for " + host + " failed: " + ares_strerror(status);
    } else {
      r.status = HopResolution::Status::kPermanent;
      r.error = "5.4.4 host " + host + " has no address";
    }
    cb(std::move(r));
  });
}

void Resolver::resolveMx(const std::string& domain, uint16_t port, Callback cb) {
  query(domain, ns_t_mx, [this, domain, port, cb](const Answer& a) {
    std::vector<MxRecord> hosts;
    if (a.status == ARES_ENOTFOUND) {
      HopResolution r;
      r.status = HopResolution::Status::kPermanent;
      r.error = "5.1.2 domain " + domain + " does not exist";
      return cb(std::move(r));
    }
    if (a.status == ARES_ENODATA) {
      hosts.push_back({domain, 0});  // implicit MX (RFC 5321 §5.1)
    } else if (a.status != ARES_SUCCESS) {
      HopResolution r;
      r.status = HopResolution::Status::kTemporary;
      r.error = "4.4.3 MX lookup for " + domain + " failed: " + ares_strerror(a.status);
      return cb(std::move(r));
    } else {
      for (const auto& m : a.mx) {
        if (!m.host.empty() && m.host != ".") hosts.push_back(m);
      }
      if (hosts.empty()) {
        HopResolution r;  // RFC 7505: the domain accepts no mail
        r.status = HopResolution::Status::kPermanent;
        r.error = "5.1.10 domain " + domain + " accepts no mail (null MX)";
        return cb(std::move(r));
      }
      orderMx(hosts, rng_);
    }
    // Every host's addresses, gathered in MX order once all have answered.
    struct Gather {
      size_t remaining;
      std::vector<std::vector<HopAddress>> per_host;
      std::vector<int> status;
      uint64_t ttl = UINT64_MAX;
    };
    auto g = std::make_shared<Gather>();
    g->remaining = hosts.size();
    g->per_host.resize(hosts.size());
    g->status.resize(hosts.size(), ARES_SUCCESS);
    uint64_t now = uv_now(loop_);
    g->ttl = a.expires > now ? a.expires - now : 0;
    // An insecure MX answer (or an implicit MX from an insecure denial) makes every host
    // under it insecure, whatever its own addresses' answers were (RFC 7672 §2.2.1).
    const bool mx_secure = a.secure;
    for (size_t i = 0; i < hosts.size(); ++i) {
      addresses(hosts[i].host, port,
                [g, i, cb, domain, mx_secure](int status, std::vector<HopAddress> found,
                                               uint64_t ttl) {
                  for (HopAddress& h : found) h.secure = h.secure && mx_secure;
                  g->per_host[i] = std::move(found);
                  g->status[i] = status;
                  g->ttl = std::min(g->ttl, ttl);
                  if (--g->remaining > 0) return;
                  HopResolution r;
                  r.ttl_ms = g->ttl;
                  bool temporary = false;
                  for (size_t h = 0; h < g->per_host.size(); ++h) {
                    temporary |= isTemporary(g->status[h]) && g->status[h] != ARES_SUCCESS;
                    for (auto& addr : g->per_host[h]) {
                      if (r.addresses.size() < kMaxAddresses) r.addresses.push_back(addr);
                    }
                  }
                  if (r.addresses.empty()) {
                    r.status = temporary ? HopResolution::Status::kTemporary
                                         : HopResolution::Status::kPermanent;
                    r.error = temporary ? "4.4.3 address lookup for the MX hosts of " + domain +
                                              " failed"
                                        : "5.4.4 no MX host of " + domain + " has an address";
                  }
                  cb(std::move(r));
                });
    }
  });
}

void Resolver::resolveTlsa(const std::string& host, uint16_t port,
                           std::function<void(TlsaLookup)> cb) {
  const std::string name = "_" + std::to_string(port) + "._tcp." + host;
  query(name, kTypeTlsa, [name, cb = std::move(cb)](const Answer& a) {
    TlsaLookup t;
    if (a.status == ARES_SUCCESS && a.secure) {
      t.status = TlsaLookup::Status::kRecords;
      t.records = a.tlsa;
    } else if (a.status != ARES_SUCCESS && isTemporary(a.status)) {
      // RFC 7672 §2.2: a host whose TLSA records cannot be known is not tried without
      // them.
      t.status = TlsaLookup::Status::kFailed;
      t.error = "TLSA lookup for " + name + " failed: " + ares_strerror(a.status);
    }
    cb(std::move(t));
  });
}

void Resolver::resolveTxt(const std::string& name,
                          std::function<void(int status, std::vector<std::string>)> cb) {
  query(name, ns_t_txt, [cb = std::move(cb)](const Answer& a) { cb(a.status, a.txt); });
}

void Resolver::rearmTimer() {
  if (closed_) return;
  timeval tv{};
  timeval* t = ares_timeout(channel_, nullptr, &tv);
  if (t == nullptr) {
    uv_timer_stop(&timer_);
    return;
  }
  uint64_t ms = static_cast<uint64_t>(t->tv_sec) * 1000 + static_cast<uint64_t>(t->tv_usec) / 1000;
  uv_timer_start(&timer_, onTimer, ms == 0 ? 1 : ms, 0);
}

void Resolver::onTimer(uv_timer_t* t) {
  auto* r = static_cast<Resolver*>(t->data);
  ares_process_fd(r->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  r->rearmTimer();
}

void Resolver::onSockState(void* data, ares_socket_t fd, int readable, int writable) {
  auto* r = static_cast<Resolver*>(data);
  if (r->closed_) return;  // close() closes the remaining poll handles itself
  auto it = r->polls_.find(fd);
  if (!readable && !writable) {
    if (it == r->polls_.end()) return;
    uv_poll_stop(it->second);  // before c-ares closes the socket
    uv_close(reinterpret_cast<uv_handle_t*>(it->second),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    r->polls_.erase(it);
    return;
  }
  uv_poll_t* p;
  if (it == r->polls_.end()) {
    p = new uv_poll_t;
    uv_poll_init_socket(r->loop_, p, fd);
    p->data = r;
    r->polls_[fd] = p;
  } else {
    p = it->second;
  }
  uv_poll_start(p, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), onPoll);
}

void Resolver::onPoll(uv_poll_t* h, int status, int events) {
  auto* r = static_cast<Resolver*>(h->data);
  uv_os_fd_t fd;
  uv_fileno(reinterpret_cast<uv_handle_t*>(h), &fd);
  // On a poll error, let c-ares read the socket and see the error itself.
  ares_socket_t rfd = (status < 0 || (events & UV_READABLE)) ? fd : ARES_SOCKET_BAD;
  ares_socket_t wfd = (status >= 0 && (events & UV_WRITABLE)) ? fd : ARES_SOCKET_BAD;
  ares_process_fd(r->channel_, rfd, wfd);
  r->rearmTimer();
}

void Resolver::close() {
  if (closed_) return;
  closed_ = true;
  if (channel_ != nullptr) {
    ares_destroy(channel_);  // answers come back with ARES_EDESTRUCTION and are dropped
    channel_ = nullptr;
  }
  for (auto& [fd, p] : polls_) {
    uv_poll_stop(p);
    uv_close(reinterpret_cast<uv_handle_t*>(p),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  }
  polls_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

}  // namespace postern
