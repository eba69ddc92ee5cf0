"""Limits that need several connections or the clock: total and per-IP connection limits,
slowloris clients (one byte at a time never resets the deadline), and message memory
(limits.message_memory: a body past it goes on into a spill file, so many large messages
arriving at once do not grow the relay's memory with their size)."""

import os
import random
import socket
import sys
import threading
import time

from harness import HOST, RelayTestCase, ReplyReader, WireDownstream, assert_relayed


def big_body(tag, size):
    """About `size` octets of CRLF lines, some of which need dot-stuffing."""
    lines, n, i = [f"Subject: {tag}".encode(), b""], 0, 0
    while n < size:
        line = (b"." if i % 7 == 0 else b"") + f"{tag} line {i} ".encode() + b"x" * (i % 60)
        lines.append(line)
        n += len(line) + 2
        i += 1
    return b"\r\n".join(lines) + b"\r\n"


def wait_queues_empty(port, timeout):
    """Waits (bounded) until no TCP connection to or from `port` on this host has octets
    queued, sent or unread (/proc/net/tcp's tx_queue and rx_queue)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
                if state == "0A":  # the listening socket
                    continue
                if int(local.split(":")[1], 16) != port and int(remote.split(":")[1], 16) != port:
                    continue
                tx, rx = (int(q, 16) for q in queues.split(":"))
                busy = busy or tx != 0 or rx != 0
        if not busy:
            return True
        time.sleep(0.05)
    return False


def drop_page_cache(tree):
    """Asks the kernel to drop the cached pages of every file under tree (synced first:
    dirty pages are not dropped)."""
    os.sync()
    for root, _dirs, names in os.walk(tree):
        for n in names:
            try:
                fd = os.open(os.path.join(root, n), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def assert_rss_growth_below_half(test, before_kib, count, size, what):
    """The relay's RSS grew by less than half of what `count` bodies of `size` octets would
    take: room for a sanitizer build's own overhead (ASan's shadow and quarantine: 14 MiB
    for 16 messages of 3 MiB being received, against 6 in a normal build)."""
    grown_mib = (rss_kib(test.relay.proc.pid) - before_kib) / 1024
    limit_mib = count * size / (1 << 20) / 2
    sys.stderr.write(f"\nrelay RSS +{grown_mib:.1f} MiB with {count} {what} of "
                     f"{size >> 20} MiB in flight\n")
    test.assertLess(grown_mib, limit_mib, f"RSS grew {grown_mib:.1f} MiB with {count} {what} "
                    f"of {size >> 20} MiB in flight")


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


class SpilledMessageTest(RelayTestCase):
    """A tiny message_memory: nearly every body goes through a spill file."""

    relay_kwargs = {"extra": "[limits]\nmessage_memory = 4096\n"}

    def test_data_and_bdat_bodies_relayed_byte_for_byte(self):
        body = big_body("spilled", 3 << 20)
        with self.relay.client() as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail("a@origin.test", ["r1@dest.test"], body), {})
        # BDAT in uneven chunks, so lines and CRLFs straddle chunk and spill boundaries.
        sock = socket.create_connection((HOST, self.relay.port), timeout=30)
        self.addCleanup(sock.close)
        r = ReplyReader(sock, timeout=30)
        r.reply()
        sock.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<r2@dest.test>\r\n")
        self.assertEqual([c for c, _ in r.replies(3)], [250, 250, 250])
        rng, off, chunks = random.Random(7), 0, 0
        while off < len(body):
            n = min(rng.randint(1, 300000), len(body) - off)
            last = off + n == len(body)
            sock.sendall(b"BDAT %d%s\r\n" % (n, b" LAST" if last else b"") + body[off:off + n])
            off += n
            chunks += 1
        codes = [c for c, _ in r.replies(chunks)]
        self.assertEqual(codes, [250] * chunks)
        self.assertEqual(self.downstream.wait_for(2, 30), 2)
        by_rcpt = {m.rcpt_tos[0]: m for m in self.downstream.snapshot()}
        assert_relayed(self, by_rcpt["r1@dest.test"], body, "a@origin.test", ["r1@dest.test"])
        assert_relayed(self, by_rcpt["r2@dest.test"], body, "a@origin.test", ["r2@dest.test"])

    def test_rejected_spilled_message_leaves_nothing(self):
        with self.relay.client() as s:
            s.ehlo("client.test")
            s.mail("a@origin.test")
            s.rcpt("r@dest.test")
            code, _ = s.data(big_body("bare", 100000) + b"bare\nLF\r\n")
            self.assertEqual(code, 550)
            self.assertEqual(s.noop()[0], 250)
        time.sleep(0.5)
        self.assertEqual(self.downstream.snapshot(), [])


class MessageMemoryTest(RelayTestCase):
    """Sixteen clients each stop 3 MiB into a message. Held in memory that is 48 MiB more
    relay RSS (55 MiB measured with message_memory = 1 GiB); with the default
    message_memory (256 KiB) it is a few MiB. Then all of them finish and are delivered
    intact."""

    CLIENTS, SIZE = 16, 3 << 20

    def test_large_messages_in_flight_do_not_grow_memory(self):
        time.sleep(0.3)
        before = rss_kib(self.relay.proc.pid)
        body = big_body("memory", self.SIZE)
        stuffed = body.replace(b"\r\n.", b"\r\n..")
        socks = []
        for i in range(self.CLIENTS):
            sock = socket.create_connection((HOST, self.relay.port), timeout=30)
            self.addCleanup(sock.close)
            r = ReplyReader(sock, timeout=30)
            r.reply()
            sock.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\n"
                         b"RCPT TO:<m%d@dest.test>\r\nDATA\r\n" % i)
            self.assertEqual([c for c, _ in r.replies(4)], [250, 250, 250, 354])
            sock.sendall(stuffed)
            socks.append((sock, r))
        # Measured once the relay has read every octet sent: nothing waits in any socket
        # queue between the clients and it.
        self.assertTrue(wait_queues_empty(self.relay.port, 60), "the relay did not read it all")
        assert_rss_growth_below_half(self, before, self.CLIENTS, self.SIZE, "messages")
        for sock, r in socks:
            sock.sendall(b".\r\nQUIT\r\n")
        for sock, r in socks:
            self.assertEqual(r.reply()[0], 250)
        self.assertEqual(self.downstream.wait_for(self.CLIENTS, 60), self.CLIENTS)
        for m in self.downstream.snapshot():
            assert_relayed(self, m, body, "a@origin.test", m.rcpt_tos)


class MemoryBudgetTest(RelayTestCase):
    """limits.memory_budget bounds what all sessions together hold in envelopes: with the
    smallest budget (1 MiB), clients adding 2 KB recipients get 452 4.3.1 once the relay
    holds 1 MiB of them (MAIL too while it is spent), whichever session holds it; RSET on
    one session frees memory for the others."""

    relay_kwargs = {"extra": "[limits]\nmemory_budget = 1048576\nrecipients = 100000\n"}
    RCPT = "r{:05d}" + "x" * 1990 + "@dest.test"

    def session(self):
        sock = socket.create_connection((HOST, self.relay.port), timeout=30)
        self.addCleanup(sock.close)
        r = ReplyReader(sock, timeout=30)
        r.reply()
        sock.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\n")
        self.assertEqual([c for c, _ in r.replies(2)], [250, 250])
        return sock, r

    def add(self, sock, r, first, n):
        """Pipelines n RCPTs; returns their reply codes."""
        sock.sendall(b"".join(f"RCPT TO:<{self.RCPT.format(first + i)}>\r\n".encode()
                              for i in range(n)))
        return [c for c, _ in r.replies(n)]

    def test_recipients_of_all_sessions_share_the_budget(self):
        a, ra = self.session()
        b, rb = self.session()
        codes_a = self.add(a, ra, 0, 300)
        codes_b = self.add(b, rb, 300, 300)
        accepted = codes_a.count(250) + codes_b.count(250)
        refused = codes_a.count(452) + codes_b.count(452)
        sys.stderr.write(f"\nmemory budget 1 MiB: {accepted} recipients of 2 KB accepted, "
                         f"{refused} refused with 452\n")
        self.assertEqual(accepted + refused, 600)
        # 1 MiB of ~2.1 KB recipients: about 490 fit, and not one more than the budget.
        self.assertGreater(accepted, 400)
        self.assertLessEqual(accepted * (len(self.RCPT.format(0)) + 96), 1 << 20)
        self.assertGreater(refused, 0)
        # Small recipients fill what is left; then a new transaction's MAIL (its sender
        # takes memory too) is refused while the budget is spent.
        small = b"".join(b"RCPT TO:<s%d@dest.test>\r\n" % i for i in range(40))
        b.sendall(small)
        self.assertIn(452, [c for c, _ in rb.replies(40)])
        sock = socket.create_connection((HOST, self.relay.port), timeout=30)
        self.addCleanup(sock.close)
        r = ReplyReader(sock, timeout=30)
        r.reply()
        sender = "long-sender-" + "s" * 200 + "@origin.test"
        sock.sendall(f"EHLO c.test\r\nMAIL FROM:<{sender}>\r\n".encode())
        codes = r.replies(2)
        self.assertEqual(codes[1][0], 452, codes)
        self.assertTrue(codes[1][1][0].startswith(b"4.3.1"), codes)
        # RSET on one session gives its share back: the other may add again.
        a.sendall(b"RSET\r\n")
        self.assertEqual(ra.reply()[0], 250)
        self.assertEqual(self.add(b, rb, 600, 10), [250] * 10)
        # And the ones that got in are delivered as usual.
        b.sendall(b"DATA\r\n")
        self.assertEqual(rb.reply()[0], 354)
        b.sendall(b"Subject: budget\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(rb.reply()[0], 250)


class OutboundMemoryTest(RelayTestCase):
    """The outbound half of message memory: sixteen messages of 3 MiB queued while their
    next hop is down, then delivered at once to it, and it takes nothing after its 354.
    Each delivery connection holds two 64 KiB pieces of its body
    (relay/outbound/smtp_client.h), not the message: before bodies were streamed, each held
    it once read whole and again dot-stuffed (+54 MiB measured here; +5 MiB since). RSS is
    measured from the queue filled, so what receiving the messages left (a sanitizer's
    quarantine of freed memory, above all) does not count. The spool's pages are dropped
    from the page cache before the delivery, as after a long wait in a backlog, so the
    bodies are read on libuv's thread pool and not at once from the cache. Then the hop
    reads on and every body arrives intact, dot-stuffed as it must be."""

    start_downstream = False
    auto_relay = False
    CLIENTS, SIZE = 16, 3 << 20

    def setUp(self):
        RelayTestCase.setUp(self)
        self.release = threading.Event()
        self.up = threading.Event()
        self.wire = WireDownstream(stall=self.release, gate=self.up)
        self.addCleanup(self.wire.stop)
        self.start_relay(self.wire.port, routes=[
            {"domain": "dest.test", "next_hop": f"{HOST}:{self.wire.port}",
             "max_connections": self.CLIENTS}])
        # Cleanups run last first: the stalled deliveries are let go before the relay stops.
        self.addCleanup(self.release.set)
        self.addCleanup(self.up.set)

    def test_large_messages_being_delivered_do_not_grow_memory(self):
        body = big_body("outbound", self.SIZE)
        stuffed = body.replace(b"\r\n.", b"\r\n..")
        for i in range(self.CLIENTS):
            code, resp = self.send(body, "a@origin.test", [f"m{i}@dest.test"])
            self.assertEqual(code, 250, resp)
        time.sleep(0.5)  # the first attempts find the hop down
        drop_page_cache(self.relay.spool_dir)
        before = rss_kib(self.relay.proc.pid)
        self.up.set()  # the next retry (retry_min 1 s) delivers them all at once
        deadline = time.monotonic() + 60
        with self.wire.cond:
            while self.wire.stalled < self.CLIENTS and time.monotonic() < deadline:
                self.wire.cond.wait(1)
        self.assertEqual(self.wire.stalled, self.CLIENTS, "not every delivery reached DATA")
        time.sleep(1)  # the relay writes until the sockets take no more
        assert_rss_growth_below_half(self, before, self.CLIENTS, self.SIZE, "deliveries")
        self.release.set()
        self.assertEqual(self.wire.wait_for(self.CLIENTS, 60), self.CLIENTS)
        with self.wire.cond:
            bodies = list(self.wire.bodies)
        for got in bodies:
            # The relay prepends its Received: field; the rest is the body, stuffed.
            self.assertTrue(got.endswith(stuffed), "a body arrived changed")
