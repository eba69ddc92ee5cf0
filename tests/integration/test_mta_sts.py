"""MTA-STS (RFC 8461) for MX routes with tls = "mta-sts" (and "dane" hosts without TLSA).

The pieces are real: a scripted DNS server with the _mta-sts TXT record, an HTTPS policy
server (Python's ssl and http.server) at mta-sts.sts.test, bound to 127.0.0.77:443 with a
certificate from a test CA, and the MX host as a capturing downstream whose certificate
the same CA issued (delivery.ca_file trusts it).

What must hold: under an enforced policy mail goes only to a listed MX host over TLS
verified for its name; a hop that strips STARTTLS, shows a certificate for another name,
or is not in the policy gets nothing (deferred). In testing mode, or without a policy,
delivery stays opportunistic. A fetched policy is kept in the spool directory and still
enforced after a restart with its record and server gone. DANE wins where both apply.
"""

import hashlib
import http.server
import os
import ssl
import threading
import unittest

from harness import HOST
from tls_policy_case import TlsPolicyCase, public_key_der

DOMAIN = "sts.test"
MX = "mx.sts.test"
POLICY_IP = "127.0.0.77"


class PolicyServer:
    """HTTPS on POLICY_IP:443 serving /.well-known/mta-sts.txt."""

    def __init__(self, cert, policy):
        self.policy = policy
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.fetches += 1
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                body = owner.policy.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        http.server.HTTPServer.allow_reuse_address = True
        self.httpd = http.server.HTTPServer((POLICY_IP, 443), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def policy(mode="enforce", mx=(MX,), max_age=86400):
    return ("version: STSv1\r\nmode: %s\r\n" % mode
            + "".join(f"mx: {m}\r\n" for m in mx) + f"max_age: {max_age}\r\n")


class MtaStsTest(TlsPolicyCase):
    DOMAIN = DOMAIN
    EXTRA_CERTS = {"policy": f"mta-sts.{DOMAIN}", "mx": MX, "other": "other.sts.test"}

    def serve_policy(self, text):
        server = PolicyServer(self.certs["policy"], text)
        self.addCleanup(server.stop)
        return server

    def start(self, which="mx", tls=True, text=policy(), record="v=STSv1; id=1;",
              route_tls="mta-sts", extra=""):
        self.start_hop(which, tls)
        self.dns.mx(DOMAIN, [(10, MX)])
        self.dns.a(MX, HOST)
        self.dns.a(f"mta-sts.{DOMAIN}", POLICY_IP)
        if record:
            self.dns.txt(f"_mta-sts.{DOMAIN}", record)
        self.policy_server = self.serve_policy(text) if text else None
        self.start_relay(
            None, routes=[{"domain": DOMAIN, "next_hop": "mx", "tls": route_tls,
                           "allow_internal_mx": True}],
            delivery={"smtp_port": self.hop.port, "ca_file": self.ca},
            extra=f'[dns]\nservers = ["{self.dns.address()}"]\n' + extra)

    def test_enforced_policy_delivers_over_verified_tls(self):
        self.start()
        self.send()
        self.assert_delivered("mta-sts")
        self.relay.wait_log(r"event=mta_sts domain=sts\.test mode=enforce policy=yes how=fetched", 5)
        self.assertEqual(self.policy_server.fetches, 1)

    def test_enforced_policy_and_a_stripped_starttls_is_deferred(self):
        self.start(tls=False)
        self.send()
        self.assert_deferred(r"event=next_hop_error .*4\.7\.4 TLS is required")

    def test_enforced_policy_and_a_certificate_for_another_name_is_deferred(self):
        self.start("other")
        self.send()
        self.assert_deferred(r"event=next_hop_error .*4\.7\.5 TLS handshake")

    def test_mx_host_not_in_the_policy_is_not_used(self):
        self.start(text=policy(mx=("*.elsewhere.test",)))
        self.send()
        self.assert_deferred(r"not in the MTA-STS policy of sts\.test")

    def test_wildcard_pattern_matches_one_label(self):
        self.start(text=policy(mx=("*.sts.test",)))
        self.send()
        self.assert_delivered("mta-sts")

    def test_testing_mode_stays_opportunistic(self):
        self.start("other", text=policy(mode="testing"))
        self.send()
        self.assert_delivered("unverified")
        self.relay.wait_log(r"event=mta_sts .*mode=testing", 5)

    def test_testing_mode_failures_are_in_the_tls_report(self):
        reports = self.scratch_dir()
        self.start("other", text=policy(mode="testing"),
                   extra=f'\n[tls_rpt]\ndirectory = "{reports}"\n')
        self.send()
        self.assert_delivered("unverified")
        # Then the hop stops offering STARTTLS (stripped): delivered in plain text, and
        # counted as a failure of its own kind.
        self.replace_hop("mx", tls=False)
        self.send()
        self.assertEqual(self.hop.wait_for(1, 15), 1)
        self.relay.stop()
        report = self.report(reports)
        [p] = report["policies"]
        self.assertEqual(p["policy"]["policy-type"], "sts")
        self.assertIn("mode: testing", p["policy"]["policy-string"])
        self.assertEqual(p["policy"]["mx-host"], [MX])
        self.assertEqual(p["summary"], {"total-successful-session-count": 0,
                                        "total-failure-session-count": 2})
        self.assertEqual(sorted(d["result-type"] for d in p["failure-details"]),
                         ["certificate-host-mismatch", "starttls-not-supported"])
        self.assertEqual(report["contact-info"], "postmaster@relay.test")

    def test_no_record_no_policy(self):
        self.start(tls=False, record=None, text=None)
        self.send()
        self.assert_delivered("none")

    def test_invalid_policy_is_no_policy_and_reported(self):
        reports = self.scratch_dir()
        self.start(tls=False, text="version: STSv1\r\nmode: enforce\r\n",  # no mx, max_age
                   extra=f'\n[tls_rpt]\ndirectory = "{reports}"\n')
        self.send()
        self.assert_delivered("none")
        self.relay.stop()
        [p] = self.report(reports)["policies"]
        self.assertEqual(p["policy"]["policy-type"], "no-policy-found")
        self.assertEqual([d["result-type"] for d in p["failure-details"]], ["sts-policy-invalid"])

    def test_unreachable_policy_server_is_no_policy_and_reported(self):
        reports = self.scratch_dir()
        self.start(tls=False, text=None, extra=f'\n[tls_rpt]\ndirectory = "{reports}"\n')
        self.send()
        self.assert_delivered("none")
        self.relay.wait_log(r"event=mta_sts .*policy=no how=.*mta-sts\.txt", 5)
        self.relay.stop()
        [p] = self.report(reports)["policies"]
        self.assertEqual(p["policy"]["policy-type"], "no-policy-found")
        self.assertEqual(p["summary"]["total-failure-session-count"], 1)
        self.assertEqual([d["result-type"] for d in p["failure-details"]],
                         ["sts-policy-fetch-error"])

    def test_policy_survives_a_restart_without_its_record_and_server(self):
        self.start()
        self.send()
        self.assert_delivered("mta-sts")
        cached = os.path.join(self.relay.spool_dir, "mta-sts", DOMAIN)
        self.assertTrue(os.path.exists(cached))
        # An attacker blocks the record and the server, and strips STARTTLS.
        self.policy_server.stop()
        self.dns.remove(f"_mta-sts.{DOMAIN}")
        self.replace_hop("mx", tls=False)
        self.relay.stop()
        self.relay.start()
        self.send()
        self.assert_deferred(r"event=next_hop_error .*4\.7\.4 TLS is required")
        self.relay.wait_log(r"event=mta_sts .*mode=enforce policy=yes how=cached", 5)

    def test_dane_wins_over_mta_sts(self):
        # The policy lists no usable MX, but the host has secure TLSA records that match.
        spki = public_key_der(self.certs["mx"][0])
        self.dns.secure(DOMAIN, MX)
        self.start(text=policy(mx=("*.elsewhere.test",)), route_tls="dane",
                   extra="dnssec = true\n")
        tlsa = f"_{self.hop.port}._tcp.{MX}"
        self.dns.tlsa(tlsa, [(3, 1, 1, hashlib.sha256(spki).digest())])
        self.dns.secure(tlsa)
        self.send()
        self.assert_delivered("dane-ee")


if __name__ == "__main__":
    unittest.main()
