"""Relay control: relay_networks may send anywhere, everyone else only to accept_domains.

The relay is configured with relay_networks = ["127.0.0.1/32"] and
accept_domains = ["accepted.test"]; the outside client connects from 127.0.0.2."""

import time
import unittest

from harness import RelayTestCase, assert_relayed, has_enhanced_code

OUTSIDE = "127.0.0.2"
FROM = "someone@outside.test"


class RelayControlTest(RelayTestCase):

    def test_outside_to_foreign_domain_denied(self):
        with self.relay.client(OUTSIDE) as s:
            s.ehlo("outside.test")
            code, resp = s.mail(FROM)
            self.assertEqual(code, 250, resp)
            code, resp = s.rcpt("x@foreign.test")
            self.assertEqual((code, resp), (554, b"5.7.1 <x@foreign.test>: Relay access denied"))
            # No valid recipient: DATA is refused, nothing gets queued (RFC 5321 3.3
            # allows 503 "out of sequence" or 554 "no valid recipients").
            code, resp = s.docmd("DATA")
            self.assertIn(code, (503, 554), resp)
            self.assertTrue(has_enhanced_code(code, resp), resp)
            s.quit()
        time.sleep(2)
        self.assertEqual(self.downstream.snapshot(), [])

    def test_outside_denied_domain_variants(self):
        """Look-alike domains are foreign too (no suffix or substring matching)."""
        with self.relay.client(OUTSIDE) as s:
            s.ehlo("outside.test")
            self.assertEqual(s.mail(FROM)[0], 250)
            for rcpt in ("x@notaccepted.test", "x@accepted.test.evil", "x@xaccepted.test"):
                code, resp = s.rcpt(rcpt)
                self.assertEqual((code, resp),
                                 (554, f"5.7.1 <{rcpt}>: Relay access denied".encode()))
            s.quit()
        time.sleep(1)
        self.assertEqual(self.downstream.snapshot(), [])

    def test_outside_to_accepted_domain(self):
        body = b"Subject: inbound\r\n\r\nfor an accepted domain\r\n"
        code, resp = self.send(body, FROM, ["x@accepted.test"], source_ip=OUTSIDE)
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.messages[0], body, FROM, ["x@accepted.test"])

    def test_outside_accepted_domain_case_insensitive(self):
        body = b"Subject: inbound\r\n\r\nupper-case domain\r\n"
        code, resp = self.send(body, FROM, ["X@Accepted.TEST"], source_ip=OUTSIDE)
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        # The domain goes on in its canonical form (core/domain.h), the local part as given.
        assert_relayed(self, self.downstream.messages[0], body, FROM, ["X@accepted.test"])

    def test_outside_sender_specified_routing_refused(self):
        """user%foreign@accepted and its kin would let a downstream that follows them
        relay to foreign.test: refused from outside, as Postfix's
        allow_untrusted_routing = no does."""
        forms = ("x%foreign.test@accepted.test", "foreign.test!x@accepted.test",
                 "x@foreign.test@accepted.test", '"x@foreign.test"@accepted.test',
                 "@accepted.test:x@accepted.test", "x@[127.0.0.1]")
        with self.relay.client(OUTSIDE) as s:
            s.ehlo("outside.test")
            self.assertEqual(s.mail(FROM)[0], 250)
            for rcpt in forms:
                code, resp = s.docmd(f"RCPT TO:<{rcpt}>")
                self.assertEqual(code, 554, (rcpt, resp))
                self.assertTrue(resp.startswith(b"5.7.1 "), (rcpt, resp))
            self.assertIn(s.docmd("DATA")[0], (503, 554))
            s.quit()
        time.sleep(1)
        self.assertEqual(self.downstream.snapshot(), [])

    def test_relay_network_may_use_routing_forms(self):
        body = b"Subject: trusted\r\n\r\nrouting form from inside\r\n"
        code, resp = self.send(body, FROM, ["x%other.test@accepted.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.messages[0], body, FROM,
                       ["x%other.test@accepted.test"])

    def test_invalid_domain_refused(self):
        with self.relay.client(OUTSIDE) as s:
            s.ehlo("outside.test")
            self.assertEqual(s.mail(FROM)[0], 250)
            for rcpt in ("x@accepted..test", "x@.accepted.test"):
                code, resp = s.docmd(f"RCPT TO:<{rcpt}>")
                self.assertEqual(code, 501, (rcpt, resp))
            s.quit()


    def test_relay_network_to_foreign_domain(self):
        body = b"Subject: outbound\r\n\r\nfrom the relay network\r\n"
        code, resp = self.send(body, "inside@origin.test", ["x@foreign.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.messages[0], body, "inside@origin.test",
                       ["x@foreign.test"])

    def test_mixed_recipients_from_outside(self):
        body = b"Subject: mixed\r\n\r\nonly the accepted one gets it\r\n"
        with self.relay.client(OUTSIDE) as s:
            s.ehlo("outside.test")
            self.assertEqual(s.mail(FROM)[0], 250)
            self.assertEqual(s.rcpt("x@foreign.test")[0], 554)
            self.assertEqual(s.rcpt("y@accepted.test")[0], 250)
            code, resp = s.data(body)
            self.assertEqual(code, 250, resp)
            s.quit()
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        time.sleep(1)
        msgs = self.downstream.snapshot()
        self.assertEqual(len(msgs), 1, msgs)
        assert_relayed(self, msgs[0], body, FROM, ["y@accepted.test"])


class TrailingDotTest(RelayTestCase):
    """x@accepted.test. is accepted.test for relay control and for routing alike: it
    takes accepted.test's route, not "*"."""

    auto_relay = False

    def test_trailing_dot_takes_the_domains_route(self):
        inside = self.add_downstream()
        self.start_relay(self.downstream.port,
                         routes=[{"domain": "accepted.test",
                                  "next_hop": f"127.0.0.1:{inside.port}"}])
        body = b"Subject: dot\r\n\r\ntrailing dot\r\n"
        code, resp = self.send(body, FROM, ["x@Accepted.test."], source_ip=OUTSIDE)
        self.assertEqual(code, 250, resp)
        self.assertEqual(inside.wait_for(1, 15), 1)
        assert_relayed(self, inside.messages[0], body, FROM, ["x@accepted.test"])
        self.assertEqual(self.downstream.snapshot(), [], "went to the * route")


if __name__ == "__main__":
    unittest.main()
