/* control/link.h: one HTTP/2 connection over TLS on an event loop, for the
 * control-plane protocol (docs/control.md), used by both ends: the control
 * plane (server role, one link per proxy) and the proxy's control client
 * (client role, one link).
 *
 * The link owns the socket, the SSL and the HTTP/2 codec (codec/h2). It
 * drives the TCP connect (client), the TLS handshake and the codec: bytes
 * read go to tr_h2_feed, codec output goes to the socket. The owner sees the
 * codec's events through tr_link_ops, submits requests and responses on
 * tr_link_h2(), and sends bodies with tr_link_send, which queues what the
 * peer's flow-control window does not take yet (bounded by
 * TR_LINK_QUEUE_MAX per link: a peer that stops reading is dropped, not
 * buffered for). Received DATA is acknowledged (WINDOW_UPDATE) as soon as
 * on_data returns: owners copy what they keep, within their own limits.
 *
 * Lifetime: tr_link_close() closes the socket at once, without callbacks,
 * and frees the link after the current loop turn, so an owner may close a
 * link from inside one of its callbacks. A link that
 * fails (connect, handshake, I/O, protocol) calls on_closed once, from a
 * deferred call, and is freed after it returns. Callbacks may submit and
 * send; they must not free the link except through tr_link_close.
 */
#ifndef TR_CONTROL_LINK_H
#define TR_CONTROL_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "codec/h2/h2.h"
#include "event/loop.h"

/* Bytes a link may hold queued beyond the peer's windows. A full model of a
 * large scoped proxy is a few hundred KiB; the loader's limit is 16 MiB. */
#define TR_LINK_QUEUE_MAX (64u * 1024 * 1024)

struct tr_link;

struct tr_link_ops {
    /* TLS is up (ALPN h2 checked): requests may be submitted. */
    void (*on_ready)(void *owner, struct tr_link *l);
    int (*on_headers)(void *owner, struct tr_link *l, int32_t stream_id,
                      const struct tr_h2_header *h, size_t n, bool end_stream);
    int (*on_data)(void *owner, struct tr_link *l, int32_t stream_id, const uint8_t *data,
                   size_t len, bool end_stream);
    void (*on_stream_close)(void *owner, struct tr_link *l, int32_t stream_id, uint32_t error);
    /* The link failed or the peer closed it; why is a short reason. The link
     * is freed after this returns. */
    void (*on_closed)(void *owner, struct tr_link *l, const char *why);
};

/* Server side: an accepted socket; ssl fresh from a server SSL_CTX that
 * offers ALPN "h2". Client side: a socket whose connect may be in progress;
 * ssl fresh from a client SSL_CTX (SNI and verification set by the caller).
 * Takes ownership of fd and ssl (also on failure). NULL when out of memory. */
struct tr_link *tr_link_new(struct tr_loop *loop, int fd, SSL *ssl, enum tr_h2_role role,
                            const struct tr_link_ops *ops, void *owner);
void tr_link_close(struct tr_link *l);

struct tr_h2 *tr_link_h2(struct tr_link *l);
SSL *tr_link_ssl(struct tr_link *l);
bool tr_link_ready(const struct tr_link *l);

/* Queue body bytes on a stream (copied) and end it if end_stream. Returns 0,
 * or -1 when the queue limit is passed (the link is then failed). */
int tr_link_send(struct tr_link *l, int32_t stream_id, const void *data, size_t len,
                 bool end_stream);
/* Write out what the codec holds (call after submitting headers). */
void tr_link_flush(struct tr_link *l);
/* Bytes queued and not yet taken by the codec. */
size_t tr_link_queued(const struct tr_link *l);

#endif
