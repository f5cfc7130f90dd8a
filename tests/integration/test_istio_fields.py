"""Every field of the Istio field inventory (tests/data/istio_fields.txt),
measured on the real compiler; docs/compat/istio.md must say what is
measured.

For each row, a minimal valid resource of its kind that sets that one field
(plus what its kind requires: a VirtualService's hosts and a route, a
DestinationRule's host...) is compiled with `trellis ctl compile` next to a
small mesh (services, pods, the client workload), and again without the
field. The row's status:

  - `error: MESSAGE` / `warning: MESSAGE`: the compiler reported the field
    (at its path, under it, or at an ancestor that takes it along, such as
    an ignored `fault` for `fault.abort.httpStatus`);
  - `works`: nothing reported, and the field reaches the model: the model
    differs from the one compiled without it (a message row, a container of
    other rows, needs only no finding);
  - `TBD`: nothing reported and the model is the same with and without the
    field: the compiler neither uses nor reports it (issue 8 wants neither);
    or the compiler reports the field as unknown (also a gap, not a status).

An enum is tried with each of its values, and a few other fields with
several (the port protocols); the status is the most severe outcome, and
when the values differ the Notes end with "Measured: ..." naming each.
What each row is measured in (the mesh, the resource before the field, the
values, and the hooks that put a field where it acts) is in the tables
below. A compile that fails (a crash, an invalid model) fails the test.

After a compiler change, regenerate the doc's Status and Notes with
TRELLIS_UPDATE_GOLDEN=1 and review the diff like code."""
import concurrent.futures
import copy
import json
import os
import re
import subprocess
import tempfile

import pytest

from conftest import TRELLIS
from test_istio_inventory import CORE_KINDS, DOC, ISTIO_KINDS, inventory

# ---------------------------------------------------------------- the mesh


def _obj(api, kind, name, ns="default", labels=None, **rest):
    meta = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    if labels:
        meta["labels"] = labels
    return {"apiVersion": api, "kind": kind, "metadata": meta, **rest}


MESH = {"security.istio.io/tlsMode": "istio"}  # a pod with a sidecar: mTLS


def service(name, ports, selector=None):
    spec = {"ports": [{"name": n, "port": p, **({"targetPort": t} if t else {})}
                      for n, p, t in ports]}
    if selector is not None:
        spec["selector"] = selector
    return _obj("v1", "Service", name, spec=spec)


def pod(name, ip, labels, sa, containers=None):
    spec = {"serviceAccountName": sa}
    if containers is not None:
        spec["containers"] = containers
    return _obj("v1", "Pod", name, labels=labels, spec=spec, status={"podIP": ip})


def istio(kind, name, spec, ns="default"):
    group = "security.istio.io" if kind == "RequestAuthentication" else "networking.istio.io"
    return _obj(f"{group}/v1", kind, name, ns=ns, spec=spec)


# A JSON Web Key Set with one P-256 key (the public half only; no token is
# made here: the rows measure what reaches the model).
JWKS = ('{"keys":[{"kty":"EC","crv":"P-256","x":"vzMf-mUgUezcBEWbnbi5lA9szBa7iXS_46JmODV8aiU",'
        '"y":"bB7liq4hr2qZUCuFixkJ3-cCGZ8F6y-J_l98f2ztCK4"}]}')


def security(kind, name, spec, ns="default"):
    return _obj("security.istio.io/v1", kind, name, ns=ns, spec=spec)


# The client (whose model is compiled), reviews (two versions, two ports),
# ratings, and db (TCP, two ports). Every pod has a sidecar, so TLS settings show.
COMMON = [
    # localities (istio-locality) for locality load balancing: reviews-v1
    # in the client's zone, reviews-v2 in another region
    pod("client", "10.0.0.2", {"app": "client", "istio-locality": "us-east.zone1", **MESH},
        "client"),
    service("client", [("http", 8000, None)], {"app": "client"}),
    service("reviews", [("http", 9080, None), ("http-admin", 9081, None)], {"app": "reviews"}),
    pod("reviews-v1", "10.0.0.11", {"app": "reviews", "version": "v1",
                                    "istio-locality": "us-east.zone1", **MESH}, "reviews"),
    pod("reviews-v2", "10.0.0.12", {"app": "reviews", "version": "v2",
                                    "istio-locality": "us-west.zone2", **MESH}, "reviews"),
    service("ratings", [("http", 9080, None)], {"app": "ratings"}),
    pod("ratings-v1", "10.0.0.21", {"app": "ratings", "version": "v1", **MESH}, "ratings"),
    service("db", [("tcp", 3306, None), ("tcp-admin", 3307, None)], {"app": "db"}),
    pod("db-v1", "10.0.0.31", {"app": "db", "version": "v1", **MESH}, "db"),
    # what credentialName names (the proxy parses the PEM, not the compiler)
    _obj("v1", "Secret", "reviews-credential", type="kubernetes.io/tls", data={
        "tls.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=",
        "tls.key": "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUUKLS0tLS1FTkQgUFJJVkFURSBLRVktLS0tLQo=",
        "ca.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="}),
]
SUBSETS = [
    istio("DestinationRule", "reviews", {"host": "reviews", "subsets": [
        {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}),
    istio("DestinationRule", "db", {"host": "db", "subsets": [
        {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}),
]
# A DestinationRule's policy shows on the clusters routed to: reviews, and its
# subset v1.
ROUTE_TO_V1 = istio("VirtualService", "reviews-split", {"hosts": ["reviews"], "http": [{"route": [
    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
    {"destination": {"host": "reviews"}, "weight": 50}]}]})
SE_VM_POD = pod("legacyvm", "10.0.1.9", {"app": "legacyvm"}, "legacyvm")
# The mesh configuration with an HTTP external authorizer (CUSTOM policies).
MESH_CONFIG = _obj("v1", "ConfigMap", "istio", ns="istio-system", data={
    "mesh": "extensionProviders:\n- name: opa\n  envoyExtAuthzHttp:\n"
            "    service: ratings.default.svc.cluster.local\n    port: 9080\n"})
CONTEXTS = {
    "mesh": COMMON,
    # with the delegates a rule's delegate names: reviews-part here routes to
    # v2, the one in namespace other to v1 (delegate.namespace shows)
    "vs": COMMON + SUBSETS + [
        istio("VirtualService", "reviews-part", {"http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v2"}}]}]}),
        istio("VirtualService", "reviews-part", {"http": [{"route": [
            {"destination": {"host": "reviews.default.svc.cluster.local", "subset": "v1"}}]}]},
            ns="other")],
    # tls rules act on a TLS port: secure (https and tls-admin), two versions.
    "vs-tls": COMMON + SUBSETS + [
        service("secure", [("https", 8443, None), ("tls-admin", 8444, None)], {"app": "secure"}),
        pod("secure-v1", "10.0.0.41", {"app": "secure", "version": "v1", **MESH}, "secure"),
        pod("secure-v2", "10.0.0.42", {"app": "secure", "version": "v2", **MESH}, "secure"),
        istio("DestinationRule", "secure", {"host": "secure", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}}]})],
    "dr": COMMON + [ROUTE_TO_V1],
    "gateway": COMMON + [
        pod("ingress", "10.0.0.100", {"istio": "ingressgateway"}, "ingress"),
        istio("VirtualService", "bookinfo", {"hosts": ["*"], "gateways": ["gw"], "http": [
            {"route": [{"destination": {"host": "reviews", "port": {"number": 9080}}}]}]})],
    "se": COMMON + [SE_VM_POD],
    "authz-ext": COMMON + [MESH_CONFIG],
    "se-subsets": COMMON + [
        istio("DestinationRule", "api", {"host": "api.example.com", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}}]}),
        istio("VirtualService", "api", {"hosts": ["api.example.com"], "http": [
            {"route": [{"destination": {"host": "api.example.com", "subset": "v1"}}]}]})],
    "we": COMMON + [istio("ServiceEntry", "vms", {
        "hosts": ["vm.example.com"], "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
        "location": "MESH_INTERNAL", "resolution": "STATIC",
        "workloadSelector": {"labels": {"app": "vm"}}})],
    "k8s-service": COMMON + [pod("shop-1", "10.0.3.1", {"app": "shop", **MESH}, "shop", [
        {"name": "app", "ports": [{"name": "web", "containerPort": 8081}]}])],
    "k8s-endpoints": COMMON + [
        service("legacy", [("http", 8081, None)]),
        pod("legacy-pod", "10.0.4.1", {"app": "legacy", **MESH}, "legacy")],
    "k8s-slice": COMMON + [
        service("sliced", [("http", 8082, None)]),
        pod("sliced-pod", "10.0.5.1", {"app": "sliced", **MESH}, "sliced")],
    "k8s-pod": COMMON + [service("shop", [("http", 8080, "web")], {"app": "shop"})],
}
# The same Service with a second Pod that is not Ready: an endpoint only
# with publishNotReadyAddresses.
CONTEXTS["k8s-service-notready"] = CONTEXTS["k8s-service"] + [_obj(
    "v1", "Pod", "shop-2", labels={"app": "shop", **MESH},
    spec={"serviceAccountName": "shop",
          "containers": [{"name": "app", "ports": [{"name": "web", "containerPort": 8081}]}]},
    status={"podIP": "10.0.3.2", "conditions": [{"type": "Ready", "status": "False"}]})]

# The resource each row is measured in, before the row's field is set.
VS_HTTP = {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
VS_TCP = {"hosts": ["db"], "tcp": [{"route": [{"destination": {"host": "db", "subset": "v1"}}]}]}
VS_TLS = {"hosts": ["secure"], "tls": [{"match": [{"sniHosts": ["secure"]}],
                                        "route": [{"destination": {"host": "secure"}}]}]}


def subject(kind, path):
    """(resource, context name, workload) a row of kind is measured in (a
    fresh copy)."""
    doc, ctx, wl = _subject(kind, path)
    return copy.deepcopy(doc), ctx, wl


def _subject(kind, path):
    if kind == "VirtualService":
        if path.startswith("spec.tls"):
            return istio(kind, "under-test", VS_TLS), "vs-tls", "default/client"
        spec = VS_TCP if path.startswith("spec.tcp") else VS_HTTP
        return istio(kind, "under-test", spec), "vs", "default/client"
    if kind == "DestinationRule":
        return istio(kind, "under-test", {"host": "reviews", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}}]}), "dr", "default/client"
    if kind == "Gateway":
        # The rows set the first server; the second keeps the gateway serving
        # when the first is refused.
        return istio(kind, "gw", {"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]},
            {"port": {"number": 8081, "name": "http-2", "protocol": "HTTP"}, "hosts": ["*"]}]}), \
            "gateway", "default/ingress"
    if kind == "Sidecar":
        return istio(kind, "under-test", {"egress": [
            {"hosts": ["./reviews.default.svc.cluster.local"]}]}), "mesh", "default/client"
    if kind == "RequestAuthentication":
        # Applies to the client, whose inbound listener (Service client, port
        # 8000) carries the rules.
        return istio(kind, "under-test", {
            "selector": {"matchLabels": {"app": "client"}},
            "jwtRules": [{"issuer": "https://issuer.example", "jwks": JWKS}]}), \
            "mesh", "default/client"
    if kind == "ServiceEntry":
        return istio(kind, "under-test", {
            "hosts": ["api.example.com"], "location": "MESH_EXTERNAL", "resolution": "STATIC",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": "10.0.1.1"}]}), "se", "default/client"
    if kind == "WorkloadEntry":
        return istio(kind, "vm-1", {"address": "10.0.2.1", "labels": {"app": "vm"}}), \
            "we", "default/client"
    if kind == "PeerAuthentication":
        # A workload policy for the client, whose inbound port 8000 shows the mode.
        return _obj("security.istio.io/v1", kind, "under-test", spec={
            "selector": {"matchLabels": {"app": "client"}}}), "mesh", "default/client"
    if kind == "AuthorizationPolicy":
        # Allow-all on the client's inbound listener: every field narrows it.
        return security(kind, "under-test", {"rules": [{}]}), "mesh", "default/client"
    if kind == "Service":
        return service("shop", [("web", 8080, 8080)], {"app": "shop"}), "k8s-service", \
            "default/client"
    if kind == "Endpoints":
        return _obj("v1", "Endpoints", "legacy", subsets=[
            {"addresses": [{"ip": "10.0.4.1"}], "ports": [{"name": "http", "port": 8081}]}]), \
            "k8s-endpoints", "default/client"
    if kind == "EndpointSlice":
        return _obj("discovery.k8s.io/v1", "EndpointSlice", "sliced-abcde",
                    labels={"kubernetes.io/service-name": "sliced"}, addressType="IPv4",
                    endpoints=[{"addresses": ["10.0.5.1"]}],
                    ports=[{"name": "http", "port": 8082}]), "k8s-slice", "default/client"
    if kind == "Pod":
        return pod("shop-1", "10.0.3.1", {"app": "shop", **MESH}, "shop", [
            {"name": "app", "ports": [{"name": "web", "containerPort": 8081}]}]), \
            "k8s-pod", "default/client"
    if kind == "Namespace":
        return _obj("v1", "Namespace", "default", ns=None), "mesh", "default/client"
    raise AssertionError(kind)


# ------------------------------------------------------------------ values
#
# Keys are "KIND:SUFFIX" or "*:SUFFIX": the value for every row whose path
# ends with SUFFIX (at a segment boundary); the longest suffix wins, KIND
# before "*". A list of (label, value) pairs is measured value by value.
# Values are chosen so that a field the compiler uses changes the model
# (a source label that does not match, a port the service does not have...).

def V(*pairs):
    return list(pairs)


VALUES = {
    # VirtualService
    "VirtualService:spec.exportTo": ["other"],
    "VirtualService:spec.gateways": ["gw"],
    "*:corsPolicy.allowCredentials": True,
    "*:corsPolicy.allowOrigin": ["https://a.example"],
    "*:corsPolicy.allowMethods": ["GET"],
    "*:corsPolicy.maxAge": "10s",
    "*:allowOrigins[].exact": "https://a.example",
    "*:allowOrigins[].prefix": "https://",
    "*:allowOrigins[].regex": "https://.*",
    "*:delegate.name": "reviews-part",
    "*:delegate.namespace": "other",
    "*:directResponse.status": 503,
    "*:body.string": "down",
    "*:body.bytes": "ZG93bg==",
    "*:abort.grpcStatus": "UNAVAILABLE",
    "*:abort.http2Error": "INTERNAL_ERROR",
    "*:abort.httpStatus": 503,
    "*:delay.percent": 50,
    "*:percentage.value": 50.0,
    "*:authority.exact": "reviews",
    "*:authority.prefix": "rev",
    "*:authority.regex": "rev.*",
    "*:method.exact": "GET",
    "*:method.prefix": "GE",
    "*:method.regex": "GE.*",
    "*:scheme.exact": "https",
    "*:scheme.prefix": "http",
    "*:scheme.regex": "https?",
    "*:uri.exact": "/api",
    "*:uri.prefix": "/api",
    "*:uri.regex": "/api/.*",
    "VirtualService:match[].gateways": ["gw"],
    "*:match[].ignoreUriCase": True,
    "*:match[].name": "jason",
    "VirtualService:http[].match[].port": 9081,
    "VirtualService:tcp[].match[].port": 3307,
    "VirtualService:tcp[].route[].destination.port.number": 3307,
    "VirtualService:tls[].match[].port": 8444,
    "VirtualService:tls[].route[].destination.port.number": 8444,
    "*:match[].sourceLabels": {"app": "other"},
    "*:match[].sourceNamespace": "other",
    "*:match[].statPrefix": "reviews",
    "*:destinationSubnets": ["10.0.0.0/8"],
    "*:sourceSubnet": "10.0.0.0/8",
    "*:mirror.host": "ratings",
    "*:mirror.subset": "v1",
    "*:destination.port.number": 9081,
    "*:destination.subset": "v2",
    "*:mirror.port.number": 9081,
    "*:mirrorPercent": 50,
    "*:mirror_percent": 50,
    "*:http[].name": "primary",
    "*:redirect.authority": "new.example",
    "*:redirect.port": 8443,
    "*:redirect.prefixRewrite": "/new",
    "*:redirect.redirectCode": 308,
    "*:redirect.scheme": "https",
    "*:redirect.uri": "/new",
    "*:retries.attempts": 3,
    "*:retries.retryOn": "5xx,connect-failure",
    "*:retries.backoff": "100ms",
    "*:retries.perTryTimeout": "2s",
    "*:retryIgnorePreviousHosts": False,  # true is the default
    "*:retryRemoteLocalities": True,
    "*:rewrite.authority": "new.example",
    "*:rewrite.uri": "/v2",
    "*:uriRegexRewrite.match": "^/old",
    "*:uriRegexRewrite.rewrite": "/new",
    "*:route[].weight": 30,
    "*:http[].timeout": "2s",
    "*:sniHosts": ["secure"],
    # DestinationRule (and the connection pool of a Sidecar)
    "DestinationRule:spec.exportTo": ["other"],
    "DestinationRule:workloadSelector.matchLabels": {"app": "other"},
    "*:http1MaxPendingRequests": 10,
    "*:http2MaxRequests": 10,
    "*:maxRequestsPerConnection": 10,
    "*:maxRetries": 1,
    "*:http.idleTimeout": "30s",
    "*:tcp.idleTimeout": "30s",
    "*:maxConcurrentStreams": 10,
    "*:connectTimeout": "2s",
    "*:maxConnectionDuration": "1h",
    "*:maxConnections": 10,
    "*:tcpKeepalive.probes": 3,
    "*:attributes[].name": "SameSite",
    "*:attributes[].value": "Strict",
    "*:httpCookie.name": "session",
    "*:httpCookie.path": "/",
    "*:httpHeaderName": "x-user",
    "*:httpQueryParameterName": "user",
    "*:tableSize": 131071,  # a prime, not the default 65537
    "*:minimumRingSize": 2048,
    "*:distribute[].from": "us-east/*",
    "*:distribute[].to": {"us-east/*": 100},
    "*:failover[].from": "us-east",
    "*:failover[].to": "us-west",
    # client and reviews-v1 share a region, so rank by version instead
    "*:failoverPriority": ["version=v2"],
    "*:localityLbSetting.enabled": False,
    "*:warmup.aggression": 1.5,
    "*:warmup.duration": "10s",
    "*:warmup.minimumPercent": 20.0,
    "*:warmupDurationSecs": "10s",
    "*:minClusterSize": 6,
    "*:consecutive5xxErrors": 3,
    "*:consecutiveErrors": 3,
    "*:consecutiveGatewayErrors": 3,
    "*:consecutiveLocalOriginFailures": 3,
    "*:maxEjectionPercent": 50,
    "*:outlierDetection.interval": "5s",
    "*:baseEjectionTime": "60s",
    "*:minHealthPercent": 10,
    "*:outlierDetectionHttpErrorCodes": [503],
    "*:portLevelSettings[].port.number": 9080,
    "*:retryBudget.percent": 25.0,  # not the default 20
    "*:minRetryConcurrency": 5,  # not the default 3
    "*:tunnel.protocol": "CONNECT",
    "*:tunnel.targetHost": "proxy.example",
    "*:tunnel.targetPort": 3128,
    "*:tls.caCertificates": "/etc/certs/ca.pem",
    "*:caCertificates": "/etc/certs/ca.pem",
    "*:tls.caCrl": "/etc/certs/crl.pem",
    "*:tls.clientCertificate": "/etc/certs/cert.pem",
    "*:tls.credentialName": "reviews-credential",
    "*:tls.privateKey": "/etc/certs/key.pem",
    "*:privateKey": "/etc/certs/key.pem",
    "*:serverCertificate": "/etc/certs/cert.pem",
    "*:tls.sni": "reviews.example",
    # another identity than the endpoints': verifying it changes the model
    "*:tls.subjectAltNames": ["spiffe://cluster.local/ns/default/sa/reviews-v2"],
    # Gateway and Sidecar
    "Gateway:servers[].bind": "10.0.0.100",
    "Gateway:servers[].defaultEndpoint": "127.0.0.1:8080",
    "Gateway:servers[].hosts": ["reviews.example.com"],
    "Gateway:servers[].name": "http-server",
    "Gateway:servers[].port.targetPort": 8090,
    "Gateway:servers[].port.protocol": V(("HTTP", "HTTP"), ("HTTP2", "HTTP2"), ("GRPC", "GRPC"),
                                         ("HTTPS", "HTTPS"), ("TLS", "TLS"), ("TCP", "TCP"),
                                         ("MONGO", "MONGO")),
    "*:tls.caCertCredentialName": "gateway-ca",
    "*:tls.cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"],
    "*:tls.credentialNames": ["gateway-credential"],
    "*:verifyCertificateHash": ["e7c8ae9ec4b1b01be2c5e8e9e4a0d7c5"],
    "*:verifyCertificateSpki": ["bSSlbV1VLg4dCHaN0xHy7wo4GHqtP2JmYIUbl2D/O9I="],
    "Sidecar:egress[].hosts": ["./ratings.default.svc.cluster.local"],
    "Sidecar:egress[].bind": "127.0.0.1",
    "Sidecar:ingress[].bind": "10.0.0.9",
    "Sidecar:ingress[].defaultEndpoint": "127.0.0.1:8000",
    "Sidecar:port.name": "http",
    "Sidecar:port.number": 9080,
    "Sidecar:port.protocol": "HTTP",
    "Sidecar:port.targetPort": 9080,
    "Sidecar:egressProxy.host": "egress.example.com",
    "Sidecar:egressProxy.port.number": 443,
    "Sidecar:egressProxy.subset": "v1",
    "Sidecar:workloadSelector.labels": {"app": "other"},
    # PeerAuthentication: a selector that misses the client (its STRICT then
    # does not apply)
    "PeerAuthentication:selector.matchLabels": {"app": "other"},
    # ServiceEntry and WorkloadEntry
    "ServiceEntry:spec.addresses": ["240.240.0.1"],
    "ServiceEntry:spec.exportTo": ["other"],
    "*:endpoints[].labels": {"version": "v1"},
    "*:locality": "us-east/zone1",
    "*:network": "network-2",
    "ServiceEntry:endpoints[].ports": {"http": 8080},
    "ServiceEntry:endpoints[].serviceAccount": "api",
    "*:weight": 5,
    "ServiceEntry:ports[].protocol": V(("HTTP", "HTTP"), ("HTTP2", "HTTP2"), ("GRPC", "GRPC"),
                                      ("HTTPS", "HTTPS"), ("TLS", "TLS"), ("TCP", "TCP"),
                                      ("MONGO", "MONGO")),
    "ServiceEntry:ports[].targetPort": 8080,
    "ServiceEntry:spec.subjectAltNames": ["spiffe://cluster.local/ns/default/sa/api"],
    "ServiceEntry:workloadSelector.labels": {"app": "legacyvm"},
    "WorkloadEntry:spec.ports": {"http": 9090},
    "WorkloadEntry:spec.serviceAccount": "vm",
    # AuthorizationPolicy
    "AuthorizationPolicy:source.ipBlocks": ["10.0.0.0/8"],
    "AuthorizationPolicy:source.notIpBlocks": ["10.0.0.0/8"],
    "AuthorizationPolicy:source.remoteIpBlocks": ["10.0.0.0/8"],
    "AuthorizationPolicy:source.notRemoteIpBlocks": ["10.0.0.0/8"],
    "AuthorizationPolicy:operation.ports": ["8000"],
    "AuthorizationPolicy:operation.notPorts": ["8000"],
    "AuthorizationPolicy:operation.paths": ["/api/{*}"],
    "AuthorizationPolicy:operation.notPaths": ["/admin*"],
    "AuthorizationPolicy:when[].key": "request.headers[x-user]",
    # a Service that does not select the client: the policy leaves it
    "AuthorizationPolicy:targetRef.kind": "Service",
    "AuthorizationPolicy:targetRef.name": "reviews",
    "AuthorizationPolicy:targetRefs[].kind": "Service",
    "AuthorizationPolicy:targetRefs[].name": "reviews",
    "AuthorizationPolicy:targetRef.namespace": "other",
    "AuthorizationPolicy:targetRefs[].namespace": "other",
    # Kubernetes
    'Service:metadata.annotations["networking.istio.io/exportTo"]': "other",
    "Service:spec.clusterIP": V(("10.96.0.10", "10.96.0.10"), ("None", "None")),
    "Service:spec.clusterIPs": ["10.96.0.10"],
    "Service:spec.externalName": "shop.example.com",
    "Service:spec.ports[].appProtocol": V(*[(p, p) for p in (
        "http", "http2", "grpc", "grpc-web", "https", "tcp", "tls", "mongo", "udp",
        "kubernetes.io/h2c", "kubernetes.io/ws", "kubernetes.io/wss")]),
    "Service:spec.ports[].name": V(("http", "http"), ("grpc", "grpc"), ("tcp", "tcp")),
    "Service:spec.ports[].targetPort": V(("8082", 8082), ('"web"', "web")),
    "Service:spec.publishNotReadyAddresses": True,
    "Service:spec.trafficDistribution": "PreferClose",
    "*:addresses[].hostname": "endpoint-0",
    "*:notReadyAddresses[].hostname": "endpoint-1",
    "*:notReadyAddresses[].ip": "10.0.4.2",
    "*:nodeName": "node-1",
    "*:targetRef.namespace": "other",
    "*:ports[].appProtocol": "http2",
    "EndpointSlice:conditions.ready": False,
    "EndpointSlice:conditions.serving": False,
    "EndpointSlice:conditions.terminating": True,
    "EndpointSlice:endpoints[].hostname": "endpoint-0",
    "EndpointSlice:endpoints[].zone": "us-east-1a",
    "Pod:metadata.deletionTimestamp": "2024-01-01T00:00:00Z",
    "Pod:status.conditions[].type": "Ready",
    "Pod:status.podIPs[].ip": "10.0.3.1",
    "Namespace:metadata.labels": {"istio-injection": "enabled"},
    # RequestAuthentication
    "RequestAuthentication:jwtRules[].jwks": JWKS,
    "RequestAuthentication:jwtRules[].jwksUri": "http://reviews:9080/jwks.json",
    "RequestAuthentication:spec.selector": {"matchLabels": {"app": "other"}},
    "RequestAuthentication:selector.matchLabels": {"app": "other"},
    "RequestAuthentication:targetRef.kind": "Service",
    "RequestAuthentication:targetRefs[].kind": "Service",
}

# What a message needs to be valid when the row creates it (its "required"
# children are added as well). Keys as in VALUES.
MINIMAL = {
    "*:directResponse": {"status": 503},
    "*:delegate": {"name": "reviews-part"},
    "*:fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100.0}}},
    "*:fault.abort": {"httpStatus": 503, "percentage": {"value": 100.0}},
    "*:fault.delay": {"fixedDelay": "1s", "percentage": {"value": 100.0}},
    "*:percentage": {"value": 50.0},
    "*:mirrorPercentage": {"value": 50.0},
    "*:mirror": {"host": "reviews"},
    "*:mirrors[]": {"destination": {"host": "reviews"}},
    "*:redirect": {"uri": "/new"},
    "*:retries": {"attempts": 3},
    "*:rewrite": {"uri": "/v2"},
    "*:uriRegexRewrite": {"match": "^/old", "rewrite": "/new"},
    "VirtualService:http[].route[]": {"destination": {"host": "reviews"}},
    "VirtualService:tcp[].route[]": {"destination": {"host": "db"}},
    "VirtualService:tls[].route[]": {"destination": {"host": "secure"}},
    "VirtualService:tls[].route[].destination.port": {"number": 8444},
    "*:destination.port": {"number": 9081},
    "VirtualService:tcp[].route[].destination.port": {"number": 3307},
    "*:mirror.port": {"number": 9081},
    "*:corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}]},
    "VirtualService:tls[].match[]": {"sniHosts": ["secure"]},
    "DestinationRule:workloadSelector": {"matchLabels": {"app": "client"}},
    "*:consistentHash": {"httpHeaderName": "x-user"},
    "*:localityLbSetting": {"enabled": True},
    "*:distribute[]": {"from": "us-east/*", "to": {"us-east/*": 100}},
    "*:failover[]": {"from": "us-east", "to": "us-west"},
    "*:zoneAwareLbSetting": {"enabled": True},
    "*:outlierDetection": {"consecutive5xxErrors": 5},
    "*:portLevelSettings[]": {"port": {"number": 9080}},
    "*:portLevelSettings[].port": {"number": 9080},
    "*:proxyProtocol": {"version": "V1"},
    "*:retryBudget": {"percent": 20.0},
    "*:http2KeepAlive": {"interval": "30s"},
    "*:tcpKeepalive": {"time": "30s"},
    "*:tlsCertificates[]": {"serverCertificate": "/etc/certs/cert.pem",
                            "privateKey": "/etc/certs/key.pem"},
    "Sidecar:egress[].port": {"number": 9080, "name": "http", "protocol": "HTTP"},
    "Sidecar:ingress[]": {"port": {"number": 8000, "name": "http", "protocol": "HTTP"},
                          "defaultEndpoint": "127.0.0.1:8000"},
    "Sidecar:ingress[].port": {"number": 8000, "name": "http", "protocol": "HTTP"},
    "Sidecar:outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
    "Sidecar:egressProxy": {"host": "egress.example.com"},
    "Sidecar:workloadSelector": {"labels": {"app": "client"}},
    "ServiceEntry:workloadSelector": {"labels": {"app": "legacyvm"}},
    "Endpoints:targetRef": {"kind": "Pod", "name": "legacy-pod", "namespace": "default"},
    "EndpointSlice:targetRef": {"kind": "Pod", "name": "sliced-pod", "namespace": "default"},
    "Endpoints:subsets[].notReadyAddresses[]": {"ip": "10.0.4.2"},
    "EndpointSlice:endpoints[].conditions": {"ready": True},
    "Pod:status.conditions[]": {"type": "Ready", "status": "True"},
    "Pod:status.podIPs[]": {"ip": "10.0.3.1"},
    "RequestAuthentication:jwtRules[]": {"issuer": "https://other.example", "jwks": JWKS},
    "RequestAuthentication:selector": {"matchLabels": {"app": "other"}},
    "RequestAuthentication:targetRef": {"kind": "Service", "name": "client"},
    "RequestAuthentication:targetRefs[]": {"kind": "Service", "name": "client"},
    "AuthorizationPolicy:when[]": {"key": "request.headers[x-user]", "values": ["a"],
                                   "notValues": ["b"]},
    "AuthorizationPolicy:targetRef": {"kind": "Service", "name": "reviews"},
    "AuthorizationPolicy:targetRefs[]": {"kind": "Service", "name": "reviews"},
    "AuthorizationPolicy:provider": {"name": "opa"},
    "AuthorizationPolicy:provider.name": "opa",
}

# Map keys where a row's path has {} (a header, a query parameter).
MAP_KEYS = {"headers": "x-user", "queryParams": "v", "withoutHeaders": "x-debug",
            "portLevelMtls": "8000"}  # the client's inbound (target) port

# Setting a field inside one of these drops the others (a route's action).
ACTIONS = ("route", "redirect", "directResponse", "delegate")


# Rows that need more around them to be measured where they act. A hook
# changes the resource (with and without the field) and may pick another
# context; the longest matching key applies to the row and the rows under
# it. With(PATH, VALUE) sets a sibling of the field (PATH relative to the
# field's parent) or, for a PATH from the resource's top, that path.
class With:
    def __init__(self, path, value):
        self.path, self.value = path, value


def _dr_visible(doc, ctx):
    # The rule's visibility shows when its policy does: a load balancer.
    doc["spec"]["trafficPolicy"] = {"loadBalancer": {"simple": "ROUND_ROBIN"}}
    del doc["spec"]["subsets"]
    return "mesh"


def _dr_in_root(doc, ctx):
    # exportTo says who else sees a rule: put it in the root namespace.
    doc["metadata"]["namespace"] = "istio-system"
    doc["spec"]["host"] = "reviews.default.svc.cluster.local"
    return _dr_visible(doc, ctx)


def _two_destinations(host):
    def hook(doc, ctx):
        rule = doc["spec"]["tcp" if host == "db" else "tls" if host == "secure" else "http"][0]
        rule["route"] = [{"destination": {"host": host, "subset": "v1"}},
                         {"destination": {"host": host}, "weight": 70}]
        return ctx
    return hook


def _regex_rewrite_alone(doc, ctx):
    # uri and uriRegexRewrite are exclusive (Istio's validation): a rewrite
    # without the minimal one's uri.
    doc["spec"]["http"][0]["rewrite"] = {}
    return ctx


def _delay_without_percentage(doc, ctx):
    # percent (deprecated) is read only when percentage is absent.
    doc["spec"]["http"][0]["fault"] = {"delay": {"fixedDelay": "1s"}}
    return ctx


def _gateway_tls(doc, ctx):
    # TLS settings of a server belong on a TLS port, in the mode that uses
    # them (files and credentials: SIMPLE, with a certificate from a Secret).
    srv = doc["spec"]["servers"][0]
    srv["port"] = {"number": 8443, "name": "https", "protocol": "HTTPS"}
    srv["tls"] = {"mode": "SIMPLE", "credentialName": "reviews-credential"}
    return ctx


def _sidecar_ingress_tls(doc, ctx):
    # As a gateway server's: SIMPLE with a certificate from a Secret.
    doc["spec"]["ingress"] = [{"port": {"number": 8443, "name": "https", "protocol": "HTTPS"},
                               "defaultEndpoint": "127.0.0.1:8000",
                               "tls": {"mode": "SIMPLE", "credentialName": "reviews-credential"}}]
    return ctx


def _h2_ingress(doc, ctx):
    # An inbound pool's HTTP/2 settings show on an HTTP/2 port only (the
    # application's protocol decides inbound): a gRPC ingress port.
    ing = doc["spec"].setdefault("ingress", [{"port": {"number": 8000, "name": "grpc"},
                                             "defaultEndpoint": "127.0.0.1:8000"}])
    for i in ing:
        i["port"]["protocol"] = "GRPC"
    return ctx


def _se_mesh_internal(doc, ctx):
    # Identity and location decide mTLS, which needs an endpoint with a sidecar.
    doc["spec"]["location"] = "MESH_INTERNAL"
    doc["spec"]["endpoints"][0]["labels"] = dict(MESH)
    return ctx


def _se_location(doc, ctx):
    del doc["spec"]["location"]
    doc["spec"]["endpoints"][0]["labels"] = dict(MESH)
    return ctx


def _se_selector(doc, ctx):
    del doc["spec"]["endpoints"]
    return ctx


def _keys_fetched(doc, ctx):
    # Keys fetched from a mesh service instead of inline (jwks wins over jwksUri).
    rule = doc["spec"]["jwtRules"][0]
    del rule["jwks"]
    rule["jwksUri"] = "http://reviews:9080/jwks.json"
    return ctx


def _keys_fetched_only(doc, ctx):
    del doc["spec"]["jwtRules"][0]["jwks"]
    return ctx


def _custom_policy(doc, ctx):
    doc["spec"]["action"] = "CUSTOM"
    return "authz-ext"


def _with_outlier_detection(port_level, subset):
    # Locality failover applies only with outlier detection (Istio), set at
    # the row's level: the rule's (which subsets inherit), or the port's
    # entry (which inherits nothing).
    def hook(doc, ctx):
        spec = doc["spec"]
        od = {"consecutive5xxErrors": 5}
        spec.setdefault("trafficPolicy", {})["outlierDetection"] = od
        at = spec
        if subset:
            # a subset of both versions, so that it has localities to rank
            at = spec.setdefault("subsets", [{"name": "v1"}])[0]
            at["labels"] = {"app": "reviews"}
        if port_level:
            tp = at.setdefault("trafficPolicy", {})
            pls = tp.setdefault("portLevelSettings", [{"port": {"number": 9080}}])
            pls[0]["outlierDetection"] = od
        return ctx
    return hook


def _external_name(doc, ctx):
    doc["spec"]["type"] = "ExternalName"
    return ctx


HOOKS = {
    "DestinationRule:spec.exportTo": _dr_in_root,
    "DestinationRule:spec.workloadSelector": _dr_visible,
    "VirtualService:http[].route[].weight": _two_destinations("reviews"),
    "VirtualService:tcp[].route[].weight": _two_destinations("db"),
    "VirtualService:tls[].route[].weight": _two_destinations("secure"),
    "VirtualService:fault.delay.percent": _delay_without_percentage,
    "VirtualService:rewrite.uriRegexRewrite": _regex_rewrite_alone,
    "*:match[].ignoreUriCase": With("uri", {"prefix": "/Api"}),
    "*:mirrorPercent": With("mirror", {"host": "ratings"}),
    "*:mirror_percent": With("mirror", {"host": "ratings"}),
    "*:mirrorPercentage": With("mirror", {"host": "ratings"}),
    "*:connectionPool.http.maxConcurrentStreams": With("h2UpgradePolicy", "UPGRADE"),
    "Sidecar:inboundConnectionPool.http.maxConcurrentStreams": _h2_ingress,
    "Sidecar:ingress[].connectionPool.http.maxConcurrentStreams": _h2_ingress,
    # local-origin failures count apart only when split
    "*:consecutiveLocalOriginFailures": With("splitExternalLocalOriginErrors", True),
    # a DestinationRule's TLS origination settings are read with SIMPLE (or MUTUAL)
    "DestinationRule:tls.caCertificates": With("mode", "SIMPLE"),
    "DestinationRule:tls.caCrl": With("mode", "SIMPLE"),
    "DestinationRule:tls.clientCertificate": With("mode", "MUTUAL"),
    "DestinationRule:tls.privateKey": With("mode", "MUTUAL"),
    "DestinationRule:tls.credentialName": With("mode", "SIMPLE"),
    "DestinationRule:tls.insecureSkipVerify": With("mode", "SIMPLE"),
    "DestinationRule:tls.subjectAltNames": With("mode", "SIMPLE"),
    "Gateway:servers[].tls": _gateway_tls,
    "Gateway:servers[].tls.httpsRedirect": lambda doc, ctx: ctx,  # a plaintext server's
    "Sidecar:ingress[].tls": _sidecar_ingress_tls,
    "ServiceEntry:endpoints[].labels": lambda doc, ctx: "se-subsets",
    "ServiceEntry:endpoints[].serviceAccount": _se_mesh_internal,
    "ServiceEntry:spec.subjectAltNames": _se_mesh_internal,
    "ServiceEntry:spec.location": _se_location,
    "ServiceEntry:ports[].name": With("spec.endpoints[].ports", {"http": 8080}),
    "ServiceEntry:spec.workloadSelector": _se_selector,
    "WorkloadEntry:spec.serviceAccount": With("spec.labels", {"app": "vm", **MESH}),
    "Service:spec.externalName": _external_name,
    "Service:spec.publishNotReadyAddresses": lambda doc, ctx: "k8s-service-notready",
    "RequestAuthentication:jwtRules[].jwksUri": _keys_fetched_only,
    "RequestAuthentication:jwtRules[].timeout": _keys_fetched,
    # the selector shows when the policy sets a mode
    "PeerAuthentication:spec.selector": With("mtls", {"mode": "STRICT"}),
    # a provider is a CUSTOM policy's, from the mesh configuration's extensionProviders
    "AuthorizationPolicy:spec.provider": _custom_policy,
    "*:loadBalancer.localityLbSetting": _with_outlier_detection(False, False),
    "DestinationRule:subsets[].trafficPolicy.loadBalancer.localityLbSetting":
        _with_outlier_detection(False, True),
    "DestinationRule:spec.trafficPolicy.portLevelSettings[].loadBalancer.localityLbSetting":
        _with_outlier_detection(True, False),
    "DestinationRule:subsets[].trafficPolicy.portLevelSettings[].loadBalancer.localityLbSetting":
        _with_outlier_detection(True, True),
}

# Rows (and the rows under them) whose value changes nothing in a sidecar's
# model in Istio either. No finding is all they need to be `works`;
# test_inert_by_design_rows_are_inert keeps this list true.
INERT_BY_DESIGN = {
    "Endpoints:subsets[].notReadyAddresses":
        "not-ready endpoints get no traffic (without publishNotReadyAddresses)",
    "EndpointSlice:endpoints[].conditions.serving":
        "new traffic goes by ready alone; serving endpoints that are not ready only drain",
    "EndpointSlice:endpoints[].conditions.terminating":
        "new traffic goes by ready alone; terminating endpoints only drain",
    "Gateway:spec.servers[].port.name": "a label of the port; the protocol says what it speaks",
    "Sidecar:spec.ingress[].port.name":
        "a label of the port; the protocol (which istiod requires) says what it speaks",
    # Endpoint details the proxy has no use for: it routes to the address, on
    # the Service port's protocol.
    "Endpoints:subsets[].addresses[].hostname":
        "a DNS name for the address (a headless service's records); traffic goes to the address",
    "EndpointSlice:endpoints[].hostname":
        "a DNS name for the address (a headless service's records); traffic goes to the address",
    "Endpoints:subsets[].ports[].appProtocol":
        "the Service's port says the protocol, where Istio reads it too",
    "EndpointSlice:ports[].appProtocol":
        "the Service's port says the protocol, where Istio reads it too",
    # Locality: Istio takes an endpoint's from its Pod (istio-locality, else
    # the topology labels of the Node named by spec.nodeName); the slice's
    # and Endpoints' own node and zone fields are not where it looks.
    "Endpoints:subsets[].addresses[].nodeName":
        "locality comes from the Pod (istio-locality label, or its Node's topology labels)",
    "EndpointSlice:endpoints[].nodeName":
        "locality comes from the Pod (istio-locality label, or its Node's topology labels)",
    "EndpointSlice:endpoints[].zone":
        "locality comes from the Pod (istio-locality label, or its Node's topology labels)",
    "Pod:spec.nodeName":
        "the Node it names gives the locality (topology labels); the mesh here has no Node objects",
    "Namespace:metadata.labels":
        "injection labels select what Istio injects; each Pod carries the result (its sidecar "
        "label or status annotation), which is what is read",
}


def inert_by_design(kind, path):
    return suffix_lookup(INERT_BY_DESIGN, kind, path, under=True) is not None


# ---------------------------------------------------------------- paths

_SEG = re.compile(r'\.?([A-Za-z0-9_]+)|(\[\])|\.(\{\})|\["([^"]+)"\]')


def segments(path):
    """"a.b[].c.{}" -> [("key","a"), ("key","b"), ("elem",), ("key","c"), ("map",)]."""
    out, pos = [], 0
    while pos < len(path):
        m = _SEG.match(path, pos)
        assert m and m.end() > pos, f"bad path {path!r} at {pos}"
        if m.group(1):
            out.append(("key", m.group(1)))
        elif m.group(2):
            out.append(("elem",))
        elif m.group(3):
            out.append(("map",))
        else:
            out.append(("key", m.group(4)))
        pos = m.end()
    return out


def parent(path):
    return re.sub(r'(\[\]|\.\{\}|\.[^.\[\]{}"]+|\["[^"]+"\])$', "", path)


def suffix_match(path, suffix):
    """Where suffix (whole segments) ends in path, or -1."""
    for end in (len(path),) + tuple(m.start() for m in re.finditer(r"[.\[]", path)):
        head = path[:end]
        if head == suffix or head.endswith("." + suffix):
            return end
    return -1


def suffix_lookup(table, kind, path, under=False):
    """The entry of table for (kind, path): the longest key whose suffix ends
    path (or, with under, any segment of it), KIND before "*"."""
    best, best_rank = None, -1
    for key, val in table.items():
        k, suffix = key.split(":", 1)
        if k not in (kind, "*"):
            continue
        end = suffix_match(path, suffix)
        if end < 0 or (end != len(path) and not under):
            continue
        rank = len(suffix) * 2 + (k == kind)
        if rank > best_rank:
            best, best_rank = (val, path[:end]), rank
    return best if under else (best[0] if best else None)


# ------------------------------------------------------------ the inventory


class Inventory:
    def __init__(self):
        self.rows = inventory()
        self.types = {(k, p): t for k, p, t, _ in self.rows}
        self.defaults = {(k, p): d for k, p, _, d in self.rows}
        self.children = {}
        for k, p, _, _ in self.rows:
            self.children.setdefault((k, parent(p)), []).append(p)
        self.notes = doc_rows()
        self.oneofs = {}
        for (k, p), (_, notes) in self.notes.items():
            m = re.search(r"One of: ([^.]+)\.", notes)
            if m:
                self.oneofs[(k, p)] = [s.strip() for s in m.group(1).split(",")]

    def is_message(self, kind, path):
        t = self.types.get((kind, path), "")
        return t.startswith(("message(", "list<message(", "map<string,message(",
                             "map<uint32,message("))


def doc_rows():
    """{(kind, path): (status, notes)} of the doc's field tables."""
    rows, kind = {}, None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^#{1,6} (.*)$", line)
        if heading:
            kind = heading.group(1) if heading.group(1) in ISTIO_KINDS | CORE_KINDS else None
            continue
        if kind and line.startswith("| `"):
            cells = split_row(line)
            rows[(kind, cells[0].strip("`"))] = (cells[3], cells[4])
    return rows


def split_row(line):
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


# ----------------------------------------------------------- building cases


def type_value(typ, path):
    """A value of typ for a row nobody gave one."""
    if typ == "string":
        return "example"
    if typ == "bool":
        return True
    if typ in ("int32", "uint32"):
        return 3
    if typ == "uint64":
        return 1024
    if typ == "double":
        return 50.0
    if typ == "duration":
        return "1s"
    if typ == "bytes":
        return "ZXhhbXBsZQ=="
    if typ == "int-or-string":
        return 8082
    m = re.match(r"wrapper<(\w+)>$", typ)
    if m:
        return type_value(m.group(1), path)
    if typ == "list<string>":
        return ["x-example"]
    if typ == "list<uint32>":
        return [503]
    if typ == "map<string,string>":
        return {"x-example": "1"}
    if typ == "map<string,uint32>":
        return {"http": 8080}
    raise AssertionError(f"no value for {typ} ({path})")


class Builder:
    def __init__(self, inv):
        self.inv = inv

    def values(self, kind, path, present):
        """[(label, value)] to measure; value None: keep what the resource has."""
        v = suffix_lookup(VALUES, kind, path)
        if isinstance(v, list) and v and isinstance(v[0], tuple):
            return v
        if v is not None:
            return [(None, v)]
        enum = re.match(r"enum\((.*)\)$", self.inv.types[(kind, path)])
        if enum:
            return [(e, e) for e in enum.group(1).split(",")]
        if present:
            return [(None, None)]
        if self.inv.is_message(kind, path):
            return [(None, self.minimal(kind, path))]
        return [(None, type_value(self.inv.types[(kind, path)], path))]

    def minimal(self, kind, path):
        """A valid value of the message (or list or map of messages) at path:
        MINIMAL's, with every required child."""
        typ = self.inv.types[(kind, path)]
        if typ.startswith("list<message("):
            return [self.minimal(kind, path + "[]")]
        if typ.startswith(("map<string,message(", "map<uint32,message(")):
            return {map_key(path + ".{}"): self.minimal(kind, path + ".{}")}
        out = copy.deepcopy(suffix_lookup(MINIMAL, kind, path) or {})
        for child in self.inv.children.get((kind, path), []):
            name = child.rsplit(".", 1)[-1]
            if self.inv.defaults[(kind, child)] == "required" and name not in out and \
                    not child.endswith(("[]", "{}")):
                out[name] = self.values(kind, child, False)[0][1]
        return out

    def build(self, kind, path):
        """[(label, doc, baseline doc or None, context, workload, concrete path)]:
        the resource with the field set to each value, and without it."""
        doc0, ctx, wl = subject(kind, path)
        hook = suffix_lookup(HOOKS, kind, path, under=True)
        if hook is not None:
            fn, anchor = hook
            if isinstance(fn, With):
                target = fn.path if fn.path.startswith(("spec.", "metadata.")) else \
                    f"{parent(anchor)}.{fn.path}"
                self._set(doc0, kind, segments(target), fn.value, keep=False)
            else:
                ctx = fn(doc0, ctx)
        segs = segments(path)
        probe = copy.deepcopy(doc0)  # what leads to the field may bring it
        self._set(probe, kind, segs, None, keep=True)
        present = lookup(probe, segs) is not None
        cases = []
        for label, value in self.values(kind, path, present):
            doc = copy.deepcopy(doc0)
            concrete = self._set(doc, kind, segs, value, keep=value is None)
            base = None
            if not self.inv.is_message(kind, path):
                base = copy.deepcopy(doc)
                node = lookup(base, segs[:-1])
                if segs[-1][0] == "key":
                    node.pop(segs[-1][1], None)
                else:
                    node.clear()
            cases.append((label, doc, base, ctx, wl, concrete))
        return cases

    def _set(self, doc, kind, segs, value, keep):
        """Set the field at segs, creating valid messages on the way (a list
        gets one element, a map one key); returns the field's path as the
        compiler names it."""
        node, concrete, pattern = doc, "", ""
        for i, seg in enumerate(segs):
            last = i == len(segs) - 1
            if seg[0] == "elem":
                pattern += "[]"
                concrete += "[0]"
                if not node:
                    node.append(None)
                slot = 0
            elif seg[0] == "map":
                key = map_key(pattern + ".{}")
                pattern += ".{}"
                if not node:
                    node[key] = None
                slot = next(iter(node))
                concrete += "." + slot
            else:
                slot = seg[1]
                pattern = f"{pattern}.{slot}" if pattern else slot
                concrete = f"{concrete}.{slot}" if concrete else slot
                self._drop_rivals(kind, pattern, node)
                if slot not in node:
                    node[slot] = None
            if last:
                if not keep or node[slot] is None:
                    node[slot] = copy.deepcopy(value)
                return concrete
            if node[slot] is None:
                nxt = segs[i + 1]
                node[slot] = [] if nxt == ("elem",) else {} if nxt == ("map",) or \
                    not self.inv.is_message(kind, pattern) else self.minimal(kind, pattern)
            node = node[slot]
        raise AssertionError("empty path")

    def _drop_rivals(self, kind, pattern, node):
        """Setting a member of a oneof (or a route's action) drops the others."""
        key = pattern.rsplit(".", 1)[-1]
        group = self.inv.oneofs.get((kind, pattern))
        if group is None and kind == "VirtualService" and key in ACTIONS and \
                re.fullmatch(r"spec\.http\[\]\.\w+", pattern):
            group = ACTIONS
        for rival in group or ():
            if rival != key:
                node.pop(rival, None)


def map_key(pattern):
    """The key a row's {} takes: x-user for a header match, v for a query
    parameter..."""
    return MAP_KEYS.get(pattern.rsplit(".", 2)[-2], "example")


def lookup(doc, segs):
    """The node at segs (first element, first key), or None."""
    node = doc
    for seg in segs:
        if seg[0] == "key":
            if not isinstance(node, dict) or seg[1] not in node:
                return None
            node = node[seg[1]]
        elif seg[0] == "elem":
            if not isinstance(node, list) or not node:
                return None
            node = node[0]
        else:
            if not isinstance(node, dict) or not node:
                return None
            node = node[next(iter(node))]
    return node


# ---------------------------------------------------------------- running

LINE = re.compile(r"^(?:(?P<file>[^:]+):\d+:\d+: )?(?P<sev>warning|error): (?P<rest>.*)$")
WHO = re.compile(r"^(?P<kind>[A-Za-z]+) (?P<name>[^ :]+): (?P<tail>.*)$")
PATH = re.compile(r"^(?P<path>(?:spec|metadata|status|subsets|endpoints|ports|addressType)"
                  r"[^\s:]*): (?P<msg>.*)$")


def parse_findings(stderr):
    """[(severity, kind, name, path, message)]; lines that are none of
    these come back with severity "other"."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("trellis ctl compile:"):
            continue
        m = LINE.match(line)
        if not m:
            out.append(("other", None, None, None, line))
            continue
        kind = name = path = None
        msg = m["rest"]
        w = WHO.match(msg)
        if w and m["file"]:
            kind, name, msg = w["kind"], w["name"], w["tail"]
            p = PATH.match(msg)
            if p:
                path, msg = p["path"], p["msg"]
        out.append((m["sev"], kind, name, path, msg))
    return out


class Runner:
    """Writes the contexts once and each resource in a directory of its own;
    a job runs there, so messages name the files the same way every run
    ("../context-dr.json", "resource.json")."""

    def __init__(self, workdir):
        self.dir = workdir
        self.n = 0
        for name, docs in CONTEXTS.items():
            with open(os.path.join(workdir, f"context-{name}.json"), "w") as fh:
                fh.write("\n---\n".join(json.dumps(d) for d in docs) + "\n")

    def job(self, doc, ctx, workload, capture=False):
        self.n += 1
        d = os.path.join(self.dir, f"job-{self.n}")
        os.mkdir(d)
        with open(os.path.join(d, "resource.json"), "w") as fh:
            fh.write(json.dumps(doc) + "\n")
        return d, [TRELLIS, "ctl", "compile", f"../context-{ctx}.json", "resource.json",
                   "--workload", workload, "-o", "json"] + (["--capture"] if capture else [])


def compile_all(jobs):
    """Run every (directory, argv); [(returncode, model or None, findings)]
    in order."""
    def one(job):
        cwd, argv = job
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd)
        model = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None
        return r.returncode, model, parse_findings(r.stderr)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, jobs))


def relation(finding_path, concrete):
    """0: at the field, 1: under it, 2: at an ancestor, 3: elsewhere."""
    if finding_path is None:
        return 3
    if finding_path == concrete:
        return 0
    if finding_path.startswith((concrete + ".", concrete + "[")):
        return 1
    if concrete.startswith((finding_path + ".", finding_path + "[")):
        return 2
    return 3


SEVERITY = {"unknown": 4, "error": 3, "warning": 2, "inert": 1, "works": 0}


class Outcome:
    """One value of one row: its category (works, inert, warning, error, or
    unknown: the compiler does not know the field) and message, what else
    the compiler said (findings elsewhere), and whether the compiler failed
    (crashed, printed what is not a finding, or built an invalid model)."""

    def __init__(self, label, category, message, elsewhere, failed):
        self.label, self.category, self.message = label, category, message
        self.elsewhere, self.failed = elsewhere, failed


def classify(label, variant, baseline, concrete, is_message):
    rc, model, findings = variant
    noted = [f for f in findings if f[0] in ("warning", "error")]
    other = [f for f in findings if f[0] == "other"]
    elsewhere = [f for f in noted if relation(f[3], concrete) == 3] + other
    failed = [f[4] for f in other] + [f[4] for f in noted
                                      if f[4].startswith("the compiled model is invalid")]
    if rc not in (0, 1):
        failed.append(f"exit status {rc}")
    if failed:
        return Outcome(label, "error", "compile failed: " + "; ".join(failed), elsewhere, failed)
    names = set(re.split(r"[.\[\]]+", concrete))
    unknown = [f for f in noted if relation(f[3], concrete) < 3 and
               re.match(r'unknown field "([^"]+)"', f[4]) and
               re.match(r'unknown field "([^"]+)"', f[4]).group(1) in names]
    if unknown:
        return Outcome(label, "unknown", unknown[0][4], elsewhere, failed)
    if noted:
        worst = max(SEVERITY[f[0]] for f in noted)
        best = min((f for f in noted if SEVERITY[f[0]] == worst),
                   key=lambda f: relation(f[3], concrete))
        return Outcome(label, best[0], best[4], elsewhere, failed)
    if rc != 0:
        return Outcome(label, "error", "compile failed without a finding", elsewhere, [rc])
    if is_message or baseline is None:
        return Outcome(label, "works", None, elsewhere, failed)
    brc, bmodel, _ = baseline
    if brc != 0 or bmodel != model:
        return Outcome(label, "works", None, elsewhere, failed)
    return Outcome(label, "inert", None, elsewhere, failed)


def cell_text(s):
    return s.replace("|", "\\|")


def row_status(kind, path, outcomes):
    worst = max(SEVERITY[o.category] for o in outcomes)
    if worst == SEVERITY["unknown"]:
        return "TBD"  # the compiler does not know the field: a gap, not a status
    if worst >= SEVERITY["warning"]:
        o = next(o for o in outcomes if SEVERITY[o.category] == worst)
        return f"{o.category}: {cell_text(o.message)}"
    if worst == SEVERITY["works"] or any(o.category == "works" for o in outcomes):
        return "works"
    if inert_by_design(kind, path):
        return "works"
    return "TBD"


def measured_note(outcomes):
    """"Measured: ..." when the values of a row differ or the compiler does
    not know the field, else ""."""
    if all(o.category == "unknown" for o in outcomes):
        return "Measured: unknown field (the compiler does not know it)."
    if len(outcomes) < 2 or len({(o.category) for o in outcomes}) < 2:
        return ""
    groups = {}
    for o in outcomes:
        groups.setdefault(o.category, []).append(f"`{o.label}`")
    words = {"works": "work{s}", "inert": "compile as if absent",
             "warning": "warning", "error": "error", "unknown": "unknown field"}
    parts = []
    for cat in ("works", "inert", "warning", "error", "unknown"):
        if cat in groups:
            vals = ", ".join(groups[cat])
            w = words[cat].format(s="s" if len(groups[cat]) == 1 else "")
            parts.append(f"{vals} {w}" if cat in ("works", "inert") else f"{vals}: {w}")
    return "Measured: " + "; ".join(parts) + "."


@pytest.fixture(scope="module")
def measured():
    return measure_all()


# Fields that only mean something with traffic capture (the original
# destination): measured with `--capture`, their variant and baseline alike.
# Without it each gives a warning (tests/data/istio_corpus_expected.txt, and
# docs/compat/istio.md's text says so).
CAPTURE_ROWS = {("VirtualService", "spec.tcp[].match[].destinationSubnets"),
                ("VirtualService", "spec.tls[].match[].destinationSubnets"),
                ("DestinationRule", "spec.trafficPolicy.loadBalancer.simple"),
                ("DestinationRule", "spec.subsets[].trafficPolicy.loadBalancer.simple"),
                ("DestinationRule",
                 "spec.trafficPolicy.portLevelSettings[].loadBalancer.simple"),
                ("DestinationRule",
                 "spec.subsets[].trafficPolicy.portLevelSettings[].loadBalancer.simple"),
                ("ServiceEntry", "spec.resolution")}


def measure_all():
    """{(kind, path): (status, note, [Outcome])} for every inventory row."""
    inv = Inventory()
    builder = Builder(inv)
    with tempfile.TemporaryDirectory(prefix="trellis-fields-") as d:
        runner = Runner(d)
        plan, jobs = [], []
        for kind, path, _, _ in inv.rows:
            for label, doc, base, ctx, wl, concrete in builder.build(kind, path):
                vi = len(jobs)
                cap = (kind, path) in CAPTURE_ROWS
                jobs.append(runner.job(doc, ctx, wl, cap))
                bi = None
                if base is not None:
                    bi = len(jobs)
                    jobs.append(runner.job(base, ctx, wl, cap))
                plan.append((kind, path, label, vi, bi, concrete))
        results = compile_all(jobs)
    out = {}
    for kind, path, label, vi, bi, concrete in plan:
        o = classify(label, results[vi], results[bi] if bi is not None else None, concrete,
                     inv.is_message(kind, path))
        out.setdefault((kind, path), []).append(o)
    return {k: (row_status(k[0], k[1], v), measured_note(v), v) for k, v in out.items()}


# ------------------------------------------------------------------ tests


def test_contexts_and_subjects_compile_clean():
    """What every row is measured against compiles without a finding, so
    whatever a row's resource gets reported is the row's doing."""
    inv = Inventory()
    kinds = {}
    for kind, path, _, _ in inv.rows:
        doc, ctx, wl = subject(kind, path)
        kinds.setdefault(json.dumps([doc, ctx, wl], sort_keys=True), (doc, ctx, wl))
    assert len(kinds) == len(ISTIO_KINDS | CORE_KINDS) + 2  # tcp and tls VirtualServices
    with tempfile.TemporaryDirectory(prefix="trellis-fields-") as d:
        runner = Runner(d)
        jobs = [runner.job(doc, ctx, wl) for doc, ctx, wl in kinds.values()]
        results = compile_all(jobs)
    for (doc, ctx, wl), (rc, model, findings) in zip(kinds.values(), results):
        assert rc == 0 and model is not None, f"{doc['kind']} in context {ctx}: {findings}"
        assert not findings, f"{doc['kind']} in context {ctx}: {findings}"


KIND_ORDER = ("VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry", "Gateway",
              "Sidecar", "PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy",
              "Service", "Endpoints", "EndpointSlice", "Pod", "Namespace")


def summary_table(statuses):
    """The doc's status summary: rows of each kind by status."""
    cols = ("works", "warning", "error", "TBD")
    count = {k: dict.fromkeys(cols, 0) for k in KIND_ORDER}
    for (kind, _), status in statuses.items():
        count[kind][status.split(":", 1)[0]] += 1
    lines = ["| Kind | Rows | " + " | ".join(cols) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in cols) + " |"]
    for k in KIND_ORDER:
        lines.append(f"| [{k}](#{k.lower()}) | {sum(count[k].values())} | " +
                     " | ".join(str(count[k][c]) for c in cols) + " |")
    lines.append(f"| **all** | {len(statuses)} | " +
                 " | ".join(str(sum(count[k][c] for k in KIND_ORDER)) for c in cols) + " |")
    return [line + "\n" for line in lines]


def test_doc_statuses_are_the_measured_ones(measured):
    lines = DOC.read_text().splitlines(keepends=True)
    kind, mismatches, rewritten = None, [], []
    for line in lines:
        heading = re.match(r"^#{1,6} (.*)$", line)
        if heading:
            kind = heading.group(1).strip() if heading.group(1).strip() in \
                ISTIO_KINDS | CORE_KINDS else None
        if kind and line.startswith("| `"):
            cells = split_row(line)
            path = cells[0].strip("`")
            status, note, _ = measured[(kind, path)]
            base_notes = re.sub(r"\s*Measured: .*$", "", cells[4])
            notes = f"{base_notes} {note}" if note else base_notes
            if (cells[3], cells[4]) != (status, notes):
                mismatches.append(f"{kind} {path}:\n  doc:      {cells[3]} | {cells[4]}\n"
                                  f"  measured: {status} | {notes}")
            line = "| " + " | ".join(cells[:3] + [status, notes]) + " |\n"
        rewritten.append(line)
    # the summary: the table after "## Status summary"
    start = rewritten.index("## Status summary\n")
    first = next(i for i in range(start, len(rewritten))
                 if rewritten[i].startswith("| ") or rewritten[i].startswith("STATUS_SUMMARY"))
    last = first
    while last + 1 < len(rewritten) and rewritten[last + 1].startswith("| "):
        last += 1
    want = summary_table({k: v[0] for k, v in measured.items()})
    if rewritten[first:last + 1] != want:
        mismatches.append("the status summary:\n" + "".join(rewritten[first:last + 1]) +
                          "measured:\n" + "".join(want))
    rewritten[first:last + 1] = want
    if os.environ.get("TRELLIS_UPDATE_GOLDEN"):
        DOC.write_text("".join(rewritten))
        return
    assert not mismatches, f"{len(mismatches)} rows differ from the compiler " \
        "(TRELLIS_UPDATE_GOLDEN=1 rewrites the doc):\n" + "\n".join(mismatches[:20])


def test_every_row_is_measured(measured):
    rows = {(k, p) for k, p, _, _ in inventory()}
    assert set(measured) == rows


def test_compiler_knows_every_documented_field(measured):
    """A field of the inventory is never an unknown field to the compiler
    (such rows are TBD in the doc)."""
    unknown = sorted(f"{k} {p}: {o.message}" for (k, p), (_, _, outs) in measured.items()
                     for o in outs if o.category == "unknown")
    assert not unknown, "documented fields the compiler does not know:\n" + "\n".join(unknown)


def test_compiler_never_fails(measured):
    """No row makes the compiler crash, print something that is not a
    finding, or build a model that fails validation."""
    failed = sorted(f"{k} {p} [{o.label}]: {o.failed}" for (k, p), (_, _, outs) in measured.items()
                    for o in outs if o.failed)
    assert not failed, "\n".join(failed[:20])


def test_inert_by_design_rows_are_inert(measured):
    """A row listed in INERT_BY_DESIGN is reported nowhere and changes no
    model, or the list is out of date."""
    listed = [(k, p) for k, p, _, _ in inventory() if inert_by_design(k, p)]
    assert listed, "INERT_BY_DESIGN names no row"
    for key in INERT_BY_DESIGN:
        kind, suffix = key.split(":", 1)
        assert any(k == kind and suffix_match(p, suffix) >= 0 for k, p in listed), key
    for kind, path in listed:
        outs = measured[(kind, path)][2]
        assert all(o.category in ("inert", "works") for o in outs), (kind, path)
        if not (measured[(kind, path)][0] == "works" and Inventory().is_message(kind, path)):
            assert all(o.category == "inert" for o in outs), \
                f"{kind} {path} has an effect now: take it out of INERT_BY_DESIGN"


def test_findings_name_the_field(measured):
    """Unless a hook puts more around the field, whatever the compiler
    reports about a row's resource names the field, a path under it or an
    ancestor: the status is the field's."""
    stray = []
    for (kind, path), (_, _, outs) in measured.items():
        if suffix_lookup(HOOKS, kind, path, under=True) is not None:
            continue
        stray += [f"{kind} {path} [{o.label}]: {f}" for o in outs if not o.failed
                  for f in o.elsewhere]  # failures: test_compiler_never_fails
    assert not stray, "\n".join(stray[:20])
