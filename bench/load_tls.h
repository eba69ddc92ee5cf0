// Client-side TLS for postern-load source --starttls (RFC 3207), OpenSSL over memory BIOs
// so the socket stays a plain libuv stream and no OpenSSL call blocks the loop.
//
// LoadTlsContext is one client SSL_CTX for the whole run: TLS 1.2 or later, no
// certificate verification (the benchmark talks to a relay with a self-signed
// certificate; this is a load tool, not a trust decision). LoadTls is one connection:
// feedCipher() takes bytes read from the socket, handshake() and readPlain() consume
// them, writePlain() encrypts, takeCipher() appends what must go to the socket.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

namespace postern {

class LoadTlsContext {
 public:
  // nullptr and err set on failure.
  static std::unique_ptr<LoadTlsContext> create(std::string& err);
  ~LoadTlsContext();
  LoadTlsContext(const LoadTlsContext&) = delete;
  LoadTlsContext& operator=(const LoadTlsContext&) = delete;
  SSL_CTX* get() const { return ctx_; }

 private:
  explicit LoadTlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

class LoadTls {
 public:
  explicit LoadTls(const LoadTlsContext& ctx);
  ~LoadTls();
  LoadTls(const LoadTls&) = delete;
  LoadTls& operator=(const LoadTls&) = delete;

  void feedCipher(const char* data, size_t len);
  // 1: handshake complete; 0: needs more input; -1: failed (see error()).
  int handshake();
  bool established() const { return established_; }
  // Decrypted bytes into dst; 0 when none is available now; -1 on error or close_notify.
  int readPlain(char* dst, size_t cap);
  bool writePlain(std::string_view plain);
  // Appends pending ciphertext for the socket to out.
  void takeCipher(std::string& out);
  const std::string& error() const { return error_; }

 private:
  SSL* ssl_;
  BIO* in_;   // socket -> OpenSSL
  BIO* out_;  // OpenSSL -> socket
  bool established_ = false;
  std::string error_;
};

}  // namespace postern
