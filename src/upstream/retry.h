/* upstream/retry.h: whether, when and where a failed try of a request goes
 * again (a route's retry policy, config/model.h tr_retry_cfg).
 *
 * Every route has a policy (a route without `retries` has the defaults:
 * Istio's default policy). A try ends in one event (enum tr_retry_event);
 * the policy's retry_on says whether that event is worth another try, and
 * these rules say whether one may go:
 *   - a request whose method is not idempotent (RFC 9110 9.2.2: POST,
 *     PATCH, CONNECT, any unknown method) goes again only when no byte of
 *     it can have reached the upstream (connect failure, refused stream),
 *     unless the route sets retry_non_idempotent;
 *   - the caller must still hold the whole request so far (a body over
 *     max_body_for_retry is not held once it starts to go);
 *   - at most `attempts` retries, and the cluster's retry budget: per worker
 *     and cluster, retries in flight at most max(min_concurrency, percent% of
 *     the requests in flight), Linkerd's rule with Envoy's numbers;
 *   - a response that started going downstream is never retried (callers
 *     decide on the response head, before it goes).
 * A retry waits a jittered exponential backoff on a timer (never on the
 * stack of the failure), then goes to another endpoint when one qualifies
 * (the failed one avoided), else to the same one. With the policy's
 * exclude_tried_priorities N, once N tries went out (and again after each N
 * more), the priority levels they went to are left out of the next picks
 * (Envoy's previous_priorities with update_frequency N, which Istio's
 * retryRemoteLocalities sets with N = 2). A try that was not
 * retried is answered as it is, with URX when attempts or the budget were
 * what stopped it (Envoy's "upstream retry limit exceeded").
 *
 * The state is embedded in the request's owner (the HTTP/1.1 byte path's
 * tr_http_state, a tr_stream); its timer is the backoff, then the try's
 * per_try_timeout. The pure parts (conditions, backoff, budget, methods)
 * are unit-tested (tests/unit/upstream/test_retry.c). One worker thread.
 */
#ifndef TR_UPSTREAM_RETRY_H
#define TR_UPSTREAM_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster/cluster.h"
#include "config/model.h"
#include "core/str.h"
#include "event/loop.h"

struct tr_worker;
struct tr_cluster_rt;
struct tr_endpoint_rt;

/* What ended a try. */
enum tr_retry_event {
    TR_RETRY_EV_CONNECT_FAILURE = 0, /* no connection (or TLS): nothing was sent */
    TR_RETRY_EV_REFUSED,             /* HTTP/2 REFUSED_STREAM, beyond a GOAWAY: not processed */
    TR_RETRY_EV_RESET,               /* closed or reset before a response head */
    TR_RETRY_EV_PER_TRY_TIMEOUT,     /* no response head within per_try_timeout */
    TR_RETRY_EV_STATUS,              /* a final response head (status, and grpc-status) */
};

/* Does the policy's retry_on take this event? status: the response's
 * (TR_RETRY_EV_STATUS only); grpc: its grpc-status, -1 if none. Sets
 * *by_grpc when a gRPC condition is what matched. */
bool tr_retry_on_match(const struct tr_retry_cfg *p, enum tr_retry_event ev, int status, int grpc,
                       bool *by_grpc);

/* RFC 9110 9.2.2: GET, HEAD, OPTIONS, TRACE, PUT and DELETE. */
bool tr_retry_method_idempotent(tr_str method);

/* Envoy's backoff with full jitter: uniform in [0, min(max, base x (2^n - 1))]
 * for the n-th retry (n >= 1); rnd is a random 32-bit number. */
uint32_t tr_retry_backoff_ms(const struct tr_retry_cfg *p, uint32_t n, uint32_t rnd);

/* May one more retry start, with `retries` in flight among `requests` in
 * flight? At most max(min_concurrency, percent% of requests). */
bool tr_retry_budget_allows(uint32_t requests, uint32_t retries, uint32_t percent,
                            uint32_t min_concurrency);

/* Should the caller keep a copy of the body it sends, for a retry after
 * bytes left? Only when such a retry could happen (a condition other than
 * connect-failure, refused-stream, reset-before-request; a method it may
 * apply to; attempts). */
bool tr_retry_wants_body(const struct tr_retry_cfg *p, bool idempotent);

struct tr_retry_state {
    const struct tr_retry_cfg *policy; /* the route's; NULL: not begun */
    struct tr_cluster_rt *cluster;     /* counted in its state's rq_in_flight while begun */
    struct tr_timer timer;             /* the backoff (waiting), else the try's per_try_timeout */
    struct tr_pick_avoid avoid;        /* for the next pick: the failed try's endpoint, the
                                 * levels exclude_tried_priorities leaves out */
    uint64_t tried_prios;              /* priority levels the tries so far went to (below 64) */
    uint8_t retries;                   /* retries started */
    bool idempotent;
    bool budget;    /* holds one of the cluster's retries in flight */
    bool waiting;   /* the timer is the backoff: no try is in flight */
    bool try_armed; /* this try's per_try_timeout is armed (or ran out) */
};

/* The request starts toward cluster with the route's policy: counted among
 * the cluster's requests in flight until tr_retry_end. cb is the owner's
 * timer callback (tr_container_of finds the owner from the timer). */
void tr_retry_begin(struct tr_retry_state *r, struct tr_cluster_rt *cluster,
                    const struct tr_retry_cfg *policy, bool idempotent, tr_timer_cb cb);

/* The request is over (answered, or abandoned): timer cancelled, counts
 * dropped. Idempotent; a state never begun is fine. */
void tr_retry_end(struct tr_retry_state *r, struct tr_loop *loop);

/* A try is in flight and the whole request reached the proxy: its
 * per_try_timeout starts (once per try). */
void tr_retry_try_armed(struct tr_retry_state *r, struct tr_loop *loop);
/* The try's final response head arrived and goes downstream: no timeout
 * per try any more (the route's own timeout bounds the rest). */
void tr_retry_try_done(struct tr_retry_state *r, struct tr_loop *loop);

enum tr_retry_verdict {
    TR_RETRY_NO = 0,    /* not a retry condition (or not for this request): answer as is */
    TR_RETRY_LIMIT,     /* attempts or the budget are used up: answer as is, with URX */
    TR_RETRY_SCHEDULED, /* the backoff timer runs; the owner starts a try when it fires */
};

/* A try ended in ev (status, grpc: as for tr_retry_on_match); failed: its
 * endpoint (NULL if none was picked); held: the caller still holds all of
 * the request it has sent or may send, so it can send it again. Counts the
 * retry (trellis_upstream_requests_retried_total) or the budget's refusal. */
enum tr_retry_verdict tr_retry_decide(struct tr_retry_state *r, struct tr_worker *w,
                                      enum tr_retry_event ev, int status, int grpc, bool held,
                                      const struct tr_endpoint_rt *failed);

/* Does the policy read a response head's grpc-status? (Callers look the
 * field up only then.) */
static inline bool tr_retry_reads_grpc(const struct tr_retry_state *r)
{
    return r->policy != NULL && (r->policy->on & TR_RETRY_ON_GRPC) != 0;
}

/* For the owner's timer callback: true when the backoff ran out (the owner
 * starts the next try now, with r->avoid),
 * false when the try's per_try_timeout did (the owner ends the try and
 * decides on TR_RETRY_EV_PER_TRY_TIMEOUT). */
bool tr_retry_backoff_over(struct tr_retry_state *r);

#endif
