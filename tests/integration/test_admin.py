"""The admin endpoint: /ready, /stats/prometheus, /config_dump, /logging, errors,
and the loopback-only rule."""
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import stat
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import TRELLIS, free_port, simple_config  # noqa: E402

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
SAMPLE = re.compile(rf"^({METRIC_NAME})(\{{(?:{LABEL})(?:,{LABEL})*\}})? (\S+)$")
TYPE_LINE = re.compile(rf"^# TYPE ({METRIC_NAME}) (counter|gauge|histogram|summary|untyped)$")


def http_raw(port, data, timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def parse_prometheus(text):
    """Returns {(name, labels_text): value}; asserts every line is well formed."""
    samples = {}
    typed = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            m = TYPE_LINE.match(line)
            if line.startswith("# TYPE"):
                assert m, f"bad TYPE line: {line!r}"
                typed[m.group(1)] = m.group(2)
            continue
        m = SAMPLE.match(line)
        assert m, f"bad sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        float(value)  # must parse
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, f"sample before its TYPE: {line!r}"
        assert (name, labels) not in samples, f"duplicate series: {line!r}"
        samples[(name, labels)] = float(value)
    return samples


def test_ready(proxies, backend):
    port = free_port()
    p = proxies(simple_config(port, backend.port))
    status, body = p.admin("/ready")
    assert status == 200
    assert body == "LIVE\n"


def test_prometheus_text_parses(proxies, backend):
    port = free_port()
    p = proxies(simple_config(port, backend.port))
    # Produce some series: a 200, a 404-less local error, a parse error.
    assert http_raw(port, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") \
        .startswith(b"HTTP/1.1 200")
    assert http_raw(port, b"BROKEN\r\n\r\n").startswith(b"HTTP/1.1 400")
    time.sleep(0.1)
    text = p.metrics()
    samples = parse_prometheus(text)
    names = {n for n, _ in samples}
    for required in ("istio_requests_total", "istio_request_duration_milliseconds_bucket",
                     "istio_request_duration_milliseconds_sum",
                     "istio_request_duration_milliseconds_count",
                     "trellis_http_parse_errors_total", "trellis_config_generation",
                     "trellis_config_reloads_total", "trellis_downstream_connections_total"):
        assert required in names, required
    assert p.metric("istio_requests_total", response_code="200") == 1
    assert p.metric("istio_requests_total", response_code="400") == 1
    assert p.metric("trellis_http_parse_errors_total") == 1
    assert p.metric("trellis_config_generation") == 1
    # Histogram buckets are cumulative and end in +Inf == _count.
    buckets = [(lbl, v) for (n, lbl), v in samples.items()
               if n == "istio_request_duration_milliseconds_bucket" and 'response_code="200"' in lbl]
    values = [v for _, v in buckets]
    assert values == sorted(values)
    assert 'le="+Inf"' in buckets[-1][0] and buckets[-1][1] == 1


def test_config_dump(proxies, backend):
    port = free_port()
    p = proxies(simple_config(port, backend.port))
    status, body = p.admin("/config_dump")
    assert status == 200
    dump = json.loads(body)
    assert sorted(dump) == ["config", "file", "generation"]
    assert dump["generation"] == 1
    assert dump["file"] == p.path
    cfg = dump["config"]
    assert [l["name"] for l in cfg["listeners"]] == ["in"]
    assert cfg["listeners"][0]["address"] == f"127.0.0.1:{port}"
    assert [c["name"] for c in cfg["clusters"]] == ["backend"]
    assert json.dumps(cfg["clusters"][0]).count(f"127.0.0.1:{backend.port}") == 1
    assert [t["name"] for t in cfg["route_tables"]] == ["rt"]


def rich_config(port, mtls_port, backend_port, certs, workdir):
    """Most of the format, defaults and non-defaults, for the dump tests."""
    return {
        "node": {"id": "web-0", "workload": "web", "namespace": "default",
                 "service": "web.default.svc.cluster.local",
                 "principal": "spiffe://cluster.local/ns/default/sa/web"},
        "drain_timeout": "2.5s",
        "log_level": "debug",
        "limits": {"max_headers": 50, "buffer_size": 16384,
                   "http2": {"max_concurrent_streams": 64}},
        "access_log": {"enabled": True, "path": os.path.join(workdir, "access.log")},
        "tls": [{"name": "id", "cert": certs["server_cert"], "key": certs["server_key"],
                 "ca": certs["ca"], "trust_domain": "cluster.local", "min_version": "1.2"}],
        "listeners": [
            {"name": "in", "address": f"127.0.0.1:{port}", "protocol": "auto",
             "route_table": "rt", "tcp_cluster": "backend",
             "http": {"xff": "off", "request_id": "always"},
             "timeouts": {"detect": "250ms", "idle": "1m30s"},
             "authorization": {"rules": [{"action": "DENY", "paths": ["/admin*"]}]}},
            {"name": "mtls", "address": f"127.0.0.1:{mtls_port}",
             "tls": {"mode": "STRICT", "context": "id"}, "route_table": "rt"},
        ],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*", "web.example.com:8080"],
            "routes": [
                {"name": "canary",
                 "match": {"path": {"exact": "/v1/items", "ignore_case": True},
                           "methods": ["GET"],
                           "headers": [{"name": "x-canary", "exact": "1"},
                                       {"name": "x-debug", "present": True, "invert": True},
                                       {"name": ":scheme", "exact": "http"},
                                       {"name": ":authority", "suffix": ".example.com"}],
                           "query_params": [{"name": "v", "exact": "2"},
                                            {"name": "id", "regex": "[0-9]+"},
                                            {"name": "tag", "prefix": "a"},
                                            {"name": "debug", "present": True}]},
                 "weighted_clusters": [{"cluster": "backend", "weight": 90,
                                        "request_headers": {"set": {"x-dest": "backend"}}},
                                       {"cluster": "mesh", "weight": 10,
                                        "response_headers": {"remove": ["server"]}}],
                 "timeout": "15s", "rewrite": {"prefix": "/v2", "host": "backend.internal"}},
                {"match": {"path": {"regex": "/items/[0-9]+"}},
                 "direct_response": {"status": 404, "body": 'no "such" item\n'}},
                {"name": "moved", "match": {"path": {"prefix": "/old/"}},
                 "redirect": {"scheme": "https", "host": "new.example", "port": 8443,
                              "prefix": "/new/", "code": 308}},
                {"name": "slow", "match": {"path": {"prefix": "/slow"}}, "cluster": "backend",
                 "fault": {"delay": {"fixed": "1.5s", "percent": 12.5},
                           "abort": {"grpc_status": 14, "percent": 0.0001}}},
                {"name": "rest", "cluster": "backend",
                 "cors": {"allow_origins": [{"exact": "https://a.example"},
                                            {"regex": "https://.*[.]b[.]example"}],
                          "allow_methods": ["GET", "PUT"], "max_age": "10m",
                          "unmatched_preflights": "ignore"},
                 "request_headers": {"remove": ["x-debug"], "set": {"x-route": "rest"},
                                     "add": {"x-trace": "1", "x-empty": ""}},
                 "response_headers": {"set": {"cache-control": "no-store"}}}]}]}],
        "clusters": [
            {"name": "backend", "service": "backend.default.svc.cluster.local",
             "lb": "least_request", "connect_timeout": "250ms",
             "pool": {"idle_timeout": "30s", "max_idle": 8},
             "endpoints": [{"address": f"127.0.0.1:{backend_port}", "weight": 3,
                            "workload": "backend-0"}]},
            {"name": "mesh", "tls": {"context": "id",
                                     "server_ids": ["spiffe://cluster.local/ns/default/sa/server"],
                                     "sni": "mesh.local"},
             "protocol": "http2", "http2": {"max_streams_per_connection": 50},
             "endpoints": [{"address": "127.0.0.1:1"}, {"address": "[::1]:1"}]},
        ],
    }


@pytest.mark.parametrize("kind", ["simple", "rich"])
def test_config_dump_is_a_configuration(proxies, backend, certs, workdir, kind):
    """What `trellis ctl proxy-config` will print: the "config" of /config_dump,
    saved alone, passes `trellis proxy --check`, and a proxy started from it
    runs the same configuration (its dump is the same) and serves."""
    port = free_port()
    cfg = simple_config(port, backend.port) if kind == "simple" else \
        rich_config(port, free_port(), backend.port, certs, workdir)
    p = proxies(cfg)
    status, body = p.admin("/config_dump")
    assert status == 200, body
    dump = json.loads(body)
    written = dump["config"]
    # Defaults are left out; what was set is there, key paths included (the
    # endpoint is on the 0600 socket; --check reads the files).
    if kind == "simple":
        assert sorted(written) == ["admin", "clusters", "listeners", "route_tables", "workers"]
        assert written["clusters"] == [{"name": "backend",
                                        "endpoints": [{"address": f"127.0.0.1:{backend.port}"}]}]
    else:
        assert written["limits"] == {"max_headers": 50, "http2": {"max_concurrent_streams": 64}}
        assert written["tls"][0]["key"] == certs["server_key"]
        assert written["listeners"][0]["timeouts"] == {"detect": "250ms", "idle": "1m30s"}
        routes = written["route_tables"][0]["virtual_hosts"][0]["routes"]
        assert routes[1]["direct_response"] == {"status": 404, "body": 'no "such" item\n'}
        assert routes[0]["match"]["query_params"] == cfg["route_tables"][0]["virtual_hosts"][0][
            "routes"][0]["match"]["query_params"]
        assert routes[2]["redirect"] == {"scheme": "https", "host": "new.example", "port": 8443,
                                         "prefix": "/new/", "code": 308}
        assert routes[3]["fault"] == {"delay": {"fixed": "1.5s", "percent": 12.5},
                                      "abort": {"grpc_status": 14, "percent": 0.0001}}
        assert routes[4]["cors"]["max_age"] == "10m"
        assert routes[4]["request_headers"]["add"] == {"x-trace": "1", "x-empty": ""}
    path = os.path.join(workdir, "dumped.json")
    with open(path, "w") as f:
        f.write(json.dumps(written, indent=2))
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", path], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr

    p.stop()
    again = proxies(json.loads(json.dumps(written)), "again")
    status, body = again.admin("/config_dump")
    assert status == 200, body
    dump2 = json.loads(body)
    assert dump2["file"] == again.path
    assert dump2["config"] == written
    resp = http_raw(port, b"GET /rest HTTP/1.1\r\nHost: a\r\nX-Debug: 1\r\n"
                          b"Origin: https://x.b.example\r\nConnection: close\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 200 ")
    if kind == "rich":  # header edits, CORS and the redirect came through the dump
        head = resp.split(b"\r\n\r\n", 1)[0].lower()
        assert b"\r\ncache-control: no-store" in head
        assert b"\r\naccess-control-allow-origin: https://x.b.example" in head
        seen = dict(backend.requests[-1]["headers"])
        assert seen["x-route"] == "rest" and seen["x-trace"] == "1" and "x-debug" not in seen
        resp = http_raw(port, b"GET /old/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 308 ")
        assert b"\r\nlocation: https://new.example:8443/new/x" in resp.split(b"\r\n\r\n")[0].lower()


def test_config_dump_of_a_relative_config_checks_anywhere(proxies, backend, certs, workdir):
    """A proxy started as `trellis proxy --config ./proxy.yaml` with relative
    certificate paths holds its file by its absolute name: a reload finds the
    same file, /config_dump names it and prints absolute certificate paths,
    so the dump passes --check, and runs, from any other directory."""
    os.makedirs(os.path.join(workdir, "certs"))
    rel = {}
    for k in ("server_cert", "server_key", "ca"):
        rel[k] = os.path.join("certs", os.path.basename(certs[k]))
        with open(certs[k], "rb") as src, open(os.path.join(workdir, rel[k]), "wb") as dst:
            dst.write(src.read())
    port, mtls_port = free_port(), free_port()
    cfg = simple_config(port, backend.port)
    cfg["tls"] = [{"name": "id", "cert": rel["server_cert"], "key": rel["server_key"],
                   "ca": rel["ca"]}]
    cfg["listeners"].append({"name": "mtls", "address": f"127.0.0.1:{mtls_port}",
                             "tls": {"mode": "STRICT", "context": "id"}, "route_table": "rt"})
    p = proxies(cfg, start=False)
    p.start(cwd=workdir, config_arg="./" + os.path.basename(p.path))

    def mtls_get(path):
        r = subprocess.run(["curl", "-sS", "--cert", certs["client_cert"], "--key",
                            certs["client_key"], "--cacert", certs["ca"], "--resolve",
                            f"server:{mtls_port}:127.0.0.1", "-o", "/dev/null", "-w",
                            "%{http_code}", f"https://server:{mtls_port}{path}"],
                           capture_output=True, text=True, timeout=30)
        return r.stdout, r.stderr

    assert mtls_get("/before") == ("200", "")
    status, body = p.admin("/config_dump")
    assert status == 200, body
    dump = json.loads(body)
    assert dump["file"] == p.path  # absolute, without the "./"
    written = dump["config"]
    assert [written["tls"][0][k] for k in ("cert", "key", "ca")] == \
        [os.path.join(workdir, rel[k]) for k in ("server_cert", "server_key", "ca")]
    # A reload by signal reads the same file (by its absolute name).
    p.signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and json.loads(p.admin("/config_dump")[1])["generation"] < 2:
        time.sleep(0.05)
    assert json.loads(p.admin("/config_dump")[1])["generation"] == 2, p.read_log()

    elsewhere = os.path.join(workdir, "elsewhere")
    os.makedirs(elsewhere)
    path = os.path.join(elsewhere, "dumped.json")
    with open(path, "w") as f:
        f.write(json.dumps(written, indent=2))
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", "dumped.json"],
                       capture_output=True, text=True, timeout=30, cwd=elsewhere)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", path], capture_output=True,
                       text=True, timeout=30, cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr

    p.stop()
    again = proxies(json.loads(json.dumps(written)), "again", start=False)
    again.start(cwd="/")
    assert mtls_get("/after") == ("200", "")
    assert [r["path"] for r in backend.requests] == ["/before", "/after"]


def debug_lines(proxy):
    return [l for l in proxy.read_log().splitlines() if re.search(r"Z debug \[", l)]


def test_logging_level(proxies):
    # A cluster whose endpoint refuses connections, and a malformed request:
    # both are logged at debug level only.
    port = free_port()
    p = proxies(simple_config(port, free_port()))

    def activity():
        assert http_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") \
            .startswith(b"HTTP/1.1 503")
        assert http_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n") \
            .startswith(b"HTTP/1.1 400")
        time.sleep(0.1)

    assert p.admin("/logging") == (200, "level: info\n")
    activity()
    assert debug_lines(p) == []

    status, body = p.admin("/logging?level=debug", method="POST")
    assert status == 200 and body == "level: debug\n"
    assert p.admin("/logging") == (200, "level: debug\n")
    activity()
    assert len(debug_lines(p)) >= 1, p.read_log()

    status, body = p.admin("/logging?level=loud", method="POST")
    assert status == 400, body
    assert p.admin("/logging") == (200, "level: debug\n")
    status, body = p.admin("/logging?level=warn", method="POST")
    assert status == 200
    assert p.admin("/logging") == (200, "level: warn\n")
    n = len(debug_lines(p))
    activity()
    assert len(debug_lines(p)) == n


def test_unknown_path_404(proxies, backend):
    port = free_port()
    p = proxies(simple_config(port, backend.port))
    for path in ("/nope", "/stats", "/ready/x", "/config_dump/../ready"):
        status, _ = p.admin(path)
        assert status == 404, path
    raw = http_raw(p.admin_port, b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 404 ")


def slow_server(delay):
    """One-thread HTTP server answering every request after `delay` seconds."""
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"slow")

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", free_port()), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def slow():
    srv = slow_server(1.5)
    yield srv
    srv.shutdown()
    srv.server_close()


def test_ready_503_while_draining(proxies, slow):
    port = free_port()
    cfg = simple_config(port, slow.server_address[1])
    cfg["drain_timeout"] = "5s"
    p = proxies(cfg)
    done = {}

    def request():
        done["resp"] = http_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)

    t = threading.Thread(target=request)
    t.start()
    time.sleep(0.3)
    p.signal(signal.SIGTERM)
    time.sleep(0.2)
    status, body = p.admin("/ready")
    assert status == 503, body
    t.join(10)
    assert done["resp"].startswith(b"HTTP/1.1 200")
    assert p.proc.wait(timeout=5) == 0


@pytest.mark.parametrize("address", ["0.0.0.0:{port}", "[::]:{port}"])
def test_non_loopback_admin_refused(workdir, backend, address):
    port, admin_port = free_port(), free_port()
    cfg = simple_config(port, backend.port)
    cfg["admin"] = {"address": address.format(port=admin_port)}
    path = os.path.join(workdir, "admin.yaml")
    with open(path, "w") as f:
        f.write(json.dumps(cfg, indent=2))
    proc = subprocess.Popen([TRELLIS, "proxy", "--config", path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "admin.address" in err and "loopback" in err, err
    assert address.format(port=admin_port) in err
    for p in (port, admin_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p), timeout=0.5).close()


# ---------------------------------------------------------------- the admin socket

def unix_request(path, data, timeout=5):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_privileged_calls_refused_over_tcp(proxies, backend):
    p = proxies(simple_config(free_port(), backend.port))
    sock = p.admin_socket
    for method, path in (("POST", "/logging?level=debug"), ("GET", "/logging"),
                         ("GET", "/config_dump"), ("HEAD", "/config_dump")):
        status, body = p.admin_tcp(path, method=method)
        assert status == 403, (method, path, status, body)
        if method != "HEAD":
            assert body == f"{path.split('?')[0]} is only served on the admin socket {sock}\n"
    # Nothing changed: the level is still info, and debug lines do not appear.
    assert p.admin_unix("/logging") == (200, "level: info\n")
    assert debug_lines(p) == []
    # Probes and scrapes stay on TCP.
    assert p.admin_tcp("/ready") == (200, "LIVE\n")
    status, text = p.admin_tcp("/stats/prometheus")
    assert status == 200 and "trellis_config_generation 1" in text


def test_privileged_calls_over_the_socket(proxies, backend):
    port = free_port()
    p = proxies(simple_config(port, backend.port))
    status, body = p.admin_unix("/config_dump")
    assert status == 200
    assert json.loads(body)["config"]["listeners"][0]["address"] == f"127.0.0.1:{port}"
    assert p.admin_unix("/logging?level=debug", method="POST") == (200, "level: debug\n")
    assert p.admin_unix("/logging") == (200, "level: debug\n")
    assert p.admin_unix("/logging?level=info", method="POST") == (200, "level: info\n")
    # Everything is served on the socket, the unprivileged calls too.
    assert p.admin_unix("/ready") == (200, "LIVE\n")
    assert p.admin_unix("/stats/prometheus")[0] == 200
    assert p.admin_unix("/nope")[0] == 404


def test_without_socket_privileged_calls_are_off(proxies, backend):
    cfg = simple_config(free_port(), backend.port)
    cfg["admin"] = {"address": f"127.0.0.1:{free_port()}"}
    p = proxies(cfg)
    assert p.admin_socket is None
    status, body = p.admin("/config_dump")
    assert status == 403
    assert body == ("/config_dump is only served on the admin socket, and none is configured "
                    "(admin.socket)\n")
    assert p.admin("/logging?level=debug", method="POST")[0] == 403
    assert p.admin("/ready") == (200, "LIVE\n")
    assert [f for f in os.listdir(p.workdir) if f.endswith(".sock")] == []


def test_socket_mode_and_other_users(proxies, backend, workdir):
    p = proxies(simple_config(free_port(), backend.port))
    st = os.lstat(p.admin_socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    # Let other users reach the directory, so that only the socket's own mode
    # stands between them and the admin calls.
    os.chmod(workdir, 0o755)
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n"
             "    s.connect(sys.argv[1])\n"
             "except PermissionError:\n"
             "    print('EACCES'); sys.exit(0)\n"
             "s.sendall(b'GET /config_dump HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n')\n"
             "print(s.recv(12).decode())\n")

    def as_nobody():
        r = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", probe,
                            p.admin_socket], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    assert os.geteuid() == 0  # runuser needs root; the test machine runs as root
    assert as_nobody() == "EACCES"
    # The control: with the mode opened up, the same user gets in.
    os.chmod(p.admin_socket, 0o666)
    assert as_nobody() == "HTTP/1.1 200"
    os.chmod(p.admin_socket, 0o600)


def start_proxy(workdir, cfg, name="adm"):
    """Starts a proxy on its own (no Proxy defaults); returns (proc, log path)."""
    path = os.path.join(workdir, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(json.dumps(cfg, indent=2))
    log = os.path.join(workdir, f"{name}.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([TRELLIS, "proxy", "--config", path], stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, path, log


def wait_exit(proc, timeout=10):
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def test_socket_removed_at_exit_and_stale_one_replaced(proxies, backend, workdir):
    sock = os.path.join(workdir, "stale.sock")
    # A socket file left by a process that died: nobody listens on it.
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock)
    s.close()
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    cfg = simple_config(free_port(), backend.port)
    cfg["admin"] = {"address": f"127.0.0.1:{free_port()}", "socket": sock}
    p = proxies(cfg)
    assert p.admin_socket == sock
    assert p.admin("/config_dump")[0] == 200
    assert "removed stale socket " + sock in p.read_log()
    p.stop()
    assert p.proc.returncode == 0
    assert not os.path.lexists(sock)


def test_socket_path_taken_is_an_error(backend, workdir):
    # A regular file at the path is not ours to delete.
    path = os.path.join(workdir, "file.sock")
    with open(path, "w") as f:
        f.write("keep me")
    cfg = simple_config(free_port(), backend.port)
    cfg["admin"] = {"address": f"127.0.0.1:{free_port()}", "socket": path}
    proc, _, log = start_proxy(workdir, cfg, "file")
    assert wait_exit(proc) != 0
    assert f"admin.socket {path} exists and is not a socket; not replacing it" in read(log)
    assert read(path) == "keep me"

    # A socket somebody listens on is in use.
    live = os.path.join(workdir, "live.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(live)
    server.listen(4)
    try:
        cfg = simple_config(free_port(), backend.port)
        cfg["admin"] = {"address": f"127.0.0.1:{free_port()}", "socket": live}
        proc, _, log = start_proxy(workdir, cfg, "live")
        assert wait_exit(proc) != 0
        assert f"admin.socket {live} is in use by another process" in read(log)
        assert stat.S_ISSOCK(os.lstat(live).st_mode)
    finally:
        server.close()


def test_reload_that_moves_the_socket_is_reported(proxies, backend, workdir):
    port = free_port()
    p = proxies(simple_config(port, backend.port))
    old = p.admin_socket
    new = os.path.join(workdir, "moved.sock")
    cfg = simple_config(port, backend.port)
    cfg["admin"] = dict(p.config["admin"], socket=new)
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    deadline = time.time() + 5
    while p.metric("trellis_config_generation") < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert p.metric("trellis_config_generation") == 2
    assert (f"admin.socket changed from {old} to {new}; it takes effect at the next restart"
            in p.read_log()), p.read_log()
    assert not os.path.lexists(new)
    assert p.admin_unix("/config_dump")[0] == 200  # still on the old socket
