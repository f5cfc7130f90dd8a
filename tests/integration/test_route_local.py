"""Route actions the proxy performs itself (filter/route_action.h): redirects,
fault injection (delay, abort) and CORS, with real clients (curl for
HTTP/1.1, python h2 for HTTP/2, grpcio for gRPC) against real backends. The
backends count what reaches them: a local answer must never get there.
"""
import json
import os
import subprocess
import sys
import time

import grpc
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import grpcutil  # noqa: E402
from conftest import RecordingBackend, free_port, sanitizer_checked  # noqa: E402
from h2util import CANCEL, H2Backend, H2Client  # noqa: E402
from test_http1_proxy import hget, http_config, wait_metric  # noqa: E402


# The event loop's timers count whole milliseconds from the clock read at the
# start of its turn: a delay may end up to a millisecond early.
TICK = 0.002


@pytest.fixture
def proxies(proxies):
    """`proxies`, with every proxy's log checked for sanitizer reports at
    teardown (meaningful with TRELLIS_BIN pointing at an ASan/UBSan build)."""
    yield from sanitizer_checked(proxies)


def curl(port, path, *args, host=None, workdir="/tmp", method=None, data=None):
    """One HTTP/1.1 request with curl (no redirect following): (status,
    headers [(lowercase name, value)], body bytes, seconds)."""
    hfile = os.path.join(workdir, "curl.headers")
    bfile = os.path.join(workdir, "curl.body")
    cmd = ["curl", "-sS", "--http1.1", "--max-time", "10", "-D", hfile, "-o", bfile,
           "-w", "%{http_code} %{time_total}"]
    if host is not None:
        cmd += ["-H", f"Host: {host}"]
    if method is not None:
        cmd += ["-X", method]
    if data is not None:
        cmd += ["--data-binary", "@-", "-H", "Content-Type: application/octet-stream"]
    cmd += [*args, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, input=data, capture_output=True, check=True, timeout=20)
    code, seconds = out.stdout.decode().split()
    headers = []
    with open(hfile, "rb") as f:
        for line in f.read().decode().split("\r\n")[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.append((k.strip().lower(), v.strip()))
    with open(bfile, "rb") as f:
        body = f.read()
    return int(code), headers, body, float(seconds)


def h2_get(port, path, headers=(), authority=None, method="GET", body=None):
    c = H2Client(port)
    try:
        r = c.get(path, headers=list(headers), authority=authority or f"127.0.0.1:{port}",
                  method=method, body=body)
        return r.status, r.headers, bytes(r.data)
    finally:
        c.close()


def fields(headers, name):
    return [v for k, v in headers if k == name]


# ---------------------------------------------------------------- redirects

REDIRECTS = [
    # (route name, match, redirect, request path, Host, expected Location)
    ("path", {"exact": "/r/path"}, {"path": "/new"},
     "/r/path?q=1", "a.example", "http://a.example/new?q=1"),
    ("path-query", {"exact": "/r/pq"}, {"path": "/new?from=old", "code": 302},
     "/r/pq?q=1", "a.example", "http://a.example/new?from=old"),
    ("prefix", {"prefix": "/old/"}, {"prefix": "/v2/", "code": 303},
     "/old/x/y?q=1", "a.example:8080", "http://a.example:8080/v2/x/y?q=1"),
    ("scheme", {"prefix": "/r/scheme"}, {"scheme": "https", "code": 307},
     "/r/scheme", "a.example:80", "https://a.example/r/scheme"),
    ("scheme-port-kept", {"prefix": "/r/s2"}, {"scheme": "https", "code": 308},
     "/r/s2", "a.example:8080", "https://a.example:8080/r/s2"),
    ("host", {"prefix": "/r/host"}, {"host": "b.example"},
     "/r/host", "a.example:8080", "http://b.example/r/host"),
    ("port", {"prefix": "/r/port"}, {"port": 8443},
     "/r/port", "a.example:8080", "http://a.example:8443/r/port"),
    ("port-default", {"prefix": "/r/p443"}, {"scheme": "https", "port": 443},
     "/r/p443", "a.example:8080", "https://a.example/r/p443"),
    ("protocol-default", {"prefix": "/r/pd"},
     {"scheme": "https", "port_from": "protocol_default"},
     "/r/pd", "a.example:8080", "https://a.example/r/pd"),
    ("request-port", {"prefix": "/r/rp"}, {"host": "b.example", "port_from": "request"},
     "/r/rp", "a.example:8080", "http://b.example:8080/r/rp"),
    ("request-port-default", {"prefix": "/r/rd"}, {"scheme": "https", "port_from": "request"},
     "/r/rd", "a.example", "https://a.example:80/r/rd"),
]


def redirect_config(port, backend_port):
    routes = [{"name": name, "match": {"path": match}, "redirect": rd}
              for name, match, rd, _, _, _ in REDIRECTS]
    routes.append({"name": "rest", "cluster": "b"})
    return http_config(port, {"b": backend_port}, routes)


def test_redirect_fields_and_codes(proxies, backend, workdir):
    port = free_port()
    p = proxies(redirect_config(port, backend.port))
    for name, _, rd, path, host, want in REDIRECTS:
        code = rd.get("code", 301)
        # HTTP/1.1 (curl) and HTTP/2 (h2, prior knowledge) get the same answer.
        status, headers, body, _ = curl(port, path, host=host, workdir=workdir)
        assert (status, fields(headers, "location"), body) == (code, [want], b""), name
        assert hget(headers, "content-length") == "0", name
        status, headers, body = h2_get(port, path, authority=host)
        assert (status, fields(headers, "location"), body) == (code, [want], b""), name
    # HEAD is redirected alike, without a body.
    status, headers, _, _ = curl(port, "/r/path", "-I", host="a.example", workdir=workdir)
    assert status == 301 and hget(headers, "location") == "http://a.example/new"
    # No redirect reached the backend; the route after them still forwards.
    assert backend.requests == []
    status, _, _, _ = curl(port, "/other", workdir=workdir)
    assert status == 200 and len(backend.requests) == 1
    # A redirect is a local answer without a response flag, as in Envoy:
    # two requests per route (HTTP/1.1, HTTP/2), and the HEAD.
    moved = 2 * sum(1 for r in REDIRECTS if "code" not in r[2]) + 1
    assert wait_metric(p, moved, "istio_requests_total", response_code="301",
                       response_flags="-") == moved
    assert wait_metric(p, 2, "istio_requests_total", response_code="308") == 2


def test_redirect_without_host_and_long_path(proxies, backend, workdir):
    """An HTTP/1.0 request without Host gets a relative Location; a long path
    is redirected whole (the Location is built from slices, not a buffer)."""
    port = free_port()
    proxies(redirect_config(port, backend.port))
    status, headers, _, _ = curl(port, "/r/path?q=1", "--http1.0", "-H", "Host:",
                                 workdir=workdir)
    assert status == 301 and hget(headers, "location") == "/new?q=1"
    tail = "x" * 6000
    status, headers, _, _ = curl(port, f"/old/{tail}?q=1", host="a.example", workdir=workdir)
    assert status == 303 and hget(headers, "location") == f"http://a.example/v2/{tail}?q=1"
    status, headers, _ = h2_get(port, f"/old/{tail}", authority="a.example")
    assert status == 303 and hget(headers, "location") == f"http://a.example/v2/{tail}"
    assert backend.requests == []


def test_route_response_edits_on_own_answers(proxies, backend, workdir):
    """A route's response header edits apply to its redirect (Envoy's router
    reply), not to a fault abort (the fault filter's own reply)."""
    port = free_port()
    edits = {"set": {"x-route": "1"}}
    routes = [
        {"name": "moved", "match": {"path": {"prefix": "/old"}}, "redirect": {"path": "/new"},
         "response_headers": edits},
        {"name": "aborted", "match": {"path": {"prefix": "/abort"}}, "cluster": "b",
         "fault": {"abort": {"status": 503, "percent": 100}}, "response_headers": edits},
    ]
    proxies(http_config(port, {"b": backend.port}, routes))
    status, headers, _, _ = curl(port, "/old", host="a", workdir=workdir)
    assert status == 301 and fields(headers, "x-route") == ["1"]
    assert fields(headers, "location") == ["http://a/new"]
    status, headers, _ = h2_get(port, "/old", authority="a")
    assert status == 301 and fields(headers, "x-route") == ["1"]
    status, headers, _, _ = curl(port, "/abort", workdir=workdir)
    assert status == 503 and fields(headers, "x-route") == []
    status, headers, _ = h2_get(port, "/abort")
    assert status == 503 and fields(headers, "x-route") == []
    assert backend.requests == []


# ---------------------------------------------------------------- fault: abort

def fault_config(port, backend_port, fault, extra_routes=(), **kw):
    routes = [*extra_routes,
              {"name": "faulty", "match": {"path": {"prefix": "/"}}, "cluster": "b",
               "fault": fault}]
    cfg = http_config(port, {"b": backend_port}, routes)
    cfg.update(kw)
    return cfg


def access_log_lines(path, want, timeout=3.0):
    """The access log's entries, once there are `want` of them (a line is
    written just after its response)."""
    deadline = time.monotonic() + timeout
    while True:
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        if len(lines) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_fault_abort_http_both_protocols(proxies, backend, workdir):
    port = free_port()
    log = os.path.join(workdir, "access.log")
    p = proxies(fault_config(port, backend.port, {"abort": {"status": 503, "percent": 100}},
                             access_log={"enabled": True, "path": log}))
    status, headers, body, _ = curl(port, "/x", workdir=workdir)
    assert (status, body) == (503, b"fault filter abort\n")
    status, _, body = h2_get(port, "/x")
    assert (status, body) == (503, b"fault filter abort\n")
    assert backend.requests == []
    assert wait_metric(p, 2, "istio_requests_total", response_code="503",
                       response_flags="FI") == 2
    lines = access_log_lines(log, 2)
    assert [(e["response_code"], e["response_flags"], e["cluster"]) for e in lines] == \
        [(503, "FI", None)] * 2


def counting_nginx(nginx):
    """nginx answering 200 "ok", one access-log line per request it got."""
    n = nginx('access_log $DIR/logs/hits.log; location / { return 200 "ok"; }')
    n.hits = lambda: sum(1 for _ in open(os.path.join(n.dir, "logs", "hits.log")))
    return n


def test_fault_abort_rate(proxies, nginx):
    """25% aborted over 2000 keep-alive requests. The count is binomial
    (n = 2000, p = 0.25: mean 500, sd 19.4); the tolerance is 5 sd (+-97),
    a false failure about once in 1.7 million runs. The backend gets exactly
    the others, and the metrics count each side exactly."""
    import requests
    b = counting_nginx(nginx)
    port = free_port()
    p = proxies(fault_config(port, b.port, {"abort": {"status": 418, "percent": 25}}))
    n, aborted = 2000, 0
    with requests.Session() as s:
        for i in range(n):
            r = s.get(f"http://127.0.0.1:{port}/rate/{i}", timeout=10)
            assert r.status_code in (200, 418)
            aborted += r.status_code == 418
    assert 500 - 97 <= aborted <= 500 + 97, aborted
    assert b.hits() == n - aborted
    assert wait_metric(p, aborted, "istio_requests_total", response_code="418",
                       response_flags="FI") == aborted
    assert wait_metric(p, n - aborted, "istio_requests_total", response_code="200",
                       response_flags="-") == n - aborted


# ---------------------------------------------------------------- fault: delay

def test_fault_delay_then_forward(proxies, workdir):
    """The request waits, then goes on whole: its body (larger than a
    buffer, so most of it is still in the socket) arrives intact."""
    b = RecordingBackend()
    try:
        port = free_port()
        p = proxies(fault_config(port, b.port, {"delay": {"fixed": "300ms", "percent": 100}}))
        body = os.urandom(200 * 1024)
        status, _, out, seconds = curl(port, "/up", method="POST", data=body, workdir=workdir)
        assert status == 200 and seconds >= 0.3 - TICK
        assert json.loads(out)["body_len"] == len(body)
        assert b.requests[-1]["body"] == body
        t0 = time.monotonic()
        status, _, out = h2_get(port, "/up2", method="POST", body=body)
        assert status == 200 and time.monotonic() - t0 >= 0.3 - TICK
        assert b.requests[-1]["path"] == "/up2" and b.requests[-1]["body"] == body
        assert wait_metric(p, 2, "istio_requests_total", response_code="200",
                           response_flags="DI") == 2
    finally:
        b.close()


def test_fault_delay_then_abort(proxies, backend, workdir):
    port = free_port()
    log = os.path.join(workdir, "access.log")
    p = proxies(fault_config(port, backend.port, {"delay": {"fixed": "200ms", "percent": 100},
                                                  "abort": {"status": 503, "percent": 100}},
                             access_log={"enabled": True, "path": log}))
    status, _, body, seconds = curl(port, "/x", workdir=workdir)
    assert (status, body) == (503, b"fault filter abort\n") and seconds >= 0.2 - TICK
    t0 = time.monotonic()
    status, _, body = h2_get(port, "/x")
    assert (status, body) == (503, b"fault filter abort\n")
    assert time.monotonic() - t0 >= 0.2 - TICK
    assert backend.requests == []
    assert wait_metric(p, 2, "istio_requests_total", response_code="503",
                       response_flags="DI,FI") == 2
    lines = access_log_lines(log, 2)
    assert [(e["response_code"], e["response_flags"]) for e in lines] == [(503, "DI,FI")] * 2
    assert [e["duration_us"] >= (0.2 - TICK) * 1e6 for e in lines] == [True, True], lines


def test_fault_delay_rate_http2(proxies, nginx):
    """20% delayed (30 ms) over 2000 HTTP/2 streams, 50 at a time on one
    connection: binomial mean 400, sd 17.9, tolerance 5 sd (+-89). Every
    request reaches the backend; DI counts the delayed ones exactly."""
    b = counting_nginx(nginx)
    port = free_port()
    p = proxies(fault_config(port, b.port, {"delay": {"fixed": "30ms", "percent": 20}}))
    c = H2Client(port)
    try:
        n = 2000
        for start in range(0, n, 50):
            sids = [c.request(f"/d/{i}", authority="a") for i in range(start, start + 50)]
            for sid in sids:
                assert c.wait_done(sid).status == 200
    finally:
        c.close()
    assert b.hits() == n
    assert wait_metric(p, n, "istio_requests_total") == n
    delayed = p.metric("istio_requests_total", response_flags="DI")
    assert 400 - 89 <= delayed <= 400 + 89, delayed
    assert wait_metric(p, n - delayed, "istio_requests_total", response_code="200",
                       response_flags="-") == n - delayed


def test_fault_delay_reset_by_client(proxies, backend):
    """A stream reset during its delay never reaches the backend."""
    port = free_port()
    p = proxies(fault_config(port, backend.port, {"delay": {"fixed": "500ms", "percent": 100}}))
    c = H2Client(port)
    try:
        sid = c.request("/gone", authority="a")
        c.pump(0.1)
        c.reset(sid, CANCEL)
        c.pump(0.6)
        assert c.get("/after", authority="a").status == 200
    finally:
        c.close()
    assert [r["path"] for r in backend.requests] == ["/after"]
    assert wait_metric(p, 1, "istio_requests_total", response_flags="DC,DI") == 1


def test_fault_delay_http1_client_to_http2_cluster(proxies, workdir):
    """HTTP/1.1 in, HTTP/2 out: the exchange is a stream and waits there."""
    port, bport = free_port(), free_port()
    b = H2Backend(bport)
    try:
        cfg = fault_config(port, bport, {"delay": {"fixed": "250ms", "percent": 100}})
        cfg["clusters"][0]["protocol"] = "http2"
        proxies(cfg)
        status, _, body, seconds = curl(port, "/h2", workdir=workdir)
        assert (status, body) == (200, b"h2 backend") and seconds >= 0.25 - TICK
        assert [r["headers"][":path"] for r in b.requests] == ["/h2"]
    finally:
        b.close()


# ---------------------------------------------------------------- fault: gRPC

def test_fault_grpc_abort(proxies, workdir):
    app_port, port = free_port(), free_port()
    server = grpcutil.EchoServer(app_port)
    try:
        routes = [
            {"name": "grpc-abort", "match": {"path": {"exact": "/test.Echo/Unary"}},
             "cluster": "app", "fault": {"abort": {"grpc_status": 14, "percent": 100}}},
            {"name": "http-abort", "match": {"path": {"exact": "/test.Echo/Bidi"}},
             "cluster": "app", "fault": {"abort": {"status": 503, "percent": 100}}},
            {"name": "echo", "cluster": "app"},
        ]
        cfg = http_config(port, {"app": app_port}, routes)
        cfg["clusters"][0]["protocol"] = "http2"
        p = proxies(cfg)
        client = grpcutil.Client(port)
        try:
            with pytest.raises(grpc.RpcError) as e:
                client.unary(b"hello", timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert e.value.details() == "fault filter abort"
            # An HTTP status abort reaches a gRPC client as the status it maps to.
            with pytest.raises(grpc.RpcError) as e:
                list(client.bidi(iter([b"a"]), timeout=5))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            # Other methods go through.
            assert client.client_stream(iter([b"a", b"b"]), timeout=5) == b"ab"
        finally:
            client.close()
        assert server.calls.get("Unary", 0) == 0 and server.calls.get("Bidi", 0) == 0
        # Trailers-only, as the gRPC spec wants a call that never started.
        r = grpcutil.raw_call(port, "/test.Echo/Unary", b"x")
        h = dict(r["headers"])
        assert r["trailers_only"] and (h[":status"], h["grpc-status"]) == ("200", "14"), r
        assert wait_metric(p, 3, "istio_requests_total", response_flags="FI",
                           grpc_response_status="14") == 3
        # A gRPC abort answers a plain HTTP request 200, as Envoy does.
        status, _, body, _ = curl(port, "/test.Echo/Unary", workdir=workdir)
        assert (status, body) == (200, b"fault filter abort\n")
    finally:
        server.close()


# ---------------------------------------------------------------- CORS

CORS = {
    "allow_origins": [{"exact": "https://app.example"}, {"regex": r"https://[a-z]+\.dev\.example"}],
    "allow_methods": ["GET", "POST", "PUT"],
    "allow_headers": ["x-token", "content-type"],
    "expose_headers": ["x-total"],
    "max_age": "10m",
    "allow_credentials": True,
}


def cors_config(port, backend_port, unmatched="forward"):
    cors = dict(CORS, unmatched_preflights=unmatched)
    routes = [
        {"name": "aborted", "match": {"path": {"prefix": "/abort"}}, "cluster": "b",
         "cors": cors, "fault": {"abort": {"status": 503, "percent": 100}}},
        {"name": "slow", "match": {"path": {"prefix": "/slow"}}, "cluster": "b",
         "cors": cors, "fault": {"delay": {"fixed": "200ms", "percent": 100}}},
        {"name": "down", "match": {"path": {"prefix": "/down"}}, "cluster": "dead", "cors": cors},
        {"name": "api", "match": {"path": {"prefix": "/"}}, "cluster": "b", "cors": cors},
    ]
    # Nothing listens on "dead" (free_port picks outside the ephemeral range).
    return http_config(port, {"b": backend_port, "dead": free_port()}, routes)


PREFLIGHT = [("origin", "https://x.dev.example"), ("access-control-request-method", "PUT"),
             ("access-control-request-headers", "x-token")]


def test_cors_preflight_answered_locally(proxies, backend, workdir):
    port = free_port()
    p = proxies(cors_config(port, backend.port))
    want = [("access-control-allow-origin", "https://x.dev.example"),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET,POST,PUT"),
            ("access-control-allow-headers", "x-token,content-type"),
            ("access-control-max-age", "600")]
    args = [a for k, v in PREFLIGHT for a in ("-H", f"{k}: {v}")]
    status, headers, body, _ = curl(port, "/items", *args, method="OPTIONS", workdir=workdir)
    assert status == 200 and body == b""
    assert [(k, v) for k, v in headers if k.startswith("access-control-")] == want
    status, headers, _ = h2_get(port, "/items", headers=PREFLIGHT, method="OPTIONS")
    assert status == 200
    assert [(k, v) for k, v in headers if k.startswith("access-control-")] == want
    assert backend.requests == []
    assert wait_metric(p, 2, "istio_requests_total", response_code="200",
                       response_flags="-") == 2


def test_cors_actual_requests(proxies, backend, workdir):
    port = free_port()
    proxies(cors_config(port, backend.port))
    # An allowed origin: forwarded; the response gets the CORS fields.
    status, headers, _, _ = curl(port, "/items", "-H", "Origin: https://app.example",
                                 workdir=workdir)
    assert status == 200
    assert fields(headers, "access-control-allow-origin") == ["https://app.example"]
    assert fields(headers, "access-control-allow-credentials") == ["true"]
    assert fields(headers, "access-control-expose-headers") == ["x-total"]
    assert fields(headers, "access-control-allow-methods") == []
    assert hget(backend.requests[-1]["headers"], "origin") == "https://app.example"
    status, headers, _ = h2_get(port, "/items", headers=[("origin", "https://a.dev.example")])
    assert status == 200
    assert fields(headers, "access-control-allow-origin") == ["https://a.dev.example"]
    assert fields(headers, "access-control-expose-headers") == ["x-total"]
    # Another origin, or none: forwarded, no CORS fields.
    for origin in ("https://evil.example", "https://app.example.evil", None):
        extra = ["-H", f"Origin: {origin}"] if origin else []
        status, headers, _, _ = curl(port, "/items", *extra, workdir=workdir)
        assert status == 200
        assert not [k for k, _ in headers if k.startswith("access-control-")], origin
        status, headers, _ = h2_get(port, "/items",
                                    headers=[("origin", origin)] if origin else [])
        assert not [k for k, _ in headers if k.startswith("access-control-")], origin
    assert len(backend.requests) == 8
    # The proxy's own answers after CORS (a 503 for a dead backend) carry
    # the fields too; a fault abort comes before CORS (istiod's filter
    # order: fault, CORS, router) and does not.
    for path, want in (("/down", ["https://app.example"]), ("/abort", [])):
        status, headers, _, _ = curl(port, path, "-H", "Origin: https://app.example",
                                     workdir=workdir)
        assert status == 503
        assert fields(headers, "access-control-allow-origin") == want, path
        status, headers, _ = h2_get(port, path, headers=[("origin", "https://app.example")])
        assert status == 503
        assert fields(headers, "access-control-allow-origin") == want, path
    assert len(backend.requests) == 8


def test_cors_preflight_after_fault_delay(proxies, backend, workdir):
    """A fault delay comes first: the preflight is answered when it ends."""
    port = free_port()
    proxies(cors_config(port, backend.port))
    args = [a for k, v in PREFLIGHT for a in ("-H", f"{k}: {v}")]
    status, headers, _, seconds = curl(port, "/slow", *args, method="OPTIONS", workdir=workdir)
    assert status == 200 and seconds >= 0.2 - TICK
    assert fields(headers, "access-control-allow-origin") == ["https://x.dev.example"]
    assert fields(headers, "access-control-allow-headers") == ["x-token,content-type"]
    t0 = time.monotonic()
    status, headers, _ = h2_get(port, "/slow", headers=PREFLIGHT, method="OPTIONS")
    assert status == 200 and time.monotonic() - t0 >= 0.2 - TICK
    assert fields(headers, "access-control-allow-origin") == ["https://x.dev.example"]
    assert fields(headers, "access-control-allow-methods") == ["GET,POST,PUT"]
    assert backend.requests == []


def test_cors_unmatched_preflights(proxies, backend, workdir):
    """forward (default): another origin's preflight goes to the backend;
    ignore: it is answered here, without Access-Control-Allow-Origin."""
    port = free_port()
    p = proxies(cors_config(port, backend.port))
    other = [("origin", "https://evil.example"), ("access-control-request-method", "PUT")]
    args = [a for k, v in other for a in ("-H", f"{k}: {v}")]
    status, headers, _, _ = curl(port, "/items", *args, method="OPTIONS", workdir=workdir)
    assert status == 200 and backend.requests[-1]["method"] == "OPTIONS"
    assert not [k for k, _ in headers if k.startswith("access-control-")]
    p.stop()
    port = free_port()
    proxies(cors_config(port, backend.port, unmatched="ignore"), name="ignore")
    status, headers, body, _ = curl(port, "/items", *args, method="OPTIONS", workdir=workdir)
    assert status == 200 and body == b""
    assert fields(headers, "access-control-allow-origin") == []
    assert fields(headers, "access-control-allow-methods") == ["GET,POST,PUT"]
    status, headers, _ = h2_get(port, "/items", headers=other, method="OPTIONS")
    assert status == 200 and fields(headers, "access-control-allow-origin") == []
    assert len(backend.requests) == 1


def test_cors_replaces_upstream_fields(proxies, nginx, workdir):
    """A backend's own Access-Control-Allow-Origin is replaced, never
    doubled (a browser refuses two); its other fields stay."""
    n = nginx('location / { add_header Access-Control-Allow-Origin "*" always; '
              'add_header X-Total 7 always; return 200 "ok"; }')
    port = free_port()
    proxies(cors_config(port, n.port))
    status, headers, body, _ = curl(port, "/items", "-H", "Origin: https://app.example",
                                    workdir=workdir)
    assert (status, body) == (200, b"ok")
    assert fields(headers, "access-control-allow-origin") == ["https://app.example"]
    assert fields(headers, "x-total") == ["7"]
    status, headers, _ = h2_get(port, "/items", headers=[("origin", "https://app.example")])
    assert status == 200
    assert fields(headers, "access-control-allow-origin") == ["https://app.example"]
    # Not allowed: the backend's field is left alone.
    status, headers, _, _ = curl(port, "/items", "-H", "Origin: https://evil.example",
                                 workdir=workdir)
    assert fields(headers, "access-control-allow-origin") == ["*"]
