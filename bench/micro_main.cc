// postern-bench: the Google Benchmark micro-benchmarks (bench/micro_*.cc). Run them with
// bench/micro.sh BUILD_DIR, which prints medians against each benchmark's baseline.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
