/* Unit tests for codec/h2: a tr_h2 client and a tr_h2 server talking in
 * memory. Request/response round trips, trailers, 1xx, many streams, flow
 * control with a slow reader, graceful GOAWAY and API misuse. */
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

struct pair {
    struct rec cr, sr; /* client and server owners */
    struct tr_h2 *c, *s;
};

static struct pair *pair_new(const struct tr_h2_limits *cl, const struct tr_h2_limits *sl)
{
    struct pair *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->c = tr_h2_new(TR_H2_CLIENT, cl, &rec_ops, &p->cr);
    p->s = tr_h2_new(TR_H2_SERVER, sl, &rec_ops, &p->sr);
    assert_non_null(p->c);
    assert_non_null(p->s);
    p->cr.h2 = p->c;
    p->sr.h2 = p->s;
    p->cr.consume_now = p->sr.consume_now = true;
    return p;
}

static void pair_free(struct pair *p)
{
    tr_h2_free(p->c);
    tr_h2_free(p->s);
    free(p);
}

static const struct tr_h2_header get_req[] = {
    H(":method", "GET"),          H(":scheme", "https"), H(":path", "/x"),
    H(":authority", "a.example"), H("user-agent", "t"),
};
static const struct tr_h2_header post_req[] = {
    H(":method", "POST"),         H(":scheme", "https"), H(":path", "/up"),
    H(":authority", "a.example"), H("te", "trailers"),
};
static const struct tr_h2_header resp_200[] = {H(":status", "200"), H("server", "trellis")};
static const struct tr_h2_header resp_100[] = {H(":status", "100")};
static const struct tr_h2_header trl[] = {H("grpc-status", "0"), H("x-sum", "abc")};

static void fill(uint8_t *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i * 31u + seed + (i >> 8));
}

/* Sends all of data on a stream, pumping the pair whenever the window is
 * full. */
static void send_all(struct pair *p, struct tr_h2 *h2, int32_t id, const uint8_t *data, size_t len,
                     bool end, size_t chunk)
{
    size_t off = 0;
    int stalls = 0;
    for (;;) {
        ssize_t r = tr_h2_send_data(h2, id, data + off, len - off, end);
        assert_true(r >= 0);
        off += (size_t)r;
        if (off == len)
            break;
        assert_true(pair_pump(p->c, p->s, chunk) >= 0);
        assert_true(++stalls < 100000);
    }
}

/* ---- what we advertise ---- */

static uint32_t setting(const struct frame_info *f, uint16_t id)
{
    for (uint32_t off = 0; off + 6 <= f->len; off += 6) {
        const uint8_t *e = f->payload + off;
        if ((uint16_t)(e[0] << 8 | e[1]) == id)
            return (uint32_t)e[2] << 24 | (uint32_t)e[3] << 16 | (uint32_t)e[4] << 8 | e[5];
    }
    return 0xffffffffu;
}

static void test_settings_advertised(void **state)
{
    (void)state;
    struct tr_h2_limits l = {50, 16384, 32768, 4u << 20, 4, 100, 16, 500, 2048};
    struct pair *p = pair_new(&l, &l);
    assert_true(tr_h2_want_write(p->s));
    assert_true(tr_h2_want_write(p->c));
    struct bytes out = {0};
    drain(p->s, &out, 3); /* tiny pieces: no byte lost */
    assert_false(tr_h2_want_write(p->s));
    struct frame_info f[8];
    assert_int_equal(parse_frames(out.p, out.len, false, f, 8), 2);
    assert_int_equal(f[0].type, 0x4);
    assert_int_equal(setting(&f[0], NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 50);
    assert_int_equal(setting(&f[0], NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE), 32768);
    assert_int_equal(setting(&f[0], NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE), 16384);
    assert_int_equal(setting(&f[0], NGHTTP2_SETTINGS_HEADER_TABLE_SIZE), 2048);
    assert_int_equal(setting(&f[0], NGHTTP2_SETTINGS_ENABLE_PUSH), 0);
    assert_int_equal(setting(&f[0], NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES), 1);
    /* The connection window is raised to 4 MiB right away. */
    assert_int_equal(f[1].type, 0x8);
    assert_int_equal(f[1].stream, 0);
    assert_int_equal(f[1].payload[0] << 24 | f[1].payload[1] << 16 | f[1].payload[2] << 8 |
                         f[1].payload[3],
                     (4 << 20) - 65535);
    /* The client starts with the preface, then the same. */
    out.len = 0;
    drain(p->c, &out, 7);
    assert_int_equal(parse_frames(out.p, out.len, true, f, 8), 2);
    assert_int_equal(setting(&f[0], NGHTTP2_SETTINGS_ENABLE_PUSH), 0);
    assert_int_equal(setting(&f[0], NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE), 16384);
    bytes_free(&out);
    pair_free(p);
}

static void test_client_response_header_limit(void **state)
{
    /* The client side enforces its header list limit on responses too; the
     * owner learns through on_stream_close. */
    (void)state;
    struct tr_h2_limits cl = TR_H2_LIMITS_DEFAULT;
    cl.max_header_list_size = 1024;
    struct pair *p = pair_new(&cl, NULL);
    int32_t id = tr_h2_submit_request(p->c, get_req, 5, true);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    static char big[2000];
    memset(big, 'z', sizeof big);
    const struct tr_h2_header resp[] = {H(":status", "200"),
                                        {TR_STR_LIT("x-big"), {big, sizeof big}}};
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp, 2, false), 0);
    assert_int_equal(tr_h2_send_data(p->s, id, (const uint8_t *)"body", 4, false), 4);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    struct rec_stream *cs = rec_get(&p->cr, id);
    assert_int_equal(cs->nheaders_blocks, 0);
    assert_int_equal(cs->data_len, 0);
    assert_true(cs->closed);
    assert_int_equal(cs->close_code, NGHTTP2_PROTOCOL_ERROR);
    assert_true(rec_find(&p->sr, id)->closed);
    assert_int_equal(rec_find(&p->sr, id)->close_code, NGHTTP2_PROTOCOL_ERROR);
    assert_true(tr_h2_alive(p->c));
    pair_free(p);
}

/* ---- round trips ---- */

static void roundtrip(size_t chunk)
{
    struct pair *p = pair_new(NULL, NULL);
    uint8_t req_body[3000], resp_body[70000];
    fill(req_body, sizeof req_body, 1);
    fill(resp_body, sizeof resp_body, 2);

    int32_t id = tr_h2_submit_request(p->c, post_req, 5, false);
    assert_int_equal(id, 1);
    send_all(p, p->c, id, req_body, sizeof req_body, false, chunk);
    assert_int_equal(tr_h2_submit_trailers(p->c, id, trl, 2), 0);
    assert_true(pair_pump(p->c, p->s, chunk) >= 0);

    struct rec_stream *ss = rec_find(&p->sr, id);
    assert_non_null(ss);
    assert_int_equal(ss->nheaders_blocks, 2);
    assert_string_equal(ss->headers[0], ":method: POST\n:scheme: https\n:path: /up\n"
                                        ":authority: a.example\nte: trailers\n");
    assert_false(ss->headers_trailers[0]);
    assert_false(ss->headers_end[0]);
    assert_true(ss->headers_trailers[1]);
    assert_true(ss->headers_end[1]);
    assert_string_equal(ss->headers[1], "grpc-status: 0\nx-sum: abc\n");
    assert_int_equal(ss->data_len, sizeof req_body);
    assert_int_equal(ss->data_hash, fnv(FNV_INIT, req_body, sizeof req_body));
    assert_false(ss->data_end); /* the trailers ended the stream */

    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_200, 2, false), 0);
    send_all(p, p->s, id, resp_body, sizeof resp_body, false, chunk);
    assert_int_equal(tr_h2_submit_trailers(p->s, id, trl, 1), 0);
    assert_true(pair_pump(p->c, p->s, chunk) >= 0);

    struct rec_stream *cs = rec_find(&p->cr, id);
    assert_non_null(cs);
    assert_int_equal(cs->nheaders_blocks, 2);
    assert_string_equal(cs->headers[0], ":status: 200\nserver: trellis\n");
    assert_false(cs->headers_trailers[0]);
    assert_true(cs->headers_trailers[1]);
    assert_true(cs->headers_end[1]);
    assert_string_equal(cs->headers[1], "grpc-status: 0\n");
    assert_int_equal(cs->data_len, sizeof resp_body);
    assert_int_equal(cs->data_hash, fnv(FNV_INIT, resp_body, sizeof resp_body));

    /* Both sides ended: both close with NO_ERROR, exactly once. */
    assert_true(cs->closed && ss->closed);
    assert_int_equal(cs->close_code, 0);
    assert_int_equal(ss->close_code, 0);
    struct tr_h2_stats st;
    tr_h2_get_stats(p->s, &st);
    assert_int_equal(st.streams_opened, 1);
    assert_int_equal(st.open_streams, 0);
    tr_h2_get_stats(p->c, &st);
    assert_int_equal(st.open_streams, 0);
    assert_true(tr_h2_alive(p->c) && tr_h2_alive(p->s));
    pair_free(p);
}

static void test_roundtrip_trailers(void **state)
{
    (void)state;
    static const size_t chunks[] = {1, 5, 9, 100, 16393, 65536};
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++)
        roundtrip(chunks[i]);
}

static void test_get_end_flags(void **state)
{
    (void)state;
    struct pair *p = pair_new(NULL, NULL);
    int32_t id = tr_h2_submit_request(p->c, get_req, 5, true);
    assert_true(id > 0);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    struct rec_stream *ss = rec_find(&p->sr, id);
    assert_non_null(ss);
    assert_true(ss->headers_end[0]);
    assert_false(ss->headers_trailers[0]);
    assert_int_equal(ss->data_calls, 0);
    /* Server may not send body before headers, and may not end twice. */
    assert_int_equal(tr_h2_send_data(p->s, id, (const uint8_t *)"x", 1, false), TR_H2_E_INVALID);
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_200, 2, false), 0);
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_200, 2, false), TR_H2_E_INVALID);
    assert_int_equal(tr_h2_send_data(p->s, id, (const uint8_t *)"hello", 5, true), 5);
    assert_int_equal(tr_h2_send_data(p->s, id, (const uint8_t *)"x", 1, false), TR_H2_E_INVALID);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    struct rec_stream *cs = rec_find(&p->cr, id);
    assert_non_null(cs);
    assert_false(cs->headers_end[0]);
    assert_int_equal(cs->data_len, 5);
    assert_true(cs->data_end); /* END_STREAM on the chunk itself */
    assert_int_equal(cs->data_calls, 1);
    assert_true(cs->closed);
    assert_int_equal(cs->close_code, 0);

    /* Headers-only response ends the stream on HEADERS. */
    id = tr_h2_submit_request(p->c, get_req, 5, true);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_200, 1, true), 0);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    cs = rec_find(&p->cr, id);
    assert_true(cs->headers_end[0]);
    assert_int_equal(cs->data_calls, 0);
    assert_true(cs->closed);
    pair_free(p);
}

/* Owner pointers per stream: settable as soon as the id exists (also for a
 * client request not yet sent), found without a search, gone after close. */
static void test_stream_user_pointer(void **state)
{
    (void)state;
    struct pair *p = pair_new(NULL, NULL);
    int mark_c = 0, mark_s = 0;
    assert_null(tr_h2_stream_user(p->c, 1));
    assert_int_equal(tr_h2_set_stream_user(p->c, 1, &mark_c), TR_H2_E_INVALID);
    int32_t id = tr_h2_submit_request(p->c, get_req, 5, true);
    assert_true(id > 0);
    assert_int_equal(tr_h2_set_stream_user(p->c, id, &mark_c), 0); /* queued, not sent */
    assert_ptr_equal(tr_h2_stream_user(p->c, id), &mark_c);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_ptr_equal(tr_h2_stream_user(p->c, id), &mark_c); /* now in nghttp2's map */
    assert_null(tr_h2_stream_user(p->s, id));
    assert_int_equal(tr_h2_set_stream_user(p->s, id, &mark_s), 0);
    assert_ptr_equal(tr_h2_stream_user(p->s, id), &mark_s);
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_200, 1, true), 0);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_true(rec_find(&p->cr, id)->closed);
    assert_null(tr_h2_stream_user(p->c, id));
    assert_null(tr_h2_stream_user(p->s, id));
    pair_free(p);
}

static void test_end_stream_split_frame(void **state)
{
    /* A DATA frame with END_STREAM cut across two feeds: the bytes of the
     * first part are delivered, then the rest with end_stream. */
    (void)state;
    struct pair *p = pair_new(NULL, NULL);
    int32_t id = tr_h2_submit_request(p->c, post_req, 4, false);
    assert_int_equal(tr_h2_send_data(p->c, id, (const uint8_t *)"0123456789", 10, true), 10);
    struct bytes out = {0};
    drain(p->c, &out, 65536);
    /* Feed all but the last 4 bytes, then those. */
    assert_int_equal(tr_h2_feed(p->s, out.p, out.len - 4), (ssize_t)(out.len - 4));
    struct rec_stream *ss = rec_find(&p->sr, id);
    assert_non_null(ss);
    assert_int_equal(ss->data_len, 6);
    assert_false(ss->data_end);
    assert_int_equal(tr_h2_feed(p->s, out.p + out.len - 4, 4), 4);
    assert_int_equal(ss->data_len, 10);
    assert_true(ss->data_end);
    bytes_free(&out);
    pair_free(p);
}

static void test_informational(void **state)
{
    (void)state;
    struct pair *p = pair_new(NULL, NULL);
    static const struct tr_h2_header expect_req[] = {
        H(":method", "PUT"),  H(":scheme", "https"),       H(":path", "/"),
        H(":authority", "a"), H("expect", "100-continue"),
    };
    int32_t id = tr_h2_submit_request(p->c, expect_req, 5, false);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_100, 1, true), TR_H2_E_INVALID);
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_100, 1, false), 0);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    struct rec_stream *cs = rec_find(&p->cr, id);
    assert_int_equal(cs->nheaders_blocks, 1);
    assert_string_equal(cs->headers[0], ":status: 100\n");
    assert_int_equal(tr_h2_send_data(p->c, id, (const uint8_t *)"body", 4, true), 4);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_200, 2, false), 0);
    assert_int_equal(tr_h2_submit_trailers(p->s, id, trl, 2), 0);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_int_equal(cs->nheaders_blocks, 3);
    assert_false(cs->headers_trailers[1]); /* the final response after a 1xx */
    assert_false(cs->headers_end[1]);
    assert_true(cs->headers_trailers[2]);
    assert_true(cs->headers_end[2]);
    assert_true(cs->closed);
    assert_int_equal(cs->close_code, 0);
    pair_free(p);
}

/* ---- many streams ---- */

static void test_100_concurrent_streams(void **state)
{
    (void)state;
    struct pair *p = pair_new(NULL, NULL);
    enum { N = 100, BODY = 5000 };
    static uint8_t body[N][BODY];
    int32_t ids[N];
    for (int i = 0; i < N; i++) {
        fill(body[i], BODY, (unsigned)i);
        ids[i] = tr_h2_submit_request(p->c, post_req, 4, false);
        assert_true(ids[i] > 0);
    }
    /* All requests are open at once before any body moves. */
    assert_true(pair_pump(p->c, p->s, 16384) >= 0);
    struct tr_h2_stats st;
    tr_h2_get_stats(p->s, &st);
    assert_int_equal(st.open_streams, N);
    for (int i = 0; i < N; i++)
        send_all(p, p->c, ids[i], body[i], BODY, true, 16384);
    assert_true(pair_pump(p->c, p->s, 16384) >= 0);
    /* Echo every body back with a response, interleaved. */
    for (int i = 0; i < N; i++)
        assert_int_equal(tr_h2_submit_headers(p->s, ids[i], resp_200, 2, false), 0);
    for (int i = 0; i < N; i++) {
        struct rec_stream *ss = rec_find(&p->sr, ids[i]);
        assert_non_null(ss);
        assert_int_equal(ss->data_len, BODY);
        assert_true(ss->data_end);
        assert_int_equal(ss->data_hash, fnv(FNV_INIT, body[i], BODY));
        send_all(p, p->s, ids[i], body[i], BODY, true, 16384);
    }
    assert_true(pair_pump(p->c, p->s, 16384) >= 0);
    for (int i = 0; i < N; i++) {
        struct rec_stream *cs = rec_find(&p->cr, ids[i]);
        assert_non_null(cs);
        assert_int_equal(cs->data_len, BODY);
        assert_int_equal(cs->data_hash, fnv(FNV_INIT, body[i], BODY));
        assert_true(cs->closed);
        assert_int_equal(cs->close_code, 0);
    }
    tr_h2_get_stats(p->s, &st);
    assert_int_equal(st.streams_opened, N);
    assert_int_equal(st.open_streams, 0);
    pair_free(p);
}

/* ---- flow control ---- */

static void test_large_body_slow_reader(void **state)
{
    (void)state;
    enum { TOTAL = 4 << 20 };
    struct pair *p = pair_new(NULL, NULL);
    p->sr.consume_now = false; /* the server forwards, and acknowledges, later */
    uint8_t *body = malloc(TOTAL);
    assert_non_null(body);
    fill(body, TOTAL, 7);

    int32_t id = tr_h2_submit_request(p->c, post_req, 4, false);
    assert_true(pair_pump(p->c, p->s, 16384) >= 0);
    size_t sent = 0, acked = 0;
    int stalls = 0;
    while (sent < TOTAL) {
        ssize_t r = tr_h2_send_data(p->c, id, body + sent, TOTAL - sent, true);
        assert_true(r >= 0);
        sent += (size_t)r;
        assert_true(pair_pump(p->c, p->s, 16384) >= 0);
        struct rec_stream *ss = rec_find(&p->sr, id);
        assert_non_null(ss);
        /* The sender never gets more than the stream window ahead of the
         * reader's acknowledgements: bounded buffering on both sides. */
        assert_true(ss->data_len - acked <= 65535);
        assert_true(sent - ss->data_len <= 65535);
        if (r == 0 || sent == TOTAL) {
            /* Stalled: the window is spent and nothing moves until the
             * reader consumes. */
            if (sent < TOTAL) {
                assert_int_equal(tr_h2_send_data(p->c, id, body + sent, TOTAL - sent, true), 0);
                assert_int_equal(ss->data_len - acked, 65535);
            }
            int before = rec_get(&p->cr, id)->writable;
            tr_h2_consume(p->s, id, (size_t)(ss->data_len - acked));
            acked = ss->data_len;
            assert_true(pair_pump(p->c, p->s, 16384) >= 0);
            if (sent < TOTAL)
                assert_true(rec_find(&p->cr, id)->writable > before); /* on_writable fired */
            stalls++;
        }
    }
    struct rec_stream *ss = rec_find(&p->sr, id);
    while (!ss->data_end) {
        tr_h2_consume(p->s, id, (size_t)(ss->data_len - acked));
        acked = ss->data_len;
        assert_true(pair_pump(p->c, p->s, 16384) >= 0);
    }
    assert_int_equal(ss->data_len, TOTAL);
    assert_int_equal(ss->data_hash, fnv(FNV_INIT, body, TOTAL));
    assert_true(stalls >= TOTAL / 65535 - 1);
    free(body);
    pair_free(p);
}

static void test_connection_window_released_on_close(void **state)
{
    /* A stream closes with bytes its owner never acknowledged: the codec
     * gives them back to the connection window, so later streams can use it. */
    (void)state;
    struct tr_h2_limits sl = TR_H2_LIMITS_DEFAULT;
    sl.connection_window_size = 65535;
    sl.initial_window_size = 65535;
    struct pair *p = pair_new(NULL, &sl);
    p->sr.consume_now = false;
    static uint8_t body[65535];
    fill(body, sizeof body, 3);
    for (int round = 0; round < 4; round++) {
        int32_t id = tr_h2_submit_request(p->c, post_req, 4, false);
        assert_true(pair_pump(p->c, p->s, 16384) >= 0);
        assert_int_equal(tr_h2_send_data(p->c, id, body, sizeof body, false), sizeof body);
        assert_true(pair_pump(p->c, p->s, 16384) >= 0);
        assert_int_equal(rec_find(&p->sr, id)->data_len, sizeof body);
        /* Connection window spent: a second stream could not send now. */
        assert_int_equal(tr_h2_reset_stream(p->c, id, NGHTTP2_CANCEL), 0);
        assert_true(pair_pump(p->c, p->s, 16384) >= 0);
        assert_true(rec_find(&p->sr, id)->closed);
        assert_int_equal(rec_find(&p->sr, id)->close_code, NGHTTP2_CANCEL);
        assert_true(rec_find(&p->cr, id)->closed);
        /* Late consume for a closed stream is a no-op, not a double credit. */
        tr_h2_consume(p->s, id, sizeof body);
    }
    pair_free(p);
}

/* ---- lifecycle and API ---- */

static void test_graceful_goaway(void **state)
{
    (void)state;
    struct pair *p = pair_new(NULL, NULL);
    int32_t id = tr_h2_submit_request(p->c, get_req, 5, true);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_int_equal(tr_h2_goaway(p->s, NGHTTP2_NO_ERROR), 0);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_true(p->cr.goaway_seen);
    assert_int_equal(p->cr.goaway_last, id);
    assert_int_equal(p->cr.goaway_code, 0);
    /* No new requests on this connection, but the open one finishes. */
    assert_int_equal(tr_h2_submit_request(p->c, get_req, 5, true), TR_H2_E_REFUSED);
    assert_true(tr_h2_alive(p->s));
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_200, 2, true), 0);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_true(rec_find(&p->cr, id)->closed);
    assert_int_equal(rec_find(&p->cr, id)->close_code, 0);
    assert_false(tr_h2_alive(p->s));
    assert_false(tr_h2_alive(p->c));
    struct tr_h2_stats st;
    tr_h2_get_stats(p->s, &st);
    assert_int_equal(st.goaways_sent, 1);
    assert_int_equal(st.last_goaway_error, 0);
    pair_free(p);
}

static void test_api_misuse(void **state)
{
    (void)state;
    struct pair *p = pair_new(NULL, NULL);
    /* Wrong role. */
    assert_int_equal(tr_h2_submit_request(p->s, get_req, 5, true), TR_H2_E_INVALID);
    assert_int_equal(tr_h2_submit_headers(p->c, 1, resp_200, 2, true), TR_H2_E_INVALID);
    /* Unknown streams. */
    assert_int_equal(tr_h2_send_data(p->c, 7, (const uint8_t *)"x", 1, false), TR_H2_E_INVALID);
    assert_int_equal(tr_h2_submit_headers(p->s, 9, resp_200, 2, true), TR_H2_E_INVALID);
    assert_int_equal(tr_h2_reset_stream(p->s, 0, 0), TR_H2_E_INVALID);
    /* Bad fields: uppercase name, CR in a value, pseudo-header after a regular one. */
    static const struct tr_h2_header upper[] = {H(":method", "GET"), H(":scheme", "https"),
                                                H(":path", "/"), H("Host", "a")};
    static const struct tr_h2_header crlf[] = {H(":method", "GET"), H(":scheme", "https"),
                                               H(":path", "/"), H("x", "a\r\nb: c")};
    static const struct tr_h2_header late[] = {H(":method", "GET"), H("x", "1"), H(":path", "/")};
    assert_int_equal(tr_h2_submit_request(p->c, upper, 4, true), TR_H2_E_INVALID);
    assert_int_equal(tr_h2_submit_request(p->c, crlf, 4, true), TR_H2_E_INVALID);
    assert_int_equal(tr_h2_submit_request(p->c, late, 3, true), TR_H2_E_INVALID);

    /* A closed stream is gone, not unknown. */
    int32_t id = tr_h2_submit_request(p->c, get_req, 5, true);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_200, 2, true), 0);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_true(rec_find(&p->sr, id)->closed);
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_200, 2, true), TR_H2_E_STREAM);
    assert_int_equal(tr_h2_reset_stream(p->c, id, 0), TR_H2_E_STREAM);
    /* Trailers carry no pseudo-headers. */
    id = tr_h2_submit_request(p->c, post_req, 4, false);
    assert_int_equal(tr_h2_submit_trailers(p->c, id, resp_200, 1), TR_H2_E_INVALID);
    assert_int_equal(tr_h2_send_data(p->c, id, NULL, 0, true), 0);
    assert_int_equal(tr_h2_submit_trailers(p->c, id, trl, 2), TR_H2_E_INVALID); /* ended */
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_true(rec_find(&p->sr, id)->data_end);
    assert_int_equal(rec_find(&p->sr, id)->data_len, 0);
    pair_free(p);
}

static void test_owner_rejects_stream(void **state)
{
    (void)state;
    struct pair *p = pair_new(NULL, NULL);
    p->sr.reject_headers = true;
    int32_t id = tr_h2_submit_request(p->c, post_req, 4, false);
    assert_int_equal(tr_h2_send_data(p->c, id, (const uint8_t *)"abc", 3, false), 3);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_true(rec_find(&p->cr, id)->closed);
    assert_int_equal(rec_find(&p->cr, id)->close_code, NGHTTP2_INTERNAL_ERROR);
    assert_true(rec_find(&p->sr, id)->closed);
    assert_int_equal(rec_find(&p->sr, id)->data_len, 0); /* refused data is not delivered */
    /* The connection carries on. */
    p->sr.reject_headers = false;
    id = tr_h2_submit_request(p->c, get_req, 5, true);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_int_equal(tr_h2_submit_headers(p->s, id, resp_200, 2, true), 0);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_int_equal(rec_find(&p->cr, id)->close_code, 0);
    assert_true(tr_h2_alive(p->s));
    pair_free(p);
}

static void test_client_refused_after_goaway(void **state)
{
    /* Requests queued behind a GOAWAY that excludes them close with
     * REFUSED_STREAM (safe to retry elsewhere). */
    (void)state;
    struct pair *p = pair_new(NULL, NULL);
    int32_t a = tr_h2_submit_request(p->c, get_req, 5, true);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    int32_t b = tr_h2_submit_request(p->c, get_req, 5, true);
    /* The server's GOAWAY arrives before b goes out. */
    assert_int_equal(tr_h2_goaway(p->s, NGHTTP2_NO_ERROR), 0);
    struct bytes out = {0};
    drain(p->s, &out, 65536);
    assert_int_equal(tr_h2_feed(p->c, out.p, out.len), (ssize_t)out.len);
    drain(p->c, NULL, 65536);
    assert_true(rec_find(&p->cr, b) && rec_find(&p->cr, b)->closed);
    assert_int_equal(rec_find(&p->cr, b)->close_code, NGHTTP2_REFUSED_STREAM);
    assert_false(rec_get(&p->cr, a)->closed);
    struct tr_h2_stats st;
    tr_h2_get_stats(p->c, &st);
    assert_int_equal(st.open_streams, 1);
    bytes_free(&out);
    pair_free(p);
}

static void test_client_reset_before_send(void **state)
{
    /* A request reset before its HEADERS went out never reaches the server;
     * the owner still gets one on_stream_close, with its own code. */
    (void)state;
    struct pair *p = pair_new(NULL, NULL);
    int32_t id = tr_h2_submit_request(p->c, post_req, 4, false);
    assert_int_equal(tr_h2_send_data(p->c, id, (const uint8_t *)"abc", 3, false), 3);
    assert_int_equal(tr_h2_reset_stream(p->c, id, NGHTTP2_CANCEL), 0);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_true(rec_get(&p->cr, id)->closed);
    assert_int_equal(rec_get(&p->cr, id)->close_code, NGHTTP2_CANCEL);
    assert_int_equal(p->sr.headers_calls, 0);
    struct tr_h2_stats st;
    tr_h2_get_stats(p->c, &st);
    assert_int_equal(st.open_streams, 0);
    /* The next request works. */
    id = tr_h2_submit_request(p->c, get_req, 5, true);
    assert_true(pair_pump(p->c, p->s, 4096) >= 0);
    assert_int_equal(p->sr.headers_calls, 1);
    pair_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_settings_advertised),
        cmocka_unit_test(test_client_response_header_limit),
        cmocka_unit_test(test_roundtrip_trailers),
        cmocka_unit_test(test_get_end_flags),
        cmocka_unit_test(test_end_stream_split_frame),
        cmocka_unit_test(test_informational),
        cmocka_unit_test(test_100_concurrent_streams),
        cmocka_unit_test(test_large_body_slow_reader),
        cmocka_unit_test(test_connection_window_released_on_close),
        cmocka_unit_test(test_graceful_goaway),
        cmocka_unit_test(test_api_misuse),
        cmocka_unit_test(test_owner_rejects_stream),
        cmocka_unit_test(test_client_refused_after_goaway),
        cmocka_unit_test(test_client_reset_before_send),
        cmocka_unit_test(test_stream_user_pointer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
