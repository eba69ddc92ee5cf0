"""Postern's milter client against a real milter: Debian's OpenDKIM (/usr/sbin/opendkim),
run in the foreground on a loopback port with a config of our own, and checked by an
independent DKIM implementation (python3-dkim).

What this proves:
* Signing: OpenDKIM (Mode s) signs mail the relay takes from 127.0.0.1 for signed.test,
  and the DKIM-Signature it inserts reaches the downstream in a message whose bytes still
  match it: dkimpy verifies the copy the downstream received (and rejects a copy with a
  body byte changed, so the check has teeth). This needs the whole conversation right:
  connect/MAIL/RCPT/header/body/end-of-message packets, the header edit applied before the
  message is spooled, and no byte of header or body altered on the way.
* Verifying: OpenDKIM (Mode v), given the public key by TestPublicKeys instead of DNS,
  adds Authentication-Results: dkim=pass to a message signed in Python, and dkim=fail
  to the same message with its body changed.
* default_action: with no milter listening, "tempfail" refuses the session (421 before
  the greeting, or 451 at MAIL) and nothing is delivered; "accept" delivers unsigned.
"""

import base64
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import dkim
from cryptography.hazmat.primitives import serialization

from harness import HOST, RelayTestCase, free_port, wait_port

OPENDKIM = "/usr/sbin/opendkim"
SELECTOR, DOMAIN = b"sel", b"signed.test"
KEY_NAME = b"sel._domainkey.signed.test."   # what dkimpy's dnsfunc is asked for


def message(subject, body=b"Hello from the signing domain.\r\n"):
    return (b"From: Writer <writer@signed.test>\r\nTo: someone@example.net\r\n"
            b"Subject: " + subject + b"\r\nDate: Thu, 04 Dec 2025 12:00:00 +0000\r\n"
            b"Message-ID: <" + subject.replace(b" ", b"-") + b"@signed.test>\r\n\r\n" + body)


class OpenDkimMilterTest(RelayTestCase):
    auto_relay = False

    @classmethod
    def setUpClass(cls):
        # One RSA-2048 key for the class: OpenDKIM signs with it (KeyFile) or verifies
        # with its public half (TestPublicKeys); dkimpy gets the same record by dnsfunc.
        cls.keydir = tempfile.mkdtemp(prefix="postern-opendkim-key-")
        cls.key_path = os.path.join(cls.keydir, "sel.private")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", cls.key_path],
                       check=True, capture_output=True)
        os.chmod(cls.key_path, 0o600)
        with open(cls.key_path, "rb") as f:
            cls.private_pem = f.read()
        der = serialization.load_pem_private_key(cls.private_pem, password=None) \
            .public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        cls.record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.keydir, ignore_errors=True)

    def dns(self, name, timeout=5):
        return self.record if name == KEY_NAME else None

    # -- OpenDKIM ----------------------------------------------------------------------

    def start_opendkim(self, settings):
        """Runs opendkim -f with `settings` (opendkim.conf lines) plus what every run needs;
        returns its milter port once it accepts connections."""
        tmp = tempfile.mkdtemp(prefix="postern-opendkim-")
        self.addCleanup(shutil.rmtree, tmp, True)
        port = free_port()
        conf = os.path.join(tmp, "opendkim.conf")
        with open(conf, "w") as f:
            f.write(f"Socket inet:{port}@{HOST}\n"
                    f"PidFile {tmp}/opendkim.pid\n"
                    "Background no\n"
                    "Syslog no\n"
                    # Running as root (no UserID) works; but its safety check also walks
                    # the key's and config's directories and balks at world-writable /tmp.
                    "RequireSafeKeys no\n"
                    + "".join(line + "\n" for line in settings))
        log = open(os.path.join(tmp, "opendkim.out"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen([OPENDKIM, "-f", "-x", conf], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        self.addCleanup(self._stop, proc)
        if not wait_port(HOST, port, 10):
            proc.kill()
            with open(log.name, "rb") as f:
                self.fail(f"opendkim did not listen on {port} (exit {proc.poll()}): "
                          f"{f.read()!r}")
        return port

    @staticmethod
    def _stop(proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def start_relay_with_milter(self, port, default_action="tempfail"):
        self.start_relay(self.downstream.port, extra=(
            "[[milter]]\n"
            'name = "opendkim"\n'
            f'address = "inet:{HOST}:{port}"\n'
            "timeout = 10\n"
            f'default_action = "{default_action}"\n'),
            server={"log_level": "info"})

    def relay_one(self, data):
        """Sends data from 127.0.0.1 (a relay network) and returns the downstream's copy."""
        before = len(self.downstream.snapshot())
        with self.relay.client() as s:
            self.assertEqual(s.greeting[0], 220, s.greeting)
            s.ehlo("client.test")
            self.assertEqual(s.sendmail("writer@signed.test", ["someone@example.net"], data),
                             {})
        self.assertEqual(self.downstream.wait_for(before + 1, 15), before + 1)
        return self.downstream.snapshot()[before].data

    # -- tests -------------------------------------------------------------------------

    def test_opendkim_signs_and_the_signature_verifies_downstream(self):
        port = self.start_opendkim(["Mode s", "Domain signed.test", "Selector sel",
                                    f"KeyFile {self.key_path}"])
        self.start_relay_with_milter(port)
        # Awkward content too: a stuffed leading dot and trailing whitespace must reach
        # OpenDKIM (and the downstream) exactly as the client meant them.
        got = self.relay_one(message(b"signed", b"Hello.\r\n.leading dot\r\ntrailing  \r\n"))
        sigs = re.findall(rb"^DKIM-Signature:.*?(?=^\S)", got, re.M | re.S)
        self.assertEqual(len(sigs), 1, got[:3000])
        self.assertRegex(sigs[0], rb"\bd=signed\.test;")
        self.assertRegex(sigs[0], rb"\bs=sel;")
        self.assertTrue(dkim.verify(got, dnsfunc=self.dns, minkey=2048),
                        f"OpenDKIM's signature does not verify downstream:\n{got!r}")
        # The check can fail: one changed body byte breaks the body hash.
        tampered = got.replace(b"Hello.", b"Hellp.")
        self.assertNotEqual(tampered, got)
        self.assertFalse(dkim.verify(tampered, dnsfunc=self.dns))
        # Headers the message came with are still there, once each.
        self.assertEqual(got.count(b"\r\nSubject: signed\r\n"), 1)

    def test_opendkim_verifies_and_adds_authentication_results(self):
        keys = os.path.join(self.keydir, "test-public-keys")
        with open(keys, "wb") as f:
            # opendkim's file query method: "<selector>._domainkey.<domain> <record>".
            f.write(KEY_NAME.rstrip(b".") + b" " + self.record + b"\n")
        port = self.start_opendkim(["Mode v", f"TestPublicKeys {keys}",
                                    "AuthservID relay.test",
                                    # Verify mail from 127.0.0.1 too: internal hosts'
                                    # mail is otherwise only a signing candidate.
                                    "InternalHosts 192.0.2.1"])
        self.start_relay_with_milter(port)
        original = message(b"verified")
        signed = dkim.sign(original, SELECTOR, DOMAIN, self.private_pem,
                           include_headers=[b"from", b"to", b"subject", b"date",
                                            b"message-id"]) + original
        self.assertTrue(dkim.verify(signed, dnsfunc=self.dns))   # our signature is good

        got = self.relay_one(signed)
        ar = re.findall(rb"^Authentication-Results:.*?(?=^\S)", got, re.M | re.S)
        self.assertEqual(len(ar), 1, got[:3000])
        self.assertRegex(ar[0], rb"^Authentication-Results: relay\.test;")
        self.assertRegex(ar[0], rb"dkim=pass\b")
        self.assertRegex(ar[0], rb"header\.d=signed\.test")

        got = self.relay_one(signed.replace(b"signing domain", b"signing d0main"))
        ar = re.findall(rb"^Authentication-Results:.*?(?=^\S)", got, re.M | re.S)
        self.assertEqual(len(ar), 1, got[:3000])
        self.assertRegex(ar[0], rb"dkim=fail\b")
        self.assertNotRegex(ar[0], rb"dkim=pass\b")

    def test_unreachable_milter_with_tempfail_delivers_nothing(self):
        self.start_relay_with_milter(free_port(), default_action="tempfail")
        with self.relay.client() as s:
            code, text = s.greeting
            if code == 220:
                # Not refused at connect: then MAIL (or at the latest RCPT) gets 4xx.
                s.ehlo("client.test")
                code, text = s.mail("writer@signed.test")
                if code == 250:
                    code, text = s.rcpt("someone@example.net")
                self.assertEqual(code, 451, text)
            else:
                # The milter is asked at connect (what Postern does): the greeting itself
                # says come back later, and the connection closes.
                self.assertEqual(code, 421, text)
        self.assertEqual(self.downstream.wait_for(1, 2), 0)
        self.assertRegex(self.relay.log_text(), r"milter_failed.*action.{0,3}tempfail")

    def test_unreachable_milter_with_accept_delivers_unsigned(self):
        self.start_relay_with_milter(free_port(), default_action="accept")
        got = self.relay_one(message(b"unfiltered"))
        self.assertNotIn(b"DKIM-Signature", got)
        self.assertTrue(got.endswith(b"Hello from the signing domain.\r\n"), got)
        self.assertRegex(self.relay.log_text(), r"milter_failed.*action.{0,3}accept")


if __name__ == "__main__":
    unittest.main()
