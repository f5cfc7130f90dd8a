#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/json.h"

static struct tr_json_tok toks[64];

static bool parse(const char *text, struct tr_json *j, const char **err)
{
    return tr_json_parse(text, strlen(text), toks, 64, j, err);
}

static void test_accepts(void **state)
{
    struct tr_json j;
    const char *err = NULL;
    assert_true(
        parse(" {\"a\": [1, -2.5e3, true, false, null], \"b\": {\"c\": \"d\"}} ", &j, &err));
    assert_int_equal(j.tok[0].type, TR_JSON_OBJECT);
    assert_int_equal(j.tok[0].n, 2);
    int a = tr_json_get(&j, 0, "a");
    assert_true(a > 0);
    assert_int_equal(j.tok[a].type, TR_JSON_ARRAY);
    assert_int_equal(j.tok[a].n, 5);
    int64_t v;
    assert_true(tr_json_int(&j, tr_json_elem(&j, (uint32_t)a, 1), &v));
    assert_int_equal(v, -2500);
    assert_int_equal(j.tok[tr_json_elem(&j, (uint32_t)a, 4)].type, TR_JSON_NULL);
    int b = tr_json_get(&j, 0, "b");
    int c = tr_json_get(&j, (uint32_t)b, "c");
    tr_str s = tr_json_raw_str(&j, (uint32_t)c);
    assert_true(TR_STR_EQ_LIT(s, "d"));
    assert_int_equal(tr_json_get(&j, 0, "zz"), -1);
    assert_int_equal(tr_json_get(&j, (uint32_t)a, "a"), -1); /* not an object */
}

static void test_escapes(void **state)
{
    struct tr_json j;
    const char *err = NULL;
    char text[] = "{\"k\\u0065y\": \"a\\n\\u00e9\\ud83d\\ude00\\/\"}";
    assert_true(tr_json_parse(text, strlen(text), toks, 64, &j, &err));
    assert_int_equal(tr_json_get(&j, 0, "key"), 2); /* keys compare decoded */
    char out[32];
    long l = tr_json_str(&j, 2, out, sizeof(out));
    assert_int_equal(l, 9);
    assert_memory_equal(out, "a\n\xc3\xa9\xf0\x9f\x98\x80/", 9);
    assert_int_equal(tr_json_str(&j, 2, out, 4), -1); /* does not fit */
    tr_json_unescape(text, toks, j.n_tok);
    assert_true(TR_STR_EQ_LIT(tr_json_raw_str(&j, 1), "key"));
    assert_int_equal(tr_json_raw_str(&j, 2).len, 9);
    assert_memory_equal(tr_json_raw_str(&j, 2).p, "a\n\xc3\xa9\xf0\x9f\x98\x80/", 9);
}

static void test_refuses(void **state)
{
    static const char *const bad[] = {
        "",
        "{",
        "{\"a\":1,}",
        "[1,]",
        "{'a':1}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":-}",
        "{\"a\":tru}",
        "{\"a\":1} x",
        "{\"a\":1 /* c */}",
        "{\"a\":1,\"a\":2}",
        "{\"a\":1,\"\\u0061\":2}",
        "{a:1}",
        "\"\\x\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"tab\there\"",
        "\"\xc0\xaf\"",
        "\"\xff\"",
        "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]",
        "NaN",
        "+1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tr_json j;
        const char *err = NULL;
        if (parse(bad[i], &j, &err))
            fail_msg("accepted: %s", bad[i]);
        assert_non_null(err);
    }
}

static void test_token_budget(void **state)
{
    struct tr_json j;
    const char *err = NULL;
    struct tr_json_tok small[3];
    assert_false(tr_json_parse("[1,2,3]", 7, small, 3, &j, &err));
    assert_string_equal(err, "too many values");
    assert_true(tr_json_parse("[1,2]", 5, small, 3, &j, &err));
    assert_int_equal(j.n_tok, 3);
    assert_int_equal(j.tok[0].next, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_refuses),
        cmocka_unit_test(test_token_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
