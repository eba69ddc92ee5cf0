#!/usr/bin/env bash
# bench/milter.sh BUILD_DIR [--rounds N] [options]: what an accept-all milter costs Postern.
#
# Alternates, for N rounds (default 3), the same end-to-end run without a milter and with
# one [[milter]] (postern-milter-sink, bench/milter_sink.cc: CONTINUE to every step), on
# 127.0.0.1: postern-load source (100 connections, 60,000 messages of 1 KB, capped at
# 10 s) -> Postern -> postern-load sink. Reports delivered/s, accepted/s, accept p99 and
# relay CPU ms/msg per run, their medians and the ratios milter/none, and any milter
# warnings in the relay's log; Markdown on stdout and in BUILD_DIR/bench-milter.md. Runs of
# about 2 s (none) and 8 s (milter), under a minute for 3 rounds on the 2-core development
# machine.
#
# Needs postern, postern-load and postern-milter-sink in BUILD_DIR, and python3; the work
# is done by bench/milter_bench.py with bench/e2e_bench.py's runs (`--help` lists the
# options).
set -euo pipefail

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 BUILD_DIR [--rounds N] [--messages N] [--concurrency C] [--size BYTES]" \
    "[--timeout S] [--keep] ..." >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 "$HERE/milter_bench.py" "$@"
