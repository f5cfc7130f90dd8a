/* libFuzzer target: HTTP/1.1 request heads and chunked bodies.
 *
 * The input is what a client sends. Checked invariants: tr_h1_head_end gives
 * the same answer fed whole, byte by byte or in two pieces; a parsed message
 * has every slice inside the head and consistent framing; the chunked decoder
 * gives the same verdict, consumed count and payload for any split, and never
 * reports bytes outside its input. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/h1/h1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small limits so the fuzzer reaches them. */
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
    uint64_t hash; /* FNV-1a of the payload */
    uint64_t payload;
};

/* Decode buf[0..len) handing it over in pieces of at most step bytes. */
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
            CHECK(consumed > 0); /* MORE with bytes left must make progress */
        }
    }
    return r;
}

static void check_chunked(const char *buf, size_t len)
{
    struct body_result whole = decode_chunked(buf, len, len ? len : 1);
    struct body_result bytes = decode_chunked(buf, len, 1);
    struct body_result odd = decode_chunked(buf, len, 7);
    CHECK(whole.rc == bytes.rc && whole.rc == odd.rc);
    CHECK(whole.consumed == bytes.consumed && whole.consumed == odd.consumed);
    CHECK(whole.hash == bytes.hash && whole.hash == odd.hash);
    CHECK(whole.payload == bytes.payload);
    if (whole.rc == TR_H1_CHUNKED_DONE)
        CHECK(whole.consumed >= 5); /* at least "0\r\n\r\n" */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;

    /* Head: whole, byte by byte, and in two pieces agree. */
    size_t scanned = 0;
    int whole = tr_h1_head_end(buf, size, &lim, 1, &scanned);
    int drip = 0;
    scanned = 0;
    for (size_t n = 1; n <= size && drip == 0; n++)
        drip = tr_h1_head_end(buf, n, &lim, 1, &scanned);
    CHECK(drip == whole);
    if (size > 1) {
        scanned = 0;
        int half = tr_h1_head_end(buf, size / 2, &lim, 1, &scanned);
        if (half == 0)
            half = tr_h1_head_end(buf, size, &lim, 1, &scanned);
        CHECK(half == whole);
    }
    CHECK(whole <= 0 || (size_t)whole <= size);
    CHECK(whole <= (int)lim.max_header_bytes);

    if (whole <= 0) {
        /* No head: still give the chunked decoder the raw bytes. */
        check_chunked(buf, size);
        return 0;
    }

    struct tr_h1_header hdrs[32];
    struct tr_h1_message m;
    m.headers = hdrs;
    int rc = tr_h1_parse_request(buf, (size_t)whole, &lim, &m);
    CHECK(rc <= 0);
    CHECK(rc == 0 || tr_h1_error_status(rc) >= 400);
    if (rc != 0) {
        check_chunked(buf, size);
        return 0;
    }
    const char *hi = buf + whole;
    CHECK(m.head_len == (uint32_t)whole);
    CHECK(m.n_headers <= lim.max_headers);
    CHECK(m.host_idx < (int32_t)m.n_headers);
    CHECK(m.version_minor <= 1);
    CHECK(m.method.len > 0 && m.target.len > 0);
    check_slice(m.method, buf, hi);
    check_slice(m.target, buf, hi);
    CHECK(tr_h1_is_token(m.method));
    for (uint32_t i = 0; i < m.n_headers; i++) {
        check_slice(hdrs[i].name, buf, hi);
        check_slice(hdrs[i].value, buf, hi);
        CHECK(tr_h1_is_token(hdrs[i].name));
        CHECK(tr_h1_is_field_value(hdrs[i].value));
    }
    int cl = tr_h1_find_header(&m, "content-length", 14);
    int te = tr_h1_find_header(&m, "transfer-encoding", 17);
    CHECK(cl < 0 || te < 0);
    CHECK(m.version_minor == 1 ? m.host_idx >= 0 : 1);
    switch (m.body) {
    case TR_H1_BODY_NONE:
        CHECK(te < 0 && cl < 0);
        break;
    case TR_H1_BODY_LENGTH:
        CHECK(cl >= 0 && m.content_length <= (uint64_t)INT64_MAX);
        break;
    case TR_H1_BODY_CHUNKED:
        CHECK(te >= 0 && m.version_minor == 1);
        break;
    default:
        CHECK(0); /* requests are never until-close or tunnels */
    }
    /* Parsing is deterministic and repeated head_end calls are stable. */
    struct tr_h1_header hdrs2[32];
    struct tr_h1_message m2;
    m2.headers = hdrs2;
    CHECK(tr_h1_parse_request(buf, (size_t)whole, &lim, &m2) == 0);
    CHECK(m2.flags == m.flags && m2.body == m.body && m2.n_headers == m.n_headers);
    CHECK(tr_h1_head_end(buf, size, &lim, 1, &scanned) == whole);

    check_chunked(buf + whole, size - (size_t)whole);
    return 0;
}
