"""Opaque TCP proxying: byte integrity, half-close, server-first protocols on
`auto` listeners, TCP over mTLS between two proxies, and the Istio TCP metrics."""
import hashlib
import os
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port  # noqa: E402

TD = "cluster.local"
CLIENT_ID = f"spiffe://{TD}/ns/default/sa/client"
SERVER_ID = f"spiffe://{TD}/ns/default/sa/server"
BANNER = b"220 trellis-test ESMTP ready\r\n"


class TcpServer:
    """Threaded TCP server on 127.0.0.1; `mode` picks the behaviour per connection:
    echo      echo everything until EOF, then close
    reply     read until EOF, then send "got <n> bytes <sha256>\\n" and close
    banner    send BANNER first, then echo until EOF
    """

    def __init__(self, mode="echo"):
        self.mode = mode
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.connections = 0
        self.received = []  # total bytes received per finished connection
        self.errors = []
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        total = 0
        h = hashlib.sha256()
        try:
            c.settimeout(20)
            if self.mode == "banner":
                c.sendall(BANNER)
            while True:
                data = c.recv(65536)
                if not data:
                    break
                total += len(data)
                h.update(data)
                if self.mode in ("echo", "banner"):
                    c.sendall(data)
            if self.mode == "reply":
                c.sendall(f"got {total} bytes {h.hexdigest()}\n".encode())
            c.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.errors.append(repr(e))
        finally:
            c.close()
            self.received.append(total)

    def wait_finished(self, n, timeout=5.0):
        """The byte counts of the first n finished connections."""
        deadline = time.time() + timeout
        while len(self.received) < n and time.time() < deadline:
            time.sleep(0.01)
        return self.received

    def close(self):
        self.stopping = True
        self.sock.close()


@pytest.fixture
def tcp_server():
    started = []

    def make(mode="echo"):
        s = TcpServer(mode)
        started.append(s)
        return s

    yield make
    for s in started:
        s.close()


def tcp_config(port, upstream_port, protocol="tcp", **listener_extra):
    listener = {"name": "tcp", "address": f"127.0.0.1:{port}", "protocol": protocol,
                "tcp_cluster": "echo"}
    listener.update(listener_extra)
    return {
        "node": {"workload": "echo", "namespace": "default",
                 "service": "echo.default.svc.cluster.local"},
        "listeners": [listener],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "all", "match": {"path": {"prefix": "/"}},
                        "direct_response": {"status": 200, "body": "http\n"}}]}]}],
        "clusters": [{"name": "echo", "service": "echo.default.svc.cluster.local",
                      "workload": "echo", "namespace": "default",
                      "endpoints": [{"address": f"127.0.0.1:{upstream_port}"}]}],
    }


def recv_all(s, timeout=20, reset_ok=False):
    """Read until EOF (or, with reset_ok, a reset); returns the bytes."""
    s.settimeout(timeout)
    out = bytearray()
    while True:
        try:
            chunk = s.recv(1 << 16)
        except ConnectionResetError:
            if not reset_ok:
                raise
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


def roundtrip(port, payload):
    """Send payload while reading the echo concurrently; half-close; return all bytes read."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        got = []

        def reader():
            got.append(recv_all(s))

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(30)
        assert not t.is_alive(), "no EOF from the proxy"
        return got[0]


def recv_exact(s, n, timeout=5):
    s.settimeout(timeout)
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def wait_metric(proxy, name, target, timeout=3.0, **labels):
    """Value of a metric once it reaches target (TCP series are recorded at close)."""
    deadline = time.time() + timeout
    v = proxy.metric(name, **labels)
    while v < target and time.time() < deadline:
        time.sleep(0.05)
        v = proxy.metric(name, **labels)
    return v


# ---------------------------------------------------------------- tests

def test_bytes_roundtrip_1mib(proxies, tcp_server):
    srv = tcp_server("echo")
    port = free_port()
    p = proxies(tcp_config(port, srv.port))
    payload = os.urandom(1 << 20)
    got = roundtrip(port, payload)
    assert len(got) == len(payload)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert srv.connections == 1
    assert wait_metric(p, "istio_tcp_connections_closed_total", 1) == 1
    assert srv.errors == []


def test_half_close(proxies, tcp_server):
    srv = tcp_server("reply")
    port = free_port()
    p = proxies(tcp_config(port, srv.port))
    payload = os.urandom(200_000)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        # The server answers only after it has seen our EOF, through the proxy.
        reply = recv_all(s, timeout=10)
    expected = f"got {len(payload)} bytes {hashlib.sha256(payload).hexdigest()}\n".encode()
    assert reply == expected
    assert srv.wait_finished(1) == [len(payload)]

    # received = client -> upstream bytes, sent = upstream -> client bytes.
    assert wait_metric(p, "istio_tcp_connections_closed_total", 1,
                       reporter="destination") == 1
    assert p.metric("istio_tcp_connections_opened_total", reporter="destination") == 1
    assert p.metric("istio_tcp_received_bytes_total", reporter="destination",
                    request_protocol="tcp") == len(payload)
    assert p.metric("istio_tcp_sent_bytes_total", reporter="destination",
                    request_protocol="tcp") == len(expected)


def test_tcp_metrics_count_connections_and_bytes(proxies, tcp_server):
    srv = tcp_server("echo")
    port = free_port()
    p = proxies(tcp_config(port, srv.port))
    sizes = [1, 1000, 65536, 300_001]
    for n in sizes:
        data = os.urandom(n)
        assert roundtrip(port, data) == data
    total = sum(sizes)
    assert wait_metric(p, "istio_tcp_connections_closed_total", len(sizes)) == len(sizes)
    assert p.metric("istio_tcp_connections_opened_total") == len(sizes)
    assert p.metric("istio_tcp_received_bytes_total") == total
    assert p.metric("istio_tcp_sent_bytes_total") == total
    assert p.metric("istio_tcp_connections_opened_total",
                    destination_service="echo.default.svc.cluster.local",
                    connection_security_policy="none") == len(sizes)
    # An open connection is counted as opened before it closes.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"
        assert wait_metric(p, "istio_tcp_connections_opened_total",
                           len(sizes) + 1) == len(sizes) + 1
        assert p.metric("istio_tcp_connections_closed_total") == len(sizes)
    assert wait_metric(p, "istio_tcp_connections_closed_total", len(sizes) + 1) == len(sizes) + 1
    assert p.metric("istio_requests_total") == 0


def test_server_first_protocol_on_auto_listener(proxies, tcp_server):
    srv = tcp_server("banner")
    port = free_port()
    cfg = tcp_config(port, srv.port, protocol="auto", route_table="rt",
                     timeouts={"detect": "100ms"})
    p = proxies(cfg)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        t0 = time.time()
        banner = recv_exact(s, len(BANNER), timeout=3)
        waited = time.time() - t0
        assert banner == BANNER
        assert 0.08 <= waited < 1.5, waited
        s.sendall(b"EHLO client\r\n")
        assert recv_exact(s, 13) == b"EHLO client\r\n"
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s, timeout=5) == b""
    assert srv.connections == 1
    assert wait_metric(p, "istio_tcp_connections_closed_total", 1) == 1
    assert p.metric("istio_tcp_sent_bytes_total") == len(BANNER) + 13
    assert p.metric("istio_tcp_received_bytes_total") == 13

    # The same listener still speaks HTTP to a client that talks first.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        resp = recv_all(s, timeout=5)
    assert resp.startswith(b"HTTP/1.1 200"), resp
    assert resp.endswith(b"http\n")
    assert srv.connections == 1


def tls_ctx(cert, key, ca):
    return {"name": "mesh", "cert": cert, "key": key, "ca": ca, "trust_domain": TD}


class DelayRelay:
    """Plain TCP relay that waits `delay` seconds after accepting before it
    connects onwards, then copies bytes both ways (half-close preserved)."""

    def __init__(self, target_port, delay):
        self.target_port, self.delay = target_port, delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(c,), daemon=True).start()

    def _relay(self, c):
        time.sleep(self.delay)
        try:
            u = socket.create_connection(("127.0.0.1", self.target_port), timeout=20)
        except OSError:
            c.close()
            return

        def pipe(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=pipe, args=(u, c), daemon=True)
        t.start()
        pipe(c, u)
        t.join(30)
        c.close()
        u.close()

    def close(self):
        self.sock.close()


def mtls_pair(proxies, certs, upstream_port, b_target_port=None):
    """A (outbound tcp, mTLS cluster to b_target_port or B) and B (inbound tcp STRICT)."""
    a_port, b_port = free_port(), free_port()
    b_cfg = {
        "drain_timeout": "1s",
        "node": {"workload": "echo", "namespace": "default", "principal": SERVER_ID,
                 "service": "echo.default.svc.cluster.local"},
        "tls": [tls_ctx(certs["server_cert"], certs["server_key"], certs["ca"])],
        "listeners": [{"name": "in", "address": f"127.0.0.1:{b_port}", "direction": "inbound",
                       "protocol": "tcp", "tcp_cluster": "echo",
                       "tls": {"mode": "STRICT", "context": "mesh"}}],
        "clusters": [{"name": "echo", "endpoints": [{"address": f"127.0.0.1:{upstream_port}"}]}],
    }
    target = b_target_port(b_port) if b_target_port else b_port
    a_cfg = {
        "drain_timeout": "1s",
        "node": {"workload": "client", "namespace": "default", "principal": CLIENT_ID},
        "tls": [tls_ctx(certs["client_cert"], certs["client_key"], certs["ca"])],
        "listeners": [{"name": "out", "address": f"127.0.0.1:{a_port}", "direction": "outbound",
                       "protocol": "tcp", "tcp_cluster": "echo-remote"}],
        "clusters": [{"name": "echo-remote", "service": "echo.default.svc.cluster.local",
                      "workload": "echo", "namespace": "default",
                      "tls": {"context": "mesh", "server_ids": [SERVER_ID]},
                      "endpoints": [{"address": f"127.0.0.1:{target}"}]}],
    }
    b = proxies(b_cfg, "B")
    a = proxies(a_cfg, "A")
    return a, b, a_port, b_port


def test_tcp_over_mtls(proxies, tcp_server, certs):
    srv = tcp_server("echo")
    a, b, a_port, b_port = mtls_pair(proxies, certs, srv.port)
    payload = os.urandom(1 << 20)
    # Full round trip without relying on half-close (see the test below): read
    # exactly the echo, then close.
    with socket.create_connection(("127.0.0.1", a_port), timeout=20) as s:
        got = []
        t = threading.Thread(target=lambda: got.append(recv_exact(s, len(payload), timeout=20)))
        t.start()
        s.sendall(payload)
        t.join(30)
    assert len(got[0]) == len(payload)
    assert hashlib.sha256(got[0]).digest() == hashlib.sha256(payload).digest()

    # Plaintext straight to B is refused.
    with socket.create_connection(("127.0.0.1", b_port), timeout=5) as s:
        s.sendall(b"hello")
        assert recv_all(s, timeout=5, reset_ok=True) == b""
    assert srv.connections == 1

    assert wait_metric(b, "istio_tcp_connections_closed_total", 1, reporter="destination",
                       source_principal=CLIENT_ID,
                       connection_security_policy="mutual_tls") == 1, b.metrics()
    assert b.metric("istio_tcp_connections_opened_total", source_principal=CLIENT_ID,
                    connection_security_policy="mutual_tls") == 1
    assert b.metric("istio_tcp_received_bytes_total", connection_security_policy="mutual_tls") \
        == len(payload)
    assert b.metric("istio_tcp_sent_bytes_total", connection_security_policy="mutual_tls") \
        == len(payload)
    assert wait_metric(a, "istio_tcp_connections_closed_total", 1, reporter="source",
                       source_principal=CLIENT_ID,
                       destination_service="echo.default.svc.cluster.local") == 1, a.metrics()
    assert a.metric("istio_tcp_connections_opened_total", reporter="source") == 1
    assert a.metric("istio_tcp_received_bytes_total", reporter="source") == len(payload)
    assert a.metric("istio_tcp_sent_bytes_total", reporter="source") == len(payload)
    assert wait_metric(b, "trellis_tls_plaintext_refused_total", 1) == 1
    assert b.metric("trellis_tls_handshake_errors_total") == 0
    assert a.metric("trellis_tls_handshake_errors_total") == 0


def test_tcp_over_mtls_half_close(proxies, tcp_server, certs):
    srv = tcp_server("reply")
    relays = []

    def via_relay(b_port):
        # Delays A's upstream (TLS) connection so that the client's data and
        # FIN are both waiting in A's socket before A reads them.
        relays.append(DelayRelay(b_port, 0.3))
        return relays[0].port

    try:
        a, b, a_port, b_port = mtls_pair(proxies, certs, srv.port, b_target_port=via_relay)
        payload = os.urandom(5000)
        with socket.create_connection(("127.0.0.1", a_port), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            reply = recv_all(s, timeout=3)
        assert reply == f"got {len(payload)} bytes {hashlib.sha256(payload).hexdigest()}\n" \
            .encode()
    finally:
        for r in relays:
            r.close()


def test_tcp_source_metrics_keep_destination_principal(proxies, tcp_server, certs):
    srv = tcp_server("echo")
    a, b, a_port, b_port = mtls_pair(proxies, certs, srv.port)
    with socket.create_connection(("127.0.0.1", a_port), timeout=5) as s:
        s.sendall(b"x" * 100)
        assert recv_exact(s, 100) == b"x" * 100
    assert wait_metric(a, "istio_tcp_connections_closed_total", 1, reporter="source") == 1
    labels = {"reporter": "source", "destination_principal": SERVER_ID}
    assert a.metric("istio_tcp_connections_opened_total", **labels) == 1
    assert a.metric("istio_tcp_connections_closed_total", **labels) == 1, a.metrics()
    assert a.metric("istio_tcp_received_bytes_total", **labels) == 100
    assert a.metric("istio_tcp_sent_bytes_total", **labels) == 100
