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
 * connection that callbacks later in the batch may still reference).
 * Linked both ways so that tr_loop_cancel unlinks in O(1): an object freed
 * while another of its calls is queued must cancel that call first, or the
 * queue would run (and link through) freed memory. */
struct tr_deferred {
    struct tr_deferred *next;
    struct tr_deferred **pprev; /* the link that points at us while queued */
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

/* Queue d to run cb once after this batch; if d is queued already it still
 * runs once, with cb (the latest callback wins). */
void tr_loop_defer(struct tr_loop *loop, struct tr_deferred *d, tr_deferred_cb cb);
/* Unqueue d if it is queued (in this turn's run or the next); a no-op
 * otherwise. Every free_later callback cancels its object's other calls. */
void tr_loop_cancel(struct tr_loop *loop, struct tr_deferred *d);

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

/* ---- loop-turn statistics ----
 *
 * A turn runs from epoll_wait's return to the end of its last deferred call.
 * A long turn delays every connection of the loop, so each loop counts its
 * turns by duration and keeps, for the long ones, what ran in them. A late
 * wake-up (epoll_wait returning well after its timeout, with nothing to do)
 * is the kernel not running the thread: scheduling delay, not our work.
 * Only the loop's thread writes its numbers (relaxed atomics, no locks);
 * any thread may read them with tr_loop_stats_all(). The clock is read once
 * more after each phase of a turn that ran something (the last read ends the
 * turn); an empty wake-up costs no extra read.
 */
enum tr_loop_phase {
    TR_LOOP_PHASE_IO = 0,   /* epoll event callbacks */
    TR_LOOP_PHASE_DEFERRED, /* deferred calls (both runs of a turn) */
    TR_LOOP_PHASE_TIMERS,   /* expired timers */
    TR_LOOP_PHASE_COUNT,
};

/* Upper bounds (microseconds) of the turn and wake-up delay buckets; one
 * more bucket above the last bound. */
#define TR_LOOP_BUCKETS 11
extern const uint32_t tr_loop_bucket_us[TR_LOOP_BUCKETS];
/* A turn at least this long is a "slow turn" (phase totals are kept). */
#define TR_LOOP_SLOW_TURN_US 1000u

struct tr_loop_turn {
    uint64_t start_us;    /* CLOCK_MONOTONIC at the turn's start */
    uint64_t duration_us; /* start to end of the turn */
    uint64_t phase_us[TR_LOOP_PHASE_COUNT];
    uint64_t calls[TR_LOOP_PHASE_COUNT];
};

/* A copy of one loop's statistics. */
struct tr_loop_stats {
    int tid;        /* thread running tr_loop_run(); 0 before it starts */
    uint64_t turns; /* = sum of turn_bucket */
    uint64_t turn_bucket[TR_LOOP_BUCKETS + 1];
    uint64_t turn_sum_us;
    uint64_t wakeups; /* timed wake-ups with no event (= sum of wakeup_bucket) */
    uint64_t wakeup_bucket[TR_LOOP_BUCKETS + 1]; /* by how late they were */
    uint64_t wakeup_late_sum_us;
    uint64_t slow_turns; /* turns >= TR_LOOP_SLOW_TURN_US, and what ran in them: */
    uint64_t slow_phase_us[TR_LOOP_PHASE_COUNT];
    uint64_t slow_calls[TR_LOOP_PHASE_COUNT];
    struct tr_loop_turn longest; /* since the loop was created */
};

void tr_loop_stats_get(const struct tr_loop *loop, struct tr_loop_stats *out);
/* Copies of the statistics of every live loop (any thread may call it):
 * *out is a malloc'd array (caller frees; NULL when there is no loop) of *n
 * entries. Returns false, with *out NULL and *n 0, if memory ran out. */
bool tr_loop_stats_all(struct tr_loop_stats **out, size_t *n);

#endif
