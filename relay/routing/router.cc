#include "relay/routing/router.h"

#include "core/ascii.h"
#include "core/assert.h"
#include "core/domain.h"

namespace postern {
Router::Router(const std::vector<RouteConfig>& routes) {
  for (const auto& r : routes) {
    if (r.domain == "*") {
      fallback_ = &r;
    } else if (r.domain.starts_with("*.")) {
      suffix_.emplace(r.domain.substr(2), &r);
    } else {
      exact_.emplace(r.domain, &r);
    }
  }
  POSTERN_ASSERT(fallback_ != nullptr);
}

const RouteConfig* Router::route(std::string_view domain) const {
  std::string d = asciiLower(domain);
  if (auto it = exact_.find(d); it != exact_.end()) return it->second;
  // Longest suffix first: drop one label at a time.
  for (size_t dot = d.find('.'); dot != std::string::npos; dot = d.find('.', dot + 1)) {
    if (auto it = suffix_.find(d.substr(dot + 1)); it != suffix_.end()) return it->second;
  }
  return fallback_;
}

std::string recipientDomain(std::string_view address) {
  size_t at = address.rfind('@');
  if (at == std::string_view::npos) return "";
  // Recipients are stored canonical (Session::cmdRcpt), but a spool written by an older
  // version may hold other spellings.
  return canonicalDomain(address.substr(at + 1)).value_or(asciiLower(address.substr(at + 1)));
}

}  // namespace postern
