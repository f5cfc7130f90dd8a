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
from conftest import free_port, simple_config  # noqa: E402
from h2util import (END_HEADERS, END_STREAM, HEADERS, PROTOCOL_ERROR,  # noqa: E402
                    H1Backend, RawConn, frame, resets)


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
