/* cluster/outlier.c: outlier detection, Envoy's consecutive-error ejection
 * as Istio configures it (clusters[].outlier_detection).
 *
 * Every exchange with an endpoint ends in one report (tr_endpoint_report):
 * the status of the response head, or a local-origin result (connected,
 * failed, timed out). A run of 5xx (consecutive_5xx_errors), of 502/503/504
 * (consecutive_gateway_errors) or, with split_external_local_origin_errors,
 * of local failures (consecutive_local_origin_failures) ejects the endpoint:
 * every pick skips it for base_ejection_time x its ejection multiplier
 * (one more per ejection, one less per interval spent healthy since the
 * last one ended; at most max(300 s, base), Envoy's max_ejection_time), as
 * long as no more than max_ejection_percent of the cluster's endpoints
 * would be ejected. Without the split, a failure counts as a 503 and a
 * timeout as a 504, so both are 5xx and gateway errors.
 *
 * Per worker: the counts, the ejection and its timer live in the endpoint
 * object, which updates keep (cluster/cluster.h), so an ejection survives a
 * configuration update. A run is counted per worker: with N workers an
 * endpoint that fails every request is ejected by each worker after its own
 * consecutive errors (Envoy adds up its workers' and ejects for all).
 */
#include "cluster/cluster.h"

#include "core/log.h"
#include "obs/metrics.h"
#include "runtime/worker.h"

#define MAX_EJECTION_MS_FLOOR 300000u /* Envoy's max_ejection_time default */

static struct tr_worker *worker_of(const struct tr_endpoint_rt *ep)
{
    return ep->cluster != NULL && ep->cluster->ws != NULL ? ep->cluster->ws->w : NULL;
}

void tr_outlier_end(struct tr_endpoint_rt *ep, uint64_t now_ms)
{
    if (ep->ejected_until_ms == 0)
        return;
    ep->ejected_until_ms = 0;
    ep->unejected_at_ms = now_ms;
    /* A fresh start: a run nearly long enough before the ejection must not
     * eject again after one more error. */
    ep->consecutive_5xx = ep->consecutive_gateway = ep->consecutive_local = 0;
    ep->state->n_ejected--;
    if (ep->eject_w != NULL) {
        tr_timer_cancel(ep->eject_w->loop, &ep->eject_timer);
        tr_metrics_cluster(ep->eject_w->metrics, ep->state->name, TR_CM_EJECTED, -1);
        ep->eject_w = NULL;
    }
}

static void on_eject_timer(struct tr_timer *t)
{
    struct tr_endpoint_rt *ep = tr_container_of(t, struct tr_endpoint_rt, eject_timer);
    uint64_t now = tr_loop_now_ms(ep->eject_w->loop);
    tr_debug("cluster %s: endpoint %s returns after its ejection", ep->state->name, ep->addr_text);
    tr_outlier_end(ep, ep->ejected_until_ms < now ? ep->ejected_until_ms : now);
}

/* Ejections in force in ep's cluster (views list each endpoint once). */
static uint32_t ejected_now(const struct tr_cluster_rt *c, uint64_t now_ms)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_eps; i++)
        n += tr_endpoint_ejected(c->eps[i], now_ms);
    return n;
}

/* A run reached its threshold: eject ep unless max_ejection_percent says no. */
static void eject(struct tr_endpoint_rt *ep, const char *why, uint64_t now_ms)
{
    struct tr_cluster_rt *c = ep->cluster;
    const struct tr_outlier_cfg *o = &c->cfg->outlier;
    struct tr_worker *w = worker_of(ep);
    /* Envoy: (ejected + 1) / hosts <= max_ejection_percent, so a cluster of
     * fewer than 10 endpoints ejects none at Istio's default of 10 %. */
    if ((uint64_t)(ejected_now(c, now_ms) + 1) * 100 >
        (uint64_t)o->max_ejection_percent * c->n_eps) {
        tr_metrics_cluster(w != NULL ? w->metrics : NULL, ep->state->name, TR_CM_EJECTIONS_SKIPPED,
                           1);
        tr_info("cluster %s: endpoint %s not ejected (%s): max_ejection_percent %u reached",
                c->cfg->name, ep->addr_text, why, o->max_ejection_percent);
        return;
    }
    /* The multiplier fell by one per interval since the last ejection ended. */
    if (ep->unejected_at_ms != 0 && ep->eject_multiplier > 0) {
        uint64_t healthy = (now_ms - ep->unejected_at_ms) / o->interval_ms;
        ep->eject_multiplier =
            healthy >= ep->eject_multiplier ? 0 : ep->eject_multiplier - (uint32_t)healthy;
    }
    uint64_t base = o->base_ejection_ms;
    uint64_t max = base > MAX_EJECTION_MS_FLOOR ? base : MAX_EJECTION_MS_FLOOR;
    if ((uint64_t)ep->eject_multiplier * base < max + base)
        ep->eject_multiplier++;
    uint64_t ms = (uint64_t)ep->eject_multiplier * base;
    if (ms > max)
        ms = max;
    ep->ejected_until_ms = now_ms + ms;
    ep->ejections++;
    ep->state->n_ejected++;
    tr_info("cluster %s: endpoint %s ejected for %llu ms (%s; ejection %u)", c->cfg->name,
            ep->addr_text, (unsigned long long)ms, why, ep->ejections);
    if (w != NULL) {
        tr_metrics_cluster(w->metrics, ep->state->name, TR_CM_EJECTIONS, 1);
        tr_metrics_cluster(w->metrics, ep->state->name, TR_CM_EJECTED, 1);
        tr_timer_init(&ep->eject_timer, on_eject_timer);
        tr_timer_set(w->loop, &ep->eject_timer, ms);
        ep->eject_w = w;
    }
}

/* One more in a run; at exactly the threshold (0: off) the run ejects and
 * starts over, whether or not the ejection happened (as Envoy). */
static bool run(uint32_t *count, uint32_t threshold)
{
    if (threshold == 0 || ++*count != threshold)
        return false;
    *count = 0;
    return true;
}

void tr_outlier_report(struct tr_endpoint_rt *ep, int outcome, uint64_t now_ms)
{
    const struct tr_outlier_cfg *o = &ep->cluster->cfg->outlier;
    if (ep->ejected_until_ms != 0) {
        if (now_ms < ep->ejected_until_ms)
            return; /* requests that were in flight: it is out already */
        tr_outlier_end(ep, ep->ejected_until_ms); /* its timer has not run yet */
    }
    int status = outcome;
    if (outcome < 0) {
        if (o->split_local) {
            if (outcome == TR_OUTCOME_CONNECTED)
                ep->consecutive_local = 0;
            else if (run(&ep->consecutive_local, o->consecutive_local))
                eject(ep, "consecutive local-origin failures", now_ms);
            return;
        }
        if (outcome == TR_OUTCOME_CONNECTED)
            return; /* the response will tell */
        status = outcome == TR_OUTCOME_TIMEOUT ? 504 : 503;
    }
    if (status < 500 || status > 599) {
        ep->consecutive_5xx = ep->consecutive_gateway = 0;
        return;
    }
    if (status >= 502 && status <= 504) {
        if (run(&ep->consecutive_gateway, o->consecutive_gateway)) {
            eject(ep, "consecutive gateway errors", now_ms);
            return;
        }
    } else {
        ep->consecutive_gateway = 0;
    }
    if (run(&ep->consecutive_5xx, o->consecutive_5xx))
        eject(ep, "consecutive 5xx", now_ms);
}
