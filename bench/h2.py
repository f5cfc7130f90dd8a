#!/usr/bin/python3
"""trellis HTTP/2 and gRPC benchmark: h2 mTLS hop pairs next to HAProxy.

Topology per pair (all on 127.0.0.1):

    h2load --h2c--> proxy A (outbound) ==mTLS 1.3, ALPN h2==> proxy B (inbound) --h2c--> nginx

The "direct" pair is h2load -> backend. Two workloads run through every pair:
"http" (GET / -> 1 KiB) and "grpc" (unary POST, application/grpc, 5-byte
length-prefixed messages, grpc-status trailer). Per workload: a max-throughput
run (h2load -c 10 -m 10) and a fixed-rate run (--rps, ~1000 req/s in total).
Pairs are started, checked, measured and stopped in turn; the order rotates
each round and medians over rounds are reported; ratios are taken per round
and reported as their median with min-max. --baseline PATH adds
"trellis-base", a second trellis binary configured like "trellis". Helpers (processes, CPU
accounting, PKI, ports) come from bench.py. See bench/README.md.

Run through bench/run_h2.sh (Debian's /usr/bin/python3: PKI and grpcio).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402

BENCH = B.BENCH
BODY_SIZE = B.BODY_SIZE

# Own ports inside bench.py's 127.0.0.1:18000-18099 block, disjoint from its PORTS.
PORTS = {
    "backend": 18040,
    "haproxy": (18041, 18042),
    "trellis": (18043, 18044),
    "trellis_admin": (18045, 18046),
    "trellis-base": (18060, 18061),
    "trellis-base_admin": (18062, 18063),
}
ALL_PORTS = [18040, 18041, 18042, 18043, 18044, 18045, 18046, 18060, 18061, 18062, 18063]
assert not set(ALL_PORTS) & set(B.ALL_PORTS)

PAIR_NAMES = ["direct", "haproxy", "trellis", "trellis-base"]
PEER = "haproxy"
# Ratio columns (see B.RATIOS): numerator pair, denominator pairs.
RATIOS = {
    "trellis/haproxy": ("trellis", [PEER]),
    "trellis/base": ("trellis", [B.BASELINE_PAIR]),
}
RATIO_JSON_KEYS = {"trellis/haproxy": "trellis_over_haproxy", "trellis/base": "trellis_over_base"}

# gRPC: raw messages (no protobuf compiler needed; the bytes happen to be
# valid protobuf: field 1 / field 2, 30-byte strings).
GRPC_METHOD = "/bench.Bench/Unary"
GRPC_REQ_MSG = b"\x0a\x1e" + b"q" * 30
GRPC_RESP_MSG = b"\x12\x1e" + b"r" * 30


def grpc_frame(msg: bytes) -> bytes:
    """gRPC length-prefixed message: flag 0 (not compressed), u32 length."""
    return b"\x00" + struct.pack(">I", len(msg)) + msg


# trellis: A -> B is multiplexed h2 over mTLS; B -> backend is h2c.
TRELLIS_A_CLUSTER = B.H2HOP_A_CLUSTER
TRELLIS_B_CLUSTER = "protocol: http2, "

WORKLOADS = ["http", "grpc"]
QS = ("p50", "p90", "p99", "p999")

log = B.log
BenchError = B.BenchError
Skip = B.Skip


# --------------------------------------------------------------------------
# Backend: nginx, h2c prior knowledge (plaintext `listen ... http2`)


def start_backend(tmp: Path) -> B.Proc:
    prefix = tmp / "backend"
    prefix.mkdir()
    body = grpc_frame(GRPC_RESP_MSG)
    # The gRPC response is written raw into a quoted nginx string (NUL bytes
    # included); nothing in it may end or escape the string or start a variable.
    assert not set(body) & set(b'"\\$'), "gRPC response bytes unusable in nginx.conf"
    conf = prefix / "nginx.conf"
    conf.write_bytes(f"""{B.nginx_common(prefix)}
http {{
{B.nginx_http_common(prefix)}
    server {{
        listen 127.0.0.1:{PORTS['backend']} http2 backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "{'x' * BODY_SIZE}";
        }}
        # A complete unary gRPC answer: application/grpc, one length-prefixed
        # message, grpc-status 0 as an HTTP/2 trailer. The request body is
        # read and discarded.
        location = {GRPC_METHOD} {{
            default_type application/grpc;
            add_trailer grpc-status 0 always;
            return 200 "@@GRPC@@";
        }}
    }}
}}
""".encode().replace(b"@@GRPC@@", body))
    p = B.Proc("backend", B.nginx_argv(prefix, conf), prefix)
    B.wait_port(PORTS["backend"], [p])
    st = curl_h2(PORTS["backend"])
    if st != (200, BODY_SIZE, "2"):
        raise BenchError(f"backend GET / over h2c: {st}")
    ok, detail = grpc_call(PORTS["backend"])
    if not ok:
        raise BenchError(f"backend gRPC call failed: {detail}")
    return p


# --------------------------------------------------------------------------
# Sanity checks


def curl_h2(port: int, path: str = "/"):
    """(status, bytes, http_version) of a GET over h2c prior knowledge."""
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--noproxy", "*",
                        "--max-time", "5", "-o", "/dev/null",
                        "-w", "%{http_code} %{size_download} %{http_version}",
                        f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, text=True, timeout=15)
    f = r.stdout.split()
    if r.returncode != 0 or len(f) != 3:
        return (None, 0, r.stderr.strip()[:200])
    return (int(f[0]), int(f[1]), f[2])


def grpc_call(port: int):
    """A real grpcio unary call (bench/grpc_check.py, own process)."""
    try:
        r = subprocess.run(["/usr/bin/python3", str(BENCH / "grpc_check.py"), str(port),
                            GRPC_METHOD, GRPC_REQ_MSG.hex(), GRPC_RESP_MSG.hex()],
                           capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False, "grpc_check.py timed out"
    lines = r.stdout.strip().splitlines()
    detail = lines[-1] if lines else r.stderr.strip()[-300:]
    return r.returncode == 0, detail


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def h2_tls_probe(port: int, certs: dict, with_client_cert: bool, timeout: float = 5.0) -> dict:
    """TLS 1.3 to an inbound proxy offering ALPN h2: the ALPN it chose and
    whether it answered the h2 preface with a SETTINGS frame."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(certs["ca"])
    ctx.set_alpn_protocols(["h2"])
    if with_client_cert:
        ctx.load_cert_chain(certs["client_cert"], certs["client_key"])
    out = {"alpn": None, "settings": False, "error": ""}
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=B.SERVER_NAME) as s:
                out["alpn"] = s.selected_alpn_protocol()
                s.sendall(H2_PREFACE)
                # TLS 1.3: a refused client certificate shows up here, as an
                # alert on the first read.
                head = b""
                while len(head) < 9:
                    chunk = s.recv(9 - len(head))
                    if not chunk:
                        break
                    head += chunk
                out["settings"] = len(head) == 9 and head[3] == 0x4
                if not out["settings"]:
                    out["error"] = f"no SETTINGS frame, got {head!r}"
    except (OSError, ssl.SSLError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def sanity(pair: str, port: int, procs: List[B.Proc], certs: dict, first: bool) -> dict:
    res: dict = {}
    st = curl_h2(port)
    res["h2c_get"] = list(st)
    if st != (200, BODY_SIZE, "2"):
        raise BenchError(f"{pair}: GET / over h2c via {port} gave {st}, want 200, "
                         f"{BODY_SIZE} bytes, HTTP/2")
    ok, detail = grpc_call(port)
    try:
        res["grpc_call"] = json.loads(detail)
    except ValueError:
        res["grpc_call"] = detail
    if not ok:
        raise BenchError(f"{pair}: gRPC unary call via {port} failed: {detail}")
    if procs and first:
        inbound = PORTS[pair][1]
        good = h2_tls_probe(inbound, certs, with_client_cert=True)
        bad = h2_tls_probe(inbound, certs, with_client_cert=False)
        res["inbound_with_cert"] = good
        res["inbound_without_cert"] = bad
        if good["alpn"] != "h2" or not good["settings"]:
            raise BenchError(f"{pair}: inbound with client cert: ALPN {good['alpn']}, "
                             f"{good['error'] or 'no SETTINGS'}")
        if bad["settings"]:
            raise BenchError(f"{pair}: inbound spoke h2 to a client without certificate")
    return res


# --------------------------------------------------------------------------
# Pairs


def start_haproxy(tmp: Path, certs: dict) -> List[B.Proc]:
    pa, pb = PORTS["haproxy"]
    d = tmp / "haproxy"
    d.mkdir()
    tls = f"ca-file {certs['ca']} verify required ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3"
    cfg_a = d / "a.cfg"
    cfg_a.write_text(B.HAPROXY_GLOBAL + f"""
frontend out
    bind 127.0.0.1:{pa} proto h2
    default_backend mesh
backend mesh
    http-reuse always
    server b 127.0.0.1:{pb} ssl crt {B.haproxy_pem(certs, 'client', d)} {tls} verifyhost {B.SERVER_NAME} alpn h2
""")
    cfg_b = d / "b.cfg"
    cfg_b.write_text(B.HAPROXY_GLOBAL + f"""
frontend in
    bind 127.0.0.1:{pb} ssl crt {B.haproxy_pem(certs, 'server', d)} {tls} alpn h2
    default_backend app
backend app
    http-reuse always
    server app 127.0.0.1:{PORTS['backend']} proto h2
""")
    procs = []
    for name, cfg in (("haproxy-b", cfg_b), ("haproxy-a", cfg_a)):
        r = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True,
                           text=True, timeout=20)
        if r.returncode != 0:
            raise BenchError(f"{name} config check failed:\n{r.stdout}{r.stderr}")
        procs.append(B.Proc(name, ["haproxy", "-f", str(cfg), "-db"], d))
    return procs[::-1]  # [A, B]


def start_trellis(tmp: Path, certs: dict, binary: Path, pair: str = "trellis") -> List[B.Proc]:
    # A config this build rejects is a failure here (the pair is the point
    # of this suite), reported with trellis's own message.
    return B.start_trellis(tmp, certs, binary, pair, config_error=BenchError,
                           ports=PORTS[pair], admin_ports=PORTS[pair + "_admin"],
                           backend=PORTS["backend"], a_cluster=TRELLIS_A_CLUSTER,
                           b_cluster=TRELLIS_B_CLUSTER)


# --------------------------------------------------------------------------
# h2load

_RE_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s),")
_RE_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                          r"(\d+) failed, (\d+) errored, (\d+) timeout")
_RE_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_RE_PROTO = re.compile(r"Application protocol: (\S+)")


def percentile(sorted_vals: List[int], q: float) -> Optional[int]:
    """Nearest-rank percentile."""
    if not sorted_vals:
        return None
    return sorted_vals[max(0, math.ceil(q * len(sorted_vals)) - 1)]


def h2load(port: int, wl: str, args, seconds: float, tmp: Path,
           rps_per_client: Optional[float] = None, log_file: bool = True) -> dict:
    path = "/" if wl == "http" else GRPC_METHOD
    argv = ["h2load", "-t1", f"-c{args.clients}", f"-m{args.streams}", "-D", f"{seconds:g}"]
    if rps_per_client is not None:
        argv += ["--rps", f"{rps_per_client:g}"]
    if wl == "grpc":
        argv += ["-d", str(tmp / "grpc_req.bin"), "-H", "content-type: application/grpc",
                 "-H", "te: trailers"]
    logp = tmp / "h2load.log"
    if log_file:
        argv += ["--log-file", str(logp)]
    argv.append(f"http://127.0.0.1:{port}{path}")
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"h2load did not finish in time: {' '.join(argv)}")
    out = r.stdout + r.stderr
    mf, mr, ms, mp = (x.search(out) for x in (_RE_FINISHED, _RE_REQUESTS, _RE_STATUS, _RE_PROTO))
    if r.returncode != 0 or not (mf and mr and ms):
        raise BenchError(f"h2load failed (rc={r.returncode}): {' '.join(argv)}\n{out[-1500:]}")
    dur = float(mf.group(1)) / {"us": 1e6, "ms": 1e3, "s": 1.0}[mf.group(2)]
    total, _, done, ok, failed, errored, tout = (int(x) for x in mr.groups())
    s2, s3, s4, s5 = (int(x) for x in ms.groups())
    res = {"argv": argv, "duration_s": dur, "requests": total, "done": done, "succeeded": ok,
           "failed": failed, "errored": errored, "timeout": tout,
           "status": {"2xx": s2, "3xx": s3, "4xx": s4, "5xx": s5},
           "protocol": mp.group(1) if mp else None,
           "rate_rps": ok / dur if dur > 0 else 0.0}
    res["errors"] = failed + errored + tout + s3 + s4 + s5
    if res["protocol"] != "h2c":
        raise BenchError(f"h2load negotiated {res['protocol']}, not h2c:\n{out[-800:]}")
    if log_file:
        # Columns: start (us since epoch), status (-1 = failed stream),
        # microseconds until the end of the response.
        lat = []
        with open(logp) as f:
            for line in f:
                c = line.split("\t")
                if len(c) >= 3 and c[1].startswith("2"):
                    lat.append(int(c[2]))
        logp.unlink()
        lat.sort()
        res["logged"] = len(lat)
        for q, v in zip(QS, (0.50, 0.90, 0.99, 0.999)):
            res[f"{q}_us"] = percentile(lat, v)
    return res


# --------------------------------------------------------------------------
# One pair, one round


def measure_pair(pair: str, procs: List[B.Proc], backend: B.Proc, port: int, args,
                 certs: dict, tmp: Path, first: bool) -> dict:
    res: dict = {"pair": pair, "sanity": sanity(pair, port, procs, certs, first)}

    def cpu():
        return [p.cpu_ticks() for p in procs], backend.cpu_ticks()

    def account(r: dict, c0, c1) -> None:
        r["backend_cpu_s"] = B.cpu_delta_s(c0[1], c1[1])
        if procs:
            r["proxy_cpu_s_ab"] = [B.cpu_delta_s(b, a) for b, a in zip(c0[0], c1[0])]
            r["proxy_cpu_s"] = sum(r["proxy_cpu_s_ab"])
            r["cpu_us_per_req"] = r["proxy_cpu_s"] * 1e6 / max(1, r["succeeded"])
            r["req_per_cpu_s"] = (r["succeeded"] / r["proxy_cpu_s"]) if r["proxy_cpu_s"] else None

    for wl in WORKLOADS:
        # Warm-up: open the pools, fault in buffers (not measured).
        h2load(port, wl, args, args.warmup_seconds, tmp, log_file=False)
        c0 = cpu()
        r = h2load(port, wl, args, args.thr_seconds, tmp)
        account(r, c0, cpu())
        if procs:
            # Connections A -> B and B -> backend left open after the max
            # run: 1 each when both hops are multiplexed.
            r["hop_conns_ab"] = B.established_to(PORTS[pair][1])
            r["hop_conns_b_backend"] = B.established_to(PORTS["backend"])
        log(f"  {pair:8s} {wl:4s} max  {r['rate_rps']:8.0f} req/s  p50 {r['p50_us']}us "
            f"p99 {r['p99_us']}us p99.9 {r['p999_us']}us errors {r['errors']}"
            + (f"  cpu/req {r['cpu_us_per_req']:.1f}us, connections A->B "
               f"{r['hop_conns_ab']}, B->backend {r['hop_conns_b_backend']}" if procs else ""))
        max_r = r
        # trellis pairs: loop statistics and scheduling delay (bench.py).
        watch = (B.LoopWatch(procs, PORTS[pair + "_admin"]) if pair.startswith("trellis")
                 else None)
        if watch:
            watch.start()
        c0 = cpu()
        r = h2load(port, wl, args, args.lat_seconds, tmp,
                   rps_per_client=args.rate / args.clients)
        account(r, c0, cpu())
        if watch:
            r["loop"] = watch.stop()
        log(f"  {pair:8s} {wl:4s} rate {r['rate_rps']:8.1f}/s    p50 {r['p50_us']}us "
            f"p99 {r['p99_us']}us p99.9 {r['p999_us']}us errors {r['errors']}")
        for side, lr in r.get("loop", {}).items():
            log(f"    {B.loop_line(side, lr)}")
        res[wl] = {"max": max_r, "rate": r}
    for p in procs + [backend]:
        if not p.alive():
            raise BenchError(f"{p.name} died during the run:\n{p.tail()}")
    return res


# --------------------------------------------------------------------------
# Aggregation and output


def round_metrics(r: dict, direct: Optional[dict]) -> Dict[str, Optional[float]]:
    m: Dict[str, Optional[float]] = {}
    for wl in WORKLOADS:
        mx, rt = r[wl]["max"], r[wl]["rate"]
        m[f"{wl}_max_rps"] = mx["rate_rps"]
        for q in QS:
            m[f"{wl}_max_{q}_us"] = mx[f"{q}_us"]
        m[f"{wl}_cpu_us_per_req_max"] = mx.get("cpu_us_per_req")
        m[f"{wl}_req_per_cpu_s_max"] = mx.get("req_per_cpu_s")
        m[f"{wl}_rate_rps"] = rt["rate_rps"]
        for q in QS:
            m[f"{wl}_rate_{q}_us"] = rt[f"{q}_us"]
        for q in ("p50", "p99"):
            d = direct[wl]["rate"][f"{q}_us"] if direct else None
            v = rt[f"{q}_us"]
            m[f"{wl}_added_{q}_us"] = (v - d) if (d is not None and v is not None) else None
        m[f"{wl}_cpu_us_per_req_1k"] = rt.get("cpu_us_per_req")
    return m


def rows() -> List[tuple]:
    out = []
    for wl, title in (("http", "GET / 1 KiB"), ("grpc", "gRPC unary")):
        out.append((None, f"[{wl}] {title}", None, None))
        out += [
            (f"{wl}_max_rps", "max throughput (req/s)", "high", "{:.0f}"),
            (f"{wl}_max_p50_us", "latency p50 @max (us)", "low", "{:.0f}"),
            (f"{wl}_max_p90_us", "latency p90 @max (us)", "low", "{:.0f}"),
            (f"{wl}_max_p99_us", "latency p99 @max (us)", "low", "{:.0f}"),
            (f"{wl}_max_p999_us", "latency p99.9 @max (us)", "low", "{:.0f}"),
            (f"{wl}_cpu_us_per_req_max", "proxy CPU/req @max (us)", "low", "{:.1f}"),
            (f"{wl}_req_per_cpu_s_max", "req per proxy CPU-s @max", "high", "{:.0f}"),
            (f"{wl}_rate_rps", "fixed-rate achieved req/s", None, "{:.0f}"),
            (f"{wl}_rate_p50_us", "latency p50 @1k/s (us)", "low", "{:.0f}"),
            (f"{wl}_rate_p99_us", "latency p99 @1k/s (us)", "low", "{:.0f}"),
            (f"{wl}_added_p50_us", "added p50 vs direct @1k/s (us)", "low", "{:.0f}"),
            (f"{wl}_added_p99_us", "added p99 vs direct @1k/s (us)", "low", "{:.0f}"),
            (f"{wl}_cpu_us_per_req_1k", "proxy CPU/req @1k/s (us)", "low", "{:.1f}"),
        ]
    return out


def table(med, rat, status) -> str:
    cols = [p for p in PAIR_NAMES if p in status]
    w0 = max(len(r[1]) for r in rows()) + 2
    rnames = [n for n in RATIOS if n in rat or n == "trellis/haproxy"]
    rw = {n: (B.ratio_width(rat, n) if n in rat else len(n) + 2) for n in rnames}
    widths = [max(10, len(c) + 2) for c in cols]
    lines = ["".join([f"{'metric (median)':<{w0}}"] + [f"{c:>{w}}" for c, w in zip(cols, widths)] +
                     [f"{n:>{rw[n]}}" for n in rnames])]
    lines.append("-" * len(lines[0]))
    for key, label, better, fmt in rows():
        if key is None:
            lines.append(label)
            continue
        cells = []
        for c, w in zip(cols, widths):
            v = med.get(c, {}).get(key)
            cells.append(f"{fmt.format(v) if v is not None else '-':>{w}}")
        for n in rnames:
            txt = B.fmt_ratio(rat[n].get(key)) if (n in rat and better) else ("n/a" if better else "")
            cells.append(f"{txt:>{rw[n]}}")
        lines.append(f"{label:<{w0}}" + "".join(cells))
    for c in cols:
        if status[c] != "ok":
            lines.append(f"{c}: {status[c]}")
    lines.append("proxy CPU = utime+stime of A and B together. " + B.RATIO_NOTE +
                 " Throughput-like rows: max throughput and req per CPU-s.")
    return "\n".join(lines)


def machine_info(args) -> dict:
    info = B.machine_info(args)
    info.pop("wrk", None)
    info["h2load"] = B._cmd_first_line(["h2load", "--version"])
    info["curl"] = B._cmd_first_line(["curl", "--version"])
    info["grpcio"] = B._cmd_first_line(["/usr/bin/python3", "-c",
                                        "import grpc; print(grpc.__version__)"])
    return info


# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="one round, shorter runs (3 s max, 4 s fixed-rate)")
    p.add_argument("--rounds", type=int, help="rounds (default 5, --quick 1)")
    p.add_argument("--pairs", default=",".join(PAIR_NAMES),
                   help="comma list of direct,haproxy,trellis (direct is always run; "
                        "trellis-base comes with --baseline)")
    p.add_argument("--trellis", help="trellis binary (default build/trellis)")
    p.add_argument("--baseline", metavar="PATH",
                   help="a second trellis binary (e.g. built from an older commit): adds the "
                        "pair trellis-base, configured like trellis, and a trellis/base column")
    p.add_argument("--clients", type=int, default=10, help="h2load connections (-c)")
    p.add_argument("--streams", type=int, default=10,
                   help="h2load concurrent streams per connection (-m)")
    p.add_argument("--rate", type=float, default=1000.0,
                   help="fixed-rate target req/s in total (h2load --rps = rate / clients)")
    p.add_argument("--thr-seconds", type=float, help="max-throughput run (default 6, quick 3)")
    p.add_argument("--lat-seconds", type=float, help="fixed-rate run (default 8, quick 4)")
    p.add_argument("--warmup-seconds", type=float, default=1.0)
    p.add_argument("--max-minutes", type=float, default=12.0,
                   help="stop starting new pair runs after this (partial results kept)")
    p.add_argument("--out", help="result JSON (default bench/results/h2-<utc-time>.json)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args(argv)
    if a.rounds is None:
        a.rounds = 1 if a.quick else 5
    if a.thr_seconds is None:
        a.thr_seconds = 3.0 if a.quick else 6.0
    if a.lat_seconds is None:
        a.lat_seconds = 4.0 if a.quick else 8.0
    wanted = a.pairs.split(",")
    unknown = [x for x in wanted if x not in PAIR_NAMES]
    if unknown:
        p.error(f"unknown pair(s) {unknown}; known: {PAIR_NAMES}")
    if B.BASELINE_PAIR in wanted and not a.baseline:
        p.error(f"{B.BASELINE_PAIR} needs --baseline PATH")
    if a.baseline and not (Path(a.baseline).is_file() and os.access(a.baseline, os.X_OK)):
        p.error(f"--baseline {a.baseline}: not an executable file")
    a.pairs = [x for x in PAIR_NAMES
               if x in wanted or x == "direct" or (x == B.BASELINE_PAIR and a.baseline)]
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    for tool in ("h2load", "curl", "nginx", "haproxy", "openssl"):
        if shutil.which(tool) is None:
            log(f"missing tool: {tool}")
            return 2
    try:
        B.check_ports_free(ALL_PORTS)
    except BenchError as e:
        log(str(e))
        return 2

    def _sig(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _sig)
    signal.signal(signal.SIGHUP, _sig)

    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    tmp = Path(tempfile.mkdtemp(prefix="trellis-h2bench-"))
    backend: Optional[B.Proc] = None
    live: List[B.Proc] = []
    raw: Dict[str, List[dict]] = {p: [] for p in args.pairs}
    status: Dict[str, str] = {p: "ok" for p in args.pairs}
    partial = False
    info = machine_info(args)
    log(f"machine: {info['nproc']} x {info['cpu_model']}, kernel {info['kernel']}")
    log(f"pairs {args.pairs}, rounds {args.rounds}, tmp {tmp}")
    try:
        certs = B.pki.write_standard_set(tmp / "pki")
        (tmp / "grpc_req.bin").write_bytes(grpc_frame(GRPC_REQ_MSG))
        backend = start_backend(tmp)
        starters: Dict[str, Callable[[Path], List[B.Proc]]] = {
            "direct": lambda d: [],
            "haproxy": lambda d: start_haproxy(d, certs),
            "trellis": lambda d: start_trellis(d, certs, B.trellis_bin(args)),
            B.BASELINE_PAIR: lambda d: start_trellis(d, certs, Path(args.baseline or ""),
                                                     B.BASELINE_PAIR),
        }
        for rnd in range(args.rounds):
            order = args.pairs[rnd % len(args.pairs):] + args.pairs[:rnd % len(args.pairs)]
            log(f"round {rnd + 1}/{args.rounds}: {' '.join(order)}")
            for pair in order:
                if status[pair] != "ok":
                    continue
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
                        B.wait_port(PORTS[pair][1], live)
                        B.wait_port(port, live)
                    res = measure_pair(pair, live, backend, port, args, certs, tmp,
                                       first=not raw[pair])
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
    except BenchError as e:
        log(f"FAIL: {e}")
        partial = True
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

    direct_by_round = {r["round"]: r for r in raw.get("direct", [])}
    per_round = {pair: [round_metrics(r, direct_by_round.get(r["round"])) for r in rs]
                 for pair, rs in raw.items()}
    by_round = {pair: {r["round"]: m for r, m in zip(rs, per_round[pair])}
                for pair, rs in raw.items()}
    med = {p: B.medians(v) for p, v in per_round.items() if v}
    for p in args.pairs:
        if p not in med and status[p] == "ok":
            status[p] = "no data"
    rat = B.all_ratios(by_round, rows(), RATIOS)
    warnings = []
    for p, rs in raw.items():
        for r in rs:
            n = r["round"] + 1
            for wl in WORKLOADS:
                rate = r[wl]["rate"]["rate_rps"]
                if abs(rate - args.rate) > 0.05 * args.rate:
                    warnings.append(f"{p} round {n} {wl}: fixed-rate run achieved "
                                    f"{rate:.0f} req/s, target {args.rate:.0f}")
                for kind in ("max", "rate"):
                    if r[wl][kind]["errors"]:
                        warnings.append(f"{p} round {n} {wl} {kind}: "
                                        f"{r[wl][kind]['errors']} failed or non-2xx requests")

    print(f"\ntrellis h2/gRPC bench: {info['nproc']} x {info['cpu_model']}, kernel "
          f"{info['kernel']}; {args.rounds} round(s){' (PARTIAL)' if partial else ''}; "
          f"h2load -c{args.clients} -m{args.streams}, max {args.thr_seconds:g}s, "
          f"fixed-rate {args.rate:.0f}/s {args.lat_seconds:g}s; load average at start "
          f"{info['loadavg_start'].split()[0]}, now {Path('/proc/loadavg').read_text().split()[0]}")
    print(table(med, rat, status))
    for w in warnings:
        print(f"WARNING: {w}")

    info["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    result = {
        "schema": 2,
        "suite": "h2",
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "partial": partial,
        "machine": info,
        "settings": {
            "rounds": args.rounds, "quick": args.quick, "clients": args.clients,
            "streams_per_client": args.streams, "rate_target_rps": args.rate,
            "thr_seconds": args.thr_seconds, "lat_seconds": args.lat_seconds,
            "warmup_seconds": args.warmup_seconds, "body_bytes": BODY_SIZE,
            "grpc_method": GRPC_METHOD, "grpc_request_hex": grpc_frame(GRPC_REQ_MSG).hex(),
            "grpc_response_hex": grpc_frame(GRPC_RESP_MSG).hex(),
            "ports": PORTS, "clk_tck": B.CLK_TCK, "baseline": args.baseline,
        },
        "status": status,
        "median": med,
        # As bench.py: per-round ratios with median/min/max/n, and the
        # schema-1 name holding the medians of the per-round ratios.
        "ratios": rat,
        **{RATIO_JSON_KEYS[n]: {k: (v["median"] if v else None) for k, v in rat[n].items()}
           for n in rat},
        "per_round": per_round,
        "raw": raw,
        "warnings": warnings,
    }
    out = Path(args.out) if args.out else (
        BENCH / "results" / f"h2-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"results: {out}")
    ok = all(s == "ok" or s.startswith("skipped") for s in status.values())
    return 0 if ok and not partial else 1


if __name__ == "__main__":
    sys.exit(main())
