// The Received: trace header (RFC 5321 §4.4) Postern prepends to every message it
// accepts. Peer-supplied text (the HELO name) is reduced to safe printable characters so
// that it can never break the header's structure.
#pragma once

#include <string>
#include <string_view>

namespace postern {

struct ReceivedInfo {
  std::string_view helo;
  std::string_view client_ip;
  std::string_view hostname;  // ours
  bool esmtp = true;
  bool tls = false;
  bool auth = false;  // the client logged in (SMTP AUTH)
  std::string_view queue_id;
  std::string_view single_recipient;  // empty unless exactly one recipient
  int64_t unix_seconds = 0;
};

void appendReceived(std::string& out, const ReceivedInfo& info);

}  // namespace postern
