// TicketKeys: the keys that seal TLS session tickets (RFC 8446 §4.6.1, RFC 5077 for TLS
// 1.2), so that a returning client resumes its session with a cheap abbreviated handshake
// instead of a full one (no signature, no certificate).
//
// One set serves the whole process: every worker's connections and every context a reload
// makes (a ticket from a connection on worker 0 resumes on worker 1, and after a SIGHUP).
// A key seals tickets for one lifetime, then only opens them for one lifetime more (such a
// ticket is renewed with the new key), then is forgotten; OpenSSL itself refuses a session
// older than its lifetime (SSL_CTX_set_timeout). Keys are random, made in memory, never
// written anywhere: a restart makes every client do one full handshake again.
//
// OpenSSL calls open() and seal() from whichever worker thread runs the handshake; a mutex
// guards the keys (held for a copy of 80 octets, against a handshake's milliseconds).
#pragma once

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>

namespace postern {

class TicketKeys {
 public:
  using Clock = std::chrono::steady_clock;
  explicit TicketKeys(std::chrono::seconds lifetime);

  // A reload's [tls] session_lifetime; the keys stay.
  void setLifetime(std::chrono::seconds lifetime);
  std::chrono::seconds lifetime() const;

  // Makes ctx (a server context) issue one ticket per handshake, sealed with these keys.
  // The keys must outlive ctx (TlsContext holds a reference).
  void install(SSL_CTX* ctx);

  // Tests: the clock the keys age by, instead of Clock::now().
  void setClockForTest(Clock::time_point (*now)()) { now_ = now; }

 private:
  struct Key {
    std::array<unsigned char, 16> name{};
    std::array<unsigned char, 32> aes{};
    std::array<unsigned char, 32> hmac{};
    Clock::time_point made;
  };
  // OpenSSL's SSL_CTX_set_tlsext_ticket_key_evp_cb contract: enc 1 seals (returns 1),
  // enc 0 opens: 1 with the current key, 2 with the one before (renew the ticket), 0 for
  // an unknown or forgotten key (a full handshake follows), -1 on an error.
  static int callback(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                      EVP_MAC_CTX* mac, int enc);
  // Under mu_: replaces keys that have served their time.
  void rotate(Clock::time_point now);
  static Key fresh(Clock::time_point now);

  Clock::time_point (*now_)() = &Clock::now;  // before current_, which it makes
  mutable std::mutex mu_;
  std::chrono::seconds lifetime_;
  Key current_;
  Key previous_;
  bool have_previous_ = false;
};

}  // namespace postern
