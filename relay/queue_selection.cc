#include "relay/queue_selection.h"

#include <charconv>

#include "core/ascii.h"

namespace postern {
namespace {

std::string percentEncode(std::string_view v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : v) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '-' || c == '.' || c == '_' || c == '~' || c == '@';
    if (plain) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percentDecode(std::string_view v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != '%') {
      out += v[i] == '+' ? ' ' : v[i];
      continue;
    }
    if (i + 2 >= v.size()) return std::nullopt;  // a '%' needs two hex digits after it
    const int hi = hexValue(v[i + 1]), lo = hexValue(v[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string_view domainOf(std::string_view address) {
  const size_t at = address.rfind('@');
  return at == std::string_view::npos ? std::string_view{} : address.substr(at + 1);
}

}  // namespace

bool QueueSelection::matches(const QueueEntry& e, int64_t now_ms) const {
  if (empty()) return false;
  if (sender && asciiLower(*sender) != asciiLower(e.sender)) return false;
  if (older_than_ms > 0 && now_ms - e.received_ms < older_than_ms) return false;
  if (!state.empty() && state != e.state) return false;
  if (!domain.empty()) {
    const std::string want = asciiLower(domain);
    bool any = false;
    for (const std::string& r : e.recipients) any |= asciiLower(domainOf(r)) == want;
    if (!any) return false;
  }
  return true;
}

std::optional<int64_t> parseAge(std::string_view text) {
  if (text.empty()) return std::nullopt;
  int64_t unit = 1000;
  switch (text.back()) {
    case 's':
      text.remove_suffix(1);
      break;
    case 'm':
      unit = 60 * 1000;
      text.remove_suffix(1);
      break;
    case 'h':
      unit = 3600 * 1000;
      text.remove_suffix(1);
      break;
    case 'd':
      unit = 86400 * 1000;
      text.remove_suffix(1);
      break;
    default:
      break;
  }
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  // At most about 100 years, so the product cannot overflow.
  if (text.empty() || ec != std::errc{} || ptr != text.data() + text.size() || n < 0 ||
      n > 36500LL * 86400) {
    return std::nullopt;
  }
  return n * unit;
}

std::string selectionQuery(const QueueSelection& s) {
  std::string q;
  auto add = [&q](std::string_view key, std::string_view value) {
    q += q.empty() ? "" : "&";
    q.append(key).append("=").append(percentEncode(value));
  };
  if (s.all) add("all", "1");
  if (!s.domain.empty()) add("domain", s.domain);
  if (s.sender) add("sender", *s.sender);
  if (s.older_than_ms > 0) add("older_than", std::to_string(s.older_than_ms / 1000) + "s");
  if (!s.state.empty()) add("state", s.state);
  return q;
}

Result<QueueSelection> parseSelection(std::string_view query) {
  QueueSelection s;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    const std::string_view key = pair.substr(0, eq);
    const std::optional<std::string> value =
        percentDecode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
    if (!value) return fail("bad percent-encoding in " + std::string(key));
    if (key == "all") {
      if (*value != "1") return fail("all takes 1");
      s.all = true;
    } else if (key == "domain") {
      if (value->empty()) return fail("domain is empty");
      s.domain = *value;
    } else if (key == "sender") {
      s.sender = *value == "<>" ? "" : *value;
    } else if (key == "older_than") {
      const std::optional<int64_t> age = parseAge(*value);
      if (!age || *age == 0) return fail("older_than takes a duration such as 90s, 30m, 2h, 3d");
      s.older_than_ms = *age;
    } else if (key == "state") {
      if (*value != "ready" && *value != "deferred" && *value != "active" && *value != "held") {
        return fail("state takes ready, deferred, active or held");
      }
      s.state = *value;
    } else {
      return fail("unknown selection key \"" + std::string(key) + "\"");
    }
  }
  return s;
}

}  // namespace postern
