/* Unit tests for resource/: nodes and their accessors, documents into
 * resources (multi-document, List, JSON, anchors, tags, limits), object
 * checks, duplicates, lookups, and every Istio file of the shared corpus. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resource/internal.h"
#include "resource/resource.h"

#ifndef TR_SOURCE_ROOT
#define TR_SOURCE_ROOT "."
#endif

#define CORPUS TR_SOURCE_ROOT "/../shared/corpus"

/* ------------------------------------------------------------ helpers */

static struct tr_rset *load_n(const char *text, size_t len, struct tr_diags *d)
{
    struct tr_rset *rs = tr_rset_from_buffer(text, len, "t.yaml", d);
    assert_non_null(rs);
    return rs;
}

static struct tr_rset *load(const char *text, struct tr_diags *d)
{
    return load_n(text, strlen(text), d);
}

/* Loads text that must give no finding at all. */
static struct tr_rset *load_clean(const char *text)
{
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = load(text, &d);
    if (d.n != 0) {
        char buf[512];
        tr_diag_format(&d.v[0], buf, sizeof(buf));
        fail_msg("unexpected finding: %s", buf);
    }
    tr_diags_free(&d);
    return rs;
}

static const char *diag_text(const struct tr_diags *d, size_t i, char *buf, size_t size)
{
    assert_true(i < d->n);
    tr_diag_format(&d->v[i], buf, size);
    return buf;
}

/* Exactly one finding, an error at line:col whose text contains want. */
static void assert_one_error(const struct tr_diags *d, uint32_t line, uint32_t col,
                             const char *want)
{
    char buf[1024];
    if (d->n != 1) {
        for (size_t i = 0; i < d->n; i++)
            fprintf(stderr, "  finding: %s\n", diag_text(d, i, buf, sizeof(buf)));
        fail_msg("expected one finding, got %zu", d->n);
    }
    assert_int_equal(d->n_errors, 1);
    assert_int_equal(d->v[0].severity, TR_DIAG_ERROR);
    diag_text(d, 0, buf, sizeof(buf));
    if (strstr(buf, want) == NULL)
        fail_msg("finding \"%s\" does not contain \"%s\"", buf, want);
    assert_string_equal(d->v[0].where.file, "t.yaml");
    assert_int_equal(d->v[0].where.line, line);
    assert_int_equal(d->v[0].where.col, col);
}

/* Loads text that must give exactly one error, and no resource. */
static void refused(const char *text, uint32_t line, uint32_t col, const char *want)
{
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = load(text, &d);
    assert_one_error(&d, line, col, want);
    assert_int_equal(tr_rset_count(rs), 0);
    tr_rset_free(rs);
    tr_diags_free(&d);
}

static const char *spec_str(const struct tr_resource *r, const char *key)
{
    const char *s = NULL;
    assert_true(tr_rnode_str(tr_rnode_get(r->spec, key), &s));
    return s;
}

#define OBJ(kind, name) "apiVersion: v1\nkind: " kind "\nmetadata:\n  name: " name "\n"

/* --------------------------------------------------------------- nodes */

static void test_nodes_and_positions(void **state)
{
    (void)state;
    struct tr_rset *rs = load_clean("apiVersion: networking.istio.io/v1\n"
                                    "kind: VirtualService\n"
                                    "metadata:\n"
                                    "  name: reviews\n"
                                    "  namespace: prod\n"
                                    "spec:\n"
                                    "  hosts: [reviews, \"ratings\"]\n"
                                    "  port: 9080\n"
                                    "  quoted: '80'\n"
                                    "  empty:\n"
                                    "  text: \"a\\tb\"\n");
    assert_int_equal(tr_rset_count(rs), 1);
    const struct tr_resource *r = tr_rset_at(rs, 0);
    assert_non_null(r);
    assert_null(tr_rset_at(rs, 1));
    const struct tr_rnode *obj = r->obj;
    assert_int_equal(obj->kind, TR_RNODE_MAP);
    assert_int_equal(obj->n, 8); /* four keys, four values */
    assert_int_equal(obj->line, 1);
    assert_int_equal(obj->col, 1);
    assert_ptr_equal(r->spec, tr_rnode_get(obj, "spec"));
    const struct tr_rnode *key = tr_rnode_key(obj, "spec");
    assert_int_equal(key->line, 6);
    assert_int_equal(key->col, 1);
    assert_ptr_equal(key->next, r->spec);

    const struct tr_rnode *hosts = tr_rnode_get(r->spec, "hosts");
    assert_int_equal(hosts->kind, TR_RNODE_SEQ);
    assert_int_equal(hosts->n, 2);
    assert_int_equal(hosts->line, 7);
    assert_int_equal(hosts->col, 10);
    const struct tr_rnode *h0 = hosts->head, *h1 = h0->next;
    assert_true(h0->plain);
    assert_string_equal(h0->s, "reviews");
    assert_int_equal(h0->len, 7);
    assert_int_equal(h0->col, 11);
    assert_false(h1->plain);
    assert_string_equal(h1->s, "ratings");
    assert_int_equal(h1->col, 20); /* the opening quote */
    assert_null(h1->next);

    int64_t i = 0;
    assert_true(tr_rnode_int(tr_rnode_get(r->spec, "port"), &i));
    assert_int_equal(i, 9080);
    assert_true(tr_rnode_int(tr_rnode_get(r->spec, "quoted"), &i)); /* "80" reads as 80 */
    assert_int_equal(i, 80);
    assert_true(tr_rnode_is_null(tr_rnode_get(r->spec, "empty")));
    assert_non_null(tr_rnode_get(r->spec, "empty"));
    assert_true(tr_rnode_is_null(tr_rnode_get(r->spec, "absent")));
    assert_string_equal(spec_str(r, "text"), "a\tb");

    /* Accessors on the wrong kinds of node. */
    assert_null(tr_rnode_get(hosts, "x"));
    assert_null(tr_rnode_get(h0, "x"));
    assert_null(tr_rnode_get(NULL, "x"));
    assert_null(tr_rnode_key(hosts, "x"));
    const char *s = NULL;
    assert_false(tr_rnode_str(hosts, &s));
    assert_false(tr_rnode_str(tr_rnode_get(r->spec, "empty"), &s));
    assert_false(tr_rnode_str(NULL, &s));
    assert_false(tr_rnode_int(hosts, &i));
    tr_rset_free(rs);
}

/* A one-object set whose spec.v holds the scalar text as written. */
static struct tr_rset *with_value(const char *yaml_value, const struct tr_rnode **v)
{
    char text[512];
    snprintf(text, sizeof(text), OBJ("ConfigMap", "c") "spec:\n  v: %s\n", yaml_value);
    struct tr_rset *rs = load_clean(text);
    *v = tr_rnode_get(tr_rset_at(rs, 0)->spec, "v");
    assert_non_null(*v);
    return rs;
}

static void test_scalar_typing(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool is_int;
        int64_t i;
        bool is_num;
        double f;
        int is_bool; /* -1 no, 0 false, 1 true */
        bool is_null;
    } cases[] = {
        {"80", true, 80, true, 80, -1, false},
        {"'80'", true, 80, true, 80, -1, false},
        {"\"-12\"", true, -12, true, -12, -1, false},
        {"0", true, 0, true, 0, -1, false},
        {"-0", true, 0, true, 0, -1, false},
        {"+5", false, 0, false, 0, -1, false},
        {"007", false, 0, false, 0, -1, false}, /* octal in YAML 1.1 */
        {"9223372036854775807", true, INT64_MAX, true, 9223372036854775807.0, -1, false},
        {"-9223372036854775808", true, INT64_MIN, true, -9223372036854775808.0, -1, false},
        {"9223372036854775808", false, 0, true, 9223372036854775808.0, -1, false},
        {"1.5", false, 0, true, 1.5, -1, false},
        {"'0.25'", false, 0, true, 0.25, -1, false},
        {"-1.25e2", false, 0, true, -125, -1, false},
        {"1E+2", false, 0, true, 100, -1, false},
        {".5", false, 0, false, 0, -1, false},
        {"5.", false, 0, false, 0, -1, false},
        {"1e999", false, 0, false, 0, -1, false},
        {".inf", false, 0, false, 0, -1, false},
        {"0x1f", false, 0, false, 0, -1, false},
        {"1_000", false, 0, false, 0, -1, false},
        {"12abc", false, 0, false, 0, -1, false},
        {"true", false, 0, false, 0, 1, false},
        {"True", false, 0, false, 0, 1, false},
        {"TRUE", false, 0, false, 0, 1, false},
        {"false", false, 0, false, 0, 0, false},
        {"FALSE", false, 0, false, 0, 0, false},
        {"tRUE", false, 0, false, 0, -1, false},
        {"yes", false, 0, false, 0, -1, false},
        {"'true'", false, 0, false, 0, -1, false}, /* quoted: text */
        {"~", false, 0, false, 0, -1, true},
        {"null", false, 0, false, 0, -1, true},
        {"Null", false, 0, false, 0, -1, true},
        {"NULL", false, 0, false, 0, -1, true},
        {"''", false, 0, false, 0, -1, false},
        {"'null'", false, 0, false, 0, -1, false},
        {"nULL", false, 0, false, 0, -1, false},
        {"!!str 80", true, 80, true, 80, -1, false},
        {"!!int '42'", true, 42, true, 42, -1, false},
        {"!!bool 'true'", false, 0, false, 0, 1, false},
        {"!!null ''", false, 0, false, 0, -1, true},
        {"!!float '2.5'", false, 0, true, 2.5, -1, false},
        {"! true", false, 0, false, 0, -1, false}, /* non-specific: text */
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const struct tr_rnode *v;
        struct tr_rset *rs = with_value(cases[c].text, &v);
        int64_t i = 7;
        double f = 7;
        bool b = false;
        bool got_int = tr_rnode_int(v, &i), got_num = tr_rnode_double(v, &f);
        int got_bool = tr_rnode_bool(v, &b) ? b : -1;
        if (got_int != cases[c].is_int || got_num != cases[c].is_num ||
            got_bool != cases[c].is_bool || tr_rnode_is_null(v) != cases[c].is_null)
            fail_msg("%s: int %d num %d bool %d null %d", cases[c].text, got_int, got_num, got_bool,
                     tr_rnode_is_null(v));
        if (got_int)
            assert_true(i == cases[c].i);
        if (got_num)
            assert_true(f == cases[c].f);
        const char *s = NULL;
        assert_int_equal(tr_rnode_str(v, &s), !cases[c].is_null);
        tr_rset_free(rs);
    }
}

static void test_describe(void **state)
{
    (void)state;
    struct tr_rset *rs =
        load_clean(OBJ("ConfigMap", "c") "spec:\n"
                                         "  m: {a: 1}\n"
                                         "  l: [1]\n"
                                         "  n: ~\n"
                                         "  s: \"say \\\"hi\\\"\\n\"\n"
                                         "  long: "
                                         "abcdefghijklmnopqrstuvwxyzabcdefghijklmnop"
                                         "qrstuvwxyz\n"
                                         "  utf: \"ééééé\"\n");
    const struct tr_rnode *spec = tr_rset_at(rs, 0)->spec;
    char buf[32];
    assert_string_equal(tr_rnode_describe(tr_rnode_get(spec, "m"), buf, sizeof(buf)), "a mapping");
    assert_string_equal(tr_rnode_describe(tr_rnode_get(spec, "l"), buf, sizeof(buf)), "a list");
    assert_string_equal(tr_rnode_describe(tr_rnode_get(spec, "n"), buf, sizeof(buf)), "null");
    assert_string_equal(tr_rnode_describe(NULL, buf, sizeof(buf)), "null");
    assert_string_equal(tr_rnode_describe(tr_rnode_get(spec, "s"), buf, sizeof(buf)),
                        "\"say \\\"hi\\\"\\x0a\"");
    const char *d = tr_rnode_describe(tr_rnode_get(spec, "long"), buf, sizeof(buf));
    assert_true(strlen(d) < sizeof(buf));
    assert_string_equal(d, "\"abcdefghijklmnopqrstuvwxyz...\"");
    /* Cut between characters, never inside one. */
    char small[11]; /* the third "é" would fit by one byte of two */
    d = tr_rnode_describe(tr_rnode_get(spec, "utf"), small, sizeof(small));
    assert_string_equal(d, "\"éé...\"");
    tr_rset_free(rs);
}

/* ----------------------------------------------------------- documents */

static void test_multi_document(void **state)
{
    (void)state;
    struct tr_rset *rs = load_clean("# a comment before anything\n"
                                    "---\n"
                                    "---\n" /* an empty document */
                                    "apiVersion: networking.istio.io/v1beta1\n"
                                    "kind: DestinationRule\n"
                                    "metadata:\n"
                                    "  name: reviews\n"
                                    "  labels:\n"
                                    "    app: reviews\n"
                                    "    app.kubernetes.io/part-of: bookinfo\n"
                                    "    empty:\n"
                                    "  annotations:\n"
                                    "    note: \"any text: at all\"\n"
                                    "spec:\n"
                                    "  host: reviews\n"
                                    "...\n"
                                    "---\n"
                                    "# only a comment\n"
                                    "---\n"
                                    "apiVersion: v1\n"
                                    "kind: Service\n"
                                    "metadata: {name: reviews, namespace: prod}\n"
                                    "spec: ~\n"
                                    "---\n");
    assert_int_equal(tr_rset_count(rs), 2);
    const struct tr_resource *dr = tr_rset_at(rs, 0), *svc = tr_rset_at(rs, 1);
    assert_string_equal(dr->api_version, "networking.istio.io/v1beta1");
    assert_string_equal(dr->group, "networking.istio.io");
    assert_string_equal(dr->version, "v1beta1");
    assert_string_equal(dr->kind, "DestinationRule");
    assert_null(dr->ns);
    assert_string_equal(dr->name, "reviews");
    assert_string_equal(dr->file, "t.yaml");
    assert_int_equal(dr->doc, 1);
    assert_int_equal(dr->line, 4);
    assert_int_equal(dr->col, 1);
    assert_int_equal(dr->index, 0);
    assert_string_equal(spec_str(dr, "host"), "reviews");
    assert_string_equal(tr_resource_label(dr, "app"), "reviews");
    assert_string_equal(tr_resource_label(dr, "app.kubernetes.io/part-of"), "bookinfo");
    assert_string_equal(tr_resource_label(dr, "empty"), "");
    assert_null(tr_resource_label(dr, "absent"));
    assert_int_equal(dr->labels->n, 6);
    const char *note = NULL;
    assert_true(tr_rnode_str(tr_rnode_get(dr->annotations, "note"), &note));
    assert_string_equal(note, "any text: at all");

    assert_string_equal(svc->api_version, "v1");
    assert_string_equal(svc->group, ""); /* the core group */
    assert_string_equal(svc->version, "v1");
    assert_string_equal(svc->ns, "prod");
    assert_null(svc->spec); /* spec: ~ */
    assert_null(svc->labels);
    assert_null(svc->annotations);
    assert_null(tr_resource_label(svc, "app"));
    assert_int_equal(svc->doc, 3);
    assert_int_equal(svc->line, 20);
    assert_int_equal(svc->index, 1);
    tr_rset_free(rs);

    /* Nothing but empty documents, comments and whitespace. */
    const char *empties[] = {"",    "\n\n",      "# nothing\n", "---\n", "---\n---\n...\n",
                             "~\n", "--- null\n"};
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        rs = load_clean(empties[i]);
        assert_int_equal(tr_rset_count(rs), 0);
        size_t n = 9;
        assert_null(tr_rset_of_kind(rs, "", "Service", &n));
        assert_int_equal(n, 0);
        assert_null(tr_rset_find(rs, "", "Service", NULL, "x"));
        tr_rset_free(rs);
    }
}

static void test_lists_are_expanded(void **state)
{
    (void)state;
    struct tr_rset *rs = load_clean("apiVersion: v1\n"
                                    "kind: List\n"
                                    "metadata: {resourceVersion: \"\"}\n"
                                    "items:\n"
                                    "- apiVersion: v1\n"
                                    "  kind: Service\n"
                                    "  metadata: {name: a}\n"
                                    "- apiVersion: v1\n"
                                    "  kind: ServiceList\n" /* a List in a List */
                                    "  items:\n"
                                    "  - apiVersion: v1\n"
                                    "    kind: Service\n"
                                    "    metadata: {name: b}\n"
                                    "- apiVersion: apps/v1\n"
                                    "  kind: Deployment\n"
                                    "  metadata: {name: c}\n"
                                    "---\n"
                                    "apiVersion: v1\n"
                                    "kind: List\n"
                                    "items: []\n"
                                    "---\n"
                                    "apiVersion: v1\n"
                                    "kind: List\n"
                                    "---\n"
                                    /* Ends in "List" but has no items: an object. */
                                    "apiVersion: example.com/v1\n"
                                    "kind: AllowList\n"
                                    "metadata: {name: d}\n"
                                    "spec: {items: 3}\n");
    assert_int_equal(tr_rset_count(rs), 4);
    const char *names[] = {"a", "b", "c", "d"};
    const uint32_t lines[] = {5, 11, 14, 25};
    const uint32_t cols[] = {3, 5, 3, 1};
    for (size_t i = 0; i < 4; i++) {
        const struct tr_resource *r = tr_rset_at(rs, i);
        assert_string_equal(r->name, names[i]);
        assert_int_equal(r->line, lines[i]); /* each item keeps its own line */
        assert_int_equal(r->col, cols[i]);
        assert_int_equal(r->index, i);
    }
    assert_int_equal(tr_rset_at(rs, 0)->doc, 0);
    assert_string_equal(tr_rset_at(rs, 3)->kind, "AllowList");
    assert_int_equal(tr_rset_at(rs, 3)->doc, 3);
    tr_rset_free(rs);

    /* A List whose items are not a list, and items that are not objects. */
    refused("apiVersion: v1\nkind: List\nitems: {a: 1}\n", 3, 8, "items: expected a list");
    struct tr_diags d;
    tr_diags_init(&d);
    rs = load("apiVersion: v1\n"
              "kind: List\n"
              "items:\n"
              "- just text\n"
              "- {apiVersion: v1, kind: Service, metadata: {name: ok}}\n"
              "- [1]\n",
              &d);
    assert_int_equal(tr_rset_count(rs), 1);
    assert_string_equal(tr_rset_at(rs, 0)->name, "ok");
    assert_int_equal(d.n, 2);
    char buf[256];
    assert_string_equal(diag_text(&d, 0, buf, sizeof(buf)),
                        "t.yaml:4:3: error: expected a Kubernetes object (a mapping with "
                        "apiVersion, kind and metadata), got \"just text\"");
    assert_int_equal(d.v[1].where.line, 6);
    tr_rset_free(rs);
    tr_diags_free(&d);

    /* A List needs its own apiVersion. */
    refused("kind: List\nitems: []\n", 1, 1, "apiVersion: missing required field");
}

static void test_json(void **state)
{
    (void)state;
    const char *json = "{\n"
                       "  \"apiVersion\": \"networking.istio.io/v1\",\n"
                       "  \"kind\": \"ServiceEntry\",\n"
                       "  \"metadata\": {\"name\": \"github\", \"namespace\": \"default\"},\n"
                       "  \"spec\": {\"hosts\": [\"github.com\"], \"ports\": [{\"number\":443,"
                       "\"name\":\"https\"}], \"on\": true, \"none\": null, \"pct\": 12.5}\n"
                       "}\n";
    struct tr_rset *rs = load_clean(json);
    assert_int_equal(tr_rset_count(rs), 1);
    const struct tr_resource *r = tr_rset_at(rs, 0);
    assert_string_equal(r->kind, "ServiceEntry");
    assert_string_equal(r->ns, "default");
    const struct tr_rnode *ports = tr_rnode_get(r->spec, "ports");
    assert_int_equal(ports->kind, TR_RNODE_SEQ);
    int64_t n = 0;
    assert_true(tr_rnode_int(tr_rnode_get(ports->head, "number"), &n));
    assert_int_equal(n, 443);
    bool on = false;
    assert_true(tr_rnode_bool(tr_rnode_get(r->spec, "on"), &on));
    assert_true(on);
    assert_true(tr_rnode_is_null(tr_rnode_get(r->spec, "none")));
    double pct = 0;
    assert_true(tr_rnode_double(tr_rnode_get(r->spec, "pct"), &pct));
    assert_true(pct == 12.5);
    assert_int_equal(tr_rnode_get(r->spec, "hosts")->line, 5);
    tr_rset_free(rs);

    /* A JSON list object, one item per line. */
    rs = load_clean(
        "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[\n"
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"a\"}},\n"
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"b\"}}]}\n");
    assert_int_equal(tr_rset_count(rs), 2);
    assert_int_equal(tr_rset_at(rs, 1)->line, 3);
    tr_rset_free(rs);
}

/* ----------------------------------------------------- anchors, aliases */

static void test_anchors_and_aliases(void **state)
{
    (void)state;
    struct tr_rset *rs = load_clean(OBJ("ConfigMap", "c") "spec:\n"
                                                          "  base: &b {retries: 3, hosts: [a, b]}\n"
                                                          "  copy: *b\n"
                                                          "  name: &n reviews\n"
                                                          "  again: *n\n"
                                                          "  list: [*n, *b]\n");
    const struct tr_rnode *spec = tr_rset_at(rs, 0)->spec;
    const struct tr_rnode *base = tr_rnode_get(spec, "base"), *copy = tr_rnode_get(spec, "copy");
    assert_int_equal(copy->kind, TR_RNODE_MAP);
    assert_int_equal(copy->n, base->n);
    assert_int_equal(copy->line, 7); /* where the alias is */
    assert_int_equal(copy->col, 9);
    int64_t i = 0;
    assert_true(tr_rnode_int(tr_rnode_get(copy, "retries"), &i));
    assert_int_equal(i, 3);
    assert_int_equal(tr_rnode_get(copy, "hosts")->n, 2);
    const struct tr_rnode *again = tr_rnode_get(spec, "again");
    assert_string_equal(again->s, "reviews");
    assert_true(again->plain);
    /* An alias node has its own place among its siblings. */
    const struct tr_rnode *list = tr_rnode_get(spec, "list");
    assert_int_equal(list->n, 2);
    assert_string_equal(list->head->s, "reviews");
    assert_int_equal(list->head->next->kind, TR_RNODE_MAP);
    assert_null(list->head->next->next);
    tr_rset_free(rs);

    /* Anchors belong to their document. */
    struct tr_diags d;
    tr_diags_init(&d);
    rs =
        load(OBJ("ConfigMap", "a") "spec: &s {x: 1}\n---\n" OBJ("ConfigMap", "b") "spec: *s\n", &d);
    assert_true(d.n_errors >= 1);
    assert_int_equal(tr_rset_count(rs), 1);
    assert_string_equal(tr_rset_at(rs, 0)->name, "a");
    tr_rset_free(rs);
    tr_diags_free(&d);

    /* An alias inside the node it names would be a cycle. */
    refused(OBJ("ConfigMap", "c") "spec: &loop {self: *loop}\n", 5, 20, "(a cycle)");
}

static void test_billion_laughs_runs_out_of_budget(void **state)
{
    (void)state;
    /* Ten levels of ten aliases each: 10^10 nodes once expanded, a few
     * hundred bytes of text. */
    char text[4096];
    int o = snprintf(text, sizeof(text), OBJ("ConfigMap", "lol") "spec:\n  l0: &l0 [lol]\n");
    for (int lvl = 1; lvl <= 10; lvl++) {
        o += snprintf(text + o, sizeof(text) - (size_t)o, "  l%d: &l%d [", lvl, lvl);
        for (int k = 0; k < 10; k++)
            o +=
                snprintf(text + o, sizeof(text) - (size_t)o, "%s*l%d", k != 0 ? ", " : "", lvl - 1);
        o += snprintf(text + o, sizeof(text) - (size_t)o, "]\n");
    }
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = load(text, &d);
    /* l7 (line 13) is the first to pass the budget, at one of its aliases. */
    assert_int_equal(d.n, 1);
    assert_int_equal(d.v[0].where.line, 13);
    assert_true(d.v[0].where.col >= 8);
    char buf[256];
    assert_non_null(strstr(diag_text(&d, 0, buf, sizeof(buf)),
                           "more than 4000000 YAML nodes in this snapshot"));
    assert_int_equal(tr_rset_count(rs), 0);
    tr_rset_free(rs);
    tr_diags_free(&d);

    /* The budget is per set: what came before in the buffer stays. */
    char *two = malloc(strlen(text) + 128);
    assert_non_null(two);
    sprintf(two, OBJ("ConfigMap", "first") "---\n%s", text);
    tr_diags_init(&d);
    rs = load(two, &d);
    assert_int_equal(d.n_errors, 1);
    assert_int_equal(tr_rset_count(rs), 1);
    assert_string_equal(tr_rset_at(rs, 0)->name, "first");
    tr_rset_free(rs);
    tr_diags_free(&d);
    free(two);
}

static void test_alias_expansion_under_budget(void **state)
{
    (void)state;
    /* Five levels of ten: 10^5 leaves, inside the budget; a reader walking
     * every node sees them all. */
    char text[4096];
    int o = snprintf(text, sizeof(text), OBJ("ConfigMap", "ok") "spec:\n  l0: &l0 [x]\n");
    for (int lvl = 1; lvl <= 5; lvl++) {
        o += snprintf(text + o, sizeof(text) - (size_t)o, "  l%d: &l%d [", lvl, lvl);
        for (int k = 0; k < 10; k++)
            o +=
                snprintf(text + o, sizeof(text) - (size_t)o, "%s*l%d", k != 0 ? ", " : "", lvl - 1);
        o += snprintf(text + o, sizeof(text) - (size_t)o, "]\n");
    }
    struct tr_rset *rs = load_clean(text);
    const struct tr_rnode *l5 = tr_rnode_get(tr_rset_at(rs, 0)->spec, "l5");
    size_t leaves = 0;
    /* Iterative walk down five levels of lists. */
    const struct tr_rnode *stack[64];
    size_t depth = 0;
    stack[depth++] = l5;
    while (depth > 0) {
        const struct tr_rnode *n = stack[--depth];
        if (n->kind == TR_RNODE_SCALAR) {
            assert_string_equal(n->s, "x");
            leaves++;
            continue;
        }
        for (const struct tr_rnode *c = n->head; c != NULL; c = c->next) {
            if (c->kind == TR_RNODE_SCALAR)
                leaves++;
            else
                stack[depth++] = c;
            assert_true(depth < 64);
        }
    }
    assert_int_equal(leaves, 100000);
    tr_rset_free(rs);
}

/* --------------------------------------------------------- input rules */

static void test_tags(void **state)
{
    (void)state;
    refused(OBJ("ConfigMap", "c") "spec: !custom {a: 1}\n", 5, 15,
            "YAML tag \"!\"\"custom\" is not supported");
    refused(OBJ("ConfigMap", "c") "spec: {a: !!binary aGVsbG8=}\n", 5, 20,
            "YAML tag \"!!\"\"binary\" is not supported");
    refused(OBJ("ConfigMap", "c") "spec: !!str {a: 1}\n", 5, 13,
            "YAML tag \"!!\"\"str\" on a mapping");
    refused(OBJ("ConfigMap", "c") "spec: !!map [1]\n", 5, 13, "on a list");
    refused(OBJ("ConfigMap", "c") "spec: {a: !!seq x}\n", 5, 17, "on a scalar");
    refused(OBJ("ConfigMap", "c") "spec: {a: !!int ten}\n", 5, 17,
            "\"ten\" is tagged !!int but is not an integer");
    refused(OBJ("ConfigMap", "c") "spec: {a: !!bool yes}\n", 5, 18, "is not true or false");
    refused("%TAG !e! tag:example.com,2000:\n---\n" OBJ("ConfigMap", "c"), 2, 1,
            "%TAG directives are not supported");
    /* The standard ones are fine, verbatim too. */
    struct tr_rset *rs =
        load_clean(OBJ("ConfigMap", "c") "spec: !!map {a: !<tag:yaml.org,2002:str> 1, "
                                         "b: !!seq [!!null null], c: !!float 1.5}\n");
    const struct tr_rnode *a = tr_rnode_get(tr_rset_at(rs, 0)->spec, "a");
    assert_false(a->plain);
    tr_rset_free(rs);
}

static void test_depth_limit(void **state)
{
    (void)state;
    /* The object is one level; 63 more flow lists make 64: fine. One more
     * is refused. */
    for (int extra = 64; extra <= 65; extra++) {
        char text[1024];
        int o = snprintf(text, sizeof(text), OBJ("ConfigMap", "c") "spec: ");
        for (int i = 1; i < extra; i++)
            text[o++] = '[';
        for (int i = 1; i < extra; i++)
            text[o++] = ']';
        text[o++] = '\n';
        text[o] = '\0';
        if (extra == 64) {
            struct tr_rset *rs = load_clean(text);
            assert_int_equal(tr_rset_count(rs), 1);
            tr_rset_free(rs);
        } else {
            refused(text, 5, 7 + 63, "nesting deeper than 64 levels"); /* the 64th "[" */
        }
    }
}

/* An alias repeats its node's levels: the limit holds for the tree a
 * reader walks. */
static void test_depth_limit_through_aliases(void **state)
{
    (void)state;
    char text[1024];
    for (int extra = 0; extra <= 1; extra++) {
        /* base holds 40 levels; the alias stands inside 23 (+extra) more
         * levels below spec (level 1 is the object): 1 + 23 + 40 = 64. */
        int o = snprintf(text, sizeof(text), OBJ("ConfigMap", "c") "base: &b ");
        for (int i = 0; i < 40; i++)
            text[o++] = '[';
        for (int i = 0; i < 40; i++)
            text[o++] = ']';
        o += snprintf(text + o, sizeof(text) - (size_t)o, "\nspec: ");
        for (int i = 0; i < 23 + extra; i++)
            text[o++] = '[';
        o += snprintf(text + o, sizeof(text) - (size_t)o, "*b");
        for (int i = 0; i < 23 + extra; i++)
            text[o++] = ']';
        snprintf(text + o, sizeof(text) - (size_t)o, "\n");
        if (extra == 0) {
            struct tr_rset *rs = load_clean(text);
            assert_int_equal(tr_rset_count(rs), 1);
            tr_rset_free(rs);
        } else {
            refused(text, 6, 7 + 24, "nesting deeper than 64 levels through alias \"b\"");
        }
    }
}

static void test_size_limit(void **state)
{
    (void)state;
    size_t len = TR_RES_MAX_FILE_SIZE + 1;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, '\n', len);
    memcpy(big, OBJ("ConfigMap", "c"), strlen(OBJ("ConfigMap", "c")));
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = load_n(big, len, &d);
    assert_int_equal(d.n, 1);
    char buf[256];
    assert_string_equal(diag_text(&d, 0, buf, sizeof(buf)),
                        "t.yaml: error: 16777217 bytes; the limit is 16777216 bytes; the file is "
                        "not read");
    assert_int_equal(tr_rset_count(rs), 0);
    tr_rset_free(rs);
    tr_diags_free(&d);
    /* At the limit it is read. */
    rs = load_n(big, len - 1, NULL);
    assert_int_equal(tr_rset_count(rs), 1);
    tr_rset_free(rs);
    free(big);
}

static void test_bytes_refused(void **state)
{
    (void)state;
    refused(OBJ("ConfigMap", "c") "spec: {a: \"\xff\"}\n", 5, 12, "invalid UTF-8 (byte 0xff)");
    refused(OBJ("ConfigMap", "c") "spec: {a: \"\xc3\"}\n", 5, 12, "invalid UTF-8");
    refused(OBJ("ConfigMap", "c") "spec: {a: \"\xed\xa0\x80\"}\n", 5, 12, "bad sequence");
    refused(OBJ("ConfigMap", "c") "spec: {a: \"x\x01\"}\n", 5, 13,
            "character U+0001 is not allowed");
    refused(OBJ("ConfigMap", "c") "spec:\n  ? complex\n  : value\n", 6, 3,
            "explicit mapping keys (\"? \") are not supported");
    refused(OBJ("ConfigMap", "c") "spec:\n- ? x\n", 6, 3, "explicit mapping keys");
    /* A NUL inside a quoted name is refused (strings are C strings). */
    refused("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"a\\0b\"\n", 4, 9,
            "a NUL character is not allowed");
}

static void test_keys(void **state)
{
    (void)state;
    refused(OBJ("ConfigMap", "c") "spec:\n  a: 1\n  b: 2\n  a: 3\n", 8, 3,
            "duplicate key \"a\" (first at line 6, column 3)");
    /* A big mapping takes the sorted path. */
    char text[4096];
    int o = snprintf(text, sizeof(text), OBJ("ConfigMap", "c") "spec:\n");
    for (int i = 0; i < 40; i++)
        o += snprintf(text + o, sizeof(text) - (size_t)o, "  k%d: %d\n", i, i);
    snprintf(text + o, sizeof(text) - (size_t)o, "  k17: again\n");
    refused(text, 46, 3, "duplicate key \"k17\" (first at line 23, column 3)");
    /* Same text, different quoting: the same key. */
    refused(OBJ("ConfigMap", "c") "spec: {a: 1, 'a': 2}\n", 5, 14, "duplicate key \"a\"");
    refused(OBJ("ConfigMap", "c") "spec: {[a]: 1}\n", 5, 8,
            "a mapping key must be a scalar, not a list");
    refused(OBJ("ConfigMap", "c") "spec: {{a: 1}: 1}\n", 5, 8, "not a mapping");
    refused(OBJ("ConfigMap", "c") "base: &b {x: 1}\nspec: {*b : 1}\n", 6, 8,
            "a mapping key must be a scalar, not a mapping");
    refused(OBJ("ConfigMap", "c") "base: &b {x: 1}\nspec:\n  <<: *b\n", 7, 3,
            "merge keys (\"<<\") are not supported");
    /* Quoted, "<<" is only a key. */
    struct tr_rset *rs = load_clean(OBJ("ConfigMap", "c") "spec: {\"<<\": 1}\n");
    assert_non_null(tr_rnode_get(tr_rset_at(rs, 0)->spec, "<<"));
    tr_rset_free(rs);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs =
        load(OBJ("ConfigMap", "before") "---\n" OBJ(
                 "ConfigMap", "broken") "spec: [unclosed\n---\n" OBJ("ConfigMap", "after"),
             &d);
    assert_int_equal(tr_rset_count(rs), 1);
    assert_string_equal(tr_rset_at(rs, 0)->name, "before");
    assert_int_equal(d.n, 1);
    char buf[256];
    diag_text(&d, 0, buf, sizeof(buf));
    assert_non_null(strstr(buf, "YAML syntax error: "));
    assert_non_null(strstr(buf, "the rest of the file is not read"));
    assert_true(d.v[0].where.line >= 10);
    tr_rset_free(rs);
    tr_diags_free(&d);

    /* An alias to no anchor. */
    tr_diags_init(&d);
    rs = load(OBJ("ConfigMap", "c") "spec: *nowhere\n", &d);
    assert_int_equal(d.n_errors, 1);
    assert_int_equal(d.v[0].where.line, 5);
    assert_int_equal(tr_rset_count(rs), 0);
    tr_rset_free(rs);
    tr_diags_free(&d);

    /* A document that breaks a rule is left out; the next one is read. */
    tr_diags_init(&d);
    rs = load(OBJ("ConfigMap", "a") "spec: !x y\n---\n" OBJ("ConfigMap", "b"), &d);
    assert_int_equal(d.n, 1);
    assert_non_null(strstr(diag_text(&d, 0, buf, sizeof(buf)), "document 1 is left out"));
    assert_int_equal(tr_rset_count(rs), 1);
    assert_string_equal(tr_rset_at(rs, 0)->name, "b");
    tr_rset_free(rs);
    tr_diags_free(&d);
}

/* libfyaml 0.7.12 refuses an empty entry that ends a sequence written at its
 * key's indentation; the reader reads it as the null it is. */
static void test_empty_indentless_entries(void **state)
{
    (void)state;
    struct tr_rset *rs = load_clean("apiVersion: security.istio.io/v1\n"
                                    "kind: RequestAuthentication\n"
                                    "metadata:\n"
                                    "  name: no-issuer\n"
                                    "spec:\n"
                                    "  jwtRules:\n"
                                    "  -\n"
                                    "  other:\n"
                                    "  - a\n"
                                    "  -   # a comment\n"
                                    "  last: |\n"
                                    "    -\n"
                                    "    kept\n"
                                    "---\n" OBJ("ConfigMap", "next") "spec:\n  x:\n  -\n");
    assert_int_equal(tr_rset_count(rs), 2);
    const struct tr_rnode *spec = tr_rset_at(rs, 0)->spec;
    const struct tr_rnode *rules = tr_rnode_get(spec, "jwtRules");
    assert_int_equal(rules->kind, TR_RNODE_SEQ);
    assert_int_equal(rules->n, 1);
    assert_true(tr_rnode_is_null(rules->head));
    assert_int_equal(rules->head->line, 7);
    const struct tr_rnode *other = tr_rnode_get(spec, "other");
    assert_int_equal(other->n, 2);
    assert_string_equal(other->head->s, "a");
    assert_true(tr_rnode_is_null(other->head->next));
    /* A block scalar's "-" line is text, untouched. */
    assert_string_equal(spec_str(tr_rset_at(rs, 0), "last"), "-\nkept\n");
    assert_int_equal(tr_rnode_get(tr_rset_at(rs, 1)->spec, "x")->n, 1);
    tr_rset_free(rs);
}

/* ------------------------------------------------------------- objects */

static void test_object_checks(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint32_t line, col;
        const char *want;
    } cases[] = {
        {"kind: Service\nmetadata: {name: a}\n", 1, 1,
         "Service a: apiVersion: missing required field"},
        {"apiVersion: v1\nmetadata: {name: a}\n", 1, 1, "a: kind: missing required field"},
        {"apiVersion: v1\nkind: Service\n", 1, 1, "Service: metadata: missing required field"},
        {"apiVersion: v1\nkind: Service\nmetadata:\n", 3, 1,
         "Service: metadata: missing required field"},
        {"apiVersion: v1\nkind: Service\nmetadata: [a]\n", 3, 11,
         "metadata: expected a mapping, got a list"},
        {"apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n", 3, 11,
         "error: Service: metadata.name: missing required field"},
        {"apiVersion: v1\nkind: Service\nmetadata: {generateName: web-}\n", 3, 11,
         "metadata.generateName is not supported"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: 123}\n", 3, 18,
         "metadata.name: expected a string, got \"123\", which YAML reads as a number (quote it)"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: yes}\n", 3, 18,
         "which YAML reads as a boolean (quote it)"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: {a: 1}}\n", 3, 18,
         "metadata.name: expected a string, got a mapping"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a/b}\n", 3, 18,
         "metadata.name: \"a/b\" is not a name"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: ..}\n", 3, 18, "is not a name"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: 'a b'}\n", 3, 18, "is not a name"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: Prod}\n", 3, 32,
         "Service a: metadata.namespace: \"Prod\" is not a namespace"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: -x}\n", 3, 32,
         "is not a namespace"},
        {"apiVersion: a/b/c\nkind: Service\nmetadata: {name: a}\n", 1, 13,
         "Service a: apiVersion: \"a/b/c\" is not GROUP/VERSION or VERSION"},
        {"apiVersion: /v1\nkind: Service\nmetadata: {name: a}\n", 1, 13, "is not GROUP/VERSION"},
        {"apiVersion: Apps/v1\nkind: Service\nmetadata: {name: a}\n", 1, 13,
         "is not GROUP/VERSION"},
        {"apiVersion: apps/\nkind: Service\nmetadata: {name: a}\n", 1, 13, "is not GROUP/VERSION"},
        {"apiVersion: 1.0\nkind: Service\nmetadata: {name: a}\n", 1, 13,
         "which YAML reads as a number"},
        {"apiVersion: v1\nkind: Ser-vice\nmetadata: {name: a}\n", 2, 7,
         "a: kind: \"Ser-vice\" is not a kind"},
        {"apiVersion: v1\nkind: [Service]\nmetadata: {name: a}\n", 2, 7,
         "kind: expected a string, got a list"},
        {"apiversion: v1\nkind: Service\nmetadata: {name: a}\n", 1, 1,
         "apiVersion: missing required field (found \"apiversion\": keys are case-sensitive)"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: [x]}\n", 3, 29,
         "Service a: metadata.labels: expected a mapping, got a list"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {-bad: x}}\n", 3, 30,
         "metadata.labels: key \"-bad\" is not a valid label key"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {Bad.Prefix/x: y}}\n", 3, 30,
         "is not a valid label key"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {app: true}}\n", 3, 35,
         "metadata.labels: \"app\": expected a string, got \"true\", which YAML reads as a "
         "boolean (quote it)"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {v: 1.0}}\n", 3, 33,
         "which YAML reads as a number"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {v: 'a b'}}\n", 3, 33,
         "\"v\": value \"a b\" is not a valid label value"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {v: [1]}}\n", 3, 33,
         "\"v\": expected a string, got a list"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, annotations: {x: {y: 1}}}\n", 3, 38,
         "metadata.annotations: \"x\": expected a string, got a mapping"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: a, annotations: {'x y': z}}\n", 3, 35,
         "key \"x y\" is not a valid annotation key"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tr_diags d;
        tr_diags_init(&d);
        struct tr_rset *rs = load(cases[i].text, &d);
        char buf[512];
        if (d.n != 1 || d.v[0].where.line != cases[i].line || d.v[0].where.col != cases[i].col ||
            strstr(diag_text(&d, 0, buf, sizeof(buf)), cases[i].want) == NULL) {
            for (size_t k = 0; k < d.n; k++)
                fprintf(stderr, "  finding: %s\n", diag_text(&d, k, buf, sizeof(buf)));
            fail_msg("case %zu (%s): want one finding at %u:%u with \"%s\"", i, cases[i].text,
                     cases[i].line, cases[i].col, cases[i].want);
        }
        assert_int_equal(tr_rset_count(rs), 0);
        tr_rset_free(rs);
        tr_diags_free(&d);
    }
}

static void test_object_findings_name_the_object(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    /* Every problem of one object is reported, each naming it. */
    struct tr_rset *rs = load("apiVersion: networking.istio.io/v1\n"
                              "kind: VirtualService\n"
                              "metadata:\n"
                              "  name: reviews\n"
                              "  namespace: prod\n"
                              "  labels: {app: true, version: ok}\n"
                              "  annotations: {'bad key': x}\n",
                              &d);
    assert_int_equal(tr_rset_count(rs), 0);
    assert_int_equal(d.n, 2);
    for (size_t i = 0; i < d.n; i++) {
        assert_string_equal(d.v[i].where.kind, "VirtualService");
        assert_string_equal(d.v[i].where.ns, "prod");
        assert_string_equal(d.v[i].where.name, "reviews");
        assert_string_equal(d.v[i].where.file, "t.yaml");
    }
    assert_string_equal(d.v[0].where.path, "metadata.labels");
    assert_int_equal(d.v[0].where.line, 6);
    assert_int_equal(d.v[0].where.col, 17);
    assert_string_equal(d.v[1].where.path, "metadata.annotations");
    char buf[512];
    assert_string_equal(
        diag_text(&d, 0, buf, sizeof(buf)),
        "t.yaml:6:17: error: VirtualService prod/reviews: metadata.labels: \"app\": "
        "expected a string, got \"true\", which YAML reads as a boolean (quote it)");
    tr_rset_free(rs);
    tr_diags_free(&d);

    /* Annotations: at most 256 KiB in all. */
    size_t big = 300 * 1024;
    char *text = malloc(big + 256);
    assert_non_null(text);
    int o = sprintf(text, OBJ("ConfigMap", "c") "  annotations:\n    big: \"");
    memset(text + o, 'x', big);
    strcpy(text + o + big, "\"\n");
    tr_diags_init(&d);
    rs = load(text, &d);
    assert_int_equal(d.n, 1);
    assert_non_null(strstr(diag_text(&d, 0, buf, sizeof(buf)),
                           "annotations are 307203 bytes; the limit is 262144"));
    assert_int_equal(tr_rset_count(rs), 0);
    tr_rset_free(rs);
    tr_diags_free(&d);
    free(text);

    /* Empty namespace: as if not written. Null label values read as "". */
    rs = load_clean("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: '', labels: "
                    "{x: ~, y: ''}, annotations: {z: ~}}\n");
    assert_null(tr_rset_at(rs, 0)->ns);
    assert_string_equal(tr_resource_label(tr_rset_at(rs, 0), "x"), "");
    assert_string_equal(tr_resource_label(tr_rset_at(rs, 0), "y"), "");
    tr_rset_free(rs);
}

/* ----------------------------------------------------- duplicates, lookup */

static void test_duplicates(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = load("apiVersion: networking.istio.io/v1beta1\n"
                              "kind: VirtualService\n"
                              "metadata: {name: r, namespace: prod}\n"
                              "spec: {first: true}\n"
                              "---\n"
                              "apiVersion: networking.istio.io/v1\n" /* another version: same */
                              "kind: VirtualService\n"
                              "metadata: {name: r, namespace: prod}\n"
                              "spec: {first: false}\n"
                              "---\n"
                              "apiVersion: networking.istio.io/v1\n"
                              "kind: VirtualService\n"
                              "metadata: {name: r}\n" /* no namespace: another object */
                              "---\n"
                              "apiVersion: networking.istio.io/v1\n"
                              "kind: DestinationRule\n" /* another kind */
                              "metadata: {name: r, namespace: prod}\n"
                              "---\n"
                              "apiVersion: example.com/v1\n"
                              "kind: VirtualService\n" /* another group */
                              "metadata: {name: r, namespace: prod}\n",
                              &d);
    assert_int_equal(tr_rset_count(rs), 4);
    assert_int_equal(d.n, 1);
    char buf[512];
    assert_string_equal(diag_text(&d, 0, buf, sizeof(buf)),
                        "t.yaml:6:1: error: VirtualService prod/r: duplicate object: "
                        "networking.istio.io/VirtualService prod/r is already defined at "
                        "t.yaml:1:1; the first one is kept");
    const struct tr_resource *kept =
        tr_rset_find(rs, "networking.istio.io", "VirtualService", "prod", "r");
    assert_non_null(kept);
    assert_string_equal(kept->version, "v1beta1");
    bool first = false;
    assert_true(tr_rnode_bool(tr_rnode_get(kept->spec, "first"), &first));
    assert_true(first);
    /* Indexes are positions in the set, duplicates gone. */
    for (size_t i = 0; i < tr_rset_count(rs); i++)
        assert_int_equal(tr_rset_at(rs, i)->index, i);
    assert_ptr_equal(tr_rset_at(rs, 0), kept);
    assert_null(tr_rset_at(rs, 1)->ns);
    tr_rset_free(rs);
    tr_diags_free(&d);
}

static void test_lookup(void **state)
{
    (void)state;
    struct tr_rset *rs =
        load_clean("apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: x}\n"
                   "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\n"
                   "---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n"
                   "---\napiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\n"
                   "---\napiVersion: networking.istio.io/v1\nkind: Service\n"
                   "metadata: {name: a}\n");
    size_t n = 0;
    const struct tr_resource *const *svc = tr_rset_of_kind(rs, "", "Service", &n);
    assert_int_equal(n, 3);
    /* In load order. */
    assert_string_equal(svc[0]->name, "b");
    assert_string_equal(svc[1]->name, "a");
    assert_null(svc[1]->ns);
    assert_string_equal(svc[2]->ns, "x");
    svc = tr_rset_of_kind(rs, NULL, "Service", &n); /* NULL group: the core one */
    assert_int_equal(n, 3);
    svc = tr_rset_of_kind(rs, "networking.istio.io", "Service", &n);
    assert_int_equal(n, 1);
    assert_string_equal(svc[0]->group, "networking.istio.io");
    assert_null(tr_rset_of_kind(rs, "apps", "Service", &n));
    assert_int_equal(n, 0);
    assert_null(tr_rset_of_kind(rs, "", "Pod", &n));
    assert_int_equal(n, 0);
    tr_rset_of_kind(rs, "apps", "Deployment", &n);
    assert_int_equal(n, 1);

    assert_string_equal(tr_rset_find(rs, "", "Service", NULL, "a")->name, "a");
    assert_null(tr_rset_find(rs, "", "Service", NULL, "a")->ns);
    assert_string_equal(tr_rset_find(rs, "", "Service", "x", "a")->ns, "x");
    assert_int_equal(tr_rset_find(rs, "", "Service", "x", "a")->index, 3);
    assert_null(tr_rset_find(rs, "", "Service", "default", "a"));
    assert_null(tr_rset_find(rs, "", "Service", NULL, "b"));
    assert_null(tr_rset_find(rs, "", "Deployment", NULL, "b"));
    assert_non_null(tr_rset_find(rs, "apps", "Deployment", NULL, "b"));
    assert_null(tr_rset_find(rs, "", "Service", NULL, "zzz"));
    tr_rset_free(rs);
}

/* A mesh-sized set: every object found by its key, every kind complete. */
/* Sealing groups objects by kind; more than 256 kinds are sorted whole.
 * Both ways: every kind's objects in load order, every object found, the
 * second of two equal keys reported and dropped. */
static void check_many_kinds(size_t n_kinds)
{
    size_t cap = n_kinds * 2 * 160 + 256;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = 0;
    for (size_t i = 0; i < n_kinds * 2; i++)
        o += (size_t)snprintf(text + o, cap - o,
                              "---\napiVersion: g%zu.example.com/v1\nkind: K%zu\n"
                              "metadata: {name: x%zu, namespace: ns}\n",
                              (n_kinds - 1 - i % n_kinds) % 7, n_kinds - 1 - i % n_kinds,
                              i / n_kinds);
    /* a duplicate of the first object */
    o += (size_t)snprintf(text + o, cap - o,
                          "---\napiVersion: g%zu.example.com/v1\nkind: K%zu\n"
                          "metadata: {name: x0, namespace: ns}\n",
                          (n_kinds - 1) % 7, n_kinds - 1);
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = load_n(text, o, &d);
    free(text);
    assert_int_equal(d.n_errors, 1);
    assert_int_equal(tr_rset_count(rs), n_kinds * 2);
    char group[32], kind[32], name[32];
    for (size_t k = 0; k < n_kinds; k++) {
        snprintf(group, sizeof(group), "g%zu.example.com", k % 7);
        snprintf(kind, sizeof(kind), "K%zu", k);
        size_t n = 0;
        const struct tr_resource *const *v = tr_rset_of_kind(rs, group, kind, &n);
        assert_int_equal(n, 2);
        assert_true(v[0]->index < v[1]->index);
        assert_string_equal(v[0]->name, "x0");
        for (size_t j = 0; j < 2; j++) {
            snprintf(name, sizeof(name), "x%zu", j);
            const struct tr_resource *r = tr_rset_find(rs, group, kind, "ns", name);
            assert_non_null(r);
            assert_ptr_equal(r, v[j]);
        }
    }
    tr_rset_free(rs);
    tr_diags_free(&d);
}

static void test_seal_many_kinds(void **state)
{
    (void)state;
    check_many_kinds(5);
    check_many_kinds(300);
}

/* ------------------------------------- merged seal = sorted seal */

/* A small deterministic generator (the same sequence on every run). */
static uint64_t rnd_next(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return *s >> 33;
}

/* A random file: objects of a few kinds, namespaces and names (so that
 * duplicates occur within and across files), sometimes in a List, empty
 * documents; sometimes (many) more kinds than sealing groups by. */
static size_t random_file(uint64_t *s, char *buf, size_t cap)
{
    static const char *const api[] = {
        "v1", "v1", "v1", "networking.istio.io/v1", "networking.istio.io/v1beta1", "apps/v1"};
    static const char *const kinds[] = {"Service",        "Endpoints",       "Pod",
                                        "VirtualService", "DestinationRule", "Deployment"};
    static const char *const nss[] = {NULL, "a", "b"};
    size_t o = 0, docs = rnd_next(s) % 12;
    bool many = rnd_next(s) % 8 == 0;
    for (size_t i = 0; i < docs; i++) {
        size_t k = rnd_next(s) % 6, ns = rnd_next(s) % 3, name = rnd_next(s) % 8;
        char kind[32];
        if (many)
            snprintf(kind, sizeof(kind), "Kind%u", (unsigned)(rnd_next(s) % 300));
        else
            snprintf(kind, sizeof(kind), "%s", kinds[k]);
        char meta[64];
        snprintf(meta, sizeof(meta), "{name: n%zu%s%s}", name, nss[ns] ? ", namespace: " : "",
                 nss[ns] ? nss[ns] : "");
        switch (rnd_next(s) % 6) {
        case 0:
            o += (size_t)snprintf(buf + o, cap - o, "---\n");
            break;
        case 1:
            o += (size_t)snprintf(buf + o, cap - o,
                                  "---\napiVersion: v1\nkind: List\nitems:\n"
                                  "- {apiVersion: %s, kind: %s, metadata: %s}\n"
                                  "- {apiVersion: v1, kind: Service, metadata: {name: l%zu}}\n",
                                  api[k], kind, meta, name);
            break;
        default:
            o += (size_t)snprintf(buf + o, cap - o,
                                  "---\napiVersion: %s\nkind: %s\nmetadata: %s\nspec: {x: %u}\n",
                                  api[k], kind, meta, (unsigned)(rnd_next(s) % 3));
            break;
        }
        assert_true(o < cap);
    }
    return o;
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool count_diff(void *arg, const struct tr_resource *x, const struct tr_resource *y)
{
    (void)x;
    (void)y;
    ++*(size_t *)arg;
    return true;
}

/* Two sealed sets alike: load order, both lookup tables, node trees. */
static void assert_sealed_eq(const struct tr_rset *a, const struct tr_rset *b)
{
    assert_true(a->sealed && b->sealed);
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const struct tr_resource *x = a->v[i], *y = b->v[i];
        assert_true(same_str(x->group, y->group) && same_str(x->kind, y->kind) &&
                    same_str(x->ns, y->ns) && same_str(x->name, y->name) &&
                    same_str(x->file, y->file));
        assert_int_equal(x->doc, y->doc);
        assert_int_equal(x->line, y->line);
        assert_int_equal(x->index, i);
        assert_int_equal(y->index, i);
        assert_int_equal(a->by_key[i]->index, b->by_key[i]->index);
        assert_int_equal(a->by_kind[i]->index, b->by_kind[i]->index);
    }
    size_t diffs = 0;
    tr_rset_diff(a, b, count_diff, &diffs);
    assert_int_equal(diffs, 0);
}

static void assert_diags_same(const struct tr_diags *a, const struct tr_diags *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        char fa[1024], fb[1024];
        tr_diag_format(&a->v[i], fa, sizeof(fa));
        tr_diag_format(&b->v[i], fb, sizeof(fb));
        assert_string_equal(fa, fb);
    }
}

/* A set sealed from kept parses (each sorted once, at its parse, the spans
 * merged) is the set sealed by sorting everything: same order, tables and
 * findings (duplicates across files reported the same way), over random
 * edit sequences, some files added as text (sorted at the seal) between
 * kept parses. */
static void test_seal_merged_equals_sorted(void **state)
{
    (void)state;
    enum { FILES = 7, ROUNDS = 300, CAP = 64 * 1024 };
    uint64_t s = 42;
    char *text[FILES];
    size_t len[FILES];
    struct res_parsed *p[FILES];
    char names[FILES][16];
    for (size_t f = 0; f < FILES; f++) {
        snprintf(names[f], sizeof(names[f]), "f%zu.yaml", f);
        text[f] = malloc(CAP);
        assert_non_null(text[f]);
        len[f] = random_file(&s, text[f], CAP);
        char *copy = malloc(len[f] + 1);
        assert_non_null(copy);
        memcpy(copy, text[f], len[f]);
        p[f] = res_parsed_new(copy, len[f], names[f], true);
        assert_non_null(p[f]);
    }
    for (int round = 0; round < ROUNDS; round++) {
        /* one or two files edited: parsed again; the others' parses kept */
        for (size_t e = 0, edits = 1 + rnd_next(&s) % 2; e < edits; e++) {
            size_t f = rnd_next(&s) % FILES;
            len[f] = random_file(&s, text[f], CAP);
            char *copy = malloc(len[f] + 1);
            assert_non_null(copy);
            memcpy(copy, text[f], len[f]);
            res_parsed_release(p[f]);
            p[f] = res_parsed_new(copy, len[f], names[f], true);
            assert_non_null(p[f]);
        }
        struct tr_diags dm, ds;
        tr_diags_init(&dm);
        tr_diags_init(&ds);
        struct tr_rset *merged = res_set_new(), *sorted = res_set_new();
        assert_non_null(merged);
        assert_non_null(sorted);
        for (size_t f = 0; f < FILES; f++) {
            if (rnd_next(&s) % 4 == 0)
                assert_true(res_set_add_buffer(merged, text[f], len[f], names[f], &dm));
            else
                assert_true(res_set_add_parsed(merged, p[f], names[f], &dm));
            assert_true(res_set_add_buffer(sorted, text[f], len[f], names[f], &ds));
        }
        assert_true(res_set_seal(merged, &dm));
        assert_true(res_set_seal(sorted, &ds));
        assert_sealed_eq(merged, sorted);
        assert_diags_same(&dm, &ds);
        tr_rset_free(merged);
        tr_rset_free(sorted);
        tr_diags_free(&dm);
        tr_diags_free(&ds);
    }
    for (size_t f = 0; f < FILES; f++) {
        res_parsed_release(p[f]);
        free(text[f]);
    }
}

static void test_lookup_at_scale(void **state)
{
    (void)state;
    const size_t per_kind = 6000;
    const char *kinds[] = {"Service", "VirtualService", "DestinationRule"};
    const char *groups[] = {"", "networking.istio.io", "networking.istio.io"};
    size_t cap = per_kind * 3 * 120;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = 0;
    /* Interleaved kinds, names in an order unlike their sort order. */
    for (size_t i = 0; i < per_kind; i++) {
        for (size_t k = 0; k < 3; k++) {
            o += (size_t)snprintf(text + o, cap - o,
                                  "---\napiVersion: %s%sv1\nkind: %s\nmetadata: {name: n%zu, "
                                  "namespace: ns%zu}\n",
                                  groups[k], groups[k][0] != '\0' ? "/" : "", kinds[k],
                                  (i * 7919) % per_kind, i % 10);
        }
    }
    struct tr_rset *rs = load_n(text, o, NULL);
    free(text);
    assert_int_equal(tr_rset_count(rs), per_kind * 3);
    for (size_t k = 0; k < 3; k++) {
        size_t n = 0;
        const struct tr_resource *const *v = tr_rset_of_kind(rs, groups[k], kinds[k], &n);
        assert_int_equal(n, per_kind);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(v[i]->kind, kinds[k]);
            if (i > 0)
                assert_true(v[i]->index > v[i - 1]->index);
        }
    }
    char name[32], ns[32];
    for (size_t i = 0; i < per_kind; i++) {
        snprintf(name, sizeof(name), "n%zu", (i * 7919) % per_kind);
        snprintf(ns, sizeof(ns), "ns%zu", i % 10);
        for (size_t k = 0; k < 3; k++) {
            const struct tr_resource *r = tr_rset_find(rs, groups[k], kinds[k], ns, name);
            assert_non_null(r);
            assert_int_equal(r->index, i * 3 + k);
        }
    }
    tr_rset_free(rs);
}

static void test_null_diags_and_names(void **state)
{
    (void)state;
    /* Problems without a list to report to: still a set. */
    struct tr_rset *rs = tr_rset_from_buffer("kind: [\n", 8, NULL, NULL);
    assert_non_null(rs);
    assert_int_equal(tr_rset_count(rs), 0);
    tr_rset_free(rs);
    rs = tr_rset_from_buffer(OBJ("Service", "a"), strlen(OBJ("Service", "a")), NULL, NULL);
    assert_string_equal(tr_rset_at(rs, 0)->file, "<input>");
    tr_rset_free(rs);
    tr_rset_free(NULL);
    assert_int_equal(tr_rset_count(NULL), 0);
    assert_null(tr_rset_at(NULL, 0));
    assert_null(tr_resource_label(NULL, "x"));
}

/* -------------------------------------------------------------- corpus */

/* Files of the Istio corpus that are not Kubernetes objects: the expected
 * Envoy filters of authz-builder's tests and the ztunnel policies of
 * ambient-policy's (their inputs, "-in" files, are objects). Every finding
 * about them must say so. */
static bool not_objects(const char *rel)
{
    if (strncmp(rel, "istio/authz-builder/", 20) == 0)
        return strstr(rel, "-out") != NULL;
    if (strncmp(rel, "istio/ambient-policy/", 21) == 0)
        return strstr(rel, "-in.yaml") == NULL;
    return false;
}

/* Istio's validation data repeats names on purpose (one object per invalid
 * case): how many repeats each such file holds. */
static size_t expected_duplicates(const char *rel)
{
    static const struct {
        const char *rel;
        size_t n;
    } files[] = {
        {"istio/validation/crds/destinationrule-invalid.yaml", 2},
        {"istio/validation/crds/destinationrule-valid.yaml", 2},
        {"istio/validation/crds/wasm-invalid.yaml", 3},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (strcmp(rel, files[i].rel) == 0)
            return files[i].n;
    }
    return 0;
}

static size_t g_corpus_files, g_corpus_objects, g_corpus_not_objects;

static int corpus_file(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (type != FTW_F)
        return 0;
    const char *rel = path + strlen(CORPUS) + 1;
    const char *paths[] = {path};
    struct tr_store *s = tr_store_files(paths, 1);
    assert_non_null(s);
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = tr_store_snapshot(s, &d);
    if (rs == NULL)
        fail_msg("%s: no snapshot", rel);
    char buf[1024];
    size_t dups = 0;
    for (size_t i = 0; i < d.n; i++) {
        diag_text(&d, i, buf, sizeof(buf));
        bool ok = (not_objects(rel) && strstr(buf, ": missing required field") != NULL) ||
                  (expected_duplicates(rel) != 0 && strstr(buf, "duplicate object: ") != NULL);
        dups += strstr(buf, "duplicate object: ") != NULL;
        if (!ok)
            fail_msg("%s: %s", rel, buf);
    }
    assert_int_equal(dups, expected_duplicates(rel));
    assert_int_equal(d.n_warnings, 0);
    if (not_objects(rel)) {
        assert_int_equal(tr_rset_count(rs), 0); /* some are empty: no finding either */
        g_corpus_not_objects++;
    }
    g_corpus_objects += tr_rset_count(rs);
    g_corpus_files++;
    tr_rset_free(rs);
    tr_store_free(s);
    tr_diags_free(&d);
    return 0;
}

static void test_istio_corpus_loads(void **state)
{
    (void)state;
    g_corpus_files = g_corpus_objects = g_corpus_not_objects = 0;
    assert_int_equal(nftw(CORPUS "/istio", corpus_file, 16, FTW_PHYS), 0);
    /* The corpus README counts 339 Istio files. */
    assert_int_equal(g_corpus_files, 339);
    assert_int_equal(g_corpus_not_objects, 58);
    assert_true(g_corpus_objects > 400);
}

static size_t count_kind(const struct tr_rset *rs, const char *group, const char *kind)
{
    size_t n = 0;
    tr_rset_of_kind(rs, group, kind, &n);
    return n;
}

/* ---------------------------------------------------------- the diff */

struct diff_seen {
    char v[8][64];
    size_t n, stop_after;
};

static bool diff_record(void *arg, const struct tr_resource *x, const struct tr_resource *y)
{
    struct diff_seen *s = arg;
    assert_true(x != NULL || y != NULL);
    const struct tr_resource *r = x ? x : y;
    assert_true(s->n < 8);
    snprintf(s->v[s->n++], sizeof(s->v[0]), "%s %s/%s",
             x == NULL   ? "+"
             : y == NULL ? "-"
                         : "~",
             r->kind, r->name);
    return s->stop_after == 0 || s->n < s->stop_after;
}

static void test_rset_diff(void **state)
{
    (void)state;
    const char *before = "kind: Service\napiVersion: v1\nmetadata: {name: a, namespace: ns}\n"
                         "spec: {ports: [{port: 80}]}\n---\n"
                         "kind: Service\napiVersion: v1\nmetadata: {name: b, namespace: ns}\n---\n"
                         "kind: Service\napiVersion: v1\nmetadata: {name: c, namespace: ns}\n"
                         "spec: {type: x}\n---\n"
                         "kind: Pod\napiVersion: v1\nmetadata: {name: p, namespace: ns}\n";
    /* a: same text on other lines (a comment above it): not a difference;
     * b: gone; c: a scalar quoted now ("x" is not the plain x: it may mean
     * something else); d: new; the Pod: one more key. */
    const char *after = "# moved down\n\nkind: Service\napiVersion: v1\n"
                        "metadata: {name: a, namespace: ns}\nspec: {ports: [{port: 80}]}\n---\n"
                        "kind: Service\napiVersion: v1\nmetadata: {name: d, namespace: ns}\n---\n"
                        "kind: Service\napiVersion: v1\nmetadata: {name: c, namespace: ns}\n"
                        "spec: {type: \"x\"}\n---\n"
                        "kind: Pod\napiVersion: v1\nmetadata: {name: p, namespace: ns}\nspec: {}\n";
    struct tr_rset *a = load_clean(before), *b = load_clean(after);
    struct diff_seen s = {0};
    assert_int_equal(tr_rset_diff(a, b, diff_record, &s), 4);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.v[0], "~ Pod/p");
    assert_string_equal(s.v[1], "- Service/b");
    assert_string_equal(s.v[2], "~ Service/c");
    assert_string_equal(s.v[3], "+ Service/d");
    /* a set against itself, and an early stop */
    struct diff_seen none = {0};
    assert_int_equal(tr_rset_diff(a, a, diff_record, &none), 0);
    struct diff_seen first = {.stop_after = 1};
    assert_int_equal(tr_rset_diff(a, b, diff_record, &first), 1);
    /* the same object in another document (load order): a difference */
    const char *swapped = "kind: Pod\napiVersion: v1\nmetadata: {name: p, namespace: ns}\n---\n"
                          "kind: Service\napiVersion: v1\nmetadata: {name: a, namespace: ns}\n"
                          "spec: {ports: [{port: 80}]}\n";
    const char *unswapped = "kind: Service\napiVersion: v1\nmetadata: {name: a, namespace: ns}\n"
                            "spec: {ports: [{port: 80}]}\n---\n"
                            "kind: Pod\napiVersion: v1\nmetadata: {name: p, namespace: ns}\n";
    struct tr_rset *c = load_clean(swapped), *d = load_clean(unswapped);
    struct diff_seen moved = {0};
    assert_int_equal(tr_rset_diff(c, d, diff_record, &moved), 2);
    /* against nothing: everything */
    struct diff_seen all = {0};
    assert_int_equal(tr_rset_diff(NULL, c, diff_record, &all), 2);
    assert_string_equal(all.v[0], "+ Pod/p");
    tr_rset_free(a);
    tr_rset_free(b);
    tr_rset_free(c);
    tr_rset_free(d);
}

static struct tr_rset *corpus_set(const char *rel)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", CORPUS, rel);
    const char *paths[] = {path};
    struct tr_store *s = tr_store_files(paths, 1);
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = tr_store_snapshot(s, &d);
    assert_non_null(rs);
    assert_int_equal(d.n, 0);
    tr_diags_free(&d);
    tr_store_free(s);
    return rs;
}

static void test_istio_corpus_counts(void **state)
{
    (void)state;
    const char *istio = "networking.istio.io";
    struct tr_rset *rs = corpus_set("istio/bookinfo/networking/destination-rule-all.yaml");
    assert_int_equal(tr_rset_count(rs), 4);
    assert_int_equal(count_kind(rs, istio, "DestinationRule"), 4);
    const struct tr_resource *reviews = tr_rset_find(rs, istio, "DestinationRule", NULL, "reviews");
    assert_non_null(reviews);
    assert_int_equal(reviews->line, 12);
    assert_int_equal(reviews->doc, 1);
    assert_int_equal(tr_rnode_get(reviews->spec, "subsets")->n, 3);
    tr_rset_free(rs);

    rs = corpus_set("istio/bookinfo/networking/virtual-service-all-v1.yaml");
    assert_int_equal(count_kind(rs, istio, "VirtualService"), 4);
    tr_rset_free(rs);

    rs = corpus_set("istio/bookinfo/platform/kube/bookinfo.yaml");
    assert_int_equal(count_kind(rs, "", "Service"), 4);
    assert_int_equal(count_kind(rs, "", "ServiceAccount"), 4);
    assert_int_equal(count_kind(rs, "apps", "Deployment"), 6);
    assert_int_equal(tr_rset_count(rs), 14);
    const struct tr_resource *svc = tr_rset_find(rs, "", "Service", NULL, "productpage");
    assert_non_null(svc);
    assert_string_equal(tr_resource_label(svc, "app"), "productpage");
    tr_rset_free(rs);

    rs = corpus_set("istio/bookinfo/networking/bookinfo-gateway.yaml");
    assert_int_equal(count_kind(rs, istio, "Gateway"), 1);
    assert_int_equal(count_kind(rs, istio, "VirtualService"), 1);
    tr_rset_free(rs);

    /* The file with the empty indentless entries libfyaml trips on. */
    rs = corpus_set("istio/validation/crds/reqauth-invalid.yaml");
    assert_int_equal(count_kind(rs, "security.istio.io", "RequestAuthentication"), 20);
    tr_rset_free(rs);

    rs = corpus_set("istio/external/github.yaml");
    assert_int_equal(count_kind(rs, istio, "ServiceEntry"), 2);
    tr_rset_free(rs);
}

/* A document that is not a resource (a ConfigMap's mesh configuration):
 * its root, located in the buffer; the rules of every read apply. */
static void test_rnode_parse(void **state)
{
    (void)state;
    static const char text[] = "accessLogFile: /dev/stdout\nextensionProviders:\n"
                               "- name: a\n  envoyExtAuthzHttp: {service: s, port: 8000}\n"
                               "---\nsecond: ignored\n";
    struct tr_diags d;
    tr_diags_init(&d);
    const struct tr_rnode *root = NULL;
    struct tr_rset *rs = tr_rnode_parse(text, strlen(text), "mesh", &d, &root);
    assert_non_null(rs);
    assert_int_equal(d.n, 0);
    assert_int_equal(tr_rset_count(rs), 0);
    assert_non_null(root);
    assert_int_equal(root->kind, TR_RNODE_MAP);
    const struct tr_rnode *l = tr_rnode_get(root, "extensionProviders");
    assert_non_null(l);
    assert_int_equal(l->kind, TR_RNODE_SEQ);
    const struct tr_rnode *port = tr_rnode_get(tr_rnode_get(l->head, "envoyExtAuthzHttp"), "port");
    int64_t v;
    assert_true(tr_rnode_int(port, &v));
    assert_int_equal(v, 8000);
    assert_int_equal(port->line, 4);
    assert_null(tr_rnode_get(root, "second"));
    tr_rset_free(rs);
    /* Broken: reported at the buffer's name, no root. */
    rs = tr_rnode_parse("a: [1, 2\n", 9, "mesh", &d, &root);
    assert_non_null(rs);
    assert_null(root);
    assert_true(d.n_errors > 0);
    assert_string_equal(d.v[0].where.file, "mesh");
    tr_rset_free(rs);
    /* Empty: no root, nothing reported. */
    size_t before = d.n;
    rs = tr_rnode_parse("", 0, "mesh", &d, &root);
    assert_non_null(rs);
    assert_null(root);
    assert_int_equal(d.n, before);
    tr_rset_free(rs);
    tr_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nodes_and_positions),
        cmocka_unit_test(test_scalar_typing),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_multi_document),
        cmocka_unit_test(test_lists_are_expanded),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_anchors_and_aliases),
        cmocka_unit_test(test_billion_laughs_runs_out_of_budget),
        cmocka_unit_test(test_alias_expansion_under_budget),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_depth_limit_through_aliases),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_bytes_refused),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_empty_indentless_entries),
        cmocka_unit_test(test_object_checks),
        cmocka_unit_test(test_object_findings_name_the_object),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_lookup_at_scale),
        cmocka_unit_test(test_null_diags_and_names),
        cmocka_unit_test(test_rset_diff),
        cmocka_unit_test(test_seal_many_kinds),
        cmocka_unit_test(test_seal_merged_equals_sorted),
        cmocka_unit_test(test_istio_corpus_loads),
        cmocka_unit_test(test_istio_corpus_counts),
        cmocka_unit_test(test_rnode_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
