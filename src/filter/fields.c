#include "filter/fields.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int tr_fields_init(struct tr_fields *f, uint32_t max_fields, uint32_t max_bytes)
{
    size_t entries = (size_t)max_fields * sizeof(*f->v);
    void *mem = malloc(entries + max_bytes);
    if (mem == NULL)
        return -1;
    f->v = mem;
    f->n = 0;
    f->cap = max_fields;
    f->bytes = (char *)mem + entries;
    f->used = 0;
    f->size = max_bytes;
    return 0;
}

void tr_fields_free(struct tr_fields *f)
{
    free(f->v);
    memset(f, 0, sizeof(*f));
}

static char *store(struct tr_fields *f, tr_str s, bool lower)
{
    if (f->size - f->used < s.len)
        return NULL;
    char *p = f->bytes + f->used;
    if (s.len > 0)
        memcpy(p, s.p, s.len);
    if (lower) {
        for (uint32_t i = 0; i < s.len; i++)
            if (p[i] >= 'A' && p[i] <= 'Z')
                p[i] = (char)(p[i] + 32);
    }
    f->used += s.len;
    return p;
}

int tr_fields_add(struct tr_fields *f, tr_str name, tr_str value)
{
    if (f->n == f->cap)
        return -1;
    uint32_t mark = f->used;
    char *n = store(f, name, true);
    char *v = n != NULL ? store(f, value, false) : NULL;
    if (v == NULL && value.len > 0) {
        f->used = mark;
        return -1;
    }
    if (n == NULL) {
        f->used = mark;
        return -1;
    }
    f->v[f->n].name = tr_str_from(n, name.len);
    f->v[f->n].value = tr_str_from(v != NULL ? v : "", value.len);
    f->n++;
    return 0;
}

char *tr_fields_add_space(struct tr_fields *f, tr_str name, size_t len)
{
    if (f->n == f->cap || len > UINT32_MAX)
        return NULL;
    uint32_t mark = f->used;
    char *n = store(f, name, true);
    if (n == NULL || f->size - f->used < len) {
        f->used = mark;
        return NULL;
    }
    char *v = f->bytes + f->used;
    f->used += (uint32_t)len;
    f->v[f->n].name = tr_str_from(n, name.len);
    f->v[f->n].value = tr_str_from(v, len);
    f->n++;
    return v;
}

int tr_fields_add_joined(struct tr_fields *f, tr_str name, tr_str head, tr_str tail)
{
    if (f->n == f->cap)
        return -1;
    uint32_t mark = f->used;
    /* store() appends, so the two parts end up adjacent: one value. */
    char *n = store(f, name, true);
    char *v = n != NULL ? f->bytes + f->used : NULL;
    if (n == NULL || store(f, head, false) == NULL || store(f, tail, false) == NULL) {
        f->used = mark;
        return -1;
    }
    f->v[f->n].name = tr_str_from(n, name.len);
    f->v[f->n].value = tr_str_from(v, head.len + tail.len);
    f->n++;
    return 0;
}

int tr_fields_add_cstr(struct tr_fields *f, const char *name, const char *value)
{
    return tr_fields_add(f, tr_str_from(name, strlen(name)), tr_str_from(value, strlen(value)));
}

int tr_fields_find(const struct tr_h2_header *v, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (v[i].name.len == len && memcmp(v[i].name.p, name, len) == 0)
            return (int)i;
    return -1;
}

static bool name_is(tr_str n, const char *lit)
{
    size_t len = strlen(lit);
    return n.len == len && memcmp(n.p, lit, len) == 0;
}

bool tr_fields_is_hop_by_hop(tr_str name)
{
    /* The one table is codec/h1's; in HTTP/2 form Host is :authority. */
    return name_is(name, "host") || tr_h1_is_hop_by_hop(name);
}

static bool slice_ieq(tr_str a, tr_str b)
{
    return a.len == b.len && (a.len == 0 || strncasecmp(a.p, b.p, a.len) == 0);
}

/* A lowercase token: what HTTP/2 allows of the names HTTP/1.1 allows. */
static bool is_lower_token(tr_str s)
{
    for (uint32_t i = 0; i < s.len; i++)
        if (s.p[i] >= 'A' && s.p[i] <= 'Z')
            return false;
    return tr_h1_is_token(s);
}

/* origin-form as the HTTP/1.1 parser takes it (or "*" for OPTIONS). */
static bool is_request_path(tr_str path, tr_str method)
{
    if (path.len == 1 && path.p[0] == '*')
        return TR_STR_EQ_LIT(method, "OPTIONS");
    if (path.len == 0 || path.p[0] != '/')
        return false;
    for (uint32_t i = 0; i < path.len; i++)
        if (!(tr_h1_ctype[(unsigned char)path.p[i]] & TR_H1_C_TARGET))
            return false;
    return true;
}

int tr_fields_check_request(const struct tr_h2_header *v, size_t n, const struct tr_h1_limits *lim,
                            const char **why)
{
    int mi = -1, si = -1, ai = -1, pi = -1, hi = -1;
    size_t regular = 0;
    bool cookie_seen = false, regular_seen = false;
    *why = NULL;
    for (size_t i = 0; i < n; i++) {
        tr_str name = v[i].name;
        if (name.len > 0 && name.p[0] == ':') {
            int *slot = TR_STR_EQ_LIT(name, ":method")      ? &mi
                        : TR_STR_EQ_LIT(name, ":scheme")    ? &si
                        : TR_STR_EQ_LIT(name, ":authority") ? &ai
                        : TR_STR_EQ_LIT(name, ":path")      ? &pi
                                                            : NULL;
            if (slot == NULL || *slot >= 0 || regular_seen) {
                *why = "unknown, repeated or misplaced pseudo-header";
                return 400;
            }
            *slot = (int)i;
            continue;
        }
        regular_seen = true;
        if (!is_lower_token(name)) {
            *why = "invalid header name";
            return 400;
        }
        if (!tr_h1_is_field_value(v[i].value)) {
            *why = "invalid header value";
            return 400;
        }
        if (TR_STR_EQ_LIT(name, "host")) {
            if (hi >= 0) {
                *why = "more than one host header";
                return 400;
            }
            hi = (int)i;
        }
        if (TR_STR_EQ_LIT(name, "cookie")) {
            if (cookie_seen)
                continue;
            cookie_seen = true;
        }
        regular++;
    }
    if (mi < 0 || !tr_h1_is_token(v[mi].value)) {
        *why = "missing or invalid :method";
        return 400;
    }
    bool connect = TR_STR_EQ_LIT(v[mi].value, "CONNECT");
    if (connect) {
        if (si >= 0 || pi >= 0 || ai < 0 || !tr_h1_is_authority(v[ai].value, 1)) {
            *why = "invalid CONNECT request";
            return 400;
        }
    } else {
        if (si < 0 ||
            !(TR_STR_EQ_LIT(v[si].value, "http") || TR_STR_EQ_LIT(v[si].value, "https"))) {
            *why = "missing or unsupported :scheme";
            return 400;
        }
        if (pi < 0 || !is_request_path(v[pi].value, v[mi].value)) {
            *why = "missing or invalid :path";
            return 400;
        }
    }
    if (ai >= 0 && !tr_h1_is_authority(v[ai].value, 0)) {
        *why = "invalid :authority";
        return 400;
    }
    if (hi >= 0 && !tr_h1_is_authority(v[hi].value, 0)) {
        *why = "invalid host";
        return 400;
    }
    if (ai >= 0 && hi >= 0 && !slice_ieq(v[ai].value, v[hi].value)) {
        *why = "host differs from :authority";
        return 400;
    }
    if (ai < 0 && hi < 0) {
        *why = "neither :authority nor host";
        return 400;
    }
    /* The same bound the HTTP/1.1 parser puts on a request line (CRLF
     * included), so a target it would answer 414 is not forwarded either. */
    tr_str target = connect ? v[ai].value : v[pi].value;
    if ((size_t)v[mi].value.len + target.len + sizeof(" ") + sizeof(" HTTP/1.1\r\n") - 2 >
        lim->max_request_line) {
        *why = "request line longer than limits.max_request_line";
        return 414;
    }
    if (regular > lim->max_headers) {
        *why = "more header fields than limits.max_headers";
        return 431;
    }
    return 0;
}

int tr_fields_from_h1_request(struct tr_fields *out, const struct tr_h1_message *m, tr_str scheme,
                              tr_str authority, tr_str path)
{
    if (tr_fields_add(out, TR_STR_LIT(":method"), m->method) < 0 ||
        tr_fields_add(out, TR_STR_LIT(":scheme"), scheme) < 0 ||
        tr_fields_add(out, TR_STR_LIT(":authority"), authority) < 0 ||
        tr_fields_add(out, TR_STR_LIT(":path"), path) < 0)
        return -1;
    for (uint32_t i = 0; i < m->n_headers; i++) {
        const struct tr_h1_header *h = &m->headers[i];
        if (tr_h1_is_hop_by_hop(h->name) || tr_h1_ieq(h->name, "host", 4) ||
            ((m->flags & TR_H1_F_HAS_CONNECTION_TOKENS) && tr_h1_connection_lists(m, h->name)))
            continue;
        if (tr_fields_add(out, h->name, h->value) < 0)
            return -1;
    }
    if ((m->flags & TR_H1_F_TE_TRAILERS) &&
        tr_fields_add(out, TR_STR_LIT("te"), TR_STR_LIT("trailers")) < 0)
        return -1;
    return 0;
}

int tr_fields_from_h1_response(struct tr_fields *out, const struct tr_h1_message *m)
{
    char status[4];
    snprintf(status, sizeof(status), "%03u", (unsigned)m->status % 1000);
    if (tr_fields_add(out, TR_STR_LIT(":status"), tr_str_from(status, 3)) < 0)
        return -1;
    for (uint32_t i = 0; i < m->n_headers; i++) {
        const struct tr_h1_header *h = &m->headers[i];
        if (tr_h1_is_hop_by_hop(h->name) ||
            ((m->flags & TR_H1_F_HAS_CONNECTION_TOKENS) && tr_h1_connection_lists(m, h->name)))
            continue;
        if (tr_fields_add(out, h->name, h->value) < 0)
            return -1;
    }
    return 0;
}

static bool put(struct tr_buf *out, const char *p, size_t len)
{
    if (tr_buf_room(out) < len)
        return false;
    tr_buf_append(out, p, len);
    return true;
}

static bool put_str(struct tr_buf *out, tr_str s)
{
    return put(out, s.p, s.len);
}

#define PUT_LIT(out, lit) put(out, lit, sizeof(lit) - 1)

/* Regular fields as "name: value\r\n" lines; several cookie fields (HTTP/2
 * splits them) are joined into one line with "; " (RFC 9113 8.2.3). */
static bool put_fields(struct tr_buf *out, const struct tr_h2_header *v, size_t n, bool skip_cl)
{
    bool cookie_done = false;
    for (size_t i = 0; i < n; i++) {
        tr_str name = v[i].name;
        if (name.len > 0 && name.p[0] == ':')
            continue;
        if (tr_fields_is_hop_by_hop(name) && !name_is(name, "te"))
            continue;
        if (skip_cl && name_is(name, "content-length"))
            continue;
        if (name_is(name, "cookie")) {
            if (cookie_done)
                continue;
            cookie_done = true;
            if (!PUT_LIT(out, "cookie: "))
                return false;
            bool first = true;
            for (size_t j = i; j < n; j++) {
                if (!name_is(v[j].name, "cookie"))
                    continue;
                if ((!first && !PUT_LIT(out, "; ")) || !put_str(out, v[j].value))
                    return false;
                first = false;
            }
            if (!PUT_LIT(out, "\r\n"))
                return false;
            continue;
        }
        if (!put_str(out, name) || !PUT_LIT(out, ": ") || !put_str(out, v[i].value) ||
            !PUT_LIT(out, "\r\n"))
            return false;
    }
    return true;
}

int tr_fields_h1_request_head(struct tr_buf *out, const struct tr_h2_header *v, size_t n,
                              bool chunked)
{
    int m = tr_fields_find(v, n, ":method"), p = tr_fields_find(v, n, ":path"),
        a = tr_fields_find(v, n, ":authority");
    if (m < 0 || p < 0)
        return -1;
    uint32_t mark = out->end;
    bool ok = put_str(out, v[m].value) && PUT_LIT(out, " ") && put_str(out, v[p].value) &&
              PUT_LIT(out, " HTTP/1.1\r\n");
    if (ok && a >= 0)
        ok = PUT_LIT(out, "host: ") && put_str(out, v[a].value) && PUT_LIT(out, "\r\n");
    ok = ok && put_fields(out, v, n, chunked);
    if (ok && chunked)
        ok = PUT_LIT(out, "transfer-encoding: chunked\r\n");
    ok = ok && PUT_LIT(out, "\r\n");
    if (!ok) {
        out->end = mark;
        return -1;
    }
    return 0;
}

int tr_fields_h1_response_head(struct tr_buf *out, const struct tr_h2_header *v, size_t n,
                               bool chunked, bool keep_alive)
{
    int s = tr_fields_find(v, n, ":status");
    if (s < 0 || v[s].value.len != 3)
        return -1;
    int status =
        (v[s].value.p[0] - '0') * 100 + (v[s].value.p[1] - '0') * 10 + (v[s].value.p[2] - '0');
    const char *reason = tr_h1_reason(status);
    uint32_t mark = out->end;
    bool ok = PUT_LIT(out, "HTTP/1.1 ") && put_str(out, v[s].value) && PUT_LIT(out, " ") &&
              put(out, reason, strlen(reason)) && PUT_LIT(out, "\r\n") &&
              put_fields(out, v, n, chunked);
    if (ok && chunked)
        ok = PUT_LIT(out, "transfer-encoding: chunked\r\n");
    if (ok && status >= 200)
        ok = keep_alive ? PUT_LIT(out, "connection: keep-alive\r\n")
                        : PUT_LIT(out, "connection: close\r\n");
    ok = ok && PUT_LIT(out, "\r\n");
    if (!ok) {
        out->end = mark;
        return -1;
    }
    return 0;
}

/* Fields that framing, routing or the connection own: never trailers. */
static bool trailer_forbidden(tr_str name)
{
    return tr_fields_is_hop_by_hop(name) || name_is(name, "content-length") ||
           name_is(name, "content-type") || name_is(name, "content-encoding") ||
           name_is(name, "authorization") || name_is(name, "set-cookie") ||
           name_is(name, "cookie") || (name.len > 0 && name.p[0] == ':');
}

int tr_fields_h1_trailers(struct tr_buf *out, const struct tr_h2_header *v, size_t n)
{
    uint32_t mark = out->end;
    bool ok = PUT_LIT(out, "0\r\n");
    for (size_t i = 0; ok && i < n; i++) {
        if (trailer_forbidden(v[i].name))
            continue;
        ok = put_str(out, v[i].name) && PUT_LIT(out, ": ") && put_str(out, v[i].value) &&
             PUT_LIT(out, "\r\n");
    }
    ok = ok && PUT_LIT(out, "\r\n");
    if (!ok) {
        out->end = mark;
        return -1;
    }
    return 0;
}

int tr_fields_parse_trailers(struct tr_fields *out, const char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const char *eol = memchr(p + i, '\n', len - i);
        if (eol == NULL)
            return -1;
        size_t line_end = (size_t)(eol - p);
        size_t end = line_end > i && p[line_end - 1] == '\r' ? line_end - 1 : line_end;
        if (end == i)
            return 0; /* the empty line ends the section */
        const char *colon = memchr(p + i, ':', end - i);
        if (colon == NULL || colon == p + i)
            return -1;
        tr_str name = tr_str_from(p + i, (size_t)(colon - (p + i)));
        size_t vs = (size_t)(colon - p) + 1, ve = end;
        while (vs < ve && (p[vs] == ' ' || p[vs] == '\t'))
            vs++;
        while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
            ve--;
        /* Stored first (tr_fields_add lowercases the name), then taken back
         * if it may not be a trailer: no name buffer that could be too short. */
        uint32_t mark = out->used;
        if (tr_fields_add(out, name, tr_str_from(p + vs, ve - vs)) < 0)
            return TR_FIELDS_FULL;
        if (trailer_forbidden(out->v[out->n - 1].name)) {
            out->n--;
            out->used = mark;
        }
        i = line_end + 1;
    }
    return 0;
}
