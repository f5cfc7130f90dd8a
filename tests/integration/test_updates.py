"""Configuration updates keep what did not change: pooled and mTLS upstream
connections of unchanged clusters, the connections to endpoints that remain
when an endpoint set changes, TLS contexts whose files are unchanged; and
settings that need a restart are reported, not silently ignored.

Handshakes are counted by the proxy (trellis_upstream_tls_handshakes_total)
and connections by the backends and the inbound proxy."""
import http.client
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from conftest import RecordingBackend, free_port  # noqa: E402
from test_lifecycle import wait_generation  # noqa: E402
from test_mtls import config_a, config_b  # noqa: E402


def extra_route(cfg, name):
    """The same configuration with one more route in front (a local answer)."""
    vh = cfg["route_tables"][0]["virtual_hosts"][0]
    vh["routes"].insert(0, {"name": name, "match": {"path": {"exact": f"/{name}"}},
                            "direct_response": {"status": 204}})
    return cfg


def reload(proxy, cfg):
    gen = proxy.metric("trellis_config_generation")
    proxy.write_config(cfg)
    proxy.signal(signal.SIGHUP)
    # The proxy also polls its files: when the poll sees the new file before
    # the signal arrives, both load it (the second the same text), and the
    # generation moves by two. Either way the new configuration is in force.
    assert wait_generation(proxy, gen + 1) >= gen + 1


def keepalive_get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status


def test_reload_keeps_pooled_mtls_connection(proxies, certs, backend):
    a_port, b_port = free_port(), free_port()
    cfg_b = config_b(b_port, backend.port, certs["server_cert"], certs["server_key"], certs["ca"])
    b = proxies(cfg_b, "B")
    cfg_a = config_a(a_port, b_port, certs["client_cert"], certs["client_key"], certs["ca"])
    cfg_a["workers"] = 1
    a = proxies(cfg_a, "A")
    conn = http.client.HTTPConnection("127.0.0.1", a_port, timeout=5)
    assert keepalive_get(conn, "/one") == 200
    handshakes = a.metric("trellis_upstream_tls_handshakes_total")
    upstream_conns = a.metric("trellis_upstream_connections_total")
    inbound_conns = b.metric("trellis_downstream_connections_total")
    assert handshakes == 1 and upstream_conns == 1

    # A route added, a second time one removed again: the cluster and its TLS
    # context are unchanged, so the pooled mTLS connection carries on.
    for k in range(2):
        reload(a, extra_route(dict(cfg_a), f"extra{k}") if k == 0 else cfg_a)
        assert keepalive_get(conn, f"/after-{k}") == 200
    conn.close()
    assert a.metric("trellis_upstream_tls_handshakes_total") == handshakes
    assert a.metric("trellis_upstream_connections_total") == upstream_conns
    assert b.metric("trellis_downstream_connections_total") == inbound_conns
    assert "1 of 1 TLS contexts kept" in a.read_log()


def h2load(port, *args):
    """Start h2load over HTTP/1.1 against the proxy; returns the process."""
    import subprocess
    return subprocess.Popen(["h2load", "--h1", *args, f"http://127.0.0.1:{port}/load"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def h2load_result(proc):
    """(succeeded, failed + errored, non-2xx, text) from h2load's summary."""
    import re
    out, _ = proc.communicate(timeout=60)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert m and codes, out
    return int(m.group(4)), int(m.group(5)) + int(m.group(6)), \
        int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4)), out


class LoadedHop:
    """A warmed mTLS hop A -> B -> nginx for the under-load tests. A (one
    worker, so its pool is one) has a second cluster, "other", that the tests
    change while h2load runs. The warm-up runs 8 clients at full speed, so the
    pool holds as many upstream connections as 8 clients can ever need at
    once; the handshake and inbound connection counts are taken after it."""

    def __init__(self, proxies, certs, nginx, other):
        self.certs, self.other = certs, other
        self.a_port, self.b_port = free_port(), free_port()
        backend = nginx('location / { return 200 "ok\\n"; }')
        self.b = proxies(config_b(self.b_port, backend.port, certs["server_cert"],
                                  certs["server_key"], certs["ca"]), "B")
        self.a = proxies(self.config_a(), "A")
        ok, bad, non2xx, out = h2load_result(h2load(self.a_port, "-c", "8", "-n", "4000"))
        assert bad == 0 and non2xx == 0 and ok == 4000, out
        self.handshakes = self.a.metric("trellis_upstream_tls_handshakes_total")
        self.inbound_conns = self.b.metric("trellis_downstream_connections_total")

    def config_a(self, other_ip="127.0.0.1", route=None):
        cfg = config_a(self.a_port, self.b_port, self.certs["client_cert"],
                       self.certs["client_key"], self.certs["ca"])
        cfg["workers"] = 1
        cfg["clusters"].append({"name": "other", "endpoints": [
            {"address": f"{other_ip}:{self.other.port}"}]})
        return extra_route(cfg, route) if route else cfg

    def run(self, change, changes, interval):
        """h2load at 8 clients x 125 req/s = 1000 req/s for 6 s while
        change(k) runs `changes` times; asserts zero failures and zero new
        TLS handshakes or inbound connections."""
        load = h2load(self.a_port, "-c", "8", "--rps", "125", "-D", "6")
        started = time.time()
        for k in range(changes):
            time.sleep(interval)
            change(k)
        ok, failures, non2xx, out = h2load_result(load)
        print(f"{changes} changes under load: {ok} ok ({ok / (time.time() - started):.0f} req/s), "
              f"{failures} failed")
        assert failures == 0 and non2xx == 0, out
        assert ok > 4000, out
        assert self.a.metric("trellis_upstream_tls_handshakes_total") == self.handshakes
        assert self.b.metric("trellis_downstream_connections_total") == self.inbound_conns


def test_reload_under_steady_load_keeps_mtls_connections(proxies, certs, nginx):
    """Reloads under steady load over pooled mTLS: zero failed requests and
    zero new upstream TLS handshakes, since the cluster did not change."""
    other = RecordingBackend()
    try:
        hop = LoadedHop(proxies, certs, nginx, other)
        # Each reload adds a route and moves "other" to another address.
        hop.run(lambda k: reload(hop.a, hop.config_a(f"127.0.0.{2 + k % 2}", f"r{k}")),
                changes=8, interval=0.6)
        # 8 reloads, or more when the file poll and the signal both load one
        assert hop.a.metric("trellis_config_reloads_total", result="ok") >= 8
        assert hop.a.metric("trellis_config_reloads_total", result="rejected") == 0
    finally:
        other.close()


def test_endpoint_set_change_keeps_remaining_endpoints(proxies):
    e1, e2, e3 = RecordingBackend(), RecordingBackend(), RecordingBackend()
    try:
        port = free_port()

        def cfg(backends):
            return {
                "workers": 1,
                "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
                "route_tables": [{"name": "rt", "virtual_hosts": [{
                    "name": "all", "domains": ["*"],
                    "routes": [{"name": "all", "match": {"path": {"prefix": "/"}},
                                "cluster": "web"}]}]}],
                "clusters": [{"name": "web", "endpoints": [
                    {"address": f"127.0.0.1:{b.port}"} for b in backends]}],
            }

        p = proxies(cfg([e1, e2]))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for k in range(6):
            assert keepalive_get(conn, f"/before/{k}") == 200
        assert len(e1.requests) == 3 and len(e2.requests) == 3  # round robin
        assert e1.connections == 1 and e2.connections == 1

        reload(p, cfg([e1, e3]))
        for k in range(6):
            assert keepalive_get(conn, f"/after/{k}") == 200
        conn.close()
        assert len(e2.requests) == 3  # gone from the set: no more requests
        assert len(e1.requests) == 6 and len(e3.requests) == 3
        assert e1.connections == 1  # the pooled connection to e1 was kept
        assert e3.connections == 1
    finally:
        for b in (e1, e2, e3):
            b.close()


def test_tls_file_change_makes_new_context(proxies, certs, backend, workdir):
    """The other side of sharing: a TLS context whose files changed is loaded
    afresh on reload (certificate rotation), and new connections use it."""
    import shutil
    a_port, b_port = free_port(), free_port()
    proxies(config_b(b_port, backend.port, certs["server_cert"], certs["server_key"],
                     certs["ca"]), "B")
    cert, key = os.path.join(workdir, "a.pem"), os.path.join(workdir, "a.key")
    shutil.copy(certs["client_cert"], cert)
    shutil.copy(certs["client_key"], key)
    cfg_a = config_a(a_port, b_port, cert, key, certs["ca"])
    a = proxies(cfg_a, "A")
    conn = http.client.HTTPConnection("127.0.0.1", a_port, timeout=5)
    assert keepalive_get(conn, "/one") == 200
    # Same content, new file: the stamp changes, so the context is reloaded.
    os.unlink(cert)
    shutil.copy(certs["client_cert"], cert)
    reload(a, extra_route(config_a(a_port, b_port, cert, key, certs["ca"]), "x"))
    assert "0 of 1 TLS contexts kept" in a.read_log()
    assert keepalive_get(conn, "/two") == 200
    conn.close()


def test_restart_settings_are_reported(proxies, backend):
    port = free_port()
    cfg = {
        "workers": 1,
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": "b"}]}]}],
        "clusters": [{"name": "b", "endpoints": [{"address": f"127.0.0.1:{backend.port}"}]}],
    }
    p = proxies(cfg)
    cfg["workers"] = 2
    cfg["limits"] = {"buffer_size": 32768}
    reload(p, cfg)
    log = p.read_log()
    assert "workers changed from 1 to 2" in log
    assert "limits.buffer_size changed from 16384 to 32768" in log
    assert "next restart" in log


# ---------------------------------------------------------------- partial updates

def web_config(port, backends, extra_clusters=()):
    return {
        "workers": 1,
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": "web"}]}]}],
        "clusters": [{"name": "web", "endpoints": [
            {"address": f"127.0.0.1:{b.port}"} for b in backends]}, *extra_clusters],
    }


def test_partial_update_of_endpoints_keeps_remaining_connections(proxies):
    e1, e2, e3 = RecordingBackend(), RecordingBackend(), RecordingBackend()
    try:
        port = free_port()
        p = proxies(web_config(port, [e1, e2]))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for k in range(4):
            assert keepalive_get(conn, f"/before/{k}") == 200
        status, body = p.update("clusters", "web", "endpoints",
                                [{"address": f"127.0.0.1:{e1.port}"},
                                 {"address": f"127.0.0.1:{e3.port}"}])
        assert (status, body) == (200, "generation 2\n")
        assert wait_generation(p, 2) == 2
        for k in range(4):
            assert keepalive_get(conn, f"/after/{k}") == 200
        conn.close()
        assert len(e2.requests) == 2 and len(e1.requests) == 4 and len(e3.requests) == 2
        assert e1.connections == 1
        # What runs is what config_dump shows.
        dump = json.loads(p.admin("/config_dump")[1])["config"]
        assert [e["address"] for e in dump["clusters"][0]["endpoints"]] == \
            [f"127.0.0.1:{e1.port}", f"127.0.0.1:{e3.port}"]
    finally:
        for b in (e1, e2, e3):
            b.close()


def test_partial_update_of_route_table_and_new_cluster(proxies, backend):
    canary = RecordingBackend()
    try:
        port = free_port()
        p = proxies(web_config(port, [backend]))
        assert p.update("clusters", "canary", None, {
            "name": "canary", "endpoints": [{"address": f"127.0.0.1:{canary.port}"}]})[0] == 200
        status, body = p.update("route_tables", "rt", None, """
name: rt
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - name: to-canary
        match: {path: {prefix: /canary}}
        cluster: canary
      - name: gone
        match: {path: {exact: /gone}}
        direct_response: {status: 410, body: "gone"}
      - name: rest
        match: {path: {prefix: /}}
        cluster: web
""")
        assert (status, body) == (200, "generation 3\n")
        assert wait_generation(p, 3) == 3
        from test_lifecycle import get
        assert get(port, "/canary/x")[0] == 200 and canary.requests[-1]["path"] == "/canary/x"
        assert get(port, "/gone")[0:3:2] == (410, b"gone")
        assert get(port, "/other")[0] == 200 and backend.requests[-1]["path"] == "/other"
        # Removing a cluster a route still uses is refused like the same file.
        status, body = p.update("clusters", "canary", remove=True)
        assert status == 400
        assert 'route_tables[0].virtual_hosts[0].routes[0].cluster: unknown cluster "canary"' \
            in body, body
        assert get(port, "/canary/y")[0] == 200
    finally:
        canary.close()


def test_invalid_partial_update_changes_nothing(proxies, backend):
    port = free_port()
    p = proxies(web_config(port, [backend]))
    cases = [
        (("clusters", "web", "endpoints", "- address: 127.0.0.1:0\n"),
         "clusters[0].endpoints[0].address"),
        (("clusters", "web", "endpoints", "[unclosed"), 'update of clusters "web" field endpoints'),
        (("clusters", "nope", "endpoints", "[]"), "no such object"),
        (("limits", "x", None, "{}"), "cannot be updated alone"),
        (("clusters", "web", "name", "other"), "the name cannot be changed"),
    ]
    for args, needle in cases:
        status, body = p.update(*args)
        assert status == 400, (args, body)
        assert needle in body, (args, body)
    assert p.metric("trellis_config_generation") == 1
    assert p.metric("trellis_config_reloads_total", result="rejected") == len(cases)
    from test_lifecycle import get
    assert get(port, "/still")[0] == 200
    # Only on the admin socket: over loopback TCP the call is refused.
    assert p.admin_tcp("/config/clusters/web/endpoints", "PUT")[0] == 403


def test_partial_update_survives_certificate_reload_and_yields_to_file_edit(proxies, backend):
    e2 = RecordingBackend()
    try:
        port = free_port()
        cfg = web_config(port, [backend])
        p = proxies(cfg)
        assert p.update("clusters", "web", "endpoints",
                        [{"address": f"127.0.0.1:{e2.port}"}])[0] == 200
        # SIGHUP with the file unchanged (as a certificate rotation does): kept.
        reload(p, cfg)
        from test_lifecycle import get
        assert get(port, "/a")[0] == 200 and e2.requests[-1]["path"] == "/a"
        # An edited file replaces the updates, and says so.
        cfg["clusters"][0]["connect_timeout"] = "2s"
        reload(p, cfg)
        assert get(port, "/b")[0] == 200 and backend.requests[-1]["path"] == "/b"
        assert "1 partial updates applied since the last load are replaced" in p.read_log()
    finally:
        e2.close()


def test_partial_updates_under_steady_load_keep_mtls_connections(proxies, certs, nginx):
    """Partial updates (another cluster's endpoints, the route table) under
    1000 req/s over pooled mTLS: zero failed requests, zero new handshakes."""
    other = RecordingBackend()
    try:
        hop = LoadedHop(proxies, certs, nginx, other)

        def change(k):
            if k % 2 == 0:
                status, body = hop.a.update("clusters", "other", "endpoints", [
                    {"address": f"127.0.0.{2 + k % 4}:{other.port}"}])
            else:
                rt = hop.config_a(route=f"r{k}")["route_tables"][0]
                status, body = hop.a.update("route_tables", "outbound", None, rt)
            assert status == 200, body

        hop.run(change, changes=10, interval=0.45)
        assert hop.a.metric("trellis_config_generation") == 11
    finally:
        other.close()


# ---------------------------------------------------------------- HTTP/2 connections

def test_reload_applies_to_existing_http2_connection(proxies, backend):
    """A reload applies to the next stream of an open HTTP/2 connection (gRPC
    clients keep theirs for hours), while a stream in flight finishes on the
    configuration it started with, even if its cluster is gone."""
    from h2util import H2Client
    from test_lifecycle import SlowBackend
    slow, new = SlowBackend(), RecordingBackend()
    try:
        port = free_port()

        def cfg(cluster, address):
            return {
                "listeners": [{"name": "in", "address": f"127.0.0.1:{port}",
                               "route_table": "rt"}],
                "route_tables": [{"name": "rt", "virtual_hosts": [{
                    "name": "all", "domains": ["*"],
                    "routes": [{"name": "all", "match": {"path": {"prefix": "/"}},
                                "cluster": cluster}]}]}],
                "clusters": [{"name": cluster, "endpoints": [{"address": address}]}],
            }

        p = proxies(cfg("old", f"127.0.0.1:{slow.port}"))
        c = H2Client(port)
        try:
            assert c.get("/first?ms=0").status == 200
            in_flight = c.request("/in-flight?ms=1500")
            deadline = time.time() + 5
            while "/in-flight?ms=1500" not in slow.arrived and time.time() < deadline:
                time.sleep(0.01)
            assert "/in-flight?ms=1500" in slow.arrived
            # The cluster of the stream in flight disappears.
            reload(p, cfg("new", f"127.0.0.1:{new.port}"))
            r = c.get("/second")
            assert r.status == 200
            assert [q["path"] for q in new.requests] == ["/second"]
            done = c.wait_done(in_flight, timeout=10)
            assert done.status == 200 and bytes(done.data) == b"slow done"
            assert c.get("/third").status == 200
            assert [q["path"] for q in new.requests] == ["/second", "/third"]
            assert c.goaway is None  # one connection throughout
        finally:
            c.close()
        assert "ERROR: AddressSanitizer" not in p.read_log()
    finally:
        slow.close()
        new.close()


def test_http2_connection_whose_listener_is_gone_gets_goaway(proxies, backend):
    """A reload that removes the listener of an open HTTP/2 connection: its
    next stream is still served (on the configuration the connection had),
    then GOAWAY tells the client to go elsewhere, as HTTP/1.1 closes after
    the request."""
    import struct
    from h2util import GOAWAY, RawConn
    port, other_port = free_port(), free_port()

    def cfg(listen_port):
        return {
            "listeners": [{"name": "in", "address": f"127.0.0.1:{listen_port}",
                           "route_table": "rt"}],
            "route_tables": [{"name": "rt", "virtual_hosts": [{
                "name": "all", "domains": ["*"],
                "routes": [{"name": "all", "match": {"path": {"prefix": "/"}},
                            "cluster": "b"}]}]}],
            "clusters": [{"name": "b", "endpoints": [{"address": f"127.0.0.1:{backend.port}"}]}],
        }

    p = proxies(cfg(port))
    # A frame-level client: python-h2 refuses every frame after a GOAWAY,
    # even those of the streams the GOAWAY lets finish.
    c = RawConn(port)
    try:
        c.request(1, "/before")
        assert c.wait(lambda: c.ended(1))
        assert dict(c.headers[1][0])[":status"] == "200"
        reload(p, cfg(other_port))
        c.request(3, "/after")
        assert c.wait(lambda: c.ended(3) and c.first(GOAWAY) is not None)
        assert dict(c.headers[3][0])[":status"] == "200"
        assert backend.requests[-1]["path"] == "/after"
        _, payload = c.first(GOAWAY)
        last_stream, code = struct.unpack(">II", payload[:8])
        assert (last_stream & 0x7FFFFFFF, code) == (3, 0)  # stream 3 was taken; NO_ERROR
    finally:
        c.close()
    assert "gets GOAWAY" in p.read_log()
