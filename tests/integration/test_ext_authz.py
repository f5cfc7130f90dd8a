"""CUSTOM authorization with an HTTP external authorizer (upstream/ext_authz.h;
Istio's envoyExtAuthzHttp): a real trellis asks a python authorizer (allow
when the request carries `x-ext-authz: allow`, else 403 with a body) before
DENY/ALLOW policies and routing, for HTTP/1.1 (curl) and HTTP/2 (curl with
prior knowledge) clients, with a real backend behind. Also the failures:
a slow authorizer (timeout) with failOpen true and false, an authorizer that
is down, and the Istio path: `trellis ctl compile` from a mesh ConfigMap and
an AuthorizationPolicy, run as is."""
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import pki  # noqa: E402
from conftest import (TRELLIS, Proxy, RecordingBackend, free_port, sanitizer_checked,  # noqa: E402
                      simple_config)

CHECKS = "trellis_ext_authz_checks_total"


class Authorizer:
    """Envoy's HTTP ext_authz contract: 200 allows (echoing a header the
    proxy passes upstream), anything else denies with its body. Records
    every check (method, path, headers)."""

    def __init__(self, delay=0.0):
        self.port = free_port()
        self.delay = delay
        self.checks = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with outer.lock:
                    outer.checks.append({"method": self.command, "path": self.path,
                                         "headers": {k.lower(): v for k, v in self.headers.items()},
                                         "body": body})
                    delay = outer.delay
                if delay:
                    time.sleep(delay)
                if self.headers.get("x-ext-authz") == "allow":
                    self.send_response(200)
                    self.send_header("x-ext-authz-check-result", "allowed")
                    self.send_header("x-ext-authz-note", "hello downstream")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                out = f"denied by ext_authz for {self.path}".encode()
                self.send_response(403)
                self.send_header("x-ext-authz-check-result", "denied")
                self.send_header("x-ext-authz-reason", "no allow header")
                self.send_header("x-other", "not passed")
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.up = True

    def close(self):
        if self.up:
            self.up = False
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def checked(proxies):
    yield from sanitizer_checked(proxies)


@pytest.fixture
def authorizer():
    a = Authorizer()
    yield a
    a.close()


def start(proxies, backend, authz_port, name="proxy", **ext):
    port = free_port()
    provider = {"name": "ext", "cluster": "authz", "path_prefix": "/check",
                "check_headers": ["x-ext-authz", "x-user-*"],
                "check_add": {"x-checked-by": "trellis"},
                "upstream_on_allow": ["x-ext-authz-check-result"],
                "downstream_on_allow": ["x-ext-authz-note"],
                "downstream_on_deny": ["x-ext-authz-*"]}
    provider.update(ext)
    cfg = simple_config(port, backend.port, authorization={"policies": [
        {"name": "ns/ext", "action": "CUSTOM", "provider": "ext",
         "rules": [{"to": [{"paths": ["/api/*"]}]}]},
        {"name": "ns/deny-admin", "action": "DENY",
         "rules": [{"to": [{"paths": ["/api/admin"]}]}]}]})
    cfg["clusters"].append({"name": "authz",
                            "endpoints": [{"address": f"127.0.0.1:{authz_port}"}]})
    cfg["ext_authz"] = [provider]
    p = proxies(cfg, name)
    p.port = port
    return p


def curl(p, path, *headers, h2=False, method=None):
    args = ["curl", "-s", "-i", "--max-time", "10"]
    if h2:
        args.append("--http2-prior-knowledge")
    if method:
        args += ["-X", method]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + [f"http://127.0.0.1:{p.port}{path}"], capture_output=True,
                         check=True).stdout.decode(errors="replace")
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    fields = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        fields.setdefault(k.strip().lower(), v.strip())
    return status, fields, body


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "http2"])
def test_allow_deny_and_headers(checked, backend, authorizer, h2):
    p = start(checked, backend, authorizer.port)
    # Allowed: the backend gets the request with the authorizer's field;
    # the client gets the response with the allow field.
    st, f, body = curl(p, "/api/items?q=1", "x-ext-authz: allow", "x-user-id: 7",
                       "x-secret: s", h2=h2)
    assert st == 200, body
    seen = json.loads(body)
    assert seen["path"] == "/api/items?q=1"
    assert seen["headers"]["x-ext-authz-check-result"] == "allowed"
    assert f["x-ext-authz-note"] == "hello downstream"
    chk = authorizer.checks[-1]
    assert chk["method"] == "GET"
    assert chk["path"] == "/check/api/items?q=1"
    assert chk["headers"]["x-ext-authz"] == "allow"
    assert chk["headers"]["x-user-id"] == "7"  # a prefix pattern
    assert chk["headers"]["x-checked-by"] == "trellis"  # check_add
    assert chk["headers"]["content-length"] == "0" and chk["body"] == b""
    assert "x-secret" not in chk["headers"]  # not named: not sent
    assert chk["headers"]["host"].startswith("127.0.0.1:")
    # Denied: the authorizer's status, body and the deny fields it names.
    n_backend = len(backend.requests)
    st, f, body = curl(p, "/api/items", h2=h2)
    assert st == 403
    assert body == "denied by ext_authz for /check/api/items"
    assert f["x-ext-authz-check-result"] == "denied"
    assert f["x-ext-authz-reason"] == "no allow header"
    assert "x-other" not in f
    assert len(backend.requests) == n_backend
    # Not matched by the CUSTOM policy: no check at all.
    n = len(authorizer.checks)
    st, _, _ = curl(p, "/other", h2=h2)
    assert st == 200
    assert len(authorizer.checks) == n
    # CUSTOM first, then DENY: allowed by the authorizer, denied by RBAC.
    st, _, body = curl(p, "/api/admin", "x-ext-authz: allow", h2=h2)
    assert st == 403 and body == "RBAC: access denied"
    assert len(authorizer.checks) == n + 1
    # POST with a body: the body waits and goes upstream after the check.
    st, _, body = curl(p, "/api/post", "x-ext-authz: allow", h2=h2, method="POST")
    assert st == 200
    assert p.metric(CHECKS, authorizer="ext", result="allowed") == 3
    assert p.metric(CHECKS, authorizer="ext", result="denied") == 1
    assert p.metric(CHECKS, authorizer="ext", result="error") == 0
    log = p.read_log()
    assert "denied by external authorizer ext (policy ns/ext): it answered 403" in log


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "http2"])
def test_authorizer_fields_seen_by_policies_and_routing(checked, backend, authorizer, h2):
    """As in Envoy (ext_authz before RBAC and the router), DENY/ALLOW
    policies and route matches see the request with the authorizer's
    upstream fields, which replace the client's of the same name: the
    request decided is the request forwarded."""
    other = RecordingBackend()
    try:
        p = start(checked, backend, authorizer.port, name="fields")
        cfg = p.config
        cfg["clusters"].append({"name": "checked",
                                "endpoints": [{"address": f"127.0.0.1:{other.port}"}]})
        cfg["route_tables"][0]["virtual_hosts"][0]["routes"].insert(0, {
            "name": "by-result", "cluster": "checked",
            "match": {"path": {"prefix": "/api/"},
                      "headers": [{"name": "x-ext-authz-check-result", "exact": "allowed"}]}})
        cfg["listeners"][0]["authorization"]["policies"].append(
            {"name": "ns/deny-checked-secret", "action": "DENY",
             "rules": [{"to": [{"paths": ["/api/secret"]}],
                        "when": [{"key": "request.headers[x-ext-authz-check-result]",
                                  "values": ["allowed"]}]}]})
        p.write_config(cfg)
        p.signal(__import__("signal").SIGHUP)
        deadline = time.monotonic() + 10
        while len(other.requests) == 0 and time.monotonic() < deadline:
            curl(p, "/api/x", "x-ext-authz: allow", h2=h2)
            time.sleep(0.1)
        n = len(other.requests)
        assert n >= 1  # the route matched on the authorizer's field
        # the client's own value is replaced, never seen next to it
        st, _, _ = curl(p, "/api/x", "x-ext-authz: allow", "x-ext-authz-check-result: forged",
                        h2=h2)
        assert st == 200 and len(other.requests) == n + 1
        got = [v for k, v in other.requests[-1]["headers"] if k == "x-ext-authz-check-result"]
        assert got == ["allowed"]
        # without the check, the client's value routes: /other is not CUSTOM
        before = len(backend.requests)
        assert curl(p, "/other", "x-ext-authz-check-result: forged", h2=h2)[0] == 200
        assert len(backend.requests) == before + 1
        # DENY on a field only the authorizer sets
        st, _, body = curl(p, "/api/secret", "x-ext-authz: allow", h2=h2)
        assert (st, body) == (403, "RBAC: access denied")
        assert len(other.requests) == n + 1
    finally:
        other.close()


def test_request_body_waits_for_the_check(checked, backend, authorizer):
    p = start(checked, backend, authorizer.port)
    out = subprocess.run(["curl", "-s", "--max-time", "10", "-H", "x-ext-authz: allow",
                          "--data-binary", "x" * 100000,
                          f"http://127.0.0.1:{p.port}/api/upload"],
                         capture_output=True, check=True).stdout
    assert json.loads(out)["body_len"] == 100000
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", "10",
                          "-H", "x-ext-authz: allow", "--data-binary", "y" * 100000,
                          f"http://127.0.0.1:{p.port}/api/upload"],
                         capture_output=True, check=True).stdout
    assert json.loads(out)["body_len"] == 100000
    # Keep-alive: a denied request, then an allowed one on one connection.
    out = subprocess.run(["curl", "-sv", "--max-time", "10", "-o", "/dev/null", "-w",
                          "%{http_code} ", f"http://127.0.0.1:{p.port}/api/a", "--next",
                          "-s", "-o", "/dev/null", "-w", "%{http_code} ",
                          "-H", "x-ext-authz: allow", f"http://127.0.0.1:{p.port}/api/b"],
                         capture_output=True, check=True)
    assert out.stdout.decode().split() == ["403", "200"]
    assert b"Re-using existing connection" in out.stderr


@pytest.mark.parametrize("fail_open", [False, True])
def test_timeout(checked, backend, fail_open):
    slow = Authorizer(delay=2.0)
    try:
        p = start(checked, backend, slow.port, timeout="300ms", fail_open=fail_open)
        t0 = time.monotonic()
        st, _, _ = curl(p, "/api/items", "x-ext-authz: allow")
        assert time.monotonic() - t0 < 1.8
        if fail_open:
            assert st == 200
            assert p.metric(CHECKS, result="failed_open") == 1
        else:
            assert st == 403
            assert p.metric(CHECKS, result="error") == 1
    finally:
        slow.close()


def test_authorizer_down(checked, backend):
    dead = free_port()
    p = start(checked, backend, dead, status_on_error=503)
    st, _, body = curl(p, "/api/items", "x-ext-authz: allow")
    assert st == 503 and body == ""
    assert "the check failed, status_on_error 503" in p.read_log()
    st, _, _ = curl(p, "/api/items", "x-ext-authz: allow", h2=True)
    assert st == 503
    assert p.metric(CHECKS, result="error") == 2
    p2 = start(checked, backend, dead, name="open", fail_open=True)
    st, _, _ = curl(p2, "/api/items")
    assert st == 200


def test_access_log_names_the_external_authorizer(checked, backend, authorizer, workdir):
    port = free_port()
    log = os.path.join(str(workdir), "access.log")
    cfg = simple_config(port, backend.port, authorization={"policies": [
        {"name": "ns/ext", "action": "CUSTOM", "provider": "ext", "rules": [{}]}]})
    cfg["clusters"].append({"name": "authz",
                            "endpoints": [{"address": f"127.0.0.1:{authorizer.port}"}]})
    cfg["ext_authz"] = [{"name": "ext", "cluster": "authz"}]
    cfg["access_log"] = {"enabled": True, "path": log}
    p = checked(cfg)
    p.port = port
    assert curl(p, "/x")[0] == 403
    deadline = time.monotonic() + 5
    text = ""
    while time.monotonic() < deadline:
        text = open(log).read() if os.path.exists(log) else ""
        if "UAEX" in text:
            break
        time.sleep(0.05)
    assert "UAEX" in text and "ns/ext" in text, text


MESH = """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    extensionProviders:
    - name: sample-ext-authz-http
      envoyExtAuthzHttp:
        service: ext-authz.foo.svc.cluster.local
        port: 8000
        timeout: 2s
        includeRequestHeadersInCheck: ["x-ext-authz"]
        headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
        headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
"""

WORKLOADS = """apiVersion: v1
kind: Service
metadata: {name: ext-authz, namespace: foo}
spec:
  selector: {app: ext-authz}
  ports: [{name: http, port: 8000, targetPort: %(authz)d}]
---
apiVersion: v1
kind: Pod
metadata: {name: ext-authz-0, namespace: foo, labels: {app: ext-authz}}
status: {podIP: 127.0.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: %(backend)d}]
---
apiVersion: v1
kind: Pod
metadata: {name: httpbin-0, namespace: foo, labels: {app: httpbin}}
status: {podIP: 127.0.0.2}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules:
  - to:
    - operation: {paths: ["/headers"]}
"""


def test_istio_compile(workdir):
    d = os.path.join(str(workdir), "mesh")
    os.makedirs(d)
    with open(os.path.join(d, "mesh.yaml"), "w") as f:
        f.write(MESH)
    with open(os.path.join(d, "workloads.yaml"), "w") as f:
        f.write(WORKLOADS % {"authz": 8001, "backend": 8002})
    r = subprocess.run([TRELLIS, "ctl", "compile", d, "--workload", "foo/httpbin-0"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "ext_authz:" in out
    assert "name: sample-ext-authz-http" in out
    assert "action: CUSTOM" in out
    assert "provider: sample-ext-authz-http" in out
    assert "outbound|8000||ext-authz.foo.svc.cluster.local" in out
    assert "timeout: 2s" in out
    # `ctl authz check` says the authorizer is asked first, and what follows.
    def check(path):
        r = subprocess.run([TRELLIS, "ctl", "authz", "check", d, "--from",
                            "spiffe://cluster.local/ns/foo/sa/x", "--to", "foo/httpbin-0",
                            "--method", "GET", "--path", path, "-o", "json"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    got = check("/headers")
    assert got["ext_authz"] == {"provider": "sample-ext-authz-http", "policy": "foo/ext-authz",
                                "rule": 0}
    assert got["decision"] == "ALLOW"
    assert check("/ip")["ext_authz"] is None


E2E = """apiVersion: v1
kind: Service
metadata: {name: ext-authz, namespace: foo}
spec:
  selector: {app: ext-authz}
  ports: [{name: http, port: 8000, targetPort: %(authz)d}]
---
apiVersion: v1
kind: Pod
metadata: {name: ext-authz-0, namespace: foo, labels: {app: ext-authz}}
status: {podIP: 127.0.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: %(backend)d}]
---
apiVersion: v1
kind: Pod
metadata: {name: httpbin-0, namespace: foo,
           labels: {app: httpbin, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: httpbin}
status: {podIP: %(ip)s}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules:
  - to:
    - operation: {paths: ["/headers"]}
"""


def test_istio_end_to_end(workdir, authorizer):
    """The Istio sample (a mesh ConfigMap naming the ext-authz Service, a
    CUSTOM policy on httpbin's /headers) compiled by `trellis ctl compile`
    and run as is: the proxy asks the authorizer, which the model reaches
    through the outbound cluster of its Service."""
    d = os.path.join(str(workdir), "e2e")
    certs = os.path.join(d, "certs")
    os.makedirs(certs)
    ca = pki.create_ca(d, "ca")
    leaf = pki.create_leaf(certs, ca, "cert", ns="foo", sa="httpbin")
    shutil.copy(leaf.key, os.path.join(certs, "key.pem"))
    shutil.copy(ca.cert_path, os.path.join(certs, "ca.pem"))
    ip, app_ip = "127.0.91.1", "127.0.91.2"
    backend = RecordingBackend(host=app_ip)
    try:
        mesh_dir = os.path.join(d, "mesh")
        os.makedirs(mesh_dir)
        with open(os.path.join(mesh_dir, "mesh.yaml"), "w") as f:
            f.write(MESH)
        with open(os.path.join(mesh_dir, "workloads.yaml"), "w") as f:
            f.write(E2E % {"authz": authorizer.port, "backend": backend.port, "ip": ip})
        r = subprocess.run([TRELLIS, "ctl", "compile", mesh_dir, "--workload", "foo/httpbin-0",
                            "-o", "json", "--app-ip", app_ip, "--cert-dir", certs],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        proxy = Proxy(str(workdir), json.loads(r.stdout), name="httpbin-sidecar")
        proxy.start()
        try:
            url = f"http://{ip}:{backend.port}"

            def get(path, *headers):
                args = ["curl", "-s", "-i", "--max-time", "10"]
                for h in headers:
                    args += ["-H", h]
                out = subprocess.run(args + [url + path], capture_output=True,
                                     check=True).stdout.decode()
                head, _, body = out.replace("\r\n", "\n").partition("\n\n")
                return int(head.split()[1]), head.lower(), body

            st, head, body = get("/headers")
            assert st == 403 and body == "denied by ext_authz for /headers"
            assert "x-ext-authz-check-result: denied" in head  # headersToDownstreamOnDeny
            st, _, body = get("/headers", "x-ext-authz: allow")
            assert st == 200
            seen = json.loads(body)
            assert seen["headers"]["x-ext-authz-check-result"] == "allowed"
            assert authorizer.checks[-1]["path"] == "/headers"
            n = len(authorizer.checks)
            assert get("/ip")[0] == 200  # not matched: not checked
            assert len(authorizer.checks) == n
        finally:
            proxy.stop()
    finally:
        backend.close()
