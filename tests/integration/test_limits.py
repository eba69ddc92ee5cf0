"""Limits that need several connections or the clock: total and per-IP connection limits,
and slowloris clients (one byte at a time never resets the deadline)."""

import socket
import time

from harness import HOST, RelayTestCase, ReplyReader


class ConnectionLimitTest(RelayTestCase):
    relay_kwargs = {"extra": "[limits]\nconnections = 3\nconnections_per_ip = 2\n"}

    def connect(self, source="127.0.0.1"):
        s = socket.create_connection((HOST, self.relay.port), timeout=10,
                                     source_address=(source, 0))
        self.addCleanup(s.close)
        return s, ReplyReader(s)

    def test_per_ip_then_total(self):
        # The harness's readiness probe holds a slot until the relay sees it close.
        time.sleep(0.5)
        a = [self.connect() for _ in range(2)]
        for _, r in a:
            self.assertEqual(r.reply()[0], 220)
        s, r = self.connect()
        code, lines = r.reply()
        self.assertEqual((code, lines[0][:5]), (421, b"4.7.0"))
        self.assertTrue(r.at_eof(5))
        # Another address still gets in, until the total is reached.
        s, r = self.connect("127.0.0.2")
        self.assertEqual(r.reply()[0], 220)
        s, r = self.connect("127.0.0.3")
        self.assertEqual(r.reply()[0], 421)
        # A slot freed by QUIT is usable again.
        a[0][0].sendall(b"QUIT\r\n")
        self.assertEqual(a[0][1].reply()[0], 221)
        time.sleep(0.3)
        s, r = self.connect()
        self.assertEqual(r.reply()[0], 220)


class SlowlorisTest(RelayTestCase):
    relay_kwargs = {"extra": "[limits]\ncommand_timeout = 2\ndata_timeout = 2\n"}

    def trickle_until_closed(self, s, r, payload, limit):
        start = time.monotonic()
        for b in payload:
            try:
                s.sendall(bytes([b]))
            except OSError:
                break
            time.sleep(0.25)
            if time.monotonic() - start > limit:
                break
        return time.monotonic() - start

    def test_byte_at_a_time_command_is_cut_at_deadline(self):
        s = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(s.close)
        r = ReplyReader(s)
        r.reply()
        s.sendall(b"EHLO c.test\r\n")
        r.reply()
        elapsed = self.trickle_until_closed(s, r, b"NOOP" + b"x" * 100, 8)
        code, lines = r.reply()
        self.assertEqual((code, lines[0][:5]), (421, b"4.4.2"))
        self.assertTrue(r.at_eof(5))
        self.assertLess(elapsed, 6, "the deadline was reset by partial lines")

    def test_complete_lines_keep_session_alive(self):
        s = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(s.close)
        r = ReplyReader(s)
        r.reply()
        for _ in range(4):  # 4 x 1.2 s > the 2 s deadline, but each NOOP is progress
            s.sendall(b"NOOP\r\n")
            self.assertEqual(r.reply()[0], 250)
            time.sleep(1.2)
        s.sendall(b"QUIT\r\n")
        self.assertEqual(r.reply()[0], 221)

    def test_byte_at_a_time_in_data_is_cut_at_deadline(self):
        s = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(s.close)
        r = ReplyReader(s)
        r.reply()
        s.sendall(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
        self.assertEqual([c for c, _ in r.replies(4)], [250, 250, 250, 354])
        self.trickle_until_closed(s, r, b"Subject: slow" + b"y" * 100, 8)
        self.assertEqual(r.reply()[0], 421)
        time.sleep(1)
        self.assertEqual(self.downstream.snapshot(), [])


class WriteBackpressureTest(RelayTestCase):
    def rss_kib(self):
        with open(f"/proc/{self.relay.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def test_client_that_never_reads_is_throttled(self):
        s = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        base = self.rss_kib()
        chunk = b"NOOP\r\n" * 10000  # 60 KB of commands, 140 KB of replies
        sent = 0
        s.settimeout(2)
        try:
            while sent < 60_000_000:
                sent += s.send(chunk)
        except socket.timeout:
            pass  # the relay stopped reading: what the test wants
        grown = self.rss_kib() - base
        self.assertLess(sent, 60_000_000, "the relay kept reading without writing")
        self.assertLess(grown, 32 * 1024, f"relay RSS grew by {grown} KiB")
        # Everyone else is still served.
        t = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(t.close)
        self.assertEqual(ReplyReader(t).reply()[0], 220)
