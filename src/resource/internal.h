/* resource/internal.h: what the resource layer's files share (not for other
 * modules).
 *
 *   yaml.c         one buffer -> documents of located nodes (libfyaml
 *                  events; input rules, anchors and aliases, budgets)
 *   resource.c     node accessors; documents -> resources; the set, its
 *                  duplicate check and lookup tables
 *   store_files.c  the files-and-directories store
 *
 * A watched store keeps each file's parse (struct res_parsed) and adds its
 * documents to later sets without parsing the file again: the nodes are
 * shared, by reference count, between the store and every set that took
 * them, and a set's findings are the ones a fresh parse would give.
 */
#ifndef TR_RESOURCE_INTERNAL_H
#define TR_RESOURCE_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "resource/resource.h"

/* Resources v[0, n) in the two orders a sealed set keeps, as positions in
 * v: sorting them once per parse lets every later set that takes the
 * parse (res_set_add_parsed) merge the sorted pieces instead of sorting
 * every object again at each seal. */
struct res_order {
    uint32_t *by_key;  /* (group, kind, ns, name, load order); malloc'd */
    uint8_t *same;     /* same[i]: by_key[i] has by_key[i - 1]'s key (a duplicate); malloc'd */
    uint32_t *by_kind; /* (group, kind, load order); malloc'd */
    size_t n;
};

/* A span of a set being built whose resources came, in order, from a
 * kept parse whose order says how they sort (borrowed: the set holds a
 * reference to that parse). */
struct res_run {
    size_t from, n;
    const struct res_order *order;
};

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
    size_t nodes_peak; /* most nodes charged so far (a syntax error's second parse starts over) */
    /* Recording (a res_parsed's own set only): each document added, and
     * the span of the findings list that adding it produced. */
    bool record;
    struct res_doc *docs; /* malloc'd */
    size_t n_docs, cap_docs;
    /* Parses whose nodes this set holds: released when it is freed. */
    struct res_parsed **shared; /* malloc'd */
    size_t n_shared, cap_shared;
    /* While building: the spans of v that came from kept parses, in
     * order; the rest of v is sorted when the set is sealed. */
    struct res_run *runs; /* malloc'd */
    size_t n_runs, cap_runs;
};

/* A recorded document: its root, its index in the buffer, the findings
 * [diag_from, diag_to) that res_set_add_document reported and the
 * resources [res_from, res_to) it made (in the recording set's v). */
struct res_doc {
    const struct tr_rnode *root;
    uint32_t doc;
    size_t diag_from, diag_to;
    size_t res_from, res_to;
};

/* One buffer read into an empty set of its own, kept so that later sets
 * take its documents without parsing it again. Shared by reference count
 * (atomic: sets may be freed on any thread); immutable once made. */
struct res_parsed {
    _Atomic size_t refs;
    char *text; /* the buffer (owned) */
    size_t len;
    struct tr_rset *rs;     /* its own set (recording, never sealed): owns the nodes and the
                            * checked resources (v); NULL: text only, parsed again whenever
                            * it is added */
    struct tr_diags diags;  /* every finding of reading text into an empty set, in order */
    bool parsed;            /* passed the checks before a parse (size, empty); else no documents */
    bool bad;               /* it has errors (what a watched store calls broken) */
    struct res_order order; /* rs->v's orders (by_key NULL: none, sorted at each seal) */
};

/* Reads text (len bytes, taken over: freed with the result, also on
 * failure) as name into a new res_parsed with one reference; parse false:
 * only keeps the text (rs NULL, bad false). NULL when out of memory. */
struct res_parsed *res_parsed_new(char *text, size_t len, const char *name, bool parse);
struct res_parsed *res_parsed_ref(struct res_parsed *p);
void res_parsed_release(struct res_parsed *p); /* NULL is fine */

/* Adds p's documents to rs, exactly as res_set_add_buffer(rs, p->text,
 * p->len, name, d) would (same resources, findings, budgets), without
 * parsing when p was parsed and the set's node budget has room for it;
 * rs then holds a reference to p. False only when out of memory. */
bool res_set_add_parsed(struct tr_rset *rs, struct res_parsed *p, const char *name,
                        struct tr_diags *d);

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
/* A copy of r (a recording set's resource) into rs, as from file. False
 * when out of memory. */
bool res_set_add_copy(struct tr_rset *rs, const struct tr_resource *r, const char *file);

/* Drops duplicates (reported), builds the lookup tables. The spans from
 * kept parses (runs) are not sorted again: every span is sorted (or was,
 * with its parse) and the spans are merged, which gives exactly the
 * tables of sorting everything, since both orders are total (load order
 * breaks ties). False only when out of memory. */
bool res_set_seal(struct tr_rset *rs, struct tr_diags *d);

/* v[0, n)'s orders (v[i]->index must be base + i) into o; false (o
 * empty) when out of memory. */
bool res_order_make(struct tr_resource *const *v, size_t n, size_t base, struct res_order *o);
void res_order_free(struct res_order *o);

/* Records that v[from, from + n) came, in order, from a parse sorted as
 * order says (res_set_seal merges it). False when out of memory. */
bool res_set_add_run(struct tr_rset *rs, size_t from, size_t n, const struct res_order *order);

/* A finding at file:line:col (d may be NULL). */
void res_report(struct tr_diags *d, enum tr_diag_severity sev, const char *file, uint32_t line,
                uint32_t col, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Quotes s for a message: control bytes escaped, long values cut. */
const char *res_show(char *buf, size_t size, const char *s, size_t len);

#endif
