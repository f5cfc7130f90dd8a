"""A tiny authoritative DNS server on loopback UDP, for tests of the proxy's
resolver (docs/config.md, clusters[].dns).

It parses each query (one question), answers A and AAAA records from a
table the test changes at will, with the TTL the test sets, or answers
NXDOMAIN or SERVFAIL, or nothing at all (a silent server), and counts the
queries per (name, type). Standard library only; loopback only.
"""
import socket
import struct
import threading

A, AAAA = 1, 28
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3


def _name_at(msg, off):
    """The name at off (no compression in queries) and the offset after it."""
    labels = []
    for _ in range(128):
        n = msg[off]
        off += 1
        if n == 0:
            return ".".join(labels).lower(), off
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(msg[off:off + n].decode("ascii"))
        off += n
    raise ValueError("name too long")


class DnsServer:
    """records: {name: {"A": [ip, ...], "AAAA": [ip, ...]}}; names not listed
    are NXDOMAIN. rcode: {name: SERVFAIL | NXDOMAIN} overrides. silent: set
    of names that get no answer at all. ttl: TTL of every record."""

    def __init__(self, host="127.0.0.1", port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self.lock = threading.Lock()
        self.records = {}
        self.rcode = {}
        self.silent = set()
        self.ttl = 1
        self.queries = {}  # (name, "A"/"AAAA"/type number) -> count
        self.log = []      # (name, type) in arrival order
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def set(self, name, a=(), aaaa=()):
        with self.lock:
            self.records[name.lower()] = {"A": list(a), "AAAA": list(aaaa)}
            self.rcode.pop(name.lower(), None)

    def fail(self, name, rcode=SERVFAIL):
        with self.lock:
            self.rcode[name.lower()] = rcode

    def count(self, name, qtype="A"):
        with self.lock:
            return self.queries.get((name.lower(), qtype), 0)

    def _serve(self):
        while True:
            try:
                msg, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self._answer(msg)
            except (ValueError, IndexError, struct.error):
                continue  # not a query we understand: no answer
            if reply is not None:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    return

    def _answer(self, msg):
        qid, flags, qd, _, _, _ = struct.unpack("!HHHHHH", msg[:12])
        if flags & 0x8000 or qd != 1:
            raise ValueError("not a single-question query")
        name, off = _name_at(msg, 12)
        qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
        question = msg[12:off + 4]
        tname = {A: "A", AAAA: "AAAA"}.get(qtype, qtype)
        with self.lock:
            self.queries[(name, tname)] = self.queries.get((name, tname), 0) + 1
            self.log.append((name, tname))
            if name in self.silent:
                return None
            rcode = self.rcode.get(name)
            rec = self.records.get(name)
            ttl = self.ttl
        answers = []
        if rcode is None:
            if rec is None:
                rcode = NXDOMAIN
            else:
                rcode = NOERROR
                if qtype == A:
                    answers = [(A, socket.inet_pton(socket.AF_INET, ip)) for ip in rec["A"]]
                elif qtype == AAAA:
                    answers = [(AAAA, socket.inet_pton(socket.AF_INET6, ip)) for ip in rec["AAAA"]]
        # QR, opcode 0, AA, RD copied, RA; the question echoed.
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        out = struct.pack("!HHHHHH", qid, rflags, 1, len(answers), 0, 0) + question
        for rtype, data in answers:
            # A pointer to the question's name (offset 12).
            out += struct.pack("!HHHIH", 0xC00C, rtype, qclass, ttl, len(data)) + data
        return out

    def close(self):
        self.sock.close()
