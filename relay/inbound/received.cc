#include "relay/inbound/received.h"

#include <ctime>

namespace postern {
namespace {

void appendSafe(std::string& out, std::string_view text) {
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    bool ok = u > 0x20 && u < 0x7f && c != '(' && c != ')' && c != ';' && c != '\\';
    out.push_back(ok ? c : '_');
  }
}

}  // namespace

void appendReceived(std::string& out, const ReceivedInfo& info) {
  out.append("Received: from ");
  appendSafe(out, info.helo.empty() ? std::string_view("unknown") : info.helo);
  out.append(" ([");
  out.append(info.client_ip);
  out.append("])\r\n\tby ");
  out.append(info.hostname);
  out.append(" (Postern) with ");
  out.append(info.esmtp ? "ESMTP" : "SMTP");
  if (info.tls) out.push_back('S');   // RFC 3848: ESMTPS, ESMTPA, ESMTPSA
  if (info.auth) out.push_back('A');
  out.append(" id ");
  out.append(info.queue_id);
  if (!info.single_recipient.empty()) {
    out.append("\r\n\tfor <");
    appendSafe(out, info.single_recipient);
    out.push_back('>');
  }
  char date[64];
  time_t t = info.unix_seconds;
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(date, sizeof date, "; %a, %d %b %Y %H:%M:%S +0000\r\n", &tm);
  out.append(date);
}

}  // namespace postern
