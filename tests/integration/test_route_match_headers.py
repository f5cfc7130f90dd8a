"""Request matching and header edits (docs/config.md, routes[].match.query_params,
pseudo-header matches, routes[].request_headers / response_headers and the
same on weighted_clusters[]), end to end: curl for HTTP/1.1, python h2 for
HTTP/2 (cleartext and over mTLS), grpcio for gRPC, against backends that
echo or record the request headers they got.

Every route names itself through a request header edit (x-route), so the
backend sees which route matched and that the edit was applied."""
import json
import os
import subprocess
import sys

import grpc
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import grpcutil  # noqa: E402
from conftest import TRELLIS, free_port, sanitizer_checked, wait_port  # noqa: E402
from h2util import H2Backend, H2Client, tls_context  # noqa: E402

TD = "cluster.local"


def named(name, match=None, cluster="b", **extra):
    """A route whose request carries x-route: NAME upstream."""
    r = {"name": name, "cluster": cluster,
         "request_headers": {"set": {"x-route": name}}, **extra}
    if match is not None:
        r["match"] = match
    return r


def q(*params):
    return {"path": {"prefix": "/q"}, "query_params": list(params)}


def h(header):
    return {"path": {"prefix": "/h"}, "headers": [header]}


EDITS = {
    # The route's edits, then the destination's (weighted_clusters[0]).
    "name": "edit", "match": {"path": {"prefix": "/edit"}},
    "request_headers": {"remove": ["x-remove-me"],
                        "set": {"x-set": "route", "x-forwarded-proto": "edited",
                                "x-route": "edit"},
                        "add": {"x-add": "route"}},
    "response_headers": {"remove": ["server"], "set": {"x-resp-set": "route"},
                         "add": {"x-resp-add": "route"}},
}


def routes(cluster="b"):
    edit = dict(EDITS)
    edit["weighted_clusters"] = [{
        "cluster": cluster, "weight": 1,
        "request_headers": {"set": {"x-set": "dest"}, "add": {"x-add": "dest"}},
        "response_headers": {"add": {"x-resp-add": "dest"}}}]
    return [
        named("q-exact", q({"name": "v", "exact": "2"}), cluster),
        named("q-prefix", q({"name": "user", "prefix": "adm"}), cluster),
        named("q-regex", q({"name": "id", "regex": "[0-9]{3}"}), cluster),
        named("q-present", q({"name": "debug", "present": True}), cluster),
        named("q-raw", q({"name": "s", "exact": "a%20b"}), cluster),
        named("q-none", {"path": {"prefix": "/q"}}, cluster),
        named("auth-exact", h({"name": ":authority", "exact": "api.example.com"}), cluster),
        named("auth-regex", h({"name": ":authority", "regex": "[a-z]+\\.internal(:[0-9]+)?"}),
              cluster),
        named("method-post", h({"name": ":method", "exact": "POST"}), cluster),
        named("scheme-https", h({"name": ":scheme", "exact": "https"}), cluster),
        named("scheme-http", h({"name": ":scheme", "exact": "http"}), cluster),
        edit,
        {"name": "direct", "match": {"path": {"prefix": "/direct"}},
         "direct_response": {"status": 200, "body": "{}"},
         "response_headers": {"set": {"content-type": "application/json"},
                              "add": {"x-direct": "yes"}}},
        {"name": "down", "match": {"path": {"prefix": "/down"}}, "cluster": "down",
         "response_headers": {"add": {"x-local": "yes"}}},
    ]


def config(port, backend_port, protocol="http1", listener_extra=None, tls=None):
    listener = {"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}
    listener.update(listener_extra or {})
    cfg = {
        "listeners": [listener],
        "route_tables": [{"name": "rt", "virtual_hosts": [
            # Matching on :authority selects routes inside a virtual host; it
            # does not move requests between virtual hosts.
            {"name": "special", "domains": ["special.example.com"],
             "routes": [named("special", {"path": {"prefix": "/h"}})]},
            {"name": "all", "domains": ["*"], "routes": routes()}]}],
        "clusters": [
            {"name": "b", "protocol": protocol,
             "endpoints": [{"address": f"127.0.0.1:{backend_port}"}]},
            # Nothing listens there (free_port picks outside the ephemeral range).
            {"name": "down", "connect_timeout": "200ms",
             "endpoints": [{"address": f"127.0.0.1:{free_port()}"}]},
        ],
    }
    if tls:
        cfg["tls"] = [tls]
    return cfg


# ---------------------------------------------------------------- clients

def curl(port, path, headers=(), method="GET", certs=None):
    """One HTTP/1.1 request with curl: (status, [(name, value)], body)."""
    scheme = "https" if certs else "http"
    cmd = ["curl", "-sS", "-g", "-i", "--http1.1", "-m", "5", "-X", method]
    for k, v in headers:
        cmd += ["-H", f"{k}: {v}"]
    if certs:
        # The server's SVID names a SPIFFE ID, not a host: -k, but with our
        # client certificate, as the listener demands.
        cmd += ["-k", "--cert", certs["client_cert"], "--key", certs["client_key"]]
    r = subprocess.run(cmd + [f"{scheme}://127.0.0.1:{port}{path}"], capture_output=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = [(k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines[1:])]
    return int(lines[0].split()[1]), hdrs, body


def h2req(port, path, headers=(), method="GET", authority="test", scheme="http", certs=None):
    """One HTTP/2 request with python h2: (status, [(name, value)], body)."""
    ctx = tls_context(certs["client_cert"], certs["client_key"], certs["ca"]) if certs else None
    c = H2Client(port, ssl_ctx=ctx)
    try:
        r = c.get(path, headers=list(headers), method=method, authority=authority,
                  scheme=scheme)
        assert r.headers is not None, f"no response (reset {r.reset})"
        return r.status, [(k, v) for k, v in r.headers if not k.startswith(":")], bytes(r.data)
    finally:
        c.close()


def send(client, port, path, headers=(), method="GET", host="test", certs=None):
    if client == "http1":
        return curl(port, path, [("Host", host), *headers], method, certs)
    return h2req(port, path, headers, method, authority=host, certs=certs)


def values(hdrs, name):
    return [v for k, v in hdrs if k == name]


def upstream(backend):
    return backend.requests[-1]["headers"]


def routed(client, port, backend, path, **kw):
    """The route that took the request (its x-route edit, as the backend saw it)."""
    before = len(backend.requests)
    status, _, _ = send(client, port, path, **kw)
    assert status == 200, (path, status)
    assert len(backend.requests) == before + 1
    got = values(upstream(backend), "x-route")
    assert len(got) == 1, upstream(backend)
    return got[0]


CLIENTS = ["http1", "http2"]


@pytest.fixture
def checked(proxies):
    """Proxies whose logs must be free of sanitizer reports (with an ASan build)."""
    yield from sanitizer_checked(proxies)


# ---------------------------------------------------------------- matching

@pytest.mark.parametrize("client", CLIENTS)
def test_query_parameters(checked, backend, client):
    port = free_port()
    checked(config(port, backend.port))
    cases = [
        ("/q?v=2", "q-exact"),
        ("/q?x=1&v=2&y", "q-exact"),
        ("/q?v=20", "q-none"),
        ("/q?V=2", "q-none"),            # names are case-sensitive
        ("/q?v=1&v=2", "q-none"),        # the first occurrence counts
        ("/q?v=2&v=1", "q-exact"),
        ("/q?user=admin", "q-prefix"),
        ("/q?user=xadmin", "q-none"),
        ("/q?id=123", "q-regex"),
        ("/q?id=1234", "q-none"),        # regexes match the whole value
        ("/q?debug", "q-present"),
        ("/q?debug=", "q-present"),
        ("/q?debugger=1", "q-none"),
        ("/q?s=a%20b", "q-raw"),         # as sent: never percent-decoded...
        ("/q?s=a+b", "q-none"),          # ... nor '+' taken for a space
        ("/q?s=a%2520b", "q-none"),
        ("/q", "q-none"),
    ]
    for path, want in cases:
        assert routed(client, port, backend, path) == want, path
    # The query goes upstream untouched.
    assert backend.requests[-2]["path"] == "/q?s=a%2520b"


@pytest.mark.parametrize("client", CLIENTS)
def test_pseudo_header_matches(checked, backend, client):
    port = free_port()
    checked(config(port, backend.port))
    cases = [
        ({"host": "api.example.com"}, "auth-exact"),
        ({"host": "api.example.com:8080"}, "scheme-http"),  # the port is part of it
        ({"host": "db.internal:5432"}, "auth-regex"),
        ({"host": "x.db.internal"}, "scheme-http"),
        ({"host": "other", "method": "POST"}, "method-post"),
        ({"host": "other", "method": "PUT"}, "scheme-http"),
        # Domain routing is unchanged: this host has its own virtual host.
        ({"host": "special.example.com"}, "special"),
    ]
    for kw, want in cases:
        assert routed(client, port, backend, "/h", **kw) == want, kw
    if client == "http2":
        # :scheme is the listener's view of the connection, not the client's word.
        before = len(backend.requests)
        c = H2Client(port)
        try:
            assert c.get("/h", scheme="https").status == 200
        finally:
            c.close()
        assert len(backend.requests) == before + 1
        assert values(upstream(backend), "x-route") == ["scheme-http"]


@pytest.mark.parametrize("client", CLIENTS)
def test_scheme_over_mtls(checked, backend, certs, client):
    """An mTLS listener sees https, for HTTP/1.1 and HTTP/2 (ALPN h2) alike."""
    port = free_port()
    ctx = {"name": "mesh", "cert": certs["server_cert"], "key": certs["server_key"],
           "ca": certs["ca"], "trust_domain": TD}
    checked(config(port, backend.port, tls=ctx,
                   listener_extra={"tls": {"mode": "STRICT", "context": "mesh"}}))
    assert routed(client, port, backend, "/h", certs=certs) == "scheme-https"
    assert routed(client, port, backend, "/h", host="api.example.com",
                  certs=certs) == "auth-exact"


# ---------------------------------------------------------------- header edits

def check_request_edits(hdrs):
    """Route: remove x-remove-me, set x-set/x-forwarded-proto, add x-add;
    destination: set x-set, add x-add."""
    assert values(hdrs, "x-remove-me") == []
    assert values(hdrs, "x-set") == ["dest"]               # the destination's set wins
    assert values(hdrs, "x-forwarded-proto") == ["edited"]  # after the listener's policy
    assert values(hdrs, "x-add") == ["client", "route", "dest"]
    assert values(hdrs, "x-keep") == ["kept"]
    assert values(hdrs, "x-route") == ["edit"]


def check_response_edits(hdrs):
    assert values(hdrs, "server") == []
    assert values(hdrs, "x-resp-set") == ["route"]
    assert values(hdrs, "x-resp-add") == ["route", "dest"]


SENT = [("x-remove-me", "1"), ("x-set", "client"), ("x-add", "client"), ("x-keep", "kept")]


@pytest.mark.parametrize("client", CLIENTS)
def test_header_edits(checked, backend, client):
    """HTTP/1.1 upstream: the byte path (HTTP/1.1 clients) and streams
    (HTTP/2 clients)."""
    port = free_port()
    checked(config(port, backend.port))
    status, hdrs, body = send(client, port, "/edit", SENT)
    assert status == 200, body
    check_request_edits(upstream(backend))
    check_response_edits(hdrs)
    # The backend's own response headers stay unless edited.
    assert values(hdrs, "content-type") == ["application/json"]


@pytest.mark.parametrize("client", CLIENTS)
def test_header_edits_http2_upstream(checked, client):
    """HTTP/2 upstream: streams from HTTP/1.1 and HTTP/2 clients alike."""
    up = H2Backend(free_port())
    try:
        port = free_port()
        cfg = config(port, up.port, protocol="http2")
        checked(cfg)
        status, hdrs, body = send(client, port, "/edit", SENT)
        assert status == 200 and body == b"h2 backend", (status, body)
        check_request_edits(up.requests[-1]["fields"])
        assert values(hdrs, "x-resp-set") == ["route"]
        assert values(hdrs, "x-resp-add") == ["route", "dest"]
    finally:
        up.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_replies_made_here_carry_response_edits(checked, backend, client):
    """direct_response (its content type replaced) and the 503 of a route
    whose cluster is down."""
    port = free_port()
    checked(config(port, backend.port))
    status, hdrs, body = send(client, port, "/direct")
    assert (status, body) == (200, b"{}")
    assert values(hdrs, "content-type") == ["application/json"]
    assert values(hdrs, "x-direct") == ["yes"]
    assert values(hdrs, "content-length") == ["2"]
    status, hdrs, _ = send(client, port, "/down")
    assert status == 503
    assert values(hdrs, "x-local") == ["yes"]
    # A reply before any route matched carries nothing of a route.
    status, hdrs, _ = send(client, port, "/nowhere", host="special.example.com")
    assert status == 404
    assert values(hdrs, "x-local") == [] and values(hdrs, "x-direct") == []


def test_grpc_response_headers_not_trailers(checked):
    """gRPC: request edits reach the server; response edits go into the
    response headers (initial metadata), never the trailers."""
    app = grpcutil.EchoServer(free_port())
    port = free_port()
    cfg = {
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"name": "echo", "match": {"path": {"prefix": "/test.Echo/"}},
             "request_headers": {"set": {"x-echo-edit": "req"}},
             "response_headers": {"add": {"x-resp-edit": "yes"}},
             "weighted_clusters": [{"cluster": "app", "weight": 1,
                                    "response_headers": {"set": {"x-dest": "app"}}}]},
            {"name": "down", "match": {"path": {"prefix": "/test.Down/"}}, "cluster": "down",
             "response_headers": {"add": {"x-resp-edit": "local"}}}]}]}],
        "clusters": [
            {"name": "app", "protocol": "http2", "endpoints": [{"address": f"127.0.0.1:{app.port}"}]},
            {"name": "down", "protocol": "http2", "connect_timeout": "200ms",
             "endpoints": [{"address": f"127.0.0.1:{free_port()}"}]}],
    }
    checked(cfg)
    wait_port(port)
    client = grpcutil.Client(port)
    try:
        resp, call = client.unary.with_call(b"m", metadata=[("x-echo-plain", "hi")], timeout=10)
        assert resp == b"m"
        init = dict(call.initial_metadata())
        trail = dict(call.trailing_metadata())
        assert init["x-init-plain"] == "hi"
        assert init["x-init-edit"] == "req"   # the request edit reached the server
        assert init["x-resp-edit"] == "yes"
        assert init["x-dest"] == "app"
        assert trail["x-trail-edit"] == "req"
        assert "x-resp-edit" not in trail and "x-dest" not in trail
        assert call.code() == grpc.StatusCode.OK
    finally:
        client.close()
        app.close()
    # A reply made here is trailers-only: its one header block has the edit.
    r = grpcutil.raw_call(port, "/test.Down/Unary", b"x")
    assert r["trailers_only"], r
    hd = dict(r["headers"])
    assert hd["grpc-status"] == "14" and hd["x-resp-edit"] == "local", hd


# ---------------------------------------------------------------- limits

def limits_config(port, backend_port):
    """max_headers 6 and no headers of the listener's own, so the counts are
    the client's and the edits'."""
    return {
        "limits": {"max_headers": 6},
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt",
                       "http": {"xff": "off", "xfp": False, "request_id": "off"}}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"name": "req", "match": {"path": {"prefix": "/req"}}, "cluster": "b",
             "request_headers": {"add": {"x-e1": "1", "x-e2": "2"}}},
            {"name": "resp", "match": {"path": {"prefix": "/resp"}}, "cluster": "b",
             "response_headers": {"add": {"x-r1": "1", "x-r2": "2", "x-r3": "3"}}}]}]}],
        "clusters": [{"name": "b", "endpoints": [{"address": f"127.0.0.1:{backend_port}"}]}],
    }


@pytest.mark.parametrize("client", CLIENTS)
def test_edits_over_the_limits(checked, backend, client):
    """A head the edits take past limits.max_headers is never cut: 500 for a
    request (not forwarded), 502 for a response, with response flag HO."""
    port = free_port()
    p = checked(limits_config(port, backend.port))
    # curl sends Host, User-Agent and Accept; HTTP/2, :authority (Host upstream).
    extra = [("x-c1", "1"), ("x-c2", "2")] if client == "http1" else [
        ("x-c1", "1"), ("x-c2", "2"), ("x-c3", "3"), ("x-c4", "4")]
    status, _, _ = send(client, port, "/req")
    assert status == 200
    assert values(upstream(backend), "x-e2") == ["2"]
    before = len(backend.requests)
    status, _, body = send(client, port, "/req", extra)
    assert status == 500 and b"request header edits exceed" in body, (status, body)
    assert len(backend.requests) == before
    # The backend answers with 4 fields (server, date, content-type,
    # content-length): 7 with the edits.
    status, hdrs, body = send(client, port, "/resp")
    assert status == 502 and b"response header edits exceed" in body, (status, body)
    # The reply is the proxy's own (nothing of the backend's head), and like
    # every reply made after a route matched it carries the route's edits.
    assert values(hdrs, "server") == [] and values(hdrs, "date") == []
    assert values(hdrs, "x-r3") == ["3"]
    assert p.metric("istio_requests_total", response_flags="HO") == 2
    assert "limits.max_headers (6)" in p.read_log()


# ---------------------------------------------------------------- refusals

REFUSALS = [
    ({"request_headers": {"remove": ["Connection"]}}, ".request_headers.remove[0]: ",
     "\"Connection\" is a hop-by-hop header: it belongs to one connection and cannot be edited"),
    ({"request_headers": {"set": {"transfer-encoding": "chunked"}}},
     ".request_headers.set.transfer-encoding: ", "is a hop-by-hop header"),
    ({"response_headers": {"add": {"content-length": "0"}}},
     ".response_headers.add.content-length: ",
     "\"content-length\" frames the message: the proxy sets it and it cannot be edited"),
    ({"request_headers": {"set": {"host": "x"}}}, ".request_headers.set.host: ",
     "\"host\" cannot be edited; use rewrite.host"),
    ({"request_headers": {"set": {":path": "/x"}}}, ".request_headers.set.:path: ",
     "pseudo-header \":path\" cannot be edited"),
    ({"request_headers": {"remove": ["trellis-orig-proto"]}}, ".request_headers.remove[0]: ",
     "trellis-* headers are internal to the mesh and cannot be edited"),
    ({"request_headers": {"set": {"x-a": "a\r\nx-b: smuggled"}}}, ".request_headers.set.x-a: ",
     "string contains control character 0x0d"),
    ({"response_headers": {"set": {"x-a": "v" * 4097}}}, ".response_headers.set.x-a: ",
     "string is 4097 bytes long; the limit is 4096"),
    ({"request_headers": {"add": {f"x-{i}": "v" for i in range(65)}}},
     ".request_headers.add: ", "has 65 entries; the limit is 64"),
    ({"match": {"query_params": [{"name": "q", "exact": "a b"}]}},
     ".match.query_params[0].exact: ",
     "query parameters are matched as sent, not percent-decoded: write it percent-encoded (%20)"),
    ({"match": {"headers": [{"name": ":path", "exact": "/"}]}}, ".match.headers[0].name: ",
     "the ones that can are :authority, :scheme and :method"),
]


@pytest.mark.parametrize("route,where,message", REFUSALS)
def test_refused_at_load(workdir, route, where, message):
    cfg = {
        "listeners": [{"name": "in", "address": "127.0.0.1:0", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{"domains": ["*"], "routes": [
            {"cluster": "b", **route}]}]}],
        "clusters": [{"name": "b", "endpoints": [{"address": "127.0.0.1:1"}]}],
    }
    path = os.path.join(workdir, "bad.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", path], capture_output=True,
                       text=True, timeout=10)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    prefix = f"{path}:"
    assert out.startswith(prefix), out
    assert f": route_tables[0].virtual_hosts[0].routes[0]{where}" in out, out
    assert message in out, out
