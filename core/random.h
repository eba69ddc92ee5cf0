// Unpredictable tokens from the kernel's CSPRNG (getrandom(2)), for values an outsider
// must not guess, such as a notice's MIME boundary (a guessed boundary would let quoted
// content end the MIME part it is quoted in and forge a part of its own).
#pragma once

#include <cstddef>
#include <string>

namespace postern {

// 2 * bytes lower-case hex digits. Never fails: getrandom blocks only until the pool is
// seeded at boot, and it is retried on EINTR.
std::string randomHex(size_t bytes);

}  // namespace postern
