#!/usr/bin/env bash
# `make demo`: the bookinfo mesh on this machine (trellis up examples/bookinfo,
# traffic from the loadgen workload, per-edge metrics and mTLS identities, a
# canary shift, a denied call, trellis down); scripts/bookinfo_demo.py.
# Network namespaces need root: without root (or without `ip netns`), the same
# mesh runs in loopback mode (trellis up --loopback: every workload on loopback
# addresses of its own, no root). scripts/demo-hop.sh, one mTLS hop between two
# proxies, stays available on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TRELLIS_BIN:-build/trellis}
# Can we make a network namespace here? (Root in an unprivileged container
# cannot.) The probe namespace has a name of its own and is removed at once.
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
fi
probe="trl-probe-$$"
if { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; } && $SUDO ip netns add "$probe" 2>/dev/null; then
  $SUDO ip netns del "$probe"
  exec $SUDO /usr/bin/python3 scripts/bookinfo_demo.py --trellis "$BIN"
fi
echo "demo: no network namespaces here (they need root, or password-less sudo, with"
echo "      CAP_SYS_ADMIN): running the mesh in loopback mode (trellis up --loopback)"
exec /usr/bin/python3 scripts/bookinfo_demo.py --trellis "$BIN" --loopback
