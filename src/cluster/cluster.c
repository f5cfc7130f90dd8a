#include "cluster/cluster.h"

#include <stdlib.h>

#include "obs/metrics.h"
#include "runtime/worker.h"
#include "upstream/pool.h"

struct tr_cluster_rt *tr_clusters_build(struct tr_wsnap *ws)
{
    const struct tr_config *cfg = ws->snap->cfg;
    struct tr_cluster_rt *cl = calloc(cfg->n_clusters + 1, sizeof(*cl));
    if (cl == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        const struct tr_cluster_cfg *cc = &cfg->clusters[i];
        struct tr_cluster_rt *c = &cl[i];
        c->cfg = cc;
        c->ws = ws;
        c->tls = cc->tls >= 0 ? ws->snap->tls[cc->tls] : NULL;
        c->service = tr_metrics_intern(cc->service);
        c->workload = tr_metrics_intern(cc->workload);
        c->workload_namespace = tr_metrics_intern(cc->workload_namespace);
        c->eps = calloc(cc->n_endpoints + 1, sizeof(*c->eps));
        if (c->eps == NULL) {
            tr_clusters_free(cl, i);
            return NULL;
        }
        c->n_eps = (uint32_t)cc->n_endpoints;
        for (size_t e = 0; e < cc->n_endpoints; e++) {
            c->eps[e].cfg = &cc->endpoints[e];
            c->eps[e].cluster = c;
            tr_tls_session_slot_init(&c->eps[e].tls_slot);
            c->eps[e].workload = cc->endpoints[e].workload != NULL
                                     ? tr_metrics_intern(cc->endpoints[e].workload)
                                     : c->workload;
            c->total_weight += cc->endpoints[e].weight;
        }
    }
    return cl;
}

void tr_clusters_free(struct tr_cluster_rt *cl, size_t n)
{
    if (cl == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        for (uint32_t e = 0; e < cl[i].n_eps; e++) {
            tr_pool_close_idle(&cl[i].eps[e]);
            tr_tls_session_slot_clear(&cl[i].eps[e].tls_slot);
        }
        free(cl[i].eps);
    }
    free(cl);
}

/* An endpoint a pick may return: not in connect back-off, not the one the
 * failed attempt went to. The fast paths below skip this test while every
 * endpoint is healthy and nothing is avoided. */
static inline bool eligible(const struct tr_endpoint_rt *e, const struct tr_endpoint_rt *avoid,
                            uint64_t now_ms)
{
    return e != avoid && tr_endpoint_healthy(e, now_ms);
}

/* Smooth weighted round robin: each pick adds every weight to its endpoint's
 * counter and takes the largest, then subtracts the total. Spreads picks
 * evenly (a 5:1:1 split gives a,a,b,a,c,a,a rather than a,a,a,a,a,b,c).
 * With filter set, only eligible endpoints take part (and their total). */
static struct tr_endpoint_rt *pick_round_robin(struct tr_cluster_rt *c, bool filter,
                                               const struct tr_endpoint_rt *avoid, uint64_t now_ms)
{
    struct tr_endpoint_rt *best = NULL;
    int64_t total = 0;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        struct tr_endpoint_rt *e = &c->eps[i];
        if (e->cfg->weight == 0 || (filter && !eligible(e, avoid, now_ms)))
            continue;
        e->rr_current += e->cfg->weight;
        total += e->cfg->weight;
        if (best == NULL || e->rr_current > best->rr_current)
            best = e;
    }
    if (best != NULL)
        best->rr_current -= total;
    return best;
}

static struct tr_endpoint_rt *pick_random(struct tr_cluster_rt *c, uint32_t rnd, bool filter,
                                          const struct tr_endpoint_rt *avoid, uint64_t now_ms)
{
    int64_t total = c->total_weight;
    if (filter) {
        total = 0;
        for (uint32_t i = 0; i < c->n_eps; i++)
            if (eligible(&c->eps[i], avoid, now_ms))
                total += c->eps[i].cfg->weight;
    }
    if (total <= 0)
        return NULL;
    int64_t r = (int64_t)(rnd % (uint64_t)total);
    for (uint32_t i = 0; i < c->n_eps; i++) {
        if (filter && !eligible(&c->eps[i], avoid, now_ms))
            continue;
        r -= c->eps[i].cfg->weight;
        if (r < 0)
            return &c->eps[i];
    }
    return NULL;
}

/* The k-th eligible endpoint (0-based). */
static struct tr_endpoint_rt *nth_eligible(struct tr_cluster_rt *c, uint32_t k,
                                           const struct tr_endpoint_rt *avoid, uint64_t now_ms)
{
    for (uint32_t i = 0; i < c->n_eps; i++)
        if (eligible(&c->eps[i], avoid, now_ms) && k-- == 0)
            return &c->eps[i];
    return NULL;
}

/* Power of two choices on outstanding requests (weights are ignored). */
static struct tr_endpoint_rt *pick_least_request(struct tr_cluster_rt *c, uint32_t rnd, bool filter,
                                                 const struct tr_endpoint_rt *avoid,
                                                 uint64_t now_ms)
{
    struct tr_endpoint_rt *a, *b;
    if (!filter) {
        if (c->n_eps == 1)
            return &c->eps[0];
        a = &c->eps[rnd % c->n_eps];
        b = &c->eps[(rnd >> 16) % c->n_eps];
    } else {
        uint32_t n = 0;
        for (uint32_t i = 0; i < c->n_eps; i++)
            n += eligible(&c->eps[i], avoid, now_ms);
        if (n == 0)
            return NULL;
        a = nth_eligible(c, rnd % n, avoid, now_ms);
        b = nth_eligible(c, (rnd >> 16) % n, avoid, now_ms);
    }
    return b->active_requests < a->active_requests ? b : a;
}

struct tr_endpoint_rt *tr_cluster_pick(struct tr_cluster_rt *c, uint32_t rnd,
                                       const struct tr_endpoint_rt *avoid, uint64_t now_ms)
{
    if (c->n_eps == 0)
        return NULL;
    bool filter = avoid != NULL || c->n_unhealthy > 0;
    switch (c->cfg->lb) {
    case TR_LB_RANDOM:
        return pick_random(c, rnd, filter, avoid, now_ms);
    case TR_LB_LEAST_REQUEST:
        return pick_least_request(c, rnd, filter, avoid, now_ms);
    case TR_LB_ROUND_ROBIN:
    default:
        return pick_round_robin(c, filter, avoid, now_ms);
    }
}

void tr_endpoint_connect_failed(struct tr_endpoint_rt *ep, uint64_t now_ms)
{
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

void tr_endpoint_connect_ok(struct tr_endpoint_rt *ep)
{
    if (ep->connect_failures == 0)
        return;
    ep->connect_failures = 0;
    ep->unhealthy_until_ms = 0;
    ep->cluster->n_unhealthy--;
}
