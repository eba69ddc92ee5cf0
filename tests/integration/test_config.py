"""Start-up configuration handling: missing or invalid configs fail loudly, check-config,
--spool-dir, and the JSON log format."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import HOST, Downstream, Relay, assert_relayed, free_port, port_accepts, \
    require_binary


def good_config(tmp, port, next_hop_port):
    return (
        "[server]\n"
        'hostname = "relay.test"\n'
        "workers = 1\n"
        f'spool_dir = "{tmp}/spool"\n'
        "\n"
        "[[listener]]\n"
        f'address = "{HOST}:{port}"\n'
        "\n"
        "[relay]\n"
        'relay_networks = ["127.0.0.1/32"]\n'
        'accept_domains = ["accepted.test"]\n'
        "\n"
        "[[route]]\n"
        'domain = "*"\n'
        f'next_hop = "{HOST}:{next_hop_port}"\n'
        "\n"
        "[delivery]\n"
        "retry_min = 1\n"
        "retry_max = 2\n"
        "idle_timeout = 1\n"
        "\n"
        "[admin]\n"
        f'address = "{HOST}:{free_port()}"\n'
    )


class ConfigTest(unittest.TestCase):

    def setUp(self):
        self.bin = require_binary()
        self.tmp = tempfile.mkdtemp(prefix="postern-it-config-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.port = free_port()

    def run_postern(self, *args, timeout=10):
        try:
            proc = subprocess.run([self.bin, *args], stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, cwd=self.tmp)
        except subprocess.TimeoutExpired as e:
            self.fail(f"postern {' '.join(args)} still running after {timeout} s "
                      f"(expected it to exit); stderr: {(e.stderr or b'').decode(errors='replace')}")
        return proc.returncode, proc.stdout.decode(errors="replace"), \
            proc.stderr.decode(errors="replace")

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_missing_config_file(self):
        path = os.path.join(self.tmp, "does-not-exist.toml")
        rc, out, err = self.run_postern("--config", path)
        self.assertNotEqual(rc, 0, f"stdout: {out}\nstderr: {err}")
        self.assertIn(path, err)
        self.assertFalse(port_accepts(HOST, self.port))

    def test_unknown_key_named_with_line(self):
        text = good_config(self.tmp, self.port, free_port())
        # Insert a misspelt key as line 3 of the file (inside [server]).
        lines = text.split("\n")
        lines.insert(2, 'hostnme = "x"')
        path = self.write("bad.toml", "\n".join(lines))
        rc, out, err = self.run_postern("--config", path)
        self.assertNotEqual(rc, 0, f"stdout: {out}\nstderr: {err}")
        self.assertIn("hostnme", err)
        self.assertRegex(err, re.escape(path) + r":3\b", "error does not name file:line")
        self.assertFalse(port_accepts(HOST, self.port), "relay started despite a bad config")

    def test_unknown_key_minimal_file(self):
        path = self.write("minimal-bad.toml", '[server]\nhostnme = "x"\n')
        rc, out, err = self.run_postern("--config", path)
        self.assertNotEqual(rc, 0, f"stdout: {out}\nstderr: {err}")
        self.assertIn("hostnme", err)
        self.assertRegex(err, re.escape(path) + r":2\b")

    def test_wrong_type_named(self):
        text = good_config(self.tmp, self.port, free_port()).replace(
            "workers = 1", 'workers = "many"')
        path = self.write("badtype.toml", text)
        line = text.split("\n").index('workers = "many"') + 1
        rc, out, err = self.run_postern("--config", path)
        self.assertNotEqual(rc, 0, f"stdout: {out}\nstderr: {err}")
        self.assertIn("workers", err)
        self.assertRegex(err, re.escape(path) + rf":{line}\b")

    def test_toml_syntax_error(self):
        path = self.write("syntax.toml", '[server]\nhostname = "relay.test\n')
        rc, out, err = self.run_postern("--config", path)
        self.assertNotEqual(rc, 0, f"stdout: {out}\nstderr: {err}")
        self.assertIn(path, err)

    def test_check_config_good(self):
        path = self.write("good.toml", good_config(self.tmp, self.port, free_port()))
        rc, out, err = self.run_postern("check-config", path)
        self.assertEqual(rc, 0, f"stdout: {out}\nstderr: {err}")
        self.assertFalse(port_accepts(HOST, self.port), "check-config must not listen")

    def test_check_config_bad(self):
        path = self.write("bad.toml", '[server]\nhostnme = "x"\n')
        rc, out, err = self.run_postern("check-config", path)
        self.assertNotEqual(rc, 0, f"stdout: {out}\nstderr: {err}")
        self.assertIn("hostnme", out + err)

    def test_check_config_missing(self):
        path = os.path.join(self.tmp, "nope.toml")
        rc, out, err = self.run_postern("check-config", path)
        self.assertNotEqual(rc, 0, f"stdout: {out}\nstderr: {err}")
        self.assertIn(path, out + err)


    def test_check_config_reads_the_files_it_names(self):
        """A certificate, key or CA file that cannot be read is an invalid configuration:
        check-config and a start both refuse it with exit status 2, naming the key."""
        base = good_config(self.tmp, self.port, free_port())
        missing = os.path.join(self.tmp, "missing.pem")
        cases = {
            "tls": base + f'\n[tls]\ncertificate = "{missing}"\nprivate_key = "{missing}"\n',
            "delivery.ca_file": base.replace(
                "[delivery]\n", f'[delivery]\nca_file = "{missing}"\n').replace(
                'next_hop = "', 'tls = "required"\nnext_hop = "'),
            "admin.token_file": base.replace(
                "[admin]\n", f'[admin]\ntoken_file = "{missing}"\n'),
        }
        for key, text in cases.items():
            path = self.write(f"{key}.toml", text)
            for argv in (["check-config", path], ["--config", path]):
                rc, out, err = self.run_postern(*argv)
                self.assertEqual(rc, 2, f"{argv}: stdout: {out}\nstderr: {err}")
                self.assertIn(key + ":", err)
                self.assertIn(missing, err)
        self.assertFalse(port_accepts(HOST, self.port))

class SpoolDirOverrideTest(unittest.TestCase):

    def test_spool_dir_flag_overrides_config(self):
        ds = Downstream()  # not started: the message stays in the spool
        override = tempfile.mkdtemp(prefix="postern-it-spool-")
        self.addCleanup(shutil.rmtree, override, ignore_errors=True)
        relay = Relay(ds.port, spool_override=override)
        self.addCleanup(relay.cleanup)
        relay.start()
        body = b"Subject: where is my spool\r\n\r\nbody\r\n"
        with relay.client() as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail("a@origin.test", ["b@dest.test"], body), {})
        relay.kill9()
        files = [os.path.join(d, f) for d, _, fs in os.walk(override) for f in fs]
        self.assertTrue(any(os.path.getsize(f) > 0 for f in files),
                        f"nothing written under --spool-dir {override}: {files}\n"
                        f"{relay.log_text()}")
        config_spool = relay.spool_dir
        written = [f for d, _, fs in os.walk(config_spool) for f in fs] \
            if os.path.isdir(config_spool) else []
        self.assertEqual(written, [], "config spool_dir used despite --spool-dir")
        # The override spool is the one recovered from.
        ds.start()
        self.addCleanup(ds.stop)
        relay.restart()
        self.assertEqual(ds.wait_for(1, 15), 1, relay.log_text())
        assert_relayed(self, ds.messages[0], body, "a@origin.test", ["b@dest.test"])
        relay.stop()


class JsonLogTest(unittest.TestCase):
    """log_format = "json": every line the relay writes is one JSON object with a UTC
    timestamp, level and event (escaping is tests/core/log_test.cc's); the accepted and
    delivered events carry their fields, and the message body is never logged."""

    def test_every_line_is_a_json_object_without_the_body(self):
        ds = Downstream()
        ds.start()
        self.addCleanup(ds.stop)
        relay = Relay(ds.port, server={"log_format": "json"})
        self.addCleanup(relay.cleanup)
        relay.start()
        secret = b"body-text-that-must-not-be-logged"
        with relay.client() as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail("a@origin.test", ["b@dest.test"],
                                        b"Subject: json\r\nMessage-ID: <j1@origin.test>\r\n"
                                        b"\r\n" + secret + b"\r\n"), {})
        self.assertEqual(ds.wait_for(1, 15), 1)
        self.assertTrue(relay.wait_log(r'"event":"delivered"', 10))
        self.assertEqual(relay.stop(), 0)
        raw = open(relay.log_path, "rb").read()
        self.assertNotIn(secret, raw)
        events = []
        for line in raw.decode("utf-8").splitlines():  # strict: must be valid UTF-8
            if line.startswith("---- harness"):
                continue
            obj = json.loads(line)
            self.assertRegex(obj["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(obj["level"], ("trace", "debug", "info", "warning", "error"))
            events.append(obj)
        names = [e["event"] for e in events]
        for want in ("listening", "connect", "accepted", "delivered", "stopped"):
            self.assertIn(want, names)
        accepted = next(e for e in events if e["event"] == "accepted")
        self.assertEqual(accepted["from"], "a@origin.test")
        self.assertEqual(accepted["nrcpt"], 1)
        delivered = next(e for e in events if e["event"] == "delivered")
        self.assertEqual(delivered["rcpt"], "b@dest.test")
        self.assertEqual(delivered["code"], 250)
        self.assertEqual(delivered["id"], accepted["id"])
        # One session id joins the session's lines; the transaction's HELO and TLS state.
        self.assertRegex(accepted["session"], r"^[0-9a-f]{4}-\d+-\d+$")
        for name in ("connect", "disconnect"):
            self.assertEqual([e["client"] for e in events
                              if e["event"] == name and e.get("session") == accepted["session"]],
                             [accepted["client"]], name)
        self.assertEqual(len({e["session"] for e in events if e["event"] == "connect"}),
                         len([e for e in events if e["event"] == "connect"]))
        self.assertEqual(accepted["helo"], "client.test")
        self.assertEqual(accepted["message_id"], "<j1@origin.test>")
        self.assertEqual(accepted["tls"], "none")


if __name__ == "__main__":
    unittest.main()
