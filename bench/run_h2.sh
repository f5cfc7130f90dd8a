#!/bin/sh
# HTTP/2 and gRPC benchmark: trellis vs HAProxy h2 mTLS hop pairs.
#   bench/run_h2.sh [--quick] [other h2.py options, see --help]
# Debian's python3 is required (python3-cryptography for the test PKI,
# python3-grpcio for the gRPC sanity call).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$here/h2.py" "$@"
