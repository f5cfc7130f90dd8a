/* transport/transport.h: a byte stream over a socket, plaintext or TLS.
 *
 * tr_conn wraps one socket registered edge-triggered on the worker's loop.
 * It tracks readiness itself: rx_ready is set by the event callback and
 * cleared on a short read, so once a read comes back short no further read()
 * is issued until the next edge: no EAGAIN reads. For TLS the same holds
 * through a custom BIO: OpenSSL's read-ahead fills its buffer in one read(),
 * and the BIO answers "retry" without a syscall while the socket is drained.
 *
 * The transport contract is the ops table (raw, tls); callers use the
 * tr_conn_* wrappers.
 */
#ifndef TR_TRANSPORT_H
#define TR_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "event/loop.h"

/* Returned by read/write/handshake when the socket is not ready. */
#define TR_AGAIN (-11)
/* Returned by read at end of stream (peer closed its write side cleanly). */
#define TR_EOF   0

struct tr_conn;

struct tr_transport_ops {
    const char *name;
    /* > 0 bytes, TR_EOF, TR_AGAIN, or -errno (-EPROTO for TLS errors) */
    ssize_t (*read)(struct tr_conn *c, void *buf, size_t len);
    ssize_t (*write)(struct tr_conn *c, const void *buf, size_t len);
    /* 0 done, TR_AGAIN, or negative error */
    int (*handshake)(struct tr_conn *c);
    /* Half-close our sending side (TCP FIN, after TLS close_notify). */
    void (*shutdown_write)(struct tr_conn *c);
};

extern const struct tr_transport_ops tr_transport_raw;
extern const struct tr_transport_ops tr_transport_tls;

struct tr_conn {
    struct tr_io io; /* fd and the owner's event callback */
    const struct tr_transport_ops *ops;
    SSL *ssl;      /* owned; NULL for plaintext */
    bool rx_ready; /* a read may return data (edge seen, not yet drained) */
    bool tx_ready; /* a write may make progress */
    bool rx_eof;   /* the peer closed its sending side (EOF read) */
    bool rx_hup;   /* epoll reported RDHUP/HUP/ERR: read on until EOF, as no
                      * further edge will come */
    bool handshake_done;
    int last_errno; /* errno of the last failed socket call */
};

/* Plaintext connection over fd (takes ownership of fd). */
void tr_conn_init_raw(struct tr_conn *c, int fd, tr_io_cb cb);
/* TLS over fd: ssl must be fresh (accept or connect state already set);
 * the conn takes ownership of both. */
void tr_conn_init_tls(struct tr_conn *c, int fd, SSL *ssl, tr_io_cb cb);
/* Switch a plaintext conn to TLS (after protocol detection). */
void tr_conn_start_tls(struct tr_conn *c, SSL *ssl);

/* Record the readiness an epoll event reports. Call first in every io callback. */
static inline void tr_conn_on_events(struct tr_conn *c, uint32_t events)
{
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->rx_ready = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->rx_hup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->tx_ready = true;
}

static inline ssize_t tr_conn_read(struct tr_conn *c, void *buf, size_t len)
{
    return c->ops->read(c, buf, len);
}
static inline ssize_t tr_conn_write(struct tr_conn *c, const void *buf, size_t len)
{
    return c->ops->write(c, buf, len);
}
static inline int tr_conn_handshake(struct tr_conn *c)
{
    return c->ops->handshake(c);
}
static inline void tr_conn_shutdown_write(struct tr_conn *c)
{
    c->ops->shutdown_write(c);
}
/* Bytes the transport already holds decrypted (TLS) so a read will succeed
 * even without a new edge. */
static inline bool tr_conn_has_pending(const struct tr_conn *c)
{
    return c->ssl != NULL && SSL_has_pending(c->ssl);
}
static inline bool tr_conn_readable(const struct tr_conn *c)
{
    return c->rx_ready || tr_conn_has_pending(c);
}

/* Unregister from loop (if registered), free SSL, close fd. */
void tr_conn_close(struct tr_loop *loop, struct tr_conn *c, bool registered);

/* Process-wide init of the custom BIO method (call once at start-up). */
int tr_transport_init(void);

#endif
