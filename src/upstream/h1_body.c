/* upstream/h1_body.c: HTTP/1.1 body framing in transit, relayed or decoded
 * (see h1_body.h). */
#include "upstream/h1_body.h"

#include <stdio.h>
#include <string.h>

#include "filter/fields.h"

void tr_h1_body_init(struct tr_h1_body_state *b, enum tr_h1_body framing, uint64_t length,
                     uint32_t max_trailer_bytes)
{
    *b = (struct tr_h1_body_state){
        .framing = (uint8_t)framing,
        .remaining = framing == TR_H1_BODY_LENGTH ? length : 0,
    };
    b->done = framing == TR_H1_BODY_NONE || (framing == TR_H1_BODY_LENGTH && length == 0);
    tr_h1_chunked_init(&b->chunked, max_trailer_bytes);
}

int tr_h1_body_sendable(struct tr_h1_body_state *b, const char *p, uint32_t len, uint32_t *n)
{
    *n = 0;
    if (b->done)
        return 0;
    switch (b->framing) {
    case TR_H1_BODY_LENGTH:
        *n = len < b->remaining ? len : (uint32_t)b->remaining;
        return 0;
    case TR_H1_BODY_CHUNKED:
        /* Validate what was not yet; stop at the message's end. */
        while (!b->checked_end && b->checked < len) {
            size_t consumed, off, dlen;
            int rc = tr_h1_chunked_feed(&b->chunked, p + b->checked, len - b->checked, &consumed,
                                        &off, &dlen);
            if (rc < 0)
                return rc;
            b->checked += (uint32_t)consumed;
            if (rc == TR_H1_CHUNKED_DONE)
                b->checked_end = true;
        }
        *n = b->checked;
        return 0;
    case TR_H1_BODY_UNTIL_CLOSE:
    case TR_H1_BODY_TUNNEL:
        *n = len;
        return 0;
    default:
        return 0;
    }
}

void tr_h1_body_sent(struct tr_h1_body_state *b, uint32_t n)
{
    switch (b->framing) {
    case TR_H1_BODY_LENGTH:
        b->remaining -= n;
        b->done = b->remaining == 0;
        break;
    case TR_H1_BODY_CHUNKED:
        b->checked -= n;
        b->done = b->checked == 0 && b->checked_end;
        break;
    default:
        break;
    }
}

/* The trailer section is bounded by the decoder (max_trailer_bytes of field
 * lines, then the final CRLF), so its buffer grows up to that, never cut. */
static int keep_trailers(struct tr_h1_body_state *b, struct tr_buf_pool *pool, const char *p,
                         uint32_t n)
{
    size_t limit = (size_t)b->chunked.max_trailer_bytes + 2;
    if (b->trailers == NULL && (b->trailers = tr_buf_get_sized(pool, 0)) == NULL)
        return TR_H1_BODY_E_NOMEM;
    if (tr_buf_room(b->trailers) < n) {
        size_t want = (size_t)tr_buf_len(b->trailers) + n;
        if (want > limit)
            return TR_H1_BODY_E_NOMEM; /* the decoder bounds it first */
        struct tr_buf *big = tr_buf_get_sized(pool, limit);
        if (big == NULL)
            return TR_H1_BODY_E_NOMEM;
        tr_buf_append(big, tr_buf_head(b->trailers), tr_buf_len(b->trailers));
        tr_buf_put(pool, b->trailers);
        b->trailers = big;
    }
    tr_buf_append(b->trailers, p, n);
    return 0;
}

int tr_h1_body_decode(struct tr_h1_body_state *b, struct tr_buf_pool *pool, const char *p,
                      uint32_t len, struct tr_h1_body_run *r)
{
    *r = (struct tr_h1_body_run){0};
    if (b->done)
        return 0;
    switch (b->framing) {
    case TR_H1_BODY_LENGTH: {
        uint32_t n = len < b->remaining ? len : (uint32_t)b->remaining;
        b->remaining -= n;
        b->done = b->remaining == 0;
        r->consumed = r->data_len = n;
        return 0;
    }
    case TR_H1_BODY_CHUNKED: {
        /* The decoder returns right after the last chunk's size line, so a
         * call consumes either trailer bytes only or none. */
        bool trailers = tr_h1_chunked_in_trailers(&b->chunked);
        size_t consumed, off, dlen;
        int rc = tr_h1_chunked_feed(&b->chunked, p, len, &consumed, &off, &dlen);
        if (rc < 0)
            return rc;
        if (trailers && consumed > 0 && pool != NULL) {
            int krc = keep_trailers(b, pool, p, (uint32_t)consumed);
            if (krc < 0)
                return krc;
        }
        r->consumed = (uint32_t)consumed;
        r->data_off = (uint32_t)off;
        r->data_len = (uint32_t)dlen;
        b->done = rc == TR_H1_CHUNKED_DONE;
        return 0;
    }
    case TR_H1_BODY_UNTIL_CLOSE:
    case TR_H1_BODY_TUNNEL:
        r->consumed = r->data_len = len;
        return 0;
    default:
        return 0;
    }
}

int tr_h1_body_trailers(struct tr_h1_body_state *b, struct tr_buf_pool *pool, uint32_t max_fields,
                        struct tr_fields *out)
{
    *out = (struct tr_fields){0};
    uint32_t len = b->trailers != NULL ? tr_buf_len(b->trailers) : 0;
    int rc = 0;
    if (len > 2) /* more than the final CRLF */
        rc = tr_fields_init(out, max_fields, len) < 0
                 ? -1
                 : tr_fields_parse_trailers(out, tr_buf_head(b->trailers), len);
    tr_h1_body_release(b, pool);
    return rc;
}

bool tr_h1_body_eof(struct tr_h1_body_state *b)
{
    if (b->framing == TR_H1_BODY_UNTIL_CLOSE || b->framing == TR_H1_BODY_TUNNEL)
        b->done = true;
    return b->done;
}

void tr_h1_body_release(struct tr_h1_body_state *b, struct tr_buf_pool *pool)
{
    if (b->trailers != NULL) {
        tr_buf_put(pool, b->trailers);
        b->trailers = NULL;
    }
}

/* Room for need more bytes in *b: taken from pool when NULL, compacted, or
 * moved to a buffer large enough. False when memory ran out. */
static bool reserve(struct tr_buf **b, struct tr_buf_pool *pool, size_t need)
{
    if (*b == NULL)
        return (*b = tr_buf_get_sized(pool, need)) != NULL;
    if (tr_buf_room(*b) >= need)
        return true;
    tr_buf_compact(*b);
    if (tr_buf_room(*b) >= need)
        return true;
    struct tr_buf *big = tr_buf_get_sized(pool, (size_t)tr_buf_len(*b) + need);
    if (big == NULL)
        return false;
    tr_buf_append(big, tr_buf_head(*b), tr_buf_len(*b));
    tr_buf_put(pool, *b);
    *b = big;
    return true;
}

/* A chunk's framing: the size line (at most 16 hex digits and CRLF) and the
 * CRLF after the data, with room to spare for the last-chunk line. */
#define CHUNK_OVERHEAD 32
static const char LAST_CHUNK[] = "0\r\n\r\n";

ssize_t tr_h1_body_put(struct tr_buf **out, struct tr_buf_pool *pool, bool chunked, const void *p,
                       size_t len, bool end)
{
    if (*out == NULL && (*out = tr_buf_get(pool)) == NULL)
        return -1;
    tr_buf_compact(*out);
    uint32_t room = tr_buf_room(*out);
    if (!chunked) {
        size_t take = len < room ? len : room;
        tr_buf_append(*out, p, take);
        return (ssize_t)take;
    }
    size_t take = 0;
    if (len > 0 && room > CHUNK_OVERHEAD) {
        take = len < room - CHUNK_OVERHEAD ? len : room - CHUNK_OVERHEAD;
        char size_line[24];
        int n = snprintf(size_line, sizeof(size_line), "%zx\r\n", take);
        tr_buf_append(*out, size_line, (size_t)n);
        tr_buf_append(*out, p, take);
        tr_buf_append(*out, "\r\n", 2);
    }
    if (take == len && end) {
        if (!reserve(out, pool, sizeof(LAST_CHUNK) - 1))
            return -1;
        tr_buf_append(*out, LAST_CHUNK, sizeof(LAST_CHUNK) - 1);
    }
    return (ssize_t)take;
}

int tr_h1_body_put_trailers(struct tr_buf **out, struct tr_buf_pool *pool,
                            const struct tr_h2_header *h, size_t n)
{
    size_t need = 16; /* the last-chunk line and the final CRLF */
    for (size_t i = 0; i < n; i++)
        need += h[i].name.len + h[i].value.len + 4;
    if (!reserve(out, pool, need))
        return -1;
    return tr_fields_h1_trailers(*out, h, n);
}
