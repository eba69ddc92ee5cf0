// libFuzzer target for core/sasl.*: what an SMTP AUTH client sends, decoded and parsed.
//
// Besides ASan/UBSan findings, traps when: a base64 text that decodes does not encode
// back to itself ("=" aside, the empty response); the decoded length is not 3 per 4
// characters less the padding; a PLAIN response that parses does not reassemble into the
// octets it came from, or leaves authcid or password empty; a mechanism name other than
// PLAIN and LOGIN (in any case) is taken.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/sasl.h"
#include "tests/fuzz/fuzz_check.h"

namespace postern {

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (std::optional<std::string> decoded = decodeBase64(text)) {
    if (text != "=") {
      FUZZ_CHECK(encodeBase64(*decoded) == text);
      const size_t padding = text.ends_with("==") ? 2 : text.ends_with("=") ? 1 : 0;
      FUZZ_CHECK(decoded->size() == text.size() / 4 * 3 - padding);
    } else {
      FUZZ_CHECK(decoded->empty());
    }
  }
  if (std::optional<PlainResponse> plain = parsePlainResponse(text)) {
    FUZZ_CHECK(!plain->authcid.empty() && !plain->password.empty());
    const std::string whole = plain->authzid + '\0' + plain->authcid + '\0' + plain->password;
    FUZZ_CHECK(whole == text);
  }
  const SaslMechanism m = parseMechanism(text);
  if (m != SaslMechanism::kUnknown) FUZZ_CHECK(text.size() == 5);  // "PLAIN", "LOGIN"
  return 0;
}

}  // namespace postern
