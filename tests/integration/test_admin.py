"""The admin endpoint and `postern queue`: /healthz, /readyz (also while draining),
/metrics parsed by the Prometheus client library's own parser, the queue API through the
real `postern queue` command (list, show, summary, flush, delete, bounce), and reading a
spool offline with --spool-dir once the relay has stopped.

Config: retry_min = 30 s, so a deferred message stays deferred until flushed."""

import http.client as httpclient
import json
import os
import re
import shutil
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from harness import HOST, RelayTestCase, smtp_client

FROM = "sender@origin.test"
BODY = b"Subject: admin test\r\n\r\nhello\r\n"


def http(port, path, method="GET", token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class AdminTest(RelayTestCase):
    start_downstream = False  # nothing listens: mail stays queued
    relay_kwargs = {"retry_min": 30, "retry_max": 60, "workers": 2,
                    "admin": {"queue_networks": ["127.0.0.1/32"]}}

    def queue(self, *args, spool_dir=None):
        argv = [self.relay.bin, "queue", *args]
        argv += ["--spool-dir", spool_dir] if spool_dir else ["--config", self.relay.config_path]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    def queue_ids(self):
        out = json.loads(self.queue("list", "--json").stdout)
        return out

    def wait_queued(self, n, state=None, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entries = self.queue_ids()
            if len([e for e in entries if state is None or e["state"] == state]) >= n:
                return entries
            time.sleep(0.1)
        self.fail(f"queue never held {n} {state or ''} messages: {self.queue_ids()}")

    def send(self, rcpts, mail_from=FROM):
        with smtp_client(HOST, self.relay.port) as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail(mail_from, rcpts, BODY), {})

    def test_health_and_readiness(self):
        self.assertEqual(http(self.relay.admin_port, "/healthz"), (200, "ok\n"))
        self.assertEqual(http(self.relay.admin_port, "/readyz"), (200, "ready\n"))
        self.assertEqual(http(self.relay.admin_port, "/nope")[0], 404)
        self.assertEqual(http(self.relay.admin_port, "/healthz", "POST")[0], 405)
        token = self.token()
        self.assertEqual(http(self.relay.admin_port, "/queue/flush", token=token)[0], 405)
        self.assertEqual(http(self.relay.admin_port, "/queue/0123456789ABCDEF/vanish",
                              "POST", token=token)[0], 404)

    def token(self):
        with open(os.path.join(self.relay.spool_dir, "admin.token")) as f:
            return f.read().strip()

    def test_queue_api_needs_the_bearer_token(self):
        """Reaching the admin port from loopback is not enough: without the token (made
        at start in the spool, mode 0600) every queue path is 401."""
        self.send(["kept@dest.test"])
        self.wait_queued(1)
        path = os.path.join(self.relay.spool_dir, "admin.token")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        token = self.token()
        self.assertGreaterEqual(len(token), 64)
        for bad in (None, "wrong-token-of-some-length", token[:-1], token + "x"):
            for p, method in (("/queue", "GET"), ("/queue/summary", "GET"),
                              ("/queue/flush", "POST")):
                status, text = http(self.relay.admin_port, p, method, token=bad)
                self.assertEqual(status, 401, f"{method} {p} with {bad!r}: {text}")
        self.assertEqual(http(self.relay.admin_port, "/queue", token=token)[0], 200)
        self.assertEqual(http(self.relay.admin_port, "/metrics")[0], 200)   # stays open
        # The same token after a restart: a running `postern queue` script keeps working.
        self.relay.restart()
        self.assertEqual(self.token(), token)
        self.assertEqual(len(self.queue_ids()), 1)

    def raw_admin(self, data):
        with socket.create_connection((HOST, self.relay.admin_port), timeout=10) as s:
            s.sendall(data)
            got = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    return got
                got += chunk

    def test_bad_requests_are_bounded(self):
        self.assertTrue(self.raw_admin(b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 "))
        # A request that never ends its header is cut off at 8 KiB, not buffered forever.
        huge = b"GET /healthz HTTP/1.1\r\nX-Filler: " + b"a" * 20000
        self.assertTrue(self.raw_admin(huge).startswith(b"HTTP/1.1 413 "))
        # The endpoint still serves afterwards.
        self.assertEqual(http(self.relay.admin_port, "/healthz"), (200, "ok\n"))

    def test_readyz_fails_while_draining(self):
        # A client in the middle of DATA keeps the drain going for a moment.
        s = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(s.close)
        s.recv(512)
        s.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n")
        got = b""
        while b"354" not in got:
            got += s.recv(4096)
        self.relay.proc.send_signal(15)
        deadline = time.monotonic() + 5
        status = None
        while time.monotonic() < deadline:
            status, text = http(self.relay.admin_port, "/readyz")
            if status == 503:
                break
            time.sleep(0.05)
        self.assertEqual((status, text), (503, "draining\n"))
        s.sendall(b"Subject: x\r\n\r\nlast words\r\n.\r\n")
        self.assertTrue(s.recv(4096).startswith(b"250"), "in-flight message not finished")

    def test_open_admin_connection_does_not_hold_the_exit(self):
        """An admin connection that never sends its request (a health checker stuck, a
        port scan) is closed once the workers have drained: the relay exits at once,
        not when the connection's 5 s read timeout ends (as it did, past the harness's
        grace, in a loaded CI run)."""
        s = socket.create_connection((HOST, self.relay.admin_port), timeout=10)
        self.addCleanup(s.close)
        time.sleep(0.2)  # accepted
        t0 = time.monotonic()
        self.assertEqual(self.relay.stop(grace=10), 0)
        took = time.monotonic() - t0
        self.assertLess(took, 2.5, f"the relay took {took:.2f} s to exit")

    def test_metrics_parse_and_count(self):
        self.send(["a@dest.test", "b@dest.test"])
        self.send(["c@dest.test"])
        with smtp_client(HOST, self.relay.port, source_ip="127.0.0.9") as s:
            s.ehlo("outsider.test")
            s.mail("x@outside.test")
            code, _ = s.rcpt("victim@elsewhere.test")  # not a relay network: 554 5.7.1
            self.assertEqual(code, 554)
        with smtp_client(HOST, self.relay.port) as s:
            s.ehlo("client.test")
            s.mail(FROM)
            s.rcpt("d@dest.test")
            code, _ = s.data(b"Subject: bare\r\n\r\nbare\nLF\r\n")  # 550 5.5.2
            self.assertEqual(code, 550)
        entries = self.wait_queued(2)
        status, text = http(self.relay.admin_port, "/metrics")
        self.assertEqual(status, 200)
        families = {f.name: f for f in text_string_to_metric_families(text)}

        def total(name, **labels):
            # Counter families are named without _total by the parser; match samples.
            return sum(s.value for f in families.values() for s in f.samples
                       if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

        self.assertEqual(families["postern_connections"].type, "counter")
        self.assertEqual(total("postern_messages_accepted_total"), 2)
        self.assertEqual(total("postern_replies_rejected_total", status="5.7.1"), 1)
        self.assertEqual(total("postern_messages_rejected_total", reason="bare_lf"), 1)
        self.assertEqual(total("postern_messages_rejected_total"), 1)
        # A message either failed once (deferred) or waits for the backed-off next hop.
        tried = [e for e in entries if e["attempts"] > 0]
        self.assertGreaterEqual(len(tried), 1)
        self.assertEqual(total("postern_recipients_total", result="deferred"),
                         sum(len(e["recipients"]) for e in tried))
        self.assertEqual(total("postern_queue_jobs", state="deferred"), len(tried))
        self.assertEqual(total("postern_queue_jobs"), 2)
        self.assertGreater(total("postern_queue_oldest_age_seconds"), 0)
        self.assertGreater(total("postern_spool_bytes"), len(BODY))
        fsync = families["postern_spool_fsync_seconds"]
        self.assertEqual(fsync.type, "histogram")
        self.assertGreaterEqual(sum(s.value for s in fsync.samples
                                    if s.name.endswith("_count")), 1)
        self.assertEqual({s.labels["worker"] for s in families["postern_spool_bytes"].samples},
                         {"0", "1"})
        # The process's own families, checked against what the kernel says of it.
        pid = self.relay.proc.pid
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
        self.assertLess(abs(total("process_resident_memory_bytes") - rss), rss / 2)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        self.assertLess(abs(total("process_open_fds") - fds), 10)
        self.assertGreaterEqual(total("process_max_fds"), fds)
        self.assertGreater(total("process_cpu_seconds_total"), 0)
        self.assertLess(abs(total("process_start_time_seconds") - time.time()), 300)
        free = shutil.disk_usage(self.relay.spool_dir).free
        self.assertLess(abs(total("postern_spool_free_bytes") - free), max(free / 10, 1 << 26))
        self.assertEqual(total("postern_tls_handshake_failures_total"), 0)
        # Nothing listens at the next hop: connections fail before they are ready.
        self.assertGreaterEqual(total("postern_outbound_connections_total", result="failed"), 1,
                                [l for l in text.splitlines() if "outbound" in l or "dns" in l])
        self.assertEqual(total("postern_outbound_connections_total", result="ready"), 0)
        self.assertEqual(total("postern_outbound_connections_open", state="busy"), 0)
        self.assertEqual(total("postern_outbound_tls_failures_total"), 0)
        self.assertGreaterEqual(total("postern_dns_lookups_total", result="ok"), 1)

    def test_version_in_the_command_line_the_log_and_the_metrics(self):
        r = subprocess.run([self.relay.bin, "--version"], capture_output=True, text=True,
                           timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = re.fullmatch(r"postern (\d+\.\d+\.\d+) \((\S+)\), (OpenSSL [^,]+), libuv (\S+)\n",
                         r.stdout)
        self.assertIsNotNone(m, r.stdout)
        version, revision, openssl, libuv = m.groups()
        # Built from this clone: the revision names one of its commits (not necessarily
        # HEAD: the binary may predate the latest commit until the next build).
        here = os.path.dirname(os.path.abspath(__file__))
        if subprocess.run(["git", "-C", here, "rev-parse"], capture_output=True).returncode == 0:
            name = revision.removesuffix("-dirty")
            name = name.rsplit("-g", 1)[-1] if re.search(r"-\d+-g[0-9a-f]+$", name) else name
            found = subprocess.run(["git", "-C", here, "cat-file", "-e", name + "^{commit}"],
                                   capture_output=True)
            self.assertEqual(found.returncode, 0, f"{revision}: not a commit of this clone")
        self.assertTrue(self.relay.wait_log(
            rf'event=starting version="?{re.escape(version)}"? revision="?{re.escape(revision)}"?',
            5), self.relay.log_text()[:500])
        status, text = http(self.relay.admin_port, "/metrics")
        self.assertEqual(status, 200)
        info = [s for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "postern_build_info"]
        self.assertEqual(len(info), 1)
        self.assertEqual(info[0].value, 1)
        self.assertEqual(info[0].labels, {"version": version, "revision": revision,
                                          "openssl": openssl, "libuv": libuv})

    def test_queue_list_show_flush_delete_bounce(self):
        self.send(["keep@dest.test"])
        self.send(["gone@dest.test"])
        self.send(["back@dest.test"])
        # The first failure backs the next hop off: later messages wait "ready" for it.
        entries = self.wait_queued(3)
        by_rcpt = {e["recipients"][0]: e for e in entries}
        listing = self.queue("list")
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertIn("3 message(s)", listing.stdout)
        for e in entries:
            self.assertIn(e["id"], listing.stdout)
        show = self.queue("show", by_rcpt["keep@dest.test"]["id"])
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertIn("recipient:  <keep@dest.test>", show.stdout)
        self.assertIn("state:      deferred", show.stdout)
        self.assertIn("last reply: 451 4.4.1", show.stdout)
        summary = self.queue("summary")
        self.assertRegex(summary.stdout, r"dest\.test\s+3\s+3")

        self.assertEqual(self.queue("delete", by_rcpt["gone@dest.test"]["id"]).returncode, 0)
        self.assertEqual(self.queue("bounce", by_rcpt["back@dest.test"]["id"]).returncode, 0)
        self.assertTrue(self.relay.wait_log(
            r"event=bounce_queued id=" + by_rcpt["back@dest.test"]["id"], 10))
        missing = self.queue("delete", "0123456789ABCDEF")
        self.assertEqual(missing.returncode, 1)
        self.assertIn("nothing to delete", missing.stderr)
        self.assertEqual(self.queue("show", "nothex").returncode, 1)

        # Flush: the deferred message is tried again now, not after retry_min (30 s).
        self.downstream.start()
        self.assertEqual(self.queue("flush").returncode, 0)
        self.assertGreaterEqual(self.downstream.wait_for(2, 10), 2)
        got = {tuple(m.rcpt_tos) for m in self.downstream.snapshot()}
        self.assertIn(("keep@dest.test",), got)
        self.assertIn((FROM,), got, "the bounce notice went to the sender")
        self.assertNotIn(("gone@dest.test",), got)
        bounce = [m for m in self.downstream.snapshot() if m.rcpt_tos == [FROM]][0]
        self.assertEqual(bounce.mail_from, "")
        self.assertIn(b"Final-Recipient: rfc822; back@dest.test", bounce.data)
        deadline = time.monotonic() + 5
        while self.queue_ids() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.queue_ids(), [])

    def test_bulk_actions_on_a_selection(self):
        self.send(["a@dest.test"])
        self.send(["b@other.test"], mail_from="Bulk@Origin.test")
        self.send(["c@other.test", "d@dest.test"])
        entries = self.wait_queued(3)
        by_rcpt = {e["recipients"][0]: e["id"] for e in entries}
        # Without a terminal, delete and bounce ask for --yes and do nothing.
        r = self.queue("delete", "--domain", "other.test")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("2 message(s) match; add --yes", r.stderr)
        self.assertEqual(len(self.queue_ids()), 3)
        r = self.queue("flush", "--older-than", "1h")
        self.assertEqual((r.returncode, r.stdout), (0, "no queued message matches\n"), r.stderr)
        r = self.queue("bounce", "--sender", "bulk@origin.TEST", "--domain", "other.test", "--yes")
        self.assertEqual((r.returncode, r.stdout), (0, "bounced 1 of 1 message(s)\n"), r.stderr)
        self.assertTrue(self.relay.wait_log(r"event=bounce_queued id=" + by_rcpt["b@other.test"], 10))
        r = self.queue("delete", "--domain", "OTHER.test", "--yes")
        self.assertEqual((r.returncode, r.stdout), (0, "deleted 1 of 1 message(s)\n"), r.stderr)
        left = [e for e in self.queue_ids() if e["sender"] == FROM]
        self.assertEqual([e["recipients"] for e in left], [["a@dest.test"]])
        # Refused: a selection with an id, a bad age, nothing selected.
        self.assertEqual(self.queue("delete", by_rcpt["a@dest.test"], "--all").returncode, 2)
        self.assertEqual(self.queue("flush", "--older-than", "soon").returncode, 2)
        self.assertEqual(self.queue("delete").returncode, 2)
        status, text = http(self.relay.admin_port, "/queue/select?recipient=x",
                            token=self.token())
        self.assertEqual((status, text), (400, 'unknown selection key "recipient"\n'))
        # The bulk action itself: one POST per selection, refused without one.
        status, text = http(self.relay.admin_port, "/queue/select/delete", method="POST",
                            token=self.token())
        self.assertEqual(status, 400, text)
        status, _ = http(self.relay.admin_port, "/queue/select/explode?all=1", method="POST",
                         token=self.token())
        self.assertEqual(status, 404)
        r = self.queue("flush", "--all")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^flushed \d of \d message\(s\)")

    def test_flush_one_message_retries_it_through_a_backed_off_hop(self):
        self.send(["first@dest.test"])
        entries = self.wait_queued(1, "deferred")
        # The next hop is backed off for retry_min (30 s); a flush of one message is a
        # retry of that message now, through the hop.
        self.downstream.start()
        self.assertEqual(self.queue("flush", entries[0]["id"]).returncode, 0)
        self.assertEqual(self.downstream.wait_for(1, 10), 1)
        self.assertEqual(self.downstream.snapshot()[0].rcpt_tos, ["first@dest.test"])
        deadline = time.monotonic() + 5
        while self.queue_ids() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.queue_ids(), [])

    def test_queue_api_only_from_queue_networks(self):
        """The queue API shows addresses and deletes mail: from 127.0.0.2, outside the
        default queue_networks (loopback is 127.0.0.0/8, so the config names it), 403;
        health and metrics still answer."""
        self.send(["kept@dest.test"])
        self.wait_queued(1)

        def from_other(path, method="GET"):
            conn = httpclient.HTTPConnection(HOST, self.relay.admin_port, timeout=10,
                                              source_address=("127.0.0.2", 0))
            try:
                conn.request(method, path)
                r = conn.getresponse()
                return r.status, r.read().decode()
            finally:
                conn.close()

        for path, method in (("/queue", "GET"), ("/queue/summary", "GET"),
                             ("/queue/flush", "POST")):
            status, text = from_other(path, method)
            self.assertEqual(status, 403, f"{method} {path}: {text}")
            self.assertIn("queue_networks", text)
        self.assertEqual(from_other("/metrics")[0], 200)
        self.assertEqual(from_other("/healthz")[0], 200)
        # From the relay's own host (127.0.0.1) the queue tool still works.
        self.assertEqual(len(self.queue_ids()), 1)

    def test_offline_spool_listing(self):
        self.send(["later@dest.test", "also@dest.test"])
        entries = self.wait_queued(1)
        self.assertEqual(self.relay.stop(), 0)
        out = self.queue("list", spool_dir=self.relay.spool_dir)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(entries[0]["id"], out.stdout)
        self.assertIn("<later@dest.test> <also@dest.test>", out.stdout)
        self.assertIn("spooled", out.stdout)
        refused = self.queue("flush", spool_dir=self.relay.spool_dir)
        self.assertEqual(refused.returncode, 2)
        self.relay.start()  # for the cleanup's own stop


class BodyReadsMetricTest(RelayTestCase):
    """postern_body_pieces_read_total counts the 64 KiB pieces delivery read of each body,
    whichever way each came (page cache or thread pool)."""

    def test_pieces_of_delivered_bodies_are_counted(self):
        big = b"Subject: big\r\n\r\n" + b"".join(b"%06d " % i + b"x" * 92 + b"\r\n"
                                                 for i in range(2000))  # 200,034 octets
        with smtp_client(HOST, self.relay.port) as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail(FROM, ["a@dest.test"], BODY), {})
            self.assertEqual(s.sendmail(FROM, ["b@dest.test"], big), {})
        self.assertEqual(self.downstream.wait_for(2, 15), 2)
        status, text = http(self.relay.admin_port, "/metrics")
        self.assertEqual(status, 200)
        pieces = {}
        for f in text_string_to_metric_families(text):
            for sample in f.samples:
                if sample.name == "postern_body_pieces_read_total":
                    path = sample.labels["path"]
                    pieces[path] = pieces.get(path, 0) + sample.value
        self.assertEqual(set(pieces), {"cache", "pool"})
        # One piece for the small body, four for the big one (with its Received: line,
        # still under 4 x 64 KiB).
        self.assertEqual(pieces["cache"] + pieces["pool"], 1 + 4, pieces)


if __name__ == "__main__":
    unittest.main()
