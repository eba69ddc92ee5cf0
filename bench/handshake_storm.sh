#!/usr/bin/env bash
# Plain sessions' answer time on a worker that a storm of STARTTLS clients hits too
# (issue 14, part 4; relay/inbound/handshake_gate.h). One worker pinned to core 0, the
# load tools to core 1: 4,000 plain messages (concurrency 5, 1,000 per connection), alone,
# then with 6,000 STARTTLS connections of one message each (concurrency 100) meanwhile.
# Prints the plain source's p50/p99 (end of data -> 250) for both, and the storm's rate.
#
#   bench/handshake_storm.sh BUILD_DIR [PER_TURN]     (PER_TURN: tls_handshakes_per_turn, 4)
#
# About 15 s. Needs 2 cores (taskset), openssl(1) for the certificate.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR [PER_TURN]}
per_turn=${2:-4}
bin=$(cd "$build" && pwd)/postern
load=$(cd "$build" && pwd)/postern-load
work=$(mktemp -d /tmp/postern-storm.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; [[ -n ${KEEP:-} ]] || rm -rf "$work"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.pem" 2>/dev/null
openssl req -x509 -new -key "$work/key.pem" -subj /CN=relay.bench.test -days 1 \
  -out "$work/cert.pem" 2>/dev/null

run() {  # run NAME STORM(0|1)
  local d=$work/$1 sink relay storm=""
  mkdir -p "$d"
  local sink_port=$((30000 + RANDOM % 5000)) port=$((35000 + RANDOM % 5000))
  # (ports at random in 30000-39999: a clash fails the run, it does not mislead it)
  cat > "$d/postern.toml" <<EOT
[server]
hostname = "relay.bench.test"
workers = 1
spool_dir = "$d/spool"
log_level = "warn"
[[listener]]
address = "127.0.0.1:$port"
[relay]
relay_networks = ["127.0.0.0/8"]
[[route]]
domain = "*"
next_hop = "127.0.0.1:$sink_port"
[admin]
address = ""
[limits]
connections = 100000
connections_per_ip = 100000
tls_handshakes_per_turn = $per_turn
[tls]
certificate = "$work/cert.pem"
private_key = "$work/key.pem"
EOT
  local plain=4000 storm_n=0
  [[ $2 == 1 ]] && storm_n=6000
  taskset -c 1 "$load" sink --listen "127.0.0.1:$sink_port" --expect $((plain + storm_n)) \
    --quiet --timeout 120 > "$d/sink.txt" 2>&1 &
  sink=$!
  taskset -c 0 "$bin" --config "$d/postern.toml" > "$d/relay.log" 2>&1 &
  relay=$!
  sleep 0.7
  if [[ $2 == 1 ]]; then
    taskset -c 1 "$load" source --server "127.0.0.1:$port" --messages $storm_n --concurrency 100 \
      --messages-per-connection 1 --starttls --quiet --timeout 100 --from storm@source.test \
      > "$d/storm.txt" 2>&1 &
    storm=$!
    sleep 0.5
  fi
  taskset -c 1 "$load" source --server "127.0.0.1:$port" --messages $plain --concurrency 5 \
    --messages-per-connection 1000 --quiet --timeout 100 > "$d/plain.txt" 2>&1
  [[ -z $storm ]] || wait "$storm"
  # The sink counts messages by the sources' sequence numbers, which both start at 0: it
  # is stopped, not waited for.
  kill "$relay" "$sink" 2>/dev/null || true
  wait "$relay" "$sink" 2>/dev/null || true
  echo "$1: plain $(grep -o 'p50_ms=[0-9.]* p99_ms=[0-9.]*' "$d/plain.txt")" \
       "${storm:+storm $(grep -o 'msgs_per_s=[0-9.]*' "$d/storm.txt")}"
}

[[ ${ONLY:-} == storm ]] || run alone 0
run storm 1
