// Micro-benchmark of the SMTP command grammar: parseCommand on every line and parsePathArg
// on MAIL/RCPT, over the command lines of two realistic transactions, against a baseline
// that only recognises the verb with strncasecmp.
#include <benchmark/benchmark.h>
#include <strings.h>

#include <array>
#include <cstddef>
#include <string_view>

#include "core/smtp_command.h"

namespace postern {
namespace {

// Two transactions on one connection as real clients send them (terminators removed, as
// the splitter hands them over): Postfix-style ESMTP with SIZE/BODY and DSN, a bounce
// with the null sender, a lower-case client, RSET between transactions.
constexpr std::array<std::string_view, 14> kCommands{{
    "EHLO mail-ed1-f54.google.com",
    "MAIL FROM:<john.doe+newsletter@example.org> SIZE=48213 BODY=8BITMIME",
    "RCPT TO:<alice@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.com",
    "RCPT TO:<bob.smith@sub.example.net> NOTIFY=FAILURE,DELAY",
    "RCPT TO:<carol@example.com>",
    "DATA",
    "RSET",
    "MAIL FROM:<> SIZE=2311",
    "RCPT TO:<postmaster@example.com> NOTIFY=NEVER",
    "DATA",
    "rset",
    "mail from:<noreply@notifications.example-shop.co.uk> size=10240 body=7BIT",
    "rcpt to:<d.evans@example.com>",
    "QUIT",
}};

void BM_ParseCommand(benchmark::State& state) {
  // Check once that every line parses as intended.
  for (std::string_view line : kCommands) {
    Command cmd = parseCommand(line);
    PathArg path;
    if (cmd.verb == Verb::kUnknown ||
        (cmd.verb == Verb::kMail && parsePathArg(cmd.arg, "FROM", path)) ||
        (cmd.verb == Verb::kRcpt && parsePathArg(cmd.arg, "TO", path))) {
      state.SkipWithError("a benchmark command does not parse");
      return;
    }
  }
  for (auto _ : state) {
    for (std::string_view line : kCommands) {
      benchmark::DoNotOptimize(line);
      Command cmd = parseCommand(line);
      benchmark::DoNotOptimize(cmd);
      if (cmd.verb == Verb::kMail || cmd.verb == Verb::kRcpt) {
        PathArg path;  // one per command, as relay/session_commands.cc does
        auto err = parsePathArg(cmd.arg, cmd.verb == Verb::kMail ? "FROM" : "TO", path);
        benchmark::DoNotOptimize(err);
        benchmark::DoNotOptimize(path);
      }
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kCommands.size()));
}
BENCHMARK(BM_ParseCommand);

// Baseline: verb recognition only, strncasecmp against the verb table (the same 21 verbs
// parseCommand knows), no argument parsing.
constexpr std::array<std::string_view, 21> kVerbNames{{
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "VRFY", "EXPN", "HELP",
    "QUIT", "STARTTLS", "AUTH", "ETRN", "SEND", "SOML", "SAML", "TURN", "VERB", "TICK",
}};

void BM_ParseCommand_StrncasecmpBaseline(benchmark::State& state) {
  for (auto _ : state) {
    for (std::string_view line : kCommands) {
      benchmark::DoNotOptimize(line);
      size_t verb = kVerbNames.size();
      for (size_t i = 0; i < kVerbNames.size(); ++i) {
        std::string_view v = kVerbNames[i];
        if (line.size() >= v.size() && strncasecmp(line.data(), v.data(), v.size()) == 0 &&
            (line.size() == v.size() || line[v.size()] == ' ')) {
          verb = i;
          break;
        }
      }
      benchmark::DoNotOptimize(verb);
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kCommands.size()));
}
BENCHMARK(BM_ParseCommand_StrncasecmpBaseline);

}  // namespace
}  // namespace postern
