#!/usr/bin/env bash
# bench/e2e.sh BUILD_DIR [--quick] [options]: the end-to-end benchmark behind `make bench`.
#
# Measures the whole relay on loopback, Postern and a private Postfix instance side by side
# in the same run: msgs/s accepted and delivered, accept latency p50/p99/p99.9, relay CPU
# per message and peak memory, for concurrency 1, 10, 100, 1000 x messages of 1 KB and
# 100 KB, plus the same source feeding the sink directly (the "direct" baseline), one
# STARTTLS row, and the memory cost of 10,000 idle connections. Writes a Markdown report to
# stdout and to BUILD_DIR/bench-e2e.md. Every run is bounded (message count, 30 s source
# timeout, 30 s drain) and the whole script by --budget (900 s; runs that would not fit
# are skipped and reported). The full matrix takes about 3-4 minutes on the 2-core
# development machine, --quick (3 cells, a fifth of the messages, 2,000 idle
# connections) under a minute.
#
# Needs postern and postern-load in BUILD_DIR, python3, openssl, and for the Postfix rows
# the postfix package and root (the instance runs from a temporary directory with the
# templates in bench/postfix/, never /etc/postfix, never port 25). The work is done by
# bench/e2e_bench.py (`--help` lists the options); this wrapper raises the open-files
# limit, which the relay and the idle-connection client started from here inherit.
set -euo pipefail

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 BUILD_DIR [--quick] [--no-postfix] [--no-direct] [--no-tls] [--no-idle]" \
    "[--scale F] [--keep] ..." >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)

# 10,000 idle connections plus 1,000-connection runs need far more than the usual 1024.
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 65536 ]; then
  ulimit -Hn 65536 2>/dev/null || true
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

exec python3 "$HERE/e2e_bench.py" "$@"
