/* config/validate.c: the invariants of a whole model, however it was built.
 *
 * The loader runs this after reading a file; a control plane runs it on a
 * model it compiled. Two parts: every field is checked against the schema
 * tables (types, ranges, lengths, syntax: what the loader checked while
 * reading, now for values nobody read), then what relates fields and objects:
 * unique names, references resolved into the index fields, weights, mutually
 * exclusive fields, regexes, addresses. Defaults that depend on the model
 * (names of unnamed routes, HTTP/2 stream cap) are filled in here.
 *
 * Errors name the object's location: with a loaded file, the exact key or
 * value in it ("file:line:col: path: message", found in the tree by path);
 * for a compiled object, its origin ("VirtualService default/reviews:
 * spec.http[0].weighted_clusters[1].cluster: message").
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/prov_ssl.h>

#include "config/internal.h"
#include "core/arena.h"
#include "core/authz_syntax.h"

enum vat { AT_VALUE, AT_KEY };

struct vctx {
    struct tr_config *cfg;
    struct ld *ld;        /* loading: locate errors in its tree; else NULL */
    struct tr_arena *tmp; /* name tables */
    char **err;
    bool failed;
};

static bool has_origin(const struct tr_cfg_loc *loc)
{
    return loc->origin.kind != NULL || loc->origin.name != NULL;
}

/* out = "a.b" ("a[i]" when b is an index; either may be empty), cut to size
 * like the loader's field paths. */
static void join(char *out, size_t size, const char *a, const char *b)
{
    a = a != NULL ? a : "";
    b = b != NULL ? b : "";
    const char *parts[3] = {a, a[0] != '\0' && b[0] != '\0' && b[0] != '[' ? "." : "", b};
    size_t o = 0;
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(parts[i]);
        if (n > size - 1 - o)
            n = size - 1 - o;
        memmove(out + o, parts[i], n);
        o += n;
    }
    out[o] = '\0';
}

/* The node of base.suffix in the loaded tree, NULL without one. */
static const struct cnode *locate(const struct vctx *v, const struct tr_cfg_loc *base,
                                  const char *path, enum vat where, bool *found)
{
    *found = true;
    if (v->ld == NULL || v->ld->root == NULL || has_origin(base))
        return NULL;
    return cfg_tree_find(v->ld->root, path, where == AT_KEY, found);
}

/* Does base.suffix exist in the loaded file? (Always true for built models.) */
static bool written(const struct vctx *v, const struct tr_cfg_loc *base, const char *suffix)
{
    char path[CFG_PATH_MAX];
    bool found;
    join(path, sizeof(path), base->path, suffix);
    locate(v, base, path, AT_VALUE, &found);
    return found;
}

/* Error about field suffix (may be "") of the object at base. */
__attribute__((format(printf, 5, 6))) static bool verr(struct vctx *v,
                                                       const struct tr_cfg_loc *base,
                                                       const char *suffix, enum vat where,
                                                       const char *fmt, ...)
{
    if (v->failed)
        return false;
    char path[CFG_PATH_MAX], msg[CFG_ERR_MAX];
    join(path, sizeof(path), base->path, suffix);
    struct tr_cfg_loc loc = *base;
    loc.path = path;
    bool found;
    const struct cnode *n = locate(v, base, path, where, &found);
    if (n != NULL) {
        loc.line = n->line;
        loc.col = n->col;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tr_cfg_errorf(v->err, &loc, "%s", msg);
    v->failed = true;
    return false;
}

static bool voom(struct vctx *v)
{
    const struct tr_cfg_loc loc = {.file = v->cfg->file};
    return verr(v, &loc, "", AT_VALUE, "out of memory");
}

/* "line 3", "VirtualService default/x" or "listeners[0]": where an object
 * that another one clashes with was defined. */
static const char *where_defined(const struct vctx *v, const struct tr_cfg_loc *first,
                                 const char *suffix, char *buf, size_t size)
{
    if (has_origin(first)) {
        snprintf(buf, size, "by %s%s%s%s%s", first->origin.kind != NULL ? first->origin.kind : "",
                 first->origin.kind != NULL ? " " : "",
                 first->origin.ns != NULL ? first->origin.ns : "",
                 first->origin.ns != NULL ? "/" : "",
                 first->origin.name != NULL ? first->origin.name : "");
        return buf;
    }
    char path[CFG_PATH_MAX];
    bool found;
    join(path, sizeof(path), first->path, suffix);
    const struct cnode *n = locate(v, first, path, AT_VALUE, &found);
    if (n != NULL || first->line != 0) {
        snprintf(buf, size, "at line %u", n != NULL ? n->line : first->line);
        return buf;
    }
    snprintf(buf, size, "at %s", first->path != NULL ? first->path : "?");
    return buf;
}

/* An item's own location, or parent.key[idx] when a builder left it empty
 * (formatted only then: validate runs over every object of every reload). */
struct iloc {
    struct tr_cfg_loc loc;
    char path[CFG_PATH_MAX];
};

static const struct tr_cfg_loc *item_loc(const struct tr_cfg_loc *own,
                                         const struct tr_cfg_loc *parent, const char *key,
                                         size_t idx, struct iloc *il)
{
    if (own != NULL && (own->path != NULL || own->line != 0 || has_origin(own)))
        return own;
    char rel[CFG_PATH_MAX + 24];
    snprintf(rel, sizeof(rel), "%s[%zu]", key, idx);
    join(il->path, sizeof(il->path), parent->path, rel);
    il->loc = *parent;
    il->loc.path = il->path;
    return &il->loc;
}

static char *vstrdup(struct vctx *v, const char *s)
{
    if (v->cfg->arena == NULL) {
        struct tr_cfg_loc loc = {.file = v->cfg->file};
        verr(v, &loc, "", AT_VALUE,
             "the model has no arena for the defaults validate fills in (use tr_config_new)");
        return NULL;
    }
    char *d = tr_arena_strdup(v->cfg->arena, s);
    if (d == NULL)
        voom(v);
    return d;
}

/* --------------------------------------------------------- name tables */

struct name_slot {
    const char *name;
    int idx;
};

struct name_tab {
    struct name_slot *slots;
    size_t cap, n;
};

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
    const struct name_slot *sl = s != NULL ? name_slot(t, s) : NULL;
    return sl != NULL && sl->name != NULL ? sl->idx : -1;
}

/* Adds s; returns the index already holding it, -1 if new, -2 on OOM. */
static int name_add(struct vctx *v, struct name_tab *t, const char *s, int idx)
{
    if ((t->n + 1) * 2 > t->cap) {
        size_t ncap = t->cap == 0 ? 16 : t->cap * 2;
        struct name_slot *ns = tr_arena_calloc(v->tmp, ncap, sizeof(*ns));
        if (ns == NULL) {
            voom(v);
            return -2;
        }
        struct name_tab nt = {.slots = ns, .cap = ncap, .n = t->n};
        for (size_t i = 0; i < t->cap; i++) {
            if (t->slots[i].name != NULL)
                *name_slot(&nt, t->slots[i].name) = t->slots[i];
        }
        *t = nt;
    }
    struct name_slot *sl = name_slot(t, s);
    if (sl->name != NULL)
        return sl->idx;
    *sl = (struct name_slot){.name = s, .idx = idx};
    t->n++;
    return -1;
}

/* -------------------------------------------- fields, by the schema */

static const void *at(const void *obj, size_t off)
{
    return (const unsigned char *)obj + off;
}

/* The field path of prefix.key[idx] (idx < 0: none), for messages only. */
static const char *field_path(char *buf, size_t size, const char *prefix, const char *key, long idx)
{
    char k[CFG_PATH_MAX + 24];
    if (idx >= 0)
        snprintf(k, sizeof(k), "%s[%ld]", key, idx);
    else
        snprintf(k, sizeof(k), "%s", key);
    join(buf, size, prefix, k);
    return buf;
}

#define FIELD_ERR(...) verr(v, base, field_path(fp, sizeof(fp), prefix, key, idx), __VA_ARGS__)

static bool check_string(struct vctx *v, const struct tr_cfg_loc *base, const char *prefix,
                         const char *key, long idx, const struct cfg_field *fd, const char *s,
                         size_t maxlen)
{
    char why[CFG_WHY_MAX], b[96], fp[CFG_PATH_MAX];
    if (s[0] == '\0' && !(fd->flags & CF_EMPTY_OK))
        return FIELD_ERR(AT_VALUE, "must not be empty");
    if (fd->kind == CK_NAME && !cfg_check_name(s, why, sizeof(why)))
        return FIELD_ERR(AT_VALUE, "%s", why);
    if (!cfg_check_text(s, maxlen, (fd->flags & CF_CTL_OK) != 0, why, sizeof(why)))
        return FIELD_ERR(AT_VALUE, "%s", why);
    if (fd->check != NULL && !fd->check(s, why, sizeof(why)))
        return FIELD_ERR(AT_VALUE, "%s", why);
    if ((fd->flags & CF_LOWER) && !cfg_is_lower(s))
        return FIELD_ERR(AT_VALUE, "%s must be lower case",
                         cfg_show(b, sizeof(b), s, strlen(s), true));
    return true;
}

static bool check_addr(struct vctx *v, const struct tr_cfg_loc *base, const char *prefix,
                       const char *key, const struct cfg_field *fd, struct tr_cfg_addr *a, bool req)
{
    char fp[CFG_PATH_MAX];
    long idx = -1;
    uint16_t port;
    if (a->ss.ss_family == AF_UNSPEC && a->len == 0)
        return !req || FIELD_ERR(AT_VALUE, "missing required field");
    if (a->ss.ss_family == AF_INET && a->len == sizeof(struct sockaddr_in))
        port = ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    else if (a->ss.ss_family == AF_INET6 && a->len == sizeof(struct sockaddr_in6))
        port = ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    else
        return FIELD_ERR(AT_VALUE, "expected an IPv4 or IPv6 socket address (family %d, length %u)",
                         (int)a->ss.ss_family, (unsigned)a->len);
    if (port == 0 && !(fd->flags & CF_PORT0))
        return FIELD_ERR(AT_VALUE, "port must be between 1 and 65535, got 0");
    if (a->text == NULL) {
        /* Messages and /config_dump show the address as text. */
        char host[INET6_ADDRSTRLEN], text[INET6_ADDRSTRLEN + 16];
        bool v6 = a->ss.ss_family == AF_INET6;
        const void *raw = v6 ? (const void *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr
                             : (const void *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
        inet_ntop(a->ss.ss_family, raw, host, sizeof(host));
        snprintf(text, sizeof(text), v6 ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
        if ((a->text = vstrdup(v, text)) == NULL)
            return false;
    }
    return true;
}

static bool check_enum(struct vctx *v, const struct tr_cfg_loc *base, const char *prefix,
                       const char *key, const struct cfg_field *fd, const void *obj)
{
    char list[256], fp[CFG_PATH_MAX], b[96];
    long idx = -1;
    const char *s = NULL;
    int x = 0;
    if (fd->flags & CF_ENUM_STR) {
        s = *(const char *const *)at(obj, fd->off);
        for (size_t i = 0; s != NULL && i < fd->n_names; i++) {
            if (strcmp(s, fd->names[i]) == 0)
                return true;
        }
    } else {
        x = (fd->flags & CF_U16) ? *(const uint16_t *)at(obj, fd->off)
                                 : *(const int *)at(obj, fd->off);
        for (size_t i = 0; i < fd->n_names; i++) {
            if ((fd->values != NULL ? fd->values[i] : (int)i) == x)
                return true;
        }
    }
    size_t o = 0;
    list[0] = '\0';
    for (size_t i = 0; i < fd->n_names && o < sizeof(list); i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i != 0 ? ", " : "", fd->names[i]);
    if (fd->flags & CF_ENUM_STR)
        return FIELD_ERR(AT_VALUE, "expected one of %s, got %s", list,
                         s != NULL ? cfg_show(b, sizeof(b), s, strlen(s), true) : "null");
    return FIELD_ERR(AT_VALUE, "expected one of %s, got value %d", list, x);
}

static bool check_count(struct vctx *v, const struct tr_cfg_loc *base, const char *prefix,
                        const char *key, const struct cfg_field *fd, size_t n, const void *arr,
                        bool req)
{
    char fp[CFG_PATH_MAX];
    long idx = -1;
    if ((req || n > 0) && n < fd->min)
        return FIELD_ERR(AT_VALUE, "must have at least %u entr%s", fd->min,
                         fd->min == 1 ? "y" : "ies");
    if (n > fd->max)
        return FIELD_ERR(AT_VALUE, "has %zu entries; the limit is %u", n, fd->max);
    if (n > 0 && arr == NULL)
        return FIELD_ERR(AT_VALUE, "%zu entries but no array", n);
    return true;
}

/* CK_MAP: every name checked and lower case where the table says, each
 * once; every value checked. Entries are named prefix.key.NAME. */
static bool check_map(struct vctx *v, const struct tr_cfg_loc *base, const char *prefix,
                      const struct cfg_field *fd, const void *obj, bool req)
{
    const struct tr_name_value_cfg *arr =
        *(const struct tr_name_value_cfg *const *)at(obj, fd->off);
    size_t n = *(const size_t *)at(obj, fd->off_n);
    char kp[CFG_PATH_MAX], b[96];
    if (!check_count(v, base, prefix, fd->key, fd, n, arr, req))
        return false;
    join(kp, sizeof(kp), prefix, fd->key);
    const struct cfg_field name_fd = {
        .kind = CK_STR, .flags = fd->flags & CF_LOWER, .check = fd->check};
    const struct cfg_field value_fd = {
        .kind = CK_STR, .flags = fd->flags & CF_EMPTY_OK, .check = fd->value_check};
    for (size_t k = 0; k < n; k++) {
        if (arr[k].name == NULL)
            return verr(v, base, kp, AT_VALUE, "entry %zu has no name", k);
        if (!check_string(v, base, kp, arr[k].name, -1, &name_fd, arr[k].name, CFG_MAX_NAME))
            return false;
        if (arr[k].value == NULL) {
            char fp[CFG_PATH_MAX];
            return verr(v, base, field_path(fp, sizeof(fp), kp, arr[k].name, -1), AT_VALUE,
                        "expected a string, got null");
        }
        if (!check_string(v, base, kp, arr[k].name, -1, &value_fd, arr[k].value, fd->maxlen))
            return false;
        for (size_t j = 0; j < k; j++) {
            if (strcmp(arr[j].name, arr[k].name) == 0) {
                char fp[CFG_PATH_MAX];
                return verr(v, base, field_path(fp, sizeof(fp), kp, arr[k].name, -1), AT_KEY,
                            "duplicate name %s",
                            cfg_show(b, sizeof(b), arr[k].name, strlen(arr[k].name), true));
            }
        }
    }
    return true;
}

/* Whether string row i fills the model field of an earlier string row: the
 * later keys of a one-of group (a header match's prefix, suffix and regex
 * after exact). The value is checked once, by the first row, and by kind in
 * check_match(): checked by every row, `exact: ""` failed as an empty
 * prefix. */
static bool shares_earlier_row(const struct cfg_section *sec, size_t i)
{
    for (size_t j = 0; j < i; j++) {
        enum cfg_kind k = sec->fields[j].kind;
        if ((k == CK_STR || k == CK_NAME || k == CK_FILE) &&
            sec->fields[j].off == sec->fields[i].off)
            return true;
    }
    return false;
}

/* Fields of obj by sec's table, named prefix.key. top: the object's own
 * table, where "required" applies (a nested section may be absent as a
 * whole, so its required fields are the walker's business). lists: descend
 * into lists of objects. */
static bool check_section(struct vctx *v, const struct cfg_section *sec, void *obj,
                          const struct tr_cfg_loc *base, const char *prefix, bool top, bool lists)
{
    char fp[CFG_PATH_MAX];
    for (size_t i = 0; i < sec->n_fields; i++) {
        const struct cfg_field *fd = &sec->fields[i];
        const char *key = fd->key;
        long idx = -1;
        bool req = top && (fd->flags & CF_REQ);
        switch (fd->kind) {
        case CK_STR:
        case CK_NAME:
        case CK_FILE: {
            const char *s = *(const char *const *)at(obj, fd->off);
            if (shares_earlier_row(sec, i))
                break;
            if (s == NULL) {
                if (req)
                    return FIELD_ERR(AT_VALUE, "missing required field");
                break;
            }
            size_t maxlen = fd->kind == CK_STR    ? fd->max
                            : fd->kind == CK_NAME ? CFG_MAX_NAME
                                                  : CFG_MAX_STR;
            if (!check_string(v, base, prefix, key, -1, fd, s, maxlen))
                return false;
            break;
        }
        case CK_U32:
        case CK_U16:
        case CK_DURATION: {
            uint32_t x = fd->kind == CK_U16 ? *(const uint16_t *)at(obj, fd->off)
                                            : *(const uint32_t *)at(obj, fd->off);
            /* Without a default, 0 is "not set". */
            if (x == 0 && !(fd->flags & CF_DEF))
                break;
            if (x < fd->min || x > fd->max) {
                const char *u = fd->kind == CK_DURATION ? "ms" : "";
                return FIELD_ERR(AT_VALUE, "must be between %u%s and %u%s, got %u%s", fd->min, u,
                                 fd->max, u, x, u);
            }
            break;
        }
        case CK_ENUM:
            if (!check_enum(v, base, prefix, key, fd, obj))
                return false;
            break;
        case CK_ADDR:
            if (!check_addr(v, base, prefix, key, fd,
                            (struct tr_cfg_addr *)(uintptr_t)at(obj, fd->off), req))
                return false;
            break;
        case CK_STRLIST: {
            const char *const *arr = *(const char *const *const *)at(obj, fd->off);
            size_t n = *(const size_t *)at(obj, fd->off_n);
            if (!check_count(v, base, prefix, key, fd, n, arr, req))
                return false;
            for (size_t k = 0; k < n; k++) {
                if (arr[k] == NULL) {
                    idx = (long)k;
                    return FIELD_ERR(AT_VALUE, "expected a string, got null");
                }
                if (!check_string(v, base, prefix, key, (long)k, fd, arr[k], fd->maxlen))
                    return false;
            }
            break;
        }
        case CK_SECTION: {
            char sub[CFG_PATH_MAX];
            join(sub, sizeof(sub), prefix, key);
            if (!check_section(v, fd->sub, (void *)(uintptr_t)at(obj, fd->off), base, sub, false,
                               lists))
                return false;
            break;
        }
        case CK_LIST: {
            if (!lists)
                break;
            unsigned char *arr = *(unsigned char *const *)at(obj, fd->off);
            size_t n = *(const size_t *)at(obj, fd->off_n);
            if (!check_count(v, base, prefix, key, fd, n, arr, req))
                return false;
            char ikey[CFG_PATH_MAX];
            join(ikey, sizeof(ikey), prefix, key);
            for (size_t k = 0; k < n; k++) {
                void *item = arr + k * fd->item_size;
                bool own = fd->sub->loc_off != CFG_NO_LOC;
                struct iloc il;
                const struct tr_cfg_loc *ib = base;
                char rel[CFG_PATH_MAX] = "";
                /* Items with a location of their own are named by it. */
                if (own)
                    ib = item_loc(at(item, fd->sub->loc_off), base, ikey, k, &il);
                else
                    field_path(rel, sizeof(rel), prefix, key, (long)k);
                if (!check_section(v, fd->sub, item, ib, rel, true, true))
                    return false;
            }
            break;
        }
        case CK_MAP:
            if (!check_map(v, base, prefix, fd, obj, req))
                return false;
            break;
        case CK_BOOL:
        case CK_CUSTOM:
            break;
        case CK_OPTIONAL: {
            void *sub = *(void *const *)at(obj, fd->off);
            if (sub == NULL)
                break;
            char path[CFG_PATH_MAX];
            join(path, sizeof(path), prefix, key);
            /* Present, so its own required fields apply. */
            if (!check_section(v, fd->sub, sub, base, path, true, lists))
                return false;
            break;
        }
        case CK_PERCENT: {
            uint32_t x = *(const uint32_t *)at(obj, fd->off);
            if (x > TR_PER_MILLION)
                return FIELD_ERR(AT_VALUE, "must be between 0 and 100 percent, got %u per million",
                                 x);
            break;
        }
        }
    }
    return true;
}

/* ------------------------------------------------------ between fields */

/* Adds name (of the object at loc) to t; a repeat is an error naming where
 * the first was defined. firsts/stride/loc_off find the first's location. */
static bool unique(struct vctx *v, struct name_tab *t, const char *what, const char *name, int idx,
                   const struct tr_cfg_loc *loc, const char *list, const void *firsts,
                   size_t stride, size_t loc_off)
{
    if (name == NULL)
        return true; /* unnamed kinds are named by validate; required ones reported already */
    int first = name_add(v, t, name, idx);
    if (first == -2)
        return false;
    if (first < 0)
        return true;
    char b[96], w[160];
    struct iloc il;
    const struct tr_cfg_loc top = {.path = ""};
    const struct tr_cfg_loc *floc =
        item_loc(at(firsts, (size_t)first * stride + loc_off), &top, list, (size_t)first, &il);
    return verr(v, loc, "name", AT_VALUE, "duplicate %s %s (first defined %s)", what,
                cfg_show(b, sizeof(b), name, strlen(name), true),
                where_defined(v, floc, "name", w, sizeof(w)));
}

static bool resolve(struct vctx *v, const struct name_tab *t, const char *what, const char *name,
                    const struct tr_cfg_loc *loc, const char *suffix, int *out)
{
    *out = -1;
    if (name == NULL)
        return true;
    *out = name_find(t, name);
    if (*out >= 0)
        return true;
    char b[96];
    return verr(v, loc, suffix, AT_VALUE, "unknown %s %s", what,
                cfg_show(b, sizeof(b), name, strlen(name), true));
}

struct vnames {
    struct name_tab tls, clusters, tables, listeners, ext_authz;
};

/* A file or inline PEM, not both; "need" says whether one is required. */
static bool check_pem_source(struct vctx *v, const struct tr_cfg_loc *loc, const char *key,
                             const char *file, const char *pem, bool need)
{
    if (file != NULL && pem != NULL)
        return verr(v, loc, key, AT_KEY, "conflicts with %s_pem; set one of them", key);
    /* The message every required field gives; the docs say "or KEY_pem". */
    if (need && file == NULL && pem == NULL)
        return verr(v, loc, key, AT_VALUE, "missing required field");
    return true;
}

/* What each kind of context needs (docs/config.md, "tls[]"). */
static bool check_tls_kind(struct vctx *v, const struct tr_tls_cfg *t, const struct tr_cfg_loc *loc)
{
    static const char *const kinds[] = {"mesh", "server", "client"};
    const char *kind = kinds[t->kind];
    bool mesh = t->kind == TR_TLSK_MESH, client = t->kind == TR_TLSK_CLIENT;
    if (t->from_control_plane) {
        if (!mesh)
            return verr(v, loc, "from_control_plane", AT_KEY,
                        "only for type mesh (the control plane issues workload identities)");
        const char *set[][2] = {
            {t->cert_file ? "cert" : "cert_pem", t->cert_file ? t->cert_file : t->cert_pem},
            {t->key_file ? "key" : "key_pem", t->key_file ? t->key_file : t->key_pem},
            {t->ca_file ? "ca" : "ca_pem", t->ca_file ? t->ca_file : t->ca_pem}};
        for (size_t i = 0; i < 3; i++)
            if (set[i][1] != NULL)
                return verr(v, loc, set[i][0], AT_KEY,
                            "conflicts with from_control_plane: the control plane provides it");
    } else if (!check_pem_source(v, loc, "cert", t->cert_file, t->cert_pem, !client) ||
               !check_pem_source(v, loc, "key", t->key_file, t->key_pem, !client) ||
               !check_pem_source(v, loc, "ca", t->ca_file, t->ca_pem, mesh)) {
        return false;
    }
    bool has_cert = t->cert_file != NULL || t->cert_pem != NULL;
    bool has_key = t->key_file != NULL || t->key_pem != NULL;
    if (client && has_cert != has_key)
        return verr(v, loc, has_cert ? "key" : "cert", AT_VALUE,
                    "a client certificate needs both cert and key");
    if (!mesh && t->trust_domain != NULL)
        return verr(v, loc, "trust_domain", AT_KEY,
                    "only for type mesh (a %s context checks no SPIFFE ID)", kind);
    if (t->kind != TR_TLSK_SERVER && t->n_server_names > 0)
        return verr(v, loc, "server_names", AT_KEY,
                    "only for type server (it selects a certificate by SNI)");
    return true;
}

static bool check_tls(struct vctx *v, struct vnames *nt, const struct tr_cfg_loc *top)
{
    struct tr_config *cfg = v->cfg;
    for (size_t i = 0; i < cfg->n_tls; i++) {
        struct tr_tls_cfg *t = &cfg->tls[i];
        struct iloc tmp;
        const struct tr_cfg_loc *loc = item_loc(&t->loc, top, "tls", i, &tmp);
        if (!check_section(v, &cfg_tls_section, t, loc, "", true, true) ||
            !unique(v, &nt->tls, "TLS context name", t->name, (int)i, loc, "tls", cfg->tls,
                    sizeof(*t), offsetof(struct tr_tls_cfg, loc)) ||
            !check_tls_kind(v, t, loc))
            return false;
    }
    return true;
}

/* ---- outlier detection, consistent hashing, circuit breakers ---- */

static bool is_prime(uint32_t n)
{
    if (n < 2)
        return false;
    for (uint32_t d = 2; d <= n / d; d++)
        if (n % d == 0)
            return false;
    return true;
}

static bool check_hash_policy(struct vctx *v, struct tr_cluster_cfg *c,
                              const struct tr_cfg_loc *loc)
{
    struct tr_hash_policy_cfg *h = &c->hash;
    struct tr_cluster_cfg dc;
    tr_cfg_cluster_defaults(&dc);
    const struct tr_hash_policy_cfg def = dc.hash;
    /* Exactly one source, told by which field is set. */
    const struct {
        bool set;
        enum tr_hash_source source;
    } sources[] = {
        {h->header != NULL, TR_HASH_HEADER},
        {h->cookie != NULL, TR_HASH_COOKIE},
        {h->source_ip, TR_HASH_SOURCE_IP},
        {h->query_param != NULL, TR_HASH_QUERY_PARAM},
    };
    h->source = TR_HASH_NONE;
    for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++) {
        if (!sources[i].set)
            continue;
        if (h->source != TR_HASH_NONE)
            return verr(v, loc, "hash_policy", AT_KEY,
                        "set exactly one of header, cookie, source_ip, query_param");
        h->source = sources[i].source;
    }
    bool cookie_extra = h->cookie_path != NULL || h->cookie_ttl_ms != 0 || h->cookie_generate;
    if (cookie_extra && h->cookie == NULL)
        return verr(v, loc, "hash_policy.cookie.name", AT_VALUE, "missing required field");
    if (!h->cookie_generate && (h->cookie_path != NULL || h->cookie_ttl_ms != 0))
        return verr(
            v, loc, h->cookie_path != NULL ? "hash_policy.cookie.path" : "hash_policy.cookie.ttl",
            AT_KEY, "only used for a cookie the proxy generates, which generate: false turns off");
    bool hashing = c->lb == TR_LB_RING_HASH || c->lb == TR_LB_MAGLEV;
    if (!hashing && (h->source != TR_HASH_NONE || cookie_extra))
        return verr(v, loc, "hash_policy", AT_KEY,
                    "only used with lb: ring_hash or maglev; with this lb it would be ignored");
    if (c->lb != TR_LB_RING_HASH && h->ring_min_size != 0 && h->ring_min_size != def.ring_min_size)
        return verr(v, loc, "ring_hash", AT_KEY,
                    "only used with lb: ring_hash; with this lb it would be ignored");
    if (c->lb != TR_LB_MAGLEV && h->maglev_table_size != 0 &&
        h->maglev_table_size != def.maglev_table_size)
        return verr(v, loc, "maglev", AT_KEY,
                    "only used with lb: maglev; with this lb it would be ignored");
    if (c->lb == TR_LB_MAGLEV && !is_prime(h->maglev_table_size))
        return verr(v, loc, "maglev.table_size", AT_VALUE,
                    "must be a prime number (Maglev's permutations need it), got %u",
                    h->maglev_table_size);
    return true;
}

static bool check_outlier(struct vctx *v, const struct tr_cluster_cfg *c,
                          const struct tr_cfg_loc *loc)
{
    const struct tr_outlier_cfg *o = &c->outlier;
    struct tr_cluster_cfg dc;
    tr_cfg_cluster_defaults(&dc);
    const struct tr_outlier_cfg def = dc.outlier;
    bool customized = o->consecutive_5xx != def.consecutive_5xx ||
                      o->consecutive_gateway != def.consecutive_gateway ||
                      o->consecutive_local != def.consecutive_local ||
                      o->split_local != def.split_local || o->interval_ms != def.interval_ms ||
                      o->base_ejection_ms != def.base_ejection_ms ||
                      o->max_ejection_percent != def.max_ejection_percent ||
                      o->min_health_percent != def.min_health_percent;
    if (!o->enabled && customized)
        return verr(v, loc, "outlier_detection.enabled", AT_VALUE,
                    "false, so the other outlier_detection settings would be ignored");
    if (!o->split_local && o->consecutive_local != def.consecutive_local)
        return verr(v, loc, "outlier_detection.consecutive_local_origin_failures", AT_KEY,
                    "only used with split_external_local_origin_errors: true (otherwise local "
                    "failures count as 503 and 504 responses)");
    return true;
}

/* ---- endpoints given by name (DNS) ---- */

/* An endpoint's address: an IP address (addr), or a DNS name (host, port)
 * with addr unset; fills addr.text ("host:port") for a built model. */
static bool check_endpoint_address(struct vctx *v, struct tr_endpoint_cfg *e,
                                   const struct tr_cfg_loc *loc)
{
    static const struct cfg_field address = {.key = "address", .kind = CK_ADDR};
    char why[CFG_WHY_MAX], b[96];
    if (e->host == NULL)
        return check_addr(v, loc, "", "address", &address, &e->addr, true);
    if (e->addr.len != 0 || e->addr.ss.ss_family != AF_UNSPEC)
        return verr(v, loc, "address", AT_VALUE,
                    "both an IP address and a host name; an endpoint has one or the other");
    if (!cfg_check_dns_name(e->host, why, sizeof(why)))
        return verr(v, loc, "address", AT_VALUE, "%s", why);
    if (!cfg_is_lower(e->host))
        return verr(v, loc, "address", AT_VALUE, "host name %s must be lower case",
                    cfg_show(b, sizeof(b), e->host, strlen(e->host), true));
    if (e->port == 0)
        return verr(v, loc, "address", AT_VALUE, "port must be between 1 and 65535, got 0");
    if (e->addr.text == NULL) {
        char text[300];
        snprintf(text, sizeof(text), "%s:%u", e->host, (unsigned)e->port);
        if ((e->addr.text = vstrdup(v, text)) == NULL)
            return false;
    }
    return true;
}

/* dns settings apply to endpoints given by name; on a cluster without any
 * they would be ignored. The defaults are filled in for every cluster, so a
 * validated model validates again. */
static bool check_cluster_dns(struct vctx *v, struct tr_cluster_cfg *c,
                              const struct tr_cfg_loc *loc)
{
    const struct tr_dns_cfg *d = &c->dns;
    if (c->n_dns_endpoints == 0 && (d->mode != TR_DNS_ALL || d->family != TR_DNS_AUTO ||
                                    (d->refresh_ms != 0 && d->refresh_ms != CFG_DNS_REFRESH_DEF)))
        return verr(v, loc, "dns", AT_KEY,
                    "DNS settings on a cluster whose endpoints are all IP addresses would be "
                    "ignored; remove them");
    if (c->dns.refresh_ms == 0)
        c->dns.refresh_ms = CFG_DNS_REFRESH_DEF;
    return true;
}

/* Mesh contexts check SPIFFE IDs, client contexts host names: each field
 * belongs to one of the two. */
static bool check_cluster_tls(struct vctx *v, struct tr_cluster_cfg *c,
                              const struct tr_cfg_loc *loc)
{
    c->mesh_tls = false;
    if (c->tls < 0) {
        if (c->n_subject_alt_names > 0)
            return verr(v, loc, "tls.subject_alt_names", AT_KEY, "needs tls.context");
        if (c->insecure_skip_verify)
            return verr(v, loc, "tls.insecure_skip_verify", AT_KEY, "needs tls.context");
        return true;
    }
    enum tr_tls_kind kind = v->cfg->tls[c->tls].kind;
    if (kind == TR_TLSK_SERVER)
        return verr(v, loc, "tls.context", AT_VALUE,
                    "TLS context %s is of type server; a cluster needs a mesh or client context",
                    c->tls_name);
    c->mesh_tls = kind == TR_TLSK_MESH;
    if (kind == TR_TLSK_MESH) {
        if (c->n_subject_alt_names > 0)
            return verr(v, loc, "tls.subject_alt_names", AT_KEY,
                        "only with a client context (a mesh context checks server_ids)");
        if (c->insecure_skip_verify)
            return verr(v, loc, "tls.insecure_skip_verify", AT_KEY,
                        "only with a client context (mesh peers are always verified)");
        return true;
    }
    if (c->n_server_ids > 0)
        return verr(v, loc, "tls.server_ids", AT_KEY,
                    "only with a mesh context (a client context checks subject_alt_names)");
    if (c->insecure_skip_verify && c->n_subject_alt_names > 0)
        return verr(v, loc, "tls.subject_alt_names", AT_KEY,
                    "would be ignored: insecure_skip_verify is set");
    /* Fail closed: a verified chain alone proves nothing about which server. */
    if (!c->insecure_skip_verify && c->n_subject_alt_names == 0 && c->sni == NULL)
        return verr(v, loc, "tls", AT_KEY,
                    "a client context needs the server's name: set sni or subject_alt_names "
                    "(or insecure_skip_verify)");
    return true;
}

/* Warm-up scales the weights of round robin and least request (Envoy's
 * slow start has no meaning for the others); locality weights group
 * endpoints, so each endpoint's locality needs one. */
static bool check_balancing(struct vctx *v, const struct tr_cluster_cfg *c,
                            const struct tr_cfg_loc *loc)
{
    const struct tr_warmup_cfg *w = &c->warmup;
    if (w->duration_ms > 0 && c->lb != TR_LB_ROUND_ROBIN && c->lb != TR_LB_LEAST_REQUEST)
        return verr(v, loc, "warmup", AT_KEY,
                    "only used with lb: round_robin or least_request; with this lb it would be "
                    "ignored");
    if (w->duration_ms > 0 && w->aggression == 0)
        return verr(v, loc, "warmup.aggression", AT_VALUE, "must be greater than 0");
    if (c->n_locality_weights == 0)
        return true;
    if (c->lb == TR_LB_RING_HASH || c->lb == TR_LB_MAGLEV)
        return verr(v, loc, "locality_weights", AT_KEY,
                    "not used with consistent hashing (lb: ring_hash or maglev), as in Envoy; "
                    "with this lb it would be ignored");
    for (size_t i = 0; i < c->n_locality_weights; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->locality_weights[i].locality, c->locality_weights[j].locality) == 0) {
                char key[64];
                snprintf(key, sizeof(key), "locality_weights[%zu].locality", i);
                return verr(v, loc, key, AT_VALUE, "locality \"%s\" is listed twice",
                            c->locality_weights[i].locality);
            }
    for (size_t k = 0; k < c->n_endpoints; k++) {
        const struct tr_endpoint_cfg *e = &c->endpoints[k];
        const char *l = e->locality != NULL ? e->locality : "";
        bool listed = false;
        for (size_t i = 0; i < c->n_locality_weights && !listed; i++)
            listed = strcmp(c->locality_weights[i].locality, l) == 0;
        if (!listed) {
            struct iloc tmp;
            return verr(v, item_loc(&e->loc, loc, "endpoints", k, &tmp), "locality",
                        e->locality != NULL ? AT_VALUE : AT_KEY,
                        "locality \"%s\" has no entry in the cluster's locality_weights (\"\" "
                        "stands for none): the "
                        "endpoint would get no traffic",
                        l);
        }
    }
    return true;
}

static bool check_cluster(struct vctx *v, struct vnames *nt, struct tr_cluster_cfg *c,
                          const struct tr_cfg_loc *loc)
{
    if (!check_hash_policy(v, c, loc) || !check_outlier(v, c, loc) || !check_balancing(v, c, loc))
        return false;
    if (c->original_destination && c->n_endpoints > 0)
        return verr(v, loc, "endpoints", AT_KEY,
                    "must be empty with original_destination: each connection's original "
                    "destination is its endpoint");
    if (c->original_destination && (c->lb == TR_LB_RING_HASH || c->lb == TR_LB_MAGLEV))
        return verr(v, loc, "lb", AT_VALUE,
                    "a hash balancer has nothing to choose with original_destination");
    if (!resolve(v, &nt->tls, "TLS context", c->tls_name, loc, "tls.context", &c->tls))
        return false;
    if (c->tls_name == NULL && c->n_server_ids > 0)
        return verr(v, loc, "tls.server_ids", AT_KEY,
                    "needs tls.context (a plaintext cluster "
                    "has no server identity to check)");
    if (c->tls_name == NULL && c->sni != NULL)
        return verr(v, loc, "tls.sni", AT_KEY, "needs tls.context (SNI is sent over TLS only)");
    if (!check_cluster_tls(v, c, loc))
        return false;
    /* The socket options count whole seconds: a value they would round is
     * refused rather than changed. */
    const struct tr_tcp_keepalive_cfg *ka = c->tcp_keepalive;
    if (ka != NULL && (ka->time_ms % 1000 != 0 || ka->interval_ms % 1000 != 0))
        return verr(v, loc,
                    ka->time_ms % 1000 != 0 ? "tcp_keepalive.time" : "tcp_keepalive.interval",
                    AT_VALUE, "must be whole seconds (the socket option's unit)");
    /* The default is filled in below for every protocol (the runtime and
     * /config_dump show it), so a validated model validates again: only a
     * value other than the default is a setting HTTP/1.1 would ignore. The
     * loader also refuses an http2 block on an http1 cluster (sections.c). */
    if (c->protocol == TR_UPROTO_HTTP1 && c->h2_max_streams != 0 &&
        c->h2_max_streams != CFG_H2_STREAMS_DEF)
        return verr(v, loc, "http2", AT_KEY,
                    "HTTP/2 settings on a cluster that speaks HTTP/1.1 (protocol: http1) would "
                    "be ignored; set protocol to http2 or original, or remove them");
    if (c->h2_max_streams == 0)
        c->h2_max_streams = CFG_H2_STREAMS_DEF;
    c->n_dns_endpoints = 0;
    for (size_t k = 0; k < c->n_endpoints; k++) {
        struct tr_endpoint_cfg *e = &c->endpoints[k];
        struct iloc tmp;
        if (!check_endpoint_address(v, e, item_loc(&e->loc, loc, "endpoints", k, &tmp)))
            return false;
        c->n_dns_endpoints += e->host != NULL;
        if (e->name == NULL)
            e->name = e->addr.text;
    }
    return check_cluster_dns(v, c, loc);
}

static bool check_clusters(struct vctx *v, struct vnames *nt, const struct tr_cfg_loc *top)
{
    struct tr_config *cfg = v->cfg;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        struct tr_cluster_cfg *c = &cfg->clusters[i];
        struct iloc tmp;
        const struct tr_cfg_loc *loc = item_loc(&c->loc, top, "clusters", i, &tmp);
        if (!check_section(v, &cfg_cluster_section, c, loc, "", true, true) ||
            !unique(v, &nt->clusters, "cluster name", c->name, (int)i, loc, "clusters",
                    cfg->clusters, sizeof(*c), offsetof(struct tr_cluster_cfg, loc)) ||
            !check_cluster(v, nt, c, loc))
            return false;
    }
    return true;
}

static const char *const path_keys[] = {"match.path.prefix", "match.path.exact",
                                        "match.path.regex"};
static const char *const header_keys[] = {"exact", "prefix", "suffix", "regex", "present"};

static bool check_match(struct vctx *v, struct tr_route_cfg *r, const struct tr_cfg_loc *loc)
{
    char why[CFG_WHY_MAX];
    if ((unsigned)r->path_kind > TR_PATH_REGEX)
        return verr(v, loc, "match.path", AT_VALUE, "unknown path match kind %d",
                    (int)r->path_kind);
    const char *pk = path_keys[r->path_kind];
    if (r->path == NULL) {
        if (r->path_kind != TR_PATH_PREFIX)
            return verr(v, loc, pk, AT_VALUE, "missing required field");
        r->path = "/";
    }
    if (r->path_kind != TR_PATH_REGEX && r->path[0] != '/')
        return verr(v, loc, pk, AT_VALUE, "must start with \"/\"");
    if (r->path_kind == TR_PATH_REGEX &&
        !cfg_check_regex(r->path, r->path_ignore_case, why, sizeof(why)))
        return verr(v, loc, pk, AT_VALUE, "%s", why);
    for (size_t k = 0; k < r->n_headers; k++) {
        struct tr_header_match_cfg *h = &r->headers[k];
        struct iloc tmp;
        const struct tr_cfg_loc *hloc = item_loc(&h->loc, loc, "match.headers", k, &tmp);
        if ((unsigned)h->kind > TR_HMATCH_PRESENT)
            return verr(v, hloc, "", AT_VALUE, "unknown header match kind %d", (int)h->kind);
        const char *hk = header_keys[h->kind];
        if (h->kind == TR_HMATCH_PRESENT)
            continue;
        if (h->value == NULL)
            return verr(v, hloc, hk, AT_VALUE, "missing required field");
        if (h->kind != TR_HMATCH_EXACT && h->value[0] == '\0')
            return verr(v, hloc, hk, AT_VALUE, "must not be empty");
        if (!cfg_check_text(h->value, CFG_MAX_STR, false, why, sizeof(why)))
            return verr(v, hloc, hk, AT_VALUE, "%s", why);
        if (h->kind == TR_HMATCH_REGEX && !cfg_check_regex(h->value, false, why, sizeof(why)))
            return verr(v, hloc, hk, AT_VALUE, "%s", why);
    }
    for (size_t k = 0; k < r->n_query; k++) {
        const struct tr_query_match_cfg *q = &r->query[k];
        struct iloc tmp;
        const struct tr_cfg_loc *qloc = item_loc(&q->loc, loc, "match.query_params", k, &tmp);
        if ((unsigned)q->kind > TR_HMATCH_PRESENT || q->kind == TR_HMATCH_SUFFIX)
            return verr(v, qloc, "", AT_VALUE, "unknown query parameter match kind %d",
                        (int)q->kind);
        const char *qk = header_keys[q->kind];
        if (q->kind == TR_HMATCH_PRESENT)
            continue;
        if (q->value == NULL)
            return verr(v, qloc, qk, AT_VALUE, "missing required field");
        if (q->kind != TR_HMATCH_EXACT && q->value[0] == '\0')
            return verr(v, qloc, qk, AT_VALUE, "must not be empty");
        bool ok = q->kind == TR_HMATCH_REGEX ? cfg_check_regex(q->value, false, why, sizeof(why))
                                             : cfg_check_query_value(q->value, why, sizeof(why));
        if (!ok)
            return verr(v, qloc, qk, AT_VALUE, "%s", why);
    }
    return true;
}

/* ------------------------------------------------------- header edits */

/* The most one program can hold: two levels (route, destination) of
 * remove + set names dropped, and of set + add values emitted. */
#define EDIT_MAX (4u * CFG_MAX_HEADER_OPS)

struct edit_build {
    struct tr_header_edit_name drop[EDIT_MAX];
    struct tr_header_edit_field emit[EDIT_MAX];
    uint32_t n_drop, n_emit;
};

static bool ops_empty(const struct tr_header_ops_cfg *o)
{
    return o->n_remove == 0 && o->n_set == 0 && o->n_add == 0;
}

/* Every value of name goes: the received ones (dropped) and those emitted
 * so far. */
static void edit_remove(struct edit_build *b, const char *name)
{
    uint32_t len = (uint32_t)strlen(name), o = 0;
    for (uint32_t i = 0; i < b->n_emit; i++) {
        if (b->emit[i].name_len != len || memcmp(b->emit[i].name, name, len) != 0)
            b->emit[o++] = b->emit[i];
    }
    b->n_emit = o;
    for (uint32_t i = 0; i < b->n_drop; i++) {
        if (b->drop[i].len == len && memcmp(b->drop[i].name, name, len) == 0)
            return;
    }
    b->drop[b->n_drop++] = (struct tr_header_edit_name){name, len};
}

static void edit_append(struct edit_build *b, const struct tr_name_value_cfg *nv)
{
    b->emit[b->n_emit++] = (struct tr_header_edit_field){
        nv->name, nv->value, (uint32_t)strlen(nv->name), (uint32_t)strlen(nv->value)};
}

/* One level's edits in Envoy's order: remove, then set (remove and
 * append), then add (append). */
static void edit_apply(struct edit_build *b, const struct tr_header_ops_cfg *ops)
{
    for (size_t i = 0; i < ops->n_remove; i++)
        edit_remove(b, ops->remove[i]);
    for (size_t i = 0; i < ops->n_set; i++) {
        edit_remove(b, ops->set[i].name);
        edit_append(b, &ops->set[i]);
    }
    for (size_t i = 0; i < ops->n_add; i++)
        edit_append(b, &ops->add[i]);
}

/* What a reply made by the proxy itself carries besides a response edit's
 * fields (content-type, content-length, connection; or gRPC's content-type,
 * grpc-status, grpc-message): room kept so that such a reply always fits. */
#define EDIT_LOCAL_FIELDS 3u
#define EDIT_LOCAL_BYTES  256u

/* The program of the route's edits a followed by the destination's b (NULL:
 * none), in the config's arena; *out NULL when there is nothing to do. Its
 * additions alone (with a local reply's fields, for a response) must fit
 * the limits every message is held to; errors name suffix of the object at
 * loc. */
static bool edit_build(struct vctx *v, const struct tr_header_ops_cfg *a,
                       const struct tr_header_ops_cfg *b, bool response,
                       const struct tr_cfg_loc *loc, const char *suffix,
                       const struct tr_header_edit **out)
{
    *out = NULL;
    if (ops_empty(a) && (b == NULL || ops_empty(b)))
        return true;
    struct edit_build *eb = tr_arena_alloc(v->tmp, sizeof(*eb));
    if (eb == NULL)
        return voom(v);
    eb->n_drop = eb->n_emit = 0;
    edit_apply(eb, a);
    if (b != NULL)
        edit_apply(eb, b);
    const struct tr_limits_cfg *lim = &v->cfg->limits;
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < eb->n_emit; i++)
        bytes += eb->emit[i].name_len + eb->emit[i].value_len;
    uint32_t own_fields = response ? EDIT_LOCAL_FIELDS : 0,
             own_bytes = response ? EDIT_LOCAL_BYTES : 0;
    const char *own = response ? " (with the 3 fields of a reply the proxy makes itself)" : "";
    if (eb->n_emit + own_fields > lim->max_headers)
        return verr(v, loc, suffix, AT_KEY,
                    "the edits add %u header field%s%s, more than limits.max_headers (%u)",
                    eb->n_emit, eb->n_emit == 1 ? "" : "s", own, lim->max_headers);
    /* ": " and CRLF per field, as the head is counted on the wire */
    if (bytes + 4u * eb->n_emit + own_bytes > lim->max_header_bytes)
        return verr(v, loc, suffix, AT_KEY,
                    "the edits add %llu bytes of header fields%s, more than "
                    "limits.max_header_bytes (%u)",
                    (unsigned long long)(bytes + 4u * eb->n_emit), own, lim->max_header_bytes);
    if (v->cfg->arena == NULL) {
        const struct tr_cfg_loc top = {.file = v->cfg->file};
        return verr(v, &top, "", AT_VALUE,
                    "the model has no arena for the header edits validate builds (use "
                    "tr_config_new)");
    }
    struct tr_header_edit *e = tr_arena_calloc(v->cfg->arena, 1, sizeof(*e));
    struct tr_header_edit_name *drop =
        eb->n_drop > 0 ? tr_arena_calloc(v->cfg->arena, eb->n_drop, sizeof(*drop)) : NULL;
    struct tr_header_edit_field *emit =
        eb->n_emit > 0 ? tr_arena_calloc(v->cfg->arena, eb->n_emit, sizeof(*emit)) : NULL;
    if (e == NULL || (eb->n_drop > 0 && drop == NULL) || (eb->n_emit > 0 && emit == NULL))
        return voom(v);
    if (eb->n_drop > 0)
        memcpy(drop, eb->drop, eb->n_drop * sizeof(*drop));
    if (eb->n_emit > 0)
        memcpy(emit, eb->emit, eb->n_emit * sizeof(*emit));
    for (uint32_t i = 0; i < eb->n_drop; i++)
        e->drop_len_mask |= 1ull << (drop[i].len % 64);
    e->drop = drop;
    e->n_drop = eb->n_drop;
    e->emit = emit;
    e->n_emit = eb->n_emit;
    e->emit_bytes = (uint32_t)bytes; /* <= max_header_bytes, checked above */
    *out = e;
    return true;
}

/* A remove list names each header once (maps are checked by the schema). */
static bool check_remove_list(struct vctx *v, const struct tr_header_ops_cfg *ops,
                              const struct tr_cfg_loc *loc, const char *key)
{
    for (size_t i = 0; i < ops->n_remove; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(ops->remove[i], ops->remove[j]) == 0) {
                char suffix[64], b[96];
                snprintf(suffix, sizeof(suffix), "%s.remove[%zu]", key, i);
                return verr(v, loc, suffix, AT_VALUE, "duplicate name %s (first at remove[%zu])",
                            cfg_show(b, sizeof(b), ops->remove[i], strlen(ops->remove[i]), true),
                            j);
            }
        }
    }
    return true;
}

static bool only_connect(const struct tr_route_cfg *r)
{
    for (size_t i = 0; i < r->n_methods; i++) {
        if (strcmp(r->methods[i], "CONNECT") != 0)
            return false;
    }
    return r->n_methods > 0;
}

/* The programs the proxy runs: the route's own (direct responses) and, per
 * destination, the route's followed by the destination's. */
static bool check_header_edits(struct vctx *v, struct tr_route_cfg *r, const struct tr_cfg_loc *loc)
{
    if (!check_remove_list(v, &r->request_headers, loc, "request_headers") ||
        !check_remove_list(v, &r->response_headers, loc, "response_headers"))
        return false;
    bool any = !ops_empty(&r->request_headers) || !ops_empty(&r->response_headers);
    if (r->direct_status != 0 && !ops_empty(&r->request_headers))
        return verr(v, loc, "request_headers", AT_KEY,
                    "a direct_response route sends no request upstream to edit");
    const struct tr_header_edit *req_route = NULL;
    if (!edit_build(v, &r->request_headers, NULL, false, loc, "request_headers", &req_route) ||
        !edit_build(v, &r->response_headers, NULL, true, loc, "response_headers",
                    &r->response_edit))
        return false;
    for (size_t k = 0; k < r->n_clusters; k++) {
        struct tr_weighted_cluster_cfg *wc = &r->clusters[k];
        struct iloc tmp;
        const struct tr_cfg_loc *wloc = item_loc(&wc->loc, loc, "weighted_clusters", k, &tmp);
        if (!check_remove_list(v, &wc->request_headers, wloc, "request_headers") ||
            !check_remove_list(v, &wc->response_headers, wloc, "response_headers"))
            return false;
        any |= !ops_empty(&wc->request_headers) || !ops_empty(&wc->response_headers);
        wc->request_edit = req_route;
        wc->response_edit = r->response_edit;
        if (!ops_empty(&wc->request_headers) &&
            !edit_build(v, &r->request_headers, &wc->request_headers, false, wloc,
                        "request_headers", &wc->request_edit))
            return false;
        if (!ops_empty(&wc->response_headers) &&
            !edit_build(v, &r->response_headers, &wc->response_headers, true, wloc,
                        "response_headers", &wc->response_edit))
            return false;
    }
    if (any && only_connect(r))
        return verr(v, loc, "match.methods", AT_VALUE,
                    "header edits do not apply to CONNECT tunnels (no HTTP message is "
                    "forwarded); remove them or match other methods too");
    return true;
}

/* ------------------------------------------------- retries and mirroring */

/* What a route without `retries` runs with (the table's defaults, and the
 * conditions of Istio's default policy: connect-failure, refused-stream,
 * unavailable, cancelled, retriable-status-codes naming no code). */
#define RETRY_ON_DEFAULT                                                                           \
    (TR_RETRY_ON_CONNECT_FAILURE | TR_RETRY_ON_REFUSED_STREAM | TR_RETRY_ON_UNAVAILABLE |          \
     TR_RETRY_ON_CANCELLED | TR_RETRY_ON_RETRIABLE_STATUS_CODES)

static bool retry_is_default(const struct tr_retry_cfg *p)
{
    struct tr_route_cfg d;
    tr_cfg_route_defaults(&d);
    const struct tr_retry_cfg *q = &d.retries;
    return p->attempts == q->attempts && p->per_try_timeout_ms == q->per_try_timeout_ms &&
           p->n_retry_on == 0 && p->n_status_codes == 0 &&
           p->backoff_base_ms == q->backoff_base_ms && p->backoff_max_ms == q->backoff_max_ms &&
           p->retry_non_idempotent == q->retry_non_idempotent && p->max_body == q->max_body &&
           p->budget_percent == q->budget_percent &&
           p->budget_min_concurrency == q->budget_min_concurrency &&
           p->exclude_tried_priorities == q->exclude_tried_priorities &&
           p->avoid_failed_endpoint == q->avoid_failed_endpoint;
}

/* The policy's conditions and status codes as bits, and what relates its
 * fields (the schema checked each one). */
static bool check_retries(struct vctx *v, struct tr_route_cfg *r, const struct tr_cfg_loc *loc)
{
    struct tr_retry_cfg *p = &r->retries;
    char suffix[64], b[96];
    if ((r->direct_status != 0 || r->redirect != NULL) && !retry_is_default(p))
        return verr(v, loc, "retries", AT_KEY, "a %s route sends no request upstream to retry",
                    r->redirect != NULL ? "redirect" : "direct_response");
    uint32_t on = 0;
    for (size_t i = 0; i < p->n_retry_on; i++) {
        uint32_t bit = cfg_retry_on_bit(p->retry_on[i]);
        if (on & bit) {
            snprintf(suffix, sizeof(suffix), "retries.retry_on[%zu]", i);
            return verr(v, loc, suffix, AT_VALUE, "duplicate condition %s",
                        cfg_show(b, sizeof(b), p->retry_on[i], strlen(p->retry_on[i]), true));
        }
        on |= bit;
    }
    p->on = p->n_retry_on > 0 ? on : RETRY_ON_DEFAULT;
    memset(p->code_bits, 0, sizeof(p->code_bits));
    for (size_t i = 0; i < p->n_status_codes; i++) {
        unsigned code = (unsigned)atoi(p->status_codes[i]) - TR_RETRY_CODE_MIN;
        if (p->code_bits[code / 64] & (1ull << (code % 64))) {
            snprintf(suffix, sizeof(suffix), "retries.retriable_status_codes[%zu]", i);
            return verr(v, loc, suffix, AT_VALUE, "duplicate status code %s", p->status_codes[i]);
        }
        p->code_bits[code / 64] |= 1ull << (code % 64);
    }
    if (p->n_status_codes > 0 && !(p->on & TR_RETRY_ON_RETRIABLE_STATUS_CODES))
        return verr(v, loc, "retries.retriable_status_codes", AT_KEY,
                    "would be ignored: retry_on does not name retriable-status-codes");
    if (p->backoff_max_ms < p->backoff_base_ms)
        return verr(v, loc,
                    written(v, loc, "retries.backoff.max") ? "retries.backoff.max"
                                                           : "retries.backoff.base",
                    AT_VALUE, "backoff.max (%u ms) must not be less than backoff.base (%u ms)",
                    p->backoff_max_ms, p->backoff_base_ms);
    if (p->budget_percent == 0 && p->budget_min_concurrency == 0)
        return verr(v, loc, "retries.budget", AT_KEY,
                    "percent and min_concurrency are both 0, so no retry could ever go; set "
                    "attempts: 0 to turn retries off");
    return true;
}

static bool check_mirrors(struct vctx *v, const struct vnames *nt, struct tr_route_cfg *r,
                          const struct tr_cfg_loc *loc)
{
    if (r->n_mirrors == 0)
        return true;
    if (r->direct_status != 0 || r->redirect != NULL)
        return verr(v, loc, "mirrors", AT_KEY, "a %s route sends no request upstream to mirror",
                    r->redirect != NULL ? "redirect" : "direct_response");
    if (only_connect(r))
        return verr(v, loc, "mirrors", AT_KEY,
                    "CONNECT tunnels are not mirrored (no HTTP message is forwarded)");
    for (size_t k = 0; k < r->n_mirrors; k++) {
        struct tr_mirror_cfg *m = &r->mirrors[k];
        struct iloc tmp;
        const struct tr_cfg_loc *mloc = item_loc(&m->loc, loc, "mirrors", k, &tmp);
        if (!resolve(v, &nt->clusters, "cluster", m->cluster_name, mloc, "cluster", &m->cluster))
            return false;
        char b[96];
        const struct tr_cluster_cfg *c = &v->cfg->clusters[m->cluster];
        if (c->protocol == TR_UPROTO_HTTP2)
            return verr(v, mloc, "cluster", AT_VALUE,
                        "mirrors speak HTTP/1.1, and cluster %s speaks HTTP/2 (protocol: http2); "
                        "mirror to a cluster with protocol http1 or original",
                        cfg_show(b, sizeof(b), c->name, strlen(c->name), true));
        for (size_t j = 0; j < k; j++) {
            if (r->mirrors[j].cluster == m->cluster)
                return verr(v, mloc, "cluster", AT_VALUE, "cluster %s is mirrored twice",
                            cfg_show(b, sizeof(b), c->name, strlen(c->name), true));
        }
    }
    return true;
}

/* ---- Local route actions: redirect, fault, cors ---- */

/* The first name of o's remove, set or add that starts with prefix (a
 * lower-case literal; names are lower case), or NULL. */
static const char *ops_name(const struct tr_header_ops_cfg *o, const char *prefix, bool whole)
{
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < o->n_remove + o->n_set + o->n_add; i++) {
        const char *n = i < o->n_remove              ? o->remove[i]
                        : i < o->n_remove + o->n_set ? o->set[i - o->n_remove].name
                                                     : o->add[i - o->n_remove - o->n_set].name;
        if (strncmp(n, prefix, pl) == 0 && (!whole || n[pl] == '\0'))
            return n;
    }
    return NULL;
}

/* A route's response edits against the fields its own action sets: which
 * would win is a question without a good answer, so it is refused. */
static bool check_edits_vs_fields(struct vctx *v, const struct tr_route_cfg *r,
                                  const struct tr_cfg_loc *loc, const char *prefix, bool whole,
                                  const char *why)
{
    const char *n = ops_name(&r->response_headers, prefix, whole);
    if (n != NULL)
        return verr(v, loc, "response_headers", AT_KEY, "edits %s, which %s", n, why);
    for (size_t k = 0; k < r->n_clusters; k++) {
        const struct tr_weighted_cluster_cfg *wc = &r->clusters[k];
        if ((n = ops_name(&wc->response_headers, prefix, whole)) == NULL)
            continue;
        struct iloc tmp;
        const struct tr_cfg_loc *wloc = item_loc(&wc->loc, loc, "weighted_clusters", k, &tmp);
        return verr(v, wloc, "response_headers", AT_KEY, "edits %s, which %s", n, why);
    }
    return true;
}

static bool check_redirect(struct vctx *v, const struct tr_route_cfg *r,
                           const struct tr_cfg_loc *loc)
{
    const struct tr_redirect_cfg *rd = r->redirect;
    if (r->prefix_rewrite != NULL || r->host_rewrite != NULL || r->regex_rewrite != NULL)
        return verr(v, loc, "rewrite", AT_KEY,
                    "cannot be combined with redirect (set redirect.path, prefix or host)");
    if (r->timeout_ms != 0)
        return verr(v, loc, "timeout", AT_KEY,
                    "a redirect is answered at once: the timeout would never apply");
    if (!ops_empty(&r->request_headers))
        return verr(v, loc, "request_headers", AT_KEY,
                    "a redirect route sends no request upstream to edit");
    if (!check_edits_vs_fields(v, r, loc, "location", true, "the redirect sets"))
        return false;
    switch (rd->code) {
    case 301:
    case 302:
    case 303:
    case 307:
    case 308:
        break;
    default:
        return verr(v, loc, "redirect.code", AT_VALUE,
                    "expected one of 301, 302, 303, 307, 308, got %u", rd->code);
    }
    if (rd->port != 0 && rd->port_from != TR_REDIRECT_PORT_KEEP)
        return verr(v, loc, "redirect.port_from", AT_KEY,
                    "conflicts with port; set exactly one "
                    "of port, port_from");
    if (rd->path != NULL && rd->prefix != NULL)
        return verr(v, loc, "redirect.prefix", AT_KEY,
                    "conflicts with path; set exactly one of "
                    "path, prefix");
    if (rd->prefix != NULL && r->path_kind != TR_PATH_PREFIX)
        return verr(v, loc, "redirect.prefix", AT_KEY,
                    "needs a prefix path match (it replaces the matched prefix); use path to "
                    "replace the whole path");
    return true;
}

static bool check_fault(struct vctx *v, const struct tr_fault_cfg *f, const struct tr_cfg_loc *loc)
{
    if (f->delay == NULL && f->abort == NULL)
        return verr(v, loc, "fault", AT_VALUE, "one of delay, abort is required");
    if (f->delay != NULL && f->delay->fixed_ms == 0)
        return verr(v, loc, "fault.delay.fixed", AT_VALUE, "missing required field");
    const struct tr_fault_abort_cfg *a = f->abort;
    if (a == NULL)
        return true;
    if (a->grpc && a->status != 0)
        return verr(v, loc, "fault.abort.grpc_status", AT_KEY,
                    "conflicts with status; set exactly one of status, grpc_status");
    if (a->grpc && a->grpc_status > CFG_MAX_GRPC_STATUS)
        return verr(v, loc, "fault.abort.grpc_status", AT_VALUE, "must be between 0 and %u, got %u",
                    CFG_MAX_GRPC_STATUS, a->grpc_status);
    if (!a->grpc && a->status == 0)
        return verr(v, loc, "fault.abort", AT_VALUE, "one of status, grpc_status is required");
    return true;
}

/* "*" means "whatever the request asked for" only as the whole list. */
static bool check_star_alone(struct vctx *v, const struct tr_cfg_loc *loc, const char *key,
                             const char *const *list, size_t n)
{
    for (size_t i = 0; n > 1 && i < n; i++) {
        if (strcmp(list[i], "*") == 0) {
            char path[64];
            snprintf(path, sizeof(path), "cors.%s[%zu]", key, i);
            return verr(v, loc, path, AT_VALUE, "\"*\" must be the only entry of %s", key);
        }
    }
    return true;
}

static const char *const origin_keys[] = {"exact", "prefix", "regex"};

static bool check_cors(struct vctx *v, const struct tr_route_cfg *r, const struct tr_cfg_loc *loc)
{
    struct tr_cors_cfg *c = r->cors;
    char why[CFG_WHY_MAX];
    /* Envoy's CORS filter skips redirect and direct-response routes. */
    if (r->redirect != NULL || r->direct_status != 0)
        return verr(v, loc, "cors", AT_KEY,
                    "does not apply to a %s route: its answer is the "
                    "proxy's own",
                    r->redirect != NULL ? "redirect" : "direct_response");
    for (size_t k = 0; k < c->n_origins; k++) {
        const struct tr_cors_origin_cfg *o = &c->origins[k];
        struct iloc tmp;
        const struct tr_cfg_loc *oloc = item_loc(&o->loc, loc, "cors.allow_origins", k, &tmp);
        if ((unsigned)o->kind > TR_ORIGIN_REGEX)
            return verr(v, oloc, "", AT_VALUE, "unknown origin match kind %d", (int)o->kind);
        const char *ok = origin_keys[o->kind];
        if (o->value == NULL)
            return verr(v, oloc, ok, AT_VALUE, "missing required field");
        if (o->kind == TR_ORIGIN_REGEX && !cfg_check_regex(o->value, false, why, sizeof(why)))
            return verr(v, oloc, ok, AT_VALUE, "%s", why);
    }
    if (!check_edits_vs_fields(v, r, loc, "access-control-", false, "the route's cors sets"))
        return false;
    if (!check_star_alone(v, loc, "allow_methods", c->allow_methods, c->n_allow_methods) ||
        !check_star_alone(v, loc, "allow_headers", c->allow_headers, c->n_allow_headers) ||
        !check_star_alone(v, loc, "expose_headers", c->expose_headers, c->n_expose_headers))
        return false;
    if (c->has_max_age && c->max_age_s > CFG_MAX_DURATION_MS / 1000)
        return verr(v, loc, "cors.max_age", AT_VALUE, "must be at most 24h, got %us", c->max_age_s);
    c->index = (uint32_t)v->cfg->n_cors++;
    return true;
}

static bool check_route_local(struct vctx *v, struct tr_route_cfg *r, const struct tr_cfg_loc *loc)
{
    /* An HTTP/2 CONNECT becomes a tunnel to the route's cluster without
     * passing these actions (proxy/stream.c, start_tunnel). */
    for (size_t k = 0; k < r->n_methods; k++) {
        if (strcmp(r->methods[k], "CONNECT") != 0)
            continue;
        const char *key = r->redirect != NULL ? "redirect" : r->fault != NULL ? "fault" : "cors";
        if (r->redirect != NULL || r->fault != NULL || r->cors != NULL)
            return verr(v, loc, key, AT_KEY,
                        "does not apply to CONNECT tunnels; give CONNECT a route of its own");
    }
    if (r->redirect != NULL && !check_redirect(v, r, loc))
        return false;
    if (r->fault != NULL && !check_fault(v, r->fault, loc))
        return false;
    if (r->cors != NULL && !check_cors(v, r, loc))
        return false;
    return true;
}

/* rewrite.regex and substitution: both or neither, not with prefix; the
 * pattern compiled here, into the model's arena. */
static bool check_regex_rewrite(struct vctx *v, struct tr_route_cfg *r,
                                const struct tr_cfg_loc *loc)
{
    r->regex_rewrite_code = NULL;
    r->regex_substitution_pcre = NULL;
    if (r->regex_rewrite == NULL && r->regex_substitution == NULL)
        return true;
    if (r->regex_rewrite == NULL || r->regex_substitution == NULL)
        return verr(v, loc, r->regex_rewrite == NULL ? "rewrite.substitution" : "rewrite.regex",
                    AT_KEY, "rewrite.regex and rewrite.substitution go together");
    if (r->prefix_rewrite != NULL)
        return verr(v, loc, "rewrite.regex", AT_KEY,
                    "one of rewrite.prefix and rewrite.regex: both would rewrite the path");
    if (v->cfg->arena == NULL)
        return vstrdup(v, "") != NULL; /* reports the missing arena */
    char why[CFG_WHY_MAX];
    r->regex_rewrite_code =
        cfg_regex_rewrite_compile(v->cfg->arena, r->regex_rewrite, r->regex_substitution,
                                  &r->regex_substitution_pcre, why, sizeof(why));
    if (r->regex_rewrite_code == NULL)
        return verr(v, loc, "rewrite.regex", AT_VALUE, "%s", why);
    return true;
}

static bool check_route(struct vctx *v, const struct vnames *nt, struct tr_route_cfg *r, size_t idx,
                        const struct tr_cfg_loc *loc)
{
    if (r->name == NULL) {
        char nb[32];
        snprintf(nb, sizeof(nb), "route-%zu", idx);
        if ((r->name = vstrdup(v, nb)) == NULL)
            return false;
    }
    if (!check_match(v, r, loc))
        return false;

    static const char *const actions = "cluster, weighted_clusters, direct_response, redirect";
    if (r->direct_status != 0 && r->n_clusters > 0)
        return verr(v, loc, "direct_response", AT_KEY, "conflicts with %s; set exactly one of %s",
                    r->n_clusters == 1 ? "cluster" : "weighted_clusters", actions);
    if (r->redirect != NULL && (r->n_clusters > 0 || r->direct_status != 0))
        return verr(v, loc, "redirect", AT_KEY, "conflicts with %s; set exactly one of %s",
                    r->direct_status != 0 ? "direct_response"
                    : r->n_clusters == 1  ? "cluster"
                                          : "weighted_clusters",
                    actions);
    if (r->direct_status == 0 && r->n_clusters == 0 && r->redirect == NULL)
        return verr(v, loc, "", AT_VALUE, "one of %s is required", actions);
    if (r->direct_status == 0 && r->direct_body != NULL)
        return verr(v, loc, "direct_response.status", AT_VALUE, "missing required field");
    uint32_t total = 0;
    for (size_t k = 0; k < r->n_clusters; k++) {
        struct tr_weighted_cluster_cfg *wc = &r->clusters[k];
        struct iloc tmp;
        const struct tr_cfg_loc *wloc = item_loc(&wc->loc, loc, "weighted_clusters", k, &tmp);
        if (!resolve(v, &nt->clusters, "cluster", wc->cluster_name, wloc, "cluster", &wc->cluster))
            return false;
        total += wc->weight; /* <= 256 * 1e6 (checked by the schema): no overflow */
    }
    if (r->n_clusters > 0 && total == 0)
        return verr(v, loc, "weighted_clusters", AT_VALUE, "the weights must not all be 0");
    r->total_weight = total;

    if (r->direct_status != 0 &&
        (r->prefix_rewrite != NULL || r->host_rewrite != NULL || r->regex_rewrite != NULL))
        return verr(v, loc, "rewrite", AT_KEY, "cannot be combined with direct_response");
    if (r->prefix_rewrite != NULL && r->prefix_rewrite[0] != '/')
        return verr(v, loc, "rewrite.prefix", AT_VALUE, "must start with \"/\"");
    if (!check_regex_rewrite(v, r, loc))
        return false;
    return check_header_edits(v, r, loc) && check_route_local(v, r, loc) &&
           check_retries(v, r, loc) && check_mirrors(v, nt, r, loc);
}

static bool check_route_table(struct vctx *v, const struct vnames *nt, struct tr_route_table_cfg *t,
                              const struct tr_cfg_loc *loc)
{
    /* A domain in two virtual hosts of one table would make the second
     * unreachable for that host: refuse it. */
    struct name_tab domains = {0};
    for (size_t j = 0; j < t->n_vhosts; j++) {
        struct tr_vhost_cfg *vh = &t->vhosts[j];
        struct iloc tmp;
        const struct tr_cfg_loc *vloc = item_loc(&vh->loc, loc, "virtual_hosts", j, &tmp);
        if (vh->name == NULL) {
            char nb[32];
            snprintf(nb, sizeof(nb), "vhost-%zu", j);
            if ((vh->name = vstrdup(v, nb)) == NULL)
                return false;
        }
        for (size_t k = 0; k < vh->n_domains; k++) {
            int first = name_add(v, &domains, vh->domains[k], (int)(j * CFG_MAX_DOMAINS + k));
            if (first == -2)
                return false;
            if (first < 0)
                continue;
            const struct tr_vhost_cfg *fv = &t->vhosts[(size_t)first / CFG_MAX_DOMAINS];
            struct iloc fil;
            char frel[48], suffix[48], b[96], w[160];
            const struct tr_cfg_loc *floc =
                item_loc(&fv->loc, loc, "virtual_hosts", (size_t)first / CFG_MAX_DOMAINS, &fil);
            snprintf(frel, sizeof(frel), "domains[%zu]", (size_t)first % CFG_MAX_DOMAINS);
            snprintf(suffix, sizeof(suffix), "domains[%zu]", k);
            return verr(v, vloc, suffix, AT_VALUE, "duplicate domain %s (first defined %s)",
                        cfg_show(b, sizeof(b), vh->domains[k], strlen(vh->domains[k]), true),
                        where_defined(v, floc, frel, w, sizeof(w)));
        }
        for (size_t k = 0; k < vh->n_routes; k++) {
            struct tr_route_cfg *r = &vh->routes[k];
            struct iloc rtmp;
            const struct tr_cfg_loc *rloc = item_loc(&r->loc, vloc, "routes", k, &rtmp);
            if (!check_route(v, nt, r, k, rloc))
                return false;
        }
    }
    return true;
}

static bool check_route_tables(struct vctx *v, struct vnames *nt, const struct tr_cfg_loc *top)
{
    struct tr_config *cfg = v->cfg;
    size_t routes = 0;
    cfg->n_cors = 0; /* counted again: a validated model validates again */
    for (size_t i = 0; i < cfg->n_route_tables; i++) {
        struct tr_route_table_cfg *t = &cfg->route_tables[i];
        struct iloc tmp;
        const struct tr_cfg_loc *loc = item_loc(&t->loc, top, "route_tables", i, &tmp);
        if (!check_section(v, &cfg_route_table_section, t, loc, "", true, true) ||
            !unique(v, &nt->tables, "route table name", t->name, (int)i, loc, "route_tables",
                    cfg->route_tables, sizeof(*t), offsetof(struct tr_route_table_cfg, loc)) ||
            !check_route_table(v, nt, t, loc))
            return false;
        for (size_t j = 0; j < t->n_vhosts; j++)
            routes += t->vhosts[j].n_routes;
        if (routes > CFG_MAX_ROUTES)
            return verr(v, loc, "", AT_VALUE, "more than %u routes in the configuration",
                        CFG_MAX_ROUTES);
    }
    return true;
}

/* Weighted TCP routes (a listener's or an SNI rule's tcp_clusters): names
 * resolved like a route's weighted_clusters, a positive total, and no
 * header edits (a compiler could set them on the shared struct; a byte
 * stream has no message to apply them to). */
static bool check_tcp_clusters(struct vctx *v, const struct vnames *nt,
                               struct tr_weighted_cluster_cfg *list, size_t n,
                               const struct tr_cfg_loc *loc)
{
    uint32_t total = 0;
    for (size_t k = 0; k < n; k++) {
        struct tr_weighted_cluster_cfg *wc = &list[k];
        struct iloc tmp;
        const struct tr_cfg_loc *wloc = item_loc(&wc->loc, loc, "tcp_clusters", k, &tmp);
        if (!resolve(v, &nt->clusters, "cluster", wc->cluster_name, wloc, "cluster", &wc->cluster))
            return false;
        if (!ops_empty(&wc->request_headers) || !ops_empty(&wc->response_headers))
            return verr(v, wloc,
                        !ops_empty(&wc->request_headers) ? "request_headers" : "response_headers",
                        AT_KEY, "not allowed on a TCP destination (no HTTP message to edit)");
        total += wc->weight; /* <= 256 * 1e6 (checked by the schema): no overflow */
    }
    if (n > 0 && total == 0)
        return verr(v, loc, "tcp_clusters", AT_VALUE, "the weights must not all be 0");
    return true;
}

struct sni_name {
    const char *name;
    size_t rule, idx;
};

static int sni_name_cmp(const void *a, const void *b)
{
    return strcasecmp(((const struct sni_name *)a)->name, ((const struct sni_name *)b)->name);
}

/* TLS passthrough by SNI: on a tcp listener without TLS of its own (the
 * TLS is the client's and the upstream's), each rule one destination, and
 * a name routed once per listener (a second rule listing it could never be
 * reached: first match wins). */
static bool check_sni_routes(struct vctx *v, const struct vnames *nt, struct tr_listener_cfg *l,
                             const struct tr_cfg_loc *loc)
{
    if (l->n_sni_routes == 0)
        return true;
    if (l->protocol != TR_LPROTO_TCP)
        return verr(v, loc, "sni_routes", AT_KEY,
                    "only on a tcp listener (it passes TLS through by the ClientHello's SNI)");
    if (l->tls_mode != TR_TLS_DISABLE)
        return verr(v, loc, "sni_routes", AT_KEY,
                    "needs tls.mode DISABLE: the TLS is passed through, never terminated");
    for (size_t k = 0; k < l->n_sni_routes; k++) {
        struct tr_sni_route_cfg *r = &l->sni_routes[k];
        struct iloc tmp;
        const struct tr_cfg_loc *rloc = item_loc(&r->loc, loc, "sni_routes", k, &tmp);
        if (r->n_server_names == 0)
            return verr(v, rloc, "server_names", AT_VALUE, "missing required field");
        if (r->tcp_cluster_name != NULL && r->n_tcp_clusters > 0)
            return verr(v, rloc, "tcp_clusters", AT_KEY,
                        "conflicts with tcp_cluster; set exactly one of tcp_cluster, "
                        "tcp_clusters");
        if (r->tcp_cluster_name == NULL && r->n_tcp_clusters == 0)
            return verr(v, rloc, "", AT_VALUE, "one of tcp_cluster, tcp_clusters is required");
        if (!resolve(v, &nt->clusters, "cluster", r->tcp_cluster_name, rloc, "tcp_cluster",
                     &r->tcp_cluster) ||
            !check_tcp_clusters(v, nt, r->tcp_clusters, r->n_tcp_clusters, rloc))
            return false;
        for (size_t n = 0; n < r->n_server_names; n++) {
            char why[160];
            if (!cfg_check_server_name(r->server_names[n], why, sizeof(why)))
                return verr(v, rloc, "server_names", AT_VALUE, "%s", why);
        }
    }
    /* Each name once: sorted (case-insensitively), then neighbours compared. */
    size_t total = 0;
    for (size_t k = 0; k < l->n_sni_routes; k++)
        total += l->sni_routes[k].n_server_names;
    struct sni_name *all = malloc(total * sizeof(*all));
    if (all == NULL)
        return verr(v, loc, "sni_routes", AT_KEY, "out of memory");
    size_t n = 0;
    for (size_t k = 0; k < l->n_sni_routes; k++)
        for (size_t m = 0; m < l->sni_routes[k].n_server_names; m++)
            all[n++] = (struct sni_name){l->sni_routes[k].server_names[m], k, m};
    qsort(all, n, sizeof(*all), sni_name_cmp);
    for (size_t i = 1; i < n; i++)
        if (strcasecmp(all[i - 1].name, all[i].name) == 0) {
            /* reported at the later one */
            struct sni_name a = all[i - 1], b = all[i];
            if (b.rule < a.rule || (b.rule == a.rule && b.idx < a.idx)) {
                struct sni_name t = a;
                a = b;
                b = t;
            }
            free(all);
            struct iloc tmp;
            const struct tr_cfg_loc *rloc =
                item_loc(&l->sni_routes[b.rule].loc, loc, "sni_routes", b.rule, &tmp);
            return verr(v, rloc, "server_names", AT_VALUE,
                        "%s is already routed by sni_routes[%zu] (first match wins)", b.name,
                        a.rule);
        }
    free(all);
    return true;
}

/* A condition's values are read as its key says: addresses for the *.ip
 * keys, ports for destination.port. A condition with neither values nor
 * not_values would match everything or nothing depending on a reading of
 * the spec; Istio refuses it, so does this. */
static bool check_authz_condition(struct vctx *v, const struct tr_authz_condition_cfg *c,
                                  const struct tr_cfg_loc *cloc)
{
    char why[CFG_WHY_MAX];
    tr_str arg[TR_AZ_MAX_CLAIM_DEPTH];
    size_t n_arg;
    enum tr_az_key k = tr_az_key_parse(c->key, arg, &n_arg, why, sizeof(why));
    if (k == TR_AZK_INVALID)
        return verr(v, cloc, "key", AT_VALUE, "%s", why);
    if (c->n_values == 0 && c->n_not_values == 0)
        return verr(v, cloc, "", AT_VALUE, "one of values, not_values is required");
    for (int neg = 0; neg < 2; neg++) {
        const char **vals = neg ? c->not_values : c->values;
        size_t n = neg ? c->n_not_values : c->n_values;
        for (size_t i = 0; i < n; i++) {
            bool ok = true;
            if (k == TR_AZK_SOURCE_IP || k == TR_AZK_REMOTE_IP || k == TR_AZK_DEST_IP)
                ok = cfg_check_cidr(vals[i], why, sizeof(why));
            else if (k == TR_AZK_DEST_PORT)
                ok = cfg_check_az_port(vals[i], why, sizeof(why));
            else
                ok = cfg_check_az_pattern(vals[i], why, sizeof(why));
            if (!ok) {
                char field[48];
                snprintf(field, sizeof(field), "%s[%zu]", neg ? "not_values" : "values", i);
                return verr(v, cloc, field, AT_VALUE, "%s", why);
            }
        }
    }
    return true;
}

static bool check_authz_policies(struct vctx *v, const struct vnames *nt, struct tr_listener_cfg *l,
                                 const struct tr_cfg_loc *loc)
{
    for (size_t p = 0; p < l->authz.n_policies; p++) {
        struct tr_authz_policy_cfg *pol = &l->authz.policies[p];
        struct iloc ptmp;
        const struct tr_cfg_loc *ploc =
            item_loc(&pol->loc, loc, "authorization.policies", p, &ptmp);
        /* CUSTOM names its external authorizer, and only CUSTOM does. */
        if (pol->action == TR_AUTHZ_CUSTOM) {
            if (pol->provider_name == NULL)
                return verr(v, ploc, "provider", AT_VALUE,
                            "missing required field (action CUSTOM names an ext_authz entry)");
            if (l->protocol == TR_LPROTO_TCP)
                return verr(v, ploc, "action", AT_VALUE,
                            "CUSTOM is not allowed on a tcp listener (the external authorizer "
                            "checks HTTP requests)");
        } else if (pol->provider_name != NULL) {
            return verr(v, ploc, "provider", AT_KEY, "only allowed with action CUSTOM");
        }
        if (!resolve(v, &nt->ext_authz, "ext_authz", pol->provider_name, ploc, "provider",
                     &pol->provider))
            return false;
        for (size_t r = 0; r < pol->n_rules; r++) {
            const struct tr_authz_policy_rule_cfg *rule = &pol->rules[r];
            struct iloc rtmp;
            const struct tr_cfg_loc *rloc = item_loc(&rule->loc, ploc, "rules", r, &rtmp);
            for (size_t w = 0; w < rule->n_when; w++) {
                struct iloc ctmp;
                const struct tr_cfg_loc *cloc =
                    item_loc(&rule->when[w].loc, rloc, "when", w, &ctmp);
                if (!check_authz_condition(v, &rule->when[w], cloc))
                    return false;
            }
        }
    }
    return true;
}

/* Does cluster c speak TLS with a client context (not the mesh's)? */
static bool originates_tls(const struct tr_config *cfg, const struct tr_cluster_cfg *c)
{
    for (size_t i = 0; c->tls_name != NULL && i < cfg->n_tls; i++) {
        if (strcmp(cfg->tls[i].name, c->tls_name) == 0)
            return cfg->tls[i].kind == TR_TLSK_CLIENT;
    }
    return false;
}

/* A rule's keys come inline, fetched (jwks_uri through a cluster of the
 * model), or both (inline until the first fetch succeeds). */
static bool check_jwt_rules(struct vctx *v, const struct vnames *nt, struct tr_listener_cfg *l,
                            const struct tr_cfg_loc *loc)
{
    for (size_t k = 0; k < l->request_authn.n_rules; k++) {
        struct tr_jwt_rule_cfg *r = &l->request_authn.rules[k];
        struct iloc tmp;
        const struct tr_cfg_loc *rloc =
            item_loc(&r->loc, loc, "request_authentication.rules", k, &tmp);
        if (r->jwks == NULL && r->jwks_uri == NULL)
            return verr(v, rloc, "jwks", AT_VALUE,
                        "missing required field (jwks, jwks_uri or both)");
        if (r->jwks_uri == NULL)
            continue;
        if (!resolve(v, &nt->clusters, "cluster", r->jwks_uri->cluster_name, rloc,
                     "jwks_uri.cluster", &r->jwks_uri->cluster))
            return false;
        const struct tr_cluster_cfg *c = &v->cfg->clusters[r->jwks_uri->cluster];
        char b[96];
        if (c->protocol == TR_UPROTO_HTTP2)
            return verr(v, rloc, "jwks_uri.cluster", AT_VALUE,
                        "the key set is fetched with HTTP/1.1, and cluster %s speaks HTTP/2 "
                        "(protocol: http2); use a cluster with protocol http1 or original",
                        cfg_show(b, sizeof(b), c->name, strlen(c->name), true));
        if (strncmp(r->jwks_uri->url, "https://", 8) == 0 && !originates_tls(v->cfg, c))
            return verr(v, rloc, "jwks_uri.cluster", AT_VALUE,
                        "the key set's URL is https, and cluster %s does not originate TLS "
                        "(tls.context naming a context of type client)",
                        cfg_show(b, sizeof(b), c->name, strlen(c->name), true));
    }
    return true;
}

static bool addr_is_wildcard(const struct tr_cfg_addr *a)
{
    static const uint8_t zero[16];
    if (a->ss.ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr, zero, 16) == 0;
    return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr == 0;
}

static uint16_t addr_port(const struct tr_cfg_addr *a)
{
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port); /* same offset in sin6 */
}

/* Two virtual listeners of one direction, one at least with
 * destination_prefixes: on one port, no block may be claimed twice (the
 * same block in one listener neither). */
static bool prefixes_disjoint(struct vctx *v, const struct tr_listener_cfg *l,
                              const struct tr_listener_cfg *ol, const struct tr_cfg_loc *loc)
{
    char why[96], at[48], b96[96];
    for (size_t k = 0; k < l->n_destination_prefixes; k++) {
        struct tr_cidr a, b;
        if (!tr_cidr_parse(l->destination_prefixes[k], &a, why, sizeof(why)))
            continue; /* reported by the schema */
        snprintf(at, sizeof(at), "destination_prefixes[%zu]", k);
        for (size_t m = 0; m < k && ol == l; m++)
            if (tr_cidr_parse(l->destination_prefixes[m], &b, why, sizeof(why)) &&
                a.bits == b.bits && memcmp(&a.ip, &b.ip, sizeof(a.ip)) == 0)
                return verr(v, loc, at, AT_VALUE, "%s is listed twice", l->destination_prefixes[k]);
        if (ol == l || addr_port(&ol->addr) != addr_port(&l->addr))
            continue;
        for (size_t m = 0; m < ol->n_destination_prefixes; m++)
            if (tr_cidr_parse(ol->destination_prefixes[m], &b, why, sizeof(why)) &&
                a.bits == b.bits && memcmp(&a.ip, &b.ip, sizeof(a.ip)) == 0)
                return verr(v, loc, at, AT_VALUE, "%s on port %u is already claimed by listener %s",
                            l->destination_prefixes[k], addr_port(&l->addr),
                            cfg_show(b96, sizeof(b96), ol->name, strlen(ol->name), true));
    }
    return true;
}

static const char *direction_name(enum tr_direction d)
{
    return d == TR_DIR_INBOUND ? "inbound" : "outbound";
}

/* Capture (model.h, tr_original_dst_cfg). A capture listener takes raw
 * connections and hands each over before a byte is read: protocol tcp (what
 * the connection carries is the virtual listener's business), no TLS, no
 * destination or policy of its own. A virtual listener needs a capture
 * listener of its direction, else nothing could ever reach it. */
static bool check_capture(struct vctx *v, struct tr_listener_cfg *l, const struct tr_cfg_loc *loc)
{
    const struct tr_config *cfg = v->cfg;
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->addr.ss;
    if (l->original_destination != NULL) {
        if (!l->bind)
            return verr(v, loc, "bind", AT_VALUE,
                        "a capture listener (original_destination) must be bound");
        if (sin->sin_port == 0)
            return verr(v, loc, "address", AT_VALUE,
                        "a capture listener needs a fixed port (the capture rules name it)");
        if (l->protocol != TR_LPROTO_TCP)
            return verr(v, loc, "protocol", AT_VALUE,
                        "a capture listener must have protocol tcp: it hands connections to "
                        "virtual listeners, whose protocol applies");
        if (l->tls_mode != TR_TLS_DISABLE)
            return verr(v, loc, "tls.mode", AT_VALUE,
                        "must be DISABLE on a capture listener (the virtual listener's applies)");
        const char *own = l->route_table_name != NULL                  ? "route_table"
                          : l->tcp_cluster_name != NULL                ? "tcp_cluster"
                          : l->n_tcp_clusters > 0                      ? "tcp_clusters"
                          : l->n_sni_routes > 0                        ? "sni_routes"
                          : l->authz.n_rules + l->authz.n_policies > 0 ? "authorization"
                          : l->request_authn.n_rules > 0               ? "request_authentication"
                                                                       : NULL;
        if (own != NULL)
            return verr(v, loc, own, AT_KEY,
                        "not allowed on a capture listener (the virtual listener's applies)");
        l->tls = l->route_table = l->tcp_cluster = -1;
        return true;
    }
    if (l->n_destination_prefixes > 0 && (l->bind || l->original_destination != NULL))
        return verr(v, loc, "destination_prefixes", AT_KEY,
                    "only for a virtual listener (bind: false): it claims original "
                    "destinations");
    if (l->bind)
        return true;
    if (sin->sin_port == 0)
        return verr(v, loc, "address", AT_VALUE,
                    "a virtual listener (bind: false) needs a port to match original "
                    "destinations by");
    if (l->n_destination_prefixes > 0 && !addr_is_wildcard(&l->addr))
        return verr(v, loc, "address", AT_VALUE,
                    "with destination_prefixes the address must be 0.0.0.0:PORT or [::]:PORT "
                    "(the prefixes say which destinations, the address the port)");
    if (!prefixes_disjoint(v, l, l, loc))
        return false;
    for (size_t j = 0; j < cfg->n_listeners; j++)
        if (cfg->listeners[j].original_destination != NULL &&
            cfg->listeners[j].direction == l->direction)
            return true;
    return verr(v, loc, "bind", AT_VALUE,
                "a virtual listener (bind: false) needs a capture listener "
                "(original_destination) of direction %s",
                direction_name(l->direction));
}

static bool check_listener(struct vctx *v, const struct vnames *nt, struct tr_listener_cfg *l,
                           size_t i, const struct tr_cfg_loc *loc)
{
    struct tr_config *cfg = v->cfg;
    /* Two listeners cannot bind one address (port 0 picks a fresh port), and
     * two virtual listeners of one direction cannot claim one original
     * destination; a virtual listener never conflicts with a bound one. */
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->addr.ss;
    for (size_t j = 0; sin->sin_port != 0 && j < i; j++) {
        const struct tr_listener_cfg *ol = &cfg->listeners[j];
        const struct tr_cfg_addr *o = &ol->addr;
        if (ol->bind != l->bind || (!l->bind && ol->direction != l->direction))
            continue;
        if (!l->bind && (l->n_destination_prefixes > 0 || ol->n_destination_prefixes > 0)) {
            if (!prefixes_disjoint(v, l, ol, loc))
                return false;
            continue; /* a listener with prefixes claims them, not its address */
        }
        if (o->len == l->addr.len && memcmp(&o->ss, &l->addr.ss, l->addr.len) == 0) {
            char b[96];
            const char *other = cfg->listeners[j].name;
            return verr(v, loc, "address", AT_VALUE, "address %s is already used by listener %s",
                        l->addr.text, cfg_show(b, sizeof(b), other, strlen(other), true));
        }
    }

    if (!check_capture(v, l, loc))
        return false;
    if (l->original_destination != NULL)
        return true; /* it only hands connections over: nothing below applies */

    bool mesh_mode = l->tls_mode == TR_TLS_STRICT || l->tls_mode == TR_TLS_PERMISSIVE;
    if (mesh_mode && l->direction != TR_DIR_INBOUND)
        return verr(v, loc, "tls.mode", AT_KEY, "%s is only valid on inbound listeners",
                    l->tls_mode == TR_TLS_STRICT ? "STRICT" : "PERMISSIVE");
    if (mesh_mode && l->tls_name == NULL)
        return verr(v, loc, "tls.context", AT_VALUE, "missing required field");
    if (!mesh_mode && l->tls_name != NULL)
        return verr(v, loc, "tls.context", AT_KEY, "must not be set when mode is %s",
                    l->tls_mode == TR_TLS_DISABLE ? "DISABLE" : "TERMINATE (use contexts)");
    if (!resolve(v, &nt->tls, "TLS context", l->tls_name, loc, "tls.context", &l->tls))
        return false;
    if (mesh_mode && v->cfg->tls[l->tls].kind != TR_TLSK_MESH)
        return verr(v, loc, "tls.context", AT_VALUE,
                    "%s needs a mesh context; TLS context %s is not one (use TERMINATE)",
                    l->tls_mode == TR_TLS_STRICT ? "STRICT" : "PERMISSIVE", l->tls_name);
    if (l->tls_mode == TR_TLS_TERMINATE && l->protocol == TR_LPROTO_AUTO)
        return verr(v, loc, "protocol", AT_VALUE,
                    "auto detects plaintext protocols; with tls.mode TERMINATE use http or tcp");
    if (l->tls_mode != TR_TLS_TERMINATE && l->n_tls_contexts > 0)
        return verr(v, loc, "tls.contexts", AT_KEY, "only for mode TERMINATE");
    if (l->tls_mode == TR_TLS_TERMINATE && l->n_tls_contexts == 0)
        return verr(v, loc, "tls.contexts", AT_VALUE,
                    "missing required field (mode TERMINATE needs server contexts)");
    for (size_t k = 0; k < l->n_tls_contexts; k++) {
        int idx = -1;
        char at[48];
        snprintf(at, sizeof(at), "tls.contexts[%zu]", k);
        if (!resolve(v, &nt->tls, "TLS context", l->tls_contexts[k], loc, at, &idx))
            return false;
        if (v->cfg->tls[idx].kind != TR_TLSK_SERVER)
            return verr(v, loc, at, AT_VALUE, "TLS context %s is not of type server",
                        l->tls_contexts[k]);
        for (size_t j = 0; j < k; j++)
            if (strcmp(l->tls_contexts[j], l->tls_contexts[k]) == 0)
                return verr(v, loc, at, AT_VALUE, "TLS context %s is listed twice",
                            l->tls_contexts[k]);
    }

    if (l->tcp_cluster_name != NULL && l->n_tcp_clusters > 0)
        return verr(v, loc, "tcp_clusters", AT_KEY,
                    "conflicts with tcp_cluster; set exactly one of tcp_cluster, tcp_clusters");
    if (l->protocol == TR_LPROTO_TCP) {
        if (l->route_table_name != NULL)
            return verr(v, loc, "route_table", AT_KEY,
                        "not allowed on a tcp listener (use tcp_cluster or tcp_clusters)");
        if (l->tcp_cluster_name == NULL && l->n_tcp_clusters == 0 && l->n_sni_routes == 0)
            return verr(v, loc, "", AT_VALUE,
                        "one of tcp_cluster, tcp_clusters, sni_routes is required on a tcp "
                        "listener");
    } else {
        if (l->route_table_name == NULL)
            return verr(v, loc, "route_table", AT_VALUE, "missing required field");
        if (l->protocol == TR_LPROTO_HTTP && (l->tcp_cluster_name != NULL || l->n_tcp_clusters > 0))
            return verr(v, loc, l->tcp_cluster_name != NULL ? "tcp_cluster" : "tcp_clusters",
                        AT_KEY, "not allowed on an http listener (use protocol: auto or tcp)");
    }
    if (!resolve(v, &nt->tables, "route table", l->route_table_name, loc, "route_table",
                 &l->route_table) ||
        !resolve(v, &nt->clusters, "cluster", l->tcp_cluster_name, loc, "tcp_cluster",
                 &l->tcp_cluster) ||
        !check_tcp_clusters(v, nt, l->tcp_clusters, l->n_tcp_clusters, loc) ||
        !check_sni_routes(v, nt, l, loc))
        return false;

    /* Opaque TCP carries no method or path: such a rule could never match,
     * which for ALLOW silently denies everything. */
    for (size_t k = 0; l->protocol == TR_LPROTO_TCP && k < l->authz.n_rules; k++) {
        const struct tr_authz_rule_cfg *rule = &l->authz.rules[k];
        struct iloc tmp;
        const struct tr_cfg_loc *rloc = item_loc(&rule->loc, loc, "authorization.rules", k, &tmp);
        if (rule->n_methods > 0 || rule->n_paths > 0)
            return verr(v, rloc, rule->n_methods > 0 ? "methods" : "paths", AT_KEY,
                        "not allowed on a tcp listener (no HTTP requests to match)");
    }
    /* A byte stream carries no token: the rules would silently do nothing. */
    if (l->protocol == TR_LPROTO_TCP && l->request_authn.n_rules > 0)
        return verr(v, loc, "request_authentication", AT_KEY,
                    "not allowed on a tcp listener (no HTTP requests carry a token)");
    if (!check_jwt_rules(v, nt, l, loc))
        return false;
    return check_authz_policies(v, nt, l, loc);
}

/* External authorizers: unique names, a cluster each that speaks HTTP/1.1
 * (the check is an HTTP/1.1 exchange, as a JWKS fetch). */
static bool check_ext_authz(struct vctx *v, struct vnames *nt, const struct tr_cfg_loc *top)
{
    struct tr_config *cfg = v->cfg;
    for (size_t i = 0; i < cfg->n_ext_authz; i++) {
        struct tr_ext_authz_cfg *e = &cfg->ext_authz[i];
        struct iloc tmp;
        const struct tr_cfg_loc *loc = item_loc(&e->loc, top, "ext_authz", i, &tmp);
        if (!check_section(v, &cfg_ext_authz_section, e, loc, "", true, true) ||
            !unique(v, &nt->ext_authz, "ext_authz name", e->name, (int)i, loc, "ext_authz",
                    cfg->ext_authz, sizeof(*e), offsetof(struct tr_ext_authz_cfg, loc)) ||
            !resolve(v, &nt->clusters, "cluster", e->cluster_name, loc, "cluster", &e->cluster))
            return false;
        const struct tr_cluster_cfg *c = &cfg->clusters[e->cluster];
        char b[96];
        if (c->protocol == TR_UPROTO_HTTP2)
            return verr(v, loc, "cluster", AT_VALUE,
                        "the check is sent with HTTP/1.1, and cluster %s speaks HTTP/2 "
                        "(protocol: http2); use a cluster with protocol http1 or original",
                        cfg_show(b, sizeof(b), c->name, strlen(c->name), true));
        if (e->status_on_error < 200 || e->status_on_error > 599)
            return verr(v, loc, "status_on_error", AT_VALUE, "must be 200-599, got %u",
                        e->status_on_error);
    }
    return true;
}

static bool check_listeners(struct vctx *v, struct vnames *nt, const struct tr_cfg_loc *top)
{
    struct tr_config *cfg = v->cfg;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct tr_listener_cfg *l = &cfg->listeners[i];
        struct iloc tmp;
        const struct tr_cfg_loc *loc = item_loc(&l->loc, top, "listeners", i, &tmp);
        if (!check_section(v, &cfg_listener_section, l, loc, "", true, true) ||
            !unique(v, &nt->listeners, "listener name", l->name, (int)i, loc, "listeners",
                    cfg->listeners, sizeof(*l), offsetof(struct tr_listener_cfg, loc)) ||
            !check_listener(v, nt, l, i, loc))
            return false;
    }
    return true;
}

static bool check_top(struct vctx *v, const struct tr_cfg_loc *top)
{
    struct tr_config *cfg = v->cfg;
    if (!check_section(v, &cfg_root_section, cfg, top, "", true, false))
        return false;
    const struct tr_limits_cfg *l = &cfg->limits;
    if (l->max_request_line > l->max_header_bytes)
        return verr(v, top,
                    written(v, top, "limits.max_request_line") ? "limits.max_request_line"
                                                               : "limits.max_header_bytes",
                    AT_KEY, "max_request_line (%u) must not exceed max_header_bytes (%u)",
                    l->max_request_line, l->max_header_bytes);
    if (cfg->admin.socket != NULL && strlen(cfg->admin.socket) > TR_UNIX_PATH_MAX)
        return verr(v, top, "admin.socket", AT_VALUE,
                    "path is %zu bytes, a Unix socket path is at most %d",
                    strlen(cfg->admin.socket), TR_UNIX_PATH_MAX);
    if (!cfg_addr_is_loopback(&cfg->admin.addr))
        return verr(v, top, "admin.address", AT_VALUE,
                    "the admin address must be loopback (127.0.0.0/8 or [::1]), got \"%s\"",
                    cfg->admin.addr.text);
    return true;
}

bool cfg_validate(struct tr_config *cfg, struct ld *ld, char **err)
{
    struct vctx v = {.cfg = cfg, .ld = ld, .err = err};
    struct tr_cfg_loc top = {.file = cfg->file, .path = ""};
    struct vnames nt = {0};
    v.tmp = tr_arena_new(16 * 1024);
    if (v.tmp == NULL)
        return voom(&v);
    /* Targets of references are checked before the objects that refer to them. */
    bool ok = check_top(&v, &top) && check_tls(&v, &nt, &top) && check_clusters(&v, &nt, &top) &&
              check_ext_authz(&v, &nt, &top) && check_route_tables(&v, &nt, &top) &&
              check_listeners(&v, &nt, &top);
    if (ok && cfg->n_listeners == 0)
        ok = verr(&v, &top, "listeners", AT_VALUE, "%s",
                  ld != NULL && written(&v, &top, "listeners") ? "must have at least 1 entry"
                                                               : "missing required field");
    tr_arena_free(v.tmp);
    return ok;
}

int tr_config_validate(struct tr_config *cfg, char **err)
{
    if (err != NULL)
        *err = NULL;
    return cfg_validate(cfg, NULL, err) ? 0 : -1;
}
