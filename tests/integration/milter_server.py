"""A scripted milter: the Sendmail milter protocol (version 6) spoken by hand, so that a
test can make it answer anything at any step, including what no well-behaved milter
sends (silence, garbage, a closed connection).

A script maps a command letter ('C' connect, 'H' HELO, 'M' MAIL, 'R' RCPT, 'T' DATA,
'L' header, 'N' end of header, 'B' body, 'E' end of message) to what the milter does when
it arrives: a list of packets (code, data) to send, or one of the strings "sleep:SECONDS"
(then continue), "progress:COUNT:SECONDS" (COUNT progress packets that far apart, then
continue), "close" and "garbage". A command not in the script gets 'c' (continue). Everything
received is recorded per connection: commands with their data, and macros.
"""

import socket
import struct
import threading
import time

# The "no reply" protocol flag of each step (SMFIP_NR_*): a milter that sets one sends
# nothing back for that step.
NO_REPLY = {"C": 0x1000, "H": 0x2000, "M": 0x4000, "R": 0x8000, "T": 0x10000, "L": 0x80,
            "N": 0x40000, "B": 0x80000}

# What it takes of the MTA's offer: every action, and no steps or replies left out (the
# "protocol" word can be set by a test to make it skip steps).
ALL_ACTIONS = 0x1FF


def packet(code, data=b""):
    if isinstance(code, str):
        code = code.encode()
    return struct.pack(">I", len(data) + 1) + code + data


def strings(*parts):
    return b"".join(p.encode() + b"\0" for p in parts)


def header_change(index, name, value):
    return struct.pack(">I", index) + strings(name, value)


def reply_code(text):
    return text.encode() + b"\0"


class Connection:
    def __init__(self):
        self.commands = []  # (letter, data) in order
        self.macros = {}    # letter -> {name: value}, the last ones sent for that step
        self.closed = False

    def letters(self):
        return "".join(c for c, _ in self.commands)

    def data_of(self, letter):
        return [d for c, d in self.commands if c == letter]

    def body(self):
        return b"".join(self.data_of("B"))

    def headers(self):
        out = []
        for d in self.data_of("L"):
            name, value, _ = d.split(b"\0")
            out.append((name.decode(), value.decode()))
        return out


class MilterServer:
    def __init__(self, script=None, protocol=0, actions=ALL_ACTIONS, host="127.0.0.1",
                 unix_path=None):
        """unix_path: listen on that Unix socket instead of a loopback port."""
        self.script = dict(script or {})
        self.protocol = protocol
        self.actions = actions
        self.unix_path = unix_path
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(unix_path)
            self.port = None
        else:
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, 0))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        self.connections = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return f"unix:{self.unix_path}" if self.unix_path else f"inet:127.0.0.1:{self.port}"

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass

    def wait_connections(self, n, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.connections) >= n:
                    return list(self.connections)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.connections)} milter connections, expected {n}")

    def wait_for(self, letter, timeout=10):
        """The first connection that has received `letter`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                for c in self.connections:
                    if letter in c.letters():
                        return c
            time.sleep(0.02)
        raise AssertionError(f"no milter connection received {letter!r}")

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            record = Connection()
            with self.lock:
                self.connections.append(record)
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()

    def _read(self, conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _serve(self, conn, record):
        try:
            with conn:
                while True:
                    (length,) = struct.unpack(">I", self._read(conn, 4))
                    data = self._read(conn, length)
                    letter, body = chr(data[0]), data[1:]
                    if letter == "O":
                        conn.sendall(packet("O", struct.pack(">III", 6, self.actions,
                                                             self.protocol)))
                        continue
                    if letter == "D":
                        parts = body[1:].split(b"\0")[:-1]
                        record.macros[chr(body[0])] = {
                            parts[i].decode(): parts[i + 1].decode()
                            for i in range(0, len(parts) - 1, 2)}
                        continue
                    record.commands.append((letter, body))
                    if letter == "Q":
                        return
                    if letter in ("A", "K") or self.protocol & NO_REPLY.get(letter, 0):
                        continue
                    if not self._answer(conn, letter):
                        return
        except (EOFError, OSError):
            pass
        finally:
            record.closed = True

    def _answer(self, conn, letter):
        action = self.script.get(letter, [("c", b"")])
        if action == "close":
            return False
        if action == "garbage":
            conn.sendall(b"\xff\xff\xff\xffnonsense")
            return True
        if isinstance(action, str) and action.startswith("progress:"):
            count, interval = action.split(":")[1:]
            for _ in range(int(count)):
                time.sleep(float(interval))
                conn.sendall(packet("p"))
            conn.sendall(packet("c"))
            return True
        if isinstance(action, str) and action.startswith("sleep:"):
            time.sleep(float(action.split(":", 1)[1]))
            conn.sendall(packet("c"))
            return True
        for code, data in action:
            conn.sendall(packet(code, data))
        return True
