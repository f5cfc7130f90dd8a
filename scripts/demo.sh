#!/usr/bin/env bash
# `make demo`: the bookinfo mesh on this machine (trellis up examples/bookinfo,
# traffic from the loadgen workload, per-edge metrics and mTLS identities, a
# canary shift, a denied call, trellis down); scripts/bookinfo_demo.py.
# Network namespaces need root: without root (or without `ip netns`), the
# loopback demo runs instead (scripts/demo-hop.sh: one mTLS hop between two
# proxies on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TRELLIS_BIN:-build/trellis}
if [ "$(id -u)" -eq 0 ] && ip netns list >/dev/null 2>&1; then
  exec /usr/bin/python3 scripts/bookinfo_demo.py --trellis "$BIN"
fi
if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  exec sudo -n /usr/bin/python3 scripts/bookinfo_demo.py --trellis "$BIN"
fi
echo "demo: network namespaces need root (or password-less sudo): running the loopback demo"
exec ./scripts/demo-hop.sh
