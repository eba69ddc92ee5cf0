"""`postern queue` hold, release, requeue and show --body against the real binary, as an
operator coming from postsuper -h/-H/-r and postcat would use them.

Held mail stays out of delivery (a flush does not send it) and stays held across a
restart (a marker in spool_dir/wN/hold/, read offline too); release sends it at once;
delete of a held message removes its marker. Requeue routes a waiting message afresh
after a reload changed the routes: its recipients split between the new next hops, which
a flush (a retry where it was) does not do. show --body prints the message as spooled.

Config: retry_min = 30 s, so a deferred message stays deferred until acted on."""

import glob
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
import unittest
import urllib.request

from harness import HOST, RelayTestCase, free_port, smtp_client

FROM = "sender@origin.test"
BODY = b"Subject: held\r\nMessage-ID: <q1@origin.test>\r\n\r\nline one\r\n..dot line\r\n"


class QueueActionsTest(RelayTestCase):
    start_downstream = False  # nothing listens at first: mail stays queued
    relay_kwargs = {"retry_min": 30, "retry_max": 60, "workers": 2,
                    "admin": {"queue_networks": ["127.0.0.1/32"]}}

    def queue(self, *args, spool_dir=None):
        argv = [self.relay.bin, "queue", *args]
        argv += ["--spool-dir", spool_dir] if spool_dir else ["--config", self.relay.config_path]
        return subprocess.run(argv, capture_output=True, timeout=30)

    def entries(self, spool_dir=None):
        r = self.queue("list", "--json", spool_dir=spool_dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def states(self, spool_dir=None):
        return {e["recipients"][0]: e["state"] for e in self.entries(spool_dir)}

    def wait_queued(self, n, timeout=10):
        """Until n messages wait (deferred, or ready behind their backed-off next hop)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.states()
            if len(got) == n and "active" not in got.values():
                return got
            time.sleep(0.1)
        self.fail(f"queue never held {n} waiting messages: {self.states()}")

    def wait_states(self, want, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.states()
            if all(got.get(r) == s for r, s in want.items()):
                return got
            time.sleep(0.1)
        self.fail(f"queue never reached {want}: {self.states()}")

    def send(self, rcpts, body=BODY):
        with smtp_client(HOST, self.relay.port) as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail(FROM, rcpts, body), {})

    def markers(self):
        return sorted(os.path.basename(p)
                      for p in glob.glob(os.path.join(self.relay.spool_dir, "w*", "hold", "*")))

    def test_held_mail_waits_across_a_restart_until_released(self):
        self.send(["held@dest.test"])
        self.send(["free@dest.test"])
        self.wait_queued(2)
        ids = {e["recipients"][0]: e["id"] for e in self.entries()}
        r = self.queue("hold", ids["held@dest.test"])
        self.assertEqual((r.returncode, r.stdout), (0, b"held: 1 delivery job(s)\n"), r.stderr)
        self.assertEqual(self.markers(), [ids["held@dest.test"]])
        self.assertTrue(self.relay.wait_log(r"event=held id=" + ids["held@dest.test"], 5))
        self.assertEqual(self.states()["held@dest.test"], "held")

        # A flush retries what is deferred, not what is held.
        self.downstream.start()
        self.assertEqual(self.queue("flush").returncode, 0)
        self.assertEqual(self.downstream.wait_for(1, 10), 1)
        time.sleep(0.5)
        self.assertEqual([m.rcpt_tos for m in self.downstream.snapshot()], [["free@dest.test"]])

        # Still held after a restart, and so says a listing of the stopped relay's spool.
        self.assertEqual(self.relay.stop(), 0)
        self.assertEqual(self.states(spool_dir=self.relay.spool_dir),
                         {"held@dest.test": "held"})
        self.relay.start()
        self.assertEqual(self.wait_states({"held@dest.test": "held"}), {"held@dest.test": "held"})
        time.sleep(0.5)
        self.assertEqual(len(self.downstream.snapshot()), 1)

        r = self.queue("release", ids["held@dest.test"])
        self.assertEqual((r.returncode, r.stdout), (0, b"released: 1 delivery job(s)\n"), r.stderr)
        self.assertEqual(self.downstream.wait_for(2, 10), 2)
        self.assertEqual(self.downstream.snapshot()[1].rcpt_tos, ["held@dest.test"])
        self.assertEqual(self.markers(), [])
        # Nothing left to release; an unknown id is said to be one.
        r = self.queue("release", ids["held@dest.test"])
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"nothing to release", r.stderr)

    def test_hold_and_release_a_selection_and_delete_a_held_message(self):
        self.send(["a@dest.test"])
        self.send(["b@other.test"])
        self.send(["c@other.test"])
        self.wait_queued(3)
        r = self.queue("hold", "--domain", "other.test")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"2 message(s) match; add --yes", r.stderr)
        r = self.queue("hold", "--domain", "other.test", "--yes")
        self.assertEqual((r.returncode, r.stdout), (0, b"held 2 of 2 message(s)\n"), r.stderr)
        self.assertEqual(len(self.markers()), 2)
        status = self.states()
        self.assertEqual((status["b@other.test"], status["c@other.test"]), ("held", "held"))
        self.assertNotEqual(status["a@dest.test"], "held")
        metrics = self.metrics()
        self.assertEqual(sum(v for k, v in metrics if 'state="held"' in k), 2)

        # Delete one held message: gone, with its marker.
        ids = {e["recipients"][0]: e["id"] for e in self.entries()}
        self.assertEqual(self.queue("delete", ids["b@other.test"]).returncode, 0)
        self.assertEqual(self.markers(), [ids["c@other.test"]])

        # Release --all takes only what is held: one message, not the deferred one.
        r = self.queue("release", "--all", "--yes")
        self.assertEqual((r.returncode, r.stdout), (0, b"released 1 of 1 message(s)\n"), r.stderr)
        self.assertEqual(self.markers(), [])
        self.assertNotIn("held", self.states().values())

    def on_a_terminal(self, answer, *args):
        """`postern queue ARGS` with a terminal as its standard input, answering ANSWER to
        its question; returns (exit status, what it wrote to the terminal)."""
        leader, follower = pty.openpty()
        try:
            proc = subprocess.Popen([self.relay.bin, "queue", *args, "--config",
                                     self.relay.config_path], stdin=follower, stdout=follower,
                                    stderr=follower)
            os.close(follower)
            follower = -1
            seen = b""
            deadline = time.monotonic() + 10
            while b"[y/N]" not in seen:
                self.assertLess(time.monotonic(), deadline, seen)
                ready, _, _ = select.select([leader], [], [], 0.5)
                if ready:
                    seen += os.read(leader, 4096)
            os.write(leader, answer + b"\n")
            rc = proc.wait(10)
            while select.select([leader], [], [], 0.2)[0]:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                seen += chunk
            return rc, seen.decode()
        finally:
            os.close(leader)
            if follower >= 0:
                os.close(follower)

    def test_a_selection_asks_on_a_terminal(self):
        self.send(["ask@dest.test"])
        self.wait_queued(1)
        rc, seen = self.on_a_terminal(b"n", "hold", "--all")
        self.assertEqual(rc, 1, seen)
        self.assertIn("hold 1 message(s)? [y/N]", seen)
        self.assertIn("nothing held", seen)
        self.assertEqual(self.markers(), [])
        rc, seen = self.on_a_terminal(b"y", "hold", "--all")
        self.assertEqual(rc, 0, seen)
        self.assertIn("held 1 of 1 message(s)", seen)
        self.assertEqual(len(self.markers()), 1)

    def metrics(self):
        with urllib.request.urlopen(f"http://{HOST}:{self.relay.admin_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        return [(line.rsplit(" ", 1)[0], float(line.rsplit(" ", 1)[1]))
                for line in text.splitlines() if line.startswith("postern_queue_jobs{")]

    def test_show_body_prints_the_message_as_spooled(self):
        self.send(["body@dest.test"])
        (entry,) = self.entries()
        online = self.queue("show", entry["id"], "--body")
        self.assertEqual(online.returncode, 0, online.stderr)
        # Our Received: line on top, then the message as sent (smtplib stuffed the line
        # that starts with dots on the wire; the spool holds it as it was).
        self.assertTrue(online.stdout.startswith(b"Received: from client.test"), online.stdout)
        self.assertTrue(online.stdout.endswith(b"\r\n" + BODY), online.stdout)
        self.assertEqual(self.relay.stop(), 0)
        offline = self.queue("show", entry["id"], "--body", spool_dir=self.relay.spool_dir)
        self.assertEqual((offline.returncode, offline.stdout), (0, online.stdout), offline.stderr)
        missing = self.queue("show", "0123456789ABCDEF", "--body", spool_dir=self.relay.spool_dir)
        self.assertEqual(missing.returncode, 1)
        self.assertEqual(self.queue("list", "--body").returncode, 2)
        self.relay.start()  # for the cleanup's own stop
        missing = self.queue("show", "0123456789ABCDEF", "--body")
        self.assertEqual(missing.returncode, 1)
        self.assertIn(b"no such queue id", missing.stderr)


class RequeueTest(RelayTestCase):
    auto_relay = False

    def test_requeue_splits_a_waiting_message_between_the_new_routes(self):
        dead = free_port()
        other = self.add_downstream()
        self.start_relay(dead, retry_min=30, retry_max=60,
                         admin={"queue_networks": ["127.0.0.1/32"]})
        with smtp_client(HOST, self.relay.port) as s:
            s.sendmail(FROM, ["x@one.test", "y@two.test"], BODY)
        self.assertTrue(self.relay.wait_log(r"event=(deferred|next_hop_down)", 15))
        # New routes: one.test to the first downstream, everything else to the other.
        base = self.relay.config_text
        new = base.replace(f"{HOST}:{dead}", f"{HOST}:{other.port}") + (
            f'\n[[route]]\ndomain = "one.test"\nnext_hop = "{HOST}:{self.downstream.port}"\n')
        with open(self.relay.config_path, "w") as f:
            f.write(new)
        self.relay.proc.send_signal(signal.SIGHUP)
        self.assertTrue(self.relay.wait_log(r"event=config_reloaded", 10))
        listed = subprocess.run([self.relay.bin, "queue", "list", "--json", "--config",
                                 self.relay.config_path], capture_output=True, timeout=30)
        (entry,) = json.loads(listed.stdout)
        r = subprocess.run([self.relay.bin, "queue", "requeue", entry["id"], "--config",
                            self.relay.config_path], capture_output=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (0, b"requeued: 1 delivery job(s)\n"), r.stderr)
        self.assertEqual(self.downstream.wait_for(1, 10), 1)
        self.assertEqual(other.wait_for(1, 10), 1)
        self.assertEqual(self.downstream.snapshot()[0].rcpt_tos, ["x@one.test"])
        self.assertEqual(other.snapshot()[0].rcpt_tos, ["y@two.test"])
        self.assertTrue(re.search(r"event=requeued id=" + entry["id"], self.relay.log_text()))


if __name__ == "__main__":
    unittest.main()
