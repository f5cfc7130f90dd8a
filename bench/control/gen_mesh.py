#!/usr/bin/python3
"""A synthetic mesh for the control-plane benchmark (docs/performance.md).

SERVICES Services (port 8080, http), each with ENDPOINTS/SERVICES endpoints
in one Endpoints object, and PROXIES client workloads (Pods) each scoped by
a Sidecar to CALLS services (egress hosts). Addresses come from
198.18.0.0/15 (nothing is contacted: the benchmark only compiles and
pushes). Writes DIR/services.yaml, DIR/clients.yaml, DIR/routes.yaml.

usage: gen_mesh.py DIR [--services N] [--endpoints N] [--proxies N] [--calls N]
                       [--unscoped]
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
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    rnd = random.Random(1)
    net = ipaddress.ip_network("198.18.0.0/15")
    per = max(1, a.endpoints // a.services)
    ip = iter(net.hosts())
    with open(os.path.join(a.dir, "services.yaml"), "w") as f:
        for s in range(a.services):
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
                calls = rnd.sample(range(a.services), a.calls)
                hosts = ", ".join(f'"mesh/svc-{c}.mesh.svc.cluster.local"' for c in calls)
                f.write(f"apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
                        f"metadata: {{name: client-{p}, namespace: mesh}}\n"
                        f"spec:\n  workloadSelector: {{labels: {{app: client-{p}}}}}\n"
                        f"  egress: [{{hosts: [{hosts}]}}]\n---\n")
    with open(os.path.join(a.dir, "routes.yaml"), "w") as f:
        f.write("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                "metadata: {name: svc-0, namespace: mesh}\nspec:\n  hosts: [svc-0]\n"
                "  http:\n  - route:\n    - destination: {host: svc-0}\n      weight: 100\n")


if __name__ == "__main__":
    main()
