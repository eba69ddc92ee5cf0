// RecipientProber: recipient validation by asking the next hop ([[recipients]] mode =
// "probe"), like Postfix's reject_unverified_recipient or Exim's callout. One per worker,
// on its loop.
//
// check() never waits: it answers from a cache of earlier probes (positive_ttl for
// "exists", negative_ttl for "unknown"), and when it has no answer it starts a probe and
// says kPending, which the session turns into 450 4.1.1 ("verification in progress"): the
// client retries, by then the answer is cached. A probe is a short SMTP dialogue with the
// route's next hop (the route the mail itself would take, MX included, NextHopGuard
// applied): greeting, EHLO, MAIL FROM:<>, RCPT TO, QUIT; 2xx is "exists", 5xx "unknown"
// (with the hop's reply), anything else (4xx, no connection, timeout, a bad reply) is
// "unavailable" for a minute, which fail = "closed" answers with 450 and "open" accepts.
//
// Bounded: at most max_probes connections of the whole relay (each worker a share, at
// least one), one probe per address at a time, replies bounded in length and lines, each
// probe in probe_timeout, and the cache in entries. Probes never use TLS: the dialogue
// carries only the recipient's address, to the hop the mail would go to anyway.
#pragma once

#include <uv.h>

#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "core/config.h"
#include "core/result.h"
#include "relay/routing/next_hop_guard.h"
#include "relay/routing/resolver.h"
#include "relay/routing/router.h"

namespace postern {

enum class ProbeVerdict { kExists, kUnknown, kPending, kUnavailable };

struct ProbeAnswer {
  ProbeVerdict verdict = ProbeVerdict::kPending;
  std::string reply;  // kUnknown: the next hop's reply to RCPT
};

class RecipientProber {
 public:
  RecipientProber(uv_loop_t* loop, std::shared_ptr<const Config> config);
  ~RecipientProber();
  RecipientProber(const RecipientProber&) = delete;
  RecipientProber& operator=(const RecipientProber&) = delete;

  Status init();  // fails if DNS could not be set up
  void reload(std::shared_ptr<const Config> config);
  // Ends every probe and the resolver (the worker is stopping).
  void stop();

  // mailbox in canonical form, at check's domain.
  ProbeAnswer check(const RecipientCheck& check, const std::string& mailbox);

  size_t probesInFlight() const { return probes_.size(); }

 private:
  struct Probe;
  // Who is being probed and how long its answer counts.
  struct Target {
    std::string key;  // lower-case mailbox
    std::string mailbox;
    double positive_ttl = 0;
    double negative_ttl = 0;
  };
  struct Entry {
    ProbeVerdict verdict;
    std::string reply;
    uint64_t expires;  // loop time
  };
  static constexpr size_t kMaxEntries = 100000;
  static constexpr uint64_t kUnavailableMs = 60'000;
  static constexpr size_t kQuotedReply = 200;

  void start(const RecipientCheck& check, const std::string& mailbox);
  void finished(const Target& t, ProbeVerdict verdict, std::string reply);
  void remember(const std::string& key, Entry e);

  uv_loop_t* loop_;
  std::shared_ptr<const Config> config_;
  Router router_;
  NextHopGuard guard_;
  Resolver resolver_;
  std::unordered_map<std::string, Entry> cache_;  // by lower-case mailbox
  std::set<std::string> pending_;                 // mailboxes being probed (or resolved)
  std::set<Probe*> probes_;                       // connections open
  bool stopped_ = false;
};

}  // namespace postern
