"""HTTP/2 requests meet the rules HTTP/1.1 requests do.

Each bad request is sent by a raw HTTP/2 client (hand-encoded HPACK, so
python-h2's own validation cannot fix it up) to a proxy in front of an
HTTP/1.1 backend that counts what it receives. The proxy must answer the
exact status (or, where nghttp2 already refuses the message, reset the stream
with PROTOCOL_ERROR), and the backend must never see the request. A good
request on the same connection afterwards shows the connection survived.
"""
import os
import sys

import hpack
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import (ThreadedTCPServer, free_port, sanitizer_checked,  # noqa: E402
                      simple_config)
from h2util import (END_HEADERS, END_STREAM, HEADERS, INTERNAL_ERROR,  # noqa: E402
                    PROTOCOL_ERROR, H1Backend, RawConn, frame, resets)


@pytest.fixture
def proxies(proxies):
    """conftest's `proxies`, with every proxy's log checked for sanitizer
    reports at teardown."""
    yield from sanitizer_checked(proxies)


@pytest.fixture
def h1be():
    b = H1Backend(free_port())
    yield b
    b.close()


class Client(RawConn):
    """RawConn that sends arbitrary header lists (bytes or str) on odd ids."""

    def __init__(self, port):
        super().__init__(port)
        self.next_id = 1

    def send_headers(self, headers, end_stream=True):
        sid = self.next_id
        self.next_id += 2
        block = self.enc.encode([(k.encode("latin-1") if isinstance(k, str) else k,
                                  v.encode("latin-1") if isinstance(v, str) else v)
                                 for k, v in headers])
        self.send(frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, block))
        return sid

    def status(self, sid):
        blocks = self.headers.get(sid)
        return int(dict(blocks[0])[":status"]) if blocks else None

    def outcome(self, sid, timeout=5.0):
        """("status", code) or ("reset", error code) of a stream."""
        self.wait(lambda: self.status(sid) is not None or sid in resets(self._frames()), timeout)
        if self.status(sid) is not None:
            return ("status", self.status(sid))
        return ("reset", resets(self._frames()).get(sid))

    def _frames(self):
        return [(t, fl, s, p) for _, t, fl, s, p in self.frames]


def req(path="/ok", method="GET", scheme="http", authority="test", extra=()):
    h = [(":method", method), (":scheme", scheme), (":path", path)]
    if authority is not None:
        h.append((":authority", authority))
    return h + list(extra)


def start(h2proxies_or_proxies, backend, limits=None):
    port = free_port()
    cfg = simple_config(port, backend.port)
    if limits:
        cfg["limits"] = limits
    return port, h2proxies_or_proxies(cfg)


def assert_refused(proxy, port, backend, headers, want, body=None):
    """Send one bad request, then a good one on the same connection: the bad
    one gets `want`, the backend sees only the good one."""
    before = len(backend.requests)
    c = Client(port)
    try:
        sid = c.send_headers(headers, end_stream=body is None)
        if body is not None:
            c.send(frame(0, END_STREAM, sid, body))
        got = c.outcome(sid)
        assert got == want, (headers, got, c.headers.get(sid))
        ok = c.send_headers(req("/after"))
        assert c.outcome(ok) == ("status", 200), "connection did not survive"
    finally:
        c.close()
    paths = [r["path"] for r in backend.requests[before:]]
    assert paths == ["/after"], f"backend saw {paths} for {headers}"


# ---------------------------------------------------------------- :path

@pytest.mark.parametrize("path", [
    b"/caf\xc3\xa9",        # bytes >= 0x80 (UTF-8)
    b"/a\x80",
    b"/a\xff",
    b"/a#frag",             # '#' is never part of a request-target
])
def test_path_bytes_http1_refuses_get_400(proxies, h1be, path):
    port, p = start(proxies, h1be)
    assert_refused(p, port, h1be, req(path), ("status", 400))


@pytest.mark.parametrize("path", [
    b"/a b",                # space
    b"/a\x01",              # control
    b"/a\t",                # HTAB
    b"/a\x7f",              # DEL
    b"a/b",                 # not origin-form with :scheme http
    b"",
])
def test_path_nghttp2_refuses_reset(proxies, h1be, path):
    """nghttp2 already refuses these (checked here, not assumed): a stream
    error, and nothing forwarded."""
    port, p = start(proxies, h1be)
    assert_refused(p, port, h1be, req(path), ("reset", PROTOCOL_ERROR))


def catch_all(proxies, backend):
    """A route whose regex matches any path, so only validation stops one."""
    port = free_port()
    cfg = simple_config(port, backend.port)
    cfg["route_tables"][0]["virtual_hosts"][0]["routes"][0]["match"] = {"path": {"regex": ".*"}}
    return port, proxies(cfg)


def test_path_not_origin_form_with_other_scheme_400(proxies, h1be):
    """nghttp2 checks the path shape only for http/https: with another scheme
    "a/b" went on to be routed (and forwarded as 'GET a/b HTTP/1.1' by a
    route that matched it)."""
    port, p = catch_all(proxies, h1be)
    assert_refused(p, port, h1be, req("a/b", scheme="foo"), ("status", 400))
    assert_refused(p, port, h1be, req("/a", scheme="ftp"), ("status", 400))


def test_asterisk_only_for_options(proxies, h1be):
    port, p = catch_all(proxies, h1be)
    assert_refused(p, port, h1be, req("*", method="GET", scheme="foo"), ("status", 400))


def test_path_over_max_request_line_414(proxies, h1be):
    """The request line an HTTP/2 request becomes is bounded by
    limits.max_request_line (8192 by default) as an HTTP/1.1 one is: one
    byte more is a 414, never forwarded; exactly the limit goes through."""
    port, p = start(proxies, h1be)
    fits = "/" + "a" * (8192 - len("GET / HTTP/1.1\r\n"))   # the line is 8192 bytes
    assert_refused(p, port, h1be, req(fits + "b"), ("status", 414))
    c = Client(port)
    try:
        assert c.outcome(c.send_headers(req(fits))) == ("status", 200)
    finally:
        c.close()
    assert h1be.requests[-1]["path"] == fits


# ---------------------------------------------------------------- :method

@pytest.mark.parametrize("method", [b"G\xc3\xa9T", b"GE T", b"GET\x01", b"G(T"])
def test_method_not_token_reset(proxies, h1be, method):
    port, p = start(proxies, h1be)
    assert_refused(p, port, h1be, req(method=method), ("reset", PROTOCOL_ERROR))


# ---------------------------------------------------------------- :authority and host

@pytest.mark.parametrize("authority", [
    "user@test",             # userinfo (RFC 9113 8.3.1)
    "user:pw@test:80",
    "te%73t",                # percent-encoding the HTTP/1.1 parser refuses in Host
    "test:99999",            # port out of range
    "te;st",                 # sub-delims nghttp2 allows
])
def test_bad_authority_400(proxies, h1be, authority):
    port, p = start(proxies, h1be)
    assert_refused(p, port, h1be, req(authority=authority), ("status", 400))


@pytest.mark.parametrize("authority", [b"t\xc3\xa9st", b"te st", b""])
def test_authority_nghttp2_refuses_reset(proxies, h1be, authority):
    port, p = start(proxies, h1be)
    assert_refused(p, port, h1be, req(authority=authority), ("reset", PROTOCOL_ERROR))


def test_host_differs_from_authority_400(proxies, h1be):
    port, p = start(proxies, h1be)
    assert_refused(p, port, h1be, req(authority="test", extra=[("host", "other")]),
                   ("status", 400))
    assert_refused(p, port, h1be, req(authority="test", extra=[("host", "test:8080")]),
                   ("status", 400))


def test_two_host_fields_reset(proxies, h1be):
    """nghttp2 refuses a repeated host (verified): a stream error."""
    port, p = start(proxies, h1be)
    assert_refused(p, port, h1be,
                   req(authority=None, extra=[("host", "test"), ("host", "other")]),
                   ("reset", PROTOCOL_ERROR))


def test_bad_host_alone_400(proxies, h1be):
    port, p = start(proxies, h1be)
    assert_refused(p, port, h1be, req(authority=None, extra=[("host", "u@test")]),
                   ("status", 400))
    assert_refused(p, port, h1be, req(authority=None, extra=[("host", "test:0x50")]),
                   ("status", 400))


def test_host_alone_routes_and_is_forwarded(proxies, h1be):
    """RFC 9113 8.3.1 allows Host instead of :authority: routed by it and
    forwarded as it."""
    port = free_port()
    other = H1Backend(free_port())
    try:
        cfg = simple_config(port, h1be.port)
        cfg["route_tables"][0]["virtual_hosts"].insert(0, {
            "name": "other", "domains": ["other.example"],
            "routes": [{"name": "o", "match": {"path": {"prefix": "/"}}, "cluster": "other"}]})
        cfg["clusters"].append({"name": "other",
                                "endpoints": [{"address": f"127.0.0.1:{other.port}"}]})
        proxies(cfg)
        c = Client(port)
        try:
            sid = c.send_headers(req("/h", authority=None, extra=[("host", "Other.Example")]))
            assert c.outcome(sid) == ("status", 200)
            same = c.send_headers(req("/s", authority="other.example",
                                      extra=[("host", "OTHER.example")]))
            assert c.outcome(same) == ("status", 200)
        finally:
            c.close()
        assert [r["path"] for r in other.requests] == ["/h", "/s"]
        assert h1be.requests == []
        hosts = [[v for k, v in r["headers"] if k == "host"] for r in other.requests]
        assert hosts == [["Other.Example"], ["other.example"]]
    finally:
        other.close()


# ---------------------------------------------------------------- other fields

@pytest.mark.parametrize("name,value", [
    (b"x-a", b"a\x01b"),     # control byte
    (b"x-a", b"a\x7f"),      # DEL
    (b"x-a", b" a"),         # leading whitespace
    (b"x-a", b"a "),         # trailing whitespace
    (b"x y", b"1"),          # name not a token
    (b"X-A", b"1"),          # uppercase name
])
def test_bad_field_reset(proxies, h1be, name, value):
    """nghttp2 refuses these (verified): a stream error, never a request
    forwarded without the field."""
    port, p = start(proxies, h1be)
    assert_refused(p, port, h1be, req(extra=[(name, value)]), ("reset", PROTOCOL_ERROR))


def test_obs_text_value_is_forwarded(proxies, h1be):
    """Bytes >= 0x80 are valid in field values for HTTP/1.1 too: forwarded."""
    port, p = start(proxies, h1be)
    c = Client(port)
    try:
        sid = c.send_headers(req("/v", extra=[("x-v", b"caf\xc3\xa9")]))
        assert c.outcome(sid) == ("status", 200)
    finally:
        c.close()
    assert [v for k, v in h1be.requests[0]["headers"] if k == "x-v"] == \
        [b"caf\xc3\xa9".decode("latin-1")]


def test_unknown_pseudo_header_reset(proxies, h1be):
    port, p = start(proxies, h1be)
    assert_refused(p, port, h1be, req(extra=[(":protocol", "websocket")]),
                   ("reset", PROTOCOL_ERROR))


# ---------------------------------------------------------------- limits.max_headers

def test_max_headers_431(proxies, h1be):
    """limits.max_headers bounds HTTP/2 requests as it bounds HTTP/1.1 ones
    (431), counting cookie crumbs as the one line they become."""
    port, p = start(proxies, h1be, limits={"max_headers": 10})
    many = [(f"x-{i}", "v") for i in range(11)]
    assert_refused(p, port, h1be, req(extra=many), ("status", 431))
    assert p.metric("trellis_limit_exceeded_total", limit="max_headers") == 1
    c = Client(port)
    try:
        ten = [(f"x-{i}", "v") for i in range(9)] + [("cookie", f"c{i}=1") for i in range(20)]
        sid = c.send_headers(req("/ten", extra=ten))
        assert c.outcome(sid) == ("status", 200)
    finally:
        c.close()
    got = h1be.requests[-1]
    assert got["path"] == "/ten"
    assert [v for k, v in got["headers"] if k == "cookie"] == \
        ["; ".join(f"c{i}=1" for i in range(20))]


def test_refusals_counted(proxies, h1be):
    port, p = start(proxies, h1be)
    base = p.metric("trellis_http_parse_errors_total")
    assert_refused(p, port, h1be, req(b"/\xc3\xa9"), ("status", 400))
    assert_refused(p, port, h1be, req(authority="u@test"), ("status", 400))
    assert p.metric("trellis_http_parse_errors_total") == base + 2
    assert p.metric("istio_requests_total", response_code="400") == 2


# ---------------------------------------------------------------- no silent truncation

class ManyFieldsBackend(ThreadedTCPServer):
    """Serves raw responses by path, one connection per thread:
    - HTTP/2 (h2c prior knowledge) when http2 is set: /n/<k> answers 200
      with k fields x-f-<i>, /tr/<k> answers "many" and k trailers x-t-<i>;
    - HTTP/1.1 otherwise: /t/<k>/<len> answers a chunked "hello" followed by
      k trailer fields x-t-<i> whose values are <len> bytes, /long answers
      one trailer with a 300-byte name."""

    def __init__(self, http2=False):
        self.http2 = http2
        self.paths = []
        super().__init__(backlog=16)

    def serve(self, c):
        (self._serve_h2 if self.http2 else self._serve_h1)(c)

    def _serve_h2(self, c):
        import h2.config
        import h2.connection
        import h2.events
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        try:
            c.sendall(conn.data_to_send())
            for _ in range(10000):
                data = c.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        path = dict(ev.headers)[":path"]
                        self.paths.append(path)
                        kind, k = path.split("/")[1], int(path.split("/")[2])
                        if kind == "tr":   # k trailers after the body
                            conn.send_headers(ev.stream_id, [(":status", "200")])
                            conn.send_data(ev.stream_id, b"many")
                            conn.send_headers(ev.stream_id, [(f"x-t-{i}", "v") for i in range(k)],
                                              end_stream=True)
                            continue
                        conn.send_headers(ev.stream_id, [(":status", "200")] +
                                          [(f"x-f-{i}", "v") for i in range(k)])
                        conn.send_data(ev.stream_id, b"many", end_stream=True)
                c.sendall(conn.data_to_send())
        except Exception:
            pass
        finally:
            c.close()

    def _serve_h1(self, c):
        try:
            f = c.makefile("rb")
            for _ in range(10000):
                line = f.readline(65537)
                if not line:
                    return
                while f.readline(65537) not in (b"\r\n", b""):
                    pass
                path = line.split(b" ")[1].decode()
                self.paths.append(path)
                if path == "/long":
                    trailers = [("x-" + "n" * 298, "v")]
                else:
                    _, _, k, vlen = path.split("/")
                    trailers = [(f"x-t-{i}", "v" * int(vlen)) for i in range(int(k))]
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                          b"Trailer: x-t\r\n\r\n5\r\nhello\r\n0\r\n" +
                          b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers) + b"\r\n")
        except OSError:
            pass
        finally:
            c.close()


def h2_get(port, path, extra=()):
    """Python-h2 client GET: (status, [(name, value)], body, trailers, reset)."""
    from h2util import H2Client
    c = H2Client(port)
    try:
        r = c.get(path, headers=list(extra))
        return r.status, r.headers, bytes(r.data), r.trailers, r.reset
    finally:
        c.close()


def test_h2_upstream_response_fields_never_cut(proxies):
    """An HTTP/2 upstream's response with more fields than the proxy's slots
    (264) went out cut to 264, silently. Now every field arrives up to
    limits.max_headers, and above it the answer is a 502, a log line and
    trellis_limit_exceeded_total{limit="max_headers"}."""
    be = ManyFieldsBackend(http2=True)
    try:
        port = free_port()
        cfg = simple_config(port, be.port)
        cfg["clusters"][0]["protocol"] = "http2"
        cfg["limits"] = {"max_headers": 256}
        p = proxies(cfg)
        status, headers, body, _, _ = h2_get(port, "/n/256")
        assert status == 200 and body == b"many"
        assert [k for k, _ in headers if k.startswith("x-f-")] == [f"x-f-{i}" for i in range(256)]
        status, headers, body, _, reset = h2_get(port, "/n/300")
        assert (status, reset) == (502, None), (len(headers or []), reset)
        assert not [k for k, _ in headers if k.startswith("x-f-")]
        assert p.metric("trellis_limit_exceeded_total", limit="max_headers") == 1
        assert "300 header fields, more than limits.max_headers (256)" in p.read_log()
        assert be.paths == ["/n/256", "/n/300"]
    finally:
        be.close()


def test_h2_upstream_trailers_over_max_headers_reset(proxies):
    """An HTTP/2 upstream's trailers are held to limits.max_headers too: up
    to it they pass, above it the stream is reset, counted and logged."""
    be = ManyFieldsBackend(http2=True)
    try:
        port = free_port()
        cfg = simple_config(port, be.port)
        cfg["clusters"][0]["protocol"] = "http2"
        cfg["limits"] = {"max_headers": 10}
        p = proxies(cfg)
        status, _, body, trailers, reset = h2_get(port, "/tr/10", [("te", "trailers")])
        assert (status, body, reset) == (200, b"many", None)
        assert trailers == [(f"x-t-{i}", "v") for i in range(10)]
        status, _, _, trailers, reset = h2_get(port, "/tr/11", [("te", "trailers")])
        # the head may still be queued when the reset comes: it then never leaves
        assert status in (200, None) and trailers is None, (status, trailers)
        assert reset == INTERNAL_ERROR
        assert p.metric("trellis_limit_exceeded_total", limit="max_headers") == 1
        assert "trailers has 11 header fields, more than limits.max_headers (10)" in p.read_log()
    finally:
        be.close()


def test_h1_upstream_trailers_never_dropped(proxies):
    """A chunked response's trailers were parsed into 64 slots and names of
    at most 255 bytes: 80 trailers, or one long name, and every trailer was
    dropped while the body ended as if there had been none. Now they arrive
    (up to limits.max_headers); more than that resets the stream, counted."""
    be = ManyFieldsBackend()
    try:
        port = free_port()
        p = proxies(simple_config(port, be.port))
        status, _, body, trailers, reset = h2_get(port, "/t/80/8", [("te", "trailers")])
        assert (status, body, reset) == (200, b"hello", None)
        assert trailers == [(f"x-t-{i}", "v" * 8) for i in range(80)]
        status, _, body, trailers, reset = h2_get(port, "/long", [("te", "trailers")])
        assert (status, body, reset) == (200, b"hello", None)
        assert trailers == [("x-" + "n" * 298, "v")]
        status, _, _, trailers, reset = h2_get(port, "/t/101/1", [("te", "trailers")])
        assert trailers is None and reset is not None, (status, trailers, reset)
        assert p.metric("trellis_limit_exceeded_total", limit="max_headers") == 1
        assert "trailers have more than limits.max_headers (100) fields" in p.read_log()
    finally:
        be.close()


@pytest.mark.parametrize("count,vlen", [(80, 1), (10, 2000)])
def test_h1_client_trailers_reach_h2_upstream(proxies, count, vlen):
    """HTTP/1.1 request trailers toward an HTTP/2 upstream: 80 of them (over
    the old 64 slots) and a 20 KiB section (over one pool buffer) arrive whole
    instead of being dropped or closing the connection."""
    import socket
    from h2util import H2Backend, read_until_closed
    be = H2Backend(free_port())
    try:
        port = free_port()
        cfg = simple_config(port, be.port)
        cfg["clusters"][0]["protocol"] = "http2"
        proxies(cfg)
        for trailers in [[(f"x-r-{i}", "w" * vlen) for i in range(count)]]:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"POST /p HTTP/1.1\r\nHost: t.example\r\nTE: trailers\r\n"
                          b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                          b"4\r\nbody\r\n0\r\n" +
                          b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers) + b"\r\n")
                data, _ = read_until_closed(s, 5)
            assert data.startswith(b"HTTP/1.1 200 "), data[:200]
            q = be.requests[-1]
            assert q["body"] == b"body" and q["trailers"] == trailers
        assert len(be.requests) == 1
    finally:
        be.close()


def test_long_x_forwarded_for_kept(proxies, h1be):
    """X-Forwarded-For values were joined in a 2 KiB buffer and the ones
    that did not fit were dropped: the upstream saw only the peer."""
    port, p = start(proxies, h1be)
    chain = ", ".join(f"10.0.{i // 250}.{i % 250}" for i in range(400))
    assert len(chain) > 4000
    status, _, _, _, _ = h2_get(port, "/x", [("x-forwarded-for", chain),
                                             ("x-forwarded-for", "192.0.2.1")])
    assert status == 200
    got = [v for k, v in h1be.requests[0]["headers"] if k == "x-forwarded-for"]
    assert got == [chain + ", 192.0.2.1, 127.0.0.1"]


def test_direct_response_body_larger_than_a_buffer_whole(proxies, h1be):
    """A local reply body that the client's window could not take at once was
    kept only up to one pool buffer (16 KiB): a 40 KiB direct_response to a
    client with a 1000-byte window ended early. Now all of it arrives."""
    from h2util import H2Client
    port = free_port()
    cfg = simple_config(port, h1be.port)
    body = "".join(f"{i:07d}\n" for i in range(5120))   # 40 KiB
    cfg["route_tables"][0]["virtual_hosts"][0]["routes"][0] = {
        "name": "local", "match": {"path": {"prefix": "/"}},
        "direct_response": {"status": 200, "body": body}}
    proxies(cfg)
    c = H2Client(port, settings={4: 1000})    # SETTINGS_INITIAL_WINDOW_SIZE
    try:
        r = c.get("/d", timeout=10)
        assert r.status == 200 and r.ended and r.reset is None, (r.status, r.reset, c.error)
        assert bytes(r.data) == body.encode()
    finally:
        c.close()
    assert h1be.requests == []


@pytest.mark.parametrize("count,vlen", [(80, 1), (10, 2000)])
def test_h2_client_trailers_reach_h1_upstream(proxies, h1be, count, vlen):
    """HTTP/2 request trailers toward an HTTP/1.1 upstream, 80 of them or a
    20 KiB section (more than one pool buffer): all arrive in the chunked
    body's trailer section."""
    from h2util import H2Client
    port, p = start(proxies, h1be)
    trailers = [(f"x-r-{i}", "w" * vlen) for i in range(count)]
    c = H2Client(port)
    try:
        sid = c.request("/t", method="POST", headers=[("te", "trailers")], end_stream=False)
        c.send_body(sid, b"body", end_stream=False)
        c.send_trailers(sid, trailers)
        r = c.wait_done(sid)
        assert r.status == 200 and r.reset is None, (r.status, r.reset)
    finally:
        c.close()
    q = h1be.requests[0]
    assert q["body"] == b"body" and q["chunked"] and q["trailers"] == trailers


def test_h2_client_trailers_over_max_headers_reset(proxies, h1be):
    """More request trailers than limits.max_headers: the stream is reset
    (the request started), counted and logged; never a request that ends
    without them."""
    from h2util import H2Client
    port, p = start(proxies, h1be, limits={"max_headers": 10})
    c = H2Client(port)
    try:
        sid = c.request("/t", method="POST", headers=[("te", "trailers")], end_stream=False)
        c.send_body(sid, b"body", end_stream=False)
        c.send_trailers(sid, [(f"x-r-{i}", "v") for i in range(11)])
        r = c.wait_done(sid)
        assert (r.status, r.reset) == (431, None), (r.status, r.reset)
    finally:
        c.close()
    assert h1be.requests == []
    assert p.metric("trellis_limit_exceeded_total", limit="max_headers") == 1
