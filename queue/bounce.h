// Bounces: RFC 3464 delivery status notifications for recipients that failed for good
// (a 5xx reply, a permanent routing error, or the queue lifetime running out), and the
// two other notices RFC 3461 NOTIFY asks for: "relayed" (NOTIFY=SUCCESS, delivered to a
// next hop that does not offer DSN, so no notice will come from further on) and "delayed"
// (NOTIFY=DELAY, still deferred after delivery.delay_warning). One notice is of one kind.
//
// The notice is a multipart/report (RFC 6522) with a human-readable part, a
// message/delivery-status part (per-message and per-recipient fields) and the original:
// the whole message (message/rfc822) for a failure when RET=FULL or no RET was given and
// the notice then fits bounce_size_limit, else its header section (text/rfc822-headers),
// cut to whole lines so the notice fits. The header section ends at the first empty line
// or at the first line that is not a header field, so a message without an empty line
// is never quoted whole. Quoted content is anything an outsider sent, so the MIME
// boundary is random (core/random.h): it cannot be guessed and closed early. (The report
// itself, our own text and bounded per recipient, is not cut.) It goes from the null
// sender <> to the original envelope sender, so a bounce that bounces is dropped instead
// of looping. RFC 3461 NOTIFY decides whether a recipient's failure is reported at all.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "queue/envelope.h"

namespace postern {

enum class DsnAction { kFailed, kRelayed, kDelayed };

struct FailedRecipient {
  uint32_t index = 0;      // into the original envelope's recipients
  std::string status;      // enhanced status code, "5.1.1"
  std::string diagnostic;  // the next hop's reply ("550 5.1.1 no such user") or ""
  std::string remote_mta;  // the host that gave it, or ""
  std::string reason;      // one line for the human-readable part
};

struct BounceInput {
  std::string reporting_mta;  // our host name
  const Envelope* original = nullptr;
  std::vector<FailedRecipient> failed;
  std::string_view original_message;  // as spooled
  size_t size_limit = 50000;          // the notice's size, returned content included
  int64_t now_ms = 0;
  // The kind of every recipient's report. Only a failure quotes the whole message
  // (RET=FULL); the other notices quote its header.
  DsnAction action = DsnAction::kFailed;
  int64_t retry_until_ms = 0;  // kDelayed: when the relay gives up (Will-Retry-Until)
};

// Whether a failure of a recipient with this NOTIFY value is reported (empty: default,
// which reports failures).
bool notifyOnFailure(std::string_view notify);
// NOTIFY=SUCCESS asked for (never by default).
bool notifyOnSuccess(std::string_view notify);
// A delay warning for this NOTIFY value: asked for with DELAY, or by default (no NOTIFY),
// as Postfix does once delay warnings are turned on.
bool notifyOnDelay(std::string_view notify);
// Whether a bounce is sent at all for this envelope (never to the null sender).
bool bounceWanted(const Envelope& env);

// The enhanced status code of a reply ("5.1.1" from "5.1.1 no such user"), or one derived
// from the basic code ("5.0.0") when the reply has none.
std::string statusFromReply(int code, std::string_view text);

// The complete notice, header included, CRLF line ends, ready to spool.
std::string composeBounce(const BounceInput& in);

// The notices for in: one, or several, each for some of the recipients, when the report of
// all of them would not fit size_limit (a notice for one recipient is not split further:
// its report is bounded, every line of it).
std::vector<std::string> composeNotices(const BounceInput& in);

}  // namespace postern
