"""Outbound STARTTLS per route (issue 5): "opportunistic" (the default) upgrades whenever
the next hop offers STARTTLS, without checking its certificate; "required" delivers only
over TLS with a certificate that chains to [delivery] ca_file and names the next hop
(its IP for an IP next hop, the MX host's name for MX delivery), and otherwise keeps the
message queued; "none" never starts TLS.

Certificates: a throw-away CA and server certificates made with the openssl CLI in a
temp dir: "ip" (IP:127.0.0.1), "name" (DNS:mx.test), "wrong" (DNS:wrong.test,
IP:127.0.0.9), and "selfsigned" (IP:127.0.0.1 and DNS:mx.test, but not from the CA).
The downstream is aiosmtpd offering STARTTLS with one of them; the tests read from its
side whether the session was upgraded.

Config: retry_min = 1, retry_max = 2, idle_timeout = 1 (seconds)."""

import logging
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import unittest

from dns_server import DnsServer
from harness import HOST, Downstream, RelayTestCase, assert_relayed

FROM = "tls@origin.test"

# aiosmtpd logs the handshakes the relay aborts on purpose (a certificate it must not
# accept) as session exceptions with a traceback; they are expected here.
logging.getLogger("mail.log").setLevel(logging.CRITICAL)


def body(tag):
    return f"Subject: outbound tls {tag}\r\n\r\nsecret-ish {tag}\r\n".encode()


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_certs(d):
    """CA and server certificates in d; returns {name: (cert, key)} and the CA path."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=Postern Test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    sans = {"ip": "IP:127.0.0.1", "name": "DNS:mx.test",
            "wrong": "DNS:wrong.test,IP:127.0.0.9"}
    out = {}
    for name, san in sans.items():
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}.postern.test", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                "-extfile", f"{name}.ext", cwd=d)
        out[name] = (os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"))
    openssl("req", "-x509", *ec, "-keyout", "selfsigned.key", "-out", "selfsigned.crt",
            "-days", "2", "-subj", "/CN=selfsigned.postern.test",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:mx.test", cwd=d)
    out["selfsigned"] = (os.path.join(d, "selfsigned.crt"), os.path.join(d, "selfsigned.key"))
    return out, os.path.join(d, "ca.crt")


class OutboundTlsTest(RelayTestCase):

    auto_relay = False
    start_downstream = False   # each test starts its own, with or without TLS

    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix="postern-it-certs-")
        cls.certs, cls.ca = make_certs(cls.certdir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def server_context(self, which):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.certs[which])
        return ctx

    def tls_downstream(self, which, port=None):
        """A downstream on self.downstream's port (or port) offering STARTTLS."""
        ds = Downstream(port or self.downstream.port, tls_context=self.server_context(which))
        ds.start()
        self.addCleanup(ds.stop)
        return ds

    def replace_downstream(self, old, **kwargs):
        old.stop()
        new = Downstream(old.port, **kwargs)
        new.start()
        self.addCleanup(new.stop)
        return new

    def relay_to_ip(self, tls, **kwargs):
        """Every domain to 127.0.0.1:<downstream port> with this tls policy."""
        route = {"domain": "*", "next_hop": f"{HOST}:{self.downstream.port}"}
        if tls is not None:
            route["tls"] = tls
        return self.start_relay(None, routes=[route], delivery={"ca_file": self.ca}, **kwargs)

    def deliver_one(self, ds, tag, rcpt="u@dest.test"):
        original = body(tag)
        code, resp = self.send(original, FROM, [rcpt])
        self.assertEqual(code, 250, resp)
        self.assertEqual(ds.wait_for(1, 15), 1, "not delivered")
        msg = ds.snapshot()[0]
        assert_relayed(self, msg, original, FROM, [rcpt])
        return msg

    def assert_held(self, original_ds, pattern, why):
        """Not delivered, not bounced: deferred, with `pattern` in the log."""
        self.assertTrue(self.relay.wait_log(pattern, 10), f"{why}: no {pattern!r} in the log")
        self.assertTrue(self.relay.wait_log(r"event=deferred .*rcpt=u@dest\.test", 5),
                        "the message was not deferred")
        time.sleep(1.5)
        self.assertEqual(original_ds.snapshot(), [], "delivered without the required TLS")
        self.assertNotRegex(self.relay.log_text(), r"event=(bounced|bounce_queued|delivered)")

    # -- opportunistic ------------------------------------------------------------------

    def test_opportunistic_is_the_default_and_upgrades(self):
        ds = self.tls_downstream("ip")
        self.relay_to_ip(None)
        msg = self.deliver_one(ds, "opportunistic")
        self.assertTrue(msg.tls, "the session was not upgraded with STARTTLS")
        self.assertTrue(msg.connection.tls)
        self.assertTrue(self.relay.wait_log(r"event=tls_out .*tls=\"?TLSv1\.[23]", 2))

    def test_opportunistic_does_not_check_the_certificate(self):
        ds = self.tls_downstream("wrong")
        self.relay_to_ip("opportunistic")
        msg = self.deliver_one(ds, "opp-wrong")
        self.assertTrue(msg.tls, "the session was not upgraded with STARTTLS")

    def test_opportunistic_without_starttls_goes_plain(self):
        ds = self.replace_downstream(self.downstream)   # no tls_context: no STARTTLS
        self.relay_to_ip("opportunistic")
        msg = self.deliver_one(ds, "opp-plain")
        self.assertFalse(msg.tls)

    # -- required -----------------------------------------------------------------------

    def test_required_with_verified_ip_certificate(self):
        ds = self.tls_downstream("ip")
        self.relay_to_ip("required")
        msg = self.deliver_one(ds, "required-ip")
        self.assertTrue(msg.tls, "required TLS, but delivered in plain text")

    def test_required_with_verified_mx_name(self):
        """MX delivery checks the certificate against the MX host's name (mx.test), the
        name the DNS gave, not against its address."""
        dns = DnsServer().start()
        self.addCleanup(dns.stop)
        dns.mx("secure.test", [(10, "mx.test")])
        dns.a("mx.test", HOST)
        ds = self.tls_downstream("name")
        self.start_relay(None, routes=[{"domain": "secure.test", "next_hop": "mx",
                                        "tls": "required", "allow_internal_mx": True}],
                         delivery={"ca_file": self.ca, "smtp_port": ds.port},
                         extra=f'[dns]\nservers = ["{dns.address()}"]\ntimeout = 0.5\n')
        msg = self.deliver_one(ds, "required-mx", rcpt="u@secure.test")
        self.assertTrue(msg.tls, "required TLS, but delivered in plain text")

    def test_required_wrong_name_is_deferred(self):
        ds = self.tls_downstream("wrong")
        self.relay_to_ip("required")
        code, resp = self.send(body("wrong-name"), FROM, ["u@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assert_held(ds, r"event=next_hop_error .*(certificate verify failed|mismatch)",
                         "certificate for the wrong name accepted")
        # Still queued: a next hop with the right certificate gets it.
        good = self.replace_downstream(ds, tls_context=self.server_context("ip"))
        self.assertEqual(good.wait_for(1, 15), 1, "the held message was not delivered")
        self.assertTrue(good.snapshot()[0].tls)

    def test_required_untrusted_ca_is_deferred(self):
        ds = self.tls_downstream("selfsigned")
        self.relay_to_ip("required")
        code, resp = self.send(body("untrusted"), FROM, ["u@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assert_held(ds, r"event=next_hop_error .*certificate verify failed",
                         "certificate from an unknown CA accepted")

    def test_required_but_not_offered_is_deferred_474(self):
        plain = self.replace_downstream(self.downstream)   # no STARTTLS offered
        self.relay_to_ip("required")
        code, resp = self.send(body("not-offered"), FROM, ["u@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assert_held(plain, r"event=deferred .*rcpt=u@dest\.test .*4\.7\.4",
                         "required TLS, not offered")
        self.assertGreaterEqual(len(plain.connections), 1, "the relay never connected")
        good = self.replace_downstream(plain, tls_context=self.server_context("ip"))
        self.assertEqual(good.wait_for(1, 15), 1, "the held message was not delivered")
        self.assertTrue(good.snapshot()[0].tls)

    # -- session resumption ---------------------------------------------------------------

    def assert_next_connections_resume(self, policy):
        """One message per connection: the first connection makes a full handshake, the
        next ones to the same hop resume its session (the relay's tls_out line says
        "resumed")."""
        ds = self.tls_downstream("ip")
        route = {"domain": "*", "next_hop": f"{HOST}:{ds.port}", "tls": policy,
                 "messages_per_connection": 1}
        self.start_relay(None, routes=[route], delivery={"ca_file": self.ca})
        for i in range(3):
            code, resp = self.send(body(f"{policy}-{i}"), FROM, [f"u{i}@dest.test"])
            self.assertEqual(code, 250, resp)
            self.assertEqual(ds.wait_for(i + 1, 15), i + 1, "not delivered")
        self.assertTrue(all(m.tls for m in ds.snapshot()))
        self.assertTrue(self.relay.wait_log(r"event=tls_out .*resumed", 5),
                        "no connection resumed a session")
        lines = [ln for ln in self.relay.log_text().splitlines() if "event=tls_out" in ln]
        self.assertEqual(len(lines), 3, lines)
        self.assertNotIn("resumed", lines[0])
        self.assertTrue(all("resumed" in ln for ln in lines[1:]), lines)

    def test_opportunistic_resumes_the_next_connection(self):
        self.assert_next_connections_resume("opportunistic")

    def test_required_resumes_the_next_connection(self):
        self.assert_next_connections_resume("required")

    # -- none ---------------------------------------------------------------------------

    def test_none_never_starts_tls(self):
        ds = self.tls_downstream("ip")
        self.relay_to_ip("none")
        msg = self.deliver_one(ds, "none")
        self.assertFalse(msg.tls, "tls = \"none\", but STARTTLS was used")
        self.assertFalse(any(c.tls for c in ds.connections), ds.connections)
        self.assertNotRegex(self.relay.log_text(), r"event=tls_out")


if __name__ == "__main__":
    unittest.main()
