// libFuzzer target for core/smtp_command.*: parseCommand and parsePathArg on any octets.
//
// The input is one command line with its terminator removed, as a session hands it over.
// Besides ASan/UBSan findings, a broken contract traps: every view returned must point
// into the input; a recognised verb must name itself; an accepted MAIL/RCPT path must
// hold no control octet (it is copied into the queue and the next hop's envelope), must
// flag 8-bit octets (SMTPUTF8 depends on it), and its parameters must be well formed.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/smtp_command.h"
#include "tests/fuzz/fuzz_check.h"

namespace postern {
namespace {

bool isBlank(char c) { return c == ' ' || c == '\t'; }

bool within(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

void checkPath(std::string_view arg, std::string_view keyword, std::string_view input) {
  PathArg out;
  auto err = parsePathArg(arg, keyword, out);
  if (err) {
    FUZZ_CHECK(err->code >= 500 && err->code <= 599);
    FUZZ_CHECK(!err->text.empty());
    return;
  }
  FUZZ_CHECK(within(out.mailbox, input));
  if (keyword == "TO") FUZZ_CHECK(!out.mailbox.empty());
  bool eight_bit = false;
  for (char ch : out.mailbox) {
    auto c = static_cast<unsigned char>(ch);
    FUZZ_CHECK(c >= 0x20 && c != 0x7f);  // no control octet, escaped or not
    if (c >= 0x80) eight_bit = true;
  }
  FUZZ_CHECK(out.eight_bit == eight_bit);
  FUZZ_CHECK(within(domainOf(out.mailbox), out.mailbox));
  for (const auto& p : out.params) {
    FUZZ_CHECK(within(p.keyword, input) && within(p.value, input));
    FUZZ_CHECK(!p.keyword.empty());
    for (char c : p.keyword) {
      FUZZ_CHECK((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '-');
    }
    FUZZ_CHECK(p.has_value == !p.value.empty());
    for (char c : p.value) FUZZ_CHECK(!isBlank(c));
  }
}

}  // namespace
}  // namespace postern

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace postern;
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  const Command cmd = parseCommand(input);
  FUZZ_CHECK(within(cmd.verb_text, input) && within(cmd.arg, input));
  for (char c : cmd.verb_text) FUZZ_CHECK(!isBlank(c));
  if (!cmd.arg.empty()) FUZZ_CHECK(!isBlank(cmd.arg.front()) && !isBlank(cmd.arg.back()));
  if (cmd.verb != Verb::kUnknown) FUZZ_CHECK(equalsIgnoreCase(cmd.verb_text, verbName(cmd.verb)));

  // The session passes the argument of MAIL / RCPT; try both keywords on it and on the
  // raw input, so the fuzzer need not spell the verb to reach the path grammar.
  for (std::string_view keyword : {"FROM", "TO"}) {
    checkPath(cmd.arg, keyword, input);
    checkPath(input, keyword, input);
  }
  return 0;
}
