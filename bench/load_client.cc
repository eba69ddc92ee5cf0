#include "bench/load_client.h"

#include <cstdio>
#include <string>

#include "bench/load_source.h"
#include "bench/load_stats.h"
#include "core/smtp_command.h"
#include "core/stream_write.h"
#include "core/tls_stream.h"

namespace postern {
namespace {

constexpr uint64_t kRetryDelayMs = 200;
constexpr size_t kCipherBuffer = 64 * 1024;

bool isDigit(char c) { return c >= '0' && c <= '9'; }

std::string withCode(std::string_view what, int code) {
  return std::string(what) + " " + std::to_string(code);
}

}  // namespace

LoadClient::LoadClient(Source& source) : src_(source) {
  uv_timer_init(src_.loop(), &retry_timer_);
  retry_timer_.data = this;
  timer_open_ = true;
}

LoadClient::~LoadClient() = default;

void LoadClient::resume() {
  if (!reserved_) {
    if (!src_.claim(seq_)) {
      phase_ = Phase::kParked;
      src_.clientParked(this);
      return;
    }
    reserved_ = true;
  }
  connect();
}

void LoadClient::connect() {
  in_.clear();
  splitter_.reset();
  out_.clear();
  expect_.clear();
  reply_code_ = 0;
  offers_pipelining_ = false;
  offers_starttls_ = false;
  pipelining_ = false;
  done_on_connection_ = 0;
  in_transaction_ = false;
  tls_.reset();

  uv_tcp_init(src_.loop(), &tcp_);
  tcp_.data = this;
  connect_req_.data = this;
  phase_ = Phase::kConnecting;
  uv_tcp_nodelay(&tcp_, 1);
  int r = uv_tcp_connect(&connect_req_, &tcp_, src_.server(), onConnect);
  if (r < 0) fail(uv_strerror(r));
}

void LoadClient::shut() {
  if (phase_ == Phase::kOpen || phase_ == Phase::kConnecting) {
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClose);
  }
  phase_ = Phase::kShut;
  if (timer_open_) {
    timer_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&retry_timer_), nullptr);
  }
}

void LoadClient::onConnect(uv_connect_t* req, int status) {
  auto* c = static_cast<LoadClient*>(req->data);
  if (c->phase_ != Phase::kConnecting) return;  // closed while connecting
  if (status < 0) {
    c->fail(std::string("connect: ") + uv_strerror(status));
    return;
  }
  c->phase_ = Phase::kOpen;
  c->src_.connected();
  c->expect_.push_back(Expect::kGreeting);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp_), onAlloc, onRead);
}

void LoadClient::onAlloc(uv_handle_t* h, size_t /*suggested*/, uv_buf_t* buf) {
  auto* c = static_cast<LoadClient*>(h->data);
  if (c->tls_) {
    *buf = c->tls_->readBuffer();
    return;
  }
  std::span<char> free = c->in_.writable();
  *buf = uv_buf_init(free.data(), static_cast<unsigned>(free.size()));
}

void LoadClient::onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<LoadClient*>(s->data);
  if (c->phase_ != Phase::kOpen) return;
  if (nread > 0) {
    if (c->tls_) {
      c->onCipher(buf->base, static_cast<size_t>(nread));
      return;
    }
    c->in_.commit(static_cast<size_t>(nread));
    c->processLines();
    c->flush();
  } else if (nread < 0) {
    if (c->expect_.size() == 1 && c->expect_.front() == Expect::kQuit) {
      c->closeConnection(false);  // closed or reset without the 221: good enough after QUIT
    } else if (nread == UV_EOF) {
      c->fail("server closed the connection");
    } else {
      c->fail(std::string("read: ") + uv_strerror(static_cast<int>(nread)));
    }
  }
}

void LoadClient::processLines() {
  Line line;
  TlsStream* const before = tls_.get();
  while (phase_ == Phase::kOpen && tls_.get() == before && splitter_.next(in_, line)) {
    if (line.too_long) {
      fail("reply line too long");
      return;
    }
    onLine(line.text);
  }
}

void LoadClient::startTls() {
  // Anything the server sent after its 220 was sent in the clear: drop it (RFC 3207).
  in_.clear();
  splitter_.reset();
  reply_code_ = 0;
  tls_ =
      std::make_unique<TlsStream>(*src_.tlsContext(), TlsConnection::Side::kClient, kCipherBuffer);
  tls_->resume(src_.tlsSession());  // nullptr (a full handshake) without --tls-resume
  if (tls_->handshake() == TlsStream::Handshake::kFailed) {
    fail("TLS handshake: " + tls_->error());
    return;
  }
  flush();  // the ClientHello
}

void LoadClient::onCipher(const char* data, size_t len) {
  tls_->received(data, len);
  if (!tls_->established()) {
    TlsStream::Handshake h = tls_->handshake();
    if (h == TlsStream::Handshake::kFailed) {
      fail("TLS handshake: " + tls_->error());
      return;
    }
    if (h == TlsStream::Handshake::kDone) {
      if (tls_->resumed()) src_.tlsResumed();
      // Start over inside TLS: EHLO again, and forget what the plain-text EHLO offered.
      offers_pipelining_ = false;
      out_ += "EHLO ";
      out_ += src_.heloName();
      out_ += "\r\n";
      expect_.push_back(Expect::kEhlo);
    }
    flush();  // the handshake's records, and the EHLO once it is done
    if (phase_ != Phase::kOpen || !tls_->established()) return;
  }
  for (;;) {
    TlsStream::Read r = tls_->read(in_);
    if (r == TlsStream::Read::kFull) {
      fail("reply line too long");
      return;
    }
    if (r == TlsStream::Read::kFailed) {
      fail("TLS read: " + tls_->error());
      return;
    }
    if (r == TlsStream::Read::kNone) break;
    processLines();
    if (phase_ != Phase::kOpen) return;
  }
  flush();
}

void LoadClient::onLine(std::string_view text) {
  if (text.size() < 3 || !isDigit(text[0]) || !isDigit(text[1]) || !isDigit(text[2]) ||
      (text.size() > 3 && text[3] != ' ' && text[3] != '-')) {
    fail("malformed reply");
    return;
  }
  int code = (text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0');
  if (reply_code_ != 0 && code != reply_code_) {
    fail("reply code changed inside a multi-line reply");
    return;
  }
  if (!expect_.empty() && expect_.front() == Expect::kEhlo && text.size() >= 12) {
    std::string_view keyword = text.substr(4);
    if (equalsIgnoreCase(keyword.substr(0, 10), "PIPELINING") &&
        (keyword.size() == 10 || keyword[10] == ' ')) {
      offers_pipelining_ = true;
    }
    if (equalsIgnoreCase(keyword.substr(0, 8), "STARTTLS") &&
        (keyword.size() == 8 || keyword[8] == ' ')) {
      offers_starttls_ = true;
    }
  }
  if (text.size() > 3 && text[3] == '-') {
    reply_code_ = code;
    return;
  }
  reply_code_ = 0;
  onReply(code);
}

void LoadClient::onReply(int code) {
  if (expect_.empty()) {
    fail(withCode("unexpected reply", code));
    return;
  }
  Expect e = expect_.front();
  expect_.pop_front();
  if (code == 421 && e != Expect::kQuit) {
    // The server is closing the connection. It answered the message, though: that is a
    // tempfail, not a reason to resend.
    src_.connectionError("421 from server");
    if (in_transaction_) {
      in_transaction_ = false;
      src_.outcome(seq_, code, 0);
    }
    closeConnection(true);
    return;
  }
  switch (e) {
    case Expect::kGreeting:
      onGreeting(code);
      break;
    case Expect::kEhlo:
      onEhlo(code, true);
      break;
    case Expect::kHelo:
      onEhlo(code, false);
      break;
    case Expect::kStartTls:
      if (code != 220) {
        fail(withCode("STARTTLS refused:", code));
        return;
      }
      flush();
      startTls();
      break;
    case Expect::kMail:
      onMail(code);
      break;
    case Expect::kRcpt:
      onRcpt(code);
      break;
    case Expect::kData:
      onData(code);
      break;
    case Expect::kDot:
      if (code < 200 || (code >= 300 && code < 400)) {
        fail(withCode("unexpected reply to end of data", code));
        return;
      }
      transactionDone(code, monotonicNs() - dot_sent_ns_, true);
      break;
    case Expect::kRset:
      if (!pipelining_) next();
      break;
    case Expect::kQuit:
      closeConnection(false);
      break;
  }
}

void LoadClient::onGreeting(int code) {
  if (code / 100 != 2) {
    fail(withCode("greeting refused:", code));
    return;
  }
  out_ += "EHLO ";
  out_ += src_.heloName();
  out_ += "\r\n";
  expect_.push_back(Expect::kEhlo);
}

void LoadClient::onEhlo(int code, bool ehlo) {
  // The server's TLS 1.3 ticket came after the handshake, before this reply: the session
  // is resumable now (the EHLO inside TLS is the first reply that follows the handshake).
  if (tls_ && ehlo && src_.options().tls_resume) src_.obtainedSession(tls_->resumable());
  if (code / 100 == 2 && src_.options().starttls && !tls_) {
    if (!ehlo || !offers_starttls_) {
      fail("--starttls: the server does not offer STARTTLS");
      return;
    }
    out_ += "STARTTLS\r\n";
    expect_.push_back(Expect::kStartTls);
    return;
  }
  if (code / 100 == 2) {
    int mode = src_.options().pipelining;
    pipelining_ = mode > 0 || (mode == 0 && ehlo && offers_pipelining_);
    next();
  } else if (ehlo) {
    out_ += "HELO ";
    out_ += src_.heloName();
    out_ += "\r\n";
    expect_.push_back(Expect::kHelo);
  } else {
    fail(withCode("HELO refused:", code));
  }
}

void LoadClient::next() {
  uint64_t seq = 0;
  if (reserved_) {
    reserved_ = false;
    startTransaction(seq_);
    return;
  }
  if (done_on_connection_ >= src_.options().messages_per_connection || !src_.claim(seq)) {
    out_ += "QUIT\r\n";
    expect_.push_back(Expect::kQuit);
    return;
  }
  startTransaction(seq);
}

void LoadClient::startTransaction(uint64_t seq) {
  in_transaction_ = true;
  seq_ = seq;
  rcpt_sent_ = 0;
  rcpt_ok_ = 0;
  mail_code_ = 0;
  rcpt_fail_code_ = 0;
  src_.began(seq);
  out_ += "MAIL FROM:<";
  out_ += src_.builder().from();
  out_ += ">\r\n";
  expect_.push_back(Expect::kMail);
  if (!pipelining_) return;
  for (const std::string& rcpt : src_.builder().recipients()) {
    out_ += "RCPT TO:<";
    out_ += rcpt;
    out_ += ">\r\n";
    expect_.push_back(Expect::kRcpt);
  }
  rcpt_sent_ = src_.builder().recipients().size();
  sendData();
}

void LoadClient::onMail(int code) {
  mail_code_ = code;
  if (pipelining_) return;
  if (code / 100 != 2) {
    transactionDone(code, 0, false);
    return;
  }
  out_ += "RCPT TO:<";
  out_ += src_.builder().recipients()[rcpt_sent_++];
  out_ += ">\r\n";
  expect_.push_back(Expect::kRcpt);
}

void LoadClient::onRcpt(int code) {
  if (code / 100 == 2) {
    ++rcpt_ok_;
  } else if (rcpt_fail_code_ == 0) {
    rcpt_fail_code_ = code;
  }
  if (pipelining_) return;
  const auto& rcpts = src_.builder().recipients();
  if (rcpt_sent_ < rcpts.size()) {
    out_ += "RCPT TO:<";
    out_ += rcpts[rcpt_sent_++];
    out_ += ">\r\n";
    expect_.push_back(Expect::kRcpt);
  } else if (rcpt_ok_ > 0) {
    sendData();
  } else {
    transactionDone(rcpt_fail_code_, 0, false);
  }
}

void LoadClient::sendData() {
  ts_ns_ = realtimeNs();
  out_ += "DATA\r\n";
  expect_.push_back(Expect::kData);
}

void LoadClient::onData(int code) {
  if (code == 354) {
    // Everything before the body has been answered, so out_ is empty and the body goes
    // out as one write; the latency clock starts when it is handed to the kernel.
    flush();
    src_.builder().build(seq_, ts_ns_, out_);
    expect_.push_back(Expect::kDot);
    dot_sent_ns_ = monotonicNs();
    flush();
    return;
  }
  if (code / 100 != 4 && code / 100 != 5) {
    fail(withCode("unexpected reply to DATA", code));
    return;
  }
  // The message was refused: report the reply that decided it.
  if (mail_code_ / 100 != 2) {
    code = mail_code_;
  } else if (rcpt_ok_ == 0) {
    code = rcpt_fail_code_;
  }
  transactionDone(code, 0, false);
}

void LoadClient::transactionDone(int code, uint64_t latency_ns, bool body_sent) {
  // A transaction refused after MAIL was accepted leaves the server holding its state.
  bool reset = mail_code_ / 100 == 2 && !body_sent;
  in_transaction_ = false;
  ++done_on_connection_;
  src_.outcome(seq_, code, latency_ns);
  if (reset) {
    out_ += "RSET\r\n";
    expect_.push_back(Expect::kRset);
    if (!pipelining_) return;  // the next MAIL waits for the RSET reply
  }
  next();
}

void LoadClient::flush() {
  if (phase_ != Phase::kOpen) {
    out_.clear();
    return;
  }
  // A failed queued write also shows up on the read side (reset or EOF), which handles it.
  // With TLS, plaintext waits for the end of the handshake; the handshake's records do not.
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  Result<Sent> sent =
      tls_ ? tls_->write(stream, out_, nullptr, nullptr) : writeOut(stream, out_, nullptr, nullptr);
  if (!sent) {
    out_.clear();  // a failed TLS write leaves its plaintext
    fail("write: " + sent.error());
  }
}

void LoadClient::fail(std::string_view what) {
  if (phase_ != Phase::kOpen && phase_ != Phase::kConnecting) return;
  src_.connectionError(what);
  if (in_transaction_) {
    in_transaction_ = false;
    src_.requeue(seq_);
  }
  closeConnection(true);
}

void LoadClient::closeConnection(bool retry) {
  if (phase_ != Phase::kOpen && phase_ != Phase::kConnecting) return;
  phase_ = Phase::kClosing;
  retry_after_close_ = retry;
  expect_.clear();
  out_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClose);
}

void LoadClient::onClose(uv_handle_t* h) {
  auto* c = static_cast<LoadClient*>(h->data);
  if (c->phase_ == Phase::kShut) return;
  if (c->src_.stopping()) {
    c->phase_ = Phase::kParked;
    c->src_.clientParked(c);
  } else if (c->retry_after_close_) {
    c->phase_ = Phase::kRetryWait;
    uv_timer_start(&c->retry_timer_, onRetry, kRetryDelayMs, 0);
  } else {
    c->resume();
  }
}

void LoadClient::onRetry(uv_timer_t* t) {
  auto* c = static_cast<LoadClient*>(t->data);
  if (c->phase_ != Phase::kRetryWait) return;
  if (c->src_.stopping()) {
    c->phase_ = Phase::kParked;
    c->src_.clientParked(c);
  } else {
    c->resume();
  }
}

}  // namespace postern
