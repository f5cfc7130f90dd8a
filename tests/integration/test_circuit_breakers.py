"""Connection-pool limits (clusters[].circuit_breakers, pool.max_requests_per_connection,
docs/config.md): beyond a limit a request fails at once with 503 and response
flag UO, counted in trellis_upstream_overflow_total{cluster,limit} and in
istio_requests_total{response_flags="UO"}; a connection carries at most
max_requests_per_connection requests.

Concurrency comes from client threads and from h2load (HTTP/2 streams)
against slow python backends (test_endpoints.NamedBackend with a delay).
"""
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port, sanitizer_checked  # noqa: E402
from h2util import H2Backend, H2Client  # noqa: E402
from test_endpoints import addr, http_config, named  # noqa: E402,F401 (named: a fixture)

OVERFLOW = "trellis_upstream_overflow_total"


@pytest.fixture
def checked(proxies):
    """Proxies whose logs must be free of sanitizer reports at teardown
    (meaningful with TRELLIS_BIN from the ASan build)."""
    yield from sanitizer_checked(proxies)



def get(port, path="/"):
    """One request on its own connection: (status, body, seconds)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(), time.monotonic() - t0


def concurrently(n, fn):
    out = []
    lock = threading.Lock()

    def run():
        r = fn()
        with lock:
            out.append(r)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.02)  # in order, all within the backend's delay
    for t in threads:
        t.join(30)
    return out


def access_flags(path):
    with open(path) as f:
        return [json.loads(line)["response_flags"] for line in f if line.strip()]


def test_max_requests_overflow_fails_fast(checked, named, workdir):
    b = named("slow", delay=1.0)
    port = free_port()
    log = os.path.join(workdir, "access.log")
    cfg = http_config(port, [addr(b.port)], log=log)
    cfg["clusters"][0]["circuit_breakers"] = {"max_requests": 2}
    p = checked(cfg)
    results = concurrently(6, lambda: get(port))
    ok = [r for r in results if r[0] == 200]
    over = [r for r in results if r[0] == 503]
    assert len(ok) == 2 and len(over) == 4, results
    # Fail fast: no waiting for the backend's second.
    assert all(r[2] < 0.5 for r in over), over
    assert all("reset reason: overflow" in r[1] for r in over), over
    assert b.count == 2
    assert p.metric(OVERFLOW, cluster="c", limit="circuit_breakers.max_requests") == 4
    assert p.metric("istio_requests_total", response_code="503", response_flags="UO") == 4
    time.sleep(0.2)
    assert sorted(access_flags(log)) == ["-", "-", "UO", "UO", "UO", "UO"]
    # Once the two are done there is room again.
    assert get(port)[0] == 200


def test_max_connections_no_queue(checked, named):
    """max_connections counts connections to all endpoints: with one, a
    second request while the first holds it overflows (trellis fails fast
    where Envoy would queue it behind max_pending_requests)."""
    bs = [named("a", delay=0.6), named("b", delay=0.6)]
    port = free_port()
    cfg = http_config(port, [addr(x.port) for x in bs])
    cfg["clusters"][0]["circuit_breakers"] = {"max_connections": 1}
    p = checked(cfg)
    results = concurrently(3, lambda: get(port))
    assert sorted(r[0] for r in results) == [200, 503, 503], results
    assert p.metric(OVERFLOW, cluster="c", limit="circuit_breakers.max_connections") == 2
    # The pooled connection serves the next ones, one at a time.
    assert [get(port)[0] for _ in range(3)] == [200] * 3


def test_endpoint_max_connections_counts_as_overflow(checked, named):
    b = named("slow", delay=0.6)
    port = free_port()
    cfg = http_config(port, [addr(b.port)])
    cfg["clusters"][0]["pool"] = {"max_connections": 1}
    p = checked(cfg)
    results = concurrently(2, lambda: get(port))
    assert sorted(r[0] for r in results) == [200, 503], results
    assert p.metric(OVERFLOW, cluster="c", limit="pool.max_connections") == 1


def test_h2load_streams_overflow(checked, named):
    """HTTP/2 clients: ten streams at once on one connection, three allowed."""
    b = named("slow", delay=0.3)
    port = free_port()
    cfg = http_config(port, [addr(b.port)])
    cfg["clusters"][0]["circuit_breakers"] = {"max_requests": 3}
    p = checked(cfg)
    r = subprocess.run(["h2load", "-n", "40", "-c", "1", "-m", "10", "-T", "20",
                        f"http://127.0.0.1:{port}/"], capture_output=True, timeout=60)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    m = re.search(r"status codes: (\d+) 2xx, 0 3xx, 0 4xx, (\d+) 5xx", out)
    assert m, out
    ok, over = int(m.group(1)), int(m.group(2))
    assert ok + over == 40 and ok >= 3 and over >= 10, out
    assert b.count == ok
    assert p.metric(OVERFLOW, cluster="c", limit="circuit_breakers.max_requests") == over
    assert p.metric("istio_requests_total", response_flags="UO", request_protocol="http/2") == over


def test_max_requests_per_connection_http1(checked, named):
    b = named("b")
    port = free_port()
    cfg = http_config(port, [addr(b.port)])
    cfg["clusters"][0]["pool"] = {"max_requests_per_connection": 2}
    checked(cfg)
    conns = []
    orig = b.server.get_request

    def counting():
        sock, a = orig()
        conns.append(a)
        return sock, a

    b.server.get_request = counting
    assert [get(port)[0] for _ in range(6)] == [200] * 6
    assert len(conns) == 3  # two requests each


def test_max_requests_per_connection_http2_upstream(checked):
    be = H2Backend(free_port())
    port = free_port()
    cfg = http_config(port, [addr(be.port)], protocol="http2")
    cfg["clusters"][0]["pool"] = {"max_requests_per_connection": 2}
    checked(cfg)
    h = H2Client(port)
    try:
        assert [h.get("/").status for _ in range(6)] == [200] * 6
    finally:
        h.close()
    assert be.connections == 3
