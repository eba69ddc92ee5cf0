"""Outbound timeouts (issue 5): a next hop that stops answering is given up on after the
configured timeout, the message is deferred (not bounced, not lost), and it is delivered
once a working downstream takes the hop's place. Also the connect timeout (a listener
whose accept queue is full) and the idle timeout of a pooled connection.

A raw-socket "downstream" stalls at one point of the dialogue: it never sends a
greeting, or never answers EHLO, or never answers end-of-data. Only the timeout under
test is short; the others keep their long defaults, so only the right timer can fire.

Config: retry_min = 1, retry_max = 2, idle_timeout = 1 (seconds)."""

import socket
import threading
import time
import unittest

from harness import HOST, Downstream, RelayTestCase, assert_relayed, free_port

FROM = "timer@origin.test"


def body(tag):
    return f"Subject: timeout {tag}\r\n\r\nstalled next hop {tag}\r\n".encode()


class StallingDownstream:
    """Accepts connections and talks SMTP up to `stall`, then says nothing more:

    * "greeting": never sends the 220 greeting
    * "ehlo":     greets, never answers EHLO
    * "data_end": answers everything, 354 to DATA, never answers end-of-data

    Records each connection as a dict: opened, stalled (when it went silent), closed
    (when the relay closed it), got_body (end-of-data seen)."""

    def __init__(self, stall, port=None):
        self.stall = stall
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port or 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.cond = threading.Condition()
        self.connections = []
        self.stopped = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            rec = {"opened": time.monotonic(), "stalled": None, "closed": None,
                   "got_body": False}
            with self.cond:
                self.connections.append(rec)
                self.conns.append(c)
                self.cond.notify_all()
            threading.Thread(target=self._serve, args=(c, rec), daemon=True).start()

    def _went_silent(self, rec):
        with self.cond:
            rec["stalled"] = time.monotonic()
            self.cond.notify_all()

    def _serve(self, c, rec):
        c.settimeout(30)   # bounded: the relay's timeouts here are a few seconds
        buf = b""
        in_data = False
        silent = False
        try:
            if self.stall == "greeting":
                silent = True
                self._went_silent(rec)
            else:
                c.sendall(b"220 stall.test ESMTP\r\n")
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                if silent:
                    continue
                buf += chunk
                while b"\r\n" in buf and not silent:
                    line, buf = buf.split(b"\r\n", 1)
                    if in_data:
                        if line == b".":
                            in_data = False
                            rec["got_body"] = True
                            if self.stall == "data_end":
                                silent = True
                                self._went_silent(rec)
                            else:
                                c.sendall(b"250 2.0.0 Ok\r\n")
                        continue
                    verb = line.split(b" ", 1)[0].upper()
                    if verb in (b"EHLO", b"HELO"):
                        if self.stall == "ehlo":
                            silent = True
                            self._went_silent(rec)
                        else:
                            c.sendall(b"250-stall.test\r\n250 8BITMIME\r\n")
                    elif verb == b"DATA":
                        in_data = True
                        c.sendall(b"354 Go ahead\r\n")
                    elif verb == b"QUIT":
                        c.sendall(b"221 2.0.0 Bye\r\n")
                        break
                    else:
                        c.sendall(b"250 2.0.0 Ok\r\n")
        except OSError:
            pass
        finally:
            with self.cond:
                rec["closed"] = time.monotonic()
                self.cond.notify_all()
            c.close()

    def wait_closed(self, timeout):
        """The first connection, once the relay has closed it (None if it did not)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (self.connections and self.connections[0]["closed"]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return dict(self.connections[0])

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        # shutdown() wakes the thread blocked in accept(); close() alone would leave the
        # port bound until then.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.cond:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class StallTimeoutTest(RelayTestCase):

    auto_relay = False
    start_downstream = False

    def _run(self, stall, timeout_key, extra_check=None):
        port = free_port()
        stalling = StallingDownstream(stall, port)
        self.addCleanup(stalling.stop)
        self.start_relay(port, delivery={timeout_key: 1})
        original = body(stall)
        code, resp = self.send(original, FROM, [f"{stall}@dest.test"])
        self.assertEqual(code, 250, resp)

        first = stalling.wait_closed(10)
        self.assertIsNotNone(first, f"the relay never gave up on a next hop that stalls at "
                                    f"{stall} ({timeout_key} = 1)")
        self.assertIsNotNone(first["stalled"], first)
        waited = first["closed"] - first["stalled"]
        self.assertGreaterEqual(waited, 0.7, f"gave up after {waited:.2f} s, "
                                             f"{timeout_key} is 1 s")
        self.assertLess(waited, 4, f"gave up only after {waited:.2f} s, {timeout_key} is 1 s")
        if extra_check:
            extra_check(first)
        self.assertTrue(self.relay.wait_log(r"event=next_hop_error .*timeout", 5),
                        "no next_hop_error ... timeout in the log")
        self.assertTrue(self.relay.wait_log(
            rf"event=deferred .*rcpt={stall}@dest\.test .*code=451", 5),
            "the message was not deferred")
        self.assertNotRegex(self.relay.log_text(), r"event=(bounced|expired|bounce_queued)")

        # A working downstream takes the stalled one's place: the retry delivers.
        stalling.stop()
        real = Downstream(port)
        real.start()
        self.addCleanup(real.stop)
        self.assertEqual(real.wait_for(1, 15), 1, "not delivered after the next hop recovered")
        time.sleep(1.5)
        msgs = real.snapshot()
        self.assertEqual(len(msgs), 1, f"delivered more than once: {msgs}")
        assert_relayed(self, msgs[0], original, FROM, [f"{stall}@dest.test"])

    def test_greeting_timeout(self):
        self._run("greeting", "greeting_timeout")

    def test_command_timeout_after_ehlo(self):
        self._run("ehlo", "command_timeout")

    def test_data_timeout_after_end_of_data(self):
        def body_was_sent(conn):
            self.assertTrue(conn["got_body"], "the body never reached the next hop")
        self._run("data_end", "data_timeout", body_was_sent)



class IdleAndConnectTimeoutTest(RelayTestCase):
    """delivery.idle_timeout ends a pooled connection that has waited that long for a
    message (QUIT); delivery.connect_timeout gives up on a TCP connect that never
    completes (a listener whose accept queue is full drops the SYNs)."""

    auto_relay = False

    def deliver_one(self, tag):
        code, resp = self.send(body(tag), FROM, [f"{tag}@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.downstream.wait_for(1, 15), 1)
        return self.downstream.snapshot()[0].time

    def test_idle_connection_ends_after_idle_timeout(self):
        self.start_relay(self.downstream.port, idle_timeout=1)
        delivered = self.deliver_one("idle")
        conn = self.downstream.connections[0]
        deadline = time.monotonic() + 6
        while conn.closed is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIsNotNone(conn.closed, "the pooled connection was never closed")
        idle = conn.closed - delivered
        self.assertGreaterEqual(idle, 0.7, f"closed after {idle:.2f} s, idle_timeout is 1 s")
        self.assertLess(idle, 4, f"closed only after {idle:.2f} s, idle_timeout is 1 s")

    def test_longer_idle_timeout_keeps_the_connection(self):
        """The control: with idle_timeout = 30 the same connection is still open."""
        self.start_relay(self.downstream.port, idle_timeout=30)
        self.deliver_one("kept")
        time.sleep(2.5)
        self.assertIsNone(self.downstream.connections[0].closed)

    def test_connect_timeout(self):
        # A listener that never accepts, its queue filled: further SYNs go unanswered.
        port = free_port()
        lsock = socket.socket()
        self.addCleanup(lsock.close)
        lsock.bind((HOST, port))
        lsock.listen(0)
        fillers = []
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex((HOST, port))
            fillers.append(f)
            self.addCleanup(f.close)
        time.sleep(0.2)
        probe = socket.socket()
        self.addCleanup(probe.close)
        probe.settimeout(1.5)
        try:
            probe.connect((HOST, port))
            self.skipTest("this kernel completes connects to a full accept queue")
        except (socket.timeout, BlockingIOError):
            pass
        self.start_relay(port, delivery={"connect_timeout": 1})
        start = time.monotonic()
        code, resp = self.send(body("connect"), FROM, ["connect@dest.test"])
        self.assertEqual(code, 250, resp)
        self.assertTrue(self.relay.wait_log(r"event=next_hop_error .*timeout", 8),
                        "the relay did not give up on the connect")
        waited = time.monotonic() - start
        self.assertGreaterEqual(waited, 0.7)
        self.assertTrue(self.relay.wait_log(r"event=deferred .*rcpt=connect@dest\.test", 5))

if __name__ == "__main__":
    unittest.main()
