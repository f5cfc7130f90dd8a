"""Weighted TCP routes (listeners[].tcp_clusters): each TCP connection goes to
one cluster picked by weight, as Istio's tcp-echo "TCP traffic shifting" task
splits 80/20 between v1 and v2.

Every backend is a real TCP server on loopback that greets each connection
with its name; the split is counted three ways that must agree exactly: by
the backends, by the names the clients read, and by the proxy's access log
and Istio TCP metrics, which name the picked cluster.

Splits are random (the worker's PRNG), so shares are checked statistically:
a count of n connections going to a cluster of weight share p is binomial,
with standard deviation sqrt(n p (1 - p)); it must lie within 5 of them of
n p (a correct proxy fails such a check with probability below 1e-6).
Weights of 0 and 100% are exact."""
import json
import math
import os
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import ThreadedTCPServer, free_port, sanitizer_checked  # noqa: E402
from dnsutil import DnsServer  # noqa: E402
from test_lifecycle import wait_generation  # noqa: E402
from test_updates import reload  # noqa: E402

SIGMAS = 5


class NamedServer(ThreadedTCPServer):
    """Greets each connection with its name and a newline, then reads until
    the client closes."""

    def __init__(self, name):
        self.name = name
        super().__init__()

    def serve(self, c):
        try:
            c.settimeout(10)
            c.sendall(self.name.encode() + b"\n")
            while c.recv(4096):
                pass
        except OSError:
            pass
        finally:
            c.close()


@pytest.fixture
def checked(proxies):
    yield from sanitizer_checked(proxies)


@pytest.fixture
def servers():
    started = []

    def make(*names):
        made = [NamedServer(n) for n in names]
        started.extend(made)
        return made

    yield make
    for s in started:
        s.close()


def greeting(port, send=None, timeout=5.0):
    """Connect through the proxy (sending `send` first, if any) and return
    the name the backend greeted with, or None if the proxy closed the
    connection without a byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if send:
            s.sendall(send)
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = s.recv(256)
            except ConnectionResetError:
                return None
            if not chunk:
                break
            data += chunk
            assert len(data) < 256, data
        return data.decode().strip() or None


def tally(port, n, **kw):
    """Greetings of n connections made one after another: {name or None: count}."""
    counts = {}
    for _ in range(n):
        who = greeting(port, **kw)
        counts[who] = counts.get(who, 0) + 1
    return counts


def assert_share(count, n, p, what):
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    assert abs(count - mean) <= SIGMAS * sd, \
        f"{what}: {count} of {n}, expected {mean:.0f} +- {SIGMAS * sd:.0f} ({SIGMAS} sd)"


def split_config(port, servers, weights, log_path, protocol="tcp", dead=(), empty=None):
    """An outbound listener splitting by `weights` ({cluster: weight}) across
    one cluster per server (named and labelled after it), one per name in
    `dead`, whose only endpoint refuses connections, and, with `empty` (a
    DnsServer that knows no name), a cluster "empty" whose endpoint is a name
    with no address: a cluster with no endpoint at all."""
    clusters = [{"name": s.name, "workload": f"tcp-echo-{s.name}", "namespace": "default",
                 "service": "tcp-echo.default.svc.cluster.local",
                 "endpoints": [{"address": f"127.0.0.1:{s.port}"}]} for s in servers]
    clusters += [{"name": d, "workload": f"tcp-echo-{d}", "connect_timeout": "1s",
                  "endpoints": [{"address": f"127.0.0.1:{free_port()}"}]} for d in dead]
    if empty is not None:
        clusters.append({"name": "empty", "endpoints": [{"address": "nothing.trellis.test:9"}]})
    listener = {"name": "tcp-echo", "address": f"127.0.0.1:{port}", "direction": "outbound",
                "protocol": protocol,
                "tcp_clusters": [{"cluster": c, "weight": w} for c, w in weights.items()]}
    cfg = {"workers": 1, "listeners": [listener], "clusters": clusters,
           "access_log": {"enabled": True, "path": log_path}}
    if empty is not None:
        cfg["resolver"] = {"servers": [empty.address], "timeout": "300ms", "attempts": 2}
    if protocol == "auto":
        listener["route_table"] = "rt"
        listener["timeouts"] = {"detect": "50ms"}
        cfg["route_tables"] = [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "all", "direct_response": {"status": 200, "body": "http\n"}}]}]}]
    return cfg


def access_lines(path, n, timeout=10.0):
    """The first n access log lines (waiting for the connections to end)."""
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        if len(lines) >= n:
            break
        time.sleep(0.05)
    assert len(lines) == n, f"{len(lines)} access log lines, expected {n}"
    return lines


def by_cluster(lines):
    counts = {}
    for e in lines:
        counts[e["cluster"]] = counts.get(e["cluster"], 0) + 1
    return counts


def test_split_80_20_with_a_zero_weight_entry(checked, servers, workdir):
    v1, v2, v3 = servers("v1", "v2", "v3")
    port, log = free_port(), os.path.join(workdir, "access.log")
    p = checked(split_config(port, [v1, v2, v3], {"v1": 80, "v2": 20, "v3": 0}, log))
    n = 2000
    counts = tally(port, n)
    assert set(counts) <= {"v1", "v2"}, counts  # no failure, nothing to the 0-weight entry
    assert counts.get("v1", 0) + counts.get("v2", 0) == n
    assert_share(counts["v2"], n, 0.2, "v2 (weight 20 of 100)")
    # The backends saw the same split; v3 not a single connection.
    deadline = time.time() + 5
    while v1.connections + v2.connections < n and time.time() < deadline:
        time.sleep(0.02)
    assert (v1.connections, v2.connections, v3.connections) == (counts["v1"], counts["v2"], 0)

    # One access log line per connection naming the picked cluster and its endpoint.
    lines = access_lines(log, n)
    assert by_cluster(lines) == {"v1": counts["v1"], "v2": counts["v2"]}
    ports = {"v1": v1.port, "v2": v2.port}
    for e in lines:
        assert e["protocol"] == "TCP" and e["listener"] == "tcp-echo", e
        assert e["upstream_host"] == f"127.0.0.1:{ports[e['cluster']]}", e
        assert e["response_flags"] == "-" and e["response_code"] == 0, e
        assert e["method"] is None and e["path"] is None, e
        assert e["bytes_sent"] == 3 and e["bytes_received"] == 0, e

    # The Istio TCP metrics carry the picked cluster's labels.
    for name in ("v1", "v2"):
        labels = {"reporter": "source", "destination_workload": f"tcp-echo-{name}",
                  "destination_service": "tcp-echo.default.svc.cluster.local",
                  "request_protocol": "tcp"}
        assert p.metric("istio_tcp_connections_opened_total", **labels) == counts[name]
        assert p.metric("istio_tcp_connections_closed_total", **labels) == counts[name]
        assert p.metric("istio_tcp_sent_bytes_total", **labels) == 3 * counts[name]
    assert p.metric("istio_tcp_connections_opened_total", destination_workload="tcp-echo-v3") == 0


def test_clusters_without_a_live_endpoint_fail_only_their_share(checked, servers, workdir):
    (live,) = servers("live")
    dns = DnsServer()  # knows no name: "empty" resolves to no address
    try:
        port, log = free_port(), os.path.join(workdir, "access.log")
        checked(split_config(port, [live], {"live": 2, "dead": 1, "empty": 1}, log,
                             dead=["dead"], empty=dns))
        n = 1000
        counts = tally(port, n)
        assert set(counts) <= {"live", None}, counts
        assert_share(counts.get("live", 0), n, 0.5, "connections to the live cluster")
        assert dns.count("nothing.trellis.test") >= 1
    finally:
        dns.close()
    # A connection that picked a failing cluster is not moved to the live
    # one, and none that picked the live one failed.
    assert live.connections == counts["live"]
    lines = access_lines(log, n)
    split = by_cluster(lines)
    assert set(split) == {"live", "dead", "empty"}, split
    assert split["live"] == counts["live"] and split["dead"] + split["empty"] == counts[None]
    assert_share(split["dead"], n, 0.25, "connections to the refusing cluster")
    for e in lines:
        if e["cluster"] == "live":
            assert e["response_flags"] == "-", e
            continue
        assert e["bytes_sent"] == 0 and e["bytes_received"] == 0, e
        if e["cluster"] == "empty":
            # No endpoint at all: no healthy upstream, at once.
            assert e["response_flags"] == "UH" and e["upstream_host"] is None, e
        else:
            # The first connect is refused (UF); then the endpoint is in
            # back-off and later picks fail at once with no healthy upstream.
            assert e["response_flags"] in ("UF", "UH"), e
    flags = [e["response_flags"] for e in lines if e["cluster"] == "dead"]
    assert flags[0] == "UF" and "UH" in flags, flags[:10]


def test_reload_and_partial_update_change_the_weights(checked, servers, workdir):
    v1, v2 = servers("v1", "v2")
    port, log = free_port(), os.path.join(workdir, "access.log")
    p = checked(split_config(port, [v1, v2], {"v1": 100, "v2": 0}, log))
    assert tally(port, 200) == {"v1": 200}

    # The file changes: all of it shifts to v2 (Istio's task ends at 100% v2).
    reload(p, split_config(port, [v1, v2], {"v1": 0, "v2": 100}, log))
    assert tally(port, 200) == {"v2": 200}

    # The field alone, over the admin socket: an even split.
    gen = p.metric("trellis_config_generation")
    status, body = p.update("listeners", "tcp-echo", "tcp_clusters",
                            [{"cluster": "v1", "weight": 1}, {"cluster": "v2", "weight": 1}])
    assert (status, body) == (200, f"generation {int(gen) + 1}\n")
    assert wait_generation(p, gen + 1) == gen + 1
    n = 1000
    counts = tally(port, n)
    assert set(counts) == {"v1", "v2"}, counts
    assert_share(counts["v1"], n, 0.5, "v1 after the update (weight 1 of 2)")
    dump = json.loads(p.admin("/config_dump")[1])["config"]
    assert dump["listeners"][0]["tcp_clusters"] == [{"cluster": "v1", "weight": 1},
                                                    {"cluster": "v2", "weight": 1}]

    # An invalid update is refused with the loader's message and changes nothing.
    for value, needle in [
            ([{"cluster": "v3", "weight": 1}], 'tcp_clusters[0].cluster: unknown cluster "v3"'),
            ([{"cluster": "v1", "weight": 0}], "tcp_clusters: the weights must not all be 0"),
            ([], "tcp_clusters: must have at least 1 entry")]:
        status, body = p.update("listeners", "tcp-echo", "tcp_clusters", value)
        assert status == 400 and needle in body, (value, body)
    assert p.metric("trellis_config_generation") == gen + 1

    # Back to the one-cluster shorthand in the file.
    cfg = split_config(port, [v1, v2], {}, log)
    del cfg["listeners"][0]["tcp_clusters"]
    cfg["listeners"][0]["tcp_cluster"] = "v1"
    reload(p, cfg)
    assert tally(port, 100) == {"v1": 100}
    dump = json.loads(p.admin("/config_dump")[1])["config"]
    assert dump["listeners"][0]["tcp_cluster"] == "v1"
    assert "tcp_clusters" not in dump["listeners"][0]  # the writer leaves defaults out


def test_auto_listener_splits_its_non_http_connections(checked, servers, workdir):
    v1, v2 = servers("v1", "v2")
    port, log = free_port(), os.path.join(workdir, "access.log")
    checked(split_config(port, [v1, v2], {"v1": 1, "v2": 1}, log, protocol="auto"))
    # HTTP is still routed.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"http\n"), reply
    # Opaque bytes, and silent (server-first) clients after the detection
    # deadline, go to either cluster.
    n = 200
    opaque = tally(port, n, send=b"\x00\x01\x02opaque\n")
    assert set(opaque) == {"v1", "v2"}, opaque
    assert_share(opaque["v1"], n, 0.5, "opaque connections to v1")
    silent = tally(port, 40)
    assert set(silent) == {"v1", "v2"}, silent
    assert v1.connections + v2.connections == n + 40


def test_denied_connection_is_logged_without_a_cluster(checked, servers, workdir):
    v1, v2 = servers("v1", "v2")
    port, log = free_port(), os.path.join(workdir, "access.log")
    cfg = split_config(port, [v1, v2], {"v1": 1, "v2": 1}, log)
    cfg["listeners"][0]["authorization"] = {"rules": [{"action": "DENY", "principals": []}]}
    checked(cfg)
    assert tally(port, 3) == {None: 3}
    lines = access_lines(log, 3)
    assert all(e["response_flags"] == "RBAC" and e["cluster"] is None
               and e["upstream_host"] is None for e in lines), lines
    assert v1.connections + v2.connections == 0
