#include "relay/inbound/session.h"

#include <unistd.h>

#include <cstring>

#include "core/assert.h"
#include "core/log.h"
#include "core/proxy_protocol.h"
#include "core/smtp_reply.h"
#include "core/stream_write.h"
#include "relay/inbound/handshake_gate.h"
#include "relay/inbound/relay_policy.h"

namespace postern {
size_t Session::bufferSize(const Limits& l) {
  // At least two maximal lines, so a partial line can always grow to the bound (and be
  // discarded past it) without the buffer filling up.
  return std::max<size_t>(
      {16 * 1024, 2 * l.command_line, 2 * (l.data_line + 1), 2 * (kMaxProxyV2Payload + 16)});
}

Session::Session(SessionHost& host, const ListenerConfig& listener)
    : host_(host),
      config_(host.configSnapshot()),
      listener_(listener),
      limits_(config_->limits),
      in_(host.bufferPool()),
      splitter_(limits_.command_line),
      reader_(limits_.data_line, limits_.message_size,
              limits_.normalise_bare_line_endings ? BareLineEnding::kNormalise
                                                  : BareLineEnding::kReject) {
  host_.addSession(this);
}

Session::~Session() {
  releaseMemory();
  host_.removeSession(this);
}

void Session::releaseMemory() {
  host_.memory().release(envelope_charged_ + body_charged_);
  envelope_charged_ = body_charged_ = 0;
}

Session* Session::create(SessionHost& host, const ListenerConfig& listener) {
  auto* s = new Session(host, listener);
  uv_tcp_init(host.loop(), &s->tcp_);
  s->tcp_.data = s;
  uv_timer_init(host.loop(), &s->timer_);
  s->timer_.data = s;
  s->refs_ = 2;
  return s;
}

void Session::accept(SessionHost& host, const ListenerConfig& listener, uv_stream_t* server) {
  Session* s = create(host, listener);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&s->tcp_)) != 0) return s->close();
  s->start();
}

void Session::adopt(SessionHost& host, const ListenerConfig& listener, int fd) {
  Session* s = create(host, listener);
  if (uv_tcp_open(&s->tcp_, fd) != 0) {
    ::close(fd);
    return s->close();
  }
  s->start();
}

void Session::start() {
  id_ = host_.newSessionId();
  sockaddr_storage peer{};
  int len = sizeof peer;
  uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&peer), &len);
  client_ = IpAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&peer)).value_or(IpAddress{});
  client_text_ = client_.toString();
  client_port_ =
      ntohs(peer.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&peer)->sin6_port
                                       : reinterpret_cast<sockaddr_in*>(&peer)->sin_port);
  uv_tcp_nodelay(&tcp_, 1);
  progress();

  if (!listener_.proxy_protocol) return greet();
  bool trusted = false;
  for (const auto& net : listener_.trusted_proxies) trusted |= net.contains(client_);
  if (!trusted) {
    log(spdlog::level::warn, "proxy_refused", {{"reason", "not a trusted proxy"}});
    reply(421, "4.7.0", config_->hostname + " Error: invalid PROXY protocol header");
    closeAfterFlush();
    return flushOutput();
  }
  state_ = State::kProxy;  // the greeting waits for the header
  armDeadline();
  resumeReading();
}

void Session::greet() {
  state_ = State::kConnected;
  if (!host_.admitConnection(client_)) {
    log(spdlog::level::warn, "connection_refused", {{"reason", "connection limit"}});
    reply(421, "4.7.0", config_->hostname + " Error: too many connections");
    closeAfterFlush();
    return flushOutput();
  }
  counted_ = true;
  connected_at_ = uv_now(host_.loop());
  relay_client_ = isRelayClient(*config_, client_);
  log(spdlog::level::info, "connect");
  startMilters();
  if (milters_) {
    milterConnect();  // the greeting waits for their word on the connection
  } else {
    sendGreeting();
  }
  armDeadline();
  flushOutput();
  resumeReading();
}

void Session::sendGreeting() {
  if (listener_.tls == ListenerConfig::Tls::kImplicit && host_.tls() != nullptr) {
    startTls();  // RFC 8314: the handshake first; pumpTls greets once it is done
  } else {
    out_.append("220 ").append(config_->hostname).append(" ESMTP Postern\r\n");
    greeted_ = true;
  }
}

bool Session::handleProxyHeader() {
  ProxyHeader header;
  size_t consumed = 0;
  switch (parseProxyHeader(in_.readable(), header, consumed)) {
    case ProxyParse::kNeedMore:
      return false;
    case ProxyParse::kInvalid:
      log(spdlog::level::warn, "proxy_refused", {{"reason", "invalid header"}});
      reply(421, "4.7.0", config_->hostname + " Error: invalid PROXY protocol header");
      closeAfterFlush();
      return false;
    case ProxyParse::kDone:
      break;
  }
  in_.consume(consumed);
  if (header.has_address) {
    auto addr = IpAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&header.source));
    if (addr) {
      logEvent(spdlog::level::debug, "proxied",
               {{"session", id_}, {"proxy", client_text_}, {"client", addr->toString()}});
      client_ = *addr;
      client_text_ = client_.toString();
      client_port_ = ntohs(header.source.ss_family == AF_INET6
                               ? reinterpret_cast<const sockaddr_in6*>(&header.source)->sin6_port
                               : reinterpret_cast<const sockaddr_in*>(&header.source)->sin_port);
    }
  }
  progress();
  greet();
  return true;
}

void Session::shutdown(bool force) {
  if (closing_ || close_after_flush_ || state_ == State::kCommit) return;
  const bool in_transaction = state_ == State::kMail || state_ == State::kRcpt ||
                              state_ == State::kData || state_ == State::kBdat;
  if (in_transaction && !force) return;  // handleCommand or onCommitted says 421 later
  reply(421, "4.3.2", config_->hostname + " Service shutting down");
  closeAfterFlush();
  flushOutput();
}

void Session::onHandshakeTurn(void* who) {
  auto* s = static_cast<Session*>(who);
  if (s->closing_) return;
  s->resumeReading();
  s->pumpTls();
}

void Session::close() {
  if (closing_) return;
  closing_ = true;
  host_.handshakeGate().cancel(this);
  if (counted_) {
    host_.releaseConnection(client_);
    // Postfix's "disconnect from": how long, and what came of it.
    log(spdlog::level::info, "disconnect",
        {{"messages", uint64_t{messages_}},
         {"errors", uint64_t{errors_}},
         {"duration", static_cast<double>(uv_now(host_.loop()) - connected_at_) / 1000}});
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClose);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClose);
}

void Session::onClose(uv_handle_t* h) { static_cast<Session*>(h->data)->unref(); }

void Session::unref() {
  POSTERN_ASSERT(refs_ > 0);
  if (--refs_ == 0) delete this;
}

void Session::progress() { last_progress_ = uv_now(host_.loop()); }

void Session::armDeadline() {
  armed_limit_ = timeoutMs();
  uint64_t idle = uv_now(host_.loop()) - last_progress_;
  uv_timer_start(&timer_, onTimeout, idle < armed_limit_ ? armed_limit_ - idle : 0, 0);
}

uint64_t Session::timeoutMs() const {
  double secs = state_ == State::kProxy                 ? limits_.proxy_timeout
                : (state_ == State::kData || in_chunk_) ? limits_.data_timeout
                                                        : limits_.command_timeout;
  return static_cast<uint64_t>(secs * 1000);
}

void Session::onTimeout(uv_timer_t* t) {
  auto* s = static_cast<Session*>(t->data);
  if (s->closing_) return;
  uint64_t limit = s->timeoutMs();
  uint64_t idle = uv_now(s->host_.loop()) - s->last_progress_;
  if (s->state_ == State::kCommit || s->milter_waiting_) {
    // Waiting for the disk or the milters (which have their own timeout) is not the
    // client's delay.
    s->progress();
    idle = 0;
  }
  if (idle < limit) return s->armDeadline();
  s->log(spdlog::level::info, "timeout");
  if (s->state_ != State::kProxy) {
    s->reply(421, "4.4.2", s->config_->hostname + " Error: timeout exceeded");
  }
  s->closeAfterFlush();
  s->flushOutput();
}

void Session::pauseReading() {
  if (reading_) uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

void Session::resumeReading() {
  if (closing_ || close_after_flush_ || write_blocked_ || milter_waiting_) return;
  if (!reading_) uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), onAlloc, onRead);
  reading_ = true;
  // OpenSSL may hold decrypted data the session could not take while it was paused.
  if (tls_ && tls_->established()) pumpTls();
}

void Session::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* s = static_cast<Session*>(h->data);
  if (s->tls_) {
    *buf = s->tls_->readBuffer();
    return;
  }
  std::span<char> w = s->in_.writable();
  *buf = uv_buf_init(w.data(), static_cast<unsigned>(w.size()));
}

void Session::onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* s = static_cast<Session*>(stream->data);
  if (s->closing_) return;
  if (s->state_ == State::kCommit && (nread == UV_EOF || nread == UV_ENOBUFS)) {
    // Reading goes on during a commit (no epoll change per message), but an end of input
    // or a full buffer waits for it: the 250 must go out first. Reading again afterwards
    // meets the same end of input.
    s->pauseReading();
    return;
  }
  if (nread < 0) {
    if (s->state_ == State::kData || s->state_ == State::kBdat) {
      s->log(spdlog::level::info, "disconnect_in_data");
    }
    s->close();
    return;
  }
  if (s->tls_) {
    s->tls_->received(buf->base, static_cast<size_t>(nread));
    if (s->state_ == State::kCommit) {
      // As for plain TCP, reading goes on during a commit (no epoll change per message),
      // into a bound: the records wait undecrypted, and reading stops once they fill a
      // read buffer. onCommitted reads on and decrypts them.
      if (s->tls_->pendingCipher() >= kCipherBuffer) s->pauseReading();
      return;
    }
    s->pumpTls();
    return;
  }
  s->in_.commit(static_cast<size_t>(nread));
  s->processInput();
  s->flushOutput();
}

void Session::startTls() {
  tls_ = std::make_unique<TlsStream>(*host_.tls(), TlsConnection::Side::kServer, kCipherBuffer);
}

void Session::pumpTls() {
  if (!tls_->established()) {
    if (!host_.handshakeGate().enter(this, onHandshakeTurn)) {
      pauseReading();  // nothing piles up while it waits; onHandshakeTurn reads on
      return;
    }
    TlsStream::Handshake hs = tls_->handshake();
    // The next flight, or the alert. In TLS 1.3 what the last step writes (the session
    // ticket) is not awaited: it waits for the first reply, one write and one segment
    // instead of two. In TLS 1.2 the last step writes the server's Finished, awaited.
    if (hs != TlsStream::Handshake::kDone || !tls_->tls13()) sendCipher();
    if (hs == TlsStream::Handshake::kFailed) {
      ++host_.metrics().tls_failures;
      log(spdlog::level::info, "tls_failed", {{"error", tls_->error()}});
      return close();
    }
    if (hs == TlsStream::Handshake::kPending) return;
    log(spdlog::level::info, "tls", {{"tls", tls_->describe()}});
    progress();
    if (!greeted_) {
      out_.append("220 ").append(config_->hostname).append(" ESMTP Postern\r\n");
      greeted_ = true;
    }
  }
  while (!closing_ && !close_after_flush_ && !write_blocked_ && !waiting()) {
    TlsStream::Read r = tls_->read(in_);
    if (r == TlsStream::Read::kFailed) return close();
    if (r != TlsStream::Read::kData) break;  // a full buffer waits for processInput
    processInput();
  }
  in_.release();  // writable() may have taken a buffer that nothing filled
  flushOutput();
}

void Session::processInput() {
  Line line;
  while (!closing_ && !close_after_flush_ && !write_blocked_ && !waiting()) {
    if (state_ == State::kProxy) {
      if (!handleProxyHeader()) break;
      continue;
    }
    if (in_chunk_) {
      if (in_.size() == 0) break;
      takeChunk();
      continue;
    }
    if (!splitter_.next(in_, line)) break;
    progress();
    if (state_ == State::kData) {
      handleData(line);
    } else if (auth_step_ != AuthStep::kNone) {
      handleAuthResponse(line);
    } else {
      handleCommand(line);
    }
  }
  in_.release();  // an idle connection holds no read buffer
  // The session now waits for input under its current state's limit; entering DATA, a
  // BDAT chunk or the PROXY header may have shortened it.
  if (!closing_ && timeoutMs() != armed_limit_) armDeadline();
}

void Session::log(spdlog::level::level_enum level, std::string_view event,
                  std::initializer_list<LogField> fields) const {
  if (!spdlog::should_log(level)) return;
  std::vector<LogField> all{{"session", id_}, {"client", client_text_}};
  all.insert(all.end(), fields.begin(), fields.end());
  logEvent(level, event, all);
}

void Session::reply(int code, std::string_view enhanced, std::string_view text) {
  if (code >= 400) ++host_.metrics().rejected[std::string(enhanced)];
  appendReply(out_, code, enhanced, text);
}

const char* Session::stateName() const {
  static constexpr const char* kNames[] = {"proxy", "connected", "ready", "mail",
                                           "rcpt",  "data",      "bdat",  "commit"};
  return kNames[static_cast<int>(state_)];
}

void Session::error(int code, std::string_view enhanced, std::string_view text) {
  reply(code, enhanced, text);
  if (++errors_ >= limits_.errors) {
    log(spdlog::level::info, "too_many_errors");
    reply(421, "4.7.0", config_->hostname + " Error: too many errors");
    closeAfterFlush();
  }
}

void Session::closeAfterFlush() {
  close_after_flush_ = true;
  pauseReading();
}

void Session::sendCipher() {
  std::string none;  // only the handshake's records
  Result<Sent> sent = tls_->write(reinterpret_cast<uv_stream_t*>(&tcp_), none, onWriteDone, this);
  if (!sent) return close();
  if (*sent == Sent::kQueued) {
    ++refs_;
    ++writes_pending_;
    checkWriteBackpressure();
  }
}

void Session::flushOutput() {
  if (closing_) return;
  // With TLS a reply made during the handshake (a timeout's 421) is held until it ends, and
  // is lost if the session closes first: after STARTTLS nothing goes out in the clear.
  // Records with no reply to carry them (a session ticket, an answer to a key update) wait
  // for the next one: in SMTP the client speaks first, so a reply always comes.
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  Result<Sent> sent = out_.empty() ? Sent::kAll
                      : tls_       ? tls_->write(stream, out_, onWriteDone, this)
                                   : writeOut(stream, out_, onWriteDone, this);
  if (!sent) return close();
  if (*sent == Sent::kQueued) {
    ++refs_;  // the queued write refers to this session
    ++writes_pending_;
    checkWriteBackpressure();
  } else if (close_after_flush_ && writes_pending_ == 0) {
    // uv_close() would cancel queued writes, so a queued last reply closes from its callback.
    close();
  }
}

void Session::checkWriteBackpressure() {
  size_t queued = uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&tcp_));
  if (!write_blocked_ && queued > kWriteHighWater) {
    write_blocked_ = true;
    pauseReading();
  } else if (write_blocked_ && queued < kWriteLowWater) {
    write_blocked_ = false;
    if (waiting()) return;  // the commit's reply, or the password check's, resumes reading
    processInput();         // lines that arrived before the pause
    flushOutput();
    resumeReading();
  }
}

void Session::onWriteDone(void* ctx, int status) {
  auto* s = static_cast<Session*>(ctx);
  --s->writes_pending_;
  if (!s->closing_ && (status < 0 || (s->close_after_flush_ && s->writes_pending_ == 0))) {
    s->close();
  } else if (!s->closing_ && s->write_blocked_) {
    s->checkWriteBackpressure();
  }
  s->unref();
}

}  // namespace postern
