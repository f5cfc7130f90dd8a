/* filter/fields: HTTP/1.1 <-> HTTP/2 header mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "codec/h1/h1.h"
#include "core/buf.h"
#include "filter/fields.h"

static struct tr_h1_header hdrs[TR_H1_MAX_HEADERS_CAP];

static void parse(const char *raw, int is_request, struct tr_h1_message *m)
{
    struct tr_h1_limits lim = TR_H1_LIMITS_DEFAULT;
    size_t scanned = 0;
    int n = tr_h1_head_end(raw, strlen(raw), &lim, is_request, &scanned);
    assert_true(n > 0);
    memset(m, 0, sizeof(*m));
    m->headers = hdrs;
    int rc = is_request ? tr_h1_parse_request(raw, (size_t)n, &lim, m)
                        : tr_h1_parse_response(raw, (size_t)n, &lim, TR_H1_M_GET, m);
    assert_int_equal(rc, 0);
}

static const char *value_of(const struct tr_fields *f, const char *name)
{
    static char out[256];
    int i = tr_fields_find(f->v, f->n, name);
    if (i < 0)
        return NULL;
    snprintf(out, sizeof(out), "%.*s", (int)f->v[i].value.len, f->v[i].value.p);
    return out;
}

static struct tr_buf *new_buf(size_t size)
{
    struct tr_buf *b = calloc(1, sizeof(*b) + size);
    b->cap = (uint32_t)size;
    return b;
}

static void test_h1_request_to_fields(void **state)
{
    (void)state;
    struct tr_h1_message m;
    parse("POST /a?b=1 HTTP/1.1\r\nHost: Example.COM\r\nConnection: keep-alive, X-Hop\r\n"
          "X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: foo\r\n"
          "Content-Length: 3\r\nX-Keep: Yes\r\nCookie: a=1\r\n\r\n",
          1, &m);
    struct tr_fields f;
    assert_int_equal(tr_fields_init(&f, 32, 1024), 0);
    assert_int_equal(tr_fields_from_h1_request(&f, &m, TR_STR_LIT("http"),
                                               TR_STR_LIT("Example.COM"), TR_STR_LIT("/a?b=1")),
                     0);
    /* Pseudo-headers first, in order. */
    assert_true(f.n >= 4);
    assert_true(tr_str_eq(f.v[0].name, ":method", 7) && tr_str_eq(f.v[0].value, "POST", 4));
    assert_true(tr_str_eq(f.v[1].name, ":scheme", 7));
    assert_string_equal(value_of(&f, ":authority"), "Example.COM");
    assert_string_equal(value_of(&f, ":path"), "/a?b=1");
    /* Names lowercased; hop-by-hop and Connection-listed fields gone. */
    assert_string_equal(value_of(&f, "x-keep"), "Yes");
    assert_string_equal(value_of(&f, "content-length"), "3");
    assert_string_equal(value_of(&f, "cookie"), "a=1");
    assert_string_equal(value_of(&f, "te"), "trailers");
    assert_null(value_of(&f, "connection"));
    assert_null(value_of(&f, "x-hop"));
    assert_null(value_of(&f, "keep-alive"));
    assert_null(value_of(&f, "upgrade"));
    assert_null(value_of(&f, "host"));
    tr_fields_free(&f);
    tr_fields_free(&f); /* freeing twice is harmless */
}

static void test_capacity_is_enforced(void **state)
{
    (void)state;
    struct tr_fields f;
    assert_int_equal(tr_fields_init(&f, 2, 10), 0);
    assert_int_equal(tr_fields_add_cstr(&f, "a", "12345"), 0);
    assert_int_equal(tr_fields_add_cstr(&f, "b", "123456789"), -1); /* bytes */
    assert_int_equal(f.n, 1);
    assert_int_equal(tr_fields_add_cstr(&f, "c", "1"), 0);
    assert_int_equal(tr_fields_add_cstr(&f, "d", ""), -1); /* entries */
    assert_int_equal(f.n, 2);
    tr_fields_free(&f);
}

static void test_fields_to_h1_request(void **state)
{
    (void)state;
    const struct tr_h2_header v[] = {
        {TR_STR_LIT(":method"), TR_STR_LIT("GET")},
        {TR_STR_LIT(":scheme"), TR_STR_LIT("https")},
        {TR_STR_LIT(":authority"), TR_STR_LIT("svc:8080")},
        {TR_STR_LIT(":path"), TR_STR_LIT("/x")},
        {TR_STR_LIT("cookie"), TR_STR_LIT("a=1")},
        {TR_STR_LIT("accept"), TR_STR_LIT("*/*")},
        {TR_STR_LIT("cookie"), TR_STR_LIT("b=2")},
        {TR_STR_LIT("connection"), TR_STR_LIT("close")},
        {TR_STR_LIT("te"), TR_STR_LIT("trailers")},
    };
    struct tr_buf *b = new_buf(512);
    assert_int_equal(tr_fields_h1_request_head(b, v, 9, true), 0);
    const char *want = "GET /x HTTP/1.1\r\nhost: svc:8080\r\ncookie: a=1; b=2\r\naccept: */*\r\n"
                       "te: trailers\r\ntransfer-encoding: chunked\r\n\r\n";
    assert_int_equal(tr_buf_len(b), strlen(want));
    assert_memory_equal(tr_buf_head(b), want, strlen(want));
    /* Too small: nothing is written. */
    struct tr_buf *small = new_buf(20);
    assert_int_equal(tr_fields_h1_request_head(small, v, 9, false), -1);
    assert_int_equal(tr_buf_len(small), 0);
    free(b);
    free(small);
}

static void test_response_both_ways(void **state)
{
    (void)state;
    struct tr_h1_message m;
    parse("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
          "Connection: close\r\nX-A: 1\r\n\r\n",
          0, &m);
    struct tr_fields f;
    assert_int_equal(tr_fields_init(&f, 16, 512), 0);
    assert_int_equal(tr_fields_from_h1_response(&f, &m), 0);
    assert_string_equal(value_of(&f, ":status"), "404");
    assert_int_equal(tr_fields_find(f.v, f.n, ":status"), 0);
    assert_string_equal(value_of(&f, "x-a"), "1");
    assert_null(value_of(&f, "transfer-encoding"));
    assert_null(value_of(&f, "connection"));
    struct tr_buf *b = new_buf(512);
    assert_int_equal(tr_fields_h1_response_head(b, f.v, f.n, true, true), 0);
    const char *want = "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\nx-a: 1\r\n"
                       "transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n";
    assert_int_equal(tr_buf_len(b), strlen(want));
    assert_memory_equal(tr_buf_head(b), want, strlen(want));
    free(b);
    tr_fields_free(&f);
}

static void test_trailers(void **state)
{
    (void)state;
    const char sec[] = "Grpc-Status: 0\r\nX-Sum:  abc \r\nContent-Length: 5\r\n\r\n";
    struct tr_fields f;
    assert_int_equal(tr_fields_init(&f, 8, 256), 0);
    assert_int_equal(tr_fields_parse_trailers(&f, sec, sizeof(sec) - 1), 0);
    assert_int_equal(f.n, 2); /* content-length may not be a trailer */
    assert_string_equal(value_of(&f, "grpc-status"), "0");
    assert_string_equal(value_of(&f, "x-sum"), "abc");
    struct tr_buf *b = new_buf(256);
    assert_int_equal(tr_fields_h1_trailers(b, f.v, f.n), 0);
    const char *want = "0\r\ngrpc-status: 0\r\nx-sum: abc\r\n\r\n";
    assert_int_equal(tr_buf_len(b), strlen(want));
    assert_memory_equal(tr_buf_head(b), want, strlen(want));
    free(b);
    tr_fields_free(&f);
    assert_int_equal(tr_fields_init(&f, 8, 256), 0);
    assert_int_equal(tr_fields_parse_trailers(&f, "no-colon\r\n\r\n", 12), -1);
    tr_fields_free(&f);
}

static void test_add_joined(void **state)
{
    (void)state;
    struct tr_fields f;
    assert_int_equal(tr_fields_init(&f, 4, 16), 0);
    assert_int_equal(
        tr_fields_add_joined(&f, TR_STR_LIT(":Path"), TR_STR_LIT("/v2"), TR_STR_LIT("/x?y")), 0);
    assert_int_equal(f.n, 1);
    assert_true(TR_STR_EQ_LIT(f.v[0].name, ":path"));
    assert_true(TR_STR_EQ_LIT(f.v[0].value, "/v2/x?y"));
    /* Does not fit: nothing is added, nothing is used. */
    uint32_t used = f.used;
    assert_int_equal(
        tr_fields_add_joined(&f, TR_STR_LIT("a"), TR_STR_LIT("12345"), TR_STR_LIT("67890")), -1);
    assert_int_equal(f.n, 1);
    assert_int_equal(f.used, used);
    assert_null(tr_fields_add_space(&f, TR_STR_LIT("b"), 16));
    assert_int_equal(f.used, used);
    char *x = tr_fields_add_space(&f, TR_STR_LIT("X"), 3);
    assert_non_null(x);
    memcpy(x, "1,2", 3);
    assert_int_equal(f.n, 2);
    assert_true(TR_STR_EQ_LIT(f.v[1].name, "x"));
    assert_true(TR_STR_EQ_LIT(f.v[1].value, "1,2"));
    tr_fields_free(&f);
}

static void test_one_hop_by_hop_table(void **state)
{
    (void)state;
    static const char *const names[] = {"connection", "keep-alive",        "proxy-connection",
                                        "te",         "transfer-encoding", "upgrade",
                                        "trailer",    "http2-settings"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        tr_str n = tr_str_from(names[i], strlen(names[i]));
        assert_true(tr_fields_is_hop_by_hop(n));
        assert_true(tr_h1_is_hop_by_hop(n));
    }
    assert_true(tr_fields_is_hop_by_hop(TR_STR_LIT("host")));
    assert_false(tr_fields_is_hop_by_hop(TR_STR_LIT("x-forwarded-for")));
    assert_false(tr_fields_is_hop_by_hop(TR_STR_LIT("content-length")));
}

/* No name buffer of its own: a 300-byte name is kept (and lowercased), a
 * forbidden field takes no slot, and a full list says so instead of
 * returning what fitted. */
static void test_trailers_long_names_and_full(void **state)
{
    (void)state;
    char sec[512];
    int n = snprintf(sec, sizeof(sec), "X-%0298d: v\r\nContent-Length: 1\r\nx-b: 2\r\n\r\n", 0);
    struct tr_fields f;
    assert_int_equal(tr_fields_init(&f, 2, (uint32_t)n), 0);
    assert_int_equal(tr_fields_parse_trailers(&f, sec, (size_t)n), 0);
    assert_int_equal(f.n, 2);
    assert_int_equal(f.v[0].name.len, 300);
    assert_memory_equal(f.v[0].name.p, "x-000", 5);
    assert_string_equal(value_of(&f, "x-b"), "2");
    tr_fields_free(&f);
    assert_int_equal(tr_fields_init(&f, 1, (uint32_t)n), 0);
    assert_int_equal(tr_fields_parse_trailers(&f, sec, (size_t)n), TR_FIELDS_FULL);
    tr_fields_free(&f);
}

/* A request head of up to 12 fields: the four pseudo-headers (a NULL value
 * leaves one out) and then extra "name", "value" pairs. */
static int check(const char *method, const char *scheme, const char *authority, const char *path,
                 const char *const *extra, size_t n_extra, const char **why)
{
    struct tr_h2_header h[12];
    size_t n = 0;
    const char *pseudo[4][2] = {
        {":method", method}, {":scheme", scheme}, {":authority", authority}, {":path", path}};
    for (int i = 0; i < 4; i++)
        if (pseudo[i][1] != NULL)
            h[n++] = (struct tr_h2_header){tr_str_from(pseudo[i][0], strlen(pseudo[i][0])),
                                           tr_str_from(pseudo[i][1], strlen(pseudo[i][1]))};
    for (size_t i = 0; i + 1 < n_extra && n < 12; i += 2)
        h[n++] = (struct tr_h2_header){tr_str_from(extra[i], strlen(extra[i])),
                                       tr_str_from(extra[i + 1], strlen(extra[i + 1]))};
    struct tr_h1_limits lim = {64, 65536, 4};
    return tr_fields_check_request(h, n, &lim, why);
}

#define CHECK(m, s, a, p, ...)                                                                     \
    check(m, s, a, p, (const char *const[]){__VA_ARGS__ NULL},                                     \
          sizeof((const char *const[]){__VA_ARGS__ NULL}) / sizeof(char *) - 1, &why)

static void test_check_request_accepts(void **state)
{
    (void)state;
    const char *why = "unset";
    assert_int_equal(CHECK("GET", "http", "a.example:8080", "/p?q=1&r=%41~", ), 0);
    assert_null(why);
    assert_int_equal(CHECK("POST", "https", "[::1]:443", "/", "content-type", "a/b", ), 0);
    assert_int_equal(CHECK("OPTIONS", "http", "a", "*", ), 0);
    assert_int_equal(CHECK("CONNECT", NULL, "a.example:443", NULL, ), 0);
    /* Host alone (RFC 9113 8.3.1), or equal to :authority but for case. */
    assert_int_equal(CHECK("GET", "http", NULL, "/", "host", "a.example", ), 0);
    assert_int_equal(CHECK("GET", "http", "A.example", "/", "host", "a.EXAMPLE", ), 0);
    /* obs-text and inner whitespace in values are field values for HTTP/1.1 too. */
    assert_int_equal(CHECK("GET", "http", "a", "/", "x-v", "a \t\xc3\xa9", ), 0);
    /* max_headers is 4: cookie crumbs count once, pseudo-headers not at all. */
    assert_int_equal(CHECK("GET", "http", "a", "/", "cookie", "a=1", "cookie", "b=2", "cookie",
                           "c=3", "x-1", "1", "x-2", "2", "x-3", "3", ),
                     0);
}

static void test_check_request_refuses(void **state)
{
    (void)state;
    const char *why = NULL;
    /* :path: every byte the HTTP/1.1 parser refuses in a request-target. */
    const char bad_path_bytes[] = {'\x01', '\t', ' ', '#', '\x7f', '\x80', '\xff'};
    for (size_t i = 0; i < sizeof(bad_path_bytes); i++) {
        char path[4] = {'/', 'a', bad_path_bytes[i], '\0'};
        why = NULL;
        assert_int_equal(CHECK("GET", "http", "a", path, ), 400);
        assert_string_equal(why, "missing or invalid :path");
    }
    assert_int_equal(CHECK("GET", "http", "a", "", ), 400);
    assert_int_equal(CHECK("GET", "http", "a", "a/b", ), 400);
    assert_int_equal(CHECK("GET", "http", "a", "*", ), 400);
    assert_int_equal(CHECK("GET", "http", "a", "http://a/", ), 400);
    assert_int_equal(CHECK("GET", "http", "a", NULL, ), 400);
    /* :method, :scheme */
    assert_int_equal(CHECK("G T", "http", "a", "/", ), 400);
    assert_int_equal(CHECK("G\xc3\xa9T", "http", "a", "/", ), 400);
    assert_int_equal(CHECK("", "http", "a", "/", ), 400);
    assert_int_equal(CHECK(NULL, "http", "a", "/", ), 400);
    assert_int_equal(CHECK("GET", "ftp", "a", "/", ), 400);
    assert_int_equal(CHECK("GET", "HTTP", "a", "/", ), 400);
    assert_int_equal(CHECK("GET", NULL, "a", "/", ), 400);
    /* :authority: userinfo, percent-encoding, bad port, empty */
    why = NULL;
    assert_int_equal(CHECK("GET", "http", "user@a.example", "/", ), 400);
    assert_string_equal(why, "invalid :authority");
    assert_int_equal(CHECK("GET", "http", "u:p@a.example:80", "/", ), 400);
    assert_int_equal(CHECK("GET", "http", "a%41", "/", ), 400);
    assert_int_equal(CHECK("GET", "http", "a:99999", "/", ), 400);
    assert_int_equal(CHECK("GET", "http", "", "/", ), 400);
    assert_int_equal(CHECK("CONNECT", NULL, "a.example", NULL, ), 400); /* no port */
    assert_int_equal(CHECK("CONNECT", NULL, "u@a.example:443", NULL, ), 400);
    assert_int_equal(CHECK("CONNECT", "http", "a.example:443", NULL, ), 400);
    /* host: differs from :authority, repeated, invalid, or neither present */
    why = NULL;
    assert_int_equal(CHECK("GET", "http", "a.example", "/", "host", "b.example", ), 400);
    assert_string_equal(why, "host differs from :authority");
    assert_int_equal(CHECK("GET", "http", "a.example", "/", "host", "a.example:80", ), 400);
    assert_int_equal(CHECK("GET", "http", NULL, "/", "host", "a", "host", "a", ), 400);
    assert_int_equal(CHECK("GET", "http", NULL, "/", "host", "u@a", ), 400);
    assert_int_equal(CHECK("GET", "http", NULL, "/", ), 400);
    /* Names and values the HTTP/1.1 parser refuses. */
    assert_int_equal(CHECK("GET", "http", "a", "/", "X-Up", "1", ), 400);
    assert_int_equal(CHECK("GET", "http", "a", "/", "x y", "1", ), 400);
    assert_int_equal(CHECK("GET", "http", "a", "/", "", "1", ), 400);
    const char bad_value_bytes[] = {'\x01', '\x0b', '\x1f', '\x7f'};
    for (size_t i = 0; i < sizeof(bad_value_bytes); i++) {
        char value[4] = {'a', bad_value_bytes[i], 'b', '\0'};
        why = NULL;
        assert_int_equal(CHECK("GET", "http", "a", "/", "x-v", value, ), 400);
        assert_string_equal(why, "invalid header value");
    }
    assert_int_equal(CHECK("GET", "http", "a", "/", "x-v", " a", ), 400);
    assert_int_equal(CHECK("GET", "http", "a", "/", "x-v", "a\t", ), 400);
    /* Pseudo-headers: unknown, repeated, after a regular field. */
    assert_int_equal(CHECK("GET", "http", "a", "/", ":protocol", "websocket", ), 400);
    assert_int_equal(CHECK("GET", "http", "a", "/", ":path", "/", ), 400);
    /* More than max_headers (4) regular fields: 431. */
    why = NULL;
    assert_int_equal(CHECK("GET", "http", "a", "/", "x-1", "1", "x-2", "2", "x-3", "3", "x-4", "4",
                           "x-5", "5", ),
                     431);
    assert_string_equal(why, "more header fields than limits.max_headers");
    /* The request line it becomes is bounded as HTTP/1.1's is (64 here):
     * "GET " + path + " HTTP/1.1\r\n" is 15 bytes plus the path. */
    char path[64];
    memset(path, 'a', sizeof(path));
    path[0] = '/';
    path[49] = '\0';
    assert_int_equal(CHECK("GET", "http", "a", path, ), 0);
    path[49] = 'a';
    path[50] = '\0';
    why = NULL;
    assert_int_equal(CHECK("GET", "http", "a", path, ), 414);
    assert_string_equal(why, "request line longer than limits.max_request_line");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h1_request_to_fields),
        cmocka_unit_test(test_capacity_is_enforced),
        cmocka_unit_test(test_fields_to_h1_request),
        cmocka_unit_test(test_response_both_ways),
        cmocka_unit_test(test_trailers),
        cmocka_unit_test(test_add_joined),
        cmocka_unit_test(test_one_hop_by_hop_table),
        cmocka_unit_test(test_trailers_long_names_and_full),
        cmocka_unit_test(test_check_request_accepts),
        cmocka_unit_test(test_check_request_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
