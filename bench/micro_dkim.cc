// DKIM signing's CPU per message (issue 16): feeding a message to DkimHasher in 64 KiB
// pieces (relaxed body canonicalization and SHA-256 as it streams), then the signature,
// for 1 KB and 100 KB and both algorithms. The baseline is the crypto alone, which no
// signer can avoid: SHA-256 over the same octets plus one signature.
#include <benchmark/benchmark.h>
#include <openssl/evp.h>

#include <memory>
#include <string>

#include "core/assert.h"
#include "core/dkim.h"

namespace postern {
namespace {

std::shared_ptr<evp_pkey_st> makeKey(bool rsa) {
  EVP_PKEY* k = rsa ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})
                    : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  POSTERN_ASSERT(k != nullptr);
  return std::shared_ptr<evp_pkey_st>(k, EVP_PKEY_free);
}

const DkimKey& key(bool rsa) {
  static const DkimKey keys[2] = {
      {"example.com", "ed", DkimKey::Algorithm::kEd25519Sha256, dkimDefaultHeaders(),
       makeKey(false)},
      {"example.com", "rsa", DkimKey::Algorithm::kRsaSha256, dkimDefaultHeaders(), makeKey(true)}};
  return keys[rsa ? 1 : 0];
}

std::string message(size_t size) {
  std::string m =
      "Received: from client.test ([127.0.0.1])\r\n\tby relay.test (Postern) with ESMTP id X\r\n"
      "From: Writer <writer@example.com>\r\nTo: reader@far.test\r\nSubject: a benchmark\r\n"
      "Date: Fri, 04 Dec 2026 12:00:00 +0000\r\nMessage-ID: <bench@example.com>\r\n"
      "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n";
  while (m.size() < size)
    m += "A line of text as a message body has it, with words and punctuation.\r\n";
  m.resize(size - 2);
  m += "\r\n";
  return m;
}

void BM_DkimSign(benchmark::State& state) {
  const std::string m = message(static_cast<size_t>(state.range(0)));
  const DkimKey& k = key(state.range(1) != 0);
  for (auto _ : state) {
    DkimHasher h;
    for (size_t off = 0; off < m.size(); off += 65536)
      h.feed(std::string_view(m).substr(off, 65536));
    const auto bh = h.finishBody();
    Result<std::string> field = dkimSign(k, h.headerSection(), bh, 1796392925);
    benchmark::DoNotOptimize(field);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * m.size()));
}
BENCHMARK(BM_DkimSign)->ArgsProduct({{1024, 102400}, {0, 1}});

void BM_DkimCrypto(benchmark::State& state) {
  const std::string m = message(static_cast<size_t>(state.range(0)));
  const DkimKey& k = key(state.range(1) != 0);
  for (auto _ : state) {
    unsigned char digest[32];
    unsigned n = 0;
    EVP_Digest(m.data(), m.size(), digest, &n, EVP_sha256(), nullptr);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    unsigned char sig[512];
    size_t len = sizeof sig;
    EVP_DigestSignInit(ctx, nullptr, state.range(1) ? EVP_sha256() : nullptr, nullptr, k.key.get());
    EVP_DigestSign(ctx, sig, &len, digest, sizeof digest);
    EVP_MD_CTX_free(ctx);
    benchmark::DoNotOptimize(sig);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * m.size()));
}
BENCHMARK(BM_DkimCrypto)->ArgsProduct({{1024, 102400}, {0, 1}});

}  // namespace
}  // namespace postern
