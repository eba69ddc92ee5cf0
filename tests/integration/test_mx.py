"""Delivery by MX records (issue 5), against a DNS server of our own (dns_server.py).

The "*" route goes by MX records, allowed to use internal (here loopback) MX hosts
(allow_internal_mx; without it they are refused, see test_loops.py). The relay asks only
our DNS server ([dns] servers) and connects to MX hosts on [delivery] smtp_port. The MX hosts are aiosmtpd downstreams on 127.0.0.2, 127.0.0.3 ...,
all on that one port. The senders' domain sender.test has an exact route to a capturing
downstream on 127.0.0.1, which receives the bounces.

Config: retry_min = 1, retry_max = 2, idle_timeout = 1 (seconds); dns timeout 0.5 s."""

import socket
import time
import unittest
import urllib.request

from dns_server import DnsServer
from harness import HOST, Dsn, RelayTestCase, assert_relayed, check_dsn_shape

FROM = "sender@sender.test"
MX_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


def body(tag):
    return (f"Subject: mx {tag}\r\nMessage-ID: <{tag}@sender.test>\r\n\r\n"
            f"by MX {tag}\r\n").encode()


def port_free_everywhere():
    """A TCP port free on 127.0.0.1 and on every MX host address."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        try:
            for host in MX_HOSTS:
                with socket.socket() as t:
                    t.bind((host, port))
            return port
        except OSError:
            continue
    raise AssertionError("no port free on all of " + ", ".join(MX_HOSTS))


class MxTest(RelayTestCase):

    auto_relay = False

    def setUp(self):
        super().setUp()           # self.downstream: the bounce catcher for sender.test
        self.dns = DnsServer().start()
        self.addCleanup(self.dns.stop)
        self.smtp_port = port_free_everywhere()
        self.start_relay(
            None,   # no "*" route written: "*" goes by MX, here allowed to loopback hosts
            routes=[{"domain": "sender.test", "next_hop": f"{HOST}:{self.downstream.port}"},
                    {"domain": "*", "next_hop": "mx", "allow_internal_mx": True}],
            delivery={"smtp_port": self.smtp_port},
            extra=f'[dns]\nservers = ["{self.dns.address()}"]\ntimeout = 0.5\n')

    def dns_lookups(self, result):
        """postern_dns_lookups_total{result=...} over the workers, from /metrics."""
        with urllib.request.urlopen(f"http://{HOST}:{self.relay.admin_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("postern_dns_lookups_total{")
                   and f'result="{result}"' in line)

    def mx_host(self, address):
        return self.add_downstream(host=address, port=self.smtp_port)

    def assert_bounced(self, rcpt, status, timeout=15):
        """One DSN for rcpt reached the sender, with this Status."""
        self.assertEqual(self.downstream.wait_for(1, timeout), 1,
                         f"no bounce for {rcpt} reached {FROM}")
        time.sleep(1)
        got = self.downstream.snapshot()
        self.assertEqual(len(got), 1, f"more than one notice: {got}")
        self.assertEqual(got[0].mail_from, "", "a bounce must come from <>")
        self.assertEqual(got[0].rcpt_tos, [FROM])
        dsn = Dsn(got[0])
        check_dsn_shape(self, dsn)
        block = dsn.recipient(rcpt)
        self.assertIsNotNone(block, f"no block for {rcpt}: {dsn.raw[:3000]!r}")
        self.assertEqual(block["Status"].strip(), status, block.items())
        return dsn

    def test_lowest_preference_gets_the_mail(self):
        # The answer lists the less preferred MX first: order by preference, not position.
        self.dns.mx("pref.test", [(20, "mx-b.pref.test"), (10, "mx-a.pref.test")])
        self.dns.a("mx-a.pref.test", "127.0.0.2")
        self.dns.a("mx-b.pref.test", "127.0.0.3")
        best, other = self.mx_host("127.0.0.2"), self.mx_host("127.0.0.3")
        bodies = [body(f"pref{i}") for i in range(3)]
        for i, b in enumerate(bodies):
            code, resp = self.send(b, FROM, [f"u{i}@pref.test"])
            self.assertEqual(code, 250, resp)
        self.assertEqual(best.wait_for(3, 15), 3, f"preference 10 got {best.snapshot()}")
        time.sleep(0.5)
        self.assertEqual(other.snapshot(), [], "the preference 20 host got mail")
        for i, m in enumerate(sorted(best.snapshot(), key=lambda m: m.rcpt_tos[0])):
            assert_relayed(self, m, bodies[i], FROM, [f"u{i}@pref.test"])
        self.assertGreaterEqual(self.dns.queried("pref.test", "MX"), 1)

    def test_next_mx_when_the_first_refuses(self):
        # Nothing listens on the preferred host's address.
        self.dns.mx("fallback.test", [(10, "mx1.fallback.test"), (20, "mx2.fallback.test")])
        self.dns.a("mx1.fallback.test", "127.0.0.4")
        self.dns.a("mx2.fallback.test", "127.0.0.3")
        second = self.mx_host("127.0.0.3")
        original = body("fallback")
        code, resp = self.send(original, FROM, ["u@fallback.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(second.wait_for(1, 15), 1, "not delivered to the second MX")
        assert_relayed(self, second.messages[0], original, FROM, ["u@fallback.test"])
        self.assertTrue(self.relay.wait_log(
            r"event=next_hop_error relay=mx1\.fallback\.test .*refused", 2),
            "the first MX was not tried first")
        # Within the same attempt, not only after a backoff of the whole next hop.
        self.assertNotRegex(self.relay.log_text(), r"event=deferred .*rcpt=u@fallback\.test")

    def test_implicit_mx(self):
        """No MX records, only an A record: the domain itself is the mail host."""
        self.dns.a("implicit.test", "127.0.0.5")
        host = self.mx_host("127.0.0.5")
        original = body("implicit")
        code, resp = self.send(original, FROM, ["u@implicit.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(host.wait_for(1, 15), 1, "not delivered to the domain's A record")
        assert_relayed(self, host.messages[0], original, FROM, ["u@implicit.test"])
        self.assertGreaterEqual(self.dns.queried("implicit.test", "MX"), 1)

    def test_implicit_mx_over_ipv6(self):
        """No MX records and only an AAAA record: delivered to the domain's IPv6 address."""
        try:
            host = self.mx_host("::1")
        except Exception as e:  # noqa: BLE001 (no IPv6 loopback on this machine)
            self.skipTest(f"cannot listen on ::1: {e}")
        self.dns.aaaa("six.test", "::1")
        original = body("six")
        code, resp = self.send(original, FROM, ["u@six.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(host.wait_for(1, 15), 1, "not delivered to the domain's AAAA record")
        assert_relayed(self, host.messages[0], original, FROM, ["u@six.test"])
        self.assertGreaterEqual(self.dns.queried("six.test", "AAAA"), 1)

    def test_null_mx_bounces(self):
        """RFC 7505: a single MX "." of preference 0 means the domain takes no mail."""
        self.dns.null_mx("nullmx.test")
        self.dns.a("nullmx.test", "127.0.0.2")   # must not be used as an implicit MX
        host = self.mx_host("127.0.0.2")
        original = body("nullmx")
        code, resp = self.send(original, FROM, ["u@nullmx.test"])
        self.assertEqual(code, 250, resp)
        dsn = self.assert_bounced("u@nullmx.test", "5.1.10")
        self.assertEqual(host.connections, [], "a null MX domain was connected to")
        self.assertIn(b"by MX nullmx", dsn.raw, "the original is not attached")
        self.assertLess(self.dns.queried("nullmx.test", "MX"), 5, "the lookup is repeated")

    def test_nxdomain_bounces(self):
        original = body("nx")
        code, resp = self.send(original, FROM, ["u@nowhere.test"])
        self.assertEqual(code, 250, resp)
        self.assert_bounced("u@nowhere.test", "5.1.2")
        self.assertLess(self.dns.queried("nowhere.test", "MX"), 5, "the lookup is repeated")
        self.assertGreaterEqual(self.dns_lookups("permanent"), 1)
        self.assertEqual(self.dns_lookups("temporary"), 0)

    def test_ttl_zero_answers(self):
        """Records with TTL 0 may not be reused, but they serve the attempt they were
        looked up for."""
        self.dns.mx("ttl0.test", [(10, "mx.ttl0.test")], ttl=0)
        self.dns.a("mx.ttl0.test", "127.0.0.2", ttl=0)
        host = self.mx_host("127.0.0.2")
        original = body("ttl0")
        code, resp = self.send(original, FROM, ["u@ttl0.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(host.wait_for(1, 10), 1,
                         f"not delivered; {self.dns.queried('ttl0.test', 'MX')} MX queries")
        assert_relayed(self, host.messages[0], original, FROM, ["u@ttl0.test"])
        self.assertLess(self.dns.queried("ttl0.test", "MX"), 5, "the lookup is repeated")

    def test_answers_cached_for_their_ttl(self):
        """Two domains with the same MX host: its address is looked up once while the
        answer's TTL lasts (60 s: no timing margin needed even on a slow sanitizer
        build); a host whose answer has a 1 s TTL is looked up again after it."""
        for dom in ("one.test", "two.test"):
            self.dns.mx(dom, [(10, "mx.shared.test")])
        for dom in ("three.test", "four.test"):
            self.dns.mx(dom, [(10, "mx.short.test")])
        self.dns.a("mx.shared.test", "127.0.0.2", ttl=60)
        self.dns.a("mx.short.test", "127.0.0.2", ttl=1)
        host = self.mx_host("127.0.0.2")
        for n, dom in enumerate(("one.test", "two.test"), start=1):
            code, resp = self.send(body(dom), FROM, [f"u@{dom}"])
            self.assertEqual(code, 250, resp)
            self.assertEqual(host.wait_for(n, 10), n, f"not delivered to {dom}")
        self.assertEqual(self.dns.queried("mx.shared.test", "A"), 1,
                         "the host's address was not taken from the cache")
        code, resp = self.send(body("three"), FROM, ["u@three.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(host.wait_for(3, 10), 3)
        self.assertEqual(self.dns.queried("mx.short.test", "A"), 1)
        time.sleep(2.5)  # the 1 s TTL (and the relay's 1 s minimum use) has passed
        code, resp = self.send(body("four"), FROM, ["u@four.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(host.wait_for(4, 10), 4)
        self.assertEqual(self.dns.queried("mx.short.test", "A"), 2,
                         "the cached address outlived its TTL")

    def _dns_failure_is_deferred(self, break_dns, heal_dns):
        self.dns.mx("flaky.test", [(10, "mx.flaky.test")])
        self.dns.a("mx.flaky.test", "127.0.0.2")
        host = self.mx_host("127.0.0.2")
        break_dns()
        original = body("flaky")
        code, resp = self.send(original, FROM, ["u@flaky.test"])
        self.assertEqual(code, 250, resp)
        self.assertTrue(self.relay.wait_log(r"event=deferred .*rcpt=u@flaky\.test", 10),
                        "a failed lookup did not defer the message")
        time.sleep(2)   # a retry or two (retry_max = 2 s), still failing
        self.assertEqual(host.snapshot(), [])
        self.assertEqual(self.downstream.snapshot(), [], "a temporary DNS failure bounced")
        self.assertNotRegex(self.relay.log_text(), r"event=(bounced|bounce_queued)")
        heal_dns()
        self.assertEqual(host.wait_for(1, 15), 1, "not delivered once the DNS answered")
        time.sleep(1)
        self.assertEqual(len(host.snapshot()), 1)
        assert_relayed(self, host.messages[0], original, FROM, ["u@flaky.test"])
        self.assertEqual(self.downstream.snapshot(), [])

    def test_servfail_defers(self):
        self._dns_failure_is_deferred(lambda: self.dns.fail("flaky.test", "servfail"),
                                      lambda: self.dns.heal("flaky.test"))
        self.assertRegex(self.relay.log_text(), r"event=deferred .*rcpt=u@flaky\.test .*4\.4\.3")
        self.assertGreaterEqual(self.dns_lookups("temporary"), 1)
        self.assertGreaterEqual(self.dns_lookups("ok"), 1)  # once healed
        self.assertEqual(self.dns_lookups("permanent"), 0)

    def test_dns_server_down_defers(self):
        """Nothing listens on the DNS port (queries meet a closed port), then it is back."""
        self._dns_failure_is_deferred(self.dns.stop, self.dns.start)

    def test_dns_server_silent_defers(self):
        """The DNS server drops every query (timeouts), then answers again."""
        self._dns_failure_is_deferred(lambda: self.dns.fail_all("drop"),
                                      lambda: self.dns.fail_all(None))


if __name__ == "__main__":
    unittest.main()
