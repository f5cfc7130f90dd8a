#include "filter/headers.h"

#include <stdio.h>
#include <string.h>

#include "filter/route_action.h"

struct writer {
    char *p;
    size_t room;
    bool full;
};

static void put(struct writer *w, const char *s, size_t n)
{
    if (n == 0) /* s may be NULL (an unset slice such as target_tail) */
        return;
    if (w->full || n > w->room) {
        w->full = true;
        return;
    }
    memcpy(w->p, s, n);
    w->p += n;
    w->room -= n;
}

static void put_str(struct writer *w, tr_str s)
{
    put(w, s.p, s.len);
}

#define PUT_LIT(w, lit) put((w), (lit), sizeof(lit) - 1)

static void put_header(struct writer *w, const char *name, size_t nlen, const char *val,
                       size_t vlen)
{
    put(w, name, nlen);
    PUT_LIT(w, ": ");
    put(w, val, vlen);
    PUT_LIT(w, "\r\n");
}

/* Hop-by-hop for this message: the fixed set plus names listed in Connection. */
static bool drop_header(const struct tr_h1_message *m, tr_str name)
{
    if (tr_h1_is_hop_by_hop(name))
        return true;
    return (m->flags & TR_H1_F_HAS_CONNECTION_TOKENS) && tr_h1_connection_lists(m, name);
}

static const char hex_digits[] = "0123456789abcdef";

static char *put_hex(char *out, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--) {
        out[i] = hex_digits[v & 0xf];
        v >>= 4;
    }
    return out + digits;
}

void tr_request_id_format(char *out, uint64_t a, uint64_t b)
{
    /* version 4, variant 10xx; formatted by hand: this runs per request */
    a = (a & ~0xf000ull) | 0x4000ull;
    b = (b & ~(3ull << 62)) | (2ull << 62);
    char *p = put_hex(out, a >> 32, 8);
    *p++ = '-';
    p = put_hex(p, (a >> 16) & 0xffff, 4);
    *p++ = '-';
    p = put_hex(p, a & 0xffff, 4);
    *p++ = '-';
    p = put_hex(p, b >> 48, 4);
    *p++ = '-';
    p = put_hex(p, b & 0xffffffffffffull, 12);
    *p = '\0';
}

enum tr_rh_verdict tr_request_header_verdict(enum tr_xff_mode xff, bool set_xfp,
                                             enum tr_request_id_mode request_id, tr_str name,
                                             tr_str value, bool *rid_kept)
{
    switch (name.len) { /* most headers are decided by their length alone */
    case 4:
        return TR_STR_IEQ_LIT(name, "host") ? TR_RH_HOST : TR_RH_PASS;
    case 12:
        if (!TR_STR_IEQ_LIT(name, "x-request-id") || request_id == TR_REQID_OFF)
            return TR_RH_PASS;
        if (request_id == TR_REQID_ALWAYS || *rid_kept || value.len == 0 || value.len > 36)
            return TR_RH_DROP; /* replaced (or a duplicate, or unusable) */
        *rid_kept = true;
        return TR_RH_REQUEST_ID;
    case 15:
        return TR_STR_IEQ_LIT(name, "x-forwarded-for") && xff == TR_XFF_APPEND ? TR_RH_XFF
                                                                               : TR_RH_PASS;
    case 17:
        return TR_STR_IEQ_LIT(name, "x-forwarded-proto") && set_xfp ? TR_RH_DROP : TR_RH_PASS;
    case 18:
        /* mesh-internal (proxy/stream.c): never passed on */
        return TR_STR_IEQ_LIT(name, "trellis-orig-proto") ? TR_RH_DROP : TR_RH_PASS;
    default:
        return TR_RH_PASS;
    }
}

int tr_filter_request_head(struct tr_buf *out, const char *buf, const struct tr_h1_message *m,
                           struct tr_request_rewrite *rw)
{
    (void)buf;
    tr_buf_compact(out);
    struct writer w = {tr_buf_tail(out), tr_buf_room(out), false};
    put_str(&w, m->method);
    PUT_LIT(&w, " ");
    put_str(&w, rw->target);
    put_str(&w, rw->target_tail);
    PUT_LIT(&w, " HTTP/1.1\r\n");

    bool have_host = false, rid_kept = false;
    const struct tr_h1_header *xff_first = NULL;
    rw->request_id_out[0] = '\0';
    for (uint32_t i = 0; i < m->n_headers; i++) {
        const struct tr_h1_header *h = &m->headers[i];
        if (drop_header(m, h->name))
            continue;
        switch (tr_request_header_verdict(rw->xff, rw->xfp != NULL, rw->request_id, h->name,
                                          h->value, &rid_kept)) {
        case TR_RH_HOST:
            have_host = true;
            put_header(&w, "host", 4, rw->host.p ? rw->host.p : h->value.p,
                       rw->host.p ? rw->host.len : h->value.len);
            continue;
        case TR_RH_XFF:
            if (xff_first == NULL)
                xff_first = h; /* emitted once below, all values joined */
            continue;
        case TR_RH_DROP:
            continue;
        case TR_RH_REQUEST_ID:
            memcpy(rw->request_id_out, h->value.p, h->value.len);
            rw->request_id_out[h->value.len] = '\0';
            put_header(&w, "x-request-id", 12, h->value.p, h->value.len);
            continue;
        case TR_RH_PASS:
            break;
        }
        put_str(&w, h->name);
        PUT_LIT(&w, ": ");
        put_str(&w, h->value);
        PUT_LIT(&w, "\r\n");
    }
    if (!have_host && rw->host.p != NULL)
        put_header(&w, "host", 4, rw->host.p, rw->host.len);
    if (rw->xff == TR_XFF_APPEND) {
        PUT_LIT(&w, "x-forwarded-for: ");
        for (uint32_t i = xff_first ? (uint32_t)(xff_first - m->headers) : m->n_headers;
             i < m->n_headers; i++) {
            const struct tr_h1_header *h = &m->headers[i];
            if (!TR_STR_IEQ_LIT(h->name, "x-forwarded-for") || h->value.len == 0)
                continue;
            put_str(&w, h->value);
            PUT_LIT(&w, ", ");
        }
        put(&w, rw->peer_ip, strlen(rw->peer_ip));
        PUT_LIT(&w, "\r\n");
    }
    if (rw->xfp != NULL)
        put_header(&w, "x-forwarded-proto", 17, rw->xfp, strlen(rw->xfp));
    if (rw->request_id != TR_REQID_OFF && rw->request_id_out[0] == '\0') {
        tr_request_id_format(rw->request_id_out, rw->rnd[0], rw->rnd[1]);
        put_header(&w, "x-request-id", 12, rw->request_id_out, 36);
    }
    if (m->body == TR_H1_BODY_CHUNKED)
        PUT_LIT(&w, "transfer-encoding: chunked\r\n");
    if (m->flags & TR_H1_F_TE_TRAILERS)
        PUT_LIT(&w, "te: trailers\r\n");
    if (rw->upgrade) {
        int idx = tr_h1_find_header(m, "upgrade", 7);
        if (idx >= 0) {
            put_header(&w, "upgrade", 7, m->headers[idx].value.p, m->headers[idx].value.len);
            PUT_LIT(&w, "connection: upgrade\r\n");
        }
    }
    PUT_LIT(&w, "\r\n");
    if (w.full)
        return -1;
    out->end = (uint32_t)(w.p - out->data);
    return 0;
}

int tr_filter_response_head(struct tr_buf *out, const char *buf, const struct tr_h1_message *m,
                            const struct tr_response_rewrite *rw)
{
    (void)buf;
    tr_buf_compact(out);
    struct writer w = {tr_buf_tail(out), tr_buf_room(out), false};
    char line[13] = "HTTP/1.1 000 ";
    line[7] = rw->version10 ? '0' : '1';
    line[9] = (char)('0' + m->status / 100 % 10);
    line[10] = (char)('0' + m->status / 10 % 10);
    line[11] = (char)('0' + m->status % 10);
    put(&w, line, sizeof(line));
    put_str(&w, m->reason);
    PUT_LIT(&w, "\r\n");
    for (uint32_t i = 0; i < m->n_headers; i++) {
        const struct tr_h1_header *h = &m->headers[i];
        if (drop_header(m, h->name) || tr_field_named_in(h->name, rw->set, rw->n_set))
            continue;
        put_str(&w, h->name);
        PUT_LIT(&w, ": ");
        put_str(&w, h->value);
        PUT_LIT(&w, "\r\n");
    }
    for (size_t i = 0; i < rw->n_set; i++)
        put_header(&w, rw->set[i].name.p, rw->set[i].name.len, rw->set[i].value.p,
                   rw->set[i].value.len);
    if (m->body == TR_H1_BODY_CHUNKED && !rw->dechunk)
        PUT_LIT(&w, "transfer-encoding: chunked\r\n");
    if (rw->tunnel) {
        int idx = tr_h1_find_header(m, "upgrade", 7);
        if (idx >= 0)
            put_header(&w, "upgrade", 7, m->headers[idx].value.p, m->headers[idx].value.len);
        PUT_LIT(&w, "connection: upgrade\r\n");
    } else if (!rw->keep_alive) {
        PUT_LIT(&w, "connection: close\r\n");
    } else if (rw->version10) {
        PUT_LIT(&w, "connection: keep-alive\r\n");
    }
    PUT_LIT(&w, "\r\n");
    if (w.full)
        return -1;
    out->end = (uint32_t)(w.p - out->data);
    return 0;
}

int tr_filter_local_response(struct tr_buf *out, int status, const char *body, bool keep_alive,
                             bool head_only)
{
    return tr_filter_local_response_with(out, status, body, keep_alive, head_only, NULL, 0);
}

int tr_filter_local_response_with(struct tr_buf *out, int status, const char *body, bool keep_alive,
                                  bool head_only, const struct tr_h2_header *extra, size_t n_extra)
{
    tr_buf_compact(out);
    size_t blen = body != NULL ? strlen(body) : 0;
    int n = snprintf(tr_buf_tail(out), tr_buf_room(out),
                     "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n",
                     status, tr_h1_reason(status), blen);
    if (n < 0 || (size_t)n >= tr_buf_room(out))
        return -1;
    struct writer w = {tr_buf_tail(out) + n, tr_buf_room(out) - (size_t)n, false};
    for (size_t i = 0; i < n_extra; i++)
        put_header(&w, extra[i].name.p, extra[i].name.len, extra[i].value.p, extra[i].value.len);
    if (!keep_alive)
        PUT_LIT(&w, "connection: close\r\n");
    PUT_LIT(&w, "\r\n");
    if (w.full)
        return -1;
    out->end = (uint32_t)(w.p - out->data);
    if (!head_only && blen > 0 && tr_buf_append(out, body, blen) != blen)
        return -1;
    return 0;
}
