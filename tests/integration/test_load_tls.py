"""postern-load source --starttls --tls-resume against the relay (issue 14): the option
bench/tls_bench.py's resumed row depends on.

With one connection at a time and one message per connection, the first connection runs a
full handshake and each later one offers the session of the one before, so 20 messages
make 19 resumed handshakes; the relay's `tls` log lines agree. Without --tls-resume no
handshake resumes, and --tls-resume alone (without --starttls) is refused. The relay runs
2 workers (reuseport), so resumption also crosses workers, as the benchmark needs.
"""

import re
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import HOST, RelayTestCase
from test_crash_safety import load_bin
from test_tls_sessions import openssl_req

MESSAGES = 20
SOURCE_TIMEOUT = 60  # seconds; the run takes well under one


class LoadTlsResumeTest(RelayTestCase):
    auto_relay = False

    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix="postern-load-tls-")
        cls.ecdsa = openssl_req(cls.certdir, "ecdsa",
                                ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def setUp(self):
        RelayTestCase.setUp(self)
        tls = f'[tls]\ncertificate = "{self.ecdsa[0]}"\nprivate_key = "{self.ecdsa[1]}"\n'
        self.start_relay(self.downstream.port, workers=2, extra=tls)

    def source(self, *options):
        """Runs postern-load source with options; (exit status, output, result fields)."""
        r = subprocess.run(
            [load_bin(), "source", "--server", f"{HOST}:{self.relay.port}",
             "--messages", str(MESSAGES), "--messages-per-connection", "1",
             "--concurrency", "1", "--size", "1024", "--timeout", str(SOURCE_TIMEOUT),
             "--quiet", *options],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=SOURCE_TIMEOUT + 30)
        out = r.stdout + r.stderr
        fields = {}
        for line in r.stdout.splitlines():
            if line.startswith("result "):
                fields = dict(t.split("=", 1) for t in line.split()[1:] if "=" in t)
        self.assertTrue(fields, f"no result line:\n{out}")
        return r.returncode, out, fields

    def tls_lines(self, want):
        """The relay's `tls` log lines once there are `want` of them (bounded wait): the
        log is written by the workers asynchronously to the source's run."""
        deadline = time.monotonic() + 10
        while True:
            lines = [l for l in self.relay.log_text().splitlines() if "event=tls " in l]
            if len(lines) >= want or time.monotonic() >= deadline:
                return lines
            time.sleep(0.1)

    def test_every_connection_after_the_first_resumes(self):
        rc, out, res = self.source("--starttls", "--tls-resume")
        self.assertEqual(rc, 0, out)
        self.assertEqual(res["accepted"], str(MESSAGES), out)
        self.assertEqual(res["errors"], "0", out)
        self.assertEqual(res["tls_resumed"], str(MESSAGES - 1), out)
        lines = self.tls_lines(MESSAGES)
        self.assertEqual(len(lines), MESSAGES, "\n".join(lines))
        self.assertEqual(sum(1 for l in lines if re.search(r"\bresumed\b", l)), MESSAGES - 1,
                         "\n".join(lines))
        self.assertEqual(self.downstream.wait_for(MESSAGES, 30), MESSAGES)

    def test_no_resumption_without_the_option(self):
        rc, out, res = self.source("--starttls")
        self.assertEqual(rc, 0, out)
        self.assertEqual(res["accepted"], str(MESSAGES), out)
        self.assertEqual(res["tls_resumed"], "0", out)
        lines = self.tls_lines(MESSAGES)
        self.assertFalse([l for l in lines if re.search(r"\bresumed\b", l)], "\n".join(lines))

    def test_plain_runs_say_nothing_of_tls(self):
        rc, out, res = self.source()
        self.assertEqual(rc, 0, out)
        self.assertEqual(res["accepted"], str(MESSAGES), out)
        self.assertNotIn("tls_resumed", res, out)

    def test_resume_needs_starttls(self):
        r = subprocess.run([load_bin(), "source", "--server", f"{HOST}:{self.relay.port}",
                            "--tls-resume"], capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--starttls", r.stderr + r.stdout)


class HandshakeStormTest(LoadTlsResumeTest):
    """A storm of handshakes through a gate of one step per loop turn
    ([limits] tls_handshakes_per_turn = 1, relay/inbound/handshake_gate.h) on one worker:
    every TLS client still gets through, and plain sessions running at the same time too.
    (How much the gate shortens the plain sessions' wait is measured, not tested:
    docs/performance in the README.)"""

    def setUp(self):
        RelayTestCase.setUp(self)
        tls = (f'[tls]\ncertificate = "{self.ecdsa[0]}"\nprivate_key = "{self.ecdsa[1]}"\n'
               "\n[limits]\ntls_handshakes_per_turn = 1\n")
        self.start_relay(self.downstream.port, workers=1, extra=tls)

    def test_every_client_gets_through_the_gate(self):
        storm = subprocess.Popen(
            [load_bin(), "source", "--server", f"{HOST}:{self.relay.port}", "--messages", "200",
             "--messages-per-connection", "1", "--concurrency", "50", "--starttls",
             "--timeout", str(SOURCE_TIMEOUT), "--quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(storm.kill)
        rc, out, res = self.source()  # plain, meanwhile
        self.assertEqual(rc, 0, out)
        self.assertEqual(res["accepted"], str(MESSAGES), out)
        storm_out, _ = storm.communicate(timeout=SOURCE_TIMEOUT + 30)
        self.assertEqual(storm.returncode, 0, storm_out)
        self.assertRegex(storm_out, r"result .*accepted=200 .*errors=0", storm_out)
        self.assertEqual(self.downstream.wait_for(200 + MESSAGES, 60), 200 + MESSAGES)

    # The inherited cases are LoadTlsResumeTest's; they need not run again here.
    test_every_connection_after_the_first_resumes = None
    test_no_resumption_without_the_option = None
    test_plain_runs_say_nothing_of_tls = None
    test_resume_needs_starttls = None


if __name__ == "__main__":
    unittest.main()
