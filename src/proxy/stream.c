/* proxy/stream.c: exchanges with an HTTP/2 side (see stream.h). */
#include "proxy/stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "filter/authz.h"
#include "proxy/authz_call.h"
#include "filter/headers.h"
#include "obs/access_log.h"
#include "proxy/decide.h"
#include "proxy/session.h"
#include "router/router.h"
#include "upstream/attempt.h"
#include "upstream/h1_client.h"
#include "upstream/ext_authz.h"
#include "upstream/mirror.h"
#include "upstream/pool.h"
#include "upstream/retry.h"

/* Upstream request: budget for the rewritten header list. */
#define UPREQ_EXTRA_FIELDS 8
#define UPREQ_EXTRA_BYTES  512

/* A response head with the route's edits, as slices on the stack: at most
 * limits.max_headers fields (and :status) from the upstream, or a reply of
 * our own, plus what one edit appends (config/validate.c: 2 levels of 64
 * set and 64 add). */
#define EDITED_MAX (TR_H1_MAX_HEADERS_CAP + 8 + 256)

/* HTTP/2 error codes used here (RFC 9113 7). */
enum { H2_NO_ERROR = 0, H2_INTERNAL_ERROR = 2, H2_REFUSED_STREAM = 7, H2_CANCEL = 8 };

/* gRPC status codes used for local replies. */
enum {
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_UNAUTHENTICATED = 16,
};

/* The header a trellis proxy adds when it carries an HTTP/1.x request over
 * an HTTP/2 mesh hop, so that the peer restores HTTP/1.1 toward the
 * application ("original" protocol clusters). Never leaves the mesh. */
static const tr_str ORIG_PROTO = TR_STR_LIT("trellis-orig-proto");

static void up_start(struct tr_stream *st, bool fresh);
static void up_begin(struct tr_stream *st);
static void up_use(struct tr_stream *st, struct tr_endpoint_rt *ep);
static void h2_open(struct tr_stream *st, bool fresh);
static void up_release(struct tr_stream *st, bool reusable);
static void h1_pump(struct tr_stream *st);
static void h1_pump_later(struct tr_deferred *d);
static void stream_maybe_free(struct tr_stream *st);
static void resp_flush_pending(struct tr_stream *st);
static bool stream_retry(struct tr_stream *st, enum tr_retry_event ev, int status, int grpc,
                         const struct tr_endpoint_rt *failed);
static void stream_on_retry_timer(struct tr_timer *t);

/* ---- small helpers ---- */

static struct tr_worker *W(struct tr_stream *st)
{
    return st->s->w;
}

/* The upstream side is a pooled connection (HTTP/1.1, or a CONNECT tunnel). */
static bool up_is_conn(const struct tr_stream *st)
{
    return st->up == TR_SU_H1 || st->up == TR_SU_TUNNEL;
}

static struct tr_buf *buf_sized(struct tr_stream *st, size_t size)
{
    return tr_buf_get_sized(&W(st)->bufs, size);
}

/* The most a pending buffer may hold: one flow-control window or one read,
 * whichever is larger (what a producer can hand over before it is stopped). */
static size_t pend_max(struct tr_stream *st)
{
    size_t win = st->ws->snap->h2_limits.initial_window_size;
    return win > W(st)->bufs.buf_size ? win : W(st)->bufs.buf_size;
}

/* Make room for need more bytes in *b (allocating or growing it), up to
 * limit bytes in all. False if that would exceed the limit or memory is out. */
static bool buf_reserve(struct tr_stream *st, struct tr_buf **b, size_t need, size_t limit)
{
    if (*b == NULL && (*b = buf_sized(st, need)) == NULL)
        return false;
    if (tr_buf_room(*b) >= need)
        return true;
    tr_buf_compact(*b);
    if (tr_buf_room(*b) >= need)
        return true;
    size_t want = (size_t)tr_buf_len(*b) + need;
    if (want > limit)
        return false;
    size_t cap = (size_t)(*b)->cap * 2;
    if (cap < want)
        cap = want;
    if (cap > limit)
        cap = limit;
    struct tr_buf *big = buf_sized(st, cap);
    if (big == NULL)
        return false;
    tr_buf_append(big, tr_buf_head(*b), tr_buf_len(*b));
    tr_buf_put(&W(st)->bufs, *b);
    *b = big;
    return true;
}

static void buf_drop(struct tr_stream *st, struct tr_buf **b)
{
    if (*b != NULL) {
        tr_buf_put(&W(st)->bufs, *b);
        *b = NULL;
    }
}

int tr_grpc_status_parse(tr_str v)
{
    if (v.len == 0 || v.len > 3)
        return -1;
    int x = 0;
    for (uint32_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        x = x * 10 + (v.p[i] - '0');
    }
    return x <= 255 ? x : -1;
}

uint64_t tr_grpc_timeout_ms(tr_str v)
{
    /* TimeoutValue is 1-8 ASCII digits, then a unit H M S m u n. */
    if (v.len < 2 || v.len > 9)
        return 0;
    uint64_t x = 0;
    for (uint32_t i = 0; i + 1 < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return 0;
        x = x * 10 + (uint64_t)(v.p[i] - '0');
    }
    switch (v.p[v.len - 1]) {
    case 'H':
        return x * 3600000;
    case 'M':
        return x * 60000;
    case 'S':
        return x * 1000;
    case 'm':
        return x;
    case 'u':
        return (x + 999) / 1000;
    case 'n':
        return (x + 999999) / 1000000;
    default:
        return 0;
    }
}

/* ---- accounting ---- */

static void stream_log(struct tr_stream *st)
{
    if (st->logged || st->start_us == 0)
        return;
    st->logged = true;
    struct tr_session *s = st->s;
    struct tr_metric_labels l = s->labels;
    l.protocol = st->proto;
    l.grpc = st->grpc && st->grpc_status >= 0 ? (uint8_t)(st->grpc_status + 1) : 0;
    if (st->cluster != NULL && l.reporter == TR_REPORTER_SOURCE) {
        l.destination_service = st->cluster->service;
        l.destination_workload = st->cluster->workload;
        l.destination_namespace = st->cluster->workload_namespace;
        l.destination_principal = st->peer_id;
    }
    uint64_t dur = tr_loop_now_us(W(st)->loop) - st->start_us;
    tr_metrics_http(W(st)->metrics, &l, st->status, st->flags, dur, st->req_bytes, st->resp_bytes);
    if (W(st)->access_log_fd >= 0) {
        char grpc[8] = "";
        if (st->grpc && st->grpc_status >= 0)
            snprintf(grpc, sizeof(grpc), "%d", st->grpc_status);
        struct tr_access_entry e = {
            .method = st->method,
            .path = st->path,
            .authority = st->authority,
            .request_id = st->request_id,
            .protocol = st->proto == TR_REQ_PROTO_GRPC ? "grpc"
                        : st->down == TR_SD_H2         ? "HTTP/2"
                                                       : "HTTP/1.1",
            .grpc_status = st->grpc && st->grpc_status >= 0 ? grpc : NULL,
            .status = st->status,
            .flags = st->flags,
            .duration_us = dur,
            .req_bytes = st->req_bytes,
            .resp_bytes = st->resp_bytes,
            .peer = s->peer_ip,
            .principal = s->principal,
            .listener = s->lcfg->name,
            .cluster = st->cluster != NULL ? st->cluster->cfg->name : NULL,
            .upstream = st->upstream_addr,
            .authz_policy = st->authz_policy,
            .authz_rule = st->authz_rule,
            .truncated = st->log_cut,
        };
        tr_access_log_write(W(st)->access_log_fd, &e);
    }
}

/* ---- header edits ---- */

/* Does a header list edited by a route stay within the limits every head is
 * held to? Measured as the HTTP/1.1 head it is or becomes: fields (a
 * request's cookies are one line, its :authority the Host line) and bytes. */
static bool edited_fits(struct tr_stream *st, const struct tr_h2_header *v, size_t n)
{
    const struct tr_h1_limits *lim = &st->ws->snap->h1_limits;
    size_t fields = 0, bytes = 14; /* " HTTP/1.1", the CRLFs ending the line and the head */
    bool cookie = false;
    for (size_t i = 0; i < n; i++) {
        if (v[i].name.len > 0 && v[i].name.p[0] == ':') {
            bytes += v[i].value.len + 1; /* a part of the start line */
            if (TR_STR_EQ_LIT(v[i].name, ":authority")) {
                fields++;
                bytes += 8; /* "host: " CRLF */
            }
            continue;
        }
        bytes += v[i].name.len + v[i].value.len + 4;
        if (TR_STR_EQ_LIT(v[i].name, "cookie")) {
            fields += !cookie;
            cookie = true;
            continue;
        }
        fields++;
    }
    return fields <= lim->max_headers && bytes <= lim->max_header_bytes;
}

static void edit_over_limit(struct tr_stream *st, const char *what)
{
    const struct tr_h1_limits *lim = &st->ws->snap->h1_limits;
    tr_warn("listener %s: the route's %s header edits take the %s past limits.max_headers (%u) or "
            "limits.max_header_bytes (%u)",
            st->s->lcfg->name, what, what, lim->max_headers, lim->max_header_bytes);
    tr_metrics_limit(W(st)->metrics, TR_LIMIT_MAX_HEADERS);
}

/* ---- the downstream side (dispatch) ---- */

static int down_headers(struct tr_stream *st, const struct tr_h2_header *h, size_t n, bool end)
{
    if (st->down_done)
        return -1;
    return st->down == TR_SD_H2 ? tr_h2_session_resp_headers(st, h, n, end)
                                : tr_http_session_resp_headers(st, h, n, end);
}

static ssize_t down_data(struct tr_stream *st, const uint8_t *p, size_t len, bool end)
{
    if (st->down_done)
        return -1;
    return st->down == TR_SD_H2 ? tr_h2_session_resp_data(st, p, len, end)
                                : tr_http_session_resp_data(st, p, len, end);
}

static int down_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n)
{
    if (st->down_done)
        return -1;
    return st->down == TR_SD_H2 ? tr_h2_session_resp_trailers(st, h, n)
                                : tr_http_session_resp_trailers(st, h, n);
}

/* A reply made here, with the route's response edits (validation keeps them
 * small enough for a reply's own few fields). */
static int down_headers_local(struct tr_stream *st, const struct tr_h2_header *h, size_t n,
                              bool end)
{
    if (st->resp_edit == NULL)
        return down_headers(st, h, n, end);
    struct tr_h2_header v[EDITED_MAX];
    int m = tr_header_edit_fields(st->resp_edit, h, n, v, EDITED_MAX);
    return m < 0 ? -1 : down_headers(st, v, (size_t)m, end);
}

static void down_reset(struct tr_stream *st, uint32_t code)
{
    if (st->down_done)
        return;
    if (st->down == TR_SD_H2)
        tr_h2_session_reset(st, code);
    else
        tr_http_session_reset(st);
}

/* Request bytes left our custody: the downstream may send more. */
static void down_consumed(struct tr_stream *st, size_t n)
{
    if (st->down_done)
        return;
    if (st->down == TR_SD_H2)
        tr_h2_session_consume(st, n);
    else if (st->req_pend == NULL || tr_buf_len(st->req_pend) == 0)
        tr_http_session_wake(st);
}

/* ---- completion ---- */

static void stream_free_now(struct tr_deferred *d)
{
    struct tr_stream *st = tr_container_of(d, struct tr_stream, free_later);
    /* The session may already be gone: touch only the stream. */
    tr_loop_cancel(st->loop, &st->pump_later);
    tr_loop_cancel(st->loop, &st->start_later);
    tr_wsnap_release(st->ws);
    tr_fields_free(&st->upreq);
    tr_fields_free(&st->held_trailers);
    tr_fields_free(&st->req_trailers);
    tr_fields_free(&st->resp_trailers);
    tr_fields_free(&st->answer_fields);
    tr_fields_free(&st->ext_authz_req);
    free(st);
}

static void stream_maybe_free(struct tr_stream *st)
{
    if (!st->down_done || !st->up_done)
        return;
    stream_log(st);
    tr_timer_cancel(W(st)->loop, &st->timer);
    tr_retry_end(&st->rt, W(st)->loop);
    tr_mirrors_drop(&st->mirrors);    /* launched when the request completed, else incomplete */
    tr_ext_authz_free(st->ext_authz); /* in flight: abandoned */
    st->ext_authz = NULL;
    buf_drop(st, &st->held);
    buf_drop(st, &st->req_pend);
    buf_drop(st, &st->resp_pend);
    buf_drop(st, &st->h1.out);
    buf_drop(st, &st->h1.in);
    tr_h1_body_release(&st->h1.uc.resp, &W(st)->bufs);
    tr_loop_defer(W(st)->loop, &st->free_later, stream_free_now);
}

/* The response went all the way downstream. */
static void resp_complete(struct tr_stream *st)
{
    st->resp_out_end = true;
    tr_timer_cancel(W(st)->loop, &st->timer);
    tr_retry_end(&st->rt, W(st)->loop);
    stream_log(st);
}

/* ---- local replies ---- */

static int grpc_status_for_http(int status, uint16_t flags)
{
    if (flags & TR_RF_UT)
        return GRPC_DEADLINE_EXCEEDED;
    switch (status) {
    case 401: /* an invalid token (request authentication) */
        return GRPC_UNAUTHENTICATED;
    case 403:
        return GRPC_PERMISSION_DENIED;
    case 404:
        return GRPC_UNIMPLEMENTED;
    case 502:
    case 503:
    case 504:
    case 429:
        return GRPC_UNAVAILABLE;
    default:
        return GRPC_INTERNAL;
    }
}

/* Answer the request ourselves. If the response already started, the only
 * thing left is to reset the stream. grpc >= 0: the gRPC status a gRPC
 * request gets (else one derived from status); extra: fields of the
 * route's own answer (tr_decision_fields); the CORS fields of an allowed
 * origin go with every local reply after CORS (st->cors is set then), as
 * Envoy's CORS filter adds them. */
static void local_reply_with(struct tr_stream *st, int status, uint16_t flags, const char *body,
                             int grpc, const struct tr_h2_header *extra, size_t n_extra)
{
    st->flags |= flags;
    tr_retry_end(&st->rt, W(st)->loop);
    tr_mirrors_drop(&st->mirrors);
    if (st->up != TR_SU_LOCAL && st->up != TR_SU_NONE)
        up_release(st, false);
    st->up = TR_SU_LOCAL;
    st->up_done = true;
    st->local = true;
    if (st->resp_head_out || st->resp_out_end) {
        if (st->status == 0)
            st->status = (uint16_t)status;
        stream_log(st);
        down_reset(st, H2_INTERNAL_ERROR);
        return;
    }
    st->status = (uint16_t)status;
    buf_drop(st, &st->resp_pend);
    char code[8], len[24], gs[8];
    snprintf(code, sizeof(code), "%03d", status % 1000);
    struct tr_h2_header h[4 + TR_DECISION_FIELDS + TR_CORS_RESPONSE_FIELDS];
    size_t n = 0, more = 0;
    struct tr_h2_header f[TR_DECISION_FIELDS + TR_CORS_RESPONSE_FIELDS];
    for (size_t i = 0; i < n_extra && i < TR_DECISION_FIELDS; i++)
        f[more++] = extra[i];
    more += tr_cors_response_fields(&st->cors, f + more);
    h[n++] = (struct tr_h2_header){TR_STR_LIT(":status"), tr_str_from(code, 3)};
    if (st->grpc) {
        /* gRPC: a trailers-only response carrying the status. */
        int g = grpc >= 0 ? grpc : grpc_status_for_http(status, flags);
        st->grpc_status = (int16_t)g;
        snprintf(gs, sizeof(gs), "%d", g);
        h[0].value = TR_STR_LIT("200");
        st->status = 200;
        h[n++] = (struct tr_h2_header){TR_STR_LIT("content-type"), TR_STR_LIT("application/grpc")};
        h[n++] = (struct tr_h2_header){TR_STR_LIT("grpc-status"), tr_str_from(gs, strlen(gs))};
        const char *msg = body != NULL ? body : tr_h1_reason(status);
        size_t ml = strlen(msg);
        while (ml > 0 && msg[ml - 1] == '\n')
            ml--;
        h[n++] = (struct tr_h2_header){TR_STR_LIT("grpc-message"), tr_str_from(msg, ml)};
        memcpy(h + n, f, more * sizeof(*f));
        n += more;
        st->resp_head_out = true;
        resp_complete(st);
        down_headers_local(st, h, n, true);
        return;
    }
    size_t bl = body != NULL && st->method_id != TR_H1_M_HEAD ? strlen(body) : 0;
    snprintf(len, sizeof(len), "%zu", body != NULL ? strlen(body) : (size_t)0);
    h[n++] = (struct tr_h2_header){TR_STR_LIT("content-length"), tr_str_from(len, strlen(len))};
    if (body != NULL)
        h[n++] = (struct tr_h2_header){TR_STR_LIT("content-type"), TR_STR_LIT("text/plain")};
    memcpy(h + n, f, more * sizeof(*f));
    n += more;
    st->resp_head_out = true;
    st->resp_bytes = bl;
    if (bl == 0) {
        resp_complete(st);
        down_headers_local(st, h, n, true);
        return;
    }
    if (down_headers_local(st, h, n, false) < 0)
        return;
    st->resp_in_end = true;
    ssize_t taken = down_data(st, (const uint8_t *)body, bl, true);
    if (taken >= 0 && (size_t)taken == bl) {
        resp_complete(st);
        return;
    }
    /* The rest waits for window, all of it (a direct_response body may be
     * larger than a pool buffer: never cut to what one holds). */
    size_t off = taken > 0 ? (size_t)taken : 0;
    if (!buf_reserve(st, &st->resp_pend, bl - off, bl - off)) {
        down_reset(st, H2_INTERNAL_ERROR);
        return;
    }
    tr_buf_append(st->resp_pend, body + off, bl - off);
    st->resp_pend_end = true;
}

static void local_reply(struct tr_stream *st, int status, uint16_t flags, const char *body)
{
    local_reply_with(st, status, flags, body, -1, NULL, 0);
}

/* Bytes moved: an idle deadline starts again (not during a fault delay,
 * which has the timer). */
static void progress(struct tr_stream *st)
{
    if (st->idle_timer && !st->resp_out_end && !st->fault_wait)
        tr_timer_set(W(st)->loop, &st->timer, st->s->lcfg->idle_timeout_ms);
}

/* ---- response direction (upstream -> stream -> downstream) ---- */

static void up_consumed(struct tr_stream *st, size_t n)
{
    if (st->up == TR_SU_H2 && n > 0)
        tr_h2_up_consume(st->h2, n);
}

/* An HTTP/2 header list is bounded by bytes only: hold a response's (and
 * trailers both ways) to limits.max_headers as the HTTP/1.1 parser holds an
 * HTTP/1.1 one, loudly (log line, trellis_limit_exceeded_total), so that no
 * side ever has a list longer than it was sized for. An upstream's excess is
 * an operator's concern (warn); a client's is its own (debug, as other bad
 * requests). */
static bool fields_fit(struct tr_stream *st, const struct tr_h2_header *h, size_t n,
                       const char *what)
{
    uint32_t max = st->ws->snap->h1_limits.max_headers;
    size_t regular = 0;
    for (size_t i = 0; i < n; i++)
        regular += h[i].name.len == 0 || h[i].name.p[0] != ':';
    if (regular <= max)
        return true;
    if (strncmp(what, "request", 7) == 0)
        tr_debug("listener %s: %s from %s has %zu header fields, more than limits.%s (%u)",
                 st->s->lcfg->name, what, st->s->peer_ip, regular,
                 tr_limit_name(TR_LIMIT_MAX_HEADERS), max);
    else
        tr_warn("listener %s: upstream %s %s has %zu header fields, more than limits.%s (%u)",
                st->s->lcfg->name, st->upstream_addr != NULL ? st->upstream_addr : "-", what,
                regular, tr_limit_name(TR_LIMIT_MAX_HEADERS), max);
    tr_metrics_limit(W(st)->metrics, TR_LIMIT_MAX_HEADERS);
    return false;
}

/* The final response head with what the proxy adds: the CORS fields of an
 * allowed origin, which replace the upstream's fields of the same names,
 * and a cookie consistent hashing generated (after the upstream's fields,
 * so its own Set-Cookie fields stay first). fields_fit holds the upstream's
 * list to limits.max_headers (at most the codec's cap). */
static void down_headers_added(struct tr_stream *st, const struct tr_h2_header *h, size_t n,
                               bool end)
{
    struct tr_h2_header set[TR_CORS_RESPONSE_FIELDS];
    struct tr_h2_header out[TR_H1_MAX_HEADERS_CAP + 8 + TR_CORS_RESPONSE_FIELDS + 1];
    size_t ns = st->cors.policy != NULL ? tr_cors_response_fields(&st->cors, set) : 0, no = 0;
    for (size_t i = 0; i < n && no < TR_H1_MAX_HEADERS_CAP + 8; i++) {
        if (!tr_field_named_in(h[i].name, set, ns))
            out[no++] = h[i];
    }
    memcpy(out + no, set, ns * sizeof(*set));
    no += ns;
    char cookie[TR_LB_COOKIE_MAX];
    size_t len = st->lb_cookie != 0 ? tr_lb_cookie_format(&st->cluster->cfg->hash, st->lb_cookie,
                                                          cookie, sizeof(cookie))
                                    : 0;
    if (len > 0)
        out[no++] = (struct tr_h2_header){TR_STR_LIT("set-cookie"), tr_str_from(cookie, len)};
    down_headers(st, out, no, end);
}

static void resp_headers(struct tr_stream *st, const struct tr_h2_header *h, size_t n, bool end)
{
    if (st->down_done)
        return;
    if (!fields_fit(st, h, n, "response")) {
        local_reply(st, 502, TR_RF_UPE, "upstream response has too many header fields\n");
        return;
    }
    int si = tr_fields_find(h, n, ":status");
    int status = si >= 0 && h[si].value.len == 3
                     ? (h[si].value.p[0] - '0') * 100 + (h[si].value.p[1] - '0') * 10 +
                           (h[si].value.p[2] - '0')
                     : 0;
    if (status < 100 || status > 999) {
        local_reply(st, 502, TR_RF_UPE, "upstream sent an invalid response\n");
        return;
    }
    if (status < 200) {
        if (status != 101) /* interim responses go through; 101 has no meaning here */
            down_headers(st, h, n, false);
        return;
    }
    struct tr_h2_header edited[EDITED_MAX];
    if (st->resp_edit != NULL) {
        int m = tr_header_edit_fields(st->resp_edit, h, n, edited, EDITED_MAX);
        if (m < 0 || !edited_fits(st, edited, (size_t)m)) {
            edit_over_limit(st, "response");
            local_reply(st, 502, TR_RF_HO, "response header edits exceed the proxy's limits\n");
            return;
        }
        h = edited;
        n = (size_t)m;
    }
    st->status = (uint16_t)status;
    int g = tr_fields_find(h, n, "grpc-status");
    if (g >= 0)
        st->grpc_status = (int16_t)tr_grpc_status_parse(h[g].value);
    tr_retry_try_done(&st->rt, W(st)->loop);
    st->resp_head_out = true;
    if (end) {
        st->resp_in_end = true;
        resp_complete(st);
    }
    if (st->cors.policy != NULL || st->lb_cookie != 0) {
        down_headers_added(st, h, n, end);
        return;
    }
    if (down_headers(st, h, n, end) < 0)
        return;
}

static void resp_data(struct tr_stream *st, const uint8_t *p, size_t len, bool end)
{
    if (st->down_done) {
        up_consumed(st, len);
        return;
    }
    st->resp_bytes += len;
    progress(st);
    if (end)
        st->resp_in_end = true;
    if (st->resp_pend != NULL && tr_buf_len(st->resp_pend) > 0) {
        if (!buf_reserve(st, &st->resp_pend, len, pend_max(st))) {
            /* More than a window: the peer broke flow control. */
            local_reply(st, 502, TR_RF_UPE, NULL);
            return;
        }
        tr_buf_append(st->resp_pend, p, len);
        st->resp_pend_end = end;
        return;
    }
    ssize_t taken = down_data(st, p, len, end);
    if (taken < 0)
        return; /* downstream gone: it resets us */
    up_consumed(st, (size_t)taken);
    if ((size_t)taken == len) {
        if (end)
            resp_complete(st);
        return;
    }
    if (!buf_reserve(st, &st->resp_pend, len - (size_t)taken, pend_max(st))) {
        local_reply(st, 502, TR_RF_UPE, NULL);
        return;
    }
    tr_buf_append(st->resp_pend, p + taken, len - (size_t)taken);
    st->resp_pend_end = end;
}

static void resp_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n)
{
    if (st->down_done)
        return;
    if (!fields_fit(st, h, n, "trailers")) {
        local_reply(st, 502, TR_RF_UPE, NULL); /* the response started: a reset */
        return;
    }
    int g = tr_fields_find(h, n, "grpc-status");
    if (g >= 0)
        st->grpc_status = (int16_t)tr_grpc_status_parse(h[g].value);
    st->resp_in_end = true;
    if (st->resp_pend != NULL && tr_buf_len(st->resp_pend) > 0) {
        /* Behind body bytes still waiting: keep a copy. */
        size_t bytes = 0;
        for (size_t i = 0; i < n; i++)
            bytes += h[i].name.len + h[i].value.len;
        if (tr_fields_init(&st->resp_trailers, (uint32_t)n + 1, (uint32_t)bytes + 1) < 0) {
            down_reset(st, H2_INTERNAL_ERROR);
            return;
        }
        for (size_t i = 0; i < n; i++)
            tr_fields_add(&st->resp_trailers, h[i].name, h[i].value);
        return;
    }
    resp_complete(st);
    down_trailers(st, h, n);
}

static void resp_flush_pending(struct tr_stream *st)
{
    while (st->resp_pend != NULL && tr_buf_len(st->resp_pend) > 0 && !st->down_done) {
        uint32_t len = tr_buf_len(st->resp_pend);
        bool end = st->resp_pend_end && st->resp_trailers.v == NULL;
        ssize_t taken = down_data(st, (const uint8_t *)tr_buf_head(st->resp_pend), len, end);
        if (taken <= 0)
            return;
        progress(st);
        tr_buf_consume(st->resp_pend, (uint32_t)taken);
        up_consumed(st, (size_t)taken);
        if ((uint32_t)taken < len)
            return;
        if (end)
            resp_complete(st);
    }
    if (st->resp_pend != NULL && tr_buf_len(st->resp_pend) == 0)
        buf_drop(st, &st->resp_pend);
    if (st->resp_trailers.v != NULL && !st->down_done) {
        resp_complete(st);
        down_trailers(st, st->resp_trailers.v, st->resp_trailers.n);
        tr_fields_free(&st->resp_trailers);
    }
}

void tr_stream_resp_resume(struct tr_stream *st)
{
    resp_flush_pending(st);
    if (up_is_conn(st) && st->h1.uc.up != NULL)
        h1_pump(st);
}

/* ---- request direction (downstream -> stream -> upstream) ---- */

static ssize_t h1_send(struct tr_stream *st, const uint8_t *p, size_t len, bool end);
static int h1_send_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n);

/* up_send result: the upstream side cannot take bytes yet (not connected,
 * or its stream not submitted). */
#define UP_NOT_READY (-2)

static ssize_t up_send(struct tr_stream *st, const uint8_t *p, size_t len, bool end)
{
    if (st->up_done)
        return (ssize_t)len; /* the response is complete: the rest is not wanted */
    switch (st->up) {
    case TR_SU_H2:
        if (!tr_h2_up_ready(st->h2))
            return UP_NOT_READY;
        return tr_h2_up_send(st->h2, p, len, end);
    case TR_SU_H1:
    case TR_SU_TUNNEL:
        return h1_send(st, p, len, end); /* queued behind the head, even before connect */
    case TR_SU_NONE:
        return UP_NOT_READY;
    default:
        return (ssize_t)len; /* answered locally: the body is discarded */
    }
}

static int up_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n)
{
    switch (st->up) {
    case TR_SU_H2:
        return tr_h2_up_trailers(st->h2, h, n);
    case TR_SU_H1:
        return h1_send_trailers(st, h, n);
    default:
        return 0;
    }
}

bool tr_stream_req_blocked(const struct tr_stream *st)
{
    return (st->req_pend != NULL && tr_buf_len(st->req_pend) > 0) || st->req_pend_end ||
           st->replaying || st->rt.waiting;
}

/* n body bytes at p went to the upstream side: a copy is kept for a retry
 * while the route's policy wants one and it fits max_body_for_retry; past
 * that the request can no longer go again once bytes left (spent). */
static void held_note(struct tr_stream *st, const uint8_t *p, size_t n)
{
    if (n == 0 || st->spent)
        return;
    uint32_t max = st->hold_body ? st->rt.policy->max_body : 0;
    size_t have = st->held != NULL ? tr_buf_len(st->held) : 0;
    if (have + n > max || !buf_reserve(st, &st->held, n, max)) {
        st->spent = true;
        buf_drop(st, &st->held);
        return;
    }
    tr_buf_append(st->held, p, n);
}

/* The request's trailers went to the upstream side: copied as the body is. */
static void held_note_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n)
{
    if (st->spent)
        return;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += h[i].name.len + h[i].value.len;
    tr_fields_free(&st->held_trailers);
    if (!st->hold_body ||
        tr_fields_init(&st->held_trailers, (uint32_t)n + 1, (uint32_t)bytes + 1) < 0) {
        st->spent = true;
        buf_drop(st, &st->held);
        return;
    }
    for (size_t i = 0; i < n; i++)
        tr_fields_add(&st->held_trailers, h[i].name, h[i].value);
}

/* A retry sends the held copy of the body again, first. True once it is
 * all out (or there was none). */
static bool req_replay(struct tr_stream *st)
{
    while (st->replaying) {
        uint32_t len = st->held != NULL ? tr_buf_len(st->held) : 0;
        if (st->replay_off >= len) {
            st->replaying = false;
            /* An HTTP/1.1 client stopped reading while the copy went. */
            if (st->down == TR_SD_H1 && !tr_stream_req_blocked(st) && !st->down_done)
                tr_http_session_wake(st);
            break;
        }
        ssize_t taken = up_send(st, (const uint8_t *)tr_buf_head(st->held) + st->replay_off,
                                len - st->replay_off, false);
        if (taken == -1) {
            local_reply(st, 503, TR_RF_UC, NULL);
            return false;
        }
        if (taken <= 0)
            return false; /* not ready, or no room: on_writable / the pump call again */
        progress(st);
        st->replay_off += (uint32_t)taken;
    }
    return true;
}

/* The request ended (END_STREAM) behind bytes that waited: pass the end on. */
static void req_send_end(struct tr_stream *st)
{
    ssize_t taken = up_send(st, NULL, 0, true);
    if (taken == -1) {
        local_reply(st, 503, TR_RF_UC, NULL);
        return;
    }
    if (taken >= 0) {
        st->req_pend_end = false;
        st->req_out_end = true;
    }
}

static void req_flush_pending(struct tr_stream *st)
{
    if (!req_replay(st))
        return;
    while (st->req_pend != NULL && tr_buf_len(st->req_pend) > 0) {
        uint32_t len = tr_buf_len(st->req_pend);
        bool end = st->req_pend_end && st->req_trailers.v == NULL;
        ssize_t taken = up_send(st, (const uint8_t *)tr_buf_head(st->req_pend), len, end);
        if (taken == -1) {
            local_reply(st, 503, TR_RF_UC, NULL);
            return;
        }
        if (taken <= 0)
            return; /* not ready, or no room: on_writable / the pump call again */
        progress(st);
        held_note(st, (const uint8_t *)tr_buf_head(st->req_pend), (size_t)taken);
        tr_buf_consume(st->req_pend, (uint32_t)taken);
        down_consumed(st, (size_t)taken);
        if ((uint32_t)taken < len)
            return;
        if (end) {
            st->req_pend_end = false;
            st->req_out_end = true;
        }
    }
    if (st->req_pend != NULL)
        buf_drop(st, &st->req_pend);
    if (st->req_pend_end && st->req_trailers.v == NULL)
        req_send_end(st);
    if (st->req_trailers.v != NULL) {
        if (up_trailers(st, st->req_trailers.v, st->req_trailers.n) == 0) {
            held_note_trailers(st, st->req_trailers.v, st->req_trailers.n);
            st->req_pend_end = false;
            st->req_out_end = true;
            tr_fields_free(&st->req_trailers);
        } else if (st->up == TR_SU_H1) {
            /* An HTTP/1.1 side fails only without memory; an HTTP/2 one
             * that is not ready yet calls again. */
            local_reply(st, 503, TR_RF_DPE, NULL);
        }
    }
}

/* The whole request arrived: a try in flight starts its per_try_timeout,
 * and the shadows go once the upstream side started (an HTTP/2 stream the
 * client resets in the batch that opened it costs no shadow either). */
static void req_complete(struct tr_stream *st)
{
    st->req_in_end = true;
    if (st->try_connected)
        tr_retry_try_armed(&st->rt, W(st)->loop);
    if (st->up != TR_SU_NONE)
        tr_mirrors_launch(&st->mirrors);
}

void tr_stream_req_data(struct tr_stream *st, const uint8_t *p, size_t len, bool end)
{
    st->req_bytes += len;
    progress(st);
    tr_mirrors_data(&st->mirrors, p, len, end);
    if (end)
        req_complete(st);
    if (st->up == TR_SU_LOCAL || st->up_done) {
        down_consumed(st, len);
        return;
    }
    size_t off = 0;
    if (!tr_stream_req_blocked(st)) {
        ssize_t taken = len == 0 && !end ? 0 : up_send(st, p, len, end);
        if (taken == -1) {
            local_reply(st, 503, TR_RF_UC, NULL);
            return;
        }
        if (taken > 0) {
            held_note(st, p, (size_t)taken);
            down_consumed(st, (size_t)taken);
            off = (size_t)taken;
        }
        if (taken >= 0 && (size_t)taken == len) {
            if (end)
                st->req_out_end = true;
            return;
        }
    }
    /* Keep the rest; the producer is stopped until it moves on. */
    if (len > off) {
        if (!buf_reserve(st, &st->req_pend, len - off, pend_max(st))) {
            local_reply(st, 400, TR_RF_DPE, NULL); /* beyond the window we granted */
            return;
        }
        tr_buf_append(st->req_pend, p + off, len - off);
    }
    if (end)
        st->req_pend_end = true;
    /* An HTTP/1.1 upstream that took part of it may have drained its output
     * already (no write event will come): look again after this batch. */
    if (up_is_conn(st) && st->h1.uc.up != NULL && st->h1.ready)
        tr_loop_defer(W(st)->loop, &st->pump_later, h1_pump_later);
}

void tr_stream_req_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n)
{
    st->req_in_end = true;
    if (st->up == TR_SU_LOCAL)
        return;
    if (!fields_fit(st, h, n, "request trailers")) {
        local_reply(st, 431, TR_RF_DPE, "request trailer fields too many\n");
        return;
    }
    tr_mirrors_trailers(&st->mirrors, h, n);
    req_complete(st);
    if (tr_stream_req_blocked(st) || st->up == TR_SU_NONE ||
        (st->up == TR_SU_H2 && up_trailers(st, h, n) < 0)) {
        size_t bytes = 0;
        for (size_t i = 0; i < n; i++)
            bytes += h[i].name.len + h[i].value.len;
        tr_fields_free(&st->req_trailers);
        if (tr_fields_init(&st->req_trailers, (uint32_t)n + 1, (uint32_t)bytes + 1) < 0) {
            local_reply(st, 503, TR_RF_DPE, NULL);
            return;
        }
        for (size_t i = 0; i < n; i++)
            tr_fields_add(&st->req_trailers, h[i].name, h[i].value);
        return;
    }
    if (st->up == TR_SU_H1 && h1_send_trailers(st, h, n) < 0) {
        local_reply(st, 503, TR_RF_DPE, NULL); /* no memory: never a request without its end */
        return;
    }
    if (st->up == TR_SU_TUNNEL)
        h1_send(st, NULL, 0, true); /* trailers end a tunnel like END_STREAM */
    else
        held_note_trailers(st, h, n);
    st->req_out_end = true;
}

/* ---- timer ---- */

static void stream_on_timer(struct tr_timer *t)
{
    struct tr_stream *st = tr_container_of(t, struct tr_stream, timer);
    if (st->fault_wait) {
        /* The route's fault delay is over: its answer, or the upstream
         * (unless the stream was answered meanwhile: a client that broke
         * flow control, too many trailers). */
        st->fault_wait = false;
        if (st->down_done || st->up != TR_SU_NONE)
            return;
        if (st->answer_held) {
            local_reply_with(st, st->answer_status, 0, st->answer_body,
                             st->answer_grpc ? st->answer_grpc_status : -1, st->answer_fields.v,
                             st->answer_fields.n);
            return;
        }
        tr_timer_set(W(st)->loop, &st->timer, st->fault_timeout_ms);
        up_begin(st);
        return;
    }
    if (st->resp_out_end)
        return;
    if (!st->resp_head_out) {
        tr_endpoint_report(st->up == TR_SU_H2 ? st->ep : st->h1.uc.ep, TR_OUTCOME_TIMEOUT,
                           tr_loop_now_ms(W(st)->loop));
        local_reply(st, 504, TR_RF_UT, "upstream request timeout\n");
        return;
    }
    st->flags |= TR_RF_UT;
    up_release(st, false);
    st->up_done = true;
    stream_log(st);
    down_reset(st, H2_CANCEL);
}

/* ---- start ---- */

struct tr_stream *tr_stream_new(struct tr_session *s, int down, int32_t id)
{
    struct tr_stream *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    /* A new HTTP/2 stream is a new request: a reload since the connection's
     * previous one applies to it (an HTTP/1.1 session adopts before it hands
     * a request to a stream). Streams in flight keep their own snapshot. */
    if (down == TR_SD_H2 && !s->h2.listener_gone && !tr_session_adopt_current(s)) {
        tr_info("listener %s: gone from the configuration; the HTTP/2 connection from %s "
                "finishes its streams on generation %llu and gets GOAWAY",
                s->lcfg->name, s->peer_ip, (unsigned long long)s->ws->snap->generation);
        s->h2.listener_gone = true;
    }
    st->s = s;
    st->loop = s->w->loop;
    st->ws = s->ws;
    tr_wsnap_use(st->ws);
    st->down = (uint8_t)down;
    st->id = id;
    st->grpc_status = -1;
    st->proto = down == TR_SD_H2 ? TR_REQ_PROTO_HTTP2 : TR_REQ_PROTO_HTTP;
    st->start_us = tr_loop_now_us(s->w->loop);
    tr_timer_init(&st->timer, stream_on_timer);
    return st;
}

/* Rewrite the request for the upstream into st->upreq: the route's
 * rewrites, X-Forwarded-*, X-Request-Id, hop-by-hop removal. path: the
 * target decided on (normalised, proxy/decide.h), which replaces :path. */
#define UPREQ_REWRITE_FAILED (-1000) /* build_upreq: not one of tr_filter's codes */

static int build_upreq(struct tr_stream *st, const struct tr_h2_header *h, size_t n, tr_str path,
                       bool to_h2)
{
    struct tr_session *s = st->s;
    const struct tr_listener_cfg *l = s->lcfg;
    const struct tr_route_cfg *route = st->route;
    size_t bytes = UPREQ_EXTRA_BYTES + strlen(s->peer_ip);
    for (size_t i = 0; i < n; i++)
        bytes += h[i].name.len + h[i].value.len;
    /* The path as it goes up: a rewrite's may be longer than the one received. */
    struct tr_path_rewrite upath = tr_route_rewrite_path(route, path);
    if (upath.failed)
        return UPREQ_REWRITE_FAILED;
    bytes += upath.head.len + upath.tail.len;
    if (route->host_rewrite != NULL)
        bytes += strlen(route->host_rewrite);
    const struct tr_header_edit *ed = st->req_edit;
    uint32_t edit_fields = ed != NULL ? ed->n_emit : 0;
    if (ed != NULL)
        bytes += ed->emit_bytes;
    tr_fields_free(&st->upreq);
    if (tr_fields_init(&st->upreq, (uint32_t)n + UPREQ_EXTRA_FIELDS + edit_fields,
                       (uint32_t)bytes) < 0)
        return -1;
    struct tr_fields *f = &st->upreq;
    int mi = tr_fields_find(h, n, ":method"), ai = tr_fields_find(h, n, ":authority");
    tr_str auth = ai >= 0 ? h[ai].value : TR_STR_LIT("");
    if (ai < 0) {
        int hi = tr_fields_find(h, n, "host");
        if (hi >= 0)
            auth = h[hi].value;
    }
    if (route->host_rewrite != NULL)
        auth = tr_str_from(route->host_rewrite, strlen(route->host_rewrite));
    if (auth.len == 0) {
        const char *dest =
            st->cluster->cfg->service != NULL ? st->cluster->cfg->service : st->cluster->cfg->name;
        auth = tr_str_from(dest, strlen(dest));
    }
    bool tls = st->cluster->tls != NULL;
    if (tr_fields_add(f, TR_STR_LIT(":method"), h[mi].value) < 0 ||
        tr_fields_add(f, TR_STR_LIT(":scheme"), tls ? TR_STR_LIT("https") : TR_STR_LIT("http")) <
            0 ||
        tr_fields_add(f, TR_STR_LIT(":authority"), auth) < 0 ||
        tr_fields_add_joined(f, TR_STR_LIT(":path"), upath.head, upath.tail) < 0)
        return -1;
    /* The listener's policy (filter/headers.h), as for HTTP/1.1 text.
     * X-Forwarded-For: every received value joined, then the peer; its
     * exact length is known, so it is written once, in place. */
    size_t xlen = strlen(s->peer_ip);
    bool rid_kept = false;
    st->request_id[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        tr_str name = h[i].name;
        if (name.len > 0 && name.p[0] == ':')
            continue;
        if (tr_fields_is_hop_by_hop(name)) {
            /* "te: trailers" is the one TE value HTTP/2 allows; gRPC needs it. */
            if (!(TR_STR_EQ_LIT(name, "te") && TR_STR_IEQ_LIT(h[i].value, "trailers")))
                continue;
        }
        switch (
            tr_request_header_verdict(l->xff, l->xfp, l->request_id, name, h[i].value, &rid_kept)) {
        case TR_RH_DROP:
        case TR_RH_HOST: /* :authority carries it */
            continue;
        case TR_RH_XFF:
            if (h[i].value.len > 0)
                xlen += h[i].value.len + 2;
            continue;
        case TR_RH_REQUEST_ID:
            tr_str_to_cstr(st->request_id, sizeof(st->request_id), h[i].value);
            break;
        case TR_RH_PASS:
            break;
        }
        if (ed != NULL && tr_header_edit_drops(ed, name))
            continue; /* the route's edits come after the listener's policy */
        if (tr_fields_add(f, name, h[i].value) < 0)
            return -1;
    }
    if (l->xff == TR_XFF_APPEND && !tr_header_edit_drops(ed, TR_STR_LIT("x-forwarded-for"))) {
        char *x = tr_fields_add_space(f, TR_STR_LIT("x-forwarded-for"), xlen);
        if (x == NULL)
            return -1;
        for (size_t i = 0; i < n; i++) {
            if (!TR_STR_EQ_LIT(h[i].name, "x-forwarded-for") || h[i].value.len == 0)
                continue;
            memcpy(x, h[i].value.p, h[i].value.len);
            memcpy(x + h[i].value.len, ", ", 2);
            x += h[i].value.len + 2;
        }
        memcpy(x, s->peer_ip, strlen(s->peer_ip));
    }
    if (l->xfp && !tr_header_edit_drops(ed, TR_STR_LIT("x-forwarded-proto")) &&
        tr_fields_add_cstr(f, "x-forwarded-proto",
                           s->principal != NULL || s->down.ssl != NULL ? "https" : "http") < 0)
        return -1;
    if (l->request_id != TR_REQID_OFF && !rid_kept) {
        struct tr_worker *w = W(st);
        uint64_t a = ((uint64_t)tr_worker_rand(w) << 32) | tr_worker_rand(w);
        uint64_t b = ((uint64_t)tr_worker_rand(w) << 32) | tr_worker_rand(w);
        tr_request_id_format(st->request_id, a, b);
        if (!tr_header_edit_drops(ed, TR_STR_LIT("x-request-id")) &&
            tr_fields_add_cstr(f, "x-request-id", st->request_id) < 0)
            return -1;
    }
    /* Over an mTLS hop (a trellis peer) in another protocol than the
     * client's, say what the client spoke. */
    if (st->cluster->cfg->mesh_tls && to_h2 != st->orig_h2 &&
        tr_fields_add(f, ORIG_PROTO, st->orig_h2 ? TR_STR_LIT("HTTP/2") : TR_STR_LIT("HTTP/1.1")) <
            0)
        return -1;
    for (uint32_t i = 0; i < edit_fields; i++) {
        const struct tr_header_edit_field *e = &ed->emit[i];
        if (tr_fields_add(f, tr_str_from(e->name, e->name_len),
                          tr_str_from(e->value, e->value_len)) < 0)
            return -1;
    }
    if (ed != NULL && !edited_fits(st, f->v, f->n))
        return TR_FILTER_OVER_LIMIT;
    return 0;
}

static void stream_start_later(struct tr_deferred *d)
{
    struct tr_stream *st = tr_container_of(d, struct tr_stream, start_later);
    if (st->down_done || st->up != TR_SU_NONE)
        return; /* reset meanwhile, or answered locally */
    up_begin(st);
}

bool tr_stream_orig_h2(const struct tr_session *s, const struct tr_h2_header *h, size_t n,
                       bool down_h2)
{
    if (s->principal == NULL)
        return down_h2; /* only a verified mesh peer may say */
    int i = tr_fields_find(h, n, "trellis-orig-proto");
    if (i < 0)
        return down_h2;
    if (TR_STR_EQ_LIT(h[i].value, "HTTP/2"))
        return true;
    if (TR_STR_EQ_LIT(h[i].value, "HTTP/1.1"))
        return false;
    return down_h2;
}

static bool want_h2(struct tr_stream *st, const struct tr_h2_header *h, size_t n)
{
    switch (st->cluster->cfg->protocol) {
    case TR_UPROTO_HTTP2:
        return true;
    case TR_UPROTO_ORIGINAL:
        (void)h, (void)n;
        return st->orig_h2;
    default:
        return false;
    }
}

static void begin_upstream(struct tr_stream *st, const struct tr_h2_header *h, size_t n,
                           tr_str path, bool end_stream)
{
    bool h2 = want_h2(st, h, n);
    int rc = build_upreq(st, h, n, path, h2);
    if (rc == UPREQ_REWRITE_FAILED) {
        local_reply(st, 500, 0, "the route's path rewrite could not be made\n");
        return;
    }
    if (rc == TR_FILTER_OVER_LIMIT) {
        edit_over_limit(st, "request");
        local_reply(st, 500, TR_RF_HO, "request header edits exceed the proxy's limits\n");
        return;
    }
    if (rc < 0) {
        local_reply(st, 431, TR_RF_DPE, "request header fields too large\n");
        return;
    }
    uint64_t timeout = st->route->timeout_ms;
    int gt = tr_fields_find(h, n, "grpc-timeout");
    if (st->grpc && gt >= 0) {
        uint64_t g = tr_grpc_timeout_ms(h[gt].value);
        if (g != 0 && (timeout == 0 || g < timeout))
            timeout = g;
    }
    if (timeout == 0) {
        /* No deadline for the exchange: it may last as long as bytes keep
         * moving; silence for the listener's idle timeout ends it, as on
         * HTTP/1.1. */
        timeout = st->s->lcfg->idle_timeout_ms;
        st->idle_timer = true;
    }
    st->req_has_body = !end_stream;
    /* Retries and shadows: the route's policy, and a copy of the request as
     * the upstream gets it (gRPC is not mirrored: shadows speak HTTP/1.1). */
    int mi = tr_fields_find(h, n, ":method");
    bool idempotent = mi >= 0 && tr_retry_method_idempotent(h[mi].value);
    tr_retry_begin(&st->rt, st->cluster, &st->route->retries, idempotent, stream_on_retry_timer);
    st->hold_body = tr_retry_wants_body(&st->route->retries, idempotent);
    if (st->route->n_mirrors > 0 && st->grpc)
        tr_mirrors_unsupported(W(st), st->route);
    else if (st->route->n_mirrors > 0)
        tr_mirrors_start_fields(
            &st->mirrors, W(st), st->ws, st->route, st->upreq.v, st->upreq.n, !end_stream,
            st->route->timeout_ms != 0 ? st->route->timeout_ms : st->s->lcfg->idle_timeout_ms);
    if (end_stream) {
        /* The whole request is its head: once that is out, the upstream
         * has all of it (and a pooled connection may be reused). */
        st->req_in_end = true;
        st->req_out_end = true;
    }
    st->up_next = h2 ? TR_SU_H2 : TR_SU_H1;
    if (st->fault_delay_ms != 0) {
        /* The route's fault delay first (stream_on_timer goes on); body
         * bytes wait in the stream (TR_SU_NONE), bounded as below. */
        st->fault_timeout_ms = timeout;
        st->fault_wait = true;
        tr_timer_set(W(st)->loop, &st->timer, st->fault_delay_ms);
        return;
    }
    tr_timer_set(W(st)->loop, &st->timer, timeout);
    if (st->down == TR_SD_H2) {
        /* Start the upstream after this read batch: a stream the client
         * resets in the same batch (rapid reset) never costs a connection.
         * Body bytes meanwhile wait in the stream (TR_SU_NONE). */
        tr_loop_defer(W(st)->loop, &st->start_later, stream_start_later);
        return;
    }
    up_begin(st);
}

/* The route's own answer (proxy/decide.h), now or when its fault delay
 * ends. A redirect's Location is built from the request into
 * answer_fields, which outlives the request's header list (a stream is
 * one allocation; so are its field lists, made for this answer only). */
static void stream_answer(struct tr_stream *st, const struct tr_decision *d, tr_str scheme,
                          tr_str authority, tr_str path)
{
    tr_str location = {0};
    if (d->redirect) {
        struct tr_location loc;
        struct tr_redirect_request rq = {scheme, authority, path};
        tr_redirect_location(d->route, &rq, &loc);
        char *v = NULL;
        if (tr_fields_init(&st->answer_fields, 1, (uint32_t)(loc.len + 8)) == 0)
            v = tr_fields_add_space(&st->answer_fields, TR_STR_LIT("location"), loc.len);
        if (v == NULL) {
            local_reply(st, 503, 0, "out of memory\n");
            return;
        }
        tr_location_write(&loc, v);
        location = st->answer_fields.v[0].value;
    }
    struct tr_h2_header extra[TR_DECISION_FIELDS];
    size_t n = tr_decision_fields(d, location, extra);
    if (d->delay_ms == 0) {
        local_reply_with(st, d->status, d->flags, d->body, d->grpc ? d->grpc_status : -1, extra, n);
        return;
    }
    /* Held until the delay ends: the answer's fields (a preflight's are
     * slices of the request) are copied into answer_fields; the rest is
     * static. */
    struct tr_fields held = {0};
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += extra[i].name.len + extra[i].value.len;
    bool ok = n == 0 || tr_fields_init(&held, (uint32_t)n, (uint32_t)bytes) == 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = tr_fields_add(&held, extra[i].name, extra[i].value) == 0;
    if (!ok) {
        tr_fields_free(&held);
        local_reply(st, 503, 0, "out of memory\n");
        return;
    }
    tr_fields_free(&st->answer_fields);
    st->answer_fields = held;
    st->flags |= d->flags;
    st->answer_held = true;
    st->answer_status = d->status;
    st->answer_body = d->body;
    st->answer_grpc = d->grpc;
    st->answer_grpc_status = d->grpc_status;
    st->fault_wait = true;
    tr_timer_set(W(st)->loop, &st->timer, d->delay_ms);
}

/* CONNECT (RFC 9113 8.5): a TCP tunnel to the route's cluster, carried in
 * the stream's DATA frames. Only routes that name CONNECT in their methods
 * take it (a catch-all HTTP route never turns into a tunnel); the route is
 * matched with the authority as host and "/" as path. */
static void start_tunnel(struct tr_stream *st, tr_str authority)
{
    struct tr_session *s = st->s;
    struct tr_snapshot *snap = st->ws->snap;
    if (!tr_h1_is_authority(authority, 1)) {
        local_reply(st, 400, TR_RF_DPE, NULL);
        return;
    }
    const struct tr_router *router = snap->routers[s->lcfg->route_table];
    struct tr_route_request rr = {
        .host = authority,
        .path = TR_STR_LIT("/"),
        .method = TR_STR_LIT("CONNECT"),
        .scheme =
            s->principal != NULL || s->down.ssl != NULL ? TR_STR_LIT("https") : TR_STR_LIT("http"),
    };
    const struct tr_route_cfg *route = tr_router_match(router, &rr);
    const struct tr_authz *az = snap->authz[s->lidx];
    struct tr_authz_request aq;
    if (az != NULL) {
        tr_authz_conn_attrs(s, &aq);
        aq.http = true;
        aq.method = TR_STR_LIT("CONNECT");
        aq.host = authority;
        aq.path = TR_STR_LIT("/");
    }
    if (az != NULL &&
        tr_authz_denied(s, az, &aq, "CONNECT request", &st->authz_policy, &st->authz_rule)) {
        local_reply(st, 403, TR_RF_RBAC, "RBAC: access denied");
        return;
    }
    bool named = false;
    for (size_t i = 0; route != NULL && i < route->n_methods; i++)
        named |= strcmp(route->methods[i], "CONNECT") == 0;
    if (route == NULL || !named || route->direct_status != 0) {
        local_reply(st, route == NULL ? 404 : 405, TR_RF_NR, "no CONNECT route\n");
        return;
    }
    st->route = route;
    int ci = tr_route_pick_cluster(route, tr_worker_rand(W(st)));
    if (ci < 0) {
        local_reply(st, 503, TR_RF_UH, "no healthy upstream\n");
        return;
    }
    st->cluster = &st->ws->clusters[ci];
    st->up = TR_SU_TUNNEL;
    st->req_has_body = true;
    /* Only a connect failure can be retried: CONNECT is not idempotent. */
    tr_retry_begin(&st->rt, st->cluster, &route->retries, false, stream_on_retry_timer);
    st->idle_timer = route->timeout_ms == 0;
    tr_timer_set(W(st)->loop, &st->timer,
                 route->timeout_ms != 0 ? route->timeout_ms : s->lcfg->idle_timeout_ms);
    up_start(st, true);
}

/* The external authorization check is over: the kept request again,
 * decided with its outcome (unless the stream was answered or closed
 * meanwhile: a client that broke flow control). */
static void stream_on_ext_authz(void *owner)
{
    struct tr_stream *st = owner;
    if (st->down_done || st->up != TR_SU_NONE)
        return;
    tr_stream_request(st, st->ext_authz_req.v, st->ext_authz_req.n, st->ext_authz_end_stream);
}

void tr_stream_request(struct tr_stream *st, const struct tr_h2_header *h, size_t n,
                       bool end_stream)
{
    struct tr_session *s = st->s;
    int mi = tr_fields_find(h, n, ":method"), pi = tr_fields_find(h, n, ":path"),
        ai = tr_fields_find(h, n, ":authority");
    tr_str method = mi >= 0 ? h[mi].value : TR_STR_LIT("");
    tr_str path = pi >= 0 ? h[pi].value : TR_STR_LIT("");
    tr_str host = ai >= 0 ? h[ai].value : TR_STR_LIT("");
    if (ai < 0) {
        int hi = tr_fields_find(h, n, "host");
        if (hi >= 0)
            host = h[hi].value;
    }
    if (!tr_str_to_cstr(st->method, sizeof(st->method), method))
        st->log_cut = true;
    if (!tr_str_to_cstr(st->path, sizeof(st->path), path))
        st->log_cut = true;
    if (!tr_str_to_cstr(st->authority, sizeof(st->authority), host))
        st->log_cut = true;
    st->method_id = TR_STR_EQ_LIT(method, "HEAD")      ? TR_H1_M_HEAD
                    : TR_STR_EQ_LIT(method, "CONNECT") ? TR_H1_M_CONNECT
                    : TR_STR_EQ_LIT(method, "GET")     ? TR_H1_M_GET
                                                       : TR_H1_M_OTHER;
    int ct = tr_fields_find(h, n, "content-type");
    if (ct >= 0 && h[ct].value.len >= 16 && strncmp(h[ct].value.p, "application/grpc", 16) == 0 &&
        (h[ct].value.len == 16 || h[ct].value.p[16] == '+' || h[ct].value.p[16] == ';')) {
        st->grpc = true;
        st->proto = TR_REQ_PROTO_GRPC;
    }
    st->orig_h2 = tr_stream_orig_h2(s, h, n, true);
    if (end_stream)
        st->req_in_end = true;
    /* What the HTTP/1.1 parser refuses is refused here too, before routing:
     * never forwarded, whatever protocol the upstream speaks. */
    const char *why;
    int refuse = tr_fields_check_request(h, n, &st->ws->snap->h1_limits, &why);
    if (refuse != 0) {
        tr_metrics_count(W(st)->metrics, TR_C_HTTP_PARSE_ERRORS, 1);
        if (refuse == 431)
            tr_metrics_limit(W(st)->metrics, TR_LIMIT_MAX_HEADERS);
        tr_debug("listener %s: bad HTTP/2 request from %s (stream %d): %s", s->lcfg->name,
                 s->peer_ip, (int)st->id, why);
        local_reply(st, refuse, TR_RF_DPE, NULL);
        return;
    }
    if (st->method_id == TR_H1_M_CONNECT) {
        start_tunnel(st, host);
        return;
    }
    if (pi < 0 || mi < 0) {
        local_reply(st, 400, TR_RF_DPE, NULL);
        return;
    }
    struct tr_decision d;
    tr_decide(s, host, path, method, (const struct tr_str_pair *)h, (uint32_t)n, st->ext_authz, &d);
    if (d.ext_authz != 0) {
        /* A CUSTOM policy asks its external authorizer first: the header
         * list is kept (it lives only as long as this call) and decided
         * again once the check is over (stream_on_ext_authz). */
        size_t bytes = 0;
        for (size_t i = 0; i < n; i++)
            bytes += h[i].name.len + h[i].value.len;
        bool ok = tr_fields_init(&st->ext_authz_req, (uint32_t)n + 1, (uint32_t)bytes + 1) == 0;
        for (size_t i = 0; ok && i < n; i++)
            ok = tr_fields_add(&st->ext_authz_req, h[i].name, h[i].value) == 0;
        if (ok)
            st->ext_authz = tr_ext_authz_start(W(st), st->ws, d.ext_authz - 1, method, host, d.path,
                                               (const struct tr_str_pair *)h, (uint32_t)n,
                                               stream_on_ext_authz, st);
        if (st->ext_authz == NULL) {
            local_reply(st, 503, 0, "out of memory\n");
            return;
        }
        st->ext_authz_end_stream = end_stream;
        return;
    }
    path = d.path; /* normalised: what was decided on is what goes upstream */
    st->route = d.route;
    st->authz_policy = d.authz_policy;
    st->authz_rule = d.authz_rule;
    st->req_edit = d.request_edit;
    st->resp_edit = d.response_edit;
    if (d.cors == TR_CORS_ALLOWED)
        tr_cors_echo_set(&st->cors, d.cors_policy, d.cors_rq.origin);
    if (d.status != 0) {
        int si = tr_fields_find(h, n, ":scheme");
        stream_answer(st, &d, si >= 0 ? h[si].value : TR_STR_LIT("http"), host, path);
        return;
    }
    st->cluster = d.cluster;
    st->flags |= d.flags;
    st->fault_delay_ms = d.delay_ms;
    st->lb_hash = d.lb_hash;
    st->lb_cookie = d.lb_cookie;
    begin_upstream(st, h, n, path, end_stream);
}

void tr_stream_forward(struct tr_stream *st, const struct tr_route_cfg *route,
                       struct tr_cluster_rt *cluster, struct tr_fields *req, bool end_stream)
{
    int mi = tr_fields_find(req->v, req->n, ":method"),
        pi = tr_fields_find(req->v, req->n, ":path"),
        ai = tr_fields_find(req->v, req->n, ":authority");
    if (mi >= 0 && !tr_str_to_cstr(st->method, sizeof(st->method), req->v[mi].value))
        st->log_cut = true;
    if (pi >= 0 && !tr_str_to_cstr(st->path, sizeof(st->path), req->v[pi].value))
        st->log_cut = true;
    if (ai >= 0 && !tr_str_to_cstr(st->authority, sizeof(st->authority), req->v[ai].value))
        st->log_cut = true;
    st->orig_h2 = tr_stream_orig_h2(st->s, req->v, req->n, false);
    st->route = route;
    st->cluster = cluster;
    int ct = tr_fields_find(req->v, req->n, "content-type");
    if (ct >= 0 && req->v[ct].value.len >= 16 &&
        strncmp(req->v[ct].value.p, "application/grpc", 16) == 0)
        st->grpc = true, st->proto = TR_REQ_PROTO_GRPC;
    begin_upstream(st, req->v, req->n, pi >= 0 ? req->v[pi].value : TR_STR_LIT("/"), end_stream);
}

/* ---- the HTTP/2 upstream side ---- */

/* The status of a response head, 0 if it has none that is valid. */
static int head_status(const struct tr_h2_header *h, size_t n)
{
    int si = tr_fields_find(h, n, ":status");
    if (si < 0 || h[si].value.len != 3)
        return 0;
    const char *v = h[si].value.p;
    if (v[0] < '0' || v[0] > '9' || v[1] < '0' || v[1] > '9' || v[2] < '0' || v[2] > '9')
        return 0;
    return (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
}

/* The HTTP status of a gRPC status, as Envoy maps it for outlier detection. */
static int grpc_http_status(int g)
{
    static const uint16_t http[17] = {200, 499, 500, 400, 504, 404, 409, 403, 429,
                                      400, 409, 400, 501, 500, 503, 500, 401};
    return g >= 0 && g <= 16 ? http[g] : 500;
}

/* Outlier detection sees the status of a final response head, or for gRPC
 * the HTTP status a trailers-only response's grpc-status maps to (Envoy's
 * rule; a grpc-status in trailers is not looked at). */
static void report_head(struct tr_stream *st, const struct tr_h2_header *h, size_t n)
{
    int si = tr_fields_find(h, n, ":status");
    if (st->ep == NULL || si < 0 || h[si].value.len != 3)
        return;
    int status =
        (h[si].value.p[0] - '0') * 100 + (h[si].value.p[1] - '0') * 10 + (h[si].value.p[2] - '0');
    if (status < 200 && status != 101)
        return;
    int g = st->grpc ? tr_fields_find(h, n, "grpc-status") : -1;
    if (g >= 0)
        status = grpc_http_status(tr_grpc_status_parse(h[g].value));
    tr_endpoint_report(st->ep, status, tr_loop_now_ms(W(st)->loop));
}

static void h2up_on_headers(void *owner, const struct tr_h2_header *h, size_t n, bool is_trailers,
                            bool end_stream)
{
    struct tr_stream *st = owner;
    if (!is_trailers)
        report_head(st, h, n);
    int status = is_trailers ? 0 : head_status(h, n);
    if (status >= 200 && !st->resp_head_out) {
        /* A final head: the last moment a retry may take the request
         * elsewhere (gRPC: a trailers-only response's grpc-status). */
        int g = tr_retry_reads_grpc(&st->rt) ? tr_fields_find(h, n, "grpc-status") : -1;
        if (stream_retry(st, TR_RETRY_EV_STATUS, status,
                         g >= 0 ? tr_grpc_status_parse(h[g].value) : -1, st->ep))
            return;
    }
    if (is_trailers)
        resp_trailers(st, h, n);
    else
        resp_headers(st, h, n, end_stream);
}

static void h2up_on_data(void *owner, const uint8_t *data, size_t len, bool end_stream)
{
    resp_data(owner, data, len, end_stream);
}

/* No byte of the request body has left the proxy: all it received is still
 * pending, and its end (or trailers) did not go either. */
static bool req_all_pending(const struct tr_stream *st)
{
    uint32_t pend = st->req_pend != NULL ? tr_buf_len(st->req_pend) : 0;
    return st->req_bytes == pend && (!st->req_has_body || !st->req_out_end);
}

static void h2up_on_close(void *owner, uint32_t error_code, bool refused, const char *reason)
{
    struct tr_stream *st = owner;
    st->up_done = true;
    st->h2.c = NULL;
    struct tr_endpoint_rt *failed = st->ep;
    /* A failed connection was reported by the pool, once for its streams. */
    bool connect =
        reason != NULL && (strncmp(reason, "connect", 7) == 0 || strcmp(reason, "tls_setup") == 0);
    if (!st->resp_in_end && !connect)
        tr_endpoint_report(failed, TR_OUTCOME_FAILED, tr_loop_now_ms(W(st)->loop));
    if (st->ep != NULL) {
        tr_endpoint_request_end(st->ep);
        st->ep = NULL;
    }
    if (!st->resp_head_out && !st->resp_in_end && !st->down_done) {
        /* No response went downstream: the route's retry policy may send
         * the request again (refused unprocessed, never left because the
         * connection failed, or reset before a head). */
        enum tr_retry_event ev = connect || (refused && !st->try_connected)
                                     ? TR_RETRY_EV_CONNECT_FAILURE /* a TLS failure too */
                                 : refused ? TR_RETRY_EV_REFUSED
                                           : TR_RETRY_EV_RESET;
        if (stream_retry(st, ev, 0, -1, failed))
            return;
        /* Else a refused request goes once more on a fresh connection to
         * the same endpoint (a GOAWAY race: the server never saw it, as
         * with the HTTP/1.1 keep-alive race), unless it is now in connect
         * back-off. */
        if (refused && !connect && req_all_pending(st) && !st->resent && failed != NULL &&
            tr_endpoint_healthy(failed, tr_loop_now_ms(W(st)->loop))) {
            st->resent = true;
            tr_metrics_count(W(st)->metrics, TR_C_UPSTREAM_RESEND, 1);
            st->up_done = false;
            up_use(st, failed);
            h2_open(st, true);
            return;
        }
    }
    if (st->resp_in_end && error_code == H2_NO_ERROR) {
        stream_maybe_free(st);
        return;
    }
    if (st->resp_in_end) {
        /* Complete response, then a reset (the server did not want the rest
         * of the request body): fine. */
        stream_maybe_free(st);
        return;
    }
    if (st->down_done) {
        stream_maybe_free(st);
        return;
    }
    if (!st->resp_head_out) {
        char body[TR_UPSTREAM_ERROR_MAX];
        local_reply(
            st, 503, connect ? TR_RF_UF : TR_RF_UC,
            tr_upstream_error_body(body, sizeof(body), reason != NULL ? reason : "remote reset"));
        stream_maybe_free(st);
        return;
    }
    /* Mid-response: pass the reset on (gRPC cancellation travels this way). */
    st->flags |= TR_RF_UC;
    stream_log(st);
    down_reset(st, error_code == H2_CANCEL ? H2_CANCEL : H2_INTERNAL_ERROR);
    stream_maybe_free(st);
}

static void h2up_on_writable(void *owner)
{
    struct tr_stream *st = owner;
    req_flush_pending(st);
}

static void h2up_on_connected(void *owner, const char *peer_id)
{
    struct tr_stream *st = owner;
    st->peer_id = peer_id;
    st->try_connected = true;
    if (st->req_in_end)
        tr_retry_try_armed(&st->rt, W(st)->loop);
}

static const struct tr_h2_up_ops stream_h2up_ops = {
    .on_headers = h2up_on_headers,
    .on_data = h2up_on_data,
    .on_close = h2up_on_close,
    .on_writable = h2up_on_writable,
    .on_connected = h2up_on_connected,
};

/* ---- the HTTP/1.1 upstream side ---- */

static void h1_on_ready(void *owner, struct tr_upstream *up, int err, const char *reason);
static void h1_on_io(void *owner, struct tr_upstream *up);

static const struct tr_upstream_owner_ops stream_h1_ops = {
    .on_ready = h1_on_ready,
    .on_io = h1_on_io,
};

static bool h1_attempt(struct tr_stream *st, enum tr_h1c_status status, const char *reason);

/* The request head for the HTTP/1.1 upstream, into h1.out. False: answered
 * locally. */
static bool h1_head(struct tr_stream *st)
{
    struct tr_stream_h1 *x = &st->h1;
    bool tunnel = st->up == TR_SU_TUNNEL;
    bool has_cl = !tunnel && tr_fields_find(st->upreq.v, st->upreq.n, "content-length") >= 0;
    x->chunked_req = !tunnel && st->req_has_body && !has_cl;
    buf_drop(st, &x->out);
    size_t head = 64;
    for (uint32_t i = 0; !tunnel && i < st->upreq.n; i++)
        head += st->upreq.v[i].name.len + st->upreq.v[i].value.len + 4;
    x->out = buf_sized(st, head);
    if (x->out == NULL || (!tunnel && tr_fields_h1_request_head(x->out, st->upreq.v, st->upreq.n,
                                                                x->chunked_req) < 0)) {
        local_reply(st, 431, TR_RF_DPE, "request header fields too large\n");
        return false;
    }
    return true;
}

/* Answer with what the upstream client says a failure means. */
static void h1_reply(struct tr_stream *st, enum tr_h1c_status why, const char *reason)
{
    struct tr_h1c_reply r = tr_h1c_reply(why, reason);
    char body[TR_UPSTREAM_ERROR_MAX];
    local_reply(st, r.status, r.flag,
                r.reason != NULL ? tr_upstream_error_body(body, sizeof(body), r.reason) : r.body);
}

/* Head, then the connection (upstream/h1_client.h); fresh: tunnels. */
static void h1_start(struct tr_stream *st, bool fresh)
{
    if (h1_head(st))
        h1_attempt(st,
                   tr_h1c_start(&st->h1.uc, W(st), st->cluster, &stream_h1_ops, st, fresh,
                                st->lb_hash, tr_session_orig_dst(st->s)),
                   "connection failure");
}

/* Go on from what the upstream client made of an attempt. reason: the
 * failure to name in a 503 UF body. False: answered locally. */
static bool h1_attempt(struct tr_stream *st, enum tr_h1c_status status, const char *reason)
{
    struct tr_stream_h1 *x = &st->h1;
    if (x->uc.addr != NULL)
        st->upstream_addr = x->uc.addr;
    switch (status) {
    case TR_H1C_READY:
        x->ready = true;
        st->peer_id = x->uc.up->peer_id;
        st->try_connected = true;
        if (st->req_in_end)
            tr_retry_try_armed(&st->rt, W(st)->loop);
        h1_pump(st);
        return true;
    case TR_H1C_CONNECTING:
        x->ready = false;
        return true;
    default:
        h1_reply(st, status, reason);
        return false;
    }
}

static void h1_on_ready(void *owner, struct tr_upstream *up, int err, const char *reason)
{
    struct tr_stream *st = owner;
    if (err < 0) {
        /* Never connected: h1.out still holds every byte given to this side
         * (the rest waits in req_pend), so another endpoint can have it. */
        tr_h1c_connect_failed(&st->h1.uc);
        if (stream_retry(st, TR_RETRY_EV_CONNECT_FAILURE, 0, -1, st->h1.uc.tried))
            return;
        h1_reply(st, TR_H1C_FAILED, reason);
        stream_maybe_free(st);
        return;
    }
    st->h1.ready = true;
    st->peer_id = up->peer_id;
    st->try_connected = true;
    if (st->req_in_end)
        tr_retry_try_armed(&st->rt, W(st)->loop);
    if (st->up == TR_SU_TUNNEL) {
        /* Connected: the tunnel is open (no END_STREAM: bytes follow). */
        static const struct tr_h2_header ok[] = {{TR_STR_LIT(":status"), TR_STR_LIT("200")}};
        st->h1.uc.head_done = true;
        tr_h1_body_init(&st->h1.uc.resp, TR_H1_BODY_UNTIL_CLOSE, 0, 0);
        resp_headers(st, ok, 1, false);
    }
    h1_pump(st);
}

static void h1_on_io(void *owner, struct tr_upstream *up)
{
    (void)up;
    h1_pump(owner);
}

static ssize_t h1_send(struct tr_stream *st, const uint8_t *p, size_t len, bool end)
{
    struct tr_stream_h1 *x = &st->h1;
    ssize_t take = tr_h1_body_put(&x->out, &W(st)->bufs, x->chunked_req, p, len, end);
    if (take < 0)
        return -1;
    if ((size_t)take == len && end && st->up == TR_SU_TUNNEL)
        x->shut_pending = true; /* the client's FIN, after the bytes */
    if (x->ready)
        h1_pump(st);
    return take;
}

static int h1_send_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n)
{
    struct tr_stream_h1 *x = &st->h1;
    if (!x->chunked_req)
        return 0; /* a length-framed body cannot carry trailers: dropped */
    if (tr_h1_body_put_trailers(&x->out, &W(st)->bufs, h, n) < 0)
        return -1;
    if (x->ready)
        h1_pump(st);
    return 0;
}

/* The exchange failed (why: a tr_h1c_status past the attempt). */
static void h1_failed(struct tr_stream *st, enum tr_h1c_status why)
{
    struct tr_stream_h1 *x = &st->h1;
    bool held = !st->req_has_body && !st->down_done;
    if (st->up == TR_SU_H1 && held && tr_h1c_may_resend(&x->uc)) {
        /* The keep-alive race (upstream/h1_client.h): the head again, on a
         * fresh connection. */
        st->up_done = false;
        if (!h1_head(st) || !h1_attempt(st, tr_h1c_resend(&x->uc), "connection failure"))
            stream_maybe_free(st);
        return;
    }
    tr_endpoint_report(x->uc.ep, TR_OUTCOME_FAILED, tr_loop_now_ms(W(st)->loop));
    if (!st->resp_head_out && st->up == TR_SU_H1 &&
        stream_retry(st, TR_RETRY_EV_RESET, 0, -1, x->uc.tried))
        return;
    if (!st->resp_head_out) {
        h1_reply(st, why, NULL);
        stream_maybe_free(st);
        return;
    }
    st->flags |= tr_h1c_reply(why, NULL).flag;
    up_release(st, false);
    st->up_done = true;
    stream_log(st);
    down_reset(st, H2_INTERNAL_ERROR);
    stream_maybe_free(st);
}

/* Response head: parse, then hand it on as fields. */
static bool h1_response_head(struct tr_stream *st, uint32_t head_len)
{
    struct tr_stream_h1 *x = &st->h1;
    struct tr_worker *w = W(st);
    struct tr_h1_message m;
    memset(&m, 0, sizeof(m));
    m.headers = w->headers;
    int rc = tr_h1c_parse_response(&x->uc, tr_buf_head(x->in), head_len, &st->ws->snap->h1_limits,
                                   (enum tr_h1_method)st->method_id, &m);
    if (rc < 0 && stream_retry(st, TR_RETRY_EV_RESET, 0, -1, x->uc.tried))
        return false;
    if (rc >= 0 && x->uc.head_done && m.body != TR_H1_BODY_TUNNEL) {
        /* A final head: the last moment a retry may take the request
         * elsewhere. */
        int g = tr_retry_reads_grpc(&st->rt) ? tr_h1_find_header(&m, "grpc-status", 11) : -1;
        if (stream_retry(st, TR_RETRY_EV_STATUS, m.status,
                         g >= 0 ? tr_grpc_status_parse(m.headers[g].value) : -1, x->uc.tried))
            return false;
    }
    if (rc < 0 || m.body == TR_H1_BODY_TUNNEL) {
        up_release(st, false);
        st->up_done = true;
        h1_reply(st, TR_H1C_BAD_HEAD, NULL);
        stream_maybe_free(st);
        return false;
    }
    struct tr_fields f;
    size_t bytes = head_len + 16;
    if (tr_fields_init(&f, m.n_headers + 2, (uint32_t)bytes) < 0 ||
        tr_fields_from_h1_response(&f, &m) < 0) {
        tr_fields_free(&f);
        local_reply(st, 502, TR_RF_UPE, NULL);
        return false;
    }
    tr_buf_consume(x->in, head_len);
    /* A final head without a body (HEAD, 204, 304, a length of 0) ends it. */
    resp_headers(st, f.v, f.n, x->uc.head_done && x->uc.resp.done);
    tr_fields_free(&f);
    return true;
}

/* Body bytes at the front of x->in go to the stream, decoded to DATA and
 * trailers. Returns false when the stream cannot take more now or the
 * exchange ended. */
static bool h1_response_body(struct tr_stream *st)
{
    struct tr_stream_h1 *x = &st->h1;
    struct tr_h1_body_state *b = &x->uc.resp;
    while (x->in != NULL && tr_buf_len(x->in) > 0 && !b->done && !st->down_done) {
        if (st->resp_pend != NULL && tr_buf_len(st->resp_pend) > 0)
            return false;
        const uint8_t *p = (const uint8_t *)tr_buf_head(x->in);
        struct tr_h1_body_run r;
        if (tr_h1_body_decode(b, &W(st)->bufs, (const char *)p, tr_buf_len(x->in), &r) < 0) {
            h1_failed(st, TR_H1C_BAD_BODY);
            return false;
        }
        tr_buf_consume(x->in, r.consumed); /* the bytes stay in place until the next read */
        if (b->framing != TR_H1_BODY_CHUNKED) {
            resp_data(st, p + r.data_off, r.data_len, b->done);
            continue;
        }
        if (!b->done) {
            if (r.data_len > 0)
                resp_data(st, p + r.data_off, r.data_len, false);
            continue;
        }
        struct tr_fields t;
        uint32_t max = st->ws->snap->h1_limits.max_headers;
        int prc = tr_h1_body_trailers(b, &W(st)->bufs, max, &t);
        if (prc < 0) {
            /* Never the body's end without the trailers it had. */
            if (prc == TR_FIELDS_FULL) {
                tr_warn("listener %s: upstream %s trailers have more than limits.%s (%u) fields",
                        st->s->lcfg->name, st->upstream_addr, tr_limit_name(TR_LIMIT_MAX_HEADERS),
                        max);
                tr_metrics_limit(W(st)->metrics, TR_LIMIT_MAX_HEADERS);
            }
            tr_fields_free(&t);
            h1_failed(st, TR_H1C_BAD_BODY);
            return false;
        }
        if (t.n > 0) {
            if (r.data_len > 0)
                resp_data(st, p + r.data_off, r.data_len, false);
            resp_trailers(st, t.v, t.n);
        } else {
            resp_data(st, p + r.data_off, r.data_len, true);
        }
        tr_fields_free(&t);
    }
    return !b->done;
}

static void h1_pump_later(struct tr_deferred *d)
{
    h1_pump(tr_container_of(d, struct tr_stream, pump_later));
}

static void h1_pump_once(struct tr_stream *st);

/* Sending body bytes and draining pending bytes call each other; the flag
 * turns that recursion into another round of the loop. */
static void h1_pump(struct tr_stream *st)
{
    struct tr_stream_h1 *x = &st->h1;
    if (x->pumping) {
        x->again = true;
        return;
    }
    x->pumping = true;
    do {
        x->again = false;
        h1_pump_once(st);
    } while (x->again && up_is_conn(st) && x->uc.up != NULL);
    x->pumping = false;
}

static void h1_pump_once(struct tr_stream *st)
{
    struct tr_stream_h1 *x = &st->h1;
    for (int guard = 0; guard < 64; guard++) {
        if (!up_is_conn(st) || x->uc.up == NULL || !x->ready)
            return;
        /* Request bytes out. */
        if (x->out != NULL && tr_buf_len(x->out) > 0) {
            uint32_t sent = 0;
            int rc = tr_h1c_write(&x->uc, tr_buf_head(x->out), tr_buf_len(x->out), &sent);
            tr_buf_consume(x->out, sent);
            if (rc < 0) {
                h1_failed(st, TR_H1C_CLOSED);
                return;
            }
        }
        bool out_empty = x->out == NULL || tr_buf_len(x->out) == 0;
        if (out_empty && x->shut_pending && !x->shut_done) {
            tr_conn_shutdown_write(&x->uc.up->conn);
            x->shut_done = true;
            st->req_out_end = true;
        }
        /* Request bytes, its end or its trailers waiting in the stream. */
        if (out_empty && (tr_stream_req_blocked(st) || st->req_trailers.v != NULL)) {
            req_flush_pending(st);
            if (!up_is_conn(st) || x->uc.up == NULL)
                return;
            if (x->out != NULL && tr_buf_len(x->out) > 0 && x->uc.up->conn.tx_ready)
                continue;
        }
        /* Response bytes in. */
        if (st->resp_pend != NULL && tr_buf_len(st->resp_pend) > 0)
            return; /* downstream is slow: stop reading */
        if (x->in != NULL && tr_buf_len(x->in) > 0) {
            if (!x->uc.head_done) {
                int r = tr_h1c_head_end(&x->uc, &x->in, &st->ws->snap->h1_limits);
                if (r < 0 && stream_retry(st, TR_RETRY_EV_RESET, 0, -1, x->uc.tried))
                    return;
                if (r < 0) {
                    up_release(st, false);
                    st->up_done = true;
                    h1_reply(st, (enum tr_h1c_status) - r, NULL);
                    stream_maybe_free(st);
                    return;
                }
                if (r > 0) {
                    if (!h1_response_head(st, (uint32_t)r))
                        return;
                    continue;
                }
            } else if (!x->uc.resp.done) {
                h1_response_body(st);
                if (!up_is_conn(st) || x->uc.up == NULL)
                    return;
            }
        }
        bool done = x->uc.resp.done;
        if (done && st->up == TR_SU_TUNNEL && !(st->req_in_end && out_empty) && !st->down_done)
            return; /* the server half-closed: keep carrying the client's bytes */
        if (done) {
            bool reusable = st->up == TR_SU_H1 && st->req_out_end &&
                            (x->in == NULL || tr_buf_len(x->in) == 0) &&
                            (x->out == NULL || tr_buf_len(x->out) == 0) &&
                            x->uc.resp.framing != TR_H1_BODY_UNTIL_CLOSE;
            up_release(st, reusable);
            st->up_done = true;
            if (!st->req_out_end)
                st->req_out_end = true; /* the rest of the body is not wanted */
            stream_maybe_free(st);
            return;
        }
        ssize_t n = tr_h1c_read(&x->uc, &x->in);
        if (n == 0)
            return;
        if (n == TR_H1C_READ_END) {
            resp_data(st, NULL, 0, true); /* the body ended with the connection */
            continue;
        }
        if (n < 0) {
            h1_failed(st, TR_H1C_CLOSED);
            return;
        }
    }
    /* Plenty to do: continue after other connections had their turn. */
    if (x->uc.up != NULL)
        tr_loop_defer(W(st)->loop, &st->pump_later, h1_pump_later);
}

/* ---- upstream start / release ---- */

/* The endpoint this attempt goes to. */
static void up_use(struct tr_stream *st, struct tr_endpoint_rt *ep)
{
    st->ep = ep;
    tr_endpoint_request_begin(ep);
    st->upstream_addr = ep->addr_text;
}

/* The upstream side starts (after the read batch that brought the request,
 * or the route's fault delay); the shadows of a complete request go with it. */
static void up_begin(struct tr_stream *st)
{
    st->up = st->up_next;
    if (st->req_in_end)
        tr_mirrors_launch(&st->mirrors);
    up_start(st, false);
}

static void up_start(struct tr_stream *st, bool fresh)
{
    if (st->up != TR_SU_H2) {
        h1_start(st, fresh);
        return;
    }
    bool overflow = false;
    struct tr_endpoint_rt *ep = tr_attempt_first(
        W(st), st->cluster, st->lb_hash, tr_session_orig_dst(st->s), &st->attempts, &overflow);
    if (ep == NULL) {
        char body[TR_UPSTREAM_ERROR_MAX];
        if (overflow)
            local_reply(st, 503, TR_RF_UO, tr_upstream_error_body(body, sizeof(body), "overflow"));
        else
            local_reply(st, 503, TR_RF_UH, "no healthy upstream\n");
        return;
    }
    up_use(st, ep);
    h2_open(st, fresh);
}

/* Open the HTTP/2 stream on st->ep. */
static void h2_open(struct tr_stream *st, bool fresh)
{
    struct tr_endpoint_rt *ep = st->ep;
    const char *reason = NULL;
    if (tr_h2_up_open(W(st), ep, fresh, &stream_h2up_ops, st, &st->upreq, !st->req_has_body,
                      &st->h2, &reason) < 0) {
        bool overflow = reason != NULL && strcmp(reason, "overflow") == 0;
        tr_endpoint_request_end(ep);
        st->ep = NULL;
        char body[TR_UPSTREAM_ERROR_MAX];
        local_reply(st, 503, overflow ? TR_RF_UO : TR_RF_UF,
                    tr_upstream_error_body(body, sizeof(body),
                                           overflow ? "overflow" : "connection failure"));
        return;
    }
    /* Body bytes that arrived before the stream existed, a retry's copy. */
    if (st->req_pend != NULL || st->req_trailers.v != NULL || st->replaying || st->req_pend_end)
        req_flush_pending(st);
}

static void up_release(struct tr_stream *st, bool reusable)
{
    if (st->up == TR_SU_H2 && st->h2.c != NULL) {
        tr_h2_up_cancel(st->h2);
        st->h2.c = NULL;
    }
    if (st->up == TR_SU_H1 || st->up == TR_SU_TUNNEL)
        tr_h1c_release(&st->h1.uc, reusable && st->up == TR_SU_H1);
    if (st->ep != NULL) {
        tr_endpoint_request_end(st->ep);
        st->ep = NULL;
    }
}

/* ---- retries (upstream/retry.h) ---- */

/* A try failed (ev; status and grpc for a final response head) on the
 * endpoint failed: again if the route's policy says so. True: a retry
 * waits for its backoff (the try is given up: its HTTP/2 stream cancelled
 * or its connection closed, what came of its response dropped). False:
 * answer as the failure says, with URX when attempts or the budget stopped
 * a retry. */
static bool stream_retry(struct tr_stream *st, enum tr_retry_event ev, int status, int grpc,
                         const struct tr_endpoint_rt *failed)
{
    if (st->down_done || st->resp_head_out || st->local ||
        (st->up == TR_SU_TUNNEL && ev != TR_RETRY_EV_CONNECT_FAILURE))
        return false;
    /* Not connected: h1.out still holds all the HTTP/1.1 side was given,
     * to be written as it is. Else the request goes again from the copy,
     * unless nothing of it was given yet. */
    bool keep_out = st->up != TR_SU_H2 && ev == TR_RETRY_EV_CONNECT_FAILURE;
    bool held = keep_out || !st->spent || (st->up == TR_SU_H2 && req_all_pending(st));
    switch (tr_retry_decide(&st->rt, W(st), ev, status, grpc, held, failed)) {
    case TR_RETRY_SCHEDULED:
        break;
    case TR_RETRY_LIMIT:
        st->flags |= TR_RF_URX;
        return false;
    default:
        return false;
    }
    up_release(st, false);
    st->up_done = false;
    st->try_connected = false;
    st->h1.ready = false;
    st->status = 0;
    st->grpc_status = -1;
    st->resp_in_end = st->resp_pend_end = false;
    buf_drop(st, &st->resp_pend);
    buf_drop(st, &st->h1.in);
    tr_fields_free(&st->resp_trailers);
    st->keep_out = keep_out;
    if (!keep_out && !(st->up == TR_SU_H2 && req_all_pending(st))) {
        /* The copy goes first, then what still waits, then the end (again,
         * if it had gone). */
        bool end_given = st->req_has_body && st->req_out_end;
        st->replaying = st->held != NULL && tr_buf_len(st->held) > 0;
        st->replay_off = 0;
        if (st->req_has_body)
            st->req_out_end = false;
        if (end_given && st->held_trailers.v != NULL) {
            const struct tr_fields *t = &st->held_trailers;
            size_t bytes = 0;
            for (uint32_t i = 0; i < t->n; i++)
                bytes += t->v[i].name.len + t->v[i].value.len;
            tr_fields_free(&st->req_trailers);
            if (tr_fields_init(&st->req_trailers, t->n + 1, (uint32_t)bytes + 1) < 0) {
                local_reply(st, 503, TR_RF_DPE, NULL); /* no memory */
                return true;
            }
            for (uint32_t i = 0; i < t->n; i++)
                tr_fields_add(&st->req_trailers, t->v[i].name, t->v[i].value);
        } else if (end_given) {
            st->req_pend_end = true;
        }
    }
    return true;
}

/* The next try, once the backoff ran out. */
static void stream_retry_start(struct tr_stream *st)
{
    if (st->up == TR_SU_H2) {
        bool overflow = false;
        struct tr_endpoint_rt *ep = tr_attempt_retry(
            W(st), st->cluster, st->lb_hash, tr_session_orig_dst(st->s), &st->rt.avoid, &overflow);
        if (ep == NULL) {
            char body[TR_UPSTREAM_ERROR_MAX];
            if (overflow)
                local_reply(st, 503, TR_RF_UO,
                            tr_upstream_error_body(body, sizeof(body), "overflow"));
            else
                local_reply(st, 503, TR_RF_UH, "no healthy upstream\n");
            stream_maybe_free(st);
            return;
        }
        up_use(st, ep);
        h2_open(st, false);
    } else if ((!st->keep_out && !h1_head(st)) ||
               !h1_attempt(st, tr_h1c_retry(&st->h1.uc, &st->rt.avoid), "connection failure")) {
        stream_maybe_free(st);
        return;
    }
    /* An HTTP/1.1 client stopped reading during the backoff. */
    if (st->down == TR_SD_H1 && !st->down_done && !tr_stream_req_blocked(st))
        tr_http_session_wake(st);
}

/* The backoff ran out, or the try's per_try_timeout. */
static void stream_on_retry_timer(struct tr_timer *t)
{
    struct tr_stream *st = tr_container_of(t, struct tr_stream, rt.timer);
    if (tr_retry_backoff_over(&st->rt)) {
        stream_retry_start(st);
        return;
    }
    const struct tr_endpoint_rt *failed = st->up == TR_SU_H2 ? st->ep : st->h1.uc.tried;
    tr_endpoint_report(st->up == TR_SU_H2 ? st->ep : st->h1.uc.ep, TR_OUTCOME_TIMEOUT,
                       tr_loop_now_ms(W(st)->loop));
    if (stream_retry(st, TR_RETRY_EV_PER_TRY_TIMEOUT, 0, -1, failed))
        return;
    local_reply(st, 504, TR_RF_UT, "upstream request timeout\n");
    stream_maybe_free(st);
}

void tr_stream_down_close(struct tr_stream *st, bool aborted)
{
    if (st->down_done)
        return;
    st->down_done = true;
    if (aborted && !st->resp_out_end) {
        st->flags |= TR_RF_DC;
        stream_log(st);
    }
    if (!st->up_done) {
        up_release(st, false);
        st->up_done = true;
    }
    stream_maybe_free(st);
}
