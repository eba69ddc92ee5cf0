#include "core/smtp_command.h"

#include <array>
#include <cstring>
#include <utility>

namespace postern {
namespace {

struct VerbEntry {
  std::string_view name;
  Verb verb;
};

constexpr std::array<VerbEntry, 21> kVerbs{{
    {"HELO", Verb::kHelo},         {"EHLO", Verb::kEhlo}, {"MAIL", Verb::kMail},
    {"RCPT", Verb::kRcpt},         {"DATA", Verb::kData}, {"BDAT", Verb::kBdat},
    {"RSET", Verb::kRset},         {"NOOP", Verb::kNoop}, {"VRFY", Verb::kVrfy},
    {"EXPN", Verb::kExpn},         {"HELP", Verb::kHelp}, {"QUIT", Verb::kQuit},
    {"STARTTLS", Verb::kStartTls}, {"AUTH", Verb::kAuth}, {"ETRN", Verb::kEtrn},
    {"SEND", Verb::kSend},         {"SOML", Verb::kSoml}, {"SAML", Verb::kSaml},
    {"TURN", Verb::kTurn},         {"VERB", Verb::kVerb}, {"TICK", Verb::kTick},
}};

// The verb's octets, upper-cased, as one integer (0 bytes pad; a NUL can never match).
constexpr uint64_t verbKey(std::string_view v) {
  uint64_t key = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    char c = v[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    if (c == '\0') return ~uint64_t{0};
    key |= uint64_t{static_cast<unsigned char>(c)} << (8 * i);
  }
  return key;
}

constexpr std::array<uint64_t, kVerbs.size()> kVerbKeys = [] {
  std::array<uint64_t, kVerbs.size()> keys{};
  for (size_t i = 0; i < kVerbs.size(); ++i) keys[i] = verbKey(kVerbs[i].name);
  return keys;
}();

char upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; }

bool isBlank(char c) { return c == ' ' || c == '\t'; }

std::string_view trimRight(std::string_view s) {
  while (!s.empty() && isBlank(s.back())) s.remove_suffix(1);
  return s;
}

std::string_view trimLeft(std::string_view s) {
  while (!s.empty() && isBlank(s.front())) s.remove_prefix(1);
  return s;
}

bool isEsmtpKeywordChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

// Octets that need no further thought in a mailbox: printable ASCII other than quote,
// backslash and the separators checkMailbox() refuses. Nearly every real address is made
// only of these, so the careful loop below runs only for the rest.
constexpr std::array<bool, 256> kPlainMailboxChar = [] {
  std::array<bool, 256> t{};
  for (int c = 0x21; c < 0x7f; ++c) t[c] = true;
  for (char c : {'"', '\\', '<', '>', ',', ';'}) t[static_cast<unsigned char>(c)] = false;
  return t;
}();

// Validates a mailbox (RFC 5321 §4.1.2, leniently: what Postfix accepts by default).
std::optional<ReplyError> checkMailbox(std::string_view box, bool& eight_bit) {
  size_t plain = 0;
  while (plain < box.size() && kPlainMailboxChar[static_cast<unsigned char>(box[plain])]) ++plain;
  if (plain == box.size()) {
    size_t at = box.rfind('@');
    if (at != std::string_view::npos && (at == 0 || at + 1 == box.size())) {
      return ReplyError{501, "5.1.7", "Bad address syntax"};
    }
    return std::nullopt;
  }
  bool in_quotes = false;
  for (size_t i = 0; i < box.size(); ++i) {
    auto c = static_cast<unsigned char>(box[i]);
    if (c >= 0x80) {
      eight_bit = true;
    } else if (c < 0x20 || c == 0x7f) {
      return ReplyError{501, "5.1.7", "Bad address syntax: control character"};
    } else if (c == '"') {
      in_quotes = !in_quotes;
    } else if (c == '\\' && in_quotes) {
      // quoted-pairSMTP (RFC 5321 §4.1.2): a backslash escapes one printable ASCII octet.
      if (++i == box.size()) return ReplyError{501, "5.1.7", "Bad address syntax"};
      auto e = static_cast<unsigned char>(box[i]);
      if (e < 0x20 || e > 0x7e) {
        return ReplyError{501, "5.1.7", "Bad address syntax: bad escaped character"};
      }
    } else if (!in_quotes && (c == ' ' || c == '<' || c == '>' || c == ',' || c == ';')) {
      return ReplyError{501, "5.1.7", "Bad address syntax"};
    }
  }
  if (in_quotes) return ReplyError{501, "5.1.7", "Bad address syntax: unbalanced quote"};
  size_t at = box.rfind('@');
  if (at != std::string_view::npos && (at == 0 || at + 1 == box.size())) {
    return ReplyError{501, "5.1.7", "Bad address syntax"};
  }
  return std::nullopt;
}

}  // namespace

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (upper(a[i]) != upper(b[i])) return false;
  }
  return true;
}

Command parseCommand(std::string_view line) {
  Command cmd;
  size_t end = 0;
  while (end < line.size() && !isBlank(line[end])) ++end;
  cmd.verb_text = line.substr(0, end);
  cmd.arg = trimRight(trimLeft(line.substr(end)));
  // Verbs are at most 8 letters: pack the upper-cased verb into one integer and compare
  // that with each known verb's, instead of comparing strings.
  if (cmd.verb_text.size() <= 8) {
    uint64_t key = verbKey(cmd.verb_text);
    for (size_t i = 0; i < kVerbs.size(); ++i) {
      if (kVerbKeys[i] == key) {
        cmd.verb = kVerbs[i].verb;
        break;
      }
    }
  }
  return cmd;
}

std::string_view verbName(Verb verb) {
  for (const auto& e : kVerbs) {
    if (e.verb == verb) return e.name;
  }
  return "UNKNOWN";
}

std::optional<ReplyError> parsePathArg(std::string_view arg, std::string_view keyword,
                                       PathArg& out) {
  const bool is_from = keyword == "FROM";
  const ReplyError syntax{501, "5.5.4",
                          is_from ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>"};
  out.mailbox = {};
  out.params.clear();
  out.eight_bit = false;
  out.source_route = false;
  if (arg.size() < keyword.size() + 1 ||
      !equalsIgnoreCase(arg.substr(0, keyword.size()), keyword) || arg[keyword.size()] != ':') {
    return syntax;
  }
  std::string_view rest = trimLeft(arg.substr(keyword.size() + 1));
  std::string_view path;
  if (!rest.empty() && rest.front() == '<') {
    // Find the closing bracket outside a quoted local part (the quick way when no quote
    // comes before the first '>').
    size_t close = rest.find('>', 1);
    bool in_quotes = false;
    if (close != std::string_view::npos && std::memchr(rest.data(), '"', close) != nullptr) {
      close = std::string_view::npos;
    }
    for (size_t i = 1; close == std::string_view::npos && i < rest.size(); ++i) {
      if (rest[i] == '"')
        in_quotes = !in_quotes;
      else if (rest[i] == '\\' && in_quotes)
        ++i;
      else if (rest[i] == '>' && !in_quotes) {
        close = i;
        break;
      }
    }
    if (close == std::string_view::npos) return syntax;
    path = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (!rest.empty() && !isBlank(rest.front())) return syntax;
  } else {
    // Bare address without brackets, accepted like Postfix's default.
    size_t end = 0;
    while (end < rest.size() && !isBlank(rest[end])) ++end;
    path = rest.substr(0, end);
    rest = rest.substr(end);
    if (path.empty()) return syntax;
  }
  // RFC 5321 §4.1.2 source route "@a,@b:user@d": keep only the mailbox.
  if (!path.empty() && path.front() == '@') {
    size_t colon = path.find(':');
    if (colon == std::string_view::npos) return syntax;
    path = path.substr(colon + 1);
    out.source_route = true;
  }
  if (auto err = checkMailbox(path, out.eight_bit)) return err;
  if (!is_from && path.empty()) return ReplyError{501, "5.1.3", "Null recipient not allowed"};
  out.mailbox = path;

  rest = trimLeft(rest);
  while (!rest.empty()) {
    size_t end = 0;
    while (end < rest.size() && !isBlank(rest[end])) ++end;
    std::string_view token = rest.substr(0, end);
    rest = trimLeft(rest.substr(end));
    EsmtpParam p;
    size_t eq = token.find('=');
    p.keyword = token.substr(0, eq);
    if (eq != std::string_view::npos) {
      p.value = token.substr(eq + 1);
      p.has_value = true;
      if (p.value.empty()) return ReplyError{501, "5.5.4", "Bad parameter syntax"};
    }
    if (p.keyword.empty()) return ReplyError{501, "5.5.4", "Bad parameter syntax"};
    for (char c : p.keyword) {
      if (!isEsmtpKeywordChar(c)) return ReplyError{501, "5.5.4", "Bad parameter syntax"};
    }
    if (!out.params.push_back(p)) return ReplyError{501, "5.5.4", "Too many parameters"};
  }
  return std::nullopt;
}

std::string_view domainOf(std::string_view mailbox) {
  size_t at = mailbox.rfind('@');
  return at == std::string_view::npos ? std::string_view{} : mailbox.substr(at + 1);
}

}  // namespace postern
