// POSTERN_ASSERT: invariant checks that stay on in release builds, because a broken
// invariant in the spool or session code could otherwise lose mail silently. Failing one
// aborts the process; the spool's recovery then restores every acknowledged message.
#pragma once

#include <cstdio>
#include <cstdlib>

#define POSTERN_ASSERT(cond)                                                            \
  do {                                                                                  \
    if (!(cond)) [[unlikely]] {                                                         \
      std::fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)
