// Session: SMTP AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN, against `[auth]
// users_file` (core/credentials.h).
//
// AUTH is offered (EHLO) and taken only once TLS is up, unless the listener has
// auth_plaintext: before that, 538 5.7.11, so a password never crosses the wire in clear
// on a normal listener. The exchange's responses are lines of base64 the session reads in
// place of commands (auth_step_); "*" cancels (501 5.0.0). The password is checked on
// libuv's thread pool, not on the loop (a crypt(3) hash costs milliseconds by design),
// while the session reads nothing more; a user that does not exist costs the same check
// (decoyHash), so timing does not tell which users exist. A failure is 535 5.7.8, counts
// against the session's error limit and against the client address in the relay-wide
// AuthThrottle; past `max_failures` in `failure_window`, AUTH from that address gets 454
// 4.7.0 without a check. At most kMaxChecks checks run at once in the process, so a storm
// of logins cannot fill the thread pool that delivery reads bodies on: above it, 454.
#include <openssl/crypto.h>

#include <atomic>

#include "core/credentials.h"
#include "core/sasl.h"
#include "core/smtp_reply.h"
#include "relay/inbound/auth_throttle.h"
#include "relay/inbound/session.h"

namespace postern {
namespace {

constexpr int kMaxChecks = 8;
std::atomic<int> checks_running{0};

uint64_t monotonicMs() { return uv_hrtime() / 1000000; }

// What a check needs on the pool thread; the session is not touched there.
struct AuthCheck {
  uv_work_t req;
  Session* session = nullptr;
  std::string user;
  std::string password;
  std::string hash;
  const char* mechanism = "";
  bool ok = false;
};

}  // namespace

bool Session::authOffered() const {
  return config_->auth.users != nullptr && (tls_ != nullptr || listener_.auth_plaintext);
}

void Session::cmdAuth(const Command& cmd) {
  if (config_->auth.users == nullptr) return error(502, "5.5.1", "Error: command not implemented");
  if (state_ == State::kConnected || !esmtp_) return error(503, "5.5.1", "Error: send EHLO first");
  if (!auth_user_.empty()) return error(503, "5.5.1", "Error: already authenticated");
  if (state_ != State::kReady) return error(503, "5.5.1", "Error: MAIL transaction in progress");
  if (!tls_ && !listener_.auth_plaintext) {
    return error(538, "5.7.11", "Encryption required for requested authentication mechanism");
  }
  const std::string_view arg = cmd.arg;
  const size_t sp = arg.find(' ');
  const std::string_view name = arg.substr(0, sp);
  const std::string_view initial =
      sp == std::string_view::npos ? std::string_view{} : arg.substr(sp + 1);
  if (name.empty() || initial.find(' ') != std::string_view::npos) {
    return error(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
  }
  const SaslMechanism mechanism = parseMechanism(name);
  if (mechanism == SaslMechanism::kUnknown) {
    return error(504, "5.5.4", "Unrecognized authentication type");
  }
  const AuthConfig& a = config_->auth;
  if (host_.authThrottle().blocked(client_, monotonicMs(), a.max_failures,
                                   static_cast<uint64_t>(a.failure_window * 1000))) {
    log(spdlog::level::warn, "auth_throttled");
    return error(454, "4.7.0", "Too many failed authentications; try again later");
  }
  if (mechanism == SaslMechanism::kPlain) {
    if (initial.empty()) {
      auth_step_ = AuthStep::kPlain;
      out_.append("334 \r\n");
      return;
    }
    return authResponse(AuthStep::kPlain, initial);
  }
  if (initial.empty()) {
    auth_step_ = AuthStep::kLoginUser;
    out_.append("334 VXNlcm5hbWU6\r\n");  // "Username:"
    return;
  }
  authResponse(AuthStep::kLoginUser, initial);
}

void Session::handleAuthResponse(const Line& line) {
  const AuthStep step = auth_step_;
  auth_step_ = AuthStep::kNone;
  if (line.too_long) return error(500, "5.5.6", "Authentication exchange line is too long");
  authResponse(step, line.text);
}

void Session::authResponse(AuthStep step, std::string_view text) {
  if (text == "*") return error(501, "5.0.0", "Authentication cancelled");
  std::optional<std::string> decoded = decodeBase64(text);
  if (!decoded) return error(501, "5.5.2", "Cannot decode response");
  switch (step) {
    case AuthStep::kPlain: {
      std::optional<PlainResponse> plain = parsePlainResponse(*decoded);
      OPENSSL_cleanse(decoded->data(), decoded->size());
      if (!plain) return error(501, "5.5.2", "Invalid PLAIN response");
      // Acting as another identity (authzid) is not offered: only as oneself.
      if (!plain->authzid.empty() && plain->authzid != plain->authcid) {
        OPENSSL_cleanse(plain->password.data(), plain->password.size());
        return authFailed("PLAIN", plain->authcid, "authorization identity refused");
      }
      return checkLogin("PLAIN", std::move(plain->authcid), std::move(plain->password));
    }
    case AuthStep::kLoginUser:
      if (decoded->empty()) return error(501, "5.5.2", "Empty user name");
      auth_login_user_ = std::move(*decoded);
      auth_step_ = AuthStep::kLoginPassword;
      out_.append("334 UGFzc3dvcmQ6\r\n");  // "Password:"
      return;
    case AuthStep::kLoginPassword:
      return checkLogin("LOGIN", std::move(auth_login_user_), std::move(*decoded));
    case AuthStep::kNone:
      break;
  }
}

void Session::checkLogin(const char* mechanism, std::string user, std::string password) {
  auth_login_user_.clear();
  if (checks_running.fetch_add(1) >= kMaxChecks) {
    checks_running.fetch_sub(1);
    OPENSSL_cleanse(password.data(), password.size());
    log(spdlog::level::warn, "auth_busy");
    return error(454, "4.7.0", "Too many authentications in progress; try again later");
  }
  const UserEntry* entry = config_->auth.users->find(user);
  auto* check = new AuthCheck;
  check->req.data = check;
  check->session = this;
  check->user = std::move(user);
  check->password = std::move(password);
  if (entry != nullptr) check->hash = entry->hash;  // "": the decoy, on the pool thread
  check->mechanism = mechanism;
  auth_checking_ = true;
  pauseReading();
  ++refs_;  // the check's callback comes back to this session
  const int rc = uv_queue_work(
      host_.loop(), &check->req,
      [](uv_work_t* req) {
        auto* c = static_cast<AuthCheck*>(req->data);
        c->ok = c->hash.empty() ? (checkPassword(c->password, decoyHash()), false)
                                : checkPassword(c->password, c->hash);
        OPENSSL_cleanse(c->password.data(), c->password.size());
      },
      [](uv_work_t* req, int status) {
        std::unique_ptr<AuthCheck> c(static_cast<AuthCheck*>(req->data));
        checks_running.fetch_sub(1);
        c->session->checked(c->mechanism, c->user, status == 0 && c->ok);
      });
  if (rc != 0) {
    checks_running.fetch_sub(1);
    delete check;
    auth_checking_ = false;
    --refs_;
    resumeReading();
    reply(454, "4.7.0", "Temporary authentication failure");
  }
}

void Session::checked(const char* mechanism, const std::string& user, bool ok) {
  auth_checking_ = false;
  if (closing_) return unref();
  const UserEntry* entry = config_->auth.users->find(user);
  if (ok && entry != nullptr) {
    auth_user_ = user;
    auth_entry_ = entry;
    auth_mechanism_ = mechanism;
    ++host_.metrics().auth_ok;
    log(spdlog::level::info, "auth", {{"user", user}, {"mechanism", mechanism}, {"result", "ok"}});
    reply(235, "2.7.0", "Authentication successful");
  } else {
    authFailed(mechanism, user, "bad credentials");
  }
  processInput();
  flushOutput();
  resumeReading();
  unref();
}

void Session::authFailed(const char* mechanism, const std::string& user, const char* why) {
  const AuthConfig& a = config_->auth;
  host_.authThrottle().failed(client_, monotonicMs(),
                              static_cast<uint64_t>(a.failure_window * 1000));
  ++host_.metrics().auth_failures;
  log(spdlog::level::warn, "auth",
      {{"user", user}, {"mechanism", mechanism}, {"result", "failed"}, {"why", why}});
  error(535, "5.7.8", "Authentication credentials invalid");
}

}  // namespace postern
