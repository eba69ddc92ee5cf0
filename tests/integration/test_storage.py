"""The spool's promises under the storage's failures, seen through an LD_PRELOAD shim
(syscall_shim.c, path in $POSTERN_SHIM) in the real binary:

* The 250 after DATA waits for fdatasync: while the shim holds the sync, no reply comes;
  once it lets the sync return, the 250 does. (A kill -9 test keeps the page cache, so it
  would pass with the sync removed; this one does not.)
* A TLS client that sends on while its message is synced is read only up to a bound: the
  relay's memory does not grow with what it sends; the 250 comes once the sync returns.
* A failed write whose truncation also fails leaves the segment's end unknown: the spool
  stops writing for good (fail-stop): 452 4.3.1 for every message, /readyz 503, a
  spool_broken line, even once the disk works again; a restart takes mail again.
* /healthz is answered by every worker's loop: while one is stuck (the shim holds the
  setsockopt a new session makes on it), /healthz says 503; once it turns again, 200.
* A restart takes mail while the spool replays: with the replay held (the shim holds its
  mmap of the old segment), /healthz and /readyz answer and a new message gets its 250;
  once the replay goes on, the old message is recovered and both are delivered."""

import os
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from harness import HOST, RelayTestCase, ReplyReader, smtp_client
from test_inbound_extensions import make_cert

FROM = "sender@origin.test"


def shim():
    path = os.environ.get("POSTERN_SHIM")
    if not path:
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.normpath(os.path.join(here, "..", "..", "build", "tests", "integration",
                                             "libpostern_syscall_shim.so"))
    if not os.path.isfile(path):
        raise AssertionError(f"syscall shim not built: {path} (set POSTERN_SHIM)")
    return path


def http_status(port, path):
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def readyz(port):
    return http_status(port, "/readyz")


class StorageTest(RelayTestCase):

    auto_relay = False

    def start_with(self, wait_recovered=True, extra=None, **env):
        self.state = tempfile.mkdtemp(prefix="postern-shim-")
        self.relay = None
        from harness import Relay
        relay = Relay(self.downstream.port, extra=extra)
        # The sanitizer builds want their runtime first; the shim is not instrumented.
        relay.env = {"LD_PRELOAD": shim(), "ASAN_OPTIONS": "verify_asan_link_order=0:"
                     + os.environ.get("ASAN_OPTIONS", ""), **env}
        self.relay = relay
        self.addCleanup(self._cleanup_relay)
        relay.start(wait_recovered=wait_recovered)
        return relay

    def send(self, rcpt):
        with smtp_client(HOST, self.relay.port) as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail(FROM, [rcpt], b"Subject: replay\r\n\r\nhi\r\n"), {})

    def test_mail_is_taken_while_the_spool_replays(self):
        self.downstream.stop()  # the first message stays queued
        self.start_with()
        self.send("old@dest.test")
        self.relay.stop()
        gate = tempfile.mkdtemp(prefix="postern-gate-")
        self.relay.env["POSTERN_SHIM_MAP_GATE"] = gate
        self.relay.start(wait_recovered=False)
        self.wait_at_gate(gate, "no segment was mapped")
        self.assertEqual(readyz(self.relay.admin_port), 200)
        with urllib.request.urlopen(f"http://{HOST}:{self.relay.admin_port}/healthz",
                                    timeout=5) as r:
            self.assertEqual(r.status, 200)
        self.send("new@dest.test")
        self.assertEqual(self.relay.log_text().count("event=spool_recovered"), 1,
                         "the replay was not held")
        open(os.path.join(gate, "open"), "w").close()
        self.assertTrue(self.relay.wait_log(r"event=spool_recovered worker=0 \S+ messages=1", 10))
        self.downstream.start()
        subprocess.run([self.relay.bin, "queue", "flush", "--config", self.relay.config_path],
                       capture_output=True, timeout=30, check=True)
        self.assertEqual(self.downstream.wait_for(2, 15), 2)
        self.assertEqual(sorted(m.rcpt_tos[0] for m in self.downstream.snapshot()),
                         ["new@dest.test", "old@dest.test"])

    def open_transaction(self):
        sock = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(sock.close)
        r = ReplyReader(sock, timeout=10)
        r.reply()
        sock.sendall(b"EHLO c.test\r\nMAIL FROM:<%s>\r\nRCPT TO:<u@dest.test>\r\nDATA\r\n"
                     % FROM.encode())
        self.assertEqual([c for c, _ in r.replies(4)], [250, 250, 250, 354])
        return sock, r

    def test_250_waits_for_fdatasync(self):
        gate = tempfile.mkdtemp(prefix="postern-gate-")
        self.start_with(POSTERN_SHIM_SYNC_GATE=gate)
        sock, r = self.open_transaction()
        sock.sendall(b"Subject: sync order\r\n\r\nbody\r\n.\r\n")
        self.wait_at_gate(gate, "the relay never called fdatasync")
        # The sync is held: nothing may come back, however long we wait.
        sock.settimeout(1.5)
        try:
            early = sock.recv(4096)
        except socket.timeout:
            early = b""
        self.assertEqual(early, b"", "a reply came before fdatasync returned")
        open(os.path.join(gate, "open"), "w").close()
        sock.settimeout(10)
        code, text = r.reply()
        self.assertEqual(code, 250, text)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)

    def wait_at_gate(self, gate, why):
        """Waits (bounded) until the shim holds a call at gate; fails saying why if not."""
        waiting = os.path.join(gate, "waiting")
        deadline = time.monotonic() + 10
        while not os.path.exists(waiting) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertTrue(os.path.exists(waiting), why)

    def rss(self):
        with open(f"/proc/{self.relay.proc.pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    def test_tls_input_during_a_held_commit_is_bounded(self):
        cert, key = make_cert(tempfile.mkdtemp(prefix="postern-cert-"))
        gate = tempfile.mkdtemp(prefix="postern-gate-")
        self.start_with(extra=f'[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n',
                        POSTERN_SHIM_SYNC_GATE=gate)
        sock = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(sock.close)
        r = ReplyReader(sock, timeout=10)
        r.reply()
        sock.sendall(b"EHLO c.test\r\n")
        r.reply()
        sock.sendall(b"STARTTLS\r\n")
        self.assertEqual(r.reply()[0], 220)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        t = ctx.wrap_socket(sock, server_hostname="relay.test")
        r = ReplyReader(t, timeout=10)
        t.sendall(b"EHLO c.test\r\nMAIL FROM:<%s>\r\nRCPT TO:<u@dest.test>\r\nDATA\r\n"
                  % FROM.encode())
        self.assertEqual([c for c, _ in r.replies(4)], [250, 250, 250, 354])
        before = self.rss()
        t.sendall(b"Subject: held\r\n\r\nbody\r\n.\r\n")
        self.wait_at_gate(gate, "the relay never called fdatasync")
        # Pipelined commands, until the relay has stopped reading and the kernel's buffers
        # are full too (a relay that read everything would take all 64 MiB).
        chunk, sent = b"NOOP\r\n" * 2731, 0
        t.settimeout(2)
        try:
            while sent < 64 << 20:
                t.sendall(chunk)
                sent += len(chunk)
        except (TimeoutError, ssl.SSLError):
            pass
        self.assertGreater(sent, 256 << 10, "the flood did not get going")
        self.assertLess(sent, 64 << 20, "the relay read everything during the commit")
        growth = self.rss() - before
        self.assertLess(growth, 8 << 20, f"relay grew by {growth} octets, {sent} sent")
        open(os.path.join(gate, "open"), "w").close()
        t.settimeout(10)
        code, text = r.reply()
        self.assertEqual(code, 250, text)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)

    def test_healthz_fails_while_a_worker_loop_is_stuck(self):
        gate = tempfile.mkdtemp(prefix="postern-gate-")
        self.start_with(POSTERN_SHIM_NODELAY_GATE=gate)
        self.assertEqual(http_status(self.relay.admin_port, "/healthz"), 200)
        open(os.path.join(gate, "armed"), "w").close()
        sock = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(sock.close)
        self.wait_at_gate(gate, "no session started")
        self.assertEqual(http_status(self.relay.admin_port, "/healthz"), 503)
        open(os.path.join(gate, "open"), "w").close()
        self.assertEqual(ReplyReader(sock, timeout=10).reply()[0], 220)
        self.assertEqual(http_status(self.relay.admin_port, "/healthz"), 200)

    def test_failed_truncation_stops_the_spool(self):
        flag = os.path.join(tempfile.mkdtemp(prefix="postern-fail-"), "fail")
        self.start_with(POSTERN_SHIM_FAIL=flag)
        self.assertEqual(readyz(self.relay.admin_port), 200)
        open(flag, "w").close()
        sock, r = self.open_transaction()
        sock.sendall(b"Subject: lost disk\r\n\r\nbody\r\n.\r\n")
        code, text = r.reply()
        self.assertEqual(code, 452, text)
        self.assertTrue(text[0].startswith(b"4.3.1"), text)
        self.relay.wait_log(r"event=spool_broken", 5)
        # The disk works again, but the end of the segment is unknown: still refused.
        os.unlink(flag)
        time.sleep(1.5)   # a probe (every second) would have cleared a plain failure
        sock.sendall(b"MAIL FROM:<%s>\r\nRCPT TO:<u@dest.test>\r\nDATA\r\n" % FROM.encode())
        self.assertEqual([c for c, _ in r.replies(3)], [250, 250, 354])
        sock.sendall(b"Subject: after\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(r.reply()[0], 452)
        self.assertEqual(readyz(self.relay.admin_port), 503)
        sock.close()
        # A restart replays the spool and takes mail again.
        self.relay.restart()
        self.assertEqual(readyz(self.relay.admin_port), 200)
        sock, r = self.open_transaction()
        sock.sendall(b"Subject: restarted\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)


class SpoolCheckTest(RelayTestCase):
    """`postern spool check DIR` reads a spool without changing it: exit 0 on an intact
    one, 1 with the damaged range named after an octet is flipped; after a start has
    quarantined it, the quarantine is listed."""

    auto_relay = False

    def check(self):
        r = subprocess.run([self.relay.bin, "spool", "check", self.relay.spool_dir],
                           capture_output=True, text=True, timeout=30)
        return r.returncode, r.stdout

    def test_check_finds_damage_and_quarantine(self):
        self.downstream.stop()          # nothing leaves: the messages stay in the spool
        self.start_relay(self.downstream.port, workers=1)
        for i in range(3):
            code, resp = self.send(b"Subject: check %d\r\n\r\nbody\r\n" % i, FROM,
                                   ["u%d@dest.test" % i])
            self.assertEqual(code, 250, resp)
        self.assertEqual(self.relay.stop(), 0)
        rc, out = self.check()
        self.assertEqual(rc, 0, out)
        self.assertIn("messages with recipients still to deliver: 3", out)
        seg = os.path.join(self.relay.spool_dir, "w0", "seg-00000001.log")
        with open(seg, "r+b") as f:
            data = bytearray(f.read())
            at = data.index(b"check 1") + 2
            data[at] ^= 0x01
            f.seek(0)
            f.write(data)
        before = open(seg, "rb").read()
        rc, out = self.check()
        self.assertEqual(rc, 1, out)
        self.assertIn("damaged: octets", out)
        self.assertIn("messages with recipients still to deliver: 2", out)
        self.assertEqual(open(seg, "rb").read(), before, "spool check changed the spool")
        self.relay.start()
        self.relay.wait_log(r"event=spool_damaged", 5)
        self.assertEqual(self.relay.stop(), 0)
        rc, out = self.check()
        self.assertEqual(rc, 1, out)
        self.assertIn("quarantined: ", out)


if __name__ == "__main__":
    unittest.main()
