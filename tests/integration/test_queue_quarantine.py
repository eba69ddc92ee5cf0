"""`postern queue quarantine`: the damaged spool ranges a start copied aside, listed
through the running relay's admin endpoint (GET /queue/quarantine, behind the queue API's
bearer token) and offline with --spool-dir, as text and as JSON. One bit of a queued
message is flipped while the relay is stopped; `postern spool check` names the damaged
range before the restart, and after it every listing must show exactly that range (worker,
segment, offset, length, the file holding those octets, when it was made), whatever else
is lying in the quarantine directory. `postern queue summary` counts it."""

import json
import os
import re
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from harness import HOST, RelayTestCase

FROM = "sender@origin.test"
SEGMENT = "seg-00000001.log"


class QueueQuarantineTest(RelayTestCase):

    auto_relay = False
    start_downstream = False   # nothing leaves: the messages stay in the spool

    def queue(self, *args, offline=False):
        argv = [self.relay.bin, "queue", *args]
        argv += (["--spool-dir", self.relay.spool_dir] if offline
                 else ["--config", self.relay.config_path])
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, f"postern queue {' '.join(args)}: {r.stderr}")
        return r.stdout

    def damage_one_message(self):
        """Queues three messages, stops the relay, flips one bit inside the second and
        returns the damaged range as `postern spool check` names it: (offset, end)."""
        for i in range(3):
            code, resp = self.send(b"Subject: quarantine %d\r\n\r\nbody\r\n" % i, FROM,
                                   ["q%d@dest.test" % i])
            self.assertEqual(code, 250, resp)
        self.assertEqual(self.relay.stop(), 0)
        seg = os.path.join(self.relay.spool_dir, "w0", SEGMENT)
        with open(seg, "r+b") as f:
            data = bytearray(f.read())
            at = data.index(b"quarantine 1") + 3
            data[at] ^= 0x04
            f.seek(0)
            f.write(data)
        check = subprocess.run([self.relay.bin, "spool", "check", self.relay.spool_dir],
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 1, check.stdout)
        ranges = re.findall(r"damaged: octets (\d+) to (\d+)", check.stdout)
        self.assertEqual(len(ranges), 1, check.stdout)
        begin, end = int(ranges[0][0]), int(ranges[0][1])
        self.assertTrue(begin <= at < end, (begin, at, end))
        return seg, begin, end

    def check_json(self, listing, expected):
        self.assertEqual(len(listing["ranges"]), 1, listing)
        r = listing["ranges"][0]
        self.assertEqual({k: r[k] for k in expected}, expected)
        self.assertEqual(r["size"], r["length"])
        self.assertEqual(listing["count"], 1)
        self.assertEqual(listing["bytes"], expected["length"])
        self.assertFalse(listing["truncated"])
        self.assertEqual(listing["errors"], [])
        st = os.lstat(expected["path"])
        self.assertEqual(r["quarantined_ms"], st.st_mtime_ns // 1_000_000)
        return r

    def check_text(self, text, expected):
        rows = [line for line in text.splitlines() if line.startswith("w")]
        self.assertEqual(len(rows), 1, text)
        self.assertEqual(rows[0].split()[:4],
                         ["w0", SEGMENT, str(expected["offset"]), str(expected["length"])])
        self.assertTrue(rows[0].endswith(" " + expected["path"]), rows[0])
        when = time.strftime("%Y-%m-%d %H:%M:%S",
                             time.gmtime(os.lstat(expected["path"]).st_mtime))
        self.assertIn(f" {when} ", rows[0])
        self.assertIn(f"1 quarantined range(s), {expected['length']} octets", text)

    def test_lists_exactly_the_damaged_range_online_and_offline(self):
        self.start_relay(self.downstream.port, workers=1, retry_min=60, retry_max=120)
        # Nothing quarantined yet: an empty listing, and the summary says so.
        empty = json.loads(self.queue("quarantine", "--json"))
        self.assertEqual((empty["ranges"], empty["count"], empty["bytes"]), ([], 0, 0))
        self.assertIn("quarantined: 0 range(s), 0 octets", self.queue("summary"))

        seg, begin, end = self.damage_one_message()
        with open(seg, "rb") as f:
            damaged = f.read()[begin:end]
        self.relay.start()
        logged = self.relay.wait_log(r"event=spool_damaged .*", 5)
        self.assertIsNotNone(logged, self.relay.log_text())
        fields = dict(re.findall(r" (segment|offset|length|quarantine)=(\S+)", logged.group(0)))
        self.assertEqual(fields["segment"], seg)
        self.assertEqual((int(fields["offset"]), int(fields["length"])), (begin, end - begin))
        path = fields["quarantine"]
        self.assertEqual(path, os.path.join(self.relay.spool_dir, "w0", "quarantine",
                                            f"{SEGMENT}.{begin}+{end - begin}"))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), damaged, "the quarantine holds the damaged octets")
        # What the directory must not make the listing trust: a name the spool never
        # makes, a terminal escape, a symlink and a directory under quarantine names.
        qdir = os.path.dirname(path)
        for junk in ("notes.txt", f"{SEGMENT}.007+1", f"{SEGMENT}.1+1\x1b[2J"):
            with open(os.path.join(qdir, junk), "w") as f:
                f.write("x")
        os.symlink(path, os.path.join(qdir, f"{SEGMENT}.1+2"))
        os.mkdir(os.path.join(qdir, f"{SEGMENT}.3+4"))

        expected = {"worker": 0, "segment": SEGMENT, "offset": begin, "length": end - begin,
                    "path": path}
        online = json.loads(self.queue("quarantine", "--json"))
        self.check_json(online, expected)
        self.assertEqual(len(online["ignored"]), 5, online["ignored"])
        self.assertIn(os.path.join(qdir, f"{SEGMENT}.1+1\\x1b[2J"), online["ignored"])
        text = self.queue("quarantine")
        self.check_text(text, expected)
        self.assertNotIn("\x1b", text)
        self.assertIn(f"quarantined: 1 range(s), {end - begin} octets", self.queue("summary"))

        # The route is the queue API's: without the bearer token, 401.
        req = urllib.request.Request(f"http://{HOST}:{self.relay.admin_port}/queue/quarantine")
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(refused.exception.code, 401)

        self.assertEqual(self.relay.stop(), 0)
        offline = json.loads(self.queue("quarantine", "--json", offline=True))
        self.assertEqual(offline, online)
        self.check_text(self.queue("quarantine", offline=True), expected)
        self.assertIn(f"quarantined: 1 range(s), {end - begin} octets",
                      self.queue("summary", offline=True))
        self.relay.start()   # for the cleanup's own stop


if __name__ == "__main__":
    unittest.main()
