"""TLS passthrough by SNI (listeners[].sni_routes; Istio VirtualService `tls`
routes and Gateway servers with tls.mode PASSTHROUGH).

Backends are real TLS servers (`openssl s_server`) on loopback, each with a
certificate of its own (subject CN=backend-a, CN=backend-b); the default
destination is a plain TCP server that greets each connection with
"default". Clients are `openssl s_client -servername X`, `curl --resolve` and
python's ssl module. The proxy never terminates the TLS: which backend a
client reached is read from the certificate subject the client sees (the
handshake verifies that certificate against the backends' own), and the
access log names the cluster."""
import json
import math
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import TRELLIS, ThreadedTCPServer, free_port, sanitizer_checked, stop_process, \
    wait_port  # noqa: E402

NAMES = ["backend-a", "backend-b"]


class Greeter(ThreadedTCPServer):
    """Plain TCP: sends its name and a newline, then reads until the client closes."""

    def __init__(self, name):
        self.name = name
        super().__init__()

    def serve(self, c):
        try:
            c.settimeout(10)
            c.sendall(self.name.encode() + b"\n")
            while c.recv(4096):
                pass
        except OSError:
            pass
        finally:
            c.close()


@pytest.fixture
def checked(proxies):
    yield from sanitizer_checked(proxies)


def make_cert(d, name):
    cert, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=DNS:*.example.com,DNS:*.b.example.com",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_backends(workdir):
    """Two `openssl s_server -WWW` on loopback, each serving name.txt (its
    name) with its own certificate: {name: (port, cert)}; plus bundle.pem,
    both certificates, for the clients to verify with."""
    procs, out = [], {}
    for name in NAMES:
        d = os.path.join(workdir, name)
        os.makedirs(d)
        cert, key = make_cert(d, name)
        with open(os.path.join(d, "name.txt"), "w") as f:
            f.write(name + "\n")
        port = free_port()
        procs.append(subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cert, "-key", key,
             "-WWW", "-quiet", "-naccept", "100000"],
            cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        out[name] = (port, cert)
    bundle = os.path.join(workdir, "bundle.pem")
    with open(bundle, "w") as b:
        for name in NAMES:
            with open(out[name][1]) as f:
                b.write(f.read())
    for name in NAMES:
        wait_port(out[name][0])
    yield out, bundle
    for p in procs:
        stop_process(p)


@pytest.fixture
def greeter():
    g = Greeter("default")
    yield g
    g.close()


def clusters_for(backends, greeter):
    cl = [{"name": n, "endpoints": [{"address": f"127.0.0.1:{backends[n][0]}"}]} for n in NAMES]
    if greeter is not None:
        cl.append({"name": "default", "endpoints": [{"address": f"127.0.0.1:{greeter.port}"}]})
    return cl


def native_config(port, backends, greeter, log, default=True, **timeouts):
    listener = {"name": "pass", "address": f"127.0.0.1:{port}", "direction": "outbound",
                "protocol": "tcp",
                "sni_routes": [
                    {"server_names": ["a.example.com"], "tcp_cluster": "backend-a"},
                    {"server_names": ["*.b.example.com"],
                     "tcp_clusters": [{"cluster": "backend-b", "weight": 3},
                                      {"cluster": "backend-a", "weight": 1}]},
                ]}
    if default:
        listener["tcp_cluster"] = "default"
    if timeouts:
        listener["timeouts"] = timeouts
    return {"listeners": [listener], "clusters": clusters_for(backends, greeter),
            "access_log": {"enabled": True, "path": log}}


def s_client_subject(port, sni):
    """The subject CN the server presented to `openssl s_client` (sni None:
    -noservername), or None if the handshake failed."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"]
    args += ["-servername", sni] if sni else ["-noservername"]
    r = subprocess.run(args, input=b"", capture_output=True, timeout=20)
    for line in r.stdout.decode(errors="replace").splitlines():
        if line.startswith("subject="):
            return line.split("CN", 1)[1].lstrip(" =").strip()
    return None


def py_subject(port, sni, bundle, timeout=5.0):
    """python ssl: the verified peer certificate's CN, or None if the proxy
    closed the connection during the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(bundle)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=sni) as s:
                return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
        except (ssl.SSLError, ConnectionResetError, ssl.SSLEOFError, OSError) as e:
            if isinstance(e, ssl.SSLCertVerificationError):
                raise
            return None


def client_hello(sni):
    """A real ClientHello (python's OpenSSL) as bytes."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = ctx.wrap_bio(i, o, server_hostname=sni)
    try:
        s.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return o.read()


def raw_exchange(port, send, timeout=5.0):
    """Sends `send` (if any), returns what comes back until EOF or timeout
    (b"" when the proxy closes without a byte)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if send:
            s.sendall(send)
        data = b""
        try:
            while not data.endswith(b"\n") and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return data


def access_lines(path, n, timeout=10.0):
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
        if len(lines) >= n:
            break
        time.sleep(0.05)
    assert len(lines) >= n, f"{len(lines)} access log lines, expected {n}"
    return lines


def curl_name(port, host, bundle):
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", bundle, "--resolve",
                        f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/name.txt", "-v"],
                       capture_output=True, timeout=20)
    subject = [line for line in r.stderr.decode(errors="replace").splitlines()
               if "subject:" in line]
    return r.stdout.decode().strip(), subject


def test_sni_picks_the_backend(checked, tls_backends, greeter, workdir):
    backends, bundle = tls_backends
    port, log = free_port(), os.path.join(workdir, "access.log")
    checked(native_config(port, backends, greeter, log))
    # openssl s_client: the certificate subject it sees is the chosen backend's.
    assert s_client_subject(port, "a.example.com") == "backend-a"
    assert s_client_subject(port, "A.Example.COM") == "backend-a"
    # curl: the full TLS session to the backend, a request and its answer.
    body, subject = curl_name(port, "a.example.com", bundle)
    assert body == "backend-a" and any("CN=backend-a" in s for s in subject), (body, subject)
    # python ssl, verifying against the two backends' certificates.
    assert py_subject(port, "a.example.com", bundle) == "backend-a"
    lines = access_lines(log, 4)
    assert {e["cluster"] for e in lines} == {"backend-a"}, lines
    assert all(e["response_flags"] in ("-", "DC", "UC") for e in lines), [e["response_flags"] for e in lines]


def test_rules_change_live(checked, tls_backends, greeter, workdir):
    """PUT /config/listeners/NAME/sni_routes replaces the rules: new
    connections follow them; an invalid update changes nothing."""
    backends, bundle = tls_backends
    port, log = free_port(), os.path.join(workdir, "access.log")
    p = checked(native_config(port, backends, greeter, log))
    assert py_subject(port, "a.example.com", bundle) == "backend-a"
    status, body = p.update("listeners", "pass", "sni_routes", [
        {"server_names": ["a.example.com"], "tcp_cluster": "backend-b"}])
    assert status == 200, body
    assert py_subject(port, "a.example.com", bundle) == "backend-b"
    assert raw_exchange(port, client_hello("x.b.example.com")) == b"default\n"
    status, body = p.update("listeners", "pass", "sni_routes", [
        {"server_names": ["a.example.com"], "tcp_cluster": "nope"}])
    assert status == 400 and "unknown cluster" in str(body), body
    assert py_subject(port, "a.example.com", bundle) == "backend-b"


def test_weighted_split_by_sni(checked, tls_backends, greeter, workdir):
    backends, bundle = tls_backends
    port, log = free_port(), os.path.join(workdir, "access.log")
    checked(native_config(port, backends, greeter, log))
    n, counts = 200, {}
    for i in range(n):
        who = py_subject(port, f"h{i}.b.example.com", bundle)
        counts[who] = counts.get(who, 0) + 1
    assert set(counts) <= {"backend-a", "backend-b"}, counts
    b = counts.get("backend-b", 0)
    mean, sd = n * 0.75, math.sqrt(n * 0.75 * 0.25)
    assert abs(b - mean) <= 5 * sd, counts
    lines = access_lines(log, n)
    logged = {}
    for e in lines:
        logged[e["cluster"]] = logged.get(e["cluster"], 0) + 1
    assert logged == counts, (logged, counts)
    # b.example.com itself is not below b.example.com: the default.
    assert raw_exchange(port, client_hello("b.example.com")) == b"default\n"


def test_default_takes_the_rest(checked, tls_backends, greeter, workdir):
    backends, bundle = tls_backends
    port, log = free_port(), os.path.join(workdir, "access.log")
    checked(native_config(port, backends, greeter, log, detect="300ms"))
    # Unknown SNI and no SNI: the default (a plain greeter: the ClientHello
    # reached it untouched and it answered in plaintext).
    assert raw_exchange(port, client_hello("zzz.example.net")) == b"default\n"
    assert raw_exchange(port, client_hello(None)) == b"default\n"
    # Not TLS at all.
    assert raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b"default\n"
    # A client that sends nothing: after timeouts.detect it is relayed to
    # the default (a server-first protocol), which greets it.
    t0 = time.time()
    assert raw_exchange(port, None) == b"default\n"
    assert 0.25 <= time.time() - t0 < 3, time.time() - t0
    # A ClientHello sent after the wait does not move the connection.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        time.sleep(0.6)
        s.sendall(client_hello("a.example.com"))
        assert s.recv(64) == b"default\n"
    # A malformed ClientHello (the handshake type changed): closed, never relayed.
    hello = bytearray(client_hello("a.example.com"))
    hello[5] = 2
    conns = greeter.connections
    assert raw_exchange(port, bytes(hello)) == b""
    lines = access_lines(log, 6)  # in the order the connections ended
    assert sorted(str(e["cluster"]) for e in lines) == ["None"] + ["default"] * 5, lines
    assert [e["response_flags"] for e in lines if e["cluster"] is None] == ["DPE"], lines
    assert greeter.connections == conns
    # Real TLS clients with another name reach the default too: s_client
    # fails its handshake there (the greeter does not speak TLS).
    assert s_client_subject(port, "other.example.org") is None


def test_no_default_closes(checked, tls_backends, greeter, workdir):
    backends, bundle = tls_backends
    port, log = free_port(), os.path.join(workdir, "access.log")
    checked(native_config(port, backends, None, log, default=False, request="1s"))
    assert py_subject(port, "a.example.com", bundle) == "backend-a"
    assert py_subject(port, "zzz.example.net", bundle) is None
    assert py_subject(port, None, bundle) is None
    assert s_client_subject(port, "nope.example.com") is None
    assert raw_exchange(port, b"hello\n") == b""
    t0 = time.time()
    assert raw_exchange(port, None) == b""  # silence: closed after timeouts.request
    assert 0.9 <= time.time() - t0 < 4, time.time() - t0
    lines = access_lines(log, 6)  # in the order the connections ended
    assert [e["cluster"] for e in lines].count("backend-a") == 1, lines
    assert [e["response_flags"] for e in lines if e["cluster"] is None] == ["NR"] * 5, lines


# ------------------------------------------------------------ from Istio YAML

def compile_istio(workdir, docs, workload):
    """`trellis ctl compile` of docs (YAML text) for workload: the model."""
    d = os.path.join(workdir, "istio")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "mesh.yaml"), "w") as f:
        f.write(docs)
    r = subprocess.run([TRELLIS, "ctl", "compile", d, "--workload", workload, "-o", "json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def service_entries(backends, port):
    """ServiceEntries for the two TLS backends on one service port."""
    out = ""
    for name in NAMES:
        out += f"""---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.internal]
  ports: [{{number: {port}, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {backends[name][0]}}}}}]
"""
    return out


def test_istio_sidecar_tls_routes(checked, tls_backends, workdir):
    """A sidecar's outbound TLS port: a VirtualService's tls rules and the
    services' own names, by SNI, the TLS untouched."""
    backends, bundle = tls_backends
    port, log = free_port(), os.path.join(workdir, "access.log")
    docs = """---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partners, namespace: default}
spec:
  hosts: ["*.b.example.com"]
  ports: [{number: %d, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: partners, namespace: default}
spec:
  hosts: ["*.b.example.com"]
  tls:
  - match: [{sniHosts: [a.b.example.com], port: %d}]
    route: [{destination: {host: backend-a.internal}}]
  - match: [{sniHosts: ["*.b.example.com"]}]
    route:
    - {destination: {host: backend-b.internal}, weight: 75}
    - {destination: {host: backend-a.internal}, weight: 25}
""" % (port, port) + service_entries(backends, port)
    model, findings = compile_istio(workdir, docs, "default/client")
    model["access_log"] = {"enabled": True, "path": log}
    checked(model)
    # backend-a's and backend-b's own names (a client asking for the service)
    assert py_subject(port, "backend-a.internal", bundle) == "backend-a"
    assert s_client_subject(port, "backend-b.internal") == "backend-b"
    # the tls rules
    assert s_client_subject(port, "a.b.example.com") == "backend-a"
    body, subject = curl_name(port, "a.b.example.com", bundle)
    assert body == "backend-a" and any("CN=backend-a" in s for s in subject), (body, subject)
    n, counts = 120, {}
    for i in range(n):
        who = py_subject(port, f"h{i}.b.example.com", bundle)
        counts[who] = counts.get(who, 0) + 1
    mean, sd = n * 0.75, math.sqrt(n * 0.75 * 0.25)
    assert set(counts) <= set(NAMES) and abs(counts.get("backend-b", 0) - mean) <= 5 * sd, counts
    lines = access_lines(log, n + 4)
    assert all(e["cluster"].startswith("outbound|") for e in lines), lines


def test_istio_gateway_passthrough(checked, tls_backends, workdir):
    """A Gateway server with tls.mode PASSTHROUGH: the bound VirtualService's
    tls rules, by SNI; a name no rule takes, and no SNI, are closed."""
    backends, bundle = tls_backends
    port, log = free_port(), os.path.join(workdir, "access.log")
    docs = """---
apiVersion: v1
kind: Pod
metadata: {name: ingress, namespace: istio-system, labels: {istio: ingressgateway}}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: pass, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %d, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: default}
spec:
  hosts: [a.example.com, "*.b.example.com", other.org]
  gateways: [istio-system/pass]
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: backend-a.internal}}]
  - match: [{sniHosts: ["*.b.example.com"], port: %d}]
    route: [{destination: {host: backend-b.internal}}]
  - match: [{sniHosts: [other.org]}]
    route: [{destination: {host: backend-b.internal}}]
""" % (port, port) + service_entries(backends, 443)
    model, findings = compile_istio(workdir, docs, "istio-system/ingress")
    model["access_log"] = {"enabled": True, "path": log}
    checked(model)
    assert s_client_subject(port, "a.example.com") == "backend-a"
    assert py_subject(port, "x.b.example.com", bundle) == "backend-b"
    body, subject = curl_name(port, "y.b.example.com", bundle)
    assert body == "backend-b" and any("CN=backend-b" in s for s in subject), (body, subject)
    # other.org is not a host of the server: not routed; nor unknown names, no SNI
    assert py_subject(port, "other.org", bundle) is None
    assert py_subject(port, "c.example.com", bundle) is None
    assert py_subject(port, None, bundle) is None
    lines = access_lines(log, 6)
    assert [e["response_flags"] for e in lines].count("NR") == 3, lines


def test_istio_gateway_auto_passthrough(checked, tls_backends, workdir):
    """AUTO_PASSTHROUGH (an east-west gateway): the SNI names the
    destination, outbound_.PORT_.SUBSET_.HOST, for every registry service a
    host of the server covers; nothing else is routed."""
    backends, bundle = tls_backends
    port, log = free_port(), os.path.join(workdir, "access.log")
    docs = """---
apiVersion: v1
kind: Pod
metadata: {name: ew, namespace: istio-system, labels: {istio: eastwestgateway}}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: %d, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.internal"]
""" % port + service_entries(backends, 443)
    model, findings = compile_istio(workdir, docs, "istio-system/ew")
    model["access_log"] = {"enabled": True, "path": log}
    checked(model)
    assert s_client_subject(port, "outbound_.443_._.backend-a.internal") == "backend-a"
    assert py_subject(port, "outbound_.443_._.backend-b.internal", bundle) == "backend-b"
    assert py_subject(port, "backend-a.internal", bundle) is None
    assert py_subject(port, "outbound_.444_._.backend-a.internal", bundle) is None
    lines = access_lines(log, 4)
    assert sorted(str(e["cluster"]) for e in lines) == [
        "None", "None", "outbound_.443_._.backend-a.internal",
        "outbound_.443_._.backend-b.internal"], lines


def test_authorization_sees_the_passed_through_sni(checked, tls_backends, greeter, workdir):
    """Authorization's connection.sni on a passthrough listener is the
    ClientHello's server name, as the proxy peeked it (it terminates no
    TLS): a DENY on one name closes those connections before any byte goes
    upstream; the other names pass."""
    backends, bundle = tls_backends
    port, log = free_port(), os.path.join(workdir, "access.log")
    cfg = native_config(port, backends, greeter, log)
    cfg["listeners"][0]["authorization"] = {"policies": [
        {"name": "ns/no-a", "action": "DENY",
         "rules": [{"when": [{"key": "connection.sni", "values": ["a.example.com"]}]}]}]}
    checked(cfg)
    assert py_subject(port, "a.example.com", bundle) is None
    assert py_subject(port, "x.b.example.com", bundle) in ("backend-a", "backend-b")
    lines = access_lines(log, 2)
    denied = [e for e in lines if e["response_flags"] == "RBAC"]
    assert len(denied) == 1, lines
    assert denied[0].get("authz_policy") == "ns/no-a", denied
    passed = [e for e in lines if e["response_flags"] != "RBAC"]
    assert len(passed) == 1 and passed[0]["cluster"] in ("backend-a", "backend-b"), lines
