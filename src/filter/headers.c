#include "filter/headers.h"

#include <stdio.h>
#include <string.h>

#include "filter/route_action.h"

struct writer {
    char *p;
    size_t room;
    bool full;
    uint32_t fields; /* header fields written (for the edit limits) */
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
    w->fields++;
    put(w, name, nlen);
    PUT_LIT(w, ": ");
    put(w, val, vlen);
    PUT_LIT(w, "\r\n");
}

/* ---- header edits ---- */

bool tr_header_edit_drops(const struct tr_header_edit *e, tr_str name)
{
    if (e == NULL || ((e->drop_len_mask >> (name.len % 64)) & 1) == 0)
        return false;
    for (uint32_t i = 0; i < e->n_drop; i++) {
        if (e->drop[i].len == name.len && tr_h1_ieq(name, e->drop[i].name, name.len))
            return true;
    }
    return false;
}

static bool edit_drops_lit(const struct tr_header_edit *e, const char *lower)
{
    return tr_header_edit_drops(e, tr_str_from(lower, strlen(lower)));
}

static void put_edit(struct writer *w, const struct tr_header_edit *e)
{
    for (uint32_t i = 0; e != NULL && i < e->n_emit; i++)
        put_header(w, e->emit[i].name, e->emit[i].name_len, e->emit[i].value, e->emit[i].value_len);
}

/* Head complete in w (started at start): 0, -1 if it did not fit, or
 * TR_FILTER_OVER_LIMIT if edits made it exceed the limits. */
static int head_done(const struct writer *w, const char *start, const struct tr_header_edit *e,
                     uint32_t max_fields, uint32_t max_bytes)
{
    if (w->full)
        return -1;
    if (e != NULL && (w->fields > max_fields || (size_t)(w->p - start) > max_bytes))
        return TR_FILTER_OVER_LIMIT;
    return 0;
}

int tr_header_edit_fields(const struct tr_header_edit *e, const struct tr_h2_header *in, size_t n,
                          struct tr_h2_header *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        bool pseudo = in[i].name.len > 0 && in[i].name.p[0] == ':';
        if (!pseudo && tr_header_edit_drops(e, in[i].name))
            continue;
        if (o == cap)
            return -1;
        out[o++] = in[i];
    }
    for (uint32_t i = 0; e != NULL && i < e->n_emit; i++) {
        if (o == cap)
            return -1;
        out[o++] = (struct tr_h2_header){tr_str_from(e->emit[i].name, e->emit[i].name_len),
                                         tr_str_from(e->emit[i].value, e->emit[i].value_len)};
    }
    return (int)o;
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
    const struct tr_header_edit *ed = rw->edit;
    char *start = tr_buf_tail(out);
    struct writer w = {start, tr_buf_room(out), false, 0};
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
            if (!tr_header_edit_drops(ed, h->name))
                put_header(&w, "x-request-id", 12, h->value.p, h->value.len);
            continue;
        case TR_RH_PASS:
            if (tr_header_edit_drops(ed, h->name))
                continue;
            break;
        }
        w.fields++;
        put_str(&w, h->name);
        PUT_LIT(&w, ": ");
        put_str(&w, h->value);
        PUT_LIT(&w, "\r\n");
    }
    if (!have_host && rw->host.p != NULL)
        put_header(&w, "host", 4, rw->host.p, rw->host.len);
    /* The edits come after the listener's policy: they may drop what it adds. */
    if (rw->xff == TR_XFF_APPEND && !edit_drops_lit(ed, "x-forwarded-for")) {
        w.fields++;
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
    if (rw->xfp != NULL && !edit_drops_lit(ed, "x-forwarded-proto"))
        put_header(&w, "x-forwarded-proto", 17, rw->xfp, strlen(rw->xfp));
    if (rw->request_id != TR_REQID_OFF && rw->request_id_out[0] == '\0') {
        tr_request_id_format(rw->request_id_out, rw->rnd[0], rw->rnd[1]);
        if (!edit_drops_lit(ed, "x-request-id"))
            put_header(&w, "x-request-id", 12, rw->request_id_out, 36);
    }
    if (m->body == TR_H1_BODY_CHUNKED)
        put_header(&w, "transfer-encoding", 17, "chunked", 7);
    if (m->flags & TR_H1_F_TE_TRAILERS)
        put_header(&w, "te", 2, "trailers", 8);
    if (rw->upgrade) {
        int idx = tr_h1_find_header(m, "upgrade", 7);
        if (idx >= 0) {
            put_header(&w, "upgrade", 7, m->headers[idx].value.p, m->headers[idx].value.len);
            put_header(&w, "connection", 10, "upgrade", 7);
        }
    }
    put_edit(&w, ed);
    PUT_LIT(&w, "\r\n");
    int rc = head_done(&w, start, ed, rw->max_fields, rw->max_bytes);
    if (rc != 0)
        return rc;
    out->end = (uint32_t)(w.p - out->data);
    return 0;
}

int tr_filter_response_head(struct tr_buf *out, const char *buf, const struct tr_h1_message *m,
                            const struct tr_response_rewrite *rw)
{
    (void)buf;
    tr_buf_compact(out);
    const struct tr_header_edit *ed = rw->edit;
    char *start = tr_buf_tail(out);
    struct writer w = {start, tr_buf_room(out), false, 0};
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
        if (drop_header(m, h->name) || tr_header_edit_drops(ed, h->name) ||
            tr_field_named_in(h->name, rw->set, rw->n_set))
            continue;
        put_header(&w, h->name.p, h->name.len, h->value.p, h->value.len);
    }
    for (size_t i = 0; i < rw->n_set; i++)
        put_header(&w, rw->set[i].name.p, rw->set[i].name.len, rw->set[i].value.p,
                   rw->set[i].value.len);
    if (m->body == TR_H1_BODY_CHUNKED && !rw->dechunk)
        put_header(&w, "transfer-encoding", 17, "chunked", 7);
    if (rw->set_cookie.len > 0)
        put_header(&w, "set-cookie", 10, rw->set_cookie.p, rw->set_cookie.len);
    if (rw->tunnel) {
        int idx = tr_h1_find_header(m, "upgrade", 7);
        if (idx >= 0)
            put_header(&w, "upgrade", 7, m->headers[idx].value.p, m->headers[idx].value.len);
        put_header(&w, "connection", 10, "upgrade", 7);
    } else if (!rw->keep_alive) {
        put_header(&w, "connection", 10, "close", 5);
    } else if (rw->version10) {
        put_header(&w, "connection", 10, "keep-alive", 10);
    }
    put_edit(&w, ed);
    PUT_LIT(&w, "\r\n");
    int rc = head_done(&w, start, ed, rw->max_fields, rw->max_bytes);
    if (rc != 0)
        return rc;
    out->end = (uint32_t)(w.p - out->data);
    return 0;
}

int tr_filter_local_response(struct tr_buf *out, int status, const char *body, bool keep_alive,
                             bool head_only, const struct tr_header_edit *edit)
{
    return tr_filter_local_response_with(out, status, body, keep_alive, head_only, edit, NULL, 0);
}

int tr_filter_local_response_with(struct tr_buf *out, int status, const char *body, bool keep_alive,
                                  bool head_only, const struct tr_header_edit *edit,
                                  const struct tr_h2_header *extra, size_t n_extra)
{
    tr_buf_compact(out);
    size_t blen = body != NULL ? strlen(body) : 0;
    char line[32], len[24];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %03d ", status % 1000);
    int ln = snprintf(len, sizeof(len), "%zu", blen);
    struct writer w = {tr_buf_tail(out), tr_buf_room(out), false, 0};
    const char *reason = tr_h1_reason(status);
    put(&w, line, (size_t)n);
    put(&w, reason, strlen(reason));
    PUT_LIT(&w, "\r\n");
    /* The route may give its direct response a content type of its own. */
    if (!edit_drops_lit(edit, "content-type"))
        put_header(&w, "content-type", 12, "text/plain", 10);
    put_header(&w, "content-length", 14, len, (size_t)ln);
    if (!keep_alive)
        put_header(&w, "connection", 10, "close", 5);
    put_edit(&w, edit);
    /* The route's edits win over the proxy's own fields, as they do in the
     * header lists of HTTP/2 replies (tr_header_edit_fields). */
    for (size_t i = 0; i < n_extra; i++) {
        if (!tr_header_edit_drops(edit, extra[i].name))
            put_header(&w, extra[i].name.p, extra[i].name.len, extra[i].value.p,
                       extra[i].value.len);
    }
    PUT_LIT(&w, "\r\n");
    if (w.full)
        return -1;
    out->end = (uint32_t)(w.p - out->data);
    if (!head_only && blen > 0 && tr_buf_append(out, body, blen) != blen)
        return -1;
    return 0;
}
