#include <string.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "event/loop.h"

struct rec {
    struct tr_timer t;
    int id;
    int *order;
    int *n;
};

static void on_timer(struct tr_timer *t)
{
    struct rec *r = tr_container_of(t, struct rec, t);
    r->order[(*r->n)++] = r->id;
}

static void test_timers_fire_in_deadline_order(void **state)
{
    struct tr_loop *loop = tr_loop_new();
    int order[8], n = 0;
    struct rec r[5];
    const int delays[5] = {30, 10, 50, 20, 40};
    for (int i = 0; i < 5; i++) {
        r[i] = (struct rec){.id = i, .order = order, .n = &n};
        tr_timer_init(&r[i].t, on_timer);
        tr_timer_set(loop, &r[i].t, (uint64_t)delays[i]);
    }
    assert_int_equal(tr_loop_timer_count(loop), 5);
    /* Cancel one, move one earlier. */
    tr_timer_cancel(loop, &r[4].t);
    tr_timer_set(loop, &r[2].t, 5);
    assert_false(tr_timer_armed(&r[4].t));
    while (n < 4)
        assert_int_equal(tr_loop_run_once(loop, 100), 0);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 3);
    assert_int_equal(order[3], 0);
    assert_int_equal(tr_loop_timer_count(loop), 0);
    tr_loop_free(loop);
}

static void test_many_timers_heap_stays_ordered(void **state)
{
    struct tr_loop *loop = tr_loop_new();
    enum { N = 500 };
    struct rec *r = calloc(N, sizeof(*r));
    int *order = calloc(N, sizeof(int));
    int n = 0;
    srand(42);
    for (int i = 0; i < N; i++) {
        r[i] = (struct rec){.id = i, .order = order, .n = &n};
        tr_timer_init(&r[i].t, on_timer);
        tr_timer_set(loop, &r[i].t, (uint64_t)(rand() % 1000) + 100000);
    }
    /* Re-arm half of them to deadlines that encode their id: those fire in id order. */
    for (int i = 0; i < N; i += 2)
        tr_timer_set(loop, &r[i].t, (uint64_t)i / 100);
    for (int i = 1; i < N; i += 2)
        tr_timer_cancel(loop, &r[i].t);
    assert_int_equal(tr_loop_timer_count(loop), N / 2);
    while (n < N / 2)
        tr_loop_run_once(loop, 50);
    for (int i = 1; i < n; i++)
        assert_true(order[i - 1] / 100 <= order[i] / 100);
    free(r);
    free(order);
    tr_loop_free(loop);
}

struct io_rec {
    struct tr_io io;
    int hits;
    uint32_t last;
};

static void on_io(struct tr_io *io, uint32_t events)
{
    struct io_rec *r = tr_container_of(io, struct io_rec, io);
    r->hits++;
    r->last = events;
}

static void test_edge_triggered_io(void **state)
{
    struct tr_loop *loop = tr_loop_new();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct io_rec r = {.io = {.fd = sv[0], .cb = on_io}};
    assert_int_equal(tr_loop_add(loop, &r.io, EPOLLIN | EPOLLRDHUP), 0);
    assert_int_equal(write(sv[1], "x", 1), 1);
    tr_loop_run_once(loop, 100);
    assert_int_equal(r.hits, 1);
    assert_true(r.last & EPOLLIN);
    /* Edge-triggered: no new data, no new event even though unread. */
    tr_loop_run_once(loop, 20);
    assert_int_equal(r.hits, 1);
    /* New data: a new edge. */
    assert_int_equal(write(sv[1], "y", 1), 1);
    tr_loop_run_once(loop, 100);
    assert_int_equal(r.hits, 2);
    close(sv[1]);
    tr_loop_run_once(loop, 100);
    assert_int_equal(r.hits, 3);
    assert_true(r.last & EPOLLRDHUP);
    tr_loop_del(loop, &r.io);
    close(sv[0]);
    tr_loop_free(loop);
}

static int deferred_runs;
static void on_deferred(struct tr_deferred *d)
{
    deferred_runs++;
}

static void test_deferred_runs_once(void **state)
{
    struct tr_loop *loop = tr_loop_new();
    struct tr_deferred d = {0};
    deferred_runs = 0;
    tr_loop_defer(loop, &d, on_deferred);
    tr_loop_defer(loop, &d, on_deferred); /* already queued: no-op */
    tr_loop_run_once(loop, 0);
    assert_int_equal(deferred_runs, 1);
    tr_loop_run_once(loop, 0);
    assert_int_equal(deferred_runs, 1);
    tr_loop_free(loop);
}

/* A session's pump_later is queued by its TLS handshake step and then by
 * HTTP: the call that runs is the latest one asked for (a lost HTTP wake
 * stalled a request body until the client gave up). */
static int other_runs;
static void on_other(struct tr_deferred *d)
{
    other_runs++;
}

static void test_deferred_latest_callback_wins(void **state)
{
    struct tr_loop *loop = tr_loop_new();
    struct tr_deferred d = {0};
    deferred_runs = other_runs = 0;
    tr_loop_defer(loop, &d, on_other);
    tr_loop_defer(loop, &d, on_deferred);
    tr_loop_run_once(loop, 0);
    assert_int_equal(deferred_runs, 1);
    assert_int_equal(other_runs, 0);
    tr_loop_free(loop);
}

/* Cancel unlinks from anywhere: head, middle, tail (then queueing more
 * still appends), and from the run in progress. */
static struct tr_deferred chain[4];
static int chain_order[8], chain_n;
static struct tr_loop *chain_loop;
static void on_chain(struct tr_deferred *d)
{
    int i = (int)(d - chain);
    chain_order[chain_n++] = i;
    if (i == 0) /* a callback cancels a call later in the same run */
        tr_loop_cancel(chain_loop, &chain[2]);
}

static void test_deferred_cancel(void **state)
{
    struct tr_loop *loop = tr_loop_new();
    chain_loop = loop;
    memset(chain, 0, sizeof chain);
    chain_n = 0;
    for (int i = 0; i < 4; i++)
        tr_loop_defer(loop, &chain[i], on_chain);
    tr_loop_cancel(loop, &chain[3]); /* the tail */
    tr_loop_cancel(loop, &chain[3]); /* not queued: no-op */
    assert_false(chain[3].queued);
    tr_loop_defer(loop, &chain[3], on_chain); /* appends after a cancelled tail */
    tr_loop_run_once(loop, 0);
    assert_int_equal(chain_n, 3);
    assert_int_equal(chain_order[0], 0);
    assert_int_equal(chain_order[1], 1);
    assert_int_equal(chain_order[2], 3);
    assert_false(chain[2].queued);

    chain_n = 0;
    tr_loop_defer(loop, &chain[1], on_chain);
    tr_loop_defer(loop, &chain[2], on_chain);
    tr_loop_defer(loop, &chain[3], on_chain);
    tr_loop_cancel(loop, &chain[1]); /* the head */
    tr_loop_cancel(loop, &chain[2]); /* now the head again */
    tr_loop_run_once(loop, 0);
    assert_int_equal(chain_n, 1);
    assert_int_equal(chain_order[0], 3);
    tr_loop_run_once(loop, 0);
    assert_int_equal(chain_n, 1);
    tr_loop_free(loop);
}

static void test_clock_is_cached_per_iteration(void **state)
{
    struct tr_loop *loop = tr_loop_new();
    uint64_t a = tr_loop_now_us(loop);
    usleep(2000);
    assert_int_equal(tr_loop_now_us(loop), a); /* not re-read without an iteration */
    tr_loop_run_once(loop, 0);
    assert_true(tr_loop_now_us(loop) >= a + 2000);
    tr_loop_free(loop);
}

/* ---- loop-turn statistics ---- */

/* Busy for at least us microseconds of wall time (like a long callback). */
static void spend_us(uint64_t us)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((uint64_t)(b.tv_sec - a.tv_sec) * 1000000u + (uint64_t)(b.tv_nsec / 1000) -
               (uint64_t)(a.tv_nsec / 1000) <
           us);
}

static uint64_t buckets_from(const uint64_t *b, unsigned first)
{
    uint64_t n = 0;
    for (unsigned i = first; i <= TR_LOOP_BUCKETS; i++)
        n += b[i];
    return n;
}

static unsigned bucket_index(uint32_t bound_us)
{
    for (unsigned i = 0; i < TR_LOOP_BUCKETS; i++)
        if (tr_loop_bucket_us[i] == bound_us)
            return i;
    fail_msg("no bucket bound %u", bound_us);
    return 0;
}

struct slow_io {
    struct tr_io io;
    struct tr_loop *loop;
    struct tr_deferred d;
    uint64_t spend;
};

static void on_slow_io(struct tr_io *io, uint32_t events)
{
    struct slow_io *r = tr_container_of(io, struct slow_io, io);
    char c;
    while (read(io->fd, &c, 1) == 1)
        ;
    spend_us(r->spend);
    tr_loop_defer(r->loop, &r->d, on_deferred);
}

static void test_turn_stats_record_slow_turn_and_what_ran(void **state)
{
    struct tr_loop *loop = tr_loop_new();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct slow_io r = {.io = {.fd = sv[0], .cb = on_slow_io}, .loop = loop, .spend = 3000};
    assert_int_equal(tr_loop_add(loop, &r.io, EPOLLIN), 0);
    assert_int_equal(write(sv[1], "x", 1), 1);
    assert_int_equal(tr_loop_run_once(loop, 100), 0);

    struct tr_loop_stats st;
    tr_loop_stats_get(loop, &st);
    assert_int_equal(st.turns, 1);
    /* 3 ms of callback: above the 2.5 ms bound, nothing below it. */
    assert_int_equal(buckets_from(st.turn_bucket, bucket_index(2500) + 1), 1);
    assert_true(st.turn_sum_us >= 3000);
    assert_int_equal(st.slow_turns, 1);
    assert_int_equal(st.slow_calls[TR_LOOP_PHASE_IO], 1);
    assert_int_equal(st.slow_calls[TR_LOOP_PHASE_DEFERRED], 1);
    assert_int_equal(st.slow_calls[TR_LOOP_PHASE_TIMERS], 0);
    assert_true(st.slow_phase_us[TR_LOOP_PHASE_IO] >= 3000);
    /* The longest turn says the same, and where the time went. */
    assert_true(st.longest.duration_us >= 3000);
    assert_int_equal(st.longest.calls[TR_LOOP_PHASE_IO], 1);
    assert_int_equal(st.longest.calls[TR_LOOP_PHASE_DEFERRED], 1);
    assert_true(st.longest.phase_us[TR_LOOP_PHASE_IO] >= 3000);
    assert_true(st.longest.phase_us[TR_LOOP_PHASE_IO] +
                    st.longest.phase_us[TR_LOOP_PHASE_DEFERRED] <=
                st.longest.duration_us);
    assert_true(st.longest.start_us >= tr_loop_now_us(loop) - st.longest.duration_us);
    uint64_t longest = st.longest.duration_us;

    /* A quick turn: counted in a low bucket, not slow, the longest stays. */
    r.spend = 0;
    assert_int_equal(write(sv[1], "y", 1), 1);
    assert_int_equal(tr_loop_run_once(loop, 100), 0);
    tr_loop_stats_get(loop, &st);
    assert_int_equal(st.turns, 2);
    assert_int_equal(buckets_from(st.turn_bucket, bucket_index(1000) + 1), 1);
    assert_int_equal(st.slow_turns, 1);
    assert_int_equal(st.longest.duration_us, longest);

    /* A longer one replaces it. */
    r.spend = longest + 2000;
    assert_int_equal(write(sv[1], "z", 1), 1);
    assert_int_equal(tr_loop_run_once(loop, 100), 0);
    tr_loop_stats_get(loop, &st);
    assert_int_equal(st.slow_turns, 2);
    assert_true(st.longest.duration_us >= longest + 2000);
    assert_int_equal(st.slow_calls[TR_LOOP_PHASE_IO], 2);

    tr_loop_del(loop, &r.io);
    close(sv[0]);
    close(sv[1]);
    tr_loop_free(loop);
}

static void on_slow_timer(struct tr_timer *t)
{
    spend_us(2000);
}

static void test_turn_stats_timer_phase(void **state)
{
    struct tr_loop *loop = tr_loop_new();
    struct tr_timer t;
    tr_timer_init(&t, on_slow_timer);
    tr_timer_set(loop, &t, 1);
    for (int i = 0; i < 100 && tr_timer_armed(&t); i++)
        assert_int_equal(tr_loop_run_once(loop, 50), 0);
    assert_false(tr_timer_armed(&t));
    struct tr_loop_stats st;
    tr_loop_stats_get(loop, &st);
    assert_int_equal(st.slow_turns, 1);
    assert_int_equal(st.longest.calls[TR_LOOP_PHASE_TIMERS], 1);
    assert_int_equal(st.longest.calls[TR_LOOP_PHASE_IO], 0);
    assert_true(st.longest.phase_us[TR_LOOP_PHASE_TIMERS] >= 2000);
    assert_int_equal(st.slow_calls[TR_LOOP_PHASE_TIMERS], 1);
    tr_loop_free(loop);
}

static void test_wakeup_delay_measured_from_end_of_turn(void **state)
{
    struct tr_loop *loop = tr_loop_new();
    /* An idle wait that ends by its timeout is a timed wake-up. */
    assert_int_equal(tr_loop_run_once(loop, 0), 0); /* ends a turn now */
    assert_int_equal(tr_loop_run_once(loop, 5), 0);
    struct tr_loop_stats st;
    tr_loop_stats_get(loop, &st);
    assert_int_equal(st.wakeups, 1);
    /* A zero timeout (a poll) is no wake-up: nothing was asked to sleep. */
    assert_int_equal(tr_loop_run_once(loop, 0), 0);
    tr_loop_stats_get(loop, &st);
    assert_int_equal(st.wakeups, 1);
    /* The delay counts from the end of the previous turn, where tr_loop_run
     * enters epoll_wait. Here 20 ms pass between the two, standing in for a
     * thread that the kernel does not run: the 5 ms wait is >= 15 ms late. */
    uint64_t sum = st.wakeup_late_sum_us;
    usleep(20000);
    assert_int_equal(tr_loop_run_once(loop, 5), 0);
    tr_loop_stats_get(loop, &st);
    assert_int_equal(st.wakeups, 2);
    assert_true(st.wakeup_late_sum_us - sum >= 15000);
    assert_int_equal(buckets_from(st.wakeup_bucket, bucket_index(10000) + 1), 1);
    /* Wake-ups are not turns of work: the turns stay short. */
    assert_int_equal(st.slow_turns, 0);
    tr_loop_free(loop);
}

struct stop_rec {
    struct tr_timer t;
    struct tr_loop *loop;
};

static void on_stop(struct tr_timer *t)
{
    struct stop_rec *r = tr_container_of(t, struct stop_rec, t);
    tr_loop_stop(r->loop);
}

static void test_stats_all_lists_live_loops_with_their_thread(void **state)
{
    size_t n = 99;
    struct tr_loop_stats *all = NULL;
    assert_true(tr_loop_stats_all(&all, &n));
    assert_null(all); /* every other test freed its loop */
    assert_int_equal(n, 0);

    struct tr_loop *a = tr_loop_new(), *b = tr_loop_new();
    struct stop_rec r = {.loop = a};
    tr_timer_init(&r.t, on_stop);
    tr_timer_set(a, &r.t, 1);
    assert_int_equal(tr_loop_run(a), 0);
    assert_true(tr_loop_stats_all(&all, &n));
    assert_non_null(all);
    assert_int_equal(n, 2);
    /* Only the loop run by tr_loop_run() knows its thread. */
    int with_tid = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].tid != 0) {
            assert_int_equal(all[i].tid, (int)gettid());
            assert_true(all[i].turns >= 1);
            with_tid++;
        }
    assert_int_equal(with_tid, 1);
    free(all);

    tr_loop_free(a);
    assert_true(tr_loop_stats_all(&all, &n));
    assert_int_equal(n, 1);
    assert_int_equal(all[0].tid, 0);
    free(all);
    tr_loop_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_many_timers_heap_stays_ordered),
        cmocka_unit_test(test_edge_triggered_io),
        cmocka_unit_test(test_deferred_runs_once),
        cmocka_unit_test(test_deferred_latest_callback_wins),
        cmocka_unit_test(test_deferred_cancel),
        cmocka_unit_test(test_clock_is_cached_per_iteration),
        cmocka_unit_test(test_turn_stats_record_slow_turn_and_what_ran),
        cmocka_unit_test(test_turn_stats_timer_phase),
        cmocka_unit_test(test_wakeup_delay_measured_from_end_of_turn),
        cmocka_unit_test(test_stats_all_lists_live_loops_with_their_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
