#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/fmt.h"

/* A fixed buffer inside a larger array whose tail must stay untouched. */
#define GUARD 0x5a

static void assert_guard(const char *arr, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        assert_int_equal((unsigned char)arr[i], GUARD);
}

static void test_fixed_printf_all_or_nothing(void **state)
{
    char arr[32];
    memset(arr, GUARD, sizeof(arr));
    struct tr_fmt f;
    tr_fmt_init_fixed(&f, arr, 10); /* 9 bytes of text and the NUL */
    assert_true(tr_fmt_printf(&f, "%s=%d", "ab", 42));
    assert_string_equal(f.p, "ab=42");
    assert_int_equal(f.len, 5);
    /* 5 more do not fit in the 4 left: nothing appended, the text unchanged. */
    assert_false(tr_fmt_printf(&f, "%05d", 7));
    assert_true(f.truncated);
    assert_int_equal(f.len, 5);
    assert_string_equal(f.p, "ab=42");
    /* A smaller piece still fits afterwards; truncated stays set. */
    assert_true(tr_fmt_printf(&f, ",%d", 123));
    assert_string_equal(f.p, "ab=42,123");
    assert_int_equal(f.len, 9);
    assert_true(f.truncated);
    assert_false(tr_fmt_bytes(&f, "x", 1));
    assert_true(tr_fmt_bytes(&f, "", 0));
    assert_guard(arr, 10, sizeof(arr));
}

static void test_fixed_bytes_exact_fit(void **state)
{
    char arr[16];
    memset(arr, GUARD, sizeof(arr));
    struct tr_fmt f;
    tr_fmt_init_fixed(&f, arr, 5);
    assert_true(tr_fmt_cstr(&f, "abcd"));
    assert_false(f.truncated);
    assert_string_equal(arr, "abcd");
    assert_false(tr_fmt_cstr(&f, "e"));
    assert_string_equal(arr, "abcd");
    tr_fmt_rewind(&f, 2);
    assert_string_equal(arr, "ab");
    assert_int_equal(f.len, 2);
    assert_guard(arr, 5, sizeof(arr));
}

static void test_growable_grows_to_max_then_refuses(void **state)
{
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 10000);
    char piece[100];
    memset(piece, 'x', sizeof(piece));
    for (int i = 0; i < 100; i++)
        assert_true(tr_fmt_bytes(&f, piece, sizeof(piece)));
    assert_int_equal(f.len, 10000);
    assert_false(f.truncated);
    assert_false(tr_fmt_printf(&f, "%d", 1));
    assert_true(f.truncated);
    assert_false(f.oom);
    size_t len = 1;
    assert_null(tr_fmt_take(&f, &len)); /* incomplete: an error, never a short text */
    assert_null(f.p);

    /* A printf longer than the first allocation is written whole. */
    tr_fmt_init_growable(&f, 1 << 20);
    char big[9000];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_true(tr_fmt_printf(&f, "<%s>", big));
    char *text = tr_fmt_take(&f, &len);
    assert_non_null(text);
    assert_int_equal(len, 9000 + 1);
    assert_int_equal(strlen(text), len);
    assert_int_equal(text[0], '<');
    assert_int_equal(text[len - 1], '>');
    free(text);

    /* Nothing appended: an empty string, not NULL. */
    tr_fmt_init_growable(&f, 10);
    text = tr_fmt_take(&f, &len);
    assert_non_null(text);
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);
}

static void json(const char *in, size_t n, const char *want)
{
    char arr[256];
    struct tr_fmt f;
    tr_fmt_init_fixed(&f, arr, sizeof(arr));
    assert_true(tr_fmt_json_str(&f, in, n));
    assert_false(f.truncated);
    assert_string_equal(arr, want);
    assert_int_equal(f.len, strlen(want));
}

static void test_json_escaping(void **state)
{
    json("plain /path?a=1", 15, "\"plain /path?a=1\"");
    json("q\"b\\", 4, "\"q\\\"b\\\\\"");
    json("\n\r\t\x01\x1f\x7f", 6, "\"\\u000a\\u000d\\u0009\\u0001\\u001f\\u007f\"");
    json("a\0b", 3, "\"a\\u0000b\"");
    json("", 0, "\"\"");
    /* Valid UTF-8 is kept: é (2), € (3), U+1F600 (4), U+10FFFF. */
    json("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", 13,
         "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"");
    /* Invalid UTF-8, each offending byte one U+FFFD: a lone continuation, a
     * truncated sequence, an overlong '/', a surrogate, above U+10FFFF, 0xff. */
    json("\x80", 1, "\"\\ufffd\"");
    json("\xe2\x82", 2, "\"\\ufffd\\ufffd\"");
    json("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");
    json("\xe0\x80\xaf", 3, "\"\\ufffd\\ufffd\\ufffd\"");
    json("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"");
    json("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
    json("a\xffz", 3, "\"a\\ufffdz\"");
    /* A truncated sequence followed by ASCII keeps the ASCII. */
    json("\xe2\x82x", 3, "\"\\ufffd\\ufffdx\"");
    /* Valid, but not printable YAML (a JSON config is read as YAML): C1
     * controls (U+0080, NEL U+0085, U+009F), U+2028, U+2029, BOM, U+FFFE,
     * U+FFFF; their neighbours U+00A0 and U+FFFD stay raw. */
    json("\xc2\x80\xc2\x85\xc2\x9f\xc2\xa0", 8, "\"\\u0080\\u0085\\u009f\xc2\xa0\"");
    json("\xe2\x80\xa8\xe2\x80\xa9\xef\xbb\xbf\xef\xbf\xbe\xef\xbf\xbf\xef\xbf\xbd", 18,
         "\"\\u2028\\u2029\\ufeff\\ufffe\\uffff\xef\xbf\xbd\"");

    char arr[16];
    struct tr_fmt f;
    tr_fmt_init_fixed(&f, arr, sizeof(arr));
    assert_true(tr_fmt_json_cstr(&f, NULL));
    assert_string_equal(arr, "null");
}

static void test_json_all_or_nothing_and_prefix(void **state)
{
    char arr[64];
    memset(arr, GUARD, sizeof(arr));
    struct tr_fmt f;
    tr_fmt_init_fixed(&f, arr, 12); /* 11 bytes of text */
    assert_true(tr_fmt_cstr(&f, "k:"));
    /* "abcdefghij" quoted is 12 bytes: does not fit the 9 left. */
    assert_false(tr_fmt_json_str(&f, "abcdefghij", 10));
    assert_string_equal(arr, "k:");
    assert_true(f.truncated);
    /* The prefix form takes what fits: 7 characters and the quotes. */
    assert_true(tr_fmt_json_str_prefix(&f, "abcdefghij", 10));
    assert_string_equal(arr, "k:\"abcdefg\"");
    assert_int_equal(f.len, 11);
    assert_guard(arr, 12, sizeof(arr));

    /* Never half an escape: \u0001 (6 bytes) does not fit in 5. */
    tr_fmt_init_fixed(&f, arr, 8);
    assert_true(tr_fmt_json_str_prefix(&f, "a\x01", 2));
    assert_string_equal(arr, "\"a\"");
    assert_true(f.truncated);
    /* Never half a UTF-8 sequence: € (3 bytes) does not fit in 2. */
    tr_fmt_init_fixed(&f, arr, 6);
    assert_true(tr_fmt_json_str_prefix(&f, "a\xe2\x82\xac", 4));
    assert_string_equal(arr, "\"a\"");
    /* Not even the quotes fit: nothing. */
    tr_fmt_init_fixed(&f, arr, 2);
    assert_false(tr_fmt_json_str_prefix(&f, "a", 1));
    assert_string_equal(arr, "");
    /* A string that fits whole is not a truncation. */
    tr_fmt_init_fixed(&f, arr, 4);
    assert_true(tr_fmt_json_str_prefix(&f, "a", 1));
    assert_string_equal(arr, "\"a\"");
    assert_false(f.truncated);
}

static void yaml(const char *in, size_t n, const char *want)
{
    char arr[256];
    struct tr_fmt f;
    tr_fmt_init_fixed(&f, arr, sizeof(arr));
    assert_true(tr_fmt_yaml_str(&f, in, n));
    assert_false(f.truncated);
    assert_string_equal(arr, want);
    assert_int_equal(f.len, strlen(want));
}

static void test_yaml_escaping(void **state)
{
    /* Everything YAML would read as structure stays inside the quotes. */
    yaml("a: b # c, [d] {e} &f *g !h |i >j 'k' %l @m `n", 45,
         "\"a: b # c, [d] {e} &f *g !h |i >j 'k' %l @m `n\"");
    yaml("- ~", 3, "\"- ~\"");
    yaml("", 0, "\"\"");
    yaml("q\"b\\", 4, "\"q\\\"b\\\\\"");
    yaml("\t\n\r", 3, "\"\\t\\n\\r\"");
    yaml("\x01\x1b\x1f\x7f", 4, "\"\\x01\\x1b\\x1f\\x7f\"");
    yaml("a\0b", 3, "\"a\\x00b\"");
    /* Leading and trailing blanks are kept by a quoted scalar: no escape. */
    yaml(" x ", 3, "\" x \"");
    /* Valid UTF-8 is kept; what YAML forbids raw is escaped by code point. */
    yaml("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", 13,
         "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"");
    yaml("\xc2\x80\xc2\x85\xc2\x9f\xc2\xa0", 8, "\"\\x80\\x85\\x9f\xc2\xa0\"");
    yaml("\xe2\x80\xa8\xe2\x80\xa9\xef\xbb\xbf\xef\xbf\xbe\xef\xbf\xbf", 15,
         "\"\\u2028\\u2029\\ufeff\\ufffe\\uffff\"");
    /* Invalid UTF-8: one U+FFFD per offending byte, as the JSON escaper. */
    yaml("a\xffz\xe2\x82", 5, "\"a\\ufffdz\\ufffd\\ufffd\"");

    /* What the escapers copy unchanged is what tr_fmt_utf8_valid accepts. */
    assert_true(tr_fmt_utf8_valid("", 0));
    assert_true(tr_fmt_utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", 14));
    assert_true(tr_fmt_utf8_valid("\xc2\x85\xef\xbf\xbe", 5)); /* valid, escaped all the same */
    assert_false(tr_fmt_utf8_valid("\x80", 1));
    assert_false(tr_fmt_utf8_valid("a\xe2\x82", 3));
    assert_false(tr_fmt_utf8_valid("\xc0\xaf", 2));
    assert_false(tr_fmt_utf8_valid("\xed\xa0\x80", 3));
    assert_false(tr_fmt_utf8_valid("\xf4\x90\x80\x80", 4));
    assert_false(tr_fmt_utf8_valid("\xff", 1));

    /* All or nothing, like every append. */
    char arr[8];
    struct tr_fmt f;
    tr_fmt_init_fixed(&f, arr, sizeof(arr));
    assert_true(tr_fmt_cstr(&f, "k: "));
    assert_false(tr_fmt_yaml_str(&f, "\x01\x02", 2)); /* "\x01\x02" quoted: 10 bytes */
    assert_string_equal(arr, "k: ");
    assert_true(f.truncated);
}

static void prom(const char *in, size_t n, const char *want)
{
    char arr[128];
    struct tr_fmt f;
    tr_fmt_init_fixed(&f, arr, sizeof(arr));
    assert_true(tr_fmt_prom_label_value(&f, in, n));
    assert_string_equal(arr, want);
}

static void test_prom_label_escaping(void **state)
{
    prom("api", 3, "api");
    prom("a\"b\\c\nd", 7, "a\\\"b\\\\c\\nd");
    prom("tab\there", 8, "tab\there"); /* only \\, \" and \n are escapes in the format */
    prom("caf\xc3\xa9", 5, "caf\xc3\xa9");
    prom("bad\xff", 4, "bad\xef\xbf\xbd");
    prom("", 0, "");

    char arr[8];
    struct tr_fmt f;
    tr_fmt_init_fixed(&f, arr, sizeof(arr));
    assert_true(tr_fmt_cstr(&f, "x=\""));
    /* Escaped, "\\\"\n" is 6 bytes: more than the 4 left, so nothing. */
    assert_false(tr_fmt_prom_label_value(&f, "\\\"\n", 3));
    assert_string_equal(arr, "x=\"");
    assert_true(f.truncated);
}

static void test_growable_escapes_beyond_first_allocation(void **state)
{
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 1 << 20);
    char in[5000];
    memset(in, '"', sizeof(in));
    assert_true(tr_fmt_json_str(&f, in, sizeof(in)));
    assert_true(tr_fmt_prom_label_value(&f, in, sizeof(in)));
    size_t len;
    char *text = tr_fmt_take(&f, &len);
    assert_non_null(text);
    assert_int_equal(len, 2 + 2 * 5000 + 2 * 5000);
    assert_int_equal(strlen(text), len);
    free(text);

    /* Over the maximum: refused whole, and the result is an error. */
    tr_fmt_init_growable(&f, 9999);
    assert_false(tr_fmt_json_str(&f, in, sizeof(in)));
    assert_true(f.truncated);
    assert_int_equal(f.len, 0);
    assert_null(tr_fmt_take(&f, &len));
}

/* Field paths: keys joined by dots, indexes in brackets, cut (and still
 * terminated) where the buffer ends, popped back to where they were. */
static void test_field_path(void **state)
{
    (void)state;
    char p[16];
    size_t len = 0;
    p[0] = '\0';
    assert_int_equal(tr_path_push_key(p, sizeof(p), &len, "spec"), 0);
    size_t at = tr_path_push_key(p, sizeof(p), &len, "http");
    assert_int_equal(at, 4);
    tr_path_push_index(p, sizeof(p), &len, 12);
    assert_string_equal(p, "spec.http[12]");
    assert_int_equal(len, 13);
    tr_path_push_key(p, sizeof(p), &len, "route");
    assert_string_equal(p, "spec.http[12].r"); /* cut at 15 characters */
    assert_int_equal(len, 15);
    tr_path_push_index(p, sizeof(p), &len, 0);
    assert_int_equal(len, 15);
    tr_path_pop(p, &len, at);
    assert_string_equal(p, "spec");
    tr_path_push_index(p, sizeof(p), &len, 0);
    assert_string_equal(p, "spec[0]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_printf_all_or_nothing),
        cmocka_unit_test(test_fixed_bytes_exact_fit),
        cmocka_unit_test(test_growable_grows_to_max_then_refuses),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_json_all_or_nothing_and_prefix),
        cmocka_unit_test(test_yaml_escaping),
        cmocka_unit_test(test_prom_label_escaping),
        cmocka_unit_test(test_growable_escapes_beyond_first_allocation),
        cmocka_unit_test(test_field_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
