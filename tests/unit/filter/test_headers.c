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
#include "filter/headers.h"

static struct tr_h1_header hdrs[TR_H1_MAX_HEADERS_CAP];

static void parse_req(const char *raw, struct tr_h1_message *m)
{
    struct tr_h1_limits lim = TR_H1_LIMITS_DEFAULT;
    size_t scanned = 0;
    int n = tr_h1_head_end(raw, strlen(raw), &lim, 1, &scanned);
    assert_true(n > 0);
    memset(m, 0, sizeof(*m));
    m->headers = hdrs;
    assert_int_equal(tr_h1_parse_request(raw, (size_t)n, &lim, m), 0);
}

static char *rewrite(const char *raw, struct tr_request_rewrite *rw)
{
    struct tr_h1_message m;
    parse_req(raw, &m);
    struct tr_buf *b = malloc(sizeof(*b) + 8192);
    b->start = b->end = 0;
    b->cap = 8192;
    if (rw->target.p == NULL)
        rw->target = m.target;
    assert_int_equal(tr_filter_request_head(b, raw, &m, rw), 0);
    char *out = strndup(tr_buf_head(b), tr_buf_len(b));
    free(b);
    return out;
}

static void test_hop_by_hop_removed_and_forwarding_headers_added(void **state)
{
    char id[40];
    struct tr_request_rewrite rw = {
        .peer_ip = "10.1.2.3",
        .xff = TR_XFF_APPEND,
        .xfp = "http",
        .request_id = TR_REQID_PRESERVE,
        .request_id_out = id,
        .rnd = {0x1122334455667788ull, 0x99aabbccddeeff00ull},
    };
    char *out = rewrite("GET /a?b=1 HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, X-Secret\r\n"
                        "Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nX-Secret: s\r\n"
                        "TE: trailers, gzip\r\nX-Forwarded-For: 1.2.3.4\r\n"
                        "X-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n",
                        &rw);
    assert_non_null(strstr(out, "GET /a?b=1 HTTP/1.1\r\n"));
    assert_non_null(strstr(out, "host: svc\r\n"));
    assert_non_null(strstr(out, "Accept: */*\r\n"));
    assert_null(strstr(out, "Keep-Alive"));
    assert_null(strstr(out, "Proxy-Connection"));
    assert_null(strstr(out, "X-Secret"));
    assert_null(strstr(out, "Connection:"));
    assert_non_null(strstr(out, "te: trailers\r\n"));
    assert_non_null(strstr(out, "x-forwarded-for: 1.2.3.4, 10.1.2.3\r\n"));
    assert_non_null(strstr(out, "x-forwarded-proto: http\r\n"));
    assert_null(strstr(out, "X-Forwarded-Proto: https"));
    /* A v4 UUID was generated and recorded. */
    assert_int_equal(strlen(id), 36);
    assert_int_equal(id[14], '4');
    assert_non_null(strchr("89ab", id[19]));
    char line[64];
    snprintf(line, sizeof(line), "x-request-id: %s\r\n", id);
    assert_non_null(strstr(out, line));
    assert_int_equal(strcmp(out + strlen(out) - 4, "\r\n\r\n"), 0);
    free(out);
}

static void test_request_id_preserved_or_replaced(void **state)
{
    char id[40];
    struct tr_request_rewrite rw = {.peer_ip = "127.0.0.1",
                                    .xff = TR_XFF_OFF,
                                    .request_id = TR_REQID_PRESERVE,
                                    .request_id_out = id};
    char *out = rewrite("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n", &rw);
    assert_string_equal(id, "abc-123");
    assert_non_null(strstr(out, "x-request-id: abc-123\r\n"));
    assert_null(strstr(out, "x-forwarded-for"));
    free(out);
    rw.request_id = TR_REQID_ALWAYS;
    rw.target = (tr_str){0};
    out = rewrite("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n", &rw);
    assert_int_equal(strlen(id), 36);
    assert_null(strstr(out, "abc-123"));
    free(out);
}

static void test_multiple_xff_headers_joined(void **state)
{
    char id[40];
    struct tr_request_rewrite rw = {.peer_ip = "127.0.0.9",
                                    .xff = TR_XFF_APPEND,
                                    .request_id = TR_REQID_OFF,
                                    .request_id_out = id};
    char *out = rewrite("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nB: c\r\n"
                        "X-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n",
                        &rw);
    assert_non_null(strstr(out, "x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.9\r\n"));
    /* Exactly one XFF header goes out. */
    const char *first = strstr(out, "x-forwarded-for");
    assert_null(strstr(first + 1, "x-forwarded-for"));
    free(out);
}

static void test_upgrade_and_chunked_kept(void **state)
{
    char id[40];
    struct tr_request_rewrite rw = {.peer_ip = "::1",
                                    .xff = TR_XFF_OFF,
                                    .request_id = TR_REQID_OFF,
                                    .request_id_out = id,
                                    .upgrade = true};
    char *out =
        rewrite("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                "Sec-WebSocket-Key: x\r\n\r\n",
                &rw);
    assert_non_null(strstr(out, "upgrade: websocket\r\nconnection: upgrade\r\n"));
    assert_non_null(strstr(out, "Sec-WebSocket-Key: x\r\n"));
    free(out);
    rw.upgrade = false;
    rw.target = (tr_str){0};
    out = rewrite("POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &rw);
    assert_non_null(strstr(out, "transfer-encoding: chunked\r\n"));
    assert_null(strstr(out, "Transfer-Encoding"));
    free(out);
}

static void test_local_response_and_overflow(void **state)
{
    struct tr_buf *b = malloc(sizeof(*b) + 256);
    b->start = b->end = 0;
    b->cap = 256;
    assert_int_equal(tr_filter_local_response(b, 404, "nope\n", false, false, NULL), 0);
    assert_memory_equal(tr_buf_head(b),
                        "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n"
                        "content-length: 5\r\nconnection: close\r\n\r\nnope\n",
                        tr_buf_len(b));
    b->start = b->end = 0;
    assert_int_equal(tr_filter_local_response(b, 503, "x", true, true, NULL), 0);
    /* HEAD: the length of the body is announced, the body is not sent. */
    assert_int_equal(memcmp(tr_buf_tail(b) - 4, "\r\n\r\n", 4), 0);
    assert_non_null(strstr(tr_buf_head(b), "content-length: 1\r\n"));
    /* Too small: reports failure instead of truncating. */
    b->cap = 16;
    b->start = b->end = 0;
    assert_int_equal(tr_filter_local_response(b, 500, "body", false, false, NULL), -1);
    free(b);
}

/* ---- header edits ---- */

/* What validate builds for: route request_headers {remove: [x-drop,
 * x-forwarded-for, x-request-id], set: {x-set: new}, add: {x-add: 1}} and a
 * destination's {add: {x-add: 2}}. */
static const struct tr_header_edit_name edit_drop[] = {
    {"x-drop", 6}, {"x-forwarded-for", 15}, {"x-request-id", 12}, {"x-set", 5}};
static const struct tr_header_edit_field edit_emit[] = {
    {"x-set", "new", 5, 3}, {"x-add", "1", 5, 1}, {"x-add", "2", 5, 1}};
static const struct tr_header_edit edit = {
    .drop = edit_drop,
    .n_drop = 4,
    .emit = edit_emit,
    .n_emit = 3,
    .emit_bytes = 8 + 6 + 6,
    .drop_len_mask = (1ull << 6) | (1ull << 15) | (1ull << 12) | (1ull << 5),
};

static void test_edit_drops(void **state)
{
    (void)state;
    assert_true(tr_header_edit_drops(&edit, TR_STR_LIT("x-drop")));
    assert_true(tr_header_edit_drops(&edit, TR_STR_LIT("X-Drop"))); /* HTTP/1.1 names: any case */
    assert_true(tr_header_edit_drops(&edit, TR_STR_LIT("x-set")));
    assert_false(tr_header_edit_drops(&edit, TR_STR_LIT("x-add"))); /* appended, not replaced */
    assert_false(tr_header_edit_drops(&edit, TR_STR_LIT("x-dro")));
    assert_false(tr_header_edit_drops(&edit, TR_STR_LIT("y-drop"))); /* same length */
    assert_false(tr_header_edit_drops(NULL, TR_STR_LIT("x-drop")));
}

/* HTTP/1.1 text: the edits come after the listener's policy (they drop what
 * it would add), replaced values go, appended ones come last in order. */
static void test_request_edits(void **state)
{
    (void)state;
    char id[40];
    struct tr_request_rewrite rw = {
        .peer_ip = "10.1.2.3",
        .xff = TR_XFF_APPEND,
        .xfp = "http",
        .request_id = TR_REQID_PRESERVE,
        .request_id_out = id,
        .edit = &edit,
        .max_fields = 100,
        .max_bytes = 65536,
    };
    char *out = rewrite("GET /a HTTP/1.1\r\nHost: svc\r\nX-Drop: a\r\nX-Set: old\r\n"
                        "X-Keep: k\r\nx-set: old2\r\nX-Forwarded-For: 1.1.1.1\r\n"
                        "X-Request-Id: rid-7\r\nX-Add: 0\r\n\r\n",
                        &rw);
    assert_null(strstr(out, "X-Drop"));
    assert_null(strstr(out, "old"));
    assert_null(strstr(out, "orwarded-for")); /* neither received nor ours */
    assert_null(strstr(out, "x-request-id"));
    assert_string_equal(id, "rid-7"); /* still the request's id for the log */
    assert_non_null(strstr(out, "X-Keep: k\r\n"));
    assert_non_null(strstr(out, "x-forwarded-proto: http\r\n"));
    /* The received x-add stays and the added values follow, in order. */
    assert_non_null(strstr(out, "X-Add: 0\r\n"));
    assert_non_null(strstr(out, "x-set: new\r\nx-add: 1\r\nx-add: 2\r\n\r\n"));
    free(out);

    /* A generated id is not sent either when the edits drop x-request-id. */
    rw.target = (tr_str){0};
    out = rewrite("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &rw);
    assert_int_equal(strlen(id), 36);
    assert_null(strstr(out, "x-request-id"));
    free(out);
}

static void test_request_edits_over_limit(void **state)
{
    (void)state;
    static const char raw[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    char id[40];
    struct tr_request_rewrite rw = {.peer_ip = "1.2.3.4",
                                    .xff = TR_XFF_OFF,
                                    .request_id = TR_REQID_OFF,
                                    .request_id_out = id,
                                    .edit = &edit,
                                    .max_fields = 6,
                                    .max_bytes = 4096};
    struct tr_h1_message m;
    parse_req(raw, &m);
    rw.target = m.target;
    struct tr_buf *b = malloc(sizeof(*b) + 4096);
    b->start = b->end = 0;
    b->cap = 4096;
    /* host, a, b and three added fields: 6 */
    assert_int_equal(tr_filter_request_head(b, raw, &m, &rw), 0);
    size_t len = tr_buf_len(b);
    b->start = b->end = 0;
    rw.max_fields = 5;
    assert_int_equal(tr_filter_request_head(b, raw, &m, &rw), TR_FILTER_OVER_LIMIT);
    rw.max_fields = 6;
    rw.max_bytes = (uint32_t)len - 1;
    assert_int_equal(tr_filter_request_head(b, raw, &m, &rw), TR_FILTER_OVER_LIMIT);
    rw.max_bytes = (uint32_t)len;
    assert_int_equal(tr_filter_request_head(b, raw, &m, &rw), 0);
    /* Without edits the limits are the parser's business, not this stage's. */
    b->start = b->end = 0;
    rw.edit = NULL;
    rw.max_fields = 1;
    assert_int_equal(tr_filter_request_head(b, raw, &m, &rw), 0);
    free(b);
}

static void test_response_edits(void **state)
{
    (void)state;
    static const char raw[] = "HTTP/1.1 200 OK\r\nX-Drop: s\r\nContent-Length: 2\r\n"
                              "X-Set: upstream\r\nX-Other: o\r\n\r\n";
    struct tr_h1_limits lim = TR_H1_LIMITS_DEFAULT;
    struct tr_h1_message m;
    size_t scanned = 0;
    int n = tr_h1_head_end(raw, strlen(raw), &lim, 0, &scanned);
    assert_true(n > 0);
    memset(&m, 0, sizeof(m));
    m.headers = hdrs;
    assert_int_equal(tr_h1_parse_response(raw, (size_t)n, &lim, TR_H1_M_GET, &m), 0);
    struct tr_buf *b = malloc(sizeof(*b) + 1024);
    b->start = b->end = 0;
    b->cap = 1024;
    struct tr_response_rewrite rw = {
        .keep_alive = true, .edit = &edit, .max_fields = 100, .max_bytes = 65536};
    assert_int_equal(tr_filter_response_head(b, raw, &m, &rw), 0);
    char *out = strndup(tr_buf_head(b), tr_buf_len(b));
    assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Other: o\r\n"
                             "x-set: new\r\nx-add: 1\r\nx-add: 2\r\n\r\n");
    free(out);
    b->start = b->end = 0;
    rw.max_fields = 4;
    assert_int_equal(tr_filter_response_head(b, raw, &m, &rw), TR_FILTER_OVER_LIMIT);
    free(b);
}

/* A direct response can say what it is: a content-type of the route's
 * replaces text/plain. */
static void test_local_response_edits(void **state)
{
    (void)state;
    static const struct tr_header_edit_name drop[] = {{"content-type", 12}};
    static const struct tr_header_edit_field emit[] = {{"content-type", "application/json", 12, 16},
                                                       {"x-a", "1", 3, 1}};
    const struct tr_header_edit json = {
        .drop = drop, .n_drop = 1, .emit = emit, .n_emit = 2, .drop_len_mask = 1ull << 12};
    struct tr_buf *b = malloc(sizeof(*b) + 512);
    b->start = b->end = 0;
    b->cap = 512;
    assert_int_equal(tr_filter_local_response(b, 200, "{}", true, false, &json), 0);
    assert_memory_equal(tr_buf_head(b),
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n"
                        "x-a: 1\r\n\r\n{}",
                        tr_buf_len(b));
    free(b);
}

/* Header lists (HTTP/2 form): slices, pseudo-headers kept, order kept. */
static void test_edit_fields(void **state)
{
    (void)state;
    const struct tr_h2_header in[] = {
        {TR_STR_LIT(":status"), TR_STR_LIT("200")}, {TR_STR_LIT("x-drop"), TR_STR_LIT("a")},
        {TR_STR_LIT("x-add"), TR_STR_LIT("0")},     {TR_STR_LIT("x-set"), TR_STR_LIT("old")},
        {TR_STR_LIT("x-keep"), TR_STR_LIT("k")},
    };
    struct tr_h2_header out[8];
    int n = tr_header_edit_fields(&edit, in, 5, out, 8);
    assert_int_equal(n, 6);
    const char *want[][2] = {{":status", "200"}, {"x-add", "0"}, {"x-keep", "k"},
                             {"x-set", "new"},   {"x-add", "1"}, {"x-add", "2"}};
    for (int i = 0; i < n; i++) {
        assert_int_equal(out[i].name.len, strlen(want[i][0]));
        assert_memory_equal(out[i].name.p, want[i][0], out[i].name.len);
        assert_int_equal(out[i].value.len, strlen(want[i][1]));
        assert_memory_equal(out[i].value.p, want[i][1], out[i].value.len);
    }
    assert_int_equal(tr_header_edit_fields(&edit, in, 5, out, 5), -1);
    assert_int_equal(tr_header_edit_fields(NULL, in, 5, out, 8), 5);
    assert_int_equal(tr_header_edit_fields(NULL, in, 5, out, 4), -1);
}

static enum tr_rh_verdict verdict(enum tr_xff_mode xff, bool xfp, enum tr_request_id_mode rid,
                                  const char *name, const char *value, bool *kept)
{
    return tr_request_header_verdict(xff, xfp, rid, tr_str_from(name, strlen(name)),
                                     tr_str_from(value, strlen(value)), kept);
}

/* A route's own answer carries its fields (a redirect's Location, CORS)
 * last; too small a buffer still fails. */
static void test_local_response_with_fields(void **state)
{
    (void)state;
    struct tr_buf *b = malloc(sizeof(*b) + 256);
    b->start = b->end = 0;
    b->cap = 256;
    const struct tr_h2_header f[] = {
        {TR_STR_LIT("location"), TR_STR_LIT("https://a.example:8443/new?q=1")},
        {TR_STR_LIT("access-control-allow-origin"), TR_STR_LIT("https://o.example")},
    };
    assert_int_equal(tr_filter_local_response_with(b, 301, NULL, false, false, NULL, f, 2), 0);
    assert_memory_equal(tr_buf_head(b),
                        "HTTP/1.1 301 Moved Permanently\r\ncontent-type: text/plain\r\n"
                        "content-length: 0\r\nconnection: close\r\n"
                        "location: https://a.example:8443/new?q=1\r\n"
                        "access-control-allow-origin: https://o.example\r\n\r\n",
                        tr_buf_len(b));
    b->cap = 120;
    b->start = b->end = 0;
    assert_int_equal(tr_filter_local_response_with(b, 301, NULL, true, false, NULL, f, 2), -1);
    free(b);
}

/* The proxy's fields replace the upstream's of the same names, in any case
 * (CORS: Envoy sets them, never adds a second Access-Control-Allow-Origin). */
static void test_response_head_sets_fields(void **state)
{
    (void)state;
    static const char raw[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                              "Access-Control-Allow-Origin: *\r\nX-Up: 1\r\n\r\n";
    struct tr_h1_limits lim = TR_H1_LIMITS_DEFAULT;
    struct tr_h1_message m;
    memset(&m, 0, sizeof(m));
    m.headers = hdrs;
    assert_int_equal(tr_h1_parse_response(raw, sizeof(raw) - 1, &lim, TR_H1_M_GET, &m), 0);
    const struct tr_h2_header set[] = {
        {TR_STR_LIT("access-control-allow-origin"), TR_STR_LIT("https://o.example")},
        {TR_STR_LIT("access-control-allow-credentials"), TR_STR_LIT("true")},
    };
    struct tr_response_rewrite rw = {.keep_alive = true, .set = set, .n_set = 2};
    struct tr_buf *b = malloc(sizeof(*b) + 512);
    b->start = b->end = 0;
    b->cap = 512;
    assert_int_equal(tr_filter_response_head(b, NULL, &m, &rw), 0);
    char *out = strndup(tr_buf_head(b), tr_buf_len(b));
    assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n"
                             "access-control-allow-origin: https://o.example\r\n"
                             "access-control-allow-credentials: true\r\n\r\n");
    free(out);
    free(b);
}

static void test_request_header_verdict(void **state)
{
    (void)state;
    bool kept = false;
    /* Names in any case: HTTP/1.1 text and lowercase lists decide alike. */
    assert_int_equal(verdict(TR_XFF_APPEND, true, TR_REQID_PRESERVE, "Host", "a", &kept),
                     TR_RH_HOST);
    assert_int_equal(verdict(TR_XFF_APPEND, true, TR_REQID_PRESERVE, "X-Forwarded-For", "1", &kept),
                     TR_RH_XFF);
    assert_int_equal(verdict(TR_XFF_OFF, true, TR_REQID_PRESERVE, "x-forwarded-for", "1", &kept),
                     TR_RH_PASS);
    assert_int_equal(
        verdict(TR_XFF_APPEND, true, TR_REQID_PRESERVE, "x-forwarded-proto", "x", &kept),
        TR_RH_DROP);
    assert_int_equal(
        verdict(TR_XFF_APPEND, false, TR_REQID_PRESERVE, "x-forwarded-proto", "x", &kept),
        TR_RH_PASS);
    assert_int_equal(
        verdict(TR_XFF_APPEND, false, TR_REQID_PRESERVE, "Trellis-Orig-Proto", "HTTP/2", &kept),
        TR_RH_DROP);
    /* x-request-id: the first usable one is kept, the rest dropped. */
    assert_int_equal(verdict(TR_XFF_APPEND, true, TR_REQID_PRESERVE, "x-request-id", "", &kept),
                     TR_RH_DROP);
    assert_false(kept);
    assert_int_equal(verdict(TR_XFF_APPEND, true, TR_REQID_PRESERVE, "X-Request-Id", "r1", &kept),
                     TR_RH_REQUEST_ID);
    assert_true(kept);
    assert_int_equal(verdict(TR_XFF_APPEND, true, TR_REQID_PRESERVE, "x-request-id", "r2", &kept),
                     TR_RH_DROP);
    kept = false;
    assert_int_equal(verdict(TR_XFF_APPEND, true, TR_REQID_ALWAYS, "x-request-id", "r1", &kept),
                     TR_RH_DROP);
    assert_int_equal(verdict(TR_XFF_APPEND, true, TR_REQID_OFF, "x-request-id", "r1", &kept),
                     TR_RH_PASS);
    assert_int_equal(
        verdict(TR_XFF_APPEND, true, TR_REQID_PRESERVE, "x-other-header-12", "v", &kept),
        TR_RH_PASS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hop_by_hop_removed_and_forwarding_headers_added),
        cmocka_unit_test(test_request_id_preserved_or_replaced),
        cmocka_unit_test(test_multiple_xff_headers_joined),
        cmocka_unit_test(test_upgrade_and_chunked_kept),
        cmocka_unit_test(test_local_response_and_overflow),
        cmocka_unit_test(test_request_header_verdict),
        cmocka_unit_test(test_local_response_with_fields),
        cmocka_unit_test(test_response_head_sets_fields),
        cmocka_unit_test(test_edit_drops),
        cmocka_unit_test(test_request_edits),
        cmocka_unit_test(test_request_edits_over_limit),
        cmocka_unit_test(test_response_edits),
        cmocka_unit_test(test_local_response_edits),
        cmocka_unit_test(test_edit_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
