"""Locality load balancing and warm-up (docs/config.md, "Priorities and
localities" and clusters[].warmup) with real backends on loopback: a client
prefers its own zone, fails over to another when its zone's endpoints are
down or ejected, distribute's locality weights hold over thousands of
requests, and a new endpoint starts with a small share.

Backends are python servers that answer with their name
(test_endpoints.NamedBackend). The proxy runs one worker (the Proxy
fixture's default), so one worker's balancer sees every request."""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port, sanitizer_checked  # noqa: E402
from test_endpoints import addr, get_bodies, http_config, named  # noqa: E402,F401
from test_outlier import Client  # noqa: E402


@pytest.fixture
def checked(proxies):
    yield from sanitizer_checked(proxies)


def locality_config(port, eps, lb="round_robin", **cluster):
    """eps: (backend, locality, priority) triples."""
    cfg = http_config(port, [addr(b.port) for b, _, _ in eps], lb=lb)
    c = cfg["clusters"][0]
    for e, (_, loc, prio) in zip(c["endpoints"], eps):
        e["locality"] = loc
        if prio:
            e["priority"] = prio
    c.update(cluster)
    return cfg


def test_same_zone_then_failover_when_down(checked, named):
    # As compiled for a client in r1/z1 (Istio's default failover): its own
    # zone is level 0, the other zone of its region level 1.
    z1 = [named("z1-a"), named("z1-b")]
    z2 = [named("z2-a"), named("z2-b")]
    port = free_port()
    checked(locality_config(port, [(z1[0], "r1/z1", 0), (z1[1], "r1/z1", 0),
                                   (z2[0], "r1/z2", 1), (z2[1], "r1/z2", 1)],
                            outlier_detection={"consecutive_5xx_errors": 2,
                                               "max_ejection_percent": 100},
                            # a connection per request, so a backend that
                            # stops listening is down for the next request
                            pool={"max_idle": 0}))
    names = get_bodies(port, 200)
    assert set(names) == {"z1-a", "z1-b"}, set(names)
    # The client's zone goes down: its backends refuse connections. The first
    # requests fail over on connect failure (another endpoint is tried), then
    # the level has no health and zone 2 takes everything.
    for b in z1:
        b.close()
    names = get_bodies(port, 200)
    assert set(names) == {"z2-a", "z2-b"}, set(names)


def test_failover_when_ejected(checked, named):
    z1, z2 = named("z1"), named("z2")
    port = free_port()
    checked(locality_config(port, [(z1, "r1/z1", 0), (z2, "r2/z1", 1)], lb="least_request",
                            outlier_detection={"consecutive_5xx_errors": 2,
                                               "max_ejection_percent": 100,
                                               "base_ejection_time": "30s"}))
    c = Client(port)
    try:
        assert {c.get()[1] for _ in range(50)} == {"z1"}
        z1.status = 503
        assert [c.get()[0] for _ in range(2)] == [503, 503]  # ejected after two
        got = [c.get() for _ in range(100)]
        assert got == [(200, "z2")] * 100
        assert z1.count == 52
    finally:
        c.close()


def test_distribute_weights(checked, named):
    # distribute {r1/z1: 70, r1/z2: 30}: zone 1 (two endpoints) gets 70 % of
    # the requests, zone 2 (one) 30 %. Random picks over 3,000 requests: the
    # standard deviation of a 30 % share is 0.84 %; +-4 % is about 5 sigma.
    a, b, c = named("a"), named("b"), named("c")
    port = free_port()
    checked(locality_config(port, [(a, "r1/z1", 0), (b, "r1/z1", 0), (c, "r1/z2", 0)],
                            lb="random",
                            locality_weights=[{"locality": "r1/z1", "weight": 70},
                                              {"locality": "r1/z2", "weight": 30}]))
    n = 3000
    names = get_bodies(port, n)
    share_c = names.count("c") / n
    assert abs(share_c - 0.30) <= 0.04, share_c
    assert abs(names.count("a") / n - 0.35) <= 0.04, names.count("a")
    assert abs(names.count("b") / n - 0.35) <= 0.04, names.count("b")


def test_warmup_new_endpoint_starts_small(checked, named):
    # Warm-up of 4 s with aggression 0.25 (weight x (t / 4 s) ^ 4, at least
    # 10 %): for its first 2 s a new endpoint has the minimum, 10 % of its
    # weight, against a warm endpoint's 100 %: round robin gives it 1 request
    # in 11 (9.1 %, exact up to one pick). After the window it has its full
    # weight: an even split. The old endpoint is warm: the update comes after
    # its own 4 s, and an endpoint kept by an update keeps its start.
    old, new = named("old"), named("new")
    port = free_port()
    cfg = http_config(port, [addr(old.port)])
    cfg["clusters"][0]["warmup"] = {"duration": "4s", "aggression": 0.25}
    p = checked(cfg)
    time.sleep(4.2)
    assert set(get_bodies(port, 20)) == {"old"}
    status, body = p.update("clusters", "c", "endpoints",
                            [{"address": addr(old.port)}, {"address": addr(new.port)}])
    assert status == 200, body
    started = time.monotonic()
    names = get_bodies(port, 440)
    assert time.monotonic() - started < 2.0  # all within the minimum's time
    share = names.count("new") / len(names)
    assert 0.08 <= share <= 0.10, share
    time.sleep(max(0.0, started + 4.2 - time.monotonic()))
    names = get_bodies(port, 400)
    assert abs(names.count("new") / len(names) - 0.5) <= 0.01, names.count("new")
