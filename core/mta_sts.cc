#include "core/mta_sts.h"

#include "core/ascii.h"

namespace postern {
namespace mta_sts {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool isAlnum(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// A pattern of §3.2: a domain name, possibly "*." and a domain; letters, digits, '-' and
// '.' (A-labels), no empty label.
bool validPattern(std::string_view p) {
  if (p.starts_with("*.")) p.remove_prefix(2);
  if (p.empty() || p.size() > 253 || p.front() == '.' || p.back() == '.') return false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '.' && p[i + 1] == '.') return false;
    if (!isAlnum(c) && c != '-' && c != '.') return false;
  }
  return true;
}

}  // namespace

std::optional<std::string> parseTxt(std::string_view txt) {
  // §3.1: fields separated by ';', "v=STSv1" first, an "id" of 1 to 32 alphanumerics;
  // other fields ignored.
  std::optional<std::string> id;
  bool first = true;
  while (!txt.empty()) {
    const size_t semi = txt.find(';');
    std::string_view field = trim(txt.substr(0, semi));
    txt = semi == std::string_view::npos ? std::string_view{} : txt.substr(semi + 1);
    if (field.empty() && !first) continue;
    const size_t eq = field.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    const std::string_view key = trim(field.substr(0, eq));
    const std::string_view value = trim(field.substr(eq + 1));
    if (first) {
      if (key != "v" || value != "STSv1") return std::nullopt;
      first = false;
      continue;
    }
    if (key == "id") {
      if (value.empty() || value.size() > 32) return std::nullopt;
      for (char c : value) {
        if (!isAlnum(c)) return std::nullopt;
      }
      id = std::string(value);
    }
  }
  return id;
}

std::optional<Policy> parsePolicy(std::string_view body) {
  if (body.size() > kMaxPolicy) return std::nullopt;
  Policy p;
  bool version = false, mode = false, max_age = false;
  while (!body.empty()) {
    const size_t nl = body.find('\n');
    std::string_view line = body.substr(0, nl);
    body = nl == std::string_view::npos ? std::string_view{} : body.substr(nl + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (trim(line).empty()) continue;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const std::string_view key = trim(line.substr(0, colon));
    const std::string_view value = trim(line.substr(colon + 1));
    if (key == "version") {
      if (value != "STSv1") return std::nullopt;
      version = true;
    } else if (key == "mode") {
      if (value == "enforce") {
        p.mode = Policy::Mode::kEnforce;
      } else if (value == "testing") {
        p.mode = Policy::Mode::kTesting;
      } else if (value == "none") {
        p.mode = Policy::Mode::kNone;
      } else {
        return std::nullopt;
      }
      mode = true;
    } else if (key == "max_age") {
      if (value.empty() || value.size() > 10) return std::nullopt;
      uint64_t v = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<uint64_t>(c - '0');
      }
      p.max_age = std::min(v, kMaxAge);
      max_age = true;
    } else if (key == "mx") {
      if (!validPattern(value)) return std::nullopt;
      if (p.mx.size() < kMaxMx) p.mx.push_back(asciiLower(value));
    }
  }
  if (!version || !mode || !max_age) return std::nullopt;
  if (p.mode != Policy::Mode::kNone && p.mx.empty()) return std::nullopt;
  return p;
}

bool mxMatches(const Policy& policy, std::string_view host) {
  if (host.ends_with('.')) host.remove_suffix(1);
  const std::string h = asciiLower(host);
  for (const std::string& pattern : policy.mx) {
    if (pattern.starts_with("*.")) {
      // One label, any, then exactly the rest.
      const size_t dot = h.find('.');
      if (dot != std::string::npos && dot > 0 && h.substr(dot + 1) == pattern.substr(2)) {
        return true;
      }
    } else if (h == pattern) {
      return true;
    }
  }
  return false;
}

const char* modeName(Policy::Mode mode) {
  switch (mode) {
    case Policy::Mode::kEnforce:
      return "enforce";
    case Policy::Mode::kTesting:
      return "testing";
    case Policy::Mode::kNone:
      return "none";
  }
  return "none";
}

}  // namespace mta_sts
}  // namespace postern
