#!/usr/bin/python3
"""trellis benchmark driver: mTLS hop pairs side by side with HAProxy and nginx.

Topology per pair (all on 127.0.0.1):

    wrk --http--> proxy A (outbound) ==mTLS 1.3, keep-alive==> proxy B (inbound) --http--> backend

The "direct" pair is wrk -> backend. Every pair is started, measured and
stopped in turn; the order rotates each round and the median over rounds is
reported; ratios are taken per round and reported as their median with
min-max. --baseline PATH adds "trellis-base", a second trellis binary
configured like "trellis", to the same rounds. See bench/README.md for what
each number means.

Run through bench/run.sh (uses Debian's /usr/bin/python3 for the PKI helper).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
WRK_DIR = BENCH / "wrk"
sys.path.insert(0, str(REPO / "tests" / "integration"))
import pki  # noqa: E402

NGINX_ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
BODY_SIZE = 1024
SERVER_NAME = "server"  # CN of the server SVID, checked by nginx/HAProxy
SERVER_ID = "spiffe://cluster.local/ns/default/sa/server"

# Fixed loopback port block 18000-18099; only these are used.
PORT_BLOCK = (18000, 18099)
PORTS = {
    "backend": 18000,
    "haproxy": (18010, 18011),
    "nginx": (18020, 18021),
    "trellis": (18030, 18031),
    "trellis_admin": (18032, 18033),
    "trellis-h2hop": (18034, 18035),
    "trellis-h2hop_admin": (18036, 18037),
    "trellis-base": (18050, 18051),
    "trellis-base_admin": (18052, 18053),
    "trellis-authz": (18070, 18071),
    "trellis-authz_admin": (18072, 18073),
}
ALL_PORTS = [18000, 18010, 18011, 18020, 18021, 18030, 18031, 18032, 18033,
             18034, 18035, 18036, 18037, 18050, 18051, 18052, 18053, 18070, 18071, 18072, 18073]
# bench/h2.py uses 18040-18046 and 18060-18063 (its own PORTS); keep the sets apart.

PAIR_NAMES = ["direct", "haproxy", "nginx", "trellis", "trellis-base", "trellis-h2hop",
              "trellis-authz"]
# trellis-base: the --baseline binary, configured exactly like "trellis";
# only run when --baseline is given.
BASELINE_PAIR = "trellis-base"
# Optional pairs: a config this trellis build does not accept yet makes them
# "skipped" (like a missing binary), not "failed".
OPTIONAL_PAIRS = ["trellis-h2hop", "trellis-authz"]
# trellis-h2hop: the hop A -> B is multiplexed HTTP/2 over mTLS; B turns it
# back into HTTP/1.1 ("original") for the HTTP/1.1 backend.
H2HOP_A_CLUSTER = "protocol: http2, http2: {max_streams_per_connection: 100}, "
H2HOP_B_CLUSTER = "protocol: original, "
PEERS = ["haproxy", "nginx"]
# trellis-authz: as trellis, with a realistic policy set on B's inbound listener (issue 9):
# default deny (an ALLOW policy without rules) and 20 ALLOW policies, one of which admits A's
# identity to the paths wrk asks for; every request is decided by it.
AUTHZ_POLICIES = "\n".join(
    ["    authorization:", "      policies:", "        - {name: default/deny-all}"]
    + [f"        - {{name: default/allow-{i:02d}, rules: [{{from: [{{principals: "
       f"[\"cluster.local/ns/team{i:02d}/sa/caller\"]}}], to: [{{methods: [GET], "
       f"paths: [\"/api/{i:02d}/*\"]}}]}}]}}" for i in range(19)]
    + ["        - {name: default/allow-client, rules: [{from: [{principals: "
       "[\"cluster.local/ns/default/sa/client\"]}], to: [{methods: [GET], "
       "paths: [\"/\", \"/slow\"]}]}]}"]) + "\n"

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


class Skip(Exception):
    pass


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------
# Processes we start and the /proc numbers we read from them


def _read_stat(pid: int):
    """(ppid, utime+stime ticks) of pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    # comm may contain spaces and parens: split after the last ')'.
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def _descendants(root: int) -> List[int]:
    """root and all its live descendants (nginx master + workers, etc.)."""
    children: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _read_stat(int(name))
        if st is not None:
            children.setdefault(st[0], []).append(int(name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if _read_stat(p) is None:
            continue
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _smaps_rollup(pid: int) -> Dict[str, int]:
    """Rss and Pss in KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss"):
                    out[k.lower() + "_kib"] = int(v.split()[0])
    except OSError:
        pass
    return out


class Proc:
    """A process tree we started; stopped only through the PIDs we know."""

    def __init__(self, name: str, argv: List[str], workdir: Path, env=None):
        self.name = name
        self.argv = argv
        self.log_path = workdir / f"{name}.out"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                      start_new_session=True)
        self.pid = self.popen.pid
        self.known_pids: Dict[int, str] = {}  # pid -> cmdline when first seen

    def pids(self) -> List[int]:
        ps = _descendants(self.pid) if self.popen.poll() is None else []
        for p in ps:
            if p not in self.known_pids:
                self.known_pids[p] = _cmdline(p)
        return ps

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_ticks(self) -> Dict[int, int]:
        out = {}
        for p in self.pids():
            st = _read_stat(p)
            if st is not None:
                out[p] = st[1]
        return out

    def memory(self) -> List[dict]:
        """Per-process RSS/PSS. 'worker' = a leaf of the tree (nginx worker,
        the single HAProxy process); 'master' = a process with children."""
        ps = self.pids()
        parents = set()
        for p in ps:
            st = _read_stat(p)
            if st is not None:
                parents.add(st[0])
        out = []
        for p in ps:
            m = _smaps_rollup(p)
            if m:
                m.update(pid=p, role="master" if p in parents else "worker",
                         cmd=_cmdline(p)[:80])
                out.append(m)
        return out

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        self.pids()
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Children (e.g. nginx workers) that outlived their parent: by PID,
        # and only if that PID still runs what we saw there (no reuse).
        for p, cmd in sorted(self.known_pids.items()):
            if p != self.pid and cmd and _cmdline(p) == cmd:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=timeout)
        self._log.close()


def cpu_delta_s(before: Dict[int, int], after: Dict[int, int]) -> float:
    ticks = sum(v - before.get(p, 0) for p, v in after.items())
    return ticks / CLK_TCK


# --------------------------------------------------------------------------
# Ports and readiness


def check_ports_free(ports: Optional[List[int]] = None) -> None:
    busy = []
    for port in (ALL_PORTS if ports is None else ports):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Like the servers do: TIME_WAIT leftovers of a previous run are fine,
        # a live listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            busy.append(port)
        finally:
            s.close()
    if busy:
        raise BenchError(f"ports in use in 127.0.0.1:{PORT_BLOCK[0]}-{PORT_BLOCK[1]}: {busy}")


def established_to(port: int) -> int:
    """ESTABLISHED TCP connections whose remote port is `port` (client side
    of connections to a local listener), from /proc/net/tcp{,6}."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    c = line.split()
                    if c[3] == "01" and int(c[2].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


def wait_port(port: int, procs: List[Proc], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise BenchError(f"{p.name} exited (rc={p.popen.returncode}):\n{p.tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"port {port} not accepting after {timeout}s:\n" +
                     "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs))


def http_get(port: int, path: str = "/", timeout: float = 5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": "bench.local"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def https_get(port: int, certs: dict, with_client_cert: bool, timeout: float = 5.0):
    """GET / straight at an inbound proxy. Returns (status or None, error)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(certs["ca"])
    if with_client_cert:
        ctx.load_cert_chain(certs["client_cert"], certs["client_key"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                line = data.split(b"\r\n", 1)[0].split()
                if len(line) >= 2 and line[1].isdigit():
                    return int(line[1]), ""
                return None, f"no HTTP status in {data[:60]!r}"
    except (OSError, ssl.SSLError) as e:
        return None, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------
# Configurations


def nginx_argv(prefix: Path, conf: Path) -> List[str]:
    return ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
            "-g", "daemon off;"]


def nginx_common(prefix: Path) -> str:
    # Own pid/log/temp paths so nothing touches /var or /run.
    return f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
events {{ worker_connections 4096; }}
"""


def nginx_http_common(prefix: Path) -> str:
    # keepalive_requests is raised so that neither side closes a keep-alive
    # connection after nginx's default 1000 requests (HAProxy has no limit).
    return f"""    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
"""


def start_backend(tmp: Path) -> Proc:
    prefix = tmp / "backend"
    prefix.mkdir()
    body = "x" * BODY_SIZE
    conf = prefix / "nginx.conf"
    conf.write_text(f"""load_module {NGINX_ECHO_MODULE};
{nginx_common(prefix)}
http {{
{nginx_http_common(prefix)}
    server {{
        listen 127.0.0.1:{PORTS['backend']} backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
        # ~1 ms of backend work; echo adds the final newline (1024 bytes).
        location = /slow {{
            default_type text/plain;
            echo_sleep 0.001;
            echo "{body[:-1]}";
        }}
    }}
}}
""")
    p = Proc("backend", nginx_argv(prefix, conf), prefix)
    wait_port(PORTS["backend"], [p])
    for path in ("/", "/slow"):
        st, b = http_get(PORTS["backend"], path)
        if st != 200 or len(b) != BODY_SIZE:
            raise BenchError(f"backend {path}: status {st}, {len(b)} bytes")
    return p


def haproxy_pem(certs: dict, who: str, tmp: Path) -> str:
    # HAProxy wants certificate and key in one file.
    out = tmp / f"{who}-combined.pem"
    if not out.exists():
        out.write_text(Path(certs[f"{who}_cert"]).read_text() +
                       Path(certs[f"{who}_key"]).read_text())
        out.chmod(0o600)
    return str(out)


HAPROXY_GLOBAL = """global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
"""


def start_haproxy(tmp: Path, certs: dict) -> List[Proc]:
    pa, pb = PORTS["haproxy"]
    d = tmp / "haproxy"
    d.mkdir()
    cfg_a = d / "a.cfg"
    cfg_a.write_text(HAPROXY_GLOBAL + f"""
frontend out
    bind 127.0.0.1:{pa}
    default_backend mesh
backend mesh
    http-reuse always
    server b 127.0.0.1:{pb} ssl crt {haproxy_pem(certs, 'client', d)} ca-file {certs['ca']} verify required verifyhost {SERVER_NAME} ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3
""")
    cfg_b = d / "b.cfg"
    cfg_b.write_text(HAPROXY_GLOBAL + f"""
frontend in
    bind 127.0.0.1:{pb} ssl crt {haproxy_pem(certs, 'server', d)} ca-file {certs['ca']} verify required ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3
    default_backend app
backend app
    http-reuse always
    server app 127.0.0.1:{PORTS['backend']}
""")
    procs = []
    for name, cfg in (("haproxy-b", cfg_b), ("haproxy-a", cfg_a)):
        r = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True,
                           text=True, timeout=20)
        if r.returncode != 0:
            raise BenchError(f"{name} config check failed:\n{r.stdout}{r.stderr}")
        procs.append(Proc(name, ["haproxy", "-f", str(cfg), "-db"], d))
    return procs[::-1]  # [A, B]


def start_nginx_pair(tmp: Path, certs: dict) -> List[Proc]:
    pa, pb = PORTS["nginx"]
    procs = []
    pre_b = tmp / "nginx-b"
    pre_b.mkdir()
    conf_b = pre_b / "nginx.conf"
    conf_b.write_text(f"""{nginx_common(pre_b)}
http {{
{nginx_http_common(pre_b)}
    upstream app {{
        server 127.0.0.1:{PORTS['backend']};
        keepalive 32;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{pb} ssl backlog=4096;
        ssl_certificate {certs['server_cert']};
        ssl_certificate_key {certs['server_key']};
        ssl_protocols TLSv1.3;
        ssl_client_certificate {certs['ca']};
        ssl_verify_client on;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    procs.append(Proc("nginx-b", nginx_argv(pre_b, conf_b), pre_b))
    pre_a = tmp / "nginx-a"
    pre_a.mkdir()
    conf_a = pre_a / "nginx.conf"
    conf_a.write_text(f"""{nginx_common(pre_a)}
http {{
{nginx_http_common(pre_a)}
    upstream mesh {{
        server 127.0.0.1:{pb};
        keepalive 32;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{pa} backlog=4096;
        location / {{
            proxy_pass https://mesh;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_certificate {certs['client_cert']};
            proxy_ssl_certificate_key {certs['client_key']};
            proxy_ssl_trusted_certificate {certs['ca']};
            proxy_ssl_verify on;
            proxy_ssl_name {SERVER_NAME};
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;
        }}
    }}
}}
""")
    procs.insert(0, Proc("nginx-a", nginx_argv(pre_a, conf_a), pre_a))
    return procs  # [A, B]


def trellis_bin(args) -> Path:
    return Path(args.trellis) if args.trellis else REPO / "build" / "trellis"


def trellis_yaml(certs: dict, side: str, pair: str = "trellis", backend: Optional[int] = None,
                 a_cluster: str = "", b_cluster: str = "", ports=None, admin_ports=None,
                 b_listener: str = "") -> str:
    """Config of side "a" (outbound) or "b" (inbound) of a trellis pair.
    a_cluster/b_cluster are extra flow-mapping fields ("key: value, ")
    inserted into the cluster of that side (e.g. the hop protocol); b_listener,
    block-style lines appended to B's listener (e.g. its authorization).
    ports/admin_ports (A, B) default to PORTS[pair] / PORTS[pair + "_admin"]."""
    pa, pb = ports or PORTS[pair]
    admin = (admin_ports or PORTS[pair + "_admin"])[0 if side == "a" else 1]
    backend = PORTS["backend"] if backend is None else backend
    who = "client" if side == "a" else "server"
    head = f"""workers: 1
log_level: error
admin: {{address: 127.0.0.1:{admin}}}
tls:
  - {{name: id, cert: {certs[who + '_cert']}, key: {certs[who + '_key']}, ca: {certs['ca']}, trust_domain: cluster.local}}
route_tables:
  - name: rt
    virtual_hosts: [{{name: all, domains: ["*"], routes: [{{name: all, match: {{path: {{prefix: /}}}}, cluster: c}}]}}]
"""
    if side == "a":
        return head + f"""listeners:
  - {{name: out, address: 127.0.0.1:{pa}, direction: outbound, protocol: http, route_table: rt}}
clusters:
  - {{name: c, {a_cluster}endpoints: [{{address: 127.0.0.1:{pb}}}], tls: {{context: id, server_ids: ["{SERVER_ID}"]}}}}
"""
    return head + f"""listeners:
  - name: in
    address: 127.0.0.1:{pb}
    direction: inbound
    protocol: http
    tls: {{mode: STRICT, context: id}}
    route_table: rt
{b_listener}clusters:
  - {{name: c, {b_cluster}endpoints: [{{address: 127.0.0.1:{backend}}}]}}
"""


def trellis_check(binary: Path, cfg: Path) -> Optional[str]:
    """None if `trellis proxy --check` accepts cfg, else its first message."""
    try:
        r = subprocess.run([str(binary), "proxy", "--config", str(cfg), "--check"],
                           capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "trellis proxy --check timed out"
    if r.returncode == 0:
        return None
    text = (r.stderr + r.stdout).strip()
    return text.splitlines()[0] if text else f"exit status {r.returncode}"


def start_trellis(tmp: Path, certs: dict, binary: Path, pair: str = "trellis",
                  config_error=None, **yaml_kw) -> List[Proc]:
    """Start B then A. config_error: exception class raised when --check
    rejects a config (Skip for optional pairs); None = start without it."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise Skip(f"{binary} does not exist yet; build trellis first "
                   f"(meson setup build && ninja -C build)")
    d = tmp / pair
    d.mkdir()
    cfgs = {}
    for side in ("b", "a"):
        cfgs[side] = d / f"{side}.yaml"
        cfgs[side].write_text(trellis_yaml(certs, side, pair, **yaml_kw))
        if config_error is not None:
            err = trellis_check(binary, cfgs[side])
            if err is not None:
                raise config_error(f"config {side.upper()} not accepted by {binary}: {err}")
    procs = []
    for side in ("b", "a"):
        procs.append(Proc(f"{pair}-{side}", [str(binary), "proxy", "--config", str(cfgs[side])], d))
    return procs[::-1]  # [A, B]


# --------------------------------------------------------------------------
# Where a trellis pair's time goes during a run: its own event-loop turns
# (trellis_event_loop_* on the admin endpoint) and the kernel's scheduling
# delay of each thread (/proc/PID/task/TID/schedstat: run time, time spent
# runnable but waiting for a CPU, time slices).


def loop_samples(admin_port: int) -> Dict[str, float]:
    """trellis_event_loop_* samples ('name{labels}' -> value); {} when the
    binary has none (an older baseline) or the scrape fails."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
        c.request("GET", "/stats/prometheus")
        text = c.getresponse().read().decode(errors="replace")
        c.close()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("trellis_event_loop_"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def schedstat(proc: "Proc") -> Dict[int, List[int]]:
    """{tid: [run_ns, wait_ns, slices]} of every thread of the process tree."""
    out = {}
    for pid in proc.pids():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    out[int(t)] = [int(x) for x in f.read().split()[:3]]
            except (OSError, ValueError):
                pass
    return out


def _tid_of(key: str) -> int:
    return int(key.split('tid="', 1)[1].split('"', 1)[0])


def loop_report(before: Dict[str, float], after: Dict[str, float], sched0: Dict[int, List[int]],
                sched1: Dict[int, List[int]], main_pid: int, t0: float, t1: float) -> dict:
    """One proxy's worker threads during [t0, t1] (time.monotonic()): turns,
    turns >= 1 ms and above each bucket bound, where the slow turns' time
    went, the longest turn if it fell in the window, and scheduling delay."""
    def delta(k):
        return after.get(k, 0.0) - before.get(k, 0.0)
    workers = sorted({_tid_of(k) for k in after if "tid=" in k} - {main_pid})
    rep: dict = {"worker_tids": workers}
    if not workers:
        return rep
    tot: Dict[str, float] = {}
    for k in after:
        if "tid=" not in k or _tid_of(k) not in workers:
            continue
        name = k.split("{", 1)[0]
        labels = k.split("{", 1)[1].rstrip("}")
        lab = ",".join(x for x in labels.split(",") if not x.startswith("tid="))
        if name in ("trellis_event_loop_turn_seconds_bucket",
                    "trellis_event_loop_turn_seconds_count",
                    "trellis_event_loop_slow_turns_total",
                    "trellis_event_loop_slow_turn_phase_seconds_total",
                    "trellis_event_loop_slow_turn_calls_total",
                    "trellis_event_loop_wakeup_delay_seconds_bucket",
                    "trellis_event_loop_wakeup_delay_seconds_count"):
            key = name + ("{" + lab + "}" if lab else "")
            tot[key] = tot.get(key, 0.0) + delta(k)
    turns = tot.get("trellis_event_loop_turn_seconds_count", 0.0)
    rep["turns"] = turns
    # Turns longer than each bound: count minus the cumulative bucket.
    rep["turns_over_us"] = {
        str(int(float(k.split('le="', 1)[1].rstrip('"}')) * 1e6 + 0.5)): turns - v
        for k, v in tot.items()
        if k.startswith("trellis_event_loop_turn_seconds_bucket") and "+Inf" not in k}
    rep["slow_turns"] = tot.get("trellis_event_loop_slow_turns_total", 0.0)
    rep["slow_phase_s"] = {k.split('phase="', 1)[1].rstrip('"}'): v for k, v in tot.items()
                           if k.startswith("trellis_event_loop_slow_turn_phase_seconds_total")}
    rep["slow_calls"] = {k.split('phase="', 1)[1].rstrip('"}'): v for k, v in tot.items()
                         if k.startswith("trellis_event_loop_slow_turn_calls_total")}
    wake = tot.get("trellis_event_loop_wakeup_delay_seconds_count", 0.0)
    rep["timed_wakeups"] = wake
    rep["wakeups_late_over_1ms"] = wake - tot.get(
        'trellis_event_loop_wakeup_delay_seconds_bucket{le="0.001"}', 0.0)
    longest = []
    for t in workers:
        start = after.get(f'trellis_event_loop_longest_turn_start_seconds{{tid="{t}"}}', 0.0)
        if t0 <= start <= t1:
            longest.append({
                "tid": t, "offset_s": round(start - t0, 3),
                "duration_us": round(after[f'trellis_event_loop_longest_turn_seconds{{tid="{t}"}}'] * 1e6),
                "phase_us": {ph: round(after.get(f'trellis_event_loop_longest_turn_phase_seconds{{tid="{t}",phase="{ph}"}}', 0.0) * 1e6)
                             for ph in ("io", "deferred", "timers")},
                "calls": {ph: after.get(f'trellis_event_loop_longest_turn_calls{{tid="{t}",phase="{ph}"}}', 0.0)
                          for ph in ("io", "deferred", "timers")}})
    rep["longest_in_window"] = longest
    # Scheduling: how long the worker threads waited for a CPU while runnable.
    run = wait = slices = 0
    for t in workers:
        if t in sched0 and t in sched1:
            run += sched1[t][0] - sched0[t][0]
            wait += sched1[t][1] - sched0[t][1]
            slices += sched1[t][2] - sched0[t][2]
    rep["sched"] = {"run_ms": run / 1e6, "runnable_wait_ms": wait / 1e6, "slices": slices,
                    "mean_wait_us": (wait / 1e3 / slices) if slices else None}
    return rep


class LoopWatch:
    """A trellis pair's loop statistics and thread scheduling around one run:
    start() before it, stop() after it returns {"A": report, "B": report}."""

    def __init__(self, procs: List["Proc"], admin_ports):
        self.procs, self.admin_ports = procs, admin_ports

    def start(self) -> None:
        self.ls0 = [loop_samples(a) for a in self.admin_ports]
        self.ss0 = [schedstat(p) for p in self.procs]
        self.t0 = time.monotonic()

    def stop(self) -> dict:
        t1 = time.monotonic()
        ls1 = [loop_samples(a) for a in self.admin_ports]
        ss1 = [schedstat(p) for p in self.procs]
        return {side: loop_report(self.ls0[i], ls1[i], self.ss0[i], ss1[i], self.procs[i].pid,
                                  self.t0, t1)
                for i, side in enumerate(("A", "B"))}


def loop_line(name: str, r: dict) -> str:
    if "turns" not in r:
        return f"{name}: no loop statistics (binary without trellis_event_loop_*)"
    over = r["turns_over_us"]
    sc = r["sched"]
    lng = "; ".join(f"longest {x['duration_us']}us at +{x['offset_s']}s (io {x['calls']['io']:.0f} "
                    f"calls {x['phase_us']['io']}us, deferred {x['calls']['deferred']:.0f} "
                    f"{x['phase_us']['deferred']}us, timers {x['calls']['timers']:.0f} "
                    f"{x['phase_us']['timers']}us)" for x in r["longest_in_window"])
    return (f"{name}: {r['turns']:.0f} turns, >1ms {over.get('1000', 0):.0f}, >2.5ms "
            f"{over.get('2500', 0):.0f}, >10ms {over.get('10000', 0):.0f}; {lng or 'longest turn outside the run'}; "
            f"runnable-but-waiting {sc['runnable_wait_ms']:.1f} ms over {sc['slices']} slices "
            f"(mean {(sc['mean_wait_us'] or 0):.0f} us), timed wake-ups late >1ms "
            f"{r['wakeups_late_over_1ms']:.0f}/{r['timed_wakeups']:.0f}")


# --------------------------------------------------------------------------
# wrk


def wrk(port: int, path: str, conns: int, seconds: int, paced_delay_ms: Optional[float] = None,
        background: bool = False):
    url = f"http://127.0.0.1:{port}{path}"
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s"]
    if paced_delay_ms is not None:
        argv += ["-s", str(WRK_DIR / "paced.lua"), url, "--", f"{paced_delay_ms:.3f}"]
    else:
        argv += ["-s", str(WRK_DIR / "report.lua"), url]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         stdin=subprocess.DEVNULL)
    if background:
        return p
    return wrk_collect(p, seconds)


def wrk_collect(p: subprocess.Popen, seconds: int) -> dict:
    try:
        out, _ = p.communicate(timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=5)
        raise BenchError("wrk did not finish in time")
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            r = json.loads(line[len("BENCHJSON "):])
            r["rate_rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
            r["errors"] = sum(r[k] for k in r if k.startswith("err_"))
            return r
    raise BenchError(f"wrk failed (rc={p.returncode}):\n{out[-2000:]}")


class Pacer:
    """Chooses wrk's mean per-request delay so that conns/(delay + latency +
    loop overhead) hits the target rate, learning the overhead per pair/path
    from the previous run (wrk's timers only take whole milliseconds)."""

    def __init__(self, rate: float, conns: int):
        self.cycle_ms = conns * 1000.0 / rate
        self.overhead: Dict[str, float] = {}

    def delay(self, key: str, guess_ms: float) -> float:
        return max(1.0, self.cycle_ms - self.overhead.get(key, guess_ms))

    def learn(self, key: str, used_delay: float, res: dict, conns: int) -> None:
        if res["requests"] > 0:
            cycle = conns * res["duration_us"] / 1000.0 / res["requests"]
            self.overhead[key] = cycle - used_delay


# --------------------------------------------------------------------------
# One pair, one round


def measure_pair(pair: str, procs: List[Proc], port: int, args, pacer: Pacer,
                 certs: dict, sanity: bool) -> dict:
    res: dict = {"pair": pair}
    proxy = bool(procs)

    def cpu():
        return [p.cpu_ticks() for p in procs]

    def cpu_used(before, after):
        return [cpu_delta_s(b, a) for b, a in zip(before, after)]  # [A, B] seconds

    # Correctness first: a 1 KiB 200 through the chain and, for proxies, an
    # inbound side that refuses a client without a certificate.
    st, body = http_get(port, "/")
    if st != 200 or len(body) != BODY_SIZE:
        raise BenchError(f"{pair}: GET / via {port} gave {st}, {len(body)} bytes")
    if proxy and sanity:
        inbound = PORTS[pair][1]
        ok_st, ok_err = https_get(inbound, certs, with_client_cert=True)
        no_st, no_err = https_get(inbound, certs, with_client_cert=False)
        res["sanity"] = {"inbound_with_cert": ok_st or ok_err,
                         "inbound_without_cert": no_st or no_err}
        if ok_st != 200:
            raise BenchError(f"{pair}: inbound with client cert failed: {ok_err or ok_st}")
        if no_st == 200:
            raise BenchError(f"{pair}: inbound accepted a client without certificate")

    if proxy:
        time.sleep(0.5)
        res["idle_mem"] = [p.memory() for p in procs]

    # Warm-up: fill connection pools, fault in buffers.
    wrk(port, "/", args.conns, 1)

    conns = args.conns
    # trellis pairs: loop statistics and scheduling delay around each run.
    watch = (LoopWatch(procs, PORTS[pair + "_admin"]) if pair.startswith("trellis") else None)
    for key, path, guess in (("lat", "/", 0.4), ("echo", "/slow", 1.6)):
        k = f"{pair}:{key}"
        d = pacer.delay(k, guess)
        if watch:
            watch.start()
        c0 = cpu()
        r = wrk(port, path, conns, args.lat_seconds, paced_delay_ms=d)
        c1 = cpu()
        if watch:
            r["loop"] = watch.stop()
        pacer.learn(k, d, r, conns)
        r["delay_ms"] = d
        if proxy:
            r["proxy_cpu_s_ab"] = cpu_used(c0, c1)
            r["proxy_cpu_s"] = sum(r["proxy_cpu_s_ab"])
            r["cpu_us_per_req"] = r["proxy_cpu_s"] * 1e6 / max(1, r["requests"])
        res[key] = r
        log(f"  {pair:8s} {key:4s} rate {r['rate_rps']:7.1f}/s  p50 {r['p50_us']}us "
            f"p99 {r['p99_us']}us p99.9 {r['p999_us']}us max {r.get('lat_max_us')}us "
            f"errors {r['errors']}")
        for side, lr in r.get("loop", {}).items():
            log(f"    {loop_line(side, lr)}")

    c0 = cpu()
    r = wrk(port, "/", conns, args.thr_seconds)
    c1 = cpu()
    if proxy:
        r["proxy_cpu_s_ab"] = cpu_used(c0, c1)
        r["proxy_cpu_s"] = sum(r["proxy_cpu_s_ab"])
        r["cpu_us_per_req"] = r["proxy_cpu_s"] * 1e6 / max(1, r["requests"])
    res["thr"] = r
    if proxy:
        # Connections A keeps open to B after the max run: a pool of
        # HTTP/1.1 connections, or one multiplexed h2 connection.
        res["hop_conns_after_max"] = established_to(PORTS[pair][1])
    log(f"  {pair:8s} max  {r['rate_rps']:9.0f} req/s errors {r['errors']}")

    if proxy:
        p = wrk(port, "/", 64, args.mem_seconds, background=True)
        time.sleep(args.mem_seconds / 2.0)
        res["load64_mem"] = [pp.memory() for pp in procs]
        res["load64"] = wrk_collect(p, args.mem_seconds)
    for p in procs:
        if not p.alive():
            raise BenchError(f"{p.name} died during the run:\n{p.tail()}")
    return res


# --------------------------------------------------------------------------
# Aggregation and output


def _mem_sum(mem: List[List[dict]], role: str, key: str) -> Optional[int]:
    vals = [m[key] for proc in mem for m in proc if m["role"] == role and key in m]
    return sum(vals) if vals else None


def round_metrics(r: dict, direct: Optional[dict]) -> Dict[str, Optional[float]]:
    """Flatten one round's result into the metrics of the summary table."""
    m: Dict[str, Optional[float]] = {}
    for q in ("p50", "p90", "p99", "p999"):
        m[f"lat_{q}_us"] = r["lat"][f"{q}_us"]
        m[f"added_{q}_us"] = (r["lat"][f"{q}_us"] - direct["lat"][f"{q}_us"]) if direct else None
    m["lat_rate_rps"] = r["lat"]["rate_rps"]
    m["echo_p50_us"] = r["echo"]["p50_us"]
    m["echo_p99_us"] = r["echo"]["p99_us"]
    m["echo_added_p50_pct"] = ((r["echo"]["p50_us"] - direct["echo"]["p50_us"]) * 100.0 /
                               direct["echo"]["p50_us"]) if direct else None
    m["echo_rate_rps"] = r["echo"]["rate_rps"]
    m["max_rps"] = r["thr"]["rate_rps"]
    m["cpu_us_per_req_max"] = r["thr"].get("cpu_us_per_req")
    m["cpu_us_per_req_1k"] = r["lat"].get("cpu_us_per_req")
    if "idle_mem" in r:
        for when, mem in (("idle", r["idle_mem"]), ("c64", r["load64_mem"])):
            for role in ("worker", "master"):
                for k in ("pss_kib", "rss_kib"):
                    m[f"{when}_{k}_{role}"] = _mem_sum(mem, role, k)
    return m


ROWS = [
    # key, label, better ("low"/"high"), format
    ("lat_rate_rps", "fixed-rate achieved req/s", None, "{:.0f}"),
    ("lat_p50_us", "latency p50 @1k/s (us)", "low", "{:.0f}"),
    ("lat_p90_us", "latency p90 @1k/s (us)", "low", "{:.0f}"),
    ("lat_p99_us", "latency p99 @1k/s (us)", "low", "{:.0f}"),
    ("lat_p999_us", "latency p99.9 @1k/s (us)", "low", "{:.0f}"),
    ("added_p50_us", "added p50 vs direct (us)", "low", "{:.0f}"),
    ("added_p90_us", "added p90 vs direct (us)", "low", "{:.0f}"),
    ("added_p99_us", "added p99 vs direct (us)", "low", "{:.0f}"),
    ("added_p999_us", "added p99.9 vs direct (us)", "low", "{:.0f}"),
    ("echo_p50_us", "1ms backend p50 (us)", "low", "{:.0f}"),
    ("echo_added_p50_pct", "1ms backend added p50 (%)", "low", "{:.1f}"),
    ("max_rps", "max throughput (req/s)", "high", "{:.0f}"),
    ("cpu_us_per_req_max", "proxy CPU/req @max (us)", "low", "{:.1f}"),
    ("cpu_us_per_req_1k", "proxy CPU/req @1k/s (us)", "low", "{:.1f}"),
    ("idle_pss_kib_worker", "idle PSS worker A+B (KiB)", "low", "{:.0f}"),
    ("idle_rss_kib_worker", "idle RSS worker A+B (KiB)", "low", "{:.0f}"),
    ("idle_pss_kib_master", "idle PSS master A+B (KiB)", "low", "{:.0f}"),
    ("idle_rss_kib_master", "idle RSS master A+B (KiB)", "low", "{:.0f}"),
    ("c64_pss_kib_worker", "64-conn PSS worker A+B (KiB)", "low", "{:.0f}"),
    ("c64_rss_kib_worker", "64-conn RSS worker A+B (KiB)", "low", "{:.0f}"),
    ("c64_pss_kib_master", "64-conn PSS master A+B (KiB)", "low", "{:.0f}"),
    ("c64_rss_kib_master", "64-conn RSS master A+B (KiB)", "low", "{:.0f}"),
]


def medians(rounds: List[Dict[str, Optional[float]]]) -> Dict[str, Optional[float]]:
    keys = {k for r in rounds for k in r}
    out = {}
    for k in sorted(keys):
        vals = [r[k] for r in rounds if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


# Ratio columns: name -> (numerator pair, denominator pairs). With several
# denominator pairs the best of them in the same round is taken (lowest, or
# highest for "high" metrics).
RATIOS = {
    "trellis/best": ("trellis", PEERS),
    "trellis/base": ("trellis", [BASELINE_PAIR]),
    "h2hop/trellis": ("trellis-h2hop", ["trellis"]),
    "authz/trellis": ("trellis-authz", ["trellis"]),
}
# Keys of the JSON's median-ratio tables (schema 1 had the first two).
RATIO_JSON_KEYS = {"trellis/best": "trellis_over_best_peer", "h2hop/trellis": "h2hop_over_trellis",
                   "trellis/base": "trellis_over_base", "authz/trellis": "authz_over_trellis"}


def per_round_ratios(by_round: Dict[str, Dict[int, Dict[str, Optional[float]]]], num: str,
                     dens: List[str], rows: List[tuple]) -> Dict[str, List[dict]]:
    """{metric: [{"round": r, "ratio": x}, ...]}: num / best of dens, each
    taken within one round (the pairs of a round ran back to back, so
    machine load that drifts between rounds cancels out)."""
    out: Dict[str, List[dict]] = {}
    for row in rows:
        key, better = row[0], row[2]
        if key is None or better is None:
            continue
        vals = []
        for rnd in sorted(by_round.get(num, {})):
            nv = by_round[num][rnd].get(key)
            ds = [by_round[d][rnd][key] for d in dens
                  if rnd in by_round.get(d, {}) and by_round[d][rnd].get(key) is not None]
            if nv is None or not ds:
                continue
            best = min(ds) if better == "low" else max(ds)
            if best:
                vals.append({"round": rnd, "ratio": nv / best})
        out[key] = vals
    return out


def ratio_summary(per_round: Dict[str, List[dict]]) -> Dict[str, Optional[dict]]:
    """Median, min, max and n of each metric's per-round ratios."""
    out: Dict[str, Optional[dict]] = {}
    for key, vals in per_round.items():
        xs = [v["ratio"] for v in vals]
        out[key] = ({"median": statistics.median(xs), "min": min(xs), "max": max(xs),
                     "n": len(xs), "per_round": vals} if xs else None)
    return out


def all_ratios(by_round, rows: List[tuple], ratios_def: Dict[str, tuple]) -> Dict[str, dict]:
    """{ratio name: {metric: summary or None}} for the ratios whose pairs
    have data (a ratio with no value at all is left out)."""
    out = {}
    for name, (num, dens) in ratios_def.items():
        summ = ratio_summary(per_round_ratios(by_round, num, dens, rows))
        if any(v is not None for v in summ.values()):
            out[name] = summ
    return out


def fmt_ratio(r: Optional[dict]) -> str:
    """'0.91 (0.86\u20130.97, n=5)': median of the per-round ratios (min\u2013max,
    number of rounds); one round gives '0.91 (n=1)'."""
    if r is None:
        return "n/a"
    if r["n"] == 1:
        return f"{r['median']:.2f} (n=1)"
    return f"{r['median']:.2f} ({r['min']:.2f}\u2013{r['max']:.2f}, n={r['n']})"


def ratio_width(rat: Dict[str, dict], name: str) -> int:
    return max([len(name)] + [len(fmt_ratio(v)) for v in rat[name].values()]) + 2


RATIO_NOTE = ("Ratios: computed within each round (its pairs ran back to back), then the "
              "median over rounds (min\u2013max, n = rounds with both sides). Below 1.0 is "
              "better, except for throughput-like rows (above 1.0).")


def table(med: Dict[str, Dict[str, Optional[float]]], rat: Dict[str, dict],
          status: Dict[str, str]) -> str:
    cols = [p for p in PAIR_NAMES if p in status]
    widths = [max(10, len(c) + 2) for c in cols]
    # trellis/best is always shown (n/a without peers), the others with data.
    rnames = [n for n in RATIOS if n in rat or n == "trellis/best"]
    rw = {n: (ratio_width(rat, n) if n in rat else len(n) + 2) for n in rnames}
    w0 = max(len(r[1]) for r in ROWS) + 2
    lines = ["".join([f"{'metric (median)':<{w0}}"] + [f"{c:>{w}}" for c, w in zip(cols, widths)] +
                     [f"{n:>{rw[n]}}" for n in rnames])]
    lines.append("-" * len(lines[0]))
    for key, label, better, fmt in ROWS:
        cells = []
        for c, w in zip(cols, widths):
            v = med.get(c, {}).get(key)
            cells.append(f"{fmt.format(v) if v is not None else '-':>{w}}")
        for n in rnames:
            txt = fmt_ratio(rat[n].get(key)) if (n in rat and better) else ("n/a" if better else "")
            cells.append(f"{txt:>{rw[n]}}")
        lines.append(f"{label:<{w0}}" + "".join(cells))
    for c in cols:
        if status[c] != "ok":
            lines.append(f"{c}: {status[c]}")
    lines.append("A+B = both proxies of the pair summed. 'worker' = processes without "
                 "children (the nginx worker, the HAProxy process); 'master' = processes "
                 "with children (the nginx master), counted apart.")
    lines.append(RATIO_NOTE + " trellis/best divides by the better of HAProxy and nginx in "
                 "the same round.")
    return "\n".join(lines)


def _cmd_first_line(argv: List[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (r.stdout + r.stderr).strip()
        return text.splitlines()[0] if text else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def trellis_build_options(binary: Path) -> str:
    """Meson build options of the build dir holding the trellis binary:
    numbers from a debug or sanitizer build are not comparable."""
    try:
        opts = json.loads((binary.parent / "meson-info" / "intro-buildoptions.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    want = ("buildtype", "optimization", "b_ndebug", "b_sanitize", "b_lto")
    return ", ".join(f"{o['name']}={o['value']}" for o in opts if o.get("name") in want)


def machine_info(args) -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with open("/proc/meminfo") as f:
        mem = f.readline().split(":", 1)[1].strip()
    gov = ""
    try:
        gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        pass
    tb = trellis_bin(args)
    return {
        # Other load skews the tails: keep it next to the numbers.
        "loadavg_start": Path("/proc/loadavg").read_text().strip(),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total": mem,
        "cpu_governor": gov or "unknown",
        "kernel": platform.release(),
        "haproxy": _cmd_first_line(["haproxy", "-v"]),
        "nginx": _cmd_first_line(["nginx", "-v"]),
        "openssl": _cmd_first_line(["openssl", "version"]),
        "wrk": _cmd_first_line(["wrk", "-v"]),
        "python": platform.python_version(),
        "trellis": _cmd_first_line([str(tb), "--version"]) if tb.exists() else "absent",
        "trellis_build": trellis_build_options(tb) if tb.exists() else "absent",
        **({"trellis_base": _cmd_first_line([args.baseline, "--version"]),
            "trellis_base_path": str(Path(args.baseline).resolve()),
            "trellis_base_build": trellis_build_options(Path(args.baseline))}
           if getattr(args, "baseline", None) else {}),
    }


# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one round instead of five")
    p.add_argument("--rounds", type=int, help="rounds R (default 5, --quick 1)")
    p.add_argument("--pairs", default=",".join(PAIR_NAMES),
                   help="comma list of direct,haproxy,nginx,trellis,trellis-h2hop,trellis-authz "
                        "(direct is always run; trellis-base comes with --baseline)")
    p.add_argument("--trellis", help="trellis binary (default build/trellis)")
    p.add_argument("--baseline", metavar="PATH",
                   help="a second trellis binary (e.g. built from an older commit): adds the "
                        "pair trellis-base, configured like trellis, and a trellis/base column")
    p.add_argument("--rate", type=float, default=1000.0, help="fixed-rate target req/s")
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--lat-seconds", type=int, default=8, help="each fixed-rate run")
    p.add_argument("--thr-seconds", type=int, default=6, help="max-throughput run")
    p.add_argument("--mem-seconds", type=int, default=3, help="64-connection run")
    p.add_argument("--max-minutes", type=float, default=15.0,
                   help="stop starting new pair runs after this (partial results kept)")
    p.add_argument("--out", help="result JSON (default bench/results/<utc-time>.json)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args(argv)
    if a.rounds is None:
        a.rounds = 1 if a.quick else 5
    wanted = a.pairs.split(",")
    unknown = [x for x in wanted if x not in PAIR_NAMES]
    if unknown:
        p.error(f"unknown pair(s) {unknown}; known: {PAIR_NAMES}")
    if BASELINE_PAIR in wanted and not a.baseline:
        p.error(f"{BASELINE_PAIR} needs --baseline PATH")
    if a.baseline and not (os.path.isfile(a.baseline) and os.access(a.baseline, os.X_OK)):
        p.error(f"--baseline {a.baseline}: not an executable file")
    a.pairs = [x for x in PAIR_NAMES
               if x in wanted or x == "direct" or (x == BASELINE_PAIR and a.baseline)]
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "nginx", "haproxy", "openssl"):
        if shutil.which(tool) is None:
            log(f"missing tool: {tool}")
            return 2
    if not os.path.exists(NGINX_ECHO_MODULE):
        log(f"missing {NGINX_ECHO_MODULE} (apt-get install libnginx-mod-http-echo)")
        return 2
    try:
        check_ports_free()
    except BenchError as e:
        log(str(e))
        return 2

    # SIGTERM/SIGHUP -> the same cleanup path as Ctrl-C.
    def _sig(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _sig)
    signal.signal(signal.SIGHUP, _sig)

    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    tmp = Path(tempfile.mkdtemp(prefix="trellis-bench-"))
    backend: Optional[Proc] = None
    live: List[Proc] = []
    raw: Dict[str, List[dict]] = {p: [] for p in args.pairs}
    status: Dict[str, str] = {p: "ok" for p in args.pairs}
    pacer = Pacer(args.rate, args.conns)
    partial = False
    info = machine_info(args)
    log(f"machine: {info['nproc']} x {info['cpu_model']}, kernel {info['kernel']}")
    log(f"pairs {args.pairs}, rounds {args.rounds}, tmp {tmp}")
    try:
        certs = pki.write_standard_set(tmp / "pki")
        backend = start_backend(tmp)
        starters: Dict[str, Callable[[Path], List[Proc]]] = {
            "direct": lambda d: [],
            "haproxy": lambda d: start_haproxy(d, certs),
            "nginx": lambda d: start_nginx_pair(d, certs),
            "trellis": lambda d: start_trellis(d, certs, trellis_bin(args)),
            # Asked for explicitly: a config the old binary rejects is a failure.
            BASELINE_PAIR: lambda d: start_trellis(d, certs, Path(args.baseline or ""),
                                                   BASELINE_PAIR, config_error=BenchError),
            "trellis-h2hop": lambda d: start_trellis(
                d, certs, trellis_bin(args), "trellis-h2hop", config_error=Skip,
                a_cluster=H2HOP_A_CLUSTER, b_cluster=H2HOP_B_CLUSTER),
            "trellis-authz": lambda d: start_trellis(
                d, certs, trellis_bin(args), "trellis-authz", config_error=Skip,
                b_listener=AUTHZ_POLICIES),
        }
        for rnd in range(args.rounds):
            order = args.pairs[rnd % len(args.pairs):] + args.pairs[:rnd % len(args.pairs)]
            log(f"round {rnd + 1}/{args.rounds}: {' '.join(order)}")
            for pair in order:
                if status[pair] != "ok":
                    continue  # skipped or failed once: do not spend time again
                if time.monotonic() > deadline:
                    partial = True
                    log("time budget exhausted; stopping early")
                    break
                rdir = tmp / f"r{rnd}-{pair}"
                rdir.mkdir()
                try:
                    live = starters[pair](rdir)
                    port = PORTS["backend"] if pair == "direct" else PORTS[pair][0]
                    if live:
                        wait_port(PORTS[pair][1], live)
                        wait_port(port, live)
                    res = measure_pair(pair, live, port, args, pacer, certs,
                                       sanity=not raw[pair])
                    res["round"] = rnd
                    raw[pair].append(res)
                except Skip as e:
                    status[pair] = f"skipped: {e}"
                    log(f"SKIP {pair}: {e}")
                except BenchError as e:
                    status[pair] = f"failed in round {rnd + 1}: {str(e).splitlines()[0]}"
                    log(f"FAIL {pair}: {e}")
                finally:
                    for p in live:
                        p.stop()
                    live = []
            if partial:
                break
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        partial = True
    finally:
        for p in live:
            p.stop()
        if backend is not None:
            backend.stop()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # Per-round metrics; "added" compares with direct of the same round.
    direct_by_round = {r["round"]: r for r in raw.get("direct", [])}
    per_round: Dict[str, List[dict]] = {}
    by_round: Dict[str, Dict[int, Dict[str, Optional[float]]]] = {}
    for pair, rounds in raw.items():
        per_round[pair] = [round_metrics(r, direct_by_round.get(r["round"])) for r in rounds]
        by_round[pair] = {r["round"]: m for r, m in zip(rounds, per_round[pair])}
    med = {p: medians(v) for p, v in per_round.items() if v}
    for p in args.pairs:
        if p not in med and status[p] == "ok":
            status[p] = "no data"
    rat = all_ratios(by_round, ROWS, RATIOS)
    warnings = []
    for p, rs in raw.items():
        for r in rs:
            n = r["round"] + 1
            for k in ("lat", "echo"):
                rate = r[k]["rate_rps"]
                if abs(rate - args.rate) > 0.05 * args.rate:
                    warnings.append(f"{p} round {n} {k}: achieved {rate:.0f} req/s, "
                                    f"target {args.rate:.0f}")
            for k in ("lat", "echo", "thr", "load64"):
                if k in r and r[k]["errors"]:
                    warnings.append(f"{p} round {n} {k}: {r[k]['errors']} wrk errors")

    print(f"\ntrellis bench: {info['nproc']} x {info['cpu_model']}, kernel {info['kernel']}; "
          f"{args.rounds} round(s){' (PARTIAL)' if partial else ''}; load average at start "
          f"{info['loadavg_start'].split()[0]}, now {Path('/proc/loadavg').read_text().split()[0]}")
    print(table(med, rat, status))
    for w in warnings:
        print(f"WARNING: {w}")

    result = {
        "schema": 2,
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "partial": partial,
        "machine": info,
        "settings": {
            "rounds": args.rounds, "quick": args.quick, "rate_target_rps": args.rate,
            "conns": args.conns, "lat_seconds": args.lat_seconds,
            "thr_seconds": args.thr_seconds, "mem_seconds": args.mem_seconds,
            "body_bytes": BODY_SIZE, "ports": PORTS, "clk_tck": CLK_TCK,
            "baseline": args.baseline,
        },
        "status": status,
        "median": med,
        # Per ratio and metric: median/min/max/n of the per-round ratios, and
        # the per-round ratios themselves ("per_round": [{round, ratio}]).
        "ratios": rat,
        # Schema-1 names: now the medians of the per-round ratios.
        **{RATIO_JSON_KEYS[n]: {k: (v["median"] if v else None) for k, v in rat[n].items()}
           for n in rat},
        "per_round": per_round,
        "raw": raw,
        "warnings": warnings,
    }
    info["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    out = Path(args.out) if args.out else (
        BENCH / "results" / f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"results: {out}")
    # Success: every pair measured or cleanly skipped (trellis not built yet).
    ok = all(s == "ok" or s.startswith("skipped") for s in status.values())
    return 0 if ok and not partial else 1


if __name__ == "__main__":
    sys.exit(main())
