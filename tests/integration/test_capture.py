"""Sidecar capture in network namespaces: applications that know nothing of
the mesh, their traffic redirected by `trellis ctl iptables` (nftables) to
their own trellis proxy, which recovers the original destination
(SO_ORIGINAL_DST) and serves it with the virtual listener that claims it.

Topology, all created by the test and removed by it (names carry the test's
pid; addresses from 198.18.0.0/15; no default route anywhere):

    netns trc-PID-br: bridge br0 (no address), tcpdump on it
      |-- veth -- netns trc-PID-a  198.18.0.1  client workload A + its proxy
      |-- veth -- netns trc-PID-b  198.18.0.2  backend on 127.0.0.1:8080 + its
      |                                       proxy, inbound mTLS STRICT
      `-- veth -- netns trc-PID-c  198.18.0.3  no sidecar, no rules

A's plain `curl http://198.18.0.2:8080/` goes: A's rules -> A's capture
listener 127.0.0.1:15001 -> virtual outbound 0.0.0.0:8080 -> mTLS (A's SVID,
socket mark 1337 so A's rules let it out) -> B's rules -> B's capture
listener 0.0.0.0:15006 -> virtual inbound 198.18.0.2:8080 (STRICT) -> backend.
"""
import http.client
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import TRELLIS  # noqa: E402

TD = "cluster.local"
CLIENT_ID = f"spiffe://{TD}/ns/default/sa/client"
SERVER_ID = f"spiffe://{TD}/ns/default/sa/server"
IP = {"a": "198.18.0.1", "b": "198.18.0.2", "c": "198.18.0.3"}
PORT = 8080
MARKER = "trellis-capture-marker-7f3a9c"

BACKEND = r"""
import http.server, json, sys
log = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def _do(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode(errors="replace") if n else ""
        with open(log, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "body": body,
                                "xfcc": self.headers.get("x-forwarded-client-cert")}) + "\n")
        out = b"hello from b\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = _do
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _missing():
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables, tcpdump)"
    for tool in ("ip", "nft", "tcpdump", "curl"):  # iptables: only its variant needs it
        if shutil.which(tool) is None:
            return f"needs {tool} (make bootstrap installs it)"
    probe = f"trc-{os.getpid()}-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"no network namespace support: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def run(*args, check=True, timeout=15):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


class Net:
    """The namespaces, links and processes of one test; close() removes
    exactly what was created, by name and PID."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.prefix = f"trc-{os.getpid()}"
        self.ns = {k: f"{self.prefix}-{k}" for k in ("br", "a", "b", "c")}
        self.created = []
        self.procs = []
        self.etc_dirs = []

    def setup(self):
        for name in self.ns.values():
            run("ip", "netns", "add", name)
            self.created.append(name)
        br = self.ns["br"]
        run("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", br, "link", "set", "br0", "up")
        for k in ("a", "b", "c"):
            # Both ends are born inside namespaces we own: nothing is added to
            # the namespace the test runs in.
            run("ip", "-n", br, "link", "add", f"v{k}", "type", "veth", "peer", "name", "eth0",
                "netns", self.ns[k])
            run("ip", "-n", br, "link", "set", f"v{k}", "master", "br0", "up")
            run("ip", "-n", self.ns[k], "addr", "add", f"{IP[k]}/24", "dev", "eth0")
            run("ip", "-n", self.ns[k], "link", "set", "eth0", "up")
            run("ip", "-n", self.ns[k], "link", "set", "lo", "up")

    def hosts(self, ns, text):
        """The namespace's own /etc/hosts: `ip netns exec` bind-mounts
        /etc/netns/NAME/hosts over /etc/hosts for what it runs."""
        # /etc/netns itself is iproute2's shared directory: made if missing,
        # never removed (another user of it may be about to write there).
        os.makedirs("/etc/netns", exist_ok=True)
        d = f"/etc/netns/{self.ns[ns]}"
        os.mkdir(d)
        self.etc_dirs.append(d)
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write(text)

    def exec(self, ns, *args, **kw):
        return run("ip", "netns", "exec", self.ns[ns], *args, **kw)

    def spawn(self, ns, name, *args):
        log = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[ns], *args], stdout=log,
                             stderr=subprocess.STDOUT)
        self.procs.append((p, log))
        return p

    def close(self):
        for p, log in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            log.close()
        for d in self.etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        # Deleting a namespace deletes its links and its nftables tables.
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def net(workdir):
    why = _missing()
    if why:
        pytest.skip(why)
    n = Net(workdir)
    try:
        n.setup()
        yield n
    finally:
        n.close()
    # Stopped: with an ASan/UBSan build (TRELLIS_BIN), the proxies' logs must
    # be free of sanitizer reports.
    for name in ("proxy-a", "proxy-b"):
        text = log_of(workdir, name)
        assert "Sanitizer" not in text and "runtime error:" not in text, text


def log_of(workdir, name):
    try:
        with open(os.path.join(workdir, f"{name}.log"), "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def wait_ready(net, ns, name, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited {proc.returncode}:\n{log_of(net.workdir, name)}")
        r = net.exec(ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1",
                     "http://127.0.0.1:15000/ready", check=False)
        if r.stdout.strip() == "200":
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} not ready:\n{log_of(net.workdir, name)}")


def metrics(net, ns):
    return net.exec(ns, "curl", "-s", "-m", "5", "http://127.0.0.1:15000/stats/prometheus").stdout


def metric(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def capture_listeners(inbound_unmatched="reject"):
    return [
        {"name": "capture-outbound", "address": "127.0.0.1:15001", "direction": "outbound",
         "protocol": "tcp", "original_destination": {"unmatched": "passthrough"}},
        {"name": "capture-inbound", "address": "0.0.0.0:15006", "direction": "inbound",
         "protocol": "tcp", "original_destination": {"unmatched": inbound_unmatched}},
    ]


def config_a(certs):
    """Workload A (client): every outbound connection to port 8080, whatever
    the address, goes to B over mTLS."""
    return {
        "workers": 1, "upstream_mark": 1337,
        "node": {"id": "a-0", "workload": "a", "namespace": "default", "principal": CLIENT_ID},
        "admin": {"address": "127.0.0.1:15000"},
        "tls": [{"name": "mesh", "cert": certs["client_cert"], "key": certs["client_key"],
                 "ca": certs["ca"], "trust_domain": TD}],
        "listeners": capture_listeners() + [
            {"name": "outbound-8080", "address": f"0.0.0.0:{PORT}", "direction": "outbound",
             "bind": False, "route_table": "out-8080"}],
        "route_tables": [{"name": "out-8080", "virtual_hosts": [
            {"name": "b", "domains": ["*"], "routes": [{"name": "all", "cluster": "b"}]}]}],
        "clusters": [{"name": "b", "service": "b.default.svc.cluster.local", "workload": "b",
                      "namespace": "default", "tls": {"context": "mesh",
                                                      "server_ids": [SERVER_ID]},
                      "endpoints": [{"address": f"{IP['b']}:{PORT}"}]}],
    }


def config_b(certs):
    """Workload B (server): mTLS STRICT in front of the backend on loopback."""
    return {
        "workers": 1, "upstream_mark": 1337,
        "node": {"id": "b-0", "workload": "b", "namespace": "default",
                 "service": "b.default.svc.cluster.local", "principal": SERVER_ID},
        "admin": {"address": "127.0.0.1:15000"},
        "tls": [{"name": "mesh", "cert": certs["server_cert"], "key": certs["server_key"],
                 "ca": certs["ca"], "trust_domain": TD}],
        "listeners": capture_listeners() + [
            {"name": "inbound-8080", "address": f"{IP['b']}:{PORT}", "direction": "inbound",
             "bind": False, "route_table": "in-8080",
             "tls": {"mode": "STRICT", "context": "mesh"}}],
        "route_tables": [{"name": "in-8080", "virtual_hosts": [
            {"name": "app", "domains": ["*"], "routes": [{"name": "all", "cluster": "app"}]}]}],
        "clusters": [{"name": "app", "endpoints": [{"address": f"127.0.0.1:{PORT}"}]}],
    }


def wait_backend(net, hits):
    """Until B's backend answers (on B's loopback, the only place it listens)."""
    deadline = time.time() + 5
    while net.exec("b", "curl", "-s", "-m", "1", f"http://127.0.0.1:{PORT}/up",
                   check=False).returncode != 0:
        assert time.time() < deadline, log_of(net.workdir, "backend")
        time.sleep(0.05)


def start_proxy(net, ns, name, config):
    path = os.path.join(net.workdir, f"{name}.yaml")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    p = net.spawn(ns, name, TRELLIS, "proxy", "--config", path)
    wait_ready(net, ns, name, p)
    return p


def backend_hits(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def tcp_payloads(pcap):
    """(source IP, TCP payload) of each segment with data in an Ethernet pcap
    file (tcpdump -w), in order."""
    with open(pcap, "rb") as f:
        data = f.read()
    assert len(data) >= 24, "tcpdump wrote no pcap header"
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic in (0xa1b2c3d4, 0xa1b23c4d) else ">"
    off, out = 24, []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(end + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
            continue  # not IPv4
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:
            continue
        tcp = ip[ihl:]
        doff = (tcp[12] >> 4) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        payload = ip[ihl + doff:total]
        if payload:
            out.append((".".join(str(b) for b in ip[12:16]), payload))
    return out


def start_tcpdump(net, pcap):
    p = net.spawn("br", "tcpdump", "tcpdump", "-i", "br0", "-n", "-U", "--immediate-mode",
                  "-s", "0", "-w", pcap, "tcp")
    deadline = time.time() + 5
    while time.time() < deadline:
        if "listening on" in log_of(net.workdir, "tcpdump"):
            return p
        if p.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"tcpdump did not start:\n{log_of(net.workdir, 'tcpdump')}")


def stop(p):
    p.send_signal(signal.SIGINT)
    p.wait(timeout=5)


def rules_of(net, ns, backend):
    if backend == "nftables":
        return net.exec(ns, "nft", "list", "ruleset").stdout
    return net.exec(ns, "iptables", "-w", "-t", "nat", "-S").stdout


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_capture_mtls_between_unmodified_workloads(net, certs, backend):
    if shutil.which({"nftables": "nft", "iptables": "iptables-restore"}[backend]) is None:
        pytest.skip(f"needs {backend} (make bootstrap installs it)")
    workdir = net.workdir
    hits = os.path.join(workdir, "backend-hits.jsonl")
    net.spawn("b", "backend", sys.executable, "-c", BACKEND, str(PORT), hits)
    # The capture rules, as a workload's init step would write them: into a
    # named namespace (A), or into the one the command runs in (B).
    redirect = {"nftables": ("redirect to :15001", "redirect to :15006"),
                "iptables": ("REDIRECT --to-ports 15001", "REDIRECT --to-ports 15006")}[backend]
    for k in ("a", "b"):
        dry = net.exec(k, TRELLIS, "ctl", "iptables", "--backend", backend,
                       "--dry-run").stdout  # touches nothing
        assert redirect[0] in dry and redirect[1] in dry, dry
        assert redirect[0] not in rules_of(net, k, backend)
        if k == "a":
            run(TRELLIS, "ctl", "iptables", "--backend", backend, "--netns", net.ns[k])
        else:
            net.exec(k, TRELLIS, "ctl", "iptables", "--backend", backend)
        rules = rules_of(net, k, backend)
        assert redirect[0] in rules and redirect[1] in rules, rules
    assert redirect[0] not in rules_of(net, "c", backend)  # C: no sidecar, no rules
    start_proxy(net, "b", "proxy-b", config_b(certs))
    proxy_a = start_proxy(net, "a", "proxy-a", config_a(certs))
    wait_backend(net, hits)
    n_before = len(backend_hits(hits))

    pcap = os.path.join(workdir, "bridge.pcap")
    dump = start_tcpdump(net, pcap)
    # An application that knows nothing of the mesh: plain curl to B's address.
    r = net.exec("a", "curl", "-s", "-m", "5", "-d", MARKER, f"http://{IP['b']}:{PORT}/hello",
                 check=False)
    assert r.returncode == 0 and r.stdout == "hello from b\n", (
        f"curl -> {r.returncode} {r.stdout!r} {r.stderr}\n{log_of(workdir, 'proxy-a')}\n"
        f"{log_of(workdir, 'proxy-b')}")
    seen = backend_hits(hits)[n_before:]
    assert [(h["method"], h["path"], h["body"]) for h in seen] == [("POST", "/hello", MARKER)]

    # B's proxy served it on its virtual inbound listener, over mutual TLS,
    # from A's identity; A's on its virtual outbound one.
    mb = metrics(net, "b")
    assert metric(mb, "istio_requests_total", reporter="destination", response_code="200",
                  source_principal=CLIENT_ID, destination_principal=SERVER_ID,
                  connection_security_policy="mutual_tls") == 1, mb
    ma = metrics(net, "a")
    assert metric(ma, "istio_requests_total", reporter="source", response_code="200",
                  destination_principal=SERVER_ID,
                  destination_service="b.default.svc.cluster.local") == 1, ma
    assert metric(ma, "trellis_capture_rejected_total") == 0
    assert metric(ma, "trellis_capture_passthrough_total") == 0

    # Workload C has no sidecar: its plaintext connection to B is refused by
    # B's STRICT inbound, and B's backend sees nothing.
    refused_before = metric(mb, "trellis_tls_plaintext_refused_total")
    r = net.exec("c", "curl", "-s", "-m", "5", "-d", MARKER, f"http://{IP['b']}:{PORT}/sneak",
                 check=False)
    assert r.returncode != 0 and "hello from b" not in r.stdout, (r.returncode, r.stdout)
    assert backend_hits(hits)[n_before + 1:] == []
    mb = metrics(net, "b")
    assert metric(mb, "trellis_tls_plaintext_refused_total") == refused_before + 1, mb
    time.sleep(0.2)  # the last segments reach tcpdump's file
    stop(dump)

    # On the wire: between A and B, TLS records only, the marker never in
    # clear; C's plaintext attempt, captured the same way, shows the marker
    # (so the capture would have seen it).
    payloads = tcp_payloads(pcap)
    mesh = [p for src, p in payloads if src in (IP["a"], IP["b"])]
    plain = b"".join(p for src, p in payloads if src == IP["c"])
    assert mesh, f"no A-B payload captured: {os.path.getsize(pcap)} bytes; " + log_of(
        workdir, "tcpdump")
    assert MARKER.encode() in plain, "the control (C's plaintext) was not captured"
    wire = b"".join(mesh)
    assert MARKER.encode() not in wire
    assert b"POST /hello" not in wire
    assert mesh[0][:2] == b"\x16\x03", "the first bytes from A are not a TLS handshake"
    assert any(b"\x17\x03\x03" in p for p in mesh), "no TLS application data"

    # B's backend port is not reachable around the proxy either: it listens
    # on loopback, and B's address on that port belongs to the proxy.
    assert backend_hits(hits)[n_before + 1:] == []

    # A destination no virtual listener claims: passthrough (outbound
    # unmatched), a plain TCP relay to the original destination; B's inbound
    # capture has no listener for port 9 and rejects it.
    r = net.exec("a", "curl", "-s", "-m", "3", f"http://{IP['b']}:9/", check=False)
    assert r.returncode != 0
    ma = metrics(net, "a")
    assert metric(ma, "trellis_capture_passthrough_total") == 1, ma
    deadline = time.time() + 3
    while metric(metrics(net, "b"), "trellis_capture_rejected_total") < 1:
        assert time.time() < deadline, metrics(net, "b")
        time.sleep(0.05)

    # --remove takes only our table (chains) away; the proxy keeps running.
    run(TRELLIS, "ctl", "iptables", "--backend", backend, "--netns", net.ns["a"], "--remove")
    rules = rules_of(net, "a", backend)
    assert "trellis" not in rules.lower() and redirect[0] not in rules, rules
    assert proxy_a.poll() is None


def test_capture_rejects_loops_and_direct_connections(net, certs):
    """A connection that reaches the capture listener without a redirect (its
    original destination is the capture listener itself) is closed, never
    handed on; nothing loops. A reload switches unmatched to reject (Istio's
    REGISTRY_ONLY) without a restart."""
    run(TRELLIS, "ctl", "iptables", "--netns", net.ns["a"])
    cfg = config_a(certs)
    proxy = start_proxy(net, "a", "proxy-a", cfg)
    r = net.exec("a", "curl", "-s", "-m", "3", "http://127.0.0.1:15001/", check=False)
    assert r.returncode != 0
    r = net.exec("c", "curl", "-s", "-m", "3", f"http://{IP['a']}:15006/", check=False)
    assert r.returncode != 0
    ma = metrics(net, "a")
    assert metric(ma, "trellis_capture_rejected_total") == 2, ma
    assert metric(ma, "istio_requests_total") == 0
    # Passthrough to a port nobody claims (C listens on nothing: refused).
    net.exec("a", "curl", "-s", "-m", "3", f"http://{IP['c']}:9/", check=False)
    assert metric(metrics(net, "a"), "trellis_capture_passthrough_total") == 1
    cfg["listeners"][0]["original_destination"]["unmatched"] = "reject"
    with open(os.path.join(net.workdir, "proxy-a.yaml"), "w") as f:
        json.dump(cfg, f)
    proxy.send_signal(signal.SIGHUP)
    deadline = time.time() + 5
    while True:
        net.exec("a", "curl", "-s", "-m", "3", f"http://{IP['c']}:9/", check=False)
        ma = metrics(net, "a")
        if metric(ma, "trellis_capture_rejected_total") > 2:
            break
        assert time.time() < deadline, ma + log_of(net.workdir, "proxy-a")
        time.sleep(0.05)
    assert metric(ma, "trellis_capture_passthrough_total") == 1
    assert proxy.poll() is None


MESH = f"""
apiVersion: v1
kind: Pod
metadata: {{name: a, namespace: default, labels: {{app: a}}}}
spec: {{serviceAccountName: client}}
status: {{podIP: {IP['a']}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: b, namespace: default, labels: {{app: b}}}}
spec: {{serviceAccountName: server}}
status: {{podIP: {IP['b']}}}
---
apiVersion: v1
kind: Service
metadata: {{name: b, namespace: default}}
spec:
  selector: {{app: b}}
  ports: [{{name: http, port: {PORT}}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: b, namespace: default}}
spec:
  host: b.default.svc.cluster.local
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"""


def test_capture_with_compiled_istio_models(net, certs):
    """The same hop from Istio YAML: `trellis ctl compile --capture` for both
    workloads, names from A's own hosts file, `curl http://b:8080/`."""
    workdir = net.workdir
    mesh = os.path.join(workdir, "mesh")
    os.makedirs(mesh)
    with open(os.path.join(mesh, "mesh.yaml"), "w") as f:
        f.write(MESH)
    models = {}
    for k, who in (("a", "client"), ("b", "server")):
        d = os.path.join(workdir, f"certs-{k}")
        os.makedirs(d)
        shutil.copy(certs[f"{who}_cert"], os.path.join(d, "cert.pem"))
        shutil.copy(certs[f"{who}_key"], os.path.join(d, "key.pem"))
        shutil.copy(certs["ca"], os.path.join(d, "ca.pem"))
        r = run(TRELLIS, "ctl", "compile", mesh, "--workload", f"default/{k}", "--capture",
                "--cert-dir", d, "-o", "json")
        models[k] = json.loads(r.stdout)
        models[k]["workers"] = 1
        run(TRELLIS, "ctl", "iptables", "--netns", net.ns[k])
    hits = os.path.join(workdir, "backend-hits.jsonl")
    net.spawn("b", "backend", sys.executable, "-c", BACKEND, str(PORT), hits)
    start_proxy(net, "b", "proxy-b", models["b"])
    start_proxy(net, "a", "proxy-a", models["a"])
    net.hosts("a", f"127.0.0.1 localhost\n{IP['b']} b b.default b.default.svc.cluster.local\n")
    wait_backend(net, hits)
    n_before = len(backend_hits(hits))
    r = net.exec("a", "curl", "-s", "-m", "5", "-d", MARKER, f"http://b:{PORT}/compiled",
                 check=False)
    assert r.returncode == 0 and r.stdout == "hello from b\n", (
        f"curl -> {r.returncode} {r.stdout!r} {r.stderr}\n{log_of(workdir, 'proxy-a')}\n"
        f"{log_of(workdir, 'proxy-b')}")
    assert [(h["path"], h["body"]) for h in backend_hits(hits)[n_before:]] == [
        ("/compiled", MARKER)]
    mb = metrics(net, "b")
    assert metric(mb, "istio_requests_total", reporter="destination", response_code="200",
                  source_principal=CLIENT_ID, connection_security_policy="mutual_tls",
                  destination_service="b.default.svc.cluster.local") == 1, mb
    ma = metrics(net, "a")
    assert metric(ma, "istio_requests_total", reporter="source", response_code="200",
                  destination_service="b.default.svc.cluster.local",
                  destination_principal=SERVER_ID) == 1, ma


TCP_NAMED = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
while True:
    c, _ = s.accept()
    try:
        c.settimeout(5)
        c.recv(100)
        c.sendall(sys.argv[2].encode() + b"\n")
    except OSError:
        pass
    finally:
        c.close()
"""

TCP_CLIENT = r"""
import socket, ssl, sys
hello = b"hi"
if len(sys.argv) > 3:  # a TLS ClientHello for that SNI; the servers answer it with their names
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        ctx.wrap_bio(inc, out, server_hostname=sys.argv[3]).do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(hello)
print(c.recv(100).decode().strip())
"""

DB_PORT = 7000
WEB_PORT = 7443

SUBNET_MESH = f"""
apiVersion: v1
kind: Pod
metadata: {{name: a, namespace: default, labels: {{app: a}}}}
spec: {{serviceAccountName: client}}
status: {{podIP: {IP['a']}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: db-v1, namespace: default, labels: {{app: db, version: v1}}}}
spec: {{serviceAccountName: db}}
status: {{podIP: {IP['b']}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: db-v2, namespace: default, labels: {{app: db, version: v2}}}}
spec: {{serviceAccountName: db}}
status: {{podIP: {IP['c']}}}
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: default}}
spec:
  selector: {{app: db}}
  ports: [{{name: tcp-db, port: {DB_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: default}}
spec:
  host: db
  trafficPolicy: {{tls: {{mode: DISABLE}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db]
  tcp:
  - match:
    - destinationSubnets: [198.18.0.64/26]
    route:
    - destination: {{host: db, subset: v2}}
  - match:
    - destinationSubnets: [198.18.0.70]
      port: {DB_PORT}
    route:
    - destination: {{host: db, subset: v1}}
  - route:
    - destination: {{host: db, subset: v1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: db, version: v1}}
  ports: [{{name: tls-web, port: {WEB_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web, "*.example.com"]
  tls:
  - match:
    - sniHosts: [a.example.com]
      destinationSubnets: [198.18.0.64/26]
    route:
    - destination: {{host: db, subset: v2, port: {{number: {DB_PORT}}}}}
  - match:
    - sniHosts: [a.example.com, b.example.com]
    route:
    - destination: {{host: db, subset: v1, port: {{number: {DB_PORT}}}}}
"""


def test_capture_destination_subnets(net, certs):
    """VirtualService tcp and tls rules with destinationSubnets, compiled with
    --capture: the original destination's address picks the rule, the most
    specific block first whatever the rule order (Envoy's filter chain
    match); an address no block holds takes the catch-all rule. Servers are
    plain TCP servers in B (v1) and C (v2) that answer with their names."""
    workdir = net.workdir
    mesh = os.path.join(workdir, "mesh")
    os.makedirs(mesh)
    with open(os.path.join(mesh, "mesh.yaml"), "w") as f:
        f.write(SUBNET_MESH)
    d = os.path.join(workdir, "certs-a")
    os.makedirs(d)
    shutil.copy(certs["client_cert"], os.path.join(d, "cert.pem"))
    shutil.copy(certs["client_key"], os.path.join(d, "key.pem"))
    shutil.copy(certs["ca"], os.path.join(d, "ca.pem"))
    r = run(TRELLIS, "ctl", "compile", mesh, "--workload", "default/a", "--capture",
            "--cert-dir", d, "-o", "json")
    assert "destinationSubnets" not in r.stderr, r.stderr
    model = json.loads(r.stdout)
    model["workers"] = 1
    claims = {tuple(l.get("destination_prefixes", [])): l["name"] for l in model["listeners"]
              if not l.get("bind", True)}
    assert ("198.18.0.64/26",) in claims and ("198.18.0.70/32",) in claims, claims
    run(TRELLIS, "ctl", "iptables", "--netns", net.ns["a"])
    net.spawn("b", "db-v1", sys.executable, "-c", TCP_NAMED, str(DB_PORT), "db-v1")
    net.spawn("c", "db-v2", sys.executable, "-c", TCP_NAMED, str(DB_PORT), "db-v2")
    net.spawn("b", "web-v1", sys.executable, "-c", TCP_NAMED, str(WEB_PORT), "web-v1")
    start_proxy(net, "a", "proxy-a", model)

    def dial(ip, port=DB_PORT, *sni):
        deadline = time.time() + 5
        while True:
            r = net.exec("a", sys.executable, "-c", TCP_CLIENT, ip, str(port), *sni, check=False)
            if r.returncode == 0 or time.time() > deadline:
                return r.stdout.strip() or f"failed: {r.stderr.strip()[-200:]}"
            time.sleep(0.1)  # the servers may still be starting

    # None of these addresses exists: the proxy routes by the rule alone.
    got = {ip: dial(ip) for ip in ("198.18.0.77", "198.18.0.127", "198.18.0.70",
                                   "198.18.0.5", "198.18.0.128", "198.18.0.3")}
    assert got == {"198.18.0.77": "db-v2", "198.18.0.127": "db-v2",  # the /26
                   "198.18.0.70": "db-v1",  # the /32 inside it: more specific
                   "198.18.0.5": "db-v1", "198.18.0.128": "db-v1",  # no block: catch-all
                   "198.18.0.3": "db-v1"}, (got, log_of(workdir, "proxy-a"))
    # tls rules: the destination address decides first (Envoy's filter chain
    # match), then the SNI among the rules naming that block; a name none of
    # them routes goes to the port's default (web), even one that a rule
    # without destinationSubnets routes elsewhere.
    got = {(ip, sni): dial(ip, WEB_PORT, sni) for ip, sni in (
        ("198.18.0.77", "a.example.com"), ("198.18.0.77", "b.example.com"),
        ("198.18.0.5", "a.example.com"), ("198.18.0.5", "b.example.com"),
        ("198.18.0.5", "c.example.com"))}
    assert got == {("198.18.0.77", "a.example.com"): "db-v2",
                   ("198.18.0.77", "b.example.com"): "web-v1",
                   ("198.18.0.5", "a.example.com"): "db-v1",
                   ("198.18.0.5", "b.example.com"): "db-v1",
                   ("198.18.0.5", "c.example.com"): "web-v1"}, (got, log_of(workdir, "proxy-a"))
    ma = metrics(net, "a")
    assert metric(ma, "istio_tcp_connections_opened_total", reporter="source",
                  destination_service="db.default.svc.cluster.local") >= 9, ma


HTTP_NAMED = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        out = sys.argv[2].encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""

HTTP_PORT = 7080

PASSTHROUGH_MESH = f"""
apiVersion: v1
kind: Pod
metadata: {{name: a, namespace: default, labels: {{app: a}}}}
spec: {{serviceAccountName: client}}
status: {{podIP: {IP['a']}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: db-b, namespace: default, labels: {{app: db}}}}
spec: {{serviceAccountName: db}}
status: {{podIP: {IP['b']}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: db-c, namespace: default, labels: {{app: db}}}}
spec: {{serviceAccountName: db}}
status: {{podIP: {IP['c']}}}
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: default}}
spec:
  selector: {{app: db}}
  ports: [{{name: tcp-db, port: {DB_PORT}}}, {{name: http-web, port: {HTTP_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: default}}
spec:
  host: db
  trafficPolicy: {{loadBalancer: {{simple: PASSTHROUGH}}, tls: {{mode: DISABLE}}}}
"""


def test_capture_passthrough_load_balancer(net, certs):
    """DestinationRule loadBalancer PASSTHROUGH with --capture: every
    connection, TCP or HTTP, goes to the address the application dialled
    (the original destination), never balanced across the service's pods."""
    workdir = net.workdir
    mesh = os.path.join(workdir, "mesh")
    os.makedirs(mesh)
    with open(os.path.join(mesh, "mesh.yaml"), "w") as f:
        f.write(PASSTHROUGH_MESH)
    d = os.path.join(workdir, "certs-a")
    os.makedirs(d)
    shutil.copy(certs["client_cert"], os.path.join(d, "cert.pem"))
    shutil.copy(certs["client_key"], os.path.join(d, "key.pem"))
    shutil.copy(certs["ca"], os.path.join(d, "ca.pem"))
    r = run(TRELLIS, "ctl", "compile", mesh, "--workload", "default/a", "--capture",
            "--cert-dir", d, "-o", "json")
    assert "PASSTHROUGH" not in r.stderr, r.stderr
    model = json.loads(r.stdout)
    model["workers"] = 1
    clusters = {c["name"]: c for c in model["clusters"]}
    db = clusters[f"outbound|{DB_PORT}||db.default.svc.cluster.local"]
    assert db["original_destination"] and db["endpoints"] == []
    run(TRELLIS, "ctl", "iptables", "--netns", net.ns["a"])
    for k in ("b", "c"):
        net.spawn(k, f"db-{k}", sys.executable, "-c", TCP_NAMED, str(DB_PORT), f"db-{k}")
        net.spawn(k, f"web-{k}", sys.executable, "-c", HTTP_NAMED, str(HTTP_PORT), f"web-{k}")
    start_proxy(net, "a", "proxy-a", model)

    def dial(ip):
        deadline = time.time() + 5
        while True:
            r = net.exec("a", sys.executable, "-c", TCP_CLIENT, ip, str(DB_PORT), check=False)
            if r.returncode == 0 or time.time() > deadline:
                return r.stdout.strip() or f"failed: {r.stderr.strip()[-200:]}"
            time.sleep(0.1)

    def get(ip):
        deadline = time.time() + 5
        while True:
            # the service's name as the Host (a client of a headless
            # service dials a pod's address for it)
            r = net.exec("a", "curl", "-s", "-m", "5", "-H", "Host: db", f"http://{ip}:{HTTP_PORT}/",
                         check=False)
            if r.returncode == 0 or time.time() > deadline:
                return r.stdout.strip() or f"failed: {r.returncode}"
            time.sleep(0.1)

    got = [dial(IP["b"]) for _ in range(10)] + [dial(IP["c"]) for _ in range(10)]
    assert got == ["db-b"] * 10 + ["db-c"] * 10, (got, log_of(workdir, "proxy-a"))
    got = [get(IP["c"]) for _ in range(10)] + [get(IP["b"]) for _ in range(10)]
    assert got == ["web-c"] * 10 + ["web-b"] * 10, (got, log_of(workdir, "proxy-a"))
    # An address with nobody behind it: refused at connect, as it would be
    # without the proxy (the connect fails; nothing else is tried).
    r = net.exec("a", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5",
                 "-H", "Host: db", f"http://198.18.0.9:{HTTP_PORT}/", check=False)
    assert r.stdout.strip() == "503", r.stdout
    ma = metrics(net, "a")
    assert metric(ma, "istio_requests_total", reporter="source", response_code="200",
                  destination_service="db.default.svc.cluster.local") >= 20, ma
