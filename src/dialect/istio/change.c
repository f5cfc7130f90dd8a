/* What a change of the resources can reach, for the control plane's
 * incremental recompiles (istio.h, "Incremental recompiles").
 *
 * A workload's model is a function of the whole snapshot, so the safe
 * answer to "which models can a change alter?" is "all of them". The
 * common changes are narrower: endpoints come and go, a canary's weights
 * move, a DestinationRule is tuned. Those reach only the models that name
 * the host they are about, and a sidecar's model names, in its clusters
 * and virtual hosts, every host it routes to (a route to another host
 * names that host's cluster too). So a change made only of such objects is
 * a set of hosts, and anything else is "any".
 *
 * Hosts are keyed by their first DNS label ("reviews" for
 * reviews.prod.svc.cluster.local, for the short name reviews and for
 * reviews.prod:9080): a short name needs no namespace to be keyed, and
 * two hosts sharing a label (or a hash) only cost an extra compile. A
 * VirtualService or DestinationRule whose host is no Service's and no
 * ServiceEntry's makes the change "any": a new virtual host could appear
 * in a model that names nothing of it yet. So does a VirtualService bound
 * to a gateway (a gateway's hosts are its own). A delegate VirtualService
 * (no hosts) is the hosts of the roots that name it. */
#include <stdlib.h>
#include <string.h>

#include "dialect/istio/internal.h"

#define GROW_MIN 16u

static uint64_t label_key(const char *h, size_t len)
{
    uint64_t k = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len && h[i] != '.' && h[i] != ':'; i++) {
        unsigned char c = (unsigned char)h[i];
        k = (k ^ (c >= 'A' && c <= 'Z' ? c + 32u : c)) * 1099511628211ull;
    }
    return k;
}

/* Adds the key of host h; a wildcard host (any '*') makes the set "any". */
/* The key of a host's DestinationRule alone (what an inbound cluster of
 * the host's own workloads depends on), apart from the host's key. */
static uint64_t policy_key(uint64_t host_key)
{
    return (host_key ^ 0x9e3779b97f4a7c15ull) * 1099511628211ull;
}

static bool add_host_key(struct tr_istio_hosts *s, size_t *cap, const char *h, bool policy)
{
    if (h == NULL || *h == '\0' || strchr(h, '*') != NULL) {
        s->any = true;
        return true;
    }
    if (s->n == *cap) {
        size_t nc = *cap ? *cap * 2 : GROW_MIN;
        uint64_t *nv = realloc(s->keys, nc * sizeof(*nv));
        if (nv == NULL)
            return false;
        s->keys = nv;
        *cap = nc;
    }
    uint64_t k = label_key(h, strlen(h));
    s->keys[s->n++] = policy ? policy_key(k) : k;
    return true;
}

static bool add_host(struct tr_istio_hosts *s, size_t *cap, const char *h)
{
    return add_host_key(s, cap, h, false);
}

static int key_order(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void sort_unique(struct tr_istio_hosts *s)
{
    if (s->n < 2)
        return;
    qsort(s->keys, s->n, sizeof(*s->keys), key_order);
    size_t w = 1;
    for (size_t i = 1; i < s->n; i++)
        if (s->keys[i] != s->keys[w - 1])
            s->keys[w++] = s->keys[i];
    s->n = w;
}

static bool has_key(const struct tr_istio_hosts *s, uint64_t k)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->keys[mid] == k)
            return true;
        if (s->keys[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

void tr_istio_hosts_free(struct tr_istio_hosts *s)
{
    free(s->keys);
    *s = (struct tr_istio_hosts){0};
}

bool tr_istio_hosts_meet(const struct tr_istio_hosts *model, const struct tr_istio_hosts *change)
{
    if (change->any || model->any)
        return change->any || change->n > 0;
    /* both sorted: walk the smaller, look up in the larger */
    const struct tr_istio_hosts *small = model->n <= change->n ? model : change;
    const struct tr_istio_hosts *large = small == model ? change : model;
    for (size_t i = 0; i < small->n; i++)
        if (has_key(large, small->keys[i]))
            return true;
    return false;
}

/* ------------------------------------------------------------ a model */

bool tr_istio_model_hosts(const struct tr_config *cfg, struct tr_istio_hosts *out)
{
    *out = (struct tr_istio_hosts){0};
    size_t cap = 0;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        const struct tr_cluster_cfg *c = &cfg->clusters[i];
        /* outbound|PORT|SUBSET|HOST. An inbound cluster (inbound|PORT||)
         * is the workload's own application: its service label names the
         * workload's Service, whose routes and endpoints are its callers'
         * business, but whose DestinationRule's connection pool it takes
         * (without a Sidecar's): a change of that rule reaches it. */
        if (c->name != NULL && strncmp(c->name, "inbound|", 8) == 0) {
            if (c->service != NULL && !add_host_key(out, &cap, c->service, true))
                goto oom;
            continue;
        }
        const char *bar = c->name ? strrchr(c->name, '|') : NULL;
        if (bar != NULL && bar[1] != '\0' && !add_host(out, &cap, bar + 1))
            goto oom;
        if (c->service != NULL && !add_host(out, &cap, c->service))
            goto oom;
    }
    for (size_t t = 0; t < cfg->n_route_tables; t++)
        for (size_t v = 0; v < cfg->route_tables[t].n_vhosts; v++) {
            const struct tr_vhost_cfg *vh = &cfg->route_tables[t].vhosts[v];
            /* A wildcard domain is an inbound catch-all or a gateway's:
             * neither takes routes from a mesh VirtualService (a gateway's
             * make any change "any"), and what it routes to is a cluster. */
            for (size_t d = 0; d < vh->n_domains; d++)
                if (strchr(vh->domains[d], '*') == NULL && !add_host(out, &cap, vh->domains[d]))
                    goto oom;
        }
    sort_unique(out);
    return true;
oom:
    tr_istio_hosts_free(out);
    return false;
}

/* ------------------------------------------------------------ a change */

struct change {
    const struct tr_rset *now;
    struct tr_istio_hosts *out;
    size_t cap;
    struct tr_istio_hosts known; /* Services' and ServiceEntries' hosts; built when needed */
    bool known_built;
    size_t n;
    bool oom;
    bool registry_kept; /* only in-place edits of VirtualServices and DestinationRules */
};

static bool build_known(struct change *ch)
{
    size_t cap = 0, n;
    const struct tr_resource *const *v = tr_rset_of_kind(ch->now, "", "Service", &n);
    for (size_t i = 0; i < n; i++)
        if (!add_host(&ch->known, &cap, v[i]->name))
            return false;
    v = tr_rset_of_kind(ch->now, IST_GROUP, "ServiceEntry", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_rnode *hosts = tr_rnode_get(v[i]->spec, "hosts");
        for (const struct tr_rnode *h = hosts ? hosts->head : NULL; h; h = h->next) {
            const char *s;
            if (tr_rnode_str(h, &s) && strchr(s, '*') == NULL && !add_host(&ch->known, &cap, s))
                return false;
        }
    }
    ch->known.any = false; /* a nameless Service is not "every host" */
    sort_unique(&ch->known);
    ch->known_built = true;
    return true;
}

/* A host of a VirtualService or DestinationRule: keyed if some Service or
 * ServiceEntry has it, else the change is "any". */
static bool routed_host(struct change *ch, const struct tr_rnode *n)
{
    const char *h;
    if (!tr_rnode_str(n, &h) || *h == '\0' || strchr(h, '*') != NULL) {
        ch->out->any = true;
        return true;
    }
    if (!ch->known_built && !build_known(ch))
        return false;
    if (!has_key(&ch->known, label_key(h, strlen(h)))) {
        ch->out->any = true;
        return true;
    }
    return add_host(ch->out, &ch->cap, h);
}

/* gateways absent or naming only "mesh": the sidecars' routes only */
static bool mesh_only(const struct tr_resource *vs)
{
    const struct tr_rnode *gw = tr_rnode_get(vs->spec, "gateways");
    if (gw == NULL)
        return true;
    if (gw->kind != TR_RNODE_SEQ)
        return false;
    for (const struct tr_rnode *g = gw->head; g; g = g->next) {
        const char *s;
        if (!tr_rnode_str(g, &s) || strcmp(s, "mesh") != 0)
            return false;
    }
    return true;
}

/* A VirtualService with hosts, as a change: its hosts, or "any" when it
 * is bound to a gateway or names a host no Service has. */
static bool vs_hosts(struct change *ch, const struct tr_resource *r)
{
    const struct tr_rnode *hosts = tr_rnode_get(r->spec, "hosts");
    if (!mesh_only(r) || hosts == NULL || hosts->kind != TR_RNODE_SEQ || hosts->n == 0) {
        ch->out->any = true;
        return true;
    }
    for (const struct tr_rnode *h = hosts->head; h; h = h->next)
        if (!routed_host(ch, h))
            return false;
    return true;
}

/* A delegate VirtualService (no hosts) acts only through the roots whose
 * rules name it: its change reaches their hosts. The roots are those of
 * the new snapshot; a root changed in the same change (or gone) is
 * classified on its own, both versions. */
static bool delegate_hosts(struct change *ch, const struct tr_resource *d)
{
    const char *dns = d->ns ? d->ns : "default";
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(ch->now, IST_GROUP, "VirtualService", &n);
    for (size_t i = 0; i < n && !ch->out->any; i++) {
        const struct tr_rnode *hosts = tr_rnode_get(v[i]->spec, "hosts");
        if (hosts == NULL || hosts->kind != TR_RNODE_SEQ || hosts->n == 0)
            continue; /* a delegate's delegate is refused: it routes nothing */
        const char *rns = v[i]->ns ? v[i]->ns : "default";
        const struct tr_rnode *http = tr_rnode_get(v[i]->spec, "http");
        for (const struct tr_rnode *e = http ? http->head : NULL; e; e = e->next) {
            const struct tr_rnode *dg = tr_rnode_get(e, "delegate");
            const char *name, *ns;
            if (dg == NULL || !tr_rnode_str(tr_rnode_get(dg, "name"), &name) ||
                strcmp(name, d->name) != 0)
                continue;
            if (!tr_rnode_str(tr_rnode_get(dg, "namespace"), &ns) || *ns == '\0')
                ns = rns;
            if (strcmp(ns, dns) != 0)
                continue;
            if (!vs_hosts(ch, v[i]))
                return false;
            break;
        }
    }
    return true;
}

/* One version (before or after) of a changed object. */
static bool classify(struct change *ch, const struct tr_resource *r)
{
    if (r == NULL)
        return true;
    if (r->group[0] == '\0' && strcmp(r->kind, "Endpoints") == 0)
        return add_host(ch->out, &ch->cap, r->name);
    if (strcmp(r->group, "discovery.k8s.io") == 0 && strcmp(r->kind, "EndpointSlice") == 0) {
        const char *svc = tr_resource_label(r, "kubernetes.io/service-name");
        if (svc == NULL)
            ch->out->any = true;
        return svc == NULL || add_host(ch->out, &ch->cap, svc);
    }
    if (strcmp(r->group, IST_GROUP) == 0 && strcmp(r->kind, "VirtualService") == 0) {
        const struct tr_rnode *hosts = tr_rnode_get(r->spec, "hosts");
        if (r->spec != NULL && (hosts == NULL || tr_rnode_is_null(hosts) ||
                                (hosts->kind == TR_RNODE_SEQ && hosts->n == 0)))
            return delegate_hosts(ch, r);
        return vs_hosts(ch, r);
    }
    if (strcmp(r->group, IST_GROUP) == 0 && strcmp(r->kind, "DestinationRule") == 0) {
        size_t before = ch->out->n;
        if (!routed_host(ch, tr_rnode_get(r->spec, "host")))
            return false;
        const char *h;
        return ch->out->n == before || !tr_rnode_str(tr_rnode_get(r->spec, "host"), &h) ||
               add_host_key(ch->out, &ch->cap, h, true); /* its workloads' inbound side */
    }
    ch->out->any = true; /* anything else may reach any model */
    return true;
}

/* Whether a DestinationRule's subsets (by name) differ between x and y
 * (either may be NULL). A route to a subset no rule defines names no
 * cluster, so its host is not among the model's: defining the subset
 * later must reach every proxy. */
static bool subsets_differ(const struct tr_resource *x, const struct tr_resource *y)
{
    const struct tr_rnode *a = x ? tr_rnode_get(x->spec, "subsets") : NULL;
    const struct tr_rnode *b = y ? tr_rnode_get(y->spec, "subsets") : NULL;
    a = a != NULL && a->kind == TR_RNODE_SEQ ? a->head : NULL;
    b = b != NULL && b->kind == TR_RNODE_SEQ ? b->head : NULL;
    for (; a != NULL && b != NULL; a = a->next, b = b->next) {
        const char *na = NULL, *nb = NULL;
        tr_rnode_str(tr_rnode_get(a, "name"), &na);
        tr_rnode_str(tr_rnode_get(b, "name"), &nb);
        if (na == NULL || nb == NULL || strcmp(na, nb) != 0)
            return true;
    }
    return a != NULL || b != NULL;
}

static bool on_diff(void *arg, const struct tr_resource *x, const struct tr_resource *y)
{
    struct change *ch = arg;
    ch->n++;
    const struct tr_resource *r = x ? x : y;
    if (strcmp(r->group, IST_GROUP) == 0 && strcmp(r->kind, "DestinationRule") == 0 &&
        subsets_differ(x, y))
        ch->out->any = true;
    bool routing =
        strcmp(x ? x->group : "", IST_GROUP) == 0 &&
        (strcmp(x->kind, "VirtualService") == 0 || strcmp(x->kind, "DestinationRule") == 0);
    bool endpoints = x != NULL && x->group[0] == '\0' && strcmp(x->kind, "Endpoints") == 0;
    if (x == NULL || y == NULL || x->index != y->index || !(routing || endpoints))
        ch->registry_kept = false;
    if (!classify(ch, x) || !classify(ch, y)) {
        ch->oom = true;
        return false;
    }
    return true;
}

bool tr_istio_change_hosts(const struct tr_rset *before, const struct tr_rset *after,
                           struct tr_istio_hosts *out, size_t *n_objects, bool *registry_kept)
{
    *out = (struct tr_istio_hosts){0};
    struct change ch = {.now = after, .out = out, .registry_kept = before != NULL};
    tr_rset_diff(before, after, on_diff, &ch);
    tr_istio_hosts_free(&ch.known);
    if (n_objects != NULL)
        *n_objects = ch.n;
    if (registry_kept != NULL)
        *registry_kept = ch.registry_kept && !ch.oom;
    if (ch.oom) {
        tr_istio_hosts_free(out);
        return false;
    }
    if (out->any) { /* the keys say nothing more */
        free(out->keys);
        out->keys = NULL;
        out->n = 0;
    }
    sort_unique(out);
    return true;
}
