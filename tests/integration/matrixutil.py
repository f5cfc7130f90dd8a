"""Recording backends and raw clients for test_protocol_matrix.py.

H1Backend: threaded HTTP/1.1 server on raw sockets (exact framing, duplicate
fields, chunked trailers). H2Backend: threaded h2c (prior knowledge) server on
python3-h2. Both record every request under its `x-case` header, including the
protocol that actually arrived (an HTTP/2 preface reaching the HTTP/1.1 backend,
or HTTP/1.x reaching the HTTP/2 backend, is recorded, not silently dropped).

Both answer by path:
  /echo?rf=cl|chunked|none&rt=1&n=N   200; body = the request body, or N
                                      deterministic bytes if n is given;
                                      rf = response framing (chunked: H1 only,
                                      none: H2 only, i.e. no content-length);
                                      rt=1: response trailers (chunked/none only)
  /status/204 | /status/304 | /status/404
HEAD gets the headers GET would get (content-length included) and no body.
Every response carries x-backend (h1|h2) and x-case.
"""
import random
import socket
import threading
import time
import urllib.parse

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NOT_FOUND_BODY = b"no such thing\n"
RESP_TRAILERS = [("x-resp-trailer", "done"), ("x-resp-checksum", "abc123")]


def pattern(n):
    """n deterministic, non-periodic bytes (an offset bug cannot hide)."""
    return random.Random(n * 7919 + 1).randbytes(n)


def plan_response(method, target, req_body):
    """(status, headers[(name, value)], body, trailers or None, framing) for a
    request, protocol-neutral; the caller applies the framing (cl, chunked,
    none, nobody)."""
    url = urllib.parse.urlsplit(target)
    q = dict(urllib.parse.parse_qsl(url.query))
    if url.path.startswith("/status/"):
        code = int(url.path[len("/status/"):])
        if code == 404:
            return 404, [("content-type", "text/plain")], NOT_FOUND_BODY, None, "cl"
        if code == 304:
            return 304, [("etag", '"v1"')], b"", None, "nobody"
        return code, [], b"", None, "nobody"
    body = pattern(int(q["n"])) if "n" in q else bytes(req_body)
    trailers = RESP_TRAILERS if q.get("rt") == "1" else None
    return 200, [("content-type", "application/octet-stream")], body, trailers, q.get("rf", "cl")


def _chunk_sizes(n):
    """Varied chunk sizes covering 1-byte and larger-than-frame chunks."""
    sizes, i, cycle = [], 0, (1, 7, 4096, 100000, 16384, 3)
    while n > 0:
        s = min(n, cycle[i % len(cycle)])
        sizes.append(s)
        n -= s
        i += 1
    return sizes


def chunked_encode(body, trailers=None):
    out, off = bytearray(), 0
    for s in _chunk_sizes(len(body)):
        out += b"%x\r\n" % s + body[off:off + s] + b"\r\n"
        off += s
    out += b"0\r\n"
    for k, v in trailers or ():
        out += f"{k}: {v}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


class _Reader:
    """Buffered reads on a socket with a deadline per call (socket timeout)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        d = self.sock.recv(262144)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def until(self, sep, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self._fill()

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self):
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def parse_head(raw):
    """Start line and [(name, value)] with names as sent (not lowercased)."""
    lines = raw.decode("latin-1").split("\r\n")
    fields = []
    for ln in lines[1:]:
        if not ln:
            continue
        k, _, v = ln.partition(":")
        fields.append((k, v.strip()))
    return lines[0], fields


def read_chunked(rd):
    body, trailers = bytearray(), []
    while True:
        size = int(rd.until(b"\r\n")[:-2].split(b";")[0], 16)
        if size == 0:
            break
        body += rd.exact(size)
        if rd.exact(2) != b"\r\n":
            raise ValueError("bad chunk terminator")
    while True:
        ln = rd.until(b"\r\n")[:-2]
        if not ln:
            break
        k, _, v = ln.decode("latin-1").partition(":")
        trailers.append((k, v.strip()))
    return bytes(body), trailers


def field(fields, name):
    """All values of `name` (case-insensitive), in order."""
    return [v for k, v in fields if k.lower() == name]


class _Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_case = {}
        self.other = []   # requests/failures that carried no x-case
        self.errors = []
        self.connections = 0

    def record(self, rec):
        case = next((v for k, v in rec.get("headers", []) if k.lower() == "x-case"), None)
        with self.lock:
            if case is None:
                self.other.append(rec)
            else:
                self.by_case[case] = rec

    def get(self, case, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if case in self.by_case:
                    return self.by_case[case]
            time.sleep(0.01)
        raise AssertionError(f"backend never recorded case {case}; other={self.other[-3:]} "
                             f"errors={self.errors[-3:]}")


class _Server(_Recorder):
    def __init__(self, port):
        super().__init__()
        self.port = port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(128)
        self.socks = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            c.settimeout(60)
            with self.lock:
                self.connections += 1
                self.socks.append(c)
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        try:
            self.serve(c)
        except (OSError, EOFError):
            pass
        except Exception as e:  # recorded so that a test can show it
            with self.lock:
                self.errors.append(repr(e))
        finally:
            c.close()

    def close(self):
        self.closed = True
        self.lsock.close()
        with self.lock:
            for c in self.socks:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class H1Backend(_Server):
    kind = "h1"

    def serve(self, c):
        rd = _Reader(c)
        while True:
            raw = rd.until(b"\r\n\r\n", limit=65536)
            if raw.startswith(b"PRI * HTTP/2.0"):
                self.record({"proto": "HTTP/2-preface", "raw": raw})
                return
            start, fields = parse_head(raw)
            method, target, version = start.split(" ")
            te = ",".join(field(fields, "transfer-encoding")).lower()
            trailers = None
            if "chunked" in te:
                body, trailers = read_chunked(rd)
                framing = "chunked"
            elif field(fields, "content-length"):
                body = rd.exact(int(field(fields, "content-length")[0]))
                framing = "cl"
            else:
                body, framing = b"", "none"
            self.record({"proto": version, "method": method, "target": target, "headers": fields,
                         "body": body, "framing": framing, "trailers": trailers, "raw_head": raw})
            case = (field(fields, "x-case") or ["-"])[0]
            status, hdrs, rbody, rtrailers, rf = plan_response(method, target, body)
            head = [f"HTTP/1.1 {status} X", "x-backend: h1", f"x-case: {case}",
                    "Connection: keep-alive", "Keep-Alive: timeout=30"]
            head += [f"{k}: {v}" for k, v in hdrs]
            out = b""
            if rf == "cl":
                head.append(f"Content-Length: {len(rbody)}")
                out = rbody
            elif rf == "chunked":
                head.append("Transfer-Encoding: chunked")
                out = chunked_encode(rbody, rtrailers)
            if method == "HEAD":
                out = b""
            c.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + out)
            if "close" in ",".join(field(fields, "connection")).lower():
                return


class _H2Pump:
    """Outgoing DATA under flow control, then trailers or END_STREAM."""

    def _init_pump(self, sock, conn):
        self.sock, self.conn, self.pending = sock, conn, {}

    def queue(self, sid, data, trailers):
        self.pending[sid] = [memoryview(bytes(data)), 0, trailers]

    def flush(self):
        for sid in list(self.pending):
            p = self.pending[sid]
            try:
                while p[1] < len(p[0]):
                    n = min(self.conn.local_flow_control_window(sid),
                            self.conn.max_outbound_frame_size, len(p[0]) - p[1])
                    if n <= 0:
                        break
                    self.conn.send_data(sid, p[0][p[1]:p[1] + n].tobytes())
                    p[1] += n
                if p[1] == len(p[0]):
                    if p[2]:
                        self.conn.send_headers(sid, p[2], end_stream=True)
                    else:
                        self.conn.end_stream(sid)
                    del self.pending[sid]
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.pending.pop(sid, None)
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)


def _h2conn(client):
    cfg = h2.config.H2Configuration(client_side=client, header_encoding=None,
                                    validate_inbound_headers=False,
                                    normalize_inbound_headers=False)
    conn = h2.connection.H2Connection(config=cfg)
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 22})
    conn.increment_flow_control_window(1 << 24)
    return conn


def _dec(hdrs):
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in hdrs]


class H2Backend(_Server):
    kind = "h2"
    trace = None  # set to a list to log every h2 event (debugging)

    def serve(self, c):
        rd = _Reader(c)
        try:
            while len(rd.buf) < 24 and PREFACE.startswith(bytes(rd.buf)):
                rd._fill()
        except EOFError:
            pass
        first = bytes(rd.buf[:24])
        if first != PREFACE:
            try:
                head = rd.until(b"\r\n\r\n", limit=65536)
            except (EOFError, ValueError, OSError):
                head = bytes(rd.buf)
            _, fields = parse_head(head) if b"\r\n" in head else ("", [])
            self.record({"proto": "HTTP/1.x", "headers": fields, "raw_head": head})
            return
        pump = _H2Pump()
        conn = _h2conn(False)
        pump._init_pump(c, conn)
        streams = {}
        data = bytes(rd.buf)
        while True:
            if not data:
                data = c.recv(262144)
                if not data:
                    return
            events = conn.receive_data(data)
            data = b""
            for ev in events:
                if self.trace is not None:
                    self.trace.append(repr(ev)[:300])
                if isinstance(ev, h2.events.RequestReceived):
                    streams[ev.stream_id] = {"headers": _dec(ev.headers), "body": bytearray(),
                                             "trailers": None}
                elif isinstance(ev, h2.events.DataReceived):
                    streams[ev.stream_id]["body"] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    streams[ev.stream_id]["trailers"] = _dec(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    self._respond(pump, ev.stream_id, streams.pop(ev.stream_id))
                elif isinstance(ev, h2.events.StreamReset):
                    streams.pop(ev.stream_id, None)
                    pump.pending.pop(ev.stream_id, None)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    pump.flush()
                    return
            pump.flush()

    def _respond(self, pump, sid, st):
        hdrs = st["headers"]
        pseudo = dict((k, v) for k, v in hdrs if k.startswith(":"))
        method, target = pseudo.get(":method", ""), pseudo.get(":path", "")
        self.record({"proto": "HTTP/2", "method": method, "target": target, "headers": hdrs,
                     "body": bytes(st["body"]), "trailers": st["trailers"],
                     "framing": "cl" if field(hdrs, "content-length") else "none"})
        case = (field(hdrs, "x-case") or ["-"])[0]
        status, extra, body, trailers, rf = plan_response(method, target, st["body"])
        out = [(":status", str(status)), ("x-backend", "h2"), ("x-case", case)] + extra
        if rf == "cl":
            out.append(("content-length", str(len(body))))
        if method == "HEAD" or rf == "nobody":
            body, trailers = b"", None
            pump.conn.send_headers(sid, out, end_stream=True)
            return
        pump.conn.send_headers(sid, out, end_stream=False)
        pump.queue(sid, body, trailers)


class H2Client(_H2Pump):
    """An h2c prior-knowledge client; streams of one `exchange` run concurrently."""

    def __init__(self, port, idle=3):
        sock = socket.create_connection(("127.0.0.1", port), timeout=idle)
        self.idle = idle
        self._init_pump(sock, _h2conn(True))
        self.goaway = None
        self.flush()

    def exchange(self, reqs, timeout=30):
        """Fails when nothing arrives for `idle` seconds or all takes over `timeout`.
        reqs: [{"headers": [(k, v)], "body": bytes, "trailers": [(k, v)] or None}].
        Returns per request {"status", "headers", "body", "trailers", "reset"}."""
        sids, res = [], {}
        for r in reqs:
            sid = self.conn.get_next_available_stream_id()
            body, trailers = r.get("body", b""), r.get("trailers")
            end = not body and not trailers
            self.conn.send_headers(sid, r["headers"], end_stream=end)
            if not end:
                self.queue(sid, body, trailers)
            sids.append(sid)
            res[sid] = {"status": None, "headers": [], "body": bytearray(), "trailers": None,
                        "reset": None, "ended": False, "informational": []}
        self.flush()
        deadline = time.time() + timeout
        while not all(res[s]["ended"] or res[s]["reset"] is not None for s in sids):
            if self.goaway is not None:
                break
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError(f"h2 streams unfinished: {res}")
            self.sock.settimeout(min(left, self.idle))
            data = self.sock.recv(262144)
            if not data:
                raise EOFError(f"proxy closed the h2 connection; streams: {res}")
            for ev in self.conn.receive_data(data):
                st = res.get(getattr(ev, "stream_id", None))
                if isinstance(ev, h2.events.ResponseReceived):
                    st["headers"] = _dec(ev.headers)
                    st["status"] = int(dict(st["headers"])[":status"])
                elif isinstance(ev, h2.events.InformationalResponseReceived):
                    st["informational"].append(_dec(ev.headers))
                elif isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    if st is not None:
                        st["body"] += ev.data
                elif isinstance(ev, h2.events.TrailersReceived):
                    st["trailers"] = _dec(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    st["ended"] = True
                elif isinstance(ev, h2.events.StreamReset):
                    if st is not None:
                        st["reset"] = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = ev.error_code
            self.flush()
        out = []
        for s in sids:
            r = res[s]
            r["body"] = bytes(r["body"])
            out.append(r)
        return out

    def close(self):
        try:
            self.conn.close_connection()
            self.sock.sendall(self.conn.data_to_send())
        except OSError:
            pass
        self.sock.close()


class H1Client:
    """A raw HTTP/1.1 client on one persistent connection."""

    def __init__(self, port, idle=3, send_timeout=20):
        """Reads fail after `idle` seconds without a byte; a whole send after send_timeout."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=idle)
        self.idle, self.send_timeout = idle, send_timeout
        self.rd = _Reader(self.sock)

    def request(self, method, target, headers, body=b"", framing="cl", trailers=None):
        """framing: cl (content-length), chunked (with optional trailers), none."""
        head = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
        if framing == "cl":
            head.append(f"Content-Length: {len(body)}")
            payload = body
        elif framing == "chunked":
            head.append("Transfer-Encoding: chunked")
            payload = chunked_encode(body, trailers)
        else:
            payload = b""
        self.sock.settimeout(self.send_timeout)
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        self.sock.settimeout(self.idle)
        return self.response(method)

    def response(self, method):
        while True:
            start, fields = parse_head(self.rd.until(b"\r\n\r\n"))
            status = int(start.split(" ")[1])
            if status >= 200 or status == 101:
                break
        r = {"status": status, "version": start.split(" ")[0], "headers": fields,
             "body": b"", "trailers": None, "framing": "none"}
        if method == "HEAD" or status in (204, 304):
            return r
        te = ",".join(field(fields, "transfer-encoding")).lower()
        if "chunked" in te:
            r["body"], r["trailers"] = read_chunked(self.rd)
            r["framing"] = "chunked"
        elif field(fields, "content-length"):
            r["body"] = self.rd.exact(int(field(fields, "content-length")[0]))
            r["framing"] = "cl"
        else:
            r["body"] = self.rd.rest()
            r["framing"] = "close"
        return r

    def close(self):
        self.sock.close()
