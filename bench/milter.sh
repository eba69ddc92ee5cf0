#!/usr/bin/env bash
# bench/milter.sh BUILD_DIR [--rounds N] [--no-postfix] [options]: what an accept-all
# milter costs Postern, and Postfix with the same milter for comparison.
#
# Alternates, for N rounds (default 3), the same end-to-end run without a milter and with
# one milter (postern-milter-sink, bench/milter_sink.cc: CONTINUE to every step), on
# 127.0.0.1: postern-load source (100 connections, 1 KB messages, capped at 10 s) -> relay
# -> postern-load sink; each round does Postern (60,000 messages; [[milter]] with
# default_action "tempfail") and then, unless --no-postfix, a private Postfix instance
# from bench/postfix/ (5,000 messages; smtpd_milters = inet:127.0.0.1:PORT,
# milter_default_action = tempfail, milter_protocol = 6). Reports delivered/s,
# accepted/s, accept p99 and relay CPU ms/msg per run (the milter sink's CPU apart), their
# medians, the ratios milter/none for each system and Postern/Postfix with the milter, and
# any milter warnings in the relays' logs; Markdown on stdout and in
# BUILD_DIR/bench-milter.md. Fails (exit 1) if in a milter run the sink read less than half
# a message per accepted message (every body goes to it). Runs of about 2 s (Postern, none),
# 8 s (Postern, milter), 5 s and 7 s (Postfix): about 2 minutes for 3 rounds on the 2-core
# development machine.
#
# Needs postern, postern-load and postern-milter-sink in BUILD_DIR, and python3; for the
# Postfix rows the postfix package and root (as bench/e2e.sh). The work is done by
# bench/milter_bench.py with bench/e2e_bench.py's runs (`--help` lists the options).
set -euo pipefail

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 BUILD_DIR [--rounds N] [--no-postfix] [--messages N] [--postfix-messages N]" \
    "[--concurrency C] [--size BYTES] [--timeout S] [--keep] ..." >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 "$HERE/milter_bench.py" "$@"
