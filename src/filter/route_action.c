/* filter/route_action.c: redirects, fault draws and CORS (see route_action.h).
 *
 * Semantics follow Envoy, which Istio configures for these features:
 * RedirectAction (Http::Utility::newUri), the fault filter (delay and abort
 * as independent events, FractionalPercent per million) and the CORS filter
 * (cors_filter.cc). docs/config.md states each rule with its source.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "filter/route_action.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"

/* ---- redirect ---------------------------------------------------------- */

static bool scheme_is_https(tr_str s)
{
    return TR_STR_IEQ_LIT(s, "https");
}

static unsigned default_port(tr_str scheme)
{
    return scheme_is_https(scheme) ? 443 : 80;
}

/* "host[:port]" or "[v6][:port]" into host and port digits (empty: none).
 * The codecs validated the authority (tr_h1_is_authority). */
static void split_authority(tr_str a, tr_str *host, tr_str *port)
{
    *host = a;
    *port = (tr_str){a.p, 0};
    size_t h = a.len;
    if (a.len > 0 && a.p[0] == '[') {
        const char *close = memchr(a.p, ']', a.len);
        if (close == NULL)
            return;
        h = (size_t)(close - a.p) + 1;
    } else {
        while (h > 0 && a.p[h - 1] != ':')
            h--;
        if (h == 0)
            return; /* no ':' */
        h--;
    }
    if (h < a.len && a.p[h] == ':') {
        *host = tr_str_from(a.p, h);
        *port = tr_str_from(a.p + h + 1, a.len - h - 1);
    }
}

/* The codecs checked the digits (1-5 of them, at most 65535). */
static unsigned port_number(tr_str digits)
{
    unsigned p = 0;
    for (uint32_t i = 0; i < digits.len && i < 5; i++)
        p = p * 10 + (unsigned)(digits.p[i] - '0');
    return p;
}

static bool port_is(tr_str digits, unsigned port)
{
    char b[8];
    int n = snprintf(b, sizeof(b), "%u", port);
    return digits.len == (uint32_t)n && memcmp(digits.p, b, (size_t)n) == 0;
}

static void put(struct tr_location *loc, tr_str s)
{
    if (s.len == 0 || loc->n == TR_LOCATION_PARTS)
        return;
    loc->part[loc->n++] = s;
    loc->len += s.len;
}

static tr_str cstr(const char *s)
{
    return tr_str_from(s, strlen(s));
}

void tr_redirect_location(const struct tr_route_cfg *route, const struct tr_redirect_request *rq,
                          struct tr_location *out)
{
    const struct tr_redirect_cfg *rd = route->redirect;
    out->n = 0;
    out->len = 0;
    out->port[0] = '\0';
    tr_str scheme = rd->scheme != NULL ? cstr(rd->scheme) : rq->scheme;
    tr_str req_host, req_port;
    split_authority(rq->authority, &req_host, &req_port);
    tr_str host = rd->host != NULL ? cstr(rd->host) : req_host;
    tr_str port = {out->port, 0};
    unsigned chosen = rd->port;
    if (chosen == 0 && rd->port_from == TR_REDIRECT_PORT_REQUEST)
        chosen = req_port.len > 0 ? port_number(req_port) : default_port(rq->scheme);
    if (chosen != 0) {
        /* istiod leaves out a port that is the scheme's default. */
        if (chosen != default_port(scheme))
            port.len = (uint32_t)snprintf(out->port, sizeof(out->port), ":%u", chosen);
    } else if (rd->port_from == TR_REDIRECT_PORT_KEEP && rd->host == NULL && req_port.len > 0) {
        /* Envoy keeps the request's authority, except a port that is the
         * default of the request's scheme when the scheme changes. */
        bool changed = scheme_is_https(scheme) != scheme_is_https(rq->scheme);
        if (!changed || !port_is(req_port, default_port(rq->scheme)))
            port = tr_str_from(req_port.p - 1, req_port.len + 1);
    }

    if (host.len > 0) {
        put(out, scheme);
        put(out, TR_STR_LIT("://"));
        put(out, host);
        put(out, port);
    }

    tr_str path = rq->path;
    const char *q = memchr(path.p, '?', path.len);
    tr_str query = q != NULL ? tr_str_from(q, (size_t)(path.p + path.len - q)) : (tr_str){0};
    tr_str head = path, tail = {0};
    if (rd->path != NULL) {
        head = cstr(rd->path);
        if (strchr(rd->path, '?') == NULL)
            tail = query;
    } else if (rd->prefix != NULL) {
        /* Validate allows prefix only on prefix routes: the request's path
         * starts with the matched prefix. */
        size_t matched = strlen(route->path);
        if (matched > path.len)
            matched = path.len;
        head = cstr(rd->prefix);
        tail = tr_str_from(path.p + matched, path.len - matched);
    }
    if (head.len == 0 || head.p[0] != '/')
        put(out, TR_STR_LIT("/")); /* "OPTIONS *": Envoy makes the path absolute too */
    put(out, head);
    put(out, tail);
}

void tr_location_write(const struct tr_location *loc, char *dst)
{
    for (uint32_t i = 0; i < loc->n; i++) {
        memcpy(dst, loc->part[i].p, loc->part[i].len);
        dst += loc->part[i].len;
    }
}

/* ---- fault -------------------------------------------------------------- */

void tr_fault_roll(const struct tr_fault_cfg *f, uint32_t rnd_delay, uint32_t rnd_abort,
                   struct tr_fault_draw *out)
{
    out->delay_ms =
        f->delay != NULL && tr_share_hit(f->delay->per_million, rnd_delay) ? f->delay->fixed_ms : 0;
    out->abort = f->abort != NULL && tr_share_hit(f->abort->per_million, rnd_abort);
}

/* ---- CORS --------------------------------------------------------------- */

/* Backtracking budget for an origin regex: origins are short. */
#define CORS_MATCH_LIMIT 100000u
#define CORS_DEPTH_LIMIT 2000u

struct cors_origin {
    enum tr_origin_match kind;
    tr_str value;
    pcre2_code *re; /* REGEX only */
};

struct tr_cors {
    struct cors_origin *origins;
    size_t n_origins;
    pcre2_match_context *mctx;
    bool any_origin; /* an entry matches "*": every origin is allowed (Envoy) */
    bool credentials;
    bool ignore_unmatched;
    tr_str allow_methods; /* joined with ","; "*": echo the request's */
    tr_str allow_headers;
    tr_str expose_headers;
    tr_str max_age; /* seconds; empty: not sent */
    char *text;     /* owns the joined values above */
};

/* Per-thread PCRE2 match data (one ovector pair: a full match needs no
 * captures), made on first use and freed at thread exit. */
static pthread_once_t cors_md_once = PTHREAD_ONCE_INIT;
static pthread_key_t cors_md_key;
static _Thread_local pcre2_match_data *cors_md;

static void cors_md_destroy(void *p)
{
    pcre2_match_data_free(p);
}

static void cors_md_key_init(void)
{
    (void)pthread_key_create(&cors_md_key, cors_md_destroy);
}

static pcre2_match_data *cors_match_data(void)
{
    if (cors_md != NULL)
        return cors_md;
    pthread_once(&cors_md_once, cors_md_key_init);
    cors_md = pcre2_match_data_create(1, NULL);
    if (cors_md != NULL)
        (void)pthread_setspecific(cors_md_key, cors_md);
    return cors_md;
}

static bool origin_match(const struct tr_cors *c, const struct cors_origin *o, tr_str s)
{
    switch (o->kind) {
    case TR_ORIGIN_EXACT:
        return s.len == o->value.len && memcmp(s.p, o->value.p, s.len) == 0;
    case TR_ORIGIN_PREFIX:
        return s.len >= o->value.len && memcmp(s.p, o->value.p, o->value.len) == 0;
    case TR_ORIGIN_REGEX: {
        pcre2_match_data *md = cors_match_data();
        /* No memory, or the budget ran out: no match, never an allowed origin. */
        return md != NULL && pcre2_match(o->re, (PCRE2_SPTR)(s.p != NULL ? s.p : ""), s.len, 0, 0,
                                         md, c->mctx) >= 0;
    }
    }
    return false;
}

/* The entries of list joined with "," into *pos; returns the slice. */
static tr_str join(char **pos, const char *const *list, size_t n)
{
    char *start = *pos;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(list[i]);
        if (i > 0)
            *(*pos)++ = ',';
        memcpy(*pos, list[i], l);
        *pos += l;
    }
    return tr_str_from(start, (size_t)(*pos - start));
}

static size_t joined_len(const char *const *list, size_t n)
{
    size_t len = n;
    for (size_t i = 0; i < n; i++)
        len += strlen(list[i]);
    return len;
}

struct tr_cors *tr_cors_build(const struct tr_cors_cfg *cfg, char **err)
{
    struct tr_cors *c = calloc(1, sizeof(*c));
    size_t text = joined_len(cfg->allow_methods, cfg->n_allow_methods) +
                  joined_len(cfg->allow_headers, cfg->n_allow_headers) +
                  joined_len(cfg->expose_headers, cfg->n_expose_headers) + 16;
    if (c == NULL || (c->origins = calloc(cfg->n_origins + 1, sizeof(*c->origins))) == NULL ||
        (c->text = malloc(text)) == NULL || (c->mctx = pcre2_match_context_create(NULL)) == NULL)
        goto oom;
    pcre2_set_match_limit(c->mctx, CORS_MATCH_LIMIT);
    pcre2_set_depth_limit(c->mctx, CORS_DEPTH_LIMIT);
    c->credentials = cfg->allow_credentials;
    c->ignore_unmatched = cfg->unmatched_preflights == TR_CORS_UNMATCHED_IGNORE;
    char *pos = c->text;
    c->allow_methods = join(&pos, cfg->allow_methods, cfg->n_allow_methods);
    c->allow_headers = join(&pos, cfg->allow_headers, cfg->n_allow_headers);
    c->expose_headers = join(&pos, cfg->expose_headers, cfg->n_expose_headers);
    if (cfg->has_max_age) {
        int n = snprintf(pos, 16, "%u", cfg->max_age_s);
        c->max_age = tr_str_from(pos, (size_t)n);
    }
    for (size_t i = 0; i < cfg->n_origins; i++) {
        const struct tr_cors_origin_cfg *oc = &cfg->origins[i];
        struct cors_origin *o = &c->origins[i];
        o->kind = oc->kind;
        o->value = cstr(oc->value);
        c->n_origins = i + 1;
        if (oc->kind == TR_ORIGIN_REGEX) {
            int ec;
            PCRE2_SIZE off;
            /* Anchored at compile time: as match options they would turn
             * the JIT off. Full match, as RE2 and the router. */
            o->re = pcre2_compile((PCRE2_SPTR)oc->value, PCRE2_ZERO_TERMINATED,
                                  PCRE2_ANCHORED | PCRE2_ENDANCHORED, &ec, &off, NULL);
            if (o->re == NULL) {
                PCRE2_UCHAR msg[160];
                if (pcre2_get_error_message(ec, msg, sizeof(msg)) < 0)
                    snprintf((char *)msg, sizeof(msg), "error %d", ec);
                tr_cfg_errorf(err, &oc->loc, "invalid regex at offset %zu: %s", (size_t)off,
                              (const char *)msg);
                tr_cors_free(c);
                return NULL;
            }
            (void)pcre2_jit_compile(o->re, PCRE2_JIT_COMPLETE); /* else interpreted */
        }
        if (origin_match(c, o, TR_STR_LIT("*")))
            c->any_origin = true;
    }
    return c;
oom:
    tr_cors_free(c);
    if (err != NULL) {
        free(*err);
        *err = strdup("out of memory compiling a CORS policy");
    }
    return NULL;
}

void tr_cors_free(struct tr_cors *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; c->origins != NULL && i < c->n_origins; i++)
        pcre2_code_free(c->origins[i].re);
    pcre2_match_context_free(c->mctx);
    free(c->origins);
    free(c->text);
    free(c);
}

enum tr_cors_verdict tr_cors_check(const struct tr_cors *c, const struct tr_cors_request *rq)
{
    if (rq->origin.len == 0)
        return TR_CORS_NONE;
    bool allowed = false;
    if (rq->origin.len <= TR_CORS_ORIGIN_MAX) {
        allowed = c->any_origin;
        for (size_t i = 0; !allowed && i < c->n_origins; i++)
            allowed = origin_match(c, &c->origins[i], rq->origin);
    }
    bool preflight = TR_STR_EQ_LIT(rq->method, "OPTIONS") && rq->request_method.len > 0;
    if (!preflight)
        return allowed ? TR_CORS_ALLOWED : TR_CORS_NONE;
    if (allowed)
        return TR_CORS_PREFLIGHT;
    return c->ignore_unmatched ? TR_CORS_PREFLIGHT_REFUSED : TR_CORS_NONE;
}

static void field(struct tr_h2_header *out, size_t *n, tr_str name, tr_str value)
{
    if (value.len > 0)
        out[(*n)++] = (struct tr_h2_header){name, value};
}

size_t tr_cors_preflight_fields(const struct tr_cors *c, const struct tr_cors_request *rq,
                                enum tr_cors_verdict v,
                                struct tr_h2_header out[TR_CORS_PREFLIGHT_FIELDS])
{
    size_t n = 0;
    if (v == TR_CORS_PREFLIGHT)
        field(out, &n, TR_STR_LIT("access-control-allow-origin"), rq->origin);
    if (c->credentials)
        field(out, &n, TR_STR_LIT("access-control-allow-credentials"), TR_STR_LIT("true"));
    bool any_method = TR_STR_EQ_LIT(c->allow_methods, "*");
    field(out, &n, TR_STR_LIT("access-control-allow-methods"),
          any_method ? rq->request_method : c->allow_methods);
    bool any_header = TR_STR_EQ_LIT(c->allow_headers, "*");
    field(out, &n, TR_STR_LIT("access-control-allow-headers"),
          any_header ? rq->request_headers : c->allow_headers);
    field(out, &n, TR_STR_LIT("access-control-max-age"), c->max_age);
    return n;
}

void tr_cors_echo_set(struct tr_cors_echo *e, const struct tr_cors *c, tr_str origin)
{
    e->policy = NULL;
    if (origin.len == 0 || origin.len > sizeof(e->origin))
        return; /* tr_cors_check allows no such origin */
    memcpy(e->origin, origin.p, origin.len);
    e->len = (uint16_t)origin.len;
    e->policy = c;
}

size_t tr_cors_response_fields(const struct tr_cors_echo *e,
                               struct tr_h2_header out[TR_CORS_RESPONSE_FIELDS])
{
    const struct tr_cors *c = e->policy;
    size_t n = 0;
    if (c == NULL)
        return 0;
    field(out, &n, TR_STR_LIT("access-control-allow-origin"), tr_str_from(e->origin, e->len));
    if (c->credentials)
        field(out, &n, TR_STR_LIT("access-control-allow-credentials"), TR_STR_LIT("true"));
    field(out, &n, TR_STR_LIT("access-control-expose-headers"), c->expose_headers);
    return n;
}

bool tr_field_named_in(tr_str name, const struct tr_h2_header *set, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (name.len == set[i].name.len && strncasecmp(name.p, set[i].name.p, name.len) == 0)
            return true;
    }
    return false;
}
