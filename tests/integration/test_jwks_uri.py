"""Key sets fetched from jwks_uri (upstream/jwks_fetch.h): a real trellis
fetches from a python HTTP server (which counts its fetches) through a
cluster, in the background. Tokens signed by the served key pass once it is
fetched; a rotated key takes over after the refresh; a server that fails
(status, bad JSON, down, slow) leaves the last keys in force, each failure
counted by trellis_jwks_fetches_total{result} and warned once per run."""
import http.server
import json
import os
import ssl
import sys
import threading
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.dirname(__file__))
import pki  # noqa: E402
from conftest import free_port, sanitizer_checked, simple_config  # noqa: E402
from test_jwt import b64  # noqa: E402

ISSUER = "https://issuer.example"
FETCHES = "trellis_jwks_fetches_total"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"  # no keys (yet)
BAD = "Jwt verification fails"  # keys, none of them the token's


def jwks_of(key, kid):
    n = key.public_key().public_numbers()
    return json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
                                 "x": b64(n.x, 32), "y": b64(n.y, 32)}]})


class KeyServer:
    """Serves GET /jwks.json: `body` with `status`, after `delay` seconds;
    counts the requests and remembers their Host. tls: (cert, key) for
    HTTPS."""

    def __init__(self, tls=None):
        self.port = free_port()
        self.body, self.status, self.delay = "{}", 200, 0.0
        self.chunked = False
        self.fetches, self.hosts = 0, []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with outer.lock:
                    outer.fetches += 1
                    outer.hosts.append(self.headers.get("Host"))
                    body, status, delay = outer.body.encode(), outer.status, outer.delay
                    chunked = outer.chunked
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if not chunked:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(body), 1000):
                    part = body[i:i + 1000]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            # the handshake in the handler's thread: a refused one is its own
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                                do_handshake_on_connect=False)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.up = True

    def serve(self, body=None, status=200):
        with self.lock:
            if body is not None:
                self.body = body
            self.status = status

    def count(self):
        with self.lock:
            return self.fetches

    def close(self):
        if self.up:
            self.up = False
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def checked(proxies):
    """Proxies whose logs must hold no sanitizer report (an ASan build)."""
    yield from sanitizer_checked(proxies)


@pytest.fixture
def keyserver():
    s = KeyServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def keys():
    return {"a": ec.generate_private_key(ec.SECP256R1()),
            "b": ec.generate_private_key(ec.SECP256R1())}


def token(keys, name):
    c = {"iss": ISSUER, "sub": "alice", "exp": int(time.time()) + 600}
    return jwt.encode(c, keys[name], algorithm="ES256", headers={"kid": name})


def start(proxies, backend, keyserver, inline=None, refresh="1s", timeout=None):
    port = free_port()
    uri = {"url": f"http://keys.example:{keyserver.port}/jwks.json", "cluster": "keys",
           "refresh": refresh}
    if timeout is not None:
        uri["timeout"] = timeout
    rule = {"issuer": ISSUER, "jwks_uri": uri}
    if inline is not None:
        rule["jwks"] = inline
    cfg = simple_config(port, backend.port, request_authentication={"rules": [rule]})
    cfg["clusters"].append({"name": "keys",
                            "endpoints": [{"address": f"127.0.0.1:{keyserver.port}"}]})
    p = proxies(cfg)
    p.port = port
    return p


def status(p, tok=None):
    h = {} if tok is None else {"Authorization": f"Bearer {tok}"}
    r = requests.get(f"http://127.0.0.1:{p.port}/x", headers=h, timeout=10)
    return r.status_code, r.text


def wait_for(pred, timeout=8.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return pred()
        time.sleep(0.05)
    return True


def warnings(p):
    return p.read_log().count("fetching keys from")


def test_fetched_key_verifies_then_rotation(checked, backend, keyserver, keys):
    keyserver.serve(jwks_of(keys["a"], "a"))
    p = start(checked, backend, keyserver)
    assert wait_for(lambda: p.metric(FETCHES, result="ok") >= 1)
    assert keyserver.hosts[0] == f"keys.example:{keyserver.port}"  # the URL's host, not the IP
    assert status(p, token(keys, "a"))[0] == 200
    assert status(p, token(keys, "b")) == (401, BAD)  # kid b is not in the set
    assert status(p)[0] == 200  # no token: not refused
    # Refreshed every second: key b replaces key a.
    keyserver.serve(jwks_of(keys["b"], "b"))
    assert wait_for(lambda: status(p, token(keys, "b"))[0] == 200)
    assert status(p, token(keys, "a")) == (401, BAD)
    n = keyserver.count()
    assert n >= 2
    time.sleep(2.5)
    assert 1 <= keyserver.count() - n <= 4  # about one a second: the refresh, not a loop
    assert p.metric(FETCHES, result="ok") == keyserver.count()
    assert warnings(p) == 0


def test_no_keys_until_first_fetch(checked, backend, keyserver, keys):
    keyserver.serve(jwks_of(keys["a"], "a"), status=503)
    p = start(checked, backend, keyserver, refresh="1h")
    assert wait_for(lambda: p.metric(FETCHES, result="status") >= 1)
    assert status(p, token(keys, "a")) == (401, NO_KEY)
    assert status(p)[0] == 200
    # The backoff (1s, then 2s) tries again long before the refresh (1h).
    keyserver.serve(status=200)
    assert wait_for(lambda: status(p, token(keys, "a"))[0] == 200, timeout=6)
    assert p.metric(FETCHES, result="ok") == 1
    log = p.read_log()
    assert warnings(p) == 1, log
    assert "status 503" in log
    assert "keys fetched from" in log  # the recovery


def test_failures_keep_last_keys(checked, backend, keyserver, keys):
    keyserver.serve(jwks_of(keys["a"], "a"))
    p = start(checked, backend, keyserver)
    assert wait_for(lambda: p.metric(FETCHES, result="ok") >= 1)
    good = token(keys, "a")
    assert status(p, good)[0] == 200
    # Bad JSON, then a set without a usable key: the last keys stay.
    keyserver.serve('{"keys": [')
    assert wait_for(lambda: p.metric(FETCHES, result="body") >= 1)
    assert status(p, good)[0] == 200
    keyserver.serve('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    before = p.metric(FETCHES, result="body")
    assert wait_for(lambda: p.metric(FETCHES, result="body") > before)
    assert status(p, good)[0] == 200
    # The server goes away: connect failures, the keys still work.
    keyserver.close()
    assert wait_for(lambda: p.metric(FETCHES, result="connect") >= 2)
    assert status(p, good)[0] == 200
    assert status(p, token(keys, "b")) == (401, BAD)
    assert warnings(p) == 1  # one run of failures, one warning


def test_inline_keys_until_fetch_and_timeout(checked, backend, keyserver, keys):
    keyserver.serve(jwks_of(keys["b"], "b"))
    keyserver.delay = 1.5
    p = start(checked, backend, keyserver, inline=jwks_of(keys["a"], "a"), refresh="1h",
              timeout="300ms")
    # The fetch times out: the inline key a is in force, b is not.
    assert wait_for(lambda: p.metric(FETCHES, result="timeout") >= 1)
    assert status(p, token(keys, "a"))[0] == 200
    assert status(p, token(keys, "b"))[0] == 401
    keyserver.delay = 0.0
    assert wait_for(lambda: p.metric(FETCHES, result="ok") >= 1, timeout=6)
    assert status(p, token(keys, "b"))[0] == 200
    assert status(p, token(keys, "a")) == (401, BAD)


def test_reload_keeps_fetched_keys(checked, backend, keyserver, keys):
    keyserver.serve(jwks_of(keys["a"], "a"))
    p = start(checked, backend, keyserver, refresh="1h")
    assert wait_for(lambda: p.metric(FETCHES, result="ok") >= 1)
    keyserver.close()  # no fetch can succeed from here on
    # A reload (another route added) builds new worker snapshots: they take
    # over the keys and the schedule, without fetching again.
    cfg = p.config
    cfg["route_tables"][0]["virtual_hosts"][0]["routes"].insert(
        0, {"name": "other", "match": {"path": {"prefix": "/other"}}, "cluster": "backend"})
    p.write_config(cfg)
    p.signal(__import__("signal").SIGHUP)
    assert wait_for(lambda: requests.get(f"http://127.0.0.1:{p.port}/other", timeout=5)
                    .status_code == 200)
    assert status(p, token(keys, "a"))[0] == 200
    time.sleep(0.5)
    assert p.metric(FETCHES, result="connect") == 0
    assert p.metric(FETCHES, result="ok") == 1


def test_https_through_plaintext_cluster_refused_at_load(checked, backend, keyserver):
    port = free_port()
    rule = {"issuer": ISSUER, "jwks_uri": {"url": "https://keys.example/jwks.json",
                                           "cluster": "backend"}}
    cfg = simple_config(port, backend.port, request_authentication={"rules": [rule]})
    p = checked(cfg, start=False)
    p.start(wait=False)
    assert p.proc.wait(timeout=10) != 0
    log = p.read_log()
    assert "listeners[0].request_authentication.rules[0].jwks_uri.cluster" in log
    assert "does not originate TLS" in log


@pytest.fixture
def tls_keyserver(workdir):
    """A KeyServer speaking HTTPS with a certificate for keys.example from a
    CA of the test's own (and another CA that did not sign it)."""
    d = os.path.join(workdir, "keys-pki")
    ca, other = pki.create_ca(d, "keys-ca"), pki.create_ca(d, "other-ca")
    leaf = pki.create_leaf(d, ca, "keys", with_uri=False, dns_names=["keys.example"],
                           common_name="keys.example")
    s = KeyServer(tls=(leaf.cert, leaf.key))
    s.ca, s.other_ca = ca.root, other.root
    yield s
    s.close()


def start_https(proxies, backend, keyserver, ca, sni="keys.example", name="https"):
    port = free_port()
    uri = {"url": f"https://keys.example:{keyserver.port}/jwks.json", "cluster": "keys",
           "refresh": "1s"}
    cfg = simple_config(port, backend.port,
                        request_authentication={"rules": [{"issuer": ISSUER, "jwks_uri": uri}]})
    cfg["tls"] = [{"name": "key-server", "type": "client", "ca": ca}]
    cfg["clusters"].append({"name": "keys", "tls": {"context": "key-server", "sni": sni},
                            "endpoints": [{"address": f"127.0.0.1:{keyserver.port}"}]})
    p = proxies(cfg, name)
    p.port = port
    return p


def test_https_key_server_is_verified(checked, backend, tls_keyserver, keys):
    """https: keys fetched over TLS that verifies the key server's name
    against the cluster's CA; a server the CA did not sign, or a name its
    certificate does not carry, gives no keys (every token refused)."""
    tls_keyserver.serve(jwks_of(keys["a"], "a"))
    p = start_https(checked, backend, tls_keyserver, tls_keyserver.ca)
    assert wait_for(lambda: p.metric(FETCHES, result="ok") >= 1)
    assert tls_keyserver.hosts[0] == f"keys.example:{tls_keyserver.port}"
    assert status(p, token(keys, "a"))[0] == 200
    assert status(p, token(keys, "b")) == (401, BAD)
    assert p.metric("trellis_tls_handshake_errors_total", direction="outbound") == 0
    for ca, sni, name in ((tls_keyserver.other_ca, "keys.example", "unknown-ca"),
                          (tls_keyserver.ca, "other.example", "wrong-name")):
        q = start_https(checked, backend, tls_keyserver, ca, sni=sni, name=name)
        assert wait_for(lambda: q.metric(FETCHES, result="connect") >= 1)
        assert q.metric(FETCHES, result="ok") == 0
        assert status(q, token(keys, "a")) == (401, NO_KEY)
        assert q.metric("trellis_tls_handshake_errors_total", direction="outbound") >= 1
        assert "fetching keys from" in q.read_log()
    # The refused handshakes never reached the server's HTTP layer: every
    # request it served is one of p's fetches (one may be in flight).
    assert wait_for(lambda: p.metric(FETCHES, result="ok") >= 2)
    assert 0 <= tls_keyserver.count() - p.metric(FETCHES, result="ok") <= 1


def test_chunked_body_and_size_bound(checked, backend, keyserver, keys):
    # A chunked key set (padded past one buffer) is read whole.
    keyserver.chunked = True
    ks = json.loads(jwks_of(keys["a"], "a"))
    ks["pad"] = "x" * 30000
    keyserver.serve(json.dumps(ks))
    p = start(checked, backend, keyserver)
    assert wait_for(lambda: p.metric(FETCHES, result="ok") >= 1)
    assert status(p, token(keys, "a"))[0] == 200
    # Over 64 KiB: refused, the last keys stay.
    ks = json.loads(jwks_of(keys["b"], "b"))
    ks["pad"] = "x" * (64 * 1024)
    keyserver.serve(json.dumps(ks))
    assert wait_for(lambda: p.metric(FETCHES, result="body") >= 1)
    assert "over 64 KiB" in p.read_log()
    assert status(p, token(keys, "a"))[0] == 200
    assert status(p, token(keys, "b"))[0] == 401
