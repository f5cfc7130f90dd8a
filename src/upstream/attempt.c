/* upstream/attempt.c: endpoint choice for the first attempt and for the
 * attempts after a connect failure (see attempt.h). */
#include "upstream/attempt.h"

#include "cluster/cluster.h"
#include "event/loop.h"
#include "obs/metrics.h"
#include "runtime/worker.h"

struct tr_endpoint_rt *tr_attempt_first(struct tr_worker *w, struct tr_cluster_rt *c, uint64_t hash,
                                        const struct sockaddr_storage *orig, uint8_t *attempts,
                                        bool *overflow)
{
    *attempts = 1;
    if (overflow != NULL) {
        *overflow = !tr_cluster_admit_request(c, w);
        if (*overflow)
            return NULL;
    }
    if (c->cfg->original_destination)
        return tr_cluster_pick_original(c, orig, tr_loop_now_ms(w->loop));
    return tr_cluster_pick(c, tr_worker_rand(w), hash, NULL, tr_loop_now_ms(w->loop));
}

struct tr_endpoint_rt *tr_attempt_next(struct tr_worker *w, struct tr_cluster_rt *c, uint64_t hash,
                                       const struct tr_endpoint_rt *failed, uint8_t *attempts)
{
    /* An original destination is the one place to go: nothing else to try. */
    if (*attempts >= TR_CONNECT_ATTEMPTS || c->cfg->original_destination)
        return NULL;
    struct tr_pick_avoid avoid = {.ep = failed};
    struct tr_endpoint_rt *ep =
        tr_cluster_pick(c, tr_worker_rand(w), hash, &avoid, tr_loop_now_ms(w->loop));
    if (ep == NULL)
        return NULL;
    (*attempts)++;
    tr_metrics_retry(w->metrics, TR_RETRY_REASON_CONNECT_FAILURE);
    return ep;
}

struct tr_endpoint_rt *tr_attempt_retry(struct tr_worker *w, struct tr_cluster_rt *c, uint64_t hash,
                                        const struct sockaddr_storage *orig,
                                        const struct tr_pick_avoid *avoid, bool *overflow)
{
    *overflow = !tr_cluster_admit_request(c, w);
    if (*overflow)
        return NULL;
    uint64_t now = tr_loop_now_ms(w->loop);
    if (c->cfg->original_destination)
        return tr_cluster_pick_original(c, orig, now); /* the same one again */
    struct tr_endpoint_rt *ep = tr_cluster_pick(c, tr_worker_rand(w), hash, avoid, now);
    if (ep == NULL && avoid != NULL)
        ep = tr_cluster_pick(c, tr_worker_rand(w), hash, NULL, now);
    return ep;
}
