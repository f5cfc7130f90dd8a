"""Outlier detection (clusters[].outlier_detection, docs/config.md): an endpoint
whose responses fail in a row is ejected (no request reaches it) for
base_ejection_time, then gets traffic again; max_ejection_percent caps how many
are out at once; local-origin failures count; an ejection survives a reload.

Backends are python servers that answer with their name and can be told to
start answering 503 (test_endpoints.NamedBackend.status). Clients are real:
plain keep-alive HTTP/1.1 sockets, python h2 (HTTP/2 prior knowledge) and
grpcio. The proxy runs one worker (the Proxy fixture's default), so one
worker sees every request: ejection is counted per worker.
"""
import os
import signal
import socket
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import grpcutil  # noqa: E402
from conftest import free_port, sanitizer_checked, wait_port  # noqa: E402
from h2util import H2Client  # noqa: E402
from test_endpoints import addr, http_config, named, wait_value  # noqa: E402,F401 (named: a fixture)

EJECTIONS = "trellis_outlier_ejections_total"
EJECTED = "trellis_outlier_ejected_endpoints"
SKIPPED = "trellis_outlier_ejections_skipped_total"


@pytest.fixture
def checked(proxies):
    """Proxies whose logs must be free of sanitizer reports at teardown
    (meaningful with TRELLIS_BIN from the ASan build)."""
    yield from sanitizer_checked(proxies)



def outlier_config(port, backends, **outlier):
    cfg = http_config(port, [addr(b.port) for b in backends])
    cfg["clusters"][0]["outlier_detection"] = outlier
    return cfg


class Client:
    """One keep-alive HTTP/1.1 connection: get() -> (status, backend name)."""

    def __init__(self, port):
        self.port = port
        self.sock = None

    def get(self, path="/"):
        for _ in range(2):
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                self.f = self.sock.makefile("rb")
            try:
                self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                status = int(self.f.readline().split()[1])
                headers = {}
                while True:
                    line = self.f.readline()
                    if line in (b"\r\n", b""):
                        break
                    k, _, v = line.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = self.f.read(int(headers.get("content-length", "0")))
                if headers.get("connection") == "close":
                    self.close()
                return status, body.decode()
            except (OSError, IndexError, ValueError):
                self.close()
        raise AssertionError("no response")

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def test_failing_backend_ejected_then_back(checked, named):
    bs = [named(f"b{i}") for i in range(3)]
    port = free_port()
    p = checked(outlier_config(port, bs, consecutive_5xx_errors=3, interval="1s",
                               base_ejection_time="2s", max_ejection_percent=50))
    c = Client(port)
    try:
        # Round robin: every backend answers.
        assert sorted(c.get()[1] for _ in range(30)) == sorted(["b0", "b1", "b2"] * 10)
        bs[0].status = 503
        # b0 gets every third request: its third 503 in a row ejects it.
        statuses = [c.get()[0] for _ in range(9)]
        ejected_at = time.monotonic()
        assert statuses.count(503) == 3, statuses
        assert p.metric(EJECTIONS, cluster="c") == 1
        assert p.metric(EJECTED, cluster="c") == 1
        # Ejected: nothing reaches it, every request succeeds elsewhere.
        before = bs[0].count
        bs[0].status = 200  # it recovered, but the proxy cannot know yet
        while time.monotonic() - ejected_at < 1.7:
            status, name = c.get()
            assert (status, name[:1]) == (200, "b") and name != "b0"
            time.sleep(0.01)
        assert bs[0].count == before
        # After base_ejection_time it gets traffic again.
        time.sleep(max(0.0, ejected_at + 2.1 - time.monotonic()))
        names = [c.get()[1] for _ in range(9)]
        assert names.count("b0") >= 2, names
        assert bs[0].count == before + names.count("b0")
        assert p.metric(EJECTED, cluster="c") == 0
        assert "ejected for 2000 ms (consecutive 5xx" in p.read_log()
    finally:
        c.close()


def test_ejection_time_grows_with_each_ejection(checked, named):
    bs = [named(f"b{i}") for i in range(2)]
    port = free_port()
    p = checked(outlier_config(port, bs, consecutive_5xx_errors=1, interval="30s",
                               base_ejection_time="1s", max_ejection_percent=50))
    c = Client(port)
    try:
        bs[0].status = 503
        while c.get()[1] != "b0":  # its 503 ejects it
            pass
        t = time.monotonic()
        durations = []
        for _ in range(2):
            # Back after the ejection; its 503 ejects it again at once.
            while c.get()[1] != "b0":
                time.sleep(0.02)
                assert time.monotonic() - t < 5
            now = time.monotonic()
            durations.append(now - t)
            t = now
        # 1 s, then 2 s (the second ejection within an interval of the first's end).
        assert 0.9 <= durations[0] < 1.6, durations
        assert 1.9 <= durations[1] < 2.6, durations
        assert p.metric(EJECTIONS, cluster="c") >= 2
    finally:
        c.close()


def test_max_ejection_percent(checked, named):
    bs = [named(f"b{i}") for i in range(4)]
    port = free_port()
    p = checked(outlier_config(port, bs, consecutive_5xx_errors=2, interval="1s",
                               base_ejection_time="30s", max_ejection_percent=25))
    c = Client(port)
    try:
        bs[0].status = bs[1].status = 503
        statuses = [c.get()[0] for _ in range(40)]
        # One of four (25 %) may be out; the other failing one keeps failing.
        assert p.metric(EJECTIONS, cluster="c") == 1
        assert p.metric(EJECTED, cluster="c") == 1
        assert p.metric(SKIPPED, cluster="c") >= 1
        counts = (bs[0].count, bs[1].count)
        [c.get() for _ in range(20)]
        grew = [bs[i].count > counts[i] for i in range(2)]
        assert sorted(grew) == [False, True], (counts, bs[0].count, bs[1].count)
        assert statuses.count(503) >= 6
        assert "max_ejection_percent 25 reached" in p.read_log()
    finally:
        c.close()


def test_istio_default_ejects_none_of_three(checked, named):
    """Istio's default maxEjectionPercent (10 %) lets no endpoint of a
    three-endpoint cluster go: Envoy's rule, (ejected + 1) / hosts <= 10 %."""
    bs = [named(f"b{i}") for i in range(3)]
    port = free_port()
    p = checked(outlier_config(port, bs, consecutive_5xx_errors=2))
    c = Client(port)
    try:
        bs[0].status = 503
        names = [c.get()[1] for _ in range(30)]
        assert names.count("b0") == 10
        assert p.metric(EJECTIONS, cluster="c") == 0
        assert p.metric(SKIPPED, cluster="c") == 5
    finally:
        c.close()


def test_gateway_errors_from_http2_clients(checked, named):
    """consecutive_gateway_errors over HTTP/2 streams to HTTP/1.1 backends
    (the streams' upstream client reports the status too); a 500 is no
    gateway error and breaks the run."""
    bs = [named(f"b{i}") for i in range(2)]
    port = free_port()
    p = checked(outlier_config(port, bs, consecutive_5xx_errors=0, consecutive_gateway_errors=2,
                               base_ejection_time="30s", max_ejection_percent=50))
    h = H2Client(port)
    try:
        bs[0].status = 500
        r = [h.get("/") for _ in range(10)]
        assert [x.status for x in r].count(500) == 5
        assert p.metric(EJECTIONS, cluster="c") == 0
        bs[0].status = 502
        r = [h.get("/") for _ in range(4)]
        assert [x.status for x in r].count(502) == 2
        assert p.metric(EJECTIONS, cluster="c") == 1
        assert all(h.get("/").data == b"b1" for _ in range(10))
    finally:
        h.close()


def test_connect_failures_are_local_origin(checked, named):
    """With split_external_local_origin_errors, connection failures make
    their own run: a dead endpoint is ejected after
    consecutive_local_origin_failures, and 503 responses alone do not."""
    live = named("live")
    dead = free_port()  # nothing listens there: connections are refused
    port = free_port()
    cfg = http_config(port, [addr(live.port), addr(dead)])
    cfg["clusters"][0]["outlier_detection"] = {
        "split_external_local_origin_errors": True, "consecutive_local_origin_failures": 1,
        "consecutive_5xx_errors": 0, "base_ejection_time": "30s", "max_ejection_percent": 50}
    p = checked(cfg)
    c = Client(port)
    try:
        # The first attempt to the dead one fails and is sent to the live one
        # (connect retries); that failure ejects the dead one.
        assert [c.get() for _ in range(4)] == [(200, "live")] * 4
        assert p.metric(EJECTIONS, cluster="c") == 1
        assert f"endpoint 127.0.0.1:{dead} ejected" in p.read_log()
        live.status = 503
        [c.get() for _ in range(5)]
        assert p.metric(EJECTIONS, cluster="c") == 1
    finally:
        c.close()


def test_ejection_survives_reload(checked, named):
    bs = [named(f"b{i}") for i in range(2)]
    port = free_port()
    cfg = outlier_config(port, bs, consecutive_5xx_errors=1, base_ejection_time="30s",
                         max_ejection_percent=50)
    p = checked(cfg)
    c = Client(port)
    try:
        bs[0].status = 503
        while c.get()[1] != "b0":
            pass
        assert p.metric(EJECTED, cluster="c") == 1
        bs[0].status = 200
        # A reload that changes the cluster (weights, timeouts) keeps its
        # endpoints, and with them the ejection.
        cfg["clusters"][0]["connect_timeout"] = "2s"
        cfg["clusters"][0]["endpoints"][1]["weight"] = 2
        p.write_config(cfg)
        gen = p.metric("trellis_config_generation")
        p.signal(signal.SIGHUP)
        deadline = time.time() + 5
        while p.metric("trellis_config_generation") <= gen and time.time() < deadline:
            time.sleep(0.05)
        assert p.metric("trellis_config_generation") > gen
        assert all(c.get()[1] == "b1" for _ in range(20))
        assert p.metric(EJECTED, cluster="c") == 1
        # Turning outlier detection off ends it.
        del cfg["clusters"][0]["outlier_detection"]
        status, body = p.update("clusters", "c", value=cfg["clusters"][0])
        assert status == 200, body
        # The update is validated and published before the answer; each
        # worker adopts it on its next loop turn (docs/architecture.md,
        # "Partial updates"), which is when the ejection ends.
        assert wait_value(lambda: p.metric(EJECTED, cluster="c"), 0, timeout=2.0) == 0
        assert "b0" in [c.get()[1] for _ in range(6)]
    finally:
        c.close()


class GrpcStatusServer:
    """A gRPC server whose unary method answers OK, or UNAVAILABLE while
    `failing` is set (a trailers-only response: HTTP 200, grpc-status 14)."""

    def __init__(self, name):
        self.name = name
        self.port = free_port()
        self.failing = False
        self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=grpcutil.OPTIONS)
        h = grpc.method_handlers_generic_handler(grpcutil.SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary)})
        self.server.add_generic_rpc_handlers((h,))
        assert self.server.add_insecure_port(f"127.0.0.1:{self.port}") == self.port
        self.server.start()

    def unary(self, req, context):
        self.calls += 1
        if self.failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return self.name.encode()

    def close(self):
        self.server.stop(grace=None).wait(5)


def test_grpc_unavailable_counts_as_503(checked):
    """A gRPC trailers-only UNAVAILABLE (HTTP 200) counts as a 503, as Envoy
    maps grpc-status for outlier detection."""
    servers = [GrpcStatusServer(f"g{i}") for i in range(2)]
    try:
        port = free_port()
        cfg = http_config(port, [addr(s.port) for s in servers], protocol="http2")
        cfg["clusters"][0]["outlier_detection"] = {
            "consecutive_5xx_errors": 2, "base_ejection_time": "30s", "max_ejection_percent": 50}
        p = checked(cfg)
        wait_port(port)
        client = grpcutil.Client(port)
        try:
            assert client.unary(b"x", timeout=5) in (b"g0", b"g1")
            servers[0].failing = True
            codes = []
            for _ in range(8):
                try:
                    client.unary(b"x", timeout=5)
                    codes.append("OK")
                except grpc.RpcError as e:
                    codes.append(e.code().name)
            assert codes.count("UNAVAILABLE") == 2, codes
            assert p.metric(EJECTIONS, cluster="c") == 1
            calls = servers[0].calls
            assert all(client.unary(b"x", timeout=5) == b"g1" for _ in range(10))
            assert servers[0].calls == calls
        finally:
            client.close()
    finally:
        for s in servers:
            s.close()


def test_concurrent_failures_eject_once(checked, named):
    """Requests in flight when an endpoint is ejected do not eject it again
    or lengthen its ejection."""
    bs = [named(f"b{i}") for i in range(2)]
    bs[0].delay = 0.2
    port = free_port()
    p = checked(outlier_config(port, bs, consecutive_5xx_errors=1, base_ejection_time="30s",
                               max_ejection_percent=50))
    bs[0].status = 503
    results = []

    def one():
        c = Client(port)
        try:
            results.append(c.get())
        finally:
            c.close()

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 8
    assert p.metric(EJECTIONS, cluster="c") == 1
    assert "ejection 2" not in p.read_log()
