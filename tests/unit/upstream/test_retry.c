/* upstream/retry: which events each retry_on condition takes (HTTP status
 * classes, listed codes, gRPC statuses of a response head, no response at
 * all), the idempotent methods, the backoff's bounds with full jitter, the
 * budget's arithmetic, and the decision as a request sees it: the
 * non-idempotent rule, a body not held, attempts, the budget (URX), the
 * timer (backoff, then per-try timeout) and the counts it keeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "config/load.h"
#include "event/loop.h"
#include "obs/metrics.h"
#include "runtime/worker.h"
#include "upstream/retry.h"

/* A policy as validate leaves it: the table's defaults, then on and the
 * code bits from what a test sets. */
static struct tr_retry_cfg policy(uint32_t on, const int *codes, size_t n)
{
    struct tr_route_cfg r;
    tr_cfg_route_defaults(&r);
    struct tr_retry_cfg p = r.retries;
    p.on = on;
    for (size_t i = 0; i < n; i++) {
        unsigned k = (unsigned)codes[i] - TR_RETRY_CODE_MIN;
        p.code_bits[k / 64] |= 1ull << (k % 64);
    }
    return p;
}

static bool match(const struct tr_retry_cfg *p, enum tr_retry_event ev, int status, int grpc)
{
    bool by_grpc;
    return tr_retry_on_match(p, ev, status, grpc, &by_grpc);
}

static void test_conditions(void **state)
{
    (void)state;
    const enum tr_retry_event none[] = {TR_RETRY_EV_CONNECT_FAILURE, TR_RETRY_EV_REFUSED,
                                        TR_RETRY_EV_RESET, TR_RETRY_EV_PER_TRY_TIMEOUT};
    /* No response at all is a 5xx and a gateway error for Envoy, and a reset. */
    const uint32_t no_response[] = {TR_RETRY_ON_5XX, TR_RETRY_ON_GATEWAY_ERROR, TR_RETRY_ON_RESET};
    for (size_t i = 0; i < 3; i++) {
        struct tr_retry_cfg p = policy(no_response[i], NULL, 0);
        for (size_t e = 0; e < 4; e++)
            assert_true(match(&p, none[e], 0, -1));
    }
    /* Conditions about what never reached the upstream. */
    struct tr_retry_cfg cf = policy(TR_RETRY_ON_CONNECT_FAILURE, NULL, 0);
    assert_true(match(&cf, TR_RETRY_EV_CONNECT_FAILURE, 0, -1));
    assert_false(match(&cf, TR_RETRY_EV_REFUSED, 0, -1));
    assert_false(match(&cf, TR_RETRY_EV_RESET, 0, -1));
    assert_false(match(&cf, TR_RETRY_EV_STATUS, 503, -1));
    struct tr_retry_cfg rs = policy(TR_RETRY_ON_REFUSED_STREAM, NULL, 0);
    assert_true(match(&rs, TR_RETRY_EV_REFUSED, 0, -1));
    assert_false(match(&rs, TR_RETRY_EV_CONNECT_FAILURE, 0, -1));
    assert_false(match(&rs, TR_RETRY_EV_PER_TRY_TIMEOUT, 0, -1));
    struct tr_retry_cfg rbr = policy(TR_RETRY_ON_RESET_BEFORE_REQUEST, NULL, 0);
    assert_true(match(&rbr, TR_RETRY_EV_CONNECT_FAILURE, 0, -1));
    assert_true(match(&rbr, TR_RETRY_EV_REFUSED, 0, -1));
    assert_false(match(&rbr, TR_RETRY_EV_RESET, 0, -1));

    /* Status classes. */
    struct tr_retry_cfg x5 = policy(TR_RETRY_ON_5XX, NULL, 0);
    assert_true(match(&x5, TR_RETRY_EV_STATUS, 500, -1));
    assert_true(match(&x5, TR_RETRY_EV_STATUS, 599, -1));
    assert_false(match(&x5, TR_RETRY_EV_STATUS, 499, -1));
    assert_false(match(&x5, TR_RETRY_EV_STATUS, 200, -1));
    struct tr_retry_cfg gw = policy(TR_RETRY_ON_GATEWAY_ERROR, NULL, 0);
    assert_false(match(&gw, TR_RETRY_EV_STATUS, 501, -1));
    assert_true(match(&gw, TR_RETRY_EV_STATUS, 502, -1));
    assert_true(match(&gw, TR_RETRY_EV_STATUS, 503, -1));
    assert_true(match(&gw, TR_RETRY_EV_STATUS, 504, -1));
    assert_false(match(&gw, TR_RETRY_EV_STATUS, 505, -1));
    struct tr_retry_cfg r4 = policy(TR_RETRY_ON_RETRIABLE_4XX, NULL, 0);
    assert_true(match(&r4, TR_RETRY_EV_STATUS, 409, -1));
    assert_false(match(&r4, TR_RETRY_EV_STATUS, 429, -1));
    assert_false(match(&r4, TR_RETRY_EV_RESET, 0, -1));

    /* Listed codes: only with retriable-status-codes, only those. */
    const int codes[] = {200, 429, 599};
    struct tr_retry_cfg lc = policy(TR_RETRY_ON_RETRIABLE_STATUS_CODES, codes, 3);
    for (int s = 100; s < 700; s++)
        assert_int_equal(match(&lc, TR_RETRY_EV_STATUS, s, -1), s == 200 || s == 429 || s == 599);
    struct tr_retry_cfg unlisted = policy(TR_RETRY_ON_5XX, codes, 3);
    assert_false(match(&unlisted, TR_RETRY_EV_STATUS, 429, -1));
    /* The default policy names the condition and no code: nothing matches. */
    struct tr_retry_cfg def =
        policy(TR_RETRY_ON_CONNECT_FAILURE | TR_RETRY_ON_REFUSED_STREAM | TR_RETRY_ON_UNAVAILABLE |
                   TR_RETRY_ON_CANCELLED | TR_RETRY_ON_RETRIABLE_STATUS_CODES,
               NULL, 0);
    for (int s = 200; s < 600; s++)
        assert_false(match(&def, TR_RETRY_EV_STATUS, s, -1));
    assert_false(match(&def, TR_RETRY_EV_RESET, 0, -1));

    /* gRPC statuses of a response head. */
    const struct {
        uint32_t bit;
        int grpc;
    } g[] = {{TR_RETRY_ON_CANCELLED, 1},
             {TR_RETRY_ON_DEADLINE_EXCEEDED, 4},
             {TR_RETRY_ON_RESOURCE_EXHAUSTED, 8},
             {TR_RETRY_ON_INTERNAL, 13},
             {TR_RETRY_ON_UNAVAILABLE, 14}};
    for (size_t i = 0; i < 5; i++) {
        struct tr_retry_cfg p = policy(g[i].bit, NULL, 0);
        for (int code = -1; code <= 16; code++) {
            bool by_grpc = false;
            bool m = tr_retry_on_match(&p, TR_RETRY_EV_STATUS, 200, code, &by_grpc);
            assert_int_equal(m, code == g[i].grpc);
            assert_int_equal(by_grpc, m);
        }
        assert_false(match(&p, TR_RETRY_EV_RESET, 0, -1));
    }
    /* A status match is not a gRPC match. */
    struct tr_retry_cfg both = policy(TR_RETRY_ON_5XX | TR_RETRY_ON_UNAVAILABLE, NULL, 0);
    bool by_grpc = true;
    assert_true(tr_retry_on_match(&both, TR_RETRY_EV_STATUS, 503, 14, &by_grpc));
    assert_false(by_grpc);
}

static void test_idempotent_methods(void **state)
{
    (void)state;
    const char *yes[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    const char *no[] = {"POST", "PATCH", "CONNECT", "get", "PROPFIND", "GETS", ""};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_true(tr_retry_method_idempotent(tr_str_from(yes[i], strlen(yes[i]))));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(tr_retry_method_idempotent(tr_str_from(no[i], strlen(no[i]))));
}

/* Envoy's: uniform in [0, min(max, base x (2^n - 1))]. */
static void test_backoff(void **state)
{
    (void)state;
    struct tr_retry_cfg p = policy(TR_RETRY_ON_5XX, NULL, 0); /* 25 ms, at most 250 ms */
    const uint32_t upper[] = {0, 25, 75, 175, 250, 250, 250};
    for (uint32_t n = 1; n <= 6; n++) {
        uint32_t lo = UINT32_MAX, hi = 0;
        for (uint32_t rnd = 0; rnd < 5000; rnd++) {
            uint32_t b = tr_retry_backoff_ms(&p, n, rnd * 2654435761u);
            lo = b < lo ? b : lo;
            hi = b > hi ? b : hi;
        }
        assert_int_equal(lo, 0);        /* full jitter: down to nothing */
        assert_int_equal(hi, upper[n]); /* and up to the bound, never past it */
    }
    assert_int_equal(tr_retry_backoff_ms(&p, 1, 25), 25);
    assert_int_equal(tr_retry_backoff_ms(&p, 1, 26), 0);
    /* Far retries and huge bases do not overflow past the cap. */
    p.backoff_base_ms = 60000;
    p.backoff_max_ms = 60000;
    for (uint32_t n = 1; n <= 100; n++)
        assert_true(tr_retry_backoff_ms(&p, n, UINT32_MAX) <= 60000);
    assert_int_equal(tr_retry_backoff_ms(&p, 63, 60000), 60000);
}

static void test_budget(void **state)
{
    (void)state;
    /* At most max(min_concurrency, percent% of the requests in flight). */
    assert_true(tr_retry_budget_allows(0, 0, 20, 3));
    assert_true(tr_retry_budget_allows(0, 2, 20, 3));
    assert_false(tr_retry_budget_allows(0, 3, 20, 3));
    assert_false(tr_retry_budget_allows(15, 3, 20, 3)); /* 20% of 15 is 3 */
    assert_true(tr_retry_budget_allows(20, 3, 20, 3));  /* 4 */
    assert_false(tr_retry_budget_allows(20, 4, 20, 3));
    assert_true(tr_retry_budget_allows(1000, 199, 20, 3));
    assert_false(tr_retry_budget_allows(1000, 200, 20, 3));
    assert_false(tr_retry_budget_allows(1000, 0, 0, 0));
    assert_true(tr_retry_budget_allows(1000, 999, 100, 0));
    assert_false(tr_retry_budget_allows(1000, 1000, 100, 0));
    assert_false(tr_retry_budget_allows(UINT32_MAX, UINT32_MAX, 100, UINT32_MAX));
}

static void test_wants_body(void **state)
{
    (void)state;
    struct tr_retry_cfg p = policy(TR_RETRY_ON_5XX, NULL, 0);
    assert_true(tr_retry_wants_body(&p, true));
    assert_false(tr_retry_wants_body(&p, false));
    p.retry_non_idempotent = true;
    assert_true(tr_retry_wants_body(&p, false));
    p.max_body = 0;
    assert_false(tr_retry_wants_body(&p, true));
    /* Conditions about unsent requests need no copy; nor do no retries. */
    struct tr_retry_cfg unsent = policy(TR_RETRY_ON_CONNECT_FAILURE | TR_RETRY_ON_REFUSED_STREAM |
                                            TR_RETRY_ON_RESET_BEFORE_REQUEST,
                                        NULL, 0);
    assert_false(tr_retry_wants_body(&unsent, true));
    struct tr_retry_cfg off = policy(TR_RETRY_ON_5XX, NULL, 0);
    off.attempts = 0;
    assert_false(tr_retry_wants_body(&off, true));
}

/* ---- the decision, on a worker with a loop and metrics ---- */

struct fixture {
    struct tr_worker w;
    struct tr_endpoint_rt ep[2];
    struct tr_endpoint_rt *eps[2];
    struct tr_cluster_rt c;
    struct tr_cluster_cfg cfg; /* zero: no cluster budget, no max_retries */
    struct tr_cluster_state state;
    struct tr_retry_cfg p;
    int fired;
};

static void on_timer(struct tr_timer *t)
{
    (void)t;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->w.loop = tr_loop_new();
    /* One table for the process: it stays registered for rendering. */
    static struct tr_metrics *metrics;
    if (metrics == NULL)
        metrics = tr_metrics_new(7);
    f->w.metrics = metrics;
    f->w.rng = 42;
    assert_non_null(f->w.loop);
    assert_non_null(f->w.metrics);
    f->eps[0] = &f->ep[0];
    f->eps[1] = &f->ep[1];
    f->c.eps = f->eps;
    f->c.state = &f->state;
    f->c.cfg = &f->cfg;
    f->c.n_eps = 2;
    const int codes[] = {503};
    f->p =
        policy(TR_RETRY_ON_5XX | TR_RETRY_ON_CONNECT_FAILURE | TR_RETRY_ON_RETRIABLE_STATUS_CODES,
               codes, 1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tr_loop_free(f->w.loop);
    free(f);
    return 0;
}

static uint64_t counter(const char *line)
{
    size_t len;
    char *text = tr_metrics_render(&len);
    assert_non_null(text);
    const char *at = strstr(text, line);
    uint64_t v = at != NULL ? strtoull(at + strlen(line), NULL, 10) : UINT64_MAX;
    free(text);
    return v;
}

#define RETRIED_STATUS "trellis_upstream_requests_retried_total{reason=\"status\"} "
#define EXHAUSTED      "\ntrellis_upstream_retry_budget_exhausted_total "

static void test_decide_attempts_and_timer(void **state)
{
    struct fixture *f = *state;
    struct tr_retry_state r;
    uint64_t before = counter(RETRIED_STATUS);
    f->p.attempts = 2;
    tr_retry_begin(&r, &f->c, &f->p, true, on_timer);
    assert_int_equal(f->state.rq_in_flight, 1);
    /* Not a condition of the policy: answered as is. */
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 404, -1, true, NULL),
                     TR_RETRY_NO);
    /* A 503: the backoff starts, with a retry of the budget taken. */
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, true, &f->ep[0]),
                     TR_RETRY_SCHEDULED);
    assert_true(r.waiting);
    assert_true(tr_timer_armed(&r.timer));
    assert_ptr_equal(r.avoid.ep, &f->ep[0]);
    assert_int_equal(f->state.retries_in_flight, 1);
    assert_true(r.timer.deadline_ms <= tr_loop_now_ms(f->w.loop) + 25);
    assert_true(tr_retry_backoff_over(&r));
    assert_false(r.waiting);
    /* A per-try timeout of none: arming a try arms no timer. */
    tr_timer_cancel(f->w.loop, &r.timer);
    tr_retry_try_armed(&r, f->w.loop);
    assert_false(tr_timer_armed(&r.timer));
    /* The second retry holds the same budget slot. */
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_RESET, 0, -1, true, &f->ep[1]),
                     TR_RETRY_SCHEDULED);
    assert_int_equal(f->state.retries_in_flight, 1);
    assert_int_equal(r.retries, 2);
    assert_true(tr_retry_backoff_over(&r));
    /* Attempts are used up: URX. */
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, true, NULL),
                     TR_RETRY_LIMIT);
    assert_int_equal(counter(RETRIED_STATUS), before + 1);
    tr_retry_end(&r, f->w.loop);
    assert_int_equal(f->state.rq_in_flight, 0);
    assert_int_equal(f->state.retries_in_flight, 0);
    assert_false(tr_timer_armed(&r.timer));
    tr_retry_end(&r, f->w.loop); /* idempotent */
    assert_int_equal(f->state.rq_in_flight, 0);
}

/* exclude_tried_priorities N: every N tries, the levels tried so far are
 * left out of the next picks (Envoy's previous_priorities). */
static void test_decide_tried_priorities(void **state)
{
    struct fixture *f = *state;
    struct tr_retry_state r;
    f->p.attempts = 4;
    f->p.exclude_tried_priorities = 2;
    f->ep[0].prio = 0;
    f->ep[1].prio = 2;
    tr_retry_begin(&r, &f->c, &f->p, true, on_timer);
    /* One try made: under N, nothing left out yet. */
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, true, &f->ep[0]),
                     TR_RETRY_SCHEDULED);
    assert_int_equal(r.avoid.prios, 0);
    assert_true(tr_retry_backoff_over(&r));
    /* Two tries (levels 0 and 2): both left out from the third on. */
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, true, &f->ep[1]),
                     TR_RETRY_SCHEDULED);
    assert_int_equal(r.avoid.prios, 0x5u);
    assert_ptr_equal(r.avoid.ep, &f->ep[1]);
    assert_true(tr_retry_backoff_over(&r));
    /* Three tries: kept as it was; four: updated (now level 1 too). */
    f->ep[0].prio = 1;
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, true, &f->ep[0]),
                     TR_RETRY_SCHEDULED);
    assert_int_equal(r.avoid.prios, 0x5u);
    assert_true(tr_retry_backoff_over(&r));
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, true, &f->ep[0]),
                     TR_RETRY_SCHEDULED);
    assert_int_equal(r.avoid.prios, 0x7u);
    tr_retry_end(&r, f->w.loop);
    /* Without the setting, no level is ever left out. */
    f->p.exclude_tried_priorities = 0;
    tr_retry_begin(&r, &f->c, &f->p, true, on_timer);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, true, &f->ep[i]),
                         TR_RETRY_SCHEDULED);
        assert_int_equal(r.avoid.prios, 0);
        assert_true(tr_retry_backoff_over(&r));
    }
    tr_retry_end(&r, f->w.loop);
    /* avoid_failed_endpoint false (Istio's retryIgnorePreviousHosts:
     * false): the next pick does not leave the failed endpoint out. */
    f->p.avoid_failed_endpoint = false;
    tr_retry_begin(&r, &f->c, &f->p, true, on_timer);
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, true, &f->ep[0]),
                     TR_RETRY_SCHEDULED);
    assert_null(r.avoid.ep);
    tr_retry_end(&r, f->w.loop);
}

static void test_decide_per_try_timeout(void **state)
{
    struct fixture *f = *state;
    struct tr_retry_state r;
    f->p.per_try_timeout_ms = 300;
    tr_retry_begin(&r, &f->c, &f->p, true, on_timer);
    tr_retry_try_armed(&r, f->w.loop);
    assert_true(tr_timer_armed(&r.timer));
    assert_int_equal(r.timer.deadline_ms, tr_loop_now_ms(f->w.loop) + 300);
    assert_false(tr_retry_backoff_over(&r)); /* what fires now is the try's timeout */
    /* Armed once per try: the request's end does not move it. */
    tr_timer_set(f->w.loop, &r.timer, 5);
    tr_retry_try_armed(&r, f->w.loop);
    assert_int_equal(r.timer.deadline_ms, tr_loop_now_ms(f->w.loop) + 5);
    /* The head came: no per-try timeout for the rest. */
    tr_retry_try_done(&r, f->w.loop);
    assert_false(tr_timer_armed(&r.timer));
    tr_retry_try_armed(&r, f->w.loop);
    assert_false(tr_timer_armed(&r.timer));
    tr_retry_end(&r, f->w.loop);
}

static void test_decide_what_may_go_again(void **state)
{
    struct fixture *f = *state;
    struct tr_retry_state r;
    /* A POST that reached the upstream: no retry, no URX. */
    tr_retry_begin(&r, &f->c, &f->p, false, on_timer);
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, true, NULL),
                     TR_RETRY_NO);
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_RESET, 0, -1, true, NULL), TR_RETRY_NO);
    /* Nothing of it reached the upstream: it may. */
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_CONNECT_FAILURE, 0, -1, true, NULL),
                     TR_RETRY_SCHEDULED);
    tr_retry_end(&r, f->w.loop);
    /* The route opts in. */
    f->p.retry_non_idempotent = true;
    tr_retry_begin(&r, &f->c, &f->p, false, on_timer);
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, true, NULL),
                     TR_RETRY_SCHEDULED);
    tr_retry_end(&r, f->w.loop);
    /* A request the caller no longer holds whole cannot go again. */
    tr_retry_begin(&r, &f->c, &f->p, true, on_timer);
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_STATUS, 503, -1, false, NULL),
                     TR_RETRY_NO);
    /* attempts: 0 is no retries at all, and no URX. */
    f->p.attempts = 0;
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_CONNECT_FAILURE, 0, -1, true, NULL),
                     TR_RETRY_NO);
    f->p.attempts = 2;
    /* No endpoint could take a retry: the try's own failure is the answer. */
    uint64_t now = tr_loop_now_ms(f->w.loop);
    f->ep[0].unhealthy_until_ms = f->ep[1].unhealthy_until_ms = now + 1000;
    f->c.n_unhealthy = 2;
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_CONNECT_FAILURE, 0, -1, true, NULL),
                     TR_RETRY_NO);
    f->ep[1].unhealthy_until_ms = 0;
    assert_int_equal(tr_retry_decide(&r, &f->w, TR_RETRY_EV_CONNECT_FAILURE, 0, -1, true, NULL),
                     TR_RETRY_SCHEDULED);
    tr_retry_end(&r, f->w.loop);
    /* Not begun (no route yet): nothing to decide. */
    struct tr_retry_state none = {0};
    assert_int_equal(tr_retry_decide(&none, &f->w, TR_RETRY_EV_CONNECT_FAILURE, 0, -1, true, NULL),
                     TR_RETRY_NO);
    tr_retry_end(&none, f->w.loop);
    assert_int_equal(f->state.rq_in_flight, 0);
    assert_int_equal(f->state.retries_in_flight, 0);
}

/* Ten requests in flight, 20% with at least 1: two retries at once; the
 * third request to fail gets URX and is counted; the budget follows the
 * requests in flight. */
static void test_decide_budget(void **state)
{
    struct fixture *f = *state;
    struct tr_retry_state r[10];
    f->p.budget_percent = 20;
    f->p.budget_min_concurrency = 1;
    for (int i = 0; i < 10; i++)
        tr_retry_begin(&r[i], &f->c, &f->p, true, on_timer);
    uint64_t before = counter(EXHAUSTED);
    assert_int_equal(tr_retry_decide(&r[0], &f->w, TR_RETRY_EV_STATUS, 500, -1, true, NULL),
                     TR_RETRY_SCHEDULED);
    assert_int_equal(tr_retry_decide(&r[1], &f->w, TR_RETRY_EV_STATUS, 500, -1, true, NULL),
                     TR_RETRY_SCHEDULED);
    assert_int_equal(tr_retry_decide(&r[2], &f->w, TR_RETRY_EV_STATUS, 500, -1, true, NULL),
                     TR_RETRY_LIMIT);
    assert_int_equal(counter(EXHAUSTED), before + 1);
    assert_int_equal(f->state.retries_in_flight, 2);
    /* A request holding a slot may retry again. */
    assert_int_equal(tr_retry_decide(&r[0], &f->w, TR_RETRY_EV_STATUS, 500, -1, true, NULL),
                     TR_RETRY_SCHEDULED);
    /* One ends: with it go a retry and a request (9 in flight: 1 retry). */
    tr_retry_end(&r[1], f->w.loop);
    assert_int_equal(tr_retry_decide(&r[2], &f->w, TR_RETRY_EV_STATUS, 500, -1, true, NULL),
                     TR_RETRY_LIMIT);
    /* Another request starts: 10 in flight, its slot is free for r[2]. */
    tr_retry_begin(&r[1], &f->c, &f->p, true, on_timer);
    assert_int_equal(tr_retry_decide(&r[2], &f->w, TR_RETRY_EV_STATUS, 500, -1, true, NULL),
                     TR_RETRY_SCHEDULED);
    assert_int_equal(counter(EXHAUSTED), before + 2);
    for (int i = 0; i < 10; i++)
        tr_retry_end(&r[i], f->w.loop);
    assert_int_equal(f->state.rq_in_flight, 0);
    assert_int_equal(f->state.retries_in_flight, 0);
}

/* A cluster's own retry budget replaces the route's; its max_retries caps
 * retries in flight whatever the budget allows. */
static void test_decide_cluster_limits(void **state)
{
    struct fixture *f = *state;
    struct tr_retry_state r[4];
    f->p.budget_percent = 100; /* the route's: every retry */
    f->p.budget_min_concurrency = 100;
    struct tr_retry_budget_cfg budget = {.percent = 0, .min_concurrency = 1};
    f->cfg.retry_budget = &budget;
    for (int i = 0; i < 4; i++)
        tr_retry_begin(&r[i], &f->c, &f->p, true, on_timer);
    assert_int_equal(tr_retry_decide(&r[0], &f->w, TR_RETRY_EV_STATUS, 500, -1, true, NULL),
                     TR_RETRY_SCHEDULED);
    assert_int_equal(tr_retry_decide(&r[1], &f->w, TR_RETRY_EV_STATUS, 500, -1, true, NULL),
                     TR_RETRY_LIMIT);
    f->cfg.retry_budget = NULL; /* the route's again, capped at 2 */
    f->c.max_retries = 2;
    assert_int_equal(tr_retry_decide(&r[1], &f->w, TR_RETRY_EV_STATUS, 500, -1, true, NULL),
                     TR_RETRY_SCHEDULED);
    assert_int_equal(tr_retry_decide(&r[2], &f->w, TR_RETRY_EV_STATUS, 500, -1, true, NULL),
                     TR_RETRY_LIMIT);
    assert_int_equal(f->state.retries_in_flight, 2);
    for (int i = 0; i < 4; i++)
        tr_retry_end(&r[i], f->w.loop);
    assert_int_equal(f->state.retries_in_flight, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conditions),
        cmocka_unit_test(test_idempotent_methods),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_wants_body),
        cmocka_unit_test_setup_teardown(test_decide_attempts_and_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decide_tried_priorities, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decide_per_try_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decide_what_may_go_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decide_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decide_cluster_limits, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
