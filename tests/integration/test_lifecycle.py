"""Process lifecycle: config reload (SIGHUP, file change, invalid files), start-up
validation, SIGTERM drain, and memory footprint."""
import http.client
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import TRELLIS, RecordingBackend, free_port  # noqa: E402


# ---------------------------------------------------------------- helpers

@pytest.fixture
def backend2():
    b = RecordingBackend()
    yield b
    b.close()


def two_cluster_config(port, b0, b1, target, drain_timeout=None):
    """One listener; the route sends everything to cluster c<target>."""
    cfg = {
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": f"to-c{target}", "match": {"path": {"prefix": "/"}},
                        "cluster": f"c{target}"}]}]}],
        "clusters": [{"name": "c0", "endpoints": [{"address": f"127.0.0.1:{b0.port}"}]},
                     {"name": "c1", "endpoints": [{"address": f"127.0.0.1:{b1.port}"}]}],
    }
    if drain_timeout:
        cfg["drain_timeout"] = drain_timeout
    return cfg


def get(port, path="/", timeout=5, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def paths(backend):
    return [r["path"] for r in backend.requests]


def wait_generation(proxy, gen, timeout=5.0):
    deadline = time.time() + timeout
    g = proxy.metric("trellis_config_generation")
    while g < gen and time.time() < deadline:
        time.sleep(0.02)
        g = proxy.metric("trellis_config_generation")
    return g


def config_dump(proxy):
    status, body = proxy.admin("/config_dump")
    assert status == 200
    return json.loads(body)


def locate(path, needle):
    """1-based (line, col) of the first occurrence of needle in the file."""
    with open(path) as f:
        for i, line in enumerate(f, 1):
            j = line.find(needle)
            if j >= 0:
                return i, j + 1
    raise AssertionError(f"{needle!r} not in {path}")


class Load:
    """Background HTTP load: `n` keep-alive threads plus one thread opening a
    new connection per request, for at most `seconds`. Records every failure."""

    def __init__(self, port, seconds=6.0, n=3):
        self.port = port
        self.stop = threading.Event()
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.deadline = time.time() + seconds
        self.threads = [threading.Thread(target=self._run, args=(i, True)) for i in range(n)]
        self.threads.append(threading.Thread(target=self._run, args=(n, False)))
        for t in self.threads:
            t.start()

    def _run(self, i, keep_alive):
        conn = None
        k = 0
        while not self.stop.is_set() and time.time() < self.deadline:
            k += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", f"/load/{i}/{k}",
                             headers={} if keep_alive else {"Connection": "close"})
                r = conn.getresponse()
                r.read()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failures.append((i, k, r.status))
                if not keep_alive or r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failures.append((i, k, repr(e)))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(10)
        return self.ok, self.failures


class SlowBackend:
    """HTTP/1.1 backend that sleeps ?ms=N before answering 200 "slow done"."""

    def __init__(self):
        self.port = free_port()
        self.arrived = []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                srv.arrived.append(self.path)
                time.sleep(int(q.get("ms", ["0"])[0]) / 1000.0)
                body = b"slow done"
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_arrived(self, n, timeout=5.0):
        deadline = time.time() + timeout
        while len(self.arrived) < n and time.time() < deadline:
            time.sleep(0.01)
        return len(self.arrived)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_backend():
    b = SlowBackend()
    yield b
    b.close()


# ---------------------------------------------------------------- reload

def test_reload_under_load_sighup(proxies, backend, backend2):
    port = free_port()
    backends = [backend, backend2]
    p = proxies(two_cluster_config(port, backend, backend2, 0))
    assert get(port, "/probe/1")[0] == 200
    assert paths(backend) == ["/probe/1"]

    load = Load(port, seconds=6.0)
    gens = []
    try:
        for k in range(1, 5):
            time.sleep(0.8)
            gen_before = p.metric("trellis_config_generation")
            p.write_config(two_cluster_config(port, backend, backend2, k % 2))
            p.signal(signal.SIGHUP)
            assert wait_generation(p, gen_before + 1) >= gen_before + 1
            gens.append(p.metric("trellis_config_generation"))
            # A new connection is routed by the new configuration.
            status, _, _ = get(port, f"/probe/after-{k}", headers={"Connection": "close"})
            assert status == 200
            assert f"/probe/after-{k}" in paths(backends[k % 2]), k
            assert f"/probe/after-{k}" not in paths(backends[(k + 1) % 2]), k
        time.sleep(0.5)
    finally:
        ok, failures = load.finish()
    print(f"reload under load: {ok} ok, {len(failures)} failed, generations {gens}")
    assert failures == [], failures[:10]
    assert ok > 100
    assert p.metric("trellis_config_reloads_total", result="ok") >= 4
    assert p.metric("trellis_config_reloads_total", result="rejected") == 0
    dump = config_dump(p)
    assert dump["generation"] == p.metric("trellis_config_generation") >= 5
    assert dump["config"]["route_tables"][0]["virtual_hosts"][0]["routes"][0]["name"] == "to-c0"


def test_reload_applies_to_existing_keepalive_connection(proxies, backend, backend2):
    port = free_port()
    p = proxies(two_cluster_config(port, backend, backend2, 0))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/ka/before")
        r = conn.getresponse()
        r.read()
        assert r.status == 200 and r.getheader("connection", "").lower() != "close"
        p.write_config(two_cluster_config(port, backend, backend2, 1))
        p.signal(signal.SIGHUP)
        assert wait_generation(p, 2) >= 2
        # The next request on the same connection is a new request: new config.
        conn.request("GET", "/ka/after")
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        assert "/ka/after" in paths(backend2), (paths(backend), paths(backend2))
    finally:
        conn.close()


def test_sighup_after_write_reloads_once(proxies, backend, backend2):
    port = free_port()
    p = proxies(two_cluster_config(port, backend, backend2, 0))
    p.write_config(two_cluster_config(port, backend, backend2, 1))
    p.signal(signal.SIGHUP)
    assert wait_generation(p, 2) >= 2
    time.sleep(2.2)  # two file polls
    assert p.metric("trellis_config_reloads_total", result="ok") == 1
    assert p.metric("trellis_config_generation") == 2


def test_reload_on_file_change_without_sighup(proxies, backend, backend2):
    port = free_port()
    p = proxies(two_cluster_config(port, backend, backend2, 0))
    assert get(port, "/one")[0] == 200
    assert paths(backend) == ["/one"]
    p.write_config(two_cluster_config(port, backend, backend2, 1))
    # Polled every second.
    assert wait_generation(p, 2, timeout=4.0) == 2
    assert get(port, "/two", headers={"Connection": "close"})[0] == 200
    assert paths(backend2) == ["/two"]
    assert paths(backend) == ["/one"]
    assert p.metric("trellis_config_reloads_total", result="ok") == 1
    assert config_dump(p)["generation"] == 2
    assert "changed; reloading" in p.read_log()


@pytest.mark.parametrize("kind", ["unknown_field", "bad_reference", "port_in_use"])
def test_invalid_reload_keeps_old_config(proxies, backend, backend2, kind):
    port = free_port()
    good = two_cluster_config(port, backend, backend2, 0)
    p = proxies(good)
    assert get(port, "/before")[0] == 200
    bad = two_cluster_config(port, backend, backend2, 1)
    busy = None
    if kind == "unknown_field":
        bad["listeners"][0]["bogus_field"] = 1
        needle, field = '"bogus_field"', "listeners[0].bogus_field"
    elif kind == "bad_reference":
        bad["route_tables"][0]["virtual_hosts"][0]["routes"][0]["cluster"] = "no-such-cluster"
        needle = '"no-such-cluster"'
        field = "route_tables[0].virtual_hosts[0].routes[0].cluster"
    else:
        # A new listener on an address someone else holds: the config is valid,
        # the bind check before publishing rejects it.
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        busy_port = busy.getsockname()[1]
        bad["listeners"].append({"name": "second", "address": f"127.0.0.1:{busy_port}",
                                 "route_table": "rt"})
        needle, field = '"second"', "listeners[1]"
    p.write_config(bad)
    line, col = locate(p.path, needle)
    if kind == "port_in_use":
        line, col = None, None  # located at the listener object, checked by pattern below
    p.signal(signal.SIGHUP)
    deadline = time.time() + 3
    while p.metric("trellis_config_reloads_total", result="rejected") < 1 and time.time() < deadline:
        time.sleep(0.02)
    assert p.metric("trellis_config_reloads_total", result="rejected") >= 1
    assert p.metric("trellis_config_reloads_total", result="ok") == 0
    assert p.metric("trellis_config_generation") == 1

    log = p.read_log()
    if line is not None:
        assert f"{p.path}:{line}:{col}: {field}" in log, log
    else:
        assert re.search(re.escape(p.path) + r":\d+:\d+: " + re.escape(field)
                         + r".*cannot listen on 127\.0\.0\.1:" + str(busy_port), log), log
        busy.close()
    assert "rejected" in log
    # Old config still serves, on new connections too.
    assert get(port, "/after", headers={"Connection": "close"})[0] == 200
    assert paths(backend) == ["/before", "/after"]
    assert paths(backend2) == []
    dump = config_dump(p)
    assert dump["generation"] == 1
    assert dump["config"]["route_tables"][0]["virtual_hosts"][0]["routes"][0]["name"] == "to-c0"
    assert p.proc.poll() is None


# ---------------------------------------------------------------- start-up validation

def write_json(path, cfg):
    with open(path, "w") as f:
        f.write(json.dumps(cfg, indent=2))


def test_invalid_config_at_start(workdir, backend):
    port = free_port()
    good = {"admin": {"address": f"127.0.0.1:{free_port()}"}, "workers": 1,
            "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
            "route_tables": [{"name": "rt", "virtual_hosts": [{
                "name": "all", "domains": ["*"],
                "routes": [{"name": "r", "cluster": "b"}]}]}],
            "clusters": [{"name": "b", "endpoints": [{"address": f"127.0.0.1:{backend.port}"}]}]}
    good_path = os.path.join(workdir, "good.yaml")
    write_json(good_path, good)
    bad = json.loads(json.dumps(good))
    bad["clusters"][0]["endpoints"][0]["wieght"] = 3
    bad_path = os.path.join(workdir, "bad.yaml")
    write_json(bad_path, bad)
    line, col = locate(bad_path, '"wieght"')

    r = subprocess.run([TRELLIS, "proxy", "--config", bad_path], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0
    assert f"{bad_path}:{line}:{col}: clusters[0].endpoints[0].wieght" in r.stderr, r.stderr
    assert 'unknown field "wieght"' in r.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()

    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", good_path], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", bad_path], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    assert f"{bad_path}:{line}:{col}: clusters[0].endpoints[0].wieght" in r.stderr, r.stderr
    # --check does not start anything.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()

    # YAML syntax error: also located.
    yaml_path = os.path.join(workdir, "broken.yaml")
    with open(yaml_path, "w") as f:
        f.write("listeners:\n  - name: in\n    address: [unclosed\n")
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", yaml_path], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    assert re.search(re.escape(yaml_path) + r":\d+:\d+: ", r.stderr), r.stderr


def test_check_names_kubernetes_resources(workdir):
    """Istio or Kubernetes YAML given to the proxy is named for what it is, with
    the command that compiles it, for one document and for many."""
    hint = ("not a trellis proxy configuration: compile it with "
            "'trellis ctl compile DIR --workload NAMESPACE/NAME'")
    vs_path = os.path.join(workdir, "reviews.yaml")
    with open(vs_path, "w") as f:
        f.write("apiVersion: networking.istio.io/v1\n"
                "kind: VirtualService\n"
                "metadata:\n  name: reviews\n"
                "spec:\n  hosts: [reviews]\n"
                "  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n")
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", vs_path], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    assert (f"{vs_path}:1:1: this is a Kubernetes resource "
            f"(networking.istio.io/v1 VirtualService), {hint}") in r.stderr, r.stderr
    assert "unknown field" not in r.stderr

    multi_path = os.path.join(workdir, "bookinfo.yaml")
    with open(multi_path, "w") as f:
        f.write("# Service and Deployment\n"
                "---\n"
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: details\n"
                "spec:\n  ports:\n  - port: 9080\n    name: http\n"
                "---\n"
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: details-v1\n")
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", multi_path],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert f"{multi_path}:3:1: this is a Kubernetes resource (v1 Service), {hint}" in r.stderr, \
        r.stderr
    assert "more than one YAML document" not in r.stderr


# ---------------------------------------------------------------- drain

def test_sigterm_drain(proxies, slow_backend):
    port = free_port()
    cfg = {
        "drain_timeout": "4s",
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "r", "match": {"path": {"prefix": "/"}}, "cluster": "slow"}]}]}],
        "clusters": [{"name": "slow", "endpoints": [{"address": f"127.0.0.1:{slow_backend.port}"}]}],
    }
    p = proxies(cfg)

    # An idle keep-alive connection.
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    idle.sendall(b"GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while not head.endswith(b"slow done"):
        chunk = idle.recv(65536)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"connection: close" not in head.lower()

    # A slow request in flight.
    result = {}

    def slow():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/slow?ms=1000")
        r = c.getresponse()
        result["status"], result["connection"], result["body"] = \
            r.status, r.getheader("connection"), r.read()
        result["t"] = time.time()
        c.close()

    t = threading.Thread(target=slow)
    t.start()
    assert slow_backend.wait_arrived(2) == 2
    t0 = time.time()
    p.signal(signal.SIGTERM)

    # The idle connection is closed promptly.
    idle.settimeout(2)
    try:
        assert idle.recv(1) == b""
    except ConnectionResetError:
        pass
    assert time.time() - t0 < 1.0
    idle.close()

    # New connections are refused.
    time.sleep(0.1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    t.join(10)
    assert result.get("status") == 200, result
    assert result["body"] == b"slow done"
    assert (result["connection"] or "").lower() == "close"
    assert result["t"] - t0 >= 0.7
    rc = p.proc.wait(timeout=5)
    elapsed = time.time() - t0
    assert rc == 0, p.read_log()
    assert elapsed < 4.0, elapsed  # well within drain_timeout: exits once drained
    assert "draining" in p.read_log()


def test_drain_deadline_cuts_slow_request(proxies, slow_backend):
    port = free_port()
    cfg = {
        "drain_timeout": "500ms",
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "r", "match": {"path": {"prefix": "/"}}, "cluster": "slow"}]}]}],
        "clusters": [{"name": "slow", "endpoints": [{"address": f"127.0.0.1:{slow_backend.port}"}]}],
    }
    p = proxies(cfg)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /slow?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert slow_backend.wait_arrived(1) == 1
    t0 = time.time()
    p.signal(signal.SIGTERM)
    rc = p.proc.wait(timeout=5)
    elapsed = time.time() - t0
    print(f"exit after {elapsed:.3f}s with drain_timeout 500ms")
    assert 0.4 <= elapsed < 1.2, elapsed
    assert rc == 0, p.read_log()
    s.settimeout(2)
    try:
        data = s.recv(65536)
    except ConnectionResetError:
        data = b""
    assert not data.startswith(b"HTTP/1.1 200"), data
    s.close()
    assert "drain deadline reached" in p.read_log()


def test_drain_deadline_closes_tcp_sessions(proxies):
    """Opaque TCP sessions have no request boundary: they run until the deadline."""
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen(4)
    held = []

    def accept():
        try:
            c, _ = echo.accept()
            held.append(c)
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    port = free_port()
    p = proxies({
        "drain_timeout": "700ms",
        "listeners": [{"name": "tcp", "address": f"127.0.0.1:{port}", "protocol": "tcp",
                       "tcp_cluster": "echo"}],
        "clusters": [{"name": "echo",
                      "endpoints": [{"address": f"127.0.0.1:{echo.getsockname()[1]}"}]}],
    })
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"hello")
    deadline = time.time() + 3
    while not held and time.time() < deadline:
        time.sleep(0.01)
    assert held and held[0].recv(5) == b"hello"
    t0 = time.time()
    p.signal(signal.SIGTERM)
    time.sleep(0.3)
    # Still open before the deadline: bytes flow.
    held[0].sendall(b"still")
    s.settimeout(2)
    assert s.recv(5) == b"still"
    rc = p.proc.wait(timeout=5)
    elapsed = time.time() - t0
    assert rc == 0
    assert 0.6 <= elapsed < 1.4, elapsed
    try:
        assert s.recv(1) == b""
    except ConnectionResetError:
        pass
    s.close()
    for c in held:
        c.close()
    echo.close()


# ---------------------------------------------------------------- memory

def test_memory_footprint(proxies, nginx):
    # nginx: the 64 upstream connections must not overflow a small accept backlog.
    backend = nginx("location / { return 200 'ok'; }")
    port = free_port()
    p = proxies({
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "r", "match": {"path": {"prefix": "/"}}, "cluster": "b"}]}]}],
        "clusters": [{"name": "b", "endpoints": [{"address": f"127.0.0.1:{backend.port}"}]}],
    })
    assert get(port, "/warm")[0] == 200
    time.sleep(0.2)
    idle = p.pss_kib()
    conns = []
    try:
        for i in range(64):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            conns.append(s)
            s.sendall(f"GET /c/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        for s in conns:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                assert chunk, "connection closed"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
        busy = p.pss_kib()
        assert p.metric("trellis_downstream_connections_active") == 64
    finally:
        for s in conns:
            s.close()
    print(f"trellis PSS: idle {idle} KiB, 64 keep-alive connections {busy} KiB "
          f"(RSS {p.rss_kib()} KiB)")
    assert idle < 8 * 1024, idle
    assert busy < 16 * 1024, busy
