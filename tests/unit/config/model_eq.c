/* Model comparison for tests (model_eq.h), driven by the schema tables. */
#include "model_eq.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config/internal.h"

struct cmp {
    char path[CFG_PATH_MAX];
    size_t plen;
    char *why;
    size_t size;
};

static const void *at(const void *obj, size_t off)
{
    return (const unsigned char *)obj + off;
}

__attribute__((format(printf, 2, 3))) static bool differ(struct cmp *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->size > 0)
        snprintf(c->why, c->size, "%s: %s", c->plen != 0 ? c->path : "(top)", msg);
    return false;
}

static size_t push(struct cmp *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t push(struct cmp *c, const char *fmt, ...)
{
    size_t saved = c->plen;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->path + c->plen, sizeof(c->path) - c->plen, fmt, ap);
    va_end(ap);
    c->plen = strlen(c->path);
    return saved;
}

static size_t push_key(struct cmp *c, const char *key)
{
    return push(c, "%s%s", c->plen != 0 ? "." : "", key);
}

static void pop(struct cmp *c, size_t saved)
{
    c->plen = saved;
    c->path[saved] = '\0';
}

static const char *show(const char *s)
{
    return s != NULL ? s : "(null)";
}

static bool str_eq(struct cmp *c, const char *a, const char *b)
{
    if ((a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0))
        return differ(c, "\"%s\" != \"%s\"", show(a), show(b));
    return true;
}

static bool num_eq(struct cmp *c, long long a, long long b)
{
    return a == b || differ(c, "%lld != %lld", a, b);
}

static bool has_origin(const struct tr_cfg_loc *loc)
{
    return loc->origin.kind != NULL || loc->origin.name != NULL;
}

/* The source of a compiled object; where a file put an object is not
 * compared (its path is compared only with an origin, whose path it is). */
static bool loc_eq(struct cmp *c, const struct tr_cfg_loc *a, const struct tr_cfg_loc *b)
{
    static const char *const keys[] = {"kind", "namespace", "name", "path"};
    const char *x[] = {a->origin.kind, a->origin.ns, a->origin.name, a->path};
    const char *y[] = {b->origin.kind, b->origin.ns, b->origin.name, b->path};
    size_t n = has_origin(a) || has_origin(b) ? 4 : 3;
    for (size_t k = 0; k < n; k++) {
        size_t saved = push(c, "%sorigin.%s", c->plen != 0 ? "." : "", keys[k]);
        if (!str_eq(c, x[k], y[k]))
            return false;
        pop(c, saved);
    }
    return true;
}

static bool section_eq(struct cmp *c, const struct cfg_section *sec, const void *a, const void *b);

static bool field_eq(struct cmp *c, const struct cfg_field *fd, const void *a, const void *b)
{
    switch (fd->kind) {
    case CK_STR:
    case CK_NAME:
    case CK_FILE:
        return str_eq(c, *(const char *const *)at(a, fd->off),
                      *(const char *const *)at(b, fd->off));
    case CK_BOOL:
        return num_eq(c, *(const bool *)at(a, fd->off), *(const bool *)at(b, fd->off));
    case CK_U32:
    case CK_DURATION:
    case CK_PERCENT:
        return num_eq(c, *(const uint32_t *)at(a, fd->off), *(const uint32_t *)at(b, fd->off));
    case CK_U16:
        return num_eq(c, *(const uint16_t *)at(a, fd->off), *(const uint16_t *)at(b, fd->off));
    case CK_ENUM:
        if (fd->flags & CF_ENUM_STR)
            return str_eq(c, *(const char *const *)at(a, fd->off),
                          *(const char *const *)at(b, fd->off));
        if (fd->flags & CF_U16)
            return num_eq(c, *(const uint16_t *)at(a, fd->off), *(const uint16_t *)at(b, fd->off));
        return num_eq(c, *(const int *)at(a, fd->off), *(const int *)at(b, fd->off));
    case CK_ADDR: {
        const struct tr_cfg_addr *x = at(a, fd->off), *y = at(b, fd->off);
        if (x->len != y->len || memcmp(&x->ss, &y->ss, x->len) != 0)
            return differ(c, "socket addresses differ (%s, %s)", show(x->text), show(y->text));
        return str_eq(c, x->text, y->text);
    }
    case CK_STRLIST: {
        const char *const *x = *(const char *const *const *)at(a, fd->off);
        const char *const *y = *(const char *const *const *)at(b, fd->off);
        size_t n = *(const size_t *)at(a, fd->off_n), m = *(const size_t *)at(b, fd->off_n);
        if (n != m)
            return differ(c, "%zu entries != %zu", n, m);
        for (size_t k = 0; k < n; k++) {
            size_t saved = push(c, "[%zu]", k);
            if (!str_eq(c, x[k], y[k]))
                return false;
            pop(c, saved);
        }
        return true;
    }
    case CK_MAP: {
        const struct tr_name_value_cfg *x =
            *(const struct tr_name_value_cfg *const *)at(a, fd->off);
        const struct tr_name_value_cfg *y =
            *(const struct tr_name_value_cfg *const *)at(b, fd->off);
        size_t n = *(const size_t *)at(a, fd->off_n), m = *(const size_t *)at(b, fd->off_n);
        if (n != m)
            return differ(c, "%zu entries != %zu", n, m);
        for (size_t k = 0; k < n; k++) {
            size_t saved = push(c, "[%zu]", k);
            if (!str_eq(c, x[k].name, y[k].name) || !str_eq(c, x[k].value, y[k].value))
                return false;
            pop(c, saved);
        }
        return true;
    }
    case CK_SECTION:
        if (fd->sub == &cfg_origin_section)
            return true; /* the object's loc: loc_eq() below */
        return section_eq(c, fd->sub, at(a, fd->off), at(b, fd->off));
    case CK_LIST: {
        const unsigned char *x = *(const unsigned char *const *)at(a, fd->off);
        const unsigned char *y = *(const unsigned char *const *)at(b, fd->off);
        size_t n = *(const size_t *)at(a, fd->off_n), m = *(const size_t *)at(b, fd->off_n);
        if (n != m)
            return differ(c, "%zu entries != %zu", n, m);
        for (size_t k = 0; k < n; k++) {
            size_t saved = push(c, "[%zu]", k);
            const void *xi = x + k * fd->item_size, *yi = y + k * fd->item_size;
            if (!section_eq(c, fd->sub, xi, yi) ||
                (fd->sub->loc_off != CFG_NO_LOC &&
                 !loc_eq(c, at(xi, fd->sub->loc_off), at(yi, fd->sub->loc_off))))
                return false;
            pop(c, saved);
        }
        return true;
    }
    case CK_OPTIONAL: {
        const void *x = *(const void *const *)at(a, fd->off),
                   *y = *(const void *const *)at(b, fd->off);
        if ((x == NULL) != (y == NULL))
            return differ(c, "%s != %s", x != NULL ? "present" : "absent",
                          y != NULL ? "present" : "absent");
        return x == NULL || section_eq(c, fd->sub, x, y);
    }
    case CK_CUSTOM:
        return true; /* what it reads lands in fields compared as rows or below */
    }
    return differ(c, "unknown field kind %d", (int)fd->kind);
}

/* Model fields outside the tables: the one-of choices, and what validate
 * fills in (names, indexes, total weights). */
static bool extras_eq(struct cmp *c, const struct cfg_section *sec, const void *a, const void *b)
{
    size_t saved = c->plen;
    bool ok = true;
    if (sec == &cfg_route_section) {
        const struct tr_route_cfg *x = a, *y = b;
        ok = (push_key(c, "path_kind"), num_eq(c, x->path_kind, y->path_kind));
        pop(c, saved);
        ok = ok && (push_key(c, "total_weight"), num_eq(c, x->total_weight, y->total_weight));
        pop(c, saved);
        for (size_t k = 0; ok && k < x->n_clusters; k++) {
            push(c, "%sweighted_clusters[%zu].cluster(index)", c->plen != 0 ? "." : "", k);
            ok = num_eq(c, x->clusters[k].cluster, y->clusters[k].cluster);
            pop(c, saved);
        }
    } else if (sec == &cfg_header_match_section) {
        const struct tr_header_match_cfg *x = a, *y = b;
        ok = (push_key(c, "kind"), num_eq(c, x->kind, y->kind));
    } else if (sec == &cfg_query_match_section) {
        const struct tr_query_match_cfg *x = a, *y = b;
        ok = (push_key(c, "kind"), num_eq(c, x->kind, y->kind));
    } else if (sec == &cfg_cors_origin_section) {
        const struct tr_cors_origin_cfg *x = a, *y = b;
        ok = (push_key(c, "kind"), num_eq(c, x->kind, y->kind));
    } else if (sec == &cfg_fault_abort_section) {
        const struct tr_fault_abort_cfg *x = a, *y = b;
        ok = (push_key(c, "grpc"), num_eq(c, x->grpc, y->grpc));
        pop(c, saved);
        ok = ok && (push_key(c, "grpc_status"), num_eq(c, x->grpc_status, y->grpc_status));
    } else if (sec == &cfg_cors_section) {
        const struct tr_cors_cfg *x = a, *y = b;
        ok = (push_key(c, "has_max_age"), num_eq(c, x->has_max_age, y->has_max_age));
        pop(c, saved);
        ok = ok && (push_key(c, "max_age_s"), num_eq(c, x->max_age_s, y->max_age_s));
        pop(c, saved);
        ok = ok && (push_key(c, "index"), num_eq(c, x->index, y->index));
    } else if (sec == &cfg_root_section) {
        const struct tr_config *x = a, *y = b;
        ok = (push_key(c, "n_cors"), num_eq(c, (long long)x->n_cors, (long long)y->n_cors));
    } else if (sec == &cfg_listener_section) {
        const struct tr_listener_cfg *x = a, *y = b;
        ok = (push_key(c, "tls(index)"), num_eq(c, x->tls, y->tls));
        pop(c, saved);
        ok = ok && (push_key(c, "route_table(index)"), num_eq(c, x->route_table, y->route_table));
        pop(c, saved);
        ok = ok && (push_key(c, "tcp_cluster(index)"), num_eq(c, x->tcp_cluster, y->tcp_cluster));
        for (size_t k = 0; ok && k < x->n_tcp_clusters; k++) {
            pop(c, saved);
            push(c, "%stcp_clusters[%zu].cluster(index)", c->plen != 0 ? "." : "", k);
            ok = num_eq(c, x->tcp_clusters[k].cluster, y->tcp_clusters[k].cluster);
        }
    } else if (sec == &cfg_cluster_section) {
        const struct tr_cluster_cfg *x = a, *y = b;
        ok = (push_key(c, "tls(index)"), num_eq(c, x->tls, y->tls));
        pop(c, saved);
        ok = ok && (push_key(c, "mesh_tls"), num_eq(c, x->mesh_tls, y->mesh_tls));
        pop(c, saved);
        ok = ok && (push_key(c, "n_dns_endpoints"),
                    num_eq(c, (long long)x->n_dns_endpoints, (long long)y->n_dns_endpoints));
        pop(c, saved);
        ok = ok && (push_key(c, "hash.source"), num_eq(c, x->hash.source, y->hash.source));
    } else if (sec == &cfg_endpoint_section) {
        const struct tr_endpoint_cfg *x = a, *y = b;
        ok = (push_key(c, "name"), str_eq(c, x->name, y->name));
        pop(c, saved);
        /* The address row is custom: an IP address, or a DNS name and port. */
        push_key(c, "address");
        if (ok &&
            (x->addr.len != y->addr.len || memcmp(&x->addr.ss, &y->addr.ss, x->addr.len) != 0))
            ok = differ(c, "socket addresses differ (%s, %s)", show(x->addr.text),
                        show(y->addr.text));
        ok = ok && str_eq(c, x->addr.text, y->addr.text) && str_eq(c, x->host, y->host) &&
             (x->host == NULL || num_eq(c, x->port, y->port)); /* port: for a name only */
    }
    if (ok)
        pop(c, saved);
    return ok;
}

static bool section_eq(struct cmp *c, const struct cfg_section *sec, const void *a, const void *b)
{
    for (size_t i = 0; i < sec->n_fields; i++) {
        size_t saved = push_key(c, sec->fields[i].key);
        if (!field_eq(c, &sec->fields[i], a, b))
            return false;
        pop(c, saved);
    }
    return extras_eq(c, sec, a, b);
}

bool tmodel_equal(const struct tr_config *a, const struct tr_config *b, char *why, size_t size)
{
    struct cmp c = {.why = why, .size = size};
    if (size > 0)
        why[0] = '\0';
    return section_eq(&c, &cfg_root_section, a, b);
}
