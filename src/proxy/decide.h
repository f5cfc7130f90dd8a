/* proxy/decide.h: the decision every HTTP request gets, whatever protocol
 * it came in: match a route, authorize, pick a weighted cluster; or the
 * local reply to give instead. Shared by the HTTP/1.1 session and the
 * streams so both answer alike. */
#ifndef TR_PROXY_DECIDE_H
#define TR_PROXY_DECIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/model.h"
#include "core/str.h"
#include "filter/request_auth.h"
#include "filter/route_action.h"
#include "router/router.h"

struct tr_session;
struct tr_cluster_rt;
struct tr_ext_authz_check;

struct tr_decision {
    /* The request target every decision was taken on, and the one to send
     * upstream (or to redirect from): normalised under the listener's
     * path_normalization (filter/path_normalize.h), the query untouched.
     * It lives in the worker's scratch, valid until the worker's next
     * tr_decide: copy it before then. A path the listener refuses is
     * answered 400 DPE. */
    tr_str path;
    const struct tr_route_cfg *route; /* the matched route (once authorized), else NULL */
    struct tr_cluster_rt *cluster;    /* where to send it, when status == 0 */
    uint16_t status;                  /* nonzero: answer locally with this status */
    uint16_t flags;                   /* TR_RF_* of that answer (and DI for a delay) */
    const char *body;                 /* its body, NULL: none */
    /* A denial by authorization: the policy that denied and its rule (for
     * the access log), NULL when a default denied. */
    const char *authz_policy;
    int authz_rule;
    /* The route's header edits (with the picked destination's): of the
     * request sent upstream, and of the response (or the reply made here,
     * a direct response included). NULL: none. */
    const struct tr_header_edit *request_edit, *response_edit;
    /* Local route actions (filter/route_action.h), in the order applied
     * (istiod's filters: fault, CORS, router): the fault may delay the
     * request (delay_ms: wait, then do the rest) and may abort it (status,
     * flags FI, body; a gRPC request gets grpc_status when grpc); else a
     * CORS preflight is answered (status 200, tr_decision_fields); else a
     * redirect answers (tr_decision_fields carries its Location). The
     * route's response edits apply to a redirect, not to an abort or a
     * preflight (the fault and CORS filters' own replies in Envoy). */
    uint32_t delay_ms;
    bool grpc;
    uint8_t grpc_status;
    bool redirect;
    enum tr_cors_verdict cors;         /* TR_CORS_ALLOWED: keep the origin (tr_cors_echo_set)
                                        * for the response's CORS fields */
    const struct tr_cors *cors_policy; /* the route's, when cors != TR_CORS_NONE */
    struct tr_cors_request cors_rq;    /* slices of the request's fields */
    /* Consistent hashing (cluster lb ring_hash, maglev): the request's key
     * under the cluster's hash_policy, or a random number when it has none
     * (Envoy's behaviour); lb_cookie nonzero: a generated cookie to set on
     * the response (cluster/cluster.h, tr_lb_cookie_format). */
    uint64_t lb_hash;
    uint64_t lb_cookie;
    /* Request authentication (filter/jwt.h), before routing and
     * authorization: what a verified token established (authorization
     * reads it; NULL when the listener has no rules), and for an invalid
     * token the 401's WWW-Authenticate value. Both live in the worker's
     * per-request storage, valid until its next tr_decide; so does
     * request_edit when the token adds or removes fields (the callers build
     * the upstream request before deciding another). */
    const struct tr_request_auth *auth;
    tr_str www_authenticate;
    /* A CUSTOM policy matched a request not checked yet: nothing else was
     * decided. The caller holds the request, has external authorizer
     * ext_authz - 1 (index into tr_config.ext_authz) check it
     * (upstream/ext_authz.h) and decides again with the check. 0: no check. */
    int ext_authz;
};

/* A connection moves to the worker's current snapshot when a new request
 * starts (HTTP/1.1: the next request of a keep-alive connection; HTTP/2: a
 * new stream), so a reload or update applies to existing connections from
 * their next request on, while requests in flight finish on the snapshot
 * they started with (a stream holds its own use of it). The listener is
 * found again by address (the listening socket is the same one). Returns
 * false if that listener is gone or no longer fits the connection (other
 * protocol or TLS mode): the connection stays on its snapshot and should
 * end. */
bool tr_session_adopt_current(struct tr_session *s);

/* path is the request target (query included; authorization ignores it),
 * normalised here first (d->path). checked: the finished external
 * authorization check of this request, NULL before one (a CUSTOM policy's
 * match then asks for it: d->ext_authz). With a check that denied, d is the
 * authorizer's answer (flag UAEX); with one that allowed, the rest is
 * decided as without CUSTOM policies, and the authorizer's fields join the
 * request and response edits. */
void tr_decide(struct tr_session *s, tr_str host, tr_str path, tr_str method,
               const struct tr_str_pair *headers, uint32_t n_headers,
               struct tr_ext_authz_check *checked, struct tr_decision *d);

/* The fields a local answer of d carries besides status and body: a
 * redirect's Location (location: its text, written by the caller from
 * tr_redirect_location into storage of its own), a preflight's CORS
 * fields (slices of the request), a 401's WWW-Authenticate. Returns the
 * count. */
#define TR_DECISION_FIELDS (2 + TR_CORS_PREFLIGHT_FIELDS)
size_t tr_decision_fields(const struct tr_decision *d, tr_str location,
                          struct tr_h2_header out[TR_DECISION_FIELDS]);

/* The body of a 503 for a request that got no response head (Envoy's words,
 * which tools grep for): "upstream connect error or disconnect/reset before
 * headers. reset reason: REASON\n", into buf. Returns buf. */
#define TR_UPSTREAM_ERROR_MAX 160
const char *tr_upstream_error_body(char *buf, size_t size, const char *reason);

#endif
