// `postern queue`: the operator's queue tool.
//
//   postern queue list | summary | show ID [--body] | quarantine
//   postern queue flush [ID] | delete ID | bounce ID | requeue ID | hold ID | release ID
//   postern queue ACTION --all | --domain D | --sender S | --older-than T [--yes]
//
// A selection (relay/queue_selection.h) acts on every message that matches it (release:
// every held one that matches): the count first, then, for delete, bounce, hold and
// release, a confirmation (a y on a terminal, or --yes). show --body prints the message
// as spooled, headers and body.
//
// quarantine lists the damaged spool ranges earlier starts copied aside (queue/spool.h):
// worker, segment, offset, length, file and when; summary ends with their count and octets.
//
// It talks to the running relay's admin endpoint (--admin ip:port, else the [admin]
// address of --config, else 127.0.0.1:9025). With --spool-dir it reads a spool directory
// instead, without changing it (list, summary, show and quarantine only): for a relay that
// is not running, or a volume copied off a dead machine.
#pragma once

#include <string>

#include "relay/queue_selection.h"

namespace postern {

struct QueueCommand {
  std::string action;  // list, summary, show, quarantine, flush, delete, bounce, requeue,
                       // hold, release
  std::string id;      // queue id, or "" (flush: all)
  std::string admin;   // ip:port
  std::string token;   // the queue API's bearer token (relay/admin_token.h)
  std::string spool_dir;
  bool json = false;
  bool body = false;         // show: the content instead of the envelope
  QueueSelection selection;  // an action without an id
  bool yes = false;          // no confirmation asked
};

// Prints the answer on stdout (errors on stderr); returns the exit status.
int runQueueCommand(const QueueCommand& cmd);

}  // namespace postern
