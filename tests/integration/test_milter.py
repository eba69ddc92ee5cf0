"""Milters ([[milter]], the Sendmail milter protocol as Postfix speaks it) against a
scripted milter (milter_server.py) that answers each step as the test says.

Every reply reaches the client at the step it names: reject, tempfail and a milter's own
reply code at connect, MAIL, RCPT, DATA and the end of the message; discard answers 250
and delivers nothing. Every modification is in the delivered message: headers added,
inserted, changed and deleted, the sender changed, recipients added and deleted, the body
replaced, and a quarantine holds the message until `postern queue release`. A milter
cannot make the relay open (its added recipients pass the client's relay rules) nor
smuggle a header through a value. A slow milter, one that dies mid-message and one that
talks garbage get their default_action, and never cost or duplicate a message.
"""

import base64
import json
import os
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

import dkim
from cryptography.hazmat.primitives import serialization

from harness import HOST, RelayTestCase, postern_bin, smtp_client
from milter_server import MilterServer, header_change, reply_code, strings

FROM = "sender@origin.test"
MSG = (b"From: sender@origin.test\r\nTo: rcpt@dest.test\r\nSubject: original\r\n"
       b"X-Drop: me\r\n\r\nbody line\r\n")


class MilterTest(RelayTestCase):
    auto_relay = False

    def start(self, script=None, *, default_action="tempfail", timeout=5, protocol=0,
              config="", unix_path=None, **relay_kwargs):
        self.milter = MilterServer(script, protocol=protocol, unix_path=unix_path)
        self.addCleanup(self.milter.stop)
        extra = ("[[milter]]\n"
                 'name = "scripted"\n'
                 f'address = "{self.milter.address}"\n'
                 f"timeout = {timeout}\n"
                 f'default_action = "{default_action}"\n' + config)
        self.start_relay(self.downstream.port, extra=extra, **relay_kwargs)

    def send(self, rcpts=("rcpt@dest.test",), msg=MSG):
        with smtp_client(HOST, self.relay.port) as s:
            s.ehlo("client.test")
            return s.sendmail(FROM, list(rcpts), msg)

    def expect_refused(self, step_code, rcpts=("rcpt@dest.test",)):
        """Sends MSG and returns the (code, text) it was refused with."""
        with self.assertRaises(smtplib.SMTPException) as cm:
            self.send(rcpts)
        e = cm.exception
        if isinstance(e, smtplib.SMTPRecipientsRefused):
            return list(e.recipients.values())[0]
        return e.smtp_code, e.smtp_error

    def relay_bin(self):
        return postern_bin()

    def delivered(self, n):
        self.downstream.wait_for(n, 10)
        self.assertEqual(len(self.downstream.messages), n)
        return self.downstream.messages

    def milter_actions(self):
        """postern_milter_actions_total as {action: count} for the scripted milter."""
        with urllib.request.urlopen(f"http://{HOST}:{self.relay.admin_port}/metrics",
                                    timeout=10) as r:
            lines = r.read().decode().splitlines()
        out = {}
        for line in lines:
            if line.startswith("postern_milter_actions_total{") and 'milter="scripted"' in line:
                action = line.split('action="')[1].split('"')[0]
                out[action] = out.get(action, 0) + float(line.rsplit(" ", 1)[1])
        return out

    def assert_nothing_delivered(self, wait=1.0):
        time.sleep(wait)
        self.assertEqual(self.downstream.messages, [])

    # -- the steps, and what the milter sees ---------------------------------------------

    def test_every_step_reaches_the_milter_and_mail_flows(self):
        self.start()
        self.assertEqual(self.send(), {})
        got = self.delivered(1)[0]
        c = self.milter.wait_for("E")
        self.assertEqual(c.letters()[:5], "CHMRT")
        self.assertIn("LLLLLNBE", c.letters())
        self.assertIn(("Subject", "original"), c.headers())
        self.assertEqual(c.body(), b"body line\r\n")
        self.assertEqual(c.macros["C"]["{client_addr}"], HOST)
        self.assertEqual(c.macros["C"]["j"], "relay.test")
        self.assertEqual(c.macros["M"]["{mail_addr}"], FROM)
        self.assertRegex(c.macros["E"]["i"], r"^[0-9A-F]+$")
        self.assertIn(b"Subject: original", got.data)

    def test_tls_and_login_reach_the_milter_as_macros(self):
        tmp = tempfile.mkdtemp(prefix="postern-milter-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                        "/CN=relay.test", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        users = os.path.join(tmp, "users")
        hash_ = subprocess.run([self.relay_bin(), "passwd"], input="pw\n", text=True,
                               capture_output=True, check=True).stdout.strip()
        with open(users, "w") as f:
            f.write(f"writer:{hash_}\n")
        self.start(config=f'\n[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n'
                          f'\n[auth]\nusers_file = "{users}"\n')
        with smtplib.SMTP(HOST, self.relay.port, timeout=15) as s:
            s.ehlo("client.test")
            s.starttls(context=ssl._create_unverified_context())
            s.ehlo("client.test")
            s.login("writer", "pw")
            self.assertEqual(s.sendmail(FROM, ["rcpt@dest.test"], MSG), {})
        self.delivered(1)
        c = self.milter.wait_for("E")
        self.assertRegex(c.macros["H"]["{tls_version}"], r"^TLSv1\.[23]$")
        self.assertRegex(c.macros["H"]["{cipher}"], r"^[A-Z0-9_-]+$")
        self.assertEqual(c.macros["M"]["{auth_authen}"], "writer")
        self.assertEqual(c.macros["M"]["{auth_type}"], "PLAIN")

    def test_a_unix_socket_milter(self):
        tmp = tempfile.mkdtemp(prefix="postern-milter-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        self.start({"E": [("h", strings("X-Via", "unix")), ("c", b"")]},
                   unix_path=os.path.join(tmp, "milter.sock"))
        self.assertEqual(self.send(), {})
        self.assertIn(b"X-Via: unix\r\n", self.delivered(1)[0].data)

    def test_skipped_steps_are_not_sent(self):
        # SMFIP_NOHELO | NOMAIL | NOHDRS | NR_RCPT: no HELO, MAIL or header packets; RCPT
        # gets no answer and none is awaited.
        self.start(protocol=0x02 | 0x04 | 0x20 | 0x8000)
        self.assertEqual(self.send(), {})
        self.downstream.wait_for(1, 10)
        c = self.milter.wait_for("E")
        self.assertEqual(c.letters()[:3], "CRT")
        self.assertNotIn("L", c.letters())

    # -- replies at each step -------------------------------------------------------------

    def test_reject_at_connect_is_the_greeting(self):
        self.start({"C": [("r", b"")]})
        with self.assertRaises(smtplib.SMTPConnectError) as cm:
            smtplib.SMTP(HOST, self.relay.port, timeout=10)
        self.assertEqual(cm.exception.smtp_code, 554)

    def test_reject_at_mail(self):
        self.start({"M": [("r", b"")]})
        code, text = self.expect_refused("M")
        self.assertEqual((code, text), (550, b"5.7.1 Command rejected"))
        self.assert_nothing_delivered()
        self.assertEqual(self.milter_actions(), {"reject": 1})

    def test_tempfail_at_rcpt(self):
        self.start({"R": [("t", b"")]})
        code, text = self.expect_refused("R")
        self.assertEqual((code, text), (451, b"4.7.1 Service unavailable - try again later"))

    def test_own_reply_code_at_end_of_message_in_several_lines(self):
        self.start({"E": [("y", reply_code("554-5.7.0 Spam detected\r\n554 5.7.0 go away"))]})
        code, text = self.expect_refused("E")
        self.assertEqual(code, 554)
        self.assertEqual(text, b"5.7.0 Spam detected\n5.7.0 go away")
        self.assert_nothing_delivered()

    def test_reject_at_data(self):
        self.start({"T": [("y", reply_code("550 5.7.2 no data today"))]})
        code, text = self.expect_refused("T")
        self.assertEqual((code, text), (550, b"5.7.2 no data today"))

    def test_a_reply_code_that_forges_smtp_lines_is_a_failure(self):
        # A 2xx code, or a second line with a code of its own: the milter failed.
        self.start({"E": [("y", reply_code("550 5.7.1 no\r\n250 2.0.0 forged"))]})
        code, _ = self.expect_refused("E")
        self.assertEqual(code, 451)
        self.relay.wait_log(r"event=milter_failed .*bad reply code", 5)

    def test_discard_answers_250_and_delivers_nothing(self):
        self.start({"E": [("d", b"")]})
        self.assertEqual(self.send(), {})
        self.relay.wait_log(r"event=milter_discarded", 5)
        self.assert_nothing_delivered()

    def test_discard_at_rcpt_drops_the_whole_message_without_asking_further(self):
        self.start({"R": [("d", b"")]})
        self.assertEqual(self.send(rcpts=("a@dest.test", "b@dest.test")), {})
        self.relay.wait_log(r"event=milter_discarded", 5)
        self.assert_nothing_delivered()
        letters = self.milter.wait_for("R").letters()
        self.assertEqual(letters.count("R"), 1, letters)  # the second RCPT was not asked
        self.assertNotIn("E", letters)

    def test_accept_at_mail_skips_the_rest_of_the_message(self):
        self.start({"M": [("a", b"")], "E": [("r", b"")]})
        self.assertEqual(self.send(), {})
        self.downstream.wait_for(1, 10)
        self.assertNotIn("E", self.milter.wait_for("M").letters())

    # -- modifications --------------------------------------------------------------------

    def test_every_modification_is_in_the_delivered_message(self):
        self.start({"E": [
            ("h", strings("X-Added", "yes")),
            ("i", header_change(0, "X-Inserted", "top")),
            ("m", header_change(1, "Subject", "changed")),
            ("m", header_change(1, "X-Drop", "")),
            ("e", strings("<new-sender@origin.test>")),
            ("+", strings("<added@dest.test>")),
            ("-", strings("<rcpt@dest.test>")),
            ("b", b"new body\nsecond line"),
            ("c", b"")]})
        self.assertEqual(self.send(), {})
        got = self.delivered(1)[0]
        self.assertEqual(got.mail_from, "new-sender@origin.test")
        self.assertEqual(got.rcpt_tos, ["added@dest.test"])
        head, _, body = got.data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"X-Inserted: top\r\n"), head)
        self.assertIn(b"\r\nX-Added: yes", head)
        self.assertIn(b"Subject: changed", head)
        self.assertNotIn(b"X-Drop", head)
        self.assertNotIn(b"original", head)
        self.assertEqual(body, b"new body\r\nsecond line\r\n")

    def test_a_header_value_cannot_start_a_header_of_its_own(self):
        self.start({"E": [("h", strings("X-Note", "a\nBcc: victim@elsewhere.test")),
                          ("c", b"")]})
        self.assertEqual(self.send(), {})
        got = self.delivered(1)[0]
        self.assertIn(b"X-Note: a\r\n\tBcc: victim@elsewhere.test\r\n", got.data)
        self.assertNotIn(b"\r\nBcc:", got.data)

    def test_added_recipients_pass_the_relay_rules(self):
        # The client may send only to accepted.test: a milter adding an outside address
        # does not make the relay open.
        self.start({"E": [("+", strings("<victim@outside.test>")),
                          ("+", strings("<also@accepted.test>")), ("c", b"")]},
                   relay_networks=("10.9.9.9/32",))
        self.assertEqual(self.send(rcpts=("first@accepted.test",)), {})
        got = self.delivered(1)
        rcpts = sorted(r for m in got for r in m.rcpt_tos)
        self.assertEqual(rcpts, ["also@accepted.test", "first@accepted.test"])
        self.relay.wait_log(r"event=milter_edit_refused .*victim@outside.test", 5)

    def test_quarantine_holds_the_message_until_released(self):
        self.start({"E": [("q", strings("suspicious")), ("c", b"")]},
                   admin={"queue_networks": ["127.0.0.1/32"]})
        self.assertEqual(self.send(), {})
        self.relay.wait_log(r"event=quarantined .*reason=suspicious", 5)
        self.assert_nothing_delivered()
        self.assertEqual(self.milter_actions(), {"quarantine": 1})
        queue = [self.relay.bin, "queue", "--config", self.relay.config_path]
        listed = json.loads(subprocess.run(queue[:2] + ["list", "--json"] + queue[2:],
                                           capture_output=True, check=True).stdout)
        self.assertEqual([e["state"] for e in listed], ["held"])
        r = subprocess.run(queue[:2] + ["release", listed[0]["id"]] + queue[2:],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.downstream.wait_for(1, 10)

    def test_bdat_and_a_spilled_message_are_filtered_and_edited(self):
        # Over message_memory the body is in a spill file: read back for the milter and
        # written again with the edit. BDAT has no DATA command: its step comes at the end.
        self.start({"E": [("h", strings("X-Checked", "yes")), ("c", b"")]},
                   config="\n[limits]\nmessage_memory = 65536\n")
        body = b"".join(b"line %06d of a long message\r\n" % i for i in range(12000))
        msg = b"Subject: big\r\n\r\n" + body
        sock = socket.create_connection((HOST, self.relay.port), timeout=15)
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO client.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        sock.sendall(b"MAIL FROM:<%s>\r\nRCPT TO:<rcpt@dest.test>\r\n" % FROM.encode())
        self.assertTrue(f.readline().startswith(b"250"))
        self.assertTrue(f.readline().startswith(b"250"))
        sock.sendall(b"BDAT %d LAST\r\n" % len(msg) + msg)
        self.assertTrue(f.readline().startswith(b"250 2.0.0 Ok: queued"))
        sock.close()
        got = self.delivered(1)[0].data
        self.assertIn(b"\r\nX-Checked: yes\r\n\r\n", got)
        self.assertTrue(got.endswith(body))
        c = self.milter.wait_for("E")
        self.assertIn("T", c.letters())
        self.assertEqual(c.body(), body)

    def test_relay_signs_the_message_as_edited(self):
        # Postern's own DKIM signature covers the milter's edits (it hashes again).
        tmp = tempfile.mkdtemp(prefix="postern-milter-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        key = os.path.join(tmp, "ed.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", key],
                       check=True, capture_output=True)
        with open(key, "rb") as f:
            raw = serialization.load_pem_private_key(f.read(), None).public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
        self.start({"E": [("m", header_change(1, "Subject", "edited")),
                          ("b", b"a new body\r\n"), ("c", b"")]},
                   config=f'\n[[dkim]]\ndomain = "origin.test"\nselector = "ed"\n'
                          f'algorithm = "ed25519-sha256"\nprivate_key = "{key}"\n')
        self.assertEqual(self.send(), {})
        got = self.delivered(1)[0].data
        self.assertIn(b"Subject: edited", got)
        dns = {b"ed._domainkey.origin.test.": record}
        self.assertTrue(dkim.verify(got, dnsfunc=lambda name, timeout=5: dns.get(name)), got)

    # -- failing milters ------------------------------------------------------------------

    def test_slow_milter_gets_its_default_action(self):
        self.start({"E": "sleep:3"}, timeout=1)
        code, _ = self.expect_refused("E")
        self.assertEqual(code, 451)
        self.relay.wait_log(r"event=milter_failed .*timeout.*action=tempfail", 5)
        self.assert_nothing_delivered()
        self.assertEqual(self.milter_actions(), {"failed": 1})

    def test_slow_milter_with_accept_lets_mail_through(self):
        self.start({"M": "sleep:3"}, timeout=1, default_action="accept")
        self.assertEqual(self.send(), {})
        self.downstream.wait_for(1, 10)
        self.relay.wait_log(r"event=milter_failed .*action=accept", 5)

    def test_progress_keeps_a_slow_milter_but_not_for_ever(self):
        # Progress packets restart the timeout: 2 s of work with a 1 s timeout is fine...
        self.start({"E": "progress:4:0.5"}, timeout=1)
        self.assertEqual(self.send(), {})
        self.delivered(1)
        # ...but one step may last at most 10 timeouts.
        self.milter.script["E"] = "progress:100:0.1"
        self.relay.stop()
        self.relay.config_text = self.relay.config_text.replace("timeout = 1\n", "timeout = 0.2\n")
        with open(self.relay.config_path, "w") as f:
            f.write(self.relay.config_text)
        self.relay.start()
        code, _ = self.expect_refused("E")
        self.assertEqual(code, 451)
        self.relay.wait_log(r"event=milter_failed .*progress past 10 timeouts", 5)

    def test_milter_dying_mid_message_loses_and_duplicates_nothing(self):
        self.start({"B": "close"})
        code, _ = self.expect_refused("B")
        self.assertEqual(code, 451)
        self.assert_nothing_delivered()
        # The milter is back (a new session connects anew): the retry goes through, once.
        self.milter.script.pop("B")
        self.assertEqual(self.send(), {})
        self.downstream.wait_for(1, 10)
        time.sleep(1)
        self.assertEqual(len(self.downstream.messages), 1)

    def test_too_many_modifications_is_a_failure(self):
        # 10,001 header additions: past MilterClient's bound, the milter has failed.
        self.start({"E": [("h", strings("X-Flood", "x"))] * 10001 + [("c", b"")]})
        code, _ = self.expect_refused("E")
        self.assertEqual(code, 451)
        self.relay.wait_log(r"event=milter_failed .*modifications over the limit", 5)
        self.assert_nothing_delivered()

    def test_garbage_from_the_milter_is_a_failure(self):
        self.start({"R": "garbage"})
        code, _ = self.expect_refused("R")
        self.assertEqual(code, 451)
        self.relay.wait_log(r"event=milter_failed", 5)

    def test_unreachable_milter_with_tempfail_refuses_at_connect(self):
        self.start()
        self.milter.stop()
        with self.assertRaises(smtplib.SMTPConnectError) as cm:
            smtplib.SMTP(HOST, self.relay.port, timeout=10)
        self.assertEqual(cm.exception.smtp_code, 421)


if __name__ == "__main__":
    unittest.main()
