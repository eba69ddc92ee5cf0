#include "core/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace postern {
namespace {

std::string lastError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

// Loads one certificate chain and its key into ctx, into the slot of the key's type.
// Returns whether the key is ECDSA.
Result<bool> loadPair(SSL_CTX* ctx, const std::string& cert, const std::string& key) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    return fail(cert + ": " + lastError());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return fail(key + ": " + lastError());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) return fail(key + ": does not match the certificate");
  return EVP_PKEY_is_a(SSL_CTX_get0_privatekey(ctx), "EC") == 1;
}

}  // namespace

Result<std::unique_ptr<TlsContext>> TlsContext::create(const std::string& cert,
                                                       const std::string& key,
                                                       const std::string& ecdsa_cert,
                                                       const std::string& ecdsa_key,
                                                       std::shared_ptr<TicketKeys> tickets) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return fail(lastError());
  std::unique_ptr<TlsContext> out(new TlsContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  Result<bool> first = loadPair(ctx, cert, key);
  if (!first) return fail(first.error());
  if (!ecdsa_cert.empty()) {
    if (*first) return fail(key + ": an ECDSA key; with ecdsa_certificate set it must be RSA");
    Result<bool> second = loadPair(ctx, ecdsa_cert, ecdsa_key);
    if (!second) return fail(second.error());
    if (!*second) return fail(ecdsa_key + ": not an ECDSA key");
  }
  // Resumption is by tickets alone (stateless, whichever worker the client comes back to):
  // no server-side cache, which would take a lock per handshake and hold sessions.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (tickets) {
    tickets->install(ctx);
    out->tickets_ = std::move(tickets);
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  return out;
}

Result<std::unique_ptr<TlsContext>> TlsContext::createUnverifiedClient() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return fail(lastError());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  return std::unique_ptr<TlsContext>(new TlsContext(ctx));
}

Result<std::unique_ptr<TlsContext>> TlsContext::createVerifyingClient(const std::string& ca_file) {
  Result<std::unique_ptr<TlsContext>> out = createUnverifiedClient();
  if (!out) return out;
  SSL_CTX* ctx = (*out)->get();
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  int ok = ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                           : SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr);
  if (ok != 1) {
    return fail((ca_file.empty() ? std::string("system CA store") : ca_file) + ": " + lastError());
  }
  return out;
}

Result<std::unique_ptr<TlsContext>> TlsContext::createDaneClient() {
  Result<std::unique_ptr<TlsContext>> out = createUnverifiedClient();
  if (!out) return out;
  SSL_CTX* ctx = (*out)->get();
  if (SSL_CTX_dane_enable(ctx) <= 0) return fail("DANE: " + lastError());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  return out;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

TlsConnection::TlsConnection(const TlsContext& ctx, Side side)
    : ssl_(SSL_new(ctx.get())), in_(BIO_new(BIO_s_mem())), out_(BIO_new(BIO_s_mem())) {
  // An empty memory BIO means "try again later", not end of file.
  BIO_set_mem_eof_return(in_, -1);
  BIO_set_mem_eof_return(out_, -1);
  SSL_set_bio(ssl_, in_, out_);  // ssl_ owns both BIOs now
  if (side == Side::kServer) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
  }
}

TlsConnection::~TlsConnection() { SSL_free(ssl_); }

void TlsConnection::expectPeer(const std::string& host, bool verify) {
  in6_addr ip6;
  in_addr ip4;
  const bool is_ip =
      inet_pton(AF_INET, host.c_str(), &ip4) == 1 || inet_pton(AF_INET6, host.c_str(), &ip6) == 1;
  if (!is_ip) SSL_set_tlsext_host_name(ssl_, host.c_str());
  if (!verify) return;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
  if (is_ip) {
    X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
  } else {
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
  }
}

void TlsConnection::checkPeer(const std::string& host) {
  expectPeer(host, true);
  SSL_set_verify(ssl_, SSL_VERIFY_NONE, nullptr);
}

bool TlsConnection::expectDane(const std::string& host, const std::vector<Tlsa>& records) {
  if (SSL_dane_enable(ssl_, host.c_str()) <= 0) return false;  // also the SNI name
  SSL_dane_set_flags(ssl_, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
  bool usable = false;
  for (const Tlsa& t : records) {
    if (t.usage != 2 && t.usage != 3) continue;  // PKIX-TA/EE: unusable in SMTP (§3.1.3)
    usable |=
        SSL_dane_tlsa_add(ssl_, t.usage, t.selector, t.mtype,
                          reinterpret_cast<const unsigned char*>(t.data.data()), t.data.size()) > 0;
  }
  if (!usable) SSL_set_verify(ssl_, SSL_VERIFY_NONE, nullptr);
  return usable;
}

std::string TlsConnection::daneAuthority() const {
  uint8_t usage = 0, selector = 0, mtype = 0;
  if (SSL_get0_dane_tlsa(ssl_, &usage, &selector, &mtype, nullptr, nullptr) < 0) return "";
  return usage == 3 ? "dane-ee" : usage == 2 ? "dane-ta" : "";
}

void TlsConnection::feedCipher(const char* data, size_t len) {
  BIO_write(in_, data, static_cast<int>(len));
}

Result<bool> TlsConnection::handshake() {
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    established_ = true;
    return true;
  }
  int e = SSL_get_error(ssl_, rc);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return false;
  error_ = lastError();
  long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) error_ += std::string(": ") + X509_verify_cert_error_string(verify);
  return fail(error_);
}

Result<size_t> TlsConnection::readPlain(char* dst, size_t cap) {
  int n = SSL_read(ssl_, dst, static_cast<int>(cap));
  if (n > 0) return static_cast<size_t>(n);
  int e = SSL_get_error(ssl_, n);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return size_t{0};
  error_ = e == SSL_ERROR_ZERO_RETURN ? "closed by peer" : lastError();
  return fail(error_);
}

bool TlsConnection::writePlain(std::string_view plain) {
  if (plain.empty()) return true;
  int n = SSL_write(ssl_, plain.data(), static_cast<int>(plain.size()));
  if (n == static_cast<int>(plain.size())) return true;
  error_ = lastError();
  return false;
}

void TlsConnection::shutdown() {
  // With memory BIOs this only writes the alert; the peer's answer is not waited for.
  if (SSL_shutdown(ssl_) < 0) ERR_clear_error();  // before the handshake: nothing to close
}

void TlsConnection::takeCipher(std::string& out) {
  char buf[16384];
  int n;
  while ((n = BIO_read(out_, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
}

void TlsConnection::resume(const TlsSession& session) {
  if (session) SSL_set_session(ssl_, session.get());
}

TlsSession TlsConnection::resumable() const {
  SSL_SESSION* s = SSL_get0_session(ssl_);
  if (s == nullptr || SSL_SESSION_is_resumable(s) != 1) return nullptr;
  // A copy: OpenSSL marks a connection's own session not resumable when the connection is
  // freed without a close_notify, which is how SMTP connections end (QUIT, then close).
  SSL_SESSION* copy = SSL_SESSION_dup(s);
  if (copy == nullptr) return nullptr;
  return TlsSession(copy, SSL_SESSION_free);
}

bool TlsConnection::resumed() const { return SSL_session_reused(ssl_) == 1; }

std::string TlsConnection::describe() const {
  return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_) +
         (resumed() ? " resumed" : "");
}

}  // namespace postern
