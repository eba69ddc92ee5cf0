// Session command handlers: HELO/EHLO, MAIL, RCPT, STARTTLS and the simple commands.
// DATA and BDAT are in session_data.cc.
#include <algorithm>

#include "core/assert.h"
#include "core/domain.h"
#include "core/esmtp_params.h"
#include "core/log.h"
#include "core/recipient_list.h"
#include "core/smtp_reply.h"
#include "relay/inbound/recipient_probe.h"
#include "relay/inbound/relay_policy.h"
#include "relay/inbound/session.h"

namespace postern {
namespace {

// Upper-cased copy of a short parameter keyword, for duplicate detection.
std::string upperKey(std::string_view k) {
  std::string out(k);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool hasDuplicate(const EsmtpParams& params) {
  for (size_t i = 0; i < params.size(); ++i) {
    for (size_t j = i + 1; j < params.size(); ++j) {
      if (equalsIgnoreCase(params[i].keyword, params[j].keyword)) return true;
    }
  }
  return false;
}

}  // namespace

void Session::handleCommand(const Line& line) {
  if (line.too_long) return error(500, "5.5.2", "Error: line too long");
  if (host_.stopping() && (state_ == State::kReady || state_ == State::kConnected)) {
    // Draining: a session that was let finish its transaction gets no new one.
    reply(421, "4.3.2", config_->hostname + " Service shutting down");
    return closeAfterFlush();
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
    case Verb::kBdat:
      return cmdBdat(cmd);
    case Verb::kStartTls:
      return cmdStartTls(cmd);
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
                   config_->auth.users ? "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY "
                                         "EXPN HELP QUIT STARTTLS AUTH"
                                       : "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY "
                                         "EXPN HELP QUIT STARTTLS");
    case Verb::kQuit:
      reply(221, "2.0.0", "Bye");
      return closeAfterFlush();
    case Verb::kAuth:
      return cmdAuth(cmd);
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

void Session::resetTransaction() {
  if (state_ != State::kConnected) state_ = State::kReady;
  txn_.reset();
  rcpt_rejected_ = false;
  milter_discard_ = milter_data_asked_ = false;
  milter_quarantine_.clear();
  if (milters_ && !milters_->busy()) milters_->abort();  // they forget the message too
  body_.clear();  // lets go of the read buffers it pinned
  releaseMemory();
  spill_.reset();
  spill_failed_ = false;
  dkim_.reset();
}

void Session::cmdHelo(const Command& cmd, bool esmtp) {
  if (cmd.arg.empty()) {
    return error(501, "5.5.4", esmtp ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
  }
  state_ = State::kReady;
  resetTransaction();
  helo_.assign(cmd.arg.substr(0, std::min<size_t>(cmd.arg.size(), 255)));
  esmtp_ = esmtp;
  if (!milters_) return heloReply();
  askMilters(
      MilterStep::kHelo,
      [&](MilterChain::Done done) {
        milters_->helo(helo_, milterMacros(MilterStep::kHelo), std::move(done));
      },
      [this](const MilterVerdict& v) {
        if (v.kind != MilterVerdict::Kind::kReject && v.kind != MilterVerdict::Kind::kTempfail) {
          return heloReply();
        }
        state_ = State::kConnected;  // not greeted: MAIL still needs HELO/EHLO
        milterReply(v);
      });
}

void Session::heloReply() {
  const Config& c = *config_;
  if (!esmtp_) {
    out_.append("250 ").append(c.hostname).append("\r\n");
    return;
  }
  std::string size = "SIZE " + std::to_string(limits_.message_size);
  std::vector<std::string_view> lines = {c.hostname, "PIPELINING",          size,       "8BITMIME",
                                         "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"};
  if (host_.tls() != nullptr && !tls_ && listener_.tls == ListenerConfig::Tls::kStartTls) {
    lines.push_back("STARTTLS");
  }
  if (authOffered()) lines.push_back("AUTH PLAIN LOGIN");
  appendMultiline(out_, 250, lines);
}

void Session::cmdMail(const Command& cmd) {
  if (state_ == State::kConnected) return error(503, "5.5.1", "Error: send HELO/EHLO first");
  if (state_ != State::kReady) return error(503, "5.5.1", "Error: nested MAIL command");
  if (listener_.require_tls && !tls_) {
    return error(530, "5.7.0", "Must issue a STARTTLS command first");
  }
  if (messages_ >= limits_.messages_per_connection) {
    log(spdlog::level::info, "too_many_messages");
    reply(421, "4.7.0", config_->hostname + " Error: too many messages in one connection");
    return closeAfterFlush();
  }
  PathArg path;
  if (auto err = parsePathArg(cmd.arg, "FROM", path)) {
    return error(err->code, err->enhanced, err->text);
  }
  if (hasDuplicate(path.params)) return error(501, "5.5.4", "Duplicate MAIL parameter");
  bool utf8 = false;
  std::string ret, envid;
  for (const auto& p : path.params) {
    std::string key = upperKey(p.keyword);
    if (key == "SIZE") {
      char* end = nullptr;
      std::string v(p.value);
      unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || v.size() > 20) {
        return error(501, "5.5.4", "Bad SIZE parameter");
      }
      if (n > limits_.message_size) return error(552, "5.3.4", "Message size exceeds fixed limit");
    } else if (key == "BODY") {
      if (!equalsIgnoreCase(p.value, "7BIT") && !equalsIgnoreCase(p.value, "8BITMIME")) {
        return error(501, "5.5.4", "Unsupported BODY parameter");
      }
    } else if (key == "SMTPUTF8") {
      if (p.has_value) return error(501, "5.5.4", "SMTPUTF8 takes no value");
      utf8 = true;
    } else if (key == "RET") {
      if (!isValidRet(p.value)) return error(501, "5.5.4", "Bad RET parameter (FULL or HDRS)");
      ret = upperKey(p.value);
    } else if (key == "ENVID") {
      if (!isValidEnvid(p.value)) return error(501, "5.5.4", "Bad ENVID parameter");
      envid.assign(p.value);
    } else if (key == "AUTH" && authOffered()) {
      // RFC 4954 §5: who submitted the message, as an earlier hop says. Checked for its
      // form and not passed on: Postern vouches only for its own clients' logins.
      if (p.value != "<>" && (p.value.empty() || p.value.size() > 500 || !isXtext(p.value))) {
        return error(501, "5.5.4", "Bad AUTH parameter");
      }
    } else {
      return error(555, "5.5.4", "Unsupported option: " + std::string(p.keyword));
    }
  }
  if (path.eight_bit && !utf8) return error(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
  if (auth_entry_ != nullptr && !auth_entry_->sender_domains.empty() && !path.mailbox.empty()) {
    // The user may send only as its own domains.
    const size_t at = path.mailbox.rfind('@');
    const std::optional<std::string> domain =
        at == std::string::npos ? std::nullopt : canonicalDomain(path.mailbox.substr(at + 1));
    const auto& mine = auth_entry_->sender_domains;
    if (!domain || std::find(mine.begin(), mine.end(), *domain) == mine.end()) {
      return error(553, "5.7.1", "Sender address rejected: not owned by user " + auth_user_);
    }
  }
  // Not the client's error when the relay holds all it may: try again later.
  const size_t cost = path.mailbox.size() + ret.size() + envid.size() + kEnvelopeOverhead;
  if (!host_.memory().tryCharge(cost)) {
    return reply(452, "4.3.1", "Insufficient system resources, try again later");
  }
  envelope_charged_ += cost;
  Envelope& env = txn_.emplace();
  env.sender.assign(path.mailbox);
  env.smtputf8 = utf8;
  env.dsn_ret = std::move(ret);
  env.dsn_envid = std::move(envid);
  state_ = State::kMail;
  if (!milters_) return reply(250, "2.1.0", "Ok");
  askMilters(
      MilterStep::kMail,
      [&](MilterChain::Done done) {
        milters_->mail(env.sender, milterMacros(MilterStep::kMail), std::move(done));
      },
      [this](const MilterVerdict& v) {
        if (v.kind == MilterVerdict::Kind::kReject || v.kind == MilterVerdict::Kind::kTempfail) {
          resetTransaction();
          return milterReply(v);
        }
        milter_discard_ = v.kind == MilterVerdict::Kind::kDiscard;
        reply(250, "2.1.0", "Ok");
      });
}

void Session::cmdRcpt(const Command& cmd) {
  if (state_ != State::kMail && state_ != State::kRcpt) {
    return error(503, "5.5.1", "Error: need MAIL command");
  }
  POSTERN_ASSERT(txn_.has_value());
  Envelope& env = *txn_;
  PathArg path;
  auto refuse = [&](int code, std::string_view enh, std::string_view text) {
    rcpt_rejected_ = true;
    error(code, enh, text);
  };
  if (auto err = parsePathArg(cmd.arg, "TO", path)) {
    return refuse(err->code, err->enhanced, err->text);
  }
  if (hasDuplicate(path.params)) return refuse(501, "5.5.4", "Duplicate RCPT parameter");
  std::string notify, orcpt;
  for (const auto& p : path.params) {
    std::string key = upperKey(p.keyword);
    if (key == "NOTIFY") {
      if (!isValidNotify(p.value)) {
        return refuse(501, "5.5.4", "Bad NOTIFY parameter (NEVER or SUCCESS,FAILURE,DELAY)");
      }
      notify = upperKey(p.value);
    } else if (key == "ORCPT") {
      if (!isValidOrcpt(p.value)) return refuse(501, "5.5.4", "Bad ORCPT parameter");
      orcpt.assign(p.value);
    } else {
      return refuse(555, "5.5.4", "Unsupported option: " + std::string(p.keyword));
    }
  }
  if (path.eight_bit && !env.smtputf8) {
    return refuse(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
  }
  // The domain as relay control, routing and delivery will all see it.
  std::optional<std::string> mailbox = canonicalMailbox(path.mailbox);
  if (!mailbox) return refuse(501, "5.1.2", "Bad recipient address syntax: invalid domain");
  switch (
      checkRecipient(*config_, relay_client_ || !auth_user_.empty(), *mailbox, path.source_route)) {
    case RcptPolicy::kAllowed:
      break;
    case RcptPolicy::kRelayDenied:
      log(spdlog::level::info, "relay_denied", {{"rcpt", path.mailbox}});
      return refuse(554, "5.7.1", "<" + std::string(path.mailbox) + ">: Relay access denied");
    case RcptPolicy::kRoutingDenied:
      log(spdlog::level::info, "relay_denied", {{"rcpt", path.mailbox}, {"why", "routing"}});
      return refuse(
          554, "5.7.1",
          "<" + std::string(path.mailbox) + ">: Relay access denied (sender-specified routing)");
  }
  if (const RecipientCheck* check = recipientCheckFor(*config_, *mailbox)) {
    if (!recipientExists(*check, *mailbox)) return;
  }
  if (env.recipients.size() >= limits_.recipients) {
    return reply(452, "4.5.3", "Error: too many recipients");
  }
  if (!milters_ || milter_discard_) {
    return addRecipient(std::move(*mailbox), std::move(notify), std::move(orcpt));
  }
  askMilters(
      MilterStep::kRcpt,
      [&](MilterChain::Done done) {
        milters_->rcpt(*mailbox, milterMacros(MilterStep::kRcpt), std::move(done));
      },
      [this, m = *mailbox, n = std::move(notify), o = std::move(orcpt)](const MilterVerdict& v) {
        if (v.kind == MilterVerdict::Kind::kReject || v.kind == MilterVerdict::Kind::kTempfail) {
          rcpt_rejected_ = true;
          return milterReply(v);
        }
        milter_discard_ = v.kind == MilterVerdict::Kind::kDiscard;
        addRecipient(m, n, o);
      });
}

void Session::addRecipient(std::string mailbox, std::string notify, std::string orcpt) {
  Envelope& env = *txn_;
  // Capacities, not sizes: what the allocator really holds for them.
  const size_t cost = mailbox.capacity() + notify.capacity() + orcpt.capacity() + kEnvelopeOverhead;
  if (!host_.memory().tryCharge(cost)) {
    return reply(452, "4.3.1", "Insufficient system resources, try again later");
  }
  envelope_charged_ += cost;
  env.recipients.push_back(std::move(mailbox));
  env.dsn_notify.push_back(std::move(notify));
  env.dsn_orcpt.push_back(std::move(orcpt));
  state_ = State::kRcpt;
  reply(250, "2.1.5", "Ok");
}

bool Session::recipientExists(const RecipientCheck& check, const std::string& mailbox) {
  const std::string rcpt = "<" + mailbox + ">: Recipient address rejected: ";
  auto unknown = [&](const std::string& why) {
    log(spdlog::level::info, "recipient_unknown", {{"rcpt", mailbox}, {"why", why}});
    rcpt_rejected_ = true;
    error(550, "5.1.1", rcpt + why);
    return false;
  };
  if (check.mode == RecipientCheck::Mode::kList) {
    return check.list->contains(mailbox) || unknown("User unknown");
  }
  const ProbeAnswer answer = host_.prober().check(check, mailbox);
  switch (answer.verdict) {
    case ProbeVerdict::kExists:
      return true;
    case ProbeVerdict::kUnknown:
      return unknown("undeliverable address: " + answer.reply);
    case ProbeVerdict::kUnavailable:
      if (check.fail_open) return true;
      rcpt_rejected_ = true;
      reply(450, "4.1.1", rcpt + "unverified address: verification temporarily unavailable");
      return false;
    case ProbeVerdict::kPending:
      break;
  }
  // Not the client's error (no error count): it retries, by then the answer is known.
  rcpt_rejected_ = true;
  reply(450, "4.1.1", rcpt + "unverified address: verification in progress");
  return false;
}

void Session::cmdStartTls(const Command& cmd) {
  if (host_.tls() == nullptr || listener_.tls == ListenerConfig::Tls::kNone) {
    return error(502, "5.5.1", "Error: command not implemented");
  }
  if (tls_) return error(503, "5.5.1", "Error: TLS already active");
  if (!cmd.arg.empty()) return error(501, "5.5.4", "Syntax: STARTTLS");
  if (state_ == State::kMail || state_ == State::kRcpt) {
    return error(503, "5.5.1", "Error: MAIL transaction in progress");
  }
  reply(220, "2.0.0", "Ready to start TLS");
  flushOutput();
  // RFC 3207 §4.2: everything the client sent before the handshake is discarded (it
  // could be commands injected in plain text), and the session starts over.
  in_.clear();
  splitter_.reset();
  startTls();
  state_ = State::kConnected;
  helo_.clear();
  esmtp_ = false;
  auth_user_.clear();  // RFC 3207 §4.2: nothing learnt before TLS stands after it
  auth_mechanism_.clear();
  auth_entry_ = nullptr;
  resetTransaction();
}

}  // namespace postern
