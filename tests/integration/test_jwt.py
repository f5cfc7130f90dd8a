"""Request authentication (filter/jwt.h): a real trellis in front of a
recording backend, tokens made with python3-jwt from python3-cryptography
keys. Valid tokens pass with their outputs seen by the backend; expired,
badly signed, wrongly addressed, alg none and HMAC tokens get 401; a request
without a token passes (no authorization configured: Istio's semantics)."""
import base64
import json
import os
import sys
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port, simple_config  # noqa: E402
from h2util import H2Client  # noqa: E402

ISSUER = "https://issuer.example"


def b64(n, size=None):
    raw = n.to_bytes(size or (n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def keys():
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
        "stranger": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


def jwks_of(keys):
    r = keys["rsa"].public_key().public_numbers()
    p = keys["p256"].public_key().public_numbers()
    q = keys["p384"].public_key().public_numbers()
    from cryptography.hazmat.primitives import serialization
    ed_raw = keys["ed"].public_key().public_bytes(serialization.Encoding.Raw,
                                                  serialization.PublicFormat.Raw)
    return json.dumps({"keys": [
        {"kty": "RSA", "kid": "r", "n": b64(r.n), "e": b64(r.e)},
        {"kty": "EC", "crv": "P-256", "kid": "p", "x": b64(p.x, 32), "y": b64(p.y, 32)},
        {"kty": "EC", "crv": "P-384", "x": b64(q.x, 48), "y": b64(q.y, 48)},
        {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(ed_raw).rstrip(b"=").decode()},
    ]})


def claims(**over):
    c = {"iss": ISSUER, "sub": "alice", "aud": "api", "exp": int(time.time()) + 600,
         "groups": ["dev"]}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


@pytest.fixture
def proxy(proxies, backend, keys):
    port = free_port()
    rule = {"issuer": ISSUER, "audiences": ["api"], "jwks": jwks_of(keys),
            "output_payload_to_header": "x-jwt-payload",
            "output_claim_to_headers": [{"header": "x-jwt-sub", "claim": "sub"}]}
    cfg = simple_config(port, backend.port, request_authentication={"rules": [rule]})
    p = proxies(cfg)
    p.port = port
    return p


def get(port, token=None, headers=None, path="/x"):
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return requests.get(f"http://127.0.0.1:{port}{path}", headers=h, timeout=10)


def backend_headers(backend):
    return dict(backend.requests[-1]["headers"])


@pytest.mark.parametrize("alg,key", [("RS256", "rsa"), ("RS384", "rsa"), ("RS512", "rsa"),
                                     ("PS256", "rsa"), ("PS384", "rsa"), ("PS512", "rsa"),
                                     ("ES256", "p256"), ("ES384", "p384"), ("EdDSA", "ed")])
def test_valid_token_reaches_backend_with_outputs(proxy, backend, keys, alg, key):
    token = jwt.encode(claims(), keys[key], algorithm=alg)
    r = get(proxy.port, token, headers={"x-jwt-sub": "forged", "x-jwt-payload": "forged"})
    assert r.status_code == 200, r.text
    h = backend_headers(backend)
    payload = token.split(".")[1]
    assert h["x-jwt-payload"] == payload
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert decoded["sub"] == "alice"
    assert h["x-jwt-sub"] == "alice"
    # forward_original_token defaults to false: the token stays here.
    assert "authorization" not in h
    assert [k for k, _ in backend.requests[-1]["headers"]].count("x-jwt-sub") == 1


def test_missing_token_passes_without_outputs(proxy, backend):
    r = get(proxy.port, headers={"x-jwt-sub": "forged"})
    assert r.status_code == 200
    h = backend_headers(backend)
    assert "x-jwt-sub" not in h  # a client cannot supply what the token would
    assert "x-jwt-payload" not in h


def invalid_tokens(keys):
    now = int(time.time())
    good = claims()
    none_token = jwt.encode(good, None, algorithm="none")
    return {
        "expired": jwt.encode(claims(exp=now - 120), keys["rsa"], algorithm="RS256"),
        "not yet valid": jwt.encode(claims(nbf=now + 120), keys["rsa"], algorithm="RS256"),
        "bad signature": jwt.encode(good, keys["stranger"], algorithm="RS256"),
        "wrong audience": jwt.encode(claims(aud="other"), keys["p256"], algorithm="ES256"),
        "unknown issuer": jwt.encode(claims(iss="https://evil.example"), keys["rsa"],
                                     algorithm="RS256"),
        "alg none": none_token,
        "HS256": jwt.encode(good, "secret-that-is-long-enough-for-hs256", algorithm="HS256"),
        "garbage": "not.a.token",
    }


def test_invalid_tokens_get_401(proxy, backend, keys):
    for name, token in invalid_tokens(keys).items():
        before = len(backend.requests)
        r = get(proxy.port, token, path="/p?q=1")
        assert r.status_code == 401, name
        assert r.headers["www-authenticate"] == \
            f'Bearer realm="http://127.0.0.1:{proxy.port}/p", error="invalid_token"', name
        assert len(backend.requests) == before, name


def test_clock_skew_tolerated(proxy, keys):
    now = int(time.time())
    token = jwt.encode(claims(exp=now - 20, nbf=now + 20), keys["rsa"], algorithm="RS256")
    assert get(proxy.port, token).status_code == 200


def test_http2_client(proxy, backend, keys):
    token = jwt.encode(claims(), keys["ed"], algorithm="EdDSA")
    c = H2Client(proxy.port)
    try:
        ok = c.get("/h2", headers=[("authorization", f"Bearer {token}")], authority="a")
        assert ok.status == 200
        assert backend_headers(backend)["x-jwt-sub"] == "alice"
        bad = c.get("/h2", headers=[("authorization", "Bearer x.y.z")], authority="a")
        assert bad.status == 401
    finally:
        c.close()


def test_locations_and_forwarding(proxies, backend, keys):
    port = free_port()
    rule = {"issuer": ISSUER, "jwks": jwks_of(keys),
            "from_headers": [{"name": "x-token", "prefix": "Tok "}],
            "from_params": ["jwt"], "from_cookies": ["session"],
            "forward_original_token": True}
    proxies(simple_config(port, backend.port, request_authentication={"rules": [rule]}))
    token = jwt.encode(claims(), keys["p256"], algorithm="ES256")
    bad = jwt.encode(claims(), keys["stranger"], algorithm="RS256")
    assert get(port, headers={"x-token": f"Tok {token}"}).status_code == 200
    assert backend_headers(backend)["x-token"] == f"Tok {token}"  # forwarded
    assert get(port, path=f"/?jwt={token}").status_code == 200
    assert get(port, headers={"cookie": f"a=b; session={token}"}).status_code == 200
    assert get(port, headers={"cookie": f"session={bad}"}).status_code == 401
    # The default Authorization location is not looked at when others are given.
    assert get(port, bad).status_code == 200


def test_bad_jwks_refused_at_load(workdir, backend):
    import subprocess
    from conftest import TRELLIS, Proxy
    cfg = simple_config(free_port(), backend.port, request_authentication={"rules": [
        {"issuer": ISSUER, "jwks": '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}'}]})
    p = Proxy(workdir, cfg)
    out = subprocess.run([TRELLIS, "proxy", "--check", "--config", p.path],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "listeners[0].request_authentication.rules[0].jwks" in out.stderr + out.stdout
    assert "no usable signature key" in out.stderr + out.stdout


def test_key_rotation_by_reload(proxies, backend, keys):
    """Inline keys rotate with the configuration: after a reload the new
    key's tokens pass and the old key's get 401, with no restart."""
    import signal
    from test_lifecycle import wait_generation
    port = free_port()
    old = {"rsa": keys["stranger"], "p256": keys["p256"], "p384": keys["p384"], "ed": keys["ed"]}
    cfg = simple_config(port, backend.port, request_authentication={"rules": [
        {"issuer": ISSUER, "jwks": jwks_of(old)}]})
    p = proxies(cfg)
    new_token = jwt.encode(claims(), keys["rsa"], algorithm="RS256")
    old_token = jwt.encode(claims(), keys["stranger"], algorithm="RS256")
    assert get(port, old_token).status_code == 200
    assert get(port, new_token).status_code == 401
    gen = p.metric("trellis_config_generation")
    cfg["listeners"][0]["request_authentication"]["rules"][0]["jwks"] = jwks_of(keys)
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    # the file poll may load it too (test_updates.reload): one or two generations
    assert wait_generation(p, gen + 1) >= gen + 1
    assert get(port, new_token).status_code == 200
    assert get(port, old_token).status_code == 401


def test_grpc_invalid_token_is_unauthenticated(proxy):
    """A gRPC call with an invalid token gets grpc-status 16 (UNAUTHENTICATED),
    as Envoy's local reply maps 401."""
    import grpcutil
    r = grpcutil.raw_call(proxy.port, "/test.Echo/Unary", b"x",
                          extra=[("authorization", "Bearer x.y.z")])
    fields = dict(r["headers"] + (r["trailers"] or []))
    assert r["trailers_only"]
    assert fields["grpc-status"] == "16"
    assert fields["www-authenticate"].startswith("Bearer realm=")
