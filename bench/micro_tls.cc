// Micro-benchmarks of a TLS 1.3 server handshake as the relay runs it (TlsContext and
// TlsConnection over memory BIOs, session tickets on), with no socket: the server's CPU
// time alone, against the public-key operations the same handshake cannot do without,
// timed in the same run. The gap between the two is OpenSSL's own work per handshake (the
// key schedule, the transcript, its algorithm lookups and allocations), the floor under
// what bench/tls_bench.py measures end to end, where the kernel's round trips add to it.
//
// The certificates are made in memory at the first run (P-256 and RSA-2048, self-signed)
// and written to a temporary directory, since TlsContext loads PEM files as the relay does.
#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "core/assert.h"
#include "core/tls.h"
#include "core/tls_tickets.h"

namespace postern {
namespace {

double threadCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

// Writes key and a self-signed certificate for it as PEM files: returns their paths.
std::pair<std::string, std::string> writePair(const std::string& dir, const char* name,
                                              EVP_PKEY* key) {
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_set_pubkey(cert, key);
  X509_NAME* subject = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("relay.bench.test"), -1, -1, 0);
  X509_set_issuer_name(cert, subject);
  POSTERN_ASSERT(X509_sign(cert, key, EVP_sha256()) > 0);
  std::string cert_path = dir + "/" + name + ".crt";
  std::string key_path = dir + "/" + name + ".key";
  FILE* f = fopen(cert_path.c_str(), "w");
  POSTERN_ASSERT(f != nullptr && PEM_write_X509(f, cert) == 1);
  fclose(f);
  f = fopen(key_path.c_str(), "w");
  POSTERN_ASSERT(f != nullptr &&
                 PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  fclose(f);
  X509_free(cert);
  return {cert_path, key_path};
}

struct Keys {
  EVP_PKEY* ecdsa = EVP_EC_gen("P-256");
  EVP_PKEY* rsa = EVP_RSA_gen(2048);
  std::unique_ptr<TlsContext> both;      // RSA and ECDSA: clients that take ECDSA get it
  std::unique_ptr<TlsContext> rsa_only;  // for the RSA row
  std::unique_ptr<TlsContext> no_tickets;
  std::unique_ptr<TlsContext> client;

  Keys() {
    char tmpl[] = "/tmp/postern-bench-tls.XXXXXX";
    POSTERN_ASSERT(mkdtemp(tmpl) != nullptr);
    std::string dir = tmpl;
    auto [ec_cert, ec_key] = writePair(dir, "ecdsa", ecdsa);
    auto [rsa_cert, rsa_key] = writePair(dir, "rsa", rsa);
    // The relay's default: tickets on, keys shared by every context (relay/reload.cc).
    auto tickets = std::make_shared<TicketKeys>(std::chrono::seconds(7200));
    both = std::move(*TlsContext::create(rsa_cert, rsa_key, ec_cert, ec_key, tickets));
    rsa_only = std::move(*TlsContext::create(rsa_cert, rsa_key, "", "", tickets));
    no_tickets = std::move(*TlsContext::create(rsa_cert, rsa_key, ec_cert, ec_key, nullptr));
    client = std::move(*TlsContext::createUnverifiedClient());
    for (const std::string& p : {ec_cert, ec_key, rsa_cert, rsa_key}) unlink(p.c_str());
    rmdir(dir.c_str());
  }
};

Keys& keys() {
  static Keys k;
  return k;
}

// Moves what one side wrote to the other.
void pass(TlsConnection& from, TlsConnection& to) {
  std::string wire;
  from.takeCipher(wire);
  if (!wire.empty()) to.feedCipher(wire.data(), wire.size());
}

// One handshake; returns the server's CPU seconds (its TlsConnection made, every handshake
// step, its first reply with the ticket, freed). resume: the client offers it.
double serverHandshake(const TlsContext& server_ctx, const TlsSession& resume,
                       TlsSession* session_out) {
  TlsConnection client(*keys().client, TlsConnection::Side::kClient);
  client.resume(resume);
  double t0 = threadCpuSeconds();
  auto server = std::make_unique<TlsConnection>(server_ctx, TlsConnection::Side::kServer);
  double spent = threadCpuSeconds() - t0;
  bool server_done = false;
  bool client_done = false;
  for (int step = 0; step < 6 && !(server_done && client_done); ++step) {
    if (!client_done) client_done = *client.handshake();
    pass(client, *server);
    t0 = threadCpuSeconds();
    if (!server_done) server_done = *server->handshake();
    spent += threadCpuSeconds() - t0;
    pass(*server, client);
  }
  POSTERN_ASSERT(server_done && client_done);
  // The server's first reply: OpenSSL writes the session ticket with it.
  t0 = threadCpuSeconds();
  POSTERN_ASSERT(server->writePlain("250 relay.bench.test\r\n"));
  spent += threadCpuSeconds() - t0;
  pass(*server, client);
  char reply[64];
  POSTERN_ASSERT(client.readPlain(reply, sizeof reply).value_or(0) > 0);
  if (session_out != nullptr) *session_out = client.resumable();
  POSTERN_ASSERT(!resume || server->resumed());
  t0 = threadCpuSeconds();
  server.reset();
  spent += threadCpuSeconds() - t0;
  return spent;
}

void runHandshakes(benchmark::State& state, const TlsContext& server_ctx, bool resumed) {
  TlsSession session;
  if (resumed) serverHandshake(server_ctx, nullptr, &session);
  for (auto _ : state) {
    // A session offered once is spent (OpenSSL marks it not resumable when the client's
    // connection is freed without a close_notify): each resumes with the one before's.
    state.SetIterationTime(serverHandshake(server_ctx, session, resumed ? &session : nullptr));
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_TlsServerHandshake_Ecdsa(benchmark::State& state) {
  runHandshakes(state, *keys().both, false);
}
BENCHMARK(BM_TlsServerHandshake_Ecdsa)->UseManualTime();

// session_lifetime = 0: what issuing a ticket costs.
void BM_TlsServerHandshake_EcdsaNoTicket(benchmark::State& state) {
  runHandshakes(state, *keys().no_tickets, false);
}
BENCHMARK(BM_TlsServerHandshake_EcdsaNoTicket)->UseManualTime();

void BM_TlsServerHandshake_Rsa(benchmark::State& state) {
  runHandshakes(state, *keys().rsa_only, false);
}
BENCHMARK(BM_TlsServerHandshake_Rsa)->UseManualTime();

void BM_TlsServerHandshake_Resumed(benchmark::State& state) {
  runHandshakes(state, *keys().both, true);
}
BENCHMARK(BM_TlsServerHandshake_Resumed)->UseManualTime();

// The server's public-key work in one full TLS 1.3 handshake: an X25519 key pair and one
// key agreement, and (unless resumed) a CertificateVerify signature over a SHA-256 digest.
void x25519KeyExchange(EVP_PKEY* peer) {
  EVP_PKEY* mine = EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519");
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(mine, nullptr);
  unsigned char secret[32];
  size_t len = sizeof secret;
  POSTERN_ASSERT(EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
                 EVP_PKEY_derive(ctx, secret, &len) == 1);
  benchmark::DoNotOptimize(secret);
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(mine);
}

void sign(EVP_PKEY* key, bool pss) {
  unsigned char content[130] = {};  // 64 spaces, a context string, the transcript hash
  unsigned char sig[512];
  size_t len = sizeof sig;
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  POSTERN_ASSERT(EVP_DigestSignInit(md, &pctx, EVP_sha256(), nullptr, key) == 1);
  if (pss) EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
  POSTERN_ASSERT(EVP_DigestSign(md, sig, &len, content, sizeof content) == 1);
  benchmark::DoNotOptimize(sig);
  EVP_MD_CTX_free(md);
}

void runCrypto(benchmark::State& state, EVP_PKEY* key, bool pss) {
  EVP_PKEY* peer = EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519");
  for (auto _ : state) {
    x25519KeyExchange(peer);
    if (key != nullptr) sign(key, pss);
  }
  EVP_PKEY_free(peer);
  state.SetItemsProcessed(state.iterations());
}

void BM_TlsCrypto_Ecdsa(benchmark::State& state) { runCrypto(state, keys().ecdsa, false); }
BENCHMARK(BM_TlsCrypto_Ecdsa);

void BM_TlsCrypto_Rsa(benchmark::State& state) { runCrypto(state, keys().rsa, true); }
BENCHMARK(BM_TlsCrypto_Rsa);

void BM_TlsCrypto_Resumed(benchmark::State& state) { runCrypto(state, nullptr, false); }
BENCHMARK(BM_TlsCrypto_Resumed);

}  // namespace
}  // namespace postern
