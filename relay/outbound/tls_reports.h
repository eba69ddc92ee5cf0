// TlsReports: SMTP TLS reporting (RFC 8460). Every outbound TLS session made under a
// policy (MTA-STS, in enforce or testing mode, or DANE TLSA records) is counted for its
// recipient domain, as a success or as a failure with its result type
// ("starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
// "validation-failure", "tlsa-invalid"), and the day's aggregate report is written as
// JSON (RFC 8460 §4.4) to [tls_rpt] directory/YYYY-MM-DD/DOMAIN.json (UTC days).
//
// Several workers report for the same domain: each appends its counts, as tab-separated
// lines, to DOMAIN.counts beside the report (one write with O_APPEND), then rebuilds the
// report from every line under an flock of that file. This runs on libuv's thread pool
// every kFlushInterval and when the worker stops, never on the loop. Mailing reports to
// the domain's rua address (the _smtp._tls TXT record) is not done: the files are for
// the operator (or a cron job) to send.
#pragma once

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

namespace postern {

struct TlsReportEntry {
  std::string domain;               // the policy domain (recipient domain)
  std::string policy_type;          // "sts" or "tlsa"
  std::vector<std::string> policy;  // policy-string: the policy's lines or TLSA records
  std::string mx_host;              // receiving-mx-hostname
  std::string ip;                   // receiving-ip
  std::string result;               // "" for a success, else the result type
};

class TlsReports {
 public:
  static constexpr uint64_t kFlushInterval = 60'000;  // ms

  // directory "": reporting is off (record() does nothing).
  TlsReports(uv_loop_t* loop, std::string directory, std::string organization, std::string contact);
  ~TlsReports();
  TlsReports(const TlsReports&) = delete;
  TlsReports& operator=(const TlsReports&) = delete;

  void record(const TlsReportEntry& e);
  // Writes what is counted now (and stops the timer).
  void stop();

  // The report for one domain and day from its count lines ("policy_type\tpolicy strings
  // joined by \x1f\tmx\tip\tresult\tcount"), as RFC 8460 JSON. Pure, for tests.
  static std::string buildReport(const std::string& domain, const std::string& date,
                                 const std::string& organization, const std::string& contact,
                                 const std::string& counts);

 private:
  using Key = std::tuple<std::string, std::string, std::string, std::string, std::string,
                         std::string, std::string>;  // date, domain, type, policy, mx, ip, result
  void flush();
  static void onTimer(uv_timer_t* t);

  uv_loop_t* loop_;
  const std::string directory_;
  const std::string organization_;
  const std::string contact_;
  std::map<Key, uint64_t> counts_;
  uv_timer_t timer_;
  bool timer_open_ = false;
};

}  // namespace postern
