/* proxy/http_session.c: HTTP/1.1 downstream <-> HTTP/1.1 upstream.
 *
 * One request at a time per downstream connection: pipelined requests wait
 * in rx, unparsed, until the current response is complete, so a response can
 * never be paired with the wrong request. Everything is driven by
 * http_pump(), which makes all the progress the current readiness allows in
 * both directions and is called from the downstream and upstream event
 * callbacks alike.
 *
 * Bytes: rx (downstream in) -> [head rewritten into reqout] -> upstream;
 * upstream -> resp -> [head rewritten into tx] -> downstream. Bodies are
 * forwarded straight from rx and resp, never copied, except that a small
 * request body that arrives with its head is appended to reqout so the
 * request goes out in one write and can be re-sent whole (see resend()).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "filter/authz.h"
#include "filter/fields.h"
#include "filter/headers.h"
#include "net/sock.h"
#include "obs/access_log.h"
#include "proxy/decide.h"
#include "proxy/relay.h"
#include "proxy/session.h"
#include "proxy/stream.h"
#include "router/router.h"
#include "upstream/h1_client.h"
#include "upstream/ext_authz.h"
#include "upstream/mirror.h"
#include "upstream/pool.h"
#include "upstream/retry.h"

static void http_pump(struct tr_session *s);
static void http_pump_later(struct tr_deferred *d);
static void on_up_ready(void *owner, struct tr_upstream *up, int err, const char *reason);
static void on_up_io(void *owner, struct tr_upstream *up);
static void http_on_retry_timer(struct tr_timer *t);

static const struct tr_upstream_owner_ops http_up_ops = {
    .on_ready = on_up_ready,
    .on_io = on_up_io,
};

static struct tr_buf *buf_get_sized(struct tr_worker *w, size_t size)
{
    return tr_buf_get_sized(&w->bufs, size);
}

static void buf_release(struct tr_worker *w, struct tr_buf **b)
{
    if (*b != NULL) {
        tr_buf_put(&w->bufs, *b);
        *b = NULL;
    }
}

/* Replace *b (possibly NULL) by a buffer of at least size bytes holding the
 * same bytes: a head, or a local reply, may outgrow a pool buffer. Returns
 * false if memory is exhausted (*b is unchanged). */
static bool buf_grow(struct tr_worker *w, struct tr_buf **b, size_t size)
{
    struct tr_buf *big = buf_get_sized(w, size);
    if (big == NULL)
        return false;
    if (*b != NULL) {
        tr_buf_append(big, tr_buf_head(*b), tr_buf_len(*b));
        buf_release(w, b);
    }
    *b = big;
    return true;
}

static const struct tr_listener_cfg *lcfg(struct tr_session *s)
{
    return s->lcfg;
}

/* ---- timers ---- */

static void http_on_timer(struct tr_timer *t);

static void arm_idle(struct tr_session *s)
{
    tr_timer_set(s->w->loop, &s->timer, lcfg(s)->idle_timeout_ms);
}

/* ---- request completion ---- */

static void upstream_detach(struct tr_session *s, bool reusable)
{
    tr_h1c_release(&s->http.uc, reusable);
}

static void log_and_count(struct tr_session *s);

void tr_http_session_release(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    /* A request that started and was never accounted for ends here (the
     * client went away, an upstream failed mid-response...). */
    if (h->start_us != 0 && !h->logged && !h->lingering) {
        if (h->status == 0 || !h->got_response_byte)
            h->flags |= TR_RF_DC;
        log_and_count(s);
    }
    if (h->stream != NULL) {
        struct tr_stream *st = h->stream;
        h->stream = NULL;
        tr_stream_down_close(st, true);
    }
    tr_h1_body_release(&h->req_body, &s->w->bufs);
    upstream_detach(s, false);
    tr_retry_end(&h->rt, s->w->loop);
    tr_mirrors_drop(&h->mirrors);
    buf_release(s->w, &h->reqout);
    buf_release(s->w, &h->resp);
    tr_ext_authz_free(h->ext_authz);
    h->ext_authz = NULL;
}

static void log_and_count(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    if (h->logged)
        return;
    h->logged = true;
    struct tr_metric_labels l = s->labels;
    if (h->cluster != NULL && l.reporter == TR_REPORTER_SOURCE) {
        l.destination_service = h->cluster->service;
        l.destination_workload = h->cluster->workload;
        l.destination_namespace = h->cluster->workload_namespace;
        l.destination_principal = h->peer_id;
    }
    uint64_t dur = tr_loop_now_us(s->w->loop) - h->start_us;
    tr_metrics_http(s->w->metrics, &l, h->status, h->flags, dur, h->req_bytes, h->resp_bytes);
    if (s->w->access_log_fd >= 0) {
        struct tr_access_entry e = {
            .method = h->method,
            .path = h->path,
            .authority = h->authority,
            .request_id = h->request_id,
            .status = h->status,
            .flags = h->flags,
            .duration_us = dur,
            .req_bytes = h->req_bytes,
            .resp_bytes = h->resp_bytes,
            .peer = s->peer_ip,
            .principal = s->principal,
            .listener = lcfg(s)->name,
            .cluster = h->cluster != NULL ? h->cluster->cfg->name : NULL,
            .upstream = h->cluster != NULL && h->route != NULL ? h->uc.addr : NULL,
            .authz_policy = h->authz_policy,
            .authz_rule = h->authz_rule,
            .truncated = h->log_cut,
        };
        tr_access_log_write(s->w->access_log_fd, &e);
    }
}

static void begin_request(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    uint32_t requests = h->requests;
    struct tr_buf *keep_rx = s->rx;
    memset(h, 0, sizeof(*h));
    h->requests = requests;
    s->rx = keep_rx;
    h->rq = TR_RQ_HEAD;
    h->rs = TR_RS_NONE;
    if (s->rx != NULL && tr_buf_len(s->rx) == 0)
        buf_release(s->w, &s->rx);
    if (s->rx != NULL)
        tr_timer_set(s->w->loop, &s->timer, lcfg(s)->request_timeout_ms);
    else
        arm_idle(s);
}

/* The response is fully written: account, recycle, and go on or close. */
static void finish_request(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    log_and_count(s);
    bool up_reusable = h->uc.resp.framing != TR_H1_BODY_UNTIL_CLOSE && h->rq == TR_RQ_DONE &&
                       (h->resp == NULL || tr_buf_len(h->resp) == 0) && !h->local_reply;
    upstream_detach(s, up_reusable);
    tr_retry_end(&h->rt, s->w->loop);
    tr_mirrors_drop(&h->mirrors); /* launched when the request completed, else incomplete */
    buf_release(s->w, &h->reqout);
    buf_release(s->w, &h->resp);
    tr_ext_authz_free(h->ext_authz);
    h->ext_authz = NULL;
    if (!h->keep_alive || s->draining || h->rq != TR_RQ_DONE) {
        s->closing = true;
        return;
    }
    begin_request(s);
}

/* ---- local replies ---- */

/* Room a head needs for the fields a route's header edit appends. */
static size_t edit_bytes(const struct tr_header_edit *e)
{
    return e != NULL ? e->emit_bytes + 4u * e->n_emit : 0;
}

/* The answer when a route's header edits take a head past limits.max_headers
 * or max_header_bytes: never a head cut short. */
static void edit_over_limit(struct tr_session *s, bool response)
{
    const struct tr_h1_limits *lim = &s->ws->snap->h1_limits;
    tr_warn("listener %s: the route's %s header edits take the %s past limits.max_headers (%u) or "
            "limits.max_header_bytes (%u)",
            lcfg(s)->name, response ? "response" : "request", response ? "response" : "request",
            lim->max_headers, lim->max_header_bytes);
    tr_metrics_limit(s->w->metrics, TR_LIMIT_MAX_HEADERS);
}

/* extra: fields of the route's own answer (tr_decision_fields); the CORS
 * fields of an allowed origin are added to every local reply after CORS
 * (h->cors is set then), as Envoy's CORS filter adds them to local replies. */
static void local_reply_with(struct tr_session *s, int status, uint16_t flags, const char *body,
                             const struct tr_h2_header *extra, size_t n_extra)
{
    struct tr_http_state *h = &s->http;
    struct tr_h2_header f[TR_DECISION_FIELDS + TR_CORS_RESPONSE_FIELDS];
    size_t n = 0, fields_len = 0;
    for (size_t i = 0; i < n_extra && i < TR_DECISION_FIELDS; i++)
        f[n++] = extra[i];
    n += tr_cors_response_fields(&h->cors, f + n);
    for (size_t i = 0; i < n; i++)
        fields_len += f[i].name.len + f[i].value.len + 4;
    upstream_detach(s, false);
    tr_retry_end(&h->rt, s->w->loop);
    tr_mirrors_drop(&h->mirrors); /* the request did not complete */
    buf_release(s->w, &h->reqout);
    buf_release(s->w, &h->resp);
    if (h->rq != TR_RQ_DONE)
        h->keep_alive = false; /* unread request bytes: the stream cannot be resynchronized */
    if (s->draining)
        h->keep_alive = false;
    h->local_reply = true;
    h->status = (uint16_t)status;
    h->flags |= flags;
    /* A direct response body (or a Location) may be larger than a pool buffer. */
    size_t need = (body != NULL ? strlen(body) : 0) + 256 + fields_len +
                  (s->tx ? tr_buf_len(s->tx) : 0) + edit_bytes(h->resp_edit);
    if ((s->tx == NULL || s->tx->cap < need) && !buf_grow(s->w, &s->tx, need)) {
        tr_session_close(s);
        return;
    }
    if (tr_filter_local_response_with(s->tx, status, body, h->keep_alive, h->is_head, h->resp_edit,
                                      f, n) < 0) {
        tr_session_close(s);
        return;
    }
    h->resp_bytes = body != NULL && !h->is_head ? strlen(body) : 0;
    h->rs = TR_RS_DONE;
    if (h->rq != TR_RQ_DONE) {
        h->rq = TR_RQ_DONE;
        h->keep_alive = false;
    }
}

static void local_reply(struct tr_session *s, int status, uint16_t flags, const char *body)
{
    local_reply_with(s, status, flags, body, NULL, 0);
}

/* ---- local route actions (filter/route_action.h) ---- */

static tr_str request_scheme(const struct tr_session *s)
{
    return s->principal != NULL || s->down.ssl != NULL ? TR_STR_LIT("https") : TR_STR_LIT("http");
}

/* The route's own answer (proxy/decide.h). A redirect's Location is built
 * from the request into a buffer of the pool for as long as the reply is
 * formatted. */
static void local_answer(struct tr_session *s, const struct tr_decision *d, tr_str host,
                         tr_str path)
{
    struct tr_h2_header extra[TR_DECISION_FIELDS];
    struct tr_buf *lb = NULL;
    tr_str location = {0};
    if (d->redirect) {
        struct tr_location loc;
        struct tr_redirect_request rq = {request_scheme(s), host, path};
        tr_redirect_location(d->route, &rq, &loc);
        if ((lb = buf_get_sized(s->w, loc.len)) == NULL) {
            tr_session_close(s);
            return;
        }
        tr_location_write(&loc, tr_buf_tail(lb));
        location = tr_str_from(tr_buf_tail(lb), loc.len);
    }
    local_reply_with(s, d->status, d->flags, d->body, extra,
                     tr_decision_fields(d, location, extra));
    buf_release(s->w, &lb);
}

/* A fault delay: nothing moves until http_on_timer ends it. */
static void fault_hold(struct tr_session *s, uint32_t ms)
{
    if (ms == 0 || s->phase != TR_PH_HTTP)
        return;
    s->http.fault_wait = true;
    tr_timer_set(s->w->loop, &s->timer, ms);
}

/* ---- downstream I/O ---- */

/* Write tx to the client. Returns true if tx is now empty. */
static bool flush_tx(struct tr_session *s, bool *progress)
{
    while (s->tx != NULL && tr_buf_len(s->tx) > 0) {
        ssize_t n = tr_conn_write(&s->down, tr_buf_head(s->tx), tr_buf_len(s->tx));
        if (n == TR_AGAIN)
            return false;
        if (n < 0) {
            s->http.flags |= TR_RF_DC;
            tr_session_close(s);
            return false;
        }
        tr_buf_consume(s->tx, (uint32_t)n);
        *progress = true;
    }
    buf_release(s->w, &s->tx);
    return true;
}

/* Read from the client into rx. Returns bytes read, 0 if nothing (not ready
 * or no room), -1 on EOF or error (already handled by the caller's policy). */
static ssize_t read_down(struct tr_session *s)
{
    if (!tr_conn_readable(&s->down) || s->down.rx_eof)
        return 0;
    if (s->rx == NULL && (s->rx = tr_buf_get(&s->w->bufs)) == NULL)
        return 0;
    if (tr_buf_room(s->rx) == 0)
        tr_buf_compact(s->rx);
    if (tr_buf_room(s->rx) == 0)
        return 0;
    ssize_t n = tr_conn_read(&s->down, tr_buf_tail(s->rx), tr_buf_room(s->rx));
    if (n > 0) {
        s->rx->end += (uint32_t)n;
        return n;
    }
    if (n == TR_AGAIN)
        return 0;
    return -1;
}

/* ---- request head ---- */

/* Split an absolute-form target "http://host[:port]/path" into host and path. */
static bool split_absolute(tr_str target, tr_str *host, tr_str *path)
{
    const char *p = target.p, *end = target.p + target.len;
    const char *scheme_end = memchr(p, ':', target.len);
    if (scheme_end == NULL || end - scheme_end < 3 || scheme_end[1] != '/' || scheme_end[2] != '/')
        return false;
    const char *h = scheme_end + 3;
    const char *slash = memchr(h, '/', (size_t)(end - h));
    const char *hend = slash != NULL ? slash : end;
    *host = tr_str_from(h, (size_t)(hend - h));
    *path = slash != NULL ? tr_str_from(slash, (size_t)(end - slash)) : TR_STR_LIT("/");
    return true;
}

static void start_upstream(struct tr_session *s);
static void go_upstream(struct tr_session *s);

/* Build the upstream request head in reqout. Returns false on failure
 * (a local reply has been set). */
static bool build_request(struct tr_session *s, const struct tr_h1_message *m,
                          const struct tr_route_cfg *route, const struct tr_header_edit *edit,
                          tr_str path, tr_str host)
{
    struct tr_http_state *h = &s->http;
    const struct tr_listener_cfg *l = lcfg(s);
    struct tr_path_rewrite tgt = tr_route_rewrite_path(route, path);
    if (tgt.failed) {
        local_reply(s, 500, 0, "the route's path rewrite could not be made\n");
        return false;
    }
    /* HTTP/1.0 may omit Host; HTTP/1.1 upstreams require one: name the
     * destination service (or the cluster). */
    if (m->host_idx < 0 && host.len == 0) {
        const char *dest =
            h->cluster->cfg->service != NULL ? h->cluster->cfg->service : h->cluster->cfg->name;
        host = tr_str_from(dest, strlen(dest));
    }
    struct tr_request_rewrite rw = {
        .target = tgt.head,
        .target_tail = tgt.tail,
        .host = route->host_rewrite != NULL
                    ? tr_str_from(route->host_rewrite, strlen(route->host_rewrite))
                    : (m->host_idx < 0 ? host : (tr_str){NULL, 0}),
        .peer_ip = s->peer_ip,
        .xff = l->xff,
        .xfp = l->xfp ? (s->principal != NULL || s->down.ssl != NULL ? "https" : "http") : NULL,
        .request_id = l->request_id,
        .request_id_out = h->request_id,
        .rnd = {((uint64_t)tr_worker_rand(s->w) << 32) | tr_worker_rand(s->w),
                ((uint64_t)tr_worker_rand(s->w) << 32) | tr_worker_rand(s->w)},
        .upgrade = h->upgrade,
        .edit = edit,
        .max_fields = s->ws->snap->h1_limits.max_headers,
        .max_bytes = s->ws->snap->h1_limits.max_header_bytes,
    };
    size_t need = m->head_len + 512 + tgt.head.len + tgt.tail.len + edit_bytes(edit);
    h->reqout = buf_get_sized(s->w, need);
    int rc = h->reqout != NULL ? tr_filter_request_head(h->reqout, NULL, m, &rw) : -1;
    if (rc == TR_FILTER_OVER_LIMIT) {
        edit_over_limit(s, false);
        local_reply(s, 500, TR_RF_HO, "request header edits exceed the proxy's limits\n");
        return false;
    }
    if (rc < 0) {
        local_reply(s, 431, TR_RF_DPE, "request header fields too large\n");
        return false;
    }
    return true;
}

/* The whole request reached the proxy: the shadows go, and a try in
 * flight starts its per_try_timeout. */
static void request_done(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    h->rq = TR_RQ_DONE;
    if (h->rs != TR_RS_NONE) /* the upstream started (a fault delay is over) */
        tr_mirrors_launch(&h->mirrors);
    if (h->uc.up != NULL && h->rs == TR_RS_HEAD)
        tr_retry_try_armed(&h->rt, s->w->loop);
}

/* Move request body bytes from rx into reqout while the whole request stays
 * there, so it can go again (the keep-alive race, a retry) and small
 * requests go out in one write: what came with the head while the buffer
 * has room and, when the route's retry policy wants the body (hold_body),
 * all of it up to max_body_for_retry. Beyond that the rest goes from rx as
 * it comes (forward_request_body) and the request is no longer held. */
static void absorb_body(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    if (h->rq != TR_RQ_BODY || s->rx == NULL || !h->retryable)
        return;
    uint32_t n;
    if (tr_h1_body_sendable(&h->req_body, tr_buf_head(s->rx), tr_buf_len(s->rx), &n) < 0) {
        local_reply(s, 400, TR_RF_DPE, "bad chunked request body\n");
        return;
    }
    if (n == 0 && h->hold_body)
        return; /* chunk framing cut by the read: more first */
    if (n > tr_buf_room(h->reqout)) {
        uint32_t max = h->hold_body ? h->rt.policy->max_body : 0;
        size_t want = (size_t)h->reqout->end + n, cap = (size_t)h->reqout->cap * 2;
        if ((uint64_t)h->body_held + n > max ||
            !buf_grow(s->w, &h->reqout, cap > want ? cap : want)) {
            h->retryable = false; /* what was validated stays so for forward_request_body */
            return;
        }
    }
    memcpy(tr_buf_tail(h->reqout), tr_buf_head(s->rx), n);
    tr_mirrors_body(&h->mirrors, tr_buf_head(s->rx), n);
    h->reqout->end += n;
    h->body_held += n;
    tr_buf_consume(s->rx, n);
    h->req_bytes += n;
    tr_h1_body_sent(&h->req_body, n);
    if (h->req_body.done)
        request_done(s);
    else if (!h->hold_body)
        h->retryable = false;
}

/* The route leads to an HTTP/2 cluster: the exchange becomes a tr_stream,
 * with this connection as its HTTP/1.1 downstream side (see the end of this
 * file). The stream does its own accounting. */
static void start_stream(struct tr_session *s, const struct tr_h1_message *m,
                         const struct tr_decision *d, tr_str path, tr_str host)
{
    const struct tr_route_cfg *route = d->route;
    const struct tr_header_edit *req_edit = d->request_edit;
    struct tr_http_state *h = &s->http;
    struct tr_fields f;
    bool tls = s->principal != NULL || s->down.ssl != NULL;
    if (tr_fields_init(&f, m->n_headers + 8, m->head_len + 256) < 0 ||
        tr_fields_from_h1_request(&f, m, tls ? TR_STR_LIT("https") : TR_STR_LIT("http"), host,
                                  path) < 0) {
        tr_fields_free(&f);
        local_reply(s, 431, TR_RF_DPE, "request header fields too large\n");
        return;
    }
    struct tr_stream *st = tr_stream_new(s, TR_SD_H1, 0);
    if (st == NULL) {
        tr_fields_free(&f);
        tr_session_close(s);
        return;
    }
    st->start_us = h->start_us;
    st->method_id = h->method_id;
    st->lb_hash = h->lb_hash;
    st->lb_cookie = h->lb_cookie;
    st->req_edit = req_edit;
    st->resp_edit = h->resp_edit;
    h->stream = st;
    h->logged = true; /* the stream logs and counts this request */
    h->rs = TR_RS_WAIT;
    if (h->req_body.done)
        h->rq = TR_RQ_DONE; /* no body, or Content-Length: 0 */
    /* The route's fault delay and CORS fields go with the exchange. */
    st->fault_delay_ms = d->delay_ms;
    st->flags |= d->flags;
    st->cors = h->cors;
    tr_stream_forward(st, route, h->cluster, &f, h->req_body.done);
    tr_fields_free(&f);
    if (h->rq == TR_RQ_DONE)
        arm_idle(s);
}

/* A trellis peer says the client spoke HTTP/2 (proxy/stream.h). */
static bool orig_proto_h2(const struct tr_h1_message *m)
{
    int i = tr_h1_find_header(m, "trellis-orig-proto", 18);
    return i >= 0 && TR_STR_EQ_LIT(m->headers[i].value, "HTTP/2");
}

/* Does the Upgrade field offer h2c (RFC 7540 3.2)? */
static bool upgrade_names_h2c(const struct tr_h1_message *m)
{
    for (uint32_t i = 0; i < m->n_headers; i++) {
        if (!tr_h1_ieq(m->headers[i].name, "upgrade", 7))
            continue;
        tr_str v = m->headers[i].value;
        for (uint32_t j = 0; j + 3 <= v.len; j++) {
            if (strncasecmp(v.p + j, "h2c", 3) != 0)
                continue;
            bool start = j == 0 || v.p[j - 1] == ',' || v.p[j - 1] == ' ' || v.p[j - 1] == '\t';
            bool end = j + 3 == v.len || v.p[j + 3] == ',' || v.p[j + 3] == ' ' ||
                       v.p[j + 3] == '\t' || v.p[j + 3] == '/';
            if (start && end)
                return true;
        }
    }
    return false;
}

static void http_on_ext_authz(void *owner);

static void handle_request_head(struct tr_session *s, uint32_t head_len)
{
    struct tr_http_state *h = &s->http;
    struct tr_worker *w = s->w;
    struct tr_snapshot *snap = s->ws->snap;
    struct tr_h1_message m;
    memset(&m, 0, sizeof(m));
    m.headers = w->headers;
    if (h->ext_authz == NULL) { /* not the same head again after its check */
        h->start_us = tr_loop_now_us(w->loop);
        h->requests++;
    }
    h->keep_alive = false;
    /* A reload since the previous request applies from this one on. If the
     * connection's listener is gone, this request is served on the old
     * configuration and the connection closes after it. */
    bool listener_kept = tr_session_adopt_current(s);
    snap = s->ws->snap;
    int rc = tr_h1_parse_request(tr_buf_head(s->rx), head_len, &snap->h1_limits, &m);
    if (rc < 0) {
        tr_metrics_count(w->metrics, TR_C_HTTP_PARSE_ERRORS, 1);
        tr_debug("listener %s: bad request from %s: %s", lcfg(s)->name, s->peer_ip,
                 tr_h1_error_str(rc));
        h->rq = TR_RQ_DONE; /* never read another byte of this connection */
        local_reply(s, tr_h1_error_status(rc), TR_RF_DPE, NULL);
        return;
    }
    /* The head leaves rx now. Its bytes stay where they are (the slices in m
     * point at them) until the next read, which cannot happen before this
     * function returns. */
    uint32_t head_at = s->rx->start;
    tr_buf_consume(s->rx, head_len);
    h->version10 = m.version_minor == 0;
    h->keep_alive = !(m.flags & TR_H1_F_CONN_CLOSE) && !s->draining && listener_kept;
    h->method_id = (uint8_t)m.method_id;
    h->is_head = m.method_id == TR_H1_M_HEAD;
    h->upgrade = (m.flags & TR_H1_F_UPGRADE) && (m.flags & TR_H1_F_CONN_UPGRADE);
    if (h->upgrade && upgrade_names_h2c(&m)) {
        /* "Upgrade: h2c" would tunnel HTTP/2 past routing and authorization
         * to the backend: the request is served as plain HTTP/1.1 (the
         * Upgrade and HTTP2-Settings fields are hop-by-hop and go nowhere). */
        h->upgrade = false;
    }
    tr_h1_body_init(&h->req_body, m.body, m.content_length, snap->h1_limits.max_header_bytes);
    h->log_cut = !tr_str_to_cstr(h->method, sizeof(h->method), m.method);

    tr_str host = m.host_idx >= 0 ? m.headers[m.host_idx].value : (tr_str){"", 0};
    tr_str path = m.target;
    if (m.target.len > 0 && m.target.p[0] != '/' && !(m.target.len == 1 && m.target.p[0] == '*')) {
        if (!split_absolute(m.target, &host, &path)) {
            h->keep_alive = false;
            h->rq = TR_RQ_DONE;
            local_reply(s, m.method_id == TR_H1_M_CONNECT ? 405 : 400, TR_RF_DPE,
                        m.method_id == TR_H1_M_CONNECT
                            ? "CONNECT is not supported on this listener\n"
                            : NULL);
            return;
        }
    }
    if (!tr_str_to_cstr(h->path, sizeof(h->path), path))
        h->log_cut = true;
    if (!tr_str_to_cstr(h->authority, sizeof(h->authority), host))
        h->log_cut = true;

    h->rq = m.body == TR_H1_BODY_NONE ? TR_RQ_DONE : TR_RQ_BODY;
    if (m.method_id == TR_H1_M_CONNECT) {
        h->keep_alive = false;
        h->rq = TR_RQ_DONE;
        local_reply(s, 405, TR_RF_DPE, "CONNECT is not supported on this listener\n");
        return;
    }

    struct tr_decision d;
    tr_decide(s, host, path, m.method, (const struct tr_str_pair *)m.headers, m.n_headers,
              h->ext_authz, &d);
    if (d.ext_authz != 0) {
        /* A CUSTOM policy asks its external authorizer first: the head goes
         * back into rx (its bytes are still there: nothing was read since)
         * and is handled again once the check is over (http_on_ext_authz);
         * nothing is read meanwhile. */
        h->ext_authz = tr_ext_authz_start(w, s->ws, d.ext_authz - 1, m.method, host, d.path,
                                          (const struct tr_str_pair *)m.headers, m.n_headers,
                                          http_on_ext_authz, s);
        if (h->ext_authz == NULL) {
            local_reply(s, 503, 0, "out of memory\n");
            return;
        }
        if (s->rx->start == 0 && s->rx->end == 0)
            s->rx->end = head_at + head_len;
        s->rx->start = head_at;
        h->ext_authz_wait = true;
        h->ext_authz_head_len = head_len;
        arm_idle(s);
        return;
    }
    path = d.path; /* normalised: what was decided on is what goes upstream */
    h->authz_policy = d.authz_policy;
    h->authz_rule = d.authz_rule;
    h->route = d.route;
    h->resp_edit = d.response_edit;
    if (d.cors == TR_CORS_ALLOWED)
        tr_cors_echo_set(&h->cors, d.cors_policy, d.cors_rq.origin);
    if (d.status != 0) {
        local_answer(s, &d, host, path);
        fault_hold(s, d.delay_ms); /* the answer waits in tx */
        return;
    }
    const struct tr_route_cfg *route = d.route;
    h->cluster = d.cluster;
    h->flags |= d.flags;
    h->lb_hash = d.lb_hash;
    h->lb_cookie = d.lb_cookie;
    if (!h->upgrade && (h->cluster->cfg->protocol == TR_UPROTO_HTTP2 ||
                        (h->cluster->cfg->protocol == TR_UPROTO_ORIGINAL && s->principal != NULL &&
                         orig_proto_h2(&m)))) {
        start_stream(s, &m, &d, path, host);
        return;
    }
    if (!build_request(s, &m, route, d.request_edit, path, host))
        return;
    h->retryable = true;
    bool idempotent = tr_retry_method_idempotent(m.method);
    tr_retry_begin(&h->rt, h->cluster, &route->retries, idempotent, http_on_retry_timer);
    h->hold_body = tr_retry_wants_body(&route->retries, idempotent);
    if (route->n_mirrors > 0 && h->upgrade)
        tr_mirrors_unsupported(w, route); /* a shadow cannot take over a connection */
    else if (route->n_mirrors > 0)
        tr_mirrors_start_h1(&h->mirrors, w, s->ws, route, tr_buf_head(h->reqout),
                            tr_buf_len(h->reqout),
                            route->timeout_ms != 0 ? route->timeout_ms : lcfg(s)->idle_timeout_ms);
    absorb_body(s);
    if (h->status != 0) /* absorb_body replied locally */
        return;
    if (d.delay_ms != 0) {
        fault_hold(s, d.delay_ms); /* the request waits in reqout, its body unread */
        return;
    }
    go_upstream(s);
}

/* The request is ready in reqout: its deadline starts, the upstream too. */
static void go_upstream(struct tr_session *s)
{
    const struct tr_route_cfg *route = s->http.route;
    if (route->timeout_ms != 0)
        tr_timer_set(s->w->loop, &s->timer, route->timeout_ms);
    else
        arm_idle(s);
    /* The shadows of a complete request go with it (after a fault delay, as
     * Envoy's router comes after its fault filter). */
    if (s->http.rq == TR_RQ_DONE)
        tr_mirrors_launch(&s->http.mirrors);
    start_upstream(s);
}

/* Answer with what the upstream client says a failure means. */
static void upstream_reply(struct tr_session *s, enum tr_h1c_status st, const char *reason)
{
    struct tr_h1c_reply r = tr_h1c_reply(st, reason);
    char body[TR_UPSTREAM_ERROR_MAX];
    local_reply(s, r.status, r.flag,
                r.reason != NULL ? tr_upstream_error_body(body, sizeof(body), r.reason) : r.body);
}

/* Go on from what the upstream client made of an attempt. reason: the
 * failure to name in a 503 UF body. */
static void attempt_started(struct tr_session *s, enum tr_h1c_status st, const char *reason)
{
    struct tr_http_state *h = &s->http;
    switch (st) {
    case TR_H1C_READY:
        h->peer_id = h->uc.up->peer_id;
        h->rs = TR_RS_HEAD;
        if (h->rq == TR_RQ_DONE)
            tr_retry_try_armed(&h->rt, s->w->loop);
        return;
    case TR_H1C_CONNECTING:
        h->rs = TR_RS_WAIT;
        return;
    default:
        upstream_reply(s, st, reason);
        return;
    }
}

static void start_upstream(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    attempt_started(s,
                    tr_h1c_start(&h->uc, s->w, h->cluster, &http_up_ops, s, false, h->lb_hash,
                                 tr_session_orig_dst(s)),
                    "connection failure");
}

/* The request was sent on a pooled connection that the server had already
 * closed, and nothing came back: again, once, on a new connection, if the
 * whole request is still in reqout (upstream/h1_client.h). */
static bool resend(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    bool held = h->retryable && h->reqout != NULL && h->rq == TR_RQ_DONE;
    if (!held || !tr_h1c_may_resend(&h->uc))
        return false;
    h->reqout_sent = 0;
    attempt_started(s, tr_h1c_resend(&h->uc), "connection failure");
    return true;
}

/* A try of the request failed (ev; status and grpc for a response head):
 * again if the route's retry policy says so (upstream/retry.h). True: a
 * retry waits for its backoff (the try's connection is given up, what came
 * of its response dropped); false: answer as the failure says, with URX
 * when attempts or the budget stopped a retry. */
static bool http_retry(struct tr_session *s, enum tr_retry_event ev, int status, int grpc)
{
    struct tr_http_state *h = &s->http;
    /* After a connect failure nothing left: the head is in reqout, the rest
     * of the body still in rx. Otherwise reqout must hold all of it. */
    bool held = h->reqout != NULL && (ev == TR_RETRY_EV_CONNECT_FAILURE || h->retryable);
    switch (tr_retry_decide(&h->rt, s->w, ev, status, grpc, held, h->uc.tried)) {
    case TR_RETRY_SCHEDULED:
        break;
    case TR_RETRY_LIMIT:
        h->flags |= TR_RF_URX;
        return false;
    default:
        return false;
    }
    upstream_detach(s, false);
    buf_release(s->w, &h->resp);
    h->got_response_byte = false;
    h->status = 0;
    h->reqout_sent = 0;
    h->rs = TR_RS_WAIT;
    return true;
}

/* The backoff ran out (the next try starts), or the try's per_try_timeout. */
static void http_on_retry_timer(struct tr_timer *t)
{
    struct tr_session *s = tr_container_of(t, struct tr_session, http.rt.timer);
    struct tr_http_state *h = &s->http;
    if (tr_retry_backoff_over(&h->rt)) {
        attempt_started(s, tr_h1c_retry(&h->uc, &h->rt.avoid), "connection failure");
    } else {
        tr_endpoint_report(h->uc.ep, TR_OUTCOME_TIMEOUT, tr_loop_now_ms(s->w->loop));
        if (!http_retry(s, TR_RETRY_EV_PER_TRY_TIMEOUT, 0, -1))
            local_reply(s, 504, TR_RF_UT, "upstream request timeout\n");
    }
    http_pump(s);
}

/* The exchange failed (why: a tr_h1c_status past the attempt). */
static void upstream_failed(struct tr_session *s, enum tr_h1c_status why)
{
    struct tr_http_state *h = &s->http;
    if (resend(s))
        return;
    tr_endpoint_report(h->uc.ep, TR_OUTCOME_FAILED, tr_loop_now_ms(s->w->loop));
    /* No response head yet (nothing went downstream): a retry may go. */
    if (h->rs == TR_RS_HEAD && http_retry(s, TR_RETRY_EV_RESET, 0, -1))
        return;
    if (h->got_response_byte) {
        /* Mid-response: the client cannot be told other than by closing. */
        h->flags |= tr_h1c_reply(why, NULL).flag;
        h->status = h->status ? h->status : 502;
        log_and_count(s);
        upstream_detach(s, false);
        tr_session_close(s);
        return;
    }
    upstream_reply(s, why, NULL);
}

static void on_up_ready(void *owner, struct tr_upstream *up, int err, const char *reason)
{
    struct tr_session *s = owner;
    struct tr_http_state *h = &s->http;
    if (err < 0) {
        /* Not connected, so no byte of the request left (the rest of its
         * body still waits in rx): another endpoint may take it. */
        tr_h1c_connect_failed(&h->uc);
        if (!http_retry(s, TR_RETRY_EV_CONNECT_FAILURE, 0, -1))
            upstream_reply(s, TR_H1C_FAILED, reason);
    } else {
        h->rs = TR_RS_HEAD;
        h->peer_id = up->peer_id;
        if (h->rq == TR_RQ_DONE)
            tr_retry_try_armed(&h->rt, s->w->loop);
    }
    http_pump(s);
}

static void on_up_io(void *owner, struct tr_upstream *up)
{
    (void)up;
    http_pump(owner);
}

/* ---- request direction ---- */

static bool read_request_head(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    const struct tr_h1_limits *lim = &s->ws->snap->h1_limits;
    bool progress = false;
    for (;;) {
        if (h->requests == 0 && s->rx != NULL && tr_buf_len(s->rx) > 0) {
            /* HTTP/2 with prior knowledge: the client preface instead of a
             * request. Compared as far as it has arrived. */
            static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
            uint32_t n = tr_buf_len(s->rx) < 24 ? tr_buf_len(s->rx) : 24;
            if (memcmp(tr_buf_head(s->rx), preface, n) == 0) {
                if (n < 24) {
                    ssize_t more = read_down(s);
                    if (more < 0) {
                        tr_session_close(s);
                        return false;
                    }
                    if (more == 0)
                        return progress;
                    continue;
                }
                tr_h2_session_start(s);
                return false;
            }
        }
        if (s->rx != NULL && tr_buf_len(s->rx) > 0) {
            int r = tr_h1_head_end(tr_buf_head(s->rx), tr_buf_len(s->rx), lim, 1, &h->head_scanned);
            if (r > 0) {
                handle_request_head(s, (uint32_t)r);
                return true;
            }
            if (r < 0) {
                tr_metrics_count(s->w->metrics, TR_C_HTTP_PARSE_ERRORS, 1);
                h->start_us = tr_loop_now_us(s->w->loop);
                h->rq = TR_RQ_DONE;
                local_reply(s, tr_h1_error_status(r), TR_RF_DPE, NULL);
                return true;
            }
            /* A head may be larger than a pool buffer: move it to one that
             * can hold the configured maximum. */
            if (tr_buf_len(s->rx) == s->rx->cap && s->rx->cap < lim->max_header_bytes + 1 &&
                !buf_grow(s->w, &s->rx, lim->max_header_bytes + 1)) {
                tr_session_close(s);
                return false;
            }
        }
        bool was_empty = s->rx == NULL || tr_buf_len(s->rx) == 0;
        ssize_t n = read_down(s);
        if (n < 0) {
            /* Client closed between requests (or mid-head): nothing to answer. */
            tr_session_close(s);
            return false;
        }
        if (n == 0)
            return progress;
        progress = true;
        if (was_empty) /* first byte of a head: the request deadline starts */
            tr_timer_set(s->w->loop, &s->timer, lcfg(s)->request_timeout_ms);
    }
}

/* Send reqout (the head and absorbed body) upstream. True when all is sent. */
static bool send_reqout(struct tr_session *s, bool *progress)
{
    struct tr_http_state *h = &s->http;
    if (h->reqout == NULL)
        return true;
    uint32_t sent = h->reqout_sent;
    int rc = tr_h1c_write(&h->uc, h->reqout->data, h->reqout->end, &h->reqout_sent);
    *progress |= h->reqout_sent != sent;
    if (rc < 0)
        upstream_failed(s, TR_H1C_CLOSED);
    if (rc <= 0)
        return false;
    /* Held for a re-send or a retry until the response head is taken. */
    if (!h->retryable)
        buf_release(s->w, &h->reqout);
    return true;
}

/* Stream the rest of the request body from rx to the upstream, verbatim:
 * only what the body's framing allows (chunked: validated) goes. */
static bool forward_request_body(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    bool progress = false;
    for (int guard = 0; guard < 64; guard++) {
        if (h->retryable) {
            /* Held: the body goes through reqout (absorb_body), so the
             * whole request can go again. */
            absorb_body(s);
            if (s->phase != TR_PH_HTTP || h->local_reply)
                return true;
            if (!send_reqout(s, &progress) || h->uc.up == NULL)
                return progress;
            if (h->retryable) {
                if (h->rq == TR_RQ_DONE)
                    return true;
                ssize_t n = read_down(s);
                if (n < 0) {
                    h->flags |= TR_RF_DC;
                    log_and_count(s);
                    upstream_detach(s, false);
                    tr_session_close(s);
                    return false;
                }
                if (n == 0)
                    return progress;
                progress = true;
                continue;
            }
        }
        uint32_t sendable = 0;
        if (s->rx != NULL && tr_buf_len(s->rx) > 0 &&
            tr_h1_body_sendable(&h->req_body, tr_buf_head(s->rx), tr_buf_len(s->rx), &sendable) <
                0) {
            h->flags |= TR_RF_DPE;
            if (h->got_response_byte) {
                /* Part of the response is out: a 400 cannot follow it. */
                log_and_count(s);
                tr_session_close(s);
                return false;
            }
            local_reply(s, 400, TR_RF_DPE, NULL);
            return true;
        }
        if (sendable == 0) {
            ssize_t n = read_down(s);
            if (n < 0) {
                h->flags |= TR_RF_DC;
                log_and_count(s);
                upstream_detach(s, false);
                tr_session_close(s);
                return false;
            }
            if (n == 0)
                return progress;
            progress = true;
            continue;
        }
        uint32_t sent = 0;
        int rc = tr_h1c_write(&h->uc, tr_buf_head(s->rx), sendable, &sent);
        if (sent > 0) {
            progress = true;
            tr_mirrors_body(&h->mirrors, tr_buf_head(s->rx), sent);
            tr_buf_consume(s->rx, sent);
            h->req_bytes += sent;
            tr_h1_body_sent(&h->req_body, sent);
        }
        if (rc < 0) {
            upstream_failed(s, TR_H1C_CLOSED);
            return true;
        }
        if (h->req_body.done) {
            request_done(s);
            return true;
        }
        if (rc == 0)
            return progress;
    }
    return progress;
}

/* ---- response direction ---- */

static bool handle_response_head(struct tr_session *s, uint32_t head_len)
{
    struct tr_http_state *h = &s->http;
    struct tr_worker *w = s->w;
    struct tr_h1_message m;
    memset(&m, 0, sizeof(m));
    m.headers = w->headers;
    int rc = tr_h1c_parse_response(&h->uc, tr_buf_head(h->resp), head_len, &s->ws->snap->h1_limits,
                                   (enum tr_h1_method)h->method_id, &m);
    if (rc < 0) {
        tr_warn("cluster %s: invalid response from %s: %s", h->cluster->cfg->name, h->uc.addr,
                tr_h1_error_str(rc));
        if (http_retry(s, TR_RETRY_EV_RESET, 0, -1))
            return true;
        h->got_response_byte = false; /* nothing was forwarded */
        upstream_detach(s, false);
        upstream_reply(s, TR_H1C_BAD_HEAD, NULL);
        return true;
    }
    if (m.status >= 100 && m.status < 200 && m.status != 101) {
        /* Interim response: pass it on to HTTP/1.1 clients, then read on. */
        if (!h->version10) {
            struct tr_response_rewrite rw = {.keep_alive = true};
            if (s->tx == NULL)
                s->tx = tr_buf_get(&w->bufs);
            if (s->tx == NULL || tr_filter_response_head(s->tx, NULL, &m, &rw) < 0) {
                tr_session_close(s);
                return false;
            }
        }
        tr_buf_consume(h->resp, head_len);
        return true;
    }
    if (m.status == 101 && !h->upgrade) {
        upstream_detach(s, false);
        local_reply(s, 502, TR_RF_UPE, "upstream switched protocols unasked\n");
        return true;
    }
    bool tunnel = m.body == TR_H1_BODY_TUNNEL;
    /* A final head: the last moment a retry may take the request elsewhere
     * (nothing of the response went downstream yet). */
    if (!tunnel) {
        int g = tr_retry_reads_grpc(&h->rt) ? tr_h1_find_header(&m, "grpc-status", 11) : -1;
        if (http_retry(s, TR_RETRY_EV_STATUS, m.status,
                       g >= 0 ? tr_grpc_status_parse(m.headers[g].value) : -1))
            return true;
    }
    tr_retry_try_done(&h->rt, w->loop);
    /* The request is not needed again: give its buffer back once sent. */
    if (h->reqout != NULL && h->reqout_sent == h->reqout->end && h->rq == TR_RQ_DONE)
        buf_release(w, &h->reqout);
    h->retryable = false;
    h->status = m.status;
    if (m.body == TR_H1_BODY_UNTIL_CLOSE)
        h->keep_alive = false;
    if (h->rq != TR_RQ_DONE && !tunnel)
        h->keep_alive = false; /* answered before the request ended */
    h->dechunk = m.body == TR_H1_BODY_CHUNKED && h->version10;
    if (h->dechunk)
        h->keep_alive = false; /* HTTP/1.0: the body ends with the connection */
    struct tr_h2_header cors[TR_CORS_RESPONSE_FIELDS];
    struct tr_response_rewrite rw = {
        .keep_alive = h->keep_alive && !s->draining,
        .version10 = h->version10,
        .dechunk = h->dechunk,
        .tunnel = tunnel,
        .edit = h->resp_edit,
        .max_fields = s->ws->snap->h1_limits.max_headers,
        .max_bytes = s->ws->snap->h1_limits.max_header_bytes,
        .set = cors,
        .n_set = tr_cors_response_fields(&h->cors, cors),
    };
    char cookie[TR_LB_COOKIE_MAX];
    if (h->lb_cookie != 0)
        rw.set_cookie =
            tr_str_from(cookie, tr_lb_cookie_format(&h->cluster->cfg->hash, h->lb_cookie, cookie,
                                                    sizeof(cookie)));
    size_t need = head_len + 256 + edit_bytes(h->resp_edit) + rw.set_cookie.len;
    if (s->tx == NULL)
        s->tx = buf_get_sized(w, need);
    int out = s->tx != NULL ? tr_filter_response_head(s->tx, NULL, &m, &rw) : -1;
    if (out == -1) {
        /* tx may hold an interim response; give it a bigger home. */
        out = buf_grow(w, &s->tx, (s->tx ? tr_buf_len(s->tx) : 0) + need)
                  ? tr_filter_response_head(s->tx, NULL, &m, &rw)
                  : -1;
        if (out == -1) {
            tr_session_close(s);
            return false;
        }
    }
    if (out == TR_FILTER_OVER_LIMIT) {
        edit_over_limit(s, true);
        upstream_detach(s, false);
        local_reply(s, 502, TR_RF_HO, "response header edits exceed the proxy's limits\n");
        return true;
    }
    tr_buf_consume(h->resp, head_len);
    if (tunnel) {
        tr_retry_end(&h->rt, w->loop); /* a tunnel is no request in flight for the budget */
        tr_mirrors_drop(&h->mirrors);
        h->rs = TR_RS_TUNNEL;
        h->rq = TR_RQ_TUNNEL;
        h->keep_alive = false;
        tr_timer_set(w->loop, &s->timer, lcfg(s)->idle_timeout_ms);
    } else if (h->uc.resp.done) { /* no body: HEAD, 204, 304, Content-Length: 0 */
        h->rs = TR_RS_DONE;
    } else {
        h->rs = TR_RS_BODY;
    }
    return true;
}

static bool read_response_head(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    bool progress = false;
    for (;;) {
        int r = tr_h1c_head_end(&h->uc, &h->resp, &s->ws->snap->h1_limits);
        if (r > 0) {
            handle_response_head(s, (uint32_t)r);
            return true;
        }
        if (r < 0) {
            if (http_retry(s, TR_RETRY_EV_RESET, 0, -1))
                return true;
            upstream_detach(s, false);
            upstream_reply(s, (enum tr_h1c_status) - r, NULL);
            return true;
        }
        ssize_t n = tr_h1c_read(&h->uc, &h->resp);
        if (n < 0) {
            upstream_failed(s, TR_H1C_CLOSED);
            return true;
        }
        if (n == 0)
            return progress;
        progress = true;
        h->got_response_byte = true; /* reqout is kept until the head is taken (retries) */
    }
}

/* More response body bytes into resp. Returns 1 if some came, 0 if none can
 * now, -1 if the exchange moved on: the body ended with the connection
 * (TR_RS_DONE) or the response was cut short (upstream_failed). */
static int read_response_body(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    ssize_t n = tr_h1c_read(&h->uc, &h->resp);
    if (n >= 0)
        return n > 0;
    if (n == TR_H1C_READ_END)
        h->rs = TR_RS_DONE;
    else
        upstream_failed(s, TR_H1C_CLOSED);
    return -1;
}

/* De-chunk for HTTP/1.0 clients: copy payload runs of resp into tx.
 * Returns -1 on malformed framing, else whether bytes moved. */
static int dechunk_response(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    int progress = 0;
    while (h->resp != NULL && tr_buf_len(h->resp) > 0 && !h->uc.resp.done) {
        if (s->tx == NULL && (s->tx = tr_buf_get(&s->w->bufs)) == NULL)
            return progress;
        tr_buf_compact(s->tx);
        uint32_t room = tr_buf_room(s->tx);
        if (room == 0)
            return progress;
        uint32_t avail = tr_buf_len(h->resp);
        const char *p = tr_buf_head(h->resp);
        struct tr_h1_body_run r;
        /* No pool: the trailers are validated, not kept (HTTP/1.0 has none). */
        if (tr_h1_body_decode(&h->uc.resp, NULL, p, avail < room ? avail : room, &r) < 0)
            return -1;
        tr_buf_append(s->tx, p + r.data_off, r.data_len);
        h->resp_bytes += r.data_len;
        tr_buf_consume(h->resp, r.consumed);
        progress = 1;
    }
    return progress;
}

/* n body bytes at the front of resp went downstream. */
static void account_response_sent(struct tr_session *s, uint32_t n)
{
    struct tr_http_state *h = &s->http;
    tr_buf_consume(h->resp, n);
    h->resp_bytes += n;
    tr_h1_body_sent(&h->uc.resp, n);
    if (h->uc.resp.done)
        h->rs = TR_RS_DONE;
}

static void coalesce_body_into_tx(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    uint32_t sendable;
    if (tr_h1_body_sendable(&h->uc.resp, tr_buf_head(h->resp), tr_buf_len(h->resp), &sendable) <
        0) {
        upstream_failed(s, TR_H1C_BAD_BODY);
        return;
    }
    tr_buf_compact(s->tx);
    uint32_t n = sendable < tr_buf_room(s->tx) ? sendable : tr_buf_room(s->tx);
    if (n == 0)
        return;
    memcpy(tr_buf_tail(s->tx), tr_buf_head(h->resp), n);
    s->tx->end += n;
    account_response_sent(s, n);
}

/* Forward the response body from resp to the client verbatim: only what
 * the body's framing allows (chunked: validated) goes, straight from resp. */
static bool forward_response_body(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    bool progress = false;
    for (int guard = 0; guard < 64; guard++) {
        /* A head (or interim response) waiting in tx: the body bytes already
         * here ride along in the same write (one syscall, one TLS record). */
        if (s->tx != NULL && tr_buf_len(s->tx) > 0 && !h->dechunk && h->resp != NULL &&
            tr_buf_len(h->resp) > 0) {
            coalesce_body_into_tx(s);
            if (s->phase != TR_PH_HTTP)
                return false;
        }
        if (h->rs != TR_RS_BODY)
            return true;
        if (!flush_tx(s, &progress))
            return progress;
        if (h->resp == NULL || tr_buf_len(h->resp) == 0) {
            int r = read_response_body(s);
            if (r < 0)
                return true;
            if (r == 0)
                return progress;
            progress = true;
        }
        if (h->dechunk) {
            if (dechunk_response(s) < 0) {
                upstream_failed(s, TR_H1C_BAD_BODY);
                return true;
            }
            if (h->uc.resp.done) {
                h->rs = TR_RS_DONE;
                return true;
            }
            continue;
        }
        uint32_t sendable;
        if (tr_h1_body_sendable(&h->uc.resp, tr_buf_head(h->resp), tr_buf_len(h->resp), &sendable) <
            0) {
            upstream_failed(s, TR_H1C_BAD_BODY);
            return true;
        }
        if (sendable == 0) {
            /* Chunk framing cut by the read: more bytes first. */
            int r = read_response_body(s);
            if (r < 0)
                return true;
            if (r == 0)
                return progress;
            progress = true;
            continue;
        }
        ssize_t n = tr_conn_write(&s->down, tr_buf_head(h->resp), sendable);
        if (n == TR_AGAIN)
            return progress;
        if (n < 0) {
            h->flags |= TR_RF_DC;
            log_and_count(s);
            upstream_detach(s, false);
            tr_session_close(s);
            return false;
        }
        progress = true;
        account_response_sent(s, (uint32_t)n);
        if (h->rs == TR_RS_DONE)
            return true;
    }
    return progress;
}

/* After 101: raw bytes both ways until either side closes. */
static bool tunnel(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    bool progress = false;
    if (!flush_tx(s, &progress))
        return progress;
    /* Either side ending ends the tunnel (WebSocket closes both ways). */
    bool up_eof = false, down_eof = false;
    int a =
        tr_relay_copy(&s->w->bufs, &h->uc.up->conn, &s->down, &h->resp, &h->resp_bytes, &up_eof);
    if (a < 0)
        goto closed;
    int b = tr_relay_copy(&s->w->bufs, &s->down, &h->uc.up->conn, &s->rx, &h->req_bytes, &down_eof);
    if (b < 0)
        goto closed;
    progress |= a > 0 || b > 0;
    if (progress)
        tr_timer_set(s->w->loop, &s->timer, lcfg(s)->idle_timeout_ms);
    return progress;
closed:
    log_and_count(s);
    upstream_detach(s, false);
    tr_session_close(s);
    return false;
}

/* ---- closing ---- */

#define LINGER_MS        2000
#define LINGER_MAX_BYTES (1024 * 1024)

static void linger_on_io(struct tr_io *io, uint32_t events)
{
    struct tr_session *s = tr_container_of(io, struct tr_session, down.io);
    tr_conn_on_events(&s->down, events);
    char sink[4096];
    for (;;) {
        ssize_t n = tr_conn_read(&s->down, sink, sizeof(sink));
        if (n == TR_AGAIN)
            return;
        if (n <= 0) {
            tr_session_close(s);
            return;
        }
        s->http.req_bytes += (uint64_t)n; /* discarded bytes, for the bound below */
        if (s->http.req_bytes > LINGER_MAX_BYTES) {
            tr_session_close(s);
            return;
        }
    }
}

static void linger_on_timer(struct tr_timer *t)
{
    tr_session_close(tr_container_of(t, struct tr_session, timer));
}

/* The response is out and the connection ends. If the client may still be
 * sending (unread bytes in rx, or readiness not yet drained), closing now
 * would make the kernel answer those bytes with a reset, which can destroy
 * the response before the client reads it. Instead: half-close our side,
 * discard what comes, and close on EOF or after a short, bounded wait. */
static void close_after_response(struct tr_session *s)
{
    bool unread = (s->rx != NULL && tr_buf_len(s->rx) > 0) || s->down.rx_ready;
    if (!unread || s->down.rx_eof) {
        tr_session_close(s);
        return;
    }
    buf_release(s->w, &s->rx);
    tr_conn_shutdown_write(&s->down);
    s->http.req_bytes = 0;
    s->down.io.cb = linger_on_io;
    s->timer.cb = linger_on_timer;
    tr_timer_set(s->w->loop, &s->timer, LINGER_MS);
    s->closing = false;
    s->http.rq = TR_RQ_DONE;
    s->http.rs = TR_RS_NONE;
    s->http.lingering = true;
    linger_on_io(&s->down.io, 0);
}

/* ---- the pump ---- */

static bool stream_pump(struct tr_session *s);

static void http_pump(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    if (h->lingering || h->fault_wait || h->ext_authz_wait)
        return;
    for (int guard = 0; guard < 256; guard++) {
        if (s->phase != TR_PH_HTTP)
            return;
        /* An exchange handed to a stream is driven by stream_pump until it
         * is over; then the request finishes here as any other. */
        if (h->stream != NULL && !stream_pump(s))
            return;
        bool progress = false;
        if (h->rs == TR_RS_TUNNEL) {
            if (!tunnel(s))
                return;
            continue;
        }
        if (h->rq == TR_RQ_HEAD && h->rs == TR_RS_NONE) {
            progress |= read_request_head(s);
            if (s->phase != TR_PH_HTTP || h->fault_wait || h->ext_authz_wait)
                return;
            if (h->stream != NULL)
                continue;
        }
        bool up_ready = h->uc.up != NULL && (h->rs == TR_RS_HEAD || h->rs == TR_RS_BODY);
        if (up_ready && !h->local_reply) {
            bool sent = send_reqout(s, &progress);
            if (s->phase != TR_PH_HTTP)
                return;
            if (sent && h->rq == TR_RQ_BODY && h->uc.up != NULL)
                progress |= forward_request_body(s);
            if (s->phase != TR_PH_HTTP)
                return;
        }
        if (h->rs == TR_RS_HEAD && h->uc.up != NULL)
            progress |= read_response_head(s);
        if (s->phase != TR_PH_HTTP)
            return;
        if (h->rs == TR_RS_BODY)
            progress |= forward_response_body(s);
        if (s->phase != TR_PH_HTTP)
            return;
        /* Whatever waits in tx goes now: an interim 100 Continue the client
         * is waiting for, a local reply, the tail of a response. */
        bool empty = flush_tx(s, &progress);
        if (s->phase != TR_PH_HTTP)
            return;
        if (h->rs == TR_RS_DONE || s->closing) {
            if (empty && s->closing) {
                close_after_response(s);
                return;
            }
            if (empty && h->rs == TR_RS_DONE) {
                finish_request(s);
                progress = true;
                if (s->closing) {
                    close_after_response(s);
                    return;
                }
            }
        }
        if (!progress)
            return;
        /* Bytes are flowing: the idle deadline moves (a route timeout, when
         * set, bounds the whole exchange instead). */
        if ((h->rq == TR_RQ_BODY || h->rs == TR_RS_BODY) &&
            (h->route == NULL || ((const struct tr_route_cfg *)h->route)->timeout_ms == 0))
            arm_idle(s);
    }
    /* Still work to do after many rounds: continue on the next loop turn
     * rather than starving other connections. */
    tr_loop_defer(s->w->loop, &s->pump_later, http_pump_later);
}

static void http_pump_later(struct tr_deferred *d)
{
    http_pump(tr_container_of(d, struct tr_session, pump_later));
}

static void http_on_down_io(struct tr_io *io, uint32_t events)
{
    struct tr_session *s = tr_container_of(io, struct tr_session, down.io);
    tr_conn_on_events(&s->down, events);
    http_pump(s);
}

/* The external authorization check is over: the held head again, decided
 * with its outcome. */
static void http_on_ext_authz(void *owner)
{
    struct tr_session *s = owner;
    struct tr_http_state *h = &s->http;
    h->ext_authz_wait = false;
    handle_request_head(s, h->ext_authz_head_len);
    http_pump(s);
}

static void http_on_timer(struct tr_timer *t)
{
    struct tr_session *s = tr_container_of(t, struct tr_session, timer);
    struct tr_http_state *h = &s->http;
    if (h->ext_authz_wait) {
        /* The check outlasted the listener's idle timeout: the client is
         * gone for us (the check is abandoned with the session). */
        tr_session_close(s);
        return;
    }
    if (h->fault_wait) {
        /* The fault delay is over: the answer in tx goes out, or the upstream starts. */
        h->fault_wait = false;
        if (h->rs != TR_RS_DONE)
            go_upstream(s);
        http_pump(s);
        return;
    }
    if (h->stream != NULL) {
        /* Idle while a stream was in progress (its own timer bounds the
         * exchange): the client is gone for us. */
        tr_session_close(s);
        return;
    }
    if (h->rq == TR_RQ_HEAD && h->rs == TR_RS_NONE) {
        if (s->rx == NULL || tr_buf_len(s->rx) == 0) {
            tr_session_close(s); /* idle keep-alive connection */
            return;
        }
        h->start_us = tr_loop_now_us(s->w->loop);
        h->rq = TR_RQ_DONE;
        local_reply(s, 408, TR_RF_DPE, NULL);
        http_pump(s);
        return;
    }
    if (h->rs == TR_RS_TUNNEL || h->got_response_byte || h->rs == TR_RS_DONE) {
        h->flags |= TR_RF_UT;
        log_and_count(s);
        upstream_detach(s, false);
        tr_session_close(s);
        return;
    }
    /* No response head in time. */
    tr_endpoint_report(h->uc.ep, TR_OUTCOME_TIMEOUT, tr_loop_now_ms(s->w->loop));
    local_reply(s, 504, TR_RF_UT, "upstream request timeout\n");
    http_pump(s);
}

static void http_drain(struct tr_session_link *l)
{
    struct tr_session *s = tr_container_of(l, struct tr_session, link);
    s->draining = true;
    struct tr_http_state *h = &s->http;
    if (h->rq == TR_RQ_HEAD && h->rs == TR_RS_NONE && (s->rx == NULL || tr_buf_len(s->rx) == 0))
        tr_session_close(s);
    /* Otherwise the response in flight carries "Connection: close". */
}

void tr_http_session_start(struct tr_session *s)
{
    s->phase = TR_PH_HTTP;
    s->down.io.cb = http_on_down_io;
    s->timer.cb = http_on_timer;
    s->link.drain = http_drain;
    memset(&s->http, 0, sizeof(s->http));
    begin_request(s);
    if (s->draining) {
        tr_session_close(s);
        return;
    }
    http_pump(s);
}

/* ---- HTTP/1.1 downstream of a tr_stream ----
 *
 * The request body is decoded (length or chunked) and pushed into the
 * stream; reading stops while the stream holds bytes it could not pass on.
 * The response comes back as fields and body chunks, re-framed into tx
 * (chunked when its length is unknown); the stream is told to resume once tx
 * has drained. */

static bool stream_push_body(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    struct tr_stream *st = h->stream;
    const uint8_t *p = (const uint8_t *)tr_buf_head(s->rx);
    struct tr_h1_body_run r;
    int rc = tr_h1_body_decode(&h->req_body, &s->w->bufs, (const char *)p, tr_buf_len(s->rx), &r);
    if (rc < 0) {
        if (rc != TR_H1_BODY_E_NOMEM)
            tr_metrics_count(s->w->metrics, TR_C_HTTP_PARSE_ERRORS, 1);
        tr_session_close(s); /* the stream sees its client go */
        return false;
    }
    tr_buf_consume(s->rx, r.consumed); /* the bytes stay in place until the next read */
    if (h->req_body.framing != TR_H1_BODY_CHUNKED) {
        bool end = h->req_body.done;
        if (end)
            h->rq = TR_RQ_DONE;
        tr_stream_req_data(st, p + r.data_off, r.data_len, end);
        return true;
    }
    if (r.data_len > 0)
        tr_stream_req_data(st, p + r.data_off, r.data_len, false);
    if (!h->req_body.done || h->stream != st)
        return true;
    h->rq = TR_RQ_DONE;
    struct tr_fields t;
    uint32_t max = s->ws->snap->h1_limits.max_headers;
    int prc = tr_h1_body_trailers(&h->req_body, &s->w->bufs, max, &t);
    if (prc < 0) {
        /* Never the request's end without the trailers it had. */
        if (prc == TR_FIELDS_FULL) {
            tr_debug("listener %s: request trailers from %s have more than limits.%s (%u) fields",
                     lcfg(s)->name, s->peer_ip, tr_limit_name(TR_LIMIT_MAX_HEADERS), max);
            tr_metrics_limit(s->w->metrics, TR_LIMIT_MAX_HEADERS);
        }
        tr_fields_free(&t);
        tr_session_close(s); /* the stream sees its client go */
        return false;
    }
    if (t.n > 0)
        tr_stream_req_trailers(st, t.v, t.n);
    else
        tr_stream_req_data(st, NULL, 0, true);
    tr_fields_free(&t);
    return true;
}

/* Returns true when the exchange is over and the ordinary pump should go on
 * (finish the request, keep-alive or close). */
static bool stream_pump(struct tr_session *s)
{
    struct tr_http_state *h = &s->http;
    for (int guard = 0; guard < 64; guard++) {
        struct tr_stream *st = h->stream;
        bool progress = false;
        if (h->rq == TR_RQ_BODY && !tr_stream_req_blocked(st)) {
            if (s->rx == NULL || tr_buf_len(s->rx) == 0) {
                ssize_t n = read_down(s);
                if (n < 0) {
                    tr_session_close(s); /* client gone mid-request */
                    return false;
                }
                progress |= n > 0;
            }
            if (s->rx != NULL && tr_buf_len(s->rx) > 0) {
                if (!stream_push_body(s))
                    return false;
                progress = true;
            }
            if (s->phase != TR_PH_HTTP || h->stream == NULL)
                return false;
        }
        bool empty = flush_tx(s, &progress);
        if (s->phase != TR_PH_HTTP)
            return false;
        if (empty && h->stream_blocked) {
            h->stream_blocked = false;
            tr_stream_resp_resume(st);
            if (s->phase != TR_PH_HTTP || h->stream == NULL)
                return false;
            continue;
        }
        if (empty && h->rs == TR_RS_DONE) {
            h->stream = NULL;
            if (h->rq != TR_RQ_DONE)
                h->keep_alive = false; /* the rest of the request is not wanted */
            tr_stream_down_close(st, false);
            tr_h1_body_release(&h->req_body, &s->w->bufs);
            return true;
        }
        if (!progress)
            return false;
        if (h->rq == TR_RQ_BODY || h->rs == TR_RS_BODY)
            arm_idle(s);
    }
    tr_loop_defer(s->w->loop, &s->pump_later, http_pump_later);
    return false;
}

static bool tx_reserve(struct tr_session *s, size_t need)
{
    if (s->tx == NULL && (s->tx = buf_get_sized(s->w, need)) == NULL)
        return false;
    tr_buf_compact(s->tx);
    if (tr_buf_room(s->tx) >= need)
        return true;
    return buf_grow(s->w, &s->tx, tr_buf_len(s->tx) + need);
}

int tr_http_session_resp_headers(struct tr_stream *st, const struct tr_h2_header *hv, size_t n,
                                 bool end)
{
    struct tr_session *s = st->s;
    struct tr_http_state *h = &s->http;
    int si = tr_fields_find(hv, n, ":status");
    if (si < 0 || hv[si].value.len != 3)
        return -1;
    int status = (hv[si].value.p[0] - '0') * 100 + (hv[si].value.p[1] - '0') * 10 +
                 (hv[si].value.p[2] - '0');
    size_t need = 256;
    for (size_t i = 0; i < n; i++)
        need += hv[i].name.len + hv[i].value.len + 4;
    if (!tx_reserve(s, need)) {
        tr_session_close(s);
        return -1;
    }
    if (status < 200) {
        if (!h->version10 && tr_fields_h1_response_head(s->tx, hv, n, false, true) < 0) {
            tr_session_close(s);
            return -1;
        }
        tr_loop_defer(s->w->loop, &s->pump_later, http_pump_later);
        return 0;
    }
    bool bodyless = h->is_head || status == 204 || status == 304;
    bool has_cl = tr_fields_find(hv, n, "content-length") >= 0;
    h->resp_rechunk = !end && !has_cl && !bodyless && !h->version10;
    h->resp_until_close = !end && !has_cl && !bodyless && h->version10;
    if (h->resp_until_close || h->rq != TR_RQ_DONE)
        h->keep_alive = false;
    h->status = (uint16_t)status;
    if (tr_fields_h1_response_head(s->tx, hv, n, h->resp_rechunk, h->keep_alive && !s->draining) <
        0) {
        tr_session_close(s);
        return -1;
    }
    h->got_response_byte = true;
    h->rs = end || bodyless ? TR_RS_DONE : TR_RS_BODY;
    tr_loop_defer(s->w->loop, &s->pump_later, http_pump_later);
    return 0;
}

ssize_t tr_http_session_resp_data(struct tr_stream *st, const uint8_t *p, size_t len, bool end)
{
    struct tr_session *s = st->s;
    struct tr_http_state *h = &s->http;
    if (h->rs != TR_RS_BODY)
        return (ssize_t)len; /* HEAD, 204, 304: no body goes out */
    ssize_t take = tr_h1_body_put(&s->tx, &s->w->bufs, h->resp_rechunk, p, len, end);
    if (take < 0) {
        tr_session_close(s);
        return -1;
    }
    h->resp_bytes += (uint64_t)take;
    if ((size_t)take < len)
        h->stream_blocked = true;
    else if (end)
        h->rs = TR_RS_DONE;
    tr_loop_defer(s->w->loop, &s->pump_later, http_pump_later);
    return take;
}

int tr_http_session_resp_trailers(struct tr_stream *st, const struct tr_h2_header *hv, size_t n)
{
    struct tr_session *s = st->s;
    struct tr_http_state *h = &s->http;
    if (h->rs == TR_RS_BODY && h->resp_rechunk &&
        tr_h1_body_put_trailers(&s->tx, &s->w->bufs, hv, n) < 0) {
        tr_session_close(s);
        return -1;
    }
    h->rs = TR_RS_DONE;
    tr_loop_defer(s->w->loop, &s->pump_later, http_pump_later);
    return 0;
}

void tr_http_session_reset(struct tr_stream *st)
{
    tr_session_close(st->s);
}

void tr_http_session_wake(struct tr_stream *st)
{
    tr_loop_defer(st->s->w->loop, &st->s->pump_later, http_pump_later);
}
