"""Consistent hashing (clusters[].lb ring_hash and maglev with hash_policy,
docs/config.md): a user (header, cookie, query parameter, client address)
stays on one endpoint while different users spread over all of them; a
cookie policy with a ttl sets the cookie when the request has none; two
proxies with the same endpoints in another order agree; an endpoint leaving
moves only its own users.

Backends answer with their name (test_endpoints.NamedBackend). Clients:
keep-alive HTTP/1.1 sockets, python h2 (HTTP/2 prior knowledge), curl.
"""
import http.client
import os
import socket
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port, sanitizer_checked  # noqa: E402
from h2util import H2Client  # noqa: E402
from test_dns import NAME, backends, dns, dns_config, get, until  # noqa: E402,F401 (fixtures)
from test_endpoints import addr, http_config, named  # noqa: E402,F401 (named: a fixture)


@pytest.fixture
def checked(proxies):
    """Proxies whose logs must be free of sanitizer reports at teardown
    (meaningful with TRELLIS_BIN from the ASan build)."""
    yield from sanitizer_checked(proxies)



def hash_config(port, backends, lb, hash_policy, **extra):
    cfg = http_config(port, [addr(b.port) for b in backends], lb=lb)
    cfg["clusters"][0]["hash_policy"] = hash_policy
    cfg["clusters"][0].update(extra)
    return cfg


class Conn:
    """One keep-alive HTTP/1.1 connection (optionally from source address
    src): get() -> (status, headers {lower name: [values]}, body)."""

    def __init__(self, port, src=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(src, 0) if src else None)
        self.f = self.sock.makefile("rb")

    def get(self, path="/", headers=()):
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
        status = int(self.f.readline().split()[1])
        hs = {}
        while True:
            line = self.f.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            hs.setdefault(k.strip().lower(), []).append(v.strip())
        body = self.f.read(int(hs.get("content-length", ["0"])[0])).decode()
        return status, hs, body

    def close(self):
        self.sock.close()


def sticky(conn, n, path="/", headers=()):
    """The backends n requests of one user reached."""
    return {conn.get(path, headers)[2] for _ in range(n)}


@pytest.mark.parametrize("lb", ["ring_hash", "maglev"])
def test_header_user_sticks_users_spread(checked, named, lb):
    bs = [named(f"b{i}") for i in range(3)]
    port = free_port()
    checked(hash_config(port, bs, lb, {"header": "x-user"}))
    c = Conn(port)
    try:
        # Each user stays on one endpoint for 200 requests.
        for u in ("alice", "bob"):
            assert len(sticky(c, 200, headers=[("X-User", u)])) == 1
        # 60 users reach all three endpoints, none gets them all.
        where = {}
        for u in range(60):
            got = sticky(c, 3, headers=[("x-user", f"user-{u}")])
            assert len(got) == 1
            where[u] = got.pop()
        spread = {b: list(where.values()).count(b) for b in ("b0", "b1", "b2")}
        assert all(5 <= n <= 40 for n in spread.values()), spread
        # Without the header: every request hashes at random, as Envoy does.
        assert len(sticky(c, 60)) == 3
    finally:
        c.close()


def test_cookie_generated_with_ttl_then_sticks(checked, named):
    bs = [named(f"b{i}") for i in range(3)]
    port = free_port()
    checked(hash_config(port, bs, "ring_hash",
                        {"cookie": {"name": "sticky", "path": "/", "ttl": "30s"}}))
    c = Conn(port)
    try:
        status, hs, first = c.get()
        assert status == 200
        [set_cookie] = hs["set-cookie"]
        name_value, *attrs = [a.strip() for a in set_cookie.split(";")]
        name, _, value = name_value.partition("=")
        assert name == "sticky" and len(value) == 16
        int(value, 16)
        assert sorted(attrs) == ["HttpOnly", "Max-Age=30", "Path=/"]
        # The cookie sent back keeps the user on the endpoint that answered
        # first, and is not set again.
        for _ in range(200):
            status, hs, body = c.get(headers=[("Cookie", f"a=1; sticky={value}")])
            assert (status, body) == (200, first)
            assert "set-cookie" not in hs
        # Other users' cookies spread over every endpoint.
        seen = {c.get(headers=[("Cookie", f"sticky=user{u}")])[2] for u in range(60)}
        assert seen == {"b0", "b1", "b2"}
    finally:
        c.close()
    # HTTP/2 clients get it too (a field after the upstream's), and keep to
    # the endpoint with it.
    h = H2Client(port)
    try:
        r = h.get("/")
        cookies = [v for k, v in r.headers if k == "set-cookie"]
        assert len(cookies) == 1 and cookies[0].startswith("sticky=")
        value = cookies[0].split(";")[0].split("=", 1)[1]
        bodies = {bytes(h.get("/", headers=[("cookie", f"sticky={value}")]).data)
                  for _ in range(200)}
        assert bodies == {bytes(r.data)}
    finally:
        h.close()


def test_session_cookie_and_curl_jar(checked, named, workdir):
    """ttl 0s: a session cookie (no Max-Age); curl's cookie jar carries it."""
    bs = [named(f"b{i}") for i in range(3)]
    port = free_port()
    checked(hash_config(port, bs, "maglev", {"cookie": {"name": "sid", "ttl": "0s"}}))
    jar = os.path.join(workdir, "jar")
    url = f"http://127.0.0.1:{port}/"
    args = ["curl", "-sS", "--max-time", "30", "-b", jar, "-c", jar, "-D", "-"]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=60).stdout
    line = [x for x in out.splitlines() if x.lower().startswith("set-cookie:")]
    assert len(line) == 1 and "Max-Age" not in line[0] and "HttpOnly" in line[0], out
    first = out.rsplit("\n", 1)[-1]
    for _ in range(20):
        args2 = ["curl", "-sS", "--max-time", "30", "-b", jar, "-c", jar]
        body = subprocess.run(args2 + [url] * 10, capture_output=True, text=True,
                              timeout=60).stdout
        assert body == first * 10


def test_query_parameter(checked, named):
    bs = [named(f"b{i}") for i in range(3)]
    port = free_port()
    checked(hash_config(port, bs, "maglev", {"query_param": "user"}))
    c = Conn(port)
    try:
        assert len(sticky(c, 200, path="/a?x=1&user=carol")) == 1
        # The first `user` counts, other parameters and the path do not.
        a = sticky(c, 3, path="/a?user=dave")
        assert sticky(c, 3, path="/b/c?z=9&user=dave&user=eve") == a
        seen = {sticky(c, 1, path=f"/?user=u{u}").pop() for u in range(60)}
        assert seen == {"b0", "b1", "b2"}
    finally:
        c.close()


def test_source_ip(checked, named):
    """useSourceIp: connections from one client address (any port) go to one
    endpoint; clients on other loopback addresses spread."""
    bs = [named(f"b{i}") for i in range(3)]
    port = free_port()
    checked(hash_config(port, bs, "ring_hash", {"source_ip": True}))
    got = {}
    for i in range(2, 42):
        src = f"127.0.0.{i}"
        names = set()
        for _ in range(5):  # a new connection (port) each time
            c = Conn(port, src)
            try:
                names |= sticky(c, 2)
            finally:
                c.close()
        assert len(names) == 1, (src, names)
        got[src] = names.pop()
    assert set(got.values()) == {"b0", "b1", "b2"}


def test_proxies_agree_and_leaving_endpoint_moves_only_its_users(checked, named):
    """Five endpoints, then four: each keeps its ring points (their number
    changes only when the count crosses a power of two, docs/config.md)."""
    bs = [named(f"b{i}") for i in range(5)]
    p1, p2 = free_port(), free_port()
    one = checked(hash_config(p1, bs, "ring_hash", {"header": "x-user"}), name="one")
    # Another proxy, the endpoints listed in another order.
    checked(hash_config(p2, list(reversed(bs)), "ring_hash", {"header": "x-user"}), name="two")
    users = [f"user-{u}" for u in range(120)]
    c1, c2 = Conn(p1), Conn(p2)
    try:
        before = {u: c1.get(headers=[("x-user", u)])[2] for u in users}
        assert {u: c2.get(headers=[("x-user", u)])[2] for u in users} == before
    finally:
        c2.close()
    gone = before[users[0]]
    left = [b for b in bs if b.name != gone]
    try:
        # The endpoint leaves (a partial update of the cluster's endpoints).
        status, body = one.update("clusters", "c", "endpoints",
                                [{"address": addr(b.port)} for b in left])
        assert status == 200, body
        c1.close()
        c1 = Conn(p1)
        after = {u: c1.get(headers=[("x-user", u)])[2] for u in users}
        assert gone not in after.values()
        moved = [u for u in users if before[u] != gone and after[u] != before[u]]
        assert moved == []
        assert sorted(u for u in users if after[u] != before[u]) == \
            sorted(u for u in users if before[u] == gone)
    finally:
        c1.close()


def test_source_ip_for_tcp_connections(checked, named):
    """A tcp listener's cluster hashes the client address too (HTTP/1.1
    carried as opaque bytes to name the backend)."""
    bs = [named(f"b{i}") for i in range(3)]
    port = free_port()
    cfg = hash_config(port, bs, "maglev", {"source_ip": True})
    cfg["listeners"][0] = {"name": "tcp", "address": f"127.0.0.1:{port}", "protocol": "tcp",
                           "tcp_cluster": "c"}
    del cfg["route_tables"]
    checked(cfg)
    got = {}
    for i in range(2, 32):
        src = f"127.0.0.{i}"
        names = set()
        for _ in range(3):
            c = Conn(port, src)
            try:
                names.add(c.get()[2])
            finally:
                c.close()
        assert len(names) == 1, (src, names)
        got[src] = names.pop()
    assert set(got.values()) == {"b0", "b1", "b2"}


def test_endpoints_by_dns_name(checked, dns, backends):
    """A consistent-hash cluster whose endpoints are a DNS name: the table is
    built over the resolved addresses; when an answer drops one, only its
    users move."""
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]
    bs = backends(ips)
    port = bs[ips[0]].port
    dns.set(NAME, a=ips)
    dns.ttl = 1
    lp = free_port()
    cfg = dns_config(lp, dns, [f"{NAME}:{port}"], cluster_dns={"refresh": "1s"})
    cfg["clusters"][0].update({"lb": "maglev", "hash_policy": {"header": "x-user"}})
    checked(cfg)
    conn = http.client.HTTPConnection("127.0.0.1", lp, timeout=5)

    def where(user):
        n = {ip: len(b.requests) for ip, b in bs.items()}
        conn.request("GET", "/", headers={"x-user": user})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        return [ip for ip, b in bs.items() if len(b.requests) > n[ip]][0]

    try:
        assert until(lambda: get(conn)[0] == 200)
        users = [f"user-{u}" for u in range(60)]
        before = {u: where(u) for u in users}
        assert all(where(u) == before[u] for u in users[:10])
        assert set(before.values()) == set(ips)
        gone = before[users[0]]
        dns.set(NAME, a=[ip for ip in ips if ip != gone])
        assert until(lambda: where(users[0]) != gone, timeout=10)
        after = {u: where(u) for u in users}
        assert gone not in after.values()
        moved_others = [u for u in users if before[u] != gone and after[u] != before[u]]
        assert len(moved_others) <= 3, moved_others  # Maglev: nearly none
    finally:
        conn.close()
