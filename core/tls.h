// TLS with OpenSSL over memory BIOs: the socket stays a plain libuv stream, ciphertext is
// moved between it and OpenSSL by a TlsStream (core/tls_stream.h), and no OpenSSL call ever
// blocks the loop.
//
// TlsContext holds the certificate and key (TLS 1.2 or later) for inbound STARTTLS (RFC
// 3207), or for the client side (outbound delivery, postern-load's --starttls) what the peer
// is checked against. TlsConnection is one TLS session, server or client: feedCipher() takes
// bytes read from the socket, handshake() and readPlain() consume them, writePlain()
// encrypts, and takeCipher() returns what must be written to the socket (handshake records
// included). Errors are reported, never thrown.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "core/tls_tickets.h"

namespace postern {

class TlsContext {
 public:
  // A server context from a PEM certificate chain and key, and optionally a second pair
  // whose key is ECDSA (the first's then must not be): OpenSSL serves it to clients that
  // accept ECDSA signatures, the first to the others. tickets: the keys that seal session
  // tickets (shared by every context of the process); nullptr: no tickets, no resumption.
  static Result<std::unique_ptr<TlsContext>> create(const std::string& cert, const std::string& key,
                                                    const std::string& ecdsa_cert = "",
                                                    const std::string& ecdsa_key = "",
                                                    std::shared_ptr<TicketKeys> tickets = nullptr);
  // A client context that does not verify the peer: only for the load tool, which talks
  // to relays with self-signed test certificates.
  static Result<std::unique_ptr<TlsContext>> createUnverifiedClient();
  // A client context for outbound STARTTLS that verifies the peer's chain against ca_file
  // (PEM), or the system's store when ca_file is empty. The name is checked per connection
  // (TlsConnection::expectPeer).
  static Result<std::unique_ptr<TlsContext>> createVerifyingClient(const std::string& ca_file);
  // A client context for DANE (RFC 7672): the peer is checked against the TLSA records
  // given per connection (TlsConnection::expectDane), not against any CA store.
  static Result<std::unique_ptr<TlsContext>> createDaneClient();
  ~TlsContext();
  SSL_CTX* get() const { return ctx_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
  std::shared_ptr<TicketKeys> tickets_;  // the callback's, kept as long as ctx_
};

// The contexts a configuration's files make (relay/reload.h loadReferencedFiles), read
// once on the main thread and shared by every worker: OpenSSL contexts may be used from
// several threads once set up, and a connection keeps its context alive (SSL_new takes a
// reference), so a reload can swap them under open connections.
struct TlsContexts {
  std::shared_ptr<const TlsContext> server;     // inbound STARTTLS; nullptr: not offered
  std::shared_ptr<const TlsContext> verifying;  // routes with tls = "required"; else nullptr
  std::shared_ptr<TicketKeys> tickets;          // the server's, kept across reloads
};

// A client's TLS session, kept to resume the next connection to the same server.
using TlsSession = std::shared_ptr<SSL_SESSION>;

class TlsConnection {
 public:
  enum class Side { kServer, kClient };
  explicit TlsConnection(const TlsContext& ctx, Side side = Side::kServer);
  ~TlsConnection();
  TlsConnection(const TlsConnection&) = delete;
  TlsConnection& operator=(const TlsConnection&) = delete;

  // Client side: sends host as SNI (unless it is an IP address) and, if verify, makes the
  // handshake fail unless the certificate is valid for host.
  void expectPeer(const std::string& host, bool verify);
  // DANE: the peer must match one of these TLSA records (usage, selector, matching type,
  // data), DANE-TA(2) with host's name, DANE-EE(3) without names (RFC 7672 §3.1.1).
  // Records of other usages are unusable for SMTP and left out; false when none is
  // usable (the connection then verifies nothing: the caller decides).
  struct Tlsa {
    uint8_t usage, selector, mtype;
    std::string_view data;
  };
  bool expectDane(const std::string& host, const std::vector<Tlsa>& records);
  // As expectPeer(host, true) on a verifying context, but the handshake goes on whatever
  // the result (MTA-STS testing mode): verifyError() tells it afterwards.
  void checkPeer(const std::string& host);
  // After the handshake: the chain and name check's X509_V_* result (X509_V_OK: passed).
  long verifyError() const { return SSL_get_verify_result(ssl_); }
  // After the handshake: "dane-ee", "dane-ta" (what authenticated the peer) or "".
  std::string daneAuthority() const;

  // Client side, before the handshake: offers session (from an earlier connection to the
  // same server with the same context) for an abbreviated handshake; nullptr: none.
  void resume(const TlsSession& session);
  // The session to offer next time, once the server has sent a ticket (in TLS 1.3 that is
  // after the handshake, before its first reply); nullptr while there is none.
  TlsSession resumable() const;
  // The handshake resumed a session (no certificate, no signature).
  bool resumed() const;

  void feedCipher(const char* data, size_t len);
  // Ciphertext fed and not yet taken by a handshake step or readPlain().
  size_t pendingCipher() const { return BIO_ctrl_pending(in_); }
  // true: the handshake is complete; false: it needs more input.
  Result<bool> handshake();
  bool established() const { return established_; }
  // The protocol agreed is TLS 1.3 (in which the server's last flight comes before the
  // client's Finished, so nothing it writes after the handshake is awaited).
  bool tls13() const { return SSL_version(ssl_) == TLS1_3_VERSION; }
  // Decrypted octets into dst: how many (0 when none is available now). Fails on a bad
  // record or the peer's close_notify ("closed by peer").
  Result<size_t> readPlain(char* dst, size_t cap);
  bool writePlain(std::string_view plain);
  // Queues a close_notify alert (the peer's readPlain then fails with "closed by peer").
  void shutdown();
  // Appends pending ciphertext for the socket to out.
  void takeCipher(std::string& out);

  std::string error() const { return error_; }
  std::string describe() const;  // "TLSv1.3 TLS_AES_256_GCM_SHA384", then " resumed" if so

 private:
  SSL* ssl_;
  BIO* in_;   // socket -> OpenSSL
  BIO* out_;  // OpenSSL -> socket
  bool established_ = false;
  std::string error_;
};

}  // namespace postern
