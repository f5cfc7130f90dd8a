"""HTTP/1.1 proxying behaviour of trellis against real backends.

Backends: the RecordingBackend fixture, nginx, and small socket servers written
here (RawServer) where a test needs exact control of the bytes on the wire
(chunked responses with trailers, WebSocket, slow and closing servers).
"""
import base64
import gzip
import hashlib
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

sys.path.insert(0, os.path.dirname(__file__))
from conftest import RecordingBackend, simple_config, free_port  # noqa: E402

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# ---------------------------------------------------------------- helpers


class RawServer:
    """A threaded TCP server on 127.0.0.1; handler(conn, reader, server) runs per
    connection in a daemon thread. Counts connections; close() stops it all."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.records = []
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.live = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.live.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        c.settimeout(10)
        f = c.makefile("rb")
        try:
            self.handler(c, f, self)
        except (OSError, ValueError):
            pass
        finally:
            try:
                f.close()  # the makefile holds the fd open too
                c.close()
            except OSError:
                pass

    def close(self):
        self.stopped.set()
        self.sock.close()
        with self.lock:
            for c in self.live:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
        self.thread.join(timeout=2)


@pytest.fixture
def readable_workdir(workdir):
    """nginx workers run as an unprivileged user: let them read files in workdir."""
    os.chmod(workdir, 0o755)
    return workdir


@pytest.fixture
def raw_servers():
    started = []

    def make(handler):
        s = RawServer(handler)
        started.append(s)
        return s

    yield make
    for s in started:
        s.close()


def read_head(reader):
    """Read one message head: (start line, [(lower name, value)], raw head), None at EOF."""
    raw = b""
    while True:
        line = reader.readline(70000)
        if not line:
            return None
        raw += line
        if line in (b"\r\n", b"\n"):
            break
    lines = raw.split(b"\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(b":")
            headers.append((k.decode().lower(), v.strip().decode()))
    return lines[0].decode(), headers, raw


def wait_metric(p, want, name, timeout=3.0, **labels):
    """The proxy counts a request just after writing its response, so a client can
    see the response first: poll until the value is `want` (or time runs out) and
    return the last value, for an exact assertion."""
    deadline = time.monotonic() + timeout
    while True:
        v = p.metric(name, **labels)
        if v == want or time.monotonic() > deadline:
            return v
        time.sleep(0.02)


def hget(headers, name, default=None):
    for k, v in headers:
        if k == name:
            return v
    return default


def read_body(reader, headers):
    """Body per headers; for chunked returns the raw chunked bytes too."""
    if hget(headers, "transfer-encoding", "").lower() == "chunked":
        raw, body = b"", b""
        while True:
            line = reader.readline()
            raw += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    t = reader.readline()
                    raw += t
                    if t in (b"\r\n", b""):
                        return body, raw
            data = reader.read(size + 2)
            raw += data
            body += data[:-2]
    n = int(hget(headers, "content-length", "0"))
    data = reader.read(n) if n else b""
    return data, data


def recv_until_eof(s, timeout=5.0):
    s.settimeout(timeout)
    out = b""
    while True:
        c = s.recv(65536)
        if not c:
            return out
        out += c


def read_response(f):
    """Read one response from a file-like reader: (status, headers, body)."""
    status_line, headers, _ = read_head(f)
    status = int(status_line.split(" ")[1])
    if hget(headers, "transfer-encoding", "").lower() == "chunked":
        body, _ = read_body(f, headers)
    elif hget(headers, "content-length") is not None:
        body = f.read(int(hget(headers, "content-length")))
    else:
        body = b""
    return status, headers, body


def http_config(port, clusters, routes, **listener_extra):
    listener = {"name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt"}
    listener.update(listener_extra)
    return {
        "listeners": [listener],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"], "routes": routes}]}],
        "clusters": [{"name": name, "endpoints": [{"address": f"127.0.0.1:{p}"}]}
                     for name, p in clusters.items()],
    }


def get(port, path="/", headers=None, **kw):
    return requests.get(f"http://127.0.0.1:{port}{path}", headers=headers or {}, timeout=10,
                        **kw)


# ---------------------------------------------------------------- keep-alive / pooling


def test_keepalive_50_requests_one_upstream_connection(proxies, backend):
    port = free_port()
    p = proxies(simple_config(port, backend.port))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(50):
        c.request("GET", f"/k/{i}")
        r = c.getresponse()
        assert r.status == 200
        assert json.loads(r.read())["path"] == f"/k/{i}"
    c.close()
    assert len(backend.requests) == 50
    assert backend.connections == 1
    # A second, later client is served on the same pooled upstream connection.
    with requests.Session() as s:
        for i in range(10):
            assert s.get(f"http://127.0.0.1:{port}/second/{i}", timeout=10).status_code == 200
    assert len(backend.requests) == 60
    assert backend.connections == 1
    assert wait_metric(p, 59, "trellis_upstream_requests_reused_total") == 59
    assert wait_metric(p, 1, "trellis_upstream_connections_total") == 1
    assert wait_metric(p, 2, "trellis_downstream_connections_total") == 2


def test_keepalive_nginx_one_upstream_connection(proxies, nginx):
    # $connection is nginx's serial number of the connection the request came on.
    n = nginx('location / { return 200 "$connection\\n"; }')
    port = free_port()
    proxies(simple_config(port, n.port))
    seen = set()
    with requests.Session() as s:
        for i in range(50):
            r = s.get(f"http://127.0.0.1:{port}/n/{i}", timeout=10)
            assert r.status_code == 200
            seen.add(r.text)
    with requests.Session() as s:
        for i in range(5):
            seen.add(s.get(f"http://127.0.0.1:{port}/m/{i}", timeout=10).text)
    assert len(seen) == 1, seen


# ---------------------------------------------------------------- header handling


def raw_request(port, data, timeout=5.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return recv_until_eof(s, timeout)


def test_hop_by_hop_headers_removed(proxies, backend):
    port = free_port()
    proxies(simple_config(port, backend.port))
    out = raw_request(port, (
        b"GET /h HTTP/1.1\r\nHost: a\r\n"
        b"Connection: close, X-Secret\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"TE: gzip\r\n"
        b"Upgrade: h2c\r\n"
        b"X-Secret: s3cret\r\n"
        b"X-Kept: yes\r\n\r\n"))
    assert out.startswith(b"HTTP/1.1 200 ")
    hdrs = dict(backend.requests[0]["headers"])
    names = [k for k, _ in backend.requests[0]["headers"]]
    for gone in ("connection", "keep-alive", "proxy-connection", "te", "upgrade", "x-secret",
                 "transfer-encoding", "trailer"):
        assert gone not in names, f"{gone} reached the backend: {backend.requests[0]['headers']}"
    assert hdrs["x-kept"] == "yes"
    assert hdrs["host"] == "a"
    # TE: trailers is the one TE value that is forwarded.
    out = raw_request(port, b"GET /t HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n"
                            b"Connection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ")
    te = [v for k, v in backend.requests[1]["headers"] if k == "te"]
    assert te == ["trailers"]
    # The client asked to close: trellis says so.
    assert b"\r\nconnection: close\r\n" in out.lower()


def test_response_hop_by_hop_removed(proxies, raw_servers):
    def handler(c, f, srv):
        while read_head(f):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=9\r\n"
                      b"Connection: X-Internal\r\nX-Internal: leak\r\nX-Public: ok\r\n\r\nok")

    srv = raw_servers(handler)
    port = free_port()
    proxies(simple_config(port, srv.port))
    r = get(port, "/")
    assert r.status_code == 200 and r.text == "ok"
    assert r.headers["x-public"] == "ok"
    assert "x-internal" not in r.headers
    assert "keep-alive" not in r.headers


def test_forwarded_headers_and_request_id(proxies, backend):
    port = free_port()
    p = proxies(simple_config(port, backend.port, http={"xfp": True}))
    with requests.Session() as s:
        s.get(f"http://127.0.0.1:{port}/1", headers={"X-Forwarded-For": "1.2.3.4",
                                                      "X-Forwarded-Proto": "https"}, timeout=10)
        s.get(f"http://127.0.0.1:{port}/2", headers={"X-Request-Id": "my-id-123"}, timeout=10)
        s.get(f"http://127.0.0.1:{port}/3", timeout=10)
    r1, r2, r3 = (dict(r["headers"]) for r in backend.requests)
    assert r1["x-forwarded-for"] == "1.2.3.4, 127.0.0.1"
    assert [v for k, v in backend.requests[0]["headers"] if k == "x-forwarded-proto"] == ["http"]
    assert UUID4.match(r1["x-request-id"]), r1["x-request-id"]
    assert r2["x-forwarded-for"] == "127.0.0.1"
    assert r2["x-request-id"] == "my-id-123"
    assert UUID4.match(r3["x-request-id"])
    assert r3["x-request-id"] != r1["x-request-id"]
    assert wait_metric(p, 3, "istio_requests_total", response_code="200") == 3


@pytest.mark.parametrize("xfp", [None, False])
def test_xff_multiple_fields_joined_and_xfp_policy(proxies, backend, xfp):
    """xfp defaults to on (a spoofed X-Forwarded-Proto is replaced); with xfp: false
    the client's value passes untouched."""
    port = free_port()
    proxies(simple_config(port, backend.port, **({} if xfp is None else {"http": {"xfp": xfp}})))
    raw_request(port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n"
                      b"X-Forwarded-Proto: https\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n"
                      b"Connection: close\r\n\r\n")
    h = backend.requests[0]["headers"]
    assert [v for k, v in h if k == "x-forwarded-for"] == ["1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"]
    assert [v for k, v in h if k == "x-forwarded-proto"] == (["http"] if xfp is None else ["https"])


def test_request_id_always_replaced(proxies, backend):
    port = free_port()
    proxies(simple_config(port, backend.port, http={"request_id": "always"}))
    get(port, "/", {"X-Request-Id": "client-chosen"})
    ids = [v for k, v in backend.requests[0]["headers"] if k == "x-request-id"]
    assert len(ids) == 1 and UUID4.match(ids[0]), ids


def test_request_id_off_and_xff_off(proxies, backend):
    port = free_port()
    proxies(simple_config(port, backend.port, http={"request_id": "off", "xff": "off"}))
    get(port, "/", {"X-Request-Id": "kept-as-is", "X-Forwarded-For": "9.9.9.9"})
    get(port, "/")
    h1, h2 = (backend.requests[0]["headers"], backend.requests[1]["headers"])
    assert [v for k, v in h1 if k == "x-request-id"] == ["kept-as-is"]
    assert [v for k, v in h1 if k == "x-forwarded-for"] == ["9.9.9.9"]
    assert "x-request-id" not in dict(h2) and "x-forwarded-for" not in dict(h2)


# ---------------------------------------------------------------- chunked bodies


def capture_server(raw_servers):
    """Records (start line, headers, raw body bytes) of each request; answers 200
    with the decoded body's sha256."""
    def handler(c, f, srv):
        while True:
            h = read_head(f)
            if h is None:
                return
            line, headers, _ = h
            body, raw = read_body(f, headers)
            srv.records.append((line, headers, raw, body))
            out = hashlib.sha256(body).hexdigest().encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
    return raw_servers(handler)


def test_chunked_request_with_trailers_forwarded_verbatim(proxies, raw_servers):
    srv = capture_server(raw_servers)
    port = free_port()
    proxies(simple_config(port, srv.port))
    body = (b"5;name=\"v a\"\r\nhello\r\n"
            b"1\r\n \r\n"
            b"A\r\n0123456789\r\n"
            b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n")
    out = raw_request(port, b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                            b"TE: trailers\r\nConnection: close\r\n\r\n" + body)
    assert out.startswith(b"HTTP/1.1 200 ")
    line, headers, raw, decoded = srv.records[0]
    assert line == "POST /up HTTP/1.1"
    assert hget(headers, "transfer-encoding") == "chunked"
    assert hget(headers, "content-length") is None
    assert raw == body  # framing, extensions and trailers forwarded byte for byte
    assert decoded == b"hello 0123456789"


def test_chunked_request_bodies_python_and_curl(proxies, backend, workdir):
    port = free_port()
    proxies(simple_config(port, backend.port))
    parts = [os.urandom(n) for n in (1, 100, 4096, 70000, 3)]

    def gen():
        yield from parts

    r = requests.post(f"http://127.0.0.1:{port}/py", data=gen(), timeout=10)
    assert r.status_code == 200
    assert backend.requests[0]["body"] == b"".join(parts)
    assert dict(backend.requests[0]["headers"])["transfer-encoding"] == "chunked"
    path = os.path.join(workdir, "payload.bin")
    data = os.urandom(300000)
    with open(path, "wb") as f:
        f.write(data)
    cp = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                         "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{path}",
                         f"http://127.0.0.1:{port}/curl"], capture_output=True, timeout=20)
    assert cp.stdout == b"200", cp.stderr
    assert backend.requests[1]["body"] == data


CHUNKED_PARTS = [b"first-", b"x" * 20000, b"-middle-", os.urandom(5000), b"-last"]


def chunked_response_server(raw_servers):
    def handler(c, f, srv):
        while True:
            h = read_head(f)
            if h is None:
                return
            out = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" \
                  b"Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
            c.sendall(out)
            for part in CHUNKED_PARTS:
                c.sendall(b"%x;e=1\r\n%s\r\n" % (len(part), part))
                time.sleep(0.01)
            c.sendall(b"0\r\nX-Sum: 42\r\n\r\n")
    return raw_servers(handler)


def test_chunked_response_to_curl_python_and_http10(proxies, raw_servers, workdir):
    srv = chunked_response_server(raw_servers)
    port = free_port()
    proxies(simple_config(port, srv.port))
    whole = b"".join(CHUNKED_PARTS)
    # python requests (HTTP/1.1): decoded body intact
    r = get(port, "/c")
    assert r.status_code == 200
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.content == whole
    # curl
    out = os.path.join(workdir, "curl.out")
    cp = subprocess.run(["curl", "-sS", "-o", out, "-w", "%{http_code}",
                         f"http://127.0.0.1:{port}/c"], capture_output=True, timeout=20)
    assert cp.stdout == b"200", cp.stderr
    with open(out, "rb") as f:
        assert f.read() == whole
    # raw HTTP/1.1: chunk framing, extensions and trailers pass through verbatim
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /c HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        data = recv_until_eof(s)
    head, _, body = data.partition(b"\r\n\r\n")
    expect = b"".join(b"%x;e=1\r\n%s\r\n" % (len(p), p) for p in CHUNKED_PARTS) + \
        b"0\r\nX-Sum: 42\r\n\r\n"
    assert body == expect
    # HTTP/1.0 client: de-chunked body, no Transfer-Encoding, delimited by close
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /c HTTP/1.0\r\nHost: a\r\n\r\n")
        data = recv_until_eof(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert body == whole


def test_chunked_response_from_nginx(proxies, nginx, readable_workdir):
    workdir = readable_workdir
    text = os.path.join(workdir, "text.txt")
    with open(text, "wb") as f:
        f.write(b"line of compressible text\n" * 20000)
    n = nginx(f"chunked_transfer_encoding on; gzip on; gzip_min_length 0; "
              f"gzip_types text/plain; location /gz {{ alias {text}; default_type text/plain; }}")
    port = free_port()
    proxies(simple_config(port, n.port))
    r = get(port, "/gz", {"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["transfer-encoding"] == "chunked"
    with open(text, "rb") as f:
        assert r.content == f.read()
    # HTTP/1.0 through trellis: nginx still answers chunked to trellis (HTTP/1.1 upstream),
    # and trellis de-chunks.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /gz HTTP/1.0\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n")
        data = recv_until_eof(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"transfer-encoding" not in head.lower()
    with open(text, "rb") as f:
        assert gzip.decompress(body) == f.read()


# ---------------------------------------------------------------- 100 MiB streaming


class RssSampler:
    def __init__(self, proxy):
        self.proxy = proxy
        self.max = 0
        self.samples = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.max = max(self.max, self.proxy.rss_kib())
            self.samples += 1
            time.sleep(0.01)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.t.join()


BIG = 100 * 1024 * 1024


def test_100mib_response_streamed(proxies, nginx, readable_workdir):
    workdir = readable_workdir
    big = os.path.join(workdir, "big.bin")
    h = hashlib.sha256()
    with open(big, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(100):
            chunk = block[i:] + block[:i]
            h.update(chunk)
            f.write(chunk)
    n = nginx(f"location /big {{ alias {big}; }}")
    port = free_port()
    p = proxies(simple_config(port, n.port))
    got = hashlib.sha256()
    total = 0
    with RssSampler(p) as rss, socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        f = s.makefile("rb")
        status_line, headers, _ = read_head(f)
        assert status_line.startswith("HTTP/1.1 200")
        assert int(hget(headers, "content-length")) == BIG
        while True:
            c = f.read1(1 << 16)
            if not c:
                break
            total += len(c)
            got.update(c)
    assert total == BIG
    assert got.hexdigest() == h.hexdigest()
    assert rss.samples >= 3
    assert rss.max < 32 * 1024, f"proxy RSS peaked at {rss.max} KiB"


def upload_counter(raw_servers):
    def handler(c, f, srv):
        h = read_head(f)
        if h is None:
            return
        _, headers, _ = h
        digest, n = hashlib.sha256(), 0
        if hget(headers, "transfer-encoding") == "chunked":
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    while f.readline() not in (b"\r\n", b""):
                        pass
                    break
                left = size
                while left:
                    d = f.read1(min(left, 1 << 16))
                    if not d:
                        return
                    digest.update(d)
                    n += len(d)
                    left -= len(d)
                f.readline()
        else:
            left = int(hget(headers, "content-length"))
            while left:
                d = f.read1(min(left, 1 << 16))
                if not d:
                    return
                digest.update(d)
                n += len(d)
                left -= len(d)
        out = json.dumps({"n": n, "sha256": digest.hexdigest()}).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                  % (len(out), out))
    return raw_servers(handler)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_100mib_request_streamed(proxies, raw_servers, framing):
    srv = upload_counter(raw_servers)
    port = free_port()
    p = proxies(simple_config(port, srv.port))
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with RssSampler(p) as rss, socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        if framing == "length":
            s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n" % BIG)
        else:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(100):
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            if framing == "length":
                s.sendall(chunk)
            else:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if framing == "chunked":
            s.sendall(b"0\r\n\r\n")
        data = recv_until_eof(s, 20)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    res = json.loads(body)
    assert res == {"n": BIG, "sha256": digest.hexdigest()}
    assert rss.samples >= 3
    assert rss.max < 32 * 1024, f"proxy RSS peaked at {rss.max} KiB"


# ---------------------------------------------------------------- 100-continue, pipelining, HEAD


def test_expect_100_continue_with_curl(proxies, backend, workdir):
    port = free_port()
    proxies(simple_config(port, backend.port))
    path = os.path.join(workdir, "body.bin")
    data = os.urandom(5000)
    with open(path, "wb") as f:
        f.write(data)
    t0 = time.monotonic()
    cp = subprocess.run(["curl", "-sS", "-v", "-o", "/dev/null", "-w", "%{http_code}",
                         "-H", "Expect: 100-continue", "--expect100-timeout", "5",
                         "--data-binary", f"@{path}", f"http://127.0.0.1:{port}/e"],
                        capture_output=True, timeout=20)
    elapsed = time.monotonic() - t0
    assert cp.stdout == b"200", cp.stderr
    assert b"< HTTP/1.1 100 Continue" in cp.stderr
    # curl sent the body on the relayed 100, not after waiting out its 5 s timeout
    assert elapsed < 3, elapsed
    assert backend.requests[0]["body"] == data
    assert dict(backend.requests[0]["headers"])["expect"] == "100-continue"


def test_100_continue_reaches_client_before_body(proxies, backend):
    """The interim 100 from the backend is relayed at once, before the body is sent
    (a client waiting for it must not have to run into its own expect timeout)."""
    port = free_port()
    proxies(simple_config(port, backend.port))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        s.settimeout(1.5)
        try:
            first = s.recv(65536)
        except socket.timeout:
            first = b""
        s.sendall(b"hello")
        rest = recv_until_eof(s)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n"), first
    assert b"HTTP/1.1 200 OK\r\n" in first + rest
    assert backend.requests[0]["body"] == b"hello"


def test_pipelined_requests_answered_in_order(proxies, backend):
    port = free_port()
    proxies(simple_config(port, backend.port))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                  b"GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        f = s.makefile("rb")
        paths = []
        for _ in range(3):
            status, headers, body = read_response(f)
            assert status == 200
            paths.append(json.loads(body)["path"])
        assert f.read() == b""
    assert paths == ["/one", "/two", "/three"]
    assert [r["path"] for r in backend.requests] == ["/one", "/two", "/three"]
    assert backend.requests[1]["body"] == b"abc"


def test_head_204_304_framing_on_one_connection(proxies, nginx, readable_workdir):
    workdir = readable_workdir
    f_path = os.path.join(workdir, "page.html")
    with open(f_path, "wb") as f:
        f.write(b"<html>" + b"x" * 1000 + b"</html>")
    n = nginx(f"location /page {{ alias {f_path}; etag on; }} "
              f"location /nc {{ return 204; }}")
    port = free_port()
    proxies(simple_config(port, n.port))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        s.sendall(b"HEAD /page HTTP/1.1\r\nHost: a\r\n\r\n")
        line, headers, _ = read_head(f)
        assert line.startswith("HTTP/1.1 200")
        assert hget(headers, "content-length") == "1013"
        etag = hget(headers, "etag")
        assert etag
        s.sendall(b"GET /nc HTTP/1.1\r\nHost: a\r\n\r\n")
        line, headers, _ = read_head(f)  # would misparse if HEAD had body bytes after it
        assert line.startswith("HTTP/1.1 204")
        assert hget(headers, "transfer-encoding") is None
        s.sendall(b"GET /page HTTP/1.1\r\nHost: a\r\nIf-None-Match: %s\r\n\r\n" % etag.encode())
        line, headers, _ = read_head(f)
        assert line.startswith("HTTP/1.1 304")
        s.sendall(b"GET /page HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, headers, body = read_response(f)
        assert status == 200 and len(body) == 1013
        assert f.read() == b""


def test_head_with_content_length_from_python_backend(proxies, backend):
    port = free_port()
    proxies(simple_config(port, backend.port))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        s.sendall(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\n"
                  b"Connection: close\r\n\r\n")
        line, headers, _ = read_head(f)
        assert line.startswith("HTTP/1.1 200")
        assert int(hget(headers, "content-length")) > 0
        status, _, body = read_response(f)
        assert status == 200 and json.loads(body)["path"] == "/g"
        assert f.read() == b""


# ---------------------------------------------------------------- WebSocket


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_read_frame(f):
    b0, b1 = f.read(2)
    opcode, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
    if n == 126:
        n = int.from_bytes(f.read(2), "big")
    elif n == 127:
        n = int.from_bytes(f.read(8), "big")
    mask = f.read(4) if masked else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(n)))
    return opcode, data


def ws_frame(opcode, data):
    n = len(data)
    if n < 126:
        hdr = bytes([0x80 | opcode, n])
    elif n < 65536:
        hdr = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        hdr = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return hdr + data


def ws_echo_server(raw_servers):
    def handler(c, f, srv):
        h = read_head(f)
        if h is None:
            return
        line, headers, _ = h
        srv.records.append((line, headers))
        key = hget(headers, "sec-websocket-key").encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept)
        while True:
            opcode, data = ws_read_frame(f)
            if opcode == 8:
                c.sendall(ws_frame(8, data[:2]))
                return
            c.sendall(ws_frame(opcode, data))
    return raw_servers(handler)


def test_websocket_upgrade_passthrough(proxies, raw_servers):
    import websocket
    srv = ws_echo_server(raw_servers)
    port = free_port()
    p = proxies(simple_config(port, srv.port))
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/chat", timeout=5)
    try:
        for msg in ("hello", "x" * 300, "é unicode ✓", "y" * 70000):
            ws.send(msg)
            assert ws.recv() == msg
        ws.send_binary(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff"
    finally:
        ws.close()
    line, headers = srv.records[0]
    assert line == "GET /chat HTTP/1.1"
    assert hget(headers, "upgrade").lower() == "websocket"
    assert hget(headers, "connection").lower() == "upgrade"
    assert hget(headers, "sec-websocket-version") == "13"
    assert wait_metric(p, 1, "istio_requests_total", response_code="101") == 1


# ---------------------------------------------------------------- routing


def test_routing_no_route_direct_response_header_match_rewrite(proxies, backend):
    other = RecordingBackend()
    try:
        port = free_port()
        routes = [
            {"name": "canary", "match": {"path": {"prefix": "/svc"},
                                         "headers": [{"name": "x-canary", "exact": "1"}]},
             "cluster": "other"},
            {"name": "svc", "match": {"path": {"prefix": "/svc/"}}, "cluster": "main",
             "rewrite": {"prefix": "/v2/"}},
            {"name": "direct", "match": {"path": {"exact": "/health"}},
             "direct_response": {"status": 418, "body": "teapot\n"}},
        ]
        p = proxies(http_config(port, {"main": backend.port, "other": other.port}, routes))
        r = get(port, "/nothing")
        assert r.status_code == 404
        assert wait_metric(p, 1, "istio_requests_total", response_code="404",
                           response_flags="NR") == 1
        r = get(port, "/health")
        assert r.status_code == 418 and r.text == "teapot\n"
        # A direct response carries no flag (Envoy's DI is "delay injected").
        assert wait_metric(p, 1, "istio_requests_total", response_code="418",
                           response_flags="-") == 1
        r = get(port, "/svc/items?q=1")
        assert r.status_code == 200
        assert backend.requests[-1]["path"] == "/v2/items?q=1"
        r = get(port, "/svc/items", {"X-Canary": "1"})
        assert r.status_code == 200
        assert other.requests[-1]["path"] == "/svc/items"
        r = get(port, "/svc/items", {"X-Canary": "2"})
        assert backend.requests[-1]["path"] == "/v2/items"
        assert len(backend.requests) == 2 and len(other.requests) == 1
    finally:
        other.close()


def test_weighted_clusters_spread(proxies, nginx):
    na = nginx('location / { return 200 "a"; }')
    nb = nginx('location / { return 200 "b"; }')
    port = free_port()
    routes = [{"name": "split", "match": {"path": {"prefix": "/"}},
               "weighted_clusters": [{"cluster": "a", "weight": 50},
                                     {"cluster": "b", "weight": 50}]}]
    p = proxies(http_config(port, {"a": na.port, "b": nb.port}, routes))
    counts = {"a": 0, "b": 0}
    with requests.Session() as s:
        for i in range(200):
            r = s.get(f"http://127.0.0.1:{port}/w{i}", timeout=10)
            assert r.status_code == 200
            counts[r.text] += 1
    assert counts["a"] + counts["b"] == 200
    assert counts["a"] > 50 and counts["b"] > 50, counts
    assert wait_metric(p, 200, "istio_requests_total", response_code="200") == 200


# ---------------------------------------------------------------- upstream failures


def test_upstream_down_503_uf(proxies):
    port, dead = free_port(), free_port()
    p = proxies(simple_config(port, dead))
    r = get(port, "/")
    assert r.status_code == 503
    assert "connection failure" in r.text or "connect" in r.text
    assert wait_metric(p, 1, "istio_requests_total", response_code="503", response_flags="UF") == 1


def test_upstream_timeout_504_ut(proxies, raw_servers):
    def slow(c, f, srv):
        if read_head(f) is None:
            return
        srv.stopped.wait(2)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")

    srv = raw_servers(slow)
    port = free_port()
    cfg = simple_config(port, srv.port)
    cfg["route_tables"][0]["virtual_hosts"][0]["routes"][0]["timeout"] = "200ms"
    p = proxies(cfg)
    t0 = time.monotonic()
    r = get(port, "/slow")
    elapsed = time.monotonic() - t0
    assert r.status_code == 504
    assert 0.15 < elapsed < 1.5, elapsed
    assert wait_metric(p, 1, "istio_requests_total", response_code="504", response_flags="UT") == 1


def test_keepalive_race_server_closes_idle_connection(proxies, raw_servers):
    """The server answers one request per connection without 'Connection: close' and
    then closes after a short random delay, racing the proxy's reuse of the pooled
    connection. No client request may fail."""
    rnd = random.Random(1234)

    def one_shot(c, f, srv):
        h = read_head(f)
        if h is None:
            return
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(rnd.choice([0, 0.0005, 0.001, 0.002, 0.004]))

    srv = raw_servers(one_shot)
    port = free_port()
    p = proxies(simple_config(port, srv.port))
    failures = []
    with requests.Session() as s:
        for i in range(100):
            r = s.get(f"http://127.0.0.1:{port}/r{i}", timeout=10)
            if r.status_code != 200 or r.text != "ok":
                failures.append((i, r.status_code, r.text))
            time.sleep(rnd.choice([0, 0.0005, 0.001, 0.002, 0.003]))
    assert failures == []
    assert wait_metric(p, 100, "istio_requests_total", response_code="200") == 100
    assert p.metric("trellis_upstream_requests_resent_total") >= 0


def test_keepalive_race_deterministic_resend(proxies, raw_servers):
    """Worst case of the race: the pooled connection is closed by the server exactly
    when the next request arrives, with nothing sent back. Trellis re-sends each such
    request once on a fresh connection."""
    def close_on_second(c, f, srv):
        h = read_head(f)
        if h is None:
            return
        srv.records.append(h[0])
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        read_head(f)  # the next request on this connection: close without answering

    srv = raw_servers(close_on_second)
    port = free_port()
    p = proxies(simple_config(port, srv.port))
    with requests.Session() as s:
        for i in range(20):
            r = s.get(f"http://127.0.0.1:{port}/d{i}", timeout=10)
            assert (r.status_code, r.text) == (200, "ok"), i
    assert srv.records == [f"GET /d{i} HTTP/1.1" for i in range(20)]
    assert wait_metric(p, 19, "trellis_upstream_requests_resent_total") == 19
    assert srv.connections == 20


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
], ids=["cl_te", "two_cl", "te_gzip", "nul", "bare_lf", "unasked_101", "http2"])
def test_malformed_upstream_response_502(proxies, raw_servers, response):
    """Response-side smuggling: trellis never forwards an ambiguous response head."""
    def bad(c, f, srv):
        if read_head(f) is not None:
            c.sendall(response)
            srv.stopped.wait(2)

    srv = raw_servers(bad)
    port = free_port()
    p = proxies(simple_config(port, srv.port))
    out = raw_request(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 "), out[:300]
    assert int(re.search(rb"content-length: (\d+)", head).group(1)) == len(body)
    assert wait_metric(p, 1, "istio_requests_total", response_code="502",
                       response_flags="UPE") == 1


# ---------------------------------------------------------------- access log


def test_access_log_json_line(proxies, backend, workdir):
    port = free_port()
    log = os.path.join(workdir, "access.log")
    cfg = simple_config(port, backend.port)
    cfg["access_log"] = {"enabled": True, "path": log}
    proxies(cfg)
    r = get(port, "/logged?a=1")
    assert r.status_code == 200
    rid = dict(backend.requests[0]["headers"])["x-request-id"]
    deadline = time.monotonic() + 3
    lines = []
    while time.monotonic() < deadline:
        if os.path.exists(log):
            with open(log) as f:
                lines = [line for line in f.read().splitlines() if line]
            if lines:
                break
        time.sleep(0.02)
    assert len(lines) == 1, lines
    e = json.loads(lines[0])
    assert e["method"] == "GET"
    assert e["path"] == "/logged?a=1"
    assert e["response_code"] == 200
    assert e["request_id"] == rid
    assert e["response_flags"] == "-"
    assert e["upstream_host"] == f"127.0.0.1:{backend.port}"
