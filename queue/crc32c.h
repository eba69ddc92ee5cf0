// CRC32C (Castagnoli), used to detect torn or corrupt spool records. Uses the SSE4.2
// instruction when the CPU has it and a table otherwise (Debian 12 ships no crc32c
// library; this is the standard reflected polynomial 0x82F63B78).
#pragma once

#include <cstddef>
#include <cstdint>

namespace postern {

uint32_t crc32c(uint32_t crc, const void* data, size_t len);

}  // namespace postern
