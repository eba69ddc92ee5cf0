"""SMTP AUTH (RFC 4954) and implicit TLS (RFC 8314) against the real binary, with real
clients: Python smtplib (login, SMTP_SSL) and swaks (--auth PLAIN and LOGIN, over STARTTLS
and over the implicit-TLS port with --tlsc).

The relay has three listeners: the harness's (STARTTLS, AUTH only after it), an
implicit-TLS one, and one with auth_plaintext (AUTH without TLS, for loopback setups).
Its relay_networks is 127.0.0.1 only: the clients connect from 127.0.0.9, outside, so
relaying is refused to them until they log in. The users file holds hashes made three
ways: `postern passwd` (yescrypt), `openssl passwd -6` (sha512-crypt) and Python's crypt
module (bcrypt); bob may send only as example.com."""

import base64
import os
import re
import signal
import smtplib
import ssl
import subprocess
import time
import unittest
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

from harness import HOST, RelayTestCase, free_ports

OUTSIDE = "127.0.0.9"
BODY = b"Subject: auth\r\nFrom: alice@example.com\r\n\r\nsubmitted\r\n"


def b64(text):
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


class AuthTest(RelayTestCase):
    auto_relay = False

    def setUp(self):
        super().setUp()
        tmp = self.tmp = os.path.join("/tmp", f"postern-auth-{os.getpid()}-{id(self)}")
        os.makedirs(tmp, exist_ok=True)
        self.cert, self.key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        "/CN=relay.test", "-keyout", self.key, "-out", self.cert],
                       check=True, capture_output=True)
        from harness import postern_bin
        yescrypt = subprocess.run([postern_bin(), "passwd"], input="alice-pw\n", text=True,
                                  capture_output=True, check=True).stdout.strip()
        self.assertTrue(yescrypt.startswith("$y$"), yescrypt)
        sha512 = subprocess.run(["openssl", "passwd", "-6", "bob-pw"], text=True,
                                capture_output=True, check=True).stdout.strip()
        bcrypt = crypt.crypt("carol-pw", crypt.mksalt(crypt.METHOD_BLOWFISH))
        self.assertTrue(bcrypt.startswith("$2b$"), bcrypt)
        self.users = os.path.join(tmp, "users")
        with open(self.users, "w") as f:
            f.write(f"# test users\nalice:{yescrypt}\nbob:{sha512}:example.com\n"
                    f"carol:{bcrypt}\n")
        self.implicit_port, self.plain_port = free_ports(2)
        self.start_relay(self.downstream.port, extra=(
            f'[tls]\ncertificate = "{self.cert}"\nprivate_key = "{self.key}"\n\n'
            f'[auth]\nusers_file = "{self.users}"\nmax_failures = 3\nfailure_window = 60\n\n'
            f'[[listener]]\naddress = "{HOST}:{self.implicit_port}"\ntls = "implicit"\n\n'
            f'[[listener]]\naddress = "{HOST}:{self.plain_port}"\nauth_plaintext = true\n'))
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])

    def client(self, port=None, tls=True):
        s = smtplib.SMTP(HOST, port or self.relay.port, timeout=15,
                         source_address=(OUTSIDE, 0))
        s.ehlo("client.test")
        if tls:
            s.starttls(context=ssl._create_unverified_context())
            s.ehlo("client.test")
        return s

    def swaks(self, *args):
        return subprocess.run(["swaks", "--silent", "1", "--server", HOST, "--local-interface",
                               OUTSIDE, "--from", "alice@example.com", "--to",
                               "someone@far.test", "--helo", "client.test", *args],
                              capture_output=True, text=True, timeout=60)

    def test_relaying_is_refused_without_auth_and_allowed_with_it(self):
        with self.client() as s:
            self.assertIn("auth", s.esmtp_features)
            self.assertEqual(s.esmtp_features["auth"].split(), ["PLAIN", "LOGIN"])
            s.mail("alice@example.com")
            self.assertEqual(s.rcpt("someone@far.test")[0], 554)
            s.rset()
            s.login("alice", "alice-pw")
            self.assertEqual(s.sendmail("alice@example.com", ["someone@far.test"], BODY), {})
        self.assertEqual(self.downstream.wait_for(1, 10), 1)
        got = self.downstream.snapshot()[0]
        self.assertRegex(got.data.decode(), r"\(Postern\) with ESMTPSA id")
        self.assertRegex(self.relay.log_text(),
                         r"event=auth session=\S+ client=127\.0\.0\.9 user=alice "
                         r"mechanism=PLAIN result=ok")
        self.assertRegex(self.relay.log_text(), r"event=accepted .* user=alice")

    def test_no_auth_in_clear_text_on_a_normal_listener(self):
        with self.client(tls=False) as s:
            self.assertNotIn("auth", s.esmtp_features, "AUTH offered before TLS")
            code, text = s.docmd("AUTH", "PLAIN " + b64("\0alice\0alice-pw"))
            self.assertEqual((code, text[:6]), (538, b"5.7.11"))
        # The auth_plaintext listener takes it without TLS (and says ESMTPA).
        with self.client(self.plain_port, tls=False) as s:
            self.assertIn("auth", s.esmtp_features)
            s.login("carol", "carol-pw")
            self.assertEqual(s.sendmail("carol@far.test", ["x@far.test"], BODY), {})
        self.assertEqual(self.downstream.wait_for(1, 10), 1)
        self.assertRegex(self.downstream.snapshot()[0].data.decode(), r"with ESMTPA id")

    def test_swaks_plain_and_login_over_starttls_and_implicit_tls(self):
        runs = [("PLAIN", ["--port", str(self.relay.port), "--tls"]),
                ("LOGIN", ["--port", str(self.relay.port), "--tls"]),
                ("PLAIN", ["--port", str(self.implicit_port), "--tlsc"]),
                ("LOGIN", ["--port", str(self.implicit_port), "--tlsc"])]
        for mech, conn in runs:
            r = self.swaks("--auth", mech, "--auth-user", "alice", "--auth-password",
                           "alice-pw", *conn)
            self.assertEqual(r.returncode, 0, f"{mech} {conn}: {r.stdout}{r.stderr}")
        self.assertEqual(self.downstream.wait_for(4, 15), 4)
        # A wrong password fails the same way over both (swaks exits 28 on AUTH failure).
        r = self.swaks("--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "nope",
                       "--port", str(self.implicit_port), "--tlsc")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("535 5.7.8", r.stdout + r.stderr)

    def test_implicit_tls_with_smtplib(self):
        with smtplib.SMTP_SSL(HOST, self.implicit_port, timeout=15,
                              source_address=(OUTSIDE, 0),
                              context=ssl._create_unverified_context()) as s:
            code, _ = s.ehlo("client.test")
            self.assertEqual(code, 250)
            self.assertNotIn("starttls", s.esmtp_features)
            s.login("bob", "bob-pw")
            self.assertEqual(s.sendmail("bob@example.com", ["x@far.test"], BODY), {})
        self.assertEqual(self.downstream.wait_for(1, 10), 1)
        # Plain text to the implicit port is a failed handshake, not a session.
        with smtplib.SMTP(timeout=5) as s:
            with self.assertRaises((smtplib.SMTPServerDisconnected, ConnectionError)):
                s.connect(HOST, self.implicit_port)
                s.ehlo("client.test")

    def test_bad_exchanges_get_their_replies(self):
        with self.client() as s:
            self.assertEqual(s.docmd("AUTH", "PLAIN " + b64("\0alice\0wrong"))[:1], (535,))
            code, text = s.docmd("AUTH", "PLAIN not*base64")
            self.assertEqual((code, text[:5]), (501, b"5.5.2"))
            code, text = s.docmd("AUTH", "CRAM-MD5")
            self.assertEqual((code, text[:5]), (504, b"5.5.4"))
            self.assertEqual(s.docmd("AUTH", "LOGIN")[0], 334)
            code, text = s.docmd("*")  # cancelled
            self.assertEqual((code, text[:5]), (501, b"5.0.0"))
            self.assertEqual(s.docmd("AUTH", "PLAIN")[0], 334)
            code, text = s.docmd("A" * 5000)  # over the command line limit
            self.assertEqual((code, text[:5]), (500, b"5.5.6"))
            self.assertEqual(s.docmd("AUTH", "PLAIN " + b64("alice\0alice-pw"))[0], 501)
            self.assertEqual(s.docmd("AUTH", "PLAIN " + b64("x\0alice\0alice-pw"))[0], 535)
            # The session still works, and a right login then goes through.
            s.login("alice", "alice-pw")
            code, text = s.docmd("AUTH", "PLAIN " + b64("\0alice\0alice-pw"))
            self.assertEqual((code, text[:5]), (503, b"5.5.1"))
            code, _ = s.mail("alice@example.com", ["AUTH=<>"])
            self.assertEqual(code, 250)
            code, text = s.docmd("AUTH", "PLAIN")
            self.assertEqual(code, 503)  # not inside a transaction
        self.assertTrue(self.relay.running())

    def test_guessing_is_throttled_per_address(self):
        for _ in range(3):
            with self.client() as s:
                with self.assertRaises(smtplib.SMTPAuthenticationError):
                    s.login("alice", "guess")
        with self.client() as s:
            code, text = s.docmd("AUTH", "PLAIN " + b64("\0alice\0alice-pw"))
            self.assertEqual((code, text[:5]), (454, b"4.7.0"), "the right password, throttled")
        self.assertIn("event=auth_throttled", self.relay.log_text())
        # Another address is not throttled.
        with smtplib.SMTP(HOST, self.relay.port, timeout=15,
                          source_address=("127.0.0.10", 0)) as s:
            s.starttls(context=ssl._create_unverified_context())
            s.login("alice", "alice-pw")

    def test_a_user_may_send_only_as_its_domains(self):
        with self.client() as s:
            s.login("bob", "bob-pw")
            code, text = s.mail("bob@elsewhere.test")
            self.assertEqual((code, text[:5]), (553, b"5.7.1"))
            self.assertEqual(s.mail("bob@Example.COM")[0], 250)

    def test_users_file_is_read_again_on_sighup(self):
        from harness import postern_bin
        dave = subprocess.run([postern_bin(), "passwd"], input="dave-pw\n", text=True,
                              capture_output=True, check=True).stdout.strip()
        with open(self.users, "a") as f:
            f.write(f"dave:{dave}\n")
        self.relay.proc.send_signal(signal.SIGHUP)
        self.assertTrue(self.relay.wait_log(r"event=config_reloaded", 10))
        with self.client() as s:
            s.login("dave", "dave-pw")
        # A users file with a weak hash is refused as a whole; the running one stays.
        with open(self.users, "a") as f:
            f.write("eve:$1$salt$weakmd5hash\n")
        self.relay.proc.send_signal(signal.SIGHUP)
        self.assertTrue(self.relay.wait_log(r"event=reload_failed .*not a yescrypt", 10))
        with self.client() as s:
            s.login("dave", "dave-pw")


if __name__ == "__main__":
    unittest.main()
