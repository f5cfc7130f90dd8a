/* The service registry: which services exist, on which ports, speaking what,
 * and which instances (address, labels, identity) serve them.
 *
 * Sources: Kubernetes Services, Pods (and Deployment-like templates, which
 * give a workload labels and an identity but no address), Endpoints and
 * EndpointSlices; Istio ServiceEntry and WorkloadEntry. A Service's
 * endpoints come from its EndpointSlices (or Endpoints) when any exist, as in
 * a cluster; otherwise from the Pods its selector picks (the usual case for a
 * directory of YAML). */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "dialect/istio/internal.h"

#define CORE "" /* the core API group */

/* Istio's protocol selection: appProtocol, else the port name ("http",
 * "http-web", "grpc-api"...). https/tls are TLS; mongo, mysql, redis... are
 * TCP to a proxy that does not parse them. */
enum ist_proto ist_proto_of(const char *s, bool prefix_only, bool *named)
{
    static const struct {
        const char *p;
        enum ist_proto v;
    } t[] = {
        {"http2", IST_P_HTTP2}, {"http", IST_P_HTTP}, {"grpc-web", IST_P_HTTP},
        {"grpc", IST_P_GRPC},   {"h2c", IST_P_HTTP2}, {"kubernetes.io/h2c", IST_P_HTTP2},
        {"https", IST_P_TLS},   {"tls", IST_P_TLS},   {"tcp", IST_P_TCP},
        {"mongo", IST_P_TCP},   {"mysql", IST_P_TCP}, {"redis", IST_P_TCP},
        {"udp", IST_P_UNKNOWN},
    };
    *named = false;
    if (s == NULL)
        return IST_P_UNKNOWN;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t l = strlen(t[i].p);
        if (strncasecmp(s, t[i].p, l) == 0 && (s[l] == '\0' || (prefix_only && s[l] == '-'))) {
            *named = t[i].v != IST_P_UNKNOWN;
            return t[i].v;
        }
    }
    return IST_P_UNKNOWN;
}

static struct ist_inst *new_inst(struct ist_ctx *x)
{
    struct ist_inst *in = ist_alloc(x, 1, sizeof(*in));
    if (in == NULL)
        return NULL;
    in->weight = 1;
    return in;
}

static bool push_inst(struct ist_ctx *x, struct ist_inst *in, size_t *cap)
{
    if (x->n_insts == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        struct ist_inst **nv = ist_alloc(x, ncap, sizeof(*nv));
        if (nv == NULL)
            return false;
        if (x->n_insts)
            memcpy(nv, x->insts, x->n_insts * sizeof(*nv));
        x->insts = nv;
        *cap = ncap;
    }
    x->insts[x->n_insts++] = in;
    return true;
}

static bool has_sidecar(const struct tr_resource *r, const struct tr_rnode *labels)
{
    const struct tr_rnode *v = tr_rnode_get(labels, "security.istio.io/tlsMode");
    const char *s;
    if (v != NULL && tr_rnode_str(v, &s))
        return strcmp(s, "istio") == 0;
    return tr_rnode_get(r ? r->annotations : NULL, "sidecar.istio.io/status") != NULL;
}

/* Whether a Pod takes new traffic, as the endpoints controller decides:
 * not terminating and Ready (a Pod without conditions, as written by hand,
 * is taken as ready); *finished when its phase is Succeeded or Failed.
 * Also reads status.podIPs: the first is podIP; a second (dual-stack)
 * address is reported, not used. */
static bool pod_ready(struct ist_ctx *x, const struct tr_resource *r, const char **ip,
                      bool *finished)
{
    struct ist_cursor c;
    bool ready = true;
    const struct tr_rnode *meta = tr_rnode_get(r->obj, "metadata");
    if (!tr_rnode_is_null(tr_rnode_get(meta, "deletionTimestamp")))
        ready = false; /* terminating: it only drains */
    const struct tr_rnode *status = tr_rnode_get(r->obj, "status");
    ist_cursor_init(&c, r, "status");
    const char *phase = NULL;
    if (ist_str(x, &c, status, "phase", &phase)) {
        if (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0)
            *finished = true;
        else if (strcmp(phase, "Pending") != 0 && strcmp(phase, "Running") != 0 &&
                 strcmp(phase, "Unknown") != 0)
            ist_warn(x, &c, status, "phase",
                     "expected Pending, Running, Succeeded, Failed or Unknown, got \"%s\": "
                     "taken as running",
                     phase);
    }
    const struct tr_rnode *conds = ist_list(x, &c, status, "conditions");
    size_t k = 0;
    for (const struct tr_rnode *cd = conds ? conds->head : NULL; cd; cd = cd->next, k++) {
        size_t saved = ist_push_key(&c, "conditions");
        ist_push_index(&c, k);
        const char *type = NULL, *st = NULL;
        if (!ist_str(x, &c, cd, "type", &type))
            ist_error(x, &c, cd, "type", "a condition needs a type");
        if (!ist_str(x, &c, cd, "status", &st))
            ist_error(x, &c, cd, "status", "a condition needs a status");
        else if (strcmp(st, "True") != 0 && strcmp(st, "False") != 0 && strcmp(st, "Unknown") != 0)
            ist_error(x, &c, cd, "status", "expected True, False or Unknown, got \"%s\"", st);
        else if (type != NULL && strcmp(type, "Ready") == 0 && strcmp(st, "True") != 0)
            ready = false;
        ist_pop(&c, saved);
    }
    const struct tr_rnode *ips = ist_list(x, &c, status, "podIPs");
    k = 0;
    for (const struct tr_rnode *e = ips ? ips->head : NULL; e; e = e->next, k++) {
        size_t saved = ist_push_key(&c, "podIPs");
        ist_push_index(&c, k);
        const char *a = NULL;
        if (!ist_str(x, &c, e, "ip", &a))
            ist_error(x, &c, e, "ip", "an entry of podIPs needs an ip");
        else if (k == 0 && *ip == NULL)
            *ip = a; /* podIP not written: the first of podIPs is it */
        else if (k > 0)
            ist_warn(x, &c, e, "ip",
                     "a second pod address (dual-stack) is not used: the pod is reached at %s",
                     *ip ? *ip : "its first address");
        ist_pop(&c, saved);
    }
    return ready;
}

/* Pods: address, labels, service account, container ports. */
static void read_pods(struct ist_ctx *x, size_t *cap)
{
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, CORE, "Pod", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        const struct tr_rnode *status = tr_rnode_get(r->obj, "status");
        const char *ip = NULL, *sa = NULL;
        struct ist_cursor c;
        ist_cursor_init(&c, r, "status");
        ist_str(x, &c, status, "podIP", &ip);
        ist_cursor_init(&c, r, "spec");
        if (!ist_str(x, &c, r->spec, "serviceAccountName", &sa))
            ist_str(x, &c, r->spec, "serviceAccount", &sa);
        struct ist_inst *in = new_inst(x);
        if (in == NULL)
            return;
        in->name = r->name;
        in->ns = r->ns ? r->ns : "default";
        in->ip = ip;
        in->labels = r->labels;
        in->container_ports = tr_rnode_get(r->spec, "containers");
        in->sa = sa ? sa : "default";
        in->sidecar = has_sidecar(r, r->labels);
        in->not_ready = !pod_ready(x, r, &in->ip, &in->finished);
        const char *node = NULL;
        tr_rnode_str(tr_rnode_get(r->spec, "nodeName"), &node);
        in->locality = ist_locality_of(x, r->labels, node);
        if (!push_inst(x, in, cap))
            return;
    }
}

/* WorkloadEntry: a VM or any non-pod instance. */
static void read_workload_entry(struct ist_ctx *x, struct ist_cursor *c,
                                const struct tr_rnode *spec, struct ist_inst *in)
{
    static const struct ist_key keys[] = {
        {"address", NULL},  {"ports", NULL},
        {"labels", NULL},   {"serviceAccount", NULL},
        {"weight", NULL},   {"network", "one network: every address is taken as reachable"},
        {"locality", NULL},
    };
    IST_KEYS(x, c, spec, keys);
    ist_str(x, c, spec, "address", &in->ip);
    const struct tr_rnode *labels = ist_map(x, c, spec, "labels");
    if (labels != NULL)
        in->labels = labels;
    ist_str(x, c, spec, "serviceAccount", &in->sa);
    /* Istio: the entry's locality, else its istio-locality label. */
    const char *loc = NULL;
    if (ist_str(x, c, spec, "locality", &loc) && *loc != '\0') {
        int slashes = 0;
        for (const char *q = loc; *q; q++)
            slashes += *q == '/';
        if (slashes > 2)
            ist_error(x, c, tr_rnode_get(spec, "locality"), "locality",
                      "expected region/zone/subzone (at most two \"/\")");
        else
            in->locality = loc;
    } else {
        in->locality = ist_locality_of(x, in->labels, NULL);
    }
    ist_u32(x, c, spec, "weight", 0, 1000000, &in->weight);
    if (in->weight == 0)
        in->weight = 1;
    const struct tr_rnode *ports = ist_map(x, c, spec, "ports");
    for (const struct tr_rnode *k = ports ? ports->head : NULL; k && k->next; k = k->next->next) {
        uint32_t p;
        size_t saved = ist_push_key(c, "ports");
        if (ist_u32(x, c, ports, k->s, 1, 65535, &p) && in->n_overrides < 8) {
            in->port_names[in->n_overrides] = k->s;
            in->port_override[in->n_overrides++] = p;
        } else if (in->n_overrides >= 8) {
            ist_error(x, c, k, NULL, "at most 8 named ports per workload entry");
        }
        ist_pop(c, saved);
    }
    if (in->ip != NULL && strncmp(in->ip, "unix://", 7) == 0)
        ist_error(x, c, spec, "address", "Unix domain socket addresses are not supported");
}

static void read_workload_entries(struct ist_ctx *x, size_t *cap)
{
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "WorkloadEntry", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        struct ist_cursor c;
        ist_cursor_init(&c, r, "spec");
        struct ist_inst *in = new_inst(x);
        if (in == NULL)
            return;
        in->name = r->name;
        in->ns = r->ns ? r->ns : "default";
        in->labels = r->labels;
        read_workload_entry(x, &c, r->spec, in);
        if (in->sa == NULL)
            in->sa = "default";
        in->sidecar = has_sidecar(r, in->labels);
        if (!ist_refused(x, r) && !push_inst(x, in, cap))
            return;
    }
}

static bool add_service(struct ist_ctx *x, struct ist_service *s, size_t *cap)
{
    if (x->n_svcs == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        struct ist_service **nv = ist_alloc(x, ncap, sizeof(*nv));
        if (nv == NULL)
            return false;
        if (x->n_svcs)
            memcpy(nv, x->svcs, x->n_svcs * sizeof(*nv));
        x->svcs = nv;
        *cap = ncap;
    }
    s->index = x->n_svcs;
    s->same_host = NULL;
    x->svcs[x->n_svcs++] = s;
    bool oom = false;
    struct ist_service *first = tr_strmap_put(&x->svc_by_host, s->host, s, &oom);
    if (first != NULL) { /* first wins the lookup; the others stay reachable */
        while (first->same_host != NULL)
            first = first->same_host;
        first->same_host = s;
    }
    return oom ? ist_oom(x) : true;
}

/* "NS\nKEY=VALUE": one allocation, no format (made for every label of
 * every instance and selector). */
static const char *label_key(struct ist_ctx *x, const char *ns, const char *k, const char *v)
{
    size_t nl = strlen(ns), kl = strlen(k), vl = strlen(v);
    char *p = ist_alloc(x, nl + kl + vl + 3, 1);
    if (p == NULL)
        return NULL;
    memcpy(p, ns, nl);
    p[nl] = '\n';
    memcpy(p + nl + 1, k, kl);
    p[nl + 1 + kl] = '=';
    memcpy(p + nl + 2 + kl, v, vl);
    p[nl + kl + vl + 2] = '\0';
    return p;
}

/* Index every instance read so far by each of its labels: a count pass,
 * then the arrays (all in the compiler's scratch arena). */
static void index_insts(struct ist_ctx *x)
{
    tr_strmap_init(&x->inst_by_label, x->tmp);
    for (int pass = 0; pass < 2 && !x->oom; pass++) {
        for (size_t i = 0; i < x->n_insts && !x->oom; i++) {
            struct ist_inst *in = x->insts[i];
            const struct tr_rnode *l = in->labels;
            for (const struct tr_rnode *k = l && l->kind == TR_RNODE_MAP ? l->head : NULL;
                 k != NULL && k->next != NULL; k = k->next->next) {
                const char *v;
                if (!tr_rnode_str(k->next, &v))
                    v = "";
                const char *key = label_key(x, in->ns, k->s, v);
                struct ist_inst_list *lst = key ? tr_strmap_get(&x->inst_by_label, key) : NULL;
                if (lst == NULL && key != NULL && pass == 0) {
                    bool oom = false;
                    lst = ist_alloc(x, 1, sizeof(*lst));
                    if (lst != NULL)
                        tr_strmap_put(&x->inst_by_label, key, lst, &oom);
                    if (lst == NULL || oom) {
                        ist_oom(x);
                        return;
                    }
                }
                if (lst == NULL)
                    continue;
                if (pass == 0) {
                    lst->cap++;
                    continue;
                }
                if (lst->v == NULL && (lst->v = ist_alloc(x, lst->cap, sizeof(*lst->v))) == NULL)
                    return;
                lst->v[lst->n++] = in;
            }
        }
    }
    x->n_indexed = x->n_insts;
}

static void select_insts(struct ist_ctx *x, struct ist_service *s, bool any_ns)
{
    if (s->selector == NULL)
        return;
    /* Candidates: the instances with the selector's first label (in this
     * namespace), plus any read after the index was built; every candidate
     * is then matched against the whole selector. An empty selector, or one
     * across namespaces, looks at all of them. */
    const struct tr_rnode *first = s->selector->kind == TR_RNODE_MAP ? s->selector->head : NULL;
    struct ist_inst **cand = x->insts;
    size_t n_cand = x->n_insts, tail = x->n_insts;
    if (!any_ns && first != NULL && first->next != NULL && x->n_indexed > 0) {
        const char *v;
        if (!tr_rnode_str(first->next, &v))
            v = "";
        const char *key = label_key(x, s->ns, first->s, v);
        const struct ist_inst_list *lst = key ? tr_strmap_get(&x->inst_by_label, key) : NULL;
        cand = lst ? lst->v : NULL;
        n_cand = lst ? lst->n : 0;
        tail = x->n_indexed;
    }
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t j = 0; j < n_cand + (x->n_insts - tail); j++) {
            struct ist_inst *in = j < n_cand ? cand[j] : x->insts[tail + j - n_cand];
            if ((any_ns || strcmp(in->ns, s->ns) == 0) &&
                ist_labels_match(s->selector, in->labels)) {
                if (pass == 0)
                    k++;
                else
                    s->insts[s->n_insts++] = in;
            }
        }
        if (pass == 0 && (s->insts = ist_alloc(x, k, sizeof(*s->insts))) == NULL)
            return;
    }
}

static void read_service_ports(struct ist_ctx *x, struct ist_cursor *c, struct ist_service *s,
                               const struct tr_rnode *ports, bool entry)
{
    s->n_ports = 0;
    if (ports == NULL)
        return;
    if (ports->n > IST_MAX_PORTS) {
        ist_error(x, c, ports, NULL, "more than %u ports", IST_MAX_PORTS);
        return;
    }
    s->ports = ist_alloc(x, ports->n, sizeof(*s->ports));
    if (s->ports == NULL)
        return;
    size_t i = 0;
    for (const struct tr_rnode *p = ports->head; p != NULL; p = p->next, i++) {
        size_t saved = ist_push_index(c, i);
        struct ist_port *sp = &s->ports[s->n_ports];
        const char *proto = NULL, *app = NULL;
        if (entry) {
            static const struct ist_key keys[] = {
                {"number", NULL}, {"protocol", NULL}, {"name", NULL}, {"targetPort", NULL}};
            IST_KEYS(x, c, p, keys);
            if (!ist_u32(x, c, p, "number", 1, 65535, &sp->number))
                ist_error(x, c, p, "number", "a port number is required");
            ist_u32(x, c, p, "targetPort", 1, 65535, &sp->target);
            ist_str(x, c, p, "protocol", &proto);
            ist_str(x, c, p, "name", &sp->name);
            sp->proto = ist_proto_of(proto, false, &sp->proto_named);
            if (proto != NULL && !sp->proto_named)
                ist_warn(x, c, p, "protocol",
                         "protocol %s is not known: traffic is detected as "
                         "HTTP or passed as TCP",
                         proto);
        } else {
            ist_str(x, c, p, "name", &sp->name);
            if (!ist_u32(x, c, p, "port", 1, 65535, &sp->number))
                ist_error(x, c, p, "port", "a port number is required");
            const struct tr_rnode *tp = tr_rnode_get(p, "targetPort");
            int64_t tn;
            if (tp != NULL && tr_rnode_int(tp, &tn)) {
                if (tn < 1 || tn > 65535)
                    ist_error(x, c, tp, "targetPort", "port %lld out of range", (long long)tn);
                else
                    sp->target = (uint32_t)tn;
            } else if (tp != NULL && tp->kind == TR_RNODE_SCALAR && tp->len > 0) {
                sp->target_name = tp->s;
            } else {
                sp->target = sp->number;
            }
            ist_str(x, c, p, "protocol", &proto);
            if (proto != NULL && strcmp(proto, "TCP") != 0)
                ist_warn(x, c, p, "protocol", "only TCP service ports are proxied; %s is not",
                         proto);
            ist_str(x, c, p, "appProtocol", &app);
            sp->proto = ist_proto_of(app, false, &sp->proto_named);
            if (!sp->proto_named)
                sp->proto = ist_proto_of(sp->name, true, &sp->proto_named);
        }
        if (sp->number != 0)
            s->n_ports++;
        ist_pop(c, saved);
    }
}

/* A virtual IP of a Service: its virtual hosts answer to it (a client
 * that dials the address sends it as the Host). */
static void add_vip(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *at,
                    const char *key, struct ist_service *s, const char *ip)
{
    unsigned char buf[16];
    bool v6 = inet_pton(AF_INET6, ip, buf) == 1;
    if (!v6 && inet_pton(AF_INET, ip, buf) != 1) {
        ist_warn(x, c, at, key, "\"%s\" is not an IP address: not used", ip);
        return;
    }
    for (size_t i = 0; i < s->n_vips; i++)
        if (strcmp(s->vips[i], ip) == 0)
            return;
    if (s->n_vips == sizeof(s->vips) / sizeof(s->vips[0]))
        return; /* at most one per family: Kubernetes allows two */
    s->vips[s->n_vips++] = v6 ? ist_printf(x, "[%s]", ip) : ip;
}

/* The fields of a Service's spec that are not its ports and selector. */
static void read_service_spec(struct ist_ctx *x, struct ist_cursor *c, const struct tr_resource *r,
                              struct ist_service *s, const char *cip)
{
    if (s->headless)
        ist_warn(x, c, r->spec, "clusterIP",
                 "a headless Service: requests for its name are balanced over its endpoints; "
                 "the endpoint a client picked by DNS is not kept");
    else if (cip != NULL && *cip != '\0')
        add_vip(x, c, r->spec, "clusterIP", s, cip);
    const struct tr_rnode *ips = ist_list(x, c, r->spec, "clusterIPs");
    size_t k = 0;
    for (const struct tr_rnode *e = ips ? ips->head : NULL; e; e = e->next, k++) {
        const char *ip;
        size_t saved = ist_push_key(c, "clusterIPs");
        if (!tr_rnode_str(e, &ip))
            ist_warn(x, c, e, NULL, "expected an IP address: not used");
        else if (strcmp(ip, "None") != 0)
            add_vip(x, c, e, NULL, s, ip);
        ist_pop(c, saved);
    }
    const char *v = NULL;
    if (ist_str(x, c, r->spec, "internalTrafficPolicy", &v) && strcmp(v, "Cluster") != 0)
        ist_warn(x, c, r->spec, "internalTrafficPolicy",
                 strcmp(v, "Local") == 0
                     ? "Local (only endpoints on the client's node) is not supported: endpoints on "
                       "every node are used"
                     : "expected Cluster or Local: endpoints on every node are used");
    if (ist_str(x, c, r->spec, "sessionAffinity", &v) && strcmp(v, "None") != 0)
        ist_warn(x, c, r->spec, "sessionAffinity",
                 "not used (Istio does not read it either): a DestinationRule's "
                 "loadBalancer.consistentHash (useSourceIp) keeps a client on one endpoint");
    if (ist_str(x, c, r->spec, "trafficDistribution", &v))
        ist_warn(x, c, r->spec, "trafficDistribution",
                 "%s is not supported yet (Istio ranks endpoints by network, region, zone "
                 "and subzone from it): a DestinationRule's localityLbSetting applies instead",
                 v);
    ist_bool(x, c, r->spec, "publishNotReadyAddresses", &s->publish_not_ready);
}

static void read_k8s_services(struct ist_ctx *x, size_t *cap)
{
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, CORE, "Service", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        struct ist_service *s = ist_alloc(x, 1, sizeof(*s));
        if (s == NULL)
            return;
        s->res = r;
        s->name = r->name;
        s->ns = r->ns ? r->ns : "default";
        s->host = ist_fqdn(x, s->name, s->ns);
        struct ist_cursor c;
        ist_cursor_init(&c, r, "spec");
        const char *type = NULL, *cip = NULL;
        ist_str(x, &c, r->spec, "type", &type);
        if (type != NULL && strcmp(type, "ExternalName") == 0) {
            ist_warn(x, &c, r->spec, "type",
                     "ExternalName services are not supported yet: "
                     "the service has no endpoints");
        }
        ist_str(x, &c, r->spec, "clusterIP", &cip);
        s->headless = cip != NULL && strcmp(cip, "None") == 0;
        read_service_spec(x, &c, r, s, cip);
        s->selector = ist_map(x, &c, r->spec, "selector");
        size_t saved = ist_push_key(&c, "ports");
        read_service_ports(x, &c, s, ist_list(x, &c, r->spec, "ports"), false);
        ist_pop(&c, saved);
        select_insts(x, s, false);
        if (!add_service(x, s, cap))
            return;
    }
}

/* A port entry's protocol: TCP when not written; a UDP or SCTP port is
 * not one the proxy can carry. */
static bool tcp_port(const struct tr_rnode *p)
{
    const char *proto;
    return !tr_rnode_str(tr_rnode_get(p, "protocol"), &proto) || strcmp(proto, "TCP") == 0;
}

/* Endpoints and EndpointSlices of a service: per service port, the
 * addresses the slice names for the port's name (or the only port). */
static size_t slice_port_of(const struct ist_service *s, size_t pi, const struct tr_rnode *ports)
{
    const struct ist_port *sp = &s->ports[pi];
    for (const struct tr_rnode *p = ports ? ports->head : NULL; p != NULL; p = p->next) {
        const char *name = NULL;
        int64_t num;
        const struct tr_rnode *nm = tr_rnode_get(p, "name");
        if (nm != NULL)
            tr_rnode_str(nm, &name);
        bool match = (sp->name == NULL && (name == NULL || *name == '\0')) ||
                     (sp->name != NULL && name != NULL && strcmp(sp->name, name) == 0);
        if (match && tcp_port(p) && tr_rnode_int(tr_rnode_get(p, "port"), &num) && num > 0 &&
            num < 65536)
            return (size_t)num;
    }
    return 0;
}

static const struct ist_inst *inst_by_ref(const struct ist_ctx *x, const struct tr_rnode *ref,
                                          const char *ns)
{
    const char *kind = NULL, *name = NULL, *rns = NULL;
    tr_rnode_str(tr_rnode_get(ref, "kind"), &kind);
    tr_rnode_str(tr_rnode_get(ref, "name"), &name);
    tr_rnode_str(tr_rnode_get(ref, "namespace"), &rns);
    if (kind == NULL || strcmp(kind, "Pod") != 0 || name == NULL)
        return NULL;
    for (size_t i = 0; i < x->n_insts; i++) {
        const struct ist_inst *in = x->insts[i];
        if (in->name != NULL && strcmp(in->name, name) == 0 && strcmp(in->ns, rns ? rns : ns) == 0)
            return in;
    }
    return NULL;
}

static void add_ep(struct ist_ctx *x, struct ist_service *s, size_t pi, const char *ip,
                   uint32_t port, const struct ist_inst *in)
{
    size_t n = s->n_eps_by_port[pi];
    /* Room doubles at 4, 8, 16...: the capacity follows from n. */
    if (n == 0 || (n >= 4 && (n & (n - 1)) == 0)) {
        struct ist_ep *nv = ist_alloc(x, n ? 2 * n : 4, sizeof(*nv));
        if (nv == NULL)
            return;
        if (n)
            memcpy(nv, s->eps_by_port[pi], n * sizeof(*nv));
        s->eps_by_port[pi] = nv;
    }
    s->eps_by_port[pi][n] = (struct ist_ep){.ip = ip, .port = port, .inst = in};
    s->n_eps_by_port[pi] = n + 1;
}

static bool slices_init(struct ist_ctx *x, struct ist_service *s)
{
    if (s->eps_by_port != NULL)
        return true;
    s->eps_by_port = ist_alloc(x, s->n_ports, sizeof(*s->eps_by_port));
    s->n_eps_by_port = ist_alloc(x, s->n_ports, sizeof(*s->n_eps_by_port));
    s->have_slices = s->eps_by_port != NULL && s->n_eps_by_port != NULL;
    return s->have_slices;
}

static void read_endpoint_slices(struct ist_ctx *x)
{
    size_t n;
    const struct tr_resource *const *v =
        tr_rset_of_kind(x->rs, "discovery.k8s.io", "EndpointSlice", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        const char *svc = tr_resource_label(r, "kubernetes.io/service-name");
        const char *ns = r->ns ? r->ns : "default";
        const char *host = svc ? ist_fqdn(x, svc, ns) : NULL;
        struct ist_service *s = host ? tr_strmap_get(&x->svc_by_host, host) : NULL;
        struct ist_cursor c;
        ist_cursor_init(&c, r, NULL);
        if (s == NULL || s->name == NULL) {
            ist_warn(x, &c, r->labels, NULL,
                     "no Service named by label kubernetes.io/service-name: slice ignored");
            continue;
        }
        const char *family = NULL;
        ist_str(x, &c, r->obj, "addressType", &family);
        if (family != NULL && strcmp(family, "IPv4") != 0 && strcmp(family, "IPv6") != 0) {
            ist_warn(x, &c, r->obj, "addressType", "only IPv4 and IPv6 slices are used");
            continue;
        }
        if (!slices_init(x, s))
            return;
        const struct tr_rnode *ports = tr_rnode_get(r->obj, "ports");
        const struct tr_rnode *eps = tr_rnode_get(r->obj, "endpoints");
        for (size_t pi = 0; pi < s->n_ports; pi++) {
            uint32_t port = (uint32_t)slice_port_of(s, pi, ports);
            if (port == 0)
                continue;
            for (const struct tr_rnode *e = eps ? eps->head : NULL; e; e = e->next) {
                bool ready = true;
                tr_rnode_bool(tr_rnode_get(tr_rnode_get(e, "conditions"), "ready"), &ready);
                if (!ready && !s->publish_not_ready)
                    continue;
                const struct ist_inst *in = inst_by_ref(x, tr_rnode_get(e, "targetRef"), ns);
                const struct tr_rnode *addrs = tr_rnode_get(e, "addresses");
                const char *ip;
                if (addrs != NULL && addrs->head != NULL && tr_rnode_str(addrs->head, &ip))
                    add_ep(x, s, pi, ip, port, in);
            }
        }
    }
}

/* One Endpoints object's addresses into s's endpoints; copy: the
 * addresses are copied into the registry (a patch, whose snapshot does not
 * live as long as the registry). */
static void endpoints_into(struct ist_ctx *x, struct ist_service *s, const struct tr_resource *r,
                           bool copy)
{
    const char *ns = r->ns ? r->ns : "default";
    {
        const struct tr_rnode *subsets = tr_rnode_get(r->obj, "subsets");
        for (const struct tr_rnode *sub = subsets ? subsets->head : NULL; sub; sub = sub->next) {
            const struct tr_rnode *ports = tr_rnode_get(sub, "ports");
            const struct tr_rnode *addrs = tr_rnode_get(sub, "addresses");
            for (size_t pi = 0; pi < s->n_ports; pi++) {
                uint32_t port = (uint32_t)slice_port_of(s, pi, ports);
                if (port == 0)
                    continue;
                /* publishNotReadyAddresses: the not-ready ones too */
                const struct tr_rnode *nr =
                    s->publish_not_ready ? tr_rnode_get(sub, "notReadyAddresses") : NULL;
                for (int pass = 0; pass < 2; pass++)
                    for (const struct tr_rnode *a = pass == 0 ? (addrs ? addrs->head : NULL)
                                                              : (nr ? nr->head : NULL);
                         a; a = a->next) {
                        const char *ip;
                        if (!tr_rnode_str(tr_rnode_get(a, "ip"), &ip))
                            continue;
                        if (copy && (ip = tr_arena_strdup(x->tmp, ip)) == NULL) {
                            ist_oom(x);
                            return;
                        }
                        add_ep(x, s, pi, ip, port,
                               inst_by_ref(x, tr_rnode_get(a, "targetRef"), ns));
                    }
            }
        }
    }
}

/* Whether s's endpoints came from an Endpoints object: EndpointSlices win
 * when a service has both (as in a cluster). */
static bool from_endpoints(const struct ist_service *s)
{
    return !(s->have_slices && s->res != NULL && s->eps_by_port != NULL && s->n_eps_by_port[0]);
}

static void read_endpoints(struct ist_ctx *x)
{
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, CORE, "Endpoints", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        const char *ns = r->ns ? r->ns : "default";
        struct ist_service *s = tr_strmap_get(&x->svc_by_host, ist_fqdn(x, r->name, ns));
        if (s == NULL || s->name == NULL) {
            struct ist_cursor c;
            ist_cursor_init(&c, r, NULL);
            ist_warn(x, &c, NULL, NULL, "no Service of this name: Endpoints ignored");
            continue;
        }
        if (!from_endpoints(s))
            continue;
        if (!slices_init(x, s))
            return;
        endpoints_into(x, s, r, false);
    }
}

bool ist_registry_endpoints_patchable(struct ist_ctx *x, const struct tr_resource *r)
{
    const char *ns = r->ns ? r->ns : "default";
    size_t n;
    const struct tr_resource *const *v =
        tr_rset_of_kind(x->rs, "discovery.k8s.io", "EndpointSlice", &n);
    for (size_t i = 0; i < n; i++) {
        const char *svc = tr_resource_label(v[i], "kubernetes.io/service-name");
        if (svc != NULL && strcmp(svc, r->name) == 0 &&
            strcmp(v[i]->ns ? v[i]->ns : "default", ns) == 0)
            return false; /* slices feed it: not patched here */
    }
    return true;
}

bool ist_registry_patch_endpoints(struct ist_ctx *x, const struct tr_resource *r)
{
    const char *ns = r->ns ? r->ns : "default";
    struct ist_service *s = tr_strmap_get(&x->svc_by_host, ist_fqdn(x, r->name, ns));
    if (s == NULL || s->name == NULL)
        return true; /* ignored before and after (reported when built) */
    if (!ist_registry_endpoints_patchable(x, r) || !slices_init(x, s))
        return false;
    for (size_t pi = 0; pi < s->n_ports; pi++)
        s->n_eps_by_port[pi] = 0; /* the old arrays stay in the arena: patches are counted */
    endpoints_into(x, s, r, true);
    return !x->oom;
}

static bool host_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (!(isalnum(ch) || ch == '-' || ch == '.' || (ch == '*' && i == 0)))
            return false;
    }
    return h[0] != '*' || n > 1; /* "*.example.com", or "*x": any host ending in x */
}

/* subjectAltNames: names a server's certificate carries, which the
 * proxy checks (compile.c); one it could not check is reported and left
 * out. */
static void check_sans(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *sans)
{
    size_t i = 0;
    for (const struct tr_rnode *e = sans ? sans->head : NULL; e; e = e->next, i++) {
        const char *v;
        bool ok = tr_rnode_str(e, &v) && e->len > 0 && e->len <= 4096 && strlen(v) == e->len;
        for (size_t k = 0; ok && k < e->len; k++)
            ok = (unsigned char)v[k] > ' ' && (unsigned char)v[k] < 0x7f;
        if (ok)
            continue;
        size_t saved = ist_push_key(c, "subjectAltNames");
        ist_push_index(c, i);
        ist_warn(x, c, e, NULL, "not a DNS name or URI the proxy can check; ignored");
        ist_pop(c, saved);
    }
}

/* icap: the instances' array capacity (endpoints are instances), cap: the
 * services'. */
static void read_service_entries(struct ist_ctx *x, size_t *icap, size_t *cap)
{
    static const struct ist_key keys[] = {
        {"hosts", NULL},
        {"addresses", "VIPs are not matched yet: HTTP hosts are routed by name, TCP by port"},
        {"ports", NULL},
        {"location", NULL},
        {"resolution", NULL},
        {"endpoints", NULL},
        {"workloadSelector", NULL},
        {"exportTo", NULL},
        {"subjectAltNames", NULL},
    };
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "ServiceEntry", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        struct ist_cursor c;
        ist_cursor_init(&c, r, "spec");
        const struct tr_rnode *spec = r->spec;
        if (!IST_KEYS(x, &c, spec, keys))
            continue;
        const char *ns = r->ns ? r->ns : "default";
        const struct tr_rnode *hosts = ist_list(x, &c, spec, "hosts");
        if (hosts == NULL || hosts->n == 0) {
            ist_error(x, &c, spec, "hosts", "at least one host is required");
            continue;
        }
        check_sans(x, &c, ist_list(x, &c, spec, "subjectAltNames"));
        const char *loc = NULL, *res = NULL;
        ist_str(x, &c, spec, "location", &loc);
        bool external = loc != NULL && strcmp(loc, "MESH_EXTERNAL") == 0;
        if (loc != NULL && !external && strcmp(loc, "MESH_INTERNAL") != 0)
            ist_error(x, &c, spec, "location", "expected MESH_INTERNAL or MESH_EXTERNAL");
        enum ist_resolution rk = IST_RES_NONE;
        ist_str(x, &c, spec, "resolution", &res);
        if (res == NULL || strcmp(res, "NONE") == 0)
            rk = IST_RES_NONE;
        else if (strcmp(res, "STATIC") == 0)
            rk = IST_RES_STATIC;
        else if (strcmp(res, "DNS") == 0)
            rk = IST_RES_DNS;
        else if (strcmp(res, "DNS_ROUND_ROBIN") == 0)
            rk = IST_RES_DNS_RR;
        else
            ist_error(x, &c, spec, "resolution",
                      "expected NONE, STATIC, DNS or DNS_ROUND_ROBIN, got \"%s\"", res);
        if (rk == IST_RES_NONE && !x->o->capture)
            ist_warn(x, &c, tr_rnode_get(spec, "resolution"), "resolution",
                     "resolution NONE forwards to the caller's original destination, which "
                     "needs traffic capture (--capture): without it listed endpoints are "
                     "used, else none");
        if (ist_map(x, &c, spec, "workloadSelector") && tr_rnode_get(spec, "endpoints"))
            ist_error(x, &c, spec, "workloadSelector",
                      "only one of endpoints and "
                      "workloadSelector");
        const struct tr_rnode *ports = ist_list(x, &c, spec, "ports");
        const struct tr_rnode *eps = ist_list(x, &c, spec, "endpoints");
        const struct tr_rnode *exp = ist_list(x, &c, spec, "exportTo");
        /* Endpoints are instances of this entry only. */
        size_t first_inst = x->n_insts;
        size_t k = 0;
        for (const struct tr_rnode *e = eps ? eps->head : NULL; e; e = e->next, k++) {
            size_t saved = ist_push_key(&c, "endpoints");
            ist_push_index(&c, k);
            struct ist_inst *in = new_inst(x);
            if (in == NULL)
                return;
            in->ns = ns;
            read_workload_entry(x, &c, e, in);
            in->sa = in->sa ? in->sa : "default";
            in->sidecar = !external && has_sidecar(NULL, in->labels);
            if (in->ip == NULL)
                ist_error(x, &c, e, "address", "an address is required");
            else if (!push_inst(x, in, icap))
                return;
            ist_pop(&c, saved);
        }
        size_t last_inst = x->n_insts;
        if (ist_refused(x, r)) {
            x->n_insts = first_inst; /* drop this entry's instances */
            continue;
        }
        size_t hi = 0;
        for (const struct tr_rnode *h = hosts->head; h; h = h->next, hi++) {
            const char *hs;
            size_t saved = ist_push_key(&c, "hosts");
            ist_push_index(&c, hi);
            if (!tr_rnode_str(h, &hs) || !host_ok(hs)) {
                char b[80];
                ist_error(x, &c, h, NULL, "expected a DNS name, *.suffix or *suffix, got %s",
                          tr_rnode_describe(h, b, sizeof(b)));
                ist_pop(&c, saved);
                continue;
            }
            ist_pop(&c, saved);
            struct ist_service *s = ist_alloc(x, 1, sizeof(*s));
            if (s == NULL)
                return;
            s->res = r;
            s->ns = ns;
            s->host = ist_fqdn(x, hs, ns);
            s->external = external;
            s->resolution = rk;
            size_t sp = ist_push_key(&c, "ports");
            read_service_ports(x, &c, s, ports, true);
            ist_pop(&c, sp);
            if (eps != NULL) {
                s->insts = ist_alloc(x, last_inst - first_inst, sizeof(*s->insts));
                for (size_t j = first_inst; s->insts && j < last_inst; j++)
                    s->insts[s->n_insts++] = x->insts[j];
            } else {
                const struct tr_rnode *ws = tr_rnode_get(spec, "workloadSelector");
                s->selector = tr_rnode_get(ws, "labels");
                select_insts(x, s, false);
            }
            if (exp != NULL) {
                s->export_to = ist_alloc(x, exp->n, sizeof(*s->export_to));
                for (const struct tr_rnode *e = exp->head; s->export_to && e; e = e->next)
                    tr_rnode_str(e, &s->export_to[s->n_export_to++]);
            }
            if (tr_strmap_get(&x->svc_by_host, s->host) != NULL) {
                ist_warn(x, &c, h, NULL,
                         "host %s is already defined by another service or "
                         "entry: this one is ignored",
                         s->host);
                continue;
            }
            if (!add_service(x, s, cap))
                return;
        }
    }
}

/* Kubernetes Services' exportTo comes from an annotation. */
static void read_export_annotations(struct ist_ctx *x)
{
    for (size_t i = 0; i < x->n_svcs; i++) {
        struct ist_service *s = x->svcs[i];
        if (s->name == NULL || s->res == NULL)
            continue;
        const struct tr_rnode *a =
            tr_rnode_get(s->res->annotations, "networking.istio.io/exportTo");
        const char *v;
        if (a == NULL || !tr_rnode_str(a, &v))
            continue;
        size_t n = 1;
        for (const char *p = v; *p; p++)
            n += *p == ',';
        s->export_to = ist_alloc(x, n, sizeof(*s->export_to));
        if (s->export_to == NULL)
            return;
        char *copy = ist_printf(x, "%s", v);
        for (char *save = NULL, *t = copy ? strtok_r(copy, ",", &save) : NULL; t;
             t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            s->export_to[s->n_export_to++] = t;
        }
    }
}

/* Services by the first label of their selector (see internal.h). */
static void index_selectors(struct ist_ctx *x)
{
    tr_strmap_init(&x->svc_by_selector, x->tmp);
    for (int pass = 0; pass < 2 && !x->oom; pass++) {
        for (size_t i = 0; i < x->n_svcs && !x->oom; i++) {
            struct ist_service *s = x->svcs[i];
            if (s->name == NULL || s->selector == NULL)
                continue;
            const struct tr_rnode *k = s->selector->kind == TR_RNODE_MAP ? s->selector->head : NULL;
            const char *v = "";
            if (k != NULL && k->next != NULL && !tr_rnode_str(k->next, &v))
                v = "";
            const char *key = k != NULL && k->next != NULL ? label_key(x, s->ns, k->s, v)
                                                           : ist_printf(x, "%s\n", s->ns);
            struct ist_svc_list *lst = key ? tr_strmap_get(&x->svc_by_selector, key) : NULL;
            if (lst == NULL && key != NULL && pass == 0) {
                bool oom = false;
                lst = ist_alloc(x, 1, sizeof(*lst));
                if (lst != NULL)
                    tr_strmap_put(&x->svc_by_selector, key, lst, &oom);
                if (lst == NULL || oom) {
                    ist_oom(x);
                    return;
                }
            }
            if (lst == NULL)
                continue;
            if (pass == 0) {
                lst->cap++;
                continue;
            }
            if (lst->v == NULL && (lst->v = ist_alloc(x, lst->cap, sizeof(*lst->v))) == NULL)
                return;
            lst->v[lst->n++] = s;
        }
    }
    x->svc_selector_indexed = !x->oom;
}

int ist_registry_build(struct ist_ctx *x)
{
    size_t icap = 0, scap = 0;
    tr_strmap_init(&x->svc_by_host, x->tmp);
    read_pods(x, &icap);
    read_workload_entries(x, &icap);
    index_insts(x);
    read_k8s_services(x, &scap);
    read_service_entries(x, &icap, &scap);
    read_endpoint_slices(x);
    read_endpoints(x);
    read_export_annotations(x);
    index_selectors(x);
    return x->oom ? -1 : 0;
}

const struct ist_service *ist_service_by_host(const struct ist_ctx *x, const char *host)
{
    return tr_strmap_get(&x->svc_by_host, host);
}

/* A named targetPort: the selected pod's container port of that name. */
static uint32_t named_target(const struct ist_inst *in, const char *name)
{
    for (const struct tr_rnode *ct = in->container_ports ? in->container_ports->head : NULL; ct;
         ct = ct->next) {
        const struct tr_rnode *ports = tr_rnode_get(ct, "ports");
        for (const struct tr_rnode *p = ports ? ports->head : NULL; p; p = p->next) {
            const char *pn;
            int64_t num;
            if (tr_rnode_str(tr_rnode_get(p, "name"), &pn) && strcmp(pn, name) == 0 &&
                tcp_port(p) && tr_rnode_int(tr_rnode_get(p, "containerPort"), &num) && num > 0 &&
                num < 65536)
                return (uint32_t)num;
        }
    }
    return 0;
}

size_t ist_service_eps(struct ist_ctx *x, const struct ist_service *s, size_t pi,
                       struct ist_ep **out)
{
    *out = NULL;
    if (s->have_slices) {
        *out = s->eps_by_port[pi];
        return s->n_eps_by_port[pi];
    }
    if (s->n_insts == 0)
        return 0;
    struct ist_ep *v = ist_alloc(x, s->n_insts, sizeof(*v));
    if (v == NULL)
        return 0;
    const struct ist_port *sp = &s->ports[pi];
    size_t n = 0;
    for (size_t i = 0; i < s->n_insts; i++) {
        const struct ist_inst *in = s->insts[i];
        if (in->ip == NULL)
            continue; /* a template, or a pod not scheduled yet */
        if (in->finished || (in->not_ready && !s->publish_not_ready))
            continue; /* finished, or terminating or not Ready */
        uint32_t port = sp->target ? sp->target : sp->number;
        if (sp->target_name != NULL)
            port = named_target(in, sp->target_name);
        for (size_t k = 0; k < in->n_overrides; k++) {
            if (sp->name != NULL && strcmp(in->port_names[k], sp->name) == 0)
                port = in->port_override[k];
        }
        if (port == 0)
            continue;
        v[n++] = (struct ist_ep){.ip = in->ip, .port = port, .inst = in};
    }
    *out = v;
    return n;
}

/* The workload a model is compiled for: a Pod or WorkloadEntry by name, or a
 * Deployment-like template (labels and identity, no address). */
int ist_workload_find(struct ist_ctx *x)
{
    const char *ns = x->o->ns, *name = x->o->name;
    for (size_t i = 0; i < x->n_insts; i++) {
        const struct ist_inst *in = x->insts[i];
        if (in->name != NULL && strcmp(in->name, name) == 0 && strcmp(in->ns, ns) == 0) {
            x->wl_labels = in->labels;
            x->wl_sa = in->sa;
            x->wl_ip = in->ip;
            x->wl_locality = in->locality;
            return 0;
        }
    }
    static const char *const kinds[] = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        const struct tr_resource *r = tr_rset_find(x->rs, "apps", kinds[k], ns, name);
        if (r == NULL && strcmp(ns, "default") == 0)
            r = tr_rset_find(x->rs, "apps", kinds[k], NULL, name);
        if (r == NULL)
            continue;
        const struct tr_rnode *tpl = tr_rnode_get(r->spec, "template");
        x->wl_labels = tr_rnode_get(tr_rnode_get(tpl, "metadata"), "labels");
        x->wl_locality = ist_locality_of(x, x->wl_labels, NULL);
        const char *sa = NULL;
        const struct tr_rnode *ps = tr_rnode_get(tpl, "spec");
        if (!tr_rnode_str(tr_rnode_get(ps, "serviceAccountName"), &sa))
            tr_rnode_str(tr_rnode_get(ps, "serviceAccount"), &sa);
        x->wl_sa = sa ? sa : "default";
        x->wl_res = r;
        return 0;
    }
    tr_diags_add(x->d, TR_DIAG_ERROR, &(struct tr_diag_where){0},
                 "workload %s/%s: no Pod, WorkloadEntry, Deployment, StatefulSet, DaemonSet or "
                 "ReplicaSet of that name in the input",
                 ns, name);
    return -1;
}
