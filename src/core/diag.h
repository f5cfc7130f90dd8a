/* core/diag.h: diagnostics about a user's resources (warnings and errors).
 *
 * The resource layer, the dialect compilers and `trellis ctl analyze` report
 * every finding as one tr_diag naming where it comes from: the file, line and
 * column, the resource (kind, namespace, name) and the field path inside it
 * ("spec.http[0].route[1].weight"). Nothing a user wrote is ignored without
 * one. A list owns every string of its entries (copied on add).
 */
#ifndef TR_CORE_DIAG_H
#define TR_CORE_DIAG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum tr_diag_severity {
    TR_DIAG_WARNING = 0, /* accepted; the field is ignored or approximated, and why */
    TR_DIAG_ERROR,       /* refused: the resource (or the field's object) is not used */
};

/* Where a finding points. Every member may be NULL / 0 when unknown. */
struct tr_diag_where {
    const char *file;
    uint32_t line, col; /* 1-based; 0: unknown */
    const char *kind;   /* "VirtualService" */
    const char *ns;     /* NULL for cluster-scoped resources */
    const char *name;
    const char *path; /* field path in the resource: "spec.http[0].match[1].uri" */
};

struct tr_diag {
    enum tr_diag_severity severity;
    struct tr_diag_where where; /* strings owned by the list */
    char *msg;                  /* owned by the list */
};

struct tr_diags {
    struct tr_diag *v;
    size_t n, cap;
    size_t n_errors, n_warnings;
    size_t max;     /* most entries kept (0: 10000); more are counted, not kept */
    size_t dropped; /* entries past max */
};

void tr_diags_init(struct tr_diags *d);
void tr_diags_free(struct tr_diags *d);

/* Add a finding (all strings copied). Out of memory or past max, the finding
 * is counted (n_errors / n_warnings, dropped) but not kept. */
void tr_diags_add(struct tr_diags *d, enum tr_diag_severity sev, const struct tr_diag_where *w,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void tr_diags_vadd(struct tr_diags *d, enum tr_diag_severity sev, const struct tr_diag_where *w,
                   const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

/* One line, no newline: "FILE:LINE:COL: warning: KIND NS/NAME: PATH: MSG"
 * (parts that are unknown are left out). Returns bytes written as snprintf. */
int tr_diag_format(const struct tr_diag *g, char *out, size_t size);

/* Sort by file, line, column, then severity and message, so output does not
 * depend on the order in which a compiler visited things. */
void tr_diags_sort(struct tr_diags *d);

/* Sort d, then print one formatted line per finding to out (errors only, if
 * asked), and how many were dropped past d->max (all findings only). For the
 * commands that show findings to a user. */
void tr_diags_print(struct tr_diags *d, FILE *out, bool errors_only);

#endif
