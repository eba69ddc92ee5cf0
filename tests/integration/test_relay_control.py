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
        assert_relayed(self, self.downstream.messages[0], body, FROM, ["X@Accepted.TEST"])

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


if __name__ == "__main__":
    unittest.main()
