"""PeerAuthentication end to end: Kubernetes and Istio YAML in a directory,
`trellis ctl compile` for the serving workload, its proxy running what was
printed in front of a real HTTP server (the application), and real clients
on each inbound port: plaintext curl, openssl s_client with and without the
mesh client certificate. STRICT must refuse plaintext, PERMISSIVE take both,
DISABLE take plaintext only, and a portLevelMtls entry change its port
alone."""
import json
import os
import subprocess

import pytest

import pki
from conftest import TRELLIS, Proxy, RecordingBackend, free_port

HTTP_CLOSE = b"GET /pa HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"

_net = [0]


def plaintext(ip, port):
    """curl over plaintext: the HTTP status, or 0 when the connection failed
    or closed without an answer."""
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                        "5", f"http://{ip}:{port}/pa"], capture_output=True, text=True,
                       timeout=15)
    return int(r.stdout or "0")


def mtls(ip, port, certs, with_cert=True):
    """openssl s_client (TLS 1.3, the mesh CA) and one GET: (verified, the
    HTTP status or 0, output)."""
    args = ["openssl", "s_client", "-connect", f"{ip}:{port}", "-ign_eof", "-CAfile",
            certs["ca"]]
    if with_cert:
        args += ["-cert", certs["client_cert"], "-key", certs["client_key"]]
    r = subprocess.run(args, input=HTTP_CLOSE, capture_output=True, timeout=15)
    out = (r.stdout + r.stderr).decode(errors="replace")
    status = 200 if "HTTP/1.1 200" in out else 0
    verified = "Verify return code: 0 (ok)" in out and "no peer certificate available" not in out
    return verified, status, out


class Workload:
    """The serving workload web-1 (namespace shop): a Service whose three
    ports target three container ports, each served by a RecordingBackend
    on 127.0.0.1 (the application), and the proxy compiled for it with its
    inbound listeners on the pod's own loopback address."""

    def __init__(self, workdir, certs, labels="app: web"):
        _net[0] += 1
        self.ip = f"127.{30 + os.getpid() % 200}.{_net[0] % 250}.1"
        self.workdir = workdir
        self.dir = os.path.join(workdir, "mesh")
        os.makedirs(self.dir)
        self.cert_dir = os.path.join(workdir, "certs")
        os.makedirs(self.cert_dir)
        for name, key in (("cert.pem", "server_cert"), ("key.pem", "server_key"),
                          ("ca.pem", "ca")):
            os.symlink(certs[key], os.path.join(self.cert_dir, name))
        self.apps = [RecordingBackend() for _ in range(3)]
        self.targets = [a.port for a in self.apps]
        self.svc_ports = [free_port() for _ in self.apps]
        self.proxy = None
        self.outbound_ip = self.ip.rsplit(".", 1)[0] + ".200"
        ports = ", ".join(f"{{name: http-{i}, port: {p}, targetPort: {t}}}"
                          for i, (p, t) in enumerate(zip(self.svc_ports, self.targets)))
        self.docs = [
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"
            f"spec:\n  selector: {{app: web}}\n  ports: [{ports}]\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop, labels: "
            f"{{{labels}}}}}\nspec: {{serviceAccountName: web}}\nstatus: {{podIP: {self.ip}}}\n",
        ]

    def policy(self, ns, name, spec, created=None):
        ts = f", creationTimestamp: \"{created}\"" if created else ""
        self.docs.append("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
                         f"metadata: {{name: {name}, namespace: {ns}{ts}}}\nspec: {spec}\n")

    def compile(self, workload="shop/web-1", cert_dir=None):
        with open(os.path.join(self.dir, "mesh.yaml"), "w") as f:
            f.write("---\n".join(self.docs))
        r = subprocess.run([TRELLIS, "ctl", "compile", self.dir, "--workload", workload,
                            "--cert-dir", cert_dir or self.cert_dir, "--outbound-ip",
                            self.outbound_ip, "-o", "json"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout), r.stderr

    def start(self):
        model, stderr = self.compile()
        self.proxy = Proxy(self.workdir, model, name="web-proxy")
        self.proxy.start()
        return model, stderr

    def modes(self, model):
        """The tls mode of each target port's inbound listener."""
        out = {}
        for listener in model["listeners"]:
            if listener["name"].startswith("inbound|"):
                out[int(listener["name"].split("|")[1])] = \
                    listener.get("tls", {}).get("mode", "DISABLE")
        return [out[t] for t in self.targets]

    def close(self):
        if self.proxy:
            self.proxy.stop()
        for a in self.apps:
            a.close()


@pytest.fixture
def web(workdir, certs):
    w = Workload(workdir, certs)
    yield w
    w.close()


def test_mesh_strict_with_port_level_overrides(web, certs):
    """Mesh-wide STRICT (root namespace), the workload's policy UNSET with
    portLevelMtls: port 2 PERMISSIVE, port 3 DISABLE. Port 1 keeps STRICT."""
    web.policy("istio-system", "default", "{mtls: {mode: STRICT}}")
    p1, p2, p3 = web.targets
    web.policy("shop", "web", "{selector: {matchLabels: {app: web}}, mtls: {mode: UNSET}, "
               f"portLevelMtls: {{{p2}: {{mode: PERMISSIVE}}, {p3}: {{mode: DISABLE}}}}}}")
    model, stderr = web.start()
    assert stderr == ""
    assert web.modes(model) == ["STRICT", "PERMISSIVE", "DISABLE"]
    app1, app2, app3 = web.apps

    # STRICT: plaintext refused before the application sees anything; mTLS
    # with the mesh certificate works; TLS without a client certificate fails.
    assert plaintext(web.ip, p1) == 0
    assert app1.connections == 0
    verified, status, out = mtls(web.ip, p1, certs)
    assert verified and status == 200, out
    verified, status, out = mtls(web.ip, p1, certs, with_cert=False)
    assert status == 0, out
    assert len(app1.requests) == 1 and app1.requests[0]["path"] == "/pa"

    # PERMISSIVE: both.
    assert plaintext(web.ip, p2) == 200
    verified, status, out = mtls(web.ip, p2, certs)
    assert verified and status == 200, out
    assert len(app2.requests) == 2

    # DISABLE: plaintext only; a TLS handshake gets no certificate and no answer.
    assert plaintext(web.ip, p3) == 200
    verified, status, out = mtls(web.ip, p3, certs)
    assert not verified and status == 0, out
    assert len(app3.requests) == 1


def test_namespace_over_mesh_and_oldest_wins(web, certs):
    """Namespace DISABLE over mesh STRICT; of two namespace-wide policies
    the older acts (PERMISSIVE), the newer is reported by name."""
    web.policy("istio-system", "default", "{mtls: {mode: STRICT}}")
    web.policy("shop", "newer", "{mtls: {mode: DISABLE}}", created="2025-06-01T00:00:00Z")
    web.policy("shop", "older", "{mtls: {mode: PERMISSIVE}}", created="2024-06-01T00:00:00Z")
    model, stderr = web.start()
    assert "PeerAuthentication shop/newer" in stderr and "shop/older" in stderr, stderr
    assert "ignored" in stderr
    assert web.modes(model) == ["PERMISSIVE"] * 3
    p1 = web.targets[0]
    assert plaintext(web.ip, p1) == 200
    verified, status, out = mtls(web.ip, p1, certs)
    assert verified and status == 200, out


def test_workload_strict_over_namespace_disable(web, certs):
    """A workload policy STRICT beats the namespace's DISABLE on every port."""
    web.policy("shop", "default", "{mtls: {mode: DISABLE}}")
    web.policy("shop", "web-strict", "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}")
    model, stderr = web.start()
    assert stderr == ""
    assert web.modes(model) == ["STRICT"] * 3
    for t in web.targets:
        assert plaintext(web.ip, t) == 0
    verified, status, out = mtls(web.ip, web.targets[2], certs)
    assert verified and status == 200, out
    assert sum(a.connections for a in web.apps) == 1


def test_port_level_without_selector_is_refused(web):
    """Istio's validation refuses portLevelMtls on a namespace-wide policy:
    an error naming the field, and no model."""
    web.policy("shop", "default", f"{{portLevelMtls: {{{web.targets[0]}: {{mode: STRICT}}}}}}")
    with open(os.path.join(web.dir, "mesh.yaml"), "w") as f:
        f.write("---\n".join(web.docs))
    r = subprocess.run([TRELLIS, "ctl", "compile", web.dir, "--workload", "shop/web-1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "error: PeerAuthentication shop/default: spec.portLevelMtls: port-level mTLS needs " \
        "a selector" in r.stderr, r.stderr
    assert r.stdout == ""


def test_client_follows_the_servers_policy(workdir, pkidir):
    """Two proxies: a client in the mesh calls web, whose policy is STRICT
    with port 3 DISABLE. The client's compiled clusters speak mTLS to port 1
    and plaintext to port 3 (Istio's auto mTLS), so both calls succeed; the
    server's proxy saw a mesh identity on port 1 only."""
    ca = pki.create_ca(pkidir)
    server = pki.create_leaf(pkidir, ca, "web", ns="shop", sa="web")
    client = pki.create_leaf(pkidir, ca, "client", ns="shop", sa="client")
    web = Workload(workdir, {"server_cert": server.cert, "server_key": server.key,
                             "ca": ca.cert_path},
                   labels="app: web, security.istio.io/tlsMode: istio")
    client_proxy = None
    try:
        p3 = web.targets[2]
        web.policy("shop", "web", "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, "
                   f"portLevelMtls: {{{p3}: {{mode: DISABLE}}}}}}")
        web.docs.append("apiVersion: v1\nkind: Pod\nmetadata: {name: client-1, namespace: shop, "
                        "labels: {app: client, security.istio.io/tlsMode: istio}}\n"
                        "spec: {serviceAccountName: client}\nstatus: {podIP: 127.0.0.1}\n")
        model, stderr = web.start()
        assert web.modes(model) == ["STRICT", "STRICT", "DISABLE"], stderr

        client_certs = os.path.join(workdir, "client-certs")
        os.makedirs(client_certs)
        for name, path in (("cert.pem", client.cert), ("key.pem", client.key),
                           ("ca.pem", ca.cert_path)):
            os.symlink(path, os.path.join(client_certs, name))
        cmodel, stderr = web.compile("shop/client-1", client_certs)
        assert stderr == ""
        tls = {c["name"]: c.get("tls") for c in cmodel["clusters"]}
        host = "web.shop.svc.cluster.local"
        sp1, _, sp3 = web.svc_ports
        assert tls[f"outbound|{sp1}||{host}"]["server_ids"] == [
            "spiffe://cluster.local/ns/shop/sa/web"]
        assert tls[f"outbound|{sp3}||{host}"] is None
        client_proxy = Proxy(workdir, cmodel, name="client-proxy")
        client_proxy.start()

        for port, app in ((sp1, web.apps[0]), (sp3, web.apps[2])):
            r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                "--max-time", "5", "-H", "Host: web",
                                f"http://{web.outbound_ip}:{port}/hop"],
                               capture_output=True, text=True, timeout=15)
            assert r.stdout == "200", (port, r.stderr, web.proxy.read_log())
            assert [q["path"] for q in app.requests] == ["/hop"]
        assert web.proxy.metric("istio_requests_total", reporter="destination",
                                connection_security_policy="mutual_tls") == 1
    finally:
        if client_proxy:
            client_proxy.stop()
        web.close()
