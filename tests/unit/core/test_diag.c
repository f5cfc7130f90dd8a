/* Unit tests for core/diag.c: copies, counts, the limit, formatting with
 * every part known or unknown, truncation, and the sort order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/diag.h"

static void test_add_copies_every_string(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    char file[] = "vs.yaml", kind[] = "VirtualService", ns[] = "default", name[] = "reviews",
         path[] = "spec.http[0].route[1].weight";
    struct tr_diag_where w = {file, 12, 7, kind, ns, name, path};
    tr_diags_add(&d, TR_DIAG_ERROR, &w, "weight %d is out of range", -3);
    /* The caller's buffers change; the list keeps its copies. */
    memset(file, 'x', sizeof(file) - 1);
    memset(kind, 'x', sizeof(kind) - 1);
    memset(ns, 'x', sizeof(ns) - 1);
    memset(name, 'x', sizeof(name) - 1);
    memset(path, 'x', sizeof(path) - 1);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.n_errors, 1);
    assert_int_equal(d.n_warnings, 0);
    const struct tr_diag *g = &d.v[0];
    assert_int_equal(g->severity, TR_DIAG_ERROR);
    assert_string_equal(g->where.file, "vs.yaml");
    assert_int_equal(g->where.line, 12);
    assert_int_equal(g->where.col, 7);
    assert_string_equal(g->where.kind, "VirtualService");
    assert_string_equal(g->where.ns, "default");
    assert_string_equal(g->where.name, "reviews");
    assert_string_equal(g->where.path, "spec.http[0].route[1].weight");
    assert_string_equal(g->msg, "weight -3 is out of range");
    tr_diags_free(&d);
    assert_int_equal(d.n, 0);
    assert_null(d.v);
}

static void test_unknown_parts_stay_null(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    tr_diags_add(&d, TR_DIAG_WARNING, NULL, "plain");
    struct tr_diag_where w = {.file = "a.yaml", .line = 3};
    tr_diags_add(&d, TR_DIAG_WARNING, &w, "%s", "");
    assert_int_equal(d.n, 2);
    assert_int_equal(d.n_warnings, 2);
    assert_null(d.v[0].where.file);
    assert_null(d.v[0].where.kind);
    assert_null(d.v[0].where.ns);
    assert_null(d.v[0].where.name);
    assert_null(d.v[0].where.path);
    assert_int_equal(d.v[0].where.line, 0);
    assert_string_equal(d.v[1].where.file, "a.yaml");
    assert_null(d.v[1].where.path);
    assert_string_equal(d.v[1].msg, "");
    tr_diags_free(&d);
}

static void test_max_counts_but_does_not_keep(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    d.max = 3;
    for (int i = 0; i < 5; i++)
        tr_diags_add(&d, TR_DIAG_ERROR, NULL, "e%d", i);
    tr_diags_add(&d, TR_DIAG_WARNING, NULL, "w");
    assert_int_equal(d.n, 3);
    assert_int_equal(d.n_errors, 5);
    assert_int_equal(d.n_warnings, 1);
    assert_int_equal(d.dropped, 3);
    assert_string_equal(d.v[2].msg, "e2");
    tr_diags_free(&d);
    assert_int_equal(d.max, 3); /* a reused list keeps its limit */
    assert_int_equal(d.dropped, 0);
}

static void test_default_max_is_10000(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    for (int i = 0; i < 10005; i++)
        tr_diags_add(&d, TR_DIAG_WARNING, NULL, "w%d", i);
    assert_int_equal(d.n, 10000);
    assert_int_equal(d.n_warnings, 10005);
    assert_int_equal(d.dropped, 5);
    assert_string_equal(d.v[9999].msg, "w9999");
    tr_diags_free(&d);
}

static void vadd_helper(struct tr_diags *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void vadd_helper(struct tr_diags *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tr_diags_vadd(d, TR_DIAG_ERROR, NULL, fmt, ap);
    va_end(ap);
}

static void test_vadd_and_long_message(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    char big[5000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    vadd_helper(&d, "<%s>%d", big, 42);
    assert_int_equal(d.n, 1);
    assert_int_equal(strlen(d.v[0].msg), sizeof(big) - 1 + 4);
    assert_int_equal(d.v[0].msg[0], '<');
    assert_string_equal(d.v[0].msg + sizeof(big), ">42");
    tr_diags_free(&d);
}

static int fmt(const struct tr_diag *g, char *buf, size_t size)
{
    return tr_diag_format(g, buf, size);
}

static void test_format_parts(void **state)
{
    (void)state;
    char buf[256];
    struct tr_diag g = {TR_DIAG_WARNING,
                        {"dr.yaml", 4, 9, "DestinationRule", "prod", "ratings", "spec.host"},
                        (char *)"host not found"};
    int n = fmt(&g, buf, sizeof(buf));
    assert_string_equal(buf,
                        "dr.yaml:4:9: warning: DestinationRule prod/ratings: spec.host: host not "
                        "found");
    assert_int_equal(n, (int)strlen(buf));

    g.severity = TR_DIAG_ERROR;
    g.where.ns = NULL; /* cluster-scoped or written without a namespace */
    fmt(&g, buf, sizeof(buf));
    assert_string_equal(buf,
                        "dr.yaml:4:9: error: DestinationRule ratings: spec.host: host not found");

    g.where.col = 0;
    g.where.path = "";
    fmt(&g, buf, sizeof(buf));
    assert_string_equal(buf, "dr.yaml:4: error: DestinationRule ratings: host not found");

    g.where.line = 0;
    g.where.kind = NULL;
    fmt(&g, buf, sizeof(buf));
    assert_string_equal(buf, "dr.yaml: error: ratings: host not found");

    struct tr_diag bare = {TR_DIAG_ERROR, {0}, (char *)"out of memory"};
    fmt(&bare, buf, sizeof(buf));
    assert_string_equal(buf, "error: out of memory");

    struct tr_diag kind_only = {
        TR_DIAG_WARNING, {.kind = "Sidecar", .path = "spec.x"}, (char *)"m"};
    fmt(&kind_only, buf, sizeof(buf));
    assert_string_equal(buf, "warning: Sidecar: spec.x: m");

    /* A namespace without a name names nothing. */
    kind_only.where.ns = "prod";
    fmt(&kind_only, buf, sizeof(buf));
    assert_string_equal(buf, "warning: Sidecar: spec.x: m");
}

static void test_format_truncates_like_snprintf(void **state)
{
    (void)state;
    struct tr_diag g = {TR_DIAG_ERROR, {"f.yaml", 1, 2, NULL, NULL, NULL, NULL}, (char *)"abc"};
    const char *want = "f.yaml:1:2: error: abc";
    char small[10];
    memset(small, 'Z', sizeof(small));
    int n = tr_diag_format(&g, small, sizeof(small));
    assert_int_equal(n, (int)strlen(want));
    assert_int_equal(small[9], '\0');
    assert_memory_equal(small, want, 9);
    assert_int_equal(tr_diag_format(&g, NULL, 0), (int)strlen(want));
    char one[1] = {'Z'};
    assert_int_equal(tr_diag_format(&g, one, 1), (int)strlen(want));
    assert_int_equal(one[0], '\0');
}

static void test_sort_order(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_diag_where b2 = {.file = "b.yaml", .line = 2, .col = 1};
    struct tr_diag_where a9 = {.file = "a.yaml", .line = 9, .col = 1};
    struct tr_diag_where a2c5 = {.file = "a.yaml", .line = 2, .col = 5};
    struct tr_diag_where a2c1 = {.file = "a.yaml", .line = 2, .col = 1};
    tr_diags_add(&d, TR_DIAG_WARNING, &b2, "w");
    tr_diags_add(&d, TR_DIAG_WARNING, &a9, "w");
    tr_diags_add(&d, TR_DIAG_WARNING, &a2c5, "zz");
    tr_diags_add(&d, TR_DIAG_WARNING, &a2c5, "aa");
    tr_diags_add(&d, TR_DIAG_ERROR, &a2c5, "zz");
    tr_diags_add(&d, TR_DIAG_WARNING, &a2c1, "w");
    tr_diags_add(&d, TR_DIAG_ERROR, NULL, "no file");
    tr_diags_sort(&d);
    char buf[128];
    const char *want[] = {
        "error: no file",          "a.yaml:2:1: warning: w",  "a.yaml:2:5: error: zz",
        "a.yaml:2:5: warning: aa", "a.yaml:2:5: warning: zz", "a.yaml:9:1: warning: w",
        "b.yaml:2:1: warning: w",
    };
    assert_int_equal(d.n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < d.n; i++) {
        tr_diag_format(&d.v[i], buf, sizeof(buf));
        assert_string_equal(buf, want[i]);
    }
    tr_diags_free(&d);
}

static void test_sort_is_independent_of_insertion_order(void **state)
{
    (void)state;
    struct tr_diags x, y;
    tr_diags_init(&x);
    tr_diags_init(&y);
    struct tr_diag_where w[4] = {
        {"f", 1, 1, "K", "ns", "a", "p"},
        {"f", 1, 1, "K", "ns", "b", "p"},
        {"f", 1, 1, "K", NULL, "a", "p"},
        {"f", 1, 1, "K", "ns", "a", "q"},
    };
    for (int i = 0; i < 4; i++)
        tr_diags_add(&x, TR_DIAG_ERROR, &w[i], "same");
    for (int i = 3; i >= 0; i--)
        tr_diags_add(&y, TR_DIAG_ERROR, &w[i], "same");
    tr_diags_sort(&x);
    tr_diags_sort(&y);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(x.v[i].where.ns == NULL, y.v[i].where.ns == NULL);
        assert_string_equal(x.v[i].where.name, y.v[i].where.name);
        assert_string_equal(x.v[i].where.path, y.v[i].where.path);
    }
    assert_null(x.v[0].where.ns); /* unknown sorts first */
    tr_diags_free(&x);
    tr_diags_free(&y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_copies_every_string),
        cmocka_unit_test(test_unknown_parts_stay_null),
        cmocka_unit_test(test_max_counts_but_does_not_keep),
        cmocka_unit_test(test_default_max_is_10000),
        cmocka_unit_test(test_vadd_and_long_message),
        cmocka_unit_test(test_format_parts),
        cmocka_unit_test(test_format_truncates_like_snprintf),
        cmocka_unit_test(test_sort_order),
        cmocka_unit_test(test_sort_is_independent_of_insertion_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
