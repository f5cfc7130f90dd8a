/* upstream/h1_client.h: the upstream side of one HTTP/1.1 request, for both
 * callers: the HTTP/1.1 byte path (proxy/http_session.c) and the streams
 * whose upstream speaks HTTP/1.1 (proxy/stream.c).
 *
 * It owns the connection side of the exchange: picking the endpoint
 * (upstream/attempt.h), acquiring a pooled or new connection
 * (upstream/pool.h), going to another endpoint when the connection fails
 * before any byte was sent, the keep-alive race (a request sent on a pooled
 * connection the server had already closed is re-sent once on a fresh one),
 * the endpoint's outstanding-request count (least_request), and the release
 * to the pool. It moves the bytes of the exchange the same way for both:
 * writing request bytes (tr_h1c_write), reading response bytes
 * (tr_h1c_read), finding the response head (tr_h1c_head_end, a head may
 * outgrow a pool buffer up to the limit) and parsing it (codec/h1) with what
 * it says about the connection (Connection: close, Keep-Alive: timeout) and
 * the body's framing, kept in resp (upstream/h1_body.h: length, chunked,
 * until close; end of message). What fails maps to one reply (tr_h1c_reply).
 *
 * The buffers are the caller's, and so is what the bytes become: the byte
 * path writes the rewritten head text and relays bodies verbatim from its
 * buffers (tr_h1_body_sendable/sent), streams write a head built from header
 * lists and frame DATA (tr_h1_body_put), and decode the response body into
 * DATA (tr_h1_body_decode). Whether a failed try goes again is the route's
 * retry policy (upstream/retry.h), asked by the callers; this client starts
 * each try (tr_h1c_start, tr_h1c_retry).
 *
 * Embedded in its owner; no allocation of its own but the response body's
 * trailer section while it arrives (h1_body.h). One worker thread.
 */
#ifndef TR_UPSTREAM_H1_CLIENT_H
#define TR_UPSTREAM_H1_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec/h1/h1.h"
#include "core/buf.h"
#include "upstream/h1_body.h"

struct tr_worker;
struct tr_cluster_rt;
struct tr_endpoint_rt;
struct tr_pick_avoid;
struct tr_upstream;
struct tr_upstream_owner_ops;

struct tr_h1_client {
    struct tr_upstream *up;    /* the connection, NULL when none */
    struct tr_endpoint_rt *ep; /* endpoint of the current attempt (counted in active_requests) */
    struct tr_worker *w;
    struct tr_cluster_rt *cluster;
    const struct tr_upstream_owner_ops *ops; /* the owner's callbacks (upstream/pool.h) */
    void *owner;
    const char *addr;                   /* address text of the last endpoint tried, for logs */
    const struct tr_endpoint_rt *tried; /* the endpoint of the last try (a retry avoids it) */
    uint64_t lb_hash;                   /* the request's consistent-hash key (upstream/attempt.h) */
    const struct sockaddr_storage *orig; /* the downstream's original destination, or NULL */
    uint8_t attempts;                    /* endpoints tried (upstream/attempt.h) */
    bool fresh;                          /* new connections only (tunnels) */
    bool reused;                         /* the connection came from the idle pool */
    bool resent;                         /* the keep-alive race re-send happened */
    bool conn_close;                     /* the server said Connection: close */
    bool got_byte;                /* a response byte arrived: the request cannot be re-sent */
    bool head_done;               /* the final response head was parsed */
    size_t head_scanned;          /* tr_h1_head_end's state for the head being read */
    struct tr_h1_body_state resp; /* the response body, set by tr_h1c_parse_response */
};

/* What became of an attempt (the first five) or of the exchange. */
enum tr_h1c_status {
    TR_H1C_READY = 0,      /* a pooled connection: send now (no on_ready follows) */
    TR_H1C_CONNECTING,     /* ops->on_ready follows */
    TR_H1C_NO_HEALTHY,     /* no endpoint is healthy: 503 UH */
    TR_H1C_OVERFLOW,       /* a connection or request limit (pool, circuit_breakers): 503 UO */
    TR_H1C_FAILED,         /* could not connect: 503 UF */
    TR_H1C_CLOSED,         /* the connection closed or failed mid-exchange: UC */
    TR_H1C_BAD_HEAD,       /* an invalid response head: 502 UPE */
    TR_H1C_HEAD_TOO_LARGE, /* a response head over the limits: 502 UPE */
    TR_H1C_BAD_BODY,       /* invalid response body framing: UPE */
};

/* The local reply for an exchange that ended before any response byte went
 * downstream (after that, callers close or reset and keep only the flag).
 * reason, when set, is the reset reason of the Envoy-style body the caller
 * formats (proxy/decide.h tr_upstream_error_body); else body is the body. */
struct tr_h1c_reply {
    uint16_t status;
    uint16_t flag; /* TR_RF_* */
    const char *body;
    const char *reason;
};

/* The reply for a status other than READY and CONNECTING. connect_reason
 * names a connect failure (FAILED), as the pool reported it. */
struct tr_h1c_reply tr_h1c_reply(enum tr_h1c_status st, const char *connect_reason);

/* Start the request's first attempt; fresh: on a new connection, never a
 * pooled one (CONNECT tunnels); lb_hash: the request's consistent-hash key
 * (proxy/decide.h); orig: the downstream connection's original destination
 * (NULL: not captured; it must outlive the exchange), for an
 * original_destination cluster. Sets every field (a previous request's
 * state is forgotten; its connection must have been released). */
enum tr_h1c_status tr_h1c_start(struct tr_h1_client *c, struct tr_worker *w,
                                struct tr_cluster_rt *cluster,
                                const struct tr_upstream_owner_ops *ops, void *owner, bool fresh,
                                uint64_t lb_hash, const struct sockaddr_storage *orig);

/* ops->on_ready reported a failed connection (the pool closed it): nothing
 * was sent on it. The caller asks its retry policy (upstream/retry.h)
 * whether to try again (tr_h1c_retry) or answer 503 UF. */
void tr_h1c_connect_failed(struct tr_h1_client *c);

/* Another try of the request (upstream/retry.h), after the previous one's
 * connection was released or failed: to an endpoint avoid leaves out of the
 * pick when one qualifies (tr_attempt_retry), else to any healthy one; a
 * pooled connection when there is one. Returns that try's status, as tr_h1c_start. */
enum tr_h1c_status tr_h1c_retry(struct tr_h1_client *c, const struct tr_pick_avoid *avoid);

/* The connection failed after the request was written: may the request go
 * again? Only if the connection came from the pool (the keep-alive race: the
 * server closed it unread), no response byte came and it was not re-sent
 * yet; the caller must also still hold the whole request. */
bool tr_h1c_may_resend(const struct tr_h1_client *c);
/* Release the connection and start again on a fresh one (the caller checked
 * tr_h1c_may_resend), returning that attempt's status. */
enum tr_h1c_status tr_h1c_resend(struct tr_h1_client *c);

/* Write p[*sent, len) to the connection, advancing *sent. Returns 1 when all
 * of it is out, 0 when the connection takes no more now (a write event
 * follows), -1 when it failed (TR_H1C_CLOSED). */
int tr_h1c_write(struct tr_h1_client *c, const char *p, uint32_t len, uint32_t *sent);

/* Read response bytes into *in (a pool buffer is taken when NULL, compacted
 * when full). Returns the bytes read (> 0); 0 when none can be read now (not
 * readable, or no room); TR_H1C_READ_END when the connection's end is the
 * end of an until-close body (resp.done is then true); TR_H1C_READ_FAILED
 * when it closed or failed before the response was complete (TR_H1C_CLOSED). */
#define TR_H1C_READ_END    (-1)
#define TR_H1C_READ_FAILED (-2)
ssize_t tr_h1c_read(struct tr_h1_client *c, struct tr_buf **in);

/* The response head at the front of *in: its length once complete (> 0),
 * 0 while more bytes are needed (a head that fills a pool buffer moves to
 * one that holds limits.max_header_bytes), or minus the status that ends
 * the exchange: TR_H1C_HEAD_TOO_LARGE (over the limits, or no memory for a
 * buffer that large), TR_H1C_BAD_HEAD (malformed already while scanning). */
int tr_h1c_head_end(struct tr_h1_client *c, struct tr_buf **in, const struct tr_h1_limits *lim);

/* Parse the response head p[0, head_len) (as tr_h1c_head_end delimited it)
 * into *m (m->headers is the caller's array), note what it says about the
 * connection (Connection: close, Keep-Alive: timeout) and, for a final
 * response (not a 1xx other than 101), set head_done and the body (resp;
 * done at once when there is none: HEAD, 204, 304, a length of 0).
 * The status, or an invalid head, goes to outlier detection
 * (cluster/cluster.h). Returns 0, or a TR_H1_E_* (< 0): an invalid response
 * (TR_H1C_BAD_HEAD). */
int tr_h1c_parse_response(struct tr_h1_client *c, const char *p, uint32_t head_len,
                          const struct tr_h1_limits *lim, enum tr_h1_method method,
                          struct tr_h1_message *m);

/* The exchange is over: the connection goes back to the pool if reusable
 * (and the server did not say close), else is closed; the endpoint's
 * outstanding count drops; what the response body held is dropped.
 * Idempotent. */
void tr_h1c_release(struct tr_h1_client *c, bool reusable);

#endif
