/* libFuzzer target: HTTP/2 frames from a client into a tr_h2 server.
 *
 * The harness sends the client connection preface itself; the input is what
 * follows it, after one configuration byte:
 *   bits 0-5  feed piece size (0: the whole input at once)
 *   bit 6     the owner rejects every third request (nonzero from on_headers)
 *   bit 7     the owner never acknowledges DATA (slow reader)
 * The owner answers every request with headers, a body and sometimes
 * trailers, so the send side (queues, windows, data provider) runs too.
 *
 * Each request head also goes through the proxy's translation to HTTP/1.1
 * (filter/fields.h), the path an HTTP/2 request takes to an HTTP/1.1
 * upstream: the head produced must parse back with our strict HTTP/1.1
 * parser as one request with the same method, target and framing, so no
 * HTTP/2 input can smuggle a second request or a different body length.
 *
 * Checked invariants: tr_h2_feed consumes everything or fails with
 * TR_H2_E_CLOSE, and once it failed it keeps failing and the connection is
 * not alive; the output is a sequence of whole frames, and after a failure it
 * ends with a GOAWAY; open streams stay within max_concurrent_streams;
 * nothing leaks (ASan). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/h1/h1.h"
#include "codec/h2/h2.h"
#include "core/buf.h"
#include "filter/fields.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Small limits so the fuzzer reaches them. */
static const struct tr_h2_limits lim = {8, 2048, 16384, 65535, 4, 50, 8, 32, 4096};

struct owner {
    struct tr_h2 *h2;
    bool reject, slow;
    unsigned requests;
};

/* Output frame parser, carried across tr_h2_output calls. */
struct out_parser {
    uint8_t hd[9];
    size_t hd_len;
    size_t payload_left;
    uint8_t type;
    bool goaway_last; /* the last complete frame was a GOAWAY */
    uint64_t frames;
};

static const uint8_t body[3000];

static const struct tr_h2_header resp[] = {
    {TR_STR_LIT(":status"), TR_STR_LIT("200")},
    {TR_STR_LIT("content-type"), TR_STR_LIT("text/plain")},
};
static const struct tr_h2_header trailers[] = {{TR_STR_LIT("grpc-status"), TR_STR_LIT("0")}};

static struct tr_h1_header h1hdrs[TR_H1_MAX_HEADERS_CAP];

/* HTTP/2 request head -> HTTP/1.1 text -> our parser: same request. */
static void check_translation(const struct tr_h2_header *h, size_t n, bool end_stream)
{
    struct tr_fields f;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += h[i].name.len + h[i].value.len;
    CHECK(tr_fields_init(&f, (uint32_t)n + 1, (uint32_t)bytes + 1) == 0);
    for (size_t i = 0; i < n; i++)
        CHECK(tr_fields_add(&f, h[i].name, h[i].value) == 0);
    int mi = tr_fields_find(f.v, f.n, ":method"), pi = tr_fields_find(f.v, f.n, ":path"),
        ai = tr_fields_find(f.v, f.n, ":authority");
    bool chunked = !end_stream && tr_fields_find(f.v, f.n, "content-length") < 0;
    struct tr_buf *b = calloc(1, sizeof(*b) + 65536);
    CHECK(b != NULL);
    b->cap = 65536;
    struct tr_h1_limits h1lim = {65536, 65536, TR_H1_MAX_HEADERS_CAP};
    const char *why;
    /* What the proxy lets through to an HTTP/1.1 upstream (not CONNECT). */
    bool forwarded = tr_fields_check_request(h, n, &h1lim, &why) == 0 && pi >= 0;
    /* CONNECT has no :path; the proxy answers it locally. */
    if (mi >= 0 && pi >= 0 && ai >= 0 && f.v[ai].value.len > 0 &&
        tr_fields_h1_request_head(b, f.v, f.n, chunked) == 0) {
        size_t scanned = 0;
        int len = tr_h1_head_end(tr_buf_head(b), tr_buf_len(b), &h1lim, 1, &scanned);
        /* The whole text is exactly one head. */
        CHECK(len == (int)tr_buf_len(b));
        struct tr_h1_message m;
        memset(&m, 0, sizeof(m));
        m.headers = h1hdrs;
        int rc = tr_h1_parse_request(tr_buf_head(b), (size_t)len, &h1lim, &m);
        /* Our HTTP/1 parser is stricter than nghttp2 in places (a target
         * must be origin-form or '*', Host a plain authority); what
         * tr_fields_check_request lets through it must accept, and what it
         * accepts must keep method and framing. */
        CHECK(rc == 0 || !forwarded);
        if (rc == 0) {
            CHECK(m.method.len == f.v[mi].value.len &&
                  memcmp(m.method.p, f.v[mi].value.p, m.method.len) == 0);
            CHECK(m.target.len == f.v[pi].value.len &&
                  memcmp(m.target.p, f.v[pi].value.p, m.target.len) == 0);
            if (chunked)
                CHECK(m.body == TR_H1_BODY_CHUNKED);
            else
                CHECK(m.body != TR_H1_BODY_CHUNKED);
        }
    }
    free(b);
    tr_fields_free(&f);
}

static int on_headers(void *o, int32_t id, const struct tr_h2_header *h, size_t n, bool is_trailers,
                      bool end_stream)
{
    struct owner *ow = o;
    for (size_t i = 0; i < n; i++)
        CHECK(h[i].name.len > 0 && h[i].name.p != NULL);
    if (!is_trailers)
        check_translation(h, n, end_stream);
    if (is_trailers)
        return 0;
    unsigned k = ow->requests++;
    if (ow->reject && k % 3 == 2)
        return 1;
    if (tr_h2_submit_headers(ow->h2, id, resp, 2, false) != 0)
        return 0;
    ssize_t r = tr_h2_send_data(ow->h2, id, body, sizeof body, k % 2 == 0);
    CHECK(r >= 0 || r == TR_H2_E_CLOSE);
    if (r == (ssize_t)sizeof body && k % 2 == 1)
        CHECK(tr_h2_submit_trailers(ow->h2, id, trailers, 1) == 0);
    return 0;
}

static int on_data(void *o, int32_t id, const uint8_t *d, size_t len, bool end_stream)
{
    struct owner *ow = o;
    (void)end_stream;
    CHECK(len == 0 || d != NULL);
    if (!ow->slow)
        tr_h2_consume(ow->h2, id, len);
    return 0;
}

static void on_stream_close(void *o, int32_t id, uint32_t code)
{
    (void)o;
    (void)code;
    CHECK(id > 0);
}

static void on_goaway(void *o, int32_t last, uint32_t code)
{
    (void)o;
    (void)last;
    (void)code;
}

static void on_writable(void *o, int32_t id)
{
    struct owner *ow = o;
    ssize_t r = tr_h2_send_data(ow->h2, id, body, 100, false);
    CHECK(r >= 0 || r == TR_H2_E_CLOSE || r == TR_H2_E_INVALID);
}

static const struct tr_h2_ops ops = {on_headers, on_data, on_stream_close, on_goaway, on_writable};

static void parse_out(struct out_parser *p, const uint8_t *b, size_t n)
{
    while (n > 0) {
        if (p->payload_left == 0 && p->hd_len == 9)
            p->hd_len = 0;
        if (p->hd_len < 9) {
            size_t c = 9 - p->hd_len < n ? 9 - p->hd_len : n;
            memcpy(p->hd + p->hd_len, b, c);
            p->hd_len += c;
            b += c;
            n -= c;
            if (p->hd_len < 9)
                return;
            p->payload_left = (size_t)p->hd[0] << 16 | (size_t)p->hd[1] << 8 | p->hd[2];
            p->type = p->hd[3];
            CHECK(p->payload_left <= 16384);
            CHECK(p->type <= 0x9);
            if (p->type == 0x7)
                CHECK(p->payload_left >= 8);
            p->frames++;
            p->goaway_last = p->type == 0x7 && p->payload_left == 0;
            continue;
        }
        size_t c = p->payload_left < n ? p->payload_left : n;
        p->payload_left -= c;
        b += c;
        n -= c;
        if (p->payload_left == 0)
            p->goaway_last = p->type == 0x7;
    }
}

static bool out_whole(const struct out_parser *p)
{
    return p->hd_len == 0 || (p->hd_len == 9 && p->payload_left == 0);
}

static void drain(struct tr_h2 *h2, struct out_parser *p, size_t piece)
{
    uint8_t buf[4096];
    size_t n;
    int guard = 0;
    while ((n = tr_h2_output(h2, buf, piece)) > 0) {
        parse_out(p, buf, n);
        CHECK(++guard < 1000000);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t magic[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (size == 0)
        return 0;
    uint8_t cfg = data[0];
    data++;
    size--;
    size_t piece = cfg & 0x3f ? cfg & 0x3f : (size ? size : 1);
    size_t out_piece = cfg & 0x3f ? (size_t)(cfg & 0x3f) * 13 : 4096;

    struct owner ow = {0};
    ow.reject = cfg & 0x40;
    ow.slow = cfg & 0x80;
    struct tr_h2 *h2 = tr_h2_new(TR_H2_SERVER, &lim, &ops, &ow);
    if (!h2)
        return 0;
    ow.h2 = h2;
    struct out_parser op = {0};

    bool failed = tr_h2_feed(h2, magic, sizeof magic - 1) < 0;
    CHECK(!failed);
    drain(h2, &op, out_piece);
    for (size_t off = 0; off < size; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        ssize_t r = tr_h2_feed(h2, data + off, n);
        if (failed)
            CHECK(r == TR_H2_E_CLOSE);
        CHECK(r == (ssize_t)n || r == TR_H2_E_CLOSE);
        if (r < 0) {
            failed = true;
            CHECK(!tr_h2_alive(h2));
        }
        drain(h2, &op, out_piece);
        CHECK(out_whole(&op));
        struct tr_h2_stats st;
        tr_h2_get_stats(h2, &st);
        CHECK(st.open_streams <= lim.max_concurrent_streams);
        if (failed) {
            CHECK(op.goaway_last);
            CHECK(!tr_h2_want_write(h2));
            break;
        }
    }
    tr_h2_free(h2);
    return 0;
}
