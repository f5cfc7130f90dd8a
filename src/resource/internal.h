/* resource/internal.h: what the resource layer's files share (not for other
 * modules).
 *
 *   yaml.c         one buffer -> documents of located nodes (libfyaml
 *                  events; input rules, anchors and aliases, budgets)
 *   resource.c     node accessors; documents -> resources; the set, its
 *                  duplicate check and lookup tables
 *   store_files.c  the files-and-directories store
 */
#ifndef TR_RESOURCE_INTERNAL_H
#define TR_RESOURCE_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "resource/resource.h"

struct tr_rset {
    struct tr_arena *arena; /* every node, string, resource and table */
    /* In load order. While building, a malloc'd vector (cap entries); once
     * sealed, a copy in the arena without the duplicates. */
    struct tr_resource **v;
    size_t n, cap;
    bool sealed;
    /* Sealed only: sorted by (group, kind, load order) and by (group, kind,
     * ns, name); both in the arena. */
    const struct tr_resource **by_kind, **by_key;
    /* Budgets, across every buffer added to the set. */
    size_t nodes;      /* nodes so far, aliases counted at their expanded size */
    size_t bytes;      /* input bytes so far */
    const char *spent; /* NULL, or the budget that ran out ("nodes", "bytes"): nothing
                        * more is read into the set */
};

/* An empty set being built. NULL when out of memory. */
struct tr_rset *res_set_new(void);

/* Reads one buffer (a file's contents; name copied) into rs: every
 * non-empty document becomes resources (res_set_add_document). Problems go
 * to d. False only when out of memory. */
bool res_set_add_buffer(struct tr_rset *rs, const char *buf, size_t len, const char *name,
                        struct tr_diags *d);

/* One document's root (NULL or null: an empty document, skipped). file is
 * the set's copy of the name. False only when out of memory. */
bool res_set_add_document(struct tr_rset *rs, const struct tr_rnode *root, const char *file,
                          uint32_t doc, struct tr_diags *d);

/* Drops duplicates (reported), builds the lookup tables. False only when
 * out of memory. */
bool res_set_seal(struct tr_rset *rs, struct tr_diags *d);

/* A finding at file:line:col (d may be NULL). */
void res_report(struct tr_diags *d, enum tr_diag_severity sev, const char *file, uint32_t line,
                uint32_t col, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Quotes s for a message: control bytes escaped, long values cut. */
const char *res_show(char *buf, size_t size, const char *s, size_t len);

#endif
