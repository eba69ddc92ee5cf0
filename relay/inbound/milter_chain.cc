#include "relay/inbound/milter_chain.h"

#include "core/assert.h"

namespace postern {

MilterChain::MilterChain(uv_loop_t* loop, const Config& config, const std::vector<size_t>& milters)
    : loop_(loop), max_modification_bytes_(config.limits.message_size + (1u << 20)) {
  for (size_t i : milters) {
    Slot s;
    s.config = &config.milters[i];
    slots_.push_back(s);
  }
}

MilterChain::~MilterChain() {
  for (Slot& s : slots_) {
    if (s.client != nullptr) s.client->detach();
  }
}

void MilterChain::connect(std::string hostname, char family, uint16_t port, std::string address,
                          Macros macros, Done done) {
  start(MilterStep::kConnect, milter::kConnect,
        milter::encodeConnect(hostname, family, port, address), std::move(macros), std::move(done));
}

void MilterChain::helo(std::string helo, Macros macros, Done done) {
  start(MilterStep::kHelo, milter::kHelo, milter::encodeStrings(milter::kHelo, {helo}),
        std::move(macros), std::move(done));
}

void MilterChain::mail(std::string sender, Macros macros, Done done) {
  abort();  // a message the milters did not see end
  for (Slot& s : slots_) s.message_done = false;
  start(MilterStep::kMail, milter::kMail,
        milter::encodeStrings(milter::kMail, {"<" + sender + ">"}), std::move(macros),
        std::move(done));
}

void MilterChain::rcpt(std::string rcpt, Macros macros, Done done) {
  start(MilterStep::kRcpt, milter::kRcpt, milter::encodeStrings(milter::kRcpt, {"<" + rcpt + ">"}),
        std::move(macros), std::move(done));
}

void MilterChain::data(Macros macros, Done done) {
  start(MilterStep::kData, milter::kData, milter::encode(milter::kData), std::move(macros),
        std::move(done));
}

void MilterChain::message(uint64_t size, ReadContent read, Macros macros, Done done) {
  size_ = size;
  read_ = std::move(read);
  std::string head;
  if (!read_(0, static_cast<size_t>(std::min<uint64_t>(size, kHeaderScan)), head)) head.clear();
  section_ = parseHeaderSection(head);
  eoh_macros_ = macros.empty() ? "" : milter::encodeMacros(milter::kEndOfHeaders, macros);
  eom_macros_ = macros.empty() ? "" : milter::encodeMacros(milter::kEndOfBody, macros);
  edits_ = MilterEdits{};
  start(MilterStep::kMessage, milter::kEndOfBody, milter::encode(milter::kEndOfBody), {},
        std::move(done));
}

void MilterChain::abort() {
  for (Slot& s : slots_) {
    if (!s.in_message) continue;
    s.in_message = false;
    if (s.client != nullptr && !s.client->failed() && !s.off) {
      s.client->send(milter::encode(milter::kAbort), false, nullptr);
    }
  }
}

void MilterChain::start(MilterStep step, char command, std::string packet, Macros macros,
                        Done done) {
  POSTERN_ASSERT(!busy_);
  busy_ = true;
  step_ = step;
  command_ = command;
  packet_ = std::move(packet);
  macros_ = macros.empty() ? "" : milter::encodeMacros(command, macros);
  done_ = std::move(done);
  verdict_ = MilterVerdict{};
  slot_ = 0;
  phase_ = Phase::kOpen;
  pump();
}

bool MilterChain::skipsStep(const Slot& s) const {
  const uint32_t p = s.client->protocol();
  switch (step_) {
    case MilterStep::kConnect:
      return (p & milter::kNoConnect) != 0;
    case MilterStep::kHelo:
      return (p & milter::kNoHelo) != 0;
    case MilterStep::kMail:
      return (p & milter::kNoMail) != 0;
    case MilterStep::kRcpt:
      return (p & milter::kNoRcpt) != 0;
    case MilterStep::kData:
      return (p & milter::kNoData) != 0;
    case MilterStep::kMessage:
      return false;
  }
  return false;
}

bool MilterChain::noReply(const Slot& s, uint32_t flag) const {
  // A version 2 milter answers every step whatever it says (the NR flags came with v6).
  return (s.client->protocol() & flag) != 0;
}

bool MilterChain::nextPackets(Slot& s, std::string& out, bool& await) {
  const uint32_t p = s.client->protocol();
  await = true;
  switch (phase_) {
    case Phase::kOpen:
    case Phase::kDone:
      return false;
    case Phase::kStep: {
      phase_ = Phase::kDone;
      if (skipsStep(s)) return false;
      static constexpr uint32_t kNoReplyFor[] = {milter::kNoReplyConnect, milter::kNoReplyHelo,
                                                 milter::kNoReplyMail, milter::kNoReplyRcpt,
                                                 milter::kNoReplyData};
      await = !noReply(s, kNoReplyFor[static_cast<int>(step_)]);
      out = macros_ + packet_;
      if (step_ == MilterStep::kMail) s.in_message = true;
      return true;
    }
    case Phase::kHeaders:
      if ((p & milter::kNoHeaders) == 0 && header_ < section_.fields.size()) {
        const MilterHeader& h = section_.fields[header_++];
        out = milter::encodeStrings(milter::kHeader, {h.name, h.value});
        await = !noReply(s, milter::kNoReplyHeader);
        return true;
      }
      phase_ = Phase::kEndOfHeaders;
      [[fallthrough]];
    case Phase::kEndOfHeaders:
      phase_ = Phase::kBody;
      offset_ = section_.body_begin;
      if ((p & milter::kNoEndOfHeaders) == 0) {
        out = eoh_macros_ + milter::encode(milter::kEndOfHeaders);
        await = !noReply(s, milter::kNoReplyEndOfHeaders);
        return true;
      }
      [[fallthrough]];
    case Phase::kBody:
      if ((p & milter::kNoBody) == 0 && offset_ < size_) {
        std::string chunk;
        const size_t n =
            static_cast<size_t>(std::min<uint64_t>(milter::kBodyChunk, size_ - offset_));
        if (!read_(offset_, n, chunk) || chunk.size() != n) {
          // The content cannot be read back (a spill file's I/O error): the milter gets
          // what it got so far and its end of message, the session the storage error.
          offset_ = size_;
        } else {
          offset_ += n;
          out = milter::encode(milter::kBody, chunk);
          await = !noReply(s, milter::kNoReplyBody);
          return true;
        }
      }
      phase_ = Phase::kEndOfMessage;
      [[fallthrough]];
    case Phase::kEndOfMessage:
      phase_ = Phase::kDone;
      out = eom_macros_ + packet_;
      return true;
  }
  return false;
}

void MilterChain::pump() {
  while (slot_ < slots_.size()) {
    Slot& s = slots_[slot_];
    const bool message_step = step_ != MilterStep::kConnect && step_ != MilterStep::kHelo;
    if (s.off || (message_step && s.message_done)) {
      nextSlot();
      continue;
    }
    if (!s.failure.empty()) {
      // Failed earlier in the session with default_action = tempfail: every step gets
      // the tempfail, as Postfix answers for a milter in its error state.
      return finish(tempfail(s));
    }
    if (s.client == nullptr) {
      // First use in this session: connect and negotiate, then this step.
      s.client = new MilterClient(loop_, *s.config, max_modification_bytes_);
      s.client->open([this](const MilterReply& r) { onReply(r); });
      return;
    }
    if (phase_ == Phase::kOpen) {
      phase_ = step_ == MilterStep::kMessage ? Phase::kHeaders : Phase::kStep;
      header_ = 0;
    }
    std::string packets;
    bool await = true;
    if (!nextPackets(s, packets, await)) {
      nextSlot();
      continue;
    }
    if (!s.client->send(std::move(packets), await, [this](const MilterReply& r) { onReply(r); })) {
      if (!failed(s, s.client->failure().empty() ? "connection lost" : s.client->failure())) {
        return;
      }
      continue;
    }
    if (await) return;  // onReply goes on
  }
  finish(std::move(verdict_));
}

void MilterChain::nextSlot() {
  ++slot_;
  phase_ = Phase::kOpen;
}

void MilterChain::onReply(const MilterReply& r) {
  Slot& s = slots_[slot_];
  const bool message_step = step_ != MilterStep::kConnect && step_ != MilterStep::kHelo;
  const bool connection_step = !message_step;
  using Kind = MilterReply::Kind;
  if (r.kind == Kind::kFailed) {
    if (failed(s, r.why)) pump();
    return;
  }
  if (phase_ == Phase::kOpen) return pump();  // negotiated: now the step
  MilterVerdict v;
  v.milter = s.config->name;
  switch (r.kind) {
    case Kind::kContinue:
      if (step_ == MilterStep::kMessage && phase_ == Phase::kDone) collect(s);
      return pump();
    case Kind::kSkip:
      // Only an answer to a body chunk means anything (SMFIP_SKIP): on to its end.
      if (phase_ == Phase::kBody) phase_ = Phase::kEndOfMessage;
      return pump();
    case Kind::kAccept:
      if (step_ == MilterStep::kMessage && phase_ == Phase::kDone) collect(s);
      if (connection_step) {
        s.off = true;
      } else {
        s.message_done = true;
        if (step_ == MilterStep::kMessage) s.in_message = false;
      }
      nextSlot();
      return pump();
    case Kind::kDiscard:
      if (connection_step) {  // not a message to drop yet: taken as accept, as Postfix does
        s.off = true;
        nextSlot();
        return pump();
      }
      v.kind = MilterVerdict::Kind::kDiscard;
      break;
    case Kind::kReject:
      v.kind = MilterVerdict::Kind::kReject;
      v.code = 550;
      v.lines = {"5.7.1 Command rejected"};
      break;
    case Kind::kTempfail:
      v.kind = MilterVerdict::Kind::kTempfail;
      v.code = 451;
      v.lines = {"4.7.1 Service unavailable - try again later"};
      break;
    case Kind::kReplyCode:
      v.kind = r.reply.code >= 500 ? MilterVerdict::Kind::kReject : MilterVerdict::Kind::kTempfail;
      v.code = r.reply.code;
      v.lines = r.reply.lines;
      break;
    case Kind::kFailed:
      break;
  }
  // The milters still in the message (this one too, if it decided before its end of
  // message) are told to forget it (abort()) before the next one.
  if (message_step && step_ != MilterStep::kRcpt) {
    for (Slot& other : slots_) other.message_done = true;  // the message has its answer
  }
  v.skipped = std::move(verdict_.skipped);
  finish(std::move(v));
}

void MilterChain::collect(Slot& s) {
  s.in_message = false;
  for (milter::Packet& p : s.client->takeModifications()) {
    switch (p.code) {
      case milter::kAddHeader:
      case milter::kInsertHeader:
      case milter::kChangeHeader:
        edits_.headers.push_back(std::move(p));
        break;
      case milter::kReplaceBody:
        if (!edits_.body) edits_.body.emplace();
        edits_.body->append(p.data);
        break;
      case milter::kQuarantine: {
        std::optional<std::vector<std::string>> reason = milter::parseStrings(p.data);
        edits_.quarantine = reason && !reason->empty() ? (*reason)[0] : std::string("milter");
        edits_.quarantined_by = s.config->name;
        break;
      }
      case milter::kChangeFrom:
      case milter::kAddRcpt:
      case milter::kAddRcptPar:
      case milter::kDelRcpt: {
        std::optional<std::vector<std::string>> args = milter::parseStrings(p.data);
        if (!args || args->empty()) break;  // malformed: nothing to apply (the session logs edits)
        std::string addr = std::move((*args)[0]);
        if (addr.size() >= 2 && addr.front() == '<' && addr.back() == '>') {
          addr = addr.substr(1, addr.size() - 2);
        }
        if (p.code == milter::kChangeFrom) {
          edits_.sender = std::move(addr);
        } else if (p.code == milter::kDelRcpt) {
          edits_.del_rcpts.push_back(std::move(addr));
        } else {
          edits_.add_rcpts.push_back(std::move(addr));
        }
        break;
      }
      default:
        break;
    }
  }
}

bool MilterChain::failed(Slot& s, const std::string& why) {
  if (s.client != nullptr) {
    s.client->detach();
    s.client = nullptr;
  }
  s.in_message = false;
  if (s.config->default_action == MilterConfig::DefaultAction::kAccept) {
    s.off = true;
    verdict_.skipped.push_back(s.config->name + ": " + why);
    nextSlot();
    return true;
  }
  // Not asked again in this session: a new connection would have missed the steps
  // before this one.
  s.failure = why;
  finish(tempfail(s));
  return false;
}

MilterVerdict MilterChain::tempfail(const Slot& s) {
  MilterVerdict v;
  v.kind = MilterVerdict::Kind::kTempfail;
  v.code = 451;
  v.lines = {"4.7.1 Service unavailable - try again later"};
  v.milter = s.config->name;
  v.why = s.failure;
  v.skipped = std::move(verdict_.skipped);
  return v;
}

void MilterChain::finish(MilterVerdict v) {
  busy_ = false;
  read_ = nullptr;
  Done done = std::move(done_);
  done(v);
}

}  // namespace postern
