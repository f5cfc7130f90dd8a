"""Cluster endpoints given by DNS name (docs/config.md, clusters[].dns and
resolver): the proxy resolves them itself, off the request path, against a
real DNS server on loopback (dnsutil.DnsServer, answering with the TTL the
test sets), and sends requests to real backends on the resolved 127.0.0.x
addresses.

Every address is loopback: the DNS server, the resolved addresses and the
backends (the proxy is always given `resolver.servers`, so it never asks the
system's resolver).
"""
import http.client
import os
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import RecordingBackend, free_port, sanitizer_checked  # noqa: E402
from dnsutil import NXDOMAIN, DnsServer  # noqa: E402

NAME = "api.trellis.test"
RESOLUTIONS = "trellis_dns_resolutions_total"


@pytest.fixture
def checked(proxies):
    """proxies whose logs must be free of sanitizer reports (ASan builds)."""
    yield from sanitizer_checked(proxies)


@pytest.fixture
def dns():
    d = DnsServer()
    yield d
    d.close()


@pytest.fixture
def backends():
    """Factory: backends(ips, port) -> {ip: RecordingBackend}, one per
    127.0.0.x address, all on one port (the port is the endpoint's)."""
    started = []

    def make(ips, port=None, delay=0.0):
        port = port or free_port()
        out = {}
        for ip in ips:
            b = RecordingBackend(port=port, host=ip, delay=delay)
            started.append(b)
            out[ip] = b
        return out

    yield make
    for b in started:
        b.close()


def dns_config(listen_port, dns, endpoints, cluster_dns=None, resolver=None, pool=None):
    """One listener, every path to cluster "api" with these endpoint
    addresses (NAME:PORT or IP:PORT)."""
    cluster = {"name": "api", "endpoints": [{"address": a} for a in endpoints]}
    if cluster_dns is not None:
        cluster["dns"] = cluster_dns
    if pool is not None:
        cluster["pool"] = pool
    res = {"servers": [dns.address], "timeout": "300ms", "attempts": 2}
    res.update(resolver or {})
    return {
        "resolver": res,
        "listeners": [{"name": "in", "address": f"127.0.0.1:{listen_port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": "api"}]}]}],
        "clusters": [cluster],
    }


def get(conn, path="/"):
    """(status, body) of a GET on a keep-alive connection."""
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read()


def uh_count(p):
    """503s answered with response flag UH (no healthy upstream)."""
    return p.metric("istio_requests_total", response_code="503", response_flags="UH")


def until(cond, timeout=8.0, step=0.05):
    """Polls cond() until it is true (bounded); returns its last value."""
    deadline = time.time() + timeout
    v = cond()
    while not v and time.time() < deadline:
        time.sleep(step)
        v = cond()
    return v


def served_by(backends):
    return {ip: len(b.requests) for ip, b in backends.items()}


def test_requests_reach_resolved_addresses(checked, dns, backends):
    """Every address of the name is an endpoint (mode all, the default);
    family auto takes the IPv4 addresses when there are any."""
    bs = backends(["127.0.0.2", "127.0.0.3"])
    port = bs["127.0.0.2"].port
    dns.set(NAME, a=["127.0.0.2", "127.0.0.3"], aaaa=["::1"])
    dns.ttl = 30
    lp = free_port()
    p = checked(dns_config(lp, dns, [f"{NAME}:{port}"]))
    conn = http.client.HTTPConnection("127.0.0.1", lp, timeout=5)
    assert until(lambda: get(conn)[0] == 200)
    for k in range(10):
        assert get(conn, f"/{k}")[0] == 200
    counts = served_by(bs)
    assert counts["127.0.0.2"] >= 5 and counts["127.0.0.3"] >= 5  # round robin over both
    assert sum(counts.values()) == 11
    conn.close()
    # A and AAAA were asked once each (TTL 30 s: no second lookup yet).
    assert dns.count(NAME, "A") == 1 and dns.count(NAME, "AAAA") == 1
    assert p.metric(RESOLUTIONS, cluster="api", result="success") == 1
    assert "dns: api.trellis.test (auto): 2 addresses, first 127.0.0.2" in p.read_log()


def test_ttl_expiry_moves_new_requests_and_keeps_pooled_connection(checked, dns, backends):
    """A changed answer after the TTL: the address that remains keeps its
    pooled connection, the one that left gets nothing more, the new one
    takes its share."""
    bs = backends(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    port = bs["127.0.0.2"].port
    dns.set(NAME, a=["127.0.0.2", "127.0.0.3"])
    dns.ttl = 1
    lp = free_port()
    checked(dns_config(lp, dns, [f"{NAME}:{port}"], cluster_dns={"family": "v4"}))
    conn = http.client.HTTPConnection("127.0.0.1", lp, timeout=5)
    assert until(lambda: get(conn)[0] == 200)
    for k in range(5):
        assert get(conn, f"/before/{k}")[0] == 200
    assert bs["127.0.0.2"].connections == 1 and bs["127.0.0.3"].connections == 1
    before = served_by(bs)
    assert before["127.0.0.2"] == 3 and before["127.0.0.3"] == 3

    queries = dns.count(NAME, "A")
    dns.set(NAME, a=["127.0.0.3", "127.0.0.4"])
    # Within about one TTL the proxy asks again and new requests reach .4.
    assert until(lambda: get(conn, "/probe")[0] == 200 and len(bs["127.0.0.4"].requests) > 0)
    assert dns.count(NAME, "A") > queries
    switched = served_by(bs)
    for k in range(6):
        assert get(conn, f"/after/{k}")[0] == 200
    after = served_by(bs)
    conn.close()
    assert after["127.0.0.2"] == switched["127.0.0.2"]  # left the answer: nothing more
    assert after["127.0.0.4"] - switched["127.0.0.4"] == 3
    assert after["127.0.0.3"] - switched["127.0.0.3"] == 3
    # .3 stayed in the answer: its pooled connection was kept.
    assert bs["127.0.0.3"].connections == 1
    assert bs["127.0.0.4"].connections == 1


def test_servfail_keeps_last_answer_and_nxdomain_empties(checked, dns, backends):
    bs = backends(["127.0.0.2"])
    port = bs["127.0.0.2"].port
    dns.set(NAME, a=["127.0.0.2"])
    dns.ttl = 1
    lp = free_port()
    p = checked(dns_config(lp, dns, [f"{NAME}:{port}"], cluster_dns={"family": "v4"}))
    conn = http.client.HTTPConnection("127.0.0.1", lp, timeout=5)
    assert until(lambda: get(conn)[0] == 200)

    dns.fail(NAME)  # SERVFAIL from now on
    assert until(lambda: p.metric(RESOLUTIONS, cluster="api", result="failure") >= 2, timeout=10)
    for k in range(5):
        assert get(conn, f"/during/{k}")[0] == 200  # the last good answer is kept
    assert "dns: lookup of api.trellis.test (v4) failed" in p.read_log()
    assert p.metric(RESOLUTIONS, cluster="api", result="success") >= 1

    dns.set(NAME, a=["127.0.0.2"])
    assert until(lambda: "answers again" in p.read_log(), timeout=10)
    assert get(conn, "/back")[0] == 200

    # NXDOMAIN is an answer: the name has no address any more.
    dns.fail(NAME, NXDOMAIN)
    assert until(lambda: get(conn, "/gone")[0] == 503, timeout=10)
    assert get(conn, "/gone")[0] == 503
    assert until(lambda: uh_count(p) >= 2)
    assert p.metric(RESOLUTIONS, cluster="api", result="empty") >= 1
    conn.close()


def test_names_are_not_resolved_on_the_request_path(checked, dns, backends):
    """Lookups follow the TTL, not the request rate: many requests in about
    three TTLs cost a handful of queries."""
    bs = backends(["127.0.0.2"])
    port = bs["127.0.0.2"].port
    dns.set(NAME, a=["127.0.0.2"])
    dns.ttl = 1
    lp = free_port()
    checked(dns_config(lp, dns, [f"{NAME}:{port}"], cluster_dns={"family": "v4"}))
    conn = http.client.HTTPConnection("127.0.0.1", lp, timeout=5)
    assert until(lambda: get(conn)[0] == 200)
    start_q, start = dns.count(NAME, "A"), time.time()
    sent = 0
    while time.time() - start < 3.2:
        assert get(conn, f"/{sent}")[0] == 200
        sent += 1
    elapsed = time.time() - start
    conn.close()
    queries = dns.count(NAME, "A") - start_q
    assert sent >= 50
    # One lookup per TTL (1 s, the floor), give or take the edges.
    assert int(elapsed) - 1 <= queries <= int(elapsed) + 2, (queries, elapsed, sent)


def test_no_answer_yet_is_503_at_once(checked, dns, backends):
    """Until the first answer the name has no endpoint: a request is
    answered 503 UH at once, it does not wait for DNS. /ready waits for the
    first lookups at start-up."""
    bs = backends(["127.0.0.2"])
    port = bs["127.0.0.2"].port
    dns.silent.add(NAME)  # the server never answers
    lp = free_port()
    p = checked(dns_config(lp, dns, [f"{NAME}:{port}"], cluster_dns={"family": "v4"},
                           resolver={"timeout": "3s", "attempts": 2}), start=False)
    p.start(wait=False)

    def ready_status():
        try:
            return p.admin("/ready")[0]
        except OSError:
            return None

    # The admin endpoint (after the listeners) answers, not ready yet.
    assert until(lambda: ready_status() is not None)
    assert ready_status() == 503
    deadline = time.time() + 5
    while True:  # the listener is up before the answer
        try:
            conn = http.client.HTTPConnection("127.0.0.1", lp, timeout=5)
            t0 = time.time()
            status = get(conn)[0]
            took = time.time() - t0
            break
        except OSError:
            assert time.time() < deadline
            time.sleep(0.02)
    assert status == 503
    assert until(lambda: uh_count(p) == 1)
    assert took < 1.0
    assert ready_status() == 503  # still waiting for the first lookup
    assert len(bs["127.0.0.2"].requests) == 0

    # The answer arrives (the resolver asks again): ready, and served.
    dns.silent.discard(NAME)
    dns.set(NAME, a=["127.0.0.2"])
    p.wait_ready(timeout=20)
    assert until(lambda: get(conn, "/later")[0] == 200)
    conn.close()


def test_first_mode_follows_the_first_address(checked, dns, backends):
    """mode first (Istio DNS_ROUND_ROBIN, Envoy LOGICAL_DNS): one endpoint at
    the first address; when it changes, new connections go to the new one
    and the pooled connection to the old one is kept."""
    bs = backends(["127.0.0.2", "127.0.0.3"], delay=0.3)
    port = bs["127.0.0.2"].port
    dns.set(NAME, a=["127.0.0.2", "127.0.0.3"])
    dns.ttl = 1
    lp = free_port()
    checked(dns_config(lp, dns, [f"{NAME}:{port}"], cluster_dns={"mode": "first", "family": "v4"}))
    conn = http.client.HTTPConnection("127.0.0.1", lp, timeout=5)
    assert until(lambda: get(conn)[0] == 200)
    for k in range(3):
        assert get(conn, f"/before/{k}")[0] == 200
    assert served_by(bs) == {"127.0.0.2": 4, "127.0.0.3": 0}
    assert bs["127.0.0.2"].connections == 1

    queries = dns.count(NAME, "A")
    dns.set(NAME, a=["127.0.0.3", "127.0.0.2"])
    assert until(lambda: dns.count(NAME, "A") > queries)
    time.sleep(0.3)  # the table goes out and the worker adopts it

    # The pooled connection to .2 is kept and reused; two requests at once
    # need a second connection, which goes to the new first address.
    results = []

    def one(path):
        c = http.client.HTTPConnection("127.0.0.1", lp, timeout=5)
        results.append(get(c, path)[0])
        c.close()

    threads = [threading.Thread(target=one, args=(f"/after/{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200, 200]
    assert bs["127.0.0.3"].connections == 1 and len(bs["127.0.0.3"].requests) == 1
    assert bs["127.0.0.2"].connections == 1 and len(bs["127.0.0.2"].requests) == 5
    conn.close()


def test_reload_keeps_answers_and_drops_unused_names(checked, dns, backends):
    """A reload that keeps the name keeps its answer (no endpoint gap, no new
    lookup before the TTL); an IP endpoint beside a name works at once."""
    bs = backends(["127.0.0.2", "127.0.0.5"])
    port = bs["127.0.0.2"].port
    dns.set(NAME, a=["127.0.0.2"])
    dns.ttl = 60
    lp = free_port()
    cfg = dns_config(lp, dns, [f"{NAME}:{port}"], cluster_dns={"family": "v4"})
    p = checked(cfg)
    conn = http.client.HTTPConnection("127.0.0.1", lp, timeout=5)
    assert until(lambda: get(conn)[0] == 200)
    cfg2 = dns_config(lp, dns, [f"{NAME}:{port}", f"127.0.0.5:{port}"],
                      cluster_dns={"family": "v4"})
    cfg2["clusters"][0]["connect_timeout"] = "2s"
    p.write_config(cfg2)
    p.signal(__import__("signal").SIGHUP)
    assert until(lambda: p.metric("trellis_config_reloads_total", result="ok") == 1)
    for k in range(6):
        assert get(conn, f"/{k}")[0] == 200
    counts = served_by(bs)
    assert counts["127.0.0.5"] >= 2 and counts["127.0.0.2"] >= 3
    assert dns.count(NAME, "A") == 1  # the answer was kept across the reload
    assert bs["127.0.0.2"].connections == 1
    conn.close()
