/* Unit tests for config/write.c. Every configuration the tests load (full.yaml,
 * full.json, the example, the fuzz seeds that load, and roundtrip/: what the
 * integration tests run trellis with) and models built in C are written as
 * YAML and as JSON, loaded again and written again: the two models are equal
 * field by field (model_eq.h) and the second text is the first, byte for
 * byte. Also the shape of the output, hostile strings, durations, addresses,
 * and what a file cannot say. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/internal.h" /* the loader's checks, to pick what a field accepts */
#include "config/load.h"
#include "config/write.h"
#include "core/arena.h"
#include "model_eq.h"

#ifndef TR_SOURCE_ROOT
#define TR_SOURCE_ROOT "."
#endif

/* TMPDIR with certs/{web.pem,web.key,ca.pem}: relative file names in the
 * configurations resolve here, since each is loaded as TMPDIR/NAME. */
static char g_dir[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int group_setup(void **state)
{
    (void)state;
    char p[128];
    snprintf(g_dir, sizeof(g_dir), "/tmp/trellis-write-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(p, sizeof(p), "%s/certs", g_dir);
    mkdir(p, 0700);
    static const char *const files[] = {"certs/web.pem", "certs/web.key", "certs/ca.pem"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/%s", g_dir, files[i]);
        write_file(p, "x\n");
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    static const char *const files[] = {"certs/web.pem", "certs/web.key", "certs/ca.pem", "certs",
                                        ""};
    char p[128];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", g_dir, files[i]);
        remove(p);
    }
    return 0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static const char *in_dir(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", g_dir, name);
    return buf;
}

/* Loads text as TMPDIR/name, or NULL (the error printed when must_load). */
static struct tr_config *load(const char *text, size_t len, const char *name, bool must_load)
{
    char path[256], *err = NULL;
    struct tr_config *cfg =
        tr_config_load_buffer(text, len, in_dir(name, path, sizeof(path)), &err);
    if (cfg == NULL && must_load) {
        fprintf(stderr, "unexpected error loading %s: %s\n--- text:\n%.*s\n", name, err,
                (int)(len < 4000 ? len : 4000), text);
        fail();
    }
    free(err);
    return cfg;
}

static char *write_ok(const struct tr_config *cfg, enum tr_config_format fmt, size_t *len)
{
    char *err = NULL;
    char *text = tr_config_write(cfg, fmt, len, &err);
    if (text == NULL) {
        fprintf(stderr, "unexpected write error: %s\n", err);
        free(err);
        fail();
    }
    assert_null(err);
    assert_int_equal(strlen(text), *len);
    assert_true(*len > 0 && text[*len - 1] == '\n');
    return text;
}

/* cfg -> text -> model -> text, in both formats: same model, same text. */
static void roundtrip_cfg(const struct tr_config *cfg, const char *name)
{
    static const enum tr_config_format fmts[] = {TR_CONFIG_YAML, TR_CONFIG_JSON};
    for (size_t i = 0; i < 2; i++) {
        size_t len1, len2;
        char why[512];
        char *text1 = write_ok(cfg, fmts[i], &len1);
        struct tr_config *again = load(text1, len1, name, true);
        if (!tmodel_equal(cfg, again, why, sizeof(why))) {
            fprintf(stderr, "%s (%s): the model read back differs: %s\n--- text:\n%s\n", name,
                    i == 0 ? "YAML" : "JSON", why, text1);
            fail();
        }
        char *text2 = write_ok(again, fmts[i], &len2);
        if (len1 != len2 || memcmp(text1, text2, len1) != 0) {
            fprintf(stderr, "%s: written twice differently:\n%s\n---\n%s\n", name, text1, text2);
            fail();
        }
        free(text1);
        free(text2);
        tr_config_free(again);
    }
}

/* Loads text (true) and round-trips it, or false if it does not load. */
static bool roundtrip_text(const char *text, size_t len, const char *name, bool must_load)
{
    struct tr_config *cfg = load(text, len, name, must_load);
    if (cfg == NULL)
        return false;
    roundtrip_cfg(cfg, name);
    tr_config_free(cfg);
    return true;
}

static bool roundtrip_file(const char *path, const char *name, bool must_load)
{
    size_t len;
    char *text = slurp(path, &len);
    bool ok = roundtrip_text(text, len, name, must_load);
    free(text);
    return ok;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Round-trips every file of dir (relative to the source root); returns how
 * many loaded (all of them when must_load). */
static size_t roundtrip_dir(const char *rel, const char *suffix, bool must_load, size_t *seen)
{
    char dir[512], path[1024];
    snprintf(dir, sizeof(dir), "%s/%s", TR_SOURCE_ROOT, rel);
    DIR *d = opendir(dir);
    assert_non_null(d);
    char *names[256];
    size_t n = 0, loaded = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name), sl = strlen(suffix);
        if (e->d_name[0] == '.' || l < sl || strcmp(e->d_name + l - sl, suffix) != 0)
            continue;
        assert_true(n < sizeof(names) / sizeof(names[0]));
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), by_name);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        loaded += roundtrip_file(path, names[i], must_load);
        free(names[i]);
    }
    *seen = n;
    return loaded;
}

/* ------------------------------------------------ the configurations */

static void test_full_yaml_and_json(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/tests/unit/config/full.yaml", TR_SOURCE_ROOT);
    assert_true(roundtrip_file(path, "proxy.yaml", true));
    snprintf(path, sizeof(path), "%s/tests/unit/config/full.json", TR_SOURCE_ROOT);
    assert_true(roundtrip_file(path, "proxy.yaml", true));
    snprintf(path, sizeof(path), "%s/examples/proxy-minimal.yaml", TR_SOURCE_ROOT);
    assert_true(roundtrip_file(path, "proxy-minimal.yaml", true));
    snprintf(path, sizeof(path), "%s/examples/proxy-tls-passthrough.yaml", TR_SOURCE_ROOT);
    assert_true(roundtrip_file(path, "proxy-tls-passthrough.yaml", true));
}

/* What the integration tests run trellis with (roundtrip/collect.py). */
static void test_integration_configs(void **state)
{
    (void)state;
    size_t seen;
    size_t loaded = roundtrip_dir("tests/unit/config/roundtrip", ".json", true, &seen);
    assert_int_equal(loaded, seen);
    assert_true(seen >= 15);
}

/* The fuzzer's seeds: the valid ones round-trip (the others are errors). */
static void test_fuzz_seeds(void **state)
{
    (void)state;
    size_t seen;
    size_t loaded = roundtrip_dir("fuzz/corpus/fuzz_config", "", false, &seen);
    assert_true(seen >= 10);
    assert_true(loaded >= 5);
}

/* --------------------------------------------------------- the shape */

static const char shape_in[] =
    "workers: 0\n"
    "drain_timeout: 10s\n"
    "log_level: info\n"
    "limits: {max_request_line: 8192, http2: {max_concurrent_streams: 100}}\n"
    "admin: {address: 127.0.0.1:15000, enabled: true}\n"
    "tls: [{name: id, cert: /dev/null, key: /dev/null, ca: /dev/null}]\n"
    "listeners:\n"
    "  - {name: in, address: 127.0.0.1:8080, direction: inbound, protocol: http,\n"
    "     route_table: rt, timeouts: {idle: 300s, request: 90s}, tls: {mode: DISABLE},\n"
    "     http: {xff: append, xfp: true}, authorization: {rules: []}}\n"
    "route_tables:\n"
    "  - name: rt\n"
    "    virtual_hosts:\n"
    "      - name: vhost-0\n"
    "        domains: [\"*\", a.example.com]\n"
    "        routes:\n"
    "          - {name: route-0, match: {path: {prefix: /}}, cluster: c}\n"
    "          - name: route-7\n"
    "            match: {path: {prefix: /, ignore_case: true}, headers: [{name: X-A, present: "
    "true}]}\n"
    "            weighted_clusters: [{cluster: c, weight: 0}, {cluster: d, weight: 2}]\n"
    "            timeout: 0s\n"
    "          - {cluster: d}\n"
    "clusters:\n"
    "  - {name: c, lb: round_robin, pool: {max_idle: 64}, endpoints: [{address: \"[::1]:80\", "
    "weight: 1}]}\n"
    "  - {name: d, tls: {context: id}, protocol: http1, endpoints: [{address: 10.0.0.1:80}]}\n"
    "  - {name: e, tls: {context: id}, protocol: original, http2: {max_streams_per_connection: "
    "100},\n"
    "     endpoints: [{address: 10.0.0.2:80}]}\n";

/* Defaults are left out (the generated names too, and `original` with tls),
 * lists come after an object's own fields, a single weight-1 cluster is
 * `cluster:`, short lists of strings stay on one line. */
static const char shape_yaml[] = "tls:\n"
                                 "  - name: id\n"
                                 "    cert: /dev/null\n"
                                 "    key: /dev/null\n"
                                 "    ca: /dev/null\n"
                                 "listeners:\n"
                                 "  - name: in\n"
                                 "    address: \"127.0.0.1:8080\"\n"
                                 "    route_table: rt\n"
                                 "    timeouts:\n"
                                 "      request: 1m30s\n"
                                 "route_tables:\n"
                                 "  - name: rt\n"
                                 "    virtual_hosts:\n"
                                 "      - domains: [\"*\", a.example.com]\n"
                                 "        routes:\n"
                                 "          - cluster: c\n"
                                 "          - name: route-7\n"
                                 "            match:\n"
                                 "              path:\n"
                                 "                prefix: /\n"
                                 "                ignore_case: true\n"
                                 "              headers:\n"
                                 "                - name: x-a\n"
                                 "                  present: true\n"
                                 "            weighted_clusters:\n"
                                 "              - cluster: c\n"
                                 "                weight: 0\n"
                                 "              - cluster: d\n"
                                 "                weight: 2\n"
                                 "          - cluster: d\n"
                                 "clusters:\n"
                                 "  - name: c\n"
                                 "    endpoints:\n"
                                 "      - address: \"[::1]:80\"\n"
                                 "  - name: d\n"
                                 "    tls:\n"
                                 "      context: id\n"
                                 "    protocol: http1\n"
                                 "    endpoints:\n"
                                 "      - address: \"10.0.0.1:80\"\n"
                                 "  - name: e\n"
                                 "    tls:\n"
                                 "      context: id\n"
                                 "    endpoints:\n"
                                 "      - address: \"10.0.0.2:80\"\n";

static const char shape_json[] = "{\n"
                                 "  \"tls\": [\n"
                                 "    {\n"
                                 "      \"name\": \"id\",\n"
                                 "      \"cert\": \"/dev/null\",\n"
                                 "      \"key\": \"/dev/null\",\n"
                                 "      \"ca\": \"/dev/null\"\n"
                                 "    }\n"
                                 "  ],\n"
                                 "  \"listeners\": [\n"
                                 "    {\n"
                                 "      \"name\": \"in\",\n"
                                 "      \"address\": \"127.0.0.1:8080\",\n"
                                 "      \"route_table\": \"rt\",\n"
                                 "      \"timeouts\": {\n"
                                 "        \"request\": \"1m30s\"\n"
                                 "      }\n"
                                 "    }\n"
                                 "  ],\n"
                                 "  \"route_tables\": [\n"
                                 "    {\n"
                                 "      \"name\": \"rt\",\n"
                                 "      \"virtual_hosts\": [\n"
                                 "        {\n"
                                 "          \"domains\": [\"*\", \"a.example.com\"],\n"
                                 "          \"routes\": [\n"
                                 "            {\n"
                                 "              \"cluster\": \"c\"\n"
                                 "            },\n"
                                 "            {\n"
                                 "              \"name\": \"route-7\",\n"
                                 "              \"match\": {\n"
                                 "                \"path\": {\n"
                                 "                  \"prefix\": \"/\",\n"
                                 "                  \"ignore_case\": true\n"
                                 "                },\n"
                                 "                \"headers\": [\n"
                                 "                  {\n"
                                 "                    \"name\": \"x-a\",\n"
                                 "                    \"present\": true\n"
                                 "                  }\n"
                                 "                ]\n"
                                 "              },\n"
                                 "              \"weighted_clusters\": [\n"
                                 "                {\n"
                                 "                  \"cluster\": \"c\",\n"
                                 "                  \"weight\": 0\n"
                                 "                },\n"
                                 "                {\n"
                                 "                  \"cluster\": \"d\",\n"
                                 "                  \"weight\": 2\n"
                                 "                }\n"
                                 "              ]\n"
                                 "            },\n"
                                 "            {\n"
                                 "              \"cluster\": \"d\"\n"
                                 "            }\n"
                                 "          ]\n"
                                 "        }\n"
                                 "      ]\n"
                                 "    }\n"
                                 "  ],\n"
                                 "  \"clusters\": [\n"
                                 "    {\n"
                                 "      \"name\": \"c\",\n"
                                 "      \"endpoints\": [\n"
                                 "        {\n"
                                 "          \"address\": \"[::1]:80\"\n"
                                 "        }\n"
                                 "      ]\n"
                                 "    },\n"
                                 "    {\n"
                                 "      \"name\": \"d\",\n"
                                 "      \"tls\": {\n"
                                 "        \"context\": \"id\"\n"
                                 "      },\n"
                                 "      \"protocol\": \"http1\",\n"
                                 "      \"endpoints\": [\n"
                                 "        {\n"
                                 "          \"address\": \"10.0.0.1:80\"\n"
                                 "        }\n"
                                 "      ]\n"
                                 "    },\n"
                                 "    {\n"
                                 "      \"name\": \"e\",\n"
                                 "      \"tls\": {\n"
                                 "        \"context\": \"id\"\n"
                                 "      },\n"
                                 "      \"endpoints\": [\n"
                                 "        {\n"
                                 "          \"address\": \"10.0.0.2:80\"\n"
                                 "        }\n"
                                 "      ]\n"
                                 "    }\n"
                                 "  ]\n"
                                 "}\n";

static void test_shape(void **state)
{
    (void)state;
    struct tr_config *cfg = load(shape_in, strlen(shape_in), "shape.yaml", true);
    size_t len;
    char *yaml = write_ok(cfg, TR_CONFIG_YAML, &len);
    assert_string_equal(yaml, shape_yaml);
    char *json = write_ok(cfg, TR_CONFIG_JSON, &len);
    assert_string_equal(json, shape_json);
    roundtrip_cfg(cfg, "shape.yaml");
    free(yaml);
    free(json);
    tr_config_free(cfg);
}

/* Nested in another document (/config_dump): indented to its depth, and
 * the object alone loads as the same model. */
static void test_json_nested(void **state)
{
    (void)state;
    char path[512];
    size_t len;
    snprintf(path, sizeof(path), "%s/tests/unit/config/full.yaml", TR_SOURCE_ROOT);
    char *text = slurp(path, &len);
    struct tr_config *cfg = load(text, len, "proxy.yaml", true);
    free(text);
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 1 << 20);
    tr_fmt_cstr(&f, "{\n  \"config\": ");
    size_t start = f.len;
    char *err = NULL;
    assert_true(tr_config_write_json_to(&f, cfg, 1, &err));
    assert_null(err);
    size_t end = f.len;
    tr_fmt_cstr(&f, "\n}\n");
    char *doc = tr_fmt_take(&f, &len);
    assert_non_null(doc);
    /* Every line of the object but its first is indented past the outer one. */
    for (const char *p = strchr(doc + start, '\n'); p != NULL && p < doc + end;
         p = strchr(p + 1, '\n'))
        assert_memory_equal(p + 1, "  ", 2);
    assert_memory_equal(doc + end - 4, "\n  }", 4);
    struct tr_config *again = load(doc + start, end - start, "proxy.yaml", true);
    char why[256];
    assert_true(tmodel_equal(cfg, again, why, sizeof(why)));
    size_t wl;
    char *whole = write_ok(cfg, TR_CONFIG_JSON, &wl);
    assert_true(wl > 0);
    free(whole);
    free(doc);
    tr_config_free(again);
    tr_config_free(cfg);
}

/* ------------------------------------------------------ built models */

static void set_addr(struct tr_cfg_addr *a, const char *ip, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
        a->len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
        a->len = sizeof(*s4);
    }
}

static void *alloc(struct tr_config *c, size_t n, size_t size)
{
    void *p = tr_arena_calloc(c->arena, n, size);
    assert_non_null(p);
    return p;
}

/* A listener, a route table of one virtual host with n_routes routes (each
 * to cluster 0 until the caller says otherwise) and n_clusters clusters of
 * one endpoint each, as a compiler builds it: names, no indexes. */
static struct tr_config *model(size_t n_routes, size_t n_clusters)
{
    struct tr_config *c = tr_config_new("built");
    assert_non_null(c);
    c->n_clusters = n_clusters;
    c->clusters = alloc(c, n_clusters, sizeof(*c->clusters));
    for (size_t i = 0; i < n_clusters; i++) {
        struct tr_cluster_cfg *cl = &c->clusters[i];
        char name[32];
        tr_cfg_cluster_defaults(cl);
        snprintf(name, sizeof(name), "c%zu", i);
        cl->name = tr_arena_strdup(c->arena, name);
        cl->n_endpoints = 1;
        cl->endpoints = alloc(c, 1, sizeof(*cl->endpoints));
        tr_cfg_endpoint_defaults(&cl->endpoints[0]);
        set_addr(&cl->endpoints[0].addr, "10.0.0.1", (uint16_t)(1000 + i));
    }
    c->n_route_tables = 1;
    c->route_tables = alloc(c, 1, sizeof(*c->route_tables));
    struct tr_route_table_cfg *rt = &c->route_tables[0];
    rt->name = "rt";
    rt->n_vhosts = 1;
    rt->vhosts = alloc(c, 1, sizeof(*rt->vhosts));
    struct tr_vhost_cfg *vh = &rt->vhosts[0];
    vh->n_domains = 1;
    vh->domains = alloc(c, 1, sizeof(char *));
    vh->domains[0] = "*";
    vh->n_routes = n_routes;
    vh->routes = alloc(c, n_routes, sizeof(*vh->routes));
    for (size_t i = 0; i < n_routes; i++) {
        struct tr_route_cfg *r = &vh->routes[i];
        tr_cfg_route_defaults(r);
        r->n_clusters = 1;
        r->clusters = alloc(c, 1, sizeof(*r->clusters));
        r->clusters[0] = (struct tr_weighted_cluster_cfg){.cluster_name = "c0", .weight = 1};
    }
    c->n_listeners = 1;
    c->listeners = alloc(c, 1, sizeof(*c->listeners));
    struct tr_listener_cfg *l = &c->listeners[0];
    tr_cfg_listener_defaults(l);
    l->name = "in";
    set_addr(&l->addr, "127.0.0.1", 15006);
    l->route_table_name = "rt";
    return c;
}

static void validate_ok(struct tr_config *c)
{
    char *err = NULL;
    if (tr_config_validate(c, &err) != 0) {
        fprintf(stderr, "unexpected validate error: %s\n", err);
        free(err);
        fail();
    }
}

/* Strings a YAML reader could take for something else, or that need escapes. */
static const char *const hostile_text[] = {"\"quoted\"",
                                           "back\\slash",
                                           "tab\there",
                                           ": ",
                                           "a: b",
                                           "a:",
                                           "#",
                                           "a #b",
                                           "- leading",
                                           "-",
                                           "*star",
                                           "&anchor",
                                           "!tag",
                                           "%pct",
                                           "@at",
                                           "`tick",
                                           "|pipe",
                                           ">gt",
                                           "'single'",
                                           "{brace}",
                                           "[bracket]",
                                           "a, b",
                                           "?",
                                           "? q",
                                           "1e3",
                                           "0x10",
                                           "0o17",
                                           "1_000",
                                           "1.3",
                                           "1:30",
                                           "12:30:00",
                                           "2001-12-14",
                                           "2001-12-14t21:59:43.10-05:00",
                                           ".inf",
                                           ".NaN",
                                           "-1",
                                           "+1",
                                           "0",
                                           "yes",
                                           "No",
                                           "ON",
                                           "off",
                                           "y",
                                           "N",
                                           "true",
                                           "False",
                                           "null",
                                           "NULL",
                                           "~",
                                           " leading space",
                                           "trailing space ",
                                           " ",
                                           "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
                                           "\xc2\x85nel",
                                           "line\xe2\x80\xa8sep",
                                           "\357\273\277bom",
                                           "\xc2\xa0nbsp",
                                           "\xef\xbf\xbd",
                                           "<<",
                                           "=",
                                           "---",
                                           "...",
                                           "x\xc2\x9f",
                                           "10s",
                                           "1h",
                                           "/path",
                                           "spiffe://td/ns/a",
                                           "a\"b'c",
                                           "\\x41",
                                           "\\u0041",
                                           "\\",
                                           "\\\"",
                                           "#!",
                                           "a]",
                                           "a}",
                                           "a,",
                                           "*",
                                           "&",
                                           "!",
                                           "|",
                                           ">"};

/* Names: no whitespace or control characters, anything else. */
static const char *const hostile_names[] = {
    "\"q\"", "a:b",  "a:",  "#c",  "-x",   "*",   "&a",
    "!t",    "%p",   "@a",  "`t",  "|p",   ">g",  "'s'",
    "{b}",   "[b]",  "a,b", "1e3", "0x10", "1.3", "yes",
    "No",    "null", "~",   "<<",  "---",  "?",   "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
    "10s",   "0",    "-1",  "true"};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void test_hostile_strings(void **state)
{
    (void)state;
    size_t nt = N_OF(hostile_text), nn = N_OF(hostile_names);
    struct tr_config *c = model(nn + 3, nn);
    c->node.id = "\"node\": #1";
    c->node.workload = "yes";
    c->node.workload_namespace = "~";
    c->node.service = "tab\tand \xc2\x85";
    for (size_t i = 0; i < nn; i++) {
        struct tr_cluster_cfg *cl = &c->clusters[i];
        cl->name = hostile_names[i];
        cl->service = hostile_text[i % nt];
        cl->workload = hostile_text[(i + 1) % nt];
        cl->workload_namespace = hostile_text[(i + 2) % nt];
        cl->endpoints[0].workload = hostile_text[(i + 3) % nt];
        /* A route per cluster, by the short form `cluster: NAME`, named hostile too. */
        struct tr_route_cfg *r = &c->route_tables[0].vhosts[0].routes[i];
        r->name = hostile_names[(i + 1) % nn];
        r->clusters[0].cluster_name = hostile_names[i];
        r->path_kind = TR_PATH_EXACT;
        r->path = i % 2 == 0 ? "/a: b #c \"q\" \xc3\xa9" : "/-1";
    }
    /* Every hostile text as a header value (64 a route at most), and every
     * name in one split. */
    for (size_t part = 0; part < 2; part++) {
        struct tr_route_cfg *h = &c->route_tables[0].vhosts[0].routes[nn + part];
        size_t from = part * 64, to = part == 0 ? 64 : nt;
        h->n_headers = to - from + part;
        h->headers = alloc(c, h->n_headers, sizeof(*h->headers));
        for (size_t i = from; i < to; i++) {
            char name[16];
            snprintf(name, sizeof(name), "x-h%zu", i);
            h->headers[i - from] = (struct tr_header_match_cfg){
                .name = tr_arena_strdup(c->arena, name),
                .kind =
                    i % 3 == 0 && hostile_text[i][0] != '\0' ? TR_HMATCH_SUFFIX : TR_HMATCH_EXACT,
                .value = hostile_text[i],
                .invert = i % 2 == 0};
        }
        if (part == 1)
            h->headers[h->n_headers - 1] =
                (struct tr_header_match_cfg){.name = "x-empty", .value = ""};
    }
    c->route_tables[0].vhosts[0].routes[nn + 1].clusters[0].cluster_name = hostile_names[0];
    struct tr_route_cfg *h = &c->route_tables[0].vhosts[0].routes[nn];
    h->n_clusters = nn;
    h->clusters = alloc(c, nn, sizeof(*h->clusters));
    for (size_t i = 0; i < nn; i++)
        h->clusters[i] = (struct tr_weighted_cluster_cfg){.cluster_name = hostile_names[i],
                                                          .weight = (uint32_t)i};
    /* A body with every control byte, and what YAML may not hold raw. */
    char body[256];
    size_t o = 0;
    for (int b = 1; b < 0x80; b++)
        body[o++] = (char)b;
    static const char extra[] = "\xc2\x80\xc2\x85\xc2\x9f\xe2\x80\xa8\xe2\x80\xa9\xef\xbb\xbf"
                                "\xef\xbf\xbe\xef\xbf\xbf\r\n";
    memcpy(body + o, extra, sizeof(extra));
    struct tr_route_cfg *d = &c->route_tables[0].vhosts[0].routes[nn + 2];
    d->n_clusters = 0;
    d->direct_status = 200;
    d->direct_body = body;
    validate_ok(c);
    roundtrip_cfg(c, "hostile.yaml");
    tr_config_free(c);
}

/* The entries of list (n) that check accepts, at most max, into out. */
static size_t accepted(const char *const *list, size_t n, cfg_check_fn check, bool lower,
                       const char **out, size_t max)
{
    size_t k = 0;
    char why[CFG_WHY_MAX];
    for (size_t i = 0; i < n && k < max; i++) {
        if (check(list[i], why, sizeof(why)) && (!lower || cfg_is_lower(list[i])))
            out[k++] = list[i];
    }
    return k;
}

/* Header edits (set, add: NAME: VALUE mappings; remove) on routes and
 * destinations, query parameter matches of every kind, pseudo-header
 * matches: every hostile string those fields accept round-trips. */
static void test_match_and_header_edits(void **state)
{
    (void)state;
    const char *values[64], *names[64], *query[64];
    size_t nv =
        accepted(hostile_text, N_OF(hostile_text), cfg_check_header_value, false, values, 63);
    values[nv++] = ""; /* a header value may be empty */
    size_t nn =
        accepted(hostile_names, N_OF(hostile_names), cfg_check_header_edit_name, true, names, 64);
    size_t nq = accepted(hostile_text, N_OF(hostile_text), cfg_check_query_value, false, query, 64);
    assert_true(nv > 40 && nn > 10 && nq > 20);

    struct tr_config *c = model(4, 2);
    struct tr_route_cfg *r = c->route_tables[0].vhosts[0].routes;
    /* Route 0: query parameters (hostile values, exact and prefix; names
     * that are hostile values too), a regex, present; pseudo-headers. */
    r[0].n_query = nq + 2;
    r[0].query = alloc(c, r[0].n_query, sizeof(*r[0].query));
    for (size_t i = 0; i < nq; i++) {
        bool name_ok = cfg_check_query_name(query[i], (char[CFG_WHY_MAX]){0}, CFG_WHY_MAX);
        r[0].query[i] =
            (struct tr_query_match_cfg){.name = name_ok ? query[i] : "q",
                                        .kind = i % 2 == 0 ? TR_HMATCH_EXACT : TR_HMATCH_PREFIX,
                                        .value = query[i]};
    }
    r[0].query[nq] =
        (struct tr_query_match_cfg){.name = "id", .kind = TR_HMATCH_REGEX, .value = "[0-9]+"};
    r[0].query[nq + 1] = (struct tr_query_match_cfg){.name = "debug", .kind = TR_HMATCH_PRESENT};
    r[0].n_headers = 3;
    r[0].headers = alloc(c, 3, sizeof(*r[0].headers));
    r[0].headers[0] = (struct tr_header_match_cfg){
        .name = ":authority", .kind = TR_HMATCH_PREFIX, .value = "api."};
    r[0].headers[1] = (struct tr_header_match_cfg){
        .name = ":method", .kind = TR_HMATCH_REGEX, .value = "GET|HEAD"};
    r[0].headers[2] =
        (struct tr_header_match_cfg){.name = ":scheme", .kind = TR_HMATCH_PRESENT, .invert = true};
    /* Route 0's edits: every accepted name and value. */
    struct tr_header_ops_cfg *req = &r[0].request_headers;
    req->n_remove = nn;
    req->remove = alloc(c, nn, sizeof(char *));
    req->n_set = nn;
    req->set = alloc(c, nn, sizeof(*req->set));
    for (size_t i = 0; i < nn; i++) {
        req->remove[i] = names[i];
        req->set[i] = (struct tr_name_value_cfg){names[i], values[i % nv]};
    }
    req->n_add = nv;
    req->add = alloc(c, nv, sizeof(*req->add));
    for (size_t i = 0; i < nv; i++) {
        char name[16];
        snprintf(name, sizeof(name), "x-v%zu", i);
        req->add[i] = (struct tr_name_value_cfg){tr_arena_strdup(c->arena, name), values[i]};
    }
    /* Route 1: one destination of weight 1 with edits of its own (so not
     * the short `cluster:` form), and route response edits. */
    r[1].clusters[0].request_headers.n_set = 1;
    r[1].clusters[0].request_headers.set = alloc(c, 1, sizeof(struct tr_name_value_cfg));
    r[1].clusters[0].request_headers.set[0] = (struct tr_name_value_cfg){"x-dest", "c0"};
    r[1].response_headers.n_remove = 1;
    r[1].response_headers.remove = alloc(c, 1, sizeof(char *));
    r[1].response_headers.remove[0] = "server";
    /* Route 2: two destinations, the second with response edits. */
    r[2].n_clusters = 2;
    r[2].clusters = alloc(c, 2, sizeof(*r[2].clusters));
    r[2].clusters[0] = (struct tr_weighted_cluster_cfg){.cluster_name = "c0", .weight = 3};
    r[2].clusters[1] = (struct tr_weighted_cluster_cfg){.cluster_name = "c1", .weight = 1};
    r[2].clusters[1].response_headers.n_add = 1;
    r[2].clusters[1].response_headers.add = alloc(c, 1, sizeof(struct tr_name_value_cfg));
    r[2].clusters[1].response_headers.add[0] = (struct tr_name_value_cfg){"x-served-by", "c1"};
    /* Route 3: a direct response with its content type replaced. */
    r[3].n_clusters = 0;
    r[3].direct_status = 200;
    r[3].direct_body = "{}";
    r[3].response_headers.n_set = 1;
    r[3].response_headers.set = alloc(c, 1, sizeof(struct tr_name_value_cfg));
    r[3].response_headers.set[0] = (struct tr_name_value_cfg){"content-type", "application/json"};
    validate_ok(c);

    size_t len;
    char *yaml = write_ok(c, TR_CONFIG_YAML, &len);
    static const char *const want_yaml[] = {
        "              query_params:\n"
        "                - name: \"\\\"quoted\\\"\"\n"
        "                  exact: \"\\\"quoted\\\"\"\n"
        "                - name: \"back\\\\slash\"\n"
        "                  prefix: \"back\\\\slash\"\n",
        "                - name: id\n"
        "                  regex: \"[0-9]+\"\n"
        "                - name: debug\n"
        "                  present: true\n",
        "                - name: \":scheme\"\n"
        "                  present: true\n"
        "                  invert: true\n",
        "          - response_headers:\n"
        "              remove: [server]\n"
        "            weighted_clusters:\n"
        "              - cluster: c0\n"
        "                weight: 1\n"
        "                request_headers:\n"
        "                  set:\n"
        "                    x-dest: c0\n",
        "              - cluster: c1\n"
        "                weight: 1\n"
        "                response_headers:\n"
        "                  add:\n"
        "                    x-served-by: c1\n",
        "            response_headers:\n"
        "              set:\n"
        "                content-type: application/json\n",
    };
    for (size_t i = 0; i < N_OF(want_yaml); i++) {
        if (strstr(yaml, want_yaml[i]) == NULL) {
            fprintf(stderr, "no\n%s\nin\n%s\n", want_yaml[i], yaml);
            fail();
        }
    }
    free(yaml);
    char *json = write_ok(c, TR_CONFIG_JSON, &len);
    static const char want_json[] = "              \"response_headers\": {\n"
                                    "                \"set\": {\n"
                                    "                  \"content-type\": \"application/json\"\n"
                                    "                }\n"
                                    "              }\n";
    if (strstr(json, want_json) == NULL) {
        fprintf(stderr, "no\n%s\nin\n%s\n", want_json, json);
        fail();
    }
    free(json);
    roundtrip_cfg(c, "edits.yaml");
    tr_config_free(c);
}

/* Routes' own actions: redirects (every field, and none: `redirect: {}`),
 * faults (percentages at their edges, an HTTP and a gRPC abort, gRPC
 * status 0 included), CORS (max_age 0s and absent, origins of each kind
 * with hostile strings). */
static void test_route_actions(void **state)
{
    (void)state;
    static const uint32_t shares[] = {0, 1, 10, 125000, 333300, 999999, 1000000};
    static const char *const share_text[] = {"0",     "0.0001",  "0.001", "12.5",
                                             "33.33", "99.9999", "100"};
    size_t ns = N_OF(shares);
    struct tr_config *c = model(4 + ns, 1);
    struct tr_route_cfg *r = c->route_tables[0].vhosts[0].routes;
    /* Route 0: a redirect with every field; route 1: one with none. */
    struct tr_redirect_cfg *rd = alloc(c, 2, sizeof(*rd));
    rd[0] = (struct tr_redirect_cfg){
        .scheme = "https", .host = "[fd00::1]", .port = 8443, .prefix = "/new/", .code = 308};
    rd[1] = (struct tr_redirect_cfg){.code = 301};
    for (size_t i = 0; i < 2; i++) {
        r[i].n_clusters = 0;
        r[i].redirect = &rd[i];
    }
    /* Route 2: a redirect by path, the port from the request. */
    struct tr_redirect_cfg *rp = alloc(c, 1, sizeof(*rp));
    *rp = (struct tr_redirect_cfg){
        .path = "/y?z=1", .port_from = TR_REDIRECT_PORT_REQUEST, .code = 307};
    r[2].n_clusters = 0;
    r[2].redirect = rp;
    r[2].path_kind = TR_PATH_EXACT;
    r[2].path = "/x";
    /* Route 3: CORS, max_age 0s, origins of every kind. */
    struct tr_cors_cfg *cors = alloc(c, 2, sizeof(*cors));
    struct tr_cors_origin_cfg *origins = alloc(c, 3, sizeof(*origins));
    origins[0] = (struct tr_cors_origin_cfg){.kind = TR_ORIGIN_EXACT, .value = "null"};
    origins[1] = (struct tr_cors_origin_cfg){.kind = TR_ORIGIN_PREFIX, .value = "http://l: #"};
    origins[2] = (struct tr_cors_origin_cfg){.kind = TR_ORIGIN_REGEX, .value = "https://.*[.]b"};
    static const char *star[] = {"*"}, *methods[] = {"GET", "yes"};
    cors[0] = (struct tr_cors_cfg){.origins = origins,
                                   .n_origins = 3,
                                   .allow_methods = methods,
                                   .n_allow_methods = 2,
                                   .expose_headers = star,
                                   .n_expose_headers = 1,
                                   .has_max_age = true,
                                   .max_age_s = 0,
                                   .unmatched_preflights = TR_CORS_UNMATCHED_IGNORE};
    r[3].cors = &cors[0];
    /* Routes 4..: a fault each, delays and aborts at every share; the
     * first a gRPC abort with status 0, then HTTP aborts; CORS on the last
     * without max_age. */
    for (size_t i = 0; i < ns; i++) {
        struct tr_fault_cfg *f = alloc(c, 1, sizeof(*f));
        f->delay = alloc(c, 1, sizeof(*f->delay));
        *f->delay = (struct tr_fault_delay_cfg){.fixed_ms = 1 + (uint32_t)i * 1500,
                                                .per_million = shares[i]};
        f->abort = alloc(c, 1, sizeof(*f->abort));
        *f->abort = i == 0 ? (struct tr_fault_abort_cfg){.grpc = true, .per_million = shares[i]}
                           : (struct tr_fault_abort_cfg){.status = (uint16_t)(500 + i),
                                                         .per_million = shares[ns - 1 - i]};
        if (i == 1)
            f->delay = NULL;
        r[4 + i].fault = f;
    }
    cors[1] = (struct tr_cors_cfg){.origins = origins, .n_origins = 1, .allow_credentials = true};
    r[4 + ns - 1].cors = &cors[1];
    validate_ok(c);

    size_t len;
    char *yaml = write_ok(c, TR_CONFIG_YAML, &len);
    static const char *const want[] = {
        "          - redirect:\n"
        "              scheme: https\n"
        "              host: \"[fd00::1]\"\n"
        "              port: 8443\n"
        "              prefix: /new/\n"
        "              code: 308\n",
        "          - redirect: {}\n",
        "            redirect:\n"
        "              port_from: request\n"
        "              path: \"/y?z=1\"\n"
        "              code: 307\n",
        "          - cluster: c0\n"
        "            cors:\n"
        "              allow_methods: [GET, \"yes\"]\n"
        "              expose_headers: [\"*\"]\n"
        "              max_age: 0s\n"
        "              unmatched_preflights: ignore\n"
        "              allow_origins:\n"
        "                - exact: \"null\"\n"
        "                - prefix: \"http://l: #\"\n"
        "                - regex: \"https://.*[.]b\"\n",
        "              abort:\n"
        "                grpc_status: 0\n"
        "                percent: 0\n",
        "            fault:\n"
        "              abort:\n"
        "                status: 501\n"
        "                percent: 99.9999\n",
        "            cors:\n"
        "              allow_credentials: true\n"
        "              allow_origins:\n"
        "                - exact: \"null\"\n",
    };
    for (size_t i = 0; i < N_OF(want); i++) {
        if (strstr(yaml, want[i]) == NULL) {
            fprintf(stderr, "no\n%s\nin\n%s\n", want[i], yaml);
            fail();
        }
    }
    for (size_t i = 0; i < ns; i++) {
        char line[64];
        snprintf(line, sizeof(line), "\n                percent: %s\n", share_text[i]);
        assert_non_null(strstr(yaml, line));
    }
    free(yaml);
    char *json = write_ok(c, TR_CONFIG_JSON, &len);
    assert_non_null(strstr(json, "\"redirect\": {}\n"));
    assert_non_null(strstr(json, "\"percent\": 12.5\n"));
    assert_non_null(strstr(json, "\"grpc_status\": 0,\n"));
    free(json);
    roundtrip_cfg(c, "actions.yaml");
    tr_config_free(c);
}

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        uint32_t ms;
        const char *text;
    } cases[] = {
        {1, "1ms"},
        {250, "250ms"},
        {999, "999ms"},
        {1000, "1s"},
        {1001, "1.001s"},
        {1050, "1.05s"},
        {1500, "1.5s"},
        {59999, "59.999s"},
        {60000, "1m"},
        {60250, "1m250ms"},
        {61001, "1m1.001s"},
        {90000, "1m30s"},
        {3599999, "59m59.999s"},
        {3600000, "1h"},
        {3723004, "1h2m3.004s"},
        {86400000, "24h"},
    };
    size_t n = N_OF(cases);
    struct tr_config *c = model(n, 1);
    for (size_t i = 0; i < n; i++)
        c->route_tables[0].vhosts[0].routes[i].timeout_ms = cases[i].ms;
    c->drain_timeout_ms = 0; /* written "0s": differs from the default 10s */
    validate_ok(c);
    size_t len;
    char *yaml = write_ok(c, TR_CONFIG_YAML, &len);
    for (size_t i = 0; i < n; i++) {
        char want[64];
        snprintf(want, sizeof(want), "\n            timeout: %s\n", cases[i].text);
        if (strstr(yaml, want) == NULL) {
            fprintf(stderr, "%u ms: no \"%s\" in\n%s\n", cases[i].ms, cases[i].text, yaml);
            fail();
        }
    }
    assert_non_null(strstr(yaml, "drain_timeout: 0s\n"));
    free(yaml);
    roundtrip_cfg(c, "durations.yaml");
    tr_config_free(c);
}

static void test_addresses(void **state)
{
    (void)state;
    struct tr_config *c = model(1, 1);
    /* As the model spells it when that is the address (so names keep it). */
    struct tr_endpoint_cfg *e = &c->clusters[0].endpoints[0];
    set_addr(&e->addr, "fd00::1", 80);
    e->addr.text = "[fd00:0:0::0001]:80";
    /* Formatted when a builder left the text out (validate fills it too). */
    set_addr(&c->admin.addr, "::1", 15000);
    c->admin.addr.text = NULL;
    validate_ok(c);
    size_t len;
    char *yaml = write_ok(c, TR_CONFIG_YAML, &len);
    assert_non_null(strstr(yaml, "address: \"[fd00:0:0::0001]:80\"\n"));
    assert_non_null(strstr(yaml, "admin:\n  address: \"[::1]:15000\"\n"));
    free(yaml);
    roundtrip_cfg(c, "addresses.yaml");
    tr_config_free(c);
}

static void write_fails(const struct tr_config *c, const char *want);

/* Endpoints given by DNS name: written as NAME:PORT (the model's text, or
 * formatted when a builder left it out), dns settings only where they differ
 * (refresh 5s is validate's default), the resolver; a text that does not
 * spell the name and port is an error, not a silent change. */
static void test_dns_endpoints(void **state)
{
    (void)state;
    struct tr_config *c = model(1, 2);
    struct tr_cluster_cfg *cl = &c->clusters[0];
    cl->n_endpoints = 3;
    cl->endpoints = alloc(c, 3, sizeof(*cl->endpoints));
    static const char *const hosts[] = {"1e3.example", "yes", "db.example."};
    for (size_t i = 0; i < 3; i++) {
        tr_cfg_endpoint_defaults(&cl->endpoints[i]);
        cl->endpoints[i].host = hosts[i];
        cl->endpoints[i].port = (uint16_t)(80 + i);
    }
    cl->endpoints[2].weight = 3;
    cl->dns = (struct tr_dns_cfg){.mode = TR_DNS_FIRST, .refresh_ms = 5000};
    c->clusters[1].dns.family = TR_DNS_AUTO; /* no names: all defaults */
    static const char *servers[] = {"127.0.0.1:5353"};
    c->resolver.servers = servers;
    c->resolver.n_servers = 1;
    c->resolver.attempts = 1;
    validate_ok(c);
    size_t len;
    char *yaml = write_ok(c, TR_CONFIG_YAML, &len);
    static const char want[] = "  - name: c0\n"
                               "    dns:\n"
                               "      mode: first\n"
                               "    endpoints:\n"
                               "      - address: 1e3.example:80\n"
                               "      - address: yes:81\n"
                               "      - address: db.example.:82\n"
                               "        weight: 3\n"
                               "  - name: c1\n"
                               "    endpoints:\n";
    if (strstr(yaml, want) == NULL) {
        fprintf(stderr, "no\n%s\nin\n%s\n", want, yaml);
        fail();
    }
    assert_non_null(strstr(yaml, "resolver:\n  servers: [\"127.0.0.1:5353\"]\n  attempts: 1\n"));
    free(yaml);
    roundtrip_cfg(c, "dns.yaml");
    cl->endpoints[1].addr.text = "no:81";
    write_fails(c, "clusters[0].endpoints[1].address: the text \"no:81\" does not spell the host "
                   "name and port the model holds (yes:81)");
    tr_config_free(c);
}

/* Cluster settings whose presence the loader reads as a value: outlier
 * detection on with every default (`enabled: true`, since the section alone
 * turns it on), a generated session cookie (`generate: true`, since without
 * it only a ttl turns generation on) and a cookie not generated; source_ip,
 * ring and Maglev sizes, circuit breakers; weighted TCP routes. */
static void test_cluster_policies(void **state)
{
    (void)state;
    struct tr_config *c = model(1, 5);
    struct tr_cluster_cfg *cl = c->clusters;
    cl[0].outlier.enabled = true;
    cl[0].lb = TR_LB_RING_HASH;
    cl[0].hash.cookie = "session";
    cl[0].hash.cookie_generate = true; /* ttl 0: a session cookie */
    cl[0].breakers.max_requests = 7;
    cl[1].lb = TR_LB_MAGLEV;
    cl[1].hash.cookie = "sticky"; /* read, never generated */
    cl[1].hash.maglev_table_size = 13;
    cl[2].lb = TR_LB_RING_HASH;
    cl[2].hash.source_ip = true;
    cl[2].hash.ring_min_size = 8;
    cl[2].outlier = (struct tr_outlier_cfg){.enabled = true,
                                            .consecutive_5xx = 0,
                                            .consecutive_gateway = 3,
                                            .consecutive_local = 2,
                                            .split_local = true,
                                            .interval_ms = 1500,
                                            .base_ejection_ms = 60000,
                                            .max_ejection_percent = 100,
                                            .min_health_percent = 50};
    cl[3].lb = TR_LB_MAGLEV; /* no hash_policy: requests hash at random */
    cl[4].max_requests_per_connection = 1;
    /* A tcp listener splitting its connections. */
    c->n_listeners = 2;
    struct tr_listener_cfg *ls = alloc(c, 2, sizeof(*ls));
    ls[0] = c->listeners[0];
    tr_cfg_listener_defaults(&ls[1]);
    ls[1].name = "tcp";
    ls[1].protocol = TR_LPROTO_TCP;
    set_addr(&ls[1].addr, "127.0.0.1", 15007);
    ls[1].n_tcp_clusters = 2;
    ls[1].tcp_clusters = alloc(c, 2, sizeof(*ls[1].tcp_clusters));
    ls[1].tcp_clusters[0] = (struct tr_weighted_cluster_cfg){.cluster_name = "c1", .weight = 0};
    ls[1].tcp_clusters[1] = (struct tr_weighted_cluster_cfg){.cluster_name = "c2", .weight = 4};
    c->listeners = ls;
    validate_ok(c);
    size_t len;
    char *yaml = write_ok(c, TR_CONFIG_YAML, &len);
    static const char *const want[] = {
        "  - name: tcp\n"
        "    address: \"127.0.0.1:15007\"\n"
        "    protocol: tcp\n"
        "    tcp_clusters:\n"
        "      - cluster: c1\n"
        "        weight: 0\n"
        "      - cluster: c2\n"
        "        weight: 4\n",
        "  - name: c0\n"
        "    lb: ring_hash\n"
        "    outlier_detection:\n"
        "      enabled: true\n"
        "    hash_policy:\n"
        "      cookie:\n"
        "        name: session\n"
        "        generate: true\n"
        "    circuit_breakers:\n"
        "      max_requests: 7\n",
        "  - name: c1\n"
        "    lb: maglev\n"
        "    hash_policy:\n"
        "      cookie:\n"
        "        name: sticky\n"
        "    maglev:\n"
        "      table_size: 13\n",
        "    hash_policy:\n"
        "      source_ip: true\n"
        "    ring_hash:\n"
        "      minimum_ring_size: 8\n",
        "  - name: c3\n"
        "    lb: maglev\n"
        "    endpoints:\n",
        "  - name: c4\n"
        "    pool:\n"
        "      max_requests_per_connection: 1\n",
    };
    for (size_t i = 0; i < N_OF(want); i++) {
        if (strstr(yaml, want[i]) == NULL) {
            fprintf(stderr, "no\n%s\nin\n%s\n", want[i], yaml);
            fail();
        }
    }
    free(yaml);
    roundtrip_cfg(c, "policies.yaml");
    tr_config_free(c);
}

/* A compiled model's sources are written (origin) and read back: every
 * object keeps naming its resource and field. */
static void test_origin(void **state)
{
    (void)state;
    struct tr_config *c = model(3, 2);
    static const struct tr_cfg_origin vs = {"VirtualService", "default", "reviews"};
    static const struct tr_cfg_origin dr = {"DestinationRule", "default", "reviews"};
    static const struct tr_cfg_origin se = {"ServiceEntry", NULL, "external"}; /* no namespace */
    c->listeners[0].loc = (struct tr_cfg_loc){.origin = {"Sidecar", "default", "default"}};
    c->route_tables[0].loc = (struct tr_cfg_loc){.path = "spec", .origin = vs};
    struct tr_vhost_cfg *vh = &c->route_tables[0].vhosts[0];
    vh->loc = (struct tr_cfg_loc){.path = "spec.hosts", .origin = vs};
    /* Route 0: its one cluster has the route's source: `cluster:` says it. */
    vh->routes[0].loc = (struct tr_cfg_loc){.path = "spec.http[0]", .origin = vs};
    vh->routes[0].clusters[0].loc = vh->routes[0].loc;
    /* Route 1: a destination of its own. */
    vh->routes[1].loc = (struct tr_cfg_loc){.path = "spec.http[1]", .origin = vs};
    vh->routes[1].clusters[0].loc =
        (struct tr_cfg_loc){.path = "spec.http[1].route[0]", .origin = vs};
    vh->routes[1].n_headers = 1;
    vh->routes[1].headers = alloc(c, 1, sizeof(*vh->routes[1].headers));
    vh->routes[1].headers[0] = (struct tr_header_match_cfg){
        .name = "end-user",
        .value = "jason",
        .loc = {.path = "spec.http[1].match[0].headers.end-user", .origin = vs}};
    /* Route 2: a route with a source, its cluster without one. */
    vh->routes[2].loc = (struct tr_cfg_loc){.path = "spec.http[2]", .origin = vs};
    for (size_t i = 0; i < 2; i++) {
        c->clusters[i].loc = (struct tr_cfg_loc){.path = i == 0 ? "spec.subsets[0]" : NULL,
                                                 .origin = i == 0 ? dr : se};
        c->clusters[i].endpoints[0].loc =
            (struct tr_cfg_loc){.path = "spec.endpoints[0]", .origin = se};
    }
    c->listeners[0].authz.n_rules = 1;
    c->listeners[0].authz.rules = alloc(c, 1, sizeof(*c->listeners[0].authz.rules));
    c->listeners[0].authz.rules[0] = (struct tr_authz_rule_cfg){
        .action = TR_AUTHZ_DENY,
        .loc = {.path = "spec.rules[0]", .origin = {"AuthorizationPolicy", "default", "deny"}}};
    validate_ok(c);
    size_t len;
    char *yaml = write_ok(c, TR_CONFIG_YAML, &len);
    static const char *const want[] = {
        "  - name: in\n"
        "    address: \"127.0.0.1:15006\"\n"
        "    route_table: rt\n"
        "    authorization:\n"
        "      rules:\n"
        "        - action: DENY\n"
        "          origin:\n"
        "            kind: AuthorizationPolicy\n"
        "            namespace: default\n"
        "            name: deny\n"
        "            path: \"spec.rules[0]\"\n"
        "    origin:\n"
        "      kind: Sidecar\n"
        "      namespace: default\n"
        "      name: default\n",
        "          - cluster: c0\n"
        "            origin:\n"
        "              kind: VirtualService\n"
        "              namespace: default\n"
        "              name: reviews\n"
        "              path: \"spec.http[0]\"\n",
        "            weighted_clusters:\n"
        "              - cluster: c0\n"
        "                weight: 1\n"
        "                origin:\n",
        "    origin:\n"
        "      kind: ServiceEntry\n"
        "      name: external\n"
        "    endpoints:\n",
    };
    for (size_t i = 0; i < N_OF(want); i++) {
        if (strstr(yaml, want[i]) == NULL) {
            fprintf(stderr, "no\n%s\nin\n%s\n", want[i], yaml);
            fail();
        }
    }
    free(yaml);
    roundtrip_cfg(c, "origin.yaml");
    /* The loader gives `cluster:` the route's source: route 2's cluster,
     * which has none, is written out in full. */
    yaml = write_ok(c, TR_CONFIG_YAML, &len);
    const char *r2 = strstr(yaml, "path: \"spec.http[2]\"\n");
    assert_non_null(r2);
    assert_non_null(strstr(r2, "weighted_clusters:\n              - cluster: c0\n"
                               "                weight: 1\n"));
    free(yaml);
    tr_config_free(c);
}

/* Writing c fails in format fmt with exactly the message want. */
static void write_fails_as(const struct tr_config *c, enum tr_config_format fmt, const char *want)
{
    size_t len = 12345;
    char *err = NULL;
    char *text = tr_config_write(c, fmt, &len, &err);
    assert_null(text);
    assert_int_equal(len, 12345);
    assert_non_null(err);
    if (strcmp(err, want) != 0) {
        fprintf(stderr, "got  %s\nwant %s\n", err, want);
        fail();
    }
    free(err);
}

static void write_fails(const struct tr_config *c, const char *want)
{
    write_fails_as(c, TR_CONFIG_YAML, want);
    write_fails_as(c, TR_CONFIG_JSON, want);
}

/* What a file cannot say is an error naming the field, never a change. */
static void test_refuses_what_a_file_cannot_say(void **state)
{
    (void)state;
    struct tr_config *c = model(1, 2);
    validate_ok(c);
    c->clusters[1].endpoints[0].name = "db-0";
    write_fails(c, "clusters[1].endpoints[0].name: \"db-0\" differs from the address "
                   "10.0.0.1:1001, and a file names an endpoint by its address");
    c->clusters[1].endpoints[0].name = NULL;
    c->clusters[1].service = "caf\xe9";
    write_fails(c, "clusters[1].service: not valid UTF-8 (a configuration file is UTF-8 text)");
    c->clusters[1].service = NULL;
    c->route_tables[0].vhosts[0].domains[0] = "\xff";
    write_fails(c, "route_tables[0].virtual_hosts[0].domains[0]: not valid UTF-8 (a "
                   "configuration file is UTF-8 text)");
    c->route_tables[0].vhosts[0].domains[0] = "*";
    c->clusters[0].endpoints[0].addr.text = "10.0.0.2:1000";
    write_fails(c, "clusters[0].endpoints[0].address: the text \"10.0.0.2:1000\" does not spell "
                   "the socket address the model holds");
    c->clusters[0].endpoints[0].addr.text = "10.0.0.1:1000";
    /* Validate accepts it (the model cannot tell), the loader refuses http on tcp. */
    c->listeners[0].protocol = TR_LPROTO_TCP;
    c->listeners[0].route_table_name = NULL;
    c->listeners[0].tcp_cluster_name = "c0";
    c->listeners[0].xfp = false;
    validate_ok(c);
    write_fails(c, "listeners[0].http: HTTP settings differ from the defaults on a tcp listener, "
                   "which a file cannot say (the loader refuses http there)");
    c->listeners[0].xfp = true;
    c->listeners[0].path_normalization = TR_PATHNORM_BASE;
    write_fails(c, "listeners[0].http: HTTP settings differ from the defaults on a tcp listener, "
                   "which a file cannot say (the loader refuses http there)");
    c->listeners[0].path_normalization = TR_PATHNORM_STRICT;
    c->access_log.path = NULL;
    write_fails(c, "access_log.path: unset, and a file cannot say so: leaving the key out means "
                   "/dev/stdout");
    c->access_log.path = "/dev/stdout";
    size_t len;
    char *ok = write_ok(c, TR_CONFIG_YAML, &len);
    free(ok);
    tr_config_free(c);
}

/* Pretty text that does not fit (the loader's limit, or the caller's buffer)
 * is written as compact JSON instead: one line, the same model. */
static void test_compact_when_too_big(void **state)
{
    (void)state;
    char path[512];
    size_t len, pretty_len;
    snprintf(path, sizeof(path), "%s/tests/unit/config/full.yaml", TR_SOURCE_ROOT);
    char *text = slurp(path, &len);
    struct tr_config *cfg = load(text, len, "proxy.yaml", true);
    free(text);
    char *pretty = write_ok(cfg, TR_CONFIG_JSON, &pretty_len);
    free(pretty);
    struct tr_fmt f;
    tr_fmt_init_growable(&f, pretty_len - 2); /* one byte short (the newline is not written) */
    char *err = NULL;
    assert_true(tr_config_write_json_to(&f, cfg, 0, &err));
    assert_null(err);
    assert_false(f.truncated);
    char *compact = tr_fmt_take(&f, &len);
    assert_non_null(compact);
    assert_true(len < pretty_len);
    assert_null(strchr(compact, '\n'));
    static const char head[] = "{\"node\":{\"id\":\"web-0\",\"workload\":\"web\",";
    assert_memory_equal(compact, head, sizeof(head) - 1);
    struct tr_config *again = load(compact, len, "proxy.yaml", true);
    char why[256];
    assert_true(tmodel_equal(cfg, again, why, sizeof(why)));
    free(compact);
    /* Not even that fits: an error, and nothing of it kept. */
    tr_fmt_init_growable(&f, 100);
    tr_fmt_cstr(&f, "{\"config\": ");
    assert_false(tr_config_write_json_to(&f, cfg, 1, &err));
    assert_string_equal(err, "the configuration does not fit the 89 bytes left for it even as "
                             "compact JSON");
    free(err);
    tr_fmt_free(&f);
    tr_config_free(again);
    tr_config_free(cfg);
}

/* More than the loader reads is an error, not a file it would refuse. */
static void test_too_large(void **state)
{
    (void)state;
    size_t n = 300; /* x 64 KiB bodies: 19 MiB */
    struct tr_config *c = model(n, 1);
    char *body = alloc(c, 65536 + 1, 1);
    memset(body, 'x', 65536);
    for (size_t i = 0; i < n; i++) {
        struct tr_route_cfg *r = &c->route_tables[0].vhosts[0].routes[i];
        r->n_clusters = 0;
        r->direct_status = 200;
        r->direct_body = body;
    }
    validate_ok(c);
    write_fails(c, "the configuration is more than 16777216 bytes (the loader's limit) even as "
                   "compact JSON");
    tr_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_yaml_and_json),
        cmocka_unit_test(test_integration_configs),
        cmocka_unit_test(test_fuzz_seeds),
        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_json_nested),
        cmocka_unit_test(test_hostile_strings),
        cmocka_unit_test(test_match_and_header_edits),
        cmocka_unit_test(test_route_actions),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_dns_endpoints),
        cmocka_unit_test(test_cluster_policies),
        cmocka_unit_test(test_origin),
        cmocka_unit_test(test_refuses_what_a_file_cannot_say),
        cmocka_unit_test(test_compact_when_too_big),
        cmocka_unit_test(test_too_large),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
