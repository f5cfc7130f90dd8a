#!/usr/bin/env bash
# The loopback demo (no root, no network namespaces needed): a two-proxy mTLS
# mesh hop on loopback:
#   curl -> trellis "web" (outbound, :18101) -> mTLS -> trellis "api" (inbound STRICT, :18102)
#        -> nginx backend (:18103)
# Certificates are SPIFFE SVIDs from a throwaway CA. Everything started here is
# stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TRELLIS_BIN:-build/trellis}
work=$(mktemp -d /tmp/trellis-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

/usr/bin/python3 tests/integration/pki.py --out "$work/pki" >/dev/null

mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1;
error_log $work/nginx/logs/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  # nginx's default temporary paths are root's; keep everything in $work.
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:18103;
    location / { default_type text/plain; return 200 "hello from the api backend: \$request_method \$request_uri (x-forwarded-for: \$http_x_forwarded_for)\n"; }
  }
}
NGX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)

cat > "$work/api.yaml" <<YAML
node: {id: api-0, workload: api, namespace: default, service: api.default.svc.cluster.local,
       principal: spiffe://cluster.local/ns/default/sa/server}
workers: 1
admin: {address: 127.0.0.1:18112, socket: $work/api.admin.sock}
tls:
  - {name: id, cert: $work/pki/server.pem, key: $work/pki/server.key, ca: $work/pki/ca.pem, trust_domain: cluster.local}
listeners:
  - name: inbound
    address: 127.0.0.1:18102
    direction: inbound
    tls: {mode: STRICT, context: id}
    route_table: local
    authorization:
      rules:
        - {action: ALLOW, principals: ["spiffe://cluster.local/ns/default/sa/client"]}
route_tables:
  - name: local
    virtual_hosts: [{name: all, domains: ["*"], routes: [{name: app, match: {path: {prefix: /}}, cluster: app}]}]
clusters:
  - {name: app, endpoints: [{address: 127.0.0.1:18103}]}
YAML

cat > "$work/web.yaml" <<YAML
node: {id: web-0, workload: web, namespace: default, principal: spiffe://cluster.local/ns/default/sa/client}
workers: 1
admin: {address: 127.0.0.1:18111, socket: $work/web.admin.sock}
tls:
  - {name: id, cert: $work/pki/client.pem, key: $work/pki/client.key, ca: $work/pki/ca.pem, trust_domain: cluster.local}
listeners:
  - {name: outbound, address: 127.0.0.1:18101, direction: outbound, route_table: mesh}
route_tables:
  - name: mesh
    virtual_hosts: [{name: api, domains: ["*"], routes: [{name: api, match: {path: {prefix: /}}, cluster: api}]}]
clusters:
  - name: api
    service: api.default.svc.cluster.local
    workload: api
    namespace: default
    tls: {context: id, server_ids: ["spiffe://cluster.local/ns/default/sa/server"]}
    endpoints: [{address: 127.0.0.1:18102}]
YAML

"$BIN" proxy --config "$work/api.yaml" & pids+=($!)
"$BIN" proxy --config "$work/web.yaml" & pids+=($!)
for port in 18111 18112; do
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
done

echo "== curl through the mesh hop (web -> mTLS -> api -> nginx)"
curl -sS -H 'Host: api' http://127.0.0.1:18101/hello
echo "== plaintext straight to the STRICT inbound port is refused"
curl -sS -m 2 http://127.0.0.1:18102/hello || echo "(refused, as it must be)"
echo "== metrics on the inbound proxy (reporter=destination)"
curl -s http://127.0.0.1:18112/stats/prometheus | grep '^istio_requests_total' || true
echo "== metrics on the outbound proxy (reporter=source)"
curl -s http://127.0.0.1:18111/stats/prometheus | grep '^istio_requests_total' || true
echo "== the configuration dump is served only on the admin socket (mode 0600), not on loopback TCP"
curl -s http://127.0.0.1:18112/config_dump
dump=$(curl -sS --unix-socket "$work/api.admin.sock" http://admin/config_dump)
echo "${dump:0:300} ..."
