"""DANE for outbound SMTP (RFC 7672): routes with tls = "dane", [dns] dnssec = true.

A scripted DNS server (dns_server.py) plays the validating resolver: the names it marks
secure are answered with the AD bit. The MX host of dane.test has TLSA records at
_PORT._tcp.mx.dane.test; the next hop is a capturing downstream offering STARTTLS with a
certificate the records match, or not.

What must hold: with secure, usable TLSA records the mail goes only over TLS that the
records authenticate (DANE-EE by the key's hash, DANE-TA by the issuing CA); a next hop
that strips STARTTLS or shows another certificate gets nothing (deferred, 4.7.4 / 4.7.5).
Records of usages SMTP does not use (PKIX) still make TLS mandatory, unauthenticated. A
TLSA lookup that fails keeps mail from that host; an answer that is not secure (no AD
bit) counts for nothing, and delivery stays opportunistic.
"""

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dns_server import DnsServer
from harness import HOST, Downstream, RelayTestCase, smtp_client
from test_outbound_tls import make_certs

DOMAIN = "dane.test"
MX = "mx.dane.test"


def spki_sha256(cert_path):
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def cert_sha256(cert_path):
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


class DaneTest(RelayTestCase):
    auto_relay = False
    start_downstream = False

    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix="postern-it-dane-")
        cls.certs, cls.ca = make_certs(cls.certdir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.dns = DnsServer().start()
        self.addCleanup(self.dns.stop)

    def start(self, which="selfsigned", tls=True, tlsa=(), secure=True, mx_secure=True,
              extra=""):
        """A downstream (STARTTLS with certificate `which`, or none), the DNS records of
        dane.test with `tlsa` at its MX host, and the relay."""
        ctx = None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.certs[which])
        self.hop = Downstream(tls_context=ctx)
        self.hop.start()
        self.addCleanup(self.hop.stop)
        self.tlsa_name = f"_{self.hop.port}._tcp.{MX}"
        self.dns.mx(DOMAIN, [(10, MX)])
        self.dns.a(MX, HOST)
        self.dns.aaaa(MX)  # exists, no AAAA: a secure "no data"
        if tlsa:
            self.dns.tlsa(self.tlsa_name, tlsa)
        else:
            self.dns.exists(self.tlsa_name)
        if mx_secure:
            self.dns.secure(DOMAIN)
        if secure:
            self.dns.secure(MX, self.tlsa_name)
        self.start_relay(
            None, routes=[{"domain": DOMAIN, "next_hop": "mx", "tls": "dane",
                           "allow_internal_mx": True}],
            delivery={"smtp_port": self.hop.port},
            extra=f'[dns]\nservers = ["{self.dns.address()}"]\ndnssec = true\n' + extra)

    def relay_tmp(self):
        d = tempfile.mkdtemp(prefix="postern-it-rpt-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def send(self):
        with smtp_client(HOST, self.relay.port) as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail("a@origin.test", [f"b@{DOMAIN}"],
                                        b"Subject: dane\r\n\r\nhello\r\n"), {})

    def assert_delivered(self):
        self.assertEqual(self.hop.wait_for(1, 15), 1, self.relay.log_text()[-3000:])

    def assert_deferred(self, pattern):
        self.relay.wait_log(pattern, 15)
        time.sleep(0.5)
        self.assertEqual(self.hop.messages, [])

    def ee(self, which="selfsigned"):
        return (3, 1, 1, spki_sha256(self.certs[which][0]))

    def test_dane_ee_match_delivers_over_authenticated_tls(self):
        self.start(tlsa=[self.ee()])
        self.send()
        self.assert_delivered()
        self.assertTrue(self.hop.connections[-1].tls)
        self.relay.wait_log(r"event=tls_out .*dane=dane-ee", 5)
        self.relay.wait_log(r"event=delivered .*tls=dane-ee", 5)

    def test_dane_ee_full_certificate_sha512(self):
        # 3 0 2: the whole certificate's SHA-512. A wrong record beside a right one does
        # not matter.
        with open(self.certs["selfsigned"][0], "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        der = cert.public_bytes(serialization.Encoding.DER)
        self.start(tlsa=[(3, 1, 1, b"\x00" * 32), (3, 0, 2, hashlib.sha512(der).digest())])
        self.send()
        self.assert_delivered()
        self.relay.wait_log(r"event=tls_out .*dane=dane-ee", 5)

    def test_dane_ee_exact_public_key(self):
        with open(self.certs["selfsigned"][0], "rb") as f:
            spki = x509.load_pem_x509_certificate(f.read()).public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.start(tlsa=[(3, 1, 0, spki)])
        self.send()
        self.assert_delivered()

    def test_dane_ta_match_delivers(self):
        # The hop's certificate names mx.test, not the MX host: DANE-TA checks the name.
        # "name" has DNS:mx.test; the CA's TLSA 2 0 1 authenticates the chain only when the
        # name matches, so a certificate for the MX host's own name is made here.
        d = tempfile.mkdtemp(prefix="postern-it-dane-ta-", dir=self.certdir)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        with open(os.path.join(d, "mx.ext"), "w") as f:
            f.write(f"subjectAltName=DNS:{MX}\nbasicConstraints=CA:FALSE\n")
        run = dict(cwd=d, check=True, capture_output=True)
        subprocess.run(["openssl", "req", *ec, "-keyout", "mx.key", "-out", "mx.csr",
                        "-subj", f"/CN={MX}"], **run)
        subprocess.run(["openssl", "x509", "-req", "-in", "mx.csr", "-CA", self.ca,
                        "-CAkey", os.path.join(self.certdir, "ca.key"), "-CAcreateserial",
                        "-out", "mx.crt", "-days", "2", "-extfile", "mx.ext"], **run)
        with open(os.path.join(d, "chain.crt"), "w") as out:
            for part in ("mx.crt", self.ca):
                with open(os.path.join(d, part)) as f:
                    out.write(f.read())
        self.certs["ta"] = (os.path.join(d, "chain.crt"), os.path.join(d, "mx.key"))
        self.start("ta", tlsa=[(2, 0, 1, cert_sha256(self.ca))])
        self.send()
        self.assert_delivered()
        self.relay.wait_log(r"event=tls_out .*dane=dane-ta", 5)

    def test_tls_report_counts_successes_and_tlsa_failures(self):
        reports = os.path.join(self.relay_tmp(), "tls-rpt")
        self.start(tlsa=[self.ee()], extra=f'\n[tls_rpt]\ndirectory = "{reports}"\n'
                                             'organization = "Test Org"\n')
        self.send()
        self.assert_delivered()
        # The hop changes its certificate: the next session fails and is counted so.
        self.hop.stop()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.certs["wrong"])
        self.hop = Downstream(self.hop.port, tls_context=ctx)
        self.hop.start()
        self.addCleanup(self.hop.stop)
        self.send()
        self.relay.wait_log(r"event=next_hop_error .*no matching DANE TLSA", 15)
        with urllib.request.urlopen(f"http://{HOST}:{self.relay.admin_port}/metrics",
                                    timeout=10) as r:
            metrics = r.read().decode()
        self.assertRegex(metrics, r'postern_outbound_tls_policy_total\{worker="0",'
                                  r'policy="dane",result="ok"\} 1\n')
        self.assertRegex(metrics, r'postern_outbound_tls_policy_total\{worker="0",'
                                  r'policy="dane",result="failed"\} [1-9]')
        self.relay.stop()  # writes what is counted
        day = time.strftime("%Y-%m-%d", time.gmtime())
        with open(os.path.join(reports, day, f"{DOMAIN}.json")) as f:
            report = json.load(f)
        self.assertEqual(report["organization-name"], "Test Org")
        [p] = report["policies"]
        self.assertEqual(p["policy"]["policy-type"], "tlsa")
        self.assertEqual(p["policy"]["policy-domain"], DOMAIN)
        self.assertTrue(p["policy"]["policy-string"][0].startswith("3 1 1 "))
        self.assertEqual(p["summary"]["total-successful-session-count"], 1)
        self.assertGreaterEqual(p["summary"]["total-failure-session-count"], 1)
        self.assertEqual({d["result-type"] for d in p["failure-details"]}, {"tlsa-invalid"})
        self.assertEqual(p["failure-details"][0]["receiving-mx-hostname"], MX)

    def test_mismatched_certificate_is_deferred(self):
        self.start("wrong", tlsa=[self.ee("selfsigned")])
        self.send()
        self.assert_deferred(r"event=next_hop_error .*4\.7\.5 TLS handshake")

    def test_stripped_starttls_is_deferred(self):
        self.start(tls=False, tlsa=[self.ee()])
        self.send()
        self.assert_deferred(r"event=next_hop_error .*4\.7\.4 TLS is required")

    def test_unusable_records_make_tls_mandatory_but_unauthenticated(self):
        # PKIX-EE (usage 1) records are unusable in SMTP: TLS is still required.
        self.start("wrong", tlsa=[(1, 1, 1, spki_sha256(self.certs["selfsigned"][0]))])
        self.send()
        self.assert_delivered()
        self.relay.wait_log(r"event=tls_out .*dane=unusable", 5)
        self.relay.wait_log(r"event=delivered .*tls=dane-unusable", 5)

    def test_unusable_records_and_stripped_starttls_is_deferred(self):
        self.start(tls=False, tlsa=[(1, 1, 1, b"\x00" * 32)])
        self.send()
        self.assert_deferred(r"event=next_hop_error .*4\.7\.4 TLS is required")

    def test_failed_tlsa_lookup_keeps_mail_from_the_host(self):
        self.start(tlsa=[self.ee()])
        self.dns.fail(self.tlsa_name, "servfail")
        self.send()
        self.assert_deferred(r"event=next_hop_error .*4\.7\.5 TLSA lookup .* failed")

    def test_insecure_answers_leave_tls_opportunistic(self):
        # Without the AD bit the records are not believed: a mismatched certificate (or
        # none) does not keep the mail back.
        self.start("wrong", tlsa=[self.ee("selfsigned")], secure=False)
        self.send()
        self.assert_delivered()
        self.assertNotIn("dane=dane", self.relay.log_text())
        self.relay.wait_log(r"event=delivered .*tls=unverified", 5)

    def test_insecure_mx_makes_its_hosts_insecure(self):
        self.start(tls=False, tlsa=[self.ee()], mx_secure=False)
        self.send()
        self.assert_delivered()

    def test_secure_host_without_tlsa_is_opportunistic(self):
        self.start(tls=False)
        self.send()
        self.assert_delivered()
        self.relay.wait_log(r"event=delivered .*tls=none", 5)


if __name__ == "__main__":
    unittest.main()
