/* Locality load balancing: each endpoint's priority (and, for distribute,
 * each locality's weight) as seen from the workload being compiled, decided
 * here once so the proxy only counts healthy endpoints per level.
 *
 * Istio's rules (pilot/pkg/networking/core/loadbalancer, ApplyLocality-
 * LoadBalancer; docs/compat/istio.md, "Locality load balancing"):
 *   - a rule's localityLbSetting replaces the mesh's; enabled: false (in
 *     either) turns it off;
 *   - distribute, when an entry's `from` matches the client's locality,
 *     weighs the target localities and drops the endpoints of the others
 *     (and then no failover applies);
 *   - else, only with outlierDetection (nothing else marks endpoints
 *     unhealthy): failoverPriority ranks endpoints by how many of the listed
 *     labels, in order, agree with the client's; without it (or together
 *     with failover) localities rank: same region, zone and subzone 0, zone
 *     1, region 2, another region 3, or 4 when a failover entry for the
 *     client's region names another target region. Levels are numbered
 *     densely from 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dialect/istio/internal.h"

/* The three parts of "region/zone/subzone" (missing ones empty). */
struct loc3 {
    const char *p[3];
    size_t n[3];
};

static struct loc3 split(const char *s)
{
    struct loc3 l = {{"", "", ""}, {0, 0, 0}};
    if (s == NULL)
        return l;
    for (int i = 0; i < 3; i++) {
        const char *e = i < 2 ? strchr(s, '/') : NULL;
        l.p[i] = s;
        l.n[i] = e != NULL ? (size_t)(e - s) : strlen(s);
        if (e == NULL)
            break;
        s = e + 1;
    }
    return l;
}

static bool part_eq(const struct loc3 *a, const struct loc3 *b, int i)
{
    return a->n[i] == b->n[i] && memcmp(a->p[i], b->p[i], a->n[i]) == 0;
}

/* Istio's LbPriority: how far an endpoint's locality is from the client's. */
static uint32_t locality_rank(const struct loc3 *client, const struct loc3 *ep)
{
    if (!part_eq(client, ep, 0))
        return 3;
    if (!part_eq(client, ep, 1))
        return 2;
    return part_eq(client, ep, 2) ? 0 : 1;
}

/* Istio's LocalityMatch: a rule locality "region[/zone[/subzone]]" where
 * "*" matches anything and a part left out matches any. */
static bool locality_match(const struct loc3 *l, const char *rule)
{
    struct loc3 r = split(rule);
    for (int i = 0; i < 3; i++) {
        bool any = (r.n[i] == 1 && r.p[i][0] == '*') || (i > 0 && r.n[i] == 0);
        if (!any && !part_eq(l, &r, i))
            return false;
    }
    return true;
}

static char *locality_text(struct ist_ctx *x, const char *r, size_t rn, const char *z, size_t zn,
                           const char *s, size_t sn)
{
    if (rn + zn + sn == 0)
        return NULL;
    /* As Istio prints a locality: no empty parts at the end. */
    if (sn > 0)
        return ist_printf(x, "%.*s/%.*s/%.*s", (int)rn, r, (int)zn, z, (int)sn, s);
    if (zn > 0)
        return ist_printf(x, "%.*s/%.*s", (int)rn, r, (int)zn, z);
    return ist_printf(x, "%.*s", (int)rn, r);
}

const char *ist_locality_of(struct ist_ctx *x, const struct tr_rnode *labels, const char *node)
{
    const char *v;
    if (tr_rnode_str(tr_rnode_get(labels, "istio-locality"), &v) && *v != '\0') {
        /* Label values cannot hold "/": Istio writes "." between the parts. */
        if (strchr(v, '/') != NULL)
            return v;
        char *s = ist_printf(x, "%s", v);
        for (char *q = s; q != NULL && *q != '\0'; q++)
            if (*q == '.')
                *q = '/';
        return s;
    }
    if (node == NULL)
        return NULL;
    const struct tr_resource *n = tr_rset_find(x->rs, "", "Node", NULL, node);
    if (n == NULL)
        return NULL;
    const char *r = "", *z = "", *s = "";
    if (!tr_rnode_str(tr_rnode_get(n->labels, "topology.kubernetes.io/region"), &r))
        tr_rnode_str(tr_rnode_get(n->labels, "failure-domain.beta.kubernetes.io/region"), &r);
    if (!tr_rnode_str(tr_rnode_get(n->labels, "topology.kubernetes.io/zone"), &z))
        tr_rnode_str(tr_rnode_get(n->labels, "failure-domain.beta.kubernetes.io/zone"), &z);
    tr_rnode_str(tr_rnode_get(n->labels, "topology.istio.io/subzone"), &s);
    return locality_text(x, r, strlen(r), z, strlen(z), s, strlen(s));
}

/* A label's value for failoverPriority: the locality's part for the
 * topology labels (Istio adds them to endpoints and proxies alike), else
 * the instance's label; NULL when it has none. */
static bool label_value(const struct tr_rnode *labels, const char *locality, const char *key,
                        size_t klen, const char **v, size_t *vlen)
{
    static const char *const topo[] = {"topology.kubernetes.io/region",
                                       "topology.kubernetes.io/zone", "topology.istio.io/subzone"};
    struct loc3 l = split(locality);
    for (int i = 0; i < 3 && locality != NULL; i++)
        if (strlen(topo[i]) == klen && memcmp(topo[i], key, klen) == 0 && l.n[i] > 0) {
            *v = l.p[i];
            *vlen = l.n[i];
            return true;
        }
    for (const struct tr_rnode *k = labels && labels->kind == TR_RNODE_MAP ? labels->head : NULL;
         k && k->next; k = k->next->next) {
        const char *s;
        if (k->s != NULL && strlen(k->s) == klen && memcmp(k->s, key, klen) == 0 &&
            tr_rnode_str(k->next, &s)) {
            *v = s;
            *vlen = strlen(s);
            return true;
        }
    }
    return false;
}

/* failoverPriority: 0 when every label agrees with the client's, else the
 * number of labels from the first that differs to the end. "key=value"
 * compares the endpoint's label with value instead of the client's. */
static uint32_t label_rank(struct ist_ctx *x, const struct tr_rnode *list,
                           const struct ist_inst *in)
{
    uint32_t n = (uint32_t)list->n, j = 0;
    for (const struct tr_rnode *e = list->head; e; e = e->next, j++) {
        const char *item;
        if (!tr_rnode_str(e, &item))
            continue;
        const char *eq = strchr(item, '=');
        size_t klen = eq != NULL ? (size_t)(eq - item) : strlen(item);
        const char *want = NULL, *got = NULL;
        size_t wn = 0, gn = 0;
        bool has_want = eq != NULL
                            ? (want = eq + 1, wn = strlen(want), true)
                            : label_value(x->wl_labels, x->wl_locality, item, klen, &want, &wn);
        bool has_got = in != NULL && label_value(in->labels, in->locality, item, klen, &got, &gn);
        /* Go's map lookup: a missing label is "" on either side. */
        if (!has_want)
            want = "", wn = 0;
        if (!has_got)
            got = "", gn = 0;
        if (wn != gn || memcmp(want, got, wn) != 0)
            return n - j;
    }
    return 0;
}

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Levels numbered densely from 0, in order. */
static void compact(struct ist_ctx *x, struct tr_cluster_cfg *c)
{
    uint32_t *v = ist_alloc(x, c->n_endpoints + 1, sizeof(*v));
    if (v == NULL)
        return;
    for (size_t i = 0; i < c->n_endpoints; i++)
        v[i] = c->endpoints[i].priority;
    qsort(v, c->n_endpoints, sizeof(*v), u32_cmp);
    size_t n = 0;
    for (size_t i = 0; i < c->n_endpoints; i++)
        if (n == 0 || v[n - 1] != v[i])
            v[n++] = v[i];
    for (size_t i = 0; i < c->n_endpoints; i++) {
        uint32_t *hit = bsearch(&c->endpoints[i].priority, v, n, sizeof(*v), u32_cmp);
        uint32_t rank = (uint32_t)(hit - v);
        c->endpoints[i].priority = rank < 127 ? rank : 127; /* the model's last level */
    }
}

static void failover(struct ist_ctx *x, struct tr_cluster_cfg *c, const struct ist_inst **insts,
                     const struct tr_rnode *setting)
{
    const struct tr_rnode *fp = tr_rnode_get(setting, "failoverPriority");
    const struct tr_rnode *fo = tr_rnode_get(setting, "failover");
    bool by_labels = fp != NULL && fp->kind == TR_RNODE_SEQ && fp->n > 0;
    bool by_failover = fo != NULL && fo->kind == TR_RNODE_SEQ && fo->n > 0;
    struct loc3 me = split(x->wl_locality);
    for (size_t i = 0; i < c->n_endpoints; i++) {
        const struct ist_inst *in = insts[i];
        uint32_t prio = by_labels ? label_rank(x, fp, in) : 0;
        if (by_labels && !by_failover) {
            c->endpoints[i].priority = prio;
            continue;
        }
        struct loc3 l = split(in != NULL ? in->locality : NULL);
        uint32_t rank = locality_rank(&me, &l);
        if (rank == 3 && by_failover)
            for (const struct tr_rnode *e = fo->head; e; e = e->next) {
                const char *from = NULL, *to = NULL;
                tr_rnode_str(tr_rnode_get(e, "from"), &from);
                tr_rnode_str(tr_rnode_get(e, "to"), &to);
                if (from == NULL || strlen(from) != me.n[0] || memcmp(from, me.p[0], me.n[0]) != 0)
                    continue;
                if (to == NULL || strlen(to) != l.n[0] || memcmp(to, l.p[0], l.n[0]) != 0)
                    rank = 4;
                break;
            }
        c->endpoints[i].priority = prio * 5 + rank;
    }
    compact(x, c);
}

/* distribute: the first entry whose `from` matches the client. Returns
 * false when none does (nothing applies then, as in Istio). */
static bool distribute(struct ist_ctx *x, struct tr_cluster_cfg *c, const struct ist_inst **insts,
                       const struct tr_rnode *list)
{
    struct loc3 me = split(x->wl_locality);
    const struct tr_rnode *to = NULL;
    for (const struct tr_rnode *e = list->head; e && to == NULL; e = e->next) {
        const char *from;
        if (tr_rnode_str(tr_rnode_get(e, "from"), &from) && locality_match(&me, from))
            to = tr_rnode_get(e, "to");
    }
    if (to == NULL || to->kind != TR_RNODE_MAP)
        return false;
    /* Localities: each endpoint's ("" for none), with its weight total. */
    size_t n = c->n_endpoints;
    const char **loc = ist_alloc(x, n + 1, sizeof(*loc));
    uint64_t *sum = ist_alloc(x, n + 1, sizeof(*sum));
    uint32_t *weight = ist_alloc(x, n + 1, sizeof(*weight));
    bool *matched = ist_alloc(x, n + 1, sizeof(*matched));
    size_t *of = ist_alloc(x, n + 1, sizeof(*of));
    if (loc == NULL || sum == NULL || weight == NULL || matched == NULL || of == NULL)
        return false;
    size_t nl = 0;
    for (size_t i = 0; i < n; i++) {
        const char *l = insts[i] != NULL && insts[i]->locality != NULL ? insts[i]->locality : "";
        size_t k = 0;
        while (k < nl && strcmp(loc[k], l) != 0)
            k++;
        if (k == nl) {
            loc[nl] = l;
            sum[nl] = 0;
            matched[nl] = false;
            nl++;
        }
        of[i] = k;
        sum[k] += c->endpoints[i].weight;
    }
    for (size_t k = 0; k < nl; k++)
        weight[k] = (uint32_t)(sum[k] < 1000000 ? sum[k] : 1000000);
    /* Each target takes the localities it matches that no earlier target
     * took, and shares its weight among them by their endpoints' weights
     * (rounded up, as Istio). */
    for (const struct tr_rnode *t = to->head; t && t->next; t = t->next->next) {
        int64_t w;
        if (t->s == NULL || !tr_rnode_int(t->next, &w) || w < 0)
            continue;
        uint64_t total = 0;
        bool *now = ist_alloc(x, nl + 1, sizeof(*now));
        if (now == NULL)
            return false;
        for (size_t k = 0; k < nl; k++) {
            struct loc3 l = split(loc[k]);
            now[k] = !matched[k] && locality_match(&l, t->s);
            if (now[k])
                total += sum[k], matched[k] = true;
        }
        for (size_t k = 0; k < nl && total > 0; k++) {
            uint64_t v = (sum[k] * (uint64_t)w + total - 1) / total;
            if (now[k] && v > 0)
                weight[k] = (uint32_t)(v < 1000000 ? v : 1000000);
        }
    }
    /* Endpoints of localities no target names get nothing: they go. */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (matched[of[i]]) {
            c->endpoints[kept] = c->endpoints[i];
            insts[kept] = insts[i];
            kept++;
        }
    c->n_endpoints = kept;
    c->locality_weights = ist_malloc(x, nl + 1, sizeof(*c->locality_weights));
    if (c->locality_weights == NULL)
        return false;
    c->n_locality_weights = 0;
    for (size_t k = 0; k < nl; k++)
        if (matched[k])
            c->locality_weights[c->n_locality_weights++] = (struct tr_locality_weight_cfg){
                .locality = ist_mstrdup(x, loc[k]), .weight = weight[k] > 0 ? weight[k] : 1};
    return true;
}

void ist_locality_apply(struct ist_ctx *x, struct tr_cluster_cfg *c, const struct ist_inst **insts,
                        const struct ist_cluster_policy *p)
{
    for (size_t i = 0; i < c->n_endpoints; i++) {
        const struct ist_inst *in = insts[i];
        c->endpoints[i].locality = in != NULL ? ist_mstrdup(x, in->locality) : NULL;
    }
    ist_mesh_read(x);
    const struct tr_rnode *setting = p->locality != NULL ? p->locality : x->mesh_locality;
    bool enabled = true;
    tr_rnode_bool(tr_rnode_get(setting, "enabled"), &enabled);
    if (!enabled || c->n_endpoints == 0)
        return;
    const struct tr_rnode *d = tr_rnode_get(setting, "distribute");
    if (d != NULL && d->kind == TR_RNODE_SEQ && d->n > 0) {
        /* Envoy weighs no locality under consistent hashing; the dropped
         * endpoints stay dropped. */
        if (distribute(x, c, insts, d) && (c->lb == TR_LB_RING_HASH || c->lb == TR_LB_MAGLEV))
            c->n_locality_weights = 0;
        return;
    }
    if (p->failover)
        failover(x, c, insts, setting);
}

/* A rule locality: "region[/zone[/subzone]]", where "*" may only be a
 * whole last part (istiod's validation). */
static bool rule_locality_ok(const char *s)
{
    if (*s == '\0')
        return false;
    int slashes = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '/' && ++slashes > 2)
            return false;
        if (*p == '*' && (p[1] != '\0' || (p != s && p[-1] != '/')))
            return false;
    }
    return true;
}

void ist_check_locality_setting(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *ls)
{
    static const struct ist_key keys[] = {
        {"enabled", NULL}, {"distribute", NULL}, {"failover", NULL}, {"failoverPriority", NULL}};
    static const struct ist_key pair[] = {{"from", NULL}, {"to", NULL}};
    if (ls == NULL || !IST_KEYS(x, c, ls, keys))
        return;
    bool b;
    ist_bool(x, c, ls, "enabled", &b);
    const struct tr_rnode *d = ist_list(x, c, ls, "distribute");
    const struct tr_rnode *f = ist_list(x, c, ls, "failover");
    const struct tr_rnode *fp = ist_list(x, c, ls, "failoverPriority");
    if (d != NULL && d->n > 0 && f != NULL && f->n > 0)
        ist_error(x, c, ls, "failover",
                  "only one of distribute and failover (istiod refuses both)");
    size_t i = 0;
    for (const struct tr_rnode *e = d ? d->head : NULL; e; e = e->next, i++) {
        size_t saved = ist_push_key(c, "distribute");
        ist_push_index(c, i);
        const char *from;
        if (IST_KEYS(x, c, e, pair)) {
            if (!ist_str(x, c, e, "from", &from) || !rule_locality_ok(from))
                ist_error(x, c, e, "from",
                          "expected a locality region[/zone[/subzone]] (\"*\" "
                          "only as a whole last part)");
            const struct tr_rnode *to = ist_map(x, c, e, "to");
            uint64_t sum = 0;
            size_t st = ist_push_key(c, "to");
            for (const struct tr_rnode *k = to ? to->head : NULL; k && k->next; k = k->next->next) {
                uint32_t w;
                if (k->s == NULL || !rule_locality_ok(k->s))
                    ist_error(x, c, k, NULL,
                              "expected a locality region[/zone[/subzone]] (\"*\" only as a "
                              "whole last part)");
                else if (ist_u32(x, c, to, k->s, 0, 100, &w))
                    sum += w;
            }
            ist_pop(c, st);
            if (to == NULL || sum != 100)
                ist_error(x, c, e, "to", "the weights must add up to 100 (istiod's rule)");
        }
        ist_pop(c, saved);
    }
    i = 0;
    for (const struct tr_rnode *e = f ? f->head : NULL; e; e = e->next, i++) {
        size_t saved = ist_push_key(c, "failover");
        ist_push_index(c, i);
        const char *from = NULL, *to = NULL;
        if (IST_KEYS(x, c, e, pair)) {
            if (!ist_str(x, c, e, "from", &from) || strchr(from, '/') != NULL || *from == '\0')
                ist_error(x, c, e, "from", "expected a region (failover names regions only)");
            if (!ist_str(x, c, e, "to", &to) || strchr(to, '/') != NULL || *to == '\0')
                ist_error(x, c, e, "to", "expected a region (failover names regions only)");
            else if (from != NULL && strcmp(from, to) == 0)
                ist_error(x, c, e, "to", "the same region as from: failover needs another");
        }
        ist_pop(c, saved);
    }
    i = 0;
    for (const struct tr_rnode *e = fp ? fp->head : NULL; e; e = e->next, i++) {
        size_t saved = ist_push_key(c, "failoverPriority");
        ist_push_index(c, i);
        const char *s;
        if (!tr_rnode_str(e, &s) || *s == '\0' || *s == '=')
            ist_error(x, c, e, NULL, "expected a label name, or name=value");
        ist_pop(c, saved);
    }
}
