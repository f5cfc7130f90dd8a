/* filter/route_action.h: the route actions the proxy performs itself
 * (config/model.h, "local route actions"): a redirect's Location, fault
 * injection's draws, and CORS (preflights answered here, response headers
 * for actual requests).
 *
 * Everything here is a pure function of the route's configuration and
 * slices of the request: no sockets, no allocation on the request path.
 * proxy/decide.c applies them in one order for HTTP/1.1 and HTTP/2 alike
 * (after authorization, as istiod orders Envoy's filters: the fault's delay
 * and abort, the CORS preflight, then the route's action), and the
 * sessions render the answer.
 * CORS policies are compiled once per snapshot (tr_cors_build): origin
 * regexes JIT-compiled, header values joined.
 */
#ifndef TR_FILTER_ROUTE_ACTION_H
#define TR_FILTER_ROUTE_ACTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/h2/h2.h"
#include "config/model.h"
#include "core/str.h"

/* ---- redirect ---- */

/* What a redirect keeps of the request. */
struct tr_redirect_request {
    tr_str scheme;    /* "http" or "https", as the client used it */
    tr_str authority; /* Host or :authority ("host[:port]"), as validated by the codecs;
                       * empty for an HTTP/1.0 request without Host */
    tr_str path;      /* the request-target, query included */
};

/* A Location as slices of the route, the request and port text of its
 * own: nothing is copied, so a path of any length the limits admit fits.
 * len is the total; tr_location_write copies it out. */
#define TR_LOCATION_PARTS 8
struct tr_location {
    tr_str part[TR_LOCATION_PARTS];
    uint32_t n;
    size_t len;
    char port[8]; /* ":65535" */
};

/* The Location of route->redirect for rq (Envoy's RedirectAction, as Istio
 * HTTPRedirect sets it):
 *  - scheme: redirect.scheme, else the request's;
 *  - host: redirect.host, else the request's;
 *  - port: redirect.port; port_from request: the request's port (its
 *    authority's, else the request scheme's default); either is left out
 *    when it is the new scheme's default (as istiod does); protocol_default:
 *    none; keep (default): the request's authority as it is, but without a
 *    port that is the request scheme's default when the scheme changes,
 *    and none with redirect.host;
 *  - path: redirect.path replaces the whole path and the request's query is
 *    kept unless the path has one; redirect.prefix replaces the route's
 *    matched prefix; else the request's path.
 * Without any authority (HTTP/1.0, no Host, no redirect.host) the Location
 * is the path alone, a relative reference (RFC 9110 10.2.2). */
void tr_redirect_location(const struct tr_route_cfg *route, const struct tr_redirect_request *rq,
                          struct tr_location *out);
/* Copy loc's parts to dst, which holds loc->len bytes (no NUL). */
void tr_location_write(const struct tr_location *loc, char *dst);

/* ---- fault injection ---- */

/* Does a share of per_million (0..TR_PER_MILLION) hit for rnd, a uniformly
 * distributed 32-bit number? P(hit) = ceil(per_million * 2^32 / 10^6) /
 * 2^32: within 2^-32 of per_million / 10^6. */
static inline bool tr_share_hit(uint32_t per_million, uint32_t rnd)
{
    return (uint32_t)(((uint64_t)rnd * TR_PER_MILLION) >> 32) < per_million;
}

/* What the fault of a route does to one request: wait delay_ms (0: no
 * delay), then answer (abort) or go on. rnd_delay and rnd_abort are two
 * independent draws (the worker's PRNG): Istio's delay and abort are
 * independent events. */
struct tr_fault_draw {
    uint32_t delay_ms;
    bool abort;
};
void tr_fault_roll(const struct tr_fault_cfg *f, uint32_t rnd_delay, uint32_t rnd_abort,
                   struct tr_fault_draw *out);

/* Envoy's body for an injected abort (tools grep for it). */
#define TR_FAULT_ABORT_BODY "fault filter abort"

/* ---- CORS ---- */

struct tr_cors; /* one compiled policy, immutable, shared by the workers */

/* Compile cfg (validated). NULL with *err (malloc'd) when a regex fails to
 * compile or memory runs out. */
struct tr_cors *tr_cors_build(const struct tr_cors_cfg *cfg, char **err);
void tr_cors_free(struct tr_cors *c);

/* The parts of a request CORS looks at; empty slices when absent. */
struct tr_cors_request {
    tr_str method;
    tr_str origin;          /* Origin */
    tr_str request_method;  /* Access-Control-Request-Method */
    tr_str request_headers; /* Access-Control-Request-Headers */
};

/* Envoy's CORS filter: no Origin (or an empty one) is not a CORS request;
 * a preflight is an OPTIONS with an Origin and an
 * Access-Control-Request-Method. An origin is allowed when an
 * allow_origins entry matches it, or matches "*". An Origin longer than
 * TR_CORS_ORIGIN_MAX (no serialized origin is: a scheme, a host of at most
 * 253 bytes and a port) matches nothing. */
enum tr_cors_verdict {
    TR_CORS_NONE = 0,          /* nothing to do: forward, add nothing */
    TR_CORS_ALLOWED,           /* an actual request from an allowed origin: forward; the
                                * response gets Access-Control-Allow-Origin and co. */
    TR_CORS_PREFLIGHT,         /* a preflight from an allowed origin: answer 200 here */
    TR_CORS_PREFLIGHT_REFUSED, /* a preflight from another origin with unmatched_preflights
                                * ignore: answer 200 here, without Allow-Origin */
};
enum tr_cors_verdict tr_cors_check(const struct tr_cors *c, const struct tr_cors_request *rq);

/* The fields of a preflight's answer: Access-Control-Allow-Origin (the
 * request's Origin; not for PREFLIGHT_REFUSED), -Allow-Credentials: true,
 * -Allow-Methods (the policy's, or the requested method for "*"),
 * -Allow-Headers (the policy's, or the requested headers for "*"),
 * -Max-Age. Slices of the policy and of rq. Returns the count. */
#define TR_CORS_PREFLIGHT_FIELDS 5
size_t tr_cors_preflight_fields(const struct tr_cors *c, const struct tr_cors_request *rq,
                                enum tr_cors_verdict v,
                                struct tr_h2_header out[TR_CORS_PREFLIGHT_FIELDS]);

/* What a request whose response gets CORS fields keeps until then: the
 * policy and a copy of its Origin (the request's buffers are reused long
 * before the response). Part of the request's fixed state: no allocation. */
#define TR_CORS_ORIGIN_MAX 272
struct tr_cors_echo {
    const struct tr_cors *policy; /* NULL: none */
    uint16_t len;
    char origin[TR_CORS_ORIGIN_MAX];
};
/* Remember origin for the response (verdict TR_CORS_ALLOWED). */
void tr_cors_echo_set(struct tr_cors_echo *e, const struct tr_cors *c, tr_str origin);

/* The fields an actual response gets (they replace the upstream's fields of
 * the same names): Access-Control-Allow-Origin, -Allow-Credentials: true,
 * -Expose-Headers. 0 when e holds no policy. */
#define TR_CORS_RESPONSE_FIELDS 3
size_t tr_cors_response_fields(const struct tr_cors_echo *e,
                               struct tr_h2_header out[TR_CORS_RESPONSE_FIELDS]);

/* Is name (any case) the name of one of set[0..n)? Fields the proxy sets
 * replace the upstream's of the same name (Envoy's setInline). */
bool tr_field_named_in(tr_str name, const struct tr_h2_header *set, size_t n);

#endif
