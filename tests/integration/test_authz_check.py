"""`trellis ctl authz check` beyond the table (test_authz_table.py): JWT
claims, the path as the proxy normalises it, the text output, bad input;
and policies written by hand in a native proxy file, enforced by a real
proxy. (JWT claims through a real proxy: test_jwt_authz.py.)"""
import json
import os
import subprocess

import requests

from conftest import TRELLIS, free_port

MESH = """apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop, labels: {app: api}}
spec: {serviceAccountName: api}
status: {podIP: 127.0.0.1}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - source: {notRequestPrincipals: ["*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: admins, namespace: shop}
spec:
  rules:
  - from:
    - source: {requestPrincipals: ["https://idp.example/*"]}
    when:
    - key: request.auth.claims[realm][roles]
      values: [admin]
    - key: request.auth.audiences
      values: [shop]
  - to:
    - operation: {paths: [/public/*]}
"""


def ctl(d, *args):
    return subprocess.run([TRELLIS, "ctl", "authz", "check", d, "--to", "shop/api-1", *args],
                          capture_output=True, text=True, timeout=30)


def check(d, *args):
    r = ctl(d, *args, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_jwt_claims(workdir):
    with open(os.path.join(workdir, "mesh.yaml"), "w") as f:
        f.write(MESH)
    admin = json.dumps({"iss": "https://idp.example", "sub": "alice", "aud": ["shop", "x"],
                        "realm": {"roles": ["viewer", "admin"]}})
    viewer = json.dumps({"iss": "https://idp.example", "sub": "bob", "aud": "shop",
                         "realm": {"roles": "viewer"}})
    other = json.dumps({"iss": "https://evil.example", "sub": "alice", "aud": "shop",
                        "realm": {"roles": ["admin"]}})
    got = check(workdir, "--from", "none", "--path", "/orders")
    assert (got["decision"], got["policy"], got["rule"], got["action"]) == \
        ("DENY", "shop/require-jwt", 0, "DENY")
    got = check(workdir, "--from", "none", "--path", "/orders", "--jwt-claims", admin)
    assert (got["decision"], got["policy"], got["rule"]) == ("ALLOW", "shop/admins", 0)
    got = check(workdir, "--from", "none", "--path", "/orders", "--jwt-claims", viewer)
    assert (got["decision"], got["policy"], got["reason"]) == \
        ("DENY", None, "no ALLOW policy matched (default deny)")
    got = check(workdir, "--from", "none", "--path", "/public/x", "--jwt-claims", viewer)
    assert (got["decision"], got["policy"], got["rule"]) == ("ALLOW", "shop/admins", 1)
    got = check(workdir, "--from", "none", "--path", "/orders", "--jwt-claims", other)
    assert got["decision"] == "DENY"

    r = ctl(workdir, "--from", "spiffe://cluster.local/ns/shop/sa/web", "--path", "/public/a",
            "--jwt-claims", viewer)
    assert r.returncode == 0
    assert r.stdout.startswith("ALLOW by ALLOW policy shop/admins, rule 1: an ALLOW policy "
                               "matched\n"), r.stdout
    assert "normalized path: /public/a\n" in r.stdout

    for bad, msg in ((["--jwt-claims", "[1]"], "not a JSON object"),
                     (["--port", "9"], "no such port"),
                     (["--path", "x"], "must start with"),
                     (["--header", "novalue"], "Name=value")):
        r = ctl(workdir, "--from", "none", *bad)
        assert r.returncode == 2 and msg in r.stderr, (bad, r.stderr)
    r = subprocess.run([TRELLIS, "ctl", "authz", "check", workdir, "--to", "shop/api-1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--from" in r.stderr


def test_path_is_normalised_as_the_proxy_does(workdir):
    """The decision is taken on the listener's normalised path (STRICT by
    default), and a path the proxy refuses with 400 never reaches a policy."""
    with open(os.path.join(workdir, "mesh.yaml"), "w") as f:
        f.write(MESH)
    viewer = json.dumps({"iss": "https://idp.example", "sub": "bob", "aud": "shop",
                         "realm": {"roles": "viewer"}})
    for raw, norm, decision in (("/public/../orders", "/orders", "DENY"),
                                ("/x/..//public/%61?q=/../y", "/public/a", "ALLOW"),
                                ("/./public/./b", "/public/b", "ALLOW"),
                                ("/%70ublic/c", "/public/c", "ALLOW")):
        got = check(workdir, "--from", "none", "--path", raw, "--jwt-claims", viewer)
        assert (got["decision"], got["normalized_path"]) == (decision, norm), (raw, got)
    for raw in ("/public%2Fa", "/public\\a", "/public/%zz"):
        got = check(workdir, "--from", "none", "--path", raw, "--jwt-claims", viewer)
        assert (got["decision"], got["policy"], got["normalized_path"]) == ("DENY", None, None), \
            (raw, got)
        assert got["reason"].startswith("path refused before authorization (400)"), got


def test_unknown_condition_key_is_an_error(workdir):
    with open(os.path.join(workdir, "mesh.yaml"), "w") as f:
        f.write(MESH.replace("request.auth.audiences", "request.auth.audience"))
    r = ctl(workdir, "--from", "none")
    assert r.returncode == 1
    assert ("AuthorizationPolicy shop/admins: spec.rules[0].when[1].key: unknown condition key "
            "\"request.auth.audience\"") in r.stderr


def test_hand_written_policies(workdir, proxies, backend):
    """The model's own form, written by hand: a header condition, a DENY with
    a path template, and a default deny for the rest."""
    port = free_port()
    access = os.path.join(workdir, "access.log")
    cfg = {
        "access_log": {"enabled": True, "path": access},
        "listeners": [{
            "name": "in", "address": f"127.0.0.1:{port}", "route_table": "rt",
            "authorization": {"policies": [
                {"name": "no-exports", "action": "DENY",
                 "rules": [{"to": [{"paths": ["/reports/{*}/export"]}]}]},
                {"name": "tenants", "rules": [
                    {"when": [{"key": "request.headers[x-tenant]", "values": ["acme*"]}]}]},
                {"name": "nothing"},
            ]},
        }],
        "route_tables": [{"name": "rt", "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": [{"cluster": "app"}]}]}],
        "clusters": [{"name": "app", "endpoints": [{"address": f"127.0.0.1:{backend.port}"}]}],
    }
    p = proxies(cfg)
    url = f"http://127.0.0.1:{port}"
    r = requests.get(url + "/reports/1", headers={"x-tenant": "acme-1"}, timeout=10)
    assert r.status_code == 200
    r = requests.get(url + "/reports/1/export", headers={"x-tenant": "acme-1"}, timeout=10)
    assert (r.status_code, r.text) == (403, "RBAC: access denied")
    r = requests.get(url + "/reports/1", headers={"x-tenant": "globex"}, timeout=10)
    assert (r.status_code, r.text) == (403, "RBAC: access denied")
    log = p.read_log()
    assert "denied by authorization policy no-exports rule 0" in log
    assert "denied by authorization: no ALLOW policy matched (default deny)" in log
    assert 'response_code="403"' in p.metrics() and 'response_flags="RBAC"' in p.metrics()
    p.stop()
    lines = [json.loads(line) for line in open(access)]
    assert [(e["response_code"], e["response_flags"], e.get("authz_policy"), e.get("authz_rule"))
            for e in lines] == [(200, "-", None, None), (403, "RBAC", "no-exports", 0),
                                (403, "RBAC", None, None)]
