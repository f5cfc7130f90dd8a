/* Unit tests for the codec/h1 chunked transfer coding decoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "codec/h1/h1.h"

struct run {
    int rc;             /* last result: MORE, DONE or an error */
    size_t consumed;    /* total bytes consumed */
    char payload[8192]; /* concatenated data runs */
    size_t payload_len;
    uint64_t payload_total;
};

/* Decode s, handing it to the decoder in pieces cut at the positions given
 * by split (NULL: one piece). Stops at DONE or an error. */
static void decode(const char *s, size_t n, const size_t *cuts, size_t n_cuts, uint32_t max_trailer,
                   struct run *r)
{
    struct tr_h1_chunked c;
    tr_h1_chunked_init(&c, max_trailer);
    memset(r, 0, sizeof(*r));
    size_t start = 0;
    for (size_t k = 0; k <= n_cuts; k++) {
        size_t end = k < n_cuts ? cuts[k] : n;
        /* Within a piece, loop while bytes remain (one data run per call). */
        size_t off = start;
        do {
            size_t consumed = 0, doff = 99999, dlen = 99999;
            r->rc = tr_h1_chunked_feed(&c, s + off, end - off, &consumed, &doff, &dlen);
            assert_true(consumed <= end - off);
            if (r->rc < 0) {
                r->consumed += consumed; /* bytes accepted before the bad one */
                return;
            }
            if (dlen) {
                assert_true(doff + dlen <= consumed);
                assert_true(r->payload_len + dlen <= sizeof(r->payload));
                memcpy(r->payload + r->payload_len, s + off + doff, dlen);
                r->payload_len += dlen;
            } else {
                /* No run: a call that made no progress must be at the end. */
                assert_true(consumed > 0 || off == end || r->rc == TR_H1_CHUNKED_DONE);
            }
            off += consumed;
            r->consumed += consumed;
            r->payload_total = c.payload_total;
            if (r->rc == TR_H1_CHUNKED_DONE)
                return;
        } while (off < end);
        start = end;
    }
}

static void decode_whole(const char *s, size_t n, uint32_t max_trailer, struct run *r)
{
    decode(s, n, NULL, 0, max_trailer, r);
}

#define BODY1                                                                                      \
    "5\r\nhello\r\n"                                                                               \
    "1A;name=value;q=\"a \\\" b\" ; flag\t;x = y\r\nabcdefghijklmnopqrstuvwxyz\r\n"                \
    "000010\r\n0123456789abcdef\r\n"                                                               \
    "0;last\r\nExpires: never\r\nX-Checksum: abc\xff\r\n\r\n"
#define PAYLOAD1 "helloabcdefghijklmnopqrstuvwxyz0123456789abcdef"

static void test_valid_whole(void **state)
{
    const char body[] = BODY1 "GET / HTTP/1.1\r\n";
    struct run r;
    decode_whole(body, sizeof(body) - 1, 1024, &r);
    assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
    /* DONE stops right after the final CRLF: pipelined bytes are left. */
    assert_int_equal(r.consumed, sizeof(BODY1) - 1);
    assert_int_equal(r.payload_len, sizeof(PAYLOAD1) - 1);
    assert_memory_equal(r.payload, PAYLOAD1, r.payload_len);
    assert_int_equal(r.payload_total, r.payload_len);
}

static void test_minimal_and_zeros(void **state)
{
    struct run r;
    decode_whole("0\r\n\r\n", 5, 0, &r);
    assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
    assert_int_equal(r.consumed, 5);
    assert_int_equal(r.payload_len, 0);
    decode_whole("000\r\n\r\n", 7, 0, &r);
    assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
    decode_whole("a\r\n0123456789\r\n0\r\n\r\n", 22, 0, &r);
    assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
    assert_int_equal(r.payload_len, 10);
    /* Incomplete: MORE and everything consumed. */
    decode_whole("5\r\nhel", 6, 0, &r);
    assert_int_equal(r.rc, TR_H1_CHUNKED_MORE);
    assert_int_equal(r.consumed, 6);
    assert_int_equal(r.payload_len, 3);
}

static void test_every_split(void **state)
{
    const char *s = BODY1;
    size_t n = strlen(s);
    struct run whole, r;
    decode_whole(s, n, 1024, &whole);
    assert_int_equal(whole.rc, TR_H1_CHUNKED_DONE);

    /* One byte at a time. */
    size_t cuts[sizeof(BODY1)];
    for (size_t i = 0; i + 1 < n; i++)
        cuts[i] = i + 1;
    decode(s, n, cuts, n - 1, 1024, &r);
    assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
    assert_int_equal(r.consumed, whole.consumed);
    assert_int_equal(r.payload_len, whole.payload_len);
    assert_memory_equal(r.payload, whole.payload, whole.payload_len);

    /* Every single cut position, and every pair of cuts. */
    for (size_t a = 1; a < n; a++) {
        size_t one[1] = {a};
        decode(s, n, one, 1, 1024, &r);
        assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
        assert_int_equal(r.consumed, n);
        assert_memory_equal(r.payload, whole.payload, whole.payload_len);
        for (size_t b = a + 1; b < n; b += 3) {
            size_t two[2] = {a, b};
            decode(s, n, two, 2, 1024, &r);
            assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
            assert_int_equal(r.consumed, n);
            assert_int_equal(r.payload_len, whole.payload_len);
            assert_memory_equal(r.payload, whole.payload, whole.payload_len);
        }
    }

    /* Random splits. */
    srand(12345);
    for (int iter = 0; iter < 2000; iter++) {
        size_t nc = 0, pos = 0;
        while (nc < sizeof(cuts) / sizeof(cuts[0])) {
            pos += 1 + (size_t)rand() % 9;
            if (pos >= n)
                break;
            cuts[nc++] = pos;
        }
        decode(s, n, cuts, nc, 1024, &r);
        assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
        assert_int_equal(r.consumed, n);
        assert_int_equal(r.payload_total, whole.payload_len);
        assert_memory_equal(r.payload, whole.payload, whole.payload_len);
    }
}

/* An invalid body is refused at the same byte whatever the split. */
static void expect_bad(const char *name, const char *s, size_t n, uint32_t max_trailer)
{
    struct run r;
    decode_whole(s, n, max_trailer, &r);
    if (r.rc != TR_H1_E_BAD_REQUEST)
        fail_msg("chunked vector '%s': got %d, want %d", name, r.rc, TR_H1_E_BAD_REQUEST);
    size_t cuts[8192];
    assert_true(n < sizeof(cuts) / sizeof(cuts[0]));
    for (size_t i = 0; i + 1 < n; i++)
        cuts[i] = i + 1;
    size_t whole_consumed = r.consumed;
    decode(s, n, cuts, n ? n - 1 : 0, max_trailer, &r);
    if (r.rc != TR_H1_E_BAD_REQUEST || r.consumed != whole_consumed)
        fail_msg("chunked vector '%s' (bytewise): got %d at %zu", name, r.rc, r.consumed);
}

static const struct {
    const char *name;
    const char *s;
    size_t n;
} bad[] = {
#define B(name, s)                                                                                 \
    {                                                                                              \
        name, s, sizeof(s) - 1                                                                     \
    }
    B("0x prefix", "0x10\r\n0123456789abcdef\r\n0\r\n\r\n"),
    B("negative", "-1\r\n"),
    B("plus", "+1\r\nx\r\n0\r\n\r\n"),
    B("leading space", " 1\r\nx\r\n0\r\n\r\n"),
    B("trailing space, no ext", "1 \r\nx\r\n0\r\n\r\n"),
    B("empty size line", "\r\n"),
    B("non-hex", "1g\r\n"),
    B("bare LF after size", "1\nx\r\n0\r\n\r\n"),
    B("bare CR after size", "1\rx\r\n0\r\n\r\n"),
    B("17 hex digits", "00000000000000001\r\nx\r\n0\r\n\r\n"),
    B("size over INT64_MAX", "8000000000000000\r\n"),
    B("size 2^64-1", "ffffffffffffffff\r\n"),
    B("size overflow 20 digits", "fffffffffffffffffff0\r\n"),
    B("ext empty name", "1;\r\nx\r\n0\r\n\r\n"),
    B("ext empty value", "1;a=\r\nx\r\n0\r\n\r\n"),
    B("ext bare LF", "1;a\nx\r\n0\r\n\r\n"),
    B("ext bare LF in value", "1;a=b\nx\r\n0\r\n\r\n"),
    B("ext unterminated quote", "1;a=\"x\r\nx\r\n0\r\n\r\n"),
    B("ext CTL in quote", "1;a=\"\x01\"\r\nx\r\n0\r\n\r\n"),
    B("ext bad escape", "1;a=\"\\\x01\"\r\nx\r\n0\r\n\r\n"),
    B("ext bad name char", "1;a(b\r\nx\r\n0\r\n\r\n"),
    B("ext junk after quote", "1;a=\"b\"c\r\nx\r\n0\r\n\r\n"),
    B("ext trailing space", "1;a \r\nx\r\n0\r\n\r\n"),
    B("ext NUL", "1;a\0\r\nx\r\n0\r\n\r\n"),
    B("data longer than size", "1\r\nab\r\n0\r\n\r\n"),
    B("data shorter (size 3, 2 bytes)", "3\r\nab\r\n0\r\n\r\n\r\n"),
    B("data terminator bare LF", "1\r\na\n0\r\n\r\n"),
    B("data terminator missing", "1\r\na0\r\n\r\n"),
    B("data terminator CR CR", "1\r\na\r\r0\r\n\r\n"),
    B("missing last chunk CRLF", "0\r\n\n"),
    B("last chunk bare CR", "0\r\n\r\r"),
    B("trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n"),
    B("trailer leading space", "0\r\n X: a\r\n\r\n"),
    B("trailer space before colon", "0\r\nX : a\r\n\r\n"),
    B("trailer no colon", "0\r\nX\r\n\r\n"),
    B("trailer empty name", "0\r\n: a\r\n\r\n"),
    B("trailer NUL", "0\r\nX: a\0\r\n\r\n"),
    B("trailer bare LF", "0\r\nX: a\n\r\n"),
    B("trailer bare CR", "0\r\nX: a\rb\r\n\r\n"),
    B("trailer Content-Length", "0\r\nContent-Length: 5\r\n\r\n"),
    B("trailer Transfer-Encoding", "0\r\ntransfer-ENCODING: chunked\r\n\r\n"),
    B("trailer Host", "0\r\nHOST: evil\r\n\r\n"),
#undef B
};

static void test_bad_vectors(void **state)
{
    size_t n = sizeof(bad) / sizeof(bad[0]);
    for (size_t i = 0; i < n; i++)
        expect_bad(bad[i].name, bad[i].s, bad[i].n, 1024);
    print_message("%zu malformed chunked vectors checked\n", n);
}

static void test_limits(void **state)
{
    struct run r;
    /* Trailer bytes: field lines count, the final CRLF does not. */
    const char *t = "0\r\nA: b\r\n\r\n"; /* 6 bytes of fields */
    decode_whole(t, strlen(t), 6, &r);
    assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
    expect_bad("trailer over limit", t, strlen(t), 5);
    decode_whole("0\r\n\r\n", 5, 0, &r);
    assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
    expect_bad("any trailer with limit 0", "0\r\nA:\r\n\r\n", 9, 0);

    /* Names only resembling forbidden ones are fine. */
    const char *ok = "0\r\nHosts: a\r\nContent-Lengt: b\r\nX-Content-Length: 1\r\n\r\n";
    decode_whole(ok, strlen(ok), 1024, &r);
    assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);

    /* Largest size: 16 digits up to INT64_MAX; with 16 digits it parses. */
    struct tr_h1_chunked c;
    size_t consumed, off, len;
    tr_h1_chunked_init(&c, 0);
    const char *big = "7fffffffffffffff\r\nabc";
    assert_int_equal(tr_h1_chunked_feed(&c, big, strlen(big), &consumed, &off, &len),
                     TR_H1_CHUNKED_MORE);
    assert_int_equal(consumed, strlen(big));
    assert_int_equal(off, 18);
    assert_int_equal(len, 3);
    assert_int_equal(c.remaining, INT64_MAX - 3);

    /* Size line of 4096 bytes is fine, 4097 is not. */
    static char line[5000];
    memset(line, 0, sizeof(line));
    memcpy(line, "1;a=", 4);
    memset(line + 4, 'v', 4090);
    memcpy(line + 4094, "\r\nx\r\n0\r\n\r\n", 10);
    decode_whole(line, 4104, 0, &r);
    assert_int_equal(r.rc, TR_H1_CHUNKED_DONE);
    memcpy(line + 4, "vv", 2);
    memmove(line + 5, line + 4, 4100);
    expect_bad("size line over 4096", line, 4105, 0);
}

static void test_sticky_states(void **state)
{
    struct tr_h1_chunked c;
    size_t consumed, off, len;
    tr_h1_chunked_init(&c, 0);
    /* The feed stops right after the last chunk's size line, so the caller
     * can tell the trailer section's bytes apart. */
    assert_false(tr_h1_chunked_in_trailers(&c));
    assert_int_equal(tr_h1_chunked_feed(&c, "0\r\n\r\nXY", 7, &consumed, &off, &len),
                     TR_H1_CHUNKED_MORE);
    assert_int_equal(consumed, 3);
    assert_int_equal(len, 0);
    assert_true(tr_h1_chunked_in_trailers(&c));
    assert_int_equal(tr_h1_chunked_feed(&c, "\r\nXY", 4, &consumed, &off, &len),
                     TR_H1_CHUNKED_DONE);
    assert_int_equal(consumed, 2);
    assert_false(tr_h1_chunked_in_trailers(&c));
    /* After DONE: nothing more is consumed. */
    assert_int_equal(tr_h1_chunked_feed(&c, "XY", 2, &consumed, &off, &len), TR_H1_CHUNKED_DONE);
    assert_int_equal(consumed, 0);
    assert_int_equal(len, 0);
    /* After an error: stays an error. */
    tr_h1_chunked_init(&c, 0);
    assert_int_equal(tr_h1_chunked_feed(&c, "z", 1, &consumed, &off, &len), TR_H1_E_BAD_REQUEST);
    assert_int_equal(consumed, 0);
    assert_int_equal(tr_h1_chunked_feed(&c, "0\r\n\r\n", 5, &consumed, &off, &len),
                     TR_H1_E_BAD_REQUEST);
    /* Empty input: nothing happens. */
    tr_h1_chunked_init(&c, 0);
    assert_int_equal(tr_h1_chunked_feed(&c, "", 0, &consumed, &off, &len), TR_H1_CHUNKED_MORE);
    assert_int_equal(consumed, 0);
    /* A call stops after one data run even if framing follows. */
    assert_int_equal(tr_h1_chunked_feed(&c, "2\r\nab\r\n0\r\n\r\n", 12, &consumed, &off, &len),
                     TR_H1_CHUNKED_MORE);
    assert_int_equal(consumed, 5);
    assert_int_equal(off, 3);
    assert_int_equal(len, 2);
    assert_int_equal(tr_h1_chunked_feed(&c, "\r\n0\r\n\r\n", 7, &consumed, &off, &len),
                     TR_H1_CHUNKED_MORE);
    assert_int_equal(consumed, 5);
    assert_int_equal(tr_h1_chunked_feed(&c, "\r\n", 2, &consumed, &off, &len), TR_H1_CHUNKED_DONE);
    assert_int_equal(consumed, 2);
    assert_int_equal(c.payload_total, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_whole), cmocka_unit_test(test_minimal_and_zeros),
        cmocka_unit_test(test_every_split), cmocka_unit_test(test_bad_vectors),
        cmocka_unit_test(test_limits),      cmocka_unit_test(test_sticky_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
