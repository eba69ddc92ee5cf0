#include "core/tls_tickets.h"

#include <openssl/core_names.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>

#include "core/assert.h"

namespace postern {
namespace {

// Where a server context keeps its TicketKeys for the callback.
int keysIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

}  // namespace

TicketKeys::TicketKeys(std::chrono::seconds lifetime)
    : lifetime_(lifetime), current_(fresh(now_())) {}

void TicketKeys::setLifetime(std::chrono::seconds lifetime) {
  std::lock_guard<std::mutex> lock(mu_);
  lifetime_ = lifetime;
}

std::chrono::seconds TicketKeys::lifetime() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lifetime_;
}

void TicketKeys::install(SSL_CTX* ctx) {
  SSL_CTX_set_ex_data(ctx, keysIndex(), this);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &TicketKeys::callback);
  SSL_CTX_set_timeout(ctx, static_cast<long>(lifetime().count()));
  // One ticket, not OpenSSL's default two: each costs a seal and a copy of the session,
  // and a sender that comes back needs only one.
  SSL_CTX_set_num_tickets(ctx, 1);
}

TicketKeys::Key TicketKeys::fresh(Clock::time_point now) {
  Key k;
  k.made = now;
  const bool ok = RAND_bytes(k.name.data(), k.name.size()) == 1 &&
                  RAND_bytes(k.aes.data(), k.aes.size()) == 1 &&
                  RAND_bytes(k.hmac.data(), k.hmac.size()) == 1;
  POSTERN_ASSERT(ok);  // the process's random source is gone: nothing safe is left to do
  return k;
}

void TicketKeys::rotate(Clock::time_point now) {
  if (now - current_.made < lifetime_) return;
  // The current key has sealed long enough. It may open for one lifetime more, unless it
  // is older than that already (nothing was sealed for a long while).
  have_previous_ = now - current_.made < 2 * lifetime_;
  previous_ = current_;
  current_ = fresh(now);
}

int TicketKeys::callback(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                         EVP_MAC_CTX* mac, int enc) {
  auto* self = static_cast<TicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), keysIndex()));
  if (self == nullptr) return enc ? -1 : 0;
  Key key;
  int found = 1;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    self->rotate(self->now_());
    if (enc) {
      key = self->current_;
    } else if (std::memcmp(name, self->current_.name.data(), key.name.size()) == 0) {
      key = self->current_;
    } else if (self->have_previous_ &&
               std::memcmp(name, self->previous_.name.data(), key.name.size()) == 0) {
      key = self->previous_;
      found = 2;  // opens, but seal a new ticket with the current key
    } else {
      return 0;  // unknown or forgotten: a full handshake
    }
  }
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac.data(), key.hmac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  if (enc) {
    if (RAND_bytes(iv, 16) != 1) return -1;
    std::copy(key.name.begin(), key.name.end(), name);
    if (EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes.data(), iv) != 1) return -1;
  } else if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes.data(), iv) != 1) {
    return -1;
  }
  if (EVP_MAC_CTX_set_params(mac, params) != 1) return -1;
  return found;
}

}  // namespace postern
