"""The HTTP/1.1 upstream client (upstream/h1_client.h, upstream/h1_body.h)
behaves the same for HTTP/1.1 clients (byte path) and HTTP/2 clients
(streams): a server's `Keep-Alive: timeout=N` keeps the pooled connection
below N (a quarter, at least 250 ms, earlier), so a request is not sent on a
connection the server is about to close; a response body delimited by the
end of the connection arrives whole, also across an mTLS hop whose peer
closes without a TLS close_notify."""
import os
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import ThreadedTCPServer, free_port, simple_config  # noqa: E402
from h2util import H2Client  # noqa: E402
from test_protocol_matrix import SERVER_ID, _config, _node, _tls_ctx  # noqa: E402
from test_http1_proxy import RawServer, read_head  # noqa: E402


class KeepAliveServer(ThreadedTCPServer):
    """HTTP/1.1 server that answers every request with `Keep-Alive:
    timeout=2` and never closes a connection itself; records, per
    connection, when the peer closed it (seconds after its last response)."""

    def __init__(self):
        self.closed_after = []
        super().__init__()

    def serve(self, c):
        c.settimeout(10)
        buf = b""
        last = time.monotonic()
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    self.closed_after.append(time.monotonic() - last)
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, _, buf = buf.partition(b"\r\n\r\n")
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                              b"Keep-Alive: timeout=2\r\n\r\nok")
                    last = time.monotonic()
        except OSError:
            pass
        finally:
            c.close()


def h1_get(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def h2_get(port):
    c = H2Client(port)
    try:
        return c.get("/").status
    finally:
        c.close()


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_server_keep_alive_timeout_is_honoured(proxies, client):
    srv = KeepAliveServer()
    try:
        port = free_port()
        proxies(simple_config(port, srv.port))
        assert (h1_get if client == "http1" else h2_get)(port) == 200
        deadline = time.monotonic() + 4
        while not srv.closed_after and time.monotonic() < deadline:
            time.sleep(0.05)
        # timeout=2 s: the pool lets it go 500 ms earlier (default idle: 50 s).
        assert len(srv.closed_after) == 1, srv.closed_after
        assert 1.2 < srv.closed_after[0] < 1.9, srv.closed_after
    finally:
        srv.close()


def test_keep_alive_race_resent_for_http2_clients(proxies):
    """The keep-alive race, streams side: each pooled connection is closed by
    the server when the next request arrives on it, unanswered; every request
    still succeeds, re-sent once on a fresh connection (the same logic as the
    byte path's test_http1_proxy.py::test_keepalive_race_deterministic_resend)."""
    def close_on_second(c, f, srv):
        h = read_head(f)
        if h is None:
            return
        srv.records.append(h[0])
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        read_head(f)  # the next request on this connection: close without answering

    srv = RawServer(close_on_second)
    try:
        port = free_port()
        p = proxies(simple_config(port, srv.port))
        c = H2Client(port)
        try:
            for i in range(10):
                r = c.get(f"/d{i}")
                assert (r.status, bytes(r.data)) == (200, b"ok"), i
        finally:
            c.close()
        assert srv.records == [f"GET /d{i} HTTP/1.1" for i in range(10)]
        deadline = time.monotonic() + 3
        while p.metric("trellis_upstream_requests_resent_total") != 9 and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        assert p.metric("trellis_upstream_requests_resent_total") == 9
        assert srv.connections == 10
    finally:
        srv.close()


UNTIL_CLOSE_BODY = bytes(range(256)) * 800  # 200 KiB, many reads and writes


def until_close_server():
    """Answers each request without a length or chunking: the body ends when
    the server closes the connection (RFC 9112 6.3, the last rule)."""
    def answer(c, f, srv):
        h = read_head(f)
        if h is None:
            return
        srv.records.append(h[0])
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  b"Connection: close\r\n\r\n")
        for i in range(0, len(UNTIL_CLOSE_BODY), 65536):
            c.sendall(UNTIL_CLOSE_BODY[i:i + 65536])
            time.sleep(0.01)  # separate reads upstream
        c.close()

    return RawServer(answer)


def h1_get_body(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /uc HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_until_close_body(proxies, client):
    """The byte path relays it verbatim and closes the client connection at
    its end; a stream ends the HTTP/2 stream (END_STREAM) with all of it."""
    srv = until_close_server()
    try:
        port = free_port()
        p = proxies(simple_config(port, srv.port))
        if client == "http1":
            status, body = h1_get_body(port)
        else:
            c = H2Client(port)
            try:
                r = c.get("/uc")
                assert r.ended and r.reset is None, r.reset
                status, body = r.status, bytes(r.data)
            finally:
                c.close()
        assert status == 200
        assert body == UNTIL_CLOSE_BODY
        assert srv.records == ["GET /uc HTTP/1.1"]
        assert p.metric("istio_requests_total", response_code="200", response_flags="-") == 1
    finally:
        srv.close()


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_until_close_body_across_mtls_hop(proxies, certs, client):
    """client -> A (cluster protocol http1 + mTLS) -> B (inbound) -> server.
    B relays the body and closes the hop's connection without a TLS
    close_notify, as a trellis session ends; A's end of that connection is the
    end of the body for both of A's paths (the streams used to reset the
    HTTP/2 client's stream there, the byte path did not)."""
    srv = until_close_server()
    try:
        a_port, b_port = free_port(), free_port()
        inbound = {"direction": "inbound", "tls": {"mode": "STRICT", "context": "mesh"}}
        svc = {"service": "server.default.svc.cluster.local", "workload": "server",
               "namespace": "default"}
        b = _config([("in", b_port, "local", inbound)],
                    [dict(svc, name="local", protocol="http1",
                          endpoints=[{"address": f"127.0.0.1:{srv.port}"}])],
                    tls=[_tls_ctx(certs["server_cert"], certs["server_key"], certs["ca"])],
                    node=dict(_node("server"), service=svc["service"]))
        a = _config([("out", a_port, "hop", {"direction": "outbound"})],
                    [dict(svc, name="hop", protocol="http1",
                          tls={"context": "mesh", "server_ids": [SERVER_ID]},
                          endpoints=[{"address": f"127.0.0.1:{b_port}"}])],
                    tls=[_tls_ctx(certs["client_cert"], certs["client_key"], certs["ca"])],
                    node=_node("client"))
        proxies(b, name="B")
        pa = proxies(a, name="A")
        if client == "http1":
            status, body = h1_get_body(a_port)
        else:
            c = H2Client(a_port)
            try:
                r = c.get("/uc")
                assert r.ended and r.reset is None, r.reset
                status, body = r.status, bytes(r.data)
            finally:
                c.close()
        assert status == 200
        assert len(body) == len(UNTIL_CLOSE_BODY)
        assert body == UNTIL_CLOSE_BODY
        assert srv.records == ["GET /uc HTTP/1.1"]
        assert pa.metric("istio_requests_total", response_code="200", response_flags="-") == 1
    finally:
        srv.close()
