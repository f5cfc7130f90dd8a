"""Fixtures for integration tests: real trellis processes, real backends.

Everything listens on 127.0.0.1 ports picked free at run time. Every process a
test starts is stopped by its PID at teardown.
"""
import http.server
import json
import os
import random
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import pki  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRELLIS = os.environ.get("TRELLIS_BIN", os.path.join(ROOT, "build", "trellis"))


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except OSError:
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
_rng = random.Random(os.getpid() ^ int(time.time() * 1000))
# Ports handed out lately: a test often takes several before it binds any,
# and a random draw may repeat one (then the second server cannot bind).
_RECENT_MAX = 4096
_recent = []
_recent_set = set()


def free_port():
    """A port that is free now and outside the kernel's ephemeral range, so
    that no outgoing connection of this or another test can take it between
    now and the moment a server binds it."""
    lo, hi = 20000, min(_EPHEMERAL[0], 32768) - 1
    for _ in range(200):
        port = _rng.randint(lo, hi)
        if _EPHEMERAL[0] <= port <= _EPHEMERAL[1] or port in _recent_set:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _recent.append(port)
        _recent_set.add(port)
        if len(_recent) > _RECENT_MAX:
            _recent_set.discard(_recent.pop(0))
        return port
    raise RuntimeError("no free port outside the ephemeral range")


def wait_port(port, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"port {port} not listening after {timeout}s")


def to_yaml(obj, indent=0):
    """Minimal YAML emitter (JSON is valid YAML 1.2, but block style reads better in logs)."""
    return json.dumps(obj, indent=2)


# Admin calls served only on the admin Unix socket (admin.socket).
PRIVILEGED_ADMIN_PATHS = ("/config_dump", "/logging")


def stop_process(proc, timeout=10):
    """SIGTERM a process we started and wait for it; SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Proxy:
    """A running `trellis proxy` with its config file, admin port, admin socket and log."""

    def __init__(self, workdir, config, name="proxy"):
        self.workdir = workdir
        self.name = name
        self.admin_port = free_port()
        self.admin_default = {"address": f"127.0.0.1:{self.admin_port}",
                              "socket": os.path.join(workdir, f"{name}.admin.sock")}
        config.setdefault("workers", 1)
        self.path = os.path.join(workdir, f"{name}.yaml")
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.proc = None
        self.write_config(config)
        # The admin endpoint is set up at start; reloads do not move it.
        address = self.config["admin"].get("address", "127.0.0.1:15000")
        self.admin_port = int(address.rsplit(":", 1)[1])
        self.admin_socket = self.config["admin"].get("socket")

    def write_config(self, config):
        # A config without an admin section keeps this proxy's, so that a
        # reload does not ask to move the admin endpoint.
        config.setdefault("admin", dict(self.admin_default))
        self.config = config
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(to_yaml(config))
        os.replace(tmp, self.path)  # atomic: the proxy never sees half a file

    def start(self, extra_args=(), wait=True, cwd=None, config_arg=None):
        """cwd: the directory the proxy runs in; config_arg: its --config as
        typed there (a relative name, say), else the absolute path."""
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [TRELLIS, "proxy", "--config", config_arg or self.path, *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.read_log()}")
            try:
                if self.admin("/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} not ready:\n{self.read_log()}")

    def admin(self, path, method="GET"):
        """(status, body) of an admin call: the privileged ones over the admin
        socket when this proxy has one, the rest over loopback TCP."""
        if path.split("?", 1)[0] in PRIVILEGED_ADMIN_PATHS and self.admin_socket:
            return self.admin_unix(path, method)
        return self.admin_tcp(path, method)

    def admin_tcp(self, path, method="GET"):
        with socket.create_connection(("127.0.0.1", self.admin_port), timeout=5) as s:
            return _admin_exchange(s, path, method)

    def admin_unix(self, path, method="GET"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.admin_socket)
            return _admin_exchange(s, path, method)

    def update(self, section, name, field=None, value=None, remove=False):
        """A partial update over the admin socket: PUT /config/SECTION/NAME[/FIELD]
        with `value` (YAML/JSON text, or an object sent as JSON), or DELETE.
        Returns (status, body)."""
        path = f"/config/{section}/{name}" + (f"/{field}" if field else "")
        body = b""
        if not remove:
            body = (value if isinstance(value, str) else json.dumps(value)).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.admin_socket)
            return _admin_exchange(s, path, "DELETE" if remove else "PUT", body)

    def metrics(self):
        return self.admin("/stats/prometheus")[1]

    def metric(self, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15):
        stop_process(self.proc, timeout)

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def pss_kib(self):
        with open(f"/proc/{self.proc.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
        return 0


def _admin_exchange(s, path, method, body=None):
    length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: admin\r\n{length}\r\n".encode() + (body or b""))
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode()


def simple_config(listen_port, backend_port, **listener_extra):
    """One HTTP listener routing everything to one backend."""
    listener = {"name": "in", "address": f"127.0.0.1:{listen_port}", "route_table": "rt"}
    listener.update(listener_extra)
    return {
        "listeners": [listener],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": "backend"}]}]}],
        "clusters": [{"name": "backend", "endpoints": [{"address": f"127.0.0.1:{backend_port}"}]}],
    }


SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                   "runtime error:")


def sanitizer_checked(proxies):
    """For a fixture wrapping `proxies` (`yield from sanitizer_checked(proxies)`):
    at teardown every proxy it started is stopped and its log must be free of
    sanitizer reports (meaningful with an ASan/UBSan build)."""
    started = []

    def make(config, name="proxy", **kw):
        p = proxies(config, name, **kw)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()
    for p in started:
        log = p.read_log()
        bad = [m for m in SANITIZER_MARKS if m in log]
        assert not bad, f"sanitizer output in {p.name} log:\n{log[-6000:]}"


class ThreadedTCPServer:
    """A listening socket on 127.0.0.1 (a free port unless given); each
    accepted connection runs self.serve(conn) in its own thread. Subclasses
    set their own state before calling this constructor (the accept thread
    starts at once) and define serve(). close() closes the listener and every
    accepted connection."""

    def __init__(self, port=None, backlog=64):
        self.port = port or free_port()
        self.conns = []
        self.connections = 0
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(backlog)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.connections += 1
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        raise NotImplementedError

    def close(self):
        for s in [self.lsock, *self.conns]:
            try:
                s.close()
            except OSError:
                pass


class RecordingBackend:
    """A threaded HTTP/1.1 server that records every request it receives
    (raw head and body) and answers 200 with a JSON echo of what it saw.
    host: the loopback address to listen on (127.0.0.x, for backends that
    share a port behind a DNS name); delay: seconds before each answer."""

    def __init__(self, port=None, host="127.0.0.1", delay=0.0):
        self.port = port or free_port()
        self.host = host
        self.delay = delay
        self.requests = []
        self.connections = 0
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                backend.connections += 1

            def _handle(self):
                body = b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b""):
                                pass
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                elif self.headers.get("Content-Length"):
                    body = self.rfile.read(int(self.headers["Content-Length"]))
                backend.requests.append({
                    "method": self.command, "path": self.path,
                    "headers": [(k.lower(), v) for k, v in self.headers.items()],
                    "body": body})
                if backend.delay:
                    time.sleep(backend.delay)
                out = json.dumps({"method": self.command, "path": self.path,
                                  "headers": dict((k.lower(), v) for k, v in self.headers.items()),
                                  "body_len": len(body)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            # socketserver's listen(5) drops SYNs of a burst of proxied
            # connections (the proxy then answers 503 UF after its 1 s
            # connect timeout): a backend under test accepts a burst.
            request_queue_size = 128

        self.server = Server((host, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Nginx:
    """nginx as a backend, with its own prefix, config and PID."""

    def __init__(self, workdir, server_block, port=None):
        self.port = port or free_port()
        self.dir = os.path.join(workdir, f"nginx-{self.port}")
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        conf = f"""
worker_processes 1;
error_log {self.dir}/logs/error.log;
pid {self.dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_max_body_size 0;
  client_body_temp_path {self.dir}/body;
  proxy_temp_path {self.dir}/proxy;
  fastcgi_temp_path {self.dir}/fcgi;
  uwsgi_temp_path {self.dir}/uwsgi;
  scgi_temp_path {self.dir}/scgi;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{self.port};
    {server_block.replace('$PORT', str(self.port)).replace('$DIR', self.dir)}
  }}
}}
"""
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-c", self.conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def workdir():
    if os.environ.get("KEEP_WORKDIR"):
        d = tempfile.mkdtemp(prefix="trellis-it-")
        print("workdir", d)
        yield d
        return
    with tempfile.TemporaryDirectory(prefix="trellis-it-") as d:
        yield d


@pytest.fixture
def proxies(workdir):
    """Factory: proxies(config, name) -> started Proxy; all stopped at teardown."""
    started = []

    def make(config, name="proxy", start=True, **kw):
        p = Proxy(workdir, config, name=name)
        started.append(p)
        if start:
            p.start(**kw)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def backend():
    b = RecordingBackend()
    yield b
    b.close()


@pytest.fixture
def nginx(workdir):
    started = []

    def make(server_block):
        n = Nginx(workdir, server_block)
        started.append(n)
        return n

    yield make
    for n in started:
        n.close()


@pytest.fixture(scope="session")
def certs():
    """The standard PKI set (CA, foreign CA, client and server SVIDs)."""
    with tempfile.TemporaryDirectory(prefix="trellis-pki-") as d:
        paths = pki.write_standard_set(d)
        yield paths


@pytest.fixture
def pkidir(workdir):
    d = os.path.join(workdir, "pki")
    os.makedirs(d, exist_ok=True)
    return d
