"""TLS termination (a gateway listener, mode TERMINATE) and TLS origination
(a cluster with a client context) against real clients and servers: curl,
openssl s_client and python's ssl on one side, a python HTTPS server on the
other. Certificates are made per test (pki.py) with DNS and URI SANs.
"""
import http.server
import json
import os
import socket
import socketserver
import ssl
import subprocess
import threading

import pytest

from conftest import free_port, simple_config
import pki
from test_lifecycle import wait_generation


def _leaf(d, ca, name, dns=(), uri=None):
    """A certificate for a server or client outside the mesh: DNS SANs and at
    most one URI SAN, no SPIFFE ID unless uri is one."""
    return pki.create_leaf(d, ca, name, with_uri=uri is not None, uri=uri, dns_names=dns,
                           common_name=dns[0] if dns else name)


class TLSBackend:
    """An HTTPS server on 127.0.0.1: answers 200 with a JSON echo of the
    request and the SNI it was sent; with client_ca, clients must present a
    certificate from it. Handshakes that fail are counted, not fatal."""

    def __init__(self, cert, key, client_ca=None):
        self.port = free_port()
        self.requests = []
        self.snis = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = lambda sock, name, c: self.snis.append(name)
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                peer = self.connection.getpeercert()
                backend.requests.append({"path": self.path,
                                         "headers": {k.lower(): v for k, v in self.headers.items()},
                                         "client_cert": peer is not None and peer != {}})
                out = json.dumps({"path": self.path, "tls": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self):
                sock, addr = self.socket.accept()
                sock.settimeout(5)
                try:
                    return ctx.wrap_socket(sock, server_side=True), addr
                except (ssl.SSLError, OSError):
                    sock.close()
                    raise

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_backends():
    started = []

    def make(*a, **kw):
        b = TLSBackend(*a, **kw)
        started.append(b)
        return b

    yield make
    for b in started:
        b.close()


def curl(url, *args, resolve=None):
    cmd = ["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}"]
    if resolve:
        cmd += ["--resolve", resolve]
    r = subprocess.run(cmd + list(args) + [url], capture_output=True, text=True, timeout=15)
    return r.stdout.strip(), r.stderr


def peer_cert_names(port, server_hostname, ca):
    """The DNS SANs of the certificate the listener serves for an SNI (None:
    no SNI sent), via python's ssl without name checks."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=server_hostname) as t:
            return sorted(v for k, v in t.getpeercert().get("subjectAltName", ()) if k == "DNS")


# ---------------------------------------------------------------- termination


@pytest.fixture
def gateway(workdir, proxies, backend):
    """A TERMINATE listener with three server contexts: a.example.com (from
    files), *.b.example.com (inline PEM, client certificates required) and a
    default one without names."""
    d = os.path.join(workdir, "gw-pki")
    ca = pki.create_ca(d, "gw-ca")
    client_ca = pki.create_ca(d, "client-ca")
    a = _leaf(d, ca, "a", dns=["a.example.com"])
    b = _leaf(d, ca, "b", dns=["*.b.example.com"])
    dflt = _leaf(d, ca, "default", dns=["default.example.com"])
    client = _leaf(d, client_ca, "client", dns=["client.example.com"])
    port = free_port()
    cfg = simple_config(port, backend.port,
                        direction="outbound",
                        tls={"mode": "TERMINATE", "contexts": ["a", "b", "default"]})
    with open(b.cert) as f:
        b_cert = f.read()
    with open(b.key) as f:
        b_key = f.read()
    with open(client_ca.root) as f:
        client_ca_pem = f.read()
    cfg["tls"] = [
        {"name": "a", "type": "server", "cert": a.cert, "key": a.key,
         "server_names": ["a.example.com"]},
        {"name": "b", "type": "server", "cert_pem": b_cert, "key_pem": b_key,
         "ca_pem": client_ca_pem, "server_names": ["*.b.example.com"]},
        {"name": "default", "type": "server", "cert": dflt.cert, "key": dflt.key},
    ]
    p = proxies(cfg, "gw")
    return {"port": port, "ca": ca.root, "client": client, "proxy": p, "cfg": cfg}


def test_terminate_picks_certificate_by_sni(gateway, backend):
    port, ca = gateway["port"], gateway["ca"]
    # curl checks the host name against the certificate: only the right one passes.
    code, err = curl(f"https://a.example.com:{port}/a", "--cacert", ca,
                     resolve=f"a.example.com:{port}:127.0.0.1")
    assert code == "200", err
    assert backend.requests[-1]["path"] == "/a"
    assert ("x-forwarded-proto", "https") in backend.requests[-1]["headers"]
    assert peer_cert_names(port, "a.example.com", ca) == ["a.example.com"]
    assert peer_cert_names(port, "A.Example.COM", ca) == ["a.example.com"]
    # A name nobody lists, and no SNI at all: the context without names.
    assert peer_cert_names(port, "other.example.com", ca) == ["default.example.com"]
    assert peer_cert_names(port, None, ca) == ["default.example.com"]
    # HTTP/2 by ALPN over the terminated connection.
    code, err = curl(f"https://a.example.com:{port}/h2", "--http2", "--cacert", ca,
                     resolve=f"a.example.com:{port}:127.0.0.1")
    assert code == "200", err
    assert backend.requests[-1]["path"] == "/h2"


def test_terminate_mutual_requires_client_certificate(gateway, backend):
    port, ca, client = gateway["port"], gateway["ca"], gateway["client"]
    host = "api.b.example.com"
    n = len(backend.requests)
    code, _ = curl(f"https://{host}:{port}/nocert", "--cacert", ca,
                   resolve=f"{host}:{port}:127.0.0.1")
    assert code == "000"
    assert len(backend.requests) == n
    code, err = curl(f"https://{host}:{port}/cert", "--cacert", ca, "--cert", client.cert,
                     "--key", client.key, resolve=f"{host}:{port}:127.0.0.1")
    assert code == "200", err
    assert backend.requests[-1]["path"] == "/cert"
    # A certificate from another CA is refused too.
    other = _leaf(os.path.dirname(client.cert), pki.create_ca(os.path.dirname(client.cert), "x"),
                  "stranger", dns=["stranger.example.com"])
    code, _ = curl(f"https://{host}:{port}/stranger", "--cacert", ca, "--cert", other.cert,
                   "--key", other.key, resolve=f"{host}:{port}:127.0.0.1")
    assert code == "000"
    assert backend.requests[-1]["path"] == "/cert"
    # The wildcard covers names below b.example.com only.
    assert peer_cert_names(port, "b.example.com", ca) == ["default.example.com"]
    assert gateway["proxy"].metric("trellis_tls_handshake_errors_total", direction="inbound") >= 2


def test_terminate_refuses_plaintext(gateway, backend):
    n = len(backend.requests)
    with socket.create_connection(("127.0.0.1", gateway["port"]), timeout=5) as s:
        s.sendall(b"GET /plain HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
    assert b"HTTP/1.1" not in data
    assert len(backend.requests) == n


def test_terminate_unknown_sni_without_default(workdir, proxies, backend):
    d = os.path.join(workdir, "pki")
    ca = pki.create_ca(d, "ca")
    a = _leaf(d, ca, "a", dns=["a.example.com"])
    port = free_port()
    cfg = simple_config(port, backend.port, tls={"mode": "TERMINATE", "contexts": ["a"]})
    cfg["tls"] = [{"name": "a", "type": "server", "cert": a.cert, "key": a.key,
                   "server_names": ["a.example.com"]}]
    p = proxies(cfg, "gw")
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "nope.example.com", "-CAfile", ca.root],
                       input="", capture_output=True, text=True, timeout=15)
    assert r.returncode != 0
    assert "unrecognized name" in (r.stdout + r.stderr).lower()
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "a.example.com", "-CAfile", ca.root, "-verify_return_error"],
                       input="", capture_output=True, text=True, timeout=15)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Verify return code: 0 (ok)" in r.stdout
    assert p.metric("trellis_tls_handshake_errors_total", direction="inbound",
                    reason="unknown_sni") == 1


# ---------------------------------------------------------------- origination


@pytest.fixture
def upstream_pki(workdir):
    d = os.path.join(workdir, "up-pki")
    ca = pki.create_ca(d, "up-ca")
    return {
        "dir": d,
        "ca": ca,
        "server": _leaf(d, ca, "api", dns=["api.example.com"], uri="spiffe://example.org/api"),
        "client_ca": pki.create_ca(d, "client-ca"),
        "other_ca": pki.create_ca(d, "other-ca"),
    }


def origination_config(listen_port, backend_port, ctx, cluster_tls):
    cfg = simple_config(listen_port, backend_port)
    cfg["tls"] = [dict({"name": "ext", "type": "client"}, **ctx)]
    cfg["clusters"][0]["tls"] = dict({"context": "ext"}, **cluster_tls)
    return cfg


def get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_originate_simple_verifies_sni_name(upstream_pki, proxies, tls_backends):
    up = tls_backends(upstream_pki["server"].cert, upstream_pki["server"].key)
    port = free_port()
    p = proxies(origination_config(port, up.port, {"ca": upstream_pki["ca"].root},
                                   {"sni": "api.example.com"}))
    assert get(port, "/simple") == 200
    assert up.requests[-1]["path"] == "/simple"
    assert up.snis[-1] == "api.example.com"
    # An HTTP/1.1 client to a non-mesh server: no mesh hop header.
    assert "trellis-orig-proto" not in up.requests[-1]["headers"]
    assert p.metric("trellis_tls_handshake_errors_total", direction="outbound") == 0


def test_originate_subject_alt_names(upstream_pki, proxies, tls_backends):
    srv = upstream_pki["server"]
    up = tls_backends(srv.cert, srv.key)
    ca = upstream_pki["ca"].root
    # A URI SAN matches exactly; the SNI is then only sent.
    ok = free_port()
    proxies(origination_config(ok, up.port, {"ca": ca},
                               {"sni": "whatever.example.com",
                                "subject_alt_names": ["spiffe://example.org/api"]}), "uri")
    assert get(ok, "/uri") == 200
    assert up.snis[-1] == "whatever.example.com"
    # A name the certificate does not carry: refused in the handshake.
    bad = free_port()
    p = proxies(origination_config(bad, up.port, {"ca": ca},
                                   {"sni": "api.example.com",
                                    "subject_alt_names": ["web.example.com"]}), "wrong")
    n = len(up.requests)
    assert get(bad, "/wrong") == 503
    assert len(up.requests) == n
    assert p.metric("trellis_tls_handshake_errors_total", direction="outbound",
                    reason="wrong_san") >= 1
    # The default name is the SNI, which must then match too.
    sni_bad = free_port()
    proxies(origination_config(sni_bad, up.port, {"ca": ca}, {"sni": "web.example.com"}),
            "sni-wrong")
    assert get(sni_bad, "/sni-wrong") == 503
    assert len(up.requests) == n


def test_originate_unknown_ca_and_insecure_skip_verify(upstream_pki, proxies, tls_backends):
    srv = upstream_pki["server"]
    up = tls_backends(srv.cert, srv.key)
    other = upstream_pki["other_ca"].root
    port = free_port()
    p = proxies(origination_config(port, up.port, {"ca": other}, {"sni": "api.example.com"}),
                "strict")
    assert get(port, "/strict") == 503
    assert p.metric("trellis_tls_handshake_errors_total", direction="outbound",
                    reason="unknown_ca") >= 1
    insecure = free_port()
    proxies(origination_config(insecure, up.port, {"ca": other},
                               {"insecure_skip_verify": True}), "insecure")
    assert get(insecure, "/insecure") == 200
    assert up.requests[-1]["path"] == "/insecure"


def test_originate_mutual_presents_client_certificate(upstream_pki, proxies, tls_backends):
    srv = upstream_pki["server"]
    client_ca = upstream_pki["client_ca"]
    client = _leaf(upstream_pki["dir"], client_ca, "gw-client", dns=["gw.example.com"])
    up = tls_backends(srv.cert, srv.key, client_ca=client_ca.root)
    ca = upstream_pki["ca"].root
    without = free_port()
    proxies(origination_config(without, up.port, {"ca": ca}, {"sni": "api.example.com"}),
            "nocert")
    assert get(without, "/nocert") == 503
    assert up.requests == []
    port = free_port()
    with open(client.cert) as f:
        cert_pem = f.read()
    with open(client.key) as f:
        key_pem = f.read()
    proxies(origination_config(port, up.port, {"ca": ca, "cert_pem": cert_pem,
                                                "key_pem": key_pem},
                               {"sni": "api.example.com"}), "mutual")
    assert get(port, "/mutual") == 200
    assert up.requests[-1]["path"] == "/mutual"
    assert up.requests[-1]["client_cert"]


def test_check_refuses_unnamed_client_cluster(upstream_pki, workdir):
    cfg = origination_config(free_port(), free_port(), {"ca": upstream_pki["ca"].root}, {})
    path = os.path.join(workdir, "bad.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    from conftest import TRELLIS
    r = subprocess.run([TRELLIS, "proxy", "--check", "--config", path], capture_output=True,
                       text=True, timeout=15)
    assert r.returncode != 0
    assert "clusters[0].tls: a client context needs the server's name" in r.stderr + r.stdout


# ------------------------------------------- Istio: DestinationRule tls


def _b64_file(path):
    import base64
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def compile_model(workdir, docs, workload="default/client"):
    d = os.path.join(workdir, "mesh")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "mesh.yaml"), "w") as f:
        f.write("\n---\n".join(json.dumps(x) for x in docs) + "\n")
    from conftest import TRELLIS
    r = subprocess.run([TRELLIS, "ctl", "compile", d, "--workload", workload, "-o", "json",
                        "--outbound-ip", "127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


CLIENT_POD = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "client", "namespace": "default", "labels": {"app": "client"}},
              "spec": {"serviceAccountName": "client"}, "status": {"podIP": "127.0.0.1"}}


def external_service(port, backend_port):
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"hosts": ["api.example.com"], "location": "MESH_EXTERNAL",
                     "resolution": "STATIC",
                     "ports": [{"number": port, "name": "http", "protocol": "HTTP",
                                "targetPort": backend_port}],
                     "endpoints": [{"address": "127.0.0.1"}]}}


def destination_rule(tls):
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"host": "api.example.com", "trafficPolicy": {"tls": tls}}}


def tls_secret(name, ca=None, cert=None, key=None):
    data = {}
    if ca:
        data["ca.crt"] = _b64_file(ca)
    if cert:
        data["tls.crt"] = _b64_file(cert)
        data["tls.key"] = _b64_file(key)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": "default"}, "data": data}


def test_istio_destination_rule_simple_and_mutual(upstream_pki, workdir, proxies, tls_backends):
    srv = upstream_pki["server"]
    client_ca = upstream_pki["client_ca"]
    client = _leaf(upstream_pki["dir"], client_ca, "sidecar", dns=["client.example.com"])
    up = tls_backends(srv.cert, srv.key, client_ca=client_ca.root)
    port = free_port()
    base = [CLIENT_POD, external_service(port, up.port)]
    # SIMPLE to a server that wants a client certificate: refused, never plaintext.
    model, _ = compile_model(workdir, base + [
        destination_rule({"mode": "SIMPLE", "credentialName": "api-ca"}),
        tls_secret("api-ca", ca=upstream_pki["ca"].root)])
    assert model["clusters"][0]["tls"] == {"context": "simple|default/api-ca",
                                           "sni": "api.example.com"}
    p = proxies(model, "simple")
    assert get(port, "/simple") == 503
    assert up.requests == []
    p.stop()
    # MUTUAL: the Secret's certificate is presented, the server's name checked.
    model, _ = compile_model(workdir, base + [
        destination_rule({"mode": "MUTUAL", "credentialName": "api-client"}),
        tls_secret("api-client", ca=upstream_pki["ca"].root, cert=client.cert, key=client.key)])
    assert "-----BEGIN" in model["tls"][0]["key_pem"]
    proxies(model, "mutual")
    assert get(port, "/mutual") == 200
    assert up.requests[-1]["client_cert"]
    assert up.snis[-1] == "api.example.com"


def test_istio_destination_rule_names(upstream_pki, workdir, proxies, tls_backends):
    srv = upstream_pki["server"]
    up = tls_backends(srv.cert, srv.key)
    port = free_port()
    secret = tls_secret("api-ca", ca=upstream_pki["ca"].root)
    base = [CLIENT_POD, external_service(port, up.port), secret]
    # The server carries spiffe://example.org/api, not this name: refused in the handshake.
    model, _ = compile_model(workdir, base + [destination_rule(
        {"mode": "SIMPLE", "credentialName": "api-ca", "subjectAltNames": ["web.example.com"]})])
    p = proxies(model, "wrong")
    assert get(port, "/wrong") == 503
    assert p.metric("trellis_tls_handshake_errors_total", direction="outbound",
                    reason="wrong_san") >= 1
    p.stop()
    model, _ = compile_model(workdir, base + [destination_rule(
        {"mode": "SIMPLE", "credentialName": "api-ca",
         "subjectAltNames": ["spiffe://example.org/api"]})])
    proxies(model, "uri")
    assert get(port, "/uri") == 200
    assert up.requests[-1]["path"] == "/uri"


# ------------------------------------------------ Istio: Gateway TLS


def test_istio_gateway_terminates_tls(workdir, proxies):
    from conftest import RecordingBackend
    backend = RecordingBackend(host="127.0.0.2")
    try:
        d = os.path.join(workdir, "gw-pki")
        ca = pki.create_ca(d, "gw-ca")
        client_ca = pki.create_ca(d, "partner-ca")
        api = _leaf(d, ca, "api", dns=["api.example.com"])
        partner = _leaf(d, ca, "partner", dns=["partner.example.com"])
        client = _leaf(d, client_ca, "partner-client", dns=["client.partner.example.com"])
        https, http = free_port(), free_port()
        api_secret = tls_secret("api-cert", cert=api.cert, key=api.key)
        partner_secret = tls_secret("partner-cert", ca=client_ca.root, cert=partner.cert,
                                    key=partner.key)
        for sec in (api_secret, partner_secret):
            sec["metadata"]["namespace"] = "istio-system"
        docs = [
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "ingress", "namespace": "istio-system",
                          "labels": {"istio": "ingressgateway"}},
             "spec": {"serviceAccountName": "ingress"}, "status": {"podIP": "127.0.0.1"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
             "spec": {"selector": {"app": "web"},
                      "ports": [{"name": "http", "port": 8080, "targetPort": backend.port}]}},
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
             "status": {"podIP": "127.0.0.2"}},
            api_secret, partner_secret,
            {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
             "metadata": {"name": "gw", "namespace": "istio-system"},
             "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                 {"port": {"number": https, "name": "https", "protocol": "HTTPS"},
                  "hosts": ["api.example.com"],
                  "tls": {"mode": "SIMPLE", "credentialName": "api-cert"}},
                 {"port": {"number": https, "name": "https-partner", "protocol": "HTTPS"},
                  "hosts": ["partner.example.com"],
                  "tls": {"mode": "MUTUAL", "credentialName": "partner-cert"}},
                 {"port": {"number": http, "name": "http", "protocol": "HTTP"},
                  "hosts": ["api.example.com"], "tls": {"httpsRedirect": True}}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "web", "namespace": "default"},
             "spec": {"hosts": ["api.example.com", "partner.example.com"],
                      "gateways": ["istio-system/gw"],
                      "http": [{"route": [{"destination": {"host": "web.default.svc.cluster.local",
                                                           "port": {"number": 8080}}}]}]}},
        ]
        model, err = compile_model(workdir, docs, workload="istio-system/ingress")
        listeners = {l["name"]: l for l in model["listeners"]}
        assert listeners[f"gateway|{https}"]["tls"]["mode"] == "TERMINATE", model
        proxies(model, "gateway")
        code, e = curl(f"https://api.example.com:{https}/api", "--cacert", ca.root,
                       resolve=f"api.example.com:{https}:127.0.0.1")
        assert code == "200", e
        assert backend.requests[-1]["path"] == "/api"
        # MUTUAL: the partner's host needs a client certificate from its CA.
        n = len(backend.requests)
        code, _ = curl(f"https://partner.example.com:{https}/p", "--cacert", ca.root,
                       resolve=f"partner.example.com:{https}:127.0.0.1")
        assert code == "000"
        assert len(backend.requests) == n
        code, e = curl(f"https://partner.example.com:{https}/p", "--cacert", ca.root,
                       "--cert", client.cert, "--key", client.key,
                       resolve=f"partner.example.com:{https}:127.0.0.1")
        assert code == "200", e
        assert backend.requests[-1]["path"] == "/p"
        # httpsRedirect: plaintext gets 301 to https on the default port.
        r = subprocess.run(["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w",
                            "%{http_code} %{redirect_url}", "-H", "Host: api.example.com",
                            f"http://127.0.0.1:{http}/login?x=1"],
                           capture_output=True, text=True, timeout=15)
        assert r.stdout == "301 https://api.example.com/login?x=1", r.stdout + r.stderr
        assert backend.requests[-1]["path"] == "/p"
    finally:
        backend.close()


def test_terminate_inline_certificate_replaced_by_update(workdir, proxies, backend):
    """PUT /config/tls/NAME with other inline PEM: new handshakes get the new
    certificate (a Secret rotated by the control plane), the listener stays."""
    d = os.path.join(workdir, "pki")
    ca = pki.create_ca(d, "ca")
    old = _leaf(d, ca, "old", dns=["old.example.com"])
    new = _leaf(d, ca, "new", dns=["new.example.com"])

    def ctx(leaf):
        with open(leaf.cert) as f:
            cert = f.read()
        with open(leaf.key) as f:
            key = f.read()
        return {"name": "gw", "type": "server", "cert_pem": cert, "key_pem": key}

    port = free_port()
    cfg = simple_config(port, backend.port, tls={"mode": "TERMINATE", "contexts": ["gw"]})
    cfg["tls"] = [ctx(old)]
    p = proxies(cfg, "gw")
    assert peer_cert_names(port, "any.example.com", ca.root) == ["old.example.com"]
    gen = p.metric("trellis_config_generation")
    status, body = p.update("tls", "gw", value=ctx(new))
    assert status == 200, body
    # Workers adopt the update from their own loops: wait until all have.
    assert wait_generation(p, gen + 1) == gen + 1
    assert peer_cert_names(port, "any.example.com", ca.root) == ["new.example.com"]
    # A broken key is refused; the running certificate stays.
    broken = ctx(new)
    broken["key_pem"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    status, body = p.update("tls", "gw", value=broken)
    assert status != 200
    assert "key_pem" in body
    assert peer_cert_names(port, "any.example.com", ca.root) == ["new.example.com"]


def test_originate_changed_names_drop_pooled_connections(upstream_pki, proxies, tls_backends):
    """A pooled connection was verified under the cluster's old names: when
    an update changes them, it is not reused."""
    srv = upstream_pki["server"]
    up = tls_backends(srv.cert, srv.key)
    port = free_port()
    cfg = origination_config(port, up.port, {"ca": upstream_pki["ca"].root},
                             {"sni": "api.example.com"})
    p = proxies(cfg)
    assert get(port, "/first") == 200
    tls = {"context": "ext", "sni": "api.example.com", "subject_alt_names": ["web.example.com"]}
    gen = p.metric("trellis_config_generation")
    status, body = p.update("clusters", "backend", "tls", tls)
    assert status == 200, body
    assert wait_generation(p, gen + 1) == gen + 1
    n = len(up.requests)
    assert get(port, "/after") == 503
    assert len(up.requests) == n
    assert p.metric("trellis_tls_handshake_errors_total", direction="outbound",
                    reason="wrong_san") >= 1


def test_istio_sidecar_ingress_tls(workdir, proxies, backend):
    """A Sidecar ingress listener with tls SIMPLE (credentialName): the
    workload's proxy terminates TLS for callers outside the mesh with the
    Secret's certificate and passes plain HTTP to the application; plaintext
    is refused. MUTUAL asks for a client certificate of the Secret's CA."""
    d = os.path.join(workdir, "sc-pki")
    ca = pki.create_ca(d, "sc-ca")
    leaf = _leaf(d, ca, "api", dns=["api.example.com"])
    client_ca = pki.create_ca(d, "client-ca")
    client = _leaf(d, client_ca, "client", dns=["client.example.com"])
    ip, simple, mutual = "127.0.0.1", free_port(), free_port()
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "api-1", "namespace": "default", "labels": {"app": "api"}},
           "spec": {"serviceAccountName": "api"}, "status": {"podIP": ip}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "default"},
           "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80}]}}
    sidecar = {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
               "metadata": {"name": "api", "namespace": "default"},
               "spec": {"workloadSelector": {"labels": {"app": "api"}}, "ingress": [
                   {"port": {"number": simple, "protocol": "HTTP", "name": "https"},
                    "defaultEndpoint": f"127.0.0.1:{backend.port}",
                    "tls": {"mode": "SIMPLE", "credentialName": "api-cert"}},
                   {"port": {"number": mutual, "protocol": "HTTP", "name": "mtls"},
                    "defaultEndpoint": f"127.0.0.1:{backend.port}",
                    "tls": {"mode": "MUTUAL", "credentialName": "api-cert",
                            "caCertCredentialName": "client-ca"}}]}}
    pa = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
          "metadata": {"name": "default", "namespace": "default"},
          "spec": {"mtls": {"mode": "DISABLE"}}}
    model, err = compile_model(workdir, [pod, svc, sidecar, pa,
                                         tls_secret("api-cert", cert=leaf.cert, key=leaf.key),
                                         tls_secret("client-ca", ca=client_ca.root)],
                               workload="default/api-1")
    assert "ingress" not in err, err
    listeners = {l["name"]: l for l in model["listeners"]}
    assert listeners[f"inbound|{simple}"]["tls"]["mode"] == "TERMINATE"
    proxies(model, "api-sidecar")
    resolve = f"api.example.com:{simple}:{ip}"
    code, e = curl(f"https://api.example.com:{simple}/hello", "--cacert", ca.root, resolve=resolve)
    assert code == "200", e
    assert backend.requests[-1]["path"] == "/hello"
    code, _ = curl(f"http://{ip}:{simple}/plain")  # not TLS: refused
    assert code != "200"
    resolve = f"api.example.com:{mutual}:{ip}"
    code, _ = curl(f"https://api.example.com:{mutual}/m", "--cacert", ca.root, resolve=resolve)
    assert code != "200"  # no client certificate
    code, e = curl(f"https://api.example.com:{mutual}/m", "--cacert", ca.root, "--cert",
                   client.cert, "--key", client.key, resolve=resolve)
    assert code == "200", e


def test_istio_gateway_tls_server_terminates_to_tcp_routes(workdir, proxies, backend):
    """A Gateway server with protocol TLS and mode SIMPLE: the gateway
    terminates TLS with the Secret's certificate and relays the bytes by the
    bound VirtualService's tcp route (here to a plain HTTP backend, so curl
    can tell), as Istio's gateway does."""
    d = os.path.join(workdir, "gwt-pki")
    ca = pki.create_ca(d, "gwt-ca")
    leaf = _leaf(d, ca, "db", dns=["db.example.com"])
    port = free_port()
    gw_pod = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "gw-1", "namespace": "default",
                           "labels": {"istio": "ingressgateway"}},
              "spec": {"serviceAccountName": "gw"}, "status": {"podIP": "127.0.0.1"}}
    gateway = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
               "metadata": {"name": "gw", "namespace": "default"},
               "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                   {"port": {"number": port, "name": "tls", "protocol": "TLS"},
                    "hosts": ["*"], "tls": {"mode": "SIMPLE", "credentialName": "db-cert"}}]}}
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "db", "namespace": "default"},
          "spec": {"hosts": ["*"], "gateways": ["gw"], "tcp": [
              {"match": [{"port": port}],
               "route": [{"destination": {"host": "api.example.com", "port": {"number": 80}}}]}]}}
    model, err = compile_model(workdir, [gw_pod, gateway, vs,
                                         external_service(80, backend.port),
                                         tls_secret("db-cert", cert=leaf.cert, key=leaf.key)],
                               workload="default/gw-1")
    assert "servers" not in err, err
    (l,) = [x for x in model["listeners"] if x["name"] == f"gateway|{port}"]
    assert l["protocol"] == "tcp" and l["tls"]["mode"] == "TERMINATE"
    proxies(model, "gw")
    code, e = curl(f"https://db.example.com:{port}/over-tls", "--cacert", ca.root,
                   resolve=f"db.example.com:{port}:127.0.0.1")
    assert code == "200", e
    assert backend.requests[-1]["path"] == "/over-tls"
    code, _ = curl(f"http://127.0.0.1:{port}/plain")
    assert code != "200"
