"""trellis control: models and identities pushed to proxies (issue 10).

Real processes on loopback: one `trellis control` watching a directory of
Kubernetes/Istio YAML, proxies started with --control (no config file, no
certificate files), python backends as the applications. Each test owns a
/24 of 127.0.0.0/8: pods at .10-.99, the client's outbound listeners at
.200, applications behind their sidecar at .1xx.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from conftest import TRELLIS, RecordingBackend, free_port, stop_process, wait_port

_net = [0]


def pod(name, ip, labels, sa=None, ns="default"):
    # injected pods carry Istio's tlsMode label: their peers use mTLS to them
    labels = dict(labels, **{"security.istio.io/tlsMode": "istio"})
    lab = ", ".join(f"{k}: {v}" for k, v in labels.items())
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, "
            f"labels: {{{lab}}}}}\nspec: {{serviceAccountName: {sa or name}}}\n"
            f"status: {{podIP: {ip}}}\n")


def service(name, port, selector, ns="default"):
    sel = ", ".join(f"{k}: {v}" for k, v in selector.items())
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  selector: {{{sel}}}\n  ports: [{{name: http, port: {port}}}]\n")


def split_vs(w1, w2):
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {{host: web, subset: v1}}
      weight: {w1}
    - destination: {{host: web, subset: v2}}
      weight: {w2}
"""


SUBSETS = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"""


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Control:
    """A running `trellis control` over DIR/resources with its CA in DIR/state."""

    def __init__(self, workdir, lifetime=None):
        self.workdir = workdir
        self.res = os.path.join(workdir, "resources")
        self.state = os.path.join(workdir, "state")
        os.makedirs(self.res, exist_ok=True)
        self.port = free_port()
        self.lifetime = lifetime
        self.log_path = os.path.join(workdir, "control.log")
        self.proc = None

    def start(self):
        args = [TRELLIS, "control", "--resources", self.res, "--state", self.state,
                "--listen", f"127.0.0.1:{self.port}"]
        if self.lifetime:
            args += ["--cert-lifetime", self.lifetime]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, timeout=10)
        return self

    def stop(self):
        stop_process(self.proc)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def token(self, ns, sa):
        r = subprocess.run([TRELLIS, "ctl", "ca", "token", self.state, f"{ns}/{sa}"],
                           capture_output=True, text=True, timeout=10, check=True)
        return r.stdout.strip()

    def status(self):
        r = subprocess.run([TRELLIS, "ctl", "status", "--state", self.state, "-o", "json"],
                           capture_output=True, text=True, timeout=10, check=True)
        return json.loads(r.stdout)

    def proxy_status(self, workload):
        for p in self.status()["proxies"]:
            if p["workload"] == workload:
                return p
        return None


class CPProxy:
    """`trellis proxy --control ...` for one workload."""

    def __init__(self, control, workdir, workload, token, outbound_ip=None, app_ip=None,
                 name=None):
        self.control, self.workload = control, workload
        name = name or workload.replace("/", "-")
        self.token_file = os.path.join(workdir, f"{name}.token")
        with open(self.token_file, "w") as f:
            f.write(token + "\n")
        os.chmod(self.token_file, 0o600)
        self.admin_port = free_port()
        self.admin_socket = os.path.join(workdir, f"{name}.admin.sock")
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.args = [TRELLIS, "proxy", "--control", f"127.0.0.1:{control.port}",
                     "--workload", workload, "--token-file", self.token_file,
                     "--ca-bundle", os.path.join(control.state, "root-cert.pem"),
                     "--admin", f"127.0.0.1:{self.admin_port}",
                     "--admin-socket", self.admin_socket, "--workers", "1"]
        if outbound_ip:
            self.args += ["--outbound-ip", outbound_ip]
        if app_ip:
            self.args += ["--app-ip", app_ip]
        self.proc = None

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"proxy exited:\n{self.read_log()}"
            try:
                r = requests.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.workload} not ready:\n{self.read_log()}")

    def metrics(self):
        return requests.get(f"http://127.0.0.1:{self.admin_port}/stats/prometheus",
                            timeout=5).text

    def metric(self, name, **labels):
        total = 0.0
        for line in self.metrics().splitlines():
            if not (line.startswith(name + "{") or line.startswith(name + " ")):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self):
        stop_process(self.proc)

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""


class Mesh:
    """A control plane, a client workload (proxy only) and web pods v1/v2,
    each an app behind its own proxy (mTLS between the proxies)."""

    def __init__(self, workdir, lifetime=None):
        _net[0] += 1
        self.base = f"127.{30 + os.getpid() % 150}.{_net[0] % 250}"
        self.workdir = workdir
        self.control = Control(workdir, lifetime)
        self.port = 9080
        self.apps, self.proxies = [], []
        self.client = None

    def write_base(self, weights=(100, 0)):
        docs = [pod("client", f"{self.base}.5", {"app": "client"}),
                pod("web-v1", f"{self.base}.10", {"app": "web", "version": "v1"}, sa="web"),
                pod("web-v2", f"{self.base}.11", {"app": "web", "version": "v2"}, sa="web"),
                service("web", self.port, {"app": "web"}), SUBSETS, STRICT]
        write(os.path.join(self.control.res, "mesh.yaml"), "\n---\n".join(docs))
        write(os.path.join(self.control.res, "routes.yaml"), split_vs(*weights))

    def start(self, weights=(100, 0)):
        self.write_base(weights)
        self.control.start()
        for i, v in ((10, "v1"), (11, "v2")):
            app = RecordingBackend(port=self.port, host=f"{self.base}.1{i}")
            app.version = v
            self.apps.append(app)
            p = CPProxy(self.control, self.workdir, f"default/web-{v}",
                        self.control.token("default", "web"), app_ip=f"{self.base}.1{i}")
            self.proxies.append(p.start())
        self.client = CPProxy(self.control, self.workdir, "default/client",
                              self.control.token("default", "client"),
                              outbound_ip=f"{self.base}.200")
        self.proxies.append(self.client.start())
        return self

    def get(self, path="/", timeout=5):
        return requests.get(f"http://{self.base}.200:{self.port}{path}",
                            headers={"Host": "web"}, timeout=timeout)

    def close(self):
        for p in self.proxies:
            p.stop()
        self.control.stop()
        for a in self.apps:
            a.close()


@pytest.fixture
def mesh(workdir):
    m = Mesh(workdir)
    yield m
    m.close()


def hits(mesh):
    return {a.version: len(a.requests) for a in mesh.apps}


def test_models_and_identities_from_the_control_plane(mesh):
    mesh.start()
    r = mesh.get("/first")
    assert r.status_code == 200
    assert hits(mesh) == {"v1": 1, "v2": 0}
    # mutual TLS between the sidecars, with identities the control plane issued
    v1 = mesh.proxies[0]
    assert v1.metric("istio_requests_total", reporter="destination",
                     connection_security_policy="mutual_tls",
                     source_principal="spiffe://cluster.local/ns/default/sa/client") == 1
    st = mesh.control.status()
    assert st["trust_domain"] == "cluster.local"
    by = {p["workload"]: p for p in st["proxies"]}
    assert set(by) == {"default/client", "default/web-v1", "default/web-v2"}
    for p in by.values():
        assert p["connected"] is True
        assert p["version"] > 0 and p["acked"] == p["version"]
        assert p["cert_expiry"] == "ok" and p["cert_not_after"] > time.time() + 23 * 3600
    assert by["default/client"]["identity"] == "spiffe://cluster.local/ns/default/sa/client"
    # the table form, as an operator reads it
    out = subprocess.run([TRELLIS, "ctl", "status", "--state", mesh.control.state],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert re.search(r"default/web-v1\s+spiffe://cluster.local/ns/default/sa/web\s+up", out.stdout)
    # no certificate or key file anywhere: the key stayed in the proxy
    assert not [f for f in os.listdir(mesh.workdir) if f.endswith(("key.pem", "cert.pem"))]
    assert mesh.client.metric("trellis_control_connected") == 1
    assert mesh.client.metric("trellis_control_certificates_total") == 1


def test_proxy_config_is_what_the_proxy_runs(mesh):
    mesh.start(weights=(90, 10))
    r = subprocess.run([TRELLIS, "ctl", "proxy-config", "default/client", "--state",
                        mesh.control.state], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    dump = json.loads(r.stdout)
    text = json.dumps(dump)
    # the proxy's own model: its identity from the control plane, the canary split
    assert '"from_control_plane": true' in text
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text
    assert '"weight": 90' in text and '"weight": 10' in text
    # an edit shows in what the proxy runs once it is applied
    gen = mesh.client.metric("trellis_config_generation")
    write(os.path.join(mesh.control.res, "routes.yaml"), split_vs(30, 70))
    deadline = time.time() + 5
    while time.time() < deadline and mesh.client.metric("trellis_config_generation") == gen:
        time.sleep(0.05)
    r = subprocess.run([TRELLIS, "ctl", "proxy-config", "default/client", "--state",
                        mesh.control.state], capture_output=True, text=True, timeout=10)
    assert '"weight": 30' in r.stdout and '"weight": 70' in r.stdout
    r = subprocess.run([TRELLIS, "ctl", "proxy-config", "default/nobody", "--state",
                        mesh.control.state], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "knows no proxy of default/nobody" in r.stderr


def test_edit_changes_routing_within_a_second_without_failures(mesh):
    mesh.start(weights=(100, 0))
    statuses, stop = [], threading.Event()
    seen = []  # (time, version)

    def load():
        s = requests.Session()
        deadline = time.time() + 20
        while not stop.is_set() and time.time() < deadline:
            try:
                r = s.get(f"http://{mesh.base}.200:{mesh.port}/load", headers={"Host": "web"},
                          timeout=5)
                statuses.append(r.status_code)
            except requests.RequestException as e:
                statuses.append(repr(e))
            time.sleep(0.005)

    t = threading.Thread(target=load)
    t.start()
    time.sleep(1.0)
    before = hits(mesh)
    assert before["v1"] > 0 and before["v2"] == 0
    edited = time.time()
    write(os.path.join(mesh.control.res, "routes.yaml"), split_vs(0, 100))
    # within a second, new requests go to v2 only
    deadline = edited + 1.0
    while time.time() < deadline and hits(mesh)["v2"] == 0:
        time.sleep(0.01)
    took = time.time() - edited
    assert hits(mesh)["v2"] > 0, "routing did not change within 1 s"
    time.sleep(0.3)
    v1_after = hits(mesh)["v1"]
    time.sleep(0.7)
    stop.set()
    t.join()
    assert hits(mesh)["v1"] == v1_after, "requests still reached v1 after the change"
    assert statuses and all(s == 200 for s in statuses), \
        f"failed requests: {[s for s in statuses if s != 200][:5]}"
    print(f"routing changed {took * 1000:.0f} ms after the edit; {len(statuses)} requests, 0 failed")


def generation_lines(control):
    """(generation, objects changed, reach, proxies compiled, proxies, registry) per change"""
    pat = (r"resources generation (\d+): .*?(\d+) changed \((any workload|by host)\)"
           r".*?registry (kept|built).*?(\d+) of (\d+) proxies compiled")
    return [(gen, n, reach, compiled, total, reg)
            for gen, n, reach, reg, compiled, total in re.findall(pat, control.read_log())]


def wait_generation(control, after, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = [g for g in generation_lines(control) if int(g[0]) > after]
        if lines:
            return lines[-1]
        time.sleep(0.05)
    pytest.fail(f"no resources generation after {after} in the control log")


def test_a_change_recompiles_only_the_proxies_it_reaches(mesh):
    mesh.start(weights=(100, 0))
    gen = int(generation_lines(mesh.control)[-1][0])
    # The web pods call nothing (a Sidecar scopes them to a namespace
    # without services): a new kind of object reaches every proxy.
    write(os.path.join(mesh.control.res, "scope.yaml"), """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web, namespace: default}
spec:
  workloadSelector: {labels: {app: web}}
  egress: [{hosts: ["istio-system/*"]}]
""")
    g = wait_generation(mesh.control, gen)
    assert g[2] == "any workload" and g[3:] == ("3", "3", "built"), g
    gen = int(g[0])
    v1 = mesh.control.proxy_status("default/web-v1")["version"]
    client = mesh.control.proxy_status("default/client")["version"]
    # The canary's weights are about host web, which only the client routes
    # to now: one compile, one push, and the split is in force.
    write(os.path.join(mesh.control.res, "routes.yaml"), split_vs(0, 100))
    # (a VirtualService edited in place: the registry is kept, not rebuilt)
    g = wait_generation(mesh.control, gen)
    assert g[1:] == ("1", "by host", "1", "3", "kept"), g
    deadline = time.time() + 5
    while time.time() < deadline and \
            mesh.control.proxy_status("default/client")["acked"] == client:
        time.sleep(0.05)
    assert mesh.control.proxy_status("default/client")["acked"] > client
    assert mesh.control.proxy_status("default/web-v1")["version"] == v1
    for _ in range(5):
        assert mesh.get("/after").status_code == 200
    assert hits(mesh)["v2"] == 5


def test_yaml_error_keeps_last_good_and_other_files(mesh):
    mesh.start(weights=(0, 100))
    assert mesh.get().status_code == 200 and hits(mesh)["v2"] == 1
    v = mesh.control.proxy_status("default/client")["version"]
    # a broken edit of routes.yaml: nothing changes for that file
    write(os.path.join(mesh.control.res, "routes.yaml"), split_vs(100, 0) + "  - {broken: [\n")
    time.sleep(1.0)
    log = mesh.control.read_log()
    assert re.search(r"routes\.yaml:\d+:\d+: error: ", log), log[-2000:]
    assert "routes.yaml: warning: has errors: its last version without errors stays in force" in log
    assert mesh.control.proxy_status("default/client")["version"] == v
    for _ in range(5):
        assert mesh.get().status_code == 200
    assert hits(mesh) == {"v1": 0, "v2": 6}
    # another file's change still applies: a new service in a new file
    write(os.path.join(mesh.control.res, "z-extra.yaml"), service("extra", 9091, {"app": "web"}))
    deadline = time.time() + 3
    while time.time() < deadline and mesh.control.proxy_status("default/client")["version"] == v:
        time.sleep(0.05)
    assert mesh.control.proxy_status("default/client")["version"] > v
    # and routes.yaml still says v2
    assert mesh.get().status_code == 200 and hits(mesh)["v2"] == 7
    # fixing the file applies it
    write(os.path.join(mesh.control.res, "routes.yaml"), split_vs(100, 0))
    deadline = time.time() + 3
    while time.time() < deadline:
        mesh.get()
        if hits(mesh)["v1"] > 0:
            break
        time.sleep(0.05)
    assert hits(mesh)["v1"] > 0


def test_control_plane_loss_and_restart_do_not_disturb_traffic(mesh):
    mesh.start()
    gens = [p.metric("trellis_config_generation") for p in mesh.proxies]
    mesh.control.kill()
    for _ in range(10):
        assert mesh.get().status_code == 200
    deadline = time.time() + 5  # the proxy notices the lost connection on its own loop
    while time.time() < deadline and mesh.client.metric("trellis_control_connected") != 0:
        time.sleep(0.05)
    assert mesh.client.metric("trellis_control_connected") == 0
    mesh.control.start()
    deadline = time.time() + 10
    while time.time() < deadline and mesh.client.metric("trellis_control_connected") == 0:
        time.sleep(0.1)
    assert mesh.client.metric("trellis_control_connected") == 1
    # the same model again: acknowledged, nothing rebuilt
    for p in mesh.proxies:
        deadline = time.time() + 10
        while time.time() < deadline and p.metric("trellis_control_connected") == 0:
            time.sleep(0.1)
    assert [p.metric("trellis_config_generation") for p in mesh.proxies] == gens
    for _ in range(10):
        assert mesh.get().status_code == 200
    deadline = time.time() + 5  # the ACKs reach the control plane a moment later
    while True:
        st = {p["workload"]: p for p in mesh.control.status()["proxies"]}
        done = all(p["connected"] and p["acked"] == p["version"] for p in st.values())
        if done or time.time() > deadline:
            break
        time.sleep(0.05)
    assert done, st


def test_wrong_token_gets_no_certificate(mesh):
    mesh.start()
    bad = CPProxy(mesh.control, mesh.workdir, "default/client", "0" * 64,
                  outbound_ip=f"{mesh.base}.201", name="impostor")
    bad.start(wait=False)
    try:
        time.sleep(1.5)
        assert bad.proc.poll() is None  # it waits, retrying, serving nothing
        assert "certificate refused" in mesh.control.read_log()
        assert "certificate refused (status 401)" in bad.read_log()
        assert "trellis proxy ready" not in bad.read_log()
    finally:
        bad.stop()


def test_nack_keeps_the_proxy_serving(mesh):
    mesh.start()
    assert mesh.get().status_code == 200
    # A new service on a port the client's outbound address cannot bind
    # (something else holds it): the control plane's model is valid, the
    # proxy refuses it and says why.
    blocker_port = free_port()
    import socket
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind((f"{mesh.base}.200", blocker_port))
    blocker.listen(1)
    try:
        with open(os.path.join(mesh.control.res, "mesh.yaml"), "a") as f:
            f.write("\n---\n" + service("blocked", blocker_port, {"app": "web"}))
        deadline = time.time() + 5
        st = None
        while time.time() < deadline:
            st = mesh.control.proxy_status("default/client")
            if st["nacked"] and st["nacked"] > st["acked"]:
                break
            time.sleep(0.05)
        assert st["nacked"] > st["acked"], st
        assert "cannot listen on" in st["nack_message"]
        assert mesh.client.metric("trellis_control_models_total", result="nack") == 1
        # still serving with the last good model
        for _ in range(5):
            assert mesh.get().status_code == 200
        out = subprocess.run([TRELLIS, "ctl", "status", "--state", mesh.control.state],
                             capture_output=True, text=True, timeout=10)
        assert "cannot listen on" in out.stdout
    finally:
        blocker.close()


def test_certificates_rotate_under_load_without_failures(workdir):
    m = Mesh(workdir, lifetime="20s")
    try:
        m.start()
        statuses, stop = [], threading.Event()

        def load():
            s = requests.Session()
            deadline = time.time() + 40
            while not stop.is_set() and time.time() < deadline:
                try:
                    statuses.append(s.get(f"http://{m.base}.200:{m.port}/", headers={"Host": "web"},
                                          timeout=5).status_code)
                except requests.RequestException as e:
                    statuses.append(repr(e))
                # new connections too, so fresh handshakes use the new certificates
                if len(statuses) % 20 == 0:
                    s.close()
                    s = requests.Session()
                time.sleep(0.01)

        t = threading.Thread(target=load)
        t.start()
        # 20 s certificates renew at half-life: ~10 s apart; three renewals
        deadline = time.time() + 38
        while time.time() < deadline and \
                min(p.metric("trellis_control_certificates_total") for p in m.proxies) < 4:
            time.sleep(0.5)
        stop.set()
        t.join()
        certs = [p.metric("trellis_control_certificates_total") for p in m.proxies]
        assert min(certs) >= 4, certs
        assert statuses and all(s == 200 for s in statuses), \
            f"{len([s for s in statuses if s != 200])} failed of {len(statuses)}: " \
            f"{[s for s in statuses if s != 200][:3]}"
        # the identity in use is the newest: its expiry is in the future
        for p in m.proxies:
            assert p.metric("trellis_workload_cert_expiry_timestamp_seconds") > time.time()
        print(f"{len(statuses)} requests across {min(certs) - 1}+ rotations, 0 failed")
    finally:
        m.close()


def leaf_of(addr, port):
    """The certificate a proxy's inbound listener presents (PEM)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"{addr}:{port}", "-showcerts"],
                       input="", capture_output=True, text=True, timeout=10)
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)
    assert m, r.stdout + r.stderr
    return m.group(0) + "\n"


def verifies(leaf, bundle, workdir):
    path = os.path.join(workdir, "leaf.pem")
    with open(path, "w") as f:
        f.write(leaf)
    r = subprocess.run(["openssl", "verify", "-CAfile", bundle, path], capture_output=True,
                       text=True, timeout=10)
    return r.returncode == 0


def test_root_rotation_with_an_overlap(workdir):
    m = Mesh(workdir, lifetime="20s")
    try:
        m.start()
        state = m.control.state
        old_root = os.path.join(workdir, "old-root.pem")
        shutil.copy(os.path.join(state, "root-cert.pem"), old_root)
        new = os.path.join(workdir, "new-ca")
        subprocess.run([TRELLIS, "ctl", "ca", "init", new], check=True, capture_output=True,
                       timeout=10)
        statuses, stop = [], threading.Event()

        def load():
            deadline = time.time() + 60
            while not stop.is_set() and time.time() < deadline:
                s = requests.Session()  # new connections: new handshakes every time
                try:
                    statuses.append(s.get(f"http://{m.base}.200:{m.port}/", headers={"Host": "web"},
                                          timeout=5).status_code)
                except requests.RequestException as e:
                    statuses.append(repr(e))
                s.close()
                time.sleep(0.02)

        t = threading.Thread(target=load)
        t.start()

        def hup_and_wait(what):
            n = m.control.read_log().count("SIGHUP: CA reloaded")
            m.control.proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 5
            while time.time() < deadline and m.control.read_log().count("SIGHUP: CA reloaded") == n:
                time.sleep(0.05)
            assert m.control.read_log().count("SIGHUP: CA reloaded") == n + 1, what

        # 1. both roots trusted: every proxy gets the two-root bundle
        with open(os.path.join(state, "root-cert.pem"), "a") as f:
            f.write(open(os.path.join(new, "root-cert.pem")).read())
        hup_and_wait("overlap")
        deadline = time.time() + 5
        while time.time() < deadline and not all("new trust bundle" in p.read_log()
                                                  for p in m.proxies):
            time.sleep(0.1)
        assert all("new trust bundle" in p.read_log() for p in m.proxies)
        # 2. sign with the new root; proxies pick it up as they renew (20 s life)
        for f in ("ca-cert.pem", "ca-key.pem", "cert-chain.pem"):
            shutil.copy(os.path.join(new, f), os.path.join(state, f))
        os.chmod(os.path.join(state, "ca-key.pem"), 0o600)
        hup_and_wait("new signer")
        before = [p.metric("trellis_control_certificates_total") for p in m.proxies]
        deadline = time.time() + 25
        while time.time() < deadline and any(
                p.metric("trellis_control_certificates_total") <= b
                for p, b in zip(m.proxies, before)):
            time.sleep(0.2)
        new_root = os.path.join(new, "root-cert.pem")
        for host in (f"{m.base}.10", f"{m.base}.11"):
            leaf = leaf_of(host, m.port)
            assert verifies(leaf, new_root, workdir) and not verifies(leaf, old_root, workdir)
        # 3. the old root goes
        shutil.copy(new_root, os.path.join(state, "root-cert.pem"))
        hup_and_wait("old root dropped")
        time.sleep(1.5)
        stop.set()
        t.join()
        assert statuses and all(s == 200 for s in statuses), \
            f"{len([s for s in statuses if s != 200])} failed of {len(statuses)}"
        assert m.get().status_code == 200
        print(f"root rotated under load: {len(statuses)} requests, 0 failed")
    finally:
        m.close()
