#include "relay/inbound/milter_client.h"

#include "core/assert.h"
#include "core/stream_write.h"

namespace postern {

MilterClient::MilterClient(uv_loop_t* loop, const MilterConfig& config,
                           size_t max_modification_bytes)
    : loop_(loop), config_(config), max_modification_bytes_(max_modification_bytes) {}

uv_stream_t* MilterClient::stream() {
  return config_.path.empty() ? reinterpret_cast<uv_stream_t*>(&tcp_)
                              : reinterpret_cast<uv_stream_t*>(&pipe_);
}

void MilterClient::open(Done done) {
  done_ = std::move(done);
  awaiting_ = true;
  negotiating_ = true;
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  ++handles_;
  connect_.data = this;
  int rc = 0;
  if (config_.path.empty()) {
    uv_tcp_init(loop_, &tcp_);
    tcp_.data = this;
    ++handles_;
    rc = uv_tcp_connect(&connect_, &tcp_, reinterpret_cast<const sockaddr*>(&config_.inet),
                        onConnect);
  } else {
    uv_pipe_init(loop_, &pipe_, 0);
    pipe_.data = this;
    ++handles_;
    uv_pipe_connect(&connect_, &pipe_, config_.path.c_str(), onConnect);
  }
  if (rc != 0) return fail(std::string("connect: ") + uv_strerror(rc));
  arm();
}

void MilterClient::onConnect(uv_connect_t* req, int status) {
  auto* c = static_cast<MilterClient*>(req->data);
  if (c->closing_) return;
  if (status != 0) return c->fail(std::string("connect: ") + uv_strerror(status));
  uv_read_start(c->stream(), onAlloc, onRead);
  c->write(milter::encodeOptions(milter::kVersion, kActions, kProtocol));
  c->arm();
}

bool MilterClient::send(std::string packets, bool await, Done done) {
  if (failed_) return false;
  POSTERN_ASSERT(!awaiting_);
  write(std::move(packets));
  if (failed_ || !await) return !failed_;
  awaiting_ = true;
  done_ = std::move(done);
  modifications_.clear();
  modification_bytes_ = 0;
  step_started_ = uv_now(loop_);
  arm();
  return true;
}

std::vector<milter::Packet> MilterClient::takeModifications() {
  modification_bytes_ = 0;
  return std::move(modifications_);
}

void MilterClient::write(std::string bytes) {
  Result<Sent> sent = writeOut(
      stream(), bytes,
      [](void* ctx, int status) {
        auto* c = static_cast<MilterClient*>(ctx);
        if (status < 0 && !c->closing_) c->fail(std::string("write: ") + uv_strerror(status));
        c->maybeDelete();
      },
      this);
  if (!sent) return fail("write: " + sent.error());
}

uint64_t MilterClient::timeoutMs() const { return static_cast<uint64_t>(config_.timeout * 1000); }

void MilterClient::arm() { uv_timer_start(&timer_, onTimeout, timeoutMs(), 0); }

void MilterClient::onTimeout(uv_timer_t* t) {
  auto* c = static_cast<MilterClient*>(t->data);
  if (c->awaiting_) c->fail("timeout");
}

void MilterClient::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<MilterClient*>(h->data);
  *buf = uv_buf_init(c->read_buffer_, sizeof c->read_buffer_);
}

void MilterClient::onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<MilterClient*>(s->data);
  if (c->closing_) return;
  if (nread < 0) {
    return c->fail(nread == UV_EOF ? "connection closed" : std::string(uv_strerror(nread)));
  }
  c->reader_.feed(std::string_view(buf->base, static_cast<size_t>(nread)));
  milter::Packet p;
  while (!c->failed_) {
    milter::MilterReader::Status st = c->reader_.next(p);
    if (st == milter::MilterReader::Status::kNeedMore) break;
    if (st == milter::MilterReader::Status::kBad) return c->fail("bad packet length");
    c->onPacket(p);
  }
}

void MilterClient::onPacket(milter::Packet& p) {
  if (!awaiting_) return fail(std::string("unexpected packet '") + p.code + "'");
  if (negotiating_) {
    std::optional<milter::Options> o = milter::parseOptions(p.data);
    if (p.code != milter::kOptionNegotiation || !o) return fail("bad option negotiation");
    if (o->version < 2 || o->version > milter::kVersion) {
      return fail("protocol version " + std::to_string(o->version));
    }
    // It may take only what was offered (Postfix refuses the same way).
    if ((o->actions & ~kActions) != 0 || (o->protocol & ~kProtocol) != 0) {
      return fail("asks for actions or steps not offered");
    }
    options_ = std::move(*o);
    negotiating_ = false;
    awaiting_ = false;
    uv_timer_stop(&timer_);
    MilterReply ready{MilterReply::Kind::kContinue, {}, {}};
    Done done = std::move(done_);
    return done(ready);
  }
  MilterReply r;
  switch (p.code) {
    case milter::kProgress:
      // "Still working" restarts the timeout, but a milter may not stretch one step
      // without end that way.
      if (uv_now(loop_) - step_started_ > kMaxProgressTimeouts * timeoutMs()) {
        return fail("progress past " + std::to_string(kMaxProgressTimeouts) + " timeouts");
      }
      return arm();
    case milter::kAddHeader:
    case milter::kInsertHeader:
    case milter::kChangeHeader:
    case milter::kChangeFrom:
    case milter::kAddRcpt:
    case milter::kAddRcptPar:
    case milter::kDelRcpt:
    case milter::kReplaceBody:
    case milter::kQuarantine:
      modification_bytes_ += p.data.size();
      if (modifications_.size() >= kMaxModifications ||
          modification_bytes_ > max_modification_bytes_) {
        return fail("modifications over the limit");
      }
      modifications_.push_back(std::move(p));
      return;
    case milter::kContinue:
      r.kind = MilterReply::Kind::kContinue;
      break;
    case milter::kAccept:
      r.kind = MilterReply::Kind::kAccept;
      break;
    case milter::kReject:
      r.kind = MilterReply::Kind::kReject;
      break;
    case milter::kTempfail:
      r.kind = MilterReply::Kind::kTempfail;
      break;
    case milter::kDiscard:
      r.kind = MilterReply::Kind::kDiscard;
      break;
    case milter::kSkip:
      r.kind = MilterReply::Kind::kSkip;
      break;
    case milter::kReplyCode: {
      std::optional<milter::ReplyCode> code = milter::parseReplyCode(p.data);
      if (!code) return fail("bad reply code");
      r.kind = MilterReply::Kind::kReplyCode;
      r.reply = std::move(*code);
      break;
    }
    default:
      return fail(std::string("unknown reply '") + p.code + "'");
  }
  awaiting_ = false;
  uv_timer_stop(&timer_);
  Done done = std::move(done_);
  done(r);
}

void MilterClient::fail(std::string why) {
  if (failed_) return;
  failed_ = true;
  failure_ = why;
  closeHandles();
  if (awaiting_ && !detached_) {
    awaiting_ = false;
    Done done = std::move(done_);
    done(MilterReply{MilterReply::Kind::kFailed, {}, std::move(why)});
  }
}

void MilterClient::detach() {
  detached_ = true;
  done_ = nullptr;
  if (!failed_ && !negotiating_) {
    write(milter::encode(milter::kQuit));  // best effort; the close follows it
  }
  failed_ = true;
  closeHandles();
  maybeDelete();
}

void MilterClient::closeHandles() {
  if (closing_) return;
  closing_ = true;
  if (handles_ == 0) return;
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(stream()), onClosed);
}

void MilterClient::onClosed(uv_handle_t* h) {
  auto* c = static_cast<MilterClient*>(h->data);
  --c->handles_;
  c->maybeDelete();
}

void MilterClient::maybeDelete() {
  // A queued write's callback comes before its handle's close callback (libuv cancels it).
  if (detached_ && closing_ && handles_ == 0) delete this;
}

}  // namespace postern
