"""mTLS between two trellis proxies, with real certificates and real clients.

Topology: client -> trellis A (outbound, plaintext HTTP listener) -> mTLS ->
trellis B (inbound listener, tls {mode, context}) -> RecordingBackend.
"""
import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, os.path.dirname(__file__))
import pki  # noqa: E402
from conftest import free_port  # noqa: E402

TD = "cluster.local"
CLIENT_ID = f"spiffe://{TD}/ns/default/sa/client"
CLIENT2_ID = f"spiffe://{TD}/ns/default/sa/client2"
SERVER_ID = f"spiffe://{TD}/ns/default/sa/server"
OTHER_ID = f"spiffe://{TD}/ns/default/sa/not-the-server"


# ---------------------------------------------------------------- helpers

def load_ca(certs, d):
    """The standard CA of the `certs` fixture as a pki.CA, to issue more leaves."""
    with open(certs["ca"], "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(certs["ca_key"], "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return pki.CA(name="ca", cert_path=certs["ca"], key_path=certs["ca_key"], root=certs["ca"],
                  cert=cert, key=key)


@pytest.fixture(scope="module")
def special(certs, tmp_path_factory):
    """Deliberately broken client certificates, all but `foreign` signed by the standard CA."""
    d = str(tmp_path_factory.mktemp("special-pki"))
    ca = load_ca(certs, d)
    return {
        "ca": ca,
        "client2": pki.create_leaf(d, ca, "client2", sa="client2"),
        "expired": pki.create_expired_leaf(d, ca, "expired", sa="client"),
        "nouri": pki.create_leaf_without_uri(d, ca, "nouri"),
        "wrongtd": pki.create_wrong_trust_domain_leaf(d, ca, "wrongtd", sa="client"),
        "foreign": pki.Issued(cert=certs["foreign_client_cert"], key=certs["foreign_client_key"],
                              ca=certs["foreign_ca"], spiffe_id=CLIENT_ID),
    }


def tls_ctx(name, cert, key, ca, **kw):
    ctx = {"name": name, "cert": cert, "key": key, "ca": ca, "trust_domain": TD}
    ctx.update(kw)
    return ctx


def node(sa, service=None):
    n = {"id": f"{sa}-0", "workload": sa, "namespace": "default",
         "principal": f"spiffe://{TD}/ns/default/sa/{sa}"}
    if service:
        n["service"] = service
    return n


def one_route(cluster):
    return [{"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": cluster}]


def config_b(port, backend_port, cert, key, ca, mode="STRICT", authz=None, protocol="http",
             tcp_cluster=None):
    """Inbound side: mTLS listener in front of the local workload."""
    listener = {"name": "inbound", "address": f"127.0.0.1:{port}", "direction": "inbound",
                "protocol": protocol, "tls": {"mode": mode, "context": "mesh"}}
    if protocol == "tcp":
        listener["tcp_cluster"] = tcp_cluster or "local"
    else:
        listener["route_table"] = "inbound"
    if authz is not None:
        listener["authorization"] = {"rules": authz}
    return {
        "node": node("server", "server.default.svc.cluster.local"),
        "tls": [tls_ctx("mesh", cert, key, ca)],
        "listeners": [listener],
        "route_tables": [{"name": "inbound", "virtual_hosts": [
            {"name": "local", "domains": ["*"], "routes": one_route("local")}]}],
        "clusters": [{"name": "local", "service": "server.default.svc.cluster.local",
                      "workload": "server", "namespace": "default",
                      "endpoints": [{"address": f"127.0.0.1:{backend_port}"}]}],
    }


def config_a(port, b_port, cert, key, ca, server_ids=(SERVER_ID,), sa="client"):
    """Outbound side: plaintext listener for the local app, mTLS to B."""
    return {
        "node": node(sa),
        "tls": [tls_ctx("mesh", cert, key, ca)],
        "listeners": [{"name": "outbound", "address": f"127.0.0.1:{port}", "direction": "outbound",
                       "protocol": "http", "route_table": "outbound"}],
        "route_tables": [{"name": "outbound", "virtual_hosts": [
            {"name": "server", "domains": ["*"], "routes": one_route("server")}]}],
        "clusters": [{"name": "server", "service": "server.default.svc.cluster.local",
                      "workload": "server", "namespace": "default",
                      "tls": {"context": "mesh", "server_ids": list(server_ids)},
                      "endpoints": [{"address": f"127.0.0.1:{b_port}"}]}],
    }


def mesh(proxies, certs, backend, mode="STRICT", server_ids=(SERVER_ID,), authz=None,
         b_files=None, a_files=None):
    a_port, b_port = free_port(), free_port()
    bc, bk = b_files or (certs["server_cert"], certs["server_key"])
    ac, ak = a_files or (certs["client_cert"], certs["client_key"])
    b = proxies(config_b(b_port, backend.port, bc, bk, certs["ca"], mode=mode, authz=authz), "B")
    a = proxies(config_a(a_port, b_port, ac, ak, certs["ca"], server_ids=server_ids), "A")
    return a, b, a_port, b_port


def get(port, path="/", headers=None, method="GET", timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def raw_exchange(port, data, timeout=3.0):
    """Send bytes, read until the peer closes (or timeout). Returns (bytes, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            return b"", True
        out = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return out, True
            except socket.timeout:
                return out, False
            if not chunk:
                return out, True
            out += chunk
        return out, False


HTTP_CLOSE = b"GET /hello HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n"


def s_client(port, cert=None, key=None, ca=None, stdin=HTTP_CLOSE, extra=(), timeout=10):
    """openssl s_client against 127.0.0.1:port; returns (rc, stdout+stderr)."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof"]
    if ca:
        args += ["-CAfile", ca]
    if cert:
        args += ["-cert", cert, "-key", key]
    args += list(extra)
    r = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def wait_metric(proxy, name, target, timeout=3.0, **labels):
    """The value of a metric once it reaches `target` (or after `timeout`).
    Counters are updated by the worker right after the response is written,
    so a scrape racing with the client's read may see the previous value."""
    deadline = time.time() + timeout
    v = proxy.metric(name, **labels)
    while v < target and time.time() < deadline:
        time.sleep(0.05)
        v = proxy.metric(name, **labels)
    return v


def peer_serial(out):
    """Serial number of the first certificate in s_client -showcerts output."""
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    assert m, out
    return x509.load_pem_x509_certificate(m.group(0).encode()).serial_number


# ---------------------------------------------------------------- tests

def test_hop_works_and_metrics_show_mtls(proxies, certs, backend):
    a, b, a_port, b_port = mesh(proxies, certs, backend)
    status, headers, body = get(a_port, "/hello?x=1", headers={"x-test": "mesh"})
    assert status == 200, body
    assert len(backend.requests) == 1
    req = backend.requests[0]
    assert req["method"] == "GET" and req["path"] == "/hello?x=1"
    assert ("x-test", "mesh") in req["headers"]

    assert wait_metric(b, "istio_requests_total", 1, reporter="destination",
                       source_principal=CLIENT_ID, connection_security_policy="mutual_tls",
                       response_code="200") == 1, b.metrics()
    assert b.metric("istio_requests_total", reporter="source") == 0
    assert wait_metric(a, "istio_requests_total", 1, reporter="source",
                       source_principal=CLIENT_ID, destination_principal=SERVER_ID,
                       connection_security_policy="unknown",  # Istio: client side reports unknown
                       response_code="200") == 1, a.metrics()
    assert a.metric("istio_requests_total", reporter="destination") == 0
    assert b.metric("trellis_tls_handshake_errors_total") == 0
    assert a.metric("trellis_tls_handshake_errors_total") == 0


def test_strict_refuses_plaintext(proxies, certs, backend):
    a, b, a_port, b_port = mesh(proxies, certs, backend)
    before = b.metric("trellis_tls_plaintext_refused_total")
    out, closed = raw_exchange(b_port, b"GET / HTTP/1.1\r\nHost: server\r\n\r\n")
    assert out == b"" and closed
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                        f"http://127.0.0.1:{b_port}/curl"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0, r.stdout
    assert r.stdout == "000"
    assert wait_metric(b, "trellis_tls_plaintext_refused_total", before + 2) == before + 2
    assert backend.requests == []
    assert backend.connections == 0
    assert b.metric("istio_requests_total") == 0


def test_s_client_with_client_cert(proxies, certs, backend):
    a, b, a_port, b_port = mesh(proxies, certs, backend)
    rc, out = s_client(b_port, certs["client_cert"], certs["client_key"], certs["ca"])
    assert "Verify return code: 0 (ok)" in out, out
    assert "HTTP/1.1 200" in out, out
    assert "TLSv1.3" in out
    assert len(backend.requests) == 1 and backend.requests[0]["path"] == "/hello"
    assert wait_metric(b, "istio_requests_total", 1, reporter="destination",
                       source_principal=CLIENT_ID, connection_security_policy="mutual_tls",
                       response_code="200") == 1
    assert b.metric("trellis_tls_handshake_errors_total") == 0


@pytest.mark.parametrize("which,reason,alert", [
    ("none", "no_peer_cert", "alert certificate required"),
    ("foreign", "unknown_ca", "alert unknown ca"),
    ("expired", "expired", "alert certificate expired"),
    ("nouri", "no_spiffe_id", "alert bad certificate"),
    ("wrongtd", "wrong_trust_domain", "alert bad certificate"),
])
def test_bad_client_cert_rejected(proxies, certs, backend, special, which, reason, alert):
    a, b, a_port, b_port = mesh(proxies, certs, backend)
    if which == "none":
        rc, out = s_client(b_port, ca=certs["ca"])
    else:
        leaf = special[which]
        rc, out = s_client(b_port, leaf.cert, leaf.key, certs["ca"])
    # TLS 1.3: the client finishes first; B's alert ends the connection before any data.
    assert rc != 0, out
    assert "HTTP/1.1" not in out, out
    assert alert in out, out
    assert wait_metric(b, "trellis_tls_handshake_errors_total", 1, direction="inbound",
                       reason=reason) == 1, b.metrics()
    assert wait_metric(b, "trellis_tls_handshake_errors_total", 1) == 1, b.metrics()
    assert backend.requests == []
    assert b.metric("istio_requests_total") == 0


def test_wrong_server_spiffe_id(proxies, certs, backend):
    a, b, a_port, b_port = mesh(proxies, certs, backend, server_ids=(OTHER_ID,))
    status, headers, body = get(a_port, "/x")
    assert status == 503, body
    assert backend.requests == []
    assert b"wrong_spiffe_id" in body
    assert a.metric("trellis_tls_handshake_errors_total", direction="outbound",
                    reason="wrong_spiffe_id") >= 1, a.metrics()
    assert wait_metric(a, "istio_requests_total", 1, reporter="source", response_code="503",
                       response_flags="UF") == 1, a.metrics()
    assert b.metric("istio_requests_total") == 0


def test_permissive_accepts_plaintext_and_mtls(proxies, certs, backend):
    a, b, a_port, b_port = mesh(proxies, certs, backend, mode="PERMISSIVE")
    status, _, body = get(b_port, "/plain")
    assert status == 200, body
    status, _, body = get(a_port, "/mtls")
    assert status == 200, body
    assert [r["path"] for r in backend.requests] == ["/plain", "/mtls"]
    assert wait_metric(b, "istio_requests_total", 1, reporter="destination",
                       connection_security_policy="none", response_code="200") == 1, b.metrics()
    assert wait_metric(b, "istio_requests_total", 1, reporter="destination",
                       source_principal=CLIENT_ID, connection_security_policy="mutual_tls",
                       response_code="200") == 1, b.metrics()
    assert b.metric("trellis_tls_plaintext_refused_total") == 0


def test_authorization_by_principal_and_path(proxies, certs, backend, special):
    rules = [{"action": "ALLOW", "principals": [CLIENT_ID], "paths": ["/api/*"]}]
    a, b, a_port, b_port = mesh(proxies, certs, backend, authz=rules)
    assert get(a_port, "/api/x")[0] == 200
    status, _, body = get(a_port, "/admin")
    assert status == 403, body
    assert [r["path"] for r in backend.requests] == ["/api/x"]

    # A second outbound proxy with the client2 identity.
    c2 = special["client2"]
    a2_port = free_port()
    proxies(config_a(a2_port, b_port, c2.cert, c2.key, certs["ca"], sa="client2"), "A2")
    status, _, body = get(a2_port, "/api/x")
    assert status == 403, body
    assert [r["path"] for r in backend.requests] == ["/api/x"]
    assert wait_metric(b, "istio_requests_total", 1, source_principal=CLIENT_ID,
                       response_code="403", response_flags="RBAC") == 1, b.metrics()
    assert wait_metric(b, "istio_requests_total", 1, source_principal=CLIENT2_ID,
                       response_code="403", response_flags="RBAC") == 1, b.metrics()
    assert wait_metric(b, "istio_requests_total", 1, response_code="200") == 1


def test_certificate_rotation_under_load(proxies, certs, backend, special, pkidir):
    ca = special["ca"]
    bdir, adir = os.path.join(pkidir, "b"), os.path.join(pkidir, "a")
    b0 = pki.create_leaf(bdir, ca, "server", sa="server")
    a0 = pki.create_leaf(adir, ca, "client", sa="client")
    a, b, a_port, b_port = mesh(proxies, certs, backend, b_files=(b0.cert, b0.key),
                                a_files=(a0.cert, a0.key))

    rc, out = s_client(b_port, certs["client_cert"], certs["client_key"], certs["ca"],
                       extra=["-showcerts"])
    old_serial = peer_serial(out)
    with open(b0.cert, "rb") as f:
        assert old_serial == x509.load_pem_x509_certificate(f.read()).serial_number

    stop = threading.Event()
    ok, failures = [0], []

    def load(i):
        conn = None
        end = time.time() + 8
        while not stop.is_set() and time.time() < end:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", a_port, timeout=5)
                conn.request("GET", f"/load/{i}")
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    ok[0] += 1
                else:
                    failures.append(r.status)
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(repr(e))
                conn = None
        if conn:
            conn.close()

    def rotate(directory, name, sa):
        staging = os.path.join(directory, "next")
        new = pki.create_leaf(staging, ca, name, sa=sa)
        # key then cert, each atomically; a poll between the two sees a
        # mismatched pair, is rejected and retried on the next poll.
        os.replace(new.key, os.path.join(directory, f"{name}.key"))
        os.replace(new.cert, os.path.join(directory, f"{name}.pem"))
        with open(os.path.join(directory, f"{name}.pem"), "rb") as f:
            return x509.load_pem_x509_certificate(f.read()).serial_number

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        new_b_serial = rotate(bdir, "server", "server")
        time.sleep(1.5)
        rotate(adir, "client", "client")
        time.sleep(2.5)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == [], failures[:10]
    assert ok[0] > 50

    # New handshakes present the new certificate.
    rc, out = s_client(b_port, certs["client_cert"], certs["client_key"], certs["ca"],
                       extra=["-showcerts"])
    assert "Verify return code: 0 (ok)" in out
    assert peer_serial(out) == new_b_serial != old_serial
    assert b.metric("trellis_config_reloads_total", result="ok") >= 1
    assert a.metric("trellis_config_reloads_total", result="ok") >= 1
    # Still works end to end after rotation, with fresh connections.
    status, _, _ = get(a_port, "/after")
    assert status == 200
    assert b.metric("trellis_tls_handshake_errors_total") == 0, b.metrics()
    assert a.metric("trellis_tls_handshake_errors_total") == 0, a.metrics()


def test_session_resumption(proxies, certs, backend, workdir):
    a, b, a_port, b_port = mesh(proxies, certs, backend)
    sess = os.path.join(workdir, "sess.pem")
    rc, out = s_client(b_port, certs["client_cert"], certs["client_key"], certs["ca"],
                       extra=["-sess_out", sess])
    assert "HTTP/1.1 200" in out, out
    assert "New, TLSv1.3" in out, out
    assert os.path.getsize(sess) > 0
    rc, out = s_client(b_port, certs["client_cert"], certs["client_key"], certs["ca"],
                       extra=["-sess_in", sess])
    assert "Reused, TLSv1.3" in out, out
    assert "HTTP/1.1 200" in out, out
    assert len(backend.requests) == 2
    # The resumed connection keeps the client's identity.
    assert wait_metric(b, "istio_requests_total", 2, source_principal=CLIENT_ID,
                    connection_security_policy="mutual_tls", response_code="200") == 2


def test_permissive_authorization_denies_plaintext_when_principals_required(proxies, certs,
                                                                            backend):
    rules = [{"action": "ALLOW", "principals": [CLIENT_ID]}]
    a, b, a_port, b_port = mesh(proxies, certs, backend, mode="PERMISSIVE", authz=rules)
    status, _, body = get(b_port, "/plain")
    assert status == 403, body
    assert get(a_port, "/mtls")[0] == 200
    assert [r["path"] for r in backend.requests] == ["/mtls"]
    assert wait_metric(b, "istio_requests_total", 1, connection_security_policy="none",
                       response_code="403") == 1


@pytest.mark.parametrize("which,reason", [("expired", "expired"), ("foreign", "unknown_ca"),
                                          ("wrongtd", "wrong_trust_domain")])
def test_bad_server_cert_rejected_by_outbound(proxies, certs, backend, special, pkidir, which,
                                              reason):
    ca = special["ca"]
    if which == "expired":
        leaf = pki.create_expired_leaf(pkidir, ca, "srv-expired", sa="server")
        b_ca = certs["ca"]
    elif which == "foreign":
        leaf = pki.create_foreign_leaf(pkidir, "srv-foreign", sa="server")
        b_ca = leaf.ca  # B trusts its own CA, so it starts; A does not trust it
    else:
        leaf = pki.create_wrong_trust_domain_leaf(pkidir, ca, "srv-wrongtd", sa="server")
        b_ca = certs["ca"]
    a_port, b_port = free_port(), free_port()
    cfg_b = config_b(b_port, backend.port, leaf.cert, leaf.key, b_ca)
    cfg_b["tls"][0].pop("trust_domain")
    proxies(cfg_b, "B")
    server_ids = () if which == "wrongtd" else (SERVER_ID,)
    a = proxies(config_a(a_port, b_port, certs["client_cert"], certs["client_key"], certs["ca"],
                         server_ids=server_ids), "A")
    status, _, body = get(a_port, "/x")
    assert status == 503, body
    assert reason.encode() in body, body
    assert backend.requests == []
    assert wait_metric(a, "trellis_tls_handshake_errors_total", 1, direction="outbound",
                       reason=reason) >= 1, a.metrics()
    assert wait_metric(a, "istio_requests_total", 1, response_code="503",
                       response_flags="UF") == 1


def test_source_metrics_keep_server_principal_on_reused_connections(proxies, certs, backend):
    a, b, a_port, b_port = mesh(proxies, certs, backend)
    for i in range(3):
        assert get(a_port, f"/r/{i}")[0] == 200
    assert wait_metric(a, "istio_requests_total", 3, reporter="source", response_code="200") == 3
    assert a.metric("trellis_upstream_requests_reused_total") == 2  # the pool was used
    assert a.metric("istio_requests_total", reporter="source", destination_principal=SERVER_ID,
                    response_code="200") == 3, a.metrics()


def test_rotation_with_mismatched_pair_keeps_old_certificate(proxies, certs, backend, special,
                                                            pkidir):
    """A cert written without its key (a rotation caught half way) must not
    break the listener: the reload is rejected, the old pair keeps serving,
    and the pair is picked up once the key arrives."""
    ca = special["ca"]
    bdir = os.path.join(pkidir, "b")
    b0 = pki.create_leaf(bdir, ca, "server", sa="server")
    a, b, a_port, b_port = mesh(proxies, certs, backend, b_files=(b0.cert, b0.key))
    rc, out = s_client(b_port, certs["client_cert"], certs["client_key"], certs["ca"],
                       extra=["-showcerts"])
    old_serial = peer_serial(out)

    new = pki.create_leaf(os.path.join(bdir, "next"), ca, "server", sa="server")
    os.replace(new.cert, b0.cert)  # the key is still the old one
    assert wait_metric(b, "trellis_config_reloads_total", 1, timeout=4,
                       result="rejected") >= 1
    assert "does not match" in b.read_log()
    assert get(a_port, "/during")[0] == 200
    rc, out = s_client(b_port, certs["client_cert"], certs["client_key"], certs["ca"],
                       extra=["-showcerts"])
    assert "Verify return code: 0 (ok)" in out
    assert peer_serial(out) == old_serial

    os.replace(new.key, b0.key)
    assert wait_metric(b, "trellis_config_reloads_total", 1, timeout=4, result="ok") >= 1
    rc, out = s_client(b_port, certs["client_cert"], certs["client_key"], certs["ca"],
                       extra=["-showcerts"])
    assert "Verify return code: 0 (ok)" in out
    assert peer_serial(out) != old_serial
    with open(b0.cert, "rb") as f:
        assert peer_serial(out) == x509.load_pem_x509_certificate(f.read()).serial_number
    assert get(a_port, "/after")[0] == 200
