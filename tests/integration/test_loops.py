"""Mail loops and MX answers pointing inside (issue 11, deliverable 1).

* A message carrying more "Received:" fields than [limits] hop_limit (50) is refused at
  its end with 554 5.4.6; at the limit it passes.
* A next hop that is the relay itself, by a route or by an MX answer, is a permanent
  failure (5.4.6, "loops back to myself") reported by one bounce: the relay never opens
  a connection to its own listener, so the loop lasts no hop at all.
* MX hosts with internal addresses (here 127.0.0.2, loopback) are refused unless the
  route says allow_internal_mx; the mail bounces with 5.4.4 and nothing connects to
  them. (Only loopback is used as the "internal" address: tests never send to other
  private ranges. core/network_test.cc covers the classification of the rest.)

The sender's domain sender.test has an exact route to the capturing downstream, which
receives the bounces."""

import socket
import time
import unittest

from dns_server import DnsServer
from harness import HOST, Dsn, RelayTestCase, check_dsn_shape, free_port

FROM = "sender@sender.test"
INSIDE = "127.0.0.2"


def body(tag, hops=0):
    received = "".join(f"Received: from hop{i}.test by hop{i + 1}.test; "
                       f"Thu, 3 Dec 2026 10:00:00 +0000\r\n" for i in range(hops))
    return (received + f"Subject: loops {tag}\r\nMessage-ID: <{tag}@sender.test>\r\n\r\n"
            f"loop test {tag}\r\n").encode()


def port_free_on(*hosts):
    for _ in range(50):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as t:
                    t.bind((host, port))
            return port
        except OSError:
            continue
    raise AssertionError("no common free port")


class HopLimitTest(RelayTestCase):
    """The default hop_limit (50) against a real client and downstream."""

    def test_over_the_hop_limit_is_refused(self):
        code, resp = self.send(body("hops51", hops=51), FROM, ["u@dest.test"])
        self.assertEqual(code, 554, resp)
        self.assertTrue(resp.startswith(b"5.4.6"), resp)
        self.relay.wait_log(r"too_many_hops .*hops=51", 5)
        time.sleep(0.5)
        self.assertEqual(self.downstream.snapshot(), [], "a looping message was relayed")

    def test_at_the_hop_limit_passes(self):
        code, resp = self.send(body("hops50", hops=50), FROM, ["u@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 10), 1)


class LoopTest(RelayTestCase):

    auto_relay = False

    def setUp(self):
        super().setUp()           # self.downstream: the bounce catcher for sender.test
        self.dns = DnsServer().start()
        self.addCleanup(self.dns.stop)

    def start(self, port, routes, delivery=None):
        return self.start_relay(
            None, port=port,
            routes=[{"domain": "sender.test", "next_hop": f"{HOST}:{self.downstream.port}"}]
            + routes,
            delivery=delivery,
            extra=f'[dns]\nservers = ["{self.dns.address()}"]\ntimeout = 0.5\n')

    def assert_one_bounce(self, rcpt, status, reason):
        self.assertEqual(self.downstream.wait_for(1, 15), 1, f"no bounce for {rcpt}")
        time.sleep(1.5)   # a loop would show up as more messages or more acceptances
        got = self.downstream.snapshot()
        self.assertEqual(len(got), 1, f"more than one notice: {got}")
        self.assertEqual(got[0].mail_from, "")
        dsn = Dsn(got[0])
        check_dsn_shape(self, dsn)
        block = dsn.recipient(rcpt)
        self.assertIsNotNone(block, dsn.raw[:3000])
        self.assertEqual(block["Status"].strip(), status, block.items())
        self.assertIn(reason, dsn.raw.decode(errors="replace"))
        # Only the client's message was ever accepted: the relay never talked to itself.
        self.assertEqual(self.relay.log_text().count("event=accepted "), 1, self.relay.log_text())
        return dsn

    def test_route_to_self_bounces_without_a_connection(self):
        port = free_port()
        self.start(port, [{"domain": "loop.test", "next_hop": f"{HOST}:{port}"}])
        code, resp = self.send(body("route-self"), FROM, ["u@loop.test"])
        self.assertEqual(code, 250, resp)
        self.assert_one_bounce("u@loop.test", "5.4.6", "loops back to myself")

    def test_mx_to_self_bounces_without_a_connection(self):
        port = free_port()
        self.dns.mx("loop.test", [(10, "mx.loop.test")])
        self.dns.a("mx.loop.test", HOST)
        self.start(port, [{"domain": "*", "next_hop": "mx", "allow_internal_mx": True}],
                   delivery={"smtp_port": port})
        code, resp = self.send(body("mx-self"), FROM, ["u@loop.test"])
        self.assertEqual(code, 250, resp)
        self.assert_one_bounce("u@loop.test", "5.4.6", "loops back to myself")

    def test_mx_to_self_after_a_better_host_uses_only_the_better(self):
        # RFC 5321 5.1: hosts after ourselves are not tried; the better one gets the mail.
        port = port_free_on(HOST, INSIDE)
        better = self.add_downstream(host=INSIDE, port=port)
        self.dns.mx("backup.test", [(10, "mx1.backup.test"), (20, "mx2.backup.test")])
        self.dns.a("mx1.backup.test", INSIDE)
        self.dns.a("mx2.backup.test", HOST)
        self.start(port, [{"domain": "*", "next_hop": "mx", "allow_internal_mx": True}],
                   delivery={"smtp_port": port})
        code, resp = self.send(body("mx-backup"), FROM, ["u@backup.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(better.wait_for(1, 10), 1)

    def test_mx_with_internal_addresses_is_refused(self):
        port = port_free_on(HOST, INSIDE)
        inside = self.add_downstream(host=INSIDE, port=port)
        self.dns.mx("inside.test", [(10, "mx.inside.test")])
        self.dns.a("mx.inside.test", INSIDE)
        self.start(free_port(), [], delivery={"smtp_port": port})   # "*" -> mx by default
        code, resp = self.send(body("mx-inside"), FROM, ["u@inside.test"])
        self.assertEqual(code, 250, resp)
        self.assert_one_bounce("u@inside.test", "5.4.4", "internal addresses")
        self.assertEqual(inside.connections, [], "the relay connected to an internal MX")

    def test_implicit_mx_with_an_internal_address_is_refused(self):
        port = port_free_on(HOST, INSIDE)
        inside = self.add_downstream(host=INSIDE, port=port)
        self.dns.a("bare.test", INSIDE)    # no MX: the domain's own address (implicit MX)
        self.start(free_port(), [], delivery={"smtp_port": port})
        code, resp = self.send(body("implicit-inside"), FROM, ["u@bare.test"])
        self.assertEqual(code, 250, resp)
        self.assert_one_bounce("u@bare.test", "5.4.4", "internal addresses")
        self.assertEqual(inside.connections, [])

    def test_allow_internal_mx_lets_them_through(self):
        port = port_free_on(HOST, INSIDE)
        inside = self.add_downstream(host=INSIDE, port=port)
        self.dns.mx("inside.test", [(10, "mx.inside.test")])
        self.dns.a("mx.inside.test", INSIDE)
        self.start(free_port(),
                   [{"domain": "inside.test", "next_hop": "mx", "allow_internal_mx": True}],
                   delivery={"smtp_port": port})
        code, resp = self.send(body("mx-allowed"), FROM, ["u@inside.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(inside.wait_for(1, 10), 1)


if __name__ == "__main__":
    unittest.main()
