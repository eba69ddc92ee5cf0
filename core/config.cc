#include "core/config.h"

#include <sys/un.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "core/ascii.h"
#include "core/credentials.h"
#include "core/domain.h"
#include "core/recipient_list.h"

namespace postern {
namespace {

// Reads one TOML table, remembering which keys were used so that leftovers can be
// reported as unknown (a misspelt key must not be silently ignored).
class TableReader {
 public:
  TableReader(const toml::table& table, std::string file, std::string prefix)
      : table_(table), file_(std::move(file)), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const toml::node* node, const std::string& key,
                         const std::string& why) const {
    std::string where = file_;
    if (node != nullptr) where += ":" + std::to_string(node->source().begin.line);
    throw ConfigError(where + ": " + prefix_ + key + ": " + why);
  }

  const toml::node* get(const std::string& key) {
    used_.insert(key);
    return table_.get(key);
  }

  std::string str(const std::string& key, std::string def) {
    const toml::node* n = get(key);
    if (n == nullptr) return def;
    if (!n->is_string()) fail(n, key, "expected a string");
    return **n->as_string();
  }

  bool boolean(const std::string& key, bool def) {
    const toml::node* n = get(key);
    if (n == nullptr) return def;
    if (!n->is_boolean()) fail(n, key, "expected true or false");
    return **n->as_boolean();
  }

  int64_t integer(const std::string& key, int64_t def, int64_t min, int64_t max) {
    const toml::node* n = get(key);
    if (n == nullptr) return def;
    if (!n->is_integer()) fail(n, key, "expected an integer");
    int64_t v = **n->as_integer();
    if (v < min || v > max) {
      fail(n, key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    return v;
  }

  double seconds(const std::string& key, double def) {
    const toml::node* n = get(key);
    if (n == nullptr) return def;
    double v = 0;
    if (n->is_integer())
      v = static_cast<double>(**n->as_integer());
    else if (n->is_floating_point())
      v = **n->as_floating_point();
    else
      fail(n, key, "expected a number of seconds");
    if (v <= 0 || v > 365.0 * 86400) fail(n, key, "must be a positive number of seconds");
    return v;
  }

  std::vector<std::string> strings(const std::string& key, std::vector<std::string> def) {
    const toml::node* n = get(key);
    if (n == nullptr) return def;
    const toml::array* arr = n->as_array();
    if (arr == nullptr) fail(n, key, "expected an array of strings");
    std::vector<std::string> out;
    for (const auto& el : *arr) {
      if (!el.is_string()) fail(&el, key, "expected an array of strings");
      out.push_back(**el.as_string());
    }
    return out;
  }

  // An array of CIDR networks, or def when the key is absent.
  std::vector<Network> networks(const std::string& key, std::vector<Network> def) {
    if (get(key) == nullptr) return def;
    std::vector<Network> out;
    for (const auto& text : strings(key, {})) {
      auto net = Network::parse(text);
      if (!net) fail(get(key), key, "bad network \"" + text + "\"");
      out.push_back(*net);
    }
    return out;
  }

  // Each element of an array of tables, or nothing when the key is absent.
  std::vector<const toml::table*> tables(const std::string& key) {
    const toml::node* n = get(key);
    std::vector<const toml::table*> out;
    if (n == nullptr) return out;
    const toml::array* arr = n->as_array();
    if (arr == nullptr) fail(n, key, "expected [[" + key + "]] tables");
    for (const auto& el : *arr) {
      if (!el.is_table()) fail(&el, key, "expected [[" + key + "]] tables");
      out.push_back(el.as_table());
    }
    return out;
  }

  const toml::table* table(const std::string& key) {
    const toml::node* n = get(key);
    if (n == nullptr) return nullptr;
    if (!n->is_table()) fail(n, key, "expected a [" + prefix_ + key + "] table");
    return n->as_table();
  }

  void finish() const {
    for (const auto& [k, v] : table_) {
      if (!used_.contains(std::string(k.str()))) fail(&v, std::string(k.str()), "unknown key");
    }
  }

  const std::string& file() const { return file_; }

 private:
  const toml::table& table_;
  std::string file_;
  std::string prefix_;
  std::set<std::string> used_;
};

void readServer(TableReader& r, Config& c) {
  c.hostname = r.str("hostname", c.hostname);
  if (c.hostname.empty()) r.fail(r.get("hostname"), "hostname", "must not be empty");
  const toml::node* w = r.get("workers");
  if (w != nullptr) {
    if (w->is_string() && **w->as_string() == "auto") {
      c.workers = 0;
    } else if (w->is_integer() && **w->as_integer() >= 1 && **w->as_integer() <= 256) {
      c.workers = static_cast<unsigned>(**w->as_integer());
    } else {
      r.fail(w, "workers", "expected \"auto\" or a number from 1 to 256");
    }
  }
  std::string accept = r.str("accept_mode", "reuseport");
  if (accept != "reuseport" && accept != "handoff") {
    r.fail(r.get("accept_mode"), "accept_mode", "expected \"reuseport\" or \"handoff\"");
  }
  c.accept_handoff = accept == "handoff";
  c.spool_dir = r.str("spool_dir", c.spool_dir);
  if (c.spool_dir.empty()) r.fail(r.get("spool_dir"), "spool_dir", "must not be empty");
  c.segment_size = static_cast<size_t>(r.integer("segment_size", 64 << 20, 4096, int64_t{1} << 34));
  c.drain_timeout = r.seconds("drain_timeout", c.drain_timeout);
  c.reload_on_change = r.boolean("reload_on_change", c.reload_on_change);
  c.reload_check_interval = r.seconds("reload_check_interval", c.reload_check_interval);
  if (c.reload_check_interval < 0.1 || c.reload_check_interval > 3600) {
    r.fail(r.get("reload_check_interval"), "reload_check_interval",
           "must be between 0.1 and 3600 seconds");
  }
  c.log_format = r.str("log_format", c.log_format);
  if (c.log_format != "keyvalue" && c.log_format != "json") {
    r.fail(r.get("log_format"), "log_format", "expected \"keyvalue\" or \"json\"");
  }
  c.log_level = r.str("log_level", c.log_level);
  static const std::set<std::string> kLevels{"trace", "debug", "info", "warn", "error", "off"};
  if (!kLevels.contains(c.log_level)) {
    r.fail(r.get("log_level"), "log_level", "expected trace, debug, info, warn, error or off");
  }
  r.finish();
}

void readLimits(TableReader& r, Limits& l) {
  constexpr int64_t kMax = int64_t{1} << 40;
  l.command_line = static_cast<size_t>(r.integer("command_line", 2048, 512, 65536));
  l.data_line = static_cast<size_t>(r.integer("data_line", 1000, 1000, 65536));
  l.message_size = static_cast<size_t>(r.integer("message_size", 25 << 20, 1024, kMax));
  l.message_memory =
      static_cast<size_t>(r.integer("message_memory", 256 << 10, 4096, int64_t{1} << 30));
  l.recipients = static_cast<size_t>(r.integer("recipients", 1000, 1, 100000));
  l.errors = static_cast<size_t>(r.integer("errors", 20, 1, 10000));
  l.command_timeout = r.seconds("command_timeout", l.command_timeout);
  l.data_timeout = r.seconds("data_timeout", l.data_timeout);
  l.connections = static_cast<size_t>(r.integer("connections", 20000, 1, 10000000));
  l.connections_per_ip = static_cast<size_t>(r.integer("connections_per_ip", 100, 1, 10000000));
  l.ipv6_prefix = static_cast<unsigned>(r.integer("ipv6_prefix", 64, 16, 128));
  l.memory_budget =
      static_cast<size_t>(r.integer("memory_budget", 256 << 20, 1 << 20, int64_t{1} << 40));
  l.messages_per_connection =
      static_cast<size_t>(r.integer("messages_per_connection", 1000, 1, 10000000));
  l.hop_limit = static_cast<size_t>(r.integer("hop_limit", 50, 1, 1000));
  l.proxy_timeout = r.seconds("proxy_timeout", l.proxy_timeout);
  l.tls_handshakes_per_turn =
      static_cast<size_t>(r.integer("tls_handshakes_per_turn", 4, 1, 10000));
  std::string bare = r.str("bare_line_endings", "reject");
  if (bare != "reject" && bare != "normalise") {
    r.fail(r.get("bare_line_endings"), "bare_line_endings", "expected \"reject\" or \"normalise\"");
  }
  l.normalise_bare_line_endings = bare == "normalise";
  // The largest envelope: every recipient a full command line of address, with its
  // NOTIFY and ORCPT, plus the sender and DSN fields.
  const uint64_t envelope = uint64_t{l.recipients} * 3 * l.command_line + 4 * l.command_line;
  if (l.message_size + envelope > kMaxSpoolRecord) {
    r.fail(r.get("message_size"), "message_size",
           "a message of this size with the envelope of `recipients` recipients would not "
           "fit one spool record (" +
               std::to_string(kMaxSpoolRecord) + " octets)");
  }
  r.finish();
}

// A route's or [delivery]'s outbound TLS policy.
TlsPolicy readTlsPolicy(TableReader& r, TlsPolicy def) {
  const std::string tls = r.str("tls", "");
  if (tls.empty()) return def;
  if (tls == "none") return TlsPolicy::kNone;
  if (tls == "opportunistic") return TlsPolicy::kOpportunistic;
  if (tls == "required") return TlsPolicy::kRequired;
  if (tls == "dane") return TlsPolicy::kDane;
  if (tls == "mta-sts") return TlsPolicy::kMtaSts;
  r.fail(r.get("tls"), "tls",
         "expected \"none\", \"opportunistic\", \"required\", \"mta-sts\" or \"dane\"");
}

void readDelivery(TableReader& r, DeliveryConfig& d) {
  d.tls = readTlsPolicy(r, d.tls);
  d.connections_per_host = static_cast<size_t>(r.integer("connections_per_host", 20, 1, 10000));
  d.messages_per_connection =
      static_cast<size_t>(r.integer("messages_per_connection", 100, 1, 1000000));
  d.idle_timeout = r.seconds("idle_timeout", d.idle_timeout);
  d.smtp_port = static_cast<uint16_t>(r.integer("smtp_port", d.smtp_port, 1, 65535));
  d.connect_timeout = r.seconds("connect_timeout", d.connect_timeout);
  d.greeting_timeout = r.seconds("greeting_timeout", d.greeting_timeout);
  d.command_timeout = r.seconds("command_timeout", d.command_timeout);
  d.data_timeout = r.seconds("data_timeout", d.data_timeout);
  d.retry_min = r.seconds("retry_min", d.retry_min);
  d.retry_max = r.seconds("retry_max", d.retry_max);
  d.queue_lifetime = r.seconds("queue_lifetime", d.queue_lifetime);
  d.delay_warning = r.seconds("delay_warning", 0);
  if (d.retry_max < d.retry_min) r.fail(r.get("retry_max"), "retry_max", "must be >= retry_min");
  d.ca_file = r.str("ca_file", "");
  d.bounce_size_limit =
      static_cast<size_t>(r.integer("bounce_size_limit", 50000, 0, int64_t{1} << 30));
  r.finish();
}

void readDns(TableReader& r, DnsConfig& d) {
  for (const auto& s : r.strings("servers", {})) {
    if (!parseHostPort(s) && !parseHostPort(s + ":53") && !parseHostPort("[" + s + "]:53")) {
      r.fail(r.get("servers"), "servers", "\"" + s + "\" is not a numeric \"ip\" or \"ip:port\"");
    }
    d.servers.push_back(s);
  }
  d.timeout = r.seconds("timeout", d.timeout);
  d.max_ttl = r.seconds("max_ttl", d.max_ttl);
  d.dnssec = r.boolean("dnssec", d.dnssec);
  r.finish();
}

// "example.com", "*.example.com" or "*": letters, digits, hyphens and dots (or UTF-8).
bool validRouteDomain(const std::string& d) {
  if (d == "*") return true;
  std::string_view rest = d;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  if (rest.empty() || rest.front() == '.' || rest.back() == '.') return false;
  for (unsigned char ch : rest) {
    if (!(std::isalnum(ch) || ch == '-' || ch == '.' || ch >= 0x80)) return false;
  }
  return rest.find("..") == std::string_view::npos;
}

RouteConfig readRoute(TableReader& r, const toml::table* t) {
  RouteConfig rc;
  rc.domain = asciiLower(r.str("domain", ""));
  if (rc.domain != "*") {
    // The form routing looks domains up in: A-labels, no trailing dot.
    const bool wild = rc.domain.starts_with("*.");
    if (auto c = canonicalDomain(wild ? rc.domain.substr(2) : rc.domain); c && !c->empty()) {
      rc.domain = (wild ? "*." : "") + *c;
    }
  }
  rc.next_hop = r.str("next_hop", "");
  if (rc.domain.empty()) r.fail(t, "domain", "is required");
  if (!validRouteDomain(rc.domain)) {
    r.fail(r.get("domain"), "domain", "expected \"example.com\", \"*.example.com\" or \"*\"");
  }
  if (rc.next_hop.empty()) r.fail(t, "next_hop", "is required");
  if (rc.next_hop != "mx" && !splitHostPort(rc.next_hop) &&
      rc.next_hop.find_first_of(":[] ") != std::string::npos) {
    r.fail(r.get("next_hop"), "next_hop", "expected \"host:port\", \"host\" or \"mx\"");
  }
  rc.tls_given = r.get("tls") != nullptr;
  rc.tls = readTlsPolicy(r, rc.tls);
  rc.max_connections = static_cast<size_t>(r.integer("max_connections", 0, 1, 10000));
  rc.messages_per_connection =
      static_cast<size_t>(r.integer("messages_per_connection", 0, 1, 1000000));
  if (const toml::node* n = r.get("max_rate")) {
    double v = n->is_integer()          ? static_cast<double>(**n->as_integer())
               : n->is_floating_point() ? **n->as_floating_point()
                                        : -1;
    if (!(v > 0 && v <= 1e6)) r.fail(n, "max_rate", "expected messages per second, > 0");
    rc.max_rate = v;
  }
  rc.allow_internal_mx = r.boolean("allow_internal_mx", false);
  if (rc.allow_internal_mx && !rc.isMx()) {
    r.fail(r.get("allow_internal_mx"), "allow_internal_mx", "only for next_hop = \"mx\"");
  }
  r.finish();
  return rc;
}

RecipientCheck readRecipientCheck(TableReader& r, const toml::table* t) {
  RecipientCheck rc;
  const std::string domain = r.str("domain", "");
  auto canonical = canonicalDomain(domain);
  if (domain.empty()) r.fail(t, "domain", "is required");
  if (!canonical || isDomainLiteral(domain)) r.fail(r.get("domain"), "domain", "not a domain");
  rc.domain = *canonical;
  const std::string mode = r.str("mode", "list");
  rc.file = r.str("file", "");
  if (mode == "list") {
    if (rc.file.empty()) r.fail(t, "file", "is required with mode = \"list\"");
    try {
      rc.list = RecipientList::load(rc.file);
    } catch (const ConfigError& e) {
      r.fail(r.get("file"), "file", e.what());
    }
  } else if (mode == "probe") {
    rc.mode = RecipientCheck::Mode::kProbe;
    if (!rc.file.empty()) r.fail(r.get("file"), "file", "only with mode = \"list\"");
  } else {
    r.fail(r.get("mode"), "mode", "expected \"list\" or \"probe\"");
  }
  rc.positive_ttl = r.seconds("positive_ttl", rc.positive_ttl);
  rc.negative_ttl = r.seconds("negative_ttl", rc.negative_ttl);
  rc.probe_timeout = r.seconds("probe_timeout", rc.probe_timeout);
  const std::string fail = r.str("fail", "closed");
  if (fail != "closed" && fail != "open") {
    r.fail(r.get("fail"), "fail", "expected \"closed\" (450) or \"open\" (accept)");
  }
  rc.fail_open = fail == "open";
  rc.max_probes = static_cast<size_t>(r.integer("max_probes", 4, 1, 1000));
  r.finish();
  return rc;
}

MilterConfig readMilter(TableReader& r, const toml::table* t) {
  MilterConfig m;
  m.name = r.str("name", "");
  if (m.name.empty() || m.name.size() > 64 ||
      m.name.find_first_not_of(
          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
          std::string::npos) {
    r.fail(r.get("name") ? r.get("name") : t, "name",
           "expected a name of letters, digits, '-', '_', '.'");
  }
  m.address = r.str("address", "");
  const std::string_view a = m.address;
  if (a.starts_with("unix:/") && a.size() < 6 + sizeof(sockaddr_un{}.sun_path)) {
    m.path = m.address.substr(5);
  } else if (a.starts_with("inet:")) {
    // Postfix's "inet:host:port"; a name other than localhost would need a blocking lookup.
    std::string hostport(a.substr(5));
    if (hostport.starts_with("localhost:")) hostport = "127.0.0.1" + hostport.substr(9);
    std::optional<sockaddr_storage> sa = parseHostPort(hostport);
    if (!sa) r.fail(r.get("address"), "address", "expected \"inet:IP:port\" (or localhost)");
    m.inet = *sa;
  } else {
    r.fail(r.get("address") ? r.get("address") : t, "address",
           "expected \"inet:host:port\" or \"unix:/path\"");
  }
  m.timeout = r.seconds("timeout", m.timeout);
  if (m.timeout < 0.1 || m.timeout > 3600) {
    r.fail(r.get("timeout"), "timeout", "must be between 0.1 and 3600 seconds");
  }
  const std::string action = r.str("default_action", "tempfail");
  if (action == "accept") {
    m.default_action = MilterConfig::DefaultAction::kAccept;
  } else if (action != "tempfail") {
    r.fail(r.get("default_action"), "default_action", "expected \"tempfail\" or \"accept\"");
  }
  return m;
}

}  // namespace

const std::vector<size_t>& Config::miltersFor(const std::string& listener_address) const {
  static const std::vector<size_t> kNone;
  auto it = listener_milters.find(listener_address);
  return it == listener_milters.end() ? kNone : it->second;
}

Config loadConfig(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw ConfigError(path + ":" + std::to_string(e.source().begin.line) + ": " +
                      std::string(e.description()));
  }
  Config c;
  // Both default to this host only.
  const std::vector<Network> loopback = {*Network::parse("127.0.0.0/8"),
                                         *Network::parse("::1/128")};
  c.relay_networks = loopback;
  c.admin_queue_networks = loopback;
  TableReader top(root, path, "");
  if (const toml::table* t = top.table("server")) {
    TableReader r(*t, path, "server.");
    readServer(r, c);
  }
  // Listener address -> its `milters` names (resolved once the [[milter]] tables are read).
  std::map<std::string, std::pair<const toml::node*, std::vector<std::string>>> milter_names;
  for (const toml::table* t : top.tables("listener")) {
    TableReader r(*t, path, "listener.");
    ListenerConfig l;
    l.address = r.str("address", "");
    if (!parseHostPort(l.address)) {
      r.fail(t, "address", "expected a numeric \"ip:port\" or \"[ipv6]:port\"");
    }
    // With SO_REUSEPORT a second listener on the same address would bind without an
    // error and take a share of its connections, whatever its own settings.
    for (const auto& other : c.listeners) {
      if (other.address == l.address) {
        r.fail(r.get("address"), "address", "\"" + l.address + "\" is already a listener");
      }
    }
    l.proxy_protocol = r.boolean("proxy_protocol", false);
    l.trusted_proxies = r.networks("trusted_proxies", {});
    if (l.proxy_protocol && l.trusted_proxies.empty()) {
      r.fail(t, "trusted_proxies", "is required when proxy_protocol = true");
    }
    l.require_tls = r.boolean("require_tls", false);
    const std::string tls = r.str("tls", "starttls");
    if (tls == "implicit") {
      l.tls = ListenerConfig::Tls::kImplicit;
    } else if (tls == "none") {
      l.tls = ListenerConfig::Tls::kNone;
    } else if (tls != "starttls") {
      r.fail(r.get("tls"), "tls", "expected \"starttls\", \"implicit\" or \"none\"");
    }
    if (l.tls == ListenerConfig::Tls::kNone && l.require_tls) {
      r.fail(r.get("require_tls"), "require_tls", "cannot be true with tls = \"none\"");
    }
    l.auth_plaintext = r.boolean("auth_plaintext", false);
    if (const toml::node* n = r.get("milters")) {
      milter_names[l.address] = {n, r.strings("milters", {})};
    }
    r.finish();
    c.listeners.push_back(l);
  }
  if (c.listeners.empty()) throw ConfigError(path + ": at least one [[listener]] is required");
  if (const toml::table* t = top.table("relay")) {
    TableReader r(*t, path, "relay.");
    c.relay_networks = r.networks("relay_networks", c.relay_networks);
    for (const auto& d : r.strings("accept_domains", {})) {
      auto canonical = canonicalDomain(d);
      if (!canonical || isDomainLiteral(d)) {
        r.fail(r.get("accept_domains"), "accept_domains", "\"" + d + "\" is not a domain");
      }
      c.accept_domains.push_back(*canonical);
    }
    r.finish();
  }
  std::set<std::string> route_domains;
  for (const toml::table* t : top.tables("route")) {
    TableReader r(*t, path, "route.");
    RouteConfig rc = readRoute(r, t);
    if (!route_domains.insert(rc.domain).second) {
      r.fail(t, "domain", "\"" + rc.domain + "\" has more than one [[route]]");
    }
    c.routes.push_back(rc);
  }
  if (const toml::table* t = top.table("admin")) {
    TableReader r(*t, path, "admin.");
    c.admin_address = r.str("address", c.admin_address);
    if (!c.admin_address.empty() && !parseHostPort(c.admin_address)) {
      r.fail(r.get("address"), "address", "expected a numeric \"ip:port\", or \"\" for none");
    }
    c.admin_queue_networks = r.networks("queue_networks", c.admin_queue_networks);
    c.admin_token_file = r.str("token_file", "");
    r.finish();
  }
  if (const toml::table* t = top.table("limits")) {
    TableReader r(*t, path, "limits.");
    readLimits(r, c.limits);
  }
  for (const toml::table* t : top.tables("recipients")) {
    TableReader r(*t, path, "recipients.");
    c.recipient_checks.push_back(readRecipientCheck(r, t));
    for (size_t i = 0; i + 1 < c.recipient_checks.size(); ++i) {
      if (c.recipient_checks[i].domain == c.recipient_checks.back().domain) {
        r.fail(r.get("domain"), "domain", "has a [[recipients]] table already");
      }
    }
  }
  if (const toml::table* t = top.table("tls")) {
    TableReader r(*t, path, "tls.");
    c.tls.certificate = r.str("certificate", "");
    c.tls.private_key = r.str("private_key", "");
    if (c.tls.certificate.empty() != c.tls.private_key.empty()) {
      r.fail(t, "certificate", "certificate and private_key go together");
    }
    c.tls.ecdsa_certificate = r.str("ecdsa_certificate", "");
    c.tls.ecdsa_private_key = r.str("ecdsa_private_key", "");
    if (c.tls.ecdsa_certificate.empty() != c.tls.ecdsa_private_key.empty()) {
      r.fail(t, "ecdsa_certificate", "ecdsa_certificate and ecdsa_private_key go together");
    }
    if (!c.tls.ecdsa_certificate.empty() && c.tls.certificate.empty()) {
      r.fail(t, "ecdsa_certificate", "needs certificate and private_key too (the RSA pair)");
    }
    const toml::node* lifetime = r.get("session_lifetime");
    const bool zero =
        lifetime != nullptr && lifetime->is_integer() && **lifetime->as_integer() == 0;
    c.tls.session_lifetime = zero ? 0 : r.seconds("session_lifetime", c.tls.session_lifetime);
    r.finish();
  }
  for (const auto& l : c.listeners) {
    if (l.require_tls && c.tls.certificate.empty()) {
      throw ConfigError(path + ": listener " + l.address +
                        ": require_tls = true needs [tls] certificate and private_key");
    }
    if (l.tls == ListenerConfig::Tls::kImplicit && c.tls.certificate.empty()) {
      throw ConfigError(path + ": listener " + l.address +
                        ": tls = \"implicit\" needs [tls] certificate and private_key");
    }
  }
  for (const toml::table* t : top.tables("dkim")) {
    TableReader r(*t, path, "dkim.");
    DkimKey k;
    const std::string domain = r.str("domain", "");
    const std::optional<std::string> canonical = canonicalDomain(domain);
    if (!canonical || isDomainLiteral(domain)) r.fail(t, "domain", "expected a domain");
    k.domain = canonical.value_or("");
    k.selector = r.str("selector", "");
    const bool selector_ok =
        !k.selector.empty() && k.selector.size() <= 63 &&
        k.selector.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") ==
            std::string::npos;
    if (!selector_ok)
      r.fail(t, "selector", "expected a DNS label (letters, digits, '-', '.', '_')");
    const std::string algorithm = r.str("algorithm", "rsa-sha256");
    if (algorithm == "ed25519-sha256") {
      k.algorithm = DkimKey::Algorithm::kEd25519Sha256;
    } else if (algorithm != "rsa-sha256") {
      r.fail(r.get("algorithm"), "algorithm", "expected \"rsa-sha256\" or \"ed25519-sha256\"");
    }
    for (const std::string& h : r.strings("headers", dkimDefaultHeaders())) {
      const bool name_ok = !h.empty() && h.find_first_of(": \t\r\n") == std::string::npos;
      if (!name_ok) r.fail(r.get("headers"), "headers", "\"" + h + "\" is not a header name");
      k.headers.push_back(asciiLower(h));
    }
    if (std::find(k.headers.begin(), k.headers.end(), "from") == k.headers.end()) {
      r.fail(r.get("headers"), "headers", "must include from (RFC 6376 §5.4)");
    }
    const std::string key_path = r.str("private_key", "");
    Result<std::shared_ptr<evp_pkey_st>> key = DkimKey::loadKey(key_path, k.algorithm);
    if (!key) r.fail(r.get("private_key") ? r.get("private_key") : t, "private_key", key.error());
    if (key) k.key = std::move(*key);
    for (const DkimKey& other : c.dkim) {
      if (other.domain == k.domain && other.algorithm == k.algorithm) {
        r.fail(t, "domain", "has a [[dkim]] table for this algorithm already");
      }
    }
    r.finish();
    c.dkim.push_back(std::move(k));
  }
  for (const toml::table* t : top.tables("milter")) {
    TableReader r(*t, path, "milter.");
    c.milters.push_back(readMilter(r, t));
    for (size_t i = 0; i + 1 < c.milters.size(); ++i) {
      if (c.milters[i].name == c.milters.back().name) {
        r.fail(r.get("name"), "name", "\"" + c.milters.back().name + "\" is already a milter");
      }
    }
    r.finish();
  }
  for (const ListenerConfig& l : c.listeners) {
    std::vector<size_t>& chosen = c.listener_milters[l.address];
    auto named = milter_names.find(l.address);
    if (named == milter_names.end()) {
      for (size_t i = 0; i < c.milters.size(); ++i) chosen.push_back(i);  // default: all
      continue;
    }
    for (const std::string& name : named->second.second) {
      auto it = std::find_if(c.milters.begin(), c.milters.end(),
                             [&](const MilterConfig& m) { return m.name == name; });
      if (it == c.milters.end()) {
        const int line = static_cast<int>(named->second.first->source().begin.line);
        throw ConfigError(path + ":" + std::to_string(line) +
                          ": listener.milters: no [[milter]] named \"" + name + "\"");
      }
      chosen.push_back(static_cast<size_t>(it - c.milters.begin()));
    }
  }
  if (const toml::table* t = top.table("auth")) {
    TableReader r(*t, path, "auth.");
    c.auth.users_file = r.str("users_file", "");
    if (!c.auth.users_file.empty()) {
      try {
        c.auth.users = Credentials::load(c.auth.users_file);
      } catch (const ConfigError& e) {
        r.fail(r.get("users_file"), "users_file", e.what());
      }
    }
    c.auth.max_failures = static_cast<size_t>(r.integer("max_failures", 5, 1, 1000000));
    c.auth.failure_window = r.seconds("failure_window", c.auth.failure_window);
    r.finish();
  }
  if (const toml::table* t = top.table("delivery")) {
    TableReader r(*t, path, "delivery.");
    readDelivery(r, c.delivery);
  }
  if (const toml::table* t = top.table("tls_rpt")) {
    TableReader r(*t, path, "tls_rpt.");
    c.tls_rpt.directory = r.str("directory", "");
    if (!c.tls_rpt.directory.empty() && c.tls_rpt.directory.front() != '/') {
      r.fail(r.get("directory"), "directory", "expected an absolute path");
    }
    c.tls_rpt.organization = r.str("organization", "");
    c.tls_rpt.contact = r.str("contact", "");
    r.finish();
  }
  if (const toml::table* t = top.table("dns")) {
    TableReader r(*t, path, "dns.");
    readDns(r, c.dns);
  }
  top.finish();
  // Without a route for "*", every other domain goes by its MX records.
  if (!route_domains.contains("*"))
    c.routes.push_back(RouteConfig{.domain = "*", .next_hop = "mx"});
  for (auto& rc : c.routes) {
    if (!rc.tls_given) rc.tls = c.delivery.tls;
    if (rc.tls == TlsPolicy::kMtaSts && rc.next_hop != "mx") {
      // A policy names the recipient domain's MX hosts: a smarthost is not one of them.
      if (!rc.tls_given) {
        rc.tls = TlsPolicy::kOpportunistic;  // [delivery] tls is for the MX routes
      } else {
        throw ConfigError(path + ": route " + rc.domain +
                          ": tls = \"mta-sts\" needs next_hop = \"mx\"");
      }
    }
    if (rc.tls == TlsPolicy::kDane && !c.dns.dnssec) {
      // Without a validating resolver no answer is secure: "dane" would silently be
      // "opportunistic".
      throw ConfigError(path + ": route " + rc.domain +
                        ": tls = \"dane\" needs [dns] dnssec = true (a validating resolver)");
    }
    if (rc.max_connections == 0) rc.max_connections = c.delivery.connections_per_host;
    if (rc.messages_per_connection == 0) {
      rc.messages_per_connection = c.delivery.messages_per_connection;
    }
  }
  if (c.workers == 0) c.workers = std::max(1u, std::thread::hardware_concurrency());
  return c;
}

std::string readReferencedFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot read: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace postern
