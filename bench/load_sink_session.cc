#include "bench/load_sink_session.h"

#include <array>
#include <string>

#include "bench/load_sink.h"
#include "core/smtp_command.h"
#include "core/smtp_reply.h"
#include "core/stream_write.h"

namespace postern {
namespace {

constexpr size_t kCommandLine = 2048;  // RFC 5321 asks for 512; be generous
constexpr size_t kDataLine = 16384;    // far past 998: a relay that folds nothing still fits

bool startsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && equalsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

}  // namespace

SinkSession::SinkSession(Sink& sink) : sink_(sink), splitter_(kCommandLine) {}

bool SinkSession::start(uv_stream_t* server) {
  uv_tcp_init(sink_.loop(), &tcp_);
  tcp_.data = this;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) {
    close();
    return false;
  }
  uv_tcp_nodelay(&tcp_, 1);
  out_ += "220 ";
  out_ += sink_.hostname();
  out_ += " ESMTP postern-load sink\r\n";
  flush();
  if (!closing_) uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), onAlloc, onRead);
  return !closing_;
}

void SinkSession::close() {
  if (closing_) return;
  closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClose);
}

void SinkSession::onClose(uv_handle_t* h) {
  auto* s = static_cast<SinkSession*>(h->data);
  s->sink_.sessionClosed(s);
  delete s;
}

void SinkSession::onAlloc(uv_handle_t* h, size_t /*suggested*/, uv_buf_t* buf) {
  auto* s = static_cast<SinkSession*>(h->data);
  std::span<char> free = s->in_.writable();
  *buf = uv_buf_init(free.data(), static_cast<unsigned>(free.size()));
}

void SinkSession::onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* /*buf*/) {
  auto* s = static_cast<SinkSession*>(stream->data);
  if (s->closing_) return;
  if (nread < 0) {
    s->close();  // EOF, reset, or ENOBUFS (cannot happen: lines are bounded below capacity)
    return;
  }
  s->in_.commit(static_cast<size_t>(nread));
  Line line;
  while (!s->closing_ && !s->finish_run_ && s->state_ != State::kQuit &&
         s->splitter_.next(s->in_, line)) {
    if (s->state_ == State::kData) {
      s->onDataLine(line);
    } else {
      s->onCommand(line);
    }
  }
  if (!s->closing_) s->flush();
}

void SinkSession::onCommand(const Line& line) {
  if (line.too_long) {
    appendReply(out_, 500, "5.5.2", "Error: line too long");
    return;
  }
  Command cmd = parseCommand(line.text);
  switch (cmd.verb) {
    case Verb::kEhlo: {
      resetTransaction();
      std::array<std::string_view, 5> lines{sink_.hostname(), "PIPELINING", "8BITMIME",
                                            "SIZE 104857600", "ENHANCEDSTATUSCODES"};
      appendMultiline(out_, 250, lines);
      break;
    }
    case Verb::kHelo:
      resetTransaction();
      appendReply(out_, 250, {}, sink_.hostname());
      break;
    case Verb::kMail:
      if (mail_) {
        appendReply(out_, 503, "5.5.1", "Error: nested MAIL command");
      } else if (!startsWithIgnoreCase(cmd.arg, "FROM:")) {
        appendReply(out_, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
      } else {
        mail_ = true;
        appendReply(out_, 250, "2.1.0", "Ok");
      }
      break;
    case Verb::kRcpt:
      if (!mail_) {
        appendReply(out_, 503, "5.5.1", "Error: need MAIL command");
      } else if (!startsWithIgnoreCase(cmd.arg, "TO:")) {
        appendReply(out_, 501, "5.5.4", "Syntax: RCPT TO:<address>");
      } else {
        ++rcpts_;
        appendReply(out_, 250, "2.1.5", "Ok");
      }
      break;
    case Verb::kData:
      if (!mail_) {
        appendReply(out_, 503, "5.5.1", "Error: need MAIL command");
      } else if (rcpts_ == 0) {
        appendReply(out_, 554, "5.5.1", "Error: no valid recipients");
      } else {
        appendReply(out_, 354, {}, "End data with <CR><LF>.<CR><LF>");
        state_ = State::kData;
        splitter_.setMaxLine(kDataLine);
        prev_crlf_ = true;
        verifier_.reset();
      }
      break;
    case Verb::kRset:
      resetTransaction();
      appendReply(out_, 250, "2.0.0", "Ok");
      break;
    case Verb::kNoop:
      appendReply(out_, 250, "2.0.0", "Ok");
      break;
    case Verb::kVrfy:
      appendReply(out_, 252, "2.0.0", "Cannot VRFY user, but will accept message");
      break;
    case Verb::kQuit:
      appendReply(out_, 221, "2.0.0", "Bye");
      state_ = State::kQuit;
      break;
    case Verb::kUnknown:
      appendReply(out_, 500, "5.5.2", "Error: command not recognized");
      break;
    default:
      appendReply(out_, 502, "5.5.1", "Error: command not implemented");
      break;
  }
}

void SinkSession::onDataLine(const Line& line) {
  if (line.too_long) {
    verifier_.markDamaged();
    prev_crlf_ = line.crlf;
    return;
  }
  std::string_view text = line.text;
  if (text == "." && line.crlf && prev_crlf_) {
    endOfMessage();
    return;
  }
  if (!text.empty() && text.front() == '.') text.remove_prefix(1);
  verifier_.addLine(text, line.crlf);
  prev_crlf_ = line.crlf;
}

void SinkSession::endOfMessage() {
  state_ = State::kCommand;
  splitter_.setMaxLine(kCommandLine);
  resetTransaction();
  finish_run_ = sink_.record(verifier_);
  std::string text = "Ok: queued as " + std::to_string(++messages_);
  appendReply(out_, 250, "2.0.0", text);
}

void SinkSession::resetTransaction() {
  mail_ = false;
  rcpts_ = 0;
}

void SinkSession::flush() {
  if (out_.empty()) return;
  bool last = finish_run_ || state_ == State::kQuit;
  Result<Sent> sent =
      writeOut(reinterpret_cast<uv_stream_t*>(&tcp_), out_, last ? onWritten : nullptr, this);
  if (!sent) {
    close();
    if (finish_run_) sink_.finish();
  } else if (*sent == Sent::kAll && last) {
    afterLastWrite();
  }
}

void SinkSession::onWritten(void* ctx, int /*status*/) {
  auto* s = static_cast<SinkSession*>(ctx);
  if (!s->closing_) s->afterLastWrite();
}

void SinkSession::afterLastWrite() {
  if (finish_run_) {
    sink_.finish();  // closes every session, this one included
  } else {
    close();
  }
}

}  // namespace postern
