/* Gateway: a workload whose labels a Gateway selects gets a listener per
 * server port, routing the hosts of the VirtualServices bound to that Gateway
 * (spec.gateways naming it). Unlike a sidecar's, a gateway's virtual host
 * has no default route: a request no rule matches gets 404, as at Istio's
 * ingress gateway. */
#include <stdio.h>
#include <string.h>

#include "config/load.h"
#include "core/arena.h"
#include "dialect/istio/internal.h"

static const struct ist_key gw_keys[] = {{"selector", NULL}, {"servers", NULL}};
static const struct ist_key server_keys[] = {
    {"port", NULL},
    {"bind", "bind addresses are not supported yet: the gateway binds its own address"},
    {"hosts", NULL},
    {"tls", NULL},
    {"name", NULL},
    {"defaultEndpoint", "defaultEndpoint is for sidecar ingress listeners, not gateways"},
};
static const struct ist_key port_keys[] = {
    {"number", NULL}, {"protocol", NULL}, {"name", NULL}, {"targetPort", NULL}};
static const struct ist_key tls_keys[] = {
    {"httpsRedirect", "HTTP-to-HTTPS redirects are not supported yet"},
    {"mode", NULL},
    {"serverCertificate", NULL},
    {"privateKey", NULL},
    {"caCertificates", NULL},
    {"caCrl", NULL},
    {"caCertCredentialName", NULL},
    {"insecureSkipVerify", NULL},
    {"credentialName", NULL},
    {"credentialNames", NULL},
    {"tlsCertificates", NULL},
    {"subjectAltNames", NULL},
    {"verifyCertificateSpki", NULL},
    {"verifyCertificateHash", NULL},
    {"minProtocolVersion", NULL},
    {"maxProtocolVersion", NULL},
    {"cipherSuites", NULL},
};

static bool gw_selects(const struct ist_ctx *x, const struct tr_resource *gw)
{
    const struct tr_rnode *sel = tr_rnode_get(gw->spec, "selector");
    /* Istio applies a Gateway only to gateway proxies; a proxy is one here
     * when a non-empty selector picks its labels. */
    return sel != NULL && sel->kind == TR_RNODE_MAP && sel->n > 0 &&
           ist_labels_match(sel, x->wl_labels);
}

bool ist_is_gateway(const struct ist_ctx *x)
{
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "Gateway", &n);
    for (size_t i = 0; i < n; i++) {
        if (!ist_refused(x, v[i]) && gw_selects(x, v[i]))
            return true;
    }
    return false;
}

/* The server's mode, as the listener can serve it, or why not. */
enum srv_kind { SRV_HTTP, SRV_MESH_MTLS, SRV_UNSUPPORTED };

static enum srv_kind server_kind(const struct tr_rnode *srv, const char **why)
{
    const char *proto = NULL, *mode = NULL;
    tr_rnode_str(tr_rnode_get(tr_rnode_get(srv, "port"), "protocol"), &proto);
    const struct tr_rnode *tls = tr_rnode_get(srv, "tls");
    tr_rnode_str(tr_rnode_get(tls, "mode"), &mode);
    if (proto == NULL)
        proto = "";
    bool http = strcasecmp(proto, "HTTP") == 0 || strcasecmp(proto, "HTTP2") == 0 ||
                strcasecmp(proto, "GRPC") == 0;
    bool tlsish = strcasecmp(proto, "HTTPS") == 0 || strcasecmp(proto, "TLS") == 0;
    if (http && (mode == NULL || tls == NULL))
        return SRV_HTTP;
    if (tlsish && mode != NULL && strcmp(mode, "ISTIO_MUTUAL") == 0 &&
        strcasecmp(proto, "HTTPS") == 0)
        return SRV_MESH_MTLS;
    if (tlsish && mode != NULL &&
        (strcmp(mode, "PASSTHROUGH") == 0 || strcmp(mode, "AUTO_PASSTHROUGH") == 0))
        *why = "TLS passthrough (routing by SNI without terminating) is not supported yet";
    else if (tlsish)
        *why = "terminating TLS with a server certificate (SIMPLE, MUTUAL, OPTIONAL_MUTUAL) is "
               "not supported yet";
    else if (http)
        *why = "TLS settings on a plaintext HTTP server are not supported";
    else
        *why = "only HTTP, HTTP2, GRPC and HTTPS (ISTIO_MUTUAL) servers are supported yet";
    return SRV_UNSUPPORTED;
}

void ist_gateway_check(struct ist_ctx *x, const struct tr_resource *gw)
{
    struct ist_cursor c;
    ist_cursor_init(&c, gw, "spec");
    if (!IST_KEYS(x, &c, gw->spec, gw_keys))
        return;
    const struct tr_rnode *sel = ist_map(x, &c, gw->spec, "selector");
    if (sel == NULL || sel->n == 0)
        ist_warn(x, &c, gw->spec, "selector",
                 "a Gateway without a selector applies to no workload here (give the gateway "
                 "pods' labels)");
    const struct tr_rnode *servers = ist_list(x, &c, gw->spec, "servers");
    if (servers == NULL || servers->n == 0)
        ist_error(x, &c, gw->spec, "servers", "at least one server is required");
    size_t i = 0;
    for (const struct tr_rnode *s = servers ? servers->head : NULL; s; s = s->next, i++) {
        size_t saved = ist_push_key(&c, "servers");
        ist_push_index(&c, i);
        if (!IST_KEYS(x, &c, s, server_keys)) {
            ist_pop(&c, saved);
            continue;
        }
        const struct tr_rnode *port = ist_map(x, &c, s, "port");
        size_t sp = ist_push_key(&c, "port");
        uint32_t num;
        const char *proto;
        if (port == NULL)
            ist_error(x, &c, s, NULL, "a port is required");
        else if (IST_KEYS(x, &c, port, port_keys)) {
            if (!ist_u32(x, &c, port, "number", 1, 65535, &num))
                ist_error(x, &c, port, "number", "a port number is required");
            if (!ist_str(x, &c, port, "protocol", &proto))
                ist_error(x, &c, port, "protocol", "a protocol is required");
            ist_u32(x, &c, port, "targetPort", 1, 65535, &num);
        }
        ist_pop(&c, sp);
        const struct tr_rnode *hosts = ist_list(x, &c, s, "hosts");
        if (hosts == NULL || hosts->n == 0)
            ist_error(x, &c, s, "hosts", "at least one host is required");
        const struct tr_rnode *tls = ist_map(x, &c, s, "tls");
        sp = ist_push_key(&c, "tls");
        IST_KEYS(x, &c, tls, tls_keys);
        ist_pop(&c, sp);
        const char *why = NULL;
        if (server_kind(s, &why) == SRV_UNSUPPORTED)
            ist_warn(x, &c, s, NULL, "%s: this server gets no listener", why);
        ist_pop(&c, saved);
    }
}

/* The domain a VirtualService host serves under a server host ("ns/host"
 * or "host"), or NULL: the narrower of the two. */
static const char *served_host(const char *server_host, const char *vs_host)
{
    const char *h = strchr(server_host, '/');
    h = h ? h + 1 : server_host;
    if (strcmp(h, "*") == 0 || strcmp(h, vs_host) == 0)
        return vs_host;
    if (strcmp(vs_host, "*") == 0)
        return h;
    size_t hl = strlen(h), vl = strlen(vs_host);
    if (h[0] == '*' && vl > hl - 1 && strcmp(vs_host + vl - (hl - 1), h + 1) == 0)
        return vs_host; /* *.example.com serves api.example.com */
    if (vs_host[0] == '*' && hl > vl - 1 && strcmp(h + hl - (vl - 1), vs_host + 1) == 0)
        return h;
    return NULL;
}

static bool server_ns_ok(const char *server_host, const char *gw_ns, const char *vs_ns)
{
    const char *slash = strchr(server_host, '/');
    if (slash == NULL)
        return true;
    size_t n = (size_t)(slash - server_host);
    if (n == 1 && server_host[0] == '*')
        return true;
    if (n == 1 && server_host[0] == '.')
        return strcmp(gw_ns, vs_ns) == 0;
    return strlen(vs_ns) == n && strncmp(server_host, vs_ns, n) == 0;
}

struct gw_port {
    uint32_t port;
    bool mtls;
    struct tr_vhost_cfg *vhosts;
    size_t n, cap;
    struct tr_strmap domains;
};

static bool add_vhost(struct ist_ctx *x, struct gw_port *gp, const struct tr_resource *vs,
                      const char *domain, const char *gateway)
{
    bool oom = false;
    const char *d = ist_mstrdup(x, domain);
    if (d == NULL)
        return false;
    if (tr_strmap_put(&gp->domains, d, (void *)d, &oom) != NULL)
        return true; /* an earlier VirtualService serves this host on this port */
    if (oom)
        return ist_oom(x);
    struct ist_routes rs = {0};
    struct ist_vhost vh = {.svc = NULL, .port = gp->port, .gateway = gateway};
    x->quiet = true;
    ist_vs_routes(x, vs, &vh, &rs);
    x->quiet = false;
    if (gp->n == gp->cap) {
        size_t ncap = gp->cap ? gp->cap * 2 : 8;
        struct tr_vhost_cfg *nv = ist_alloc(x, ncap, sizeof(*nv));
        if (nv == NULL)
            return false;
        if (gp->n)
            memcpy(nv, gp->vhosts, gp->n * sizeof(*nv));
        gp->vhosts = nv;
        gp->cap = ncap;
    }
    struct tr_vhost_cfg *v = &gp->vhosts[gp->n++];
    memset(v, 0, sizeof(*v));
    v->name = ist_mprintf(x, "%s:%u", d, gp->port);
    v->domains = ist_malloc(x, 2, sizeof(*v->domains));
    v->routes = ist_malloc(x, rs.n, sizeof(*v->routes));
    if (v->name == NULL || v->domains == NULL || v->routes == NULL)
        return false;
    v->domains[0] = d;
    v->n_domains = 1;
    if (strcmp(d, "*") != 0) {
        v->domains[1] = ist_mprintf(x, "%s:%u", d, gp->port);
        v->n_domains = 2;
    }
    memcpy(v->routes, rs.v, rs.n * sizeof(*v->routes));
    v->n_routes = rs.n;
    struct ist_cursor c;
    ist_cursor_init(&c, vs, "spec");
    v->loc = ist_loc(x, &c, NULL);
    return true;
}

bool ist_gateways(struct ist_ctx *x)
{
    size_t ng, nv;
    const struct tr_resource *const *gws = tr_rset_of_kind(x->rs, IST_GROUP, "Gateway", &ng);
    const struct tr_resource *const *vss = tr_rset_of_kind(x->rs, IST_GROUP, "VirtualService", &nv);
    struct gw_port *ports[64];
    size_t n_ports = 0;
    for (size_t g = 0; g < ng; g++) {
        const struct tr_resource *gw = gws[g];
        if (ist_refused(x, gw) || !gw_selects(x, gw))
            continue;
        const char *gns = gw->ns ? gw->ns : "default";
        const char *gname = ist_printf(x, "%s/%s", gns, gw->name);
        if (gname == NULL)
            return false;
        const struct tr_rnode *servers = tr_rnode_get(gw->spec, "servers");
        for (const struct tr_rnode *s = servers ? servers->head : NULL; s; s = s->next) {
            const char *why;
            enum srv_kind kind = server_kind(s, &why);
            int64_t num;
            if (kind == SRV_UNSUPPORTED ||
                !tr_rnode_int(tr_rnode_get(tr_rnode_get(s, "port"), "number"), &num))
                continue;
            int64_t target;
            if (tr_rnode_int(tr_rnode_get(tr_rnode_get(s, "port"), "targetPort"), &target))
                num = target;
            struct gw_port *gp = NULL;
            for (size_t k = 0; k < n_ports; k++)
                gp = ports[k]->port == (uint32_t)num ? ports[k] : gp;
            if (gp == NULL) {
                if (n_ports == sizeof(ports) / sizeof(ports[0]))
                    continue;
                gp = ports[n_ports++] = ist_alloc(x, 1, sizeof(*gp));
                if (gp == NULL)
                    return false;
                gp->port = (uint32_t)num;
                gp->mtls = kind == SRV_MESH_MTLS;
                tr_strmap_init(&gp->domains, x->tmp);
            }
            const struct tr_rnode *hosts = tr_rnode_get(s, "hosts");
            for (size_t v = 0; v < nv; v++) {
                const struct tr_resource *vs = vss[v];
                const char *vns = vs->ns ? vs->ns : "default";
                if (ist_refused(x, vs) ||
                    !ist_gateway_listed(vs, tr_rnode_get(vs->spec, "gateways"), gname))
                    continue;
                const struct tr_rnode *vh = tr_rnode_get(vs->spec, "hosts");
                for (const struct tr_rnode *h = vh ? vh->head : NULL; h; h = h->next) {
                    const char *vhost;
                    if (!tr_rnode_str(h, &vhost))
                        continue;
                    for (const struct tr_rnode *sh = hosts ? hosts->head : NULL; sh;
                         sh = sh->next) {
                        const char *shost, *d;
                        if (!tr_rnode_str(sh, &shost) || !server_ns_ok(shost, gns, vns) ||
                            (d = served_host(shost, vhost)) == NULL)
                            continue;
                        if (!add_vhost(x, gp, vs, d, gname))
                            return false;
                        break;
                    }
                }
            }
        }
    }
    struct tr_config *cfg = x->cfg;
    for (size_t k = 0; k < n_ports; k++) {
        struct gw_port *gp = ports[k];
        if (gp->n == 0)
            continue; /* no VirtualService is bound: nothing to serve */
        struct tr_listener_cfg *l = &cfg->listeners[cfg->n_listeners++];
        tr_cfg_listener_defaults(l);
        l->name = ist_mprintf(x, "gateway|%u", gp->port);
        l->direction = gp->mtls ? TR_DIR_INBOUND : TR_DIR_OUTBOUND;
        if (gp->mtls) {
            l->tls_mode = TR_TLS_STRICT;
            l->tls_name = "mesh";
            x->uses_mesh_tls = true;
        }
        const char *ip = x->wl_ip ? x->wl_ip : x->o->outbound_ip;
        if (!ist_make_addr(x, ip, gp->port, &l->addr))
            return false;
        struct tr_route_table_cfg *t = &cfg->route_tables[cfg->n_route_tables++];
        t->name = ist_mprintf(x, "gateway|%u", gp->port);
        t->vhosts = ist_malloc(x, gp->n, sizeof(*t->vhosts));
        if (t->name == NULL || t->vhosts == NULL)
            return false;
        memcpy(t->vhosts, gp->vhosts, gp->n * sizeof(*t->vhosts));
        t->n_vhosts = gp->n;
        l->route_table_name = t->name;
    }
    return true;
}
