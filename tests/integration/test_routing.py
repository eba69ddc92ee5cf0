"""Routing and per-next-hop limits (issue 5).

Several aiosmtpd downstreams on their own ports; [[route]] tables send an exact domain,
a "*.suffix" (subdomains only) and "*" to different ones. A message whose recipients
have several next hops is one transaction per hop, recipients of the same hop together.
Per route: max_connections (concurrent connections to the hop), messages_per_connection
(connection reuse) and max_rate (messages per second).

Config: retry_min = 1, retry_max = 2, idle_timeout = 1 (seconds)."""

import time
import unittest

from harness import HOST, RelayTestCase, assert_relayed

FROM = "router@origin.test"


def body(tag):
    return (f"Subject: routing {tag}\r\nMessage-ID: <{tag}@origin.test>\r\n\r\n"
            f"routed body {tag}\r\n..dot line\r\n").encode()


class RouteSelectionTest(RelayTestCase):
    """"*" -> self.downstream (the default), "b.test" -> exact, "*.c.test" -> suffix."""

    auto_relay = False

    def setUp(self):
        super().setUp()
        self.exact = self.add_downstream()
        self.suffix = self.add_downstream()
        self.start_relay(self.downstream.port, routes=[
            {"domain": "b.test", "next_hop": f"{HOST}:{self.exact.port}"},
            {"domain": "*.c.test", "next_hop": f"{HOST}:{self.suffix.port}"},
        ])

    def test_each_recipient_takes_its_route(self):
        # recipient -> the downstream it must reach
        cases = {
            "u1@b.test": self.exact,
            "Mixed@B.Test.": self.exact,           # any case, a trailing dot: one domain
            "u2@x.c.test": self.suffix,
            "u3@deep.x.c.test": self.suffix,        # any depth below the suffix
            "u4@c.test": self.downstream,           # "*.c.test" is subdomains only
            "u5@xc.test": self.downstream,          # not a label boundary
            "u6@sub.b.test": self.downstream,       # an exact route has no subdomains
            "u7@other.test": self.downstream,
        }
        def canonical(rcpt):   # as the relay passes it on (core/domain.h)
            local, domain = rcpt.rsplit("@", 1)
            return local + "@" + domain.lower().rstrip(".")

        bodies = {}
        for i, rcpt in enumerate(cases):
            bodies[canonical(rcpt)] = body(f"sel{i}")
            code, resp = self.send(bodies[canonical(rcpt)], FROM, [rcpt])
            self.assertEqual(code, 250, resp)
        want = {ds: [canonical(r) for r, d in cases.items() if d is ds]
                for ds in (self.exact, self.suffix, self.downstream)}
        for ds, rcpts in want.items():
            self.assertEqual(ds.wait_for(len(rcpts), 15), len(rcpts),
                             f"port {ds.port} got {ds.snapshot()}, expected {rcpts}")
        time.sleep(1)   # anything misrouted would have arrived by now
        for ds, rcpts in want.items():
            got = ds.snapshot()
            self.assertEqual(sorted(m.rcpt_tos[0] for m in got), sorted(rcpts),
                             f"downstream on port {ds.port}")
            for m in got:
                assert_relayed(self, m, bodies[m.rcpt_tos[0]], FROM, m.rcpt_tos)

    def test_one_transaction_per_next_hop(self):
        """One message for three next hops: one transaction at each, with exactly that
        hop's recipients in their original order."""
        original = body("split")
        rcpts = ["a1@b.test", "x1@other.test", "y1@sub.c.test", "a2@b.test",
                 "x2@else.test", "y2@z.c.test"]
        code, resp = self.send(original, FROM, rcpts)
        self.assertEqual(code, 250, resp)
        expect = {self.exact: ["a1@b.test", "a2@b.test"],
                  self.downstream: ["x1@other.test", "x2@else.test"],
                  self.suffix: ["y1@sub.c.test", "y2@z.c.test"]}
        for ds in expect:
            self.assertGreaterEqual(ds.wait_for(1, 15), 1, f"port {ds.port} got nothing")
        time.sleep(1.5)
        for ds, want in expect.items():
            got = ds.snapshot()
            self.assertEqual([m.rcpt_tos for m in got], [want],
                             f"downstream on port {ds.port}: {got}")
            assert_relayed(self, got[0], original, FROM, want)
            self.assertEqual(len(ds.attempts), 1, ds.attempts)


class PerHopLimitsTest(RelayTestCase):
    """Limits of one route; its downstream answers end-of-data after a short delay, so
    that the relay has several messages ready for it at once."""

    auto_relay = False

    def _relay_with_route(self, **route):
        self.limited = self.add_downstream(data_delay=route.pop("data_delay", 0.15))
        self.start_relay(self.downstream.port, routes=[
            dict({"domain": "limited.test", "next_hop": f"{HOST}:{self.limited.port}"},
                 **route)])

    def _send_many(self, n, tag):
        """n one-recipient messages over one session, as fast as the relay takes them."""
        with self.relay.client() as s:
            s.ehlo("client.test")
            for i in range(n):
                self.assertEqual(s.sendmail(FROM, [f"r{i}@limited.test"], body(f"{tag}{i}")),
                                 {})

    def _wait_all(self, ds, n, timeout):
        self.assertEqual(ds.wait_for(n, timeout), n, f"delivered: {ds.snapshot()}")
        time.sleep(0.5)
        got = ds.snapshot()
        self.assertEqual(sorted(m.rcpt_tos[0] for m in got),
                         sorted(f"r{i}@limited.test" for i in range(n)), got)
        return got

    def test_max_connections_1(self):
        self._relay_with_route(max_connections=1)
        self._send_many(12, "mc")
        self._wait_all(self.limited, 12, 30)
        self.assertEqual(self.limited.max_concurrent, 1,
                         f"connections: {self.limited.connections}")
        self.assertEqual(len(self.downstream.connections), 0, "other downstream was used")

    def test_max_connections_3_allows_parallel(self):
        """The other side of the limit: with 3 allowed, the same load does use more
        than one connection (so the test above measures something), but never 4."""
        self._relay_with_route(max_connections=3, data_delay=0.4)
        self._send_many(12, "mc3")
        self._wait_all(self.limited, 12, 30)
        self.assertGreaterEqual(self.limited.max_concurrent, 2,
                                f"connections: {self.limited.connections}")
        self.assertLessEqual(self.limited.max_concurrent, 3,
                             f"connections: {self.limited.connections}")

    def test_messages_per_connection_2(self):
        self._relay_with_route(max_connections=1, messages_per_connection=2)
        self._send_many(6, "mpc")
        self._wait_all(self.limited, 6, 30)
        used = [c for c in self.limited.connections if c.messages > 0]
        per_conn = [c.messages for c in used]
        self.assertLessEqual(max(per_conn), 2, f"messages per connection: {per_conn}")
        self.assertGreaterEqual(len(used), 3, f"messages per connection: {per_conn}")
        self.assertIn(2, per_conn, "no connection was reused for a second message")

    def test_max_rate(self):
        rate, n = 2.0, 5
        self._relay_with_route(max_rate=rate, data_delay=0)
        start = time.monotonic()
        self._send_many(n, "rate")
        got = self._wait_all(self.limited, n, 30)
        times = sorted(m.time for m in got)
        span = times[-1] - times[0]
        # (n-1)/rate = 2 s at least; loose, as the first send may wait for the socket.
        self.assertGreaterEqual(span, 0.75 * (n - 1) / rate,
                                f"{n} messages in {span:.2f} s at max_rate = {rate}")
        self.assertLess(times[-1] - start, 15, "rate-limited delivery far too slow")
        # Messages that wait for their turn do not each hold a connection: the downstream
        # answers at once, so one connection (two at a pinch) carries them all.
        self.assertLessEqual(len(self.limited.connections), 2,
                             f"connections: {self.limited.connections}")

    def test_max_rate_slow_downstream_uses_parallel_connections(self):
        """A transaction that takes longer than the rate's interval (1 s against 0.25 s)
        does not slow the rate down: the next message starts on another connection
        instead of waiting for the busy one (which would take 5 s or more for 6)."""
        rate, n = 4.0, 6
        self._relay_with_route(max_rate=rate, data_delay=1.0)
        self._send_many(n, "slow")
        got = self._wait_all(self.limited, n, 30)
        times = sorted(m.time for m in got)
        span = times[-1] - times[0]
        self.assertGreaterEqual(self.limited.max_concurrent, 2,
                                f"connections: {self.limited.connections}")
        self.assertLess(span, 3.5, f"{n} messages took {span:.2f} s: not in parallel")


if __name__ == "__main__":
    unittest.main()
