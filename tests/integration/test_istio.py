"""Istio traffic management end to end: Kubernetes and Istio YAML in a
directory, `trellis ctl compile` for the client workload, the real proxy
running what it printed, real HTTP servers as the pods (one per version,
each on its own 127.x address and answering with its name), real clients.
`trellis ctl route explain` is asked the same questions and must agree."""
import http.server
import json
import os
import socket
import socketserver
import subprocess
import threading
import time

import pytest
import requests

from conftest import TRELLIS, Proxy, free_port

CORPUS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                       "..", "shared", "corpus"))

CLIENT_POD = """
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {serviceAccountName: client}
"""


class NamedBackend:
    """A pod: an HTTP/1.1 server on ip:port answering 200 with its name and
    the request it saw (method, path, host, headers) as JSON."""

    def __init__(self, name, ip, port, status=200, delay=0.0):
        self.name, self.ip, self.port = name, ip, port
        self.status, self.delay = status, delay
        self.hits = 0
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                me.hits += 1
                if me.delay:
                    time.sleep(me.delay)
                out = json.dumps({"name": me.name, "method": self.command, "path": self.path,
                                  "host": self.headers.get("Host"),
                                  "headers": {k.lower(): v for k, v in self.headers.items()}
                                  }).encode()
                self.send_response(me.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = _handle

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((ip, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def pod(name, ip, labels, ns="default", sa=None):
    lab = ", ".join(f"{k}: {v}" for k, v in labels.items())
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, "
            f"labels: {{{lab}}}}}\nspec: {{serviceAccountName: {sa or name}}}\n"
            f"status: {{podIP: {ip}}}\n")


def service(name, port, selector, ns="default", port_name="http", target=None):
    sel = ", ".join(f"{k}: {v}" for k, v in selector.items())
    tp = f", targetPort: {target}" if target else ""
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  selector: {{{sel}}}\n  ports: [{{name: {port_name}, port: {port}{tp}}}]\n")


class Mesh:
    """A directory of resources, its pods as NamedBackends, and the client's
    proxy compiled from it."""

    def __init__(self, workdir, outbound_ip):
        self.workdir = workdir
        self.dir = os.path.join(workdir, "mesh")
        os.makedirs(self.dir, exist_ok=True)
        self.outbound_ip = outbound_ip
        self.backends = []
        self.proxy = None
        self.docs = [CLIENT_POD]

    def add(self, *docs):
        self.docs.extend(docs)

    def pod(self, name, ip, port, labels, **kw):
        self.backends.append(NamedBackend(name, ip, port, **kw))
        self.docs.append(pod(name, ip, labels))
        return self.backends[-1]

    def write(self):
        with open(os.path.join(self.dir, "mesh.yaml"), "w") as f:
            f.write("\n---\n".join(d.strip("\n") for d in self.docs) + "\n")

    def ctl(self, *args, check=True):
        r = subprocess.run([TRELLIS, "ctl", *args], capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise AssertionError(f"trellis ctl {' '.join(args)} -> {r.returncode}\n{r.stderr}")
        return r

    def compile(self, workload="default/client", *extra):
        self.write()
        r = self.ctl("compile", self.dir, "--workload", workload, "-o", "json",
                     "--outbound-ip", self.outbound_ip, *extra)
        return json.loads(r.stdout), r.stderr

    def start(self, *extra):
        model, _ = self.compile("default/client", *extra)
        self.proxy = Proxy(self.workdir, model, name="client-proxy")
        self.proxy.start()
        return self.proxy

    def explain(self, url, *headers, method="GET"):
        args = ["route", "explain", self.dir, "--from", "default/client", "--url", url,
                "-X", method, "-o", "json", "--outbound-ip", self.outbound_ip]
        for h in headers:
            args += ["-H", h]
        return json.loads(self.ctl(*args).stdout)

    def get(self, host, path="/", port=9080, headers=None, **kw):
        h = {"Host": host}
        h.update(headers or {})
        return requests.get(f"http://{self.outbound_ip}:{port}{path}", headers=h, timeout=10,
                            **kw)

    def close(self):
        if self.proxy:
            self.proxy.stop()
        for b in self.backends:
            b.close()


def curl_many(mesh, host, n, path="/", port=9080):
    """n keep-alive GETs from one curl process; the status of each."""
    cfg = os.path.join(mesh.workdir, "curl.cfg")
    with open(cfg, "w") as f:
        for _ in range(n):
            f.write(f'url = "http://{mesh.outbound_ip}:{port}{path}"\noutput = "/dev/null"\n')
    r = subprocess.run(["curl", "-s", "-K", cfg, "-H", f"Host: {host}", "-w", "%{http_code}\n"],
                       capture_output=True, text=True, timeout=120)
    return [int(x) for x in r.stdout.split()]


_net = [0]


@pytest.fixture
def mesh(workdir):
    # Each test gets its own /24 of loopback addresses: pods at .1-.99, the
    # client's outbound listeners at .200.
    _net[0] += 1
    base = f"127.{20 + os.getpid() % 200}.{_net[0] % 250}"
    m = Mesh(workdir, f"{base}.200")
    m.base = base
    yield m
    m.close()


# Istio's samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml
JASON_V2_ELSE_V1 = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"""


def bookinfo_reviews(m, port=9080):
    """reviews v1, v2, v3 as three pods, with the DestinationRule naming
    the subsets (Istio's samples/bookinfo/networking/destination-rule-all)."""
    b = m.base
    v1 = m.pod("reviews-v1", f"{b}.1", port, {"app": "reviews", "version": "v1"})
    v2 = m.pod("reviews-v2", f"{b}.2", port, {"app": "reviews", "version": "v2"})
    v3 = m.pod("reviews-v3", f"{b}.3", port, {"app": "reviews", "version": "v3"})
    m.add(service("reviews", port, {"app": "reviews"}),
          """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
""")
    return v1, v2, v3


def test_split_90_10_and_explain(mesh):
    v1, v2, v3 = bookinfo_reviews(mesh)
    mesh.add("""apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v3}
      weight: 10
""")
    mesh.start()
    n = 2000
    assert curl_many(mesh, "reviews", n) == [200] * n
    assert v2.hits == 0 and v1.hits + v3.hits == n
    # 10% of 2000 = 200, binomial sd 13.4: allow 5 sd either way.
    assert 133 <= v3.hits <= 267, (v1.hits, v3.hits)
    e = mesh.explain("http://reviews:9080/")
    assert e["virtual_service"] == "default/reviews"
    assert e["rule_index"] == 0
    assert [(d["subset"], d["weight"]) for d in e["destinations"]] == [("v1", 90), ("v3", 10)]
    assert {x["address"] for x in e["endpoints"]} == {f"{mesh.base}.1:9080", f"{mesh.base}.3:9080"}


def test_header_routing_matches_explain(mesh):
    bookinfo_reviews(mesh)
    # Istio's samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml
    mesh.add(JASON_V2_ELSE_V1)
    mesh.start()
    cases = [({"end-user": "jason"}, "reviews-v2", "v2", 0),
             ({"end-user": "mallory"}, "reviews-v1", "v1", 1),
             ({}, "reviews-v1", "v1", 1)]
    for headers, pod_name, subset, rule in cases:
        for _ in range(20):
            r = mesh.get("reviews", headers=headers)
            assert r.status_code == 200 and r.json()["name"] == pod_name, (headers, r.text)
        e = mesh.explain("http://reviews:9080/", *[f"{k}: {v}" for k, v in headers.items()])
        assert e["rule_index"] == rule and e["destinations"][0]["subset"] == subset, e


def test_match_falls_through_to_default_route(mesh):
    bookinfo_reviews(mesh)
    mesh.add("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - match:
    - uri: {prefix: /v3}
    route:
    - destination: {host: reviews, subset: v3}
""")
    mesh.start()
    assert mesh.get("reviews", "/v3/x").json()["name"] == "reviews-v3"
    seen = {mesh.get("reviews", "/other").json()["name"] for _ in range(30)}
    assert seen == {"reviews-v1", "reviews-v2", "reviews-v3"}  # the service's default route
    e = mesh.explain("http://reviews:9080/other")
    assert e["virtual_service"] is None and e["route"] == "default"


def test_rewrite_timeout_direct_response(mesh):
    b = mesh.base
    slow = mesh.pod("slow-1", f"{b}.5", 8080, {"app": "slow"}, delay=1.5)
    mesh.pod("echo-1", f"{b}.6", 8080, {"app": "echo"})
    mesh.add(service("slow", 9080, {"app": "slow"}, target=8080),
             service("echo", 9080, {"app": "echo"}, target=8080),
             """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - name: legacy
    match:
    - uri: {prefix: /old/}
    rewrite: {uri: /new/, authority: echo.internal}
    route:
    - destination: {host: echo}
  - name: gone
    match:
    - uri: {exact: /gone}
    directResponse: {status: 410, body: {string: "moved away"}}
  - name: teapot
    match:
    - uri: {exact: /teapot}
    directResponse: {status: 418, body: {bytes: "c2hvcnQgYW5kIHN0b3V0Cg=="}}
  - name: versioned
    match:
    - uri: {prefix: /v1/}
    rewrite:
      uriRegexRewrite: {match: '^/v1/([a-z]+)/([0-9]+)', rewrite: '/\\2/\\1'}
    route:
    - destination: {host: echo}
  - route:
    - destination: {host: echo}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow, namespace: default}
spec:
  hosts: [slow]
  http:
  - route:
    - destination: {host: slow}
    timeout: 0.3s
""")
    mesh.start()
    r = mesh.get("echo", "/old/page?q=1")
    assert r.status_code == 200
    assert r.json()["path"] == "/new/page?q=1" and r.json()["host"] == "echo.internal"
    r = mesh.get("echo", "/gone")
    assert r.status_code == 410 and r.text == "moved away"
    r = mesh.get("echo", "/teapot")  # body.bytes: base64, decoded at compile time
    assert r.status_code == 418 and r.text == "short and stout\n"
    t0 = time.monotonic()
    r = mesh.get("slow", "/")
    assert r.status_code == 504
    assert time.monotonic() - t0 < 1.2
    e = mesh.explain("http://echo:9080/old/x")
    assert e["rule"] == "legacy" and e["rewrite"] == {"uri": "/new/", "authority": "echo.internal",
                                                       "uri_regex": None}
    # uriRegexRewrite: every match in the path, capture groups, the query kept
    r = mesh.get("echo", "/v1/users/42/x?id=/v1/a/1")
    assert r.status_code == 200 and r.json()["path"] == "/42/users/x?id=/v1/a/1"
    e = mesh.explain("http://echo:9080/v1/users/42")
    assert e["rule"] == "versioned" and e["rewrite"] == {
        "uri": None, "authority": None,
        "uri_regex": {"match": "^/v1/([a-z]+)/([0-9]+)", "rewrite": "/\\2/\\1"}}
    # The path the proxy routes is the listener's normalised one, for both.
    r = mesh.get("echo", "/x/../old//page")
    assert r.status_code == 200 and r.json()["path"] == "/new/page"
    assert mesh.explain("http://echo:9080/x/../old//x")["rule"] == "legacy"
    assert mesh.get("echo", "/old%2Fpage").status_code == 400
    e = mesh.explain("http://echo:9080/old%2Fx")
    assert e["route"] is None and "400 DPE" in e["why"]
    e = mesh.explain("http://echo:9080/gone")
    assert e["direct_response"] == {"status": 410, "body": "moved away"}
    assert mesh.explain("http://slow:9080/")["timeout_ms"] == 300
    assert slow.hits >= 1


def test_registry_only_and_undefined_subset(mesh):
    bookinfo_reviews(mesh)
    mesh.add("""apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /v9}
    route:
    - destination: {host: reviews, subset: v9}
  - route:
    - destination: {host: reviews, subset: v1}
""")
    model, warnings = mesh.compile()
    assert "no DestinationRule defines subset \"v9\"" in warnings
    assert "spec.http[0].route[0].destination.subset" in warnings
    mesh.start()
    assert mesh.get("unknown.example.com").status_code == 502
    assert mesh.get("reviews", "/v9").status_code == 503
    assert mesh.get("reviews", "/").json()["name"] == "reviews-v1"
    r = mesh.ctl("analyze", mesh.dir, check=False)
    assert r.returncode == 1 and "subset \"v9\"" in r.stderr


def test_dead_endpoint_fails_no_request(mesh):
    """Istio's default retry policy re-sends connect failures: a pod that
    refuses connections among healthy ones costs no request."""
    b = mesh.base
    mesh.pod("api-1", f"{b}.7", 8080, {"app": "api"})
    mesh.pod("api-2", f"{b}.8", 8080, {"app": "api"})
    mesh.add(pod("api-dead", f"{b}.9", {"app": "api"}),  # nothing listens there
             service("api", 9080, {"app": "api"}, target=8080))
    mesh.start()
    with requests.Session() as s:
        codes = [s.get(f"http://{mesh.outbound_ip}:9080/", headers={"Host": "api"},
                       timeout=10).status_code for _ in range(60)]
    assert codes == [200] * 60


def test_ingress_gateway(mesh):
    """Istio's bookinfo gateway: the gateway pod's model serves the hosts of
    the VirtualServices bound to the Gateway that selects it."""
    b = mesh.base
    mesh.pod("productpage-v1", f"{b}.10", 9080, {"app": "productpage", "version": "v1"})
    mesh.add(service("productpage", 9080, {"app": "productpage"}),
             pod("ingress-1", f"{b}.250", {"istio": "ingressgateway"}, ns="istio-system"))
    with open(os.path.join(CORPUS, "istio/bookinfo/networking/bookinfo-gateway.yaml")) as f:
        mesh.add(f.read())
    mesh.write()
    r = mesh.ctl("compile", mesh.dir, "--workload", "istio-system/ingress-1", "-o", "json")
    model = json.loads(r.stdout)
    assert [l["name"] for l in model["listeners"]] == ["gateway|8080"]
    mesh.proxy = Proxy(mesh.workdir, model, name="ingress")
    mesh.proxy.start()
    url = f"http://{b}.250:8080"
    r = requests.get(url + "/productpage?u=1", headers={"Host": "bookinfo.example"}, timeout=10)
    assert r.status_code == 200 and r.json()["name"] == "productpage-v1"
    assert r.json()["path"] == "/productpage?u=1"
    # no default route at a gateway: what no rule matches is 404
    assert requests.get(url + "/admin", timeout=10).status_code == 404
    e = json.loads(mesh.ctl("route", "explain", mesh.dir, "--from", "istio-system/ingress-1",
                            "--url", f"http://{b}.250:8080/productpage", "-o", "json").stdout)
    assert e["virtual_service"] == "default/bookinfo" and e["rule_index"] == 0


def test_ingress_gateway_authorization(mesh):
    """AuthorizationPolicies that select the gateway apply on its listeners,
    as Istio applies them at gateways: a DENY on /productpage/admin and an
    ALLOW from loopback addresses to GET; a POST is denied by default."""
    b = mesh.base
    mesh.pod("productpage-v1", f"{b}.10", 9080, {"app": "productpage", "version": "v1"})
    mesh.add(service("productpage", 9080, {"app": "productpage"}),
             pod("ingress-1", f"{b}.250", {"istio": "ingressgateway"}, ns="istio-system"))
    with open(os.path.join(CORPUS, "istio/bookinfo/networking/bookinfo-gateway.yaml")) as f:
        mesh.add(f.read())
    mesh.add("""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/productpage/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules: [{from: [{source: {ipBlocks: ["127.0.0.0/8"]}}], to: [{operation: {methods: [GET]}}]}]
""")
    mesh.write()
    r = mesh.ctl("compile", mesh.dir, "--workload", "istio-system/ingress-1", "-o", "json")
    model = json.loads(r.stdout)
    gw = model["listeners"][0]
    assert gw["name"] == "gateway|8080"
    assert [p["name"] for p in gw["authorization"]["policies"]] == \
        ["istio-system/deny-admin", "istio-system/allow-get"]
    mesh.proxy = Proxy(mesh.workdir, model, name="ingress")
    mesh.proxy.start()
    url = f"http://{b}.250:8080"
    host = {"Host": "bookinfo.example"}
    r = requests.get(url + "/productpage", headers=host, timeout=10)
    assert r.status_code == 200 and r.json()["name"] == "productpage-v1"
    r = requests.get(url + "/productpage/admin/users", headers=host, timeout=10)
    assert r.status_code == 403 and r.text == "RBAC: access denied"
    # the path is normalised before the decision: no way around the DENY
    r = requests.get(url + "/productpage/x/../admin", headers=host, timeout=10)
    assert r.status_code == 403
    assert requests.post(url + "/productpage", headers=host, timeout=10).status_code == 403
    r = mesh.ctl("authz", "check", mesh.dir, "--from", "none", "--to",
                 "istio-system/ingress-1", "--method", "GET", "--path", "/productpage/admin",
                 "--port", "8080", "--source-ip", "127.0.0.1", "-o", "json", check=False)
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["decision"] == "DENY" and e["policy"] == "istio-system/deny-admin"


def test_canary_ab_cookie_query_authority_and_header_edits(mesh):
    """A canary for internal testers (header), an A/B test by cookie regex
    (progressive-delivery--09), a query parameter and an authority match, and
    header edits on the route and on one destination."""
    bookinfo_reviews(mesh)
    mesh.add("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: internal-testers
    match:
    - headers:
        x-internal-tester: {exact: "true"}
    route:
    - destination: {host: reviews, subset: v3}
  - name: ab-cookie
    match:
    - headers:
        cookie: {regex: "^(.*?;)?(group=b)(;.*)?$"}
    route:
    - destination: {host: reviews, subset: v2}
      headers:
        response: {set: {x-variant: b}}
  - name: debug-query
    match:
    - queryParams:
        debug: {exact: "1"}
      authority: {prefix: reviews}
    route:
    - destination: {host: reviews, subset: v3}
  - name: default
    headers:
      request:
        set: {x-mesh: trellis}
        add: {x-trace-tag: one}
        remove: [x-secret]
      response:
        add: {x-served-by: mesh}
    route:
    - destination: {host: reviews, subset: v1}
""")
    mesh.start()

    def who(path="/", **headers):
        r = mesh.get("reviews", path, headers=headers)
        assert r.status_code == 200, r.text
        return r

    assert who(**{"x-internal-tester": "true"}).json()["name"] == "reviews-v3"
    r = who(Cookie="group=b; session=1")
    assert r.json()["name"] == "reviews-v2" and r.headers["x-variant"] == "b"
    assert who(Cookie="group=a").json()["name"] == "reviews-v1"
    assert who("/?debug=1").json()["name"] == "reviews-v3"
    assert who("/?debug=2").json()["name"] == "reviews-v1"
    r = who(**{"x-secret": "s3cr3t"})
    seen = r.json()["headers"]
    assert seen["x-mesh"] == "trellis" and seen["x-trace-tag"] == "one" and "x-secret" not in seen
    assert r.headers["x-served-by"] == "mesh" and "x-variant" not in r.headers
    e = mesh.explain("http://reviews:9080/", "Cookie: group=b")
    assert e["rule"] == "ab-cookie" and e["destinations"][0]["subset"] == "v2"
    e = mesh.explain("http://reviews:9080/?debug=1")
    assert e["rule"] == "debug-query"


class TcpNamed:
    """A TCP pod: answers every connection with its name, then closes."""

    def __init__(self, name, ip, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(16)
        self.name = name.encode()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.sendall(self.name)

    def close(self):
        # Wake the accept() before closing: a closed descriptor's number is
        # reused by the next socket, which the old thread would then serve.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()


def tcp_greeting(ip, port):
    """What a TcpNamed pod says on a new connection (read until it closes)."""
    got = b""
    with socket.create_connection((ip, port), timeout=5) as s:
        while True:
            chunk = s.recv(100)
            if not chunk:
                return got
            got += chunk


def test_tcp_route_to_subset(mesh):
    """VirtualService tcp rules (Istio's tcp-echo sample shape): connections to
    the service port go to the subset the rule names."""
    b = mesh.base
    pods = [TcpNamed("db-v1", f"{b}.21", 3306), TcpNamed("db-v2", f"{b}.22", 3306)]
    try:
        mesh.add(pod("db-v1", f"{b}.21", {"app": "db", "version": "v1"}),
                 pod("db-v2", f"{b}.22", {"app": "db", "version": "v2"}),
                 service("db", 3306, {"app": "db"}, port_name="tcp-mysql"),
                 """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: default}
spec:
  host: db
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db]
  tcp:
  - match:
    - port: 3306
    route:
    - destination: {host: db, subset: v2, port: {number: 3306}}
""")
        mesh.start()
        for _ in range(10):
            assert tcp_greeting(mesh.outbound_ip, 3306) == b"db-v2"
    finally:
        for p in pods:
            p.close()


def test_http2_clients_route_like_http1(mesh):
    """The same header routing and split for HTTP/2 clients (h2c prior
    knowledge, :authority) and for gRPC (a grpc- port: HTTP/2 upstream)."""
    import grpc
    from grpcutil import EchoServer, SERVICE, CHANNEL_OPTIONS
    bookinfo_reviews(mesh)
    gport = free_port()
    echo = EchoServer(gport)
    try:
        mesh.add(pod("echo-1", "127.0.0.1", {"app": "echo"}),
                 service("echo", 50051, {"app": "echo"}, port_name="grpc", target=gport),
                 JASON_V2_ELSE_V1)
        mesh.start()
        for headers, want in (([], "reviews-v1"), (["-H", "end-user: jason"], "reviews-v2")):
            r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-H", "Host: reviews",
                                *headers, f"http://{mesh.outbound_ip}:9080/"],
                               capture_output=True, text=True, timeout=10)
            assert json.loads(r.stdout)["name"] == want
        ch = grpc.insecure_channel(f"{mesh.outbound_ip}:50051",
                                   options=list(CHANNEL_OPTIONS) +
                                   [("grpc.default_authority", "echo")])
        try:
            unary = ch.unary_unary(f"/{SERVICE}/Unary")
            assert unary(b"ping", timeout=5) == b"ping"
        finally:
            ch.close()
        assert echo.calls.get("Unary") == 1
    finally:
        echo.close()


def test_least_request_favours_the_fast_endpoint(mesh):
    """Istio's default balancer (LEAST_REQUEST): with concurrent requests, an
    endpoint that answers in 200 ms gets far fewer of them than one that
    answers at once."""
    b = mesh.base
    fast = mesh.pod("api-fast", f"{b}.31", 8080, {"app": "api"})
    slow = mesh.pod("api-slow", f"{b}.32", 8080, {"app": "api"}, delay=0.2)
    mesh.add(service("api", 9080, {"app": "api"}, target=8080))
    mesh.start()
    def worker():
        with requests.Session() as s:
            for _ in range(50):
                s.get(f"http://{mesh.outbound_ip}:9080/", headers={"Host": "api"}, timeout=10)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert fast.hits + slow.hits == 400
    # Round robin would give each 200 (binomial sd 10 for a random pick);
    # two random choices keep the slow one, which holds requests in flight
    # 200 ms longer, near a third. 160 is 4 sd below an even split.
    assert slow.hits < 160, (fast.hits, slow.hits)


def test_fault_redirect_cors(mesh):
    """Fault injection at stated percentages (Istio's ratings fault samples),
    a redirect, and a CORS preflight answered by the proxy."""
    bookinfo_reviews(mesh)
    mesh.add("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: moved
    match:
    - uri: {prefix: /old}
    redirect: {uri: /new, authority: reviews.example, redirectCode: 308}
  - name: abort-half
    match:
    - uri: {prefix: /flaky}
    fault:
      abort:
        httpStatus: 503
        percentage: {value: 50}
    route:
    - destination: {host: reviews, subset: v1}
  - name: slow
    match:
    - headers:
        end-user: {exact: jason}
    fault:
      delay:
        fixedDelay: 0.3s
        percentage: {value: 100.0}
    route:
    - destination: {host: reviews, subset: v1}
  - name: api
    corsPolicy:
      allowOrigins:
      - exact: https://app.example
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      maxAge: 24h
    route:
    - destination: {host: reviews, subset: v1}
""")
    mesh.start()
    r = mesh.get("reviews", "/old/x?y=1", allow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "http://reviews.example/new?y=1"
    codes = curl_many(mesh, "reviews", 2000, path="/flaky")
    aborted = codes.count(503)
    assert codes.count(200) + aborted == 2000
    # 50% of 2000, binomial sd 22.4: 5 sd either way
    assert 888 <= aborted <= 1112, aborted
    t0 = time.monotonic()
    assert mesh.get("reviews", headers={"end-user": "jason"}).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    v1 = [b for b in mesh.backends if b.name == "reviews-v1"][0]
    before = v1.hits
    r = requests.options(f"http://{mesh.outbound_ip}:9080/",
                         headers={"Host": "reviews", "Origin": "https://app.example",
                                  "Access-Control-Request-Method": "POST"}, timeout=10)
    assert r.status_code == 200 and v1.hits == before  # answered by the proxy
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-max-age"] == "86400"
    r = mesh.get("reviews", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    e = mesh.explain("http://reviews:9080/flaky")
    assert e["rule"] == "abort-half"
    assert e["fault"] == {"delay": None, "abort": {"http_status": 503, "percent": 50.0}}
    e = mesh.explain("http://reviews:9080/old/x")
    assert e["redirect"]["code"] == 308 and e["redirect"]["uri"] == "/new"


def test_outlier_detection_ejects_and_brings_back(mesh):
    """A pod that starts answering 503 is ejected after consecutive5xxErrors
    and gets traffic again after baseEjectionTime."""
    b = mesh.base
    pods = [mesh.pod(f"api-{i}", f"{b}.{40 + i}", 8080, {"app": "api"}) for i in range(3)]
    mesh.add(service("api", 9080, {"app": "api"}, target=8080), """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 2s
      maxEjectionPercent: 100
""")
    mesh.start()
    bad = pods[0]
    bad.status = 503
    codes = curl_many(mesh, "api", 60)
    assert codes.count(503) == 3, codes  # ejected at exactly the threshold
    assert codes[-30:] == [200] * 30
    hits = bad.hits
    bad.status = 200
    time.sleep(2.5)
    assert curl_many(mesh, "api", 30) == [200] * 30
    assert bad.hits > hits  # back after baseEjectionTime
    e = mesh.explain("http://api:9080/")
    assert e["outlier_detection"]["consecutive_5xx"] == 3


def test_consistent_hash_keeps_a_user_on_one_pod(mesh):
    b = mesh.base
    pods = [mesh.pod(f"cart-{i}", f"{b}.{50 + i}", 8080, {"app": "cart"}) for i in range(3)]
    mesh.add(service("cart", 9080, {"app": "cart"}, target=8080), """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: default}
spec:
  host: cart
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
""")
    mesh.start()
    seen = {}
    with requests.Session() as s:
        for u in range(20):
            names = {s.get(f"http://{mesh.outbound_ip}:9080/",
                           headers={"Host": "cart", "x-user": f"user-{u}"},
                           timeout=10).json()["name"] for _ in range(10)}
            assert len(names) == 1, (u, names)
            seen[u] = names.pop()
    assert len(set(seen.values())) >= 2  # users spread over the pods
    assert mesh.explain("http://cart:9080/")["load_balancer"] == "RING_HASH"


def test_connection_pool_overflow_answers_503(mesh):
    b = mesh.base
    mesh.pod("slow-1", f"{b}.60", 8080, {"app": "slow"}, delay=0.6)
    mesh.add(service("slow", 9080, {"app": "slow"}, target=8080), """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: slow, namespace: default}
spec:
  host: slow
  trafficPolicy:
    connectionPool:
      http: {http2MaxRequests: 1}
""")
    mesh.start()
    out = []

    def one():
        out.append(requests.get(f"http://{mesh.outbound_ip}:9080/", headers={"Host": "slow"},
                                timeout=10).status_code)
    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(10)
    assert sorted(out) == [200, 503, 503], out
    assert mesh.proxy.metric("trellis_upstream_overflow_total") >= 2


def test_service_entry_dns_resolution(mesh):
    """A MESH_EXTERNAL ServiceEntry with resolution DNS: the proxy resolves the
    host itself (a DNS server of the test's own on loopback) and sends the
    requests to the addresses it answers."""
    from dnsutil import DnsServer
    b = mesh.base
    ext = mesh.pod("ext-1", f"{b}.70", 8080, {"app": "not-selected"})
    dns = DnsServer()
    try:
        dns.set("api.partner.test", a=[f"{b}.70"])
        mesh.add("""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: default}
spec:
  hosts: [api.partner.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports:
  - {number: 8080, name: http, protocol: HTTP}
""")
        model, warnings = mesh.compile("default/client", "--dns-server", dns.address)
        assert "resolution" not in warnings
        mesh.proxy = Proxy(mesh.workdir, model, name="client-proxy")
        mesh.proxy.start()
        r = mesh.get("api.partner.test", port=8080)
        assert r.status_code == 200 and r.json()["name"] == "ext-1"
        assert dns.count("api.partner.test") >= 1
        assert ext.hits == 1
    finally:
        dns.close()


def test_tcp_traffic_shifting_80_20(mesh):
    """Istio's TCP traffic shifting task (tcp-echo 80/20): each connection
    picks v1 or v2 by weight."""
    b = mesh.base
    pods = [TcpNamed("echo-v1", f"{b}.81", 9000), TcpNamed("echo-v2", f"{b}.82", 9000)]
    try:
        mesh.add(pod("echo-v1", f"{b}.81", {"app": "tcp-echo", "version": "v1"}),
                 pod("echo-v2", f"{b}.82", {"app": "tcp-echo", "version": "v2"}),
                 service("tcp-echo", 9000, {"app": "tcp-echo"}, port_name="tcp"))
        # the shape of istio/tcp-echo/tcp-echo-20-v2.yaml, for the mesh
        mesh.add("""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo, namespace: default}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo]
  tcp:
  - match:
    - port: 9000
    route:
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
      weight: 80
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v2}
      weight: 20
""")
        model, warnings = mesh.compile()
        assert [c["weight"] for c in model["listeners"][0]["tcp_clusters"]] == [80, 20]
        mesh.proxy = Proxy(mesh.workdir, model, name="client-proxy")
        mesh.proxy.start()
        counts = {}
        n = 1000
        for _ in range(n):
            got = tcp_greeting(mesh.outbound_ip, 9000)
            counts[got] = counts.get(got, 0) + 1
        # 20% of 1000 = 200, binomial sd 12.6: 5 sd either way
        assert 137 <= counts.get(b"echo-v2", 0) <= 263, counts
        assert counts.get(b"echo-v1", 0) + counts.get(b"echo-v2", 0) == n
    finally:
        for p in pods:
            p.close()


class FlakyBackend(NamedBackend):
    """Answers 503 to the first `fail` requests, then 200."""

    def __init__(self, name, ip, port, fail):
        super().__init__(name, ip, port)
        self.fail = fail
        self.methods = []
        inner = self.server.RequestHandlerClass

        me = self

        class Handler(inner):
            def _handle(self):
                me.methods.append(self.command)
                if me.fail > 0:
                    me.fail -= 1
                    n = int(self.headers.get("Content-Length") or 0)
                    if n:
                        self.rfile.read(n)
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super()._handle()

            do_GET = do_POST = _handle

        self.server.RequestHandlerClass = Handler


def test_retries_and_mirror(mesh):
    """A retry policy recovers from a first 503; a POST that reached the
    failing backend is not sent twice; a mirror gets a copy the client never
    waits for."""
    b = mesh.base
    flaky = FlakyBackend("api-1", f"{b}.90", 8080, fail=0)
    mesh.backends.append(flaky)
    mesh.docs.append(pod("api-1", f"{b}.90", {"app": "api"}))
    shadow = mesh.pod("shadow-1", f"{b}.91", 8080, {"app": "shadow"}, delay=1.0)
    mesh.add(service("api", 9080, {"app": "api"}, target=8080),
             service("shadow", 9080, {"app": "shadow"}, target=8080),
             """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api]
  http:
  - route:
    - destination: {host: api}
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx
    mirror: {host: shadow}
    mirrorPercentage: {value: 100.0}
""")
    mesh.start()
    flaky.fail = 1
    t0 = time.monotonic()
    r = mesh.get("api")
    assert r.status_code == 200 and flaky.methods == ["GET", "GET"]
    assert time.monotonic() - t0 < 0.9  # the 1 s shadow is not waited for
    flaky.methods.clear()
    flaky.fail = 1
    r = requests.post(f"http://{mesh.outbound_ip}:9080/", headers={"Host": "api"}, data=b"x",
                      timeout=10)
    assert r.status_code == 503 and flaky.methods == ["POST"]  # reached the backend: not re-sent
    deadline = time.monotonic() + 5
    while shadow.hits < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shadow.hits >= 2
    e = mesh.explain("http://api:9080/")
    assert e["virtual_service"] == "default/api"
    assert e["retries"]["attempts"] == 3 and e["retries"]["retry_on"] == ["5xx"]
    assert e["retries"]["per_try_timeout_ms"] == 2000
    assert [m["cluster"] for m in e["mirrors"]] == ["outbound|9080||shadow.default.svc.cluster.local"]


@pytest.mark.parametrize("remote", [True, False])
def test_retry_remote_localities(mesh, remote):
    """retryRemoteLocalities with Istio's locality failover (a
    DestinationRule with outlierDetection): the client's zone r1/z1 has two
    pods that answer 503, region r2 one that answers 200. Three tries in all
    (attempts: 2): the first two go to the zone (the retry avoids the failed
    pod, not its zone); the third, with retryRemoteLocalities, leaves out the
    levels tried (Envoy's previous_priorities, update frequency 2) and
    reaches r2; without it, it stays in the zone and the answer is 503."""
    b = mesh.base
    mesh.docs[0] = pod("client", f"{b}.100", {"app": "client", "istio-locality": "r1.z1"})
    z1 = [mesh.pod(f"api-z1-{i}", f"{b}.{i + 1}", 8080,
                   {"app": "api", "istio-locality": "r1.z1"}, status=503) for i in range(2)]
    far = mesh.pod("api-r2", f"{b}.3", 8080, {"app": "api", "istio-locality": "r2.z1"})
    mesh.add(service("api", 9080, {"app": "api"}, target=8080), f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: api
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 1000, interval: 30s, baseEjectionTime: 30s}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api]
  http:
  - route:
    - destination: {{host: api}}
    retries:
      attempts: 2
      retryOn: 5xx
      retryRemoteLocalities: {"true" if remote else "false"}
""")
    model, warnings = mesh.compile()
    assert "retryRemoteLocalities" not in warnings
    mesh.start()
    n = 20
    got = [mesh.get("api") for _ in range(n)]
    # HTTP/2 clients alike (h2c prior knowledge).
    for _ in range(5):
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "--http2-prior-knowledge", "-H", "Host: api",
                            f"http://{mesh.outbound_ip}:9080/"],
                           capture_output=True, text=True, timeout=10)
        got.append(int(r.stdout))
    codes = [g if isinstance(g, int) else g.status_code for g in got]
    if remote:
        assert codes == [200] * (n + 5)
        assert [g.json()["name"] for g in got[:n]] == ["api-r2"] * n
        assert far.hits == n + 5
        assert z1[0].hits + z1[1].hits == 2 * (n + 5)
    else:
        assert codes == [503] * (n + 5)
        assert far.hits == 0
        assert z1[0].hits + z1[1].hits == 3 * (n + 5)
    # Both zone pods get tries: the retry avoids the failed pod.
    assert z1[0].hits > 0 and z1[1].hits > 0
    e = mesh.explain("http://api:9080/")
    assert e["retries"]["attempts"] == 2
    assert e["retries"]["exclude_tried_priorities"] == (2 if remote else 0)


def test_sidecar_ingress_listeners_and_inbound_pool(mesh):
    """A Sidecar's ingress listeners replace the ports the services give the
    workload's inbound side: port 9080 (HTTP) to the application's
    127.0.0.1:APP, port 9091 (TCP) to 0.0.0.0:APP (the application's
    address without capture), and the service's own target port 8080 is not
    served. The port's connectionPool replaces inboundConnectionPool: one
    request in flight on 9080 (http2MaxRequests: 1) overflows with 503 UO."""
    b = mesh.base
    app_ip = f"{b}.2"
    app = NamedBackend("api-app", app_ip, free_port(), delay=0.6)
    mesh.backends.append(app)
    mesh.add(pod("api-1", f"{b}.1", {"app": "api"}),
             service("api", 80, {"app": "api"}, target=8080), f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: api, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: api}}}}
  inboundConnectionPool:
    tcp: {{connectTimeout: 2s}}
  ingress:
  - port: {{number: 9080, protocol: HTTP, name: web}}
    defaultEndpoint: 127.0.0.1:{app.port}
    connectionPool:
      http: {{http2MaxRequests: 1}}
  - port: {{number: 9091, protocol: TCP, name: raw}}
    defaultEndpoint: 0.0.0.0:{app.port}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: DISABLE}}}}
""")
    model, warnings = mesh.compile("default/api-1", "--app-ip", app_ip)
    assert "ingress" not in warnings and "inboundConnectionPool" not in warnings, warnings
    inbound = {l["name"]: l for l in model["listeners"] if l["name"].startswith("inbound|")}
    assert set(inbound) == {"inbound|9080", "inbound|9091"}, set(inbound)
    assert inbound["inbound|9080"]["origin"]["path"] == "spec.ingress[0]"
    clusters = {c["name"]: c for c in model["clusters"]}
    assert clusters["inbound|9091||"]["connect_timeout"] == "2s"  # the Sidecar's default
    assert "connect_timeout" not in clusters["inbound|9080||"]  # its own pool replaces it
    mesh.proxy = Proxy(mesh.workdir, model, name="api-proxy")
    mesh.proxy.start()
    r = requests.get(f"http://{b}.1:9080/x", timeout=10)
    assert r.status_code == 200 and r.json()["name"] == "api-app" and r.json()["path"] == "/x"
    # TCP: the bytes reach the same application, whatever they are.
    with socket.create_connection((f"{b}.1", 9091), timeout=10) as s:
        s.sendall(b"GET /raw HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b'"path": "/raw"' in data, data[:200]
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{b}.1:8080/", timeout=3)  # the service's port: not served
    out = []

    def one():
        out.append(requests.get(f"http://{b}.1:9080/", timeout=10).status_code)
    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(10)
    assert sorted(out) == [200, 503, 503], out
    assert mesh.proxy.metric("trellis_upstream_overflow_total") >= 2


def test_gateway_tcp_server_tcp_echo(mesh):
    """Istio's TCP traffic shifting task through the ingress gateway, from the
    sample's own files (istio/tcp-echo): a Gateway server with protocol TCP on
    31400 and the VirtualService bound to it. All to v1, then 80/20: every
    connection through the gateway reaches the subset its rule picks."""
    b = mesh.base
    pods = [TcpNamed("echo-v1", f"{b}.91", 9000), TcpNamed("echo-v2", f"{b}.92", 9000)]
    try:
        mesh.add(pod("echo-v1", f"{b}.91", {"app": "tcp-echo", "version": "v1"}),
                 pod("echo-v2", f"{b}.92", {"app": "tcp-echo", "version": "v2"}),
                 service("tcp-echo", 9000, {"app": "tcp-echo"}, port_name="tcp"),
                 pod("ingress-1", f"{b}.250", {"istio": "ingressgateway"}, ns="istio-system"))
        with open(os.path.join(CORPUS, "istio/tcp-echo/tcp-echo-all-v1.yaml")) as f:
            # one document each, so the VirtualService can be replaced below
            mesh.add(*f.read().split("\n---\n"))
        mesh.write()

        def gateway_model():
            r = mesh.ctl("compile", mesh.dir, "--workload", "istio-system/ingress-1", "-o",
                         "json")
            assert "31400" not in r.stderr, r.stderr
            return json.loads(r.stdout)
        model = gateway_model()
        assert [l["name"] for l in model["listeners"]] == ["gateway|31400"]
        mesh.proxy = Proxy(mesh.workdir, model, name="ingress")
        mesh.proxy.start()
        assert {tcp_greeting(f"{b}.250", 31400) for _ in range(20)} == {b"echo-v1"}
        # tcp-echo-20-v2.yaml replaces the VirtualService (same name)
        mesh.docs = [d for d in mesh.docs if "kind: VirtualService" not in d]
        with open(os.path.join(CORPUS, "istio/tcp-echo/tcp-echo-20-v2.yaml")) as f:
            mesh.add(f.read())
        mesh.write()
        model = gateway_model()
        assert [c["weight"] for c in model["listeners"][0]["tcp_clusters"]] == [80, 20]
        mesh.proxy.stop()
        mesh.proxy = Proxy(mesh.workdir, model, name="ingress-2")
        mesh.proxy.start()
        counts = {}
        n = 1000
        for _ in range(n):
            got = tcp_greeting(f"{b}.250", 31400)
            counts[got] = counts.get(got, 0) + 1
        # 20% of 1000 = 200, binomial sd 12.6: 5 sd either way
        assert 137 <= counts.get(b"echo-v2", 0) <= 263, counts
        assert counts.get(b"echo-v1", 0) + counts.get(b"echo-v2", 0) == n
    finally:
        for p in pods:
            p.close()
