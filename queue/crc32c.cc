#include "queue/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>
#endif

namespace postern {
namespace {

constexpr std::array<uint32_t, 256> makeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr auto kTable = makeTable();

uint32_t crcTable(uint32_t crc, const unsigned char* p, size_t len) {
  while (len--) crc = kTable[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crcHw(uint32_t crc, const unsigned char* p, size_t len) {
  uint64_t c = crc;
  while (len >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    len -= 8;
  }
  auto c32 = static_cast<uint32_t>(c);
  while (len--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

bool haveSse42() {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2);
}
#endif

// GF(2) 32x32 matrices as 32 columns: the operator that appends zero bits to a CRC.
using Matrix = std::array<uint32_t, 32>;

uint32_t times(const Matrix& m, uint32_t v) {
  uint32_t sum = 0;
  for (size_t i = 0; v != 0; v >>= 1, ++i) {
    if (v & 1) sum ^= m[i];
  }
  return sum;
}

Matrix square(const Matrix& m) {
  Matrix out{};
  for (size_t i = 0; i < 32; ++i) out[i] = times(m, m[i]);
  return out;
}

}  // namespace

uint32_t crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  if (len_b == 0) return crc_a;
  Matrix odd{};  // one zero bit
  odd[0] = 0x82F63B78u;
  for (size_t i = 1; i < 32; ++i) odd[i] = 1u << (i - 1);
  Matrix even = square(odd);  // two zero bits
  odd = square(even);         // four
  // Apply len_b zero bytes to crc_a, one bit of len_b at a time (8, 16, 32, ... zero bits).
  do {
    even = square(odd);
    if (len_b & 1) crc_a = times(even, crc_a);
    len_b >>= 1;
    if (len_b == 0) break;
    odd = square(even);
    if (len_b & 1) crc_a = times(odd, crc_a);
    len_b >>= 1;
  } while (len_b != 0);
  return crc_a ^ crc_b;
}

uint32_t crc32c(uint32_t crc, const void* data, size_t len) {
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
#if defined(__x86_64__)
  static const bool hw = haveSse42();
  crc = hw ? crcHw(crc, p, len) : crcTable(crc, p, len);
#else
  crc = crcTable(crc, p, len);
#endif
  return ~crc;
}

}  // namespace postern
