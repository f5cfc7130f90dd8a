#include "upstream/h2_upconn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "filter/fields.h"
#include "obs/metrics.h"
#include "runtime/worker.h"
#include "upstream/pool.h"

/* Output is staged in chunks of this size: one write per chunk. */
#define TX_CHUNK (16u * 1024)

struct up_slot {
    const struct tr_h2_up_ops *ops; /* NULL: free slot */
    void *owner;
    int32_t id;                  /* 0 until the request is submitted */
    bool end_stream;             /* request has no body */
    bool waits;                  /* counted as pending: its connection is not up yet */
    const struct tr_fields *req; /* the owner's, until submitted */
};

struct tr_h2_upconn {
    struct tr_worker *w;
    struct tr_endpoint_rt *ep;
    struct tr_upstream *up; /* NULL once closed */
    struct tr_h2 *h2;
    struct tr_h2_upconn *prev, *next; /* ep->h2conns */
    struct up_slot *slots;
    uint32_t cap, used;
    uint32_t opened;  /* streams opened on it (pool.max_requests_per_connection) */
    uint32_t pending; /* slots waiting for submit_pending */
    bool ready;       /* connected (and TLS done) */
    bool closing;     /* no new streams: GOAWAY seen or sent, or failed */
    bool closed;
    char *tx; /* TX_CHUNK bytes of output not yet written */
    uint32_t tx_off, tx_len;
    char *rx;
    struct tr_timer idle;
    struct tr_deferred flush_later;
    struct tr_deferred free_later;
};

static void upconn_flush(struct tr_h2_upconn *c);
static void upconn_close(struct tr_h2_upconn *c, const char *reason, bool refused_all);

static struct up_slot *slot_by_id(struct tr_h2_upconn *c, int32_t id)
{
    struct up_slot *s = c->h2 != NULL ? tr_h2_stream_user(c->h2, id) : NULL;
    return s != NULL && s->ops != NULL && s->id == id ? s : NULL;
}

/* The stream no longer waits for its connection to be established. */
static void slot_waited(struct tr_h2_upconn *c, struct up_slot *s)
{
    if (s->waits) {
        s->waits = false;
        c->ep->state->pending_requests--;
    }
}

static void slot_release(struct tr_h2_upconn *c, struct up_slot *s)
{
    slot_waited(c, s);
    if (s->id != 0 && c->h2 != NULL)
        tr_h2_set_stream_user(c->h2, s->id, NULL);
    if (s->id == 0)
        c->pending--;
    s->req = NULL;
    s->ops = NULL;
    s->owner = NULL;
    s->id = 0;
    c->used--;
    if (c->used == 0 && !c->closed) {
        if (c->closing || c->ep->retired || c->w->draining)
            upconn_close(c, NULL, false);
        else
            tr_timer_set(c->w->loop, &c->idle, c->ep->cluster->cfg->pool_idle_timeout_ms);
    }
}

static void flush_later_cb(struct tr_deferred *d);

static void schedule_flush(struct tr_h2_upconn *c)
{
    if (!c->closed && c->ready)
        tr_loop_defer(c->w->loop, &c->flush_later, flush_later_cb);
}

/* ---- codec callbacks ---- */

static int cb_headers(void *owner, int32_t id, const struct tr_h2_header *h, size_t n,
                      bool is_trailers, bool end_stream)
{
    struct tr_h2_upconn *c = owner;
    struct up_slot *s = slot_by_id(c, id);
    if (s == NULL)
        return 1; /* cancelled by its owner: reset */
    s->ops->on_headers(s->owner, h, n, is_trailers, end_stream);
    return 0;
}

static int cb_data(void *owner, int32_t id, const uint8_t *data, size_t len, bool end_stream)
{
    struct tr_h2_upconn *c = owner;
    struct up_slot *s = slot_by_id(c, id);
    if (s == NULL)
        return 1;
    s->ops->on_data(s->owner, data, len, end_stream);
    return 0;
}

static void cb_stream_close(void *owner, int32_t id, uint32_t error_code)
{
    struct tr_h2_upconn *c = owner;
    struct up_slot *s = slot_by_id(c, id);
    if (s == NULL)
        return;
    const struct tr_h2_up_ops *ops = s->ops;
    void *o = s->owner;
    slot_release(c, s);
    ops->on_close(o, error_code, error_code == 7 /* REFUSED_STREAM */,
                  error_code != 0 ? "stream_reset" : NULL);
}

static void cb_goaway(void *owner, int32_t last_stream_id, uint32_t error_code)
{
    struct tr_h2_upconn *c = owner;
    (void)error_code;
    c->closing = true;
    /* Streams above last_stream_id were not processed: they close with
     * REFUSED_STREAM from the codec (on_stream_close). */
    (void)last_stream_id;
}

static void cb_writable(void *owner, int32_t id)
{
    struct tr_h2_upconn *c = owner;
    struct up_slot *s = slot_by_id(c, id);
    if (s != NULL && s->ops->on_writable != NULL)
        s->ops->on_writable(s->owner);
}

static const struct tr_h2_ops upconn_codec_ops = {
    .on_headers = cb_headers,
    .on_data = cb_data,
    .on_stream_close = cb_stream_close,
    .on_goaway = cb_goaway,
    .on_writable = cb_writable,
};

/* ---- connection ---- */

static void upconn_free_now(struct tr_deferred *d)
{
    struct tr_h2_upconn *c = tr_container_of(d, struct tr_h2_upconn, free_later);
    tr_loop_cancel(c->w->loop, &c->flush_later);
    tr_h2_free(c->h2);
    free(c->slots);
    free(c->tx);
    free(c->rx);
    free(c);
}

/* Close the connection and fail every stream still on it. refused_all: no
 * request on it can have been processed (it never got established). */
static void upconn_close(struct tr_h2_upconn *c, const char *reason, bool refused_all)
{
    if (c->closed)
        return;
    c->closed = true;
    c->closing = true;
    tr_timer_cancel(c->w->loop, &c->idle);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        c->ep->h2conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->ep->n_h2conns--;
    if (c->up != NULL) {
        tr_pool_release(c->up, false);
        c->up = NULL;
    }
    /* The codec is freed with the connection, after the event batch: this
     * may run inside one of its callbacks (a stream closed), and its
     * session must outlive the call. */
    for (uint32_t i = 0; i < c->cap; i++) {
        struct up_slot *s = &c->slots[i];
        if (s->ops == NULL)
            continue;
        const struct tr_h2_up_ops *ops = s->ops;
        void *o = s->owner;
        bool refused = refused_all || s->id == 0;
        slot_release(c, s);
        ops->on_close(o, 2 /* INTERNAL_ERROR */, refused,
                      reason != NULL ? reason : "connection_termination");
    }
    tr_loop_defer(c->w->loop, &c->free_later, upconn_free_now);
}

static void submit_pending(struct tr_h2_upconn *c)
{
    for (uint32_t i = 0; i < c->cap && !c->closed && c->pending > 0; i++) {
        struct up_slot *s = &c->slots[i];
        if (s->ops == NULL || s->id != 0)
            continue;
        int32_t id = tr_h2_submit_request(c->h2, s->req->v, s->req->n, s->end_stream);
        s->req = NULL;
        if (id < 0) {
            const struct tr_h2_up_ops *ops = s->ops;
            void *o = s->owner;
            slot_release(c, s);
            ops->on_close(o, 7, id == TR_H2_E_REFUSED, "stream_refused");
            continue;
        }
        s->id = id;
        c->pending--;
        tr_h2_set_stream_user(c->h2, id, s);
        /* Body bytes the owner offered before the stream existed wait in
         * the owner (tr_h2_up_send took none): now they can go. */
        if (s->ops->on_writable != NULL)
            s->ops->on_writable(s->owner);
    }
}

/* Move codec output to the socket. */
static void upconn_flush(struct tr_h2_upconn *c)
{
    while (!c->closed && c->up != NULL) {
        if (c->tx_off == c->tx_len) {
            c->tx_off = c->tx_len = 0;
            c->tx_len = (uint32_t)tr_h2_output(c->h2, (uint8_t *)c->tx, TX_CHUNK);
            if (c->tx_len == 0)
                break;
        }
        ssize_t n = tr_conn_write(&c->up->conn, c->tx + c->tx_off, c->tx_len - c->tx_off);
        if (n == TR_AGAIN)
            return;
        if (n < 0) {
            upconn_close(c, "connection_termination", false);
            return;
        }
        c->tx_off += (uint32_t)n;
    }
    if (!c->closed && c->h2 != NULL && !tr_h2_alive(c->h2) && c->tx_off == c->tx_len)
        upconn_close(c, "connection_termination", false);
}

static void flush_later_cb(struct tr_deferred *d)
{
    upconn_flush(tr_container_of(d, struct tr_h2_upconn, flush_later));
}

static void upconn_read(struct tr_h2_upconn *c)
{
    for (int guard = 0; guard < 64 && !c->closed; guard++) {
        if (!tr_conn_readable(&c->up->conn))
            return;
        ssize_t n = tr_conn_read(&c->up->conn, c->rx, TX_CHUNK);
        if (n == TR_AGAIN)
            return;
        if (n <= 0) {
            upconn_close(c, "connection_termination", false);
            return;
        }
        ssize_t fed = tr_h2_feed(c->h2, (const uint8_t *)c->rx, (size_t)n);
        if (fed < 0) {
            tr_warn("upstream %s (cluster %s): HTTP/2 protocol error; closing", c->ep->addr_text,
                    c->ep->cluster->cfg->name);
            upconn_flush(c); /* our GOAWAY, best effort */
            upconn_close(c, "protocol_error", false);
            return;
        }
    }
}

static void on_up_io(void *owner, struct tr_upstream *up)
{
    struct tr_h2_upconn *c = owner;
    (void)up;
    upconn_read(c);
    if (!c->closed)
        upconn_flush(c);
}

static void on_up_ready(void *owner, struct tr_upstream *up, int err, const char *reason)
{
    struct tr_h2_upconn *c = owner;
    if (err < 0) {
        c->up = NULL; /* closed by the pool */
        upconn_close(c, reason, true);
        return;
    }
    c->ready = true;
    for (uint32_t i = 0; i < c->cap; i++) {
        struct up_slot *s = &c->slots[i];
        slot_waited(c, s);
        if (s->ops != NULL && s->ops->on_connected != NULL)
            s->ops->on_connected(s->owner, up->peer_id);
    }
    submit_pending(c);
    upconn_read(c);
    if (!c->closed)
        upconn_flush(c);
}

static const struct tr_upstream_owner_ops upconn_up_ops = {
    .on_ready = on_up_ready,
    .on_io = on_up_io,
};

static void on_idle_timer(struct tr_timer *t)
{
    struct tr_h2_upconn *c = tr_container_of(t, struct tr_h2_upconn, idle);
    if (c->used == 0)
        upconn_close(c, NULL, false);
}

static struct tr_h2_upconn *upconn_new(struct tr_worker *w, struct tr_endpoint_rt *ep, bool fresh,
                                       const char **reason)
{
    if (ep->cluster == NULL) {
        *reason = "endpoint_removed"; /* see tr_pool_acquire */
        return NULL;
    }
    const struct tr_cluster_cfg *cc = ep->cluster->cfg;
    struct tr_h2_upconn *c = calloc(1, sizeof(*c));
    if (c != NULL) {
        c->cap = cc->h2_max_streams;
        c->slots = calloc(c->cap, sizeof(*c->slots));
        c->tx = malloc(TX_CHUNK);
        c->rx = malloc(TX_CHUNK);
    }
    if (c == NULL || c->slots == NULL || c->tx == NULL || c->rx == NULL) {
        if (c != NULL) {
            free(c->slots);
            free(c->tx);
            free(c->rx);
            free(c);
        }
        *reason = "no_memory";
        return NULL;
    }
    c->w = w;
    c->ep = ep;
    struct tr_h2_limits lim = ep->cluster->ws->snap->h2_limits;
    c->h2 = tr_h2_new(TR_H2_CLIENT, &lim, &upconn_codec_ops, c);
    bool ready = false;
    c->up = c->h2 != NULL ? tr_pool_acquire(w, ep, &upconn_up_ops, c, fresh, true, &ready, reason)
                          : NULL;
    if (c->up == NULL) {
        if (c->h2 == NULL)
            *reason = "no_memory";
        tr_h2_free(c->h2);
        free(c->slots);
        free(c->tx);
        free(c->rx);
        free(c);
        return NULL;
    }
    tr_timer_init(&c->idle, on_idle_timer);
    c->next = ep->h2conns;
    if (ep->h2conns != NULL)
        ep->h2conns->prev = c;
    ep->h2conns = c;
    ep->n_h2conns++;
    return c;
}

int tr_h2_up_open(struct tr_worker *w, struct tr_endpoint_rt *ep, bool fresh,
                  const struct tr_h2_up_ops *ops, void *owner, const struct tr_fields *req,
                  bool end_stream, struct tr_h2_up_stream *out, const char **reason)
{
    struct tr_h2_upconn *c = NULL;
    if (!fresh) {
        for (struct tr_h2_upconn *it = ep->h2conns, *next; it != NULL; it = next) {
            next = it->next;
            /* pool.max_connection_duration: no new stream; it closes now
             * if idle, else when its streams are done (slot_release). */
            if (!it->closing && it->up != NULL &&
                tr_upstream_expired(it->up, tr_loop_now_ms(w->loop))) {
                it->closing = true;
                if (it->used == 0) {
                    upconn_close(it, NULL, false);
                    continue;
                }
            }
            if (!it->closing && it->used < it->cap) {
                c = it;
                break;
            }
        }
    }
    /* A stream on a connection not up yet waits: circuit_breakers'
     * max_pending_requests (the connection limits are tr_pool_acquire's). */
    const struct tr_cluster_rt *cl = ep->cluster;
    if ((c == NULL || !c->ready) && cl != NULL && cl->max_pending_requests != 0 &&
        ep->state->pending_requests >= cl->max_pending_requests) {
        tr_metrics_cluster(w->metrics, ep->state->name, TR_CM_OVERFLOW_PENDING, 1);
        *reason = "overflow";
        return -1;
    }
    if (c == NULL) {
        c = upconn_new(w, ep, fresh, reason);
        if (c == NULL)
            return -1;
    }
    uint32_t i = 0;
    while (c->slots[i].ops != NULL)
        i++;
    struct up_slot *s = &c->slots[i];
    s->ops = ops;
    s->owner = owner;
    s->id = 0;
    s->end_stream = end_stream;
    s->req = req;
    s->waits = !c->ready;
    ep->state->pending_requests += s->waits;
    c->used++;
    c->pending++;
    /* Its last stream: no new ones, and it closes when they are done. */
    uint32_t max_requests = ep->cluster->cfg->max_requests_per_connection;
    if (max_requests != 0 && ++c->opened >= max_requests)
        c->closing = true;
    tr_timer_cancel(w->loop, &c->idle);
    out->c = c;
    out->slot = i;
    if (c->ready) {
        if (ops->on_connected != NULL)
            ops->on_connected(owner, c->up->peer_id);
        submit_pending(c);
        schedule_flush(c);
    }
    return 0;
}

static struct up_slot *live_slot(struct tr_h2_up_stream s)
{
    if (s.c == NULL || s.c->closed || s.slot >= s.c->cap || s.c->slots[s.slot].ops == NULL)
        return NULL;
    return &s.c->slots[s.slot];
}

bool tr_h2_up_ready(struct tr_h2_up_stream s)
{
    struct up_slot *sl = live_slot(s);
    return sl != NULL && sl->id != 0;
}

ssize_t tr_h2_up_send(struct tr_h2_up_stream s, const uint8_t *data, size_t len, bool end_stream)
{
    struct up_slot *sl = live_slot(s);
    if (sl == NULL || sl->id == 0)
        return sl == NULL ? -1 : 0; /* not submitted yet: on_writable follows */
    ssize_t n = tr_h2_send_data(s.c->h2, sl->id, data, len, end_stream);
    if (n < 0)
        return -1;
    schedule_flush(s.c);
    return n;
}

int tr_h2_up_trailers(struct tr_h2_up_stream s, const struct tr_h2_header *h, size_t n)
{
    struct up_slot *sl = live_slot(s);
    if (sl == NULL || sl->id == 0)
        return -1;
    int rc = tr_h2_submit_trailers(s.c->h2, sl->id, h, n);
    schedule_flush(s.c);
    return rc < 0 ? -1 : 0;
}

void tr_h2_up_consume(struct tr_h2_up_stream s, size_t len)
{
    struct up_slot *sl = live_slot(s);
    if (sl == NULL || sl->id == 0)
        return;
    tr_h2_consume(s.c->h2, sl->id, len);
    schedule_flush(s.c);
}

void tr_h2_up_cancel(struct tr_h2_up_stream s)
{
    struct up_slot *sl = live_slot(s);
    if (sl == NULL)
        return;
    struct tr_h2_upconn *c = s.c;
    if (sl->id != 0) {
        tr_h2_reset_stream(c->h2, sl->id, 8 /* CANCEL */);
        schedule_flush(c);
    }
    slot_release(c, sl);
}

void tr_h2_up_close_idle(struct tr_endpoint_rt *ep)
{
    for (struct tr_h2_upconn *c = ep->h2conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->used == 0) {
            upconn_close(c, NULL, false);
        } else if (!c->closing && c->h2 != NULL) {
            c->closing = true;
            tr_h2_goaway(c->h2, 0);
            schedule_flush(c);
        }
    }
}

bool tr_h2_up_close_one_idle(struct tr_endpoint_rt *ep)
{
    for (struct tr_h2_upconn *c = ep->h2conns; c != NULL; c = c->next) {
        if (c->used == 0 && !c->closed) {
            upconn_close(c, NULL, false);
            return true;
        }
    }
    return false;
}
