"""Recipient validation at RCPT for accept_domains (issue 11, deliverable 4): unknown
recipients are refused before the message is accepted, so no bounce goes to a (usually
forged) sender. Both modes of [[recipients]], with an outside client (127.0.0.2):

* list: a file of addresses and "@domain" catch-alls; unknown: 550 5.1.1; the file is read
  again on SIGHUP.
* probe: the route's next hop (a real aiosmtpd server that refuses unknown users) is
  asked with RCPT: 450 4.1.1 while the probe runs, then the cached answer (250, or 550
  5.1.1 with the hop's reply); a hop that cannot be asked gives 450 (fail = "closed") or
  acceptance (fail = "open")."""

import os
import signal
import socket
import time
import unittest

from harness import RelayTestCase, ReplyReader, assert_relayed

OUTSIDE = "127.0.0.2"
FROM = "someone@outside.test"
BODY = b"Subject: recipients\r\n\r\nhello\r\n"


class ListTest(RelayTestCase):

    auto_relay = False

    def setUp(self):
        super().setUp()
        self.list_path = os.path.join(self.make_tmp(), "recipients")
        self.write_list("# mailboxes of accepted.test\nknown@accepted.test\n"
                        "Mixed.Case@ACCEPTED.test.\n@catchall.test\n")
        self.start_relay(self.downstream.port, accept_domains=("accepted.test", "catchall.test"),
                         extra=self.recipients_toml())

    def make_tmp(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="postern-rcpts-")
        self.addCleanup(lambda: __import__("shutil").rmtree(d, ignore_errors=True))
        return d

    def recipients_toml(self):
        return "".join(f'[[recipients]]\ndomain = "{d}"\nmode = "list"\n'
                       f'file = "{self.list_path}"\n\n'
                       for d in ("accepted.test", "catchall.test"))

    def write_list(self, text):
        with open(self.list_path, "w") as f:
            f.write(text)

    def rcpt_codes(self, rcpts):
        with self.relay.client(OUTSIDE) as s:
            s.ehlo("outside.test")
            self.assertEqual(s.mail(FROM)[0], 250)
            out = [s.rcpt(r) for r in rcpts]
            s.quit()
        return out

    def test_unknown_refused_known_and_catchall_accepted(self):
        got = self.rcpt_codes(["known@accepted.test", "KNOWN@accepted.test",
                               "mixed.case@accepted.test", "nobody@accepted.test",
                               "anyone@catchall.test"])
        self.assertEqual([c for c, _ in got], [250, 250, 250, 550, 250], got)
        self.assertTrue(got[3][1].startswith(b"5.1.1 <nobody@accepted.test>: Recipient address "
                                             b"rejected"), got[3])
        self.assertIn("event=recipient_unknown", self.relay.log_text())

    def test_known_recipient_delivered(self):
        code, resp = self.send(BODY, FROM, ["known@accepted.test"], source_ip=OUTSIDE)
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.messages[0], BODY, FROM, ["known@accepted.test"])

    def test_list_read_again_on_sighup(self):
        self.assertEqual(self.rcpt_codes(["new@accepted.test"])[0][0], 550)
        self.write_list("new@accepted.test\n@catchall.test\n")
        self.relay.proc.send_signal(signal.SIGHUP)
        self.relay.wait_log(r"event=config_reloaded", 10)
        got = self.rcpt_codes(["new@accepted.test", "known@accepted.test"])
        self.assertEqual([c for c, _ in got], [250, 550], got)


class ProbeTest(RelayTestCase):

    auto_relay = False

    def start(self, fail="closed", extra_keys=""):
        self.downstream.rcpt_replies = {
            "nobody@accepted.test": "550 5.1.1 <nobody@accepted.test>: no such user here"}
        self.start_relay(self.downstream.port, extra=(
            '[[recipients]]\ndomain = "accepted.test"\nmode = "probe"\n'
            f'fail = "{fail}"\nprobe_timeout = 5\n{extra_keys}'))

    def rcpt_until_settled(self, rcpt, timeout=10):
        """RCPT from outside until the answer is no longer 'verification in progress';
        returns every (code, text) seen."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.relay.client(OUTSIDE) as s:
                s.ehlo("outside.test")
                self.assertEqual(s.mail(FROM)[0], 250)
                seen.append(s.rcpt(rcpt))
                s.quit()
            if not (seen[-1][0] == 450 and b"in progress" in seen[-1][1]):
                return seen
            time.sleep(0.2)
        return seen

    def test_probe_accepts_known_and_refuses_unknown(self):
        self.start()
        known = self.rcpt_until_settled("known@accepted.test")
        self.assertEqual(known[0][0], 450, known)
        self.assertTrue(known[0][1].startswith(b"4.1.1 "), known)
        self.assertEqual(known[-1][0], 250, known)
        unknown = self.rcpt_until_settled("nobody@accepted.test")
        self.assertEqual(unknown[-1][0], 550, unknown)
        self.assertIn(b"5.1.1", unknown[-1][1])
        self.assertIn(b"no such user here", unknown[-1][1])
        # Cached: a second RCPT answers at once and probes nothing more.
        probes = self.relay.log_text().count("event=recipient_probed")
        self.assertEqual(self.rcpt_until_settled("nobody@accepted.test")[0][0], 550)
        self.assertEqual(self.relay.log_text().count("event=recipient_probed"), probes)
        # The known one goes through; nothing is ever bounced (no backscatter).
        code, resp = self.send(BODY, FROM, ["known@accepted.test"], source_ip=OUTSIDE)
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        time.sleep(0.5)
        self.assertEqual(len(self.downstream.snapshot()), 1)
        self.assertNotIn("event=bounce_queued", self.relay.log_text())

    def test_hop_down_fails_closed(self):
        self.start()
        self.downstream.stop()
        seen = self.rcpt_until_settled("known@accepted.test")
        self.assertEqual(seen[-1][0], 450, seen)
        self.assertIn(b"temporarily unavailable", seen[-1][1])

    def test_hop_down_fails_open(self):
        self.start(fail="open")
        self.downstream.stop()
        seen = self.rcpt_until_settled("known@accepted.test")
        self.assertEqual(seen[-1][0], 250, seen)

    def test_probes_are_bounded(self):
        """max_probes = 1: many unknown addresses at once start one probe, the rest wait
        (450) and are probed as the client retries."""
        self.start(extra_keys="max_probes = 1\n")
        sock = socket.create_connection(("127.0.0.1", self.relay.port), timeout=10,
                                        source_address=(OUTSIDE, 0))
        self.addCleanup(sock.close)
        r = ReplyReader(sock)
        r.reply()
        # One write: the relay reads all 20 RCPTs in one go, before any probe can finish.
        sock.sendall(b"EHLO outside.test\r\nMAIL FROM:<someone@outside.test>\r\n" +
                     b"".join(b"RCPT TO:<u%d@accepted.test>\r\n" % i for i in range(20)))
        codes = [c for c, _ in r.replies(22)][2:]
        self.assertEqual(codes, [450] * 20)
        time.sleep(1)
        self.assertEqual(self.relay.log_text().count("event=recipient_probed"), 1)


if __name__ == "__main__":
    unittest.main()
