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
  keep(running.tls_rpt, next.tls_rpt, "tls_rpt", changed);
  keep(running.log_format, next.log_format, "log.format", changed);
  keep(running.reload_on_change, next.reload_on_change, "server.reload_on_change", changed);
  keep(running.reload_check_interval, next.reload_check_interval, "server.reload_check_interval",
       changed);
  keep(running.limits.ipv6_prefix, next.limits.ipv6_prefix, "limits.ipv6_prefix", changed);
  return changed;
}

Result<TlsContexts> loadReferencedFiles(const Config& config, std::shared_ptr<TicketKeys> tickets) {
  TlsContexts tls;
  const auto lifetime = std::chrono::seconds(static_cast<int64_t>(config.tls.session_lifetime));
  tls.tickets = tickets ? std::move(tickets) : std::make_shared<TicketKeys>(lifetime);
  if (!config.tls.certificate.empty()) {
    if (lifetime.count() > 0) tls.tickets->setLifetime(lifetime);
    auto server = TlsContext::create(config.tls.certificate, config.tls.private_key,
                                     config.tls.ecdsa_certificate, config.tls.ecdsa_private_key,
                                     lifetime.count() > 0 ? tls.tickets : nullptr);
    if (!server) return fail("tls: " + server.error());
    tls.server = std::move(*server);
  }
  const bool verify =
      std::any_of(config.routes.begin(), config.routes.end(), [](const RouteConfig& r) {
        return r.tls != TlsPolicy::kNone && r.tls != TlsPolicy::kOpportunistic;
      });
  if (verify) {
    auto verifying = TlsContext::createVerifyingClient(config.delivery.ca_file);
    if (!verifying) return fail("delivery.ca_file: " + verifying.error());
    tls.verifying = std::move(*verifying);
  }
  // Read here too so that check-config and a reload catch a bad one (the admin endpoint
  // reads it at start only: admin is a restart setting).
  if (!config.admin_token_file.empty()) {
    if (auto token = readAdminToken(config.admin_token_file); !token) {
      return fail("admin.token_file: " + token.error());
    }
  }
  return tls;
}

Result<ReloadPlan> prepareReload(const std::string& path, const std::string& spool_override,
                                 const Config& running, std::shared_ptr<TicketKeys> tickets) {
  auto next = std::make_shared<Config>();
  try {
    *next = loadConfig(path);
  } catch (const ConfigError& e) {
    return fail(e.what());
  }
  if (!spool_override.empty()) next->spool_dir = spool_override;
  ReloadPlan plan;
  plan.restart_required = keepFixedSettings(running, *next);
  // Read buffers come from a per-worker pool sized at start-up for the longest line.
  if (Session::bufferSize(next->limits) > Session::bufferSize(running.limits)) {
    return fail(
        "limits.command_line / limits.data_line: longer lines than at start-up need a "
        "restart (read buffers are sized when the workers start)");
  }
  Result<TlsContexts> tls = loadReferencedFiles(*next, std::move(tickets));
  if (!tls) return fail(tls.error());
  plan.tls = std::move(*tls);
  plan.config = std::move(next);
  return plan;
}

}  // namespace postern
