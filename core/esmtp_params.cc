#include "core/esmtp_params.h"

#include "core/smtp_command.h"

namespace postern {
namespace {

bool isUpperHex(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }

bool isAtomChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.';
}

}  // namespace

bool isXtext(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '+') {
      if (i + 2 >= s.size()) return false;
      if (!isUpperHex(s[i + 1]) || !isUpperHex(s[i + 2])) return false;
      i += 2;
    } else if (c < 33 || c > 126 || c == '=') {
      return false;
    }
  }
  return true;
}

bool isValidNotify(std::string_view s) {
  if (equalsIgnoreCase(s, "NEVER")) return true;
  bool seen[3] = {false, false, false};
  while (true) {
    size_t comma = s.find(',');
    std::string_view item = s.substr(0, comma);
    int k = equalsIgnoreCase(item, "SUCCESS")   ? 0
            : equalsIgnoreCase(item, "FAILURE") ? 1
            : equalsIgnoreCase(item, "DELAY")   ? 2
                                                : -1;
    if (k < 0 || seen[k]) return false;
    seen[k] = true;
    if (comma == std::string_view::npos) return true;
    s.remove_prefix(comma + 1);
  }
}

bool isValidOrcpt(std::string_view s) {
  size_t semi = s.find(';');
  if (s.size() > 500 || semi == 0 || semi == std::string_view::npos || semi + 1 == s.size()) {
    return false;
  }
  for (char c : s.substr(0, semi)) {
    if (!isAtomChar(c)) return false;
  }
  return isXtext(s.substr(semi + 1));
}

bool isValidRet(std::string_view s) {
  return equalsIgnoreCase(s, "FULL") || equalsIgnoreCase(s, "HDRS");
}

bool isValidEnvid(std::string_view s) { return !s.empty() && s.size() <= 100 && isXtext(s); }

}  // namespace postern
