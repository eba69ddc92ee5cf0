// Destination: one next hop's pool, owned by Delivery. A route to a smarthost is one
// destination; a route by MX is one destination per recipient domain. Each has its own
// ready queue, connections, DNS answer, backoff when it cannot be reached at all, and
// message rate limit. A route's max_connections and max_rate are for the whole relay:
// every worker delivers the mail of its own spool, so each holds an equal share of them
// (at least one connection).
//
// The route is a copy, not a pointer into a Config, so a destination outlives the
// configuration it was made under. A reload (SIGHUP) that keeps a destination's next hop
// gives it the new route's settings; one that changes or removes the hop retires it: its waiting
// jobs are routed afresh, and it lives on, out of Delivery's map, only until its connections have
// finished their messages.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "core/config.h"
#include "core/mta_sts.h"
#include "queue/scheduler.h"
#include "relay/routing/resolver.h"

namespace postern {

class SmtpClient;

struct Destination {
  enum class Dns { kNone, kResolving, kDone };

  std::string key;      // "mx:example.com" or "route:<route domain>"
  uint64_t serial = 0;  // tells apart a retired destination and its successor
  RouteConfig route;
  bool retired = false;
  std::string name;  // the MX domain, or the smarthost's host
  uint16_t port = 25;

  Dns dns = Dns::kNone;
  HopResolution resolution;
  uint64_t resolved_until = 0;  // loop time the answer expires
  size_t next_address = 0;      // first address of resolution.addresses not yet failed

  std::deque<ParkedJob> ready;  // oldest first
  std::set<SmtpClient*> clients;
  size_t connecting = 0;     // clients not yet ready
  unsigned failures = 0;     // consecutive rounds in which no address could be used
  unsigned round = 0;        // rounds ended by a failure; a connection of an older one
                             // failing too does not end (or count) another
  uint64_t down_until = 0;   // backed off as a whole until then
  double next_send = 0;      // max_rate: the earliest start of the next message (loop ms)
  uint64_t plain_until = 0;  // opportunistic STARTTLS failed: plain text until then
  // tls = "dane": each secure host's TLSA answer, looked up with the addresses (and as
  // long-lived as they are).
  std::map<std::string, TlsaLookup> tlsa;
  // tls = "mta-sts" or "dane" (MX routes): the recipient domain's MTA-STS policy, if any.
  std::optional<mta_sts::Policy> sts;
  std::string sts_failure;  // a published policy could not be had (StsAnswer::failure)

  bool idle() const { return ready.empty() && clients.empty() && dns != Dns::kResolving; }
};

}  // namespace postern
