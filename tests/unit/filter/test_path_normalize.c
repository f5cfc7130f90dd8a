/* Unit tests for filter/path_normalize.c: a table of targets per mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "filter/path_normalize.h"

#define STRICT TR_PATHNORM_STRICT
#define NONE   TR_PATHNORM_NONE
#define BASE   TR_PATHNORM_BASE
#define MERGE  TR_PATHNORM_MERGE_SLASHES
#define DECODE TR_PATHNORM_DECODE_AND_MERGE_SLASHES

struct norm_case {
    enum tr_path_normalization mode;
    const char *in;
    const char *want;           /* NULL: refused with status */
    enum tr_path_status status; /* when want == NULL */
};

/* Normalise c->in and compare; a result is normalised again and must stay
 * the same (idempotence), in a buffer exactly as long as the input. */
static void check_case(const struct norm_case *c)
{
    size_t len = strlen(c->in);
    char *out = malloc(len + 1);
    size_t n = 0;
    enum tr_path_status st = tr_path_normalize(c->mode, c->in, len, out, len, &n);
    if (c->want == NULL) {
        if (st != c->status)
            fail_msg("%s %s: status %d (%s), want %d", tr_path_normalization_name(c->mode), c->in,
                     (int)st, tr_path_status_str(st), (int)c->status);
        free(out);
        return;
    }
    if (st != TR_PATH_OK)
        fail_msg("%s %s: refused (%s), want %s", tr_path_normalization_name(c->mode), c->in,
                 tr_path_status_str(st), c->want);
    out[n] = '\0';
    if (strcmp(out, c->want) != 0)
        fail_msg("%s %s: got %s, want %s", tr_path_normalization_name(c->mode), c->in, out,
                 c->want);
    char *again = malloc(n + 1);
    size_t n2 = 0;
    assert_int_equal(tr_path_normalize(c->mode, out, n, again, n, &n2), TR_PATH_OK);
    assert_int_equal(n2, n);
    assert_memory_equal(again, out, n);
    free(again);
    free(out);
}

static void run_cases(const struct norm_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check_case(&cases[i]);
}

#define RUN(t) run_cases((t), sizeof(t) / sizeof((t)[0]))

static void test_strict(void **state)
{
    (void)state;
    static const struct norm_case cases[] = {
        {STRICT, "/", "/", 0},
        {STRICT, "/admin", "/admin", 0},
        {STRICT, "/x/../admin", "/admin", 0},
        {STRICT, "/./admin", "/admin", 0},
        {STRICT, "//admin", "/admin", 0},
        {STRICT, "/a///b//", "/a/b/", 0},
        {STRICT, "/%61dmin", "/admin", 0},
        {STRICT, "/%41dmin", "/Admin", 0}, /* case of the path itself is kept */
        {STRICT, "/%2e/admin", "/admin", 0},
        {STRICT, "/%2E%2e/admin", "/admin", 0},
        {STRICT, "/a/%2e%2E/%2e%2e/%2e%2e/admin", "/admin", 0}, /* never above the root */
        {STRICT, "/..", "/", 0},
        {STRICT, "/../..", "/", 0},
        {STRICT, "/a/b/..", "/a/", 0},
        {STRICT, "/a/b/.", "/a/b/", 0},
        {STRICT, "/a/.b/..c/...", "/a/.b/..c/...", 0}, /* names, not dot segments */
        {STRICT, "/admin/", "/admin/", 0},
        {STRICT, "/admin;x=1", "/admin;x=1", 0},
        {STRICT, "/a;p/../admin", "/admin", 0},
        {STRICT, "/%7euser/%2D%5f", "/~user/-_", 0},
        {STRICT, "/a%3fb", "/a%3Fb", 0},     /* escapes upper-cased, reserved ones kept */
        {STRICT, "/a%252Fb", "/a%252Fb", 0}, /* %25 never decoded: at most one decoding */
        {STRICT, "/a%20b%c3%a9", "/a%20b%C3%A9", 0},
        {STRICT, "/admin?x=/../%2F&y=//", "/admin?x=/../%2F&y=//", 0}, /* query untouched */
        {STRICT, "/x/../admin?a=%zz", "/admin?a=%zz", 0},
        {STRICT, "/x?", "/x?", 0},
        {STRICT, "*", "*", 0},
        {STRICT, "/a%2Fb", NULL, TR_PATH_ENCODED_SLASH},
        {STRICT, "/a%2fb", NULL, TR_PATH_ENCODED_SLASH},
        {STRICT, "/a%5Cb", NULL, TR_PATH_ENCODED_SLASH},
        {STRICT, "/a%5cb", NULL, TR_PATH_ENCODED_SLASH},
        {STRICT, "/a\\b", NULL, TR_PATH_BACKSLASH},
        {STRICT, "/a%00", NULL, TR_PATH_ENCODED_NUL},
        {STRICT, "/a%zz", NULL, TR_PATH_BAD_ESCAPE},
        {STRICT, "/a%4", NULL, TR_PATH_BAD_ESCAPE},
        {STRICT, "/a%", NULL, TR_PATH_BAD_ESCAPE},
        {STRICT, "/a%%32%66", NULL, TR_PATH_BAD_ESCAPE},
        {STRICT, "/x/..;/admin", NULL, TR_PATH_DOT_PARAMS},
        {STRICT, "/x/.;a/admin", NULL, TR_PATH_DOT_PARAMS},
        {STRICT, "/x/%2e%2e;/admin", NULL, TR_PATH_DOT_PARAMS},
        {STRICT, "/a b", NULL, TR_PATH_BAD_CHAR},
        {STRICT, "/a\tb", NULL, TR_PATH_BAD_CHAR},
        {STRICT, "/a\x7f", NULL, TR_PATH_BAD_CHAR},
        {STRICT, "admin", NULL, TR_PATH_NOT_ABSOLUTE},
        {STRICT, "?x", NULL, TR_PATH_NOT_ABSOLUTE},
    };
    RUN(cases);
}

static void test_none(void **state)
{
    (void)state;
    static const struct norm_case cases[] = {
        {NONE, "/x/../admin", "/x/../admin", 0},
        {NONE, "//admin", "//admin", 0},
        {NONE, "/%61dmin", "/%61dmin", 0},
        {NONE, "/a%2fb\\c", "/a%2fb\\c", 0},
        {NONE, "/a%zz", "/a%zz", 0},
        {NONE, "/x?y=/../", "/x?y=/../", 0},
    };
    RUN(cases);
}

static void test_base(void **state)
{
    (void)state;
    static const struct norm_case cases[] = {
        {BASE, "/x/../admin", "/admin", 0},
        {BASE, "/./admin", "/admin", 0},
        {BASE, "//admin", "//admin", 0}, /* slashes are not merged */
        {BASE, "/a//../b", "/a/b", 0},
        {BASE, "//a/../b", "//b", 0},
        {BASE, "/a//.", "/a//", 0},
        {BASE, "/%61dmin", "/admin", 0},
        {BASE, "/%2e/admin", "/admin", 0},
        {BASE, "/a%2fb", "/a%2Fb", 0}, /* an encoded slash stays one, upper-cased */
        {BASE, "/a%5cb", "/a%5Cb", 0},
        {BASE, "/a\\..\\admin", "/admin", 0}, /* a backslash is a slash (Envoy) */
        {BASE, "/a%00", "/a%00", 0},
        {BASE, "/x/..;/admin", "/x/..;/admin", 0}, /* ';' is a name's */
        {BASE, "/a?q=%2f", "/a?q=%2f", 0},
        {BASE, "/a%zz", NULL, TR_PATH_BAD_ESCAPE},
        {BASE, "/a b", NULL, TR_PATH_BAD_CHAR},
    };
    RUN(cases);
}

static void test_merge_slashes(void **state)
{
    (void)state;
    static const struct norm_case cases[] = {
        {MERGE, "//admin", "/admin", 0},
        {MERGE, "/a//b///c", "/a/b/c", 0},
        {MERGE, "/a//", "/a/", 0},
        {MERGE, "//", "/", 0},
        {MERGE, "/x/..//admin", "/admin", 0},
        {MERGE, "/a%2f%2fb", "/a%2F%2Fb", 0},
        {MERGE, "/a\\\\b", "/a/b", 0},
        {MERGE, "/%2e%2e/admin", "/admin", 0},
    };
    RUN(cases);
}

static void test_decode_and_merge(void **state)
{
    (void)state;
    static const struct norm_case cases[] = {
        {DECODE, "/a%2fb", "/a/b", 0},
        {DECODE, "/a%2F%2Fb", "/a/b", 0},
        {DECODE, "/a%5cb", "/a/b", 0},
        {DECODE, "/x%2f..%2fadmin", "/admin", 0},
        {DECODE, "/x%2F%2e%2e%5Cadmin", "/admin", 0},
        {DECODE, "/a%252fb", "/a%252fb", 0},
        {DECODE, "/a%00", "/a%00", 0},
        {DECODE, "/a?b=%2f", "/a?b=%2f", 0},
        {DECODE, "/a%", NULL, TR_PATH_BAD_ESCAPE},
    };
    RUN(cases);
}

/* The output is never longer than the input; a smaller buffer is refused,
 * never overrun. */
static void test_room(void **state)
{
    (void)state;
    char out[4];
    size_t n = 0;
    assert_int_equal(tr_path_normalize(STRICT, "/abcdef", 7, out, sizeof(out), &n),
                     TR_PATH_NO_ROOM);
    assert_int_equal(tr_path_normalize(NONE, "/abcdef", 7, out, sizeof(out), &n), TR_PATH_NO_ROOM);
    assert_int_equal(tr_path_normalize(STRICT, "/a/./", 5, out, sizeof(out), &n), TR_PATH_NO_ROOM);
    char big[8];
    assert_int_equal(tr_path_normalize(STRICT, "/a/./", 5, big, 5, &n), TR_PATH_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(big, "/a/", 3);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(tr_path_normalization_name(TR_PATHNORM_STRICT), "STRICT");
    assert_string_equal(tr_path_normalization_name(TR_PATHNORM_DECODE_AND_MERGE_SLASHES),
                        "DECODE_AND_MERGE_SLASHES");
    assert_string_equal(tr_path_status_str(TR_PATH_ENCODED_SLASH), "encoded slash or backslash");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strict),
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_base),
        cmocka_unit_test(test_merge_slashes),
        cmocka_unit_test(test_decode_and_merge),
        cmocka_unit_test(test_room),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
