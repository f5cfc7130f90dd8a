/* control/link.c: an HTTP/2 connection over TLS on a loop (see link.h). */
#include "control/link.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/sock.h"
#include "transport/transport.h"

#define IO_CHUNK   16384
#define READ_TURNS 64 /* reads per turn before yielding to other connections */

/* Body bytes waiting for the peer's window, in submission order. */
struct chunk {
    struct chunk *next;
    int32_t stream_id;
    bool end_stream;
    size_t off, len;
    uint8_t data[];
};

struct tr_link {
    struct tr_loop *loop;
    struct tr_conn conn;
    struct tr_h2 *h2;
    const struct tr_link_ops *ops;
    void *owner;
    bool connecting, ready, failed;
    bool closing; /* tr_link_close ran, or on_closed is running: free pending */
    bool conn_closed;
    const char *why;
    struct chunk *head, **tail;
    size_t queued;
    size_t tx_off, tx_len;
    struct tr_deferred pump_later; /* a flush or a read turn that yielded */
    struct tr_deferred fail_later;
    uint8_t tx[IO_CHUNK];
    uint8_t rx[IO_CHUNK];
};

static void link_pump(struct tr_link *l);

static void link_destroy(struct tr_link *l)
{
    tr_loop_cancel(l->loop, &l->pump_later);
    tr_loop_cancel(l->loop, &l->fail_later);
    if (!l->conn_closed)
        tr_conn_close(l->loop, &l->conn, true);
    tr_h2_free(l->h2);
    while (l->head != NULL) {
        struct chunk *c = l->head;
        l->head = c->next;
        free(c);
    }
    free(l);
}

static void fail_later_cb(struct tr_deferred *d)
{
    struct tr_link *l = tr_container_of(d, struct tr_link, fail_later);
    if (!l->closing) {
        l->closing = true; /* a tr_link_close from on_closed is a no-op */
        if (l->ops->on_closed != NULL)
            l->ops->on_closed(l->owner, l, l->why);
    }
    link_destroy(l);
}

/* Fails the link once; the owner hears of it from a deferred call, so no
 * callback frees what its caller is still using. */
static void link_fail(struct tr_link *l, const char *why)
{
    if (l->failed)
        return;
    l->failed = true;
    l->why = why;
    tr_loop_cancel(l->loop, &l->pump_later);
    tr_loop_defer(l->loop, &l->fail_later, fail_later_cb);
}

static void pump_later_cb(struct tr_deferred *d)
{
    link_pump(tr_container_of(d, struct tr_link, pump_later));
}

/* ---- the codec's events, passed to the owner ---- */

static int h2_on_headers(void *owner, int32_t sid, const struct tr_h2_header *h, size_t n,
                         bool is_trailers, bool end_stream)
{
    struct tr_link *l = owner;
    if (l->closing)
        return 0;
    if (is_trailers) /* the protocol uses none; a trailer block only ends the stream */
        return end_stream && l->ops->on_data != NULL
                   ? l->ops->on_data(l->owner, l, sid, (const uint8_t *)"", 0, true)
                   : 0;
    return l->ops->on_headers != NULL ? l->ops->on_headers(l->owner, l, sid, h, n, end_stream) : 0;
}

static int h2_on_data(void *owner, int32_t sid, const uint8_t *data, size_t len, bool end_stream)
{
    struct tr_link *l = owner;
    if (l->closing)
        return 0;
    int rc = l->ops->on_data != NULL ? l->ops->on_data(l->owner, l, sid, data, len, end_stream) : 0;
    if (rc == 0 && len > 0)
        tr_h2_consume(l->h2, sid, len);
    return rc;
}

static void h2_on_stream_close(void *owner, int32_t sid, uint32_t error)
{
    struct tr_link *l = owner;
    /* Queued bytes of a closed stream can never go. */
    for (struct chunk **pp = &l->head; *pp != NULL;) {
        struct chunk *c = *pp;
        if (c->stream_id == sid) {
            *pp = c->next;
            l->queued -= c->len - c->off;
            free(c);
        } else {
            pp = &c->next;
        }
    }
    l->tail = &l->head;
    while (*l->tail != NULL)
        l->tail = &(*l->tail)->next;
    if (!l->closing && l->ops->on_stream_close != NULL)
        l->ops->on_stream_close(l->owner, l, sid, error);
}

static void h2_on_goaway(void *owner, int32_t last, uint32_t error)
{
    (void)owner;
    (void)last;
    (void)error; /* open streams finish; the link ends when the codec is done */
}

static void send_queue(struct tr_link *l);

static void h2_on_writable(void *owner, int32_t sid)
{
    (void)sid;
    struct tr_link *l = owner;
    if (!l->closing)
        send_queue(l);
}

static const struct tr_h2_ops h2_ops = {
    .on_headers = h2_on_headers,
    .on_data = h2_on_data,
    .on_stream_close = h2_on_stream_close,
    .on_goaway = h2_on_goaway,
    .on_writable = h2_on_writable,
};

/* Hands queued bytes to the codec as far as windows allow, stream order
 * kept: a stream's later chunk never overtakes its earlier one. */
static void send_queue(struct tr_link *l)
{
    int32_t blocked[8];
    size_t n_blocked = 0;
    for (struct chunk **pp = &l->head; *pp != NULL;) {
        struct chunk *c = *pp;
        bool skip = false;
        for (size_t i = 0; i < n_blocked; i++)
            skip |= blocked[i] == c->stream_id;
        if (skip) {
            pp = &c->next;
            continue;
        }
        ssize_t n =
            tr_h2_send_data(l->h2, c->stream_id, c->data + c->off, c->len - c->off, c->end_stream);
        if (n < 0 && n != TR_H2_E_STREAM) {
            link_fail(l, "http2_send");
            return;
        }
        if (n >= 0 && (size_t)n < c->len - c->off) {
            c->off += (size_t)n;
            l->queued -= (size_t)n;
            if (n_blocked == sizeof(blocked) / sizeof(blocked[0]))
                break;
            blocked[n_blocked++] = c->stream_id;
            pp = &c->next;
            continue;
        }
        /* all taken, or the stream is gone */
        l->queued -= c->len - c->off;
        *pp = c->next;
        free(c);
    }
    l->tail = &l->head;
    while (*l->tail != NULL)
        l->tail = &(*l->tail)->next;
}

/* ---- socket side ---- */

static void link_flush_out(struct tr_link *l)
{
    while (!l->failed) {
        if (l->tx_off == l->tx_len) {
            l->tx_off = 0;
            l->tx_len = tr_h2_output(l->h2, l->tx, sizeof(l->tx));
            /* tr_h2_output may report a stream closed, whose owner may have
             * closed this link (and freed its SSL) from that callback. */
            if (l->failed || l->conn_closed)
                return;
            if (l->tx_len == 0)
                break;
        }
        ssize_t n = tr_conn_write(&l->conn, l->tx + l->tx_off, l->tx_len - l->tx_off);
        if (n == TR_AGAIN)
            return;
        if (n < 0) {
            link_fail(l, "write_failed");
            return;
        }
        l->tx_off += (size_t)n;
    }
    if (!l->failed && !tr_h2_alive(l->h2) && l->tx_off == l->tx_len)
        link_fail(l, "closed");
}

static void link_read(struct tr_link *l)
{
    for (int turn = 0; !l->failed; turn++) {
        if (turn == READ_TURNS) { /* let the loop serve others; come back this turn */
            tr_loop_defer(l->loop, &l->pump_later, pump_later_cb);
            return;
        }
        if (!tr_conn_readable(&l->conn))
            return;
        ssize_t n = tr_conn_read(&l->conn, l->rx, sizeof(l->rx));
        if (n == TR_AGAIN)
            return;
        if (n == TR_EOF) {
            link_fail(l, "peer_closed");
            return;
        }
        if (n < 0) {
            link_fail(l, n == -EPROTO ? "tls_error" : "read_failed");
            return;
        }
        if (tr_h2_feed(l->h2, l->rx, (size_t)n) < 0) {
            link_flush_out(l); /* our GOAWAY, best effort */
            link_fail(l, "http2_protocol_error");
            return;
        }
    }
}

static void link_pump(struct tr_link *l)
{
    if (l->failed || !l->ready)
        return;
    link_read(l);
    if (!l->failed)
        send_queue(l);
    if (!l->failed)
        link_flush_out(l);
}

static void on_io(struct tr_io *io, uint32_t events)
{
    struct tr_link *l = tr_container_of(io, struct tr_link, conn.io);
    if (l->failed)
        return;
    tr_conn_on_events(&l->conn, events);
    if (l->connecting) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (tr_sock_connect_result(io->fd) < 0) {
            link_fail(l, "connect_failed");
            return;
        }
        l->connecting = false;
    }
    if (!l->ready) {
        int rc = tr_conn_handshake(&l->conn);
        if (rc == TR_AGAIN)
            return;
        if (rc < 0) {
            link_fail(l, "tls_handshake_failed");
            return;
        }
        const unsigned char *alpn = NULL;
        unsigned alpn_len = 0;
        SSL_get0_alpn_selected(l->conn.ssl, &alpn, &alpn_len);
        if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
            link_fail(l, "no_alpn_h2");
            return;
        }
        l->ready = true;
        if (l->ops->on_ready != NULL)
            l->ops->on_ready(l->owner, l);
        if (l->failed)
            return;
    }
    link_pump(l);
}

struct tr_link *tr_link_new(struct tr_loop *loop, int fd, SSL *ssl, enum tr_h2_role role,
                            const struct tr_link_ops *ops, void *owner)
{
    struct tr_link *l = calloc(1, sizeof(*l));
    struct tr_h2_limits lim = TR_H2_LIMITS_DEFAULT;
    lim.max_concurrent_streams = 16; /* one push stream and a few acks */
    lim.initial_window_size = 1u << 20;
    lim.connection_window_size = 4u << 20;
    struct tr_h2 *h2 = l != NULL ? tr_h2_new(role, &lim, &h2_ops, l) : NULL;
    if (h2 == NULL) {
        free(l);
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    l->loop = loop;
    l->h2 = h2;
    l->ops = ops;
    l->owner = owner;
    l->tail = &l->head;
    l->connecting = role == TR_H2_CLIENT;
    /* A silent partition is noticed in about a minute, not when TCP gives
     * up on a write many minutes later. */
    int on = 1, idle = 20, intvl = 10, cnt = 3;
    unsigned user_timeout_ms = 60000;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
    if (role == TR_H2_CLIENT)
        SSL_set_connect_state(ssl);
    else
        SSL_set_accept_state(ssl);
    tr_conn_init_tls(&l->conn, fd, ssl, on_io);
    if (tr_loop_add(loop, &l->conn.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) != 0) {
        tr_h2_free(h2);
        tr_conn_close(loop, &l->conn, false);
        free(l);
        return NULL;
    }
    return l;
}

void tr_link_close(struct tr_link *l)
{
    if (l == NULL || l->closing)
        return;
    /* The socket goes now; the memory after this turn, since a codec
     * callback of this very link may be the caller. */
    l->closing = true;
    l->failed = true;
    tr_loop_cancel(l->loop, &l->pump_later);
    tr_conn_close(l->loop, &l->conn, true);
    l->conn_closed = true;
    tr_loop_defer(l->loop, &l->fail_later, fail_later_cb);
}

struct tr_h2 *tr_link_h2(struct tr_link *l)
{
    return l->h2;
}

SSL *tr_link_ssl(struct tr_link *l)
{
    return l->conn.ssl;
}

bool tr_link_ready(const struct tr_link *l)
{
    return l->ready && !l->failed;
}

size_t tr_link_queued(const struct tr_link *l)
{
    return l->queued;
}

int tr_link_send(struct tr_link *l, int32_t stream_id, const void *data, size_t len,
                 bool end_stream)
{
    if (l->failed)
        return -1;
    if (len > TR_LINK_QUEUE_MAX - l->queued) {
        link_fail(l, "send_queue_full");
        return -1;
    }
    struct chunk *c = malloc(sizeof(*c) + len);
    if (c == NULL) {
        link_fail(l, "out_of_memory");
        return -1;
    }
    c->next = NULL;
    c->stream_id = stream_id;
    c->end_stream = end_stream;
    c->off = 0;
    c->len = len;
    if (len > 0)
        memcpy(c->data, data, len);
    *l->tail = c;
    l->tail = &c->next;
    l->queued += len;
    tr_link_flush(l);
    return 0;
}

void tr_link_flush(struct tr_link *l)
{
    /* Deferred: the caller may be inside one of the codec's callbacks,
     * where the codec must not be asked for output. */
    if (!l->failed && l->ready)
        tr_loop_defer(l->loop, &l->pump_later, pump_later_cb);
}
