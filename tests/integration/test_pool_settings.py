"""Connection settings of a cluster (docs/config.md, clusters[].tcp_keepalive
and pool.max_connection_duration; Istio's connectionPool.tcp.tcpKeepalive and
maxConnectionDuration), seen from outside the proxy: the kernel's keep-alive
timer on the proxy's upstream sockets (`ss -o`), and the connections a real
backend accepts. Then the same settings written as an Istio DestinationRule,
compiled by `trellis ctl compile` and run."""
import json
import os
import re
import subprocess
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
from conftest import TRELLIS, Proxy, RecordingBackend, free_port, simple_config  # noqa: E402


def keepalive_timers(backend_port):
    """The keep-alive timers (seconds left) of the sockets connected to
    127.0.0.1:backend_port; None for a socket without one."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", "dst",
                          f"127.0.0.1:{backend_port}"],
                         capture_output=True, text=True, timeout=10).stdout
    timers = []
    for line in out.splitlines():
        m = re.search(r"timer:\(keepalive,([0-9.]+)(min|sec|ms)", line)
        if m is None:
            timers.append(None)
            continue
        v = float(m.group(1))
        timers.append(v * 60 if m.group(2) == "min" else v / 1000 if m.group(2) == "ms" else v)
    return timers


def get(port, path="/"):
    r = requests.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    assert r.status_code == 200
    return r


def test_tcp_keepalive_on_upstream_sockets(proxies, backend):
    port = free_port()
    cfg = simple_config(port, backend.port)
    cfg["clusters"][0]["tcp_keepalive"] = {"time": "7s", "interval": "3s", "probes": 4}
    proxies(cfg)
    get(port)
    timers = keepalive_timers(backend.port)
    assert timers and all(t is not None and 0 < t <= 7 for t in timers), timers
    # Without the setting: no keep-alive timer on the pooled connection.
    other = RecordingBackend()
    try:
        plain = free_port()
        proxies(simple_config(plain, other.port), "plain")
        get(plain)
        timers = keepalive_timers(other.port)
        assert timers and all(t is None for t in timers), timers
    finally:
        other.close()


def test_tcp_keepalive_whole_seconds(proxies, backend):
    cfg = simple_config(free_port(), backend.port)
    cfg["clusters"][0]["tcp_keepalive"] = {"time": "1500ms"}
    p = proxies(cfg, start=False)
    p.start(wait=False)
    assert p.proc.wait(timeout=10) != 0
    log = p.read_log()
    assert "clusters[0].tcp_keepalive.time" in log and "whole seconds" in log, log


def test_max_connection_duration(proxies, backend):
    """Requests within the duration share one pooled connection; after it,
    the next request goes on a new one (and the old one is closed)."""
    port = free_port()
    cfg = simple_config(port, backend.port)
    cfg["clusters"][0]["pool"] = {"max_connection_duration": "800ms"}
    proxies(cfg)
    for _ in range(3):
        get(port)
    assert backend.connections == 1
    time.sleep(1.0)
    get(port)
    assert backend.connections == 2
    get(port)
    assert backend.connections == 2
    # Without it the connection is kept past that time.
    other = RecordingBackend()
    try:
        plain = free_port()
        proxies(simple_config(plain, other.port), "plain")
        get(plain)
        time.sleep(1.0)
        get(plain)
        assert other.connections == 1
    finally:
        other.close()


DR = """apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {serviceAccountName: client}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.internal]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: %(port)d, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api.example.internal
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnectionDuration: 800ms
        tcpKeepalive: {time: 9s, interval: 2500ms, probes: 5}
      http: {maxRetries: 4}
    retryBudget: {percent: 30, minRetryConcurrency: 2}
"""


def test_istio_destination_rule(workdir, backend):
    mesh = os.path.join(workdir, "mesh")
    os.makedirs(mesh)
    with open(os.path.join(mesh, "mesh.yaml"), "w") as f:
        f.write(DR % {"port": backend.port})
    # the outbound listener on 127.0.0.2: 127.0.0.1 is the backend's
    r = subprocess.run([TRELLIS, "ctl", "compile", mesh, "--workload", "default/client", "-o",
                        "json", "--outbound-ip", "127.0.0.2"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "connectionPool" not in r.stderr and "retryBudget" not in r.stderr, r.stderr
    model = json.loads(r.stdout)
    c = next(c for c in model["clusters"] if c["name"].endswith("|api.example.internal"))
    assert c["tcp_keepalive"] == {"time": "9s", "interval": "3s", "probes": 5}
    assert c["pool"]["max_connection_duration"] == "800ms"
    assert c["circuit_breakers"]["max_retries"] == 4
    assert c["retry_budget"] == {"percent": 30, "min_concurrency": 2}
    # run as compiled: the keep-alive timer and the connection's lifetime
    proxy = Proxy(workdir, model, name="client-proxy")
    proxy.start()
    try:
        def call():
            r = requests.get(f"http://127.0.0.2:{backend.port}/x",
                             headers={"Host": "api.example.internal"}, timeout=10)
            assert r.status_code == 200
        call()
        call()
        assert backend.connections == 1
        timers = keepalive_timers(backend.port)
        assert timers and all(t is not None and 0 < t <= 9 for t in timers), timers
        time.sleep(1.0)
        call()
        assert backend.connections == 2
    finally:
        proxy.stop()
