// postern: the relay's command line.
//
//   postern --config FILE [--spool-dir DIR]   run in the foreground until SIGTERM (SIGHUP
//                                             reads FILE again, see relay/reload.h)
//   postern check-config FILE                 validate a configuration and exit
//   postern queue ACTION [ID]                 queue tool (see relay/queue_cli.h)
//   postern --version                         version, git revision, OpenSSL and libuv
//
// A missing or invalid configuration is refused with a message naming the file, line and
// key, and exit status 2.
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>

#include "core/config.h"
#include "core/credentials.h"
#include "core/log.h"
#include "core/version.h"
#include "queue/spool_check.h"
#include "relay/admin_token.h"
#include "relay/queue_cli.h"
#include "relay/reload.h"
#include "relay/server.h"

namespace {

constexpr const char* kDefaultConfig = "/etc/postern/postern.toml";

struct Loaded {
  postern::Config config;
  postern::TlsContexts tls;
};

// Loads path and the files it names, or why the configuration is invalid.
postern::Result<Loaded> loadAll(const std::string& path) {
  Loaded out;
  try {
    out.config = postern::loadConfig(path);
  } catch (const postern::ConfigError& e) {
    return postern::fail(e.what());
  }
  // The certificate, key and CA file must be readable too (by the user this runs as: run
  // check-config as the relay's user to check permissions).
  postern::Result<postern::TlsContexts> files = postern::loadReferencedFiles(out.config);
  if (!files) return postern::fail(path + ": " + files.error());
  out.tls = std::move(*files);
  return out;
}

// Says why on stderr; the exit status of an invalid configuration.
int invalid(const std::string& why) {
  std::fprintf(stderr, "postern: invalid configuration: %s\n", why.c_str());
  return 2;
}

int runRelay(const std::string& config_path, const std::string& spool_dir) {
  postern::Result<Loaded> loaded = loadAll(config_path);
  if (!loaded) return invalid(loaded.error());
  postern::Config& config = loaded->config;
  postern::TlsContexts& tls = loaded->tls;
  if (!spool_dir.empty()) config.spool_dir = spool_dir;
  postern::initLogging(config.log_format, config.log_level);
  postern::logEvent(spdlog::level::info, "starting",
                    {{"version", postern::kVersion},
                     {"revision", postern::kRevision},
                     {"openssl", postern::opensslVersion()},
                     {"libuv", postern::libuvVersion()}});
  // A peer closing mid-write must not kill the process.
  signal(SIGPIPE, SIG_IGN);
  // Nor a file-size limit (RLIMIT_FSIZE): the write fails with EFBIG, which the spool
  // turns into 452 4.3.1 like any other write error.
  signal(SIGXFSZ, SIG_IGN);

  postern::Server server(std::make_shared<const postern::Config>(std::move(config)), std::move(tls),
                         config_path, spool_dir);
  int rc = server.run();
  if (rc == 0) postern::logEvent(spdlog::level::info, "stopped", {});
  return rc;
}

// `postern passwd`: a yescrypt hash of a password read from standard input (asked twice,
// without echo, on a terminal), for a line "user:HASH" of [auth] users_file.
int printPasswordHash() {
  auto readLine = [](const char* prompt) -> std::optional<std::string> {
    const bool tty = ::isatty(STDIN_FILENO) != 0;
    termios saved{};
    if (tty) {
      std::fputs(prompt, stderr);
      ::tcgetattr(STDIN_FILENO, &saved);
      termios quiet = saved;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    std::string line;
    int c;
    while ((c = std::getchar()) != EOF && c != '\n' && line.size() < 1024) {
      line.push_back(static_cast<char>(c));
    }
    if (tty) {
      ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
      std::fputs("\n", stderr);
    }
    if (c == EOF && line.empty()) return std::nullopt;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  };
  std::optional<std::string> password = readLine("Password: ");
  if (!password || password->empty()) {
    std::fprintf(stderr, "postern: no password given\n");
    return 2;
  }
  if (::isatty(STDIN_FILENO) && readLine("Again: ") != password) {
    std::fprintf(stderr, "postern: the passwords differ\n");
    return 2;
  }
  postern::Result<std::string> hash = postern::hashPassword(*password);
  if (!hash) {
    std::fprintf(stderr, "postern: %s\n", hash.error().c_str());
    return 1;
  }
  std::printf("%s\n", hash->c_str());
  return 0;
}

int checkConfig(const std::string& path) {
  if (postern::Result<Loaded> loaded = loadAll(path); !loaded) return invalid(loaded.error());
  std::printf("%s: ok\n", path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Postern SMTP edge relay"};
  app.require_subcommand(0, 1);
  app.set_version_flag("--version", postern::versionLine());
  std::string config_path;
  std::string spool_dir;
  app.add_option("--config,-c", config_path, "configuration file (TOML)");
  app.add_option("--spool-dir", spool_dir, "override server.spool_dir");

  std::string check_path;
  auto* check = app.add_subcommand("check-config", "validate a configuration file");
  check->add_option("file", check_path, "configuration file")->required();

  postern::QueueCommand qc;
  std::string admin;
  auto* queue = app.add_subcommand("queue", "list, inspect and act on the relay's queue");
  queue
      ->add_option("action", qc.action,
                   "list | summary | show ID | quarantine | flush [ID] | delete ID | bounce ID | "
                   "requeue ID | hold ID | release ID")
      ->required();
  queue->add_option("id", qc.id, "queue id (16 hex digits)");
  queue->add_option("--admin", admin,
                    "admin endpoint ip:port (default: from --config, else 127.0.0.1:9025)");
  queue->add_option("--spool-dir", qc.spool_dir, "read this spool directory offline instead");
  queue->add_flag("--json", qc.json, "JSON instead of text");
  queue->add_flag("--body", qc.body, "show: the message's content as spooled");
  std::string older_than;
  bool select_all = false;
  std::string sender;
  queue->add_flag("--all", select_all, "act on every queued message");
  queue->add_option("--domain", qc.selection.domain,
                    "select messages with a recipient at this domain");
  queue->add_option("--sender", sender,
                    "select messages from this sender (<> for the null sender)");
  queue->add_option("--older-than", older_than,
                    "select messages received before: 90s, 30m, 2h, 3d");
  queue->add_flag("--yes", qc.yes, "act on a selection without asking");
  queue->fallthrough();

  auto* passwd_cmd = app.add_subcommand(
      "passwd", "print a yescrypt hash of a password read from standard input ([auth] users_file)");

  std::string spool_check_dir;
  auto* spool = app.add_subcommand("spool", "offline spool tools");
  auto* spool_check = spool->add_subcommand(
      "check", "verify a spool's records without changing it (exit 1 if damaged)");
  spool_check->add_option("dir", spool_check_dir, "spool_dir, or one worker's wN")->required();
  spool->require_subcommand(1);

  CLI11_PARSE(app, argc, argv);
  if (*check) return checkConfig(check_path);
  if (*passwd_cmd) return printPasswordHash();
  if (*spool_check) {
    std::string report;
    const int rc = postern::checkSpool(spool_check_dir, report);
    std::fputs(report.c_str(), stdout);
    return rc;
  }
  if (*queue) {
    qc.selection.all = select_all;
    if (!sender.empty()) qc.selection.sender = sender == "<>" ? "" : sender;
    if (!older_than.empty()) {
      const std::optional<int64_t> age = postern::parseAge(older_than);
      if (!age || *age == 0) {
        std::fprintf(stderr, "postern: --older-than %s: use a duration such as 90s, 30m, 2h, 3d\n",
                     older_than.c_str());
        return 2;
      }
      qc.selection.older_than_ms = *age;
    }
    qc.admin = admin.empty() ? "127.0.0.1:9025" : admin;
    // The packaged config's place (the container image's too), so that `postern queue`
    // finds the admin address and token there without --config.
    if (config_path.empty() && ::access(kDefaultConfig, R_OK) == 0) config_path = kDefaultConfig;
    if (!config_path.empty() && qc.spool_dir.empty()) {
      try {
        postern::Config config = postern::loadConfig(config_path);
        if (!spool_dir.empty()) config.spool_dir = spool_dir;
        if (admin.empty()) qc.admin = config.admin_address;
        postern::Result<std::string> token =
            postern::readAdminToken(postern::adminTokenPath(config));
        if (!token) {
          std::fprintf(stderr, "postern: %s\n", token.error().c_str());
          return 1;
        }
        qc.token = std::move(*token);
      } catch (const postern::ConfigError& e) {
        return invalid(e.what());
      }
    }
    return postern::runQueueCommand(qc);
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "postern: --config FILE is required\n");
    return 2;
  }
  return runRelay(config_path, spool_dir);
}
