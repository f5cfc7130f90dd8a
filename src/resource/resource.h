/* resource/resource.h: Kubernetes-style resources in, read the way kubectl
 * reads them, for the dialect compilers.
 *
 * Three layers:
 *   tr_rnode     one located YAML/JSON node (line, column; scalars keep
 *                whether they were quoted), so every message can point at
 *                the user's text;
 *   tr_resource  one object: apiVersion split into group and version, kind,
 *                namespace, name, labels, its node tree, and where it came
 *                from (file, document index, line);
 *   tr_rset      an immutable set of resources (one snapshot of the input),
 *                with lookup by kind and by (kind, namespace, name). The
 *                compilers read only this.
 *   tr_store     where snapshots come from: files and directories today, a
 *                watched directory and the Kubernetes API later. Nothing
 *                above the store assumes files.
 *
 * Reading rules (kubectl's): a path is a file or a directory read
 * recursively (files ending in .yaml, .yml or .json, in byte order of their
 * paths); a file holds any number of `---` separated documents (empty ones
 * skipped); `kind: List` (and any kind ending in "List" with an `items`
 * list) is expanded into its items; JSON is read as YAML. Anchors and aliases
 * are expanded within a node budget. Every input is hostile: sizes, depth,
 * node counts and the number of files are bounded, and a document that
 * breaks a rule is reported (file:line:col) and left out, never half-read.
 * Each object needs apiVersion, kind and metadata.name (strings); a second
 * object with the same group, kind, namespace and name is an error naming
 * both places, and the first one is kept. Kinds nobody knows are kept: the
 * compilers decide what they mean (and warn about what they ignore).
 *
 * Ownership: an rset owns every node and string reachable from it; nodes
 * and resources stay valid until tr_rset_free(). A store owns its
 * configuration (paths), not the snapshots it hands out.
 */
#ifndef TR_RESOURCE_RESOURCE_H
#define TR_RESOURCE_RESOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/diag.h"

/* ------------------------------------------------------------ limits */

/* What one snapshot may hold. A mesh of tens of thousands of objects fits
 * well inside; a broken or hostile input fails fast instead of exhausting
 * memory or time. */
#define TR_RES_MAX_FILE_SIZE   (16u * 1024u * 1024u)  /* bytes per file or buffer */
#define TR_RES_MAX_TOTAL_BYTES (256u * 1024u * 1024u) /* bytes per snapshot */
#define TR_RES_MAX_FILES       10000u                 /* files per snapshot */
#define TR_RES_MAX_DIRS        10000u                 /* directories per snapshot */
#define TR_RES_MAX_DIR_DEPTH   32u                    /* directories below a named one */
#define TR_RES_MAX_DEPTH       64u                    /* nested mappings and lists in a document */
#define TR_RES_MAX_NODES       4000000u /* per set, an alias counted at its expanded size */
#define TR_RES_MAX_ANCHORS     10000u   /* anchors per document */

/* ------------------------------------------------------------- nodes */

enum tr_rnode_kind { TR_RNODE_SCALAR = 0, TR_RNODE_MAP, TR_RNODE_SEQ };

struct tr_rnode {
    enum tr_rnode_kind kind;
    bool plain;         /* scalar written without quotes: may mean null, a bool or a number */
    uint32_t line, col; /* 1-based */
    const char *s;      /* scalar text, NUL-terminated (may hold NULs: use len) */
    size_t len;
    const struct tr_rnode *head; /* first child: a map's children are key, value, key, value... */
    const struct tr_rnode *next; /* next sibling */
    size_t n;                    /* number of children (a map has two per entry) */
};

/* The value under key in a map; NULL when n is not a map or has no such key. */
const struct tr_rnode *tr_rnode_get(const struct tr_rnode *map, const char *key);
/* The key node of that entry (for messages that point at the key); NULL as above. */
const struct tr_rnode *tr_rnode_key(const struct tr_rnode *map, const char *key);
/* NULL, or a plain scalar "", "~", "null", "Null" or "NULL". */
bool tr_rnode_is_null(const struct tr_rnode *n);
/* A scalar's text (any scalar that is not null); false otherwise. */
bool tr_rnode_str(const struct tr_rnode *n, const char **out);
/* Plain true/false (also True, TRUE, False, FALSE); false for anything else. */
bool tr_rnode_bool(const struct tr_rnode *n, bool *out);
/* A decimal integer, plain or quoted (Kubernetes and protobuf JSON accept
 * "80" for 80), optional sign, no leading '+', no fraction, no leading zero
 * (YAML 1.1 reads 010 as 8); false when not one or out of int64 range. */
bool tr_rnode_int(const struct tr_rnode *n, int64_t *out);
/* A number (integer or decimal fraction, plain or quoted), e.g. a percentage;
 * JSON's grammar, so an exponent too; false for inf and nan. */
bool tr_rnode_double(const struct tr_rnode *n, double *out);
/* "a mapping", "a list", "null" or the scalar quoted and cut to fit. */
const char *tr_rnode_describe(const struct tr_rnode *n, char *buf, size_t size);

/* --------------------------------------------------------- resources */

struct tr_resource {
    const char *api_version;            /* as written: "networking.istio.io/v1beta1", "v1" */
    const char *group;                  /* "networking.istio.io"; "" for the core group ("v1") */
    const char *version;                /* "v1beta1" */
    const char *kind;                   /* "VirtualService" */
    const char *ns;                     /* metadata.namespace; NULL when not written or "" */
    const char *name;                   /* metadata.name */
    const struct tr_rnode *labels;      /* metadata.labels (a map) or NULL */
    const struct tr_rnode *annotations; /* metadata.annotations (a map) or NULL */
    const struct tr_rnode *obj;         /* the whole object */
    const struct tr_rnode *spec;        /* obj's "spec", or NULL */
    const char *file;                   /* as given to the store, or a buffer's name */
    uint32_t doc;                       /* 0-based document index in the file */
    uint32_t line, col;                 /* where the object starts */
    size_t index;                       /* position in the rset (load order) */
};

/* Label value of a resource; NULL when absent. */
const char *tr_resource_label(const struct tr_resource *r, const char *key);

/* ----------------------------------------------------------- the set */

struct tr_rset;

/* Parse one buffer (a file's contents) into a new set; name is the file name
 * in locations. Problems go to d (may be NULL). Returns NULL only when out of
 * memory; a set with no resources otherwise. For tests, fuzzing and stores. */
struct tr_rset *tr_rset_from_buffer(const char *buf, size_t len, const char *name,
                                    struct tr_diags *d);

/* One YAML (or JSON) document that is not a resource, such as the mesh
 * configuration a ConfigMap carries in a string: read with the same rules
 * and budgets into a set of its own that holds no resources and owns the
 * nodes (tr_rset_free). *root: the first document's root, NULL when the
 * buffer is empty or the document broke a rule (reported in d at
 * name:line:col of the buffer; later documents are read and ignored).
 * NULL only when out of memory. */
struct tr_rset *tr_rnode_parse(const char *buf, size_t len, const char *name, struct tr_diags *d,
                               const struct tr_rnode **root);
size_t tr_rset_count(const struct tr_rset *rs);
/* In load order (paths in byte order, documents in order, List items in order). */
const struct tr_resource *tr_rset_at(const struct tr_rset *rs, size_t i);
/* Every resource of (group, kind), in load order; *n set. group "" is the
 * core group. The array lives as long as the set. */
const struct tr_resource *const *tr_rset_of_kind(const struct tr_rset *rs, const char *group,
                                                 const char *kind, size_t *n);
/* One resource by (group, kind, ns, name): ns NULL matches objects written
 * without a namespace. NULL if none. */
const struct tr_resource *tr_rset_find(const struct tr_rset *rs, const char *group,
                                       const char *kind, const char *ns, const char *name);
void tr_rset_free(struct tr_rset *rs);

/* The objects that differ between two snapshots, matched by (group, kind,
 * ns, name), for the control plane's incremental recompiles: cb(arg, x,
 * NULL) for an object only in a, cb(arg, NULL, y) for one only in b,
 * cb(arg, x, y) for one in both whose node tree differs or whose place
 * differs (file or document index: some rules pick between objects by load
 * order). Where an object's text sits in its file (line, column) is not
 * compared. In (group, kind, ns, name) order; cb returning false stops the
 * walk. Returns the number of differences passed to cb. Unchanged files
 * of a watched store share their nodes, and two objects with one node
 * tree are the same object of one file read once: comparing them costs
 * one pointer test, without comparing their keys. */
size_t tr_rset_diff(const struct tr_rset *a, const struct tr_rset *b,
                    bool (*cb)(void *arg, const struct tr_resource *x, const struct tr_resource *y),
                    void *arg);

/* --------------------------------------------------------- the store */

struct tr_store;

struct tr_store_ops {
    /* A snapshot of the resources now; caller frees it. NULL only when out
     * of memory or when the source cannot be read at all (reported in d). */
    struct tr_rset *(*snapshot)(struct tr_store *s, struct tr_diags *d);
    void (*destroy)(struct tr_store *s);
    /* Optional (NULL: the store never tells). A descriptor that becomes
     * readable when a new snapshot may differ from the last, for the
     * caller's event loop; and, once it was readable, the call that
     * consumes the notification (true: something may have changed). */
    int (*change_fd)(struct tr_store *s);
    bool (*drain)(struct tr_store *s);
    /* Optional (NULL: never says). After drain: whether a source is still
     * being written (a file written to and not closed since, for at most
     * a second), so that the caller waits for the writer to finish rather
     * than reading half a file. */
    bool (*writing)(struct tr_store *s);
};

struct tr_store {
    const struct tr_store_ops *ops;
};

/* Files and directories (read recursively), read afresh at each snapshot.
 * paths are copied. NULL when out of memory. A snapshot reads the paths in
 * the order given; a snapshot is NULL (reported) when a named path cannot
 * be opened or the limits above are passed (files, directories, nesting,
 * bytes, nodes), never a partial one for those; a file inside a directory
 * that cannot be read or is over the size limit is reported and left out. */
struct tr_store *tr_store_files(const char *const *paths, size_t n);

/* The same, watched (inotify: the named paths and every directory a
 * snapshot walked), for the control plane: change_fd/drain tell when to
 * take a new snapshot. A watched store also remembers each file's last text
 * without errors: a file that now has errors (YAML that does not parse, an
 * object without apiVersion...) is reported and its last good text is read
 * in its place, so a broken edit changes nothing, names the file and line,
 * and leaves the other files' resources in force. It also keeps each
 * file's parse: a snapshot reads every file, but parses only those whose
 * text differs from the last snapshot's (compared byte for byte), and the
 * others' nodes are shared, immutable and reference-counted, with the store
 * and the other snapshots that hold them; each snapshot is still freed on
 * its own, outlives the store, and is what a fresh read gives (the same
 * resources, order, findings and budgets). Its drain also notes the
 * files that are written to (created or modified) and not yet closed,
 * moved away or deleted: writing() says whether one such file was written
 * to in the last second. Only files a snapshot would read count (not
 * editors' swap and backup files, which stay open). NULL when out of memory
 * or inotify is unavailable. */
struct tr_store *tr_store_files_watched(const char *const *paths, size_t n);

/* -1 when the store cannot tell about changes. */
static inline int tr_store_change_fd(struct tr_store *s)
{
    return s->ops->change_fd ? s->ops->change_fd(s) : -1;
}
static inline bool tr_store_drain(struct tr_store *s)
{
    return s->ops->drain ? s->ops->drain(s) : false;
}

static inline bool tr_store_writing(struct tr_store *s)
{
    return s->ops->writing ? s->ops->writing(s) : false;
}

static inline struct tr_rset *tr_store_snapshot(struct tr_store *s, struct tr_diags *d)
{
    return s->ops->snapshot(s, d);
}

static inline void tr_store_free(struct tr_store *s)
{
    if (s)
        s->ops->destroy(s);
}

#endif
