"""Bounces and retries (issue 5, crash-safety item (c)): a 4xx is retried and delivered
once; a 5xx for a recipient is reported to the envelope sender in an RFC 3464 delivery
status notification (from <>), unless NOTIFY says otherwise; RET=HDRS returns only the
header; a message from <> is never bounced (no loops); a message that stays deferred past
queue_lifetime is bounced with 4.4.7; a message the next hop cannot take (over its
SIZE, or 8-bit content without 8BITMIME) is not sent and is bounced (5.3.4, 5.6.3);
NOTIFY=SUCCESS to a hop without DSN gets a "relayed" notice, and delivery.delay_warning
a "delayed" one.

Every domain goes to self.downstream ("*"), except the senders' domain sender.test,
whose exact route leads to self.bounces, the capturing downstream for notices.

Config: retry_min = 1, retry_max = 2, idle_timeout = 1 (seconds)."""

import re
import time
import unittest

from harness import (HOST, Dsn, RelayTestCase, WireDownstream, assert_relayed,
                     check_dsn_shape)

FROM = "sender@sender.test"


def body(tag):
    return (f"Subject: bounce test {tag}\r\nMessage-ID: <{tag}@sender.test>\r\n"
            f"From: <{FROM}>\r\n\r\n"
            f"BODY-MARKER-{tag} first line\r\n..stuffed line\r\nlast line\r\n").encode()


class BounceTest(RelayTestCase):

    auto_relay = False
    delivery = {}

    def setUp(self):
        super().setUp()
        self.bounces = self.add_downstream()
        self.start_relay(self.downstream.port, delivery=self.delivery, routes=[
            {"domain": "sender.test", "next_hop": f"{HOST}:{self.bounces.port}"}])

    def send_with(self, original, mail_from, rcpts, mail_options=(), rcpt_options=None,
                  source_ip=None):
        """rcpt_options: {address: [options]} for RCPT TO (NOTIFY=...)."""
        rcpt_options = rcpt_options or {}
        with self.relay.client(source_ip) as s:
            code, resp = s.ehlo("client.test")
            self.assertEqual(code, 250, resp)
            self.assertTrue(s.has_extn("dsn"), "the relay does not offer DSN")
            code, resp = s.mail(mail_from, list(mail_options))
            self.assertEqual(code, 250, resp)
            for r in rcpts:
                code, resp = s.rcpt(r, rcpt_options.get(r, []))
                self.assertEqual(code, 250, resp)
            code, resp = s.data(original)
            self.assertEqual(code, 250, resp)

    def one_dsn(self, timeout=15):
        """Waits for the notice, checks there is exactly one, from <> to FROM."""
        self.assertEqual(self.bounces.wait_for(1, timeout), 1, "no delivery status notification")
        time.sleep(1)
        got = self.bounces.snapshot()
        self.assertEqual(len(got), 1, f"more than one notice: {got}")
        self.assertEqual(got[0].mail_from, "", "a notice must come from the null sender <>")
        self.assertEqual(got[0].rcpt_tos, [FROM])
        dsn = Dsn(got[0])
        check_dsn_shape(self, dsn)
        return dsn

    def failed_block(self, rcpt, status):
        """The one notice's recipient block for rcpt: Action failed, this Status."""
        dsn = self.one_dsn()
        block = dsn.recipient(rcpt)
        self.assertIsNotNone(block, dsn.raw[:3000])
        self.assertEqual(block["Action"].strip().lower(), "failed")
        self.assertEqual(block["Status"].strip(), status)
        return dsn, block

    def assert_no_dsn(self, settle=2.5):
        time.sleep(settle)
        self.assertEqual(self.bounces.snapshot(), [], "a notice was sent")
        self.assertNotRegex(self.relay.log_text(), r"event=bounce_queued")


class RetryAndBounceTest(BounceTest):

    def test_4xx_then_250_delivered_once_without_notice(self):
        self.downstream.rcpt_replies = {"later@dest.test": ["451 4.2.1 Mailbox busy"]}
        original = body("retry")
        self.send_with(original, FROM, ["later@dest.test"])
        self.assertEqual(self.downstream.wait_for(1, 15), 1, "not delivered after the 451")
        self.assertTrue(self.relay.wait_log(r"event=deferred .*rcpt=later@dest\.test", 1))
        self.assert_no_dsn()
        msgs = self.downstream.snapshot()
        self.assertEqual(len(msgs), 1, f"delivered more than once: {msgs}")
        assert_relayed(self, msgs[0], original, FROM, ["later@dest.test"])

    def test_550_for_one_recipient(self):
        """One of two recipients is refused: the other is delivered, the refused one is
        reported in an RFC 3464 notice with the next hop's reply and the original."""
        self.downstream.rcpt_replies = {"nobody@dest.test": "550 5.1.1 No such user here"}
        original = body("partial")
        self.send_with(original, FROM, ["good@dest.test", "nobody@dest.test"])
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        dsn = self.one_dsn()
        msgs = self.downstream.snapshot()
        self.assertEqual(len(msgs), 1, msgs)
        assert_relayed(self, msgs[0], original, FROM, ["good@dest.test"])

        m = dsn.message
        self.assertIn("MAILER-DAEMON", m["From"])
        self.assertIn(FROM, m["To"])
        self.assertEqual(len(dsn.recipients), 1, "the delivered recipient is reported too")
        block = dsn.recipient("nobody@dest.test")
        self.assertIsNotNone(block, dsn.raw[:3000])
        self.assertEqual(block["Final-Recipient"].split(";")[0].strip().lower(), "rfc822")
        self.assertEqual(block["Action"].strip(), "failed")
        self.assertEqual(block["Status"].strip(), "5.1.1")
        diag = block["Diagnostic-Code"]
        self.assertIsNotNone(diag, block.items())
        self.assertTrue(diag.lower().startswith("smtp;"), diag)
        self.assertIn("550 5.1.1 No such user here", diag)
        self.assertIn("dns; 127.0.0.1", block.get("Remote-MTA", ""))
        self.assertIn("relay.test", dsn.per_message["Reporting-MTA"])
        # The whole original, as a message/rfc822 part.
        ret = dsn.returned
        self.assertIsNotNone(ret, "the original is not attached")
        self.assertEqual(ret.get_content_type(), "message/rfc822")
        inner = ret.get_payload()[0]
        self.assertEqual(inner["Subject"], "bounce test partial")
        self.assertEqual(inner["Message-ID"], "<partial@sender.test>")
        self.assertIn(original, dsn.raw, "the returned message differs from the original")

    def test_notify_never_and_failure(self):
        """NOTIFY=NEVER: no notice for that recipient; NOTIFY=FAILURE (the control in the
        same test) is reported, alone."""
        self.downstream.rcpt_replies = {"quiet@dest.test": "550 5.1.1 No such user",
                                        "loud@dest.test": "550 5.1.1 No such user"}
        self.send_with(body("never"), FROM, ["quiet@dest.test"],
                       rcpt_options={"quiet@dest.test": ["NOTIFY=NEVER"]})
        self.assertTrue(self.relay.wait_log(r"event=bounce_suppressed", 15),
                        "no bounce_suppressed event for NOTIFY=NEVER")
        self.assert_no_dsn()

        self.send_with(body("mixed"), FROM, ["quiet@dest.test", "loud@dest.test"],
                       rcpt_options={"quiet@dest.test": ["NOTIFY=NEVER"],
                                     "loud@dest.test": ["NOTIFY=FAILURE"]})
        dsn = self.one_dsn()
        self.assertEqual([b["Final-Recipient"].split(";")[1].strip() for b in dsn.recipients],
                         ["loud@dest.test"])

    def test_ret_hdrs_returns_only_the_header(self):
        self.downstream.data_replies = ["554 5.6.0 Content rejected"]
        original = body("hdrs")
        self.send_with(original, FROM, ["picky@dest.test"], mail_options=["RET=HDRS"])
        dsn = self.one_dsn()
        self.assertEqual(dsn.recipient("picky@dest.test")["Status"].strip(), "5.6.0")
        ret = dsn.returned
        self.assertIsNotNone(ret)
        self.assertEqual(ret.get_content_type(), "text/rfc822-headers")
        self.assertIn(b"Subject: bounce test hdrs", dsn.raw)
        self.assertNotIn(b"BODY-MARKER-hdrs", dsn.raw, "RET=HDRS returned the body")

    def test_notice_of_a_message_without_blank_line_is_capped(self):
        """236 KB without an empty line: the notice still fits bounce_size_limit (50000)
        and quotes none of the body (its "header section" ends at the first line that is
        not a header field)."""
        self.downstream.data_replies = ["554 5.6.0 Content rejected"]
        original = b"Subject: no blank line\r\n" + b"BODY-MARKER-noblank " + b"b" * 60 + b"\r\n"
        original += (b"b" * 78 + b"\r\n") * 3000
        self.assertGreater(len(original), 236_000)
        self.send_with(original, FROM, ["picky@dest.test"])
        dsn = self.one_dsn()
        print(f"\nnotice for a {len(original)} octet message without a blank line: "
              f"{len(dsn.raw)} octets")
        self.assertLessEqual(len(dsn.raw), 50000)
        self.assertIn(b"Subject: no blank line", dsn.raw)
        self.assertNotIn(b"BODY-MARKER-noblank", dsn.raw)

    def test_many_refused_recipients_get_notices_that_fit(self):
        """150 recipients refused with long replies: no one notice could report them all
        within bounce_size_limit (50000), so several do, each within it, each recipient
        in exactly one."""
        rcpts = [f"gone{i}@dest.test" for i in range(150)]
        self.downstream.rcpt_replies = {
            r: "550 5.1.1 <%s>: %s" % (r, "no such user here " * 25) for r in rcpts}
        self.send_with(body("many"), FROM, rcpts)
        deadline = time.monotonic() + 20
        seen = {}
        while time.monotonic() < deadline and len(seen) < len(rcpts):
            time.sleep(0.5)
            seen = {}
            for m in self.bounces.snapshot():
                dsn = Dsn(m)
                for block in dsn.recipients:
                    final = block["Final-Recipient"].split(";", 1)[1].strip()
                    seen[final] = seen.get(final, 0) + 1
        got = self.bounces.snapshot()
        self.assertGreater(len(got), 1, "one notice for all")
        for m in got:
            self.assertLessEqual(len(m.data), 50000 + 400)   # + the Received: we prepend
            self.assertEqual((m.mail_from, m.rcpt_tos), ("", [FROM]))
        self.assertEqual(seen, {r: 1 for r in rcpts})

    def test_ret_full_returns_the_whole_message(self):
        self.downstream.data_replies = ["554 5.6.0 Content rejected"]
        original = body("full")
        self.send_with(original, FROM, ["picky@dest.test"], mail_options=["RET=FULL"])
        dsn = self.one_dsn()
        self.assertEqual(dsn.returned.get_content_type(), "message/rfc822")
        self.assertIn(original, dsn.raw)

    def test_null_sender_is_never_bounced(self):
        """A notice that cannot be delivered produces no notice of its own."""
        self.downstream.data_replies = ["550 5.7.1 Rejected"]
        self.send_with(body("null"), "", ["reject@dest.test"])
        self.assertEqual(self.downstream.wait_attempts(1, 15), 1)
        self.assertTrue(self.relay.wait_log(r"event=bounce_suppressed .*null sender", 5),
                        "no bounce_suppressed event for the null sender")
        self.assert_no_dsn()
        # Nothing more went anywhere: no notice to "<>" by the "*" route either.
        self.assertEqual(len(self.downstream.attempts), 1, self.downstream.attempts)
        self.assertTrue(self.relay.running())

    def test_undeliverable_notice_is_not_bounced(self):
        """The notice itself is refused by the sender's MTA: it is dropped, not bounced
        again (it comes from <>), and not retried."""
        self.downstream.data_replies = ["550 5.7.1 Rejected"]
        self.bounces.data_replies = ["550 5.1.1 No notices here"] * 10
        self.send_with(body("loop"), FROM, ["reject@dest.test"])
        self.assertEqual(self.bounces.wait_attempts(1, 15), 1, "no notice was attempted")
        notice = self.bounces.attempts[0][0]
        self.assertEqual(notice.mail_from, "")
        self.assertTrue(self.relay.wait_log(r"event=bounce_suppressed .*null sender", 5),
                        "the refused notice was not dropped")
        time.sleep(3)
        self.assertEqual(len(self.bounces.attempts), 1, self.bounces.attempts)
        self.assertEqual(len(self.downstream.attempts), 1, self.downstream.attempts)
        self.assertEqual(len(re.findall(r"event=bounce_queued", self.relay.log_text())), 1)


class MixedTemporaryAndPermanentTest(BounceTest):
    """Issue requirement: the downstream answers 451 then 250 for one recipient and 550
    for the other, both at the same next hop: the right notice goes to the sender."""

    def count_rcpts(self):
        """Counts the RCPT commands the downstream answers, per address (the harness
        only records accepted recipients): wraps this downstream's reply script."""
        counts = {}
        script = self.downstream._rcpt_reply

        def counting(address):
            with self.downstream.cond:
                counts[address] = counts.get(address, 0) + 1
            return script(address)

        self.downstream._rcpt_reply = counting
        return counts

    def test_451_then_250_and_550_one_notice_for_the_refused_only(self):
        """later@ gets 451 on the first attempt and 250 on the retry; gone@ gets 550 every
        time. later@ is delivered exactly once, after the retry, alone; exactly one
        RFC 3464 notice reaches the sender, naming gone@ (failed, 5.1.1) and not later@;
        gone@ is not tried again after its 5xx; nothing more arrives afterwards."""
        later, gone = "later@dest.test", "gone@dest.test"
        self.downstream.rcpt_replies = {later: ["451 4.2.1 Mailbox busy, try later"],
                                        gone: "550 5.1.1 No such user here"}
        rcpts = self.count_rcpts()
        original = body("mixed451")
        self.send_with(original, FROM, [later, gone])

        self.assertEqual(self.downstream.wait_for(1, 15), 1, "later@ not delivered on retry")
        self.assertTrue(self.relay.wait_log(r"event=deferred .*rcpt=later@dest\.test", 1),
                        "the 451 was not logged as a deferral")
        dsn = self.one_dsn()

        # Settle past retry_max (2 s): a second notice, a duplicate delivery or another
        # attempt at gone@ would show up by then.
        time.sleep(3)
        msgs = self.downstream.snapshot()
        self.assertEqual(len(msgs), 1, f"later@ delivered more than once: {msgs}")
        assert_relayed(self, msgs[0], original, FROM, [later])
        self.assertEqual(len(self.bounces.snapshot()), 1,
                         f"more than one notice: {self.bounces.snapshot()}")
        self.assertEqual(len(self.bounces.attempts), 1, self.bounces.attempts)
        self.assertEqual(rcpts.get(later), 2, f"RCPT commands per address: {rcpts}")
        self.assertEqual(rcpts.get(gone), 1,
                         f"gone@ was tried again after a 550 (RCPT counts: {rcpts})")
        self.assertEqual(len(re.findall(r"event=bounce_queued", self.relay.log_text())), 1)

        # The notice: only gone@, failed, with the 5.1.1 and the next hop's reply.
        finals = [b.get("Final-Recipient", "") for b in dsn.recipients]
        self.assertEqual(len(dsn.recipients), 1, f"per-recipient blocks: {finals}")
        block = dsn.recipient(gone)
        self.assertIsNotNone(block, f"gone@ is not reported: {finals}")
        self.assertEqual(block["Action"].strip().lower(), "failed")
        self.assertRegex(block["Status"].strip(), r"^5\.\d{1,3}\.\d{1,3}$")
        self.assertEqual(block["Status"].strip(), "5.1.1")
        self.assertIn("550 5.1.1 No such user here", block.get("Diagnostic-Code", ""))
        self.assertIsNone(dsn.recipient(later), "the delivered recipient is reported")
        # later@ is named nowhere in the report (its human-readable and its
        # machine-readable part); the returned original may carry its own headers.
        for part in dsn.parts[:2]:
            self.assertNotIn(later, part.as_string(), f"later@ named in {part.get_content_type()}")
        self.assertIn(original, dsn.raw, "the original is not returned")


class NextHopExtensionTest(BounceTest):
    """What the next hop announces in EHLO limits what the relay may send it: a message
    larger than its SIZE (RFC 1870) or with 8-bit content when it lacks 8BITMIME
    (RFC 6152; the relay does not convert) is not sent, and the sender is notified.

    "*" leads to a WireDownstream with the EHLO list the test picks (it answers 250 to
    everything, so any refusal is the relay's own); notices go to self.bounces."""

    start_downstream = False

    def setUp(self):
        RelayTestCase.setUp(self)   # neither a downstream nor a relay: start_wire does it

    def start_wire(self, extensions):
        self.wire = WireDownstream(extensions)
        self.addCleanup(self.wire.stop)
        self.bounces = self.add_downstream()
        self.start_relay(self.wire.port, routes=[
            {"domain": "sender.test", "next_hop": f"{HOST}:{self.bounces.port}"}])

    def wire_verbs(self):
        with self.wire.cond:
            return [line.split(b" ", 1)[0].split(b":", 1)[0].upper()
                    for line, _ in self.wire.commands]

    def test_message_larger_than_next_hop_size_is_not_sent(self):
        """The hop announces SIZE 100; a message of several hundred bytes is refused by
        the relay itself before MAIL (552 5.3.4 in the log), never reaches DATA, and the
        sender gets one notice with Status 5.3.4."""
        self.start_wire(["PIPELINING", "8BITMIME", "SIZE 100"])
        original = body("size") + b"filler " * 60 + b"\r\n"
        self.assertGreater(len(original), 400)
        self.send_with(original, FROM, ["big@dest.test"])
        dsn, block = self.failed_block("big@dest.test", "5.3.4")
        self.assertIn("5.3.4 message size", block.get("Diagnostic-Code", ""))
        self.assertIn("(100)", block.get("Diagnostic-Code", ""))
        self.assertRegex(self.relay.log_text(),
                         r"event=bounced .*rcpt=big@dest\.test .*code=552 "
                         r"reply=\"5\.3\.4 message size \d+ exceeds the limit of \S+ \(100\)")
        self.assertIn(original, dsn.raw, "the original is not returned")
        verbs = self.wire_verbs()
        self.assertNotIn(b"DATA", verbs, f"the oversized message was offered: {verbs}")
        self.assertNotIn(b"MAIL", verbs, f"a transaction was started: {verbs}")
        self.assertEqual(self.wire.bodies, [])

    def test_8bit_message_to_hop_without_8bitmime_is_not_sent(self):
        """The hop announces no 8BITMIME; a message with 8-bit bytes in its body, sent to
        the relay with BODY=8BITMIME, is refused by the relay (554 5.6.3) and never
        reaches MAIL or DATA; the sender gets one notice with Status 5.6.3 naming the
        missing 8BITMIME. A 7-bit message to the same hop afterwards is delivered as
        is (no BODY= parameter), and produces no notice."""
        self.start_wire(["PIPELINING", "SIZE 1000000"])
        eight = (b"Subject: 8bit\r\nMessage-ID: <8bit@sender.test>\r\n"
                 b"Content-Type: text/plain; charset=utf-8\r\n"
                 b"Content-Transfer-Encoding: 8bit\r\n\r\n"
                 b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n")
        self.send_with(eight, FROM, ["eight@dest.test"], mail_options=["BODY=8BITMIME"])
        dsn, block = self.failed_block("eight@dest.test", "5.6.3")
        self.assertIn("8BITMIME", block.get("Diagnostic-Code", ""))
        self.assertRegex(self.relay.log_text(),
                         r"event=bounced .*rcpt=eight@dest\.test .*code=554 "
                         r"reply=\"5\.6\.3 \S+ does not support 8BITMIME")
        verbs = self.wire_verbs()
        self.assertNotIn(b"MAIL", verbs, f"the 8-bit message was offered: {verbs}")
        self.assertNotIn(b"DATA", verbs, f"the 8-bit message was offered: {verbs}")
        self.assertEqual(self.wire.bodies, [])

        # Control: the hop itself is fine for 7-bit mail.
        seven = body("seven")
        self.send_with(seven, FROM, ["seven@dest.test"])
        self.assertEqual(self.wire.wait_for(1, 15), 1, "the 7-bit message was not delivered")
        with self.wire.cond:
            lines = [line for line, _ in self.wire.commands]
        mail = [l for l in lines if l.upper().startswith(b"MAIL")]
        self.assertEqual(len(mail), 1, lines)
        self.assertTrue(mail[0].startswith(b"MAIL FROM:<" + FROM.encode() + b">"), mail)
        self.assertNotIn(b"BODY=", mail[0].upper())
        self.assertIn(b"RCPT TO:<seven@dest.test>", lines)
        self.assertNotIn(b"RCPT TO:<eight@dest.test>", lines)
        # The wire keeps the dot-stuffing; the relay prepends its Received: header.
        self.assertTrue(self.wire.bodies[0].startswith(b"Received: "), self.wire.bodies[0][:200])
        self.assertTrue(self.wire.bodies[0].endswith(seven.replace(b"\r\n.", b"\r\n..")),
                        self.wire.bodies[0])
        time.sleep(1)
        self.assertEqual(len(self.bounces.snapshot()), 1, "a notice for the 7-bit message")


class ExpiryTest(BounceTest):

    delivery = {"queue_lifetime": 3}

    def test_expired_after_queue_lifetime(self):
        self.downstream.data_replies = ["451 4.3.2 Try again later"] * 1000
        start = time.monotonic()
        original = body("expiry")
        self.send_with(original, FROM, ["slow@dest.test"])
        dsn = self.one_dsn(timeout=20)
        waited = self.bounces.messages[0].time - start
        self.assertGreaterEqual(waited, 2.5, f"expired after {waited:.1f} s, the lifetime is 3 s")
        block = dsn.recipient("slow@dest.test")
        self.assertIsNotNone(block)
        self.assertEqual(block["Action"].strip(), "failed")
        self.assertEqual(block["Status"].strip(), "4.4.7")
        self.assertIn("451 4.3.2 Try again later", block.get("Diagnostic-Code", ""))
        self.assertIn(original, dsn.raw)
        self.assertEqual(self.downstream.snapshot(), [])
        self.assertGreaterEqual(len(self.downstream.attempts), 2, "expired without a retry")
        # Expired means done: no more attempts.
        attempts = len(self.downstream.attempts)
        time.sleep(3)
        self.assertEqual(len(self.downstream.attempts), attempts, "retried after expiry")



def notice_parts(tc, received, action):
    """A non-failure notice: multipart/report whose recipient blocks all say `action`,
    quoting only the original's header."""
    dsn = Dsn(received)
    tc.assertEqual(dsn.message.get_content_type(), "multipart/report", dsn.raw[:600])
    tc.assertEqual(dsn.parts[1].get_content_type(), "message/delivery-status")
    tc.assertEqual(dsn.parts[2].get_content_type(), "text/rfc822-headers")
    tc.assertTrue(dsn.recipients)
    for block in dsn.recipients:
        tc.assertEqual(block.get("Action", "").strip(), action, block.items())
    return dsn


class SuccessNoticeTest(BounceTest):
    """NOTIFY=SUCCESS, delivered to a next hop without DSN (aiosmtpd offers none): the
    sender hears "relayed", since no notice can come from further on; recipients that did
    not ask are not named."""

    def test_relayed_notice_for_notify_success(self):
        original = body("relayed")
        self.send_with(original, FROM, ["yes@dest.test", "no@dest.test"],
                       rcpt_options={"yes@dest.test": ["NOTIFY=SUCCESS,FAILURE"]})
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        self.assertEqual(self.bounces.wait_for(1, 15), 1, "no relayed notice")
        time.sleep(1)
        got = self.bounces.snapshot()
        self.assertEqual(len(got), 1, got)
        self.assertEqual((got[0].mail_from, got[0].rcpt_tos), ("", [FROM]))
        dsn = notice_parts(self, got[0], "relayed")
        self.assertIn("Successful Mail Delivery Report", dsn.message["Subject"])
        self.assertEqual(len(dsn.recipients), 1)
        self.assertEqual(dsn.recipient("yes@dest.test")["Status"].strip(), "2.0.0")
        self.assertNotIn(b"BODY-MARKER-relayed", dsn.raw, "a success notice quotes the header")

    def test_success_notice_for_an_outsider_is_headers_only_and_capped(self):
        """The abuse from the issue: a client outside relay_networks, a (forged) foreign
        sender, NOTIFY=SUCCESS and 236 KB without an empty line: the notice carries no
        body content and stays within bounce_size_limit."""
        original = b"Subject: reflected\r\n" + b"BODY-MARKER-reflect " + b"r" * 60 + b"\r\n"
        original += (b"r" * 78 + b"\r\n") * 3000
        self.send_with(original, FROM, ["x@accepted.test"], source_ip="127.0.0.2",
                       rcpt_options={"x@accepted.test": ["NOTIFY=SUCCESS"]})
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        self.assertEqual(self.bounces.wait_for(1, 15), 1, "no relayed notice")
        got = self.bounces.snapshot()
        dsn = notice_parts(self, got[0], "relayed")
        self.assertLessEqual(len(dsn.raw), 50000)
        self.assertNotIn(b"BODY-MARKER-reflect", dsn.raw)

    def test_no_notice_without_notify_success(self):
        self.send_with(body("quiet"), FROM, ["r@dest.test"],
                       rcpt_options={"r@dest.test": ["NOTIFY=FAILURE"]})
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        self.assert_no_dsn()


class DelayWarningTest(BounceTest):
    """delivery.delay_warning = 2 s: a message still deferred after it gets one "delayed"
    notice (NOTIFY=DELAY, or no NOTIFY), then goes on being retried and is delivered;
    NOTIFY=NEVER gets none."""

    delivery = {"delay_warning": 2}

    def test_one_delay_notice_then_delivery(self):
        busy = "451 4.2.1 Mailbox busy"
        self.downstream.rcpt_replies = {"slow@dest.test": [busy] * 6,
                                        "never@dest.test": [busy] * 6}
        start = time.monotonic()
        self.send_with(body("delay"), FROM, ["slow@dest.test", "never@dest.test"],
                       rcpt_options={"never@dest.test": ["NOTIFY=NEVER"]})
        self.assertEqual(self.bounces.wait_for(1, 20), 1, "no delay notice")
        self.assertGreaterEqual(self.bounces.snapshot()[0].time - start, 1.9)
        dsn = notice_parts(self, self.bounces.snapshot()[0], "delayed")
        self.assertEqual(len(dsn.recipients), 1)
        block = dsn.recipient("slow@dest.test")
        self.assertEqual(block["Status"].strip(), "4.2.1")
        self.assertIn(busy, block.get("Diagnostic-Code", ""))
        self.assertTrue(block.get("Will-Retry-Until"))
        # Still retried, and delivered once the downstream takes it; no second notice.
        self.assertEqual(self.downstream.wait_for(1, 30), 1)
        time.sleep(1.5)
        self.assertEqual(len(self.bounces.snapshot()), 1, "more than one notice")
        self.assertEqual(sorted(self.downstream.snapshot()[0].rcpt_tos),
                         ["never@dest.test", "slow@dest.test"])

if __name__ == "__main__":
    unittest.main()
