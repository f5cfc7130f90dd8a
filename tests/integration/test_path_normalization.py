"""Path normalisation (listeners[].http.path_normalization): path tricks
cannot pass a DENY nor slip past an ALLOW, over HTTP/1.1 (raw sockets, curl
--path-as-is) and HTTP/2 (python h2, nghttp), in every mode; the backend
gets the path the decision was taken on, and the query untouched.

Each proxy has two listeners in front of one backend that records the exact
request-target it got (python's http.server would rewrite a leading "//"):
  deny:  DENY paths ["/admin*"], everything else allowed;
  allow: ALLOW paths ["/public*"] only.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import TRELLIS, ThreadedTCPServer, free_port  # noqa: E402
from h2util import H2Client  # noqa: E402

MODES = ("STRICT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")
NORMALISING = MODES[:1] + MODES[2:]

# A sentinel: the proxy answers this status itself, the backend gets nothing.
REFUSED = 400
DENIED = 403


class TargetBackend(ThreadedTCPServer):
    """HTTP/1.1 keep-alive server recording each request-target verbatim;
    answers 200 with the target as its body."""

    def __init__(self):
        self.targets = []
        self.lock = threading.Lock()
        super().__init__()

    def serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line = f.readline(65536)
                if not line:
                    return
                target = line.split(b" ")[1].decode("latin-1")
                while f.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass
                with self.lock:
                    self.targets.append(target)
                body = target.encode("latin-1")
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            return


def config(mode, deny_port, allow_port, backend_port):
    def listener(name, port, rule):
        lst = {"name": name, "address": f"127.0.0.1:{port}", "route_table": "rt",
               "authorization": {"rules": [rule]}}
        if mode is not None:
            lst["http"] = {"path_normalization": mode}
        return lst
    return {
        "listeners": [listener("deny", deny_port, {"action": "DENY", "paths": ["/admin*"]}),
                      listener("allow", allow_port, {"action": "ALLOW", "paths": ["/public*"]})],
        "route_tables": [{"name": "rt", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "all", "match": {"path": {"prefix": "/"}},
                        "cluster": "backend"}]}]}],
        "clusters": [{"name": "backend", "endpoints": [{"address": f"127.0.0.1:{backend_port}"}]}],
    }


def per_mode(strict, none, base, merge, decode):
    return dict(zip(MODES, (strict, none, base, merge, decode)))


def same(normalising, none):
    """One outcome for every normalising mode, another for NONE."""
    return per_mode(normalising, none, normalising, normalising, normalising)


# (target, {mode: expected}); expected is DENIED, REFUSED or the path the
# backend must get (then the answer is 200).
DENY_CASES = [
    ("/admin", same(DENIED, DENIED)),
    ("/admin/", same(DENIED, DENIED)),
    ("/admin;x=1", same(DENIED, DENIED)),
    ("/admin?x=1", same(DENIED, DENIED)),
    ("/x/../admin", same(DENIED, "/x/../admin")),
    ("/./admin", same(DENIED, "/./admin")),
    ("/x/./../admin", same(DENIED, "/x/./../admin")),
    ("/../../admin", same(DENIED, "/../../admin")),
    ("/%61dmin", same(DENIED, "/%61dmin")),
    ("/%2e/admin", same(DENIED, "/%2e/admin")),
    ("/x/%2E%2e/admin", same(DENIED, "/x/%2E%2e/admin")),
    ("/x/.%2e/admin", same(DENIED, "/x/.%2e/admin")),
    ("//admin", per_mode(DENIED, "//admin", "//admin", DENIED, DENIED)),
    ("///x//..//admin", per_mode(DENIED, "///x//..//admin", "///x//admin", DENIED, DENIED)),
    ("/%2Fadmin", per_mode(REFUSED, "/%2Fadmin", "/%2Fadmin", "/%2Fadmin", DENIED)),
    ("/%2fadmin", per_mode(REFUSED, "/%2fadmin", "/%2Fadmin", "/%2Fadmin", DENIED)),
    ("/x%2F..%2Fadmin",
     per_mode(REFUSED, "/x%2F..%2Fadmin", "/x%2F..%2Fadmin", "/x%2F..%2Fadmin", DENIED)),
    ("/x/%5C../admin",
     per_mode(REFUSED, "/x/%5C../admin", "/x/%5C../admin", "/x/%5C../admin", DENIED)),
    ("/x\\..\\admin", per_mode(REFUSED, "/x\\..\\admin", DENIED, DENIED, DENIED)),
    ("/admin%2f", per_mode(REFUSED, DENIED, DENIED, DENIED, DENIED)),
    ("/x/..;/admin", per_mode(REFUSED, "/x/..;/admin", "/x/..;/admin", "/x/..;/admin",
                              "/x/..;/admin")),
    ("/a%00", per_mode(REFUSED, "/a%00", "/a%00", "/a%00", "/a%00")),
    ("/a%zz", same(REFUSED, "/a%zz")),
    # Not bypasses: another resource by RFC 3986 (case), never decoded twice.
    ("/ADMIN", same("/ADMIN", "/ADMIN")),
    ("/%41dmin", same("/Admin", "/%41dmin")),
    ("/%2561dmin", same("/%2561dmin", "/%2561dmin")),
    ("/public%3fx", same("/public%3Fx", "/public%3fx")),
    # The query is not the path, and goes as it came.
    ("/public?next=/admin", same("/public?next=/admin", "/public?next=/admin")),
    ("/x/../public?q=/../%2F&r=%zz",
     same("/public?q=/../%2F&r=%zz", "/x/../public?q=/../%2F&r=%zz")),
]

ALLOW_CASES = [
    ("/public", same("/public", "/public")),
    ("/public/x", same("/public/x", "/public/x")),
    ("/public//x", per_mode("/public/x", "/public//x", "/public//x", "/public/x", "/public/x")),
    ("/%70ublic/x", same("/public/x", DENIED)),
    ("/admin", same(DENIED, DENIED)),
    ("/public/../admin", same(DENIED, "/public/../admin")),
    ("/public/%2e%2e/admin", same(DENIED, "/public/%2e%2e/admin")),
    ("/public/./../../admin", same(DENIED, "/public/./../../admin")),
    ("/public\\..\\admin", per_mode(REFUSED, "/public\\..\\admin", DENIED, DENIED, DENIED)),
    ("/public%2F..%2Fadmin", per_mode(REFUSED, "/public%2F..%2Fadmin", "/public%2F..%2Fadmin",
                                      "/public%2F..%2Fadmin", DENIED)),
    ("/public/..;/admin", per_mode(REFUSED, "/public/..;/admin", "/public/..;/admin",
                                   "/public/..;/admin", "/public/..;/admin")),
    ("/admin?x=/public", same(DENIED, DENIED)),
]


@pytest.fixture
def backend_targets():
    b = TargetBackend()
    yield b
    b.close()


def start(proxies, backend, mode):
    deny_port, allow_port = free_port(), free_port()
    p = proxies(config(mode, deny_port, allow_port, backend.port))
    return p, deny_port, allow_port


def outcome(mode, expected_by_mode):
    want = expected_by_mode[mode]
    return (want, None) if want in (DENIED, REFUSED) else (200, want)


def h1_raw(port, target):
    """One request on its own connection: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET " + target.encode("latin-1") +
                  b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def curl(port, target, http2=False):
    args = ["curl", "-sS", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", "--max-time", "5"]
    if http2:
        args.append("--http2-prior-knowledge")
    out = subprocess.run(args + [f"http://127.0.0.1:{port}{target}"], capture_output=True,
                         check=True, timeout=10).stdout
    body, _, code = out.rpartition(b"\n")
    return int(code), body


def check(backend, send, port, cases, mode, label):
    for target, by_mode in cases:
        want_status, want_path = outcome(mode, by_mode)
        before = len(backend.targets)
        status, body = send(port, target)
        what = f"{label} {mode} {target!r}"
        assert status == want_status, f"{what}: status {status}, want {want_status}"
        if want_path is None:
            assert len(backend.targets) == before, f"{what}: the backend got {backend.targets[-1]}"
        else:
            assert backend.targets[before:] == [want_path], f"{what}: backend got " \
                f"{backend.targets[before:]}"
            if body is not None:
                assert body == want_path.encode("latin-1"), what


@pytest.mark.parametrize("mode", MODES)
def test_http1_raw(proxies, backend_targets, mode):
    p, deny_port, allow_port = start(proxies, backend_targets, mode)
    check(backend_targets, h1_raw, deny_port, DENY_CASES, mode, "h1 deny")
    check(backend_targets, h1_raw, allow_port, ALLOW_CASES, mode, "h1 allow")


@pytest.mark.parametrize("mode", MODES)
def test_curl(proxies, backend_targets, mode):
    """curl --path-as-is, HTTP/1.1 and HTTP/2 (prior knowledge)."""
    p, deny_port, allow_port = start(proxies, backend_targets, mode)
    check(backend_targets, curl, deny_port, DENY_CASES, mode, "curl deny")
    check(backend_targets, curl, allow_port, ALLOW_CASES, mode, "curl allow")

    def curl_h2(port, target):
        return curl(port, target, http2=True)
    check(backend_targets, curl_h2, deny_port, DENY_CASES, mode, "curl h2 deny")
    check(backend_targets, curl_h2, allow_port, ALLOW_CASES, mode, "curl h2 allow")


def h2_sender():
    clients = {}

    def send(port, target):
        c = clients.get(port)
        if c is None or c.closed:
            c = clients[port] = H2Client(port, validate=False)
        r = c.get(target)
        assert r.reset is None, f"{target!r}: stream reset {r.reset}"
        return r.status, bytes(r.data)
    return send, clients


@pytest.mark.parametrize("mode", MODES)
def test_http2_h2(proxies, backend_targets, mode):
    """:path gets what the HTTP/1.1 request-target gets, on one connection."""
    p, deny_port, allow_port = start(proxies, backend_targets, mode)
    send, clients = h2_sender()
    try:
        check(backend_targets, send, deny_port, DENY_CASES, mode, "h2 deny")
        check(backend_targets, send, allow_port, ALLOW_CASES, mode, "h2 allow")
    finally:
        for c in clients.values():
            c.close()


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp not installed")
@pytest.mark.parametrize("mode", ("STRICT", "NONE", "DECODE_AND_MERGE_SLASHES"))
def test_http2_nghttp(proxies, backend_targets, mode):
    p, deny_port, allow_port = start(proxies, backend_targets, mode)

    def nghttp(port, target):
        out = subprocess.run(["nghttp", "-v", "-t", "5", f"http://127.0.0.1:{port}{target}"],
                             capture_output=True, timeout=10).stdout.decode("latin-1")
        assert ":status: " in out, out
        # The body is interleaved with nghttp's frame log: what the
        # backend got is checked instead.
        return int(out.split(":status: ", 1)[1].split()[0]), None
    # nghttp resolves dot segments itself: only what it sends as written.
    cases = [c for c in DENY_CASES if "/." not in c[0] and "\\" not in c[0]]
    check(backend_targets, nghttp, deny_port, cases, mode, "nghttp deny")


def test_default_is_strict_and_refusals_are_logged(proxies, backend_targets, workdir):
    """No path_normalization: STRICT. A refused path is 400 with flag DPE, in
    the access log and the metrics, on HTTP/1.1 and HTTP/2 alike."""
    deny_port, allow_port = free_port(), free_port()
    cfg = config(None, deny_port, allow_port, backend_targets.port)
    log = os.path.join(workdir, "access.log")
    cfg["access_log"] = {"enabled": True, "path": log}
    p = proxies(cfg)
    check(backend_targets, h1_raw, deny_port, DENY_CASES, "STRICT", "default h1")
    send, clients = h2_sender()
    try:
        status, body = send(deny_port, "/x%2F..%2Fadmin")
        assert status == 400 and body == b"invalid request path\n"
    finally:
        for c in clients.values():
            c.close()
    status, body = h1_raw(deny_port, "/a%5Cb")
    assert status == 400 and body == b"invalid request path\n"
    refused = sum(1 for _t, m in DENY_CASES if m["STRICT"] == REFUSED) + 2
    deadline = time.monotonic() + 3
    while p.metric("istio_requests_total", response_flags="DPE") != refused and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.metric("istio_requests_total", response_flags="DPE") == refused
    assert p.metric("trellis_http_parse_errors_total") == refused
    with open(log) as f:
        lines = f.read()
    assert "/a%5Cb" in lines and "DPE" in lines


def test_absolute_form_and_keep_alive(proxies, backend_targets):
    """An absolute-form target's path is normalised too; a refused path is
    answered on a connection that then serves the next request."""
    p, deny_port, allow_port = start(proxies, backend_targets, "STRICT")
    with socket.create_connection(("127.0.0.1", deny_port), timeout=5) as s:
        f = s.makefile("rb")

        def exchange(target):
            s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: test\r\n\r\n")
            status = int(f.readline().split(b" ", 2)[1])
            length = 0
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return status, f.read(length)
        assert exchange(b"http://test/x/../admin")[0] == DENIED
        assert exchange(b"http://test/x/../public//a?q=/../") == (200, b"/public/a?q=/../")
        assert exchange(b"/a%2Fb") == (REFUSED, b"invalid request path\n")
        assert exchange(b"/x/%2e%2e/public") == (200, b"/public")
    assert backend_targets.targets == ["/public/a?q=/../", "/public"]


def test_mode_changes_on_reload(proxies, backend_targets):
    """The mode is the listener's: after a reload to NONE, "//admin" goes to
    the backend as received."""
    deny_port, allow_port = free_port(), free_port()
    p = proxies(config("MERGE_SLASHES", deny_port, allow_port, backend_targets.port))
    assert h1_raw(deny_port, "//admin")[0] == DENIED
    p.write_config(config("NONE", deny_port, allow_port, backend_targets.port))
    p.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    status = None
    while time.monotonic() < deadline:
        status = h1_raw(deny_port, "//admin")[0]
        if status != DENIED:
            break
        time.sleep(0.05)
    assert status == 200
    assert backend_targets.targets[-1] == "//admin"


def test_check_refuses_unknown_mode(workdir, backend_targets):
    cfg = config("MERGE", free_port(), free_port(), backend_targets.port)
    path = os.path.join(workdir, "bad.yaml")
    with open(path, "w") as f:
        json.dump(cfg, f)
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", path], capture_output=True,
                       timeout=10)
    assert r.returncode != 0
    err = (r.stdout + r.stderr).decode()
    assert "listeners[0].http.path_normalization" in err, err
