/* config/load.c: YAML/JSON text -> validated tr_config.
 *
 * Two stages. First the libfyaml event stream is turned into a small tree of
 * nodes that each carry their line:column (libfyaml 0.7's node API exposes
 * marks for scalars only, and events let us stop at the depth and size limits
 * before the whole input is materialised). Then the tree is walked against
 * the schema, filling a tr_config allocated from its own arena. The tree lives
 * in a scratch arena that is dropped when loading ends, so on success the
 * config arena holds nothing but the model, and on failure nothing survives.
 *
 * The first error ends loading; its text is "FILE:LINE:COL: PATH: message".
 */
#include "config/load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libfyaml.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <openssl/prov_ssl.h>

#include "core/arena.h"

/* Input and shape bounds: a control plane never needs more, and a broken or
 * hostile file must fail fast instead of exhausting memory. */
#define CFG_MAX_FILE_SIZE   (16u * 1024u * 1024u)
#define CFG_MAX_DEPTH       32u
#define CFG_MAX_NODES       4000000u
#define CFG_MAX_TLS         1024u
#define CFG_MAX_LISTENERS   1024u
#define CFG_MAX_TABLES      1024u
#define CFG_MAX_VHOSTS      10000u
#define CFG_MAX_DOMAINS     1000u
#define CFG_MAX_ROUTES      100000u /* per config, all tables together */
#define CFG_MAX_CLUSTERS    100000u
#define CFG_MAX_ENDPOINTS   10000u /* per cluster */
#define CFG_MAX_HEADERS     64u    /* header matches per route */
#define CFG_MAX_METHODS     32u
#define CFG_MAX_WEIGHTED    256u
#define CFG_MAX_RULES       10000u
#define CFG_MAX_LIST        1000u /* principals, paths, server_ids */
#define CFG_MAX_NAME        256u
#define CFG_MAX_STR         4096u  /* paths, regexes, file names, domains */
#define CFG_MAX_BODY        65536u /* direct_response body */
#define CFG_MAX_WEIGHT      1000000u
#define CFG_MAX_DURATION_MS (24u * 3600u * 1000u)
#define CFG_MAX_WORKERS     256u
#define CFG_H1_HEADERS_CAP  256u /* TR_H1_MAX_HEADERS_CAP in codec/h1/h1.h */

#define CFG_PATH_MAX 512u
#define CFG_ERR_MAX  1024u

/* ---------------------------------------------------------------- tree */

enum cnode_kind { CN_SCALAR, CN_MAP, CN_SEQ };

struct cnode {
    enum cnode_kind kind;
    bool plain;         /* plain (unquoted) scalar: eligible as bool/int/null */
    uint32_t line, col; /* 1-based */
    const char *s;      /* scalar text, NUL-terminated copy (may hold NULs) */
    size_t len;
    struct cnode *head, *tail, *next; /* children: map = key, value, key, ... */
    size_t n;                         /* children count (a map has 2 per pair) */
};

/* A mapping's entry for one accepted key; k and v are NULL if absent. */
struct field {
    const char *name;
    const struct cnode *k, *v;
};

/* Open-addressed name -> index table (names of listeners, clusters, ...). */
struct name_slot {
    const char *name;
    int idx;
    uint32_t line;
};

struct name_tab {
    struct name_slot *slots;
    size_t cap, n;
};

struct ld {
    struct tr_arena *tmp; /* tree and lookup tables; freed when loading ends */
    struct tr_arena *a;   /* the config's arena */
    struct tr_config *cfg;
    const char *file; /* in a */
    const char *dir;  /* config file's directory (in a), NULL: relative to cwd */
    char path[CFG_PATH_MAX];
    size_t plen;
    char *err; /* malloc'd; first error only */
    size_t nodes;
    size_t total_routes;
    struct name_tab tls_names, cluster_names, table_names, listener_names;
};

/* -------------------------------------------------------------- errors */

/* Quotes s for a message: control bytes escaped, long values cut. */
static const char *show(char *buf, size_t size, const char *s, size_t len, bool quotes)
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

__attribute__((format(printf, 5, 0))) static void
vfail_at(struct ld *ld, uint32_t line, uint32_t col, const char *path, const char *fmt, va_list ap)
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
}

/* Error at node n (or the top of the file) about the current field path. */
__attribute__((format(printf, 3, 4))) static bool fail(struct ld *ld, const struct cnode *n,
                                                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_at(ld, n != NULL ? n->line : 1, n != NULL ? n->col : 1, ld->path, fmt, ap);
    va_end(ap);
    return false;
}

/* Error without a location (file-level problems). */
__attribute__((format(printf, 2, 3))) static bool fail_file(struct ld *ld, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_at(ld, 0, 0, NULL, fmt, ap);
    va_end(ap);
    return false;
}

static bool oom(struct ld *ld)
{
    return fail_file(ld, "out of memory");
}

/* ------------------------------------------------------------ field path */

static size_t path_push_key(struct ld *ld, const char *key)
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

static size_t path_push_index(struct ld *ld, size_t i)
{
    size_t saved = ld->plen;
    int n = snprintf(ld->path + ld->plen, sizeof(ld->path) - ld->plen, "[%zu]", i);
    if (n > 0)
        ld->plen += (size_t)n;
    if (ld->plen >= sizeof(ld->path))
        ld->plen = sizeof(ld->path) - 1;
    return saved;
}

static void path_pop(struct ld *ld, size_t saved)
{
    ld->plen = saved;
    ld->path[saved] = '\0';
}

static bool loc_here(struct ld *ld, const struct cnode *n, struct tr_cfg_loc *loc)
{
    loc->file = ld->file;
    loc->line = n->line;
    loc->col = n->col;
    loc->path = tr_arena_strndup(ld->a, ld->path, ld->plen);
    return loc->path != NULL || oom(ld);
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
    mark_pos(fy_event_start_mark(ev), &line, &col);
    struct cnode tmp = {.line = line, .col = col};
    if (++ld->nodes > CFG_MAX_NODES) {
        fail(ld, &tmp, "more than %u YAML nodes; the file is too large", CFG_MAX_NODES);
        return NULL;
    }
    struct cnode *n = tr_arena_alloc(ld->tmp, sizeof(*n));
    if (n == NULL) {
        oom(ld);
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
            return oom(ld);
        char *out = NULL;
        if (pass == 1) {
            out = tr_arena_alloc(ld->tmp, len + 1);
            if (out == NULL) {
                fy_token_iter_destroy(it);
                return oom(ld);
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
            return fail(ld, n, "cannot read scalar");
        }
        if (pass == 0) {
            len = o;
        } else {
            if (o != len)
                return fail(ld, n, "cannot read scalar");
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
        if (++tb->docs > 1)
            return fail(ld, &at,
                        "more than one YAML document; the configuration must be a single document");
        return true;
    case FYET_ALIAS:
        if (at.col > 1)
            at.col--; /* marked after the "*" */
        return fail(ld, &at, "YAML aliases are not supported");
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
        return fail(ld, &at, "YAML tags are not supported");

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
        return fail(ld, &at, "nesting deeper than %u levels", CFG_MAX_DEPTH);
    struct cnode *n = tree_new_node(ld, tb, ev->type == FYET_MAPPING_START ? CN_MAP : CN_SEQ, ev);
    if (n == NULL)
        return false;
    tb->stack[tb->depth++] = n;
    return true;
}

static bool yaml_printable(uint32_t cp)
{
    return cp == 0x09 || cp == 0x0a || cp == 0x0d || (cp >= 0x20 && cp <= 0x7e) || cp == 0x85 ||
           (cp >= 0xa0 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) ||
           (cp >= 0x10000 && cp <= 0x10ffff);
}

/* A YAML stream is printable Unicode in UTF-8 (YAML 1.2 "c-printable").
 * Checked before parsing: libfyaml 0.7.12 loops forever on malformed UTF-8
 * in a "%" directive line, and no legitimate config needs other bytes. */
static bool input_check(struct ld *ld, const unsigned char *p, size_t len)
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
                return fail(ld, &at,
                            "explicit mapping keys (\"? \") are not supported; quote a value "
                            "that starts with \"? \"");
            if (!(c == ' ' || c == '\t' || (c == '-' && blank_next) || c == '\n' || c == '\r'))
                lead = false;
        }
        if (c == '\n')
            lead = true;
        uint32_t cp;
        size_t n;
        if (c < 0x80) {
            cp = c;
            n = 1;
        } else if (c >= 0xc2 && c <= 0xdf) {
            cp = c & 0x1fu;
            n = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            cp = c & 0x0fu;
            n = 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            cp = c & 0x07u;
            n = 4;
        } else {
            return fail(ld, &at, "invalid UTF-8 (byte 0x%02x)", c);
        }
        if (n > len - i)
            return fail(ld, &at, "invalid UTF-8 (truncated sequence)");
        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return fail(ld, &at, "invalid UTF-8 (byte 0x%02x)", p[i + k]);
            cp = (cp << 6) | (p[i + k] & 0x3fu);
        }
        /* Overlong forms, surrogates and values past U+10FFFF. */
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return fail(ld, &at, "invalid UTF-8 (bad sequence)");
        if (!yaml_printable(cp))
            return fail(ld, &at, "character U+%04X is not allowed in YAML", (unsigned)cp);
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

static bool tree_build(struct ld *ld, const char *buf, size_t len, struct cnode **rootp)
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
        return oom(ld);
    fy_diag_set_collect_errors(diag, true);

    struct fy_parse_cfg pcfg = {
        .flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2,
        .diag = diag,
    };
    struct fy_parser *fyp = fy_parser_create(&pcfg);
    if (fyp == NULL) {
        fy_diag_destroy(diag);
        return oom(ld);
    }
    struct tree_builder *tb = tr_arena_alloc(ld->tmp, sizeof(*tb));
    if (tb == NULL) {
        oom(ld);
        goto out;
    }
    if (fy_parser_set_string(fyp, buf, len) != 0) {
        oom(ld);
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
            fail(ld, &at, "YAML syntax error: %s", de->msg != NULL ? de->msg : "invalid input");
        } else {
            fail_file(ld, "YAML syntax error");
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

static bool is_null(const struct cnode *n)
{
    if (n->kind != CN_SCALAR || !n->plain)
        return false;
    return n->len == 0 || strcmp(n->s, "~") == 0 || strcmp(n->s, "null") == 0 ||
           strcmp(n->s, "Null") == 0 || strcmp(n->s, "NULL") == 0;
}

/* "a mapping", "null", "\"text\"" for "expected X, got Y" messages. */
static const char *describe(const struct cnode *n, char *buf, size_t size)
{
    if (n->kind == CN_MAP)
        return "a mapping";
    if (n->kind == CN_SEQ)
        return "a list";
    if (is_null(n))
        return "null";
    return show(buf, size, n->s, n->len, true);
}

static bool expect_kind(struct ld *ld, const struct cnode *n, enum cnode_kind kind)
{
    static const char *const what[] = {"a scalar", "a mapping", "a list"};
    if (n->kind == kind && !(kind == CN_SCALAR && is_null(n)))
        return true;
    char b[96];
    return fail(ld, n, "expected %s, got %s", what[kind], describe(n, b, sizeof(b)));
}

/* A string: any non-null scalar. Control characters other than tab (which
 * YAML escapes such as "\r\n" can produce) are refused unless allow_ctl:
 * these values end up in headers and logs. */
static bool text_of(struct ld *ld, const struct cnode *n, size_t maxlen, bool allow_ctl,
                    const char **out)
{
    char b[96];
    if (n->kind != CN_SCALAR || is_null(n))
        return fail(ld, n, "expected a string, got %s", describe(n, b, sizeof(b)));
    if (memchr(n->s, '\0', n->len) != NULL)
        return fail(ld, n, "string contains a NUL byte");
    for (size_t i = 0; !allow_ctl && i < n->len; i++) {
        unsigned char c = (unsigned char)n->s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(ld, n, "string contains control character 0x%02x", c);
    }
    if (n->len > maxlen)
        return fail(ld, n, "string is %zu bytes long; the limit is %zu", n->len, maxlen);
    char *s = tr_arena_strndup(ld->a, n->s, n->len);
    if (s == NULL)
        return oom(ld);
    *out = s;
    return true;
}

static bool str_of(struct ld *ld, const struct cnode *n, size_t maxlen, const char **out)
{
    return text_of(ld, n, maxlen, false, out);
}

static bool nonempty_of(struct ld *ld, const struct cnode *n, size_t maxlen, const char **out)
{
    if (!str_of(ld, n, maxlen, out))
        return false;
    if ((*out)[0] == '\0')
        return fail(ld, n, "must not be empty");
    return true;
}

/* Names: non-empty, printable, no spaces (they show up in logs and metrics). */
static bool name_of(struct ld *ld, const struct cnode *n, const char **out)
{
    if (!nonempty_of(ld, n, CFG_MAX_NAME, out))
        return false;
    for (const unsigned char *p = (const unsigned char *)*out; *p != '\0'; p++) {
        if (*p <= 0x20 || *p == 0x7f) {
            char b[96];
            return fail(ld, n, "invalid name %s: whitespace and control characters are not allowed",
                        show(b, sizeof(b), n->s, n->len, true));
        }
    }
    return true;
}

static bool bool_of(struct ld *ld, const struct cnode *n, bool *out)
{
    if (n->kind == CN_SCALAR && n->plain) {
        static const char *const t[] = {"true", "True", "TRUE"};
        static const char *const f[] = {"false", "False", "FALSE"};
        for (size_t i = 0; i < 3; i++) {
            if (strcmp(n->s, t[i]) == 0) {
                *out = true;
                return true;
            }
            if (strcmp(n->s, f[i]) == 0) {
                *out = false;
                return true;
            }
        }
    }
    char b[96];
    return fail(ld, n, "expected true or false, got %s", describe(n, b, sizeof(b)));
}

static bool u32_of(struct ld *ld, const struct cnode *n, uint32_t min, uint32_t max, uint32_t *out)
{
    char b[96];
    const char *s = n->s;
    if (n->kind != CN_SCALAR || !n->plain || is_null(n))
        return fail(ld, n, "expected an integer, got %s", describe(n, b, sizeof(b)));
    bool neg = false;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    if (*s == '\0' || strspn(s, "0123456789") != strlen(s) ||
        (size_t)(s - n->s) + strlen(s) != n->len)
        return fail(ld, n, "expected an integer, got %s", describe(n, b, sizeof(b)));
    uint64_t v = 0;
    bool big = false;
    for (; *s != '\0'; s++) {
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX) {
            big = true;
            break;
        }
    }
    if (neg && v != 0)
        big = true;
    if (big || v < min || v > max)
        return fail(ld, n, "must be between %u and %u, got %s", min, max,
                    show(b, sizeof(b), n->s, n->len, false));
    *out = (uint32_t)v;
    return true;
}

/* Durations as in Go / protobuf JSON: "250us", "100ms", "1.5s", "5m", "1h",
 * or a sum like "1m30s"; "0" alone is zero. Sub-millisecond values round up
 * so a tiny timeout never becomes 0 (which means "none" for some fields). */
static bool duration_parse(const char *s, uint64_t *out_us)
{
    static const struct {
        const char *name;
        uint64_t us;
    } units[] = {
        {"us", 1}, {"ms", 1000}, {"s", 1000000}, {"m", 60000000}, {"h", 3600000000ull},
    };
    uint64_t total = 0;
    if (strcmp(s, "0") == 0) {
        *out_us = 0;
        return true;
    }
    if (*s == '\0')
        return false;
    while (*s != '\0') {
        uint64_t ip = 0, frac = 0, scale = 1;
        size_t nd = 0;
        while (*s >= '0' && *s <= '9') {
            if (ip > 100000000000ull)
                return false;
            ip = ip * 10 + (uint64_t)(*s++ - '0');
            nd++;
        }
        if (*s == '.') {
            s++;
            while (*s >= '0' && *s <= '9') {
                if (scale < 1000000000ull) {
                    frac = frac * 10 + (uint64_t)(*s - '0');
                    scale *= 10;
                }
                s++;
                nd++;
            }
        }
        if (nd == 0)
            return false;
        size_t ulen = strspn(s, "abcdefghijklmnopqrstuvwxyz");
        size_t u;
        for (u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
            if (strlen(units[u].name) == ulen && strncmp(s, units[u].name, ulen) == 0)
                break;
        }
        if (u == sizeof(units) / sizeof(units[0]))
            return false;
        s += ulen;
        /* ip <= 1e11 and us <= 3.6e9 keep this product below 2^64. */
        uint64_t part = ip * units[u].us + frac * units[u].us / scale;
        if (ip > UINT64_MAX / units[u].us || total > UINT64_MAX - part)
            return false;
        total += part;
    }
    *out_us = total;
    return true;
}

static bool duration_of(struct ld *ld, const struct cnode *n, uint32_t min_ms, uint32_t max_ms,
                        uint32_t *out)
{
    char b[96];
    uint64_t us;
    if (n->kind != CN_SCALAR || is_null(n) || memchr(n->s, '\0', n->len) != NULL ||
        !duration_parse(n->s, &us))
        return fail(ld, n, "expected a duration such as \"100ms\", \"1.5s\", \"5m\", got %s",
                    describe(n, b, sizeof(b)));
    uint64_t ms = us / 1000 + (us % 1000 != 0);
    if (ms < min_ms || ms > max_ms)
        return fail(ld, n, "must be between %ums and %ums, got %s", min_ms, max_ms,
                    show(b, sizeof(b), n->s, n->len, true));
    *out = (uint32_t)ms;
    return true;
}

static bool enum_of(struct ld *ld, const struct cnode *n, const char *const *names, size_t count,
                    int *out)
{
    if (n->kind == CN_SCALAR && !is_null(n)) {
        for (size_t i = 0; i < count; i++) {
            if (strlen(names[i]) == n->len && memcmp(names[i], n->s, n->len) == 0) {
                *out = (int)i;
                return true;
            }
        }
    }
    char list[256];
    size_t o = 0;
    list[0] = '\0';
    for (size_t i = 0; i < count && o < sizeof(list); i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i != 0 ? ", " : "", names[i]);
    char b[96];
    return fail(ld, n, "expected one of %s, got %s", list, describe(n, b, sizeof(b)));
}

/* ------------------------------------------------------------ mappings */

/* Splits a mapping into the accepted keys; unknown or repeated keys fail. */
static bool map_fields(struct ld *ld, const struct cnode *map, const char *const *keys,
                       size_t nkeys, struct field *f)
{
    for (size_t i = 0; i < nkeys; i++)
        f[i] = (struct field){.name = keys[i]};
    if (!expect_kind(ld, map, CN_MAP))
        return false;
    for (const struct cnode *k = map->head; k != NULL && k->next != NULL; k = k->next->next) {
        char b[96];
        if (k->kind != CN_SCALAR)
            return fail(ld, k, "mapping keys must be strings, got %s", describe(k, b, sizeof(b)));
        size_t i;
        for (i = 0; i < nkeys; i++) {
            if (strlen(keys[i]) == k->len && memcmp(keys[i], k->s, k->len) == 0)
                break;
        }
        if (i == nkeys) {
            char list[512];
            size_t o = 0;
            list[0] = '\0';
            for (size_t j = 0; j < nkeys && o < sizeof(list); j++)
                o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", j != 0 ? ", " : "",
                                      keys[j]);
            size_t saved = path_push_key(ld, show(b, sizeof(b), k->s, k->len, false));
            fail(ld, k, "unknown field %s (accepted: %s)", show(b, sizeof(b), k->s, k->len, true),
                 list);
            path_pop(ld, saved);
            return false;
        }
        if (f[i].k != NULL) {
            size_t saved = path_push_key(ld, keys[i]);
            fail(ld, k, "duplicate field (first at line %u)", f[i].k->line);
            path_pop(ld, saved);
            return false;
        }
        f[i].k = k;
        f[i].v = k->next;
    }
    return true;
}

/* "missing required field" reported at the parent mapping. */
static bool need(struct ld *ld, const struct cnode *map, const struct field *f)
{
    if (f->v != NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    fail(ld, map, "missing required field");
    path_pop(ld, saved);
    return false;
}

/* Error about field f (at its key, or at the mapping if absent). */
__attribute__((format(printf, 4, 5))) static bool
fail_field(struct ld *ld, const struct cnode *map, const struct field *f, const char *fmt, ...)
{
    size_t saved = path_push_key(ld, f->name);
    const struct cnode *at = f->k != NULL ? f->k : map;
    va_list ap;
    va_start(ap, fmt);
    vfail_at(ld, at->line, at->col, ld->path, fmt, ap);
    va_end(ap);
    path_pop(ld, saved);
    return false;
}

/* Two mutually exclusive fields: blame the one written later in the file. */
static bool fail_conflict(struct ld *ld, const struct cnode *map, const struct field *a,
                          const struct field *b, const char *choices)
{
    bool b_later = b->k->line > a->k->line || (b->k->line == a->k->line && b->k->col > a->k->col);
    const struct field *later = b_later ? b : a, *earlier = b_later ? a : b;
    return fail_field(ld, map, later, "conflicts with %s; set exactly one of %s", earlier->name,
                      choices);
}

/* Each get_* leaves *out untouched (the default) when the field is absent. */
static bool get_str(struct ld *ld, const struct field *f, size_t maxlen, const char **out)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    bool ok = nonempty_of(ld, f->v, maxlen, out);
    path_pop(ld, saved);
    return ok;
}

static bool get_name(struct ld *ld, const struct field *f, const char **out)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    bool ok = name_of(ld, f->v, out);
    path_pop(ld, saved);
    return ok;
}

static bool get_bool(struct ld *ld, const struct field *f, bool *out)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    bool ok = bool_of(ld, f->v, out);
    path_pop(ld, saved);
    return ok;
}

static bool get_u32(struct ld *ld, const struct field *f, uint32_t min, uint32_t max, uint32_t *out)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    bool ok = u32_of(ld, f->v, min, max, out);
    path_pop(ld, saved);
    return ok;
}

static bool get_duration(struct ld *ld, const struct field *f, uint32_t min_ms, uint32_t max_ms,
                         uint32_t *out)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    bool ok = duration_of(ld, f->v, min_ms, max_ms, out);
    path_pop(ld, saved);
    return ok;
}

static bool get_enum(struct ld *ld, const struct field *f, const char *const *names, size_t count,
                     int *out)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    bool ok = enum_of(ld, f->v, names, count, out);
    path_pop(ld, saved);
    return ok;
}

/* A list with min..max entries; *n = 0 when absent. */
static bool list_of(struct ld *ld, const struct cnode *v, size_t min, size_t max)
{
    if (!expect_kind(ld, v, CN_SEQ))
        return false;
    if (v->n < min)
        return fail(ld, v, "must have at least %zu entr%s", min, min == 1 ? "y" : "ies");
    if (v->n > max)
        return fail(ld, v, "has %zu entries; the limit is %zu", v->n, max);
    return true;
}

typedef bool (*item_check_fn)(struct ld *ld, const struct cnode *n, const char *s);

/* A list of strings, each checked by check (may be NULL). */
static bool get_str_list(struct ld *ld, const struct field *f, size_t min, size_t max,
                         size_t maxlen, item_check_fn check, const char ***out, size_t *n_out)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    bool ok = list_of(ld, f->v, min, max);
    const char **v = NULL;
    if (ok && f->v->n > 0) {
        v = tr_arena_calloc(ld->a, f->v->n, sizeof(*v));
        if (v == NULL)
            ok = oom(ld);
    }
    size_t i = 0;
    for (const struct cnode *it = ok ? f->v->head : NULL; it != NULL; it = it->next, i++) {
        size_t s2 = path_push_index(ld, i);
        ok = nonempty_of(ld, it, maxlen, &v[i]) && (check == NULL || check(ld, it, v[i]));
        path_pop(ld, s2);
        if (!ok)
            break;
    }
    path_pop(ld, saved);
    if (ok) {
        *out = v;
        *n_out = f->v->n;
    }
    return ok;
}

/* --------------------------------------------------------- name tables */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static struct name_slot *name_slot(const struct name_tab *t, const char *s)
{
    if (t->cap == 0)
        return NULL;
    size_t i = name_hash(s) & (t->cap - 1);
    while (t->slots[i].name != NULL && strcmp(t->slots[i].name, s) != 0)
        i = (i + 1) & (t->cap - 1);
    return &t->slots[i];
}

static int name_find(const struct name_tab *t, const char *s)
{
    const struct name_slot *sl = name_slot(t, s);
    return sl != NULL && sl->name != NULL ? sl->idx : -1;
}

/* Adds name s at node n; a repeat is an error at n naming the first. */
static bool name_add(struct ld *ld, struct name_tab *t, const char *what, const char *s, int idx,
                     const struct cnode *n)
{
    if ((t->n + 1) * 2 > t->cap) {
        size_t ncap = t->cap == 0 ? 16 : t->cap * 2;
        struct name_slot *ns = tr_arena_calloc(ld->tmp, ncap, sizeof(*ns));
        if (ns == NULL)
            return oom(ld);
        struct name_tab nt = {.slots = ns, .cap = ncap, .n = t->n};
        for (size_t i = 0; i < t->cap; i++) {
            if (t->slots[i].name != NULL)
                *name_slot(&nt, t->slots[i].name) = t->slots[i];
        }
        *t = nt;
    }
    struct name_slot *sl = name_slot(t, s);
    if (sl->name != NULL) {
        char b[96];
        return fail(ld, n, "duplicate %s %s (first defined at line %u)", what,
                    show(b, sizeof(b), s, strlen(s), true), sl->line);
    }
    *sl = (struct name_slot){.name = s, .idx = idx, .line = n->line};
    t->n++;
    return true;
}

/* Resolves a reference field to an index in t. */
static bool get_ref(struct ld *ld, const struct field *f, const struct name_tab *t,
                    const char *what, int *out)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    const char *s;
    bool ok = name_of(ld, f->v, &s);
    if (ok) {
        int idx = name_find(t, s);
        if (idx < 0) {
            char b[96];
            ok = fail(ld, f->v, "unknown %s %s", what, show(b, sizeof(b), s, strlen(s), true));
        } else {
            *out = idx;
        }
    }
    path_pop(ld, saved);
    return ok;
}

/* ------------------------------------------------- values with syntax */

static bool is_tchar(unsigned char c)
{
    /* RFC 9110 token characters. */
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool check_token(struct ld *ld, const struct cnode *n, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (!is_tchar(*p)) {
            char b[96];
            return fail(ld, n, "%s is not a valid HTTP token",
                        show(b, sizeof(b), s, strlen(s), true));
        }
    }
    return true;
}

static bool check_spiffe(struct ld *ld, const struct cnode *n, const char *s)
{
    if (strncmp(s, "spiffe://", 9) == 0 && s[9] != '\0')
        return true;
    char b[96];
    return fail(ld, n, "expected a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH), got %s",
                show(b, sizeof(b), s, strlen(s), true));
}

/* Principals: "*" (any authenticated peer) or a SPIFFE ID, optionally
 * ending in "*" for a prefix match. */
static bool check_principal(struct ld *ld, const struct cnode *n, const char *s)
{
    const char *star = strchr(s, '*');
    char b[96];
    if (strcmp(s, "*") == 0)
        return true;
    if (star != NULL && star[1] != '\0')
        return fail(ld, n, "\"*\" is only allowed at the end of a principal, got %s",
                    show(b, sizeof(b), s, strlen(s), true));
    return check_spiffe(ld, n, s);
}

/* Authorization paths: "*", or "/..." with an optional trailing "*". */
static bool check_authz_path(struct ld *ld, const struct cnode *n, const char *s)
{
    const char *star = strchr(s, '*');
    char b[96];
    if (strcmp(s, "*") == 0)
        return true;
    if (s[0] != '/')
        return fail(ld, n, "paths must start with \"/\", got %s",
                    show(b, sizeof(b), s, strlen(s), true));
    if (star != NULL && star[1] != '\0')
        return fail(ld, n, "\"*\" is only allowed at the end of a path, got %s",
                    show(b, sizeof(b), s, strlen(s), true));
    return true;
}

/* Virtual host domains: "*", "*suffix", "prefix*" or exact, optional
 * ":port"; stored lower-cased since hosts compare case-insensitively. */
static bool check_domain(struct ld *ld, const struct cnode *n, const char *s)
{
    char b[96];
    size_t len = strlen(s);
    const char *star = strchr(s, '*');
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '/')
            return fail(ld, n, "invalid domain %s", show(b, sizeof(b), s, len, true));
    }
    if (star != NULL && strchr(star + 1, '*') != NULL)
        return fail(ld, n, "a domain may hold only one \"*\", got %s",
                    show(b, sizeof(b), s, len, true));
    /* The router's rule: '*' first (suffix match) or last (prefix match),
     * before any ":port". */
    const char *colon = strrchr(s, ':');
    size_t hlen = colon != NULL && colon > s && colon[-1] != ']' && strchr(s, '[') == NULL
                      ? (size_t)(colon - s)
                      : len;
    if (star != NULL && star != s && star != s + hlen - 1)
        return fail(ld, n, "\"*\" must be the first or last character of a domain, got %s",
                    show(b, sizeof(b), s, len, true));
    for (char *p = (char *)s; *p != '\0'; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    return true;
}

static bool check_regex(struct ld *ld, const struct cnode *n, const char *re, bool caseless)
{
    int code = 0;
    PCRE2_SIZE off = 0;
    /* Same options as the router (full match, byte mode), so a pattern
     * accepted here compiles there. */
    uint32_t opts = PCRE2_ANCHORED | PCRE2_ENDANCHORED | (caseless ? PCRE2_CASELESS : 0);
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, strlen(re), opts, &code, &off, NULL);
    if (c != NULL) {
        pcre2_code_free(c);
        return true;
    }
    PCRE2_UCHAR msg[256];
    if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
        snprintf((char *)msg, sizeof(msg), "error %d", code);
    return fail(ld, n, "invalid regex at offset %zu: %s", (size_t)off, (const char *)msg);
}

/* "IPv4:PORT" or "[IPv6]:PORT". Hostnames are refused: the proxy never
 * resolves names on its own. */
static bool addr_of(struct ld *ld, const struct cnode *n, bool port0_ok, struct tr_cfg_addr *out)
{
    const char *s;
    char b[96], host[64];
    if (!nonempty_of(ld, n, 128, &s))
        return false;
    const char *port;
    size_t hlen;
    bool v6 = s[0] == '[';
    if (v6) {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return fail(ld, n, "expected [IPv6]:PORT, got %s",
                        show(b, sizeof(b), s, strlen(s), true));
        hlen = (size_t)(close - s - 1);
        memcpy(host, s + 1, hlen < sizeof(host) ? hlen : 0);
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL)
            return fail(ld, n, "expected IP:PORT, got %s (missing port)",
                        show(b, sizeof(b), s, strlen(s), true));
        if (memchr(s, ':', (size_t)(colon - s)) != NULL)
            return fail(ld, n, "IPv6 addresses must be in brackets, e.g. [::1]:8080; got %s",
                        show(b, sizeof(b), s, strlen(s), true));
        hlen = (size_t)(colon - s);
        memcpy(host, s, hlen < sizeof(host) ? hlen : 0);
        port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof(host))
        return fail(ld, n, "invalid IP address in %s", show(b, sizeof(b), s, strlen(s), true));
    host[hlen] = '\0';

    size_t plen = strlen(port);
    unsigned long pnum = 0;
    if (plen == 0 || plen > 5 || strspn(port, "0123456789") != plen)
        return fail(ld, n, "invalid port in %s", show(b, sizeof(b), s, strlen(s), true));
    pnum = strtoul(port, NULL, 10);
    if (pnum > 65535 || (pnum == 0 && !port0_ok))
        return fail(ld, n, "port must be between %d and 65535 in %s", port0_ok ? 0 : 1,
                    show(b, sizeof(b), s, strlen(s), true));

    memset(&out->ss, 0, sizeof(out->ss));
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return fail(ld, n, "invalid IPv6 address %s", show(b, sizeof(b), host, hlen, true));
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)pnum);
        out->len = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return fail(ld, n, "expected an IP address, got %s (hostnames are not resolved)",
                        show(b, sizeof(b), host, hlen, true));
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)pnum);
        out->len = sizeof(*sin);
    }
    out->text = s;
    return true;
}

static bool get_addr(struct ld *ld, const struct field *f, bool port0_ok, struct tr_cfg_addr *out)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    bool ok = addr_of(ld, f->v, port0_ok, out);
    path_pop(ld, saved);
    return ok;
}

static bool addr_is_loopback(const struct tr_cfg_addr *a)
{
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
    return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
}

/* A file the proxy will read later (certificates, keys): resolved against
 * the config's directory and checked now so the error points here. */
static bool get_file(struct ld *ld, const struct field *f, bool must_read, const char **out)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    const char *s;
    bool ok = nonempty_of(ld, f->v, CFG_MAX_STR, &s);
    if (ok && s[0] != '/' && ld->dir != NULL) {
        size_t dl = strlen(ld->dir), sl = strlen(s);
        char *j = tr_arena_alloc(ld->a, dl + 1 + sl + 1);
        if (j == NULL) {
            ok = oom(ld);
        } else {
            memcpy(j, ld->dir, dl);
            j[dl] = '/';
            memcpy(j + dl + 1, s, sl + 1);
            s = j;
        }
    }
    if (ok && must_read && access(s, R_OK) != 0) {
        char b[96];
        ok = fail(ld, f->v, "cannot read %s: %s", show(b, sizeof(b), s, strlen(s), true),
                  strerror(errno));
    }
    if (ok)
        *out = s;
    path_pop(ld, saved);
    return ok;
}

/* ------------------------------------------------------------ sections */

static bool parse_node(struct ld *ld, const struct cnode *v)
{
    enum { N_ID, N_WORKLOAD, N_NAMESPACE, N_SERVICE, N_PRINCIPAL, N_N };
    static const char *const keys[N_N] = {"id", "workload", "namespace", "service", "principal"};
    struct field f[N_N];
    struct tr_node_cfg *node = &ld->cfg->node;
    if (!map_fields(ld, v, keys, N_N, f))
        return false;
    if (!get_str(ld, &f[N_ID], CFG_MAX_NAME, &node->id) ||
        !get_str(ld, &f[N_WORKLOAD], CFG_MAX_NAME, &node->workload) ||
        !get_str(ld, &f[N_NAMESPACE], CFG_MAX_NAME, &node->workload_namespace) ||
        !get_str(ld, &f[N_SERVICE], CFG_MAX_NAME, &node->service) ||
        !get_str(ld, &f[N_PRINCIPAL], CFG_MAX_STR, &node->principal))
        return false;
    if (node->principal != NULL) {
        size_t saved = path_push_key(ld, "principal");
        bool ok = check_spiffe(ld, f[N_PRINCIPAL].v, node->principal);
        path_pop(ld, saved);
        return ok;
    }
    return true;
}

static bool parse_limits(struct ld *ld, const struct cnode *v)
{
    enum { M_LINE, M_HBYTES, M_HEADERS, M_CONNS, M_BUF, M_H2, M_N };
    static const char *const keys[M_N] = {"max_request_line", "max_header_bytes", "max_headers",
                                          "max_connections",  "buffer_size",      "http2"};
    struct field f[M_N];
    struct tr_limits_cfg *l = &ld->cfg->limits;
    if (!map_fields(ld, v, keys, M_N, f) ||
        !get_u32(ld, &f[M_LINE], 64, 1048576, &l->max_request_line) ||
        !get_u32(ld, &f[M_HBYTES], 1024, 1048576, &l->max_header_bytes) ||
        !get_u32(ld, &f[M_HEADERS], 1, CFG_H1_HEADERS_CAP, &l->max_headers) ||
        !get_u32(ld, &f[M_CONNS], 1, 16777216, &l->max_connections) ||
        !get_u32(ld, &f[M_BUF], 4096, 1048576, &l->buffer_size))
        return false;
    if (l->max_request_line > l->max_header_bytes) {
        const struct field *bad = f[M_LINE].v != NULL ? &f[M_LINE] : &f[M_HBYTES];
        return fail_field(ld, v, bad, "max_request_line (%u) must not exceed max_header_bytes (%u)",
                          l->max_request_line, l->max_header_bytes);
    }
    if (f[M_H2].v != NULL) {
        enum { H2_STREAMS, H2_WIN, H2_CWIN, H2_RESETS, H2_N };
        static const char *const hkeys[H2_N] = {"max_concurrent_streams", "initial_window_size",
                                                "connection_window_size", "max_resets_per_second"};
        struct field hf[H2_N];
        size_t saved = path_push_key(ld, "http2");
        bool ok = map_fields(ld, f[M_H2].v, hkeys, H2_N, hf) &&
                  get_u32(ld, &hf[H2_STREAMS], 1, 10000, &l->h2_max_concurrent_streams) &&
                  get_u32(ld, &hf[H2_WIN], 1024, 16777215, &l->h2_initial_window) &&
                  get_u32(ld, &hf[H2_CWIN], 65535, 1u << 30, &l->h2_connection_window) &&
                  get_u32(ld, &hf[H2_RESETS], 1, 1000000, &l->h2_max_resets_per_second);
        path_pop(ld, saved);
        if (!ok)
            return false;
    }
    return true;
}

static bool parse_admin(struct ld *ld, const struct cnode *v)
{
    enum { A_ADDRESS, A_ENABLED, A_SOCKET, A_N };
    static const char *const keys[A_N] = {"address", "enabled", "socket"};
    struct field f[A_N];
    struct tr_admin_cfg *adm = &ld->cfg->admin;
    if (!map_fields(ld, v, keys, A_N, f) || !get_addr(ld, &f[A_ADDRESS], true, &adm->addr) ||
        !get_bool(ld, &f[A_ENABLED], &adm->enabled) ||
        !get_file(ld, &f[A_SOCKET], false, &adm->socket))
        return false;
    /* Checked on the resolved path: it is what bind() gets. */
    if (adm->socket != NULL && strlen(adm->socket) > TR_UNIX_PATH_MAX) {
        size_t saved = path_push_key(ld, "socket");
        fail(ld, f[A_SOCKET].v, "path is %zu bytes, a Unix socket path is at most %d",
             strlen(adm->socket), TR_UNIX_PATH_MAX);
        path_pop(ld, saved);
        return false;
    }
    if (f[A_ADDRESS].v != NULL && !addr_is_loopback(&adm->addr)) {
        size_t saved = path_push_key(ld, "address");
        fail(ld, f[A_ADDRESS].v,
             "the admin address must be loopback (127.0.0.0/8 or [::1]), got \"%s\"",
             adm->addr.text);
        path_pop(ld, saved);
        return false;
    }
    return true;
}

static bool parse_access_log(struct ld *ld, const struct cnode *v)
{
    enum { AL_ENABLED, AL_PATH, AL_N };
    static const char *const keys[AL_N] = {"enabled", "path"};
    struct field f[AL_N];
    return map_fields(ld, v, keys, AL_N, f) &&
           get_bool(ld, &f[AL_ENABLED], &ld->cfg->access_log.enabled) &&
           get_file(ld, &f[AL_PATH], false, &ld->cfg->access_log.path);
}

static bool parse_tls_ctx(struct ld *ld, const struct cnode *v, struct tr_tls_cfg *t, int idx)
{
    enum { T_NAME, T_CERT, T_KEY, T_CA, T_TD, T_MINV, T_RESUME, T_N };
    static const char *const keys[T_N] = {
        "name", "cert", "key", "ca", "trust_domain", "min_version", "session_resumption"};
    static const char *const versions[] = {"1.2", "1.3"};
    struct field f[T_N];
    int ver = 1;
    t->session_resumption = true;
    if (!map_fields(ld, v, keys, T_N, f) || !loc_here(ld, v, &t->loc))
        return false;
    for (size_t i = T_NAME; i <= T_CA; i++) {
        if (!need(ld, v, &f[i]))
            return false;
    }
    if (!get_name(ld, &f[T_NAME], &t->name))
        return false;
    size_t saved = path_push_key(ld, "name");
    bool ok = name_add(ld, &ld->tls_names, "TLS context name", t->name, idx, f[T_NAME].v);
    path_pop(ld, saved);
    if (!ok || !get_file(ld, &f[T_CERT], true, &t->cert_file) ||
        !get_file(ld, &f[T_KEY], true, &t->key_file) ||
        !get_file(ld, &f[T_CA], true, &t->ca_file) ||
        !get_str(ld, &f[T_TD], CFG_MAX_NAME, &t->trust_domain) ||
        !get_enum(ld, &f[T_MINV], versions, 2, &ver) ||
        !get_bool(ld, &f[T_RESUME], &t->session_resumption))
        return false;
    if (t->trust_domain != NULL && strpbrk(t->trust_domain, "/: \t") != NULL) {
        saved = path_push_key(ld, "trust_domain");
        char b[96];
        fail(ld, f[T_TD].v, "expected a trust domain name such as cluster.local, got %s",
             show(b, sizeof(b), t->trust_domain, strlen(t->trust_domain), true));
        path_pop(ld, saved);
        return false;
    }
    t->min_version = ver == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    return true;
}

static bool parse_endpoint(struct ld *ld, const struct cnode *v, struct tr_endpoint_cfg *e)
{
    enum { E_ADDRESS, E_WEIGHT, E_WORKLOAD, E_N };
    static const char *const keys[E_N] = {"address", "weight", "workload"};
    struct field f[E_N];
    e->weight = 1;
    return map_fields(ld, v, keys, E_N, f) && loc_here(ld, v, &e->loc) &&
           need(ld, v, &f[E_ADDRESS]) && get_addr(ld, &f[E_ADDRESS], false, &e->addr) &&
           get_u32(ld, &f[E_WEIGHT], 1, CFG_MAX_WEIGHT, &e->weight) &&
           get_str(ld, &f[E_WORKLOAD], CFG_MAX_NAME, &e->workload);
}

static bool parse_cluster(struct ld *ld, const struct cnode *v, struct tr_cluster_cfg *c, int idx)
{
    enum {
        C_NAME,
        C_SERVICE,
        C_WORKLOAD,
        C_NAMESPACE,
        C_LB,
        C_CONNECT,
        C_POOL,
        C_TLS,
        C_ENDPOINTS,
        C_PROTOCOL,
        C_HTTP2,
        C_N
    };
    static const char *const keys[C_N] = {"name",      "service",         "workload", "namespace",
                                          "lb",        "connect_timeout", "pool",     "tls",
                                          "endpoints", "protocol",        "http2"};
    static const char *const lbs[] = {"round_robin", "least_request", "random"};
    static const char *const uprotos[] = {"http1", "http2", "original"};
    struct field f[C_N];
    int lb = TR_LB_ROUND_ROBIN;
    int uproto = TR_UPROTO_HTTP1;
    c->h2_max_streams = 100;
    c->tls = -1;
    c->connect_timeout_ms = 1000;
    c->pool_idle_timeout_ms = 50000;
    c->pool_max_idle = 64;
    if (!map_fields(ld, v, keys, C_N, f) || !loc_here(ld, v, &c->loc) || !need(ld, v, &f[C_NAME]) ||
        !need(ld, v, &f[C_ENDPOINTS]) || !get_name(ld, &f[C_NAME], &c->name))
        return false;
    size_t saved = path_push_key(ld, "name");
    bool ok = name_add(ld, &ld->cluster_names, "cluster name", c->name, idx, f[C_NAME].v);
    path_pop(ld, saved);
    if (!ok || !get_str(ld, &f[C_SERVICE], CFG_MAX_NAME, &c->service) ||
        !get_str(ld, &f[C_WORKLOAD], CFG_MAX_NAME, &c->workload) ||
        !get_str(ld, &f[C_NAMESPACE], CFG_MAX_NAME, &c->workload_namespace) ||
        !get_enum(ld, &f[C_LB], lbs, 3, &lb) ||
        !get_duration(ld, &f[C_CONNECT], 1, CFG_MAX_DURATION_MS, &c->connect_timeout_ms) ||
        !get_enum(ld, &f[C_PROTOCOL], uprotos, 3, &uproto))
        return false;
    c->lb = (enum tr_lb_policy)lb;
    /* Default: a cluster that originates mTLS leads to a trellis peer (the
     * mesh hop), which speaks both protocols: keep the client's, so HTTP/1.1
     * rides pooled HTTP/1.1 (cheapest per request at low rates, see
     * docs/performance.md) and HTTP/2 and gRPC stay multiplexed HTTP/2.
     * Anything else gets HTTP/1.1 unless told. */
    if (f[C_PROTOCOL].v == NULL && f[C_TLS].v != NULL)
        uproto = TR_UPROTO_ORIGINAL;
    c->protocol = (enum tr_upstream_protocol)uproto;
    if (f[C_HTTP2].v != NULL && c->protocol == TR_UPROTO_HTTP1)
        return fail_field(ld, v, &f[C_HTTP2],
                          "HTTP/2 settings on a cluster that speaks HTTP/1.1 (protocol: %s) would "
                          "be ignored; set protocol to http2 or original, or remove them",
                          f[C_PROTOCOL].v != NULL ? "http1" : "http1, the default without tls");
    if (f[C_HTTP2].v != NULL) {
        enum { H2_STREAMS, H2_N };
        static const char *const hkeys[H2_N] = {"max_streams_per_connection"};
        struct field hf[H2_N];
        saved = path_push_key(ld, "http2");
        ok = map_fields(ld, f[C_HTTP2].v, hkeys, H2_N, hf) &&
             get_u32(ld, &hf[H2_STREAMS], 1, 10000, &c->h2_max_streams);
        path_pop(ld, saved);
        if (!ok)
            return false;
    }

    if (f[C_POOL].v != NULL) {
        enum { P_IDLE, P_MAX_IDLE, P_MAX_CONNS, P_N };
        static const char *const pkeys[P_N] = {"idle_timeout", "max_idle", "max_connections"};
        struct field pf[P_N];
        saved = path_push_key(ld, "pool");
        ok = map_fields(ld, f[C_POOL].v, pkeys, P_N, pf) &&
             get_duration(ld, &pf[P_IDLE], 1, CFG_MAX_DURATION_MS, &c->pool_idle_timeout_ms) &&
             get_u32(ld, &pf[P_MAX_IDLE], 0, 65536, &c->pool_max_idle) &&
             get_u32(ld, &pf[P_MAX_CONNS], 0, 1000000, &c->max_connections);
        path_pop(ld, saved);
        if (!ok)
            return false;
    }
    if (f[C_TLS].v != NULL) {
        enum { U_CONTEXT, U_SERVER_IDS, U_SNI, U_N };
        static const char *const ukeys[U_N] = {"context", "server_ids", "sni"};
        struct field uf[U_N];
        const struct cnode *tv = f[C_TLS].v;
        saved = path_push_key(ld, "tls");
        ok = map_fields(ld, tv, ukeys, U_N, uf) && need(ld, tv, &uf[U_CONTEXT]) &&
             get_ref(ld, &uf[U_CONTEXT], &ld->tls_names, "TLS context", &c->tls) &&
             get_str_list(ld, &uf[U_SERVER_IDS], 0, CFG_MAX_LIST, CFG_MAX_STR, check_spiffe,
                          &c->server_ids, &c->n_server_ids) &&
             get_str(ld, &uf[U_SNI], 255, &c->sni);
        if (ok && c->sni != NULL && strpbrk(c->sni, " \t/:") != NULL) {
            size_t s2 = path_push_key(ld, "sni");
            char b[96];
            ok = fail(ld, uf[U_SNI].v, "expected a host name, got %s",
                      show(b, sizeof(b), c->sni, strlen(c->sni), true));
            path_pop(ld, s2);
        }
        path_pop(ld, saved);
        if (!ok)
            return false;
    }

    const struct cnode *ev = f[C_ENDPOINTS].v;
    saved = path_push_key(ld, "endpoints");
    ok = list_of(ld, ev, 1, CFG_MAX_ENDPOINTS);
    if (ok) {
        c->endpoints = tr_arena_calloc(ld->a, ev->n, sizeof(*c->endpoints));
        if (c->endpoints == NULL)
            ok = oom(ld);
    }
    size_t i = 0;
    for (const struct cnode *it = ok ? ev->head : NULL; it != NULL; it = it->next, i++) {
        size_t s2 = path_push_index(ld, i);
        ok = parse_endpoint(ld, it, &c->endpoints[i]);
        path_pop(ld, s2);
        if (!ok)
            break;
    }
    path_pop(ld, saved);
    if (ok)
        c->n_endpoints = ev->n;
    return ok;
}

static bool parse_header_match(struct ld *ld, const struct cnode *v, struct tr_header_match_cfg *h)
{
    enum { H_NAME, H_EXACT, H_PREFIX, H_SUFFIX, H_REGEX, H_PRESENT, H_INVERT, H_N };
    static const char *const keys[H_N] = {"name",  "exact",   "prefix", "suffix",
                                          "regex", "present", "invert"};
    struct field f[H_N];
    if (!map_fields(ld, v, keys, H_N, f) || !loc_here(ld, v, &h->loc) || !need(ld, v, &f[H_NAME]))
        return false;
    size_t saved = path_push_key(ld, "name");
    bool ok = nonempty_of(ld, f[H_NAME].v, CFG_MAX_NAME, &h->name) &&
              check_token(ld, f[H_NAME].v, h->name);
    path_pop(ld, saved);
    if (!ok)
        return false;
    for (char *p = (char *)h->name; *p != '\0'; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }

    const struct field *kind = NULL;
    for (size_t i = H_EXACT; i <= H_PRESENT; i++) {
        if (f[i].v == NULL)
            continue;
        if (kind != NULL)
            return fail_conflict(ld, v, kind, &f[i], "exact, prefix, suffix, regex, present");
        kind = &f[i];
        h->kind = (enum tr_header_match_kind)(i - H_EXACT);
    }
    if (kind == NULL) {
        return fail(ld, v, "one of exact, prefix, suffix, regex, present is required");
    }
    if (h->kind == TR_HMATCH_PRESENT) {
        bool present = false;
        if (!get_bool(ld, kind, &present))
            return false;
        if (!present)
            return fail_field(ld, v, kind,
                              "must be true; use invert: true to match a missing header");
        h->value = NULL;
    } else {
        saved = path_push_key(ld, kind->name);
        /* An empty exact value is legitimate ("header present and empty"). */
        ok = str_of(ld, kind->v, CFG_MAX_STR, &h->value);
        if (ok && h->kind != TR_HMATCH_EXACT && h->value[0] == '\0')
            ok = fail(ld, kind->v, "must not be empty");
        if (ok && h->kind == TR_HMATCH_REGEX)
            ok = check_regex(ld, kind->v, h->value, false);
        path_pop(ld, saved);
        if (!ok)
            return false;
    }
    return get_bool(ld, &f[H_INVERT], &h->invert);
}

static bool parse_match(struct ld *ld, const struct cnode *v, struct tr_route_cfg *r)
{
    enum { MA_PATH, MA_METHODS, MA_HEADERS, MA_N };
    static const char *const keys[MA_N] = {"path", "methods", "headers"};
    struct field f[MA_N];
    if (!map_fields(ld, v, keys, MA_N, f))
        return false;
    if (f[MA_PATH].v != NULL) {
        enum { PA_PREFIX, PA_EXACT, PA_REGEX, PA_IGNORE_CASE, PA_N };
        static const char *const pkeys[PA_N] = {"prefix", "exact", "regex", "ignore_case"};
        struct field pf[PA_N];
        const struct cnode *pv = f[MA_PATH].v;
        size_t saved = path_push_key(ld, "path");
        bool ok = map_fields(ld, pv, pkeys, PA_N, pf) &&
                  get_bool(ld, &pf[PA_IGNORE_CASE], &r->path_ignore_case);
        const struct field *kind = NULL;
        for (size_t i = PA_PREFIX; ok && i <= PA_REGEX; i++) {
            if (pf[i].v == NULL)
                continue;
            if (kind != NULL) {
                ok = fail_conflict(ld, pv, kind, &pf[i], "prefix, exact, regex");
                break;
            }
            kind = &pf[i];
            r->path_kind = (enum tr_path_match)(i - PA_PREFIX);
        }
        if (ok && kind == NULL)
            ok = fail(ld, pv, "one of prefix, exact, regex is required");
        if (ok) {
            size_t s2 = path_push_key(ld, kind->name);
            ok = nonempty_of(ld, kind->v, CFG_MAX_STR, &r->path);
            if (ok && r->path_kind != TR_PATH_REGEX && r->path[0] != '/')
                ok = fail(ld, kind->v, "must start with \"/\"");
            if (ok && r->path_kind == TR_PATH_REGEX)
                ok = check_regex(ld, kind->v, r->path, r->path_ignore_case);
            path_pop(ld, s2);
        }
        path_pop(ld, saved);
        if (!ok)
            return false;
    }
    if (!get_str_list(ld, &f[MA_METHODS], 1, CFG_MAX_METHODS, 64, check_token, &r->methods,
                      &r->n_methods))
        return false;
    if (f[MA_HEADERS].v != NULL) {
        const struct cnode *hv = f[MA_HEADERS].v;
        size_t saved = path_push_key(ld, "headers");
        bool ok = list_of(ld, hv, 0, CFG_MAX_HEADERS);
        if (ok && hv->n > 0) {
            r->headers = tr_arena_calloc(ld->a, hv->n, sizeof(*r->headers));
            if (r->headers == NULL)
                ok = oom(ld);
        }
        size_t i = 0;
        for (const struct cnode *it = ok ? hv->head : NULL; it != NULL; it = it->next, i++) {
            size_t s2 = path_push_index(ld, i);
            ok = parse_header_match(ld, it, &r->headers[i]);
            path_pop(ld, s2);
            if (!ok)
                break;
        }
        path_pop(ld, saved);
        if (!ok)
            return false;
        r->n_headers = hv->n;
    }
    return true;
}

static bool parse_weighted(struct ld *ld, const struct cnode *v, struct tr_route_cfg *r)
{
    if (!list_of(ld, v, 1, CFG_MAX_WEIGHTED))
        return false;
    r->clusters = tr_arena_calloc(ld->a, v->n, sizeof(*r->clusters));
    if (r->clusters == NULL)
        return oom(ld);
    uint32_t total = 0;
    size_t i = 0;
    for (const struct cnode *it = v->head; it != NULL; it = it->next, i++) {
        enum { W_CLUSTER, W_WEIGHT, W_N };
        static const char *const keys[W_N] = {"cluster", "weight"};
        struct field f[W_N];
        size_t s2 = path_push_index(ld, i);
        bool ok =
            map_fields(ld, it, keys, W_N, f) && need(ld, it, &f[W_CLUSTER]) &&
            need(ld, it, &f[W_WEIGHT]) &&
            get_ref(ld, &f[W_CLUSTER], &ld->cluster_names, "cluster", &r->clusters[i].cluster) &&
            get_u32(ld, &f[W_WEIGHT], 0, CFG_MAX_WEIGHT, &r->clusters[i].weight);
        path_pop(ld, s2);
        if (!ok)
            return false;
        total += r->clusters[i].weight; /* <= 256 * 1e6: no overflow */
    }
    if (total == 0)
        return fail(ld, v, "the weights must not all be 0");
    r->n_clusters = v->n;
    r->total_weight = total;
    return true;
}

static bool parse_route(struct ld *ld, const struct cnode *v, struct tr_route_cfg *r, size_t idx)
{
    enum { RO_NAME, RO_MATCH, RO_CLUSTER, RO_WEIGHTED, RO_DIRECT, RO_TIMEOUT, RO_REWRITE, RO_N };
    static const char *const keys[RO_N] = {
        "name", "match", "cluster", "weighted_clusters", "direct_response", "timeout", "rewrite"};
    struct field f[RO_N];
    r->path_kind = TR_PATH_PREFIX;
    r->path = "/";
    if (!map_fields(ld, v, keys, RO_N, f) || !loc_here(ld, v, &r->loc) ||
        !get_name(ld, &f[RO_NAME], &r->name))
        return false;
    if (r->name == NULL) {
        char nb[32];
        snprintf(nb, sizeof(nb), "route-%zu", idx);
        if ((r->name = tr_arena_strdup(ld->a, nb)) == NULL)
            return oom(ld);
    }
    if (f[RO_MATCH].v != NULL) {
        size_t saved = path_push_key(ld, "match");
        bool ok = parse_match(ld, f[RO_MATCH].v, r);
        path_pop(ld, saved);
        if (!ok)
            return false;
    }

    const struct field *action = NULL;
    for (size_t i = RO_CLUSTER; i <= RO_DIRECT; i++) {
        if (f[i].v == NULL)
            continue;
        if (action != NULL)
            return fail_conflict(ld, v, action, &f[i],
                                 "cluster, weighted_clusters, direct_response");
        action = &f[i];
    }
    if (action == NULL)
        return fail(ld, v, "one of cluster, weighted_clusters, direct_response is required");
    bool ok;
    if (action == &f[RO_CLUSTER]) {
        r->clusters = tr_arena_calloc(ld->a, 1, sizeof(*r->clusters));
        if (r->clusters == NULL)
            return oom(ld);
        ok = get_ref(ld, action, &ld->cluster_names, "cluster", &r->clusters[0].cluster);
        r->clusters[0].weight = 1;
        r->n_clusters = 1;
        r->total_weight = 1;
        if (!ok)
            return false;
    } else if (action == &f[RO_WEIGHTED]) {
        size_t saved = path_push_key(ld, action->name);
        ok = parse_weighted(ld, action->v, r);
        path_pop(ld, saved);
    } else {
        enum { D_STATUS, D_BODY, D_N };
        static const char *const dkeys[D_N] = {"status", "body"};
        struct field df[D_N];
        uint32_t status = 0;
        size_t saved = path_push_key(ld, action->name);
        ok = map_fields(ld, action->v, dkeys, D_N, df) && need(ld, action->v, &df[D_STATUS]) &&
             get_u32(ld, &df[D_STATUS], 200, 599, &status);
        if (ok && df[D_BODY].v != NULL) {
            size_t s2 = path_push_key(ld, "body");
            ok = text_of(ld, df[D_BODY].v, CFG_MAX_BODY, true, &r->direct_body);
            path_pop(ld, s2);
        }
        r->direct_status = (uint16_t)status;
        path_pop(ld, saved);
    }
    if (!ok || !get_duration(ld, &f[RO_TIMEOUT], 0, CFG_MAX_DURATION_MS, &r->timeout_ms))
        return false;

    if (f[RO_REWRITE].v != NULL) {
        enum { RW_PREFIX, RW_HOST, RW_N };
        static const char *const wkeys[RW_N] = {"prefix", "host"};
        struct field wf[RW_N];
        if (r->direct_status != 0)
            return fail_field(ld, v, &f[RO_REWRITE], "cannot be combined with direct_response");
        size_t saved = path_push_key(ld, "rewrite");
        ok = map_fields(ld, f[RO_REWRITE].v, wkeys, RW_N, wf) &&
             get_str(ld, &wf[RW_PREFIX], CFG_MAX_STR, &r->prefix_rewrite) &&
             get_str(ld, &wf[RW_HOST], CFG_MAX_NAME, &r->host_rewrite);
        if (ok && r->prefix_rewrite != NULL) {
            size_t s2 = path_push_key(ld, "prefix");
            if (r->prefix_rewrite[0] != '/')
                ok = fail(ld, wf[RW_PREFIX].v, "must start with \"/\"");
            else if (r->path_kind == TR_PATH_REGEX)
                ok = fail(ld, wf[RW_PREFIX].v,
                          "a prefix rewrite needs a prefix or exact path match, not regex");
            path_pop(ld, s2);
        }
        if (ok && r->host_rewrite != NULL && strpbrk(r->host_rewrite, " \t/") != NULL) {
            size_t s2 = path_push_key(ld, "host");
            char b[96];
            ok = fail(ld, wf[RW_HOST].v, "expected a host name, got %s",
                      show(b, sizeof(b), r->host_rewrite, strlen(r->host_rewrite), true));
            path_pop(ld, s2);
        }
        path_pop(ld, saved);
        if (!ok)
            return false;
    }
    return true;
}

static bool parse_vhost(struct ld *ld, const struct cnode *v, struct tr_vhost_cfg *vh, size_t idx,
                        struct name_tab *domains)
{
    enum { V_NAME, V_DOMAINS, V_ROUTES, V_N };
    static const char *const keys[V_N] = {"name", "domains", "routes"};
    struct field f[V_N];
    if (!map_fields(ld, v, keys, V_N, f) || !loc_here(ld, v, &vh->loc) ||
        !need(ld, v, &f[V_DOMAINS]) || !get_name(ld, &f[V_NAME], &vh->name) ||
        !get_str_list(ld, &f[V_DOMAINS], 1, CFG_MAX_DOMAINS, 256, check_domain, &vh->domains,
                      &vh->n_domains))
        return false;
    if (vh->name == NULL) {
        char nb[32];
        snprintf(nb, sizeof(nb), "vhost-%zu", idx);
        if ((vh->name = tr_arena_strdup(ld->a, nb)) == NULL)
            return oom(ld);
    }
    /* A domain in two virtual hosts of one table would make the second
     * unreachable for that host: refuse it. */
    size_t i = 0;
    for (const struct cnode *it = f[V_DOMAINS].v->head; it != NULL; it = it->next, i++) {
        size_t saved = path_push_key(ld, "domains");
        path_push_index(ld, i);
        bool ok = name_add(ld, domains, "domain", vh->domains[i], (int)idx, it);
        path_pop(ld, saved);
        if (!ok)
            return false;
    }
    if (f[V_ROUTES].v == NULL)
        return true;
    const struct cnode *rv = f[V_ROUTES].v;
    size_t saved = path_push_key(ld, "routes");
    bool ok = list_of(ld, rv, 0, CFG_MAX_ROUTES);
    if (ok && rv->n > CFG_MAX_ROUTES - ld->total_routes)
        ok = fail(ld, rv, "more than %u routes in the configuration", CFG_MAX_ROUTES);
    if (ok && rv->n > 0) {
        ld->total_routes += rv->n;
        vh->routes = tr_arena_calloc(ld->a, rv->n, sizeof(*vh->routes));
        if (vh->routes == NULL)
            ok = oom(ld);
    }
    i = 0;
    for (const struct cnode *it = ok ? rv->head : NULL; it != NULL; it = it->next, i++) {
        size_t s2 = path_push_index(ld, i);
        ok = parse_route(ld, it, &vh->routes[i], i);
        path_pop(ld, s2);
        if (!ok)
            break;
    }
    path_pop(ld, saved);
    if (ok)
        vh->n_routes = rv->n;
    return ok;
}

static bool parse_route_table(struct ld *ld, const struct cnode *v, struct tr_route_table_cfg *t,
                              int idx)
{
    enum { RT_NAME, RT_VHOSTS, RT_N };
    static const char *const keys[RT_N] = {"name", "virtual_hosts"};
    struct field f[RT_N];
    if (!map_fields(ld, v, keys, RT_N, f) || !loc_here(ld, v, &t->loc) ||
        !need(ld, v, &f[RT_NAME]) || !need(ld, v, &f[RT_VHOSTS]) ||
        !get_name(ld, &f[RT_NAME], &t->name))
        return false;
    size_t saved = path_push_key(ld, "name");
    bool ok = name_add(ld, &ld->table_names, "route table name", t->name, idx, f[RT_NAME].v);
    path_pop(ld, saved);
    if (!ok)
        return false;
    const struct cnode *vv = f[RT_VHOSTS].v;
    struct name_tab domains = {0};
    saved = path_push_key(ld, "virtual_hosts");
    ok = list_of(ld, vv, 1, CFG_MAX_VHOSTS);
    if (ok) {
        t->vhosts = tr_arena_calloc(ld->a, vv->n, sizeof(*t->vhosts));
        if (t->vhosts == NULL)
            ok = oom(ld);
    }
    size_t i = 0;
    for (const struct cnode *it = ok ? vv->head : NULL; it != NULL; it = it->next, i++) {
        size_t s2 = path_push_index(ld, i);
        ok = parse_vhost(ld, it, &t->vhosts[i], i, &domains);
        path_pop(ld, s2);
        if (!ok)
            break;
    }
    path_pop(ld, saved);
    if (ok)
        t->n_vhosts = vv->n;
    return ok;
}

static bool parse_authz(struct ld *ld, const struct cnode *v, struct tr_listener_cfg *l)
{
    enum { AZ_RULES, AZ_N };
    static const char *const keys[AZ_N] = {"rules"};
    struct field f[AZ_N];
    if (!map_fields(ld, v, keys, AZ_N, f) || !need(ld, v, &f[AZ_RULES]))
        return false;
    const struct cnode *rv = f[AZ_RULES].v;
    size_t saved = path_push_key(ld, "rules");
    bool ok = list_of(ld, rv, 0, CFG_MAX_RULES);
    if (ok && rv->n > 0) {
        l->authz.rules = tr_arena_calloc(ld->a, rv->n, sizeof(*l->authz.rules));
        if (l->authz.rules == NULL)
            ok = oom(ld);
    }
    size_t i = 0;
    for (const struct cnode *it = ok ? rv->head : NULL; it != NULL; it = it->next, i++) {
        enum { RU_ACTION, RU_PRINCIPALS, RU_METHODS, RU_PATHS, RU_N };
        static const char *const rkeys[RU_N] = {"action", "principals", "methods", "paths"};
        static const char *const actions[] = {"ALLOW", "DENY"};
        struct field rf[RU_N];
        struct tr_authz_rule_cfg *rule = &l->authz.rules[i];
        int action = TR_AUTHZ_ALLOW;
        size_t s2 = path_push_index(ld, i);
        ok = map_fields(ld, it, rkeys, RU_N, rf) && loc_here(ld, it, &rule->loc) &&
             need(ld, it, &rf[RU_ACTION]) && get_enum(ld, &rf[RU_ACTION], actions, 2, &action) &&
             get_str_list(ld, &rf[RU_PRINCIPALS], 0, CFG_MAX_LIST, CFG_MAX_STR, check_principal,
                          &rule->principals, &rule->n_principals);
        /* Opaque TCP carries no method or path: such a rule could never
         * match, which for ALLOW silently denies everything. */
        if (ok && l->protocol == TR_LPROTO_TCP) {
            for (size_t k = RU_METHODS; k <= RU_PATHS; k++) {
                if (rf[k].v != NULL) {
                    ok = fail_field(ld, it, &rf[k],
                                    "not allowed on a tcp listener (no HTTP requests to match)");
                    break;
                }
            }
        }
        ok = ok &&
             get_str_list(ld, &rf[RU_METHODS], 0, CFG_MAX_METHODS, 64, check_token, &rule->methods,
                          &rule->n_methods) &&
             get_str_list(ld, &rf[RU_PATHS], 0, CFG_MAX_LIST, CFG_MAX_STR, check_authz_path,
                          &rule->paths, &rule->n_paths);
        rule->action = (enum tr_authz_action)action;
        path_pop(ld, s2);
        if (!ok)
            break;
    }
    path_pop(ld, saved);
    if (ok)
        l->authz.n_rules = rv->n;
    return ok;
}

static bool parse_listener(struct ld *ld, const struct cnode *v, struct tr_listener_cfg *l, int idx)
{
    enum {
        L_NAME,
        L_ADDRESS,
        L_DIRECTION,
        L_PROTOCOL,
        L_TLS,
        L_TABLE,
        L_TCP,
        L_HTTP,
        L_TIMEOUTS,
        L_AUTHZ,
        L_N
    };
    static const char *const keys[L_N] = {"name",     "address",      "direction",   "protocol",
                                          "tls",      "route_table",  "tcp_cluster", "http",
                                          "timeouts", "authorization"};
    static const char *const dirs[] = {"inbound", "outbound"};
    static const char *const protos[] = {"http", "tcp", "auto"};
    struct field f[L_N];
    int dir = TR_DIR_INBOUND, proto = TR_LPROTO_HTTP;
    l->tls = -1;
    l->route_table = -1;
    l->tcp_cluster = -1;
    l->xff = TR_XFF_APPEND;
    l->xfp = true;
    l->request_id = TR_REQID_PRESERVE;
    l->detect_timeout_ms = 100;
    l->idle_timeout_ms = 300000;
    l->request_timeout_ms = 10000;
    if (!map_fields(ld, v, keys, L_N, f) || !loc_here(ld, v, &l->loc) || !need(ld, v, &f[L_NAME]) ||
        !need(ld, v, &f[L_ADDRESS]) || !get_name(ld, &f[L_NAME], &l->name))
        return false;
    size_t saved = path_push_key(ld, "name");
    bool ok = name_add(ld, &ld->listener_names, "listener name", l->name, idx, f[L_NAME].v);
    path_pop(ld, saved);
    if (!ok || !get_addr(ld, &f[L_ADDRESS], true, &l->addr) ||
        !get_enum(ld, &f[L_DIRECTION], dirs, 2, &dir) ||
        !get_enum(ld, &f[L_PROTOCOL], protos, 3, &proto))
        return false;
    l->direction = (enum tr_direction)dir;
    l->protocol = (enum tr_listener_protocol)proto;

    /* Two listeners cannot bind one address (port 0 picks a fresh port). */
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->addr.ss;
    if (sin->sin_port != 0) {
        for (int j = 0; j < idx; j++) {
            const struct tr_cfg_addr *o = &ld->cfg->listeners[j].addr;
            if (o->len == l->addr.len && memcmp(&o->ss, &l->addr.ss, l->addr.len) == 0) {
                saved = path_push_key(ld, "address");
                char b[96];
                const char *other = ld->cfg->listeners[j].name;
                fail(ld, f[L_ADDRESS].v, "address %s is already used by listener %s", l->addr.text,
                     show(b, sizeof(b), other, strlen(other), true));
                path_pop(ld, saved);
                return false;
            }
        }
    }

    if (f[L_TLS].v != NULL) {
        enum { LT_MODE, LT_CONTEXT, LT_N };
        static const char *const tkeys[LT_N] = {"mode", "context"};
        struct field tf[LT_N];
        const struct cnode *tv = f[L_TLS].v;
        int mode = TR_TLS_DISABLE;
        saved = path_push_key(ld, "tls");
        ok = map_fields(ld, tv, tkeys, LT_N, tf) && need(ld, tv, &tf[LT_MODE]);
        if (ok) {
            /* Listed in the order people think of them, not enum order. */
            static const char *const shown[] = {"STRICT", "PERMISSIVE", "DISABLE"};
            static const int to_mode[] = {TR_TLS_STRICT, TR_TLS_PERMISSIVE, TR_TLS_DISABLE};
            int k = 0;
            ok = get_enum(ld, &tf[LT_MODE], shown, 3, &k);
            mode = to_mode[k];
        }
        if (ok && mode != TR_TLS_DISABLE && l->direction != TR_DIR_INBOUND)
            ok = fail_field(ld, tv, &tf[LT_MODE], "%s is only valid on inbound listeners",
                            mode == TR_TLS_STRICT ? "STRICT" : "PERMISSIVE");
        if (ok && mode != TR_TLS_DISABLE)
            ok = need(ld, tv, &tf[LT_CONTEXT]) &&
                 get_ref(ld, &tf[LT_CONTEXT], &ld->tls_names, "TLS context", &l->tls);
        if (ok && mode == TR_TLS_DISABLE && tf[LT_CONTEXT].v != NULL)
            ok = fail_field(ld, tv, &tf[LT_CONTEXT], "must not be set when mode is DISABLE");
        path_pop(ld, saved);
        if (!ok)
            return false;
        l->tls_mode = (enum tr_tls_mode)mode;
    }

    if (l->protocol == TR_LPROTO_TCP) {
        if (f[L_TABLE].v != NULL)
            return fail_field(ld, v, &f[L_TABLE],
                              "not allowed on a tcp listener (use tcp_cluster)");
        if (f[L_HTTP].v != NULL)
            return fail_field(ld, v, &f[L_HTTP], "not allowed on a tcp listener");
        if (!need(ld, v, &f[L_TCP]))
            return false;
    } else {
        if (!need(ld, v, &f[L_TABLE]))
            return false;
        if (l->protocol == TR_LPROTO_HTTP && f[L_TCP].v != NULL)
            return fail_field(ld, v, &f[L_TCP],
                              "not allowed on an http listener (use protocol: auto or tcp)");
    }
    if (!get_ref(ld, &f[L_TABLE], &ld->table_names, "route table", &l->route_table) ||
        !get_ref(ld, &f[L_TCP], &ld->cluster_names, "cluster", &l->tcp_cluster))
        return false;

    if (f[L_HTTP].v != NULL) {
        enum { HT_XFF, HT_XFP, HT_REQID, HT_N };
        static const char *const hkeys[HT_N] = {"xff", "xfp", "request_id"};
        static const char *const xffs[] = {"append", "off"};
        static const char *const reqids[] = {"preserve", "always", "off"};
        struct field hf[HT_N];
        int xff = TR_XFF_APPEND, reqid = TR_REQID_PRESERVE;
        saved = path_push_key(ld, "http");
        ok = map_fields(ld, f[L_HTTP].v, hkeys, HT_N, hf) &&
             get_enum(ld, &hf[HT_XFF], xffs, 2, &xff) && get_bool(ld, &hf[HT_XFP], &l->xfp) &&
             get_enum(ld, &hf[HT_REQID], reqids, 3, &reqid);
        path_pop(ld, saved);
        if (!ok)
            return false;
        l->xff = (enum tr_xff_mode)xff;
        l->request_id = (enum tr_request_id_mode)reqid;
    }
    if (f[L_TIMEOUTS].v != NULL) {
        enum { TO_DETECT, TO_IDLE, TO_REQUEST, TO_N };
        static const char *const okeys[TO_N] = {"detect", "idle", "request"};
        struct field of[TO_N];
        saved = path_push_key(ld, "timeouts");
        ok = map_fields(ld, f[L_TIMEOUTS].v, okeys, TO_N, of) &&
             get_duration(ld, &of[TO_DETECT], 1, 60000, &l->detect_timeout_ms) &&
             get_duration(ld, &of[TO_IDLE], 1, CFG_MAX_DURATION_MS, &l->idle_timeout_ms) &&
             get_duration(ld, &of[TO_REQUEST], 1, CFG_MAX_DURATION_MS, &l->request_timeout_ms);
        path_pop(ld, saved);
        if (!ok)
            return false;
    }
    if (f[L_AUTHZ].v != NULL) {
        saved = path_push_key(ld, "authorization");
        ok = parse_authz(ld, f[L_AUTHZ].v, l);
        path_pop(ld, saved);
        if (!ok)
            return false;
    }
    return true;
}

/* Parses a top-level list of objects of one kind into a fresh array. */
typedef bool (*parse_item_fn)(struct ld *ld, const struct cnode *v, void *item, int idx);

static bool parse_list(struct ld *ld, const struct field *f, size_t min, size_t max,
                       size_t item_size, parse_item_fn parse, void **items, size_t *n)
{
    if (f->v == NULL)
        return true;
    size_t saved = path_push_key(ld, f->name);
    bool ok = list_of(ld, f->v, min, max);
    unsigned char *arr = NULL;
    if (ok && f->v->n > 0) {
        arr = tr_arena_calloc(ld->a, f->v->n, item_size);
        if (arr == NULL)
            ok = oom(ld);
    }
    /* Published before the items are parsed: listeners look at the earlier
     * ones for address clashes. */
    *items = arr;
    size_t i = 0;
    for (const struct cnode *it = ok ? f->v->head : NULL; it != NULL; it = it->next, i++) {
        size_t s2 = path_push_index(ld, i);
        ok = parse(ld, it, arr + i * item_size, (int)i);
        path_pop(ld, s2);
        if (!ok)
            break;
    }
    path_pop(ld, saved);
    if (ok)
        *n = f->v->n;
    return ok;
}

static bool parse_tls_item(struct ld *ld, const struct cnode *v, void *item, int idx)
{
    return parse_tls_ctx(ld, v, item, idx);
}

static bool parse_cluster_item(struct ld *ld, const struct cnode *v, void *item, int idx)
{
    return parse_cluster(ld, v, item, idx);
}

static bool parse_table_item(struct ld *ld, const struct cnode *v, void *item, int idx)
{
    return parse_route_table(ld, v, item, idx);
}

static bool parse_listener_item(struct ld *ld, const struct cnode *v, void *item, int idx)
{
    return parse_listener(ld, v, item, idx);
}

static bool parse_root(struct ld *ld, const struct cnode *root)
{
    enum {
        R_NODE,
        R_WORKERS,
        R_DRAIN,
        R_LOG,
        R_LIMITS,
        R_ADMIN,
        R_ACCESS_LOG,
        R_TLS,
        R_LISTENERS,
        R_TABLES,
        R_CLUSTERS,
        R_N
    };
    static const char *const keys[R_N] = {"node",      "workers",      "drain_timeout", "log_level",
                                          "limits",    "admin",        "access_log",    "tls",
                                          "listeners", "route_tables", "clusters"};
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    struct tr_config *cfg = ld->cfg;
    struct field f[R_N];
    int level = 2;
    if (root->kind != CN_MAP) {
        char b[96];
        return fail(ld, root, "expected a mapping at the top level, got %s",
                    describe(root, b, sizeof(b)));
    }
    if (!map_fields(ld, root, keys, R_N, f))
        return false;
    if (f[R_NODE].v != NULL) {
        size_t saved = path_push_key(ld, "node");
        bool ok = parse_node(ld, f[R_NODE].v);
        path_pop(ld, saved);
        if (!ok)
            return false;
    }
    if (!get_u32(ld, &f[R_WORKERS], 0, CFG_MAX_WORKERS, &cfg->workers) ||
        !get_duration(ld, &f[R_DRAIN], 0, CFG_MAX_DURATION_MS, &cfg->drain_timeout_ms) ||
        !get_enum(ld, &f[R_LOG], levels, 4, &level))
        return false;
    cfg->log_level = levels[level];

    static const struct {
        int key;
        bool (*fn)(struct ld *, const struct cnode *);
    } blocks[] = {
        {R_LIMITS, parse_limits}, {R_ADMIN, parse_admin}, {R_ACCESS_LOG, parse_access_log}};
    for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++) {
        const struct field *bf = &f[blocks[i].key];
        if (bf->v == NULL)
            continue;
        size_t saved = path_push_key(ld, bf->name);
        bool ok = blocks[i].fn(ld, bf->v);
        path_pop(ld, saved);
        if (!ok)
            return false;
    }

    /* Targets of references are read before the objects that refer to them. */
    return parse_list(ld, &f[R_TLS], 0, CFG_MAX_TLS, sizeof(struct tr_tls_cfg), parse_tls_item,
                      (void **)&cfg->tls, &cfg->n_tls) &&
           parse_list(ld, &f[R_CLUSTERS], 0, CFG_MAX_CLUSTERS, sizeof(struct tr_cluster_cfg),
                      parse_cluster_item, (void **)&cfg->clusters, &cfg->n_clusters) &&
           parse_list(ld, &f[R_TABLES], 0, CFG_MAX_TABLES, sizeof(struct tr_route_table_cfg),
                      parse_table_item, (void **)&cfg->route_tables, &cfg->n_route_tables) &&
           parse_list(ld, &f[R_LISTENERS], 1, CFG_MAX_LISTENERS, sizeof(struct tr_listener_cfg),
                      parse_listener_item, (void **)&cfg->listeners, &cfg->n_listeners) &&
           need(ld, root, &f[R_LISTENERS]);
}

/* ------------------------------------------------------------- entry */

static bool set_defaults(struct ld *ld)
{
    struct tr_config *cfg = ld->cfg;
    cfg->drain_timeout_ms = 10000;
    cfg->log_level = "info";
    cfg->limits = (struct tr_limits_cfg){
        .max_request_line = 8192,
        .max_header_bytes = 65536,
        .max_headers = 100,
        .max_connections = 65536,
        .buffer_size = 16384,
        .h2_max_concurrent_streams = 100,
        .h2_initial_window = 65535,
        .h2_connection_window = 1u << 20,
        .h2_max_resets_per_second = 200,
    };
    struct sockaddr_in *sin = (struct sockaddr_in *)&cfg->admin.addr.ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(15000);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cfg->admin.addr.len = sizeof(*sin);
    cfg->admin.addr.text = "127.0.0.1:15000";
    cfg->admin.enabled = true;
    cfg->access_log.enabled = false;
    cfg->access_log.path = "/dev/stdout";
    return true;
}

struct tr_config *tr_config_load_buffer(const char *buf, size_t len, const char *name, char **err)
{
    struct ld ld = {0};
    if (err != NULL)
        *err = NULL;
    if (name == NULL)
        name = "<config>";
    struct tr_arena *arena = tr_arena_new(64 * 1024);
    ld.tmp = tr_arena_new(64 * 1024);
    struct tr_config *cfg = arena != NULL ? tr_arena_alloc(arena, sizeof(*cfg)) : NULL;
    ld.file = arena != NULL ? tr_arena_strdup(arena, name) : NULL;
    if (cfg == NULL || ld.tmp == NULL || ld.file == NULL) {
        tr_arena_free(arena);
        tr_arena_free(ld.tmp);
        if (err != NULL)
            *err = strdup("out of memory");
        return NULL;
    }
    cfg->arena = arena;
    cfg->file = ld.file;
    ld.a = arena;
    ld.cfg = cfg;
    /* Relative file names in the config are relative to its directory. */
    const char *slash = strrchr(name, '/');
    bool ok = set_defaults(&ld);
    if (slash == name)
        ld.dir = ""; /* "/x.yaml": "" + "/" + rel gives "/rel" */
    else if (slash != NULL &&
             (ld.dir = tr_arena_strndup(arena, name, (size_t)(slash - name))) == NULL)
        ok = oom(&ld);
    struct cnode *root = NULL;
    if (ok && buf == NULL && len != 0)
        ok = fail_file(&ld, "no input");
    if (ok && len > CFG_MAX_FILE_SIZE)
        ok = fail_file(&ld, "configuration is %zu bytes; the limit is %u bytes", len,
                       CFG_MAX_FILE_SIZE);
    if (ok && len != 0)
        ok = input_check(&ld, (const unsigned char *)buf, len);
    if (ok)
        ok = tree_build(&ld, len != 0 ? buf : "", len, &root);
    if (ok && (root == NULL || is_null(root)))
        ok = fail_file(&ld,
                       "configuration is empty (expected a mapping with at least \"listeners\")");
    if (ok)
        ok = parse_root(&ld, root);
    tr_arena_free(ld.tmp);
    if (!ok) {
        if (ld.err == NULL)
            ld.err = strdup("invalid configuration");
        if (err != NULL)
            *err = ld.err;
        else
            free(ld.err);
        tr_arena_free(arena);
        return NULL;
    }
    return cfg;
}

struct tr_config *tr_config_load_file(const char *path, char **err)
{
    char msg[CFG_ERR_MAX];
    if (err != NULL)
        *err = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(msg, sizeof(msg), "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        snprintf(msg, sizeof(msg), "%s: cannot read: %s", path,
                 errno != 0 && !S_ISDIR(st.st_mode) ? strerror(errno) : "is a directory");
        close(fd);
        goto fail;
    }
    /* Read up to one byte past the limit, so oversize is detected even for
     * pipes and files whose size st_size does not tell. */
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (len == cap) {
            if (cap > CFG_MAX_FILE_SIZE)
                break;
            size_t ncap =
                cap * 2 > (size_t)CFG_MAX_FILE_SIZE + 1 ? (size_t)CFG_MAX_FILE_SIZE + 1 : cap * 2;
            char *nb = realloc(buf, ncap);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(msg, sizeof(msg), "%s: cannot read: %s", path, strerror(errno));
            free(buf);
            close(fd);
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (buf == NULL) {
        snprintf(msg, sizeof(msg), "%s: out of memory", path);
        goto fail;
    }
    struct tr_config *cfg = tr_config_load_buffer(buf, len, path, err);
    free(buf);
    return cfg;
fail:
    if (err != NULL)
        *err = strdup(msg);
    return NULL;
}

void tr_config_free(struct tr_config *cfg)
{
    if (cfg != NULL)
        tr_arena_free(cfg->arena); /* cfg itself lives in the arena */
}

int tr_cfg_loc_format(const struct tr_cfg_loc *loc, char *out, size_t size)
{
    const char *file = loc->file != NULL ? loc->file : "<config>";
    const char *path = loc->path != NULL ? loc->path : "";
    if (loc->line == 0)
        return snprintf(out, size, "%s: %s%s", file, path, path[0] != '\0' ? ": " : "");
    return snprintf(out, size, "%s:%u:%u: %s%s", file, loc->line, loc->col, path,
                    path[0] != '\0' ? ": " : "");
}

void tr_cfg_errorf(char **err, const struct tr_cfg_loc *loc, const char *fmt, ...)
{
    if (err == NULL)
        return;
    char prefix[512], msg[1024];
    static const struct tr_cfg_loc none = {0};
    tr_cfg_loc_format(loc != NULL ? loc : &none, prefix, sizeof(prefix));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *out = NULL;
    if (asprintf(&out, "%s%s", prefix, msg) < 0)
        out = NULL;
    free(*err);
    *err = out;
}
