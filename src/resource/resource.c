/* resource/resource.c: node accessors, documents -> resources, and the set.
 *
 * A document's root becomes one resource, or several when it is a List.
 * The checks are the API server's on every object (apiVersion, kind and
 * metadata: name, namespace, labels, annotations), made here once so that
 * no compiler has to: an object that fails one is reported (every problem
 * found in it, each naming the object as far as it is known) and left out.
 * A value that YAML reads as a number, a boolean or null where Kubernetes
 * wants a string is refused with a hint to quote it, as kubectl refuses it
 * ("cannot unmarshal number into ... of type string"); YAML 1.1 spellings
 * (yes, on, 0777) count too, since kubectl reads YAML 1.1.
 *
 * Sealing a set sorts it twice (no hash table, so no hash flooding and
 * O(log n) lookups): by (group, kind, namespace, name) for tr_rset_find and
 * the duplicate check, by (group, kind, load order) for tr_rset_of_kind.
 * A watched store's unchanged files come with their objects sorted at
 * their parse, so sealing its snapshot sorts only the changed files' and
 * merges (res_set_seal).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "resource/internal.h"

#define RES_ARENA_CHUNK      (64u * 1024u)
#define RES_MAX_NAME         253u /* metadata.name, a DNS subdomain's length */
#define RES_MAX_LABEL        63u  /* a DNS label: namespaces, versions, label names and values */
#define RES_MAX_KIND         63u
#define RES_MAX_ANNOTATIONS  (256u * 1024u) /* all of an object's annotations (the API's limit) */
#define RES_MAX_LIST_NESTING 8u             /* Lists inside Lists */

/* ------------------------------------------------------------ messages */

const char *res_show(char *buf, size_t size, const char *s, size_t len)
{
    if (size < 8) {
        if (size != 0)
            buf[0] = '\0';
        return buf;
    }
    size_t o = 0, o_char = 1;
    buf[o++] = '"';
    size_t i = 0;
    for (; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char piece[8];
        size_t pl;
        if (c == '"' || c == '\\') {
            piece[0] = '\\';
            piece[1] = (char)c;
            pl = 2;
        } else if (c < 0x20 || c == 0x7f) {
            pl = (size_t)snprintf(piece, sizeof(piece), "\\x%02x", c);
        } else {
            piece[0] = (char)c;
            pl = 1;
        }
        if (o + pl > size - 5) /* room for `..."` and the NUL */
            break;
        if ((c & 0xc0) != 0x80)
            o_char = o; /* a character starts here */
        memcpy(buf + o, piece, pl);
        o += pl;
    }
    if (i < len) {
        /* Cut, but never inside a UTF-8 sequence. */
        if (((unsigned char)s[i] & 0xc0) == 0x80)
            o = o_char;
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void res_report(struct tr_diags *d, enum tr_diag_severity sev, const char *file, uint32_t line,
                uint32_t col, const char *fmt, ...)
{
    if (d == NULL)
        return;
    struct tr_diag_where w = {.file = file, .line = line, .col = col};
    va_list ap;
    va_start(ap, fmt);
    tr_diags_vadd(d, sev, &w, fmt, ap);
    va_end(ap);
}

/* --------------------------------------------------------------- nodes */

static const struct tr_rnode *map_entry(const struct tr_rnode *map, const char *key)
{
    if (map == NULL || map->kind != TR_RNODE_MAP || key == NULL)
        return NULL;
    size_t klen = strlen(key);
    for (const struct tr_rnode *k = map->head; k != NULL && k->next != NULL; k = k->next->next) {
        if (k->kind == TR_RNODE_SCALAR && k->len == klen && memcmp(k->s, key, klen) == 0)
            return k;
    }
    return NULL;
}

const struct tr_rnode *tr_rnode_get(const struct tr_rnode *map, const char *key)
{
    const struct tr_rnode *k = map_entry(map, key);
    return k != NULL ? k->next : NULL;
}

const struct tr_rnode *tr_rnode_key(const struct tr_rnode *map, const char *key)
{
    return map_entry(map, key);
}

static bool text_is(const struct tr_rnode *n, const char *lit)
{
    size_t l = strlen(lit);
    return n->len == l && memcmp(n->s, lit, l) == 0;
}

static bool text_in(const struct tr_rnode *n, const char *const *lits, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (text_is(n, lits[i]))
            return true;
    }
    return false;
}

bool tr_rnode_is_null(const struct tr_rnode *n)
{
    static const char *const nulls[] = {"~", "null", "Null", "NULL"};
    if (n == NULL)
        return true;
    if (n->kind != TR_RNODE_SCALAR || !n->plain)
        return false;
    /* asked of nearly every scalar read: the lengths decide most */
    if (n->len == 0)
        return true;
    return (n->len == 1 || n->len == 4) && text_in(n, nulls, 4);
}

bool tr_rnode_str(const struct tr_rnode *n, const char **out)
{
    if (n == NULL || n->kind != TR_RNODE_SCALAR || tr_rnode_is_null(n))
        return false;
    *out = n->s;
    return true;
}

bool tr_rnode_bool(const struct tr_rnode *n, bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE"};
    static const char *const no[] = {"false", "False", "FALSE"};
    if (n == NULL || n->kind != TR_RNODE_SCALAR || !n->plain)
        return false;
    if (text_in(n, yes, 3)) {
        *out = true;
        return true;
    }
    if (text_in(n, no, 3)) {
        *out = false;
        return true;
    }
    return false;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Leading zeros are refused: YAML 1.1 (kubectl's) reads 010 as octal 8. */
bool tr_rnode_int(const struct tr_rnode *n, int64_t *out)
{
    if (n == NULL || n->kind != TR_RNODE_SCALAR)
        return false;
    const char *s = n->s;
    size_t len = n->len, i = 0;
    bool neg = len > 0 && s[0] == '-';
    if (neg)
        i++;
    if (i == len || (s[i] == '0' && len - i > 1))
        return false;
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; i < len; i++) {
        if (!is_digit(s[i]))
            return false;
        uint64_t dgt = (uint64_t)(s[i] - '0');
        if (v > (limit - dgt) / 10)
            return false;
        v = v * 10 + dgt;
    }
    if (neg)
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return true;
}

/* JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)? */
static bool number_syntax(const char *s, size_t len)
{
    size_t i = 0;
    if (i < len && s[i] == '-')
        i++;
    if (i == len || !is_digit(s[i]))
        return false;
    if (s[i] == '0')
        i++;
    else
        while (i < len && is_digit(s[i]))
            i++;
    if (i < len && s[i] == '.') {
        i++;
        if (i == len || !is_digit(s[i]))
            return false;
        while (i < len && is_digit(s[i]))
            i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '-' || s[i] == '+'))
            i++;
        if (i == len || !is_digit(s[i]))
            return false;
        while (i < len && is_digit(s[i]))
            i++;
    }
    return i == len;
}

bool tr_rnode_double(const struct tr_rnode *n, double *out)
{
    if (n == NULL || n->kind != TR_RNODE_SCALAR || !number_syntax(n->s, n->len))
        return false;
    errno = 0;
    char *end = NULL;
    double v = strtod(n->s, &end); /* the syntax is checked: no locale or hex surprises */
    if (end != n->s + n->len || !isfinite(v))
        return false;
    *out = v;
    return true;
}

const char *tr_rnode_describe(const struct tr_rnode *n, char *buf, size_t size)
{
    if (n != NULL && n->kind == TR_RNODE_MAP)
        return "a mapping";
    if (n != NULL && n->kind == TR_RNODE_SEQ)
        return "a list";
    if (tr_rnode_is_null(n))
        return "null";
    return res_show(buf, size, n->s, n->len);
}

/* What a plain scalar means to YAML 1.2's core schema or to YAML 1.1
 * (kubectl) when that is not text: "null", "a boolean", "a number"; NULL
 * for text. */
static const char *plain_type(const struct tr_rnode *n)
{
    static const char *const bools11[] = {"y",  "Y",  "yes", "Yes", "YES", "n",   "N",   "no",
                                          "No", "NO", "on",  "On",  "ON",  "off", "Off", "OFF"};
    static const char *const special[] = {".inf",  ".Inf",  ".INF",  "-.inf", "-.Inf", "-.INF",
                                          "+.inf", "+.Inf", "+.INF", ".nan",  ".NaN",  ".NAN"};
    bool b;
    if (!n->plain || n->kind != TR_RNODE_SCALAR)
        return NULL;
    if (tr_rnode_is_null(n))
        return "null";
    if (tr_rnode_bool(n, &b) || text_in(n, bools11, sizeof(bools11) / sizeof(bools11[0])))
        return "a boolean";
    if (text_in(n, special, sizeof(special) / sizeof(special[0])))
        return "a number";
    /* Numbers: optional sign, then 0x / 0o / 0b digits, or decimal digits
     * (with YAML 1.1's "_" separators), a fraction and an exponent. */
    const char *s = n->s;
    size_t len = n->len, i = 0;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        i++;
    if (len - i > 2 && s[i] == '0' && strchr("xXoObB", s[i + 1]) != NULL && s[i + 1] != '\0') {
        for (i += 2; i < len; i++) {
            if (!is_digit(s[i]) && strchr("abcdefABCDEF_", s[i]) == NULL)
                return NULL;
        }
        return "a number";
    }
    size_t digits = 0;
    for (; i < len && (is_digit(s[i]) || s[i] == '_'); i++)
        digits += is_digit(s[i]);
    if (i < len && s[i] == '.') {
        for (i++; i < len && (is_digit(s[i]) || s[i] == '_'); i++)
            digits += is_digit(s[i]);
    }
    if (digits == 0)
        return NULL;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t e = 0;
        for (; i < len && is_digit(s[i]); i++)
            e++;
        if (e == 0)
            return NULL;
    }
    return i == len ? "a number" : NULL;
}

/* ------------------------------------------------------------- objects */

/* One object being read: where its findings point. */
struct obj {
    struct tr_rset *rs;
    struct tr_diags *d;
    const char *file;
    const char *kind, *ns, *name; /* as far as known and valid */
    bool bad;                     /* a rule is broken: the object is left out */
};

static void obj_fail(struct obj *o, const struct tr_rnode *at, const char *path, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));
static void obj_fail(struct obj *o, const struct tr_rnode *at, const char *path, const char *fmt,
                     ...)
{
    o->bad = true;
    if (o->d == NULL)
        return;
    struct tr_diag_where w = {
        .file = o->file,
        .line = at != NULL ? at->line : 0,
        .col = at != NULL ? at->col : 0,
        .kind = o->kind,
        .ns = o->ns,
        .name = o->name,
        .path = path,
    };
    va_list ap;
    va_start(ap, fmt);
    tr_diags_vadd(o->d, TR_DIAG_ERROR, &w, fmt, ap);
    va_end(ap);
}

/* "missing required field" at the mapping (or at the null value), with a
 * hint when a key differs only in case: YAML keys are case-sensitive, and
 * "apiversion" is a mistake real files make. */
static void missing(struct obj *o, const struct tr_rnode *map, const struct tr_rnode *null_value,
                    const char *key, const char *path)
{
    size_t klen = strlen(key);
    for (const struct tr_rnode *k = map != NULL && map->kind == TR_RNODE_MAP ? map->head : NULL;
         k != NULL && k->next != NULL; k = k->next->next) {
        if (k->kind == TR_RNODE_SCALAR && k->len == klen && strncasecmp(k->s, key, klen) == 0 &&
            memcmp(k->s, key, klen) != 0) {
            char buf[96];
            obj_fail(o, k, path, "missing required field (found %s: keys are case-sensitive)",
                     res_show(buf, sizeof(buf), k->s, k->len));
            return;
        }
    }
    /* A key written with no value: point at the key (an empty value has
     * no position of its own). */
    const struct tr_rnode *k = null_value != NULL ? tr_rnode_key(map, key) : NULL;
    obj_fail(o, k != NULL ? k : map, path, "missing required field");
}

/* A string value: a scalar that is not null and that YAML does not read as
 * a number or a boolean. *out NULL when absent (or null) and not required.
 * False when the rule is broken (reported). */
static bool string_of(struct obj *o, const struct tr_rnode *map, const char *key, const char *path,
                      bool required, const struct tr_rnode **node, const char **out)
{
    const struct tr_rnode *v = tr_rnode_get(map, key);
    *out = NULL;
    *node = v;
    if (tr_rnode_is_null(v)) {
        if (required)
            missing(o, map, v, key, path);
        return !required;
    }
    char buf[96];
    if (v->kind != TR_RNODE_SCALAR) {
        obj_fail(o, v, path, "expected a string, got %s", tr_rnode_describe(v, buf, sizeof(buf)));
        return false;
    }
    const char *type = plain_type(v);
    if (type != NULL) {
        obj_fail(o, v, path, "expected a string, got %s, which YAML reads as %s (quote it)",
                 tr_rnode_describe(v, buf, sizeof(buf)), type);
        return false;
    }
    if (memchr(v->s, '\0', v->len) != NULL) {
        obj_fail(o, v, path, "a NUL character is not allowed");
        return false;
    }
    *out = v->s;
    return true;
}

static bool lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || is_digit(c);
}

static bool alnum(char c)
{
    return lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* RFC 1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63. */
static bool dns_label(const char *s, size_t len)
{
    if (len == 0 || len > RES_MAX_LABEL || !lower_alnum(s[0]) || !lower_alnum(s[len - 1]))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!lower_alnum(s[i]) && s[i] != '-')
            return false;
    }
    return true;
}

/* RFC 1123 subdomain: labels joined by dots, at most 253. */
static bool dns_subdomain(const char *s, size_t len)
{
    if (len == 0 || len > RES_MAX_NAME)
        return false;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (!dns_label(s + start, i - start))
                return false;
            start = i + 1;
        }
    }
    return true;
}

/* A label name or value's body: ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], at most 63. */
static bool label_word(const char *s, size_t len)
{
    if (len == 0 || len > RES_MAX_LABEL || !alnum(s[0]) || !alnum(s[len - 1]))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    }
    return true;
}

/* A label or annotation key: [PREFIX/]NAME, PREFIX a DNS subdomain. */
static bool qualified_name(const char *s, size_t len)
{
    const char *slash = memchr(s, '/', len);
    if (slash == NULL)
        return label_word(s, len);
    size_t plen = (size_t)(slash - s);
    return dns_subdomain(s, plen) && label_word(slash + 1, len - plen - 1);
}

/* The API server's rule for names in paths, plus printable and no blanks. */
static bool object_name(const char *s, size_t len)
{
    if (len == 0 || len > RES_MAX_NAME || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || c == '/' || c == '%')
            return false;
    }
    return true;
}

static bool kind_name(const char *s, size_t len)
{
    if (len == 0 || len > RES_MAX_KIND ||
        !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!alnum(s[i]))
            return false;
    }
    return true;
}

/* A string field's text if it is one and check accepts it, else NULL; no
 * finding (for naming an object before it is checked). */
static const char *peek(const struct tr_rnode *v, bool (*check)(const char *, size_t))
{
    if (v == NULL || v->kind != TR_RNODE_SCALAR || plain_type(v) != NULL ||
        memchr(v->s, '\0', v->len) != NULL || !check(v->s, v->len))
        return NULL;
    return v->s;
}

/* apiVersion "group/version" or "version" (the core group); the parts are
 * copied into the arena. */
static bool api_version(struct obj *o, const struct tr_rnode *map, const char **api,
                        const char **group, const char **version)
{
    const struct tr_rnode *v;
    if (!string_of(o, map, "apiVersion", "apiVersion", true, &v, api))
        return false;
    char buf[96];
    const char *s = *api, *slash = strchr(s, '/');
    size_t len = strlen(s);
    size_t glen = slash != NULL ? (size_t)(slash - s) : 0;
    const char *ver = slash != NULL ? slash + 1 : s;
    size_t vlen = len - (size_t)(ver - s);
    if ((slash != NULL && !dns_subdomain(s, glen)) || !dns_label(ver, vlen)) {
        obj_fail(o, v, "apiVersion",
                 "%s is not GROUP/VERSION or VERSION (a lower-case DNS name and label)",
                 res_show(buf, sizeof(buf), s, len));
        return false;
    }
    *group = tr_arena_strndup(o->rs->arena, s, glen);
    *version = tr_arena_strndup(o->rs->arena, ver, vlen);
    return *group != NULL && *version != NULL;
}

static bool kind_of(struct obj *o, const struct tr_rnode *map, const char **kind)
{
    const struct tr_rnode *v;
    if (!string_of(o, map, "kind", "kind", true, &v, kind))
        return false;
    if (!kind_name(*kind, v->len)) {
        char buf[96];
        obj_fail(o, v, "kind", "%s is not a kind (letters and digits, at most %u)",
                 res_show(buf, sizeof(buf), v->s, v->len), RES_MAX_KIND);
        *kind = NULL;
        return false;
    }
    return true;
}

/* labels (values are label words) or annotations (values any string, all
 * of them at most RES_MAX_ANNOTATIONS). A null value reads as "", as the
 * API server reads it. */
static const struct tr_rnode *string_map(struct obj *o, const struct tr_rnode *meta,
                                         const char *key, bool labels)
{
    char path[64], buf[96], kbuf[96];
    snprintf(path, sizeof(path), "metadata.%s", key);
    const struct tr_rnode *m = tr_rnode_get(meta, key);
    if (tr_rnode_is_null(m))
        return NULL;
    if (m->kind != TR_RNODE_MAP) {
        obj_fail(o, m, path, "expected a mapping, got %s", tr_rnode_describe(m, buf, sizeof(buf)));
        return NULL;
    }
    size_t total = 0;
    for (const struct tr_rnode *k = m->head; k != NULL && k->next != NULL; k = k->next->next) {
        const struct tr_rnode *v = k->next;
        const char *ks = res_show(kbuf, sizeof(kbuf), k->s, k->len);
        if (!qualified_name(k->s, k->len)) {
            obj_fail(o, k, path,
                     "key %s is not a valid %s key ([PREFIX/]NAME: NAME at most 63 letters, "
                     "digits, '-', '_' or '.', starting and ending with a letter or digit)",
                     ks, labels ? "label" : "annotation");
            continue;
        }
        if (tr_rnode_is_null(v))
            continue;
        const char *type = v->kind == TR_RNODE_SCALAR ? plain_type(v) : NULL;
        if (v->kind != TR_RNODE_SCALAR || type != NULL) {
            obj_fail(o, v, path, "%s: expected a string, got %s%s%s%s", ks,
                     tr_rnode_describe(v, buf, sizeof(buf)),
                     type != NULL ? ", which YAML reads as " : "", type != NULL ? type : "",
                     type != NULL ? " (quote it)" : "");
            continue;
        }
        if (labels && v->len != 0 && !label_word(v->s, v->len)) {
            obj_fail(o, v, path,
                     "%s: value %s is not a valid label value (at most 63 letters, digits, '-', "
                     "'_' or '.', starting and ending with a letter or digit)",
                     ks, res_show(buf, sizeof(buf), v->s, v->len));
            continue;
        }
        total += k->len + v->len;
    }
    if (!labels && total > RES_MAX_ANNOTATIONS)
        obj_fail(o, m, path, "annotations are %zu bytes; the limit is %u", total,
                 RES_MAX_ANNOTATIONS);
    return m;
}

static bool set_push(struct tr_rset *rs, struct tr_resource *r)
{
    if (rs->n == rs->cap) {
        size_t ncap = rs->cap != 0 ? rs->cap * 2 : 64;
        struct tr_resource **nv = realloc(rs->v, ncap * sizeof(*nv));
        if (nv == NULL)
            return false;
        rs->v = nv;
        rs->cap = ncap;
    }
    r->index = rs->n;
    rs->v[rs->n++] = r;
    return true;
}

/* One object. False only when out of memory. */
static bool add_object(struct tr_rset *rs, const struct tr_rnode *obj, const char *file,
                       uint32_t doc, struct tr_diags *d)
{
    struct obj o = {.rs = rs, .d = d, .file = file};
    const char *api = NULL, *group = NULL, *version = NULL, *kind = NULL, *name = NULL, *ns = NULL;
    const struct tr_rnode *v;
    /* Every finding names the object as far as it can be named: its kind,
     * namespace and name first, quietly, each if it is valid. */
    const struct tr_rnode *meta = tr_rnode_get(obj, "metadata");
    o.kind = peek(tr_rnode_get(obj, "kind"), kind_name);
    o.ns = peek(tr_rnode_get(meta, "namespace"), dns_label);
    o.name = peek(tr_rnode_get(meta, "name"), object_name);
    if (o.ns != NULL && o.name == NULL)
        o.ns = NULL;
    kind_of(&o, obj, &kind);
    char buf[96];
    if (tr_rnode_is_null(meta)) {
        missing(&o, obj, meta, "metadata", "metadata");
        meta = NULL;
    } else if (meta->kind != TR_RNODE_MAP) {
        obj_fail(&o, meta, "metadata", "expected a mapping, got %s",
                 tr_rnode_describe(meta, buf, sizeof(buf)));
        meta = NULL;
    }
    if (meta != NULL) {
        if (string_of(&o, meta, "namespace", "metadata.namespace", false, &v, &ns) && ns != NULL) {
            if (ns[0] == '\0') {
                ns = NULL; /* written empty: as if not written */
            } else if (!dns_label(ns, v->len)) {
                obj_fail(&o, v, "metadata.namespace",
                         "%s is not a namespace (a lower-case DNS label: letters, digits and '-', "
                         "at most 63)",
                         res_show(buf, sizeof(buf), v->s, v->len));
                ns = NULL;
            }
        }
        bool generated =
            tr_rnode_get(meta, "name") == NULL && tr_rnode_get(meta, "generateName") != NULL;
        if (generated) {
            obj_fail(&o, meta, "metadata.name",
                     "missing required field (metadata.generateName is not supported: every "
                     "object needs a fixed name)");
        } else if (string_of(&o, meta, "name", "metadata.name", true, &v, &name)) {
            if (!object_name(name, v->len)) {
                obj_fail(&o, v, "metadata.name",
                         "%s is not a name (at most %u characters, no blanks, '/' or '%%', not "
                         "\".\" or \"..\")",
                         res_show(buf, sizeof(buf), v->s, v->len), RES_MAX_NAME);
                name = NULL;
            }
        }
    }
    api_version(&o, obj, &api, &group, &version);
    const struct tr_rnode *labels = NULL, *annotations = NULL;
    if (meta != NULL) {
        labels = string_map(&o, meta, "labels", true);
        annotations = string_map(&o, meta, "annotations", false);
    }
    if (o.bad)
        return true;
    if (group == NULL || version == NULL)
        return false; /* api_version could not copy them */
    struct tr_resource *r = tr_arena_alloc(rs->arena, sizeof(*r));
    if (r == NULL)
        return false;
    const struct tr_rnode *spec = tr_rnode_get(obj, "spec");
    *r = (struct tr_resource){
        .api_version = api,
        .group = group,
        .version = version,
        .kind = kind,
        .ns = ns,
        .name = name,
        .labels = labels,
        .annotations = annotations,
        .obj = obj,
        .spec = tr_rnode_is_null(spec) ? NULL : spec,
        .file = file,
        .doc = doc,
        .line = obj->line,
        .col = obj->col,
    };
    return set_push(rs, r);
}

static bool ends_with_list(const char *kind)
{
    size_t l = strlen(kind);
    return l >= 4 && strcmp(kind + l - 4, "List") == 0;
}

/* An object, or a List's items (a List in a List too, as kubectl flattens
 * them). False only when out of memory. */
static bool add_any(struct tr_rset *rs, const struct tr_rnode *n, const char *file, uint32_t doc,
                    struct tr_diags *d, unsigned nesting)
{
    char buf[96];
    if (n->kind != TR_RNODE_MAP) {
        struct obj o = {.rs = rs, .d = d, .file = file};
        obj_fail(&o, n, NULL,
                 "expected a Kubernetes object (a mapping with apiVersion, kind and metadata), got "
                 "%s",
                 tr_rnode_describe(n, buf, sizeof(buf)));
        return true;
    }
    const char *kind = NULL;
    const struct tr_rnode *items = tr_rnode_get(n, "items");
    if (!tr_rnode_str(tr_rnode_get(n, "kind"), &kind) ||
        !(strcmp(kind, "List") == 0 ||
          (ends_with_list(kind) && items != NULL && items->kind == TR_RNODE_SEQ)))
        return add_object(rs, n, file, doc, d);

    struct obj o = {.rs = rs, .d = d, .file = file};
    const char *api, *group = NULL, *version = NULL;
    if (kind_of(&o, n, &kind))
        o.kind = kind;
    api_version(&o, n, &api, &group, &version);
    if (nesting >= RES_MAX_LIST_NESTING)
        obj_fail(&o, n, NULL, "a List nested more than %u deep", RES_MAX_LIST_NESTING);
    if (!tr_rnode_is_null(items) && items->kind != TR_RNODE_SEQ)
        obj_fail(&o, items, "items", "expected a list, got %s",
                 tr_rnode_describe(items, buf, sizeof(buf)));
    if (o.bad || tr_rnode_is_null(items))
        return true;
    for (const struct tr_rnode *it = items->head; it != NULL; it = it->next) {
        if (!add_any(rs, it, file, doc, d, nesting + 1))
            return false;
    }
    return true;
}

bool res_set_add_document(struct tr_rset *rs, const struct tr_rnode *root, const char *file,
                          uint32_t doc, struct tr_diags *d)
{
    if (tr_rnode_is_null(root))
        return true; /* an empty document */
    if (!rs->record)
        return add_any(rs, root, file, doc, d, 0);
    if (rs->n_docs == rs->cap_docs) {
        size_t ncap = rs->cap_docs != 0 ? rs->cap_docs * 2 : 16;
        struct res_doc *nv = realloc(rs->docs, ncap * sizeof(*nv));
        if (nv == NULL)
            return false;
        rs->docs = nv;
        rs->cap_docs = ncap;
    }
    size_t from = d != NULL ? d->n : 0, res_from = rs->n;
    if (!add_any(rs, root, file, doc, d, 0))
        return false;
    rs->docs[rs->n_docs++] = (struct res_doc){.root = root,
                                              .doc = doc,
                                              .diag_from = from,
                                              .diag_to = d != NULL ? d->n : 0,
                                              .res_from = res_from,
                                              .res_to = rs->n};
    return true;
}

bool res_set_add_copy(struct tr_rset *rs, const struct tr_resource *r, const char *file)
{
    struct tr_resource *c = tr_arena_alloc(rs->arena, sizeof(*c));
    if (c == NULL)
        return false;
    *c = *r;
    c->file = file;
    return set_push(rs, c);
}

/* ------------------------------------------------------------- the set */

struct tr_rset *res_set_new(void)
{
    struct tr_rset *rs = calloc(1, sizeof(*rs));
    if (rs == NULL)
        return NULL;
    rs->arena = tr_arena_new(RES_ARENA_CHUNK);
    if (rs->arena == NULL) {
        free(rs);
        return NULL;
    }
    return rs;
}

static int cmp_ns(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return (a != NULL) - (b != NULL); /* written without a namespace: first */
    return strcmp(a, b);
}

static int cmp_index(size_t a, size_t b)
{
    return (a > b) - (a < b);
}

static int cmp_key(const char *group, const char *kind, const char *ns, const char *name,
                   const struct tr_resource *r)
{
    int c;
    if ((c = strcmp(group, r->group)) != 0 || (c = strcmp(kind, r->kind)) != 0 ||
        (c = cmp_ns(ns, r->ns)) != 0)
        return c;
    return strcmp(name, r->name);
}

static int by_key_order(const void *pa, const void *pb)
{
    const struct tr_resource *a = *(const struct tr_resource *const *)pa;
    const struct tr_resource *b = *(const struct tr_resource *const *)pb;
    int c = cmp_key(a->group, a->kind, a->ns, a->name, b);
    return c != 0 ? c : cmp_index(a->index, b->index);
}

static int by_kind_order(const void *pa, const void *pb)
{
    const struct tr_resource *a = *(const struct tr_resource *const *)pa;
    const struct tr_resource *b = *(const struct tr_resource *const *)pb;
    int c;
    if ((c = strcmp(a->group, b->group)) != 0 || (c = strcmp(a->kind, b->kind)) != 0)
        return c;
    return cmp_index(a->index, b->index);
}

static void report_duplicate(struct tr_diags *d, const struct tr_resource *first,
                             const struct tr_resource *again)
{
    if (d == NULL)
        return;
    struct tr_diag_where w = {
        .file = again->file,
        .line = again->line,
        .col = again->col,
        .kind = again->kind,
        .ns = again->ns,
        .name = again->name,
    };
    tr_diags_add(d, TR_DIAG_ERROR, &w,
                 "duplicate object: %s%s%s %s%s%s is already defined at %s:%u:%u; the first one "
                 "is kept",
                 again->group, again->group[0] != '\0' ? "/" : "", again->kind,
                 again->ns != NULL ? again->ns : "", again->ns != NULL ? "/" : "", again->name,
                 first->file, first->line, first->col);
}

/* Sorting a span of objects: a snapshot has a few kinds and many
 * objects, so the objects are first grouped by (group, kind) in load
 * order (which is already by_kind's order within a kind) and only each
 * kind's objects are sorted, by (namespace, name): far fewer and cheaper
 * comparisons than sorting everything by all four keys. A span with too
 * many kinds is sorted whole. */
#define SEAL_MAX_KINDS 256u

struct kind_run {
    const char *group, *kind;
    size_t n, at, fill;
};

static int kind_run_order(const void *pa, const void *pb)
{
    const struct kind_run *a = pa, *b = pb;
    int c = strcmp(a->group, b->group);
    return c != 0 ? c : strcmp(a->kind, b->kind);
}

static int by_name_order(const void *pa, const void *pb)
{
    const struct tr_resource *a = *(const struct tr_resource *const *)pa;
    const struct tr_resource *b = *(const struct tr_resource *const *)pb;
    int c = cmp_ns(a->ns, b->ns);
    if (c == 0)
        c = strcmp(a->name, b->name);
    return c != 0 ? c : cmp_index(a->index, b->index);
}

/* The kind of each of v[0, n) as an index into runs (sorted), and the
 * runs' sizes and starts; false when there are too many kinds. */
static bool group_kinds(struct tr_resource *const *v, size_t n, struct kind_run *runs,
                        size_t *n_runs, uint16_t *kind_of)
{
    size_t nr = 0, last = 0;
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        size_t k = last;
        if (k >= nr || strcmp(runs[k].kind, r->kind) != 0 || strcmp(runs[k].group, r->group) != 0) {
            for (k = 0; k < nr; k++)
                if (strcmp(runs[k].kind, r->kind) == 0 && strcmp(runs[k].group, r->group) == 0)
                    break;
            if (k == nr) {
                if (nr == SEAL_MAX_KINDS)
                    return false;
                runs[nr++] = (struct kind_run){.group = r->group, .kind = r->kind};
            }
        }
        runs[k].n++;
        kind_of[i] = (uint16_t)k;
        last = k;
    }
    /* sort the runs, then renumber each object's kind */
    uint16_t order[SEAL_MAX_KINDS];
    struct kind_run sorted[SEAL_MAX_KINDS];
    for (size_t k = 0; k < nr; k++) {
        sorted[k] = runs[k];
        sorted[k].fill = k; /* where it was */
    }
    qsort(sorted, nr, sizeof(*sorted), kind_run_order);
    size_t at = 0;
    for (size_t k = 0; k < nr; k++) {
        order[sorted[k].fill] = (uint16_t)k;
        sorted[k].at = at;
        sorted[k].fill = 0;
        at += sorted[k].n;
    }
    for (size_t k = 0; k < nr; k++)
        runs[k] = sorted[k];
    for (size_t i = 0; i < n; i++)
        kind_of[i] = order[kind_of[i]];
    *n_runs = nr;
    return true;
}

void res_order_free(struct res_order *o)
{
    free(o->by_key);
    free(o->same);
    free(o->by_kind);
    *o = (struct res_order){0};
}

bool res_order_make(struct tr_resource *const *v, size_t n, size_t base, struct res_order *o)
{
    *o = (struct res_order){.n = n};
    size_t m = n != 0 ? n : 1;
    const struct tr_resource **sorted = malloc(m * sizeof(*sorted));
    uint16_t *kind_of = malloc(m * sizeof(*kind_of));
    struct kind_run *runs = calloc(SEAL_MAX_KINDS, sizeof(*runs));
    o->by_key = malloc(m * sizeof(*o->by_key));
    o->same = malloc(m);
    o->by_kind = malloc(m * sizeof(*o->by_kind));
    bool ok = sorted != NULL && kind_of != NULL && runs != NULL && o->by_key != NULL &&
              o->same != NULL && o->by_kind != NULL;
    size_t n_runs = 0;
    if (ok && group_kinds(v, n, runs, &n_runs, kind_of)) {
        for (size_t i = 0; i < n; i++) {
            struct kind_run *k = &runs[kind_of[i]];
            o->by_kind[k->at + k->fill] = (uint32_t)i; /* load order within each kind */
            sorted[k->at + k->fill++] = v[i];
        }
        for (size_t k = 0; k < n_runs; k++)
            if (runs[k].n > 1)
                qsort(sorted + runs[k].at, runs[k].n, sizeof(*sorted), by_name_order);
    } else if (ok) {
        for (size_t i = 0; i < n; i++)
            sorted[i] = v[i];
        if (n > 1)
            qsort(sorted, n, sizeof(*sorted), by_kind_order);
        for (size_t i = 0; i < n; i++)
            o->by_kind[i] = (uint32_t)(sorted[i]->index - base);
        if (n > 1)
            qsort(sorted, n, sizeof(*sorted), by_key_order);
    }
    for (size_t i = 0; ok && i < n; i++) {
        o->by_key[i] = (uint32_t)(sorted[i]->index - base);
        const struct tr_resource *a = i > 0 ? sorted[i - 1] : NULL, *b = sorted[i];
        o->same[i] = a != NULL && cmp_key(a->group, a->kind, a->ns, a->name, b) == 0;
    }
    free(sorted);
    free(kind_of);
    free(runs);
    if (!ok)
        res_order_free(o);
    return ok;
}

bool res_set_add_run(struct tr_rset *rs, size_t from, size_t n, const struct res_order *order)
{
    if (rs->n_runs == rs->cap_runs) {
        size_t ncap = rs->cap_runs != 0 ? rs->cap_runs * 2 : 8;
        struct res_run *nv = realloc(rs->runs, ncap * sizeof(*nv));
        if (nv == NULL)
            return false;
        rs->runs = nv;
        rs->cap_runs = ncap;
    }
    rs->runs[rs->n_runs++] = (struct res_run){.from = from, .n = n, .order = order};
    return true;
}

/* ------------------------------------------------ merging sorted spans */

/* An object in a sorted span; same: it has the previous one's key. */
struct sent {
    const struct tr_resource *r;
    bool same;
};

typedef int (*sent_cmp)(const struct tr_resource *a, const struct tr_resource *b);

static int key_cmp(const struct tr_resource *a, const struct tr_resource *b)
{
    int c = cmp_key(a->group, a->kind, a->ns, a->name, b);
    return c != 0 ? c : cmp_index(a->index, b->index);
}

static int kind_cmp(const struct tr_resource *a, const struct tr_resource *b)
{
    int c;
    if ((c = strcmp(a->group, b->group)) != 0 || (c = strcmp(a->kind, b->kind)) != 0)
        return c;
    return cmp_index(a->index, b->index);
}

/* The end of the block of a[i, n) that sorts before pivot (a[i] does): an
 * exponential then a binary search, so a long block costs a few
 * comparisons. Spans from different files rarely interleave finely. */
static size_t gallop(const struct sent *a, size_t i, size_t n, const struct tr_resource *pivot,
                     sent_cmp cmp)
{
    size_t lo = i, step = 1;
    while (i + step < n && cmp(a[i + step].r, pivot) < 0) {
        lo = i + step;
        step *= 2;
    }
    size_t hi = i + step < n ? i + step : n; /* a[lo] < pivot; a[hi] > pivot or the end */
    while (lo + 1 < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp(a[mid].r, pivot) < 0)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

/* Appends block a[from, to) to out at *o: inside a block neighbours were
 * neighbours in their span, so only the first one's key is compared again
 * (with keys: cmp is key_cmp). */
static void put_block(struct sent *out, size_t *o, const struct sent *a, size_t from, size_t to,
                      bool keys)
{
    if (from == to)
        return;
    memcpy(out + *o, a + from, (to - from) * sizeof(*out));
    if (keys && *o > 0) {
        const struct tr_resource *p = out[*o - 1].r, *r = a[from].r;
        out[*o].same = cmp_key(p->group, p->kind, p->ns, p->name, r) == 0;
    }
    *o += to - from;
}

/* Merges sorted a[0, na) and b[0, nb) into out. No two objects are equal
 * under cmp (load order breaks ties). */
static void merge2(const struct sent *a, size_t na, const struct sent *b, size_t nb,
                   struct sent *out, sent_cmp cmp, bool keys)
{
    size_t i = 0, j = 0, o = 0;
    while (i < na && j < nb) {
        if (cmp(a[i].r, b[j].r) < 0) {
            size_t e = gallop(a, i, na, b[j].r, cmp);
            put_block(out, &o, a, i, e, keys);
            i = e;
        } else {
            size_t e = gallop(b, j, nb, a[i].r, cmp);
            put_block(out, &o, b, j, e, keys);
            j = e;
        }
    }
    put_block(out, &o, a, i, na, keys);
    put_block(out, &o, b, j, nb, keys);
}

/* Merges the sorted spans v[at[k], at[k + 1]) for k < n_spans, pairwise
 * until one is left; tmp has room for all. Returns the array holding the
 * result (v or tmp). at is overwritten. */
static struct sent *merge_spans(struct sent *v, struct sent *tmp, size_t *at, size_t n_spans,
                                sent_cmp cmp, bool keys)
{
    struct sent *src = v, *dst = tmp;
    while (n_spans > 1) {
        size_t k = 0, m = 0;
        for (; k + 1 < n_spans; k += 2) {
            merge2(src + at[k], at[k + 1] - at[k], src + at[k + 1], at[k + 2] - at[k + 1],
                   dst + at[k], cmp, keys);
            at[m++] = at[k];
        }
        if (k < n_spans) { /* an odd one out */
            memcpy(dst + at[k], src + at[k], (at[k + 1] - at[k]) * sizeof(*dst));
            at[m++] = at[k];
        }
        at[m] = at[n_spans];
        n_spans = m;
        struct sent *t = src;
        src = dst;
        dst = t;
    }
    return src;
}

/* Span [from, from + n) of rs->v, sorted as order says, appended to keys
 * and kinds at *at. */
static void put_span(const struct tr_rset *rs, size_t from, const struct res_order *order,
                     struct sent *keys, struct sent *kinds, size_t at)
{
    for (size_t i = 0; i < order->n; i++) {
        keys[at + i] = (struct sent){rs->v[from + order->by_key[i]], order->same[i] != 0};
        kinds[at + i] = (struct sent){rs->v[from + order->by_kind[i]], false};
    }
}

bool res_set_seal(struct tr_rset *rs, struct tr_diags *d)
{
    size_t n = rs->n, m = n != 0 ? n : 1;
    /* The spans: each recorded run, and what lies between them. */
    size_t max_spans = 2 * rs->n_runs + 1;
    struct sent *keys = malloc(m * sizeof(*keys)), *kinds = malloc(m * sizeof(*kinds));
    struct sent *tmp = malloc(m * sizeof(*tmp));
    size_t *at = malloc((max_spans + 1) * sizeof(*at)),
           *at2 = malloc((max_spans + 1) * sizeof(*at2));
    bool ok = keys != NULL && kinds != NULL && tmp != NULL && at != NULL && at2 != NULL;
    size_t n_spans = 0, cursor = 0;
    for (size_t k = 0; ok && k <= rs->n_runs; k++) {
        const struct res_run *run = k < rs->n_runs ? &rs->runs[k] : NULL;
        size_t end = run != NULL ? run->from : n;
        if (run != NULL && (run->from < cursor || run->from + run->n > n || run->order == NULL ||
                            run->order->n != run->n))
            continue;       /* cannot happen; if it does, its objects are sorted as the rest */
        if (end > cursor) { /* objects of no kept parse: sorted now */
            struct res_order o;
            if (!(ok = res_order_make(rs->v + cursor, end - cursor, cursor, &o)))
                break;
            put_span(rs, cursor, &o, keys, kinds, cursor);
            res_order_free(&o);
            at[n_spans++] = cursor;
        }
        if (run != NULL && run->n != 0) {
            put_span(rs, run->from, run->order, keys, kinds, run->from);
            at[n_spans++] = run->from;
        }
        cursor = run != NULL ? run->from + run->n : n;
    }
    struct tr_resource **all = NULL;
    const struct tr_resource **by_key = NULL, **by_kind = NULL;
    size_t kept = n;
    if (ok) {
        at[n_spans] = n;
        memcpy(at2, at, (n_spans + 1) * sizeof(*at));
        const struct sent *sk = merge_spans(keys, tmp, at, n_spans, key_cmp, true);
        struct sent *spare = sk == keys ? tmp : keys;
        const struct sent *sd = merge_spans(kinds, spare, at2, n_spans, kind_cmp, false);
        /* Equal keys sit together, the first loaded first: the rest are
         * duplicates, reported and dropped (marked by a NULL in v). */
        const struct tr_resource *first = NULL;
        for (size_t i = 0; i < n; i++) {
            const struct tr_resource *r = sk[i].r;
            if (i == 0 || !sk[i].same) {
                first = r;
                continue;
            }
            report_duplicate(d, first, r);
            rs->v[r->index] = NULL;
            kept--;
        }
        size_t mk = kept != 0 ? kept : 1;
        all = tr_arena_calloc(rs->arena, mk, sizeof(*all));
        by_key = tr_arena_calloc(rs->arena, mk, sizeof(*by_key));
        by_kind = tr_arena_calloc(rs->arena, mk, sizeof(*by_kind));
        ok = all != NULL && by_key != NULL && by_kind != NULL;
        for (size_t i = 0, k = 0, l = 0; ok && i < n; i++) {
            if (i == 0 || !sk[i].same)
                by_key[k++] = sk[i].r;
            if (rs->v[sd[i].r->index] != NULL) /* before the indexes change below */
                by_kind[l++] = sd[i].r;
        }
    }
    free(keys);
    free(kinds);
    free(tmp);
    free(at);
    free(at2);
    if (!ok)
        return false;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (rs->v[i] != NULL) {
            rs->v[i]->index = k;
            all[k++] = rs->v[i];
        }
    }
    free(rs->v);
    free(rs->runs);
    rs->runs = NULL;
    rs->n_runs = rs->cap_runs = 0;
    rs->v = all;
    rs->n = kept;
    rs->cap = kept;
    rs->by_key = by_key;
    rs->by_kind = by_kind;
    rs->sealed = true;
    return true;
}

struct tr_rset *tr_rset_from_buffer(const char *buf, size_t len, const char *name,
                                    struct tr_diags *d)
{
    struct tr_rset *rs = res_set_new();
    if (rs == NULL || !res_set_add_buffer(rs, buf, len, name, d) || !res_set_seal(rs, d)) {
        if (rs == NULL)
            res_report(d, TR_DIAG_ERROR, name, 0, 0, "out of memory");
        tr_rset_free(rs);
        return NULL;
    }
    return rs;
}

size_t tr_rset_count(const struct tr_rset *rs)
{
    return rs != NULL ? rs->n : 0;
}

const struct tr_resource *tr_rset_at(const struct tr_rset *rs, size_t i)
{
    return rs != NULL && i < rs->n ? rs->v[i] : NULL;
}

const struct tr_resource *const *tr_rset_of_kind(const struct tr_rset *rs, const char *group,
                                                 const char *kind, size_t *n)
{
    *n = 0;
    if (rs == NULL || !rs->sealed || kind == NULL || rs->n == 0)
        return NULL;
    if (group == NULL)
        group = "";
    /* The first entry not below (group, kind), then the first above it. */
    size_t lo = 0, hi = rs->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct tr_resource *r = rs->by_kind[mid];
        int c = strcmp(r->group, group);
        if (c == 0)
            c = strcmp(r->kind, kind);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t first = lo;
    hi = rs->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct tr_resource *r = rs->by_kind[mid];
        int c = strcmp(r->group, group);
        if (c == 0)
            c = strcmp(r->kind, kind);
        if (c <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *n = lo - first;
    return *n != 0 ? rs->by_kind + first : NULL;
}

const struct tr_resource *tr_rset_find(const struct tr_rset *rs, const char *group,
                                       const char *kind, const char *ns, const char *name)
{
    if (rs == NULL || !rs->sealed || kind == NULL || name == NULL)
        return NULL;
    if (group == NULL)
        group = "";
    size_t lo = 0, hi = rs->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_key(group, kind, ns, name, rs->by_key[mid]);
        if (c == 0)
            return rs->by_key[mid];
        if (c > 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Same tree, same text; positions aside. Depth is bounded by the parse. */
static bool node_equal(const struct tr_rnode *a, const struct tr_rnode *b)
{
    if (a == b)
        return true;
    if (a == NULL || b == NULL || a->kind != b->kind || a->n != b->n)
        return false;
    if (a->kind == TR_RNODE_SCALAR)
        return a->plain == b->plain && a->len == b->len &&
               (a->len == 0 || memcmp(a->s, b->s, a->len) == 0);
    const struct tr_rnode *x = a->head, *y = b->head;
    for (; x != NULL && y != NULL; x = x->next, y = y->next)
        if (!node_equal(x, y))
            return false;
    return x == NULL && y == NULL;
}

size_t tr_rset_diff(const struct tr_rset *a, const struct tr_rset *b,
                    bool (*cb)(void *arg, const struct tr_resource *x, const struct tr_resource *y),
                    void *arg)
{
    size_t na = a != NULL && a->sealed ? a->n : 0, nb = b != NULL && b->sealed ? b->n : 0;
    size_t i = 0, j = 0, found = 0;
    while (i < na || j < nb) {
        const struct tr_resource *x = i < na ? a->by_key[i] : NULL;
        const struct tr_resource *y = j < nb ? b->by_key[j] : NULL;
        if (x != NULL && y != NULL && x->obj == y->obj) {
            /* One node tree: the same object of one kept parse (a file
             * read once, at one path), so the same key, file and
             * document. Most of a watched store's objects. */
            i++, j++;
            continue;
        }
        int c = x == NULL ? 1 : y == NULL ? -1 : cmp_key(x->group, x->kind, x->ns, x->name, y);
        if (c < 0)
            y = NULL, i++;
        else if (c > 0)
            x = NULL, j++;
        else {
            i++, j++;
            bool same_file = x->file == y->file ||
                             (x->file != NULL && y->file != NULL && strcmp(x->file, y->file) == 0);
            if (x->doc == y->doc && same_file && node_equal(x->obj, y->obj))
                continue;
        }
        found++;
        if (!cb(arg, x, y))
            break;
    }
    return found;
}

void tr_rset_free(struct tr_rset *rs)
{
    if (rs == NULL)
        return;
    if (!rs->sealed)
        free(rs->v); /* once sealed, v lives in the arena */
    free(rs->docs);
    free(rs->runs);
    for (size_t i = 0; i < rs->n_shared; i++)
        res_parsed_release(rs->shared[i]);
    free(rs->shared);
    tr_arena_free(rs->arena);
    free(rs);
}

const char *tr_resource_label(const struct tr_resource *r, const char *key)
{
    if (r == NULL)
        return NULL;
    const struct tr_rnode *k = tr_rnode_key(r->labels, key);
    if (k == NULL)
        return NULL;
    return tr_rnode_is_null(k->next) ? "" : k->next->s;
}
