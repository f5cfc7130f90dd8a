/* config/tree.c: YAML/JSON text -> a tree of nodes that carry line:column.
 *
 * libfyaml 0.7's node API exposes marks for scalars only, and its event
 * stream lets us stop at the depth and size limits before the whole input is
 * materialised, so the tree is built from events. The strictness rules live
 * here: printable UTF-8 only, no "? " complex keys (refused before libfyaml
 * sees them), one document, no aliases, no tags. Also here: errors at nodes,
 * the field path being read, and finding a node by field path (validate uses
 * it to point at the exact key or value of a loaded file).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfyaml.h>

#include "config/internal.h"
#include "core/arena.h"
#include "core/utf8.h"

/* -------------------------------------------------------------- errors */

/* Quotes s for a message: control bytes escaped, long values cut. */
const char *cfg_show(char *buf, size_t size, const char *s, size_t len, bool quotes)
{
    size_t o = 0;
    const size_t max_in = 64;
    if (quotes && o + 1 < size)
        buf[o++] = '"';
    for (size_t i = 0; i < len && i < max_in && o + 5 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    if (len > max_in && o + 4 < size) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    if (quotes && o + 1 < size)
        buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static void set_err(struct ld *ld, const char *msg)
{
    if (ld->err != NULL)
        return;
    ld->err = strdup(msg);
}

bool cfg_vfail_at(struct ld *ld, uint32_t line, uint32_t col, const char *path, const char *fmt,
                  va_list ap)
{
    char msg[CFG_ERR_MAX];
    int o;
    if (line != 0)
        o = snprintf(msg, sizeof(msg), "%s:%u:%u: ", ld->file, line, col);
    else
        o = snprintf(msg, sizeof(msg), "%s: ", ld->file);
    if (o < 0)
        o = 0;
    if (path != NULL && path[0] != '\0' && (size_t)o < sizeof(msg))
        o += snprintf(msg + o, sizeof(msg) - (size_t)o, "%s: ", path);
    if ((size_t)o < sizeof(msg))
        vsnprintf(msg + o, sizeof(msg) - (size_t)o, fmt, ap);
    set_err(ld, msg);
    return false;
}

/* Error at node n (or the top of the file) about the current field path. */
bool cfg_fail(struct ld *ld, const struct cnode *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cfg_vfail_at(ld, n != NULL ? n->line : 1, n != NULL ? n->col : 1, ld->path, fmt, ap);
    va_end(ap);
    return false;
}

/* Error without a location (file-level problems). */
bool cfg_fail_file(struct ld *ld, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cfg_vfail_at(ld, 0, 0, NULL, fmt, ap);
    va_end(ap);
    return false;
}

bool cfg_oom(struct ld *ld)
{
    return cfg_fail_file(ld, "out of memory");
}

/* ------------------------------------------------------------ field path */

size_t cfg_path_push_key(struct ld *ld, const char *key)
{
    size_t saved = ld->plen;
    int n = snprintf(ld->path + ld->plen, sizeof(ld->path) - ld->plen, "%s%s",
                     ld->plen != 0 ? "." : "", key);
    if (n > 0)
        ld->plen += (size_t)n;
    if (ld->plen >= sizeof(ld->path))
        ld->plen = sizeof(ld->path) - 1;
    return saved;
}

size_t cfg_path_push_index(struct ld *ld, size_t i)
{
    size_t saved = ld->plen;
    int n = snprintf(ld->path + ld->plen, sizeof(ld->path) - ld->plen, "[%zu]", i);
    if (n > 0)
        ld->plen += (size_t)n;
    if (ld->plen >= sizeof(ld->path))
        ld->plen = sizeof(ld->path) - 1;
    return saved;
}

void cfg_path_pop(struct ld *ld, size_t saved)
{
    ld->plen = saved;
    ld->path[saved] = '\0';
}

bool cfg_loc_here(struct ld *ld, const struct cnode *n, struct tr_cfg_loc *loc)
{
    loc->file = ld->file;
    loc->line = n->line;
    loc->col = n->col;
    loc->path = tr_arena_strndup(ld->a, ld->path, ld->plen);
    return loc->path != NULL || cfg_oom(ld);
}

/* ------------------------------------------------------- YAML -> tree */

static void diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    (void)diag;
    (void)user;
    (void)buf;
    (void)len;
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

struct tree_builder {
    struct cnode *stack[CFG_MAX_DEPTH + 1];
    size_t depth;
    struct cnode *root;
    unsigned docs;
};

static struct cnode *tree_new_node(struct ld *ld, struct tree_builder *tb, enum cnode_kind kind,
                                   struct fy_event *ev)
{
    uint32_t line, col;
    const struct fy_mark *m = fy_event_start_mark(ev);
    mark_pos(m, &line, &col);
    if (m == NULL && tb->depth > 0) {
        /* An empty value ("key:") has no mark of its own: name its key (or
         * its parent), not the top of the file. */
        const struct cnode *p = tb->stack[tb->depth - 1];
        const struct cnode *near = p->tail != NULL ? p->tail : p;
        line = near->line;
        col = near->col;
    }
    struct cnode tmp = {.line = line, .col = col};
    if (++ld->nodes > CFG_MAX_NODES) {
        cfg_fail(ld, &tmp, "more than %u YAML nodes; the file is too large", CFG_MAX_NODES);
        return NULL;
    }
    struct cnode *n = tr_arena_alloc(ld->tmp, sizeof(*n));
    if (n == NULL) {
        cfg_oom(ld);
        return NULL;
    }
    n->kind = kind;
    n->line = line;
    n->col = col;
    if (tb->depth == 0) {
        tb->root = n;
    } else {
        struct cnode *p = tb->stack[tb->depth - 1];
        if (p->tail != NULL)
            p->tail->next = n;
        else
            p->head = n;
        p->tail = n;
        p->n++;
    }
    return n;
}

/* Copies a scalar's processed text (escapes resolved, lines folded) into
 * the scratch arena. Read through a token iterator on purpose:
 * fy_token_get_text() caches the text in the token, and libfyaml 0.7.12
 * leaks that cache when the stream later fails. */
static bool scalar_copy(struct ld *ld, struct fy_token *tok, struct cnode *n)
{
    size_t len = 0;
    for (int pass = 0; pass < 2; pass++) {
        struct fy_token_iter *it = fy_token_iter_create(tok);
        if (it == NULL)
            return cfg_oom(ld);
        char *out = NULL;
        if (pass == 1) {
            out = tr_arena_alloc(ld->tmp, len + 1);
            if (out == NULL) {
                fy_token_iter_destroy(it);
                return cfg_oom(ld);
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
        if (ierr != 0) {
            return cfg_fail(ld, n, "cannot read scalar");
        }
        if (pass == 0) {
            len = o;
        } else {
            if (o != len)
                return cfg_fail(ld, n, "cannot read scalar");
            out[len] = '\0';
            n->s = out;
            n->len = len;
        }
    }
    return true;
}

/* Returns false (with the error set) to stop the stream. */
static bool tree_event(struct ld *ld, struct tree_builder *tb, struct fy_event *ev)
{
    struct fy_token *tag = NULL;
    uint32_t line, col;
    mark_pos(fy_event_start_mark(ev), &line, &col);
    struct cnode at = {.line = line, .col = col};

    switch (ev->type) {
    case FYET_DOCUMENT_START:
        if (++tb->docs > 1) {
            /* Kubernetes resources come many to a file: say what they are. */
            if (cfg_refuse_kubernetes(ld, tb->root))
                return false;
            return cfg_fail(
                ld, &at,
                "more than one YAML document; the configuration must be a single document");
        }
        return true;
    case FYET_ALIAS:
        if (at.col > 1)
            at.col--; /* marked after the "*" */
        return cfg_fail(ld, &at, "YAML aliases are not supported");
    case FYET_MAPPING_START:
        tag = ev->mapping_start.tag;
        break;
    case FYET_SEQUENCE_START:
        tag = ev->sequence_start.tag;
        break;
    case FYET_SCALAR:
        tag = ev->scalar.tag;
        break;
    case FYET_MAPPING_END:
    case FYET_SEQUENCE_END:
        if (tb->depth > 0)
            tb->depth--;
        return true;
    default:
        return true;
    }
    if (tag != NULL)
        return cfg_fail(ld, &at, "YAML tags are not supported");

    if (ev->type == FYET_SCALAR) {
        struct cnode *n = tree_new_node(ld, tb, CN_SCALAR, ev);
        if (n == NULL)
            return false;
        if (!scalar_copy(ld, ev->scalar.value, n))
            return false;
        enum fy_scalar_style style = fy_token_scalar_style(ev->scalar.value);
        n->plain = style == FYSS_PLAIN;
        /* libfyaml marks a quoted scalar at its first character; errors
         * read better pointing at the opening quote. */
        if ((style == FYSS_SINGLE_QUOTED || style == FYSS_DOUBLE_QUOTED) && n->col > 1)
            n->col--;
        return true;
    }
    if (tb->depth >= CFG_MAX_DEPTH)
        return cfg_fail(ld, &at, "nesting deeper than %u levels", CFG_MAX_DEPTH);
    struct cnode *n = tree_new_node(ld, tb, ev->type == FYET_MAPPING_START ? CN_MAP : CN_SEQ, ev);
    if (n == NULL)
        return false;
    tb->stack[tb->depth++] = n;
    return true;
}

/* A YAML stream is printable Unicode in UTF-8 (YAML 1.2 "c-printable").
 * Checked before parsing: libfyaml 0.7.12 loops forever on malformed UTF-8
 * in a "%" directive line, and no legitimate config needs other bytes. */
bool cfg_input_check(struct ld *ld, const unsigned char *p, size_t len)
{
    struct cnode at = {.line = 1, .col = 1};
    size_t i = 0;
    /* Block-context explicit keys ("? key" at the start of a line or of a
     * sequence entry) are refused before libfyaml sees them: no key of ours
     * is complex, and libfyaml 0.7 crashes on some of them (found by
     * fuzz_config, e.g. "? a:<TAB>:<TAB>"). lead: only blanks and "- " so
     * far on this line. */
    bool lead = true;
    while (i < len) {
        unsigned char c = p[i];
        if (lead) {
            bool blank_next = i + 1 >= len || p[i + 1] == ' ' || p[i + 1] == '\t' ||
                              p[i + 1] == '\n' || p[i + 1] == '\r';
            if (c == '?' && blank_next)
                return cfg_fail(ld, &at,
                                "explicit mapping keys (\"? \") are not supported; quote a value "
                                "that starts with \"? \"");
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
            return cfg_fail(ld, &at, "invalid UTF-8 (byte 0x%02x)", p[i + bad]);
        case TR_UTF8_TRUNCATED:
            return cfg_fail(ld, &at, "invalid UTF-8 (truncated sequence)");
        case TR_UTF8_BAD_SEQUENCE:
            return cfg_fail(ld, &at, "invalid UTF-8 (bad sequence)");
        }
        if (!tr_yaml_printable(cp))
            return cfg_fail(ld, &at, "character U+%04X is not allowed in YAML", (unsigned)cp);
        if (cp == '\n') {
            at.line++;
            at.col = 1;
        } else {
            at.col++;
        }
        i += n;
    }
    return true;
}

bool cfg_tree_build(struct ld *ld, const char *buf, size_t len, struct cnode **rootp)
{
    bool ok = false;
    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL; /* never print: errors are collected and reported by us */
    dcfg.output_fn = diag_discard;
    dcfg.level = FYET_ERROR;
    dcfg.colorize = false;
    struct fy_diag *diag = fy_diag_create(&dcfg);
    if (diag == NULL)
        return cfg_oom(ld);
    fy_diag_set_collect_errors(diag, true);

    struct fy_parse_cfg pcfg = {
        .flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2,
        .diag = diag,
    };
    struct fy_parser *fyp = fy_parser_create(&pcfg);
    if (fyp == NULL) {
        fy_diag_destroy(diag);
        return cfg_oom(ld);
    }
    struct tree_builder *tb = tr_arena_alloc(ld->tmp, sizeof(*tb));
    if (tb == NULL) {
        cfg_oom(ld);
        goto out;
    }
    if (fy_parser_set_string(fyp, buf, len) != 0) {
        cfg_oom(ld);
        goto out;
    }
    struct fy_event *ev;
    bool stopped = false;
    while ((ev = fy_parser_parse(fyp)) != NULL) {
        bool go = tree_event(ld, tb, ev);
        fy_parser_event_free(fyp, ev);
        if (!go) {
            stopped = true;
            break;
        }
    }
    if (stopped)
        goto out;
    if (fy_parser_get_stream_error(fyp)) {
        void *iter = NULL;
        struct fy_diag_error *de;
        while ((de = fy_diag_errors_iterate(diag, &iter)) != NULL) {
            if (de->type >= FYET_ERROR)
                break;
        }
        if (de != NULL) {
            /* libfyaml's collected positions are already 1-based. */
            struct cnode at = {.line = de->line > 0 ? (uint32_t)de->line : 1,
                               .col = de->column > 0 ? (uint32_t)de->column : 1};
            cfg_fail(ld, &at, "YAML syntax error: %s", de->msg != NULL ? de->msg : "invalid input");
        } else {
            cfg_fail_file(ld, "YAML syntax error");
        }
        goto out;
    }
    *rootp = tb->root;
    ok = true;
out:
    fy_parser_destroy(fyp);
    fy_diag_destroy(diag);
    return ok;
}

/* ------------------------------------------------------ scalar typing */

bool cfg_is_null(const struct cnode *n)
{
    if (n->kind != CN_SCALAR || !n->plain)
        return false;
    return n->len == 0 || strcmp(n->s, "~") == 0 || strcmp(n->s, "null") == 0 ||
           strcmp(n->s, "Null") == 0 || strcmp(n->s, "NULL") == 0;
}

/* "a mapping", "null", "\"text\"" for "expected X, got Y" messages. */
const char *cfg_describe(const struct cnode *n, char *buf, size_t size)
{
    if (n->kind == CN_MAP)
        return "a mapping";
    if (n->kind == CN_SEQ)
        return "a list";
    if (cfg_is_null(n))
        return "null";
    return cfg_show(buf, size, n->s, n->len, true);
}

bool cfg_expect_kind(struct ld *ld, const struct cnode *n, enum cnode_kind kind)
{
    static const char *const what[] = {"a scalar", "a mapping", "a list"};
    if (n->kind == kind && !(kind == CN_SCALAR && cfg_is_null(n)))
        return true;
    char b[96];
    return cfg_fail(ld, n, "expected %s, got %s", what[kind], cfg_describe(n, b, sizeof(b)));
}

/* ------------------------------------------- Kubernetes resources given */

bool cfg_refuse_kubernetes(struct ld *ld, const struct cnode *root)
{
    const struct cnode *api = NULL, *kind = NULL;
    if (root == NULL || root->kind != CN_MAP)
        return false;
    for (const struct cnode *k = root->head; k != NULL && k->next != NULL; k = k->next->next) {
        if (k->kind != CN_SCALAR)
            continue;
        if (strcmp(k->s, "apiVersion") == 0)
            api = k->next;
        else if (strcmp(k->s, "kind") == 0)
            kind = k->next;
    }
    if (api == NULL || kind == NULL)
        return false;
    char what[300] = "";
    if (api->kind == CN_SCALAR && kind->kind == CN_SCALAR) {
        char a[128], b[128];
        snprintf(what, sizeof(what), " (%s %s)", cfg_show(a, sizeof(a), api->s, api->len, false),
                 cfg_show(b, sizeof(b), kind->s, kind->len, false));
    }
    /* Read before any field: the path is empty, the error at the object. */
    cfg_fail(ld, root,
             "this is a Kubernetes resource%s, not a trellis proxy configuration: compile it with "
             "'trellis ctl compile DIR --workload NAMESPACE/NAME'",
             what);
    return true;
}

/* ------------------------------------------------------ finding a node */

/* The value of key in mapping m, and its key node; NULL if absent. */
static const struct cnode *map_get(const struct cnode *m, const char *key, size_t klen,
                                   const struct cnode **keyp)
{
    if (m == NULL || m->kind != CN_MAP)
        return NULL;
    for (const struct cnode *k = m->head; k != NULL && k->next != NULL; k = k->next->next) {
        if (k->kind == CN_SCALAR && k->len == klen && memcmp(k->s, key, klen) == 0) {
            *keyp = k;
            return k->next;
        }
    }
    return NULL;
}

const struct cnode *cfg_tree_find(const struct cnode *root, const char *path, bool want_key,
                                  bool *found)
{
    const struct cnode *n = root, *key = NULL;
    const char *p = path;
    *found = false;
    if (n == NULL)
        return NULL;
    while (*p != '\0') {
        const struct cnode *next = NULL;
        key = NULL;
        if (*p == '[') {
            char *end;
            unsigned long i = strtoul(p + 1, &end, 10);
            if (*end != ']' || n->kind != CN_SEQ)
                return n;
            next = n->head;
            for (unsigned long k = 0; next != NULL && k < i; k++)
                next = next->next;
            p = end + 1;
        } else {
            if (*p == '.')
                p++;
            size_t klen = strcspn(p, ".[");
            next = map_get(n, p, klen, &key);
            p += klen;
        }
        if (next == NULL)
            return n;
        n = next;
    }
    *found = true;
    return want_key && key != NULL ? key : n;
}
