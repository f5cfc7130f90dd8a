"""Endpoints of a cluster: connect failures go to another endpoint, endpoints in
connect back-off are skipped (503 UH when none is left) and come back, and the
load balancers (round robin, random, least request, weights) spread requests
as documented (docs/config.md, clusters[].lb and endpoints[].weight).

Clients are real: curl (HTTP/1.1 and HTTP/2 prior knowledge), grpcio, plain
sockets for TCP. Backends are python servers that answer with their name. A
"dead" endpoint is a port nothing listens on (free_port() picks outside the
ephemeral range, so the kernel refuses the connection).
"""
import hashlib
import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from concurrent import futures

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import grpcutil  # noqa: E402
from conftest import ThreadedTCPServer, free_port, wait_port  # noqa: E402
from h2util import H2Backend, H2Client  # noqa: E402

RETRIED = "trellis_upstream_requests_retried_total"


class NamedBackend:
    """Threaded HTTP/1.1 server answering with its name as the body (and
    x-backend: name); records the sha256 and length of each request body.
    delay: seconds to wait before answering. status: the status it answers
    with (200; set it to 503 to make a backend start failing)."""

    def __init__(self, name, port=None, delay=0.0):
        self.name = name
        self.port = port or free_port()
        self.delay = delay
        self.status = 200
        self.bodies = []
        self.count = 0
        self.lock = threading.Lock()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # head and body are two writes

            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with backend.lock:
                    backend.count += 1
                    backend.bodies.append((len(body), hashlib.sha256(body).hexdigest()))
                if backend.delay:
                    time.sleep(backend.delay)
                out = backend.name.encode()
                self.send_response(backend.status)
                self.send_header("x-backend", backend.name)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _handle

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def named():
    started = []

    def make(name, port=None, delay=0.0):
        b = NamedBackend(name, port, delay)
        started.append(b)
        return b

    yield make
    for b in started:
        b.close()


def http_config(port, endpoints, lb="round_robin", protocol=None, log=None):
    """One listener, every path to cluster "c" with these endpoints
    (addresses, or (address, weight))."""
    eps = []
    for e in endpoints:
        if isinstance(e, tuple):
            eps.append({"address": e[0], "weight": e[1]})
        else:
            eps.append({"address": e})
    cluster = {"name": "c", "lb": lb, "endpoints": eps}
    if protocol:
        cluster["protocol"] = protocol
    cfg = {
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": "c"}]}]}],
        "clusters": [cluster],
    }
    if log:
        cfg["access_log"] = {"enabled": True, "path": log}
    return cfg


def addr(port):
    return f"127.0.0.1:{port}"


def curl_codes(port, n, path="/"):
    """n GETs on one curl process (one keep-alive connection): the list of
    status codes."""
    args = ["curl", "-sS", "--max-time", "30", "-w", "%{http_code}\\n"]
    for _ in range(n):
        args += ["-o", "/dev/null", f"http://127.0.0.1:{port}{path}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return [int(x) for x in r.stdout.split()]


def h2_codes(port, n, path="/"):
    """n GETs as streams of one HTTP/2 connection (python h2; curl 7.88 fails
    to reuse a prior-knowledge connection for a second URL): the statuses."""
    c = H2Client(port)
    try:
        return [c.get(path).status for _ in range(n)]
    finally:
        c.close()


def get_bodies(port, n, path="/"):
    """n GETs on one keep-alive connection: the response bodies (names)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    names = []
    try:
        for _ in range(n):
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            status = f.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.decode().partition(":")
                if k.lower() == "content-length":
                    length = int(v)
            names.append(f.read(length).decode())
    finally:
        f.close()
        s.close()
    return names


def wait_value(fn, want, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v == want or time.monotonic() > deadline:
            return v
        time.sleep(0.02)


def read_log(path, n, timeout=3.0):
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


# ---------------------------------------------------------------- connect failures


def test_http1_connect_failure_goes_to_other_endpoint(proxies, named):
    live = named("live")
    port = free_port()
    # The dead endpoint first: round robin's first pick is it.
    p = proxies(http_config(port, [addr(free_port()), addr(live.port)]))
    codes = curl_codes(port, 60)
    assert codes == [200] * 60
    assert live.count == 60
    assert p.metric(RETRIED) >= 1
    assert p.metric("istio_requests_total", response_code="503") == 0


def test_http2_client_h1_upstream_connect_failure(proxies, named):
    live = named("live")
    port = free_port()
    p = proxies(http_config(port, [addr(free_port()), addr(live.port)]))
    codes = h2_codes(port, 60)
    assert codes == [200] * 60
    assert live.count == 60
    assert p.metric(RETRIED) >= 1


def test_http2_client_h2_upstream_connect_failure(proxies):
    up_port = free_port()
    be = H2Backend(up_port)
    try:
        port = free_port()
        p = proxies(http_config(port, [addr(free_port()), addr(up_port)], protocol="http2"))
        codes = h2_codes(port, 60)
        assert codes == [200] * 60
        assert len(be.requests) == 60
        assert p.metric(RETRIED) >= 1
    finally:
        be.close()


def test_grpc_connect_failure_goes_to_other_endpoint(proxies):
    app_port = free_port()
    server = grpcutil.EchoServer(app_port)
    try:
        port = free_port()
        p = proxies(http_config(port, [addr(free_port()), addr(app_port)], protocol="http2"))
        client = grpcutil.Client(port)
        try:
            ok = 0
            for i in range(60):
                msg = f"hello {i}".encode()
                assert client.unary(msg, timeout=10) == msg
                ok += 1
            assert ok == 60
        finally:
            client.close()
        assert server.calls.get("Unary") == 60
        assert p.metric(RETRIED) >= 1
    finally:
        server.close()


class EchoOnce(ThreadedTCPServer):
    """TCP server: per connection, echo one line and close."""

    def serve(self, c):
        try:
            c.settimeout(10)
            data = b""
            while not data.endswith(b"\n"):
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            c.sendall(b"echo " + data)
        except OSError:
            pass
        finally:
            c.close()


def test_tcp_connect_failure_goes_to_other_endpoint(proxies):
    echo = EchoOnce()
    try:
        port = free_port()
        cfg = {
            "listeners": [{"name": "tcp", "address": f"127.0.0.1:{port}", "protocol": "tcp",
                           "tcp_cluster": "c"}],
            "clusters": [{"name": "c", "endpoints": [{"address": addr(free_port())},
                                                     {"address": addr(echo.port)}]}],
        }
        p = proxies(cfg)
        ok = 0
        for i in range(60):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(f"line {i}\n".encode())
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data == f"echo line {i}\n".encode():
                    ok += 1
        assert ok == 60
        assert echo.connections == 60
        assert p.metric(RETRIED) >= 1
    finally:
        echo.close()


def test_post_body_intact_after_connect_retry(proxies, named):
    live = named("live")
    port = free_port()
    # The dead endpoint weighs 100: smooth round robin picks it first, and
    # again first once its back-off ran out.
    p = proxies(http_config(port, [(addr(free_port()), 100), (addr(live.port), 1)]))
    body = os.urandom(300 * 1024)
    path = os.path.join(p.workdir, "body.bin")
    with open(path, "wb") as f:
        f.write(body)
    want = (len(body), hashlib.sha256(body).hexdigest())
    for h2 in (False, True):
        # Let the dead endpoint's back-off (1 s) run out, so round robin
        # tries it first again.
        if h2:
            time.sleep(1.2)
        before = p.metric(RETRIED)
        args = ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
                "--data-binary", f"@{path}", "-H", "content-type: application/octet-stream",
                f"http://127.0.0.1:{port}/upload"]
        if h2:
            args.insert(1, "--http2-prior-knowledge")
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert r.stdout == "200", r.stderr
        assert live.bodies[-1] == want
        assert p.metric(RETRIED) == before + 1


def test_all_dead_answers_uh_at_once(proxies, workdir):
    port = free_port()
    log = os.path.join(workdir, "access.log")
    p = proxies(http_config(port, [addr(free_port()), addr(free_port())], log=log))
    # First request: both endpoints fail to connect (the first, then the retry
    # to the other): the original failure, 503 UF.
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                        f"http://127.0.0.1:{port}/a"], capture_output=True, text=True, timeout=10)
    assert r.stdout == "503"
    assert p.metric(RETRIED) == 1
    # Both are in back-off now: no connect is tried, 503 UH at once.
    times = []
    for i in range(5):
        t0 = time.monotonic()
        r = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null",
                            f"http://127.0.0.1:{port}/b{i}"], capture_output=True, text=True,
                           timeout=10)
        times.append(time.monotonic() - t0)
        assert r.stdout.startswith("HTTP/1.1 503"), r.stdout
    lines = read_log(log, 6)
    assert [e["response_flags"] for e in lines] == ["UF"] + ["UH"] * 5
    assert wait_value(lambda: p.metric("istio_requests_total", response_code="503",
                                       response_flags="UH"), 5) == 5
    assert p.metric(RETRIED) == 1
    # At once: no connect attempt, well under one connect timeout (1 s).
    assert min(times) < 0.2, times


@pytest.mark.parametrize("protocol", ["http1", "http2"])
def test_all_dead_http2_client_uh(proxies, workdir, protocol):
    """The same for streams, to HTTP/1.1 and to HTTP/2 upstreams."""
    port = free_port()
    log = os.path.join(workdir, "access.log")
    p = proxies(http_config(port, [addr(free_port()), addr(free_port())], protocol=protocol,
                            log=log))
    assert h2_codes(port, 1) == [503]
    t0 = time.monotonic()
    assert h2_codes(port, 3) == [503] * 3
    elapsed = time.monotonic() - t0
    lines = read_log(log, 4)
    assert [e["response_flags"] for e in lines] == ["UF"] + ["UH"] * 3
    assert p.metric(RETRIED) == 1
    assert elapsed < 0.5, elapsed


def test_endpoint_back_in_use_after_backoff(proxies, named):
    a_port = free_port()
    b = named("b")
    port = free_port()
    p = proxies(http_config(port, [addr(a_port), addr(b.port)]))
    assert get_bodies(port, 4) == ["b"] * 4  # a is dead: into back-off (1 s)
    a = named("a", port=a_port)
    wait_port(a_port)
    # Within the back-off a is still skipped...
    assert get_bodies(port, 2) == ["b"] * 2
    time.sleep(1.3)
    # ...after it, a is tried again, connects, and is healthy.
    names = get_bodies(port, 6)
    assert names.count("a") == 3 and names.count("b") == 3, names
    assert a.count == 3
    assert p.metric(RETRIED) == 1


# ---------------------------------------------------------------- load balancing


def test_round_robin_alternates_exactly(proxies, named):
    bs = [named(n) for n in ("a", "b", "c")]
    port = free_port()
    proxies(http_config(port, [addr(b.port) for b in bs]))
    assert get_bodies(port, 9) == ["a", "b", "c"] * 3


def test_weighted_round_robin_smooth_order(proxies, named):
    bs = [named(n) for n in ("a", "b", "c")]
    port = free_port()
    proxies(http_config(port, [(addr(bs[0].port), 5), (addr(bs[1].port), 1),
                               (addr(bs[2].port), 1)]))
    # Smooth weighted round robin (nginx's): the heavy endpoint's picks are
    # spread through the cycle of 7, not bunched.
    cycle = ["a", "a", "b", "a", "c", "a", "a"]
    assert get_bodies(port, 14) == cycle * 2


def spread(port, n):
    names = get_bodies(port, n)
    return {k: names.count(k) for k in set(names)}


def test_random_spreads_evenly(proxies, named):
    bs = [named(n) for n in ("a", "b")]
    port = free_port()
    proxies(http_config(port, [addr(b.port) for b in bs], lb="random"))
    n = 2000
    got = spread(port, n)
    # Binomial(2000, 0.5): sd 22; 100 is 4.5 sd (fails by chance ~1e-5).
    assert abs(got["a"] - n / 2) < 100, got
    # And it is not round robin: some request repeats its predecessor's pick.
    names = get_bodies(port, 40)
    assert any(names[i] == names[i + 1] for i in range(39)), names


def test_random_honours_weights(proxies, named):
    bs = [named(n) for n in ("a", "b")]
    port = free_port()
    proxies(http_config(port, [(addr(bs[0].port), 3), (addr(bs[1].port), 1)], lb="random"))
    n = 2000
    got = spread(port, n)
    # Binomial(2000, 0.75): sd 19.4; 100 is 5 sd.
    assert abs(got["a"] - 0.75 * n) < 100, got


def test_least_request_avoids_slow_endpoint(proxies, named):
    fast = [named("f1"), named("f2")]
    slow = named("slow", delay=0.3)
    port = free_port()
    proxies(http_config(port, [addr(fast[0].port), addr(fast[1].port), addr(slow.port)],
                        lb="least_request"))

    def one(_):
        return get_bodies(port, 1)[0]

    with futures.ThreadPoolExecutor(max_workers=8) as ex:
        names = list(ex.map(one, range(240)))
    counts = {k: names.count(k) for k in ("f1", "f2", "slow")}
    assert sum(counts.values()) == 240
    # Round robin would give each 80. Two choices by outstanding requests
    # keep the slow one (always busy) far below the fast ones.
    assert counts["slow"] < counts["f1"] / 2 and counts["slow"] < counts["f2"] / 2, counts
