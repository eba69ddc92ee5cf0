#include "relay/reload.h"

#include <algorithm>

#include "relay/admin_token.h"
#include "relay/inbound/session.h"

namespace postern {
namespace {

// Moves running's value into next and records key when they differ.
template <class T>
void keep(const T& running, T& next, const char* key, std::vector<std::string>& changed) {
  if (!(running == next)) changed.emplace_back(key);
  next = running;
}

}  // namespace

std::vector<std::string> keepFixedSettings(const Config& running, Config& next) {
  std::vector<std::string> changed;
  keep(running.workers, next.workers, "server.workers", changed);
  keep(running.accept_handoff, next.accept_handoff, "server.accept_mode", changed);
  keep(running.spool_dir, next.spool_dir, "server.spool_dir", changed);
  keep(running.segment_size, next.segment_size, "server.segment_size", changed);
  keep(running.listeners, next.listeners, "listener", changed);
  keep(running.admin_address, next.admin_address, "admin.address", changed);
  keep(running.admin_queue_networks, next.admin_queue_networks, "admin.queue_networks", changed);
  keep(running.dns, next.dns, "dns", changed);
  keep(running.log_format, next.log_format, "log.format", changed);
  keep(running.limits.ipv6_prefix, next.limits.ipv6_prefix, "limits.ipv6_prefix", changed);
  return changed;
}

std::string loadReferencedFiles(const Config& config, TlsContexts& tls) {
  tls = {};
  std::string err;
  if (!config.tls.certificate.empty()) {
    tls.server = TlsContext::create(config.tls.certificate, config.tls.private_key, err);
    if (!tls.server) return "tls: " + err;
  }
  const bool verify =
      std::any_of(config.routes.begin(), config.routes.end(),
                  [](const RouteConfig& r) { return r.tls == TlsPolicy::kRequired; });
  if (verify) {
    tls.verifying = TlsContext::createVerifyingClient(config.delivery.ca_file, err);
    if (!tls.verifying) return "delivery.ca_file: " + err;
  }
  // Read here too so that check-config and a reload catch a bad one (the admin endpoint
  // reads it at start only: admin is a restart setting).
  if (!config.admin_token_file.empty() && readAdminToken(config.admin_token_file, err).empty()) {
    return "admin.token_file: " + err;
  }
  return "";
}

std::string prepareReload(const std::string& path, const std::string& spool_override,
                          const Config& running, ReloadPlan& plan) {
  auto next = std::make_shared<Config>();
  try {
    *next = loadConfig(path);
  } catch (const ConfigError& e) {
    return e.what();
  }
  if (!spool_override.empty()) next->spool_dir = spool_override;
  plan.restart_required = keepFixedSettings(running, *next);
  // Read buffers come from a per-worker pool sized at start-up for the longest line.
  if (Session::bufferSize(next->limits) > Session::bufferSize(running.limits)) {
    return "limits.command_line / limits.data_line: longer lines than at start-up need a "
           "restart (read buffers are sized when the workers start)";
  }
  if (std::string err = loadReferencedFiles(*next, plan.tls); !err.empty()) return err;
  plan.config = std::move(next);
  return "";
}

}  // namespace postern
