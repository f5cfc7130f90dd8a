/* The Istio compiler: scope, listeners, route tables, clusters, the model.
 *
 * Two passes over the Istio resources. The check pass reads every
 * VirtualService, DestinationRule and Sidecar once and reports what it finds
 * (so a finding appears once, whoever uses the resource, and resources no
 * proxy uses are still checked); a resource with an error is refused. The
 * build pass then compiles what this workload sees, quietly. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "core/arena.h"
#include "core/authz_syntax.h"
#include "dialect/istio/internal.h"
#include "identity/identity.h"
#include "listener/capture.h"

/* ------------------------------------------------------------ addresses */

/* "HOST:PORT" in the model's arena, without printf (a model has one per
 * endpoint and per virtual host's domain); NULL when host is (out of
 * memory before) or out of memory. */
static const char *host_port(struct ist_ctx *x, const char *open, const char *host,
                             const char *close, uint32_t port)
{
    if (host == NULL)
        return NULL;
    char num[IST_UTOA_MAX];
    return ist_mjoin(x, (const char *const[]){open, host, close, ist_utoa(num, port)}, 4);
}

bool ist_make_addr(struct ist_ctx *x, const char *ip, uint32_t port, struct tr_cfg_addr *a)
{
    memset(a, 0, sizeof(*a));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        a->len = sizeof(*s4);
        a->text = host_port(x, "", ip, ":", port);
    } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        a->len = sizeof(*s6);
        a->text = host_port(x, "[", ip, "]:", port);
    } else {
        return false;
    }
    return a->text != NULL;
}

/* ------------------------------------------------------------- scope */

static bool exported_to(const char *const *exp, size_t n, const char *owner_ns, const char *ns)
{
    if (exp == NULL || n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        const char *e = exp[i];
        if (e == NULL)
            continue;
        if (strcmp(e, "*") == 0 || strcmp(e, ns) == 0 ||
            (strcmp(e, ".") == 0 && strcmp(owner_ns, ns) == 0))
            return true;
    }
    return false;
}

static bool res_exported_to(const struct tr_resource *r, const char *ns)
{
    const struct tr_rnode *exp = tr_rnode_get(r->spec, "exportTo");
    if (exp == NULL || exp->kind != TR_RNODE_SEQ || exp->n == 0)
        return true;
    const char *rns = r->ns ? r->ns : "default";
    for (const struct tr_rnode *e = exp->head; e; e = e->next) {
        const char *s;
        if (tr_rnode_str(e, &s) && (strcmp(s, "*") == 0 || strcmp(s, ns) == 0 ||
                                    (strcmp(s, ".") == 0 && strcmp(rns, ns) == 0)))
            return true;
    }
    return false;
}

static bool host_glob(const char *pattern, const char *host)
{
    if (strcmp(pattern, "*") == 0 || strcmp(pattern, host) == 0)
        return true;
    if (pattern[0] == '*') {
        size_t pl = strlen(pattern + 1), hl = strlen(host);
        return hl > pl && strcmp(host + hl - pl, pattern + 1) == 0;
    }
    return false;
}

/* The Sidecar that configures this workload: one in its namespace whose
 * selector matches, else its namespace's without a selector, else the root
 * namespace's without a selector. */
static const struct tr_resource *sidecar_for(struct ist_ctx *x)
{
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "Sidecar", &n);
    const struct tr_resource *ns_default = NULL, *root_default = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        if (ist_refused(x, r))
            continue;
        const char *rns = r->ns ? r->ns : "default";
        const struct tr_rnode *sel = tr_rnode_get(r->spec, "workloadSelector");
        if (strcmp(rns, x->wl_ns) == 0) {
            if (sel != NULL) {
                if (ist_labels_match(tr_rnode_get(sel, "labels"), x->wl_labels))
                    return r;
            } else if (ns_default == NULL) {
                ns_default = r;
            }
        } else if (strcmp(rns, x->o->root_ns) == 0 && sel == NULL && root_default == NULL) {
            root_default = r;
        }
    }
    return ns_default ? ns_default : root_default;
}

struct ingress_endpoint {
    char ip[64];
    uint32_t port;
    bool any, loopback;
};
static bool ingress_endpoint(const char *ep, struct ingress_endpoint *out);

/* spec.ingress (the cursor at spec), as istiod validates it. */
static void ingress_check(struct ist_ctx *x, struct ist_cursor *c, const struct tr_resource *r)
{
    static const struct ist_key keys[] = {
        {"port", NULL}, {"bind", NULL},           {"captureMode", NULL}, {"defaultEndpoint", NULL},
        {"tls", NULL},  {"connectionPool", NULL},
    };
    static const struct ist_key port_keys[] = {
        {"number", NULL},
        {"protocol", NULL},
        {"name", NULL},
        {"targetPort", "a port's targetPort applies to ServiceEntries only (Istio): ignored"},
    };
    const struct tr_rnode *ingress = ist_list(x, c, r->spec, "ingress");
    size_t i = 0;
    for (const struct tr_rnode *in = ingress ? ingress->head : NULL; in; in = in->next, i++) {
        size_t saved = ist_push_key(c, "ingress");
        ist_push_index(c, i);
        if (!IST_KEYS(x, c, in, keys)) {
            ist_pop(c, saved);
            continue;
        }
        const struct tr_rnode *port = ist_map(x, c, in, "port");
        uint32_t num = 0;
        size_t sp = ist_push_key(c, "port");
        if (port == NULL)
            ist_pop(c, sp); /* the finding is at ingress[i] */
        if (port == NULL) {
            ist_error(x, c, in, "port", "missing required field");
        } else if (IST_KEYS(x, c, port, port_keys)) {
            if (!ist_u32(x, c, port, "number", 1, 65535, &num) &&
                tr_rnode_get(port, "number") == NULL)
                ist_error(x, c, port, "number", "missing required field");
            const char *proto;
            bool named;
            if (ist_str(x, c, port, "protocol", &proto) &&
                ist_proto_of(proto, false, &named) == IST_P_UNKNOWN && !named)
                ist_warn(x, c, tr_rnode_get(port, "protocol"), "protocol",
                         "protocol %s is not one trellis parses: the port is detected per "
                         "connection (HTTP, else TCP)",
                         proto);
        }
        ist_pop(c, sp);
        size_t j = 0;
        for (const struct tr_rnode *o = ingress->head; num && o != in; o = o->next, j++) {
            int64_t on;
            if (tr_rnode_int(tr_rnode_get(tr_rnode_get(o, "port"), "number"), &on) && on == num) {
                size_t sd = ist_push_key(c, "port");
                ist_error(x, c, port, "number", "port %u is already the port of ingress[%zu]", num,
                          j);
                ist_pop(c, sd);
            }
        }
        const char *ep, *bind, *mode;
        struct ingress_endpoint dst;
        if (!ist_str(x, c, in, "defaultEndpoint", &ep))
            ist_error(x, c, in, "defaultEndpoint", "missing required field");
        else if (strncmp(ep, "unix://", 7) == 0)
            ist_error(x, c, tr_rnode_get(in, "defaultEndpoint"), "defaultEndpoint",
                      "Unix domain sockets are not supported: the application must listen on "
                      "an IP address");
        else if (!ingress_endpoint(ep, &dst))
            ist_error(x, c, tr_rnode_get(in, "defaultEndpoint"), "defaultEndpoint",
                      "expected IP:PORT (127.0.0.1:PORT, 0.0.0.0:PORT), got \"%s\"", ep);
        struct tr_ip a;
        if (ist_str(x, c, in, "bind", &bind) && !tr_ip_parse(bind, &a))
            ist_error(x, c, tr_rnode_get(in, "bind"), "bind", "expected an IP address, got \"%s\"",
                      bind);
        if (ist_str(x, c, in, "captureMode", &mode)) {
            if (strcmp(mode, "NONE") == 0)
                ist_warn(x, c, tr_rnode_get(in, "captureMode"), "captureMode",
                         "NONE is ignored: capture is chosen per workload (trellis ctl compile "
                         "--capture, trellis up)");
            else if (strcmp(mode, "DEFAULT") != 0 && strcmp(mode, "IPTABLES") != 0)
                ist_error(x, c, tr_rnode_get(in, "captureMode"), "captureMode",
                          "expected DEFAULT, IPTABLES or NONE, got \"%s\"", mode);
        }
        const struct tr_rnode *tls = ist_map(x, c, in, "tls");
        size_t st = ist_push_key(c, "tls");
        const char *tmode = NULL;
        if (tls != NULL && ist_str(x, c, tls, "mode", &tmode) && strcmp(tmode, "SIMPLE") != 0 &&
            strcmp(tmode, "MUTUAL") != 0)
            ist_error(x, c, tr_rnode_get(tls, "mode"), "mode",
                      "a sidecar ingress listener terminates SIMPLE or MUTUAL TLS only (as "
                      "Istio's), got %s",
                      tmode);
        else if (tls != NULL && tmode == NULL)
            ist_error(x, c, tls, "mode", "missing required field (SIMPLE or MUTUAL)");
        else if (tls != NULL)
            ist_server_tls_check(x, c, r, tls);
        ist_pop(c, st);
        const struct tr_rnode *pool = ist_map(x, c, in, "connectionPool");
        size_t sc = ist_push_key(c, "connectionPool");
        if (pool != NULL)
            ist_check_pool(x, c, pool, true);
        ist_pop(c, sc);
        ist_pop(c, saved);
    }
}

static void sidecar_check(struct ist_ctx *x, const struct tr_resource *r)
{
    static const struct ist_key keys[] = {
        {"workloadSelector", NULL},
        {"ingress", NULL},
        {"egress", NULL},
        {"outboundTrafficPolicy", NULL},
        {"inboundConnectionPool", NULL},
    };
    static const struct ist_key egress_keys[] = {
        {"port", "per-port egress listeners are not supported yet: the hosts apply to every port"},
        {"bind", "egress bind addresses are not supported yet"},
        {"captureMode", "capture modes are not supported yet"},
        {"hosts", NULL},
    };
    static const struct ist_key otp_keys[] = {
        {"mode", NULL},
        {"egressProxy", "egress proxies are not supported yet"},
    };
    struct ist_cursor c;
    ist_cursor_init(&c, r, "spec");
    if (!IST_KEYS(x, &c, r->spec, keys))
        return;
    const struct tr_rnode *eg = ist_list(x, &c, r->spec, "egress");
    size_t i = 0;
    for (const struct tr_rnode *e = eg ? eg->head : NULL; e; e = e->next, i++) {
        size_t saved = ist_push_key(&c, "egress");
        ist_push_index(&c, i);
        if (IST_KEYS(x, &c, e, egress_keys)) {
            const struct tr_rnode *hosts = ist_list(x, &c, e, "hosts");
            if (hosts == NULL || hosts->n == 0)
                ist_error(x, &c, e, "hosts", "at least one host is required");
            size_t k = 0;
            for (const struct tr_rnode *h = hosts ? hosts->head : NULL; h; h = h->next, k++) {
                const char *s;
                size_t sh = ist_push_key(&c, "hosts");
                ist_push_index(&c, k);
                const char *slash = tr_rnode_str(h, &s) ? strchr(s, '/') : NULL;
                if (slash == NULL || slash == s || slash[1] == '\0')
                    ist_error(x, &c, h, NULL,
                              "expected namespace/host, e.g. \"./*\" or "
                              "\"istio-system/*\"");
                ist_pop(&c, sh);
            }
        }
        ist_pop(&c, saved);
    }
    ingress_check(x, &c, r);
    const struct tr_rnode *icp = ist_map(x, &c, r->spec, "inboundConnectionPool");
    size_t sp = ist_push_key(&c, "inboundConnectionPool");
    if (icp != NULL)
        ist_check_pool(x, &c, icp, true);
    ist_pop(&c, sp);
    const struct tr_rnode *otp = ist_map(x, &c, r->spec, "outboundTrafficPolicy");
    size_t saved = ist_push_key(&c, "outboundTrafficPolicy");
    if (IST_KEYS(x, &c, otp, otp_keys)) {
        const char *m = NULL;
        if (ist_str(x, &c, otp, "mode", &m) && strcmp(m, "ALLOW_ANY") != 0 &&
            strcmp(m, "REGISTRY_ONLY") != 0)
            ist_error(x, &c, tr_rnode_get(otp, "mode"), "mode",
                      "expected ALLOW_ANY or REGISTRY_ONLY, got \"%s\"", m);
        else if (m != NULL && strcmp(m, "ALLOW_ANY") == 0 && !x->o->capture)
            ist_warn(x, &c, tr_rnode_get(otp, "mode"), "mode",
                     "ALLOW_ANY forwards unknown hosts to their original destination, which "
                     "needs traffic capture (--capture): without it unknown hosts get 404");
    }
    ist_pop(&c, saved);
}

/* Is a service in the workload's scope? Its exportTo, then the Sidecar's
 * egress hosts, decided once per compile: the services they
 * name exactly are looked up by host, patterns ("*...") are matched against
 * every service only if there are any, and the outcome is one bit per
 * service (in_scope's answer, unchanged), so a mesh of many services is
 * scoped without walking every egress entry for every service. */
struct egress_scope {
    bool all;    /* no Sidecar, or one without egress */
    uint8_t *in; /* bit per x->svcs index */
};

static void scope_mark(struct egress_scope *e, const struct ist_service *s)
{
    e->in[s->index / 8] |= (uint8_t)(1u << (s->index % 8));
}

static bool egress_scope_build(struct ist_ctx *x, const struct tr_resource *sc,
                               struct egress_scope *e)
{
    memset(e, 0, sizeof(*e));
    const struct tr_rnode *eg = sc ? tr_rnode_get(sc->spec, "egress") : NULL;
    e->all = eg == NULL || eg->kind != TR_RNODE_SEQ;
    if (e->all)
        return true;
    e->in = tr_arena_calloc(x->tmp, x->n_svcs / 8 + 1, 1);
    if (e->in == NULL)
        return ist_oom(x);
    const char *scns = sc->ns ? sc->ns : "default";
    for (const struct tr_rnode *g = eg->head; g; g = g->next) {
        const struct tr_rnode *hosts = tr_rnode_get(g, "hosts");
        for (const struct tr_rnode *h = hosts && hosts->kind == TR_RNODE_SEQ ? hosts->head : NULL;
             h; h = h->next) {
            const char *v;
            if (!tr_rnode_str(h, &v))
                continue;
            const char *slash = strchr(v, '/');
            if (slash == NULL)
                continue;
            size_t nl = (size_t)(slash - v);
            bool any_ns = nl == 1 && v[0] == '*';
            const char *ns = nl == 1 && v[0] == '.' ? scns : v;
            size_t ns_len = ns == scns ? strlen(scns) : nl;
            const char *host = slash + 1;
            if (host[0] != '*') { /* an exact name: host_glob's strcmp */
                for (const struct ist_service *s = tr_strmap_get(&x->svc_by_host, host); s;
                     s = s->same_host)
                    if (any_ns || (strlen(s->ns) == ns_len && strncmp(s->ns, ns, ns_len) == 0))
                        scope_mark(e, s);
                continue;
            }
            for (size_t i = 0; i < x->n_svcs; i++) {
                const struct ist_service *s = x->svcs[i];
                if ((any_ns || (strlen(s->ns) == ns_len && strncmp(s->ns, ns, ns_len) == 0)) &&
                    host_glob(host, s->host))
                    scope_mark(e, s);
            }
        }
    }
    return true;
}

static bool egress_in_scope(struct ist_ctx *x, const struct egress_scope *e,
                            const struct ist_service *s)
{
    /* Istio reads exportTo first; the order does not change the answer. */
    if (!e->all && !(e->in[s->index / 8] & (1u << (s->index % 8))))
        return false;
    return exported_to(s->export_to, s->n_export_to, s->ns, x->wl_ns);
}

/* ----------------------------------------------------------- clusters */

/* "IP:PORT" or "[IPv6]:PORT": where the proxy's admin endpoint listens
 * (a setting of the proxy, sent by it to the control plane). */
static bool admin_address(struct ist_ctx *x, const char *s, struct tr_cfg_addr *out)
{
    const char *colon = strrchr(s, ':');
    char ip[64];
    size_t n = colon ? (size_t)(colon - s) : 0;
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (colon == NULL || n == 0 || n >= sizeof(ip) || *end != '\0' || port <= 0 || port > 65535) {
        tr_diags_add(x->d, TR_DIAG_ERROR, &(struct tr_diag_where){0},
                     "admin address '%s' is not IP:PORT", s);
        return false;
    }
    memcpy(ip, s, n);
    ip[n] = '\0';
    return ist_make_addr(x, ip, (uint32_t)port, out);
}

static const char *spiffe_of(struct ist_ctx *x, const char *ns, const char *sa)
{
    return ist_mprintf(x, "spiffe://%s/ns/%s/sa/%s", x->o->trust_domain, ns, sa);
}

/* Room for one more cluster in the scratch array (doubling). */
static bool cluster_room(struct ist_ctx *x)
{
    if (x->n_clusters < x->cap_clusters)
        return true;
    size_t ncap = x->cap_clusters ? x->cap_clusters * 2 : 32;
    struct tr_cluster_cfg *nv = ist_alloc(x, ncap, sizeof(*nv));
    if (nv == NULL)
        return false;
    if (x->n_clusters)
        memcpy(nv, x->clusters, x->n_clusters * sizeof(*nv));
    x->clusters = nv;
    x->cap_clusters = ncap;
    return true;
}

/* An endpoint given by name (validated as the loader would: RFC 1123). */
static bool dns_endpoint(struct ist_ctx *x, struct tr_endpoint_cfg *e, const char *name,
                         uint32_t port)
{
    size_t n = strlen(name);
    if (n == 0 || n > 253 || port == 0 || port > 65535)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!(isalnum(ch) || ch == '-' || ch == '.'))
            return false;
    }
    char *h = ist_mstrdup(x, name);
    if (h == NULL)
        return false;
    for (char *q = h; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    e->host = h;
    e->port = (uint16_t)port;
    e->addr.text = ist_mprintf(x, "%s:%u", h, port);
    return e->addr.text != NULL;
}

/* The names a rule (else a ServiceEntry) says the server carries, or NULL. */
static const struct tr_rnode *stated_sans(const struct ist_service *s,
                                          const struct ist_cluster_policy *pol)
{
    const struct tr_rnode *sans = pol->sans;
    if ((sans == NULL || sans->kind != TR_RNODE_SEQ || sans->n == 0) && s->res != NULL &&
        strcmp(s->res->kind, "ServiceEntry") == 0)
        sans = tr_rnode_get(s->res->spec, "subjectAltNames");
    return sans != NULL && sans->kind == TR_RNODE_SEQ && sans->n > 0 ? sans : NULL;
}

/* A name the model takes as a SAN (printable, no spaces); others are
 * reported by the resource's check and left out. */
static bool san_ok(const char *v, size_t len)
{
    if (len == 0 || len > 4096 || strlen(v) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] <= ' ' || (unsigned char)v[i] >= 0x7f)
            return false;
    return true;
}

/* Mesh mTLS: the SPIFFE IDs among the stated names replace the endpoints'
 * identities (Istio verifies those instead); other names are reported by
 * the rule's check. */
static void mesh_names(struct ist_ctx *x, struct tr_cluster_cfg *c, const struct ist_service *s,
                       const struct ist_cluster_policy *pol)
{
    const struct tr_rnode *sans = stated_sans(s, pol);
    const char **ids = sans ? ist_malloc(x, sans->n, sizeof(*ids)) : NULL;
    size_t n = 0;
    for (const struct tr_rnode *e = ids ? sans->head : NULL; e; e = e->next) {
        const char *v;
        if (tr_rnode_str(e, &v) && tr_spiffe_id_parse(v, e->len, NULL, NULL) == 0)
            ids[n++] = ist_mstrdup(x, v);
    }
    if (n > 0) {
        c->server_ids = ids;
        c->n_server_ids = n;
    }
}

/* A DestinationRule's SIMPLE or MUTUAL: TLS to the endpoints with a client
 * context. The server must carry one of the rule's subjectAltNames, else
 * the ServiceEntry's, else the SNI, which is the rule's or the host's
 * (Istio takes both from the request; a cluster has one). What cannot be
 * verified fails closed: no endpoint (reported by the rule's check). */
static void originate(struct ist_ctx *x, struct tr_cluster_cfg *c, const struct ist_service *s,
                      const struct ist_cluster_policy *pol)
{
    const char *sni = pol->sni ? pol->sni : s->host[0] != '*' ? s->host : NULL;
    const struct tr_rnode *sans = stated_sans(s, pol);
    size_t n = sans != NULL && !pol->insecure ? sans->n : 0;
    if (pol->client_ctx == NULL || (n == 0 && sni == NULL && !pol->insecure)) {
        c->n_endpoints = 0;
        return;
    }
    c->tls_name = pol->client_ctx;
    c->sni = ist_mstrdup(x, sni);
    c->insecure_skip_verify = pol->insecure;
    c->subject_alt_names = ist_malloc(x, n, sizeof(*c->subject_alt_names));
    for (const struct tr_rnode *e = n ? sans->head : NULL; e && c->subject_alt_names; e = e->next) {
        const char *v;
        if (tr_rnode_str(e, &v) && san_ok(v, e->len))
            c->subject_alt_names[c->n_subject_alt_names++] = ist_mstrdup(x, v);
    }
    if (c->n_subject_alt_names == 0 && sni == NULL && !pol->insecure)
        c->n_endpoints = 0; /* no name left to verify */
}

/* A copy of cluster idx under another name, with endpoints of its own. */
static struct tr_cluster_cfg *cluster_copy(struct ist_ctx *x, uintptr_t idx, const char *name)
{
    if (!cluster_room(x))
        return NULL;
    struct tr_cluster_cfg *c = &x->clusters[x->n_clusters];
    *c = x->clusters[idx];
    c->name = name;
    c->endpoints = ist_malloc(x, c->n_endpoints, sizeof(*c->endpoints));
    if (c->n_endpoints > 0 && c->endpoints == NULL)
        return NULL;
    if (c->n_endpoints > 0)
        memcpy(c->endpoints, x->clusters[idx].endpoints, c->n_endpoints * sizeof(*c->endpoints));
    return c;
}

/* The cluster just filled at x->clusters[n_clusters]: named and counted. */
static const char *cluster_added(struct ist_ctx *x, const char *name)
{
    bool oom = false;
    tr_strmap_put(&x->cluster_by_name, name, (void *)(uintptr_t)(x->n_clusters + 1), &oom);
    if (oom)
        return (void)ist_oom(x), NULL;
    x->n_clusters++;
    return name;
}

const char *ist_cluster_for(struct ist_ctx *x, const struct ist_service *s, size_t pi,
                            const char *subset)
{
    const struct ist_port *port = &s->ports[pi];
    char pb[IST_UTOA_MAX];
    char *name = ist_mjoin(x,
                           (const char *[]){"outbound|", ist_utoa(pb, port->number), "|",
                                            subset ? subset : "", "|", s->host},
                           6);
    if (name == NULL)
        return NULL;
    if (tr_strmap_get(&x->cluster_by_name, name) != NULL)
        return name;
    if (!cluster_room(x))
        return NULL;
    struct tr_cluster_cfg *c = &x->clusters[x->n_clusters];
    tr_cfg_cluster_defaults(c);
    c->name = name;
    c->service = ist_mstrdup(x, s->host);
    c->workload_namespace = ist_mstrdup(x, s->ns);
    struct ist_cursor cur;
    ist_cursor_init(&cur, s->res, NULL);
    c->loc = ist_loc(x, &cur, NULL);

    const struct tr_resource *dr = ist_dr_for(x, s->host, s->ns);
    const struct tr_rnode *sel = NULL;
    if (subset != NULL)
        sel = tr_rnode_get(ist_dr_subset(dr, subset), "labels");
    struct ist_cluster_policy pol;
    ist_policy_apply(x, dr, subset, port->number, &pol);
    c->lb = pol.lb;
    c->connect_timeout_ms = pol.connect_timeout_ms;
    c->pool_idle_timeout_ms = pol.idle_timeout_ms;
    c->breakers = pol.breakers;
    c->max_requests_per_connection = pol.max_requests_per_connection;
    c->max_connection_duration_ms = pol.max_connection_duration_ms;
    if (pol.has_keepalive && (c->tcp_keepalive = ist_malloc(x, 1, sizeof(*c->tcp_keepalive))))
        *c->tcp_keepalive = pol.keepalive;
    if (pol.has_retry_budget && (c->retry_budget = ist_malloc(x, 1, sizeof(*c->retry_budget))))
        *c->retry_budget = pol.retry_budget;
    c->outlier = pol.outlier;
    c->hash = pol.hash;
    /* the model keeps nothing of the resource set: copy the names */
    c->hash.header = ist_mstrdup(x, pol.hash.header);
    c->hash.cookie = ist_mstrdup(x, pol.hash.cookie);
    c->hash.cookie_path = ist_mstrdup(x, pol.hash.cookie_path);
    c->hash.query_param = ist_mstrdup(x, pol.hash.query_param);
    if (c->hash.header != NULL) {
        for (char *q = (char *)c->hash.header; *q; q++)
            *q = (char)tolower((unsigned char)*q);
    }

    struct ist_ep *eps;
    size_t n = ist_service_eps(x, s, pi, &eps);
    /* ServiceEntry resolution DNS / DNS_ROUND_ROBIN: endpoints given by name
     * are resolved by the proxy; with no endpoints, the host itself is. */
    bool dns = s->resolution == IST_RES_DNS || s->resolution == IST_RES_DNS_RR;
    struct ist_ep self_ep;
    if (dns && s->n_insts == 0 && !s->have_slices && s->host[0] != '*') {
        self_ep = (struct ist_ep){
            .ip = s->host, .port = port->target ? port->target : port->number, .inst = NULL};
        eps = &self_ep;
        n = 1;
    }
    struct tr_dns_cfg dns_cfg = c->dns;
    if (dns) {
        dns_cfg.mode = s->resolution == IST_RES_DNS_RR ? TR_DNS_FIRST : TR_DNS_ALL;
        dns_cfg.family = TR_DNS_V4; /* what Istio's proxies resolve by default */
    }
    c->endpoints = ist_malloc(x, n, sizeof(*c->endpoints));
    if (c->endpoints == NULL)
        return NULL;
    const struct ist_inst **insts = ist_alloc(x, n + 1, sizeof(*insts));
    if (insts == NULL)
        return NULL;
    bool all_sidecar = n > 0;
    const char **ids = ist_malloc(x, n, sizeof(*ids));
    size_t n_ids = 0;
    for (size_t i = 0; i < n && c->n_endpoints < 10000; i++) {
        const struct ist_inst *in = eps[i].inst;
        if (sel != NULL && (in == NULL || !ist_labels_match(sel, in->labels)))
            continue;
        struct tr_endpoint_cfg *e = &c->endpoints[c->n_endpoints];
        tr_cfg_endpoint_defaults(e);
        if (!ist_make_addr(x, eps[i].ip, eps[i].port, &e->addr)) {
            if (!dns)
                continue; /* a name where none may be (reported with the entry) */
            if (!dns_endpoint(x, e, eps[i].ip, eps[i].port))
                continue;
        }
        e->weight = in && in->weight ? in->weight : 1;
        e->workload = in && in->name ? ist_mstrdup(x, in->name) : NULL;
        e->loc = c->loc;
        insts[c->n_endpoints] = in;
        c->n_endpoints++;
        /* Istio's auto mTLS: plaintext to an endpoint without a sidecar or
         * whose PeerAuthentication says DISABLE. */
        if (in == NULL || !in->sidecar || ist_peer_auth_plaintext(x, in, eps[i].port))
            all_sidecar = false;
        if (in != NULL && ids != NULL && in->sa != NULL) {
            const char *id = spiffe_of(x, in->ns, in->sa);
            bool dup = false;
            for (size_t k = 0; k < n_ids && id; k++)
                dup = dup || strcmp(ids[k], id) == 0;
            if (id && !dup)
                ids[n_ids++] = id;
        }
    }
    if (pol.warmup.duration_ms > 0)
        c->warmup = pol.warmup;
    ist_locality_apply(x, c, insts, &pol);
    /* DNS settings only where an endpoint is a name (IP addresses need none). */
    for (size_t i = 0; dns && i < c->n_endpoints; i++) {
        if (c->endpoints[i].host != NULL) {
            c->dns = dns_cfg;
            break;
        }
    }
    /* PASSTHROUGH, resolution NONE (with capture): each connection goes to
     * its original destination (the registry's endpoints still decide auto
     * mTLS and the identities to expect). */
    if (x->o->capture && (pol.original_dst || s->resolution == IST_RES_NONE)) {
        c->original_destination = true;
        c->n_endpoints = 0;
        c->n_locality_weights = 0;
        c->warmup.duration_ms = 0;
        struct tr_cluster_cfg d;
        tr_cfg_cluster_defaults(&d);
        c->dns = d.dns; /* no names to resolve */
        if (c->lb == TR_LB_RING_HASH || c->lb == TR_LB_MAGLEV)
            c->lb = TR_LB_LEAST_REQUEST;
    }
    bool mtls = false;
    if (pol.tls == IST_TLS_ISTIO_MUTUAL)
        mtls = true;
    else if (pol.tls == IST_TLS_AUTO)
        mtls = all_sidecar && !s->external;
    else if (pol.tls == IST_TLS_UNSUPPORTED)
        c->n_endpoints = 0; /* fail closed: reported by the rule's check */
    else if (pol.tls == IST_TLS_SIMPLE || pol.tls == IST_TLS_MUTUAL)
        originate(x, c, s, &pol);
    if (mtls) {
        c->tls_name = "mesh";
        c->server_ids = ids;
        c->n_server_ids = n_ids;
        mesh_names(x, c, s, &pol);
        c->sni = pol.sni ? ist_mstrdup(x, pol.sni) : NULL;
        x->uses_mesh_tls = true;
    }
    switch (port->proto) {
    case IST_P_HTTP2:
    case IST_P_GRPC:
        c->protocol = TR_UPROTO_HTTP2;
        break;
    case IST_P_HTTP:
        c->protocol = pol.h2_upgrade && mtls ? TR_UPROTO_HTTP2 : TR_UPROTO_HTTP1;
        break;
    default:
        c->protocol = mtls ? TR_UPROTO_ORIGINAL : TR_UPROTO_HTTP1;
        break;
    }
    if (pol.use_client_protocol)
        c->protocol = TR_UPROTO_ORIGINAL;
    if (c->protocol == TR_UPROTO_ORIGINAL && !mtls)
        c->protocol = TR_UPROTO_HTTP1; /* "original" needs a mesh hop or an h2 upstream */
    if (c->protocol != TR_UPROTO_HTTP1 && pol.h2_max_streams)
        c->h2_max_streams = pol.h2_max_streams;
    return cluster_added(x, name);
}

/* https: TLS to the key server with the system's trust store, the URL's
 * host sent as SNI and verified as the server's name (no mesh identity:
 * the application itself serves TLS). */
static void key_server_tls(struct ist_ctx *x, struct tr_cluster_cfg *c, const char *host)
{
    c->tls_name = ist_tls_context(x, TR_TLSK_CLIENT, "system-roots", NULL, false, false)
                      ? "system-roots"
                      : NULL;
    c->sni = ist_mstrdup(x, host);
    c->server_ids = NULL;
    c->n_server_ids = 0;
    c->subject_alt_names = NULL;
    c->n_subject_alt_names = 0;
    c->insecure_skip_verify = false;
    c->protocol = TR_UPROTO_HTTP1;
    if (c->tls_name == NULL)
        c->n_endpoints = 0; /* fail closed */
}

const char *ist_jwks_cluster(struct ist_ctx *x, const struct ist_service *s, size_t pi,
                             const char *host, uint32_t port, bool https,
                             const struct tr_cfg_loc *loc)
{
    uintptr_t base = 0; /* index + 1 of the service port's cluster */
    if (s != NULL) {
        const char *name = ist_cluster_for(x, s, pi, NULL);
        if (name == NULL)
            return NULL;
        base = (uintptr_t)tr_strmap_get(&x->cluster_by_name, name);
        const char *ctx = x->clusters[base - 1].tls_name;
        /* http, or a DestinationRule that originates TLS (SIMPLE, MUTUAL):
         * the outbound cluster as it is. */
        if (!https || (ctx != NULL && strcmp(ctx, "mesh") != 0))
            return name;
    }
    const char *name = ist_mprintf(x, "jwks|%u|%s", (unsigned)port, s ? s->host : host);
    if (name == NULL || tr_strmap_get(&x->cluster_by_name, name) != NULL)
        return name;
    struct tr_cluster_cfg *c;
    if (base != 0) {
        if ((c = cluster_copy(x, base - 1, name)) == NULL)
            return NULL;
    } else {
        /* Not in the registry: the proxy resolves the host itself, as
         * istiod fetches such keys itself. */
        if (!cluster_room(x))
            return NULL;
        c = &x->clusters[x->n_clusters];
        tr_cfg_cluster_defaults(c);
        c->name = name;
        c->service = ist_mstrdup(x, host);
        c->loc = *loc;
        c->protocol = TR_UPROTO_HTTP1;
        if ((c->endpoints = ist_malloc(x, 1, sizeof(*c->endpoints))) == NULL)
            return NULL;
        struct tr_endpoint_cfg *e = &c->endpoints[0];
        tr_cfg_endpoint_defaults(e);
        e->loc = *loc;
        if (ist_make_addr(x, host, port, &e->addr))
            c->n_endpoints = 1;
        else if (dns_endpoint(x, e, host, port)) {
            c->n_endpoints = 1;
            c->dns.mode = TR_DNS_ALL;
            c->dns.family = TR_DNS_V4; /* what Istio's proxies resolve by default */
        }
    }
    if (https)
        key_server_tls(x, c, host);
    return cluster_added(x, name);
}

/* A cluster with no endpoint (every connection refused): a TCP rule that
 * routes to an unknown host or subset. */
const char *ist_empty_cluster(struct ist_ctx *x, const struct ist_service *s, size_t pi)
{
    const char *name = ist_cluster_for(x, s, pi, NULL);
    const char *empty = ist_mprintf(x, "blackhole|%u|%s", s->ports[pi].number, s->host);
    if (name == NULL || empty == NULL || tr_strmap_get(&x->cluster_by_name, empty) != NULL)
        return empty;
    uintptr_t idx = (uintptr_t)tr_strmap_get(&x->cluster_by_name, name) - 1;
    if (!cluster_room(x))
        return NULL;
    struct tr_cluster_cfg *c = &x->clusters[x->n_clusters];
    *c = x->clusters[idx];
    c->name = empty;
    c->endpoints = NULL;
    c->n_endpoints = 0;
    return cluster_added(x, empty);
}

/* AUTO_PASSTHROUGH (gateway.c): outbound|PORT|SUBSET|HOST as
 * outbound_.PORT_.SUBSET_.HOST, Istio's name for it in an SNI, without TLS
 * of its own: the bytes are a remote sidecar's mTLS, relayed untouched to
 * the destination's sidecar, which terminates them. */
const char *ist_passthrough_cluster(struct ist_ctx *x, const struct ist_service *s, size_t pi,
                                    const char *subset)
{
    const char *name = ist_cluster_for(x, s, pi, subset);
    const char *pt =
        ist_mprintf(x, "outbound_.%u_.%s_.%s", s->ports[pi].number, subset ? subset : "", s->host);
    if (name == NULL || pt == NULL || tr_strmap_get(&x->cluster_by_name, pt) != NULL)
        return pt;
    uintptr_t idx = (uintptr_t)tr_strmap_get(&x->cluster_by_name, name) - 1;
    if (!cluster_room(x))
        return NULL;
    struct tr_cluster_cfg *c = &x->clusters[x->n_clusters];
    *c = x->clusters[idx];
    c->name = pt;
    c->tls_name = NULL;
    c->server_ids = NULL;
    c->n_server_ids = 0;
    c->sni = NULL;
    c->subject_alt_names = NULL;
    c->n_subject_alt_names = 0;
    c->insecure_skip_verify = false;
    bool oom = false;
    tr_strmap_put(&x->cluster_by_name, pt, (void *)(uintptr_t)(x->n_clusters + 1), &oom);
    x->n_clusters++;
    return oom ? (void)ist_oom(x), NULL : pt;
}

/* ------------------------------------------------------ virtual hosts */

struct port_tab {
    uint32_t port;
    bool http;    /* some service speaks HTTP (or may: unknown protocol) */
    bool unknown; /* some service's protocol is not named: detect per connection */
    const char *tcp_cluster;
    struct tr_weighted_cluster_cfg *tcp_split; /* a tcp rule's weighted destinations */
    size_t n_tcp_split;
    const struct ist_service *tcp_svc;
    size_t tcp_svc_pi;
    bool tcp_svc_tls; /* tcp_svc's port here is TLS (https, tls) */
    /* With capture: tcp_svc's tcp rules for destinationSubnets and the TLS
     * services' tls rules for them (each with its service's port index, for
     * a rule to nowhere); a virtual listener claims each block they name
     * (at most subnet_room). */
    struct ist_subnet_route *subnet_routes;
    size_t n_subnet_routes;
    struct ist_tls_rule *tls_subnet;
    const struct ist_service **tls_subnet_svc;
    size_t *tls_subnet_pi;
    size_t n_tls_subnet, cap_tls_subnet;
    size_t subnet_room;
    /* TLS services of the port (protocol HTTPS or TLS): routed by SNI when
     * one has a VirtualService with tls rules or several share the port. */
    const struct ist_service **tls_svcs;
    size_t *tls_pi;
    size_t n_tls, cap_tls;
    bool sni_wanted;
    bool plain_tcp; /* a TCP service (or one of unknown protocol) shares the port */
    struct tr_vhost_cfg *vhosts;
    size_t n_vhosts, cap_vhosts;
    struct tr_strmap domains;
};

struct vs_index {
    struct tr_strmap exact;          /* host -> resource */
    const struct tr_resource **wild; /* wildcard hosts, in order */
    const char **wild_host;
    size_t n_wild, cap_wild;
};

static void index_vs(struct ist_ctx *x, struct vs_index *ix)
{
    tr_strmap_init(&ix->exact, x->tmp);
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "VirtualService", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        if (ist_refused(x, r) || !ist_vs_for_mesh(r) || !res_exported_to(r, x->wl_ns))
            continue;
        const struct tr_rnode *hosts = tr_rnode_get(r->spec, "hosts");
        size_t k = 0;
        for (const struct tr_rnode *h = hosts ? hosts->head : NULL; h; h = h->next, k++) {
            const char *s;
            if (!tr_rnode_str(h, &s))
                continue;
            const char *fq = ist_fqdn(x, s, r->ns ? r->ns : "default");
            if (fq == NULL)
                return;
            if (fq[0] == '*') {
                if (ix->n_wild == ix->cap_wild) {
                    size_t nc = ix->cap_wild ? ix->cap_wild * 2 : 8;
                    const struct tr_resource **nr = ist_alloc(x, nc, sizeof(*nr));
                    const char **nh = ist_alloc(x, nc, sizeof(*nh));
                    if (nr == NULL || nh == NULL)
                        return;
                    if (ix->n_wild) {
                        memcpy(nr, ix->wild, ix->n_wild * sizeof(*nr));
                        memcpy(nh, ix->wild_host, ix->n_wild * sizeof(*nh));
                    }
                    ix->wild = nr;
                    ix->wild_host = nh;
                    ix->cap_wild = nc;
                }
                ix->wild[ix->n_wild] = r;
                ix->wild_host[ix->n_wild++] = fq;
                continue;
            }
            bool oom = false;
            const struct tr_resource *prev = tr_strmap_put(&ix->exact, fq, (void *)r, &oom);
            if (oom)
                return (void)ist_oom(x);
            if (prev != NULL && prev != r) {
                struct ist_cursor c;
                ist_cursor_init(&c, r, "spec.hosts");
                ist_push_index(&c, k);
                ist_warn(x, &c, h, NULL,
                         "host %s already has VirtualService %s/%s (first in load order): this "
                         "one is not used for it",
                         fq, prev->ns ? prev->ns : "default", prev->name);
            }
        }
    }
}

static const struct tr_resource *vs_for(const struct vs_index *ix, const char *host)
{
    const struct tr_resource *r = tr_strmap_get(&ix->exact, host);
    if (r != NULL)
        return r;
    size_t best = 0;
    for (size_t i = 0; i < ix->n_wild; i++) {
        size_t l = strlen(ix->wild_host[i]);
        if (host_glob(ix->wild_host[i], host) && l > best) {
            best = l;
            r = ix->wild[i];
        }
    }
    return r;
}

static bool add_domain(struct ist_ctx *x, struct port_tab *pt, const char **v, size_t *n,
                       const char *d)
{
    if (d == NULL)
        return false;
    bool oom = false;
    if (tr_strmap_put(&pt->domains, d, (void *)d, &oom) != NULL)
        return true; /* another service on this port already answers to it */
    if (oom)
        return ist_oom(x);
    v[(*n)++] = d;
    return true;
}

static bool default_route(struct ist_ctx *x, const struct ist_service *s, size_t pi,
                          struct ist_routes *rs)
{
    struct tr_route_cfg *r = ist_route_new(x, rs);
    if (r == NULL)
        return false;
    r->name = "default";
    r->clusters = ist_malloc(x, 1, sizeof(*r->clusters));
    const char *cl = ist_cluster_for(x, s, pi, NULL);
    if (r->clusters == NULL || cl == NULL)
        return false;
    r->clusters[0] = (struct tr_weighted_cluster_cfg){.cluster_name = cl, .weight = 1};
    r->n_clusters = 1;
    return true;
}

static bool add_vhost(struct ist_ctx *x, struct port_tab *pt, const struct vs_index *ix,
                      const struct ist_service *s, size_t pi)
{
    uint32_t port = s->ports[pi].number;
    const char *cand[8];
    size_t nc = 0;
    cand[nc++] = ist_mstrdup(x, s->host); /* the model keeps nothing of the scratch arena */
    if (s->name != NULL) {
        cand[nc++] = ist_mprintf(x, "%s.%s.svc", s->name, s->ns);
        cand[nc++] = ist_mprintf(x, "%s.%s", s->name, s->ns);
        if (strcmp(s->ns, x->wl_ns) == 0)
            cand[nc++] = ist_mprintf(x, "%s", s->name);
    }
    for (size_t i = 0; i < s->n_vips; i++) /* a client that dials the service's address */
        cand[nc++] = ist_mstrdup(x, s->vips[i]);
    const char **domains = ist_malloc(x, nc * 2, sizeof(*domains));
    if (domains == NULL)
        return false;
    size_t nd = 0;
    for (size_t i = 0; i < nc; i++) {
        if (!add_domain(x, pt, domains, &nd, cand[i]) ||
            !add_domain(x, pt, domains, &nd, host_port(x, "", cand[i], ":", port)))
            return false;
    }
    if (nd == 0)
        return true;
    struct ist_routes rs = {0};
    struct ist_vhost vh = {.svc = s, .port = port};
    const struct tr_resource *vs = vs_for(ix, s->host);
    bool catch_all = false;
    if (vs != NULL) {
        x->quiet = true;
        catch_all = ist_vs_routes(x, vs, &vh, &rs);
        x->quiet = false;
    }
    if (!catch_all && !default_route(x, s, pi, &rs))
        return false;
    if (pt->n_vhosts == pt->cap_vhosts) {
        size_t ncap = pt->cap_vhosts ? pt->cap_vhosts * 2 : 8;
        struct tr_vhost_cfg *nv = ist_alloc(x, ncap, sizeof(*nv));
        if (nv == NULL)
            return false;
        if (pt->n_vhosts)
            memcpy(nv, pt->vhosts, pt->n_vhosts * sizeof(*nv));
        pt->vhosts = nv;
        pt->cap_vhosts = ncap;
    }
    struct tr_vhost_cfg *v = &pt->vhosts[pt->n_vhosts++];
    memset(v, 0, sizeof(*v));
    v->name = host_port(x, "", s->host, ":", port);
    v->domains = domains;
    v->n_domains = nd;
    v->routes = ist_malloc(x, rs.n, sizeof(*v->routes));
    if (v->routes == NULL)
        return false;
    memcpy(v->routes, rs.v, rs.n * sizeof(*v->routes));
    v->n_routes = rs.n;
    struct ist_cursor c;
    ist_cursor_init(&c, vs ? vs : s->res, vs ? "spec" : NULL);
    v->loc = ist_loc(x, &c, NULL);
    return true;
}

/* ------------------------------------------------ TLS routes by SNI */

static bool add_tls_svc(struct ist_ctx *x, const struct vs_index *ix, struct port_tab *pt,
                        const struct ist_service *s, size_t pi)
{
    if (pt->n_tls == pt->cap_tls) {
        size_t nc = pt->cap_tls ? pt->cap_tls * 2 : 4;
        const struct ist_service **v = ist_alloc(x, nc, sizeof(*v));
        size_t *vp = ist_alloc(x, nc, sizeof(*vp));
        if (v == NULL || vp == NULL)
            return false;
        if (pt->n_tls) {
            memcpy(v, pt->tls_svcs, pt->n_tls * sizeof(*v));
            memcpy(vp, pt->tls_pi, pt->n_tls * sizeof(*vp));
        }
        pt->tls_svcs = v;
        pt->tls_pi = vp;
        pt->cap_tls = nc;
    }
    pt->tls_svcs[pt->n_tls] = s;
    pt->tls_pi[pt->n_tls++] = pi;
    const struct tr_resource *vs = vs_for(ix, s->host);
    const struct tr_rnode *tls = vs ? tr_rnode_get(vs->spec, "tls") : NULL;
    if ((tls != NULL && tls->n > 0) || pt->n_tls > 1)
        pt->sni_wanted = true;
    /* Room for the blocks its tls rules may claim (capture only). */
    for (const struct tr_rnode *r = x->o->capture && tls && tls->kind == TR_RNODE_SEQ ? tls->head
                                                                                      : NULL;
         r; r = r->next) {
        const struct tr_rnode *ms = tr_rnode_get(r, "match");
        for (const struct tr_rnode *m = ms && ms->kind == TR_RNODE_SEQ ? ms->head : NULL; m;
             m = m->next) {
            const struct tr_rnode *sn = tr_rnode_get(m, "destinationSubnets");
            pt->subnet_room += sn && sn->kind == TR_RNODE_SEQ ? sn->n : 0;
        }
    }
    return true;
}

static bool tls_subnet_push(struct ist_ctx *x, struct port_tab *pt, const struct ist_tls_rule *r,
                            const struct ist_service *s, size_t pi)
{
    if (pt->n_tls_subnet == pt->cap_tls_subnet) {
        size_t nc = pt->cap_tls_subnet ? pt->cap_tls_subnet * 2 : 4;
        struct ist_tls_rule *v = ist_alloc(x, nc, sizeof(*v));
        const struct ist_service **vs = ist_alloc(x, nc, sizeof(*vs));
        size_t *vp = ist_alloc(x, nc, sizeof(*vp));
        if (v == NULL || vs == NULL || vp == NULL)
            return false;
        if (pt->n_tls_subnet) {
            memcpy(v, pt->tls_subnet, pt->n_tls_subnet * sizeof(*v));
            memcpy(vs, pt->tls_subnet_svc, pt->n_tls_subnet * sizeof(*vs));
            memcpy(vp, pt->tls_subnet_pi, pt->n_tls_subnet * sizeof(*vp));
        }
        pt->tls_subnet = v;
        pt->tls_subnet_svc = vs;
        pt->tls_subnet_pi = vp;
        pt->cap_tls_subnet = nc;
    }
    pt->tls_subnet[pt->n_tls_subnet] = *r;
    pt->tls_subnet_svc[pt->n_tls_subnet] = s;
    pt->tls_subnet_pi[pt->n_tls_subnet++] = pi;
    return true;
}

/* A TCP port with TLS services, routed by SNI without terminating: for
 * each TLS service in registry order, its VirtualService's tls rules that
 * apply here (first match wins), then its own host name to where its
 * traffic goes without SNI routing (its tcp rules, else the service). The
 * listener's tcp_cluster(s) stay the default for the rest (other names, no
 * SNI, not TLS), as before. */
static bool sni_rules(struct ist_ctx *x, const struct vs_index *ix, struct port_tab *pt,
                      struct tr_listener_cfg *l)
{
    struct ist_sni_rules rs = {0};
    for (size_t i = 0; i < pt->n_tls; i++) {
        const struct ist_service *s = pt->tls_svcs[i];
        size_t pi = pt->tls_pi[i];
        const struct tr_resource *vs = vs_for(ix, s->host);
        struct ist_vhost vh = {.svc = s, .port = pt->port};
        struct tr_weighted_cluster_cfg *split = NULL;
        size_t n_split = 0;
        bool routed = false;
        if (vs != NULL) {
            struct ist_tls_rule *tr = NULL;
            size_t ntr = 0, cap = 0;
            x->quiet = true;
            bool ok = ist_vs_tls_rules(x, vs, &vh, &tr, &ntr, &cap);
            routed = ist_vs_tcp_clusters(x, vs, s, pt->port, &split, &n_split);
            x->quiet = false;
            if (!ok)
                return false;
            for (size_t k = 0; k < ntr; k++) {
                if (tr[k].n_subnets > 0) {
                    if (!tls_subnet_push(x, pt, &tr[k], s, pi))
                        return false;
                    continue; /* for the listeners of its blocks (subnet_listeners) */
                }
                const char *nowhere = tr[k].n_split == 0 ? ist_empty_cluster(x, s, pi) : NULL;
                if (!ist_sni_rules_add(x, &rs, tr[k].names, tr[k].n_names, tr[k].split,
                                       tr[k].n_split, nowhere, tr[k].loc))
                    return false;
            }
        }
        struct tr_weighted_cluster_cfg own = {.cluster = -1, .weight = 1};
        if (!routed) {
            own.cluster_name = ist_cluster_for(x, s, pi, NULL);
            split = &own;
            n_split = 1;
        }
        const char *nowhere = n_split == 0 ? ist_empty_cluster(x, s, pi) : NULL;
        struct ist_cursor c;
        ist_cursor_init(&c, s->res, NULL);
        const char *host = s->host;
        if (!ist_sni_rules_add(x, &rs, &host, 1, split, n_split, nowhere, ist_loc(x, &c, NULL)))
            return false;
    }
    if (rs.overflow) {
        struct ist_cursor c;
        ist_cursor_init(&c, pt->tls_svcs[0]->res, NULL);
        ist_warn(x, &c, NULL, NULL,
                 "port %u: more than %d SNI rules; the rest go to the port's default", pt->port,
                 IST_MAX_SNI_RULES);
    }
    /* Only TLS services here: a client that has not sent its ClientHello
     * yet is slow, not a server-first protocol; wait as for a request
     * rather than sending it to the default after 100 ms. */
    if (!pt->plain_tcp)
        l->detect_timeout_ms = 10000;
    return ist_sni_rules_copy(x, &rs, l);
}

/* ------------------------------------------------------------ the model */

/* The Sidecar's outboundTrafficPolicy: REGISTRY_ONLY (true) or ALLOW_ANY. */
static bool registry_only_for(const struct tr_resource *sc)
{
    const char *mode;
    const struct tr_rnode *otp = sc ? tr_rnode_get(sc->spec, "outboundTrafficPolicy") : NULL;
    /* A policy written without a mode is the enum's zero, REGISTRY_ONLY; no
     * policy at all is the mesh's default, ALLOW_ANY. */
    if (otp == NULL || tr_rnode_is_null(otp))
        return false;
    return !tr_rnode_str(tr_rnode_get(otp, "mode"), &mode) || strcmp(mode, "REGISTRY_ONLY") == 0;
}

static int port_order(const void *a, const void *b)
{
    const struct port_tab *x = *(const struct port_tab *const *)a;
    const struct port_tab *y = *(const struct port_tab *const *)b;
    return (x->port > y->port) - (x->port < y->port);
}

/* The outbound ports in use: an open-addressed table (a mesh has a few
 * ports; a table of all 65,535 would be zeroed for every workload) and
 * the list in the order first seen. */
struct port_set {
    struct port_tab **slot; /* cap, a power of two, at most half full */
    size_t cap;
    struct port_tab **list;
    size_t n;
};

static struct port_tab **port_slot(struct port_tab **slot, size_t cap, uint32_t port)
{
    size_t i = (port * 2654435761u) & (cap - 1);
    while (slot[i] != NULL && slot[i]->port != port)
        i = (i + 1) & (cap - 1);
    return &slot[i];
}

/* The table of port, made when there is none; NULL when out of memory. */
static struct port_tab *port_get(struct ist_ctx *x, struct port_set *ps, uint32_t port)
{
    if (ps->cap != 0) {
        struct port_tab *pt = *port_slot(ps->slot, ps->cap, port);
        if (pt != NULL)
            return pt;
    }
    if ((ps->n + 1) * 2 > ps->cap) {
        size_t nc = ps->cap ? ps->cap * 2 : 32;
        struct port_tab **ns = ist_alloc(x, nc, sizeof(*ns));
        struct port_tab **nl = ist_alloc(x, nc / 2, sizeof(*nl));
        if (ns == NULL || nl == NULL)
            return NULL;
        for (size_t k = 0; k < ps->n; k++)
            *port_slot(ns, nc, ps->list[k]->port) = ps->list[k];
        if (ps->n)
            memcpy(nl, ps->list, ps->n * sizeof(*nl));
        ps->slot = ns;
        ps->list = nl;
        ps->cap = nc;
    }
    struct port_tab *pt = ist_alloc(x, 1, sizeof(*pt));
    if (pt == NULL)
        return NULL;
    pt->port = port;
    tr_strmap_init(&pt->domains, x->tmp);
    *port_slot(ps->slot, ps->cap, port) = pt;
    ps->list[ps->n++] = pt;
    return pt;
}

/* One block a subnet listener claims: the first tcp rule that names it
 * (NULL: none), and the tls rules that name it, as sni_routes. */
struct subnet_claim {
    const char *block;
    const struct ist_subnet_route *tcp;
    struct ist_sni_rules rs;
};

static struct subnet_claim *claim_of(struct ist_ctx *x, struct tr_strmap *ix,
                                     struct subnet_claim *v, size_t *n, size_t room,
                                     const char *block)
{
    struct subnet_claim *c = tr_strmap_get(ix, block);
    if (c != NULL || *n == room)
        return c;
    bool oom = false;
    c = &v[(*n)++];
    *c = (struct subnet_claim){.block = block};
    tr_strmap_put(ix, block, c, &oom);
    return oom ? NULL : c;
}

/* Capture: a virtual listener for each block that the port's tcp and tls
 * rules name in destinationSubnets, claiming it on the port (the most
 * specific block wins, before the port's own listener l: Envoy's
 * destination_prefix_ranges, which decide before the SNI). There, a tls
 * rule naming the block routes by SNI; what none takes goes to the first
 * tcp rule naming it, else where l sends it. Not on a port that also
 * carries HTTP: the blocks' HTTP traffic would lose its routing. */
static bool subnet_listeners(struct ist_ctx *x, const struct port_tab *pt,
                             const struct tr_listener_cfg *l)
{
    if (pt->n_subnet_routes == 0 && pt->n_tls_subnet == 0)
        return true;
    if (pt->http) {
        const struct ist_service *s = pt->tcp_svc ? pt->tcp_svc : pt->tls_svcs[0];
        struct ist_cursor c;
        ist_cursor_init(&c, s->res, NULL);
        ist_warn(x, &c, NULL, NULL,
                 "port %u also carries HTTP services: the destinationSubnets of the tcp and "
                 "tls routes of %s are not applied on it",
                 pt->port, s->host);
        return true;
    }
    size_t room = pt->subnet_room, n = 0;
    struct subnet_claim *v = ist_malloc(x, room ? room : 1, sizeof(*v));
    struct tr_strmap ix;
    tr_strmap_init(&ix, x->tmp);
    if (v == NULL)
        return false;
    for (size_t k = 0; k < pt->n_subnet_routes; k++) {
        const struct ist_subnet_route *r = &pt->subnet_routes[k];
        for (size_t b = 0; b < r->n_subnets; b++) {
            struct subnet_claim *c = claim_of(x, &ix, v, &n, room, r->subnets[b]);
            if (c != NULL && c->tcp == NULL)
                c->tcp = r;
        }
    }
    for (size_t k = 0; k < pt->n_tls_subnet; k++) {
        const struct ist_tls_rule *t = &pt->tls_subnet[k];
        const char *nowhere =
            t->n_split == 0 ? ist_empty_cluster(x, pt->tls_subnet_svc[k], pt->tls_subnet_pi[k])
                            : NULL;
        for (size_t b = 0; b < t->n_subnets; b++) {
            struct subnet_claim *c = claim_of(x, &ix, v, &n, room, t->subnets[b]);
            if (c != NULL && !ist_sni_rules_add(x, &c->rs, t->names, t->n_names, t->split,
                                                t->n_split, nowhere, t->loc))
                return false;
        }
    }
    struct tr_config *cfg = x->cfg;
    for (size_t k = 0; k < n; k++) {
        struct subnet_claim *c = &v[k];
        struct tr_listener_cfg *sl = &cfg->listeners[cfg->n_listeners++];
        tr_cfg_listener_defaults(sl);
        sl->name = ist_mprintf(x, "outbound|%u|%s", pt->port, c->block);
        sl->direction = TR_DIR_OUTBOUND;
        sl->bind = false;
        sl->protocol = TR_LPROTO_TCP;
        sl->detect_timeout_ms = l->detect_timeout_ms;
        sl->destination_prefixes = ist_malloc(x, 1, sizeof(*sl->destination_prefixes));
        if (sl->name == NULL || sl->destination_prefixes == NULL ||
            !ist_make_addr(x, "0.0.0.0", pt->port, &sl->addr))
            return false;
        sl->destination_prefixes[0] = c->block;
        sl->n_destination_prefixes = 1;
        const struct ist_subnet_route *r = c->tcp;
        if (r != NULL) {
            sl->loc = r->loc;
            if (r->n_split == 0)
                sl->tcp_cluster_name = ist_empty_cluster(x, pt->tcp_svc, pt->tcp_svc_pi);
            else if (r->n_split == 1)
                sl->tcp_cluster_name = r->split[0].cluster_name;
            else {
                sl->tcp_clusters = r->split;
                sl->n_tcp_clusters = r->n_split;
            }
        } else {
            sl->loc = c->rs.n > 0 ? c->rs.v[0].loc : l->loc;
            sl->tcp_cluster_name = l->tcp_cluster_name;
            sl->tcp_clusters = l->tcp_clusters;
            sl->n_tcp_clusters = l->n_tcp_clusters;
        }
        if (!ist_sni_rules_copy(x, &c->rs, sl))
            return false;
    }
    return true;
}

static bool outbound(struct ist_ctx *x)
{
    const struct tr_resource *sc = sidecar_for(x);
    bool registry_only = registry_only_for(sc);
    struct vs_index ix = {0};
    index_vs(x, &ix);
    struct port_set ports = {0};
    struct egress_scope scope;
    if (!egress_scope_build(x, sc, &scope))
        return false;
    for (size_t i = 0; i < x->n_svcs; i++) {
        /* A Sidecar's scope is a few services of many: skip empty bytes. */
        if (!scope.all && (i % 8) == 0 && scope.in[i / 8] == 0) {
            i += 7;
            continue;
        }
        const struct ist_service *s = x->svcs[i];
        if (!egress_in_scope(x, &scope, s) || ist_refused(x, s->res))
            continue;
        for (size_t pi = 0; pi < s->n_ports; pi++) {
            const struct ist_port *p = &s->ports[pi];
            struct port_tab *pt = port_get(x, &ports, p->number);
            if (pt == NULL)
                return false;
            bool tcpish = p->proto == IST_P_TCP || p->proto == IST_P_TLS;
            if (p->proto == IST_P_TLS && !add_tls_svc(x, &ix, pt, s, pi))
                return false;
            if (p->proto == IST_P_TCP || p->proto == IST_P_UNKNOWN)
                pt->plain_tcp = true;
            if (tcpish || p->proto == IST_P_UNKNOWN) {
                if (pt->tcp_svc == NULL) {
                    pt->tcp_svc = s;
                    pt->tcp_svc_pi = pi;
                    pt->tcp_svc_tls = p->proto == IST_P_TLS;
                    const struct tr_resource *vs = vs_for(&ix, s->host);
                    bool routed = false;
                    if (vs != NULL) {
                        x->quiet = true;
                        routed = ist_vs_tcp_clusters(x, vs, s, p->number, &pt->tcp_split,
                                                     &pt->n_tcp_split);
                        if (x->o->capture)
                            pt->n_subnet_routes =
                                ist_vs_tcp_subnet_routes(x, vs, s, p->number, &pt->subnet_routes);
                        x->quiet = false;
                    }
                    if (!routed)
                        pt->tcp_cluster = ist_cluster_for(x, s, pi, NULL);
                    else if (pt->n_tcp_split == 0)
                        pt->tcp_cluster = ist_empty_cluster(x, s, pi); /* fail closed */
                    else if (pt->n_tcp_split == 1)
                        pt->tcp_cluster = pt->tcp_split[0].cluster_name;
                } else if (tcpish && !(pt->tcp_svc_tls && p->proto == IST_P_TLS)) {
                    /* (two TLS services: told apart by SNI, see sni_rules) */
                    struct ist_cursor c;
                    ist_cursor_init(&c, s->res, NULL);
                    ist_warn(x, &c, NULL, NULL,
                             "TCP port %u is also used by %s: without traffic capture one "
                             "listener per port reaches one TCP service, so %s is not "
                             "reachable on it",
                             p->number, pt->tcp_svc->host, s->host);
                }
            }
            if (!tcpish) {
                pt->http = true;
                pt->unknown = pt->unknown || p->proto == IST_P_UNKNOWN;
                if (!add_vhost(x, pt, &ix, s, pi))
                    return false;
            }
        }
    }
    if (ports.n > 1)
        qsort(ports.list, ports.n, sizeof(*ports.list), port_order);
    size_t nl = ports.n, nt = 0;
    for (size_t k = 0; k < ports.n; k++) {
        struct port_tab *pt = ports.list[k];
        nt += pt->http;
        for (size_t r = 0; r < pt->n_subnet_routes; r++)
            pt->subnet_room += pt->subnet_routes[r].n_subnets;
        nl += pt->subnet_room;
    }
    struct tr_config *cfg = x->cfg;
    /* room for the inbound (8) and gateway (64) listeners that follow */
    cfg->listeners = ist_malloc(x, nl + 72, sizeof(*cfg->listeners));
    cfg->route_tables = ist_malloc(x, nt + 72, sizeof(*cfg->route_tables));
    if (cfg->listeners == NULL || cfg->route_tables == NULL)
        return false;
    for (size_t k = 0; k < ports.n; k++) {
        struct port_tab *pt = ports.list[k];
        uint32_t p = pt->port;
        struct tr_listener_cfg *l = &cfg->listeners[cfg->n_listeners++];
        tr_cfg_listener_defaults(l);
        l->name = ist_mprintf(x, "outbound|%u", p);
        l->direction = TR_DIR_OUTBOUND;
        /* Capture: the port of the original destination picks the listener,
         * whatever service address the application dialled. */
        l->bind = !x->o->capture;
        if (!ist_make_addr(x, x->o->capture ? "0.0.0.0" : x->o->outbound_ip, p, &l->addr)) {
            tr_diags_add(x->d, TR_DIAG_ERROR, &(struct tr_diag_where){0},
                         "outbound address %s is not an IP address", x->o->outbound_ip);
            return false;
        }
        if (pt->n_tcp_split > 1) {
            l->tcp_clusters = pt->tcp_split;
            l->n_tcp_clusters = pt->n_tcp_split;
        } else {
            l->tcp_cluster_name = pt->tcp_cluster;
        }
        bool has_tcp = pt->tcp_cluster != NULL || pt->n_tcp_split > 1;
        if (!pt->http) {
            l->protocol = TR_LPROTO_TCP;
            if (pt->sni_wanted && !sni_rules(x, &ix, pt, l))
                return false;
            if (!subnet_listeners(x, pt, l))
                return false;
            continue;
        }
        if (!subnet_listeners(x, pt, l))
            return false;
        if (pt->sni_wanted) {
            struct ist_cursor c;
            ist_cursor_init(&c, pt->tls_svcs[0]->res, NULL);
            ist_warn(x, &c, NULL, NULL,
                     "port %u also carries HTTP services: TLS to %s%s is not routed by SNI "
                     "there (tls routes and other TLS services of the port are not applied)",
                     p, pt->tls_svcs[0]->host, pt->n_tls > 1 ? " and others" : "");
        }
        l->protocol = has_tcp ? TR_LPROTO_AUTO : TR_LPROTO_HTTP;
        struct tr_route_table_cfg *t = &cfg->route_tables[cfg->n_route_tables++];
        t->name = ist_mprintf(x, "%u", p);
        size_t extra = registry_only ? 1 : 0;
        t->vhosts = ist_malloc(x, pt->n_vhosts + extra, sizeof(*t->vhosts));
        if (t->name == NULL || t->vhosts == NULL)
            return false;
        memcpy(t->vhosts, pt->vhosts, pt->n_vhosts * sizeof(*t->vhosts));
        t->n_vhosts = pt->n_vhosts;
        if (registry_only) {
            /* Istio answers a host outside the registry with 502 (BlackHole). */
            struct tr_vhost_cfg *v = &t->vhosts[t->n_vhosts++];
            memset(v, 0, sizeof(*v));
            v->name = "block_all";
            v->domains = ist_malloc(x, 1, sizeof(*v->domains));
            v->routes = ist_malloc(x, 1, sizeof(*v->routes));
            if (v->domains == NULL || v->routes == NULL)
                return false;
            v->domains[0] = "*";
            v->n_domains = 1;
            tr_cfg_route_defaults(&v->routes[0]);
            v->routes[0].name = "block_all";
            v->routes[0].direct_status = 502;
            v->routes[0].direct_body = "trellis: host not in the mesh registry (REGISTRY_ONLY)\n";
            v->n_routes = 1;
        }
        l->route_table_name = t->name;
    }
    return true;
}

/* One inbound port: the listener "inbound|PORT" on listen_ip, in the mTLS
 * mode the PeerAuthentications give the port, in front of the application
 * at app_ip:app_port (the cluster "inbound|PORT||"), with the Sidecar's
 * connection pool for it (pool, of resource pool_res; NULL: none). */
struct inbound_port {
    uint32_t port;
    enum ist_proto proto;
    const char *listen_ip;
    const char *app_ip;
    uint32_t app_port;
    const char *service;    /* the host it serves; NULL: none */
    const char *server_ctx; /* a server context: TLS terminated here (a Sidecar ingress's
                             * tls); NULL: the mesh's mTLS as PeerAuthentication says */
    const struct tr_rnode *pool;
    const struct tr_resource *pool_res;
    struct tr_cfg_loc loc;
};

static bool has_listener(const struct tr_config *cfg, uint32_t port)
{
    char lname[32];
    snprintf(lname, sizeof(lname), "inbound|%u", port);
    for (size_t k = 0; k < cfg->n_listeners; k++)
        if (strcmp(cfg->listeners[k].name, lname) == 0)
            return true;
    return false;
}

static bool inbound_port(struct ist_ctx *x, const struct inbound_port *ip,
                         const struct tr_request_authn_cfg *authn_in)
{
    struct tr_config *cfg = x->cfg;
    struct tr_request_authn_cfg authn = *authn_in;
    uint32_t target = ip->port;
    enum ist_proto proto = ip->proto;
    const char *cname = ist_mprintf(x, "inbound|%u||", target);
    if (cname == NULL || !cluster_room(x))
        return false;
    struct tr_cluster_cfg *c = &x->clusters[x->n_clusters++];
    tr_cfg_cluster_defaults(c);
    c->name = cname;
    c->service = ip->service ? ist_mstrdup(x, ip->service) : NULL;
    c->workload = ist_mstrdup(x, x->wl_name);
    c->workload_namespace = ist_mstrdup(x, x->wl_ns);
    c->loc = ip->loc;
    c->endpoints = ist_malloc(x, 1, sizeof(*c->endpoints));
    if (c->endpoints == NULL)
        return false;
    tr_cfg_endpoint_defaults(&c->endpoints[0]);
    if (!ist_make_addr(x, ip->app_ip, ip->app_port, &c->endpoints[0].addr))
        return false;
    c->n_endpoints = 1;
    c->protocol = proto == IST_P_HTTP2 || proto == IST_P_GRPC ? TR_UPROTO_HTTP2 : TR_UPROTO_HTTP1;
    if (proto == IST_P_UNKNOWN)
        c->protocol = TR_UPROTO_ORIGINAL;
    if (ip->pool != NULL)
        ist_inbound_pool_apply(x, ip->pool_res, ip->pool, proto != IST_P_TCP && proto != IST_P_TLS,
                               c);
    struct tr_listener_cfg *l = &cfg->listeners[cfg->n_listeners++];
    tr_cfg_listener_defaults(l);
    l->name = ist_mprintf(x, "inbound|%u", target);
    l->direction = TR_DIR_INBOUND;
    l->bind = !x->o->capture;
    l->loc = ip->loc;
    if (l->name == NULL || !ist_make_addr(x, ip->listen_ip, target, &l->addr))
        return false;
    bool tcp = proto == IST_P_TCP || proto == IST_P_TLS;
    l->protocol = tcp ? TR_LPROTO_TCP : TR_LPROTO_AUTO;
    if (ip->server_ctx != NULL) {
        l->tls_mode = TR_TLS_TERMINATE;
        l->tls_contexts = ist_malloc(x, 1, sizeof(*l->tls_contexts));
        if (l->tls_contexts == NULL)
            return false;
        l->tls_contexts[0] = ip->server_ctx;
        l->n_tls_contexts = 1;
        if (!tcp)
            l->protocol = TR_LPROTO_HTTP; /* what TLS carries: HTTP/1.1 or h2 by ALPN */
    } else {
        l->tls_mode = ist_peer_auth_mode(x, target);
        if (l->tls_mode != TR_TLS_DISABLE) {
            l->tls_name = "mesh";
            x->uses_mesh_tls = true;
        }
    }
    l->tcp_cluster_name = l->protocol == TR_LPROTO_HTTP ? NULL : cname;
    if (tcp)
        return true;
    l->request_authn = authn;
    struct tr_route_table_cfg *t = &cfg->route_tables[cfg->n_route_tables++];
    t->name = ist_mprintf(x, "inbound|%u", target);
    t->vhosts = ist_malloc(x, 1, sizeof(*t->vhosts));
    if (t->name == NULL || t->vhosts == NULL)
        return false;
    struct tr_vhost_cfg *v = &t->vhosts[0];
    v->name = "inbound";
    v->domains = ist_malloc(x, 1, sizeof(*v->domains));
    v->routes = ist_malloc(x, 1, sizeof(*v->routes));
    if (v->domains == NULL || v->routes == NULL)
        return false;
    v->domains[0] = "*";
    v->n_domains = 1;
    tr_cfg_route_defaults(&v->routes[0]);
    v->routes[0].name = "default";
    v->routes[0].clusters = ist_malloc(x, 1, sizeof(*v->routes[0].clusters));
    if (v->routes[0].clusters == NULL)
        return false;
    v->routes[0].clusters[0] = (struct tr_weighted_cluster_cfg){.cluster_name = cname, .weight = 1};
    v->routes[0].n_clusters = 1;
    v->n_routes = 1;
    t->n_vhosts = 1;
    l->route_table_name = t->name;
    return true;
}

/* A Sidecar ingress listener's defaultEndpoint: "IP:PORT" or "[IPv6]:PORT";
 * 0.0.0.0 and :: are the workload's own address (any), loopback the
 * application's loopback (where app_ip is). Unix sockets are refused (the
 * model's endpoints are IP). */
static bool ingress_endpoint(const char *ep, struct ingress_endpoint *out)
{
    memset(out, 0, sizeof(*out));
    if (ep == NULL)
        return false;
    const char *colon = strrchr(ep, ':');
    if (colon == NULL || colon == ep)
        return false;
    size_t n = (size_t)(colon - ep);
    const char *ip = ep;
    if (ep[0] == '[') {
        if (n < 3 || ep[n - 1] != ']')
            return false;
        ip = ep + 1;
        n -= 2;
    }
    if (n >= sizeof(out->ip))
        return false;
    memcpy(out->ip, ip, n);
    out->ip[n] = 0;
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end != 0 || port < 1 || port > 65535)
        return false;
    out->port = (uint32_t)port;
    struct tr_ip a;
    if (!tr_ip_parse(out->ip, &a))
        return false;
    static const uint8_t zero[16];
    out->any = memcmp(a.a, zero, 16) == 0;
    out->loopback = (a.family == 4 && a.a[0] == 127) ||
                    (a.family == 6 && memcmp(a.a, zero, 15) == 0 && a.a[15] == 1);
    return true;
}

/* A Sidecar's ingress listeners (Istio's IstioIngressListener), which
 * replace the ports the services give: each port.number, with its
 * protocol, in front of defaultEndpoint (127.0.0.1:PORT, or 0.0.0.0:PORT:
 * the workload's own address; with capture the application's) or of bind.
 * Istio configures them only for a workload some service selects. */
static bool ingress_listeners(struct ist_ctx *x, const struct tr_resource *sc,
                              const struct tr_rnode *ingress, const struct tr_rnode *default_pool,
                              const struct tr_request_authn_cfg *authn, bool selected)
{
    struct ist_cursor c;
    ist_cursor_init(&c, sc, "spec");
    if (!selected) {
        ist_warn(x, &c, ingress, "ingress",
                 "no service selects workload %s/%s: Istio configures ingress listeners only "
                 "for a workload a service selects, so it has no inbound listener",
                 x->wl_ns, x->wl_name);
        return true;
    }
    size_t i = 0;
    for (const struct tr_rnode *in = ingress->head; in; in = in->next, i++) {
        size_t saved = ist_push_key(&c, "ingress");
        ist_push_index(&c, i);
        const struct tr_rnode *port = tr_rnode_get(in, "port");
        int64_t num = 0;
        const char *pproto = NULL, *ep = NULL, *bind = NULL;
        tr_rnode_int(tr_rnode_get(port, "number"), &num);
        tr_rnode_str(tr_rnode_get(port, "protocol"), &pproto);
        tr_rnode_str(tr_rnode_get(in, "defaultEndpoint"), &ep);
        tr_rnode_str(tr_rnode_get(in, "bind"), &bind);
        struct ingress_endpoint dst;
        if (num < 1 || num > 65535 || !ingress_endpoint(ep, &dst) ||
            has_listener(x->cfg, (uint32_t)num)) {
            ist_pop(&c, saved); /* reported by sidecar_check */
            continue;
        }
        bool named;
        /* The name is a label: the protocol says what the port speaks. */
        enum ist_proto proto = ist_proto_of(pproto, false, &named);
        const struct tr_rnode *pool = tr_rnode_get(in, "connectionPool");
        struct inbound_port ip = {.port = (uint32_t)num,
                                  .proto = proto,
                                  .listen_ip = bind != NULL ? bind : x->wl_ip,
                                  /* 0.0.0.0:PORT is the workload's own address: where its
             * application listens with capture; without, the proxy holds
             * that address and the application is on app_ip. */
                                  .app_ip = dst.any ? (x->o->capture ? x->wl_ip : x->o->app_ip)
                                            : dst.loopback ? x->o->app_ip
                                                           : dst.ip,
                                  .app_port = dst.port,
                                  .service = x->cfg->node.service,
                                  .pool = pool != NULL && pool->kind == TR_RNODE_MAP ? pool
                                                                                     : default_pool,
                                  .pool_res = sc,
                                  .loc = ist_loc(x, &c, in)};
        ist_pop(&c, saved);
        const struct tr_rnode *tls = tr_rnode_get(in, "tls");
        if (tls != NULL && tls->kind == TR_RNODE_MAP) {
            ip.server_ctx =
                ist_server_tls_context(x, sc, tls, ist_mprintf(x, "sidecar|%u", ip.port));
            if (ip.server_ctx == NULL)
                continue; /* reported: never served in the clear instead */
        }
        if (!inbound_port(x, &ip, authn))
            return false;
    }
    return true;
}

/* Inbound: a listener on the workload's address for each port a Service
 * targets, in front of the application on app_ip, in the mTLS mode the
 * PeerAuthentications give that port. */
static bool inbound(struct ist_ctx *x)
{
    if (x->wl_ip == NULL)
        return true;
    ist_peer_auth_resolve(x);
    struct tr_config *cfg = x->cfg;
    size_t n_in = 0;
    struct tr_request_authn_cfg authn;
    if (!ist_request_authn(x, &authn))
        return false;
    /* A Sidecar's ingress listeners replace the services' ports; its
     * inboundConnectionPool applies to every inbound cluster. */
    const struct tr_resource *sc = sidecar_for(x);
    const struct tr_rnode *ingress = sc ? tr_rnode_get(sc->spec, "ingress") : NULL;
    if (ingress != NULL && (ingress->kind != TR_RNODE_SEQ || ingress->n == 0))
        ingress = NULL;
    const struct tr_rnode *default_pool =
        sc ? tr_rnode_get(sc->spec, "inboundConnectionPool") : NULL;
    if (default_pool != NULL && default_pool->kind != TR_RNODE_MAP)
        default_pool = NULL;
    bool selected = false;
    /* The services that may select the workload: those whose selector's
     * first label is one of its labels, or that have none (a bit each, so
     * the order stays the registry's); each is then matched in full. */
    uint8_t *cand = NULL;
    if (x->svc_selector_indexed) {
        cand = tr_arena_calloc(x->tmp, x->n_svcs / 8 + 1, 1);
        if (cand == NULL)
            return ist_oom(x);
        const struct tr_rnode *l = x->wl_labels;
        const struct tr_rnode *k = l && l->kind == TR_RNODE_MAP ? l->head : NULL;
        const char *key = ist_printf(x, "%s\n", x->wl_ns); /* selectors without labels */
        for (;;) {
            const struct ist_svc_list *lst = key ? tr_strmap_get(&x->svc_by_selector, key) : NULL;
            for (size_t j = 0; lst != NULL && j < lst->n; j++)
                cand[lst->v[j]->index / 8] |= (uint8_t)(1u << (lst->v[j]->index % 8));
            if (k == NULL || k->next == NULL)
                break;
            const char *v = "";
            if (!tr_rnode_str(k->next, &v))
                v = "";
            key = ist_printf(x, "%s\n%s=%s", x->wl_ns, k->s, v);
            k = k->next->next;
        }
    }
    for (size_t i = 0; i < x->n_svcs; i++) {
        const struct ist_service *s = x->svcs[i];
        if (cand != NULL && !(cand[i / 8] & (1u << (i % 8))))
            continue;
        if (s->name == NULL || s->selector == NULL || strcmp(s->ns, x->wl_ns) != 0 ||
            !ist_labels_match(s->selector, x->wl_labels) || ist_refused(x, s->res))
            continue;
        selected = true;
        if (ingress != NULL && cfg->node.service == NULL)
            cfg->node.service = ist_mstrdup(x, s->host);
        for (size_t pi = 0; pi < s->n_ports && ingress == NULL; pi++) {
            const struct ist_port *p = &s->ports[pi];
            uint32_t target = p->target;
            if (target == 0)
                continue; /* named target: resolved against the pod by ist_service_eps */
            if (n_in >= 8 || has_listener(cfg, target))
                continue;
            n_in++;
            /* The Sidecar's pool, else the service's DestinationRule's for
             * the port (docs/compat/istio.md, "Inbound connection pool"). */
            const struct tr_resource *dr = default_pool ? NULL : ist_dr_for(x, s->host, s->ns);
            struct inbound_port ip = {.port = target,
                                      .proto = p->proto,
                                      .listen_ip = x->wl_ip,
                                      .app_ip = x->o->app_ip,
                                      .app_port = target,
                                      .service = s->host,
                                      .pool =
                                          default_pool ? default_pool : ist_dr_pool(dr, p->number),
                                      .pool_res = default_pool ? sc : dr};
            if (!inbound_port(x, &ip, &authn))
                return false;
            if (cfg->node.service == NULL)
                cfg->node.service = ist_mstrdup(x, s->host);
        }
    }
    if (ingress != NULL && !ingress_listeners(x, sc, ingress, default_pool, &authn, selected))
        return false;
    ist_peer_auth_unused(x);
    return true;
}

/* Capture (istio.h, tr_istio_options.capture): Istio's virtualOutbound
 * (127.0.0.1:15001) and virtualInbound (0.0.0.0:15006) in front of the
 * virtual listeners outbound() and inbound() made. What nothing claims:
 * outbound, the Sidecar's outboundTrafficPolicy (ALLOW_ANY: passthrough, as
 * Istio's PassthroughCluster; REGISTRY_ONLY: closed, its BlackHoleCluster);
 * inbound, passthrough to the application unless the workload's mTLS mode
 * is STRICT, which a plaintext relay to the application would bypass. */
static bool capture_listeners(struct ist_ctx *x)
{
    struct tr_config *cfg = x->cfg;
    bool registry_only = registry_only_for(sidecar_for(x));
    static const struct {
        const char *name, *ip;
        uint32_t port;
        enum tr_direction dir;
    } caps[] = {
        {"virtualOutbound", "127.0.0.1", 15001, TR_DIR_OUTBOUND},
        {"virtualInbound", "0.0.0.0", 15006, TR_DIR_INBOUND},
    };
    for (size_t i = 0; i < 2; i++) {
        struct tr_listener_cfg *l = &cfg->listeners[cfg->n_listeners++];
        tr_cfg_listener_defaults(l);
        l->name = caps[i].name;
        l->direction = caps[i].dir;
        l->protocol = TR_LPROTO_TCP;
        if (!ist_make_addr(x, caps[i].ip, caps[i].port, &l->addr))
            return false;
        l->original_destination = ist_malloc(x, 1, sizeof(*l->original_destination));
        if (l->original_destination == NULL)
            return false;
        tr_cfg_original_dst_defaults(l->original_destination);
        bool reject = caps[i].dir == TR_DIR_OUTBOUND
                          ? registry_only
                          : x->wl_ip != NULL && x->pa_mode == TR_TLS_STRICT;
        l->original_destination->unmatched = reject ? TR_CAPTURE_REJECT : TR_CAPTURE_PASSTHROUGH;
    }
    cfg->upstream_mark = TR_CAPTURE_PROXY_MARK; /* what trellis ctl iptables skips by default */
    return true;
}

/* Sidecars are checked without looking at the workload or at any other
 * kind's checks: a shared registry checks them once (tr_istio_registry_new). */
static void check_sidecars(struct ist_ctx *x)
{
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "Sidecar", &n);
    for (size_t i = 0; i < n; i++)
        sidecar_check(x, v[i]);
}

static void check_all(struct ist_ctx *x, bool sidecars)
{
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "DestinationRule", &n);
    for (size_t i = 0; i < n; i++)
        ist_dr_check(x, v[i]);
    if (sidecars)
        check_sidecars(x);
    v = tr_rset_of_kind(x->rs, IST_GROUP, "Gateway", &n);
    for (size_t i = 0; i < n; i++)
        ist_gateway_check(x, v[i]);
    /* Delegates first: a root that names a refused one drops that rule. */
    v = tr_rset_of_kind(x->rs, IST_GROUP, "VirtualService", &n);
    for (size_t i = 0; i < n; i++)
        if (v[i]->spec != NULL && ist_vs_is_delegate(v[i]))
            ist_vs_check(x, v[i]);
    for (size_t i = 0; i < n; i++)
        if (v[i]->spec == NULL || !ist_vs_is_delegate(v[i]))
            ist_vs_check(x, v[i]);
    ist_peer_auth_check_all(x);
    ist_ra_check_all(x);
}

void ist_check_all(struct ist_ctx *x)
{
    check_all(x, true);
}

bool ist_alloc_listeners(struct ist_ctx *x, size_t n)
{
    x->cfg->listeners = ist_malloc(x, n, sizeof(*x->cfg->listeners));
    x->cfg->route_tables = ist_malloc(x, n, sizeof(*x->cfg->route_tables));
    return x->cfg->listeners != NULL && x->cfg->route_tables != NULL;
}

bool ist_ctx_init(struct ist_ctx *x, const struct tr_rset *rs, const struct tr_istio_options *opt,
                  struct tr_diags *d)
{
    memset(x, 0, sizeof(*x));
    struct tr_istio_options *o = &x->opts;
    *o = *opt;
    if (o->trust_domain == NULL)
        o->trust_domain = "cluster.local";
    if (o->root_ns == NULL)
        o->root_ns = "istio-system";
    if (o->outbound_ip == NULL)
        o->outbound_ip = "127.0.0.1";
    if (o->app_ip == NULL)
        o->app_ip = "127.0.0.1";
    if (o->cert_dir == NULL)
        o->cert_dir = "certs";
    if (o->file_name == NULL)
        o->file_name = "compiled";
    x->rs = rs;
    x->o = o;
    x->d = d;
    x->wl_ns = o->ns;
    x->wl_name = o->name;
    x->tmp = tr_arena_new(64 * 1024);
    x->cfg = tr_config_new(o->file_name);
    if (x->tmp == NULL || x->cfg == NULL) {
        ist_ctx_fini(x);
        tr_diags_add(d, TR_DIAG_ERROR, &(struct tr_diag_where){0}, "out of memory");
        return false;
    }
    tr_strmap_init(&x->dr_index, x->tmp);
    tr_strmap_init(&x->cluster_by_name, x->tmp);
    return true;
}

void ist_ctx_fini(struct ist_ctx *x)
{
    tr_rset_free(x->mesh_rs);
    x->mesh_rs = NULL;
    tr_arena_free(x->tmp);
    tr_config_free(x->cfg);
    x->tmp = NULL;
    x->cfg = NULL;
}

struct tr_istio_registry {
    struct ist_ctx x; /* the registry lives in x.tmp; read only once built */
    /* The snapshot compiles read: x.rs, or for a registry rebound to a newer
     * snapshot (tr_istio_registry_rebind), that one, with base's tables. */
    const struct tr_rset *rs;
    const struct tr_istio_registry *base;
    size_t patches; /* Endpoints read again into this (base) registry */
    bool broken;    /* a patch failed half-way (out of memory): never rebound again */
};

/* A base registry takes this many Endpoints patches, then is built anew:
 * each leaves the endpoints it replaced in the arena. */
#define REGISTRY_MAX_PATCHES 256u

/* A rebind checks every difference before it changes anything (so a
 * refused rebind leaves the base as it was), then reads the edited
 * Endpoints again. */
struct patch_walk {
    struct tr_istio_registry *base;
    bool apply; /* false: check only */
    bool ok;
    size_t endpoints;
};

static bool patch_one(void *arg, const struct tr_resource *x, const struct tr_resource *y)
{
    struct patch_walk *w = arg;
    bool endpoints = y != NULL && y->group[0] == '\0' && strcmp(y->kind, "Endpoints") == 0;
    bool routing =
        y != NULL && strcmp(y->group, IST_GROUP) == 0 &&
        (strcmp(y->kind, "VirtualService") == 0 || strcmp(y->kind, "DestinationRule") == 0);
    if (x == NULL || y == NULL || x->index != y->index || !(endpoints || routing)) {
        w->ok = false; /* not what a rebind takes: the caller builds a registry */
        return false;
    }
    if (!endpoints)
        return true; /* routes and rules: read by each compile */
    if (!w->apply) {
        w->endpoints++;
        if (!ist_registry_endpoints_patchable(&w->base->x, y))
            w->ok = false;
        return w->ok;
    }
    if (!ist_registry_patch_endpoints(&w->base->x, y)) {
        w->base->broken = true; /* out of memory half-way */
        w->ok = false;
        return false;
    }
    w->base->patches++;
    return true;
}

struct tr_istio_registry *tr_istio_registry_new(const struct tr_rset *rs,
                                                const struct tr_istio_options *opt,
                                                struct tr_diags *d)
{
    struct tr_istio_registry *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        tr_diags_add(d, TR_DIAG_ERROR, &(struct tr_diag_where){0}, "out of memory");
        return NULL;
    }
    if (!ist_ctx_init(&r->x, rs, opt, d)) {
        free(r);
        return NULL;
    }
    if (ist_registry_build(&r->x) != 0) {
        tr_istio_registry_free(r);
        return NULL;
    }
    check_sidecars(&r->x);
    r->x.d = NULL; /* the caller's list is not ours to keep */
    r->rs = rs;
    return r;
}

struct tr_istio_registry *tr_istio_registry_rebind(struct tr_istio_registry *base,
                                                   const struct tr_rset *prev,
                                                   const struct tr_rset *rs)
{
    while (base->base != NULL)
        base = (struct tr_istio_registry *)base->base; /* ours to patch: see istio.h */
    if (tr_rset_count(rs) != tr_rset_count(base->x.rs) || tr_rset_count(prev) != tr_rset_count(rs))
        return NULL; /* not a snapshot the caller may rebind to */
    if (base->broken)
        return NULL;
    struct patch_walk w = {.base = base, .ok = true};
    tr_rset_diff(prev, rs, patch_one, &w);
    if (!w.ok || base->patches + w.endpoints > REGISTRY_MAX_PATCHES)
        return NULL;
    struct tr_istio_registry *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    w.apply = true;
    tr_rset_diff(prev, rs, patch_one, &w);
    if (!w.ok) {
        free(r);
        return NULL;
    }
    r->rs = rs;
    r->base = base;
    return r;
}

void tr_istio_registry_free(struct tr_istio_registry *r)
{
    if (r == NULL)
        return;
    if (r->base == NULL)
        ist_ctx_fini(&r->x);
    free(r);
}

/* A compile's view of a registry built before: the same (read-only)
 * services, instances and indexes, and the resources it refused. */
static bool adopt_registry(struct ist_ctx *x, const struct tr_istio_registry *reg)
{
    const struct ist_ctx *r = &reg->x;
    x->svcs = r->svcs;
    x->n_svcs = r->n_svcs;
    x->svc_by_host = r->svc_by_host;
    x->inst_by_label = r->inst_by_label;
    x->n_indexed = r->n_indexed;
    x->insts = r->insts;
    x->n_insts = r->n_insts;
    x->svc_by_selector = r->svc_by_selector;
    x->svc_selector_indexed = r->svc_selector_indexed;
    if (r->refused != NULL) {
        /* one bit per object; a rebound snapshot has the same objects at
         * the same places */
        size_t n = tr_rset_count(x->rs) / 8 + 1;
        x->refused = tr_arena_alloc(x->tmp, n);
        if (x->refused == NULL)
            return ist_oom(x);
        memcpy(x->refused, r->refused, n);
    }
    return true;
}

static struct tr_config *compile(const struct tr_rset *rs, const struct tr_istio_options *opt,
                                 const struct tr_istio_registry *reg, struct tr_diags *d);

struct tr_config *tr_istio_compile(const struct tr_rset *rs, const struct tr_istio_options *opt,
                                   struct tr_diags *d)
{
    return compile(rs, opt, NULL, d);
}

struct tr_config *tr_istio_compile_with(const struct tr_istio_registry *reg,
                                        const struct tr_istio_options *opt, struct tr_diags *d)
{
    return compile(reg->rs, opt, reg->base != NULL ? reg->base : reg, d);
}

/* The RequestAuthentications that select a gateway, on its HTTP listeners
 * (as Istio checks tokens at gateways): the same rules a sidecar's inbound
 * listeners get. */
static bool gateway_authn(struct ist_ctx *x)
{
    struct tr_request_authn_cfg authn;
    if (!ist_request_authn(x, &authn))
        return false;
    struct tr_config *cfg = x->cfg;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct tr_listener_cfg *l = &cfg->listeners[i];
        if (strncmp(l->name, "gateway|", 8) == 0 && l->protocol != TR_LPROTO_TCP)
            l->request_authn = authn;
    }
    return true;
}

static struct tr_config *compile(const struct tr_rset *rs, const struct tr_istio_options *opt,
                                 const struct tr_istio_registry *reg, struct tr_diags *d)
{
    if (opt->ns == NULL || opt->name == NULL) {
        tr_diags_add(d, TR_DIAG_ERROR, &(struct tr_diag_where){0},
                     "a workload (namespace and name) is required");
        return NULL;
    }
    struct ist_ctx x;
    if (!ist_ctx_init(&x, rs, opt, d))
        return NULL;
    const struct tr_istio_options *o = x.o;
    struct tr_config *cfg = x.cfg;
    bool ok = (reg != NULL ? adopt_registry(&x, reg) : ist_registry_build(&x) == 0) &&
              ist_workload_find(&x) == 0;
    if (ok) {
        check_all(&x, reg == NULL);
        cfg->node.id = ist_mprintf(&x, "%s/%s", o->ns, o->name);
        cfg->node.workload = ist_mstrdup(&x, o->name);
        cfg->node.workload_namespace = ist_mstrdup(&x, o->ns);
        cfg->node.principal = spiffe_of(&x, o->ns, x.wl_sa ? x.wl_sa : "default");
        if (o->admin_address != NULL)
            ok = admin_address(&x, o->admin_address, &cfg->admin.addr);
        if (o->admin_socket != NULL)
            cfg->admin.socket = ist_mstrdup(&x, o->admin_socket);
        if (ist_is_gateway(&x)) {
            if (o->capture)
                tr_diags_add(d, TR_DIAG_WARNING, &(struct tr_diag_where){0},
                             "workload %s/%s is a gateway: capture applies to sidecars only, its "
                             "listeners stay bound",
                             o->ns, o->name);
            ok = ist_alloc_listeners(&x, 72) && ist_gateways(&x) && gateway_authn(&x) &&
                 ist_authz(&x) && !x.oom; /* a gateway only */
        } else
            ok = outbound(&x) && inbound(&x) && ist_authz(&x) &&
                 (!o->capture || capture_listeners(&x)) && !x.oom;
    }
    if (ok) {
        cfg->clusters = ist_malloc(&x, x.n_clusters, sizeof(*cfg->clusters));
        ok = cfg->clusters != NULL;
        if (ok && x.n_clusters)
            memcpy(cfg->clusters, x.clusters, x.n_clusters * sizeof(*cfg->clusters));
        cfg->n_clusters = x.n_clusters;
    }
    if (ok && (x.uses_mesh_tls || x.n_tls_ctx > 0)) {
        /* "mesh" first, then the contexts made of Secrets, in order of use */
        cfg->tls = ist_malloc(&x, 1 + x.n_tls_ctx, sizeof(*cfg->tls));
        ok = cfg->tls != NULL;
        if (ok && x.uses_mesh_tls) {
            struct tr_tls_cfg *mesh = &cfg->tls[cfg->n_tls++];
            tr_cfg_tls_defaults(mesh);
            mesh->name = "mesh";
            if (o->identity_from_control) {
                mesh->from_control_plane = true;
            } else {
                mesh->cert_file = ist_mprintf(&x, "%s/cert.pem", o->cert_dir);
                mesh->key_file = ist_mprintf(&x, "%s/key.pem", o->cert_dir);
                mesh->ca_file = ist_mprintf(&x, "%s/ca.pem", o->cert_dir);
            }
            mesh->trust_domain = ist_mstrdup(&x, o->trust_domain);
        }
        if (ok && x.n_tls_ctx > 0) {
            memcpy(&cfg->tls[cfg->n_tls], x.tls_ctx, x.n_tls_ctx * sizeof(*cfg->tls));
            cfg->n_tls += x.n_tls_ctx;
        }
    }
    if (ok && cfg->n_listeners == 0) {
        /* The native model needs a listener: there is nothing to run. */
        tr_diags_add(d, TR_DIAG_ERROR, &(struct tr_diag_where){0},
                     "workload %s/%s reaches no service and serves none: there is no model to "
                     "run",
                     o->ns, o->name);
        ok = false;
    }
    if (ok && o->dns_server != NULL) {
        cfg->resolver.servers = ist_malloc(&x, 1, sizeof(*cfg->resolver.servers));
        ok = cfg->resolver.servers != NULL;
        if (ok) {
            cfg->resolver.servers[0] = ist_mstrdup(&x, o->dns_server);
            cfg->resolver.n_servers = 1;
        }
    }
    if (ok) { /* the mesh configuration's path normalization, on every listener */
        ist_mesh_read(&x);
        for (size_t i = 0; x.mesh_pathnorm_set && i < cfg->n_listeners; i++)
            if (cfg->listeners[i].protocol != TR_LPROTO_TCP) /* paths are HTTP's */
                cfg->listeners[i].path_normalization = x.mesh_pathnorm;
    }
    char *err = NULL;
    if (ok && tr_config_validate(cfg, &err) != 0) {
        /* A compiler bug or an input the checks above let through: either
         * way the proxy must not get it. */
        tr_diags_add(d, TR_DIAG_ERROR, &(struct tr_diag_where){0},
                     "the compiled model is invalid: %s", err ? err : "out of memory");
        free(err);
        ok = false;
    }
    if (ok)
        x.cfg = NULL; /* the caller's now */
    ist_ctx_fini(&x);
    return ok ? cfg : NULL;
}
