#include "core/dkim.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <cstdio>
#include <cstring>

#include "core/ascii.h"
#include "core/domain.h"
#include "core/sasl.h"

namespace postern {
namespace {

bool isWsp(char c) { return c == ' ' || c == '\t'; }

// The header section's fields, each with its CRLF (and its folded lines).
std::vector<std::string_view> splitFields(std::string_view section) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  for (size_t i = 0; i + 1 < section.size(); ++i) {
    if (section[i] == '\r' && section[i + 1] == '\n') {
      const bool folded = i + 2 < section.size() && isWsp(section[i + 2]);
      if (!folded) {
        fields.push_back(section.substr(start, i + 2 - start));
        start = i + 2;
      }
      ++i;
    }
  }
  return fields;
}

std::string fieldName(std::string_view field) {
  const size_t colon = field.find(':');
  std::string_view name = field.substr(0, colon == std::string_view::npos ? 0 : colon);
  while (!name.empty() && isWsp(name.back())) name.remove_suffix(1);
  return asciiLower(name);
}

// The address in a From: value: the part in angle brackets, or the whole (without
// comments); nullopt for a list of addresses or a value it cannot read.
std::optional<std::string> singleAddress(std::string_view value) {
  std::string plain, angle;
  bool in_angle = false, seen_angle = false;
  int comment = 0;
  for (size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (c == '"' && comment == 0) {  // a quoted display name: skipped, escapes included
      for (++i; i < value.size() && value[i] != '"'; ++i) {
        if (value[i] == '\\') ++i;
      }
      continue;
    }
    if (c == '(') {
      ++comment;
      continue;
    }
    if (c == ')' && comment > 0) {
      --comment;
      continue;
    }
    if (comment > 0) continue;
    if (c == ',' && !in_angle) return std::nullopt;  // more than one address
    if (c == '<') {
      if (seen_angle) return std::nullopt;
      in_angle = seen_angle = true;
      continue;
    }
    if (c == '>' && in_angle) {
      in_angle = false;
      continue;
    }
    if (c == '\r' || c == '\n' || isWsp(c)) continue;
    (in_angle ? angle : plain).push_back(c);
  }
  if (in_angle || comment != 0) return std::nullopt;
  return seen_angle ? angle : plain;
}

struct MdCtx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~MdCtx() { EVP_MD_CTX_free(ctx); }
};

// Folds a tag list at "; " boundaries and long values, for lines under about 78 octets.
void appendFolded(std::string& out, std::string_view text, size_t& column) {
  for (char c : text) {
    if (column >= 76 && (c == ' ' || c == ':')) {
      if (c == ' ') {
        out.append("\r\n\t");
        column = 8;
        continue;
      }
      out.push_back(c);
      out.append("\r\n\t");
      column = 8;
      continue;
    }
    out.push_back(c);
    ++column;
  }
}

}  // namespace

const std::vector<std::string>& dkimDefaultHeaders() {
  static const std::vector<std::string> kHeaders = {"from",
                                                    "reply-to",
                                                    "subject",
                                                    "date",
                                                    "to",
                                                    "cc",
                                                    "message-id",
                                                    "in-reply-to",
                                                    "references",
                                                    "mime-version",
                                                    "content-type",
                                                    "content-transfer-encoding",
                                                    "list-id",
                                                    "list-unsubscribe",
                                                    "list-unsubscribe-post"};
  return kHeaders;
}

Result<std::shared_ptr<evp_pkey_st>> DkimKey::loadKey(const std::string& path, Algorithm a) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return fail(path + ": cannot read");
  EVP_PKEY* key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (key == nullptr) return fail(path + ": not a PEM private key");
  std::shared_ptr<evp_pkey_st> owned(key, EVP_PKEY_free);
  if (a == Algorithm::kRsaSha256) {
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) return fail(path + ": not an RSA key");
    if (EVP_PKEY_get_bits(key) < 2048) return fail(path + ": an RSA key needs 2048 bits or more");
  } else if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519) {
    return fail(path + ": not an Ed25519 key");
  }
  return owned;
}

DkimHasher::DkimHasher() : body_ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(body_ctx_, EVP_sha256(), nullptr);
}

DkimHasher::~DkimHasher() { EVP_MD_CTX_free(body_ctx_); }

void DkimHasher::feed(std::string_view piece) {
  if (in_body_) return feedBody(piece);
  // The header section ends at the first empty line: CRLF at its start, or CRLF CRLF.
  const size_t before = headers_.size();
  const size_t room = kMaxHeaderBytes - std::min(kMaxHeaderBytes, before);
  headers_.append(piece.substr(0, std::min(piece.size(), room + 4)));
  size_t end = std::string::npos;
  if (headers_.starts_with("\r\n")) {
    end = 0;
  } else {
    const size_t from = before >= 3 ? before - 3 : 0;
    const size_t at = headers_.find("\r\n\r\n", from);
    if (at != std::string::npos) end = at + 2;
  }
  if (end == std::string::npos) {
    if (headers_.size() > kMaxHeaderBytes) {
      overflow_ = true;
      in_body_ = true;  // nothing more is kept
      headers_.clear();
    }
    return;
  }
  // What follows the empty line is body.
  const size_t body_from = end + 2 - before;  // within piece
  headers_.resize(end);
  in_body_ = true;
  if (body_from < piece.size()) feedBody(piece.substr(body_from));
}

void DkimHasher::emit(std::string_view s) { EVP_DigestUpdate(body_ctx_, s.data(), s.size()); }

void DkimHasher::feedBody(std::string_view s) {
  // RFC 6376 §3.4.4: whitespace at the end of a line is dropped, runs of it become one
  // space, and empty lines at the end of the body are dropped. So empty lines are held
  // back until content follows them, and a space until a non-space follows it on its
  // line. The canonical octets of one piece go to the hash in one update.
  std::string out;
  out.reserve(s.size() + 2);
  size_t i = 0;
  while (i < s.size()) {
    if (!pending_cr_ && !pending_wsp_ && !line_has_content_) {
      // At a line's start: a whole line that canonicalization leaves as it is (no tab, no
      // two spaces, no space at its end; most text) goes out in one append.
      const char* start = s.data() + i;
      const auto* cr = static_cast<const char*>(std::memchr(start, '\r', s.size() - i));
      if (cr != nullptr && cr + 1 < s.data() + s.size() && cr[1] == '\n') {
        const std::string_view line(start, static_cast<size_t>(cr - start));
        if (line.empty()) {
          ++blank_lines_;
          i += 2;
          continue;
        }
        if (line.back() != ' ' && line.find('\t') == std::string_view::npos &&
            line.find("  ") == std::string_view::npos) {
          for (; blank_lines_ > 0; --blank_lines_) out.append("\r\n");
          out.append(line).append("\r\n");
          i += line.size() + 2;
          continue;
        }
      }
    }
    const char c = s[i];
    if (pending_cr_) {
      pending_cr_ = false;
      if (c == '\n') {
        endLine(out);
        ++i;
        continue;
      }
      content(out, "\r");  // a CR alone is content
    }
    if (c == '\r') {
      pending_cr_ = true;
      ++i;
    } else if (isWsp(c)) {
      pending_wsp_ = true;
      ++i;
    } else {
      // A run of plain octets goes out in one append.
      size_t j = i + 1;
      while (j < s.size() && s[j] != '\r' && s[j] != ' ' && s[j] != '\t') ++j;
      content(out, s.substr(i, j - i));
      i = j;
    }
  }
  emit(out);
}

void DkimHasher::content(std::string& out, std::string_view run) {
  if (!line_has_content_) {
    for (; blank_lines_ > 0; --blank_lines_) out.append("\r\n");
  }
  if (pending_wsp_) out.push_back(' ');
  pending_wsp_ = false;
  out.append(run);
  line_has_content_ = true;
}

void DkimHasher::endLine(std::string& out) {
  pending_wsp_ = false;  // whitespace at the end of a line
  if (line_has_content_) {
    out.append("\r\n");
    line_has_content_ = false;
  } else {
    ++blank_lines_;
  }
}

std::array<unsigned char, 32> DkimHasher::finishBody() {
  std::string tail;
  if (pending_cr_) content(tail, "\r");  // a CR at the very end is content
  pending_cr_ = false;
  if (line_has_content_) tail.append("\r\n");  // a last line without CRLF gets one
  emit(tail);
  std::array<unsigned char, 32> out{};
  unsigned n = 0;
  EVP_DigestFinal_ex(body_ctx_, out.data(), &n);
  return out;
}

std::optional<std::string> DkimHasher::fromDomain() const {
  std::optional<std::string> address;
  int froms = 0;
  for (std::string_view field : splitFields(headers_)) {
    if (fieldName(field) != "from") continue;
    if (++froms > 1) return std::nullopt;
    address = singleAddress(field.substr(field.find(':') + 1));
  }
  if (!address) return std::nullopt;
  const size_t at = address->rfind('@');
  if (at == std::string::npos) return std::nullopt;
  return canonicalDomain(std::string_view(*address).substr(at + 1));
}

std::string dkimRelaxedHeader(std::string_view field) {
  const size_t colon = field.find(':');
  std::string out = fieldName(field);
  out.push_back(':');
  std::string_view value = field.substr(colon + 1);
  // Unfolded; runs of whitespace become one space, none at the start or end of the value.
  bool wsp = false;
  bool start = true;
  for (char c : value) {
    if (c == '\r' || c == '\n') continue;
    if (isWsp(c)) {
      wsp = true;
      continue;
    }
    if (wsp && !start) out.push_back(' ');
    wsp = false;
    start = false;
    out.push_back(c);
  }
  return out;
}

Result<std::string> dkimSign(const DkimKey& key, std::string_view header_section,
                             const std::array<unsigned char, 32>& body_hash, int64_t unix_time) {
  const std::vector<std::string_view> fields = splitFields(header_section);
  // h=: each configured name once per instance present; From once more.
  std::vector<std::string> names;
  for (const std::string& name : key.headers) {
    size_t present = 0;
    for (std::string_view f : fields) present += fieldName(f) == name;
    for (size_t i = 0; i < present + (name == "from" ? 1 : 0); ++i) names.push_back(name);
  }
  // The signed fields: for each name, the last instance not yet used (§5.4.2).
  std::string data;
  std::vector<bool> used(fields.size(), false);
  for (const std::string& name : names) {
    for (size_t i = fields.size(); i-- > 0;) {
      if (!used[i] && fieldName(fields[i]) == name) {
        used[i] = true;
        data.append(dkimRelaxedHeader(fields[i])).append("\r\n");
        break;
      }
    }
  }
  std::string h;
  for (const std::string& n : names) h.append(h.empty() ? "" : ":").append(n);
  const char* a = key.algorithm == DkimKey::Algorithm::kRsaSha256 ? "rsa-sha256" : "ed25519-sha256";
  const std::string bh = encodeBase64(
      std::string_view(reinterpret_cast<const char*>(body_hash.data()), body_hash.size()));
  std::string field = "DKIM-Signature: ";
  size_t column = field.size();
  appendFolded(field,
               std::string("v=1; a=") + a + "; c=relaxed/relaxed; d=" + key.domain +
                   "; s=" + key.selector + "; t=" + std::to_string(unix_time) + "; h=" + h +
                   "; bh=" + bh + "; b=",
               column);
  data.append(dkimRelaxedHeader(field));  // with b= empty, and no CRLF (§3.7)

  MdCtx md;
  size_t sig_len = 0;
  std::string sig;
  if (key.algorithm == DkimKey::Algorithm::kRsaSha256) {
    if (EVP_DigestSignInit(md.ctx, nullptr, EVP_sha256(), nullptr, key.key.get()) != 1 ||
        EVP_DigestSign(md.ctx, nullptr, &sig_len,
                       reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
      return fail("rsa-sha256 signing failed");
    }
    sig.resize(sig_len);
    if (EVP_DigestSign(md.ctx, reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                       reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
      return fail("rsa-sha256 signing failed");
    }
  } else {
    // RFC 8463: Ed25519 over the SHA-256 hash of the data.
    unsigned char digest[32];
    unsigned n = 0;
    EVP_Digest(data.data(), data.size(), digest, &n, EVP_sha256(), nullptr);
    sig_len = 64;
    sig.resize(sig_len);
    if (EVP_DigestSignInit(md.ctx, nullptr, nullptr, nullptr, key.key.get()) != 1 ||
        EVP_DigestSign(md.ctx, reinterpret_cast<unsigned char*>(sig.data()), &sig_len, digest,
                       sizeof digest) != 1) {
      return fail("ed25519-sha256 signing failed");
    }
  }
  sig.resize(sig_len);
  const std::string b = encodeBase64(sig);
  // The signature in lines of 64 characters; a verifier deletes it with its whitespace.
  for (size_t i = 0; i < b.size(); i += 64) {
    field.append(column + 64 > 78 ? "\r\n\t" : "");
    column = 8;
    field.append(b, i, 64);
    column += std::min<size_t>(64, b.size() - i);
  }
  field.append("\r\n");
  return field;
}

}  // namespace postern
