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
    {"name", "a server's name prefixes Istio's statistics; trellis counts per listener "
             "(gateway|PORT), so it is not used"},
    {"defaultEndpoint", "defaultEndpoint is for sidecar ingress listeners, not gateways"},
};
static const struct ist_key port_keys[] = {
    {"number", NULL}, {"protocol", NULL}, {"name", NULL}, {"targetPort", NULL}};
static const struct ist_key tls_keys[] = {
    {"httpsRedirect", NULL},         {"mode", NULL},
    {"serverCertificate", NULL},     {"privateKey", NULL},
    {"caCertificates", NULL},        {"caCrl", NULL},
    {"caCertCredentialName", NULL},  {"insecureSkipVerify", NULL},
    {"credentialName", NULL},        {"credentialNames", NULL},
    {"tlsCertificates", NULL},       {"subjectAltNames", NULL},
    {"verifyCertificateSpki", NULL}, {"verifyCertificateHash", NULL},
    {"minProtocolVersion", NULL},    {"maxProtocolVersion", NULL},
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
enum srv_kind {
    SRV_HTTP,
    SRV_MESH_MTLS,
    SRV_TERMINATE,
    SRV_PASSTHROUGH,
    SRV_AUTO_PASSTHROUGH,
    SRV_TCP,           /* TCP (MONGO...): the bound VirtualServices' tcp routes */
    SRV_TERMINATE_TCP, /* TLS with SIMPLE or MUTUAL: terminated, then tcp routes */
    SRV_UNSUPPORTED
};

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
    /* Istio's other gateway protocols carry bytes the proxy does not parse. */
    bool tcp = strcasecmp(proto, "TCP") == 0 || strcasecmp(proto, "MONGO") == 0 ||
               strcasecmp(proto, "MYSQL") == 0 || strcasecmp(proto, "REDIS") == 0;
    if (http && (mode == NULL || tls == NULL))
        return SRV_HTTP;
    if (tcp && (mode == NULL || tls == NULL))
        return SRV_TCP;
    if (mode != NULL && (strcmp(mode, "SIMPLE") == 0 || strcmp(mode, "MUTUAL") == 0) &&
        strcasecmp(proto, "TLS") == 0)
        return SRV_TERMINATE_TCP;
    if (tlsish && mode != NULL && strcmp(mode, "ISTIO_MUTUAL") == 0 &&
        strcasecmp(proto, "HTTPS") == 0)
        return SRV_MESH_MTLS;
    if (mode != NULL && (strcmp(mode, "SIMPLE") == 0 || strcmp(mode, "MUTUAL") == 0) &&
        strcasecmp(proto, "HTTPS") == 0)
        return SRV_TERMINATE;
    /* Istio's default mode is PASSTHROUGH: the bound VirtualServices' tls
     * routes, by SNI, the TLS untouched. */
    if (tlsish && (mode == NULL || strcmp(mode, "PASSTHROUGH") == 0))
        return SRV_PASSTHROUGH;
    /* East-west gateways: the SNI names the destination. */
    if (tlsish && strcmp(mode, "AUTO_PASSTHROUGH") == 0)
        return SRV_AUTO_PASSTHROUGH;
    if (tlsish && mode != NULL && strcmp(mode, "OPTIONAL_MUTUAL") == 0)
        *why = "OPTIONAL_MUTUAL (a client certificate verified when sent) is not supported yet";
    else if (tlsish)
        *why = "an HTTPS or TLS server needs tls.mode SIMPLE, MUTUAL or ISTIO_MUTUAL";
    else if (http || tcp)
        *why = "TLS settings on a plaintext server are not supported";
    else
        *why = "expected protocol HTTP, HTTPS, GRPC, HTTP2, TCP, TLS or MONGO";
    return SRV_UNSUPPORTED;
}

/* A file on the gateway's file system: a compiled model carries none. */
#define FILES_WHY                                                                                  \
    "a file on the %s's file system, which a compiled model cannot carry: put the "                \
    "certificate in a Secret in the input and name it in credentialName"

/* The port of a listener serves one kind: plaintext, mesh mTLS or TLS
 * termination (one Gateway's servers; later ones of another kind get no
 * listener). */
struct port_seen {
    int64_t port;
    enum srv_kind kind;
};

static int64_t server_port(const struct tr_rnode *s)
{
    int64_t num = 0, target;
    const struct tr_rnode *port = tr_rnode_get(s, "port");
    tr_rnode_int(tr_rnode_get(port, "number"), &num);
    if (tr_rnode_int(tr_rnode_get(port, "targetPort"), &target))
        num = target;
    return num;
}

static bool port_kind_clash(const struct tr_rnode *servers, const struct tr_rnode *s)
{
    const char *why;
    enum srv_kind kind = server_kind(s, &why);
    for (const struct tr_rnode *o = servers ? servers->head : NULL; o && o != s; o = o->next) {
        enum srv_kind ok = server_kind(o, &why);
        if (ok != SRV_UNSUPPORTED && ok != kind && server_port(o) == server_port(s))
            return true;
    }
    return false;
}

static void check_port_kind(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *s,
                            enum srv_kind kind, struct port_seen *seen, size_t *n_seen)
{
    int64_t port = server_port(s);
    for (size_t k = 0; k < *n_seen; k++) {
        if (seen[k].port != port)
            continue;
        if (seen[k].kind != kind)
            ist_warn(x, c, s, NULL,
                     "port %lld already serves another kind of server (plaintext, mesh mTLS, "
                     "TLS with a certificate or TLS passthrough) in this Gateway: this server "
                     "gets no listener",
                     (long long)port);
        return;
    }
    if (*n_seen < 64)
        seen[(*n_seen)++] = (struct port_seen){port, kind};
}

/* credentialName's Secret: in the gateway workload's namespace (where
 * Istio's gateway reads it), else the Gateway's. */
static const struct tr_resource *gateway_secret(struct ist_ctx *x, const struct tr_resource *gw,
                                                const char *name)
{
    const struct tr_resource *s = x->wl_ns ? ist_secret_find(x, x->wl_ns, name) : NULL;
    return s ? s : ist_secret_find(x, gw->ns ? gw->ns : "default", name);
}

/* The material of a SIMPLE or MUTUAL server: certificate and key of
 * credentialName; for MUTUAL a CA from it, or from caCertCredentialName, or
 * from the Secret "<credentialName>-cacert" (Istio's conventions). */
static bool server_material(struct ist_ctx *x, struct ist_cursor *c, const struct tr_resource *gw,
                            const struct tr_rnode *tls, struct ist_secret *out)
{
    const char *cred, *mode = "";
    tr_rnode_str(tr_rnode_get(tls, "mode"), &mode);
    const struct tr_rnode *at = tr_rnode_get(tls, "credentialName");
    if (!tr_rnode_str(at, &cred))
        return false;
    const struct tr_resource *sec = gateway_secret(x, gw, cred);
    if (sec == NULL) {
        ist_error(x, c, at, "credentialName",
                  "no Secret \"%s\" in the input: the gateway fetches nothing; add the Secret "
                  "to what you compile",
                  cred);
        return false;
    }
    if (!ist_secret_read(x, c, at, "credentialName", sec, out))
        return false;
    if (out->crt == NULL || out->key == NULL) {
        ist_error(x, c, at, "credentialName", "Secret %s/%s has no tls.crt and tls.key",
                  sec->ns ? sec->ns : "default", sec->name);
        return false;
    }
    if (strcmp(mode, "MUTUAL") != 0)
        return true;
    const char *ca_name = NULL, *ca_key = "caCertCredentialName";
    const struct tr_rnode *ca_at = tr_rnode_get(tls, ca_key);
    if (!tr_rnode_str(ca_at, &ca_name) && out->ca == NULL)
        ca_name = ist_printf(x, "%s-cacert", cred), ca_at = at, ca_key = "credentialName";
    if (ca_name != NULL) {
        const struct tr_resource *cs = gateway_secret(x, gw, ca_name);
        struct ist_secret ca;
        bool read = cs != NULL && ist_secret_read(x, c, ca_at, ca_key, cs, &ca);
        if (!read || ca.ca == NULL) {
            if ((cs == NULL || read) && !x->oom) /* a bad Secret was reported by the read */
                ist_error(x, c, ca_at, ca_key,
                          "MUTUAL needs a CA for client certificates: ca.crt in Secret \"%s\" "
                          "(none in the input that holds one)",
                          ca_name);
            return false;
        }
        out->ca = ca.ca;
    }
    return true;
}

/* SIMPLE and MUTUAL servers: what a terminating listener can do, or why
 * not (the Gateway is refused rather than served with less checking). */
static void check_termination(struct ist_ctx *x, struct ist_cursor *c, const struct tr_resource *gw,
                              const struct tr_rnode *tls)
{
    static const char *const file_keys[] = {"serverCertificate", "privateKey", "caCertificates",
                                            "caCrl", "tlsCertificates"};
    bool files = false;
    for (size_t i = 0; i < sizeof(file_keys) / sizeof(file_keys[0]); i++) {
        const struct tr_rnode *v = tr_rnode_get(tls, file_keys[i]);
        if (v != NULL) {
            ist_error(x, c, v, file_keys[i], FILES_WHY,
                      strcmp(gw->kind, "Sidecar") == 0 ? "proxy" : "gateway");
            files = true;
        }
    }
    static const char *const unchecked[] = {"subjectAltNames", "verifyCertificateSpki",
                                            "verifyCertificateHash"};
    for (size_t i = 0; i < sizeof(unchecked) / sizeof(unchecked[0]); i++) {
        const struct tr_rnode *v = tr_rnode_get(tls, unchecked[i]);
        if (v != NULL)
            ist_error(x, c, v, unchecked[i],
                      "not supported yet: client certificates would be accepted without this "
                      "check");
    }
    if (tr_rnode_get(tls, "credentialNames") != NULL)
        ist_warn(x, c, tr_rnode_get(tls, "credentialNames"), "credentialNames",
                 "not supported yet, ignored: one certificate per server (credentialName)");
    static const char *const ignored[][2] = {
        {"cipherSuites", "the proxy's TLS 1.2 suites are ECDHE with AES-GCM or ChaCha20 only"},
        {"maxProtocolVersion", "the proxy speaks TLS 1.2 and 1.3"},
        {"insecureSkipVerify", "it is a client's setting"},
        {"httpsRedirect", "it redirects plaintext servers' requests"},
    };
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++) {
        const struct tr_rnode *v = tr_rnode_get(tls, ignored[i][0]);
        if (v != NULL)
            ist_warn(x, c, v, ignored[i][0], "ignored: %s", ignored[i][1]);
    }
    const char *mode = "";
    tr_rnode_str(tr_rnode_get(tls, "mode"), &mode);
    if (strcmp(mode, "MUTUAL") != 0 && tr_rnode_get(tls, "caCertCredentialName") != NULL)
        ist_warn(x, c, tr_rnode_get(tls, "caCertCredentialName"), "caCertCredentialName",
                 "ignored: only read for MUTUAL (SIMPLE asks for no client certificate)");
    const char *minv;
    if (ist_str(x, c, tls, "minProtocolVersion", &minv) && strcmp(minv, "TLSV1_2") != 0 &&
        strcmp(minv, "TLSV1_3") != 0 && strcmp(minv, "TLS_AUTO") != 0)
        ist_warn(x, c, tr_rnode_get(tls, "minProtocolVersion"), "minProtocolVersion",
                 "the proxy's minimum is TLS 1.2: %s is raised to it", minv);
    const char *cred;
    if (!ist_str(x, c, tls, "credentialName", &cred)) {
        if (!files)
            ist_error(x, c, tls, "credentialName",
                      "a SIMPLE or MUTUAL server needs a certificate: name a Secret in the "
                      "input");
        return;
    }
    struct ist_secret sec;
    server_material(x, c, gw, tls, &sec);
}

void ist_server_tls_check(struct ist_ctx *x, struct ist_cursor *c, const struct tr_resource *res,
                          const struct tr_rnode *tls)
{
    if (IST_KEYS(x, c, tls, tls_keys))
        check_termination(x, c, res, tls);
}

const char *ist_server_tls_context(struct ist_ctx *x, const struct tr_resource *res,
                                   const struct tr_rnode *tls, const char *name)
{
    struct ist_cursor c;
    ist_cursor_init(&c, res, NULL);
    struct ist_secret sec;
    bool quiet = x->quiet;
    x->quiet = true; /* reported by ist_server_tls_check */
    bool ok = server_material(x, &c, res, tls, &sec);
    x->quiet = quiet;
    if (!ok)
        return NULL;
    const char *mode = "", *minv = "";
    tr_rnode_str(tr_rnode_get(tls, "mode"), &mode);
    struct tr_tls_cfg *t =
        ist_tls_context(x, TR_TLSK_SERVER, name, &sec, true, strcmp(mode, "MUTUAL") == 0);
    if (t == NULL)
        return NULL;
    t->min_version =
        tr_rnode_str(tr_rnode_get(tls, "minProtocolVersion"), &minv) && strcmp(minv, "TLSV1_3") == 0
            ? 0x0304  /* TLS1_3_VERSION */
            : 0x0303; /* TLS 1.2, Istio's default */
    return t->name;
}

/* tls on a plaintext or mesh server: httpsRedirect, or nothing. */
static void check_other_tls(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *tls,
                            enum srv_kind kind)
{
    bool redirect = false;
    ist_bool(x, c, tls, "httpsRedirect", &redirect);
    for (const struct tr_rnode *k = tls->head; k; k = k->next ? k->next->next : NULL) {
        const char *key;
        if (!tr_rnode_str(k, &key) || strcmp(key, "httpsRedirect") == 0 ||
            ((kind == SRV_MESH_MTLS || kind == SRV_PASSTHROUGH || kind == SRV_AUTO_PASSTHROUGH) &&
             strcmp(key, "mode") == 0))
            continue;
        if (kind == SRV_PASSTHROUGH || kind == SRV_AUTO_PASSTHROUGH)
            ist_warn(x, c, k, key,
                     "ignored: a PASSTHROUGH server does not terminate TLS (the backend's "
                     "certificate and settings apply)");
        else if (kind != SRV_UNSUPPORTED)
            ist_warn(x, c, k, key, "ignored: only read for SIMPLE and MUTUAL servers");
    }
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
    struct port_seen seen[64];
    size_t n_seen = 0;
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
        bool tls_ok = IST_KEYS(x, &c, tls, tls_keys);
        const char *why = NULL;
        enum srv_kind kind = server_kind(s, &why);
        if (tls_ok && (kind == SRV_TERMINATE || kind == SRV_TERMINATE_TCP))
            check_termination(x, &c, gw, tls);
        else if (tls_ok && tls != NULL)
            check_other_tls(x, &c, tls, kind);
        ist_pop(&c, sp);
        if (kind == SRV_UNSUPPORTED)
            ist_warn(x, &c, s, NULL, "%s: this server gets no listener", why);
        else if (port != NULL && tr_rnode_int(tr_rnode_get(port, "number"), &(int64_t){0}))
            check_port_kind(x, &c, s, kind, seen, &n_seen);
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
    enum srv_kind kind;
    const char **contexts; /* SRV_TERMINATE: one server context per server */
    size_t n_contexts, cap_contexts;
    bool https_redirect; /* SRV_HTTP: every request gets 301 to https */
    struct tr_vhost_cfg *vhosts;
    size_t n, cap;
    struct tr_strmap domains;
    struct ist_sni_rules sni; /* SRV_PASSTHROUGH, SRV_AUTO_PASSTHROUGH: the sni_routes */
    /* SRV_TCP, SRV_TERMINATE_TCP: the first bound VirtualService's tcp rule
     * that applies (tcp_set; n_tcp 0: it routes nowhere) */
    struct tr_weighted_cluster_cfg *tcp;
    size_t n_tcp;
    bool tcp_set;
    const struct tr_resource *gw; /* the Gateway that made the port */
};

/* Does some server host serve some VirtualService host (a TCP server's
 * routes need one, as its HTTP routes do)? */
static bool serves_any(const struct tr_rnode *server_hosts, const struct tr_rnode *vs_hosts,
                       const char *gns, const char *vns)
{
    for (const struct tr_rnode *h = vs_hosts ? vs_hosts->head : NULL; h; h = h->next) {
        const char *vhost, *shost;
        if (!tr_rnode_str(h, &vhost))
            continue;
        for (const struct tr_rnode *sh = server_hosts ? server_hosts->head : NULL; sh;
             sh = sh->next)
            if (tr_rnode_str(sh, &shost) && server_ns_ok(shost, gns, vns) &&
                served_host(shost, vhost) != NULL)
                return true;
    }
    return false;
}

/* A TCP server's listener: its tcp route's clusters, the TLS terminated
 * first for SRV_TERMINATE_TCP. No route (or one to nowhere): no listener,
 * so connections are refused rather than sent anywhere. */
static bool tcp_listener(struct ist_ctx *x, const struct gw_port *gp)
{
    if (!gp->tcp_set || gp->n_tcp == 0)
        return true;
    struct tr_listener_cfg *l = &x->cfg->listeners[x->cfg->n_listeners++];
    tr_cfg_listener_defaults(l);
    l->name = ist_mprintf(x, "gateway|%u", gp->port);
    l->direction = TR_DIR_OUTBOUND;
    l->protocol = TR_LPROTO_TCP;
    const char *ip = x->wl_ip ? x->wl_ip : x->o->outbound_ip;
    if (l->name == NULL || !ist_make_addr(x, ip, gp->port, &l->addr))
        return false;
    if (gp->n_tcp == 1) {
        l->tcp_cluster_name = gp->tcp[0].cluster_name;
    } else {
        l->tcp_clusters = gp->tcp;
        l->n_tcp_clusters = gp->n_tcp;
    }
    if (gp->kind == SRV_TERMINATE_TCP) {
        l->tls_mode = TR_TLS_TERMINATE;
        l->tls_contexts = ist_malloc(x, gp->n_contexts, sizeof(*l->tls_contexts));
        if (l->tls_contexts == NULL)
            return false;
        memcpy(l->tls_contexts, gp->contexts, gp->n_contexts * sizeof(*l->tls_contexts));
        l->n_tls_contexts = gp->n_contexts;
    }
    return true;
}

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
    if (vs != NULL) /* NULL: a redirecting server's host (https_redirect fills it) */
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
    if (rs.n > 0)
        memcpy(v->routes, rs.v, rs.n * sizeof(*v->routes));
    v->n_routes = rs.n;
    if (vs != NULL) {
        struct ist_cursor c;
        ist_cursor_init(&c, vs, "spec");
        v->loc = ist_loc(x, &c, NULL);
    }
    return true;
}

/* A SIMPLE or MUTUAL server's certificate as a server context of its
 * port, serving the server's hosts by SNI ("*" or a namespace's any host:
 * the port's default). Quiet: the Gateway's check reported what fails. */
static bool server_context(struct ist_ctx *x, const struct tr_resource *gw,
                           const struct tr_rnode *s, struct gw_port *gp)
{
    const struct tr_rnode *tls = tr_rnode_get(s, "tls");
    struct ist_cursor c;
    ist_cursor_init(&c, gw, NULL);
    struct ist_secret sec;
    bool quiet = x->quiet;
    x->quiet = true;
    bool ok = server_material(x, &c, gw, tls, &sec);
    x->quiet = quiet;
    if (!ok)
        return false;
    const char *mode = "", *minv = "";
    tr_rnode_str(tr_rnode_get(tls, "mode"), &mode);
    bool mutual = strcmp(mode, "MUTUAL") == 0;
    char name[128];
    snprintf(name, sizeof(name), "gateway|%u|%zu", gp->port, gp->n_contexts);
    struct tr_tls_cfg *t = ist_tls_context(x, TR_TLSK_SERVER, name, &sec, true, mutual);
    if (t == NULL)
        return false;
    if (tr_rnode_str(tr_rnode_get(tls, "minProtocolVersion"), &minv) &&
        strcmp(minv, "TLSV1_3") == 0)
        t->min_version = 0x0304; /* TLS1_3_VERSION */
    else
        t->min_version = 0x0303; /* Istio's gateways accept TLS 1.2 by default */
    const struct tr_rnode *hosts = tr_rnode_get(s, "hosts");
    t->server_names = ist_malloc(x, hosts ? hosts->n : 0, sizeof(*t->server_names));
    bool any = false;
    for (const struct tr_rnode *h = hosts ? hosts->head : NULL; h && t->server_names; h = h->next) {
        const char *v, *slash;
        if (!tr_rnode_str(h, &v))
            continue;
        v = (slash = strchr(v, '/')) ? slash + 1 : v;
        if (strcmp(v, "*") == 0)
            any = true;
        else
            t->server_names[t->n_server_names++] = ist_mstrdup(x, v);
    }
    if (any)
        t->n_server_names = 0; /* "*": every name, and clients without SNI */
    if (gp->n_contexts == gp->cap_contexts) {
        size_t cap = gp->cap_contexts ? 2 * gp->cap_contexts : 4;
        const char **v = ist_alloc(x, cap, sizeof(*v));
        if (v == NULL)
            return false;
        if (gp->n_contexts)
            memcpy(v, gp->contexts, gp->n_contexts * sizeof(*v));
        gp->contexts = v;
        gp->cap_contexts = cap;
    }
    gp->contexts[gp->n_contexts++] = t->name;
    return true;
}

/* A PASSTHROUGH server: the tls rules of a VirtualService bound to the
 * Gateway, for the port; each rule keeps the SNI names a host of the server
 * covers (the narrower of the two). Quiet: the checks reported the rest. */
static bool passthrough_rules(struct ist_ctx *x, struct gw_port *gp, const struct tr_resource *vs,
                              const struct tr_rnode *hosts, const char *gns, const char *gname)
{
    const char *vns = vs->ns ? vs->ns : "default";
    struct ist_vhost vh = {.svc = NULL, .port = gp->port, .gateway = gname};
    struct ist_tls_rule *tr = NULL;
    size_t ntr = 0, cap = 0;
    x->quiet = true;
    bool ok = ist_vs_tls_rules(x, vs, &vh, &tr, &ntr, &cap);
    x->quiet = false;
    if (!ok)
        return false;
    for (size_t k = 0; k < ntr; k++) {
        const char **names = ist_alloc(x, tr[k].n_names, sizeof(*names));
        if (names == NULL)
            return false;
        size_t nn = 0;
        for (size_t i = 0; i < tr[k].n_names; i++) {
            for (const struct tr_rnode *sh = hosts ? hosts->head : NULL; sh; sh = sh->next) {
                const char *shost, *d;
                if (!tr_rnode_str(sh, &shost) || !server_ns_ok(shost, gns, vns) ||
                    (d = served_host(shost, tr[k].names[i])) == NULL)
                    continue;
                names[nn++] = d;
                break;
            }
        }
        /* A share to nowhere leaves the names unrouted: the gateway closes them. */
        if (!ist_sni_rules_add(x, &gp->sni, names, nn, tr[k].split, tr[k].n_split, NULL, tr[k].loc))
            return false;
    }
    return true;
}

/* An AUTO_PASSTHROUGH server: every registry service a host of the server
 * covers, each port and each subset of its DestinationRule, by the SNI
 * Istio's sidecars send to another network's gateway,
 * outbound_.PORT_.SUBSET_.HOST (SUBSET empty for the whole service), to
 * its endpoints as they are: the sidecar's mTLS passes through to the
 * destination's sidecar. No VirtualService is involved (as in Istio). */
static bool auto_passthrough_rules(struct ist_ctx *x, struct gw_port *gp,
                                   const struct tr_rnode *hosts, const char *gns)
{
    for (size_t i = 0; i < x->n_svcs; i++) {
        const struct ist_service *s = x->svcs[i];
        if (ist_refused(x, s->res) || s->host[0] == '*')
            continue;
        bool covered = false;
        for (const struct tr_rnode *sh = hosts ? hosts->head : NULL; sh && !covered;
             sh = sh->next) {
            const char *shost;
            covered = tr_rnode_str(sh, &shost) && server_ns_ok(shost, gns, s->ns) &&
                      served_host(shost, s->host) != NULL;
        }
        if (!covered)
            continue;
        const struct tr_resource *dr = ist_dr_for(x, s->host, s->ns);
        const struct tr_rnode *subsets = dr ? tr_rnode_get(dr->spec, "subsets") : NULL;
        for (size_t pi = 0; pi < s->n_ports; pi++) {
            const struct tr_rnode *ss = NULL;
            const char *subset = NULL;
            for (;;) {
                const char *name = ist_mprintf(x, "outbound_.%u_.%s_.%s", s->ports[pi].number,
                                               subset ? subset : "", s->host);
                struct tr_weighted_cluster_cfg w = {.cluster_name =
                                                        ist_passthrough_cluster(x, s, pi, subset),
                                                    .cluster = -1,
                                                    .weight = 1};
                struct ist_cursor c;
                ist_cursor_init(&c, s->res, NULL);
                if (name == NULL || w.cluster_name == NULL ||
                    !ist_sni_rules_add(x, &gp->sni, &name, 1, &w, 1, NULL, ist_loc(x, &c, NULL)))
                    return false;
                ss = ss == NULL ? (subsets && subsets->kind == TR_RNODE_SEQ ? subsets->head : NULL)
                                : ss->next;
                while (ss != NULL && !tr_rnode_str(tr_rnode_get(ss, "name"), &subset))
                    ss = ss->next;
                if (ss == NULL)
                    break;
            }
        }
    }
    return true;
}

/* httpsRedirect: every host of the port answers 301 to https on the
 * default port, as Envoy's require_tls does, whatever its routes say. */
static bool https_redirect(struct ist_ctx *x, struct gw_port *gp)
{
    for (size_t i = 0; i < gp->n; i++) {
        struct tr_vhost_cfg *v = &gp->vhosts[i];
        struct tr_route_cfg *r = ist_malloc(x, 1, sizeof(*r));
        struct tr_redirect_cfg *rd = ist_malloc(x, 1, sizeof(*rd));
        if (r == NULL || rd == NULL)
            return false;
        tr_cfg_route_defaults(r);
        tr_cfg_redirect_defaults(rd);
        rd->scheme = "https";
        rd->port_from = TR_REDIRECT_PORT_PROTOCOL_DEFAULT;
        rd->code = 301;
        r->name = "https-redirect";
        r->redirect = rd;
        r->loc = v->loc;
        v->routes = r;
        v->n_routes = 1;
    }
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
                !tr_rnode_int(tr_rnode_get(tr_rnode_get(s, "port"), "number"), &num) ||
                port_kind_clash(servers, s))
                continue;
            num = server_port(s);
            struct gw_port *gp = NULL;
            for (size_t k = 0; k < n_ports; k++)
                gp = ports[k]->port == (uint32_t)num ? ports[k] : gp;
            if (gp != NULL && gp->kind != kind)
                continue; /* another Gateway's kind of server holds the port */
            if (gp == NULL) {
                if (n_ports == sizeof(ports) / sizeof(ports[0]))
                    continue;
                gp = ports[n_ports++] = ist_alloc(x, 1, sizeof(*gp));
                if (gp == NULL)
                    return false;
                gp->port = (uint32_t)num;
                gp->kind = kind;
                gp->gw = gw;
                tr_strmap_init(&gp->domains, x->tmp);
            }
            const struct tr_rnode *tls = tr_rnode_get(s, "tls");
            bool redirect = false;
            if (kind == SRV_HTTP && tr_rnode_bool(tr_rnode_get(tls, "httpsRedirect"), &redirect))
                gp->https_redirect = gp->https_redirect || redirect;
            if ((kind == SRV_TERMINATE || kind == SRV_TERMINATE_TCP) &&
                !server_context(x, gw, s, gp))
                continue; /* no certificate: no host of it is served (reported) */
            const struct tr_rnode *hosts = tr_rnode_get(s, "hosts");
            if (kind == SRV_AUTO_PASSTHROUGH) {
                if (!auto_passthrough_rules(x, gp, hosts, gns))
                    return false;
                continue;
            }
            for (size_t v = 0; v < nv; v++) {
                const struct tr_resource *vs = vss[v];
                const char *vns = vs->ns ? vs->ns : "default";
                if (ist_refused(x, vs) ||
                    !ist_gateway_listed(vs, tr_rnode_get(vs->spec, "gateways"), gname))
                    continue;
                if (kind == SRV_PASSTHROUGH) {
                    if (!passthrough_rules(x, gp, vs, hosts, gns, gname))
                        return false;
                    continue;
                }
                const struct tr_rnode *vh = tr_rnode_get(vs->spec, "hosts");
                if (kind == SRV_TCP || kind == SRV_TERMINATE_TCP) {
                    if (!gp->tcp_set && serves_any(hosts, vh, gns, vns) &&
                        ist_vs_gateway_tcp(x, vs, gname, gp->port, &gp->tcp, &gp->n_tcp))
                        gp->tcp_set = true;
                    continue;
                }
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
            /* Istio redirects a redirecting server's hosts that no
             * VirtualService serves too. */
            for (const struct tr_rnode *h = redirect ? hosts->head : NULL; h; h = h->next) {
                const char *v, *slash;
                if (!tr_rnode_str(h, &v))
                    continue;
                v = (slash = strchr(v, '/')) ? slash + 1 : v;
                if (tr_strmap_get(&gp->domains, v) == NULL && !add_vhost(x, gp, NULL, v, gname))
                    return false;
            }
        }
    }
    struct tr_config *cfg = x->cfg;
    for (size_t k = 0; k < n_ports; k++) {
        struct gw_port *gp = ports[k];
        bool sni_default = gp->sni.has_default && gp->sni.n_default > 0;
        if (gp->kind == SRV_TCP || gp->kind == SRV_TERMINATE_TCP) {
            if (!tcp_listener(x, gp))
                return false;
            continue;
        }
        if (gp->n == 0 && gp->sni.n == 0 && !sni_default)
            continue; /* no VirtualService is bound: nothing to serve */
        struct tr_listener_cfg *l = &cfg->listeners[cfg->n_listeners++];
        tr_cfg_listener_defaults(l);
        l->name = ist_mprintf(x, "gateway|%u", gp->port);
        if (gp->kind == SRV_PASSTHROUGH || gp->kind == SRV_AUTO_PASSTHROUGH) {
            /* TLS untouched, by SNI; a name no rule takes is closed, as at
             * Istio's gateway (no default filter chain). */
            l->direction = TR_DIR_OUTBOUND;
            l->protocol = TR_LPROTO_TCP;
            const char *ip = x->wl_ip ? x->wl_ip : x->o->outbound_ip;
            if (!ist_make_addr(x, ip, gp->port, &l->addr) || !ist_sni_rules_copy(x, &gp->sni, l))
                return false;
            if (gp->sni.overflow) {
                struct ist_cursor c;
                ist_cursor_init(&c, gp->gw, NULL);
                ist_warn(x, &c, NULL, NULL,
                         "port %u: more than %d SNI rules; the rest are not routed (closed)",
                         gp->port, IST_MAX_SNI_RULES);
            }
            continue;
        }
        l->direction = gp->kind == SRV_MESH_MTLS ? TR_DIR_INBOUND : TR_DIR_OUTBOUND;
        if (gp->kind == SRV_MESH_MTLS) {
            l->tls_mode = TR_TLS_STRICT;
            l->tls_name = "mesh";
            x->uses_mesh_tls = true;
        } else if (gp->kind == SRV_TERMINATE) {
            l->tls_mode = TR_TLS_TERMINATE;
            l->tls_contexts = ist_malloc(x, gp->n_contexts, sizeof(*l->tls_contexts));
            if (l->tls_contexts == NULL)
                return false;
            memcpy(l->tls_contexts, gp->contexts, gp->n_contexts * sizeof(*l->tls_contexts));
            l->n_tls_contexts = gp->n_contexts;
        }
        if (gp->https_redirect && !https_redirect(x, gp))
            return false;
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
