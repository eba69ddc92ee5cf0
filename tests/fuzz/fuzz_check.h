// FUZZ_CHECK: an invariant of a fuzz target. On failure it names the condition and line
// on stderr, then traps, so libFuzzer records the input as a crash with a readable cause
// (a bare __builtin_trap() gets merged by the optimiser and loses its line).
#pragma once

#include <cstdio>

#define FUZZ_CHECK(cond)                                                                     \
  do {                                                                                       \
    if (!(cond)) [[unlikely]] {                                                              \
      std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      __builtin_trap();                                                                      \
    }                                                                                        \
  } while (0)
