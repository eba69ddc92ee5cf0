"""Postern's milter client against a second real milter: Debian's rspamd (3.4), whose
proxy worker speaks the milter protocol (milter = yes; self_scan = yes scans in-process),
run in the foreground on loopback with our own config in a temp dir (no redis, no
network lookups, nothing in /var/lib/rspamd).

What this proves:
* Header additions (SMFIR_ADDHEADER): a plain message is delivered carrying the
  X-Spamd-Result / X-Spam-Status / X-Rspamd-Server / X-Rspamd-Queue-Id headers rspamd's
  milter_headers module adds, once each, body unchanged. They show what the relay told
  the milter: the envelope (FROM_EQ_ENVFROM, TO_MATCH_ENVRCPT_ALL) and the {i} macro
  (X-Rspamd-Queue-Id is Postern's queue id).
* Rejection (SMFIR_REPLYCODE): GTUBE gets rspamd's own "554 5.7.1 Gtube pattern" at the
  end of DATA, nothing is delivered, and the next message of the same session (after
  RSET) is scanned and delivered normally.
* Header change (SMFIR_CHGHEADER): rspamd's rewrite-subject test pattern turns the one
  Subject header into "*** SPAM *** ..." (not a second Subject).

Start-up takes 8-10 s on 2 cores (compiling the TLD list with hyperscan into an empty
cache), so one rspamd serves the whole class.
"""

import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import unittest

from harness import HOST, RelayTestCase, free_port, wait_port

RSPAMD = "/usr/bin/rspamd"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"  # reject
GTUBE_SUBJECT = b"Z" + GTUBE[1:]   # rspamd's test pattern for "rewrite subject"

# Our top level config, not /etc/rspamd/rspamd.conf: that one also starts workers on the
# default ports 11333/11334 (a system rspamd's), logs to a file and keeps its databases
# in /var/lib/rspamd. Rules and modules are still Debian's ($CONFDIR = /etc/rspamd);
# $LOCAL_CONFDIR is our dir, so our local.d (not the system's) adjusts them.
RSPAMD_CONF = """\
.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging { type = "console"; level = "info"; }
worker "rspamd_proxy" {
    bind_socket = "%(host)s:%(port)d";
    milter = yes;
    timeout = 30s;
    count = 1;
    upstream "local" { default = yes; self_scan = yes; }
}
"""
LOCAL_D = {
    # The ZJS... GTUBE variant (rewrite subject) is only honoured with this on.
    "options.inc": "enable_test_patterns = true;\n",
    # Headers are only added when asked for; skip_local = false because the relay's
    # client (what the milter is told at connect) is 127.0.0.1.
    "milter_headers.conf": 'use = ["x-spamd-result", "x-spam-status", "x-rspamd-server",'
                           ' "x-rspamd-queue-id"];\nskip_local = false;\n'
                           "skip_authenticated = false;\n",
}
# Modules that would do DNS or HTTP per message or at start (RBLs, SPF/DKIM/DMARC, HELO
# checks, fuzzy servers, remote maps) or need redis: off, so a scan is local and quick.
DISABLED = ("rbl surbl emails spf dkim dmarc arc asn hfilter fuzzy_check phishing multimap "
            "mid whitelist rspamd_update dkim_signing neural ratelimit greylist reputation "
            "url_redirector history_redis").split()


def message(subject, body=b"Hello, nothing to see here.\r\n"):
    return (b"From: Writer <writer@example.org>\r\nTo: someone@example.net\r\n"
            b"Subject: " + subject + b"\r\nDate: Thu, 04 Dec 2025 12:00:00 +0000\r\n"
            b"Message-ID: <" + subject.replace(b" ", b"-") + b"@example.org>\r\n\r\n" + body)


def header(data, name):
    """Every (unfolded) value of header `name` in the header section of `data`."""
    head = data.split(b"\r\n\r\n", 1)[0]
    rx = re.compile(rb"^" + name + rb":[ \t]*(.*?)(?=\r\n(?![ \t])|\Z)", re.M | re.S | re.I)
    return [re.sub(rb"\r\n[ \t]+", b" ", m) for m in rx.findall(head)]


class RspamdMilterTest(RelayTestCase):
    auto_relay = False

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="postern-rspamd-")
        cls.port = free_port()
        local_d = os.path.join(cls.tmp, "local", "local.d")
        os.makedirs(local_d)
        os.makedirs(os.path.join(cls.tmp, "db"))
        for name, text in dict(LOCAL_D, **{m + ".conf": "enabled = false;\n"
                                           for m in DISABLED}).items():
            with open(os.path.join(local_d, name), "w") as f:
                f.write(text)
        conf = os.path.join(cls.tmp, "rspamd.conf")
        with open(conf, "w") as f:
            f.write(RSPAMD_CONF % {"host": HOST, "port": cls.port})
        cls.log_path = os.path.join(cls.tmp, "rspamd.out")
        argv = [RSPAMD, "-f", "-c", conf, "--var", f"DBDIR={cls.tmp}/db", "--var",
                f"RUNDIR={cls.tmp}", "--var", f"LOCAL_CONFDIR={cls.tmp}/local"]
        if os.geteuid() == 0:
            # rspamd won't run workers as root without -u/-g or --insecure (-i); a throwaway
            # scanner on loopback needs no user of its own (nor a chown of the temp dir).
            argv.append("-i")
        with open(cls.log_path, "wb") as log:
            # Its own session: the workers it forks are stopped with it (killpg).
            cls.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=cls.tmp,
                                        start_new_session=True)
        started = time.monotonic()
        if not wait_port(HOST, cls.port, 60):
            cls._stop()   # its temp dir stays, for the log
            with open(cls.log_path, "rb") as f:
                raise AssertionError(f"rspamd did not listen on {cls.port} within 60 s "
                                     f"(log in {cls.tmp}):\n{f.read()[-4000:]!r}")
        cls.start_seconds = time.monotonic() - started

    @classmethod
    def tearDownClass(cls):
        cls._stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def _stop(cls):
        if cls.proc.poll() is None:
            os.killpg(cls.proc.pid, signal.SIGTERM)
            try:
                cls.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(cls.proc.pid, signal.SIGKILL)
                cls.proc.wait()

    def setUp(self):
        super().setUp()
        self.start_relay(self.downstream.port, server={"log_level": "info"}, extra=(
            '[[milter]]\nname = "rspamd"\n'
            f'address = "inet:{HOST}:{self.port}"\n'
            'timeout = 10\ndefault_action = "tempfail"\n'))

    def relay_one(self, data):
        """Sends data from 127.0.0.1 (a relay network) and returns the downstream's copy."""
        with self.relay.client() as s:
            self.assertEqual(s.sendmail("writer@example.org", ["someone@example.net"], data),
                             {})
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        self.assertEqual(self.downstream.messages[0].rcpt_tos, ["someone@example.net"])
        return self.downstream.messages[0]

    def test_plain_message_gets_rspamd_headers(self):
        data = self.relay_one(message(b"plain")).data
        status = header(data, b"X-Spam-Status")
        self.assertEqual((len(status), len(header(data, b"X-Rspamd-Server"))), (1, 1), data)
        self.assertRegex(status[0], rb"^No, score=-?\d+\.\d+$")
        # The symbols show the envelope reached rspamd and matched the header From/To.
        result = header(data, b"X-Spamd-Result")
        self.assertEqual(len(result), 1, data)
        self.assertRegex(result[0], rb"^default: False \[")
        self.assertIn(b"FROM_EQ_ENVFROM", result[0])
        self.assertIn(b"TO_MATCH_ENVRCPT_ALL", result[0])
        # rspamd's queue id is the {i} macro: the id Postern's Received header names.
        qid = header(data, b"X-Rspamd-Queue-Id")
        self.assertEqual(len(qid), 1, data)
        self.assertRegex(header(data, b"Received")[0], rb" id " + re.escape(qid[0]) + rb"\b")
        self.assertEqual(header(data, b"Subject"), [b"plain"])
        self.assertTrue(data.endswith(b"\r\n\r\nHello, nothing to see here.\r\n"), data)

    def test_gtube_is_rejected_at_end_of_data(self):
        with self.relay.client() as s:
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("writer@example.org", ["someone@example.net"],
                           message(b"gtube", GTUBE + b"\r\n"))
            code, text = cm.exception.smtp_code, cm.exception.smtp_error
            # rspamd's own reply (SMFIR_REPLYCODE), not the relay's default 550 text.
            self.assertEqual((code, text), (554, b"5.7.1 Gtube pattern"))
            self.assertEqual(self.downstream.wait_for(1, 2), 0)
            # Same session (sendmail sent RSET): the next message is scanned afresh.
            self.assertEqual(s.sendmail("writer@example.org", ["someone@example.net"],
                                        message(b"after gtube")), {})
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        got = self.downstream.messages[0].data
        self.assertNotIn(b"GTUBE", got)
        self.assertEqual(header(got, b"Subject"), [b"after gtube"])
        self.assertEqual(len(header(got, b"X-Spam-Status")), 1, got)
        self.assertRegex(self.relay.log_text(), r"milter.*rspamd.*action=reject")

    def test_rewrite_subject_changes_the_one_subject_header(self):
        got = self.relay_one(message(b"rewrite me", GTUBE_SUBJECT + b"\r\n")).data
        self.assertEqual(header(got, b"Subject"), [b"*** SPAM *** rewrite me"], got)
        self.assertTrue(got.endswith(GTUBE_SUBJECT + b"\r\n"), got)


if __name__ == "__main__":
    unittest.main()
