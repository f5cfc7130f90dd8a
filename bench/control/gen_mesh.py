#!/usr/bin/python3
"""A synthetic mesh for the control-plane benchmark (docs/performance.md).

SERVICES Services (port 8080, http), each with ENDPOINTS/SERVICES endpoints
in one Endpoints object, and PROXIES client workloads (Pods) each scoped by
a Sidecar to CALLS services (egress hosts). Every tenth proxy calls svc-0,
the service the benchmark changes (its Endpoints and a VirtualService
splitting it 90/10 with svc-1 are in hot.yaml, a small file to rewrite).
meshwide.yaml holds a DestinationRule of the root namespace (istio-system)
for every host (`*.local`: a connection limit on every cluster), the
mesh-wide change: rewriting its limit changes every proxy's model.
Addresses come from 198.18.0.0/15 (nothing is contacted: the benchmark only
compiles and pushes). Writes DIR/services.yaml, DIR/clients.yaml,
DIR/hot.yaml and DIR/meshwide.yaml.

usage: gen_mesh.py DIR [--services N] [--endpoints N] [--proxies N] [--calls N]
                       [--unscoped] [--hot weight|endpoint|mesh]
"""
import argparse
import ipaddress
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=100000)
    ap.add_argument("--proxies", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--unscoped", action="store_true", help="no Sidecar: every proxy sees all")
    ap.add_argument("--hot", choices=["weight", "endpoint", "mesh"],
                    help="only rewrite hot.yaml (a new weight, 80/20, or one more endpoint) or "
                    "meshwide.yaml (mesh: the connection limit of every cluster, 1000 <-> 2000)")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    per = max(1, a.endpoints // a.services)
    if a.hot == "weight":
        return hot(a.dir, per, weight=80, extra=0)
    if a.hot == "endpoint":
        return hot(a.dir, per, weight=90, extra=1)
    if a.hot == "mesh":
        return meshwide(a.dir, toggle=True)
    rnd = random.Random(1)
    net = ipaddress.ip_network("198.18.0.0/15")
    ip = iter(net.hosts())
    with open(os.path.join(a.dir, "services.yaml"), "w") as f:
        for s in range(1, a.services):
            f.write(f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: mesh}}\n"
                    f"spec:\n  selector: {{app: svc-{s}}}\n  ports: [{{name: http, port: 8080}}]\n---\n")
            addrs = ", ".join(f"{{ip: {next(ip)}}}" for _ in range(per))
            f.write(f"apiVersion: v1\nkind: Endpoints\nmetadata: {{name: svc-{s}, namespace: mesh}}\n"
                    f"subsets:\n- addresses: [{addrs}]\n  ports: [{{name: http, port: 8080}}]\n---\n")
    with open(os.path.join(a.dir, "clients.yaml"), "w") as f:
        for p in range(a.proxies):
            f.write(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: client-{p}, namespace: mesh, "
                    f"labels: {{app: client-{p}, security.istio.io/tlsMode: istio}}}}\n"
                    f"spec: {{serviceAccountName: client-{p}}}\nstatus: {{podIP: {next(ip)}}}\n---\n")
            if not a.unscoped:
                calls = rnd.sample(range(1, a.services), a.calls)
                if p % 10 == 0:
                    calls[0] = 0
                hosts = ", ".join(f'"mesh/svc-{c}.mesh.svc.cluster.local"' for c in calls)
                f.write(f"apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
                        f"metadata: {{name: client-{p}, namespace: mesh}}\n"
                        f"spec:\n  workloadSelector: {{labels: {{app: client-{p}}}}}\n"
                        f"  egress: [{{hosts: [{hosts}]}}]\n---\n")
    hot(a.dir, per, weight=90, extra=0)
    meshwide(a.dir, toggle=False)


def meshwide(d, toggle):
    """A DestinationRule in the root namespace for every host: its connection
    limit is in every outbound cluster of every proxy. toggle: the limit that
    is not in the file now (1000 <-> 2000); else 1000."""
    path = os.path.join(d, "meshwide.yaml")
    limit = 1000
    if toggle:
        with open(path) as f:
            limit = 1000 if "maxConnections: 2000" in f.read() else 2000
    with open(path + ".tmp", "w") as f:
        f.write("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                "metadata: {name: mesh-default, namespace: istio-system}\n"
                f"spec:\n  host: \"*.local\"\n  trafficPolicy:\n"
                f"    connectionPool:\n      tcp: {{maxConnections: {limit}}}\n")
    os.replace(path + ".tmp", path)


def hot(d, per, weight, extra):
    """svc-0's Service, Endpoints (per + extra addresses from 198.19.255.0/24)
    and a VirtualService splitting it weight/100-weight with svc-1."""
    addrs = [f"198.19.254.{i % 250 + 1}" for i in range(per)]
    addrs += [f"198.19.255.{i + 1}" for i in range(extra)]
    with open(os.path.join(d, "hot.yaml.tmp"), "w") as f:
        f.write("apiVersion: v1\nkind: Service\nmetadata: {name: svc-0, namespace: mesh}\n"
                "spec:\n  selector: {app: svc-0}\n  ports: [{name: http, port: 8080}]\n---\n")
        f.write("apiVersion: v1\nkind: Endpoints\nmetadata: {name: svc-0, namespace: mesh}\n"
                "subsets:\n- addresses: [" + ", ".join(f"{{ip: {x}}}" for x in addrs) + "]\n"
                "  ports: [{name: http, port: 8080}]\n---\n")
        f.write("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                "metadata: {name: svc-0, namespace: mesh}\nspec:\n  hosts: [svc-0]\n"
                "  http:\n  - route:\n    - destination: {host: svc-0}\n"
                f"      weight: {weight}\n    - destination: {{host: svc-1}}\n"
                f"      weight: {100 - weight}\n")
    os.replace(os.path.join(d, "hot.yaml.tmp"), os.path.join(d, "hot.yaml"))


if __name__ == "__main__":
    main()
