#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_many_timers_heap_stays_ordered),
        cmocka_unit_test(test_edge_triggered_io),
        cmocka_unit_test(test_deferred_runs_once),
        cmocka_unit_test(test_clock_is_cached_per_iteration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
