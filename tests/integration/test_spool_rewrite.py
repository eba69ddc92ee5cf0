"""Rewrite-forward: a message that keeps being deferred must not pin its old spool
segment forever. With tiny segments, later traffic rotates the segment; the deferred
message is rewritten into the active one (new queue id), the old segment is deleted, and
the message is still delivered exactly once, also across a kill -9."""

import os
import time

from harness import RelayTestCase

FROM = "s@origin.test"


class RewriteForwardTest(RelayTestCase):
    relay_kwargs = {"retry_min": 1, "retry_max": 1}

    def setUp(self):
        super().setUp()
        self.relay.stop()
        self.relay.config_text = self.relay.config_text.replace(
            "[server]\n", "[server]\nsegment_size = 4096\n", 1)
        with open(self.relay.config_path, "w") as f:
            f.write(self.relay.config_text)
        self.relay.start()

    def segments(self):
        d = os.path.join(self.relay.spool_dir, "w0")
        return sorted(n for n in os.listdir(d) if n.startswith("seg-"))

    def test_deferred_message_moves_forward_and_old_segment_goes(self):
        self.downstream.rcpt_replies["stuck@dest.test"] = "451 4.3.0 try later"
        stuck = b"Subject: stuck\r\n\r\nwaiting\r\n"
        code, _ = self.send(stuck, FROM, ["stuck@dest.test"])
        self.assertEqual(code, 250)
        first = self.segments()[0]
        for i in range(30):
            self.send(b"Subject: filler %d\r\n\r\n" % i + b"x" * 300 + b"\r\n", FROM,
                      [f"f{i}@dest.test"])
        self.assertEqual(self.downstream.wait_for(30, 20), 30)
        deadline = time.monotonic() + 15
        while (first in self.segments() or "event=rewritten" not in self.relay.log_text()) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertIn("event=rewritten", self.relay.log_text())
        self.assertNotIn(first, self.segments(), "the old segment is still pinned")

        # Crash and restart: still exactly one pending copy, delivered once when possible.
        self.relay.kill9()
        del self.downstream.rcpt_replies["stuck@dest.test"]
        self.relay.start()
        self.assertEqual(self.downstream.wait_for(31, 20), 31, self.relay.log_text())
        time.sleep(2.5)
        got = [m for m in self.downstream.snapshot() if m.rcpt_tos == ["stuck@dest.test"]]
        self.assertEqual(len(got), 1, "the rewritten message was delivered twice or never")
        self.assertTrue(got[0].data.endswith(stuck))
