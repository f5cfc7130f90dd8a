/* Unit tests for dialect/istio/change.c: a change's hosts against the hosts
 * a model names. The property under test is the control plane's: a
 * workload whose model a change alters is always one the change reaches
 * (every workload is compiled before and after, in full, and compared).
 * Then precision: the narrow changes (endpoints, a canary's weights, a
 * DestinationRule) leave the workloads that do not route to the host
 * alone. Then every document of every Istio file of the corpus, taken out
 * and put back, next to a small mesh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "config/write.h"
#include "dialect/istio/istio.h"

#ifndef TR_SOURCE_ROOT
#define TR_SOURCE_ROOT "."
#endif

/* reviews (3 versions, subsets), ratings, details, productpage in default;
 * client-1 scoped by a Sidecar to ratings only; shop in prod, whose
 * namespace Sidecar keeps it to prod. */
static const char MESH[] =
    "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n"
    "spec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: default}\n"
    "spec:\n  selector: {app: ratings}\n  ports: [{name: http, port: 9080}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n"
    "spec:\n  ports: [{name: http, port: 9080}]\n"
    "---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: details, namespace: default}\n"
    "subsets:\n- addresses: [{ip: 127.0.2.1}, {ip: 127.0.2.2}]\n  ports: [{name: http, port: "
    "9080}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: productpage, namespace: default}\n"
    "spec:\n  selector: {app: productpage}\n  ports: [{name: http, port: 9080}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: client, namespace: default}\n"
    "spec:\n  selector: {app: client}\n  ports: [{name: http, port: 80}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: shop, namespace: prod}\n"
    "spec:\n  ports: [{name: http, port: 8080}]\n"
    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    "metadata: {name: shop-1, namespace: prod, labels: {kubernetes.io/service-name: shop}}\n"
    "addressType: IPv4\nports: [{name: http, port: 8080}]\n"
    "endpoints: [{addresses: [127.0.3.1]}]\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: productpage-1, namespace: default, labels: "
    "{app: productpage, version: v1}}\nstatus: {podIP: 127.0.1.10}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v1, namespace: default, labels: "
    "{app: reviews, version: v1}}\nstatus: {podIP: 127.0.1.1}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v2, namespace: default, labels: "
    "{app: reviews, version: v2}}\nstatus: {podIP: 127.0.1.2}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v3, namespace: default, labels: "
    "{app: reviews, version: v3}}\nstatus: {podIP: 127.0.1.3}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ratings-v1, namespace: default, labels: "
    "{app: ratings, version: v1}}\nstatus: {podIP: 127.0.1.4}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: client-1, namespace: default, labels: "
    "{app: client}}\nstatus: {podIP: 127.0.1.20}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: shop-1, namespace: prod, labels: "
    "{app: shop}}\nstatus: {podIP: 127.0.3.1}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n"
    "metadata: {name: client, namespace: default}\n"
    "spec:\n  workloadSelector: {labels: {app: client}}\n"
    "  egress: [{hosts: [./ratings.default.svc.cluster.local]}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n"
    "metadata: {name: default, namespace: prod}\nspec:\n  egress: [{hosts: [./*]}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
    "metadata: {name: reviews, namespace: default}\n"
    "spec:\n  host: reviews\n"
    "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
    "  - {name: v3, labels: {version: v3}}\n";

/* productpage's canary; its mirror names details, so a change of details
 * reaches the models that route to reviews too. */
static const char VS_REVIEWS[] =
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    "metadata: {name: reviews, namespace: default}\n"
    "spec:\n  hosts: [reviews]\n  http:\n"
    "  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: %d\n"
    "    - destination: {host: reviews, subset: v3}\n      weight: %d\n"
    "    mirror: {host: details}\n";

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    assert_non_null(s);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

/* text with its (one) occurrence of from replaced by to; malloc'd */
static char *replaced(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    assert_non_null(at);
    size_t n = strlen(text) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    assert_non_null(out);
    snprintf(out, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    return out;
}

static char *vs_reviews(int w1)
{
    char buf[sizeof(VS_REVIEWS) + 16];
    snprintf(buf, sizeof(buf), VS_REVIEWS, w1, 100 - w1);
    return concat(MESH, buf);
}

struct outcome {
    bool any;       /* the change was "any" */
    bool kept;      /* the registry of before serves after (rebound and compared) */
    size_t checked; /* workloads compared (a good model before) */
    size_t altered; /* of those, whose model the change altered */
    size_t reached; /* of those, that the change reaches */
    char reached_names[512];
};

static char *model_text(const struct tr_istio_registry *reg, const char *ns, const char *name,
                        struct tr_config **cfg_out, bool *errors)
{
    struct tr_istio_options o = {.ns = ns, .name = name, .cert_dir = "/nonexistent"};
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_config *cfg = tr_istio_compile_with(reg, &o, &d);
    *errors = d.n_errors > 0;
    tr_diags_free(&d);
    char *text = NULL;
    if (cfg != NULL) {
        size_t len;
        text = tr_config_write(cfg, TR_CONFIG_YAML, &len, NULL);
        assert_non_null(text);
    }
    if (cfg_out != NULL)
        *cfg_out = cfg;
    else
        tr_config_free(cfg);
    return text;
}

/* Compiles every Pod of before and after; fails if a model the change
 * alters is one it does not reach. */
static void check(const char *before, const char *after, struct outcome *out)
{
    *out = (struct outcome){0};
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rb = tr_rset_from_buffer(before, strlen(before), "mesh.yaml", &d);
    struct tr_rset *ra = tr_rset_from_buffer(after, strlen(after), "mesh.yaml", &d);
    assert_non_null(rb);
    assert_non_null(ra);
    struct tr_istio_hosts ch;
    size_t n_objects = 0;
    bool kept = false;
    assert_true(tr_istio_change_hosts(rb, ra, &ch, &n_objects, &kept));
    out->any = ch.any;
    out->kept = kept;
    if (ch.any && !kept) { /* every workload is compiled again: nothing to check */
        tr_istio_hosts_free(&ch);
        tr_rset_free(rb);
        tr_rset_free(ra);
        tr_diags_free(&d);
        return;
    }
    struct tr_istio_options ro = {.cert_dir = "/nonexistent"};
    struct tr_istio_registry *gb = tr_istio_registry_new(rb, &ro, &d);
    struct tr_istio_registry *ga = tr_istio_registry_new(ra, &ro, &d);
    assert_non_null(gb);
    assert_non_null(ga);
    /* kept: a registry of before rebound to after (its edited endpoints
     * read again into it: a registry of its own, gb stays before's)
     * compiles every model as after's own registry does */
    struct tr_istio_registry *gk = kept ? tr_istio_registry_new(rb, &ro, &d) : NULL;
    struct tr_istio_registry *gr = kept ? tr_istio_registry_rebind(gk, rb, ra) : NULL;
    if (kept)
        assert_non_null(gr);
    size_t n;
    const struct tr_resource *const *pods = tr_rset_of_kind(rb, "", "Pod", &n);
    for (size_t i = 0; i < n; i++) {
        const char *ns = pods[i]->ns ? pods[i]->ns : "default";
        struct tr_config *cfg = NULL;
        bool eb, ea;
        char *tb = model_text(gb, ns, pods[i]->name, &cfg, &eb);
        char *ta = model_text(ga, ns, pods[i]->name, NULL, &ea);
        if (gr != NULL) {
            bool er;
            char *tr = model_text(gr, ns, pods[i]->name, NULL, &er);
            assert_int_equal(tr != NULL, ta != NULL);
            if (ta != NULL)
                assert_string_equal(tr, ta);
            assert_int_equal(er, ea);
            free(tr);
        }
        /* the control plane compiles a workload without a good model at
         * every change: nothing to decide for it */
        if (cfg != NULL && !eb) {
            struct tr_istio_hosts mh;
            assert_true(tr_istio_model_hosts(cfg, &mh));
            bool reached = tr_istio_hosts_meet(&mh, &ch);
            bool altered = ta == NULL || strcmp(tb, ta) != 0;
            if (altered && !reached)
                fail_msg("the model of %s/%s changed, but the change (%zu objects, %zu hosts) "
                         "does not reach it",
                         ns, pods[i]->name, n_objects, ch.n);
            out->checked++;
            out->altered += altered;
            out->reached += reached;
            if (reached) {
                size_t l = strlen(out->reached_names);
                snprintf(out->reached_names + l, sizeof(out->reached_names) - l, "%s%s",
                         l ? " " : "", pods[i]->name);
            }
            tr_istio_hosts_free(&mh);
        }
        tr_config_free(cfg);
        free(tb);
        free(ta);
    }
    tr_istio_registry_free(gr);
    tr_istio_registry_free(gk);
    tr_istio_registry_free(gb);
    tr_istio_registry_free(ga);
    tr_istio_hosts_free(&ch);
    tr_rset_free(rb);
    tr_rset_free(ra);
    tr_diags_free(&d);
}

static void test_canary_weights(void **state)
{
    (void)state;
    char *b = vs_reviews(90), *a = vs_reviews(80);
    struct outcome o;
    check(b, a, &o);
    assert_false(o.any);
    assert_true(o.kept); /* a route edited in place: the registry is kept */
    assert_int_equal(o.checked, 7);
    /* the sidecars that route to reviews: not client-1 (ratings only), not
     * shop-1 (prod only) */
    assert_string_equal(o.reached_names,
                        "productpage-1 reviews-v1 reviews-v2 reviews-v3 ratings-v1");
    assert_int_equal(o.altered, 5);
    free(b);
    free(a);
}

/* A root VirtualService for ratings whose /reviews rule delegates to
 * team/reviews-part (no hosts), which splits between reviews v1 and v3. */
static const char VS_DELEGATE[] =
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    "metadata: {name: ratings, namespace: default}\n"
    "spec:\n  hosts: [ratings]\n  http:\n"
    "  - match: [{uri: {prefix: /reviews}}]\n"
    "    delegate: {name: reviews-part, namespace: team}\n"
    "  - route: [{destination: {host: ratings}}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    "metadata: {name: reviews-part, namespace: team}\n"
    "spec:\n  http:\n"
    "  - route:\n"
    "    - destination: {host: reviews.default.svc.cluster.local, subset: v1}\n"
    "      weight: %d\n"
    "    - destination: {host: reviews.default.svc.cluster.local, subset: v3}\n"
    "      weight: %d\n";

static char *vs_delegate(int w1)
{
    char buf[sizeof(VS_DELEGATE) + 16];
    snprintf(buf, sizeof(buf), VS_DELEGATE, w1, 100 - w1);
    return concat(MESH, buf);
}

static void test_delegate(void **state)
{
    (void)state;
    /* A delegate has no hosts: its edit reaches the models of its root's
     * host (ratings), client-1's too (its Sidecar keeps ratings), and
     * every model it alters. */
    char *b = vs_delegate(90), *a = vs_delegate(80);
    struct outcome o;
    check(b, a, &o);
    assert_false(o.any);
    assert_true(o.altered > 0);
    assert_non_null(strstr(o.reached_names, "client-1"));
    assert_null(strstr(o.reached_names, "shop-1"));
    free(a);
    /* the delegate gone (the root's rule dropped), and back */
    a = replaced(b, "name: reviews-part, namespace: team}\nspec",
                 "name: reviews-other, namespace: team}\nspec");
    check(b, a, &o);
    assert_false(o.any);
    assert_true(o.altered > 0);
    check(a, b, &o);
    assert_false(o.any);
    assert_true(o.altered > 0);
    free(a);
    /* the root names another delegate */
    a = replaced(b, "delegate: {name: reviews-part", "delegate: {name: reviews-other");
    check(b, a, &o);
    assert_false(o.any);
    assert_true(o.altered > 0);
    free(a);
    /* a delegate no root names: nothing reached */
    a = replaced(b, "namespace: team}\n  - route", "namespace: elsewhere}\n  - route");
    char *c = replaced(a, "weight: 90", "weight: 70");
    check(a, c, &o);
    assert_false(o.any);
    assert_int_equal(o.reached, 0);
    assert_int_equal(o.altered, 0);
    free(c);
    free(a);
    free(b);
}

static void test_endpoints(void **state)
{
    (void)state;
    /* details gets a third address: the mirror makes it every model that
     * routes to reviews, and details' own */
    char *b = vs_reviews(90);
    char *a = replaced(b, "{ip: 127.0.2.2}]", "{ip: 127.0.2.2}, {ip: 127.0.2.3}]");
    struct outcome o;
    check(b, a, &o);
    assert_false(o.any);
    assert_true(o.kept); /* an Endpoints object edited in place: read again into it */
    assert_int_equal(o.altered, 5);
    assert_string_equal(o.reached_names,
                        "productpage-1 reviews-v1 reviews-v2 reviews-v3 ratings-v1");
    free(b);
    free(a);

    /* an EndpointSlice of prod's shop: not client-1 (ratings only) */
    b = concat(MESH, "");
    a = replaced(b, "endpoints: [{addresses: [127.0.3.1]}]",
                 "endpoints: [{addresses: [127.0.3.1]}, {addresses: [127.0.3.2]}]");
    check(b, a, &o);
    assert_false(o.any);
    assert_string_equal(o.reached_names,
                        "productpage-1 reviews-v1 reviews-v2 reviews-v3 ratings-v1 shop-1");
    assert_int_equal(o.altered, 6);
    free(b);
    free(a);
}

static void test_destination_rule(void **state)
{
    (void)state;
    char *b = concat(MESH, "");
    char *a = concat(MESH, "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                           "metadata: {name: ratings, namespace: default}\n"
                           "spec:\n  host: ratings.default.svc.cluster.local\n"
                           "  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n");
    struct outcome o;
    check(b, a, &o);
    assert_false(o.any);
    assert_false(o.kept); /* a new object: places in the load order move */
    /* everyone in default routes to ratings (client-1 only there); shop-1
     * does not */
    assert_int_equal(o.checked, 7);
    assert_int_equal(o.reached, 6);
    assert_int_equal(o.altered, 6);
    assert_null(strstr(o.reached_names, "shop-1"));
    free(b);
    free(a);
}

/* A DestinationRule edited in place: the registry is kept, and a registry
 * rebound to the new snapshot compiles what a new one would (check()). */
static void test_rule_edited_in_place(void **state)
{
    (void)state;
    char *a = replaced(MESH, "  host: reviews\n",
                       "  host: reviews\n  trafficPolicy: {loadBalancer: {simple: RANDOM}, "
                       "connectionPool: {tcp: {maxConnections: 3}}}\n");
    struct outcome o;
    check(MESH, a, &o);
    assert_false(o.any);
    assert_true(o.kept);
    assert_int_equal(o.altered, 5);
    free(a);
}

/* A workload's own Service: its routes and endpoints are its callers'
 * business, but its DestinationRule's connection pool is its inbound
 * side's too. client-1 serves client but routes only to ratings. */
static void test_own_service(void **state)
{
    (void)state;
    char *b = concat(MESH, "");
    char *a = concat(MESH, "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                           "metadata: {name: client, namespace: default}\n"
                           "spec:\n  host: client\n"
                           "  trafficPolicy:\n    loadBalancer: {simple: RANDOM}\n"
                           "    connectionPool: {tcp: {maxConnections: 7}}\n"
                           "    tls: {mode: ISTIO_MUTUAL}\n"
                           "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                           "metadata: {name: client, namespace: default}\n"
                           "spec:\n  hosts: [client]\n  http:\n"
                           "  - route: [{destination: {host: client}}]\n    timeout: 3s\n"
                           "---\napiVersion: v1\nkind: Endpoints\n"
                           "metadata: {name: client, namespace: default}\n"
                           "subsets:\n- addresses: [{ip: 127.0.1.21}]\n"
                           "  ports: [{name: http, port: 80}]\n");
    struct outcome o;
    check(b, a, &o);
    assert_false(o.any);
    /* client-1 too: its inbound cluster takes the rule's connection pool
     * (Istio's inbound default without a Sidecar's). */
    assert_non_null(strstr(o.reached_names, "client-1"));
    assert_int_equal(o.reached, 6); /* everyone in default (prod sees only prod) */
    free(a);
    /* Its VirtualService and Endpoints alone are its callers' business. */
    a = concat(MESH, "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                     "metadata: {name: client, namespace: default}\n"
                     "spec:\n  hosts: [client]\n  http:\n"
                     "  - route: [{destination: {host: client}}]\n    timeout: 3s\n"
                     "---\napiVersion: v1\nkind: Endpoints\n"
                     "metadata: {name: client, namespace: default}\n"
                     "subsets:\n- addresses: [{ip: 127.0.1.21}]\n"
                     "  ports: [{name: http, port: 80}]\n");
    check(b, a, &o);
    assert_false(o.any);
    assert_null(strstr(o.reached_names, "client-1"));
    assert_int_equal(o.reached, 5);
    free(b);
    free(a);
}

/* A route to a subset no DestinationRule defines names no cluster (503),
 * so the model does not name that host: defining the subset later must
 * reach it all the same (found in review: a sidecar scoped away from the
 * destination, and a gateway). */
static void test_subset_defined_later(void **state)
{
    (void)state;
    static const char VS_V4[] = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                                "metadata: {name: ratings, namespace: default}\n"
                                "spec:\n  hosts: [ratings]\n  http:\n"
                                "  - route: [{destination: {host: reviews, subset: v4}}]\n";
    static const char GW[] =
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: gw-1, namespace: default, labels: "
        "{istio: ingressgateway}}\nstatus: {podIP: 127.0.1.30}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\n"
        "metadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n"
        "  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: [\"*\"]}]\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: edge, namespace: default}\n"
        "spec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n"
        "  - route: [{destination: {host: reviews, subset: v4, port: {number: 9080}}}]\n";
    const char *extras[] = {VS_V4, GW};
    for (size_t i = 0; i < 2; i++) {
        char *b = concat(MESH, extras[i]);
        char *a = replaced(b, "  - {name: v3, labels: {version: v3}}\n",
                           "  - {name: v3, labels: {version: v3}}\n"
                           "  - {name: v4, labels: {version: v3}}\n");
        struct outcome o;
        check(b, a, &o); /* fails if a model changed that the change does not reach */
        assert_true(o.any);
        free(b);
        free(a);
    }
}

/* What the change cannot narrow: any workload may be reached. */
static void test_any(void **state)
{
    (void)state;
    static const char *const extra[] = {
        /* a VirtualService of a gateway */
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: edge, namespace: default}\nspec:\n  hosts: [reviews]\n"
        "  gateways: [default/edge]\n  http: [{route: [{destination: {host: reviews}}]}]\n",
        /* a host no Service has */
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: ext, namespace: default}\nspec:\n  hosts: [api.example.com]\n"
        "  http: [{route: [{destination: {host: reviews}}]}]\n",
        /* a wildcard DestinationRule */
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: all, namespace: default}\n"
        "spec:\n  host: \"*.default.svc.cluster.local\"\n"
        "  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n",
        /* a Service, a Pod, a policy */
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: default}\n"
        "spec:\n  selector: {app: client}\n  ports: [{name: http, port: 80}]\n",
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n",
    };
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        char *a = concat(MESH, extra[i]);
        struct outcome o;
        check(MESH, a, &o);
        assert_true(o.any);
        free(a);
    }
    /* nothing changed: nothing reached */
    struct outcome o;
    check(MESH, MESH, &o);
    assert_false(o.any);
    assert_int_equal(o.reached, 0);
    assert_int_equal(o.altered, 0);
}

/* ----------------------------------------------------- the corpus */

static size_t corpus_checked, corpus_narrow, corpus_kept;

/* Every document of the file, taken out of MESH + file and put back. */
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
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* documents start at lines beginning with "---" */
    const char *starts[256];
    size_t n_docs = 0;
    starts[n_docs++] = buf;
    for (const char *p = buf; (p = strstr(p, "\n---")) != NULL && n_docs < 255; p++)
        starts[n_docs++] = p + 1;
    starts[n_docs] = buf + n;
    char *full = malloc(sizeof(MESH) + n + 8), *less = malloc(sizeof(MESH) + n + 8);
    assert_non_null(full);
    assert_non_null(less);
    snprintf(full, sizeof(MESH) + n + 8, "%s\n---\n%s", MESH, buf);
    for (size_t i = 0; i < n_docs; i++) {
        int cut = (int)(starts[i + 1] - starts[i]);
        snprintf(less, sizeof(MESH) + n + 8, "%s\n---\n%.*s%s", MESH, (int)(starts[i] - buf), buf,
                 starts[i] + cut);
        struct outcome o;
        check(less, full, &o);
        corpus_checked += o.checked;
        corpus_narrow += !o.any && o.checked > 0;
        corpus_kept += o.kept && o.checked > 0;
        check(full, less, &o);
        corpus_checked += o.checked;
        corpus_kept += o.kept && o.checked > 0;
    }
    free(full);
    free(less);
    free(buf);
    return 0;
}

static void test_corpus(void **state)
{
    (void)state;
    assert_int_equal(nftw(TR_SOURCE_ROOT "/../shared/corpus/istio", corpus_file, 16, FTW_PHYS), 0);
    /* the sweep compared models, and some changes were narrow ones */
    print_message("corpus: %zu models compared, %zu narrow changes, %zu with the registry kept\n",
                  corpus_checked, corpus_narrow, corpus_kept);
    assert_true(corpus_checked > 1000);
    assert_true(corpus_narrow > 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canary_weights),
        cmocka_unit_test(test_delegate),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_destination_rule),
        cmocka_unit_test(test_own_service),
        cmocka_unit_test(test_rule_edited_in_place),
        cmocka_unit_test(test_subset_defined_later),
        cmocka_unit_test(test_any),
        cmocka_unit_test(test_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
