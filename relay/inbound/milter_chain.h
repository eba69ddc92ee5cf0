// MilterChain: a session's milters (its listener's [[milter]] list), asked in order at each
// step of the SMTP conversation, as Postfix's smtpd_milters are: connect, HELO, MAIL, RCPT,
// DATA, and at the end of the message its header fields, end of header, body (in chunks
// of 64 KiB) and end of message. A step a milter negotiated away is not sent to it, nor
// is a reply awaited that it said it would not send.
//
// The first milter that does not continue decides the step: reject, tempfail, a reply
// code of its own, or discard (the message is answered 250 and dropped). Accept ends a
// milter's part: for the session at connect and HELO, for the message after that. A milter
// that fails (cannot connect, times out, breaks the protocol) is handled by its
// default_action: tempfail answers this step and every later one of the session with
// 451 4.7.1; accept goes on without it for the rest of the session.
//
// Every milter sees the message as received; their edits (collected at the end of the
// message, applied by the session in milter order) go into MilterEdits.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "relay/inbound/milter_client.h"
#include "relay/inbound/milter_edit.h"

namespace postern {

enum class MilterStep { kConnect, kHelo, kMail, kRcpt, kData, kMessage };

struct MilterVerdict {
  enum class Kind { kContinue, kReject, kTempfail, kDiscard };
  Kind kind = Kind::kContinue;
  // kReject/kTempfail: the SMTP reply; a milter's own reply code when it sent one, else
  // 550 5.7.1 / 451 4.7.1 as Postfix answers.
  int code = 0;
  std::vector<std::string> lines;  // each line's text after the code
  std::string milter;              // who decided (or failed)
  std::string why;                 // a failure's cause, for the log ("" if a reply)
  // Milters that failed with default_action = accept during the step: "name: why".
  std::vector<std::string> skipped;
};

// What the milters asked at the end of the message, in their order.
struct MilterEdits {
  std::vector<milter::Packet> headers;  // ADDHEADER, INSHEADER, CHGHEADER
  std::optional<std::string> body;      // REPLBODY, concatenated
  std::optional<std::string> sender;    // CHGFROM's address (its ESMTP arguments dropped)
  std::vector<std::string> add_rcpts;   // ADDRCPT / ADDRCPT_PAR addresses
  std::vector<std::string> del_rcpts;
  std::optional<std::string> quarantine;  // QUARANTINE's reason
  std::string quarantined_by;             // and the milter's name
  bool empty() const {
    return headers.empty() && !body && !sender && add_rcpts.empty() && del_rcpts.empty() &&
           !quarantine;
  }
};

class MilterChain {
 public:
  using Macros = std::vector<std::pair<std::string, std::string>>;
  using Done = std::function<void(const MilterVerdict&)>;
  // Reads n octets of the message content at offset into out (less only at its end);
  // false if it cannot.
  using ReadContent = std::function<bool(uint64_t offset, size_t n, std::string& out)>;

  MilterChain(uv_loop_t* loop, const Config& config, const std::vector<size_t>& milters);
  ~MilterChain();
  MilterChain(const MilterChain&) = delete;
  MilterChain& operator=(const MilterChain&) = delete;

  bool empty() const { return slots_.empty(); }
  bool busy() const { return busy_; }

  // One step; done is called once, maybe before run returns (nothing to wait for).
  void connect(std::string hostname, char family, uint16_t port, std::string address, Macros macros,
               Done done);
  void helo(std::string helo, Macros macros, Done done);
  void mail(std::string sender, Macros macros, Done done);  // starts a message
  void rcpt(std::string rcpt, Macros macros, Done done);
  void data(Macros macros, Done done);
  // The message content (size octets, read through read), and the macros for end of
  // header and end of message.
  void message(uint64_t size, ReadContent read, Macros macros, Done done);
  // The header section of the last message() as the milters saw it.
  const HeaderSection& section() const { return section_; }
  // The edits the last message() collected.
  MilterEdits takeEdits() { return std::move(edits_); }
  // The message ended without an answer from the milters (RSET, a reject, a new MAIL):
  // they forget it (SMFIC_ABORT).
  void abort();

 private:
  enum class Phase { kOpen, kStep, kHeaders, kEndOfHeaders, kBody, kEndOfMessage, kDone };
  struct Slot {
    const MilterConfig* config = nullptr;
    MilterClient* client = nullptr;
    bool off = false;           // for the rest of the session (accepted, or failed)
    bool message_done = false;  // accepted (or skipped) for this message
    bool in_message = false;    // MAIL sent and the message not yet ended
    std::string failure;        // failed with default_action = tempfail: why
  };
  static constexpr size_t kHeaderScan = 256 * 1024;

  void start(MilterStep step, char command, std::string packet, Macros macros, Done done);
  void pump();
  // The next packets for the current slot in this step; false when it has none left.
  bool nextPackets(Slot& s, std::string& out, bool& await);
  void onReply(const MilterReply& r);
  void collect(Slot& s);
  void nextSlot();
  // false: the step has ended (the failure decided it)
  bool failed(Slot& s, const std::string& why);
  void finish(MilterVerdict v);
  MilterVerdict tempfail(const Slot& s);
  bool skipsStep(const Slot& s) const;
  bool noReply(const Slot& s, uint32_t flag) const;

  uv_loop_t* loop_;
  size_t max_modification_bytes_;
  std::vector<Slot> slots_;
  bool busy_ = false;
  // The step being run.
  MilterStep step_ = MilterStep::kConnect;
  char command_ = 0;
  std::string packet_;  // its command packet
  std::string macros_;  // its macro packet(s)
  Done done_;
  size_t slot_ = 0;
  Phase phase_ = Phase::kOpen;
  MilterVerdict verdict_;  // skipped milters so far
  // The message step.
  uint64_t size_ = 0;
  ReadContent read_;
  HeaderSection section_;
  size_t header_ = 0;    // next header field to send
  uint64_t offset_ = 0;  // next body octet to send
  std::string eoh_macros_, eom_macros_;
  MilterEdits edits_;
};

}  // namespace postern
