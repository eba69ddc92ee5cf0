// Micro-benchmarks of the spool record codec: encodeMessage, decodeRecord (both CRC32C the
// whole record) and crc32c alone, on 1 KiB and 100 KiB bodies. Baselines: memcpy of the
// same octets (BM_MemcpyRecord here for records, BM_Memcpy in micro_lines.cc for bodies).
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "queue/crc32c.h"
#include "queue/envelope.h"
#include "queue/record.h"

namespace postern {

std::string microBenchBody(size_t bytes);  // micro_lines.cc

namespace {

// A typical envelope: three recipients, DSN parameters on the first.
Envelope makeEnvelope() {
  Envelope env;
  env.id = 0x0123456789ABCDEFull;
  env.received_ms = 1715671267000;
  env.sender = "john.doe+newsletter@example.org";
  env.recipients = {"alice@example.com", "bob.smith@sub.example.net", "carol@example.com"};
  env.dsn_ret = "HDRS";
  env.dsn_envid = "QQ314159";
  env.dsn_notify = {"SUCCESS,FAILURE", "", ""};
  env.dsn_orcpt = {"rfc822;alice@example.com", "", ""};
  return env;
}

constexpr uint64_t kSalt = 0x0123456789abcdefull;

std::string makeRecord(size_t body_size) {
  std::string rec;
  size_t body_offset = 0;
  encodeMessage(rec, makeEnvelope(), microBenchBody(body_size), body_offset, kSalt);
  return rec;
}

void BM_EncodeMessage(benchmark::State& state) {
  const std::string body = microBenchBody(static_cast<size_t>(state.range(0)));
  const Envelope env = makeEnvelope();
  std::string out;
  out.reserve(body.size() + 1024);
  size_t body_offset = 0;
  for (auto _ : state) {
    out.clear();  // keeps the capacity: the spool's per-batch buffer would be reused too
    encodeMessage(out, env, body, body_offset, kSalt);
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(body_offset);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * out.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_EncodeMessage)->Arg(1024)->Arg(100 * 1024);

void BM_DecodeRecord(benchmark::State& state) {
  const std::string rec = makeRecord(static_cast<size_t>(state.range(0)));
  if (readRecord(rec, kSalt).status != RecordStatus::kOk) {
    state.SkipWithError("record does not decode");
    return;
  }
  for (auto _ : state) {
    auto decoded = readRecord(rec, kSalt);
    benchmark::DoNotOptimize(decoded);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * rec.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_DecodeRecord)->Arg(1024)->Arg(100 * 1024);

// Baseline for encode/decode: memcpy of a whole record's octets.
void BM_MemcpyRecord(benchmark::State& state) {
  const std::string rec = makeRecord(static_cast<size_t>(state.range(0)));
  std::string dst(rec.size(), '\0');
  for (auto _ : state) {
    std::memcpy(dst.data(), rec.data(), rec.size());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * rec.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_MemcpyRecord)->Arg(1024)->Arg(100 * 1024);

void BM_Crc32c(benchmark::State& state) {
  const std::string body = microBenchBody(static_cast<size_t>(state.range(0)));
  if (crc32c(0, "123456789", 9) != 0xE3069283u) {  // the standard CRC-32C check value
    state.SkipWithError("crc32c check value");
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(body.data());
    uint32_t crc = crc32c(0, body.data(), body.size());
    benchmark::DoNotOptimize(crc);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_Crc32c)->Arg(1024)->Arg(100 * 1024);

}  // namespace
}  // namespace postern
