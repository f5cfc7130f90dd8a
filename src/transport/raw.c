/* Plaintext transport: read()/send() with readiness tracking. */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/transport.h"

static ssize_t raw_read(struct tr_conn *c, void *buf, size_t len)
{
    if (!c->rx_ready)
        return TR_AGAIN;
    for (;;) {
        ssize_t n = read(c->io.fd, buf, len);
        if (n > 0) {
            /* A short read means drained until the next edge, unless the
             * FIN already came: then the EOF is still to be read. */
            if ((size_t)n < len && !c->rx_hup)
                c->rx_ready = false;
            return n;
        }
        if (n == 0) {
            c->rx_eof = true;
            c->rx_ready = false;
            return TR_EOF;
        }
        if (errno == EINTR)
            continue;
        c->rx_ready = false;
        if (errno == EAGAIN)
            return TR_AGAIN;
        c->last_errno = errno;
        return -errno;
    }
}

static ssize_t raw_write(struct tr_conn *c, const void *buf, size_t len)
{
    if (!c->tx_ready)
        return TR_AGAIN;
    for (;;) {
        ssize_t n = send(c->io.fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0) {
            if ((size_t)n < len)
                c->tx_ready = false;
            return n;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            c->tx_ready = false;
            return TR_AGAIN;
        }
        c->last_errno = errno;
        return -errno;
    }
}

static int raw_handshake(struct tr_conn *c)
{
    c->handshake_done = true;
    return 0;
}

static void raw_shutdown_write(struct tr_conn *c)
{
    shutdown(c->io.fd, SHUT_WR);
}

const struct tr_transport_ops tr_transport_raw = {
    .name = "raw",
    .read = raw_read,
    .write = raw_write,
    .handshake = raw_handshake,
    .shutdown_write = raw_shutdown_write,
};

void tr_conn_init_raw(struct tr_conn *c, int fd, tr_io_cb cb)
{
    c->io.fd = fd;
    c->io.cb = cb;
    c->ops = &tr_transport_raw;
    c->ssl = NULL;
    c->rx_ready = true; /* unknown until tried; the first read tells */
    c->tx_ready = true;
    c->rx_eof = false;
    c->rx_hup = false;
    c->handshake_done = true;
    c->last_errno = 0;
}

void tr_conn_close(struct tr_loop *loop, struct tr_conn *c, bool registered)
{
    if (c->io.fd < 0)
        return;
    if (registered)
        tr_loop_del(loop, &c->io);
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->io.fd);
    c->io.fd = -1;
}
