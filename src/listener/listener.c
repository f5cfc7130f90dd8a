#include "listener/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "detect/detect.h"
#include "identity/identity.h"
#include "listener/capture.h"
#include "net/sock.h"
#include "proxy/session.h"
#include "router/sni_route.h"
#include "runtime/worker.h"

const char *tr_session_phase_name(enum tr_session_phase p)
{
    static const char *const names[] = {"detect", "handshake", "http", "tcp", "h2", "closed"};
    return (unsigned)p < sizeof(names) / sizeof(names[0]) ? names[p] : "?";
}

static void session_free_now(struct tr_deferred *d)
{
    struct tr_session *s = tr_container_of(d, struct tr_session, free_later);
    struct tr_wsnap *ws = s->ws;
    struct tr_worker *w = s->w;
    /* A wake queued after the close (a stream's, an upstream's) runs no more. */
    tr_loop_cancel(w->loop, &s->pump_later);
    free(s);
    tr_wsnap_release(ws);
}

void tr_session_close(struct tr_session *s)
{
    if (s->phase == TR_PH_CLOSED)
        return;
    /* Whatever the phase holds (an upstream connection, its buffers) is
     * released here, so every path that ends a connection is safe. */
    if (s->phase == TR_PH_HTTP)
        tr_http_session_release(s);
    else if (s->phase == TR_PH_TCP)
        tr_tcp_session_release(s);
    else if (s->phase == TR_PH_H2) {
        tr_h2_session_release(s);
        tr_loop_cancel(s->w->loop, &s->h2.flush_later); /* s is freed after this batch */
    }
    s->phase = TR_PH_CLOSED;
    struct tr_worker *w = s->w;
    tr_timer_cancel(w->loop, &s->timer);
    tr_conn_close(w->loop, &s->down, true);
    tr_buf_put(&w->bufs, s->rx);
    tr_buf_put(&w->bufs, s->tx);
    s->rx = s->tx = NULL;
    tr_metrics_count(w->metrics, TR_C_DOWNSTREAM_CX_ACTIVE, -1);
    tr_worker_session_remove(w, &s->link);
    tr_loop_defer(w->loop, &s->free_later, session_free_now);
}

static void session_drain(struct tr_session_link *l)
{
    struct tr_session *s = tr_container_of(l, struct tr_session, link);
    s->draining = true;
    /* Connections not yet past detection or handshake carry no request. */
    if (s->phase == TR_PH_DETECT || s->phase == TR_PH_HANDSHAKE)
        tr_session_close(s);
}

static void start_app_protocol(struct tr_session *s);

static void on_handshake_io(struct tr_io *io, uint32_t events);

static void start_handshake(struct tr_session *s)
{
    const struct tr_snapshot *snap = s->ws->snap;
    /* TERMINATE: the first context until the ClientHello's SNI picks one. */
    const struct tr_tls_sni_table *sni = &snap->sni[s->lidx];
    struct tr_tls_ctx *ctx = sni->n > 0 ? sni->choices[0].ctx : snap->tls[s->lcfg->tls];
    SSL *ssl = SSL_new(tr_tls_ctx_server(ctx));
    if (ssl == NULL) {
        tr_session_close(s);
        return;
    }
    if (sni->n > 0)
        tr_tls_server_select(ssl, sni);
    if (s->lcfg->protocol == TR_LPROTO_TCP && s->lcfg->tls_mode == TR_TLS_TERMINATE)
        tr_tls_server_no_alpn(ssl);
    SSL_set_accept_state(ssl);
    tr_conn_start_tls(&s->down, ssl);
    s->phase = TR_PH_HANDSHAKE;
    s->down.io.cb = on_handshake_io;
    tr_timer_set(s->w->loop, &s->timer, s->lcfg->request_timeout_ms);
    on_handshake_io(&s->down.io, 0);
}

/* A handshake step that waited for the next turn (tr_worker_handshake_budget). */
static void handshake_later(struct tr_deferred *d)
{
    struct tr_session *s = tr_container_of(d, struct tr_session, pump_later);
    if (s->phase == TR_PH_HANDSHAKE)
        on_handshake_io(&s->down.io, 0);
}

static void on_handshake_io(struct tr_io *io, uint32_t events)
{
    struct tr_session *s = tr_container_of(io, struct tr_session, down.io);
    tr_conn_on_events(&s->down, events);
    /* Only a step with bytes to work on costs anything. */
    if (s->down.rx_ready && !tr_worker_handshake_budget(s->w)) {
        tr_metrics_count(s->w->metrics, TR_C_TLS_HANDSHAKES_DEFERRED, 1);
        tr_loop_defer(s->w->loop, &s->pump_later, handshake_later);
        return;
    }
    int rc = tr_conn_handshake(&s->down);
    if (rc == TR_AGAIN)
        return;
    if (rc < 0) {
        const char *reason = tr_tls_failure_reason(s->down.ssl);
        tr_metrics_tls_failure(s->w->metrics, 0, reason);
        if (strcmp(reason, "protocol") == 0 && s->lcfg->tls_mode == TR_TLS_STRICT)
            tr_metrics_count(s->w->metrics, TR_C_PLAINTEXT_REFUSED, 1);
        tr_warn("listener %s: TLS handshake from %s failed: %s", s->lcfg->name, s->peer_ip, reason);
        tr_session_close(s);
        return;
    }
    /* A step deferred for the budget may still be queued (the handshake
     * finished on an I/O event instead): it must not hold pump_later, which
     * the application protocol queues its own work on from now on. */
    tr_loop_cancel(s->w->loop, &s->pump_later);
    if (s->lcfg->tls_mode == TR_TLS_TERMINATE) {
        start_app_protocol(s); /* a client from outside the mesh: no peer identity */
        return;
    }
    char id[512];
    if (tr_identity_peer_id(s->down.ssl, id, sizeof(id)) > 0)
        s->principal = tr_metrics_intern(id);
    if (s->labels.reporter == TR_REPORTER_DESTINATION) {
        s->labels.mtls = TR_SEC_MUTUAL_TLS;
        s->labels.source_principal = s->principal;
    }
    start_app_protocol(s);
}

static void on_detect_timer(struct tr_timer *t);

/* Peeks at what the client sent first, leaving it in the socket. Returns
 * the bytes seen, or 0 when there is nothing yet or the session was closed
 * (the caller just returns). */
static ssize_t peek_first_bytes(struct tr_session *s, unsigned char *buf, size_t cap)
{
    ssize_t n = recv(s->down.io.fd, buf, cap, MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        tr_session_close(s);
        return 0;
    }
    return n < 0 ? 0 : n;
}

static void on_detect_io(struct tr_io *io, uint32_t events)
{
    struct tr_session *s = tr_container_of(io, struct tr_session, down.io);
    tr_conn_on_events(&s->down, events);
    unsigned char peek[24];
    ssize_t n = peek_first_bytes(s, peek, sizeof(peek));
    if (n <= 0)
        return;
    enum tr_detected d = tr_detect_protocol(peek, (size_t)n);
    if (d == TR_DETECT_NEED_MORE)
        return;
    s->down.rx_ready = true;
    tr_timer_cancel(s->w->loop, &s->timer);
    if (d == TR_DETECT_TLS) {
        if (s->lcfg->tls_mode == TR_TLS_DISABLE || s->lcfg->tls < 0) {
            tr_session_close(s);
            return;
        }
        start_handshake(s);
        return;
    }
    if (s->lcfg->tls_mode == TR_TLS_STRICT) {
        tr_metrics_count(s->w->metrics, TR_C_PLAINTEXT_REFUSED, 1);
        tr_warn("listener %s: plaintext connection from %s refused (mTLS STRICT)", s->lcfg->name,
                s->peer_ip);
        tr_session_close(s);
        return;
    }
    if (s->lcfg->protocol == TR_LPROTO_AUTO && d == TR_DETECT_OPAQUE) {
        if (!tr_tcp_session_has_destination(s->lcfg)) {
            tr_session_close(s);
            return;
        }
        tr_tcp_session_start(s);
        return;
    }
    start_app_protocol(s);
}

/* TLS passthrough by SNI (listeners[].sni_routes): the ClientHello is
 * peeked, never consumed, until tr_detect_sni can answer; then the
 * connection starts as TCP with the rule it chose (or the listener's
 * default: s->sni_route -1). The bytes go upstream as the client sent them.
 * A ClientHello is at most one record (detect.h): the peek is bounded. */
static void on_sni_io(struct tr_io *io, uint32_t events)
{
    struct tr_session *s = tr_container_of(io, struct tr_session, down.io);
    tr_conn_on_events(&s->down, events);
    unsigned char peek[TR_SNI_PEEK_MAX];
    ssize_t n = peek_first_bytes(s, peek, sizeof(peek));
    if (n <= 0)
        return;
    const char *name = NULL;
    size_t len = 0;
    enum tr_sni_result r = tr_detect_sni(peek, (size_t)n, &name, &len);
    if (r == TR_SNI_NEED_MORE)
        return;
    s->down.rx_ready = true;
    tr_timer_cancel(s->w->loop, &s->timer);
    s->sni_route = -1;
    if (r == TR_SNI_FOUND)
        s->sni_route = (int16_t)tr_sni_router_match(s->ws->snap->sni_routes[s->lidx], name, len);
    s->sni_malformed = r == TR_SNI_MALFORMED;
    tr_debug("listener %s: connection from %s: ClientHello %s%s%.*s, rule %d", s->lcfg->name,
             s->peer_ip, tr_sni_result_name(r), r == TR_SNI_FOUND ? " " : "", (int)len,
             name != NULL ? name : "", s->sni_route);
    if (r == TR_SNI_FOUND)
        s->peeked_sni = (tr_str){name, (uint32_t)len};
    tr_tcp_session_start(s);
    s->peeked_sni = (tr_str){0};
}

static void on_detect_timer(struct tr_timer *t)
{
    struct tr_session *s = tr_container_of(t, struct tr_session, timer);
    /* SNI routes, no complete ClientHello in time: the listener's default
     * (a server-first protocol), or closed (counted as no route). */
    if (s->phase == TR_PH_DETECT && s->lcfg->n_sni_routes > 0) {
        s->sni_route = -1;
        tr_tcp_session_start(s);
        return;
    }
    /* Nothing arrived: a server-first protocol, if the listener has a TCP
     * destination and does not require mTLS. */
    if (s->phase == TR_PH_DETECT && s->lcfg->protocol != TR_LPROTO_HTTP &&
        tr_tcp_session_has_destination(s->lcfg) && s->lcfg->tls_mode != TR_TLS_STRICT) {
        tr_tcp_session_start(s);
        return;
    }
    if (s->phase == TR_PH_HANDSHAKE)
        tr_metrics_tls_failure(s->w->metrics, 0, "timeout");
    tr_session_close(s);
}

static void start_app_protocol(struct tr_session *s)
{
    if (s->down.ssl != NULL && s->lcfg->protocol != TR_LPROTO_TCP) {
        const unsigned char *alpn = NULL;
        unsigned alpn_len = 0;
        SSL_get0_alpn_selected(s->down.ssl, &alpn, &alpn_len);
        if (alpn_len == 2 && memcmp(alpn, "h2", 2) == 0) {
            tr_h2_session_start(s);
            return;
        }
    }
    switch (s->lcfg->protocol) {
    case TR_LPROTO_TCP:
        tr_tcp_session_start(s);
        return;
    case TR_LPROTO_HTTP:
    case TR_LPROTO_AUTO:
    default:
        tr_http_session_start(s);
        return;
    }
}

/* Both in network byte order: whether dst is the capture listener's own
 * address (a connection that was not redirected, or that a redirect sent
 * back to the capture port): handing it anywhere could only loop. */
static bool capture_is_self(const struct tr_cfg_addr *self, const struct sockaddr_storage *dst)
{
    if (self->ss.ss_family != dst->ss_family)
        return false;
    if (dst->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&self->ss, *b = (const void *)dst;
        return a->sin6_port == b->sin6_port &&
               (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) ||
                memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0);
    }
    const struct sockaddr_in *a = (const void *)&self->ss, *b = (const void *)dst;
    return a->sin_port == b->sin_port &&
           (a->sin_addr.s_addr == INADDR_ANY || a->sin_addr.s_addr == b->sin_addr.s_addr);
}

/* A capture listener's connection: the virtual listener it goes to (>= 0),
 * -1 for passthrough (*dst set), or -2 when it was closed. */
static int capture_route(struct tr_worker *w, const struct tr_snapshot *snap, int cidx, int fd,
                         struct sockaddr_storage *dst)
{
    const struct tr_listener_cfg *cl = &snap->cfg->listeners[cidx];
    int rc = tr_capture_original_dst(fd, dst);
    const char *why = NULL;
    int v = -1;
    if (rc < 0)
        why = "no original destination (not redirected)";
    else if (capture_is_self(&cl->addr, dst))
        why = "addressed to the capture listener itself";
    else if ((v = tr_capture_lookup(snap->capture[cidx], dst)) >= 0)
        return v;
    else if (cl->original_destination->unmatched == TR_CAPTURE_REJECT)
        why = "no listener for it (unmatched: reject)";
    if (why == NULL)
        return -1;
    char text[64] = "?";
    if (rc == 0)
        tr_sock_addr_str(dst, text, sizeof(text));
    tr_debug("listener %s: captured connection to %s closed: %s", cl->name, text, why);
    tr_metrics_count(w->metrics, TR_C_CAPTURE_REJECTED, 1);
    close(fd);
    return -2;
}

static void accept_one(struct tr_listener_rt *l, int fd, const struct sockaddr_storage *peer)
{
    struct tr_worker *w = l->w;
    struct tr_wsnap *ws = w->ws;
    const struct tr_config *cfg = ws->snap->cfg;
    if (w->n_sessions >= cfg->limits.max_connections || l->cfg_idx >= (int)cfg->n_listeners) {
        close(fd);
        return;
    }
    /* A capture listener hands the connection to a virtual listener, which
     * serves it exactly as if it had accepted it itself. */
    int lidx = l->cfg_idx;
    struct sockaddr_storage orig;
    bool passthrough = false;
    if (cfg->listeners[lidx].original_destination != NULL) {
        int v = capture_route(w, ws->snap, lidx, fd, &orig);
        if (v == -2)
            return;
        if (v >= 0)
            lidx = v;
        passthrough = v == -1;
    }
    struct tr_session *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(fd);
        return;
    }
    s->w = w;
    s->ws = ws;
    tr_wsnap_use(ws);
    s->lidx = lidx;
    s->lcfg = &cfg->listeners[lidx];
    s->labels = ws->listener_labels[lidx];
    memcpy(&s->peer, peer, sizeof(s->peer));
    tr_sock_addr_ip(peer, s->peer_ip, sizeof(s->peer_ip));
    if (lidx != l->cfg_idx && !passthrough) { /* handed over by a capture listener */
        s->has_orig_dst = true;
        memcpy(&s->orig_dst, &orig, sizeof(orig));
    }
    s->link.drain = session_drain;
    tr_worker_session_add(w, &s->link);
    tr_timer_init(&s->timer, on_detect_timer);
    tr_conn_init_raw(&s->down, fd, on_detect_io);
    s->down.rx_ready = false;
    s->phase = TR_PH_DETECT;
    tr_metrics_count(w->metrics, TR_C_DOWNSTREAM_CX_TOTAL, 1);
    tr_metrics_count(w->metrics, TR_C_DOWNSTREAM_CX_ACTIVE, 1);
    if (tr_loop_add(w->loop, &s->down.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) < 0) {
        s->down.io.fd = -1;
        close(fd);
        tr_session_close(s);
        return;
    }
    if (passthrough) {
        tr_tcp_session_start_passthrough(s, &orig);
        return;
    }
    const struct tr_listener_cfg *lc = s->lcfg;
    s->sni_route = -1;
    if (lc->n_sni_routes > 0) {
        /* The wait for a ClientHello: short where silence can go to a
         * default (a server-first protocol), else the request deadline. */
        s->down.io.cb = on_sni_io;
        tr_timer_set(w->loop, &s->timer,
                     tr_tcp_session_has_destination(lc) ? lc->detect_timeout_ms
                                                        : lc->request_timeout_ms);
        return;
    }
    if (lc->tls_mode == TR_TLS_TERMINATE) {
        /* TLS only: plaintext fails the handshake ("protocol"). */
        s->down.rx_ready = true;
        start_handshake(s);
        return;
    }
    bool need_detect = lc->tls_mode == TR_TLS_PERMISSIVE || lc->protocol == TR_LPROTO_AUTO;
    if (lc->tls_mode == TR_TLS_STRICT && lc->protocol != TR_LPROTO_AUTO)
        need_detect = true; /* to refuse plaintext with a clear reason */
    if (need_detect) {
        /* The short detection deadline only matters where silence means a
         * server-first protocol to pass through; elsewhere a slow client
         * gets the request deadline like on any HTTP listener. */
        bool server_first = lc->protocol == TR_LPROTO_AUTO && tr_tcp_session_has_destination(lc) &&
                            lc->tls_mode != TR_TLS_STRICT;
        tr_timer_set(w->loop, &s->timer,
                     server_first ? lc->detect_timeout_ms : lc->request_timeout_ms);
        return; /* on_detect_io runs on the first bytes */
    }
    s->down.rx_ready = true; /* try a read at once: the request often came with the SYN-ACK */
    start_app_protocol(s);
}

void tr_listener_on_accept_closed(struct tr_io *io, uint32_t events)
{
    (void)io;
    (void)events;
}

void tr_listener_on_retry(struct tr_timer *t)
{
    struct tr_listener_rt *l = tr_container_of(t, struct tr_listener_rt, retry);
    tr_listener_on_accept(&l->io, EPOLLIN);
}

void tr_listener_on_accept(struct tr_io *io, uint32_t events)
{
    struct tr_listener_rt *l = tr_container_of(io, struct tr_listener_rt, io);
    if (io->fd < 0)
        return;
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen;
        int fd = tr_sock_accept(io->fd, &peer, &plen);
        if (fd < 0) {
            if (fd == -EAGAIN || fd == -EINVAL)
                return;
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
                /* Connections stay queued and no new edge will announce
                 * them: try again shortly. */
                tr_warn("accept: %s; retrying in 100 ms", strerror(-fd));
                tr_timer_set(l->w->loop, &l->retry, 100);
                return;
            }
            continue; /* ECONNABORTED and friends: next one */
        }
        accept_one(l, fd, &peer);
    }
}
