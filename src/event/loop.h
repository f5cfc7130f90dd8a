/* event/loop.h: one epoll loop per thread, with timers and deferred calls.
 *
 * Sockets are registered once, edge-triggered, for both directions: a
 * connection never calls epoll_ctl while it runs, and owners track readiness
 * themselves (a short read or write means "not ready until the next edge").
 * The clock is read once per iteration; tr_loop_now_*() return that value.
 * A loop and everything registered on it belong to one thread.
 */
#ifndef TR_EVENT_LOOP_H
#define TR_EVENT_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

struct tr_loop;
struct tr_io;

/* events: EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR as returned by epoll. */
typedef void (*tr_io_cb)(struct tr_io *io, uint32_t events);

/* Embedded in its owner; the owner finds itself with tr_container_of. */
struct tr_io {
    int fd;
    tr_io_cb cb;
};

struct tr_timer;
typedef void (*tr_timer_cb)(struct tr_timer *t);

struct tr_timer {
    uint64_t deadline_ms; /* absolute, loop clock */
    uint32_t heap_idx;    /* 0 = not armed; else 1-based position in the heap */
    tr_timer_cb cb;
};

struct tr_deferred;
typedef void (*tr_deferred_cb)(struct tr_deferred *d);

/* A call to run once after the current batch of events (e.g. freeing a
 * connection that callbacks later in the batch may still reference). */
struct tr_deferred {
    struct tr_deferred *next;
    tr_deferred_cb cb;
    bool queued;
};

#define tr_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct tr_loop *tr_loop_new(void);
void tr_loop_free(struct tr_loop *loop);

/* Register fd for events (EPOLLET is added). Returns 0 or -errno. */
int tr_loop_add(struct tr_loop *loop, struct tr_io *io, uint32_t events);
int tr_loop_mod(struct tr_loop *loop, struct tr_io *io, uint32_t events);
void tr_loop_del(struct tr_loop *loop, struct tr_io *io);

void tr_timer_init(struct tr_timer *t, tr_timer_cb cb);
/* Arm (or re-arm) t to fire after ms milliseconds from the loop clock. */
void tr_timer_set(struct tr_loop *loop, struct tr_timer *t, uint64_t ms);
void tr_timer_cancel(struct tr_loop *loop, struct tr_timer *t);
static inline bool tr_timer_armed(const struct tr_timer *t)
{
    return t->heap_idx != 0;
}

void tr_loop_defer(struct tr_loop *loop, struct tr_deferred *d, tr_deferred_cb cb);

/* Run until tr_loop_stop(). Returns 0, or -errno if epoll fails. */
int tr_loop_run(struct tr_loop *loop);
void tr_loop_stop(struct tr_loop *loop);
/* One iteration waiting at most timeout_ms (-1: until an event or timer). */
int tr_loop_run_once(struct tr_loop *loop, int timeout_ms);

uint64_t tr_loop_now_ms(const struct tr_loop *loop);
uint64_t tr_loop_now_us(const struct tr_loop *loop);
/* Re-read the clock (after blocking work outside the loop). */
void tr_loop_update_time(struct tr_loop *loop);
/* Number of armed timers (tests, stats). */
size_t tr_loop_timer_count(const struct tr_loop *loop);

#endif
