"""Retry policies (routes[].retries, docs/config.md "Retries"): real clients (curl,
python h2, grpcio) through a real proxy to backends that fail the first tries of a
path (a 503, a reset connection, no answer at all) and then answer.

What is checked on the wire and in the backends' own counts: a failed try goes
again and the client gets the later answer; a POST that reached a failing backend
is not sent again (the backend counts it once) unless the route opts in; the body
a retry sends is the one the client sent; per_try_timeout ends a try and the
route timeout ends them all; the budget refuses retries under load (URX); the
default policy retries no status. HTTP/1.1 and HTTP/2 clients, HTTP/1.1 and
HTTP/2 upstreams, gRPC.
"""
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import grpcutil  # noqa: E402
from conftest import ThreadedTCPServer, free_port, sanitizer_checked  # noqa: E402
from h2util import H2Client  # noqa: E402

RETRIED = "trellis_upstream_requests_retried_total"
EXHAUSTED = "trellis_upstream_retry_budget_exhausted_total"


class Flaky(ThreadedTCPServer):
    """HTTP/1.1 backend. Per path (without the query), the first `fails`
    requests fail as `mode` says, the later ones get 200 "NAME N" (N: the
    request's number for that path):
      503 (or any status): that status, with a body
      "reset": the request is read, then the connection is reset
      "hang": the request is read, then nothing until the client closes
    Records every request: method, path, headers, body length and sha256.
    delay: seconds to wait before answering (or failing). keepalive=False:
    every answer closes its connection, so that each request goes on a new
    one (a request sent on a pooled connection that the server closes
    unanswered is re-sent once whatever its method: the keep-alive race)."""

    def __init__(self, name, mode=503, fails=1, delay=0.0, keepalive=True):
        self.name = name
        self.mode = mode
        self.fails = fails
        self.delay = delay
        self.keepalive = keepalive
        self.lock = threading.Lock()
        self.requests = []
        self.seen = {}
        super().__init__(backlog=128)

    def count(self, path=None, method=None):
        with self.lock:
            return sum(1 for r in self.requests
                       if (path is None or r["path"] == path) and
                       (method is None or r["method"] == method))

    def serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line = f.readline(65537)
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    h = f.readline(65537)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, v = h.decode("latin-1").split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                body = b""
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int(f.readline().split(b";")[0], 16)
                        if size == 0:
                            while f.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        body += f.read(size)
                        f.readline()
                elif "content-length" in headers:
                    body = f.read(int(headers["content-length"]))
                path = target.split("?")[0]
                with self.lock:
                    n = self.seen.get(path, 0) + 1
                    self.seen[path] = n
                    self.requests.append({"method": method, "path": path, "headers": headers,
                                          "len": len(body),
                                          "sha": hashlib.sha256(body).hexdigest()})
                if self.delay:
                    time.sleep(self.delay)
                fail = n <= self.fails
                if fail and self.mode == "reset":
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if fail and self.mode == "hang":
                    c.settimeout(10)
                    while c.recv(4096):
                        pass
                    return
                status = self.mode if fail else 200
                out = f"{self.name} {n}".encode()
                close = "" if self.keepalive else "Connection: close\r\n"
                c.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: {len(out)}\r\n{close}"
                          f"x-backend: {self.name}\r\n\r\n".encode() + out)
                if not self.keepalive:
                    return
        except (OSError, ValueError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass


class FlakyH2(ThreadedTCPServer):
    """h2c (prior knowledge) backend: per path, the first `fails` requests
    get `mode` (503: that status; "reset": RST_STREAM INTERNAL_ERROR before
    any head), later ones 200 "NAME N". Records method, path, body sha256."""

    def __init__(self, name, mode=503, fails=1):
        self.name = name
        self.mode = mode
        self.fails = fails
        self.lock = threading.Lock()
        self.requests = []
        self.seen = {}
        super().__init__()

    def count(self, path=None):
        with self.lock:
            return sum(1 for r in self.requests if path is None or r["path"] == path)

    def serve(self, c):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        pending = {}
        try:
            c.sendall(conn.data_to_send())
            while True:
                data = c.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        pending[ev.stream_id] = (dict(ev.headers), bytearray())
                    elif isinstance(ev, h2.events.DataReceived):
                        pending[ev.stream_id][1].extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        hd, body = pending.pop(ev.stream_id)
                        path = hd[":path"].split("?")[0]
                        with self.lock:
                            n = self.seen.get(path, 0) + 1
                            self.seen[path] = n
                            self.requests.append({"method": hd[":method"], "path": path,
                                                  "len": len(body),
                                                  "sha": hashlib.sha256(body).hexdigest()})
                        fail = n <= self.fails
                        if fail and self.mode == "reset":
                            conn.reset_stream(ev.stream_id, 2)
                            continue
                        out = f"{self.name} {n}".encode()
                        conn.send_headers(ev.stream_id, [(":status", str(self.mode if fail else 200)),
                                                         ("content-length", str(len(out)))])
                        conn.send_data(ev.stream_id, out, end_stream=True)
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


class FlakyGrpc:
    """grpcio server: /test.Flaky/Call aborts with `code` the first `fails`
    calls (a trailers-only response), then echoes."""

    def __init__(self, fails=1, code=grpc.StatusCode.UNAVAILABLE):
        self.port = free_port()
        self.fails = fails
        self.code = code
        self.calls = 0
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=grpcutil.OPTIONS)
        h = grpc.method_handlers_generic_handler("test.Flaky", {
            "Call": grpc.unary_unary_rpc_method_handler(self.call)})
        self.server.add_generic_rpc_handlers((h,))
        assert self.server.add_insecure_port(f"127.0.0.1:{self.port}") == self.port
        self.server.start()

    def call(self, req, context):
        with self.lock:
            self.calls += 1
            n = self.calls
        if n <= self.fails:
            context.abort(self.code, "try again")
        return req

    def close(self):
        self.server.stop(0)


@pytest.fixture
def servers():
    started = []

    def make(cls, *a, **kw):
        s = cls(*a, **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        s.close()


def addr(port):
    return f"127.0.0.1:{port}"


@pytest.fixture
def checked(proxies):
    """Proxies whose logs must be free of sanitizer reports (with an ASan build)."""
    yield from sanitizer_checked(proxies)


def config(port, ports, retries=None, protocol=None, timeout=None, log=None, lb="round_robin"):
    """One listener; every path to cluster "c" (endpoints on ports) through
    one route with these retries."""
    route = {"name": "r", "cluster": "c"}
    if retries is not None:
        route["retries"] = retries
    if timeout:
        route["timeout"] = timeout
    cluster = {"name": "c", "lb": lb, "endpoints": [{"address": addr(p)} for p in ports]}
    if protocol:
        cluster["protocol"] = protocol
    cfg = {
        "listeners": [{"name": "in", "address": addr(port), "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{"name": "all", "domains": ["*"],
                                                           "routes": [route]}]}],
        "clusters": [cluster],
    }
    if log:
        cfg["access_log"] = {"enabled": True, "path": log}
    return cfg


def curl(port, path, method="GET", data=None, h2=False, timeout=20):
    """(status, body, seconds) of one request."""
    args = ["curl", "-sS", "--max-time", str(timeout), "-o", "-", "-w", "\n%{http_code}",
            "-X", method]
    if h2:
        args.append("--http2-prior-knowledge")
    if data is not None:
        args += ["--data-binary", f"@{data}", "-H", "content-type: application/octet-stream"]
    args.append(f"http://127.0.0.1:{port}{path}")
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, timeout=timeout + 10)
    elapsed = time.monotonic() - t0
    out, _, code = r.stdout.rpartition(b"\n")
    return int(code), out.decode(errors="replace"), elapsed


def at_once(port, prefix, n):
    """n GETs of prefix0..prefixN-1 sent at the same time: their statuses."""
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(curl(port, f"{prefix}{i}")[0]))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def read_log(path, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = [json.loads(x) for x in f.read().splitlines() if x]
            if len(lines) >= n:
                break
        time.sleep(0.02)
    return lines


def body_file(workdir, size, name="body.bin"):
    data = os.urandom(size)
    path = os.path.join(workdir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path, (len(data), hashlib.sha256(data).hexdigest())


# ---------------------------------------------------------------- status and reset


@pytest.mark.parametrize("h2c", [False, True], ids=["h1-client", "h2-client"])
def test_503_then_ok_is_retried(checked, servers, h2c):
    b = servers(Flaky, "b", 503, fails=1)
    port = free_port()
    p = checked(config(port, [b.port], {"attempts": 2, "retry_on": ["5xx"]}))
    status, body, _ = curl(port, "/a", h2=h2c)
    assert (status, body) == (200, "b 2")
    assert b.count("/a") == 2
    assert p.metric(RETRIED, reason="status") == 1
    assert p.metric(RETRIED) == 1


def test_retry_prefers_another_endpoint(checked, servers):
    bad = servers(Flaky, "bad", 503, fails=1000)
    good = servers(Flaky, "good", 503, fails=0)
    port = free_port()
    # Round robin's first pick is the first endpoint: bad. The retry avoids it.
    p = checked(config(port, [bad.port, good.port], {"attempts": 1, "retry_on": ["gateway-error"]}))
    for i in range(4):
        status, body, _ = curl(port, f"/x{i}")
        assert status == 200 and body.startswith("good"), (status, body)
    # Each request whose first try went to bad had one retry, to good.
    assert bad.count() == p.metric(RETRIED, reason="status") >= 1
    assert good.count() == 4


@pytest.mark.parametrize("h2c", [False, True], ids=["h1-client", "h2-client"])
def test_reset_retried_for_get_not_for_post(checked, servers, workdir, h2c):
    b = servers(Flaky, "b", "reset", fails=1, keepalive=False)
    port = free_port()
    p = checked(config(port, [b.port], {"attempts": 2, "retry_on": ["reset"]}))
    status, body, _ = curl(port, "/get", h2=h2c)
    assert (status, body) == (200, "b 2")
    assert b.count("/get") == 2
    assert p.metric(RETRIED, reason="reset") == 1
    # A POST reached the backend before the reset: it may have been
    # processed, so it does not go again.
    path, _ = body_file(workdir, 100)
    status, body, _ = curl(port, "/post", method="POST", data=path, h2=h2c)
    assert status == 503
    assert b.count("/post") == 1
    assert p.metric(RETRIED) == 1


@pytest.mark.parametrize("h2c", [False, True], ids=["h1-client", "h2-client"])
def test_post_503_counted_once_unless_opted_in(checked, servers, workdir, h2c):
    b = servers(Flaky, "b", 503, fails=1)
    port = free_port()
    log = os.path.join(workdir, "access.log")
    p = checked(config(port, [b.port], {"attempts": 2, "retry_on": ["5xx"]}, log=log))
    path, want = body_file(workdir, 3000)
    status, _, _ = curl(port, "/once", method="POST", data=path, h2=h2c)
    assert status == 503
    assert b.count("/once") == 1
    assert p.metric(RETRIED) == 0
    # Not a retry condition for this request: no URX.
    assert read_log(log, 1)[0]["response_flags"] == "-"
    # PATCH and unknown methods are not idempotent either; PUT is.
    assert curl(port, "/patch", method="PATCH", data=path, h2=h2c)[0] == 503
    assert b.count("/patch") == 1
    assert curl(port, "/put", method="PUT", data=path, h2=h2c)[0] == 200
    assert b.count("/put") == 2
    # The route opts in: the POST goes again, with the same body.
    p.write_config(config(port, [b.port], {"attempts": 2, "retry_on": ["5xx"],
                                           "retry_non_idempotent": True}, log=log))
    p.signal(1)
    deadline = time.monotonic() + 5
    while p.metric("trellis_config_reloads_total", result="ok") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, body, _ = curl(port, "/twice", method="POST", data=path, h2=h2c)
    assert (status, body) == (200, "b 2")
    reqs = [r for r in b.requests if r["path"] == "/twice"]
    assert [(r["len"], r["sha"]) for r in reqs] == [want, want]


# ---------------------------------------------------------------- bodies


@pytest.mark.parametrize("h2c", [False, True], ids=["h1-client", "h2-client"])
def test_body_held_up_to_the_bound(checked, servers, workdir, h2c):
    b = servers(Flaky, "b", 503, fails=1)
    port = free_port()
    p = checked(config(port, [b.port], {"attempts": 1, "retry_on": ["5xx"],
                                        "retry_non_idempotent": True,
                                        "max_body_for_retry": 40000}))
    small, want = body_file(workdir, 39000, "small.bin")
    status, body, _ = curl(port, "/small", method="POST", data=small, h2=h2c)
    assert (status, body) == (200, "b 2")
    assert [(r["len"], r["sha"]) for r in b.requests if r["path"] == "/small"] == [want, want]
    # Over the bound: not held once it started to go, so no retry.
    big, _ = body_file(workdir, 300 * 1024, "big.bin")
    status, _, _ = curl(port, "/big", method="POST", data=big, h2=h2c)
    assert status == 503
    assert b.count("/big") == 1
    assert p.metric(RETRIED) == 1


# ---------------------------------------------------------------- timeouts


@pytest.mark.parametrize("h2c", [False, True], ids=["h1-client", "h2-client"])
def test_per_try_timeout_then_ok(checked, servers, workdir, h2c):
    b = servers(Flaky, "b", "hang", fails=1)
    port = free_port()
    log = os.path.join(workdir, "access.log")
    p = checked(config(port, [b.port], {"attempts": 2, "retry_on": ["reset"],
                                        "per_try_timeout": "300ms"}, timeout="5s", log=log))
    status, body, elapsed = curl(port, "/slow", h2=h2c)
    assert (status, body) == (200, "b 2")
    assert 0.25 < elapsed < 2.0, elapsed
    assert p.metric(RETRIED, reason="per_try_timeout") == 1
    # Every try hangs: the last one's timeout is the answer, 504 UT, and the
    # attempts ran out (URX).
    b.fails = 1000
    status, _, elapsed = curl(port, "/never", h2=h2c)
    assert status == 504
    assert 0.85 < elapsed < 3.0, elapsed
    assert b.count("/never") == 3
    assert read_log(log, 2)[1]["response_flags"] == "UT,URX"


@pytest.mark.parametrize("h2c", [False, True], ids=["h1-client", "h2-client"])
def test_route_timeout_bounds_all_tries(checked, servers, workdir, h2c):
    b = servers(Flaky, "b", "hang", fails=1000)
    port = free_port()
    log = os.path.join(workdir, "access.log")
    checked(config(port, [b.port], {"attempts": 5, "retry_on": ["reset"],
                                    "per_try_timeout": "200ms"}, timeout="500ms", log=log))
    status, _, elapsed = curl(port, "/t", h2=h2c)
    assert status == 504
    assert 0.45 < elapsed < 1.5, elapsed
    assert 2 <= b.count("/t") <= 3
    assert read_log(log, 1)[0]["response_flags"] == "UT"


# ---------------------------------------------------------------- budget


def test_budget_refuses_retries_under_load(checked, servers, workdir):
    # Every try fails after 300 ms: 16 requests in flight at once, a budget
    # of one retry in flight (percent 0, min_concurrency 1).
    b = servers(Flaky, "b", 503, fails=100000, delay=0.3)
    port = free_port()
    log = os.path.join(workdir, "access.log")
    p = checked(config(port, [b.port], {"attempts": 3, "retry_on": ["5xx"],
                                        "budget": {"percent": 0, "min_concurrency": 1}},
                       log=log))
    assert at_once(port, "/l", 16) == [503] * 16
    exhausted = p.metric(EXHAUSTED)
    retried = p.metric(RETRIED)
    assert exhausted >= 10, (exhausted, retried)
    # One retry at a time, each one 300 ms: a few in the test's time.
    assert 1 <= retried <= 8, retried
    assert b.count() == 16 + retried
    flags = [e["response_flags"] for e in read_log(log, 16)]
    assert flags == ["URX"] * 16, flags


@pytest.mark.parametrize("cap", ["none", "max_retries", "cluster_budget"])
def test_cluster_caps_retries_under_load(checked, servers, cap):
    """A cluster's circuit_breakers.max_retries (Istio's http.maxRetries)
    caps retries in flight whatever the route's budget says, and a cluster's
    retry_budget (Istio's DestinationRule retryBudget) replaces the route's.
    The route's own budget here admits every retry: without a cluster limit
    all 16 requests are retried twice."""
    b = servers(Flaky, "b", 503, fails=100000, delay=0.3)
    port = free_port()
    cfg = config(port, [b.port], {"attempts": 2, "retry_on": ["5xx"],
                                  "budget": {"percent": 100, "min_concurrency": 100}})
    if cap == "max_retries":
        cfg["clusters"][0]["circuit_breakers"] = {"max_retries": 1}
    elif cap == "cluster_budget":
        cfg["clusters"][0]["retry_budget"] = {"percent": 0, "min_concurrency": 1}
    p = checked(cfg)
    assert at_once(port, "/c", 16) == [503] * 16
    retried, exhausted = p.metric(RETRIED), p.metric(EXHAUSTED)
    assert b.count() == 16 + retried
    if cap == "none":
        assert (retried, exhausted) == (32, 0)
    else:
        # one retry in flight per worker at a time, each one 300 ms
        assert exhausted >= 10, (exhausted, retried)
        assert 1 <= retried <= 8, retried


def test_budget_allows_retries_at_low_load(checked, servers):
    b = servers(Flaky, "b", 503, fails=1)
    port = free_port()
    p = checked(config(port, [b.port], {"attempts": 3, "retry_on": ["5xx"]}))
    for i in range(10):
        assert curl(port, f"/ok{i}")[0] == 200
    assert p.metric(RETRIED) == 10
    assert p.metric(EXHAUSTED) == 0
    # The running policy shows in /config_dump.
    status, body = p.admin("/config_dump")
    assert status == 200

    def policies(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "retries":
                    yield v
                yield from policies(v)
        elif isinstance(node, list):
            for v in node:
                yield from policies(v)

    assert [r["attempts"] for r in policies(json.loads(body))] == [3]


# ---------------------------------------------------------------- defaults


def test_default_policy_retries_no_status(checked, servers):
    """A route without `retries`: Istio's default policy, which since 1.24
    names no status code: a 503 is the answer."""
    b = servers(Flaky, "b", 503, fails=1)
    port = free_port()
    p = checked(config(port, [b.port]))
    assert curl(port, "/d")[0] == 503
    assert b.count("/d") == 1
    assert p.metric(RETRIED) == 0


def test_attempts_zero_turns_connect_retries_off(checked, servers, workdir):
    live = servers(Flaky, "live", 503, fails=0)
    port = free_port()
    log = os.path.join(workdir, "access.log")
    p = checked(config(port, [free_port(), live.port], {"attempts": 0}, log=log))
    assert curl(port, "/z")[0] == 503  # round robin: the dead endpoint first, no retry
    assert p.metric(RETRIED) == 0
    assert read_log(log, 1)[0]["response_flags"] == "UF"


def test_connect_failure_retried_with_backoff_to_other_endpoint(checked, servers, workdir):
    live = servers(Flaky, "live", 503, fails=0)
    port = free_port()
    path, want = body_file(workdir, 200 * 1024)
    p = checked(config(port, [free_port(), live.port], {"attempts": 2,
                                                         "retry_on": ["connect-failure"]}))
    # A POST too: nothing of it left the proxy.
    status, body, _ = curl(port, "/c", method="POST", data=path)
    assert (status, body) == (200, "live 1")
    assert p.metric(RETRIED, reason="connect_failure") == 1
    assert [(r["len"], r["sha"]) for r in live.requests] == [want]


# ---------------------------------------------------------------- HTTP/2 upstreams


@pytest.mark.parametrize("mode,reason", [(503, "status"), ("reset", "reset")])
def test_h2_upstream_retry(checked, servers, workdir, mode, reason):
    b = servers(FlakyH2, "h2", mode, fails=1)
    port = free_port()
    p = checked(config(port, [b.port], {"attempts": 2, "retry_on": ["5xx"],
                                        "retry_non_idempotent": True}, protocol="http2"))
    c = H2Client(port)
    try:
        r = c.get("/g")
        assert r.status == 200 and bytes(r.data) == b"h2 2"
        # A body goes again from the copy the proxy kept.
        payload = os.urandom(50000)
        sid = c.request("/p", method="POST", body=payload)
        r = c.wait_done(sid)
        assert r.status == 200 and bytes(r.data) == b"h2 2"
    finally:
        c.close()
    assert b.count("/g") == 2
    sums = [r["sha"] for r in b.requests if r["path"] == "/p"]
    assert sums == [hashlib.sha256(payload).hexdigest()] * 2
    assert p.metric(RETRIED, reason=reason) == 2


def test_h1_client_to_h2_upstream_retry(checked, servers, workdir):
    b = servers(FlakyH2, "h2", 503, fails=1)
    port = free_port()
    checked(config(port, [b.port], {"attempts": 1, "retry_on": ["5xx"]}, protocol="http2"))
    path, want = body_file(workdir, 20000)
    status, body, _ = curl(port, "/put", method="PUT", data=path)
    assert (status, body) == (200, "h2 2")
    assert [(r["len"], r["sha"]) for r in b.requests] == [want, want]


# ---------------------------------------------------------------- gRPC


def test_grpc_unavailable_needs_the_opt_in(checked, servers):
    g = servers(FlakyGrpc, fails=1)
    port = free_port()
    p = checked(config(port, [g.port], {"attempts": 2, "retry_on": ["unavailable"]},
                       protocol="http2"))
    client = grpcutil.Client(port)
    try:
        call = client.method("/test.Flaky/Call")
        # gRPC calls are POSTs: one that reached the server does not go again.
        with pytest.raises(grpc.RpcError) as e:
            call(b"one", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert g.calls == 1
        p.write_config(config(port, [g.port], {"attempts": 2, "retry_on": ["unavailable"],
                                               "retry_non_idempotent": True},
                              protocol="http2"))
        p.signal(1)
        deadline = time.monotonic() + 5
        while p.metric("trellis_config_reloads_total", result="ok") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        g.fails = 2  # the third call (the next one's first try) fails too
        assert call(b"two", timeout=10) == b"two"
        assert g.calls == 3
        assert p.metric(RETRIED, reason="grpc_status") == 1
    finally:
        client.close()
