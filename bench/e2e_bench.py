#!/usr/bin/env python3
"""End-to-end benchmark: Postern and a private Postfix relay side by side (bench/e2e.sh).

For every cell of the matrix (concurrency x message size) and every system this starts a
postern-load sink, the system under test (nothing for "direct"), and a postern-load source,
then records:

  * accepted msgs/s: accepted / source elapsed (the source's own figure);
  * delivered msgs/s: unique messages at the sink / (source start -> last new message at
    the sink), i.e. end to end including the drain of the relay's queue;
  * accept latency p50/p99/p99.9: end of data to the 250, from the source;
  * relay CPU ms/msg: utime+stime (+cutime+cstime, which is how the CPU of children that
    have exited and been reaped is still counted) summed over the relay's process tree,
    read from /proc/PID/stat just before the source starts and after the sink is done,
    divided by the messages the relay accepted;
  * peak memory: Postern's VmHWM (one process); for Postfix the largest sum of VmRSS over
    all processes of the instance (master and its children), sampled every 0.5 s, plus the
    sum of Pss (smaps_rollup, shared pages divided among sharers) at the end of the run;
  * machine CPU ms/msg: all busy time in /proc/stat over the same window / accepted, and
    the share of it not charged to the relay, the source, the sink or this script.

Before each run the script waits (bounded) for other load on the machine to pass. A run
that would not fit in --budget (default 900 s for the whole script) is skipped and said so.

Then an idle-connections measurement (Postern's VmRSS before and after N connections that
wait after the greeting) and an optional STARTTLS row. Every run is bounded: the source
by --timeout, the drain by a deadline, every wait by a timeout. Everything started here
is stopped in a finally block (also on SIGINT/SIGTERM): the relay with SIGTERM, Postfix
with `postfix -c DIR stop`, leftovers by PID with SIGKILL.
"""

import argparse
import datetime
import os
import platform
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import benchlib
from benchlib import (CLK_TCK, KIB, accepting, busy_pct, check_build, cpu_ticks,
                      free_port, machine_snapshot, proc_stat, read_text, result_fields,
                      status_kb, stop_all, wait_until, write_report)

SOURCE_TIMEOUT = 30  # seconds, every source run
DRAIN_TIMEOUT = 30  # seconds after the source ends for the sink to get what was accepted
CONCURRENCIES = [1, 10, 100, 1000]
SIZES = [1 * KIB, 100 * KIB]

# Messages per run, chosen so that a run takes a few seconds on the 2-core development
# machine (and well under SOURCE_TIMEOUT): (system, size) -> {concurrency: messages}.
COUNTS = {
    ("direct", 1 * KIB): {1: 40000, 10: 100000, 100: 100000, 1000: 100000},
    ("postern", 1 * KIB): {1: 10000, 10: 30000, 100: 100000, 1000: 100000},
    ("postfix", 1 * KIB): {1: 3000, 10: 6000, 100: 6000, 1000: 6000},
    ("direct", 100 * KIB): {1: 5000, 10: 20000, 100: 20000, 1000: 20000},
    ("postern", 100 * KIB): {1: 2000, 10: 10000, 100: 10000, 1000: 10000},
    ("postfix", 100 * KIB): {1: 2000, 10: 3000, 100: 3000, 1000: 3000},
}
QUICK_CELLS = [(10, 1 * KIB), (100, 1 * KIB), (100, 100 * KIB)]
QUICK_DIVISOR = 5

TARGETS_CELL = (100, 1 * KIB)
BACKGROUND_WARN_PCT = 15  # machine busy before a run (someone else's load): noted
QUIET_WAIT_PER_RUN = 30  # seconds a run may wait for such load to pass...
QUIET_WAIT_TOTAL = 180  # ...and all runs together
RUN_WORST_CASE = 75  # seconds one run can take (start, source cap, drain cap, stop)


log = benchlib.logger("e2e")


def fmt_size(size):
    return f"{size // KIB} KB" if size % KIB == 0 else f"{size} B"


# ---------------------------------------------------------------------------- /proc


def proc_parents():
    """pid -> ppid for every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        rest = proc_stat(name)
        if rest is not None:
            out[int(name)] = int(rest[1])
    return out


def tree_pids(root):
    """root and all its descendants that exist now."""
    parents = proc_parents()
    if root not in parents:
        return []
    children = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_s(root):
    """utime+stime+cutime+cstime over the tree (all threads, and reaped children), s."""
    return sum(cpu_ticks(p, children=True) for p in tree_pids(root)) / CLK_TCK


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Largest sum of VmRSS over a process tree, sampled every `period` seconds."""

    def __init__(self, root, period=0.5):
        self.root = root
        self.period = period
        self.peak_kb = 0
        self.max_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        pids = tree_pids(self.root)
        total = sum(status_kb(p, "VmRSS", 0) for p in pids)
        self.peak_kb = max(self.peak_kb, total)
        self.max_procs = max(self.max_procs, len(pids))

    def _run(self):
        while not self._stop.wait(self.period):
            self._sample()

    def start(self):
        self._sample()
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._sample()


# ---------------------------------------------------------------------------- helpers


def kill_pids(pids, sig=signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = args.build
        self.load = os.path.join(self.build, "postern-load")
        self.postern = os.path.join(self.build, "postern")
        self.root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.work = tempfile.mkdtemp(prefix="postern-e2e.", dir=args.workdir)
        os.chmod(self.work, 0o755)  # Postfix daemons (user postfix) need to reach their dirs
        self.running = []  # objects with a stop() method, stopped in reverse order
        self.seq = 0
        self.quiet_budget = QUIET_WAIT_TOTAL

    def cell_dir(self, name):
        self.seq += 1
        d = os.path.join(self.work, f"{self.seq:02d}-{name}")
        os.makedirs(d)
        return d


# ---------------------------------------------------------------------------- processes


class Sink(benchlib.Sink):
    def __init__(self, bench, d, expect, timeout):
        super().__init__(bench.running, bench.load, d, free_port(), expect, timeout)

    def unique_so_far(self):
        m = re.findall(r"unique (\d+)/", read_text(self.err_path))
        return int(m[-1]) if m else 0

    def finish(self, wanted, deadline):
        """Waits until the sink has `wanted` unique messages (it exits by itself at
        --expect) or the deadline passes, then stops it and returns its result fields."""
        while self.proc.poll() is None:
            if wanted < self.expect and self.unique_so_far() >= wanted:
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        self.stop()
        return self.result()


def make_certificate(d, kind="ec"):
    """A self-signed certificate for relay.bench.test made with openssl req in d: kind "ec"
    (ECDSA P-256) or "rsa" (RSA-2048). (certificate, key) PEM paths."""
    newkey = {"ec": ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"], "rsa": ["rsa:2048"]}
    cert, key = os.path.join(d, f"cert-{kind}.pem"), os.path.join(d, f"key-{kind}.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", *newkey[kind], "-nodes", "-keyout", key,
         "-out", cert, "-days", "2", "-subj", "/CN=relay.bench.test"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class PosternRelay(benchlib.Child):
    """tls: offer STARTTLS with `certificate` ((cert, key) PEM paths; default a fresh ECDSA
    P-256 pair in d). extra: TOML appended to the configuration (e.g. bench/milter.sh's
    [[milter]])."""

    def __init__(self, bench, d, sink_port, tls=False, certificate=None, extra=""):
        self.port = free_port()
        self.admin_port = free_port()
        self.dir = d
        self.log_path = os.path.join(d, "relay.log")
        spool = os.path.join(d, "spool")
        cfg = os.path.join(d, "postern.toml")
        tls_section = ""
        if tls:
            cert, key = certificate or make_certificate(d, "ec")
            tls_section = f'[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n'
        with open(cfg, "w") as f:
            f.write(f"""# generated by bench/e2e_bench.py
[server]
hostname = "relay.bench.test"
workers = "{bench.args.workers}"
spool_dir = "{spool}"
log_level = "info"

[[listener]]
address = "127.0.0.1:{self.port}"

[relay]
relay_networks = ["127.0.0.0/8"]

[[route]]
domain = "*"
next_hop = "127.0.0.1:{sink_port}"

[admin]
address = "127.0.0.1:{self.admin_port}"

[limits]
connections = 100000
connections_per_ip = 100000

[delivery]
connections_per_host = {bench.args.postern_delivery_connections}
{tls_section}{extra}""")
        if bench.args.workers.isdigit():
            # Written as a number, not a string, when one is given.
            text = open(cfg).read().replace(f'workers = "{bench.args.workers}"',
                                            f"workers = {bench.args.workers}")
            open(cfg, "w").write(text)
        with open(self.log_path, "w") as logf:
            super().__init__(bench.running, [bench.postern, "--config", cfg], logf,
                             subprocess.STDOUT, name="Postern", log=log)
        if not wait_until(lambda: self.proc.poll() is not None or accepting(self.port), 15):
            raise RuntimeError(f"Postern is not accepting on 127.0.0.1:{self.port}")
        if self.proc.poll() is not None:
            with open(self.log_path) as f:
                raise RuntimeError("Postern exited: " + f.read()[-800:])

    def cpu_s(self):
        return tree_cpu_s(self.pid)

    def body_pieces(self):
        """(from the page cache, on the thread pool): the body pieces delivery read, summed
        over workers from /metrics; None if the relay does not say."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics",
                                        timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        got = {"cache": 0.0, "pool": 0.0}
        for m in re.finditer(r'^postern_body_pieces_read_total\{[^}]*path="(\w+)"[^}]*\} (\S+)$',
                             text, re.M):
            got[m.group(1)] = got.get(m.group(1), 0) + float(m.group(2))
        return int(got["cache"]), int(got["pool"])

    def threads(self):
        return status_kb(self.pid, "Threads", 0)

    def workers(self):
        """What the relay says it runs: "workers=2 accept=reuseport" from its listening
        line (older builds say nothing: one worker)."""
        with open(self.log_path) as f:
            for line in f:
                if "event=listening" in line:
                    w = re.search(r"workers=(\S+)", line)
                    a = re.search(r"accept=(\S+)", line)
                    return (f"{w.group(1) if w else 1} worker(s)"
                            + (f", accept={a.group(1)}" if a else ""))
        return "?"


class PostfixRelay:
    """certificate: (cert, key) PEM paths to offer STARTTLS with (smtpd_tls_security_level
    = may); None: no STARTTLS, as the template has it. extra: main.cf settings ("name =
    value" strings, applied with postconf -e over the template's; e.g. bench/milter.sh's
    smtpd_milters)."""

    name = "Postfix"

    def __init__(self, bench, d, sink_port, certificate=None, extra=()):
        self.bench = bench
        self.port = free_port()
        self.dir = d
        self.etc = os.path.join(d, "etc")
        self.log_path = os.path.join(d, "postfix-commands.log")
        for sub in ("etc", "queue", "data"):
            os.makedirs(os.path.join(d, sub))
        shutil.chown(os.path.join(d, "data"), "postfix")
        subst = {
            "@DIR@": d,
            "@PORT@": str(self.port),
            "@SINK_PORT@": str(sink_port),
            "@PROCESS_LIMIT@": str(bench.args.postfix_process_limit),
            "@SMTPD_LIMIT@": str(bench.args.postfix_smtpd_limit),
        }
        for name in ("main.cf", "master.cf"):
            with open(os.path.join(bench.root, "bench", "postfix", name + ".in")) as f:
                text = f.read()
            for k, v in subst.items():
                text = text.replace(k, v)
            with open(os.path.join(self.etc, name), "w") as f:
                f.write(text)
        if certificate:
            self._postconf("smtpd_tls_security_level=may",
                           f"smtpd_tls_cert_file={certificate[0]}",
                           f"smtpd_tls_key_file={certificate[1]}")
        if extra:
            self._postconf(*extra)
        self.pid = None
        bench.running.append(self)
        self._postfix("check")
        self._postfix("start")
        pidfile = os.path.join(d, "queue", "pid", "master.pid")
        if not wait_until(lambda: os.path.exists(pidfile) and accepting(self.port), 15):
            raise RuntimeError(f"Postfix is not accepting on 127.0.0.1:{self.port}; see "
                               f"{self.log_path} and {d}/maillog")
        with open(pidfile) as f:
            self.pid = int(f.read().split()[0])
        if accepting(25):
            log("warning: something listens on port 25 (not this instance: its master.cf "
                "has no such listener)")

    def _postfix(self, cmd, check=True):
        # Postfix commands log only to syslog (absent here) unless stderr is a terminal:
        # script(1) gives them one, so their messages end up in our log.
        r = subprocess.run(["script", "-qec", f"postfix -c {self.etc} {cmd}", "/dev/null"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
        with open(self.log_path, "a") as f:
            f.write(f"$ postfix -c {self.etc} {cmd}  (exit {r.returncode})\n{r.stdout}{r.stderr}")
        if check and r.returncode != 0:
            raise RuntimeError(f"postfix -c {self.etc} {cmd} failed: {r.stdout.strip()}")

    def _postconf(self, *settings):
        """Edits this instance's main.cf (postconf -e: each setting replaces the template's)."""
        r = subprocess.run(["postconf", "-c", self.etc, "-e", *settings],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        with open(self.log_path, "a") as f:
            f.write(f"$ postconf -c {self.etc} -e {shlex.join(settings)}  "
                    f"(exit {r.returncode})\n{r.stdout}{r.stderr}")
        if r.returncode != 0:
            raise RuntimeError(f"postconf -e failed: {r.stderr.strip()}")

    def cpu_s(self):
        return tree_cpu_s(self.pid)

    def pss_kb(self):
        return sum(pss_kb(p) for p in tree_pids(self.pid))

    def stop(self):
        if self in self.bench.running:
            self.bench.running.remove(self)
        pids = tree_pids(self.pid) if self.pid else []
        try:
            self._postfix("stop", check=False)
        except subprocess.TimeoutExpired:
            pass
        if pids and not wait_until(lambda: not os.path.exists(f"/proc/{pids[0]}"), 15):
            log("Postfix master still running 15 s after postfix stop; SIGKILL")
        # Anything of this instance still alive (by PID, never by name).
        kill_pids([p for p in pids if os.path.exists(f"/proc/{p}")])


# ---------------------------------------------------------------------------- runs


def wait_quiet(bench, r):
    """Lets the relay settle after its start and checks that nothing else is using the
    machine (nothing of ours is busy now): 1 s windows of /proc/stat, waiting while the
    machine is more than BACKGROUND_WARN_PCT busy, within the per-run and total budgets."""
    waited = 0
    while True:
        snap = machine_snapshot()
        time.sleep(1.0)
        pct = busy_pct(snap, machine_snapshot())
        if pct <= BACKGROUND_WARN_PCT or waited >= QUIET_WAIT_PER_RUN or bench.quiet_budget <= 0:
            break
        if waited == 0:
            log(f"machine {pct:.0f}% busy (not us); waiting up to {QUIET_WAIT_PER_RUN} s")
        waited += 1
        bench.quiet_budget -= 1
    r["background_pct"] = pct
    if waited:
        r["notes"].append(f"waited {waited} s for other load to pass")
    if pct > BACKGROUND_WARN_PCT:
        r["notes"].append(f"machine {pct:.0f}% busy (not us) just before the run")


def run_source(bench, port, n, conc, size, d, tls=False):
    cmd = [bench.load, "source", "--server", f"127.0.0.1:{port}", "--messages", str(n),
           "--concurrency", str(conc), "--size", str(size), "--timeout", str(SOURCE_TIMEOUT),
           "--quiet"]
    if tls:
        cmd.append("--starttls")
    with open(os.path.join(d, "source.txt"), "w") as out:
        try:
            subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                           timeout=SOURCE_TIMEOUT + 30)
        except subprocess.TimeoutExpired:
            log("source did not exit in time (killed)")
    with open(os.path.join(d, "source.txt")) as f:
        text = f.read()
    res = result_fields(text, "result ")
    if not res:
        return {"timed_out": True}
    res["timed_out"] = "TIMED OUT" in text
    return res


def run_cell(bench, system, conc, size, n, tls=False, relay_extra=""):
    """relay_extra: the relay's `extra` (Postern: TOML text; Postfix: main.cf settings)."""
    label = f"{system}-c{conc}-{size // KIB}k" + ("-tls" if tls else "")
    d = bench.cell_dir(label)
    log(f"{label}: {n} messages")
    r = {"system": system, "conc": conc, "size": size, "n": n, "tls": tls, "dir": d,
         "notes": []}
    sink = Sink(bench, d, n, SOURCE_TIMEOUT + DRAIN_TIMEOUT + 60)
    relay = None
    try:
        if system == "postern":
            relay = PosternRelay(bench, d, sink.port, tls=tls, extra=relay_extra)
        elif system == "postfix":
            relay = PostfixRelay(bench, d, sink.port, extra=relay_extra or ())
        target = relay.port if relay else sink.port
        wait_quiet(bench, r)
        sampler = None
        if relay:
            cpu0 = relay.cpu_s()
            if system == "postfix":
                sampler = RssSampler(relay.pid)
                sampler.start()
        # For the share of the machine used by others during the run: everything busy in
        # /proc/stat minus the relay, the source and sink (reaped children) and ourselves.
        ru_c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ru_s0 = resource.getrusage(resource.RUSAGE_SELF)
        stat0, wall0 = machine_snapshot(), time.monotonic()

        t0 = time.time()
        src = run_source(bench, target, n, conc, size, d, tls)
        src_end = time.monotonic()
        accepted = int(src.get("accepted", 0))
        snk = sink.finish(max(accepted, 1), src_end + DRAIN_TIMEOUT)
        unique = int(snk.get("unique", 0))
        r.update(src=src, sink=snk, accepted=accepted, unique=unique)
        cpu = relay.cpu_s() - cpu0 if relay else 0.0
        stat1, wall1 = machine_snapshot(), time.monotonic()
        ru_c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ru_s1 = resource.getrusage(resource.RUSAGE_SELF)
        tools = (ru_c1.ru_utime + ru_c1.ru_stime) - (ru_c0.ru_utime + ru_c0.ru_stime)
        me = (ru_s1.ru_utime + ru_s1.ru_stime) - (ru_s0.ru_utime + ru_s0.ru_stime)
        busy = (stat1[0] - stat0[0]) / CLK_TCK
        cores = os.cpu_count() or 1
        r["tools_cpu_s"] = tools
        r["other_pct"] = 100 * max(busy - cpu - tools - me, 0) / ((wall1 - wall0) * cores)
        r["machine_ms_per_msg"] = busy * 1000 / accepted if accepted else None
        if relay:
            r["cpu_ms_per_msg"] = cpu * 1000 / accepted if accepted else None
            if system == "postern":
                r["peak_rss_mib"] = status_kb(relay.pid, "VmHWM", 0) / KIB
                r["threads"] = relay.threads()
                r["workers"] = relay.workers()
                pieces = relay.body_pieces()
                if pieces and pieces[1]:
                    r["notes"].append(f"{pieces[1]} of {sum(pieces)} body pieces read on the "
                                      "thread pool (not in the page cache)")
            else:
                sampler.stop()
                r["peak_rss_mib"] = sampler.peak_kb / KIB
                r["pss_mib"] = relay.pss_kb() / KIB
                r["procs"] = sampler.max_procs
        last = float(snk.get("last_unix_s", 0) or 0)
        r["acc_rate"] = float(src.get("msgs_per_s", 0))
        r["dlv_rate"] = unique / (last - t0) if unique and last > t0 else 0.0
        if src.get("timed_out"):
            r["notes"].append(f"source timed out at {SOURCE_TIMEOUT} s")
        if accepted < n:
            r["notes"].append(f"accepted {accepted}/{n}")
        if unique < accepted:
            r["notes"].append(f"delivered {unique}/{accepted} within {DRAIN_TIMEOUT} s drain")
        for k in ("tempfail", "rejected", "errors"):
            if int(src.get(k, 0) or 0):
                r["notes"].append(f"{k} {src[k]}")
        for k in ("duplicates", "corrupt"):
            if int(snk.get(k, 0) or 0):
                r["notes"].append(f"{k} {snk[k]}")
    finally:
        if relay:
            relay.stop()
        sink.stop()
    log(f"{label}: accepted {r.get('accepted')} at {r.get('acc_rate', 0):.0f}/s, "
        f"delivered {r.get('unique')} at {r.get('dlv_rate', 0):.0f}/s, "
        f"p99 {r.get('src', {}).get('p99_ms', '?')} ms, relay cpu/msg "
        f"{r.get('cpu_ms_per_msg') or 0:.3f} ms, source+sink cpu {r.get('tools_cpu_s', 0):.1f} s, "
        f"others {r.get('other_pct', 0):.0f}% of the machine")
    return r


def open_idle(port, count, timeout=60):
    """Opens `count` connections that each read the greeting and then wait. Returns
    (sockets, greeted, failures)."""
    sel = selectors.DefaultSelector()
    socks, greeted, failures = [], 0, {}
    pending = {}
    batch = 500
    deadline = time.monotonic() + timeout
    opened = 0
    while (opened < count or pending) and time.monotonic() < deadline:
        while opened < count and len(pending) < batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            if err not in (0, 115):  # EINPROGRESS
                failures[os.strerror(err)] = failures.get(os.strerror(err), 0) + 1
                s.close()
                opened += 1
                continue
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
            opened += 1
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError as e:
                data, why = None, e.strerror
            else:
                why = "closed before the greeting"
            if not data:
                failures[why] = failures.get(why, 0) + 1
                sel.unregister(s)
                s.close()
                del pending[s]
                continue
            pending[s] += data
            if b"\n" in pending[s]:
                sel.unregister(s)
                if pending[s].startswith(b"220"):
                    greeted += 1
                    socks.append(s)
                else:
                    why = pending[s][:3].decode(errors="replace") + " greeting"
                    failures[why] = failures.get(why, 0) + 1
                    s.close()
                del pending[s]
    for s in pending:
        failures["no greeting in time"] = failures.get("no greeting in time", 0) + 1
        s.close()
    sel.close()
    return socks, greeted, failures


def run_idle(bench, count):
    d = bench.cell_dir(f"idle-{count}")
    log(f"idle: {count} connections")
    relay = PosternRelay(bench, d, free_port())
    socks = []
    try:
        time.sleep(1)
        before = status_kb(relay.pid, "VmRSS", 0)
        socks, greeted, failures = open_idle(relay.port, count)
        time.sleep(1)
        after = status_kb(relay.pid, "VmRSS", 0)
        hwm = status_kb(relay.pid, "VmHWM", 0)
        cpu = relay.cpu_s()
    finally:
        for s in socks:
            s.close()
        relay.stop()
    r = {"count": count, "greeted": greeted, "failures": failures, "before_mib": before / KIB,
         "after_mib": after / KIB, "hwm_mib": hwm / KIB, "delta_mib": (after - before) / KIB,
         "cpu_s": cpu}
    log(f"idle: {greeted}/{count} greeted, VmRSS {before / KIB:.1f} -> {after / KIB:.1f} MiB")
    return r


# ---------------------------------------------------------------------------- report


def f0(x):
    return "–" if x is None else f"{x:,.0f}"


def f2(x):
    return "–" if x is None else f"{x:.2f}"


def f3(x):
    return "–" if x is None else f"{x:.3f}"


def ratio(a, b):
    return f"{a / b:.1f}×" if a and b else "–"


def pct(a, b):
    return f"{100 * a / b:.0f}%" if a and b else "–"


def lat(src):
    if not src.get("p50_ms"):
        return "–"
    return f"{float(src['p50_ms']):.2f} / {float(src['p99_ms']):.2f} / {float(src['p999_ms']):.2f}"


def git_describe(root):
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+uncommitted changes" if dirty else "")
    except OSError:
        return "?"


def render(bench, results, idle, cells, started, elapsed):
    args = bench.args
    by = {(r["system"], r["conc"], r["size"], r["tls"]): r for r in results}
    out = []
    w = out.append
    w("# Postern vs Postfix: end-to-end relay benchmark")
    w("")
    mode = "quick matrix" if args.quick else "full matrix"
    if args.cells:
        mode = "selected cells"
    w(f"`bench/e2e.sh {shlex.join(sys.argv[1:])}` ({mode}), "
      f"started {started:%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} min. "
      f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
      f"Postern {git_describe(bench.root)}, Postfix {postfix_version()}.")
    w("")
    w("Everything on 127.0.0.1: `postern-load source` → relay → `postern-load sink` "
      "(the sink verifies every message's checksum). Spool and queue on the local disk "
      f"({fs_type(bench.work)}), durable: Postern `fdatasync`s each group commit before "
      "its 250s, Postfix `fsync`s each queue file before its 250 (its default). Every source "
      f"run is capped at {SOURCE_TIMEOUT} s, the drain at {DRAIN_TIMEOUT} s more; fresh spool "
      "and a freshly started relay per run.")
    w("")
    pr = [r for r in results if r["system"] == "postern"]
    workers_note = ""
    if pr:
        ws = sorted({r.get("workers", "?") for r in pr})
        th = sorted({r.get("threads", 0) for r in pr})
        workers_note = (f" (the relay logged {' / '.join(ws)}; "
                        f"{'/'.join(map(str, th))} threads in all)")
    w(f"* Postern: `workers = \"{args.workers}\"`{workers_note}, delivery "
      f"`connections_per_host = {args.postern_delivery_connections}`, log level info to a "
      "file, connection limits raised to 100000.")
    w(f"* Postfix: private instance (`postfix -c DIR`, templates in `bench/postfix/`), "
      f"`default_process_limit = {args.postfix_process_limit}`, smtp destination concurrency "
      f"{args.postfix_process_limit}, smtpd maxproc {args.postfix_smtpd_limit}, no chroot, "
      "log via postlogd to a file, other settings stock (so `in_flow_delay = 1s`: smtpd "
      "slows acceptance when the queue manager falls behind).")
    w(f"* Source, relay and sink share the machine's {os.cpu_count()} cores; in the direct "
      "runs source and sink alone can keep them busy, so a relay in the middle competes "
      "with its own load generators for CPU.")
    w("* accepted/s: the source's accepted ÷ its elapsed time. delivered/s: unique messages "
      "at the sink ÷ (source start → last new message at the sink), so it includes the "
      "relay's drain. Latency: end of data → 250, ms, exact percentiles over all messages.")
    w("* CPU ms/msg: utime+stime of the relay's processes (Postfix: master and all its "
      "children, exited ones through cutime/cstime) from `/proc/PID/stat`, before the "
      "source starts to after the sink is done, ÷ messages accepted. Peak MiB: Postern "
      "VmHWM; Postfix the largest Σ VmRSS over its processes sampled every 0.5 s (shared "
      "pages counted once per process), with Σ Pss at the end of the run in parentheses.")
    w("* machine CPU ms/msg: all busy CPU time of the machine (`/proc/stat`: user, system, "
      "softirq, steal) over the same window ÷ messages accepted: relay, source, sink and the "
      "kernel together (the direct rows are the load tools' own share). unattributed: the "
      "part of that busy time not charged to any of those processes, in % of the machine "
      "(all cores × the window): kernel work done outside process context, or other "
      "programs. Before each run the script waits (up to "
      f"{QUIET_WAIT_PER_RUN} s) until the machine is at most {BACKGROUND_WARN_PCT}% busy.")
    w("")

    w("## Throughput, side by side")
    w("")
    w("| conc | size | direct msgs/s | Postern accepted/s | Postern delivered/s | "
      "Postfix accepted/s | Postfix delivered/s | Postern/Postfix (delivered) | "
      "Postern % of direct (delivered) |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for conc, size in cells:
        dr = by.get(("direct", conc, size, False))
        pn = by.get(("postern", conc, size, False))
        pf = by.get(("postfix", conc, size, False))
        g = lambda r, k: r.get(k) if r else None  # noqa: E731
        w(f"| {conc} | {fmt_size(size)} | {f0(g(dr, 'dlv_rate'))} | {f0(g(pn, 'acc_rate'))} | "
          f"{f0(g(pn, 'dlv_rate'))} | {f0(g(pf, 'acc_rate'))} | {f0(g(pf, 'dlv_rate'))} | "
          f"{ratio(g(pn, 'dlv_rate'), g(pf, 'dlv_rate'))} | "
          f"{pct(g(pn, 'dlv_rate'), g(dr, 'dlv_rate'))} |")
    w("")

    w("## Every run")
    w("")
    w("| conc | size | system | messages | accepted | delivered | accepted/s | delivered/s | "
      "accept p50 / p99 / p99.9 ms | relay CPU ms/msg | machine CPU ms/msg | unattributed "
      "| peak MiB | notes |")
    w("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    order = {"direct": 0, "postern": 1, "postfix": 2}
    for r in sorted(results, key=lambda r: (r["tls"], r["size"], r["conc"], order[r["system"]])):
        name = {"direct": "direct (no relay)", "postern": "Postern",
                "postfix": "Postfix"}[r["system"]] + (" + STARTTLS" if r["tls"] else "")
        mem = "–"
        if r.get("peak_rss_mib") is not None:
            mem = f"{r['peak_rss_mib']:.1f}"
            if r.get("pss_mib") is not None:
                mem += f" ({r['pss_mib']:.1f}), {r.get('procs', 0)} procs"
        notes = "; ".join(r["notes"]) or ""
        w(f"| {r['conc']} | {fmt_size(r['size'])} | {name} | {r['n']:,} | "
          f"{r.get('accepted', 0):,} | {r.get('unique', 0):,} | {f0(r.get('acc_rate'))} | "
          f"{f0(r.get('dlv_rate'))} | {lat(r.get('src', {}))} | "
          f"{f3(r.get('cpu_ms_per_msg'))} | {f3(r.get('machine_ms_per_msg'))} | "
          f"{r.get('other_pct', 0):.0f}% | {mem} | {notes} |")
    w("")

    if idle:
        w("## Idle connections (Postern)")
        w("")
        fail = ", ".join(f"{v} {k}" for k, v in idle["failures"].items()) or "none"
        w(f"{idle['greeted']:,} of {idle['count']:,} connections got the 220 greeting and "
          f"then stayed idle (failures: {fail}). Relay VmRSS idle {idle['before_mib']:.1f} MiB, "
          f"with the connections open {idle['after_mib']:.1f} MiB: **+{idle['delta_mib']:.1f} "
          f"MiB** ({idle['delta_mib'] * KIB * KIB / max(idle['greeted'], 1):,.0f} bytes per "
          f"connection; VmHWM {idle['hwm_mib']:.1f} MiB).")
        w("")

    w("## Targets")
    w("")
    w("| target | measured | verdict |")
    w("|---|---|---|")
    conc, size = TARGETS_CELL
    pn = by.get(("postern", conc, size, False))
    pf = by.get(("postfix", conc, size, False))
    dr = by.get(("direct", conc, size, False))
    cell = f"c={conc}, {fmt_size(size)}"

    def verdict(ok):
        return "**met**" if ok else "**missed**"

    if pn and pf and pn["dlv_rate"] and pf["dlv_rate"]:
        x = pn["dlv_rate"] / pf["dlv_rate"]
        w(f"| relayed throughput ≥ 10× Postfix ({cell}) | {pn['dlv_rate']:,.0f} vs "
          f"{pf['dlv_rate']:,.0f} msgs/s delivered = {x:.1f}× | {verdict(x >= 10)} |")
    else:
        w(f"| relayed throughput ≥ 10× Postfix ({cell}) | not measured | – |")
    if pn and dr and pn["dlv_rate"] and dr["dlv_rate"]:
        x = pn["dlv_rate"] / dr["dlv_rate"]
        w(f"| relayed throughput ≥ 50% of direct ({cell}) | {pn['dlv_rate']:,.0f} vs "
          f"{dr['dlv_rate']:,.0f} msgs/s = {100 * x:.0f}% | {verdict(x >= 0.5)} |")
    else:
        w(f"| relayed throughput ≥ 50% of direct ({cell}) | not measured | – |")
    if pn and pn.get("cpu_ms_per_msg") is not None:
        c = pn["cpu_ms_per_msg"]
        extra = ""
        if pf and pf.get("cpu_ms_per_msg") is not None:
            extra = f" (Postfix {pf['cpu_ms_per_msg']:.2f})"
        w(f"| relay CPU ≤ 0.1 ms/msg ({cell}) | {c:.3f} ms/msg{extra} | {verdict(c <= 0.1)} |")
    else:
        w(f"| relay CPU ≤ 0.1 ms/msg ({cell}) | not measured | – |")
    if pn and pn["src"].get("p99_ms"):
        p = float(pn["src"]["p99_ms"])
        w(f"| accept p99 ≤ 5 ms ({cell}) | {p:.2f} ms | {verdict(p <= 5)} |")
    else:
        w(f"| accept p99 ≤ 5 ms ({cell}) | not measured | – |")
    if idle:
        per10k = idle["delta_mib"] * 10000 / max(idle["greeted"], 1)
        ok = per10k <= 20 and idle["greeted"] == idle["count"]
        if idle["count"] == 10000:
            shown = f"+{idle['delta_mib']:.1f} MiB ({idle['greeted']:,} open)"
        else:
            shown = (f"+{idle['delta_mib']:.1f} MiB for {idle['greeted']:,} open ≈ "
                     f"{per10k:.0f} MiB per 10,000 (extrapolated)")
        w(f"| 10,000 idle connections ≤ 20 MiB | {shown} | {verdict(ok)} |")
    else:
        w("| 10,000 idle connections ≤ 20 MiB | not measured | – |")
    w("")
    partial = [r for r in results if r["notes"]]
    if partial:
        w(f"{len(partial)} run(s) have notes (partial, timed out or with errors); see the "
          "notes column.")
        w("")
    w(f"Logs of every run: `{bench.work}` (kept with --keep)." if args.keep else
      "Per-run logs are deleted at the end; `--keep` keeps them.")
    return "\n".join(out) + "\n"


def postfix_version():
    try:
        r = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                           text=True)
        return r.stdout.strip() or "?"
    except OSError:
        return "not installed"


def fs_type(path):
    try:
        r = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
        return r.stdout.strip()
    except OSError:
        return "?"


# ---------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", help="build directory with postern and postern-load")
    ap.add_argument("--quick", action="store_true",
                    help=f"cells {QUICK_CELLS} with 1/{QUICK_DIVISOR} of the messages, "
                         "2,000 idle connections")
    ap.add_argument("--no-postfix", action="store_true", help="skip the Postfix runs")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct baseline")
    ap.add_argument("--no-postern", action="store_true",
                    help="skip the Postern runs (the STARTTLS and idle rows too)")
    ap.add_argument("--no-tls", action="store_true", help="skip the STARTTLS row")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle connections")
    ap.add_argument("--idle-connections", type=int, default=None,
                    help="idle connections to open (default 10000, --quick 2000)")
    ap.add_argument("--cells", default=None,
                    help="only these cells, e.g. 1:1,1000:100 (concurrency:size in KB)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    ap.add_argument("--workers", default="auto", help='Postern [server] workers (default "auto")')
    ap.add_argument("--postern-delivery-connections", type=int, default=20,
                    help="Postern [delivery] connections_per_host (default 20, the default)")
    ap.add_argument("--postfix-process-limit", type=int, default=100,
                    help="Postfix default_process_limit and smtp destination concurrency")
    ap.add_argument("--postfix-smtpd-limit", type=int, default=1000,
                    help="Postfix smtpd maxproc (one smtpd per client connection)")
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/var/tmp"),
                    help="where the per-run directories go (must be a real disk)")
    ap.add_argument("--out", default=None, help="Markdown output (default BUILD/bench-e2e.md)")
    ap.add_argument("--keep", action="store_true", help="keep the per-run directories")
    ap.add_argument("--budget", type=float, default=900,
                    help="seconds for the whole script; runs that would not fit are skipped")
    args = ap.parse_args()
    args.build_arg = args.build
    args.build = os.path.abspath(args.build)
    out_path = args.out or os.path.join(args.build, "bench-e2e.md")

    check_build(args.build, "e2e")
    if not args.no_postfix and (shutil.which("postfix") is None or os.geteuid() != 0):
        log("Postfix runs need the postfix package and root; skipping them")
        args.no_postfix = True
    if not args.no_tls:
        help_text = subprocess.run([os.path.join(args.build, "postern-load"), "source",
                                    "--help"], capture_output=True, text=True).stdout
        if "--starttls" not in help_text:
            log("this postern-load has no --starttls; skipping the STARTTLS row")
            args.no_tls = True

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    idle_count = args.idle_connections or (2000 if args.quick else 10000)
    if idle_count + 100 > nofile:
        log(f"open files limit {nofile} is too low for {idle_count} idle connections")
        idle_count = max(nofile - 200, 0)

    if args.quick:
        cells = QUICK_CELLS
        divisor = QUICK_DIVISOR
    else:
        cells = [(c, s) for s in SIZES for c in CONCURRENCIES]
        divisor = 1
    if args.cells:
        cells = []
        for item in args.cells.split(","):
            c, kb = item.split(":")
            if int(c) not in CONCURRENCIES or int(kb) * KIB not in SIZES:
                sys.exit(f"e2e: --cells {item}: concurrency must be one of {CONCURRENCIES}, "
                         f"size one of {[x // KIB for x in SIZES]} (KB)")
            cells.append((int(c), int(kb) * KIB))
    systems = ["direct", "postern", "postfix"]
    if args.no_direct:
        systems.remove("direct")
    if args.no_postfix:
        systems.remove("postfix")
    if args.no_postern:
        systems.remove("postern")
        args.no_tls = args.no_idle = True

    bench = Bench(args)
    if fs_type(bench.work) in ("tmpfs", "ramfs"):
        log(f"warning: {bench.work} is on {fs_type(bench.work)}: fsync is free there, "
            "durability costs nothing; use --workdir on a real disk")
    log(f"working directory {bench.work}")

    benchlib.exit_on_signals()

    started = datetime.datetime.utcnow()
    t_start = time.monotonic()
    results, idle = [], None
    ok = False
    skipped = []

    def fits(what):
        if time.monotonic() - t_start + RUN_WORST_CASE <= args.budget:
            return True
        log(f"skipping {what}: it might not finish within --budget {args.budget:.0f} s")
        skipped.append(what)
        return False

    try:
        for conc, size in cells:
            for system in systems:
                n = max(int(COUNTS[(system, size)][conc] * args.scale / divisor), conc, 1)
                if fits(f"{system} c={conc} {fmt_size(size)}"):
                    results.append(run_cell(bench, system, conc, size, n))
        if not args.no_tls and fits("the STARTTLS row"):
            conc, size = TARGETS_CELL
            n = max(int(COUNTS[("postern", size)][conc] * args.scale / divisor / 2), conc)
            results.append(run_cell(bench, "postern", conc, size, n, tls=True))
        if not args.no_idle and idle_count > 0 and fits("the idle connections"):
            idle = run_idle(bench, idle_count)
        ok = True
    finally:
        stop_all(bench.running, log)
        if results or idle:
            md = render(bench, results, idle, cells, started, time.monotonic() - t_start)
            if skipped:
                md += (f"\n**Skipped for lack of time (--budget {args.budget:.0f} s):** "
                       + ", ".join(skipped) + ".\n")
            if not ok:
                md += "\n**Interrupted: the tables above are incomplete.**\n"
            write_report(md, out_path, log)
        if args.keep or not ok:
            log(f"per-run logs kept in {bench.work}")
        else:
            shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    main()
