"""The request-header policy (filter/headers.h) is one for HTTP/1.1 clients
(the byte path) and HTTP/2 clients (streams): X-Forwarded-For joined and
appended, X-Forwarded-Proto set, X-Request-Id kept or made, hop-by-hop and
mesh-internal headers removed, Host rewritten; nothing silently truncated."""
import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port  # noqa: E402
from h2util import H2Client  # noqa: E402


def config(port, backend_port):
    return {
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [
                {"name": "host", "match": {"path": {"prefix": "/host"}}, "cluster": "b",
                 "rewrite": {"host": "rewritten.example"}},
                {"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": "b"}]}]}],
        "clusters": [{"name": "b", "endpoints": [{"address": f"127.0.0.1:{backend_port}"}]}],
    }


def h1_send(port, path, headers):
    lines = [f"GET {path} HTTP/1.1", "Host: orig.example"]
    lines += [f"{k}: {v}" for k, v in headers]
    raw = ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def h2_send(port, path, headers):
    c = H2Client(port)
    try:
        return c.get(path, headers=headers, authority="orig.example").status
    finally:
        c.close()


SEND = {"http1": h1_send, "http2": h2_send}


def upstream_headers(backend):
    return backend.requests[-1]["headers"]


def values(hdrs, name):
    return [v for k, v in hdrs if k == name]


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_policy(proxies, backend, client):
    port = free_port()
    proxies(config(port, backend.port))
    send = SEND[client]
    assert send(port, "/a", [("x-forwarded-for", "10.0.0.1"), ("x-forwarded-for", "10.0.0.2"),
                             ("x-forwarded-proto", "gopher"), ("x-request-id", "rid-1"),
                             ("x-request-id", "rid-2"), ("trellis-orig-proto", "HTTP/2"),
                             ("keep-alive", "timeout=5"), ("x-app", "kept")]) == 200
    h = upstream_headers(backend)
    assert values(h, "x-forwarded-for") == ["10.0.0.1, 10.0.0.2, 127.0.0.1"]
    assert values(h, "x-forwarded-proto") == ["http"]
    assert values(h, "x-request-id") == ["rid-1"]
    assert values(h, "trellis-orig-proto") == []
    assert values(h, "keep-alive") == []
    assert values(h, "x-app") == ["kept"]
    assert values(h, "host") == ["orig.example"]
    # A request id that cannot be one (over 36 bytes) is replaced.
    assert send(port, "/b", [("x-request-id", "r" * 37)]) == 200
    rid = values(upstream_headers(backend), "x-request-id")
    assert len(rid) == 1 and len(rid[0]) == 36 and rid[0] != "r" * 36
    # Host rewrite.
    assert send(port, "/host", []) == 200
    assert values(upstream_headers(backend), "host") == ["rewritten.example"]


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_long_x_forwarded_for_is_not_truncated(proxies, backend, client):
    port = free_port()
    proxies(config(port, backend.port))
    hops = [f"10.0.{i // 256}.{i % 256}" for i in range(400)]  # about 4.5 KiB joined
    sent = [("x-forwarded-for", ", ".join(hops[:200])), ("x-forwarded-for", ", ".join(hops[200:]))]
    assert SEND[client](port, "/", sent) == 200
    assert values(upstream_headers(backend), "x-forwarded-for") == [
        ", ".join(hops) + ", 127.0.0.1"]
