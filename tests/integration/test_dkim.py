"""DKIM signing (RFC 6376, RFC 8463) checked by an independent verifier: Debian's
python3-dkim (dkimpy, the library behind `dkimverify`), given our public keys by its
dnsfunc instead of DNS.

The relay signs mail from its relay networks and from logged-in users whose From: domain
has [[dkim]] keys: signed.test has both an RSA-2048 and an Ed25519 key, so its mail
carries two signatures, and each must verify on its own. What is sent covers the ways a
body and its headers can differ in transit: 8-bit text, long folded headers, lines that
start with dots (stuffed on the wire), trailing whitespace and empty lines, a message
past message_memory (spilled to a file while it arrives), and BDAT. Mail whose From: has
no key, or that comes from outside without logging in, is not signed."""

import base64
import os
import re
import smtplib
import subprocess
import tempfile
import unittest
import urllib.request

import dkim
from cryptography.hazmat.primitives import serialization

from harness import HOST, RelayTestCase

FROM = "writer@signed.test"


def public_txt(private_pem_path, kind):
    with open(private_pem_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if kind == "ed25519":
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


class DkimTest(RelayTestCase):
    auto_relay = False

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="postern-dkim-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.rsa = os.path.join(self.tmp, "rsa.pem")
        self.ed = os.path.join(self.tmp, "ed.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", self.rsa], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", self.ed],
                       check=True, capture_output=True)
        self.records = {b"rsa._domainkey.signed.test.": public_txt(self.rsa, "rsa"),
                        b"ed._domainkey.signed.test.": public_txt(self.ed, "ed25519")}
        from harness import free_port, postern_bin
        users = os.path.join(self.tmp, "users")
        hash_ = subprocess.run([postern_bin(), "passwd"], input="pw\n", text=True,
                               capture_output=True, check=True).stdout.strip()
        with open(users, "w") as f:
            f.write(f"writer:{hash_}\n")
        self.submission_port = free_port()
        self.start_relay(self.downstream.port, extra=(
            f'[auth]\nusers_file = "{users}"\n\n'
            f'[[listener]]\naddress = "{HOST}:{self.submission_port}"\nauth_plaintext = true\n\n'
            f'[[dkim]]\ndomain = "signed.test"\nselector = "rsa"\n'
            f'private_key = "{self.rsa}"\n\n'
            f'[[dkim]]\ndomain = "Signed.Test"\nselector = "ed"\nalgorithm = "ed25519-sha256"\n'
            f'private_key = "{self.ed}"\n'
            f'headers = ["from", "to", "subject", "date", "message-id", "x-long"]\n'),
            server={"log_level": "info"})

    def dns(self, name, timeout=5):
        return self.records.get(name)

    def verify_all(self, message):
        """Every DKIM-Signature of message verifies by itself; returns the a= values."""
        fields = re.findall(rb"^DKIM-Signature:.*?(?=^\S)", message, re.M | re.S)
        self.assertEqual(len(fields), 2, message[:2000])
        algorithms = []
        for i in range(len(fields)):
            self.assertTrue(dkim.verify(message, dnsfunc=self.dns, minkey=2048) if i == 0 else
                            dkim.DKIM(message).verify(idx=i, dnsfunc=self.dns),
                            f"signature {i} does not verify:\n{message[:3000]!r}")
            algorithms.append(re.search(rb"a=([\w-]+)", fields[i]).group(1).decode())
        return sorted(algorithms)

    def relay_one(self, body, **send):
        before = len(self.downstream.snapshot())
        with smtplib.SMTP(HOST, self.relay.port, timeout=30) as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail(FROM, ["reader@far.test"], body, **send), {})
        self.assertEqual(self.downstream.wait_for(before + 1, 15), before + 1)
        return self.downstream.snapshot()[before].data

    def test_both_algorithms_verify_on_awkward_messages(self):
        long_to = ", ".join(f"reader{i}@far.test" for i in range(30))
        bodies = {
            "plain": b"From: Writer <writer@signed.test>\r\nTo: reader@far.test\r\n"
                     b"Subject: plain\r\n\r\nHello.\r\n",
            "8bit": ("From: writer@signed.test\r\nTo: reader@far.test\r\nSubject: Grüße\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln — ☃\r\n").encode(),
            "folded": (f"From: \"Writer, The\" <writer@signed.test>\r\nTo: {long_to}\r\n"
                       "Subject: a subject that goes on\r\n\tand on, folded\r\n"
                       "X-Long:    spaced\t  out   \r\n\r\nbody\r\n").encode(),
            "dots": b"From: writer@signed.test\r\nSubject: dots\r\n\r\n.leading dot\r\n"
                    b"..two dots\r\n.\r\nnot the end\r\n",
            "whitespace": b"From: writer@signed.test\r\nSubject:  ws \r\n\r\nline  with   runs  \r\n"
                          b"\t\r\n\r\ntrailing empty lines follow\r\n\r\n\r\n\r\n",
            "large": b"From: writer@signed.test\r\nSubject: large\r\n\r\n"
                     + b"".join(b"line %06d of a body past message_memory\r\n" % i
                                for i in range(20000)),
        }
        for name, body in bodies.items():
            with self.subTest(name):
                got = self.relay_one(body)
                self.assertEqual(self.verify_all(got), ["ed25519-sha256", "rsa-sha256"])
        self.assertRegex(self.relay.log_text(),
                         r"event=accepted .* dkim=signed\.test:rsa-sha256,signed\.test:ed25519-sha256")
        with urllib.request.urlopen(f"http://{HOST}:{self.relay.admin_port}/metrics",
                                    timeout=10) as r:
            metrics = r.read().decode()
        signed = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                     if line.startswith("postern_dkim_signatures_total{")
                     and 'result="signed"' in line)
        self.assertEqual(signed, 2 * len(bodies))

    def test_bdat_is_signed_too(self):
        body = b"From: writer@signed.test\r\nSubject: bdat\r\n\r\nin two chunks\r\nsecond\r\n"
        with smtplib.SMTP(HOST, self.relay.port, timeout=30) as s:
            s.ehlo("client.test")
            self.assertEqual(s.mail(FROM)[0], 250)
            self.assertEqual(s.rcpt("reader@far.test")[0], 250)
            s.send(b"BDAT 30\r\n" + body[:30])
            self.assertEqual(s.getreply()[0], 250)
            rest = body[30:]
            s.send(b"BDAT %d LAST\r\n" % len(rest) + rest)
            self.assertEqual(s.getreply()[0], 250)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        self.assertEqual(self.verify_all(self.downstream.snapshot()[0].data),
                         ["ed25519-sha256", "rsa-sha256"])

    def test_not_signed_without_a_key_or_a_right_to_one(self):
        got = self.relay_one(b"From: someone@unsigned.test\r\nSubject: x\r\n\r\nno key\r\n")
        self.assertNotIn(b"DKIM-Signature", got)
        # Two From addresses: no single author domain to sign for.
        got = self.relay_one(b"From: writer@signed.test, other@signed.test\r\n\r\nx\r\n")
        self.assertNotIn(b"DKIM-Signature", got)
        # From outside the relay networks, to an accepted domain, without AUTH: not signed.
        with smtplib.SMTP(HOST, self.relay.port, timeout=30,
                          source_address=("127.0.0.9", 0)) as s:
            s.ehlo("outside.test")
            self.assertEqual(s.sendmail("x@outside.test", ["user@accepted.test"],
                                        b"From: writer@signed.test\r\n\r\nforged\r\n"), {})
        self.assertEqual(self.downstream.wait_for(3, 15), 3)
        self.assertNotIn(b"DKIM-Signature", self.downstream.snapshot()[2].data)

    def test_a_logged_in_user_is_signed_for(self):
        with smtplib.SMTP(HOST, self.submission_port, timeout=30,
                          source_address=("127.0.0.9", 0)) as s:
            s.ehlo("laptop.test")
            s.login("writer", "pw")
            self.assertEqual(s.sendmail(FROM, ["reader@far.test"],
                                        b"From: writer@signed.test\r\nSubject: s\r\n\r\nx\r\n"), {})
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        self.assertEqual(self.verify_all(self.downstream.snapshot()[0].data),
                         ["ed25519-sha256", "rsa-sha256"])

    def test_a_tampered_message_fails(self):
        got = self.relay_one(b"From: writer@signed.test\r\nSubject: t\r\n\r\noriginal\r\n")
        self.assertFalse(dkim.verify(got.replace(b"original", b"changed!"), dnsfunc=self.dns))


if __name__ == "__main__":
    unittest.main()
