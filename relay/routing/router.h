// Router: which [[route]] a recipient domain takes. An exact domain wins over the longest
// "*.suffix" that matches (subdomains only, as in "*.example.com" for a.example.com but
// not example.com), which wins over "*". loadConfig always provides a "*" route, so every
// domain has one. Pure lookup, built once from the config.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/config.h"

namespace postern {

class Router {
 public:
  explicit Router(const std::vector<RouteConfig>& routes);

  // The route for a domain (any case); never null.
  const RouteConfig* route(std::string_view domain) const;

 private:
  std::unordered_map<std::string, const RouteConfig*> exact_;
  std::unordered_map<std::string, const RouteConfig*> suffix_;  // key without the "*."
  const RouteConfig* fallback_ = nullptr;
};

// The domain part of an address in canonical form ("user@Example.COM." -> "example.com",
// core/domain.h); "" if none.
std::string recipientDomain(std::string_view address);

}  // namespace postern
