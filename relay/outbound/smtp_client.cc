#include "relay/outbound/smtp_client.h"

#include <cstring>

#include "core/ascii.h"
#include "core/assert.h"
#include "core/log.h"
#include "core/smtp_command.h"
#include "core/stream_write.h"

namespace postern {
namespace {

constexpr size_t kReplyLineMax = 4096;
// A multi-line reply longer than this is an attack or a broken peer, not an answer: the
// connection fails (its message is deferred) instead of our memory growing with it.
constexpr size_t kReplyLinesMax = 100;
// Text of one reply kept for logs and notices; past it the rest is read and dropped.
constexpr size_t kReplyTextMax = 2048;

constexpr size_t kCipherBuffer = 16 * 1024;
// More views than this in one write are gathered into one buffer (SmtpClient::stuffed_).
constexpr size_t kGatherViews = 16;

}  // namespace

SmtpClient::SmtpClient(ClientOwner& owner, Destination& destination, ClientOptions options)
    : owner_(owner),
      destination_(destination),
      options_(std::move(options)),
      in_(2 * kReplyLineMax),
      splitter_(kReplyLineMax) {}

const char* SmtpClient::phase() const {
  switch (state_) {
    case State::kConnecting:
    case State::kGreeting:
    case State::kEhlo:
    case State::kHelo:
    case State::kStartTls:
    case State::kTlsHandshake:
      return "opening";
    case State::kIdle:
      return "idle";
    case State::kScan:
    case State::kEnvelope:
    case State::kBody:
    case State::kRset:
      return "busy";
    case State::kQuit:
    case State::kClosed:
      return "closing";
  }
  return "closing";
}

std::string SmtpClient::reportResult(long verify_error) {
  switch (verify_error) {
    case X509_V_OK:
      // A handshake that failed with the chain and name in order (or one that went
      // through): nothing to report for a success, "validation-failure" otherwise.
      return tls_ && tls_->established() ? "" : "validation-failure";
    case X509_V_ERR_HOSTNAME_MISMATCH:
      return "certificate-host-mismatch";
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return "certificate-expired";
    case X509_V_ERR_DANE_NO_MATCH:
      return "tlsa-invalid";
    default:
      return "validation-failure";
  }
}

void SmtpClient::start() {
  uv_tcp_init(owner_.loop(), &tcp_);
  tcp_.data = this;
  uv_timer_init(owner_.loop(), &timer_);
  timer_.data = this;
  open_handles_ = 2;
  connect_req_.data = this;
  armTimer(options_.connect_timeout);
  if (!options_.refuse.empty()) return fail(options_.refuse);
  int rc = uv_tcp_connect(&connect_req_, &tcp_,
                          reinterpret_cast<const sockaddr*>(&options_.target.addr), onConnect);
  if (rc != 0) fail(std::string("connect: ") + uv_strerror(rc));
}

void SmtpClient::armTimer(double seconds) {
  uv_timer_start(&timer_, onTimer, static_cast<uint64_t>(seconds * 1000), 0);
}

void SmtpClient::onConnect(uv_connect_t* req, int status) {
  auto* c = static_cast<SmtpClient*>(req->data);
  if (c->state_ == State::kClosed) return;
  if (status < 0) return c->fail(std::string("connect: ") + uv_strerror(status));
  uv_tcp_nodelay(&c->tcp_, 1);
  c->state_ = State::kGreeting;
  c->armTimer(c->options_.greeting_timeout);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp_), onAlloc, onRead);
}

void SmtpClient::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<SmtpClient*>(h->data);
  if (c->tls_) {
    *buf = c->tls_->readBuffer();
    return;
  }
  std::span<char> w = c->in_.writable();
  *buf = uv_buf_init(w.data(), static_cast<unsigned>(w.size()));
}

void SmtpClient::onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<SmtpClient*>(s->data);
  if (c->state_ == State::kClosed) return;
  if (nread < 0) {
    return c->fail(nread == UV_EOF ? "connection closed by peer"
                                   : uv_strerror(static_cast<int>(nread)));
  }
  if (c->tls_) {
    c->tls_->received(buf->base, static_cast<size_t>(nread));
    return c->pumpTls();
  }
  c->in_.commit(static_cast<size_t>(nread));
  c->processInput();
}

void SmtpClient::pumpTls() {
  if (!tls_->established()) {
    TlsStream::Handshake hs = tls_->handshake();
    send(std::string());  // its records
    if (state_ == State::kClosed) return;
    if (hs == TlsStream::Handshake::kFailed) {
      tls_failed_ = true;
      rpt_result_ = reportResult(tls_->verifyError());
      if (!tls_session_key_.empty()) owner_.tlsSessions().erase(tls_session_key_);
      return fail("4.7.5 TLS handshake with " + host() + " failed: " + tls_->error());
    }
    if (hs == TlsStream::Handshake::kPending) return;
    // DANE: what authenticated the peer ("dane-ee", "dane-ta"), or "unusable" when its
    // TLSA records were all of usages SMTP does not use (encrypted, not authenticated).
    const std::string dane = options_.tls != TlsPolicy::kDane ? ""
                             : dane_usable_                   ? tls_->daneAuthority()
                                                              : "unusable";
    logEvent(spdlog::level::info, "tls_out",
             {{"relay", host()}, {"tls", tls_->describe()}, {"dane", dane}});
    if (options_.sts_testing) rpt_result_ = reportResult(tls_->verifyError());
    if (options_.tls == TlsPolicy::kDane) {
      tls_summary_ = dane_usable_ ? dane : "dane-unusable";
    } else {
      tls_summary_ = options_.sts                           ? "mta-sts"
                     : options_.tls == TlsPolicy::kRequired ? "verified"
                                                            : "unverified";
    }
    // RFC 3207 §4.2: forget what was learnt before TLS and ask again.
    pipelining_ = eight_bit_mime_ = smtputf8_ = dsn_ = starttls_ = size_ext_ = false;
    size_limit_ = 0;
    state_ = State::kEhlo;
    armTimer(options_.command_timeout);
    send("EHLO " + options_.hostname + "\r\n");
  }
  while (state_ != State::kClosed) {
    TlsStream::Read r = tls_->read(in_);
    if (r == TlsStream::Read::kFull) return fail("reply line too long");
    if (r == TlsStream::Read::kFailed) return fail("TLS: " + tls_->error());
    if (r == TlsStream::Read::kNone) break;
    processInput();
  }
}

void SmtpClient::processInput() {
  Line line;
  while (state_ != State::kClosed && splitter_.next(in_, line)) {
    std::string_view t = line.text;
    if (line.too_long || t.size() < 3 || t[0] < '2' || t[0] > '5' || t[1] < '0' || t[1] > '9' ||
        t[2] < '0' || t[2] > '9' || (t.size() > 3 && t[3] != ' ' && t[3] != '-')) {
      return fail("malformed reply from next hop");
    }
    int code = (t[0] - '0') * 100 + (t[1] - '0') * 10 + (t[2] - '0');
    if (reply_lines_ > 0 && code != reply_code_) return fail("malformed reply from next hop");
    reply_code_ = code;
    std::string_view rest = t.size() > 4 ? t.substr(4) : std::string_view{};
    if (state_ == State::kEhlo && code == 250) onEhloLine(rest);
    const bool more = t.size() > 3 && t[3] == '-';
    if (++reply_lines_ > kReplyLinesMax) return fail("reply from next hop has too many lines");
    if (reply_text_.size() < kReplyTextMax) {
      reply_text_.append(rest.substr(0, kReplyTextMax - reply_text_.size()));
      if (more) reply_text_.push_back(' ');
    }
    if (more) continue;
    reply_lines_ = 0;
    std::string text = std::move(reply_text_);
    reply_text_.clear();
    onReply(code, text);
    if (state_ == State::kTlsHandshake) {
      // Anything after the 220 was sent in plain text before TLS: never trust it.
      in_.clear();
      return;
    }
  }
}

void SmtpClient::onEhloLine(std::string_view line) {
  if (equalsIgnoreCase(line, "PIPELINING")) pipelining_ = true;
  if (equalsIgnoreCase(line, "8BITMIME")) eight_bit_mime_ = true;
  if (equalsIgnoreCase(line, "SMTPUTF8")) smtputf8_ = true;
  if (equalsIgnoreCase(line, "DSN")) dsn_ = true;
  if (equalsIgnoreCase(line, "STARTTLS")) starttls_ = true;
  if (equalsIgnoreCase(line, "SIZE")) size_ext_ = true;
  if (line.size() > 5 && equalsIgnoreCase(line.substr(0, 5), "SIZE ")) {
    size_ext_ = true;
    size_limit_ = std::strtoull(std::string(line.substr(5)).c_str(), nullptr, 10);
  }
}

void SmtpClient::send(std::string data) {
  // A failed queued write shows up as a read error too; the read side handles it.
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  Result<Sent> sent =
      tls_ ? tls_->write(stream, data, nullptr, this) : writeOut(stream, data, nullptr, this);
  if (!sent) return fail(sent.error());
}

void SmtpClient::onReply(int code, std::string_view text) {
  const std::string reply = std::to_string(code) + " " + std::string(text);
  switch (state_) {
    case State::kGreeting:
      if (code != 220) return fail("greeting from " + host() + ": " + reply);
      state_ = State::kEhlo;
      armTimer(options_.command_timeout);
      send("EHLO " + options_.hostname + "\r\n");
      return;
    case State::kEhlo:
      if (code == 250) return afterEhlo();
      if (tls_) return fail("EHLO after STARTTLS: " + reply);
      state_ = State::kHelo;
      send("HELO " + options_.hostname + "\r\n");
      return;
    case State::kHelo:
      if (code != 250) return fail("HELO: " + reply);
      return afterEhlo();
    case State::kStartTls:
      if (code == 220) return startTls();
      rpt_result_ = "starttls-not-supported";
      if (tlsMandatory()) {
        return fail("4.7.4 TLS is required, but " + host() + " refused STARTTLS: " + reply);
      }
      return becomeReady();
    case State::kEnvelope:
      return startEnvelopeReply(code, text);
    case State::kBody:
      // The reply to the final dot can only come once the dot has left: an earlier one
      // answers something else, and trusting it could lose the message.
      if (body_sending_) return fail("next hop replied before the end of the message");
      return finishTransaction(code, text);
    case State::kRset:
      if (code != 250) return fail("RSET: " + reply);
      return becomeReady();
    case State::kQuit:
      return close();
    case State::kConnecting:
    case State::kTlsHandshake:
    case State::kIdle:
    case State::kScan:
    case State::kClosed:
      return fail("unexpected reply from next hop");
  }
}

void SmtpClient::afterEhlo() {
  if (tls_ || options_.tls_context == nullptr || options_.tls == TlsPolicy::kNone) {
    return becomeReady();
  }
  if (!starttls_) {
    rpt_result_ = "starttls-not-supported";
    if (tlsMandatory()) {
      return fail("4.7.4 TLS is required, but was not offered by " + host());
    }
    return becomeReady();
  }
  state_ = State::kStartTls;
  send("STARTTLS\r\n");
}

void SmtpClient::startTls() {
  state_ = State::kTlsHandshake;
  tls_ = std::make_unique<TlsStream>(*options_.tls_context, TlsConnection::Side::kClient,
                                     kCipherBuffer);
  if (options_.tls == TlsPolicy::kDane) {
    // Checked afresh each time: a resumed session would skip the TLSA match, and the
    // records may have changed since.
    std::vector<TlsConnection::Tlsa> records;
    for (const TlsaRecord& t : options_.tlsa) {
      records.push_back({t.usage, t.selector, t.mtype, t.data});
    }
    dane_usable_ = tls_->expectDane(host(), records);
  } else if (options_.sts_testing) {
    tls_->checkPeer(host());  // checked for the report, not enforced
  } else {
    tls_->expectPeer(host(), options_.tls == TlsPolicy::kRequired);
    tls_session_key_ = TlsSessionCache::key(*options_.tls_context, host(), options_.target.addr);
    tls_->resume(owner_.tlsSessions().find(tls_session_key_));
  }
  pumpTls();
}

void SmtpClient::becomeReady() {
  body_.reset();  // an idle connection holds no message (no read of it is left by now)
  std::string().swap(stuffed_);
  bool first = !ever_ready_;
  ever_ready_ = true;
  // The server's ticket came with the handshake's last flight, before its EHLO reply.
  if (first && tls_ && !tls_session_key_.empty()) {
    owner_.tlsSessions().put(tls_session_key_, tls_->resumable());
  }
  state_ = State::kIdle;
  armTimer(options_.idle_timeout);
  owner_.clientReady(this, first);
}

void SmtpClient::deliver(std::unique_ptr<DeliveryJob> job) {
  POSTERN_ASSERT(state_ == State::kIdle);
  job_ = std::move(job);
  rcpts_ = job_->pendingRecipients();
  const Envelope& env = job_->message.envelope;
  const StoredRef& ref = job_->message.ref;
  commands_.clear();
  rcpt_replies_.clear();
  replies_ = 0;
  mail_code_ = 0;
  if (env.smtputf8 && !smtputf8_) {
    // RFC 6531 §3.2: a message that needs SMTPUTF8 cannot go to a hop without it.
    return refuse(553, "5.6.7 " + host() + " does not support SMTPUTF8");
  }
  if (size_limit_ != 0 && ref.body_size > size_limit_) {
    return refuse(552, "5.3.4 message size " + std::to_string(ref.body_size) +
                           " exceeds the limit of " + host() + " (" + std::to_string(size_limit_) +
                           ")");
  }
  eight_bit_found_ = false;
  if (!eight_bit_mime_ && ref.body_size > 0) {
    // RFC 6152: 8-bit content only to a hop that announced 8BITMIME (we do not convert).
    // Known only by reading the body through, before MAIL commits us to sending it.
    Result<BodyFile> file = owner_.spool().openBody(ref);
    if (!file) return unreadable(file.error());
    state_ = State::kScan;
    armTimer(options_.command_timeout);
    body_ = std::make_unique<BodyReader>(owner_.loop(), onBodyPiece, this, &owner_.bodyReads());
    body_->start(*file);
    return scanBody();
  }
  sendEnvelope();
}

void SmtpClient::scanBody() {
  while (true) {
    // A verdict waits for the reads in flight: they point into the reader.
    if (eight_bit_found_ || body_->failed()) {
      if (body_->reading() > 0) return;
      if (eight_bit_found_) {
        return refuse(554, "5.6.3 " + host() +
                               " does not support 8BITMIME and the message has 8-bit content");
      }
      return unreadable(body_->error());
    }
    if (body_->finished()) {
      body_.reset();
      return sendEnvelope();
    }
    std::optional<std::string_view> piece = body_->front();
    if (!piece) return;  // being read
    if (hasEightBit(*piece)) {
      eight_bit_found_ = true;
      body_->stop();
      continue;
    }
    body_->pop();
  }
}

void SmtpClient::sendEnvelope() {
  const Envelope& env = job_->message.envelope;
  const StoredRef& ref = job_->message.ref;
  std::string mail = "MAIL FROM:<" + env.sender + ">";
  if (size_ext_) mail += " SIZE=" + std::to_string(ref.body_size);
  if (eight_bit_mime_) mail += " BODY=8BITMIME";
  if (env.smtputf8) mail += " SMTPUTF8";
  if (dsn_ && !env.dsn_ret.empty()) mail += " RET=" + env.dsn_ret;
  if (dsn_ && !env.dsn_envid.empty()) mail += " ENVID=" + env.dsn_envid;
  commands_.push_back(mail + "\r\n");
  for (uint32_t i : rcpts_) {
    std::string rcpt = "RCPT TO:<" + env.recipients[i] + ">";
    if (dsn_ && !env.notifyOf(i).empty()) rcpt += " NOTIFY=" + env.notifyOf(i);
    if (dsn_ && !env.orcptOf(i).empty()) rcpt += " ORCPT=" + env.orcptOf(i);
    commands_.push_back(rcpt + "\r\n");
  }
  commands_.push_back("DATA\r\n");
  state_ = State::kEnvelope;
  armTimer(options_.command_timeout);
  if (pipelining_) {
    std::string all;
    for (const auto& c : commands_) all += c;
    next_command_ = commands_.size();
    send(std::move(all));
  } else {
    next_command_ = 1;
    send(commands_[0]);
  }
}

void SmtpClient::onBodyPiece(void* ctx) {
  auto* c = static_cast<SmtpClient*>(ctx);
  if (c->state_ == State::kClosed) return c->maybeGone();
  if (c->state_ == State::kScan) return c->scanBody();
  if (c->state_ == State::kBody) return c->sendBody();
}

void SmtpClient::sendBody() {
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  while (state_ == State::kBody && body_sending_ && !body_writing_) {
    if (body_->failed()) return unreadable(body_->error());
    views_.clear();
    bool last = true;  // an empty body has no piece, only the end
    piece_held_ = false;
    if (!body_->finished()) {
      std::optional<std::string_view> piece = body_->front();
      if (!piece) return;  // being read; onBodyPiece comes back here
      last = body_->frontIsLast();
      stuffer_.stuff(*piece, views_);
      piece_held_ = true;
    }
    if (last) stuffer_.finish(views_);
    if (!tls_ && views_.size() > kGatherViews) gatherViews();  // TLS gathers them anyway
    Result<Sent> sent = tls_ ? tls_->write(stream, views_, onBodyWritten, this)
                             : writeViews(stream, views_, onBodyWritten, this);
    if (!sent) return fail(sent.error());
    last_piece_sent_ = last;
    body_writing_ = *sent == Sent::kQueued;
    // Through TLS the piece was encrypted into a buffer of the write's own; in plain text
    // the kernel reads it from ours, which is kept until the write is done.
    if (piece_held_ && (tls_ || !body_writing_)) {
      piece_held_ = false;
      body_->pop();
    }
    if (body_writing_) return;  // onBodyWritten goes on
    if (last) {
      body_sending_ = false;
      return;
    }
    armTimer(options_.data_timeout);  // progress
  }
}

void SmtpClient::gatherViews() {
  stuffed_.clear();
  for (std::string_view v : views_) stuffed_.append(v);
  views_.assign(1, stuffed_);
}

void SmtpClient::onBodyWritten(void* ctx, int status) {
  // Called before the close callback (libuv cancels queued writes first), so the client
  // is still alive; a failed write shows up as a read error.
  auto* c = static_cast<SmtpClient*>(ctx);
  c->body_writing_ = false;
  if (c->state_ == State::kClosed || status < 0) return;
  if (c->piece_held_) {
    c->piece_held_ = false;
    c->body_->pop();
  }
  if (c->last_piece_sent_) {
    c->body_sending_ = false;
    return;
  }
  c->armTimer(c->options_.data_timeout);  // progress
  c->sendBody();
}

void SmtpClient::unreadable(const std::string& why) {
  logEvent(spdlog::level::warn, "spool_unreadable",
           {{"id", queueIdString(job_->message.envelope.id)}, {"error", why}});
  if (state_ == State::kBody) {
    // Closing without the final dot: the next hop discards what it has.
    return fail("cannot read message body from the spool");
  }
  refuse(451, "4.3.0 cannot read message body from the spool");  // before MAIL
}

void SmtpClient::refuse(int code, const std::string& text) {
  body_.reset();
  state_ = State::kIdle;
  finishAll(code, text);
  if (state_ == State::kIdle) becomeReady();  // finishAll may have handed it the next job
}

void SmtpClient::finishAll(int code, const std::string& text) {
  std::vector<RecipientResult> results;
  for (uint32_t i : rcpts_) results.push_back({i, code, text});
  owner_.jobFinished(this, std::move(job_), std::move(results));
}

void SmtpClient::startEnvelopeReply(int code, std::string_view text) {
  size_t index = replies_++;
  if (index == 0) {
    mail_code_ = code;
    mail_text_.assign(text);
  } else if (index <= rcpts_.size()) {
    rcpt_replies_.emplace_back(code, std::string(text));
  }
  if (replies_ < commands_.size()) {
    if (next_command_ < commands_.size()) send(commands_[next_command_++]);
    return;
  }
  // The DATA reply.
  bool any_accepted = false;
  for (const auto& r : rcpt_replies_) any_accepted |= r.first / 100 == 2;
  any_accepted &= mail_code_ / 100 == 2;
  if (code == 354) {
    state_ = State::kBody;
    body_sending_ = true;
    last_piece_sent_ = false;
    stuffer_ = DotStuffer();
    armTimer(options_.data_timeout);
    Result<BodyFile> file = BodyFile{};  // empty
    if (any_accepted) {
      file = owner_.spool().openBody(job_->message.ref);
      if (!file) return unreadable(file.error());
    }  // else the peer accepted DATA with no recipients: an empty message, its reply ignored
    body_ = std::make_unique<BodyReader>(owner_.loop(), onBodyPiece, this, &owner_.bodyReads());
    body_->start(*file);
    return sendBody();
  }
  // Only 354 lets the body go; a success or intermediate reply to DATA would have the
  // message counted as delivered without the next hop ever receiving it.
  if (code / 100 != 4 && code / 100 != 5) {
    return fail("next hop answered DATA with " + std::to_string(code) + " instead of 354");
  }
  finishTransaction(code, text);
}

void SmtpClient::finishTransaction(int final_code, std::string_view final_text) {
  std::vector<RecipientResult> results;
  results.reserve(rcpts_.size());
  for (size_t i = 0; i < rcpts_.size(); ++i) {
    if (mail_code_ / 100 != 2) {
      results.push_back({rcpts_[i], mail_code_, mail_text_});
    } else if (i < rcpt_replies_.size() && rcpt_replies_[i].first / 100 != 2) {
      results.push_back({rcpts_[i], rcpt_replies_[i].first, rcpt_replies_[i].second});
    } else {
      results.push_back({rcpts_[i], final_code, std::string(final_text)});
    }
  }
  bool delivered = final_code / 100 == 2 && state_ == State::kBody;
  if (delivered) ++messages_sent_;
  auto job = std::move(job_);
  if (delivered) {
    state_ = State::kIdle;
    owner_.jobFinished(this, std::move(job), std::move(results));
    if (state_ == State::kIdle) becomeReady();
  } else {
    state_ = State::kRset;
    send("RSET\r\n");
    owner_.jobFinished(this, std::move(job), std::move(results));
  }
}

void SmtpClient::shutdown() {
  if (state_ == State::kClosed || state_ == State::kQuit) return;
  if (state_ == State::kIdle) {
    state_ = State::kQuit;
    armTimer(5);
    send("QUIT\r\n");
    return;
  }
  fail("shutting down");
}

void SmtpClient::fail(std::string_view why) {
  if (state_ == State::kClosed) return;
  if (state_ != State::kQuit) {
    logEvent(spdlog::level::info, "next_hop_error", {{"relay", host()}, {"error", why}});
  }
  error_.assign(why);
  if (job_) finishAll(451, "4.4.2 " + std::string(why));
  close();
}

void SmtpClient::onTimer(uv_timer_t* t) {
  auto* c = static_cast<SmtpClient*>(t->data);
  if (c->state_ == State::kIdle) return c->shutdown();
  c->fail("timeout talking to next hop");
}

void SmtpClient::close() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  if (body_) body_->stop();
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClose);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClose);
}

void SmtpClient::onClose(uv_handle_t* h) {
  auto* c = static_cast<SmtpClient*>(h->data);
  --c->open_handles_;
  c->maybeGone();
}

void SmtpClient::maybeGone() {
  if (open_handles_ == 0 && (!body_ || body_->reading() == 0))
    owner_.clientClosed(this);  // deletes this
}

}  // namespace postern
