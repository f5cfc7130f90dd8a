#include "router/sni_route.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct sni_entry {
    char *name; /* lower-case; a suffix starts with '.' */
    size_t len;
    int rule;
};

struct tr_sni_router {
    struct sni_entry *exact, *suffix;
    size_t n_exact, n_suffix;
};

static int cmp_bytes(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c != 0 ? c : al < bl ? -1 : al > bl ? 1 : 0;
}

static int entry_cmp(const void *x, const void *y)
{
    const struct sni_entry *a = x, *b = y;
    int c = cmp_bytes(a->name, a->len, b->name, b->len);
    return c != 0 ? c : (a->rule > b->rule) - (a->rule < b->rule);
}

/* Sorts, then keeps the first (smallest rule) of equal names. */
static size_t sort_unique(struct sni_entry *e, size_t n)
{
    if (n == 0)
        return 0;
    qsort(e, n, sizeof(*e), entry_cmp);
    size_t k = 1;
    for (size_t i = 1; i < n; i++) {
        if (cmp_bytes(e[i].name, e[i].len, e[k - 1].name, e[k - 1].len) == 0) {
            free(e[i].name);
            continue;
        }
        e[k++] = e[i];
    }
    return k;
}

void tr_sni_router_free(struct tr_sni_router *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n_exact; i++)
        free(r->exact[i].name);
    for (size_t i = 0; i < r->n_suffix; i++)
        free(r->suffix[i].name);
    free(r->exact);
    free(r->suffix);
    free(r);
}

static char *lower_dup(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++)
        d[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    d[len] = '\0';
    return d;
}

struct tr_sni_router *tr_sni_router_build(const struct tr_listener_cfg *l)
{
    struct tr_sni_router *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    size_t total = 0;
    for (size_t k = 0; k < l->n_sni_routes; k++)
        total += l->sni_routes[k].n_server_names;
    r->exact = calloc(total + 1, sizeof(*r->exact));
    r->suffix = calloc(total + 1, sizeof(*r->suffix));
    if (r->exact == NULL || r->suffix == NULL) {
        tr_sni_router_free(r);
        return NULL;
    }
    for (size_t k = 0; k < l->n_sni_routes; k++) {
        const struct tr_sni_route_cfg *rc = &l->sni_routes[k];
        for (size_t m = 0; m < rc->n_server_names; m++) {
            const char *s = rc->server_names[m];
            bool wild = s[0] == '*' && s[1] == '.';
            if (wild)
                s++; /* keep the dot: ".x" */
            size_t len = strlen(s);
            struct sni_entry *e = wild ? &r->suffix[r->n_suffix] : &r->exact[r->n_exact];
            e->name = lower_dup(s, len);
            if (e->name == NULL) {
                tr_sni_router_free(r);
                return NULL;
            }
            e->len = len;
            e->rule = (int)k;
            if (wild)
                r->n_suffix++;
            else
                r->n_exact++;
        }
    }
    r->n_exact = sort_unique(r->exact, r->n_exact);
    r->n_suffix = sort_unique(r->suffix, r->n_suffix);
    return r;
}

static int find(const struct sni_entry *e, size_t n, const char *name, size_t len)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_bytes(e[mid].name, e[mid].len, name, len);
        if (c == 0)
            return e[mid].rule;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int tr_sni_router_match(const struct tr_sni_router *r, const char *name, size_t len)
{
    char low[256];
    if (r == NULL || len == 0 || len > sizeof(low))
        return -1;
    for (size_t i = 0; i < len; i++)
        low[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    int best = find(r->exact, r->n_exact, low, len);
    /* "*.x" takes any name below x: a suffix ".x" after a first label of at
     * least one byte. */
    for (size_t i = 1; r->n_suffix > 0 && i < len; i++) {
        if (low[i] != '.' || low[i - 1] == '.')
            continue;
        int k = find(r->suffix, r->n_suffix, low + i, len - i);
        if (k >= 0 && (best < 0 || k < best))
            best = k;
    }
    return best;
}
