/* upstream/mirror.c: shadow requests, fire and forget (see mirror.h). */
#include "upstream/mirror.h"

#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "filter/fields.h"
#include "filter/route_action.h"
#include "obs/metrics.h"
#include "runtime/worker.h"
#include "upstream/h1_body.h"
#include "upstream/h1_client.h"
#include "upstream/pool.h"

struct tr_mirror {
    struct tr_mirror *next, *prev; /* the request's list (next), then the worker's */
    struct tr_worker *w;
    struct tr_wsnap *ws; /* a use: the cluster view lives in it */
    struct tr_cluster_rt *cluster;
    struct tr_buf *req; /* the head, then the body as framed for it */
    uint32_t body;      /* payload bytes in req (the bound counts these) */
    uint32_t sent;      /* bytes of req written */
    bool chunked;       /* a stream's DATA is framed chunked */
    bool is_head;       /* a HEAD request: the response has no body */
    bool launched;      /* on the worker's list */
    bool ended;
    uint64_t timeout_ms;
    struct tr_h1_client uc;
    struct tr_buf *in; /* response bytes */
    struct tr_timer timer;
    struct tr_deferred later;      /* the start after the launch's batch, or more work */
    struct tr_deferred free_later; /* after the batch it ended in */
};

static void mirror_on_ready(void *owner, struct tr_upstream *up, int err, const char *reason);
static void mirror_on_io(void *owner, struct tr_upstream *up);

static const struct tr_upstream_owner_ops mirror_up_ops = {
    .on_ready = mirror_on_ready,
    .on_io = mirror_on_io,
};

static void mirror_free_now(struct tr_deferred *d)
{
    struct tr_mirror *m = tr_container_of(d, struct tr_mirror, free_later);
    tr_loop_cancel(m->w->loop, &m->later);
    m->w->n_mirrors--;
    tr_wsnap_release(m->ws);
    free(m);
}

/* Counted as result, its resources given back, freed after this batch. */
static void mirror_end(struct tr_mirror *m, enum tr_mirror_result result, bool reusable)
{
    if (m->ended)
        return;
    m->ended = true;
    struct tr_worker *w = m->w;
    tr_metrics_mirror(w->metrics, result);
    tr_timer_cancel(w->loop, &m->timer);
    tr_h1c_release(&m->uc, reusable);
    if (m->req != NULL)
        tr_buf_put(&w->bufs, m->req);
    if (m->in != NULL)
        tr_buf_put(&w->bufs, m->in);
    m->req = m->in = NULL;
    if (m->launched) {
        if (m->prev != NULL)
            m->prev->next = m->next;
        else
            w->mirrors = m->next;
        if (m->next != NULL)
            m->next->prev = m->prev;
    }
    m->next = m->prev = NULL;
    tr_loop_defer(w->loop, &m->free_later, mirror_free_now);
}

static struct tr_mirror *mirror_new(struct tr_worker *w, struct tr_wsnap *ws,
                                    const struct tr_mirror_cfg *mc, size_t head_room,
                                    uint64_t timeout_ms)
{
    if (w->n_mirrors >= TR_MIRROR_MAX_IN_FLIGHT) {
        tr_metrics_mirror(w->metrics, TR_MIRROR_OVERFLOW);
        return NULL;
    }
    struct tr_mirror *m = calloc(1, sizeof(*m));
    if (m != NULL)
        m->req = tr_buf_get_sized(&w->bufs, head_room);
    if (m == NULL || m->req == NULL) {
        free(m);
        tr_metrics_mirror(w->metrics, TR_MIRROR_FAILED); /* no memory */
        return NULL;
    }
    m->w = w;
    m->ws = ws;
    tr_wsnap_use(ws);
    m->cluster = &ws->clusters[mc->cluster];
    m->timeout_ms = timeout_ms;
    w->n_mirrors++;
    return m;
}

/* Is this mirror picked for one request (its percentage)? */
static bool picked(struct tr_worker *w, const struct tr_mirror_cfg *mc)
{
    return mc->per_million >= TR_PER_MILLION || tr_share_hit(mc->per_million, tr_worker_rand(w));
}

void tr_mirrors_start_h1(struct tr_mirror **list, struct tr_worker *w, struct tr_wsnap *ws,
                         const struct tr_route_cfg *route, const char *head, uint32_t head_len,
                         uint64_t timeout_ms)
{
    for (size_t i = 0; i < route->n_mirrors; i++) {
        if (!picked(w, &route->mirrors[i]))
            continue;
        struct tr_mirror *m = mirror_new(w, ws, &route->mirrors[i], head_len, timeout_ms);
        if (m == NULL)
            continue;
        tr_buf_append(m->req, head, head_len);
        m->is_head = head_len >= 5 && memcmp(head, "HEAD ", 5) == 0;
        m->next = *list;
        *list = m;
    }
}

void tr_mirrors_start_fields(struct tr_mirror **list, struct tr_worker *w, struct tr_wsnap *ws,
                             const struct tr_route_cfg *route, const struct tr_h2_header *v,
                             size_t n, bool has_body, uint64_t timeout_ms)
{
    if (route->n_mirrors == 0)
        return;
    /* The header list as the primary got it, but for the mesh's own
     * protocol field: the shadow's cluster may be no trellis peer. */
    size_t size = 64, kept = 0;
    struct tr_h2_header *f = malloc(n * sizeof(*f) + 1);
    if (f == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        if (TR_STR_EQ_LIT(v[i].name, "trellis-orig-proto"))
            continue;
        f[kept++] = v[i];
        size += v[i].name.len + v[i].value.len + 4;
    }
    bool chunked = has_body && tr_fields_find(f, kept, "content-length") < 0;
    int mi = tr_fields_find(f, kept, ":method");
    bool is_head = mi >= 0 && TR_STR_EQ_LIT(f[mi].value, "HEAD");
    for (size_t i = 0; i < route->n_mirrors; i++) {
        if (!picked(w, &route->mirrors[i]))
            continue;
        struct tr_mirror *m = mirror_new(w, ws, &route->mirrors[i], size, timeout_ms);
        if (m == NULL)
            continue;
        m->next = *list;
        *list = m;
        m->chunked = chunked;
        m->is_head = is_head;
        if (tr_fields_h1_request_head(m->req, f, kept, chunked) < 0) {
            *list = m->next;
            mirror_end(m, TR_MIRROR_FAILED, false); /* sized above: not reached */
        }
    }
    free(f);
}

void tr_mirrors_unsupported(struct tr_worker *w, const struct tr_route_cfg *route)
{
    for (size_t i = 0; i < route->n_mirrors; i++)
        tr_metrics_mirror(w->metrics, TR_MIRROR_UNSUPPORTED);
}

/* Room for need more bytes in m->req, growing it; false when memory ran
 * out (the bound on the body is the caller's). */
static bool req_room(struct tr_mirror *m, size_t need)
{
    if (tr_buf_room(m->req) >= need)
        return true;
    size_t want = (size_t)m->req->end + need, cap = (size_t)m->req->cap * 2;
    struct tr_buf *big = tr_buf_get_sized(&m->w->bufs, cap > want ? cap : want);
    if (big == NULL)
        return false;
    tr_buf_append(big, m->req->data, m->req->end);
    tr_buf_put(&m->w->bufs, m->req);
    m->req = big;
    return true;
}

/* Every shadow of *list for which add() fails is dropped with result. */
static void each(struct tr_mirror **list,
                 bool (*add)(struct tr_mirror *, const void *, size_t, bool), const void *p,
                 size_t len, bool end)
{
    for (struct tr_mirror **at = list; *at != NULL;) {
        struct tr_mirror *m = *at;
        if (add(m, p, len, end)) {
            at = &m->next;
            continue;
        }
        *at = m->next;
        mirror_end(m,
                   m->body + len > TR_MIRROR_MAX_BODY ? TR_MIRROR_BODY_TOO_LARGE : TR_MIRROR_FAILED,
                   false);
    }
}

static bool add_raw(struct tr_mirror *m, const void *p, size_t len, bool end)
{
    (void)end;
    if (m->body + len > TR_MIRROR_MAX_BODY || !req_room(m, len))
        return false;
    tr_buf_append(m->req, p, len);
    m->body += (uint32_t)len;
    return true;
}

static bool add_data(struct tr_mirror *m, const void *p, size_t len, bool end)
{
    /* A chunk's framing and the end of the message: at most 24 bytes. */
    if (m->body + len > TR_MIRROR_MAX_BODY || !req_room(m, len + 24))
        return false;
    ssize_t took = tr_h1_body_put(&m->req, &m->w->bufs, m->chunked, p, len, end);
    if (took < 0 || (size_t)took != len)
        return false;
    m->body += (uint32_t)len;
    return true;
}

void tr_mirrors_body(struct tr_mirror **list, const void *p, size_t len)
{
    if (len > 0)
        each(list, add_raw, p, len, false);
}

void tr_mirrors_data(struct tr_mirror **list, const void *p, size_t len, bool end)
{
    if (len > 0 || end)
        each(list, add_data, p, len, end);
}

void tr_mirrors_trailers(struct tr_mirror **list, const struct tr_h2_header *h, size_t n)
{
    for (struct tr_mirror **at = list; *at != NULL;) {
        struct tr_mirror *m = *at;
        /* A length-framed body cannot carry trailers: they are dropped, as
         * the primary's HTTP/1.1 side drops them (proxy/stream.c). */
        if (!m->chunked || tr_h1_body_put_trailers(&m->req, &m->w->bufs, h, n) == 0) {
            at = &m->next;
            continue;
        }
        *at = m->next;
        mirror_end(m, TR_MIRROR_FAILED, false);
    }
}

void tr_mirrors_drop(struct tr_mirror **list)
{
    while (*list != NULL) {
        struct tr_mirror *m = *list;
        *list = m->next;
        mirror_end(m, TR_MIRROR_INCOMPLETE, false);
    }
}

/* ---- the shadow exchange ---- */

static void mirror_pump(struct tr_mirror *m);
static void mirror_pump_later(struct tr_deferred *d);

static void mirror_on_timer(struct tr_timer *t)
{
    struct tr_mirror *m = tr_container_of(t, struct tr_mirror, timer);
    tr_debug("mirror to cluster %s (%s): no response in %llu ms", m->cluster->cfg->name,
             m->uc.addr != NULL ? m->uc.addr : "-", (unsigned long long)m->timeout_ms);
    mirror_end(m, TR_MIRROR_FAILED, false);
}

static void mirror_start(struct tr_deferred *d)
{
    struct tr_mirror *m = tr_container_of(d, struct tr_mirror, later);
    tr_timer_init(&m->timer, mirror_on_timer);
    tr_timer_set(m->w->loop, &m->timer, m->timeout_ms);
    /* A consistent-hash mirror cluster gets no key of its own: any endpoint. */
    uint64_t hash = (uint64_t)tr_worker_rand(m->w) << 32 | tr_worker_rand(m->w);
    switch (tr_h1c_start(&m->uc, m->w, m->cluster, &mirror_up_ops, m, false, hash, NULL)) {
    case TR_H1C_READY:
        mirror_pump(m);
        return;
    case TR_H1C_CONNECTING:
        return;
    default:
        mirror_end(m, TR_MIRROR_FAILED, false);
        return;
    }
}

void tr_mirrors_launch(struct tr_mirror **list)
{
    while (*list != NULL) {
        struct tr_mirror *m = *list;
        *list = m->next;
        struct tr_worker *w = m->w;
        m->launched = true;
        m->prev = NULL;
        m->next = w->mirrors;
        if (w->mirrors != NULL)
            w->mirrors->prev = m;
        w->mirrors = m;
        tr_loop_defer(w->loop, &m->later, mirror_start);
    }
}

static void mirror_on_ready(void *owner, struct tr_upstream *up, int err, const char *reason)
{
    struct tr_mirror *m = owner;
    (void)up;
    if (err < 0) {
        tr_h1c_connect_failed(&m->uc); /* no retries for a shadow */
        tr_debug("mirror to cluster %s: %s", m->cluster->cfg->name, reason);
        mirror_end(m, TR_MIRROR_FAILED, false);
        return;
    }
    mirror_pump(m);
}

static void mirror_on_io(void *owner, struct tr_upstream *up)
{
    (void)up;
    mirror_pump(owner);
}

/* The response bytes in m->in: its head (parsed for the framing, then
 * dropped), then its body, dropped as it comes. Returns false once the
 * shadow ended. */
static bool mirror_response(struct tr_mirror *m)
{
    const struct tr_h1_limits *lim = &m->ws->snap->h1_limits;
    while (m->in != NULL && tr_buf_len(m->in) > 0) {
        if (!m->uc.head_done) {
            int r = tr_h1c_head_end(&m->uc, &m->in, lim);
            if (r == 0)
                return true;
            struct tr_h1_message msg;
            memset(&msg, 0, sizeof(msg));
            msg.headers = m->w->headers; /* never nested in another parse */
            if (r < 0 ||
                tr_h1c_parse_response(&m->uc, tr_buf_head(m->in), (uint32_t)r, lim,
                                      m->is_head ? TR_H1_M_HEAD : TR_H1_M_OTHER, &msg) < 0 ||
                msg.body == TR_H1_BODY_TUNNEL) {
                mirror_end(m, TR_MIRROR_FAILED, false);
                return false;
            }
            tr_buf_consume(m->in, (uint32_t)r);
        } else {
            uint32_t n;
            if (tr_h1_body_sendable(&m->uc.resp, tr_buf_head(m->in), tr_buf_len(m->in), &n) < 0) {
                mirror_end(m, TR_MIRROR_FAILED, false);
                return false;
            }
            if (n == 0)
                return true; /* chunk framing cut by the read */
            tr_buf_consume(m->in, n);
            tr_h1_body_sent(&m->uc.resp, n);
        }
        if (m->uc.head_done && m->uc.resp.done) {
            bool whole = m->sent == m->req->end && (m->in == NULL || tr_buf_len(m->in) == 0);
            mirror_end(m, TR_MIRROR_COMPLETED,
                       whole && m->uc.resp.framing != TR_H1_BODY_UNTIL_CLOSE);
            return false;
        }
    }
    return true;
}

static void mirror_pump(struct tr_mirror *m)
{
    for (int guard = 0; guard < 64 && !m->ended; guard++) {
        if (m->sent < m->req->end &&
            tr_h1c_write(&m->uc, m->req->data, m->req->end, &m->sent) < 0) {
            mirror_end(m, TR_MIRROR_FAILED, false);
            return;
        }
        if (!mirror_response(m))
            return;
        ssize_t n = tr_h1c_read(&m->uc, &m->in);
        if (n == TR_H1C_READ_END) {
            mirror_end(m, TR_MIRROR_COMPLETED, false); /* the body ended with the connection */
            return;
        }
        if (n < 0) {
            mirror_end(m, TR_MIRROR_FAILED, false);
            return;
        }
        if (n == 0)
            return;
    }
    /* Plenty to do: go on after other connections had their turn. */
    if (!m->ended)
        tr_loop_defer(m->w->loop, &m->later, mirror_pump_later);
}

static void mirror_pump_later(struct tr_deferred *d)
{
    struct tr_mirror *m = tr_container_of(d, struct tr_mirror, later);
    if (!m->ended)
        mirror_pump(m);
}
