// ASCII helpers shared by config, routing and mail handling. Only A-Z/a-z are folded:
// domain names and SMTP keywords are compared in ASCII, and octets >= 0x80 (UTF-8) are
// left as they are.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace postern {

// For a JSON string: quotes, backslashes and control characters escaped (the text may be
// a peer's).
inline std::string jsonEscape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

inline std::string asciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

inline std::string asciiUpper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

// Whether s has an octet with the top bit set (needs 8BITMIME or SMTPUTF8 to travel).
inline bool hasEightBit(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return true;
  }
  return false;
}

}  // namespace postern
