#include "relay/outbound/tls_reports.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>

#include "core/ascii.h"
#include "core/clock.h"
#include "core/write_all.h"

namespace postern {
namespace {

// A field of a count line: no tab or line break, no unit separator (it joins policy
// strings), however it came (a policy file is a peer's text).
std::string field(std::string_view s) {
  std::string out(s.substr(0, 1000));
  for (char& c : out) {
    if (c == '\t' || c == '\n' || c == '\r' || c == '\x1f') c = ' ';
  }
  return out;
}

std::string utcDate(int64_t unix_s) {
  const time_t t = static_cast<time_t>(unix_s);
  tm parts{};
  gmtime_r(&t, &parts);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &parts);
  return buf;
}

// What canonicalDomain() makes (letters, digits, '-', '.'): safe as a file name.
bool domainFileName(const std::string& d) {
  return !d.empty() && d.size() <= 253 && d.front() != '.' &&
         d.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-.") == std::string::npos;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

struct Job {
  uv_work_t req{};
  std::string directory, organization, contact;
  // (date, domain) -> count lines to append
  std::map<std::pair<std::string, std::string>, std::string> lines;

  void run() const {
    for (const auto& [key, text] : lines) {
      const auto& [date, domain] = key;
      if (!domainFileName(domain)) continue;
      const std::string dir = directory + "/" + date;
      ::mkdir(directory.c_str(), 0750);
      ::mkdir(dir.c_str(), 0750);
      const std::string base = dir + "/" + domain;
      const int fd =
          ::open((base + ".counts").c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
      if (fd < 0) continue;
      // Another worker may be doing the same for this domain: one at a time.
      ::flock(fd, LOCK_EX);
      std::vector<iovec> iov{{const_cast<char*>(text.data()), text.size()}};
      if (writeAll(fd, iov)) {
        std::string all;
        char buf[65536];
        ssize_t n;
        off_t off = 0;
        while ((n = ::pread(fd, buf, sizeof buf, off)) > 0) {
          all.append(buf, static_cast<size_t>(n));
          off += n;
        }
        const std::string json = TlsReports::buildReport(domain, date, organization, contact, all);
        const std::string tmp = base + ".json.tmp";
        const int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (out >= 0) {
          std::vector<iovec> jv{{const_cast<char*>(json.data()), json.size()}};
          const bool ok = writeAll(out, jv);
          ::close(out);
          if (!ok || ::rename(tmp.c_str(), (base + ".json").c_str()) != 0) ::unlink(tmp.c_str());
        }
      }
      ::flock(fd, LOCK_UN);
      ::close(fd);
    }
  }
};

}  // namespace

TlsReports::TlsReports(uv_loop_t* loop, std::string directory, std::string organization,
                       std::string contact)
    : loop_(loop),
      directory_(std::move(directory)),
      organization_(std::move(organization)),
      contact_(std::move(contact)) {
  if (directory_.empty()) return;
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  timer_open_ = true;
}

TlsReports::~TlsReports() = default;

void TlsReports::record(const TlsReportEntry& e) {
  if (directory_.empty()) return;
  std::string policy;
  for (const std::string& p : e.policy) policy += (policy.empty() ? "" : "\x1f") + field(p);
  ++counts_[Key{utcDate(unixMillis() / 1000), e.domain, field(e.policy_type), policy,
                field(e.mx_host), field(e.ip), field(e.result)}];
  if (timer_open_ && !uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_))) {
    uv_timer_start(&timer_, onTimer, kFlushInterval, 0);
  }
}

void TlsReports::onTimer(uv_timer_t* t) { static_cast<TlsReports*>(t->data)->flush(); }

void TlsReports::stop() {
  flush();
  if (timer_open_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
    timer_open_ = false;
  }
}

void TlsReports::flush() {
  if (counts_.empty()) return;
  auto* job = new Job;
  job->req.data = job;
  job->directory = directory_;
  job->organization = organization_;
  job->contact = contact_;
  for (const auto& [key, n] : counts_) {
    const auto& [date, domain, type, policy, mx, ip, result] = key;
    job->lines[{date, domain}] += type + "\t" + policy + "\t" + mx + "\t" + ip + "\t" + result +
                                  "\t" + std::to_string(n) + "\n";
  }
  counts_.clear();
  const int rc = uv_queue_work(
      loop_, &job->req, [](uv_work_t* req) { static_cast<Job*>(req->data)->run(); },
      [](uv_work_t* req, int) { delete static_cast<Job*>(req->data); });
  if (rc != 0) delete job;
}

std::string TlsReports::buildReport(const std::string& domain, const std::string& date,
                                    const std::string& organization, const std::string& contact,
                                    const std::string& counts) {
  struct Policy {
    std::vector<std::string> strings;
    std::vector<std::string> mx_hosts;
    uint64_t ok = 0, failed = 0;
    std::map<std::tuple<std::string, std::string, std::string>, uint64_t> failures;
  };
  std::map<std::pair<std::string, std::string>, Policy> policies;  // (type, policy)
  for (const std::string& line : split(counts, '\n')) {
    const std::vector<std::string> f = split(line, '\t');
    if (f.size() != 6) continue;
    const uint64_t n = std::strtoull(f[5].c_str(), nullptr, 10);
    Policy& p = policies[{f[0], f[1]}];
    if (p.strings.empty() && !f[1].empty()) p.strings = split(f[1], '\x1f');
    if (!f[2].empty() &&
        std::find(p.mx_hosts.begin(), p.mx_hosts.end(), f[2]) == p.mx_hosts.end()) {
      p.mx_hosts.push_back(f[2]);
    }
    if (f[4].empty()) {
      p.ok += n;
    } else {
      p.failed += n;
      p.failures[{f[4], f[2], f[3]}] += n;
    }
  }
  auto list = [](const std::vector<std::string>& v) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ",\"" : "\"") + jsonEscape(v[i]) + "\"";
    return out + "]";
  };
  std::string out = "{\"organization-name\":\"" + jsonEscape(organization) +
                    "\",\"date-range\":{\"start-datetime\":\"" + date +
                    "T00:00:00Z\",\"end-datetime\":\"" + date +
                    "T23:59:59Z\"},\"contact-info\":\"" + jsonEscape(contact) +
                    "\",\"report-id\":\"" + date + "_" + jsonEscape(domain) + "\",\"policies\":[";
  bool first = true;
  for (const auto& [key, p] : policies) {
    out += first ? "" : ",";
    first = false;
    out += "{\"policy\":{\"policy-type\":\"" + jsonEscape(key.first) +
           "\",\"policy-string\":" + list(p.strings) + ",\"policy-domain\":\"" +
           jsonEscape(domain) + "\",\"mx-host\":" + list(p.mx_hosts) +
           "},\"summary\":{\"total-successful-session-count\":" + std::to_string(p.ok) +
           ",\"total-failure-session-count\":" + std::to_string(p.failed) +
           "},\"failure-details\":[";
    bool first_failure = true;
    for (const auto& [f, n] : p.failures) {
      out += first_failure ? "" : ",";
      first_failure = false;
      out += "{\"result-type\":\"" + jsonEscape(std::get<0>(f)) +
             "\",\"receiving-mx-hostname\":\"" + jsonEscape(std::get<1>(f)) +
             "\",\"receiving-ip\":\"" + jsonEscape(std::get<2>(f)) +
             "\",\"failed-session-count\":" + std::to_string(n) + "}";
    }
    out += "]}";
  }
  return out + "]}\n";
}

}  // namespace postern
