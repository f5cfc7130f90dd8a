"""Request authentication feeding authorization in one real proxy: the
JWT filter's result (request principal, audiences, claims) is what
`request_principals` and `request.auth.*` conditions see, HTTP/1.1 and
HTTP/2 alike. Istio's recipe: a DENY of requests without a principal makes
a token mandatory; an ALLOW by claim admits only some tokens."""
import os
import sys

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port, simple_config  # noqa: E402
from h2util import H2Client  # noqa: E402
from test_jwt import ISSUER, claims, jwks_of, keys  # noqa: E402,F401 (keys: fixture)

POLICIES = [
    {"name": "shop/require-jwt", "action": "DENY",
     "rules": [{"from": [{"not_request_principals": ["*"]}]}]},
    {"name": "shop/admins", "rules": [
        {"from": [{"request_principals": [ISSUER + "/*"]}],
         "when": [{"key": "request.auth.claims[realm][roles]", "values": ["admin"]},
                  {"key": "request.auth.audiences", "values": ["api"]}]},
        {"to": [{"paths": ["/public/*"]}]}]},
]


def start(proxies, backend, keys):
    port = free_port()
    rule = {"issuer": ISSUER, "audiences": ["api"], "jwks": jwks_of(keys)}
    cfg = simple_config(port, backend.port, request_authentication={"rules": [rule]},
                        authorization={"policies": POLICIES})
    p = proxies(cfg)
    p.port = port
    return p


def h1(port, path, token=None):
    h = {"Authorization": f"Bearer {token}"} if token else {}
    r = requests.get(f"http://127.0.0.1:{port}{path}", headers=h, timeout=10)
    return r.status_code, r.text


def h2(port, path, token=None):
    c = H2Client(port)
    try:
        hdrs = [("authorization", f"Bearer {token}")] if token else []
        r = c.get(path, headers=hdrs, authority="a")
        return r.status, bytes(r.data).decode()
    finally:
        c.close()


def test_token_claims_decide(proxies, backend, keys):
    p = start(proxies, backend, keys)
    admin = jwt.encode(claims(realm={"roles": ["viewer", "admin"]}), keys["rsa"],
                       algorithm="RS256")
    viewer = jwt.encode(claims(realm={"roles": "viewer"}), keys["p256"], algorithm="ES256")
    expired = jwt.encode(claims(exp=1000, realm={"roles": ["admin"]}), keys["rsa"],
                         algorithm="RS256")
    for send in (h1, h2):
        before = len(backend.requests)
        # No token: authentication passes, the DENY policy refuses it.
        assert send(p.port, "/orders") == (403, "RBAC: access denied"), send
        # An invalid token never reaches authorization.
        assert send(p.port, "/orders", expired)[0] == 401, send
        # Verified, with the admin role in a nested list claim: allowed.
        assert send(p.port, "/orders", admin)[0] == 200, send
        # Verified without the role: no ALLOW rule matches but the path rule.
        assert send(p.port, "/orders", viewer) == (403, "RBAC: access denied"), send
        assert send(p.port, "/public/a", viewer)[0] == 200, send
        # The path rule never admits a request without a token (DENY first),
        # nor one that normalises out of /public.
        assert send(p.port, "/public/a")[0] == 403, send
        assert send(p.port, "/public/../orders", viewer)[0] == 403, send
        assert len(backend.requests) == before + 2, send
