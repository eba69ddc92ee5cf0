#!/usr/bin/env bash
# deploy/demo.sh BUILD_DIR: the script behind `make demo`.
#
# Starts a verifying sink on 127.0.0.1:2526 and the relay on 127.0.0.1:2525 (the default
# deploy/postern.toml forwards all mail to the sink), sends 10000 messages of 1 KiB over 50
# connections through the relay with postern-load, waits until every message has reached
# the sink, and prints a summary. Every wait is bounded. Whatever the script started is
# stopped on exit: the relay with SIGTERM (it drains), SIGKILL if still running 5 s later.
# Exit status is 0 only if the relay accepted all 10000 messages and the sink received all
# 10000 intact; duplicates are reported but allowed, since delivery is at-least-once.
# Logs stay in the temporary directory when the demo fails.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$1" && pwd)

MESSAGES=10000
CONCURRENCY=50
SIZE=1024
RELAY_HOST=127.0.0.1 RELAY_PORT=2525
SINK_HOST=127.0.0.1 SINK_PORT=2526
SINK_TIMEOUT=120  # seconds, from the sink's start to the last message

for bin in postern postern-load; do
  if [ ! -x "$BUILD/$bin" ]; then
    echo "demo: $BUILD/$bin not found (run make build)" >&2
    exit 1
  fi
done

# True when something accepts TCP connections on host:port.
accepting() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# The value of key=value in a result line ("" if absent).
field() {
  sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"
}

# Someone else's server on our ports would make the figures meaningless.
for addr in "$RELAY_HOST:$RELAY_PORT" "$SINK_HOST:$SINK_PORT"; do
  if accepting "${addr%:*}" "${addr##*:}"; then
    echo "demo: $addr is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/postern-demo.XXXXXX")
relay_pid=""
sink_pid=""

cleanup() {
  local status=$?
  if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
    kill -TERM "$relay_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$relay_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$relay_pid" 2>/dev/null; then
      echo "demo: relay still running 5 s after SIGTERM; sending SIGKILL" >&2
      kill -KILL "$relay_pid" 2>/dev/null || true
    fi
    wait "$relay_pid" 2>/dev/null || true
  fi
  if [ -n "$sink_pid" ] && kill -0 "$sink_pid" 2>/dev/null; then
    kill -TERM "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
  fi
  if [ "$status" -eq 0 ]; then
    rm -rf "$tmp"
  else
    echo "demo: logs kept in $tmp" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "demo: working directory $tmp"

"$BUILD/postern-load" sink --listen "$SINK_HOST:$SINK_PORT" --expect "$MESSAGES" \
  --timeout "$SINK_TIMEOUT" --report "$tmp/sink.txt" --quiet \
  >"$tmp/sink.out" 2>"$tmp/sink.err" &
sink_pid=$!
for _ in $(seq 100); do
  grep -q '^sink listening' "$tmp/sink.out" 2>/dev/null && break
  if ! kill -0 "$sink_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if ! grep -q '^sink listening' "$tmp/sink.out" 2>/dev/null; then
  echo "demo: the sink did not start:" >&2
  cat "$tmp/sink.err" >&2
  exit 1
fi

"$BUILD/postern" --config "$ROOT/deploy/postern.toml" --spool-dir "$tmp/spool" \
  >"$tmp/relay.log" 2>&1 &
relay_pid=$!
for _ in $(seq 100); do
  accepting "$RELAY_HOST" "$RELAY_PORT" && break
  if ! kill -0 "$relay_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if ! accepting "$RELAY_HOST" "$RELAY_PORT"; then
  echo "demo: the relay is not accepting on $RELAY_HOST:$RELAY_PORT after 10 s; its log:" >&2
  tail -n 20 "$tmp/relay.log" >&2
  exit 1
fi

echo "demo: sending $MESSAGES messages of $SIZE bytes over $CONCURRENCY connections" \
  "through the relay at $RELAY_HOST:$RELAY_PORT"
source_status=0
"$BUILD/postern-load" source --server "$RELAY_HOST:$RELAY_PORT" --messages "$MESSAGES" \
  --concurrency "$CONCURRENCY" --size "$SIZE" >"$tmp/source.txt" || source_status=$?

echo "demo: waiting for the sink (at most ${SINK_TIMEOUT} s from its start)"
sink_status=0
wait "$sink_pid" || sink_status=$?
sink_pid=""

source_result=$(grep '^result ' "$tmp/source.txt" || true)
sink_result=$(cat "$tmp/sink.txt" 2>/dev/null || true)
accepted=$(field "$source_result" accepted)
unique=$(field "$sink_result" unique)
corrupt=$(field "$sink_result" corrupt)
sink_elapsed=$(field "$sink_result" elapsed_s)

echo
echo "Postern demo: $MESSAGES messages, $SIZE bytes each, $CONCURRENCY connections," \
  "postern-load -> relay $RELAY_HOST:$RELAY_PORT -> sink $SINK_HOST:$SINK_PORT"
if [ -n "$source_result" ]; then
  printf '  relay accepted  %s of %s (tempfail %s, rejected %s, connection errors %s)\n' \
    "$accepted" "$MESSAGES" "$(field "$source_result" tempfail)" \
    "$(field "$source_result" rejected)" "$(field "$source_result" errors)"
  printf '  source          %s msgs/s over %s s; end of data to 250: p50 %s ms, p99 %s ms, p99.9 %s ms, max %s ms\n' \
    "$(field "$source_result" msgs_per_s)" "$(field "$source_result" elapsed_s)" \
    "$(field "$source_result" p50_ms)" "$(field "$source_result" p99_ms)" \
    "$(field "$source_result" p999_ms)" "$(field "$source_result" max_ms)"
else
  echo "  source          no result (exit status $source_status)"
fi
if [ -n "$sink_result" ]; then
  printf '  sink received   %s unique of %s (duplicates %s, corrupt %s)\n' \
    "$unique" "$MESSAGES" "$(field "$sink_result" duplicates)" "$corrupt"
  printf '  end to end      %s msgs/s (%s messages in %s s, first relay connection to last message);\n' \
    "$(awk -v n="$unique" -v t="$sink_elapsed" 'BEGIN { printf "%.1f", (t > 0 ? n / t : 0) }')" \
    "$unique" "$sink_elapsed"
  printf '                  latency DATA to arrival: p50 %s ms, p99 %s ms, max %s ms\n' \
    "$(field "$sink_result" p50_ms)" "$(field "$sink_result" p99_ms)" \
    "$(field "$sink_result" max_ms)"
else
  echo "  sink            no result (exit status $sink_status); see $tmp/sink.err"
fi

if [ "$accepted" = "$MESSAGES" ] && [ "$unique" = "$MESSAGES" ] && [ "$corrupt" = "0" ]; then
  echo "PASS"
  exit 0
fi
echo "FAIL: every message must be accepted by the relay and reach the sink intact" >&2
exit 1
