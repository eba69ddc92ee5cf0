#include "core/sasl.h"

#include <openssl/evp.h>

#include "core/smtp_command.h"

namespace postern {

std::optional<std::string> decodeBase64(std::string_view text) {
  if (text == "=") return std::string();
  if (text.empty() || text.size() % 4 != 0) return std::nullopt;
  size_t padding = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (c == '=' && i + 2 >= text.size()) {
      ++padding;
    } else if (!alphabet || padding > 0) {
      return std::nullopt;  // outside the alphabet, or data after padding
    }
  }
  // EVP_DecodeBlock decodes whole groups, padding included as zero octets.
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size()) return std::nullopt;
  out.resize(out.size() - padding);
  // Canonical only (RFC 4648 §3.5): the bits that padding leaves over must be zero, so that
  // one response has one spelling.
  if (encodeBase64(out) != text) return std::nullopt;
  return out;
}

std::string encodeBase64(std::string_view data) {
  std::string out((data.size() + 2) / 3 * 4 + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(data.data()),
                                static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::optional<PlainResponse> parsePlainResponse(std::string_view decoded) {
  const size_t first = decoded.find('\0');
  if (first == std::string_view::npos) return std::nullopt;
  const size_t second = decoded.find('\0', first + 1);
  if (second == std::string_view::npos ||
      decoded.find('\0', second + 1) != std::string_view::npos) {
    return std::nullopt;
  }
  PlainResponse r{std::string(decoded.substr(0, first)),
                  std::string(decoded.substr(first + 1, second - first - 1)),
                  std::string(decoded.substr(second + 1))};
  if (r.authcid.empty() || r.password.empty()) return std::nullopt;
  return r;
}

SaslMechanism parseMechanism(std::string_view name) {
  if (equalsIgnoreCase(name, "PLAIN")) return SaslMechanism::kPlain;
  if (equalsIgnoreCase(name, "LOGIN")) return SaslMechanism::kLogin;
  return SaslMechanism::kUnknown;
}

}  // namespace postern
