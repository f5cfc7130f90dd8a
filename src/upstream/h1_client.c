/* upstream/h1_client.c: the connection side of an HTTP/1.1 upstream
 * request, shared by the byte path and the streams (see h1_client.h). */
#include "upstream/h1_client.h"

#include <string.h>
#include <strings.h>

#include "cluster/cluster.h"
#include "event/loop.h"
#include "obs/metrics.h"
#include "runtime/worker.h"
#include "upstream/attempt.h"
#include "upstream/pool.h"

static enum tr_h1c_status connect_to(struct tr_h1_client *c, struct tr_endpoint_rt *ep, bool fresh)
{
    bool ready = false;
    const char *reason = NULL;
    c->ep = ep;
    c->addr = ep->addr_text;
    tr_endpoint_request_begin(ep);
    c->up = tr_pool_acquire(c->w, ep, c->ops, c->owner, fresh, false, &ready, &reason);
    if (c->up == NULL) {
        tr_endpoint_request_end(ep);
        c->ep = NULL;
        return reason != NULL && strcmp(reason, "overflow") == 0 ? TR_H1C_OVERFLOW : TR_H1C_FAILED;
    }
    c->reused = ready;
    if (!ready)
        return TR_H1C_CONNECTING;
    tr_metrics_count(c->w->metrics, TR_C_UPSTREAM_REUSED, 1);
    return TR_H1C_READY;
}

enum tr_h1c_status tr_h1c_start(struct tr_h1_client *c, struct tr_worker *w,
                                struct tr_cluster_rt *cluster,
                                const struct tr_upstream_owner_ops *ops, void *owner, bool fresh,
                                uint64_t lb_hash)
{
    *c = (struct tr_h1_client){
        .w = w, .cluster = cluster, .ops = ops, .owner = owner, .fresh = fresh, .lb_hash = lb_hash};
    bool overflow = false;
    struct tr_endpoint_rt *ep = tr_attempt_first(w, cluster, lb_hash, &c->attempts, &overflow);
    if (ep == NULL)
        return overflow ? TR_H1C_OVERFLOW : TR_H1C_NO_HEALTHY;
    return connect_to(c, ep, fresh);
}

enum tr_h1c_status tr_h1c_connect_failed(struct tr_h1_client *c)
{
    struct tr_endpoint_rt *failed = c->ep;
    c->up = NULL; /* closed by the pool */
    if (c->ep != NULL) {
        tr_endpoint_request_end(c->ep);
        c->ep = NULL;
    }
    struct tr_endpoint_rt *next =
        tr_attempt_next(c->w, c->cluster, c->lb_hash, failed, &c->attempts);
    if (next == NULL)
        return TR_H1C_FAILED;
    return connect_to(c, next, c->fresh);
}

/* The keep-alive race shows up as intermittent 503 "UC" in other meshes: the
 * server closed the pooled connection as the request went out, unread, so
 * no part of it can have been processed. */
enum tr_h1c_status tr_h1c_resend(struct tr_h1_client *c, bool held)
{
    if (!c->reused || c->resent || !held)
        return TR_H1C_FAILED;
    tr_h1c_release(c, false);
    c->resent = true;
    c->conn_close = false;
    tr_metrics_count(c->w->metrics, TR_C_UPSTREAM_RESEND, 1);
    struct tr_endpoint_rt *ep = tr_attempt_first(c->w, c->cluster, c->lb_hash, &c->attempts, NULL);
    if (ep == NULL)
        return TR_H1C_NO_HEALTHY;
    return connect_to(c, ep, true);
}

/* "timeout=N" of a Keep-Alive header value, in ms; 0 if absent or invalid. */
static uint32_t keep_alive_timeout_ms(tr_str v)
{
    for (uint32_t i = 0; i + 8 <= v.len; i++) {
        if (strncasecmp(v.p + i, "timeout=", 8) != 0 ||
            (i > 0 && v.p[i - 1] != ' ' && v.p[i - 1] != ','))
            continue;
        uint32_t secs = 0, j = i + 8;
        if (j >= v.len || v.p[j] < '0' || v.p[j] > '9')
            return 0;
        for (; j < v.len && v.p[j] >= '0' && v.p[j] <= '9' && secs < 86400; j++)
            secs = secs * 10 + (uint32_t)(v.p[j] - '0');
        return secs * 1000;
    }
    return 0;
}

int tr_h1c_parse_response(struct tr_h1_client *c, const char *p, uint32_t head_len,
                          const struct tr_h1_limits *lim, enum tr_h1_method method,
                          struct tr_h1_message *m)
{
    int rc = tr_h1_parse_response(p, head_len, lim, method, m);
    if (rc < 0) {
        /* Envoy's codec error is a reset: a local-origin failure. */
        tr_endpoint_report(c->ep, TR_OUTCOME_FAILED, tr_loop_now_ms(c->w->loop));
        return rc;
    }
    if (m->flags & TR_H1_F_CONN_CLOSE)
        c->conn_close = true;
    /* The pool keeps an idle connection below the server's own timeout. */
    int ka = tr_h1_find_header(m, "keep-alive", 10);
    if (ka >= 0 && c->up != NULL)
        c->up->server_idle_ms = keep_alive_timeout_ms(m->headers[ka].value);
    if (m->status >= 100 && m->status < 200 && m->status != 101)
        return 0; /* interim: the final head follows */
    tr_endpoint_report(c->ep, m->status, tr_loop_now_ms(c->w->loop));
    c->body = (uint8_t)m->body;
    c->remaining = m->content_length;
    tr_h1_chunked_init(&c->chunked, lim->max_header_bytes);
    return 0;
}

void tr_h1c_release(struct tr_h1_client *c, bool reusable)
{
    if (c->up != NULL) {
        tr_pool_release(c->up, reusable && !c->conn_close);
        c->up = NULL;
    }
    if (c->ep != NULL) {
        tr_endpoint_request_end(c->ep);
        c->ep = NULL;
    }
}
