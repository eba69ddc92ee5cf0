#include "queue/bounce.h"

#include <ctime>
#include <span>

#include "core/ascii.h"
#include "core/header_field.h"
#include "core/random.h"

namespace postern {
namespace {

// Longest diagnostic quoted, so a notice line stays well under 998 octets.
constexpr size_t kMaxDiagnostic = 900;

// RFC 3461 §4: xtext, "+" followed by two upper-case hex digits for an octet.
std::string decodeXtext(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto hex = [](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    };
    if (s[i] == '+' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      char c = static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      // Control characters would break the header line they end up in.
      out.push_back(static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c);
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string rfc5322Date(int64_t ms) {
  time_t t = static_cast<time_t>(ms / 1000);
  tm utc{};
  gmtime_r(&t, &utc);
  char buf[64];
  strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &utc);
  return buf;
}

// The message's header section: its lines up to the first empty one, or up to the first
// that is neither a field nor a field's continuation, so that a message without an empty
// line is not returned whole as its "header".
std::string_view headerSection(std::string_view msg) {
  size_t pos = 0;
  while (pos < msg.size()) {
    size_t lf = msg.find('\n', pos);
    size_t end = lf == std::string_view::npos ? msg.size() : lf + 1;
    std::string_view line = msg.substr(pos, end - pos);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    const bool continuation = pos > 0 && !line.empty() && (line[0] == ' ' || line[0] == '\t');
    if (!continuation && !canStartHeaderField(line)) break;
    pos = end;
  }
  return msg.substr(0, pos);
}

// The longest prefix of text that is whole lines and at most budget octets.
std::string_view wholeLines(std::string_view text, size_t budget) {
  if (text.size() <= budget) return text;
  size_t lf = text.rfind('\n', budget == 0 ? 0 : budget - 1);
  if (lf == std::string_view::npos || lf >= budget) return {};
  return text.substr(0, lf + 1);
}

// Octets set aside for the returned part's own header lines and the closing boundary
// when the notice is fitted to bounce_size_limit.
constexpr size_t kReturnedPartOverhead = 200;

std::string oneLine(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, kMaxDiagnostic)) out.push_back(c == '\r' || c == '\n' ? ' ' : c);
  return out;
}

}  // namespace

bool notifyOnFailure(std::string_view notify) {
  if (notify.empty()) return true;
  std::string n = asciiUpper(notify);
  return n.find("FAILURE") != std::string::npos;
}

bool notifyOnSuccess(std::string_view notify) {
  return asciiUpper(notify).find("SUCCESS") != std::string::npos;
}

bool notifyOnDelay(std::string_view notify) {
  return notify.empty() || asciiUpper(notify).find("DELAY") != std::string::npos;
}

bool bounceWanted(const Envelope& env) { return !env.sender.empty(); }

std::string statusFromReply(int code, std::string_view text) {
  // "x.y.z" where x matches the reply's class.
  size_t i = 0;
  auto digits = [&](size_t max) {
    size_t start = i;
    while (i < text.size() && i - start < max && text[i] >= '0' && text[i] <= '9') ++i;
    return i > start;
  };
  if (!text.empty() && text[0] == static_cast<char>('0' + code / 100)) {
    i = 1;
    if (i < text.size() && text[i] == '.' && (++i, digits(3)) && i < text.size() &&
        text[i] == '.' && (++i, digits(3)) && (i == text.size() || text[i] == ' ')) {
      return std::string(text.substr(0, i));
    }
  }
  return std::to_string(code / 100) + ".0.0";
}

std::string composeBounce(const BounceInput& in) {
  const Envelope& env = *in.original;
  const std::string qid = queueIdString(env.id);
  // Unguessable, so that quoted content cannot close the part it is quoted in.
  const std::string boundary = randomHex(16) + "/" + in.reporting_mta;
  const bool failed = in.action == DsnAction::kFailed;
  const char* subject = failed                             ? "Undelivered Mail Returned to Sender"
                        : in.action == DsnAction::kRelayed ? "Successful Mail Delivery Report"
                                                           : "Delayed Mail (still being retried)";
  const char* action = failed ? "failed" : in.action == DsnAction::kRelayed ? "relayed" : "delayed";

  std::string m;
  m += "From: Mail Delivery System <MAILER-DAEMON@" + in.reporting_mta + ">\r\n";
  m += "To: <" + env.sender + ">\r\n";
  m += std::string("Subject: ") + subject + "\r\n";
  m += "Date: " + rfc5322Date(in.now_ms) + "\r\n";
  m += "Message-ID: <" + qid + "." + std::to_string(in.now_ms) + ".bounce@" + in.reporting_mta +
       ">\r\n";
  m += "Auto-Submitted: auto-replied\r\n";
  m += "MIME-Version: 1.0\r\n";
  m += "Content-Type: multipart/report; report-type=delivery-status;\r\n";
  m += "\tboundary=\"" + boundary + "\"\r\n";
  m += "\r\nThis is a MIME-encapsulated message.\r\n\r\n";

  m += "--" + boundary + "\r\n";
  m += "Content-Type: text/plain; charset=utf-8\r\n";
  m += "Content-Description: Notification\r\n\r\n";
  m += "This is the mail system at host " + in.reporting_mta + ".\r\n\r\n";
  if (failed) {
    m += "Your message could not be delivered to one or more recipients.\r\n";
    m += "The report below says why; the message itself is attached.\r\n\r\n";
  } else if (in.action == DsnAction::kRelayed) {
    m += "Your message was delivered to the next mail system on its way, which does not\r\n";
    m += "offer delivery notifications: no further notice will come for these recipients.\r\n\r\n";
  } else {
    m += "Your message could not be delivered yet to one or more recipients. This is only\r\n";
    m += "a warning: the mail system keeps trying until " + rfc5322Date(in.retry_until_ms) +
         ".\r\nYou need not send the message again.\r\n\r\n";
  }
  for (const auto& f : in.failed) {
    m += "<" + env.recipients[f.index] + ">: " + oneLine(f.reason) + "\r\n";
  }
  m += "\r\n";

  m += "--" + boundary + "\r\n";
  m += "Content-Type: message/delivery-status\r\n";
  m += "Content-Description: Delivery report\r\n\r\n";
  m += "Reporting-MTA: dns; " + in.reporting_mta + "\r\n";
  if (!env.dsn_envid.empty()) {
    m += "Original-Envelope-Id: " + oneLine(decodeXtext(env.dsn_envid)) + "\r\n";
  }
  m += "X-Postern-Queue-ID: " + qid + "\r\n";
  m += "Arrival-Date: " + rfc5322Date(env.received_ms) + "\r\n";
  for (const auto& f : in.failed) {
    m += "\r\n";
    m += "Final-Recipient: rfc822; " + env.recipients[f.index] + "\r\n";
    const std::string& orcpt = env.orcptOf(f.index);
    if (size_t semi = orcpt.find(';'); semi != std::string::npos) {
      m += "Original-Recipient: " + orcpt.substr(0, semi) + "; " +
           oneLine(decodeXtext(std::string_view(orcpt).substr(semi + 1))) + "\r\n";
    }
    m += std::string("Action: ") + action + "\r\n";
    m += "Status: " + f.status + "\r\n";
    if (!f.remote_mta.empty()) m += "Remote-MTA: dns; " + f.remote_mta + "\r\n";
    if (!f.diagnostic.empty()) m += "Diagnostic-Code: smtp; " + oneLine(f.diagnostic) + "\r\n";
    if (in.action == DsnAction::kDelayed) {
      m += "Will-Retry-Until: " + rfc5322Date(in.retry_until_ms) + "\r\n";
    }
  }
  m += "\r\n";

  // The original, fitted with the rest into bounce_size_limit: whole if it was asked for
  // and fits, else as much of its header section as fits, in whole lines.
  const std::string_view original = in.original_message;
  const size_t used = m.size() + kReturnedPartOverhead + boundary.size();
  const size_t budget = in.size_limit > used ? in.size_limit - used : 0;
  const bool full = failed && asciiUpper(env.dsn_ret) != "HDRS" && original.size() <= budget;
  const std::string_view quoted = full ? original : wholeLines(headerSection(original), budget);
  m += "--" + boundary + "\r\n";
  m += full ? "Content-Type: message/rfc822\r\n" : "Content-Type: text/rfc822-headers\r\n";
  m += full     ? "Content-Description: Undelivered Message\r\n"
       : failed ? "Content-Description: Undelivered Message Headers\r\n"
                : "Content-Description: Message Headers\r\n";
  if (hasEightBit(quoted)) m += "Content-Transfer-Encoding: 8bit\r\n";
  m += "\r\n";
  m.append(quoted);
  if (!quoted.empty() && !quoted.ends_with("\r\n")) m += "\r\n";
  m += "\r\n--" + boundary + "--\r\n";
  return m;
}

std::vector<std::string> composeNotices(const BounceInput& in) {
  std::vector<std::string> out;
  BounceInput part = in;
  // Halves until each part fits: the report grows with its recipients, nothing else does.
  auto add = [&](auto& self, std::span<const FailedRecipient> rcpts) -> void {
    part.failed.assign(rcpts.begin(), rcpts.end());
    std::string notice = composeBounce(part);
    if (notice.size() <= in.size_limit || rcpts.size() <= 1) {
      out.push_back(std::move(notice));
      return;
    }
    const size_t half = rcpts.size() / 2;
    self(self, rcpts.first(half));
    self(self, rcpts.subspan(half));
  };
  add(add, in.failed);
  return out;
}

}  // namespace postern
