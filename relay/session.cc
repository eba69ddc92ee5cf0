#include "relay/session.h"

#include <chrono>
#include <cstring>

#include "core/assert.h"
#include "core/log.h"
#include "core/smtp_reply.h"
#include "core/stream_write.h"
#include "relay/delivery.h"
#include "relay/received.h"
#include "relay/relay_policy.h"
#include "relay/worker.h"

namespace postern {
namespace {

// The read buffer holds at least two maximal lines, so a partial line can always grow
// to the bound (and be discarded past it) without the buffer filling up.
size_t bufferSize(const Limits& l) {
  return std::max<size_t>(16 * 1024, 2 * std::max(l.command_line, l.data_line));
}

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Session::Session(Worker& worker)
    : worker_(worker),
      in_(bufferSize(worker.config().limits)),
      splitter_(worker.config().limits.command_line) {
  worker_.addSession(this);
}

Session::~Session() { worker_.removeSession(this); }

void Session::shutdown() {
  if (closing_ || close_after_flush_ || state_ == State::kCommit) return;
  reply(421, "4.3.2", worker_.config().hostname + " Service shutting down");
  closeAfterFlush();
  flushOutput();
}

void Session::accept(Worker& worker, uv_stream_t* server) {
  auto* s = new Session(worker);
  uv_tcp_init(worker.loop(), &s->tcp_);
  s->tcp_.data = s;
  uv_timer_init(worker.loop(), &s->timer_);
  s->timer_.data = s;
  s->refs_ = 2;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&s->tcp_)) != 0) {
    s->close();
    return;
  }
  s->start();
}

void Session::start() {
  sockaddr_storage peer{};
  int len = sizeof peer;
  uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&peer), &len);
  client_ = IpAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&peer)).value_or(IpAddress{});
  client_text_ = client_.toString();
  uv_tcp_nodelay(&tcp_, 1);

  if (!worker_.admitConnection(client_)) {
    logEvent(spdlog::level::warn, "connection_refused",
             {{"client", client_text_}, {"reason", "connection limit"}});
    reply(421, "4.7.0", worker_.config().hostname + " Error: too many connections");
    closeAfterFlush();
    flushOutput();
    return;
  }
  counted_ = true;
  relay_client_ = isRelayClient(worker_.config(), client_);
  logEvent(spdlog::level::info, "connect", {{"client", client_text_}});
  out_.append("220 ").append(worker_.config().hostname).append(" ESMTP Postern\r\n");
  flushOutput();
  resumeReading();
}

void Session::close() {
  if (closing_) return;
  closing_ = true;
  if (counted_) worker_.releaseConnection(client_);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClose);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClose);
}

void Session::onClose(uv_handle_t* h) { static_cast<Session*>(h->data)->unref(); }

void Session::unref() {
  POSTERN_ASSERT(refs_ > 0);
  if (--refs_ == 0) delete this;
}

void Session::armTimer() {
  const Limits& l = worker_.config().limits;
  double secs = state_ == State::kData ? l.data_timeout : l.command_timeout;
  uv_timer_start(&timer_, onTimeout, static_cast<uint64_t>(secs * 1000), 0);
}

void Session::onTimeout(uv_timer_t* t) {
  auto* s = static_cast<Session*>(t->data);
  if (s->closing_) return;
  logEvent(spdlog::level::info, "timeout", {{"client", s->client_text_}});
  s->reply(421, "4.4.2", s->worker_.config().hostname + " Error: timeout exceeded");
  s->closeAfterFlush();
  s->flushOutput();
}

void Session::pauseReading() {
  if (reading_) uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
  uv_timer_stop(&timer_);
}

void Session::resumeReading() {
  if (closing_ || close_after_flush_) return;
  if (!reading_) uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), onAlloc, onRead);
  reading_ = true;
  armTimer();
}

void Session::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* s = static_cast<Session*>(h->data);
  std::span<char> w = s->in_.writable();
  *buf = uv_buf_init(w.data(), static_cast<unsigned>(w.size()));
}

void Session::onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
  auto* s = static_cast<Session*>(stream->data);
  if (s->closing_) return;
  if (nread < 0) {
    if (s->state_ == State::kData) {
      logEvent(spdlog::level::info, "disconnect_in_data", {{"client", s->client_text_}});
    }
    s->close();
    return;
  }
  s->in_.commit(static_cast<size_t>(nread));
  s->armTimer();
  s->processInput();
  s->flushOutput();
}

void Session::processInput() {
  Line line;
  while (!closing_ && !close_after_flush_ && state_ != State::kCommit &&
         splitter_.next(in_, line)) {
    if (state_ == State::kData) {
      handleData(line);
    } else {
      handleCommand(line);
    }
  }
}

void Session::reply(int code, std::string_view enhanced, std::string_view text) {
  appendReply(out_, code, enhanced, text);
}

void Session::error(int code, std::string_view enhanced, std::string_view text) {
  reply(code, enhanced, text);
  if (++errors_ >= worker_.config().limits.errors) {
    logEvent(spdlog::level::info, "too_many_errors", {{"client", client_text_}});
    reply(421, "4.7.0", worker_.config().hostname + " Error: too many errors");
    closeAfterFlush();
  }
}

void Session::closeAfterFlush() {
  close_after_flush_ = true;
  pauseReading();
}

void Session::flushOutput() {
  if (closing_) return;
  int rc = writeOut(reinterpret_cast<uv_stream_t*>(&tcp_), out_, onWriteDone, this);
  if (rc < 0) return close();
  if (rc == 0) {
    ++refs_;  // the queued write refers to this session
    ++writes_pending_;
  } else if (close_after_flush_ && writes_pending_ == 0) {
    // uv_close() would cancel queued writes, so a queued last reply closes from its callback.
    close();
  }
}

void Session::onWriteDone(void* ctx, int status) {
  auto* s = static_cast<Session*>(ctx);
  --s->writes_pending_;
  if (!s->closing_ && (status < 0 || (s->close_after_flush_ && s->writes_pending_ == 0))) {
    s->close();
  }
  s->unref();
}

void Session::resetTransaction() {
  if (state_ != State::kConnected) state_ = State::kReady;
  sender_.clear();
  recipients_.clear();
  rcpt_rejected_ = false;
  body_.clear();
  body_.shrink_to_fit();
}

void Session::handleCommand(const Line& line) {
  if (line.too_long) {
    error(500, "5.5.2", "Error: line too long");
    return;
  }
  Command cmd = parseCommand(line.text);
  switch (cmd.verb) {
    case Verb::kHelo:
      return cmdHelo(cmd, false);
    case Verb::kEhlo:
      return cmdHelo(cmd, true);
    case Verb::kMail:
      return cmdMail(cmd);
    case Verb::kRcpt:
      return cmdRcpt(cmd);
    case Verb::kData:
      return cmdData(cmd);
    case Verb::kRset:
      if (!cmd.arg.empty()) return error(501, "5.5.4", "Syntax: RSET");
      resetTransaction();
      return reply(250, "2.0.0", "Ok");
    case Verb::kNoop:
      return reply(250, "2.0.0", "Ok");
    case Verb::kVrfy:
      if (cmd.arg.empty()) return error(501, "5.5.4", "Syntax: VRFY address");
      return reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery");
    case Verb::kExpn:
      return error(502, "5.5.1", "Error: EXPN not supported");
    case Verb::kHelp:
      return reply(214, "2.0.0",
                   "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY EXPN HELP QUIT");
    case Verb::kQuit:
      reply(221, "2.0.0", "Bye");
      closeAfterFlush();
      return;
    case Verb::kBdat:
    case Verb::kStartTls:
    case Verb::kAuth:
    case Verb::kEtrn:
    case Verb::kSend:
    case Verb::kSoml:
    case Verb::kSaml:
    case Verb::kTurn:
    case Verb::kVerb:
    case Verb::kTick:
      return error(502, "5.5.1", "Error: command not implemented");
    case Verb::kUnknown:
      return error(500, "5.5.2", "Error: command not recognized");
  }
}

void Session::cmdHelo(const Command& cmd, bool esmtp) {
  if (cmd.arg.empty()) {
    return error(501, "5.5.4", esmtp ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
  }
  state_ = State::kReady;
  resetTransaction();
  helo_.assign(cmd.arg.substr(0, std::min<size_t>(cmd.arg.size(), 255)));
  esmtp_ = esmtp;
  const Config& c = worker_.config();
  if (!esmtp) {
    out_.append("250 ").append(c.hostname).append("\r\n");
    return;
  }
  std::string size = "SIZE " + std::to_string(c.limits.message_size);
  std::string_view lines[] = {c.hostname, "PIPELINING", size, "8BITMIME", "ENHANCEDSTATUSCODES"};
  appendMultiline(out_, 250, lines);
}

void Session::cmdMail(const Command& cmd) {
  if (state_ == State::kConnected) return error(503, "5.5.1", "Error: send HELO/EHLO first");
  if (state_ != State::kReady) return error(503, "5.5.1", "Error: nested MAIL command");
  PathArg path;
  if (auto err = parsePathArg(cmd.arg, "FROM", path)) {
    return error(err->code, err->enhanced, err->text);
  }
  for (const auto& p : path.params) {
    if (equalsIgnoreCase(p.keyword, "SIZE")) {
      char* end = nullptr;
      std::string v(p.value);
      unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0') return error(501, "5.5.4", "Bad SIZE parameter");
      if (n > worker_.config().limits.message_size) {
        return error(552, "5.3.4", "Message size exceeds fixed limit");
      }
    } else if (equalsIgnoreCase(p.keyword, "BODY")) {
      if (!equalsIgnoreCase(p.value, "7BIT") && !equalsIgnoreCase(p.value, "8BITMIME")) {
        return error(501, "5.5.4", "Unsupported BODY parameter");
      }
    } else {
      return error(555, "5.5.4", "Unsupported option: " + std::string(p.keyword));
    }
  }
  if (path.eight_bit) return error(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
  sender_.assign(path.mailbox);
  state_ = State::kMail;
  reply(250, "2.1.0", "Ok");
}

void Session::cmdRcpt(const Command& cmd) {
  if (state_ != State::kMail && state_ != State::kRcpt) {
    return error(503, "5.5.1", "Error: need MAIL command");
  }
  PathArg path;
  if (auto err = parsePathArg(cmd.arg, "TO", path)) {
    rcpt_rejected_ = true;
    return error(err->code, err->enhanced, err->text);
  }
  if (!path.params.empty()) {
    rcpt_rejected_ = true;
    return error(555, "5.5.4", "Unsupported option: " + std::string(path.params[0].keyword));
  }
  if (path.eight_bit) {
    rcpt_rejected_ = true;
    return error(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
  }
  if (!mayRelayTo(worker_.config(), relay_client_, path.mailbox)) {
    rcpt_rejected_ = true;
    logEvent(spdlog::level::info, "relay_denied",
             {{"client", client_text_}, {"rcpt", path.mailbox}});
    return error(554, "5.7.1", "<" + std::string(path.mailbox) + ">: Relay access denied");
  }
  if (recipients_.size() >= worker_.config().limits.recipients) {
    return reply(452, "4.5.3", "Error: too many recipients");
  }
  recipients_.emplace_back(path.mailbox);
  state_ = State::kRcpt;
  reply(250, "2.1.5", "Ok");
}

void Session::cmdData(const Command& cmd) {
  if (state_ == State::kMail && rcpt_rejected_) {
    return error(554, "5.5.1", "Error: no valid recipients");
  }
  if (state_ != State::kRcpt) return error(503, "5.5.1", "Error: need RCPT command");
  if (!cmd.arg.empty()) return error(501, "5.5.4", "Syntax: DATA");

  const Config& c = worker_.config();
  queue_id_ = worker_.spool().nextId();
  std::string qid = queueIdString(queue_id_);
  body_.clear();
  appendReceived(body_,
                 ReceivedInfo{helo_, client_text_, c.hostname, esmtp_, qid,
                              recipients_.size() == 1 ? recipients_[0] : "", nowMs() / 1000});
  body_size_ = 0;
  prev_crlf_ = true;
  data_error_ = DataError::kNone;
  state_ = State::kData;
  splitter_.setMaxLine(c.limits.data_line + 1);
  out_.append("354 End data with <CR><LF>.<CR><LF>\r\n");
  armTimer();
}

void Session::handleData(const Line& line) {
  // End of data is CRLF "." CRLF and nothing else: the dot line must end in CRLF and
  // the line before it too. A bare LF or CR never ends the message (no smuggling).
  if (line.crlf && prev_crlf_ && !line.too_long && line.text == ".") {
    endData();
    return;
  }
  prev_crlf_ = line.crlf;
  if (data_error_ != DataError::kNone) return;  // keep reading to the end, store nothing
  if (line.too_long) {
    data_error_ = DataError::kLineTooLong;
  } else if (!line.crlf) {
    data_error_ = DataError::kBareLf;
  } else if (std::memchr(line.text.data(), '\r', line.text.size()) != nullptr) {
    data_error_ = DataError::kBareCr;
  }
  if (data_error_ != DataError::kNone) {
    body_.clear();
    return;
  }
  std::string_view text = line.text;
  if (!text.empty() && text.front() == '.') text.remove_prefix(1);
  // The limit applies to the line after unstuffing (RFC 5321 §4.5.3.1.6): the splitter
  // allowed one octet more for the transparency dot.
  if (text.size() + 2 > worker_.config().limits.data_line) {
    data_error_ = DataError::kLineTooLong;
    body_.clear();
    return;
  }
  body_size_ += text.size() + 2;
  if (body_size_ > worker_.config().limits.message_size) {
    data_error_ = DataError::kTooBig;
    body_.clear();
    return;
  }
  body_.append(text);
  body_.append("\r\n");
}

void Session::endData() {
  splitter_.setMaxLine(worker_.config().limits.command_line);
  switch (data_error_) {
    case DataError::kNone:
      break;
    case DataError::kTooBig:
      error(552, "5.3.4", "Message size exceeds fixed limit");
      return resetTransaction();
    case DataError::kLineTooLong:
      error(550, "5.5.2", "Message line too long (limit 998 octets)");
      return resetTransaction();
    case DataError::kBareLf:
      error(550, "5.5.2", "Bare LF in message data not allowed");
      return resetTransaction();
    case DataError::kBareCr:
      error(550, "5.5.2", "Bare CR in message data not allowed");
      return resetTransaction();
  }
  Envelope env;
  env.id = queue_id_;
  env.received_ms = nowMs();
  env.sender = sender_;
  env.recipients = recipients_;
  state_ = State::kCommit;
  pauseReading();
  ++refs_;  // the spool's callback refers to this session
  worker_.spool().append(env, body_, [this, env](bool ok, const StoredRef& ref) mutable {
    if (ok) {
      worker_.delivery().enqueue(SpooledMessage{std::move(env), ref, {}});
    }
    onCommitted(ok, ref);
  });
  logEvent(spdlog::level::debug, "end_of_data", {{"client", client_text_}});
}

void Session::onCommitted(bool ok, const StoredRef& ref) {
  std::string qid = queueIdString(queue_id_);
  if (ok) {
    // Logged even if the client has gone: the message is durable and will be delivered.
    logEvent(spdlog::level::info, "accepted",
             {{"id", qid},
              {"client", client_text_},
              {"from", sender_},
              {"nrcpt", uint64_t{recipients_.size()}},
              {"size", ref.body_size}});
  }
  if (!closing_) {
    if (ok) {
      reply(250, "2.0.0", "Ok: queued as " + qid);
    } else {
      error(452, "4.3.1", "Insufficient system storage");
    }
    state_ = State::kReady;
    resetTransaction();
    if (worker_.stopping()) {
      reply(421, "4.3.2", worker_.config().hostname + " Service shutting down");
      closeAfterFlush();
    }
    processInput();
    flushOutput();
    if (state_ != State::kCommit) resumeReading();
  }
  unref();
}

}  // namespace postern
