#!/usr/bin/python3
"""Queue backlog benchmark (bench/backlog.sh): what a large queue costs the relay.

    bench/backlog.sh BUILD_DIR [--messages 200000] [--workers 2] [--keep] ...

One relay (BUILD_DIR/postern, 2 workers by default) on loopback, its only route, for
sink.test, pointing at a 127.0.0.1 port where nothing listens yet, so that every delivery
is deferred; retry_min = retry_max = one day, so the queue waits for the operator. Then:

  1. start the relay: idle VmRSS (from /proc/PID/status);
  2. queue N messages of 1 KB with `postern-load source` (20 connections, 100 messages
     each): accepted msgs/s, VmRSS once /metrics shows every accepted message as a queued
     job (postern_queue_jobs summed over states and workers), RSS per queued message =
     (RSS after - RSS idle) / accepted;
  3. SIGTERM, wait (timed), spool size on disk (du) and in bytes; start the relay again on
     the same spool and measure from the start: /healthz answering (connect, then wait for
     the answer), the SMTP port accepting a connection, the greeting, and the 250 for one
     new message (smtplib, one connection: refused connects are retried every 50 ms, then
     the greeting is waited for); each worker's `spool_recovered` log line (their time
     stamps; the workers replay one after the other, before any loop runs); replay MB/s =
     spool segment bytes / time until the last `spool_recovered`; VmRSS once /metrics
     shows every job queued again, and VmHWM (the peak, replay included);
  4. start `postern-load sink` on that port (--expect: accepted + the probe message), run
     `postern queue flush` (immediate retry of everything), drain msgs/s = messages / (the
     flush -> the sink's last new message); VmRSS sampled for 5 s after, the last sample;
     the queue in /metrics and the spool left on disk.
  5. a Markdown table of every figure, on stdout and in BUILD_DIR/bench-backlog.md.

The machine may be shared: before steps 2, 3 and 4 the script waits (at most
--quiet-wait, 60 s) for other load to fall under --quiet-pct (15%) of the machine, and
notes what it saw; the relay's own CPU time (utime+stime from /proc/PID/stat) and the
machine's busy share are noted for each step, so a slow figure can be told from a busy
machine.

Exit status 1 if a message was lost (the sink's unique count below what the relay
accepted), one arrived corrupt, or a step failed or timed out; figures measured before are
still reported. The probe message carries a valid X-Postern-Load tag (seq above N), so
the sink verifies it like the others.

Bounded: N messages; every wait has a deadline (--step-timeout, default 60 s + 1 ms per
message, for the source, the replay and the drain each; 60 s for a stop; the quiet
waits above). Loopback only (127.0.0.1). Everything started here is stopped in a finally
block (also on SIGTERM or SIGINT) by its PID, and the work directory (default under
/var/tmp: a disk, not tmpfs, for fdatasync to mean something) is removed unless --keep. N = 1,000,000 needs about
1.5 GB there (spool and relay logs)."""

import argparse
import datetime
import os
import re
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import shutil

import benchlib
from benchlib import (CLK_TCK, KIB, MIB, Child, accepting, busy_pct, check_build, cpu_s,
                      fields, free_port, machine_snapshot, read_text, result_fields,
                      status_kb, stop_all, wait_until, write_report)

STOP_TIMEOUT = 60  # seconds for the relay to exit after SIGTERM (drain_timeout is 10)
RETRY_S = 86400  # retry_min and retry_max: the queue waits for the flush


log = benchlib.logger("backlog")


class StepFailed(Exception):
    pass


# ---------------------------------------------------------------------------- helpers


def http_get(port, target, timeout):
    """(status, body) of one GET to 127.0.0.1:port, or raises OSError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise OSError("malformed HTTP answer")
    return int(head[9:12]), body.decode(errors="replace")


def metric_sums(port, timeout=10):
    """{(name, state or result or ""): sum over workers} from /metrics; {} on failure."""
    try:
        status, body = http_get(port, "/metrics", timeout)
    except OSError:
        return {}
    if status != 200:
        return {}
    out = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-z_]+)(\{([^}]*)\})? (\S+)$', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        sub = labels.get("state") or labels.get("result") or ""
        key = (m.group(1), sub)
        out[key] = out.get(key, 0.0) + float(m.group(4))
    return out


def queued_jobs(metrics):
    return int(sum(v for (name, _), v in metrics.items() if name == "postern_queue_jobs"))


def wait_metrics(port, pred, timeout):
    """Reads /metrics every 0.5 s until pred(metrics) holds or timeout s have passed:
    (pred held, the last metrics read)."""
    m = {}

    def met():
        nonlocal m
        m = metric_sums(port)
        return pred(m)

    return wait_until(met, timeout, step=0.5), m


def tree_size(path):
    """(apparent bytes, bytes on disk, files) of the regular files under path."""
    size = disk = files = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(root, n))
            except OSError:
                continue
            size += st.st_size
            disk += st.st_blocks * 512
            files += 1
    return size, disk, files


def segment_bytes(spool):
    """Bytes of the workers' spool files (wN/..., quarantine excluded)."""
    total = 0
    for w in sorted(os.listdir(spool)):
        d = os.path.join(spool, w)
        if not (w.startswith("w") and os.path.isdir(d)):
            continue
        for n in os.listdir(d):
            p = os.path.join(d, n)
            if os.path.isfile(p):
                total += os.path.getsize(p)
    return total


def fnv1a64(data, h=0xcbf29ce484222325):
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def probe_message(seq):
    """A message postern-load sink accepts as intact: X-Postern-Load with the FNV-1a 64
    of the body as it arrives (every line with its CRLF)."""
    lines = [f"backlog probe {seq}: sent while the relay replays its spool".encode()]
    lines += [(f"{i:04d} " + "x" * 60).encode() for i in range(8)]
    body = b"".join(l + b"\r\n" for l in lines)
    head = (f"From: <probe@source.test>\r\nTo: <probe@sink.test>\r\n"
            f"Subject: backlog probe {seq}\r\n"
            f"Message-ID: <backlog-probe-{seq}-{os.getpid()}@source.test>\r\n"
            f"X-Postern-Load: seq={seq} sum={fnv1a64(body):016x} ts={time.time_ns()}\r\n")
    return head.encode() + b"\r\n" + body


def log_time(line):
    """The local time stamp a keyvalue log line starts with, as a Unix time; None if
    there is none."""
    try:
        return datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp()
    except ValueError:
        return None


class LogTail:
    """Reads a growing log file from where it last stopped; returns complete lines."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(64 * MIB)
                self.offset = f.tell()
        except OSError:
            return []
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        return data[:cut].decode(errors="replace").splitlines()


# ---------------------------------------------------------------------------- processes


class Relay(Child):
    def __init__(self, bench, tag):
        self.log_path = os.path.join(bench.work, f"relay-{tag}.log")
        self.t0_wall = time.time()
        self.t0 = time.monotonic()
        with open(self.log_path, "wb") as logf:
            super().__init__(bench.running, [bench.postern, "--config", bench.config], logf,
                             subprocess.STDOUT, stop_timeout=STOP_TIMEOUT, name="relay",
                             log=log)

    def rss_kb(self):
        return status_kb(self.pid, "VmRSS")

    def hwm_kb(self):
        return status_kb(self.pid, "VmHWM")

    def tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 64 * KIB))
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Bench:
    def __init__(self, args):
        self.args = args
        self.postern = os.path.join(args.build, "postern")
        self.load = os.path.join(args.build, "postern-load")
        self.work = tempfile.mkdtemp(prefix="postern-backlog.", dir=args.workdir)
        self.spool = os.path.join(self.work, "spool")
        self.config = os.path.join(self.work, "postern.toml")
        self.smtp_port = free_port()
        self.admin_port = free_port()
        self.hop_port = free_port()
        self.running = []
        self.accepted = self.probes = 0
        self.idle_kb = None
        self.figures = []  # (step, figure, value)
        self.failures = []
        self.busy_steps = []  # steps that began on a machine busy with other work

    def note(self, step, figure, value):
        self.figures.append((step, figure, value))
        log(f"{step}: {figure}: {value}")

    def quiet(self, step, relay=None):
        """Waits (at most --quiet-wait s) for other load on the machine to fall below
        --quiet-pct, measured over 1 s; the relay's own CPU time (if it runs) is not
        counted as other load but noted. Notes what it saw."""
        waited = 0.0
        while True:
            a, r0 = machine_snapshot(), cpu_s(relay.pid) if relay else 0.0
            time.sleep(1)
            b, r1 = machine_snapshot(), cpu_s(relay.pid) if relay else 0.0
            waited += 1
            total = b[1] - a[1]
            own = 100.0 * (r1 - r0) * CLK_TCK / total if total > 0 else 0.0
            pct = max(busy_pct(a, b) - own, 0.0)
            if pct < self.args.quiet_pct or waited >= self.args.quiet_wait:
                break
        mine = f"; the relay itself {own:.0f}%" if relay else ""
        self.note(step, "machine busy before, others", f"{pct:.0f}% of {os.cpu_count()} "
                  f"cores{mine} (waited {waited:.0f} s, at most {self.args.quiet_wait:.0f})")
        if pct >= self.args.quiet_pct:
            self.busy_steps.append(step)

    def fail(self, what):
        self.failures.append(what)
        log(f"FAILED: {what}")

    def write_config(self):
        a = self.args
        with open(self.config, "w") as f:
            f.write(f"""# generated by bench/backlog.py
[server]
hostname = "relay.backlog.test"
workers = {a.workers}
spool_dir = "{self.spool}"
log_level = "info"

[[listener]]
address = "127.0.0.1:{self.smtp_port}"

[relay]
relay_networks = ["127.0.0.0/8"]

# Nothing listens here until step 4: every delivery is deferred.
[[route]]
domain = "sink.test"
next_hop = "127.0.0.1:{self.hop_port}"

[admin]
address = "127.0.0.1:{self.admin_port}"

[delivery]
retry_min = {RETRY_S}
retry_max = {RETRY_S}
""")


def fmt_mib(kb):
    return "–" if kb is None else f"{kb / KIB:.1f} MiB"


def fmt_s(s):
    return "–" if s is None else f"{s:.3f} s"


def fmt_rate(r, unit="msgs/s"):
    return "–" if r is None else f"{r:,.0f} {unit}"


# ---------------------------------------------------------------------------- steps


def step1_start(b):
    relay = Relay(b, "1")

    def up():
        if not relay.alive():
            return True
        try:
            return http_get(b.admin_port, "/healthz", 2)[0] == 200
        except OSError:
            return False

    if not wait_until(up, 30) or not relay.alive():
        raise StepFailed("the relay did not start:\n" + relay.tail())
    if not wait_until(lambda: accepting(b.smtp_port), 15):
        raise StepFailed("the relay is not accepting SMTP")
    time.sleep(0.5)
    b.idle_kb = relay.rss_kb()
    b.note("1 start", "relay VmRSS idle", fmt_mib(b.idle_kb))
    return relay


def step2_queue(b, relay):
    a = b.args
    out_path = os.path.join(b.work, "source.out")
    err_path = os.path.join(b.work, "source.err")
    argv = [b.load, "source", "--server", f"127.0.0.1:{b.smtp_port}", "--messages",
            str(a.messages), "--concurrency", str(a.concurrency), "--messages-per-connection",
            str(a.messages_per_connection), "--size", str(a.size), "--to-domain", "sink.test",
            "--timeout", str(a.step_timeout)]
    b.quiet("2 queue", relay)
    log("queueing: " + " ".join(argv[1:]))
    cpu0, mach0 = cpu_s(relay.pid), machine_snapshot()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        src = Child(b.running, argv, out, err)
        try:
            src.proc.wait(a.step_timeout + 30)
        except subprocess.TimeoutExpired:
            src.stop()
            raise StepFailed("postern-load source did not finish")
    src.stop()
    result = result_fields(open(out_path).read(), "result ")
    if not result:
        raise StepFailed("no result from postern-load source: "
                         + open(err_path).read()[-500:])
    b.accepted = int(result["accepted"])
    elapsed = float(result["elapsed_s"])
    b.note("2 queue", "messages accepted", f"{b.accepted:,} of {a.messages:,} "
           f"(tempfail {int(result['tempfail']):,}, rejected {int(result['rejected']):,}, "
           f"errors {int(result['errors']):,})")
    b.note("2 queue", "accepted msgs/s", f"{float(result['msgs_per_s']):,.0f} msgs/s "
           f"({elapsed:.2f} s; accept p50 {float(result['p50_ms']):.2f} ms, "
           f"p99 {float(result['p99_ms']):.2f} ms)")
    if "TIMED OUT" in open(out_path).read():
        b.fail("step 2: the source timed out")
    if b.accepted == 0:
        raise StepFailed("the relay accepted nothing")
    b.note("2 queue", "relay CPU while queueing", f"{cpu_s(relay.pid) - cpu0:.2f} s, "
           f"{1000 * (cpu_s(relay.pid) - cpu0) / b.accepted:.3f} ms/msg (machine "
           f"{busy_pct(mach0, machine_snapshot()):.0f}% busy, all processes)")

    # The queue as the relay reports it: every accepted message a job (ready, deferred or
    # active), before RSS is taken.
    all_queued, m = wait_metrics(b.admin_port, lambda m: queued_jobs(m) >= b.accepted, 60)
    if not all_queued:
        b.fail(f"step 2: /metrics shows {queued_jobs(m):,} queued jobs, not {b.accepted:,}")
    time.sleep(1)
    m = metric_sums(b.admin_port)
    b.note("2 queue", "queue in /metrics", queue_text(m))
    b.queued_kb = relay.rss_kb()
    b.note("2 queue", "relay VmRSS with the queue", f"{fmt_mib(b.queued_kb)} "
           f"(VmHWM {fmt_mib(relay.hwm_kb())})")
    per = (b.queued_kb - b.idle_kb) * KIB / b.accepted
    b.note("2 queue", "RSS per queued message", f"{per:,.0f} bytes")


def queue_text(m):
    states = {s: int(m.get(("postern_queue_jobs", s), 0)) for s in ("ready", "deferred", "active")}
    return (f"{queued_jobs(m):,} jobs (ready {states['ready']:,}, deferred "
            f"{states['deferred']:,}, active {states['active']:,}); "
            f"accepted_total {int(m.get(('postern_messages_accepted_total', ''), 0)):,}; "
            f"spool_bytes {m.get(('postern_spool_bytes', ''), 0) / MIB:,.1f} MiB in "
            f"{int(m.get(('postern_spool_segments', ''), 0))} segments")


class Probe(threading.Thread):
    """From the relay's start: SMTP port accepting, greeting, 250 for one new message."""

    def __init__(self, b, t0, deadline, seq):
        super().__init__(daemon=True)
        self.b, self.t0, self.deadline, self.seq = b, t0, deadline, seq
        self.connected = self.greeted = self.accepted = None
        self.error = None

    def run(self):
        try:
            while time.monotonic() < self.deadline:
                smtp = smtplib.SMTP(timeout=5)
                try:
                    smtp.sock = socket.create_connection(("127.0.0.1", self.b.smtp_port),
                                                         timeout=2)
                except OSError:
                    time.sleep(0.05)
                    continue
                self.connected = time.monotonic() - self.t0
                smtp.sock.settimeout(max(self.deadline - time.monotonic(), 0.1))
                smtp.file = None
                code, msg = smtp.getreply()
                if code != 220:
                    self.error = f"greeting {code} {msg!r}"
                    smtp.close()
                    return
                self.greeted = time.monotonic() - self.t0
                smtp.sock.settimeout(30)
                smtp.ehlo("probe.backlog.test")
                smtp.sendmail("probe@source.test", [f"probe{self.seq}@sink.test"],
                              probe_message(self.seq))
                self.accepted = time.monotonic() - self.t0
                smtp.quit()
                return
            self.error = "the SMTP port never accepted"
        except (OSError, smtplib.SMTPException) as e:
            self.error = f"{type(e).__name__}: {e}"


class Health(threading.Thread):
    """From the relay's start: /healthz answering 200 (connect retried every 50 ms, then
    the answer waited for)."""

    def __init__(self, b, t0, deadline):
        super().__init__(daemon=True)
        self.b, self.t0, self.deadline = b, t0, deadline
        self.connected = self.answered = None
        self.error = None

    def run(self):
        while time.monotonic() < self.deadline:
            try:
                s = socket.create_connection(("127.0.0.1", self.b.admin_port), timeout=2)
            except OSError:
                time.sleep(0.05)
                continue
            self.connected = time.monotonic() - self.t0
            try:
                with s:
                    s.settimeout(max(self.deadline - time.monotonic(), 0.1))
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Connection: close\r\n\r\n")
                    data = s.recv(4096)
                if data.startswith(b"HTTP/1.1 200"):
                    self.answered = time.monotonic() - self.t0
                else:
                    self.error = f"/healthz answered {data[:40]!r}"
            except OSError as e:
                self.error = f"/healthz: {e}"
            return
        self.error = "the admin port never accepted"


def step3_restart(b, relay):
    a = b.args
    took = relay.stop()
    if took is None:
        b.fail("step 3: the relay had to be killed (no exit within "
               f"{STOP_TIMEOUT} s of SIGTERM)")
    b.note("3 restart", "stop (SIGTERM to exit)", fmt_s(took))
    size, disk, files = tree_size(b.spool)
    b.spool_bytes = segment_bytes(b.spool)
    b.note("3 restart", "spool on disk (du)", f"{disk / MIB:,.1f} MiB in {files} files "
           f"({size / MIB:,.1f} MiB apparent; {b.spool_bytes / MIB:,.1f} MiB of worker "
           f"spool files, {b.spool_bytes / b.accepted:,.0f} bytes per message)")

    b.quiet("3 restart")
    mach0 = machine_snapshot()
    relay = Relay(b, "2")
    deadline = relay.t0 + a.step_timeout
    seq = a.messages + 1
    probe = Probe(b, relay.t0, deadline, seq)
    health = Health(b, relay.t0, deadline)
    probe.start()
    health.start()

    tail = LogTail(relay.log_path)
    recovered = {}  # worker -> (seconds since start, messages)
    progress = 0  # spool_replaying lines
    replayed_rates = []  # per worker, from spool_replayed
    listening = None
    while time.monotonic() < deadline:
        for line in tail.lines():
            if "event=spool_replaying" in line:
                progress += 1
            elif "event=spool_replayed" in line:
                f = fields(line)
                replayed_rates.append(f"{f.get('mb_per_s', '?')} MB/s in {f.get('seconds', '?')} s")
            elif "event=spool_recovered" in line:
                f = fields(line)
                ts = log_time(line)
                at = ts - relay.t0_wall if ts is not None else time.monotonic() - relay.t0
                recovered[int(f.get("worker", -1))] = (at, int(f.get("messages", 0)))
            elif "event=listening" in line and listening is None:
                ts = log_time(line)
                listening = ts - relay.t0_wall if ts is not None else None
            elif "event=startup_failed" in line:
                raise StepFailed("the relay did not start again: " + line)
        if len(recovered) >= a.workers and not probe.is_alive() and not health.is_alive():
            break
        if not relay.alive():
            raise StepFailed("the relay exited during the restart:\n" + relay.tail())
        time.sleep(0.02)
    probe.join(max(deadline - time.monotonic(), 0) + 1)
    health.join(max(deadline - time.monotonic(), 0) + 1)
    cpu_text = (f"{cpu_s(relay.pid):.2f} s in {time.monotonic() - relay.t0:.2f} s (machine "
                f"{busy_pct(mach0, machine_snapshot()):.0f}% busy, all processes)")

    if len(recovered) < a.workers:
        b.fail(f"step 3: {len(recovered)} of {a.workers} spool_recovered lines within "
               f"{a.step_timeout:.0f} s")
    replay_s = max(t for t, _ in recovered.values()) if recovered else None
    replayed = sum(n for _, n in recovered.values())
    prev = 0.0
    per_worker = []
    for w in sorted(recovered):
        t, n = recovered[w]
        per_worker.append(f"w{w} {n:,} msgs at {t:.3f} s (+{t - prev:.3f})")
        prev = t
    b.note("3 restart", "spool_recovered (per worker, from the start)",
           "; ".join(per_worker) or "none")
    b.note("3 restart", "replay progress lines (spool_replaying, one a second)", f"{progress}")
    b.note("3 restart", "replay per worker (spool_replayed: reading and checking only)",
           "; ".join(replayed_rates) or "not logged")
    b.note("3 restart", "replay finished (last spool_recovered)",
           f"{fmt_s(replay_s)}; {replayed:,} messages recovered")
    if replayed != b.accepted:
        b.fail(f"step 3: {replayed:,} messages recovered, {b.accepted:,} were accepted")
    if replay_s:
        b.note("3 restart", "replay rate", f"{b.spool_bytes / MIB / replay_s:,.1f} MiB/s "
               f"({b.spool_bytes / MIB:,.1f} MiB), {replayed / replay_s:,.0f} msgs/s")
    if listening is not None:
        b.note("3 restart", "`listening` logged", fmt_s(listening))
    if health.answered is None:
        b.fail(f"step 3: /healthz: {health.error}")
    b.note("3 restart", "/healthz answers 200",
           f"{fmt_s(health.answered)} (TCP connect at {fmt_s(health.connected)})")
    b.probes = 1 if probe.accepted is not None else 0
    if probe.accepted is None:
        b.fail(f"step 3: probe message: {probe.error}")
    b.note("3 restart", "first 250 for a new message",
           f"{fmt_s(probe.accepted)} (TCP connect at {fmt_s(probe.connected)}, "
           f"greeting at {fmt_s(probe.greeted)})")
    b.note("3 restart", "relay CPU from the start to the first 250 and the last "
           "spool_recovered", cpu_text)

    all_queued, m = wait_metrics(
        b.admin_port, lambda m: (queued_jobs(m) >= b.accepted + b.probes
                                 and m.get(("postern_queue_jobs", "active"), 0) == 0),
        max(deadline - time.monotonic(), 30))
    if not all_queued:
        b.fail(f"step 3: /metrics shows {queued_jobs(m):,} queued jobs after the restart, "
               f"not {b.accepted + b.probes:,}")
    time.sleep(1)
    m = metric_sums(b.admin_port)
    b.note("3 restart", "queue in /metrics after replay", queue_text(m))
    b.note("3 restart", "relay VmRSS after replay",
           f"{fmt_mib(relay.rss_kb())} (VmHWM {fmt_mib(relay.hwm_kb())}, "
           f"{time.monotonic() - relay.t0:.1f} s after the start)")
    return relay


def step4_drain(b, relay):
    a = b.args
    expect = b.accepted + b.probes
    b.quiet("4 drain", relay)
    sink = benchlib.Sink(b.running, b.load, b.work, b.hop_port, expect, a.step_timeout)

    cpu0, mach0 = cpu_s(relay.pid), machine_snapshot()
    t_flush = time.time()
    r = subprocess.run([b.postern, "queue", "flush", "--config", b.config, "--admin",
                        f"127.0.0.1:{b.admin_port}"], capture_output=True, text=True,
                       timeout=60)
    flush_s = time.time() - t_flush
    if r.returncode != 0:
        b.fail(f"step 4: postern queue flush: exit {r.returncode}: {r.stderr.strip()}")
    b.note("4 drain", "postern queue flush", f"{r.stdout.strip() or r.stderr.strip()} "
           f"(answered in {flush_s:.3f} s)")
    try:
        sink.proc.wait(a.step_timeout + 30)
    except subprocess.TimeoutExpired:
        b.fail("step 4: the sink did not finish")
    sink.stop()
    cpu1, mach1 = cpu_s(relay.pid), machine_snapshot()
    res = sink.result()
    if not res:
        raise StepFailed("no result from the sink: " + read_text(sink.err_path)[-500:])
    if "TIMED OUT" in read_text(sink.out_path):
        b.fail(f"step 4: the sink timed out after {a.step_timeout:.0f} s")
    unique, corrupt = int(res["unique"]), int(res["corrupt"])
    dups = int(res["duplicates"])
    drain_s = float(res["last_unix_s"]) - t_flush if unique else None
    b.note("4 drain", "messages at the sink",
           f"{unique:,} unique of {expect:,} accepted ({b.accepted:,} queued + {b.probes} "
           f"probe), {dups:,} duplicates, {corrupt:,} corrupt")
    b.note("4 drain", "drain (flush -> last new message at the sink)",
           f"{fmt_s(drain_s)}, {fmt_rate(unique / drain_s)}" if drain_s else "nothing arrived")
    per_msg = f", {1000 * (cpu1 - cpu0) / unique:.3f} ms/msg" if unique else ""
    b.note("4 drain", "relay CPU during the drain", f"{cpu1 - cpu0:.2f} s{per_msg} "
           f"(machine {busy_pct(mach0, mach1):.0f}% busy, all processes)")
    b.lost = expect - unique
    if b.lost > 0:
        b.fail(f"step 4: {b.lost:,} accepted messages did not arrive")
    if corrupt:
        b.fail(f"step 4: {corrupt:,} corrupt messages at the sink")

    samples = []
    for _ in range(10):
        time.sleep(0.5)
        samples.append(relay.rss_kb())
    b.note("4 drain", "relay VmRSS after the drain (5 s later)",
           f"{fmt_mib(samples[-1])} (samples {fmt_mib(min(samples))} - "
           f"{fmt_mib(max(samples))}; VmHWM {fmt_mib(relay.hwm_kb())})")
    empty, m = wait_metrics(b.admin_port, lambda m: bool(m) and queued_jobs(m) == 0, 30)
    if not empty:
        b.fail(f"step 4: /metrics still shows {queued_jobs(m):,} queued jobs")
    b.note("4 drain", "queue in /metrics after the drain", queue_text(m))
    took = relay.stop()
    size, disk, files = tree_size(b.spool)
    b.note("4 drain", "spool on disk after the drain and a stop",
           f"{disk / MIB:,.1f} MiB in {files} files (stop took {fmt_s(took)})")


# ---------------------------------------------------------------------------- report


def render(b, started, elapsed, ok):
    a = b.args
    out = []
    w = out.append
    w(f"# Postern queue backlog: {a.messages:,} messages of {a.size:,} bytes")
    w("")
    w(f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {a.workers} workers, "
      f"build `{a.build_arg}`, spool in `{a.workdir}` ({fs_type(b.work)}); next hop down "
      f"until the flush, retry_min = retry_max = {RETRY_S} s; source: concurrency "
      f"{a.concurrency}, {a.messages_per_connection} messages per connection. "
      f"{elapsed:.0f} s in all.")
    w("")
    w("| step | figure | measured |")
    w("|---|---|---|")
    for step, fig, val in b.figures:
        w(f"| {step} | {fig} | {val} |")
    w("")
    if b.failures:
        w("**Failed:** " + "; ".join(b.failures) + ".")
        w("")
    if b.busy_steps:
        w(f"**Other work was running on the machine** when step(s) "
          f"{', '.join(b.busy_steps)} began (≥ {a.quiet_pct:.0f}% busy after waiting up "
          f"to {a.quiet_wait:.0f} s): rates there are lower than on an idle machine.")
        w("")
    if not ok:
        w("**Interrupted: the table is incomplete.**")
        w("")
    w(f"`bench/backlog.sh {a.build_arg} --messages {a.messages}`")
    return "\n".join(out) + "\n"


def fs_type(path):
    """ext4, xfs, tmpfs...: findmnt's name (stat -f says ext2/ext3 for ext4), else stat's."""
    for argv in (["findmnt", "-no", "FSTYPE", "-T", path], ["stat", "-f", "-c", "%T", path]):
        try:
            r = subprocess.run(argv, capture_output=True, text=True)
        except OSError:
            continue
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", help="build directory with postern and postern-load")
    ap.add_argument("--messages", type=int, default=200000,
                    help="messages to queue (default 200,000; 1,000,000 for the full figure)")
    ap.add_argument("--size", type=int, default=1024, help="message size (default 1024)")
    ap.add_argument("--concurrency", type=int, default=20, help="source connections (20)")
    ap.add_argument("--messages-per-connection", type=int, default=100,
                    help="source messages per connection (100)")
    ap.add_argument("--workers", type=int, default=2, help="relay workers (2)")
    ap.add_argument("--step-timeout", type=float, default=None,
                    help="seconds for the source, the replay and the drain each "
                         "(default 60 + messages / 1000)")
    ap.add_argument("--quiet-wait", type=float, default=60,
                    help="seconds to wait before each step for other load on the machine "
                         "to pass (default 60; then the step runs anyway, noted)")
    ap.add_argument("--quiet-pct", type=float, default=15,
                    help="machine busy %% below which it counts as quiet (default 15)")
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/var/tmp"),
                    help="where the spool and logs go (a real disk; default /var/tmp)")
    ap.add_argument("--out", default=None, help="Markdown output (BUILD/bench-backlog.md)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.messages < 1 or args.workers < 1:
        sys.exit("backlog: --messages and --workers must be positive")
    if args.step_timeout is None:
        args.step_timeout = 60 + args.messages / 1000
    args.build_arg = args.build
    args.build = os.path.abspath(args.build)
    out_path = args.out or os.path.join(args.build, "bench-backlog.md")
    check_build(args.build, "backlog")

    b = Bench(args)
    if fs_type(b.work) in ("tmpfs", "ramfs"):
        log(f"warning: {b.work} is on {fs_type(b.work)}: use --workdir on a real disk")
    log(f"working directory {b.work}; SMTP 127.0.0.1:{b.smtp_port}, admin "
        f"127.0.0.1:{b.admin_port}, next hop 127.0.0.1:{b.hop_port}")
    b.write_config()

    benchlib.exit_on_signals()

    started = datetime.datetime.utcnow()
    t_start = time.monotonic()
    ok = False
    try:
        relay = step1_start(b)
        step2_queue(b, relay)
        relay = step3_restart(b, relay)
        step4_drain(b, relay)
        ok = True
    except (StepFailed, benchlib.StartFailed) as e:
        b.fail(str(e))
        ok = True  # reported as a failure, not an interruption
    finally:
        for r in b.running:
            if isinstance(r, Relay) and b.failures:
                log(f"{r.log_path} ends:\n" + r.tail())
        stop_all(b.running, log)
        md = render(b, started, time.monotonic() - t_start, ok)
        write_report(md, out_path, log)
        if args.keep:
            log(f"kept {b.work}")
        else:
            shutil.rmtree(b.work, ignore_errors=True)
    return 1 if b.failures else 0


if __name__ == "__main__":
    sys.exit(main())
