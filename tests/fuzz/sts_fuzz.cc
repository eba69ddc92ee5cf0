// libFuzzer target for core/mta_sts.*: the _mta-sts TXT record and the policy file, both
// from outside (DNS, an HTTPS server).
//
// Besides ASan/UBSan findings, traps when: an id that parses is not 1 to 32 letters and
// digits; a policy that parses has a max_age over a year, more than kMaxMx patterns, a
// pattern that is empty, not lower-case, or with a character outside letters, digits, '-',
// '.' (and a leading "*."), or no pattern outside mode none; a pattern does not match
// itself (a wildcard: with a label put in front), or matches with a second label in front.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/mta_sts.h"
#include "tests/fuzz/fuzz_check.h"

namespace postern {
namespace mta_sts {
namespace {

void checkPattern(const Policy& p, const std::string& pattern) {
  FUZZ_CHECK(!pattern.empty());
  std::string_view rest = pattern;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  FUZZ_CHECK(!rest.empty());
  for (char c : rest) {
    FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.');
  }
  if (pattern.starts_with("*.")) {
    FUZZ_CHECK(mxMatches(p, "mx." + std::string(rest)));
    // "a.mx.REST" matches only if some other pattern allows it.
  } else {
    FUZZ_CHECK(mxMatches(p, pattern));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (auto id = parseTxt(in)) {
    FUZZ_CHECK(!id->empty() && id->size() <= 32);
    for (char c : *id) {
      FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
    }
  }
  if (auto p = parsePolicy(in)) {
    FUZZ_CHECK(p->max_age <= kMaxAge);
    FUZZ_CHECK(p->mx.size() <= kMaxMx);
    FUZZ_CHECK(p->mode == Policy::Mode::kNone || !p->mx.empty());
    for (const std::string& pattern : p->mx) checkPattern(*p, pattern);
    mxMatches(*p, in);  // any host, any bytes
  }
  return 0;
}

}  // namespace mta_sts
}  // namespace postern
