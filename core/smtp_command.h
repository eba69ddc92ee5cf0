// SMTP command grammar (RFC 5321 §4.1): verb recognition and MAIL/RCPT argument parsing.
//
// Everything here is a pure function over string_views into the caller's line; nothing is
// copied. Verbs are case-insensitive. Malformed arguments come back as an SMTP reply
// (code, enhanced code, text) for the session to send: a parse error is a value, never
// an exception.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace postern {

enum class Verb {
  kHelo,
  kEhlo,
  kMail,
  kRcpt,
  kData,
  kBdat,
  kRset,
  kNoop,
  kVrfy,
  kExpn,
  kHelp,
  kQuit,
  kStartTls,
  kAuth,
  kEtrn,
  // Obsolete RFC 821 commands and extensions we do not offer.
  kSend,
  kSoml,
  kSaml,
  kTurn,
  kVerb,
  kTick,
  kUnknown,
};

struct Command {
  Verb verb = Verb::kUnknown;
  std::string_view verb_text;  // as the client wrote it
  std::string_view arg;        // after the verb and its separating space(s), trailing blanks cut
};

// Splits a command line (terminator already removed) into verb and argument.
Command parseCommand(std::string_view line);

std::string_view verbName(Verb verb);

// A protocol error: what to reply.
struct ReplyError {
  int code;
  std::string_view enhanced;
  std::string_view text;
};

struct EsmtpParam {
  std::string_view keyword;  // as written; compare case-insensitively
  std::string_view value;    // empty when the parameter has no "=value"
  bool has_value = false;
};

// A command's ESMTP parameters, stored inline: MAIL and RCPT carry only a few, and the
// parser runs for every command, so it allocates nothing.
class EsmtpParams {
 public:
  static constexpr size_t kMax = 8;
  bool push_back(const EsmtpParam& p) {
    if (size_ == kMax) return false;
    items_[size_++] = p;
    return true;
  }
  void clear() { size_ = 0; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const EsmtpParam& operator[](size_t i) const { return items_[i]; }
  const EsmtpParam* begin() const { return items_.data(); }
  const EsmtpParam* end() const { return items_.data() + size_; }

 private:
  std::array<EsmtpParam, kMax> items_;
  size_t size_ = 0;
};

// "FROM:<path> params" or "TO:<path> params". The path is returned without angle brackets
// and without any RFC 821 source route; the null path "<>" gives an empty mailbox.
struct PathArg {
  std::string_view mailbox;
  EsmtpParams params;
  bool eight_bit = false;     // the mailbox holds non-ASCII octets (needs SMTPUTF8)
  bool source_route = false;  // an RFC 821 source route ("@a,@b:") was given and dropped
};

// keyword is "FROM" or "TO". Returns the parsed argument or the reply to send.
std::optional<ReplyError> parsePathArg(std::string_view arg, std::string_view keyword,
                                       PathArg& out);

// Case-insensitive ASCII comparison.
bool equalsIgnoreCase(std::string_view a, std::string_view b);

// Domain part of a mailbox ("user@Example.COM" -> "Example.COM"); empty if none.
std::string_view domainOf(std::string_view mailbox);

}  // namespace postern
