#!/usr/bin/env python3
"""What an accept-all milter costs the relay (bench/milter.sh).

Round after round, the same Postern run twice: without a milter ("none"), then with one
[[milter]] pointing at postern-milter-sink ("milter"), which answers CONTINUE to every
step (protocol 0: no step skipped, every one awaits its answer). Each run is e2e_bench's
run_cell (fresh spool, sink and relay; postern-load as the source) with the [[milter]]
table appended to the relay's configuration, so the figures mean what they mean in
bench/e2e.sh: delivered/s includes the drain, relay CPU ms/msg is the relay's own CPU ÷
accepted. The milter sink's own CPU is reported apart (it shares the machine's cores).

Reports the per-run figures, the medians over the rounds, and the ratios milter/none, as
Markdown on stdout and in BUILD/bench-milter.md. Also counts the relay's log lines that
mention a milter at level warn or above, and the source's tempfails/rejections/errors,
so that a misbehaving milter conversation shows up instead of a merely slower run.
"""

import argparse
import datetime
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

import benchlib
import e2e_bench
from benchlib import KIB, check_build, cpu_s, free_port, read_text, stop_all, wait_until

log = benchlib.logger("milter")


class MilterSink(benchlib.Child):
    """postern-milter-sink on 127.0.0.1:port, its output in d/milter-sink.log."""

    def __init__(self, running, exe, d):
        self.port = free_port()
        self.out_path = os.path.join(d, "milter-sink.log")
        with open(self.out_path, "w") as out:
            super().__init__(running, [exe, "--listen", f"127.0.0.1:{self.port}"], out,
                             subprocess.STDOUT, name="postern-milter-sink", log=log)
        if not wait_until(lambda: "listening" in read_text(self.out_path) or not self.alive(),
                          10) or not self.alive():
            raise benchlib.StartFailed("postern-milter-sink did not start: "
                                       + read_text(self.out_path)[-500:])

    def toml(self):
        return (f'\n[[milter]]\nname = "sink"\naddress = "inet:127.0.0.1:{self.port}"\n'
                'timeout = 10\ndefault_action = "tempfail"\n')


def milter_log_lines(relay_log):
    """Lines of the relay's log at warn or above that mention a milter."""
    out = []
    for line in read_text(relay_log).splitlines():
        low = line.lower()
        if "milter" in low and any(w in low for w in ("warn", "error", "critical")):
            out.append(line)
    return out


def run(bench, args, variant, rnd):
    milter = None
    extra = ""
    if variant == "milter":
        d = os.path.join(bench.work, f"milter-sink-{rnd}")
        os.makedirs(d)
        milter = MilterSink(bench.running, os.path.join(args.build, "postern-milter-sink"), d)
        extra = milter.toml()
    try:
        r = e2e_bench.run_cell(bench, "postern", args.concurrency, args.size, args.messages,
                               relay_extra=extra)
        if milter:
            cpu = cpu_s(milter.pid)
            r["milter_ms_per_msg"] = cpu * 1000 / r["accepted"] if r.get("accepted") else None
            if not milter.alive():
                r["notes"].append("the milter sink exited during the run")
    finally:
        if milter:
            milter.stop()
    r["variant"], r["round"] = variant, rnd
    relay_log = os.path.join(r["dir"], "relay.log")
    r["milter_log"] = milter_log_lines(relay_log)
    m = re.search(r"event=starting .*?revision=(\S+)", read_text(relay_log))
    r["revision"] = m.group(1) if m else "?"
    if r["milter_log"]:
        r["notes"].append(f"{len(r['milter_log'])} milter warning(s) in the relay log")
    return r


def med(results, variant, key):
    xs = [r[key] for r in results if r["variant"] == variant and r.get(key) is not None]
    return statistics.median(xs) if xs else None


def render(args, results, started, elapsed):
    f0, f3 = e2e_bench.f0, e2e_bench.f3
    out = []
    w = out.append
    w("# Postern with an accept-all milter vs without")
    w("")
    w(f"`bench/milter.sh {shlex.join(sys.argv[1:])}`, started {started:%Y-%m-%d %H:%M} UTC, "
      f"{elapsed:.0f} s. {os.cpu_count()} cores; Postern {results[0].get('revision', '?')} "
      f"(its own word; source tree now {e2e_bench.git_describe(bench_root())}), "
      f"{results[0].get('workers', '?')} (`--workers {args.workers}`). Everything on "
      f"127.0.0.1: postern-load source ({args.concurrency} connections, "
      f"{args.messages:,} messages of {e2e_bench.fmt_size(args.size)}, capped at "
      f"{args.timeout:.0f} s) → Postern → postern-load sink; with \"milter\", Postern also "
      "talks to postern-milter-sink (protocol 0: every step sent and answered with "
      "CONTINUE).")
    w("")
    w("| round | milter | accepted | delivered | accepted/s | delivered/s | accept p50 / p99 "
      "/ p99.9 ms | relay CPU ms/msg | milter sink CPU ms/msg | notes |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        w(f"| {r['round']} | {r['variant']} | {r.get('accepted', 0):,} | {r.get('unique', 0):,} "
          f"| {f0(r.get('acc_rate'))} | {f0(r.get('dlv_rate'))} "
          f"| {e2e_bench.lat(r.get('src', {}))} "
          f"| {f3(r.get('cpu_ms_per_msg'))} | {f3(r.get('milter_ms_per_msg'))} "
          f"| {'; '.join(r['notes'])} |")
    w("")
    w(f"## Medians over {args.rounds} round(s)")
    w("")
    w("| | none | milter | milter/none |")
    w("|---|---:|---:|---:|")
    for key, name, fmt in (("dlv_rate", "delivered/s", f0), ("acc_rate", "accepted/s", f0),
                           ("cpu_ms_per_msg", "relay CPU ms/msg", f3),
                           ("machine_ms_per_msg", "machine CPU ms/msg", f3),
                           ("p99", "accept p99 ms", e2e_bench.f2)):
        a, b = med(results, "none", key), med(results, "milter", key)
        w(f"| {name} | {fmt(a)} | {fmt(b)} | {f'{b / a:.2f}' if a and b else '–'} |")
    w(f"| milter sink CPU ms/msg | – | {f3(med(results, 'milter', 'milter_ms_per_msg'))} | |")
    w("")
    w("machine CPU ms/msg: all busy time of the machine during the run (relay, milter sink, "
      "source, sink, kernel) ÷ accepted, as in bench/e2e.sh.")
    w("")
    bad = [line for r in results for line in r["milter_log"]]
    if bad:
        w(f"**{len(bad)} milter warning(s) in the relay logs**, the first ones:")
        w("")
        w("```")
        out.extend(bad[:10])
        w("```")
        w("")
    return "\n".join(out) + "\n"


def bench_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", help="build directory with postern, postern-load and "
                                  "postern-milter-sink")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of none + milter (default 3)")
    ap.add_argument("--messages", type=int, default=60000,
                    help="messages per run (default 60000: about 2 s without the milter, "
                         "8 s with it on 2 cores)")
    ap.add_argument("--concurrency", type=int, default=100, help="source connections")
    ap.add_argument("--size", type=int, default=1 * KIB, help="message size in bytes")
    ap.add_argument("--timeout", type=float, default=10,
                    help="seconds a source run may take (and the drain after it)")
    ap.add_argument("--workers", default="auto", help='Postern [server] workers')
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/var/tmp"),
                    help="where the per-run directories go (a real disk)")
    ap.add_argument("--out", default=None, help="Markdown output (default BUILD/bench-milter.md)")
    ap.add_argument("--keep", action="store_true", help="keep the per-run directories")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    args.postern_delivery_connections = 20  # e2e_bench's default
    check_build(args.build, "milter")
    if not os.access(os.path.join(args.build, "postern-milter-sink"), os.X_OK):
        sys.exit(f"milter: {args.build}/postern-milter-sink not found (build the "
                 "postern-milter-sink target)")
    e2e_bench.SOURCE_TIMEOUT = int(args.timeout)  # run_cell's bounds
    e2e_bench.DRAIN_TIMEOUT = int(args.timeout)

    bench = e2e_bench.Bench(args)
    log(f"working directory {bench.work}")
    benchlib.exit_on_signals()
    started, t0 = datetime.datetime.utcnow(), time.monotonic()
    results, ok = [], False
    try:
        for rnd in range(1, args.rounds + 1):
            for variant in ("none", "milter"):
                r = run(bench, args, variant, rnd)
                r["p99"] = float(r["src"]["p99_ms"]) if r.get("src", {}).get("p99_ms") else None
                results.append(r)
        ok = True
    finally:
        stop_all(bench.running, log)
        if results:
            md = render(args, results, started, time.monotonic() - t0)
            if not ok:
                md += "\n**Interrupted: the tables above are incomplete.**\n"
            benchlib.write_report(md, args.out or os.path.join(args.build, "bench-milter.md"),
                                  log)
        trouble = [n for r in results for n in r["notes"]
                   if not n.startswith(("waited", "machine"))]  # not only other load
        if args.keep or not ok or trouble:
            log(f"per-run logs kept in {bench.work}")
        else:
            shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    main()
