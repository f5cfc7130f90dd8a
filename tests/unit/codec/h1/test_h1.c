/* Unit tests for codec/h1 head scanning and request/response parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "codec/h1/h1.h"

#define INCOMPLETE 1 /* pseudo result: head_end wants more bytes */

static struct tr_h1_header hdrs[TR_H1_MAX_HEADERS_CAP];
static const struct tr_h1_limits small_lim = {64, 256, 4};

/* head_end in one shot, then the parser: what a server would answer. */
static int run_head(const char *s, size_t len, const struct tr_h1_limits *lim, int is_request,
                    enum tr_h1_method req_method, struct tr_h1_message *m)
{
    size_t scanned = 0;
    int h = tr_h1_head_end(s, len, lim, is_request, &scanned);
    if (h < 0)
        return h;
    if (h == 0)
        return INCOMPLETE;
    m->headers = hdrs;
    int rc = is_request ? tr_h1_parse_request(s, (size_t)h, lim, m)
                        : tr_h1_parse_response(s, (size_t)h, lim, req_method, m);
    if (rc == 0)
        assert_int_equal(m->head_len, h);
    return rc;
}

static int req(const char *s, struct tr_h1_message *m)
{
    struct tr_h1_limits lim = TR_H1_LIMITS_DEFAULT;
    return run_head(s, strlen(s), &lim, 1, TR_H1_M_GET, m);
}

static int resp(const char *s, enum tr_h1_method method, struct tr_h1_message *m)
{
    struct tr_h1_limits lim = TR_H1_LIMITS_DEFAULT;
    return run_head(s, strlen(s), &lim, 0, method, m);
}

static void assert_slice(tr_str s, const char *want)
{
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.p, want, s.len);
}

/* ---- character table ---- */

static void test_ctype_table(void **state)
{
    for (int c = 0; c < 256; c++) {
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        int digit = c >= '0' && c <= '9';
        unsigned want = 0;
        if (alpha || digit || (c && strchr("!#$%&'*+-.^_`|~", c)))
            want |= TR_H1_C_TCHAR;
        if ((c >= 0x21 && c <= 0x7e) || c >= 0x80)
            want |= TR_H1_C_FVCHAR;
        if (c == ' ' || c == '\t')
            want |= TR_H1_C_WS;
        if (digit || (c && strchr("abcdefABCDEF", c)))
            want |= TR_H1_C_HEX;
        if (c >= 0x21 && c <= 0x7e && c != '#')
            want |= TR_H1_C_TARGET;
        if (alpha || digit || (c && strchr("-._~", c)))
            want |= TR_H1_C_HOST;
        if (tr_h1_ctype[c] != want)
            fail_msg("class of byte 0x%02x is 0x%02x, want 0x%02x", c, tr_h1_ctype[c], want);
    }
}

/* ---- valid requests ---- */

static void test_simple_get(void **state)
{
    struct tr_h1_message m;
    const char *s = "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-Pad:  v a l \t\r\n"
                    "X-Empty:\r\nX-Obs: caf\xc3\xa9\r\n\r\n";
    assert_int_equal(req(s, &m), 0);
    assert_slice(m.method, "GET");
    assert_int_equal(m.method_id, TR_H1_M_GET);
    assert_slice(m.target, "/a/b?c=d");
    assert_int_equal(m.version_minor, 1);
    assert_int_equal(m.body, TR_H1_BODY_NONE);
    assert_int_equal(m.flags, 0);
    assert_int_equal(m.n_headers, 4);
    assert_int_equal(m.host_idx, 0);
    assert_int_equal(m.head_len, strlen(s));
    assert_slice(m.headers[0].name, "Host");
    assert_slice(m.headers[0].value, "example.com");
    assert_slice(m.headers[1].value, "v a l"); /* OWS trimmed, inner SP kept */
    assert_slice(m.headers[2].name, "X-Empty");
    assert_int_equal(m.headers[2].value.len, 0);
    assert_slice(m.headers[3].value, "caf\xc3\xa9"); /* obs-text allowed */
    /* Slices point into the buffer. */
    assert_ptr_equal(m.method.p, s);
    assert_ptr_equal(m.headers[0].name.p, s + 23);
    assert_int_equal(tr_h1_find_header(&m, "HOST", 4), 0);
    assert_int_equal(tr_h1_find_header(&m, "x-empty", 7), 2);
    assert_int_equal(tr_h1_find_header(&m, "x-none", 6), -1);
}

static void test_methods(void **state)
{
    static const struct {
        const char *line;
        enum tr_h1_method id;
    } v[] = {
        {"GET / HTTP/1.1\r\n", TR_H1_M_GET},
        {"HEAD / HTTP/1.1\r\n", TR_H1_M_HEAD},
        {"POST / HTTP/1.1\r\n", TR_H1_M_POST},
        {"PUT / HTTP/1.1\r\n", TR_H1_M_PUT},
        {"DELETE / HTTP/1.1\r\n", TR_H1_M_DELETE},
        {"OPTIONS * HTTP/1.1\r\n", TR_H1_M_OPTIONS},
        {"OPTIONS / HTTP/1.1\r\n", TR_H1_M_OPTIONS},
        {"TRACE / HTTP/1.1\r\n", TR_H1_M_TRACE},
        {"PATCH / HTTP/1.1\r\n", TR_H1_M_PATCH},
        {"CONNECT example.com:443 HTTP/1.1\r\n", TR_H1_M_CONNECT},
        {"CONNECT [::1]:8443 HTTP/1.1\r\n", TR_H1_M_CONNECT},
        {"PURGE / HTTP/1.1\r\n", TR_H1_M_OTHER},
        {"get / HTTP/1.1\r\n", TR_H1_M_OTHER}, /* methods are case-sensitive */
        {"M-SEARCH* / HTTP/1.1\r\n", TR_H1_M_OTHER},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char buf[256];
        struct tr_h1_message m;
        snprintf(buf, sizeof(buf), "%sHost: example.com\r\n\r\n", v[i].line);
        int rc = req(buf, &m);
        if (rc != 0)
            fail_msg("%s -> %d", v[i].line, rc);
        assert_int_equal(m.method_id, v[i].id);
    }
}

static void test_body_framing(void **state)
{
    struct tr_h1_message m;
    assert_int_equal(req("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n", &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_LENGTH);
    assert_int_equal(m.content_length, 42);

    assert_int_equal(req("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_LENGTH);
    assert_int_equal(m.content_length, 0);

    assert_int_equal(req("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n", &m), 0);
    assert_int_equal(m.content_length, 7);

    assert_int_equal(
        req("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n", &m), 0);
    assert_int_equal(m.content_length, INT64_MAX);

    assert_int_equal(
        req("POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \t ChUnKeD \r\n\r\n", &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_CHUNKED);

    assert_int_equal(req("POST /u HTTP/1.1\r\nHost: a\r\n\r\n", &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_NONE);
}

static void test_versions_and_flags(void **state)
{
    struct tr_h1_message m;
    /* HTTP/1.0: Host optional, close unless keep-alive. */
    assert_int_equal(req("GET / HTTP/1.0\r\n\r\n", &m), 0);
    assert_int_equal(m.version_minor, 0);
    assert_int_equal(m.host_idx, -1);
    assert_int_equal(m.flags, TR_H1_F_CONN_CLOSE);

    assert_int_equal(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &m), 0);
    assert_int_equal(m.flags, TR_H1_F_CONN_KEEP_ALIVE);

    /* 1.2+ is read as 1.1 (and so needs Host). */
    assert_int_equal(req("GET / HTTP/1.9\r\nHost: a\r\n\r\n", &m), 0);
    assert_int_equal(m.version_minor, 1);

    assert_int_equal(req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &m), 0);
    assert_int_equal(m.flags, TR_H1_F_CONN_CLOSE);

    assert_int_equal(req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, , Upgrade ,"
                         "x-Foo\r\nUpgrade: websocket\r\nConnection: x-bar\r\n\r\n",
                         &m),
                     0);
    assert_int_equal(m.flags, TR_H1_F_CONN_KEEP_ALIVE | TR_H1_F_CONN_UPGRADE | TR_H1_F_UPGRADE |
                                  TR_H1_F_HAS_CONNECTION_TOKENS);
    assert_true(tr_h1_connection_lists(&m, TR_STR_LIT("X-FOO")));
    assert_true(tr_h1_connection_lists(&m, TR_STR_LIT("x-bar")));
    assert_true(tr_h1_connection_lists(&m, TR_STR_LIT("upgrade")));
    assert_false(tr_h1_connection_lists(&m, TR_STR_LIT("x-fo")));
    assert_false(tr_h1_connection_lists(&m, TR_STR_LIT("websocket")));

    assert_int_equal(req("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n"
                         "TE: deflate;q=0.5, Trailers\r\nContent-Length: 3\r\n\r\n",
                         &m),
                     0);
    assert_int_equal(m.flags, TR_H1_F_EXPECT_CONTINUE | TR_H1_F_TE_TRAILERS);

    /* Other expectations are left to the proxy. */
    assert_int_equal(req("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nTE: gzip\r\n\r\n", &m), 0);
    assert_int_equal(m.flags, 0);
}

static void test_targets(void **state)
{
    struct tr_h1_message m;
    assert_int_equal(req("GET http://Example.com:8080/x?y HTTP/1.1\r\n"
                         "Host: example.COM:8080\r\n\r\n",
                         &m),
                     0);
    assert_slice(m.target, "http://Example.com:8080/x?y");
    assert_int_equal(req("GET https://a.b HTTP/1.1\r\nHost: a.b\r\n\r\n", &m), 0);
    assert_int_equal(req("GET HTTP://a.b?q HTTP/1.0\r\n\r\n", &m), 0);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", &m), 0);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n", &m), 0);
    assert_int_equal(req("GET /%41~!$&'()*+,;=:@[]{}|^`\"<>\\ HTTP/1.1\r\nHost: a\r\n\r\n", &m), 0);
}

/* Build a request whose first line is line_len bytes (incl. CRLF) and whose
 * head is total bytes, with n_extra fields besides Host. */
static size_t make_req(char *buf, size_t line_len, size_t total, int n_extra)
{
    size_t n = 0;
    memcpy(buf, "GET /", 5);
    n = 5;
    memset(buf + n, 'p', line_len - 16);
    n += line_len - 16;
    memcpy(buf + n, " HTTP/1.1\r\nHost: a\r\n", 20);
    n += 20;
    for (int i = 0; i < n_extra; i++) {
        memcpy(buf + n, "A: 1\r\n", 6);
        n += 6;
    }
    memcpy(buf + n, "X: ", 3);
    n += 3;
    memset(buf + n, 'v', total - n - 4);
    n = total - 4;
    memcpy(buf + n, "\r\n\r\n", 4);
    return total;
}

static void test_limits_boundaries(void **state)
{
    struct tr_h1_message m;
    char buf[1024];
    struct tr_h1_limits lim = {64, 256, 4};
    size_t n;

    /* Request line of exactly max_request_line bytes: fine; one more: 414,
     * from head_end and from the parser alone. */
    n = make_req(buf, 64, 200, 0);
    assert_int_equal((const char *)memchr(buf, '\n', n) - buf + 1, 64);
    assert_int_equal(run_head(buf, n, &lim, 1, TR_H1_M_GET, &m), 0);
    size_t scanned = 0;
    assert_int_equal(tr_h1_head_end(buf, n, &lim, 1, &scanned), (int)n);
    n = make_req(buf, 65, 200, 0);
    assert_int_equal(run_head(buf, n, &lim, 1, TR_H1_M_GET, &m), TR_H1_E_URI_TOO_LONG);
    scanned = 0;
    assert_int_equal(tr_h1_head_end(buf, n, &lim, 1, &scanned), TR_H1_E_URI_TOO_LONG);
    scanned = 0; /* the line minus its LF is already too long */
    assert_int_equal(tr_h1_head_end(buf, 64, &lim, 1, &scanned), TR_H1_E_URI_TOO_LONG);
    m.headers = hdrs;
    assert_int_equal(tr_h1_parse_request(buf, n, &lim, &m), TR_H1_E_URI_TOO_LONG);

    /* Head of exactly max_header_bytes: fine; one more: 431. */
    n = make_req(buf, 40, 256, 0);
    assert_int_equal(run_head(buf, n, &lim, 1, TR_H1_M_GET, &m), 0);
    assert_int_equal(m.head_len, 256);
    n = make_req(buf, 40, 257, 0);
    assert_int_equal(run_head(buf, n, &lim, 1, TR_H1_M_GET, &m), TR_H1_E_HEADERS_TOO_LARGE);
    m.headers = hdrs;
    assert_int_equal(tr_h1_parse_request(buf, n, &lim, &m), TR_H1_E_HEADERS_TOO_LARGE);

    /* Exactly max_headers fields (Host, 2 x A, X): fine; 5: 431. */
    n = make_req(buf, 40, 100, 2);
    assert_int_equal(run_head(buf, n, &lim, 1, TR_H1_M_GET, &m), 0);
    assert_int_equal(m.n_headers, 4);
    n = make_req(buf, 40, 100, 3);
    assert_int_equal(run_head(buf, n, &lim, 1, TR_H1_M_GET, &m), TR_H1_E_HEADERS_TOO_LARGE);

    /* max_headers above the cap is clamped to the cap. */
    struct tr_h1_limits big = {8192, 65536, 100000};
    static char huge[8192];
    n = 0;
    n += (size_t)sprintf(huge, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < TR_H1_MAX_HEADERS_CAP; i++)
        n += (size_t)sprintf(huge + n, "A: %d\r\n", i);
    n += (size_t)sprintf(huge + n, "\r\n");
    assert_int_equal(run_head(huge, n, &big, 1, TR_H1_M_GET, &m), TR_H1_E_HEADERS_TOO_LARGE);
    big.max_headers = TR_H1_MAX_HEADERS_CAP + 1;
    assert_int_equal(run_head(huge, n, &big, 1, TR_H1_M_GET, &m), TR_H1_E_HEADERS_TOO_LARGE);

    /* A zero-header limit refuses any field. */
    struct tr_h1_limits none = {8192, 65536, 0};
    assert_int_equal(run_head("GET / HTTP/1.0\r\n\r\n", 18, &none, 1, TR_H1_M_GET, &m), 0);
    assert_int_equal(run_head("GET / HTTP/1.0\r\nA: b\r\n\r\n", 24, &none, 1, TR_H1_M_GET, &m),
                     TR_H1_E_HEADERS_TOO_LARGE);
}

/* ---- head_end ---- */

static void test_head_end_incremental(void **state)
{
    struct tr_h1_limits lim = TR_H1_LIMITS_DEFAULT;
    const char *s = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET";
    size_t head = strlen(s) - 6;
    /* One byte at a time: 0 until the last LF of the head, and the scan
     * position advances with the buffer (no rescans). */
    size_t scanned = 0;
    for (size_t len = 0; len <= strlen(s); len++) {
        int rc = tr_h1_head_end(s, len, &lim, 1, &scanned);
        if (len < head) {
            assert_int_equal(rc, 0);
            assert_int_equal(scanned & (SIZE_MAX >> 1), len);
        } else {
            assert_int_equal(rc, (int)head); /* repeated calls: same answer */
        }
    }
    /* Random splits agree with the one-shot answer. */
    srand(7);
    for (int iter = 0; iter < 500; iter++) {
        size_t len = 0;
        int rc = 0;
        scanned = 0;
        while (rc == 0 && len < strlen(s)) {
            len += 1 + (size_t)rand() % 8;
            if (len > strlen(s))
                len = strlen(s);
            rc = tr_h1_head_end(s, len, &lim, 1, &scanned);
        }
        assert_int_equal(rc, (int)head);
    }
}

/* Feed s one byte at a time and return the first non-zero result. */
static int head_end_drip(const char *s, size_t n, const struct tr_h1_limits *lim, int is_request)
{
    size_t scanned = 0;
    for (size_t len = 1; len <= n; len++) {
        int rc = tr_h1_head_end(s, len, lim, is_request, &scanned);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void test_head_end_limits_while_incomplete(void **state)
{
    char buf[400];
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "GET /", 5);
    /* No CRLF yet: 414 as soon as max_request_line bytes are in. */
    size_t scanned = 0;
    assert_int_equal(tr_h1_head_end(buf, 63, &small_lim, 1, &scanned), 0);
    assert_int_equal(tr_h1_head_end(buf, 64, &small_lim, 1, &scanned), TR_H1_E_URI_TOO_LONG);
    assert_int_equal(head_end_drip(buf, sizeof(buf), &small_lim, 1), TR_H1_E_URI_TOO_LONG);
    /* For a response the same is a bad response. */
    assert_int_equal(head_end_drip(buf, sizeof(buf), &small_lim, 0), TR_H1_E_BAD_RESPONSE);
    /* Line done but the head grows past max_header_bytes: 431. */
    memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
    assert_int_equal(head_end_drip(buf, sizeof(buf), &small_lim, 1), TR_H1_E_HEADERS_TOO_LARGE);
    scanned = 0;
    assert_int_equal(tr_h1_head_end(buf, 255, &small_lim, 1, &scanned), 0);
    assert_int_equal(tr_h1_head_end(buf, 256, &small_lim, 1, &scanned), TR_H1_E_HEADERS_TOO_LARGE);
    /* Bare LF fails early, wherever the split is. */
    const char *lf = "GET / HTTP/1.1\r\nHost: a\nX: y";
    assert_int_equal(head_end_drip(lf, strlen(lf), &small_lim, 1), TR_H1_E_BAD_REQUEST);
    assert_int_equal(head_end_drip("HTTP/1.1 200 OK\n", 16, &small_lim, 0), TR_H1_E_BAD_RESPONSE);
    /* A leading empty line is refused at once. */
    assert_int_equal(head_end_drip("\r\nGET", 5, &small_lim, 1), TR_H1_E_BAD_REQUEST);
}

/* ---- malformed and smuggling vectors ---- */

struct vector {
    const char *name;
    const char *data;
    size_t len;
    int is_request;
    int small; /* use small_lim */
    enum tr_h1_method req_method;
    int want;
};

#define BAD  TR_H1_E_BAD_REQUEST
#define BADR TR_H1_E_BAD_RESPONSE
#define RQ(name, s, want)                                                                          \
    {                                                                                              \
        name, s, sizeof(s) - 1, 1, 0, TR_H1_M_GET, want                                            \
    }
#define RQS(name, s, want)                                                                         \
    {                                                                                              \
        name, s, sizeof(s) - 1, 1, 1, TR_H1_M_GET, want                                            \
    }
#define RS(name, s, want)                                                                          \
    {                                                                                              \
        name, s, sizeof(s) - 1, 0, 0, TR_H1_M_GET, want                                            \
    }
#define RSM(name, m, s, want)                                                                      \
    {                                                                                              \
        name, s, sizeof(s) - 1, 0, 0, m, want                                                      \
    }
#define RSS(name, s, want)                                                                         \
    {                                                                                              \
        name, s, sizeof(s) - 1, 0, 1, TR_H1_M_GET, want                                            \
    }
#define P "POST / HTTP/1.1\r\nHost: a\r\n"
#define G "GET / HTTP/1.1\r\nHost: a\r\n"
#define R "HTTP/1.1 200 OK\r\n"

static const struct vector vectors[] = {
    /* Content-Length / Transfer-Encoding ambiguity (smuggling) */
    RQ("CL then TE", P "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", BAD),
    RQ("TE then CL", P "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", BAD),
    RQ("TE chunked, identity", P "Transfer-Encoding: chunked, identity\r\n\r\n", BAD),
    RQ("TE chunked, chunked", P "Transfer-Encoding: chunked, chunked\r\n\r\n", BAD),
    RQ("TE gzip, chunked", P "Transfer-Encoding: gzip, chunked\r\n\r\n", BAD),
    RQ("TE identity", P "Transfer-Encoding: identity\r\n\r\n", BAD),
    RQ("TE empty", P "Transfer-Encoding: \r\n\r\n", BAD),
    RQ("TE xchunked", P "Transfer-Encoding: xchunked\r\n\r\n", BAD),
    RQ("TE chunkedx", P "Transfer-Encoding: chunked-x\r\n\r\n", BAD),
    RQ("TE quoted", P "Transfer-Encoding: \"chunked\"\r\n\r\n", BAD),
    RQ("TE with VT",
       P "Transfer-Encoding:\x0b"
         "chunked\r\n\r\n",
       BAD),
    RQ("TE with VT after", P "Transfer-Encoding: chunked\x0b\r\n\r\n", BAD),
    RQ("TE with FF",
       P "Transfer-Encoding: \x0c"
         "chunked\r\n\r\n",
       BAD),
    RQ("TE space before colon", P "Transfer-Encoding : chunked\r\n\r\n", BAD),
    RQ("TE tab before colon", P "Transfer-Encoding\t: chunked\r\n\r\n", BAD),
    RQ("two TE headers", P "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BAD),
    RQ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", BAD),
    RQ("TE obs-folded", P "Transfer-Encoding:\r\n chunked\r\n\r\n", BAD),
    RQ("CL plus sign", P "Content-Length: +5\r\n\r\n", BAD),
    RQ("CL minus sign", P "Content-Length: -1\r\n\r\n", BAD),
    RQ("CL list equal", P "Content-Length: 5, 5\r\n\r\n", BAD),
    RQ("CL two equal", P "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", BAD),
    RQ("CL two different", P "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", BAD),
    RQ("CL inner space", P "Content-Length: 1 2\r\n\r\n", BAD),
    RQ("CL hex", P "Content-Length: 0x10\r\n\r\n", BAD),
    RQ("CL empty", P "Content-Length:\r\n\r\n", BAD),
    RQ("CL 2^63", P "Content-Length: 9223372036854775808\r\n\r\n", BAD),
    RQ("CL 20 digits", P "Content-Length: 99999999999999999999\r\n\r\n", BAD),
    RQ("CL space before colon", P "Content-Length : 5\r\n\r\n", BAD),
    RQ("CONNECT with TE",
       "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nTransfer-Encoding: chunked"
       "\r\n\r\n",
       BAD),
    RQ("CONNECT with CL", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\n",
       BAD),
    /* Line structure */
    RQ("obs-fold", G "X: a\r\n b\r\n\r\n", BAD),
    RQ("obs-fold tab", G "X: a\r\n\tb\r\n\r\n", BAD),
    RQ("space before first header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", BAD),
    RQ("bare LF in header", G "X: a\nY: b\r\n\r\n", BAD),
    RQ("bare LF at end", G "X: a\n\r\n", BAD),
    RQ("LF-only head", "GET / HTTP/1.1\nHost: a\n\n", BAD),
    RQ("bare CR in value", G "X: a\rb\r\n\r\n", BAD),
    RQ("bare CR in request line", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("bare CR ends line", "GET / HTTP/1.1\r\rHost: a\r\n\r\n", BAD),
    RQ("leading CRLF", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("empty head", "\r\n\r\n", BAD),
    /* Field syntax */
    RQ("NUL in value", G "X: a\0b\r\n\r\n", BAD),
    RQ("NUL in name", G "X\0Y: a\r\n\r\n", BAD),
    RQ("DEL in value", G "X: a\x7f\r\n\r\n", BAD),
    RQ("ESC in value", G "X: \x1b[0m\r\n\r\n", BAD),
    RQ("space in name", G "X Y: z\r\n\r\n", BAD),
    RQ("no colon", G "Foo\r\n\r\n", BAD),
    RQ("empty name", G ": x\r\n\r\n", BAD),
    RQ("non-token name", G "X(Y): z\r\n\r\n", BAD),
    RQ("obs-text in name", G "X\xe9: z\r\n\r\n", BAD),
    RQ("Connection non-token", G "Connection: close/x\r\n\r\n", BAD),
    /* Request line */
    RQ("HTTP/0.9", "GET /\r\n\r\n", BAD),
    RQ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", TR_H1_E_VERSION),
    RQ("HTTP/3.0", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", TR_H1_E_VERSION),
    RQ("HTTP/0.9 explicit", "GET / HTTP/0.9\r\n\r\n", TR_H1_E_VERSION),
    RQ("double SP before target", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("double SP before version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("trailing SP", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", BAD),
    RQ("tab separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("version no minor", "GET / HTTP/1\r\nHost: a\r\n\r\n", BAD),
    RQ("version two-digit major", "GET / HTTP/11.1\r\nHost: a\r\n\r\n", BAD),
    RQ("version two-digit minor", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", BAD),
    RQ("empty method", " / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("bad method char", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("target with #", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("target with DEL", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("target with obs-text", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("target with tab", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("target with NUL", "GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("asterisk with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("authority-form with GET", "GET a.com:80 HTTP/1.1\r\nHost: a.com\r\n\r\n", BAD),
    RQ("CONNECT origin-form", "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("CONNECT without port", "CONNECT a.com HTTP/1.1\r\nHost: a.com\r\n\r\n", BAD),
    RQ("CONNECT absolute-form", "CONNECT http://a.com:80/ HTTP/1.1\r\nHost: a.com\r\n\r\n", BAD),
    RQ("absolute-form ftp", "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("absolute-form no authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("absolute-form userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", BAD),
    RQ("absolute-form Host mismatch", "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", BAD),
    /* Host */
    RQ("missing Host", "GET / HTTP/1.1\r\nX: a\r\n\r\n", BAD),
    RQ("double Host", G "Host: a\r\n\r\n", BAD),
    RQ("double Host differing", G "Host: b\r\n\r\n", BAD),
    RQ("Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BAD),
    RQ("Host with @", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", BAD),
    RQ("Host with /", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", BAD),
    RQ("Host with %", "GET / HTTP/1.1\r\nHost: %61\r\n\r\n", BAD),
    RQ("Host empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", BAD),
    RQ("Host empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", BAD),
    RQ("Host port too big", "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", BAD),
    RQ("Host port not digits", "GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n", BAD),
    RQ("Host IPv6 unclosed", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", BAD),
    RQ("Host space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", BAD),
    /* Limits */
    RQS("request line over limit",
        "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
        TR_H1_E_URI_TOO_LONG),
    RQS("request line over limit, incomplete",
        "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        TR_H1_E_URI_TOO_LONG),
    RQS("too many headers", G "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", TR_H1_E_HEADERS_TOO_LARGE),
    RQS("head too large",
        G "X: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        TR_H1_E_HEADERS_TOO_LARGE),

    /* Responses */
    RS("resp CL+TE", R "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", BADR),
    RS("resp two CL", R "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", BADR),
    RS("resp CL list", R "Content-Length: 5,5\r\n\r\n", BADR),
    RS("resp CL sign", R "Content-Length: +5\r\n\r\n", BADR),
    RS("resp TE gzip", R "Transfer-Encoding: gzip\r\n\r\n", BADR),
    RS("resp TE gzip, chunked", R "Transfer-Encoding: gzip, chunked\r\n\r\n", BADR),
    RS("resp two TE", R "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BADR),
    RS("resp TE on 204", "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", BADR),
    RS("resp TE on 100", "HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\n\r\n", BADR),
    RS("resp TE in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", BADR),
    RS("resp CL+TE on 304",
       "HTTP/1.1 304 NM\r\nContent-Length: 1\r\nTransfer-Encoding: chunked"
       "\r\n\r\n",
       BADR),
    RSM("resp CL+TE to HEAD", TR_H1_M_HEAD,
        R "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", BADR),
    RS("resp status 600", "HTTP/1.1 600 X\r\n\r\n", BADR),
    RS("resp status 099", "HTTP/1.1 099 X\r\n\r\n", BADR),
    RS("resp status 2 digits", "HTTP/1.1 20 OK\r\n\r\n", BADR),
    RS("resp status 4 digits", "HTTP/1.1 2000 OK\r\n\r\n", BADR),
    RS("resp status letters", "HTTP/1.1 2x0 OK\r\n\r\n", BADR),
    RS("resp HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n", BADR),
    RS("resp lowercase", "http/1.1 200 OK\r\n\r\n", BADR),
    RS("resp double SP", "HTTP/1.1  200 OK\r\n\r\n", BADR),
    RS("resp tab after code", "HTTP/1.1 200\tOK\r\n\r\n", BADR),
    RS("resp CTL in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", BADR),
    RS("resp bare LF", R "X: a\n\r\n", BADR),
    RS("resp bare CR", R "X: a\rb\r\n\r\n", BADR),
    RS("resp obs-fold", R "X: a\r\n b\r\n\r\n", BADR),
    RS("resp space before colon", R "Content-Length : 5\r\n\r\n", BADR),
    RS("resp NUL", R "X: \0\r\n\r\n", BADR),
    RSS("resp too many headers", R "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
        TR_H1_E_HEADERS_TOO_LARGE),
};

static void test_vectors(void **state)
{
    struct tr_h1_limits def = TR_H1_LIMITS_DEFAULT;
    size_t n = sizeof(vectors) / sizeof(vectors[0]);
    assert_true(n >= 40);
    for (size_t i = 0; i < n; i++) {
        const struct vector *v = &vectors[i];
        const struct tr_h1_limits *lim = v->small ? &small_lim : &def;
        struct tr_h1_message m;
        int got = run_head(v->data, v->len, lim, v->is_request, v->req_method, &m);
        if (got != v->want)
            fail_msg("vector '%s': got %d, want %d", v->name, got, v->want);
        /* The byte-at-a-time scan reaches the same verdict. */
        int drip = head_end_drip(v->data, v->len, lim, v->is_request);
        if (drip > 0) {
            m.headers = hdrs;
            drip = v->is_request
                       ? tr_h1_parse_request(v->data, (size_t)drip, lim, &m)
                       : tr_h1_parse_response(v->data, (size_t)drip, lim, v->req_method, &m);
        } else if (drip == 0) {
            drip = INCOMPLETE;
        }
        if (drip != v->want)
            fail_msg("vector '%s' (split): got %d, want %d", v->name, drip, v->want);
    }
    print_message("%zu malformed vectors checked\n", n);
}

/* ---- valid responses ---- */

static void test_responses(void **state)
{
    struct tr_h1_message m;
    assert_int_equal(
        resp("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nServer: x\r\n\r\n", TR_H1_M_GET, &m), 0);
    assert_int_equal(m.status, 200);
    assert_slice(m.reason, "OK");
    assert_int_equal(m.body, TR_H1_BODY_LENGTH);
    assert_int_equal(m.content_length, 12);
    assert_int_equal(m.n_headers, 2);
    assert_int_equal(m.flags, 0);

    assert_int_equal(
        resp("HTTP/1.1 404 Not  Found \r\nTransfer-Encoding: chunked\r\n\r\n", TR_H1_M_GET, &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_CHUNKED);
    assert_slice(m.reason, "Not  Found ");

    assert_int_equal(resp("HTTP/1.1 200 OK\r\n\r\n", TR_H1_M_GET, &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_UNTIL_CLOSE);
    assert_true(m.flags & TR_H1_F_CONN_CLOSE);

    /* Empty reason, with or without the SP. */
    assert_int_equal(resp("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", TR_H1_M_GET, &m), 0);
    assert_int_equal(m.reason.len, 0);
    assert_int_equal(resp("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", TR_H1_M_GET, &m), 0);
    assert_int_equal(m.reason.len, 0);
    assert_int_equal(m.status, 200);

    /* No body: 1xx, 204, 304 (even with CL or, for 304, TE), HEAD. */
    assert_int_equal(resp("HTTP/1.1 100 Continue\r\n\r\n", TR_H1_M_POST, &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_NONE);
    assert_int_equal(resp("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", TR_H1_M_GET, &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_NONE);
    assert_int_equal(resp("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", TR_H1_M_GET, &m),
                     0);
    assert_int_equal(m.body, TR_H1_BODY_NONE);
    assert_int_equal(
        resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", TR_H1_M_GET, &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_NONE);
    assert_int_equal(
        resp("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", TR_H1_M_GET, &m),
        0);
    assert_int_equal(m.body, TR_H1_BODY_NONE);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", TR_H1_M_HEAD, &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_NONE);
    assert_int_equal(
        resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", TR_H1_M_HEAD, &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_NONE);

    /* Tunnels. */
    assert_int_equal(resp("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                          "Upgrade: websocket\r\n\r\n",
                          TR_H1_M_GET, &m),
                     0);
    assert_int_equal(m.body, TR_H1_BODY_TUNNEL);
    assert_int_equal(m.flags, TR_H1_F_CONN_UPGRADE | TR_H1_F_UPGRADE);
    assert_int_equal(resp("HTTP/1.1 200 Connection Established\r\n\r\n", TR_H1_M_CONNECT, &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_TUNNEL);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", TR_H1_M_CONNECT, &m), 0);
    assert_int_equal(m.body, TR_H1_BODY_TUNNEL);
    /* A refused CONNECT has an ordinary body. */
    assert_int_equal(resp("HTTP/1.1 407 Auth\r\nContent-Length: 5\r\n\r\n", TR_H1_M_CONNECT, &m),
                     0);
    assert_int_equal(m.body, TR_H1_BODY_LENGTH);
    assert_int_equal(m.content_length, 5);

    /* HTTP/1.0 and 1.x. */
    assert_int_equal(resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", TR_H1_M_GET, &m), 0);
    assert_int_equal(m.version_minor, 0);
    assert_true(m.flags & TR_H1_F_CONN_CLOSE);
    assert_int_equal(resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                          TR_H1_M_GET, &m),
                     0);
    assert_int_equal(m.flags, TR_H1_F_CONN_KEEP_ALIVE);
    assert_int_equal(resp("HTTP/1.7 599 Whatever\r\nContent-Length: 1\r\n\r\n", TR_H1_M_GET, &m),
                     0);
    assert_int_equal(m.version_minor, 1);
    assert_int_equal(m.status, 599);

    /* Request-only headers leave response flags alone. */
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nExpect: 100-continue\r\nTE: trailers\r\n"
                          "Content-Length: 0\r\n\r\n",
                          TR_H1_M_GET, &m),
                     0);
    assert_int_equal(m.flags, 0);
}

/* ---- helpers ---- */

static void test_util(void **state)
{
    assert_int_equal(tr_h1_error_status(TR_H1_E_BAD_REQUEST), 400);
    assert_int_equal(tr_h1_error_status(TR_H1_E_URI_TOO_LONG), 414);
    assert_int_equal(tr_h1_error_status(TR_H1_E_HEADERS_TOO_LARGE), 431);
    assert_int_equal(tr_h1_error_status(TR_H1_E_VERSION), 505);
    assert_int_equal(tr_h1_error_status(TR_H1_E_BAD_RESPONSE), 502);
    assert_string_equal(tr_h1_error_str(TR_H1_E_BAD_REQUEST), "bad request");
    assert_string_equal(tr_h1_error_str(-99), "unknown error");
    assert_string_equal(tr_h1_reason(200), "OK");
    assert_string_equal(tr_h1_reason(404), "Not Found");
    assert_string_equal(tr_h1_reason(431), "Request Header Fields Too Large");
    assert_string_equal(tr_h1_reason(299), "Success");
    assert_string_equal(tr_h1_reason(999), "Unknown");

    static const char *hop[] = {"Connection",        "keep-alive", "PROXY-CONNECTION", "te",
                                "Transfer-Encoding", "upgrade",    "Trailer"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        assert_true(tr_h1_is_hop_by_hop(tr_str_from(hop[i], strlen(hop[i]))));
    assert_false(tr_h1_is_hop_by_hop(TR_STR_LIT("Trailers")));
    assert_false(tr_h1_is_hop_by_hop(TR_STR_LIT("Content-Length")));
    assert_false(tr_h1_is_hop_by_hop(TR_STR_LIT("tf")));

    assert_true(tr_h1_is_token(TR_STR_LIT("X-Foo_1!")));
    assert_false(tr_h1_is_token(TR_STR_LIT("")));
    assert_false(tr_h1_is_token(TR_STR_LIT("a b")));
    assert_true(tr_h1_is_field_value(TR_STR_LIT("")));
    assert_true(tr_h1_is_field_value(TR_STR_LIT("a \tb\xff")));
    assert_false(tr_h1_is_field_value(TR_STR_LIT(" a")));
    assert_false(tr_h1_is_field_value(TR_STR_LIT("a\r\nb")));
    assert_true(tr_h1_ieq(TR_STR_LIT("ChUnKeD"), "chunked", 7));
    assert_false(tr_h1_ieq(TR_STR_LIT("chunke"), "chunked", 7));

    assert_true(tr_h1_is_authority(TR_STR_LIT("a.b-c_d~e"), 0));
    assert_true(tr_h1_is_authority(TR_STR_LIT("a:0"), 1));
    assert_true(tr_h1_is_authority(TR_STR_LIT("a:65535"), 1));
    assert_true(tr_h1_is_authority(TR_STR_LIT("[::ffff:1.2.3.4]:1"), 1));
    assert_false(tr_h1_is_authority(TR_STR_LIT("a"), 1));
    assert_false(tr_h1_is_authority(TR_STR_LIT("a:000080"), 0));
    assert_false(tr_h1_is_authority(TR_STR_LIT("[]"), 0));
    assert_false(tr_h1_is_authority(TR_STR_LIT(":80"), 0));
    assert_false(tr_h1_is_authority(TR_STR_LIT("a:1:2"), 0));
    assert_false(tr_h1_is_authority(TR_STR_LIT("[::1]x"), 0));
}

/* The request line's shape is checked as soon as its CRLF arrives: an
 * HTTP/0.9 request gets its 400 without waiting for a blank line. */
static void test_head_end_rejects_bad_request_line_early(void **state)
{
    struct tr_h1_limits lim = TR_H1_LIMITS_DEFAULT;
    static const char *const bad[] = {"GET /\r\n", "GET / HTTP/1\r\n", "GET / http/1.1\r\n",
                                      "GET / HTTP/1.1x\r\n", "GET /HTTP/1.1\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t scanned = 0;
        assert_int_equal(tr_h1_head_end(bad[i], strlen(bad[i]), &lim, 1, &scanned),
                         TR_H1_E_BAD_REQUEST);
    }
    static const char *const incomplete[] = {"GET / HTTP/1.1\r\n", "GET / HTTP/2.0\r\n",
                                             "OPTIONS * HTTP/1.0\r\nHost: a\r\n"};
    for (size_t i = 0; i < sizeof(incomplete) / sizeof(incomplete[0]); i++) {
        size_t scanned = 0;
        assert_int_equal(tr_h1_head_end(incomplete[i], strlen(incomplete[i]), &lim, 1, &scanned),
                         0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctype_table),
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_body_framing),
        cmocka_unit_test(test_versions_and_flags),
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_limits_boundaries),
        cmocka_unit_test(test_head_end_incremental),
        cmocka_unit_test(test_head_end_limits_while_incomplete),
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_util),
        cmocka_unit_test(test_head_end_rejects_bad_request_line_early),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
