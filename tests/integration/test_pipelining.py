"""PIPELINING (RFC 2920): a raw client sends its commands in batches, and swaks."""

import shutil
import socket
import subprocess
import unittest

from harness import HOST, Relay, ReplyReader, RelayTestCase, WireDownstream, \
    assert_relayed, has_enhanced_code

FROM = "pipe@origin.test"


class PipeliningTest(RelayTestCase):

    def connect(self, source_ip=None):
        sock = socket.create_connection((HOST, self.relay.port), timeout=10,
                                        source_address=(source_ip, 0) if source_ip else None)
        self.addCleanup(sock.close)
        rd = ReplyReader(sock)
        code, lines = rd.reply()
        self.assertEqual(code, 220, lines)
        sock.sendall(b"EHLO client.test\r\n")
        code, lines = rd.reply()
        self.assertEqual(code, 250, lines)
        self.assertIn(b"PIPELINING", [l.upper() for l in lines])
        return sock, rd

    def test_pipelined_transaction(self):
        rcpts = ["p1@dest.test", "p2@dest.test", "p3@dest.test"]
        body = (b"From: pipe@origin.test\r\nSubject: pipelined\r\n\r\n"
                b"line one\r\n.dot line\r\nlast\r\n")
        sock, rd = self.connect()
        batch = f"MAIL FROM:<{FROM}>\r\n".encode()
        batch += b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts)
        batch += b"DATA\r\n"
        sock.sendall(batch)
        replies = rd.replies(5)
        self.assertEqual([c for c, _ in replies], [250, 250, 250, 250, 354], replies)
        for code, lines in replies[:4]:
            self.assertTrue(has_enhanced_code(code, lines[-1]), lines)
        stuffed = body.replace(b"\r\n.", b"\r\n..")
        sock.sendall(stuffed + b".\r\nQUIT\r\n")
        code, lines = rd.reply()
        self.assertEqual(code, 250, lines)
        self.assertTrue(has_enhanced_code(code, lines[-1]), lines)
        code, lines = rd.reply()
        self.assertEqual(code, 221, lines)
        self.assertTrue(rd.at_eof(), "relay did not close the connection after QUIT")
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.messages[0], body, FROM, rcpts)

    def test_half_close_right_after_the_end_of_data(self):
        """The client sends the end of data, QUIT and its FIN together: the end of input
        arrives while the message is being committed, and must wait for it (the 250 and
        the 221 still go out), not close the connection with the message unanswered."""
        body = b"Subject: then FIN\r\n\r\nbody\r\n"
        for _ in range(20):  # the FIN lands in the commit on most rounds, not all
            sock, rd = self.connect()
            sock.sendall(f"MAIL FROM:<{FROM}>\r\nRCPT TO:<fin@dest.test>\r\nDATA\r\n".encode())
            self.assertEqual([c for c, _ in rd.replies(3)], [250, 250, 354])
            sock.sendall(body + b".\r\nQUIT\r\n")
            sock.shutdown(socket.SHUT_WR)
            code, lines = rd.reply()
            self.assertEqual(code, 250, lines)
            code, lines = rd.reply()
            self.assertEqual(code, 221, lines)
            self.assertTrue(rd.at_eof())
        self.assertEqual(self.downstream.wait_for(20, 15), 20)

    def test_pipelined_with_rejected_recipient(self):
        """From outside relay_networks: the foreign recipient is refused in the middle
        of the batch, the others are kept, the message goes to the accepted ones only."""
        body = b"Subject: partly refused\r\n\r\nbody\r\n"
        sock, rd = self.connect(source_ip="127.0.0.2")
        sock.sendall(f"MAIL FROM:<{FROM}>\r\n"
                     "RCPT TO:<a@accepted.test>\r\n"
                     "RCPT TO:<x@foreign.test>\r\n"
                     "RCPT TO:<b@accepted.test>\r\n"
                     "DATA\r\n".encode())
        replies = rd.replies(5)
        self.assertEqual([c for c, _ in replies], [250, 250, 554, 250, 354], replies)
        self.assertEqual(replies[2][1][-1], b"5.7.1 <x@foreign.test>: Relay access denied")
        sock.sendall(body + b".\r\nQUIT\r\n")
        self.assertEqual([c for c, _ in rd.replies(2)], [250, 221])
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.messages[0], body, FROM,
                       ["a@accepted.test", "b@accepted.test"])

    def test_rset_and_new_transaction_pipelined(self):
        body = b"Subject: after rset\r\n\r\nbody\r\n"
        sock, rd = self.connect()
        sock.sendall(f"MAIL FROM:<dropped@origin.test>\r\n"
                     "RCPT TO:<dropped@dest.test>\r\n"
                     "RSET\r\n"
                     f"MAIL FROM:<{FROM}>\r\n"
                     "RCPT TO:<kept@dest.test>\r\n"
                     "DATA\r\n".encode())
        replies = rd.replies(6)
        self.assertEqual([c for c, _ in replies], [250, 250, 250, 250, 250, 354], replies)
        sock.sendall(body + b".\r\nQUIT\r\n")
        self.assertEqual([c for c, _ in rd.replies(2)], [250, 221])
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.messages[0], body, FROM, ["kept@dest.test"])

    @unittest.skipUnless(shutil.which("swaks"), "swaks not installed (deploy/install-deps.sh)")
    def test_swaks_pipeline(self):
        proc = subprocess.run(
            ["swaks", "--server", HOST, "--port", str(self.relay.port),
             "--ehlo", "client.test", "--from", FROM, "--to", "swaks@dest.test",
             "--pipeline", "--timeout", "20",
             "--header", "Subject: swaks pipelined", "--body", "via swaks\n.dot line\n"],
            capture_output=True, timeout=60)
        out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        self.assertEqual(proc.returncode, 0, out)
        self.assertEqual(self.downstream.wait_for(1, 15), 1, out)
        got = self.downstream.messages[0]
        self.assertEqual(got.mail_from, FROM)
        self.assertEqual(got.rcpt_tos, ["swaks@dest.test"])
        self.assertIn(b"Subject: swaks pipelined\r\n", got.data)
        self.assertIn(b"\r\nvia swaks\r\n.dot line\r\n", got.data)
        self.assertTrue(got.data.startswith(b"Received: from "), got.data[:200])


class DeliveryPipeliningTest(unittest.TestCase):
    """The relay's own SMTP client pipelines only to peers that offer PIPELINING, and
    uses BODY=8BITMIME only with peers that offer 8BITMIME."""

    def relay_to(self, extensions):
        wire = WireDownstream(extensions)
        self.addCleanup(wire.stop)
        relay = Relay(wire.port)
        self.addCleanup(relay.cleanup)
        relay.start()
        self.addCleanup(relay.stop)
        with relay.client() as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail(FROM, ["a@dest.test", "b@dest.test"],
                                        b"Subject: wire\r\n\r\nhi\r\n",
                                        mail_options=["BODY=8BITMIME"]), {})
        self.assertEqual(wire.wait_for(1, 15), 1, relay.log_text())
        return {line.split(b" ", 1)[0].split(b":", 1)[0].upper(): p
                for line, p in wire.commands}, wire

    def test_no_pipelining_without_extension(self):
        flags, wire = self.relay_to(["8BITMIME"])
        pipelined = [line for line, p in wire.commands if p]
        self.assertEqual(pipelined, [], f"commands sent before the previous reply: {pipelined}")

    def test_pipelining_with_extension(self):
        flags, wire = self.relay_to(["PIPELINING", "8BITMIME"])
        self.assertTrue(flags[b"MAIL"], f"MAIL not pipelined: {wire.commands}")
        self.assertTrue(flags[b"RCPT"], f"RCPT not pipelined: {wire.commands}")

    def test_no_body_param_without_8bitmime(self):
        flags, wire = self.relay_to(["PIPELINING", "SIZE 1000000"])
        mail = [line for line, _ in wire.commands if line.upper().startswith(b"MAIL")]
        self.assertEqual(len(mail), 1, wire.commands)
        self.assertNotIn(b"BODY=", mail[0].upper())


if __name__ == "__main__":
    unittest.main()
