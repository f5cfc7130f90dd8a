/* Unit tests for PeerAuthentication (dialect/istio/peer_auth.c): the inbound
 * mTLS mode of each listener of the compiled workload, by scope, precedence,
 * age, UNSET inheritance and portLevelMtls; findings by resource, path and
 * message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "core/diag.h"
#include "dialect/istio/istio.h"
#include "resource/resource.h"

/* web-1 in shop serves 8080 (http) and 8081 (http-admin) through Service web;
 * api-1 in shop is another workload. */
static const char MESH[] =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"
    "spec:\n  selector: {app: web}\n"
    "  ports: [{name: http, port: 80, targetPort: 8080}, "
    "{name: http-admin, port: 81, targetPort: 8081}]\n"
    "---\napiVersion: v1\nkind: Pod\n"
    "metadata: {name: web-1, namespace: shop, labels: {app: web, tier: front}}\n"
    "spec: {serviceAccountName: web}\nstatus: {podIP: 127.0.2.1}\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\n"
    "spec:\n  selector: {app: api}\n  ports: [{name: http, port: 90, targetPort: 9090}]\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: api-1, namespace: shop, labels: {app: api}}\n"
    "spec: {serviceAccountName: api}\nstatus: {podIP: 127.0.2.2}\n";

struct compiled {
    struct tr_rset *rs;
    struct tr_config *cfg;
    struct tr_diags d;
};

/* MESH plus the policies in extra, compiled for shop/NAME. */
static void compile(struct compiled *c, const char *extra, const char *name)
{
    size_t la = strlen(MESH), lb = strlen(extra);
    char *text = malloc(la + lb + 1);
    assert_non_null(text);
    memcpy(text, MESH, la);
    memcpy(text + la, extra, lb + 1);
    tr_diags_init(&c->d);
    c->rs = tr_rset_from_buffer(text, la + lb, "mesh.yaml", &c->d);
    free(text);
    assert_non_null(c->rs);
    struct tr_istio_options o = {.ns = "shop", .name = name, .cert_dir = "/nonexistent"};
    c->cfg = tr_istio_compile(c->rs, &o, &c->d);
}

static void compiled_free(struct compiled *c)
{
    tr_config_free(c->cfg);
    tr_rset_free(c->rs);
    tr_diags_free(&c->d);
}

static void dump_diags(const struct tr_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        char b[1024];
        tr_diag_format(&d->v[i], b, sizeof(b));
        fprintf(stderr, "  %s\n", b);
    }
}

/* The mode of the inbound listener for a target port. */
static enum tr_tls_mode mode_of(const struct compiled *c, unsigned port)
{
    if (c->cfg == NULL) {
        dump_diags(&c->d);
        fail_msg("no model");
    }
    char name[32];
    snprintf(name, sizeof(name), "inbound|%u", port);
    for (size_t i = 0; i < c->cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &c->cfg->listeners[i];
        if (strcmp(l->name, name) == 0) {
            /* the model's rule: a context exactly when TLS is possible */
            assert_true((l->tls_mode == TR_TLS_DISABLE) == (l->tls_name == NULL));
            return l->tls_mode;
        }
    }
    fail_msg("no listener %s", name);
    return TR_TLS_DISABLE;
}

/* A finding of sev about resource NS/NAME, at path (NULL: any) and holding
 * needle. */
static bool has_diag(const struct tr_diags *d, enum tr_diag_severity sev, const char *res,
                     const char *path, const char *needle)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct tr_diag *g = &d->v[i];
        char who[256];
        snprintf(who, sizeof(who), "%s/%s", g->where.ns ? g->where.ns : "",
                 g->where.name ? g->where.name : "");
        if (g->severity == sev && strcmp(who, res) == 0 &&
            (path == NULL || (g->where.path && strcmp(g->where.path, path) == 0)) &&
            strstr(g->msg, needle) != NULL)
            return true;
    }
    return false;
}

static void assert_clean(const struct compiled *c)
{
    if (c->d.n_errors + c->d.n_warnings != 0)
        dump_diags(&c->d);
    assert_int_equal(c->d.n_errors + c->d.n_warnings, 0);
}

#define PA(api, ns, name, ts, spec)                                                                \
    "---\napiVersion: security.istio.io/" api "\nkind: PeerAuthentication\n"                       \
    "metadata: {name: " name ", namespace: " ns ts "}\nspec: " spec "\n"

/* Nothing says: PERMISSIVE, Istio's default. */
static void test_default_is_permissive(void **state)
{
    (void)state;
    struct compiled c;
    compile(&c, "", "web-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_PERMISSIVE);
    assert_int_equal(mode_of(&c, 8081), TR_TLS_PERMISSIVE);
    compiled_free(&c);
}

/* Mesh (root namespace), then namespace, then workload: the narrowest set
 * mode wins. */
static void test_scopes_and_precedence(void **state)
{
    (void)state;
    struct compiled c;
    compile(&c, PA("v1", "istio-system", "default", "", "{mtls: {mode: STRICT}}"), "web-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_STRICT);
    assert_int_equal(mode_of(&c, 8081), TR_TLS_STRICT);
    assert_int_equal(c.cfg->n_tls, 1); /* STRICT needs the mesh certificate */
    compiled_free(&c);

    compile(&c,
            PA("v1", "istio-system", "default", "", "{mtls: {mode: STRICT}}")
                PA("v1", "shop", "default", "", "{mtls: {mode: DISABLE}}"),
            "web-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_DISABLE);
    compiled_free(&c);

    compile(&c,
            PA("v1", "istio-system", "default", "", "{mtls: {mode: STRICT}}")
                PA("v1", "shop", "default", "", "{mtls: {mode: DISABLE}}")
                    PA("v1", "shop", "web", "",
                       "{selector: {matchLabels: {app: web}}, mtls: {mode: PERMISSIVE}}"),
            "web-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_PERMISSIVE);
    assert_int_equal(mode_of(&c, 8081), TR_TLS_PERMISSIVE);
    compiled_free(&c);

    /* the workload policy is web's alone; api keeps the namespace's */
    compile(&c,
            PA("v1", "istio-system", "default", "", "{mtls: {mode: STRICT}}")
                PA("v1", "shop", "default", "", "{mtls: {mode: DISABLE}}")
                    PA("v1", "shop", "web", "",
                       "{selector: {matchLabels: {app: web}}, mtls: {mode: PERMISSIVE}}"),
            "api-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 9090), TR_TLS_DISABLE);
    compiled_free(&c);
}

/* Policies of other namespaces, selectors that do not match and selectors in
 * the root namespace do not apply (the last is reported). */
static void test_what_does_not_apply(void **state)
{
    (void)state;
    struct compiled c;
    compile(&c,
            PA("v1", "other", "default", "", "{mtls: {mode: STRICT}}")
                PA("v1", "other", "web", "",
                   "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}")
                    PA("v1", "shop", "web-v2", "",
                       "{selector: {matchLabels: {app: web, tier: back}}, mtls: {mode: STRICT}}")
                        PA("v1", "istio-system", "web", "",
                           "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}"),
            "web-1");
    assert_int_equal(c.d.n_errors, 0);
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "istio-system/web", "spec.selector",
                         "applies to no workload"));
    assert_int_equal(c.d.n_warnings, 1);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_PERMISSIVE);
    compiled_free(&c);

    /* an empty selector is no selector: namespace-wide */
    compile(&c, PA("v1", "shop", "all", "", "{selector: {matchLabels: {}}, mtls: {mode: STRICT}}"),
            "api-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 9090), TR_TLS_STRICT);
    compiled_free(&c);
}

/* UNSET (or no mtls) keeps the level above. */
static void test_unset_inherits(void **state)
{
    (void)state;
    struct compiled c;
    compile(&c,
            PA("v1", "istio-system", "default", "", "{mtls: {mode: STRICT}}")
                PA("v1", "shop", "default", "", "{mtls: {mode: UNSET}}")
                    PA("v1", "shop", "web", "", "{selector: {matchLabels: {app: web}}}"),
            "web-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_STRICT);
    compiled_free(&c);

    compile(&c,
            PA("v1", "shop", "default", "", "{mtls: {mode: DISABLE}}")
                PA("v1", "shop", "web", "",
                   "{selector: {matchLabels: {app: web}}, mtls: {mode: UNSET}}"),
            "web-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_DISABLE);
    compiled_free(&c);

    /* every level UNSET: the default */
    compile(&c,
            PA("v1", "istio-system", "default", "", "{mtls: {}}")
                PA("v1", "shop", "default", "", "{}"),
            "web-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_PERMISSIVE);
    compiled_free(&c);
}

/* Several at one level: the oldest (creationTimestamp, then name) acts, the
 * others are reported by name with the winner's. */
static void test_conflicts_oldest_wins(void **state)
{
    (void)state;
    struct compiled c;
    compile(&c,
            PA("v1", "istio-system", "a-new", ", creationTimestamp: \"2025-03-01T00:00:00Z\"",
               "{mtls: {mode: DISABLE}}")
                PA("v1", "istio-system", "z-old", ", creationTimestamp: \"2024-03-01T00:00:00Z\"",
                   "{mtls: {mode: STRICT}}"),
            "web-1");
    assert_int_equal(c.d.n_errors, 0);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_STRICT);
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "istio-system/a-new", NULL,
                         "mesh-wide PeerAuthentication in istio-system is older, "
                         "istio-system/z-old (mesh.yaml:"));
    assert_int_equal(c.d.n_warnings, 1);
    compiled_free(&c);

    /* same age (none written): by name */
    compile(&c,
            PA("v1", "shop", "b", "", "{mtls: {mode: DISABLE}}")
                PA("v1", "shop", "a", "", "{mtls: {mode: STRICT}}"),
            "web-1");
    assert_int_equal(mode_of(&c, 8080), TR_TLS_STRICT);
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "shop/b", NULL,
                         "namespace-wide PeerAuthentication in shop is older, shop/a"));
    compiled_free(&c);

    /* an offset and a fraction count; the older (in UTC) wins */
    compile(&c,
            PA("v1", "shop", "a", ", creationTimestamp: \"2024-01-01T10:00:00.5+02:00\"",
               "{selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}")
                PA("v1", "shop", "b", ", creationTimestamp: \"2024-01-01T08:00:00.25Z\"",
                   "{selector: {matchLabels: {tier: front}}, mtls: {mode: STRICT}}"),
            "web-1");
    assert_int_equal(mode_of(&c, 8080), TR_TLS_STRICT);
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "shop/a", "spec.selector",
                         "workload shop/web-1 is also selected by the older shop/b"));
    compiled_free(&c);

    /* a timestamp that is not one is reported and counts as the oldest */
    compile(
        &c,
        PA("v1", "shop", "a", ", creationTimestamp: \"2024-01-01T08:00:00Z\"",
           "{mtls: {mode: DISABLE}}")
            PA("v1", "shop", "b", ", creationTimestamp: \"yesterday\"", "{mtls: {mode: STRICT}}"),
        "web-1");
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "shop/b", "metadata.creationTimestamp",
                         "expected an RFC 3339 time"));
    assert_int_equal(mode_of(&c, 8080), TR_TLS_STRICT);
    compiled_free(&c);
}

/* portLevelMtls: by target port, UNSET keeps the workload's mode, a port the
 * workload does not serve is reported. */
static void test_port_level(void **state)
{
    (void)state;
    struct compiled c;
    compile(&c,
            PA("v1", "istio-system", "default", "", "{mtls: {mode: STRICT}}")
                PA("v1", "shop", "web", "",
                   "{selector: {matchLabels: {app: web}}, portLevelMtls: {8081: {mode: DISABLE}}}"),
            "web-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_STRICT);
    assert_int_equal(mode_of(&c, 8081), TR_TLS_DISABLE);
    compiled_free(&c);

    compile(&c,
            PA("v1", "shop", "web", "",
               "{selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}, portLevelMtls: "
               "{\"8080\": {mode: STRICT}, 8081: {mode: UNSET}, 81: {mode: STRICT}}}"),
            "web-1");
    assert_int_equal(c.d.n_errors, 0);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_STRICT);
    assert_int_equal(mode_of(&c, 8081), TR_TLS_DISABLE);
    /* 81 is the Service port, not the target: it selects nothing */
    assert_true(has_diag(&c.d, TR_DIAG_WARNING, "shop/web", "spec.portLevelMtls.81",
                         "workload shop/web-1 serves no port 81"));
    assert_int_equal(c.d.n_warnings, 1);
    compiled_free(&c);
}

/* What Istio's validation refuses is an error, and the policy is left out. */
static void test_refused(void **state)
{
    (void)state;
    struct compiled c;
    compile(&c,
            PA("v1", "shop", "default", "",
               "{mtls: {mode: STRICT}, portLevelMtls: {8081: {mode: DISABLE}}}"),
            "web-1");
    /* refused whole: the namespace's STRICT does not apply either */
    assert_int_equal(mode_of(&c, 8080), TR_TLS_PERMISSIVE);
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "shop/default", "spec.portLevelMtls",
                         "port-level mTLS needs a selector"));
    compiled_free(&c);

    static const struct {
        const char *spec, *path, *msg;
    } bad[] = {
        {"{mtls: {mode: strict}}", "spec.mtls.mode", "expected UNSET, DISABLE, PERMISSIVE or"},
        {"{mtls: STRICT}", "spec.mtls", "expected a mapping"},
        {"{selector: {matchLabels: {app: web}}, portLevelMtls: {}}", "spec.portLevelMtls",
         "needs at least one port"},
        {"{selector: {matchLabels: {app: web}}, portLevelMtls: {0: {mode: STRICT}}}",
         "spec.portLevelMtls", "expected a port number 1..65535"},
        {"{selector: {matchLabels: {app: web}}, portLevelMtls: {http: {mode: STRICT}}}",
         "spec.portLevelMtls", "expected a port number 1..65535"},
        {"{selector: {matchLabels: {app: web}}, portLevelMtls: {80: {mode: X}}}",
         "spec.portLevelMtls.80.mode", "expected UNSET"},
        {"{selector: {matchLabels: {\"*\": web}}}", "spec.selector.matchLabels",
         "a label key must be non-empty"},
        {"{selector: {app: web}}", "spec.selector", "unknown"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char extra[512];
        snprintf(extra, sizeof(extra), PA("v1", "shop", "p", "", "%s"), bad[i].spec);
        compile(&c, extra, "web-1");
        enum tr_diag_severity sev = strstr(bad[i].msg, "unknown") ? TR_DIAG_WARNING : TR_DIAG_ERROR;
        if (!has_diag(&c.d, sev, "shop/p", bad[i].path, bad[i].msg)) {
            dump_diags(&c.d);
            fail_msg("case %zu: %s", i, bad[i].spec);
        }
        compiled_free(&c);
    }
}

/* v1beta1 is the same resource; other versions are refused. */
static void test_versions(void **state)
{
    (void)state;
    struct compiled c;
    compile(&c, PA("v1beta1", "shop", "default", "", "{mtls: {mode: STRICT}}"), "web-1");
    assert_clean(&c);
    assert_int_equal(mode_of(&c, 8080), TR_TLS_STRICT);
    compiled_free(&c);

    compile(&c, PA("v1alpha1", "shop", "default", "", "{mtls: {mode: STRICT}}"), "web-1");
    assert_true(has_diag(&c.d, TR_DIAG_ERROR, "shop/default", NULL,
                         "served as security.istio.io/v1 and v1beta1"));
    compiled_free(&c);
}

/* A client's cluster to a meshed service: mTLS unless the endpoint's own
 * policies say DISABLE on its target port (Istio's auto mTLS). */
static const char DB[] =
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\n"
    "spec:\n  selector: {app: db}\n  ports: [{name: http, port: 7000, targetPort: 7001}]\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: db-1, namespace: shop, labels: "
    "{app: db, security.istio.io/tlsMode: istio}}\n"
    "spec: {serviceAccountName: db}\nstatus: {podIP: 127.0.2.3}\n";

static const char *db_tls(const char *policies)
{
    static char name[16];
    size_t la = strlen(DB), lb = strlen(policies);
    char *extra = malloc(la + lb + 1);
    assert_non_null(extra);
    memcpy(extra, DB, la);
    memcpy(extra + la, policies, lb + 1);
    struct compiled c;
    compile(&c, extra, "api-1");
    free(extra);
    if (c.cfg == NULL)
        dump_diags(&c.d);
    assert_non_null(c.cfg);
    const char *tls = NULL;
    bool found = false;
    for (size_t i = 0; i < c.cfg->n_clusters; i++) {
        if (strcmp(c.cfg->clusters[i].name, "outbound|7000||db.shop.svc.cluster.local") == 0) {
            tls = c.cfg->clusters[i].tls_name;
            found = true;
        }
    }
    assert_true(found);
    snprintf(name, sizeof(name), "%s", tls ? tls : "(none)");
    compiled_free(&c);
    return name;
}

static void test_client_side_auto_mtls(void **state)
{
    (void)state;
    assert_string_equal(db_tls(""), "mesh");
    assert_string_equal(db_tls(PA("v1", "shop", "default", "", "{mtls: {mode: DISABLE}}")),
                        "(none)");
    assert_string_equal(
        db_tls(PA("v1", "shop", "default", "", "{mtls: {mode: DISABLE}}") PA(
            "v1", "shop", "db", "", "{selector: {matchLabels: {app: db}}, mtls: {mode: STRICT}}")),
        "mesh");
    assert_string_equal(db_tls(PA("v1", "shop", "db", "",
                                  "{selector: {matchLabels: {app: db}}, mtls: {mode: STRICT}, "
                                  "portLevelMtls: {7001: {mode: DISABLE}}}")),
                        "(none)");
    /* the Service port is not the target port */
    assert_string_equal(db_tls(PA("v1", "shop", "db", "",
                                  "{selector: {matchLabels: {app: db}}, mtls: {mode: STRICT}, "
                                  "portLevelMtls: {7000: {mode: DISABLE}}}")),
                        "mesh");
    /* the mesh-wide policy reaches every namespace */
    assert_string_equal(db_tls(PA("v1", "istio-system", "default", "", "{mtls: {mode: DISABLE}}")),
                        "(none)");
}

/* `ctl analyze` reports the policies that lose at their level, with no
 * workload given: mesh- and namespace-wide ones, and workload ones for the
 * workloads they select. */
static void test_analyze_reports_conflicts(void **state)
{
    (void)state;
    static const char extra[] = PA("v1", "istio-system", "a", "", "{mtls: {mode: STRICT}}")
        PA("v1", "istio-system", "b", "", "{mtls: {mode: DISABLE}}")
            PA("v1", "shop", "web-old", ", creationTimestamp: \"2024-01-01T00:00:00Z\"",
               "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}")
                PA("v1", "shop", "web-new", ", creationTimestamp: \"2025-01-01T00:00:00Z\"",
                   "{selector: {matchLabels: {tier: front}}, mtls: {mode: DISABLE}}")
                    PA("v1", "shop", "api", "",
                       "{selector: {matchLabels: {app: api}}, mtls: {mode: DISABLE}}");
    size_t la = strlen(MESH), lb = strlen(extra);
    char *text = malloc(la + lb + 1);
    assert_non_null(text);
    memcpy(text, MESH, la);
    memcpy(text + la, extra, lb + 1);
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = tr_rset_from_buffer(text, la + lb, "mesh.yaml", &d);
    free(text);
    assert_non_null(rs);
    struct tr_istio_options o = {0};
    assert_int_equal(tr_istio_analyze(rs, &o, &d), 0);
    assert_true(has_diag(&d, TR_DIAG_WARNING, "istio-system/b", NULL,
                         "another mesh-wide PeerAuthentication in istio-system is older, "
                         "istio-system/a"));
    assert_true(has_diag(&d, TR_DIAG_WARNING, "shop/web-new", "spec.selector",
                         "1 workload(s) it selects, shop/web-1 among them, are also selected by "
                         "the older shop/web-old"));
    size_t pa_findings = 0;
    for (size_t i = 0; i < d.n; i++)
        pa_findings += d.v[i].where.kind && strcmp(d.v[i].where.kind, "PeerAuthentication") == 0;
    if (pa_findings != 2)
        dump_diags(&d);
    assert_int_equal(pa_findings, 2); /* api and web-old act */
    tr_rset_free(rs);
    tr_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_is_permissive),
        cmocka_unit_test(test_scopes_and_precedence),
        cmocka_unit_test(test_what_does_not_apply),
        cmocka_unit_test(test_unset_inherits),
        cmocka_unit_test(test_conflicts_oldest_wins),
        cmocka_unit_test(test_port_level),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_client_side_auto_mtls),
        cmocka_unit_test(test_analyze_reports_conflicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
