"""gRPC through trellis, with a real grpcio client and server (bytes-only handlers).

Topologies (every test runs on both unless noted):
  single: grpc client (h2c) -> trellis listener -> cluster {protocol: http2} -> grpcio server
  hop:    grpc client (h2c) -> A (outbound, plaintext) -> cluster {protocol: http2, tls} ->
          B (inbound, tls STRICT) -> cluster {protocol: original} -> grpcio server
The "inner" proxy (the only one in `single`, B in `hop`) holds the special routes:
a route timeout selected by header x-short, a DENY rule, a cluster whose endpoint is down,
and no route for paths outside /test.Echo/ and /test.Down/.
"""
import hashlib
import os
import queue
import subprocess
import sys
import time

import grpc
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import grpcutil  # noqa: E402
from conftest import free_port, wait_port  # noqa: E402
from grpcutil import payload  # noqa: E402

TD = "cluster.local"
CLIENT_ID = f"spiffe://{TD}/ns/default/sa/client"
SERVER_ID = f"spiffe://{TD}/ns/default/sa/server"
SVC = "server.default.svc.cluster.local"
ROUTE_TIMEOUT = "300ms"


# ---------------------------------------------------------------- topology

def inner_routes():
    return [
        {"name": "short", "match": {"path": {"prefix": "/test.Echo/"},
                                    "headers": [{"name": "x-short", "present": True}]},
         "cluster": "local", "timeout": ROUTE_TIMEOUT},
        {"name": "echo", "match": {"path": {"prefix": "/test.Echo/"}}, "cluster": "local"},
        {"name": "down", "match": {"path": {"prefix": "/test.Down/"}}, "cluster": "down"},
    ]


def inner_clusters(app_port, protocol):
    return [
        {"name": "local", "service": SVC, "workload": "server", "namespace": "default",
         "protocol": protocol, "endpoints": [{"address": f"127.0.0.1:{app_port}"}]},
        # Nothing listens there: free_port() picks outside the ephemeral range.
        {"name": "down", "protocol": protocol, "connect_timeout": "500ms",
         "endpoints": [{"address": f"127.0.0.1:{free_port()}"}]},
    ]


DENY = {"rules": [{"action": "DENY", "paths": ["/test.Echo/Denied"]}]}


def single_config(port, app_port):
    return {
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt",
                       "authorization": DENY}],
        "route_tables": [{"name": "rt", "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": inner_routes()}]}],
        "clusters": inner_clusters(app_port, "http2"),
    }


def tls_ctx(cert, key, ca):
    return {"name": "mesh", "cert": cert, "key": key, "ca": ca, "trust_domain": TD}


def node(sa, service=None):
    n = {"id": f"{sa}-0", "workload": sa, "namespace": "default",
         "principal": f"spiffe://{TD}/ns/default/sa/{sa}"}
    if service:
        n["service"] = service
    return n


def b_config(port, app_port, certs):
    return {
        "node": node("server", SVC),
        "tls": [tls_ctx(certs["server_cert"], certs["server_key"], certs["ca"])],
        "listeners": [{"name": "inbound", "address": f"127.0.0.1:{port}",
                       "direction": "inbound", "route_table": "inbound",
                       "tls": {"mode": "STRICT", "context": "mesh"},
                       "authorization": DENY}],
        "route_tables": [{"name": "inbound", "virtual_hosts": [
            {"name": "local", "domains": ["*"], "routes": inner_routes()}]}],
        "clusters": inner_clusters(app_port, "original"),
    }


def a_config(port, b_port, certs):
    return {
        "node": node("client"),
        "tls": [tls_ctx(certs["client_cert"], certs["client_key"], certs["ca"])],
        "listeners": [{"name": "outbound", "address": f"127.0.0.1:{port}",
                       "direction": "outbound", "route_table": "outbound"}],
        "route_tables": [{"name": "outbound", "virtual_hosts": [
            {"name": "server", "domains": ["*"],
             "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": "server"}]}]}],
        "clusters": [{"name": "server", "service": SVC, "workload": "server",
                      "namespace": "default", "protocol": "http2",
                      "tls": {"context": "mesh", "server_ids": [SERVER_ID]},
                      "endpoints": [{"address": f"127.0.0.1:{b_port}"}]}],
    }


class Topo:
    def __init__(self, kind, entry, inner, port, app, client):
        self.kind, self.entry, self.inner, self.port = kind, entry, inner, port
        self.app, self.client = app, client
        self.all = [entry] if entry is inner else [entry, inner]


def warm_up(port):
    """A headers-only HTTP/2 GET, so the proxies' upstream HTTP/2 connections
    exist before the test's first gRPC call (see test_first_call_on_new_upstream_connection,
    which covers that first call on its own). Counted as request_protocol="http/2"."""
    r = subprocess.run(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                        "--http2-prior-knowledge", f"http://127.0.0.1:{port}/test.Echo/Warmup"],
                       capture_output=True, timeout=10)
    assert r.stdout == b"200", r


def build_topo(kind, proxies, certs, warm=True):
    app = grpcutil.EchoServer(free_port())
    if kind == "single":
        port = free_port()
        p = proxies(single_config(port, app.port), "single")
        entry = inner = p
    else:
        a_port, b_port = free_port(), free_port()
        inner = proxies(b_config(b_port, app.port, certs), "B")
        entry = proxies(a_config(a_port, b_port, certs), "A")
        port = a_port
    wait_port(port)
    if warm:
        warm_up(port)
    return Topo(kind, entry, inner, port, app, grpcutil.Client(port))


def close_topo(t):
    t.client.close()
    t.app.close()
    for p in t.all:
        p.stop()
        log = p.read_log()
        assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log \
            and "LeakSanitizer" not in log, log[-6000:]


@pytest.fixture(params=["single", "hop"])
def topo(request, proxies, certs):
    t = build_topo(request.param, proxies, certs)
    yield t
    close_topo(t)


def wait_metric(proxy, name, want, timeout=3.0, **labels):
    """Counters are recorded when a stream ends, possibly a moment after the
    client has its answer: poll until `want` or timeout, return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = proxy.metric(name, **labels)
        if v == want or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def code_of(excinfo):
    return excinfo.value.code()


# ---------------------------------------------------------------- 0. fresh upstream connection

@pytest.mark.parametrize("kind", ["single", "hop"])
def test_first_call_on_new_upstream_connection(kind, proxies, certs):
    """The very first gRPC call, which makes the proxy open its upstream HTTP/2
    connection (no warm-up), must complete like any other."""
    t = build_topo(kind, proxies, certs, warm=False)
    try:
        t0 = time.monotonic()
        assert t.client.unary(b"first", timeout=3) == b"first"
        assert time.monotonic() - t0 < 1.0
        assert t.app.calls == {"Unary": 1}
    finally:
        close_topo(t)


# ---------------------------------------------------------------- 1. the four call shapes

def test_unary(topo):
    for size in (0, 1, 100, 70000):
        msg = payload(size, size)
        assert topo.client.unary(msg, timeout=10) == msg
    assert topo.app.calls["Unary"] == 4


def test_client_streaming(topo):
    msgs = [payload(i, (i * 997) % 20000) for i in range(50)]
    resp, call = topo.client.client_stream.with_call(iter(msgs), timeout=10)
    assert resp == b"".join(msgs)
    assert call.code() == grpc.StatusCode.OK
    assert dict(call.trailing_metadata())["x-count"] == "50"


def test_server_streaming(topo):
    got = list(topo.client.server_stream(b"100:1000", timeout=10))
    assert len(got) == 100
    for i, m in enumerate(got):
        assert m == payload(i, 1000), i


def test_bidi_interleaved(topo):
    """The client sends message i+1 only after it has received reply i, so the
    proxy must forward each DATA frame promptly both ways (no buffering until
    END_STREAM)."""
    q = queue.Queue()

    def requests():
        while True:
            m = q.get()
            if m is None:
                return
            yield m

    sizes = [1, 0, 5, 16384, 16385, 100000, 3, 65535, 7, 200000]
    replies = topo.client.bidi(requests(), timeout=20)
    for i, size in enumerate(sizes):
        m = payload(i, size)
        q.put(m)
        assert next(replies) == m, i
    q.put(None)
    with pytest.raises(StopIteration):
        next(replies)
    assert replies.code() == grpc.StatusCode.OK


# ---------------------------------------------------------------- 2. large messages

def test_large_messages(topo):
    size = 16 * 1024 * 1024
    req = b"%d:" % size
    req += payload(1, size - len(req))
    assert len(req) == size
    t0 = time.monotonic()
    resp = topo.client.big(req, timeout=30)
    assert len(resp) == size
    assert resp == payload(0, size)
    assert topo.app.big_request_len == size
    assert topo.app.big_request_digest == hashlib.sha256(req).hexdigest()
    assert time.monotonic() - t0 < 20


# ---------------------------------------------------------------- 3. many concurrent streams

def test_concurrent_unary(topo):
    n = 200
    msgs = [payload(i, 100 + 37 * i) for i in range(n)]
    futs = [topo.client.unary.future(m, timeout=20) for m in msgs]
    results = [f.result() for f in futs]
    assert [f.code() for f in futs] == [grpc.StatusCode.OK] * n
    assert results == msgs
    assert topo.app.calls["Unary"] == n
    for p in topo.all:
        assert wait_metric(p, "istio_requests_total", n, request_protocol="grpc",
                           grpc_response_status="0") == n, p.metrics()


# ---------------------------------------------------------------- 4. deadlines

def test_client_deadline(topo):
    """Client timeout 300 ms, server sleeps 3 s: DEADLINE_EXCEEDED at the client
    in bounded time, and the cancellation reaches the server handler."""
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        topo.client.sleep(b"3000", timeout=0.3)
    elapsed = time.monotonic() - t0
    assert code_of(ei) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 <= elapsed < 1.5, elapsed
    deadline = time.monotonic() + 2.0
    while not topo.app.sleep_done and time.monotonic() < deadline:
        time.sleep(0.02)
    assert topo.app.sleep_done == [False], "server handler never saw the cancellation"


def test_route_timeout(topo):
    """Route timeout 300 ms (on the inner proxy) < server sleep 3 s: the proxy
    answers trailers-only grpc-status 4 and counts response_flags UT."""
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        topo.client.sleep(b"3000", timeout=10, metadata=[("x-short", "1")])
    elapsed = time.monotonic() - t0
    assert code_of(ei) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 <= elapsed < 1.5, elapsed
    assert wait_metric(topo.inner, "istio_requests_total", 1, request_protocol="grpc",
                       response_flags="UT", grpc_response_status="4") == 1, topo.inner.metrics()
    # The upstream stream was cancelled too.
    deadline = time.monotonic() + 2.0
    while not topo.app.sleep_done and time.monotonic() < deadline:
        time.sleep(0.02)
    assert topo.app.sleep_done == [False]


# ---------------------------------------------------------------- 5. cancellation

def test_cancel_server_stream(topo):
    call = topo.client.tick(b"", timeout=30)
    for i in range(5):
        assert next(call) == payload(i, 64)
    t0 = time.monotonic()
    assert call.cancel()
    assert topo.app.tick_cancelled.wait(2.0), "server never observed the cancellation"
    assert time.monotonic() - t0 < 2.0
    assert call.code() == grpc.StatusCode.CANCELLED
    sent = topo.app.tick_sent
    assert sent < 400
    time.sleep(0.2)
    assert topo.app.tick_sent == sent  # the handler stopped


# ---------------------------------------------------------------- 6. errors and trailers-only

def test_server_abort_not_found(topo):
    with pytest.raises(grpc.RpcError) as ei:
        topo.client.abort(b"x", timeout=10)
    assert code_of(ei) == grpc.StatusCode.NOT_FOUND
    assert ei.value.details() == "nope"


def test_no_route_is_unimplemented(topo):
    with pytest.raises(grpc.RpcError) as ei:
        topo.client.method("/other.Svc/Method")(b"x", timeout=10)
    assert code_of(ei) == grpc.StatusCode.UNIMPLEMENTED
    assert topo.app.calls == {}


def test_deny_is_permission_denied(topo):
    with pytest.raises(grpc.RpcError) as ei:
        topo.client.method("/test.Echo/Denied")(b"x", timeout=10)
    assert code_of(ei) == grpc.StatusCode.PERMISSION_DENIED
    assert topo.app.calls == {}
    assert wait_metric(topo.inner, "istio_requests_total", 1, request_protocol="grpc",
                       grpc_response_status="7") == 1, topo.inner.metrics()


def test_backend_down_is_unavailable(topo):
    with pytest.raises(grpc.RpcError) as ei:
        topo.client.method("/test.Down/Method")(b"x", timeout=10)
    assert code_of(ei) == grpc.StatusCode.UNAVAILABLE
    assert wait_metric(topo.inner, "istio_requests_total", 1, request_protocol="grpc",
                       grpc_response_status="14") == 1, topo.inner.metrics()


# What grpcio hides: the exact framing, seen with a raw h2c client.
LOCAL_REPLIES = {
    "no_route": ("/other.Svc/Method", (), "12"),
    "deny": ("/test.Echo/Denied", (), "7"),
    "down": ("/test.Down/Method", (), "14"),
    "route_timeout": ("/test.Echo/Sleep", (("x-short", "1"),), "4"),
}


@pytest.mark.parametrize("case", [
    "no_route",
    "deny", "down", "route_timeout"])
def test_local_reply_is_trailers_only(topo, case):
    path, extra, status = LOCAL_REPLIES[case]
    r = grpcutil.raw_call(topo.port, path, b"3000", extra=extra)
    assert r["reset"] is None, r
    assert r["trailers_only"], r
    h = dict(r["headers"])
    assert h[":status"] == "200", r
    assert h["content-type"].startswith("application/grpc"), r
    assert h["grpc-status"] == status, r
    assert h.get("grpc-message"), r
    assert r["data"] == b"" and r["trailers"] is None, r
    assert r["elapsed"] < (1.5 if case == "route_timeout" else 1.0), r


def test_raw_ok_and_abort_framing(topo):
    r = grpcutil.raw_call(topo.port, "/test.Echo/Unary", b"abc")
    assert dict(r["headers"])[":status"] == "200", r
    assert not r["trailers_only"], r
    assert r["data"] == grpcutil.grpc_frame(b"abc"), r
    assert dict(r["trailers"])["grpc-status"] == "0", r
    r = grpcutil.raw_call(topo.port, "/test.Echo/Abort", b"x")
    # grpcio answers an abort before any message trailers-only; the proxy keeps it so.
    assert r["trailers_only"], r
    h = dict(r["headers"])
    assert (h[":status"], h["grpc-status"], h["grpc-message"]) == ("200", "5", "nope"), r
    assert r["data"] == b"", r


def test_hop_peer_down_is_unavailable(proxies, certs):
    """Hop only: B (A's upstream) is gone -> A answers UNAVAILABLE (14)."""
    t = build_topo("hop", proxies, certs)
    try:
        t.inner.stop()
        with pytest.raises(grpc.RpcError) as ei:
            t.client.unary(b"x", timeout=5)
        assert code_of(ei) == grpc.StatusCode.UNAVAILABLE
        assert t.app.calls == {}
        assert wait_metric(t.entry, "istio_requests_total", 1, request_protocol="grpc",
                           grpc_response_status="14") == 1, t.entry.metrics()
    finally:
        close_topo(t)


# ---------------------------------------------------------------- 7. metadata

def test_metadata_both_ways(topo):
    binval = bytes([0, 1, 2, 0xFF, 0xFE, 0x80, 0x0A, 0x0D])
    md = [("x-echo-plain", "hello world"), ("x-echo-data-bin", binval)]
    resp, call = topo.client.unary.with_call(b"m", metadata=md, timeout=10)
    assert resp == b"m"
    init = dict(call.initial_metadata())
    trail = dict(call.trailing_metadata())
    assert init["x-init-plain"] == "hello world"
    assert init["x-init-data-bin"] == binval
    assert trail["x-trail-plain"] == "hello world"
    assert trail["x-trail-data-bin"] == binval
    assert call.code() == grpc.StatusCode.OK


# ---------------------------------------------------------------- 8. metrics

def test_metrics(topo):
    ok = 0
    for i in range(5):
        assert topo.client.unary(payload(i, 10), timeout=10) == payload(i, 10)
        ok += 1
    assert topo.client.client_stream(iter([b"a", b"b"]), timeout=10) == b"ab"
    ok += 1
    assert len(list(topo.client.server_stream(b"3:10", timeout=10))) == 3
    ok += 1
    assert list(topo.client.bidi(iter([b"x", b"y"]), timeout=10)) == [b"x", b"y"]
    ok += 1
    with pytest.raises(grpc.RpcError) as ei:
        topo.client.abort(b"x", timeout=10)
    assert code_of(ei) == grpc.StatusCode.NOT_FOUND

    for p in topo.all:
        assert wait_metric(p, "istio_requests_total", ok, request_protocol="grpc",
                           grpc_response_status="0") == ok, p.metrics()
        assert wait_metric(p, "istio_requests_total", 1, request_protocol="grpc",
                           grpc_response_status="5") == 1, p.metrics()
        # Every request was gRPC: nothing counted as plain HTTP or HTTP/2.
        assert p.metric("istio_requests_total", request_protocol="grpc") == ok + 1, p.metrics()
        assert p.metric("istio_requests_total", request_protocol="grpc",
                        response_code="200") == ok + 1, p.metrics()

    if topo.kind == "hop":
        a, b = topo.entry, topo.inner
        assert a.metric("istio_requests_total", reporter="source", request_protocol="grpc") \
            == ok + 1, a.metrics()
        assert a.metric("istio_requests_total", reporter="destination") == 0, a.metrics()
        assert a.metric("istio_requests_total", reporter="source", request_protocol="grpc",
                        connection_security_policy="unknown") == ok + 1, a.metrics()
        assert b.metric("istio_requests_total", reporter="destination", request_protocol="grpc",
                        connection_security_policy="mutual_tls",
                        source_principal=CLIENT_ID) == ok + 1, b.metrics()
        assert b.metric("istio_requests_total", reporter="source") == 0, b.metrics()
