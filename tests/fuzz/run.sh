#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) in BUILD_DIR and runs them side by side
# for SECONDS of wall time, each on a copy of its seed corpus, so fuzzing never writes
# into tests/fuzz/corpus/.
#
# usage: tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
#
# Prints the executions each target reached. Exits non-zero if any target crashed (ASan,
# UBSan, a broken FUZZ_CHECK invariant, a timeout or running out of memory); the
# reproducer is kept as BUILD_DIR/artifacts/<target>-crash-*, printed in hex, and can be
# replayed with `BUILD_DIR/<target> <file>`.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
  exit 2
fi
build=$(realpath -m "$1")
seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(auth_fuzz command_fuzz data_reader_fuzz milter_fuzz proxy_fuzz spool_fuzz sts_fuzz)

mkdir -p "$build"
if ! cmake -S "$here" -B "$build" -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  exit 1
fi
cmake --build "$build" -j "$(nproc)" -- --no-print-directory >/dev/null

# Longest input per target: DATA streams long enough for lines over 1000 octets; the
# largest PROXY v2 header (16 + 4096 octets) and a little more.
declare -A max_len=([auth_fuzz]=1024 [command_fuzz]=1024 [data_reader_fuzz]=8192 [milter_fuzz]=4096 [proxy_fuzz]=4400
  [spool_fuzz]=8192 [sts_fuzz]=4096)

mkdir -p "$build/artifacts"
declare -A pid
for target in "${targets[@]}"; do
  work=$build/corpus-work/${target%_fuzz}
  rm -rf "$work"
  mkdir -p "$work"
  cp -r "$here/corpus/${target%_fuzz}/." "$work/"
  "$build/$target" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
    -max_len="${max_len[$target]:-4096}" -artifact_prefix="$build/artifacts/$target-" \
    "$work" >"$build/$target.log" 2>&1 &
  pid[$target]=$!
done

failed=()
for target in "${targets[@]}"; do
  rc=0
  wait "${pid[$target]}" || rc=$?
  log=$build/$target.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  if [[ $rc -eq 0 ]]; then
    printf '%-18s ok      %11s executions in %ss (%s/s)\n' "$target" "${execs:-?}" "$seconds" \
      "${rate:-?}"
    continue
  fi
  failed+=("$target")
  printf '%-18s FAILED  exit %d after %s executions; log: %s\n' "$target" "$rc" "${execs:-?}" \
    "$log"
  grep -E 'fuzz invariant failed|==[0-9]+==ERROR|runtime error|^SUMMARY' "$log" | head -n 5 || true
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  if [[ -n $artifact && -f $artifact ]]; then
    echo "  reproducer: $artifact"
    od -A d -c "$artifact" | head -n 12 | sed 's/^/    /'
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: ${#failed[@]} target(s) crashed: ${failed[*]}"
  exit 1
fi
