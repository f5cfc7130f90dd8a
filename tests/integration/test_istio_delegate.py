"""Delegate VirtualServices end to end: Istio's documented example
(https://istio.io/latest/docs/reference/config/networking/virtual-service/#Delegate)
on a mesh host, compiled with `trellis ctl compile`, real backends behind
the real proxy, and `trellis ctl route explain` agreeing with what the
proxy did: the rule that matched is the delegate's, delegated by the
root's."""
import pytest

from test_istio import NamedBackend, pod, service  # noqa: F401
from test_istio import mesh  # noqa: F401  (the fixture)

# The root, on the mesh host bookinfo (no gateway): /productpage to nsa's
# delegate, /reviews to nsb's. The reviews rule also sets a request header
# and a timeout, which the delegate's rule does not: Istio takes them from
# the root.
ROOT = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: [bookinfo]
  http:
  - name: productpage
    match:
    - uri: {prefix: /productpage}
    delegate: {name: productpage, namespace: nsa}
  - name: reviews
    match:
    - uri: {prefix: /reviews}
    headers:
      request:
        set: {x-root: reviews}
    timeout: 5s
    delegate: {name: reviews, namespace: nsb}
  - name: missing
    match:
    - uri: {prefix: /gone}
    delegate: {name: nothere, namespace: nsb}
"""

# As in Istio's example; the /other rule is outside the root's /productpage
# prefix, so Istio drops it (and trellis reports it).
DELEGATE_PRODUCTPAGE = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: nsa}
spec:
  http:
  - match:
    - uri: {prefix: /productpage/v1/}
    route:
    - destination: {host: productpage-v1.nsa.svc.cluster.local}
  - match:
    - uri: {prefix: /other}
    route:
    - destination: {host: productpage-v1.nsa.svc.cluster.local}
  - route:
    - destination: {host: productpage.nsa.svc.cluster.local}
"""

DELEGATE_REVIEWS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: nsb}
spec:
  exportTo: [default]
  http:
  - name: all
    route:
    - destination: {host: reviews}
"""


def build(m):
    b = m.base
    backends = {
        "bookinfo": m.pod("bookinfo-1", f"{b}.1", 9080, {"app": "bookinfo"}),
        "productpage-v1": m.pod("productpage-v1-1", f"{b}.2", 9080, {"app": "productpage-v1"}),
        "productpage": m.pod("productpage-1", f"{b}.3", 9080, {"app": "productpage"}),
        "reviews": m.pod("reviews-1", f"{b}.4", 9080, {"app": "reviews"}),
    }
    # the pods of nsa and nsb live in their namespaces
    m.docs = [d.replace("namespace: default", "namespace: nsa")
              if "name: productpage" in d and "kind: Pod" in d else
              d.replace("namespace: default", "namespace: nsb")
              if "name: reviews-1" in d else d for d in m.docs]
    m.add(service("bookinfo", 9080, {"app": "bookinfo"}),
          service("productpage-v1", 9080, {"app": "productpage-v1"}, ns="nsa"),
          service("productpage", 9080, {"app": "productpage"}, ns="nsa"),
          service("reviews", 9080, {"app": "reviews"}, ns="nsb"),
          ROOT, DELEGATE_PRODUCTPAGE, DELEGATE_REVIEWS)
    return backends


CASES = [
    # path, backend, delegate VirtualService, its rule index, root rule index
    ("/productpage/v1/details", "productpage-v1-1", "nsa/productpage", 0, 0),
    ("/productpage", "productpage-1", "nsa/productpage", 2, 0),
    ("/reviews/7", "reviews-1", "nsb/reviews", 0, 1),
]


def test_delegate_example_traffic_and_explain(mesh):
    build(mesh)
    model, stderr = mesh.compile()
    # the dropped delegate rule and the missing delegate are reported,
    # naming the root's file, resource and field
    assert ("VirtualService default/bookinfo: spec.http[0].delegate: match[0] of rule 1 of "
            "VirtualService nsa/productpage is within none of this rule's matches") in stderr
    assert ("VirtualService default/bookinfo: spec.http[2].delegate: VirtualService "
            "nsb/nothere does not exist: this rule is dropped") in stderr
    assert "mesh.yaml:" in stderr
    mesh.start()
    for path, backend, vs, rule_index, root_index in CASES:
        r = mesh.get("bookinfo", path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        body = r.json()
        assert body["name"] == backend, (path, body)
        x = mesh.explain(f"http://bookinfo:9080{path}")
        assert x["virtual_service"] == vs, (path, x)
        assert x["rule_index"] == rule_index, (path, x)
        assert x["delegated_by"]["virtual_service"] == "default/bookinfo", (path, x)
        assert x["delegated_by"]["rule_index"] == root_index, (path, x)
        # explain's destination is where the proxy sent it
        ns = vs.split("/")[0]
        host = backend.rsplit("-1", 1)[0]
        assert x["destinations"][0]["host"] == f"{host}.{ns}.svc.cluster.local", (path, x)
    # the root's header edit and timeout reached the delegate's rule
    body = mesh.get("bookinfo", "/reviews/7").json()
    assert body["headers"].get("x-root") == "reviews"
    x = mesh.explain("http://bookinfo:9080/reviews/7")
    assert x["timeout_ms"] == 5000
    assert x["rule"] == "all" and x["delegated_by"]["rule"] == "reviews"
    assert x["route"] == "default/bookinfo.reviews>nsb/reviews.all"
    # what Istio dropped goes to the service's default route, as explain says
    for path in ("/other", "/gone"):
        r = mesh.get("bookinfo", path)
        assert r.status_code == 200 and r.json()["name"] == "bookinfo-1", (path, r.text)
        x = mesh.explain(f"http://bookinfo:9080{path}")
        assert x["virtual_service"] is None and x["route"] == "default", (path, x)


def test_delegate_not_exported_to_the_root(mesh):
    build(mesh)
    mesh.docs = [d.replace("exportTo: [default]", "exportTo: [nsb]") for d in mesh.docs]
    _, stderr = mesh.compile()
    assert ("spec.http[1].delegate: VirtualService nsb/reviews is not exported to this "
            "namespace") in stderr
    mesh.start()
    r = mesh.get("bookinfo", "/reviews/7")
    assert r.status_code == 200 and r.json()["name"] == "bookinfo-1"
    x = mesh.explain("http://bookinfo:9080/reviews/7")
    assert x["virtual_service"] is None


def test_analyze_reports_delegates(mesh):
    build(mesh)
    mesh.add("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: stray, namespace: nsb}
spec:
  http:
  - route:
    - destination: {host: reviews}
""")
    mesh.write()
    r = mesh.ctl("analyze", mesh.dir, check=False)
    assert r.returncode == 1
    assert ("error: VirtualService default/bookinfo: spec.http[2].delegate: VirtualService "
            "nsb/nothere does not exist") in r.stderr
    assert ("warning: VirtualService nsb/stray: spec: a delegate VirtualService (no hosts) that "
            "no root VirtualService's rule names") in r.stderr


if __name__ == "__main__":
    pytest.main([__file__])
