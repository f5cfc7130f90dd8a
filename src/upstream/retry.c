/* upstream/retry.c: retry policies at run time (see retry.h). */
#include "upstream/retry.h"

#include <string.h>

#include "cluster/cluster.h"
#include "obs/metrics.h"
#include "runtime/worker.h"

/* Conditions that look at more than "nothing was processed". */
#define AFTER_SEND                                                                                 \
    (TR_RETRY_ON_5XX | TR_RETRY_ON_GATEWAY_ERROR | TR_RETRY_ON_RESET | TR_RETRY_ON_RETRIABLE_4XX | \
     TR_RETRY_ON_RETRIABLE_STATUS_CODES | TR_RETRY_ON_CANCELLED | TR_RETRY_ON_DEADLINE_EXCEEDED |  \
     TR_RETRY_ON_RESOURCE_EXHAUSTED | TR_RETRY_ON_INTERNAL | TR_RETRY_ON_UNAVAILABLE)

/* Envoy counts "no response at all" as a 5xx and as a gateway error. */
#define NO_RESPONSE (TR_RETRY_ON_5XX | TR_RETRY_ON_GATEWAY_ERROR | TR_RETRY_ON_RESET)

static uint32_t grpc_bit(int grpc)
{
    switch (grpc) {
    case 1:
        return TR_RETRY_ON_CANCELLED;
    case 4:
        return TR_RETRY_ON_DEADLINE_EXCEEDED;
    case 8:
        return TR_RETRY_ON_RESOURCE_EXHAUSTED;
    case 13:
        return TR_RETRY_ON_INTERNAL;
    case 14:
        return TR_RETRY_ON_UNAVAILABLE;
    default:
        return 0;
    }
}

static bool code_listed(const struct tr_retry_cfg *p, int status)
{
    if (status < (int)TR_RETRY_CODE_MIN || status > (int)TR_RETRY_CODE_MAX)
        return false;
    unsigned i = (unsigned)status - TR_RETRY_CODE_MIN;
    return (p->code_bits[i / 64] >> (i % 64)) & 1u;
}

bool tr_retry_on_match(const struct tr_retry_cfg *p, enum tr_retry_event ev, int status, int grpc,
                       bool *by_grpc)
{
    uint32_t on = p->on;
    *by_grpc = false;
    switch (ev) {
    case TR_RETRY_EV_CONNECT_FAILURE:
        return (on & (NO_RESPONSE | TR_RETRY_ON_RESET_BEFORE_REQUEST |
                      TR_RETRY_ON_CONNECT_FAILURE)) != 0;
    case TR_RETRY_EV_REFUSED:
        return (on &
                (NO_RESPONSE | TR_RETRY_ON_RESET_BEFORE_REQUEST | TR_RETRY_ON_REFUSED_STREAM)) != 0;
    case TR_RETRY_EV_RESET:
    case TR_RETRY_EV_PER_TRY_TIMEOUT:
        return (on & NO_RESPONSE) != 0;
    case TR_RETRY_EV_STATUS:
        break;
    }
    if ((on & TR_RETRY_ON_5XX) && status >= 500 && status <= 599)
        return true;
    if ((on & TR_RETRY_ON_GATEWAY_ERROR) && status >= 502 && status <= 504)
        return true;
    if ((on & TR_RETRY_ON_RETRIABLE_4XX) && status == 409)
        return true;
    if ((on & TR_RETRY_ON_RETRIABLE_STATUS_CODES) && code_listed(p, status))
        return true;
    if (grpc >= 0 && (on & grpc_bit(grpc)) != 0) {
        *by_grpc = true;
        return true;
    }
    return false;
}

bool tr_retry_method_idempotent(tr_str m)
{
    return TR_STR_EQ_LIT(m, "GET") || TR_STR_EQ_LIT(m, "HEAD") || TR_STR_EQ_LIT(m, "OPTIONS") ||
           TR_STR_EQ_LIT(m, "TRACE") || TR_STR_EQ_LIT(m, "PUT") || TR_STR_EQ_LIT(m, "DELETE");
}

uint32_t tr_retry_backoff_ms(const struct tr_retry_cfg *p, uint32_t n, uint32_t rnd)
{
    /* (2^n - 1) x base, without overflow: past 2^20 it is over any max. */
    uint64_t upper = n >= 20 ? (uint64_t)p->backoff_max_ms
                             : ((1ull << (n == 0 ? 1 : n)) - 1) * p->backoff_base_ms;
    if (upper > p->backoff_max_ms)
        upper = p->backoff_max_ms;
    return (uint32_t)(rnd % (upper + 1));
}

bool tr_retry_budget_allows(uint32_t requests, uint32_t retries, uint32_t percent,
                            uint32_t min_concurrency)
{
    uint64_t share = (uint64_t)requests * percent / 100;
    uint64_t limit = share > min_concurrency ? share : min_concurrency;
    return retries < limit;
}

bool tr_retry_wants_body(const struct tr_retry_cfg *p, bool idempotent)
{
    return p->attempts > 0 && (p->on & AFTER_SEND) != 0 &&
           (idempotent || p->retry_non_idempotent) && p->max_body > 0;
}

void tr_retry_begin(struct tr_retry_state *r, struct tr_cluster_rt *cluster,
                    const struct tr_retry_cfg *policy, bool idempotent, tr_timer_cb cb)
{
    *r = (struct tr_retry_state){.policy = policy, .cluster = cluster, .idempotent = idempotent};
    tr_timer_init(&r->timer, cb);
    cluster->state->rq_in_flight++;
}

void tr_retry_end(struct tr_retry_state *r, struct tr_loop *loop)
{
    if (r->policy == NULL)
        return;
    tr_timer_cancel(loop, &r->timer);
    r->cluster->state->rq_in_flight--;
    if (r->budget)
        r->cluster->state->retries_in_flight--;
    r->budget = false;
    r->waiting = false;
    r->policy = NULL;
}

void tr_retry_try_armed(struct tr_retry_state *r, struct tr_loop *loop)
{
    if (r->policy == NULL || r->waiting || r->try_armed)
        return;
    r->try_armed = true;
    if (r->policy->per_try_timeout_ms != 0)
        tr_timer_set(loop, &r->timer, r->policy->per_try_timeout_ms);
}

void tr_retry_try_done(struct tr_retry_state *r, struct tr_loop *loop)
{
    if (r->policy == NULL || r->waiting)
        return;
    r->try_armed = true; /* no per-try timeout for the rest of this try */
    tr_timer_cancel(loop, &r->timer);
}

static enum tr_retry_reason reason_of(enum tr_retry_event ev, bool by_grpc)
{
    switch (ev) {
    case TR_RETRY_EV_CONNECT_FAILURE:
        return TR_RETRY_REASON_CONNECT_FAILURE;
    case TR_RETRY_EV_REFUSED:
        return TR_RETRY_REASON_REFUSED_STREAM;
    case TR_RETRY_EV_RESET:
        return TR_RETRY_REASON_RESET;
    case TR_RETRY_EV_PER_TRY_TIMEOUT:
        return TR_RETRY_REASON_PER_TRY_TIMEOUT;
    case TR_RETRY_EV_STATUS:
    default:
        return by_grpc ? TR_RETRY_REASON_GRPC_STATUS : TR_RETRY_REASON_STATUS;
    }
}

/* Could a retry find an endpoint now? Else the try's own failure is the
 * answer (a retry would only end in 503 UH). */
static bool any_healthy(const struct tr_cluster_rt *c, uint64_t now_ms)
{
    if (c->n_unhealthy == 0)
        return c->n_eps > 0;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        if (tr_endpoint_healthy(c->eps[i], now_ms))
            return true;
    }
    return false;
}

enum tr_retry_verdict tr_retry_decide(struct tr_retry_state *r, struct tr_worker *w,
                                      enum tr_retry_event ev, int status, int grpc, bool held,
                                      const struct tr_endpoint_rt *failed)
{
    const struct tr_retry_cfg *p = r->policy;
    bool by_grpc;
    if (p == NULL || p->attempts == 0 || !tr_retry_on_match(p, ev, status, grpc, &by_grpc))
        return TR_RETRY_NO;
    /* What may have reached the application goes again only if it is safe
     * to do twice, or the route says so. */
    bool unsent = ev == TR_RETRY_EV_CONNECT_FAILURE || ev == TR_RETRY_EV_REFUSED;
    if ((!unsent && !r->idempotent && !p->retry_non_idempotent) || !held)
        return TR_RETRY_NO;
    if (r->retries >= p->attempts)
        return TR_RETRY_LIMIT;
    struct tr_cluster_rt *c = r->cluster;
    if (!any_healthy(c, tr_loop_now_ms(w->loop)))
        return TR_RETRY_NO;
    if (!r->budget) {
        /* The cluster's own budget (a DestinationRule's retryBudget)
         * replaces the route's; circuit_breakers.max_retries caps both. */
        const struct tr_cluster_cfg *cc = c->cfg;
        uint32_t percent = cc->retry_budget ? cc->retry_budget->percent : p->budget_percent;
        uint32_t min =
            cc->retry_budget ? cc->retry_budget->min_concurrency : p->budget_min_concurrency;
        if (!tr_retry_budget_allows(c->state->rq_in_flight, c->state->retries_in_flight, percent,
                                    min) ||
            (c->max_retries != 0 && c->state->retries_in_flight >= c->max_retries)) {
            tr_metrics_count(w->metrics, TR_C_RETRY_BUDGET_EXHAUSTED, 1);
            return TR_RETRY_LIMIT;
        }
        r->budget = true;
        c->state->retries_in_flight++;
    }
    r->retries++;
    r->avoid.ep = p->avoid_failed_endpoint ? failed : NULL;
    if (failed != NULL && failed->prio < 64)
        r->tried_prios |= 1ull << failed->prio;
    /* Every N tries (Envoy's update frequency), the levels tried so far
     * are left out; r->retries is now the number of tries made. */
    if (p->exclude_tried_priorities != 0 && r->retries % p->exclude_tried_priorities == 0)
        r->avoid.prios = r->tried_prios;
    r->waiting = true;
    r->try_armed = false;
    tr_metrics_retry(w->metrics, reason_of(ev, by_grpc));
    tr_timer_set(w->loop, &r->timer, tr_retry_backoff_ms(p, r->retries, tr_worker_rand(w)));
    return TR_RETRY_SCHEDULED;
}

bool tr_retry_backoff_over(struct tr_retry_state *r)
{
    if (!r->waiting)
        return false;
    r->waiting = false;
    return true;
}
