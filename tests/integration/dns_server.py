"""A small authoritative DNS server for integration tests, built on dnslib (Debian's
python3-dnslib), answering over UDP on 127.0.0.1:<port> from a record table the test
changes while it runs.

    dns = DnsServer().start()
    dns.mx("example.test", [(10, "mx1.example.test"), (20, "mx2.example.test")])
    dns.a("mx1.example.test", "127.0.0.2")
    dns.fail("broken.test", "servfail")     # or "drop": never answer
    ...
    relay config: [dns] servers = ["127.0.0.1:%d" % dns.port]

Answers follow what a real server says:
* a name with no records at all            -> NXDOMAIN
* a name with records, none of the type    -> NOERROR with an empty answer (no data)
* a name put in failure mode               -> SERVFAIL, or no answer at all ("drop")
Names marked secure(name) are answered with the AD bit set, as a validating resolver
marks what it validated (DANE trusts it with [dns] dnssec = true); all others without.
Answers carry the TTL given with the record (default 300 s). Only UDP is served; the
answers here are small enough never to be truncated. stop() closes the socket, so
queries then meet a closed port (the server is "down"); start() again reuses the port.
"""

import select
import socket
import threading

from dnslib import AAAA, A, DNSRecord, MX, QTYPE, RCODE, RR, TLSA, TXT

HOST = "127.0.0.1"


def _norm(name):
    return name.rstrip(".").lower()


class DnsServer:

    def __init__(self, host=HOST, port=None):
        self.host = host
        self.port = port
        self.lock = threading.Lock()
        self.records = {}    # name -> [(qtype name, rdata, ttl)]
        self.modes = {}      # name -> "servfail" | "drop"
        self.secure_names = set()  # answered with the AD bit
        self.default_mode = None
        self.queries = []    # (name, qtype name) in arrival order
        self.sock = None
        self.thread = None

    # -- the record table (safe to change while serving) ---------------------------------

    def a(self, name, *addresses, ttl=300):
        """Replaces the A records of name."""
        self._set(name, "A", [A(a) for a in addresses], ttl)

    def aaaa(self, name, *addresses, ttl=300):
        self._set(name, "AAAA", [AAAA(a) for a in addresses], ttl)

    def mx(self, name, records, ttl=300):
        """Replaces the MX records of name: [(preference, host)], in the order they are
        put in the answer. (0, ".") is a null MX (RFC 7505)."""
        self._set(name, "MX", [MX(host, pref) for pref, host in records], ttl)

    def tlsa(self, name, records, ttl=300):
        """Replaces the TLSA records of name ("_25._tcp.mx.example.test"):
        [(usage, selector, matching type, data bytes)]."""
        self._set(name, "TLSA", [TLSA(u, s, m, d) for u, s, m, d in records], ttl)

    def txt(self, name, *texts, ttl=300):
        """Replaces the TXT records of name, one record per text."""
        self._set(name, "TXT", [TXT(t) for t in texts], ttl)

    def secure(self, *names):
        """Answers for these names (records, no data or no such name) carry the AD bit."""
        with self.lock:
            self.secure_names.update(_norm(n) for n in names)

    def null_mx(self, name, ttl=300):
        self.mx(name, [(0, ".")], ttl)

    def exists(self, name):
        """Makes name exist without any records (queries get NOERROR, no data)."""
        with self.lock:
            self.records.setdefault(_norm(name), [])

    def remove(self, name):
        with self.lock:
            self.records.pop(_norm(name), None)

    def fail(self, name, mode="servfail"):
        """Queries for name get SERVFAIL ("servfail") or no answer at all ("drop")."""
        assert mode in ("servfail", "drop"), mode
        with self.lock:
            self.modes[_norm(name)] = mode

    def heal(self, name):
        with self.lock:
            self.modes.pop(_norm(name), None)

    def fail_all(self, mode="servfail"):
        """Every query fails this way (None: answer normally again)."""
        assert mode in ("servfail", "drop", None), mode
        with self.lock:
            self.default_mode = mode

    def queried(self, name, qtype=None):
        """How many queries for name (of qtype, if given) arrived."""
        name = _norm(name)
        with self.lock:
            return sum(1 for n, t in self.queries if n == name and (qtype is None or t == qtype))

    def _set(self, name, qtype, rdatas, ttl):
        name = _norm(name)
        with self.lock:
            kept = [r for r in self.records.get(name, []) if r[0] != qtype]
            self.records[name] = kept + [(qtype, rd, ttl) for rd in rdatas]

    # -- serving ------------------------------------------------------------------------

    def start(self):
        assert self.sock is None, "DNS server already running"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, self.port or 0))
        self.port = sock.getsockname()[1]
        self.sock = sock
        self.thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self.thread.start()
        return self

    def stop(self):
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
            self.thread.join(5)

    def address(self):
        return f"{self.host}:{self.port}"

    def _serve(self, sock):
        while True:
            try:
                ready, _, _ = select.select([sock], [], [], 0.2)
            except (OSError, ValueError):
                return
            if self.sock is not sock:
                return
            if not ready:
                continue
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:
                return
            reply = self._answer(data)
            if reply is not None:
                try:
                    sock.sendto(reply, peer)
                except OSError:
                    pass

    def _answer(self, data):
        try:
            request = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - garbage in, nothing out
            return None
        qname = _norm(str(request.q.qname))
        qtype = QTYPE.get(request.q.qtype)
        reply = request.reply()   # same id and question, QR and AA set
        with self.lock:
            self.queries.append((qname, qtype))
            mode = self.modes.get(qname, self.default_mode)
            records = self.records.get(qname)
            records = None if records is None else list(records)
            reply.header.ad = int(qname in self.secure_names)
        if mode == "drop":
            return None
        if mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        elif records is None:
            reply.header.rcode = RCODE.NXDOMAIN
        else:
            for rtype, rdata, ttl in records:
                if rtype == qtype:
                    reply.add_answer(RR(qname, getattr(QTYPE, rtype), rdata=rdata, ttl=ttl))
        return reply.pack()
