#!/usr/bin/env bash
# Install every build and test dependency from Debian packages (Debian 12).
# Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  # build
  build-essential pkg-config meson ninja-build clang clang-format libclang-rt-14-dev llvm
  libssl-dev libnghttp2-dev libfyaml-dev libpcre2-dev libcmocka-dev libc-ares-dev
  # integration tests: clients
  curl openssl nghttp2-client wrk
  python3 python3-pytest python3-requests python3-httpx python3-h2 python3-grpcio python3-websocket
  python3-cryptography python3-jwt
  # integration tests and benchmarks: servers and peers
  nginx-light libnginx-mod-http-echo haproxy
  iproute2 procps
  # sidecar capture: trellis ctl iptables writes nftables (or iptables) rules; test_capture
  # checks the wire
  nftables iptables tcpdump
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "bootstrap: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The Debian packages enable nginx/haproxy services; tests start their own
# instances, so stop any that the package scripts started.
for svc in nginx haproxy; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
  fi
done
