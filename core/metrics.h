// Metrics: plain counters and histograms owned by one worker thread (no atomics, no
// locks on the hot path). The admin endpoint asks each worker for a snapshot on the
// worker's own loop and renders the Prometheus text format with a worker="N" label, so
// sums across workers are left to PromQL, as Seastar does per shard.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

namespace postern {

struct Histogram {
  // Upper bounds in seconds: from fast fsyncs to an SMTP transaction that runs into the
  // default data_timeout (600 s).
  static constexpr std::array<double, 19> kBounds = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
      1,      2.5,   5,      10,    30,   60,    120,  300, 600};
  std::array<uint64_t, kBounds.size()> buckets{};  // per bound, not cumulative
  double sum = 0;
  uint64_t count = 0;

  void observe(double seconds) {
    for (size_t i = 0; i < kBounds.size(); ++i) {
      if (seconds <= kBounds[i]) {
        ++buckets[i];
        break;
      }
    }
    sum += seconds;
    ++count;
  }
};

// Body pieces read for delivery (BodyReader), by where they came from: at once from the
// page cache, or through libuv's thread pool (the page cache did not hold all of it).
struct BodyReadCounts {
  uint64_t cache = 0;
  uint64_t pool = 0;
};

struct WorkerMetrics {
  uint64_t connections = 0;
  uint64_t tls_failures = 0;  // inbound handshakes that failed
  uint64_t auth_ok = 0;       // SMTP AUTH logins
  uint64_t auth_failures = 0;
  uint64_t dkim_signed = 0;  // DKIM-Signature fields added
  uint64_t dkim_failed = 0;  // a key that could not sign
  uint64_t messages_accepted = 0;
  uint64_t bytes_accepted = 0;
  std::map<std::string, uint64_t> rejected;  // 4xx/5xx replies by enhanced status code
  // Messages refused at their end (after DATA or the last BDAT), by reason: size,
  // line_too_long, bare_lf, bare_cr, storage.
  std::map<std::string, uint64_t> messages_rejected;
  // What milters did besides continue and accept, by milter and action: reject, tempfail,
  // discard, quarantine, failed.
  std::map<std::pair<std::string, std::string>, uint64_t> milter_actions;
  // Outbound connections by TLS policy applied (none, opportunistic, required, mta-sts,
  // mta-sts-testing, dane) and result: ok (ready for mail) or failed (TLS did not go as
  // the policy wants: no STARTTLS, a failed handshake or check).
  std::map<std::pair<std::string, std::string>, uint64_t> tls_policy;
  uint64_t delivered = 0;  // recipients
  uint64_t deferred = 0;
  uint64_t bounced = 0;
  uint64_t expired = 0;
  std::map<std::string, Histogram> delivery;  // transaction time by next hop
  // Next hops' DNS lookups (MX or host) by result.
  uint64_t dns_ok = 0;
  uint64_t dns_temporary = 0;  // SERVFAIL, timeout: asked again after the hop's backoff
  uint64_t dns_permanent = 0;  // NXDOMAIN, null MX, nothing usable: bounced
  // Outbound connections opened: those that became ready for mail, and those that ended
  // before (connect, greeting, EHLO or STARTTLS failed); STARTTLS handshakes that failed.
  uint64_t outbound_ready = 0;
  uint64_t outbound_failed = 0;
  uint64_t outbound_tls_failures = 0;
  BodyReadCounts body_reads;
};

// Prometheus text format helpers: one sample line, and a histogram's lines.
std::string promSample(const std::string& name, const std::string& labels, double value);
std::string promHistogram(const std::string& name, const std::string& labels, const Histogram& h);
// A label value escaped for the text format.
std::string promEscape(const std::string& v);
// The same as lines "family\tsample" for renderMetrics (relay/admin.h), which groups the
// samples of one family from every worker under its HELP and TYPE lines.
void addFamilySample(std::string& out, const char* family, const std::string& labels, double v);
void addFamilyHistogram(std::string& out, const char* family, const std::string& labels,
                        const Histogram& h);

}  // namespace postern
