/* config/patch.c: partial updates (one cluster's endpoints, one route table,
 * one certificate) applied to the base text through the loader's checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config/load.h"

static const char base[] = "listeners:\n"
                           "  - name: in\n"
                           "    address: 127.0.0.1:8080\n"
                           "    route_table: rt\n"
                           "tls:\n"
                           "  - name: mesh\n"
                           "    cert: a.pem\n"
                           "    key: a.key\n"
                           "    ca: ca.pem\n"
                           "route_tables:\n"
                           "  - name: rt\n"
                           "    virtual_hosts:\n"
                           "      - name: all\n"
                           "        domains: ['*']\n"
                           "        routes:\n"
                           "          - name: web\n"
                           "            match: {path: {prefix: /}}\n"
                           "            cluster: web\n"
                           "clusters:\n"
                           "  - name: web\n"
                           "    endpoints:\n"
                           "      - address: 127.0.0.1:9001\n"
                           "      - address: 127.0.0.1:9002\n"
                           "  - name: spare\n"
                           "    endpoints: [{address: 127.0.0.1:9100}]\n";

#define P(sec, nm, fld, text)                                                                      \
    {                                                                                              \
        sec, nm, fld, text, sizeof(text) - 1                                                       \
    }

/* The base file's directory, with the certificate files it names (the
 * loader checks that they can be read). */
static char dir[64];
static char base_name[128];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/trellis-patch-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(base_name, sizeof(base_name), "%s/proxy.yaml", dir);
    static const char *const files[] = {"a.pem", "a.key", "b.pem", "b.key", "ca.pem"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[128];
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        FILE *f = fopen(path, "w");
        if (f == NULL)
            return -1;
        fclose(f);
    }
    return 0;
}

static int remove_dir(void **state)
{
    (void)state;
    static const char *const files[] = {"a.pem", "a.key", "b.pem", "b.key", "ca.pem"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[128];
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return 0;
}

static struct tr_config *patched(const struct tr_config_patch *p, size_t n, char **err)
{
    *err = NULL;
    return tr_config_load_patched(base, sizeof(base) - 1, base_name, p, n, err);
}

static const struct tr_cluster_cfg *cluster(const struct tr_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_clusters; i++)
        if (strcmp(c->clusters[i].name, name) == 0)
            return &c->clusters[i];
    return NULL;
}

static void test_endpoints_replaced(void **state)
{
    (void)state;
    struct tr_config_patch p[] = {
        P("clusters", "web", "endpoints",
          "- address: 127.0.0.1:9002\n- address: 127.0.0.1:9003\n  weight: 5\n"),
    };
    char *err;
    struct tr_config *c = patched(p, 1, &err);
    assert_null(err);
    assert_non_null(c);
    const struct tr_cluster_cfg *web = cluster(c, "web");
    assert_int_equal(web->n_endpoints, 2);
    assert_string_equal(web->endpoints[0].addr.text, "127.0.0.1:9002");
    assert_string_equal(web->endpoints[1].addr.text, "127.0.0.1:9003");
    assert_int_equal(web->endpoints[1].weight, 5);
    /* Everything else as in the base, references resolved. */
    assert_int_equal(c->n_clusters, 2);
    assert_int_equal(c->route_tables[0].vhosts[0].routes[0].clusters[0].cluster,
                     (int)(web - c->clusters));
    tr_config_free(c);
}

static void test_route_table_replaced_and_cluster_added(void **state)
{
    (void)state;
    /* JSON works as well as YAML; a new cluster joins, the route uses it. */
    struct tr_config_patch p[] = {
        P("clusters", "canary", NULL,
          "{\"name\": \"canary\", \"endpoints\": [{\"address\": \"127.0.0.1:9200\"}]}"),
        P("route_tables", "rt", NULL,
          "name: rt\n"
          "virtual_hosts:\n"
          "  - name: all\n"
          "    domains: ['*']\n"
          "    routes:\n"
          "      - name: split\n"
          "        match: {path: {prefix: /}}\n"
          "        weighted_clusters: [{cluster: web, weight: 90}, {cluster: canary, weight: "
          "10}]\n"),
    };
    char *err;
    struct tr_config *c = patched(p, 2, &err);
    if (err != NULL)
        fail_msg("%s", err);
    assert_non_null(c);
    assert_int_equal(c->n_clusters, 3);
    const struct tr_route_cfg *r = &c->route_tables[0].vhosts[0].routes[0];
    assert_string_equal(r->name, "split");
    assert_int_equal(r->n_clusters, 2);
    assert_string_equal(c->clusters[r->clusters[1].cluster].name, "canary");
    assert_int_equal(r->total_weight, 100);
    tr_config_free(c);
}

static void test_certificate_files_replaced(void **state)
{
    (void)state;
    struct tr_config_patch p[] = {
        P("tls", "mesh", NULL, "name: mesh\ncert: b.pem\nkey: b.key\nca: ca.pem\n"),
    };
    char *err;
    struct tr_config *c = patched(p, 1, &err);
    assert_null(err);
    assert_non_null(c);
    /* Relative to the base file's directory, as in the file itself. */
    char want[160];
    snprintf(want, sizeof(want), "%s/b.pem", dir);
    assert_string_equal(c->tls[0].cert_file, want);
    tr_config_free(c);
}

static void test_remove(void **state)
{
    (void)state;
    char *err;
    struct tr_config_patch ok[] = {{"clusters", "spare", NULL, NULL, 0}};
    struct tr_config *c = patched(ok, 1, &err);
    assert_null(err);
    assert_int_equal(c->n_clusters, 1);
    tr_config_free(c);
    /* Removing what a route uses fails validation like the same file would. */
    struct tr_config_patch used[] = {{"clusters", "web", NULL, NULL, 0}};
    assert_null(patched(used, 1, &err));
    assert_non_null(strstr(err, "route_tables[0].virtual_hosts[0].routes[0].cluster"));
    assert_non_null(strstr(err, "web"));
    free(err);
}

struct bad_case {
    struct tr_config_patch p;
    const char *want; /* exact message after "FILE: " */
};

static void test_errors(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {P("limits", "x", NULL, "{}"),
         "update: section \"limits\" cannot be updated alone; use tls, "
         "listeners, route_tables or clusters"},
        {P("clusters", "web", NULL, "name: other\nendpoints: [{address: 127.0.0.1:1}]\n"),
         "update of clusters \"web\": the object is named \"other\""},
        {P("clusters", "nope", "endpoints", "[{address: 127.0.0.1:1}]"),
         "update of clusters \"nope\" field endpoints: no such object"},
        {P("clusters", "web", "name", "x"),
         "update of clusters \"web\" field name: the name cannot be "
         "changed by an update"},
        /* A bad value inside the patch: the field path, and no line (it is the patch's). */
        {P("clusters", "web", "endpoints", "- address: 127.0.0.1:99999\n"),
         "clusters[0].endpoints[0].address: port must be between 1 and 65535 in "
         "\"127.0.0.1:99999\""},
        {P("clusters", "web", "endpoints", "- adress: 127.0.0.1:9001\n"),
         "clusters[0].endpoints[0].adress: unknown field \"adress\" (accepted: address, weight, "
         "workload, locality, priority, origin)"},
        /* The fragment's own syntax errors name the update; "? " keys are refused
         * before libfyaml sees them, as in files. */
        {P("clusters", "web", "endpoints", "? a\n: b\n"), NULL},
        {P("clusters", "web", "endpoints", "[unclosed\n"), NULL},
        {P("clusters", "web", "endpoints", ""), NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *err;
        struct tr_config *c = patched(&cases[i].p, 1, &err);
        assert_null(c);
        assert_non_null(err);
        if (cases[i].want != NULL) {
            char want[512];
            snprintf(want, sizeof(want), "%s: %s", base_name, cases[i].want);
            if (strcmp(err, want) != 0)
                fail_msg("case %zu: got\n  %s\nwant\n  %s", i, err, want);
        } else if (strstr(err, "update of clusters \"web\" field endpoints") == NULL) {
            fail_msg("case %zu: the error does not name the update: %s", i, err);
        }
        free(err);
    }
}

static void test_patches_apply_in_order(void **state)
{
    (void)state;
    struct tr_config_patch p[] = {
        P("clusters", "web", "endpoints", "[{address: 127.0.0.1:1}]"),
        P("clusters", "web", "endpoints", "[{address: 127.0.0.1:2}, {address: 127.0.0.1:3}]"),
    };
    char *err;
    struct tr_config *c = patched(p, 2, &err);
    assert_null(err);
    assert_int_equal(cluster(c, "web")->n_endpoints, 2);
    assert_string_equal(cluster(c, "web")->endpoints[0].addr.text, "127.0.0.1:2");
    tr_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints_replaced),
        cmocka_unit_test(test_route_table_replaced_and_cluster_added),
        cmocka_unit_test(test_certificate_files_replaced),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_patches_apply_in_order),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
