"""`trellis up` / `trellis down` (docs/up.md): the bookinfo mesh in network
namespaces, driven from inside the mesh, then taken down; and a batch job
whose proxy stops when it finishes. Needs root (network namespaces); skipped
otherwise. Then the same mesh in loopback mode (`trellis up --loopback`), which
needs neither: run as the unprivileged user `nobody` when the tests run as
root, else as the caller. Everything started is stopped at teardown even when a
test fails: `trellis down`, then the PIDs and namespaces the state directory
recorded."""
import ipaddress
import json
import os
import pwd
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from conftest import ROOT, TRELLIS

BOOKINFO = os.path.join(ROOT, "examples", "bookinfo")
WORKLOADS = ["productpage-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1", "loadgen"]
MARKER = "trellis-up-capture-marker-4e1d"
VIPS = ipaddress.ip_network("198.19.128.0/17")  # the Services' virtual IPs (docs/up.md)


def _netns_ok():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    return subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0


netns_only = pytest.mark.skipif(not _netns_ok(), reason="needs root and `ip netns`")


def netns_list():
    if shutil.which("ip") is None:
        return set()
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def recorded(state):
    """(processes as (pid, start time), netns names, /etc/netns dirs) from the state dir."""
    procs, netns, etc = [], [], []
    try:
        with open(os.path.join(state, "up.state")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return procs, netns, etc
    for line in lines:
        f = line.split()
        if f[0] in ("sup", "ctl"):
            procs.append((int(f[1]), int(f[2])))
        elif f[0] == "netns":
            netns.append(f[1])
        elif f[0] == "etc":
            etc.append(f[1])
        elif f[0] == "workload":
            try:
                with open(os.path.join(f[5], "pids")) as p:
                    for pl in p.read().splitlines():
                        _, pid, start = pl.split()
                        procs.append((int(pid), int(start)))
            except FileNotFoundError:
                pass
    return procs, netns, etc


def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return 0
    return int(fields[19])


def alive(proc):
    pid, start = proc
    return start != 0 and start_time(pid) == start


def cleanup(state):
    """trellis down, then whatever it left: recorded PIDs, recorded namespaces."""
    procs, netns, _ = recorded(state)
    subprocess.run([TRELLIS, "down", "--state", state], capture_output=True, timeout=60)
    for p in procs:
        if alive(p):
            os.kill(p[0], signal.SIGKILL)
    left = netns_list()
    for n in netns:
        if n in left:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def in_ns(workload, argv, ns="bookinfo", **kw):
    return subprocess.run(["ip", "netns", "exec", f"trl-{ns}-{workload}"] + argv,
                          capture_output=True, text=True, timeout=30, **kw)


def curl(workload, url, ns="bookinfo"):
    r = in_ns(workload, ["curl", "-sS", "-m", "5", "-o", "-", "-w", "\n%{http_code}", url], ns=ns)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def metrics(workload):
    return in_ns(workload, ["curl", "-sS", "-m", "5",
                            "http://127.0.0.1:15000/stats/prometheus"]).stdout


@pytest.fixture(scope="module", params=["control", "static", "nocapture"])
def mesh(request, tmp_path_factory):
    """The bookinfo mesh, with sidecar capture (the default) once with the
    control plane (the default) and once in static mode (--static: models and
    certificates written by up); then with the control plane and --no-capture
    (names resolve to the sidecar's outbound listeners on 127.0.0.2)."""
    if not _netns_ok():
        pytest.skip("needs root and `ip netns`")
    state = str(tmp_path_factory.mktemp("up-state"))
    # a copy: test_canary_shift edits it
    resources = str(tmp_path_factory.mktemp("mesh") / "bookinfo")
    shutil.copytree(BOOKINFO, resources)
    if "trl-hub" in netns_list():
        pytest.fail("a trellis up mesh is already running (trl-hub exists): trellis down first")
    try:
        t0 = time.monotonic()
        extra = {"static": ["--static"], "nocapture": ["--no-capture"]}.get(request.param, [])
        r = subprocess.run([TRELLIS, "up", resources, "--state", state, "--detach"] + extra,
                           capture_output=True, text=True, timeout=90)
        r.seconds = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        r.resources = resources
        r.mode = request.param
        yield state, r
    finally:
        cleanup(state)


def test_status_table(mesh):
    state, r = mesh
    assert r.seconds < 15, r.seconds
    rows = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^(bookinfo/\S+)\s+(trl-\S+)\s+(198\.1[89]\.\d+\.\d+)\s+(spiffe://\S+)"
                     r"\s+(\d+)\s+(\d+)\s+(yes|no)$", line)
        if m:
            rows[m.group(1)] = m.groups()
    assert sorted(rows) == sorted(f"bookinfo/{w}" for w in WORKLOADS), r.stdout
    ips = set()
    for w in WORKLOADS:
        _, netns, ip, ident, proxy, app, ready = rows[f"bookinfo/{w}"]
        assert netns == f"trl-bookinfo-{w}"
        sa = w.split("-")[0]
        assert ident == f"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-{sa}"
        assert ready == "yes"
        assert os.path.exists(f"/proc/{proxy}") and os.path.exists(f"/proc/{app}")
        ips.add(ip)
    assert len(ips) == len(WORKLOADS)
    assert {f"trl-bookinfo-{w}" for w in WORKLOADS} | {"trl-hub"} <= netns_list()
    st = subprocess.run([TRELLIS, "up", "--status", "--state", state], capture_output=True,
                        text=True, timeout=30)
    assert st.returncode == 0 and "6 of 6 workload(s) running" in st.stdout, st.stdout
    # image is reported, not silently ignored
    assert "spec.containers[0].image: ignored by trellis up" in r.stderr
    wdir = os.path.join(state, "workloads", "bookinfo.reviews-v2")
    assert os.stat(wdir).st_mode & 0o777 == 0o700
    if r.mode == "static":
        # the key of each workload is private to it
        st = os.stat(os.path.join(wdir, "certs", "key.pem"))
        assert st.st_mode & 0o777 == 0o600
    else:
        # the proxy made its key; only the bootstrap token is on disk
        assert not os.path.exists(os.path.join(wdir, "certs"))
        assert os.stat(os.path.join(wdir, "token")).st_mode & 0o777 == 0o600
        assert "control plane on 198.18.0.1:15012" in r.stdout
        cs = subprocess.run([TRELLIS, "ctl", "status", "--state", os.path.join(state, "ca"),
                             "-o", "json"], capture_output=True, text=True, timeout=30)
        assert cs.returncode == 0, cs.stderr
        doc = json.loads(cs.stdout)
        assert "bookinfo/reviews-v2" in cs.stdout and "bookinfo/loadgen" in cs.stdout, doc


def test_page_from_loadgen(mesh):
    state, r = mesh
    mode = r.mode
    r = subprocess.run([TRELLIS, "up", "--state", state, "--exec", "bookinfo/loadgen", "--",
                        "curl", "-sS", "-m", "5", "-f", "http://productpage:9080/"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    assert page["service"] == "productpage"
    assert page["reviews_status"] == 200
    assert page["reviews"]["service"] == "reviews"
    assert page["reviews"]["version"] in ("v1", "v2")  # the 90/10 canary: never v3
    assert len(page["reviews"]["reviews"]) == 2
    r = in_ns("loadgen", ["getent", "hosts", "reviews.bookinfo.svc.cluster.local"])
    addr = r.stdout.split()[0]
    rules = in_ns("loadgen", ["nft", "list", "table", "inet", "trellis"])
    if mode == "nocapture":
        # the names resolve to the sidecar's outbound listener; no rules
        assert addr == "127.0.0.2"
        assert rules.returncode != 0
    else:
        # the Service's virtual IP, the same in every workload; the rules are
        # what sends it to the sidecar (their counter moved)
        assert ipaddress.ip_address(addr) in VIPS, r.stdout
        short = in_ns("productpage-v1", ["getent", "hosts", "reviews"]).stdout.split()[0]
        assert short == addr
        assert rules.returncode == 0, rules.stderr
        m = re.search(r"counter packets (\d+) bytes \d+ redirect to :15001", rules.stdout)
        assert m and int(m.group(1)) >= 1, rules.stdout


def test_mtls_in_destination_metrics(mesh):
    code, _ = curl("loadgen", "http://productpage:9080/")
    assert code == 200
    text = metrics("productpage-v1")
    lines = [line for line in text.splitlines() if line.startswith("istio_requests_total{")
             and 'reporter="destination"' in line and 'response_code="200"' in line]
    assert lines, text
    line = lines[0]
    assert 'connection_security_policy="mutual_tls"' in line
    assert 'source_principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-loadgen"' in line
    assert ('destination_principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage"'
            in line)
    # STRICT: plaintext straight to the pod address (around the sidecar) gets no page
    ip = in_ns("productpage-v1", ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout.split()[3]
    code, body = curl("loadgen", f"http://{ip.split('/')[0]}:9080/")
    assert code != 200 and "productpage" not in body


def test_denied_edge(mesh):
    code, body = curl("loadgen", "http://ratings:9080/ratings/0")
    assert code == 403
    assert body == "RBAC: access denied"
    text = metrics("ratings-v1")
    assert re.search(r'istio_requests_total\{reporter="destination",[^}]*source_principal='
                     r'"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-loadgen"[^}]*'
                     r'response_code="403"[^}]*\} [1-9]', text), text


def tcp_payloads(pcap):
    """(source IP, TCP payload) of each segment with data in an Ethernet pcap
    file (tcpdump -w), in order (as test_capture.py reads it)."""
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
            continue
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


CONTROL_SEND = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, 36, 1337)  # SO_MARK: the rules let it pass
s.settimeout(3)
s.connect((sys.argv[1], 9080))
s.sendall(b"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
          % (len(sys.argv[2]), sys.argv[2].encode()))
try:
    s.recv(100)
except OSError:
    pass
"""


def pod_ip(workload, ns="bookinfo"):
    out = in_ns(workload, ["ip", "-4", "-o", "addr", "show", "eth0"], ns=ns).stdout
    return out.split()[3].split("/")[0]


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_bridge_carries_tls_only(mesh, tmp_path):
    """An unmodified curl's request, with a marker in its path, header and
    body, crosses the bridge between namespaces as TLS only; the same marker
    sent in plaintext around the capture rules is seen in clear, so the
    capture would have shown it."""
    pcap = str(tmp_path / "bridge.pcap")
    log = open(tmp_path / "tcpdump.log", "wb")
    dump = subprocess.Popen(["ip", "netns", "exec", "trl-hub", "tcpdump", "-i", "trl-br0", "-n",
                             "-U", "--immediate-mode", "-s", "0", "-w", pcap, "tcp"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 5
        while b"listening on" not in (tmp_path / "tcpdump.log").read_bytes():
            assert dump.poll() is None and time.monotonic() < deadline, "tcpdump did not start"
            time.sleep(0.02)
        r = in_ns("loadgen", ["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                              "-H", f"x-marker: {MARKER}", "-d", MARKER,
                              f"http://productpage:9080/{MARKER}"])
        assert r.stdout not in ("", "000"), r.stderr  # an answer came back through the mesh
        # the control: plaintext from reviews-v1 around its own rules (the
        # proxy's mark 1337) to ratings' Pod address
        in_ns("reviews-v1", [sys.executable, "-c", CONTROL_SEND, pod_ip("ratings-v1"), MARKER])
        time.sleep(0.3)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
        log.close()
    src = {pod_ip("loadgen"), pod_ip("productpage-v1")}
    payloads = tcp_payloads(pcap)
    mesh_bytes = [p for s, p in payloads if s in src]
    plain = b"".join(p for s, p in payloads if s == pod_ip("reviews-v1"))
    assert mesh_bytes, f"nothing captured between loadgen and productpage ({len(payloads)})"
    assert MARKER.encode() in plain, "the control (plaintext from trl-hub) was not captured"
    wire = b"".join(mesh_bytes)
    assert MARKER.encode() not in wire
    # the proxies keep their mTLS connections pooled, so the handshake may
    # predate the capture: TLS application data records it is
    assert any(p[:3] == b"\x17\x03\x03" for p in mesh_bytes), "no TLS application data"
    assert b"HTTP/1.1" not in wire and b"x-marker" not in wire


def generation(workload):
    m = re.search(r"^trellis_config_generation (\d+)$", metrics(workload), re.M)
    return int(m.group(1))


def test_canary_shift(mesh):
    """Edit the VirtualService, trellis up --reload: the proxies load their new
    models and every request goes to reviews v2."""
    state, r = mesh
    before = generation("productpage-v1")
    shutil.copy(os.path.join(ROOT, "examples", "bookinfo-canary", "reviews-v2.yaml"),
                os.path.join(r.resources, "reviews-canary.yaml"))
    t0 = time.monotonic()
    rl = subprocess.run([TRELLIS, "up", "--reload", "--state", state], capture_output=True,
                        text=True, timeout=30)
    assert rl.returncode == 0, rl.stderr
    assert "bookinfo/productpage-v1: new model" in rl.stdout
    while generation("productpage-v1") == before:
        assert time.monotonic() - t0 < 5, "productpage's proxy did not load its new model"
        time.sleep(0.05)
    out = in_ns("loadgen", [sys.executable, os.path.join(r.resources, "bookinfo.py"), "load",
                            "http://productpage:9080/", "-n", "20", "-c", "2"])
    res = json.loads(out.stdout)
    assert res["status"] == {"200": 20} and res["versions"] == {"v2": 20}, res
    # a broken edit keeps the running models
    with open(os.path.join(r.resources, "reviews-canary.yaml"), "a") as f:
        f.write("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                "metadata: {name: broken, namespace: bookinfo}\n"
                "spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, "
                "subset: v9}}]}]}\n")
    rl = subprocess.run([TRELLIS, "up", "--reload", "--state", state], capture_output=True,
                        text=True, timeout=30)
    assert rl.returncode != 0 and "reviews-canary.yaml:" in rl.stderr, rl.stderr
    assert "nothing changed" in rl.stderr


def test_down_removes_everything(mesh):
    state, _ = mesh
    procs, netns, etc = recorded(state)
    _, r = mesh
    # supervisor, proxy, application each; and the control plane
    assert len(procs) == 3 * len(WORKLOADS) + (r.mode != "static")
    assert all(alive(p) for p in procs)
    assert set(netns) == {f"trl-bookinfo-{w}" for w in WORKLOADS} | {"trl-hub"}
    r = subprocess.run([TRELLIS, "down", "--state", state], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "stopped 6 workload(s)" in r.stdout
    assert not [p for p in procs if alive(p)]
    assert not set(netns) & netns_list()
    assert not [e for e in etc if e != "/etc/netns" and os.path.exists(e)]
    assert not os.path.exists(os.path.join(state, "up.state"))
    assert not os.path.exists(os.path.join(state, "workloads", "bookinfo.loadgen", "token"))
    # a second down has nothing to do
    r = subprocess.run([TRELLIS, "down", "--state", state], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "nothing is up" in r.stderr


@netns_only
def test_batch_job_stops_its_proxy(tmp_path):
    """The proxy exits when the application does, so batch jobs finish."""
    mesh_dir = tmp_path / "batch"
    mesh_dir.mkdir()
    (mesh_dir / "job.yaml").write_text("""
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: batch, labels: {app: job}}
spec:
  serviceAccountName: worker
  containers:
    - name: job
      command: [sh, -c]
      args: ["sleep 1; echo job done in $(pwd); exit 3"]
---
apiVersion: v1
kind: Service
metadata: {name: job, namespace: batch}
spec:
  selector: {app: job}
  ports: [{name: http, port: 8080}]
""")
    state = str(tmp_path / "state")
    try:
        r = subprocess.run([TRELLIS, "up", str(mesh_dir), "--state", state, "--detach"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        procs, _, _ = recorded(state)
        with open(os.path.join(state, "up.state")) as f:
            ctl = [(int(x[1]), int(x[2])) for x in (line.split() for line in f) if x[0] == "ctl"]
        assert len(ctl) == 1  # the control plane stays until down
        procs = [p for p in procs if p not in ctl]
        assert len(procs) == 3
        deadline = time.monotonic() + 15
        while any(alive(p) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in procs if alive(p)], "the proxy outlived its job"
        with open(os.path.join(state, "workloads", "batch.job", "app.log")) as f:
            assert f.read().strip() == f"job done in {mesh_dir}"
        assert "trl-batch-job" in netns_list()  # the namespace stays until down
        assert alive(ctl[0])
    finally:
        cleanup(state)
    assert "trl-batch-job" not in netns_list()


CAPTURE_MESH = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: cap, labels: {app: web}}
spec:
  serviceAccountName: web
  containers:
    - name: web
      # binds every address: capture sends what arrives on eth0 to the sidecar
      command: [python3, -m, http.server, --bind, 0.0.0.0, "8000"]
      ports: [{containerPort: 8000}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: cap, labels: {app: client}}
spec:
  serviceAccountName: client
  containers: [{name: client, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata:
  name: bare
  namespace: cap
  labels: {app: bare, sidecar.istio.io/inject: "false"}
spec:
  containers: [{name: bare, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: cap}
spec:
  clusterIP: 10.96.0.50
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8000}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: cap}
spec: {mtls: {mode: STRICT}}
"""


@netns_only
def test_capture_strict_and_cluster_ip(tmp_path):
    """Capture with an application bound to 0.0.0.0 and a Service with its own
    clusterIP (outside 198.18.0.0/15): the sidecar client's unmodified curl by
    name gets through (mTLS, the principals in the destination's metrics); a
    workload without a sidecar is refused by STRICT even when it connects to
    the Pod address and port the application listens on; down removes it all."""
    mesh_dir = tmp_path / "cap"
    mesh_dir.mkdir()
    (mesh_dir / "mesh.yaml").write_text(CAPTURE_MESH)
    state = str(tmp_path / "state")
    names = {f"trl-cap-{w}" for w in ("web", "client", "bare")} | {"trl-hub"}
    try:
        r = subprocess.run([TRELLIS, "up", str(mesh_dir), "--state", state, "--detach"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        # the name is the Service's clusterIP, reached through capture
        got = in_ns("client", ["getent", "hosts", "web.cap.svc.cluster.local"], ns="cap")
        assert got.stdout.split()[0] == "10.96.0.50", got.stdout
        code, body = curl("client", "http://web/", ns="cap")
        assert code == 200 and "Directory listing" in body, (code, body)
        m = in_ns("web", ["curl", "-sS", "-m", "5", "http://127.0.0.1:15000/stats/prometheus"],
                  ns="cap").stdout
        assert re.search(r'istio_requests_total\{reporter="destination",[^}]*source_principal='
                         r'"spiffe://cluster.local/ns/cap/sa/client"[^}]*destination_principal='
                         r'"spiffe://cluster.local/ns/cap/sa/web"[^}]*connection_security_policy='
                         r'"mutual_tls"[^}]*response_code="200"', m), m
        # no sidecar, no rules: plaintext to the Pod address and the very port
        # the application binds on 0.0.0.0 ends at the sidecar's STRICT door
        web_ip = pod_ip("web", ns="cap")
        assert in_ns("bare", ["nft", "list", "table", "inet", "trellis"],
                     ns="cap").returncode != 0
        code, body = curl("bare", f"http://{web_ip}:8000/", ns="cap")
        assert code != 200 and "Directory listing" not in body, (code, body)
        assert re.search(r"^trellis_tls_plaintext_refused_total(\{[^}]*\})? [1-9]",
                         in_ns("web", ["curl", "-sS", "-m", "5",
                                       "http://127.0.0.1:15000/stats/prometheus"],
                               ns="cap").stdout, re.M)
        d = subprocess.run([TRELLIS, "down", "--state", state], capture_output=True, text=True,
                           timeout=60)
        assert d.returncode == 0, d.stderr
        assert not names & netns_list()
        assert not [e for e in names if os.path.exists(f"/etc/netns/{e}")]
    finally:
        cleanup(state)


# ---- loopback mode: no root, no namespaces ----

def _unprivileged():
    """(uid, gid, argv prefix) that runs a command as an unprivileged user: as
    root, `setpriv` to nobody; else the caller itself."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid(), []
    pw = pwd.getpwnam("nobody")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop to nobody")
    return pw.pw_uid, pw.pw_gid, [setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                                  "--clear-groups"]


def proc_uid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return -1


def lo_table(stdout):
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^(bookinfo/\S+)\s+(127\.0\.0\.1:\d+)\s+(127\.77\.\d+\.\d+)\s+"
                     r"(spiffe://\S+)\s+(\d+)\s+(\d+)\s+(yes|no)$", line)
        if m:
            rows[m.group(1)] = m.groups()
    return rows


@pytest.fixture(scope="module", params=["control", "static"])
def lo_mesh(request):
    """The bookinfo mesh in loopback mode, as an unprivileged user, in a
    scratch directory that user owns (state and a copy of the resources)."""
    uid, gid, prefix = _unprivileged()
    work = tempfile.mkdtemp(prefix="trellis-lo-")
    resources = os.path.join(work, "bookinfo")
    state = os.path.join(work, "state")
    shutil.copytree(BOOKINFO, resources)
    for d, _, files in os.walk(work):
        os.chown(d, uid, gid)
        for f in files:
            os.chown(os.path.join(d, f), uid, gid)
    before = netns_list()

    def run(argv, timeout=60):
        return subprocess.run(prefix + argv, capture_output=True, text=True, timeout=timeout,
                              cwd=work)

    try:
        extra = ["--static"] if request.param == "static" else []
        r = run([TRELLIS, "up", resources, "--loopback", "--state", state, "--detach"] + extra,
                timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        r.mode, r.uid, r.run, r.resources, r.netns_before = (request.param, uid, run,
                                                             resources, before)
        yield state, r
    finally:
        cleanup(state)
        shutil.rmtree(work, ignore_errors=True)


def lo_admin(r, workload):
    return lo_table(r.stdout)[f"bookinfo/{workload}"][1]


def lo_metrics(r, workload):
    with urllib.request.urlopen(f"http://{lo_admin(r, workload)}/stats/prometheus",
                                timeout=5) as f:
        return f.read().decode()


def lo_exec(r, state, workload, argv):
    return r.run([TRELLIS, "up", "--state", state, "--exec", f"bookinfo/{workload}", "--"] + argv)


def test_loopback_table_and_environment(lo_mesh):
    state, r = lo_mesh
    rows = lo_table(r.stdout)
    assert sorted(rows) == sorted(f"bookinfo/{w}" for w in WORKLOADS), r.stdout
    ips, admins = set(), set()
    for w in WORKLOADS:
        _, admin, ip, ident, proxy, app, ready = rows[f"bookinfo/{w}"]
        assert ident == f"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-{w.split('-')[0]}"
        assert ready == "yes" and ip != "127.0.0.1"
        # nothing of it runs as root (when the tests do, it runs as nobody)
        assert proc_uid(int(proxy)) == r.uid and proc_uid(int(app)) == r.uid
        ips.add(ip)
        admins.add(admin)
    assert len(ips) == len(admins) == len(WORKLOADS)
    assert netns_list() == r.netns_before  # no namespace made
    st = r.run([TRELLIS, "up", "--status", "--state", state])
    assert st.returncode == 0 and "6 of 6 workload(s) running" in st.stdout, st.stdout
    # the application's environment: its addresses, and every Service of its
    # namespace at its sidecar's outbound listener
    env = lo_exec(r, state, "productpage-v1", ["env"])
    assert env.returncode == 0, env.stderr
    e = dict(line.split("=", 1) for line in env.stdout.splitlines() if "=" in line)
    pod = rows["bookinfo/productpage-v1"][2]
    host = pod.split(".", 2)[2]
    assert e["TRELLIS_POD_IP"] == pod
    assert e["TRELLIS_APP_IP"] == f"127.78.{host}"
    assert e["TRELLIS_OUTBOUND_IP"] == f"127.79.{host}"
    assert e["REVIEWS_SERVICE_HOST"] == e["TRELLIS_OUTBOUND_IP"]
    assert e["REVIEWS_SERVICE_PORT"] == "9080"
    # the staged copy holds the loopback address, the user's file does not
    with open(os.path.join(state, "resources", "mesh.json")) as f:
        assert f'"podIP": "{pod}"' in f.read()
    with open(os.path.join(r.resources, "pods.yaml")) as f:
        assert "127.77." not in f.read()


def test_loopback_page_with_mtls(lo_mesh):
    state, r = lo_mesh
    out = lo_exec(r, state, "loadgen", [sys.executable, os.path.join(r.resources, "bookinfo.py"),
                                        "load", "http://productpage:9080/", "-n", "20", "-c",
                                        "2"])
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["status"] == {"200": 20}, res
    assert set(res["versions"]) <= {"v1", "v2"}  # the 90/10 canary: never v3
    # one page, with curl: the name in the Host header, the connection to the sidecar
    page = lo_exec(r, state, "loadgen", [
        "sh", "-c", "curl -sS -m 5 -f --connect-to "
        "productpage:9080:$PRODUCTPAGE_SERVICE_HOST:$PRODUCTPAGE_SERVICE_PORT "
        "http://productpage:9080/"])
    assert page.returncode == 0, page.stderr
    doc = json.loads(page.stdout)
    assert doc["service"] == "productpage" and doc["reviews_status"] == 200
    # each hop over mTLS, both principals in the destination's metrics
    for dst, src, sa in [("productpage-v1", "loadgen", "productpage"),
                         ("reviews-v1", "productpage", "reviews")]:
        text = lo_metrics(r, dst)
        lines = [ln for ln in text.splitlines() if ln.startswith("istio_requests_total{")
                 and 'reporter="destination"' in ln and 'response_code="200"' in ln]
        assert lines, text
        assert 'connection_security_policy="mutual_tls"' in lines[0]
        assert (f'source_principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-{src}"'
                in lines[0])
        assert (f'destination_principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-{sa}"'
                in lines[0])
    # reviews v2/v3 -> ratings, when the canary sent any request to v2
    if res["versions"].get("v2"):
        assert re.search(r'istio_requests_total\{reporter="destination",[^}]*source_principal='
                         r'"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"[^}]*'
                         r'connection_security_policy="mutual_tls"[^}]*response_code="200"',
                         lo_metrics(r, "ratings-v1"))
    # STRICT: plaintext straight to the Pod address (around the sidecar) gets no page
    pod = lo_table(r.stdout)["bookinfo/productpage-v1"][2]
    c = subprocess.run(["curl", "-sS", "-m", "5", f"http://{pod}:9080/"], capture_output=True,
                       text=True, timeout=30)
    assert c.returncode != 0 and "productpage" not in c.stdout


def test_loopback_denied_edge(lo_mesh):
    state, r = lo_mesh
    c = lo_exec(r, state, "loadgen", [
        "sh", "-c", "curl -sS -m 5 -o - -w '\\n%{http_code}' --connect-to "
        "ratings:9080:$RATINGS_SERVICE_HOST:$RATINGS_SERVICE_PORT http://ratings:9080/ratings/0"])
    body, _, code = c.stdout.rpartition("\n")
    assert code == "403" and body == "RBAC: access denied", c.stdout + c.stderr
    assert re.search(r'istio_requests_total\{reporter="destination",[^}]*source_principal='
                     r'"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-loadgen"[^}]*'
                     r'response_code="403"[^}]*\} [1-9]', lo_metrics(r, "ratings-v1"))


def test_loopback_canary_shift(lo_mesh):
    state, r = lo_mesh
    shutil.copy(os.path.join(ROOT, "examples", "bookinfo-canary", "reviews-v2.yaml"),
                os.path.join(r.resources, "reviews-canary.yaml"))
    gen = re.compile(r"^trellis_config_generation (\d+)$", re.M)
    before = int(gen.search(lo_metrics(r, "productpage-v1")).group(1))
    rl = r.run([TRELLIS, "up", "--reload", "--state", state])
    assert rl.returncode == 0, rl.stderr
    assert "bookinfo/productpage-v1: new model" in rl.stdout
    t0 = time.monotonic()
    while int(gen.search(lo_metrics(r, "productpage-v1")).group(1)) == before:
        assert time.monotonic() - t0 < 5, "productpage's proxy did not load its new model"
        time.sleep(0.05)
    out = lo_exec(r, state, "loadgen", [sys.executable, os.path.join(r.resources, "bookinfo.py"),
                                        "load", "http://productpage:9080/", "-n", "20", "-c",
                                        "2"])
    res = json.loads(out.stdout)
    assert res["status"] == {"200": 20} and res["versions"] == {"v2": 20}, res


def test_loopback_down(lo_mesh):
    state, r = lo_mesh
    procs, netns, etc = recorded(state)
    assert len(procs) == 3 * len(WORKLOADS) + (r.mode == "control")
    assert all(alive(p) for p in procs) and not netns and not etc
    pod = lo_table(r.stdout)["bookinfo/ratings-v1"][2]
    d = r.run([TRELLIS, "down", "--state", state])
    assert d.returncode == 0, d.stderr
    assert "stopped 6 workload(s)" in d.stdout
    assert not [p for p in procs if alive(p)]
    assert not os.path.exists(os.path.join(state, "up.state"))
    # the addresses are free again: nothing listens on a Pod address
    c = subprocess.run(["curl", "-sS", "-m", "2", f"http://{pod}:9080/"], capture_output=True,
                       text=True, timeout=30)
    assert "Connection refused" in c.stderr or "Couldn't connect" in c.stderr, c.stderr
