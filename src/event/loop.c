#include "event/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256

const uint32_t tr_loop_bucket_us[TR_LOOP_BUCKETS] = {25,   50,   100,   250,   500,   1000,
                                                     2500, 5000, 10000, 25000, 100000};

typedef _Atomic uint64_t stat_t;

/* The live form of struct tr_loop_stats: written by the loop's thread only
 * (load + store, relaxed: no locked instruction), read by any thread. */
struct loop_stats {
    _Atomic int tid;
    stat_t turn_bucket[TR_LOOP_BUCKETS + 1];
    stat_t turn_sum_us;
    stat_t wakeup_bucket[TR_LOOP_BUCKETS + 1];
    stat_t wakeup_late_sum_us;
    stat_t slow_turns;
    stat_t slow_phase_us[TR_LOOP_PHASE_COUNT];
    stat_t slow_calls[TR_LOOP_PHASE_COUNT];
    /* The longest turn, under a sequence lock: odd while being written. */
    _Atomic unsigned longest_seq;
    stat_t longest_start_us, longest_duration_us;
    stat_t longest_phase_us[TR_LOOP_PHASE_COUNT];
    stat_t longest_calls[TR_LOOP_PHASE_COUNT];
    uint64_t longest_us; /* writer's own copy of longest_duration_us */
};

struct tr_loop {
    int epfd;
    bool stopped;
    uint64_t now_us;
    uint64_t turn_end_us; /* end of the previous turn: when epoll_wait was entered */
    struct loop_stats stats;
    struct tr_loop *next_live, *prev_live; /* registry of live loops */
    /* Timers: binary min-heap on deadline, 1-based (heap[0] unused). */
    struct tr_timer **heap;
    size_t heap_len;
    size_t heap_cap;
    struct tr_deferred *deferred_head; /* queued for the next run */
    struct tr_deferred **deferred_tail;
    struct tr_deferred *running; /* what is left of the run in progress */
};

static uint64_t clock_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Every live loop, for tr_loop_stats_all(). Taken when a loop is created or
 * freed and when statistics are read; never on a loop's own path. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tr_loop *live_head;
static size_t live_count;

static void live_add(struct tr_loop *loop)
{
    pthread_mutex_lock(&live_lock);
    loop->prev_live = NULL;
    loop->next_live = live_head;
    if (live_head != NULL)
        live_head->prev_live = loop;
    live_head = loop;
    live_count++;
    pthread_mutex_unlock(&live_lock);
}

static void live_remove(struct tr_loop *loop)
{
    pthread_mutex_lock(&live_lock);
    if (loop->prev_live != NULL)
        loop->prev_live->next_live = loop->next_live;
    else
        live_head = loop->next_live;
    if (loop->next_live != NULL)
        loop->next_live->prev_live = loop->prev_live;
    live_count--;
    pthread_mutex_unlock(&live_lock);
}

struct tr_loop *tr_loop_new(void)
{
    struct tr_loop *loop = calloc(1, sizeof(*loop));
    if (loop == NULL)
        return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        free(loop);
        return NULL;
    }
    loop->heap_cap = 64;
    loop->heap = calloc(loop->heap_cap + 1, sizeof(*loop->heap));
    if (loop->heap == NULL) {
        close(loop->epfd);
        free(loop);
        return NULL;
    }
    loop->deferred_tail = &loop->deferred_head;
    loop->now_us = clock_now_us();
    loop->turn_end_us = loop->now_us;
    live_add(loop);
    return loop;
}

void tr_loop_free(struct tr_loop *loop)
{
    if (loop == NULL)
        return;
    live_remove(loop);
    close(loop->epfd);
    free(loop->heap);
    free(loop);
}

int tr_loop_add(struct tr_loop *loop, struct tr_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) == 0 ? 0 : -errno;
}

int tr_loop_mod(struct tr_loop *loop, struct tr_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) == 0 ? 0 : -errno;
}

void tr_loop_del(struct tr_loop *loop, struct tr_io *io)
{
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

/* ---- timers ---- */

static void heap_place(struct tr_loop *loop, size_t i, struct tr_timer *t)
{
    loop->heap[i] = t;
    t->heap_idx = (uint32_t)i;
}

static void heap_up(struct tr_loop *loop, size_t i)
{
    struct tr_timer *t = loop->heap[i];
    while (i > 1) {
        struct tr_timer *parent = loop->heap[i / 2];
        if (parent->deadline_ms <= t->deadline_ms)
            break;
        heap_place(loop, i, parent);
        i /= 2;
    }
    heap_place(loop, i, t);
}

static void heap_down(struct tr_loop *loop, size_t i)
{
    struct tr_timer *t = loop->heap[i];
    for (;;) {
        size_t c = i * 2;
        if (c > loop->heap_len)
            break;
        if (c + 1 <= loop->heap_len && loop->heap[c + 1]->deadline_ms < loop->heap[c]->deadline_ms)
            c++;
        if (loop->heap[c]->deadline_ms >= t->deadline_ms)
            break;
        heap_place(loop, i, loop->heap[c]);
        i = c;
    }
    heap_place(loop, i, t);
}

void tr_timer_init(struct tr_timer *t, tr_timer_cb cb)
{
    t->deadline_ms = 0;
    t->heap_idx = 0;
    t->cb = cb;
}

void tr_timer_cancel(struct tr_loop *loop, struct tr_timer *t)
{
    size_t i = t->heap_idx;
    if (i == 0)
        return;
    t->heap_idx = 0;
    struct tr_timer *last = loop->heap[loop->heap_len--];
    if (i <= loop->heap_len) {
        heap_place(loop, i, last);
        heap_up(loop, i);
        heap_down(loop, last->heap_idx);
    }
}

void tr_timer_set(struct tr_loop *loop, struct tr_timer *t, uint64_t ms)
{
    uint64_t deadline = loop->now_us / 1000u + ms;
    if (t->heap_idx != 0) {
        uint64_t old = t->deadline_ms;
        t->deadline_ms = deadline;
        if (deadline < old)
            heap_up(loop, t->heap_idx);
        else if (deadline > old)
            heap_down(loop, t->heap_idx);
        return;
    }
    if (loop->heap_len == loop->heap_cap) {
        size_t cap = loop->heap_cap * 2;
        struct tr_timer **h = realloc(loop->heap, (cap + 1) * sizeof(*h));
        if (h == NULL)
            abort(); /* timers guard every connection: running without one is worse */
        loop->heap = h;
        loop->heap_cap = cap;
    }
    t->deadline_ms = deadline;
    loop->heap_len++;
    heap_place(loop, loop->heap_len, t);
    heap_up(loop, loop->heap_len);
}

size_t tr_loop_timer_count(const struct tr_loop *loop)
{
    return loop->heap_len;
}

/* Returns the number of timers that fired. */
static unsigned run_timers(struct tr_loop *loop)
{
    uint64_t now_ms = loop->now_us / 1000u;
    unsigned fired = 0;
    while (loop->heap_len > 0 && loop->heap[1]->deadline_ms <= now_ms) {
        struct tr_timer *t = loop->heap[1];
        tr_timer_cancel(loop, t);
        t->cb(t);
        fired++;
    }
    return fired;
}

/* ---- deferred calls ---- */

void tr_loop_defer(struct tr_loop *loop, struct tr_deferred *d, tr_deferred_cb cb)
{
    /* Queued already: it runs once, with the latest callback (an object
     * whose role changed, as a session from handshake to HTTP, wants the
     * new role's call, not the old one's). */
    d->cb = cb;
    if (d->queued)
        return;
    d->queued = true;
    d->next = NULL;
    d->pprev = loop->deferred_tail;
    *loop->deferred_tail = d;
    loop->deferred_tail = &d->next;
}

void tr_loop_cancel(struct tr_loop *loop, struct tr_deferred *d)
{
    if (!d->queued)
        return;
    *d->pprev = d->next;
    if (d->next != NULL)
        d->next->pprev = d->pprev;
    else if (loop->deferred_tail == &d->next)
        loop->deferred_tail = d->pprev;
    d->next = NULL;
    d->pprev = NULL;
    d->queued = false;
}

/* Runs the calls queued so far; calls queued while running wait for the
 * next turn, so a callback that re-queues itself cannot starve the loop.
 * The run takes its calls one at a time from the head of loop->running, so
 * a callback may cancel any call still waiting in it (see tr_loop_cancel).
 * Returns the number of calls run. */
static unsigned run_deferred(struct tr_loop *loop)
{
    loop->running = loop->deferred_head;
    if (loop->running != NULL)
        loop->running->pprev = &loop->running;
    loop->deferred_head = NULL;
    loop->deferred_tail = &loop->deferred_head;
    unsigned ran = 0;
    struct tr_deferred *d;
    while ((d = loop->running) != NULL) {
        loop->running = d->next;
        if (d->next != NULL)
            d->next->pprev = &loop->running;
        d->next = NULL;
        d->pprev = NULL;
        d->queued = false;
        d->cb(d);
        ran++;
    }
    return ran;
}

/* ---- loop-turn statistics ---- */

static inline void stat_add(stat_t *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

static inline uint64_t stat_get(const stat_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static unsigned bucket_of(uint64_t us)
{
    unsigned i = 0;
    while (i < TR_LOOP_BUCKETS && us > tr_loop_bucket_us[i])
        i++;
    return i;
}

/* What one turn did so far; phase_done() closes a phase that ran calls. */
struct turn {
    uint64_t start_us, mark_us;
    uint64_t phase_us[TR_LOOP_PHASE_COUNT];
    uint64_t calls[TR_LOOP_PHASE_COUNT];
};

static void phase_done(struct turn *t, enum tr_loop_phase phase, unsigned calls)
{
    if (calls == 0)
        return; /* nothing ran: no clock read */
    uint64_t now = clock_now_us();
    t->phase_us[phase] += now - t->mark_us;
    t->calls[phase] += calls;
    t->mark_us = now;
}

static void turn_record(struct tr_loop *loop, const struct turn *t)
{
    struct loop_stats *s = &loop->stats;
    uint64_t us = t->mark_us - t->start_us;
    loop->turn_end_us = t->mark_us;
    stat_add(&s->turn_bucket[bucket_of(us)], 1);
    stat_add(&s->turn_sum_us, us);
    if (us >= TR_LOOP_SLOW_TURN_US) {
        stat_add(&s->slow_turns, 1);
        for (int p = 0; p < TR_LOOP_PHASE_COUNT; p++) {
            stat_add(&s->slow_phase_us[p], t->phase_us[p]);
            stat_add(&s->slow_calls[p], t->calls[p]);
        }
    }
    if (us <= s->longest_us)
        return; /* the common case: one compare, no store */
    s->longest_us = us;
    unsigned seq = atomic_load_explicit(&s->longest_seq, memory_order_relaxed);
    atomic_store_explicit(&s->longest_seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&s->longest_start_us, t->start_us, memory_order_relaxed);
    atomic_store_explicit(&s->longest_duration_us, us, memory_order_relaxed);
    for (int p = 0; p < TR_LOOP_PHASE_COUNT; p++) {
        atomic_store_explicit(&s->longest_phase_us[p], t->phase_us[p], memory_order_relaxed);
        atomic_store_explicit(&s->longest_calls[p], t->calls[p], memory_order_relaxed);
    }
    atomic_store_explicit(&s->longest_seq, seq + 2, memory_order_release);
}

void tr_loop_stats_get(const struct tr_loop *loop, struct tr_loop_stats *out)
{
    const struct loop_stats *s = &loop->stats;
    memset(out, 0, sizeof(*out));
    out->tid = atomic_load_explicit(&s->tid, memory_order_relaxed);
    for (unsigned b = 0; b <= TR_LOOP_BUCKETS; b++) {
        out->turn_bucket[b] = stat_get(&s->turn_bucket[b]);
        out->turns += out->turn_bucket[b];
        out->wakeup_bucket[b] = stat_get(&s->wakeup_bucket[b]);
        out->wakeups += out->wakeup_bucket[b];
    }
    out->turn_sum_us = stat_get(&s->turn_sum_us);
    out->wakeup_late_sum_us = stat_get(&s->wakeup_late_sum_us);
    out->slow_turns = stat_get(&s->slow_turns);
    for (int p = 0; p < TR_LOOP_PHASE_COUNT; p++) {
        out->slow_phase_us[p] = stat_get(&s->slow_phase_us[p]);
        out->slow_calls[p] = stat_get(&s->slow_calls[p]);
    }
    /* The writer replaces the longest turn rarely (each time a new maximum
     * appears), so a few retries always find a quiet moment. */
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned seq = atomic_load_explicit(&s->longest_seq, memory_order_acquire);
        if (seq & 1u)
            continue;
        out->longest.start_us = stat_get(&s->longest_start_us);
        out->longest.duration_us = stat_get(&s->longest_duration_us);
        for (int p = 0; p < TR_LOOP_PHASE_COUNT; p++) {
            out->longest.phase_us[p] = stat_get(&s->longest_phase_us[p]);
            out->longest.calls[p] = stat_get(&s->longest_calls[p]);
        }
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->longest_seq, memory_order_relaxed) == seq)
            break;
    }
}

bool tr_loop_stats_all(struct tr_loop_stats **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&live_lock);
    bool ok = true;
    if (live_count != 0) {
        *out = malloc(live_count * sizeof(**out));
        ok = *out != NULL;
    }
    for (struct tr_loop *l = live_head; *out != NULL && l != NULL; l = l->next_live)
        tr_loop_stats_get(l, &(*out)[(*n)++]);
    pthread_mutex_unlock(&live_lock);
    return ok;
}

/* ---- running ---- */

uint64_t tr_loop_now_ms(const struct tr_loop *loop)
{
    return loop->now_us / 1000u;
}

uint64_t tr_loop_now_us(const struct tr_loop *loop)
{
    return loop->now_us;
}

void tr_loop_update_time(struct tr_loop *loop)
{
    loop->now_us = clock_now_us();
}

int tr_loop_run_once(struct tr_loop *loop, int timeout_ms)
{
    struct epoll_event events[LOOP_MAX_EVENTS];
    if (loop->deferred_head != NULL)
        timeout_ms = 0;
    if (loop->heap_len > 0) {
        uint64_t now_ms = loop->now_us / 1000u;
        uint64_t dl = loop->heap[1]->deadline_ms;
        int until = dl <= now_ms ? 0 : (int)(dl - now_ms > 60000 ? 60000 : dl - now_ms);
        if (timeout_ms < 0 || until < timeout_ms)
            timeout_ms = until;
    }
    int n = epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS, timeout_ms);
    loop->now_us = clock_now_us();
    if (n < 0) {
        if (errno != EINTR)
            return -errno;
        n = 0;
    } else if (n == 0 && timeout_ms > 0) {
        /* Slept through the whole timeout: anything beyond it (and the
         * kernel's timer slack) is time the thread was runnable but not run. */
        uint64_t due = loop->turn_end_us + (uint64_t)timeout_ms * 1000u;
        uint64_t late = loop->now_us > due ? loop->now_us - due : 0;
        stat_add(&loop->stats.wakeup_bucket[bucket_of(late)], 1);
        stat_add(&loop->stats.wakeup_late_sum_us, late);
    }
    struct turn t = {.start_us = loop->now_us, .mark_us = loop->now_us};
    for (int i = 0; i < n; i++) {
        struct tr_io *io = events[i].data.ptr;
        io->cb(io, events[i].events);
    }
    phase_done(&t, TR_LOOP_PHASE_IO, (unsigned)n);
    phase_done(&t, TR_LOOP_PHASE_DEFERRED, run_deferred(loop));
    phase_done(&t, TR_LOOP_PHASE_TIMERS, run_timers(loop));
    phase_done(&t, TR_LOOP_PHASE_DEFERRED, run_deferred(loop));
    turn_record(loop, &t);
    return 0;
}

int tr_loop_run(struct tr_loop *loop)
{
    atomic_store_explicit(&loop->stats.tid, (int)gettid(), memory_order_relaxed);
    loop->turn_end_us = clock_now_us();
    loop->stopped = false;
    while (!loop->stopped) {
        int rc = tr_loop_run_once(loop, -1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void tr_loop_stop(struct tr_loop *loop)
{
    loop->stopped = true;
}
