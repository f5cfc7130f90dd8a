/* Unit tests for the Istio compiler (dialect/istio): resources written as a
 * user writes them, compiled for one workload; the model is checked field by
 * field, findings by their file, line, resource, path and message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "config/write.h"
#include "core/diag.h"
#include "dialect/istio/istio.h"
#include "resource/resource.h"

/* A small bookinfo: productpage calls reviews (three versions) and ratings. */
static const char BOOKINFO[] =
    "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n"
    "spec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: default}\n"
    "spec:\n  selector: {app: ratings}\n  ports: [{name: http-api, port: 9080, targetPort: 8080}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: data}\n"
    "spec:\n  selector: {app: db}\n  ports: [{name: tcp-mysql, port: 3306}]\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: productpage-1, namespace: default, labels: "
    "{app: productpage, version: v1}}\nspec: {serviceAccountName: bookinfo-productpage}\n"
    "status: {podIP: 127.0.1.10}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v1, namespace: default, labels: "
    "{app: reviews, version: v1}}\nstatus: {podIP: 127.0.1.1}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v2, namespace: default, labels: "
    "{app: reviews, version: v2}}\nstatus: {podIP: 127.0.1.2}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v3, namespace: default, labels: "
    "{app: reviews, version: v3}}\nstatus: {podIP: 127.0.1.3}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ratings-v1, namespace: default, labels: "
    "{app: ratings, version: v1}}\nstatus: {podIP: 127.0.1.4}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: db-1, namespace: data, labels: "
    "{app: db}}\nstatus: {podIP: 127.0.1.5}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
    "metadata: {name: reviews, namespace: default}\n"
    "spec:\n  host: reviews\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n"
    "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
    "  - name: v3\n    labels: {version: v3}\n    trafficPolicy: {loadBalancer: {simple: "
    "RANDOM}}\n";

static const char VS_90_10[] =
    "---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n"
    "metadata: {name: reviews, namespace: default}\n"
    "spec:\n  hosts: [reviews]\n  http:\n"
    "  - match:\n    - headers: {end-user: {exact: jason}}\n    route:\n"
    "    - destination: {host: reviews, subset: v2}\n"
    "  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n"
    "    - destination: {host: reviews, subset: v3}\n      weight: 10\n    timeout: 2s\n";

struct compiled {
    struct tr_rset *rs;
    struct tr_config *cfg;
    struct tr_diags d;
};

static void compile_text(struct compiled *c, const char *text, const char *ns, const char *name)
{
    tr_diags_init(&c->d);
    c->rs = tr_rset_from_buffer(text, strlen(text), "mesh.yaml", &c->d);
    assert_non_null(c->rs);
    struct tr_istio_options o = {.ns = ns, .name = name, .cert_dir = "/nonexistent"};
    c->cfg = tr_istio_compile(c->rs, &o, &c->d);
}

static void compiled_free(struct compiled *c)
{
    tr_config_free(c->cfg);
    tr_rset_free(c->rs);
    tr_diags_free(&c->d);
}

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    assert_non_null(s);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static const struct tr_cluster_cfg *cluster(const struct tr_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        if (strcmp(cfg->clusters[i].name, name) == 0)
            return &cfg->clusters[i];
    }
    fail_msg("no cluster %s", name);
    return NULL;
}

static const struct tr_vhost_cfg *vhost(const struct tr_config *cfg, const char *table,
                                        const char *name)
{
    for (size_t t = 0; t < cfg->n_route_tables; t++) {
        if (strcmp(cfg->route_tables[t].name, table) != 0)
            continue;
        for (size_t v = 0; v < cfg->route_tables[t].n_vhosts; v++) {
            if (strcmp(cfg->route_tables[t].vhosts[v].name, name) == 0)
                return &cfg->route_tables[t].vhosts[v];
        }
    }
    fail_msg("no virtual host %s in table %s", name, table);
    return NULL;
}

static bool has_diag(const struct tr_diags *d, enum tr_diag_severity sev, const char *path,
                     const char *needle)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct tr_diag *g = &d->v[i];
        if (g->severity == sev &&
            (path == NULL || (g->where.path && strcmp(g->where.path, path) == 0)) &&
            strstr(g->msg, needle) != NULL)
            return true;
    }
    return false;
}

static void dump_diags(const struct tr_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        char b[1024];
        tr_diag_format(&d->v[i], b, sizeof(b));
        fprintf(stderr, "  %s\n", b);
    }
}

/* Without a VirtualService each service gets one default route; clusters
 * carry every endpoint and Istio's defaults. */
static void test_default_routes(void **state)
{
    (void)state;
    struct compiled c;
    compile_text(&c, BOOKINFO, "default", "productpage-1");
    dump_diags(&c.d);
    assert_non_null(c.cfg);
    assert_int_equal(c.d.n_errors, 0);
    /* listeners: outbound|3306 (tcp) and outbound|9080 (http) */
    assert_int_equal(c.cfg->n_listeners, 2);
    assert_string_equal(c.cfg->listeners[0].name, "outbound|3306");
    assert_int_equal(c.cfg->listeners[0].protocol, TR_LPROTO_TCP);
    assert_string_equal(c.cfg->listeners[0].tcp_cluster_name,
                        "outbound|3306||db.data.svc.cluster.local");
    assert_string_equal(c.cfg->listeners[1].addr.text, "127.0.0.1:9080");
    assert_int_equal(c.cfg->listeners[1].protocol, TR_LPROTO_HTTP);
    const struct tr_vhost_cfg *v = vhost(c.cfg, "9080", "reviews.default.svc.cluster.local:9080");
    /* FQDN, name.ns.svc, name.ns and (same namespace) the short name, each with :9080 */
    assert_int_equal(v->n_domains, 8);
    assert_string_equal(v->domains[6], "reviews");
    assert_string_equal(v->domains[7], "reviews:9080");
    assert_int_equal(v->n_routes, 1);
    assert_string_equal(v->routes[0].clusters[0].cluster_name,
                        "outbound|9080||reviews.default.svc.cluster.local");
    const struct tr_cluster_cfg *cl =
        cluster(c.cfg, "outbound|9080||reviews.default.svc.cluster.local");
    assert_int_equal(cl->n_endpoints, 3);
    assert_string_equal(cl->endpoints[0].addr.text, "127.0.1.1:9080");
    assert_int_equal(cl->lb, TR_LB_ROUND_ROBIN); /* the DestinationRule's */
    assert_int_equal(cl->connect_timeout_ms, 10000);
    /* targetPort is where ratings' pods listen */
    cl = cluster(c.cfg, "outbound|9080||ratings.default.svc.cluster.local");
    assert_string_equal(cl->endpoints[0].addr.text, "127.0.1.4:8080");
    assert_int_equal(cl->lb, TR_LB_LEAST_REQUEST); /* Istio's default */
    /* the db service lives in another namespace: no short name */
    assert_string_equal(c.cfg->node.principal,
                        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage");
    compiled_free(&c);
}

static void test_weighted_and_header_routes(void **state)
{
    (void)state;
    char *text = concat(BOOKINFO, VS_90_10);
    struct compiled c;
    compile_text(&c, text, "default", "productpage-1");
    dump_diags(&c.d);
    assert_non_null(c.cfg);
    assert_int_equal(c.d.n_errors, 0);
    const struct tr_vhost_cfg *v = vhost(c.cfg, "9080", "reviews.default.svc.cluster.local:9080");
    assert_int_equal(v->n_routes, 2); /* the second rule matches everything: no default */
    const struct tr_route_cfg *r = &v->routes[0];
    assert_string_equal(r->name, "default/reviews.http[0]");
    assert_int_equal(r->n_headers, 1);
    assert_string_equal(r->headers[0].name, "end-user");
    assert_int_equal(r->headers[0].kind, TR_HMATCH_EXACT);
    assert_string_equal(r->headers[0].value, "jason");
    assert_string_equal(r->clusters[0].cluster_name,
                        "outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_string_equal(r->loc.origin.kind, "VirtualService");
    assert_string_equal(r->loc.path, "spec.http[0].match[0]");
    r = &v->routes[1];
    assert_int_equal(r->n_clusters, 2);
    assert_int_equal(r->clusters[0].weight, 90);
    assert_int_equal(r->clusters[1].weight, 10);
    assert_int_equal(r->timeout_ms, 2000);
    const struct tr_cluster_cfg *v1 =
        cluster(c.cfg, "outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_int_equal(v1->n_endpoints, 1);
    assert_string_equal(v1->endpoints[0].addr.text, "127.0.1.1:9080");
    assert_int_equal(v1->lb, TR_LB_ROUND_ROBIN); /* inherited from the rule */
    const struct tr_cluster_cfg *v3 =
        cluster(c.cfg, "outbound|9080|v3|reviews.default.svc.cluster.local");
    assert_int_equal(v3->lb, TR_LB_RANDOM); /* the subset's own */
    compiled_free(&c);
    free(text);
}

static void test_findings_name_the_field(void **state)
{
    (void)state;
    static const char VS[] =
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: r, namespace: default}\n"
        "spec:\n  hosts: [reviews]\n  http:\n"
        "  - route:\n    - destination: {host: reviews, subset: v9}\n    colour: blue\n";
    char *text = concat(BOOKINFO, VS);
    struct compiled c;
    compile_text(&c, text, "default", "productpage-1");
    assert_non_null(c.cfg);
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.http[0].route[0].destination.subset",
                         "no DestinationRule defines subset \"v9\""));
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.http[0]", "unknown field \"colour\""));
    char line[1024];
    for (size_t i = 0; i < c.d.n; i++) {
        tr_diag_format(&c.d.v[i], line, sizeof(line));
        if (strstr(line, "colour") != NULL)
            assert_non_null(strstr(line, "mesh.yaml:"));
    }
    /* the route answers 503 rather than sending traffic elsewhere */
    const struct tr_vhost_cfg *v = vhost(c.cfg, "9080", "reviews.default.svc.cluster.local:9080");
    assert_int_equal(v->routes[0].direct_status, 503);
    compiled_free(&c);
    free(text);
}

static void test_errors_refuse_the_resource(void **state)
{
    (void)state;
    static const char VS[] =
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: r, namespace: default}\n"
        "spec:\n  hosts: [reviews]\n  http:\n"
        "  - route:\n    - destination: {host: reviews, subset: v1}\n    timeout: soon\n";
    char *text = concat(BOOKINFO, VS);
    struct compiled c;
    compile_text(&c, text, "default", "productpage-1");
    assert_non_null(c.cfg);
    assert_true(c.d.n_errors > 0);
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.http[0].timeout", "expected a duration"));
    /* the VirtualService is left out: the service keeps its default route */
    const struct tr_vhost_cfg *v = vhost(c.cfg, "9080", "reviews.default.svc.cluster.local:9080");
    assert_int_equal(v->n_routes, 1);
    assert_string_equal(v->routes[0].name, "default");
    compiled_free(&c);
    free(text);
}

/* RequestAuthentication: the root namespace's and the workload's namespace's
 * policies that select it are combined on its inbound HTTP listeners;
 * others, targetRefs and refused ones are left out, each finding at its
 * field. */
#define RA_JWKS                                                                                    \
    "'{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":"                                         \
    "\"vzMf-mUgUezcBEWbnbi5lA9szBa7iXS_46JmODV8aiU\",\"y\":"                                       \
    "\"bB7liq4hr2qZUCuFixkJ3-cCGZ8F6y-J_l98f2ztCK4\"}]}'"
#define RA_HEAD(name, ns)                                                                          \
    "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"                         \
    "metadata: {name: " name ", namespace: " ns "}\nspec:\n"

static void test_request_authentication(void **state)
{
    (void)state;
    static const char
        RA
            [] = RA_HEAD("root", "istio-system") "  jwtRules:\n  - {issuer: root, jwks: " RA_JWKS "}\n" RA_HEAD(
                "ratings",
                "default") "  selector: {matchLabels: {app: ratings}}\n"
                           "  jwtRules:\n  - issuer: https://a.example\n    audiences: [api]\n    "
                           "jwks: " RA_JWKS "\n"
                           "    fromHeaders: [{name: X-Token, prefix: 'Tok '}]\n    fromParams: "
                           "[t]\n"
                           "    fromCookies: [c]\n    forwardOriginalToken: true\n"
                           "    outputPayloadToHeader: X-Payload\n"
                           "    outputClaimToHeaders: [{header: x-sub, claim: sub}]\n" RA_HEAD(
                               "reviews",
                               "default") "  selector: {matchLabels: {app: reviews}}\n"
                                          "  jwtRules:\n  - {issuer: reviews, jwks: " RA_JWKS
                                          "}\n" RA_HEAD(
                                              "other-ns",
                                              "data") "  jwtRules:\n  - {issuer: data, "
                                                      "jwks: " RA_JWKS "}\n" RA_HEAD(
                                                          "waypoint",
                                                          "default") "  targetRefs: [{kind: "
                                                                     "Service, name: ratings}]\n"
                                                                     "  jwtRules:\n  - {issuer: "
                                                                     "wp, jwks: " RA_JWKS
                                                                     "}\n" RA_HEAD(
                                                                         "fetch",
                                                                         "default") "  jwtRules:\n "
                                                                                    " - {issuer: "
                                                                                    "f, jwksUri: "
                                                                                    "'https://f/"
                                                                                    "jwks'}"
                                                                                    "\n" RA_HEAD(
                                                                                        "h"
                                                                                        "m"
                                                                                        "a"
                                                                                        "c",
                                                                                        "d"
                                                                                        "e"
                                                                                        "f"
                                                                                        "a"
                                                                                        "u"
                                                                                        "l"
                                                                                        "t") "  "
                                                                                             "jwtRu"
                                                                                             "les:"
                                                                                             "\n  "
                                                                                             "- "
                                                                                             "issue"
                                                                                             "r: "
                                                                                             "h\n"
                                                                                             "    "
                                                                                             "jwks:"
                                                                                             " '{"
                                                                                             "\"key"
                                                                                             "s\":["
                                                                                             "{\"kt"
                                                                                             "y\":"
                                                                                             "\"oct"
                                                                                             "\","
                                                                                             "\"k\""
                                                                                             ":\"c2"
                                                                                             "VjcmV"
                                                                                             "0\"}]"
                                                                                             "}'\n";
    char *text = concat(BOOKINFO, RA);
    struct compiled c;
    compile_text(&c, text, "default", "ratings-v1");
    assert_non_null(c.cfg);
    if (!has_diag(&c.d, TR_DIAG_ERROR, "spec.jwtRules[0].jwksUri", "not supported yet"))
        dump_diags(&c.d);
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.jwtRules[0].jwksUri", "not supported yet"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.jwtRules[0].jwks", "no usable signature key"));
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.targetRefs", "not sidecars"));
    const struct tr_listener_cfg *l = NULL;
    for (size_t i = 0; i < c.cfg->n_listeners; i++) {
        if (strcmp(c.cfg->listeners[i].name, "inbound|8080") == 0)
            l = &c.cfg->listeners[i];
    }
    assert_non_null(l);
    const struct tr_request_authn_cfg *ra = &l->request_authn;
    assert_int_equal(ra->n_rules, 2);
    const struct tr_jwt_rule_cfg *root = &ra->rules[0], *a = &ra->rules[1];
    if (strcmp(root->issuer, "root") != 0) {
        root = &ra->rules[1];
        a = &ra->rules[0];
    }
    assert_string_equal(root->issuer, "root");
    assert_false(root->forward_original_token);
    assert_int_equal(root->n_from_headers, 0);
    assert_string_equal(a->issuer, "https://a.example");
    assert_int_equal(a->n_audiences, 1);
    assert_string_equal(a->audiences[0], "api");
    assert_int_equal(a->n_from_headers, 1);
    assert_string_equal(a->from_headers[0].name, "x-token");
    assert_string_equal(a->from_headers[0].prefix, "Tok ");
    assert_string_equal(a->from_params[0], "t");
    assert_string_equal(a->from_cookies[0], "c");
    assert_true(a->forward_original_token);
    assert_string_equal(a->output_payload_to_header, "x-payload");
    assert_string_equal(a->output_claim_to_headers[0].header, "x-sub");
    assert_string_equal(a->output_claim_to_headers[0].claim, "sub");
    assert_string_equal(a->loc.origin.kind, "RequestAuthentication");
    assert_string_equal(a->loc.path, "spec.jwtRules[0]");
    /* The outbound listeners carry no request authentication. */
    for (size_t i = 0; i < c.cfg->n_listeners; i++) {
        if (c.cfg->listeners[i].direction == TR_DIR_OUTBOUND)
            assert_int_equal(c.cfg->listeners[i].request_authn.n_rules, 0);
    }
    compiled_free(&c);
    free(text);
}

static void test_sidecar_scope_and_registry_only(void **state)
{
    (void)state;
    static const char SC[] =
        "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n"
        "metadata: {name: default, namespace: default}\n"
        "spec:\n  egress:\n  - hosts: [\"./*\"]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
    char *text = concat(BOOKINFO, SC);
    struct compiled c;
    compile_text(&c, text, "default", "productpage-1");
    assert_non_null(c.cfg);
    assert_int_equal(c.d.n_errors, 0);
    /* db (namespace data) is out of scope: no 3306 listener */
    assert_int_equal(c.cfg->n_listeners, 1);
    assert_string_equal(c.cfg->listeners[0].name, "outbound|9080");
    const struct tr_vhost_cfg *v = vhost(c.cfg, "9080", "block_all");
    assert_string_equal(v->domains[0], "*");
    assert_int_equal(v->routes[0].direct_status, 502);
    compiled_free(&c);
    free(text);
}

static void test_deterministic_and_loadable(void **state)
{
    (void)state;
    char *text = concat(BOOKINFO, VS_90_10);
    char *out[2];
    size_t len[2];
    for (int i = 0; i < 2; i++) {
        struct compiled c;
        compile_text(&c, text, "default", "productpage-1");
        assert_non_null(c.cfg);
        char *err = NULL;
        out[i] = tr_config_write(c.cfg, TR_CONFIG_YAML, &len[i], &err);
        assert_non_null(out[i]);
        compiled_free(&c);
    }
    assert_int_equal(len[0], len[1]);
    assert_memory_equal(out[0], out[1], len[0]);
    /* what the proxy would be given loads as a native file */
    char *err = NULL;
    struct tr_config *back = tr_config_load_buffer(out[0], len[0], "compiled.yaml", &err);
    if (back == NULL)
        fail_msg("compiled model does not load: %s", err);
    size_t len2;
    char *again = tr_config_write(back, TR_CONFIG_YAML, &len2, &err);
    assert_non_null(again);
    assert_int_equal(len2, len[0]);
    assert_memory_equal(again, out[0], len2);
    free(again);
    tr_config_free(back);
    free(out[0]);
    free(out[1]);
    free(text);
}

/* Shadows are HTTP/1.1: a mirror to a gRPC port is dropped with a warning,
 * never compiled into a model the loader refuses. */
static void test_mirror_to_grpc_is_dropped(void **state)
{
    (void)state;
    static const char MORE[] =
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: rpc, namespace: default}\n"
        "spec:\n  selector: {app: ratings}\n  ports: [{name: grpc, port: 50051}]\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: ratings, namespace: default}\n"
        "spec:\n  hosts: [ratings]\n  http:\n"
        "  - route:\n    - destination: {host: ratings}\n    mirror: {host: rpc}\n"
        "    mirrorPercentage: {value: 50}\n";
    char *text = concat(BOOKINFO, MORE);
    struct compiled c;
    compile_text(&c, text, "default", "productpage-1");
    assert_non_null(c.cfg);
    assert_int_equal(c.d.n_errors, 0);
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.http[0]", "the mirror is dropped"));
    const struct tr_vhost_cfg *v = vhost(c.cfg, "9080", "ratings.default.svc.cluster.local:9080");
    assert_int_equal(v->routes[0].n_mirrors, 0);
    compiled_free(&c);
    free(text);
}

static void test_unknown_workload(void **state)
{
    (void)state;
    struct compiled c;
    compile_text(&c, BOOKINFO, "default", "nope");
    assert_null(c.cfg);
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, NULL, "workload default/nope"));
    compiled_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_routes),
        cmocka_unit_test(test_weighted_and_header_routes),
        cmocka_unit_test(test_findings_name_the_field),
        cmocka_unit_test(test_errors_refuse_the_resource),
        cmocka_unit_test(test_request_authentication),
        cmocka_unit_test(test_sidecar_scope_and_registry_only),
        cmocka_unit_test(test_deterministic_and_loadable),
        cmocka_unit_test(test_mirror_to_grpc_is_dropped),
        cmocka_unit_test(test_unknown_workload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
