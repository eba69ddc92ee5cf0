// LoadClient: one of the source's SMTP client connections (RFC 5321, RFC 2920).
//
// A client claims a message, connects, greets with EHLO (HELO if EHLO is refused), then
// runs transactions for messages it claims until --messages-per-connection or until none
// is left, QUITs, and reconnects if it can claim another. With PIPELINING (offered by the
// server, or forced by --pipelining) MAIL, every RCPT and DATA go in one write and the
// replies are matched in order; the body follows the 354 in one write. A failure (connect
// error, reset, early close, malformed reply, 421) closes the connection, hands a message
// in transaction back to the Source, and reconnects after a short delay, keeping a message
// it had claimed but not started. Handles live inside the client; the Source frees
// clients only after the loop has closed every handle.
//
// With --starttls the client sends STARTTLS after the first EHLO (a server that does not
// offer it is a connection error), runs the TLS handshake through a TlsStream
// (core/tls_stream.h), and greets again with EHLO inside TLS before its first transaction.
// With --tls-resume it offers the Source's last session in the handshake and, once the EHLO
// inside TLS is answered (the server's ticket arrived before that reply), hands its own
// session back to the Source for the connections that follow.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include "core/input_buffer.h"
#include "core/line_splitter.h"

namespace postern {

class Source;
class TlsStream;

class LoadClient {
 public:
  explicit LoadClient(Source& source);
  ~LoadClient();
  LoadClient(const LoadClient&) = delete;
  LoadClient& operator=(const LoadClient&) = delete;

  // Reserve the next message (unless one is reserved already) and connect to send it;
  // park when there is none, so that no connection is opened only to QUIT.
  void resume();
  // Close every handle for good (the run is over).
  void shut();
  bool parked() const { return phase_ == Phase::kParked; }
  bool closed() const { return phase_ == Phase::kParked || phase_ == Phase::kShut; }

 private:
  enum class Phase : uint8_t { kParked, kConnecting, kOpen, kClosing, kRetryWait, kShut };
  enum class Expect : uint8_t {
    kGreeting,
    kEhlo,
    kHelo,
    kStartTls,
    kMail,
    kRcpt,
    kData,
    kDot,
    kRset,
    kQuit
  };

  static void onConnect(uv_connect_t* req, int status);
  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void onClose(uv_handle_t* h);
  static void onRetry(uv_timer_t* t);

  void processLines();
  void startTls();
  void onCipher(const char* data, size_t len);
  void onLine(std::string_view text);
  void onReply(int code);
  void onGreeting(int code);
  void onEhlo(int code, bool ehlo);
  void onMail(int code);
  void onRcpt(int code);
  void onData(int code);

  void connect();
  void next();
  void startTransaction(uint64_t seq);
  void sendData();
  void transactionDone(int code, uint64_t latency_ns, bool body_sent);
  void send(std::string_view command, Expect expect);
  void flush();
  void fail(std::string_view what);
  void closeConnection(bool retry);

  Source& src_;
  uv_tcp_t tcp_{};
  uv_timer_t retry_timer_{};
  uv_connect_t connect_req_{};
  Phase phase_ = Phase::kParked;
  bool retry_after_close_ = false;
  bool reserved_ = false;  // seq_ is claimed for this client's next connection
  bool timer_open_ = false;

  InputBuffer in_{64 * 1024};
  LineSplitter splitter_{4096};
  std::string out_;
  std::deque<Expect> expect_;  // replies still owed by the server, oldest first
  int reply_code_ = 0;         // code of the multi-line reply being read, 0 between replies
  bool offers_pipelining_ = false;
  bool offers_starttls_ = false;
  bool pipelining_ = false;
  int done_on_connection_ = 0;

  // TLS after STARTTLS (--starttls): ciphertext is read into the stream's buffer; in_ and
  // out_ then hold plaintext.
  std::unique_ptr<TlsStream> tls_;

  // The transaction in progress.
  bool in_transaction_ = false;
  uint64_t seq_ = 0;
  int64_t ts_ns_ = 0;
  size_t rcpt_sent_ = 0;
  int rcpt_ok_ = 0;
  int mail_code_ = 0;
  int rcpt_fail_code_ = 0;
  uint64_t dot_sent_ns_ = 0;
};

}  // namespace postern
