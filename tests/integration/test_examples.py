"""The recipes' configs (deploy/examples/*.toml, docs/recipes.md) run for real.

Each example is used as shipped, with only what points outside this machine rewritten:
listen and next-hop addresses to loopback ports, the spool to a temp directory, file
paths to files made here, and (outbound-mx) the DNS server and MX port to ours, with
allow_internal_mx on the MX route since our MX hosts are on loopback. Every rewrite must
find its text, so an edited example fails here instead of silently going untested.

Then what each recipe promises: the inbound MX takes mail for its domain, refuses an
unknown recipient and relaying; the smarthost relays for its networks only; the
outbound relay delivers by MX and keeps the partner domain to verified TLS."""

import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import unittest

from dns_server import DnsServer
from harness import (HOST, Downstream, free_port, free_ports, postern_bin, require_binary,
                     wait_port)
from milter_server import MilterServer, strings

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLES = os.path.join(ROOT, "deploy", "examples")
BODY = b"Subject: recipe\r\n\r\nhello\r\n"


class ExampleTest(unittest.TestCase):

    def setUp(self):
        require_binary()
        self.tmp = tempfile.mkdtemp(prefix="postern-example-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.proc = None

    def downstream(self, **kwargs):
        ds = Downstream(**kwargs)
        ds.start()
        self.addCleanup(ds.stop)
        return ds

    def run_example(self, name, rewrites):
        """Writes deploy/examples/NAME with each (old, new) rewrite applied (each must
        match), checks it with check-config and starts the relay; returns its port."""
        with open(os.path.join(EXAMPLES, name)) as f:
            text = f.read()
        port, admin = free_ports(2)
        rewrites = list(rewrites) + [
            ('spool_dir = "/var/spool/postern"', f'spool_dir = "{self.tmp}/spool"')]
        for old, new in rewrites:
            self.assertIn(old, text, f"{name} no longer has {old!r}")
            text = text.replace(old, new.replace("PORT", str(port)))
        text += f'\n[admin]\naddress = "{HOST}:{admin}"\n'
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        check = subprocess.run([postern_bin(), "check-config", path], capture_output=True,
                               text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.log = open(os.path.join(self.tmp, "log"), "wb")
        self.addCleanup(self.log.close)
        self.proc = subprocess.Popen([postern_bin(), "--config", path], stderr=self.log)
        self.addCleanup(self.stop)
        self.assertTrue(wait_port(HOST, port, 10), self.log_text())
        return port

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.assertEqual(self.proc.wait(15), 0, self.log_text())

    def log_text(self):
        with open(os.path.join(self.tmp, "log"), "rb") as f:
            return f.read().decode(errors="replace")

    def rcpt(self, port, rcpt, mail_from="app@example.com"):
        with smtplib.SMTP(HOST, port, timeout=15) as s:
            s.ehlo("client.test")
            s.mail(mail_from)
            code, text = s.rcpt(rcpt)
            if code == 250:
                code, text = s.data(BODY)
            return code, text.decode()

    def self_signed(self, cn):
        cert, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        f"/CN={cn}", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        return cert, key

    def test_inbound_mx(self):
        mailbox = self.downstream()
        cert, key = self.self_signed("mx1.example.com")
        recipients = os.path.join(self.tmp, "recipients")
        with open(recipients, "w") as f:
            f.write("alice@example.com\n")
        milter = MilterServer({"E": [("h", strings("X-Spam", "no")), ("c", b"")]})
        self.addCleanup(milter.stop)
        port = self.run_example("inbound-mx.toml", [
            ('"inet:127.0.0.1:11332"', f'"{milter.address}"'),
            ('address = "0.0.0.0:25"', f'address = "{HOST}:PORT"'),
            ('"/etc/postern/tls/mx1.example.com.pem"', f'"{cert}"'),
            ('"/etc/postern/tls/mx1.example.com.key"', f'"{key}"'),
            ('"/etc/postern/recipients"', f'"{recipients}"'),
            ('"mailbox.internal.example.com:25"', f'"{HOST}:{mailbox.port}"')])
        self.assertEqual(self.rcpt(port, "alice@example.com", "someone@far.test")[0], 250)
        self.assertEqual(mailbox.wait_for(1, 10), 1)
        self.assertEqual(mailbox.snapshot()[0].rcpt_tos, ["alice@example.com"])
        self.assertIn(b"X-Spam: no\r\n", mailbox.snapshot()[0].data)
        code, text = self.rcpt(port, "nobody@example.com", "someone@far.test")
        self.assertEqual(code, 550, text)
        self.assertIn("5.1.1", text)
        # Loopback is not a relay network here: relaying is refused to everyone.
        code, text = self.rcpt(port, "victim@elsewhere.test", "someone@far.test")
        self.assertEqual(code, 554, text)
        with smtplib.SMTP(HOST, port, timeout=15) as s:
            self.assertIn("starttls", s.ehlo("client.test")[1].decode().lower())

    def test_smarthost(self):
        gateway = self.downstream()
        port = self.run_example("smarthost.toml", [
            ('address = "10.0.0.25:25"', f'address = "{HOST}:PORT"'),
            ('"gateway.internal.example.com:25"', f'"{HOST}:{gateway.port}"')])
        # 127.0.0.0/8 is among its relay networks: mail to anywhere goes to the gateway.
        self.assertEqual(self.rcpt(port, "customer@far.test")[0], 250)
        self.assertEqual(gateway.wait_for(1, 10), 1)
        self.assertEqual(gateway.snapshot()[0].rcpt_tos, ["customer@far.test"])

    def test_smarthost_relays_for_its_networks_only(self):
        gateway = self.downstream()
        port = self.run_example("smarthost.toml", [
            ('address = "10.0.0.25:25"', f'address = "{HOST}:PORT"'),
            ('"127.0.0.0/8", ', ""),   # loopback out of relay_networks: we are outside
            ('"gateway.internal.example.com:25"', f'"{HOST}:{gateway.port}"')])
        code, text = self.rcpt(port, "customer@far.test")
        self.assertEqual(code, 554, text)

    def test_outbound_mx(self):
        dns = DnsServer().start()
        self.addCleanup(dns.stop)
        smtp_port = free_port()
        mx = self.downstream(host="127.0.0.2", port=smtp_port)
        dns.mx("far.test", [(10, "mx.far.test")])
        dns.a("mx.far.test", "127.0.0.2")
        dns.mx("partner.example", [(10, "mx.partner.example")])
        dns.a("mx.partner.example", "127.0.0.2")
        port = self.run_example("outbound-mx.toml", [
            ('address = "10.0.0.26:25"', f'address = "{HOST}:PORT"'),
            ('next_hop = "mx"                   # MX lookup',
             'next_hop = "mx"\nallow_internal_mx = true  # MX lookup'),
            ('tls      = "required"', 'tls      = "required"\nallow_internal_mx = true'),
            ("connections_per_host = 5",
             f"connections_per_host = 5\nsmtp_port = {smtp_port}\nretry_min = 30\n"
             f'[dns]\nservers = ["{dns.address()}"]\ntimeout = 0.5')])
        self.assertEqual(self.rcpt(port, "someone@far.test")[0], 250)
        self.assertEqual(mx.wait_for(1, 10), 1)
        self.assertEqual(mx.snapshot()[0].rcpt_tos, ["someone@far.test"])
        # The partner's MX offers no STARTTLS: tls = "required" keeps the mail queued.
        self.assertEqual(self.rcpt(port, "buyer@partner.example")[0], 250)
        deadline = time.monotonic() + 10
        while "rcpt=buyer@partner.example" not in self.log_text():
            self.assertLess(time.monotonic(), deadline, self.log_text())
            time.sleep(0.1)
        self.assertRegex(self.log_text(), r"event=deferred id=\w+ rcpt=buyer@partner\.example")
        self.assertEqual(len(mx.snapshot()), 1)


if __name__ == "__main__":
    unittest.main()
