#!/usr/bin/python3
"""The control plane at scale (issue 10's benchmark; docs/performance.md).

Each round: a fresh synthetic mesh (gen_mesh.py: SERVICES services, ENDPOINTS
endpoints, PROXIES client workloads each scoped by a Sidecar to CALLS
services), a fresh `trellis control` (new CA) on loopback, then cp_bench's
PROXIES protocol clients: cold start (all connect at once: TLS handshake,
certificate, first model for every proxy), then a route-weight change and an
endpoint change of svc-0 (called by every tenth proxy) and a mesh-wide change
(the root namespace's DestinationRule for every host: every proxy's model
changes, the full compile and push), each measured from the end of the file
write to the last affected proxy holding its new model. The control plane's peak
RSS (VmHWM) is read before it is stopped. Reports the median and the range
over rounds, and each round's 1-minute load average before and after it
(the clients share the machine; so does anything else running).
`--unscoped` drops the Sidecars (every proxy sees every service): the worst
case.

usage: bench/control/run.py [--rounds 3] [--proxies 1000] [--services 10000]
                            [--endpoints 100000] [--unscoped]
Needs build/trellis and build/bench/cp_bench (ninja -C build bench/cp_bench).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRELLIS = os.path.join(ROOT, "build", "trellis")
CP_BENCH = os.path.join(ROOT, "build", "bench", "cp_bench")
GEN = os.path.join(ROOT, "bench", "control", "gen_mesh.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    return None


def one_round(a, work):
    mesh = os.path.join(work, "mesh")
    gen = [sys.executable, GEN, mesh, "--services", str(a.services), "--endpoints",
           str(a.endpoints), "--proxies", str(a.proxies)]
    subprocess.run(gen + (["--unscoped"] if a.unscoped else []), check=True)
    state = os.path.join(work, "state")
    port = free_port()
    log = open(os.path.join(work, "control.log"), "w")
    cp = subprocess.Popen([TRELLIS, "control", "--resources", mesh, "--state", state,
                           "--listen", f"127.0.0.1:{port}", "--log-level", a.log_level],
                          stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        idle_mib = vm(cp.pid, "VmRSS")
        hot = f"{sys.executable} {GEN} {mesh} --hot"
        r = subprocess.run([CP_BENCH, "--control", f"127.0.0.1:{port}", "--state", state,
                            "--proxies", str(a.proxies), "--window-ms", str(a.window_ms),
                            "--control-pid", str(cp.pid),
                            "-x", f"{hot} weight", "-x", f"{hot} endpoint",
                            "-x", f"{hot} mesh"],
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        out = json.loads(r.stdout)
        out["control_hwm_mib"] = vm(cp.pid, "VmHWM")
        out["control_idle_mib"] = idle_mib
        return out
    finally:
        cp.terminate()
        cp.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--proxies", type=int, default=1000)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=100000)
    ap.add_argument("--window-ms", type=int, default=8000)
    ap.add_argument("--unscoped", action="store_true")
    ap.add_argument("--log-level", default="warn", help="the control plane's (info: its timings)")
    ap.add_argument("--keep", action="store_true", help="keep each round's directory (mesh, log)")
    a = ap.parse_args()
    rounds = []
    for i in range(a.rounds):
        work = tempfile.mkdtemp(prefix="cp-bench-")
        load_before = os.getloadavg()[0]
        try:
            res = one_round(a, work)
            res["load_1min"] = [load_before, os.getloadavg()[0]]  # before, after
        finally:
            if a.keep:
                print(f"round {i + 1}: kept {work}", flush=True)
            else:
                shutil.rmtree(work, ignore_errors=True)
        print(f"round {i + 1}: {json.dumps(res)}", flush=True)
        rounds.append(res)

    def col(f):
        v = [f(r) for r in rounds]
        return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"
    print(f"\n{a.services} services, {a.endpoints} endpoints, {a.proxies} proxies"
          f"{' (unscoped)' if a.unscoped else ' scoped to 20 services each'}, "
          f"{a.rounds} rounds: median (min-max)")
    print(f"  cold start, all proxies with a model:     {col(lambda r: r['cold_start_ms'])} ms"
          f" (control plane CPU {col(lambda r: r['cold_start_control_cpu_ms'])} ms,"
          f" the clients' CPU {col(lambda r: r['cold_start_clients_cpu_ms'])} ms)")
    print(f"  route weight change, last affected proxy: {col(lambda r: r['change_0']['last_ms'])} ms"
          f" ({col(lambda r: r['change_0']['changed'])} proxies changed)")
    print(f"  endpoint change, last affected proxy:     {col(lambda r: r['change_1']['last_ms'])} ms"
          f" ({col(lambda r: r['change_1']['changed'])} proxies changed)")
    print(f"  mesh-wide change (full compile and push): {col(lambda r: r['change_2']['last_ms'])} ms"
          f" ({col(lambda r: r['change_2']['changed'])} proxies changed; control plane CPU"
          f" {col(lambda r: r['change_2']['control_cpu_ms'])} ms)")
    loads = [x for r in rounds for x in r["load_1min"]]
    print(f"  1-minute load average around the rounds: {min(loads):.2f}-{max(loads):.2f}")
    print(f"  control plane peak RSS:                   {col(lambda r: r['control_hwm_mib'])} MiB"
          f" (after reading the resources: {col(lambda r: r['control_idle_mib'])} MiB)")


if __name__ == "__main__":
    main()
