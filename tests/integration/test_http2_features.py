"""HTTP/2 features beyond plain requests: CONNECT tunnels and the proxy's own
enforcement of grpc-timeout.

Everything runs on 127.0.0.1; processes are stopped by the fixtures."""
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest

from conftest import free_port, simple_config
from h2util import H1Backend


class EchoServer:
    """TCP echo; half-closes after the client does, counts connections."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.connections = 0
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _serve(c):
        with c:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)

    def close(self):
        self.stopping = True
        self.sock.close()


def tunnel_config(port, echo_port, connect_route=True):
    cfg = simple_config(port, echo_port)
    routes = cfg["route_tables"][0]["virtual_hosts"][0]["routes"]
    if connect_route:
        routes.insert(0, {"name": "tunnel", "match": {"path": {"prefix": "/"},
                                                      "methods": ["CONNECT"]},
                          "cluster": "backend"})
    return cfg


def h2_connect(port, authority, payload, timeout=10.0):
    """CONNECT over HTTP/2, send payload in window-sized pieces with
    END_STREAM on the last, read until the tunnel's stream ends.
    Returns (status, bytes received, reset code or None)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False))
    c.initiate_connection()
    c.send_headers(1, [(":method", "CONNECT"), (":authority", authority)])
    s.sendall(c.data_to_send())
    status, got, reset, ended, sent = None, bytearray(), None, False, 0
    deadline = time.monotonic() + timeout
    try:
        while not ended and time.monotonic() < deadline:
            if status == b"200" and sent < len(payload):
                n = min(c.local_flow_control_window(1), 16000, len(payload) - sent)
                if n > 0:
                    c.send_data(1, payload[sent:sent + n], end_stream=sent + n == len(payload))
                    sent += n
            elif status == b"200" and not payload and sent == 0:
                c.end_stream(1)
                sent = -1
            s.sendall(c.data_to_send())
            s.settimeout(max(0.01, deadline - time.monotonic()))
            d = s.recv(65536)
            if not d:
                break
            for e in c.receive_data(d):
                if isinstance(e, h2.events.ResponseReceived):
                    status = dict(e.headers)[b":status"]
                    if status != b"200":
                        ended = e.stream_ended is not None or ended
                elif isinstance(e, h2.events.DataReceived):
                    got += e.data
                    c.acknowledge_received_data(e.flow_controlled_length, 1)
                elif isinstance(e, h2.events.StreamEnded):
                    ended = True
                elif isinstance(e, h2.events.StreamReset):
                    reset, ended = e.error_code, True
            s.sendall(c.data_to_send())
    finally:
        s.close()
    return status, bytes(got), reset


@pytest.fixture
def echo():
    e = EchoServer()
    yield e
    e.close()


def test_connect_tunnel_carries_bytes_both_ways_and_half_closes(proxies, echo):
    port = free_port()
    p = proxies(tunnel_config(port, echo.port))
    payload = bytes(range(256)) * 2048  # 512 KiB: several windows each way
    status, got, reset = h2_connect(port, "db.internal:5432", payload)
    assert status == b"200" and reset is None
    assert got == payload  # the echo closes after our END_STREAM: the stream ends cleanly
    assert echo.connections == 1
    # An empty tunnel: END_STREAM at once, the server's FIN ends the stream.
    status, got, reset = h2_connect(port, "db.internal:5432", b"")
    assert (status, got, reset) == (b"200", b"", None)
    assert p.metric("istio_requests_total", request_protocol="http/2",
                    response_code="200") == 2


def test_connect_needs_a_route_that_names_it(proxies, echo):
    port = free_port()
    p = proxies(tunnel_config(port, echo.port, connect_route=False))
    status, got, reset = h2_connect(port, "db.internal:5432", b"x")
    assert status == b"405" and reset is None
    assert echo.connections == 0  # a catch-all HTTP route never becomes a tunnel
    assert p.metric("istio_requests_total", response_code="405", response_flags="NR") == 1


def test_connect_authority_must_have_a_port(proxies, echo):
    port = free_port()
    proxies(tunnel_config(port, echo.port))
    status, _, _ = h2_connect(port, "db.internal", b"x")
    assert status == b"400"
    assert echo.connections == 0


def test_grpc_timeout_is_enforced_by_the_proxy(proxies):
    """No route timeout; the request's grpc-timeout (200 ms) is shorter than
    the backend's delay (1.5 s), and the backend ignores it: the proxy answers
    trailers-only DEADLINE_EXCEEDED and cancels the upstream."""
    be = H1Backend(free_port())
    try:
        port = free_port()
        p = proxies(simple_config(port, be.port))
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, [(":method", "POST"), (":scheme", "http"),
                           (":path", "/slow?ms=1500"), (":authority", "svc"),
                           ("content-type", "application/grpc"), ("te", "trailers"),
                           ("grpc-timeout", "200m")])
        c.send_data(1, b"\x00\x00\x00\x00\x00", end_stream=True)
        t0 = time.monotonic()
        s.sendall(c.data_to_send())
        headers, ended = None, False
        while not ended and time.monotonic() - t0 < 3:
            for e in c.receive_data(s.recv(65536)):
                if isinstance(e, h2.events.ResponseReceived):
                    headers = dict(e.headers)
                    ended = e.stream_ended is not None
                elif isinstance(e, h2.events.StreamEnded):
                    ended = True
        elapsed = time.monotonic() - t0
        s.close()
        assert ended and headers is not None
        assert headers[b":status"] == b"200"
        assert headers[b"grpc-status"] == b"4"
        assert 0.15 <= elapsed < 1.0, elapsed
        assert p.metric("istio_requests_total", request_protocol="grpc", response_flags="UT",
                        grpc_response_status="4") == 1
    finally:
        be.close()


# ---- upstream HTTP/2: stream limit per connection, connection count ----

def _pool_config(port, app_port, max_streams, max_conns):
    cfg = simple_config(port, app_port)
    cfg["clusters"][0].update({"protocol": "http2",
                               "http2": {"max_streams_per_connection": max_streams},
                               "pool": {"max_connections": max_conns}})
    return cfg


def _sleep_calls(port, n, ms):
    import grpc
    import grpcutil
    client = grpcutil.Client(port)
    try:
        futs = [client.sleep.future(str(ms).encode(), timeout=10) for _ in range(n)]
        out = []
        for f in futs:
            try:
                out.append(("ok", f.result()))
            except grpc.RpcError as e:
                out.append((e.code().name, e.details()))
        return out
    finally:
        client.close()


def test_upstream_stream_limit_opens_another_connection(proxies):
    import grpcutil
    app = grpcutil.EchoServer(free_port())
    try:
        port = free_port()
        p = proxies(_pool_config(port, app.port, max_streams=2, max_conns=0))
        res = _sleep_calls(port, 5, 400)
        assert res == [("ok", b"slept")] * 5
        # 5 concurrent streams, at most 2 per connection: 3 connections.
        assert p.metric("trellis_upstream_connections_total") == 3
    finally:
        app.close()


def test_upstream_connection_cap_overflows_with_503_uo(proxies):
    import grpcutil
    app = grpcutil.EchoServer(free_port())
    try:
        port = free_port()
        p = proxies(_pool_config(port, app.port, max_streams=2, max_conns=1))
        res = _sleep_calls(port, 3, 400)
        assert sorted(r[0] for r in res) == ["UNAVAILABLE", "ok", "ok"]
        assert p.metric("trellis_upstream_connections_total") == 1
        assert p.metric("istio_requests_total", request_protocol="grpc", response_flags="UO",
                        grpc_response_status="14") == 1
    finally:
        app.close()


# ---- PERMISSIVE: HTTP/2 detected in cleartext and negotiated over mTLS on one port ----

def test_permissive_listener_detects_h2c_and_h2_over_mtls(proxies, certs):
    be = H1Backend(free_port())
    try:
        port = free_port()
        cfg = simple_config(port, be.port, tls={"mode": "PERMISSIVE", "context": "id"})
        cfg["tls"] = [{"name": "id", "cert": certs["server_cert"], "key": certs["server_key"],
                       "ca": certs["ca"], "trust_domain": "cluster.local"}]
        p = proxies(cfg)
        import subprocess
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                            "%{http_code} %{http_version}", f"http://127.0.0.1:{port}/plain"],
                           capture_output=True, timeout=20)
        assert r.stdout == b"200 2", r.stderr
        r = subprocess.run(["curl", "-sS", "--http2", "-k", "--cert", certs["client_cert"],
                            "--key", certs["client_key"], "-o", "/dev/null", "-w",
                            "%{http_code} %{http_version}", f"https://127.0.0.1:{port}/mtls"],
                           capture_output=True, timeout=20)
        assert r.stdout == b"200 2", r.stderr
        assert p.metric("istio_requests_total", request_protocol="http/2",
                        connection_security_policy="none") == 1
        assert p.metric("istio_requests_total", request_protocol="http/2",
                        connection_security_policy="mutual_tls") == 1
    finally:
        be.close()
