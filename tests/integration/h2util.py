"""HTTP/2 helpers for the integration tests (python3-h2 over raw sockets).

- H2Client: a scripted HTTP/2 client (h2c prior knowledge or TLS+ALPN h2)
  that records, per stream, the interim and final headers, the body, the
  trailers and any RST_STREAM, and the GOAWAY it got.
- frame()/parse_frames(): hand-made frames for abuse cases that a correct
  client library refuses to produce, and a parser for what comes back.
- H1Backend: a threaded HTTP/1.1 server that records requests including
  chunked trailers and answers by path (trailers, slow, hop-by-hop headers).
- H2Backend: a threaded h2c (prior knowledge) server that records the
  requests and resets it receives; /slow streams its body slowly.
"""
import socket
import ssl
import struct
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB

# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


# ---------------------------------------------------------------- raw frames

def frame(ftype, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id & 0x7FFFFFFF) + payload


def parse_frames(buf):
    """Complete frames in buf as [(type, flags, stream_id, payload)]."""
    out, i = [], 0
    while len(buf) - i >= 9:
        length = int.from_bytes(buf[i:i + 3], "big")
        if len(buf) - i < 9 + length:
            break
        ftype, flags = buf[i + 3], buf[i + 4]
        sid = int.from_bytes(buf[i + 5:i + 9], "big") & 0x7FFFFFFF
        out.append((ftype, flags, sid, bytes(buf[i + 9:i + 9 + length])))
        i += 9 + length
    return out


def goaways(frames):
    """[(last_stream_id, error_code)] of the GOAWAY frames."""
    return [(int.from_bytes(p[0:4], "big") & 0x7FFFFFFF, int.from_bytes(p[4:8], "big"))
            for t, _, _, p in frames if t == GOAWAY]


def resets(frames):
    """{stream_id: error_code} of the RST_STREAM frames."""
    return {sid: int.from_bytes(p[0:4], "big") for t, _, sid, p in frames if t == RST_STREAM}


def settings_payload(pairs):
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


def read_until_closed(sock, timeout=5.0, limit=64 << 20):
    """Everything the peer sends until it closes (or timeout). Returns (bytes, closed)."""
    data = bytearray()
    deadline = time.time() + timeout
    while time.time() < deadline and len(data) < limit:
        sock.settimeout(max(0.01, min(0.5, deadline - time.time())))
        try:
            chunk = sock.recv(262144)
        except socket.timeout:
            continue
        except (ConnectionResetError, ssl.SSLError, OSError):
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), False


def request_headers_block(encoder, path="/", method="GET", authority="test", extra=()):
    return encoder.encode([(":method", method), (":scheme", "http"), (":path", path),
                           (":authority", authority), *extra])


# ---------------------------------------------------------------- client

def tls_context(cert=None, key=None, ca=None, alpn=("h2",)):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SVIDs carry a SPIFFE URI, no DNS name
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def connect(port, ssl_ctx=None, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ssl_ctx is not None:
        s = ssl_ctx.wrap_socket(s)
    return s


class Resp:
    def __init__(self):
        self.interim = []      # [[(name, value)]] of 1xx header blocks
        self.headers = None    # [(name, value)] of the final response
        self.data = bytearray()
        self.trailers = None
        self.ended = False
        self.reset = None      # RST_STREAM error code from the server

    @property
    def status(self):
        return int(dict(self.headers)[":status"]) if self.headers else None

    @property
    def done(self):
        return self.ended or self.reset is not None


class H2Client:
    def __init__(self, port, ssl_ctx=None, timeout=5.0, auto_window=True, settings=None,
                 validate=True):
        self.port = port
        self.sock = connect(port, ssl_ctx, timeout)
        self.alpn = self.sock.selected_alpn_protocol() if ssl_ctx is not None else None
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate,
                                        normalize_outbound_headers=validate)
        self.conn = h2.connection.H2Connection(cfg)
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.auto_window = auto_window
        self.streams = {}
        self.goaway = None        # (error_code, last_stream_id)
        self.closed = False
        self.error = None         # h2 ProtocolError raised while receiving
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        out = self.conn.data_to_send()
        if out and not self.closed:
            try:
                self.sock.sendall(out)
            except OSError:
                self.closed = True

    def request(self, path="/", method="GET", headers=(), body=None, end_stream=None,
                authority="test", scheme="http"):
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Resp()
        hdrs = [(":method", method), (":scheme", scheme), (":path", path),
                (":authority", authority), *headers]
        if end_stream is None:
            end_stream = body is None
        self.conn.send_headers(sid, hdrs, end_stream=end_stream)
        self.flush()
        if body is not None:
            self.send_body(sid, body, end_stream=True)
        return sid

    def send_body(self, sid, body, end_stream=True, timeout=30.0, partial=False):
        """Send body bytes, waiting for window as needed. Returns the count
        sent; with partial=True, stops (instead of raising) when no window
        opens within timeout."""
        view = memoryview(body)
        sent = 0
        deadline = time.time() + timeout
        while True:
            if self.streams[sid].reset is not None:
                return sent
            window = min(self.conn.local_flow_control_window(sid),
                         self.conn.max_outbound_frame_size)
            if window > 0 and len(view):
                n = min(window, len(view))
                self.conn.send_data(sid, view[:n].tobytes(), end_stream=end_stream and n == len(view))
                view = view[n:]
                sent += n
                self.flush()
                if not len(view):
                    return sent
                continue
            if not len(view):
                if end_stream:
                    self.conn.end_stream(sid)
                    self.flush()
                return sent
            if time.time() > deadline or self.closed:
                if partial:
                    return sent
                raise TimeoutError(f"no window to send on stream {sid}")
            self.pump(0.05)

    def send_trailers(self, sid, trailers):
        self.conn.send_headers(sid, list(trailers), end_stream=True)
        self.flush()

    def reset(self, sid, code=CANCEL):
        self.conn.reset_stream(sid, code)
        self.flush()

    def ping(self, opaque=b"12345678"):
        self.conn.ping(opaque)
        self.flush()

    def pump(self, timeout=0.2):
        """Read once (up to timeout) and process what came. False once closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            return True
        except (ConnectionResetError, ssl.SSLError, OSError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self.error = e
            self.closed = True
            return False
        for ev in events:
            self._event(ev)
        self.flush()
        return True

    def _event(self, ev):
        st = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.InformationalResponseReceived):
            st.interim.append(list(ev.headers))
        elif isinstance(ev, h2.events.ResponseReceived):
            st.headers = list(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            st.data += ev.data
            if self.auto_window and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            st.trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded):
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if st is not None:
                st.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (ev.error_code, ev.last_stream_id)

    def wait(self, pred, timeout=5.0):
        deadline = time.time() + timeout
        while not pred():
            if time.time() > deadline or self.closed:
                return pred()
            self.pump(min(0.2, max(0.01, deadline - time.time())))
        return True

    def wait_done(self, sid, timeout=10.0):
        self.wait(lambda: self.streams[sid].done, timeout)
        return self.streams[sid]

    def get(self, path="/", timeout=10.0, **kw):
        return self.wait_done(self.request(path, **kw), timeout)

    def close(self):
        if not self.closed:
            try:
                self.conn.close_connection()
                self.flush()
            except Exception:
                pass
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class RawConn:
    """A frame-level HTTP/2 client for cases python-h2 cannot follow (it
    refuses every frame after a GOAWAY, even for streams still in flight).
    Records (time, type, flags, stream_id, payload) of every frame received,
    decodes header blocks in order, and acknowledges the peer's SETTINGS."""

    def __init__(self, port, ssl_ctx=None, timeout=5.0):
        import hpack
        self.sock = connect(port, ssl_ctx, timeout)
        self.enc, self.dec = hpack.Encoder(), hpack.Decoder()
        self.buf = b""
        self.frames = []
        self.headers = {}    # stream id -> [header list]
        self.data = {}       # stream id -> bytes
        self.closed = False
        self.send(PREFACE + frame(SETTINGS, 0, 0))

    def send(self, data):
        self.sock.sendall(data)

    def request(self, sid, path, method="GET", end_stream=True, extra=()):
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        self.send(frame(HEADERS, flags, sid,
                        request_headers_block(self.enc, path, method, extra=extra)))

    def read(self, timeout=0.2):
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout:
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        now = time.time()
        frames = parse_frames(self.buf)
        self.buf = self.buf[sum(9 + len(f[3]) for f in frames):]
        for t, fl, sid, payload in frames:
            self.frames.append((now, t, fl, sid, payload))
            if t == SETTINGS and not fl & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            elif t == HEADERS:
                block = payload
                if fl & 0x8:   # PADDED
                    block = block[1:len(block) - block[0]]
                if fl & 0x20:  # PRIORITY
                    block = block[5:]
                self.headers.setdefault(sid, []).append(
                    [(k.decode() if isinstance(k, bytes) else k,
                      v.decode() if isinstance(v, bytes) else v)
                     for k, v in self.dec.decode(block)])
            elif t == DATA:
                self.data[sid] = self.data.get(sid, b"") + payload
        return True

    def wait(self, pred, timeout=5.0):
        deadline = time.time() + timeout
        while not pred():
            if time.time() > deadline or not self.read(0.1):
                return pred()
        return True

    def ended(self, sid):
        return any(t in (DATA, HEADERS) and fl & END_STREAM and s == sid
                   for _, t, fl, s, _ in self.frames)

    def first(self, ftype, sid=None):
        """Time and payload of the first frame of a type (on a stream)."""
        for ts, t, _, s, p in self.frames:
            if t == ftype and (sid is None or s == sid):
                return ts, p
        return None

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- backends

def _read_line(f):
    line = f.readline(65537)
    if not line:
        raise EOFError
    return line


class H1Backend:
    """Threaded HTTP/1.1 server. Records {method, path, headers, body, trailers,
    chunked} per request. Paths:
      /trailers   chunked response "hello" + trailers x-resp-trailer, x-checksum
      /slow?ms=N  waits N ms, then 200 "slow done"
      /hop        a response carrying hop-by-hop fields (Connection, Keep-Alive, ...)
      /noread     waits 2 s before reading the request body, then echoes it
      other       200 with the request body echoed (content-length framed)
    Requests with Expect: 100-continue get an interim 100 before the body is read."""

    def __init__(self, port):
        self.port = port
        self.requests = []
        self.events = []      # ("100-sent", path) / ("request", path)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(64)
        self.stopping = False
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line = _read_line(f)
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers = []
                while True:
                    h = _read_line(f)
                    if h in (b"\r\n", b"\n"):
                        break
                    k, v = h.decode("latin-1").split(":", 1)
                    headers.append((k.strip().lower(), v.strip()))
                hd = dict(headers)
                if target.startswith("/noread"):
                    time.sleep(2.0)   # a stalled upstream: the body waits in buffers
                if hd.get("expect", "").lower() == "100-continue":
                    self.events.append(("100-sent", target))
                    c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body, trailers, chunked = b"", [], False
                if hd.get("transfer-encoding", "").lower() == "chunked":
                    chunked = True
                    while True:
                        size = int(_read_line(f).split(b";")[0], 16)
                        if size == 0:
                            while True:
                                t = _read_line(f)
                                if t in (b"\r\n", b"\n"):
                                    break
                                k, v = t.decode("latin-1").split(":", 1)
                                trailers.append((k.strip().lower(), v.strip()))
                            break
                        body += f.read(size)
                        _read_line(f)
                elif "content-length" in hd:
                    body = f.read(int(hd["content-length"]))
                self.requests.append({"method": method, "path": target, "headers": headers,
                                      "body": body, "trailers": trailers, "chunked": chunked})
                self.events.append(("request", target))
                self._respond(c, method, target, body)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _respond(self, c, method, target, body):
        if target.startswith("/trailers"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                      b"Transfer-Encoding: chunked\r\nTrailer: x-resp-trailer, x-checksum\r\n\r\n"
                      b"5\r\nhello\r\n6\r\n world\r\n0\r\n"
                      b"x-resp-trailer: done\r\nx-checksum: 42\r\n\r\n")
        elif target.startswith("/slow"):
            ms = int(target.split("ms=")[1].split("&")[0]) if "ms=" in target else 1000
            time.sleep(ms / 1000.0)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nslow done")
        elif target.startswith("/hop"):
            c.sendall(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-private\r\n"
                      b"Keep-Alive: timeout=30\r\nProxy-Connection: keep-alive\r\n"
                      b"Upgrade: h2c\r\nX-Private: secret\r\nX-Kept: yes\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n3\r\nhop\r\n0\r\n\r\n")
        else:
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            c.sendall(head + (body if method != "HEAD" else b""))

    def close(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass


class H2Backend:
    """Threaded h2c (prior knowledge) server. Records each request
    (headers dict, fields: the header list in order, body) and each
    RST_STREAM received as (stream_id, code).
    /slow: 200 then 1 KiB every 20 ms for up to 10 s; /reset?code=N: 200,
    "partial", then RST_STREAM N; /nolen: 200 "no length" without
    content-length; /trailers: 200 "hello" + trailer x-up-trailer; else
    200 "h2 backend" (content-length framed). Request trailers are recorded."""

    def __init__(self, port):
        self.port = port
        self.requests = []
        self.resets = []
        self.connections = 0
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(64)
        self.stopping = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.connections += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        c.sendall(conn.data_to_send())
        slow = {}      # stream id -> chunks left
        pending = {}   # stream id -> (headers, body)
        fields = {}    # stream id -> [(name, value)] as received
        trailers = {}
        c.settimeout(0.02)
        try:
            while not self.stopping:
                try:
                    data = c.recv(65536)
                    if not data:
                        return
                    events = conn.receive_data(data)
                except socket.timeout:
                    events = []
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        pending[ev.stream_id] = (dict(ev.headers), bytearray())
                        fields[ev.stream_id] = list(ev.headers)
                    elif isinstance(ev, h2.events.DataReceived):
                        pending[ev.stream_id][1].extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        trailers[ev.stream_id] = list(ev.headers)
                    elif isinstance(ev, h2.events.StreamEnded):
                        hd, body = pending.pop(ev.stream_id)
                        self.requests.append({"headers": hd, "body": bytes(body),
                                              "fields": fields.pop(ev.stream_id, []),
                                              "trailers": trailers.pop(ev.stream_id, None)})
                        if hd[":path"].startswith("/trailers"):
                            conn.send_headers(ev.stream_id, [(":status", "200")])
                            conn.send_data(ev.stream_id, b"hello")
                            conn.send_headers(ev.stream_id, [("x-up-trailer", "yes")],
                                              end_stream=True)
                        elif hd[":path"].startswith("/slow"):
                            conn.send_headers(ev.stream_id, [(":status", "200")])
                            slow[ev.stream_id] = 500
                        elif hd[":path"].startswith("/reset"):
                            # headers and a little body, then RST_STREAM with ?code=N
                            code = int(hd[":path"].split("code=")[1])
                            conn.send_headers(ev.stream_id, [(":status", "200")])
                            conn.send_data(ev.stream_id, b"partial")
                            c.sendall(conn.data_to_send())
                            time.sleep(0.05)
                            conn.reset_stream(ev.stream_id, code)
                        elif hd[":path"].startswith("/nolen"):
                            conn.send_headers(ev.stream_id, [(":status", "200"),
                                                             ("x-h2", "yes")])
                            conn.send_data(ev.stream_id, b"no length", end_stream=True)
                        else:
                            out = b"h2 backend"
                            conn.send_headers(ev.stream_id, [(":status", "200"),
                                                             ("content-length", str(len(out)))])
                            conn.send_data(ev.stream_id, out, end_stream=True)
                    elif isinstance(ev, h2.events.StreamReset):
                        self.resets.append((ev.stream_id, ev.error_code))
                        slow.pop(ev.stream_id, None)
                for sid in list(slow):
                    try:
                        if conn.local_flow_control_window(sid) >= 1024:
                            slow[sid] -= 1
                            conn.send_data(sid, b"x" * 1024, end_stream=slow[sid] == 0)
                            if slow[sid] == 0:
                                del slow[sid]
                    except h2.exceptions.StreamClosedError:
                        del slow[sid]
                out = conn.data_to_send()
                if out:
                    c.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass


class H2cUpgradeBackend:
    """An HTTP/1.1 server that accepts `Upgrade: h2c` (with HTTP2-Settings)
    like h2c-capable servers do: 101, then HTTP/2 on the same connection.
    Records the HTTP/1.1 requests (path, headers) and the paths of requests
    that arrived over an upgraded connection (`smuggled`). Plain requests
    get 200 "plain"."""

    def __init__(self, port):
        self.port = port
        self.requests = []
        self.smuggled = []
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(16)
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            f = c.makefile("rb")
            while True:
                line = _read_line(f)
                headers = {}
                while True:
                    h = _read_line(f)
                    if h in (b"\r\n", b"\n"):
                        break
                    k, v = h.decode("latin-1").split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                path = line.decode("latin-1").split(" ")[1]
                self.requests.append({"path": path, "headers": headers})
                if headers.get("upgrade", "").lower() == "h2c" and "http2-settings" in headers:
                    self._upgrade(c, headers["http2-settings"])
                    return
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
        except (EOFError, OSError, ValueError, h2.exceptions.ProtocolError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _upgrade(self, c, settings):
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_upgrade_connection(settings)
        conn.send_headers(1, [(":status", "200")])
        conn.send_data(1, b"upgraded", end_stream=True)
        c.sendall(conn.data_to_send())
        while True:
            d = c.recv(65536)
            if not d:
                return
            for ev in conn.receive_data(d):
                if isinstance(ev, h2.events.RequestReceived):
                    path = dict(ev.headers)[":path"]
                    self.smuggled.append(path)
                    conn.send_headers(ev.stream_id, [(":status", "200")])
                    conn.send_data(ev.stream_id, f"smuggled {path}".encode(), end_stream=True)
            c.sendall(conn.data_to_send())

    def close(self):
        try:
            self.lsock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
