/* Unit tests for the Istio compiler (dialect/istio): resources written as a
 * user writes them, compiled for one workload; the model is checked field by
 * field, findings by their file, line, resource, path and message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/load.h"
#include "config/write.h"
#include "core/base64.h"
#include "core/diag.h"
#include "dialect/istio/internal.h"
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

/* connectionPool tcpKeepalive (whole seconds, rounded up), maxConnectionDuration,
 * http.maxRetries and retryBudget; a subset's retryBudget replaces the rule's
 * whole (Envoy's defaults for what it leaves out), a fractional percent is
 * rounded with a warning. */
static void test_dr_pool_and_retry_budget(void **state)
{
    (void)state;
    static const char DR[] =
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: ratings, namespace: default}\n"
        "spec:\n  host: ratings\n  trafficPolicy:\n"
        "    connectionPool:\n      tcp: {maxConnectionDuration: 1m, tcpKeepalive: {time: "
        "1500ms, probes: 4}}\n      http: {maxRetries: 6}\n"
        "    retryBudget: {percent: 12.5, minRetryConcurrency: 2}\n"
        "  subsets:\n  - name: v1\n    labels: {version: v1}\n"
        "    trafficPolicy: {retryBudget: {minRetryConcurrency: 7}}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: ratings, namespace: default}\n"
        "spec:\n  hosts: [ratings]\n  http:\n  - match: [{uri: {prefix: /v1}}]\n"
        "    route: [{destination: {host: ratings, subset: v1}}]\n"
        "  - route: [{destination: {host: ratings}}]\n";
    char *text = concat(BOOKINFO, DR);
    struct compiled c;
    compile_text(&c, text, "default", "productpage-1");
    assert_non_null(c.cfg);
    assert_int_equal(c.d.n_errors, 0);
    assert_true(
        has_diag(&c.d, TR_DIAG_WARNING, "spec.trafficPolicy.retryBudget.percent", "taken as 13"));
    const struct tr_cluster_cfg *all =
        cluster(c.cfg, "outbound|9080||ratings.default.svc.cluster.local");
    assert_non_null(all->tcp_keepalive);
    assert_int_equal(all->tcp_keepalive->time_ms, 2000);
    assert_int_equal(all->tcp_keepalive->interval_ms, 0);
    assert_int_equal(all->tcp_keepalive->probes, 4);
    assert_int_equal(all->max_connection_duration_ms, 60000);
    assert_int_equal(all->breakers.max_retries, 6);
    assert_non_null(all->retry_budget);
    assert_int_equal(all->retry_budget->percent, 13);
    assert_int_equal(all->retry_budget->min_concurrency, 2);
    const struct tr_cluster_cfg *v1 =
        cluster(c.cfg, "outbound|9080|v1|ratings.default.svc.cluster.local");
    assert_non_null(v1->retry_budget);
    assert_int_equal(v1->retry_budget->percent, 20);
    assert_int_equal(v1->retry_budget->min_concurrency, 7);
    assert_int_equal(v1->breakers.max_retries, 6); /* the rule's pool: the subset has none */
    /* the reviews rule says nothing of these */
    const struct tr_cluster_cfg *rv =
        cluster(c.cfg, "outbound|9080||reviews.default.svc.cluster.local");
    assert_null(rv->tcp_keepalive);
    assert_null(rv->retry_budget);
    assert_int_equal(rv->breakers.max_retries, 0);
    compiled_free(&c);
    free(text);
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
                                                                                    "'ftp://f/"
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
    if (!has_diag(&c.d, TR_DIAG_ERROR, "spec.jwtRules[0].jwksUri", "not an http:// or https://"))
        dump_diags(&c.d);
    assert_true(
        has_diag(&c.d, TR_DIAG_ERROR, "spec.jwtRules[0].jwksUri", "not an http:// or https://"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.jwtRules[0].jwks", "no usable signature key"));
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.targetRefs", "which trellis does not run"));
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

/* jwksUri: fetched through the outbound cluster of a registry host (the
 * model's jwks_uri), over TLS for https (a copy of the cluster that
 * originates it, unless a DestinationRule does), from any other host
 * through a cluster the proxy resolves; a URI the proxy cannot fetch
 * refuses its policy. */
static const struct tr_jwt_rule_cfg *rule_of(const struct tr_request_authn_cfg *ra,
                                             const char *issuer)
{
    for (size_t i = 0; i < ra->n_rules; i++)
        if (strcmp(ra->rules[i].issuer, issuer) == 0)
            return &ra->rules[i];
    return NULL;
}

static const struct tr_cluster_cfg *fetch_cluster(const struct tr_config *cfg,
                                                  const struct tr_jwt_rule_cfg *r)
{
    assert_non_null(r);
    assert_non_null(r->jwks_uri);
    assert_true(r->jwks_uri->cluster >= 0); /* the model resolved it */
    const struct tr_cluster_cfg *c = &cfg->clusters[r->jwks_uri->cluster];
    assert_string_equal(c->name, r->jwks_uri->cluster_name);
    return c;
}

static void test_request_authentication_jwks_uri(void **state)
{
    (void)state;
#define RA_DEFAULT(name)                                                                           \
    "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"                         \
    "metadata: {name: " name ", namespace: default}\nspec:\n  jwtRules:\n"
    static const char BOTH[] =
        RA_DEFAULT("both") "  - {issuer: b, jwks: " RA_JWKS
                           ", jwksUri: 'http://reviews:9080/j', timeout: 1s}\n";
    static const char FETCHED[] =
        "  - {issuer: f, jwksUri: 'http://reviews:9080/.well-known/jwks.json', timeout: 2s}\n"
        "  - {issuer: t, jwksUri: 'https://reviews:9080/j'}\n"
        "  - {issuer: e, jwksUri: 'https://Keys.Example.com/j'}\n"
        "  - {issuer: p, jwksUri: 'http://keys.example.com:8080/j'}\n"
        "  - {issuer: o, jwksUri: 'https://origin.example/j'}\n";
    static const char ORIGIN[] =
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: origin, namespace: default}\n"
        "spec: {hosts: [origin.example], location: MESH_EXTERNAL, resolution: STATIC,\n"
        "  ports: [{number: 443, name: https, protocol: HTTPS}],\n"
        "  endpoints: [{address: 10.9.0.1}]}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: origin, namespace: default}\n"
        "spec: {host: origin.example, trafficPolicy: {tls: {mode: SIMPLE, sni: keys.origin}}}\n";
    static const char NO_PORT[] = "  - {issuer: n, jwksUri: 'http://reviews/j'}\n";
    static const char IP[] = "  - {issuer: i, jwksUri: 'https://10.0.0.1/j'}\n";
    char *text = NULL;
    assert_true(asprintf(&text, "%s%s%s%s%s%s%s%s%s", BOOKINFO, ORIGIN, BOTH, RA_DEFAULT("fetched"),
                         FETCHED, RA_DEFAULT("noport"), NO_PORT, RA_DEFAULT("ip"), IP) > 0);
#undef RA_DEFAULT
    struct compiled c;
    compile_text(&c, text, "default", "ratings-v1");
    assert_non_null(c.cfg);
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.jwtRules[0].jwksUri",
                         "service reviews.default.svc.cluster.local has no port 80"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.jwtRules[0].jwksUri", "https to an IP"));
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.jwtRules[0].timeout", "keys are inline"));
    const struct tr_listener_cfg *l = NULL;
    for (size_t i = 0; i < c.cfg->n_listeners; i++) {
        if (strcmp(c.cfg->listeners[i].name, "inbound|8080") == 0)
            l = &c.cfg->listeners[i];
    }
    assert_non_null(l);
    const struct tr_request_authn_cfg *ra = &l->request_authn;
    assert_int_equal(ra->n_rules, 6); /* the refused policies give none */
    /* http to a registry host: its outbound cluster (mesh mTLS to the
     * sidecar) as it is. */
    const struct tr_jwt_rule_cfg *f = rule_of(ra, "f");
    const struct tr_cluster_cfg *fc = fetch_cluster(c.cfg, f);
    assert_null(f->jwks);
    assert_string_equal(f->jwks_uri->url, "http://reviews:9080/.well-known/jwks.json");
    assert_string_equal(fc->name, "outbound|9080||reviews.default.svc.cluster.local");
    assert_int_equal(f->jwks_uri->timeout_ms, 2000);
    assert_int_equal(f->jwks_uri->refresh_ms, 20 * 60 * 1000);
    /* https to the same host: a copy that originates TLS to the
     * application, verifying the URL's host with the system's roots. */
    const struct tr_cluster_cfg *tc = fetch_cluster(c.cfg, rule_of(ra, "t"));
    assert_string_equal(tc->name, "jwks|9080|reviews.default.svc.cluster.local");
    assert_string_equal(tc->tls_name, "system-roots");
    assert_string_equal(tc->sni, "reviews");
    assert_int_equal(tc->n_server_ids, 0);
    assert_int_equal(tc->n_endpoints, fc->n_endpoints);
    assert_true(tc->n_endpoints > 0);
    assert_int_equal(tc->protocol, TR_UPROTO_HTTP1);
    /* Outside the registry: resolved by the proxy, TLS for https only. */
    const struct tr_cluster_cfg *ec = fetch_cluster(c.cfg, rule_of(ra, "e"));
    assert_string_equal(ec->name, "jwks|443|Keys.Example.com");
    assert_string_equal(ec->tls_name, "system-roots");
    assert_string_equal(ec->sni, "Keys.Example.com");
    assert_int_equal(ec->n_endpoints, 1);
    assert_string_equal(ec->endpoints[0].host, "keys.example.com");
    assert_int_equal(ec->endpoints[0].port, 443);
    assert_int_equal(ec->dns.mode, TR_DNS_ALL);
    assert_string_equal(ec->loc.origin.kind, "RequestAuthentication");
    const struct tr_cluster_cfg *pc = fetch_cluster(c.cfg, rule_of(ra, "p"));
    assert_string_equal(pc->name, "jwks|8080|keys.example.com");
    assert_null(pc->tls_name);
    assert_int_equal(pc->endpoints[0].port, 8080);
    /* A DestinationRule that originates TLS: its cluster, its SNI. */
    const struct tr_cluster_cfg *oc = fetch_cluster(c.cfg, rule_of(ra, "o"));
    assert_string_equal(oc->name, "outbound|443||origin.example");
    assert_string_equal(oc->tls_name, "system-roots");
    assert_string_equal(oc->sni, "keys.origin");
    const struct tr_jwt_rule_cfg *b = rule_of(ra, "b");
    assert_non_null(b->jwks); /* as Istio: the inline set, jwksUri ignored */
    assert_null(b->jwks_uri);
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

static const struct tr_listener_cfg *listener(const struct tr_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    }
    fail_msg("no listener %s", name);
    return NULL;
}

/* Capture (tr_istio_options.capture): every listener virtual, behind
 * Istio's virtualOutbound and virtualInbound; what nothing claims follows
 * the Sidecar's outboundTrafficPolicy (outbound) and the workload's mTLS
 * mode (inbound); the model loads back as written. */
static void test_capture(void **state)
{
    (void)state;
    static const char STRICT_REGISTRY_ONLY[] =
        "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n"
        "metadata: {name: default, namespace: default}\n"
        "spec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n";
    for (int strict = 0; strict < 2; strict++) {
        char *text = concat(BOOKINFO, strict ? STRICT_REGISTRY_ONLY : "");
        struct compiled c;
        tr_diags_init(&c.d);
        c.rs = tr_rset_from_buffer(text, strlen(text), "mesh.yaml", &c.d);
        assert_non_null(c.rs);
        struct tr_istio_options o = {
            .ns = "default", .name = "reviews-v1", .cert_dir = "/nonexistent", .capture = true};
        c.cfg = tr_istio_compile(c.rs, &o, &c.d);
        if (c.cfg == NULL || c.d.n_errors > 0)
            dump_diags(&c.d);
        assert_non_null(c.cfg);
        assert_int_equal(c.d.n_errors, 0);
        const struct tr_config *cfg = c.cfg;
        assert_int_equal(cfg->upstream_mark, 1337);
        const struct tr_listener_cfg *l = listener(cfg, "outbound|9080");
        assert_false(l->bind);
        assert_string_equal(l->addr.text, "0.0.0.0:9080");
        assert_int_equal(l->direction, TR_DIR_OUTBOUND);
        assert_null(l->original_destination);
        l = listener(cfg, "outbound|3306");
        assert_false(l->bind);
        assert_int_equal(l->protocol, TR_LPROTO_TCP);
        l = listener(cfg, "inbound|9080");
        assert_false(l->bind);
        assert_string_equal(l->addr.text, "127.0.1.1:9080");
        assert_int_equal(l->tls_mode, strict ? TR_TLS_STRICT : TR_TLS_PERMISSIVE);
        l = listener(cfg, "virtualOutbound");
        assert_true(l->bind);
        assert_string_equal(l->addr.text, "127.0.0.1:15001");
        assert_int_equal(l->protocol, TR_LPROTO_TCP);
        assert_non_null(l->original_destination);
        assert_int_equal(l->original_destination->unmatched,
                         strict ? TR_CAPTURE_REJECT : TR_CAPTURE_PASSTHROUGH);
        l = listener(cfg, "virtualInbound");
        assert_string_equal(l->addr.text, "0.0.0.0:15006");
        assert_int_equal(l->direction, TR_DIR_INBOUND);
        assert_int_equal(l->original_destination->unmatched,
                         strict ? TR_CAPTURE_REJECT : TR_CAPTURE_PASSTHROUGH);
        /* No "needs traffic capture" finding: capture is on. */
        assert_false(has_diag(&c.d, TR_DIAG_WARNING, NULL, "needs traffic capture"));
        /* What the proxy is given says all of it (the loader's side of the
         * round trip is config/test_write.c's). */
        size_t len;
        char *err = NULL;
        char *out = tr_config_write(cfg, TR_CONFIG_YAML, &len, &err);
        assert_non_null(out);
        assert_non_null(strstr(out, "upstream_mark: 1337\n"));
        assert_non_null(strstr(out, "bind: false\n"));
        assert_non_null(
            strstr(out, strict ? "original_destination:\n" : "original_destination: {}\n"));
        free(out);
        compiled_free(&c);
        free(text);
    }
}

/* destinationSubnets with capture: a virtual listener per block, the
 * blocks as Go's ParseCIDR reads them (host bits cleared, an address a /32
 * or /128), a block an earlier rule claims left to it, rules after one that
 * takes everything never reached. */
static void test_capture_destination_subnets(void **state)
{
    (void)state;
    static const char VS[] =
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: db, namespace: data}\n"
        "spec:\n  hosts: [db]\n  tcp:\n"
        "  - match: [{destinationSubnets: [10.1.2.3/16, 'fd00::1']}]\n"
        "    route: [{destination: {host: db}}]\n"
        "  - match: [{destinationSubnets: [10.1.0.0/16, 10.2.0.0/16]}, {port: 3399}]\n"
        "    route: [{destination: {host: db, port: {number: 3307}}}]\n"
        "  - route: [{destination: {host: db}}]\n"
        "  - match: [{destinationSubnets: [10.3.0.0/16]}]\n"
        "    route: [{destination: {host: db}}]\n";
    char *text = concat(BOOKINFO, VS);
    struct compiled c;
    tr_diags_init(&c.d);
    c.rs = tr_rset_from_buffer(text, strlen(text), "mesh.yaml", &c.d);
    assert_non_null(c.rs);
    struct tr_istio_options o = {
        .ns = "default", .name = "reviews-v1", .cert_dir = "/nonexistent", .capture = true};
    c.cfg = tr_istio_compile(c.rs, &o, &c.d);
    if (c.cfg == NULL || c.d.n_errors > 0)
        dump_diags(&c.d);
    assert_non_null(c.cfg);
    const struct tr_listener_cfg *l = listener(c.cfg, "outbound|3306|10.1.0.0/16");
    assert_false(l->bind);
    assert_string_equal(l->addr.text, "0.0.0.0:3306");
    assert_int_equal(l->n_destination_prefixes, 1);
    assert_string_equal(l->destination_prefixes[0], "10.1.0.0/16");
    assert_string_equal(l->tcp_cluster_name, "outbound|3306||db.data.svc.cluster.local");
    l = listener(c.cfg, "outbound|3306|fd00::1/128");
    assert_string_equal(l->tcp_cluster_name, "outbound|3306||db.data.svc.cluster.local");
    /* The second rule's other block; its destination is no port of db: the
     * rule fails closed there. */
    l = listener(c.cfg, "outbound|3306|10.2.0.0/16");
    assert_string_equal(l->tcp_cluster_name, "blackhole|3306|db.data.svc.cluster.local");
    size_t n = 0;
    for (size_t i = 0; i < c.cfg->n_listeners; i++)
        n += c.cfg->listeners[i].n_destination_prefixes > 0;
    assert_int_equal(n, 3); /* 10.3.0.0/16 comes after the catch-all: never reached */
    assert_false(has_diag(&c.d, TR_DIAG_WARNING, NULL, "destination subnets"));
    compiled_free(&c);
    /* Without capture: reported, no listener claims them. */
    compile_text(&c, text, "default", "reviews-v1");
    assert_non_null(c.cfg);
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.tcp[0].match[0].destinationSubnets",
                         "need the original destination"));
    for (size_t i = 0; i < c.cfg->n_listeners; i++)
        assert_int_equal(c.cfg->listeners[i].n_destination_prefixes, 0);
    compiled_free(&c);
    free(text);
}

/* Sidecar ingress listeners: they replace the services' ports, only for a
 * workload some service selects; what istiod would refuse is an error. */
static void test_sidecar_ingress(void **state)
{
    (void)state;
    static const char SC[] = "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n"
                             "metadata: {name: default, namespace: default}\n"
                             "spec:\n  ingress:\n"
                             "  - port: {number: 7000, protocol: GRPC, name: api}\n"
                             "    defaultEndpoint: '[::1]:7001'\n"
                             "  - port: {number: 7002, protocol: MONGO, name: db}\n"
                             "    defaultEndpoint: 0.0.0.0:7003\n    bind: 127.0.9.9\n";
    char *text = concat(BOOKINFO, SC);
    struct compiled c;
    compile_text(&c, text, "default", "reviews-v1");
    if (c.cfg == NULL || c.d.n_errors > 0)
        dump_diags(&c.d);
    assert_non_null(c.cfg);
    const struct tr_listener_cfg *l = listener(c.cfg, "inbound|7000");
    assert_string_equal(l->addr.text, "127.0.1.1:7000");
    assert_int_equal(l->protocol, TR_LPROTO_AUTO);
    l = listener(c.cfg, "inbound|7002");
    assert_string_equal(l->addr.text, "127.0.9.9:7002"); /* bind */
    assert_int_equal(l->protocol, TR_LPROTO_TCP);
    const struct tr_cluster_cfg *cl = cluster(c.cfg, "inbound|7000||");
    assert_int_equal(cl->protocol, TR_UPROTO_HTTP2);
    assert_string_equal(cl->endpoints[0].addr.text, "127.0.0.1:7001"); /* the app's loopback */
    assert_string_equal(cluster(c.cfg, "inbound|7002||")->endpoints[0].addr.text, "127.0.0.1:7003");
    for (size_t i = 0; i < c.cfg->n_listeners; i++) /* the service's port is replaced */
        assert_string_not_equal(c.cfg->listeners[i].name, "inbound|9080");
    compiled_free(&c);
    /* productpage-1: no service selects it, so no inbound side (Istio). */
    compile_text(&c, text, "default", "productpage-1");
    assert_non_null(c.cfg);
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.ingress", "no service selects workload"));
    for (size_t i = 0; i < c.cfg->n_listeners; i++)
        assert_int_not_equal(c.cfg->listeners[i].direction, TR_DIR_INBOUND);
    compiled_free(&c);
    free(text);
    /* What istiod refuses. */
    static const char BAD[] =
        "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n"
        "metadata: {name: default, namespace: default}\n"
        "spec:\n  ingress:\n"
        "  - port: {number: 7000, protocol: HTTP}\n    defaultEndpoint: unix:///var/app.sock\n"
        "  - port: {number: 7000, protocol: HTTP}\n    defaultEndpoint: 127.0.0.1:x\n"
        "  - port: {protocol: HTTP}\n    defaultEndpoint: 127.0.0.1:80\n"
        "    captureMode: SOMETIMES\n    bind: not-an-ip\n";
    text = concat(BOOKINFO, BAD);
    compile_text(&c, text, "default", "reviews-v1");
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.ingress[0].defaultEndpoint",
                         "Unix domain sockets are not supported"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.ingress[1].port.number",
                         "port 7000 is already the port of ingress[0]"));
    assert_true(
        has_diag(&c.d, TR_DIAG_ERROR, "spec.ingress[1].defaultEndpoint", "expected IP:PORT"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.ingress[2].port.number", "missing required"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.ingress[2].captureMode", "expected DEFAULT"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.ingress[2].bind", "expected an IP address"));
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

/* DestinationRule tls: SIMPLE and MUTUAL originate TLS with a client
 * context made of credentialName's Secret (inline PEM) or the system's
 * trust store; file paths and missing Secrets are refused. */
static const char EXT[] =
    "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: ext, namespace: default}\n"
    "spec:\n  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n"
    "  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 443}]\n"
    "  endpoints: [{address: 127.0.2.1}]\n"
    "  subjectAltNames: [spiffe://example.org/api]\n";

/* "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" and a key */
#define B64_CERT "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
#define B64_KEY  "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUUKLS0tLS1FTkQgUFJJVkFURSBLRVktLS0tLQo="

static struct compiled *compile_dr(const char *tls, const char *secret_data)
{
    char buf[4096];
    int n = snprintf(buf, sizeof(buf),
                     "%s---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                     "metadata: {name: ext, namespace: default}\n"
                     "spec:\n  host: api.example.com\n  trafficPolicy:\n    tls: %s\n"
                     "%s%s\n",
                     EXT, tls,
                     secret_data ? "---\napiVersion: v1\nkind: Secret\nmetadata: {name: cred, "
                                   "namespace: default}\ntype: kubernetes.io/tls\ndata: "
                                 : "",
                     secret_data ? secret_data : "");
    assert_true(n > 0 && (size_t)n < sizeof(buf));
    char *text = concat(BOOKINFO, buf);
    struct compiled *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    compile_text(c, text, "default", "productpage-1");
    free(text);
    return c;
}

static const struct tr_tls_cfg *tls_ctx(const struct tr_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_tls; i++)
        if (strcmp(cfg->tls[i].name, name) == 0)
            return &cfg->tls[i];
    fail_msg("no TLS context %s", name);
    return NULL;
}

static void test_dr_tls_origination(void **state)
{
    (void)state;
    const char *cl = "outbound|80||api.example.com";
    /* SIMPLE without a Secret: the system's roots; SNI and name default to the host. */
    struct compiled *c = compile_dr("{mode: SIMPLE}", NULL);
    if (c->cfg == NULL || c->d.n_errors)
        dump_diags(&c->d);
    assert_non_null(c->cfg);
    const struct tr_cluster_cfg *k = cluster(c->cfg, cl);
    assert_string_equal(k->tls_name, "system-roots");
    assert_false(k->mesh_tls);
    assert_string_equal(k->sni, "api.example.com");
    /* the ServiceEntry's subjectAltNames are what the server must carry */
    assert_int_equal(k->n_subject_alt_names, 1);
    assert_string_equal(k->subject_alt_names[0], "spiffe://example.org/api");
    assert_int_equal(k->n_endpoints, 1);
    const struct tr_tls_cfg *t = tls_ctx(c->cfg, "system-roots");
    assert_int_equal(t->kind, TR_TLSK_CLIENT);
    assert_null(t->ca_pem);
    assert_null(t->ca_file);
    compiled_free(c);
    free(c);

    /* MUTUAL with credentialName: the Secret's PEM inline; the rule's names win. */
    c = compile_dr("{mode: MUTUAL, credentialName: cred, sni: api.internal, subjectAltNames: "
                   "[api.example.com, \"*.example.com\"]}",
                   "{tls.crt: " B64_CERT ", tls.key: " B64_KEY ", ca.crt: " B64_CERT "}");
    if (c->cfg == NULL || c->d.n_errors)
        dump_diags(&c->d);
    assert_non_null(c->cfg);
    k = cluster(c->cfg, cl);
    assert_string_equal(k->tls_name, "mutual|default/cred");
    assert_string_equal(k->sni, "api.internal");
    assert_int_equal(k->n_subject_alt_names, 2);
    assert_string_equal(k->subject_alt_names[1], "*.example.com");
    assert_int_equal(k->protocol, TR_UPROTO_HTTP1);
    t = tls_ctx(c->cfg, "mutual|default/cred");
    assert_string_equal(t->cert_pem,
                        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    assert_string_equal(t->key_pem,
                        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n");
    assert_non_null(t->ca_pem);
    assert_string_equal(t->loc.origin.kind, "Secret");
    /* the model round-trips: written and loaded again, it is the same */
    size_t len = 0;
    char *err = NULL;
    char *text = tr_config_write(c->cfg, TR_CONFIG_YAML, &len, &err);
    assert_non_null(text);
    struct tr_config *again = tr_config_load_buffer(text, len, "again.yaml", &err);
    if (again == NULL)
        fail_msg("%s", err);
    assert_string_equal(again->tls[0].key_pem, t->key_pem);
    tr_config_free(again);
    free(text);
    compiled_free(c);
    free(c);

    /* insecureSkipVerify: no names at all. */
    c = compile_dr("{mode: SIMPLE, credentialName: cred, insecureSkipVerify: true}",
                   "{ca.crt: " B64_CERT "}");
    assert_non_null(c->cfg);
    k = cluster(c->cfg, cl);
    assert_string_equal(k->tls_name, "simple|default/cred");
    assert_true(k->insecure_skip_verify);
    assert_int_equal(k->n_subject_alt_names, 0);
    assert_null(tls_ctx(c->cfg, "simple|default/cred")->cert_pem);
    compiled_free(c);
    free(c);

    /* MUTUAL without a certificate: a warning, and no plaintext either. */
    c = compile_dr("{mode: MUTUAL}", NULL);
    assert_non_null(c->cfg);
    assert_true(has_diag(&c->d, TR_DIAG_WARNING, "spec.trafficPolicy.tls.mode",
                         "MUTUAL needs a client certificate"));
    k = cluster(c->cfg, cl);
    assert_int_equal(k->n_endpoints, 0);
    assert_null(k->tls_name);
    compiled_free(c);
    free(c);
}

static void test_dr_tls_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *tls, *secret, *path, *msg;
    } cases[] = {
        {"{mode: SIMPLE, caCertificates: /etc/certs/ca.pem}", NULL,
         "spec.trafficPolicy.tls.caCertificates", "a compiled model cannot carry"},
        {"{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}", NULL,
         "spec.trafficPolicy.tls.clientCertificate", "name it in credentialName"},
        {"{mode: SIMPLE, credentialName: nope}", NULL, "spec.trafficPolicy.tls.credentialName",
         "no Secret \"nope\" in the input (namespace default)"},
        {"{mode: MUTUAL, credentialName: cred}", "{ca.crt: " B64_CERT "}",
         "spec.trafficPolicy.tls.credentialName", "has no client certificate and key"},
        {"{mode: SIMPLE, credentialName: cred}", "{ca.crt: \"bm90IHBlbQ==\"}",
         "spec.trafficPolicy.tls.credentialName", "Secret default/cred: ca.crt holds no PEM block"},
        {"{mode: SIMPLE, credentialName: cred}", "{ca.crt: \"LS0t=LS0\"}",
         "spec.trafficPolicy.tls.credentialName", "Secret default/cred: ca.crt is not base64"},
        {"{mode: SIMPLE, sni: \"a b\"}", NULL, "spec.trafficPolicy.tls.sni",
         "expected a host name"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct compiled *c = compile_dr(cases[i].tls, cases[i].secret);
        if (!has_diag(&c->d, TR_DIAG_ERROR, cases[i].path, cases[i].msg)) {
            dump_diags(&c->d);
            fail_msg("case %zu: no error at %s with \"%s\"", i, cases[i].path, cases[i].msg);
        }
        /* a refused rule sends nothing in plaintext: the model is not given */
        compiled_free(c);
        free(c);
    }
}

/* Gateway servers: SIMPLE and MUTUAL terminate TLS with the Secret's
 * certificate, chosen by the server's hosts; httpsRedirect answers 301. */
/* TLS routes by SNI (VirtualService tls, Gateway PASSTHROUGH). Two TLS
 * ServiceEntries share port 443; one has a VirtualService with tls rules. */
static const char TLS_MESH[] =
    "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: ext-a, namespace: default}\n"
    "spec:\n  hosts: [a.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n"
    "  resolution: STATIC\n  endpoints: [{address: 127.0.2.1}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: ext-b, namespace: default}\n"
    "spec:\n  hosts: [b.internal]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n"
    "  resolution: STATIC\n  endpoints: [{address: 127.0.2.2}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: wild, namespace: default}\n"
    "spec:\n  hosts: [\"*.b.example.com\"]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n"
    "  resolution: STATIC\n  endpoints: [{address: 127.0.2.3}]\n";

static const struct tr_sni_route_cfg *sni_rule(const struct tr_listener_cfg *l, const char *name)
{
    for (size_t i = 0; i < l->n_sni_routes; i++)
        for (size_t k = 0; k < l->sni_routes[i].n_server_names; k++)
            if (strcmp(l->sni_routes[i].server_names[k], name) == 0)
                return &l->sni_routes[i];
    fail_msg("no SNI rule for %s in listener %s", name, l->name);
    return NULL;
}

static void test_tls_routes_mesh(void **state)
{
    (void)state;
    static const char VS[] =
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: b, namespace: default}\n"
        "spec:\n  hosts: [\"*.b.example.com\"]\n  tls:\n"
        "  - match: [{sniHosts: [x.b.example.com], sourceLabels: {app: other}}]\n"
        "    route: [{destination: {host: a.example.com}}]\n"
        "  - match: [{sniHosts: [x.b.example.com, Y.b.example.com], port: 443}, "
        "{sniHosts: [z.b.example.com], port: 8443}]\n"
        "    route:\n    - {destination: {host: b.internal}, weight: 75}\n"
        "    - {destination: {host: a.example.com}, weight: 25}\n"
        "  - match: [{sniHosts: [\"*.b.example.com\"]}]\n"
        "    route: [{destination: {host: nowhere.example.com}}]\n";
    char *text = concat(BOOKINFO, TLS_MESH);
    char *text2 = concat(text, VS);
    struct compiled c;
    compile_text(&c, text2, "default", "productpage-1");
    if (c.cfg == NULL || c.d.n_errors)
        dump_diags(&c.d);
    assert_non_null(c.cfg);
    const struct tr_listener_cfg *l = listener(c.cfg, "outbound|443");
    assert_int_equal(l->protocol, TR_LPROTO_TCP);
    /* the default is as before: the port's first TCP service */
    assert_string_equal(l->tcp_cluster_name, "outbound|443||a.example.com");
    assert_int_equal(l->detect_timeout_ms, 10000); /* only TLS services: wait for the hello */
    assert_int_equal(l->n_sni_routes, 4);
    /* registry order: a.example.com's and b.internal's own names first */
    assert_string_equal(l->sni_routes[0].server_names[0], "a.example.com");
    assert_string_equal(l->sni_routes[0].tcp_cluster_name, "outbound|443||a.example.com");
    assert_string_equal(l->sni_routes[1].server_names[0], "b.internal");
    assert_string_equal(l->sni_routes[1].tcp_cluster_name, "outbound|443||b.internal");
    /* then *.b.example.com's VirtualService: tls[0] does not apply
     * (sourceLabels); tls[1]'s first block applies (port 443), its second
     * not (8443); names lower-cased */
    const struct tr_sni_route_cfg *r = sni_rule(l, "x.b.example.com");
    assert_ptr_equal(r, &l->sni_routes[2]);
    assert_int_equal(r->n_server_names, 2);
    assert_string_equal(r->server_names[1], "y.b.example.com");
    assert_int_equal(r->n_tcp_clusters, 2);
    assert_string_equal(r->tcp_clusters[0].cluster_name, "outbound|443||b.internal");
    assert_int_equal(r->tcp_clusters[0].weight, 75);
    assert_string_equal(r->tcp_clusters[1].cluster_name, "outbound|443||a.example.com");
    assert_int_equal(r->tcp_clusters[1].weight, 25);
    assert_string_equal(r->loc.origin.kind, "VirtualService");
    /* tls[2] routes to an unknown host: fails closed (an empty cluster);
     * the service's own name, the same, is not listed twice */
    r = sni_rule(l, "*.b.example.com");
    assert_ptr_equal(r, &l->sni_routes[3]);
    const struct tr_cluster_cfg *bh = cluster(c.cfg, r->tcp_cluster_name);
    assert_int_equal(bh->n_endpoints, 0);
    assert_false(has_diag(&c.d, TR_DIAG_WARNING, NULL, "is also used by"));
    compiled_free(&c);
    free(text2);

    /* sniHosts outside the VirtualService's hosts: refused, as by Istio */
    static const char BAD[] = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                              "metadata: {name: b, namespace: default}\n"
                              "spec:\n  hosts: [\"*.b.example.com\"]\n  tls:\n"
                              "  - match: [{sniHosts: [b.example.com]}, {sniHosts: []}]\n"
                              "    route: [{destination: {host: a.example.com}}]\n"
                              "  - route: [{destination: {host: a.example.com}}]\n";
    text2 = concat(text, BAD);
    compile_text(&c, text2, "default", "productpage-1");
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.tls[0].match[0].sniHosts[0]",
                         "SNI host b.example.com is not within the VirtualService's hosts"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.tls[0].match[1].sniHosts",
                         "at least one SNI host is required"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.tls[1].match",
                         "a tls rule needs at least one match block"));
    compiled_free(&c);
    free(text2);
    free(text);
}

static void test_tls_passthrough_gateway(void **state)
{
    (void)state;
    static const char GW[] =
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ingress, namespace: default, labels: "
        "{istio: ingressgateway}}\nstatus: {podIP: 127.0.1.20}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\n"
        "metadata: {name: gw, namespace: default}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        "  - port: {number: 8443, name: tls, protocol: TLS}\n"
        "    hosts: [\"*.b.example.com\"]\n    tls: {mode: PASSTHROUGH}\n"
        "  - port: {number: 9443, name: tls-auto, protocol: TLS}\n"
        "    hosts: [\"*\"]\n    tls: {mode: AUTO_PASSTHROUGH}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: gw, namespace: default}\n"
        "spec:\n  hosts: [\"*.b.example.com\", a.example.com]\n  gateways: [gw]\n  tls:\n"
        "  - match: [{sniHosts: [x.b.example.com, a.example.com]}]\n"
        "    route: [{destination: {host: b.internal}}]\n"
        "  - match: [{sniHosts: [\"*.b.example.com\"], port: 8443}]\n"
        "    route:\n    - {destination: {host: b.internal}, weight: 1}\n"
        "    - {destination: {host: a.example.com}, weight: 3}\n";
    char *text = concat(BOOKINFO, TLS_MESH);
    char *text2 = concat(text, GW);
    struct compiled c;
    compile_text(&c, text2, "default", "ingress");
    if (c.cfg == NULL)
        dump_diags(&c.d);
    assert_non_null(c.cfg);
    /* AUTO_PASSTHROUGH: every service under "*", each port and subset, by
     * Istio's SNI outbound_.PORT_.SUBSET_.HOST, to a copy of its cluster
     * without TLS (the remote sidecar's mTLS passes through) */
    const struct tr_listener_cfg *al = listener(c.cfg, "gateway|9443");
    const struct tr_sni_route_cfg *ar =
        sni_rule(al, "outbound_.9080_.v3_.reviews.default.svc.cluster.local");
    assert_string_equal(ar->tcp_cluster_name,
                        "outbound_.9080_.v3_.reviews.default.svc.cluster.local");
    const struct tr_cluster_cfg *ac = cluster(c.cfg, ar->tcp_cluster_name);
    assert_null(ac->tls_name);
    assert_int_equal(ac->n_endpoints, 1); /* reviews-v3 */
    ar = sni_rule(al, "outbound_.443_._.b.internal");
    assert_string_equal(ar->tcp_cluster_name, "outbound_.443_._.b.internal");
    ar = sni_rule(al, "outbound_.3306_._.db.data.svc.cluster.local");
    assert_null(al->tcp_cluster_name); /* other names are closed */
    const struct tr_listener_cfg *l = listener(c.cfg, "gateway|8443");
    assert_int_equal(l->protocol, TR_LPROTO_TCP);
    assert_int_equal(l->tls_mode, TR_TLS_DISABLE);
    assert_null(l->route_table_name);
    assert_null(l->tcp_cluster_name); /* no default: other names are closed */
    assert_int_equal(l->n_tcp_clusters, 0);
    assert_int_equal(l->n_sni_routes, 2);
    /* a.example.com is not a host of the server: left out */
    assert_int_equal(l->sni_routes[0].n_server_names, 1);
    assert_string_equal(l->sni_routes[0].server_names[0], "x.b.example.com");
    assert_string_equal(l->sni_routes[0].tcp_cluster_name, "outbound|443||b.internal");
    assert_string_equal(l->sni_routes[1].server_names[0], "*.b.example.com");
    assert_int_equal(l->sni_routes[1].n_tcp_clusters, 2);
    assert_int_equal(l->sni_routes[1].tcp_clusters[1].weight, 3);
    compiled_free(&c);
    free(text2);

    /* sniHosts "*" (Istio's expose-istiod): the listener's default */
    static const char STAR[] =
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ingress, namespace: default, labels: "
        "{istio: ingressgateway}}\nstatus: {podIP: 127.0.1.20}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\n"
        "metadata: {name: gw, namespace: default}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        "  - port: {number: 8443, name: tls, protocol: TLS}\n    hosts: [\"*\"]\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: gw, namespace: default}\n"
        "spec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  tls:\n"
        "  - match: [{sniHosts: [a.example.com]}]\n"
        "    route: [{destination: {host: a.example.com}}]\n"
        "  - match: [{sniHosts: [\"*\"]}]\n"
        "    route: [{destination: {host: b.internal}}]\n"
        "  - match: [{sniHosts: [later.example.com]}]\n"
        "    route: [{destination: {host: a.example.com}}]\n";
    text2 = concat(text, STAR);
    compile_text(&c, text2, "default", "ingress");
    if (c.cfg == NULL || c.d.n_errors)
        dump_diags(&c.d);
    assert_non_null(c.cfg);
    l = listener(c.cfg, "gateway|8443");
    assert_string_equal(l->tcp_cluster_name, "outbound|443||b.internal");
    assert_int_equal(l->n_sni_routes, 1); /* later.example.com is never reached */
    assert_string_equal(l->sni_routes[0].server_names[0], "a.example.com");
    compiled_free(&c);
    free(text2);
    free(text);
}

static struct compiled *compile_gw(const char *tls, const char *secret_data)
{
    char buf[4096];
    int n = snprintf(
        buf, sizeof(buf),
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ingress, namespace: default, labels: "
        "{istio: ingressgateway}}\nstatus: {podIP: 127.0.1.20}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\n"
        "metadata: {name: gw, namespace: default}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        "  - port: {number: 8443, name: https, protocol: HTTPS}\n"
        "    hosts: [reviews.example.com, \"*.shop.example.com\"]\n    tls: %s\n"
        "  - port: {number: 8080, name: http, protocol: HTTP}\n"
        "    hosts: [reviews.example.com, other.example.com]\n    tls: {httpsRedirect: true}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: gw, namespace: default}\n"
        "spec:\n  hosts: [reviews.example.com]\n  gateways: [gw]\n"
        "  http:\n  - route:\n    - destination: {host: reviews}\n"
        "%s%s\n",
        tls,
        secret_data ? "---\napiVersion: v1\nkind: Secret\nmetadata: {name: cred, namespace: "
                      "default}\ntype: kubernetes.io/tls\ndata: "
                    : "",
        secret_data ? secret_data : "");
    assert_true(n > 0 && (size_t)n < sizeof(buf));
    char *text = concat(BOOKINFO, buf);
    struct compiled *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    compile_text(c, text, "default", "ingress");
    free(text);
    return c;
}

static void test_gateway_tls(void **state)
{
    (void)state;
    struct compiled *c =
        compile_gw("{mode: MUTUAL, credentialName: cred}",
                   "{tls.crt: " B64_CERT ", tls.key: " B64_KEY ", ca.crt: " B64_CERT "}");
    if (c->cfg == NULL || c->d.n_errors)
        dump_diags(&c->d);
    assert_non_null(c->cfg);
    const struct tr_listener_cfg *l = listener(c->cfg, "gateway|8443");
    assert_int_equal(l->tls_mode, TR_TLS_TERMINATE);
    assert_int_equal(l->n_tls_contexts, 1);
    const struct tr_tls_cfg *t = tls_ctx(c->cfg, l->tls_contexts[0]);
    assert_int_equal(t->kind, TR_TLSK_SERVER);
    assert_non_null(t->cert_pem);
    assert_non_null(t->key_pem);
    assert_non_null(t->ca_pem); /* MUTUAL: client certificates from this CA */
    assert_int_equal(t->n_server_names, 2);
    assert_string_equal(t->server_names[0], "reviews.example.com");
    assert_string_equal(t->server_names[1], "*.shop.example.com");
    /* the plaintext port redirects, for a host no VirtualService serves too */
    const struct tr_vhost_cfg *v = vhost(c->cfg, "gateway|8080", "reviews.example.com:8080");
    assert_int_equal(v->n_routes, 1);
    assert_non_null(v->routes[0].redirect);
    assert_string_equal(v->routes[0].redirect->scheme, "https");
    assert_int_equal(v->routes[0].redirect->code, 301);
    v = vhost(c->cfg, "gateway|8080", "other.example.com:8080");
    assert_non_null(v->routes[0].redirect);
    compiled_free(c);
    free(c);

    /* SIMPLE: no CA, so no client certificate is asked for. */
    c = compile_gw("{mode: SIMPLE, credentialName: cred, minProtocolVersion: TLSV1_3}",
                   "{tls.crt: " B64_CERT ", tls.key: " B64_KEY ", ca.crt: " B64_CERT "}");
    assert_non_null(c->cfg);
    t = tls_ctx(c->cfg, listener(c->cfg, "gateway|8443")->tls_contexts[0]);
    assert_null(t->ca_pem);
    assert_int_equal(t->min_version, 0x0304);
    compiled_free(c);
    free(c);

    static const struct {
        const char *tls, *secret, *path, *msg;
    } refused[] = {
        {"{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}", NULL,
         "spec.servers[0].tls.serverCertificate", "a compiled model cannot carry"},
        {"{mode: SIMPLE}", NULL, "spec.servers[0].tls.credentialName",
         "needs a certificate: name a Secret"},
        {"{mode: SIMPLE, credentialName: nope}", NULL, "spec.servers[0].tls.credentialName",
         "no Secret \"nope\" in the input"},
        {"{mode: SIMPLE, credentialName: cred}", "{ca.crt: " B64_CERT "}",
         "spec.servers[0].tls.credentialName", "has no tls.crt and tls.key"},
        {"{mode: MUTUAL, credentialName: cred}", "{tls.crt: " B64_CERT ", tls.key: " B64_KEY "}",
         "spec.servers[0].tls.credentialName", "MUTUAL needs a CA for client certificates"},
        {"{mode: MUTUAL, credentialName: cred, subjectAltNames: [a]}",
         "{tls.crt: " B64_CERT ", tls.key: " B64_KEY ", ca.crt: " B64_CERT "}",
         "spec.servers[0].tls.subjectAltNames", "client certificates would be accepted"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        c = compile_gw(refused[i].tls, refused[i].secret);
        if (!has_diag(&c->d, TR_DIAG_ERROR, refused[i].path, refused[i].msg)) {
            dump_diags(&c->d);
            fail_msg("case %zu: no error at %s with \"%s\"", i, refused[i].path, refused[i].msg);
        }
        compiled_free(c);
        free(c);
    }
}

static void test_base64(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(tr_base64_decode("aGk=", 4, out, sizeof(out)), 2);
    assert_memory_equal(out, "hi", 2);
    assert_int_equal(tr_base64_decode("aGVsbG8h", 8, out, sizeof(out)), 6);
    assert_int_equal(tr_base64_decode("", 0, out, sizeof(out)), 0);
    static const char *const bad[] = {
        "aGk", "aG=k", "a===", "aGj=", "aGk=aGk=", "aG\nk", "****", "====", "aGk_"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tr_base64_decode(bad[i], strlen(bad[i]), out, sizeof(out)), -1);
    assert_int_equal(tr_base64_decode("aGVsbG8h", 8, out, 5), -1); /* no room */
}

/* A workload known by its Deployment only (no Pod: no instance yet) and a
 * ServiceEntry with endpoints: the endpoints are the first instances, the
 * entry the first service (each array grows by its own capacity). */
static void test_service_entry_endpoints_first(void **state)
{
    (void)state;
    static const char TEXT[] =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: client, namespace: default}\n"
        "spec:\n  template:\n    metadata: {labels: {app: client}}\n"
        "    spec: {serviceAccountName: client}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: ext, namespace: default}\n"
        "spec:\n  hosts: [api.example.com, web.example.com]\n  location: MESH_EXTERNAL\n"
        "  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"
        "  endpoints: [{address: 10.1.0.1}, {address: 10.1.0.2}]\n";
    struct compiled c;
    compile_text(&c, TEXT, "default", "client");
    if (c.cfg == NULL)
        dump_diags(&c.d);
    assert_non_null(c.cfg);
    assert_int_equal(cluster(c.cfg, "outbound|80||web.example.com")->n_endpoints, 2);
    compiled_free(&c);
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

/* Every pod of BOOKINFO + extra: a registry built once gives each the model
 * a full compile gives it, byte for byte; the registry's findings are
 * reported once. Returns the number of models compared. */
static size_t compare_shared(const char *extra, size_t min_models);

static int corpus_file(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    size_t l = strlen(path);
    if (type != FTW_F || l < 5 || strcmp(path + l - 5, ".yaml") != 0)
        return 0;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf == NULL)
        return 0;
    buf[n] = '\0';
    char *extra = concat("\n---\n", buf);
    compare_shared(extra, 0);
    free(extra);
    free(buf);
    return 0;
}

/* MeshConfig pathNormalization sets every HTTP listener's normalization
 * (Istio's values one to one, DEFAULT being Istio's BASE); without it the
 * listeners keep trellis's STRICT; a value Istio does not have is an error. */
static void test_mesh_path_normalization(void **state)
{
    (void)state;
    static const char *const values[] = {"NONE", "BASE", "MERGE_SLASHES",
                                         "DECODE_AND_MERGE_SLASHES", "DEFAULT"};
    static const enum tr_path_normalization want[] = {
        TR_PATHNORM_NONE, TR_PATHNORM_BASE, TR_PATHNORM_MERGE_SLASHES,
        TR_PATHNORM_DECODE_AND_MERGE_SLASHES, TR_PATHNORM_BASE};
    struct compiled c;
    compile_text(&c, BOOKINFO, "default", "productpage-1");
    assert_non_null(c.cfg);
    for (size_t i = 0; i < c.cfg->n_listeners; i++)
        assert_int_equal(c.cfg->listeners[i].path_normalization, TR_PATHNORM_STRICT);
    compiled_free(&c);
    for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
        char mesh[512];
        snprintf(mesh, sizeof(mesh),
                 "\n---\napiVersion: v1\nkind: ConfigMap\n"
                 "metadata: {name: istio, namespace: istio-system}\n"
                 "data:\n  mesh: |\n    pathNormalization:\n      normalization: %s\n",
                 values[v]);
        char *text = concat(BOOKINFO, mesh);
        compile_text(&c, text, "default", "productpage-1");
        if (c.cfg == NULL || c.d.n_errors)
            dump_diags(&c.d);
        assert_non_null(c.cfg);
        assert_int_equal(c.d.n_errors, 0);
        size_t http = 0;
        for (size_t i = 0; i < c.cfg->n_listeners; i++) {
            const struct tr_listener_cfg *l = &c.cfg->listeners[i];
            if (l->protocol == TR_LPROTO_TCP)
                continue;
            assert_int_equal(l->path_normalization, want[v]);
            http++;
        }
        assert_true(http > 0);
        compiled_free(&c);
        free(text);
    }
    char *bad = concat(BOOKINFO, "\n---\napiVersion: v1\nkind: ConfigMap\n"
                                 "metadata: {name: istio, namespace: istio-system}\n"
                                 "data:\n  mesh: |\n    pathNormalization: {normalization: "
                                 "SOMETIMES}\n");
    compile_text(&c, bad, "default", "productpage-1");
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, NULL, "got \"SOMETIMES\""));
    compiled_free(&c);
    free(bad);
}

/* Pods that take no new traffic are not endpoints (unless the Service
 * publishes not-ready addresses); a Service's cluster IPs are domains of
 * its virtual hosts; UDP container ports do not resolve a named target. */
static void test_pod_readiness_and_vips(void **state)
{
    (void)state;
    static const char mesh[] =
        "apiVersion: v1\nkind: Service\nmetadata: {name: shop, namespace: default}\n"
        "spec:\n  selector: {app: shop}\n  clusterIP: 10.96.0.10\n"
        "  clusterIPs: [10.96.0.10, \"fd00::10\"]\n  ports: [{name: http, port: 80}]\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ready, namespace: default, labels: "
        "{app: shop}}\nstatus:\n  podIP: 127.0.5.1\n  conditions: [{type: Ready, status: "
        "\"True\"}]\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: unready, namespace: default, labels: "
        "{app: shop}}\nstatus:\n  podIP: 127.0.5.2\n  conditions: [{type: Ready, status: "
        "\"False\"}]\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: done, namespace: default, labels: "
        "{app: shop}}\nstatus: {podIP: 127.0.5.3, phase: Succeeded}\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: leaving, namespace: default, "
        "labels: {app: shop}, deletionTimestamp: \"2024-01-01T00:00:00Z\"}\n"
        "status: {podIP: 127.0.5.4}\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: default, labels: "
        "{app: client}}\nstatus: {podIPs: [{ip: 127.0.5.9}]}\n";
    struct compiled c;
    compile_text(&c, mesh, "default", "client");
    if (c.cfg == NULL)
        dump_diags(&c.d);
    assert_non_null(c.cfg);
    const struct tr_cluster_cfg *cl = cluster(c.cfg, "outbound|80||shop.default.svc.cluster.local");
    assert_int_equal(cl->n_endpoints, 1);
    assert_string_equal(cl->endpoints[0].addr.text, "127.0.5.1:80");
    const struct tr_vhost_cfg *v = vhost(c.cfg, "80", "shop.default.svc.cluster.local:80");
    bool v4 = false, v4p = false, v6p = false;
    for (size_t i = 0; i < v->n_domains; i++) {
        v4 |= strcmp(v->domains[i], "10.96.0.10") == 0;
        v4p |= strcmp(v->domains[i], "10.96.0.10:80") == 0;
        v6p |= strcmp(v->domains[i], "[fd00::10]:80") == 0;
    }
    assert_true(v4 && v4p && v6p);
    assert_string_equal(c.cfg->node.workload, "client");
    compiled_free(&c);

    /* publishNotReadyAddresses: the unready and terminating ones too, never
     * a finished one (as the endpoints controller does) */
    char *pub = malloc(sizeof(mesh) + 64);
    assert_non_null(pub);
    const char *at = strstr(mesh, "  ports: [{name: http, port: 80}]");
    assert_non_null(at);
    snprintf(pub, sizeof(mesh) + 64, "%.*s  publishNotReadyAddresses: true\n%s", (int)(at - mesh),
             mesh, at);
    compile_text(&c, pub, "default", "client");
    assert_non_null(c.cfg);
    cl = cluster(c.cfg, "outbound|80||shop.default.svc.cluster.local");
    assert_int_equal(cl->n_endpoints, 3);
    for (size_t i = 0; i < cl->n_endpoints; i++)
        assert_string_not_equal(cl->endpoints[i].addr.text, "127.0.5.3:80");
    compiled_free(&c);
    free(pub);
}

static void test_registry_shared(void **state)
{
    (void)state;
    assert_true(compare_shared(VS_90_10, 5) >= 5);
    assert_true(compare_shared(EXT, 5) >= 5);
    /* every Istio file of the corpus next to the bookinfo pods */
    assert_int_equal(nftw(TR_SOURCE_ROOT "/../shared/corpus/istio", corpus_file, 16, FTW_PHYS), 0);
}

static size_t compare_shared(const char *extra, size_t min_models)
{
    {
        char *text = concat(BOOKINFO, extra);
        struct tr_diags d;
        tr_diags_init(&d);
        struct tr_rset *rs = tr_rset_from_buffer(text, strlen(text), "mesh.yaml", &d);
        assert_non_null(rs);
        struct tr_istio_options o = {.cert_dir = "/nonexistent"};
        struct tr_diags rd;
        tr_diags_init(&rd);
        struct tr_istio_registry *reg = tr_istio_registry_new(rs, &o, &rd);
        assert_non_null(reg);
        size_t n_pods = 0, compiled = 0;
        const struct tr_resource *const *pods = tr_rset_of_kind(rs, "", "Pod", &n_pods);
        for (size_t i = 0; i < n_pods; i++) {
            o.ns = pods[i]->ns ? pods[i]->ns : "default";
            o.name = pods[i]->name;
            struct tr_diags d1, d2;
            tr_diags_init(&d1);
            tr_diags_init(&d2);
            struct tr_config *a = tr_istio_compile(rs, &o, &d1);
            struct tr_config *b = tr_istio_compile_with(reg, &o, &d2);
            assert_int_equal(a != NULL, b != NULL);
            if (a != NULL) {
                size_t la, lb;
                char *ta = tr_config_write(a, TR_CONFIG_YAML, &la, NULL);
                char *tb = tr_config_write(b, TR_CONFIG_YAML, &lb, NULL);
                assert_non_null(ta);
                assert_non_null(tb);
                assert_string_equal(ta, tb);
                free(ta);
                free(tb);
                compiled++;
            }
            /* the shared compile reports what the full one does, minus the
             * registry's own findings */
            assert_int_equal(d2.n + rd.n, d1.n);
            tr_config_free(a);
            tr_config_free(b);
            tr_diags_free(&d1);
            tr_diags_free(&d2);
        }
        assert_true(compiled >= min_models);
        tr_istio_registry_free(reg);
        tr_diags_free(&rd);
        tr_rset_free(rs);
        tr_diags_free(&d);
        free(text);
        return compiled;
    }
}

/* Delegate VirtualServices (Istio's merge, pilot/pkg/model/virtualservice.go):
 * a root rule's matches combined with each delegate rule's; fields the
 * delegate leaves out come from the root; what Istio drops is reported. */
static const char VS_ROOT[] =
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    "metadata: {name: reviews, namespace: default}\n"
    "spec:\n  hosts: [reviews]\n  http:\n"
    "  - name: main\n"
    "    match: [{uri: {prefix: /api}, headers: {x-team: {exact: a}}}, {uri: {prefix: /old}}]\n"
    "    timeout: 3s\n"
    "    headers: {request: {set: {x-root: \"1\"}}}\n"
    "    delegate: {name: reviews-part, namespace: team}\n"
    "  - match: [{uri: {prefix: /gone}}]\n"
    "    delegate: {name: nothere}\n"
    "  - match: [{uri: {prefix: /hidden}}]\n"
    "    delegate: {name: private-part, namespace: team}\n"
    "  - route: [{destination: {host: reviews, subset: v1}}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    "metadata: {name: reviews-part, namespace: team}\n"
    "spec:\n  http:\n"
    /* narrows /api only (conflicts with /old): one route */
    "  - name: v2\n"
    "    match: [{uri: {prefix: /api/v2}, headers: {x-user: {exact: jason}}}]\n"
    "    timeout: 1s\n"
    "    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]\n"
    /* within no root block (an exact outside both prefixes): dropped */
    "  - match: [{uri: {exact: /elsewhere}}]\n"
    "    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]\n"
    /* no match: each root block */
    "  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    "metadata: {name: private-part, namespace: team}\n"
    "spec:\n  exportTo: [.]\n  http:\n"
    "  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]\n";

static void test_delegate(void **state)
{
    (void)state;
    char *text = concat(BOOKINFO, VS_ROOT);
    struct compiled c;
    compile_text(&c, text, "default", "productpage-1");
    dump_diags(&c.d);
    assert_non_null(c.cfg);
    assert_int_equal(c.d.n_errors, 0);
    const struct tr_vhost_cfg *v = vhost(c.cfg, "9080", "reviews.default.svc.cluster.local:9080");
    assert_int_equal(v->n_routes, 4);
    /* rule v2: its uri (under the root's /api), both blocks' headers, its
     * own timeout, the root's header edits */
    const struct tr_route_cfg *r = &v->routes[0];
    assert_string_equal(r->name, "default/reviews.main>team/reviews-part.v2");
    assert_string_equal(r->loc.origin.ns, "team");
    assert_string_equal(r->loc.origin.name, "reviews-part");
    assert_string_equal(r->loc.path, "spec.http[0].match[0]");
    assert_int_equal(r->path_kind, TR_PATH_PREFIX);
    assert_string_equal(r->path, "/api/v2");
    assert_int_equal(r->n_headers, 2);
    assert_string_equal(r->headers[0].name, "x-team");
    assert_string_equal(r->headers[1].name, "x-user");
    assert_int_equal(r->timeout_ms, 1000);
    assert_int_equal(r->request_headers.n_set, 1);
    assert_string_equal(r->request_headers.set[0].name, "x-root");
    assert_string_equal(r->clusters[0].cluster_name,
                        "outbound|9080|v2|reviews.default.svc.cluster.local");
    /* the third delegate rule (no match): once per root block, the root's
     * timeout; the second one was dropped */
    r = &v->routes[1];
    assert_string_equal(r->name, "default/reviews.main>team/reviews-part.http[2].match[0]");
    assert_string_equal(r->path, "/api");
    assert_int_equal(r->n_headers, 1);
    assert_int_equal(r->timeout_ms, 3000);
    assert_string_equal(r->loc.path, "spec.http[2]");
    assert_string_equal(v->routes[2].path, "/old");
    assert_string_equal(v->routes[2].clusters[0].cluster_name,
                        "outbound|9080|v3|reviews.default.svc.cluster.local");
    /* the missing and the unexported delegates: their rules dropped */
    assert_string_equal(v->routes[3].name, "default/reviews.http[3]");
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.http[0].delegate",
                         "match[0] of rule 1 of VirtualService team/reviews-part is within none"));
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.http[1].delegate",
                         "VirtualService default/nothere does not exist: this rule is dropped"));
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.http[2].delegate",
                         "VirtualService team/private-part is not exported to this namespace"));
    compiled_free(&c);
    free(text);

    /* One level only; a delegate without hosts takes no gateways or tcp;
     * a root rule takes no route next to its delegate. The refused
     * delegate is one Istio does not have: the root drops the rule. */
    static const char BAD[] =
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: reviews, namespace: default}\n"
        "spec:\n  hosts: [reviews]\n  http:\n"
        "  - delegate: {name: two}\n"
        "  - delegate: {name: gw}\n"
        "    route: [{destination: {host: reviews}}]\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: two, namespace: default}\n"
        "spec:\n  http:\n  - delegate: {name: gw}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: gw, namespace: default}\n"
        "spec:\n  gateways: [edge]\n  tcp: [{route: [{destination: {host: db.data}}]}]\n"
        "  http: [{route: [{destination: {host: reviews}}]}]\n";
    text = concat(BOOKINFO, BAD);
    compile_text(&c, text, "default", "productpage-1");
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.http[0].delegate",
                         "cannot delegate again (one level only"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.gateways",
                         "a delegate VirtualService (no hosts) cannot have gateways"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.tcp",
                         "a delegate VirtualService (no hosts) cannot have tcp"));
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "spec.http[1].route",
                         "a rule with delegate cannot have route"));
    compiled_free(&c);
    free(text);

    /* Conflicts as Istio judges them: an exact under an exact root must be
     * equal, a regex on either side conflicts, the case flags must agree;
     * the root's sourceNamespace binds the delegate's blocks. */
    static const char CONFLICTS[] =
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: reviews, namespace: default}\n"
        "spec:\n  hosts: [reviews]\n  http:\n"
        "  - match: [{uri: {exact: /a}}, {uri: {regex: /r.*}}, {uri: {prefix: /c}, "
        "ignoreUriCase: true}]\n"
        "    delegate: {name: part}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: part, namespace: default}\n"
        "spec:\n  http:\n"
        "  - match: [{uri: {exact: /a}}]\n" /* with /a only */
        "    route: [{destination: {host: reviews, subset: v1}}]\n"
        "  - match: [{uri: {exact: /b}}]\n" /* none: dropped */
        "    route: [{destination: {host: reviews, subset: v2}}]\n"
        "  - match: [{uri: {prefix: /c/d}, ignoreUriCase: true}]\n" /* with /c only */
        "    route: [{destination: {host: reviews, subset: v3}}]\n"
        "  - match: [{method: {exact: POST}}]\n" /* no uri: all three */
        "    route: [{destination: {host: reviews, subset: v2}}]\n";
    text = concat(BOOKINFO, CONFLICTS);
    compile_text(&c, text, "default", "productpage-1");
    dump_diags(&c.d);
    assert_int_equal(c.d.n_errors, 0);
    v = vhost(c.cfg, "9080", "reviews.default.svc.cluster.local:9080");
    /* /a; /c/d; POST x (/a, /r.*): the /c block differs in ignoreUriCase;
     * then the default route */
    assert_int_equal(v->n_routes, 5);
    assert_string_equal(v->routes[0].path, "/a");
    assert_int_equal(v->routes[0].path_kind, TR_PATH_EXACT);
    assert_string_equal(v->routes[1].path, "/c/d");
    assert_true(v->routes[1].path_ignore_case);
    assert_string_equal(v->routes[2].path, "/a");
    assert_int_equal(v->routes[2].n_methods, 1);
    assert_int_equal(v->routes[3].path_kind, TR_PATH_REGEX);
    assert_string_equal(v->routes[4].name, "default");
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "spec.http[0].delegate",
                         "match[0] of rule 1 of VirtualService default/part is within none"));
    compiled_free(&c);
    free(text);
}

/* Locality load balancing from the client's view: the client (Pod label
 * istio-locality) in r1/z1; endpoints in r1/z1 (label), r1/z2 (the Node's
 * topology labels) and r2 and r3 (WorkloadEntry locality). */
static const char LOCALITY_MESH[] =
    "apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: default, labels: {app: "
    "client, istio-locality: r1.z1}}\nspec: {serviceAccountName: client}\n"
    "status: {podIP: 10.0.0.1}\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: default}\n"
    "spec: {selector: {app: api}, ports: [{name: http, port: 80}]}\n"
    "---\napiVersion: v1\nkind: Node\nmetadata: {name: n2, labels: "
    "{topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z2}}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a1, namespace: default, labels: {app: api, "
    "istio-locality: r1.z1}}\nstatus: {podIP: 10.0.0.11}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a2, namespace: default, labels: {app: api, "
    "tier: gold}}\nspec: {nodeName: n2}\nstatus: {podIP: 10.0.0.12}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a3, "
    "namespace: default}\nspec: {address: 10.0.0.13, labels: {app: api}, locality: r2/z1}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a4, "
    "namespace: default}\nspec: {address: 10.0.0.14, labels: {app: api}, locality: r3/z1}\n";

/* The priorities of the api cluster's endpoints a1..a4, compiled with lb
 * (the DestinationRule's loadBalancer, "" for none) and outlier detection. */
static void locality_prios(const char *lb, bool outlier, uint32_t *prio,
                           const struct tr_cluster_cfg **out, struct compiled *c)
{
    char dr[1024];
    snprintf(dr, sizeof(dr),
             "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: "
             "api, namespace: default}\nspec:\n  host: api\n  trafficPolicy:\n%s%s",
             outlier ? "    outlierDetection: {consecutive5xxErrors: 3}\n" : "", lb);
    char *text = concat(LOCALITY_MESH, dr);
    compile_text(c, text, "default", "client");
    free(text);
    if (c->cfg == NULL)
        dump_diags(&c->d);
    assert_non_null(c->cfg);
    const struct tr_cluster_cfg *cl = cluster(c->cfg, "outbound|80||api.default.svc.cluster.local");
    for (size_t i = 0; i < 4; i++)
        prio[i] = UINT32_MAX;
    for (size_t i = 0; i < cl->n_endpoints; i++) {
        const char *a = cl->endpoints[i].addr.text;
        prio[a[strlen(a) - 4] - '1'] = cl->endpoints[i].priority; /* 10.0.0.1N:80 */
    }
    *out = cl;
}

static void test_locality_failover(void **state)
{
    (void)state;
    struct compiled c;
    const struct tr_cluster_cfg *cl;
    uint32_t p[4];
    /* No outlier detection: no failover (Istio), localities still shown. */
    locality_prios("    loadBalancer: {simple: ROUND_ROBIN}\n", false, p, &cl, &c);
    assert_int_equal(p[0] + p[1] + p[2] + p[3], 0);
    assert_string_equal(cl->endpoints[0].locality, "r1/z1");
    assert_string_equal(cl->endpoints[1].locality, "r1/z2");
    assert_string_equal(cl->endpoints[2].locality, "r2/z1");
    compiled_free(&c);
    /* The mesh default: same zone 0, same region 1, other regions 2. */
    locality_prios("", true, p, &cl, &c);
    assert_int_equal(p[0], 0);
    assert_int_equal(p[1], 1);
    assert_int_equal(p[2], 2);
    assert_int_equal(p[3], 2);
    compiled_free(&c);
    /* failover r1 -> r3: r2 drops below r3. */
    locality_prios(
        "    loadBalancer:\n      localityLbSetting:\n        failover: [{from: r1, to: r3}]\n",
        true, p, &cl, &c);
    assert_int_equal(p[0], 0);
    assert_int_equal(p[1], 1);
    assert_int_equal(p[3], 2);
    assert_int_equal(p[2], 3);
    compiled_free(&c);
    /* failoverPriority by a label value: tier=gold first, then the rest. */
    locality_prios("    loadBalancer:\n      localityLbSetting:\n        failoverPriority: "
                   "[tier=gold]\n",
                   true, p, &cl, &c);
    assert_int_equal(p[1], 0);
    assert_int_equal(p[0], 1);
    assert_int_equal(p[2], 1);
    compiled_free(&c);
    /* failoverPriority with the region label: the client's region first. */
    locality_prios("    loadBalancer:\n      localityLbSetting:\n        failoverPriority: "
                   "[topology.kubernetes.io/region]\n",
                   true, p, &cl, &c);
    assert_int_equal(p[0] + p[1], 0);
    assert_int_equal(p[2], 1);
    assert_int_equal(p[3], 1);
    compiled_free(&c);
    /* enabled: false turns it all off. */
    locality_prios("    loadBalancer:\n      localityLbSetting: {enabled: false}\n", true, p, &cl,
                   &c);
    assert_int_equal(p[0] + p[1] + p[2] + p[3], 0);
    compiled_free(&c);
}

static void test_locality_distribute_and_warmup(void **state)
{
    (void)state;
    struct compiled c;
    const struct tr_cluster_cfg *cl;
    uint32_t p[4];
    /* 80 % to r1 (shared by its two localities by weight), 20 % to r2; r3
     * is named by no target: its endpoint goes. */
    locality_prios("    loadBalancer:\n      simple: ROUND_ROBIN\n"
                   "      warmup: {duration: 30s, minimumPercent: 5, aggression: 2}\n"
                   "      localityLbSetting:\n        distribute:\n"
                   "        - from: r1/z1/*\n          to: {\"r1/*\": 80, r2/z1: 20}\n",
                   true, p, &cl, &c);
    assert_int_equal(cl->n_endpoints, 3);
    assert_int_equal(p[3], UINT32_MAX);
    assert_int_equal(cl->n_locality_weights, 3);
    for (size_t i = 0; i < cl->n_locality_weights; i++) {
        const struct tr_locality_weight_cfg *w = &cl->locality_weights[i];
        assert_int_equal(w->weight, strcmp(w->locality, "r2/z1") == 0 ? 20 : 40);
    }
    assert_int_equal(cl->warmup.duration_ms, 30000);
    assert_int_equal(cl->warmup.min_per_million, 50000);
    assert_int_equal(cl->warmup.aggression, 20000);
    compiled_free(&c);
    /* The deprecated warmupDurationSecs, Envoy's defaults for the rest; the
     * default LEAST_REQUEST takes it, RANDOM does not (a warning). */
    locality_prios("    loadBalancer: {warmupDurationSecs: 10s}\n", false, p, &cl, &c);
    assert_int_equal(cl->warmup.duration_ms, 10000);
    assert_int_equal(cl->warmup.min_per_million, 100000);
    assert_int_equal(cl->warmup.aggression, 10000);
    compiled_free(&c);
    locality_prios("    loadBalancer: {simple: RANDOM, warmupDurationSecs: 10s}\n", false, p, &cl,
                   &c);
    assert_int_equal(cl->warmup.duration_ms, 0);
    assert_true(has_diag(&c.d, TR_DIAG_WARNING,
                         "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
                         "ROUND_ROBIN and LEAST_REQUEST only"));
    compiled_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_routes),
        cmocka_unit_test(test_weighted_and_header_routes),
        cmocka_unit_test(test_dr_pool_and_retry_budget),
        cmocka_unit_test(test_delegate),
        cmocka_unit_test(test_findings_name_the_field),
        cmocka_unit_test(test_errors_refuse_the_resource),
        cmocka_unit_test(test_request_authentication),
        cmocka_unit_test(test_request_authentication_jwks_uri),
        cmocka_unit_test(test_sidecar_scope_and_registry_only),
        cmocka_unit_test(test_deterministic_and_loadable),
        cmocka_unit_test(test_capture),
        cmocka_unit_test(test_capture_destination_subnets),
        cmocka_unit_test(test_sidecar_ingress),
        cmocka_unit_test(test_mirror_to_grpc_is_dropped),
        cmocka_unit_test(test_unknown_workload),
        cmocka_unit_test(test_dr_tls_origination),
        cmocka_unit_test(test_dr_tls_refusals),
        cmocka_unit_test(test_gateway_tls),
        cmocka_unit_test(test_tls_routes_mesh),
        cmocka_unit_test(test_tls_passthrough_gateway),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_service_entry_endpoints_first),
        cmocka_unit_test(test_pod_readiness_and_vips),
        cmocka_unit_test(test_locality_failover),
        cmocka_unit_test(test_locality_distribute_and_warmup),
        cmocka_unit_test(test_mesh_path_normalization),
        cmocka_unit_test(test_registry_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
