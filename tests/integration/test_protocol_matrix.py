"""Protocol matrix: client protocol x proxy path x backend protocol.

Clients: raw HTTP/1.1 (matrixutil.H1Client) and h2c prior knowledge
(matrixutil.H2Client, python3-h2). Paths:
  single-h1  client -> trellis S (cluster protocol http1) -> backend
  single-h2  client -> trellis S (cluster protocol http2) -> backend
  mesh-h1    client -> trellis A (outbound, cluster http1 + mTLS) -> trellis B
             (inbound STRICT, cluster protocol original) -> backend
  mesh-h2    the same with A's cluster protocol http2
Backends: matrixutil.H1Backend (HTTP/1.1 only) and H2Backend (h2c only); both
record the protocol that actually arrived, every field, body and trailers.

Combinations that cannot work by definition are not generated:
  single-h1 x HTTP/2 backend: cluster protocol http1 speaks only HTTP/1.1, the
    backend only h2c.
  single-h2 x HTTP/1.1 backend: cluster protocol http2 speaks only h2c.
  mesh-* : B's cluster is `original`, so an HTTP/1.1 client must reach the
    backend as HTTP/1.1 and an HTTP/2 client as HTTP/2 (the protocol the client
    originally spoke, also across an HTTP/1.1 hop); the other backend would be
    sent a protocol it does not speak. So mesh paths pair the HTTP/1.1 client
    with the HTTP/1.1 backend and the HTTP/2 client with the HTTP/2 backend,
    and every test asserts the protocol the backend saw.
All processes and ports are shared per module (fixture `topo`). At teardown
the proxies are stopped and their logs checked: sanitizer output (ASan/UBSan/
LSan builds), a crash or a non-zero exit fails the module.
"""
import hashlib
import itertools
import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import matrixutil as mu  # noqa: E402
from conftest import Proxy, free_port, wait_port  # noqa: E402

TD = "cluster.local"
SERVER_ID = f"spiffe://{TD}/ns/default/sa/server"
AUTH = "matrix.example:8080"
MIB = 1 << 20
IDLE = 3  # seconds without a byte before a client read fails (hangs are bugs)
HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade")

PATHS = ("single-h1", "single-h2", "mesh-h1", "mesh-h2")


def backend_for(path, client):
    """The one backend protocol each (path, client) can reach; see the module doc."""
    if path == "single-h1":
        return "h1"
    if path == "single-h2":
        return "h2"
    return client


def matrix(test, **axes):
    """Params for every valid (path, client) x the given axes (lists of (value, id))."""
    out = []
    for path in PATHS:
        for client in ("h1", "h2"):
            for combo in itertools.product(*axes.values()):
                kw = dict(zip(axes, (v for v, _ in combo)))
                ids = "-".join([path, client + "client"] + [i for _, i in combo])
                out.append(pytest.param(path, client, *kw.values(), id=ids))
    return out


# ---------------------------------------------------------------- topology

def _tls_ctx(cert, key, ca):
    return {"name": "mesh", "cert": cert, "key": key, "ca": ca, "trust_domain": TD}


def _node(sa):
    return {"id": f"{sa}-0", "workload": sa, "namespace": "default",
            "principal": f"spiffe://{TD}/ns/default/sa/{sa}"}


def _config(listeners, clusters, tls=None, node=None):
    """listeners: [(name, port, cluster, extra)]; one route table per listener."""
    cfg = {
        "listeners": [], "route_tables": [], "clusters": clusters,
        "limits": {"max_connections": 1000},
    }
    for name, port, cluster, extra in listeners:
        ls = {"name": name, "address": f"127.0.0.1:{port}", "protocol": "http",
              "route_table": f"rt-{name}"}
        ls.update(extra)
        cfg["listeners"].append(ls)
        cfg["route_tables"].append({"name": f"rt-{name}", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": cluster}]}]})
    if tls:
        cfg["tls"] = tls
    if node:
        cfg["node"] = node
    return cfg


class Topo:
    def __init__(self, workdir, certs):
        self.h1b = mu.H1Backend(free_port())
        self.h2b = mu.H2Backend(free_port())
        self.ports = {}
        self.procs = []
        h1e = [{"address": f"127.0.0.1:{self.h1b.port}"}]
        h2e = [{"address": f"127.0.0.1:{self.h2b.port}"}]

        s1, s2 = free_port(), free_port()
        s = _config([("s-h1", s1, "c-h1", {}), ("s-h2", s2, "c-h2", {})], [
            {"name": "c-h1", "protocol": "http1", "endpoints": h1e},
            {"name": "c-h2", "protocol": "http2", "endpoints": h2e}])
        for c in ("h1", "h2"):
            self.ports[("single-h1", c)] = s1
            self.ports[("single-h2", c)] = s2

        b1, b2 = free_port(), free_port()
        inbound = {"direction": "inbound", "tls": {"mode": "STRICT", "context": "mesh"}}
        svc = {"service": "server.default.svc.cluster.local", "workload": "server",
               "namespace": "default", "protocol": "original"}
        b = _config([("b-h1", b1, "local-h1", inbound), ("b-h2", b2, "local-h2", inbound)], [
            dict(svc, name="local-h1", endpoints=h1e),
            dict(svc, name="local-h2", endpoints=h2e)],
            tls=[_tls_ctx(certs["server_cert"], certs["server_key"], certs["ca"])],
            node=dict(_node("server"), service="server.default.svc.cluster.local"))

        listeners, clusters = [], []
        for hop in ("http1", "http2"):
            for c, bport in (("h1", b1), ("h2", b2)):
                port = free_port()
                name = f"a-{hop}-{c}"
                self.ports[(f"mesh-h{hop[-1]}", c)] = port
                listeners.append((name, port, f"hop-{hop}-{c}", {"direction": "outbound"}))
                clusters.append({"name": f"hop-{hop}-{c}", "protocol": hop,
                                 "service": "server.default.svc.cluster.local",
                                 "workload": "server", "namespace": "default",
                                 "tls": {"context": "mesh", "server_ids": [SERVER_ID]},
                                 "endpoints": [{"address": f"127.0.0.1:{bport}"}]})
        a = _config(listeners, clusters,
                    tls=[_tls_ctx(certs["client_cert"], certs["client_key"], certs["ca"])],
                    node=_node("client"))
        try:
            for cfg, name in ((s, "S"), (b, "B"), (a, "A")):
                p = Proxy(workdir, cfg, name=name)
                self.procs.append(p)
                p.start()
            for port in self.ports.values():
                wait_port(port)
        except BaseException:
            self.close()  # stop what started; the error is the one raised
            raise

    def backend(self, kind):
        return self.h1b if kind == "h1" else self.h2b

    def client(self, path, client):
        for p in self.procs:
            if p.proc.poll() is not None:
                pytest.fail(f"trellis {p.name} died ({p.proc.returncode}):\n{p.read_log()[-4000:]}")
        port = self.ports[(path, client)]
        return H1(port) if client == "h1" else H2(port)

    def close(self):
        problems = []
        for p in self.procs:
            if p.proc is None:
                continue
            alive = p.proc.poll() is None
            p.stop()
            log = p.read_log()
            bad = [ln for ln in log.splitlines()
                   if "Sanitizer" in ln or "runtime error:" in ln or "SUMMARY:" in ln]
            if bad or not alive or p.proc.returncode != 0:
                problems.append(f"trellis {p.name}: alive_before_stop={alive} "
                                f"rc={p.proc.returncode}\n" + "\n".join(bad[:40]))
        self.h1b.close()
        self.h2b.close()
        return problems


@pytest.fixture(scope="module")
def topo(certs, tmp_path_factory):
    try:
        t = Topo(str(tmp_path_factory.mktemp("matrix")), certs)
    except (RuntimeError, TimeoutError, OSError) as first:
        # Ports are picked free then bound by other processes: another test run
        # on the machine can take one in between. One retry on fresh ports.
        try:
            t = Topo(str(tmp_path_factory.mktemp("matrix")), certs)
        except Exception as second:
            raise second from first
    yield t
    problems = t.close()
    if problems:
        pytest.fail("proxy problems at teardown (sanitizer output / crash):\n" + "\n".join(problems))


# ---------------------------------------------------------------- uniform clients

def _lower(fields):
    return [(k.lower(), v) for k, v in fields]


class H1:
    """request() -> {status, headers (names lowercased), raw_headers, body, trailers, framing}."""

    kind = "h1"

    def __init__(self, port):
        self.c = mu.H1Client(port, idle=IDLE)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.c.close()

    def request(self, method, target, headers=(), body=b"", framing="cl", trailers=None,
                host=AUTH):
        # "stream" framing = chunked for an HTTP/1.1 client
        fr = {"stream": "chunked"}.get(framing, framing)
        if method in ("GET", "HEAD") and not body and not trailers and framing == "cl":
            fr = "none"
        hdrs = ([("Host", host)] if host else []) + list(headers)
        r = self.c.request(method, target, hdrs, body, fr, trailers)
        r["raw_headers"] = r["headers"]
        r["headers"] = _lower(r["headers"])
        r["trailers"] = _lower(r["trailers"]) if r["trailers"] else r["trailers"]
        return r

    def warm(self):
        """A first request on this connection, so that the request under test is a
        keep-alive one (reused client connection, upstream connection warm)."""
        r = self.request("GET", "/echo?n=1")
        assert r["status"] == 200 and r["body"] == mu.pattern(1), r

    def many(self, reqs):
        return [self.request(**r) for r in reqs]


class H2:
    kind = "h2"

    def __init__(self, port):
        self.c = mu.H2Client(port, idle=IDLE)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.c.close()

    @staticmethod
    def _req(method, target, headers=(), body=b"", framing="cl", trailers=None, host=AUTH):
        hdrs = [(":method", method), (":scheme", "http"), (":path", target)]
        if host:
            hdrs.append((":authority", host))
        hdrs += [(k.lower(), v) for k, v in headers]
        if framing == "cl" and (body or method not in ("GET", "HEAD")):
            hdrs.append(("content-length", str(len(body))))
        return {"headers": hdrs, "body": body, "trailers": trailers}

    def warm(self):
        """A first request on this connection, so that the request under test is a
        keep-alive one (reused client connection, upstream connection warm)."""
        r = self.request("GET", "/echo?n=1")
        assert r["status"] == 200 and r["body"] == mu.pattern(1), r

    def many(self, reqs):
        out = self.c.exchange([self._req(**r) for r in reqs])
        for r in out:
            r["raw_headers"] = r["headers"]
            r["headers"] = [(k, v) for k, v in r["headers"] if not k.startswith(":")]
            r["framing"] = "cl" if mu.field(r["headers"], "content-length") else "none"
        return out

    def request(self, method, target, headers=(), body=b"", framing="cl", trailers=None,
                host=AUTH):
        return self.many([dict(method=method, target=target, headers=headers, body=body,
                               framing=framing, trailers=trailers, host=host)])[0]


# ---------------------------------------------------------------- checks

def case_id():
    return uuid.uuid4().hex


def same_bytes(got, want, what):
    if got != want:
        off = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        pytest.fail(f"{what}: got {len(got)} B (sha {hashlib.sha256(got).hexdigest()[:12]}), "
                    f"want {len(want)} B (sha {hashlib.sha256(want).hexdigest()[:12]}); "
                    f"first difference at offset {off}")


def check_backend(rec, bk):
    """What every request must look like when it reaches backend `bk`."""
    want = "HTTP/1.1" if bk == "h1" else "HTTP/2"
    assert rec["proto"] == want, f"backend {bk} saw {rec['proto']}: {rec.get('raw_head')!r}"
    hdrs = rec["headers"]
    names = [k.lower() for k, _ in hdrs]
    assert "trellis-orig-proto" not in names, hdrs
    if bk == "h2":
        assert all(k == k.lower() for k, _ in hdrs), f"upper-case field names over HTTP/2: {hdrs}"
        for bad in HOP_BY_HOP:
            assert bad not in names, f"{bad} reached the HTTP/2 backend: {hdrs}"
        assert mu.field(hdrs, "te") in ([], ["trailers"]), hdrs
        assert mu.field(hdrs, ":authority") == [AUTH], hdrs
        assert mu.field(hdrs, "host") in ([], [AUTH]), hdrs
        assert mu.field(hdrs, ":scheme") == ["http"], hdrs
    else:
        assert mu.field(hdrs, "host") == [AUTH], hdrs
    xff = mu.field(hdrs, "x-forwarded-for")
    assert len(xff) == 1 and "127.0.0.1" in [x.strip() for x in xff[0].split(",")], hdrs


def check_response(r, client, bk, status=200):
    assert r.get("reset") is None, f"stream reset {r.get('reset')}: {r}"
    assert r["status"] == status, (r["status"], r["headers"], r["body"][:200])
    assert mu.field(r["headers"], "x-backend") == [bk], r["headers"]
    if client == "h2":
        names = [k for k, _ in r["raw_headers"]]
        assert all(k == k.lower() for k in names), names
        for bad in HOP_BY_HOP:
            assert bad not in names, f"{bad} in an HTTP/2 response: {names}"
        assert "trellis-orig-proto" not in names
        for k, _ in r["trailers"] or ():
            assert k == k.lower() and not k.startswith(":"), r["trailers"]
    else:
        assert r["version"] == "HTTP/1.1"
        assert "trellis-orig-proto" not in [k for k, _ in r["headers"]]


def stream_rf(bk):
    """Response framing without a length: chunked from HTTP/1.1, no content-length from h2."""
    return "chunked" if bk == "h1" else "none"


# ---------------------------------------------------------------- tests

SIZES = [(0, "0B"), (10, "10B"), (MIB, "1MiB")]
FRAMINGS = [("cl", "cl"), ("stream", "stream")]


@pytest.mark.parametrize("path,client,framing,size",
                         matrix("request_body", framing=FRAMINGS, size=SIZES))
def test_request_body(topo, path, client, framing, size):
    """Request body byte for byte; framing: content-length, or chunked (HTTP/1.1
    client) / DATA without content-length (HTTP/2 client)."""
    bk = backend_for(path, client)
    body, case = mu.pattern(size), case_id()
    with topo.client(path, client) as c:
        c.warm()
        r = c.request("POST", "/echo?rf=cl", [("x-case", case)], body, framing)
        c.warm()  # the connection stays usable after it
    check_response(r, client, bk)
    same_bytes(r["body"], body, "echoed response body")
    rec = topo.backend(bk).get(case)
    check_backend(rec, bk)
    assert rec["method"] == "POST" and rec["target"] == "/echo?rf=cl"
    same_bytes(rec["body"], body, "body at the backend")
    assert not rec["trailers"]


@pytest.mark.parametrize("path,client,framing,size",
                         matrix("response_body", framing=FRAMINGS, size=SIZES))
def test_response_body(topo, path, client, framing, size):
    """Response body byte for byte; content-length, or chunked (HTTP/1.1 backend)
    / no content-length (HTTP/2 backend), which an HTTP/1.1 client gets chunked."""
    bk = backend_for(path, client)
    rf = "cl" if framing == "cl" else stream_rf(bk)
    case = case_id()
    with topo.client(path, client) as c:
        r = c.request("GET", f"/echo?n={size}&rf={rf}", [("x-case", case)])
    check_response(r, client, bk)
    same_bytes(r["body"], mu.pattern(size), "response body")
    if framing == "cl":
        assert mu.field(r["headers"], "content-length") == [str(size)], r["headers"]
    elif client == "h1":
        assert r["framing"] == "chunked", r["headers"]
    check_backend(topo.backend(bk).get(case), bk)


@pytest.mark.parametrize("path,client,direction", matrix(
    "trailers", direction=[("request", "request"), ("response", "response")]))
def test_trailers(topo, path, client, direction):
    """Trailers pass both ways where both ends can carry them: HTTP/1.1 chunked
    trailers <-> HTTP/2 trailers; the client sends TE: trailers."""
    bk = backend_for(path, client)
    case = case_id()
    req_trailers = [("x-req-trailer", "abc"), ("x-req-checksum", "42")]
    with topo.client(path, client) as c:
        c.warm()
        if direction == "request":
            r = c.request("POST", "/echo?rf=cl", [("x-case", case), ("TE", "trailers")],
                          mu.pattern(10), "stream", req_trailers)
        else:
            r = c.request("GET", f"/echo?n=100&rf={stream_rf(bk)}&rt=1",
                          [("x-case", case), ("TE", "trailers")])
    check_response(r, client, bk)
    rec = topo.backend(bk).get(case)
    check_backend(rec, bk)
    if direction == "request":
        same_bytes(rec["body"], mu.pattern(10), "body at the backend")
        assert _lower(rec["trailers"] or []) == req_trailers
        if bk == "h1":
            assert rec["framing"] == "chunked"
    else:
        same_bytes(r["body"], mu.pattern(100), "response body")
        assert r["trailers"] == mu.RESP_TRAILERS
        if client == "h1":
            assert r["framing"] == "chunked"
    if bk == "h2":
        assert mu.field(rec["headers"], "te") == ["trailers"], rec["headers"]


@pytest.mark.parametrize("path,client,direction", [
    pytest.param("single-h1", "h2", "request", id="h2client-to-h1backend-request"),
    pytest.param("single-h2", "h1", "response", id="h2backend-to-h1client-response"),
])
def test_length_framed_trailers_dropped(topo, path, client, direction):
    """HTTP/2 trailers on a message with content-length cannot be carried by a
    length-framed HTTP/1.1 message: the body passes intact, the trailers are dropped."""
    bk = backend_for(path, client)
    case = case_id()
    with topo.client(path, client) as c:
        if direction == "request":
            r = c.request("POST", "/echo?rf=cl", [("x-case", case)], mu.pattern(10), "cl",
                          [("x-req-trailer", "abc")])
        else:
            r = c.request("GET", "/echo?n=100&rf=cl&rt=1", [("x-case", case), ("TE", "trailers")])
    check_response(r, client, bk)
    rec = topo.backend(bk).get(case)
    check_backend(rec, bk)
    if direction == "request":
        assert rec["framing"] == "cl" and not rec["trailers"]
        same_bytes(rec["body"], mu.pattern(10), "body at the backend")
    else:
        assert r["framing"] == "cl" and not r["trailers"]
        same_bytes(r["body"], mu.pattern(100), "response body")


STATUS_CASES = {
    200: ("/echo?n=5", [], mu.pattern(5)),
    204: ("/status/204", [], b""),
    404: ("/status/404", [], mu.NOT_FOUND_BODY),
    304: ("/status/304", [("If-None-Match", '"v1"')], b""),
}


@pytest.mark.parametrize("path,client,code",
                         matrix("status", code=[(c, str(c)) for c in sorted(STATUS_CASES)]))
def test_status(topo, path, client, code):
    """Backend status codes pass unchanged (the backend's reply, not a local one);
    bodiless ones leave the connection usable for the next request."""
    bk = backend_for(path, client)
    target, hdrs, body = STATUS_CASES[code]
    case, case2 = case_id(), case_id()
    with topo.client(path, client) as c:
        r = c.request("GET", target, [("x-case", case)] + hdrs)
        r2 = c.request("GET", "/echo?n=10", [("x-case", case2)])
    check_response(r, client, bk, code)
    same_bytes(r["body"], body, f"{code} body")
    if code == 304:
        assert mu.field(r["headers"], "etag") == ['"v1"'], r["headers"]
    if code in (204, 304):
        assert mu.field(r["headers"], "transfer-encoding") == [], r["headers"]
    if code == 204:
        assert mu.field(r["headers"], "content-length") in ([], ["0"]), r["headers"]
    check_response(r2, client, bk)
    same_bytes(r2["body"], mu.pattern(10), "follow-up body")
    check_backend(topo.backend(bk).get(case), bk)


@pytest.mark.parametrize("path,client,framing", matrix("head", framing=FRAMINGS))
def test_head(topo, path, client, framing):
    """HEAD: the GET headers (content-length kept), no body, next request intact."""
    bk = backend_for(path, client)
    rf = "cl" if framing == "cl" else stream_rf(bk)
    case, case2 = case_id(), case_id()
    with topo.client(path, client) as c:
        r = c.request("HEAD", f"/echo?n=1000&rf={rf}", [("x-case", case)])
        r2 = c.request("GET", "/echo?n=10", [("x-case", case2)])
    check_response(r, client, bk)
    assert r["body"] == b""
    if framing == "cl":
        assert mu.field(r["headers"], "content-length") == ["1000"], r["headers"]
    check_response(r2, client, bk)
    same_bytes(r2["body"], mu.pattern(10), "body after HEAD")
    rec = topo.backend(bk).get(case)
    check_backend(rec, bk)
    assert rec["method"] == "HEAD"


@pytest.mark.parametrize("path,client", matrix("header_mapping"))
def test_header_mapping(topo, path, client):
    """Host <-> :authority, hop-by-hop fields (also those named by Connection) not
    forwarded, cookies joined with "; " toward HTTP/1.1, repeated fields kept,
    x-forwarded-for added, trellis-orig-proto never reaching the backend."""
    bk = backend_for(path, client)
    case = case_id()
    if client == "h1":
        hdrs = [("Connection", "keep-alive, X-Hop"), ("X-Hop", "secret"),
                ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                ("TE", "trailers"), ("Cookie", "a=1; b=2"), ("X-Multi", "1"), ("X-Multi", "2"),
                ("X-Mixed-Case", "Value"), ("x-case", case)]
    else:
        hdrs = [("te", "trailers"), ("cookie", "a=1"), ("cookie", "b=2"), ("x-multi", "1"),
                ("x-multi", "2"), ("x-mixed-case", "Value"), ("x-case", case)]
    with topo.client(path, client) as c:
        c.warm()
        r = c.request("POST", "/echo?rf=cl", hdrs, mu.pattern(10), "stream")
    check_response(r, client, bk)
    same_bytes(r["body"], mu.pattern(10), "echo")
    rec = topo.backend(bk).get(case)
    check_backend(rec, bk)
    h = rec["headers"]
    same_bytes(rec["body"], mu.pattern(10), "body at the backend")
    if bk == "h1":
        assert mu.field(h, "cookie") == ["a=1; b=2"], h
    else:
        assert "; ".join(mu.field(h, "cookie")) == "a=1; b=2", h
    assert ", ".join(mu.field(h, "x-multi")) == "1, 2", h
    assert mu.field(h, "x-mixed-case") == ["Value"], h
    assert mu.field(h, "x-hop") == [], f"field named by Connection was forwarded: {h}"
    assert mu.field(h, "proxy-connection") == [], h
    assert mu.field(h, "keep-alive") == [], h
    if bk == "h2":
        assert mu.field(h, "te") == ["trailers"], h
    if path.startswith("single"):
        assert mu.field(h, "x-forwarded-for") == ["127.0.0.1"], h


@pytest.mark.parametrize("path,client", matrix("orig_proto"))
def test_orig_proto_from_client_ignored(topo, path, client):
    """A client cannot inject trellis-orig-proto: it never reaches the backend
    and does not change the protocol used toward it."""
    bk = backend_for(path, client)
    case = case_id()
    spoof = "HTTP/1.1" if client == "h2" else "HTTP/2"
    with topo.client(path, client) as c:
        r = c.request("GET", "/echo?n=10", [("x-case", case), ("trellis-orig-proto", spoof)])
    check_response(r, client, bk)
    same_bytes(r["body"], mu.pattern(10), "body")
    check_backend(topo.backend(bk).get(case), bk)


def _mixed(bk, client):
    """A varied sequence: (request kwargs, expected status, body, trailers)."""
    out = []
    for rnd in range(2):
        out += [
            (dict(method="GET", target="/echo?n=10"), 200, mu.pattern(10), None),
            (dict(method="POST", target="/echo?rf=cl", body=mu.pattern(1000)), 200,
             mu.pattern(1000), None),
            (dict(method="POST", target=f"/echo?rf={stream_rf(bk)}&rt=1", body=mu.pattern(70000),
                  framing="stream", trailers=[("x-req-trailer", str(rnd))],
                  headers=[("TE", "trailers")]), 200, mu.pattern(70000), mu.RESP_TRAILERS),
            (dict(method="HEAD", target="/echo?n=50"), 200, b"", None),
            (dict(method="GET", target="/status/204"), 204, b"", None),
            (dict(method="GET", target="/status/304", headers=[("If-None-Match", '"v1"')]),
             304, b"", None),
            (dict(method="GET", target="/status/404"), 404, mu.NOT_FOUND_BODY, None),
            (dict(method="POST", target="/echo?rf=cl", body=b""), 200, b"", None),
            (dict(method="GET", target=f"/echo?n=100000&rf={stream_rf(bk)}"), 200,
             mu.pattern(100000), None),
            (dict(method="PUT", target="/echo?rf=cl", body=mu.pattern(7), framing="stream"), 200,
             mu.pattern(7), None),
        ]
    return out


@pytest.mark.parametrize("path,client", matrix("many"))
def test_many_requests_one_connection(topo, path, client):
    """20 mixed requests on one client connection (HTTP/1.1 keep-alive in
    sequence; HTTP/2 as concurrent streams), then 10 more on the same one."""
    bk = backend_for(path, client)
    plan = _mixed(bk, client)
    with topo.client(path, client) as c:
        for batch in (plan, plan[:10]):
            cases = [case_id() for _ in batch]
            reqs = []
            for (kw, _, _, _), case in zip(batch, cases):
                kw = dict(kw)
                kw["headers"] = list(kw.get("headers", [])) + [("x-case", case)]
                reqs.append(kw)
            resps = c.many(reqs)
            for (kw, status, body, trailers), case, r in zip(batch, cases, resps):
                what = f"{kw['method']} {kw['target']}"
                check_response(r, client, bk, status)
                same_bytes(r["body"], body, what)
                if trailers:
                    assert r["trailers"] == trailers, what
                rec = topo.backend(bk).get(case)
                check_backend(rec, bk)
                same_bytes(rec["body"], kw.get("body", b""), f"{what} at the backend")
                if kw.get("trailers"):
                    assert _lower(rec["trailers"] or []) == kw["trailers"], what


@pytest.mark.parametrize("conn_upgrade", [
    pytest.param(True, id="connection-upgrade"),
    pytest.param(False, id="bare-upgrade-field")])
def test_h2c_upgrade_request_to_http2_cluster(topo, conn_upgrade):
    """h2c Upgrade is not supported: the request is served as a plain request,
    so toward an http2 cluster it goes as HTTP/2 without upgrade fields."""
    case = case_id()
    hdrs = [("Upgrade", "h2c"), ("x-case", case)]
    if conn_upgrade:
        hdrs += [("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
                 ("Connection", "Upgrade, HTTP2-Settings")]
    with topo.client("single-h2", "h1") as c:
        r = c.request("GET", "/echo?n=10", hdrs)
        check_response(r, "h1", "h2")
        same_bytes(r["body"], mu.pattern(10), "body")
        r2 = c.request("GET", "/echo?n=5")
        check_response(r2, "h1", "h2")
        same_bytes(r2["body"], mu.pattern(5), "next body")
    rec = topo.h2b.get(case)
    check_backend(rec, "h2")
    assert mu.field(rec["headers"], "http2-settings") == [], rec["headers"]
