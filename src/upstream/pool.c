#include "upstream/pool.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "identity/identity.h"
#include "net/sock.h"
#include "obs/metrics.h"
#include "runtime/worker.h"
#include "upstream/h2_upconn.h"

const char *tr_upstream_state_name(enum tr_upstream_state s)
{
    static const char *const names[] = {"connecting", "handshaking", "idle", "busy", "closed"};
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

static void upstream_free_now(struct tr_deferred *d)
{
    struct tr_upstream *up = tr_container_of(d, struct tr_upstream, free_later);
    struct tr_endpoint_rt *ep = up->ep;
    tr_loop_cancel(up->w->loop, &up->handshake_later);
    free(up);
    tr_endpoint_conn_drop(ep);
}

static void idle_unlink(struct tr_upstream *up)
{
    struct tr_endpoint_rt *ep = up->ep;
    if (up->prev != NULL)
        up->prev->next = up->next;
    else
        ep->idle = up->next;
    if (up->next != NULL)
        up->next->prev = up->prev;
    up->next = up->prev = NULL;
    ep->n_idle--;
}

/* An HTTP/1.1 connection being established holds one request waiting
 * (circuit_breakers.max_pending_requests) until it is up or has failed. */
static void pending_done(struct tr_upstream *up)
{
    if (up->pending) {
        up->pending = false;
        up->ep->state->pending_requests--;
    }
}

static void upstream_close(struct tr_upstream *up)
{
    if (up->state == TR_UP_CLOSED)
        return;
    if (up->state == TR_UP_IDLE)
        idle_unlink(up);
    up->state = TR_UP_CLOSED;
    tr_timer_cancel(up->w->loop, &up->timer);
    tr_conn_close(up->w->loop, &up->conn, true);
    pending_done(up);
    up->ep->state->connections--;
    up->ep->n_conns--;
    tr_metrics_count(up->w->metrics, TR_C_UPSTREAM_CX_ACTIVE, -1);
    /* Freed after the current event batch: epoll may still hold an event for it. */
    tr_loop_defer(up->w->loop, &up->free_later, upstream_free_now);
}

static void upstream_fail(struct tr_upstream *up, int err, const char *reason)
{
    const struct tr_upstream_owner_ops *ops = up->ops;
    void *owner = up->owner;
    char addr[64];
    tr_debug("upstream %s: %s (%d)", up->ep->addr_text, reason, err);
    (void)addr;
    tr_endpoint_connect_failed(up->ep, tr_loop_now_ms(up->w->loop));
    upstream_close(up);
    if (ops != NULL)
        ops->on_ready(owner, up, err, reason);
}

static void upstream_handshake(struct tr_upstream *up);

static void upstream_handshake_later(struct tr_deferred *d)
{
    struct tr_upstream *up = tr_container_of(d, struct tr_upstream, handshake_later);
    if (up->state == TR_UP_HANDSHAKING)
        upstream_handshake(up);
}

static void upstream_handshake(struct tr_upstream *up)
{
    /* Only a step with bytes to work on costs anything (the first step only
     * writes the ClientHello, which is cheap, but it is not worth telling
     * apart). */
    if (up->conn.rx_ready && !tr_worker_handshake_budget(up->w)) {
        tr_metrics_count(up->w->metrics, TR_C_TLS_HANDSHAKES_DEFERRED, 1);
        tr_loop_defer(up->w->loop, &up->handshake_later, upstream_handshake_later);
        return;
    }
    int rc = tr_conn_handshake(&up->conn);
    if (rc == TR_AGAIN)
        return;
    if (rc < 0) {
        const char *reason = tr_tls_failure_reason(up->conn.ssl);
        tr_metrics_tls_failure(up->w->metrics, 1, reason);
        tr_warn("upstream TLS handshake with %s (cluster %s) failed: %s", up->ep->addr_text,
                up->ep->cluster->cfg->name, reason);
        upstream_fail(up, -EPROTO, reason);
        return;
    }
    tr_metrics_count(up->w->metrics, TR_C_UPSTREAM_TLS_HANDSHAKES, 1);
    if (SSL_session_reused(up->conn.ssl))
        tr_metrics_count(up->w->metrics, TR_C_UPSTREAM_TLS_RESUMED, 1);
    char id[512];
    if (tr_identity_peer_id(up->conn.ssl, id, sizeof(id)) > 0)
        up->peer_id = tr_metrics_intern(id);
    tr_timer_cancel(up->w->loop, &up->timer);
    up->state = TR_UP_BUSY;
    pending_done(up);
    tr_endpoint_connect_ok(up->ep, tr_loop_now_ms(up->w->loop));
    up->ops->on_ready(up->owner, up, 0, NULL);
}

static void upstream_on_io(struct tr_io *io, uint32_t events)
{
    struct tr_upstream *up = tr_container_of(io, struct tr_upstream, conn.io);
    tr_conn_on_events(&up->conn, events);
    switch (up->state) {
    case TR_UP_CONNECTING: {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int rc = tr_sock_connect_result(up->conn.io.fd);
        if (rc < 0) {
            upstream_fail(up, rc, rc == -ECONNREFUSED ? "connect_refused" : "connect_error");
            return;
        }
        if (up->conn.ssl != NULL) {
            up->state = TR_UP_HANDSHAKING;
            upstream_handshake(up);
        } else {
            tr_timer_cancel(up->w->loop, &up->timer);
            up->state = TR_UP_BUSY;
            pending_done(up);
            tr_endpoint_connect_ok(up->ep, tr_loop_now_ms(up->w->loop));
            up->ops->on_ready(up->owner, up, 0, NULL);
        }
        return;
    }
    case TR_UP_HANDSHAKING:
        upstream_handshake(up);
        return;
    case TR_UP_IDLE:
        /* An idle connection has nothing to say: EOF, reset or stray bytes
         * all mean it can no longer carry a request. */
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            upstream_close(up);
        return;
    case TR_UP_BUSY:
        up->ops->on_io(up->owner, up);
        return;
    case TR_UP_CLOSED:
        return;
    }
}

static void upstream_on_timer(struct tr_timer *t)
{
    struct tr_upstream *up = tr_container_of(t, struct tr_upstream, timer);
    if (up->state == TR_UP_IDLE)
        upstream_close(up);
    else if (up->state == TR_UP_CONNECTING || up->state == TR_UP_HANDSHAKING)
        upstream_fail(up, -ETIMEDOUT, "connect_timeout");
}

/* The cluster is at its connection limit: an idle connection (to any of
 * its endpoints) makes room, so connections pooled to one endpoint never
 * starve the others. O(endpoints), at the limit only. */
static bool close_one_idle(const struct tr_cluster_rt *cl)
{
    for (uint32_t i = 0; i < cl->n_eps; i++) {
        struct tr_endpoint_rt *e = cl->eps[i];
        if (e->idle != NULL) {
            upstream_close(e->idle);
            return true;
        }
        if (e->n_h2conns > 0 && tr_h2_up_close_one_idle(e))
            return true;
    }
    return false;
}

/* May another connection to ep start? The endpoint's cap (pool.max_connections)
 * and the worker's share of the cluster's circuit breakers: connections, and
 * for HTTP/1.1 the requests that would wait for one to be established. */
static bool pool_admit(struct tr_worker *w, const struct tr_cluster_rt *cl,
                       const struct tr_endpoint_rt *ep, bool h2)
{
    enum tr_cluster_metric over;
    if (cl->cfg->max_connections != 0 && ep->n_conns >= cl->cfg->max_connections)
        over = TR_CM_OVERFLOW_ENDPOINT_CONNECTIONS;
    else if (cl->max_connections != 0 && ep->state->connections >= cl->max_connections &&
             !close_one_idle(cl))
        over = TR_CM_OVERFLOW_CONNECTIONS;
    else if (!h2 && cl->max_pending_requests != 0 &&
             ep->state->pending_requests >= cl->max_pending_requests)
        over = TR_CM_OVERFLOW_PENDING;
    else
        return true;
    tr_metrics_cluster(w->metrics, ep->state->name, over, 1);
    return false;
}

struct tr_upstream *tr_pool_acquire(struct tr_worker *w, struct tr_endpoint_rt *ep,
                                    const struct tr_upstream_owner_ops *ops, void *owner,
                                    bool fresh, bool h2, bool *ready, const char **reason)
{
    struct tr_cluster_rt *cl = ep->cluster;
    if (cl == NULL) {
        /* Removed from the configuration, and only an old snapshot still
         * lists it (cluster/cluster.h): no new connection. */
        *reason = "endpoint_removed";
        return NULL;
    }
    while (!fresh && !h2 && ep->idle != NULL) {
        struct tr_upstream *up = ep->idle;
        if (tr_upstream_expired(up, tr_loop_now_ms(w->loop))) {
            upstream_close(up);
            continue;
        }
        idle_unlink(up);
        tr_timer_cancel(w->loop, &up->timer);
        up->state = TR_UP_BUSY;
        up->ops = ops;
        up->owner = owner;
        up->requests++;
        *ready = true;
        return up;
    }
    if (!pool_admit(w, cl, ep, h2)) {
        *reason = "overflow";
        return NULL;
    }
    int fd = tr_sock_connect((const struct sockaddr *)&ep->addr, ep->addr_len,
                             ep->cluster->ws->snap->cfg->upstream_mark);
    if (fd < 0) {
        *reason = "connect_error";
        return NULL;
    }
    const struct tr_tcp_keepalive_cfg *ka = cl->cfg->tcp_keepalive;
    if (ka != NULL &&
        tr_sock_set_keepalive(fd, ka->time_ms / 1000, ka->interval_ms / 1000, ka->probes) < 0) {
        close(fd);
        *reason = "connect_error";
        return NULL;
    }
    struct tr_upstream *up = calloc(1, sizeof(*up));
    if (up == NULL) {
        close(fd);
        *reason = "no_memory";
        return NULL;
    }
    up->ep = ep;
    up->w = w;
    up->ops = ops;
    up->owner = owner;
    up->born_ms = tr_loop_now_ms(w->loop);
    tr_timer_init(&up->timer, upstream_on_timer);
    tr_conn_init_raw(&up->conn, fd, upstream_on_io);
    if (cl->tls != NULL) {
        const struct tr_cluster_cfg *cc = cl->cfg;
        /* What the server must prove: a mesh peer its SPIFFE ID, another
         * server one of the names (by default the SNI), unless told not to. */
        const char *const *names = (const char *const *)cc->server_ids;
        size_t n_names = cc->n_server_ids;
        if (!cc->mesh_tls) {
            names =
                cc->n_subject_alt_names > 0 ? (const char *const *)cc->subject_alt_names : &cc->sni;
            n_names = cc->insecure_skip_verify      ? 0
                      : cc->n_subject_alt_names > 0 ? cc->n_subject_alt_names
                      : cc->sni != NULL             ? 1
                                                    : 0;
        }
        SSL *ssl = SSL_new(tr_tls_ctx_client(cl->tls));
        if (ssl != NULL && cc->insecure_skip_verify)
            tr_tls_client_insecure(ssl);
        if (ssl == NULL || tr_tls_client_setup(ssl, cc->sni, names, n_names) != 0) {
            SSL_free(ssl);
            close(fd);
            free(up);
            *reason = "tls_setup";
            return NULL;
        }
        static const unsigned char alpn_h2[] = "\x02h2", alpn_h1[] = "\x08http/1.1";
        if (h2)
            SSL_set_alpn_protos(ssl, alpn_h2, sizeof(alpn_h2) - 1);
        else
            SSL_set_alpn_protos(ssl, alpn_h1, sizeof(alpn_h1) - 1);
        tr_tls_session_resume(ssl, &ep->tls_slot);
        SSL_set_connect_state(ssl);
        tr_conn_start_tls(&up->conn, ssl);
    }
    up->conn.rx_ready = false;
    up->conn.tx_ready = false;
    if (tr_loop_add(w->loop, &up->conn.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) < 0) {
        tr_conn_close(w->loop, &up->conn, false);
        free(up);
        *reason = "connect_error";
        return NULL;
    }
    up->state = TR_UP_CONNECTING;
    up->requests = h2 ? 0 : 1;
    up->pending = !h2; /* HTTP/2 streams count themselves (upstream/h2_upconn.c) */
    ep->state->pending_requests += up->pending;
    ep->state->connections++;
    ep->n_conns++;
    tr_endpoint_conn_hold(ep);
    tr_metrics_count(w->metrics, TR_C_UPSTREAM_CX_TOTAL, 1);
    tr_metrics_count(w->metrics, TR_C_UPSTREAM_CX_ACTIVE, 1);
    tr_timer_set(w->loop, &up->timer, cl->cfg->connect_timeout_ms);
    *ready = false;
    return up;
}

bool tr_upstream_expired(const struct tr_upstream *up, uint64_t now_ms)
{
    const struct tr_cluster_rt *cl = up->ep->cluster;
    uint32_t limit = cl != NULL ? cl->cfg->max_connection_duration_ms : 0;
    return limit != 0 && now_ms - up->born_ms >= limit;
}

void tr_pool_release(struct tr_upstream *up, bool reusable)
{
    struct tr_endpoint_rt *ep = up->ep;
    up->ops = NULL;
    up->owner = NULL;
    if (up->state == TR_UP_CLOSED)
        return; /* failed before it was ready: already closed */
    if (up->state != TR_UP_BUSY) {
        upstream_close(up); /* still connecting: nobody wants it any more */
        return;
    }
    uint32_t max_requests = ep->cluster->cfg->max_requests_per_connection;
    if (!reusable || up->conn.rx_eof || ep->retired || up->w->draining ||
        ep->n_idle >= ep->cluster->cfg->pool_max_idle ||
        (max_requests != 0 && up->requests >= max_requests) ||
        tr_upstream_expired(up, tr_loop_now_ms(up->w->loop))) {
        upstream_close(up);
        return;
    }
    up->state = TR_UP_IDLE;
    up->prev = NULL;
    up->next = ep->idle;
    if (ep->idle != NULL)
        ep->idle->prev = up;
    ep->idle = up;
    ep->n_idle++;
    /* Stay below the server's own idle timeout when it announced one
     * (Keep-Alive: timeout=N): a margin of a quarter, at least 250 ms. */
    uint64_t idle = ep->cluster->cfg->pool_idle_timeout_ms;
    if (up->server_idle_ms != 0) {
        uint64_t margin = up->server_idle_ms / 4 > 250 ? up->server_idle_ms / 4 : 250;
        uint64_t limit = up->server_idle_ms > margin ? up->server_idle_ms - margin : 0;
        if (limit == 0) {
            upstream_close(up);
            return;
        }
        if (limit < idle)
            idle = limit;
    }
    tr_timer_set(up->w->loop, &up->timer, idle);
    /* Bytes or EOF that arrived while it was busy but unread mean it is dead. */
    if (up->conn.rx_ready && !tr_conn_has_pending(&up->conn)) {
        char probe;
        ssize_t n = recv(up->conn.io.fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN))
            upstream_close(up);
        else if (n > 0)
            upstream_close(up); /* stray bytes: the stream is out of sync */
        else
            up->conn.rx_ready = false;
    } else if (tr_conn_has_pending(&up->conn)) {
        upstream_close(up);
    }
}

void tr_pool_close_idle(struct tr_endpoint_rt *ep)
{
    tr_h2_up_close_idle(ep);
    while (ep->idle != NULL)
        upstream_close(ep->idle);
}
