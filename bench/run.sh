#!/bin/sh
# One-command benchmark: trellis vs HAProxy vs nginx mTLS hop pairs.
#   bench/run.sh [--quick] [other bench.py options, see --help]
# Debian's python3 is required (python3-cryptography for the test PKI).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$here/bench.py" "$@"
