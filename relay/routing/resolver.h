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
  // With [dns] dnssec: the lookups that led here (the MX records, if any, and the host's
  // addresses) were all DNSSEC-secure, so its TLSA records may be looked for (RFC 7672
  // §2.2.1).
  bool secure = false;
};

// A TLSA record (RFC 6698): certificate usage, selector, matching type, data.
struct TlsaRecord {
  uint8_t usage = 0;
  uint8_t selector = 0;
  uint8_t mtype = 0;
  std::string data;
  bool operator==(const TlsaRecord&) const = default;
};

// The answer for _PORT._tcp.HOST TLSA.
struct TlsaLookup {
  enum class Status { kRecords, kNone, kFailed };
  Status status = Status::kNone;  // kNone: no records, or an answer that is not secure
  std::vector<TlsaRecord> records;
  std::string error;  // kFailed
};

// The TXT records of a DNS response's answer section, each one's strings joined.
std::vector<std::string> parseTxtAnswer(const unsigned char* msg, int len);
// The TLSA records of a DNS response's answer section (other types skipped; a record too
// short to hold its three octets ends the walk).
std::vector<TlsaRecord> parseTlsaAnswer(const unsigned char* msg, int len);
// The status c-ares' ares_query() would give a raw response: ARES_SUCCESS with answers,
// ARES_ENODATA, ARES_ENOTFOUND, ARES_ESERVFAIL, ...
int responseStatus(const unsigned char* msg, int len);

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
  // The TLSA records of a host (DANE, RFC 7672): only a secure answer counts; a secure
  // "none" and an insecure answer are kNone, a failure (SERVFAIL, timeout) kFailed.
  void resolveTlsa(const std::string& host, uint16_t port, std::function<void(TlsaLookup)> cb);
  // The TXT records of a name. status: ARES_SUCCESS, ARES_ENODATA, ARES_ENOTFOUND, or a
  // failure.
  void resolveTxt(const std::string& name,
                  std::function<void(int status, std::vector<std::string>)> cb);
  // Cancels outstanding queries (their callbacks are not called) and closes the handles.
  void close();

 private:
  struct Answer {
    int status = ARES_SUCCESS;          // ARES_SUCCESS, ARES_ENOTFOUND, ARES_ENODATA, ...
    bool secure = false;                // the AD bit, from a trusted validating resolver
    std::vector<MxRecord> mx;           // T_MX
    std::vector<sockaddr_storage> ips;  // T_A / T_AAAA, port 0
    std::vector<TlsaRecord> tlsa;       // T_TLSA
    std::vector<std::string> txt;       // T_TXT
    uint64_t expires = 0;               // loop time
  };
  using AnswerCallback = std::function<void(const Answer&)>;
  struct Query;

  void query(const std::string& name, int type, AnswerCallback cb);
  // The host's A and AAAA records; their HopAddress::secure says whether both answers
  // were secure.
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
