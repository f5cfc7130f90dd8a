/* `trellis ctl route explain`: where a request from a workload goes, answered
 * from the model that workload's proxy would run, matched by the proxy's own
 * router (router/router.h), so the answer and the proxy cannot disagree. */
#include "ctl/explain.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "core/fmt.h"
#include "filter/path_normalize.h"
#include "router/router.h"

#define MAX_HEADERS 64

struct url {
    char scheme[8];
    char authority[300];
    char host[300];
    unsigned port;
    const char *path; /* from the first '/' (or "/"), query included */
};

static bool parse_url(const char *s, struct url *u, char *why, size_t size)
{
    memset(u, 0, sizeof(*u));
    const char *p = strstr(s, "://");
    if (p == NULL) {
        snprintf(why, size, "expected http://HOST[:PORT]/PATH");
        return false;
    }
    size_t sl = (size_t)(p - s);
    if (sl >= sizeof(u->scheme) || (strncmp(s, "http", sl) != 0 && strncmp(s, "https", sl) != 0) ||
        (sl != 4 && sl != 5)) {
        snprintf(why, size, "the scheme must be http or https");
        return false;
    }
    memcpy(u->scheme, s, sl);
    p += 3;
    size_t al = strcspn(p, "/?#");
    if (al == 0 || al >= sizeof(u->authority) || memchr(p, '@', al) != NULL) {
        snprintf(why, size, "expected a host (without userinfo) after the scheme");
        return false;
    }
    memcpy(u->authority, p, al);
    u->path = p[al] == '/' ? p + al : "/";
    const char *colon = strrchr(u->authority, ':');
    if (colon != NULL && u->authority[0] != '[') {
        char *end;
        unsigned long port = strtoul(colon + 1, &end, 10);
        if (*end != '\0' || port == 0 || port > 65535) {
            snprintf(why, size, "bad port after the host");
            return false;
        }
        u->port = (unsigned)port;
        memcpy(u->host, u->authority, (size_t)(colon - u->authority));
    } else {
        u->port = sl == 5 ? 443 : 80;
        memcpy(u->host, u->authority, strlen(u->authority));
    }
    return true;
}

/* outbound|PORT|SUBSET|HOST -> parts (the compiler's cluster names). */
struct dest {
    char host[256];
    char subset[128];
    unsigned port;
};

static void dest_of(const char *cluster, struct dest *d)
{
    memset(d, 0, sizeof(*d));
    unsigned port = 0;
    char subset[128] = "", host[256] = "";
    if (sscanf(cluster, "outbound|%u|%127[^|]|%255s", &port, subset, host) == 3 ||
        sscanf(cluster, "outbound|%u||%255s", &port, host) == 2) {
        d->port = port;
        snprintf(d->subset, sizeof(d->subset), "%s", subset);
        snprintf(d->host, sizeof(d->host), "%s", host);
    } else {
        snprintf(d->host, sizeof(d->host), "%s", cluster);
    }
}

static const char *lb_name(enum tr_lb_policy lb)
{
    return lb == TR_LB_ROUND_ROBIN ? "ROUND_ROBIN"
           : lb == TR_LB_RANDOM    ? "RANDOM"
           : lb == TR_LB_RING_HASH ? "RING_HASH"
           : lb == TR_LB_MAGLEV    ? "MAGLEV"
                                   : "LEAST_REQUEST";
}

/* The VirtualService rule a route came from: index from its path
 * "spec.http[I]...", name from the resource. */
static int rule_index(const struct tr_route_cfg *r)
{
    unsigned i;
    if (r->loc.path != NULL && sscanf(r->loc.path, "spec.http[%u]", &i) == 1)
        return (int)i;
    return -1;
}

static const char *rule_name(const struct tr_rset *rs, const struct tr_route_cfg *r, int idx)
{
    if (idx < 0 || r->loc.origin.kind == NULL)
        return NULL;
    const struct tr_resource *vs = tr_rset_find(rs, "networking.istio.io", "VirtualService",
                                                r->loc.origin.ns, r->loc.origin.name);
    if (vs == NULL)
        return NULL;
    const struct tr_rnode *http = tr_rnode_get(vs->spec, "http");
    const struct tr_rnode *e = http ? http->head : NULL;
    for (int i = 0; e && i < idx; i++)
        e = e->next;
    const char *name = NULL;
    if (e != NULL)
        tr_rnode_str(tr_rnode_get(e, "name"), &name);
    return name;
}

/* A route merged from a delegate VirtualService is named ROOT>DELEGATE,
 * ROOT being "NS/VS.RULE" of the root's rule (its name, or http[I]): the
 * root VirtualService and the index of its rule that delegated, found
 * among the rules naming the route's VirtualService. */
struct delegator {
    const struct tr_resource *vs;
    int index;
    const char *name;
};

static bool delegated_by(const struct tr_rset *rs, const struct tr_route_cfg *r,
                         struct delegator *out)
{
    const char *gt = r->name ? strchr(r->name, '>') : NULL;
    if (gt == NULL || r->loc.origin.name == NULL)
        return false;
    const char *dns = r->loc.origin.ns ? r->loc.origin.ns : "default";
    size_t n;
    const struct tr_resource *const *v =
        tr_rset_of_kind(rs, "networking.istio.io", "VirtualService", &n);
    for (size_t k = 0; k < n; k++) {
        const char *rns = v[k]->ns ? v[k]->ns : "default";
        const struct tr_rnode *http = tr_rnode_get(v[k]->spec, "http");
        int i = 0;
        for (const struct tr_rnode *e = http ? http->head : NULL; e; e = e->next, i++) {
            const struct tr_rnode *d = tr_rnode_get(e, "delegate");
            const char *name = NULL, *ns = NULL, *rule = NULL;
            if (d == NULL || !tr_rnode_str(tr_rnode_get(d, "name"), &name) ||
                strcmp(name, r->loc.origin.name) != 0)
                continue;
            if (!tr_rnode_str(tr_rnode_get(d, "namespace"), &ns) || *ns == '\0')
                ns = rns;
            if (strcmp(ns, dns) != 0)
                continue;
            tr_rnode_str(tr_rnode_get(e, "name"), &rule);
            char want[512];
            int w = rule ? snprintf(want, sizeof(want), "%s/%s.%s", rns, v[k]->name, rule)
                         : snprintf(want, sizeof(want), "%s/%s.http[%d]", rns, v[k]->name, i);
            for (char *p = want; *p; p++) {
                if ((unsigned char)*p <= 0x20 || *p == 0x7f)
                    *p = '_'; /* as the compiler writes route names */
            }
            if (w > 0 && (size_t)w == (size_t)(gt - r->name) &&
                strncmp(r->name, want, (size_t)w) == 0) {
                *out = (struct delegator){.vs = v[k], .index = i, .name = rule};
                return true;
            }
        }
    }
    return false;
}

static const struct tr_cluster_cfg *cluster_named(const struct tr_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        if (strcmp(cfg->clusters[i].name, name) == 0)
            return &cfg->clusters[i];
    }
    return NULL;
}

static void json_str_or_null(struct tr_fmt *f, const char *s)
{
    if (s == NULL)
        tr_fmt_cstr(f, "null");
    else
        tr_fmt_json_cstr(f, s);
}

static void json_policy(struct tr_fmt *f, const struct tr_config *cfg,
                        const struct tr_cluster_cfg *c)
{
    tr_fmt_cstr(f, "\"load_balancer\":");
    json_str_or_null(f, c ? lb_name(c->lb) : NULL);
    if (c != NULL)
        tr_fmt_printf(f,
                      ",\"connection_pool\":{\"max_connections\":%u,\"max_pending_requests\":%u,"
                      "\"max_requests\":%u,\"max_requests_per_connection\":%u,"
                      "\"connect_timeout_ms\":%u,\"idle_timeout_ms\":%u}",
                      c->breakers.max_connections, c->breakers.max_pending_requests,
                      c->breakers.max_requests, c->max_requests_per_connection,
                      c->connect_timeout_ms, c->pool_idle_timeout_ms);
    else
        tr_fmt_cstr(f, ",\"connection_pool\":null");
    tr_fmt_cstr(f, ",\"outlier_detection\":");
    if (c != NULL && c->outlier.enabled)
        tr_fmt_printf(f,
                      "{\"consecutive_5xx\":%u,\"consecutive_gateway\":%u,\"interval_ms\":%u,"
                      "\"base_ejection_ms\":%u,\"max_ejection_percent\":%u,"
                      "\"min_health_percent\":%u}",
                      c->outlier.consecutive_5xx, c->outlier.consecutive_gateway,
                      c->outlier.interval_ms, c->outlier.base_ejection_ms,
                      c->outlier.max_ejection_percent, c->outlier.min_health_percent);
    else
        tr_fmt_cstr(f, "null");
    tr_fmt_cstr(f, ",\"tls\":");
    if (c == NULL) {
        tr_fmt_cstr(f, "null");
    } else if (c->tls_name == NULL) {
        tr_fmt_cstr(f, "{\"mode\":\"DISABLE\"}");
    } else if (!c->mesh_tls) {
        /* TLS to a server outside the mesh: what it must prove. */
        const struct tr_tls_cfg *t = &cfg->tls[c->tls];
        bool mutual = t->cert_file != NULL || t->cert_pem != NULL;
        tr_fmt_printf(f, "{\"mode\":\"%s\",\"sni\":", mutual ? "MUTUAL" : "SIMPLE");
        if (c->sni != NULL)
            tr_fmt_json_cstr(f, c->sni);
        else
            tr_fmt_cstr(f, "null");
        tr_fmt_cstr(f, ",\"subject_alt_names\":[");
        for (size_t i = 0; i < c->n_subject_alt_names; i++) {
            if (i)
                tr_fmt_cstr(f, ",");
            tr_fmt_json_cstr(f, c->subject_alt_names[i]);
        }
        tr_fmt_printf(f, "],\"insecure_skip_verify\":%s}",
                      c->insecure_skip_verify ? "true" : "false");
    } else {
        tr_fmt_cstr(f, "{\"mode\":\"ISTIO_MUTUAL\",\"server_ids\":[");
        for (size_t i = 0; i < c->n_server_ids; i++) {
            if (i)
                tr_fmt_cstr(f, ",");
            tr_fmt_json_cstr(f, c->server_ids[i]);
        }
        tr_fmt_cstr(f, "]}");
    }
}

char *tr_ctl_route_explain(const struct tr_config *cfg, const struct tr_rset *rs,
                           const struct tr_explain_request *q, bool json, int *status)
{
    *status = 1;
    size_t out_len;
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 1u << 20);
    struct url u;
    char why[256];
    if (!parse_url(q->url, &u, why, sizeof(why))) {
        tr_fmt_printf(&f, "trellis ctl route explain: %s: %s\n", q->url, why);
        *status = 2;
        return tr_fmt_take(&f, &out_len);
    }
    /* The request as the proxy sees it: Host from -H or the URL. */
    struct tr_str_pair hv[MAX_HEADERS];
    uint32_t nh = 0;
    const char *host = u.authority;
    for (size_t i = 0; i < q->n_headers && nh < MAX_HEADERS; i++) {
        const char *h = q->headers[i];
        const char *colon = strchr(h, ':');
        if (colon == NULL || colon == h)
            continue;
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        hv[nh].name = tr_str_from(h, (size_t)(colon - h));
        hv[nh].value = tr_str_from(v, vl);
        if (tr_str_ieq(hv[nh].name, "host", 4))
            host = v; /* NUL-terminated: v runs to the end of the argument */
        nh++;
    }
    char lname[32];
    snprintf(lname, sizeof(lname), "outbound|%u", u.port);
    const struct tr_listener_cfg *l = NULL;
    char gname[32];
    snprintf(gname, sizeof(gname), "gateway|%u", u.port);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (strcmp(cfg->listeners[i].name, lname) == 0 ||
            strcmp(cfg->listeners[i].name, gname) == 0)
            l = &cfg->listeners[i];
    }
    const struct tr_route_cfg *r = NULL;
    const char *miss = NULL;
    struct tr_router *router = NULL;
    if (l == NULL) {
        miss = "no service in this workload's scope listens on this port";
    } else if (l->route_table < 0) {
        miss = "this port carries TCP only";
    } else {
        char *err = NULL;
        router = tr_router_build(cfg, (size_t)l->route_table, &err);
        if (router == NULL) {
            tr_fmt_printf(&f, "trellis ctl route explain: %s\n", err ? err : "out of memory");
            free(err);
            return tr_fmt_take(&f, &out_len);
        }
        /* The path the proxy routes: normalised as the listener does. */
        size_t plen = strlen(u.path), nlen = 0;
        char *npath = malloc(plen + 1);
        enum tr_path_status pst = npath != NULL ? tr_path_normalize(l->path_normalization, u.path,
                                                                    plen, npath, plen, &nlen)
                                                : TR_PATH_NO_ROOM;
        if (pst != TR_PATH_OK) {
            miss = "the listener's path_normalization refuses this path (the proxy answers 400 "
                   "DPE)";
        } else {
            struct tr_route_request req = {
                .host = tr_str_from(host, strlen(host)),
                .path = tr_str_from(npath, nlen),
                .method = tr_str_from(q->method, strlen(q->method)),
                .headers = hv,
                .n_headers = nh,
            };
            r = tr_router_match(router, &req);
            if (r == NULL)
                miss = "no virtual host or route matches (the proxy answers 404 NR)";
        }
        free(npath);
    }
    bool from_vs = r != NULL && r->loc.origin.kind != NULL &&
                   strcmp(r->loc.origin.kind, "VirtualService") == 0;
    int idx = from_vs ? rule_index(r) : -1;
    const char *rname = from_vs ? rule_name(rs, r, idx) : NULL;
    const struct tr_cluster_cfg *first =
        r && r->n_clusters ? cluster_named(cfg, r->clusters[0].cluster_name) : NULL;
    if (json) {
        tr_fmt_cstr(&f, "{\"virtual_service\":");
        if (from_vs)
            tr_fmt_printf(&f, "\"%s/%s\"", r->loc.origin.ns ? r->loc.origin.ns : "default",
                          r->loc.origin.name);
        else
            tr_fmt_cstr(&f, "null");
        tr_fmt_cstr(&f, ",\"rule\":");
        json_str_or_null(&f, rname);
        if (idx >= 0)
            tr_fmt_printf(&f, ",\"rule_index\":%d", idx);
        else
            tr_fmt_cstr(&f, ",\"rule_index\":null");
        struct delegator dl;
        tr_fmt_cstr(&f, ",\"delegated_by\":");
        if (from_vs && delegated_by(rs, r, &dl)) {
            tr_fmt_printf(&f, "{\"virtual_service\":\"%s/%s\",\"rule\":",
                          dl.vs->ns ? dl.vs->ns : "default", dl.vs->name);
            json_str_or_null(&f, dl.name);
            tr_fmt_printf(&f, ",\"rule_index\":%d}", dl.index);
        } else {
            tr_fmt_cstr(&f, "null");
        }
        tr_fmt_cstr(&f, ",\"route\":");
        json_str_or_null(&f, r ? r->name : NULL);
        tr_fmt_cstr(&f, ",\"why\":");
        json_str_or_null(&f, miss);
        tr_fmt_cstr(&f, ",\"destinations\":[");
        for (size_t i = 0; r && i < r->n_clusters; i++) {
            struct dest d;
            dest_of(r->clusters[i].cluster_name, &d);
            tr_fmt_cstr(&f, i ? ",{\"host\":" : "{\"host\":");
            tr_fmt_json_cstr(&f, d.host);
            tr_fmt_cstr(&f, ",\"subset\":");
            json_str_or_null(&f, d.subset[0] ? d.subset : NULL);
            tr_fmt_printf(&f, ",\"port\":%u,\"weight\":%u,\"cluster\":", d.port,
                          r->clusters[i].weight);
            tr_fmt_json_cstr(&f, r->clusters[i].cluster_name);
            tr_fmt_cstr(&f, "}");
        }
        tr_fmt_cstr(&f, "],\"endpoints\":[");
        bool comma = false;
        for (size_t i = 0; r && i < r->n_clusters; i++) {
            const struct tr_cluster_cfg *c = cluster_named(cfg, r->clusters[i].cluster_name);
            for (size_t e = 0; c && e < c->n_endpoints; e++) {
                tr_fmt_cstr(&f, comma ? ",{\"cluster\":" : "{\"cluster\":");
                tr_fmt_json_cstr(&f, c->name);
                tr_fmt_cstr(&f, ",\"address\":");
                tr_fmt_json_cstr(&f, c->endpoints[e].addr.text);
                tr_fmt_cstr(&f, "}");
                comma = true;
            }
        }
        tr_fmt_cstr(&f, "],\"rewrite\":");
        if (r && (r->prefix_rewrite || r->host_rewrite || r->regex_rewrite)) {
            tr_fmt_cstr(&f, "{\"uri\":");
            json_str_or_null(&f, r->prefix_rewrite);
            tr_fmt_cstr(&f, ",\"authority\":");
            json_str_or_null(&f, r->host_rewrite);
            tr_fmt_cstr(&f, ",\"uri_regex\":");
            if (r->regex_rewrite != NULL) {
                tr_fmt_cstr(&f, "{\"match\":");
                json_str_or_null(&f, r->regex_rewrite);
                tr_fmt_cstr(&f, ",\"rewrite\":");
                json_str_or_null(&f, r->regex_substitution);
                tr_fmt_cstr(&f, "}");
            } else {
                tr_fmt_cstr(&f, "null");
            }
            tr_fmt_cstr(&f, "}");
        } else {
            tr_fmt_cstr(&f, "null");
        }
        tr_fmt_cstr(&f, ",\"redirect\":");
        if (r && r->redirect) {
            const struct tr_redirect_cfg *rd = r->redirect;
            tr_fmt_cstr(&f, "{\"uri\":");
            json_str_or_null(&f, rd->path);
            tr_fmt_cstr(&f, ",\"authority\":");
            json_str_or_null(&f, rd->host);
            tr_fmt_cstr(&f, ",\"scheme\":");
            json_str_or_null(&f, rd->scheme);
            if (rd->port)
                tr_fmt_printf(&f, ",\"port\":%u", rd->port);
            else
                tr_fmt_cstr(&f, ",\"port\":null");
            tr_fmt_printf(&f, ",\"code\":%u}", rd->code);
        } else {
            tr_fmt_cstr(&f, "null");
        }
        tr_fmt_cstr(&f, ",\"direct_response\":");
        if (r && r->direct_status) {
            tr_fmt_printf(&f, "{\"status\":%u,\"body\":", r->direct_status);
            json_str_or_null(&f, r->direct_body);
            tr_fmt_cstr(&f, "}");
        } else {
            tr_fmt_cstr(&f, "null");
        }
        tr_fmt_cstr(&f, ",\"fault\":");
        if (r && r->fault) {
            const struct tr_fault_cfg *fc = r->fault;
            tr_fmt_cstr(&f, "{\"delay\":");
            if (fc->delay)
                tr_fmt_printf(&f, "{\"fixed_ms\":%u,\"percent\":%.4f}", fc->delay->fixed_ms,
                              fc->delay->per_million / 10000.0);
            else
                tr_fmt_cstr(&f, "null");
            tr_fmt_cstr(&f, ",\"abort\":");
            if (fc->abort && fc->abort->grpc)
                tr_fmt_printf(&f, "{\"grpc_status\":%u,\"percent\":%.4f}", fc->abort->grpc_status,
                              fc->abort->per_million / 10000.0);
            else if (fc->abort)
                tr_fmt_printf(&f, "{\"http_status\":%u,\"percent\":%.4f}", fc->abort->status,
                              fc->abort->per_million / 10000.0);
            else
                tr_fmt_cstr(&f, "null");
            tr_fmt_cstr(&f, "}");
        } else {
            tr_fmt_cstr(&f, "null");
        }
        tr_fmt_printf(&f, ",\"timeout_ms\":%u", r ? r->timeout_ms : 0);
        if (r != NULL) {
            const struct tr_retry_cfg *rt = &r->retries;
            tr_fmt_printf(&f,
                          ",\"retries\":{\"attempts\":%u,\"per_try_timeout_ms\":%u,"
                          "\"retry_on\":[",
                          rt->attempts, rt->per_try_timeout_ms);
            for (size_t i = 0; i < rt->n_retry_on; i++) {
                if (i)
                    tr_fmt_cstr(&f, ",");
                tr_fmt_json_cstr(&f, rt->retry_on[i]);
            }
            tr_fmt_cstr(&f, "],\"retriable_status_codes\":[");
            for (size_t i = 0; i < rt->n_status_codes; i++)
                tr_fmt_printf(&f, "%s%s", i ? "," : "", rt->status_codes[i]);
            tr_fmt_printf(&f, "],\"exclude_tried_priorities\":%u},\"mirrors\":[",
                          rt->exclude_tried_priorities);
            for (size_t i = 0; i < r->n_mirrors; i++) {
                tr_fmt_cstr(&f, i ? ",{\"cluster\":" : "{\"cluster\":");
                tr_fmt_json_cstr(&f, r->mirrors[i].cluster_name);
                tr_fmt_printf(&f, ",\"percent\":%.4f}", r->mirrors[i].per_million / 10000.0);
            }
            tr_fmt_cstr(&f, "],");
        } else {
            tr_fmt_cstr(&f, ",\"retries\":null,\"mirrors\":[],");
        }
        json_policy(&f, cfg, first);
        tr_fmt_cstr(&f, "}\n");
    } else {
        if (r == NULL) {
            tr_fmt_printf(&f, "no route: %s\n", miss);
        } else {
            if (from_vs)
                tr_fmt_printf(&f, "VirtualService %s/%s, rule %d%s%s%s (%s)\n",
                              r->loc.origin.ns ? r->loc.origin.ns : "default", r->loc.origin.name,
                              idx, rname ? " \"" : "", rname ? rname : "", rname ? "\"" : "",
                              r->loc.path ? r->loc.path : "");
            struct delegator dl;
            if (from_vs && delegated_by(rs, r, &dl))
                tr_fmt_printf(&f, "  delegated by VirtualService %s/%s, rule %d%s%s%s\n",
                              dl.vs->ns ? dl.vs->ns : "default", dl.vs->name, dl.index,
                              dl.name ? " \"" : "", dl.name ? dl.name : "", dl.name ? "\"" : "");
            if (!from_vs)
                tr_fmt_printf(&f, "no VirtualService: the service's default route\n");
            if (r->direct_status)
                tr_fmt_printf(&f, "  answered by the proxy: %u\n", r->direct_status);
            for (size_t i = 0; i < r->n_clusters; i++) {
                struct dest d;
                dest_of(r->clusters[i].cluster_name, &d);
                const struct tr_cluster_cfg *c = cluster_named(cfg, r->clusters[i].cluster_name);
                tr_fmt_printf(&f, "  -> %s%s%s port %u, weight %u/%u, %zu endpoint(s)", d.host,
                              d.subset[0] ? " subset " : "", d.subset, d.port,
                              r->clusters[i].weight, r->total_weight, c ? c->n_endpoints : 0);
                if (c != NULL)
                    tr_fmt_printf(&f, ", %s, %s", lb_name(c->lb),
                                  c->tls_name == NULL ? "plaintext"
                                  : c->mesh_tls       ? "mTLS"
                                                      : "TLS");
                tr_fmt_cstr(&f, "\n");
                for (size_t e = 0; c && e < c->n_endpoints; e++)
                    tr_fmt_printf(&f, "       %s\n", c->endpoints[e].addr.text);
            }
            if (r->prefix_rewrite)
                tr_fmt_printf(&f, "  rewrite path: %s\n", r->prefix_rewrite);
            if (r->regex_rewrite)
                tr_fmt_printf(&f, "  rewrite path: every match of %s by %s\n", r->regex_rewrite,
                              r->regex_substitution);
            if (r->host_rewrite)
                tr_fmt_printf(&f, "  rewrite authority: %s\n", r->host_rewrite);
            if (r->timeout_ms)
                tr_fmt_printf(&f, "  timeout: %u ms\n", r->timeout_ms);
        }
    }
    tr_router_free(router);
    *status = 0;
    char *out = tr_fmt_take(&f, &out_len);
    return out;
}
