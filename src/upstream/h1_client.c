/* upstream/h1_client.c: the upstream side of an HTTP/1.1 request, shared by
 * the byte path and the streams (see h1_client.h). */
#include "upstream/h1_client.h"

#include <string.h>
#include <strings.h>

#include "cluster/cluster.h"
#include "event/loop.h"
#include "obs/metrics.h"
#include "runtime/worker.h"
#include "upstream/attempt.h"
#include "upstream/pool.h"

/* Outlier detection (cluster/cluster.h): what became of this attempt. */
static void report(const struct tr_h1_client *c, int outcome)
{
    if (c->ep != NULL)
        tr_endpoint_report(c->ep, outcome, tr_loop_now_ms(c->w->loop));
}

static enum tr_h1c_status connect_to(struct tr_h1_client *c, struct tr_endpoint_rt *ep, bool fresh)
{
    bool ready = false;
    const char *reason = NULL;
    c->ep = ep;
    c->tried = ep;
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
                                uint64_t lb_hash, const struct sockaddr_storage *orig)
{
    *c = (struct tr_h1_client){.w = w,
                               .cluster = cluster,
                               .ops = ops,
                               .owner = owner,
                               .fresh = fresh,
                               .lb_hash = lb_hash,
                               .orig = orig};
    bool overflow = false;
    struct tr_endpoint_rt *ep =
        tr_attempt_first(w, cluster, lb_hash, orig, &c->attempts, &overflow);
    if (ep == NULL)
        return overflow ? TR_H1C_OVERFLOW : TR_H1C_NO_HEALTHY;
    return connect_to(c, ep, fresh);
}

void tr_h1c_connect_failed(struct tr_h1_client *c)
{
    c->up = NULL; /* closed by the pool */
    if (c->ep != NULL) {
        tr_endpoint_request_end(c->ep);
        c->ep = NULL;
    }
}

enum tr_h1c_status tr_h1c_retry(struct tr_h1_client *c, const struct tr_pick_avoid *avoid)
{
    tr_h1c_release(c, false);
    c->reused = c->resent = c->conn_close = c->got_byte = c->head_done = false;
    c->head_scanned = 0;
    memset(&c->resp, 0, sizeof(c->resp));
    bool overflow = false;
    struct tr_endpoint_rt *ep =
        tr_attempt_retry(c->w, c->cluster, c->lb_hash, c->orig, avoid, &overflow);
    if (ep == NULL)
        return overflow ? TR_H1C_OVERFLOW : TR_H1C_NO_HEALTHY;
    if (c->attempts < UINT8_MAX)
        c->attempts++;
    return connect_to(c, ep, c->fresh);
}

/* The keep-alive race shows up as intermittent 503 "UC" in other meshes: the
 * server closed the pooled connection as the request went out, unread, so
 * no part of it can have been processed. */
bool tr_h1c_may_resend(const struct tr_h1_client *c)
{
    return c->reused && !c->resent && !c->got_byte;
}

enum tr_h1c_status tr_h1c_resend(struct tr_h1_client *c)
{
    tr_h1c_release(c, false);
    c->resent = true;
    c->conn_close = false;
    tr_metrics_count(c->w->metrics, TR_C_UPSTREAM_RESEND, 1);
    struct tr_endpoint_rt *ep =
        tr_attempt_first(c->w, c->cluster, c->lb_hash, c->orig, &c->attempts, NULL);
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
        report(c, TR_OUTCOME_FAILED);
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
    report(c, m->status);
    c->head_done = true;
    tr_h1_body_init(&c->resp, m->body, m->content_length, lim->max_header_bytes);
    return 0;
}

int tr_h1c_write(struct tr_h1_client *c, const char *p, uint32_t len, uint32_t *sent)
{
    while (*sent < len) {
        ssize_t n = tr_conn_write(&c->up->conn, p + *sent, len - *sent);
        if (n == TR_AGAIN)
            return 0;
        if (n < 0)
            return -1;
        *sent += (uint32_t)n;
    }
    return 1;
}

ssize_t tr_h1c_read(struct tr_h1_client *c, struct tr_buf **in)
{
    struct tr_conn *conn = &c->up->conn;
    if (!tr_conn_readable(conn))
        return 0;
    if (*in == NULL && (*in = tr_buf_get(&c->w->bufs)) == NULL)
        return 0;
    /* Compact only when full: a buffer emptied by forwarding rewinds on its
     * own, so the common case moves no bytes. */
    if (tr_buf_room(*in) == 0)
        tr_buf_compact(*in);
    if (tr_buf_room(*in) == 0)
        return 0;
    ssize_t n = tr_conn_read(conn, tr_buf_tail(*in), tr_buf_room(*in));
    if (n > 0) {
        (*in)->end += (uint32_t)n;
        c->got_byte = true;
        return n;
    }
    if (n == TR_AGAIN)
        return 0;
    /* The end of the connection: the end of an until-close body (also
     * without a TLS close_notify, which many servers, and our own closing
     * sessions, never send), else a response cut short. */
    if (c->head_done && conn->rx_eof && tr_h1_body_eof(&c->resp))
        return TR_H1C_READ_END;
    return TR_H1C_READ_FAILED;
}

int tr_h1c_head_end(struct tr_h1_client *c, struct tr_buf **in, const struct tr_h1_limits *lim)
{
    struct tr_buf *b = *in;
    if (b == NULL || tr_buf_len(b) == 0)
        return 0;
    int r = tr_h1_head_end(tr_buf_head(b), tr_buf_len(b), lim, 0, &c->head_scanned);
    if (r > 0) {
        c->head_scanned = 0;
        return r;
    }
    if (r < 0) /* over a limit, or malformed already while scanning (a bare LF) */
        return r == TR_H1_E_HEADERS_TOO_LARGE ? -TR_H1C_HEAD_TOO_LARGE : -TR_H1C_BAD_HEAD;
    if (tr_buf_len(b) < b->cap)
        return 0; /* room to read more (tr_h1c_read compacts) */
    if (b->cap >= lim->max_header_bytes + 1)
        return -TR_H1C_HEAD_TOO_LARGE;
    /* A head may be larger than a pool buffer: room for the largest. */
    struct tr_buf *big = tr_buf_get_sized(&c->w->bufs, lim->max_header_bytes + 1);
    if (big == NULL)
        return -TR_H1C_HEAD_TOO_LARGE; /* for the memory we have */
    tr_buf_append(big, tr_buf_head(b), tr_buf_len(b));
    tr_buf_put(&c->w->bufs, b);
    *in = big;
    return 0;
}

struct tr_h1c_reply tr_h1c_reply(enum tr_h1c_status st, const char *connect_reason)
{
    switch (st) {
    case TR_H1C_NO_HEALTHY:
        return (struct tr_h1c_reply){503, TR_RF_UH, "no healthy upstream\n", NULL};
    case TR_H1C_OVERFLOW:
        return (struct tr_h1c_reply){503, TR_RF_UO, NULL, "overflow"};
    case TR_H1C_CLOSED:
        return (struct tr_h1c_reply){503, TR_RF_UC, NULL, "connection termination"};
    case TR_H1C_BAD_HEAD:
    case TR_H1C_BAD_BODY:
        return (struct tr_h1c_reply){502, TR_RF_UPE, "upstream sent an invalid response\n", NULL};
    case TR_H1C_HEAD_TOO_LARGE:
        return (struct tr_h1c_reply){502, TR_RF_UPE, "upstream response head too large\n", NULL};
    case TR_H1C_FAILED:
    default:
        return (struct tr_h1c_reply){
            503, TR_RF_UF, NULL, connect_reason != NULL ? connect_reason : "connection failure"};
    }
}

void tr_h1c_release(struct tr_h1_client *c, bool reusable)
{
    if (c->w != NULL) /* NULL: never started */
        tr_h1_body_release(&c->resp, &c->w->bufs);
    if (c->up != NULL) {
        tr_pool_release(c->up, reusable && !c->conn_close);
        c->up = NULL;
    }
    if (c->ep != NULL) {
        tr_endpoint_request_end(c->ep);
        c->ep = NULL;
    }
}
