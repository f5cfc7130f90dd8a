"""The admin endpoint: /ready, /stats/prometheus, /config_dump, /logging, errors,
and the loopback-only rule."""
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
    assert dump["generation"] == 1
    assert [l["name"] for l in dump["listeners"]] == ["in"]
    assert dump["listeners"][0]["address"] == f"127.0.0.1:{port}"
    assert [c["name"] for c in dump["clusters"]] == ["backend"]
    assert json.dumps(dump["clusters"][0]).count(f"127.0.0.1:{backend.port}") == 1
    assert [t["name"] for t in dump["route_tables"]] == ["rt"]


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
