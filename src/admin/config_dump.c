#include "admin/config_dump.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jw {
    char *p;
    size_t len, cap;
    bool oom;
};

static void jw_raw(struct jw *w, const char *s, size_t n)
{
    if (w->oom)
        return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = (w->cap + n + 1) * 2;
        char *p = realloc(w->p, cap);
        if (p == NULL) {
            w->oom = true;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = '\0';
}

__attribute__((format(printf, 2, 3))) static void jw_fmt(struct jw *w, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        jw_raw(w, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static void jw_str(struct jw *w, const char *s)
{
    if (s == NULL) {
        jw_raw(w, "null", 4);
        return;
    }
    jw_raw(w, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jw_raw(w, e, 2);
        } else if (c < 0x20) {
            jw_fmt(w, "\\u%04x", c);
        } else {
            jw_raw(w, (const char *)&c, 1);
        }
    }
    jw_raw(w, "\"", 1);
}

static void jw_key(struct jw *w, const char *k, bool first)
{
    if (!first)
        jw_raw(w, ",", 1);
    jw_str(w, k);
    jw_raw(w, ":", 1);
}

static void jw_strs(struct jw *w, const char **v, size_t n)
{
    jw_raw(w, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            jw_raw(w, ",", 1);
        jw_str(w, v[i]);
    }
    jw_raw(w, "]", 1);
}

static const char *tls_mode_name(enum tr_tls_mode m)
{
    return m == TR_TLS_STRICT ? "STRICT" : m == TR_TLS_PERMISSIVE ? "PERMISSIVE" : "DISABLE";
}

static const char *proto_name(enum tr_listener_protocol p)
{
    return p == TR_LPROTO_TCP ? "tcp" : p == TR_LPROTO_AUTO ? "auto" : "http";
}

static void dump_route(struct jw *w, const struct tr_config *cfg, const struct tr_route_cfg *r)
{
    static const char *const pk[] = {"prefix", "exact", "regex"};
    static const char *const hk[] = {"exact", "prefix", "suffix", "regex", "present"};
    jw_raw(w, "{", 1);
    jw_key(w, "name", true);
    jw_str(w, r->name);
    jw_key(w, "match", false);
    jw_fmt(w, "{\"path\":{\"%s\":", pk[r->path_kind]);
    jw_str(w, r->path);
    jw_fmt(w, ",\"ignore_case\":%s}", r->path_ignore_case ? "true" : "false");
    jw_key(w, "methods", false);
    jw_strs(w, r->methods, r->n_methods);
    jw_key(w, "headers", false);
    jw_raw(w, "[", 1);
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct tr_header_match_cfg *h = &r->headers[i];
        jw_raw(w, i ? ",{" : "{", i ? 2 : 1);
        jw_key(w, "name", true);
        jw_str(w, h->name);
        jw_key(w, hk[h->kind], false);
        if (h->kind == TR_HMATCH_PRESENT)
            jw_raw(w, "true", 4);
        else
            jw_str(w, h->value);
        jw_fmt(w, ",\"invert\":%s}", h->invert ? "true" : "false");
    }
    jw_raw(w, "]}", 2);
    if (r->direct_status != 0) {
        jw_fmt(w, ",\"direct_response\":{\"status\":%u,\"body\":", r->direct_status);
        jw_str(w, r->direct_body);
        jw_raw(w, "}", 1);
    } else {
        jw_key(w, "weighted_clusters", false);
        jw_raw(w, "[", 1);
        for (size_t i = 0; i < r->n_clusters; i++) {
            jw_raw(w, i ? ",{\"cluster\":" : "{\"cluster\":", i ? 12 : 11);
            jw_str(w, cfg->clusters[r->clusters[i].cluster].name);
            jw_fmt(w, ",\"weight\":%u}", r->clusters[i].weight);
        }
        jw_raw(w, "]", 1);
    }
    jw_fmt(w, ",\"timeout_ms\":%u", r->timeout_ms);
    jw_key(w, "prefix_rewrite", false);
    jw_str(w, r->prefix_rewrite);
    jw_key(w, "host_rewrite", false);
    jw_str(w, r->host_rewrite);
    jw_raw(w, "}", 1);
}

char *tr_config_dump_json(const struct tr_config *cfg, uint64_t generation, size_t *len)
{
    struct jw w = {0};
    jw_fmt(&w, "{\"generation\":%llu", (unsigned long long)generation);
    jw_key(&w, "file", false);
    jw_str(&w, cfg->file);
    jw_key(&w, "node", false);
    jw_raw(&w, "{", 1);
    jw_key(&w, "id", true);
    jw_str(&w, cfg->node.id);
    jw_key(&w, "workload", false);
    jw_str(&w, cfg->node.workload);
    jw_key(&w, "namespace", false);
    jw_str(&w, cfg->node.workload_namespace);
    jw_key(&w, "service", false);
    jw_str(&w, cfg->node.service);
    jw_key(&w, "principal", false);
    jw_str(&w, cfg->node.principal);
    jw_raw(&w, "}", 1);
    jw_fmt(&w, ",\"workers\":%u,\"drain_timeout_ms\":%u", cfg->workers, cfg->drain_timeout_ms);
    jw_fmt(&w,
           ",\"limits\":{\"max_request_line\":%u,\"max_header_bytes\":%u,\"max_headers\":%u,"
           "\"max_connections\":%u,\"buffer_size\":%u,\"http2\":{\"max_concurrent_streams\":%u,"
           "\"initial_window_size\":%u,\"connection_window_size\":%u,"
           "\"max_resets_per_second\":%u}}",
           cfg->limits.max_request_line, cfg->limits.max_header_bytes, cfg->limits.max_headers,
           cfg->limits.max_connections, cfg->limits.buffer_size,
           cfg->limits.h2_max_concurrent_streams, cfg->limits.h2_initial_window,
           cfg->limits.h2_connection_window, cfg->limits.h2_max_resets_per_second);
    jw_key(&w, "tls", false);
    jw_raw(&w, "[", 1);
    for (size_t i = 0; i < cfg->n_tls; i++) {
        const struct tr_tls_cfg *t = &cfg->tls[i];
        jw_raw(&w, i ? ",{" : "{", i ? 2 : 1);
        jw_key(&w, "name", true);
        jw_str(&w, t->name);
        jw_key(&w, "cert", false);
        jw_str(&w, t->cert_file);
        jw_key(&w, "key", false);
        jw_str(&w, "(redacted)");
        jw_key(&w, "ca", false);
        jw_str(&w, t->ca_file);
        jw_key(&w, "trust_domain", false);
        jw_str(&w, t->trust_domain);
        jw_fmt(&w, ",\"min_version\":\"%s\"}", t->min_version == 0x0303 ? "1.2" : "1.3");
    }
    jw_raw(&w, "]", 1);
    jw_key(&w, "listeners", false);
    jw_raw(&w, "[", 1);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        jw_raw(&w, i ? ",{" : "{", i ? 2 : 1);
        jw_key(&w, "name", true);
        jw_str(&w, l->name);
        jw_key(&w, "address", false);
        jw_str(&w, l->addr.text);
        jw_fmt(&w, ",\"direction\":\"%s\",\"protocol\":\"%s\",\"tls_mode\":\"%s\"",
               l->direction == TR_DIR_INBOUND ? "inbound" : "outbound", proto_name(l->protocol),
               tls_mode_name(l->tls_mode));
        jw_key(&w, "tls_context", false);
        jw_str(&w, l->tls >= 0 ? cfg->tls[l->tls].name : NULL);
        jw_key(&w, "route_table", false);
        jw_str(&w, l->route_table >= 0 ? cfg->route_tables[l->route_table].name : NULL);
        jw_key(&w, "tcp_cluster", false);
        jw_str(&w, l->tcp_cluster >= 0 ? cfg->clusters[l->tcp_cluster].name : NULL);
        jw_fmt(&w, ",\"authorization_rules\":%zu}", l->authz.n_rules);
    }
    jw_raw(&w, "]", 1);
    jw_key(&w, "route_tables", false);
    jw_raw(&w, "[", 1);
    for (size_t i = 0; i < cfg->n_route_tables; i++) {
        const struct tr_route_table_cfg *rt = &cfg->route_tables[i];
        jw_raw(&w, i ? ",{" : "{", i ? 2 : 1);
        jw_key(&w, "name", true);
        jw_str(&w, rt->name);
        jw_key(&w, "virtual_hosts", false);
        jw_raw(&w, "[", 1);
        for (size_t v = 0; v < rt->n_vhosts; v++) {
            const struct tr_vhost_cfg *vh = &rt->vhosts[v];
            jw_raw(&w, v ? ",{" : "{", v ? 2 : 1);
            jw_key(&w, "name", true);
            jw_str(&w, vh->name);
            jw_key(&w, "domains", false);
            jw_strs(&w, vh->domains, vh->n_domains);
            jw_key(&w, "routes", false);
            jw_raw(&w, "[", 1);
            for (size_t r = 0; r < vh->n_routes; r++) {
                if (r)
                    jw_raw(&w, ",", 1);
                dump_route(&w, cfg, &vh->routes[r]);
            }
            jw_raw(&w, "]}", 2);
        }
        jw_raw(&w, "]}", 2);
    }
    jw_raw(&w, "]", 1);
    jw_key(&w, "clusters", false);
    jw_raw(&w, "[", 1);
    static const char *const lbn[] = {"round_robin", "least_request", "random"};
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        const struct tr_cluster_cfg *c = &cfg->clusters[i];
        jw_raw(&w, i ? ",{" : "{", i ? 2 : 1);
        jw_key(&w, "name", true);
        jw_str(&w, c->name);
        jw_key(&w, "service", false);
        jw_str(&w, c->service);
        jw_fmt(&w,
               ",\"lb\":\"%s\",\"connect_timeout_ms\":%u,\"pool\":{\"idle_timeout_ms\":%u,"
               "\"max_idle\":%u,\"max_connections\":%u},\"protocol\":\"%s\","
               "\"http2\":{\"max_streams_per_connection\":%u}",
               lbn[c->lb], c->connect_timeout_ms, c->pool_idle_timeout_ms, c->pool_max_idle,
               c->max_connections,
               c->protocol == TR_UPROTO_HTTP2      ? "http2"
               : c->protocol == TR_UPROTO_ORIGINAL ? "original"
                                                   : "http1",
               c->h2_max_streams);
        jw_key(&w, "tls_context", false);
        jw_str(&w, c->tls >= 0 ? cfg->tls[c->tls].name : NULL);
        jw_key(&w, "server_ids", false);
        jw_strs(&w, c->server_ids, c->n_server_ids);
        jw_key(&w, "endpoints", false);
        jw_raw(&w, "[", 1);
        for (size_t e = 0; e < c->n_endpoints; e++) {
            jw_raw(&w, e ? ",{\"address\":" : "{\"address\":", e ? 12 : 11);
            jw_str(&w, c->endpoints[e].addr.text);
            jw_fmt(&w, ",\"weight\":%u}", c->endpoints[e].weight);
        }
        jw_raw(&w, "]}", 2);
    }
    jw_raw(&w, "]}\n", 3);
    if (w.oom) {
        free(w.p);
        return NULL;
    }
    *len = w.len;
    return w.p;
}
