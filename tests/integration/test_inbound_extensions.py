"""Inbound ESMTP extensions with real peers: STARTTLS (swaks --tls, Python ssl, openssl
s_client), require_tls, PROXY protocol v1/v2, BDAT/CHUNKING, SMTPUTF8 and DSN parameters
passed to the next hop, and clients that vanish in the middle of a message.

A certificate is generated per test class with openssl(1); nothing is stored in the repo."""

import os
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest

from harness import HOST, Relay, RelayTestCase, ReplyReader, WireDownstream, \
    assert_relayed, free_port, split_received

# As sent after DATA (dot-stuffed) and as it must arrive (unstuffed).
BODY_WIRE = b"Subject: ext\r\n\r\nline one\r\n..dot\r\nlast\r\n"
BODY = b"Subject: ext\r\n\r\nline one\r\n.dot\r\nlast\r\n"


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=relay.test", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


class _Base(RelayTestCase):
    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix="postern-cert-")
        cls.cert, cls.key = make_cert(cls.certdir)
        cls.tls_port = free_port()
        cls.proxy_port = free_port()
        cls.relay_kwargs = {"extra": (
            f'[tls]\ncertificate = "{cls.cert}"\nprivate_key = "{cls.key}"\n\n'
            f'[[listener]]\naddress = "{HOST}:{cls.tls_port}"\nrequire_tls = true\n\n'
            f'[[listener]]\naddress = "{HOST}:{cls.proxy_port}"\nproxy_protocol = true\n'
            f'trusted_proxies = ["127.0.0.1/32"]\n\n'
            "[limits]\nproxy_timeout = 2\n")}

    def raw(self, port=None):
        s = socket.create_connection((HOST, port or self.relay.port), timeout=10)
        self.addCleanup(s.close)
        return s, ReplyReader(s)

    def starttls(self, s, r):
        s.sendall(b"EHLO client.test\r\n")
        code, lines = r.reply()
        self.assertEqual(code, 250)
        self.assertIn(b"STARTTLS", lines)
        s.sendall(b"STARTTLS\r\n")
        self.assertEqual(r.reply()[0], 220)
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = False
        t = ctx.wrap_socket(s, server_hostname="relay.test")
        return t, ReplyReader(t)


class StartTlsTest(_Base):
    def test_swaks_tls_delivers_with_esmtps(self):
        p = subprocess.run(["swaks", "--server", f"{HOST}:{self.relay.port}", "--tls",
                            "--from", "s@origin.test", "--to", "r@dest.test",
                            "--body", "over tls"], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout.decode(errors="replace"))
        self.assertIn(b"TLS started", p.stdout)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        header, _ = split_received(self.downstream.snapshot()[0].data)
        self.assertIn(b"with ESMTPS id", header)

    def test_openssl_s_client_handshake_and_ehlo(self):
        p = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                            f"{HOST}:{self.relay.port}", "-CAfile", self.cert, "-quiet"],
                           input=b"EHLO sclient.test\r\nQUIT\r\n", capture_output=True,
                           timeout=30)
        out = p.stdout.decode(errors="replace")
        self.assertIn("250-relay.test", out, p.stderr.decode(errors="replace"))
        self.assertIn("221 2.0.0 Bye", out)
        self.assertNotIn("STARTTLS", out)  # not offered again inside TLS

    def test_state_reset_and_plaintext_after_starttls_discarded(self):
        s, r = self.raw()
        r.reply()
        s.sendall(b"EHLO client.test\r\n")
        r.reply()
        # Commands pipelined behind STARTTLS in plain text must never be executed.
        s.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        self.assertEqual(r.reply()[0], 220)
        self.assertEqual(r.buf, b"", "a reply to the injected command arrived in plain text")
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = False
        t = ctx.wrap_socket(s, server_hostname="relay.test")
        tr = ReplyReader(t)
        # The session starts over: no HELO yet, so MAIL is out of sequence.
        t.sendall(b"MAIL FROM:<a@origin.test>\r\n")
        self.assertEqual(tr.reply()[0], 503)
        t.sendall(b"EHLO client.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<b@dest.test>\r\n"
                  b"DATA\r\n")
        self.assertEqual([c for c, _ in tr.replies(4)], [250, 250, 250, 354])
        t.sendall(BODY_WIRE + b".\r\nQUIT\r\n")
        self.assertEqual([c for c, _ in tr.replies(2)], [250, 221])
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.snapshot()[0], BODY, "a@origin.test",
                       ["b@dest.test"])

    def test_require_tls_listener(self):
        s, r = self.raw(self.tls_port)
        r.reply()
        s.sendall(b"EHLO client.test\r\nMAIL FROM:<a@origin.test>\r\n")
        self.assertEqual(r.reply()[0], 250)
        code, lines = r.reply()
        self.assertEqual(code, 530)
        self.assertTrue(lines[0].startswith(b"5.7.0"), lines)
        t, tr = self.starttls(s, r)
        t.sendall(b"EHLO client.test\r\nMAIL FROM:<a@origin.test>\r\n")
        self.assertEqual([c for c, _ in tr.replies(2)], [250, 250])

    def test_garbage_instead_of_handshake_closes(self):
        s, r = self.raw()
        r.reply()
        s.sendall(b"EHLO x\r\nSTARTTLS\r\n")
        r.replies(2)
        s.sendall(b"this is not a TLS record\r\n" * 10)
        self.assertTrue(r.at_eof(5))


def proxy_v2(src, dst, sport, dport):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


class ProxyProtocolTest(_Base):
    def proxied_send(self, header, rcpt):
        s, r = self.raw(self.proxy_port)
        s.sendall(header)
        self.assertEqual(r.reply()[0], 220)
        s.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<" + rcpt + b">\r\n")
        return r.replies(3)[2]

    def test_v1_client_address_used_for_relay_control_and_received(self):
        code, lines = self.proxied_send(b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 25\r\n",
                                        b"x@foreign.test")
        self.assertEqual(code, 554, lines)  # 192.0.2.1 is not a relay client
        s, r = self.raw(self.proxy_port)
        s.sendall(b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 25\r\n")
        r.reply()
        s.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<x@accepted.test>\r\n"
                  b"DATA\r\n")
        self.assertEqual([c for c, _ in r.replies(4)], [250, 250, 250, 354])
        s.sendall(BODY_WIRE + b".\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        header, rest = split_received(self.downstream.snapshot()[0].data)
        self.assertIn(b"[192.0.2.1]", header)
        self.assertEqual(rest, BODY)

    def test_v1_relay_client_behind_proxy(self):
        code, _ = self.proxied_send(b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 25\r\n",
                                    b"x@foreign.test")
        self.assertEqual(code, 250)

    def test_v2_binary_header(self):
        code, _ = self.proxied_send(proxy_v2("192.0.2.7", "192.0.2.2", 40000, 25),
                                    b"x@foreign.test")
        self.assertEqual(code, 554)
        self.assertIn("client=192.0.2.7", self.relay.log_text())

    def test_missing_header_refused(self):
        s, r = self.raw(self.proxy_port)
        s.sendall(b"EHLO c.test\r\n")
        code, lines = r.reply()
        self.assertEqual(code, 421)
        self.assertTrue(r.at_eof(5))

    def test_header_timeout(self):
        s, r = self.raw(self.proxy_port)
        s.sendall(b"PROXY TCP4 192.0.2.1")  # never finished
        start = time.monotonic()
        self.assertTrue(r.at_eof(8))
        self.assertLess(time.monotonic() - start, 6)

    def test_plain_listener_treats_proxy_line_as_unknown_command(self):
        s, r = self.raw()
        r.reply()
        s.sendall(b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\n")
        self.assertEqual(r.reply()[0], 500)


class ChunkingTest(_Base):
    def test_bdat_pipelined_chunks_arrive_byte_for_byte(self):
        # BDAT content is not dot-stuffed: "." and ".." lines arrive as they are.
        body = b"Subject: bdat\r\n\r\n" + (b"x" * 900 + b"\r\n") * 6 + b".\r\n..\r\nend\r\n"
        a, b = body[:3000], body[3000:]
        s, r = self.raw()
        r.reply()
        s.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<b@dest.test>\r\n"
                  + b"BDAT %d\r\n" % len(a) + a + b"BDAT %d LAST\r\n" % len(b) + b + b"QUIT\r\n")
        replies = r.replies(6)
        self.assertEqual([c for c, _ in replies], [250, 250, 250, 250, 250, 221], replies)
        self.assertEqual(replies[3][1][0], b"2.0.0 3000 octets received")
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.snapshot()[0], body, "a@origin.test",
                       ["b@dest.test"])

    def test_bdat_zero_last_and_data_mixing_refused(self):
        s, r = self.raw()
        r.reply()
        s.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<b@dest.test>\r\n"
                  b"BDAT 12\r\nSubject: z\r\nDATA\r\nBDAT 0 LAST\r\n")
        self.assertEqual([c for c, _ in r.replies(6)], [250, 250, 250, 250, 503, 250])
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        self.assertEqual(split_received(self.downstream.snapshot()[0].data)[1], b"Subject: z\r\n")

    def test_bdat_out_of_sequence_chunk_is_consumed_not_executed(self):
        s, r = self.raw()
        r.reply()
        chunk = b"RSET\r\nQUIT\r\n"  # must be read as chunk data, never as commands
        s.sendall(b"EHLO c.test\r\nBDAT %d\r\n" % len(chunk) + chunk + b"NOOP\r\n")
        codes = [c for c, _ in r.replies(3)]
        self.assertEqual(codes, [250, 503, 250])


class DisconnectTest(_Base):
    def assert_nothing_queued(self):
        time.sleep(1.5)
        self.assertEqual(self.downstream.snapshot(), [])
        self.relay.stop()
        self.relay.start()
        time.sleep(1.5)
        self.assertIn("spool_recovered", self.relay.log_text())
        self.assertEqual(self.downstream.snapshot(), [])
        last = [l for l in self.relay.log_text().splitlines() if "spool_recovered" in l][-1]
        self.assertIn("messages=0", last)

    def test_disconnect_mid_data_leaves_no_message(self):
        s, r = self.raw()
        r.reply()
        s.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n")
        r.replies(4)
        s.sendall(b"Subject: cut\r\n\r\nhalf a message\r\n")
        s.close()
        self.assert_nothing_queued()
        self.assertIn("disconnect_in_data", self.relay.log_text())

    def test_disconnect_mid_bdat_leaves_no_message(self):
        s, r = self.raw()
        r.reply()
        s.sendall(b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<b@dest.test>\r\n"
                  b"BDAT 10\r\n0123456789BDAT 100 LAST\r\nonly part")
        r.replies(4)
        s.close()
        self.assert_nothing_queued()


class ParametersDownstreamTest(unittest.TestCase):
    def relay_to(self, wire):
        """A relay forwarding to `wire`, and a greeted client connection to it."""
        self.addCleanup(wire.stop)
        relay = Relay(wire.port)
        self.addCleanup(relay.cleanup)
        self.addCleanup(relay.stop)
        relay.start()
        s = socket.create_connection((HOST, relay.port), timeout=10)
        self.addCleanup(s.close)
        r = ReplyReader(s)
        r.reply()
        return relay, s, r

    def test_smtputf8_and_dsn_passed_to_capable_next_hop(self):
        wire = WireDownstream(["PIPELINING", "8BITMIME", "SMTPUTF8", "DSN"])
        relay, s, r = self.relay_to(wire)
        s.sendall("EHLO c.test\r\nMAIL FROM:<jörg@origin.test> SMTPUTF8 RET=HDRS ENVID=id+2B1\r\n"
                  "RCPT TO:<b@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@dest.test\r\n"
                  "RCPT TO:<c@dest.test>\r\nDATA\r\n".encode())
        self.assertEqual([c for c, _ in r.replies(5)], [250, 250, 250, 250, 354])
        s.sendall(BODY_WIRE + b".\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(wire.wait_for(1, 15), 1, relay.log_text())
        lines = [l for l, _ in wire.commands]
        self.assertIn("MAIL FROM:<jörg@origin.test> BODY=8BITMIME SMTPUTF8 RET=HDRS "
                      "ENVID=id+2B1".encode(), lines)
        self.assertIn(b"RCPT TO:<b@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@dest.test",
                      lines)
        self.assertIn(b"RCPT TO:<c@dest.test>", lines)

    def test_utf8_message_to_hop_without_smtputf8_is_not_sent(self):
        wire = WireDownstream(["PIPELINING", "8BITMIME"])
        relay, s, r = self.relay_to(wire)
        s.sendall("EHLO c.test\r\nMAIL FROM:<jörg@origin.test> SMTPUTF8\r\n"
                  "RCPT TO:<b@dest.test>\r\nDATA\r\n".encode())
        r.replies(4)
        s.sendall(BODY_WIRE + b".\r\n")
        self.assertEqual(r.reply()[0], 250)
        deadline = time.monotonic() + 10
        while "bounced" not in relay.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertRegex(relay.log_text(), r"code=553 reply=\"5\.6\.7 \S+ does not support SMTPUTF8")
        self.assertFalse(any(l.startswith(b"MAIL") for l, _ in wire.commands))


if __name__ == "__main__":
    unittest.main()
