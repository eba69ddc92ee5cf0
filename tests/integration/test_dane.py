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
import os
import unittest
import urllib.request

from harness import HOST
from tls_policy_case import TlsPolicyCase, certificate_der, public_key_der

DOMAIN = "dane.test"
MX = "mx.dane.test"


class DaneTest(TlsPolicyCase):
    DOMAIN = DOMAIN
    EXTRA_CERTS = {"mx": MX}

    def start(self, which="selfsigned", tls=True, tlsa=(), secure=True, mx_secure=True,
              extra=""):
        """The next hop (STARTTLS with certificate `which`, or none), the DNS records of
        dane.test with `tlsa` at its MX host, and the relay."""
        self.start_hop(which, tls)
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

    def ee(self, which="selfsigned"):
        return (3, 1, 1, hashlib.sha256(public_key_der(self.certs[which][0])).digest())

    def test_dane_ee_match_delivers_over_authenticated_tls(self):
        self.start(tlsa=[self.ee()])
        self.send()
        self.assert_delivered("dane-ee")
        self.assertTrue(self.hop.connections[-1].tls)
        self.relay.wait_log(r"event=tls_out .*dane=dane-ee", 5)

    def test_dane_ee_full_certificate_sha512(self):
        # 3 0 2: the whole certificate's SHA-512. A wrong record beside a right one does
        # not matter.
        der = certificate_der(self.certs["selfsigned"][0])
        self.start(tlsa=[(3, 1, 1, b"\x00" * 32), (3, 0, 2, hashlib.sha512(der).digest())])
        self.send()
        self.assert_delivered()
        self.relay.wait_log(r"event=tls_out .*dane=dane-ee", 5)

    def test_dane_ee_exact_public_key(self):
        self.start(tlsa=[(3, 1, 0, public_key_der(self.certs["selfsigned"][0]))])
        self.send()
        self.assert_delivered()

    def test_dane_ta_match_delivers(self):
        # 2 0 1: the CA's certificate, and the chain it issued for the MX host's own name
        # (DANE-TA checks the name).
        chain = os.path.join(self.certdir, "mx-chain.crt")
        with open(chain, "w") as out:
            for part in (self.certs["mx"][0], self.ca):
                with open(part) as f:
                    out.write(f.read())
        self.certs["ta"] = (chain, self.certs["mx"][1])
        self.start("ta", tlsa=[(2, 0, 1, hashlib.sha256(certificate_der(self.ca)).digest())])
        self.send()
        self.assert_delivered("dane-ta")

    def test_tls_report_counts_successes_and_tlsa_failures(self):
        reports = os.path.join(self.scratch_dir(), "tls-rpt")
        self.start(tlsa=[self.ee()], extra=f'\n[tls_rpt]\ndirectory = "{reports}"\n'
                                             'organization = "Test Org"\n')
        self.send()
        self.assert_delivered()
        # The hop changes its certificate: the next session fails and is counted so.
        self.replace_hop("wrong")
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
        report = self.report(reports)
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
        self.start("wrong", tlsa=[(1, 1, 1, self.ee()[3])])
        self.send()
        self.assert_delivered("dane-unusable")
        self.relay.wait_log(r"event=tls_out .*dane=unusable", 5)

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
        self.assert_delivered("unverified")
        self.assertNotIn("dane=dane", self.relay.log_text())

    def test_insecure_mx_makes_its_hosts_insecure(self):
        self.start(tls=False, tlsa=[self.ee()], mx_secure=False)
        self.send()
        self.assert_delivered()

    def test_secure_host_without_tlsa_is_opportunistic(self):
        self.start(tls=False)
        self.send()
        self.assert_delivered("none")


if __name__ == "__main__":
    unittest.main()
