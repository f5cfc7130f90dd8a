#include "cluster/cluster.h"

#include <math.h>
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
            /* Warm-up counts from here: an endpoint taken over keeps its time. */
            ep->added_ms =
                c->ws->w != NULL && c->ws->w->loop != NULL ? tr_loop_now_ms(c->ws->w->loop) : 0;
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

/* ---- priorities and locality groups ---- */

struct sort_item {
    uint32_t prio;
    const char *locality; /* NULL without locality weights */
    uint32_t idx;
};

static int sort_item_cmp(const void *a, const void *b)
{
    const struct sort_item *x = a, *y = b;
    if (x->prio != y->prio)
        return x->prio < y->prio ? -1 : 1;
    int l = strcmp(x->locality != NULL ? x->locality : "", y->locality != NULL ? y->locality : "");
    if (l != 0)
        return l;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static uint32_t locality_weight(const struct tr_cluster_cfg *cc, const char *locality)
{
    for (size_t i = 0; i < cc->n_locality_weights; i++)
        if (strcmp(cc->locality_weights[i].locality, locality != NULL ? locality : "") == 0)
            return cc->locality_weights[i].weight;
    return 0; /* validate refuses an endpoint without one */
}

/* The view's order and groups, when its endpoints have more than one
 * priority or its localities are weighted; priorities are compacted (a
 * level without endpoints has no health and takes nothing, so leaving it
 * out changes no share). */
static bool groups_build(struct tr_cluster_rt *c)
{
    const struct tr_cluster_cfg *cc = c->cfg;
    bool weighted = cc->n_locality_weights > 0;
    bool prios = false;
    for (uint32_t i = 0; i < c->n_eps && !prios; i++)
        prios = slot_cfg(c, i)->priority != 0;
    if (c->n_eps == 0 || (!prios && !weighted))
        return true;
    struct sort_item *it = calloc(c->n_eps, sizeof(*it));
    c->order = calloc(c->n_eps, sizeof(*c->order));
    c->groups = calloc(c->n_eps, sizeof(*c->groups));
    c->ep_prio = calloc(c->n_eps, sizeof(*c->ep_prio));
    c->prio_group = calloc(TR_LB_MAX_PRIOS + 1, sizeof(*c->prio_group));
    if (it == NULL || c->order == NULL || c->groups == NULL || c->ep_prio == NULL ||
        c->prio_group == NULL) {
        free(it);
        return false;
    }
    for (uint32_t i = 0; i < c->n_eps; i++) {
        const struct tr_endpoint_cfg *ec = slot_cfg(c, i);
        it[i] = (struct sort_item){
            .prio = ec->priority, .locality = weighted ? ec->locality : NULL, .idx = i};
    }
    qsort(it, c->n_eps, sizeof(*it), sort_item_cmp);
    uint32_t level = 0;
    for (uint32_t k = 0; k < c->n_eps; k++) {
        c->order[k] = it[k].idx;
        bool new_level = k > 0 && it[k].prio != it[k - 1].prio;
        bool new_group =
            k == 0 || new_level ||
            (weighted && strcmp(it[k].locality != NULL ? it[k].locality : "",
                                it[k - 1].locality != NULL ? it[k - 1].locality : "") != 0);
        if (new_level)
            c->prio_group[++level] = c->n_groups;
        if (new_group)
            c->groups[c->n_groups++] =
                (struct tr_lb_group){.lo = k,
                                     .prio = level,
                                     .weight = weighted ? locality_weight(cc, it[k].locality) : 0};
        c->groups[c->n_groups - 1].hi = k + 1;
        c->ep_prio[it[k].idx] = (uint8_t)level;
    }
    c->n_prios = level + 1;
    c->prio_group[c->n_prios] = c->n_groups;
    free(it);
    return true;
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
        if (!endpoints_build(c, p, n) || !table_build(c, p) || !groups_build(c))
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

/* An endpoint of view c that the newer views do not list: no new
 * connections; idle ones close now, busy ones when their request ends. */
static void retire(struct tr_cluster_rt *c, struct tr_endpoint_rt *ep)
{
    if (ep->cluster == c && !ep->retired) {
        ep->retired = true;
        tr_outlier_end(ep, 0); /* no longer counted as ejected */
        tr_pool_close_idle(ep);
    }
}

void tr_clusters_commit(struct tr_cluster_rt *cl, size_t n, struct tr_cluster_rt *prev,
                        size_t n_prev)
{
    for (size_t i = 0; i < n; i++) {
        struct tr_cluster_rt *c = &cl[i];
        c->n_unhealthy = 0;
        c->warm_until_ms = 0;
        uint32_t warmup = c->cfg->warmup.duration_ms;
        for (uint32_t e = 0; e < c->n_eps; e++) {
            struct tr_endpoint_rt *ep = c->eps[e];
            endpoint_move(ep, c, slot_cfg(c, e));
            endpoint_follow(ep, c, e);
            ep->prio = c->ep_prio != NULL ? c->ep_prio[e] : 0;
            if (warmup > 0 && ep->added_ms > 0 && ep->added_ms + warmup > c->warm_until_ms)
                c->warm_until_ms = ep->added_ms + warmup;
            c->n_unhealthy += ep->connect_failures > 0;
            if (!c->cfg->outlier.enabled)
                tr_outlier_end(ep, 0); /* outlier detection was turned off */
        }
    }
    for (size_t i = 0; prev != NULL && i < n_prev; i++) {
        for (uint32_t e = 0; e < prev[i].n_eps; e++)
            retire(&prev[i], prev[i].eps[e]);
        /* Endpoints of original destinations are made again on demand. */
        for (uint32_t k = 0; prev[i].orig != NULL && k < TR_ORIG_DST_SLOTS; k++)
            if (prev[i].orig[k] != NULL)
                retire(&prev[i], prev[i].orig[k]);
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
        for (uint32_t k = 0; cl[i].orig != NULL && k < TR_ORIG_DST_SLOTS; k++) {
            struct tr_endpoint_rt *ep = cl[i].orig[k];
            if (ep == NULL)
                continue;
            if (ep->cluster == &cl[i])
                ep->cluster = NULL;
            endpoint_unref(ep);
        }
        free(cl[i].orig);
        free(cl[i].eps);
        free(cl[i].weights);
        free(cl[i].ep_cfg);
        free(cl[i].ep_ip);
        free(cl[i].order);
        free(cl[i].groups);
        free(cl[i].ep_prio);
        free(cl[i].prio_group);
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
    uint64_t skip_prios; /* levels a retry leaves out (tr_pick_avoid.prios) */
    uint64_t now_ms;
    bool ignore_ejection;
};

static inline bool eligible(const struct tr_endpoint_rt *e, const struct pick_filter *pf)
{
    return e != pf->avoid && tr_endpoint_healthy(e, pf->now_ms) &&
           (pf->ignore_ejection || !tr_endpoint_ejected(e, pf->now_ms));
}

/* Healthy for the priority and locality shares: as eligible, but the
 * endpoint a retry avoids still counts (Envoy's shares do not depend on one
 * request's previous hosts). */
static inline bool healthy_now(const struct tr_endpoint_rt *e, const struct pick_filter *pf)
{
    return tr_endpoint_healthy(e, pf->now_ms) &&
           (pf->ignore_ejection || !tr_endpoint_ejected(e, pf->now_ms));
}

/* The endpoints one pick chooses among: indexes order[lo, hi), or lo..hi
 * themselves without an order; with warm set, endpoints still warming up
 * count with their ramped weight. */
struct pick_set {
    const uint32_t *order;
    uint32_t lo, hi;
    bool warm;
    uint64_t now_ms;
};

#define SET_AT(ps, k) ((ps)->order != NULL ? (ps)->order[k] : (k))

/* Round robin's weights are scaled by this in a cluster with warm-up, so a
 * ramped weight keeps three digits of precision. */
#define WARM_SCALE 1000u

/* Envoy's slow start: weight x max(minimum, (max(t, 1 s) / duration) ^
 * (1 / aggression)) while t, the time since the endpoint appeared, is
 * within the duration; scaled by WARM_SCALE. */
static int64_t warm_weight(const struct tr_cluster_rt *c, uint32_t i, uint64_t now_ms)
{
    int64_t w = (int64_t)c->weights[i] * WARM_SCALE;
    const struct tr_warmup_cfg *wc = &c->cfg->warmup;
    uint64_t added = c->eps[i]->added_ms;
    if (added == 0 || now_ms >= added + wc->duration_ms)
        return w;
    uint64_t t = now_ms > added ? now_ms - added : 0;
    if (t < 1000)
        t = 1000;
    double f = (double)t / (double)wc->duration_ms;
    if (f < 1.0)
        f = pow(f, 10000.0 / (double)wc->aggression);
    double min = (double)wc->min_per_million / 1e6;
    if (f < min)
        f = min;
    if (f > 1.0)
        f = 1.0;
    int64_t r = (int64_t)((double)w * f);
    return r > 0 ? r : 1;
}

static inline int64_t set_weight(const struct tr_cluster_rt *c, const struct pick_set *ps,
                                 uint32_t i)
{
    if (c->cfg->warmup.duration_ms == 0)
        return c->weights[i];
    return ps->warm ? warm_weight(c, i, ps->now_ms) : (int64_t)c->weights[i] * WARM_SCALE;
}

/* Smooth weighted round robin: each pick adds every weight to its endpoint's
 * counter and takes the largest, then subtracts the total. Spreads picks
 * evenly (a 5:1:1 split gives a,a,b,a,c,a,a rather than a,a,a,a,a,b,c).
 * With a filter, only eligible endpoints take part (and their total). */
static struct tr_endpoint_rt *pick_round_robin(struct tr_cluster_rt *c, const struct pick_set *ps,
                                               const struct pick_filter *pf)
{
    struct tr_endpoint_rt *best = NULL;
    int64_t total = 0;
    for (uint32_t k = ps->lo; k < ps->hi; k++) {
        uint32_t i = SET_AT(ps, k);
        struct tr_endpoint_rt *e = c->eps[i];
        if (c->weights[i] == 0 || (pf != NULL && !eligible(e, pf)))
            continue;
        int64_t w = set_weight(c, ps, i);
        e->rr_current += w;
        total += w;
        if (best == NULL || e->rr_current > best->rr_current)
            best = e;
    }
    if (best != NULL)
        best->rr_current -= total;
    return best;
}

/* An endpoint drawn with probability weight / total (ramped weights when
 * warming). total: the set's, or 0 to count it here. */
static struct tr_endpoint_rt *pick_weighted(struct tr_cluster_rt *c, const struct pick_set *ps,
                                            uint32_t rnd, int64_t total,
                                            const struct pick_filter *pf)
{
    if (total == 0)
        for (uint32_t k = ps->lo; k < ps->hi; k++) {
            uint32_t i = SET_AT(ps, k);
            if (pf == NULL || eligible(c->eps[i], pf))
                total += set_weight(c, ps, i);
        }
    if (total <= 0)
        return NULL;
    int64_t r = (int64_t)(rnd % (uint64_t)total);
    for (uint32_t k = ps->lo; k < ps->hi; k++) {
        uint32_t i = SET_AT(ps, k);
        if (pf != NULL && !eligible(c->eps[i], pf))
            continue;
        r -= set_weight(c, ps, i);
        if (r < 0)
            return c->eps[i];
    }
    return NULL;
}

static struct tr_endpoint_rt *pick_random(struct tr_cluster_rt *c, const struct pick_set *ps,
                                          uint32_t rnd, const struct pick_filter *pf)
{
    bool whole = pf == NULL && ps->order == NULL && ps->lo == 0 && ps->hi == c->n_eps;
    return pick_weighted(c, ps, rnd, whole ? c->total_weight : 0, pf);
}

/* The k-th eligible endpoint (0-based). */
static struct tr_endpoint_rt *nth_eligible(struct tr_cluster_rt *c, const struct pick_set *ps,
                                           uint32_t k, const struct pick_filter *pf)
{
    for (uint32_t j = ps->lo; j < ps->hi; j++) {
        struct tr_endpoint_rt *e = c->eps[SET_AT(ps, j)];
        if (eligible(e, pf) && k-- == 0)
            return e;
    }
    return NULL;
}

static uint32_t count_eligible(struct tr_cluster_rt *c, const struct pick_set *ps,
                               const struct pick_filter *pf)
{
    uint32_t n = 0;
    for (uint32_t k = ps->lo; k < ps->hi; k++)
        n += eligible(c->eps[SET_AT(ps, k)], pf);
    return n;
}

/* A second random number from the first (a 32-bit finalizer): shares that
 * are drawn one after the other must not be correlated. */
static inline uint32_t mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* Power of two choices on outstanding requests (weights are ignored, as
 * Envoy's with equal weights). While endpoints warm up, the two are drawn
 * by ramped weight instead, so a new endpoint is offered its share. */
static struct tr_endpoint_rt *pick_least_request(struct tr_cluster_rt *c, const struct pick_set *ps,
                                                 uint32_t rnd, const struct pick_filter *pf)
{
    struct tr_endpoint_rt *a, *b;
    uint32_t size = ps->hi - ps->lo;
    if (ps->warm) {
        a = pick_weighted(c, ps, rnd, 0, pf);
        b = pick_weighted(c, ps, mix32(rnd ^ 0x9e3779b9u), 0, pf);
        if (a == NULL || b == NULL)
            return a;
    } else if (pf == NULL) {
        if (size == 1)
            return c->eps[SET_AT(ps, ps->lo)];
        a = c->eps[SET_AT(ps, ps->lo + rnd % size)];
        b = c->eps[SET_AT(ps, ps->lo + (rnd >> 16) % size)];
    } else {
        uint32_t n = count_eligible(c, ps, pf);
        if (n == 0)
            return NULL;
        a = nth_eligible(c, ps, rnd % n, pf);
        b = nth_eligible(c, ps, (rnd >> 16) % n, pf);
    }
    return b->active_requests < a->active_requests ? b : a;
}

/* Consistent hashing: the table's endpoint for hash, or with a filter the
 * first eligible one after it (on a ring, where a ring without the others
 * would have sent the key). O(log n) on a ring, O(1) with Maglev. With
 * priorities (prio >= 0) only the level's endpoints qualify, so keys of the
 * others move to their next endpoint of that level. */
static struct tr_endpoint_rt *pick_hash(struct tr_cluster_rt *c, const struct pick_set *ps,
                                        uint64_t hash, const struct pick_filter *pf, int prio)
{
    const struct tr_lb_table *t = c->table;
    if (t == NULL || tr_lb_table_size(t) == 0)
        return NULL;
    if (pf == NULL && prio < 0)
        return c->eps[tr_lb_table_lookup(t, hash, 0)];
    struct pick_filter all = {.now_ms = ps->now_ms, .ignore_ejection = true};
    if (pf == NULL)
        pf = &all;
    if (count_eligible(c, ps, pf) == 0)
        return NULL; /* so the walk below always ends early */
    uint32_t size = tr_lb_table_size(t);
    for (uint32_t step = 0; step < size; step++) {
        uint32_t i = tr_lb_table_lookup(t, hash, step);
        if ((prio < 0 || c->ep_prio[i] == (uint32_t)prio) && eligible(c->eps[i], pf))
            return c->eps[i];
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

static struct tr_endpoint_rt *pick_in(struct tr_cluster_rt *c, const struct pick_set *ps,
                                      uint32_t rnd, uint64_t hash, const struct pick_filter *pf,
                                      int prio)
{
    switch (c->cfg->lb) {
    case TR_LB_RANDOM:
        return pick_random(c, ps, rnd, pf);
    case TR_LB_LEAST_REQUEST:
        return pick_least_request(c, ps, rnd, pf);
    case TR_LB_RING_HASH:
    case TR_LB_MAGLEV:
        return pick_hash(c, ps, hash, pf, prio);
    case TR_LB_ROUND_ROBIN:
    default:
        return pick_round_robin(c, ps, pf);
    }
}

/* Envoy's overprovisioning factor (1.4, which Istio keeps): a level or a
 * locality with at least 1/1.4 of its endpoints healthy takes its full
 * share. Shares are in 1/10000. */
#define SHARE_FULL 10000u
static uint32_t availability(uint32_t healthy, uint32_t n)
{
    if (n == 0)
        return 0;
    uint64_t a = (uint64_t)healthy * 14000u / n;
    return a > SHARE_FULL ? SHARE_FULL : (uint32_t)a;
}

static uint32_t group_healthy(const struct tr_cluster_rt *c, const struct tr_lb_group *g,
                              const struct pick_filter *pf)
{
    if (pf == NULL)
        return g->hi - g->lo;
    uint32_t n = 0;
    for (uint32_t k = g->lo; k < g->hi; k++)
        n += healthy_now(c->eps[c->order[k]], pf);
    return n;
}

/* The priority level that takes this request: Envoy's priority load. Each
 * level's health is its healthy share x 1.4 (at most 100 %); level 0 takes
 * its health, each next level what is left up to its own, and when the
 * levels together are under 100 % their loads are scaled up to it. The
 * levels a retry leaves out have no health, as Envoy's previous_priorities
 * reckons them, unless no other level has any (then none is left out). */
static uint32_t pick_level(struct tr_cluster_rt *c, uint32_t r, const struct pick_filter *pf)
{
    if (pf == NULL)
        return 0; /* all healthy: level 0's health is 100 % */
    uint32_t health[TR_LB_MAX_PRIOS];
    uint32_t sum = 0, skipped = 0;
    for (uint32_t p = 0; p < c->n_prios; p++) {
        uint32_t healthy = 0, n = 0;
        for (uint32_t g = c->prio_group[p]; g < c->prio_group[p + 1]; g++) {
            healthy += group_healthy(c, &c->groups[g], pf);
            n += c->groups[g].hi - c->groups[g].lo;
        }
        health[p] = availability(healthy, n);
        if (p < 64 && (pf->skip_prios >> p & 1u) != 0) {
            skipped += health[p];
            health[p] = 0;
        }
        sum += health[p];
    }
    if (sum == 0 && skipped > 0)
        return pick_level(c, r,
                          &(struct pick_filter){.avoid = pf->avoid,
                                                .now_ms = pf->now_ms,
                                                .ignore_ejection = pf->ignore_ejection});
    if (sum == 0)
        return 0; /* nothing healthy: level 0 answers (UH) */
    uint32_t total = sum < SHARE_FULL ? sum : SHARE_FULL;
    uint32_t draw = r % SHARE_FULL, acc = 0;
    for (uint32_t p = 0; p < c->n_prios; p++) {
        uint32_t load = (uint32_t)((uint64_t)health[p] * SHARE_FULL / total);
        if (load > SHARE_FULL - acc)
            load = SHARE_FULL - acc;
        acc += load;
        if (draw < acc)
            return p;
    }
    /* Rounding left a sliver: the last level with any health. */
    for (uint32_t p = c->n_prios; p-- > 0;)
        if (health[p] > 0)
            return p;
    return 0;
}

/* A locality of level p, drawn by weight x availability (Envoy's
 * locality-weighted balancing); without locality weights the level's one
 * group. Returns a group index, or UINT32_MAX when none has health. */
static uint32_t pick_locality(struct tr_cluster_rt *c, uint32_t p, uint32_t r,
                              const struct pick_filter *pf)
{
    uint32_t first = c->prio_group[p], end = c->prio_group[p + 1];
    if (c->cfg->n_locality_weights == 0 || end - first == 1)
        return first;
    uint64_t total = 0;
    for (uint32_t g = first; g < end; g++) {
        const struct tr_lb_group *gr = &c->groups[g];
        total += (uint64_t)gr->weight * availability(group_healthy(c, gr, pf), gr->hi - gr->lo);
    }
    if (total == 0)
        return UINT32_MAX;
    uint64_t draw = r % total;
    for (uint32_t g = first; g < end; g++) {
        const struct tr_lb_group *gr = &c->groups[g];
        uint64_t w = (uint64_t)gr->weight * availability(group_healthy(c, gr, pf), gr->hi - gr->lo);
        if (draw < w)
            return g;
        draw -= w;
    }
    return end - 1;
}

static struct tr_endpoint_rt *pick_grouped(struct tr_cluster_rt *c, uint32_t rnd, uint64_t hash,
                                           const struct pick_filter *pf, bool warm, uint64_t now_ms)
{
    uint32_t r1 = mix32(rnd), r2 = mix32(r1);
    uint32_t p = pick_level(c, r1, pf);
    uint32_t g = pick_locality(c, p, r2, pf);
    bool hashing = c->cfg->lb == TR_LB_RING_HASH || c->cfg->lb == TR_LB_MAGLEV;
    if (g != UINT32_MAX) {
        /* A hash pick walks the whole table for the level's endpoints. */
        struct pick_set ps = {.order = c->order,
                              .lo = hashing ? c->groups[c->prio_group[p]].lo : c->groups[g].lo,
                              .hi = hashing ? c->groups[c->prio_group[p + 1] - 1].hi
                                            : c->groups[g].hi,
                              .warm = warm,
                              .now_ms = now_ms};
        struct tr_endpoint_rt *e = pick_in(c, &ps, rnd, hash, pf, (int)p);
        if (e != NULL)
            return e;
    }
    if (pf == NULL)
        return NULL;
    /* Nothing there for this request (the endpoint it avoids was the only
     * one): the first other locality or level that has one, those of the
     * levels it leaves out last. */
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t k = 0; k < c->n_groups; k++) {
            const struct tr_lb_group *gr = &c->groups[k];
            bool skipped = gr->prio < 64 && (pf->skip_prios >> gr->prio & 1u) != 0;
            if (k == g || skipped != (pass == 1))
                continue;
            struct pick_set ps = {
                .order = c->order, .lo = gr->lo, .hi = gr->hi, .warm = warm, .now_ms = now_ms};
            struct tr_endpoint_rt *e = pick_in(c, &ps, rnd, hash, pf, (int)gr->prio);
            if (e != NULL)
                return e;
        }
    return NULL;
}

struct tr_endpoint_rt *tr_cluster_pick(struct tr_cluster_rt *c, uint32_t rnd, uint64_t hash,
                                       const struct tr_pick_avoid *avoid, uint64_t now_ms)
{
    if (c->n_eps == 0)
        return NULL;
    struct pick_filter f = {.now_ms = now_ms};
    if (avoid != NULL) {
        f.avoid = avoid->ep;
        f.skip_prios = c->n_prios > 1 ? avoid->prios : 0;
    }
    const struct pick_filter *pf = NULL;
    if (f.avoid != NULL || f.skip_prios != 0 || c->n_unhealthy > 0 || c->state->n_ejected > 0) {
        f.ignore_ejection = panic(c, now_ms);
        pf = &f;
    }
    bool warm = now_ms < c->warm_until_ms;
    if (c->n_groups > 0)
        return pick_grouped(c, rnd, hash, pf, warm, now_ms);
    struct pick_set ps = {.lo = 0, .hi = c->n_eps, .warm = warm, .now_ms = now_ms};
    return pick_in(c, &ps, rnd, hash, pf, -1);
}

/* ---- original destinations (clusters[].original_destination) ---- */

static size_t orig_slot(const struct sockaddr_storage *ss)
{
    return (size_t)(hash_addr(ss) & (TR_ORIG_DST_SLOTS - 1));
}

/* Removes slot k by backward shift (linear probing keeps no tombstones). */
static void orig_remove(struct tr_cluster_rt *c, size_t k)
{
    struct tr_endpoint_rt **t = c->orig;
    struct tr_endpoint_rt *gone = t[k];
    t[k] = NULL;
    c->n_orig--;
    for (size_t j = (k + 1) & (TR_ORIG_DST_SLOTS - 1); t[j] != NULL;
         j = (j + 1) & (TR_ORIG_DST_SLOTS - 1)) {
        size_t home = orig_slot(&t[j]->addr);
        /* t[j] may move into the hole unless its home lies in (k, j]. */
        bool stays = k <= j ? (home > k && home <= j) : (home > k || home <= j);
        if (!stays) {
            t[k] = t[j];
            t[j] = NULL;
            k = j;
        }
    }
    if (gone->cluster == c)
        gone->cluster = NULL;
    endpoint_unref(gone);
}

/* Room for one more: a full table gives up an endpoint without
 * connections or requests (the first found after a random start). */
static bool orig_room(struct tr_cluster_rt *c, uint64_t start)
{
    if (c->n_orig < TR_ORIG_DST_MAX)
        return true;
    for (size_t i = 0; i < TR_ORIG_DST_SLOTS; i++) {
        size_t k = (start + i) & (TR_ORIG_DST_SLOTS - 1);
        struct tr_endpoint_rt *ep = c->orig[k];
        if (ep != NULL && ep->conn_objs == 0 && ep->active_requests == 0) {
            orig_remove(c, k);
            return true;
        }
    }
    return false;
}

struct tr_endpoint_rt *tr_cluster_pick_original(struct tr_cluster_rt *c,
                                                const struct sockaddr_storage *dst, uint64_t now_ms)
{
    if (dst == NULL || (dst->ss_family != AF_INET && dst->ss_family != AF_INET6))
        return NULL;
    if (c->orig == NULL && (c->orig = calloc(TR_ORIG_DST_SLOTS, sizeof(*c->orig))) == NULL)
        return NULL;
    size_t k = orig_slot(dst);
    for (; c->orig[k] != NULL; k = (k + 1) & (TR_ORIG_DST_SLOTS - 1)) {
        struct tr_endpoint_rt *ep = c->orig[k];
        if (tr_sock_addr_equal(&ep->addr, dst))
            return tr_endpoint_healthy(ep, now_ms) ? ep : NULL;
    }
    if (!orig_room(c, hash_addr(dst) >> 11))
        return NULL;
    socklen_t len =
        dst->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    struct tr_endpoint_rt *ep = endpoint_new(dst, len, NULL, c->state);
    if (ep == NULL)
        return NULL;
    ep->refs++; /* the view's */
    ep->cluster = c;
    ep->workload = c->workload;
    ep->added_ms = now_ms;
    for (k = orig_slot(dst); c->orig[k] != NULL; k = (k + 1) & (TR_ORIG_DST_SLOTS - 1))
        ; /* a removal may have opened an earlier slot */
    c->orig[k] = ep;
    c->n_orig++;
    return ep;
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
