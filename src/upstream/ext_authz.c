/* upstream/ext_authz.c: checks sent to HTTP external authorizers (see
 * ext_authz.h). */
#include "upstream/ext_authz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "obs/metrics.h"
#include "router/router.h"
#include "runtime/snapshot.h"
#include "runtime/worker.h"
#include "upstream/h1_body.h"
#include "upstream/h1_client.h"
#include "upstream/pool.h"

struct tr_ext_authz_check {
    struct tr_worker *w;
    struct tr_wsnap *ws; /* a use: the cluster view lives in it */
    const struct tr_ext_authz_cfg *cfg;
    int provider; /* index into the snapshot's ext_authz */
    struct tr_cluster_rt *cluster;
    tr_ext_authz_done_cb done;
    void *owner;
    struct tr_buf *req; /* the check request, written once */
    uint32_t sent;
    bool is_head;
    bool ended;
    struct tr_h1_client uc;
    struct tr_buf *in; /* response bytes */
    struct tr_timer timer;
    struct tr_deferred later; /* more work, or the done callback */
    /* What came back: status (0: no response), fields, body (kept part). */
    uint16_t status;
    bool allowed;
    bool failed; /* no usable answer (or a 5xx with fail_open) */
    char *store; /* the fields' names (lowercased) and values */
    struct tr_header_edit_field *fields;
    uint32_t n_fields;
    char *body;
    uint32_t body_len;
    /* The edits handed out (tr_ext_authz_request_edit / _response_edit). */
    struct tr_header_edit edit[2];
    struct tr_header_edit_name *drop[2];
    struct tr_header_edit_field *emit[2];
    struct tr_str_pair *view; /* tr_ext_authz_request_view's */
};

static void check_on_ready(void *owner, struct tr_upstream *up, int err, const char *reason);
static void check_on_io(void *owner, struct tr_upstream *up);
static void check_pump(struct tr_ext_authz_check *c);
static void check_begin(struct tr_deferred *d);
static void check_on_timer(struct tr_timer *t);

static const struct tr_upstream_owner_ops check_up_ops = {
    .on_ready = check_on_ready,
    .on_io = check_on_io,
};

bool tr_ext_authz_name_match(const char *const *pats, size_t n, tr_str name)
{
    for (size_t i = 0; i < n; i++) {
        const char *p = pats[i];
        size_t len = strlen(p);
        if (len == 1 && p[0] == '*')
            return true;
        if (len > 1 && p[len - 1] == '*') {
            if (name.len >= len - 1 && strncasecmp(name.p, p, len - 1) == 0)
                return true;
        } else if (len > 1 && p[0] == '*') {
            if (name.len >= len - 1 &&
                strncasecmp(name.p + name.len - (len - 1), p + 1, len - 1) == 0)
                return true;
        } else if (tr_str_ieq(name, p, len)) {
            return true;
        }
    }
    return false;
}

/* Fields never copied between the messages: framing, hop-by-hop, Host. */
static bool never_copied(tr_str name)
{
    static const char *const names[] = {
        "host", "content-length", "transfer-encoding", "connection",     "keep-alive", "upgrade",
        "te",   "trailer",        "proxy-connection",  "http2-settings",
    };
    if (name.len == 0 || name.p[0] == ':')
        return true;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (tr_str_ieq(name, names[i], strlen(names[i])))
            return true;
    }
    return false;
}

static bool added(const struct tr_ext_authz_cfg *e, tr_str name)
{
    for (size_t i = 0; i < e->n_check_add; i++) {
        if (tr_str_ieq(name, e->check_add[i].name, strlen(e->check_add[i].name)))
            return true;
    }
    return false;
}

static void put(struct tr_buf *b, const char *p, size_t len)
{
    tr_buf_append(b, p, len);
}

static void put_s(struct tr_buf *b, tr_str s)
{
    tr_buf_append(b, s.p, s.len);
}

struct tr_ext_authz_check *tr_ext_authz_start(struct tr_worker *w, struct tr_wsnap *ws,
                                              int provider, tr_str method, tr_str host,
                                              tr_str target, const struct tr_str_pair *headers,
                                              uint32_t n_headers, tr_ext_authz_done_cb done,
                                              void *owner)
{
    const struct tr_ext_authz_cfg *e = &ws->snap->cfg->ext_authz[provider];
    const char *prefix = e->path_prefix != NULL ? e->path_prefix : "";
    size_t need = method.len + strlen(prefix) + target.len + host.len + 128;
    for (uint32_t i = 0; i < n_headers; i++)
        need += headers[i].name.len + headers[i].value.len + 4;
    for (size_t i = 0; i < e->n_check_add; i++)
        need += strlen(e->check_add[i].name) + strlen(e->check_add[i].value) + 4;
    struct tr_ext_authz_check *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if ((c->req = tr_buf_get_sized(&w->bufs, need)) == NULL) {
        free(c);
        return NULL;
    }
    c->w = w;
    c->ws = ws;
    tr_wsnap_use(ws);
    c->cfg = e;
    c->provider = provider;
    c->cluster = &ws->clusters[e->cluster];
    c->done = done;
    c->owner = owner;
    c->is_head = TR_STR_EQ_LIT(method, "HEAD");
    /* The check: the request's method, prefix + target, its Host, the
     * fields check_headers names (check_add's replace those of the same
     * names), no body. */
    struct tr_buf *b = c->req;
    put_s(b, method);
    put(b, " ", 1);
    put(b, prefix, strlen(prefix));
    if (target.len == 0 || target.p[0] != '/')
        put(b, "/", 1);
    put_s(b, target);
    put(b, " HTTP/1.1\r\nhost: ", 17);
    put_s(b, host);
    put(b, "\r\ncontent-length: 0\r\n", 21);
    for (uint32_t i = 0; i < n_headers; i++) {
        tr_str nm = headers[i].name;
        if (never_copied(nm) || added(e, nm) ||
            !tr_ext_authz_name_match(e->check_headers, e->n_check_headers, nm))
            continue;
        put_s(b, nm);
        put(b, ": ", 2);
        put_s(b, headers[i].value);
        put(b, "\r\n", 2);
    }
    for (size_t i = 0; i < e->n_check_add; i++) {
        put(b, e->check_add[i].name, strlen(e->check_add[i].name));
        put(b, ": ", 2);
        put(b, e->check_add[i].value, strlen(e->check_add[i].value));
        put(b, "\r\n", 2);
    }
    put(b, "\r\n", 2);
    tr_timer_init(&c->timer, check_on_timer);
    /* Sent after this event batch: never on the request path's stack. */
    tr_loop_defer(w->loop, &c->later, check_begin);
    return c;
}

static void check_notify(struct tr_deferred *d)
{
    struct tr_ext_authz_check *c = tr_container_of(d, struct tr_ext_authz_check, later);
    c->done(c->owner); /* may free c */
}

/* Gives back the check's timer, upstream connection (pooled when
 * reusable) and buffers. */
static void check_release(struct tr_ext_authz_check *c, bool reusable)
{
    struct tr_worker *w = c->w;
    tr_timer_cancel(w->loop, &c->timer);
    tr_h1c_release(&c->uc, reusable);
    if (c->req != NULL)
        tr_buf_put(&w->bufs, c->req);
    if (c->in != NULL)
        tr_buf_put(&w->bufs, c->in);
    c->req = c->in = NULL;
}

/* The check is over: counted, its resources given back, the owner told
 * after this batch. status 0: no (usable) response. */
static void check_end(struct tr_ext_authz_check *c, uint16_t status, bool reusable, const char *why)
{
    if (c->ended)
        return;
    c->ended = true;
    struct tr_worker *w = c->w;
    const struct tr_ext_authz_cfg *e = c->cfg;
    tr_loop_cancel(w->loop, &c->later);
    check_release(c, reusable);
    enum tr_ext_authz_result res;
    c->failed = status == 0 || (status >= 500 && e->fail_open);
    if (status >= 200 && status < 300) {
        c->allowed = true;
        c->status = status;
        res = TR_EXT_AUTHZ_ALLOWED;
    } else if ((status == 0 || status >= 500) && e->fail_open) {
        c->allowed = true;
        c->status = 0;
        c->n_fields = 0; /* nothing of a failed answer is used */
        res = TR_EXT_AUTHZ_FAILED_OPEN;
    } else if (status == 0) {
        c->status = (uint16_t)e->status_on_error;
        c->n_fields = 0;
        c->body_len = 0;
        res = TR_EXT_AUTHZ_ERROR;
    } else {
        c->status = status;
        res = TR_EXT_AUTHZ_DENIED;
    }
    if (status == 0)
        tr_debug("ext_authz %s (cluster %s, %s): %s", e->name, c->cluster->cfg->name,
                 c->uc.addr != NULL ? c->uc.addr : "-", why != NULL ? why : "failed");
    const char *const *names = c->ws->snap->ext_authz_names;
    tr_metrics_ext_authz(w->metrics, names != NULL ? names[c->provider] : NULL, res);
    if (c->body == NULL)
        c->body = calloc(1, 1);
    tr_loop_defer(w->loop, &c->later, check_notify);
}

static void check_on_timer(struct tr_timer *t)
{
    struct tr_ext_authz_check *c = tr_container_of(t, struct tr_ext_authz_check, timer);
    check_end(c, 0, false, "no response in time (timeout)");
}

static void check_begin(struct tr_deferred *d)
{
    struct tr_ext_authz_check *c = tr_container_of(d, struct tr_ext_authz_check, later);
    tr_timer_set(c->w->loop, &c->timer, c->cfg->timeout_ms);
    uint64_t hash = (uint64_t)tr_worker_rand(c->w) << 32 | tr_worker_rand(c->w);
    switch (tr_h1c_start(&c->uc, c->w, c->cluster, &check_up_ops, c, false, hash, NULL)) {
    case TR_H1C_READY:
        check_pump(c);
        return;
    case TR_H1C_CONNECTING:
        return;
    case TR_H1C_NO_HEALTHY:
        check_end(c, 0, false, "no healthy endpoint");
        return;
    case TR_H1C_OVERFLOW:
        check_end(c, 0, false, "a connection limit of the cluster");
        return;
    default:
        check_end(c, 0, false, "could not connect");
        return;
    }
}

static void check_on_ready(void *owner, struct tr_upstream *up, int err, const char *reason)
{
    struct tr_ext_authz_check *c = owner;
    (void)up;
    if (err < 0) {
        tr_h1c_connect_failed(&c->uc);
        check_end(c, 0, false, reason != NULL ? reason : "connect failed");
        return;
    }
    check_pump(c);
}

static void check_on_io(void *owner, struct tr_upstream *up)
{
    (void)up;
    check_pump(owner);
}

/* The response head's status and fields, kept (names lowercased). */
static bool keep_head(struct tr_ext_authz_check *c, const struct tr_h1_message *m,
                      uint32_t head_len)
{
    c->store = malloc((size_t)head_len + 1);
    c->fields = m->n_headers > 0 ? calloc(m->n_headers, sizeof(*c->fields)) : NULL;
    c->body = malloc(TR_EXT_AUTHZ_MAX_BODY + 1);
    if (c->store == NULL || (m->n_headers > 0 && c->fields == NULL) || c->body == NULL)
        return false;
    char *at = c->store;
    for (uint32_t i = 0; i < m->n_headers; i++) {
        const struct tr_h1_header *h = &m->headers[i];
        if (never_copied(h->name))
            continue;
        struct tr_header_edit_field *f = &c->fields[c->n_fields++];
        for (uint32_t k = 0; k < h->name.len; k++) {
            char ch = h->name.p[k];
            at[k] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
        }
        f->name = at;
        f->name_len = h->name.len;
        at += h->name.len;
        memcpy(at, h->value.p, h->value.len);
        f->value = at;
        f->value_len = h->value.len;
        at += h->value.len;
    }
    c->status = m->status;
    return true;
}

/* The response bytes in c->in: the head, then the body (the first
 * TR_EXT_AUTHZ_MAX_BODY bytes kept). Returns false once the check ended. */
static bool check_response(struct tr_ext_authz_check *c)
{
    const struct tr_h1_limits *lim = &c->ws->snap->h1_limits;
    while (c->in != NULL && tr_buf_len(c->in) > 0) {
        if (!c->uc.head_done) {
            int r = tr_h1c_head_end(&c->uc, &c->in, lim);
            if (r == 0)
                return true;
            struct tr_h1_message msg;
            memset(&msg, 0, sizeof(msg));
            msg.headers = c->w->headers; /* never nested in another parse */
            if (r < 0 ||
                tr_h1c_parse_response(&c->uc, tr_buf_head(c->in), (uint32_t)r, lim,
                                      c->is_head ? TR_H1_M_HEAD : TR_H1_M_OTHER, &msg) < 0 ||
                msg.body == TR_H1_BODY_TUNNEL) {
                check_end(c, 0, false, "an invalid response");
                return false;
            }
            if (!c->uc.head_done) { /* an interim 1xx: skipped */
                tr_buf_consume(c->in, (uint32_t)r);
                continue;
            }
            if (!keep_head(c, &msg, (uint32_t)r)) {
                c->status = 0;
                check_end(c, 0, false, "out of memory");
                return false;
            }
            tr_buf_consume(c->in, (uint32_t)r);
        } else {
            struct tr_h1_body_run run;
            if (tr_h1_body_decode(&c->uc.resp, NULL, tr_buf_head(c->in), tr_buf_len(c->in), &run) !=
                0) {
                check_end(c, 0, false, "an invalid response body");
                return false;
            }
            uint32_t room = TR_EXT_AUTHZ_MAX_BODY - c->body_len;
            uint32_t take = run.data_len < room ? run.data_len : room;
            memcpy(c->body + c->body_len, tr_buf_head(c->in) + run.data_off, take);
            c->body_len += take;
            tr_buf_consume(c->in, run.consumed);
        }
        if (c->uc.head_done && c->uc.resp.done) {
            c->body[c->body_len] = '\0';
            bool whole = c->in == NULL || tr_buf_len(c->in) == 0;
            check_end(c, c->status, whole && c->uc.resp.framing != TR_H1_BODY_UNTIL_CLOSE, NULL);
            return false;
        }
    }
    return true;
}

static void check_pump_later(struct tr_deferred *d)
{
    struct tr_ext_authz_check *c = tr_container_of(d, struct tr_ext_authz_check, later);
    if (!c->ended)
        check_pump(c);
}

static void check_pump(struct tr_ext_authz_check *c)
{
    for (int guard = 0; guard < 64 && !c->ended; guard++) {
        if (c->sent < c->req->end &&
            tr_h1c_write(&c->uc, c->req->data, c->req->end, &c->sent) < 0) {
            check_end(c, 0, false, "the connection failed");
            return;
        }
        if (!check_response(c))
            return;
        ssize_t n = tr_h1c_read(&c->uc, &c->in);
        if (n == TR_H1C_READ_END) {
            if (c->body != NULL)
                c->body[c->body_len] = '\0';
            check_end(c, c->uc.head_done ? c->status : 0, false, "the connection closed");
            return;
        }
        if (n < 0) {
            check_end(c, 0, false, "the connection closed before the response");
            return;
        }
        if (n == 0)
            return;
    }
    if (!c->ended)
        tr_loop_defer(c->w->loop, &c->later, check_pump_later);
}

void tr_ext_authz_free(struct tr_ext_authz_check *c)
{
    if (c == NULL)
        return;
    struct tr_worker *w = c->w;
    if (!c->ended)
        check_release(c, false); /* abandoned in flight: closed, not pooled */
    tr_loop_cancel(w->loop, &c->later);
    tr_wsnap_release(c->ws);
    for (int i = 0; i < 2; i++) {
        free(c->drop[i]);
        free(c->emit[i]);
    }
    free(c->store);
    free(c->fields);
    free(c->body);
    free(c->view);
    free(c);
}

bool tr_ext_authz_failed(const struct tr_ext_authz_check *c)
{
    return c->failed;
}

bool tr_ext_authz_allowed(const struct tr_ext_authz_check *c, uint16_t *status, const char **body)
{
    *status = c->status;
    *body = c->body != NULL ? c->body : "";
    return c->allowed;
}

/* base, then the response fields that pats names (all but the excluded
 * ones when all), each replacing the message's fields of its name. */
static const struct tr_header_edit *make_edit(struct tr_ext_authz_check *c, int slot,
                                              const struct tr_header_edit *base,
                                              const char *const *pats, size_t n_pats, bool all)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_fields; i++)
        n += all || tr_ext_authz_name_match(pats, n_pats,
                                            (tr_str){c->fields[i].name, c->fields[i].name_len});
    if (n == 0)
        return base;
    uint32_t bd = base != NULL ? base->n_drop : 0, be = base != NULL ? base->n_emit : 0;
    free(c->drop[slot]);
    free(c->emit[slot]);
    c->drop[slot] = malloc((bd + n) * sizeof(*c->drop[slot]));
    c->emit[slot] = malloc((be + n) * sizeof(*c->emit[slot]));
    if (c->drop[slot] == NULL || c->emit[slot] == NULL)
        return base; /* no memory: the fields are not added (logged below) */
    struct tr_header_edit *e = &c->edit[slot];
    *e = (struct tr_header_edit){0};
    if (base != NULL) {
        memcpy(c->drop[slot], base->drop, bd * sizeof(*base->drop));
        memcpy(c->emit[slot], base->emit, be * sizeof(*base->emit));
        e->drop_len_mask = base->drop_len_mask;
        e->emit_bytes = base->emit_bytes;
    }
    e->n_drop = bd;
    e->n_emit = be;
    for (uint32_t i = 0; i < c->n_fields; i++) {
        const struct tr_header_edit_field *f = &c->fields[i];
        if (!all && !tr_ext_authz_name_match(pats, n_pats, (tr_str){f->name, f->name_len}))
            continue;
        c->drop[slot][e->n_drop++] = (struct tr_header_edit_name){f->name, f->name_len};
        e->drop_len_mask |= 1ull << (f->name_len % 64);
        c->emit[slot][e->n_emit++] = *f;
        e->emit_bytes += f->name_len + f->value_len;
    }
    e->drop = c->drop[slot];
    e->emit = c->emit[slot];
    return e;
}

const struct tr_header_edit *tr_ext_authz_request_edit(struct tr_ext_authz_check *c,
                                                       const struct tr_header_edit *base)
{
    if (!c->allowed)
        return base;
    const struct tr_ext_authz_cfg *e = c->cfg;
    return make_edit(c, 0, base, (const char *const *)e->upstream_on_allow, e->n_upstream_on_allow,
                     false);
}

const struct tr_header_edit *tr_ext_authz_response_edit(struct tr_ext_authz_check *c,
                                                        const struct tr_header_edit *base)
{
    const struct tr_ext_authz_cfg *e = c->cfg;
    if (c->allowed)
        return make_edit(c, 1, base, (const char *const *)e->downstream_on_allow,
                         e->n_downstream_on_allow, false);
    return make_edit(c, 1, NULL, (const char *const *)e->downstream_on_deny,
                     e->n_downstream_on_deny, e->n_downstream_on_deny == 0);
}

uint32_t tr_ext_authz_request_view(struct tr_ext_authz_check *c, const struct tr_str_pair *headers,
                                   uint32_t n_headers, const struct tr_str_pair **out)
{
    *out = headers;
    if (!c->allowed)
        return n_headers;
    const struct tr_ext_authz_cfg *e = c->cfg;
    const char *const *pats = (const char *const *)e->upstream_on_allow;
    uint32_t m = 0;
    for (uint32_t i = 0; i < c->n_fields; i++)
        m += tr_ext_authz_name_match(pats, e->n_upstream_on_allow,
                                     (tr_str){c->fields[i].name, c->fields[i].name_len});
    if (m == 0)
        return n_headers;
    free(c->view);
    if ((c->view = malloc(((size_t)n_headers + m) * sizeof(*c->view))) == NULL) {
        *out = NULL;
        return 0;
    }
    /* The request's fields but those the authorizer's replace (names of the
     * request in any case; the authorizer's are lower case), then its. */
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_headers; i++) {
        bool replaced = false;
        for (uint32_t k = 0; k < c->n_fields && !replaced; k++) {
            const struct tr_header_edit_field *f = &c->fields[k];
            replaced = tr_str_ieq(headers[i].name, f->name, f->name_len) &&
                       tr_ext_authz_name_match(pats, e->n_upstream_on_allow,
                                               (tr_str){f->name, f->name_len});
        }
        if (!replaced)
            c->view[n++] = headers[i];
    }
    for (uint32_t k = 0; k < c->n_fields; k++) {
        const struct tr_header_edit_field *f = &c->fields[k];
        if (tr_ext_authz_name_match(pats, e->n_upstream_on_allow, (tr_str){f->name, f->name_len}))
            c->view[n++] = (struct tr_str_pair){{f->name, f->name_len}, {f->value, f->value_len}};
    }
    *out = c->view;
    return n;
}
