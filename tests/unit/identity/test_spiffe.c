#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "identity/identity.h"

struct vec {
    const char *id;
    int valid;
    const char *td;   /* expected trust domain if valid */
    const char *path; /* expected path if valid */
};

static const struct vec vectors[] = {
    {"spiffe://cluster.local/ns/default/sa/web", 1, "cluster.local", "/ns/default/sa/web"},
    {"spiffe://example.org/a", 1, "example.org", "/a"},
    {"spiffe://td-1_x.y/A.b-C_d/e", 1, "td-1_x.y", "/A.b-C_d/e"},
    {"spiffe://1.2.3.4/x", 1, "1.2.3.4", "/x"},
    {"spiffe://example.org/.../x", 1, "example.org", "/.../x"}, /* only . and .. are special */
    {"spiffe://example.org/.a/a.", 1, "example.org", "/.a/a."},
    {"spiffe://example.org", 0, NULL, NULL},    /* trust domain ID, no workload path */
    {"spiffe://example.org/", 0, NULL, NULL},   /* empty segment */
    {"spiffe://example.org/a/", 0, NULL, NULL}, /* trailing slash */
    {"spiffe://example.org//a", 0, NULL, NULL}, /* empty segment */
    {"spiffe://example.org/./a", 0, NULL, NULL},
    {"spiffe://example.org/a/..", 0, NULL, NULL},
    {"spiffe:///a", 0, NULL, NULL},                 /* empty trust domain */
    {"spiffe://Example.org/a", 0, NULL, NULL},      /* uppercase trust domain */
    {"SPIFFE://example.org/a", 0, NULL, NULL},      /* scheme must be lowercase */
    {"spiffe://example.org:8080/a", 0, NULL, NULL}, /* port */
    {"spiffe://user@example.org/a", 0, NULL, NULL}, /* userinfo */
    {"spiffe://example.org/a?x=1", 0, NULL, NULL},  /* query */
    {"spiffe://example.org/a#f", 0, NULL, NULL},    /* fragment */
    {"spiffe://example.org/a%20b", 0, NULL, NULL},  /* percent-encoding */
    {"spiffe://example.org/a b", 0, NULL, NULL},
    {"https://example.org/a", 0, NULL, NULL},
    {"spiffe:/example.org/a", 0, NULL, NULL},
    {"spiffe://", 0, NULL, NULL},
    {"", 0, NULL, NULL},
    {"spiffe://exa*mple.org/a", 0, NULL, NULL},
    {"spiffe://example.org/a/b\xc3\xa9", 0, NULL, NULL}, /* non-ASCII */
};

static void test_vectors(void **state)
{
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const struct vec *v = &vectors[i];
        tr_str td = {0}, path = {0};
        int rc = tr_spiffe_id_parse(v->id, strlen(v->id), &td, &path);
        if (rc != (v->valid ? 0 : -1))
            fail_msg("vector %zu \"%s\": got %d", i, v->id, rc);
        if (v->valid) {
            assert_true(tr_str_eq(td, v->td, strlen(v->td)));
            assert_true(tr_str_eq(path, v->path, strlen(v->path)));
        }
    }
}

static void test_optional_outputs_and_embedded_nul(void **state)
{
    assert_int_equal(tr_spiffe_id_parse("spiffe://a/b", 12, NULL, NULL), 0);
    /* Length is explicit: a NUL inside the span is a forbidden byte... */
    assert_int_equal(tr_spiffe_id_parse("spiffe://a/b\0c", 14, NULL, NULL), -1);
    /* ...and a prefix of a longer string is parsed on its own. */
    tr_str td;
    assert_int_equal(tr_spiffe_id_parse("spiffe://a/b?query", 12, &td, NULL), 0);
    assert_true(TR_STR_EQ_LIT(td, "a"));
    assert_int_equal(tr_spiffe_id_parse(NULL, 0, NULL, NULL), -1);
}

static void test_length_limits(void **state)
{
    char buf[TR_SPIFFE_ID_MAX + 2];
    /* Exactly the maximum: "spiffe://td/" + segments of 'a'. */
    memcpy(buf, "spiffe://td/", 12);
    memset(buf + 12, 'a', sizeof(buf) - 12);
    assert_int_equal(tr_spiffe_id_parse(buf, TR_SPIFFE_ID_MAX, NULL, NULL), 0);
    assert_int_equal(tr_spiffe_id_parse(buf, TR_SPIFFE_ID_MAX + 1, NULL, NULL), -1);

    /* Trust domain: 255 bytes allowed, 256 not. */
    char td[300];
    memcpy(td, "spiffe://", 9);
    memset(td + 9, 'd', 255);
    memcpy(td + 9 + 255, "/x", 2);
    assert_int_equal(tr_spiffe_id_parse(td, 9 + 255 + 2, NULL, NULL), 0);
    memset(td + 9, 'd', 256);
    memcpy(td + 9 + 256, "/x", 2);
    assert_int_equal(tr_spiffe_id_parse(td, 9 + 256 + 2, NULL, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_optional_outputs_and_embedded_nul),
        cmocka_unit_test(test_length_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
