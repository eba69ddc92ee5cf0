"""Inbound TLS: two certificates at once and session resumption (issue 14), with Python's
ssl as the client.

* [tls] certificate (RSA) and ecdsa_certificate: a client that accepts ECDSA signatures
  (every TLS 1.3 client Python makes) gets the ECDSA certificate; one limited to RSA
  cipher suites (TLS 1.2, ECDHE-RSA) gets the RSA one. Which one arrived is read from the
  DER the client received, compared with the files.
* Session tickets: a client that comes back with the session of its last connection
  resumes it (ssl's session_reused), on whichever worker it lands (2 workers, reuseport),
  and after a SIGHUP; not once session_lifetime has passed, and never with
  session_lifetime = 0. The relay's `tls` log line says "resumed".

Certificates are made per class with openssl(1); nothing is stored in the repo."""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

from harness import HOST, RelayTestCase, ReplyReader


def openssl_req(d, name, newkey):
    cert, key = os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-days", "1",
                    "-subj", f"/CN={name}.relay.test", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def der(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


class _TlsBase(RelayTestCase):
    auto_relay = False
    LIFETIME = None  # [tls] session_lifetime; None: the default

    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix="postern-tls-")
        cls.rsa = openssl_req(cls.certdir, "rsa", ["-newkey", "rsa:2048"])
        cls.ecdsa = openssl_req(cls.certdir, "ecdsa",
                                ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def tls_section(self):
        text = (f'[tls]\ncertificate = "{self.rsa[0]}"\nprivate_key = "{self.rsa[1]}"\n'
                f'ecdsa_certificate = "{self.ecdsa[0]}"\n'
                f'ecdsa_private_key = "{self.ecdsa[1]}"\n')
        if self.LIFETIME is not None:
            text += f"session_lifetime = {self.LIFETIME}\n"
        return text

    def setUp(self):
        RelayTestCase.setUp(self)
        self.start_relay(self.downstream.port, workers=2, extra=self.tls_section())

    def starttls(self, ctx, session=None):
        """A connection upgraded with STARTTLS and greeted again with EHLO: (tls socket,
        its reader). The EHLO reply comes after the server's ticket, so t.session is the
        one to resume with afterwards."""
        s = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(s.close)
        r = ReplyReader(s)
        self.assertEqual(r.reply()[0], 220)
        s.sendall(b"EHLO client.test\r\n")
        self.assertEqual(r.reply()[0], 250)
        s.sendall(b"STARTTLS\r\n")
        self.assertEqual(r.reply()[0], 220)
        t = ctx.wrap_socket(s, server_hostname="relay.test", session=session)
        self.addCleanup(t.close)
        tr = ReplyReader(t)
        t.sendall(b"EHLO client.test\r\n")
        self.assertEqual(tr.reply()[0], 250)
        return t, tr

    def quit(self, t, tr):
        t.sendall(b"QUIT\r\n")
        self.assertEqual(tr.reply()[0], 221)

    @staticmethod
    def client_context():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx


class DualCertificateTest(_TlsBase):
    def test_ecdsa_certificate_to_a_client_that_accepts_it(self):
        t, tr = self.starttls(self.client_context())
        self.assertEqual(t.version(), "TLSv1.3")
        self.assertEqual(t.getpeercert(binary_form=True), der(self.ecdsa[0]))
        self.quit(t, tr)

    def test_rsa_certificate_to_a_client_limited_to_rsa(self):
        ctx = self.client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
        t, tr = self.starttls(ctx)
        self.assertEqual(t.getpeercert(binary_form=True), der(self.rsa[0]))
        # And mail goes through on it.
        t.sendall(b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n")
        self.assertEqual([c for c, _ in tr.replies(3)], [250, 250, 354])
        t.sendall(b"Subject: rsa\r\n\r\nover rsa\r\n.\r\n")
        self.assertEqual(tr.reply()[0], 250)
        self.quit(t, tr)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)


class ResumptionTest(_TlsBase):
    def first_session(self, ctx):
        t, tr = self.starttls(ctx)
        self.assertFalse(t.session_reused)
        session = t.session
        self.quit(t, tr)
        self.assertIsNotNone(session)
        self.assertTrue(session.has_ticket, "the relay sent no session ticket")
        return session

    def test_returning_client_resumes_on_every_worker(self):
        ctx = self.client_context()
        session = self.first_session(ctx)
        # Eight connections over 2 workers (reuseport spreads them): had each worker keys of
        # its own, about half would not resume.
        for i in range(8):
            t, tr = self.starttls(ctx, session=session)
            self.assertTrue(t.session_reused, f"connection {i} made a full handshake")
            session = t.session
            self.quit(t, tr)
        self.assertTrue(self.relay.wait_log(r"event=tls .*resumed", 5))
        # Mail goes through a resumed session like any other.
        t, tr = self.starttls(ctx, session=session)
        self.assertTrue(t.session_reused)
        t.sendall(b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n")
        self.assertEqual([c for c, _ in tr.replies(3)], [250, 250, 354])
        t.sendall(b"Subject: resumed\r\n\r\nresumed\r\n.\r\n")
        self.assertEqual(tr.reply()[0], 250)
        self.quit(t, tr)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)

    def test_session_survives_a_reload(self):
        ctx = self.client_context()
        session = self.first_session(ctx)
        before = self.relay.log_text().count("event=config_reloaded")
        self.relay.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.relay.log_text().count("event=config_reloaded") <= before:
            self.assertLess(time.monotonic(), deadline, "no config_reloaded after SIGHUP")
            time.sleep(0.05)
        t, tr = self.starttls(ctx, session=session)
        self.assertTrue(t.session_reused, "the reload forgot the ticket keys")
        self.quit(t, tr)

    def test_a_stranger_ticket_is_a_full_handshake(self):
        # A session from another relay (other keys) is not resumed, and does no harm.
        other = _OtherRelay()
        ctx = self.client_context()
        session = self.first_session(ctx)
        t, tr = other.starttls_from(self, ctx, session)
        self.assertFalse(t.session_reused)
        self.quit(t, tr)


class _OtherRelay:
    """Starts a second relay with the same certificates (and keys of its own)."""

    def starttls_from(self, test, ctx, session):
        from harness import Relay
        relay = Relay(test.downstream.port, workers=1, extra=test.tls_section())
        relay.start()
        test.addCleanup(relay.stop)
        saved, test.relay = test.relay, relay
        try:
            return test.starttls(ctx, session=session)
        finally:
            test.relay = saved


class ShortLifetimeTest(_TlsBase):
    LIFETIME = 1

    def test_no_resumption_once_the_lifetime_has_passed(self):
        ctx = self.client_context()
        t, tr = self.starttls(ctx)
        session = t.session
        self.quit(t, tr)
        t, tr = self.starttls(ctx, session=session)
        self.assertTrue(t.session_reused, "resumption within the lifetime failed")
        session = t.session
        self.quit(t, tr)
        time.sleep(2.5)
        t, tr = self.starttls(ctx, session=session)
        self.assertFalse(t.session_reused, "a session older than session_lifetime resumed")
        self.quit(t, tr)


class NoTicketsTest(_TlsBase):
    LIFETIME = 0

    def test_lifetime_zero_sends_no_ticket(self):
        ctx = self.client_context()
        t, tr = self.starttls(ctx)
        session = t.session
        self.quit(t, tr)
        self.assertFalse(session is not None and session.has_ticket, "a ticket was sent")
        t, tr = self.starttls(ctx, session=session)
        self.assertFalse(t.session_reused)
        self.quit(t, tr)


if __name__ == "__main__":
    unittest.main()
