// Postern's configuration: one TOML file, read at start-up, on SIGHUP (relay/reload.h says
// which settings a reload can change) and by check-config.
//
// loadConfig() validates everything it reads: an unknown key, a wrong type or an
// impossible value throws ConfigError whose message names the file, line and key.
// Exceptions are used here only because this runs before any connection exists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dkim.h"
#include "core/network.h"

namespace postern {

// The largest payload of one spool record (queue/record.h): a message and its envelope
// must fit, or it would be acknowledged and then unreadable at the next start.
constexpr uint32_t kMaxSpoolRecord = 1u << 30;

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ListenerConfig {
  enum class Tls {
    kStartTls,  // STARTTLS offered when [tls] has a certificate (port 25, 587)
    kImplicit,  // TLS from the first octet, before the greeting (RFC 8314, port 465)
    kNone,      // never TLS
  };
  std::string address;
  bool proxy_protocol = false;           // expect a PROXY v1/v2 header first
  std::vector<Network> trusted_proxies;  // who may send that header
  bool require_tls = false;              // MAIL before STARTTLS: 530 5.7.0
  Tls tls = Tls::kStartTls;
  // AUTH offered and taken without TLS too (loopback test setups); else 538 5.7.11.
  bool auth_plaintext = false;
  bool operator==(const ListenerConfig&) const = default;
};

class Credentials;  // core/credentials.h

// [[milter]]: a mail filter spoken to over the Sendmail milter protocol (relay/inbound/
// milter_client.h), as Postfix's smtpd_milters.
struct MilterConfig {
  enum class DefaultAction { kTempfail, kAccept };
  std::string name;
  std::string address;   // "inet:host:port" or "unix:/path", as written
  std::string path;      // unix: the socket's path; inet: "" and sockaddr below
  sockaddr_storage inet{};
  double timeout = 30;   // connect, and each answer (progress packets restart it)
  // When the milter cannot be reached, times out or talks nonsense: 451 4.7.1 for the
  // step, or go on without it for the rest of the session.
  DefaultAction default_action = DefaultAction::kTempfail;
};

// SMTP AUTH (RFC 4954): who may log in, and how fast a client may guess.
struct AuthConfig {
  std::string users_file;                     // "": AUTH is not offered
  std::shared_ptr<const Credentials> users;   // read with the configuration
  size_t max_failures = 5;       // failed logins from one client address within...
  double failure_window = 300;   // ...this many seconds: then 454 4.7.0 until it passes
};

struct TlsConfig {
  std::string certificate;  // PEM chain; empty: STARTTLS is not offered
  std::string private_key;  // PEM
  // A second certificate of the other key type (as Postfix's smtpd_tls_eccert_file):
  // with an RSA certificate above and an ECDSA one here, clients that can check ECDSA get
  // the ECDSA one (cheaper to sign with), the others the RSA one. Empty: only the first.
  std::string ecdsa_certificate;
  std::string ecdsa_private_key;
  // TLS session tickets: how long a client may resume its session without a full
  // handshake. The keys that seal tickets are shared by every worker and replaced after
  // this long (tickets sealed with the key before stay valid until their own lifetime
  // ends). 0: no tickets, every connection makes a full handshake.
  double session_lifetime = 7200;
};

// Outbound STARTTLS per route: "none" never, "opportunistic" when offered (no
// verification, a failed handshake retries without TLS), "required" only with a verified
// certificate for the next hop's name, else the message is deferred; "mta-sts" (RFC
// 8461, MX routes): the recipient domain's policy in enforce mode makes TLS verified with
// a listed MX host, else opportunistic; "dane" (RFC 7672): for a next hop with
// DNSSEC-secure TLSA records, TLS verified against them or the message is deferred;
// without them, the domain's MTA-STS policy as "mta-sts" does.
enum class TlsPolicy { kNone, kOpportunistic, kRequired, kDane, kMtaSts };

struct RouteConfig {
  std::string domain;    // "example.com", "*.example.com" (subdomains only) or "*"
  std::string next_hop;  // "host:port", "host" (port delivery.smtp_port) or "mx"
  TlsPolicy tls = TlsPolicy::kOpportunistic;
  bool tls_given = false;  // tls was in the table; else [delivery] tls, filled in by loadConfig
  // Per next hop; 0 in the file means "the [delivery] default", filled in by loadConfig.
  size_t max_connections = 0;
  size_t messages_per_connection = 0;
  double max_rate = 0;  // messages per second to one next hop; 0: unlimited
  // next_hop = "mx" only: MX hosts with loopback, private or link-local addresses may be
  // used (an internal DNS view); by default they are refused (relay/next_hop_guard.h).
  bool allow_internal_mx = false;

  bool isMx() const { return next_hop == "mx"; }
};

class RecipientList;

// Recipient validation at RCPT for one domain ([[recipients]]): unknown recipients are
// refused (550 5.1.1) rather than accepted and bounced to a usually forged sender.
struct RecipientCheck {
  enum class Mode {
    kList,   // the addresses in file (core/recipient_list.h)
    kProbe,  // what the domain's next hop says to RCPT, cached (relay/recipient_probe.h)
  };
  std::string domain;  // canonical
  Mode mode = Mode::kList;
  std::string file;
  std::shared_ptr<const RecipientList> list;  // kList: read with the configuration
  double positive_ttl = 86400;                // kProbe: seconds an answer is reused, "exists"...
  double negative_ttl = 3600;                 // ...and "unknown"
  double probe_timeout = 30;                  // seconds for a whole probe
  // The next hop cannot be asked (down, 4xx): "closed" answers 450 4.1.1, "open" accepts.
  bool fail_open = false;
  size_t max_probes = 4;  // probe connections at once, for the whole relay
};

struct Limits {
  size_t command_line = 2048;  // octets, including CRLF
  size_t data_line = 1000;     // octets, including CRLF (998 + CRLF)
  size_t message_size = 25 * 1024 * 1024;
  // Octets of a message a session holds in memory; past it the body goes on into a file
  // in the spool directory (queue/spill_file.h), so memory does not grow with messages.
  size_t message_memory = 256 * 1024;
  size_t recipients = 1000;
  size_t errors = 20;
  double command_timeout = 300;  // seconds
  double data_timeout = 300;     // seconds
  size_t connections = 20000;
  size_t connections_per_ip = 100;
  // IPv6 clients are counted per prefix of this length (one /64 is one site: a client
  // has 2^64 addresses to spread over); IPv4 per address.
  unsigned ipv6_prefix = 64;
  // Envelope and in-memory body octets of all sessions together (core/memory_budget.h).
  size_t memory_budget = 256u << 20;
  size_t messages_per_connection = 1000;
  // A message whose header section carries more "Received:" fields than this has looped
  // (or been relayed absurdly often): 554 5.4.6, like Postfix's hopcount_limit.
  size_t hop_limit = 50;
  double proxy_timeout = 10;                 // seconds to receive a PROXY header
  // TLS handshake steps a worker runs per turn of its loop; more wait for later turns
  // (relay/inbound/handshake_gate.h), so a storm of handshakes cannot stall other sessions.
  size_t tls_handshakes_per_turn = 4;
  bool normalise_bare_line_endings = false;  // "normalise"; default "reject"
};

struct DeliveryConfig {
  TlsPolicy tls = TlsPolicy::kOpportunistic;  // for routes that do not say
  size_t connections_per_host = 20;  // concurrent connections to one next hop
  size_t messages_per_connection = 100;
  double idle_timeout = 5;  // seconds a pooled connection waits for work
  uint16_t smtp_port = 25;  // for MX hosts and next hops given without a port
  double connect_timeout = 30;
  double greeting_timeout = 300;  // 220 after connect
  double command_timeout = 300;   // EHLO, STARTTLS, MAIL, RCPT, DATA, RSET
  double data_timeout = 600;      // sending the body and its final reply
  double retry_min = 300;         // first retry delay, seconds, doubling
  double retry_max = 4000;
  double queue_lifetime = 5 * 86400;
  std::string ca_file;  // PEM CAs for tls = "required"; empty: the system's store
  // A bounce quotes the whole original up to this size, else only its header.
  size_t bounce_size_limit = 50000;
  // Seconds a message may wait before its sender gets a "delayed" notice; 0: never (as
  // Postfix's delay_warning_time, off by default).
  double delay_warning = 0;
};

struct DnsConfig {
  // "ip" or "ip:port"; empty: the system's resolv.conf.
  std::vector<std::string> servers;
  double timeout = 5;     // seconds per query attempt
  double max_ttl = 3600;  // cached answers are kept at most this long
  // The servers validate DNSSEC and the path to them is trusted (loopback, or a link of
  // its own): answers they mark authentic (the AD bit) count as secure, which DANE needs.
  // As Postfix's smtp_dns_support_level = dnssec.
  bool dnssec = false;
  bool operator==(const DnsConfig&) const = default;
};

// SMTP TLS reporting (RFC 8460): daily JSON reports of the TLS sessions made under
// MTA-STS and DANE policies (relay/outbound/tls_reports.h).
struct TlsRptConfig {
  std::string directory;     // "": no reports
  std::string organization;  // "organization-name"; "": the hostname
  std::string contact;       // "contact-info"; "": postmaster@hostname
  bool operator==(const TlsRptConfig&) const = default;
};

struct Config {
  std::string hostname = "localhost";
  unsigned workers = 0;         // 0: one per core
  bool accept_handoff = false;  // "handoff": one acceptor; default "reuseport"
  std::string spool_dir = "/var/spool/postern";
  size_t segment_size = 64u << 20;  // a spool segment is closed past this size
  // SIGTERM: how long sessions and delivery transactions may finish before they are cut.
  double drain_timeout = 10;
  // Reload when the file changes (relay/config_watch.h), stat()ed this often (seconds).
  bool reload_on_change = false;
  double reload_check_interval = 2;
  std::vector<ListenerConfig> listeners;
  std::vector<Network> relay_networks;
  std::vector<std::string> accept_domains;  // lower-case
  std::vector<RouteConfig> routes;
  std::vector<RecipientCheck> recipient_checks;
  std::string admin_address = "127.0.0.1:9025";
  // Who may use the queue API (it shows addresses and can delete mail); /healthz,
  // /readyz and /metrics answer anyone who reaches admin_address.
  std::vector<Network> admin_queue_networks;  // default: loopback
  // The queue API's bearer token; "": one the relay makes in spool_dir/admin.token
  // (relay/admin_token.h).
  std::string admin_token_file;
  std::string log_format = "keyvalue";  // or "json"
  std::string log_level = "info";
  Limits limits;
  DeliveryConfig delivery;
  DnsConfig dns;
  TlsRptConfig tls_rpt;
  TlsConfig tls;
  AuthConfig auth;
  // [[dkim]]: signing keys by From: domain, read with the configuration (one per domain
  // and algorithm; both algorithms for one domain sign twice).
  std::vector<DkimKey> dkim;
  // [[milter]]s, and which of them (indexes, in order) each listener's sessions use: its
  // `milters` names, or all. Kept out of ListenerConfig so that a reload can change them
  // without a restart (a listener's socket settings need one).
  std::vector<MilterConfig> milters;
  std::map<std::string, std::vector<size_t>> listener_milters;  // by listener address
  const std::vector<size_t>& miltersFor(const std::string& listener_address) const;
};

Config loadConfig(const std::string& path);
// The whole of a file the configuration names (a recipient list, a users file); throws
// ConfigError "PATH: cannot read: WHY".
std::string readReferencedFile(const std::string& path);

}  // namespace postern
