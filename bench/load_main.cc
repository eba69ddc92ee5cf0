// postern-load: the bundled load tool. `source` sends test messages to an SMTP server and
// measures acceptance rate and latency; `sink` receives them and verifies every one.
//
// Both modes are bounded in message count and time. Bad options exit non-zero with CLI11's
// message, an unusable address with 2; otherwise the exit status is the run's verdict
// (see load_source.h and load_sink.h).
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdint>
#include <string>

#include "bench/load_sink.h"
#include "bench/load_source.h"

int main(int argc, char** argv) {
  using postern::SinkOptions;
  using postern::SourceOptions;

  CLI::App app{"postern-load: SMTP load source and verifying sink"};
  app.require_subcommand(1);

  SourceOptions src;
  CLI::App* source = app.add_subcommand("source", "send test messages to an SMTP server");
  source->add_option("--server", src.server, "server HOST:PORT (numeric)")->required();
  source->add_option("--messages", src.messages, "messages to send in total")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{100000000}));
  source->add_option("--concurrency", src.concurrency, "concurrent connections")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  source->add_option("--size", src.message.size, "approximate message size in bytes")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, size_t{1} << 30));
  source->add_option("--recipients", src.message.recipients, "recipients per message")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  source
      ->add_option("--messages-per-connection", src.messages_per_connection,
                   "messages per connection before QUIT and reconnect")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 30));
  source->add_flag("--pipelining,!--no-pipelining", src.pipelining,
                   "force PIPELINING on or off (default: when the server offers it)");
  source->add_flag("--starttls", src.starttls,
                   "upgrade every connection with STARTTLS (certificate not verified)");
  source
      ->add_flag("--tls-resume", src.tls_resume,
                 "with --starttls: offer the TLS session the last connection obtained")
      ->needs("--starttls");
  source->add_option("--from", src.message.from, "envelope and header sender")
      ->capture_default_str();
  source->add_option("--to-domain", src.message.to_domain, "recipient domain")
      ->capture_default_str();
  source->add_option("--timeout", src.timeout_s, "give up after this many seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  source->add_flag("--quiet", src.quiet, "no progress lines on stderr");
  source->add_option("--ack-log", src.ack_log,
                     "write the seq of every message answered 2xx to this file, one per line");

  SinkOptions snk;
  CLI::App* sink = app.add_subcommand("sink", "receive and verify test messages");
  sink->add_option("--listen", snk.listen, "listen on HOST:PORT (numeric; port 0: any)")
      ->required();
  sink->add_option("--expect", snk.expect, "stop after this many unique messages")
      ->required()
      ->check(CLI::Range(uint64_t{1}, uint64_t{100000000}));
  sink->add_option("--timeout", snk.timeout_s, "give up after this many seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sink->add_option("--report", snk.report, "also write the result line to this file");
  sink->add_option("--hostname", snk.hostname, "name in the greeting and EHLO reply")
      ->capture_default_str();
  sink->add_flag("--quiet", snk.quiet, "no progress lines on stderr");

  CLI11_PARSE(app, argc, argv);

  // A write to a connection the peer has reset must come back as EPIPE, not kill us.
  std::signal(SIGPIPE, SIG_IGN);

  if (*source) return postern::Source(src).run();
  return postern::Sink(snk).run();
}
