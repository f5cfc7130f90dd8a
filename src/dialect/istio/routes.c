/* VirtualService -> the routes of one virtual host.
 *
 * Istio's order: rules in list order, first match wins; the match blocks of
 * one rule are ORed (one model route each, same action), the fields of a
 * block ANDed. sourceLabels, sourceNamespace and gateways are decided here,
 * for the workload being compiled (as Istio decides them per proxy). A
 * request no rule matches falls through to the service's default route. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "config/load.h"
#include "core/arena.h"
#include "core/authz_syntax.h"
#include "dialect/istio/internal.h"

#define MAX_ROUTES_PER_VHOST 10000u

struct tr_route_cfg *ist_route_new(struct ist_ctx *x, struct ist_routes *rs)
{
    if (rs->n == rs->cap) {
        size_t ncap = rs->cap ? rs->cap * 2 : 8;
        struct tr_route_cfg *nv = ist_alloc(x, ncap, sizeof(*nv));
        if (nv == NULL)
            return NULL;
        if (rs->n)
            memcpy(nv, rs->v, rs->n * sizeof(*nv));
        rs->v = nv;
        rs->cap = ncap;
    }
    struct tr_route_cfg *r = &rs->v[rs->n++];
    tr_cfg_route_defaults(r);
    return r;
}

static const struct ist_key route_keys[] = {
    {"name", NULL},
    {"match", NULL},
    {"route", NULL},
    {"redirect", NULL},
    {"directResponse", NULL},
    {"delegate", NULL},
    {"rewrite", NULL},
    {"timeout", NULL},
    {"retries", NULL},
    {"fault", NULL},
    {"mirror", NULL},
    {"mirrors", NULL},
    {"mirrorPercentage", NULL},
    {"mirrorPercent", NULL},
    {"mirror_percent", NULL},
    {"corsPolicy", NULL},
    {"headers", NULL},
};

static const struct ist_key match_keys[] = {
    {"name", NULL},
    {"uri", NULL},
    {"scheme", NULL},
    {"method", NULL},
    {"authority", NULL},
    {"headers", NULL},
    {"port", NULL},
    {"sourceLabels", NULL},
    {"gateways", NULL},
    {"queryParams", NULL},
    {"ignoreUriCase", NULL},
    {"withoutHeaders", NULL},
    {"sourceNamespace", NULL},
    {"statPrefix", "per-route stats prefixes are not supported: ignored"},
};

static const struct ist_key dest_keys[] = {
    {"destination", NULL},
    {"weight", NULL},
    {"headers", NULL},
};

static bool has_str(const struct tr_rnode *list, const char *s)
{
    for (const struct tr_rnode *e = list && list->kind == TR_RNODE_SEQ ? list->head : NULL; e;
         e = e->next) {
        const char *v;
        if (tr_rnode_str(e, &v) && strcmp(v, s) == 0)
            return true;
    }
    return false;
}

/* Does list (a VirtualService's or a match block's gateways) name gateway
 * ("NS/NAME"; NULL: the mesh's sidecars, "mesh")? A name without a
 * namespace is in the VirtualService's. */
bool ist_gateway_listed(const struct tr_resource *vs, const struct tr_rnode *list,
                        const char *gateway)
{
    const char *vns = vs->ns ? vs->ns : "default";
    for (const struct tr_rnode *e = list && list->kind == TR_RNODE_SEQ ? list->head : NULL; e;
         e = e->next) {
        const char *v;
        if (!tr_rnode_str(e, &v))
            continue;
        if (gateway == NULL) {
            if (strcmp(v, "mesh") == 0)
                return true;
            continue;
        }
        const char *slash = strchr(v, '/');
        const char *gslash = strchr(gateway, '/');
        if (slash != NULL
                ? strcmp(v, gateway) == 0
                : (strcmp(v, gslash + 1) == 0 && strlen(vns) == (size_t)(gslash - gateway) &&
                   strncmp(vns, gateway, (size_t)(gslash - gateway)) == 0))
            return true;
    }
    return false;
}

/* Does the VirtualService apply to sidecars (gateways empty or "mesh")? */
bool ist_vs_for_mesh(const struct tr_resource *vs)
{
    const struct tr_rnode *gw = tr_rnode_get(vs->spec, "gateways");
    return gw == NULL || gw->kind != TR_RNODE_SEQ || gw->n == 0 || has_str(gw, "mesh");
}

/* The cluster for a destination {host, subset, port}; *out NULL with a
 * reason in *why when there is none (the route answers 503, as Istio's NR). */
static bool destination_at(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *d,
                           const char *key, const struct tr_resource *vs,
                           const struct ist_vhost *vh, const char **out);

static bool destination(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *d,
                        const struct tr_resource *vs, const struct ist_vhost *vh, const char **out)
{
    return destination_at(x, c, d, "destination", vs, vh, out);
}

static bool destination_at(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *d,
                           const char *key, const struct tr_resource *vs,
                           const struct ist_vhost *vh, const char **out)
{
    static const struct ist_key keys[] = {{"host", NULL}, {"subset", NULL}, {"port", NULL}};
    *out = NULL;
    if (d == NULL) {
        ist_error(x, c, NULL, NULL, "a destination is required");
        return false;
    }
    size_t saved = ist_push_key(c, key);
    bool ok = IST_KEYS(x, c, d, keys);
    const char *host = NULL, *subset = NULL;
    uint32_t port = 0;
    if (ok && !ist_str(x, c, d, "host", &host)) {
        ist_error(x, c, d, "host", "a destination host is required");
        ok = false;
    }
    ist_str(x, c, d, "subset", &subset);
    const struct tr_rnode *pn = ist_map(x, c, d, "port");
    static const struct ist_key pkeys[] = {{"number", NULL}};
    size_t sp = ist_push_key(c, "port");
    if (pn != NULL && IST_KEYS(x, c, pn, pkeys))
        ist_u32(x, c, pn, "number", 1, 65535, &port);
    ist_pop(c, sp);
    if (!ok) {
        ist_pop(c, saved);
        return false;
    }
    const char *fq = ist_fqdn(x, host, vs->ns ? vs->ns : "default");
    const struct ist_service *s = fq ? ist_service_by_host(x, fq) : NULL;
    if (s == NULL) {
        ist_finding(x, c, tr_rnode_get(d, "host"), "host",
                    "host %s is not a known service or ServiceEntry: requests routed here are "
                    "answered 503",
                    fq ? fq : host);
        ist_pop(c, saved);
        return true;
    }
    size_t pi = s->n_ports;
    if (port != 0) {
        for (pi = 0; pi < s->n_ports && s->ports[pi].number != port; pi++)
            ;
        if (pi == s->n_ports)
            ist_warn(x, c, pn, "port",
                     "service %s has no port %u: requests routed here are "
                     "answered 503",
                     s->host, port);
    } else if (s->n_ports == 1) {
        pi = 0;
    } else if (vh != NULL && vh->svc != NULL) {
        for (pi = 0; pi < s->n_ports && s->ports[pi].number != vh->port; pi++)
            ;
        if (pi == s->n_ports)
            ist_warn(x, c, d, NULL,
                     "service %s has several ports and none is %u: name the port; "
                     "requests routed here are answered 503",
                     s->host, vh->port);
    } else if (vh != NULL) {
        ist_warn(x, c, d, NULL,
                 "service %s has several ports: name the destination port; "
                 "requests routed here are answered 503",
                 s->host);
    }
    if (subset != NULL) {
        const struct tr_resource *dr = ist_dr_for(x, s->host, s->ns);
        if (ist_dr_subset(dr, subset) == NULL) {
            ist_finding(x, c, tr_rnode_get(d, "subset"), "subset",
                        "no DestinationRule defines subset \"%s\" of %s: requests routed here "
                        "are answered 503 (Istio: 503 NR)",
                        subset, s->host);
            ist_pop(c, saved);
            return true;
        }
    }
    if (pi < s->n_ports && !x->checking)
        *out = ist_cluster_for(x, s, pi, subset);
    ist_pop(c, saved);
    return true;
}

/* Names the model refuses to edit (docs/config.md, header edits): Envoy and
 * Istio drop most of these silently; here each is reported. */
static const char *edit_refusal(const char *name)
{
    static const char *const hop[] = {"connection",    "keep-alive", "transfer-encoding",
                                      "upgrade",       "te",         "proxy-connection",
                                      "content-length"};
    if (name[0] == ':')
        return "pseudo-headers cannot be edited";
    if (strncmp(name, "trellis-", 8) == 0)
        return "trellis-* headers belong to the proxy";
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++) {
        if (strcmp(name, hop[i]) == 0)
            return "a hop-by-hop or framing header cannot be edited";
    }
    return NULL;
}

static char *lower_dup(struct ist_ctx *x, const char *s)
{
    char *p = ist_mstrdup(x, s);
    for (char *q = p; q && *q; q++)
        *q = (char)tolower((unsigned char)*q);
    return p;
}

static bool value_ok(const char *v)
{
    size_t n = strlen(v);
    if (n > 4096 || (n > 0 && (v[0] == ' ' || v[0] == '\t' || v[n - 1] == ' ' || v[n - 1] == '\t')))
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    }
    return true;
}

/* One direction of Istio's Headers {set, add, remove} into ops. A set or add
 * of the authority is Istio's way to rewrite it: *authority gets it (NULL
 * when the caller cannot, per destination). */
static bool header_ops_dir(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *hm,
                           struct tr_header_ops_cfg *ops, const char **authority)
{
    static const struct ist_key keys[] = {{"set", NULL}, {"add", NULL}, {"remove", NULL}};
    if (!IST_KEYS(x, c, hm, keys))
        return false;
    const char *kinds[2] = {"set", "add"};
    for (int k = 0; k < 2; k++) {
        const struct tr_rnode *m = ist_map(x, c, hm, kinds[k]);
        if (m == NULL)
            continue;
        size_t saved = ist_push_key(c, kinds[k]);
        struct tr_name_value_cfg *v = ist_malloc(x, m->n / 2, sizeof(*v));
        size_t n = 0;
        if (v == NULL)
            return false;
        for (const struct tr_rnode *e = m->head; e && e->next; e = e->next->next) {
            const char *val;
            if (!ist_str(x, c, m, e->s, &val))
                continue;
            char *name = lower_dup(x, e->s);
            const char *why = name ? edit_refusal(name) : NULL;
            if (name != NULL && (strcmp(name, "host") == 0 || strcmp(name, ":authority") == 0)) {
                if (authority != NULL)
                    *authority = ist_mstrdup(x, val);
                else
                    ist_warn(x, c, e, NULL,
                             "the authority can be rewritten per route, not per "
                             "destination: ignored");
                continue;
            }
            if (why != NULL || !value_ok(val) || n == 64) {
                ist_warn(x, c, e, NULL, "%s: ignored",
                         why       ? why
                         : n == 64 ? "more than 64 entries"
                                   : "a value with control characters, surrounding blanks or "
                                     "over 4096 bytes");
                continue;
            }
            v[n++] = (struct tr_name_value_cfg){.name = name, .value = ist_mstrdup(x, val)};
        }
        if (k == 0) {
            ops->set = n ? v : NULL;
            ops->n_set = n;
        } else {
            ops->add = n ? v : NULL;
            ops->n_add = n;
        }
        ist_pop(c, saved);
    }
    const struct tr_rnode *rm = ist_list(x, c, hm, "remove");
    if (rm != NULL) {
        size_t saved = ist_push_key(c, "remove");
        const char **v = ist_malloc(x, rm->n, sizeof(*v));
        size_t n = 0, i = 0;
        if (v == NULL)
            return false;
        for (const struct tr_rnode *e = rm->head; e; e = e->next, i++) {
            const char *name;
            if (!tr_rnode_str(e, &name))
                continue;
            char *lname = lower_dup(x, name);
            const char *why = lname ? edit_refusal(lname) : NULL;
            if (lname != NULL && strcmp(lname, "host") == 0)
                why = "the Host header cannot be removed";
            if (why != NULL || n == 64) {
                size_t si = ist_push_index(c, i);
                ist_warn(x, c, e, NULL, "%s: ignored", why ? why : "more than 64 entries");
                ist_pop(c, si);
                continue;
            }
            v[n++] = lname;
        }
        ops->remove = n ? v : NULL;
        ops->n_remove = n;
        ist_pop(c, saved);
    }
    return true;
}

/* Istio Headers {request, response} into a route's or destination's edits. */
static bool header_ops(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *owner,
                       struct tr_header_ops_cfg *req, struct tr_header_ops_cfg *resp,
                       const char **authority)
{
    const struct tr_rnode *h = ist_map(x, c, owner, "headers");
    if (h == NULL)
        return true;
    static const struct ist_key keys[] = {{"request", NULL}, {"response", NULL}};
    size_t saved = ist_push_key(c, "headers");
    bool ok = IST_KEYS(x, c, h, keys);
    const struct tr_rnode *rq = ok ? ist_map(x, c, h, "request") : NULL;
    const struct tr_rnode *rs = ok ? ist_map(x, c, h, "response") : NULL;
    if (rq != NULL) {
        size_t s2 = ist_push_key(c, "request");
        ok = header_ops_dir(x, c, rq, req, authority) && ok;
        ist_pop(c, s2);
    }
    if (rs != NULL) {
        size_t s2 = ist_push_key(c, "response");
        ok = header_ops_dir(x, c, rs, resp, NULL) && ok;
        ist_pop(c, s2);
    }
    ist_pop(c, saved);
    return ok;
}

/* Istio HTTPRedirect -> the model's redirect. */
static bool redirect_action(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *rd,
                            struct tr_route_cfg *r)
{
    static const struct ist_key keys[] = {
        {"uri", NULL},
        {"authority", NULL},
        {"port", NULL},
        {"derivePort", NULL},
        {"scheme", NULL},
        {"redirectCode", NULL},
        {"prefixRewrite", "prefix redirects are not supported yet: use uri"},
    };
    size_t saved = ist_push_key(c, "redirect");
    struct tr_redirect_cfg *rc = ist_malloc(x, 1, sizeof(*rc));
    bool ok = rc != NULL && IST_KEYS(x, c, rd, keys);
    if (!ok) {
        ist_pop(c, saved);
        return false;
    }
    tr_cfg_redirect_defaults(rc);
    const char *uri = NULL, *auth = NULL, *scheme = NULL, *derive = NULL;
    uint32_t port = 0, code = 301;
    if (ist_str(x, c, rd, "uri", &uri)) {
        if (uri[0] != '/') {
            ist_error(x, c, tr_rnode_get(rd, "uri"), "uri", "a path starting with /");
            ok = false;
        }
        rc->path = ist_mstrdup(x, uri);
    }
    if (ist_str(x, c, rd, "authority", &auth)) {
        /* host[:port]: the model keeps the port apart */
        const char *colon = strrchr(auth, ':');
        char *end = NULL;
        unsigned long p = colon && auth[0] != '[' ? strtoul(colon + 1, &end, 10) : 0;
        if (colon != NULL && end != NULL && *end == '\0' && p > 0 && p < 65536) {
            rc->host = ist_mprintf(x, "%.*s", (int)(colon - auth), auth);
            rc->port = (uint16_t)p;
        } else {
            rc->host = ist_mstrdup(x, auth);
        }
    }
    if (ist_str(x, c, rd, "scheme", &scheme)) {
        if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
            ist_error(x, c, tr_rnode_get(rd, "scheme"), "scheme", "expected http or https");
            ok = false;
        }
        rc->scheme = ist_mstrdup(x, scheme);
    }
    if (ist_u32(x, c, rd, "port", 1, 65535, &port))
        rc->port = (uint16_t)port;
    if (ist_str(x, c, rd, "derivePort", &derive)) {
        if (port != 0) {
            ist_error(x, c, tr_rnode_get(rd, "derivePort"), "derivePort",
                      "only one of port and derivePort (a oneof)");
            ok = false;
        } else if (strcmp(derive, "FROM_PROTOCOL_DEFAULT") == 0) {
            rc->port_from = TR_REDIRECT_PORT_PROTOCOL_DEFAULT;
        } else if (strcmp(derive, "FROM_REQUEST_PORT") == 0) {
            rc->port_from = TR_REDIRECT_PORT_REQUEST;
        } else {
            ist_error(x, c, tr_rnode_get(rd, "derivePort"), "derivePort",
                      "expected FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT, got \"%s\"", derive);
            ok = false;
        }
    }
    if (ist_u32(x, c, rd, "redirectCode", 300, 399, &code) && code != 301 && code != 302 &&
        code != 303 && code != 307 && code != 308) {
        ist_error(x, c, tr_rnode_get(rd, "redirectCode"), "redirectCode",
                  "expected 301, 302, 303, 307 or 308, got %u", code);
        ok = false;
    }
    rc->code = (uint16_t)code;
    r->redirect = rc;
    ist_pop(c, saved);
    return ok;
}

/* gRPC status names (Istio's grpcStatus is the name). */
static int grpc_code(const char *s)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++) {
        if (strcmp(s, names[i]) == 0)
            return i;
    }
    return -1;
}

/* A fault's share: percentage {value} (unset: no request, Istio's rule), or
 * the deprecated integer percent. */
static bool fault_share(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *m,
                        uint32_t *per_million)
{
    uint32_t ppm = 0, pct;
    if (tr_rnode_get(m, "percentage") != NULL) {
        if (!ist_percent(x, c, m, "percentage", &ppm))
            return false;
    } else if (ist_u32(x, c, m, "percent", 0, 100, &pct)) {
        ppm = pct * 10000u;
    } else {
        ist_warn(x, c, m, NULL, "no percentage: Istio injects this fault into no request");
    }
    *per_million = ppm;
    return true;
}

static bool fault_action(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *f,
                         struct tr_route_cfg *r)
{
    static const struct ist_key keys[] = {{"delay", NULL}, {"abort", NULL}};
    static const struct ist_key dkeys[] = {
        {"fixedDelay", NULL},
        {"exponentialDelay", "exponential delays are not supported (Istio does not either)"},
        {"percentage", NULL},
        {"percent", NULL},
    };
    static const struct ist_key akeys[] = {
        {"httpStatus", NULL},
        {"grpcStatus", NULL},
        {"http2Error", "HTTP/2 error aborts are not supported (Istio does not either)"},
        {"percentage", NULL},
    };
    size_t saved = ist_push_key(c, "fault");
    struct tr_fault_cfg *fc = ist_malloc(x, 1, sizeof(*fc));
    bool ok = fc != NULL && IST_KEYS(x, c, f, keys);
    const struct tr_rnode *d = ok ? ist_map(x, c, f, "delay") : NULL;
    const struct tr_rnode *a = ok ? ist_map(x, c, f, "abort") : NULL;
    if (d != NULL) {
        size_t sd = ist_push_key(c, "delay");
        struct tr_fault_delay_cfg *dc = ist_malloc(x, 1, sizeof(*dc));
        uint32_t ms;
        if (dc != NULL && IST_KEYS(x, c, d, dkeys)) {
            if (!ist_duration(x, c, d, "fixedDelay", 24u * 3600u * 1000u, &ms) || ms == 0) {
                if (tr_rnode_get(d, "exponentialDelay") == NULL)
                    ist_error(x, c, d, "fixedDelay", "a fixedDelay of at least 1ms is required");
                dc = NULL;
            } else if (fault_share(x, c, d, &dc->per_million)) {
                dc->fixed_ms = ms;
                fc->delay = dc;
            }
        }
        ist_pop(c, sd);
    }
    if (a != NULL) {
        size_t sa = ist_push_key(c, "abort");
        struct tr_fault_abort_cfg *ac = ist_malloc(x, 1, sizeof(*ac));
        uint32_t st;
        const char *gs;
        if (ac != NULL && IST_KEYS(x, c, a, akeys) && fault_share(x, c, a, &ac->per_million)) {
            if (ist_u32(x, c, a, "httpStatus", 200, 599, &st)) {
                ac->status = (uint16_t)st;
                fc->abort = ac;
            } else if (ist_str(x, c, a, "grpcStatus", &gs)) {
                int code = grpc_code(gs);
                if (code < 0) {
                    ist_error(x, c, tr_rnode_get(a, "grpcStatus"), "grpcStatus",
                              "expected a gRPC status name such as UNAVAILABLE, got \"%s\"", gs);
                } else {
                    ac->grpc = true;
                    ac->grpc_status = (uint8_t)code;
                    fc->abort = ac;
                }
            } else if (tr_rnode_get(a, "http2Error") == NULL) {
                ist_error(x, c, a, NULL, "httpStatus or grpcStatus is required");
            }
        }
        ist_pop(c, sa);
    }
    if (fc != NULL && (fc->delay != NULL || fc->abort != NULL))
        r->fault = fc;
    ist_pop(c, saved);
    return ok;
}

static bool cors_action(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *p,
                        struct tr_route_cfg *r)
{
    static const struct ist_key keys[] = {
        {"allowOrigins", NULL},     {"allowOrigin", NULL},         {"allowMethods", NULL},
        {"allowHeaders", NULL},     {"exposeHeaders", NULL},       {"maxAge", NULL},
        {"allowCredentials", NULL}, {"unmatchedPreflights", NULL},
    };
    size_t saved = ist_push_key(c, "corsPolicy");
    struct tr_cors_cfg *cc = ist_malloc(x, 1, sizeof(*cc));
    bool ok = cc != NULL && IST_KEYS(x, c, p, keys);
    if (!ok) {
        ist_pop(c, saved);
        return false;
    }
    tr_cfg_cors_defaults(cc);
    const struct tr_rnode *ao = ist_list(x, c, p, "allowOrigins");
    const struct tr_rnode *old = ist_list(x, c, p, "allowOrigin");
    size_t n = (ao ? ao->n : 0) + (old ? old->n : 0);
    cc->origins = ist_malloc(x, n, sizeof(*cc->origins));
    size_t i = 0;
    for (const struct tr_rnode *e = ao ? ao->head : NULL; cc->origins && e; e = e->next, i++) {
        size_t si = ist_push_key(c, "allowOrigins");
        ist_push_index(c, i);
        struct ist_sm sm;
        static const struct ist_key smk[] = {{"exact", NULL}, {"prefix", NULL}, {"regex", NULL}};
        if (IST_KEYS(x, c, e, smk)) {
            const char *v;
            struct tr_cors_origin_cfg *o = &cc->origins[cc->n_origins];
            sm.kind = IST_SM_ANY;
            if (ist_str(x, c, e, "exact", &v))
                sm = (struct ist_sm){IST_SM_EXACT, v};
            else if (ist_str(x, c, e, "prefix", &v))
                sm = (struct ist_sm){IST_SM_PREFIX, v};
            else if (ist_str(x, c, e, "regex", &v))
                sm = (struct ist_sm){IST_SM_REGEX, v};
            o->kind = sm.kind == IST_SM_EXACT    ? TR_ORIGIN_EXACT
                      : sm.kind == IST_SM_PREFIX ? TR_ORIGIN_PREFIX
                                                 : TR_ORIGIN_REGEX;
            o->value = ist_mstrdup(x, sm.kind == IST_SM_ANY ? ".*" : sm.value);
            o->loc = ist_loc(x, c, e);
            cc->n_origins++;
        }
        ist_pop(c, si);
    }
    i = 0;
    for (const struct tr_rnode *e = old ? old->head : NULL; cc->origins && e; e = e->next, i++) {
        const char *v;
        if (tr_rnode_str(e, &v)) {
            struct tr_cors_origin_cfg *o = &cc->origins[cc->n_origins++];
            /* the deprecated form: "*" means any origin */
            o->kind = strcmp(v, "*") == 0 ? TR_ORIGIN_REGEX : TR_ORIGIN_EXACT;
            o->value = ist_mstrdup(x, strcmp(v, "*") == 0 ? ".*" : v);
            size_t si = ist_push_key(c, "allowOrigin");
            ist_push_index(c, i);
            o->loc = ist_loc(x, c, e);
            ist_pop(c, si);
        }
    }
    static const char *const lists[] = {"allowMethods", "allowHeaders", "exposeHeaders"};
    const char ***dst[] = {&cc->allow_methods, &cc->allow_headers, &cc->expose_headers};
    size_t *dn[] = {&cc->n_allow_methods, &cc->n_allow_headers, &cc->n_expose_headers};
    for (int k = 0; k < 3; k++) {
        const struct tr_rnode *l = ist_list(x, c, p, lists[k]);
        if (l == NULL)
            continue;
        const char **v = ist_malloc(x, l->n, sizeof(*v));
        size_t m = 0;
        for (const struct tr_rnode *e = l->head; v && e; e = e->next) {
            const char *sv;
            if (tr_rnode_str(e, &sv))
                v[m++] = ist_mstrdup(x, sv);
        }
        *dst[k] = m ? v : NULL;
        *dn[k] = m;
    }
    uint32_t ms;
    if (ist_duration(x, c, p, "maxAge", 24u * 3600u * 1000u, &ms)) {
        cc->has_max_age = true;
        cc->max_age_s = ms / 1000u;
    }
    bool b;
    if (ist_bool(x, c, p, "allowCredentials", &b))
        cc->allow_credentials = b;
    const char *up;
    if (ist_str(x, c, p, "unmatchedPreflights", &up)) {
        if (strcmp(up, "IGNORE") == 0)
            cc->unmatched_preflights = TR_CORS_UNMATCHED_IGNORE;
        else if (strcmp(up, "FORWARD") != 0 && strcmp(up, "UNSPECIFIED") != 0) {
            ist_error(x, c, tr_rnode_get(p, "unmatchedPreflights"), "unmatchedPreflights",
                      "expected FORWARD or IGNORE, got \"%s\"", up);
            ok = false;
        }
    }
    if (cc->n_origins == 0) {
        ist_warn(x, c, p, NULL, "no allowOrigins: no origin is allowed, the policy does nothing");
    } else {
        r->cors = cc;
    }
    ist_pop(c, saved);
    return ok;
}

/* Istio HTTPRetry -> the route's retry policy (route defaults: Istio's
 * default policy as trellis applies it). retryOn's numbers are retriable
 * status codes. Written without attempts, retries are off (Istio). */
static bool retries_action(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *rt,
                           struct tr_route_cfg *r)
{
    static const struct ist_key keys[] = {
        {"attempts", NULL},
        {"perTryTimeout", NULL},
        {"retryOn", NULL},
        {"retryRemoteLocalities", NULL},
        {"retryIgnorePreviousHosts", NULL},
        {"backoff", NULL},
    };
    size_t saved = ist_push_key(c, "retries");
    bool ok = IST_KEYS(x, c, rt, keys);
    struct tr_retry_cfg *p = &r->retries;
    uint32_t v;
    p->attempts = 0;
    if (ok && ist_u32(x, c, rt, "attempts", 0, 100, &v))
        p->attempts = v;
    if (ok && ist_duration(x, c, rt, "perTryTimeout", 24u * 3600u * 1000u, &v))
        p->per_try_timeout_ms = v;
    if (ok && ist_duration(x, c, rt, "backoff", 24u * 3600u * 1000u, &v) && v > 0) {
        p->backoff_base_ms = v;
        if (p->backoff_max_ms < v * 10)
            p->backoff_max_ms = v * 10; /* Envoy: max is 10x the base by default */
    }
    const char *on;
    if (ok && ist_str(x, c, rt, "retryOn", &on)) {
        size_t n = 1;
        for (const char *q = on; *q; q++)
            n += *q == ',';
        const char **conds = ist_malloc(x, n, sizeof(*conds));
        const char **codes = ist_malloc(x, n, sizeof(*codes));
        char *copy = ist_printf(x, "%s", on);
        if (conds == NULL || codes == NULL || copy == NULL) {
            ist_pop(c, saved);
            return false;
        }
        size_t nc = 0, nd = 0;
        for (char *save = NULL, *t = strtok_r(copy, ",", &save); t;
             t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            size_t l = strlen(t);
            while (l > 0 && t[l - 1] == ' ')
                t[--l] = '\0';
            if (l == 0)
                continue;
            if (strspn(t, "0123456789") == l) {
                codes[nd++] = ist_mstrdup(x, t);
                continue;
            }
            static const char *const known[] = {"5xx",
                                                "gateway-error",
                                                "reset",
                                                "reset-before-request",
                                                "connect-failure",
                                                "refused-stream",
                                                "retriable-4xx",
                                                "retriable-status-codes",
                                                "cancelled",
                                                "deadline-exceeded",
                                                "resource-exhausted",
                                                "internal",
                                                "unavailable"};
            bool found = false;
            for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
                found = found || strcmp(t, known[k]) == 0;
            if (!found) {
                ist_warn(x, c, tr_rnode_get(rt, "retryOn"), "retryOn",
                         "condition \"%s\" is not supported: ignored", t);
                continue;
            }
            conds[nc++] = ist_mstrdup(x, t);
        }
        if (nd > 0 && nc < n)
            conds[nc++] = "retriable-status-codes"; /* numbers imply it, as in Istio */
        p->retry_on = nc ? conds : NULL;
        p->n_retry_on = nc;
        p->status_codes = nd ? codes : NULL;
        p->n_status_codes = nd;
        if (nc == 0) {
            p->attempts = 0; /* nothing to retry on */
        }
    }
    bool b;
    /* Envoy's previous_priorities with update frequency 2, as Istio sets:
     * from the third try on, the levels (localities, by failover order)
     * the first two went to are left out. */
    if (ok && ist_bool(x, c, rt, "retryRemoteLocalities", &b) && b)
        p->exclude_tried_priorities = 2;
    if (ok && ist_bool(x, c, rt, "retryIgnorePreviousHosts", &b))
        p->avoid_failed_endpoint = b; /* false: a retry may go to the same endpoint */
    ist_pop(c, saved);
    return ok;
}

/* Where a rule is written: its VirtualService, the rule, a cursor at it
 * (spec.http[i]). A delegated rule reads each field from the delegate's
 * rule, or from the root's when the delegate's does not set it. */
struct rule_src {
    const struct tr_resource *vs;
    const struct tr_rnode *rule;
    struct ist_cursor *c;
};

static bool has_field(const struct rule_src *s, const char *key)
{
    const struct tr_rnode *n = s ? tr_rnode_get(s->rule, key) : NULL;
    return n != NULL && !tr_rnode_is_null(n);
}

/* The rule a field comes from: p's, else the root f's (Istio's
 * mergeHTTPRoute takes each of these fields whole). */
static const struct rule_src *pick(const struct rule_src *p, const struct rule_src *f,
                                   const char *key)
{
    return f != NULL && !has_field(p, key) && has_field(f, key) ? f : p;
}

/* mirror / mirrors (+ mirrorPercentage, mirror_percent) -> the route's
 * mirrors. Unset percentage: every request (Istio). Each of mirror, its
 * percentage and mirrors may come from a different rule (delegates). */
static bool mirrors_action(struct ist_ctx *x, const struct rule_src *os, const struct rule_src *ps,
                           const struct rule_src *ms, const struct ist_vhost *vh,
                           struct tr_route_cfg *r)
{
    const struct tr_rnode *one = ist_map(x, os->c, os->rule, "mirror");
    const struct tr_rnode *many = ist_list(x, ms->c, ms->rule, "mirrors");
    size_t n = (one ? 1 : 0) + (many ? many->n : 0);
    if (n == 0)
        return true;
    struct tr_mirror_cfg *v = ist_malloc(x, n, sizeof(*v));
    if (v == NULL)
        return false;
    size_t k = 0, k_one = 0;
    if (one != NULL) {
        uint32_t ppm = 1000000, pct;
        if (tr_rnode_get(ps->rule, "mirrorPercentage") != NULL)
            ist_percent(x, ps->c, ps->rule, "mirrorPercentage", &ppm);
        else if (ist_u32(x, ps->c, ps->rule, "mirrorPercent", 0, 100, &pct) ||
                 ist_u32(x, ps->c, ps->rule, "mirror_percent", 0, 100, &pct))
            ppm = pct * 10000u;
        const char *cl = NULL;
        if (destination_at(x, os->c, one, "mirror", os->vs, vh, &cl) && cl != NULL && ppm > 0)
            v[k++] = (struct tr_mirror_cfg){
                .cluster_name = cl, .per_million = ppm, .loc = ist_loc(x, os->c, one)};
        k_one = k;
    }
    size_t i = 0;
    for (const struct tr_rnode *e = many ? many->head : NULL; e; e = e->next, i++) {
        static const struct ist_key mkeys[] = {{"destination", NULL}, {"percentage", NULL}};
        size_t sm = ist_push_key(ms->c, "mirrors");
        ist_push_index(ms->c, i);
        uint32_t ppm = 1000000;
        const char *cl = NULL;
        if (IST_KEYS(x, ms->c, e, mkeys)) {
            if (tr_rnode_get(e, "percentage") != NULL)
                ist_percent(x, ms->c, e, "percentage", &ppm);
            if (destination_at(x, ms->c, tr_rnode_get(e, "destination"), "destination", ms->vs, vh,
                               &cl) &&
                cl != NULL && ppm > 0)
                v[k++] = (struct tr_mirror_cfg){
                    .cluster_name = cl, .per_million = ppm, .loc = ist_loc(x, ms->c, e)};
        }
        ist_pop(ms->c, sm);
    }
    /* Shadows are HTTP/1.1 exchanges: a mirror to an HTTP/2-only (gRPC)
     * cluster is dropped with a warning (the model refuses it). */
    size_t kept = 0;
    for (size_t m = 0; m < k; m++) {
        uintptr_t idx = (uintptr_t)tr_strmap_get(&x->cluster_by_name, v[m].cluster_name);
        if (idx != 0 && x->clusters[idx - 1].protocol == TR_UPROTO_HTTP2) {
            /* Known only once clusters exist (the build pass): reported here,
             * once per virtual host that uses the rule. */
            const struct rule_src *at = m < k_one ? os : ms;
            bool quiet = x->quiet;
            x->quiet = false;
            ist_warn(x, at->c, at->rule, NULL,
                     "mirroring to %s is not supported (shadows are HTTP/1.1; its port speaks "
                     "HTTP/2 or gRPC): the mirror is dropped",
                     v[m].cluster_name);
            x->quiet = quiet;
            continue;
        }
        v[kept++] = v[m];
    }
    r->mirrors = kept ? v : NULL;
    r->n_mirrors = kept;
    return true;
}

/* The action of rule http[i] into r (matches are filled by the caller). */

/* directResponse.body.bytes: the decoded body, or NULL with why. The
 * model's body is text without NUL bytes (at most 65536 bytes). */
static const char *base64_body(struct ist_ctx *x, const char *b64, const char **why)
{
    size_t n = strlen(b64);
    if (n % 4 != 0 || n / 4 * 3 > 65536 + 2) {
        *why = n % 4 != 0 ? "not base64 (its length is not a multiple of 4)"
                          : "a body of at most 65536 bytes";
        return NULL;
    }
    unsigned char *out = ist_malloc(x, n / 4 * 3 + 1, 1);
    if (out == NULL)
        return NULL;
    int len = n > 0 ? EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n) : 0;
    if (len < 0) {
        *why = "not base64";
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding's bytes too. */
    for (size_t k = n; k > 0 && b64[k - 1] == '=' && len > 0; k--)
        len--;
    if (len > 65536) {
        *why = "a body of at most 65536 bytes";
        return NULL;
    }
    if (memchr(out, 0, (size_t)len) != NULL) {
        *why = "a body with NUL bytes cannot be carried by the model yet (text only)";
        return NULL;
    }
    out[len] = 0;
    return (const char *)out;
}

static bool route_action(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *rule,
                         const struct tr_resource *vs, const struct ist_vhost *vh,
                         struct tr_route_cfg *r)
{
    const struct tr_rnode *route = ist_list(x, c, rule, "route");
    const struct tr_rnode *dr = ist_map(x, c, rule, "directResponse");
    const struct tr_rnode *redirect = tr_rnode_get(rule, "redirect");
    const struct tr_rnode *delegate = tr_rnode_get(rule, "delegate");
    int actions = (route != NULL) + (dr != NULL) + (redirect != NULL);
    if (delegate != NULL && (route != NULL || redirect != NULL)) {
        ist_error(x, c, rule, route ? "route" : "redirect",
                  "a rule with delegate cannot have %s: the delegate's rules route (Istio "
                  "refuses it too)",
                  route ? "route" : "redirect");
        return false;
    }
    if (delegate == NULL && actions != 1) {
        ist_error(x, c, rule, NULL,
                  actions ? "only one of route, redirect, directResponse and delegate"
                          : "one of route, redirect, directResponse or delegate is required");
        return false;
    }
    /* A root rule's action is its delegate's rules (ist_vs_routes); its
     * directResponse, Istio's merge gives to each of them that has no
     * redirect or directResponse of its own. */
    if (delegate != NULL && dr == NULL)
        return true;
    if (redirect != NULL)
        return redirect_action(x, c, redirect, r);
    if (dr != NULL) {
        static const struct ist_key keys[] = {{"status", NULL}, {"body", NULL}};
        size_t saved = ist_push_key(c, "directResponse");
        uint32_t status = 0;
        bool ok = IST_KEYS(x, c, dr, keys);
        if (ok && !ist_u32(x, c, dr, "status", 200, 599, &status)) {
            ist_error(x, c, dr, "status", "a status 200..599 is required");
            ok = false;
        }
        const struct tr_rnode *body = ist_map(x, c, dr, "body");
        static const struct ist_key bkeys[] = {{"string", NULL}, {"bytes", NULL}};
        size_t sb = ist_push_key(c, "body");
        if (ok && body != NULL && IST_KEYS(x, c, body, bkeys)) {
            const char *s = NULL, *b64 = NULL;
            if (ist_str(x, c, body, "bytes", &b64)) {
                /* Protobuf's bytes in JSON and YAML: standard base64. */
                const char *why = NULL;
                const char *text = base64_body(x, b64, &why);
                if (text == NULL) {
                    ist_error(x, c, tr_rnode_get(body, "bytes"), "bytes", "%s", why);
                    ok = false;
                } else {
                    r->direct_body = text;
                }
            }
            if (ist_str(x, c, body, "string", &s)) {
                if (strlen(s) > 65536) {
                    ist_error(x, c, body, "string", "a body of at most 65536 bytes");
                    ok = false;
                }
                r->direct_body = ist_mstrdup(x, s);
            }
        }
        ist_pop(c, sb);
        ist_pop(c, saved);
        r->direct_status = (uint16_t)status;
        if (r->direct_body == NULL)
            r->direct_body = "";
        return ok;
    }
    if (route->n == 0 || route->n > 256) {
        ist_error(x, c, route, "route", "1 to 256 destinations");
        return false;
    }
    r->clusters = ist_malloc(x, route->n, sizeof(*r->clusters));
    if (r->clusters == NULL)
        return false;
    size_t i = 0;
    uint64_t total = 0;
    bool any_missing = false;
    for (const struct tr_rnode *e = route->head; e; e = e->next, i++) {
        size_t saved = ist_push_key(c, "route");
        ist_push_index(c, i);
        uint32_t w = route->n == 1 ? 100 : 0;
        bool ok = IST_KEYS(x, c, e, dest_keys);
        if (ok && tr_rnode_get(e, "weight") != NULL)
            ok = ist_u32(x, c, e, "weight", 0, 1000000, &w);
        const char *cl = NULL;
        if (ok)
            ok = destination(x, c, tr_rnode_get(e, "destination"), vs, vh, &cl);
        struct tr_header_ops_cfg dreq = {0}, dresp = {0};
        if (ok)
            ok = header_ops(x, c, e, &dreq, &dresp, NULL);
        struct tr_cfg_loc loc = ist_loc(x, c, e);
        ist_pop(c, saved);
        if (!ok)
            return false;
        total += w;
        if (w == 0)
            continue;
        if (cl == NULL) {
            any_missing = true;
            continue;
        }
        struct tr_weighted_cluster_cfg *wc = &r->clusters[r->n_clusters++];
        wc->cluster_name = cl;
        wc->weight = w;
        wc->loc = loc;
        wc->request_headers = dreq;
        wc->response_headers = dresp;
    }
    if (total == 0) {
        ist_error(x, c, route, "route", "the destinations' weights add up to 0");
        return false;
    }
    if (x->analyze && route->n > 1 && total != 100)
        ist_warn(x, c, route, "route",
                 "the weights add up to %llu, not 100: each destination gets weight/%llu of the "
                 "requests",
                 (unsigned long long)total, (unsigned long long)total);
    if (r->n_clusters == 0 || any_missing) {
        /* A share goes nowhere: Istio answers those requests 503 NR; the
         * model cannot split to "nowhere", so the whole route does. */
        r->n_clusters = 0;
        r->clusters = NULL;
        r->direct_status = 503;
        r->direct_body = "no healthy upstream\n";
    }
    return true;
}

static bool rewrite(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *rule,
                    struct tr_route_cfg *r)
{
    const struct tr_rnode *rw = ist_map(x, c, rule, "rewrite");
    if (rw == NULL)
        return true;
    static const struct ist_key keys[] = {
        {"uri", NULL},
        {"authority", NULL},
        {"uriRegexRewrite", NULL},
    };
    size_t saved = ist_push_key(c, "rewrite");
    bool ok = IST_KEYS(x, c, rw, keys);
    const char *uri = NULL, *auth = NULL;
    const struct tr_rnode *rx = ok ? ist_map(x, c, rw, "uriRegexRewrite") : NULL;
    if (rx != NULL) {
        /* RE2 pattern and substitution, as Envoy's regex_rewrite takes them
         * (the model checks both and compiles the pattern). */
        static const struct ist_key rx_keys[] = {{"match", NULL}, {"rewrite", NULL}};
        size_t sr = ist_push_key(c, "uriRegexRewrite");
        const char *m = NULL, *sub = NULL;
        if (IST_KEYS(x, c, rx, rx_keys)) {
            if (!ist_str(x, c, rx, "match", &m) || m[0] == '\0') {
                ist_error(x, c, rx, "match", "a pattern is required");
                ok = false;
            }
            if (!ist_str(x, c, rx, "rewrite", &sub) && tr_rnode_get(rx, "rewrite") != NULL)
                ok = false;
            if (tr_rnode_get(rw, "uri") != NULL) {
                ist_error(x, c, rx, NULL, "only one of uri and uriRegexRewrite (as Istio)");
                ok = false;
            }
        } else {
            ok = false;
        }
        char why[256];
        if (ok && !tr_cfg_regex_rewrite_ok(m, sub != NULL ? sub : "", why, sizeof(why))) {
            ist_error(x, c, rx, "match", "%s", why);
            ok = false;
        }
        if (ok) {
            r->regex_rewrite = ist_mstrdup(x, m);
            r->regex_substitution = ist_mstrdup(x, sub != NULL ? sub : "");
        }
        ist_pop(c, sr);
    }
    if (ok && ist_str(x, c, rw, "uri", &uri)) {
        if (uri[0] != '/') {
            ist_error(x, c, tr_rnode_get(rw, "uri"), "uri", "a path starting with /");
            ok = false;
        }
        r->prefix_rewrite = ist_mstrdup(x, uri);
    }
    if (ok && ist_str(x, c, rw, "authority", &auth))
        r->host_rewrite = ist_mstrdup(x, auth);
    ist_pop(c, saved);
    return ok;
}

/* One entry of a match block's headers, withoutHeaders or queryParams. */
struct ist_kv {
    const char *name; /* as written (Istio merges these maps by exact key) */
    struct ist_sm sm;
    struct tr_cfg_loc loc;
};

/* An HTTPMatchRequest as written, read once: a rule's own block, or the
 * merge of a root's block with a delegate's (merge_match). IST_SM_NONE:
 * the field is absent. */
struct ist_match {
    const char *name;
    struct ist_sm uri, method, authority, scheme;
    struct tr_cfg_loc pseudo_loc[3]; /* method, authority, scheme */
    bool uri_never;                  /* an exact or prefix uri without a leading / */
    bool ignore_case;
    struct ist_kv *headers, *without, *query;
    size_t n_headers, n_without, n_query;
    uint32_t port;
    /* sourceLabels: every map here must match (a merge keeps both; they
     * agree on common keys, or the merge was refused) */
    const struct tr_rnode *labels[2];
    const char *source_ns;
    const struct tr_rnode *gateways;
    const struct tr_resource *gw_vs; /* where the gateways' short names resolve */
    struct tr_cfg_loc loc;
    size_t index; /* in the rule's match list as written */
};

static bool kv_read(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *m,
                    const char *key, struct ist_kv **out, size_t *n)
{
    const struct tr_rnode *hs = ist_map(x, c, m, key);
    if (hs == NULL)
        return true;
    size_t saved = ist_push_key(c, key);
    struct ist_kv *v = ist_alloc(x, hs->n / 2, sizeof(*v));
    if (v == NULL)
        return false;
    for (const struct tr_rnode *k = hs->head; k && k->next; k = k->next->next) {
        struct ist_sm sm;
        if (!ist_string_match(x, c, hs, k->s, &sm)) {
            ist_pop(c, saved);
            return false;
        }
        v[*n] = (struct ist_kv){.name = k->s, .sm = sm, .loc = ist_loc(x, c, k)};
        (*n)++;
    }
    *out = v;
    ist_pop(c, saved);
    return true;
}

/* Header slots a block takes in the model: withoutHeaders with a value
 * takes two (present, and not matching). */
static size_t header_slots(const struct ist_kv *v, size_t n, bool invert)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += invert && v[i].sm.kind != IST_SM_ANY &&
                     !(v[i].sm.kind == IST_SM_REGEX && strcmp(v[i].sm.value, "*") == 0)
                 ? 2
                 : 1;
    return k;
}

/* Reads match block m (cursor at it) into *im. False when it is invalid
 * (reported); the block is then ignored. */
static bool parse_match(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *m,
                        const struct tr_resource *vs, struct ist_match *im)
{
    memset(im, 0, sizeof(*im));
    im->gw_vs = vs;
    im->loc = ist_loc(x, c, m);
    if (!IST_KEYS(x, c, m, match_keys))
        return false;
    ist_str(x, c, m, "name", &im->name);
    ist_u32(x, c, m, "port", 1, 65535, &im->port);
    im->labels[0] = ist_map(x, c, m, "sourceLabels");
    ist_str(x, c, m, "sourceNamespace", &im->source_ns);
    im->gateways = ist_list(x, c, m, "gateways");
    if (ist_string_match(x, c, m, "uri", &im->uri)) {
        if ((im->uri.kind == IST_SM_EXACT || im->uri.kind == IST_SM_PREFIX) &&
            im->uri.value[0] != '/' && !(im->uri.kind == IST_SM_PREFIX && im->uri.value[0] == 0)) {
            ist_warn(x, c, tr_rnode_get(m, "uri"), "uri",
                     "a path that does not start with / never matches: block dropped");
            im->uri_never = true;
        }
    } else if (tr_rnode_get(m, "uri") != NULL) {
        return false;
    }
    bool ic;
    if (ist_bool(x, c, m, "ignoreUriCase", &ic)) {
        im->ignore_case = ic;
        if (im->uri.kind == IST_SM_REGEX && ic)
            ist_warn(x, c, tr_rnode_get(m, "ignoreUriCase"), "ignoreUriCase",
                     "applies to exact and prefix matches only (as in Istio): ignored for this "
                     "regex");
    }
    static const char *const pseudo[] = {"method", "authority", "scheme"};
    struct ist_sm *ps[] = {&im->method, &im->authority, &im->scheme};
    size_t slots = 0;
    for (size_t i = 0; i < 3; i++) {
        if (!ist_string_match(x, c, m, pseudo[i], ps[i])) {
            if (tr_rnode_get(m, pseudo[i]) != NULL)
                return false;
            continue;
        }
        size_t saved = ist_push_key(c, pseudo[i]);
        im->pseudo_loc[i] = ist_loc(x, c, tr_rnode_get(m, pseudo[i]));
        ist_pop(c, saved);
        if (ps[i]->kind != IST_SM_ANY && !(i == 0 && ps[i]->kind == IST_SM_EXACT))
            slots++;
    }
    if (!kv_read(x, c, m, "queryParams", &im->query, &im->n_query) ||
        !kv_read(x, c, m, "headers", &im->headers, &im->n_headers) ||
        !kv_read(x, c, m, "withoutHeaders", &im->without, &im->n_without))
        return false;
    if (slots + header_slots(im->headers, im->n_headers, false) +
            header_slots(im->without, im->n_without, true) >
        64) {
        ist_error(x, c, m, NULL, "more than 64 header matches in one block");
        return false;
    }
    return true;
}

static enum tr_header_match_kind hmatch_kind(enum ist_sm_kind k)
{
    return k == IST_SM_EXACT    ? TR_HMATCH_EXACT
           : k == IST_SM_PREFIX ? TR_HMATCH_PREFIX
                                : TR_HMATCH_REGEX;
}

/* headers or withoutHeaders into the model's header matches at hv[*n]. */
static bool emit_headers(struct ist_ctx *x, const struct ist_kv *v, size_t nv, bool invert,
                         struct tr_header_match_cfg *hv, size_t *n)
{
    for (size_t i = 0; i < nv; i++) {
        char *name = ist_mstrdup(x, v[i].name);
        if (name == NULL)
            return false;
        for (char *p = name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        const struct ist_sm *sm = &v[i].sm;
        struct tr_header_match_cfg *h = &hv[(*n)++];
        *h = (struct tr_header_match_cfg){.name = name, .loc = v[i].loc};
        /* Istio: regex "*" means "present" (pilot's special case). */
        if (sm->kind == IST_SM_ANY || (sm->kind == IST_SM_REGEX && strcmp(sm->value, "*") == 0)) {
            h->kind = TR_HMATCH_PRESENT;
            h->invert = invert;
            continue;
        }
        h->kind = hmatch_kind(sm->kind);
        h->value = ist_mstrdup(x, sm->value);
        if (invert) {
            /* withoutHeaders: the header is present and does not match
             * (Envoy's invert_match, which Istio uses). */
            h->invert = true;
            hv[(*n)++] = (struct tr_header_match_cfg){
                .name = name, .kind = TR_HMATCH_PRESENT, .loc = h->loc};
        } else if (h->kind != TR_HMATCH_EXACT && sm->value[0] == '\0') {
            h->kind = TR_HMATCH_PRESENT; /* prefix "" and regex "" match any value */
        }
    }
    return true;
}

/* A read match block into r's match fields. Returns false when the block
 * is dropped for this workload or port (compile-time conditions), with
 * *err set when memory ran out. */
static bool emit_match(struct ist_ctx *x, const struct ist_match *im, const struct ist_vhost *vh,
                       struct tr_route_cfg *r, bool *err)
{
    *err = false;
    bool keep = !im->uri_never;
    if (vh != NULL) {
        if (im->port != 0 && im->port != vh->port)
            keep = false;
        for (size_t i = 0; i < 2; i++)
            if (im->labels[i] != NULL && !ist_labels_match(im->labels[i], x->wl_labels))
                keep = false;
        if (im->source_ns != NULL && strcmp(im->source_ns, x->wl_ns) != 0)
            keep = false;
        if (im->gateways != NULL && im->gateways->n > 0 &&
            !ist_gateway_listed(im->gw_vs, im->gateways, vh->gateway))
            keep = false;
    }
    if (im->uri_never) {
        /* never matches: the block is dropped */
    } else if (im->uri.kind == IST_SM_EXACT || im->uri.kind == IST_SM_PREFIX) {
        if (im->uri.value[0] == '\0') {
            r->path_kind = TR_PATH_PREFIX; /* an empty prefix matches everything */
            r->path = "/";
        } else {
            r->path_kind = im->uri.kind == IST_SM_EXACT ? TR_PATH_EXACT : TR_PATH_PREFIX;
            r->path = ist_mstrdup(x, im->uri.value);
        }
    } else if (im->uri.kind == IST_SM_REGEX) {
        r->path_kind = TR_PATH_REGEX;
        r->path = ist_mstrdup(x, im->uri.value);
    }
    if (r->path_kind != TR_PATH_REGEX)
        r->path_ignore_case = im->ignore_case;
    size_t cap = 3 + header_slots(im->headers, im->n_headers, false) +
                 header_slots(im->without, im->n_without, true);
    struct tr_header_match_cfg *hv = ist_malloc(x, cap, sizeof(*hv));
    if (hv == NULL) {
        *err = true;
        return false;
    }
    size_t n = 0;
    /* method (exact: the router's method list), authority and scheme: the
     * model's pseudo-header matches. */
    static const char *const pseudo[] = {":method", ":authority", ":scheme"};
    const struct ist_sm *ps[] = {&im->method, &im->authority, &im->scheme};
    for (size_t i = 0; i < 3; i++) {
        const struct ist_sm *sm = ps[i];
        if (sm->kind == IST_SM_NONE || sm->kind == IST_SM_ANY)
            continue;
        if (i == 0 && sm->kind == IST_SM_EXACT) {
            r->methods = ist_malloc(x, 1, sizeof(*r->methods));
            if (r->methods == NULL) {
                *err = true;
                return false;
            }
            r->methods[0] = ist_mstrdup(x, sm->value);
            r->n_methods = 1;
            continue;
        }
        hv[n++] = (struct tr_header_match_cfg){.name = pseudo[i],
                                               .kind = hmatch_kind(sm->kind),
                                               .value = ist_mstrdup(x, sm->value),
                                               .loc = im->pseudo_loc[i]};
    }
    /* queryParams: name -> StringMatch; {} means present. */
    if (im->n_query > 0) {
        struct tr_query_match_cfg *qv = ist_malloc(x, im->n_query, sizeof(*qv));
        if (qv == NULL) {
            *err = true;
            return false;
        }
        for (size_t i = 0; i < im->n_query; i++) {
            const struct ist_sm *sm = &im->query[i].sm;
            qv[i] = (struct tr_query_match_cfg){
                .name = ist_mstrdup(x, im->query[i].name),
                .kind = sm->kind == IST_SM_ANY ? TR_HMATCH_PRESENT : hmatch_kind(sm->kind),
                .value = sm->kind == IST_SM_ANY ? NULL : ist_mstrdup(x, sm->value),
                .loc = im->query[i].loc};
        }
        r->query = qv;
        r->n_query = im->n_query;
    }
    if (!emit_headers(x, im->headers, im->n_headers, false, hv, &n) ||
        !emit_headers(x, im->without, im->n_without, true, hv, &n)) {
        *err = true;
        return false;
    }
    r->headers = n > 0 ? hv : NULL;
    r->n_headers = n;
    return keep;
}

/* ------------------------------------------------ delegate VirtualServices
 *
 * Istio merges a delegate's http rules into the root's rule that names it
 * (pilot/pkg/model/virtualservice.go, as of istio 1.30): each delegate rule
 * in order becomes one rule, its matches merged with the root rule's and
 * every other field its own or, when it does not set it, the root rule's.
 * The helpers below follow that merge field by field. */

/* Istio's stringMatchConflict: a root StringMatch and a delegate's, both
 * present, agree only when both are the same non-empty exact, or the root
 * is a non-empty prefix and the delegate an exact or prefix under it.
 * Anything else (a regex on either side, an empty match) conflicts. */
static bool sm_conflict(const struct ist_sm *root, const struct ist_sm *leaf)
{
    if (root->kind == IST_SM_NONE || leaf->kind == IST_SM_NONE)
        return false;
    if (root->kind == IST_SM_EXACT && root->value[0] != '\0')
        return !(leaf->kind == IST_SM_EXACT && strcmp(leaf->value, root->value) == 0);
    if (root->kind == IST_SM_PREFIX && root->value[0] != '\0')
        return !((leaf->kind == IST_SM_EXACT || leaf->kind == IST_SM_PREFIX) &&
                 leaf->value[0] != '\0' &&
                 strncmp(leaf->value, root->value, strlen(root->value)) == 0);
    return true;
}

static const struct ist_sm *kv_get(const struct ist_kv *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return &v[i].sm;
    return NULL;
}

static bool kv_conflict(const struct ist_kv *root, size_t nr, const struct ist_kv *leaf, size_t nl)
{
    for (size_t i = 0; i < nl; i++) {
        const struct ist_sm *r = kv_get(root, nr, leaf[i].name);
        if (r != NULL && sm_conflict(r, &leaf[i].sm))
            return true;
    }
    return false;
}

/* A gateway name as Istio resolves it: "mesh", else NS/NAME. */
static const char *gw_full(struct ist_ctx *x, const struct tr_resource *vs, const char *g)
{
    if (strcmp(g, "mesh") == 0 || strchr(g, '/') != NULL)
        return g;
    return ist_printf(x, "%s/%s", vs->ns ? vs->ns : "default", g);
}

/* Istio's hasConflict: may delegate block leaf narrow root block root? */
static bool match_conflict(struct ist_ctx *x, const struct ist_match *root,
                           const struct ist_match *leaf)
{
    if (sm_conflict(&root->uri, &leaf->uri) || sm_conflict(&root->scheme, &leaf->scheme) ||
        sm_conflict(&root->method, &leaf->method) ||
        sm_conflict(&root->authority, &leaf->authority) ||
        kv_conflict(root->headers, root->n_headers, leaf->headers, leaf->n_headers) ||
        kv_conflict(root->without, root->n_without, leaf->without, leaf->n_without) ||
        kv_conflict(root->query, root->n_query, leaf->query, leaf->n_query))
        return true;
    if (root->ignore_case != leaf->ignore_case)
        return true;
    if (root->port != 0 && leaf->port != 0 && root->port != leaf->port)
        return true;
    /* A root sourceNamespace binds the delegate's, even an absent one. */
    if (root->source_ns != NULL &&
        (leaf->source_ns == NULL || strcmp(leaf->source_ns, root->source_ns) != 0))
        return true;
    const struct tr_rnode *rl = root->labels[0], *ll = leaf->labels[0];
    for (const struct tr_rnode *k = ll ? ll->head : NULL; rl && k && k->next; k = k->next->next) {
        const char *lv, *rv;
        const struct tr_rnode *r = tr_rnode_get(rl, k->s);
        if (r != NULL && tr_rnode_str(r, &rv) && tr_rnode_str(k->next, &lv) && strcmp(rv, lv) != 0)
            return true;
    }
    /* The delegate's gateways must be among the root's. */
    if (root->gateways != NULL && root->gateways->n > 0 && leaf->gateways != NULL &&
        leaf->gateways->n > 0) {
        if (root->gateways->n < leaf->gateways->n)
            return true;
        for (const struct tr_rnode *g = leaf->gateways->head; g; g = g->next) {
            const char *lg, *lf;
            bool found = false;
            if (!tr_rnode_str(g, &lg) || (lf = gw_full(x, leaf->gw_vs, lg)) == NULL)
                return true;
            for (const struct tr_rnode *h = root->gateways->head; h && !found; h = h->next) {
                const char *rg, *rf;
                found = tr_rnode_str(h, &rg) && (rf = gw_full(x, root->gw_vs, rg)) != NULL &&
                        strcmp(rf, lf) == 0;
            }
            if (!found)
                return true;
        }
    }
    return false;
}

/* The union of two maps by key, leaf's entry winning. */
static bool kv_merge(struct ist_ctx *x, const struct ist_kv *root, size_t nr,
                     const struct ist_kv *leaf, size_t nl, struct ist_kv **out, size_t *n)
{
    struct ist_kv *v = ist_alloc(x, nr + nl, sizeof(*v));
    if (v == NULL)
        return false;
    size_t k = 0;
    for (size_t i = 0; i < nr; i++)
        if (kv_get(leaf, nl, root[i].name) == NULL)
            v[k++] = root[i];
    for (size_t i = 0; i < nl; i++)
        v[k++] = leaf[i];
    *out = v;
    *n = k;
    return true;
}

/* Istio's mergeHTTPMatchRequest: the delegate's block, with what it leaves
 * out taken from the root's. */
static bool merge_match(struct ist_ctx *x, const struct ist_match *root,
                        const struct ist_match *leaf, struct ist_match *out)
{
    *out = *leaf;
    if (leaf->name == NULL || leaf->name[0] == '\0')
        out->name = root->name;
    else if (root->name != NULL && root->name[0] != '\0')
        out->name = ist_printf(x, "%s-%s", root->name, leaf->name);
    const struct ist_sm *lsm[] = {&leaf->uri, &leaf->method, &leaf->authority, &leaf->scheme};
    const struct ist_sm *rsm[] = {&root->uri, &root->method, &root->authority, &root->scheme};
    struct ist_sm *osm[] = {&out->uri, &out->method, &out->authority, &out->scheme};
    for (size_t i = 0; i < 4; i++) {
        if (lsm[i]->kind != IST_SM_NONE)
            continue;
        *osm[i] = *rsm[i];
        if (i == 0)
            out->uri_never = root->uri_never;
        else
            out->pseudo_loc[i - 1] = root->pseudo_loc[i - 1];
    }
    if (!kv_merge(x, root->headers, root->n_headers, leaf->headers, leaf->n_headers, &out->headers,
                  &out->n_headers) ||
        !kv_merge(x, root->without, root->n_without, leaf->without, leaf->n_without, &out->without,
                  &out->n_without) ||
        !kv_merge(x, root->query, root->n_query, leaf->query, leaf->n_query, &out->query,
                  &out->n_query))
        return false;
    if (out->port == 0)
        out->port = root->port;
    out->labels[1] = root->labels[0];
    if (out->source_ns == NULL)
        out->source_ns = root->source_ns;
    if (out->gateways == NULL || out->gateways->n == 0) {
        out->gateways = root->gateways;
        out->gw_vs = root->gw_vs;
    }
    return true;
}

static bool is_catch_all(const struct tr_route_cfg *r)
{
    return r->path_kind == TR_PATH_PREFIX && r->path != NULL && strcmp(r->path, "/") == 0 &&
           r->n_methods == 0 && r->n_headers == 0 && r->n_query == 0;
}

/* NS/VS.RULE, where RULE is the rule's name or http[i]; then, as Istio
 * names a match's route, .MATCH for a named match block, or .match[j] when
 * the rule has several. */
static char *route_name(struct ist_ctx *x, const struct tr_resource *vs, const char *name, size_t i,
                        size_t j, size_t n_matches, const char *match_name)
{
    char ib[IST_UTOA_MAX], jb[IST_UTOA_MAX];
    const char *parts[IST_JOIN_MAX];
    size_t n = 0;
    parts[n++] = vs->ns ? vs->ns : "default";
    parts[n++] = "/";
    parts[n++] = vs->name;
    if (name != NULL) {
        parts[n++] = ".";
        parts[n++] = name;
    } else {
        parts[n++] = ".http[";
        parts[n++] = ist_utoa(ib, i);
        parts[n++] = "]";
    }
    if (match_name != NULL && *match_name != '\0') {
        parts[n++] = ".";
        parts[n++] = match_name;
    } else if (n_matches > 1) {
        parts[n++] = ".match[";
        parts[n++] = ist_utoa(jb, j);
        parts[n++] = "]";
    }
    char *s = ist_mjoin(x, parts, n);
    for (char *p = s; p && *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            *p = '_';
    }
    return s;
}

/* Every field of a rule but its matches into proto: p's, or for a
 * delegated rule (f the root's rule) p's else f's, as Istio's merge does. */
static bool rule_fields(struct ist_ctx *x, const struct rule_src *p, const struct rule_src *f,
                        const struct ist_vhost *vh, struct tr_route_cfg *proto)
{
    tr_cfg_route_defaults(proto);
    /* Istio's order of actions: redirect, directResponse (the delegate
     * rule's, else the root's), route. */
    const struct rule_src *act = p;
    if (f != NULL && !has_field(p, "redirect") && !has_field(p, "directResponse") &&
        has_field(f, "directResponse"))
        act = f;
    const struct rule_src *rw = pick(p, f, "rewrite"), *hd = pick(p, f, "headers");
    const char *authority = NULL;
    bool ok = route_action(x, act->c, act->rule, act->vs, vh, proto) &&
              rewrite(x, rw->c, rw->rule, proto) &&
              header_ops(x, hd->c, hd->rule, &proto->request_headers, &proto->response_headers,
                         &authority);
    if (authority != NULL && proto->host_rewrite == NULL)
        proto->host_rewrite = authority; /* rewrite.authority wins, as in Istio */
    uint32_t ms;
    const struct rule_src *to = pick(p, f, "timeout");
    if (ist_duration(x, to->c, to->rule, "timeout", 24u * 3600u * 1000u, &ms))
        proto->timeout_ms = ms;
    const struct rule_src *fs = pick(p, f, "fault"), *cs = pick(p, f, "corsPolicy");
    const struct rule_src *rs = pick(p, f, "retries");
    const struct tr_rnode *fault = ist_map(x, fs->c, fs->rule, "fault");
    const struct tr_rnode *cors = ist_map(x, cs->c, cs->rule, "corsPolicy");
    if (ok && fault != NULL)
        ok = fault_action(x, fs->c, fault, proto);
    if (ok && cors != NULL && proto->redirect == NULL && proto->direct_status == 0)
        ok = cors_action(x, cs->c, cors, proto);
    const struct tr_rnode *retries = ist_map(x, rs->c, rs->rule, "retries");
    if (ok && retries != NULL)
        ok = retries_action(x, rs->c, retries, proto);
    if (ok && proto->redirect == NULL && proto->direct_status == 0) {
        /* mirrorPercentage, else the deprecated mirrorPercent (either name) */
        const struct rule_src *ps =
            has_field(p, "mirrorPercentage") ? p
            : has_field(f, "mirrorPercentage")
                ? f
                : pick(p, f,
                       has_field(p, "mirror_percent") || has_field(f, "mirror_percent")
                           ? "mirror_percent"
                           : "mirrorPercent");
        ok = mirrors_action(x, pick(p, f, "mirror"), ps, pick(p, f, "mirrors"), vh, proto);
    }
    if (proto->redirect != NULL) {
        /* A redirect answers here: nothing is forwarded, so nothing to
         * time out, rewrite or edit on the way up. */
        if (proto->timeout_ms && !x->quiet)
            ist_warn(x, to->c, tr_rnode_get(to->rule, "timeout"), "timeout",
                     "a redirect is answered by the proxy: the timeout has no effect");
        /* A root's rewrite next to a delegate's redirect: Istio lets the
         * redirect win. In one rule both is an error. */
        if (rw == p && has_field(p, "rewrite"))
            ist_error(x, p->c, tr_rnode_get(p->rule, "rewrite"), "rewrite",
                      "rewrite and redirect cannot both be set");
        proto->timeout_ms = 0;
        proto->request_headers = (struct tr_header_ops_cfg){0};
        proto->prefix_rewrite = NULL;
        proto->host_rewrite = NULL;
        proto->regex_rewrite = proto->regex_substitution = NULL;
    }
    if (proto->direct_status != 0) {
        proto->prefix_rewrite = NULL;
        proto->host_rewrite = NULL;
        proto->regex_rewrite = proto->regex_substitution = NULL;
    }
    return ok;
}

/* The match blocks of a rule, read (an invalid block is left out: it was
 * reported and refuses the resource). */
static struct ist_match *read_matches(struct ist_ctx *x, struct ist_cursor *c,
                                      const struct tr_rnode *rule, const struct tr_resource *vs,
                                      size_t *n)
{
    *n = 0;
    const struct tr_rnode *matches = ist_list(x, c, rule, "match");
    struct ist_match *v = ist_alloc(x, matches ? matches->n : 1, sizeof(*v));
    size_t j = 0;
    for (const struct tr_rnode *m = matches ? matches->head : NULL; v && m; m = m->next, j++) {
        size_t sm = ist_push_key(c, "match");
        ist_push_index(c, j);
        if (parse_match(x, c, m, vs, &v[*n]))
            v[(*n)++].index = j;
        ist_pop(c, sm);
    }
    return v;
}

/* The routes of one rule: proto once per match block that applies to vh
 * (none: one route that matches everything). base names the route (see
 * route_name); rule_loc is the rule's. False: no memory, or too many
 * routes (reported). */
static bool add_routes(struct ist_ctx *x, struct ist_cursor *c, struct ist_routes *out,
                       const struct tr_route_cfg *proto, const struct ist_match *ms, size_t nm,
                       const struct ist_vhost *vh, const char *base, struct tr_cfg_loc rule_loc,
                       bool *catch_all)
{
    if (nm == 0) {
        struct tr_route_cfg *r = ist_route_new(x, out);
        if (r == NULL)
            return false;
        *r = *proto;
        r->name = base;
        r->loc = rule_loc;
        *catch_all = true;
        return true;
    }
    for (size_t j = 0; j < nm; j++) {
        struct tr_route_cfg cand = *proto;
        bool err;
        bool keep = emit_match(x, &ms[j], vh, &cand, &err);
        if (err)
            return false;
        if (!keep)
            continue;
        if (out->n >= MAX_ROUTES_PER_VHOST) {
            ist_error(x, c, NULL, NULL, "more than %u routes for one host", MAX_ROUTES_PER_VHOST);
            return false;
        }
        struct tr_route_cfg *r = ist_route_new(x, out);
        if (r == NULL)
            return false;
        *r = cand;
        char jb[IST_UTOA_MAX];
        if (ms[j].name != NULL && *ms[j].name != '\0')
            r->name = ist_mjoin(x, (const char *[]){base, ".", ms[j].name}, 3);
        else if (nm > 1)
            r->name = ist_mjoin(x, (const char *[]){base, ".match[", ist_utoa(jb, j), "]"}, 4);
        else
            r->name = base;
        for (char *p = (char *)r->name; p && *p; p++) {
            if ((unsigned char)*p <= 0x20 || *p == 0x7f)
                *p = '_';
        }
        r->loc = ms[j].loc;
        if (is_catch_all(r))
            *catch_all = true;
    }
    return true;
}

/* Does a VirtualService's exportTo (absent: everywhere) take in ns? */
static bool vs_exported_to(const struct tr_resource *vs, const char *ns)
{
    const struct tr_rnode *exp = tr_rnode_get(vs->spec, "exportTo");
    if (exp == NULL || exp->kind != TR_RNODE_SEQ || exp->n == 0)
        return true;
    const char *own = vs->ns ? vs->ns : "default";
    for (const struct tr_rnode *e = exp->head; e; e = e->next) {
        const char *s;
        if (tr_rnode_str(e, &s) && (strcmp(s, "*") == 0 || strcmp(s, ns) == 0 ||
                                    (strcmp(s, ".") == 0 && strcmp(own, ns) == 0)))
            return true;
    }
    return false;
}

bool ist_vs_is_delegate(const struct tr_resource *vs)
{
    const struct tr_rnode *hosts = vs->spec ? tr_rnode_get(vs->spec, "hosts") : NULL;
    return hosts == NULL || tr_rnode_is_null(hosts) ||
           (hosts->kind == TR_RNODE_SEQ && hosts->n == 0);
}

const struct tr_resource *ist_vs_find(const struct ist_ctx *x, const char *ns, const char *name)
{
    const struct tr_resource *r = tr_rset_find(x->rs, IST_GROUP, "VirtualService", ns, name);
    if (r == NULL && strcmp(ns, "default") == 0) /* written without a namespace */
        r = tr_rset_find(x->rs, IST_GROUP, "VirtualService", NULL, name);
    return r;
}

/* Rule http[i] of root VirtualService vs delegates (cursor c at it): the
 * delegate's rules, merged with it, in their order. A delegate Istio would
 * not have (missing, not a delegate, refused, not exported to the root's
 * namespace) drops the rule, as Istio does, with a finding. */
static bool delegate_rule(struct ist_ctx *x, const struct tr_resource *vs, struct ist_cursor *c,
                          const struct tr_rnode *rule, size_t i, const char *name,
                          const struct ist_vhost *vh, struct ist_routes *out, bool *catch_all)
{
    struct rule_src root = {vs, rule, c};
    if (vh == NULL) {
        /* The root rule's own fields, reported once (the check pass). */
        struct tr_route_cfg scratch;
        if (!rule_fields(x, &root, NULL, NULL, &scratch))
            return true;
    }
    size_t nr;
    struct ist_match *rm = read_matches(x, c, rule, vs, &nr);
    if (rm == NULL)
        return false;
    static const struct ist_key dkeys[] = {{"name", NULL}, {"namespace", NULL}};
    const struct tr_rnode *dg = ist_map(x, c, rule, "delegate");
    const char *dname = NULL, *dns = NULL;
    size_t sd = ist_push_key(c, "delegate");
    bool ok = dg != NULL && IST_KEYS(x, c, dg, dkeys);
    if (ok && !ist_str(x, c, dg, "name", &dname)) {
        ist_error(x, c, dg, "name", "the delegate VirtualService's name is required");
        ok = false;
    }
    ist_str(x, c, dg, "namespace", &dns);
    const char *rns = vs->ns ? vs->ns : "default";
    if (dns == NULL || *dns == '\0')
        dns = rns; /* Istio: the root's namespace */
    const struct tr_resource *d = ok ? ist_vs_find(x, dns, dname) : NULL;
    const char *why = !ok                       ? NULL
                      : d == NULL               ? "does not exist"
                      : !ist_vs_is_delegate(d)  ? "has hosts, so it is not a delegate"
                      : ist_refused(x, d)       ? "is refused (its errors are reported)"
                      : !vs_exported_to(d, rns) ? "is not exported to this namespace (its exportTo)"
                                                : NULL;
    if (why != NULL)
        ist_finding(x, c, dg, NULL,
                    "VirtualService %s/%s %s: this rule is dropped, as Istio drops a rule whose "
                    "delegate it does not have",
                    dns, dname, why);
    ist_pop(c, sd);
    if (!ok || why != NULL)
        return true;
    const char *base = route_name(x, vs, name, i, 0, 1, NULL);
    struct ist_cursor dc;
    ist_cursor_init(&dc, d, "spec");
    const struct tr_rnode *dhttp = tr_rnode_get(d->spec, "http");
    bool quiet = x->quiet;
    x->quiet = true; /* the delegate's own check reported its fields */
    size_t j = 0;
    for (const struct tr_rnode *dr = dhttp && dhttp->kind == TR_RNODE_SEQ ? dhttp->head : NULL;
         dr != NULL; dr = dr->next, j++) {
        size_t sj = ist_push_key(&dc, "http");
        ist_push_index(&dc, j);
        struct rule_src del = {d, dr, &dc};
        const char *drname = NULL;
        ist_str(x, &dc, dr, "name", &drname);
        struct tr_route_cfg proto;
        size_t nd = 0;
        struct ist_match *dm = NULL;
        if (rule_fields(x, &del, &root, vh, &proto))
            dm = read_matches(x, &dc, dr, d, &nd);
        if (dm == NULL) {
            ist_pop(&dc, sj);
            continue;
        }
        struct tr_cfg_loc dloc = ist_loc(x, &dc, dr);
        /* Istio's mergeHTTPMatchRequests: without root matches the
         * delegate's; without delegate matches the root's; else each
         * delegate block merged with each root block it narrows, and a
         * delegate block that narrows none drops the whole delegate rule. */
        struct ist_match *ms = dm;
        size_t nm = nd;
        if (nr > 0 && nd == 0) {
            ms = ist_alloc(x, nr, sizeof(*ms));
            for (size_t b = 0; ms && b < nr; b++) {
                ms[b] = rm[b];
                ms[b].loc = dloc;
            }
            nm = nr;
        } else if (nr > 0) {
            ms = ist_alloc(x, nr * nd, sizeof(*ms));
            nm = 0;
            for (size_t a = 0; ms && a < nd; a++) {
                size_t before = nm;
                for (size_t b = 0; b < nr; b++) {
                    if (!match_conflict(x, &rm[b], &dm[a]) &&
                        !merge_match(x, &rm[b], &dm[a], &ms[nm++]))
                        ms = NULL;
                    if (ms == NULL)
                        break;
                }
                if (ms != NULL && nm == before) {
                    x->quiet = quiet;
                    ist_finding(x, c, dg, "delegate",
                                "match[%zu] of rule %zu%s%s%s of VirtualService %s/%s is "
                                "within none of this rule's matches: Istio drops that rule",
                                a, j, drname ? " \"" : "", drname ? drname : "", drname ? "\"" : "",
                                dns, dname);
                    x->quiet = true;
                    nm = 0;
                    break;
                }
            }
            if (ms != NULL && nm == 0) {
                ist_pop(&dc, sj);
                continue;
            }
        }
        if (ms == NULL) {
            x->quiet = quiet;
            return false;
        }
        const char *dbase = route_name(x, d, drname, j, 0, 1, NULL);
        const char *rname = ist_mprintf(x, "%s>%s", base, dbase);
        if (rname == NULL || !add_routes(x, c, out, &proto, ms, nm, vh, rname, dloc, catch_all)) {
            x->quiet = quiet;
            return false;
        }
        ist_pop(&dc, sj);
    }
    x->quiet = quiet;
    return true;
}

bool ist_vs_routes(struct ist_ctx *x, const struct tr_resource *vs, const struct ist_vhost *vh,
                   struct ist_routes *out)
{
    struct ist_cursor c;
    ist_cursor_init(&c, vs, "spec");
    const struct tr_rnode *http = ist_list(x, &c, vs->spec, "http");
    bool is_delegate = ist_vs_is_delegate(vs);
    bool catch_all = false;
    size_t i = 0;
    for (const struct tr_rnode *rule = http ? http->head : NULL; rule; rule = rule->next, i++) {
        size_t saved = ist_push_key(&c, "http");
        ist_push_index(&c, i);
        if (!IST_KEYS(x, &c, rule, route_keys)) {
            ist_pop(&c, saved);
            continue;
        }
        const char *name = NULL;
        ist_str(x, &c, rule, "name", &name);
        if (catch_all && !x->quiet) {
            ist_warn(x, &c, rule, NULL,
                     "unreachable: an earlier rule of this VirtualService "
                     "matches every request");
        }
        if (has_field(&(struct rule_src){.rule = rule}, "delegate")) {
            if (is_delegate) {
                ist_error(x, &c, rule, "delegate",
                          "a delegate VirtualService's rule cannot delegate again (one level "
                          "only; Istio refuses it too)");
            } else if (!delegate_rule(x, vs, &c, rule, i, name, vh, out, &catch_all)) {
                return false;
            }
            ist_pop(&c, saved);
            continue;
        }
        struct rule_src src = {vs, rule, &c};
        struct tr_route_cfg proto;
        bool ok = rule_fields(x, &src, NULL, vh, &proto);
        size_t nm = 0;
        struct ist_match *ms = ok ? read_matches(x, &c, rule, vs, &nm) : NULL;
        const struct tr_rnode *matches = tr_rnode_get(rule, "match");
        if (ms == NULL) {
            ist_pop(&c, saved);
            continue;
        }
        size_t written = matches && matches->kind == TR_RNODE_SEQ ? matches->n : 0;
        bool ok2 = true;
        if (written == 0)
            ok2 = add_routes(x, &c, out, &proto, ms, 0, vh, route_name(x, vs, name, i, 0, 1, NULL),
                             ist_loc(x, &c, rule), &catch_all);
        for (size_t k = 0; ok2 && k < nm; k++) {
            /* Names count the blocks as written, invalid ones too. */
            struct ist_match one = ms[k];
            const char *rn = route_name(x, vs, name, i, one.index, written, one.name);
            one.name = NULL; /* in rn already */
            ok2 =
                rn != NULL && add_routes(x, &c, out, &proto, &one, 1, vh, rn, one.loc, &catch_all);
        }
        if (!ok2)
            return false;
        ist_pop(&c, saved);
    }
    if (vh == NULL) {
        struct tr_weighted_cluster_cfg *unused;
        size_t n_unused;
        ist_vs_tcp_clusters(x, vs, NULL, 0, &unused, &n_unused); /* check the tcp rules */
        struct ist_tls_rule *tls_unused = NULL;
        size_t n_tls = 0, cap_tls = 0;
        ist_vs_tls_rules(x, vs, NULL, &tls_unused, &n_tls, &cap_tls); /* and the tls rules */
    }
    return catch_all;
}

/* Every finding in a VirtualService, once. */
void ist_vs_check(struct ist_ctx *x, const struct tr_resource *vs)
{
    static const struct ist_key keys[] = {
        {"hosts", NULL}, {"gateways", NULL}, {"http", NULL},     {"tls", NULL},
        {"tcp", NULL},   {"exportTo", NULL}, {"priority", NULL},
    };
    struct ist_cursor c;
    ist_cursor_init(&c, vs, "spec");
    if (vs->spec == NULL) {
        ist_error(x, &c, NULL, NULL, "spec is required");
        return;
    }
    if (!IST_KEYS(x, &c, vs->spec, keys))
        return;
    const struct tr_rnode *hosts = ist_list(x, &c, vs->spec, "hosts");
    const struct tr_rnode *http = tr_rnode_get(vs->spec, "http");
    if (ist_vs_is_delegate(vs) &&
        (http == NULL || tr_rnode_is_null(http) || (http->kind == TR_RNODE_SEQ && http->n == 0))) {
        ist_error(x, &c, vs->spec, "hosts", "at least one host is required");
    } else if (ist_vs_is_delegate(vs)) {
        /* No hosts, http rules: a delegate, whose rules only roots use.
         * Istio's validation refuses in one what a delegate cannot carry. */
        static const char *const no[] = {"gateways", "tcp", "tls"};
        for (size_t k = 0; k < sizeof(no) / sizeof(no[0]); k++) {
            const struct tr_rnode *v = tr_rnode_get(vs->spec, no[k]);
            if (v != NULL && !tr_rnode_is_null(v) && (v->kind != TR_RNODE_SEQ || v->n > 0))
                ist_error(x, &c, v, no[k],
                          "a delegate VirtualService (no hosts) cannot have %s: only roots "
                          "bind to hosts and gateways, and only http rules are delegated",
                          no[k]);
        }
    }
    size_t i = 0;
    for (const struct tr_rnode *h = hosts ? hosts->head : NULL; h; h = h->next, i++) {
        const char *s;
        size_t saved = ist_push_key(&c, "hosts");
        ist_push_index(&c, i);
        if (!tr_rnode_str(h, &s) || *s == '\0')
            ist_error(x, &c, h, NULL, "expected a host name");
        ist_pop(&c, saved);
    }
    ist_list(x, &c, vs->spec, "gateways");
    ist_list(x, &c, vs->spec, "exportTo");
    struct ist_routes scratch = {0};
    bool checking = x->checking;
    const char *wl_ns = x->wl_ns;
    x->checking = true;
    if (x->analyze)
        x->wl_ns = vs->ns ? vs->ns : "default"; /* rules as seen from the resource's namespace */
    ist_vs_routes(x, vs, NULL, &scratch);
    x->checking = checking;
    x->wl_ns = wl_ns;
}

/* The weighted destinations of a TCP or TLS rule's `route` (the cursor is
 * on the rule).  False, with an error, when `route` is missing or too long.
 * A destination that resolves nowhere sets `nowhere`: the caller fails the
 * rule closed, as for HTTP routes (the model cannot split to "nowhere"). */
struct l4_split {
    struct tr_weighted_cluster_cfg *v;
    size_t n;
    uint64_t total;
    bool nowhere;
};

static bool l4_split(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *rule,
                     const struct tr_resource *vs, const struct ist_vhost *vh, struct l4_split *sp)
{
    static const struct ist_key dkeys[] = {{"destination", NULL}, {"weight", NULL}};
    *sp = (struct l4_split){0};
    const struct tr_rnode *route = ist_list(x, c, rule, "route");
    if (route == NULL || route->n == 0 || route->n > 256) {
        ist_error(x, c, rule, "route", "1 to 256 destinations are required");
        return false;
    }
    sp->v = ist_malloc(x, route->n, sizeof(*sp->v));
    size_t k = 0;
    for (const struct tr_rnode *e = route->head; sp->v && e; e = e->next, k++) {
        size_t sr = ist_push_key(c, "route");
        ist_push_index(c, k);
        uint32_t w = route->n == 1 ? 100 : 0;
        const char *cl = NULL;
        if (IST_KEYS(x, c, e, dkeys) &&
            (tr_rnode_get(e, "weight") == NULL || ist_u32(x, c, e, "weight", 0, 1000000, &w)))
            destination(x, c, tr_rnode_get(e, "destination"), vs, vh, &cl);
        struct tr_cfg_loc loc = ist_loc(x, c, e);
        ist_pop(c, sr);
        sp->total += w;
        if (w == 0)
            continue;
        if (cl == NULL) {
            sp->nowhere = true;
            continue;
        }
        sp->v[sp->n++] =
            (struct tr_weighted_cluster_cfg){.cluster_name = cl, .weight = w, .loc = loc};
    }
    if (sp->total == 0)
        ist_error(x, c, route, NULL, "the destinations' weights add up to 0");
    return true;
}

/* An Istio destinationSubnets value ("10.1.0.0/16", "10.1.2.3", with host
 * bits or not, as Go's ParseCIDR reads it) as the block the model takes:
 * the network address and length, host bits cleared. NULL: not one. */
static const char *subnet_block(struct ist_ctx *x, const char *s)
{
    char ip[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof(ip))
        return NULL;
    memcpy(ip, s, n);
    ip[n] = 0;
    struct tr_ip a;
    if (!tr_ip_parse(ip, &a) || strchr(ip, '%') != NULL)
        return NULL;
    unsigned max = a.family == 4 ? 32 : 128, bits = max;
    if (slash != NULL) {
        char *end;
        unsigned long v = strtoul(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end != 0 || v > max)
            return NULL;
        bits = (unsigned)v;
    }
    for (unsigned i = bits; i < max; i++)
        a.a[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(a.family == 4 ? AF_INET : AF_INET6, a.a, text, sizeof(text)) == NULL)
        return NULL;
    return ist_mprintf(x, "%s/%u", text, bits);
}

/* A match block's destinationSubnets, checked: each must be an address or
 * CIDR block (istiod's validation refuses the resource otherwise); without
 * capture there is no original destination to match them against. */
static void check_subnets(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *m)
{
    const struct tr_rnode *subs = ist_list(x, c, m, "destinationSubnets");
    if (subs == NULL)
        return;
    size_t i = 0;
    for (const struct tr_rnode *s = subs->head; s; s = s->next, i++) {
        const char *v;
        if (!tr_rnode_str(s, &v) || subnet_block(x, v) == NULL) {
            size_t saved = ist_push_key(c, "destinationSubnets");
            ist_push_index(c, i);
            ist_error(x, c, s, NULL, "expected an IP address or CIDR block");
            ist_pop(c, saved);
        }
    }
    if (!x->o->capture)
        ist_warn(x, c, subs, "destinationSubnets",
                 "destination subnets need the original destination (traffic capture, "
                 "--capture): without it the block never matches");
}

/* A tls match block's destinationSubnets as a rule of its own (with room
 * for its sniHosts, which the caller adds); NULL when it names none. */
static struct ist_tls_rule *subnet_rule(struct ist_ctx *x, const struct tr_rnode *m,
                                        struct ist_tls_rule *r)
{
    const struct tr_rnode *subs = tr_rnode_get(m, "destinationSubnets");
    const struct tr_rnode *sni = tr_rnode_get(m, "sniHosts");
    *r = (struct ist_tls_rule){0};
    if (subs == NULL || subs->kind != TR_RNODE_SEQ || sni == NULL || sni->kind != TR_RNODE_SEQ)
        return NULL;
    r->subnets = ist_malloc(x, subs->n + 1, sizeof(*r->subnets));
    r->names = ist_malloc(x, sni->n + 1, sizeof(*r->names));
    if (r->subnets == NULL || r->names == NULL)
        return NULL;
    for (const struct tr_rnode *s = subs->head; s; s = s->next) {
        const char *v, *block;
        if (tr_rnode_str(s, &v) && (block = subnet_block(x, v)) != NULL)
            r->subnets[r->n_subnets++] = block;
    }
    return r;
}

size_t ist_vs_tcp_subnet_routes(struct ist_ctx *x, const struct tr_resource *vs,
                                const struct ist_service *svc, uint32_t port,
                                struct ist_subnet_route **out)
{
    *out = NULL;
    struct ist_cursor c;
    ist_cursor_init(&c, vs, "spec");
    const struct tr_rnode *tcp = ist_list(x, &c, vs->spec, "tcp");
    struct ist_vhost vh = {.svc = svc, .port = port};
    size_t n = 0, cap = 0, i = 0;
    struct tr_strmap seen;
    tr_strmap_init(&seen, x->tmp);
    for (const struct tr_rnode *rule = tcp ? tcp->head : NULL; rule; rule = rule->next, i++) {
        size_t saved = ist_push_key(&c, "tcp");
        ist_push_index(&c, i);
        const struct tr_rnode *matches = ist_list(x, &c, rule, "match");
        bool catch_all = matches == NULL || matches->n == 0;
        size_t room = 0;
        for (const struct tr_rnode *m = matches ? matches->head : NULL; m; m = m->next) {
            const struct tr_rnode *sn = tr_rnode_get(m, "destinationSubnets");
            room += sn != NULL && sn->kind == TR_RNODE_SEQ ? sn->n : 0;
        }
        const char **subs = room > 0 ? ist_malloc(x, room, sizeof(*subs)) : NULL;
        size_t n_subs = 0;
        for (const struct tr_rnode *m = matches ? matches->head : NULL; m; m = m->next) {
            uint32_t p;
            const char *sns;
            const struct tr_rnode *sl = tr_rnode_get(m, "sourceLabels");
            const struct tr_rnode *gw = tr_rnode_get(m, "gateways");
            bool applies =
                !(ist_u32(x, &c, m, "port", 1, 65535, &p) && p != port) &&
                !(sl != NULL && !ist_labels_match(sl, x->wl_labels)) &&
                !(ist_str(x, &c, m, "sourceNamespace", &sns) && strcmp(sns, x->wl_ns) != 0) &&
                !(gw != NULL && gw->kind == TR_RNODE_SEQ && gw->n > 0 && !has_str(gw, "mesh"));
            const struct tr_rnode *sn = tr_rnode_get(m, "destinationSubnets");
            if (!applies)
                continue;
            if (sn == NULL || sn->kind != TR_RNODE_SEQ || sn->n == 0) {
                catch_all = true; /* this block takes every destination */
                continue;
            }
            for (const struct tr_rnode *s = sn->head; s; s = s->next) {
                const char *v, *block;
                if (!tr_rnode_str(s, &v) || (block = subnet_block(x, v)) == NULL)
                    continue; /* reported by check_subnets */
                if (tr_strmap_get(&seen, block) != NULL)
                    continue; /* an earlier rule claims it: the first wins */
                bool oom = false;
                tr_strmap_put(&seen, block, (void *)block, &oom);
                if (subs == NULL || oom)
                    break;
                subs[n_subs++] = block;
            }
        }
        if (n_subs > 0) {
            struct l4_split sp;
            x->quiet = true;
            bool split_ok = l4_split(x, &c, rule, vs, &vh, &sp);
            x->quiet = false;
            if (split_ok) {
                if (n == cap) {
                    size_t nc = cap ? cap * 2 : 4;
                    struct ist_subnet_route *g = ist_malloc(x, nc, sizeof(*g));
                    if (g == NULL) {
                        ist_pop(&c, saved);
                        break;
                    }
                    if (n > 0)
                        memcpy(g, *out, n * sizeof(*g));
                    *out = g;
                    cap = nc;
                }
                (*out)[n++] = (struct ist_subnet_route){.subnets = subs,
                                                        .n_subnets = n_subs,
                                                        .split = sp.nowhere ? NULL : sp.v,
                                                        .n_split = sp.nowhere ? 0 : sp.n,
                                                        .rule = i,
                                                        .loc = ist_loc(x, &c, rule)};
            }
        }
        ist_pop(&c, saved);
        if (catch_all)
            break; /* the rules after one that takes everything are never reached */
    }
    return n;
}

/* The weighted clusters of the first tcp rule for (svc, port) into *out:
 * true when a rule applies (*n 0: it routes nowhere), false when none does
 * (the service's own cluster). svc NULL: check only. */
bool ist_vs_tcp_clusters(struct ist_ctx *x, const struct tr_resource *vs,
                         const struct ist_service *svc, uint32_t port,
                         struct tr_weighted_cluster_cfg **out, size_t *n)
{
    static const struct ist_key rule_keys[] = {{"match", NULL}, {"route", NULL}};
    static const struct ist_key tcp_match_keys[] = {
        {"destinationSubnets", NULL}, {"port", NULL},
        {"sourceLabels", NULL},       {"gateways", NULL},
        {"sourceNamespace", NULL},    {"sourceSubnet", "ignored by istiod too"},
    };
    *out = NULL;
    *n = 0;
    struct ist_cursor c;
    ist_cursor_init(&c, vs, "spec");
    const struct tr_rnode *tcp = ist_list(x, &c, vs->spec, "tcp");
    struct ist_vhost vh = {.svc = svc, .port = port};
    size_t i = 0;
    for (const struct tr_rnode *rule = tcp ? tcp->head : NULL; rule; rule = rule->next, i++) {
        size_t saved = ist_push_key(&c, "tcp");
        ist_push_index(&c, i);
        if (!IST_KEYS(x, &c, rule, rule_keys)) {
            ist_pop(&c, saved);
            continue;
        }
        const struct tr_rnode *matches = ist_list(x, &c, rule, "match");
        bool applies = matches == NULL || matches->n == 0;
        size_t j = 0;
        for (const struct tr_rnode *m = matches ? matches->head : NULL; m; m = m->next, j++) {
            size_t sm = ist_push_key(&c, "match");
            ist_push_index(&c, j);
            bool keep =
                IST_KEYS(x, &c, m, tcp_match_keys) && tr_rnode_get(m, "destinationSubnets") == NULL;
            if (svc == NULL)
                check_subnets(x, &c, m);
            uint32_t p;
            if (ist_u32(x, &c, m, "port", 1, 65535, &p) && svc != NULL && p != port)
                keep = false;
            const struct tr_rnode *sl = ist_map(x, &c, m, "sourceLabels");
            if (sl != NULL && svc != NULL && !ist_labels_match(sl, x->wl_labels))
                keep = false;
            const char *sns;
            if (ist_str(x, &c, m, "sourceNamespace", &sns) && svc != NULL &&
                strcmp(sns, x->wl_ns) != 0)
                keep = false;
            const struct tr_rnode *gw = ist_list(x, &c, m, "gateways");
            if (gw != NULL && gw->n > 0 && !has_str(gw, "mesh"))
                keep = false;
            applies = applies || keep;
            ist_pop(&c, sm);
        }
        struct l4_split sp;
        if (!l4_split(x, &c, rule, vs, svc ? &vh : NULL, &sp)) {
            ist_pop(&c, saved);
            continue;
        }
        ist_pop(&c, saved);
        if (svc != NULL && applies) {
            /* A share that goes nowhere fails the whole rule closed, as for
             * HTTP routes (the model cannot split to "nowhere"). */
            *out = sp.nowhere ? NULL : sp.v;
            *n = sp.nowhere ? 0 : sp.n;
            return true;
        }
    }
    return false;
}

bool ist_vs_gateway_tcp(struct ist_ctx *x, const struct tr_resource *vs, const char *gateway,
                        uint32_t port, struct tr_weighted_cluster_cfg **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct ist_cursor c;
    ist_cursor_init(&c, vs, "spec");
    const struct tr_rnode *tcp = tr_rnode_get(vs->spec, "tcp");
    struct ist_vhost vh = {.svc = NULL, .port = port, .gateway = gateway};
    size_t i = 0;
    for (const struct tr_rnode *rule = tcp && tcp->kind == TR_RNODE_SEQ ? tcp->head : NULL; rule;
         rule = rule->next, i++) {
        const struct tr_rnode *matches = tr_rnode_get(rule, "match");
        bool applies = matches == NULL || matches->kind != TR_RNODE_SEQ || matches->n == 0;
        for (const struct tr_rnode *m = applies ? NULL : matches->head; m && !applies;
             m = m->next) {
            int64_t p;
            const char *sns;
            const struct tr_rnode *sl = tr_rnode_get(m, "sourceLabels");
            const struct tr_rnode *gw = tr_rnode_get(m, "gateways");
            applies = tr_rnode_get(m, "destinationSubnets") == NULL && /* no capture here */
                      !(tr_rnode_int(tr_rnode_get(m, "port"), &p) && p != port) &&
                      !(sl != NULL && !ist_labels_match(sl, x->wl_labels)) &&
                      !(tr_rnode_str(tr_rnode_get(m, "sourceNamespace"), &sns) &&
                        strcmp(sns, x->wl_ns) != 0) &&
                      !(gw != NULL && gw->kind == TR_RNODE_SEQ && gw->n > 0 &&
                        !ist_gateway_listed(vs, gw, gateway));
        }
        if (!applies)
            continue;
        size_t saved = ist_push_key(&c, "tcp");
        ist_push_index(&c, i);
        struct l4_split sp;
        bool quiet = x->quiet;
        x->quiet = true; /* checked with the VirtualService */
        bool ok = l4_split(x, &c, rule, vs, &vh, &sp);
        x->quiet = quiet;
        ist_pop(&c, saved);
        if (!ok)
            return false;
        *out = sp.nowhere ? NULL : sp.v;
        *n = sp.nowhere ? 0 : sp.n;
        return true;
    }
    return false;
}

/* Is the SNI name within the host (Istio's SubsetOf, as written: equal, or
 * under a wildcard host; "*" holds everything)? */
static bool sni_within(const char *sni, const char *host)
{
    if (strcasecmp(sni, host) == 0 || strcmp(host, "*") == 0)
        return true;
    if (host[0] != '*')
        return false;
    const char *suffix = host + 1; /* ".example.com" */
    const char *tail = sni[0] == '*' ? sni + 1 : sni;
    size_t hl = strlen(suffix), tl = strlen(tail);
    return tl > hl && strcasecmp(tail + tl - hl, suffix) == 0;
}

static bool tls_rule_push(struct ist_ctx *x, struct ist_tls_rule **out, size_t *n, size_t *cap,
                          const struct ist_tls_rule *r)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        struct ist_tls_rule *v = ist_alloc(x, nc, sizeof(*v));
        if (v == NULL)
            return false;
        if (*n)
            memcpy(v, *out, *n * sizeof(*v));
        *out = v;
        *cap = nc;
    }
    (*out)[(*n)++] = *r;
    return true;
}

bool ist_vs_tls_rules(struct ist_ctx *x, const struct tr_resource *vs, const struct ist_vhost *vh,
                      struct ist_tls_rule **out, size_t *n, size_t *cap)
{
    static const struct ist_key rule_keys[] = {{"match", NULL}, {"route", NULL}};
    static const struct ist_key tls_match_keys[] = {
        {"sniHosts", NULL},
        {"destinationSubnets", NULL},
        {"port", NULL},
        {"sourceLabels", NULL},
        {"gateways", NULL},
        {"sourceNamespace", NULL},
        {"sourceSubnet", "ignored by istiod too"},
    };
    struct ist_cursor c;
    ist_cursor_init(&c, vs, "spec");
    const struct tr_rnode *tls = ist_list(x, &c, vs->spec, "tls");
    const struct tr_rnode *hosts = tr_rnode_get(vs->spec, "hosts");
    /* The destinations' default port: the sidecar's service port. */
    struct ist_vhost dvh = {.svc = vh ? vh->svc : NULL, .port = vh ? vh->port : 0};
    size_t i = 0;
    for (const struct tr_rnode *rule = tls ? tls->head : NULL; rule; rule = rule->next, i++) {
        size_t saved = ist_push_key(&c, "tls");
        ist_push_index(&c, i);
        if (!IST_KEYS(x, &c, rule, rule_keys)) {
            ist_pop(&c, saved);
            continue;
        }
        const struct tr_rnode *matches = ist_list(x, &c, rule, "match");
        if (matches == NULL || matches->n == 0)
            ist_error(x, &c, rule, "match",
                      "a tls rule needs at least one match block with sniHosts");
        const char **names = ist_malloc(x, 1, sizeof(*names));
        size_t nn = 0, cap_names = 1;
        size_t j = 0;
        /* Blocks with destinationSubnets: rules of their own, for the
         * listeners that claim those blocks (a sidecar's, with capture). */
        struct ist_tls_rule *sub = ist_malloc(x, matches ? matches->n + 1 : 1, sizeof(*sub));
        size_t n_sub = 0;
        for (const struct tr_rnode *m = matches ? matches->head : NULL; m; m = m->next, j++) {
            size_t sm = ist_push_key(&c, "match");
            ist_push_index(&c, j);
            const struct tr_rnode *subnets = tr_rnode_get(m, "destinationSubnets");
            bool keep = IST_KEYS(x, &c, m, tls_match_keys);
            if (vh == NULL)
                check_subnets(x, &c, m);
            uint32_t p;
            if (ist_u32(x, &c, m, "port", 1, 65535, &p) && vh != NULL && p != vh->port)
                keep = false;
            /* A gateway's match: its own labels and namespace, as at Istio. */
            const struct tr_rnode *sl = ist_map(x, &c, m, "sourceLabels");
            if (sl != NULL && vh != NULL && !ist_labels_match(sl, x->wl_labels))
                keep = false;
            const char *sns;
            if (ist_str(x, &c, m, "sourceNamespace", &sns) && vh != NULL &&
                strcmp(sns, x->wl_ns) != 0)
                keep = false;
            const struct tr_rnode *gw = ist_list(x, &c, m, "gateways");
            if (gw != NULL && gw->n > 0 && vh != NULL && !ist_gateway_listed(vs, gw, vh->gateway))
                keep = false;
            struct ist_tls_rule *sr = NULL;
            if (subnets != NULL) {
                /* Such a block never takes other destinations. */
                if (keep && vh != NULL && vh->gateway == NULL && x->o->capture && sub != NULL)
                    sr = subnet_rule(x, m, &sub[n_sub]);
                keep = false;
            }
            const struct tr_rnode *sni = ist_list(x, &c, m, "sniHosts");
            if (sni == NULL || sni->n == 0)
                ist_error(x, &c, m, "sniHosts", "at least one SNI host is required");
            size_t k = 0;
            for (const struct tr_rnode *h = sni ? sni->head : NULL; h; h = h->next, k++) {
                size_t sk = ist_push_key(&c, "sniHosts");
                ist_push_index(&c, k);
                const char *v = NULL;
                bool within = false;
                if (!tr_rnode_str(h, &v) || *v == '\0') {
                    ist_error(x, &c, h, NULL, "expected a host name");
                    v = NULL;
                } else if (strcmp(v, "*") != 0 && (strpbrk(v, " \t/:") != NULL ||
                                                   strchr(v + (v[0] == '*' ? 1 : 0), '*') != NULL ||
                                                   (v[0] == '*' && v[1] != '.'))) {
                    ist_error(x, &c, h, NULL, "%s is not a host name, *.domain or *", v);
                    v = NULL;
                } else {
                    for (const struct tr_rnode *vh_h = hosts ? hosts->head : NULL; vh_h && !within;
                         vh_h = vh_h->next) {
                        const char *hv;
                        within = tr_rnode_str(vh_h, &hv) && sni_within(v, hv);
                    }
                    if (!within) {
                        ist_error(x, &c, h, NULL,
                                  "SNI host %s is not within the VirtualService's hosts (Istio "
                                  "refuses it)",
                                  v);
                        v = NULL;
                    }
                }
                ist_pop(&c, sk);
                if (v != NULL && sr != NULL && sr->names != NULL)
                    sr->names[sr->n_names++] = ist_mstrdup(x, v);
                if (v == NULL || !keep || vh == NULL || names == NULL)
                    continue;
                bool dup = false;
                for (size_t d = 0; d < nn && !dup; d++)
                    dup = strcasecmp(names[d], v) == 0;
                if (dup)
                    continue;
                if (nn == cap_names) {
                    const char **nv = ist_malloc(x, cap_names * 2, sizeof(*nv));
                    if (nv == NULL)
                        return false;
                    memcpy(nv, names, nn * sizeof(*nv));
                    names = nv;
                    cap_names *= 2;
                }
                names[nn++] = ist_mstrdup(x, v);
            }
            if (sr != NULL && sr->n_names > 0 && sr->n_subnets > 0)
                n_sub++;
            ist_pop(&c, sm);
        }
        struct l4_split sp;
        if (!l4_split(x, &c, rule, vs, vh ? &dvh : NULL, &sp)) {
            ist_pop(&c, saved);
            continue;
        }
        struct tr_cfg_loc rloc = ist_loc(x, &c, rule);
        ist_pop(&c, saved);
        if (vh == NULL || sp.total == 0)
            continue;
        struct ist_tls_rule r = {.names = names,
                                 .n_names = nn,
                                 .split = sp.nowhere ? NULL : sp.v,
                                 .n_split = sp.nowhere ? 0 : sp.n,
                                 .loc = rloc};
        if (nn > 0 && !tls_rule_push(x, out, n, cap, &r))
            return false;
        for (size_t k = 0; k < n_sub; k++) {
            sub[k].split = r.split;
            sub[k].n_split = r.n_split;
            sub[k].loc = rloc;
            if (!tls_rule_push(x, out, n, cap, &sub[k]))
                return false;
        }
    }
    return true;
}

bool ist_sni_rules_add(struct ist_ctx *x, struct ist_sni_rules *rs, const char *const *names,
                       size_t n_names, const struct tr_weighted_cluster_cfg *split, size_t n_split,
                       const char *nowhere, struct tr_cfg_loc loc)
{
    if (!rs->ready) {
        tr_strmap_init(&rs->seen, x->tmp);
        rs->ready = true;
    }
    if (rs->has_default)
        return true; /* "*" took every name before: nothing after it is reached */
    for (size_t i = 0; i < n_names; i++) {
        if (strcmp(names[i], "*") != 0)
            continue;
        /* Every name (and no SNI): the listener's default from here on. */
        rs->has_default = true;
        rs->default_split = split;
        rs->n_default = n_split;
        rs->default_nowhere = nowhere;
        return true;
    }
    const char **keep = ist_malloc(x, n_names ? n_names : 1, sizeof(*keep));
    if (keep == NULL)
        return false;
    size_t nk = 0;
    for (size_t i = 0; i < n_names; i++) {
        char *low = ist_mstrdup(x, names[i]);
        if (low == NULL)
            return false;
        for (char *p = low; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        bool oom = false;
        if (tr_strmap_put(&rs->seen, low, low, &oom) != NULL)
            continue; /* an earlier rule routes it */
        if (oom)
            return ist_oom(x);
        keep[nk++] = low;
    }
    if (nk == 0 || (n_split == 0 && nowhere == NULL))
        return true;
    if (rs->n == IST_MAX_SNI_RULES) {
        rs->overflow = true; /* the model's limit: the caller reports it */
        return true;
    }
    if (rs->n == rs->cap) {
        size_t nc = rs->cap ? rs->cap * 2 : 8;
        struct tr_sni_route_cfg *v = ist_alloc(x, nc, sizeof(*v));
        if (v == NULL)
            return false;
        if (rs->n)
            memcpy(v, rs->v, rs->n * sizeof(*v));
        rs->v = v;
        rs->cap = nc;
    }
    struct tr_sni_route_cfg *r = &rs->v[rs->n++];
    memset(r, 0, sizeof(*r));
    r->server_names = keep;
    r->n_server_names = nk;
    r->tcp_cluster = -1;
    r->loc = loc;
    if (n_split == 0) {
        r->tcp_cluster_name = nowhere;
    } else if (n_split == 1) {
        r->tcp_cluster_name = split[0].cluster_name;
    } else {
        r->tcp_clusters = ist_malloc(x, n_split, sizeof(*r->tcp_clusters));
        if (r->tcp_clusters == NULL)
            return false;
        memcpy(r->tcp_clusters, split, n_split * sizeof(*split));
        r->n_tcp_clusters = n_split;
    }
    return true;
}

bool ist_sni_rules_copy(struct ist_ctx *x, const struct ist_sni_rules *rs,
                        struct tr_listener_cfg *l)
{
    if (rs->has_default) {
        l->tcp_cluster_name = NULL;
        l->tcp_clusters = NULL;
        l->n_tcp_clusters = 0;
        if (rs->n_default == 0) {
            l->tcp_cluster_name = rs->default_nowhere; /* NULL: closed */
        } else if (rs->n_default == 1) {
            l->tcp_cluster_name = rs->default_split[0].cluster_name;
        } else {
            l->tcp_clusters = ist_malloc(x, rs->n_default, sizeof(*l->tcp_clusters));
            if (l->tcp_clusters == NULL)
                return false;
            memcpy(l->tcp_clusters, rs->default_split, rs->n_default * sizeof(*rs->default_split));
            l->n_tcp_clusters = rs->n_default;
        }
    }
    if (rs->n == 0)
        return true;
    l->sni_routes = ist_malloc(x, rs->n, sizeof(*l->sni_routes));
    if (l->sni_routes == NULL)
        return false;
    memcpy(l->sni_routes, rs->v, rs->n * sizeof(*rs->v));
    l->n_sni_routes = rs->n;
    return true;
}
