"""The base of the outbound TLS policy tests (test_dane, test_mta_sts): a throw-away CA
and certificates (test_outbound_tls.make_certs, and issue() for more names), a scripted
DNS server per test, a next hop offering STARTTLS with a chosen certificate (or not at
all), and the checks that mail reached it, or was deferred without reaching it."""

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dns_server import DnsServer
from harness import HOST, Downstream, RelayTestCase, smtp_client
from test_outbound_tls import make_certs


def issue(certdir, name, out):
    """A certificate for DNS name `name` from make_certs' CA in certdir; (cert, key)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = dict(cwd=certdir, check=True, capture_output=True)
    with open(os.path.join(certdir, f"{out}.ext"), "w") as f:
        f.write(f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "req", *ec, "-keyout", f"{out}.key", "-out", f"{out}.csr",
                    "-subj", f"/CN={name}"], **run)
    subprocess.run(["openssl", "x509", "-req", "-in", f"{out}.csr", "-CA", "ca.crt",
                    "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{out}.crt", "-days", "2",
                    "-extfile", f"{out}.ext"], **run)
    return os.path.join(certdir, f"{out}.crt"), os.path.join(certdir, f"{out}.key")


def public_key_der(cert_path):
    with open(cert_path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_der(cert_path):
    with open(cert_path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)


class TlsPolicyCase(RelayTestCase):
    auto_relay = False
    start_downstream = False
    DOMAIN = None            # the recipient domain
    EXTRA_CERTS = {}         # more certificates: {key: DNS name}

    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix="postern-it-policy-")
        cls.certs, cls.ca = make_certs(cls.certdir)
        for key, name in cls.EXTRA_CERTS.items():
            cls.certs[key] = issue(cls.certdir, name, key)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.dns = DnsServer().start()
        self.addCleanup(self.dns.stop)

    def start_hop(self, which, tls=True, port=None):
        """The next hop (self.hop): STARTTLS with certificate `which`, or none."""
        ctx = None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.certs[which])
        self.hop = Downstream(port, tls_context=ctx)
        self.hop.start()
        self.addCleanup(self.hop.stop)
        return self.hop

    def replace_hop(self, which, tls=True):
        """The next hop again on its port, now with certificate `which` (or no STARTTLS)."""
        self.hop.stop()
        return self.start_hop(which, tls, self.hop.port)

    def scratch_dir(self):
        d = tempfile.mkdtemp(prefix="postern-it-scratch-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def send(self):
        with smtp_client(HOST, self.relay.port) as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail("a@origin.test", [f"b@{self.DOMAIN}"],
                                        b"Subject: policy\r\n\r\nhello\r\n"), {})

    def assert_delivered(self, tls=None):
        """One message reached the hop (and its delivery line says tls=TLS, if given)."""
        self.assertEqual(self.hop.wait_for(1, 15), 1, self.relay.log_text()[-3000:])
        if tls is not None:
            self.relay.wait_log(rf"event=delivered .*tls={tls}", 5)

    def assert_deferred(self, pattern):
        """The log says `pattern`, and nothing reached the hop."""
        self.relay.wait_log(pattern, 15)
        time.sleep(0.5)
        self.assertEqual(self.hop.messages, [])

    def report(self, directory):
        """Today's TLS report for the domain (after the relay wrote it)."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        with open(os.path.join(directory, day, f"{self.DOMAIN}.json")) as f:
            return json.load(f)
