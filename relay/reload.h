// Reload (SIGHUP): which settings a running relay can change, and the checks a new
// configuration passes on the main thread before any worker sees it.
//
// Reloadable: server.hostname, [relay] (relay control), [limits], [[route]], [delivery],
// [tls] (the STARTTLS certificate and key, read afresh even when the paths are the same,
// so a renewed certificate is picked up) and log.level. New connections and new delivery
// attempts use them; a session keeps the configuration it started with.
//
// Fixed until a restart (sockets, threads and files are set up from them): server.workers,
// accept_mode, spool_dir, segment_size, the listeners, [admin], [dns] and log.format. A
// reload that changes one of them keeps the running value and names the key, so the
// operator learns that a restart is needed; the rest of the reload still applies.
//
// A reload is refused as a whole, and the running configuration stays, when the file
// does not load (the ConfigError names file, line and key), the certificate, key or
// delivery.ca_file cannot be read, or the new command or DATA line limits would need
// larger read buffers than the workers were started with.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/result.h"
#include "core/tls.h"

namespace postern {

struct ReloadPlan {
  std::shared_ptr<const Config> config;
  TlsContexts tls;
  std::vector<std::string> restart_required;  // changed keys that wait for a restart
};

// Reads the files a configuration names: the STARTTLS certificate and key and, if a route
// requires TLS, delivery.ca_file; the error names the key. check-config, start-up and
// reload all use it, so a bad file is an invalid configuration (exit 2), not a failure
// later, and the workers get what it read. tickets: the running process's session ticket
// keys, which a reload keeps (so tickets issued before it still resume); nullptr at start.
Result<TlsContexts> loadReferencedFiles(const Config& config,
                                        std::shared_ptr<TicketKeys> tickets = nullptr);

// Gives next the running values of every setting a reload cannot change, and returns the
// keys whose values differed.
std::vector<std::string> keepFixedSettings(const Config& running, Config& next);

// Loads path (spool_override, when set, stands for server.spool_dir as on the command
// line) and checks it against the running configuration: the plan, or why the reload is
// refused. tickets: as for loadReferencedFiles.
Result<ReloadPlan> prepareReload(const std::string& path, const std::string& spool_override,
                                 const Config& running,
                                 std::shared_ptr<TicketKeys> tickets = nullptr);

}  // namespace postern
