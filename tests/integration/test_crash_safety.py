"""Crash safety (issue 5): the durability contract of DESIGN.md under the failures it
names, against the real binary.

* KillUnderLoadTest     -- postern-load source pushes messages through the relay while
                           the test kill -9s and restarts it several times at random
                           moments; every message that got its 250 (source --ack-log)
                           must reach the downstream intact. Duplicates are counted and
                           allowed only for a message in flight at a kill. Prints a
                           one-line summary on stderr.
* DownstreamDownTest    -- nothing listens downstream for several retry rounds while
                           messages keep arriving; the relay retries on its backoff
                           schedule and, once the downstream is up, delivers everything
                           once, oldest first.
* RecoveredWhileDownTest -- messages recovered at start while the downstream is down
                           are delivered once it is up (regression).
* ParallelRefusalsBackOffOnceTest -- parallel connections refused together count as
                           one failed round (one retry_min backoff).
* DiskFullTmpfsTest,    -- the spool's file system fills up (a real small tmpfs), or a
  DiskFullRlimitTest       file-size limit makes spool writes fail (EFBIG): clients get
                           452 4.3.1, the relay stays up, nothing acknowledged is lost
                           (also across a kill -9), and mail is accepted again once space
                           is back.
* TornTailTest          -- the last record of the last spool segment is cut short or
                           garbled while the relay is stopped; recovery logs what it
                           skipped, delivers everything before it, and not the torn one.

Config: retry_min = 1, retry_max = 2 (seconds), idle_timeout = 1.
Set POSTERN_CRASH_SEED to replay the kill schedule of a KillUnderLoadTest run.
"""

import datetime
import errno
import os
import random
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from harness import (HOST, Downstream, Relay, RelayTestCase, assert_relayed, postern_bin,
                     split_received)

FROM = "crash@origin.test"


def load_bin():
    """Path of postern-load ($POSTERN_LOAD_BIN, else next to the postern binary)."""
    path = os.environ.get("POSTERN_LOAD_BIN") or os.path.join(
        os.path.dirname(postern_bin()), "postern-load")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError(f"postern-load not found or not executable: {path} "
                             f"(set POSTERN_LOAD_BIN)")
    return path


def fnv1a64(data):
    """The checksum postern-load puts in its X-Postern-Load tag (bench/load_message.h)."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


LOAD_TAG_RE = re.compile(rb"^X-Postern-Load: seq=(\d+) sum=([0-9a-f]{16}) ts=(\d+)\r$",
                         re.MULTILINE)
LOG_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def log_events(text, event):
    """(datetime, line) for every relay log line of `event` (key=value format)."""
    out = []
    for line in text.splitlines():
        if f" event={event}" in line and (m := LOG_TIME_RE.match(line)):
            out.append((datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f"), line))
    return out


class CrashCase(RelayTestCase):
    """RelayTestCase whose relay config can be edited before the first start.

    config_lines: {"[section]": ["key = value", ...]} inserted right after that section's
    header in the harness-written config."""

    start_downstream = False
    relay_kwargs = {}
    config_lines = {}

    def setUp(self):
        self.downstream = Downstream()
        if self.start_downstream:
            self.downstream.start()
        self.addCleanup(self.downstream.stop)
        self.before_relay()
        self.relay = Relay(self.downstream.port, **self.relay_options())
        text = self.relay.config_text
        for header, lines in self.config_lines.items():
            self.assertIn(header + "\n", text)
            text = text.replace(header + "\n", header + "\n" + "".join(l + "\n" for l in lines), 1)
        self.relay.config_text = text
        with open(self.relay.config_path, "w") as f:
            f.write(text)
        self.addCleanup(self._cleanup_relay)
        self.before_start()
        self.relay.start()

    def relay_options(self):
        return dict(self.relay_kwargs)

    def before_relay(self):
        pass

    def before_start(self):
        pass

    def send_one(self, s, body, rcpts):
        """One transaction on an open smtplib session; returns the end-of-data reply."""
        code, resp = s.mail(FROM)
        self.assertEqual(code, 250, resp)
        for r in rcpts:
            code, resp = s.rcpt(r)
            self.assertEqual(code, 250, resp)
        return s.data(body)

    def wait_delivered(self, n, timeout):
        got = self.downstream.wait_for(n, timeout)
        self.assertGreaterEqual(got, n, f"only {got} of {n} messages delivered within "
                                        f"{timeout} s: {self.downstream.snapshot()}")


def numbered_body(tag, i, size=300):
    """A message identified by its Subject and Message-ID; one line starts with dots, so
    the transport must stuff and unstuff it on every hop."""
    head = (f"Subject: {tag} #{i}\r\nMessage-ID: <{i}.{tag}@origin.test>\r\n\r\n"
            f"first line of {tag} #{i}\r\n..a stuffed dot\r\n").encode()
    fill = b"".join(b"%s %d line %d %s\r\n" % (tag.encode(), i, k, b"x" * 60)
                    for k in range(max(1, size // 80)))
    return head + fill + b"last line\r\n"


SUBJECT_RE = re.compile(rb"\r\nSubject: (\S+) #(\d+)\r\n")


def subject_number(msg, tag):
    m = SUBJECT_RE.search(msg.data)
    if not m or m.group(1) != tag.encode():
        raise AssertionError(f"unexpected message at the downstream: {msg.data[:300]!r}")
    return int(m.group(2))


# --------------------------------------------------------------------------------------
# (a) kill -9 under load


class DeliveryTally:
    """Every message the downstream accepted, checked and indexed by postern-load seq."""

    def __init__(self, downstream, rcpts):
        self.downstream = downstream
        self.rcpts = list(rcpts)
        self.seen = 0
        self.copies = {}        # (seq, rcpt) -> [(arrival (monotonic), DATA start ts)]
        self.corrupt = []       # (reason, first bytes)
        self.transactions = 0
        # CLOCK_REALTIME (the tag's ts) to this process's monotonic clock.
        self.offset = time.time() - time.monotonic()

    def update(self):
        msgs = self.downstream.snapshot()
        for msg in msgs[self.seen:]:
            self._add(msg)
        self.seen = len(msgs)

    def _add(self, msg):
        self.transactions += 1
        try:
            header, rest = split_received(msg.data)
        except AssertionError as e:
            self.corrupt.append((str(e), msg.data[:200]))
            return
        end = rest.find(b"\r\n\r\n")
        tag = LOAD_TAG_RE.search(rest, 0, end + 2) if end >= 0 else None
        if tag is None:
            self.corrupt.append(("no X-Postern-Load tag", msg.data[:300]))
            return
        seq, total, ts = int(tag.group(1)), int(tag.group(2), 16), int(tag.group(3))
        if fnv1a64(rest[end + 4:]) != total:
            self.corrupt.append((f"seq {seq}: body checksum mismatch", msg.data[:300]))
            return
        if msg.mail_from != "load@source.test" or not set(msg.rcpt_tos) <= set(self.rcpts):
            self.corrupt.append((f"seq {seq}: envelope {msg.mail_from!r} {msg.rcpt_tos!r}", b""))
            return
        for r in msg.rcpt_tos:
            self.copies.setdefault((seq, r), []).append((msg.time, ts))

    def complete(self, seq):
        return all((seq, r) in self.copies for r in self.rcpts)

    def duplicated(self, seq):
        return any(len(self.copies.get((seq, r), ())) > 1 for r in self.rcpts)

    def duplicate_kinds(self, seq):
        """{"spool"} if a copy the relay spooled once went out twice (same DATA start),
        {"client"} if the client sent it twice (its 250 lost in a kill), or both."""
        kinds = set()
        for r in self.rcpts:
            ts = [t for _, t in self.copies.get((seq, r), ())]
            if len(set(ts)) < len(ts):
                kinds.add("spool")
            if len(set(ts)) > 1:
                kinds.add("client")
        return kinds

    def resend_pairs(self):
        """(kind, seq, rcpt, t_first, t_again) for every copy sent again: "spool" pairs
        are consecutive arrivals of one spooled copy (t = arrival times), "client" pairs
        consecutive DATA starts of the client's sends (t = DATA start times); all on the
        monotonic clock."""
        pairs = []
        for (seq, r), copies in self.copies.items():
            by_ts = {}
            for arrival, ts in copies:
                by_ts.setdefault(ts, []).append(arrival)
            for arrivals in by_ts.values():
                arrivals.sort()
                pairs += [("spool", seq, r, a, b) for a, b in zip(arrivals, arrivals[1:])]
            starts = sorted(ts / 1e9 - self.offset for ts in by_ts)
            pairs += [("client", seq, r, a, b) for a, b in zip(starts, starts[1:])]
        return pairs


class KillUnderLoadTest(CrashCase):
    start_downstream = True
    relay_kwargs = {"workers": 2}

    MESSAGES = 6000
    RCPTS = ["rcpt0@sink.test", "rcpt1@sink.test"]   # postern-load's recipient names
    KILLS = 5                   # while the source is sending (and the relay delivering)
    STEP_TIMEOUT = 60           # bound on every wait below
    # A copy counts as in flight at a kill that came at most IN_FLIGHT seconds after it
    # was delivered (spool resend: the Done record was not yet durable) or sent (client
    # resend: the 250 was not yet back), or EARLY seconds before (the downstream may
    # finish reading a message after the relay that sent it died).
    IN_FLIGHT = 1.0
    EARLY = 0.2

    def ack_count(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    def wait_listening(self, timeout=10):
        """The log of the relay's current run once it logged `listening`, i.e. once every
        worker has recovered its spool. (The port accepts earlier: worker 0 listens while
        worker 1 is still recovering.)"""
        deadline = time.monotonic() + timeout
        while True:
            text = self.relay.log_text()
            text = text[text.rindex("---- harness: starting"):]
            if " event=listening " in text:
                return text
            self.assertLess(time.monotonic(), deadline, f"relay not listening:\n{text}")
            time.sleep(0.02)

    def kill_and_restart(self, rng, kills):
        time.sleep(rng.uniform(0, 0.05))
        kills.append(time.monotonic())
        self.relay.kill9()
        time.sleep(rng.uniform(0.05, 0.3))     # clients meet a closed port meanwhile
        self.relay.start()

    def test_kill9_under_load_loses_nothing_acknowledged(self):
        seed = int(os.environ.get("POSTERN_CRASH_SEED") or random.randrange(1 << 32))
        rng = random.Random(seed)
        ack_path = os.path.join(self.relay.tmp, "acks.txt")
        out_path = os.path.join(self.relay.tmp, "source.out")
        n = self.MESSAGES
        tally = DeliveryTally(self.downstream, self.RCPTS)
        kills = []
        with open(out_path, "wb") as out:
            source = subprocess.Popen(
                [load_bin(), "source", "--server", f"{HOST}:{self.relay.port}",
                 "--messages", str(n), "--concurrency", "8", "--size", "1024",
                 "--recipients", str(len(self.RCPTS)), "--messages-per-connection", "50",
                 "--timeout", "100", "--ack-log", ack_path, "--quiet"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: source.poll() is None and (source.kill(), source.wait()))

        def source_output():
            with open(out_path, "rb") as f:
                return f.read().decode(errors="replace")

        # Kill k when the acknowledged count crosses a random point of the k-th slice of
        # the run, so the kills fall at random moments but always while the source sends.
        marks = [int(n * (k + rng.uniform(0.1, 0.9)) / (self.KILLS + 1))
                 for k in range(self.KILLS)]
        for mark in marks:
            deadline = time.monotonic() + self.STEP_TIMEOUT
            while self.ack_count(ack_path) < mark:
                if source.poll() is not None:
                    self.fail(f"postern-load source ended before the kill at {mark} "
                              f"acknowledged:\n{source_output()}")
                self.assertLess(time.monotonic(), deadline,
                                f"{mark} messages not acknowledged in time")
                time.sleep(0.005)
            self.kill_and_restart(rng, kills)

        try:
            rc = source.wait(timeout=110)
        except subprocess.TimeoutExpired:
            self.fail("postern-load source did not finish")
        self.assertEqual(rc, 0, f"postern-load source did not get every message "
                                f"accepted:\n{source_output()}")
        with open(ack_path, "rb") as f:
            acked = [int(x) for x in f.read().split()]
        self.assertEqual(len(acked), len(set(acked)), "a seq was acknowledged twice")
        self.assertEqual(sorted(acked), list(range(1, n + 1)))

        deadline = time.monotonic() + self.STEP_TIMEOUT
        while True:
            tally.update()
            missing = [s for s in acked if not tally.complete(s)]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(2.5)         # a duplicate would still be on its way (retry_max = 2 s)
        tally.update()

        transactions = tally.transactions
        lost = [s for s in acked if not tally.complete(s)]
        duplicated = [s for s in acked if tally.duplicated(s)]
        extra = sum(len(v) - 1 for v in tally.copies.values())
        kinds = [tally.duplicate_kinds(s) for s in duplicated]
        pairs = tally.resend_pairs()
        lags = [min((k - first for k in kills if k >= first - self.EARLY), default=99)
                for _, _, _, first, _ in pairs]
        delivered = sum(1 for s in acked if tally.complete(s))
        unacked = sorted(set(s for s, _ in tally.copies) - set(acked))
        m = re.search(r"errors=(\d+)", source_output())
        sys.stderr.write(
            f"\ncrash-safety: kill -9 x{len(kills)} under load (seed {seed}; 2 workers; "
            f"{n} messages x {len(self.RCPTS)} rcpts): acknowledged={len(acked)} "
            f"delivered={delivered} duplicated={len(duplicated)} lost={len(lost)} "
            f"(sent twice from the spool: "
            f"{sum('spool' in k for k in kinds)}, sent twice by the client after its 250 "
            f"was lost: {sum('client' in k for k in kinds)}; extra copies={extra}, longest "
            f"first-send-to-kill {max(lags, default=0):.3f} s, "
            f"downstream transactions={tally.transactions}, corrupt={len(tally.corrupt)}, "
            f"source connection errors={m.group(1) if m else '?'})\n")

        self.assertEqual(tally.corrupt, [], "messages arrived damaged")
        self.assertEqual(lost, [], f"acknowledged messages never delivered (seed {seed})")
        self.assertEqual(unacked, [], "delivered messages that were never acknowledged")
        # At-least-once: a copy goes out again only if a kill came while it was in flight,
        # i.e. soon after its first delivery (before the Done record was durable) or
        # soon after the client began sending it (before the 250 reached the client),
        # and before it went out again.
        for kind, s, r, first, again in pairs:
            if not any(first - self.EARLY <= k <= min(again, first + self.IN_FLIGHT)
                       for k in kills):
                self.fail(f"seq {s} sent to {r} again ({kind}) without a kill while it was "
                          f"in flight: first at {first:.3f}, again at {again:.3f}, kills at "
                          f"{[round(k, 3) for k in kills]} (seed {seed})")
        self.assertTrue(self.relay.running())

        # Seconds after the last delivery every Done record is durable: one more kill -9
        # finds nothing left to send, not even in the segment the last run wrote to (a
        # relay that wrote Done records late or never could pass the checks above when
        # the kills come close together).
        self.relay.kill9()
        self.relay.start()
        this_run = self.wait_listening()
        recovered = log_events(this_run, "spool_recovered")
        self.assertEqual(len(recovered), 2, this_run)
        for _, line in recovered:
            self.assertIn(" messages=0", line, "delivered messages still queued")
        time.sleep(1)
        tally.update()
        self.assertEqual(tally.transactions, transactions, "delivered again after a restart")


# --------------------------------------------------------------------------------------
# (b) downstream down, then up


class DownstreamDownTest(CrashCase):
    """Nothing listens on the next hop's port (connection refused) while four batches of
    messages arrive, one per failed retry round; then the downstream comes up.

    Order: while the next hop is down the relay parks every job until the host's next
    retry and then retries them all, in the order they were queued. One worker and one
    connection per host make that order the order the downstream sees (with parallel
    connections, completions may interleave). A batch is sent right after a failed
    attempt, a full backoff interval before the next one, so it can never race a retry
    round. The retry times are checked from the relay's own log (next_hop_error)."""

    relay_kwargs = {"workers": 1, "retry_min": 1, "retry_max": 2}
    config_lines = {"[delivery]": ["connections_per_host = 1"]}
    RETRY_MIN, RETRY_MAX = 1.0, 2.0
    BATCHES = 4
    PER_BATCH = 5

    def wait_attempts(self, count, timeout=8):
        """Waits for the relay to log its count-th failed connection to the next hop."""
        deadline = time.monotonic() + timeout
        while len(log_events(self.relay.log_text(), "next_hop_error")) < count:
            self.assertLess(time.monotonic(), deadline,
                            f"the relay did not retry the next hop (attempt {count}) "
                            f"within {timeout} s")
            time.sleep(0.02)

    def test_queued_while_down_all_delivered_oldest_first_on_backoff(self):
        accepted = []
        bodies = {}
        i = 0
        for b in range(self.BATCHES):
            if b > 0:
                # One batch per failed round. Right after a failed attempt the next one is
                # >= retry_min away, so the batch is parked behind everything before it.
                self.wait_attempts(b + 1)
            with self.relay.client() as s:
                s.ehlo("client.test")
                for _ in range(self.PER_BATCH):
                    bodies[i] = numbered_body("backoff", i)
                    code, resp = self.send_one(s, bodies[i], [f"b{i}@dest.test"])
                    self.assertEqual(code, 250, resp)
                    accepted.append(i)
                    i += 1
        # Let the last batch sit through one more failed round, then bring the downstream
        # up just after a failure: the next retry is a full backoff interval away.
        self.wait_attempts(self.BATCHES + 1)
        self.downstream.start()
        t_up = time.monotonic()
        failures = log_events(self.relay.log_text(), "next_hop_error")
        for _, line in failures:
            self.assertIn("refused", line)

        self.wait_delivered(len(accepted), 15)
        first_delivery = self.downstream.snapshot()[0].time - t_up
        time.sleep(1.5)
        msgs = self.downstream.snapshot()
        got = [subject_number(m, "backoff") for m in msgs]
        self.assertEqual(sorted(got), accepted, "lost or duplicated messages")
        self.assertEqual(got, accepted, "queued messages were not delivered oldest first")
        for m in msgs:
            k = subject_number(m, "backoff")
            assert_relayed(self, m, bodies[k], FROM, [f"b{k}@dest.test"])

        # The attempts while down follow the backoff: retry_min doubling to retry_max,
        # plus up to 10% jitter (the relay's own log times; the upper bound has slack for
        # a loaded machine, the lower bound none).
        times = [t for t, _ in failures]
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
        for k, gap in enumerate(gaps, start=1):
            want = min(self.RETRY_MIN * 2 ** (k - 1), self.RETRY_MAX)
            self.assertGreaterEqual(gap, want - 0.1, f"retry {k} came early: gaps {gaps}")
            self.assertLessEqual(gap, want * 1.1 + 1.5, f"retry {k} came late: gaps {gaps}")
        self.assertLessEqual(first_delivery, self.RETRY_MAX * 1.1 + 2.0,
                             "not delivered at the first retry after the downstream came up")


class RecoveredWhileDownTest(CrashCase):
    """Regression: messages recovered at start while the next hop is down open several
    connections at once (default connections_per_host); each refusal pushes the host's
    retry further out than the jobs parked by the first one. Those jobs must still be
    retried once the host is due (they used to wait for the next new message)."""

    relay_kwargs = {"workers": 1, "retry_min": 1, "retry_max": 2}

    def test_recovered_while_down_delivered_when_up(self):
        bodies = {}
        with self.relay.client() as s:
            s.ehlo("client.test")
            for i in range(3):
                bodies[i] = numbered_body("recovered", i)
                code, resp = self.send_one(s, bodies[i], [f"r{i}@dest.test"])
                self.assertEqual(code, 250, resp)
        self.assertEqual(self.relay.stop(), 0)
        self.relay.start()
        deadline = time.monotonic() + 5
        while len(log_events(self.relay.log_text(), "next_hop_error")) < 1 + len(bodies):
            self.assertLess(time.monotonic(), deadline, "recovered messages not attempted")
            time.sleep(0.02)
        self.downstream.start()
        # The host is retried within retry_max (+10% jitter) of the last refusal.
        self.wait_delivered(len(bodies), 2 * 1.1 + 3)
        time.sleep(1.5)
        msgs = self.downstream.snapshot()
        self.assertEqual(sorted(subject_number(m, "recovered") for m in msgs), sorted(bodies))
        for m in msgs:
            k = subject_number(m, "recovered")
            assert_relayed(self, m, bodies[k], FROM, [f"r{k}@dest.test"])


class ParallelRefusalsBackOffOnceTest(CrashCase):
    """Connections opened in parallel to a next hop that is down fail together: that is
    one failed round, backed off by retry_min, not one round per connection (with the
    default 20 connections per host, five refusals used to push the first retry to
    retry_min * 2^4). The parallel connections come from recovery, which queues every
    spooled message at once."""

    relay_kwargs = {"workers": 1, "retry_min": 2, "retry_max": 64}
    MESSAGES = 5

    def test_one_backoff_per_round(self):
        with self.relay.client() as s:
            s.ehlo("client.test")
            for i in range(self.MESSAGES):
                code, resp = self.send_one(s, numbered_body("round", i), [f"r{i}@dest.test"])
                self.assertEqual(code, 250, resp)
        self.assertEqual(self.relay.stop(), 0)
        self.relay.start()
        text = lambda: self.relay.log_text().split("event=listening")[-1]
        deadline = time.monotonic() + 5
        while text().count("event=next_hop_error") < self.MESSAGES:
            self.assertLess(time.monotonic(), deadline, "recovered messages not attempted")
            time.sleep(0.02)
        time.sleep(0.3)
        downs = [l for l in text().splitlines() if "event=next_hop_down" in l]
        self.assertEqual(len(downs), 1, "\n".join(downs))
        retry_ms = int(re.search(r"retry_in_ms=(\d+)", downs[0]).group(1))
        self.assertGreaterEqual(retry_ms, 2000)
        self.assertLessEqual(retry_ms, 2200)  # retry_min plus at most 10% jitter


# --------------------------------------------------------------------------------------
# (d) spool disk full


class DiskFullCase(CrashCase):
    relay_kwargs = {"workers": 1}
    BODY_SIZE = 48 * 1024
    ROOM = 160 * 1024           # free space / file size the spool gets before failing

    def readyz(self):
        try:
            with urllib.request.urlopen(
                    f"http://{HOST}:{self.relay.admin_port}/readyz", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def disk_full_then_space_back(self, make_room, expected_error):
        """Sends until two messages in a row get 452, checks the refusal, calls make_room,
        sends one more, kill -9s and restarts the relay with the downstream still down,
        then brings the downstream up and checks that exactly the acknowledged messages
        arrive, once each."""
        acked, refused, bodies = [], [], {}
        with self.relay.client() as s:
            s.ehlo("client.test")
            for i in range(2 * self.ROOM // self.BODY_SIZE + 4):
                bodies[i] = numbered_body("full", i, self.BODY_SIZE)
                code, resp = self.send_one(s, bodies[i], [f"f{i}@dest.test"])
                if code == 250:
                    self.assertEqual(refused, [], "250 after a 452 while the disk is full")
                    acked.append(i)
                    continue
                self.assertEqual(code, 452, resp)
                self.assertTrue(resp.startswith(b"4.3.1 "), resp)
                self.assertEqual(resp, b"4.3.1 Insufficient system storage")
                refused.append(i)
                if len(refused) == 2:
                    break
            self.assertGreaterEqual(len(acked), 2, "the spool had room for only one message")
            self.assertEqual(len(refused), 2, f"the spool never filled up: {len(acked)} "
                                              f"messages of {self.BODY_SIZE} octets fitted")
            self.assertEqual(s.noop()[0], 250, "the session did not survive the 452s")
        self.assertTrue(self.relay.running(), "the relay died on a full spool:\n"
                        + self.relay.log_text())
        failed = log_events(self.relay.log_text(), "spool_write_failed")
        self.assertEqual(len(failed), 2, self.relay.log_text())
        for _, line in failed:
            self.assertIn(f'error="{expected_error}"', line)
        self.assertEqual(self.readyz()[0], 503)

        make_room()
        # Ready again once the disk takes writes, without mail to find it out with (an
        # unready relay gets none from a load balancer): the spool's probe.
        deadline = time.monotonic() + 10
        while self.readyz()[0] != 200:
            self.assertLess(time.monotonic(), deadline, "/readyz stayed 503 after make_room")
            time.sleep(0.1)
        self.assertTrue(self.relay.wait_log(r"event=spool_writable", 5))
        late = len(bodies)
        bodies[late] = numbered_body("full", late, self.BODY_SIZE)
        with self.relay.client() as s:
            s.ehlo("client.test")
            code, resp = self.send_one(s, bodies[late], [f"f{late}@dest.test"])
            self.assertEqual(code, 250, f"not accepted once space was back: {resp}")
        acked.append(late)

        # Recovery must find every acknowledged message: the failed writes left nothing
        # behind that the message after them would be stuck behind.
        self.relay.kill9()
        self.relay.preexec_fn = None
        self.relay.start()
        recovered = log_events(self.relay.log_text(), "spool_recovered")[-1][1]
        self.assertIn(f" messages={len(acked)}", recovered, self.relay.log_text())
        self.assertEqual(log_events(self.relay.log_text(), "spool_torn_tail"), [])

        self.downstream.start()
        self.wait_delivered(len(acked), 15)
        time.sleep(2)
        msgs = self.downstream.snapshot()
        got = sorted(subject_number(m, "full") for m in msgs)
        self.assertEqual(got, acked, f"refused {refused}: delivered must be exactly the "
                                     f"acknowledged ones, once each")
        for m in msgs:
            k = subject_number(m, "full")
            assert_relayed(self, m, bodies[k], FROM, [f"f{k}@dest.test"])


class DiskFullTmpfsTest(DiskFullCase):
    """A real full file system: the spool on a 1 MiB tmpfs, the rest of it taken by a
    ballast file that is deleted to bring space back."""

    def before_relay(self):
        self.mnt = tempfile.mkdtemp(prefix="postern-it-tmpfs-")
        self.addCleanup(shutil.rmtree, self.mnt, True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs",
                            self.mnt], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs here ({r.stderr.strip()}); "
                          f"DiskFullRlimitTest covers the spool's write errors")
        self.addCleanup(subprocess.run, ["umount", self.mnt], check=False)

    def relay_options(self):
        return dict(self.relay_kwargs, spool_override=os.path.join(self.mnt, "spool"))

    def test_disk_full_452_then_space_back(self):
        # The relay has created its spool; fill what is left, then give ROOM back.
        ballast = os.path.join(self.mnt, "ballast")
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
        chunk = b"\0" * 65536
        size = 0
        try:
            while True:
                size += os.write(fd, chunk)
        except OSError as e:
            self.assertEqual(e.errno, errno.ENOSPC)
        os.ftruncate(fd, max(0, size - self.ROOM))
        os.close(fd)

        def make_room():
            os.unlink(ballast)

        self.disk_full_then_space_back(make_room, os.strerror(errno.ENOSPC))


class DiskFullRlimitTest(DiskFullCase):
    """An injected write error: the relay runs under RLIMIT_FSIZE, so a segment write past
    ROOM fails with EFBIG (and raises SIGXFSZ, which a daemon must take as a write error,
    not die of). Space comes back by lifting the limit of the running process."""

    def before_start(self):
        room = self.ROOM
        self.relay.preexec_fn = lambda: resource.setrlimit(
            resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))

    def test_file_size_limit_452_then_limit_lifted(self):
        def make_room():
            resource.prlimit(self.relay.proc.pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

        self.disk_full_then_space_back(make_room, os.strerror(errno.EFBIG))

    def test_spilled_message_past_the_limit_gets_452(self):
        """A body past message_memory (256 KiB) goes to a spill file, which the file-size
        limit stops at ROOM: 452 4.3.1 at the end of data, and the session goes on."""
        big = numbered_body("spill", 0, 2 * self.ROOM + (256 << 10))
        with self.relay.client() as s:
            s.ehlo("client.test")
            code, resp = self.send_one(s, big, ["big@dest.test"])
            self.assertEqual((code, resp), (452, b"4.3.1 Insufficient system storage"))
            code, resp = self.send_one(s, numbered_body("spill", 1), ["small@dest.test"])
            self.assertEqual(code, 250, resp)
        self.assertTrue(self.relay.wait_log(r"event=spill_failed", 5))
        self.downstream.start()
        self.wait_delivered(1, 15)
        time.sleep(1)
        self.assertEqual([m.rcpt_tos for m in self.downstream.snapshot()], [["small@dest.test"]])


# --------------------------------------------------------------------------------------
# (e) torn last record


def spool_records(path):
    """[(offset, size, type)] of the records in a segment file (queue/record.h, format 2:
    a 32-octet segment header, then records "magic PSR2 | u32 payload length | u8 type |
    u32 payload CRC | u32 header CRC | payload"); the framing must span the file."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"PSTRSEG2"):
        raise AssertionError(f"{path}: no format 2 segment header")
    recs, pos = [], 32
    while pos + 17 <= len(data):
        magic, length = struct.unpack_from("<4sI", data, pos)
        if magic != b"PSR2" or pos + 17 + length > len(data):
            break
        recs.append((pos, 17 + length, data[pos + 8]))
        pos += 17 + length
    if pos != len(data):
        raise AssertionError(f"{path}: records end at {pos} of {len(data)} octets")
    return recs


class TornTailTest(CrashCase):
    """A crash in the middle of the last write, made by hand: the relay is stopped with
    messages queued in two segments, the last record of the last one is cut short or has
    an octet flipped, and the relay starts again. Recovery logs spool_torn_tail (segment,
    offset of the bad record, its length, the quarantine file holding those octets) and
    keeps every record before it."""

    relay_kwargs = {"workers": 1}
    FIRST_RUN, SECOND_RUN = 3, 3

    def queue_two_runs(self):
        """Queues messages over two runs of the relay (so over two segments) with the
        downstream down, stops it, and returns (bodies, last segment path, its last
        record as (offset, size, type))."""
        bodies = {}
        for run, count in enumerate((self.FIRST_RUN, self.SECOND_RUN)):
            if run:
                self.relay.start()
            with self.relay.client() as s:
                s.ehlo("client.test")
                for _ in range(count):
                    i = len(bodies)
                    bodies[i] = numbered_body("torn", i, 2000)
                    code, resp = self.send_one(s, bodies[i], [f"t{i}@dest.test"])
                    self.assertEqual(code, 250, resp)
            self.assertEqual(self.relay.stop(), 0)
        wdir = os.path.join(self.relay.spool_dir, "w0")
        segs = sorted(n for n in os.listdir(wdir) if re.fullmatch(r"seg-[0-9a-f]{8}\.log", n))
        self.assertEqual(len(segs), 2, segs)
        last = os.path.join(wdir, segs[-1])
        recs = spool_records(last)
        self.assertEqual([t for _, _, t in recs], [1] * self.SECOND_RUN,
                         "expected only Message records in the last segment")
        return bodies, last, recs[-1]

    def recover_and_check(self, bodies, segment, torn_offset, file_size):
        with open(segment, "rb") as f:
            f.seek(torn_offset)
            original = f.read()
        self.downstream.start()
        self.relay.start()
        torn = log_events(self.relay.log_text(), "spool_torn_tail")
        self.assertEqual(len(torn), 1, self.relay.log_text())
        line = torn[0][1]
        self.assertIn(" level=warning ", line)
        self.assertIn(f" segment={segment} ", line)
        self.assertIn(f" offset={torn_offset} ", line)
        self.assertIn(f" length={file_size - torn_offset} ", line)
        kept_file = line.split(" quarantine=", 1)[1].strip()
        with open(kept_file, "rb") as f:
            self.assertEqual(f.read(), original, "the quarantine holds the torn octets")
        recovered = log_events(self.relay.log_text(), "spool_recovered")[-1][1]
        self.assertIn(f" messages={len(bodies) - 1}", recovered)

        kept = sorted(bodies)[:-1]
        self.wait_delivered(len(kept), 15)
        # Nothing is ever appended after a torn tail: the segment is as we left it (or
        # gone, once all of its messages were delivered).
        if os.path.exists(segment):
            self.assertEqual(os.path.getsize(segment), file_size)
        time.sleep(2)
        msgs = self.downstream.snapshot()
        got = sorted(subject_number(m, "torn") for m in msgs)
        self.assertEqual(got, kept, "everything before the torn record, once, and not it")
        for m in msgs:
            k = subject_number(m, "torn")
            assert_relayed(self, m, bodies[k], FROM, [f"t{k}@dest.test"])

    def test_truncated_last_record_skipped(self):
        bodies, last, (off, size, _) = self.queue_two_runs()
        cut = off + size // 2           # a crash in the middle of the last write
        os.truncate(last, cut)
        self.recover_and_check(bodies, last, off, cut)

    def test_garbled_last_record_skipped(self):
        bodies, last, (off, size, _) = self.queue_two_runs()
        with open(last, "r+b") as f:    # full length, one body octet flipped: bad CRC
            f.seek(off + size - 20)
            b = f.read(1)
            f.seek(off + size - 20)
            f.write(bytes([b[0] ^ 0x20]))
        self.recover_and_check(bodies, last, off, os.path.getsize(last))


if __name__ == "__main__":
    unittest.main()
