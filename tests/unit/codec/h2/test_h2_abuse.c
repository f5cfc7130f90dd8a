/* Unit tests for codec/h2 under attack: a tr_h2 server driven with
 * hand-built frames. Each test asserts the server's reaction on the wire
 * (GOAWAY or RST_STREAM with the expected code), what the owner saw, and
 * that buffering stayed bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <nghttp2/nghttp2.h>

#include "h2_test_util.h"

struct srv {
    struct rec r;
    struct tr_h2 *h2;
    struct bytes out; /* everything the server wrote */
};

static struct srv *srv_new(const struct tr_h2_limits *l)
{
    struct srv *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->h2 = tr_h2_new(TR_H2_SERVER, l, &rec_ops, &s->r);
    assert_non_null(s->h2);
    s->r.h2 = s->h2;
    s->r.consume_now = true;
    return s;
}

static void srv_free(struct srv *s)
{
    tr_h2_free(s->h2);
    bytes_free(&s->out);
    free(s);
}

/* Feed b and clear it; returns tr_h2_feed's result. */
static ssize_t srv_feed(struct srv *s, struct bytes *b)
{
    ssize_t r = tr_h2_feed(s->h2, b->p, b->len);
    assert_true(r == TR_H2_E_CLOSE || r == (ssize_t)b->len);
    b->len = 0;
    return r;
}

static void srv_drain(struct srv *s)
{
    drain(s->h2, &s->out, 1000);
}

/* The connection is over: TR_H2_E_CLOSE from now on, not alive, and what it
 * wrote is whole frames ending in a GOAWAY with `code`. */
static void assert_closed_with(struct srv *s, uint32_t code)
{
    srv_drain(s);
    assert_true(parse_frames(s->out.p, s->out.len, false, NULL, 0) > 0);
    assert_int_equal(find_goaway(s->out.p, s->out.len), code);
    assert_false(tr_h2_alive(s->h2));
    assert_false(tr_h2_want_write(s->h2));
    uint8_t junk[9] = {0};
    assert_int_equal(tr_h2_feed(s->h2, junk, sizeof junk), TR_H2_E_CLOSE);
    struct tr_h2_stats st;
    tr_h2_get_stats(s->h2, &st);
    assert_int_equal(st.last_goaway_error, code);
    assert_true(st.goaways_sent >= 1);
}

static void be32put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void rst(struct bytes *b, uint32_t stream, uint32_t code)
{
    uint8_t p[4];
    be32put(p, code);
    frame(b, 0x3, 0, stream, p, 4);
}

static void window_update(struct bytes *b, uint32_t stream, uint32_t inc)
{
    uint8_t p[4];
    be32put(p, inc);
    frame(b, 0x8, 0, stream, p, 4);
}

static const struct tr_h2_header resp_200[] = {H(":status", "200")};

/* ---- malformed connections ---- */

static void test_bad_preface(void **state)
{
    (void)state;
    struct srv *s = srv_new(NULL);
    struct bytes in = {0};
    bytes_add(&in, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27);
    assert_int_equal(srv_feed(s, &in), TR_H2_E_CLOSE);
    assert_closed_with(s, NGHTTP2_PROTOCOL_ERROR);
    assert_int_equal(s->r.headers_calls, 0);
    bytes_free(&in);
    srv_free(s);
}

static void test_data_on_stream_zero(void **state)
{
    (void)state;
    struct srv *s = srv_new(NULL);
    struct bytes in = {0};
    client_preface(&in, true);
    frame(&in, 0x0, 0, 0, "abcd", 4);
    assert_int_equal(srv_feed(s, &in), TR_H2_E_CLOSE);
    assert_closed_with(s, NGHTTP2_PROTOCOL_ERROR);
    bytes_free(&in);
    srv_free(s);
}

static void test_headers_on_even_stream(void **state)
{
    (void)state;
    struct srv *s = srv_new(NULL);
    struct bytes in = {0};
    client_preface(&in, true);
    raw_request(&in, 2, true);
    assert_int_equal(srv_feed(s, &in), TR_H2_E_CLOSE);
    assert_closed_with(s, NGHTTP2_PROTOCOL_ERROR);
    assert_int_equal(s->r.headers_calls, 0);
    bytes_free(&in);
    srv_free(s);
}

static void test_error_seen_before_pending_data(void **state)
{
    /* A protocol error arriving while response DATA is queued: the GOAWAY
     * still comes out of that feed's TR_H2_E_CLOSE, and the output stays
     * whole frames. */
    (void)state;
    struct srv *s = srv_new(NULL);
    struct bytes in = {0};
    client_preface(&in, true);
    raw_request(&in, 1, true);
    assert_true(srv_feed(s, &in) > 0);
    assert_int_equal(tr_h2_submit_headers(s->h2, 1, resp_200, 1, false), 0);
    static uint8_t body[60000];
    assert_int_equal(tr_h2_send_data(s->h2, 1, body, sizeof body, false), sizeof body);
    /* Hand out part of it, stopping inside a frame. */
    uint8_t buf[20000];
    assert_int_equal(tr_h2_output(s->h2, buf, sizeof buf), sizeof buf);
    bytes_add(&s->out, buf, sizeof buf);
    frame(&in, 0x0, 0, 0, "x", 1);
    assert_int_equal(srv_feed(s, &in), TR_H2_E_CLOSE);
    assert_closed_with(s, NGHTTP2_PROTOCOL_ERROR);
    bytes_free(&in);
    srv_free(s);
}

static void test_fatal_inside_partial_frame(void **state)
{
    /* A fatal error (CONTINUATION flood) while a frame is half handed out:
     * the frame is finished, then our own GOAWAY follows. */
    (void)state;
    struct srv *s = srv_new(NULL);
    struct bytes in = {0};
    client_preface(&in, true);
    raw_request(&in, 1, true);
    assert_true(srv_feed(s, &in) > 0);
    assert_int_equal(tr_h2_submit_headers(s->h2, 1, resp_200, 1, false), 0);
    static uint8_t body[30000];
    assert_int_equal(tr_h2_send_data(s->h2, 1, body, sizeof body, true), sizeof body);
    uint8_t buf[100];
    for (int i = 0; i < 30; i++) {
        size_t n = tr_h2_output(s->h2, buf, 77);
        bytes_add(&s->out, buf, n);
    }
    uint8_t blk[64];
    size_t n = hpack_request(blk, 256, "/");
    frame(&in, 0x1, 0, 3, blk, n); /* HEADERS without END_HEADERS */
    for (int i = 0; i < 50; i++)
        frame(&in, 0x9, 0, 3, NULL, 0);
    assert_int_equal(srv_feed(s, &in), TR_H2_E_CLOSE);
    assert_closed_with(s, NGHTTP2_ENHANCE_YOUR_CALM);
    bytes_free(&in);
    srv_free(s);
}

/* ---- stream limits ---- */

static void test_max_concurrent_streams(void **state)
{
    (void)state;
    struct tr_h2_limits l = TR_H2_LIMITS_DEFAULT;
    l.max_concurrent_streams = 10;

    /* Before the client acknowledged our SETTINGS: the extra stream is
     * refused, the connection lives. */
    struct srv *s = srv_new(&l);
    struct bytes in = {0};
    client_preface(&in, false);
    for (uint32_t i = 0; i < 11; i++)
        raw_request(&in, 1 + 2 * i, false);
    assert_true(srv_feed(s, &in) > 0);
    srv_drain(s);
    assert_int_equal(s->r.headers_calls, 10);
    assert_int_equal(find_rst(s->out.p, s->out.len, 21), NGHTTP2_REFUSED_STREAM);
    assert_int_equal(find_goaway(s->out.p, s->out.len), -1);
    assert_true(tr_h2_alive(s->h2));
    struct tr_h2_stats st;
    tr_h2_get_stats(s->h2, &st);
    assert_int_equal(st.open_streams, 10);
    srv_free(s);

    /* After the acknowledgement the client knowingly broke the limit. */
    s = srv_new(&l);
    client_preface(&in, true);
    for (uint32_t i = 0; i < 11; i++)
        raw_request(&in, 1 + 2 * i, false);
    assert_int_equal(srv_feed(s, &in), TR_H2_E_CLOSE);
    assert_int_equal(s->r.headers_calls, 10);
    assert_closed_with(s, NGHTTP2_PROTOCOL_ERROR);
    bytes_free(&in);
    srv_free(s);
}

static void test_rapid_reset(void **state)
{
    (void)state;
    struct srv *s = srv_new(NULL); /* 200 resets per second */
    struct bytes in = {0};
    client_preface(&in, true);
    assert_true(srv_feed(s, &in) > 0);
    int i;
    ssize_t r = 0;
    for (i = 0; i < 5000; i++) {
        raw_request(&in, 1 + 2 * (uint32_t)i, false);
        rst(&in, 1 + 2 * (uint32_t)i, NGHTTP2_CANCEL);
        r = srv_feed(s, &in);
        if (r < 0)
            break;
        srv_drain(s);
        struct tr_h2_stats st;
        tr_h2_get_stats(s->h2, &st);
        assert_true(st.open_streams <= 1); /* nothing piles up */
    }
    assert_int_equal(r, TR_H2_E_CLOSE);
    /* The budget is 200 plus what refills (200/s) while the loop runs. */
    assert_true(i >= 200 && i < 1000);
    assert_true(s->r.headers_calls <= i + 1);
    /* Every stream closed once, but the last: the connection error drops it
     * without a callback. */
    assert_int_equal(s->r.close_calls, s->r.headers_calls - 1);
    assert_closed_with(s, NGHTTP2_ENHANCE_YOUR_CALM);
    struct tr_h2_stats st;
    tr_h2_get_stats(s->h2, &st);
    assert_int_equal(st.resets_received, (uint64_t)i + 1);
    bytes_free(&in);
    srv_free(s);
}

/* Empty DATA frames carry nothing and cost a callback each: a run of them
 * ends the connection; DATA with a payload resets the count. */
static void test_empty_data_flood(void **state)
{
    (void)state;
    struct srv *s = srv_new(NULL);
    struct bytes in = {0};
    client_preface(&in, true);
    raw_request(&in, 1, false);
    assert_true(srv_feed(s, &in) > 0);
    /* Up to the limit, twice, with a payload frame between: fine. */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < TR_H2_MAX_EMPTY_DATA; i++)
            frame(&in, 0x0, 0, 1, NULL, 0);
        frame(&in, 0x0, 0, 1, (const uint8_t *)"x", 1);
        assert_true(srv_feed(s, &in) > 0);
        srv_drain(s);
    }
    assert_true(tr_h2_alive(s->h2));
    /* One over: GOAWAY ENHANCE_YOUR_CALM. */
    for (int i = 0; i <= TR_H2_MAX_EMPTY_DATA; i++)
        frame(&in, 0x0, 0, 1, NULL, 0);
    assert_int_equal(srv_feed(s, &in), TR_H2_E_CLOSE);
    assert_closed_with(s, NGHTTP2_ENHANCE_YOUR_CALM);
    bytes_free(&in);
    srv_free(s);
}

static void test_continuation_flood(void **state)
{
    (void)state;
    struct srv *s = srv_new(NULL); /* 8 CONTINUATION frames per block */
    struct bytes in = {0};
    client_preface(&in, true);
    uint8_t blk[256];
    size_t n = hpack_request(blk, sizeof blk, "/");
    frame(&in, 0x1, 0x1, 1, blk, n); /* END_STREAM, no END_HEADERS */
    assert_true(srv_feed(s, &in) > 0);
    /* Endless CONTINUATION frames, each carrying another header field. */
    uint8_t field[120];
    field[0] = 0x00;
    field[1] = 3;
    memcpy(field + 2, "x-a", 3);
    field[5] = 100;
    memset(field + 6, 'v', 100);
    ssize_t r = 0;
    int i;
    for (i = 0; i < 100000 && r >= 0; i++) {
        frame(&in, 0x9, 0, 1, field, 106);
        r = srv_feed(s, &in);
    }
    assert_int_equal(r, TR_H2_E_CLOSE);
    assert_true(i <= 9);
    assert_int_equal(s->r.headers_calls, 0);
    assert_closed_with(s, NGHTTP2_ENHANCE_YOUR_CALM);
    bytes_free(&in);
    srv_free(s);
}

static void test_continuation_header_list_bounded(void **state)
{
    /* With a generous CONTINUATION count, the header list limit still caps
     * what a block can make us hold: the stream is reset, the rest of the
     * block is decoded (keeping HPACK in sync) but not kept. */
    (void)state;
    struct tr_h2_limits l = TR_H2_LIMITS_DEFAULT;
    l.max_continuations = 1000;
    l.max_header_list_size = 8192;
    struct srv *s = srv_new(&l);
    struct bytes in = {0};
    client_preface(&in, true);
    uint8_t blk[256];
    size_t n = hpack_request(blk, sizeof blk, "/");
    frame(&in, 0x1, 0x1, 1, blk, n);
    uint8_t field[120];
    field[0] = 0x00;
    field[1] = 3;
    memcpy(field + 2, "x-a", 3);
    field[5] = 100;
    memset(field + 6, 'v', 100);
    for (int i = 0; i < 900; i++) {
        frame(&in, 0x9, 0, 1, field, 106);
        assert_true(srv_feed(s, &in) > 0);
    }
    frame(&in, 0x9, 0x4, 1, field, 106); /* END_HEADERS */
    raw_request(&in, 3, true);
    assert_true(srv_feed(s, &in) > 0);
    srv_drain(s);
    assert_int_equal(find_rst(s->out.p, s->out.len, 1), NGHTTP2_PROTOCOL_ERROR);
    assert_null(rec_find(&s->r, 1));
    assert_non_null(rec_find(&s->r, 3)); /* the next request decodes fine */
    assert_int_equal(rec_find(&s->r, 3)->nheaders_blocks, 1);
    assert_true(tr_h2_alive(s->h2));
    bytes_free(&in);
    srv_free(s);
}

/* ---- control frame floods ---- */

static void control_flood(uint8_t type)
{
    struct tr_h2_limits l = TR_H2_LIMITS_DEFAULT;
    l.max_control_frames = 100;
    struct srv *s = srv_new(&l);
    struct bytes in = {0};
    client_preface(&in, true);
    assert_true(srv_feed(s, &in) > 0);
    srv_drain(s);
    s->out.len = 0;
    /* The peer sends frames that each owe an ACK and never reads them. */
    uint8_t ping[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ssize_t r = 0;
    int i;
    for (i = 0; i < 100000 && r >= 0; i++) {
        if (type == 0x6)
            frame(&in, 0x6, 0, 0, ping, 8);
        else
            frame(&in, 0x4, 0, 0, NULL, 0);
        r = srv_feed(s, &in);
    }
    assert_int_equal(r, TR_H2_E_CLOSE);
    /* Caught after the ACK lookahead (4 KiB) plus max_control_frames. */
    assert_true(i < 4096 / 9 + 100 + 10);
    assert_closed_with(s, NGHTTP2_ENHANCE_YOUR_CALM);
    assert_true(s->out.len < 4096 + 17 * 100 + 200);
    bytes_free(&in);
    srv_free(s);
}

static void test_settings_flood(void **state)
{
    (void)state;
    control_flood(0x4);
}

static void test_ping_flood(void **state)
{
    (void)state;
    control_flood(0x6);
}

static void test_too_many_settings_entries(void **state)
{
    (void)state;
    struct srv *s = srv_new(NULL); /* 32 entries per SETTINGS */
    struct bytes in = {0};
    client_preface(&in, true);
    uint8_t iv[6 * 40];
    for (int i = 0; i < 40; i++) {
        iv[6 * i] = 0;
        iv[6 * i + 1] = (uint8_t)(0x10 + i); /* unknown ids: must be ignored, still counted */
        be32put(iv + 6 * i + 2, 1);
    }
    frame(&in, 0x4, 0, 0, iv, sizeof iv);
    assert_int_equal(srv_feed(s, &in), TR_H2_E_CLOSE);
    assert_closed_with(s, NGHTTP2_ENHANCE_YOUR_CALM);
    bytes_free(&in);
    srv_free(s);
}

static void test_window_update_abuse(void **state)
{
    (void)state;
    /* Many tiny updates cost nothing and send nothing; the one that
     * overflows the connection window is a FLOW_CONTROL_ERROR. */
    struct srv *s = srv_new(NULL);
    struct bytes in = {0};
    client_preface(&in, true);
    assert_true(srv_feed(s, &in) > 0);
    srv_drain(s);
    size_t before = s->out.len;
    for (int i = 0; i < 10000; i++)
        window_update(&in, 0, 1);
    assert_true(srv_feed(s, &in) > 0);
    srv_drain(s);
    assert_int_equal(s->out.len, before);
    window_update(&in, 0, 0x7fffffff);
    assert_int_equal(srv_feed(s, &in), TR_H2_E_CLOSE);
    assert_closed_with(s, NGHTTP2_FLOW_CONTROL_ERROR);
    srv_free(s);

    /* Stream window overflow: that stream is reset, the connection lives. */
    s = srv_new(NULL);
    client_preface(&in, true);
    raw_request(&in, 1, false);
    window_update(&in, 1, 0x7fffffff);
    assert_true(srv_feed(s, &in) > 0);
    srv_drain(s);
    assert_int_equal(find_rst(s->out.p, s->out.len, 1), NGHTTP2_FLOW_CONTROL_ERROR);
    assert_int_equal(find_goaway(s->out.p, s->out.len), -1);
    assert_true(rec_find(&s->r, 1)->closed);
    assert_int_equal(rec_find(&s->r, 1)->close_code, NGHTTP2_FLOW_CONTROL_ERROR);
    assert_true(tr_h2_alive(s->h2));
    srv_free(s);

    /* A zero increment on the connection is a PROTOCOL_ERROR. */
    s = srv_new(NULL);
    client_preface(&in, true);
    window_update(&in, 0, 0);
    assert_int_equal(srv_feed(s, &in), TR_H2_E_CLOSE);
    assert_closed_with(s, NGHTTP2_PROTOCOL_ERROR);
    bytes_free(&in);
    srv_free(s);
}

/* ---- header lists ---- */

static void test_hpack_bomb(void **state)
{
    /* One 3000-byte field inserted into the HPACK table, then referenced
     * 1000 times with one byte each: 4 KiB on the wire, 3 MB decoded. */
    (void)state;
    struct srv *s = srv_new(NULL);
    struct bytes in = {0};
    client_preface(&in, true);
    struct bytes blk = {0};
    uint8_t head[256];
    bytes_add(&blk, head, hpack_request(head, sizeof head, "/"));
    uint8_t lit[8] = {0x40, 3, 'x', '-', 'b', 0x7f, 0, 0}; /* literal with indexing */
    /* value length 3000 as a 7-bit prefix integer: 127 + 2873 */
    unsigned rest = 3000 - 127;
    lit[6] = (uint8_t)(0x80 | (rest & 0x7f));
    lit[7] = (uint8_t)(rest >> 7);
    bytes_add(&blk, lit, 8);
    static uint8_t val[3000];
    memset(val, 'a', sizeof val);
    bytes_add(&blk, val, sizeof val);
    for (int i = 0; i < 1000; i++)
        bytes_add(&blk, "\xbe", 1); /* indexed: dynamic entry 62 */
    frame(&in, 0x1, 0x5, 1, blk.p, blk.len);
    assert_true(srv_feed(s, &in) > 0);
    srv_drain(s);
    assert_int_equal(find_rst(s->out.p, s->out.len, 1), NGHTTP2_PROTOCOL_ERROR);
    assert_int_equal(s->r.headers_calls, 0);
    struct tr_h2_stats st;
    tr_h2_get_stats(s->h2, &st);
    assert_int_equal(st.open_streams, 0);
    /* HPACK state stayed in sync: the table entry works in the next block. */
    uint8_t blk2[300];
    size_t n = hpack_request(blk2, sizeof blk2, "/next");
    blk2[n++] = 0xbe;
    frame(&in, 0x1, 0x5, 3, blk2, n);
    assert_true(srv_feed(s, &in) > 0);
    struct rec_stream *r3 = rec_find(&s->r, 3);
    assert_non_null(r3);
    assert_non_null(strstr(r3->headers[0], ":path: /next\n"));
    assert_non_null(strstr(r3->headers[0], "x-b: aaaa"));
    assert_true(tr_h2_alive(s->h2));
    bytes_free(&blk);
    bytes_free(&in);
    srv_free(s);
}

static void test_header_list_size_accounting(void **state)
{
    /* name + value + 32 per field, pseudo-headers included: a list of
     * exactly the limit passes, one byte more is reset. */
    (void)state;
    struct tr_h2_limits l = TR_H2_LIMITS_DEFAULT;
    /* ":method GET"(7+3) ":scheme https"(7+5) ":path /"(5+1)
     * ":authority example.com"(10+11) = 49 bytes + 4*32 = 177 */
    l.max_header_list_size = 177 + 32 + 3 + 100;
    struct srv *s = srv_new(&l);
    struct bytes in = {0};
    client_preface(&in, true);
    for (int extra = 0; extra < 2; extra++) {
        uint8_t blk[400];
        size_t n = hpack_request(blk, sizeof blk, "/");
        blk[n++] = 0x00;
        blk[n++] = 3;
        memcpy(blk + n, "x-a", 3);
        n += 3;
        blk[n++] = (uint8_t)(100 + extra);
        memset(blk + n, 'v', (size_t)(100 + extra));
        n += (size_t)(100 + extra);
        frame(&in, 0x1, 0x5, 1 + 2 * (uint32_t)extra, blk, n);
    }
    assert_true(srv_feed(s, &in) > 0);
    srv_drain(s);
    assert_non_null(rec_find(&s->r, 1));
    assert_null(rec_find(&s->r, 3));
    assert_int_equal(find_rst(s->out.p, s->out.len, 3), NGHTTP2_PROTOCOL_ERROR);
    assert_int_equal(find_rst(s->out.p, s->out.len, 1), -1);
    bytes_free(&in);
    srv_free(s);
}

/* A regular field nghttp2 finds invalid is not dropped with the rest of the
 * request delivered (a request forwarded without a field its sender wrote):
 * the stream is reset with PROTOCOL_ERROR and the owner never sees it. The
 * connection carries on. */
static void test_invalid_field_resets_stream(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value;
    } bad[] = {
        {"x-a", "a\x01"
                "b"},       /* control byte */
        {"x-a", "a\x7f"},   /* DEL */
        {"x-a", " a"},      /* leading whitespace (RFC 9113 8.2.1) */
        {"x-a", "a\t"},     /* trailing whitespace */
        {"x y", "1"},       /* not a token */
        {"x\xc3\xa9", "1"}, /* not a token */
    };
    struct srv *s = srv_new(NULL);
    struct bytes in = {0};
    client_preface(&in, true);
    uint32_t id = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++, id += 2) {
        uint8_t blk[400];
        size_t n = hpack_request(blk, sizeof blk, "/");
        size_t nl = strlen(bad[i].name), vl = strlen(bad[i].value);
        blk[n++] = 0x00; /* literal, not indexed, new name */
        blk[n++] = (uint8_t)nl;
        memcpy(blk + n, bad[i].name, nl);
        n += nl;
        blk[n++] = (uint8_t)vl;
        memcpy(blk + n, bad[i].value, vl);
        n += vl;
        frame(&in, 0x1, 0x5, id, blk, n);
    }
    raw_request(&in, id, true); /* a good one after them */
    assert_true(srv_feed(s, &in) > 0);
    srv_drain(s);
    for (uint32_t bad_id = 1; bad_id < id; bad_id += 2) {
        assert_null(rec_find(&s->r, (int32_t)bad_id));
        assert_int_equal(find_rst(s->out.p, s->out.len, bad_id), NGHTTP2_PROTOCOL_ERROR);
    }
    assert_non_null(rec_find(&s->r, (int32_t)id));
    assert_int_equal(find_rst(s->out.p, s->out.len, id), -1);
    assert_int_equal(s->r.headers_calls, 1);
    assert_true(tr_h2_alive(s->h2));
    bytes_free(&in);
    srv_free(s);
}

/* ---- sending into a closed window ---- */

static void test_zero_window_stall(void **state)
{
    (void)state;
    struct srv *s = srv_new(NULL);
    struct bytes in = {0};
    client_preface(&in, false);
    uint8_t iv[6] = {0, 0x4, 0, 0, 0, 0}; /* INITIAL_WINDOW_SIZE = 0 */
    frame(&in, 0x4, 0, 0, iv, 6);
    frame(&in, 0x4, 0x1, 0, NULL, 0);
    raw_request(&in, 1, true);
    assert_true(srv_feed(s, &in) > 0);
    assert_int_equal(tr_h2_submit_headers(s->h2, 1, resp_200, 1, false), 0);
    static uint8_t body[1 << 20];
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(tr_h2_send_data(s->h2, 1, body, sizeof body, true), 0);
        srv_drain(s);
    }
    assert_int_equal(count_frames(s->out.p, s->out.len, 0x0), 0); /* no DATA */
    assert_int_equal(rec_get(&s->r, 1)->writable, 0);
    /* The peer opens 100 bytes: on_writable, and exactly that much goes. */
    window_update(&in, 1, 100);
    assert_true(srv_feed(s, &in) > 0);
    assert_int_equal(rec_get(&s->r, 1)->writable, 1);
    assert_int_equal(tr_h2_send_data(s->h2, 1, body, sizeof body, true), 100);
    assert_int_equal(tr_h2_send_data(s->h2, 1, body, sizeof body, true), 0);
    srv_drain(s);
    assert_int_equal(count_frames(s->out.p, s->out.len, 0x0), 1);
    bytes_free(&in);
    srv_free(s);

    /* Default windows, a peer that never sends WINDOW_UPDATE: exactly one
     * window (65535) is taken and written, then nothing more. */
    s = srv_new(NULL);
    client_preface(&in, true);
    raw_request(&in, 1, true);
    assert_true(srv_feed(s, &in) > 0);
    assert_int_equal(tr_h2_submit_headers(s->h2, 1, resp_200, 1, false), 0);
    size_t taken = 0;
    for (int i = 0; i < 100; i++) {
        ssize_t r = tr_h2_send_data(s->h2, 1, body, sizeof body, true);
        assert_true(r >= 0);
        taken += (size_t)r;
        srv_drain(s);
    }
    assert_int_equal(taken, 65535);
    struct frame_info f[64];
    int n = parse_frames(s->out.p, s->out.len, false, f, 64);
    size_t data_bytes = 0;
    for (int i = 0; i < n; i++)
        if (f[i].type == 0x0)
            data_bytes += f[i].len;
    assert_int_equal(data_bytes, 65535);
    assert_true(tr_h2_alive(s->h2));
    bytes_free(&in);
    srv_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_preface),
        cmocka_unit_test(test_data_on_stream_zero),
        cmocka_unit_test(test_headers_on_even_stream),
        cmocka_unit_test(test_error_seen_before_pending_data),
        cmocka_unit_test(test_fatal_inside_partial_frame),
        cmocka_unit_test(test_max_concurrent_streams),
        cmocka_unit_test(test_rapid_reset),
        cmocka_unit_test(test_continuation_flood),
        cmocka_unit_test(test_continuation_header_list_bounded),
        cmocka_unit_test(test_settings_flood),
        cmocka_unit_test(test_ping_flood),
        cmocka_unit_test(test_too_many_settings_entries),
        cmocka_unit_test(test_window_update_abuse),
        cmocka_unit_test(test_hpack_bomb),
        cmocka_unit_test(test_header_list_size_accounting),
        cmocka_unit_test(test_invalid_field_resets_stream),
        cmocka_unit_test(test_zero_window_stall),
        cmocka_unit_test(test_empty_data_flood),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
