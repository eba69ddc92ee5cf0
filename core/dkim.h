// DKIM signing (RFC 6376) with rsa-sha256 and ed25519-sha256 (RFC 8463), relaxed/relaxed,
// with OpenSSL directly: the two hashes and two signatures are four OpenSSL calls, and the
// canonicalizations are a page of code each; Debian's libopendkim would bring its own
// message parser and copy of the message, which is what this avoids.
//
// DkimHasher takes a message's octets in order, in pieces as they come (the session feeds
// it the body's pieces before they go to the spool or a spill file, so the content is
// never copied for it): the header section is kept (bounded by kMaxHeaderBytes; past that
// the message is not signed), the body is canonicalized and hashed as it streams. At the
// end, dkimSign() makes the DKIM-Signature field for a key: the configured header names,
// each once per instance present, From once more than present (oversigned, so that no
// From can be added after signing).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

struct evp_md_ctx_st;
struct evp_pkey_st;

namespace postern {

struct DkimKey {
  enum class Algorithm { kRsaSha256, kEd25519Sha256 };
  std::string domain;    // d=, canonical
  std::string selector;  // s=
  Algorithm algorithm = Algorithm::kRsaSha256;
  std::vector<std::string> headers;  // lower-case names to sign
  std::shared_ptr<evp_pkey_st> key;

  // Reads a PEM private key; fails unless it is RSA of 2048 bits or more, or Ed25519, as
  // the algorithm says.
  static Result<std::shared_ptr<evp_pkey_st>> loadKey(const std::string& path, Algorithm a);
};

// Header names signed when [[dkim]] headers is not given (OpenDKIM's recommended set).
const std::vector<std::string>& dkimDefaultHeaders();

class DkimHasher {
 public:
  // Held for the whole message (only for relay clients and logged-in users): real header
  // sections are a few KiB.
  static constexpr size_t kMaxHeaderBytes = 64 * 1024;
  DkimHasher();
  ~DkimHasher();
  DkimHasher(const DkimHasher&) = delete;
  DkimHasher& operator=(const DkimHasher&) = delete;

  void feed(std::string_view piece);
  // The header section was too large to keep: the message is not signed.
  bool overflowed() const { return overflow_; }
  // The header section as received (every field, CRLF-terminated), once the body began.
  std::string_view headerSection() const { return headers_; }
  // The domain of the From: field's address (canonical); nullopt if there is not exactly
  // one From field with one address.
  std::optional<std::string> fromDomain() const;
  // Ends the body and returns its relaxed SHA-256 hash (call once).
  std::array<unsigned char, 32> finishBody();

 private:
  void feedBody(std::string_view s);
  void content(std::string& out, std::string_view run);  // non-space octets of the body
  void endLine(std::string& out);                        // a CRLF of the body
  void emit(std::string_view s);

  std::string headers_;
  bool in_body_ = false;
  bool overflow_ = false;
  evp_md_ctx_st* body_ctx_;
  // Relaxed body canonicalization as it streams.
  bool pending_wsp_ = false;
  bool line_has_content_ = false;
  bool pending_cr_ = false;
  size_t blank_lines_ = 0;
};

// The DKIM-Signature field (folded, CRLF-terminated) for the message whose header section
// and body hash are given, signed at unix_time.
Result<std::string> dkimSign(const DkimKey& key, std::string_view header_section,
                             const std::array<unsigned char, 32>& body_hash, int64_t unix_time);

// Relaxed header canonicalization of one field ("Name: value\r\n" possibly folded), as
// "name:value" without CRLF. Exposed for tests.
std::string dkimRelaxedHeader(std::string_view field);

}  // namespace postern
