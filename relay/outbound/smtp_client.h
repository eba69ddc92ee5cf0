// SmtpClient: one outbound SMTP connection to one address of a next hop, owned by
// Delivery.
//
// Connects, reads the greeting, says EHLO (HELO if refused), upgrades with STARTTLS when
// the route's policy asks for it (opportunistic: when offered, unverified; required: only
// with a certificate valid for the host's name, else the connection fails), says EHLO
// again, then delivers jobs handed to it one at a time, reusing the connection. With
// PIPELINING the envelope (MAIL, RCPTs, DATA) goes out in one write and the replies are
// matched in order (RFC 2920); without it, one command per reply. Results are per
// recipient: a failed MAIL applies to every recipient, a failed RCPT to that one, and the
// DATA/end-of-data reply to the accepted ones. A message the peer cannot take (SMTPUTF8
// without the extension, a SIZE over its limit, 8-bit content without 8BITMIME: the body is
// read through once before MAIL to know) fails with a clear reply of our own. A
// connection that breaks or times out mid-transaction reports 4xx for every recipient it
// carried, so nothing is lost, only retried. Timeouts follow Postfix's split: connect,
// greeting, each command, and the body with its final reply (data_timeout, started again
// each time a piece of the body has gone out).
//
// The body streams from the spool: a BodyReader (queue/body_reader.h) reads it in 64 KiB
// pieces off the loop, a DotStuffer (core/dot_stuffer.h) splits each piece where a dot
// needs doubling, and the views go out with writev (through TlsStream after STARTTLS), the
// next piece being read while one is sent. A piece with many lines to stuff is copied into
// one buffer first: the kernel copies hundreds of short iovecs far slower than one long one
// (a body of 100 KB with a dot line in six cost 10% more relay CPU than the copy). A
// delivery connection holds two pieces, and at most one stuffed copy, whatever the
// message's size.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/dot_stuffer.h"
#include "core/input_buffer.h"
#include "core/line_splitter.h"
#include "core/tls_session_cache.h"
#include "core/tls_stream.h"
#include "queue/body_reader.h"
#include "queue/scheduler.h"
#include "queue/spool.h"
#include "relay/routing/resolver.h"

namespace postern {

class SmtpClient;
struct Destination;

struct RecipientResult {
  uint32_t index;  // into the envelope's recipients
  int code;
  std::string text;
};

// What a client needs of the pool that owns it: Delivery implements it, and the client
// knows nothing else of delivery.
class ClientOwner {
 public:
  virtual uv_loop_t* loop() const = 0;
  virtual Spool& spool() const = 0;
  // The connection is ready for a job (first_time: it just became so after connecting).
  virtual void clientReady(SmtpClient* client, bool first_time) = 0;
  virtual void jobFinished(SmtpClient* client, std::unique_ptr<DeliveryJob> job,
                           std::vector<RecipientResult> results) = 0;
  // Its handles are closed and no read of the body is left: the owner deletes it.
  virtual void clientClosed(SmtpClient* client) = 0;
  // TLS sessions of this loop's connections, to resume the next one to the same hop.
  virtual TlsSessionCache& tlsSessions() = 0;
  // Where this loop's body reads counts go (a metric).
  virtual BodyReadCounts& bodyReads() = 0;

 protected:
  ~ClientOwner() = default;
};

struct ClientOptions {
  HopAddress target;
  size_t address_index = 0;  // which of the destination's addresses
  unsigned round = 0;        // Destination::round when it was opened
  // kDane here: the host has secure TLSA records (below); Delivery turns a "dane" route's
  // other hosts into kOpportunistic.
  TlsPolicy tls = TlsPolicy::kOpportunistic;
  std::vector<TlsaRecord> tlsa;
  bool sts = false;  // tls = kRequired because of an MTA-STS policy in enforce mode
  // An MTA-STS policy in testing mode: opportunistic, but the certificate is checked (with
  // a verifying tls_context) for the report.
  bool sts_testing = false;
  // TLS reporting (RFC 8460): the policy this connection is made under ("sts", "tlsa"; ""
  // none), for the reports of rpt_domain.
  std::string rpt_type;
  std::vector<std::string> rpt_policy;
  std::string rpt_domain;
  std::string rpt_failure;  // reported whatever the session does (no-policy-found)
  // Not to be tried (its TLSA records could not be looked up): the connection fails at
  // once with this reason, as an unreachable address does.
  std::string refuse;
  // nullptr: no STARTTLS. Shared: a reload may replace Delivery's context mid-connection.
  std::shared_ptr<const TlsContext> tls_context;
  // From the configuration in force when the connection was opened: a reload applies to
  // connections opened after it, an open one keeps what it started with.
  std::string hostname;  // said in EHLO and HELO
  // Seconds (DeliveryConfig): to connect, for the greeting, for each command's reply, for
  // the body and its final reply, and for a pooled connection waiting for work.
  double connect_timeout = 0;
  double greeting_timeout = 0;
  double command_timeout = 0;
  double data_timeout = 0;
  double idle_timeout = 0;
};

class SmtpClient {
 public:
  SmtpClient(ClientOwner& owner, Destination& destination, ClientOptions options);

  void start();
  // Sends one message over this ready, idle connection.
  void deliver(std::unique_ptr<DeliveryJob> job);
  // Ends the connection (QUIT when idle, abrupt otherwise); the client deletes itself
  // once its handles are closed, after telling its owner.
  void shutdown();

  Destination& destination() const { return destination_; }
  bool idle() const { return state_ == State::kIdle; }
  // For metrics: "opening" (connect, greeting, EHLO, STARTTLS), "idle", "busy" (a
  // message on it) or "closing".
  const char* phase() const;
  // The job on this connection now, if any (for queue listings).
  const DeliveryJob* job() const { return job_.get(); }
  bool everReady() const { return ever_ready_; }
  size_t messagesSent() const { return messages_sent_; }
  size_t addressIndex() const { return options_.address_index; }
  unsigned round() const { return options_.round; }
  const std::string& host() const { return options_.target.host; }
  // Why the connection ended before it became ready ("" if it did not).
  const std::string& error() const { return error_; }
  // The STARTTLS handshake failed (an opportunistic route then goes plain for a while).
  bool tlsFailed() const { return tls_failed_; }
  TlsPolicy tlsPolicy() const { return options_.tls; }
  // How this connection is protected, for the delivery log lines: "none" (plain text),
  // "unverified" (opportunistic), "verified" (tls = "required"), "mta-sts" (verified for
  // an MX host of an enforced policy), "dane-ee", "dane-ta", or "dane-unusable"
  // (encrypted, TLSA records of no usable kind).
  const std::string& tlsSummary() const { return tls_summary_; }
  // For the TLS report: "" when TLS went as the policy wants, else its result type
  // ("starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
  // "tlsa-invalid", "validation-failure"); empty too when no TLS was tried.
  const std::string& tlsRptResult() const { return rpt_result_; }
  const ClientOptions& options() const { return options_; }
  // No plain text with this hop: tls = "required", or DANE with TLSA records.
  bool tlsMandatory() const {
    return options_.tls == TlsPolicy::kRequired || options_.tls == TlsPolicy::kDane;
  }
  // The peer offered DSN (RFC 3461) in its EHLO reply: NOTIFY was passed on to it.
  bool offersDsn() const { return dsn_; }

 private:
  // RFC 8460 §4.3's result type for an X509_V_* verification result.
  std::string reportResult(long verify_error);
  enum class State {
    kConnecting,
    kGreeting,
    kEhlo,
    kHelo,
    kStartTls,
    kTlsHandshake,
    kIdle,
    kScan,  // reading the body through for 8-bit content, for a hop without 8BITMIME
    kEnvelope,
    kBody,
    kRset,
    kQuit,
    kClosed
  };

  void onReply(int code, std::string_view text);
  void onEhloLine(std::string_view line);
  void afterEhlo();
  void startTls();
  void pumpTls();
  void startEnvelopeReply(int code, std::string_view text);
  void finishTransaction(int final_code, std::string_view final_text);
  // Reports the same result for every recipient of the current job.
  void finishAll(int code, const std::string& text);
  // The job cannot go over this connection (before MAIL): finishAll, and ready again.
  void refuse(int code, const std::string& text);
  // The body cannot be read (spool_unreadable): refused before MAIL, the connection
  // closed after 354; either way the message is retried.
  void unreadable(const std::string& why);
  void becomeReady();
  // Through TLS once it is on; an empty data sends only the handshake's records.
  void send(std::string data);
  void sendEnvelope();
  void scanBody();
  // Sends the body's pieces that are read, one write at a time, then the final dot.
  void sendBody();
  void gatherViews();  // views_ into stuffed_, one view of it
  // Handles closed and no body read left: tells the owner (which deletes this).
  void maybeGone();
  void fail(std::string_view why);
  void close();
  void armTimer(double seconds);
  void processInput();

  static void onConnect(uv_connect_t* req, int status);
  static void onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t*);
  static void onTimer(uv_timer_t* t);
  static void onBodyPiece(void* ctx);
  static void onBodyWritten(void* ctx, int status);
  static void onClose(uv_handle_t* h);

  ClientOwner& owner_;
  Destination& destination_;
  ClientOptions options_;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  uv_connect_t connect_req_;
  int open_handles_ = 0;
  State state_ = State::kConnecting;
  bool ever_ready_ = false;
  size_t messages_sent_ = 0;
  std::string error_;

  InputBuffer in_;
  LineSplitter splitter_;
  std::string reply_text_;  // multi-line reply accumulated so far (bounded)
  size_t reply_lines_ = 0;  // lines of it so far
  int reply_code_ = 0;

  std::unique_ptr<TlsStream> tls_;  // after STARTTLS: in_ holds the decrypted replies
  bool tls_failed_ = false;
  std::string tls_summary_ = "none";
  std::string rpt_result_;
  bool dane_usable_ = false;  // tls = kDane: some TLSA record was usable (authenticated)

  bool pipelining_ = false;
  bool eight_bit_mime_ = false;
  bool smtputf8_ = false;
  bool dsn_ = false;
  bool starttls_ = false;
  bool size_ext_ = false;
  uint64_t size_limit_ = 0;  // SIZE the peer announced; 0: none

  std::unique_ptr<DeliveryJob> job_;
  std::unique_ptr<BodyReader> body_;  // this transaction's body being scanned or sent
  DotStuffer stuffer_;
  std::vector<std::string_view> views_;  // of the piece being written
  std::string stuffed_;                  // views_ gathered, when they are many (kGatherViews)
  std::string tls_session_key_;          // this hop in ClientOwner::tlsSessions()
  bool body_sending_ = false;          // from 354 until the final dot has been taken by the kernel
  bool body_writing_ = false;          // a write of the body is queued (not yet in the kernel)
  bool piece_held_ = false;            // the queued write points into front(): popped once written
  bool last_piece_sent_ = false;       // the final dot is in the write queued or done
  bool eight_bit_found_ = false;       // kScan
  std::vector<uint32_t> rcpts_;        // indices attempted in this transaction
  std::vector<std::string> commands_;  // MAIL, RCPT..., DATA
  size_t next_command_ = 0;            // first command not yet sent
  size_t replies_ = 0;                 // envelope replies received
  int mail_code_ = 0;
  std::string mail_text_;
  std::vector<std::pair<int, std::string>> rcpt_replies_;
};

}  // namespace postern
