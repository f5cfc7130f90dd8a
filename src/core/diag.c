/* core/diag.c: a list of findings about a user's resources.
 *
 * Each entry's strings live in one malloc'd block that starts at msg (the
 * message first, then file, kind, ns, name and path), so an entry is freed
 * with one free(msg) and a reader never wonders who owns a string.
 */
#include "core/diag.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIAG_DEFAULT_MAX 10000u

void tr_diags_init(struct tr_diags *d)
{
    memset(d, 0, sizeof(*d));
}

void tr_diags_free(struct tr_diags *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].msg);
    free(d->v);
    size_t max = d->max;
    tr_diags_init(d);
    d->max = max; /* a reused list keeps its limit */
}

static size_t opt_len(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

/* Copies s (if any) to *o and returns the copy. */
static const char *put(char **o, const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *out = *o;
    memcpy(out, s, n);
    *o += n;
    return out;
}

void tr_diags_vadd(struct tr_diags *d, enum tr_diag_severity sev, const struct tr_diag_where *w,
                   const char *fmt, va_list ap)
{
    if (sev == TR_DIAG_ERROR)
        d->n_errors++;
    else
        d->n_warnings++;
    size_t max = d->max != 0 ? d->max : DIAG_DEFAULT_MAX;
    if (d->n >= max) {
        d->dropped++;
        return;
    }
    static const struct tr_diag_where nowhere = {0};
    if (w == NULL)
        w = &nowhere;

    va_list aq;
    va_copy(aq, ap);
    int mlen = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (mlen < 0)
        mlen = 0;
    size_t size = (size_t)mlen + 1 + opt_len(w->file) + opt_len(w->kind) + opt_len(w->ns) +
                  opt_len(w->name) + opt_len(w->path);
    char *block = malloc(size);
    if (block == NULL) {
        d->dropped++;
        return;
    }
    if (d->n == d->cap) {
        size_t ncap = d->cap != 0 ? d->cap * 2 : 16;
        if (ncap > max)
            ncap = max;
        struct tr_diag *nv = realloc(d->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            free(block);
            d->dropped++;
            return;
        }
        d->v = nv;
        d->cap = ncap;
    }
    vsnprintf(block, (size_t)mlen + 1, fmt, ap);
    char *o = block + mlen + 1;
    struct tr_diag *g = &d->v[d->n++];
    g->severity = sev;
    g->msg = block;
    g->where.file = put(&o, w->file);
    g->where.line = w->line;
    g->where.col = w->col;
    g->where.kind = put(&o, w->kind);
    g->where.ns = put(&o, w->ns);
    g->where.name = put(&o, w->name);
    g->where.path = put(&o, w->path);
}

void tr_diags_add(struct tr_diags *d, enum tr_diag_severity sev, const struct tr_diag_where *w,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tr_diags_vadd(d, sev, w, fmt, ap);
    va_end(ap);
}

/* snprintf that keeps counting past the end of out, as snprintf does. */
struct out {
    char *p;
    size_t size, len;
};

__attribute__((format(printf, 2, 3))) static void emit(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->len < o->size ? o->size - o->len : 0;
    int n = vsnprintf(room != 0 ? o->p + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

int tr_diag_format(const struct tr_diag *g, char *out, size_t size)
{
    struct out o = {out, size, 0};
    if (size != 0)
        out[0] = '\0';
    const struct tr_diag_where *w = &g->where;
    if (w->file != NULL) {
        emit(&o, "%s", w->file);
        if (w->line != 0) {
            emit(&o, ":%u", w->line);
            if (w->col != 0)
                emit(&o, ":%u", w->col);
        }
        emit(&o, ": ");
    }
    emit(&o, "%s: ", g->severity == TR_DIAG_ERROR ? "error" : "warning");
    /* "KIND NS/NAME", "KIND NAME", "KIND" or "NAME": a namespace alone
     * names nothing. */
    if (w->kind != NULL || w->name != NULL) {
        if (w->kind != NULL)
            emit(&o, "%s%s", w->kind, w->name != NULL ? " " : "");
        if (w->name != NULL)
            emit(&o, "%s%s%s", w->ns != NULL ? w->ns : "", w->ns != NULL ? "/" : "", w->name);
        emit(&o, ": ");
    }
    if (w->path != NULL && w->path[0] != '\0')
        emit(&o, "%s: ", w->path);
    emit(&o, "%s", g->msg != NULL ? g->msg : "");
    return o.len > (size_t)INT_MAX ? INT_MAX : (int)o.len;
}

/* NULL (unknown) sorts before any text. */
static int cmp_opt(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return (a != NULL) - (b != NULL);
    return strcmp(a, b);
}

static int cmp_u32(uint32_t a, uint32_t b)
{
    return (a > b) - (a < b);
}

/* Every field takes part, so equal entries are identical and the unstable
 * qsort still gives one order. Errors come before warnings at one place. */
static int diag_cmp(const void *pa, const void *pb)
{
    const struct tr_diag *a = pa, *b = pb;
    int c;
    if ((c = cmp_opt(a->where.file, b->where.file)) != 0)
        return c;
    if ((c = cmp_u32(a->where.line, b->where.line)) != 0)
        return c;
    if ((c = cmp_u32(a->where.col, b->where.col)) != 0)
        return c;
    if (a->severity != b->severity)
        return a->severity == TR_DIAG_ERROR ? -1 : 1;
    if ((c = cmp_opt(a->msg, b->msg)) != 0)
        return c;
    if ((c = cmp_opt(a->where.kind, b->where.kind)) != 0)
        return c;
    if ((c = cmp_opt(a->where.ns, b->where.ns)) != 0)
        return c;
    if ((c = cmp_opt(a->where.name, b->where.name)) != 0)
        return c;
    return cmp_opt(a->where.path, b->where.path);
}

void tr_diags_sort(struct tr_diags *d)
{
    if (d->n > 1)
        qsort(d->v, d->n, sizeof(d->v[0]), diag_cmp);
}

void tr_diags_print(struct tr_diags *d, FILE *out, bool errors_only)
{
    tr_diags_sort(d);
    for (size_t i = 0; i < d->n; i++) {
        if (errors_only && d->v[i].severity != TR_DIAG_ERROR)
            continue;
        char line[2048];
        tr_diag_format(&d->v[i], line, sizeof(line));
        fprintf(out, "%s\n", line);
    }
    if (!errors_only && d->dropped)
        fprintf(out, "(%zu more findings not shown)\n", d->dropped);
}
