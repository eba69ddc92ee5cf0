"""SIGTERM drains (DESIGN.md Operations), against the real binary: listeners close at once,
an idle session gets 421 4.3.2, a session in a transaction finishes it (250) and gets 421
at its next command, a message on a delivery connection finishes there (delivered once,
not cut after its final dot and sent again after the restart), and at server.drain_timeout
whatever is left is cut off and the relay exits 0 with nothing acknowledged lost."""

import signal
import socket
import time
import unittest

from harness import HOST, RelayTestCase, ReplyReader

BODY = b"Subject: drain\r\n\r\nbody\r\n"


class _DrainBase(RelayTestCase):
    auto_relay = False

    def start_drain_relay(self, drain_timeout=10, **kwargs):
        self.start_relay(self.downstream.port, server={"drain_timeout": drain_timeout}, **kwargs)

    def raw(self):
        s = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(s.close)
        r = ReplyReader(s)
        self.assertEqual(r.reply()[0], 220)
        return s, r

    def sigterm(self):
        self.relay.proc.send_signal(signal.SIGTERM)
        return time.monotonic()

    def wait_exit(self, timeout):
        rc = self.relay.proc.wait(timeout)
        self.assertEqual(rc, 0, self.relay.log_text()[-3000:])
        return rc


class SessionsTest(_DrainBase):
    def test_idle_gets_421_transaction_finishes_listener_closed(self):
        self.start_drain_relay()
        idle, idle_r = self.raw()
        idle.sendall(b"EHLO c.test\r\n")
        self.assertEqual(idle_r.reply()[0], 250)
        busy, busy_r = self.raw()
        busy.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<r@dest.test>\r\n")
        self.assertEqual([c for c, _ in busy_r.replies(3)], [250, 250, 250])

        self.sigterm()
        code, lines = idle_r.reply()
        self.assertEqual(code, 421, lines)
        self.assertIn(b"4.3.2", lines[0])
        self.assertTrue(idle_r.at_eof())
        # No new connections while the transaction finishes.
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection((HOST, self.relay.port), timeout=2).close()
            except ConnectionRefusedError:
                break
            self.assertLess(time.monotonic(), deadline, "the listener still accepts")
            time.sleep(0.05)
        self.assertTrue(self.relay.running())
        # A reload asked for now is refused: the draining workers take no new connections.
        self.relay.proc.send_signal(signal.SIGHUP)
        self.assertTrue(self.relay.wait_log(r'event=reload_failed error="shutting down"', 5))

        busy.sendall(b"DATA\r\n")
        self.assertEqual(busy_r.reply()[0], 354)
        busy.sendall(BODY + b".\r\n")
        code, lines = busy_r.reply()
        self.assertEqual(code, 250, lines)
        busy.sendall(b"MAIL FROM:<a@origin.test>\r\n")
        code, lines = busy_r.reply()
        self.assertEqual(code, 421, lines)
        self.wait_exit(15)
        # Acknowledged during the drain: it is on disk, and goes out after the restart
        # (delivery stopped with the drain) if it did not before.
        self.relay.proc = None
        self.relay.start()
        self.assertEqual(self.downstream.wait_for(1, 15), 1)


class OutboundTest(_DrainBase):
    def test_message_on_a_delivery_connection_finishes(self):
        self.downstream.data_delay = 2.0
        self.start_drain_relay()
        with self.relay.client() as s:
            s.sendmail("a@origin.test", ["r@dest.test"], BODY)
        self.assertEqual(self.downstream.wait_connections(1, 10), 1)
        time.sleep(0.5)  # the body is sent; the downstream sits on its reply
        t0 = self.sigterm()
        self.wait_exit(15)
        self.assertGreaterEqual(time.monotonic() - t0, 1.0, "the drain did not wait")
        log = self.relay.log_text()
        self.assertIn("event=delivered", log)
        self.assertNotIn("shutting down", log)
        self.assertEqual(self.downstream.wait_for(1, 1), 1)
        # Recorded as done before the exit: the restart does not send it again.
        self.relay.proc = None
        self.relay.start()
        time.sleep(2)
        self.assertEqual(len(self.downstream.snapshot()), 1)
        self.assertEqual(len(self.downstream.attempts), 1)


class DeadlineTest(_DrainBase):
    def test_what_is_left_at_the_deadline_is_cut_and_nothing_acknowledged_is_lost(self):
        self.downstream.data_delay = 30
        self.start_drain_relay(drain_timeout=1)
        with self.relay.client() as s:
            s.sendmail("a@origin.test", ["r@dest.test"], BODY)
        self.assertEqual(self.downstream.wait_connections(1, 10), 1)
        # An inbound client that stalls in the middle of its body.
        stalled, r = self.raw()
        stalled.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<x@dest.test>\r\n"
                        b"DATA\r\n")
        self.assertEqual([c for c, _ in r.replies(4)], [250, 250, 250, 354])
        stalled.sendall(b"Subject: never finished\r\n")
        time.sleep(0.3)

        t0 = self.sigterm()
        self.wait_exit(10)
        self.assertLess(time.monotonic() - t0, 5, "the drain ran past drain_timeout = 1")
        code, lines = r.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(r.at_eof(), "the stalled session was not closed")
        self.assertIn("shutting down", self.relay.log_text())
        # The cut delivery is retried after the restart, against a prompt downstream.
        self.downstream.stop()
        prompt = self.add_downstream(port=self.downstream.port)
        self.relay.proc = None
        self.relay.start()
        self.assertGreaterEqual(prompt.wait_for(1, 15), 1)
        time.sleep(1)
        self.assertEqual([m.rcpt_tos for m in prompt.snapshot()], [["r@dest.test"]],
                         "the unfinished inbound message must not be delivered")


if __name__ == "__main__":
    unittest.main()
