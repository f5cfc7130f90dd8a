"""Mirroring (routes[].mirrors, docs/config.md "Mirroring"): a shadow copy of each
request goes to another cluster, fire and forget.

Checked with real clients (curl over HTTP/1.1 and HTTP/2, python h2) and python
backends: the mirror receives the request as the primary got it (method, path,
Host unchanged, the proxy's own headers, the body), the client's latency does
not include the mirror's (a mirror that takes 2 s to answer), the percentage
picks its share, and what a shadow cannot carry (a body over the bound, gRPC)
or where it fails (a dead mirror) is only counted.
"""
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import grpcutil  # noqa: E402
from conftest import RecordingBackend, free_port, sanitizer_checked  # noqa: E402
from h2util import H2Client  # noqa: E402

MIRRORED = "trellis_mirror_requests_total"


class SlowRecorder(RecordingBackend):
    """A RecordingBackend that waits `delay` seconds before each answer and
    counts the answers it finished."""

    def __init__(self, delay):
        super().__init__()
        self.delay = delay
        self.done = 0
        inner = self.server.RequestHandlerClass._handle
        backend = self

        def slow(handler):
            time.sleep(backend.delay)
            inner(handler)
            backend.done += 1

        for m in ("GET", "POST", "PUT", "HEAD"):
            setattr(self.server.RequestHandlerClass, "do_" + m, slow)


@pytest.fixture
def recorders():
    started = []

    def make(delay=0.0):
        b = SlowRecorder(delay)
        started.append(b)
        return b

    yield make
    for b in started:
        b.close()


def addr(port):
    return f"127.0.0.1:{port}"


@pytest.fixture
def checked(proxies):
    """Proxies whose logs must be free of sanitizer reports (with an ASan build)."""
    yield from sanitizer_checked(proxies)


def config(port, primary, mirrors, timeout=None, protocol=None):
    """Cluster "p" on primary's port; mirrors: [(port, percent or None)] as
    clusters m0, m1, ..."""
    route = {"name": "r", "cluster": "p", "mirrors": []}
    clusters = [{"name": "p", "endpoints": [{"address": addr(primary)}]}]
    if protocol:
        clusters[0]["protocol"] = protocol
    for i, (mport, percent) in enumerate(mirrors):
        m = {"cluster": f"m{i}"}
        if percent is not None:
            m["percent"] = percent
        route["mirrors"].append(m)
        clusters.append({"name": f"m{i}", "endpoints": [{"address": addr(mport)}]})
    if timeout:
        route["timeout"] = timeout
    return {
        "listeners": [{"name": "in", "address": addr(port), "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{"name": "all", "domains": ["*"],
                                                           "routes": [route]}]}],
        "clusters": clusters,
    }


def curl(port, path, method="GET", data=None, h2=False, host=None):
    args = ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
            "-X", method]
    if h2:
        args.append("--http2-prior-knowledge")
    if host:
        args += ["-H", f"host: {host}"]
    if data is not None:
        args += ["--data-binary", f"@{data}", "-H", "content-type: application/octet-stream"]
    args.append(f"http://127.0.0.1:{port}{path}")
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    return int(r.stdout), time.monotonic() - t0


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return pred()
        time.sleep(0.02)
    return True


def headers_of(req):
    return dict(req["headers"])


@pytest.mark.parametrize("h2c", [False, True], ids=["h1-client", "h2-client"])
def test_mirror_gets_a_copy_and_the_client_does_not_wait(checked, recorders, workdir, h2c):
    primary = recorders()
    mirror = recorders(delay=2.0)
    port = free_port()
    p = checked(config(port, primary.port, [(mirror.port, None)]))
    body = os.urandom(20000)
    path = os.path.join(workdir, "body.bin")
    with open(path, "wb") as f:
        f.write(body)
    status, elapsed = curl(port, "/up?x=1", method="POST", data=path, h2=h2c,
                           host="svc.example:8080")
    assert status == 200
    assert elapsed < 1.0, elapsed  # the mirror takes 2 s
    assert wait_for(lambda: len(mirror.requests) == 1)
    got, want = mirror.requests[0], primary.requests[0]
    assert (got["method"], got["path"], got["body"]) == ("POST", "/up?x=1", body)
    # The same head the primary got: Host unchanged (no "-shadow"), the
    # proxy's own headers (the same request id) included.
    assert headers_of(got)["host"] == "svc.example:8080"
    for k in ("x-request-id", "x-forwarded-for", "x-forwarded-proto", "content-type"):
        assert headers_of(got)[k] == headers_of(want)[k], k
    # The shadow's answer comes 2 s later and is only counted.
    assert wait_for(lambda: p.metric(MIRRORED, result="completed") == 1, timeout=6)
    assert mirror.done == 1


def test_mirror_of_many_requests_on_keepalive_connections(checked, recorders):
    primary = recorders()
    mirror = recorders()
    port = free_port()
    p = checked(config(port, primary.port, [(mirror.port, None)]))
    args = ["curl", "-sS", "-w", "%{http_code}\\n"]
    for i in range(30):
        args += ["-o", "/dev/null", f"http://127.0.0.1:{port}/k{i}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["200"] * 30
    assert wait_for(lambda: p.metric(MIRRORED, result="completed") == 30)
    assert sorted(x["path"] for x in mirror.requests) == sorted(f"/k{i}" for i in range(30))
    # The shadows reuse pooled connections to the mirror.
    assert mirror.connections < 30


def test_two_mirrors_and_percentages(checked, recorders):
    primary = recorders()
    all_ = recorders()
    half = recorders()
    port = free_port()
    p = checked(config(port, primary.port, [(all_.port, 100), (half.port, 50)]))
    n = 300
    args = ["curl", "-sS", "-w", "%{http_code}\\n"]
    for i in range(n):
        args += ["-o", "/dev/null", f"http://127.0.0.1:{port}/p{i}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["200"] * n
    assert wait_for(lambda: len(all_.requests) == n, timeout=10)
    # Binomial(300, 0.5): mean 150, sd 8.7; 40 is more than 4.5 sd.
    assert wait_for(lambda: p.metric(MIRRORED, result="completed") == n + len(half.requests))
    assert abs(len(half.requests) - 150) <= 40, len(half.requests)


def test_body_over_the_bound_is_not_mirrored(checked, recorders, workdir):
    primary = recorders()
    mirror = recorders()
    port = free_port()
    p = checked(config(port, primary.port, [(mirror.port, None)]))
    path = os.path.join(workdir, "big.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(65 * 1024))
    for h2c in (False, True):
        status, _ = curl(port, "/big", method="POST", data=path, h2=h2c)
        assert status == 200
    assert p.metric(MIRRORED, result="body_too_large") == 2
    assert len(primary.requests) == 2
    time.sleep(0.3)
    assert mirror.requests == []


def test_dead_mirror_only_counted(checked, recorders):
    primary = recorders()
    port = free_port()
    p = checked(config(port, primary.port, [(free_port(), None)]))
    for h2c in (False, True):
        assert curl(port, "/d", h2=h2c)[0] == 200
    assert wait_for(lambda: p.metric(MIRRORED, result="failed") == 2)
    assert len(primary.requests) == 2


def test_mirror_timeout_is_the_route_timeout(checked, recorders):
    primary = recorders()
    mirror = recorders(delay=2.0)
    port = free_port()
    p = checked(config(port, primary.port, [(mirror.port, None)], timeout="300ms"))
    t0 = time.monotonic()
    assert curl(port, "/t")[0] == 200
    assert wait_for(lambda: p.metric(MIRRORED, result="failed") == 1, timeout=3)
    assert time.monotonic() - t0 < 1.5


def test_client_gone_before_its_body_ended_is_not_mirrored(checked, recorders):
    import socket
    primary = recorders()
    mirror = recorders()
    port = free_port()
    p = checked(config(port, primary.port, [(mirror.port, None)]))
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /cut HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    time.sleep(0.2)
    s.close()
    assert wait_for(lambda: p.metric(MIRRORED, result="incomplete") == 1)
    assert mirror.requests == []


def test_http2_client_streams_and_h1_client_to_h2_primary(checked, recorders):
    """Shadows of requests that went through streams: an HTTP/2 client's
    (several at once on one connection) and an HTTP/1.1 client's whose
    primary speaks HTTP/2."""
    from h2util import H2Backend
    primary = recorders()
    mirror = recorders()
    port = free_port()
    p = checked(config(port, primary.port, [(mirror.port, None)]))
    c = H2Client(port)
    try:
        sids = [c.request(f"/s{i}", method="PUT", body=f"body {i}".encode()) for i in range(5)]
        for sid in sids:
            assert c.wait_done(sid).status == 200
    finally:
        c.close()
    assert wait_for(lambda: len(mirror.requests) == 5)
    assert sorted((r["path"], r["body"]) for r in mirror.requests) == \
        sorted((f"/s{i}", f"body {i}".encode()) for i in range(5))
    h2_port = free_port()
    h2b = H2Backend(h2_port)
    try:
        port2 = free_port()
        checked(config(port2, h2_port, [(mirror.port, None)], protocol="http2"), name="p2")
        assert curl(port2, "/to-h2")[0] == 200
        assert wait_for(lambda: any(r["path"] == "/to-h2" for r in mirror.requests))
    finally:
        h2b.close()
    # Each mirror has the request; its answer is counted once the proxy read it.
    assert wait_for(lambda: p.metric(MIRRORED, result="completed") == 5)


def test_grpc_is_not_mirrored(checked, recorders):
    app = free_port()
    server = grpcutil.EchoServer(app)
    mirror = recorders()
    try:
        port = free_port()
        p = checked(config(port, app, [(mirror.port, None)], protocol="http2"))
        client = grpcutil.Client(port)
        try:
            assert client.unary(b"hi", timeout=10) == b"hi"
        finally:
            client.close()
        assert p.metric(MIRRORED, result="unsupported") == 1
        assert mirror.requests == []
    finally:
        server.close()


def test_mirror_to_http2_cluster_refused_at_load(workdir):
    import json
    from conftest import TRELLIS
    cfg = config(free_port(), free_port(), [(free_port(), None)])
    cfg["clusters"][1]["protocol"] = "http2"
    path = os.path.join(workdir, "bad.yaml")
    with open(path, "w") as f:
        json.dump(cfg, f)
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", path], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0
    assert "mirrors[0].cluster: mirrors speak HTTP/1.1" in r.stderr + r.stdout
