"""Regression tests for bugs a review found in the HTTP and TCP proxy paths.

One test per bug; each drives the exact trigger of the original reproduction
against a real `trellis proxy` and asserts the correct behaviour: status,
bytes, counters, timing, and that the process is still alive and serving.
Every test also checks the proxy log for sanitizer reports, so running the
file with TRELLIS_BIN pointing at an ASan/UBSan build catches memory errors
that a normal build would survive by luck.
"""
import os
import signal
import socket
import struct
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port, simple_config  # noqa: E402


# ---------------------------------------------------------------- helpers

class RawBackend:
    """A raw TCP server: handler(conn, first_bytes) runs in a thread per
    accepted connection. Counts connections; everything is closed by close()."""

    def __init__(self, handler, backlog=128):
        self.port = free_port()
        self.handler = handler
        self.conns = 0
        self.socks = []
        self.stopping = False
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(backlog)
        self.ls.settimeout(0.1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            self.conns += 1
            self.socks.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            self.handler(c)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stopping = True
        self.thread.join(timeout=2)
        self.ls.close()
        for c in self.socks:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


@pytest.fixture
def raw_backends():
    made = []

    def make(handler, **kw):
        b = RawBackend(handler, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def recv_request(c, buf=b""):
    """Read one request head (no body) from a backend connection; returns
    (head, rest) or (None, b"") at EOF."""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d:
            return None, b""
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def read_response(s, timeout=5.0, buf=b""):
    """Read one Content-Length framed response from a client socket.
    Returns (status, headers, body, leftover, elapsed)."""
    t0 = time.monotonic()
    s.settimeout(timeout)
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise AssertionError(f"EOF before a complete response head; got {buf[:200]!r}")
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    assert "transfer-encoding" not in headers, headers
    n = int(headers.get("content-length", "0")) if status not in (204, 304) else 0
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            raise AssertionError(f"EOF after {len(rest)} of {n} body bytes")
        rest += d
    return status, headers, rest[:n], rest[n:], time.monotonic() - t0


def get_once(port, path="/", timeout=5.0):
    """A fresh connection, one GET, the parsed response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body, _, _ = read_response(s, timeout)
        return status, headers, body


def wait_eof(s, timeout):
    """Read until EOF (or reset); returns (bytes read, seconds waited).
    Fails if the peer keeps the connection open past `timeout`."""
    t0 = time.monotonic()
    data = b""
    s.settimeout(0.2)
    while time.monotonic() - t0 < timeout:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, time.monotonic() - t0
        if not d:
            return data, time.monotonic() - t0
        data += d
    raise AssertionError(f"connection still open after {timeout}s; got {data[:200]!r}")


def rst_close(s):
    """Close with a TCP reset (SO_LINGER 0), as a client that aborts does."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def assert_healthy(p, port, path="/"):
    """The proxy process is alive, serves a fresh request, and its log has no
    sanitizer report."""
    assert p.proc.poll() is None, f"proxy exited {p.proc.returncode}:\n{p.read_log()[-3000:]}"
    status, _, body = get_once(port, path)
    assert status == 200, (status, body)
    assert_clean_log(p)
    return body


def settled(p, name, want, timeout=3.0, **labels):
    """The value of metric `name` once it has reached `want` (the worker
    accounts a request right after writing its last byte, so a client can be
    a moment ahead of the counters) and stayed there for a short while, or the
    last value seen when `timeout` expires."""
    deadline = time.monotonic() + timeout
    v = p.metric(name, **labels)
    while v != want and time.monotonic() < deadline:
        time.sleep(0.05)
        v = p.metric(name, **labels)
    if v == want:
        time.sleep(0.15)
        v = p.metric(name, **labels)
    return v


def assert_metric(p, name, want, **labels):
    v = settled(p, name, want, **labels)
    assert v == want, (name, labels, v, want, [
        line for line in p.metrics().splitlines() if line.startswith(name)])


def assert_clean_log(p):
    log = p.read_log()
    assert "AddressSanitizer" not in log, log[log.find("AddressSanitizer") - 200:][:4000]
    assert "LeakSanitizer" not in log, log[log.find("LeakSanitizer") - 200:][:4000]
    assert "runtime error:" not in log, log[log.find("runtime error:") - 300:][:3000]


def ok_response(body=b"ok"):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def serve_ok_forever(c, buf=b""):
    """Answer every request on the connection with 200 "ok" (keep-alive)."""
    while True:
        head, buf = recv_request(c, buf)
        if head is None:
            return
        c.sendall(ok_response())


# ---------------------------------------------------------------- e1

def test_content_length_zero_response_keeps_connection_usable(proxies, raw_backends):
    """A 200 with Content-Length: 0 is complete at the end of its head: the next
    request on the same client connection is answered at once (it used to stall
    until the client gave up), and the upstream connection is reused."""
    def handler(c):
        buf = b""
        while True:
            head, buf = recv_request(c, buf)
            if head is None:
                return
            if b" /nc " in head:
                c.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    srv = raw_backends(handler)
    lp = free_port()
    p = proxies(simple_config(lp, srv.port))

    with socket.create_connection(("127.0.0.1", lp), timeout=5) as s:
        for path, want in [("/cl0", 200), ("/cl0", 200), ("/nc", 204), ("/cl0", 200), ("/nc", 204)]:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, headers, body, leftover, elapsed = read_response(s, timeout=4)
            assert status == want, (path, status)
            assert body == b"" and leftover == b"", (path, body, leftover)
            if want == 200:
                assert headers.get("content-length") == "0", headers
            assert elapsed < 1.5, f"{path} took {elapsed:.2f}s on a kept-alive connection"

    assert_metric(p, "istio_requests_total", 3, response_code="200")
    assert_metric(p, "istio_requests_total", 2, response_code="204")
    # Every response ended cleanly, so one upstream connection carried all five.
    assert srv.conns == 1, srv.conns
    assert_clean_log(p)


# ---------------------------------------------------------------- e2

def test_client_reset_while_response_pending_does_not_crash(proxies, raw_backends):
    """The client resets after sending its request; the response head then
    lands in the proxy's transmit buffer and the write fails. The session must
    be torn down together with its upstream (it used to be freed while the
    upstream still pointed at it: use-after-free when more bytes came)."""
    done = threading.Event()

    def handler(c):
        head, rest = recv_request(c)
        if head is None:
            return
        if b" /reset " not in head:
            c.sendall(ok_response())
            return serve_ok_forever(c, rest)
        try:
            time.sleep(0.3)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 100)
            time.sleep(0.4)
            c.sendall(b"b" * 1000)
            time.sleep(0.3)
        finally:
            done.set()

    srv = raw_backends(handler)
    lp = free_port()
    p = proxies(simple_config(lp, srv.port))

    for _ in range(2):
        done.clear()
        s = socket.create_connection(("127.0.0.1", lp))
        s.sendall(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        rst_close(s)
        assert done.wait(5), "backend handler did not finish"
        time.sleep(0.2)
        assert p.proc.poll() is None, f"proxy died:\n{p.read_log()[-3000:]}"

    assert assert_healthy(p, lp, "/after") == b"ok"
    assert_metric(p, "istio_requests_total", 1, response_code="200", response_flags="-")
    assert_metric(p, "trellis_downstream_connections_active", 0)
    # The aborted requests' upstream connections are closed, not leaked: only
    # the pooled one of /after may remain.
    assert_metric(p, "trellis_upstream_connections_active", 1)


def test_client_reset_before_response_head_is_counted_once(proxies, raw_backends):
    """Every request is accounted exactly once, also when the client resets
    before the response head reaches it: one istio_requests_total sample with
    the DC (downstream connection termination) flag."""
    done = threading.Event()

    def handler(c):
        head, rest = recv_request(c)
        if head is None:
            return
        if b" /reset " not in head:
            c.sendall(ok_response())
            return serve_ok_forever(c, rest)
        try:
            time.sleep(0.3)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 100)
            time.sleep(0.3)
        finally:
            done.set()

    srv = raw_backends(handler)
    lp = free_port()
    p = proxies(simple_config(lp, srv.port))
    s = socket.create_connection(("127.0.0.1", lp))
    s.sendall(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.1)
    rst_close(s)
    assert done.wait(5), "backend handler did not finish"
    deadline = time.monotonic() + 3
    while p.metric("trellis_downstream_connections_active") != 0:
        assert time.monotonic() < deadline, "aborted session not closed"
        time.sleep(0.05)
    time.sleep(0.1)
    assert_clean_log(p)
    assert_metric(p, "istio_requests_total", 1, response_flags="DC")
    assert_metric(p, "istio_requests_total", 1)


# ---------------------------------------------------------------- e3

def test_route_timeout_while_upstream_connecting_does_not_crash(proxies, backend):
    """The route timeout fires while the upstream connection is still in
    SYN_SENT (the backend's accept queue is full). The client gets a 504 UT at
    the timeout, and when the backend later frees its queue the abandoned
    connect must not be completed into a released upstream (it used to be, and
    the proxy dereferenced NULL ops and died)."""
    bport = free_port()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", bport))
    ls.listen(0)  # accept queue of one: further SYNs are dropped
    fillers = []
    accepted = []
    try:
        for _ in range(3):
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect(("127.0.0.1", bport))
            except BlockingIOError:
                pass
            fillers.append(f)
        time.sleep(0.2)

        lp = free_port()
        cfg = simple_config(lp, backend.port)
        cfg["route_tables"][0]["virtual_hosts"][0]["routes"].insert(0, {
            "name": "slow", "match": {"path": {"prefix": "/slow"}},
            "cluster": "blackhole", "timeout": "200ms"})
        cfg["clusters"].append({"name": "blackhole", "connect_timeout": "10s",
                                "endpoints": [{"address": f"127.0.0.1:{bport}"}]})
        p = proxies(cfg)

        with socket.create_connection(("127.0.0.1", lp), timeout=5) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body, leftover, elapsed = read_response(s, timeout=5)
        assert status == 504, (status, body)
        assert body == b"upstream request timeout\n", body
        assert leftover == b""
        assert 0.15 <= elapsed < 2.0, elapsed
        assert_metric(p, "istio_requests_total", 1, response_code="504", response_flags="UT")

        # Free the backend's accept queue for long enough that a SYN the proxy
        # might still retransmit (first retry at ~1 s) is accepted.
        ls.setblocking(False)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            try:
                accepted.append(ls.accept()[0])
                continue
            except BlockingIOError:
                pass
            time.sleep(0.05)
        time.sleep(0.3)
        assert p.proc.poll() is None, f"proxy died:\n{p.read_log()[-3000:]}"
        # Only the fillers ever connected: the proxy abandoned its connect.
        assert len(accepted) <= len(fillers), len(accepted)

        assert_healthy(p, lp, "/fresh")
        assert [r["path"] for r in backend.requests] == ["/fresh"]
    finally:
        for x in fillers + accepted:
            x.close()
        ls.close()


# ---------------------------------------------------------------- e4

def test_abnormal_closes_return_buffers(proxies, raw_backends, monkeypatch):
    """Clients that reset in the middle of a large response must give their
    buffers back to the worker's pool (the response buffer used to leak on
    every abnormal close). With 1 MiB buffers a leak is at least 1 MiB per
    connection, so memory must stay flat over repeated rounds once the pool is
    warm. Under ASan the leak checker also runs at exit."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "detect_leaks=1")

    def handler(c):
        head, rest = recv_request(c)
        if head is None:
            return
        if b" /big " not in head:
            c.sendall(ok_response())
            return serve_ok_forever(c, rest)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
        chunk = b"x" * (1 << 20)
        for _ in range(64):  # until the proxy stops reading, then the reset ends it
            c.sendall(chunk)

    srv = raw_backends(handler)
    lp = free_port()
    cfg = simple_config(lp, srv.port)
    cfg["limits"] = {"buffer_size": 1048576}
    p = proxies(cfg)

    K = 6

    def round_of_resets():
        socks = []
        for _ in range(K):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(5)
            s.connect(("127.0.0.1", lp))
            s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        for s in socks:
            data = b""
            while b"\r\n\r\n" not in data:
                d = s.recv(4096)
                assert d, "EOF before the response head"
                data += d
            assert data.startswith(b"HTTP/1.1 200 "), data[:100]
        time.sleep(0.4)  # the proxy fills its response buffers and stalls on the client
        for s in socks:
            rst_close(s)
        deadline = time.monotonic() + 5
        while p.metric("trellis_downstream_connections_active") != 0:
            assert time.monotonic() < deadline, "aborted sessions not closed"
            time.sleep(0.05)

    for _ in range(2):
        round_of_resets()  # warm the buffer pool
    base = p.rss_kib()
    for _ in range(4):
        round_of_resets()
    grown = p.rss_kib() - base
    # A leak is about 1 MiB per aborted response: ~24 MiB over these 4 rounds.
    assert grown < 8 * 1024, f"RSS grew {grown} KiB over {4 * K} aborted responses"
    assert_metric(p, "istio_requests_total", 6 * K, response_flags="DC")

    assert assert_healthy(p, lp, "/after") == b"ok"
    srv.close()
    p.stop()
    assert p.proc.returncode == 0, (p.proc.returncode, p.read_log()[-3000:])
    assert_clean_log(p)


# ---------------------------------------------------------------- e5

def test_reload_under_connect_flood_does_not_crash(proxies, backend):
    """SIGHUP reloads while new connections keep arriving: a listener event
    already fetched in the current epoll batch must not use the listener array
    the reload replaced (it used to be freed at once: use-after-free/SIGSEGV
    within a few dozen reloads)."""
    lp = free_port()
    p = proxies(simple_config(lp, backend.port))
    stop = threading.Event()
    attempts = [0]

    def spam():
        while not stop.is_set():
            try:
                socket.create_connection(("127.0.0.1", lp), timeout=1).close()
                attempts[0] += 1
            except OSError:
                pass

    threads = [threading.Thread(target=spam, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    sent = 0
    try:
        for _ in range(150):
            if p.proc.poll() is not None:
                break
            p.signal(signal.SIGHUP)
            sent += 1
            time.sleep(0.01)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=3)
    assert p.proc.poll() is None, f"proxy died after {sent} reloads:\n{p.read_log()[-3000:]}"
    assert sent == 150
    assert attempts[0] > 100, attempts[0]

    # Signals may coalesce, but reloads happened and none was rejected.
    deadline = time.monotonic() + 5
    while p.metric("trellis_config_reloads_total", result="ok") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert_metric(p, "trellis_config_reloads_total", 0, result="rejected")
    ok = p.metric("trellis_config_reloads_total", result="ok")
    assert 1 <= ok <= 150, ok
    assert_healthy(p, lp, "/after-reloads")
    assert backend.requests[-1]["path"] == "/after-reloads"


# ---------------------------------------------------------------- e8

def test_idle_timeout_not_cut_while_body_streams(proxies, raw_backends):
    """The listener idle timeout measures inactivity: a response body that
    trickles one byte every 100 ms for 2.5 s must arrive whole through a 600 ms
    idle timeout (it used to be cut at 600 ms after the head). Once the
    connection is really idle, the timeout still closes it."""
    N = 25

    def handler(c):
        head, _ = recv_request(c)
        if head is None:
            return
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % N)
        for i in range(N):
            c.sendall(b"%c" % (ord("a") + i))
            time.sleep(0.1)
        c.recv(10)

    srv = raw_backends(handler)
    lp = free_port()
    p = proxies(simple_config(lp, srv.port, timeouts={"idle": "600ms"}))

    with socket.create_connection(("127.0.0.1", lp), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body, leftover, elapsed = read_response(s, timeout=10)
        assert status == 200
        assert body == bytes(range(ord("a"), ord("a") + N)), body
        assert leftover == b""
        assert elapsed >= 2.0, elapsed  # really streamed, not buffered
        # Now nothing flows: the idle timeout closes the connection.
        rest, waited = wait_eof(s, timeout=5)
        assert rest == b""
        assert 0.4 <= waited < 3.0, waited
    assert_metric(p, "istio_requests_total", 1, response_code="200")
    assert_metric(p, "istio_requests_total", 1, response_flags="-")
    assert_clean_log(p)


# ---------------------------------------------------------------- e9

def test_direct_response_body_larger_than_a_buffer(proxies):
    """direct_response bodies up to the 64 KiB config limit are sent whole
    (bodies over one 16 KiB buffer used to produce no response at all)."""
    pattern = b"0123456789abcdefghijklmnopqrstuv"
    big = (pattern * 2048)[:65536]
    mid = (pattern * 1000)[:20000]
    lp = free_port()
    cfg = simple_config(lp, free_port())
    cfg["route_tables"][0]["virtual_hosts"][0]["routes"] = [
        {"name": "mid", "match": {"path": {"exact": "/mid"}},
         "direct_response": {"status": 200, "body": mid.decode()}},
        {"name": "big", "match": {"path": {"exact": "/big"}},
         "direct_response": {"status": 201, "body": big.decode()}},
        {"name": "small", "match": {"path": {"prefix": "/"}},
         "direct_response": {"status": 200, "body": "small\n"}},
    ]
    p = proxies(cfg)

    with socket.create_connection(("127.0.0.1", lp), timeout=5) as s:
        for path, want_status, want_body in [("/mid", 200, mid), ("/big", 201, big),
                                             ("/x", 200, b"small\n"), ("/big", 201, big)]:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, headers, body, leftover, _ = read_response(s, timeout=5)
            assert status == want_status, (path, status)
            assert headers["content-length"] == str(len(want_body)), headers
            assert body == want_body, (path, len(body))
            assert leftover == b""
    assert_metric(p, "istio_requests_total", 2, response_code="201")
    assert_metric(p, "istio_requests_total", 2, response_code="200")
    assert_healthy(p, lp)


# ---------------------------------------------------------------- e10

def test_bad_chunked_response_counted_once(proxies, raw_backends):
    """An invalid chunk arriving together with the response head fails the
    request once: one istio_requests_total sample with UPE (it used to be
    counted twice), the invalid bytes are not forwarded, and the client
    connection is closed promptly without waiting for the upstream."""
    def handler(c):
        head, rest = recv_request(c)
        if head is None:
            return
        if b" /bad " not in head:
            c.sendall(ok_response())
            return serve_ok_forever(c, rest)
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nxx")
        time.sleep(2)

    srv = raw_backends(handler)
    lp = free_port()
    p = proxies(simple_config(lp, srv.port))

    with socket.create_connection(("127.0.0.1", lp), timeout=5) as s:
        s.sendall(b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
        data, waited = wait_eof(s, timeout=4)
    assert waited < 1.5, waited
    # Nothing, or at most the response head: never the invalid body bytes.
    assert b"ZZ" not in data and b"xx" not in data, data
    assert data == b"" or (data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\n")), data

    assert_metric(p, "istio_requests_total", 1)
    assert_metric(p, "istio_requests_total", 1, response_flags="UPE")
    assert assert_healthy(p, lp, "/after") == b"ok"
    assert_metric(p, "istio_requests_total", 2)


# ---------------------------------------------------------------- e11

def test_tcp_splice_slow_reader_does_not_stall(proxies, raw_backends):
    """TCP proxying of 6 MB sent in 700-byte segments to a backend that starts
    reading only after 1.5 s. A short splice() (pipe slots used up by small
    segments) is not "socket drained": every byte must arrive (the relay used
    to stall forever with megabytes left in the downstream socket)."""
    got = [0]
    finished = threading.Event()
    TOTAL = 700 * 8572  # 6,000,400 bytes

    def handler(c):
        time.sleep(1.5)  # let data pile up in the proxy's downstream socket
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            got[0] += len(d)
            if got[0] >= TOTAL:
                finished.set()
        finished.set()

    srv = raw_backends(handler)
    # Interleaving writes to a second connection scatters the first one's
    # segments across pages, which is what exhausts the splice pipe's slots.
    def drain(c):
        while c.recv(1 << 20):
            pass

    sink = raw_backends(drain)
    lp = free_port()
    cfg = simple_config(lp, srv.port)
    cfg["listeners"][0] = {"name": "in", "address": f"127.0.0.1:{lp}",
                           "protocol": "tcp", "tcp_cluster": "backend"}
    del cfg["route_tables"]
    p = proxies(cfg)

    s1 = socket.create_connection(("127.0.0.1", lp), timeout=10)
    s2 = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
    try:
        for s in (s1, s2):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        chunk = b"z" * 700
        t0 = time.monotonic()
        for _ in range(TOTAL // 700):
            s1.sendall(chunk)
            s2.sendall(chunk)
        assert finished.wait(8), f"backend got {got[0]} of {TOTAL} bytes after " \
                                 f"{time.monotonic() - t0:.1f}s"
        assert got[0] == TOTAL, got[0]
        # The relay still works in both directions afterwards.
        s1.sendall(b"!")
        deadline = time.monotonic() + 3
        while got[0] < TOTAL + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got[0] == TOTAL + 1, got[0]
    finally:
        s1.close()
        s2.close()
    assert_metric(p, "istio_tcp_received_bytes_total", TOTAL + 1)
    assert p.proc.poll() is None
    assert_clean_log(p)


def test_slow_first_bytes_on_permissive_and_strict_listeners(proxies, certs, backend):
    """A client that connects and only sends its first bytes after the 100 ms
    detection deadline is served, on PERMISSIVE (plaintext) and STRICT (TLS)
    listeners alike: the short deadline applies only where silence means a
    server-first protocol (an `auto` listener with a tcp_cluster)."""
    import ssl

    tls = [{"name": "id", "cert": certs["server_cert"], "key": certs["server_key"],
            "ca": certs["ca"], "trust_domain": "cluster.local"}]
    ports = {}
    for mode in ("PERMISSIVE", "STRICT"):
        port = free_port()
        cfg = simple_config(port, backend.port, tls={"mode": mode, "context": "id"},
                            timeouts={"detect": "100ms"})
        cfg["tls"] = tls
        proxies(cfg, name=f"slow-{mode.lower()}")
        ports[mode] = port

    # PERMISSIVE, plaintext, first byte after 400 ms.
    with socket.create_connection(("127.0.0.1", ports["PERMISSIVE"]), timeout=5) as s:
        time.sleep(0.4)
        s.sendall(b"GET /slow-plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]

    # STRICT, ClientHello after 400 ms, with the client's SVID.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs["ca"])
    ctx.load_cert_chain(certs["client_cert"], certs["client_key"])
    ctx.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", ports["STRICT"]), timeout=5)
    time.sleep(0.4)
    with ctx.wrap_socket(raw) as s:
        s.sendall(b"GET /slow-tls HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLError:
                break
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert [r["path"] for r in backend.requests] == ["/slow-plain", "/slow-tls"]
