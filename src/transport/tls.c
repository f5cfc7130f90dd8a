/* TLS transport: OpenSSL over a custom BIO that shares the conn's readiness
 * flags, so OpenSSL never issues a read() or send() that would return EAGAIN.
 *
 * The error queue. OpenSSL keeps one error queue per thread, and
 * SSL_get_error() answers SSL_ERROR_SSL whenever that queue is not empty, even
 * if the call only wanted more bytes. A worker runs many connections on one
 * thread, so an error left behind by one (a failed handshake) would turn the
 * next connection's "would block" into a fatal error. Hence: the queue is
 * cleared before every SSL I/O call, and emptied after every failure once its
 * reason has been taken (here for read/write; the handshake's caller takes
 * it with tr_tls_failure_reason(), which empties it). */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#include "core/log.h"
#include "transport/transport.h"

static BIO_METHOD *conn_bio_method;

static int conn_bio_read(BIO *b, char *out, int len)
{
    struct tr_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!c->rx_ready) {
        BIO_set_retry_read(b);
        return -1;
    }
    for (;;) {
        ssize_t n = read(c->io.fd, out, (size_t)len);
        if (n > 0) {
            if (n < len && !c->rx_hup)
                c->rx_ready = false;
            return (int)n;
        }
        if (n == 0) {
            c->rx_eof = true;
            c->rx_ready = false;
            return 0;
        }
        if (errno == EINTR)
            continue;
        c->rx_ready = false;
        if (errno == EAGAIN) {
            BIO_set_retry_read(b);
            return -1;
        }
        c->last_errno = errno;
        return -1;
    }
}

static int conn_bio_write(BIO *b, const char *in, int len)
{
    struct tr_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!c->tx_ready) {
        BIO_set_retry_write(b);
        return -1;
    }
    for (;;) {
        ssize_t n = send(c->io.fd, in, (size_t)len, MSG_NOSIGNAL);
        if (n >= 0) {
            if (n < len)
                c->tx_ready = false;
            return (int)n;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            c->tx_ready = false;
            BIO_set_retry_write(b);
            return -1;
        }
        c->last_errno = errno;
        return -1;
    }
}

static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

static int conn_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

int tr_transport_init(void)
{
    if (conn_bio_method != NULL)
        return 0;
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "trellis-conn");
    if (m == NULL)
        return -1;
    BIO_meth_set_read(m, conn_bio_read);
    BIO_meth_set_write(m, conn_bio_write);
    BIO_meth_set_ctrl(m, conn_bio_ctrl);
    BIO_meth_set_create(m, conn_bio_create);
    conn_bio_method = m;
    return 0;
}

/* Map an SSL_* result to our return codes. On -EPROTO the error queue still
 * holds the reason. */
static ssize_t tls_result(struct tr_conn *c, int rc)
{
    int e = SSL_get_error(c->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TR_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        c->rx_eof = true;
        return TR_EOF;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (c->rx_eof)
            return -ECONNRESET; /* EOF without close_notify: truncation */
        return c->last_errno ? -c->last_errno : -EIO;
    default:
        return -EPROTO;
    }
}

/* After a failed read or write: nobody classifies these, so log the reason
 * (debug) and empty the queue. */
static ssize_t tls_io_result(struct tr_conn *c, int rc, const char *op)
{
    ssize_t r = tls_result(c, rc);
    if (r == -EPROTO) {
        unsigned long e = ERR_peek_error();
        const char *why = e ? ERR_reason_error_string(e) : NULL;
        tr_debug("TLS %s on fd %d failed: %s", op, c->io.fd, why ? why : "unknown error");
        ERR_clear_error();
    }
    return r;
}

static ssize_t tls_read(struct tr_conn *c, void *buf, size_t len)
{
    if (!c->rx_ready && !SSL_has_pending(c->ssl))
        return TR_AGAIN;
    size_t n = 0;
    ERR_clear_error();
    int rc = SSL_read_ex(c->ssl, buf, len, &n);
    if (rc == 1)
        return (ssize_t)n;
    return tls_io_result(c, rc, "read");
}

static ssize_t tls_write(struct tr_conn *c, const void *buf, size_t len)
{
    size_t n = 0;
    ERR_clear_error();
    int rc = SSL_write_ex(c->ssl, buf, len, &n);
    if (rc == 1)
        return (ssize_t)n;
    return tls_io_result(c, rc, "write");
}

/* On failure (negative, not TR_AGAIN) the error queue holds the reason for
 * the caller: tr_tls_failure_reason() takes it and empties the queue. */
static int tls_handshake(struct tr_conn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->handshake_done = true;
        return 0;
    }
    ssize_t r = tls_result(c, rc);
    if (r == TR_EOF)
        return -ECONNRESET;
    return (int)r;
}

static void tls_shutdown_write(struct tr_conn *c)
{
    if (c->handshake_done) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* sends close_notify; we do not wait for the peer's */
        ERR_clear_error();    /* a failure here changes nothing: the FIN follows */
    }
    shutdown(c->io.fd, SHUT_WR);
}

const struct tr_transport_ops tr_transport_tls = {
    .name = "tls",
    .read = tls_read,
    .write = tls_write,
    .handshake = tls_handshake,
    .shutdown_write = tls_shutdown_write,
};

void tr_conn_start_tls(struct tr_conn *c, SSL *ssl)
{
    BIO *bio = BIO_new(conn_bio_method);
    BIO_set_data(bio, c);
    SSL_set_bio(ssl, bio, bio);
    c->ssl = ssl;
    c->ops = &tr_transport_tls;
    c->handshake_done = false;
}

void tr_conn_init_tls(struct tr_conn *c, int fd, SSL *ssl, tr_io_cb cb)
{
    tr_conn_init_raw(c, fd, cb);
    tr_conn_start_tls(c, ssl);
}
