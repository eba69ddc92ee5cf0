// CRC32C (Castagnoli), used to detect torn or corrupt spool records. Uses the SSE4.2
// instruction when the CPU has it and a table otherwise (Debian 12 ships no crc32c
// library; this is the standard reflected polynomial 0x82F63B78).
#pragma once

#include <cstddef>
#include <cstdint>

namespace postern {

uint32_t crc32c(uint32_t crc, const void* data, size_t len);

// The CRC of A followed by B from crc32c(0, A), crc32c(0, B) and B's length (zlib's
// crc32_combine method, for this polynomial): a body spilled to a file while it arrives
// is checksummed as it goes and joined to its record head, which is only known at the end.
uint32_t crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

}  // namespace postern
