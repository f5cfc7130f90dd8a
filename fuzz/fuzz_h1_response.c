/* libFuzzer target: HTTP/1.1 response heads and chunked bodies.
 *
 * The input is what an upstream sends. Each head is parsed as the answer to
 * GET, HEAD and CONNECT. Checked invariants: tr_h1_head_end agrees with
 * itself across splits; slices stay inside the head; the framing follows
 * the status and method rules; the chunked decoder is split-independent, and
 * so is the body both HTTP/1.1 upstream callers use (upstream/h1_body.h):
 * relayed verbatim it takes exactly the bytes the decoder takes, decoded it
 * yields the same payload, and its trailer section parses or is refused. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/h1/h1.h"
#include "filter/fields.h"
#include "upstream/h1_body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct tr_h1_limits lim = {512, 4096, 32};

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_slice(tr_str s, const char *lo, const char *hi)
{
    if (s.len == 0)
        return;
    CHECK(s.p >= lo && s.p + s.len <= hi);
}

struct body_result {
    int rc;
    size_t consumed;
    uint64_t hash;
    uint64_t payload;
};

static struct body_result decode_chunked(const char *buf, size_t len, size_t step)
{
    struct tr_h1_chunked c;
    struct body_result r = {TR_H1_CHUNKED_MORE, 0, 1469598103934665603ull, 0};
    tr_h1_chunked_init(&c, 256);
    size_t pos = 0;
    while (pos < len) {
        size_t end = len - pos > step ? pos + step : len;
        while (pos < end) {
            size_t consumed = 0, off = 0, dlen = 0;
            r.rc = tr_h1_chunked_feed(&c, buf + pos, end - pos, &consumed, &off, &dlen);
            CHECK(consumed <= end - pos);
            CHECK(dlen == 0 || off + dlen <= consumed);
            for (size_t i = 0; i < dlen; i++)
                r.hash = (r.hash ^ (uint8_t)buf[pos + off + i]) * 1099511628211ull;
            r.payload += dlen;
            pos += consumed;
            r.consumed += consumed;
            CHECK(c.payload_total == r.payload);
            if (r.rc != TR_H1_CHUNKED_MORE)
                return r;
            CHECK(consumed > 0);
        }
    }
    return r;
}

/* The byte path's relay: bytes arrive step at a time, the validated ones go
 * (sent at most 3 at a time, as short writes would). */
static void check_relay(const char *buf, size_t len, size_t step, const struct body_result *want)
{
    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, 256);
    size_t received = 0, sent = 0;
    int rc = 0;
    while (!b.done && rc == 0) {
        received = len - received > step ? received + step : len;
        uint32_t n = 0;
        rc = tr_h1_body_sendable(&b, buf + sent, (uint32_t)(received - sent), &n);
        CHECK(sent + n <= received);
        while (rc == 0 && n > 0) {
            uint32_t w = n < 3 ? n : 3;
            tr_h1_body_sent(&b, w);
            sent += w;
            n -= w;
            CHECK(!b.done || n == 0); /* the end is the last byte, never before */
        }
        if (received == len)
            break;
    }
    if (want->rc == TR_H1_CHUNKED_DONE)
        CHECK(rc == 0 && b.done && sent == want->consumed);
    else if (want->rc < 0)
        CHECK(rc < 0 && !b.done);
    else
        CHECK(rc == 0 && !b.done && sent == want->consumed);
}

/* The streams' decode: payload runs and the trailer section. */
static void check_decode(const char *buf, size_t len, size_t step, const struct body_result *want)
{
    static struct tr_buf_pool pool;
    if (pool.buf_size == 0)
        tr_buf_pool_init(&pool, 64, 4); /* small: trailer sections outgrow a buffer */
    struct tr_h1_body_state b;
    tr_h1_body_init(&b, TR_H1_BODY_CHUNKED, 0, 256);
    struct body_result r = {TR_H1_CHUNKED_MORE, 0, 1469598103934665603ull, 0};
    int rc = 0;
    while (r.consumed < len && !b.done && rc == 0) {
        size_t n = len - r.consumed > step ? step : len - r.consumed;
        struct tr_h1_body_run run;
        rc = tr_h1_body_decode(&b, &pool, buf + r.consumed, (uint32_t)n, &run);
        if (rc < 0)
            break;
        CHECK(run.consumed > 0 && run.consumed <= n);
        CHECK(run.data_len == 0 || run.data_off + run.data_len <= run.consumed);
        for (size_t i = 0; i < run.data_len; i++)
            r.hash = (r.hash ^ (uint8_t)buf[r.consumed + run.data_off + i]) * 1099511628211ull;
        r.payload += run.data_len;
        r.consumed += run.consumed;
    }
    CHECK(rc == 0 || rc == TR_H1_E_BAD_REQUEST);
    CHECK((rc < 0) == (want->rc < 0));
    CHECK(b.done == (want->rc == TR_H1_CHUNKED_DONE));
    CHECK(r.hash == want->hash && r.payload == want->payload);
    if (b.done) {
        CHECK(r.consumed == want->consumed);
        struct tr_fields t;
        int trc = tr_h1_body_trailers(&b, &pool, 8, &t);
        CHECK(trc == 0 || trc == -1 || trc == TR_FIELDS_FULL);
        CHECK(trc != 0 || t.n <= 8);
        tr_fields_free(&t);
    }
    tr_h1_body_release(&b, &pool);
    CHECK(pool.outstanding == 0);
}

static void check_chunked(const char *buf, size_t len)
{
    struct body_result whole = decode_chunked(buf, len, len ? len : 1);
    struct body_result bytes = decode_chunked(buf, len, 1);
    struct body_result odd = decode_chunked(buf, len, 5);
    CHECK(whole.rc == bytes.rc && whole.rc == odd.rc);
    CHECK(whole.consumed == bytes.consumed && whole.consumed == odd.consumed);
    CHECK(whole.hash == bytes.hash && whole.hash == odd.hash);
    CHECK(whole.payload == bytes.payload);
    for (size_t step = 1; step <= 7; step += 6) {
        check_relay(buf, len, step, &whole);
        check_decode(buf, len, step, &whole);
    }
    check_relay(buf, len, len ? len : 1, &whole);
    check_decode(buf, len, len ? len : 1, &whole);
}

/* Parse as the response to req_method and check it; returns the body kind
 * or -1 on a parse error. */
static int check_response(const char *buf, size_t head_len, enum tr_h1_method req_method)
{
    struct tr_h1_header hdrs[32];
    struct tr_h1_message m;
    m.headers = hdrs;
    int rc = tr_h1_parse_response(buf, head_len, &lim, req_method, &m);
    CHECK(rc == 0 || rc == TR_H1_E_BAD_RESPONSE || rc == TR_H1_E_HEADERS_TOO_LARGE);
    if (rc != 0)
        return -1;
    const char *hi = buf + head_len;
    CHECK(m.head_len == head_len);
    CHECK(m.status >= 100 && m.status <= 599);
    CHECK(m.version_minor <= 1);
    CHECK(m.n_headers <= lim.max_headers);
    CHECK(m.host_idx < (int32_t)m.n_headers);
    check_slice(m.reason, buf, hi);
    for (uint32_t i = 0; i < m.n_headers; i++) {
        check_slice(hdrs[i].name, buf, hi);
        check_slice(hdrs[i].value, buf, hi);
        CHECK(tr_h1_is_token(hdrs[i].name));
        CHECK(tr_h1_is_field_value(hdrs[i].value));
    }
    int cl = tr_h1_find_header(&m, "content-length", 14);
    int te = tr_h1_find_header(&m, "transfer-encoding", 17);
    CHECK(cl < 0 || te < 0);
    int s = m.status;
    int connect_2xx = req_method == TR_H1_M_CONNECT && s >= 200 && s < 300;
    switch (m.body) {
    case TR_H1_BODY_TUNNEL:
        CHECK(s == 101 || connect_2xx);
        break;
    case TR_H1_BODY_NONE:
        CHECK(s < 200 || s == 204 || s == 304 || req_method == TR_H1_M_HEAD);
        break;
    case TR_H1_BODY_CHUNKED:
        CHECK(te >= 0 && m.version_minor == 1 && s >= 200 && s != 204 && s != 304);
        break;
    case TR_H1_BODY_LENGTH:
        CHECK(cl >= 0 && s >= 200 && s != 204 && s != 304);
        break;
    case TR_H1_BODY_UNTIL_CLOSE:
        CHECK(cl < 0 && te < 0 && (m.flags & TR_H1_F_CONN_CLOSE));
        break;
    default:
        CHECK(0);
    }
    CHECK(!(m.flags & (TR_H1_F_EXPECT_CONTINUE | TR_H1_F_TE_TRAILERS)));
    return (int)m.body;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;

    size_t scanned = 0;
    int whole = tr_h1_head_end(buf, size, &lim, 0, &scanned);
    int drip = 0;
    scanned = 0;
    for (size_t n = 1; n <= size && drip == 0; n++)
        drip = tr_h1_head_end(buf, n, &lim, 0, &scanned);
    CHECK(drip == whole);
    CHECK(whole <= 0 || (size_t)whole <= size);
    CHECK(whole == 0 || whole > 0 || whole == TR_H1_E_BAD_RESPONSE ||
          whole == TR_H1_E_HEADERS_TOO_LARGE);

    if (whole <= 0) {
        check_chunked(buf, size);
        return 0;
    }
    int body_get = check_response(buf, (size_t)whole, TR_H1_M_GET);
    int body_head = check_response(buf, (size_t)whole, TR_H1_M_HEAD);
    int body_connect = check_response(buf, (size_t)whole, TR_H1_M_CONNECT);
    /* Validity does not depend on the method; only the framing does. */
    CHECK((body_get < 0) == (body_head < 0) && (body_get < 0) == (body_connect < 0));
    if (body_get == TR_H1_BODY_CHUNKED)
        check_chunked(buf + whole, size - (size_t)whole);
    else if (body_get < 0)
        check_chunked(buf, size);
    return 0;
}
