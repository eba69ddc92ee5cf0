#!/usr/bin/env python3
"""TLS benchmark matrix: what STARTTLS costs Postern and Postfix per connection (make bench).

Rows: no TLS; STARTTLS with an RSA-2048 certificate; with an ECDSA P-256 certificate; with
the ECDSA certificate and a client that resumes sessions (postern-load --tls-resume: after
the first few connections every handshake is abbreviated, no certificate and no signature).
Every message has a connection of its own (postern-load source --concurrency 10
--messages-per-connection 1 --size 1024), so a TLS row's relay CPU per message minus the
no-TLS row's is the extra CPU of one TLS connection.

Each row runs against Postern (2 workers, e2e_bench.PosternRelay) and a private Postfix
(e2e_bench.PostfixRelay: the templates in bench/postfix/ plus smtpd_tls_cert_file,
smtpd_tls_key_file and smtpd_tls_security_level = may), both with the same certificate
(one made with openssl req per key type and run) and both delivering to a postern-load
sink. Per run: accepted msgs/s (the source's figure) and relay CPU ms per message
(utime+stime of the relay's process tree, exited children included, from before the source
starts to after the sink has every accepted message, as bench/e2e_bench.py measures it).

The crypto a full TLS 1.3 handshake costs the server is about one signature
(CertificateVerify) and two X25519 operations (its key share and the shared secret); a
resumed one (psk_dhe_ke) the two X25519 only. `openssl speed` measures those on one core
at the start of every round, and the report sets the extra CPU per TLS connection beside it.

Three rounds (--rounds), each running every row on both systems, which goes first
alternating from run to run; the tables show medians. Everything is bounded: message counts
per run, the source's --timeout, the drain deadline, and --budget for the whole script
(600 s, 180 with --quick; runs that would not fit are skipped and said so). The full matrix
takes about 5 minutes on the 2-core development machine, --quick (a fifth of the messages)
about 2. Postfix runs need the postfix package and root (skipped with a note otherwise).
Markdown to BUILD/bench-tls.md and stdout.
"""

import argparse
import datetime
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

import benchlib
from benchlib import check_build, result_fields, stop_all, write_report
from e2e_bench import (Bench, PosternRelay, PostfixRelay, Sink, git_describe, make_certificate,
                       postfix_version, wait_quiet)

CONCURRENCY = 10
SIZE = 1024
SOURCE_TIMEOUT = 30  # seconds, every source run
DRAIN_TIMEOUT = 20  # seconds after the source ends for the sink to get what was accepted
SPEED_SECONDS = 1  # openssl speed -seconds, per algorithm (sign and verify each)
ROUNDS = 3
QUICK_DIVISOR = 5
EXPECTED_RUN_S = 20  # a run's duration before one of its system has been timed
# Seconds all runs together may wait for someone else's load to pass (e2e_bench.wait_quiet,
# at most 30 s per run): a share of the budget, so that the runs themselves still fit.
QUIET_WAIT = {"full": 90, "quick": 30}


class Row(NamedTuple):
    key: str
    title: str
    cert: str | None  # make_certificate kind, None: no STARTTLS
    resume: bool  # postern-load --tls-resume


ROWS = [
    Row("plain", "no TLS", None, False),
    Row("rsa", "STARTTLS RSA-2048", "rsa", False),
    Row("ecdsa", "STARTTLS ECDSA P-256", "ec", False),
    Row("resumed", "STARTTLS ECDSA P-256, resumed", "ec", True),
]

# Messages per run, chosen so that one takes about 6-8 s on the 2-core development machine
# (Postern about 4,700 msgs/s without TLS, 1,000-1,600 with; Postfix, one smtpd process
# per connection, about 220 without, 150-230 with).
COUNTS = {
    ("postern", "plain"): 25000,
    ("postern", "rsa"): 6000,
    ("postern", "ecdsa"): 8000,
    ("postern", "resumed"): 9000,
    ("postfix", "plain"): 1800,
    ("postfix", "rsa"): 1200,
    ("postfix", "ecdsa"): 1200,
    ("postfix", "resumed"): 1600,
}

SYSTEMS = ["postern", "postfix"]
NAMES = {"postern": "Postern", "postfix": "Postfix"}

log = benchlib.logger("tls")


# ---------------------------------------------------------------------------- crypto


def crypto_speed():
    """Milliseconds per operation on one core from `openssl speed -mr`: {"rsa": RSA-2048
    sign, "ecdsa": ECDSA P-256 sign, "x25519": one X25519 derive}; missing ones left out."""
    r = subprocess.run(["openssl", "speed", "-seconds", str(SPEED_SECONDS), "-mr", "rsa2048",
                        "ecdsap256", "ecdhx25519"], capture_output=True, text=True, timeout=120)
    # -mr lines: +F2:index:bits:sign/s:verify/s (RSA), +F4:... (ECDSA), +F5:index:bits:op/s:s.
    wanted = {("+F2", "2048"): "rsa", ("+F4", "256"): "ecdsa", ("+F5", "253"): "x25519"}
    out = {}
    for line in r.stdout.splitlines():
        f = line.split(":")
        name = wanted.get((f[0], f[2])) if len(f) >= 4 else None
        if name and float(f[3]) > 0:
            out[name] = 1000 / float(f[3])
    return out


def crypto_formula(row):
    if row.cert is None:
        return None
    if row.resume:
        return "2×X25519"
    return ("RSA-2048" if row.cert == "rsa" else "ECDSA P-256") + " sign + 2×X25519"


def crypto_ms(row, speed):
    """The server's crypto for one handshake of the row, ms; None without TLS or figures."""
    if row.cert is None or "x25519" not in speed:
        return None
    sign = 0.0 if row.resume else speed.get("rsa" if row.cert == "rsa" else "ecdsa")
    return None if sign is None else sign + 2 * speed["x25519"]


# ---------------------------------------------------------------------------- runs


def run_source(bench, port, n, row, d):
    cmd = [bench.load, "source", "--server", f"127.0.0.1:{port}", "--messages", str(n),
           "--concurrency", str(CONCURRENCY), "--messages-per-connection", "1",
           "--size", str(SIZE), "--timeout", str(SOURCE_TIMEOUT), "--quiet"]
    if row.cert:
        cmd.append("--starttls")
    if row.resume:
        cmd.append("--tls-resume")
    path = os.path.join(d, "source.txt")
    with open(path, "w") as out:
        try:
            subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                           timeout=SOURCE_TIMEOUT + 30)
        except subprocess.TimeoutExpired:
            log("source did not exit in time (killed)")
    text = benchlib.read_text(path)
    res = result_fields(text, "result ")
    res["timed_out"] = not res or "TIMED OUT" in text
    return res


def start_relay(bench, system, d, sink_port, cert):
    if system == "postern":
        return PosternRelay(bench, d, sink_port, tls=cert is not None, certificate=cert)
    return PostfixRelay(bench, d, sink_port, certificate=cert)


def run_one(bench, rnd, system, row, n):
    label = f"r{rnd + 1}-{system}-{row.key}"
    d = bench.cell_dir(label)
    log(f"{label}: {n} messages")
    r = {"round": rnd, "system": system, "row": row.key, "n": n, "notes": []}
    sink = Sink(bench, d, n, SOURCE_TIMEOUT + DRAIN_TIMEOUT + 60)
    relay = None
    try:
        # A certificate of its own per run, as a fresh relay has (same kind for both systems).
        cert = make_certificate(d, row.cert) if row.cert else None
        relay = start_relay(bench, system, d, sink.port, cert)
        wait_quiet(bench, r)
        cpu0 = relay.cpu_s()
        src = run_source(bench, relay.port, n, row, d)
        accepted = int(src.get("accepted", 0))
        snk = sink.finish(max(accepted, 1), time.monotonic() + DRAIN_TIMEOUT)
        cpu = relay.cpu_s() - cpu0
        unique = int(snk.get("unique", 0))
        r.update(accepted=accepted, unique=unique, acc_rate=float(src.get("msgs_per_s", 0)))
        r["cpu_ms_per_msg"] = cpu * 1000 / accepted if accepted else None
        if row.cert:
            r["resumed"] = int(src.get("tls_resumed", 0))
        note_problems(r, src, snk, n)
    finally:
        if relay:
            relay.stop()
        sink.stop()
    log(f"{label}: accepted {r.get('accepted')} at {r.get('acc_rate', 0):.0f}/s, relay cpu/msg "
        f"{r.get('cpu_ms_per_msg') or 0:.3f} ms" +
        (f", {r['resumed']} resumed" if "resumed" in r else ""))
    return r


def note_problems(r, src, snk, n):
    if src.get("timed_out"):
        r["notes"].append(f"source timed out at {SOURCE_TIMEOUT} s")
    if r["accepted"] < n:
        r["notes"].append(f"accepted {r['accepted']}/{n}")
    if r["unique"] < r["accepted"]:
        r["notes"].append(f"delivered {r['unique']}/{r['accepted']} within {DRAIN_TIMEOUT} s")
    for k in ("tempfail", "rejected", "errors"):
        if int(src.get(k, 0) or 0):
            r["notes"].append(f"{k} {src[k]}")
    for k in ("duplicates", "corrupt"):
        if int(snk.get(k, 0) or 0):
            r["notes"].append(f"{k} {snk[k]}")


def run_order(rnd, i):
    """Which system goes first alternates from one row to the next and between rounds, so
    that neither always runs on a machine the other has just warmed (or loaded)."""
    return SYSTEMS if (rnd + i) % 2 == 0 else SYSTEMS[::-1]


# ---------------------------------------------------------------------------- report


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def f0(x):
    return "–" if x is None else f"{x:,.0f}"


def f3(x):
    return "–" if x is None else f"{x:.3f}"


def times(a, b, digits=1):
    return f"{a / b:.{digits}f}×" if a and b else "–"


def summarize(results, speeds):
    """Medians per (system, row): accepted/s and CPU ms/msg; extra CPU per TLS connection
    against the no-TLS row; crypto per handshake from the median openssl speed figures."""
    speed = {k: median([s.get(k) for s in speeds]) for k in ("rsa", "ecdsa", "x25519")}
    speed = {k: v for k, v in speed.items() if v is not None}
    med = {}
    for system in SYSTEMS:
        for row in ROWS:
            runs = [r for r in results if r["system"] == system and r["row"] == row.key]
            med[(system, row.key)] = {
                "acc_rate": median([r.get("acc_rate") for r in runs]),
                "cpu": median([r.get("cpu_ms_per_msg") for r in runs]),
                "resumed": sum(r.get("resumed", 0) for r in runs),
                "accepted": sum(r.get("accepted", 0) for r in runs),
                "runs": len(runs),
            }
    for system in SYSTEMS:
        base = med[(system, "plain")]["cpu"]
        for row in ROWS[1:]:
            m = med[(system, row.key)]
            m["extra"] = m["cpu"] - base if m["cpu"] is not None and base is not None else None
    return speed, med


def render(bench, results, speeds, started, elapsed, skipped):
    args = bench.args
    speed, med = summarize(results, speeds)
    out = []
    w = out.append
    w("# TLS: Postern vs Postfix, cost per STARTTLS connection")
    w("")
    w(f"`bench/tls_bench.py {shlex.join(sys.argv[1:])}` ({'quick' if args.quick else 'full'}, "
      f"{args.rounds} round(s)), started {started:%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} min. "
      f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
      f"Postern {git_describe(bench.root)}, Postfix {postfix_version()}, "
      f"{openssl_version()}.")
    w("")
    w(f"* Load: `postern-load source --concurrency {CONCURRENCY} --messages-per-connection 1 "
      f"--size {SIZE}` (+ `--starttls`, + `--tls-resume`), so one connection (and one TLS "
      "handshake) per message, on 127.0.0.1; the relay delivers in the clear to a "
      "`postern-load sink`. Fresh relay, spool and certificate per run.")
    w("* Postern: 2 workers, `[tls] certificate` of the row's key type. Postfix: the private "
      "instance of bench/e2e.sh (`bench/postfix/`) with `smtpd_tls_cert_file`/"
      "`smtpd_tls_key_file` of the same type and `smtpd_tls_security_level = may`; one smtpd "
      "process per connection, `in_flow_delay = 1s` stock.")
    w("* accepted/s: the source's accepted ÷ its elapsed time. CPU ms/msg: utime+stime of the "
      "relay (Postfix: master and all its children, exited ones included) from before the "
      "source starts to after the sink has every accepted message, ÷ messages accepted; "
      "delivery to the sink included, the same in every row.")
    w("* Extra CPU per TLS connection: the row's CPU ms/msg minus the no-TLS row's (medians). "
      "Crypto: the server's share of one TLS 1.3 handshake from `openssl speed` on one core "
      "(median of the rounds' measurements): a full handshake signs once (CertificateVerify; "
      "TLS 1.3 signs RSA with PSS, which costs what the PKCS#1 sign measured does) and does two "
      "X25519 operations (key share, shared secret); a resumed one does the two X25519 only.")
    w(f"* {args.rounds} round(s), each every row on both systems, the order alternating; "
      "medians over the rounds.")
    w("")
    if speed:
        w("`openssl speed`: "
          + ", ".join(f"{label} {speed[k]:.4f} ms ({1000 / speed[k]:,.0f}/s)"
                      for k, label in (("rsa", "RSA-2048 sign"), ("ecdsa", "ECDSA P-256 sign"),
                                       ("x25519", "X25519")) if k in speed) + ".")
        w("")

    w("## Throughput and relay CPU (medians)")
    w("")
    w("| row | Postern accepted/s | Postfix accepted/s | Postern/Postfix | Postern CPU ms/msg | "
      "Postfix CPU ms/msg | Postfix/Postern CPU |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for row in ROWS:
        pn, pf = med[("postern", row.key)], med[("postfix", row.key)]
        w(f"| {row.title} | {f0(pn['acc_rate'])} | {f0(pf['acc_rate'])} | "
          f"{times(pn['acc_rate'], pf['acc_rate'])} | {f3(pn['cpu'])} | {f3(pf['cpu'])} | "
          f"{times(pf['cpu'], pn['cpu'])} |")
    w("")

    w("## Extra CPU per TLS connection against the crypto it needs")
    w("")
    w("| row | crypto per handshake | crypto ms | Postern extra ms | Postern extra ÷ crypto | "
      "Postfix extra ms | Postfix extra ÷ crypto | resumed (% of connections) Postern / Postfix |")
    w("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in ROWS[1:]:
        pn, pf = med[("postern", row.key)], med[("postfix", row.key)]
        c = crypto_ms(row, speed)
        w(f"| {row.title} | {crypto_formula(row)} | {f3(c)} | {f3(pn['extra'])} | "
          f"{times(pn['extra'], c)} | {f3(pf['extra'])} | {times(pf['extra'], c)} | "
          f"{resumed_share(pn)} / {resumed_share(pf)} |")
    w("")

    w("## Every run")
    w("")
    w("| round | row | system | messages | accepted | accepted/s | relay CPU ms/msg | "
      "resumed | notes |")
    w("|---:|---|---|---:|---:|---:|---:|---:|---|")
    titles = {row.key: row.title for row in ROWS}
    for r in results:
        w(f"| {r['round'] + 1} | {titles[r['row']]} | {NAMES[r['system']]} | {r['n']:,} | "
          f"{r.get('accepted', 0):,} | {f0(r.get('acc_rate'))} | "
          f"{f3(r.get('cpu_ms_per_msg'))} | {r['resumed'] if 'resumed' in r else '–'} | "
          f"{'; '.join(r['notes'])} |")
    w("")
    if args.no_postfix:
        w(f"**Postfix runs skipped:** {args.no_postfix_why}.")
        w("")
    if skipped:
        w(f"**Skipped for lack of time (--budget {args.budget:.0f} s):** "
          + ", ".join(skipped) + ".")
        w("")
    w(f"Logs of every run: `{bench.work}` (kept with --keep)." if args.keep else
      "Per-run logs are deleted at the end; `--keep` keeps them.")
    return "\n".join(out) + "\n"


def resumed_share(m):
    if not m["runs"]:
        return "–"
    return f"{100 * m['resumed'] / m['accepted']:.0f}%" if m["accepted"] else "0%"


def openssl_version():
    try:
        return subprocess.run(["openssl", "version"], capture_output=True,
                              text=True).stdout.split(" (")[0].strip() or "OpenSSL ?"
    except OSError:
        return "OpenSSL ?"


# ---------------------------------------------------------------------------- main


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", help="build directory with postern and postern-load")
    ap.add_argument("--quick", action="store_true",
                    help=f"1/{QUICK_DIVISOR} of the messages per run (about 2 minutes)")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds (default {ROUNDS})")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    ap.add_argument("--no-postfix", action="store_true", help="skip the Postfix runs")
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/var/tmp"),
                    help="where the per-run directories go (must be a real disk)")
    ap.add_argument("--out", default=None, help="Markdown output (default BUILD/bench-tls.md)")
    ap.add_argument("--keep", action="store_true", help="keep the per-run directories")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole script (default 600, --quick 180); runs that "
                         "would not fit are skipped")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    if args.budget is None:
        args.budget = 180 if args.quick else 600
    # What e2e_bench's Bench and relays read: Postern with 2 workers and the stock delivery
    # concurrency, Postfix with e2e.sh's process limits.
    args.workers = "2"
    args.postern_delivery_connections = 20
    args.postfix_process_limit = 100
    args.postfix_smtpd_limit = 1000
    args.no_postfix_why = "--no-postfix"
    return args


def check_tools(args):
    check_build(args.build, "tls")
    help_text = subprocess.run([os.path.join(args.build, "postern-load"), "source", "--help"],
                               capture_output=True, text=True).stdout
    if "--tls-resume" not in help_text:
        sys.exit(f"tls: {args.build}/postern-load has no --tls-resume (rebuild it)")
    if not args.no_postfix and (shutil.which("postfix") is None or os.geteuid() != 0):
        args.no_postfix = True
        args.no_postfix_why = "they need the postfix package and root"
        log(f"Postfix runs skipped: {args.no_postfix_why}")


def main():
    args = parse_args()
    check_tools(args)
    out_path = args.out or os.path.join(args.build, "bench-tls.md")
    divisor = QUICK_DIVISOR if args.quick else 1
    systems = ["postern"] if args.no_postfix else SYSTEMS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))

    bench = Bench(args)
    bench.quiet_budget = QUIET_WAIT["quick" if args.quick else "full"]
    log(f"working directory {bench.work}")
    benchlib.exit_on_signals()
    started = datetime.datetime.utcnow()
    t_start = time.monotonic()
    results, speeds, skipped = [], [], []
    took = {}  # system -> longest run so far, s
    ok = False

    def fits(what, system):
        if time.monotonic() - t_start + took.get(system, EXPECTED_RUN_S) <= args.budget:
            return True
        log(f"skipping {what}: it might not finish within --budget {args.budget:.0f} s")
        skipped.append(what)
        return False

    try:
        for rnd in range(args.rounds):
            log(f"round {rnd + 1}: openssl speed")
            speeds.append(crypto_speed())
            for i, row in enumerate(ROWS):
                for system in run_order(rnd, i):
                    if system not in systems:
                        continue
                    what = f"round {rnd + 1} {NAMES[system]} {row.title}"
                    if not fits(what, system):
                        continue
                    n = max(int(COUNTS[(system, row.key)] * args.scale / divisor), CONCURRENCY)
                    t = time.monotonic()
                    results.append(run_one(bench, rnd, system, row, n))
                    took[system] = max(took.get(system, 0), time.monotonic() - t)
        ok = True
    finally:
        stop_all(bench.running, log)
        if results:
            md = render(bench, results, speeds, started, time.monotonic() - t_start, skipped)
            if not ok:
                md += "\n**Interrupted: the tables above are incomplete.**\n"
            write_report(md, out_path, log)
        if args.keep or not ok:
            log(f"per-run logs kept in {bench.work}")
        else:
            shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    main()
