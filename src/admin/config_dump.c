#include "admin/config_dump.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fmt.h"

static void json_key(struct tr_fmt *w, const char *k, bool first)
{
    if (!first)
        tr_fmt_bytes(w, ",", 1);
    tr_fmt_json_cstr(w, k);
    tr_fmt_bytes(w, ":", 1);
}

static void json_strs(struct tr_fmt *w, const char **v, size_t n)
{
    tr_fmt_bytes(w, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            tr_fmt_bytes(w, ",", 1);
        tr_fmt_json_cstr(w, v[i]);
    }
    tr_fmt_bytes(w, "]", 1);
}

static const char *tls_mode_name(enum tr_tls_mode m)
{
    return m == TR_TLS_STRICT ? "STRICT" : m == TR_TLS_PERMISSIVE ? "PERMISSIVE" : "DISABLE";
}

static const char *proto_name(enum tr_listener_protocol p)
{
    return p == TR_LPROTO_TCP ? "tcp" : p == TR_LPROTO_AUTO ? "auto" : "http";
}

/* ---- local route actions: in the file's keys ---- */

/* A share per million as the percentage the file wrote ("12.5"). */
static void json_percent(struct tr_fmt *w, uint32_t per_million)
{
    char frac[8];
    int n = snprintf(frac, sizeof(frac), "%04u", per_million % 10000);
    while (n > 0 && frac[n - 1] == '0')
        frac[--n] = '\0';
    tr_fmt_printf(w, "%u%s%s", per_million / 10000, n > 0 ? "." : "", frac);
}

static void dump_redirect(struct tr_fmt *w, const struct tr_redirect_cfg *rd)
{
    static const char *const port_from[] = {"keep", "protocol_default", "request"};
    tr_fmt_printf(w, ",\"redirect\":{\"code\":%u,\"port\":%u,\"port_from\":\"%s\"", rd->code,
                  rd->port, port_from[rd->port_from]);
    json_key(w, "scheme", false);
    tr_fmt_json_cstr(w, rd->scheme);
    json_key(w, "host", false);
    tr_fmt_json_cstr(w, rd->host);
    json_key(w, "path", false);
    tr_fmt_json_cstr(w, rd->path);
    json_key(w, "prefix", false);
    tr_fmt_json_cstr(w, rd->prefix);
    tr_fmt_bytes(w, "}", 1);
}

static void dump_fault(struct tr_fmt *w, const struct tr_fault_cfg *f)
{
    tr_fmt_cstr(w, ",\"fault\":{\"delay\":");
    if (f->delay != NULL) {
        tr_fmt_printf(w, "{\"fixed_ms\":%u,\"percent\":", f->delay->fixed_ms);
        json_percent(w, f->delay->per_million);
        tr_fmt_bytes(w, "}", 1);
    } else {
        tr_fmt_cstr(w, "null");
    }
    tr_fmt_cstr(w, ",\"abort\":");
    if (f->abort != NULL) {
        if (f->abort->grpc)
            tr_fmt_printf(w, "{\"grpc_status\":%u,\"percent\":", f->abort->grpc_status);
        else
            tr_fmt_printf(w, "{\"status\":%u,\"percent\":", f->abort->status);
        json_percent(w, f->abort->per_million);
        tr_fmt_bytes(w, "}", 1);
    } else {
        tr_fmt_cstr(w, "null");
    }
    tr_fmt_bytes(w, "}", 1);
}

static void dump_cors(struct tr_fmt *w, const struct tr_cors_cfg *c)
{
    static const char *const kinds[] = {"exact", "prefix", "regex"};
    tr_fmt_cstr(w, ",\"cors\":{\"allow_origins\":[");
    for (size_t i = 0; i < c->n_origins; i++) {
        tr_fmt_printf(w, "%s{\"%s\":", i ? "," : "", kinds[c->origins[i].kind]);
        tr_fmt_json_cstr(w, c->origins[i].value);
        tr_fmt_bytes(w, "}", 1);
    }
    tr_fmt_bytes(w, "]", 1);
    json_key(w, "allow_methods", false);
    json_strs(w, c->allow_methods, c->n_allow_methods);
    json_key(w, "allow_headers", false);
    json_strs(w, c->allow_headers, c->n_allow_headers);
    json_key(w, "expose_headers", false);
    json_strs(w, c->expose_headers, c->n_expose_headers);
    if (c->has_max_age)
        tr_fmt_printf(w, ",\"max_age_s\":%u", c->max_age_s);
    tr_fmt_printf(w, ",\"allow_credentials\":%s,\"unmatched_preflights\":\"%s\"}",
                  c->allow_credentials ? "true" : "false",
                  c->unmatched_preflights == TR_CORS_UNMATCHED_IGNORE ? "ignore" : "forward");
}

static void dump_route(struct tr_fmt *w, const struct tr_config *cfg, const struct tr_route_cfg *r)
{
    static const char *const pk[] = {"prefix", "exact", "regex"};
    static const char *const hk[] = {"exact", "prefix", "suffix", "regex", "present"};
    tr_fmt_bytes(w, "{", 1);
    json_key(w, "name", true);
    tr_fmt_json_cstr(w, r->name);
    json_key(w, "match", false);
    tr_fmt_printf(w, "{\"path\":{\"%s\":", pk[r->path_kind]);
    tr_fmt_json_cstr(w, r->path);
    tr_fmt_printf(w, ",\"ignore_case\":%s}", r->path_ignore_case ? "true" : "false");
    json_key(w, "methods", false);
    json_strs(w, r->methods, r->n_methods);
    json_key(w, "headers", false);
    tr_fmt_bytes(w, "[", 1);
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct tr_header_match_cfg *h = &r->headers[i];
        tr_fmt_bytes(w, i ? ",{" : "{", i ? 2 : 1);
        json_key(w, "name", true);
        tr_fmt_json_cstr(w, h->name);
        json_key(w, hk[h->kind], false);
        if (h->kind == TR_HMATCH_PRESENT)
            tr_fmt_bytes(w, "true", 4);
        else
            tr_fmt_json_cstr(w, h->value);
        tr_fmt_printf(w, ",\"invert\":%s}", h->invert ? "true" : "false");
    }
    tr_fmt_bytes(w, "]}", 2);
    if (r->redirect != NULL) {
        dump_redirect(w, r->redirect);
    } else if (r->direct_status != 0) {
        tr_fmt_printf(w, ",\"direct_response\":{\"status\":%u,\"body\":", r->direct_status);
        tr_fmt_json_cstr(w, r->direct_body);
        tr_fmt_bytes(w, "}", 1);
    } else {
        json_key(w, "weighted_clusters", false);
        tr_fmt_bytes(w, "[", 1);
        for (size_t i = 0; i < r->n_clusters; i++) {
            tr_fmt_bytes(w, i ? ",{\"cluster\":" : "{\"cluster\":", i ? 12 : 11);
            tr_fmt_json_cstr(w, cfg->clusters[r->clusters[i].cluster].name);
            tr_fmt_printf(w, ",\"weight\":%u}", r->clusters[i].weight);
        }
        tr_fmt_bytes(w, "]", 1);
    }
    tr_fmt_printf(w, ",\"timeout_ms\":%u", r->timeout_ms);
    json_key(w, "prefix_rewrite", false);
    tr_fmt_json_cstr(w, r->prefix_rewrite);
    json_key(w, "host_rewrite", false);
    tr_fmt_json_cstr(w, r->host_rewrite);
    if (r->fault != NULL)
        dump_fault(w, r->fault);
    if (r->cors != NULL)
        dump_cors(w, r->cors);
    tr_fmt_bytes(w, "}", 1);
}

char *tr_config_dump_json(const struct tr_config *cfg, uint64_t generation, size_t *len)
{
    struct tr_fmt w;
    tr_fmt_init_growable(&w, TR_CONFIG_DUMP_MAX);
    tr_fmt_printf(&w, "{\"generation\":%llu", (unsigned long long)generation);
    json_key(&w, "file", false);
    tr_fmt_json_cstr(&w, cfg->file);
    json_key(&w, "node", false);
    tr_fmt_bytes(&w, "{", 1);
    json_key(&w, "id", true);
    tr_fmt_json_cstr(&w, cfg->node.id);
    json_key(&w, "workload", false);
    tr_fmt_json_cstr(&w, cfg->node.workload);
    json_key(&w, "namespace", false);
    tr_fmt_json_cstr(&w, cfg->node.workload_namespace);
    json_key(&w, "service", false);
    tr_fmt_json_cstr(&w, cfg->node.service);
    json_key(&w, "principal", false);
    tr_fmt_json_cstr(&w, cfg->node.principal);
    tr_fmt_bytes(&w, "}", 1);
    tr_fmt_printf(&w, ",\"workers\":%u,\"drain_timeout_ms\":%u", cfg->workers,
                  cfg->drain_timeout_ms);
    tr_fmt_printf(
        &w,
        ",\"limits\":{\"max_request_line\":%u,\"max_header_bytes\":%u,\"max_headers\":%u,"
        "\"max_connections\":%u,\"buffer_size\":%u,\"http2\":{\"max_concurrent_streams\":%u,"
        "\"initial_window_size\":%u,\"connection_window_size\":%u,"
        "\"max_resets_per_second\":%u}}",
        cfg->limits.max_request_line, cfg->limits.max_header_bytes, cfg->limits.max_headers,
        cfg->limits.max_connections, cfg->limits.buffer_size, cfg->limits.h2_max_concurrent_streams,
        cfg->limits.h2_initial_window, cfg->limits.h2_connection_window,
        cfg->limits.h2_max_resets_per_second);
    json_key(&w, "tls", false);
    tr_fmt_bytes(&w, "[", 1);
    for (size_t i = 0; i < cfg->n_tls; i++) {
        const struct tr_tls_cfg *t = &cfg->tls[i];
        tr_fmt_bytes(&w, i ? ",{" : "{", i ? 2 : 1);
        json_key(&w, "name", true);
        tr_fmt_json_cstr(&w, t->name);
        json_key(&w, "cert", false);
        tr_fmt_json_cstr(&w, t->cert_file);
        json_key(&w, "key", false);
        tr_fmt_json_cstr(&w, "(redacted)");
        json_key(&w, "ca", false);
        tr_fmt_json_cstr(&w, t->ca_file);
        json_key(&w, "trust_domain", false);
        tr_fmt_json_cstr(&w, t->trust_domain);
        tr_fmt_printf(&w, ",\"min_version\":\"%s\"}", t->min_version == 0x0303 ? "1.2" : "1.3");
    }
    tr_fmt_bytes(&w, "]", 1);
    json_key(&w, "listeners", false);
    tr_fmt_bytes(&w, "[", 1);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        tr_fmt_bytes(&w, i ? ",{" : "{", i ? 2 : 1);
        json_key(&w, "name", true);
        tr_fmt_json_cstr(&w, l->name);
        json_key(&w, "address", false);
        tr_fmt_json_cstr(&w, l->addr.text);
        tr_fmt_printf(&w, ",\"direction\":\"%s\",\"protocol\":\"%s\",\"tls_mode\":\"%s\"",
                      l->direction == TR_DIR_INBOUND ? "inbound" : "outbound",
                      proto_name(l->protocol), tls_mode_name(l->tls_mode));
        json_key(&w, "tls_context", false);
        tr_fmt_json_cstr(&w, l->tls >= 0 ? cfg->tls[l->tls].name : NULL);
        json_key(&w, "route_table", false);
        tr_fmt_json_cstr(&w, l->route_table >= 0 ? cfg->route_tables[l->route_table].name : NULL);
        json_key(&w, "tcp_cluster", false);
        tr_fmt_json_cstr(&w, l->tcp_cluster >= 0 ? cfg->clusters[l->tcp_cluster].name : NULL);
        /* weighted TCP routes */
        json_key(&w, "tcp_clusters", false);
        tr_fmt_bytes(&w, "[", 1);
        for (size_t k = 0; k < l->n_tcp_clusters; k++) {
            tr_fmt_bytes(&w, k ? ",{\"cluster\":" : "{\"cluster\":", k ? 12 : 11);
            tr_fmt_json_cstr(&w, cfg->clusters[l->tcp_clusters[k].cluster].name);
            tr_fmt_printf(&w, ",\"weight\":%u}", l->tcp_clusters[k].weight);
        }
        tr_fmt_bytes(&w, "]", 1);
        tr_fmt_printf(&w, ",\"authorization_rules\":%zu}", l->authz.n_rules);
    }
    tr_fmt_bytes(&w, "]", 1);
    json_key(&w, "route_tables", false);
    tr_fmt_bytes(&w, "[", 1);
    for (size_t i = 0; i < cfg->n_route_tables; i++) {
        const struct tr_route_table_cfg *rt = &cfg->route_tables[i];
        tr_fmt_bytes(&w, i ? ",{" : "{", i ? 2 : 1);
        json_key(&w, "name", true);
        tr_fmt_json_cstr(&w, rt->name);
        json_key(&w, "virtual_hosts", false);
        tr_fmt_bytes(&w, "[", 1);
        for (size_t v = 0; v < rt->n_vhosts; v++) {
            const struct tr_vhost_cfg *vh = &rt->vhosts[v];
            tr_fmt_bytes(&w, v ? ",{" : "{", v ? 2 : 1);
            json_key(&w, "name", true);
            tr_fmt_json_cstr(&w, vh->name);
            json_key(&w, "domains", false);
            json_strs(&w, vh->domains, vh->n_domains);
            json_key(&w, "routes", false);
            tr_fmt_bytes(&w, "[", 1);
            for (size_t r = 0; r < vh->n_routes; r++) {
                if (r)
                    tr_fmt_bytes(&w, ",", 1);
                dump_route(&w, cfg, &vh->routes[r]);
            }
            tr_fmt_bytes(&w, "]}", 2);
        }
        tr_fmt_bytes(&w, "]}", 2);
    }
    tr_fmt_bytes(&w, "]", 1);
    json_key(&w, "clusters", false);
    tr_fmt_bytes(&w, "[", 1);
    static const char *const lbn[] = {"round_robin", "least_request", "random"};
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        const struct tr_cluster_cfg *c = &cfg->clusters[i];
        tr_fmt_bytes(&w, i ? ",{" : "{", i ? 2 : 1);
        json_key(&w, "name", true);
        tr_fmt_json_cstr(&w, c->name);
        json_key(&w, "service", false);
        tr_fmt_json_cstr(&w, c->service);
        tr_fmt_printf(&w,
                      ",\"lb\":\"%s\",\"connect_timeout_ms\":%u,\"pool\":{\"idle_timeout_ms\":%u,"
                      "\"max_idle\":%u,\"max_connections\":%u},\"protocol\":\"%s\","
                      "\"http2\":{\"max_streams_per_connection\":%u}",
                      lbn[c->lb], c->connect_timeout_ms, c->pool_idle_timeout_ms, c->pool_max_idle,
                      c->max_connections,
                      c->protocol == TR_UPROTO_HTTP2      ? "http2"
                      : c->protocol == TR_UPROTO_ORIGINAL ? "original"
                                                          : "http1",
                      c->h2_max_streams);
        json_key(&w, "tls_context", false);
        tr_fmt_json_cstr(&w, c->tls >= 0 ? cfg->tls[c->tls].name : NULL);
        json_key(&w, "server_ids", false);
        json_strs(&w, c->server_ids, c->n_server_ids);
        json_key(&w, "endpoints", false);
        tr_fmt_bytes(&w, "[", 1);
        for (size_t e = 0; e < c->n_endpoints; e++) {
            tr_fmt_bytes(&w, e ? ",{\"address\":" : "{\"address\":", e ? 12 : 11);
            tr_fmt_json_cstr(&w, c->endpoints[e].addr.text);
            tr_fmt_printf(&w, ",\"weight\":%u}", c->endpoints[e].weight);
        }
        tr_fmt_bytes(&w, "]}", 2);
    }
    tr_fmt_bytes(&w, "]}\n", 3);
    bool oom = w.oom;
    char *json = tr_fmt_take(&w, len);
    if (json == NULL)
        errno = oom ? ENOMEM : E2BIG;
    return json;
}
