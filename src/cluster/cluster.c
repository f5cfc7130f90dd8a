#include "cluster/cluster.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns/answers.h"
#include "net/sock.h"
#include "obs/metrics.h"
#include "runtime/worker.h"
#include "upstream/pool.h"

/* ---- endpoint objects ---- */

/* ---- cluster state (counts that span views) ---- */

static struct tr_cluster_state *state_new(const char *name)
{
    struct tr_cluster_state *st = calloc(1, sizeof(*st));
    if (st != NULL)
        st->name = tr_metrics_intern(name);
    return st;
}

static void state_unref(struct tr_cluster_state *st)
{
    if (st != NULL && --st->refs == 0)
        free(st);
}

/* text: the address as configured; NULL: formatted from ss. */
static struct tr_endpoint_rt *endpoint_new(const struct sockaddr_storage *ss, socklen_t len,
                                           const char *text, struct tr_cluster_state *st)
{
    struct tr_endpoint_rt *ep = calloc(1, sizeof(*ep));
    if (ep == NULL)
        return NULL;
    memcpy(&ep->addr, ss, sizeof(ep->addr));
    ep->addr_len = len;
    if (text != NULL)
        snprintf(ep->addr_text, sizeof(ep->addr_text), "%s", text);
    else
        tr_sock_addr_str(&ep->addr, ep->addr_text, sizeof(ep->addr_text));
    tr_tls_session_slot_init(&ep->tls_slot);
    ep->state = st;
    st->refs++;
    return ep;
}

static void endpoint_unref(struct tr_endpoint_rt *ep)
{
    if (--ep->refs > 0)
        return;
    /* No view lists it and no connection object is left. */
    tr_outlier_end(ep, 0);
    tr_tls_session_slot_clear(&ep->tls_slot);
    state_unref(ep->state);
    free(ep);
}

void tr_endpoint_conn_hold(struct tr_endpoint_rt *ep)
{
    ep->refs++;
    if (ep->conn_objs++ == 0)
        tr_wsnap_use(ep->cluster->ws);
}

void tr_endpoint_conn_drop(struct tr_endpoint_rt *ep)
{
    if (--ep->conn_objs == 0)
        tr_wsnap_release(ep->cluster->ws);
    endpoint_unref(ep);
}

/* The endpoint now belongs to view c (newer than its previous one): its
 * connections read their settings from c, so the snapshot use moves too. */
static void endpoint_move(struct tr_endpoint_rt *ep, struct tr_cluster_rt *c,
                          const struct tr_endpoint_cfg *ec)
{
    struct tr_cluster_rt *old = ep->cluster;
    ep->cluster = c;
    ep->retired = false;
    ep->workload = ec->workload != NULL ? tr_metrics_intern(ec->workload) : c->workload;
    if (ep->conn_objs > 0 && old != NULL && old->ws != c->ws) {
        tr_wsnap_use(c->ws);
        tr_wsnap_release(old->ws);
    }
}

/* ---- lookup of the previous views (open addressing, built per update) ---- */

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_addr(const struct sockaddr_storage *ss)
{
    uint64_t h = hash_bytes(0xcbf29ce484222325ull, &ss->ss_family, sizeof(ss->ss_family));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)ss;
        h = hash_bytes(h, &in->sin_addr, sizeof(in->sin_addr));
        return hash_bytes(h, &in->sin_port, sizeof(in->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)ss;
        h = hash_bytes(h, &in6->sin6_addr, sizeof(in6->sin6_addr));
        return hash_bytes(h, &in6->sin6_port, sizeof(in6->sin6_port));
    }
    return h;
}

/* Slots hold index + 1 (0 = empty, INDEX_TAKEN = a matched entry that
 * lookups step over); size is a power of two >= 2n. */
#define INDEX_TAKEN UINT32_MAX
struct index {
    uint32_t *slot;
    size_t mask;
};

static bool index_init(struct index *ix, size_t n)
{
    size_t size = 8;
    while (size < 2 * n)
        size <<= 1;
    ix->slot = calloc(size, sizeof(*ix->slot));
    ix->mask = size - 1;
    return ix->slot != NULL;
}

static void index_put(struct index *ix, uint64_t h, uint32_t i)
{
    size_t k = h & ix->mask;
    while (ix->slot[k] != 0)
        k = (k + 1) & ix->mask;
    ix->slot[k] = i + 1;
}

static const char *str_or_empty(const char *s)
{
    return s != NULL ? s : "";
}

/* Connections made for prev can serve c: same peer identity checks, same
 * TLS context (shared across snapshots while its files are unchanged), same
 * protocol. Everything else (timeouts, pool sizes, balancer) applies to the
 * kept connections as it is read. */
static bool same_connection_settings(const struct tr_cluster_rt *prev,
                                     const struct tr_cluster_rt *c)
{
    const struct tr_cluster_cfg *a = prev->cfg, *b = c->cfg;
    if (prev->tls != c->tls || a->protocol != b->protocol ||
        strcmp(str_or_empty(a->sni), str_or_empty(b->sni)) != 0 ||
        a->n_server_ids != b->n_server_ids || a->n_subject_alt_names != b->n_subject_alt_names ||
        a->insecure_skip_verify != b->insecure_skip_verify)
        return false;
    for (size_t i = 0; i < a->n_server_ids; i++)
        if (strcmp(a->server_ids[i], b->server_ids[i]) != 0)
            return false;
    for (size_t i = 0; i < a->n_subject_alt_names; i++)
        if (strcmp(a->subject_alt_names[i], b->subject_alt_names[i]) != 0)
            return false;
    return true;
}

static struct tr_cluster_rt *find_prev(const struct index *ix, struct tr_cluster_rt *prev,
                                       const char *name)
{
    size_t k = hash_bytes(0xcbf29ce484222325ull, name, strlen(name)) & ix->mask;
    for (; ix->slot[k] != 0; k = (k + 1) & ix->mask) {
        struct tr_cluster_rt *p = &prev[ix->slot[k] - 1];
        if (strcmp(p->cfg->name, name) == 0)
            return p;
    }
    return NULL;
}

/* ---- the endpoint list of a view (DNS names: dns/answers.h) ---- */

static const struct tr_endpoint_cfg *slot_cfg(const struct tr_cluster_rt *c, uint32_t i)
{
    return c->ep_cfg != NULL ? c->ep_cfg[i] : &c->cfg->endpoints[i];
}

static bool is_logical(const struct tr_cluster_cfg *cc, const struct tr_endpoint_cfg *ec)
{
    return ec->host != NULL && cc->dns.mode == TR_DNS_FIRST;
}

/* Endpoints of cc with the answers of t: a configured IP address is one; a
 * name is one per address of its answer (mode all) or one while it has an
 * address (mode first). */
static size_t slot_count(const struct tr_cluster_cfg *cc, const struct tr_dns_table *t)
{
    if (cc->n_dns_endpoints == 0)
        return cc->n_endpoints;
    size_t n = 0;
    for (size_t e = 0; e < cc->n_endpoints; e++) {
        const struct tr_endpoint_cfg *ec = &cc->endpoints[e];
        const struct tr_dns_answer *a =
            ec->host != NULL ? tr_dns_table_find(t, ec->host, cc->dns.family) : NULL;
        if (ec->host == NULL)
            n++;
        else if (a != NULL && a->n_ips > 0)
            n += is_logical(cc, ec) ? 1 : a->n_ips;
    }
    return n;
}

/* Fills ep_cfg and ep_ip of a cluster with names. */
static void slots_fill(struct tr_cluster_rt *c, const struct tr_dns_table *t)
{
    const struct tr_cluster_cfg *cc = c->cfg;
    size_t k = 0;
    for (size_t e = 0; e < cc->n_endpoints; e++) {
        const struct tr_endpoint_cfg *ec = &cc->endpoints[e];
        if (ec->host == NULL) {
            c->ep_cfg[k] = ec;
            c->ep_ip[k++] = NULL;
            continue;
        }
        const struct tr_dns_answer *a = tr_dns_table_find(t, ec->host, cc->dns.family);
        uint32_t n = a == NULL ? 0 : is_logical(cc, ec) && a->n_ips > 0 ? 1 : a->n_ips;
        for (uint32_t i = 0; i < n; i++) {
            c->ep_cfg[k] = ec;
            c->ep_ip[k++] = &a->ips[i];
        }
    }
}

/* Slot i's socket address. */
static void slot_addr(const struct tr_cluster_rt *c, uint32_t i, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    const struct tr_endpoint_cfg *ec = slot_cfg(c, i);
    if (c->ep_ip != NULL && c->ep_ip[i] != NULL) {
        tr_dns_ip_sockaddr(c->ep_ip[i], ec->port, ss, len);
        return;
    }
    memcpy(ss, &ec->addr.ss, sizeof(*ss));
    *len = ec->addr.len;
}

static uint64_t hash_name(const char *host, uint16_t port)
{
    return hash_bytes(hash_bytes(0xcbf29ce484222325ull, host, strlen(host)), &port, sizeof(port));
}

/* prev's endpoint for slot i of c: by name and port for a logical endpoint
 * (its address follows the answer), else by address. Each is taken once:
 * an address listed twice gets a second object. */
static struct tr_endpoint_rt *take_prev(struct index *by_addr, struct index *by_name,
                                        struct tr_cluster_rt *prev, const struct tr_cluster_rt *c,
                                        uint32_t i, const struct sockaddr_storage *ss)
{
    const struct tr_endpoint_cfg *ec = slot_cfg(c, i);
    bool logical = is_logical(c->cfg, ec);
    struct index *ix = logical ? by_name : by_addr;
    uint64_t h = logical ? hash_name(ec->host, ec->port) : hash_addr(ss);
    if (ix->slot == NULL)
        return NULL;
    for (size_t k = h & ix->mask; ix->slot[k] != 0; k = (k + 1) & ix->mask) {
        if (ix->slot[k] == INDEX_TAKEN)
            continue;
        uint32_t j = ix->slot[k] - 1;
        struct tr_endpoint_rt *p = prev->eps[j];
        const struct tr_endpoint_cfg *pc = slot_cfg(prev, j);
        bool same = logical ? strcmp(pc->host, ec->host) == 0 && pc->port == ec->port
                            : tr_sock_addr_equal(&p->addr, ss);
        if (same) {
            ix->slot[k] = INDEX_TAKEN;
            return p;
        }
    }
    return NULL;
}

/* Fills c->eps, taking over prev's endpoint objects by address (logical
 * ones by name). n: the slot count c's arrays were made for. */
static bool endpoints_build(struct tr_cluster_rt *c, struct tr_cluster_rt *prev, size_t n)
{
    struct index by_addr = {0}, by_name = {0};
    if (prev != NULL) {
        if (!index_init(&by_addr, prev->n_eps) || !index_init(&by_name, prev->n_eps)) {
            free(by_addr.slot);
            return false;
        }
        for (uint32_t i = 0; i < prev->n_eps; i++) {
            const struct tr_endpoint_rt *p = prev->eps[i];
            if (p->logical)
                index_put(&by_name, hash_name(slot_cfg(prev, i)->host, slot_cfg(prev, i)->port), i);
            else
                index_put(&by_addr, hash_addr(&p->addr), i);
        }
    }
    if (c->ep_cfg != NULL)
        slots_fill(c, c->ws->dns);
    for (uint32_t e = 0; e < n; e++) {
        const struct tr_endpoint_cfg *ec = slot_cfg(c, e);
        struct sockaddr_storage ss;
        socklen_t len;
        slot_addr(c, e, &ss, &len);
        struct tr_endpoint_rt *ep =
            prev != NULL ? take_prev(&by_addr, &by_name, prev, c, e, &ss) : NULL;
        if (ep != NULL) {
            c->n_kept++;
        } else {
            bool resolved = c->ep_ip != NULL && c->ep_ip[e] != NULL;
            if ((ep = endpoint_new(&ss, len, resolved ? NULL : ec->addr.text, c->state)) == NULL)
                break;
            ep->logical = is_logical(c->cfg, ec);
        }
        ep->refs++;
        c->eps[e] = ep;
        c->weights[e] = ec->weight;
        c->total_weight += ec->weight;
        c->n_eps = e + 1;
    }
    free(by_addr.slot);
    free(by_name.slot);
    return c->n_eps == n;
}

/* A logical endpoint taken over by name moves to its name's current first
 * address: new connections go there, the ones it has (pooled too) stay, as
 * Envoy's LOGICAL_DNS does; a new address starts with a clean health. */
static void endpoint_follow(struct tr_endpoint_rt *ep, const struct tr_cluster_rt *c, uint32_t i)
{
    if (!ep->logical || c->ep_ip == NULL || c->ep_ip[i] == NULL)
        return;
    struct sockaddr_storage ss;
    socklen_t len;
    slot_addr(c, i, &ss, &len);
    if (tr_sock_addr_equal(&ep->addr, &ss))
        return;
    memcpy(&ep->addr, &ss, sizeof(ep->addr));
    ep->addr_len = len;
    tr_sock_addr_str(&ep->addr, ep->addr_text, sizeof(ep->addr_text));
    ep->connect_failures = 0;
    ep->unhealthy_until_ms = 0;
    tr_outlier_end(ep, 0);
}

uint32_t tr_limit_share(uint32_t limit, unsigned index, unsigned workers)
{
    if (limit == 0 || workers <= 1)
        return limit;
    uint32_t share = limit / workers + (index < limit % workers ? 1 : 0);
    return share > 0 ? share : 1;
}

/* The view's cluster state (prev's when its endpoints are taken over, so
 * counts and ejections carry on), hash table and circuit-breaker shares. */
static bool policies_build(struct tr_cluster_rt *c, struct tr_cluster_rt *p, size_t idx)
{
    c->state = p != NULL ? p->state : state_new(c->cfg->name);
    if (c->state == NULL)
        return false;
    c->state->refs++;
    const struct tr_snapshot *snap = c->ws->snap;
    c->table = snap->lb_tables != NULL ? snap->lb_tables[idx] : NULL;
    if (c->table != NULL)
        tr_lb_table_ref(c->table);
    unsigned index = c->ws->w != NULL ? c->ws->w->index : 0;
    unsigned workers = c->ws->w != NULL ? c->ws->w->n_workers : 1;
    const struct tr_circuit_breakers_cfg *b = &c->cfg->breakers;
    c->max_connections = tr_limit_share(b->max_connections, index, workers);
    c->max_pending_requests = tr_limit_share(b->max_pending_requests, index, workers);
    c->max_requests = tr_limit_share(b->max_requests, index, workers);
    c->max_retries = tr_limit_share(b->max_retries, index, workers);
    return true;
}

/* A consistent-hash cluster with endpoint names has a table of its own per
 * view, over the addresses resolved for it (the snapshot's tables know the
 * configuration only); the previous view's while they are the same. */
static bool table_build(struct tr_cluster_rt *c, struct tr_cluster_rt *p)
{
    const struct tr_cluster_cfg *cc = c->cfg;
    if ((cc->lb != TR_LB_RING_HASH && cc->lb != TR_LB_MAGLEV) || c->ep_cfg == NULL)
        return true;
    bool same = p != NULL && p->table != NULL && p->n_eps == c->n_eps && p->cfg->lb == cc->lb &&
                p->cfg->hash.ring_min_size == cc->hash.ring_min_size &&
                p->cfg->hash.maglev_table_size == cc->hash.maglev_table_size;
    for (uint32_t i = 0; same && i < c->n_eps; i++)
        same = p->weights[i] == c->weights[i] &&
               strcmp(p->eps[i]->addr_text, c->eps[i]->addr_text) == 0;
    if (same) {
        tr_lb_table_ref(p->table);
        c->table = p->table;
        return true;
    }
    struct tr_lb_member *m = calloc(c->n_eps + 1, sizeof(*m));
    if (m == NULL)
        return false;
    for (uint32_t i = 0; i < c->n_eps; i++)
        m[i] = (struct tr_lb_member){.text = c->eps[i]->addr_text, .weight = c->weights[i]};
    c->table = tr_lb_table_build_list(cc, m, c->n_eps);
    free(m);
    return c->table != NULL;
}

bool tr_cluster_admit_request(struct tr_cluster_rt *c, struct tr_worker *w)
{
    if (c->max_requests == 0 || c->state->active_requests < c->max_requests)
        return true;
    tr_metrics_cluster(w != NULL ? w->metrics : NULL, c->state->name, TR_CM_OVERFLOW_REQUESTS, 1);
    return false;
}

struct tr_cluster_rt *tr_clusters_build(struct tr_wsnap *ws, struct tr_cluster_rt *prev,
                                        size_t n_prev)
{
    const struct tr_config *cfg = ws->snap->cfg;
    struct tr_cluster_rt *cl = calloc(cfg->n_clusters + 1, sizeof(*cl));
    struct index ix = {0};
    if (cl == NULL || (prev != NULL && !index_init(&ix, n_prev))) {
        free(cl);
        return NULL;
    }
    for (size_t i = 0; prev != NULL && i < n_prev; i++)
        index_put(&ix,
                  hash_bytes(0xcbf29ce484222325ull, prev[i].cfg->name, strlen(prev[i].cfg->name)),
                  (uint32_t)i);
    size_t i = 0;
    for (; i < cfg->n_clusters; i++) {
        const struct tr_cluster_cfg *cc = &cfg->clusters[i];
        struct tr_cluster_rt *c = &cl[i];
        c->cfg = cc;
        c->ws = ws;
        c->tls = cc->tls >= 0 ? ws->snap->tls[cc->tls] : NULL;
        c->service = tr_metrics_intern(cc->service);
        c->workload = tr_metrics_intern(cc->workload);
        c->workload_namespace = tr_metrics_intern(cc->workload_namespace);
        size_t n = slot_count(cc, ws->dns);
        c->eps = calloc(n + 1, sizeof(*c->eps));
        c->weights = calloc(n + 1, sizeof(*c->weights));
        if (c->eps == NULL || c->weights == NULL)
            break;
        if (cc->n_dns_endpoints > 0) {
            c->ep_cfg = calloc(n + 1, sizeof(*c->ep_cfg));
            c->ep_ip = calloc(n + 1, sizeof(*c->ep_ip));
            if (c->ep_cfg == NULL || c->ep_ip == NULL)
                break;
        }
        struct tr_cluster_rt *p = prev != NULL ? find_prev(&ix, prev, cc->name) : NULL;
        if (p != NULL && !same_connection_settings(p, c))
            p = NULL;
        if (!policies_build(c, p, i))
            break;
        if (!endpoints_build(c, p, n) || !table_build(c, p))
            break;
    }
    free(ix.slot);
    if (i < cfg->n_clusters) {
        /* Nothing was moved yet: dropping the references undoes the build. */
        tr_clusters_free(cl, i + 1);
        return NULL;
    }
    return cl;
}

void tr_clusters_commit(struct tr_cluster_rt *cl, size_t n, struct tr_cluster_rt *prev,
                        size_t n_prev)
{
    for (size_t i = 0; i < n; i++) {
        struct tr_cluster_rt *c = &cl[i];
        c->n_unhealthy = 0;
        for (uint32_t e = 0; e < c->n_eps; e++) {
            struct tr_endpoint_rt *ep = c->eps[e];
            endpoint_move(ep, c, slot_cfg(c, e));
            endpoint_follow(ep, c, e);
            c->n_unhealthy += ep->connect_failures > 0;
            if (!c->cfg->outlier.enabled)
                tr_outlier_end(ep, 0); /* outlier detection was turned off */
        }
    }
    for (size_t i = 0; prev != NULL && i < n_prev; i++)
        for (uint32_t e = 0; e < prev[i].n_eps; e++) {
            struct tr_endpoint_rt *ep = prev[i].eps[e];
            if (ep->cluster == &prev[i] && !ep->retired) {
                ep->retired = true;
                tr_outlier_end(ep, 0); /* no longer counted as ejected */
                tr_pool_close_idle(ep);
            }
        }
}

void tr_clusters_close_idle(struct tr_cluster_rt *cl, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (uint32_t e = 0; e < cl[i].n_eps; e++)
            tr_pool_close_idle(cl[i].eps[e]);
}

void tr_clusters_free(struct tr_cluster_rt *cl, size_t n)
{
    if (cl == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        for (uint32_t e = 0; e < cl[i].n_eps; e++) {
            struct tr_endpoint_rt *ep = cl[i].eps[e];
            /* Only a retired endpoint without connections can still point
             * here (connections keep this view alive): an older view that
             * lists it may outlive this one, and will not connect to it. */
            if (ep->cluster == &cl[i])
                ep->cluster = NULL;
            endpoint_unref(ep);
        }
        free(cl[i].eps);
        free(cl[i].weights);
        free(cl[i].ep_cfg);
        free(cl[i].ep_ip);
        state_unref(cl[i].state);
        tr_lb_table_unref(cl[i].table);
    }
    free(cl);
}

/* What a pick may return: not in connect back-off, not the one the failed
 * attempt went to, not ejected (unless too few endpoints are healthy: then
 * ejections are ignored, Envoy's panic threshold). The fast paths skip this
 * while every endpoint is healthy and nothing is avoided. */
struct pick_filter {
    const struct tr_endpoint_rt *avoid;
    uint64_t now_ms;
    bool ignore_ejection;
};

static inline bool eligible(const struct tr_endpoint_rt *e, const struct pick_filter *pf)
{
    return e != pf->avoid && tr_endpoint_healthy(e, pf->now_ms) &&
           (pf->ignore_ejection || !tr_endpoint_ejected(e, pf->now_ms));
}

/* Smooth weighted round robin: each pick adds every weight to its endpoint's
 * counter and takes the largest, then subtracts the total. Spreads picks
 * evenly (a 5:1:1 split gives a,a,b,a,c,a,a rather than a,a,a,a,a,b,c).
 * With a filter, only eligible endpoints take part (and their total). */
static struct tr_endpoint_rt *pick_round_robin(struct tr_cluster_rt *c,
                                               const struct pick_filter *pf)
{
    struct tr_endpoint_rt *best = NULL;
    int64_t total = 0;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        struct tr_endpoint_rt *e = c->eps[i];
        if (c->weights[i] == 0 || (pf != NULL && !eligible(e, pf)))
            continue;
        e->rr_current += c->weights[i];
        total += c->weights[i];
        if (best == NULL || e->rr_current > best->rr_current)
            best = e;
    }
    if (best != NULL)
        best->rr_current -= total;
    return best;
}

static struct tr_endpoint_rt *pick_random(struct tr_cluster_rt *c, uint32_t rnd,
                                          const struct pick_filter *pf)
{
    int64_t total = c->total_weight;
    if (pf != NULL) {
        total = 0;
        for (uint32_t i = 0; i < c->n_eps; i++)
            if (eligible(c->eps[i], pf))
                total += c->weights[i];
    }
    if (total <= 0)
        return NULL;
    int64_t r = (int64_t)(rnd % (uint64_t)total);
    for (uint32_t i = 0; i < c->n_eps; i++) {
        if (pf != NULL && !eligible(c->eps[i], pf))
            continue;
        r -= c->weights[i];
        if (r < 0)
            return c->eps[i];
    }
    return NULL;
}

/* The k-th eligible endpoint (0-based). */
static struct tr_endpoint_rt *nth_eligible(struct tr_cluster_rt *c, uint32_t k,
                                           const struct pick_filter *pf)
{
    for (uint32_t i = 0; i < c->n_eps; i++)
        if (eligible(c->eps[i], pf) && k-- == 0)
            return c->eps[i];
    return NULL;
}

static uint32_t count_eligible(struct tr_cluster_rt *c, const struct pick_filter *pf)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_eps; i++)
        n += eligible(c->eps[i], pf);
    return n;
}

/* Power of two choices on outstanding requests (weights are ignored). */
static struct tr_endpoint_rt *pick_least_request(struct tr_cluster_rt *c, uint32_t rnd,
                                                 const struct pick_filter *pf)
{
    struct tr_endpoint_rt *a, *b;
    if (pf == NULL) {
        if (c->n_eps == 1)
            return c->eps[0];
        a = c->eps[rnd % c->n_eps];
        b = c->eps[(rnd >> 16) % c->n_eps];
    } else {
        uint32_t n = count_eligible(c, pf);
        if (n == 0)
            return NULL;
        a = nth_eligible(c, rnd % n, pf);
        b = nth_eligible(c, (rnd >> 16) % n, pf);
    }
    return b->active_requests < a->active_requests ? b : a;
}

/* Consistent hashing: the table's endpoint for hash, or with a filter the
 * first eligible one after it (on a ring, where a ring without the others
 * would have sent the key). O(log n) on a ring, O(1) with Maglev. */
static struct tr_endpoint_rt *pick_hash(struct tr_cluster_rt *c, uint64_t hash,
                                        const struct pick_filter *pf)
{
    const struct tr_lb_table *t = c->table;
    if (t == NULL || tr_lb_table_size(t) == 0)
        return NULL;
    if (pf == NULL)
        return c->eps[tr_lb_table_lookup(t, hash, 0)];
    if (count_eligible(c, pf) == 0)
        return NULL; /* so the walk below always ends early */
    uint32_t size = tr_lb_table_size(t);
    for (uint32_t step = 0; step < size; step++) {
        struct tr_endpoint_rt *e = c->eps[tr_lb_table_lookup(t, hash, step)];
        if (eligible(e, pf))
            return e;
    }
    return NULL;
}

/* Fewer healthy endpoints (neither in back-off nor ejected) than
 * min_health_percent: ejections are ignored (Envoy's panic mode). */
static bool panic(struct tr_cluster_rt *c, uint64_t now_ms)
{
    uint32_t min = c->cfg->outlier.min_health_percent;
    if (min == 0 || c->state->n_ejected == 0)
        return false;
    uint32_t healthy = 0;
    for (uint32_t i = 0; i < c->n_eps; i++)
        healthy +=
            tr_endpoint_healthy(c->eps[i], now_ms) && !tr_endpoint_ejected(c->eps[i], now_ms);
    return (uint64_t)healthy * 100 < (uint64_t)min * c->n_eps;
}

struct tr_endpoint_rt *tr_cluster_pick(struct tr_cluster_rt *c, uint32_t rnd, uint64_t hash,
                                       const struct tr_endpoint_rt *avoid, uint64_t now_ms)
{
    if (c->n_eps == 0)
        return NULL;
    struct pick_filter f = {.avoid = avoid, .now_ms = now_ms};
    const struct pick_filter *pf = NULL;
    if (avoid != NULL || c->n_unhealthy > 0 || c->state->n_ejected > 0) {
        f.ignore_ejection = panic(c, now_ms);
        pf = &f;
    }
    switch (c->cfg->lb) {
    case TR_LB_RANDOM:
        return pick_random(c, rnd, pf);
    case TR_LB_LEAST_REQUEST:
        return pick_least_request(c, rnd, pf);
    case TR_LB_RING_HASH:
    case TR_LB_MAGLEV:
        return pick_hash(c, hash, pf);
    case TR_LB_ROUND_ROBIN:
    default:
        return pick_round_robin(c, pf);
    }
}

void tr_endpoint_connect_failed(struct tr_endpoint_rt *ep, uint64_t now_ms)
{
    /* Every failure counts for outlier detection, the ones in flight too. */
    tr_endpoint_report(ep, TR_OUTCOME_FAILED, now_ms);
    /* Attempts started before the back-off began fail together: one outage
     * lengthens the back-off once, not once per attempt in flight. */
    if (ep->connect_failures > 0 && now_ms < ep->unhealthy_until_ms)
        return;
    if (ep->connect_failures == 0)
        ep->cluster->n_unhealthy++;
    if (ep->connect_failures < 31)
        ep->connect_failures++;
    uint64_t backoff = (uint64_t)TR_EP_BACKOFF_BASE_MS << (ep->connect_failures - 1);
    if (backoff > TR_EP_BACKOFF_MAX_MS)
        backoff = TR_EP_BACKOFF_MAX_MS;
    ep->unhealthy_until_ms = now_ms + backoff;
}

void tr_endpoint_connect_ok(struct tr_endpoint_rt *ep, uint64_t now_ms)
{
    tr_endpoint_report(ep, TR_OUTCOME_CONNECTED, now_ms);
    if (ep->connect_failures == 0)
        return;
    ep->connect_failures = 0;
    ep->unhealthy_until_ms = 0;
    ep->cluster->n_unhealthy--;
}
