/* upstream/h2_upconn.h: multiplexed HTTP/2 connections to one endpoint.
 *
 * Requests to an HTTP/2 cluster travel as streams of a few long-lived
 * connections per (worker, endpoint) instead of one pooled connection each:
 * one TLS handshake, one connection and one set of buffers carry up to
 * cluster.http2.max_streams_per_connection requests at once. A request picks
 * the first connection with a free stream slot; when all are full another
 * opens, up to cluster.pool.max_connections (0: no limit), after which the
 * request fails with "overflow".
 *
 * A stream is named by (connection, slot). The owner (proxy/stream.c) gets
 * events through tr_h2_up_ops until on_close, or until it resets the stream
 * itself; either way the slot is free afterwards. A request that the server
 * refused without processing it (REFUSED_STREAM, or beyond the last stream
 * id of its GOAWAY), or that never left because the connection failed, is
 * reported with refused = true: the owner may send it again.
 *
 * Frames queued by any stream are written once per event batch (a deferred
 * flush), so requests that arrive together share one write and one TLS
 * record. All of it belongs to one worker thread.
 */
#ifndef TR_UPSTREAM_H2_UPCONN_H
#define TR_UPSTREAM_H2_UPCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec/h2/h2.h"

struct tr_worker;
struct tr_endpoint_rt;
struct tr_h2_upconn;
struct tr_fields;

struct tr_h2_up_ops {
    /* Response headers (1xx included), or trailers. */
    void (*on_headers)(void *owner, const struct tr_h2_header *h, size_t n, bool is_trailers,
                       bool end_stream);
    /* Body bytes: valid during the call only. Acknowledge with
     * tr_h2_up_consume once they left the proxy. */
    void (*on_data)(void *owner, const uint8_t *data, size_t len, bool end_stream);
    /* The stream ended (error_code 0 after a complete exchange) or failed.
     * reason: NULL, or a constant for logs ("connect_refused",
     * "connection_termination", ...). After this the handle is dead. */
    void (*on_close)(void *owner, uint32_t error_code, bool refused, const char *reason);
    /* The request body may be sent again (tr_h2_up_send took less before). */
    void (*on_writable)(void *owner);
    /* The connection is established: peer_id is the server's verified
     * SPIFFE ID (NULL over plaintext). Optional. */
    void (*on_connected)(void *owner, const char *peer_id);
};

struct tr_h2_up_stream {
    struct tr_h2_upconn *c;
    uint32_t slot;
};

/* Start a request to ep. req (HTTP/2 form, pseudo-headers first) stays the
 * owner's and must live until on_close or tr_h2_up_cancel (it is read when
 * the connection is ready). end_stream: no body follows. fresh: on a new
 * connection. Returns 0 and fills *out, or -1 with *reason set ("overflow",
 * "connect_error", "no_memory"). */
int tr_h2_up_open(struct tr_worker *w, struct tr_endpoint_rt *ep, bool fresh,
                  const struct tr_h2_up_ops *ops, void *owner, const struct tr_fields *req,
                  bool end_stream, struct tr_h2_up_stream *out, const char **reason);

/* True once the request headers went to the codec: body bytes may be sent. */
bool tr_h2_up_ready(struct tr_h2_up_stream s);

/* Request body: returns bytes taken (0: wait for on_writable), or -1 if the
 * stream is gone. end_stream applies only if all of len was taken. */
ssize_t tr_h2_up_send(struct tr_h2_up_stream s, const uint8_t *data, size_t len, bool end_stream);
/* Request trailers (end the request). 0 or -1. */
int tr_h2_up_trailers(struct tr_h2_up_stream s, const struct tr_h2_header *h, size_t n);
/* Response body bytes left the proxy: open the window for more. */
void tr_h2_up_consume(struct tr_h2_up_stream s, size_t len);
/* The owner gives up the stream (client gone, timeout): RST_STREAM CANCEL
 * if it was sent; no callback follows. */
void tr_h2_up_cancel(struct tr_h2_up_stream s);

/* Close every connection of ep that carries no stream (snapshot retirement,
 * drain); busy ones get GOAWAY and close when their streams end. */
void tr_h2_up_close_idle(struct tr_endpoint_rt *ep);
/* Close one connection of ep that carries no stream, if there is one
 * (room under the cluster's circuit_breakers.max_connections). */
bool tr_h2_up_close_one_idle(struct tr_endpoint_rt *ep);

#endif
