"""AuthorizationPolicy end to end, as a table: (policy set x request) ->
expected decision and deciding policy, from Istio's documented semantics
(evaluation order CUSTOM/DENY/ALLOW, `spec: {}` as allow-nothing, `rules:
[{}]` as match-all, the string and path-template matching, `not*` fields,
conditions, root-namespace scope, selectors, HTTP-only fields on TCP).

Each policy set is a directory of Kubernetes and Istio YAML. Every case is
asked twice and both answers must equal the table:
  - `trellis ctl authz check -o json` (decision, policy, rule);
  - a real proxy running the model `trellis ctl compile` printed for the
    server workload, driven by real mTLS clients with certificates for
    distinct SPIFFE identities (and plaintext ones): 200 from the
    application or 403 `RBAC: access denied` (a closed connection on TCP),
    and the proxy's log line naming the policy (or the default) that denied.
"""
import http.client
import json
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time

import pytest

import pki
from conftest import TRELLIS, Proxy

NS = "prod"
WORKLOAD = f"{NS}/backend-1"
HTTP_PORT, TCP_PORT = 8080, 5432

# Client identities: one certificate each (None: plaintext).
IDS = {
    "frontend": ("prod", "frontend"),
    "legacy": ("prod", "legacy"),
    "admin": ("ops", "admin"),
    "web": ("dev", "web"),
}


def ap(name, spec, ns=NS, version="v1"):
    return (f"apiVersion: security.istio.io/{version}\nkind: AuthorizationPolicy\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}")


# ------------------------------------------------------------ policy sets

SETS = {
    # The seed's recipe: deny-all (an ALLOW policy matching nothing) plus
    # policies admitting what they match.
    "seed": [
        ap("deny-all", "  {}\n"),
        ap("allow-frontend", "  selector: {matchLabels: {app: backend}}\n  action: ALLOW\n"
           "  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/prod/sa/frontend]}\n"
           "    to:\n    - operation: {methods: [GET, POST], paths: [\"/api/*\"]}\n"),
        ap("allow-ops-health", "  rules:\n  - from:\n    - source: {namespaces: [ops]}\n"
           "    to:\n    - operation: {paths: [/healthz]}\n"),
    ],
    # DENY before ALLOW; not* fields.
    "deny-first": [
        ap("deny-legacy", "  action: DENY\n  rules:\n  - from:\n    - source: {principals: "
           "[cluster.local/ns/prod/sa/legacy]}\n"),
        ap("deny-admin-paths", "  action: DENY\n  rules:\n  - from:\n    - source: "
           "{notNamespaces: [ops]}\n    to:\n    - operation: {paths: [\"/admin/*\"]}\n"),
        ap("allow-prod", "  rules:\n  - from:\n    - source: {namespaces: [prod, ops]}\n"),
    ],
    # Only DENY policies: what none matches is allowed.
    "deny-only": [
        ap("deny-delete", "  action: DENY\n  rules:\n  - to:\n    - operation: {methods: "
           "[DELETE]}\n"),
        ap("deny-plaintext", "  action: DENY\n  rules:\n  - from:\n    - source: "
           "{notPrincipals: [\"*\"]}\n"),
    ],
    # Path templates, suffix and prefix paths, notPaths, ports.
    "paths": [
        ap("allow-items", "  rules:\n  - to:\n    - operation:\n        methods: [GET]\n"
           "        paths: [\"/items/{*}\", \"/files/{**}\", \"*.css\"]\n"),
        ap("allow-port", "  rules:\n  - to:\n    - operation: {ports: [\"8080\"], paths: "
           "[\"/p/*\"], notPaths: [\"/p/secret*\"]}\n"),
    ],
    # Conditions: headers (values, notValues, presence), source.principal,
    # source.namespace, destination.port, source.ip.
    "conditions": [
        ap("deny-debug", "  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-debug]\n"
           "      values: [\"*\"]\n"),
        ap("allow-tenant", "  rules:\n  - when:\n    - key: request.headers[x-tenant]\n"
           "      values: [\"acme*\"]\n      notValues: [acme-blocked]\n"),
        ap("allow-ops", "  rules:\n  - when:\n    - {key: source.principal, values: "
           "[\"cluster.local/ns/ops/*\"]}\n    - {key: destination.port, values: [\"8080\"]}\n"),
        ap("allow-internal", "  rules:\n  - when:\n    - {key: source.ip, values: [10.0.0.0/8]}\n"),
        ap("allow-legacy-v2", "  rules:\n  - from:\n    - source: {namespaces: [prod]}\n"
           "    when:\n    - {key: \"request.headers[x-version]\", values: [v2]}\n"),
    ],
    # Scope: the root namespace applies mesh-wide; another namespace's and
    # another app's policies do not; AUDIT never decides.
    "scope": [
        ap("mesh-deny-trace", "  action: DENY\n  rules:\n  - to:\n    - operation: {methods: "
           "[TRACE]}\n", ns="istio-system"),
        ap("other-app", "  selector: {matchLabels: {app: other}}\n  action: DENY\n"
           "  rules: [{}]\n"),
        ap("elsewhere", "  action: DENY\n  rules: [{}]\n", ns="dev"),
        ap("audit-all", "  action: AUDIT\n  rules: [{}]\n"),
        ap("allow-mtls-get", "  rules:\n  - from:\n    - source: {principals: [\"*\"]}\n"
           "    to:\n    - operation: {methods: [GET]}\n", version="v1beta1"),
    ],
    # serviceAccounts, hosts (port cut, suffix), notPrincipals with a prefix.
    "hosts": [
        ap("deny-outsiders-internal", "  action: DENY\n  rules:\n  - from:\n    - source: "
           "{notPrincipals: [\"cluster.local/ns/prod/*\"]}\n    to:\n    - operation: {paths: "
           "[\"/internal/*\"]}\n"),
        ap("allow-sa", "  rules:\n  - from:\n    - source: {serviceAccounts: [ops/admin]}\n"),
        ap("allow-host", "  rules:\n  - to:\n    - operation: {hosts: "
           "[backend.prod.svc.cluster.local, \"*.example.com\"]}\n"),
    ],
    # TCP: an ALLOW rule with an HTTP-only field never matches a connection.
    "tcp-allow": [
        ap("allow-db", "  rules:\n  - from:\n    - source: {namespaces: [prod]}\n    to:\n"
           "    - operation: {ports: [\"5432\"]}\n"),
        ap("allow-web-get", "  rules:\n  - from:\n    - source: {principals: "
           "[cluster.local/ns/dev/sa/web]}\n    to:\n    - operation: {methods: [GET]}\n"),
    ],
    # TCP: a DENY rule leaves its HTTP-only fields out (fail closed).
    "tcp-deny": [
        ap("deny-web-path", "  action: DENY\n  rules:\n  - from:\n    - source: {principals: "
           "[cluster.local/ns/dev/sa/web]}\n    to:\n    - operation: {paths: [/x]}\n"),
    ],
}

H = "backend:8080"  # the Host header of most cases

# (set, client, method, path, headers, host, port, expected decision,
#  expected policy "NS/NAME" or None for a default). method None: TCP.
CASES = [
    ("seed", "frontend", "GET", "/api/items", {}, H, 8080, "ALLOW", "prod/allow-frontend"),
    ("seed", "frontend", "POST", "/api/items", {}, H, 8080, "ALLOW", "prod/allow-frontend"),
    ("seed", "frontend", "GET", "/api/items?page=2", {}, H, 8080, "ALLOW", "prod/allow-frontend"),
    ("seed", "frontend", "DELETE", "/api/items", {}, H, 8080, "DENY", None),
    ("seed", "frontend", "GET", "/admin", {}, H, 8080, "DENY", None),
    ("seed", "frontend", "GET", "/api", {}, H, 8080, "DENY", None),
    ("seed", "admin", "GET", "/healthz", {}, H, 8080, "ALLOW", "prod/allow-ops-health"),
    ("seed", "admin", "GET", "/healthz/x", {}, H, 8080, "DENY", None),
    ("seed", "admin", "GET", "/api/items", {}, H, 8080, "DENY", None),
    ("seed", "web", "GET", "/api/items", {}, H, 8080, "DENY", None),
    ("seed", "legacy", "GET", "/healthz", {}, H, 8080, "DENY", None),
    ("seed", None, "GET", "/api/items", {}, H, 8080, "DENY", None),
    ("seed", None, "GET", "/healthz", {}, H, 8080, "DENY", None),

    ("deny-first", "frontend", "GET", "/", {}, H, 8080, "ALLOW", "prod/allow-prod"),
    ("deny-first", "legacy", "GET", "/", {}, H, 8080, "DENY", "prod/deny-legacy"),
    ("deny-first", "legacy", "GET", "/admin/x", {}, H, 8080, "DENY", "prod/deny-legacy"),
    ("deny-first", "frontend", "GET", "/admin/x", {}, H, 8080, "DENY", "prod/deny-admin-paths"),
    ("deny-first", "frontend", "GET", "/adminx", {}, H, 8080, "ALLOW", "prod/allow-prod"),
    ("deny-first", "admin", "GET", "/admin/x", {}, H, 8080, "ALLOW", "prod/allow-prod"),
    ("deny-first", "admin", "POST", "/other", {}, H, 8080, "ALLOW", "prod/allow-prod"),
    ("deny-first", "web", "GET", "/", {}, H, 8080, "DENY", None),
    ("deny-first", "web", "GET", "/admin/x", {}, H, 8080, "DENY", "prod/deny-admin-paths"),
    ("deny-first", None, "GET", "/", {}, H, 8080, "DENY", None),
    ("deny-first", None, "GET", "/admin/", {}, H, 8080, "DENY", "prod/deny-admin-paths"),

    ("deny-only", "web", "GET", "/", {}, H, 8080, "ALLOW", None),
    ("deny-only", "frontend", "PUT", "/x", {}, H, 8080, "ALLOW", None),
    ("deny-only", "web", "DELETE", "/x", {}, H, 8080, "DENY", "prod/deny-delete"),
    ("deny-only", "frontend", "DELETE", "/", {}, H, 8080, "DENY", "prod/deny-delete"),
    ("deny-only", None, "GET", "/", {}, H, 8080, "DENY", "prod/deny-plaintext"),
    ("deny-only", None, "DELETE", "/", {}, H, 8080, "DENY", "prod/deny-delete"),
    ("deny-only", "admin", "OPTIONS", "/", {}, H, 8080, "ALLOW", None),

    ("paths", "web", "GET", "/items/1", {}, H, 8080, "ALLOW", "prod/allow-items"),
    ("paths", "web", "GET", "/items/1/2", {}, H, 8080, "DENY", None),
    ("paths", "web", "GET", "/items/", {}, H, 8080, "DENY", None),
    ("paths", "web", "GET", "/items", {}, H, 8080, "DENY", None),
    ("paths", "web", "POST", "/items/1", {}, H, 8080, "DENY", None),
    ("paths", "web", "GET", "/files/a/b/c", {}, H, 8080, "ALLOW", "prod/allow-items"),
    ("paths", "web", "GET", "/files/", {}, H, 8080, "ALLOW", "prod/allow-items"),
    ("paths", "web", "GET", "/files", {}, H, 8080, "DENY", None),
    ("paths", "web", "GET", "/x/y.css", {}, H, 8080, "ALLOW", "prod/allow-items"),
    ("paths", "web", "GET", "/x/y.cssx", {}, H, 8080, "DENY", None),
    ("paths", "web", "PUT", "/p/ok", {}, H, 8080, "ALLOW", "prod/allow-port"),
    ("paths", "web", "GET", "/p/secret/1", {}, H, 8080, "DENY", None),
    ("paths", None, "GET", "/items/7", {}, H, 8080, "ALLOW", "prod/allow-items"),
    ("paths", "frontend", "GET", "/files/x?y=/items/1", {}, H, 8080, "ALLOW", "prod/allow-items"),

    ("conditions", "web", "GET", "/", {"x-tenant": "acme-1"}, H, 8080, "ALLOW", "prod/allow-tenant"),
    ("conditions", "web", "GET", "/", {"x-tenant": "acme"}, H, 8080, "ALLOW", "prod/allow-tenant"),
    ("conditions", "web", "GET", "/", {"x-tenant": "acme-blocked"}, H, 8080, "DENY", None),
    ("conditions", "web", "GET", "/", {"x-tenant": "ACME"}, H, 8080, "DENY", None),
    ("conditions", "web", "GET", "/", {}, H, 8080, "DENY", None),
    ("conditions", "web", "GET", "/", {"x-tenant": "acme-1", "x-debug": "1"}, H, 8080, "DENY",
     "prod/deny-debug"),
    ("conditions", None, "GET", "/", {"x-tenant": "acme-2"}, H, 8080, "ALLOW", "prod/allow-tenant"),
    ("conditions", "admin", "GET", "/", {}, H, 8080, "ALLOW", "prod/allow-ops"),
    ("conditions", "admin", "GET", "/", {"x-debug": "yes"}, H, 8080, "DENY", "prod/deny-debug"),
    ("conditions", "frontend", "GET", "/", {"x-version": "v2"}, H, 8080, "ALLOW",
     "prod/allow-legacy-v2"),
    ("conditions", "frontend", "GET", "/", {"x-version": "v1"}, H, 8080, "DENY", None),
    ("conditions", "web", "GET", "/", {"x-version": "v2"}, H, 8080, "DENY", None),

    ("scope", "frontend", "GET", "/", {}, H, 8080, "ALLOW", "prod/allow-mtls-get"),
    ("scope", "web", "GET", "/any", {}, H, 8080, "ALLOW", "prod/allow-mtls-get"),
    ("scope", "frontend", "TRACE", "/", {}, H, 8080, "DENY", "istio-system/mesh-deny-trace"),
    ("scope", "web", "POST", "/", {}, H, 8080, "DENY", None),
    ("scope", None, "GET", "/", {}, H, 8080, "DENY", None),
    ("scope", None, "TRACE", "/", {}, H, 8080, "DENY", "istio-system/mesh-deny-trace"),

    ("hosts", "admin", "GET", "/", {}, H, 8080, "ALLOW", "prod/allow-sa"),
    ("hosts", "web", "GET", "/", {}, "api.example.com", 8080, "ALLOW", "prod/allow-host"),
    ("hosts", "web", "GET", "/", {}, "API.Example.com:8080", 8080, "ALLOW", "prod/allow-host"),
    ("hosts", "web", "GET", "/", {}, "backend.prod.svc.cluster.local:80", 8080, "ALLOW",
     "prod/allow-host"),
    ("hosts", "web", "GET", "/", {}, "example.com", 8080, "DENY", None),
    ("hosts", "web", "GET", "/", {}, H, 8080, "DENY", None),
    ("hosts", "web", "GET", "/internal/x", {}, "api.example.com", 8080, "DENY",
     "prod/deny-outsiders-internal"),
    ("hosts", "frontend", "GET", "/internal/x", {}, "api.example.com", 8080, "ALLOW",
     "prod/allow-host"),
    ("hosts", "admin", "GET", "/internal/x", {}, H, 8080, "DENY", "prod/deny-outsiders-internal"),
    ("hosts", None, "GET", "/internal/x", {}, "api.example.com", 8080, "DENY",
     "prod/deny-outsiders-internal"),
    ("hosts", None, "GET", "/public", {}, "api.example.com", 8080, "ALLOW", "prod/allow-host"),

    ("tcp-allow", "frontend", None, None, {}, None, 5432, "ALLOW", "prod/allow-db"),
    ("tcp-allow", "legacy", None, None, {}, None, 5432, "ALLOW", "prod/allow-db"),
    ("tcp-allow", "web", None, None, {}, None, 5432, "DENY", None),
    ("tcp-allow", "admin", None, None, {}, None, 5432, "DENY", None),
    ("tcp-allow", None, None, None, {}, None, 5432, "DENY", None),
    ("tcp-allow", "web", "GET", "/", {}, H, 8080, "ALLOW", "prod/allow-web-get"),
    ("tcp-allow", "web", "POST", "/", {}, H, 8080, "DENY", None),

    ("tcp-deny", "web", None, None, {}, None, 5432, "DENY", "prod/deny-web-path"),
    ("tcp-deny", "frontend", None, None, {}, None, 5432, "ALLOW", None),
    ("tcp-deny", None, None, None, {}, None, 5432, "ALLOW", None),
    ("tcp-deny", "web", "GET", "/y", {}, H, 8080, "ALLOW", None),
    ("tcp-deny", "web", "GET", "/x", {}, H, 8080, "DENY", "prod/deny-web-path"),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 80
    assert {c[0] for c in CASES} == set(SETS)
    assert {c[1] for c in CASES} == set(IDS) | {None}


# ------------------------------------------------------------ the servers

class App:
    """The application behind the proxy: HTTP 200 "app" on 8080, a TCP
    echo on 5432."""

    def __init__(self, ip):
        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline(65536)
                if line.startswith(b"ping"):  # the TCP echo
                    self.wfile.write(line)
                    return
                while True:  # HTTP/1.1: read the head, answer, close
                    h = self.rfile.readline(65536)
                    if h in (b"\r\n", b"\n", b""):
                        break
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                                 b"Connection: close\r\n\r\napp")

        class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.servers = [Server((ip, HTTP_PORT), Handler), Server((ip, TCP_PORT), Handler)]
        for s in self.servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def close(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


MESH = """apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: prod}}
spec:
  selector: {{app: backend}}
  ports: [{{name: http, port: 80, targetPort: {http}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: backend-db, namespace: prod}}
spec:
  selector: {{app: backend}}
  ports: [{{name: tcp-db, port: {tcp}, targetPort: {tcp}}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: backend-1
  namespace: prod
  labels: {{app: backend, security.istio.io/tlsMode: istio}}
spec: {{serviceAccountName: backend}}
status: {{podIP: {ip}}}
"""


@pytest.fixture(scope="module")
def pkiset(tmp_path_factory):
    d = tmp_path_factory.mktemp("authz-pki")
    ca = pki.create_ca(d, "ca")
    server = pki.create_leaf(d / "server", ca, "cert", ns=NS, sa="backend")
    shutil.copy(server.key, d / "server" / "key.pem")
    shutil.copy(ca.cert_path, d / "server" / "ca.pem")
    clients = {k: pki.create_leaf(d / "clients", ca, k, ns=ns, sa=sa)
               for k, (ns, sa) in IDS.items()}
    return {"ca": ca.cert_path, "server_dir": str(d / "server"), "clients": clients}


_net = [0]


def client_ctx(pkiset, who):
    ctx = ssl.create_default_context(cafile=pkiset["ca"])
    ctx.check_hostname = False  # the server's SVID names a SPIFFE ID, not a host
    c = pkiset["clients"][who]
    ctx.load_cert_chain(c.cert, c.key)
    return ctx


def http_request(ip, pkiset, who, method, path, headers, host):
    """(status, body) from the proxy, over mTLS as `who` (None: plaintext)."""
    if who is None:
        conn = http.client.HTTPConnection(ip, HTTP_PORT, timeout=10,
                                          source_address=("127.0.0.1", 0))
    else:
        conn = http.client.HTTPSConnection(ip, HTTP_PORT, timeout=10,
                                           context=client_ctx(pkiset, who),
                                           source_address=("127.0.0.1", 0))
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def tcp_exchange(ip, pkiset, who):
    """True when the proxy relays a TCP echo as `who`; False when it closes."""
    raw = socket.create_connection((ip, TCP_PORT), timeout=10, source_address=("127.0.0.1", 0))
    s = raw if who is None else client_ctx(pkiset, who).wrap_socket(raw)
    try:
        s.sendall(b"ping\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(64)
            if not chunk:
                break
            got += chunk
        return got == b"ping\n"
    except (ConnectionError, ssl.SSLError):
        return False
    finally:
        s.close()


def check(meshdir, who, method, path, headers, host, port):
    args = [TRELLIS, "ctl", "authz", "check", meshdir, "--from",
            "none" if who is None else pki.spiffe_id("cluster.local", *IDS[who]),
            "--to", WORKLOAD, "--port", str(port), "-o", "json"]
    if method is not None:
        args += ["--method", method, "--path", path, "--host", host]
        for k, v in headers.items():
            args += ["--header", f"{k}={v}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_log(proxy, since, needle, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = proxy.read_log()[since:]
        if needle in text:
            return text
        time.sleep(0.02)
    return proxy.read_log()[since:]


def start_set(name, workdir, pkiset):
    """The policy set's directory, its compiled server proxy and the app:
    (pod ip, directory, proxy, app)."""
    _net[0] += 1
    ip = f"127.{230 + os.getpid() % 20}.{_net[0]}.1"
    app_ip = f"127.{230 + os.getpid() % 20}.{_net[0]}.2"
    meshdir = os.path.join(workdir, f"mesh-{name}")
    os.makedirs(meshdir)
    with open(os.path.join(meshdir, "mesh.yaml"), "w") as f:
        f.write("\n---\n".join([MESH.format(ip=ip, http=HTTP_PORT, tcp=TCP_PORT), *SETS[name]]))
    r = subprocess.run([TRELLIS, "ctl", "compile", meshdir, "--workload", WORKLOAD, "-o", "json",
                        "--app-ip", app_ip, "--cert-dir", pkiset["server_dir"]],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    model = json.loads(r.stdout)
    app = App(app_ip)
    proxy = Proxy(workdir, model, name=f"server-{name}")
    try:
        proxy.start()
    except Exception:
        app.close()
        raise
    return ip, meshdir, proxy, app


@pytest.mark.parametrize("name", sorted(SETS))
def test_policy_set(name, workdir, pkiset):
    ip, meshdir, proxy, app = start_set(name, workdir, pkiset)
    try:
        cases = [c for c in CASES if c[0] == name]
        assert cases
        for (_, who, method, path, headers, host, port, want, want_policy) in cases:
            what = f"{name}: {who or 'plaintext'} {method or 'TCP'} {path or ''} {headers} {host}"
            got = check(meshdir, who, method, path, headers, host, port)
            assert (got["decision"], got["policy"]) == (want, want_policy), f"{what}: ctl {got}"
            assert (got["rule"] is None) == (want_policy is None), f"{what}: ctl {got}"
            if method is not None:
                assert got["normalized_path"] == path.split("?")[0]
            since = len(proxy.read_log())
            if method is None:
                allowed = tcp_exchange(ip, pkiset, who)
                assert allowed == (want == "ALLOW"), f"{what}: proxy relayed={allowed}"
            else:
                status, body = http_request(ip, pkiset, who, method, path, headers, host)
                if want == "ALLOW":
                    assert (status, body) == (200, "app"), f"{what}: proxy {status} {body!r}"
                else:
                    assert (status, body) == (403, "RBAC: access denied"), \
                        f"{what}: proxy {status} {body!r}"
            if want == "DENY":
                needle = (f"denied by authorization policy {want_policy} rule {got['rule']}"
                          if want_policy else "denied by authorization: no ALLOW policy matched")
                assert needle in wait_log(proxy, since, needle), f"{what}: proxy log"
    finally:
        proxy.stop()
        app.close()


def test_http2_clients_get_the_same_answers(workdir, pkiset):
    """The same decisions over HTTP/2 (ALPN h2, curl): the seed set."""
    ip, _, proxy, app = start_set("seed", workdir, pkiset)
    try:
        for who, method, path, want in (("frontend", "GET", "/api/items", 200),
                                        ("frontend", "DELETE", "/api/items", 403),
                                        ("admin", "GET", "/healthz", 200),
                                        ("web", "GET", "/api/items", 403)):
            c = pkiset["clients"][who]
            r = subprocess.run(
                ["curl", "-sk", "--http2", "--cert", c.cert, "--key", c.key, "-X", method,
                 "-o", "-", "-w", "\n%{http_version} %{http_code}",
                 f"https://{ip}:{HTTP_PORT}{path}"],
                capture_output=True, text=True, timeout=30)
            body, _, tail = r.stdout.rpartition("\n")
            assert tail == f"2 {want}", (who, method, path, r.stdout, r.stderr)
            assert body == ("app" if want == 200 else "RBAC: access denied"), (who, path, body)
    finally:
        proxy.stop()
        app.close()
