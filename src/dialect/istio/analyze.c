/* `trellis ctl analyze`: the mistakes that break traffic at run time, found
 * before anything runs, each with the resources involved. */
#include <string.h>

#include "dialect/istio/internal.h"

static void conflicting_virtual_services(struct ist_ctx *x)
{
    struct tr_strmap seen;
    tr_strmap_init(&seen, x->tmp);
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "VirtualService", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        if (ist_refused(x, r) || !ist_vs_for_mesh(r))
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
            struct ist_cursor c;
            ist_cursor_init(&c, r, "spec.hosts");
            ist_push_index(&c, k);
            bool oom = false;
            const struct tr_resource *prev = tr_strmap_put(&seen, fq, (void *)r, &oom);
            if (oom)
                return (void)ist_oom(x);
            if (prev != NULL && prev != r) {
                ist_finding(x, &c, h, NULL,
                            "host %s also has VirtualService %s/%s (%s:%u): sidecars use only "
                            "the first, so this one's rules for it never apply",
                            fq, prev->ns ? prev->ns : "default", prev->name, prev->file,
                            prev->line);
            } else if (fq[0] != '*' && ist_service_by_host(x, fq) == NULL) {
                ist_warn(x, &c, h, NULL, "host %s is not a known service or ServiceEntry", fq);
            }
        }
    }
}

/* A delegate (no hosts) that no root's rule names: its rules apply
 * nowhere (a root naming a missing delegate is reported by its check). */
static void unused_delegates(struct ist_ctx *x)
{
    struct tr_strmap named;
    tr_strmap_init(&named, x->tmp);
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "VirtualService", &n);
    for (size_t i = 0; i < n; i++) {
        if (v[i]->spec == NULL || ist_vs_is_delegate(v[i]))
            continue;
        const struct tr_rnode *http = tr_rnode_get(v[i]->spec, "http");
        for (const struct tr_rnode *e = http ? http->head : NULL; e; e = e->next) {
            const struct tr_rnode *d = tr_rnode_get(e, "delegate");
            const char *name, *ns = NULL;
            if (d == NULL || !tr_rnode_str(tr_rnode_get(d, "name"), &name))
                continue;
            if (!tr_rnode_str(tr_rnode_get(d, "namespace"), &ns) || *ns == '\0')
                ns = v[i]->ns ? v[i]->ns : "default";
            const char *key = ist_printf(x, "%s/%s", ns, name);
            bool oom = false;
            if (key == NULL || (tr_strmap_put(&named, key, (void *)key, &oom), oom))
                return (void)ist_oom(x);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        if (r->spec == NULL || ist_refused(x, r) || !ist_vs_is_delegate(r))
            continue;
        const char *key = ist_printf(x, "%s/%s", r->ns ? r->ns : "default", r->name);
        if (key == NULL)
            return (void)ist_oom(x);
        if (tr_strmap_get(&named, key) != NULL)
            continue;
        struct ist_cursor c;
        ist_cursor_init(&c, r, "spec");
        ist_warn(x, &c, NULL, NULL,
                 "a delegate VirtualService (no hosts) that no root VirtualService's rule names "
                 "(delegate: {name: %s, namespace: %s}): its rules are used nowhere",
                 r->name, r->ns ? r->ns : "default");
    }
}

static void unused_destination_rules(struct ist_ctx *x)
{
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "DestinationRule", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        const char *h;
        if (ist_refused(x, r) || !tr_rnode_str(tr_rnode_get(r->spec, "host"), &h))
            continue;
        const char *fq = ist_fqdn(x, h, r->ns ? r->ns : "default");
        if (fq == NULL || fq[0] == '*' || ist_service_by_host(x, fq) != NULL)
            continue;
        struct ist_cursor c;
        ist_cursor_init(&c, r, "spec");
        ist_warn(x, &c, tr_rnode_get(r->spec, "host"), "host",
                 "host %s is not a known service or ServiceEntry: nobody routes to it, so this "
                 "rule has no effect",
                 fq);
    }
}

static void port_names(struct ist_ctx *x)
{
    for (size_t i = 0; i < x->n_svcs; i++) {
        const struct ist_service *s = x->svcs[i];
        if (s->name == NULL)
            continue; /* ServiceEntry ports carry their protocol */
        for (size_t p = 0; p < s->n_ports; p++) {
            if (s->ports[p].proto_named)
                continue;
            struct ist_cursor c;
            ist_cursor_init(&c, s->res, "spec.ports");
            ist_push_index(&c, p);
            ist_warn(x, &c, NULL, NULL,
                     "port %u (%s) names no protocol (appProtocol, or a name such as http-web, "
                     "grpc-api, tcp-db): it is detected per connection",
                     s->ports[p].number, s->ports[p].name ? s->ports[p].name : "unnamed");
        }
    }
}

int tr_istio_analyze(const struct tr_rset *rs, const struct tr_istio_options *o, struct tr_diags *d)
{
    struct ist_ctx x;
    if (!ist_ctx_init(&x, rs, o, d))
        return -1;
    x.analyze = true;
    x.wl_ns = "default";
    if (ist_registry_build(&x) == 0) {
        ist_check_all(&x);
        conflicting_virtual_services(&x);
        unused_delegates(&x);
        unused_destination_rules(&x);
        port_names(&x);
        ist_peer_auth_analyze(&x);
    }
    ist_ctx_fini(&x);
    return d->n_errors ? 1 : 0;
}
