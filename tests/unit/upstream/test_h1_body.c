/* upstream/h1_body: one HTTP/1.1 body in transit, driven with byte buffers:
 * relayed verbatim (the byte path) and decoded (streams), every framing, the
 * message split at every byte, trailers, the end by close, limits; and the
 * framing on the way out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter/fields.h"
#include "upstream/h1_body.h"

#define MAX_TRAILER_BYTES 1024

/* A chunked message with extensions, several chunks, a trailer section, and
 * the next message's bytes after it (never to be taken). */
static const char CHUNKED[] = "5;ext=1\r\nhello\r\n"
                              "1 ; a=\"q\\\"x\"\r\n,\r\n"
                              "a\r\n the world\r\n"
                              "0\r\n"
                              "x-checksum: abc\r\n"
                              "grpc-status: 0\r\n"
                              "\r\n";
static const char CHUNKED_PAYLOAD[] = "hello, the world";
static const char NEXT[] = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";

static struct tr_buf_pool pool;

static int setup(void **state)
{
    (void)state;
    tr_buf_pool_init(&pool, 4096, 8);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(pool.outstanding, 0); /* every buffer came back */
    tr_buf_pool_destroy(&pool);
    return 0;
}

/* The message followed by the next one, as one byte array. */
static size_t with_next(char *out, const char *msg, size_t msg_len)
{
    memcpy(out, msg, msg_len);
    memcpy(out + msg_len, NEXT, sizeof(NEXT) - 1);
    return msg_len + sizeof(NEXT) - 1;
}

/* ---- framing from the head ---- */

static void test_init_done_without_body(void **state)
{
    (void)state;
    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_NONE, 0, MAX_TRAILER_BYTES);
    assert_true(b.done);
    tr_h1_body_init(&b, TR_H1_BODY_LENGTH, 0, MAX_TRAILER_BYTES);
    assert_true(b.done);
    tr_h1_body_init(&b, TR_H1_BODY_LENGTH, 7, MAX_TRAILER_BYTES);
    assert_false(b.done);
    assert_int_equal(b.remaining, 7);
    tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 99, MAX_TRAILER_BYTES);
    assert_false(b.done);
    assert_int_equal(b.remaining, 0); /* a length means nothing for chunked */
    tr_h1_body_init(&b, TR_H1_BODY_UNTIL_CLOSE, 0, MAX_TRAILER_BYTES);
    assert_false(b.done);

    /* Nothing of a done body is ever taken: the bytes are the next message's. */
    uint32_t n = 99;
    tr_h1_body_init(&b, TR_H1_BODY_NONE, 0, MAX_TRAILER_BYTES);
    assert_int_equal(tr_h1_body_sendable(&b, NEXT, sizeof(NEXT) - 1, &n), 0);
    assert_int_equal(n, 0);
    struct tr_h1_body_run r;
    assert_int_equal(tr_h1_body_decode(&b, &pool, NEXT, sizeof(NEXT) - 1, &r), 0);
    assert_int_equal(r.consumed, 0);
}

/* ---- relay (the byte path): verbatim, from the caller's buffer ---- */

/* Relay msg (followed by the next message) arriving in pieces: arrive[i] is
 * how many more bytes came before the i-th look, and the relay writes at
 * most write_max bytes at a time. Returns what was relayed. */
static size_t relay(struct tr_h1_body_state *b, const char *msg, size_t msg_len,
                    const size_t *arrive, size_t n_arrive, uint32_t write_max, char *out)
{
    char wire[512];
    size_t total = with_next(wire, msg, msg_len);
    size_t received = 0, sent = 0, out_len = 0;
    for (size_t i = 0; i < n_arrive + 1000 && !b->done; i++) {
        size_t more = i < n_arrive ? arrive[i] : 1;
        received = received + more > total ? total : received + more;
        /* The caller's buffer holds what arrived and is not sent yet. */
        uint32_t n;
        assert_int_equal(tr_h1_body_sendable(b, wire + sent, (uint32_t)(received - sent), &n), 0);
        assert_true(sent + n <= msg_len); /* never past the message */
        while (n > 0) {
            uint32_t w = n < write_max ? n : write_max;
            memcpy(out + out_len, wire + sent, w);
            out_len += w;
            sent += w;
            tr_h1_body_sent(b, w);
            n -= w;
            if (n > 0) /* a short write: the rest stays sendable */
                assert_false(b->done);
        }
    }
    assert_true(b->done);
    return out_len;
}

static void test_relay_length(void **state)
{
    (void)state;
    const char body[] = "0123456789abcdef";
    for (size_t split = 0; split <= sizeof(body) - 1; split++) {
        struct tr_h1_body_state b;
        tr_h1_body_init(&b, TR_H1_BODY_LENGTH, sizeof(body) - 1, MAX_TRAILER_BYTES);
        size_t arrive[] = {split, sizeof(body) - 1 - split};
        char out[64];
        size_t n = relay(&b, body, sizeof(body) - 1, arrive, 2, 5, out);
        assert_int_equal(n, sizeof(body) - 1);
        assert_memory_equal(out, body, n);
        assert_int_equal(b.remaining, 0);
    }
}

static void test_relay_chunked_every_split(void **state)
{
    (void)state;
    size_t len = sizeof(CHUNKED) - 1;
    for (size_t split = 0; split <= len; split++) {
        for (uint32_t write_max = 1; write_max <= 64; write_max *= 8) {
            struct tr_h1_body_state b;
            tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, MAX_TRAILER_BYTES);
            size_t arrive[] = {split, len - split};
            char out[256];
            size_t n = relay(&b, CHUNKED, len, arrive, 2, write_max, out);
            /* Exactly the message, framing and trailers included. */
            assert_int_equal(n, len);
            assert_memory_equal(out, CHUNKED, len);
        }
    }
}

static void test_relay_chunked_byte_by_byte(void **state)
{
    (void)state;
    size_t len = sizeof(CHUNKED) - 1;
    size_t arrive[sizeof(CHUNKED)];
    for (size_t i = 0; i < len; i++)
        arrive[i] = 1;
    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, MAX_TRAILER_BYTES);
    char out[256];
    size_t n = relay(&b, CHUNKED, len, arrive, len, 3, out);
    assert_int_equal(n, len);
    assert_memory_equal(out, CHUNKED, len);
}

static void test_relay_chunked_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "-1\r\nx\r\n0\r\n\r\n",           /* a sign */
        "1\r\nab\r\n0\r\n\r\n",           /* data longer than its size */
        "1\nx\r\n0\r\n\r\n",              /* bare LF */
        "0x1\r\nx\r\n0\r\n\r\n",          /* a prefix */
        "0\r\ncontent-length: 5\r\n\r\n", /* framing in trailers */
        "0\r\n bad: fold\r\n\r\n",        /* obs-fold */
        "fffffffffffffffffff\r\n",        /* too large */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tr_h1_body_state b;
        tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, MAX_TRAILER_BYTES);
        uint32_t n;
        assert_int_equal(tr_h1_body_sendable(&b, bad[i], (uint32_t)strlen(bad[i]), &n),
                         TR_H1_E_BAD_REQUEST);
        assert_false(b.done);
    }
}

static void test_relay_until_close(void **state)
{
    (void)state;
    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_UNTIL_CLOSE, 0, MAX_TRAILER_BYTES);
    uint32_t n;
    assert_int_equal(tr_h1_body_sendable(&b, "0\r\nanything", 11, &n), 0);
    assert_int_equal(n, 11); /* every byte is body: no framing to read */
    tr_h1_body_sent(&b, n);
    assert_false(b.done);
    assert_true(tr_h1_body_eof(&b)); /* the end of the connection ends it */
    assert_true(b.done);
}

static void test_eof_cuts_framed_bodies(void **state)
{
    (void)state;
    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_LENGTH, 10, MAX_TRAILER_BYTES);
    uint32_t n;
    assert_int_equal(tr_h1_body_sendable(&b, "12345", 5, &n), 0);
    tr_h1_body_sent(&b, n);
    assert_false(tr_h1_body_eof(&b)); /* 5 of 10 bytes: cut short */
    assert_false(b.done);
    tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, MAX_TRAILER_BYTES);
    assert_int_equal(tr_h1_body_sendable(&b, "5\r\nhello\r\n", 10, &n), 0);
    tr_h1_body_sent(&b, n);
    assert_false(tr_h1_body_eof(&b)); /* no last chunk */
}

/* ---- decode (streams): payload runs and trailers ---- */

/* Decode msg (followed by the next message) arriving in two pieces split at
 * split; the payload runs are appended to payload. Returns the bytes of the
 * wire consumed. */
static size_t decode_split(struct tr_h1_body_state *b, const char *msg, size_t msg_len,
                           size_t split, char *payload, size_t *payload_len)
{
    char wire[512];
    size_t total = with_next(wire, msg, msg_len);
    size_t received = split, consumed = 0;
    *payload_len = 0;
    for (int guard = 0; guard < 1000 && !b->done; guard++) {
        if (consumed == received) { /* all taken: the rest arrives */
            assert_true(received < total);
            received = total;
        }
        struct tr_h1_body_run r;
        assert_int_equal(
            tr_h1_body_decode(b, &pool, wire + consumed, (uint32_t)(received - consumed), &r), 0);
        assert_true(r.consumed > 0); /* progress on every call */
        assert_true(r.data_off + r.data_len <= r.consumed);
        memcpy(payload + *payload_len, wire + consumed + r.data_off, r.data_len);
        *payload_len += r.data_len;
        consumed += r.consumed;
    }
    assert_true(b->done);
    return consumed;
}

static void test_decode_chunked_every_split(void **state)
{
    (void)state;
    size_t len = sizeof(CHUNKED) - 1;
    for (size_t split = 1; split <= len; split++) {
        struct tr_h1_body_state b;
        tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, MAX_TRAILER_BYTES);
        char payload[256];
        size_t plen;
        size_t consumed = decode_split(&b, CHUNKED, len, split, payload, &plen);
        assert_int_equal(consumed, len); /* the next message untouched */
        assert_int_equal(plen, sizeof(CHUNKED_PAYLOAD) - 1);
        assert_memory_equal(payload, CHUNKED_PAYLOAD, plen);
        struct tr_fields t;
        assert_int_equal(tr_h1_body_trailers(&b, &pool, 10, &t), 0);
        assert_int_equal(t.n, 2);
        assert_true(TR_STR_EQ_LIT(t.v[0].name, "x-checksum"));
        assert_true(TR_STR_EQ_LIT(t.v[0].value, "abc"));
        assert_true(TR_STR_EQ_LIT(t.v[1].name, "grpc-status"));
        assert_true(TR_STR_EQ_LIT(t.v[1].value, "0"));
        tr_fields_free(&t);
        assert_null(b.trailers); /* the section's buffer went back */
    }
}

static void test_decode_chunked_without_trailers(void **state)
{
    (void)state;
    static const char msg[] = "3\r\nabc\r\n0\r\n\r\n";
    for (size_t split = 1; split <= sizeof(msg) - 1; split++) {
        struct tr_h1_body_state b;
        tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, MAX_TRAILER_BYTES);
        char payload[16];
        size_t plen;
        assert_int_equal(decode_split(&b, msg, sizeof(msg) - 1, split, payload, &plen),
                         sizeof(msg) - 1);
        assert_int_equal(plen, 3);
        assert_memory_equal(payload, "abc", 3);
        struct tr_fields t;
        assert_int_equal(tr_h1_body_trailers(&b, &pool, 10, &t), 0);
        assert_int_equal(t.n, 0);
        tr_fields_free(&t);
    }
}

static void test_decode_length_every_split(void **state)
{
    (void)state;
    static const char body[] = "0\r\n\r\nnot framing";
    for (size_t split = 1; split <= sizeof(body) - 1; split++) {
        struct tr_h1_body_state b;
        tr_h1_body_init(&b, TR_H1_BODY_LENGTH, sizeof(body) - 1, MAX_TRAILER_BYTES);
        char payload[64];
        size_t plen;
        assert_int_equal(decode_split(&b, body, sizeof(body) - 1, split, payload, &plen),
                         sizeof(body) - 1);
        assert_int_equal(plen, sizeof(body) - 1);
        assert_memory_equal(payload, body, plen);
    }
}

static void test_decode_until_close(void **state)
{
    (void)state;
    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_UNTIL_CLOSE, 0, MAX_TRAILER_BYTES);
    struct tr_h1_body_run r;
    assert_int_equal(tr_h1_body_decode(&b, &pool, "abc", 3, &r), 0);
    assert_int_equal(r.consumed, 3);
    assert_int_equal(r.data_off, 0);
    assert_int_equal(r.data_len, 3);
    assert_false(b.done);
    assert_true(tr_h1_body_eof(&b));
    assert_true(b.done);
}

static void test_decode_trailer_limits(void **state)
{
    (void)state;
    /* Bytes: a section over max_trailer_bytes is malformed for the decoder. */
    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, 16);
    static const char big[] = "0\r\nx-long-trailer-name: value\r\n\r\n";
    int rc = 0;
    size_t off = 0;
    for (int guard = 0; guard < 100 && rc == 0 && !b.done && off < sizeof(big) - 1; guard++) {
        struct tr_h1_body_run r;
        rc = tr_h1_body_decode(&b, &pool, big + off, (uint32_t)(sizeof(big) - 1 - off), &r);
        off += r.consumed;
    }
    assert_int_equal(rc, TR_H1_E_BAD_REQUEST);
    tr_h1_body_release(&b, &pool);
    assert_null(b.trailers);

    /* Fields: more than max_fields is the limit speaking, not a cut list. */
    tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, MAX_TRAILER_BYTES);
    static const char three[] = "0\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
    char payload[8];
    size_t plen;
    decode_split(&b, three, sizeof(three) - 1, sizeof(three) - 1, payload, &plen);
    struct tr_fields t;
    assert_int_equal(tr_h1_body_trailers(&b, &pool, 2, &t), TR_FIELDS_FULL);
    tr_fields_free(&t);
    assert_null(b.trailers);
}

static void test_decode_trailers_larger_than_a_buffer(void **state)
{
    (void)state;
    /* A pool of 64-byte buffers: the section moves to one that holds the
     * largest the decoder allows, never cut at a buffer's end. */
    struct tr_buf_pool small;
    tr_buf_pool_init(&small, 64, 4);
    char msg[600];
    size_t len = 0;
    len += (size_t)sprintf(msg + len, "0\r\n");
    for (int i = 0; i < 10; i++)
        len += (size_t)sprintf(msg + len, "x-t%d: %s\r\n", i, "0123456789012345678901234567");
    len += (size_t)sprintf(msg + len, "\r\n");
    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, 1000);
    size_t off = 0;
    for (int guard = 0; guard < 100 && !b.done; guard++) {
        struct tr_h1_body_run r;
        uint32_t piece = len - off < 7 ? (uint32_t)(len - off) : 7; /* slow drip */
        assert_int_equal(tr_h1_body_decode(&b, &small, msg + off, piece, &r), 0);
        off += r.consumed;
    }
    assert_true(b.done);
    assert_int_equal(off, len);
    struct tr_fields t;
    assert_int_equal(tr_h1_body_trailers(&b, &small, 20, &t), 0);
    assert_int_equal(t.n, 10);
    assert_true(TR_STR_EQ_LIT(t.v[9].name, "x-t9"));
    tr_fields_free(&t);
    assert_int_equal(small.outstanding, 0);
    tr_buf_pool_destroy(&small);
}

static void test_decode_without_pool_drops_trailers(void **state)
{
    (void)state;
    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, MAX_TRAILER_BYTES);
    size_t len = sizeof(CHUNKED) - 1, off = 0, plen = 0;
    char payload[64];
    for (int guard = 0; guard < 100 && !b.done; guard++) {
        struct tr_h1_body_run r;
        assert_int_equal(tr_h1_body_decode(&b, NULL, CHUNKED + off, (uint32_t)(len - off), &r), 0);
        memcpy(payload + plen, CHUNKED + off + r.data_off, r.data_len);
        plen += r.data_len;
        off += r.consumed;
    }
    assert_true(b.done);
    assert_null(b.trailers); /* validated, not kept: no allocation */
    assert_int_equal(plen, sizeof(CHUNKED_PAYLOAD) - 1);
    assert_memory_equal(payload, CHUNKED_PAYLOAD, plen);
}

/* ---- framing on the way out ---- */

static void test_put_verbatim(void **state)
{
    (void)state;
    struct tr_buf *out = NULL;
    assert_int_equal(tr_h1_body_put(&out, &pool, false, "hello", 5, true), 5);
    assert_non_null(out); /* taken from the pool */
    assert_int_equal(tr_buf_len(out), 5);
    assert_memory_equal(tr_buf_head(out), "hello", 5);
    /* Only what fits. */
    out->end = out->cap - 3;
    assert_int_equal(tr_h1_body_put(&out, &pool, false, "abcdef", 6, false), 3);
    tr_buf_put(&pool, out);
}

static void test_put_chunked(void **state)
{
    (void)state;
    struct tr_buf *out = NULL;
    assert_int_equal(tr_h1_body_put(&out, &pool, true, "hello", 5, false), 5);
    assert_int_equal(tr_h1_body_put(&out, &pool, true, "0123456789abcdefg", 17, true), 17);
    static const char want[] = "5\r\nhello\r\n11\r\n0123456789abcdefg\r\n0\r\n\r\n";
    assert_int_equal(tr_buf_len(out), sizeof(want) - 1);
    assert_memory_equal(tr_buf_head(out), want, sizeof(want) - 1);
    tr_buf_put(&pool, out);

    /* The end alone. */
    out = NULL;
    assert_int_equal(tr_h1_body_put(&out, &pool, true, NULL, 0, true), 0);
    assert_int_equal(tr_buf_len(out), 5);
    assert_memory_equal(tr_buf_head(out), "0\r\n\r\n", 5);
    tr_buf_put(&pool, out);
}

static void test_put_chunked_room(void **state)
{
    (void)state;
    /* Room for less than a chunk's framing: nothing taken, nothing written. */
    struct tr_buf *out = tr_buf_get(&pool);
    out->end = out->cap - 20;
    uint32_t before = tr_buf_len(out);
    assert_int_equal(tr_h1_body_put(&out, &pool, true, "abc", 3, true), 0);
    assert_int_equal(tr_buf_len(out), before);
    /* ... but an end alone is never lost for want of room: the buffer grows. */
    out->end = out->cap - 2;
    before = tr_buf_len(out);
    assert_int_equal(tr_h1_body_put(&out, &pool, true, NULL, 0, true), 0);
    assert_int_equal(tr_buf_len(out), before + 5);
    assert_memory_equal(tr_buf_tail(out) - 5, "0\r\n\r\n", 5);
    tr_buf_put(&pool, out);
    /* A chunk cut to the room, framed whole. */
    out = tr_buf_get(&pool);
    out->end = out->cap - 40;
    char data[64];
    memset(data, 'x', sizeof(data));
    assert_int_equal(tr_h1_body_put(&out, &pool, true, data, sizeof(data), true), 8);
    assert_int_equal(tr_buf_room(out), 40 - 13); /* no end: data is left */
    assert_memory_equal(tr_buf_tail(out) - 13, "8\r\nxxxxxxxx\r\n", 13);
    /* Compacted first: bytes already sent leave room. */
    out->start = out->end;
    assert_int_equal(tr_h1_body_put(&out, &pool, true, data, sizeof(data), false), 64);
    assert_int_equal(out->start, 0);
    tr_buf_put(&pool, out);
}

static void test_put_round_trip(void **state)
{
    (void)state;
    /* What put frames, the decoder reads back, trailers included. The
     * output buffer is drained into wire after each put, as a connection
     * would take it. */
    static char data[10000], wire[12000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + i % 26);
    struct tr_buf *out = NULL;
    size_t off = 0, len = 0;
    for (int guard = 0; guard < 100 && off < sizeof(data); guard++) {
        ssize_t took = tr_h1_body_put(&out, &pool, true, data + off, sizeof(data) - off, false);
        assert_true(took > 0);
        off += (size_t)took;
        memcpy(wire + len, tr_buf_head(out), tr_buf_len(out));
        len += tr_buf_len(out);
        tr_buf_consume(out, tr_buf_len(out));
    }
    assert_int_equal(off, sizeof(data));
    static const struct tr_h2_header trl[] = {
        {TR_STR_LIT("grpc-status"), TR_STR_LIT("0")},
        {TR_STR_LIT("transfer-encoding"), TR_STR_LIT("chunked")}, /* never a trailer */
    };
    assert_int_equal(tr_h1_body_put_trailers(&out, &pool, trl, 2), 0);
    memcpy(wire + len, tr_buf_head(out), tr_buf_len(out));
    len += tr_buf_len(out);
    tr_buf_put(&pool, out);

    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, MAX_TRAILER_BYTES);
    static char payload[sizeof(data)];
    size_t plen = 0, pos = 0;
    for (int guard = 0; guard < 1000 && !b.done; guard++) {
        struct tr_h1_body_run r;
        assert_int_equal(tr_h1_body_decode(&b, &pool, wire + pos, (uint32_t)(len - pos), &r), 0);
        memcpy(payload + plen, wire + pos + r.data_off, r.data_len);
        plen += r.data_len;
        pos += r.consumed;
    }
    assert_true(b.done);
    assert_int_equal(pos, len);
    assert_int_equal(plen, sizeof(data));
    assert_memory_equal(payload, data, plen);
    struct tr_fields t;
    assert_int_equal(tr_h1_body_trailers(&b, &pool, 10, &t), 0);
    assert_int_equal(t.n, 1);
    assert_true(TR_STR_EQ_LIT(t.v[0].name, "grpc-status"));
    tr_fields_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_done_without_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_chunked_every_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_chunked_byte_by_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_chunked_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_until_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eof_cuts_framed_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_chunked_every_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_chunked_without_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_length_every_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_until_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_trailer_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_trailers_larger_than_a_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_without_pool_drops_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_verbatim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_chunked_room, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_round_trip, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
