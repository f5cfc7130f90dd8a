#!/usr/bin/env python3
"""The bookinfo mesh demo (`make demo`; network namespaces need root: without
them, --loopback runs the same mesh with `trellis up --loopback`, no root).

1. `trellis up` a scratch copy of examples/bookinfo (so the canary edit does
   not touch the repository), detached;
2. drives a fixed number of requests from the loadgen workload to the front
   page (productpage -> reviews v1/v2/v3 -> ratings), then prints, per edge,
   the request rate, success rate, p50/p99 latency and the mTLS identities,
   read from each destination proxy's /stats/prometheus (reporter=destination);
3. shifts the reviews canary from 90/10 to 50/50 (edit the VirtualService,
   `trellis up --reload`: the control plane pushes the changed models, every
   proxy acknowledges; `trellis ctl status` shows it) and drives traffic
   again;
4. shows a call the policy denies (loadgen -> ratings: 403);
5. `trellis down`, also when anything above fails.

Usage: bookinfo_demo.py [--trellis build/trellis] [--requests 1000] [--loopback]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = "bookinfo"
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# Loopback mode (--loopback): commands run with the workload's environment
# (`trellis up --exec`), not in a namespace; each proxy's admin endpoint is on
# a port of its own (TRELLIS_ADMIN in STATE/workloads/NS.NAME/env).
LOOPBACK = {"on": False, "trellis": None, "state": None}


def netns(workload):
    return f"trl-{NS}-{workload}"


def in_ns(workload, argv, timeout=60, check=True):
    if LOOPBACK["on"]:
        cmd = [LOOPBACK["trellis"], "up", "--state", LOOPBACK["state"], "--exec",
               f"{NS}/{workload}", "--"] + argv
    else:
        cmd = ["ip", "netns", "exec", netns(workload)] + argv
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {workload}: exit {r.returncode}: {r.stderr}")
    return r


def admin(workload):
    if not LOOPBACK["on"]:
        return "127.0.0.1:15000"
    with open(os.path.join(LOOPBACK["state"], "workloads", f"{NS}.{workload}", "env")) as f:
        env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    return env["TRELLIS_ADMIN"]


def service_curl(workload, argv, url):
    """curl argv url from workload: the name through its hosts file, or in
    loopback mode to NAME_SERVICE_HOST:PORT (the Host header stays the name)."""
    if not LOOPBACK["on"]:
        return in_ns(workload, ["curl"] + argv + [url], check=False)
    name = url.split("//", 1)[1].split(":", 1)[0]
    var = name.upper().replace("-", "_")
    script = ("exec curl \"$@\" --connect-to "
              f"{name}:9080:${var}_SERVICE_HOST:${var}_SERVICE_PORT {url}")
    return in_ns(workload, ["sh", "-c", script, "sh"] + argv, check=False)


def scrape(workload):
    """Parsed /stats/prometheus of the workload's proxy: [(name, labels, value)]."""
    text = in_ns(workload, ["curl", "-sS", "-m", "5",
                            f"http://{admin(workload)}/stats/prometheus"]).stdout
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out.append((m.group(1), dict(LABEL.findall(m.group(2))), float(m.group(3))))
    return out


def generation(workload):
    text = in_ns(workload, ["curl", "-sS", "-m", "5",
                            f"http://{admin(workload)}/stats/prometheus"]).stdout
    m = re.search(r"^trellis_config_generation (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def edges(samples):
    """Per (source principal, destination workload) edge, reporter=destination:
    requests, 2xx, the duration histogram, the security policy."""
    out = {}
    for name, lb, v in samples:
        if lb.get("reporter") != "destination":
            continue
        key = (lb.get("source_principal", "unknown"), lb.get("destination_workload", "unknown"),
               lb.get("destination_principal", "unknown"), lb.get("connection_security_policy"))
        e = out.setdefault(key, {"req": 0.0, "ok": 0.0, "buckets": {}})
        if name == "istio_requests_total":
            e["req"] += v
            if lb.get("response_code", "").startswith("2"):
                e["ok"] += v
        elif name == "istio_request_duration_milliseconds_bucket":
            le = float(lb["le"])
            e["buckets"][le] = e["buckets"].get(le, 0.0) + v
    return out


def diff(after, before):
    out = {}
    for k, a in after.items():
        b = before.get(k, {"req": 0.0, "ok": 0.0, "buckets": {}})
        d = {"req": a["req"] - b["req"], "ok": a["ok"] - b["ok"],
             "buckets": {le: c - b["buckets"].get(le, 0.0) for le, c in a["buckets"].items()}}
        if d["req"] > 0:
            out[k] = d
    return out


def quantile(buckets, q):
    """histogram_quantile: linear within the bucket that holds the q-th request."""
    bs = sorted(buckets.items())
    if not bs or bs[-1][1] <= 0:
        return float("nan")
    rank = q * bs[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in bs:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1)
        prev_le, prev_c = le, c
    return bs[-1][0]


def short(principal):
    return principal.rsplit("/sa/", 1)[-1] if "/sa/" in principal else principal


def print_edges(d, seconds):
    print(f"  {'SOURCE (principal)':<22} {'-> DESTINATION':<18} {'REQ':>5} {'RATE/s':>7} "
          f"{'SUCCESS':>8} {'P50 ms':>7} {'P99 ms':>7}  mTLS IDENTITY (source -> destination)")
    for (src, dst, dprin, policy), e in sorted(d.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        mtls = (f"{src} -> {dprin}" if policy == "mutual_tls" else f"NOT mTLS ({policy})")
        print(f"  {short(src):<22} -> {dst:<15} {int(e['req']):>5} {e['req'] / seconds:>7.1f} "
              f"{100.0 * e['ok'] / e['req']:>7.1f}% {quantile(e['buckets'], 0.5):>7.1f} "
              f"{quantile(e['buckets'], 0.99):>7.1f}  {mtls}")


WORKLOADS = ["productpage-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"]


def snapshot():
    out = {}
    for w in WORKLOADS:
        for k, v in edges(scrape(w)).items():
            out[k] = v
    return out


def drive(n, conc, title, mesh_dir):
    print(f"\n== {title}")
    before = snapshot()
    t0 = time.monotonic()
    r = in_ns("loadgen", [sys.executable, os.path.join(mesh_dir, "bookinfo.py"), "load",
                          f"http://productpage:{9080}/", "-n", str(n), "-c", str(conc)])
    seconds = time.monotonic() - t0
    res = json.loads(r.stdout)
    vers = ", ".join(f"{v} {c}" for v, c in sorted(res["versions"].items()))
    codes = ", ".join(f"{c} x {s}" for s, c in sorted(res["status"].items()))
    print(f"  loadgen: {n} requests in {res['seconds']:.1f} s: {codes}; the page showed reviews "
          f"{vers}; p50 {res['p50_ms']:.0f} ms, p99 {res['p99_ms']:.0f} ms")
    print("  the proxies' metrics (reporter=destination, this phase only):")
    print_edges(diff(snapshot(), before), seconds)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trellis", default=os.environ.get("TRELLIS_BIN",
                                                        os.path.join(ROOT, "build", "trellis")))
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--loopback", action="store_true",
                    help="trellis up --loopback: no root, no network namespaces")
    args = ap.parse_args()
    t_start = time.monotonic()
    work = tempfile.mkdtemp(prefix="trellis-bookinfo-")
    mesh = os.path.join(work, "bookinfo")
    state = os.path.join(work, "state")
    shutil.copytree(os.path.join(ROOT, "examples", "bookinfo"), mesh)
    trellis = os.path.abspath(args.trellis)
    LOOPBACK.update(on=args.loopback, trellis=trellis, state=state)
    lo = ["--loopback"] if args.loopback else []
    up = False
    try:
        print(f"== 1. trellis up {mesh} --detach {' '.join(lo)} (a copy of examples/bookinfo)")
        sys.stdout.flush()
        r = subprocess.run([trellis, "up", mesh, "--state", state, "--detach"] + lo, timeout=90,
                           capture_output=True, text=True)
        up = True
        print(r.stdout.rstrip())
        warnings = [line for line in r.stderr.splitlines() if ": warning: " in line]
        if warnings:
            print(f"  ({len(warnings)} warning(s): e.g. {warnings[0].split(': ', 1)[-1]})")
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return 1
        drive(args.requests, args.concurrency,
              "2. traffic from loadgen to http://productpage:9080/ (reviews canary: v1 90%, v2 10%)",
              mesh)
        if not args.loopback:
            # sidecar capture: the name is the Service's virtual IP, and the
            # workload's nftables rules sent each connection to its sidecar
            vip = in_ns("loadgen", ["getent", "hosts", "productpage"], check=False).stdout.split()
            rules = in_ns("loadgen", ["nft", "list", "table", "inet", "trellis"],
                          check=False).stdout
            m = re.search(r"counter packets (\d+) bytes \d+ redirect to :15001", rules)
            if vip and m:
                print(f"  capture: productpage is {vip[0]} (its Service's virtual IP) in loadgen's "
                      f"hosts file; loadgen's rules redirected {m.group(1)} connection(s) to its "
                      "sidecar (127.0.0.1:15001)")

        print("\n== 3. canary shift: reviews v1 50%, v2 50%")
        shutil.copy(os.path.join(ROOT, "examples", "bookinfo-canary", "reviews-50-50.yaml"),
                    os.path.join(mesh, "reviews-canary.yaml"))
        print("  edited reviews-canary.yaml (weights 50/50); trellis up --reload:")
        gens = {w: generation(w) for w in ["productpage-v1"]}
        t0 = time.monotonic()
        r = subprocess.run([trellis, "up", "--reload", "--state", state], capture_output=True,
                           text=True, timeout=60)
        print("\n".join("  " + line.strip() for line in r.stdout.strip().splitlines()))
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return 1
        while generation("productpage-v1") <= gens["productpage-v1"]:
            if time.monotonic() - t0 > 10:
                print("productpage's proxy did not reload its model", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(f"  productpage's proxy runs the new model {time.monotonic() - t0:.2f} s after the "
              f"edit (trellis_config_generation {generation('productpage-v1')})")
        ca = os.path.join(state, "ca")
        if os.path.exists(os.path.join(ca, "control.sock")):
            deadline = time.monotonic() + 3
            while True:  # until every proxy acknowledged the version it was sent
                r = subprocess.run([trellis, "ctl", "status", "--state", ca],
                                   capture_output=True, text=True, timeout=30)
                rows = [line.split() for line in r.stdout.splitlines()
                        if line.startswith(NS + "/")]
                acked = sum(1 for f in rows if len(f) > 4 and f[3] == f[4])
                if (rows and acked == len(rows)) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            print(f"  the control plane's view (trellis ctl status): {acked} of {len(rows)} "
                  f"proxies acknowledged the version they were sent")
            print("\n".join("    " + line for line in r.stdout.strip().splitlines()))
        drive(args.requests, args.concurrency, "4. traffic again, after the shift", mesh)

        print("\n== 5. a call the policy denies: loadgen -> ratings (only reviews may call it)")
        r = service_curl("loadgen", ["-sS", "-m", "5", "-o", "-", "-w", " [HTTP %{http_code}]"],
                         "http://ratings:9080/ratings/0")
        print(f"  curl http://ratings:9080/ratings/0 from loadgen: {r.stdout.strip()}")
        for name, lb, v in scrape("ratings-v1"):
            if (name == "istio_requests_total" and lb.get("response_code") == "403"
                    and lb.get("reporter") == "destination"):
                print(f"  ratings' proxy: istio_requests_total{{response_code=\"403\", "
                      f"source_principal=\"{lb['source_principal']}\"}} {int(v)}")
        return 0
    finally:
        if up:
            print("\n== 6. trellis down")
            r = subprocess.run([trellis, "down", "--state", state], capture_output=True, text=True,
                               timeout=60)
            print("  " + (r.stdout + r.stderr).strip())
        shutil.rmtree(work, ignore_errors=True)
        print(f"\ndemo done in {time.monotonic() - t_start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
