"""Next hops that lie or attack (issue 11, deliverable 5): scripted raw-socket servers.

* An endless multi-line reply ("220-" forever) ends the connection after at most 100
  lines; the relay's memory does not grow with it and the message is deferred.
* A reply line of 100 KB is a protocol error: deferred.
* A reply of 250 to DATA (instead of 354) ends the transaction: the message is deferred,
  never counted as delivered without its body.
* A final reply that comes while the body is still being sent (before the final dot left)
  is not taken as the reply to the dot: deferred.

Each hostile hop serves a bounded number of connections, each bounded in bytes and time.
"""

import socket
import threading
import time
import unittest

from harness import HOST, RelayTestCase
from test_limits import rss_kib

FROM = "sender@sender.test"


class ScriptedHop:
    """Accepts connections on HOST and runs script(conn, hop) for each in a thread;
    counts connections and what the script records in `notes`."""

    def __init__(self, script):
        self.script = script
        self.notes = []
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(8)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        conn.settimeout(20)
        try:
            self.script(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def note(self, what):
        with self.lock:
            self.notes.append(what)

    def stop(self):
        self.closed = True
        self.sock.close()


def read_line(conn, buf):
    while b"\r\n" not in buf[0]:
        chunk = conn.recv(65536)
        if not chunk:
            raise OSError("closed")
        buf[0] += chunk
    line, buf[0] = buf[0].split(b"\r\n", 1)
    return line


def envelope_until_data(conn, buf, extensions=()):
    """Greets, answers EHLO/MAIL/RCPT with success; returns at the DATA command."""
    conn.sendall(b"220 hostile.test ESMTP\r\n")
    while True:
        line = read_line(conn, buf)
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            ext = [b"hostile.test"] + list(extensions)
            conn.sendall(b"".join(b"250-" + e + b"\r\n" for e in ext[:-1])
                         + b"250 " + ext[-1] + b"\r\n")
        elif verb == b"DATA":
            return
        elif verb == b"QUIT":
            conn.sendall(b"221 bye\r\n")
            raise OSError("quit")
        else:
            conn.sendall(b"250 2.0.0 Ok\r\n")


class HostileHopTest(RelayTestCase):

    auto_relay = False

    def start_with(self, script):
        hop = ScriptedHop(script)
        self.addCleanup(hop.stop)
        self.start_relay(hop.port, delivery={"command_timeout": 10, "greeting_timeout": 10})
        return hop

    def send_one(self, size=200):
        original = b"Subject: hostile\r\n\r\n" + b"x" * 70 + b"\r\n"
        original += (b"y" * 998 + b"\r\n") * (size // 1000)
        code, resp = self.send(original, FROM, ["u@dest.test"])
        self.assertEqual(code, 250, resp)

    def assert_deferred_not_delivered(self, reason):
        self.relay.wait_log(r"event=deferred .*" + reason, 20)
        log = self.relay.log_text()
        self.assertNotIn("event=delivered", log)

    def test_endless_multiline_reply_is_cut(self):
        def script(conn, hop):
            sent = 0
            line = b"220-" + b"z" * 500 + b"\r\n"
            try:
                while sent < 64 << 20:      # 64 MiB at most, as in the report
                    conn.sendall(line * 64)
                    sent += len(line) * 64
            except OSError:
                pass
            hop.note(sent)
        hop = self.start_with(script)
        rss_before = rss_kib(self.relay.proc.pid)
        self.send_one()
        self.assert_deferred_not_delivered("too many lines")
        time.sleep(0.5)
        with hop.lock:
            notes = list(hop.notes)
        self.assertTrue(notes, "the hostile hop never saw the relay hang up")
        # The relay hung up long before 64 MiB (socket buffers hold a few MiB at most).
        self.assertLess(min(notes), 32 << 20, notes)
        grew = rss_kib(self.relay.proc.pid) - rss_before
        print(f"\nendless reply: hop sent {min(notes) >> 10} KiB before the hang-up; "
              f"relay RSS +{grew} KiB")
        self.assertLess(grew, 16 << 10, "relay memory grew with the endless reply")

    def test_huge_reply_line_is_a_protocol_error(self):
        def script(conn, hop):
            conn.sendall(b"220 " + b"l" * 100_000 + b"\r\n")
            time.sleep(2)
        self.start_with(script)
        self.send_one()
        self.assert_deferred_not_delivered("malformed reply")

    def test_250_to_data_is_not_delivered(self):
        def script(conn, hop):
            buf = [b""]
            envelope_until_data(conn, buf)
            conn.sendall(b"250 2.0.0 sure, delivered\r\n")
            hop.note("250 to DATA")
            try:
                while True:
                    line = read_line(conn, buf)
                    if line.upper().startswith(b"QUIT"):
                        conn.sendall(b"221 bye\r\n")
                        return
                    conn.sendall(b"250 2.0.0 Ok\r\n")
            except OSError:
                pass
        hop = self.start_with(script)
        self.send_one()
        self.assert_deferred_not_delivered("instead of 354")
        self.assertIn("250 to DATA", hop.notes)

    def test_reply_before_the_final_dot_is_not_taken(self):
        # 354, then at once a 250 while the 20 MB body cannot all have left (the hop reads
        # nothing, so the socket buffers fill).
        def script(conn, hop):
            buf = [b""]
            envelope_until_data(conn, buf)
            conn.sendall(b"354 go\r\n250 2.0.0 delivered already\r\n")
            time.sleep(5)
        self.start_with(script)
        self.send_one(size=20_000_000)
        self.assert_deferred_not_delivered("before the end of the message")


if __name__ == "__main__":
    unittest.main()
