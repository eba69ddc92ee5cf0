// StsPolicies: the MTA-STS policies (RFC 8461) of recipient domains, for one worker's
// delivery, on its loop. lookup() answers a domain's policy, or none:
//
//   1. the _mta-sts.DOMAIN TXT record, through the worker's Resolver;
//   2. a policy already known with the record's id, and unexpired, is the answer;
//   3. otherwise the policy file is fetched from https://mta-sts.DOMAIN/.well-known/
//      mta-sts.txt with libcurl on libuv's thread pool (never on the loop): its address
//      from the Resolver too (pinned with CURLOPT_RESOLVE, so one DNS view serves all),
//      internal addresses refused unless the route allows internal MX hosts, TLS verified
//      against delivery.ca_file or the system store, no redirects, 200 and text/plain only,
//      at most 64 KiB, within kFetchTimeout;
//   4. a fetched policy is kept in memory and in SPOOL_DIR/mta-sts/DOMAIN (written to a
//      temporary file and renamed), so it survives restarts: a policy must keep applying
//      for its max_age even when its record or server is gone (§5.1), which is what stops
//      an attacker who blocks them.
//
// Without a TXT record, or when the lookup or the fetch fails, a cached unexpired policy
// still applies (from memory, else the file); with none, the domain has no policy.
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/mta_sts.h"
#include "relay/routing/resolver.h"

namespace postern {

struct StsAnswer {
  std::optional<mta_sts::Policy> policy;  // nullopt: the domain has none
  std::string note;                       // how it was found or why not, for the log
  // The domain publishes a policy (its TXT record) that could not be had, and none is
  // cached: RFC 8460's "sts-policy-fetch-error", "sts-policy-invalid" or
  // "sts-webpki-invalid", for the TLS report; "" otherwise.
  std::string failure;
};

class StsPolicies {
 public:
  static constexpr double kFetchTimeout = 30;  // seconds for the HTTPS fetch, all of it

  StsPolicies(uv_loop_t* loop, Resolver& resolver, std::string cache_dir, std::string ca_file);
  StsPolicies(const StsPolicies&) = delete;
  StsPolicies& operator=(const StsPolicies&) = delete;
  ~StsPolicies();

  // allow_internal: the policy host may have a loopback or private address (the route's
  // allow_internal_mx). cb runs on the loop, once.
  void lookup(const std::string& domain, bool allow_internal, std::function<void(StsAnswer)> cb);
  // Ends: fetches still running are cut short (within a second: the loop waits for
  // them), and their callbacks are not called.
  void stop() {
    stopped_ = true;
    *cancel_ = true;
  }
  void setCaFile(std::string ca_file) { ca_file_ = std::move(ca_file); }

 private:
  struct Known {
    std::string id;
    mta_sts::Policy policy;
    uint64_t expires_unix = 0;  // seconds
  };
  struct Fetch;

  void fetch(const std::string& domain, const std::string& id, std::vector<HopAddress> addrs,
             std::function<void(StsAnswer)> cb);
  // The cached policy from memory (or nullopt), if unexpired.
  std::optional<Known> cached(const std::string& domain) const;

  uv_loop_t* loop_;
  Resolver& resolver_;
  const std::string cache_dir_;
  std::string ca_file_;  // PEM CAs for the policy servers; "": the system's store
  std::map<std::string, Known> known_;
  bool stopped_ = false;
  std::shared_ptr<bool> alive_;  // callbacks of work still on the pool check it
  std::shared_ptr<std::atomic<bool>> cancel_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace postern
