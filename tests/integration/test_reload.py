"""SIGHUP reload against the real binary (relay/reload.h): routes, relay control, limits
and the STARTTLS certificate change for new connections and new delivery attempts, open
connections are not dropped and keep the rules they started with, a reload that does not
load keeps the running configuration and says why, and settings that need a restart are
named and left as they are. Two workers, so that every worker has to take the reload."""

import os
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from harness import HOST, RelayTestCase, ReplyReader, free_port

MSG = b"Subject: reload\r\n\r\nbody\r\n"
# About 5.7 KB in lines of 72 octets.
BIG = MSG + (b"x" * 70 + b"\r\n") * 80


def make_cert(tmp, name, cn):
    cert, key = os.path.join(tmp, f"{name}.pem"), os.path.join(tmp, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={cn}", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


class _ReloadBase(RelayTestCase):
    auto_relay = False

    def reload(self, text, event="config_reloaded"):
        """Writes the config file, sends SIGHUP and waits (bounded) for the next `event`."""
        rx = re.compile(rf"event={event}\b")
        before = len(rx.findall(self.relay.log_text()))
        with open(self.relay.config_path, "w") as f:
            f.write(text)
        self.relay.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while len(rx.findall(self.relay.log_text())) <= before:
            self.assertLess(time.monotonic(), deadline, f"no {event} line after SIGHUP")
            self.assertTrue(self.relay.running(), "the relay exited on SIGHUP")
            time.sleep(0.05)
        return self.relay.log_text()

    def reload_metrics(self):
        """{"ok": n, "failed": n, "loaded": unix seconds} from /metrics."""
        with urllib.request.urlopen(f"http://{HOST}:{self.relay.admin_port}/metrics",
                                    timeout=5) as r:
            text = r.read().decode()
        out = {}
        for f in text_string_to_metric_families(text):
            for s in f.samples:
                if s.name == "postern_config_reloads_total":
                    out[s.labels["result"]] = s.value
                elif s.name == "postern_config_loaded_timestamp_seconds":
                    out["loaded"] = s.value
        return out

    def ehlo_lines(self):
        with self.relay.client() as s:
            code, text = s.ehlo("client.test")
            self.assertEqual(code, 250)
            return s.greeting[1], text.decode()


class RoutesAndRelayControlTest(_ReloadBase):
    def test_new_rules_for_new_connections_open_ones_kept(self):
        other = self.add_downstream()
        self.start_relay(self.downstream.port, workers=2, hostname="old.test")
        base = self.relay.config_text
        held = self.relay.client()
        self.addCleanup(held.close)
        self.assertEqual(held.ehlo("client.test")[0], 250)

        # 127.0.0.1 stops being a relay client, new.test becomes an accepted domain routed
        # to the other downstream, and the hostname changes.
        new = (base.replace('relay_networks = ["127.0.0.1/32"]', "relay_networks = []")
                   .replace('accept_domains = ["accepted.test"]',
                            'accept_domains = ["accepted.test", "new.test"]')
                   .replace('hostname = "old.test"', 'hostname = "new.test"')
                   .replace("[[route]]\n",
                            f'[[route]]\ndomain = "new.test"\nnext_hop = "{HOST}:{other.port}"'
                            "\n\n[[route]]\n", 1))
        self.assertNotEqual(new, base)
        self.reload(new)

        # The connection opened before the reload is still up and keeps its rules: it may
        # still relay to any domain.
        self.assertEqual(held.noop()[0], 250)
        self.assertEqual(held.mail("s@origin.test")[0], 250)
        self.assertEqual(held.rcpt("r@anywhere.example")[0], 250)
        self.assertEqual(held.data(MSG)[0], 250)
        self.assertEqual(held.quit()[0], 221)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)

        # New connections (whichever worker takes them) get the new configuration.
        for _ in range(4):
            with self.relay.client() as s:
                self.assertIn(b"new.test", s.greeting[1])
                s.ehlo("client.test")
                self.assertEqual(s.mail("s@origin.test")[0], 250)
                code, text = s.rcpt("r@anywhere.example")
                self.assertEqual(code, 554, text)
                self.assertIn(b"5.7.1", text)
                self.assertEqual(s.rcpt("r@new.test")[0], 250)
                self.assertEqual(s.data(MSG)[0], 250)
        # new.test goes by the new route.
        self.assertEqual(other.wait_for(4, 15), 4)
        self.assertEqual(self.downstream.wait_for(1, 1), 1)

    def test_waiting_mail_takes_the_new_next_hop(self):
        # The "*" route points at a port where nothing listens: the message waits.
        dead = free_port()
        self.start_relay(dead, workers=2)
        base = self.relay.config_text
        with self.relay.client() as s:
            s.sendmail("s@origin.test", ["r@dest.example"], MSG)
        self.assertTrue(self.relay.wait_log(r"event=(deferred|next_hop_down)", 15))
        self.reload(base.replace(f"{HOST}:{dead}", f"{HOST}:{self.downstream.port}"))
        # retry_min is 1 s in the harness: the next attempt goes to the new next hop.
        self.assertEqual(self.downstream.wait_for(1, 15), 1)

    def test_message_on_a_retired_next_hop_finishes_there(self):
        """The "*" route moves while a message is on a connection to the old next hop:
        that message finishes there (delivered once), the connection then ends at once
        (idle_timeout is 30 s: only the retirement closes it), and new mail goes to the
        new next hop."""
        slow = self.add_downstream(data_delay=2.0)
        new_hop = self.add_downstream()
        self.start_relay(slow.port, idle_timeout=30)
        base = self.relay.config_text
        with self.relay.client() as s:
            s.sendmail("s@origin.test", ["first@dest.example"], MSG)
        self.assertEqual(slow.wait_connections(1, 10), 1)
        time.sleep(0.5)  # the body is sent; the old next hop sits on its reply
        self.reload(base.replace(f"{HOST}:{slow.port}", f"{HOST}:{new_hop.port}"))
        self.assertIn("event=next_hop_retired", self.relay.log_text())
        with self.relay.client() as s:
            s.sendmail("s@origin.test", ["second@dest.example"], MSG)
        self.assertEqual(new_hop.wait_for(1, 15), 1)
        self.assertEqual(slow.wait_for(1, 15), 1)
        deadline = time.monotonic() + 5
        while slow.connections[0].closed is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIsNotNone(slow.connections[0].closed, "the retired connection stayed open")
        time.sleep(1)
        self.assertEqual([m.rcpt_tos for m in slow.snapshot()], [["first@dest.example"]])
        self.assertEqual([m.rcpt_tos for m in new_hop.snapshot()], [["second@dest.example"]])
        self.assertEqual(len(slow.connections), 1)

class LimitsTest(_ReloadBase):
    def test_limits_apply_to_new_connections(self):
        self.start_relay(self.downstream.port, workers=2,
                         extra="[limits]\nmessage_size = 100000\nrecipients = 5\n")
        base = self.relay.config_text
        held = self.relay.client()
        self.addCleanup(held.close)
        held.ehlo("client.test")
        self.reload(base.replace("message_size = 100000", "message_size = 2000")
                        .replace("recipients = 5", "recipients = 1"))
        # Old connection: old limits.
        self.assertEqual(held.mail("s@origin.test")[0], 250)
        self.assertEqual(held.rcpt("a@dest.example")[0], 250)
        self.assertEqual(held.rcpt("b@dest.example")[0], 250)
        self.assertEqual(held.data(BIG)[0], 250)
        held.quit()
        # New connection: SIZE advertises the new limit, and both limits hold.
        with self.relay.client() as s:
            code, text = s.ehlo("client.test")
            self.assertIn(b"SIZE 2000", text)
            self.assertEqual(s.mail("s@origin.test")[0], 250)
            self.assertEqual(s.rcpt("a@dest.example")[0], 250)
            code, text = s.rcpt("b@dest.example")
            self.assertEqual(code, 452, text)
            code, text = s.data(BIG)
            self.assertEqual(code, 552, text)

    def test_connection_limit_per_ip(self):
        self.start_relay(self.downstream.port, workers=2,
                         extra="[limits]\nconnections_per_ip = 10\n")
        base = self.relay.config_text
        self.reload(base.replace("connections_per_ip = 10", "connections_per_ip = 1"))
        first = self.relay.client()
        self.addCleanup(first.close)
        self.assertEqual(first.noop()[0], 250)
        s = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(s.close)
        code, lines = ReplyReader(s).reply()
        self.assertEqual(code, 421, lines)


class CertificateTest(_ReloadBase):
    def setUp(self):
        super().setUp()
        self.certdir = tempfile.mkdtemp(prefix="postern-cert-")
        self.cert = os.path.join(self.certdir, "cert.pem")
        self.key = os.path.join(self.certdir, "key.pem")
        self.install_cert("first.test")

    def install_cert(self, cn):
        cert, key = make_cert(self.certdir, cn, cn)
        os.replace(cert, self.cert)
        os.replace(key, self.key)

    def starttls(self):
        s = socket.create_connection((HOST, self.relay.port), timeout=10)
        self.addCleanup(s.close)
        r = ReplyReader(s)
        self.assertEqual(r.reply()[0], 220)
        s.sendall(b"EHLO client.test\r\n")
        self.assertEqual(r.reply()[0], 250)
        s.sendall(b"STARTTLS\r\n")
        self.assertEqual(r.reply()[0], 220)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        t = ctx.wrap_socket(s, server_hostname="relay.test")
        self.addCleanup(t.close)
        der = t.getpeercert(binary_form=True)
        pem = ssl.DER_cert_to_PEM_cert(der)
        subject = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem.encode(),
                                 capture_output=True, check=True).stdout.decode()
        return t, ReplyReader(t), subject

    def test_renewed_certificate_is_served_after_sighup(self):
        self.start_relay(self.downstream.port, workers=2,
                         extra=f'[tls]\ncertificate = "{self.cert}"\nprivate_key = "{self.key}"\n')
        old_tls, old_reader, subject = self.starttls()
        self.assertIn("first.test", subject)
        # Renewed in place (same paths), as certbot or cert-manager do.
        self.install_cert("second.test")
        self.reload(self.relay.config_text)
        for _ in range(3):
            t, r, subject = self.starttls()
            self.assertIn("second.test", subject)
            t.sendall(b"QUIT\r\n")
            self.assertEqual(r.reply()[0], 221)
        # The TLS session from before the reload still works.
        old_tls.sendall(b"EHLO client.test\r\n")
        self.assertEqual(old_reader.reply()[0], 250)
        old_tls.sendall(b"MAIL FROM:<s@origin.test>\r\nRCPT TO:<r@dest.example>\r\nDATA\r\n")
        self.assertEqual([c for c, _ in old_reader.replies(3)], [250, 250, 354])
        old_tls.sendall(MSG + b".\r\n")
        self.assertEqual(old_reader.reply()[0], 250)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)

    def test_unreadable_certificate_refuses_the_reload(self):
        self.start_relay(self.downstream.port, workers=2,
                         extra=f'[tls]\ncertificate = "{self.cert}"\nprivate_key = "{self.key}"\n')
        missing = os.path.join(self.certdir, "missing.pem")
        log = self.reload(self.relay.config_text.replace(self.cert, missing), "reload_failed")
        self.assertIn("tls:", log.split("event=reload_failed")[-1].splitlines()[0])
        self.assertNotIn("event=config_reloaded", log)
        _, _, subject = self.starttls()
        self.assertIn("first.test", subject)


class FailedReloadTest(_ReloadBase):
    def test_invalid_file_keeps_the_running_configuration(self):
        self.start_relay(self.downstream.port, workers=2, hostname="old.test")
        started = self.reload_metrics()
        self.assertEqual((started["ok"], started["failed"]), (0, 0))
        self.assertLess(abs(started["loaded"] - time.time()), 60)
        base = self.relay.config_text
        broken = base.replace('hostname = "old.test"', 'hostname = "new.test"\nhostnme = "x"')
        log = self.reload(broken, "reload_failed")
        self.assertEqual(self.reload_metrics(), {**started, "failed": 1})
        line = log.split("event=reload_failed")[-1].splitlines()[0]
        # Names the key and its line (the unknown key is on line 3).
        self.assertIn("hostnme", line)
        self.assertRegex(line, r"postern\.toml:3")
        self.assertNotIn("event=config_reloaded", log)
        # Still the old configuration, and still relaying.
        self.assertIn(b"old.test", self.ehlo_lines()[0])
        with self.relay.client() as s:
            s.sendmail("s@origin.test", ["r@dest.example"], MSG)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        # A good file afterwards is taken.
        time.sleep(0.01)
        self.reload(base.replace('hostname = "old.test"', 'hostname = "new.test"'))
        self.assertIn(b"new.test", self.ehlo_lines()[0])
        after = self.reload_metrics()
        self.assertEqual((after["ok"], after["failed"]), (1, 1))
        self.assertGreater(after["loaded"], started["loaded"])

    def test_longer_lines_than_at_start_need_a_restart(self):
        self.start_relay(self.downstream.port, extra="[limits]\ncommand_line = 2048\n")
        log = self.reload(self.relay.config_text.replace("command_line = 2048",
                                                         "command_line = 65536"),
                          "reload_failed")
        self.assertIn("limits.command_line", log.split("event=reload_failed")[-1])


class FixedSettingsTest(_ReloadBase):
    def test_settings_that_need_a_restart_are_named_and_kept(self):
        self.start_relay(self.downstream.port, workers=2)
        base = self.relay.config_text
        moved = free_port()
        changed = (base.replace("workers = 2", "workers = 1")
                       .replace(f'address = "{HOST}:{self.relay.port}"',
                                f'address = "{HOST}:{moved}"')
                       .replace('hostname = "relay.test"', 'hostname = "renamed.test"'))
        log = self.reload(changed)
        line = log.split("event=reload_restart_required")[-1].splitlines()[0]
        self.assertIn("server.workers", line)
        self.assertIn("listener", line)
        # The listener stays where it was; the reloadable hostname did change.
        self.assertIn(b"renamed.test", self.ehlo_lines()[0])
        with self.assertRaises(OSError):
            socket.create_connection((HOST, moved), timeout=2).close()


if __name__ == "__main__":
    unittest.main()


class ReloadOnChangeTest(_ReloadBase):
    """[server] reload_on_change: a change of the file reloads it without a signal, once
    it has stayed the same through the next check."""

    def write_by_rename(self, text):
        tmp = self.relay.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.relay.config_path)

    def count(self, event):
        return len(re.findall(rf"event={event}\b", self.relay.log_text()))

    def wait_count(self, event, n, timeout=10):
        deadline = time.monotonic() + timeout
        while self.count(event) < n:
            self.assertLess(time.monotonic(), deadline, f"fewer than {n} {event} lines")
            time.sleep(0.05)

    def test_a_changed_file_is_reloaded_and_a_half_written_one_is_not(self):
        self.start_relay(self.downstream.port,
                         server={"reload_on_change": True, "reload_check_interval": 0.2})
        base = self.relay.config_text
        with self.relay.client(source_ip="127.0.0.9") as s:
            s.ehlo("outside.test")
            s.mail("x@outside.test")
            self.assertEqual(s.rcpt("u@later.test")[0], 554)  # not accepted yet

        # Replaced by a rename, as a ConfigMap update does: reloaded, no signal sent.
        self.write_by_rename(base.replace('accept_domains = ["accepted.test"]',
                                          'accept_domains = ["accepted.test", "later.test"]'))
        self.wait_count("config_reloaded", 1)
        self.assertEqual(self.count("config_changed"), 1)
        with self.relay.client(source_ip="127.0.0.9") as s:
            s.ehlo("outside.test")
            s.mail("x@outside.test")
            self.assertEqual(s.rcpt("u@later.test")[0], 250)

        # Rewritten in place, in two writes: the first half alone (up to [relay]) would be
        # a valid configuration with defaults for the rest. Only the finished file is
        # loaded, once.
        half = base[:base.index("[relay]")]
        self.assertIn("[[listener]]", half)
        with open(self.relay.config_path, "w") as f:
            f.write(half)
            f.flush()
            time.sleep(0.1)
            f.write(base[len(half):])
        self.wait_count("config_reloaded", 2)
        time.sleep(1.5)  # checks go on: nothing more to reload
        self.assertEqual((self.count("config_changed"), self.count("config_reloaded"),
                          self.count("reload_failed")), (2, 2, 0))
        with self.relay.client(source_ip="127.0.0.9") as s:
            s.ehlo("outside.test")
            s.mail("x@outside.test")
            self.assertEqual(s.rcpt("u@later.test")[0], 554)

        # A file that does not load is refused as a whole; the running one stays.
        self.write_by_rename(base + "\n[server]\nbogus = 1\n")
        self.wait_count("reload_failed", 1)
        self.assertEqual(self.reload_metrics()["failed"], 1)
        self.assertTrue(self.relay.running())
