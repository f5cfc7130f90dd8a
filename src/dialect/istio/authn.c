/* RequestAuthentication (security.istio.io v1, v1beta1) -> the inbound
 * listeners' request_authentication, and a gateway's HTTP listeners'
 * (config/model.h; filter/jwt.h enforces).
 *
 * Which policies apply to the workload: those of the root namespace (every
 * namespace) and of the workload's namespace, each either without a
 * selector or with one matching the workload's labels; their jwtRules are
 * combined, as istiod combines them for a sidecar or a gateway. A policy
 * with targetRef or targetRefs (Gateway API gateways and waypoints) is
 * reported and left out. Keys are inline (jwks) or fetched from jwksUri (the model's
 * jwks_uri, upstream/jwks_fetch.h): a registry host's through its outbound
 * cluster (for https, with TLS originated to the key server unless a
 * DestinationRule already does it), any other host through a cluster the
 * proxy resolves by DNS, as istiod fetches such keys itself (compile.c,
 * ist_jwks_cluster); a jwksUri the proxy cannot fetch is an error that refuses the
 * policy (fail closed: without it no token is ever accepted, so an
 * authorization policy requiring a request principal denies). With both,
 * jwks is used and jwksUri ignored, as Istio does. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dialect/istio/internal.h"
#include "filter/jwt.h"

#define SEC_GROUP "security.istio.io"

static bool header_name_ok(const char *s)
{
    if (*s == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", *p) != NULL)
            return false;
    }
    return true;
}

/* A list of non-empty strings at map[key] (reported otherwise). */
static void check_strings(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                          const char *key, bool header)
{
    const struct tr_rnode *l = ist_list(x, c, map, key);
    size_t i = 0;
    for (const struct tr_rnode *e = l ? l->head : NULL; e; e = e->next, i++) {
        const char *s;
        size_t saved = ist_push_key(c, key);
        ist_push_index(c, i);
        if (!tr_rnode_str(e, &s) || s[0] == '\0')
            ist_error(x, c, e, NULL, "expected a non-empty string");
        else if (header && !header_name_ok(s))
            ist_error(x, c, e, NULL, "\"%s\" is not a valid name", s);
        ist_pop(c, saved);
    }
}

static void check_header_key(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                             const char *key, bool required)
{
    const char *s = NULL;
    if (!ist_str(x, c, map, key, &s)) {
        if (required && tr_rnode_get(map, key) == NULL)
            ist_error(x, c, map, key, "required");
        return;
    }
    if (!header_name_ok(s))
        ist_error(x, c, tr_rnode_get(map, key), key, "\"%s\" is not a valid header name", s);
}

/* Istio's default refresh of fetched keys (PILOT_JWT_PUB_KEY_REFRESH_INTERVAL). */
#define IST_JWKS_REFRESH_MS (20u * 60u * 1000u)
#define IST_JWKS_TIMEOUT_MS 5000u /* Istio's default jwtRules[].timeout */

/* Where jwksUri is fetched from: http[s]://HOST[:PORT]/PATH. HOST is a
 * registry service's host (short names in ns; svc set, pi its port, which
 * must exist and not speak HTTP/2: keys are fetched with HTTP/1.1), or any
 * other DNS name or IPv4 address (svc NULL). false with why set when it
 * cannot be fetched. */
struct jwks_target {
    const struct ist_service *svc;
    size_t pi;
    char host[256]; /* as written (a short name stays short) */
    uint32_t port;  /* 80 for http, 443 for https by default */
    bool https;
};

static bool jwks_uri_target(struct ist_ctx *x, const char *uri, const char *ns,
                            struct jwks_target *t, char *why, size_t size)
{
    *t = (struct jwks_target){0};
    size_t skip;
    if (strncmp(uri, "https://", 8) == 0)
        t->https = true, skip = 8, t->port = 443;
    else if (strncmp(uri, "http://", 7) == 0)
        skip = 7, t->port = 80;
    else {
        snprintf(why, size, "not an http:// or https:// URL");
        return false;
    }
    const char *host = uri + skip;
    size_t hl = strcspn(host, "/");
    if (host[hl] != '/' || hl == 0 || hl >= sizeof(t->host) || memchr(host, '@', hl) != NULL ||
        host[0] == '[') {
        snprintf(why, size, "expected %s://HOST[:PORT]/PATH", t->https ? "https" : "http");
        return false;
    }
    memcpy(t->host, host, hl);
    t->host[hl] = '\0';
    char *colon = strrchr(t->host, ':');
    if (colon != NULL) {
        char *end;
        unsigned long v = strtoul(colon + 1, &end, 10);
        if (colon[1] == '\0' || *end != '\0' || v == 0 || v > 65535) {
            snprintf(why, size, "not a valid port in the URL");
            return false;
        }
        t->port = (uint32_t)v;
        *colon = '\0';
    }
    const char *fq = ist_fqdn(x, t->host, ns);
    const struct ist_service *s = fq != NULL ? ist_service_by_host(x, fq) : NULL;
    if (s == NULL) {
        /* Outside the registry: the proxy resolves and fetches it itself. */
        for (const char *p = t->host; *p != '\0'; p++) {
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.') {
                snprintf(why, size, "\"%.200s\" is not a host name or IPv4 address", t->host);
                return false;
            }
        }
        if (t->https && strspn(t->host, "0123456789.") == strlen(t->host)) {
            snprintf(why, size,
                     "https to an IP address: give the key server's name, which "
                     "its certificate is verified against");
            return false;
        }
        return true;
    }
    for (size_t i = 0; i < s->n_ports; i++) {
        if (s->ports[i].number != t->port)
            continue;
        if (s->ports[i].proto == IST_P_HTTP2 || s->ports[i].proto == IST_P_GRPC) {
            snprintf(why, size, "port %u of %.200s speaks HTTP/2; keys are fetched with HTTP/1.1",
                     (unsigned)t->port, s->host);
            return false;
        }
        t->svc = s;
        t->pi = i;
        return true;
    }
    snprintf(why, size, "service %.200s has no port %u", s->host, (unsigned)t->port);
    return false;
}

static void check_rule(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *rule)
{
    static const struct ist_key keys[] = {
        {"issuer", NULL},
        {"audiences", NULL},
        {"jwksUri", NULL},
        {"jwks", NULL},
        {"fromHeaders", NULL},
        {"fromParams", NULL},
        {"fromCookies", NULL},
        {"outputPayloadToHeader", NULL},
        {"outputClaimToHeaders", NULL},
        {"forwardOriginalToken", NULL},
        {"timeout", NULL},
        {"spaceDelimitedClaims", "custom space-delimited claims are not supported yet (scope and "
                                 "permission are split, as by default)"},
    };
    static const struct ist_key header_keys[] = {{"name", NULL}, {"prefix", NULL}};
    static const struct ist_key claim_keys[] = {{"header", NULL}, {"claim", NULL}};
    if (!IST_KEYS(x, c, rule, keys))
        return;
    const char *s = NULL;
    if (!ist_str(x, c, rule, "issuer", &s) || s[0] == '\0') {
        if (tr_rnode_get(rule, "issuer") == NULL || s != NULL)
            ist_error(x, c, rule, "issuer", "required");
    }
    check_strings(x, c, rule, "audiences", false);
    const char *jwks = NULL, *uri = NULL;
    ist_str(x, c, rule, "jwksUri", &uri);
    if (ist_str(x, c, rule, "jwks", &jwks)) {
        char *err = NULL;
        struct tr_jwks *k = tr_jwks_parse(jwks, strlen(jwks), &err);
        if (k == NULL)
            ist_error(x, c, tr_rnode_get(rule, "jwks"), "jwks", "not a usable JSON Web Key Set: %s",
                      err != NULL ? err : "?");
        tr_jwks_free(k);
        free(err);
        if (uri != NULL)
            ist_warn(x, c, tr_rnode_get(rule, "jwksUri"), "jwksUri",
                     "ignored: the inline jwks is used (as Istio does when both are set)");
        if (tr_rnode_get(rule, "timeout") != NULL)
            ist_warn(x, c, tr_rnode_get(rule, "timeout"), "timeout",
                     "ignored: the keys are inline (jwks), nothing is fetched");
    } else if (uri != NULL) {
        struct jwks_target t;
        char why[512];
        if (!jwks_uri_target(x, uri, c->res->ns ? c->res->ns : "default", &t, why, sizeof(why)))
            ist_error(x, c, tr_rnode_get(rule, "jwksUri"), "jwksUri",
                      "%s (without this policy no token is accepted)", why);
        uint32_t ms;
        if (ist_duration(x, c, rule, "timeout", 60000, &ms) && ms == 0)
            ist_error(x, c, tr_rnode_get(rule, "timeout"), "timeout", "must be more than 0");
    } else if (tr_rnode_get(rule, "jwks") == NULL) {
        ist_error(x, c, rule, "jwks",
                  "keys from the issuer's OpenID discovery are not supported: give the key set "
                  "inline in jwks");
    }
    const struct tr_rnode *fh = ist_list(x, c, rule, "fromHeaders");
    size_t i = 0;
    for (const struct tr_rnode *e = fh ? fh->head : NULL; e; e = e->next, i++) {
        size_t saved = ist_push_key(c, "fromHeaders");
        ist_push_index(c, i);
        if (IST_KEYS(x, c, e, header_keys)) {
            check_header_key(x, c, e, "name", true);
            ist_str(x, c, e, "prefix", &s);
        }
        ist_pop(c, saved);
    }
    check_strings(x, c, rule, "fromParams", true);
    check_strings(x, c, rule, "fromCookies", true);
    check_header_key(x, c, rule, "outputPayloadToHeader", false);
    bool b;
    ist_bool(x, c, rule, "forwardOriginalToken", &b);
    const struct tr_rnode *oc = ist_list(x, c, rule, "outputClaimToHeaders");
    i = 0;
    for (const struct tr_rnode *e = oc ? oc->head : NULL; e; e = e->next, i++) {
        size_t saved = ist_push_key(c, "outputClaimToHeaders");
        ist_push_index(c, i);
        if (IST_KEYS(x, c, e, claim_keys)) {
            check_header_key(x, c, e, "header", true);
            if (!ist_str(x, c, e, "claim", &s) && tr_rnode_get(e, "claim") == NULL)
                ist_error(x, c, e, "claim", "required");
        }
        ist_pop(c, saved);
    }
}

static void ra_check(struct ist_ctx *x, const struct tr_resource *r)
{
    static const struct ist_key keys[] = {
        {"selector", NULL},
        {"targetRef", NULL},
        {"targetRefs", NULL},
        {"jwtRules", NULL},
    };
    struct ist_cursor c;
    ist_cursor_init(&c, r, "spec");
    if (!IST_KEYS(x, &c, r->spec, keys))
        return;
    const struct tr_rnode *sel = ist_map(x, &c, r->spec, "selector");
    if (sel != NULL) {
        static const struct ist_key sel_keys[] = {{"matchLabels", NULL}};
        size_t saved = ist_push_key(&c, "selector");
        if (IST_KEYS(x, &c, sel, sel_keys))
            ist_map(x, &c, sel, "matchLabels");
        ist_pop(&c, saved);
    }
    if (tr_rnode_get(r->spec, "targetRef") != NULL || tr_rnode_get(r->spec, "targetRefs") != NULL)
        ist_warn(x, &c, NULL, tr_rnode_get(r->spec, "targetRef") ? "targetRef" : "targetRefs",
                 "targetRefs select Gateway API gateways and waypoints, which trellis does not "
                 "run: this policy applies nowhere (a gateway takes the policies whose selector "
                 "matches it)");
    const struct tr_rnode *rules = ist_list(x, &c, r->spec, "jwtRules");
    size_t i = 0;
    for (const struct tr_rnode *e = rules ? rules->head : NULL; e; e = e->next, i++) {
        size_t saved = ist_push_key(&c, "jwtRules");
        ist_push_index(&c, i);
        check_rule(x, &c, e);
        ist_pop(&c, saved);
    }
    if (rules == NULL || rules->n == 0)
        ist_warn(x, &c, NULL, "jwtRules", "no rules: the policy does nothing");
}

void ist_ra_check_all(struct ist_ctx *x)
{
    size_t n;
    const struct tr_resource *const *v =
        tr_rset_of_kind(x->rs, SEC_GROUP, "RequestAuthentication", &n);
    for (size_t i = 0; i < n; i++)
        ra_check(x, v[i]);
}

/* Does policy r apply to the workload? */
static bool ra_applies(struct ist_ctx *x, const struct tr_resource *r)
{
    if (ist_refused(x, r) || tr_rnode_get(r->spec, "targetRef") != NULL ||
        tr_rnode_get(r->spec, "targetRefs") != NULL)
        return false;
    const char *rns = r->ns ? r->ns : "default";
    if (strcmp(rns, x->wl_ns) != 0 && strcmp(rns, x->o->root_ns) != 0)
        return false;
    const struct tr_rnode *sel = tr_rnode_get(tr_rnode_get(r->spec, "selector"), "matchLabels");
    return ist_labels_match(sel, x->wl_labels);
}

static const char **strings_of(struct ist_ctx *x, const struct tr_rnode *l, size_t *n)
{
    *n = 0;
    if (l == NULL || l->kind != TR_RNODE_SEQ || l->n == 0)
        return NULL;
    const char **v = ist_malloc(x, l->n, sizeof(*v));
    if (v == NULL)
        return NULL;
    for (const struct tr_rnode *e = l->head; e; e = e->next) {
        const char *s;
        if (tr_rnode_str(e, &s))
            v[(*n)++] = ist_mstrdup(x, s);
    }
    return v;
}

static char *lower_dup(struct ist_ctx *x, const char *s)
{
    char *d = ist_mstrdup(x, s);
    for (char *p = d; p != NULL && *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return d;
}

static bool build_rule(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *e,
                       struct tr_jwt_rule_cfg *out)
{
    const char *s;
    *out = (struct tr_jwt_rule_cfg){0};
    out->loc = ist_loc(x, c, e);
    if (tr_rnode_str(tr_rnode_get(e, "issuer"), &s))
        out->issuer = ist_mstrdup(x, s);
    if (tr_rnode_str(tr_rnode_get(e, "jwks"), &s))
        out->jwks = ist_mstrdup(x, s);
    else if (tr_rnode_str(tr_rnode_get(e, "jwksUri"), &s)) {
        /* Checked (ra_check): a policy whose jwksUri cannot be fetched is refused. */
        struct jwks_target t;
        char why[512];
        struct tr_jwks_uri_cfg *u = ist_malloc(x, 1, sizeof(*u));
        if (!jwks_uri_target(x, s, c->res->ns ? c->res->ns : "default", &t, why, sizeof(why)) ||
            u == NULL)
            return false;
        *u = (struct tr_jwks_uri_cfg){
            .url = ist_mstrdup(x, s),
            .cluster_name = ist_jwks_cluster(x, t.svc, t.pi, t.host, t.port, t.https, &out->loc),
            .cluster = -1,
            .refresh_ms = IST_JWKS_REFRESH_MS,
            .timeout_ms = IST_JWKS_TIMEOUT_MS};
        uint32_t ms;
        if (ist_duration(x, c, e, "timeout", 60000, &ms) && ms > 0)
            u->timeout_ms = ms;
        out->jwks_uri = u;
    }
    out->audiences = strings_of(x, tr_rnode_get(e, "audiences"), &out->n_audiences);
    out->from_params = strings_of(x, tr_rnode_get(e, "fromParams"), &out->n_from_params);
    out->from_cookies = strings_of(x, tr_rnode_get(e, "fromCookies"), &out->n_from_cookies);
    bool b;
    if (tr_rnode_bool(tr_rnode_get(e, "forwardOriginalToken"), &b))
        out->forward_original_token = b;
    if (tr_rnode_str(tr_rnode_get(e, "outputPayloadToHeader"), &s))
        out->output_payload_to_header = lower_dup(x, s);
    const struct tr_rnode *fh = tr_rnode_get(e, "fromHeaders");
    if (fh != NULL && fh->kind == TR_RNODE_SEQ && fh->n > 0) {
        out->from_headers = ist_malloc(x, fh->n, sizeof(*out->from_headers));
        if (out->from_headers == NULL)
            return false;
        for (const struct tr_rnode *h = fh->head; h; h = h->next) {
            struct tr_jwt_header_cfg *o = &out->from_headers[out->n_from_headers++];
            *o = (struct tr_jwt_header_cfg){0};
            if (tr_rnode_str(tr_rnode_get(h, "name"), &s))
                o->name = lower_dup(x, s);
            if (tr_rnode_str(tr_rnode_get(h, "prefix"), &s) && s[0] != '\0')
                o->prefix = ist_mstrdup(x, s);
        }
    }
    const struct tr_rnode *oc = tr_rnode_get(e, "outputClaimToHeaders");
    if (oc != NULL && oc->kind == TR_RNODE_SEQ && oc->n > 0) {
        out->output_claim_to_headers = ist_malloc(x, oc->n, sizeof(*out->output_claim_to_headers));
        if (out->output_claim_to_headers == NULL)
            return false;
        for (const struct tr_rnode *h = oc->head; h; h = h->next) {
            struct tr_jwt_claim_header_cfg *o =
                &out->output_claim_to_headers[out->n_output_claim_to_headers++];
            *o = (struct tr_jwt_claim_header_cfg){0};
            if (tr_rnode_str(tr_rnode_get(h, "header"), &s))
                o->header = lower_dup(x, s);
            if (tr_rnode_str(tr_rnode_get(h, "claim"), &s))
                o->claim = ist_mstrdup(x, s);
        }
    }
    return !x->oom;
}

bool ist_request_authn(struct ist_ctx *x, struct tr_request_authn_cfg *out)
{
    *out = (struct tr_request_authn_cfg){0};
    size_t n, total = 0;
    const struct tr_resource *const *v =
        tr_rset_of_kind(x->rs, SEC_GROUP, "RequestAuthentication", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_rnode *rules = tr_rnode_get(v[i]->spec, "jwtRules");
        if (ra_applies(x, v[i]) && rules != NULL && rules->kind == TR_RNODE_SEQ)
            total += rules->n;
    }
    if (total == 0)
        return true;
    out->rules = ist_malloc(x, total, sizeof(*out->rules));
    if (out->rules == NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!ra_applies(x, v[i]))
            continue;
        const struct tr_rnode *rules = tr_rnode_get(v[i]->spec, "jwtRules");
        size_t k = 0;
        for (const struct tr_rnode *e = rules && rules->kind == TR_RNODE_SEQ ? rules->head : NULL;
             e; e = e->next, k++) {
            struct ist_cursor c;
            ist_cursor_init(&c, v[i], "spec.jwtRules");
            ist_push_index(&c, k);
            if (!build_rule(x, &c, e, &out->rules[out->n_rules++]))
                return false;
        }
    }
    return true;
}
