/* router/router.c: compiled route tables (see router.h).
 *
 * Build: every domain of every virtual host is parsed once into a kind
 * (exact, "*suffix", "prefix*", "*"), a lower-cased name and an optional port,
 * then sorted so that lookup is a binary search (exact) or a first-hit scan in
 * precedence order (wildcards). Routes get their methods and header matchers
 * as length-carrying slices and their regexes PCRE2-compiled (JIT when the
 * platform has it).
 *
 * Match: no allocation. PCRE2 needs a match-data block (and, for JIT, a
 * stack) per call; both are made lazily once per thread and reused for the
 * thread's life (freed by a pthread key destructor at thread exit).
 *
 * Documented choices:
 *  - A header that appears several times matches if ANY of its values
 *    matches; invert then negates that ("no value matches").
 *  - An absent header fails every inner match (PRESENT included), so an
 *    inverted matcher on an absent header succeeds.
 *  - A regex evaluation error (match or JIT-stack limit hit by a hostile
 *    value) makes the header matcher (or path) fail even when inverted: an
 *    attacker must not be able to steer routing by exhausting the limit.
 *  - Host "name:port" with a non-numeric or out-of-range port is treated as
 *    having no port (it then matches only port-less domains). Bare IPv6
 *    domains ("::1") are bracketed at build time to match Host "[::1]".
 *  - Among domains of equal precedence (same kind and length), a domain with
 *    the request's port wins over a port-less one. Duplicate domains (same
 *    name and port) are a build error.
 *  - Header matches on :authority (and host, its HTTP/1.1 name), :scheme
 *    and :method read the request's host, scheme and method, so they match
 *    alike for HTTP/1.1 and HTTP/2 clients; an empty host is absent.
 *  - Query parameters: '&' separates them (empty ones are skipped), the
 *    first '=' a name from its value ("a" alone is a present, empty "a");
 *    both are compared as sent, never percent-decoded ("%20" is not " ",
 *    nor "+"), and the first occurrence of a name is the one matched
 *    (Envoy's rules). The query is split once per match call, lazily (only
 *    tables with query matches pay, only when such a route is tried), into
 *    a bounded array on the stack; names beyond it are searched in place,
 *    so no parameter is ever ignored.
 *  - path ignore_case applies to prefix, exact and regex paths alike.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "router/router.h"

#include "config/load.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/log.h"

/* Backtracking budget per regex evaluation: ample for sane route patterns,
 * small enough that a pathological header value costs microseconds. */
#define TR_RT_MATCH_LIMIT    100000u
#define TR_RT_DEPTH_LIMIT    2000u
#define TR_RT_HEAP_LIMIT_KIB 1024u

enum tr_rt_domain_kind { TR_DOM_EXACT = 0, TR_DOM_SUFFIX, TR_DOM_PREFIX, TR_DOM_ANY };

struct tr_rt_domain {
    enum tr_rt_domain_kind kind;
    tr_str name;    /* lower-case; the part without '*' for wildcards */
    int32_t port;   /* -1: any port */
    uint32_t vhost; /* index into tr_router.vhosts */
    uint32_t order; /* position in config, keeps sorting stable */
};

/* Where a header match reads its value. */
enum tr_rt_source { TR_SRC_HEADER = 0, TR_SRC_AUTHORITY, TR_SRC_SCHEME, TR_SRC_METHOD };

/* A header match, or a query parameter match (source and invert unused). */
struct tr_rt_header {
    tr_str name;
    enum tr_header_match_kind kind;
    tr_str value;
    pcre2_code *re; /* REGEX only */
    bool invert;
    uint8_t source; /* enum tr_rt_source */
};

struct tr_rt_route {
    const struct tr_route_cfg *cfg;
    enum tr_path_match kind;
    bool ignore_case;
    tr_str path;
    pcre2_code *re; /* REGEX only */
    tr_str *methods;
    uint32_t n_methods;
    struct tr_rt_header *headers;
    uint32_t n_headers;
    struct tr_rt_header *query;
    uint32_t n_query;
};

struct tr_rt_vhost {
    struct tr_rt_route *routes;
    size_t n_routes;
};

struct tr_router {
    struct tr_arena *arena; /* owns every array below (not the pcre2 codes) */
    pcre2_match_context *mctx;
    struct tr_rt_vhost *vhosts;
    size_t n_vhosts;
    /* One array per kind, each in lookup order (see tr_rt_domain_cmp). */
    struct tr_rt_domain *doms[4];
    size_t n_doms[4];
    bool has_query; /* some route matches query parameters: worth finding the query */
};

/* ---- helpers ---------------------------------------------------------- */

static inline unsigned char tr_rt_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* ASCII case-insensitive equality of n bytes; locale-independent. */
static bool tr_rt_ncase_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tr_rt_lower((unsigned char)a[i]) != tr_rt_lower((unsigned char)b[i]))
            return false;
    return true;
}

/* ---- regex ------------------------------------------------------------ */

/* Per-thread PCRE2 scratch: the match data block and a JIT stack bigger than
 * the 32 KiB default, so that legitimate group repetitions such as
 * "(?:[a-z]|-)+" over a few KiB of header do not fail with a stack error. */
#define TR_RT_JIT_STACK_START (32u * 1024u)
#define TR_RT_JIT_STACK_MAX   (512u * 1024u)

struct tr_rt_tls {
    pcre2_match_data *md;
    pcre2_jit_stack *js;              /* NULL: JIT falls back to its machine-stack default */
    pcre2_match_data *rw;             /* a regex rewrite's: room for every group \N can name */
    char rw_out[TR_REWRITE_PATH_MAX]; /* the rewritten path, until the next rewrite */
};

static pthread_once_t tr_rt_tls_once = PTHREAD_ONCE_INIT;
static pthread_key_t tr_rt_tls_key;
static _Thread_local struct tr_rt_tls *tr_rt_tls;

static void tr_rt_tls_destroy(void *p)
{
    struct tr_rt_tls *t = p;
    pcre2_match_data_free(t->md);
    pcre2_match_data_free(t->rw);
    pcre2_jit_stack_free(t->js);
    free(t);
}

static void tr_rt_tls_key_init(void)
{
    /* On failure the per-thread block is simply never freed at thread exit. */
    (void)pthread_key_create(&tr_rt_tls_key, tr_rt_tls_destroy);
}

/* Called by pcre2_match() when it runs JIT code; the thread's scratch exists
 * by then because tr_rt_regex_match() created it first. */
static pcre2_jit_stack *tr_rt_jit_stack(void *unused)
{
    (void)unused;
    return tr_rt_tls ? tr_rt_tls->js : NULL;
}

/* The calling thread's match data, created on first use. A full-match check
 * needs no captures, so one ovector pair serves every pattern. */
static pcre2_match_data *tr_rt_match_data(void)
{
    if (tr_rt_tls != NULL)
        return tr_rt_tls->md;
    pthread_once(&tr_rt_tls_once, tr_rt_tls_key_init);
    struct tr_rt_tls *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->md = pcre2_match_data_create(1, NULL);
    t->rw = pcre2_match_data_create(10, NULL);
    if (t->md == NULL || t->rw == NULL) {
        pcre2_match_data_free(t->md);
        pcre2_match_data_free(t->rw);
        free(t);
        return NULL;
    }
    t->js = pcre2_jit_stack_create(TR_RT_JIT_STACK_START, TR_RT_JIT_STACK_MAX, NULL);
    (void)pthread_setspecific(tr_rt_tls_key, t);
    tr_rt_tls = t;
    return t->md;
}

/* Anchoring is requested at compile time: the same options passed to
 * pcre2_match() would silently disable the JIT. */
static pcre2_code *tr_rt_regex_compile(const char *pattern, bool caseless,
                                       const struct tr_cfg_loc *loc, char **err)
{
    int ec;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile(
        (PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
        PCRE2_ANCHORED | PCRE2_ENDANCHORED | (caseless ? PCRE2_CASELESS : 0), &ec, &off, NULL);
    if (re == NULL) {
        PCRE2_UCHAR buf[160];
        if (pcre2_get_error_message(ec, buf, sizeof(buf)) < 0)
            snprintf((char *)buf, sizeof(buf), "error %d", ec);
        tr_cfg_errorf(err, loc, "invalid regex \"%s\" at offset %zu: %s", pattern, (size_t)off,
                      (const char *)buf);
        return NULL;
    }
    /* Failure (no JIT on this CPU/build) leaves the interpreter in use. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

/* 1: full match, 0: no match, -1: could not decide (limits, no memory). */
static int tr_rt_regex_match(const struct tr_router *r, const pcre2_code *re, tr_str s)
{
    pcre2_match_data *md = tr_rt_match_data();
    if (md == NULL)
        return -1;
    int rc = pcre2_match(re, (PCRE2_SPTR)(s.p ? s.p : ""), s.len, 0, 0, md, r->mctx);
    if (rc >= 0)
        return 1;
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    tr_debug("router: regex evaluation failed (%d), treating as no match", rc);
    return -1;
}

/* ---- host / domain parsing ------------------------------------------- */

/* "1".."65535" -> value; anything else -> -1. */
static int32_t tr_rt_parse_port(const char *p, size_t n)
{
    if (n == 0 || n > 5)
        return -1;
    int32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v >= 1 && v <= 65535 ? v : -1;
}

/* Split "name[:port]", "[v6][:port]" or bare "v6". *port_text_len receives the
 * length of the text after ':' (0 if none), so callers can tell "no port"
 * from "bad port". */
static void tr_rt_split_host(const char *p, size_t n, tr_str *name, int32_t *port,
                             size_t *port_text_len)
{
    *name = tr_str_from(p, n);
    *port = -1;
    *port_text_len = 0;
    const char *colon = NULL;
    if (n > 0 && p[0] == '[') {
        const char *rb = memchr(p, ']', n);
        if (rb == NULL)
            return;
        if ((size_t)(rb - p) + 1 < n && rb[1] == ':')
            colon = rb + 1;
        else
            return;
    } else {
        colon = memchr(p, ':', n);
        if (colon == NULL || memchr(colon + 1, ':', n - (size_t)(colon - p) - 1) != NULL)
            return; /* no port, or a bare IPv6 address */
    }
    size_t plen = n - (size_t)(colon - p) - 1;
    *name = tr_str_from(p, (size_t)(colon - p));
    *port = tr_rt_parse_port(colon + 1, plen);
    *port_text_len = plen;
}

static bool tr_rt_domain_parse(struct tr_arena *ar, const char *text, struct tr_rt_domain *d,
                               const struct tr_cfg_loc *loc, char **err)
{
    size_t n = text ? strlen(text) : 0;
    if (n == 0) {
        tr_cfg_errorf(err, loc, "empty domain");
        return false;
    }
    tr_str name;
    size_t ptl;
    tr_rt_split_host(text, n, &name, &d->port, &ptl);
    if (ptl > 0 && d->port < 0) {
        tr_cfg_errorf(err, loc, "domain \"%s\": invalid port", text);
        return false;
    }
    if (name.len == 0) {
        tr_cfg_errorf(err, loc, "domain \"%s\": empty host name", text);
        return false;
    }
    const char *star = memchr(name.p, '*', name.len);
    const char *star2 = star ? memchr(star + 1, '*', name.len - (size_t)(star - name.p) - 1) : NULL;
    const char *src = name.p;
    size_t len = name.len;
    if (star == NULL) {
        d->kind = TR_DOM_EXACT;
    } else if (star2 != NULL) {
        tr_cfg_errorf(err, loc, "domain \"%s\": at most one '*' is allowed", text);
        return false;
    } else if (name.len == 1) {
        d->kind = TR_DOM_ANY;
        len = 0;
    } else if (star == name.p) {
        d->kind = TR_DOM_SUFFIX;
        src++;
        len--;
    } else if (star == name.p + name.len - 1) {
        d->kind = TR_DOM_PREFIX;
        len--;
    } else {
        tr_cfg_errorf(err, loc, "domain \"%s\": '*' must be first or last", text);
        return false;
    }
    /* A bare IPv6 literal is written bracketed in Host headers. */
    bool bracket = d->kind == TR_DOM_EXACT && src[0] != '[' && memchr(src, ':', len) != NULL;
    char *out = tr_arena_alloc(ar, len + 3);
    if (out == NULL) {
        tr_cfg_errorf(err, loc, "out of memory");
        return false;
    }
    size_t o = 0;
    if (bracket)
        out[o++] = '[';
    for (size_t i = 0; i < len; i++)
        out[o++] = (char)tr_rt_lower((unsigned char)src[i]);
    if (bracket)
        out[o++] = ']';
    out[o] = '\0';
    d->name = tr_str_from(out, o);
    return true;
}

/* Wildcards: longest first (precedence). Then by name, so exact lookup can
 * bisect and duplicates end up adjacent; equal-length wildcards that both
 * match a host are necessarily the same name, so name order does not affect
 * precedence. Then the port-specific entry before the port-less one, then
 * config order. */
static int tr_rt_domain_cmp(const void *pa, const void *pb)
{
    const struct tr_rt_domain *a = pa, *b = pb;
    if (a->kind != TR_DOM_EXACT && a->name.len != b->name.len)
        return a->name.len > b->name.len ? -1 : 1;
    size_t m = a->name.len < b->name.len ? a->name.len : b->name.len;
    int c = memcmp(a->name.p, b->name.p, m);
    if (c != 0)
        return c;
    if (a->name.len != b->name.len)
        return a->name.len < b->name.len ? -1 : 1;
    if ((a->port < 0) != (b->port < 0))
        return a->port < 0 ? 1 : -1;
    if (a->port != b->port)
        return a->port < b->port ? -1 : 1;
    return a->order < b->order ? -1 : (a->order > b->order);
}

/* ---- build ------------------------------------------------------------ */

static enum tr_rt_source tr_rt_source_of(tr_str name)
{
    if (TR_STR_EQ_LIT(name, ":authority") || TR_STR_EQ_LIT(name, "host"))
        return TR_SRC_AUTHORITY;
    if (TR_STR_EQ_LIT(name, ":scheme"))
        return TR_SRC_SCHEME;
    if (TR_STR_EQ_LIT(name, ":method"))
        return TR_SRC_METHOD;
    return TR_SRC_HEADER;
}

static bool tr_rt_route_build(struct tr_router *r, const struct tr_config *cfg,
                              const struct tr_route_cfg *rc, struct tr_rt_route *out, char **err)
{
    out->cfg = rc;
    out->kind = rc->path_kind;
    out->ignore_case = rc->path_ignore_case;
    if (rc->path == NULL) {
        tr_cfg_errorf(err, &rc->loc, "route has no path");
        return false;
    }
    out->path = tr_str_from(rc->path, strlen(rc->path));
    if (rc->path_kind == TR_PATH_REGEX) {
        out->re = tr_rt_regex_compile(rc->path, rc->path_ignore_case, &rc->loc, err);
        if (out->re == NULL)
            return false;
    } else if (rc->path_kind != TR_PATH_PREFIX && rc->path_kind != TR_PATH_EXACT) {
        tr_cfg_errorf(err, &rc->loc, "unknown path match kind %d", (int)rc->path_kind);
        return false;
    }

    if (rc->n_methods > 0) {
        out->methods = tr_arena_calloc(r->arena, rc->n_methods, sizeof(*out->methods));
        if (out->methods == NULL)
            goto oom;
        for (size_t i = 0; i < rc->n_methods; i++) {
            if (rc->methods[i] == NULL || rc->methods[i][0] == '\0') {
                tr_cfg_errorf(err, &rc->loc, "methods[%zu] is empty", i);
                return false;
            }
            out->methods[i] = tr_str_from(rc->methods[i], strlen(rc->methods[i]));
        }
        out->n_methods = (uint32_t)rc->n_methods;
    }

    if (rc->n_headers > 0) {
        out->headers = tr_arena_calloc(r->arena, rc->n_headers, sizeof(*out->headers));
        if (out->headers == NULL)
            goto oom;
        /* Counted as we go so tr_router_free() sees every compiled regex even
         * when a later matcher fails. */
        for (size_t i = 0; i < rc->n_headers; i++) {
            const struct tr_header_match_cfg *hc = &rc->headers[i];
            struct tr_rt_header *h = &out->headers[i];
            out->n_headers = (uint32_t)i + 1;
            if (hc->name == NULL || hc->name[0] == '\0') {
                tr_cfg_errorf(err, &hc->loc, "header matcher without a name");
                return false;
            }
            h->name = tr_str_from(hc->name, strlen(hc->name));
            h->kind = hc->kind;
            h->invert = hc->invert;
            h->source = tr_rt_source_of(h->name);
            if (hc->kind == TR_HMATCH_PRESENT)
                continue;
            if (hc->kind > TR_HMATCH_PRESENT) {
                tr_cfg_errorf(err, &hc->loc, "unknown header match kind %d", (int)hc->kind);
                return false;
            }
            if (hc->value == NULL) {
                tr_cfg_errorf(err, &hc->loc, "header matcher \"%s\" needs a value", hc->name);
                return false;
            }
            h->value = tr_str_from(hc->value, strlen(hc->value));
            if (hc->kind == TR_HMATCH_REGEX) {
                h->re = tr_rt_regex_compile(hc->value, false, &hc->loc, err);
                if (h->re == NULL)
                    return false;
            }
        }
    }

    if (rc->n_query > 0) {
        out->query = tr_arena_calloc(r->arena, rc->n_query, sizeof(*out->query));
        if (out->query == NULL)
            goto oom;
        r->has_query = true;
        for (size_t i = 0; i < rc->n_query; i++) {
            const struct tr_query_match_cfg *qc = &rc->query[i];
            struct tr_rt_header *q = &out->query[i];
            out->n_query = (uint32_t)i + 1; /* counted as we go, as headers are */
            if (qc->name == NULL || qc->name[0] == '\0' || qc->kind > TR_HMATCH_PRESENT ||
                qc->kind == TR_HMATCH_SUFFIX ||
                (qc->kind != TR_HMATCH_PRESENT && qc->value == NULL)) {
                tr_cfg_errorf(err, &qc->loc, "invalid query parameter match");
                return false;
            }
            q->name = tr_str_from(qc->name, strlen(qc->name));
            q->kind = qc->kind;
            if (qc->kind == TR_HMATCH_PRESENT)
                continue;
            q->value = tr_str_from(qc->value, strlen(qc->value));
            if (qc->kind == TR_HMATCH_REGEX &&
                (q->re = tr_rt_regex_compile(qc->value, false, &qc->loc, err)) == NULL)
                return false;
        }
    }

    for (size_t i = 0; i < rc->n_clusters; i++) {
        int c = rc->clusters[i].cluster;
        if (c < 0 || (size_t)c >= cfg->n_clusters) {
            tr_cfg_errorf(err, &rc->loc, "clusters[%zu] refers to unknown cluster %d", i, c);
            return false;
        }
    }
    return true;
oom:
    tr_cfg_errorf(err, &rc->loc, "out of memory");
    return false;
}

struct tr_router *tr_router_build(const struct tr_config *cfg, size_t idx, char **err)
{
    if (err != NULL)
        *err = NULL;
    if (cfg == NULL || idx >= cfg->n_route_tables) {
        tr_cfg_errorf(err, NULL, "route table %zu does not exist", idx);
        return NULL;
    }
    const struct tr_route_table_cfg *tc = &cfg->route_tables[idx];

    struct tr_router *r = calloc(1, sizeof(*r));
    if (r == NULL)
        goto oom;
    r->arena = tr_arena_new(16384);
    r->mctx = pcre2_match_context_create(NULL);
    if (r->arena == NULL || r->mctx == NULL)
        goto oom;
    pcre2_set_match_limit(r->mctx, TR_RT_MATCH_LIMIT);
    pcre2_set_depth_limit(r->mctx, TR_RT_DEPTH_LIMIT);
    pcre2_set_heap_limit(r->mctx, TR_RT_HEAP_LIMIT_KIB);
    pcre2_jit_stack_assign(r->mctx, tr_rt_jit_stack, NULL);

    size_t n_dom = 0;
    for (size_t v = 0; v < tc->n_vhosts; v++)
        n_dom += tc->vhosts[v].n_domains;
    r->vhosts = tr_arena_calloc(r->arena, tc->n_vhosts + 1, sizeof(*r->vhosts));
    struct tr_rt_domain *all = tr_arena_calloc(r->arena, n_dom + 1, sizeof(*all));
    if (r->vhosts == NULL || all == NULL)
        goto oom;

    size_t d = 0;
    for (size_t v = 0; v < tc->n_vhosts; v++) {
        const struct tr_vhost_cfg *vc = &tc->vhosts[v];
        struct tr_rt_vhost *vh = &r->vhosts[v];
        r->n_vhosts = v + 1;
        for (size_t i = 0; i < vc->n_domains; i++, d++) {
            if (!tr_rt_domain_parse(r->arena, vc->domains[i], &all[d], &vc->loc, err))
                goto fail;
            all[d].vhost = (uint32_t)v;
            all[d].order = (uint32_t)d;
            r->n_doms[all[d].kind]++;
        }
        if (vc->n_routes > 0) {
            vh->routes = tr_arena_calloc(r->arena, vc->n_routes, sizeof(*vh->routes));
            if (vh->routes == NULL)
                goto oom;
        }
        for (size_t i = 0; i < vc->n_routes; i++) {
            vh->n_routes = i + 1;
            if (!tr_rt_route_build(r, cfg, &vc->routes[i], &vh->routes[i], err))
                goto fail;
        }
    }

    /* Partition by kind, sort each, reject duplicates. */
    for (int k = 0; k < 4; k++) {
        r->doms[k] = tr_arena_calloc(r->arena, r->n_doms[k] + 1, sizeof(*r->doms[k]));
        if (r->doms[k] == NULL)
            goto oom;
        size_t j = 0;
        for (size_t i = 0; i < n_dom; i++)
            if ((int)all[i].kind == k)
                r->doms[k][j++] = all[i];
        qsort(r->doms[k], j, sizeof(*r->doms[k]), tr_rt_domain_cmp);
        for (size_t i = 1; i < j; i++) {
            const struct tr_rt_domain *a = &r->doms[k][i - 1], *b = &r->doms[k][i];
            if (a->port == b->port && a->name.len == b->name.len &&
                memcmp(a->name.p, b->name.p, a->name.len) == 0) {
                const struct tr_rt_domain *later = a->order > b->order ? a : b;
                tr_cfg_errorf(err, &tc->vhosts[later->vhost].loc,
                              "domain \"%s%.*s%s\" is listed twice",
                              k == TR_DOM_SUFFIX || k == TR_DOM_ANY ? "*" : "",
                              (int)later->name.len, later->name.p, k == TR_DOM_PREFIX ? "*" : "");
                goto fail;
            }
        }
    }
    return r;

oom:
    tr_cfg_errorf(err, &tc->loc, "out of memory");
fail:
    tr_router_free(r);
    return NULL;
}

void tr_router_free(struct tr_router *r)
{
    if (r == NULL)
        return;
    for (size_t v = 0; v < r->n_vhosts; v++) {
        const struct tr_rt_vhost *vh = &r->vhosts[v];
        for (size_t i = 0; i < vh->n_routes; i++) {
            const struct tr_rt_route *rt = &vh->routes[i];
            pcre2_code_free(rt->re);
            for (size_t h = 0; h < rt->n_headers; h++)
                pcre2_code_free(rt->headers[h].re);
            for (size_t q = 0; q < rt->n_query; q++)
                pcre2_code_free(rt->query[q].re);
        }
    }
    pcre2_match_context_free(r->mctx);
    tr_arena_free(r->arena);
    free(r);
}

/* ---- match ------------------------------------------------------------ */

static bool tr_rt_dom_port_ok(const struct tr_rt_domain *d, int32_t port)
{
    return d->port < 0 || d->port == port;
}

/* Compare host bytes (any case) with a lower-case domain name. */
static int tr_rt_host_cmp(tr_str host, tr_str dom)
{
    size_t m = host.len < dom.len ? host.len : dom.len;
    for (size_t i = 0; i < m; i++) {
        unsigned char a = tr_rt_lower((unsigned char)host.p[i]);
        unsigned char b = (unsigned char)dom.p[i];
        if (a != b)
            return a < b ? -1 : 1;
    }
    return host.len == dom.len ? 0 : (host.len < dom.len ? -1 : 1);
}

static const struct tr_rt_vhost *tr_rt_find_vhost(const struct tr_router *r, tr_str host)
{
    tr_str name;
    int32_t port;
    size_t ptl;
    tr_rt_split_host(host.p, host.len, &name, &port, &ptl);

    if (name.len > 0) {
        /* Exact: bisect to the first entry with this name; equal names are
         * ordered port-specific first, port-less last. */
        const struct tr_rt_domain *ex = r->doms[TR_DOM_EXACT];
        size_t lo = 0, hi = r->n_doms[TR_DOM_EXACT];
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (tr_rt_host_cmp(name, ex[mid].name) > 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t i = lo; i < r->n_doms[TR_DOM_EXACT] && tr_rt_host_cmp(name, ex[i].name) == 0;
             i++)
            if (tr_rt_dom_port_ok(&ex[i], port))
                return &r->vhosts[ex[i].vhost];

        /* Wildcards are in precedence order: first hit wins. A wildcard
         * stands for at least one character. */
        const struct tr_rt_domain *sx = r->doms[TR_DOM_SUFFIX];
        for (size_t i = 0; i < r->n_doms[TR_DOM_SUFFIX]; i++)
            if (name.len > sx[i].name.len && tr_rt_dom_port_ok(&sx[i], port) &&
                tr_rt_ncase_eq(name.p + name.len - sx[i].name.len, sx[i].name.p, sx[i].name.len))
                return &r->vhosts[sx[i].vhost];
        const struct tr_rt_domain *px = r->doms[TR_DOM_PREFIX];
        for (size_t i = 0; i < r->n_doms[TR_DOM_PREFIX]; i++)
            if (name.len > px[i].name.len && tr_rt_dom_port_ok(&px[i], port) &&
                tr_rt_ncase_eq(name.p, px[i].name.p, px[i].name.len))
                return &r->vhosts[px[i].vhost];
    }
    const struct tr_rt_domain *any = r->doms[TR_DOM_ANY];
    for (size_t i = 0; i < r->n_doms[TR_DOM_ANY]; i++)
        if (tr_rt_dom_port_ok(&any[i], port))
            return &r->vhosts[any[i].vhost];
    return NULL;
}

/* 1 match, 0 no match, -1 undecidable. */
static int tr_rt_value_match(const struct tr_router *r, const struct tr_rt_header *h, tr_str v)
{
    switch (h->kind) {
    case TR_HMATCH_EXACT:
        return v.len == h->value.len && memcmp(v.p, h->value.p, v.len) == 0;
    case TR_HMATCH_PREFIX:
        return v.len >= h->value.len && memcmp(v.p, h->value.p, h->value.len) == 0;
    case TR_HMATCH_SUFFIX:
        return v.len >= h->value.len &&
               memcmp(v.p + v.len - h->value.len, h->value.p, h->value.len) == 0;
    case TR_HMATCH_REGEX:
        return tr_rt_regex_match(r, h->re, v);
    case TR_HMATCH_PRESENT:
        return 1;
    }
    return 0;
}

static bool tr_rt_header_match(const struct tr_router *r, const struct tr_rt_header *h,
                               const struct tr_route_request *req)
{
    if (h->source != TR_SRC_HEADER) {
        tr_str v = h->source == TR_SRC_AUTHORITY ? req->host
                   : h->source == TR_SRC_SCHEME  ? req->scheme
                                                 : req->method;
        int m = v.len > 0 ? tr_rt_value_match(r, h, v) : 0;
        if (m < 0)
            return false;
        return (m == 1) != h->invert;
    }
    bool inner = false;
    for (uint32_t i = 0; i < req->n_headers && !inner; i++) {
        const struct tr_str_pair *hp = &req->headers[i];
        if (hp->name.len != h->name.len || !tr_rt_ncase_eq(hp->name.p, h->name.p, h->name.len))
            continue;
        int m = tr_rt_value_match(r, h, hp->value);
        if (m < 0)
            return false;
        inner = m == 1;
    }
    return inner != h->invert;
}

/* ---- query parameters ------------------------------------------------- */

/* Parameters split per match call, on the stack; a query with more is
 * searched in place past them. */
#define TR_RT_QUERY_SPLIT 32u

struct tr_rt_param {
    tr_str name, value;
};

struct tr_rt_query_state {
    tr_str query; /* what follows '?'; empty: none */
    bool split;   /* params holds the first n parameters */
    uint32_t n;
    uint32_t rest; /* where splitting stopped */
    struct tr_rt_param params[TR_RT_QUERY_SPLIT];
};

/* The parameter at *pos, empty ones skipped; false at the end. */
static bool tr_rt_next_param(tr_str q, uint32_t *pos, struct tr_rt_param *out)
{
    while (*pos < q.len) {
        const char *seg = q.p + *pos;
        const char *amp = memchr(seg, '&', q.len - *pos);
        uint32_t len = amp != NULL ? (uint32_t)(amp - seg) : q.len - *pos;
        *pos += len + (amp != NULL);
        if (len == 0)
            continue;
        const char *eq = memchr(seg, '=', len);
        uint32_t nlen = eq != NULL ? (uint32_t)(eq - seg) : len;
        out->name = tr_str_from(seg, nlen);
        out->value = eq != NULL ? tr_str_from(eq + 1, len - nlen - 1) : tr_str_from("", 0);
        return true;
    }
    return false;
}

/* The value of the first parameter called name; false if there is none. */
static bool tr_rt_query_find(struct tr_rt_query_state *qs, tr_str name, tr_str *value)
{
    if (!qs->split) {
        uint32_t pos = 0;
        qs->n = 0;
        while (qs->n < TR_RT_QUERY_SPLIT && tr_rt_next_param(qs->query, &pos, &qs->params[qs->n]))
            qs->n++;
        qs->rest = pos;
        qs->split = true;
    }
    for (uint32_t i = 0; i < qs->n; i++) {
        if (qs->params[i].name.len == name.len &&
            memcmp(qs->params[i].name.p, name.p, name.len) == 0) {
            *value = qs->params[i].value;
            return true;
        }
    }
    struct tr_rt_param p;
    for (uint32_t pos = qs->rest; tr_rt_next_param(qs->query, &pos, &p);) {
        if (p.name.len == name.len && memcmp(p.name.p, name.p, name.len) == 0) {
            *value = p.value;
            return true;
        }
    }
    return false;
}

static bool tr_rt_query_match(const struct tr_router *r, const struct tr_rt_header *q,
                              struct tr_rt_query_state *qs)
{
    tr_str v;
    if (!tr_rt_query_find(qs, q->name, &v))
        return false;
    return tr_rt_value_match(r, q, v) == 1; /* an undecidable regex does not match */
}

static bool tr_rt_route_match(const struct tr_router *r, const struct tr_rt_route *rt, tr_str path,
                              const struct tr_route_request *req, struct tr_rt_query_state *qs)
{
    switch (rt->kind) {
    case TR_PATH_PREFIX:
        if (path.len < rt->path.len)
            return false;
        if (rt->ignore_case ? !tr_rt_ncase_eq(path.p, rt->path.p, rt->path.len)
                            : memcmp(path.p, rt->path.p, rt->path.len) != 0)
            return false;
        break;
    case TR_PATH_EXACT:
        if (path.len != rt->path.len)
            return false;
        if (rt->ignore_case ? !tr_rt_ncase_eq(path.p, rt->path.p, path.len)
                            : memcmp(path.p, rt->path.p, path.len) != 0)
            return false;
        break;
    case TR_PATH_REGEX:
        if (tr_rt_regex_match(r, rt->re, path) != 1)
            return false;
        break;
    }
    if (rt->n_methods > 0) {
        bool ok = false;
        for (uint32_t i = 0; i < rt->n_methods && !ok; i++)
            ok = req->method.len == rt->methods[i].len &&
                 memcmp(req->method.p, rt->methods[i].p, req->method.len) == 0;
        if (!ok)
            return false;
    }
    for (uint32_t i = 0; i < rt->n_headers; i++)
        if (!tr_rt_header_match(r, &rt->headers[i], req))
            return false;
    for (uint32_t i = 0; i < rt->n_query; i++)
        if (!tr_rt_query_match(r, &rt->query[i], qs))
            return false;
    return true;
}

const struct tr_route_cfg *tr_router_match(const struct tr_router *r,
                                           const struct tr_route_request *req)
{
    if (r == NULL || req == NULL)
        return NULL;
    const struct tr_rt_vhost *vh = tr_rt_find_vhost(r, req->host);
    if (vh == NULL)
        return NULL;
    tr_str path = req->path;
    struct tr_rt_query_state qs;
    qs.query = tr_str_from("", 0);
    qs.split = false;
    if (path.len > 0) {
        const char *q = memchr(path.p, '?', path.len);
        if (q != NULL) {
            path.len = (uint32_t)(q - path.p);
            if (r->has_query)
                qs.query = tr_str_from(q + 1, req->path.len - path.len - 1);
        }
    }
    if (path.p == NULL)
        path.p = "";
    for (size_t i = 0; i < vh->n_routes; i++)
        if (tr_rt_route_match(r, &vh->routes[i], path, req, &qs))
            return vh->routes[i].cfg;
    return NULL;
}

int tr_route_pick_cluster(const struct tr_route_cfg *route, uint32_t rnd)
{
    int i = tr_route_pick(route, rnd);
    return i >= 0 ? route->clusters[i].cluster : -1;
}

int tr_route_pick(const struct tr_route_cfg *route, uint32_t rnd)
{
    return route != NULL ? tr_weighted_pick(route->clusters, route->n_clusters, rnd) : -1;
}

int tr_weighted_pick(const struct tr_weighted_cluster_cfg *clusters, size_t n, uint32_t rnd)
{
    /* Summed here rather than trusting a stored total, so a hand-built or
     * inconsistent model can never index past its clusters. */
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += clusters[i].weight;
    if (total == 0)
        return -1;
    uint64_t x = (uint64_t)rnd % total;
    for (size_t i = 0; i < n; i++) {
        uint32_t w = clusters[i].weight;
        if (w == 0)
            continue;
        if (x < w)
            return (int)i;
        x -= w;
    }
    return -1; /* unreachable: x < total */
}

/* rewrite.regex: every match in the path (the query kept as it is), into
 * the thread's buffer. */
static struct tr_path_rewrite regex_rewrite(const struct tr_route_cfg *route, tr_str path)
{
    struct tr_path_rewrite out = {path, {"", 0}, false};
    const char *q = memchr(path.p, '?', path.len);
    size_t plen = q != NULL ? (size_t)(q - path.p) : path.len;
    if (tr_rt_match_data() == NULL) {
        out.failed = true;
        return out;
    }
    PCRE2_SIZE n = sizeof(tr_rt_tls->rw_out);
    int rc = pcre2_substitute(route->regex_rewrite_code, (PCRE2_SPTR)path.p, plen, 0,
                              PCRE2_SUBSTITUTE_GLOBAL, tr_rt_tls->rw, NULL,
                              (PCRE2_SPTR)route->regex_substitution_pcre, PCRE2_ZERO_TERMINATED,
                              (PCRE2_UCHAR *)tr_rt_tls->rw_out, &n);
    if (rc < 0) {
        tr_debug("router: regex rewrite of route %s failed (%d)", route->name, rc);
        out.failed = true;
        return out;
    }
    out.head = tr_str_from(tr_rt_tls->rw_out, n);
    if (q != NULL)
        out.tail = tr_str_from(q, path.len - plen);
    return out;
}

struct tr_path_rewrite tr_route_rewrite_path(const struct tr_route_cfg *route, tr_str path)
{
    struct tr_path_rewrite out = {path, {"", 0}, false};
    if (route->regex_rewrite_code != NULL)
        return regex_rewrite(route, path);
    if (route->prefix_rewrite == NULL)
        return out;
    out.head = tr_str_from(route->prefix_rewrite, strlen(route->prefix_rewrite));
    if (route->path_kind == TR_PATH_PREFIX) {
        /* The route matched, so path starts with the prefix (in any case
         * when path_ignore_case): the same number of bytes goes. */
        size_t plen = strlen(route->path);
        out.tail = plen <= path.len ? tr_str_from(path.p + plen, path.len - plen) : out.tail;
        return out;
    }
    const char *q = memchr(path.p, '?', path.len);
    if (q != NULL)
        out.tail = tr_str_from(q, path.len - (size_t)(q - path.p));
    return out;
}
