"""The HTTP/1.1 upstream client (upstream/h1_client.h) behaves the same for
HTTP/1.1 clients (byte path) and HTTP/2 clients (streams): a server's
`Keep-Alive: timeout=N` keeps the pooled connection below N (a quarter, at
least 250 ms, earlier), so a request is not sent on a connection the server
is about to close."""
import os
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import ThreadedTCPServer, free_port, simple_config  # noqa: E402
from h2util import H2Client  # noqa: E402
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
