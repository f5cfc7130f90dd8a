/* Helpers for the codec/h2 tests (see h2_test_util.h). */
#include "h2_test_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

void bytes_add(struct bytes *b, const void *p, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

void bytes_free(struct bytes *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

struct rec_stream *rec_find(struct rec *r, int32_t id)
{
    for (int i = 0; i < r->n; i++)
        if (r->s[i].id == id)
            return &r->s[i];
    return NULL;
}

struct rec_stream *rec_get(struct rec *r, int32_t id)
{
    struct rec_stream *s = rec_find(r, id);
    if (s)
        return s;
    assert_true(r->n < MAX_STREAMS);
    s = &r->s[r->n++];
    memset(s, 0, sizeof *s);
    s->id = id;
    s->data_hash = FNV_INIT;
    return s;
}

static int rec_on_headers(void *owner, int32_t id, const struct tr_h2_header *h, size_t n,
                          bool is_trailers, bool end_stream)
{
    struct rec *r = owner;
    struct rec_stream *s = rec_get(r, id);
    r->headers_calls++;
    assert_false(s->closed);
    if (s->nheaders_blocks < 4) {
        char *out = s->headers[s->nheaders_blocks];
        size_t pos = 0;
        for (size_t i = 0; i < n && pos < 500; i++)
            pos += (size_t)snprintf(out + pos, 512 - pos, "%.*s: %.*s\n", (int)h[i].name.len,
                                    h[i].name.p, (int)h[i].value.len, h[i].value.p);
        s->headers_end[s->nheaders_blocks] = end_stream;
        s->headers_trailers[s->nheaders_blocks] = is_trailers;
    }
    s->nheaders_blocks++;
    return r->reject_headers ? -1 : 0;
}

static int rec_on_data(void *owner, int32_t id, const uint8_t *data, size_t len, bool end_stream)
{
    struct rec *r = owner;
    struct rec_stream *s = rec_get(r, id);
    assert_false(s->closed);
    assert_false(s->data_end);
    s->data_len += len;
    s->data_hash = fnv(s->data_hash, data, len);
    s->data_end = end_stream;
    s->data_calls++;
    if (r->consume_now)
        tr_h2_consume(r->h2, id, len);
    return 0;
}

static void rec_on_close(void *owner, int32_t id, uint32_t code)
{
    struct rec *r = owner;
    struct rec_stream *s = rec_get(r, id);
    assert_false(s->closed); /* exactly once */
    s->closed = true;
    s->close_code = code;
    r->close_calls++;
}

static void rec_on_goaway(void *owner, int32_t last, uint32_t code)
{
    struct rec *r = owner;
    r->goaway_seen = true;
    r->goaway_last = last;
    r->goaway_code = code;
}

static void rec_on_writable(void *owner, int32_t id)
{
    struct rec *r = owner;
    rec_get(r, id)->writable++;
}

const struct tr_h2_ops rec_ops = {rec_on_headers, rec_on_data, rec_on_close, rec_on_goaway,
                                  rec_on_writable};

size_t drain(struct tr_h2 *h2, struct bytes *out, size_t chunk)
{
    uint8_t buf[65536];
    size_t total = 0, n;
    if (chunk > sizeof buf)
        chunk = sizeof buf;
    while ((n = tr_h2_output(h2, buf, chunk)) > 0) {
        if (out)
            bytes_add(out, buf, n);
        total += n;
    }
    return total;
}

static int move(struct tr_h2 *from, struct tr_h2 *to, size_t chunk, size_t *moved)
{
    uint8_t buf[65536];
    size_t n;
    if (chunk > sizeof buf)
        chunk = sizeof buf;
    *moved = 0;
    while ((n = tr_h2_output(from, buf, chunk)) > 0) {
        *moved += n;
        ssize_t r = tr_h2_feed(to, buf, n);
        if (r < 0)
            return -1;
        assert_int_equal((size_t)r, n);
    }
    return 0;
}

int pair_pump(struct tr_h2 *c, struct tr_h2 *s, size_t chunk)
{
    for (int round = 0; round < 100000; round++) {
        size_t a, b;
        if (move(c, s, chunk, &a) < 0 || move(s, c, chunk, &b) < 0)
            return -1;
        if (a == 0 && b == 0)
            return round;
    }
    fail_msg("pair_pump did not settle");
    return -1;
}

void frame(struct bytes *b, uint8_t type, uint8_t flags, uint32_t stream, const void *payload,
           size_t len)
{
    uint8_t hd[9] = {(uint8_t)(len >> 16),
                     (uint8_t)(len >> 8),
                     (uint8_t)len,
                     type,
                     flags,
                     (uint8_t)(stream >> 24),
                     (uint8_t)(stream >> 16),
                     (uint8_t)(stream >> 8),
                     (uint8_t)stream};
    bytes_add(b, hd, sizeof hd);
    bytes_add(b, payload, len);
}

void client_preface(struct bytes *b, bool ack_settings)
{
    static const char magic[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    bytes_add(b, magic, sizeof magic - 1);
    frame(b, 0x4, 0, 0, NULL, 0);
    if (ack_settings)
        frame(b, 0x4, 0x1, 0, NULL, 0);
}

static size_t hpack_literal(uint8_t *out, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value), pos = 0;
    assert_true(nl < 127 && vl < 127);
    out[pos++] = 0x00; /* literal without indexing, new name */
    out[pos++] = (uint8_t)nl;
    memcpy(out + pos, name, nl);
    pos += nl;
    out[pos++] = (uint8_t)vl;
    memcpy(out + pos, value, vl);
    return pos + vl;
}

size_t hpack_request(uint8_t *out, size_t cap, const char *path)
{
    size_t pos = 0;
    assert_true(cap >= 200);
    out[pos++] = 0x82; /* :method GET */
    out[pos++] = 0x87; /* :scheme https */
    pos += hpack_literal(out + pos, ":path", path);
    pos += hpack_literal(out + pos, ":authority", "example.com");
    return pos;
}

void raw_request(struct bytes *b, uint32_t stream, bool end_stream)
{
    uint8_t blk[256];
    size_t n = hpack_request(blk, sizeof blk, "/");
    frame(b, 0x1, (uint8_t)(0x4 | (end_stream ? 0x1 : 0)), stream, blk, n);
}

int parse_frames(const uint8_t *p, size_t len, bool skip_preface, struct frame_info *out, int max)
{
    size_t pos = 0;
    int n = 0;
    if (skip_preface) {
        if (len < 24 || memcmp(p, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24) != 0)
            return -1;
        pos = 24;
    }
    while (pos < len) {
        if (len - pos < 9)
            return -1;
        uint32_t flen = (uint32_t)p[pos] << 16 | (uint32_t)p[pos + 1] << 8 | p[pos + 2];
        if (len - pos - 9 < flen || flen > 16384)
            return -1;
        if (out && n < max) {
            out[n].len = flen;
            out[n].type = p[pos + 3];
            out[n].flags = p[pos + 4];
            out[n].stream = ((uint32_t)p[pos + 5] << 24 | (uint32_t)p[pos + 6] << 16 |
                             (uint32_t)p[pos + 7] << 8 | p[pos + 8]) &
                            0x7fffffffu;
            out[n].payload = p + pos + 9;
        }
        n++;
        pos += 9 + flen;
    }
    return n;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static struct frame_info fi[200000];

int64_t find_goaway(const uint8_t *p, size_t len)
{
    int n = parse_frames(p, len, false, fi, 200000);
    assert_true(n >= 0);
    int64_t code = -1;
    for (int i = 0; i < n && i < 200000; i++)
        if (fi[i].type == 0x7 && fi[i].len >= 8)
            code = be32(fi[i].payload + 4);
    return code;
}

int64_t find_rst(const uint8_t *p, size_t len, uint32_t stream)
{
    int n = parse_frames(p, len, false, fi, 200000);
    assert_true(n >= 0);
    for (int i = 0; i < n && i < 200000; i++)
        if (fi[i].type == 0x3 && fi[i].stream == stream && fi[i].len == 4)
            return be32(fi[i].payload);
    return -1;
}

int count_frames(const uint8_t *p, size_t len, uint8_t type)
{
    int n = parse_frames(p, len, false, fi, 200000);
    assert_true(n >= 0);
    int c = 0;
    for (int i = 0; i < n && i < 200000; i++)
        c += fi[i].type == type;
    return c;
}
