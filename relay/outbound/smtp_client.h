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
// without the extension, a SIZE over its limit) fails with a clear reply of our own. A
// connection that breaks or times out mid-transaction reports 4xx for every recipient it
// carried, so nothing is lost, only retried. Timeouts follow Postfix's split: connect,
// greeting, each command, and the body with its final reply.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/input_buffer.h"
#include "core/line_splitter.h"
#include "core/tls_stream.h"
#include "queue/scheduler.h"
#include "relay/routing/resolver.h"

namespace postern {

class Delivery;
struct Destination;

struct RecipientResult {
  uint32_t index;  // into the envelope's recipients
  int code;
  std::string text;
};

struct ClientOptions {
  HopAddress target;
  size_t address_index = 0;  // which of the destination's addresses
  unsigned round = 0;        // Destination::round when it was opened
  TlsPolicy tls = TlsPolicy::kOpportunistic;
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
  SmtpClient(Delivery& delivery, Destination& destination, ClientOptions options);

  void start();
  // Sends one message over this ready, idle connection.
  void deliver(std::unique_ptr<DeliveryJob> job);
  // Ends the connection (QUIT when idle, abrupt otherwise); the client deletes itself
  // once its handles are closed, after telling Delivery.
  void shutdown();

  Destination& destination() const { return destination_; }
  bool idle() const { return state_ == State::kIdle; }
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
  // The peer offered DSN (RFC 3461) in its EHLO reply: NOTIFY was passed on to it.
  bool offersDsn() const { return dsn_; }

 private:
  enum class State {
    kConnecting,
    kGreeting,
    kEhlo,
    kHelo,
    kStartTls,
    kTlsHandshake,
    kIdle,
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
  void becomeReady();
  // body: the message and its final dot (body_in_flight_ until the kernel has it all).
  // Through TLS once it is on; an empty data sends only the handshake's records.
  void send(std::string data, bool body = false);
  void fail(std::string_view why);
  void close();
  void armTimer(double seconds);
  void processInput();

  static void onConnect(uv_connect_t* req, int status);
  static void onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t*);
  static void onTimer(uv_timer_t* t);
  static void onBodyWritten(void* ctx, int status);
  static void onClose(uv_handle_t* h);

  Delivery& delivery_;
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
  bool body_in_flight_ = false;  // some of the message is still queued for the socket

  std::unique_ptr<TlsStream> tls_;  // after STARTTLS: in_ holds the decrypted replies
  bool tls_failed_ = false;

  bool pipelining_ = false;
  bool eight_bit_mime_ = false;
  bool smtputf8_ = false;
  bool dsn_ = false;
  bool starttls_ = false;
  bool size_ext_ = false;
  uint64_t size_limit_ = 0;  // SIZE the peer announced; 0: none

  std::unique_ptr<DeliveryJob> job_;
  std::string body_;                   // the message, once read from the spool for this transaction
  std::vector<uint32_t> rcpts_;        // indices attempted in this transaction
  std::vector<std::string> commands_;  // MAIL, RCPT..., DATA
  size_t next_command_ = 0;            // first command not yet sent
  size_t replies_ = 0;                 // envelope replies received
  int mail_code_ = 0;
  std::string mail_text_;
  std::vector<std::pair<int, std::string>> rcpt_replies_;
};

}  // namespace postern
