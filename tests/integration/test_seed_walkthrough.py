"""The seed skill's zero-trust walkthrough, end to end, from its own files.

The policies are the corpus files themselves (../shared/corpus/seed-skill,
copied unchanged): mesh-wide STRICT mTLS (security-patterns--00), deny-all
in production (--01), frontend to backend GET/POST /api/* (--02), namespace
isolation (--03), JWT authentication with keys from
https://auth.example.com/.well-known/jwks.json (--16), a mandatory token at
the api-gateway (--17) and claims-based access to admin-api (--18). The test
adds only what the walkthrough presumes exists: the workloads (Pods and
Services run by `trellis up` in network namespaces, each with its sidecar
and SPIFFE identity), the key server for auth.example.com (a Pod without a
sidecar serving HTTPS with a certificate from a CA of the test's own; a
ServiceEntry names it and a DestinationRule trusts that CA, as one would in
Istio for a private issuer), and for admin-api the RequestAuthentication of
--16 with admin-api's selector (--16 selects only api-gateway, so without it
admin-api could never see a claim).

Real clients (curl inside a workload's namespace, through its sidecar's
capture), real servers, real tokens (python3-jwt); `trellis ctl authz check`
must agree with the proxies. Needs root and network namespaces."""
import json
import os
import shutil
import subprocess
import sys
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.dirname(__file__))
import pki  # noqa: E402
from conftest import ROOT, TRELLIS  # noqa: E402
from test_jwt import b64  # noqa: E402
from test_up import _netns_ok, cleanup, netns_list  # noqa: E402

SEED = os.path.normpath(os.path.join(ROOT, "..", "shared", "corpus", "seed-skill"))
FILES = ["security-patterns--00-implementation-steps-istio.yaml",
         "security-patterns--01-implementation-steps-istio.yaml",
         "security-patterns--02-implementation-steps-istio.yaml",
         "security-patterns--03-implementation-steps-istio.yaml",
         "security-patterns--16-requestauthentication.yaml",
         "security-patterns--17-require-valid-jwt.yaml",
         "security-patterns--18-claims-based-authorization.yaml"]
ISSUER = "https://auth.example.com"
TD = "spiffe://cluster.local"
DENIED = (403, "RBAC: access denied")


def pod(apps, ns, name, app, sa, command, port=None, inject=True):
    labels = {"app": app}
    if not inject:
        labels["sidecar.istio.io/inject"] = "false"
    c = {"name": name, "command": ["python3", os.path.join(apps, "seed_apps.py")] + command}
    if port:
        c["ports"] = [{"containerPort": port}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"serviceAccountName": sa, "containers": [c]}}


def service(ns, name, port=8080):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": "http", "port": port, "targetPort": port}]}}


def workloads(apps, ca_pem):
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
            for n in ("istio-system", "production", "other", "auth")]
    for app in ("backend", "api-gateway", "admin-api"):
        docs.append(pod(apps, "production", app, app, app, ["echo", app, "8080"], port=8080))
        docs.append(service("production", app))
    docs.append(pod(apps, "production", "frontend", "frontend", "frontend", ["idle"]))
    docs.append(pod(apps, "other", "outsider", "outsider", "outsider", ["idle"]))
    docs.append(pod(apps, "auth", "keys", "auth-server", "keys", ["keys", "8443", apps],
                    port=8443, inject=False))
    docs.append({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                 "metadata": {"name": "auth", "namespace": "auth"},
                 "spec": {"hosts": ["auth.example.com"], "location": "MESH_INTERNAL",
                          "resolution": "STATIC",
                          "workloadSelector": {"labels": {"app": "auth-server"}},
                          "ports": [{"number": 443, "name": "https", "protocol": "HTTPS",
                                     "targetPort": 8443}]}})
    docs.append({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "auth-ca", "namespace": "auth"},
                 "stringData": {"cacert": ca_pem}})
    docs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                 "metadata": {"name": "auth", "namespace": "auth"},
                 "spec": {"host": "auth.example.com",
                          "trafficPolicy": {"tls": {"mode": "SIMPLE",
                                                    "credentialName": "auth-ca"}}}})
    # --16 as written, selecting admin-api (see the module's text)
    docs.append({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
                 "metadata": {"name": "jwt-auth-admin-api", "namespace": "production"},
                 "spec": {"selector": {"matchLabels": {"app": "admin-api"}},
                          "jwtRules": [{"issuer": ISSUER,
                                        "jwksUri": ISSUER + "/.well-known/jwks.json",
                                        "audiences": ["api.example.com",
                                                      "mobile.example.com"],
                                        "forwardOriginalToken": True}]}})
    return "---\n".join(json.dumps(d) + "\n" for d in docs)


class Walkthrough:
    def __init__(self, state, resources, apps, keys):
        self.state, self.resources, self.apps, self.keys = state, resources, apps, keys

    def curl(self, workload, url, *args):
        ns, name = workload.split("/")
        r = subprocess.run(["ip", "netns", "exec", f"trl-{ns}-{name}", "curl", "-sS", "-m", "5",
                            "-o", "-", "-w", "\n%{http_code}", *args, url],
                           capture_output=True, text=True, timeout=30)
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body

    def call(self, workload, url, method="GET", token=None):
        args = ["-X", method]
        if token is not None:
            args += ["-H", f"Authorization: Bearer {token}"]
        return self.curl(workload, url, *args)

    def token(self, key="good", aud="api.example.com", **claims):
        c = {"iss": ISSUER, "sub": "alice", "aud": aud, "exp": int(time.time()) + 600}
        c.update(claims)
        return jwt.encode(c, self.keys[key], algorithm="ES256", headers={"kid": "k1"})

    def metric(self, workload, name, **labels):
        code, text = self.curl(workload, "http://127.0.0.1:15000/stats/prometheus")
        assert code == 200
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def authz_check(self, src, dst, method, path, *extra):
        # the copy `up` staged: the Pods with the addresses it gave them
        staged = os.path.join(self.state, "resources")
        r = subprocess.run([TRELLIS, "ctl", "authz", "check", staged, "--from", src,
                            "--to", dst, "--method", method, "--path", path, "-o", "json",
                            *extra], capture_output=True, text=True, timeout=30)
        assert r.returncode in (0, 1), r.stderr
        return json.loads(r.stdout)


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    if not _netns_ok():
        pytest.skip("needs root and `ip netns`")
    if "trl-hub" in netns_list():
        pytest.fail("a trellis up mesh is already running (trl-hub exists): trellis down first")
    state = str(tmp_path_factory.mktemp("seed-state"))
    top = tmp_path_factory.mktemp("seed")
    res, apps = str(top / "mesh"), str(top / "apps")
    os.makedirs(res)
    os.makedirs(apps)
    for f in FILES:
        shutil.copy(os.path.join(SEED, f), res)
    shutil.copy(os.path.join(os.path.dirname(__file__), "seed_apps.py"), apps)
    ca = pki.create_ca(apps, "auth-ca")
    pki.create_leaf(apps, ca, "keys", with_uri=False, dns_names=["auth.example.com"],
                    common_name="auth.example.com")
    keys = {"good": ec.generate_private_key(ec.SECP256R1()),
            "other": ec.generate_private_key(ec.SECP256R1())}
    n = keys["good"].public_key().public_numbers()
    with open(os.path.join(apps, "jwks.json"), "w") as f:
        json.dump({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                             "x": b64(n.x, 32), "y": b64(n.y, 32)}]}, f)
    with open(ca.root) as f:
        ca_pem = f.read()
    with open(os.path.join(res, "workloads.yaml"), "w") as f:
        f.write(workloads(apps, ca_pem))
    try:
        r = subprocess.run([TRELLIS, "up", res, "--state", state, "--detach"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        # The corpus files compile without an error or a warning of their own.
        for f in FILES:
            assert f not in r.stderr, r.stderr
        w = Walkthrough(state, res, apps, keys)
        # The api-gateway's sidecar fetches the keys in the background.
        deadline = time.monotonic() + 30
        while w.call("production/frontend", "http://api-gateway:8080/x",
                     token=w.token())[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        yield w
    finally:
        cleanup(state)


def test_frontend_to_backend_get_post_api_only(walk):
    for method in ("GET", "POST"):
        code, body = walk.call("production/frontend", "http://backend:8080/api/orders", method)
        assert code == 200, body
        seen = json.loads(body)
        assert seen["name"] == "backend" and seen["method"] == method
        assert seen["path"] == "/api/orders"
    # the backend's sidecar saw the frontend's SPIFFE identity over mTLS
    assert walk.metric("production/backend", "istio_requests_total", reporter="destination",
                       source_principal=f"{TD}/ns/production/sa/frontend",
                       connection_security_policy="mutual_tls", response_code="200") >= 2
    assert walk.call("production/frontend", "http://backend:8080/api/orders", "DELETE") == DENIED
    assert walk.call("production/frontend", "http://backend:8080/admin") == DENIED
    # a path that normalises out of /api/* is decided (and would be
    # forwarded) as /admin
    assert walk.call("production/frontend", "http://backend:8080/api/../admin") == DENIED
    assert walk.call("production/frontend", "http://backend:8080/api/%2e%2e/admin") == DENIED
    # deny-all: another workload of production has no allow to backend
    code, _ = walk.call("production/frontend", "http://admin-api:8080/api/orders")
    assert code == 403
    d = walk.authz_check(f"{TD}/ns/production/sa/frontend", "production/backend", "POST",
                         "/api/orders")
    assert d["decision"] == "ALLOW" and d["policy"] == "production/allow-frontend-to-backend"
    d = walk.authz_check(f"{TD}/ns/production/sa/frontend", "production/backend", "DELETE",
                         "/api/orders")
    assert d["decision"] == "DENY"
    assert walk.metric("production/backend", "istio_requests_total", reporter="destination",
                       response_code="403") >= 4


def test_namespace_isolation(walk):
    assert walk.call("other/outsider", "http://backend.production:8080/api/orders") == DENIED
    # a valid token does not get it past the namespace DENY
    assert walk.call("other/outsider", "http://api-gateway.production:8080/x",
                     token=walk.token()) == DENIED
    d = walk.authz_check(f"{TD}/ns/other/sa/outsider", "production/api-gateway", "GET", "/x")
    assert d["decision"] == "DENY" and d["policy"] == "production/deny-cross-namespace"
    assert d["action"] == "DENY"


def test_strict_mtls_refuses_a_workload_without_sidecar(walk):
    out = subprocess.run(["ip", "netns", "exec", "trl-production-backend", "ip", "-4", "-o",
                          "addr", "show", "eth0"], capture_output=True, text=True, timeout=10)
    ip = out.stdout.split()[3].split("/")[0]
    before = walk.metric("production/backend", "istio_requests_total", reporter="destination")
    code, _ = walk.curl("auth/keys", f"http://{ip}:8080/api/orders")
    assert code == 0  # no HTTP answer: the sidecar wants mTLS
    after = walk.metric("production/backend", "istio_requests_total", reporter="destination")
    assert after == before


def test_jwt_required_at_api_gateway_keys_over_https(walk):
    # keys fetched from https://auth.example.com through the DestinationRule's TLS
    assert walk.metric("production/api-gateway", "trellis_jwks_fetches_total", result="ok") >= 1
    with open(os.path.join(walk.apps, "keys.log")) as f:
        log = f.read()
    assert "GET /.well-known/jwks.json auth.example.com" in log
    code, body = walk.call("production/frontend", "http://api-gateway:8080/x", token=walk.token())
    assert code == 200, body
    seen = json.loads(body)
    assert seen["headers"]["authorization"].startswith("Bearer ")  # forwardOriginalToken
    assert walk.call("production/frontend", "http://api-gateway:8080/x") == DENIED
    assert walk.call("production/frontend", "http://api-gateway:8080/x",
                     token=walk.token(aud="other.example.com"))[0] == 401
    assert walk.call("production/frontend", "http://api-gateway:8080/x",
                     token=walk.token(key="other"))[0] == 401
    assert walk.call("production/frontend", "http://api-gateway:8080/x",
                     token=walk.token(exp=int(time.time()) - 3600))[0] == 401
    assert walk.call("production/frontend", "http://api-gateway:8080/x",
                     token=walk.token(aud="mobile.example.com"))[0] == 200


def test_claims_based_admin_access(walk):
    url = "http://admin-api:8080/admin/users"
    ok = walk.token(role="admin", verified="true")
    assert walk.call("production/frontend", url, token=ok)[0] == 200
    assert walk.call("production/frontend", url,
                     token=walk.token(role="superuser", verified="true"))[0] == 200
    assert walk.call("production/frontend", url,
                     token=walk.token(role="user", verified="true")) == DENIED
    assert walk.call("production/frontend", url,
                     token=walk.token(role="admin", verified="false")) == DENIED
    assert walk.call("production/frontend", url, token=walk.token(role="admin")) == DENIED
    assert walk.call("production/frontend", url) == DENIED
    d = walk.authz_check(f"{TD}/ns/production/sa/frontend", "production/admin-api", "GET",
                         "/admin/users", "--jwt-claims",
                         json.dumps({"iss": ISSUER, "sub": "alice", "role": "admin",
                                     "verified": "true"}))
    assert d["decision"] == "ALLOW" and d["policy"] == "production/admin-only"
    d = walk.authz_check(f"{TD}/ns/production/sa/frontend", "production/admin-api", "GET",
                         "/admin/users", "--jwt-claims",
                         json.dumps({"iss": ISSUER, "sub": "alice", "role": "user",
                                     "verified": "true"}))
    assert d["decision"] == "DENY"
