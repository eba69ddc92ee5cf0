// Resolver: next-hop lookups with c-ares, driven by the worker's libuv loop (uv_poll on
// c-ares' sockets, one uv_timer for its timeouts), so no resolver call ever blocks.
//
// resolveMx() follows RFC 5321 §5.1: MX records in preference order (equal preferences
// shuffled), each host's A and AAAA records; no MX records means the domain itself is the
// one host (implicit MX); a null MX (RFC 7505, one record "." with preference 0) and a
// domain that does not exist are permanent failures, anything else that fails is
// temporary. resolveHost() is the same for one named smarthost. Answers are cached per
// name and type for their TTL (at most dns.max_ttl).
#pragma once

#include <ares.h>
#include <uv.h>

#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/result.h"

namespace postern {

// One server to try: its address (port filled in) and the name it was found under, which
// is what a certificate is checked against.
struct HopAddress {
  std::string host;
  sockaddr_storage addr{};
};

struct HopResolution {
  enum class Status { kOk, kTemporary, kPermanent };
  Status status = Status::kOk;
  std::string error;                  // with an enhanced status code, e.g. "5.1.10 null MX: ..."
  std::vector<HopAddress> addresses;  // in the order to try them
  uint64_t ttl_ms = 0;                // how long the answer may be reused
};

struct MxRecord {
  std::string host;
  unsigned preference = 0;
};

// MX records sorted by preference, equal preferences shuffled (RFC 5321 §5.1).
void orderMx(std::vector<MxRecord>& mx, std::minstd_rand& rng);
// The smallest TTL of a DNS response's answer records, or -1 if it has none.
int64_t dnsAnswerMinTtl(const unsigned char* msg, int len);

class Resolver {
 public:
  using Callback = std::function<void(HopResolution)>;

  Resolver(uv_loop_t* loop, const DnsConfig& config);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Fails if c-ares could not be set up.
  Status init();
  void resolveMx(const std::string& domain, uint16_t port, Callback cb);
  void resolveHost(const std::string& host, uint16_t port, Callback cb);
  // Cancels outstanding queries (their callbacks are not called) and closes the handles.
  void close();

 private:
  struct Answer {
    int status = ARES_SUCCESS;          // ARES_SUCCESS, ARES_ENOTFOUND, ARES_ENODATA, ...
    std::vector<MxRecord> mx;           // T_MX
    std::vector<sockaddr_storage> ips;  // T_A / T_AAAA, port 0
    uint64_t expires = 0;               // loop time
  };
  using AnswerCallback = std::function<void(const Answer&)>;
  struct Query;

  void query(const std::string& name, int type, AnswerCallback cb);
  void addresses(const std::string& host, uint16_t port,
                 std::function<void(int status, std::vector<HopAddress>, uint64_t ttl)> cb);
  void rearmTimer();
  static void onAnswer(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
  static void onSockState(void* data, ares_socket_t fd, int readable, int writable);
  static void onPoll(uv_poll_t* h, int status, int events);
  static void onTimer(uv_timer_t* t);

  uv_loop_t* loop_;
  const DnsConfig config_;  // a copy: the Config it came from may be replaced by a reload
  ares_channel channel_ = nullptr;
  uv_timer_t timer_;
  std::map<int, uv_poll_t*> polls_;
  std::map<std::pair<std::string, int>, Answer> cache_;
  std::minstd_rand rng_;
  bool closed_ = false;
};

}  // namespace postern
