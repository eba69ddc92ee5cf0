#!/usr/bin/env bash
# Runs the Google Benchmark micro-benchmarks (postern-bench) and prints a Markdown table:
# each benchmark's median rate, its baseline's median measured in the same run, the ratio
# between them and, where an issue set one, whether the target is met.
#
#   bench/micro.sh BUILD_DIR [extra postern-bench flags, e.g. --benchmark_filter=Line]
#
# Five repetitions of at least 0.2 s each; about 30-40 s on two cores. Progress goes to
# stderr, the table to stdout. Rates are decimal: GB/s = 1e9 octets per second.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUILD_DIR [postern-bench flags...]" >&2
  exit 2
fi
build_dir=$1
shift
bin=$build_dir/postern-bench
if [[ ! -x $bin ]]; then
  echo "$0: $bin not found; build it with: cmake --build $build_dir --target postern-bench" >&2
  exit 2
fi

json=$(mktemp)
trap 'rm -f "$json"' EXIT

# Google Benchmark 1.7.1 (Debian 12) takes --benchmark_min_time as plain seconds.
args=(--benchmark_repetitions=5 --benchmark_report_aggregates_only=true
      --benchmark_min_time=0.2 "$@")
echo "\$ $bin ${args[*]}" >&2
"$bin" "${args[@]}" --benchmark_out="$json" --benchmark_out_format=json >&2

/usr/bin/python3 - "$json" "$bin ${args[*]}" <<'EOF'
import json
import sys

path, command = sys.argv[1], sys.argv[2]
with open(path) as f:
    doc = json.load(f)

# run_name -> {aggregate_name: entry}
runs = {}
for b in doc.get("benchmarks", []):
    if b.get("run_type") != "aggregate":
        continue
    runs.setdefault(b["run_name"], {})[b["aggregate_name"]] = b

NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

# (label, benchmark, unit, baseline, target)
#   unit "GB/s": bytes_per_second / 1e9; "ns/item": 1e9 / items_per_second; "µs/op": the
#   median time of one iteration (CPU time, or the manual time of ".../manual_time" ones)
#   target: (">=", x) or ("<=", x) in the row's unit, or None
ROWS = [
    ("LineSplitter::next, 64 KiB DATA in place", "BM_LineSplitter", "GB/s",
     "BM_LineSplitter_MemchrBaseline", (">=", 5.0)),
    ("LineSplitter::next, 16 KiB buffer refilled (memcpy incl.)", "BM_LineSplitterRefill16K",
     "GB/s", "BM_LineSplitterRefill16K_Baseline", None),
    ("parseCommand + parsePathArg (14-command mix)", "BM_ParseCommand", "ns/item",
     "BM_ParseCommand_StrncasecmpBaseline", ("<=", 50.0)),
    ("DataReader + LineSplitter, 1 KiB message", "BM_DataReader/1024", "GB/s",
     "BM_Memcpy/1024", None),
    ("DataReader + LineSplitter, 100 KiB message", "BM_DataReader/102400", "GB/s",
     "BM_Memcpy/102400", None),
    ("encodeMessage, 1 KiB body", "BM_EncodeMessage/1024", "GB/s",
     "BM_MemcpyRecord/1024", None),
    ("encodeMessage, 100 KiB body", "BM_EncodeMessage/102400", "GB/s",
     "BM_MemcpyRecord/102400", None),
    ("decodeRecord, 1 KiB body", "BM_DecodeRecord/1024", "GB/s",
     "BM_MemcpyRecord/1024", None),
    ("decodeRecord, 100 KiB body", "BM_DecodeRecord/102400", "GB/s",
     "BM_MemcpyRecord/102400", None),
    ("crc32c, 1 KiB", "BM_Crc32c/1024", "GB/s", "BM_Memcpy/1024", None),
    ("crc32c, 100 KiB", "BM_Crc32c/102400", "GB/s", "BM_Memcpy/102400", None),
    ("SPSC queue, moodycamel, pop one (tokens)", "BM_QueueSpscMoodycamel/real_time", "ns/item",
     "BM_QueueSpsc_MutexDequeBaseline/real_time", None),
    ("SPSC queue, moodycamel, bulk pop 64 (as relay/worker.cc)", "BM_QueueSpscMoodycamelBulk/real_time",
     "ns/item", "BM_QueueSpsc_MutexDequeSwapBaseline/real_time", None),
    ("DotStuffer, 100 KB text in 64 KiB pieces", "BM_DotStuffer/102400/0", "GB/s",
     "BM_DotStuffPerLine/102400/0", None),
    ("DotStuffer, 100 KB base64 in 64 KiB pieces", "BM_DotStuffer/102400/1", "GB/s",
     "BM_DotStuffPerLine/102400/1", None),
    ("TLS 1.3 server handshake, ECDSA P-256, ticket (server CPU)",
     "BM_TlsServerHandshake_Ecdsa/manual_time", "µs/op", "BM_TlsCrypto_Ecdsa", None),
    ("TLS 1.3 server handshake, ECDSA P-256, no ticket", "BM_TlsServerHandshake_EcdsaNoTicket/manual_time",
     "µs/op", "BM_TlsCrypto_Ecdsa", None),
    ("TLS 1.3 server handshake, RSA-2048, ticket", "BM_TlsServerHandshake_Rsa/manual_time",
     "µs/op", "BM_TlsCrypto_Rsa", None),
    ("TLS 1.3 server handshake, resumed", "BM_TlsServerHandshake_Resumed/manual_time",
     "µs/op", "BM_TlsCrypto_Resumed", None),
    ("DKIM sign, rsa-sha256, 1 KB", "BM_DkimSign/1024/1", "µs/op", "BM_DkimCrypto/1024/1", None),
    ("DKIM sign, rsa-sha256, 100 KB", "BM_DkimSign/102400/1", "µs/op", "BM_DkimCrypto/102400/1",
     None),
    ("DKIM sign, ed25519-sha256, 1 KB", "BM_DkimSign/1024/0", "µs/op", "BM_DkimCrypto/1024/0",
     None),
    ("DKIM sign, ed25519-sha256, 100 KB", "BM_DkimSign/102400/0", "µs/op",
     "BM_DkimCrypto/102400/0", None),
]

BASELINE_LABEL = {
    "BM_LineSplitter_MemchrBaseline": "memchr LF loop",
    "BM_LineSplitterRefill16K_Baseline": "memcpy 16 KiB + memchr",
    "BM_ParseCommand_StrncasecmpBaseline": "strncasecmp verb only",
    "BM_Memcpy/1024": "memcpy 1 KiB",
    "BM_Memcpy/102400": "memcpy 100 KiB",
    "BM_MemcpyRecord/1024": "memcpy record",
    "BM_MemcpyRecord/102400": "memcpy record",
    "BM_QueueSpsc_MutexDequeBaseline/real_time": "mutex + deque",
    "BM_QueueSpsc_MutexDequeSwapBaseline/real_time": "mutex + deque, swap",
    "BM_DotStuffPerLine/102400/0": "line-by-line scan",
    "BM_DotStuffPerLine/102400/1": "line-by-line scan",
    "BM_TlsCrypto_Ecdsa": "X25519 + ECDSA sign",
    "BM_TlsCrypto_Rsa": "X25519 + RSA-PSS sign",
    "BM_TlsCrypto_Resumed": "X25519",
    "BM_DkimCrypto/1024/1": "SHA-256 + RSA sign",
    "BM_DkimCrypto/102400/1": "SHA-256 + RSA sign",
    "BM_DkimCrypto/1024/0": "SHA-256 + Ed25519 sign",
    "BM_DkimCrypto/102400/0": "SHA-256 + Ed25519 sign",
}


def rate(name, unit):
    med = runs.get(name, {}).get("median")
    if med is None:
        return None
    if unit == "GB/s":
        v = med.get("bytes_per_second")
        return v / 1e9 if v else None
    if unit == "µs/op":
        ns = op_ns(name)
        return ns / 1e3 if ns else None
    v = med.get("items_per_second")
    return 1e9 / v if v else None


# Google Benchmark computes the rates from CPU time, except for benchmarks registered with
# UseRealTime (the two-thread queue ones, named ".../real_time"); "per op" follows suit.
def clock(name):
    return "real_time" if name.endswith(("/real_time", "/manual_time")) else "cpu_time"


def op_ns(name):
    med = runs.get(name, {}).get("median")
    if med is None:
        return None
    return med[clock(name)] * NS.get(med.get("time_unit", "ns"), 1.0)


def cv(name, unit):
    c = runs.get(name, {}).get("cv")
    if c is None:
        return None
    key = "bytes_per_second" if unit == "GB/s" else "items_per_second"
    return c.get(key, c[clock(name)]) * 100  # a fraction in the JSON


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit == "GB/s":
        return f"{v:.2f} GB/s"
    if unit == "µs/op":
        return f"{v:.1f} µs"
    return f"{v:.1f} ns"


def fmt_ns(v):
    if v is None:
        return "n/a"
    return f"{v:,.0f} ns" if v >= 100 else f"{v:.1f} ns"


ctx = doc.get("context", {})
print(f"`{command}`  ")
print(f"{ctx.get('date', '')}, {ctx.get('host_name', '')}: {ctx.get('num_cpus', '?')} CPUs "
      f"at {ctx.get('mhz_per_cpu', '?')} MHz, load average "
      f"{' '.join(f'{x:.2f}' for x in ctx.get('load_avg', []))}, "
      f"libbenchmark built as {ctx.get('library_build_type', '?')}. "
      "Medians of 5 repetitions; GB/s = 1e9 B/s.")
load = ctx.get("load_avg", [0])
if load and load[0] > 0.5:
    print()
    print(f"**Warning**: load average {load[0]:.2f} when the run started: other processes "
          "share the cores, so expect noise (the two-thread queue rows suffer most).")
print()
print("| benchmark | median | per op | CV | baseline | baseline median "
      "| vs baseline | target |")
print("|---|---:|---:|---:|---|---:|---:|---|")
missing = []
for label, name, unit, base, target in ROWS:
    v = rate(name, unit)
    if name not in runs:
        missing.append(name)
    b = rate(base, unit)
    if v is None or b is None:
        ratio = "n/a"
    elif unit == "GB/s":
        ratio = f"{v / b:.2f}× speed"
    else:
        ratio = f"{v / b:.2f}× time"
    if target is None:
        tgt = "—"
    elif v is None:
        tgt = "n/a"
    else:
        op, x = target
        sign = "≥" if op == ">=" else "≤"
        ok = v >= x if op == ">=" else v <= x
        if ok:
            tgt = f"{sign} {fmt(x, unit)}: met"
        else:
            miss = (x - v) / x * 100 if op == ">=" else (v - x) / x * 100
            tgt = f"{sign} {fmt(x, unit)}: **missed by {miss:.0f}%**"
    c = cv(name, unit)
    print(f"| {label} | {fmt(v, unit)} | {fmt_ns(op_ns(name))} | "
          f"{'n/a' if c is None else f'{c:.1f}%'} | {BASELINE_LABEL.get(base, base)} | "
          f"{fmt(b, unit)} | {ratio} | {tgt} |")
print()
print("per op = median time of one iteration (a record for encode/decode, a message for "
      "DataReader, the 14-command mix for parseCommand, a 16384-item batch for the queues, "
      "a handshake for TLS), CPU time except for the queues (wall time) and the handshakes "
      "(the server's thread CPU time alone). CV = coefficient of variation of the "
      "rate over the 5 repetitions. vs baseline: speed ratio for "
      "GB/s (1.00× = as fast as the baseline), time ratio for ns/item and µs/op (>1 = slower).")
if missing:
    print()
    print("Not run (filtered out or not built): " + ", ".join(missing))
EOF
