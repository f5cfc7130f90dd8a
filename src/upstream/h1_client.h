/* upstream/h1_client.h: the upstream connection of one HTTP/1.1 request,
 * for both callers: the HTTP/1.1 byte path (proxy/http_session.c) and the
 * streams whose upstream speaks HTTP/1.1 (proxy/stream.c).
 *
 * It owns the connection side of the exchange: picking the endpoint
 * (upstream/attempt.h), acquiring a pooled or new connection
 * (upstream/pool.h), going to another endpoint when the connection fails
 * before any byte was sent, the keep-alive race (a request sent on a pooled
 * connection the server had already closed is re-sent once on a fresh one),
 * the endpoint's outstanding-request count (least_request), parsing the
 * response head (codec/h1) with what it says about the connection
 * (Connection: close, Keep-Alive: timeout) and the body's framing (length,
 * chunked, until close), and the release to the pool. The bytes are the
 * caller's: the byte path forwards text and bodies verbatim from its
 * buffers, streams convert to header lists and body chunks. Retries, mirroring and outlier detection hook in here.
 *
 * Embedded in its owner; no allocation of its own. One worker thread.
 */
#ifndef TR_UPSTREAM_H1_CLIENT_H
#define TR_UPSTREAM_H1_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "codec/h1/h1.h"

struct tr_worker;
struct tr_cluster_rt;
struct tr_endpoint_rt;
struct tr_upstream;
struct tr_upstream_owner_ops;

struct tr_h1_client {
    struct tr_upstream *up;    /* the connection, NULL when none */
    struct tr_endpoint_rt *ep; /* endpoint of the current attempt (counted in active_requests) */
    struct tr_worker *w;
    struct tr_cluster_rt *cluster;
    const struct tr_upstream_owner_ops *ops; /* the owner's callbacks (upstream/pool.h) */
    void *owner;
    const char *addr; /* address text of the last endpoint tried, for logs */
    uint64_t lb_hash; /* the request's consistent-hash key (upstream/attempt.h) */
    uint8_t attempts; /* endpoints tried (upstream/attempt.h) */
    bool fresh;       /* new connections only (tunnels) */
    bool reused;      /* the connection came from the idle pool */
    bool resent;      /* the keep-alive race re-send happened */
    bool conn_close;  /* the server said Connection: close */
    /* The response body's framing, set by tr_h1c_parse_response. */
    uint8_t body;                 /* enum tr_h1_body */
    uint64_t remaining;           /* TR_H1_BODY_LENGTH: bytes left */
    struct tr_h1_chunked chunked; /* TR_H1_BODY_CHUNKED: where the framing is */
};

enum tr_h1c_status {
    TR_H1C_READY = 0,  /* a pooled connection: send now (no on_ready follows) */
    TR_H1C_CONNECTING, /* ops->on_ready follows */
    TR_H1C_NO_HEALTHY, /* no endpoint is healthy: 503 UH */
    TR_H1C_OVERFLOW,   /* a connection or request limit (pool, circuit_breakers): 503 UO */
    TR_H1C_FAILED,     /* could not connect: 503 UF */
};

/* Start the request's first attempt; fresh: on a new connection, never a
 * pooled one (CONNECT tunnels); lb_hash: the request's consistent-hash key
 * (proxy/decide.h). Sets every field (a previous request's state is
 * forgotten; its connection must have been released). */
enum tr_h1c_status tr_h1c_start(struct tr_h1_client *c, struct tr_worker *w,
                                struct tr_cluster_rt *cluster,
                                const struct tr_upstream_owner_ops *ops, void *owner, bool fresh,
                                uint64_t lb_hash);

/* ops->on_ready reported a failed connection (the pool closed it). Nothing
 * was sent on it, so the request goes to another endpoint when the attempt
 * policy allows: READY or CONNECTING; else FAILED (503 UF). */
enum tr_h1c_status tr_h1c_connect_failed(struct tr_h1_client *c);

/* The connection failed after the request was written, before any response
 * byte. If it came from the pool (the keep-alive race: the server closed it
 * unread), the caller still holds the whole request (held) and it was not
 * re-sent yet: release it and start again on a fresh connection, returning
 * that attempt's status. Otherwise nothing changes and FAILED is returned. */
enum tr_h1c_status tr_h1c_resend(struct tr_h1_client *c, bool held);

/* Parse the response head p[0, head_len) (as tr_h1_head_end delimited it)
 * into *m (m->headers is the caller's array), note what it says about the
 * connection (Connection: close, Keep-Alive: timeout) and, for a final
 * response (not a 1xx other than 101), set up the body framing: body,
 * remaining, chunked; its status, or an invalid head, goes to outlier
 * detection (cluster/cluster.h). Returns 0, or a TR_H1_E_* (< 0): an
 * invalid response. */
int tr_h1c_parse_response(struct tr_h1_client *c, const char *p, uint32_t head_len,
                          const struct tr_h1_limits *lim, enum tr_h1_method method,
                          struct tr_h1_message *m);

/* The exchange is over: the connection goes back to the pool if reusable
 * (and the server did not say close), else is closed; the endpoint's
 * outstanding count drops. Idempotent. */
void tr_h1c_release(struct tr_h1_client *c, bool reusable);

#endif
