"""Several workers: SO_REUSEPORT spreads connections over worker loops, handoff mode
deals them round-robin, a route's max_connections and max_rate hold for the relay as a
whole (each worker takes its share), and a restart with fewer workers still delivers
every message spooled by a worker that no longer exists (its spool directory is
merged)."""

import re
import socket
import time

from harness import HOST, Downstream, Relay, RelayTestCase, ReplyReader

BODY = b"Subject: workers\r\n\r\nhello\r\n"


def send_one(port, n):
    s = socket.create_connection((HOST, port), timeout=10)
    try:
        r = ReplyReader(s)
        r.reply()
        s.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<r%d@dest.test>\r\n"
                  b"DATA\r\n" % n)
        codes = [c for c, _ in r.replies(4)]
        assert codes == [250, 250, 250, 354], codes
        s.sendall(BODY + b".\r\nQUIT\r\n")
        code, lines = r.reply()
        assert code == 250, (code, lines)
        return lines[0].split(b"queued as ")[1].decode()
    finally:
        s.close()


def worker_of(queue_id):
    return int(queue_id, 16) & 0xff


class ReuseportTest(RelayTestCase):
    relay_kwargs = {"workers": 2}

    def test_connections_spread_over_workers(self):
        ids = [send_one(self.relay.port, i) for i in range(40)]
        self.assertEqual({worker_of(q) for q in ids}, {0, 1}, ids)
        self.assertEqual(self.downstream.wait_for(40, 20), 40)
        self.assertEqual(len({m.rcpt_tos[0] for m in self.downstream.snapshot()}), 40)


class HandoffTest(RelayTestCase):
    relay_kwargs = {"workers": 2, "extra": ""}

    def setUp(self):
        self.downstream = Downstream()
        self.downstream.start()
        self.addCleanup(self.downstream.stop)
        self.relay = Relay(self.downstream.port, workers=2, server={"accept_mode": "handoff"})
        self.addCleanup(self._cleanup_relay)
        self.relay.start()

    def test_round_robin(self):
        time.sleep(0.3)  # the harness's readiness probe took one turn of the rotation
        ids = [send_one(self.relay.port, i) for i in range(6)]
        workers = [worker_of(q) for q in ids]
        self.assertEqual(sorted(workers), [0, 0, 0, 1, 1, 1], ids)
        self.assertTrue(all(workers[i] != workers[i + 1] for i in range(5)), workers)
        self.assertEqual(self.downstream.wait_for(6, 20), 6)
        self.assertIn("accept=handoff", self.relay.log_text())


class HopLimitsAcrossWorkersTest(RelayTestCase):
    """Two workers, connections dealt round-robin (handoff), so both have mail for the
    same next hop at once. With max_connections = 2 each worker opens one connection, and
    with max_rate each sends at half the rate: together, the route's limits."""

    auto_relay = False

    def start_limited(self, data_delay, **route):
        self.limited = self.add_downstream(data_delay=data_delay)
        self.start_relay(self.downstream.port, workers=2, server={"accept_mode": "handoff"},
                         routes=[dict({"domain": "limited.test",
                                       "next_hop": f"{HOST}:{self.limited.port}"}, **route)])
        time.sleep(0.3)  # the harness's readiness probe took one turn of the rotation

    def send_limited(self, n):
        ids = []
        for i in range(n):
            s = socket.create_connection((HOST, self.relay.port), timeout=10)
            try:
                r = ReplyReader(s)
                r.reply()
                s.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\n"
                          b"RCPT TO:<r%d@limited.test>\r\nDATA\r\n" % i)
                self.assertEqual([c for c, _ in r.replies(4)], [250, 250, 250, 354])
                s.sendall(BODY + b".\r\nQUIT\r\n")
                code, lines = r.reply()
                self.assertEqual(code, 250, lines)
                ids.append(lines[0].split(b"queued as ")[1].decode())
            finally:
                s.close()
        self.assertEqual(sorted(worker_of(q) for q in ids).count(0), n // 2, ids)
        return ids

    def test_max_connections_is_for_the_whole_relay(self):
        self.start_limited(0.3, max_connections=2)
        self.send_limited(12)
        self.assertEqual(self.limited.wait_for(12, 30), 12)
        self.assertLessEqual(self.limited.max_concurrent, 2,
                             f"connections: {self.limited.connections}")

    def test_max_rate_is_for_the_whole_relay(self):
        rate, n = 4.0, 10
        self.start_limited(0, max_rate=rate)
        self.send_limited(n)
        self.assertEqual(self.limited.wait_for(n, 30), n)
        times = sorted(m.time for m in self.limited.snapshot())
        span = times[-1] - times[0]
        # (n-1)/rate = 2.25 s for the relay; each worker at the full rate would take half.
        # Loose below (a worker's first message need not wait for the other's).
        self.assertGreaterEqual(span, 0.7 * (n - 1) / rate,
                                f"{n} messages in {span:.2f} s at max_rate = {rate}")


class FewerWorkersTest(RelayTestCase):
    start_downstream = False
    relay_kwargs = {"workers": 2}

    def test_restart_with_one_worker_delivers_everything(self):
        ids = [send_one(self.relay.port, i) for i in range(30)]
        self.assertEqual({worker_of(q) for q in ids}, {0, 1})
        self.relay.kill9()
        one = Relay(self.downstream.port, workers=1, tmpdir=self.relay.tmp)
        self.addCleanup(one.stop)
        self.downstream.start()
        one.start()
        self.assertEqual(self.downstream.wait_for(30, 30), 30, one.log_text())
        time.sleep(1.5)
        self.assertEqual(len(self.downstream.snapshot()), 30)
        self.assertEqual(sorted(m.rcpt_tos[0] for m in self.downstream.snapshot()),
                         sorted(f"r{i}@dest.test" for i in range(30)))
        self.assertIn("messages=30", one.log_text())
