#!/usr/bin/env python3
"""What an accept-all milter costs the relay, Postern and Postfix (bench/milter.sh).

Round after round, the same runs of each system twice: without a milter ("none"), then
with one milter, postern-milter-sink ("milter"), which answers CONTINUE to every step
(it negotiates protocol 0: no step skipped, every one awaits its answer). Postern gets a
[[milter]] table (default_action "tempfail"); Postfix (unless --no-postfix) gets
`smtpd_milters = inet:127.0.0.1:PORT`, `milter_default_action = tempfail` and
`milter_protocol = 6` in its main.cf. Each run is e2e_bench's run_cell (fresh spool or
queue, sink and relay; postern-load as the source), so the figures mean what they mean in
bench/e2e.sh: delivered/s includes the drain, relay CPU ms/msg is the relay's own CPU
(Postfix: all processes of the instance) ÷ accepted. The milter sink's own CPU is
reported apart (it shares the machine's cores).

That the milter runs really went through the milter is checked, not assumed: the bytes
the sink read from its sockets (rchar in /proc/PID/io) must come to at least half the
message size per accepted message (every message's body is sent to it); if not, the
script stops with an error.

Reports the per-run figures, the medians over the rounds, the ratios milter/none for each
system and Postern/Postfix with the milter, as Markdown on stdout and in
BUILD/bench-milter.md. Also counts the relay's log lines (Postfix: its maillog) that
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
        self.rchar0 = self._rchar() or 0  # its own start (the loader reads its libraries)

    def toml(self):
        return (f'\n[[milter]]\nname = "sink"\naddress = "inet:127.0.0.1:{self.port}"\n'
                'timeout = 10\ndefault_action = "tempfail"\n')

    def postconf(self):
        return (f"smtpd_milters=inet:127.0.0.1:{self.port}", "milter_default_action=tempfail",
                "milter_protocol=6")

    def _rchar(self):
        for line in read_text(f"/proc/{self.pid}/io").splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
        return None

    def bytes_read(self):
        """Bytes the sink has read since it was listening (rchar of /proc/PID/io counts
        every read(2), which is how libuv reads its sockets), None if it cannot be read."""
        rchar = self._rchar()
        return None if rchar is None else rchar - self.rchar0


class MilterUnused(RuntimeError):
    """A "milter" run in which the milter sink did not see the messages."""


def milter_log_lines(path):
    """Lines of the relay's log (Postfix: its maillog) at warn or above that mention a
    milter."""
    out = []
    for line in read_text(path).splitlines():
        low = line.lower()
        if "milter" in low and any(w in low for w in ("warn", "error", "critical", "fatal",
                                                      "panic")):
            out.append(line)
    return out


SYSTEMS = {"postern": "Postern", "postfix": "Postfix"}


def run(bench, args, system, variant, rnd):
    milter = None
    extra = "" if system == "postern" else ()
    if variant == "milter":
        d = os.path.join(bench.work, f"milter-sink-{system}-{rnd}")
        os.makedirs(d)
        milter = MilterSink(bench.running, os.path.join(args.build, "postern-milter-sink"), d)
        extra = milter.toml() if system == "postern" else milter.postconf()
    n = args.messages if system == "postern" else args.postfix_messages
    try:
        r = e2e_bench.run_cell(bench, system, args.concurrency, args.size, n,
                               relay_extra=extra)
        if milter:
            cpu = cpu_s(milter.pid)
            got = milter.bytes_read()
            accepted = r.get("accepted") or 0
            r["milter_ms_per_msg"] = cpu * 1000 / accepted if accepted else None
            r["milter_bytes"] = got
            r["milter_bytes_per_msg"] = got / accepted if accepted and got is not None else None
            if not milter.alive():
                r["notes"].append("the milter sink exited during the run")
    finally:
        if milter:
            milter.stop()
    r["variant"], r["round"] = variant, rnd
    relay_log = os.path.join(r["dir"], "relay.log" if system == "postern" else "maillog")
    r["milter_log"] = milter_log_lines(relay_log)
    m = re.search(r"event=starting .*?revision=(\S+)", read_text(relay_log))
    r["revision"] = m.group(1) if m else "?"
    if r["milter_log"]:
        r["notes"].append(f"{len(r['milter_log'])} milter warning(s) in the relay log")
    if milter:
        # The proof that the messages went through the milter: every accepted message's
        # body (about --size bytes) was sent to the sink, so it read at least that much.
        accepted = r.get("accepted") or 0
        need = max(accepted, 1) * args.size // 2
        if r["milter_bytes"] is None or r["milter_bytes"] < need:
            r["milter_unused"] = (
                f"{SYSTEMS[system]} with the milter, round {rnd}: the milter sink read "
                f"{r['milter_bytes']} bytes for {accepted} accepted message(s) of "
                f"{args.size} bytes (at least {need} expected): the messages did not go "
                f"through the milter (logs in {r['dir']}, sink output in {milter.out_path})")
    return r


def med(results, system, variant, key):
    xs = [r[key] for r in results
          if r["system"] == system and r["variant"] == variant and r.get(key) is not None]
    return statistics.median(xs) if xs else None


def q(a, b):
    return f"{a / b:.2f}" if a and b else "–"


def render(args, results, started, elapsed, systems):
    f0, f3 = e2e_bench.f0, e2e_bench.f3
    pn = next((r for r in results if r["system"] == "postern"), {})
    out = []
    w = out.append
    w("# Postern " + ("and Postfix " if "postfix" in systems else "")
      + "with an accept-all milter vs without")
    w("")
    counts = f"{args.messages:,} messages"
    if "postfix" in systems:
        counts = f"{args.messages:,} messages to Postern, {args.postfix_messages:,} to Postfix"
    w(f"`bench/milter.sh {shlex.join(sys.argv[1:])}`, started {started:%Y-%m-%d %H:%M} UTC, "
      f"{elapsed:.0f} s. {os.cpu_count()} cores; Postern {pn.get('revision', '?')} "
      f"(its own word; source tree now {e2e_bench.git_describe(bench_root())}), "
      f"{pn.get('workers', '?')} (`--workers {args.workers}`)"
      + (f"; Postfix {e2e_bench.postfix_version()} (bench/postfix/ templates, "
         f"`default_process_limit = {args.postfix_process_limit}`, smtpd maxproc "
         f"{args.postfix_smtpd_limit})" if "postfix" in systems else "")
      + f". Everything on 127.0.0.1: postern-load source ({args.concurrency} connections, "
      f"{counts} of {e2e_bench.fmt_size(args.size)}, capped at {args.timeout:.0f} s) → relay "
      "→ postern-load sink; with \"milter\", the relay also talks to postern-milter-sink "
      "(protocol 0: every step sent and answered with CONTINUE). Postern: one [[milter]], "
      "`default_action = \"tempfail\"`"
      + ("; Postfix: `smtpd_milters = inet:127.0.0.1:PORT`, `milter_default_action = "
         "tempfail`, `milter_protocol = 6`" if "postfix" in systems else "") + ".")
    w("")
    w("| round | system | milter | accepted | delivered | accepted/s | delivered/s "
      "| accept p50 / p99 / p99.9 ms | relay CPU ms/msg | milter sink CPU ms/msg "
      "| milter sink read B/msg | notes |")
    w("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        w(f"| {r['round']} | {SYSTEMS[r['system']]} | {r['variant']} "
          f"| {r.get('accepted', 0):,} | {r.get('unique', 0):,} "
          f"| {f0(r.get('acc_rate'))} | {f0(r.get('dlv_rate'))} "
          f"| {e2e_bench.lat(r.get('src', {}))} "
          f"| {f3(r.get('cpu_ms_per_msg'))} | {f3(r.get('milter_ms_per_msg'))} "
          f"| {f0(r.get('milter_bytes_per_msg'))} "
          f"| {'; '.join(r['notes'])} |")
    w("")
    w(f"## Medians over {args.rounds} round(s)")
    w("")
    head = "| | Postern none | Postern milter | Postern milter/none |"
    rule = "|---|---:|---:|---:|"
    if "postfix" in systems:
        head += (" Postfix none | Postfix milter | Postfix milter/none "
                 "| Postern/Postfix, both with the milter |")
        rule += "---:|---:|---:|---:|"
    w(head)
    w(rule)
    rows = (("dlv_rate", "delivered/s", f0), ("acc_rate", "accepted/s", f0),
            ("cpu_ms_per_msg", "relay CPU ms/msg", f3),
            ("machine_ms_per_msg", "machine CPU ms/msg", f3),
            ("p99", "accept p99 ms", e2e_bench.f2))
    for key, name, fmt in rows:
        a, b = med(results, "postern", "none", key), med(results, "postern", "milter", key)
        line = f"| {name} | {fmt(a)} | {fmt(b)} | {q(b, a)} |"
        if "postfix" in systems:
            c, d = med(results, "postfix", "none", key), med(results, "postfix", "milter", key)
            line += f" {fmt(c)} | {fmt(d)} | {q(d, c)} | {q(b, d)} |"
        w(line)
    for key, name, fmt in (("milter_ms_per_msg", "milter sink CPU ms/msg", f3),
                           ("milter_bytes_per_msg", "milter sink read B/msg", f0)):
        b = med(results, "postern", "milter", key)
        line = f"| {name} | – | {fmt(b)} | |"
        if "postfix" in systems:
            d = med(results, "postfix", "milter", key)
            line += f" – | {fmt(d)} | | {q(b, d)} |"
        w(line)
    w("")
    pf = "postfix" in systems
    w("relay CPU ms/msg: the relay's own CPU ÷ accepted"
      + (" (Postfix: master and all its children, exited ones included)" if pf else "")
      + ", without the milter sink's, which is in its own row. machine CPU ms/msg: all busy "
      "time of the machine during the run (relay, milter sink, source, sink, kernel) ÷ "
      "accepted, as in bench/e2e.sh. milter sink read B/msg: bytes the sink read from its "
      "sockets (rchar, /proc/PID/io) ÷ accepted, the proof that the messages went through "
      "it." + (" Ratios above 1 in the last column mean Postern has more of it (more "
               "messages/s, or more CPU per message)." if pf else ""))
    w("")
    bad = [line for r in results for line in r["milter_log"]]
    if bad:
        w(f"**{len(bad)} milter warning(s) in the relay logs**, the first ones:")
        w("")
        w("```")
        out.extend(bad[:10])
        w("```")
        w("")
    unused = [r["milter_unused"] for r in results if r.get("milter_unused")]
    for u in unused:
        w(f"**The milter saw nothing: {u}.**")
        w("")
    return "\n".join(out) + "\n"


def bench_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", help="build directory with postern, postern-load and "
                                  "postern-milter-sink")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of none + milter per "
                                                          "system (default 3)")
    ap.add_argument("--messages", type=int, default=60000,
                    help="messages per Postern run (default 60000: about 2 s without the "
                         "milter, 8 s with it on 2 cores)")
    ap.add_argument("--postfix-messages", type=int, default=5000,
                    help="messages per Postfix run (default 5000: about 5 s without the "
                         "milter, 7 s with it on 2 cores)")
    ap.add_argument("--no-postfix", action="store_true", help="skip the Postfix runs")
    ap.add_argument("--concurrency", type=int, default=100, help="source connections")
    ap.add_argument("--size", type=int, default=1 * KIB, help="message size in bytes")
    ap.add_argument("--timeout", type=float, default=10,
                    help="seconds a source run may take (and the drain after it)")
    ap.add_argument("--workers", default="auto", help='Postern [server] workers')
    ap.add_argument("--postfix-process-limit", type=int, default=100,
                    help="Postfix default_process_limit and smtp destination concurrency "
                         "(as in bench/e2e.sh)")
    ap.add_argument("--postfix-smtpd-limit", type=int, default=1000,
                    help="Postfix smtpd maxproc (as in bench/e2e.sh)")
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
    systems = ["postern", "postfix"]
    if args.no_postfix:
        systems.remove("postfix")
    elif shutil.which("postfix") is None or os.geteuid() != 0:
        sys.exit("milter: the Postfix runs need the postfix package and root "
                 "(--no-postfix skips them)")
    e2e_bench.SOURCE_TIMEOUT = int(args.timeout)  # run_cell's bounds
    e2e_bench.DRAIN_TIMEOUT = int(args.timeout)

    bench = e2e_bench.Bench(args)
    log(f"working directory {bench.work}")
    benchlib.exit_on_signals()
    started, t0 = datetime.datetime.utcnow(), time.monotonic()
    results, ok, unused = [], False, None
    try:
        for rnd in range(1, args.rounds + 1):
            for system in systems:
                for variant in ("none", "milter"):
                    r = run(bench, args, system, variant, rnd)
                    r["p99"] = (float(r["src"]["p99_ms"]) if r.get("src", {}).get("p99_ms")
                                else None)
                    results.append(r)
                    if r.get("milter_unused"):
                        unused = r["milter_unused"]
                        raise MilterUnused(unused)
        ok = True
    except MilterUnused:
        pass
    finally:
        stop_all(bench.running, log)
        if results:
            md = render(args, results, started, time.monotonic() - t0, systems)
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
    if unused:
        sys.exit(f"milter: FAILED: {unused}")


if __name__ == "__main__":
    main()
