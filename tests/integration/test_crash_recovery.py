"""Durability and retries: a 250 survives kill -9; 4xx and refused connections are
retried after retry_min; a 5xx is not retried.

Config: retry_min = 1, retry_max = 2, idle_timeout = 1 (seconds)."""

import time
import unittest

from harness import RelayTestCase, assert_relayed

FROM = "durable@origin.test"


def body_n(i):
    return (f"Subject: durable #{i}\r\nMessage-ID: <{i}@origin.test>\r\n\r\n".encode()
            + b"body line\r\n..stuffed\r\n" + bytes([0x80 + i]) * 40 + b"\r\n")


class CrashRecoveryTest(RelayTestCase):
    start_downstream = False   # downstream port is reserved but nothing listens yet

    def test_kill9_after_250_then_restart(self):
        body = body_n(1)
        code, resp = self.send(body, FROM, ["r1@dest.test", "r2@dest.test"])
        self.assertEqual(code, 250, resp)
        self.relay.kill9()
        self.downstream.start()
        self.relay.restart()
        self.assertEqual(self.downstream.wait_for(1, 15), 1,
                         "acknowledged message not delivered after kill -9 and restart")
        time.sleep(2)
        msgs = self.downstream.snapshot()
        self.assertEqual(len(msgs), 1, f"delivered more than once: {msgs}")
        assert_relayed(self, msgs[0], body, FROM, ["r1@dest.test", "r2@dest.test"])

    def test_kill9_several_messages(self):
        bodies = {}
        with self.relay.client() as s:
            s.ehlo("client.test")
            for i in range(5):
                bodies[i] = body_n(i)
                self.assertEqual(s.sendmail(FROM, [f"r{i}@dest.test"], bodies[i]), {})
            # no QUIT: the relay dies with the session open
            self.relay.kill9()
        self.downstream.start()
        self.relay.restart()
        self.assertEqual(self.downstream.wait_for(5, 20), 5,
                         f"delivered: {self.downstream.snapshot()}")
        time.sleep(2)
        msgs = self.downstream.snapshot()
        self.assertEqual(len(msgs), 5, f"duplicates: {msgs}")
        by_rcpt = {m.rcpt_tos[0]: m for m in msgs}
        for i, b in bodies.items():
            assert_relayed(self, by_rcpt[f"r{i}@dest.test"], b, FROM, [f"r{i}@dest.test"])

    def test_kill9_mid_data_loses_only_the_unacknowledged(self):
        """A message whose DATA was cut off by the crash is not delivered (it was never
        acknowledged); an earlier acknowledged one is."""
        acked = body_n(7)
        with self.relay.client() as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail(FROM, ["acked@dest.test"], acked), {})
            self.assertEqual(s.mail(FROM)[0], 250)
            self.assertEqual(s.rcpt("partial@dest.test")[0], 250)
            self.assertEqual(s.docmd("DATA")[0], 354)
            s.send(b"Subject: never finished\r\n\r\nhalf a message\r\n")
            time.sleep(0.3)
            self.relay.kill9()
        self.downstream.start()
        self.relay.restart()
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        time.sleep(2)
        msgs = self.downstream.snapshot()
        self.assertEqual([m.rcpt_tos for m in msgs], [["acked@dest.test"]])
        assert_relayed(self, msgs[0], acked, FROM, ["acked@dest.test"])

    def test_connection_refused_is_retried(self):
        """No restart: the first attempt finds nothing listening, a retry delivers."""
        body = body_n(2)
        code, resp = self.send(body, FROM, ["later@dest.test"])
        self.assertEqual(code, 250, resp)
        time.sleep(1.5)        # at least one refused attempt
        self.downstream.start()
        self.assertEqual(self.downstream.wait_for(1, 10), 1,
                         "not delivered after the downstream came up (retry_max = 2 s)")
        assert_relayed(self, self.downstream.messages[0], body, FROM, ["later@dest.test"])


class DeliveredNotResentTest(RelayTestCase):

    def test_delivered_message_not_resent_after_restart(self):
        body = body_n(3)
        code, resp = self.send(body, FROM, ["once@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        time.sleep(2)          # let the completion record reach the spool
        self.relay.kill9()
        self.relay.restart()
        time.sleep(4)
        msgs = self.downstream.snapshot()
        self.assertEqual(len(msgs), 1, f"delivered message was sent again: {msgs}")


class RetryTest(RelayTestCase):

    def test_451_then_250(self):
        self.downstream.data_replies = ["451 4.3.0 Try again later"]
        body = body_n(4)
        code, resp = self.send(body, FROM, ["retry@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 10), 1, "not delivered after a 451")
        attempts = self.downstream.attempts
        self.assertEqual([r[:3] for _, r in attempts], ["451", "250"], attempts)
        gap = attempts[1][0].time - attempts[0][0].time
        self.assertGreaterEqual(gap, 0.5, f"retry after {gap:.2f} s, retry_min is 1 s")
        assert_relayed(self, self.downstream.messages[0], body, FROM, ["retry@dest.test"])

    def test_451_twice_backoff(self):
        self.downstream.data_replies = ["451 4.3.0 Try again later"] * 2
        body = body_n(5)
        code, resp = self.send(body, FROM, ["retry2@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 10), 1, "not delivered after two 451s")
        attempts = self.downstream.attempts
        self.assertEqual([r[:3] for _, r in attempts], ["451", "451", "250"], attempts)
        assert_relayed(self, self.downstream.messages[0], body, FROM, ["retry2@dest.test"])

    def test_rcpt_451_for_one_recipient(self):
        """A 4xx for one recipient defers only that one; the others are not sent twice."""
        self.downstream.rcpt_replies = {"slow@dest.test": "451 4.2.0 Mailbox busy"}
        body = body_n(6)
        code, resp = self.send(body, FROM, ["fast@dest.test", "slow@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        time.sleep(1.5)
        self.downstream.rcpt_replies = {}
        self.assertEqual(self.downstream.wait_for(2, 10), 2, "deferred recipient not retried")
        time.sleep(2)
        msgs = self.downstream.snapshot()
        self.assertEqual([m.rcpt_tos for m in msgs], [["fast@dest.test"], ["slow@dest.test"]])
        for m in msgs:
            assert_relayed(self, m, body, FROM, m.rcpt_tos)

    def test_550_not_retried(self):
        self.downstream.data_replies = ["550 5.7.1 Rejected for policy reasons"]
        body = body_n(8)
        code, resp = self.send(body, FROM, ["reject@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_attempts(1, 15), 1)
        time.sleep(5)          # more than retry_min + retry_max
        original = [(m, r) for m, r in self.downstream.attempts if m.mail_from == FROM]
        self.assertEqual(len(original), 1, f"a 5xx was retried: {self.downstream.attempts}")
        self.assertTrue(self.relay.running(), self.relay.log_text())


if __name__ == "__main__":
    unittest.main()
