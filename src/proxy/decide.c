#include "proxy/decide.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "filter/authz.h"
#include "filter/jwt.h"
#include "filter/path_normalize.h"
#include "proxy/authz_call.h"
#include "net/sock.h"
#include "obs/metrics.h"
#include "proxy/session.h"
#include "runtime/worker.h"
#include "upstream/ext_authz.h"
#include "upstream/jwks_fetch.h"

/* The request's consistent-hash key (see struct tr_decision). */
static void decide_lb_hash(struct tr_session *s, tr_str path, const struct tr_str_pair *headers,
                           uint32_t n_headers, struct tr_decision *d)
{
    const struct tr_cluster_cfg *cc = d->cluster->cfg;
    /* A generated cookie's value is the same for every request of the
     * connection (its addresses), as Envoy's. */
    uint64_t seed = tr_lb_hash_bytes(s->lcfg->addr.text, strlen(s->lcfg->addr.text), 0);
    size_t peer_len =
        s->peer.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    struct tr_lb_request rq = {
        .headers = headers,
        .n_headers = n_headers,
        .target = path.p,
        .target_len = path.len,
        .peer = &s->peer,
        .conn_seed = tr_lb_hash_bytes(&s->peer, peer_len, seed),
    };
    if (!tr_lb_request_hash(&cc->hash, &rq, &d->lb_hash, &d->lb_cookie))
        d->lb_hash = (uint64_t)tr_worker_rand(s->w) << 32 | tr_worker_rand(s->w);
}

/* The first field named name (lowercase literal; any case in headers). */
static tr_str field_value(const struct tr_str_pair *headers, uint32_t n, const char *name,
                          size_t len)
{
    for (uint32_t i = 0; i < n; i++) {
        if (tr_str_ieq(headers[i].name, name, len))
            return headers[i].value;
    }
    return (tr_str){0};
}

/* After the route was found and authorized, in the order of istiod's HTTP
 * filters (fault, CORS, router): the fault (a delay, then maybe an abort,
 * which CORS never sees), a CORS preflight, then a redirect. True when d is
 * complete (an answer); false: go on with the route's direct response or
 * cluster. */
static bool decide_local(struct tr_session *s, const struct tr_route_cfg *route, tr_str method,
                         const struct tr_str_pair *headers, uint32_t n_headers,
                         struct tr_decision *d)
{
    if (route->fault != NULL) {
        struct tr_fault_draw draw;
        tr_fault_roll(route->fault, tr_worker_rand(s->w), tr_worker_rand(s->w), &draw);
        d->delay_ms = draw.delay_ms;
        if (draw.delay_ms != 0)
            d->flags |= TR_RF_DI;
        if (draw.abort) {
            const struct tr_fault_abort_cfg *a = route->fault->abort;
            /* Envoy: a gRPC abort is HTTP 200 (trailers-only for gRPC). */
            d->status = a->grpc ? 200 : a->status;
            d->grpc = a->grpc;
            d->grpc_status = a->grpc_status;
            d->flags |= TR_RF_FI;
            d->body = TR_FAULT_ABORT_BODY "\n";
            d->response_edit = NULL; /* the fault filter's reply, not the route's */
            return true;
        }
    }
    /* After a delay the request goes on to CORS; deciding now is the same
     * (it reads only the request), only the answer waits. */
    if (route->cors != NULL) {
        d->cors_policy = s->ws->snap->cors[route->cors->index];
        d->cors_rq = (struct tr_cors_request){
            .method = method,
            .origin = field_value(headers, n_headers, "origin", 6),
            .request_method = field_value(headers, n_headers, "access-control-request-method", 29),
            .request_headers =
                field_value(headers, n_headers, "access-control-request-headers", 30),
        };
        d->cors = tr_cors_check(d->cors_policy, &d->cors_rq);
        if (d->cors == TR_CORS_PREFLIGHT || d->cors == TR_CORS_PREFLIGHT_REFUSED) {
            d->status = 200;
            d->response_edit = NULL; /* the CORS filter's reply, not the route's */
            return true;
        }
    }
    if (route->redirect != NULL) {
        d->status = route->redirect->code;
        d->redirect = true;
        return true;
    }
    return false;
}

size_t tr_decision_fields(const struct tr_decision *d, tr_str location,
                          struct tr_h2_header out[TR_DECISION_FIELDS])
{
    size_t n = 0;
    if (d->redirect && location.len > 0)
        out[n++] = (struct tr_h2_header){TR_STR_LIT("location"), location};
    if (d->cors == TR_CORS_PREFLIGHT || d->cors == TR_CORS_PREFLIGHT_REFUSED)
        n += tr_cors_preflight_fields(d->cors_policy, &d->cors_rq, d->cors, out + n);
    if (d->www_authenticate.len > 0)
        out[n++] = (struct tr_h2_header){TR_STR_LIT("www-authenticate"), d->www_authenticate};
    return n;
}

/* The listener's normalisation of path into the worker's scratch (*out).
 * False: d is the answer (400 for a refused path). */
static bool decide_path(struct tr_session *s, tr_str path, tr_str *out, struct tr_decision *d)
{
    enum tr_path_normalization mode = s->lcfg->path_normalization;
    if (mode == TR_PATHNORM_NONE) {
        *out = path;
        return true;
    }
    struct tr_worker *w = s->w;
    if (w->path_cap < path.len) {
        /* Grown once to the longest path seen (bounded by the header
         * limits), never per request. */
        size_t cap = path.len < 256 ? 256 : (size_t)path.len;
        char *p = realloc(w->path_buf, cap);
        if (p == NULL) {
            *d = (struct tr_decision){
                .status = 431, .flags = TR_RF_DPE, .body = "request header fields too large\n"};
            return false;
        }
        w->path_buf = p;
        w->path_cap = cap;
    }
    size_t n;
    enum tr_path_status st =
        tr_path_normalize(mode, path.p, path.len, w->path_buf, w->path_cap, &n);
    if (st != TR_PATH_OK) {
        tr_metrics_count(w->metrics, TR_C_HTTP_PARSE_ERRORS, 1);
        tr_debug("listener %s: request path refused (%s) from %s: %s", s->lcfg->name,
                 tr_path_normalization_name(mode), s->peer_ip, tr_path_status_str(st));
        *d = (struct tr_decision){
            .status = 400, .flags = TR_RF_DPE, .body = "invalid request path\n"};
        return false;
    }
    *out = tr_str_from(w->path_buf, n);
    return true;
}

/* The request as authorization sees it. */
static void authz_request(struct tr_session *s, tr_str host, tr_str path, tr_str method,
                          const struct tr_str_pair *headers, uint32_t n_headers,
                          const struct tr_request_auth *auth, struct tr_authz_request *aq)
{
    tr_authz_conn_attrs(s, aq);
    aq->http = true;
    aq->method = method;
    aq->host = host;
    aq->path = path;
    const char *q = memchr(path.p, '?', path.len);
    if (q != NULL)
        aq->path.len = (uint32_t)(q - path.p);
    aq->headers = headers;
    aq->n_headers = n_headers;
    aq->auth = auth; /* what request authentication established, or NULL */
}

/* CUSTOM policies (Istio's order: before DENY and ALLOW). True when d is
 * complete: a check to make first, or the authorizer's denial. */
static bool decide_custom(struct tr_session *s, const struct tr_authz *az,
                          const struct tr_authz_request *aq, struct tr_ext_authz_check *checked,
                          struct tr_decision *d)
{
    int policy, rule;
    int provider = tr_authz_custom(az, aq, &policy, &rule);
    if (checked == NULL) {
        if (provider < 0)
            return false;
        d->ext_authz = provider + 1;
        return true;
    }
    uint16_t status;
    const char *body;
    if (tr_ext_authz_allowed(checked, &status, &body))
        return false;
    const char *name = tr_authz_policy_name(az, policy);
    tr_info(
        "listener %s: request from %s denied by external authorizer %s (policy %s): %s %u",
        s->lcfg->name, s->principal != NULL ? s->principal : s->peer_ip,
        provider >= 0 ? s->ws->snap->cfg->ext_authz[provider].name : "?", name != NULL ? name : "?",
        tr_ext_authz_failed(checked) ? "the check failed, status_on_error" : "it answered", status);
    *d = (struct tr_decision){.status = status,
                              .flags = TR_RF_UAEX,
                              .body = body,
                              .response_edit = tr_ext_authz_response_edit(checked, NULL),
                              .authz_policy = name,
                              .authz_rule = rule,
                              .auth = d->auth};
    return true;
}

/* Routing, authorization and the route's actions, on the normalised path. */
static void decide_request(struct tr_session *s, tr_str host, tr_str path, tr_str method,
                           const struct tr_str_pair *headers, uint32_t n_headers,
                           struct tr_ext_authz_check *checked, struct tr_decision *d)
{
    struct tr_snapshot *snap = s->ws->snap;
    struct tr_route_request rr = {
        .host = host,
        .path = path,
        .method = method,
        .scheme =
            s->principal != NULL || s->down.ssl != NULL ? TR_STR_LIT("https") : TR_STR_LIT("http"),
        .headers = headers,
        .n_headers = n_headers,
    };
    /* Request authentication first (Envoy's jwt_authn precedes RBAC and the
     * router): one worker-wide storage, the request is decided at once. */
    static _Thread_local struct tr_jwt_request jwt_rq;
    const struct tr_jwt_authn *ja = snap->jwt[s->lidx];
    if (ja != NULL) {
        const char *why;
        if (tr_jwt_authenticate_keys(ja, tr_jwks_fetched(s->ws->jwks, s->lidx), path, headers,
                                     n_headers, (int64_t)time(NULL), &jwt_rq,
                                     &why) == TR_JWT_INVALID) {
            *d = (struct tr_decision){
                .status = 401,
                .body = why,
                .www_authenticate = tr_jwt_challenge(&jwt_rq, rr.scheme, host, path),
            };
            return;
        }
        d->auth = &jwt_rq.auth;
    }
    const struct tr_authz *az = snap->authz[s->lidx];
    struct tr_authz_request aq;
    if (az != NULL)
        authz_request(s, host, path, method, headers, n_headers, d->auth, &aq);
    /* Decided at build time: a listener without CUSTOM policies asks nothing. */
    if (tr_authz_has_custom(az) && decide_custom(s, az, &aq, checked, d))
        return;
    if (checked != NULL) {
        /* Allowed by the authorizer: what follows sees its fields. */
        n_headers = tr_ext_authz_request_view(checked, headers, n_headers, &headers);
        if (headers == NULL) {
            *d = (struct tr_decision){.status = 503, .body = "out of memory\n"};
            return;
        }
        rr.headers = aq.headers = headers;
        rr.n_headers = aq.n_headers = n_headers;
    }
    const struct tr_route_cfg *route = tr_router_match(snap->routers[s->lcfg->route_table], &rr);
    if (az != NULL) {
        const char *policy;
        int rule;
        if (tr_authz_denied(s, az, &aq, "request", &policy, &rule)) {
            *d = (struct tr_decision){.status = 403,
                                      .flags = TR_RF_RBAC,
                                      .body = "RBAC: access denied",
                                      .authz_policy = policy,
                                      .authz_rule = rule};
            return;
        }
    }
    if (route == NULL) {
        *d = (struct tr_decision){.status = 404, .flags = TR_RF_NR, .auth = d->auth};
        return;
    }
    d->route = route;
    d->response_edit = route->response_edit;
    if ((route->cors != NULL || route->fault != NULL || route->redirect != NULL) &&
        decide_local(s, route, method, headers, n_headers, d))
        return;
    if (route->direct_status != 0) {
        /* No response flag: Envoy sets none for a direct response. */
        d->status = route->direct_status;
        d->body = route->direct_body;
        return;
    }
    int wi = tr_route_pick(route, tr_worker_rand(s->w));
    if (wi < 0) {
        d->status = 503;
        d->flags = TR_RF_UH;
        d->body = "no healthy upstream\n";
        return;
    }
    const struct tr_weighted_cluster_cfg *wc = &route->clusters[wi];
    d->cluster = &s->ws->clusters[wc->cluster];
    d->request_edit =
        ja != NULL ? tr_jwt_request_edit(&jwt_rq, wc->request_edit) : wc->request_edit;
    d->response_edit = wc->response_edit;
    if (d->cluster->table != NULL)
        decide_lb_hash(s, path, headers, n_headers, d);
}

void tr_decide(struct tr_session *s, tr_str host, tr_str target, tr_str method,
               const struct tr_str_pair *headers, uint32_t n_headers,
               struct tr_ext_authz_check *checked, struct tr_decision *d)
{
    memset(d, 0, sizeof(*d));
    tr_str path;
    if (!decide_path(s, target, &path, d)) {
        d->path = target;
        return;
    }
    decide_request(s, host, path, method, headers, n_headers, checked, d);
    d->path = path;
    /* An allowed check's fields: to the request sent upstream, and to the
     * response whatever it is (a denial's edit is set above). */
    uint16_t status;
    const char *body;
    if (checked != NULL && d->flags != TR_RF_UAEX &&
        tr_ext_authz_allowed(checked, &status, &body)) {
        if (d->cluster != NULL)
            d->request_edit = tr_ext_authz_request_edit(checked, d->request_edit);
        d->response_edit = tr_ext_authz_response_edit(checked, d->response_edit);
    }
}

const char *tr_upstream_error_body(char *buf, size_t size, const char *reason)
{
    snprintf(buf, size,
             "upstream connect error or disconnect/reset before headers. reset reason: %s\n",
             reason);
    return buf;
}

bool tr_session_adopt_current(struct tr_session *s)
{
    struct tr_wsnap *cur = s->w->ws;
    if (s->ws == cur)
        return true;
    const struct tr_config *cfg = cur->snap->cfg;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        if (!tr_sock_addr_equal(&l->addr.ss, &s->lcfg->addr.ss))
            continue;
        if (l->protocol == TR_LPROTO_TCP || l->tls_mode != s->lcfg->tls_mode)
            return false; /* the connection no longer fits the listener */
        struct tr_metric_labels old = s->labels;
        tr_wsnap_use(cur);
        tr_wsnap_release(s->ws);
        s->ws = cur;
        s->lcfg = l;
        s->lidx = (int)i;
        s->labels = cur->listener_labels[i];
        if (s->labels.reporter == TR_REPORTER_DESTINATION) {
            s->labels.mtls = old.mtls;
            s->labels.source_principal = old.source_principal;
        }
        return true;
    }
    return false;
}
