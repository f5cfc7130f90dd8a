/* upstream/pool.h: upstream connections and their per-endpoint pools.
 *
 * A tr_upstream is one connection to one endpoint, plaintext or mTLS. While a
 * request uses it, its events go to the owner (the proxy session); while idle
 * it sits in its endpoint's pool with an idle timer kept below the
 * upstream's own keep-alive timeout, and any event on it (the server closing,
 * or stray bytes) closes it at once, so a request is rarely sent on a dead
 * connection. When that race still happens, the session re-sends on a fresh
 * connection (see proxy/http_session.c).
 *
 * All of it belongs to one worker thread.
 */
#ifndef TR_UPSTREAM_POOL_H
#define TR_UPSTREAM_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "event/loop.h"
#include "transport/transport.h"

struct tr_endpoint_rt;
struct tr_worker;
struct tr_upstream;

enum tr_upstream_state {
    TR_UP_CONNECTING = 0,
    TR_UP_HANDSHAKING,
    TR_UP_IDLE,
    TR_UP_BUSY,
    TR_UP_CLOSED,
};
const char *tr_upstream_state_name(enum tr_upstream_state s);

/* Owner callbacks. on_ready: connection established (err == 0) or failed
 * (err < 0, reason is a constant string: "connect_timeout", "connect_refused",
 * or a TLS failure reason). on_io: readiness on a busy connection. */
struct tr_upstream_owner_ops {
    void (*on_ready)(void *owner, struct tr_upstream *up, int err, const char *reason);
    void (*on_io)(void *owner, struct tr_upstream *up);
};

struct tr_upstream {
    struct tr_conn conn;
    enum tr_upstream_state state;
    struct tr_endpoint_rt *ep;
    struct tr_worker *w;
    struct tr_upstream *next; /* idle list */
    struct tr_upstream *prev;
    struct tr_timer timer; /* connect/handshake deadline, or idle expiry */
    const struct tr_upstream_owner_ops *ops;
    void *owner;
    uint32_t requests;       /* requests carried so far (HTTP/1.1) */
    bool pending;            /* counted in its cluster's pending requests (being established) */
    uint32_t server_idle_ms; /* the server's advertised keep-alive timeout, 0: unknown */
    const char *peer_id;     /* verified server SPIFFE ID (interned), NULL if plaintext */
    uint64_t born_ms;        /* loop clock at connect (pool.max_connection_duration) */
    struct tr_deferred free_later;
    struct tr_deferred handshake_later; /* a step waiting for the next turn (worker.h) */
};

/* Get a connection to ep for owner. If an idle one exists it is returned with
 * *ready = true (no callback follows). Otherwise a new connection starts and
 * ops->on_ready will be called; *ready = false. Returns NULL (and sets
 * *reason) if no connection can be started: "overflow" (pool.max_connections
 * or the cluster's circuit breakers, counted by limit), or a socket error.
 * h2: the connection will carry HTTP/2 (offers ALPN "h2" over TLS, and never
 * comes from or goes back to the idle pool: see upstream/h2_upconn.h). */
struct tr_upstream *tr_pool_acquire(struct tr_worker *w, struct tr_endpoint_rt *ep,
                                    const struct tr_upstream_owner_ops *ops, void *owner,
                                    bool fresh, bool h2, bool *ready, const char **reason);

/* Is up past its cluster's pool.max_connection_duration (no new request
 * may use it)? */
bool tr_upstream_expired(const struct tr_upstream *up, uint64_t now_ms);

/* Give a busy connection back: to the idle pool if reusable, else closed. */
void tr_pool_release(struct tr_upstream *up, bool reusable);

/* Close every idle connection of ep (snapshot retirement, drain). */
void tr_pool_close_idle(struct tr_endpoint_rt *ep);

#endif
