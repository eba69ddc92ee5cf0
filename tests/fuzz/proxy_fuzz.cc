// libFuzzer target for core/proxy_protocol.*: parseProxyHeader on any octets.
//
// Besides ASan/UBSan findings, traps when: consumed exceeds the input; kDone consumes
// nothing or more than the largest header; kNeedMore reports a consumed length (the
// caller must not skip anything); kNeedMore is returned for an input already long
// enough to hold the largest header (a peer could make us buffer without bound); a
// completed header's proper prefixes do not all give kNeedMore, or the bytes after the
// header change the result; an address is reported with a family other than IPv4/IPv6;
// a v1 TCP4/TCP6 line accepted outside the specification's grammar.
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "core/proxy_protocol.h"
#include "tests/fuzz/fuzz_check.h"

namespace postern {
namespace {

constexpr size_t kMaxHeader = std::max(kMaxProxyV1, 16 + kMaxProxyV2Payload);

bool sameAddress(const sockaddr_storage& a, const sockaddr_storage& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace
}  // namespace postern

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace postern;
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  ProxyHeader header;
  size_t consumed = 0;
  const ProxyParse result = parseProxyHeader(input, header, consumed);
  FUZZ_CHECK(consumed <= size);
  if (result == ProxyParse::kNeedMore) {
    FUZZ_CHECK(consumed == 0);
    FUZZ_CHECK(size < kMaxHeader);
    return 0;
  }
  if (result == ProxyParse::kInvalid) return 0;

  FUZZ_CHECK(consumed > 0 && consumed <= kMaxHeader);
  if (header.has_address) {
    const auto family = header.source.ss_family;
    FUZZ_CHECK(family == AF_INET || family == AF_INET6);
    FUZZ_CHECK(header.destination.ss_family == family);
  }

  // A v1 TCP4/TCP6 line is "PROXY" and five fields, single spaces, printable US-ASCII,
  // nothing after the destination port (UNKNOWN lines may carry anything before CRLF).
  const std::string_view line = input.substr(0, consumed);
  if (line.starts_with("PROXY TCP")) {
    FUZZ_CHECK(line.ends_with("\r\n"));
    const std::string_view fields = line.substr(0, line.size() - 2);
    FUZZ_CHECK(std::count(fields.begin(), fields.end(), ' ') == 5);
    FUZZ_CHECK(fields.find("  ") == std::string_view::npos && fields.back() != ' ');
    for (char c : fields) FUZZ_CHECK(c >= 0x20 && c <= 0x7e);
  }

  // Every proper prefix needs more; the header alone, or with any tail, gives the same.
  for (size_t n = 0; n < consumed; ++n) {
    ProxyHeader h;
    size_t c = 99;
    FUZZ_CHECK(parseProxyHeader(input.substr(0, n), h, c) == ProxyParse::kNeedMore);
    FUZZ_CHECK(c == 0);
  }
  for (size_t n : {consumed, (consumed + size) / 2}) {
    ProxyHeader h;
    size_t c = 0;
    FUZZ_CHECK(parseProxyHeader(input.substr(0, n), h, c) == ProxyParse::kDone);
    FUZZ_CHECK(c == consumed);
    FUZZ_CHECK(h.has_address == header.has_address);
    if (h.has_address) {
      FUZZ_CHECK(sameAddress(h.source, header.source));
      FUZZ_CHECK(sameAddress(h.destination, header.destination));
    }
  }
  return 0;
}
