// Session message transfer: DATA (dot-stuffed lines) and BDAT (RFC 3030 chunks), DKIM
// signing (the body's pieces are hashed as they leave body_, for a spill file or the
// spool), the commit to the spool, and the reply once it is durable.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "core/assert.h"
#include "core/clock.h"
#include "core/log.h"
#include "relay/inbound/received.h"
#include "relay/inbound/session.h"

namespace postern {
namespace {

// Chunk octets that count as progress against the data deadline.
constexpr uint64_t kChunkProgress = 4096;

}  // namespace

void Session::beginMessage() {
  const Config& c = *config_;
  Envelope& env = *txn_;
  env.id = host_.spool().nextId();
  std::string qid = queueIdString(env.id);
  std::string received;
  appendReceived(
      received,
      ReceivedInfo{helo_, client_text_, c.hostname, esmtp_, tls_ != nullptr, !auth_user_.empty(),
                   qid, env.recipients.size() == 1 ? env.recipients[0] : "", unixMillis() / 1000});
  body_.clear();
  body_.adopt(std::move(received));
  body_.setSource(&in_);  // the content is pinned where it is read, not copied
  dkim_.reset();
  dkim_signed_.clear();
  if (!c.dkim.empty() && (relay_client_ || !auth_user_.empty())) {
    dkim_ = std::make_unique<DkimHasher>();
  }
  reader_.reset(body_);
}

void Session::cmdData(const Command& cmd) {
  if (state_ == State::kBdat) return error(503, "5.5.1", "Error: DATA not allowed after BDAT");
  if (state_ == State::kMail && rcpt_rejected_) {
    return error(554, "5.5.1", "Error: no valid recipients");
  }
  if (state_ != State::kRcpt) return error(503, "5.5.1", "Error: need RCPT command");
  if (!cmd.arg.empty()) return error(501, "5.5.4", "Syntax: DATA");
  if (!milters_ || milter_discard_) return startData();
  askMilters(
      MilterStep::kData,
      [&](MilterChain::Done done) {
        milters_->data(milterMacros(MilterStep::kData), std::move(done));
      },
      [this](const MilterVerdict& v) {
        if (v.kind == MilterVerdict::Kind::kReject || v.kind == MilterVerdict::Kind::kTempfail) {
          resetTransaction();
          return milterReply(v);
        }
        milter_discard_ = v.kind == MilterVerdict::Kind::kDiscard;
        milter_data_asked_ = true;
        startData();
      });
}

void Session::startData() {
  beginMessage();
  state_ = State::kData;
  splitter_.setMaxLine(reader_.splitterBound());
  out_.append("354 End data with <CR><LF>.<CR><LF>\r\n");
}

void Session::handleData(const Line& line) {
  if (reader_.feed(line, body_)) {
    splitter_.setMaxLine(limits_.command_line);
    endMessage();
    return;
  }
  spillIfLarge();
}

void Session::spillIfLarge() {
  // The budget is charged in steps, so the shared counter is touched once per step, not
  // once per line.
  const size_t footprint = body_.footprint();
  if (footprint > body_charged_) {
    const size_t step = (footprint - body_charged_ + kBodyChargeStep - 1) / kBodyChargeStep;
    host_.memory().charge(step * kBodyChargeStep);
    body_charged_ += step * kBodyChargeStep;
  }
  // Past message_memory, or at least a step's worth while the relay's budget is spent.
  const bool spill = footprint >= limits_.message_memory ||
                     (footprint >= kBodyChargeStep && host_.memory().exhausted());
  if (!spill || reader_.error() != DataError::kNone) return;
  if (!spill_ && !spill_failed_) {
    Result<std::unique_ptr<SpillFile>> spill = host_.spool().newSpill();
    if (spill) {
      spill_ = std::move(*spill);
    } else {
      log(spdlog::level::err, "spill_failed", {{"error", spill.error()}});
      spill_failed_ = true;
    }
  }
  feedDkim();
  if (spill_ && !spill_->append(body_)) {
    log(spdlog::level::err, "spill_failed", {{"error", std::strerror(spill_->error())}});
    spill_failed_ = true;
    spill_.reset();
  }
  // Kept reading to the end either way (the client must stay in step), stored nowhere.
  body_.clear();
  reader_.outMoved();
  host_.memory().release(body_charged_);
  body_charged_ = 0;
}

void Session::feedDkim() {
  if (!dkim_) return;
  for (std::string_view piece : body_.pieces()) dkim_->feed(piece);
}

std::string Session::dkimSignatures(std::string& signed_for) {
  signed_for.clear();
  if (!dkim_) return {};
  std::unique_ptr<DkimHasher> hasher = std::move(dkim_);
  if (hasher->overflowed()) {
    log(spdlog::level::warn, "dkim_skipped", {{"why", "header section over 64 KiB"}});
    return {};
  }
  const std::optional<std::string> domain = hasher->fromDomain();
  if (!domain) return {};  // no single From: address: nothing to sign for
  std::string out;
  bool hashed = false;
  std::array<unsigned char, 32> body_hash{};
  for (const DkimKey& key : config_->dkim) {
    if (key.domain != *domain) continue;
    if (!hashed) {
      body_hash = hasher->finishBody();
      hashed = true;
    }
    Result<std::string> field =
        dkimSign(key, hasher->headerSection(), body_hash, unixMillis() / 1000);
    if (!field) {
      ++host_.metrics().dkim_failed;
      log(spdlog::level::err, "dkim_failed", {{"domain", key.domain}, {"error", field.error()}});
      continue;
    }
    ++host_.metrics().dkim_signed;
    out.insert(0, *field);  // the later key's field on top, as a later signer's would be
    signed_for.append(signed_for.empty() ? "" : ",")
        .append(
            key.domain + ":" +
            (key.algorithm == DkimKey::Algorithm::kRsaSha256 ? "rsa-sha256" : "ed25519-sha256"));
  }
  return out;
}

void Session::cmdBdat(const Command& cmd) {
  // "BDAT" SP size [SP "LAST"]
  std::string_view arg = cmd.arg;
  size_t sp = arg.find(' ');
  std::string_view size_text = arg.substr(0, sp);
  std::string_view rest = sp == std::string_view::npos ? std::string_view{} : arg.substr(sp + 1);
  uint64_t size = 0;
  auto res = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
  if (size_text.empty() || size_text.size() > 19 || res.ec != std::errc{} ||
      res.ptr != size_text.data() + size_text.size() ||
      (!rest.empty() && !equalsIgnoreCase(rest, "LAST"))) {
    return error(501, "5.5.4", "Syntax: BDAT size [LAST]");
  }
  chunk_size_ = chunk_left_ = size;
  chunk_last_ = !rest.empty();
  chunk_unmarked_ = 0;
  chunk_error_code_ = 0;
  // Out of sequence: the chunk's octets are still read (never taken as commands), then
  // the error is given.
  if (state_ == State::kMail && rcpt_rejected_) {
    chunk_error_code_ = 554;
    chunk_error_enhanced_ = "5.5.1";
    chunk_error_text_ = "Error: no valid recipients";
  } else if (state_ != State::kRcpt && state_ != State::kBdat) {
    chunk_error_code_ = 503;
    chunk_error_enhanced_ = "5.5.1";
    chunk_error_text_ = "Error: need RCPT command";
  } else if (state_ == State::kRcpt) {
    beginMessage();
    state_ = State::kBdat;
  }
  in_chunk_ = true;
  if (chunk_left_ == 0) finishChunk();
}

void Session::takeChunk() {
  std::string_view data = in_.readable();
  size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_left_, data.size()));
  if (chunk_error_code_ == 0) {
    reader_.feedChunk(data.substr(0, n), body_);
    spillIfLarge();
  }
  in_.consume(n);
  chunk_left_ -= n;
  chunk_unmarked_ += n;
  if (chunk_unmarked_ >= kChunkProgress) {
    chunk_unmarked_ = 0;
    progress();
  }
  if (chunk_left_ == 0) finishChunk();
}

void Session::finishChunk() {
  in_chunk_ = false;
  progress();
  if (chunk_error_code_ != 0)
    return error(chunk_error_code_, chunk_error_enhanced_, chunk_error_text_);
  if (!chunk_last_) {
    return reply(250, "2.0.0", std::to_string(chunk_size_) + " octets received");
  }
  reader_.finishChunks(body_);
  endMessage();
}

void Session::endMessage() {
  auto refuse = [this](const char* reason) {
    ++host_.metrics().messages_rejected[reason];
    resetTransaction();
  };
  switch (reader_.error()) {
    case DataError::kNone:
      break;
    case DataError::kTooBig:
      error(552, "5.3.4", "Message size exceeds fixed limit");
      return refuse("size");
    case DataError::kLineTooLong:
      error(550, "5.5.2",
            "Message line too long (limit " + std::to_string(limits_.data_line - 2) + " octets)");
      return refuse("line_too_long");
    case DataError::kBareLf:
      error(550, "5.5.2", "Bare LF in message data not allowed");
      return refuse("bare_lf");
    case DataError::kBareCr:
      error(550, "5.5.2", "Bare CR in message data not allowed");
      return refuse("bare_cr");
  }
  if (reader_.receivedCount() > limits_.hop_limit) {
    log(spdlog::level::warn, "too_many_hops", {{"hops", uint64_t{reader_.receivedCount()}}});
    error(554, "5.4.6", "Too many hops (mail loop?)");
    return refuse("hops");
  }
  feedDkim();
  if (spill_ && !spill_->append(body_)) spill_failed_ = true;
  if (spill_failed_) {
    error(452, "4.3.1", "Insufficient system storage");
    return refuse("storage");
  }
  if (milters_) return filterMessage();  // then commitMessage()
  commitMessage();
}

void Session::commitMessage() {
  std::string signatures = dkimSignatures(dkim_signed_);
  txn_->received_ms = unixMillis();
  state_ = State::kCommit;
  // Reading goes on while the commit runs, unprocessed, into bounded buffers (the input
  // buffer for plain TCP, one read buffer of records for TLS: onRead).
  ++refs_;  // the spool's callback refers to this session
  // The spool encodes the envelope now; the session keeps it (no command is read in
  // kCommit, so nothing resets it) until the callback moves it on.
  auto committed = [this](bool ok, const StoredRef& ref) { onCommitted(ok, ref); };
  if (!milter_quarantine_.empty()) {
    // A milter's QUARANTINE: the hold marker goes in the same spool batch as the message
    // or an earlier one, so the message is never durable without it.
    host_.spool().setHeld(txn_->id, true, [id = queueIdString(txn_->id)](bool ok) {
      if (!ok) logEvent(spdlog::level::err, "hold_marker_failed", {{"id", id}});
    });
  }
  if (spill_) {
    host_.spool().append(*txn_, std::move(spill_), std::move(committed), std::move(signatures));
  } else {
    body_.prepend(std::move(signatures));
    host_.spool().append(*txn_, std::move(body_), std::move(committed));
  }
  body_.clear();  // moved from: make it a valid empty body again
}

void Session::onCommitted(bool ok, const StoredRef& ref) {
  POSTERN_ASSERT(state_ == State::kCommit && txn_.has_value());
  std::string qid = queueIdString(txn_->id);
  if (ok) {
    // Logged and handed to delivery even if the client has gone: the message is durable.
    ++host_.metrics().messages_accepted;
    host_.metrics().bytes_accepted += ref.body_size;
    ++messages_;
    log(spdlog::level::info, "accepted",
        {{"id", qid},
         {"from", txn_->sender},
         {"nrcpt", uint64_t{txn_->recipients.size()}},
         {"size", ref.body_size},
         {"message_id", reader_.messageId()},
         {"helo", helo_},
         {"tls", tls_ ? tls_->describe() : std::string("none")},
         {"user", auth_user_},
         {"dkim", dkim_signed_}});
    if (!milter_quarantine_.empty()) {
      log(spdlog::level::info, "quarantined", {{"id", qid}, {"reason", milter_quarantine_}});
    }
    host_.accepted(SpooledMessage{std::move(*txn_), ref, {}, !milter_quarantine_.empty()});
  } else {
    ++host_.metrics().messages_rejected["storage"];
  }
  if (!closing_) {
    if (ok) {
      reply(250, "2.0.0", "Ok: queued as " + qid);
    } else {
      error(452, "4.3.1", "Insufficient system storage");
    }
    state_ = State::kReady;
    resetTransaction();
    if (host_.stopping()) {
      reply(421, "4.3.2", config_->hostname + " Service shutting down");
      closeAfterFlush();
    }
    processInput();
    flushOutput();
    if (state_ != State::kCommit) resumeReading();
  }
  unref();
}

}  // namespace postern
