"""Shared pieces of Postern's integration tests.

Everything here runs the real `postern` binary (path in $POSTERN_BIN) against real
peers on the loopback interface:

* free_port()           -- a TCP port nobody listens on right now (bind to port 0).
* Relay                 -- writes a config into its own temp dir, starts/stops/kill -9s
                           the binary, waits until the listener accepts, exposes the log.
* Downstream            -- a capturing SMTP server (aiosmtpd) on a fixed host:port that
                           can be stopped and started again, with scripted replies,
                           optional STARTTLS, and a record of its connections
                           (Connection: concurrency, messages per connection, TLS).
* smtp_client()         -- smtplib.SMTP from a given source address (127.0.0.2 ...).
* split_received()      -- separates the Received: header the relay prepends from the
                           original message bytes.
* WireDownstream        -- a raw-socket SMTP server with a chosen EHLO list that records
                           whether the relay's client pipelined each command.
* ReplyReader           -- reads (possibly pipelined, multi-line) SMTP replies from a
                           raw socket.
* Dsn, check_dsn_shape  -- a delivery status notification (RFC 3464) parsed with the
                           email package, and the checks every notice must pass.
* RelayTestCase         -- per-test Downstream + Relay; on failure the relay log is
                           printed and its temp dir kept ($POSTERN_KEEP_TMP keeps all).

dns_server.DnsServer (dnslib) is the DNS server for MX tests.

Only the standard library and aiosmtpd are used. Run with Debian's /usr/bin/python3.

Caveat on aiosmtpd (1.4.x): with decode_data=False, envelope.content and
envelope.original_content are the same bytes object: the message as received, with
CRLF line ends kept, the leading transparency dot of each line removed (dot-unstuffed)
and without the terminating ".\r\n". That is exactly what the relay was given by its
client, plus the prepended Received: header. aiosmtpd reports the null reverse-path as
"<>" (and needs it non-empty internally); Received.mail_from turns it into "".
aiosmtpd accepts data lines up to 1001 octets with CRLF (998 + CRLF + transparency dot).
"""

import asyncio
import email
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

HOST = "127.0.0.1"

# Enhanced status code (RFC 3463) at the start of a reply text.
ENHANCED_RE = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


def postern_bin():
    path = os.environ.get("POSTERN_BIN")
    if not path:
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.normpath(os.path.join(here, "..", "..", "build", "postern"))
    return path


def require_binary():
    """Path of the postern binary; a missing binary is a failure, not a skip."""
    path = postern_bin()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError(f"postern binary not found or not executable: {path} "
                             f"(set POSTERN_BIN)")
    return path


# Every port handed out in this process, never handed out again: a port picked free is
# not held, so a later pick (the relay's own, made per test) could otherwise return one an
# earlier pick (a test class's extra listener) still means to use.
_handed_out = set()


def free_ports(n, host=HOST):
    """n distinct free ports, none handed out before in this process: the sockets are held
    open together while the kernel picks."""
    socks = []
    try:
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            if s.getsockname()[1] in _handed_out:
                s.close()  # the kernel may offer it again; ask for another
                continue
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
        _handed_out.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()


def free_port(host=HOST):
    """A port on `host` that is free right now (the kernel picks it for port 0) and was not
    handed out before in this process."""
    return free_ports(1, host)[0]


def wait_port(host, port, timeout):
    """True once a TCP connect to host:port succeeds, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def port_accepts(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def toml_value(v):
    """A Python value as a TOML literal (str, bool, int, float, or a list of them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def has_enhanced_code(code, text):
    """The reply text starts with an enhanced status code whose class matches `code`."""
    if isinstance(text, str):
        text = text.encode()
    m = ENHANCED_RE.match(text)
    return bool(m) and m.group(1) == str(code)[0].encode()


# --------------------------------------------------------------------------------------
# The relay under test


class Relay:
    """One postern process with its own config, spool and log in a temp dir.

    Parameters are the config values the tests vary; `extra` is appended verbatim to the
    TOML. The listener and admin ports are picked free at construction and stay the same
    across restart(), as does the spool.

    * next_hop_port: the "*" route goes to HOST:next_hop_port; None writes no "*" route,
      so the relay's default ("*" -> "mx") applies.
    * routes: further [[route]] tables, each a dict of keys ({"domain": "b.test",
      "next_hop": "127.0.0.1:2526", "max_connections": 1}), written before the "*" one.
    * delivery: further [delivery] keys ({"smtp_port": 2525, "greeting_timeout": 1});
      they override retry_min, retry_max and idle_timeout when given there too.
    * server: further [server] keys ({"accept_mode": "handoff", "drain_timeout": 1}),
      admin: further [admin] keys ({"queue_networks": ["127.0.0.1/32"]}).
    """

    START_TIMEOUT = 10.0

    def __init__(self, next_hop_port, *, hostname="relay.test",
                 relay_networks=("127.0.0.1/32",), accept_domains=("accepted.test",),
                 retry_min=1, retry_max=2, idle_timeout=1, workers=1, extra="",
                 routes=(), delivery=None, server=None, admin=None, tmpdir=None,
                 spool_override=None, port=None):
        self.bin = require_binary()
        self.tmp = tmpdir or tempfile.mkdtemp(prefix="postern-it-")
        self.hostname = hostname
        self.port, self.admin_port = free_ports(2)
        if port is not None:   # chosen by the test (e.g. a route back to the relay itself)
            self.port = port
        self.next_hop_port = next_hop_port
        self.spool_dir = os.path.join(self.tmp, "spool")
        self.workers = workers
        self.spool_override = spool_override
        self.config_path = os.path.join(self.tmp, "postern.toml")
        self.log_path = os.path.join(self.tmp, "postern.log")
        self.proc = None
        self.returncodes = []
        # Runs in the child before exec (e.g. resource.setrlimit); None: nothing.
        self.preexec_fn = None
        # Extra environment for the process (e.g. LD_PRELOAD); None: the test's own.
        self.env = None
        nets = ", ".join(f'"{n}"' for n in relay_networks)
        doms = ", ".join(f'"{d}"' for d in accept_domains)
        # [[route]] tables: the given ones, then "*" to the downstream unless
        # next_hop_port is None (the relay's own default then applies: "*" -> "mx").
        all_routes = list(routes)
        if next_hop_port is not None:
            all_routes.append({"domain": "*", "next_hop": f"{HOST}:{next_hop_port}"})
        route_text = "".join(
            "[[route]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in r.items()) + "\n"
            for r in all_routes)
        delivery_keys = {"retry_min": retry_min, "retry_max": retry_max,
                         "idle_timeout": idle_timeout}
        delivery_keys.update(delivery or {})
        delivery_text = "".join(f"{k} = {toml_value(v)}\n" for k, v in delivery_keys.items())
        self.config_text = (
            "[server]\n"
            f'hostname = "{hostname}"\n'
            f"workers = {workers}\n"
            f'spool_dir = "{self.spool_dir}"\n'
            + "".join(f"{k} = {toml_value(v)}\n" for k, v in (server or {}).items()) +
            "\n"
            "[[listener]]\n"
            f'address = "{HOST}:{self.port}"\n'
            "\n"
            "[relay]\n"
            f"relay_networks = [{nets}]\n"
            f"accept_domains = [{doms}]\n"
            "\n"
            + route_text +
            "[delivery]\n"
            + delivery_text +
            "\n"
            "[admin]\n"
            f'address = "{HOST}:{self.admin_port}"\n'
            + "".join(f"{k} = {toml_value(v)}\n" for k, v in (admin or {}).items())
            + (("\n" + extra + "\n") if extra else "")
        )
        with open(self.config_path, "w") as f:
            f.write(self.config_text)

    # -- process control ---------------------------------------------------------------

    def argv(self):
        argv = [self.bin, "--config", self.config_path]
        if self.spool_override:
            argv += ["--spool-dir", self.spool_override]
        return argv

    def start(self, timeout=START_TIMEOUT, wait_recovered=True):
        assert self.proc is None, "relay already running"
        listening_before = self._listening_lines()
        recovered_before = self._recovered_lines()
        with open(self.log_path, "ab") as log:
            log.write(f"---- harness: starting {' '.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.tmp, preexec_fn=self.preexec_fn,
                                         env=None if self.env is None
                                         else {**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.returncodes.append(rc)
                self.proc = None
                raise AssertionError(
                    f"postern exited with status {rc} during start-up.\n"
                    f"config:\n{self.config_text}\nlog:\n{self.log_text()}")
            # Our own "listening" line, not just an open port: a port picked free can be
            # taken by another test's server meanwhile, and would then accept for us.
            # The relay takes mail while its spool replays; tests start from a replayed
            # one (every worker's spool_recovered), as they did before replay went async.
            if (self._listening_lines() > listening_before and port_accepts(HOST, self.port)
                    and (not wait_recovered
                         or self._recovered_lines() >= recovered_before + self.workers)):
                return self
            time.sleep(0.05)
        self.kill9()
        raise AssertionError(
            f"postern did not accept connections on {HOST}:{self.port} within "
            f"{timeout} s.\nconfig:\n{self.config_text}\nlog:\n{self.log_text()}")

    def stop(self, grace=5.0):
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit status."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            self._note("SIGTERM did not stop the relay within %.1f s; sent SIGKILL" % grace)
        self.returncodes.append(rc)
        self.proc = None
        return rc

    def kill9(self):
        if self.proc is None:
            return None
        self.proc.kill()
        rc = self.proc.wait()
        self.returncodes.append(rc)
        self.proc = None
        self._note("killed with SIGKILL")
        return rc

    def restart(self, timeout=START_TIMEOUT):
        if self.proc is not None:
            self.stop()
        return self.start(timeout)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self, keep=False):
        if self.proc is not None:
            self.kill9()
        if not keep and not os.environ.get("POSTERN_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- diagnostics -------------------------------------------------------------------

    def _note(self, text):
        with open(self.log_path, "ab") as log:
            log.write(f"---- harness: {text}\n".encode())

    def _listening_lines(self):
        return len(re.findall(r'event=listening|"event":\s*"listening"', self.log_text()))

    def _recovered_lines(self):
        return len(re.findall(r'event=spool_recovered|"event":\s*"spool_recovered"',
                              self.log_text()))

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout):
        """Wait (bounded) until `pattern` (regex) appears in the log; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text())
            if m or time.monotonic() >= deadline:
                return m
            time.sleep(0.1)

    # -- clients -----------------------------------------------------------------------

    def client(self, source_ip=None, timeout=15):
        return smtp_client(HOST, self.port, source_ip=source_ip, timeout=timeout)


def smtp_client(host, port, source_ip=None, timeout=15):
    """smtplib.SMTP connected to host:port, from `source_ip` if given (127.0.0.2 ...)."""
    src = (source_ip, 0) if source_ip else None
    s = smtplib.SMTP(timeout=timeout, source_address=src)
    code, msg = s.connect(host, port)
    s.greeting = (code, msg)
    return s


# --------------------------------------------------------------------------------------
# The downstream MTA


class Received:
    """One message as the downstream saw it."""

    def __init__(self, peer, helo, mail_from, mail_options, rcpt_tos, rcpt_options, data,
                 tls=False, connection=None):
        self.peer = peer
        self.helo = helo
        self.mail_from = mail_from
        self.mail_options = mail_options
        self.rcpt_tos = rcpt_tos
        self.rcpt_options = rcpt_options
        self.data = data          # bytes, dot-unstuffed, CRLF kept, without ".\r\n"
        self.tls = tls            # the session had been upgraded with STARTTLS
        self.connection = connection  # the Connection it came over
        self.time = time.monotonic()

    def __repr__(self):
        return (f"Received(from={self.mail_from!r}, to={self.rcpt_tos!r}, "
                f"{len(self.data)} bytes)")


class _Handler:
    def __init__(self, owner):
        self.owner = owner

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address   # "<>" for the null reverse-path (aiosmtpd needs
                                       # it non-empty); Received.mail_from has ""
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.owner._rcpt_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        data = bytes(envelope.original_content)
        assert data == bytes(envelope.content)
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        conn = getattr(server, "_postern_conn", None)
        msg = Received(session.peer, session.host_name, mail_from,
                       list(envelope.mail_options), list(envelope.rcpt_tos),
                       list(envelope.rcpt_options), data, tls=session.ssl is not None,
                       connection=conn)
        if self.owner.data_delay:
            await asyncio.sleep(self.owner.data_delay)
        return self.owner._data_done(msg)


class Connection:
    """One TCP connection a Downstream accepted."""

    def __init__(self, peer):
        self.peer = peer
        self.opened = time.monotonic()
        self.closed = None        # time.monotonic() once closed
        self.tls = False          # upgraded with STARTTLS
        self.messages = 0         # messages accepted over it

    def __repr__(self):
        return (f"Connection(peer={self.peer!r}, tls={self.tls}, messages={self.messages}, "
                f"open={self.closed is None})")


class _TrackingSMTP(SMTP):
    """aiosmtpd's SMTP protocol, reporting connections to its Downstream.

    A connection counts from the first byte the client sends: the Controller's own
    readiness probe connects, reads the banner and closes without sending anything.
    connection_made runs a second time on the same object after STARTTLS (with
    _original_transport set)."""

    def __init__(self, owner, handler, **kwargs):
        super().__init__(handler, **kwargs)
        self._postern_owner = owner
        self._postern_conn = None

    def data_received(self, data):
        if self._postern_conn is None:
            self._postern_conn = self._postern_owner._opened(self.session.peer)
        super().data_received(data)

    def connection_made(self, transport):
        upgraded = self._original_transport is not None
        super().connection_made(transport)
        if upgraded and self._postern_conn is not None:
            self._postern_conn.tls = True

    def connection_lost(self, error):
        super().connection_lost(error)
        if self._postern_conn is not None:
            self._postern_owner._closed(self._postern_conn)


class _TrackingController(Controller):
    def __init__(self, owner, handler, **kwargs):
        super().__init__(handler, **kwargs)
        self._postern_owner = owner

    def factory(self):
        return _TrackingSMTP(self._postern_owner, self.handler, **self.SMTP_kwargs)


class Downstream:
    """Capturing SMTP server on host:port built on aiosmtpd.

    * messages: the accepted messages (Received objects), in arrival order.
    * attempts: every completed DATA, accepted or not, as (Received, reply).
    * data_replies: list of replies for the first DATA transactions, consumed in order
      (e.g. ["451 4.3.0 Try again later"] answers 451 once, then 250).
    * rcpt_replies: {address: reply} for RCPT TO (e.g. 550 for one recipient); a list
      instead of one reply is consumed in order, then the address is accepted
      (["451 4.2.0 Busy"]: 451 once, then 250).
    * connections: every connection from a client (Connection objects); max_concurrent
      is the most that were open at once. The connection aiosmtpd's Controller makes to
      itself while starting (it sends nothing) is not counted.
    * host: the address to listen on (127.0.0.2 ... for MX hosts that share a port).
    * tls_context: an ssl.SSLContext to offer STARTTLS with; require_starttls refuses
      MAIL before it.
    * data_delay: seconds to wait before answering end-of-data (a slow downstream).
    """

    def __init__(self, port=None, host=HOST, tls_context=None, require_starttls=False,
                 data_delay=0):
        self.host = host
        self.port = port or free_port(host)
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.data_delay = data_delay
        self.controller = None
        self.cond = threading.Condition()
        self.messages = []
        self.attempts = []
        self.data_replies = []
        self.rcpt_replies = {}
        self.connections = []
        self.open_connections = 0
        self.max_concurrent = 0

    # scripted replies
    def _rcpt_reply(self, address):
        with self.cond:
            reply = self.rcpt_replies.get(address)
            if isinstance(reply, list):
                return reply.pop(0) if reply else None
            return reply

    def _data_done(self, msg):
        with self.cond:
            reply = self.data_replies.pop(0) if self.data_replies else None
            if reply is None or reply.startswith("2"):
                self.messages.append(msg)
                if msg.connection is not None:
                    msg.connection.messages += 1
                reply = reply or "250 2.0.0 OK queued"
            self.attempts.append((msg, reply))
            self.cond.notify_all()
            return reply

    # connection tracking (called on the controller's thread)
    def _opened(self, peer):
        conn = Connection(peer)
        with self.cond:
            self.connections.append(conn)
            self.open_connections += 1
            self.max_concurrent = max(self.max_concurrent, self.open_connections)
            self.cond.notify_all()
        return conn

    def _closed(self, conn):
        with self.cond:
            if conn.closed is None:
                conn.closed = time.monotonic()
                self.open_connections -= 1
            self.cond.notify_all()

    def start(self):
        assert self.controller is None, "downstream already running"
        kwargs = {}
        if self.tls_context is not None:
            kwargs = {"tls_context": self.tls_context,
                      "require_starttls": self.require_starttls}
        self.controller = _TrackingController(
            self, _Handler(self), hostname=self.host, port=self.port, decode_data=False,
            server_hostname="downstream.test", ready_timeout=10, **kwargs)
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def running(self):
        return self.controller is not None

    def wait_for(self, n, timeout):
        """Wait until at least n messages were accepted; returns the count reached."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return len(self.messages)

    def wait_attempts(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.attempts) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return len(self.attempts)

    def snapshot(self):
        with self.cond:
            return list(self.messages)

    def wait_connections(self, n, timeout):
        """Wait until at least n client connections were accepted; returns the count."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.connections) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return len(self.connections)


class WireDownstream:
    """A minimal raw-socket SMTP server for protocol-level checks aiosmtpd can't make:
    it advertises exactly `extensions` in its EHLO reply and records, for every command
    line, whether more client bytes had already arrived before it replied (i.e. whether
    the client pipelined). Replies 250 to everything, 354 to DATA, 221 to QUIT.

    commands: list of (line bytes without CRLF, pipelined bool)
    bodies:   list of message bytes as received (still dot-stuffed), one per DATA

    stall: if an Event, each connection stops reading after its 354 until it is set (a
    next hop that takes the body slowly); `stalled` counts the connections that did.
    gate: if an Event, connections are closed at once, without a greeting, until it is set
    (a next hop that is down).
    """

    def __init__(self, extensions=("PIPELINING", "8BITMIME"), stall=None, gate=None):
        self.extensions = list(extensions)
        self.stall = stall
        self.gate = gate
        self.stalled = 0
        self.commands = []
        self.bodies = []
        self.cond = threading.Condition()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, c):
        import select
        buf = b""
        data, scanned = bytearray(), 0
        in_data = False
        try:
            if self.gate is not None and not self.gate.is_set():
                return
            c.sendall(b"220 wire.test ESMTP\r\n")
            while True:
                while b"\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                if in_data:
                    # The body ends at the first "." line: found in what has come so far
                    # (not line by line, which copies a large body once per line).
                    data.extend(buf)
                    buf = b""
                    if data.startswith(b".\r\n"):
                        end, after = 0, 3
                    else:
                        i = data.find(b"\r\n.\r\n", max(0, scanned - 4))
                        if i < 0:
                            scanned = len(data)
                            chunk = c.recv(65536)
                            if not chunk:
                                return
                            buf = chunk
                            continue
                        end, after = i + 2, i + 5
                    in_data = False
                    buf = bytes(data[after:])
                    with self.cond:
                        self.bodies.append(bytes(data[:end]))
                        self.cond.notify_all()
                    c.sendall(b"250 2.0.0 Ok\r\n")
                    continue
                line, buf = buf.split(b"\r\n", 1)
                if not buf and select.select([c], [], [], 0.3)[0]:
                    buf += c.recv(65536)
                with self.cond:
                    self.commands.append((line, bool(buf)))
                verb = line.split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    ext = [b"wire.test"] + [e.encode() for e in self.extensions]
                    c.sendall(b"".join(b"250-" + e + b"\r\n" for e in ext[:-1])
                              + b"250 " + ext[-1] + b"\r\n")
                elif verb == b"DATA":
                    in_data = True
                    data, scanned = bytearray(), 0
                    c.sendall(b"354 Go ahead\r\n")
                    if self.stall is not None:
                        with self.cond:
                            self.stalled += 1
                            self.cond.notify_all()
                        self.stall.wait(120)
                elif verb == b"QUIT":
                    c.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    c.sendall(b"250 2.0.0 Ok\r\n")
        except OSError:
            pass
        finally:
            c.close()

    def wait_for(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.bodies) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return len(self.bodies)

    def stop(self):
        self.closed = True
        self.sock.close()


# --------------------------------------------------------------------------------------
# Message helpers


def split_received(raw):
    """Split `raw` into (received_header, rest): the first header of `raw` including
    its continuation lines (each line with its CRLF), and everything after it.
    Raises AssertionError if `raw` does not start with a Received: header."""
    if not raw.startswith(b"Received:"):
        raise AssertionError(f"message does not start with Received: {raw[:200]!r}")
    pos = raw.index(b"\r\n") + 2
    while pos < len(raw) and raw[pos:pos + 1] in (b" ", b"\t"):
        pos = raw.index(b"\r\n", pos) + 2
    return raw[:pos], raw[pos:]


def check_received(tc, header, hostname="relay.test"):
    """Assertions on the Received: header the relay prepends."""
    tc.assertTrue(header.startswith(b"Received: from "), header)
    tc.assertIn(b"by " + hostname.encode(), header)
    tc.assertTrue(header.endswith(b"\r\n"), header)
    tc.assertIn(b"\r\n\t", header, "Received: header is not folded with CRLF TAB")
    # No bare CR or LF inside the header: every LF is preceded by CR and vice versa.
    tc.assertEqual(header.count(b"\n"), header.count(b"\r\n"), header)
    tc.assertEqual(header.count(b"\r"), header.count(b"\r\n"), header)
    for line in header.split(b"\r\n")[:-1]:
        tc.assertLessEqual(len(line), 998, line)


def assert_relayed(tc, got, original, mail_from, rcpts, hostname="relay.test"):
    """`got` (Received) is `original` with the relay's Received: header on top."""
    tc.assertEqual(got.mail_from, mail_from)
    tc.assertEqual(got.rcpt_tos, list(rcpts))
    header, rest = split_received(got.data)
    check_received(tc, header, hostname)
    if rest != original:
        # Locate the first difference for a readable failure.
        i = next((k for k in range(min(len(rest), len(original))) if rest[k] != original[k]),
                 min(len(rest), len(original)))
        tc.fail(f"relayed body differs from the original at offset {i} "
                f"(got {len(rest)} bytes, sent {len(original)}):\n"
                f"  got:  {rest[max(0, i - 40):i + 40]!r}\n"
                f"  sent: {original[max(0, i - 40):i + 40]!r}")


class Dsn:
    """A delivery status notification (RFC 3464) as a downstream received it, parsed with
    the email package: `message` (the whole multipart/report), `parts` (its three parts),
    `per_message` (the first field block of the message/delivery-status part, a Message),
    `recipients` (one Message per recipient block) and `returned` (the third part)."""

    def __init__(self, received):
        raw = received.data
        if raw.startswith(b"Received:"):
            raw = split_received(raw)[1]
        self.raw = raw
        self.message = email.message_from_bytes(raw)
        self.parts = self.message.get_payload() if self.message.is_multipart() else []
        self.per_message = None
        self.recipients = []
        self.returned = None
        for part in self.parts:
            if part.get_content_type() == "message/delivery-status":
                blocks = part.get_payload()
                self.per_message = blocks[0] if blocks else None
                self.recipients = blocks[1:]
        if len(self.parts) >= 3:
            self.returned = self.parts[2]

    def recipient(self, address):
        """The per-recipient block whose Final-Recipient is address, or None."""
        for block in self.recipients:
            final = block.get("Final-Recipient", "")
            if final.split(";", 1)[-1].strip().lower() == address.lower():
                return block
        return None


def check_dsn_shape(tc, dsn):
    """multipart/report; report-type=delivery-status with text, status and original."""
    m = dsn.message
    tc.assertEqual(m.get_content_type(), "multipart/report", dsn.raw[:600])
    tc.assertEqual((m.get_param("report-type") or "").lower(), "delivery-status")
    tc.assertGreaterEqual(len(dsn.parts), 2, dsn.raw[:2000])
    tc.assertEqual(dsn.parts[0].get_content_type(), "text/plain")
    tc.assertEqual(dsn.parts[1].get_content_type(), "message/delivery-status")
    tc.assertIsNotNone(dsn.per_message)
    tc.assertTrue(dsn.per_message.get("Reporting-MTA", "").startswith("dns;"),
                  dsn.per_message.items())
    tc.assertTrue(dsn.recipients, "no per-recipient block")
    for block in dsn.recipients:
        tc.assertEqual(block.get("Action", "").strip().lower(), "failed", block.items())
        tc.assertRegex(block.get("Status", ""), r"^[45]\.\d{1,3}\.\d{1,3}$")


# --------------------------------------------------------------------------------------
# Raw-socket SMTP


class ReplyReader:
    """Reads complete SMTP replies (multi-line aware) from a socket."""

    def __init__(self, sock, timeout=10):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; partial data {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """One reply as (code:int, [text lines as bytes])."""
        lines = []
        while True:
            line = self._line()
            if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3:4] not in b" -"):
                raise AssertionError(f"malformed reply line {line!r}")
            lines.append(line[4:])
            if len(line) == 3 or line[3:4] == b" ":
                return int(line[:3]), lines

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def at_eof(self, timeout=5):
        """True if the peer closes the connection (after any buffered bytes)."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ConnectionAbortedError):
            return True
        except socket.timeout:
            return False


# --------------------------------------------------------------------------------------
# Test base class


class RelayTestCase(unittest.TestCase):
    """Starts a Downstream and a Relay per test; dumps the relay log when a test fails.

    With auto_relay = False, setUp starts only the downstream and the test calls
    start_relay() with the config it needs (other downstreams, routes, DNS servers)."""

    start_downstream = True
    auto_relay = True
    relay_kwargs = {}
    relay = None

    def setUp(self):
        self.downstream = Downstream()
        if self.start_downstream:
            self.downstream.start()
        self.addCleanup(self.downstream.stop)
        if self.auto_relay:
            self.start_relay(self.downstream.port, **self.relay_kwargs)

    def start_relay(self, next_hop_port, **kwargs):
        """Creates and starts self.relay (stopped and checked at cleanup)."""
        assert self.relay is None, "this test already has a relay"
        self.relay = Relay(next_hop_port, **kwargs)
        self.addCleanup(self._cleanup_relay)
        self.relay.start()
        return self.relay

    def add_downstream(self, **kwargs):
        """Starts another Downstream, stopped at cleanup."""
        ds = Downstream(**kwargs)
        ds.start()
        self.addCleanup(ds.stop)
        return ds

    _failed = False

    def _callTestMethod(self, method):
        # Remember a failing test body so the cleanup can dump the relay log.
        # (unittest resets _outcome.success around each cleanup, so it can't be used.)
        try:
            return super()._callTestMethod(method)
        except BaseException:
            self._failed = True
            raise

    def _cleanup_relay(self):
        failed = self._failed
        rc = self.relay.stop()
        log = self.relay.log_text()
        # SIGTERM must drain and exit 0; a sanitizer report (ASan build) must fail the test.
        bad_exit = rc not in (0, None)
        sanitizer = "ERROR: AddressSanitizer" in log or "runtime error:" in log \
            or "ERROR: LeakSanitizer" in log or "WARNING: ThreadSanitizer" in log
        failed = failed or bad_exit or sanitizer
        if failed:
            lines = self.relay.log_text().splitlines(keepends=True)
            if len(lines) > 300:
                lines = [f"... ({len(lines) - 300} earlier lines in {self.relay.log_path})\n"] \
                    + lines[-300:]
            sys.stderr.write(f"\n==== postern log for {self.id()} (kept in {self.relay.tmp}) ====\n"
                             f"{''.join(lines)}==== end of log ====\n")
        self.relay.cleanup(keep=failed)
        if bad_exit or sanitizer:
            raise AssertionError(f"postern exit status {rc} after SIGTERM"
                                 + (" with a sanitizer report" if sanitizer else ""))

    def send(self, original, mail_from, rcpts, source_ip=None, mail_options=()):
        """Sends one message through the relay with smtplib; returns the DATA reply."""
        with self.relay.client(source_ip) as s:
            s.ehlo("client.test")
            code, resp = s.mail(mail_from, list(mail_options))
            self.assertEqual(code, 250, resp)
            for r in rcpts:
                code, resp = s.rcpt(r)
                self.assertEqual(code, 250, resp)
            code, resp = s.data(original)
            return code, resp
