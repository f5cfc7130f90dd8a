#include "event/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256

struct tr_loop {
    int epfd;
    bool stopped;
    uint64_t now_us;
    /* Timers: binary min-heap on deadline, 1-based (heap[0] unused). */
    struct tr_timer **heap;
    size_t heap_len;
    size_t heap_cap;
    struct tr_deferred *deferred_head;
    struct tr_deferred **deferred_tail;
};

static uint64_t clock_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
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
    return loop;
}

void tr_loop_free(struct tr_loop *loop)
{
    if (loop == NULL)
        return;
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

static void run_timers(struct tr_loop *loop)
{
    uint64_t now_ms = loop->now_us / 1000u;
    while (loop->heap_len > 0 && loop->heap[1]->deadline_ms <= now_ms) {
        struct tr_timer *t = loop->heap[1];
        tr_timer_cancel(loop, t);
        t->cb(t);
    }
}

/* ---- deferred calls ---- */

void tr_loop_defer(struct tr_loop *loop, struct tr_deferred *d, tr_deferred_cb cb)
{
    if (d->queued)
        return;
    d->queued = true;
    d->cb = cb;
    d->next = NULL;
    *loop->deferred_tail = d;
    loop->deferred_tail = &d->next;
}

/* Runs the calls queued so far; calls queued while running wait for the
 * next turn, so a callback that re-queues itself cannot starve the loop. */
static void run_deferred(struct tr_loop *loop)
{
    struct tr_deferred *d = loop->deferred_head;
    loop->deferred_head = NULL;
    loop->deferred_tail = &loop->deferred_head;
    while (d != NULL) {
        struct tr_deferred *next = d->next;
        d->queued = false;
        d->cb(d);
        d = next;
    }
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
    }
    for (int i = 0; i < n; i++) {
        struct tr_io *io = events[i].data.ptr;
        io->cb(io, events[i].events);
    }
    run_deferred(loop);
    run_timers(loop);
    run_deferred(loop);
    return 0;
}

int tr_loop_run(struct tr_loop *loop)
{
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
