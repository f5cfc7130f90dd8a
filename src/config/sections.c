/* config/sections.c: what the schema tables cannot say.
 *
 * Each hook runs after its section's fields were read (schema.c) and sees
 * which keys were written: "exactly one of" groups, defaults that depend on
 * another field, settings that would be ignored. Whatever can be said of a
 * built model (references, ranges between fields, names) is in validate.c,
 * so it holds for compiled models too.
 */
#include <stdio.h>
#include <string.h>

#include "config/internal.h"
#include "core/arena.h"

#define NONE ((size_t)-1)

/* At most one of fields first..last (a table's consecutive fields) may be
 * set; a second one is an error at the one written later. *chosen: the set
 * field, NONE if none. */
static bool one_of(struct ld *ld, const struct cnode *map, const struct cfg_section *sec,
                   const struct cfg_val *f, const char *first, const char *last,
                   const char *choices, size_t *chosen)
{
    size_t lo = cfg_field_index(sec, first), hi = cfg_field_index(sec, last);
    *chosen = NONE;
    for (size_t i = lo; i <= hi; i++) {
        if (f[i].v == NULL)
            continue;
        if (*chosen == NONE) {
            *chosen = i;
            continue;
        }
        const struct cnode *a = f[*chosen].k, *b = f[i].k;
        bool b_later = b->line > a->line || (b->line == a->line && b->col > a->col);
        size_t later = b_later ? i : *chosen, earlier = b_later ? *chosen : i;
        return cfg_fail_field(ld, map, &sec->fields[later], &f[later],
                              "conflicts with %s; set exactly one of %s", sec->fields[earlier].key,
                              choices);
    }
    return true;
}

static bool has(const struct cfg_section *sec, const struct cfg_val *f, const char *key)
{
    return f[cfg_field_index(sec, key)].v != NULL;
}

bool cfg_listener_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                        size_t idx)
{
    (void)idx;
    const struct tr_listener_cfg *l = obj;
    const struct cfg_section *sec = &cfg_listener_section;
    size_t http = cfg_field_index(sec, "http");
    /* The model cannot tell written HTTP settings from defaults. */
    if (l->protocol == TR_LPROTO_TCP && f[http].v != NULL)
        return cfg_fail_field(ld, map, &sec->fields[http], &f[http],
                              "not allowed on a tcp listener");
    /* Weighted TCP routes: validate says it too (for built models); here the
     * error lands on whichever of the two keys the file wrote later. */
    size_t tcp;
    return one_of(ld, map, sec, f, "tcp_cluster", "tcp_clusters", "tcp_cluster, tcp_clusters",
                  &tcp);
}

/* An SNI rule's destination: tcp_cluster or tcp_clusters, as a listener's
 * (the missing one is validate's: it says it for built models too). */
bool cfg_sni_route_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                         size_t idx)
{
    (void)obj;
    (void)idx;
    size_t tcp;
    return one_of(ld, map, &cfg_sni_route_section, f, "tcp_cluster", "tcp_clusters",
                  "tcp_cluster, tcp_clusters", &tcp);
}

bool cfg_vhost_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                     size_t idx)
{
    (void)map;
    (void)idx;
    const struct tr_vhost_cfg *vh = obj;
    size_t routes = cfg_field_index(&cfg_vhost_section, "routes");
    /* The routes of all tables share one budget. */
    if (vh->n_routes > CFG_MAX_ROUTES - ld->total_routes) {
        size_t saved = cfg_path_push_key(ld, "routes");
        cfg_fail(ld, f[routes].v, "more than %u routes in the configuration", CFG_MAX_ROUTES);
        cfg_path_pop(ld, saved);
        return false;
    }
    ld->total_routes += vh->n_routes;
    return true;
}

/* "cluster: NAME" is weighted_clusters with one entry of weight 1; errors
 * about it name the route's "cluster" field. */
bool cfg_route_cluster_set(struct ld *ld, const struct cnode *k, const struct cnode *v, void *obj)
{
    (void)k;
    struct tr_route_cfg *r = obj;
    struct tr_weighted_cluster_cfg *wc = tr_arena_calloc(ld->a, 1, sizeof(*wc));
    if (wc == NULL)
        return cfg_oom(ld);
    if (!cfg_name_of(ld, v, &wc->cluster_name))
        return false;
    wc->weight = 1;
    wc->cluster = -1;
    wc->loc = r->loc;
    r->clusters = wc;
    r->n_clusters = 1;
    return true;
}

bool cfg_route_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                     size_t idx)
{
    (void)idx;
    struct tr_route_cfg *r = obj;
    const struct cfg_section *sec = &cfg_route_section;
    size_t action;
    /* Both cluster forms fill the same model field: only here can two be told apart. */
    if (!one_of(ld, map, sec, f, "cluster", "redirect",
                "cluster, weighted_clusters, direct_response, redirect", &action))
        return false;
    /* `cluster: NAME` is the route's own field: its location, origin included
     * (read after the cluster). */
    if (has(sec, f, "cluster"))
        r->clusters[0].loc = r->loc;
    /* A route without `retries` has the default policy, so only here is it
     * known that one was written for a route that sends nothing upstream
     * (validate refuses a policy other than the default, and mirrors). */
    size_t retries = cfg_field_index(sec, "retries");
    if ((action == cfg_field_index(sec, "direct_response") ||
         action == cfg_field_index(sec, "redirect")) &&
        f[retries].v != NULL)
        return cfg_fail_field(ld, map, &sec->fields[retries], &f[retries],
                              "a %s route sends no request upstream to retry",
                              sec->fields[action].key);
    return true;
}

bool cfg_path_match_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                          void *obj, size_t idx)
{
    (void)idx;
    struct tr_route_cfg *r = obj;
    const struct cfg_section *sec = &cfg_path_match_section;
    size_t kind;
    if (!one_of(ld, map, sec, f, "prefix", "regex", "prefix, exact, regex", &kind))
        return false;
    if (kind == NONE)
        return cfg_fail(ld, map, "one of prefix, exact, regex is required");
    r->path_kind = (enum tr_path_match)(kind - cfg_field_index(sec, "prefix"));
    return true;
}

bool cfg_header_present_set(struct ld *ld, const struct cnode *k, const struct cnode *v, void *obj)
{
    (void)obj;
    bool present = false;
    if (!cfg_bool_of(ld, v, &present))
        return false;
    if (!present)
        return cfg_fail(ld, k, "must be true; use invert: true to match a missing header");
    return true;
}

bool cfg_header_match_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                            void *obj, size_t idx)
{
    (void)idx;
    struct tr_header_match_cfg *h = obj;
    const struct cfg_section *sec = &cfg_header_match_section;
    size_t kind;
    if (!one_of(ld, map, sec, f, "exact", "present", "exact, prefix, suffix, regex, present",
                &kind))
        return false;
    if (kind == NONE)
        return cfg_fail(ld, map, "one of exact, prefix, suffix, regex, present is required");
    h->kind = (enum tr_header_match_kind)(kind - cfg_field_index(sec, "exact"));
    if (h->kind == TR_HMATCH_PRESENT)
        h->value = NULL;
    return true;
}

/* The kind each of the rows exact, prefix, regex, present stands for (a
 * query parameter has no suffix match). */
const enum tr_header_match_kind cfg_query_match_kinds[4] = {TR_HMATCH_EXACT, TR_HMATCH_PREFIX,
                                                            TR_HMATCH_REGEX, TR_HMATCH_PRESENT};

bool cfg_query_present_set(struct ld *ld, const struct cnode *k, const struct cnode *v, void *obj)
{
    (void)obj;
    bool present = false;
    if (!cfg_bool_of(ld, v, &present))
        return false;
    if (!present)
        return cfg_fail(ld, k, "must be true (a route cannot require a parameter to be absent)");
    return true;
}

bool cfg_query_match_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                           void *obj, size_t idx)
{
    (void)idx;
    struct tr_query_match_cfg *q = obj;
    const struct cfg_section *sec = &cfg_query_match_section;
    size_t kind;
    if (!one_of(ld, map, sec, f, "exact", "present", "exact, prefix, regex, present", &kind))
        return false;
    if (kind == NONE)
        return cfg_fail(ld, map, "one of exact, prefix, regex, present is required");
    q->kind = cfg_query_match_kinds[kind - cfg_field_index(sec, "exact")];
    if (q->kind == TR_HMATCH_PRESENT)
        q->value = NULL;
    return true;
}

bool cfg_cluster_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                       size_t idx)
{
    (void)idx;
    struct tr_cluster_cfg *c = obj;
    const struct cfg_section *sec = &cfg_cluster_section;
    bool protocol_set = has(sec, f, "protocol");
    /* Default: a cluster that originates mTLS leads to a trellis peer (the
     * mesh hop), which speaks both protocols: keep the client's, so HTTP/1.1
     * rides pooled HTTP/1.1 (cheapest per request at low rates, see
     * docs/performance.md) and HTTP/2 and gRPC stay multiplexed HTTP/2.
     * Anything else gets HTTP/1.1 unless told. */
    if (!protocol_set && has(sec, f, "tls"))
        c->protocol = TR_UPROTO_ORIGINAL;
    /* Said here as well as in validate: only here is it known whether
     * http1 was written or is the default. */
    /* Only a cluster with a name among its endpoints resolves anything. */
    size_t dns = cfg_field_index(sec, "dns");
    bool names = false;
    for (size_t i = 0; i < c->n_endpoints; i++)
        names |= c->endpoints[i].host != NULL;
    if (f[dns].v != NULL && !names)
        return cfg_fail_field(ld, map, &sec->fields[dns], &f[dns],
                              "DNS settings on a cluster whose endpoints are all IP addresses "
                              "would be ignored; remove them");
    size_t h2 = cfg_field_index(sec, "http2");
    if (f[h2].v != NULL && c->protocol == TR_UPROTO_HTTP1)
        return cfg_fail_field(ld, map, &sec->fields[h2], &f[h2],
                              "HTTP/2 settings on a cluster that speaks HTTP/1.1 (protocol: %s) "
                              "would be ignored; set protocol to http2 or original, or remove "
                              "them",
                              protocol_set ? "http1" : "http1, the default without tls");
    /* Consistent-hash settings on another policy would be ignored. */
    const struct cfg_field *lb = &sec->fields[cfg_field_index(sec, "lb")];
    const struct {
        const char *key, *wants;
        bool used;
    } by_lb[] = {
        {"hash_policy", "ring_hash or maglev", c->lb == TR_LB_RING_HASH || c->lb == TR_LB_MAGLEV},
        {"ring_hash", "ring_hash", c->lb == TR_LB_RING_HASH},
        {"maglev", "maglev", c->lb == TR_LB_MAGLEV},
    };
    for (size_t i = 0; i < sizeof(by_lb) / sizeof(by_lb[0]); i++) {
        size_t k = cfg_field_index(sec, by_lb[i].key);
        if (f[k].v != NULL && !by_lb[i].used)
            return cfg_fail_field(ld, map, &sec->fields[k], &f[k],
                                  "only used with lb: %s; with lb: %s it would be ignored",
                                  by_lb[i].wants, lb->names[c->lb]);
    }
    return true;
}

/* ---- outlier detection, consistent hashing ---- */

bool cfg_outlier_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                       size_t idx)
{
    (void)map;
    (void)ld;
    (void)idx;
    struct tr_outlier_cfg *o = obj;
    /* Written at all: on, unless it says otherwise (validate refuses settings
     * that enabled: false would ignore). */
    if (!has(&cfg_outlier_section, f, "enabled"))
        o->enabled = true;
    return true;
}

bool cfg_hash_policy_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                           void *obj, size_t idx)
{
    (void)idx;
    const struct tr_hash_policy_cfg *h = obj;
    const struct cfg_section *sec = &cfg_hash_policy_section;
    static const char choices[] = "header, cookie, source_ip, query_param";
    size_t chosen;
    if (!one_of(ld, map, sec, f, "header", "query_param", choices, &chosen))
        return false;
    if (chosen == NONE)
        return cfg_fail(ld, map, "one of %s is required", choices);
    size_t sip = cfg_field_index(sec, "source_ip");
    if (chosen == sip && !h->source_ip)
        return cfg_fail_field(ld, map, &sec->fields[sip], &f[sip],
                              "must be true (to hash nothing, leave hash_policy out)");
    return true;
}

bool cfg_hash_cookie_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                           void *obj, size_t idx)
{
    (void)idx;
    struct tr_hash_policy_cfg *h = obj;
    const struct cfg_section *sec = &cfg_hash_cookie_section;
    /* Istio generates the cookie when a ttl is given (0s: a session cookie). */
    if (!has(sec, f, "generate"))
        h->cookie_generate = has(sec, f, "ttl");
    if (h->cookie_generate)
        return true;
    static const char *const only_generated[] = {"ttl", "path"};
    for (size_t i = 0; i < 2; i++) {
        size_t k = cfg_field_index(sec, only_generated[i]);
        if (f[k].v != NULL)
            return cfg_fail_field(ld, map, &sec->fields[k], &f[k],
                                  "only used for a cookie the proxy generates, which "
                                  "generate: false turns off");
    }
    return true;
}

/* An origin names a resource; its path (if any) replaces the object's path
 * in the file, which errors would otherwise mix with the resource's name. */
bool cfg_origin_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                      size_t idx)
{
    (void)idx;
    struct tr_cfg_loc *loc = obj;
    const struct cfg_section *sec = &cfg_origin_section;
    if (!has(sec, f, "kind") && !has(sec, f, "name"))
        return cfg_fail(ld, map, "needs kind or name (the resource the object was compiled from)");
    if (!has(sec, f, "path"))
        loc->path = NULL;
    return true;
}

/* ---- Local route actions (redirect, fault, cors) ---- */

bool cfg_redirect_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                        size_t idx)
{
    (void)obj;
    (void)idx;
    const struct cfg_section *sec = &cfg_redirect_section;
    size_t path, port;
    return one_of(ld, map, sec, f, "port", "port_from", "port, port_from", &port) &&
           one_of(ld, map, sec, f, "path", "prefix", "path, prefix", &path);
}

bool cfg_fault_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                     size_t idx)
{
    (void)f;
    (void)idx;
    const struct tr_fault_cfg *fc = obj;
    /* Istio: "A fault rule MUST HAVE delay or abort or both." */
    if (fc->delay == NULL && fc->abort == NULL)
        return cfg_fail(ld, map, "one of delay, abort is required");
    return true;
}

bool cfg_fault_grpc_status_set(struct ld *ld, const struct cnode *k, const struct cnode *v,
                               void *obj)
{
    (void)k;
    struct tr_fault_abort_cfg *a = obj;
    uint32_t code;
    if (!cfg_u32_of(ld, v, 0, CFG_MAX_GRPC_STATUS, &code))
        return false;
    a->grpc = true;
    a->grpc_status = (uint8_t)code;
    return true;
}

bool cfg_fault_abort_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                           void *obj, size_t idx)
{
    (void)obj;
    (void)idx;
    size_t kind;
    if (!one_of(ld, map, &cfg_fault_abort_section, f, "status", "grpc_status",
                "status, grpc_status", &kind))
        return false;
    if (kind == NONE)
        return cfg_fail(ld, map, "one of status, grpc_status is required");
    return true;
}

bool cfg_cors_origin_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                           void *obj, size_t idx)
{
    (void)idx;
    struct tr_cors_origin_cfg *o = obj;
    const struct cfg_section *sec = &cfg_cors_origin_section;
    size_t kind;
    if (!one_of(ld, map, sec, f, "exact", "regex", "exact, prefix, regex", &kind))
        return false;
    if (kind == NONE)
        return cfg_fail(ld, map, "one of exact, prefix, regex is required");
    o->kind = (enum tr_origin_match)(kind - cfg_field_index(sec, "exact"));
    return true;
}

/* Access-Control-Max-Age counts whole seconds: a duration that is not one
 * would be cut, so it is refused. */
bool cfg_cors_max_age_set(struct ld *ld, const struct cnode *k, const struct cnode *v, void *obj)
{
    (void)k;
    struct tr_cors_cfg *c = obj;
    uint32_t ms;
    if (!cfg_duration_of(ld, v, 0, CFG_MAX_DURATION_MS, &ms))
        return false;
    if (ms % 1000 != 0)
        return cfg_fail(ld, v,
                        "must be a whole number of seconds (Access-Control-Max-Age counts "
                        "seconds)");
    c->has_max_age = true;
    c->max_age_s = ms / 1000;
    return true;
}

/* An endpoint's address: an IP address, or a DNS name the proxy resolves
 * (its text is kept as written, lower-cased, for names and dumps). */
bool cfg_endpoint_address_set(struct ld *ld, const struct cnode *k, const struct cnode *v,
                              void *obj)
{
    (void)k;
    struct tr_endpoint_cfg *e = obj;
    const char *s;
    char why[CFG_WHY_MAX];
    size_t host_len;
    /* A 253-byte name, ':' and a port. */
    if (!cfg_nonempty_of(ld, v, 260, &s))
        return false;
    if (!cfg_endpoint_addr_parse(s, &e->addr, &host_len, &e->port, why, sizeof(why)))
        return cfg_fail(ld, v, "%s", why);
    if (host_len > 0) {
        cfg_lower((char *)s); /* our own copy in the arena; DNS names ignore case */
        if ((e->host = tr_arena_strndup(ld->a, s, host_len)) == NULL)
            return cfg_oom(ld);
    }
    e->addr.text = s;
    return true;
}
