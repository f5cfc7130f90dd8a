/* Reading Istio resources: paths, findings, known keys, typed values. */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/fmt.h"
#include "dialect/istio/internal.h"

void ist_cursor_init(struct ist_cursor *c, const struct tr_resource *res, const char *path)
{
    c->res = res;
    c->len = 0;
    c->path[0] = '\0';
    if (path != NULL)
        tr_path_push_key(c->path, sizeof(c->path), &c->len, path);
}

size_t ist_push_key(struct ist_cursor *c, const char *key)
{
    return tr_path_push_key(c->path, sizeof(c->path), &c->len, key);
}

size_t ist_push_index(struct ist_cursor *c, size_t i)
{
    return tr_path_push_index(c->path, sizeof(c->path), &c->len, i);
}

void ist_pop(struct ist_cursor *c, size_t saved)
{
    tr_path_pop(c->path, &c->len, saved);
}

bool ist_oom(struct ist_ctx *x)
{
    if (!x->oom) {
        x->oom = true;
        tr_diags_add(x->d, TR_DIAG_ERROR, &(struct tr_diag_where){0}, "out of memory");
    }
    return false;
}

/* Refusals are a bitmap over the set's load order (tr_resource.index). */
static void refuse(struct ist_ctx *x, const struct tr_resource *r)
{
    if (r == NULL)
        return;
    if (x->refused == NULL) {
        size_t n = tr_rset_count(x->rs);
        x->refused = tr_arena_calloc(x->tmp, n / 8 + 1, 1);
        if (x->refused == NULL) {
            ist_oom(x);
            return;
        }
    }
    x->refused[r->index / 8] |= (uint8_t)(1u << (r->index % 8));
}

bool ist_refused(const struct ist_ctx *x, const struct tr_resource *r)
{
    return x->refused != NULL && r != NULL &&
           (x->refused[r->index / 8] & (1u << (r->index % 8))) != 0;
}

/* One finding at node n (NULL: the resource's start) under the cursor's
 * path (+ ".key"), whatever the pass. */
static void emit(struct ist_ctx *x, enum tr_diag_severity sev, struct ist_cursor *c,
                 const struct tr_rnode *n, const char *key, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));
static void emit(struct ist_ctx *x, enum tr_diag_severity sev, struct ist_cursor *c,
                 const struct tr_rnode *n, const char *key, const char *fmt, va_list ap)
{
    const struct tr_resource *r = c->res;
    size_t saved = c->len;
    if (key != NULL)
        ist_push_key(c, key);
    struct tr_diag_where w = {
        .file = r ? r->file : NULL,
        .line = n   ? n->line
                : r ? r->line
                    : 0,
        .col = n   ? n->col
               : r ? r->col
                   : 0,
        .kind = r ? r->kind : NULL,
        .ns = r ? r->ns : NULL,
        .name = r ? r->name : NULL,
        .path = c->len ? c->path : NULL,
    };
    tr_diags_vadd(x->d, sev, &w, fmt, ap);
    ist_pop(c, saved);
}

/* A finding of the check pass (the build pass is quiet); an error refuses
 * the resource in either pass. */
static void vreport(struct ist_ctx *x, enum tr_diag_severity sev, struct ist_cursor *c,
                    const struct tr_rnode *n, const char *key, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));
static void vreport(struct ist_ctx *x, enum tr_diag_severity sev, struct ist_cursor *c,
                    const struct tr_rnode *n, const char *key, const char *fmt, va_list ap)
{
    if (!x->quiet)
        emit(x, sev, c, n, key, fmt, ap);
    if (sev == TR_DIAG_ERROR)
        refuse(x, c->res);
}

void ist_warn(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *n, const char *key,
              const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(x, TR_DIAG_WARNING, c, n, key, fmt, ap);
    va_end(ap);
}

void ist_error(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *n, const char *key,
               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(x, TR_DIAG_ERROR, c, n, key, fmt, ap);
    va_end(ap);
}

void ist_finding(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *n, const char *key,
                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    /* A warning when compiling (the route answers 503, as Istio's would); an
     * error for `ctl analyze`, whose job is to catch it before it ships.
     * Either way the resource itself stays in use. */
    if (x->analyze && !x->quiet) {
        emit(x, TR_DIAG_ERROR, c, n, key, fmt, ap);
    } else {
        vreport(x, TR_DIAG_WARNING, c, n, key, fmt, ap);
    }
    va_end(ap);
}

bool ist_keys(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
              const struct ist_key *tab, size_t n)
{
    if (map == NULL || tr_rnode_is_null(map))
        return true;
    if (map->kind != TR_RNODE_MAP) {
        char b[64];
        ist_error(x, c, map, NULL, "expected a mapping, got %s",
                  tr_rnode_describe(map, b, sizeof(b)));
        return false;
    }
    for (const struct tr_rnode *k = map->head; k != NULL && k->next != NULL; k = k->next->next) {
        const char *key = k->kind == TR_RNODE_SCALAR ? k->s : NULL;
        const struct ist_key *hit = NULL;
        for (size_t i = 0; key != NULL && i < n; i++) {
            if (strcmp(tab[i].key, key) == 0) {
                hit = &tab[i];
                break;
            }
        }
        if (hit == NULL) {
            char b[80];
            ist_warn(x, c, k, NULL, "unknown field %s: ignored (not part of %s %s)",
                     tr_rnode_describe(k, b, sizeof(b)), c->res ? c->res->api_version : "",
                     c->res ? c->res->kind : "");
        } else if (hit->why != NULL && !tr_rnode_is_null(k->next)) {
            ist_warn(x, c, k, key, "not supported yet, ignored: %s", hit->why);
        }
    }
    return true;
}

static bool absent(const struct tr_rnode *v)
{
    return v == NULL || tr_rnode_is_null(v);
}

bool ist_str(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map, const char *key,
             const char **out)
{
    const struct tr_rnode *v = tr_rnode_get(map, key);
    if (absent(v))
        return false;
    if (v->kind != TR_RNODE_SCALAR || !tr_rnode_str(v, out) || memchr(v->s, '\0', v->len) != NULL) {
        char b[64];
        ist_error(x, c, v, key, "expected a string, got %s", tr_rnode_describe(v, b, sizeof(b)));
        return false;
    }
    return true;
}

bool ist_bool(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map, const char *key,
              bool *out)
{
    const struct tr_rnode *v = tr_rnode_get(map, key);
    if (absent(v))
        return false;
    if (!tr_rnode_bool(v, out)) {
        char b[64];
        ist_error(x, c, v, key, "expected true or false, got %s",
                  tr_rnode_describe(v, b, sizeof(b)));
        return false;
    }
    return true;
}

bool ist_u32(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map, const char *key,
             uint32_t min, uint32_t max, uint32_t *out)
{
    const struct tr_rnode *v = tr_rnode_get(map, key);
    if (absent(v))
        return false;
    int64_t i;
    if (!tr_rnode_int(v, &i) || i < (int64_t)min || i > (int64_t)max) {
        char b[64];
        ist_error(x, c, v, key, "expected an integer %" PRIu32 "..%" PRIu32 ", got %s", min, max,
                  tr_rnode_describe(v, b, sizeof(b)));
        return false;
    }
    *out = (uint32_t)i;
    return true;
}

/* "1h2m3.5s", "100ms", "250us", "1.5s": Go's time.ParseDuration units, which
 * Istio's validation uses. Result in microseconds; false on bad syntax. */
static bool parse_go_duration(const char *s, uint64_t *out_us)
{
    static const struct {
        const char *u;
        double us;
    } units[] = {{"ns", 0.001}, {"us", 1},  {"µs", 1},   {"ms", 1000},
                 {"s", 1e6},    {"m", 6e7}, {"h", 3.6e9}};
    double total = 0;
    if (*s == '\0')
        return false;
    if (strcmp(s, "0") == 0) {
        *out_us = 0;
        return true;
    }
    while (*s != '\0') {
        char *end;
        if (!isdigit((unsigned char)*s) && *s != '.')
            return false;
        double v = strtod(s, &end);
        if (end == s || !isfinite(v) || v < 0)
            return false;
        s = end;
        size_t best = 0, best_len = 0;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t l = strlen(units[i].u);
            if (strncmp(s, units[i].u, l) == 0 && l > best_len) {
                best = i;
                best_len = l;
            }
        }
        if (best_len == 0)
            return false;
        total += v * units[best].us;
        if (total > 1e15)
            return false;
        s += best_len;
    }
    *out_us = (uint64_t)ceil(total);
    return true;
}

bool ist_duration(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                  const char *key, uint32_t max_ms, uint32_t *out_ms)
{
    const struct tr_rnode *v = tr_rnode_get(map, key);
    if (absent(v))
        return false;
    uint64_t us;
    char b[64];
    if (v->kind != TR_RNODE_SCALAR || !parse_go_duration(v->s, &us)) {
        ist_error(x, c, v, key, "expected a duration such as \"1.5s\" or \"100ms\", got %s",
                  tr_rnode_describe(v, b, sizeof(b)));
        return false;
    }
    uint64_t ms = (us + 999) / 1000;
    if (ms > max_ms) {
        ist_error(x, c, v, key, "duration %s is longer than the %" PRIu32 " ms this field allows",
                  tr_rnode_describe(v, b, sizeof(b)), max_ms);
        return false;
    }
    *out_ms = (uint32_t)ms;
    return true;
}

bool ist_parse_duration_ms(const char *s, uint32_t max_ms, uint32_t *out_ms)
{
    uint64_t us;
    if (s == NULL || !parse_go_duration(s, &us))
        return false;
    uint64_t ms = (us + 999) / 1000;
    if (ms > max_ms)
        return false;
    *out_ms = (uint32_t)ms;
    return true;
}

bool ist_percent(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                 const char *key, uint32_t *out_ppm)
{
    const struct tr_rnode *p = tr_rnode_get(map, key);
    if (absent(p))
        return false;
    size_t saved = ist_push_key(c, key);
    static const struct ist_key keys[] = {{"value", NULL}};
    bool ok = false;
    if (IST_KEYS(x, c, p, keys)) {
        const struct tr_rnode *v = tr_rnode_get(p, "value");
        double d = 0;
        char b[64];
        if (absent(v)) {
            *out_ppm = 0; /* protobuf default: 0 */
            ok = true;
        } else if (!tr_rnode_double(v, &d) || !(d >= 0 && d <= 100)) {
            ist_error(x, c, v, "value", "expected a percentage 0..100, got %s",
                      tr_rnode_describe(v, b, sizeof(b)));
        } else {
            *out_ppm = (uint32_t)llround(d * 10000.0);
            ok = true;
        }
    }
    ist_pop(c, saved);
    return ok;
}

const struct tr_rnode *ist_list(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                                const char *key)
{
    const struct tr_rnode *v = tr_rnode_get(map, key);
    if (absent(v))
        return NULL;
    if (v->kind != TR_RNODE_SEQ) {
        char b[64];
        ist_error(x, c, v, key, "expected a list, got %s", tr_rnode_describe(v, b, sizeof(b)));
        return NULL;
    }
    return v;
}

const struct tr_rnode *ist_map(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                               const char *key)
{
    const struct tr_rnode *v = tr_rnode_get(map, key);
    if (absent(v))
        return NULL;
    if (v->kind != TR_RNODE_MAP) {
        char b[64];
        ist_error(x, c, v, key, "expected a mapping, got %s", tr_rnode_describe(v, b, sizeof(b)));
        return NULL;
    }
    return v;
}

bool ist_string_match(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                      const char *key, struct ist_sm *out)
{
    *out = (struct ist_sm){0};
    const struct tr_rnode *m = ist_map(x, c, map, key);
    if (m == NULL)
        return false;
    size_t saved = ist_push_key(c, key);
    static const struct ist_key keys[] = {{"exact", NULL}, {"prefix", NULL}, {"regex", NULL}};
    bool ok = IST_KEYS(x, c, m, keys);
    int set = 0;
    const char *v;
    if (ok && ist_str(x, c, m, "exact", &v)) {
        *out = (struct ist_sm){IST_SM_EXACT, v};
        set++;
    }
    if (ok && ist_str(x, c, m, "prefix", &v)) {
        *out = (struct ist_sm){IST_SM_PREFIX, v};
        set++;
    }
    if (ok && ist_str(x, c, m, "regex", &v)) {
        *out = (struct ist_sm){IST_SM_REGEX, v};
        set++;
    }
    if (set > 1) {
        ist_error(x, c, m, NULL, "exactly one of exact, prefix and regex (a oneof)");
        ok = false;
    } else if (ok && set == 0) {
        out->kind = IST_SM_ANY;
    }
    ist_pop(c, saved);
    return ok;
}

void *ist_alloc(struct ist_ctx *x, size_t n, size_t size)
{
    void *p = tr_arena_calloc(x->tmp, n ? n : 1, size);
    if (p == NULL)
        ist_oom(x);
    return p;
}

void *ist_malloc(struct ist_ctx *x, size_t n, size_t size)
{
    void *p = tr_arena_calloc(x->cfg->arena, n ? n : 1, size);
    if (p == NULL)
        ist_oom(x);
    return p;
}

static char *vprintf_in(struct ist_ctx *x, struct tr_arena *a, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static char *vprintf_in(struct ist_ctx *x, struct tr_arena *a, const char *fmt, va_list ap)
{
    /* Names and addresses are short: one format into a stack buffer, a
     * second one only for what does not fit (compiles make thousands). */
    char buf[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap2);
    va_end(ap2);
    char *p = n < 0 ? NULL : tr_arena_alloc(a, (size_t)n + 1);
    if (p == NULL) {
        ist_oom(x);
        return NULL;
    }
    if ((size_t)n < sizeof(buf))
        memcpy(p, buf, (size_t)n + 1);
    else
        vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *ist_printf(struct ist_ctx *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = vprintf_in(x, x->tmp, fmt, ap);
    va_end(ap);
    return p;
}

char *ist_mprintf(struct ist_ctx *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = vprintf_in(x, x->cfg->arena, fmt, ap);
    va_end(ap);
    return p;
}

char *ist_mjoin(struct ist_ctx *x, const char *const *parts, size_t n)
{
    size_t len[IST_JOIN_MAX], total = 0;
    for (size_t i = 0; i < n && i < IST_JOIN_MAX; i++)
        total += len[i] = strlen(parts[i]);
    char *out = tr_arena_alloc(x->cfg->arena, total + 1);
    if (out == NULL)
        return (void)ist_oom(x), NULL;
    char *p = out;
    for (size_t i = 0; i < n && i < IST_JOIN_MAX; i++) {
        memcpy(p, parts[i], len[i]);
        p += len[i];
    }
    *p = '\0';
    return out;
}

const char *ist_utoa(char buf[IST_UTOA_MAX], uint64_t v)
{
    char *p = buf + IST_UTOA_MAX - 1;
    *p = '\0';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return p;
}

char *ist_mstrdup(struct ist_ctx *x, const char *s)
{
    if (s == NULL)
        return NULL;
    char *p = tr_arena_strdup(x->cfg->arena, s);
    if (p == NULL)
        ist_oom(x);
    return p;
}

struct tr_cfg_loc ist_loc(struct ist_ctx *x, const struct ist_cursor *c, const struct tr_rnode *n)
{
    const struct tr_resource *r = c->res;
    struct tr_cfg_loc loc = {0};
    if (r == NULL)
        return loc;
    if (x->loc_res != r) {
        x->loc_names.file = ist_mstrdup(x, r->file);
        x->loc_names.origin.kind = ist_mstrdup(x, r->kind);
        x->loc_names.origin.ns = ist_mstrdup(x, r->ns);
        x->loc_names.origin.name = ist_mstrdup(x, r->name);
        x->loc_res = r;
    }
    loc = x->loc_names;
    loc.line = n ? n->line : r->line;
    loc.col = n ? n->col : r->col;
    loc.path = c->len ? ist_mstrdup(x, c->path) : NULL;
    return loc;
}

bool ist_labels_match(const struct tr_rnode *selector, const struct tr_rnode *labels)
{
    if (selector == NULL || selector->kind != TR_RNODE_MAP)
        return true;
    for (const struct tr_rnode *k = selector->head; k != NULL && k->next != NULL;
         k = k->next->next) {
        const char *want;
        const char *have;
        if (!tr_rnode_str(k->next, &want))
            want = "";
        const struct tr_rnode *hv = tr_rnode_get(labels, k->s);
        if (hv == NULL || !tr_rnode_str(hv, &have))
            return false;
        if (strcmp(want, have) != 0)
            return false;
    }
    return true;
}

const char *ist_fqdn(struct ist_ctx *x, const char *host, const char *ns)
{
    if (host == NULL)
        return NULL;
    /* Called for every host of every object: one allocation, no format. */
    size_t hl = strlen(host);
    bool short_name = memchr(host, '.', hl) == NULL && strcmp(host, "*") != 0;
    const char *n = ns ? ns : "default";
    const char *td = x->o->trust_domain ? x->o->trust_domain : "cluster.local";
    size_t nl = short_name ? strlen(n) : 0, tl = short_name ? strlen(td) : 0;
    size_t len = hl + (short_name ? 1 + nl + 5 + tl : 0);
    char *h = ist_alloc(x, len + 1, 1);
    if (h == NULL)
        return NULL;
    for (size_t i = 0; i < hl; i++)
        h[i] = (char)tolower((unsigned char)host[i]);
    if (short_name) {
        char *p = h + hl;
        *p++ = '.';
        memcpy(p, n, nl);
        p += nl;
        memcpy(p, ".svc.", 5);
        memcpy(p + 5, td, tl);
    }
    h[len] = '\0';
    return h;
}
