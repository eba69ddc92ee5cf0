// Session and its milters ([[milter]], relay/inbound/milter_chain.h): each step asked of
// them while the session waits (reading paused, like a password check), the verdict turned
// into the SMTP reply of that step, and at the end of the message their edits applied to
// the envelope and the content before the spool sees it, so that 250 still means "durable
// as modified".
#include <unistd.h>

#include <algorithm>

#include "core/ascii.h"
#include "core/domain.h"
#include "core/log.h"
#include "core/smtp_command.h"
#include "core/smtp_reply.h"
#include "core/version.h"
#include "relay/inbound/relay_policy.h"
#include "relay/inbound/session.h"

namespace postern {
namespace {

const char* stepName(MilterStep s) {
  static constexpr const char* kNames[] = {"connect", "helo", "mail", "rcpt", "data", "message"};
  return kNames[static_cast<int>(s)];
}

const char* kindName(MilterVerdict::Kind k) {
  static constexpr const char* kNames[] = {"continue", "reject", "tempfail", "discard"};
  return kNames[static_cast<int>(k)];
}

}  // namespace

void Session::startMilters() {
  const std::vector<size_t>& chosen = config_->miltersFor(listener_.address);
  if (!chosen.empty()) milters_ = std::make_unique<MilterChain>(host_.loop(), *config_, chosen);
}

void Session::askMilters(MilterStep step, const std::function<void(MilterChain::Done)>& ask,
                         MilterThen then) {
  milter_waiting_ = true;
  ask([this, step, then = std::move(then)](const MilterVerdict& v) {
    const bool async = milter_async_;
    milter_waiting_ = milter_async_ = false;
    auto& actions = host_.metrics().milter_actions;
    for (const std::string& skipped : v.skipped) {
      ++actions[{skipped.substr(0, skipped.find(':')), "failed"}];
      log(spdlog::level::warn, "milter_failed",
          {{"step", stepName(step)}, {"milter", skipped}, {"action", "accept"}});
    }
    if (!v.why.empty() || v.kind != MilterVerdict::Kind::kContinue) {
      ++actions[{v.milter, v.why.empty() ? kindName(v.kind) : "failed"}];
    }
    if (!v.why.empty()) {
      log(spdlog::level::warn, "milter_failed",
          {{"step", stepName(step)}, {"milter", v.milter + ": " + v.why}, {"action", "tempfail"}});
    } else if (v.kind != MilterVerdict::Kind::kContinue) {
      log(spdlog::level::info, "milter",
          {{"step", stepName(step)},
           {"milter", v.milter},
           {"action", kindName(v.kind)},
           {"reply", v.lines.empty() ? std::string() : std::to_string(v.code) + " " + v.lines[0]}});
    }
    if (closing_ || close_after_flush_) return;
    then(v);
    if (!async) return;  // answered within ask(): the caller goes on
    progress();
    if (!waiting()) processInput();
    flushOutput();
    if (!waiting()) resumeReading();
  });
  if (milter_waiting_) {
    milter_async_ = true;
    pauseReading();
  }
}

void Session::milterReply(const MilterVerdict& v) {
  ++host_.metrics().rejected[v.code >= 500 ? "5.7.1" : "4.7.1"];
  const std::vector<std::string_view> lines(v.lines.begin(), v.lines.end());
  appendMultiline(out_, v.code, lines);
}

MilterChain::Macros Session::milterMacros(MilterStep step) const {
  MilterChain::Macros m;
  switch (step) {
    case MilterStep::kConnect:
      m = {{"j", config_->hostname},
           {"{daemon_name}", "postern"},
           {"{daemon_addr}", listener_.address},
           {"v", std::string("Postern ") + kVersion},
           {"_", "[" + client_text_ + "]"},
           {"{client_addr}", client_text_},
           {"{client_name}", "[" + client_text_ + "]"}};
      break;
    case MilterStep::kHelo:
      if (tls_) {
        // describe(): "TLSv1.3 TLS_AES_256_GCM_SHA384[ resumed]"
        const std::string d = tls_->describe();
        const size_t sp = d.find(' ');
        m = {{"{tls_version}", d.substr(0, sp)},
             {"{cipher}",
              sp == std::string::npos ? "" : d.substr(sp + 1, d.find(' ', sp + 1) - sp - 1)}};
      }
      break;
    case MilterStep::kMail:
      m = {{"{mail_addr}", txn_ ? txn_->sender : ""}, {"{mail_mailer}", "smtp"}};
      if (!auth_user_.empty()) {
        m.insert(m.end(), {{"{auth_type}", auth_mechanism_}, {"{auth_authen}", auth_user_}});
      }
      break;
    case MilterStep::kRcpt:
      m = {{"{rcpt_mailer}", "smtp"}};
      break;
    case MilterStep::kData:
    case MilterStep::kMessage:
      m = {{"i", txn_ && txn_->id != 0 ? queueIdString(txn_->id) : ""}};
      break;
  }
  return m;
}

void Session::milterConnect() {
  const char family = client_.v6 ? '6' : '4';
  askMilters(
      MilterStep::kConnect,
      [&](MilterChain::Done done) {
        milters_->connect("[" + client_text_ + "]", family, client_port_, client_text_,
                          milterMacros(MilterStep::kConnect), std::move(done));
      },
      [this](const MilterVerdict& v) {
        if (v.kind == MilterVerdict::Kind::kReject || v.kind == MilterVerdict::Kind::kTempfail) {
          // Refused before the greeting: RFC 5321 §3.1's 554, or 421 to come back later.
          MilterVerdict refused = v;
          refused.code = v.kind == MilterVerdict::Kind::kReject ? 554 : 421;
          milterReply(refused);
          return closeAfterFlush();
        }
        sendGreeting();
      });
}

bool Session::readContent(uint64_t offset, size_t n, std::string& out) const {
  out.clear();
  if (spill_) {
    out.resize(n);
    size_t got = 0;
    while (got < n) {
      const ssize_t r =
          ::pread(spill_->fd(), out.data() + got, n - got, static_cast<off_t>(offset + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return false;
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    out.resize(got);
    return true;
  }
  uint64_t pos = 0;
  for (std::string_view piece : body_.pieces()) {
    if (out.size() == n) break;
    if (pos + piece.size() > offset) {
      const size_t from = offset > pos ? static_cast<size_t>(offset - pos) : 0;
      out.append(piece.substr(from, std::min(piece.size() - from, n - out.size())));
    }
    pos += piece.size();
  }
  return true;
}

uint64_t Session::contentSize() const { return spill_ ? spill_->size() : body_.size(); }

void Session::filterMessage() {
  if (milter_discard_) return filtered(MilterVerdict{}, true);  // decided: nothing to ask
  if (state_ == State::kBdat && !milter_data_asked_) {
    // BDAT has no DATA command to ask at; its step comes with the end of the message.
    milter_data_asked_ = true;
    return askMilters(
        MilterStep::kData,
        [&](MilterChain::Done done) {
          milters_->data(milterMacros(MilterStep::kData), std::move(done));
        },
        [this](const MilterVerdict& v) { filtered(v, false); });
  }
  askMilters(
      MilterStep::kMessage,
      [&](MilterChain::Done done) {
        milters_->message(
            contentSize(),
            [this](uint64_t off, size_t n, std::string& out) { return readContent(off, n, out); },
            milterMacros(MilterStep::kMessage), std::move(done));
      },
      [this](const MilterVerdict& v) { filtered(v, true); });
}

void Session::filtered(const MilterVerdict& v, bool whole_message) {
  auto refuse = [this](const char* reason) {
    ++host_.metrics().messages_rejected[reason];
    resetTransaction();
  };
  switch (v.kind) {
    case MilterVerdict::Kind::kReject:
    case MilterVerdict::Kind::kTempfail:
      milterReply(v);
      return refuse("milter");
    case MilterVerdict::Kind::kDiscard:
      milter_discard_ = true;
      break;
    case MilterVerdict::Kind::kContinue:
      break;
  }
  if (!whole_message && !milter_discard_) return filterMessage();
  if (!milter_discard_) {
    MilterEdits edits = milters_->takeEdits();
    if (!edits.empty() && !applyEdits(edits)) {
      error(452, "4.3.1", "Insufficient system storage");
      return refuse("storage");
    }
  }
  if (milter_discard_ || txn_->recipients.empty()) {
    // Answered as accepted, as Postfix does: the client must not retry it.
    log(spdlog::level::info, "milter_discarded",
        {{"id", queueIdString(txn_->id)}, {"from", txn_->sender}});
    ++host_.metrics().messages_rejected["milter_discard"];
    reply(250, "2.0.0", "Ok: queued as " + queueIdString(txn_->id));
    return resetTransaction();
  }
  commitMessage();
}

bool Session::applyEdits(MilterEdits& e) {
  Envelope& env = *txn_;
  auto refused = [this](const char* what, const std::string& value) {
    log(spdlog::level::warn, "milter_edit_refused", {{"edit", what}, {"value", value}});
  };
  if (e.sender) {
    std::optional<std::string> m =
        e.sender->empty() ? std::optional<std::string>("") : canonicalMailbox(*e.sender);
    if (m) {
      env.sender = std::move(*m);
    } else {
      refused("change_from", *e.sender);
    }
  }
  for (const std::string& del : e.del_rcpts) {
    const std::optional<std::string> m = canonicalMailbox(del);
    for (size_t i = 0; m && i < env.recipients.size(); ++i) {
      if (!equalsIgnoreCase(env.recipients[i], *m)) continue;
      env.recipients.erase(env.recipients.begin() + static_cast<std::ptrdiff_t>(i));
      env.dsn_notify.erase(env.dsn_notify.begin() + static_cast<std::ptrdiff_t>(i));
      env.dsn_orcpt.erase(env.dsn_orcpt.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
  for (const std::string& add : e.add_rcpts) {
    // A milter's recipient passes the relay rules the client's did: no milter makes
    // Postern an open relay.
    std::optional<std::string> m = canonicalMailbox(add);
    if (!m || checkRecipient(*config_, relay_client_ || !auth_user_.empty(), *m) !=
                  RcptPolicy::kAllowed) {
      refused("add_rcpt", add);
      continue;
    }
    if (env.recipients.size() >= limits_.recipients) {
      refused("add_rcpt", add + " (too many recipients)");
      continue;
    }
    env.recipients.push_back(std::move(*m));
    env.dsn_notify.emplace_back();
    env.dsn_orcpt.emplace_back();
  }
  if (e.quarantine) {
    milter_quarantine_ = e.quarantine->empty() ? "milter" : *e.quarantine;
    ++host_.metrics().milter_actions[{e.quarantined_by, "quarantine"}];
  }
  if (e.headers.empty() && !e.body) return true;
  return rewriteContent(e);
}

bool Session::rewriteContent(const MilterEdits& e) {
  const HeaderSection& section = milters_->section();
  std::vector<MilterHeader> fields = section.fields;
  for (const milter::Packet& p : e.headers) {
    if (!applyHeaderEdit(fields, p)) refusedHeaderEdit(p);
  }
  const std::string head = serializeHeaders(fields, section.blank_line);
  const uint64_t size = contentSize();
  std::string chunk;
  if (spill_) {
    Result<std::unique_ptr<SpillFile>> fresh = host_.spool().newSpill();
    if (!fresh) return false;
    (*fresh)->append(head);
    if (e.body) {
      (*fresh)->append(normalizeBody(*e.body));
    } else {
      for (uint64_t off = section.body_begin; off < size; off += chunk.size()) {
        if (!readContent(off, 1 << 16, chunk) || chunk.empty()) return false;
        (*fresh)->append(chunk);
      }
    }
    if ((*fresh)->failed()) return false;
    spill_ = std::move(*fresh);
  } else {
    std::string content = head;
    if (e.body) {
      content.append(normalizeBody(*e.body));
    } else if (readContent(section.body_begin, static_cast<size_t>(size - section.body_begin),
                           chunk)) {
      content.append(chunk);
    }
    body_.clear();
    body_.adopt(std::move(content));
  }
  if (dkim_) {
    // Signed as stored: the hash starts again over the edited content.
    dkim_ = std::make_unique<DkimHasher>();
    for (uint64_t off = 0; off < contentSize(); off += chunk.size()) {
      if (!readContent(off, 1 << 16, chunk) || chunk.empty()) break;
      dkim_->feed(chunk);
    }
  }
  return true;
}

void Session::refusedHeaderEdit(const milter::Packet& p) {
  log(spdlog::level::warn, "milter_edit_refused",
      {{"edit", p.code == milter::kAddHeader      ? "add_header"
                : p.code == milter::kInsertHeader ? "insert_header"
                                                  : "change_header"},
       {"value", std::string_view(p.data).substr(0, 200)}});  // logEvent escapes it
}

}  // namespace postern
