"""HTTP/2 downstream (h2c prior knowledge, h2 over mTLS), HTTP/2 <-> HTTP/1.1
translation, HTTP/2 upstreams, the codec's abuse limits seen from the wire,
drain, metrics, access log and idle timeout.

Real clients (curl, nghttp, h2load) where they can express the case; python3-h2
and hand-made frames (h2util.py) where they cannot.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import h2.config
import h2.connection
import hpack
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port, sanitizer_checked, simple_config  # noqa: E402
import h2util  # noqa: E402
from h2util import (ACK, CANCEL, CONTINUATION, DATA, END_HEADERS, END_STREAM,  # noqa: E402
                    ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR, GOAWAY, HEADERS, INTERNAL_ERROR,
                    NO_ERROR, PING, PREFACE, PROTOCOL_ERROR, REFUSED_STREAM, RST_STREAM,
                    SETTINGS, WINDOW_UPDATE, H1Backend, H2Backend, H2cUpgradeBackend, H2Client,
                    RawConn, connect, frame, goaways, parse_frames, read_until_closed,
                    request_headers_block, resets)

TD = "cluster.local"
CLIENT_ID = f"spiffe://{TD}/ns/default/sa/client"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
              "trellis-orig-proto"}
MiB = 1 << 20


# ---------------------------------------------------------------- fixtures / helpers

@pytest.fixture
def h2proxies(proxies):
    """`proxies`, with every proxy's log checked for sanitizer reports at
    teardown."""
    yield from sanitizer_checked(proxies)


@pytest.fixture
def h1be():
    b = H1Backend(free_port())
    yield b
    b.close()


@pytest.fixture
def h2be():
    b = H2Backend(free_port())
    yield b
    b.close()


@pytest.fixture(scope="module")
def www():
    """Files of 0 B, 100 B, 1 MiB, 10 MiB and 20 MiB, readable by nginx workers."""
    d = tempfile.mkdtemp(prefix="trellis-h2-www-")
    os.chmod(d, 0o755)
    files = {}
    for size in (0, 100, MiB, 10 * MiB, 20 * MiB):
        path = os.path.join(d, f"f{size}")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        os.chmod(path, 0o644)
        files[size] = path
    yield d, files
    shutil.rmtree(d, ignore_errors=True)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def file_sha(path):
    with open(path, "rb") as f:
        return sha(f.read())


def h2_config(port, backend_port, limits=None, cluster=None, **listener_extra):
    cfg = simple_config(port, backend_port, **listener_extra)
    if limits:
        cfg["limits"] = limits
    if cluster:
        cfg["clusters"][0].update(cluster)
    return cfg


def strict_config(port, backend_port, certs):
    cfg = simple_config(port, backend_port, direction="inbound",
                        tls={"mode": "STRICT", "context": "mesh"})
    cfg["tls"] = [{"name": "mesh", "cert": certs["server_cert"], "key": certs["server_key"],
                   "ca": certs["ca"], "trust_domain": TD}]
    return cfg


def client_tls(certs, alpn=("h2",)):
    return h2util.tls_context(certs["client_cert"], certs["client_key"], certs["ca"], alpn)


def assert_alive_and_serving(proxy, port, ssl_ctx=None, path="/fresh"):
    """The proxy process is still up and a brand-new HTTP/2 client gets 200."""
    assert proxy.proc.poll() is None, proxy.read_log()
    c = H2Client(port, ssl_ctx)
    try:
        r = c.get(path)
        assert r.status == 200, (r.headers, r.reset, c.goaway)
        assert r.ended
    finally:
        c.close()


def wait_for(pred, timeout=3.0, step=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def wait_metric(proxy, name, target, timeout=3.0, **labels):
    wait_for(lambda: proxy.metric(name, **labels) >= target, timeout, 0.05)
    return proxy.metric(name, **labels)


def curl(*args, timeout=60):
    r = subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def hdr(headers, name):
    return [v for k, v in headers if k == name]


def flood_then_read(port, payload, timeout=3.0):
    """Send preface + SETTINGS + payload in one go without reading, then read
    everything until the proxy closes. Returns (frames, closed)."""
    s = connect(port)
    try:
        try:
            s.sendall(PREFACE + frame(SETTINGS, 0, 0) + payload)
        except OSError:
            pass
        data, closed = read_until_closed(s, timeout)
    finally:
        s.close()
    return parse_frames(data), closed


# ---------------------------------------------------------------- 1. real clients

def test_curl_h2c_prior_knowledge(h2proxies, backend):
    port = free_port()
    h2proxies(simple_config(port, backend.port))
    rc, out, err = curl("--http2-prior-knowledge", "-H", "cookie: a=1", "-H", "cookie: b=2",
                        "-H", "x-custom: v", "-w", "\n%{http_code} %{http_version}",
                        f"http://127.0.0.1:{port}/x/y?q=1")
    assert rc == 0, err
    body, _, tail = out.rpartition(b"\n")
    assert tail == b"200 2"
    echo = json.loads(body)
    assert echo["path"] == "/x/y?q=1"
    assert len(backend.requests) == 1
    req = backend.requests[0]
    assert req["method"] == "GET" and req["path"] == "/x/y?q=1" and req["body"] == b""
    h = req["headers"]
    assert hdr(h, "host") == [f"127.0.0.1:{port}"]          # from :authority
    assert hdr(h, "cookie") == ["a=1; b=2"]                 # crumbs joined for HTTP/1.1
    assert hdr(h, "x-forwarded-for") == ["127.0.0.1"]
    assert hdr(h, "x-forwarded-proto") == ["http"]
    assert hdr(h, "x-custom") == ["v"]
    assert len(hdr(h, "x-request-id")) == 1
    assert not [k for k, _ in h if k.startswith(":") or k in HOP_BY_HOP]
    assert sorted(k for k, _ in h) == sorted(["host", "user-agent", "accept", "cookie", "x-custom",
                                              "x-forwarded-for", "x-forwarded-proto",
                                              "x-request-id"])


def test_curl_h2_over_mtls_strict(h2proxies, backend, certs):
    port = free_port()
    p = h2proxies(strict_config(port, backend.port, certs))
    # The server SVID has no DNS SAN; its CN is "server", which curl matches
    # when no DNS/IP SAN is present, so full verification works via --resolve.
    rc, out, err = curl("--http2", "--cert", certs["client_cert"], "--key", certs["client_key"],
                        "--cacert", certs["ca"], "--resolve", f"server:{port}:127.0.0.1",
                        "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                        f"https://server:{port}/tls?x=1")
    assert rc == 0, err
    assert out == b"200 2"
    req = backend.requests[0]
    assert req["method"] == "GET" and req["path"] == "/tls?x=1"
    assert hdr(req["headers"], "host") == [f"server:{port}"]
    assert hdr(req["headers"], "x-forwarded-for") == ["127.0.0.1"]
    assert hdr(req["headers"], "x-forwarded-proto") == ["https"]
    assert not [k for k, _ in req["headers"] if k in HOP_BY_HOP]
    assert wait_metric(p, "istio_requests_total", 1, request_protocol="http/2",
                       connection_security_policy="mutual_tls",
                       source_principal=CLIENT_ID, response_code="200") == 1
    # ALPN: the server prefers h2, falls back to http/1.1.
    for offered, chosen in ((["http/1.1", "h2"], "h2"), (["http/1.1"], "http/1.1")):
        s = connect(port, client_tls(certs, offered))
        try:
            assert s.selected_alpn_protocol() == chosen
        finally:
            s.close()
    # Plain HTTP/1.1 over the same listener still works.
    rc, out, err = curl("--http1.1", "--cert", certs["client_cert"], "--key", certs["client_key"],
                        "--cacert", certs["ca"], "--resolve", f"server:{port}:127.0.0.1",
                        "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                        f"https://server:{port}/h1")
    assert rc == 0 and out == b"200 1.1", err


def test_nghttp_several_streams_one_connection(h2proxies, backend):
    port = free_port()
    h2proxies(simple_config(port, backend.port))
    urls = [f"http://127.0.0.1:{port}/{p}" for p in ("a", "b", "c?x=1")]
    r = subprocess.run(["nghttp", "-v", "-n", "--no-dep", *urls], capture_output=True,
                       timeout=20)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert out.count("] Connected") == 1
    # The proxy's SETTINGS: the configured defaults, push disabled.
    m = re.search(r"recv SETTINGS frame <length=\d+, flags=0x00, stream_id=0>\n(.*?)\n\[",
                  out, re.S)
    assert m, out
    assert "[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]" in m.group(1)
    assert "[SETTINGS_INITIAL_WINDOW_SIZE(0x04):65535]" in m.group(1)
    assert "[SETTINGS_ENABLE_PUSH(0x02):0]" in m.group(1)
    assert re.search(r"recv SETTINGS frame <length=0, flags=0x01, stream_id=0>", out)
    for sid in (1, 3, 5):
        assert f"recv (stream_id={sid}) :status: 200" in out
        assert re.search(rf"recv DATA frame <length=\d+, flags=0x01, stream_id={sid}>", out)
    assert "RST_STREAM" not in out
    assert "recv GOAWAY" not in out
    assert sorted(q["path"] for q in backend.requests) == ["/a", "/b", "/c?x=1"]
    assert {hdr(q["headers"], "host")[0] for q in backend.requests} == {f"127.0.0.1:{port}"}


def test_h2load_2000_requests_all_2xx(h2proxies, nginx):
    n = nginx('location = /ok { return 200 "ok"; }')
    port = free_port()
    p = h2proxies(simple_config(port, n.port))
    r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "20", "-T", "20",
                        f"http://127.0.0.1:{port}/ok"], capture_output=True, timeout=60)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "Application protocol: h2c" in out
    assert re.search(r"requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, "
                     r"0 failed, 0 errored, 0 timeout", out), out
    assert "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx" in out, out
    assert wait_metric(p, "istio_requests_total", 2000, request_protocol="http/2",
                       response_code="200") == 2000


@pytest.mark.parametrize("size", [0, 100, MiB, 20 * MiB], ids=["0B", "100B", "1MiB", "20MiB"])
def test_body_bytes_upload_and_download(h2proxies, h1be, nginx, www, size):
    d, files = www
    src = files[size]
    with open(src, "rb") as f:
        data = f.read()
    # upload: curl (content-length known) -> HTTP/1.1 echo backend
    port = free_port()
    h2proxies(simple_config(port, h1be.port), "up")
    out_path = os.path.join(d, f"out-up-{size}")
    rc, out, err = curl("--http2-prior-knowledge", "-H", "Expect:", "--data-binary", f"@{src}",
                        "-o", out_path, "-w", "%{http_code} %{http_version} %{size_download}",
                        f"http://127.0.0.1:{port}/upload")
    assert rc == 0, err
    assert out == f"200 2 {size}".encode()
    assert len(h1be.requests) == 1
    req = h1be.requests[0]
    assert req["method"] == "POST" and req["path"] == "/upload"
    assert len(req["body"]) == size and sha(req["body"]) == sha(data)
    assert hdr(req["headers"], "content-length") == [str(size)] and not req["chunked"]
    assert file_sha(out_path) == sha(data)
    os.unlink(out_path)
    # upload without content-length (python h2): chunked toward HTTP/1.1
    c = H2Client(port)
    try:
        sid = c.request("/upload-nolen", method="PUT", end_stream=False)
        c.send_body(sid, data, end_stream=True)
        r = c.wait_done(sid, timeout=30)
        assert r.status == 200 and r.ended
        assert len(r.data) == size and sha(bytes(r.data)) == sha(data)
    finally:
        c.close()
    req = h1be.requests[1]
    assert req["method"] == "PUT" and sha(req["body"]) == sha(data)
    assert "content-length" not in dict(req["headers"]) or \
        hdr(req["headers"], "content-length") == [str(size)]
    # download: nginx static file -> curl
    n = nginx(f"location /files/ {{ alias {d}/; }}")
    port2 = free_port()
    h2proxies(simple_config(port2, n.port), "down")
    out_path = os.path.join(d, f"out-down-{size}")
    rc, out, err = curl("--http2-prior-knowledge", "-o", out_path,
                        "-w", "%{http_code} %{http_version} %{size_download}",
                        f"http://127.0.0.1:{port2}/files/f{size}")
    assert rc == 0, err
    assert out == f"200 2 {size}".encode()
    assert file_sha(out_path) == sha(data)
    os.unlink(out_path)


def test_hop_by_hop_fields_and_malformed_requests(h2proxies, h1be):
    port = free_port()
    h2proxies(simple_config(port, h1be.port))
    c = H2Client(port)
    try:
        # A response with hop-by-hop fields: dropped, including the one Connection names.
        r = c.get("/hop")
        assert c.error is None, c.error      # h2 would refuse connection-specific fields
        assert r.status == 200 and bytes(r.data) == b"hop"
        assert r.headers == [(":status", "200"), ("x-kept", "yes")]
    finally:
        c.close()
    # Connection-specific request fields make an HTTP/2 request malformed
    # (RFC 9113 8.2.2): that stream is reset PROTOCOL_ERROR, never forwarded.
    c = H2Client(port, validate=False)
    try:
        for bad in (("connection", "keep-alive"), ("transfer-encoding", "chunked"),
                    ("te", "gzip"), ("upgrade", "websocket")):
            r = c.get("/malformed", headers=[bad])
            assert r.reset == PROTOCOL_ERROR and r.headers is None, bad
        assert c.goaway is None
        r = c.get("/ok", headers=[("te", "trailers")])
        assert r.status == 200
    finally:
        c.close()
    assert [q["path"] for q in h1be.requests] == ["/hop", "/ok"]
    assert hdr(h1be.requests[1]["headers"], "te") == ["trailers"]


def test_malformed_requests_never_reach_http1(h2proxies, h1be):
    """Values that would split or rewrite an HTTP/1.1 request are malformed
    in HTTP/2: the stream is reset PROTOCOL_ERROR and nothing is forwarded.
    A Host that differs from :authority is refused (400) rather than routed by
    one and forwarded with the other; an equal one (but for case) is fine and
    :authority is what is sent."""
    port = free_port()
    cfg = simple_config(port, h1be.port)
    cfg["route_tables"][0]["virtual_hosts"] = [
        {"name": "a", "domains": ["a.example"],
         "routes": [{"name": "a", "match": {"path": {"prefix": "/"}}, "cluster": "backend"}]},
        {"name": "other", "domains": ["*"],
         "routes": [{"name": "deny", "direct_response": {"status": 404, "body": "nope"}}]}]
    h2proxies(cfg)
    c = H2Client(port, validate=False)
    try:
        cases = [
            dict(headers=[("x-a", "v\r\nx-injected: 1")]),
            dict(headers=[("x-a", "v\nx-injected: 1")]),
            dict(headers=[("x-a", "v\x00w")]),
            dict(headers=[("X-Upper", "v")]),
            dict(headers=[("x:y", "v")]),
            dict(path="/a b HTTP/1.1\r\nx-injected: 1\r\nfoo: bar"),
            dict(path="/a b"),
            dict(path="nopath"),
            dict(method="GET /evil HTTP/1.1"),
            dict(authority="a.example\r\nx-injected: 1"),
        ]
        for kw in cases:
            kw.setdefault("authority", "a.example")
            r = c.get(**{"path": "/m", **kw})
            assert r.reset == PROTOCOL_ERROR and r.headers is None, kw
        # a body shorter than its content-length: reset; the backend may have
        # seen the head (streamed) but never a complete request
        r = c.get("/cl", method="POST", authority="a.example",
                  headers=[("content-length", "10")], body=b"12345")
        assert r.reset == PROTOCOL_ERROR and r.headers is None
        assert c.goaway is None and not c.closed
        r = c.get("/ah", authority="a.example", headers=[("host", "b.example")])
        assert r.status == 400
        r = c.get("/ba", authority="b.example", headers=[("host", "a.example")])
        assert r.status == 400
        r = c.get("/aa", authority="a.example", headers=[("host", "A.Example")])
        assert r.status == 200
    finally:
        c.close()
    assert all(len(q["body"]) < 10 for q in h1be.requests if q["path"] == "/cl")
    done = [q for q in h1be.requests if q["path"] != "/cl"]
    assert len(done) == 1
    assert done[0]["path"] == "/aa"
    assert hdr(done[0]["headers"], "host") == ["a.example"]


def test_route_timeout_on_one_stream(h2proxies, h1be):
    port = free_port()
    cfg = simple_config(port, h1be.port)
    cfg["route_tables"][0]["virtual_hosts"][0]["routes"] = [
        {"name": "slow", "match": {"path": {"prefix": "/slow"}}, "cluster": "backend",
         "timeout": "300ms"},
        {"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": "backend"}]
    p = h2proxies(cfg)
    c = H2Client(port)
    try:
        t0 = time.time()
        slow = c.request("/slow?ms=1500")
        fast = c.request("/fast")
        r = c.wait_done(slow, 3)
        assert r.status == 504 and r.ended
        assert 0.25 <= time.time() - t0 < 1.2
        assert c.streams[fast].status == 200
        assert c.get("/after").status == 200 and c.goaway is None
    finally:
        c.close()
    assert wait_metric(p, "istio_requests_total", 1, request_protocol="http/2",
                       response_code="504", response_flags="UT") == 1


def test_h2c_upgrade_not_forwarded(h2proxies):
    """h2c Upgrade is not supported: the request is served as plain HTTP/1.1.
    Forwarding it lets an h2c-capable backend switch protocols, after which
    the client's HTTP/2 requests bypass routing and authorization."""
    be = H2cUpgradeBackend(free_port())
    try:
        port = free_port()
        cfg = simple_config(port, be.port, authorization={
            "rules": [{"action": "DENY", "paths": ["/admin*"]}]})
        h2proxies(cfg)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 403 ")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        settings = conn.initiate_upgrade_connection()
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: " +
                      settings + b"\r\nConnection: Upgrade\r\n\r\n")
            resp = s.recv(65536)
            if resp.startswith(b"HTTP/1.1 101"):
                # what an attacker does next: a denied path over the tunnel
                s.sendall(conn.data_to_send())
                conn.send_headers(3, [(":method", "GET"), (":scheme", "http"),
                                      (":path", "/admin/secret"), (":authority", "x")],
                                  end_stream=True)
                s.sendall(conn.data_to_send())
                read_until_closed(s, 1.0)
        assert be.smuggled == []
        assert resp.startswith(b"HTTP/1.1 200 OK\r\n") and resp.endswith(b"plain"), resp
        assert "upgrade" not in be.requests[-1]["headers"]
    finally:
        be.close()


# ---------------------------------------------------------------- 2. scripted frame-level cases

def test_concurrent_streams_answered_correctly(h2proxies, h1be):
    port = free_port()
    h2proxies(simple_config(port, h1be.port))
    c = H2Client(port)
    try:
        bodies = {}
        for i in range(16):
            body = f"stream-{i}-".encode() * (i * 50 + 1)
            sid = c.request(f"/echo/{i}", method="POST", body=body)
            bodies[sid] = (i, body)
        # and 8 slow ones at once: concurrent upstream exchanges, not serialized
        t0 = time.time()
        slow = [c.request(f"/slow?ms=600&n={i}") for i in range(8)]
        assert c.wait(lambda: all(c.streams[s].done for s in list(bodies) + slow), 10)
        elapsed = time.time() - t0
        for sid, (i, body) in bodies.items():
            r = c.streams[sid]
            assert r.status == 200 and r.ended and bytes(r.data) == body, i
        for sid in slow:
            assert c.streams[sid].status == 200 and bytes(c.streams[sid].data) == b"slow done"
        assert elapsed < 3.5, elapsed   # 8 x 600 ms serialized would be 4.8 s
        assert c.goaway is None
    finally:
        c.close()
    assert sorted(q["path"] for q in h1be.requests if q["path"].startswith("/echo")) == \
        sorted(f"/echo/{i}" for i in range(16))


def test_empty_data_frames_do_not_end_chunked_body(h2proxies, h1be):
    """Zero-length DATA frames mid-body must not become a zero-size chunk
    (the end of a chunked HTTP/1.1 body) toward the backend."""
    port = free_port()
    h2proxies(simple_config(port, h1be.port))
    c = RawConn(port)
    try:
        c.request(1, "/empty-frames", "POST", end_stream=False)
        c.send(frame(DATA, 0, 1, b"abc") + frame(DATA, 0, 1, b"") * 3 + frame(DATA, 0, 1, b"def") +
               frame(DATA, END_STREAM, 1, b""))
        assert c.wait(lambda: c.ended(1), 5)
        assert c.headers[1][0][0] == (":status", "200") and c.data[1] == b"abcdef"
        c.request(3, "/next")
        assert c.wait(lambda: c.ended(3), 5)
        assert c.headers[3][0][0] == (":status", "200")
    finally:
        c.close()
    assert [(q["path"], q["body"], q["chunked"]) for q in h1be.requests] == \
        [("/empty-frames", b"abcdef", True), ("/next", b"", False)]


def test_trailers_both_ways(h2proxies, h1be):
    port = free_port()
    h2proxies(simple_config(port, h1be.port))
    c = H2Client(port)
    try:
        sid = c.request("/trailers", method="POST", headers=[("te", "trailers")],
                        end_stream=False)
        c.send_body(sid, b"request body", end_stream=False)
        c.send_trailers(sid, [("x-req-trailer", "v1"), ("x-req-sum", "7")])
        r = c.wait_done(sid)
        assert r.status == 200 and r.ended
        assert bytes(r.data) == b"hello world"
        assert r.trailers == [("x-resp-trailer", "done"), ("x-checksum", "42")]
        assert not [k for k, _ in r.headers if k in HOP_BY_HOP]
    finally:
        c.close()
    req = h1be.requests[0]
    assert req["chunked"] and req["body"] == b"request body"
    assert req["trailers"] == [("x-req-trailer", "v1"), ("x-req-sum", "7")]


def test_100_continue_interim(h2proxies, h1be):
    port = free_port()
    h2proxies(simple_config(port, h1be.port))
    c = H2Client(port)
    try:
        sid = c.request("/expect", method="POST",
                        headers=[("expect", "100-continue"), ("content-length", "9")],
                        end_stream=False)
        # the client holds the body until the interim response arrives
        assert c.wait(lambda: c.streams[sid].interim or c.streams[sid].done, 3)
        r = c.streams[sid]
        assert r.interim == [[(":status", "100")]] and r.headers is None
        c.send_body(sid, b"late body")
        r = c.wait_done(sid)
        assert r.status == 200 and bytes(r.data) == b"late body"
    finally:
        c.close()
    assert h1be.events == [("100-sent", "/expect"), ("request", "/expect")]
    assert h1be.requests[0]["body"] == b"late body"


def test_flow_control_stalled_clients_bounded_memory(h2proxies, nginx, www):
    d, files = www
    n = nginx(f"location /files/ {{ alias {d}/; }}")
    port = free_port()
    p = h2proxies(simple_config(port, n.port))
    assert_alive_and_serving(p, port, path="/files/f100")
    rss0 = p.rss_kib()
    stalled = [H2Client(port, auto_window=False) for _ in range(4)]
    try:
        sids = [c.request(f"/files/f{10 * MiB}") for c in stalled]
        for c, sid in zip(stalled, sids):
            # exactly the client's initial windows (65535), then nothing
            assert c.wait(lambda c=c, sid=sid: len(c.streams[sid].data) >= 65535, 5)
        time.sleep(1.5)
        for c, sid in zip(stalled, sids):
            c.pump(0.05)
            assert len(c.streams[sid].data) == 65535 and not c.streams[sid].done
        growth = p.rss_kib() - rss0
        assert growth < 30 * 1024, f"RSS grew {growth} KiB for 4 stalled 10 MiB downloads"
        # no head-of-line blocking: with connection window given back, other
        # streams of a stalled connection still complete
        c0, sid0 = stalled[0], sids[0]
        c0.conn.increment_flow_control_window(MiB)
        c0.flush()
        more = [c0.request(f"/files/f100?same={i}") for i in range(5)]
        assert c0.wait(lambda: all(c0.streams[s].done for s in more), 5)
        for s in more:
            assert c0.streams[s].status == 200 and len(c0.streams[s].data) == 100
        assert len(c0.streams[sid0].data) == 65535
        # other clients are served meanwhile
        other = H2Client(port)
        try:
            for i in range(10):
                r = other.get(f"/files/f100?i={i}")
                assert r.status == 200 and len(r.data) == 100
        finally:
            other.close()
        # opening the window resumes the download, intact
        want = file_sha(files[10 * MiB])
        for c, sid in zip(stalled, sids):
            c.auto_window = True
            c.conn.increment_flow_control_window(16 * MiB)
            c.conn.increment_flow_control_window(16 * MiB, stream_id=sid)
            c.flush()
        for c, sid in zip(stalled, sids):
            r = c.wait_done(sid, 30)
            assert r.status == 200 and r.ended and len(r.data) == 10 * MiB
            assert sha(bytes(r.data)) == want
    finally:
        for c in stalled:
            c.close()


def test_upload_to_stalled_upstream_is_flow_controlled(h2proxies, h1be):
    """Request DATA is acknowledged only once forwarded: while the upstream
    does not read, the clients' windows close instead of the proxy buffering."""
    port = free_port()
    p = h2proxies(simple_config(port, h1be.port))
    assert_alive_and_serving(p, port)
    rss0 = p.rss_kib()
    size = 20 * MiB
    data = os.urandom(size)
    clients = [H2Client(port) for _ in range(3)]
    try:
        sids = [c.request(f"/noread/{i}", method="POST", end_stream=False,
                          headers=[("content-length", str(size))])
                for i, c in enumerate(clients)]
        sent = [c.send_body(sid, data, timeout=0.4, partial=True)
                for c, sid in zip(clients, sids)]
        # bounded by windows and socket buffers, far from 20 MiB each
        for n in sent:
            assert 65535 <= n < 8 * MiB, sent
        growth = p.rss_kib() - rss0
        assert growth < 30 * 1024, f"RSS grew {growth} KiB for 3 stalled 20 MiB uploads"
        # once the upstream reads, every upload completes intact
        for c, sid, n in zip(clients, sids, sent):
            c.send_body(sid, data[n:], timeout=30)
        for c, sid in zip(clients, sids):
            r = c.wait_done(sid, 30)
            assert r.status == 200 and len(r.data) == size and bytes(r.data) == data
    finally:
        for c in clients:
            c.close()
    assert sorted(len(q["body"]) for q in h1be.requests if q["path"].startswith("/noread")) == \
        [size] * 3


def test_rapid_reset_goaway_while_others_served(h2proxies, nginx):
    # nginx: each reset stream may still cost an upstream connect, and a
    # small-backlog python backend would turn that burst into 503 UF
    n = nginx('location / { return 200 "ok"; }')
    port = free_port()
    p = h2proxies(simple_config(port, n.port))   # default max_resets_per_second 200
    results, stop = [], threading.Event()

    def other_client():
        c = H2Client(port)
        try:
            while not stop.is_set() and len(results) < 500:
                results.append(c.get("/other").status)
        finally:
            c.close()

    t = threading.Thread(target=other_client)
    t.start()
    try:
        time.sleep(0.1)
        enc = hpack.Encoder()
        buf = b""
        for i in range(1000):
            sid = 1 + 2 * i
            buf += frame(HEADERS, END_HEADERS | END_STREAM, sid, request_headers_block(enc, "/rr"))
            buf += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
        frames, closed = flood_then_read(port, buf)
        ga = goaways(frames)
        assert len(ga) == 1 and ga[0][1] == ENHANCE_YOUR_CALM, ga
        assert ga[0][0] < 1999    # cut off before the end of the burst
        assert closed
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(15)
    assert results and set(results) == {200}, results[:20]
    assert_alive_and_serving(p, port)


def test_continuation_flood(h2proxies, h1be):
    port = free_port()
    p = h2proxies(simple_config(port, h1be.port))
    enc = hpack.Encoder()
    buf = frame(HEADERS, 0, 1, request_headers_block(enc, "/cont"))
    for i in range(200):
        buf += frame(CONTINUATION, 0, 1, enc.encode([(f"x-c{i}", "v")]))
    frames, closed = flood_then_read(port, buf)
    ga = goaways(frames)
    # last_stream_id may name stream 1 (nghttp2 counts the opened stream)
    assert len(ga) == 1 and ga[0][0] in (0, 1) and ga[0][1] == ENHANCE_YOUR_CALM, ga
    assert closed
    assert h1be.requests == []
    assert_alive_and_serving(p, port)


@pytest.mark.parametrize("kind", ["settings", "ping"])
def test_control_frame_flood(h2proxies, h1be, kind):
    port = free_port()
    p = h2proxies(simple_config(port, h1be.port))
    one = frame(SETTINGS, 0, 0) if kind == "settings" else frame(PING, 0, 0, b"abcdefgh")
    # a small burst is fine: every frame acknowledged, no GOAWAY
    s = connect(port)
    try:
        s.sendall(PREFACE + frame(SETTINGS, 0, 0) + one * 50)
        data = b""
        want = 51 if kind == "settings" else 50
        deadline = time.time() + 3
        while time.time() < deadline:
            s.settimeout(0.3)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                chunk = b""
            data += chunk
            acks = [f for f in parse_frames(data)
                    if f[0] == (SETTINGS if kind == "settings" else PING) and f[1] & ACK]
            if len(acks) >= want:
                break
        frames = parse_frames(data)
        acks = [f for f in frames if f[0] == (SETTINGS if kind == "settings" else PING)
                and f[1] & ACK]
        assert len(acks) == want and goaways(frames) == []
        if kind == "ping":
            assert {f[3] for f in acks} == {b"abcdefgh"}
    finally:
        s.close()
    # a flood sent without reading: GOAWAY ENHANCE_YOUR_CALM, connection closed
    frames, closed = flood_then_read(port, one * 20000)
    assert goaways(frames) == [(0, ENHANCE_YOUR_CALM)]
    assert closed
    assert_alive_and_serving(p, port)


def test_window_update_overflow(h2proxies, h1be):
    port = free_port()
    p = h2proxies(simple_config(port, h1be.port))
    # connection window 65535 + (2^31 - 1) > 2^31 - 1: connection error
    frames, closed = flood_then_read(port, frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)))
    assert goaways(frames) == [(0, FLOW_CONTROL_ERROR)]
    assert closed
    # the same on a stream is a stream error: RST_STREAM FLOW_CONTROL_ERROR, connection lives
    c = H2Client(port)
    try:
        sid = c.request("/slow?ms=500")
        c.sock.sendall(frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 0x7FFFFFFF)))
        r = c.wait_done(sid)
        assert r.reset == FLOW_CONTROL_ERROR
        assert c.goaway is None
        assert c.get("/after").status == 200
    finally:
        c.close()
    assert_alive_and_serving(p, port)


def test_header_list_over_max_header_bytes(h2proxies, h1be):
    port = free_port()
    p = h2proxies(simple_config(port, h1be.port) | {
        "limits": {"max_header_bytes": 4096, "max_request_line": 2048}})
    c = H2Client(port)
    try:
        # within the limit: served
        r = c.get("/small", headers=[("x-fill", "a" * 2000)])
        assert r.status == 200
        # HPACK-bomb-ish: one 3000-byte field indexed once, then repeated 20
        # times by reference (about 60 KB decoded from a few hundred bytes)
        big = [("x-bomb", "b" * 3000)] * 20
        r = c.get("/bomb", headers=big)
        assert r.reset == PROTOCOL_ERROR and r.headers is None
        # many distinct large fields
        r = c.get("/many", headers=[(f"x-h{i}", "c" * 1000) for i in range(8)])
        assert r.reset == PROTOCOL_ERROR and r.headers is None
        # the connection survives, HPACK state in sync
        assert c.goaway is None
        r = c.get("/after", headers=[("x-fill", "d" * 100)])
        assert r.status == 200
    finally:
        c.close()
    assert [q["path"] for q in h1be.requests] == ["/small", "/after"]
    assert_alive_and_serving(p, port)


def test_more_than_max_concurrent_streams_refused(h2proxies, h1be):
    port = free_port()
    p = h2proxies(simple_config(port, h1be.port) | {
        "limits": {"http2": {"max_concurrent_streams": 4}}})
    enc = hpack.Encoder()
    s = connect(port)
    try:
        # 6 open streams (no END_STREAM) before we have seen, let alone
        # acknowledged, the proxy's SETTINGS
        buf = PREFACE + frame(SETTINGS, 0, 0)
        for i in range(6):
            buf += frame(HEADERS, END_HEADERS, 1 + 2 * i,
                         request_headers_block(enc, f"/c{i}", "POST"))
        s.sendall(buf)
        data = b""
        deadline = time.time() + 3
        while time.time() < deadline and len(resets(parse_frames(data))) < 2:
            s.settimeout(0.3)
            try:
                data += s.recv(65536)
            except socket.timeout:
                pass
        frames = parse_frames(data)
        settings = [f for f in frames if f[0] == SETTINGS and not f[1] & ACK]
        assert settings
        assert struct.pack(">HI", 3, 4) in settings[0][3]   # MAX_CONCURRENT_STREAMS 4
        assert resets(frames) == {9: REFUSED_STREAM, 11: REFUSED_STREAM}
        # finish the four accepted streams: each is answered
        s.sendall(frame(SETTINGS, ACK, 0) +
                  b"".join(frame(DATA, END_STREAM, 1 + 2 * i, b"x") for i in range(4)))
        data = b""
        deadline = time.time() + 5
        while time.time() < deadline:
            s.settimeout(0.3)
            try:
                data += s.recv(65536)
            except socket.timeout:
                pass
            done = {sid for t, f, sid, _ in parse_frames(data) if t == DATA and f & END_STREAM}
            if done >= {1, 3, 5, 7}:
                break
        frames = parse_frames(data)
        assert {sid for t, f, sid, _ in frames if t == DATA and f & END_STREAM} == {1, 3, 5, 7}
        assert {sid for t, _, sid, _ in frames if t == HEADERS} == {1, 3, 5, 7}
        assert goaways(frames) == [] and resets(frames) == {}
    finally:
        s.close()
    assert sorted(q["path"] for q in h1be.requests) == ["/c0", "/c1", "/c2", "/c3"]
    assert_alive_and_serving(p, port)


def test_bad_preface_over_tls_h2(h2proxies, backend, certs):
    port = free_port()
    p = h2proxies(strict_config(port, backend.port, certs))
    s = connect(port, client_tls(certs))
    try:
        assert s.selected_alpn_protocol() == "h2"
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + frame(SETTINGS, 0, 0))
        data, closed = read_until_closed(s, 3)
    finally:
        s.close()
    frames = parse_frames(data)
    assert goaways(frames) == [(0, PROTOCOL_ERROR)], frames
    assert closed
    assert backend.requests == []
    assert_alive_and_serving(p, port, client_tls(certs))


# ---------------------------------------------------------------- 3. resets toward an h2 upstream

def test_client_rst_cancels_h2_upstream_stream(h2proxies, h2be):
    port = free_port()
    cfg = simple_config(port, h2be.port)
    cfg["clusters"][0]["protocol"] = "http2"
    p = h2proxies(cfg, "h2up")
    c = H2Client(port)
    try:
        r = c.get("/plain")
        assert r.status == 200 and bytes(r.data) == b"h2 backend"
        sid = c.request("/slow")
        assert c.wait(lambda: len(c.streams[sid].data) >= 4096, 5)
        assert c.streams[sid].status == 200 and not c.streams[sid].done
        c.reset(sid, CANCEL)
        assert wait_for(lambda: len(h2be.resets) >= 1, 3), "upstream stream never reset"
        assert len(h2be.resets) == 1 and h2be.resets[0][1] == CANCEL
        # the upstream connection stays usable for the next request
        r = c.get("/plain2")
        assert r.status == 200 and bytes(r.data) == b"h2 backend"
    finally:
        c.close()
    assert [q["headers"][":path"] for q in h2be.requests] == ["/plain", "/slow", "/plain2"]
    q = h2be.requests[0]["headers"]
    assert q[":method"] == "GET" and q[":authority"] == "test" and q[":scheme"] == "http"
    assert q["x-forwarded-for"] == "127.0.0.1"
    assert h2be.connections == 1
    assert_alive_and_serving(p, port, path="/plain3")
    # every request counted once, the cancelled one included
    assert wait_metric(p, "istio_requests_total", 4, request_protocol="http/2") == 4


@pytest.mark.parametrize("code,expected", [(CANCEL, CANCEL), (PROTOCOL_ERROR, INTERNAL_ERROR)],
                         ids=["cancel", "protocol_error"])
def test_upstream_reset_mid_response_passed_to_client(h2proxies, h2be, code, expected):
    port = free_port()
    cfg = simple_config(port, h2be.port)
    cfg["clusters"][0]["protocol"] = "http2"
    p = h2proxies(cfg)
    c = H2Client(port)
    try:
        r = c.get(f"/reset?code={code}")
        assert r.status == 200 and bytes(r.data) == b"partial"
        assert r.reset == expected and not r.ended
        assert c.goaway is None
        assert c.get("/after").status == 200
    finally:
        c.close()
    assert_alive_and_serving(p, port)


def test_h1_and_h2_clients_multiplexed_on_one_h2_upstream(h2proxies, h2be):
    port = free_port()
    cfg = simple_config(port, h2be.port)
    cfg["clusters"][0]["protocol"] = "http2"
    p = h2proxies(cfg)
    # HTTP/1.1 client: Host becomes :authority; a response without
    # content-length is sent chunked
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /nolen HTTP/1.1\r\nHost: h1.example\r\nConnection: close\r\n"
                  b"Cookie: a=1; b=2\r\n\r\n")
        data, _ = read_until_closed(s, 5)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    fields = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
    assert [v for k, v in fields if k.lower() == "transfer-encoding"] == ["chunked"]
    assert [v for k, v in fields if k.lower() == "x-h2"] == ["yes"]
    assert body == b"9\r\nno length\r\n0\r\n\r\n"
    q = h2be.requests[0]["headers"]
    assert q[":authority"] == "h1.example" and q[":path"] == "/nolen" and q[":method"] == "GET"
    assert "host" not in q and "connection" not in q
    assert q["cookie"] == "a=1; b=2"
    # several clients at once share the one upstream connection
    clients = [H2Client(port) for _ in range(3)]
    try:
        sids = [(c, c.request(f"/m/{i}/{j}")) for i, c in enumerate(clients) for j in range(5)]
        for c, sid in sids:
            r = c.wait_done(sid)
            assert r.status == 200 and bytes(r.data) == b"h2 backend"
    finally:
        for c in clients:
            c.close()
    assert len(h2be.requests) == 16
    assert h2be.connections == 1
    assert wait_metric(p, "istio_requests_total", 15, request_protocol="http/2") == 15
    assert p.metric("istio_requests_total", request_protocol="http") == 1


def test_client_rst_mid_download_from_http1_upstream(h2proxies, nginx, www):
    """A reset stream's HTTP/1.1 upstream connection (response half read)
    must not be reused: the following requests get their own, intact bodies."""
    d, files = www
    n = nginx(f"location /files/ {{ alias {d}/; }}")
    port = free_port()
    p = h2proxies(simple_config(port, n.port))
    c = H2Client(port)
    try:
        for round_ in range(3):
            sid = c.request(f"/files/f{10 * MiB}?r={round_}")
            assert c.wait(lambda: len(c.streams[sid].data) >= 100000, 5)
            c.reset(sid, CANCEL)
            got = [c.request(f"/files/f{MiB}?after={round_}-{i}") for i in range(3)]
            for g in got:
                r = c.wait_done(g, 10)
                assert r.status == 200 and len(r.data) == MiB
                assert sha(bytes(r.data)) == file_sha(files[MiB])
        assert c.goaway is None
    finally:
        c.close()
    assert_alive_and_serving(p, port, path="/files/f100")


def test_h1_chunked_trailers_to_h2_upstream_and_back(h2proxies, h2be):
    port = free_port()
    cfg = simple_config(port, h2be.port)
    cfg["clusters"][0]["protocol"] = "http2"
    h2proxies(cfg)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /trailers HTTP/1.1\r\nHost: t.example\r\nTE: trailers\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  b"4\r\nbody\r\n0\r\nx-req-trailer: v\r\n\r\n")
        data, _ = read_until_closed(s, 5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\ntransfer-encoding: chunked" in head.lower()
    assert body == b"5\r\nhello\r\n0\r\nx-up-trailer: yes\r\n\r\n"
    q = h2be.requests[0]
    assert q["body"] == b"body" and q["trailers"] == [("x-req-trailer", "v")]
    assert q["headers"][":authority"] == "t.example" and q["headers"].get("te") == "trailers"
    assert "transfer-encoding" not in q["headers"] and "connection" not in q["headers"]


# ---------------------------------------------------------------- 4. drain

def test_sigterm_drain_goaway_then_inflight_completes(h2proxies, h1be):
    port = free_port()
    p = h2proxies(simple_config(port, h1be.port))
    c = RawConn(port)
    idle = RawConn(port)       # a second connection with nothing in flight
    try:
        idle.request(1, "/quick")
        assert idle.wait(lambda: idle.ended(1), 3)
        c.request(1, "/slow?ms=1500")
        # the request reaches the backend (which then sleeps 1.5 s)
        assert wait_for(lambda: ("request", "/slow?ms=1500") in h1be.events, 2)
        time.sleep(0.2)
        t0 = time.time()
        p.signal(signal.SIGTERM)
        # the idle connection: GOAWAY NO_ERROR, then closed at once
        assert idle.wait(lambda: idle.closed, 2), "idle h2 connection not closed on drain"
        assert goaways([f[1:] for f in idle.frames]) == [(1, NO_ERROR)]
        assert c.wait(lambda: c.first(GOAWAY) is not None, 2), "no GOAWAY after SIGTERM"
        t_goaway, payload = c.first(GOAWAY)
        assert t_goaway - t0 < 1.0
        assert struct.unpack(">II", payload[:8]) == (1, NO_ERROR)
        assert not c.ended(1)               # GOAWAY came before the response
        # a stream opened after the GOAWAY is not processed
        c.request(3, "/late")
        assert c.wait(lambda: c.ended(1), 5), "in-flight response did not complete"
        assert c.headers[1] and c.headers[1][0][0] == (":status", "200")
        assert c.data[1] == b"slow done"
        assert resets([f[1:] for f in c.frames]) == {}
        assert len(goaways([f[1:] for f in c.frames])) == 1
        t_done = c.first(DATA, 1)[0]
        assert c.wait(lambda: c.closed, 5), "connection not closed after drain"
    finally:
        c.close()
        idle.close()
    assert p.proc.wait(timeout=10) == 0
    assert time.time() - t_done < 2.0     # exits once the stream is done, not at drain_timeout
    assert "draining" in p.read_log()
    assert [q["path"] for q in h1be.requests] == ["/quick", "/slow?ms=1500"]


# ---------------------------------------------------------------- 5. metrics and access log

def test_metrics_and_access_log_protocol(h2proxies, backend, workdir):
    port = free_port()
    log_path = os.path.join(workdir, "access.log")
    cfg = simple_config(port, backend.port)
    cfg["access_log"] = {"enabled": True, "path": log_path}
    p = h2proxies(cfg)
    c = H2Client(port)
    try:
        for i in range(3):
            assert c.get(f"/h2py/{i}").status == 200
    finally:
        c.close()
    for i in range(2):
        rc, out, err = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://127.0.0.1:{port}/h2curl/{i}")
        assert rc == 0 and out == b"200", err
    for i in range(2):
        rc, out, err = curl("--http1.1", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://127.0.0.1:{port}/h1/{i}")
        assert rc == 0 and out == b"200", err
    assert wait_metric(p, "istio_requests_total", 5, request_protocol="http/2") == 5
    assert wait_metric(p, "istio_requests_total", 2, request_protocol="http") == 2
    assert p.metric("istio_requests_total", request_protocol="http/2", response_code="200",
                    grpc_response_status="") == 5
    assert p.metric("istio_requests_total", request_protocol="grpc") == 0

    def lines():
        try:
            with open(log_path) as f:
                return [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []
    assert wait_for(lambda: len(lines()) >= 7, 3)
    entries = lines()
    assert len(entries) == 7
    by_path = {e["path"]: e for e in entries}
    for path in ["/h2py/0", "/h2py/1", "/h2py/2", "/h2curl/0", "/h2curl/1"]:
        assert by_path[path]["protocol"] == "HTTP/2" and by_path[path]["response_code"] == 200
        assert by_path[path]["method"] == "GET"
        assert "grpc_status" not in by_path[path]
    assert by_path["/h2py/0"]["authority"] == "test"
    for path in ["/h1/0", "/h1/1"]:
        assert by_path[path]["protocol"] == "HTTP/1.1"
    with open(log_path) as f:
        assert f.read().count('"protocol":"HTTP/2"') == 5


# ---------------------------------------------------------------- 6. idle timeout

def test_idle_h2_connection_gets_goaway(h2proxies, h1be):
    port = free_port()
    p = h2proxies(simple_config(port, h1be.port, timeouts={"idle": "500ms"}))
    c = H2Client(port)
    try:
        r = c.get("/quick")
        assert r.status == 200 and r.ended
        assert c.goaway is None
        t0 = time.time()
        assert c.wait(lambda: c.goaway is not None, 3), "no GOAWAY on idle connection"
        elapsed = time.time() - t0
        assert 0.35 <= elapsed <= 2.0, elapsed
        assert c.goaway == (NO_ERROR, 1)
        assert c.wait(lambda: c.closed, 2), "connection not closed after idle GOAWAY"
    finally:
        c.close()
    assert_alive_and_serving(p, port)


def test_idle_timeout_is_per_request_inactivity_as_on_http1(h2proxies, h1be):
    """timeouts.idle bounds silence: a connection without open streams is
    closed (GOAWAY) after it, and a request on which no byte moves for that
    long ends with 504 UT, exactly as over HTTP/1.1 on the same listener; a
    request faster than it completes."""
    port = free_port()
    p = h2proxies(simple_config(port, h1be.port, timeouts={"idle": "500ms"}))
    # HTTP/1.1 reference on the same listener
    rc, out, err = curl("--http1.1", "-o", "/dev/null", "-w", "%{http_code}",
                        f"http://127.0.0.1:{port}/slow?ms=1000")
    assert rc == 0 and out == b"504", err
    c = RawConn(port)
    try:
        c.request(1, "/slow?ms=1000")
        assert c.wait(lambda: c.ended(1) or c.closed, 3)
        assert c.headers.get(1) and c.headers[1][0][0] == (":status", "504")
        c.request(3, "/slow?ms=200")
        assert c.wait(lambda: c.ended(3) or c.closed, 3)
        assert c.headers.get(3) and c.headers[3][0][0] == (":status", "200")
        assert c.data[3] == b"slow done"
        # no stream open: the idle GOAWAY follows
        assert c.wait(lambda: c.first(GOAWAY) is not None, 3)
        assert struct.unpack(">II", c.first(GOAWAY)[1][:8]) == (3, NO_ERROR)
        assert c.first(GOAWAY)[0] > c.first(DATA, 3)[0]
    finally:
        c.close()
    assert wait_metric(p, "istio_requests_total", 2, response_code="504",
                       response_flags="UT") == 2
    assert_alive_and_serving(p, port)
