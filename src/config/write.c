/* config/write.c: a model as a native configuration file, from the schema.
 *
 * One walk over the loader's tables (schema.c) writes every section, field
 * and list: a field is written when it differs from its default (required
 * ones always), in table order, an object's lists of objects last. The
 * tables say almost everything; what the loader does outside them, in
 * sections.c and validate.c, is handled here and nowhere else:
 *   - one-of keys that fill one model field, the choice kept in another
 *     (route.match.path prefix / exact / regex by path_kind; a header
 *     match's exact / prefix / suffix / regex / present by kind, a query
 *     parameter match's exact / prefix / regex / present): GROUPS;
 *   - a route's `cluster: NAME`, which is weighted_clusters with one entry
 *     of weight 1, written when that is what the model holds;
 *   - a cluster's protocol, whose default is `original` with tls;
 *   - a cluster's http2.max_streams_per_connection, 0 and 100 alike, and
 *     its dns.refresh, 0 and 5s alike (the defaults validate fills in);
 *   - an endpoint's address (custom): an IP address or a DNS name and port;
 *   - names validate gives unnamed routes and virtual hosts (route-N,
 *     vhost-N), left out; endpoints are named by their address, which the
 *     model must agree with;
 *   - HTTP settings on a tcp listener, which the loader refuses: an error;
 *   - a fault abort's status or grpc_status (custom), by abort.grpc;
 *   - a CORS policy's max_age (custom), by has_max_age, in whole seconds;
 *   - optional sub-objects (redirect, fault, cors): written when present,
 *     `{}` if nothing in them differs from the defaults;
 *   - percentages: plain numbers ("12.5"), as the loader requires;
 *   - an object's origin, written when it has one (else its loc.path is
 *     where a file put it).
 * Before writing, check_tables() refuses a table the writer would get
 * wrong: a custom field or two keys sharing a model field it does not know.
 * A schema change that needs a new entry here fails every write (and the
 * round-trip tests) instead of writing something else.
 */
#include "config/write.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/internal.h"
#include "core/fmt.h"

/* A list of scalars goes on one line ([a, b]) if that line stays this short. */
#define WR_FLOW_WIDTH 100u

struct wmap {
    unsigned col;      /* YAML: the keys' column; JSON: the entries' */
    bool first;        /* nothing written in it yet */
    bool inline_first; /* YAML: the first key follows "- " on its line */
};

/* One-of keys: rows first .. first+n-1 of sec fill one model field; the int
 * (an enum) at kind_off says which key it was: row first+k stands for kind
 * kinds[k] (kinds NULL: for kind k). A custom row in a group is a `KEY:
 * true` (present). */
struct group {
    const struct cfg_section *sec;
    const char *first;
    size_t n;
    size_t kind_off;
    const enum tr_header_match_kind *kinds;
};

static const struct group groups[] = {
    {&cfg_path_match_section, "prefix", 3, offsetof(struct tr_route_cfg, path_kind), NULL},
    {&cfg_header_match_section, "exact", 5, offsetof(struct tr_header_match_cfg, kind), NULL},
    {&cfg_query_match_section, "exact", 4, offsetof(struct tr_query_match_cfg, kind),
     cfg_query_match_kinds},
    {&cfg_cors_origin_section, "exact", 3, offsetof(struct tr_cors_origin_cfg, kind), NULL},
};

/* Room for an endpoint's address: a 253-byte DNS name, ':' and a port. */
#define WR_ENDPOINT_TEXT 272u

struct wr {
    struct tr_fmt *f;
    bool json;
    bool compact;            /* JSON on one line, no blanks (for what is too big pretty) */
    char path[CFG_PATH_MAX]; /* the model path being written, for errors */
    size_t plen;
    char **err;
    bool failed;
    size_t group_first[sizeof(groups) / sizeof(groups[0])]; /* each group's first row */
    /* The rows the tables do not explain. */
    const struct cfg_field *route_name, *route_cluster, *route_weighted, *weighted_cluster,
        *weighted_weight, *vhost_name, *cluster_protocol, *cluster_h2_streams, *listener_http,
        *abort_status, *abort_grpc_status, *cors_max_age, *endpoint_address, *cluster_dns_refresh;
    /* The endpoint whose address check_endpoint() just spelled, and that
     * text (in ep_buf or the model's): its address row writes it without
     * checking it again. */
    const void *ep;
    const char *ep_text;
    char ep_buf[WR_ENDPOINT_TEXT];
};

static const void *at(const void *obj, size_t off)
{
    return (const unsigned char *)obj + off;
}

static const struct cfg_field *row(const struct cfg_section *sec, const char *key)
{
    return &sec->fields[cfg_field_index(sec, key)];
}

__attribute__((format(printf, 2, 3))) static bool wfail(struct wr *w, const char *fmt, ...)
{
    if (w->failed)
        return false;
    w->failed = true;
    if (w->err == NULL)
        return false;
    char msg[CFG_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *out = NULL;
    if (asprintf(&out, "%s%s%s", w->path, w->plen != 0 ? ": " : "", msg) < 0)
        out = NULL;
    free(*w->err);
    *w->err = out;
    return false;
}

static size_t push_key(struct wr *w, const char *key)
{
    return tr_path_push_key(w->path, sizeof(w->path), &w->plen, key);
}

static size_t push_index(struct wr *w, size_t i)
{
    return tr_path_push_index(w->path, sizeof(w->path), &w->plen, i);
}

static void pop(struct wr *w, size_t saved)
{
    tr_path_pop(w->path, &w->plen, saved);
}

/* ------------------------------------------------------------ output */

/* tr_fmt_bytes(), with the common case (room left) inline: a model is
 * written in tens of thousands of small pieces. */
static inline void put_n(struct wr *w, const char *s, size_t n)
{
    struct tr_fmt *f = w->f;
    if (f->p != NULL && n < f->size - f->len && n <= f->max - f->len) {
        memcpy(f->p + f->len, s, n);
        f->len += n;
        f->p[f->len] = '\0';
        return;
    }
    tr_fmt_bytes(f, s, n);
}

static inline void put(struct wr *w, const char *s)
{
    put_n(w, s, strlen(s));
}

/* A decimal number (the writer's most common scalar: ports, weights,
 * limits), without printf. */
static void put_uint(struct wr *w, uint32_t v)
{
    char digits[12], *p = digits + sizeof(digits);
    do
        *--p = (char)('0' + v % 10u);
    while ((v /= 10u) != 0);
    put_n(w, p, (size_t)(digits + sizeof(digits) - p));
}

static void spaces(struct wr *w, unsigned n)
{
    static const char sp[] = "                                ";
    while (n > 0 && !w->compact) {
        unsigned k = n < sizeof(sp) - 1 ? n : (unsigned)sizeof(sp) - 1;
        put_n(w, sp, k);
        n -= k;
    }
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Whether s may be a plain YAML scalar that every reader (our loader, YAML
 * 1.1 tools such as PyYAML, YAML 1.2 ones) takes for exactly this string:
 * a conservative set of characters, no indicator first, no word a reader
 * takes for a bool or null, nothing that may be a number or a date (a
 * string starting with a digit needs a letter no number or timestamp
 * contains: "10s" is plain, "1.3", "1e3", "0x10" and addresses are not).
 * In flow context ([a, b]) no ':' either. */
static bool plain_ok(const char *s, size_t n, bool flow)
{
    static const char *const words[] = {"y",   "n",    "yes",   "no",  "on",
                                        "off", "true", "false", "null"};
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0 || !(is_alpha(u[0]) || is_digit(u[0]) || u[0] == '_' || u[0] == '/'))
        return false;
    bool not_number = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = u[i];
        if (is_alpha(c)) {
            /* a letter no number or timestamp holds: not a-f, x, o, t */
            unsigned char l = c | 0x20;
            not_number =
                not_number || !((l >= 'a' && l <= 'f') || l == 'x' || l == 'o' || l == 't');
            continue;
        }
        if (is_digit(c))
            continue;
        switch (c) {
        case '_':
        case '.':
        case '/':
        case '-':
        case '+':
        case '@':
        case '*':
        case '~':
            continue;
        case ':':
            if (!flow && i + 1 < n)
                continue;
            return false;
        default:
            return false;
        }
    }
    if (is_digit(u[0]) && !not_number)
        return false;
    /* every word starts with one of these letters */
    unsigned char first = u[0] | 0x20;
    if (n > 5 || !(first == 'y' || first == 'n' || first == 'o' || first == 't' || first == 'f'))
        return true;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (strcasecmp(s, words[i]) == 0)
            return false;
    }
    return true;
}

/* A string value; flow: inside [a, b]. */
static bool str_value(struct wr *w, const char *s, bool flow)
{
    size_t n = strlen(s);
    if (!tr_fmt_utf8_valid(s, n))
        return wfail(w, "not valid UTF-8 (a configuration file is UTF-8 text)");
    if (w->json)
        tr_fmt_json_str(w->f, s, n);
    else if (plain_ok(s, n, flow))
        put_n(w, s, n);
    else
        tr_fmt_yaml_str(w->f, s, n);
    return true;
}

/* A line break between JSON entries (none when compact). */
static void nl(struct wr *w)
{
    if (!w->compact)
        put(w, "\n");
}

/* After a key: the separator before a scalar, and the end of its line. */
static void scalar_open(struct wr *w)
{
    if (!w->json)
        put(w, " ");
}

static void scalar_close(struct wr *w)
{
    if (!w->json)
        put(w, "\n");
}

static void key(struct wr *w, struct wmap *m, const char *k)
{
    if (w->json) {
        if (!m->first)
            put(w, ",");
        nl(w);
        spaces(w, m->col);
        tr_fmt_json_cstr(w->f, k);
        put(w, ":");
    } else {
        if (!(m->first && m->inline_first))
            spaces(w, m->col);
        put(w, k);
        put(w, ":");
    }
    if (w->json && !w->compact)
        put(w, " ");
    m->first = false;
}

/* Milliseconds as the loader reads them back: "0s", "250ms", "1.5s",
 * "1m30s", "1h2m3.004s". */
static void duration_text(uint32_t ms, char *buf, size_t size)
{
    uint32_t h = ms / 3600000u, m = ms / 60000u % 60u, s = ms / 1000u % 60u, frac = ms % 1000u;
    size_t o = 0;
    buf[0] = '\0';
    if (ms == 0) {
        snprintf(buf, size, "0s");
        return;
    }
    if (h != 0)
        o += (size_t)snprintf(buf + o, size - o, "%uh", h);
    if (m != 0)
        o += (size_t)snprintf(buf + o, size - o, "%um", m);
    if (frac != 0 && s == 0) {
        snprintf(buf + o, size - o, "%ums", frac);
    } else if (frac != 0) {
        char f3[8];
        snprintf(f3, sizeof(f3), "%03u", frac);
        for (size_t k = 2; k > 0 && f3[k] == '0'; k--)
            f3[k] = '\0';
        snprintf(buf + o, size - o, "%u.%ss", s, f3);
    } else if (s != 0) {
        snprintf(buf + o, size - o, "%us", s);
    }
}

/* The text of an address: as the model spells it (names and messages use
 * it), which must read back as the same socket address; formatted from the
 * address when the model has no text (before validate). */
static bool addr_text(struct wr *w, const struct tr_cfg_addr *a, char *buf, size_t size,
                      const char **out)
{
    char why[CFG_WHY_MAX];
    struct tr_cfg_addr back;
    if (a->text != NULL) {
        if (!cfg_addr_parse(a->text, true, &back, why, sizeof(why)) || back.len != a->len ||
            memcmp(&back.ss, &a->ss, a->len) != 0)
            return wfail(w, "the text \"%s\" does not spell the socket address the model holds",
                         a->text);
        *out = a->text;
        return true;
    }
    char host[INET6_ADDRSTRLEN];
    if (a->ss.ss_family == AF_INET && a->len == sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(buf, size, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
    } else if (a->ss.ss_family == AF_INET6 && a->len == sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(buf, size, "[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
    } else {
        return wfail(w, "not an IPv4 or IPv6 socket address (family %d, length %u)",
                     (int)a->ss.ss_family, (unsigned)a->len);
    }
    *out = buf;
    return true;
}

/* An endpoint's address as a file says it: an IP address (addr_text), or
 * a DNS name and port, as the model spells it (addr.text, which names use)
 * when that reads back as the same name and port. */
static bool endpoint_text(struct wr *w, const struct tr_endpoint_cfg *e, char *buf, size_t size,
                          const char **out)
{
    if (e->host == NULL)
        return addr_text(w, &e->addr, buf, size, out);
    if (e->addr.text == NULL) {
        snprintf(buf, size, "%s:%u", e->host, (unsigned)e->port);
        *out = buf;
        return true;
    }
    struct tr_cfg_addr back;
    size_t host_len = 0;
    uint16_t port = 0;
    char why[CFG_WHY_MAX];
    if (!cfg_endpoint_addr_parse(e->addr.text, &back, &host_len, &port, why, sizeof(why)) ||
        host_len != strlen(e->host) || memcmp(e->addr.text, e->host, host_len) != 0 ||
        port != e->port)
        return wfail(w,
                     "the text \"%s\" does not spell the host name and port the model holds "
                     "(%s:%u)",
                     e->addr.text, e->host, (unsigned)e->port);
    *out = e->addr.text;
    return true;
}

/* The spelling of an enum field's value, NULL if it has none. */
static const char *enum_name(const struct cfg_field *fd, const void *obj)
{
    if (fd->flags & CF_ENUM_STR) {
        const char *s = *(const char *const *)at(obj, fd->off);
        for (size_t i = 0; s != NULL && i < fd->n_names; i++) {
            if (strcmp(s, fd->names[i]) == 0)
                return fd->names[i];
        }
        return NULL;
    }
    int v =
        (fd->flags & CF_U16) ? *(const uint16_t *)at(obj, fd->off) : *(const int *)at(obj, fd->off);
    for (size_t i = 0; i < fd->n_names; i++) {
        if ((fd->values != NULL ? fd->values[i] : (int)i) == v)
            return fd->names[i];
    }
    return NULL;
}

/* ------------------------------------------------- what differs */

static const struct group *group_of(const struct wr *w, const struct cfg_section *sec, size_t i,
                                    size_t *pos)
{
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
        if (groups[g].sec != sec)
            continue;
        size_t first = w->group_first[g];
        if (i >= first && i < first + groups[g].n) {
            *pos = i - first;
            return &groups[g];
        }
    }
    return NULL;
}

/* The row of g that kind stands for (0 .. g->n-1), or g->n if none. */
static size_t group_row(const struct group *g, int kind)
{
    for (size_t k = 0; k < g->n; k++) {
        if ((g->kinds != NULL ? (int)g->kinds[k] : (int)k) == kind)
            return k;
    }
    return g->n;
}

static bool has_origin(const struct tr_cfg_loc *loc)
{
    return loc->origin.kind != NULL || loc->origin.name != NULL;
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool section_written(struct wr *w, const struct cfg_section *sec, const void *obj,
                            size_t idx);
static bool field_written(struct wr *w, const struct cfg_section *sec, size_t i, const void *obj,
                          size_t idx);

/* The short form `cluster: NAME` says exactly what r holds: one cluster of
 * weight 1, nothing else of its own (header edits, ...: any other row of
 * the weighted cluster's table at its default), whose source is the
 * route's (the loader gives it the route's location). */
static bool route_short_cluster(struct wr *w, const struct tr_route_cfg *r)
{
    if (r->n_clusters != 1 || r->clusters[0].weight != 1)
        return false;
    const struct cfg_section *sec = w->route_weighted->sub;
    for (size_t i = 0; i < sec->n_fields; i++) {
        const struct cfg_field *fd = &sec->fields[i];
        if (fd != w->weighted_cluster && fd != w->weighted_weight &&
            !(fd->kind == CK_SECTION && fd->sub == &cfg_origin_section) &&
            field_written(w, sec, i, &r->clusters[0], 0))
            return false;
    }
    const struct tr_cfg_loc *a = &r->clusters[0].loc, *b = &r->loc;
    if (!has_origin(a) || !has_origin(b))
        return !has_origin(a) && !has_origin(b);
    return same_str(a->origin.kind, b->origin.kind) && same_str(a->origin.ns, b->origin.ns) &&
           same_str(a->origin.name, b->origin.name) && same_str(a->path, b->path);
}

/* Whether obj's field (a plain table row) holds its default. */
static bool is_default(struct wr *w, const struct cfg_field *fd, const void *obj)
{
    bool def = (fd->flags & CF_DEF) != 0;
    switch (fd->kind) {
    case CK_STR:
    case CK_NAME:
    case CK_FILE: {
        const char *s = *(const char *const *)at(obj, fd->off);
        if (def && fd->def_str != NULL)
            return s != NULL && strcmp(s, fd->def_str) == 0;
        return s == NULL;
    }
    case CK_BOOL:
        return *(const bool *)at(obj, fd->off) == (def && fd->def != 0);
    case CK_U32:
    case CK_DURATION:
    case CK_PERCENT: {
        uint32_t x = *(const uint32_t *)at(obj, fd->off);
        if (fd == w->cluster_h2_streams)
            return x == 0 || x == CFG_H2_STREAMS_DEF;
        if (fd == w->cluster_dns_refresh)
            return x == 0 || x == CFG_DNS_REFRESH_DEF;
        return x == (def ? fd->def : 0);
    }
    case CK_U16:
        return *(const uint16_t *)at(obj, fd->off) == (def ? fd->def : 0);
    case CK_ENUM: {
        if (fd->flags & CF_ENUM_STR) {
            const char *s = *(const char *const *)at(obj, fd->off);
            return def ? s != NULL && strcmp(s, fd->names[fd->def]) == 0 : s == NULL;
        }
        int v = (fd->flags & CF_U16) ? *(const uint16_t *)at(obj, fd->off)
                                     : *(const int *)at(obj, fd->off);
        int d = !def ? 0 : fd->values != NULL ? fd->values[fd->def] : (int)fd->def;
        return v == d;
    }
    case CK_ADDR: {
        const struct tr_cfg_addr *a = at(obj, fd->off);
        if (!def || fd->def_str == NULL)
            return a->len == 0 && a->ss.ss_family == 0;
        struct tr_cfg_addr d;
        char why[CFG_WHY_MAX];
        return cfg_addr_parse(fd->def_str, true, &d, why, sizeof(why)) && d.len == a->len &&
               memcmp(&d.ss, &a->ss, a->len) == 0 &&
               (a->text == NULL || strcmp(a->text, fd->def_str) == 0);
    }
    case CK_STRLIST:
    case CK_LIST:
    case CK_MAP:
        return *(const size_t *)at(obj, fd->off_n) == 0;
    case CK_OPTIONAL:
        return *(const void *const *)at(obj, fd->off) == NULL;
    case CK_SECTION:
        return !section_written(w, fd->sub, at(obj, fd->off), 0);
    case CK_CUSTOM:
        return true; /* only the rows check_tables() admits; handled by their callers */
    }
    return true;
}

/* Whether name is the one the loader gives item idx: PREFIX and idx in
 * decimal ("route-3"). */
static bool generated_name(const char *name, const char *prefix, size_t idx)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0)
        return false;
    char digits[24], *p = digits + sizeof(digits);
    *--p = '\0';
    do
        *--p = (char)('0' + idx % 10);
    while ((idx /= 10) != 0);
    return strcmp(name + pl, p) == 0;
}

/* Whether field i of obj (item idx of its list) is written at all. */
static bool field_written(struct wr *w, const struct cfg_section *sec, size_t i, const void *obj,
                          size_t idx)
{
    const struct cfg_field *fd = &sec->fields[i];
    size_t pos;
    const struct group *g = group_of(w, sec, i, &pos);
    if (g != NULL) {
        /* The group is written at its first row, when its kind or value is
         * not the first row's default. */
        int kind = *(const int *)at(obj, g->kind_off);
        return pos == 0 && (group_row(g, kind) != 0 || !is_default(w, fd, obj));
    }
    if (fd == w->route_name || fd == w->vhost_name) {
        const char *name = *(const char *const *)at(obj, fd->off);
        return name != NULL &&
               !generated_name(name, fd == w->route_name ? "route-" : "vhost-", idx);
    }
    if (fd->kind == CK_SECTION && fd->sub == &cfg_origin_section)
        return has_origin(at(obj, fd->off)); /* without one, loc.path is the file's */
    if (fd == w->route_cluster)
        return route_short_cluster(w, obj);
    if (fd == w->route_weighted)
        return !route_short_cluster(w, obj) && !is_default(w, fd, obj);
    if (fd == w->cluster_protocol) {
        const struct tr_cluster_cfg *c = obj;
        return c->protocol != (c->tls_name != NULL ? TR_UPROTO_ORIGINAL : TR_UPROTO_HTTP1);
    }
    if (fd == w->abort_status || fd == w->abort_grpc_status) /* exactly one, required */
        return ((const struct tr_fault_abort_cfg *)obj)->grpc == (fd == w->abort_grpc_status);
    if (fd == w->cors_max_age)
        return ((const struct tr_cors_cfg *)obj)->has_max_age;
    return !is_default(w, fd, obj);
}

static bool section_written(struct wr *w, const struct cfg_section *sec, const void *obj,
                            size_t idx)
{
    for (size_t i = 0; i < sec->n_fields; i++) {
        if (field_written(w, sec, i, obj, idx))
            return true;
    }
    return false;
}

/* ------------------------------------------------------------ writing */

static bool write_map(struct wr *w, const struct cfg_section *sec, const void *obj, struct wmap *m,
                      size_t idx);

/* A nested mapping as the value of the key just written. */
static bool map_value(struct wr *w, const struct cfg_section *sec, const void *obj, unsigned col,
                      size_t idx)
{
    struct wmap m = {.col = col + 2, .first = true};
    size_t start = w->f->len;
    put(w, w->json ? "{" : "\n");
    if (!write_map(w, sec, obj, &m, idx))
        return false;
    if (m.first) {
        tr_fmt_rewind(w->f, start);
        put(w, w->json ? "{}" : " {}\n");
    } else if (w->json) {
        nl(w);
        spaces(w, col);
        put(w, "}");
    }
    return true;
}

/* A list of objects as the value of the key just written (col: its column). */
static bool list_value(struct wr *w, const struct cfg_field *fd, const void *obj, unsigned col)
{
    const unsigned char *arr = *(const unsigned char *const *)at(obj, fd->off);
    size_t n = *(const size_t *)at(obj, fd->off_n);
    if (n == 0) {
        put(w, w->json ? "[]" : " []\n");
        return true;
    }
    put(w, w->json ? "[" : "\n");
    for (size_t k = 0; k < n; k++) {
        size_t saved = push_index(w, k);
        const void *item = arr + k * fd->item_size;
        struct wmap m = {.col = col + 4, .first = true, .inline_first = !w->json};
        if (w->json) {
            if (k != 0)
                put(w, ",");
            nl(w);
            spaces(w, col + 2);
            put(w, "{");
        } else {
            spaces(w, col + 2);
            put(w, "- ");
        }
        if (!write_map(w, fd->sub, item, &m, k))
            return false;
        if (w->json && !m.first) {
            nl(w);
            spaces(w, col + 2);
        }
        if (w->json)
            put(w, "}");
        else if (m.first)
            put(w, "{}\n");
        pop(w, saved);
    }
    if (w->json) {
        nl(w);
        spaces(w, col);
        put(w, "]");
    }
    return true;
}

/* A list of strings: on the key's line if short, else one per line. */
static bool strlist_value(struct wr *w, const char *const *arr, size_t n, unsigned col)
{
    size_t start = w->f->len;
    put(w, w->json ? "[" : " [");
    for (size_t k = 0; k < n; k++) {
        size_t saved = push_index(w, k);
        if (k != 0)
            put(w, w->compact ? "," : ", ");
        if (!str_value(w, arr[k], true))
            return false;
        pop(w, saved);
    }
    put(w, "]");
    const char *brk = w->f->p != NULL ? memrchr(w->f->p, '\n', start) : NULL;
    size_t line_start = brk != NULL ? (size_t)(brk - w->f->p) + 1 : 0;
    if (n <= 1 || w->compact || w->f->len - line_start <= WR_FLOW_WIDTH) {
        scalar_close(w);
        return true;
    }
    tr_fmt_rewind(w->f, start);
    put(w, w->json ? "[" : "\n");
    for (size_t k = 0; k < n; k++) {
        if (w->json) {
            if (k != 0)
                put(w, ",");
            nl(w);
            spaces(w, col + 2);
        } else {
            spaces(w, col + 2);
            put(w, "- ");
        }
        str_value(w, arr[k], false); /* valid: checked above */
        scalar_close(w);
    }
    if (w->json) {
        nl(w);
        spaces(w, col);
        put(w, "]");
    }
    return true;
}

/* A CK_MAP's NAME: VALUE entries as a mapping (n > 0), in the model's order.
 * A name is quoted as a value in [a, b] would be: conservative for a key. */
static bool names_value(struct wr *w, const struct tr_name_value_cfg *arr, size_t n, unsigned col)
{
    struct wmap m = {.col = col + 2, .first = true};
    put(w, w->json ? "{" : "\n");
    for (size_t k = 0; k < n; k++) {
        if (arr[k].name == NULL || arr[k].value == NULL)
            return wfail(w, "entry %zu has no %s", k, arr[k].name == NULL ? "name" : "value");
        size_t saved = push_key(w, arr[k].name);
        if (w->json) {
            if (!m.first)
                put(w, ",");
            nl(w);
            spaces(w, m.col);
        } else {
            spaces(w, m.col);
        }
        m.first = false;
        if (!str_value(w, arr[k].name, true))
            return false;
        put(w, w->json && !w->compact ? ": " : ":");
        scalar_open(w);
        if (!str_value(w, arr[k].value, false))
            return false;
        scalar_close(w);
        pop(w, saved);
    }
    if (w->json) {
        nl(w);
        spaces(w, col);
        put(w, "}");
    }
    return true;
}

/* The value of plain row fd of obj (its key is written). */
static bool scalar_value(struct wr *w, const struct cfg_field *fd, const void *obj)
{
    char buf[INET6_ADDRSTRLEN + 16];
    const char *s = NULL;
    scalar_open(w);
    switch (fd->kind) {
    case CK_STR:
    case CK_NAME:
    case CK_FILE:
        s = *(const char *const *)at(obj, fd->off);
        if (s == NULL)
            return wfail(w, "unset, and a file cannot say so: leaving the key out means %s",
                         fd->def_str != NULL ? fd->def_str : "the default");
        if (!str_value(w, s, false))
            return false;
        break;
    case CK_BOOL:
        put(w, *(const bool *)at(obj, fd->off) ? "true" : "false");
        break;
    case CK_U32:
        put_uint(w, *(const uint32_t *)at(obj, fd->off));
        break;
    case CK_U16:
        put_uint(w, *(const uint16_t *)at(obj, fd->off));
        break;
    case CK_DURATION:
        duration_text(*(const uint32_t *)at(obj, fd->off), buf, sizeof(buf));
        str_value(w, buf, false);
        break;
    case CK_ENUM:
        if ((s = enum_name(fd, obj)) == NULL)
            return wfail(w, "a value with no name in the format");
        str_value(w, s, false);
        break;
    case CK_ADDR:
        if (!addr_text(w, at(obj, fd->off), buf, sizeof(buf), &s) || !str_value(w, s, false))
            return false;
        break;
    case CK_PERCENT: {
        /* Plain, as the loader reads it: per million as a percentage with
         * at most 4 decimals ("12.5", "0.0001", "100"). */
        uint32_t pm = *(const uint32_t *)at(obj, fd->off);
        char frac[8];
        int n = snprintf(frac, sizeof(frac), "%04u", pm % 10000u);
        while (n > 0 && frac[n - 1] == '0')
            frac[--n] = '\0';
        tr_fmt_printf(w->f, "%u%s%s", pm / 10000u, n > 0 ? "." : "", frac);
        break;
    }
    case CK_STRLIST:
    case CK_SECTION:
    case CK_LIST:
    case CK_MAP:
    case CK_OPTIONAL:
    case CK_CUSTOM:
        return wfail(w, "not a scalar field");
    }
    scalar_close(w);
    return true;
}

/* Row i of sec for obj, as an entry of m, if it is written. */
static bool write_field(struct wr *w, const struct cfg_section *sec, size_t i, const void *obj,
                        struct wmap *m, size_t idx)
{
    const struct cfg_field *fd = &sec->fields[i];
    size_t pos;
    const struct group *g = group_of(w, sec, i, &pos);
    /* A written group shows its key even at its default (the loader needs one). */
    bool forced = (fd->flags & CF_REQ) || (g != NULL && pos == 0);
    if (g != NULL && pos != 0)
        return true;
    if (!forced && !field_written(w, sec, i, obj, idx))
        return true;
    bool ok = true;
    size_t saved = push_key(w, fd->key);
    if (g != NULL) {
        int kind = *(const int *)at(obj, g->kind_off);
        size_t row_k = group_row(g, kind);
        if (row_k == g->n) {
            ok = wfail(w, "unknown kind %d", kind);
        } else {
            const struct cfg_field *chosen = fd + row_k;
            pop(w, saved);
            saved = push_key(w, chosen->key);
            key(w, m, chosen->key);
            if (chosen->kind == CK_CUSTOM) { /* present: true */
                scalar_open(w);
                put(w, "true");
                scalar_close(w);
            } else {
                ok = scalar_value(w, chosen, obj);
            }
        }
    } else if (fd == w->route_cluster) {
        const struct tr_route_cfg *r = obj;
        key(w, m, fd->key);
        scalar_open(w);
        ok = str_value(w, r->clusters[0].cluster_name, false);
        scalar_close(w);
    } else if (fd == w->listener_http &&
               ((const struct tr_listener_cfg *)obj)->protocol == TR_LPROTO_TCP) {
        ok = wfail(w, "HTTP settings differ from the defaults on a tcp listener, which a file "
                      "cannot say (the loader refuses http there)");
    } else if (fd == w->abort_grpc_status) {
        key(w, m, fd->key);
        scalar_open(w);
        put_uint(w, ((const struct tr_fault_abort_cfg *)obj)->grpc_status);
        scalar_close(w);
    } else if (fd == w->endpoint_address) {
        char buf[WR_ENDPOINT_TEXT];
        const char *text = w->ep == obj ? w->ep_text : NULL; /* spelled by check_endpoint */
        key(w, m, fd->key);
        scalar_open(w);
        ok = (text != NULL || endpoint_text(w, obj, buf, sizeof(buf), &text)) &&
             str_value(w, text, false);
        scalar_close(w);
    } else if (fd == w->cors_max_age) {
        char text[32];
        duration_text(((const struct tr_cors_cfg *)obj)->max_age_s * 1000u, text, sizeof(text));
        key(w, m, fd->key);
        scalar_open(w);
        ok = str_value(w, text, false);
        scalar_close(w);
    } else if (fd->kind == CK_SECTION) {
        key(w, m, fd->key);
        ok = map_value(w, fd->sub, at(obj, fd->off), m->col, idx);
    } else if (fd->kind == CK_OPTIONAL) {
        key(w, m, fd->key);
        ok = map_value(w, fd->sub, *(const void *const *)at(obj, fd->off), m->col, 0);
    } else if (fd->kind == CK_LIST) {
        key(w, m, fd->key);
        ok = list_value(w, fd, obj, m->col);
    } else if (fd->kind == CK_STRLIST) {
        key(w, m, fd->key);
        ok = strlist_value(w, *(const char *const *const *)at(obj, fd->off),
                           *(const size_t *)at(obj, fd->off_n), m->col);
    } else if (fd->kind == CK_MAP) {
        key(w, m, fd->key);
        ok = names_value(w, *(const struct tr_name_value_cfg *const *)at(obj, fd->off),
                         *(const size_t *)at(obj, fd->off_n), m->col);
    } else {
        key(w, m, fd->key);
        ok = scalar_value(w, fd, obj);
    }
    pop(w, saved);
    return ok;
}

/* What a file cannot say about an endpoint: a name other than its address.
 * The address's text is kept for its row (write_field). */
static bool check_endpoint(struct wr *w, const struct tr_endpoint_cfg *e)
{
    const char *text;
    w->ep = NULL;
    size_t saved = push_key(w, "address");
    if (!endpoint_text(w, e, w->ep_buf, sizeof(w->ep_buf), &text))
        return false;
    pop(w, saved);
    w->ep = e;
    w->ep_text = text;
    if (e->name != NULL && strcmp(e->name, text) != 0) {
        saved = push_key(w, "name");
        wfail(w, "\"%s\" differs from the address %s, and a file names an endpoint by its address",
              e->name, text);
        pop(w, saved);
        return false;
    }
    return true;
}

static bool write_map(struct wr *w, const struct cfg_section *sec, const void *obj, struct wmap *m,
                      size_t idx)
{
    if (sec == &cfg_endpoint_section && !check_endpoint(w, obj))
        return false;
    /* An object's own settings first, then its lists of objects. */
    for (int lists = 0; lists < 2; lists++) {
        for (size_t i = 0; i < sec->n_fields; i++) {
            if ((sec->fields[i].kind == CK_LIST) != (lists == 1))
                continue;
            if (!write_field(w, sec, i, obj, m, idx))
                return false;
        }
    }
    return !w->failed;
}

/* ------------------------------------------------------ the tables */

static bool scalar_kind(enum cfg_kind k)
{
    return k != CK_SECTION && k != CK_LIST && k != CK_MAP && k != CK_CUSTOM && k != CK_OPTIONAL;
}

/* Refuses a table row the writer would get wrong (see the top of the file). */
static bool check_tables(struct wr *w, const struct cfg_section *sec, unsigned depth)
{
    if (depth > CFG_MAX_DEPTH)
        return wfail(w, "schema: sections nested too deep");
    for (size_t i = 0; i < sec->n_fields; i++) {
        const struct cfg_field *fd = &sec->fields[i];
        size_t pos;
        bool grouped = group_of(w, sec, i, &pos) != NULL;
        if (fd->kind == CK_CUSTOM && !grouped && fd != w->route_cluster &&
            fd != w->abort_grpc_status && fd != w->cors_max_age && fd != w->endpoint_address)
            return wfail(w,
                         "schema: %s.%s is read by custom code that config/write.c does not "
                         "know how to write",
                         sec->name, fd->key);
        for (size_t j = 0; j < i && scalar_kind(fd->kind) && !grouped; j++) {
            if (scalar_kind(sec->fields[j].kind) && sec->fields[j].off == fd->off)
                return wfail(w,
                             "schema: %s.%s and %s fill one model field; config/write.c needs "
                             "to know which key to write",
                             sec->name, sec->fields[j].key, fd->key);
        }
        if ((fd->kind == CK_SECTION || fd->kind == CK_LIST || fd->kind == CK_OPTIONAL) &&
            !check_tables(w, fd->sub, depth + 1))
            return false;
    }
    return true;
}

/* One attempt in one style; *too_big (no error set) when the text passes
 * the loader's limit or f's. */
static bool write_pass(struct wr *w, const struct tr_config *cfg, unsigned depth, bool *too_big)
{
    struct tr_fmt *f = w->f;
    size_t start = f->len;
    struct wmap m = {.col = w->json ? 2 * depth + 2 : 0, .first = true};
    *too_big = false;
    if (w->json)
        put(w, "{");
    if (!write_map(w, &cfg_root_section, cfg, &m, 0))
        return false;
    if (w->json && !m.first) {
        nl(w);
        spaces(w, 2 * depth);
    }
    put(w, w->json ? "}" : m.first ? "{}\n" : "");
    w->plen = 0;
    w->path[0] = '\0';
    if (f->oom)
        return wfail(w, "out of memory");
    /* With the final newline, at most what the loader reads. */
    *too_big = f->truncated || f->len - start > CFG_MAX_FILE_SIZE - 1;
    return !*too_big;
}

static bool write_doc(struct tr_fmt *f, const struct tr_config *cfg, bool json, unsigned depth,
                      char **err)
{
    struct wr w = {.f = f, .json = json, .err = err};
    const struct cfg_field *h2 = row(&cfg_cluster_section, "http2");
    w.route_name = row(&cfg_route_section, "name");
    w.route_cluster = row(&cfg_route_section, "cluster");
    w.route_weighted = row(&cfg_route_section, "weighted_clusters");
    w.weighted_cluster = row(w.route_weighted->sub, "cluster");
    w.weighted_weight = row(w.route_weighted->sub, "weight");
    w.vhost_name = row(&cfg_vhost_section, "name");
    w.cluster_protocol = row(&cfg_cluster_section, "protocol");
    w.cluster_h2_streams = row(h2->sub, "max_streams_per_connection");
    w.listener_http = row(&cfg_listener_section, "http");
    w.abort_status = row(&cfg_fault_abort_section, "status");
    w.abort_grpc_status = row(&cfg_fault_abort_section, "grpc_status");
    w.cors_max_age = row(&cfg_cors_section, "max_age");
    w.endpoint_address = row(&cfg_endpoint_section, "address");
    w.cluster_dns_refresh = row(row(&cfg_cluster_section, "dns")->sub, "refresh");
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++)
        w.group_first[g] = cfg_field_index(groups[g].sec, groups[g].first);
    if (f->truncated)
        return wfail(&w, "the text before the configuration was cut");
    if (!check_tables(&w, &cfg_root_section, 0))
        return false;
    size_t start = f->len;
    bool too_big;
    if (write_pass(&w, cfg, depth, &too_big) || !too_big)
        return !w.failed;
    /* Pretty text (indentation, a line per field) can be twice what a
     * dense file the loader took: what does not fit is written as compact
     * JSON, which is YAML too, rather than not at all. */
    tr_fmt_rewind(f, start);
    f->truncated = false; /* the dropped piece was ours, and rewound */
    w.json = w.compact = true;
    if (write_pass(&w, cfg, depth, &too_big))
        return true;
    if (too_big && f->max - start < CFG_MAX_FILE_SIZE)
        wfail(&w, "the configuration does not fit the %zu bytes left for it even as compact JSON",
              f->max - start);
    else if (too_big)
        wfail(&w,
              "the configuration is more than %u bytes (the loader's limit) even as compact JSON",
              CFG_MAX_FILE_SIZE);
    return false;
}

char *tr_config_write(const struct tr_config *cfg, enum tr_config_format fmt, size_t *len,
                      char **err)
{
    struct tr_fmt f;
    if (err != NULL)
        *err = NULL;
    tr_fmt_init_growable(&f, CFG_MAX_FILE_SIZE);
    bool json = fmt == TR_CONFIG_JSON;
    if (!write_doc(&f, cfg, json, 0, err)) {
        tr_fmt_free(&f);
        return NULL;
    }
    if (f.len == 0 || f.p[f.len - 1] != '\n')
        tr_fmt_bytes(&f, "\n", 1);
    size_t n = 0;
    char *text = tr_fmt_take(&f, &n);
    if (text == NULL) {
        if (err != NULL)
            *err = strdup("the configuration is larger than the loader's limit");
        return NULL;
    }
    *len = n;
    return text;
}

bool tr_config_write_json_to(struct tr_fmt *f, const struct tr_config *cfg, unsigned depth,
                             char **err)
{
    if (err != NULL)
        *err = NULL;
    return write_doc(f, cfg, true, depth, err);
}
