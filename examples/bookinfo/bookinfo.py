#!/usr/bin/env python3
"""The bookinfo services of trellis' one-machine demo, one script with roles.

    bookinfo.py productpage|reviews|ratings [--bind ADDR] [--port N] [--version V]
    bookinfo.py idle                  a traffic client that waits (the loadgen Pod)
    bookinfo.py load URL [-n N] [-c C] [-H 'Name: value']...
                                      N requests with C threads; prints one JSON line

Each service answers JSON, logs nothing per request, and calls the next one
by its service name (http://reviews:9080, http://ratings:9080): the mesh
decides where the name goes. Bind address and port: --bind/--port, else
BIND/PORT in the environment, else TRELLIS_APP_IP (trellis up --loopback
sets it), else 127.0.0.1; port 9080 (the sidecar listens on the pod address
and forwards here). Python 3 standard library only.

Names: in a network namespace of its own (trellis up), the workload's hosts
file maps every service name to its sidecar. In loopback mode there is no
such file: a URL's service name NAME with NAME_SERVICE_HOST in the
environment (Kubernetes' variables; trellis up --loopback sets them to the
sidecar's outbound address) is connected there instead, with the Host header
still the name, which is what the sidecar routes by. Unset: the name as is.
"""
import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOOKS = {"0": {"title": "The Comedy of Errors", "author": "William Shakespeare"}}


def via_sidecar(url, headers):
    """url through the sidecar the environment names (NAME_SERVICE_HOST/PORT for
    the URL's service name), the Host header kept: (url, headers). Unchanged when
    the variable is unset (the name resolves, e.g. through the hosts file)."""
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    var = host.split(".")[0].upper().replace("-", "_")
    target = os.environ.get(var + "_SERVICE_HOST") if host and not host[0].isdigit() else None
    if not target:
        return url, headers
    port = u.port or int(os.environ.get(var + "_SERVICE_PORT", "80"))
    headers = dict(headers)
    headers.setdefault("Host", u.netloc)
    return urllib.parse.urlunsplit((u.scheme, f"{target}:{port}", u.path, u.query,
                                    u.fragment)), headers


def call(url, timeout=3.0):
    """GET url -> (status, parsed JSON or text)."""
    url, headers = via_sidecar(url, {"Accept": "application/json"})
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    except (OSError, urllib.error.URLError) as e:
        return 0, {"error": str(e)}
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace").strip()


def make_handler(role, version, upstream):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are two writes: without TCP_NODELAY the body waits
        # for the client's delayed ACK (40 ms a hop).
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def answer(self, status, obj):
            body = (json.dumps(obj, sort_keys=True) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/healthz":
                return self.answer(200, {"ok": True})
            if role == "ratings":
                return self.answer(200, {"service": "ratings", "version": version,
                                         "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
            if role == "reviews":
                out = {"service": "reviews", "version": version, "reviews": [
                    {"reviewer": "Reviewer1", "text": "An extremely entertaining play."},
                    {"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining."}]}
                if version != "v1":  # v2 black stars, v3 red stars (as Istio's bookinfo)
                    st, ratings = call(upstream + "/ratings/0")
                    colour = "black" if version == "v2" else "red"
                    if st == 200 and isinstance(ratings, dict):
                        for rv in out["reviews"]:
                            rv["stars"] = ratings["ratings"].get(rv["reviewer"])
                            rv["color"] = colour
                    else:
                        out["ratings_error"] = {"status": st, "body": ratings}
                return self.answer(200, out)
            # productpage
            st, reviews = call(upstream + "/reviews/0")
            page = {"service": "productpage", "book": BOOKS["0"], "reviews_status": st,
                    "reviews": reviews}
            return self.answer(200 if st == 200 else 502, page)

    return Handler


def serve(role, args):
    bind = args.bind or os.environ.get("BIND") or os.environ.get("TRELLIS_APP_IP", "127.0.0.1")
    port = args.port or int(os.environ.get("PORT", "9080"))
    version = args.version or os.environ.get("VERSION", "v1")
    upstream = {"productpage": os.environ.get("REVIEWS_URL", "http://reviews:9080"),
                "reviews": os.environ.get("RATINGS_URL", "http://ratings:9080")}.get(role)
    srv = ThreadingHTTPServer((bind, port), make_handler(role, version, upstream))
    srv.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
    srv.serve_forever()


def load(args):
    """N GETs with C threads; JSON summary: statuses, versions of reviews seen, latencies."""
    headers = dict(h.split(":", 1) for h in args.header)
    lock = threading.Lock()
    stats = {"status": {}, "versions": {}, "lat_ms": []}
    todo = list(range(args.n))

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            t0 = time.monotonic()
            url, hdrs = via_sidecar(args.url, {k.strip(): v.strip() for k, v in headers.items()})
            req = urllib.request.Request(url, headers=hdrs)
            body = b""
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    st, body = r.status, r.read()
            except urllib.error.HTTPError as e:
                st, body = e.code, e.read()
            except OSError:
                st = 0
            ms = (time.monotonic() - t0) * 1000
            ver = None
            try:
                obj = json.loads(body)
                rv = obj.get("reviews") if isinstance(obj, dict) else None
                ver = rv.get("version") if isinstance(rv, dict) else obj.get("version")
            except (ValueError, AttributeError):
                pass
            with lock:
                stats["status"][str(st)] = stats["status"].get(str(st), 0) + 1
                if ver:
                    stats["versions"][ver] = stats["versions"].get(ver, 0) + 1
                stats["lat_ms"].append(ms)
                if args.show and st != 200 and "example" not in stats:
                    stats["example"] = body.decode("utf-8", "replace").strip()[:200]

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats["seconds"] = round(time.monotonic() - t0, 3)
    lat = sorted(stats.pop("lat_ms"))
    if lat:
        stats["p50_ms"] = round(lat[len(lat) // 2], 2)
        stats["p99_ms"] = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2)
    print(json.dumps(stats, sort_keys=True))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("role", choices=["productpage", "reviews", "ratings", "idle", "load"])
    p.add_argument("url", nargs="?")
    p.add_argument("--bind")
    p.add_argument("--port", type=int)
    p.add_argument("--version")
    p.add_argument("-n", type=int, default=100)
    p.add_argument("-c", type=int, default=4)
    p.add_argument("-H", "--header", action="append", default=[])
    p.add_argument("--show", action="store_true", help="load: keep the first non-200 body")
    args = p.parse_args()
    if args.role == "idle":
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        while True:
            time.sleep(3600)
    if args.role == "load":
        if not args.url:
            p.error("load needs a URL")
        return load(args)
    serve(args.role, args)


if __name__ == "__main__":
    main()
