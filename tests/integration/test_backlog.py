"""A queue longer than a next hop keeps whole (256 jobs): the waiting jobs keep where their
message lies, not its envelope, which is read back from the spool when a job is taken up,
listed, or recovered after a restart (relay/outbound/delivery.h, ParkedJob in queue/scheduler.h).
Every message must come out with its own sender and recipients, exactly once, and the
done flags of a message with more than 64 recipients (RecipientFlags keeps the first 64
inline) must survive a deferral and a restart.

Config: one worker, retry_min = 30 s, nothing listening at the next hop until the test
starts it and flushes the queue."""

import json
import subprocess
import time
import unittest

from harness import HOST, RelayTestCase, smtp_client

MESSAGES = 400  # more than the 256 a next hop keeps whole
WIDE = 70       # recipients of the one wide message


def sender_of(i):
    # Long enough that no string fits std::string's inline buffer.
    return f"sender-number-{i:04d}-with-a-long-local-part@origin-{i % 7}.test"


def rcpt_of(i):
    return f"recipient-{i:04d}-also-quite-long@dest.test"


def wide_rcpt(k):
    return f"wide-{k:02d}@dest.test"


class BacklogTest(RelayTestCase):
    start_downstream = False  # nothing listens: mail stays queued
    relay_kwargs = {"retry_min": 30, "retry_max": 60, "workers": 1,
                    "admin": {"queue_networks": ["127.0.0.1/32"]}}

    def queue(self, *args):
        argv = [self.relay.bin, "queue", *args, "--config", self.relay.config_path]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def listing(self):
        out = self.queue("list", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def wait_listed(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        entries = []
        while time.monotonic() < deadline:
            entries = self.listing()
            if len(entries) >= n:
                return entries
            time.sleep(0.2)
        self.fail(f"the queue lists {len(entries)} messages, not {n}")

    def check_listing(self, entries, wide_pending):
        by_sender = {e["sender"]: e for e in entries}
        self.assertEqual(len(by_sender), MESSAGES + 1)
        for i in range(MESSAGES):
            self.assertEqual(by_sender[sender_of(i)]["recipients"], [rcpt_of(i)], i)
        self.assertEqual(sorted(by_sender["wide@origin.test"]["recipients"]), sorted(wide_pending))

    def test_a_long_queue_reads_envelopes_back_and_loses_nothing(self):
        body = b"Subject: backlog\r\n\r\nmessage %d\r\n"
        wide = [wide_rcpt(k) for k in range(WIDE)]
        with smtp_client(HOST, self.relay.port) as s:
            s.ehlo("client.test")
            for i in range(MESSAGES):
                self.assertEqual(s.sendmail(sender_of(i), [rcpt_of(i)], body % i), {})
            self.assertEqual(s.sendmail("wide@origin.test", wide, body % 9999), {})
        # Everything is deferred (the hop is down): listed from the spool, whole.
        self.check_listing(self.wait_listed(MESSAGES + 1), wide)

        # The hop comes back and refuses three of the wide message's recipients once,
        # two of them past the 64 flags kept inline.
        again = [wide_rcpt(3), wide_rcpt(66), wide_rcpt(69)]
        for r in again:
            self.downstream.rcpt_replies[r] = ["451 4.2.0 Busy"]
        self.downstream.start()
        self.assertEqual(self.queue("flush").returncode, 0)
        self.assertEqual(self.downstream.wait_for(MESSAGES + 1, 60), MESSAGES + 1)
        deadline = time.monotonic() + 20
        while len(self.listing()) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        entries = self.listing()
        self.assertEqual(len(entries), 1, entries[:3])
        self.assertEqual(sorted(entries[0]["recipients"]), sorted(again))

        # After a restart (the hop down again, so they wait), recovery finds the same three
        # from the Done records.
        self.downstream.stop()
        self.relay.restart()
        entries = self.wait_listed(1)
        self.assertEqual(len(entries), 1)
        self.assertEqual(sorted(entries[0]["recipients"]), sorted(again))
        self.downstream.start()
        self.assertEqual(self.queue("flush").returncode, 0)
        self.assertEqual(self.downstream.wait_for(MESSAGES + 2, 30), MESSAGES + 2)

        # Every recipient exactly once, each message from its own sender.
        got = {}
        for m in self.downstream.snapshot():
            for r in m.rcpt_tos:
                got.setdefault(r, []).append(m.mail_from)
        for i in range(MESSAGES):
            self.assertEqual(got.pop(rcpt_of(i)), [sender_of(i)], i)
        for r in wide:
            self.assertEqual(got.pop(r), ["wide@origin.test"], r)
        self.assertEqual(got, {})


if __name__ == "__main__":
    unittest.main()
