"""Route path rewrite (route `rewrite.prefix`, docs/config.md), the same for
HTTP/1.1 clients (the byte path) and HTTP/2 clients (streams): a prefix route
swaps the matched prefix, an exact or regex route the whole path (the query
stays), at any path length the limits allow."""
import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port, sanitizer_checked  # noqa: E402
from h2util import H2Client  # noqa: E402


def config(port, backend_port, regex=False):
    cfg = {
        "limits": {"max_request_line": 32768},
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [
                {"name": "exact", "match": {"path": {"exact": "/old"}}, "cluster": "b",
                 "rewrite": {"prefix": "/new/place"}},
                {"name": "prefix", "match": {"path": {"prefix": "/api/"}}, "cluster": "b",
                 "rewrite": {"prefix": "/v2/"}},
                {"name": "rest", "match": {"path": {"prefix": "/"}}, "cluster": "b"},
            ]}]}],
        "clusters": [{"name": "b", "endpoints": [{"address": f"127.0.0.1:{backend_port}"}]}],
    }
    if regex:
        cfg["route_tables"][0]["virtual_hosts"][0]["routes"].insert(0, {
            "name": "regex", "match": {"path": {"regex": "/u/[0-9]+"}}, "cluster": "b",
            "rewrite": {"prefix": "/user"}})
    return cfg


def h1_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def h2_get(port, path):
    c = H2Client(port)
    try:
        return c.get(path).status
    finally:
        c.close()


LONG = "/api/" + "a" * 10000  # longer than the 8 KiB the rewrite once had room for

CASES = [
    ("/old", "/new/place"),
    ("/old?a=b&c=d", "/new/place?a=b&c=d"),
    ("/api/items?id=7", "/v2/items?id=7"),
    ("/other/api/x", "/other/api/x"),
]


def check(port, backend, client, cases):
    get = h1_get if client == "http1" else h2_get
    for sent, want in cases:
        before = len(backend.requests)
        assert get(port, sent) == 200, sent[:64]
        assert len(backend.requests) == before + 1
        got = backend.requests[-1]["path"]
        assert got == want, (sent[:64], got[:64])


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_path_rewrite(proxies, backend, client):
    port = free_port()
    proxies(config(port, backend.port))
    check(port, backend, client, CASES)


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_regex_route_rewrite_replaces_path(proxies, backend, client):
    port = free_port()
    proxies(config(port, backend.port, regex=True))
    check(port, backend, client, [("/u/42", "/user"), ("/u/42?x=1", "/user?x=1"),
                                  ("/api/x", "/v2/x")])


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_long_path_prefix_rewrite(proxies, backend, client):
    port = free_port()
    proxies(config(port, backend.port))
    check(port, backend, client, [(LONG + "?q", "/v2/" + "a" * 10000 + "?q"),
                                  ("/api/" + "b" * 30000, "/v2/" + "b" * 30000)])


@pytest.fixture
def checked(proxies):
    """Proxies whose logs must hold no sanitizer report (an ASan build)."""
    yield from sanitizer_checked(proxies)


def regex_config(port, backend_port):
    """rewrite.regex (Istio's uriRegexRewrite): every match in the path
    replaced, capture groups by \\N, the query kept."""
    cfg = config(port, backend_port)
    routes = cfg["route_tables"][0]["virtual_hosts"][0]["routes"]
    routes[0:0] = [
        {"name": "swap", "match": {"path": {"prefix": "/v1/"}}, "cluster": "b",
         "rewrite": {"regex": "^/v1/([a-z]+)/([0-9]+)", "substitution": "/\\2/\\1"}},
        {"name": "every", "match": {"path": {"prefix": "/banana"}}, "cluster": "b",
         "rewrite": {"regex": "a", "substitution": "o$\\\\"}},
        {"name": "grow", "match": {"path": {"prefix": "/grow"}}, "cluster": "b",
         "rewrite": {"regex": "x", "substitution": "xxxxxxxxxxxxxxxx"}},
    ]
    return cfg


@pytest.mark.parametrize("client", ["http1", "http2"])
def test_regex_rewrite(checked, backend, client):
    port = free_port()
    checked(regex_config(port, backend.port))
    check(port, backend, client, [
        ("/v1/users/42", "/42/users"),
        ("/v1/users/42/orders?x=1&y=/v1/a/2", "/42/users/orders?x=1&y=/v1/a/2"),
        # every match, "$" and an escaped backslash taken literally
        ("/banana", "/bo$\\no$\\no$\\"),
        ("/grow" + "x" * 100, "/grow" + "x" * 1600),
    ])
    # A rewrite past the proxy's room for it (8 KiB) is refused, never cut.
    get = h1_get if client == "http1" else h2_get
    before = len(backend.requests)
    assert get(port, "/grow" + "x" * 1000) == 500
    assert len(backend.requests) == before


def test_regex_rewrite_refused_at_load(checked, backend):
    for rewrite, field, why in [
            ({"regex": "([a-z]+"}, "rewrite.regex", "go together"),
            ({"regex": "(a)", "substitution": "\\2"}, "rewrite.regex", "1 capture group"),
            ({"regex": "(a)", "substitution": "\\q"}, "rewrite.regex", "a backslash must"),
            ({"regex": "([a-z]+", "substitution": "x"}, "rewrite.regex", "invalid regex"),
            ({"regex": "a", "substitution": "b", "prefix": "/x"}, "rewrite.regex", "one of")]:
        cfg = config(free_port(), backend.port)
        cfg["route_tables"][0]["virtual_hosts"][0]["routes"][0]["rewrite"] = rewrite
        p = checked(cfg, start=False)
        p.start(wait=False)
        assert p.proc.wait(timeout=10) != 0
        log = p.read_log()
        assert f"routes[0].{field}" in log and why in log, (rewrite, log[-400:])
