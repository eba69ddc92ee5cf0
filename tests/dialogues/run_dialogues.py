#!/usr/bin/python3
"""Golden-file SMTP dialogues against the real postern binary.

Each tests/dialogues/NAME.in is the client side of one conversation; the runner plays it
against a fresh relay and writes a transcript of interleaved client ("C:") and server
("S:") lines, which must equal NAME.ref byte for byte (after normalising queue ids).
The .in format, the reply-counting rules and the transcript format are described in
README.md next to this file.

    run_dialogues.py [--update] [-j N] [-v] [NAME | PATH.in ...]

--update writes the transcripts as .ref files instead of comparing. A .ref is a
specification, not a recording: read every .ref that --update changes (git diff) and
correct it by hand where the binary is wrong. The relay is $POSTERN_BIN (default
build/postern); its config is the one tests/integration/harness.py writes plus the
dialogue's @config lines.
"""

import argparse
import atexit
import concurrent.futures
import difflib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True   # no __pycache__ in tests/integration
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402  (needs the path above)

READ_TIMEOUT = 5.0       # seconds to wait for each expected reply (@timeout changes it)
END_GRACE = 0.3          # at the end of a dialogue: how long to wait for a close
DELIVERY_TIMEOUT = 15.0  # @delivered: how long to wait for the downstream

QUEUE_ID_RE = re.compile(rb"(queued as )[0-9A-Fa-f]{16}\b")
BDAT_RE = re.compile(rb"^BDAT[ \t]+([0-9]+)([ \t]+LAST)?[ \t]*$", re.IGNORECASE)
CONFIG_RE = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\s*=\s*(.+)$")


class DialogueError(Exception):
    """A malformed .in file."""


# --------------------------------------------------------------------------------------
# Escapes


def unescape(text, where):
    """Bytes of an escaped .in text: \\r \\n \\t \\0 \\xNN \\\\ and \\{N:text} (text
    repeated N times; text is itself escaped and may nest \\{..}; a literal '}' in it
    is written \\x7d)."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i:i + 1]
        if c != b"\\":
            out += c
            i += 1
            continue
        e = text[i + 1:i + 2]
        if e == b"r":
            out += b"\r"
            i += 2
        elif e == b"n":
            out += b"\n"
            i += 2
        elif e == b"t":
            out += b"\t"
            i += 2
        elif e == b"0":
            out += b"\0"
            i += 2
        elif e == b"\\":
            out += b"\\"
            i += 2
        elif e == b"x":
            hexd = text[i + 2:i + 4]
            if not re.fullmatch(rb"[0-9A-Fa-f]{2}", hexd):
                raise DialogueError(f"{where}: \\x needs two hex digits")
            out.append(int(hexd, 16))
            i += 4
        elif e == b"{":
            m = re.match(rb"\\\{([0-9]+):", text[i:])
            if not m:
                raise DialogueError(f"{where}: expected \\{{N:text}}")
            start = end = i + m.end()
            depth = 0
            while end < len(text):
                if text[end:end + 2] == b"\\{":
                    depth += 1
                    end += 2
                elif text[end:end + 1] == b"\\":
                    end += 2
                elif text[end:end + 1] == b"}":
                    if depth == 0:
                        break
                    depth -= 1
                    end += 1
                else:
                    end += 1
            if end >= len(text):
                raise DialogueError(f"{where}: \\{{N:text}} without its closing brace")
            out += unescape(text[start:end], where) * int(m.group(1))
            i = end + 1
        else:
            raise DialogueError(f"{where}: unknown escape \\{e.decode(errors='replace')}")
    return bytes(out)


def escape(data):
    """Printable form of bytes the server sent (the inverse of unescape for one line)."""
    out = bytearray()
    for b in data:
        if b == 0x5C:
            out += b"\\\\"
        elif b == 0x0D:
            out += b"\\r"
        elif b == 0x0A:
            out += b"\\n"
        elif b == 0x09:
            out += b"\\t"
        elif b < 0x20 or b == 0x7F:
            out += b"\\x%02x" % b
        else:
            out.append(b)   # 8-bit bytes (UTF-8 text) are kept as they are
    return bytes(out)


# --------------------------------------------------------------------------------------
# A self-signed certificate for @tls-certificate, made once per run with openssl(1)

_cert_lock = threading.Lock()
_cert = None


def test_certificate():
    global _cert
    with _cert_lock:
        if _cert is None:
            tmp = tempfile.mkdtemp(prefix="postern-dialogue-cert-")
            atexit.register(shutil.rmtree, tmp, ignore_errors=True)
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-days", "2", "-subj", "/CN=relay.test", "-keyout", key,
                            "-out", cert], check=True, capture_output=True)
            _cert = (cert, key)
        return _cert


# --------------------------------------------------------------------------------------
# Parsing .in files


class Step:
    """One thing the client does. kind: line, raw, batch, wait, read, expect_close,
    timeout, delivered. For line/raw: src (as written) and data (bytes to send)."""

    def __init__(self, kind, **kw):
        self.kind = kind
        self.src = b""
        self.data = b""
        self.expect = None     # explicit @expect N for this send
        self.items = []        # batch: line/raw steps
        self.value = None      # wait/timeout seconds, read/delivered count
        self.__dict__.update(kw)


class Dialogue:
    def __init__(self, path):
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.config = []       # (section, key, value)
        self.source = None     # @from address
        self.greeting = True
        self.steps = []


def parse(path):
    d = Dialogue(path)
    with open(path, "rb") as f:
        raw_lines = f.read().split(b"\n")
    lines = [l[:-1] if l.endswith(b"\r") else l for l in raw_lines]
    while lines and lines[-1] == b"":
        lines.pop()
    batch = None
    pending_expect = None
    sent_anything = False
    for no, line in enumerate(lines, 1):
        where = f"{path}:{no}"
        if line.startswith(b"#"):
            continue
        if not line.startswith(b"@"):
            step = Step("line", src=line, data=unescape(line, where) + b"\r\n")
        else:
            word, _, arg = line[1:].partition(b" ")
            word = word.decode(errors="replace")
            argt = arg.decode("utf-8", errors="replace").strip()
            step = None
            if word == "config":
                if sent_anything or batch is not None:
                    raise DialogueError(f"{where}: @config must come before the first send")
                m = CONFIG_RE.match(argt)
                if not m:
                    raise DialogueError(f"{where}: expected @config section.key = value")
                d.config.append((m.group(1), m.group(2), m.group(3).strip()))
                continue
            if word == "from":
                if sent_anything:
                    raise DialogueError(f"{where}: @from must come before the first send")
                d.source = argt
                continue
            if word == "tls-certificate":
                cert, key = test_certificate()
                d.config += [("tls", "certificate", f'"{cert}"'),
                             ("tls", "private_key", f'"{key}"')]
                continue
            if word == "no-greeting":
                if sent_anything:
                    raise DialogueError(f"{where}: @no-greeting must come before the first send")
                d.greeting = False
                continue
            if word == "raw":
                step = Step("raw", src=line, data=unescape(arg, where))
            elif word == "batch":
                if batch is not None:
                    raise DialogueError(f"{where}: nested @batch")
                batch = Step("batch", expect=pending_expect)
                pending_expect = None
                sent_anything = True
                continue
            elif word == "end":
                if batch is None:
                    raise DialogueError(f"{where}: @end without @batch")
                if not batch.items:
                    raise DialogueError(f"{where}: empty @batch")
                if pending_expect is not None:
                    raise DialogueError(f"{where}: @expect with nothing after it")
                d.steps.append(batch)
                batch = None
                continue
            elif word == "expect":
                if not argt.isdigit():
                    raise DialogueError(f"{where}: expected @expect N")
                pending_expect = int(argt)
                continue
            elif word in ("wait", "timeout"):
                try:
                    secs = float(argt)
                except ValueError:
                    raise DialogueError(f"{where}: expected @{word} SECONDS") from None
                step = Step(word, src=line, value=secs)
            elif word in ("read", "delivered"):
                if not argt.isdigit():
                    raise DialogueError(f"{where}: expected @{word} N")
                step = Step(word, src=line, value=int(argt))
            elif word == "expect-close":
                step = Step("expect_close", src=line)
            else:
                raise DialogueError(f"{where}: unknown directive @{word}")
            if batch is not None and step.kind not in ("raw",):
                raise DialogueError(f"{where}: only client lines and @raw inside @batch")
        if step.kind in ("line", "raw"):
            sent_anything = True
            step.expect = pending_expect
            pending_expect = None
            if batch is not None:
                batch.items.append(step)
                continue
        elif pending_expect is not None:
            raise DialogueError(f"{where}: @expect must be followed by a send")
        d.steps.append(step)
    if batch is not None:
        raise DialogueError(f"{path}: @batch without @end")
    if pending_expect is not None:
        raise DialogueError(f"{path}: @expect at the end of the file")
    return d


# --------------------------------------------------------------------------------------
# The relay with @config overrides


def apply_overrides(text, overrides):
    """Sets section.key = value in TOML text as harness.Relay writes it: replaces the key
    in the first [section] or [[section]] table, adds it there, or appends the table."""
    lines = text.rstrip("\n").split("\n")
    for section, key, value in overrides:
        head = None
        for i, l in enumerate(lines):
            if l.strip() in (f"[{section}]", f"[[{section}]]"):
                head = i
                break
        if head is None:
            lines += ["", f"[{section}]", f"{key} = {value}"]
            continue
        end = head + 1
        while end < len(lines) and not lines[end].lstrip().startswith("["):
            end += 1
        for i in range(head + 1, end):
            if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
                lines[i] = f"{key} = {value}"
                break
        else:
            last = end
            while last > head + 1 and lines[last - 1].strip() == "":
                last -= 1
            lines.insert(last, f"{key} = {value}")
    return "\n".join(lines) + "\n"


class DialogueRelay(harness.Relay):
    """harness.Relay (hostname relay.test, relay_networks 127.0.0.1/32, accept_domains
    accepted.test, one worker) with a dialogue's @config lines applied."""

    def __init__(self, next_hop_port, overrides):
        super().__init__(next_hop_port)
        if overrides:
            self.config_text = apply_overrides(self.config_text, overrides)
            with open(self.config_path, "w") as f:
                f.write(self.config_text)


# --------------------------------------------------------------------------------------
# Playing a dialogue


class Player:
    def __init__(self, dialogue, port):
        self.d = dialogue
        self.port = port
        self.out = []              # transcript lines (bytes)
        self.sock = None
        self.buf = b""
        self.eof = False           # the server closed (EOF or reset seen)
        self.closed = False        # <closed> recorded: the dialogue is over
        self.timeout = READ_TIMEOUT
        self.mode = "command"      # or "data" (after a 354)
        self.chunk_left = 0        # BDAT octets still to send

    # -- wire ----------------------------------------------------------------------------

    def connect(self):
        src = (self.d.source, 0) if self.d.source else None
        self.sock = socket.create_connection((harness.HOST, self.port), timeout=10,
                                             source_address=src)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            # The server has gone; whatever it said before is still read below.
            pass

    def _fill(self, deadline):
        """Reads more bytes into buf. False on timeout; sets eof on EOF or reset."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def server(self, text):
        self.out.append(b"S: " + text if text else b"S:")

    def client(self, text):
        self.out.append(b"C: " + text if text else b"C:")

    def read_reply(self):
        """Reads one (possibly multi-line) reply into the transcript; returns its code,
        or None after recording <timeout> or <closed>."""
        deadline = time.monotonic() + self.timeout
        while True:
            line = self._line(deadline)
            if line is None:
                if self.buf:
                    self.server(b"<partial> " + escape(self.buf))
                    self.buf = b""
                if self.eof:
                    self.record_closed()
                else:
                    self.server(b"<timeout>")
                return None
            self.server(escape(QUEUE_ID_RE.sub(rb"\1<ID>", line)))
            if not re.match(rb"^[0-9]{3}([ -]|$)", line):
                return None   # malformed: counted as one reply, shows in the diff
            if line[3:4] != b"-":
                return int(line[:3])

    def record_closed(self):
        self.server(b"<closed>")
        self.closed = True

    def check_close(self, timeout):
        """Waits up to `timeout` for the server to close; records any bytes it sends
        first, then <closed> or <open>."""
        deadline = time.monotonic() + timeout
        while not self.eof and self._fill(deadline):
            pass
        while self.buf:
            line = self._line(deadline)
            if line is None:
                self.server(b"<partial> " + escape(self.buf))
                self.buf = b""
            else:
                self.server(escape(QUEUE_ID_RE.sub(rb"\1<ID>", line)))
        if self.eof:
            self.record_closed()
        else:
            self.server(b"<open>")

    # -- the reply model -------------------------------------------------------------------

    def count(self, item):
        """How many replies sending `item` (a line or raw step) produces (see README)."""
        data = item.data
        n = 0
        if self.chunk_left:
            take = min(len(data), self.chunk_left)
            self.chunk_left -= take
            data = data[take:]
            if self.chunk_left == 0:
                n += 1             # the BDAT command and its chunk: one reply
            if not data:
                return n
            if item.kind == "line":
                return n + 1       # the rest of the line is a command
            return n
        if item.kind == "raw":
            return 0
        if self.mode == "data":
            return 1 if data == b".\r\n" else 0
        m = BDAT_RE.match(data[:-2])
        if m and int(m.group(1)) > 0:
            self.chunk_left = int(m.group(1))
            return 0
        return 1

    def replies(self, n):
        """Reads n replies; follows DATA mode; a 221 or 421 ends the step with a close
        check. Returns False once the connection is closed."""
        last = None
        for _ in range(n):
            code = self.read_reply()
            if self.closed:
                return False
            if code is None:
                continue
            last = code
            if code in (221, 421):
                self.check_close(self.timeout)
                return not self.closed
        if last is not None:
            self.mode = "data" if last == 354 else "command"
        return True

    # -- steps ---------------------------------------------------------------------------

    def play(self, deliveries):
        self.connect()
        if self.d.greeting:
            self.replies(1)
        for step in self.d.steps:
            if step.kind == "delivered":
                deliveries(step.value, self)
                continue
            if self.closed:
                continue   # nothing is sent once the server has closed
            if step.kind in ("line", "raw"):
                self.client(step.src)
                n = self.count(step)   # also keeps the BDAT chunk bookkeeping
                if step.expect is not None:
                    n = step.expect
                self.send(step.data)
                self.replies(n)
            elif step.kind == "batch":
                self.client(b"@batch")
                for item in step.items:
                    self.client(item.src)
                self.client(b"@end")
                self.send(b"".join(item.data for item in step.items))
                if step.expect is not None:
                    for item in step.items:
                        self.count(item)
                    self.replies(step.expect)
                    continue
                for item in step.items:
                    n = self.count(item)
                    if item.expect is not None:
                        n = item.expect
                    if not self.replies(n):
                        break
            elif step.kind == "wait":
                self.client(step.src)
                time.sleep(step.value)
            elif step.kind == "timeout":
                self.timeout = step.value
            elif step.kind == "read":
                self.replies(step.value)
            elif step.kind == "expect_close":
                self.check_close(self.timeout)
        if not self.closed:
            self.check_close(END_GRACE)
        self.sock.close()


def format_delivered(messages):
    """D: lines for the messages the downstream got, sorted (delivery order may vary):
    envelope, then each body line after the relay's Received: header."""
    out = []
    messages = sorted(messages, key=lambda m: (m.mail_from, m.rcpt_tos, m.data))
    for i, m in enumerate(messages, 1):
        rcpts = " ".join(f"<{r}>" for r in m.rcpt_tos)
        out.append(f"D: message {i} from <{m.mail_from}> to {rcpts}".encode())
        try:
            _, body = harness.split_received(m.data)
        except AssertionError:
            out.append(b"D: <no Received: header>")
            body = m.data
        parts = body.split(b"\r\n")
        if parts and parts[-1] == b"":
            parts.pop()
        else:
            parts.append(b"<no final CRLF>")
        out += [b"D: | " + escape(p) if p else b"D: |" for p in parts]
    return out


class Result:
    def __init__(self, dialogue):
        self.d = dialogue
        self.transcript = b""
        self.problems = []    # failures outside the transcript (exit status, sanitizer)
        self.log = ""
        self.tmp = None
        self.seconds = 0.0


def run_one(path):
    start = time.monotonic()
    d = parse(path)
    res = Result(d)
    downstream = harness.Downstream().start()
    relay = DialogueRelay(downstream.port, d.config)
    res.tmp = relay.tmp
    out = []
    try:
        try:
            relay.start()
        except AssertionError as e:
            out.append(b"S: <relay did not start>")
            res.problems.append(str(e).splitlines()[0])
        else:
            player = Player(d, relay.port)

            def deliveries(n, pl):
                got = downstream.wait_for(n, DELIVERY_TIMEOUT)
                msgs = downstream.snapshot()
                pl.out += format_delivered(msgs)
                if got < n:
                    pl.out.append(f"D: <only {got} of {n} messages delivered>".encode())

            try:
                player.play(deliveries)
            except OSError as e:
                player.out.append(b"S: <connection failed>")
                res.problems.append(f"runner: {e!r}")
            finally:
                out = player.out
                if player.sock:
                    player.sock.close()
            rc = relay.stop()
            if rc not in (0, None):
                res.problems.append(f"relay exit status {rc} after SIGTERM")
            log = relay.log_text()
            for marker in ("ERROR: AddressSanitizer", "runtime error:",
                           "ERROR: LeakSanitizer", "ERROR: ThreadSanitizer"):
                if marker in log:
                    res.problems.append(f"sanitizer report in the relay log ({marker})")
    finally:
        res.log = relay.log_text()
        relay.cleanup(keep=True)
        downstream.stop()
    res.transcript = b"\n".join(out) + b"\n"
    res.seconds = time.monotonic() - start
    return res


# --------------------------------------------------------------------------------------
# Command line


def find_dialogues(args):
    if not args:
        return sorted(os.path.join(HERE, f) for f in os.listdir(HERE) if f.endswith(".in"))
    paths = []
    for a in args:
        p = a if a.endswith(".in") else a + ".in"
        if not os.path.exists(p):
            p = os.path.join(HERE, os.path.basename(p))
        if not os.path.exists(p):
            raise SystemExit(f"no such dialogue: {a}")
        paths.append(p)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="write .ref files")
    ap.add_argument("-j", "--jobs", type=int, default=4, help="dialogues run at once")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print the whole relay log of a failing dialogue (default: its tail)")
    ap.add_argument("dialogues", nargs="*")
    args = ap.parse_args()
    harness.require_binary()
    paths = find_dialogues(args.dialogues)
    try:
        for p in paths:
            parse(p)   # report malformed files before starting anything
    except DialogueError as e:
        print(f"malformed dialogue: {e}", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, p) for p in paths]
        for path, fut in zip(paths, futures):
            res = fut.result()
            name = res.d.name
            ref_path = os.path.splitext(path)[0] + ".ref"
            if args.update and not res.problems:
                old = open(ref_path, "rb").read() if os.path.exists(ref_path) else None
                if old != res.transcript:
                    with open(ref_path, "wb") as f:
                        f.write(res.transcript)
                    print(f"wrote {os.path.relpath(ref_path)}")
            ok = not res.problems
            diff = ""
            if not args.update:
                if not os.path.exists(ref_path):
                    ok = False
                    diff = f"missing {ref_path} (run with --update, then review it)\n"
                else:
                    ref = open(ref_path, "rb").read()
                    if ref != res.transcript:
                        ok = False
                        a = ref.decode("utf-8", "backslashreplace").splitlines(True)
                        b = res.transcript.decode("utf-8", "backslashreplace").splitlines(True)
                        diff = "".join(difflib.unified_diff(a, b, f"{name}.ref (expected)",
                                                            f"{name} (relay)"))
            if ok:
                print(f"ok    {name} ({res.seconds:.1f} s)")
                if not os.environ.get("POSTERN_KEEP_TMP"):
                    shutil.rmtree(res.tmp, ignore_errors=True)
                continue
            failed.append(name)
            print(f"FAIL  {name} ({res.seconds:.1f} s; relay files kept in {res.tmp})")
            for p in res.problems:
                print(f"      {p}")
            sys.stdout.write(diff)
            log = res.log.splitlines(True)
            if not args.verbose and len(log) > 40:
                log = [f"... ({len(log) - 40} earlier lines; -v prints all)\n"] + log[-40:]
            print(f"---- relay log of {name}\n{''.join(log)}---- end of log")
            sys.stdout.flush()

    took = time.monotonic() - t0
    print(f"\n{len(paths) - len(failed)} of {len(paths)} dialogues passed in {took:.1f} s")
    if failed:
        print("failed: " + " ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
