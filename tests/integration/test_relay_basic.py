"""One relay, one capturing downstream: envelope and bytes pass through unchanged
(apart from the prepended Received: header), and the SMTP dialogue answers as specified."""

import socket
import time
import unittest

from harness import HOST, ReplyReader, RelayTestCase, assert_relayed, has_enhanced_code

FROM = "sender@origin.test"


def tricky_body():
    """A message whose bytes exercise dot-stuffing, 8-bit data and maximum-length lines.
    Every line ends in CRLF, the message ends in CRLF, so smtplib sends it unchanged
    (apart from dot-stuffing)."""
    lines = [
        b"From: Sender <sender@origin.test>",
        b"To: Rcpt <rcpt@dest.test>",
        b"Subject: dots, 8-bit and long lines",
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=iso-8859-1",
        b"Content-Transfer-Encoding: 8bit",
        b"",
        b".",                      # a lone dot: must not end the message
        b"..",
        b"...",
        b".leading dot",
        b"..two leading dots",
        b"",
        b"trailing spaces and tab   \t",
        b" leading space",
        b"\tleading tab",
        bytes(range(0x80, 0x100)),  # every 8-bit byte value
        "Grüße, ½ € — naïve façade".encode("utf-8"),
        "Gr\xfc\xdfe in Latin-1".encode("latin-1"),
        b"x" * 998,                # exactly the longest legal line
        b"\xe9" * 998,             # longest line of 8-bit bytes
        b"." + b"y" * 996,         # a line sent as 998 octets after dot-stuffing
        b"",
        b"",
        b".",
        b"last line starts with a dot",
        b".",
    ]
    return b"\r\n".join(lines) + b"\r\n"


class RelayBasicTest(RelayTestCase):

    def test_message_relayed_byte_for_byte(self):
        body = tricky_body()
        rcpts = ["rcpt@dest.test"]
        with self.relay.client() as s:
            code, resp = s.ehlo("client.test")
            self.assertEqual(code, 250, resp)
            self.assertIn("8bitmime", s.esmtp_features)
            code, resp = s.mail(FROM, ["BODY=8BITMIME"])
            self.assertEqual(code, 250, resp)
            self.assertTrue(has_enhanced_code(250, resp), resp)
            code, resp = s.rcpt(rcpts[0])
            self.assertEqual(code, 250, resp)
            self.assertTrue(has_enhanced_code(250, resp), resp)
            code, resp = s.data(body)
            self.assertEqual(code, 250, resp)
            self.assertTrue(has_enhanced_code(250, resp), resp)
            s.quit()
        self.assertEqual(self.downstream.wait_for(1, 15), 1,
                         "message not delivered downstream within 15 s")
        assert_relayed(self, self.downstream.messages[0], body, FROM, rcpts)

    def test_998_octet_line_starting_with_dot(self):
        """A 998-octet text line that starts with "." travels as 999 octets after
        dot-stuffing; the transparency dot does not count (RFC 5321 4.5.3.1.6)."""
        body = b"Subject: dotted long line\r\n\r\n" + b"." + b"y" * 997 + b"\r\nend\r\n"
        code, resp = self.send(body, FROM, ["rcpt@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.messages[0], body, FROM, ["rcpt@dest.test"])

    def test_8bitmime_declared_downstream(self):
        """8-bit data received with BODY=8BITMIME must be passed on declared as such
        (RFC 6152) -- the downstream offers 8BITMIME."""
        body = tricky_body()
        code, resp = self.send(body, FROM, ["rcpt@dest.test"], mail_options=["BODY=8BITMIME"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        got = self.downstream.messages[0]
        self.assertIn("BODY=8BITMIME", [o.upper() for o in got.mail_options],
                      f"downstream MAIL FROM parameters: {got.mail_options}")

    def test_several_recipients_one_transaction(self):
        body = (b"From: sender@origin.test\r\nTo: many\r\nSubject: several rcpts\r\n\r\n"
                b"hello\r\n")
        rcpts = ["one@dest.test", "two@dest.test", "Three.Mixed@dest.test"]
        code, resp = self.send(body, FROM, rcpts)
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        time.sleep(1)  # would a second (split) delivery follow?
        msgs = self.downstream.snapshot()
        self.assertEqual(len(msgs), 1, f"expected one transaction, got {msgs}")
        assert_relayed(self, msgs[0], body, FROM, rcpts)

    def test_null_sender(self):
        body = b"Subject: bounce-like\r\n\r\nnull reverse-path\r\n"
        code, resp = self.send(body, "", ["rcpt@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        assert_relayed(self, self.downstream.messages[0], body, "", ["rcpt@dest.test"])

    def test_two_messages_one_session(self):
        b1 = b"Subject: first\r\n\r\none\r\n"
        b2 = b"Subject: second\r\n\r\ntwo\r\n"
        with self.relay.client() as s:
            s.ehlo("client.test")
            self.assertEqual(s.sendmail(FROM, ["a@dest.test"], b1), {})
            self.assertEqual(s.sendmail("other@origin.test", ["b@dest.test"], b2), {})
            s.quit()
        self.assertEqual(self.downstream.wait_for(2, 15), 2)
        by_subject = {m.data.split(b"Subject: ")[1][:5]: m for m in self.downstream.messages}
        assert_relayed(self, by_subject[b"first"], b1, FROM, ["a@dest.test"])
        assert_relayed(self, by_subject[b"secon"], b2, "other@origin.test", ["b@dest.test"])

    def test_line_of_999_octets_rejected(self):
        bad = b"Subject: too long\r\n\r\n" + b"z" * 999 + b"\r\nafter\r\n"
        good = b"Subject: fine\r\n\r\n" + b"z" * 998 + b"\r\n"
        with self.relay.client() as s:
            s.ehlo("client.test")
            code, resp = s.mail(FROM)
            self.assertEqual(code, 250, resp)
            code, resp = s.rcpt("rcpt@dest.test")
            self.assertEqual(code, 250, resp)
            code, resp = s.data(bad)
            self.assertTrue(500 <= code <= 599, f"999-octet line accepted: {code} {resp!r}")
            self.assertTrue(has_enhanced_code(code, resp), resp)
            # The session is still in step: the next transaction works.
            code, resp = s.noop()
            self.assertEqual(code, 250, resp)
            self.assertEqual(s.sendmail(FROM, ["rcpt@dest.test"], good), {})
            s.quit()
        self.assertGreaterEqual(self.downstream.wait_for(1, 15), 1)
        time.sleep(2)
        msgs = self.downstream.snapshot()
        self.assertEqual(len(msgs), 1, f"the rejected message was delivered too: {msgs}")
        assert_relayed(self, msgs[0], good, FROM, ["rcpt@dest.test"])

    def test_smuggling_bare_lf_dot_does_not_end_data(self):
        """<LF>.<CR><LF> and <CR><LF>.<LF> inside DATA must not end the message: no
        smuggled second message, exactly one reply to the real end of data."""
        for fake_end in (b"\n.\r\n", b"\r\n.\n"):
            with self.subTest(fake_end=fake_end):
                sock = socket.create_connection((HOST, self.relay.port), timeout=10)
                self.addCleanup(sock.close)
                rd = ReplyReader(sock)
                self.assertEqual(rd.reply()[0], 220)
                sock.sendall(b"EHLO client.test\r\n")
                self.assertEqual(rd.reply()[0], 250)
                sock.sendall(f"MAIL FROM:<{FROM}>\r\nRCPT TO:<victim@dest.test>\r\n"
                             "DATA\r\n".encode())
                self.assertEqual([c for c, _ in rd.replies(3)], [250, 250, 354])
                sock.sendall(b"Subject: outer\r\n\r\nouter body" + fake_end +
                             b"MAIL FROM:<evil@smuggler.test>\r\n"
                             b"RCPT TO:<victim@dest.test>\r\n"
                             b"DATA\r\n"
                             b"Subject: smuggled\r\n\r\nsmuggled\r\n"
                             b".\r\n"
                             b"QUIT\r\n")
                code, lines = rd.reply()
                self.assertIn(code, (250, 550), lines)
                code, lines = rd.reply()
                self.assertEqual(code, 221, f"smuggled commands were executed: {code} {lines}")
        time.sleep(2)
        msgs = self.downstream.snapshot()
        self.assertEqual([m for m in msgs if m.mail_from != FROM], [],
                         f"smuggled message delivered: {msgs}")
        for m in msgs:
            self.assertNotIn(b"\r\nSubject: smuggled", m.data.split(b"\r\n\r\n", 1)[0])


class DialogueTest(RelayTestCase):

    def assertReply(self, got, code, exact=None):
        c, text = got
        self.assertEqual(c, code, text)
        self.assertTrue(has_enhanced_code(code, text),
                        f"reply {c} {text!r} lacks an enhanced status code of class {code // 100}")
        if exact is not None:
            self.assertEqual(text, exact)

    def test_greeting(self):
        with self.relay.client() as s:
            self.assertEqual(s.greeting, (220, b"relay.test ESMTP Postern"))

    def test_ehlo_advertisement(self):
        with self.relay.client() as s:
            code, resp = s.ehlo("client.test")
            self.assertEqual(code, 250, resp)
            self.assertTrue(resp.split(b"\n")[0].startswith(b"relay.test"), resp)
            for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes"):
                self.assertIn(ext, s.esmtp_features, f"EHLO lacks {ext.upper()}: {resp!r}")
            self.assertRegex(s.esmtp_features["size"], r"^[1-9][0-9]*$")

    def test_helo_noop_rset_vrfy_help_quit(self):
        with self.relay.client() as s:
            code, resp = s.helo("client.test")
            self.assertEqual(code, 250, resp)
            self.assertTrue(resp.startswith(b"relay.test"), resp)
            self.assertReply(s.docmd("NOOP"), 250)
            self.assertReply(s.docmd("RSET"), 250)
            self.assertReply(s.docmd("VRFY", "postmaster"), 252)
            self.assertReply(s.docmd("HELP"), 214)
            code, text = s.docmd("EXPN", "list")
            self.assertIn(code, (502, 252), text)
            self.assertTrue(has_enhanced_code(code, text), text)
            self.assertReply(s.docmd("QUIT"), 221)

    def test_transaction_replies(self):
        with self.relay.client() as s:
            s.ehlo("client.test")
            self.assertReply(s.docmd("MAIL", f"FROM:<{FROM}>"), 250)
            self.assertReply(s.docmd("RCPT", "TO:<rcpt@dest.test>"), 250)
            self.assertReply(s.docmd("RSET"), 250)
            # The transaction was reset: RCPT without MAIL is out of order.
            self.assertReply(s.docmd("RCPT", "TO:<rcpt@dest.test>"), 503)
            self.assertReply(s.docmd("QUIT"), 221)
        time.sleep(1)
        self.assertEqual(self.downstream.snapshot(), [])

    def test_wrong_order(self):
        with self.relay.client() as s:
            s.ehlo("client.test")
            self.assertReply(s.docmd("RCPT", "TO:<rcpt@dest.test>"), 503)
            self.assertReply(s.docmd("DATA"), 503)
            self.assertReply(s.docmd("MAIL", f"FROM:<{FROM}>"), 250)
            self.assertReply(s.docmd("MAIL", f"FROM:<{FROM}>"), 503)   # nested MAIL
            self.assertReply(s.docmd("DATA"), 503)                    # no recipients
            self.assertReply(s.docmd("NOOP"), 250)

    def test_mail_before_helo(self):
        with self.relay.client() as s:
            self.assertReply(s.docmd("MAIL", f"FROM:<{FROM}>"), 503)

    def test_obsolete_and_unknown_commands(self):
        with self.relay.client() as s:
            s.ehlo("client.test")
            for cmd in ("SEND FROM:<a@b.test>", "SOML FROM:<a@b.test>", "SAML FROM:<a@b.test>",
                        "TURN", "VERB", "TICK 1"):
                verb, _, arg = cmd.partition(" ")
                code, text = s.docmd(verb, arg)
                self.assertEqual(code, 502, f"{cmd}: {code} {text!r}")
                self.assertTrue(has_enhanced_code(502, text), f"{cmd}: {text!r}")
            code, text = s.docmd("FROBNICATE", "now")
            self.assertEqual(code, 500, text)
            self.assertTrue(has_enhanced_code(500, text), text)
            # still usable afterwards
            self.assertReply(s.docmd("NOOP"), 250)


if __name__ == "__main__":
    unittest.main()
