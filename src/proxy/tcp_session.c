/* proxy/tcp_session.c: opaque TCP (L4) proxying with half-close.
 *
 * A connection goes to the listener's tcp_cluster, or to one of its
 * tcp_clusters picked by weight when it starts (connect retries stay in that
 * cluster). Each direction runs independently: bytes flow until its reader
 * sees EOF, then the writer's side gets a FIN (shutdown(SHUT_WR), after
 * close_notify for TLS), and the session ends when both directions have
 * finished. When both sides are plaintext the bytes move with splice()
 * through a pipe per direction and never enter user space. The end of a
 * connection is one access log line and, once it was connected, the Istio
 * TCP metrics, both naming the picked cluster.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "filter/authz.h"
#include "proxy/authz_call.h"
#include "obs/access_log.h"
#include "net/sock.h"
#include "proxy/relay.h"
#include "proxy/session.h"
#include "router/router.h"
#include "upstream/attempt.h"
#include "upstream/pool.h"

#define SPLICE_CHUNK (64 * 1024)

static void tcp_pump(struct tr_session *s);

void tr_tcp_session_release(struct tr_session *s)
{
    struct tr_tcp_state *t = &s->tcp;
    if (t->passthrough && t->pt.io.fd >= 0) {
        tr_conn_close(s->w->loop, &t->pt, true);
        t->pt.io.fd = -1;
    }
    if (t->up != NULL) {
        tr_pool_release(t->up, false);
        t->up = NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (t->pipe_du[i] >= 0)
            close(t->pipe_du[i]);
        if (t->pipe_ud[i] >= 0)
            close(t->pipe_ud[i]);
        t->pipe_du[i] = t->pipe_ud[i] = -1;
    }
    tr_buf_put(&s->w->bufs, t->up_rx);
    t->up_rx = NULL;
}

/* What Istio calls the destination of passthrough traffic. */
#define TR_PASSTHROUGH_CLUSTER "PassthroughCluster"

static void passthrough_labels(struct tr_metric_labels *l)
{
    if (l->reporter == TR_REPORTER_SOURCE)
        l->destination_service = tr_metrics_intern(TR_PASSTHROUGH_CLUSTER);
}

static void tcp_finish(struct tr_session *s, uint16_t flags)
{
    struct tr_tcp_state *t = &s->tcp;
    struct tr_metric_labels l = s->labels;
    if (t->cluster != NULL && l.reporter == TR_REPORTER_SOURCE) {
        l.destination_service = t->cluster->service;
        l.destination_workload = t->cluster->workload;
        l.destination_namespace = t->cluster->workload_namespace;
        l.destination_principal = t->peer_id;
    }
    if (t->passthrough)
        passthrough_labels(&l);
    l.protocol = TR_REQ_PROTO_TCP;
    if (t->connected)
        tr_metrics_tcp_close(s->w->metrics, &l, flags, t->sent, t->received);
    if (s->w->access_log_fd >= 0) {
        struct tr_access_entry e = {
            .protocol = "TCP",
            .flags = flags,
            .duration_us = tr_loop_now_us(s->w->loop) - t->start_us,
            .req_bytes = t->received,
            .resp_bytes = t->sent,
            .peer = s->peer_ip,
            .principal = s->principal,
            .listener = s->lcfg->name,
            .cluster = t->passthrough       ? TR_PASSTHROUGH_CLUSTER
                       : t->cluster != NULL ? t->cluster->cfg->name
                                            : NULL,
            .upstream = t->upstream,
            .authz_policy = t->authz_policy,
            .authz_rule = t->authz_rule,
        };
        tr_access_log_write(s->w->access_log_fd, &e);
    }
    tr_session_close(s); /* releases the upstream, pipes and buffer */
}

/* Move bytes src -> dst through a pipe, with tr_relay_copy's results. */
static int splice_dir(struct tr_conn *src, struct tr_conn *dst, int pipefd[2], uint32_t *in_pipe,
                      uint64_t *count, bool *eof)
{
    int progress = 0;
    for (int i = 0; i < 16; i++) {
        if (*in_pipe > 0) {
            if (!dst->tx_ready)
                return progress;
            ssize_t n = splice(pipefd[0], NULL, dst->io.fd, NULL, *in_pipe,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0) {
                if (errno == EAGAIN) {
                    dst->tx_ready = false;
                    return progress;
                }
                return TR_RELAY_ERROR;
            }
            *in_pipe -= (uint32_t)n;
            *count += (uint64_t)n;
            progress = 1;
            continue;
        }
        if (*eof)
            return TR_RELAY_EOF;
        if (!src->rx_ready)
            return progress;
        ssize_t n = splice(src->io.fd, NULL, pipefd[1], NULL, SPLICE_CHUNK,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n == 0) {
            *eof = true;
            src->rx_eof = true;
            return TR_RELAY_EOF;
        }
        if (n < 0) {
            if (errno == EAGAIN) {
                src->rx_ready = false;
                return progress;
            }
            return TR_RELAY_ERROR;
        }
        /* A short splice does not mean the socket is drained (the pipe may
         * be full): readiness is cleared only by EAGAIN. */
        *in_pipe += (uint32_t)n;
        progress = 1;
    }
    return progress;
}

static void tcp_pump(struct tr_session *s)
{
    struct tr_tcp_state *t = &s->tcp;
    if (!t->connected || s->phase == TR_PH_CLOSED)
        return;
    struct tr_conn *up = t->passthrough ? &t->pt : &t->up->conn;
    for (int round = 0; round < 64; round++) {
        int a, b;
        if (t->splice) {
            a = t->up_shut ? 0
                           : splice_dir(&s->down, up, t->pipe_du, &t->pipe_du_bytes, &t->received,
                                        &t->down_eof);
            b = t->down_shut
                    ? 0
                    : splice_dir(up, &s->down, t->pipe_ud, &t->pipe_ud_bytes, &t->sent, &t->up_eof);
        } else {
            a = t->up_shut
                    ? 0
                    : tr_relay_copy(&s->w->bufs, &s->down, up, &s->rx, &t->received, &t->down_eof);
            b = t->down_shut
                    ? 0
                    : tr_relay_copy(&s->w->bufs, up, &s->down, &t->up_rx, &t->sent, &t->up_eof);
        }
        if (a == -2 || b == -2) {
            tcp_finish(s, a == -2 ? TR_RF_DC : TR_RF_UC);
            return;
        }
        if (a == -1 && !t->up_shut) {
            tr_conn_shutdown_write(up);
            t->up_shut = true;
        }
        if (b == -1 && !t->down_shut) {
            tr_conn_shutdown_write(&s->down);
            t->down_shut = true;
        }
        if (t->up_shut && t->down_shut) {
            tcp_finish(s, 0);
            return;
        }
        if (a <= 0 && b <= 0)
            break;
    }
    tr_timer_set(s->w->loop, &s->timer, s->lcfg->idle_timeout_ms);
}

static void tcp_on_down_io(struct tr_io *io, uint32_t events)
{
    struct tr_session *s = tr_container_of(io, struct tr_session, down.io);
    tr_conn_on_events(&s->down, events);
    tcp_pump(s);
}

static bool tcp_connect(struct tr_session *s, struct tr_endpoint_rt *ep);

static void tcp_on_up_ready(void *owner, struct tr_upstream *up, int err, const char *reason)
{
    struct tr_session *s = owner;
    struct tr_tcp_state *t = &s->tcp;
    if (err < 0) {
        t->up = NULL;
        tr_warn("listener %s: TCP upstream %s of cluster %s failed: %s", s->lcfg->name,
                up->ep->addr_text, t->cluster->cfg->name, reason);
        /* No byte went anywhere yet: try another endpoint. */
        struct tr_endpoint_rt *next =
            tr_attempt_next(s->w, t->cluster, t->lb_hash, up->ep, &t->attempts);
        if (next == NULL || !tcp_connect(s, next))
            tcp_finish(s, t->overflow ? TR_RF_UO : TR_RF_UF);
        return;
    }
    t->connected = true;
    t->peer_id = up->peer_id;
    struct tr_metric_labels l = s->labels;
    if (l.reporter == TR_REPORTER_SOURCE) {
        l.destination_service = t->cluster->service;
        l.destination_workload = t->cluster->workload;
        l.destination_namespace = t->cluster->workload_namespace;
        l.destination_principal = up->peer_id;
    }
    l.protocol = TR_REQ_PROTO_TCP;
    tr_metrics_tcp_open(s->w->metrics, &l);
    t->splice = s->down.ssl == NULL && up->conn.ssl == NULL && s->rx == NULL;
    if (t->splice) {
        if (pipe2(t->pipe_du, O_NONBLOCK | O_CLOEXEC) < 0 ||
            pipe2(t->pipe_ud, O_NONBLOCK | O_CLOEXEC) < 0)
            t->splice = false;
    }
    tcp_pump(s);
}

static void tcp_on_up_io(void *owner, struct tr_upstream *up)
{
    (void)up;
    tcp_pump(owner);
}

static const struct tr_upstream_owner_ops tcp_up_ops = {
    .on_ready = tcp_on_up_ready,
    .on_io = tcp_on_up_io,
};

/* Start the connection to ep; the connect deadline is the pool's, this
 * timer only backs it up. False: it could not even start. */
static bool tcp_connect(struct tr_session *s, struct tr_endpoint_rt *ep)
{
    struct tr_tcp_state *t = &s->tcp;
    bool ready;
    const char *reason = NULL;
    t->upstream = ep->addr_text;
    t->up = tr_pool_acquire(s->w, ep, &tcp_up_ops, s, true, false, &ready, &reason);
    if (t->up == NULL) {
        t->overflow = reason != NULL && strcmp(reason, "overflow") == 0;
        return false;
    }
    tr_timer_set(s->w->loop, &s->timer, t->cluster->cfg->connect_timeout_ms + 1000);
    return true;
}

static void tcp_on_timer(struct tr_timer *timer)
{
    struct tr_session *s = tr_container_of(timer, struct tr_session, timer);
    tcp_finish(s, s->tcp.connected ? 0 : TR_RF_UF);
}

static void tcp_drain(struct tr_session_link *l)
{
    /* Opaque streams have no request boundary: they run to the deadline. */
    struct tr_session *s = tr_container_of(l, struct tr_session, link);
    s->draining = true;
}

/* The cluster of this connection: the listener's tcp_cluster, or one of its
 * tcp_clusters by weight (the routes' pick, with the worker's PRNG). -1: none
 * (a validated model always has one). */
static int tcp_pick_cluster(struct tr_session *s)
{
    const struct tr_listener_cfg *l = s->lcfg;
    int one = l->tcp_cluster;
    const struct tr_weighted_cluster_cfg *list = l->tcp_clusters;
    size_t n = l->n_tcp_clusters;
    if (l->n_sni_routes > 0 && s->sni_route >= 0 && (size_t)s->sni_route < l->n_sni_routes) {
        const struct tr_sni_route_cfg *r = &l->sni_routes[s->sni_route];
        one = r->tcp_cluster;
        list = r->tcp_clusters;
        n = r->n_tcp_clusters;
    }
    if (n == 0)
        return one;
    int i = tr_weighted_pick(list, n, tr_worker_rand(s->w));
    return i >= 0 ? list[i].cluster : -1;
}

void tr_tcp_session_start(struct tr_session *s)
{
    struct tr_tcp_state *t = &s->tcp;
    memset(t, 0, sizeof(*t));
    t->pipe_du[0] = t->pipe_du[1] = t->pipe_ud[0] = t->pipe_ud[1] = -1;
    s->phase = TR_PH_TCP;
    s->down.io.cb = tcp_on_down_io;
    s->timer.cb = tcp_on_timer;
    s->link.drain = tcp_drain;
    s->labels.protocol = TR_REQ_PROTO_TCP;
    t->start_us = tr_loop_now_us(s->w->loop);
    const struct tr_authz *az = s->ws->snap->authz[s->lidx];
    struct tr_authz_request aq;
    if (az != NULL)
        tr_authz_conn_attrs(s, &aq);
    if (az != NULL &&
        tr_authz_denied(s, az, &aq, "TCP connection", &t->authz_policy, &t->authz_rule)) {
        tcp_finish(s, TR_RF_RBAC);
        return;
    }
    if (s->sni_malformed) {
        tcp_finish(s, TR_RF_DPE); /* sni_routes: not a well-formed ClientHello */
        return;
    }
    int ci = tcp_pick_cluster(s);
    if (ci < 0) {
        /* sni_routes: no rule took the connection, and no default */
        tcp_finish(s, s->lcfg->n_sni_routes > 0 ? TR_RF_NR : TR_RF_UH);
        return;
    }
    t->cluster = &s->ws->clusters[ci];
    /* Consistent hashing: a connection offers only its client's address. */
    struct tr_lb_request rq = {.peer = &s->peer};
    uint64_t no_cookie;
    if (t->cluster->table == NULL ||
        !tr_lb_request_hash(&t->cluster->cfg->hash, &rq, &t->lb_hash, &no_cookie))
        t->lb_hash = (uint64_t)tr_worker_rand(s->w) << 32 | tr_worker_rand(s->w);
    struct tr_endpoint_rt *ep =
        tr_attempt_first(s->w, t->cluster, t->lb_hash, tr_session_orig_dst(s), &t->attempts, NULL);
    if (ep == NULL) {
        tcp_finish(s, TR_RF_UH);
        return;
    }
    if (!tcp_connect(s, ep))
        tcp_finish(s, t->overflow ? TR_RF_UO : TR_RF_UF);
}

/* ---- capture passthrough ---- */

static void pt_on_io(struct tr_io *io, uint32_t events)
{
    struct tr_tcp_state *t = tr_container_of(io, struct tr_tcp_state, pt.io);
    struct tr_session *s = tr_container_of(t, struct tr_session, tcp);
    /* An event queued in the batch that closed the session (its struct is
     * freed only after the batch). */
    if (t->pt.io.fd < 0 || s->phase != TR_PH_TCP)
        return;
    tr_conn_on_events(&t->pt, events);
    if (t->connected) {
        tcp_pump(s);
        return;
    }
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        return;
    int rc = tr_sock_connect_result(t->pt.io.fd);
    if (rc < 0) {
        tr_warn("listener %s: passthrough to %s failed: %s", s->lcfg->name, t->pt_addr,
                strerror(-rc));
        tcp_finish(s, TR_RF_UF);
        return;
    }
    t->connected = true;
    struct tr_metric_labels l = s->labels;
    passthrough_labels(&l);
    l.protocol = TR_REQ_PROTO_TCP;
    tr_metrics_tcp_open(s->w->metrics, &l);
    t->splice = s->rx == NULL && pipe2(t->pipe_du, O_NONBLOCK | O_CLOEXEC) == 0 &&
                pipe2(t->pipe_ud, O_NONBLOCK | O_CLOEXEC) == 0;
    tcp_pump(s);
}

void tr_tcp_session_start_passthrough(struct tr_session *s, const struct sockaddr_storage *dst)
{
    struct tr_tcp_state *t = &s->tcp;
    memset(t, 0, sizeof(*t));
    t->pipe_du[0] = t->pipe_du[1] = t->pipe_ud[0] = t->pipe_ud[1] = -1;
    t->passthrough = true;
    t->pt.io.fd = -1;
    s->phase = TR_PH_TCP;
    s->down.io.cb = tcp_on_down_io;
    s->timer.cb = tcp_on_timer;
    s->link.drain = tcp_drain;
    s->labels.protocol = TR_REQ_PROTO_TCP;
    t->start_us = tr_loop_now_us(s->w->loop);
    tr_sock_addr_str(dst, t->pt_addr, sizeof(t->pt_addr));
    t->upstream = t->pt_addr;
    tr_metrics_count(s->w->metrics, TR_C_CAPTURE_PASSTHROUGH, 1);
    socklen_t len =
        dst->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int fd = tr_sock_connect((const struct sockaddr *)dst, len, s->ws->snap->cfg->upstream_mark);
    if (fd < 0) {
        tr_warn("listener %s: passthrough to %s failed: %s", s->lcfg->name, t->pt_addr,
                strerror(-fd));
        tcp_finish(s, TR_RF_UF);
        return;
    }
    tr_conn_init_raw(&t->pt, fd, pt_on_io);
    if (tr_loop_add(s->w->loop, &t->pt.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) < 0) {
        close(fd);
        t->pt.io.fd = -1;
        tcp_finish(s, TR_RF_UF);
        return;
    }
    tr_timer_set(s->w->loop, &s->timer, s->lcfg->original_destination->connect_timeout_ms);
}
