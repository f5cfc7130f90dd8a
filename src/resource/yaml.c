/* resource/yaml.c: one buffer of YAML or JSON -> documents of located nodes.
 *
 * Built from libfyaml's event stream, as config/tree.c does: events carry
 * a position for every node (0.7's document API marks only scalars), and
 * the depth and node budgets stop the stream before a hostile input is
 * materialised. The rules a document must keep (any break drops that
 * document, reported at the spot, and reading goes on with the next one):
 *
 *   - depth at most TR_RES_MAX_DEPTH, mapping keys scalars and unique;
 *   - tags only the standard ones (!!str, !!int, !!float, !!bool, !!null,
 *     !!map, !!seq, and the non-specific "!"), no %TAG directives;
 *   - no merge keys ("<<"): YAML 1.2 has none, and a key silently meaning
 *     something else from one parser to the next is worse than an error;
 *   - an alias is a new node that shares the anchored node's children, so
 *     it costs one node of memory, but it is charged its expanded size
 *     against the set's node budget: a "billion laughs" input runs out of
 *     budget, and a reader walking every node walks at most the budget.
 *     An alias to a node still open (a cycle) is refused.
 *
 * Whole-buffer checks come first and refuse the whole buffer: size,
 * printable UTF-8 (libfyaml 0.7.12 loops forever on malformed UTF-8 in a
 * directive) and no "? " explicit keys (libfyaml 0.7 crashes on some, and
 * no Kubernetes object has a complex key). A syntax error ends the buffer:
 * libfyaml cannot resume, so the documents before it are kept and the rest
 * are reported as not read.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfyaml.h>

#include "core/utf8.h"
#include "resource/internal.h"

/* An anchor of the document being read. Entries live in the set's arena;
 * the table (sorted by name, for O(log n) lookups with no hash to flood)
 * is malloc'd per buffer. */
struct anchor {
    const char *name;
    size_t len;
    const struct tr_rnode *node;
    size_t weight;   /* nodes in node's subtree, aliases expanded */
    unsigned height; /* levels of mappings and lists in it (0: a scalar), aliases expanded */
    bool open;       /* still being read: an alias to it would be a cycle */
};

struct frame {
    struct tr_rnode *node;
    struct tr_rnode *tail; /* last child */
    size_t weight;
    unsigned below;        /* the highest child's height */
    struct anchor *anchor; /* this node's anchor, closed with the node */
};

struct reader {
    struct tr_rset *rs;
    struct tr_diags *d;
    const char *file; /* the set's copy */
    bool oom, stop;   /* stop: nothing more is read from this buffer */
    /* the document being read */
    uint32_t doc;  /* its index */
    uint32_t docs; /* documents seen */
    bool skip;     /* it broke a rule: read to its end, keep nothing */
    struct frame stack[TR_RES_MAX_DEPTH];
    size_t depth;
    struct tr_rnode *root;
    struct anchor **anchors; /* sorted by (len, bytes) */
    size_t n_anchors, cap_anchors;
    /* tr_rnode_parse: documents are not resources; the first one's root is
     * kept here instead. */
    bool nodes_only;
    const struct tr_rnode *first_root;
};

enum scalar_type { ST_ANY, ST_STR, ST_INT, ST_FLOAT, ST_BOOL, ST_NULL };

/* ------------------------------------------------------------ findings */

static void fail_at(struct reader *r, uint32_t line, uint32_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail_at(struct reader *r, uint32_t line, uint32_t col, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    res_report(r->d, TR_DIAG_ERROR, r->file, line, col, "%s", msg);
}

/* The document breaks a rule: reported, and left out. */
static void doc_fail(struct reader *r, uint32_t line, uint32_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void doc_fail(struct reader *r, uint32_t line, uint32_t col, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    res_report(r->d, TR_DIAG_ERROR, r->file, line, col, "%s; document %u is left out", msg,
               r->doc + 1);
    r->skip = true;
}

static void oom(struct reader *r)
{
    if (!r->oom)
        res_report(r->d, TR_DIAG_ERROR, r->file, 0, 0, "out of memory");
    r->oom = true;
    r->stop = true;
}

static void mark_pos(const struct fy_mark *m, uint32_t *line, uint32_t *col)
{
    *line = 1;
    *col = 1;
    if (m != NULL && m->line >= 0 && m->column >= 0) {
        *line = (uint32_t)m->line + 1;
        *col = (uint32_t)m->column + 1;
    }
}

/* -------------------------------------------------- whole-buffer checks */

/* Printable UTF-8 (YAML 1.2 c-printable) and no block "? " keys. */
static bool input_check(struct reader *r, const unsigned char *p, size_t len)
{
    uint32_t line = 1, col = 1;
    bool lead = true; /* only blanks and "- " so far on this line */
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (lead) {
            bool blank_next = i + 1 >= len || p[i + 1] == ' ' || p[i + 1] == '\t' ||
                              p[i + 1] == '\n' || p[i + 1] == '\r';
            if (c == '?' && blank_next) {
                fail_at(r, line, col,
                        "explicit mapping keys (\"? \") are not supported; quote a value that "
                        "starts with \"? \"; the file is not read");
                return false;
            }
            if (!(c == ' ' || c == '\t' || (c == '-' && blank_next) || c == '\n' || c == '\r'))
                lead = false;
        }
        if (c == '\n')
            lead = true;
        uint32_t cp;
        size_t n, bad;
        switch (tr_utf8_decode(p + i, len - i, &cp, &n, &bad)) {
        case TR_UTF8_OK:
            break;
        case TR_UTF8_BAD_BYTE:
            fail_at(r, line, col, "invalid UTF-8 (byte 0x%02x); the file is not read", p[i + bad]);
            return false;
        case TR_UTF8_TRUNCATED:
            fail_at(r, line, col, "invalid UTF-8 (truncated sequence); the file is not read");
            return false;
        case TR_UTF8_BAD_SEQUENCE:
            fail_at(r, line, col, "invalid UTF-8 (bad sequence); the file is not read");
            return false;
        }
        if (!tr_yaml_printable(cp)) {
            fail_at(r, line, col, "character U+%04X is not allowed in YAML; the file is not read",
                    (unsigned)cp);
            return false;
        }
        if (cp == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
        i += n;
    }
    return true;
}

/* ------------------------------------------------------------- scalars */

/* A token's processed text (escapes resolved, lines folded) into the
 * arena, NUL-terminated. Read through a token iterator on purpose:
 * fy_token_get_text() caches the text in the token, and libfyaml 0.7.12
 * leaks that cache when the stream later fails. NULL when out of memory
 * or unreadable. */
static char *token_copy(struct reader *r, struct fy_token *tok, size_t *lenp)
{
    size_t len = 0;
    char *out = NULL;
    for (int pass = 0; pass < 2; pass++) {
        struct fy_token_iter *it = fy_token_iter_create(tok);
        if (it == NULL) {
            oom(r);
            return NULL;
        }
        if (pass == 1) {
            out = tr_arena_alloc(r->rs->arena, len + 1);
            if (out == NULL) {
                fy_token_iter_destroy(it);
                oom(r);
                return NULL;
            }
        }
        size_t o = 0;
        int ierr = 0;
        const struct fy_iter_chunk *ch = NULL;
        while ((ch = fy_token_iter_chunk_next(it, ch, &ierr)) != NULL) {
            if (pass == 1 && ch->len <= len - o) /* the text cannot change, but stay in bounds */
                memcpy(out + o, ch->str, ch->len);
            o += ch->len;
        }
        fy_token_iter_destroy(it);
        if (ierr != 0 || (pass == 1 && o != len))
            return NULL;
        len = o;
    }
    out[len] = '\0';
    *lenp = len;
    return out;
}

/* The text a tag resolves to, for the standard ones: "str", "int", ...
 * (the part after "tag:yaml.org,2002:"), "" for the non-specific "!", NULL
 * for any other. shown gets the tag as written, for messages. */
static const char *tag_standard(struct fy_token *tag, char *shown, size_t size)
{
    size_t hl = 0, sl = 0;
    const char *h = fy_tag_token_handle(tag, &hl);
    const char *s = fy_tag_token_suffix(tag, &sl);
    if (h == NULL)
        hl = 0;
    if (s == NULL)
        sl = 0;
    char hb[64], sb[128];
    snprintf(shown, size, "%s%s", res_show(hb, sizeof(hb), h != NULL ? h : "", hl),
             res_show(sb, sizeof(sb), s != NULL ? s : "", sl));
    static const char prefix[] = "tag:yaml.org,2002:";
    const size_t plen = sizeof(prefix) - 1;
    const char *name = NULL;
    size_t nlen = 0;
    if (hl == 2 && memcmp(h, "!!", 2) == 0) {
        name = s;
        nlen = sl;
    } else if (hl == 0 && sl > plen && memcmp(s, prefix, plen) == 0) {
        name = s + plen; /* verbatim: !<tag:yaml.org,2002:str> */
        nlen = sl - plen;
    } else if (hl == 1 && h[0] == '!' && sl == 0) {
        return "";
    } else {
        return NULL;
    }
    static const char *const known[] = {"str", "int", "float", "bool", "null", "map", "seq"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (nlen == strlen(known[i]) && memcmp(name, known[i], nlen) == 0)
            return known[i];
    }
    return NULL;
}

/* Checks a node's tag against its kind; false (document failed) when it is
 * not a standard tag or does not fit. *type: what a scalar's tag demands. */
static bool tag_check(struct reader *r, struct fy_token *tag, enum tr_rnode_kind kind,
                      uint32_t line, uint32_t col, enum scalar_type *type)
{
    *type = ST_ANY;
    if (tag == NULL)
        return true;
    char shown[200];
    const char *t = tag_standard(tag, shown, sizeof(shown));
    if (t == NULL) {
        doc_fail(r, line, col,
                 "YAML tag %s is not supported (only the standard !!str, !!int, !!float, !!bool, "
                 "!!null, !!map and !!seq)",
                 shown);
        return false;
    }
    bool fits;
    if (kind == TR_RNODE_MAP)
        fits = t[0] == '\0' || strcmp(t, "map") == 0;
    else if (kind == TR_RNODE_SEQ)
        fits = t[0] == '\0' || strcmp(t, "seq") == 0;
    else
        fits = strcmp(t, "map") != 0 && strcmp(t, "seq") != 0;
    if (!fits) {
        static const char *const what[] = {"a scalar", "a mapping", "a list"};
        doc_fail(r, line, col, "YAML tag %s on %s", shown, what[kind]);
        return false;
    }
    if (t[0] == '\0' || strcmp(t, "str") == 0)
        *type = ST_STR;
    else if (strcmp(t, "int") == 0)
        *type = ST_INT;
    else if (strcmp(t, "float") == 0)
        *type = ST_FLOAT;
    else if (strcmp(t, "bool") == 0)
        *type = ST_BOOL;
    else if (strcmp(t, "null") == 0)
        *type = ST_NULL;
    return true;
}

/* A tagged scalar reads as its tag says: !!str as quoted text, the others
 * as the plain value they name, which its text must be. */
static bool scalar_typed(struct reader *r, struct tr_rnode *n, enum scalar_type type)
{
    if (type == ST_ANY)
        return true;
    if (type == ST_STR) {
        n->plain = false;
        return true;
    }
    n->plain = true;
    bool b;
    int64_t i;
    double f;
    bool ok = (type == ST_INT && tr_rnode_int(n, &i)) ||
              (type == ST_FLOAT && tr_rnode_double(n, &f)) ||
              (type == ST_BOOL && tr_rnode_bool(n, &b)) || (type == ST_NULL && tr_rnode_is_null(n));
    if (!ok) {
        static const char *const tags[] = {"", "", "int", "float", "bool", "null"};
        static const char *const what[] = {"",    "", "an integer", "a number", "true or false",
                                           "null"};
        char buf[96];
        doc_fail(r, n->line, n->col, "%s is tagged !!%s but is not %s",
                 res_show(buf, sizeof(buf), n->s, n->len), tags[type], what[type]);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------- anchors */

static int anchor_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return alen < blen ? -1 : 1;
    return memcmp(a, b, alen);
}

/* Index of the first entry not below (name, len); *found if equal. */
static size_t anchor_find(const struct reader *r, const char *name, size_t len, bool *found)
{
    size_t lo = 0, hi = r->n_anchors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (anchor_cmp(r->anchors[mid]->name, r->anchors[mid]->len, name, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found =
        lo < r->n_anchors && anchor_cmp(r->anchors[lo]->name, r->anchors[lo]->len, name, len) == 0;
    return lo;
}

/* Defines (or redefines, as YAML allows) an anchor for node; NULL on failure. */
static struct anchor *anchor_define(struct reader *r, struct fy_token *tok,
                                    const struct tr_rnode *node)
{
    size_t len = 0;
    char *name = token_copy(r, tok, &len);
    if (name == NULL) {
        if (!r->oom)
            doc_fail(r, node->line, node->col, "cannot read an anchor");
        return NULL;
    }
    struct anchor *a = tr_arena_alloc(r->rs->arena, sizeof(*a));
    if (a == NULL) {
        oom(r);
        return NULL;
    }
    a->name = name;
    a->len = len;
    a->node = node;
    a->open = true;
    bool found;
    size_t at = anchor_find(r, name, len, &found);
    if (found) {
        r->anchors[at] = a;
        return a;
    }
    if (r->n_anchors >= TR_RES_MAX_ANCHORS) {
        doc_fail(r, node->line, node->col, "more than %u anchors in one document",
                 TR_RES_MAX_ANCHORS);
        return NULL;
    }
    if (r->n_anchors == r->cap_anchors) {
        size_t ncap = r->cap_anchors != 0 ? r->cap_anchors * 2 : 16;
        struct anchor **nv = realloc(r->anchors, ncap * sizeof(*nv));
        if (nv == NULL) {
            oom(r);
            return NULL;
        }
        r->anchors = nv;
        r->cap_anchors = ncap;
    }
    memmove(r->anchors + at + 1, r->anchors + at, (r->n_anchors - at) * sizeof(*r->anchors));
    r->anchors[at] = a;
    r->n_anchors++;
    return a;
}

/* --------------------------------------------------------------- nodes */

/* Charges weight nodes to the set's budget; false (and the buffer stops)
 * when it runs out. */
static bool budget(struct reader *r, size_t weight, uint32_t line, uint32_t col)
{
    if (weight <= TR_RES_MAX_NODES - r->rs->nodes) {
        r->rs->nodes += weight;
        return true;
    }
    fail_at(r, line, col,
            "more than %u YAML nodes in this snapshot (an alias counts as the nodes it repeats); "
            "the rest of the input is not read",
            TR_RES_MAX_NODES);
    r->rs->spent = "nodes";
    r->stop = true;
    return false;
}

/* A new node at (line, col), attached as the last child of the open
 * container (or as the document's root). NULL on failure. */
static struct tr_rnode *node_add(struct reader *r, enum tr_rnode_kind kind, uint32_t line,
                                 uint32_t col)
{
    struct tr_rnode *n = tr_arena_alloc(r->rs->arena, sizeof(*n));
    if (n == NULL) {
        oom(r);
        return NULL;
    }
    n->kind = kind;
    n->line = line;
    n->col = col;
    if (r->depth == 0) {
        if (r->root != NULL) { /* cannot happen: one root per document */
            doc_fail(r, line, col, "more than one root node");
            return NULL;
        }
        r->root = n;
        return n;
    }
    struct frame *p = &r->stack[r->depth - 1];
    if (p->tail != NULL)
        p->tail->next = n;
    else
        p->node->head = n;
    p->tail = n;
    p->node->n++;
    return n;
}

/* Is the next child of the open container a mapping key? */
static bool at_key(const struct reader *r)
{
    if (r->depth == 0)
        return false;
    const struct frame *p = &r->stack[r->depth - 1];
    return p->node->kind == TR_RNODE_MAP && p->node->n % 2 == 0;
}

/* A finished child (a scalar, an alias or a closed container) of weight w
 * and height h joins its parent. */
static void leaf_done(struct reader *r, size_t w, unsigned h)
{
    if (r->depth > 0) {
        struct frame *p = &r->stack[r->depth - 1];
        p->weight += w;
        if (h > p->below)
            p->below = h;
    }
}

static bool key_check(struct reader *r, const struct tr_rnode *k)
{
    if (k->kind != TR_RNODE_SCALAR) {
        doc_fail(r, k->line, k->col, "a mapping key must be a scalar, not %s",
                 k->kind == TR_RNODE_MAP ? "a mapping" : "a list");
        return false;
    }
    if (k->plain && k->len == 2 && memcmp(k->s, "<<", 2) == 0) {
        doc_fail(r, k->line, k->col,
                 "YAML merge keys (\"<<\") are not supported; write the fields out");
        return false;
    }
    return true;
}

static int key_order(const void *pa, const void *pb)
{
    const struct tr_rnode *a = *(const struct tr_rnode *const *)pa;
    const struct tr_rnode *b = *(const struct tr_rnode *const *)pb;
    int c = anchor_cmp(a->s, a->len, b->s, b->len);
    if (c != 0)
        return c;
    if (a->line != b->line)
        return a->line < b->line ? -1 : 1;
    return (a->col > b->col) - (a->col < b->col);
}

static void dup_key(struct reader *r, const struct tr_rnode *first, const struct tr_rnode *again)
{
    char buf[96];
    doc_fail(r, again->line, again->col, "duplicate key %s (first at line %u, column %u)",
             res_show(buf, sizeof(buf), again->s, again->len), first->line, first->col);
}

/* Unique keys in a closed mapping: pairwise for small ones, sorted above
 * that, so a mapping of n keys costs O(n log n) whatever its keys. */
static bool keys_unique(struct reader *r, const struct tr_rnode *map)
{
    size_t pairs = map->n / 2;
    if (pairs <= 16) {
        for (const struct tr_rnode *a = map->head; a != NULL && a->next != NULL;
             a = a->next->next) {
            for (const struct tr_rnode *b = a->next->next; b != NULL && b->next != NULL;
                 b = b->next->next) {
                if (a->len == b->len && memcmp(a->s, b->s, a->len) == 0) {
                    dup_key(r, a, b);
                    return false;
                }
            }
        }
        return true;
    }
    const struct tr_rnode **keys = malloc(pairs * sizeof(*keys));
    if (keys == NULL) {
        oom(r);
        return false;
    }
    size_t k = 0;
    for (const struct tr_rnode *a = map->head; a != NULL && a->next != NULL && k < pairs;
         a = a->next->next)
        keys[k++] = a;
    qsort(keys, k, sizeof(*keys), key_order);
    bool ok = true;
    for (size_t i = 1; i < k && ok; i++) {
        if (anchor_cmp(keys[i - 1]->s, keys[i - 1]->len, keys[i]->s, keys[i]->len) == 0) {
            /* The later one in the text is the repeat. */
            dup_key(r, keys[i - 1], keys[i]);
            ok = false;
        }
    }
    free(keys);
    return ok;
}

/* ---------------------------------------------------------- the events */

static void doc_begin(struct reader *r, struct fy_event *ev)
{
    r->doc = r->docs++;
    r->skip = false;
    r->depth = 0;
    r->root = NULL;
    r->n_anchors = 0;
    if (fy_document_state_tags_explicit(ev->document_start.document_state)) {
        uint32_t line, col;
        mark_pos(fy_event_start_mark(ev), &line, &col);
        doc_fail(r, line, col, "YAML %%TAG directives are not supported");
    }
}

static void doc_end(struct reader *r)
{
    if (r->nodes_only) {
        if (!r->skip && !r->stop && r->doc == 0)
            r->first_root = r->root;
    } else if (!r->skip && !r->stop) {
        if (!res_set_add_document(r->rs, r->root, r->file, r->doc, r->d))
            oom(r);
    }
    r->root = NULL;
    r->depth = 0;
    r->n_anchors = 0;
}

static void on_scalar(struct reader *r, struct fy_event *ev, uint32_t line, uint32_t col)
{
    enum fy_scalar_style style = fy_token_scalar_style(ev->scalar.value);
    /* libfyaml marks a quoted scalar at its first character; messages read
     * better pointing at the opening quote. */
    if ((style == FYSS_SINGLE_QUOTED || style == FYSS_DOUBLE_QUOTED) && col > 1)
        col--;
    enum scalar_type type;
    if (!tag_check(r, ev->scalar.tag, TR_RNODE_SCALAR, line, col, &type))
        return;
    if (!budget(r, 1, line, col))
        return;
    bool key = at_key(r);
    struct tr_rnode *n = node_add(r, TR_RNODE_SCALAR, line, col);
    if (n == NULL)
        return;
    n->s = token_copy(r, ev->scalar.value, &n->len);
    if (n->s == NULL) {
        if (!r->oom)
            doc_fail(r, line, col, "cannot read a scalar");
        return;
    }
    n->plain = style == FYSS_PLAIN;
    if (!scalar_typed(r, n, type))
        return;
    if (key && !key_check(r, n))
        return;
    if (ev->scalar.anchor != NULL) {
        struct anchor *a = anchor_define(r, ev->scalar.anchor, n);
        if (a == NULL)
            return;
        a->weight = 1;
        a->open = false;
    }
    leaf_done(r, 1, 0);
}

static void on_alias(struct reader *r, struct fy_event *ev, uint32_t line, uint32_t col)
{
    if (col > 1)
        col--; /* marked after the "*" */
    size_t len = 0;
    char *name = token_copy(r, ev->alias.anchor, &len);
    if (name == NULL) {
        if (!r->oom)
            doc_fail(r, line, col, "cannot read an alias");
        return;
    }
    bool found;
    size_t at = anchor_find(r, name, len, &found);
    char buf[96];
    if (!found) {
        doc_fail(r, line, col, "alias %s names no anchor before it",
                 res_show(buf, sizeof(buf), name, len));
        return;
    }
    const struct anchor *a = r->anchors[at];
    if (a->open) {
        doc_fail(r, line, col, "alias %s is inside the node it names (a cycle)",
                 res_show(buf, sizeof(buf), name, len));
        return;
    }
    /* An alias repeats its node's levels where it stands: the depth limit
     * holds for what a reader walks, not only for the text. */
    if (r->depth + a->height > TR_RES_MAX_DEPTH) {
        doc_fail(r, line, col, "nesting deeper than %u levels through alias %s", TR_RES_MAX_DEPTH,
                 res_show(buf, sizeof(buf), name, len));
        return;
    }
    if (!budget(r, a->weight, line, col))
        return;
    bool key = at_key(r);
    struct tr_rnode *n = node_add(r, a->node->kind, line, col);
    if (n == NULL)
        return;
    /* A copy that shares the children: they are complete and never change. */
    n->plain = a->node->plain;
    n->s = a->node->s;
    n->len = a->node->len;
    n->head = a->node->head;
    n->n = a->node->n;
    if (key && !key_check(r, n))
        return;
    leaf_done(r, a->weight, a->height);
}

static void on_start(struct reader *r, struct fy_event *ev, uint32_t line, uint32_t col)
{
    bool map = ev->type == FYET_MAPPING_START;
    enum tr_rnode_kind kind = map ? TR_RNODE_MAP : TR_RNODE_SEQ;
    struct fy_token *tag = map ? ev->mapping_start.tag : ev->sequence_start.tag;
    struct fy_token *anchor = map ? ev->mapping_start.anchor : ev->sequence_start.anchor;
    enum scalar_type type;
    if (!tag_check(r, tag, kind, line, col, &type))
        return;
    if (at_key(r)) {
        doc_fail(r, line, col, "a mapping key must be a scalar, not %s",
                 map ? "a mapping" : "a list");
        return;
    }
    if (r->depth >= TR_RES_MAX_DEPTH) {
        doc_fail(r, line, col, "nesting deeper than %u levels", TR_RES_MAX_DEPTH);
        return;
    }
    if (!budget(r, 1, line, col))
        return;
    struct tr_rnode *n = node_add(r, kind, line, col);
    if (n == NULL)
        return;
    struct anchor *a = NULL;
    if (anchor != NULL && (a = anchor_define(r, anchor, n)) == NULL)
        return;
    r->stack[r->depth++] = (struct frame){.node = n, .weight = 1, .anchor = a};
}

static void on_end(struct reader *r)
{
    if (r->depth == 0)
        return;
    struct frame *f = &r->stack[--r->depth];
    if (f->node->kind == TR_RNODE_MAP && !keys_unique(r, f->node))
        return;
    if (f->anchor != NULL) {
        f->anchor->weight = f->weight;
        f->anchor->height = f->below + 1;
        f->anchor->open = false;
    }
    leaf_done(r, f->weight, f->below + 1);
}

static void on_event(struct reader *r, struct fy_event *ev)
{
    uint32_t line, col;
    mark_pos(fy_event_start_mark(ev), &line, &col);
    switch (ev->type) {
    case FYET_DOCUMENT_START:
        doc_begin(r, ev);
        return;
    case FYET_DOCUMENT_END:
        doc_end(r);
        return;
    default:
        break;
    }
    if (r->skip)
        return;
    switch (ev->type) {
    case FYET_SCALAR:
        on_scalar(r, ev, line, col);
        break;
    case FYET_ALIAS:
        on_alias(r, ev, line, col);
        break;
    case FYET_MAPPING_START:
    case FYET_SEQUENCE_START:
        on_start(r, ev, line, col);
        break;
    case FYET_MAPPING_END:
    case FYET_SEQUENCE_END:
        on_end(r);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------ a buffer */

static void diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    (void)diag;
    (void)user;
    (void)buf;
    (void)len;
}

/* A quiet parser over buf (diag collects its errors); NULL when out of
 * memory. */
static struct fy_parser *parser_new(const char *buf, size_t len, struct fy_diag **diagp)
{
    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL; /* never print: errors are collected and reported by us */
    dcfg.output_fn = diag_discard;
    dcfg.level = FYET_ERROR;
    dcfg.colorize = false;
    struct fy_diag *diag = fy_diag_create(&dcfg);
    if (diag == NULL)
        return NULL;
    fy_diag_set_collect_errors(diag, true);
    struct fy_parse_cfg pcfg = {
        .flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2 | FYPCF_JSON_NONE,
        .diag = diag,
    };
    struct fy_parser *fyp = fy_parser_create(&pcfg);
    if (fyp == NULL || fy_parser_set_string(fyp, buf, len) != 0) {
        if (fyp != NULL)
            fy_parser_destroy(fyp);
        fy_diag_destroy(diag);
        return NULL;
    }
    *diagp = diag;
    return fyp;
}

/* Reads buf's documents into the set. True when libfyaml found a syntax
 * error (reported). */
static bool parse(struct reader *r, const char *buf, size_t len)
{
    struct fy_diag *diag = NULL;
    struct fy_parser *fyp = parser_new(buf, len, &diag);
    if (fyp == NULL) {
        oom(r);
        return false;
    }
    struct fy_event *ev;
    while (!r->stop && (ev = fy_parser_parse(fyp)) != NULL) {
        on_event(r, ev);
        fy_parser_event_free(fyp, ev);
    }
    bool syntax = !r->stop && fy_parser_get_stream_error(fyp);
    if (syntax) {
        void *iter = NULL;
        struct fy_diag_error *de;
        while ((de = fy_diag_errors_iterate(diag, &iter)) != NULL) {
            if (de->type >= FYET_ERROR)
                break;
        }
        /* libfyaml's collected positions are already 1-based. */
        uint32_t line = de != NULL && de->line > 0 ? (uint32_t)de->line : 1;
        uint32_t col = de != NULL && de->column > 0 ? (uint32_t)de->column : 1;
        fail_at(r, line, col, "YAML syntax error: %s; the rest of the file is not read",
                de != NULL && de->msg != NULL ? de->msg : "invalid input");
    }
    fy_parser_destroy(fyp);
    fy_diag_destroy(diag);
    return syntax;
}

/* libfyaml 0.7.12's parser refuses an empty entry that ends a sequence
 * written at its key's indentation ("key:\n-\nnext: 1"), valid YAML that
 * Istio's own test data holds; its scanner reads it right. So after a
 * syntax error the tokens are scanned, and a copy of buf with every empty
 * block entry written out as "- ~" (the same null) is returned for a second
 * parse. Lines do not move; on such a line only what follows the "-" (a
 * comment at most) moves two columns right. NULL when there is nothing to
 * write out (or no memory: the first error stands). */
static char *empty_entries_filled(const char *buf, size_t len, size_t *outlen)
{
    struct fy_diag *diag = NULL;
    struct fy_parser *fyp = parser_new(buf, len, &diag);
    if (fyp == NULL)
        return NULL;
    size_t *at = NULL, n = 0, cap = 0;
    bool ok = true;
    size_t entry = SIZE_MAX; /* offset of a "-" whose entry has no content yet */
    struct fy_token *t;
    while (ok && (t = fy_scan(fyp)) != NULL) {
        enum fy_token_type type = fy_token_get_type(t);
        const struct fy_mark *m = fy_token_start_mark(t);
        bool empty_follows = type == FYTT_BLOCK_ENTRY || type == FYTT_KEY ||
                             type == FYTT_BLOCK_END || type == FYTT_DOCUMENT_START ||
                             type == FYTT_DOCUMENT_END || type == FYTT_STREAM_END;
        if (entry != SIZE_MAX && empty_follows) {
            if (n == cap) {
                size_t ncap = cap != 0 ? cap * 2 : 16;
                size_t *nv = realloc(at, ncap * sizeof(*nv));
                ok = nv != NULL;
                if (ok) {
                    at = nv;
                    cap = ncap;
                }
            }
            if (ok)
                at[n++] = entry;
        }
        entry = SIZE_MAX;
        if (type == FYTT_BLOCK_ENTRY && m != NULL && m->input_pos < len && buf[m->input_pos] == '-')
            entry = m->input_pos;
        fy_scan_token_free(fyp, t);
    }
    if (fy_parser_get_stream_error(fyp))
        ok = false;
    fy_parser_destroy(fyp);
    fy_diag_destroy(diag);
    char *out = NULL;
    if (ok && n != 0 && (out = malloc(len + 2 * n)) != NULL) {
        size_t o = 0, from = 0;
        for (size_t i = 0; i < n; i++) {
            size_t upto = at[i] + 1; /* just after the "-" */
            memcpy(out + o, buf + from, upto - from);
            o += upto - from;
            memcpy(out + o, " ~", 2);
            o += 2;
            from = upto;
        }
        memcpy(out + o, buf + from, len - from);
        *outlen = o + len - from;
    }
    free(at);
    return out;
}

/* Moves the findings of one buffer into the caller's list. */
static void diags_move(struct tr_diags *to, struct tr_diags *from)
{
    if (to != NULL) {
        size_t kept_errors = 0, kept_warnings = 0;
        for (size_t i = 0; i < from->n; i++) {
            const struct tr_diag *g = &from->v[i];
            tr_diags_add(to, g->severity, &g->where, "%s", g->msg);
            if (g->severity == TR_DIAG_ERROR)
                kept_errors++;
            else
                kept_warnings++;
        }
        /* What the buffer's list could not keep is counted all the same. */
        to->n_errors += from->n_errors - kept_errors;
        to->n_warnings += from->n_warnings - kept_warnings;
        to->dropped += from->dropped;
    }
    tr_diags_free(from);
}

/* The checks before a buffer is parsed (the set's budgets, the size, an
 * empty buffer). PARSE: go on and parse it; DONE: reported (or empty),
 * nothing to parse. r->file is set. */
enum admit { ADMIT_PARSE, ADMIT_DONE, ADMIT_OOM };

static enum admit admit(struct reader *r, struct tr_rset *rs, const char *buf, size_t len,
                        const char *name)
{
    r->file = tr_arena_strdup(rs->arena, name != NULL ? name : "<input>");
    if (r->file == NULL) {
        res_report(r->d, TR_DIAG_ERROR, name, 0, 0, "out of memory");
        return ADMIT_OOM;
    }
    if (rs->spent != NULL) {
        fail_at(r, 0, 0, "not read: the snapshot's budget of %s is used up", rs->spent);
        return ADMIT_DONE;
    }
    if (len > TR_RES_MAX_FILE_SIZE) {
        fail_at(r, 0, 0, "%zu bytes; the limit is %u bytes; the file is not read", len,
                TR_RES_MAX_FILE_SIZE);
        return ADMIT_DONE;
    }
    if (len > TR_RES_MAX_TOTAL_BYTES - rs->bytes) {
        fail_at(r, 0, 0,
                "not read: the snapshot would be more than %u bytes (%zu read before this file)",
                TR_RES_MAX_TOTAL_BYTES, rs->bytes);
        rs->spent = "bytes";
        return ADMIT_DONE;
    }
    rs->bytes += len;
    if (len == 0)
        return ADMIT_DONE; /* an empty file holds no document */
    if (buf == NULL) {
        fail_at(r, 0, 0, "no input");
        return ADMIT_DONE;
    }
    return ADMIT_PARSE;
}

static void peak(struct tr_rset *rs)
{
    if (rs->nodes > rs->nodes_peak)
        rs->nodes_peak = rs->nodes;
}

/* An admitted buffer's documents into the set. False only when out of
 * memory. */
static bool add_admitted(struct reader *r, struct tr_rset *rs, const char *buf, size_t len,
                         struct tr_diags *d)
{
    if (!input_check(r, (const unsigned char *)buf, len))
        return true;
    /* Findings go to a list of this buffer's own, so that a second parse
     * (below) can start over from where the first one started. */
    struct tr_diags mine;
    tr_diags_init(&mine);
    if (d != NULL)
        mine.max = d->max;
    r->d = &mine;
    size_t n0 = rs->n, nodes0 = rs->nodes, docs0 = rs->n_docs;
    if (parse(r, buf, len) && !r->oom) {
        size_t flen = 0;
        char *filled = empty_entries_filled(buf, len, &flen);
        if (filled != NULL) {
            peak(rs);
            rs->n = n0; /* what the first parse added stays in the arena, unused */
            rs->nodes = nodes0;
            rs->n_docs = docs0;
            rs->spent = NULL;
            tr_diags_free(&mine);
            struct reader again = {
                .rs = rs, .d = &mine, .file = r->file, .nodes_only = r->nodes_only};
            parse(&again, filled, flen);
            free(filled);
            free(again.anchors);
            r->oom = again.oom;
            r->first_root = again.first_root;
        }
    }
    peak(rs);
    diags_move(d, &mine);
    free(r->anchors);
    r->anchors = NULL;
    return !r->oom;
}

bool res_set_add_buffer(struct tr_rset *rs, const char *buf, size_t len, const char *name,
                        struct tr_diags *d)
{
    struct reader r = {.rs = rs, .d = d};
    switch (admit(&r, rs, buf, len, name)) {
    case ADMIT_OOM:
        return false;
    case ADMIT_DONE:
        return true;
    case ADMIT_PARSE:
        break;
    }
    return add_admitted(&r, rs, buf, len, d);
}

struct tr_rset *tr_rnode_parse(const char *buf, size_t len, const char *name, struct tr_diags *d,
                               const struct tr_rnode **root)
{
    *root = NULL;
    struct tr_rset *rs = res_set_new();
    if (rs == NULL)
        return NULL;
    struct reader r = {.rs = rs, .d = d, .nodes_only = true};
    bool ok = true;
    switch (admit(&r, rs, buf, len, name)) {
    case ADMIT_OOM:
        ok = false;
        break;
    case ADMIT_DONE:
        break;
    case ADMIT_PARSE:
        ok = add_admitted(&r, rs, buf, len, d);
        break;
    }
    if (!ok || !res_set_seal(rs, d)) {
        tr_rset_free(rs);
        return NULL;
    }
    *root = r.first_root;
    return rs;
}

/* ------------------------------------------------------ kept parses */

struct res_parsed *res_parsed_new(char *text, size_t len, const char *name, bool parse_it)
{
    struct res_parsed *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        free(text);
        return NULL;
    }
    atomic_init(&p->refs, 1);
    p->text = text;
    p->len = len;
    tr_diags_init(&p->diags);
    if (!parse_it)
        return p;
    p->rs = res_set_new();
    if (p->rs == NULL) {
        res_parsed_release(p);
        return NULL;
    }
    p->rs->record = true;
    struct reader r = {.rs = p->rs, .d = &p->diags};
    bool ok = true;
    switch (admit(&r, p->rs, text, len, name)) {
    case ADMIT_OOM:
        ok = false;
        break;
    case ADMIT_DONE:
        break;
    case ADMIT_PARSE:
        p->parsed = true;
        ok = add_admitted(&r, p->rs, text, len, &p->diags);
        break;
    }
    if (!ok) {
        res_parsed_release(p);
        return NULL;
    }
    p->bad = p->diags.n_errors > 0;
    /* Sorted once here, for every set that takes this parse; without it
     * (out of memory) each seal sorts these objects. */
    if (!res_order_make(p->rs->v, p->rs->n, 0, &p->order))
        p->order = (struct res_order){0};
    return p;
}

struct res_parsed *res_parsed_ref(struct res_parsed *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void res_parsed_release(struct res_parsed *p)
{
    if (p == NULL || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    tr_rset_free(p->rs);
    tr_diags_free(&p->diags);
    res_order_free(&p->order);
    free(p->text);
    free(p);
}

/* Findings [from, to) of p's list into d, as they were reported. */
static void diags_replay(struct tr_diags *d, const struct tr_diags *from, size_t lo, size_t hi)
{
    for (size_t i = lo; d != NULL && i < hi && i < from->n; i++)
        tr_diags_add(d, from->v[i].severity, &from->v[i].where, "%s", from->v[i].msg);
}

bool res_set_add_parsed(struct tr_rset *rs, struct res_parsed *p, const char *name,
                        struct tr_diags *d)
{
    /* A parse that would meet a budget in this set (or met one on its own)
     * is done again: where it stops depends on the set. */
    if (p->rs == NULL || p->rs->spent != NULL || rs->spent != NULL ||
        p->rs->nodes_peak > TR_RES_MAX_NODES - rs->nodes)
        return res_set_add_buffer(rs, p->text, p->len, name, d);
    if (rs->n_shared == rs->cap_shared) {
        size_t ncap = rs->cap_shared != 0 ? rs->cap_shared * 2 : 8;
        struct res_parsed **nv = realloc(rs->shared, ncap * sizeof(*nv));
        if (nv == NULL) {
            res_report(d, TR_DIAG_ERROR, name, 0, 0, "out of memory");
            return false;
        }
        rs->shared = nv;
        rs->cap_shared = ncap;
    }
    struct reader r = {.rs = rs, .d = d};
    switch (admit(&r, rs, p->text, p->len, name)) {
    case ADMIT_OOM:
        return false;
    case ADMIT_DONE:
        return true;
    case ADMIT_PARSE:
        break;
    }
    if (!p->parsed) /* cannot happen (the checks that stopped it stop it here too), but if so */
        return add_admitted(&r, rs, p->text, p->len, d);
    rs->shared[rs->n_shared++] = res_parsed_ref(p);
    /* The parse's findings and each document's, in the order a parse
     * reports them, and the resources its checks made (the checks of one
     * object do not depend on the set it joins; duplicates are found when
     * the set is sealed). */
    size_t at = 0, base = rs->n, next = 0;
    for (size_t i = 0; i < p->rs->n_docs; i++) {
        const struct res_doc *doc = &p->rs->docs[i];
        diags_replay(d, &p->diags, at, doc->diag_to);
        if (doc->res_from != next)
            next = SIZE_MAX; /* not p->rs->v in order: the seal sorts these */
        else
            next = doc->res_to;
        for (size_t k = doc->res_from; k < doc->res_to; k++)
            if (!res_set_add_copy(rs, p->rs->v[k], r.file)) {
                res_report(d, TR_DIAG_ERROR, r.file, 0, 0, "out of memory");
                return false;
            }
        at = doc->diag_to;
    }
    diags_replay(d, &p->diags, at, p->diags.n);
    /* The copies are p->rs->v in order: the seal merges them as sorted at
     * the parse instead of sorting them again. */
    if (p->rs->n != 0 && next == p->rs->n && rs->n - base == p->rs->n && p->order.by_key != NULL &&
        p->order.n == p->rs->n && !res_set_add_run(rs, base, p->rs->n, &p->order)) {
        res_report(d, TR_DIAG_ERROR, r.file, 0, 0, "out of memory");
        return false;
    }
    rs->nodes += p->rs->nodes;
    peak(rs);
    return true;
}
