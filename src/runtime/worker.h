/* runtime/worker.h: a worker thread: one event loop, its own SO_REUSEPORT
 * listening sockets, buffer pool, upstream pools and metrics. Nothing here is
 * shared with other workers; the main thread talks to a worker only through
 * its command word and eventfd (reload, drain, stop). */
#ifndef TR_RUNTIME_WORKER_H
#define TR_RUNTIME_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec/h1/h1.h"
#include "core/buf.h"
#include "event/loop.h"
#include "obs/metrics.h"
#include "runtime/snapshot.h"

struct tr_cluster_rt;
struct tr_jwks_fetch;
struct tr_mirror;
struct tr_worker;

/* A worker's use of one snapshot: the snapshot reference plus the runtime
 * clusters built for it. Sessions and upstream connections count as users;
 * a retired wsnap is freed when its last user leaves. Single-threaded. */
struct tr_dns_table;

struct tr_wsnap {
    struct tr_snapshot *snap;
    struct tr_dns_table *dns; /* addresses of endpoint names (dns/answers.h); NULL: none yet */
    struct tr_worker *w;
    struct tr_cluster_rt *clusters;
    struct tr_metric_labels *listener_labels; /* per listener: base metric labels */
    struct tr_jwks_fetch *jwks;               /* keys fetched for jwks_uri rules; NULL: none */
    uint32_t users;
    bool retired;
};

void tr_wsnap_use(struct tr_wsnap *ws);
void tr_wsnap_release(struct tr_wsnap *ws);

struct tr_listener_rt {
    struct tr_io io;
    struct tr_worker *w;
    int cfg_idx; /* index in the current snapshot's listeners */
    struct sockaddr_storage addr;
    struct tr_timer retry; /* accept again after running out of descriptors */
    struct tr_deferred free_later;
};

/* Intrusive list of live downstream connections, for drain and dumps. */
struct tr_session_link {
    struct tr_session_link *prev, *next;
    void (*drain)(struct tr_session_link *l); /* ask it to finish and close */
};

/* TR_WCMD_DNS: a new table of DNS answers was published (dns/answers.h):
 * rebuild the cluster views of the current snapshot with it. */
enum tr_worker_cmd {
    TR_WCMD_NONE = 0,
    TR_WCMD_SNAPSHOT = 1,
    TR_WCMD_DRAIN = 2,
    TR_WCMD_STOP = 4,
    TR_WCMD_DNS = 8,
};

struct tr_worker {
    unsigned index;
    unsigned n_workers; /* how many the server runs: per-proxy limits are shared out */
    char name[16];
    pthread_t thread;
    struct tr_loop *loop;
    struct tr_buf_pool bufs;
    struct tr_metrics *metrics;
    uint64_t rng;
    struct tr_wsnap *ws;               /* current */
    struct tr_listener_rt **listeners; /* each owned; freed after the event batch */
    size_t n_listeners;
    int wake_fd;
    struct tr_io wake_io;
    _Atomic unsigned cmd; /* TR_WCMD_* bits, set by the main thread */
    bool draining;
    struct tr_session_link sessions; /* list head */
    uint32_t n_sessions;
    int access_log_fd; /* -1: off */
    /* Scratch for parsing one message head at a time (the parse, routing and
     * rewrite of a head happen in one callback, so one array serves all). */
    struct tr_h1_header headers[TR_H1_MAX_HEADERS_CAP];
    /* The normalised path of the request being decided (proxy/decide.c):
     * grown to the longest path seen, which the header limits bound. */
    char *path_buf;
    size_t path_cap;
    /* Shadow requests (upstream/mirror.h): how many are alive, and the
     * launched ones, which own themselves. */
    struct tr_mirror *mirrors;
    uint32_t n_mirrors;
    /* TLS handshake steps taken in the current loop turn (handshake budget). */
    uint64_t hs_turn_us;
    uint32_t hs_steps;
    _Atomic bool exited;
    _Atomic uint64_t adopted_generation; /* last snapshot this worker serves new requests with */
};

/* xorshift64*: per-worker, no locks. */
static inline uint32_t tr_worker_rand(struct tr_worker *w)
{
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return (uint32_t)((w->rng * 2685821657736338717ull) >> 32);
}

/* A TLS handshake step costs up to about 0.5 ms of CPU (the server's key
 * exchange and signature). A burst of new connections (a client restarting,
 * a pool warming up) would otherwise put dozens of them in one loop turn and
 * stall every established connection of the worker for that long, so each
 * turn takes at most TR_HANDSHAKES_PER_TURN steps and the rest wait for the
 * next turn, after its ready events. Returns whether a step may run now. */
#define TR_HANDSHAKES_PER_TURN 4
static inline bool tr_worker_handshake_budget(struct tr_worker *w)
{
    uint64_t turn = tr_loop_now_us(w->loop); /* read once per turn */
    if (w->hs_turn_us != turn) {
        w->hs_turn_us = turn;
        w->hs_steps = 0;
    }
    return w->hs_steps++ < TR_HANDSHAKES_PER_TURN;
}

/* Start worker index of n_workers on the currently published snapshot. */
struct tr_worker *tr_worker_start(unsigned index, unsigned n_workers, char **err);
/* Ask it to adopt the newly published snapshot / to drain / to stop. */
void tr_worker_notify(struct tr_worker *w, enum tr_worker_cmd cmd);
void tr_worker_join(struct tr_worker *w);

void tr_worker_session_add(struct tr_worker *w, struct tr_session_link *l);
void tr_worker_session_remove(struct tr_worker *w, struct tr_session_link *l);

#endif
