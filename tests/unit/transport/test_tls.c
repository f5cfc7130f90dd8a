/* The TLS transport over real sockets, with real mTLS contexts: a stale
 * OpenSSL error left on the thread's queue (by another connection's failed
 * handshake, say) must not turn this connection's "would block" into a fatal
 * error.
 *
 * The wire: server conn on a[0], client conn on b[1]; the test relays bytes
 * between a[1] and b[0] itself, so it decides exactly what each side has
 * received (a partial record, a full socket buffer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/log.h"
#include "identity/identity.h"
#include "transport/transport.h"
#include "../identity/pki.h"

#define TD  "example.org"
#define DAY 86400L

static struct tpki pki;
static struct tr_tls_ctx *srv_ctx, *cli_ctx;

static struct tr_tls_ctx *load_leaf(const char *name)
{
    char crt[256], key[256], ca[256], file[64];
    snprintf(file, sizeof(file), "%s.crt", name);
    tpki_path(&pki, file, crt, sizeof(crt));
    snprintf(file, sizeof(file), "%s.key", name);
    tpki_path(&pki, file, key, sizeof(key));
    tpki_path(&pki, "ca.pem", ca, sizeof(ca));
    struct tr_tls_cfg cfg = {
        .name = "t",
        .cert_file = crt,
        .key_file = key,
        .ca_file = ca,
        .trust_domain = TD,
        .loc = {.file = "cfg.yaml", .line = 1, .col = 1, .path = "tls[0]"},
    };
    char *err = NULL;
    struct tr_tls_ctx *ctx = tr_tls_ctx_load(&cfg, &err);
    if (ctx == NULL)
        fail_msg("load %s: %s", name, err ? err : "(no message)");
    return ctx;
}

static int group_setup(void **state)
{
    (void)state;
    tr_log_set_level(TR_LOG_ERROR);
    if (tr_transport_init() != 0 || tpki_init(&pki) != 0 ||
        tpki_leaf(&pki, "server", "URI:spiffe://" TD "/ns/default/sa/server", TPKI_CA, -DAY, DAY) !=
            0 ||
        tpki_leaf(&pki, "client", "URI:spiffe://" TD "/ns/default/sa/client", TPKI_CA, -DAY, DAY) !=
            0)
        return -1;
    srv_ctx = load_leaf("server");
    cli_ctx = load_leaf("client");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tr_tls_ctx_unref(srv_ctx);
    tr_tls_ctx_unref(cli_ctx);
    tpki_cleanup(&pki);
    return 0;
}

struct wire {
    struct tr_conn s, c;
    int a1, b0; /* the relay's ends */
};

/* Moves up to max bytes from one relay end to the other; returns the count. */
static size_t relay(int from, int to, size_t max)
{
    char buf[4096];
    size_t moved = 0;
    while (moved < max) {
        size_t want = max - moved < sizeof(buf) ? max - moved : sizeof(buf);
        ssize_t n = recv(from, buf, want, MSG_PEEK);
        if (n <= 0)
            break;
        ssize_t w = send(to, buf, (size_t)n, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        assert_int_equal(recv(from, buf, (size_t)w, 0), w); /* consume what was sent */
        moved += (size_t)w;
    }
    return moved;
}

static size_t relay_all(struct wire *w)
{
    return relay(w->a1, w->b0, SIZE_MAX) + relay(w->b0, w->a1, SIZE_MAX);
}

/* An edge on both sides, as epoll would report after the relay moved bytes. */
static void edges(struct wire *w)
{
    tr_conn_on_events(&w->s, EPOLLIN | EPOLLOUT);
    tr_conn_on_events(&w->c, EPOLLIN | EPOLLOUT);
}

static void wire_open(struct wire *w)
{
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
    SSL *s = SSL_new(tr_tls_ctx_server(srv_ctx));
    SSL *c = SSL_new(tr_tls_ctx_client(cli_ctx));
    assert_non_null(s);
    assert_non_null(c);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    assert_int_equal(tr_tls_client_setup(c, NULL, NULL, 0), 0);
    tr_conn_init_tls(&w->s, a[0], s, NULL);
    tr_conn_init_tls(&w->c, b[1], c, NULL);
    w->a1 = a[1];
    w->b0 = b[0];
}

static void wire_close(struct wire *w)
{
    tr_conn_close(NULL, &w->s, false);
    tr_conn_close(NULL, &w->c, false);
    close(w->a1);
    close(w->b0);
}

/* Reads whatever the side has (TLS 1.3 session tickets after the handshake)
 * until it would block. */
static void settle(struct tr_conn *c)
{
    char buf[256];
    for (int i = 0; i < 16; i++) {
        c->rx_ready = true;
        ssize_t n = tr_conn_read(c, buf, sizeof(buf));
        if (n == TR_AGAIN)
            return;
        assert_true(n > 0);
    }
    fail_msg("unexpected application data");
}

static void handshake(struct wire *w)
{
    bool s_done = false, c_done = false;
    for (int i = 0; i < 20 && !(s_done && c_done); i++) {
        if (!c_done) {
            int rc = tr_conn_handshake(&w->c);
            assert_true(rc == 0 || rc == TR_AGAIN);
            c_done = rc == 0;
        }
        if (!s_done) {
            int rc = tr_conn_handshake(&w->s);
            assert_true(rc == 0 || rc == TR_AGAIN);
            s_done = rc == 0;
        }
        relay_all(w);
        edges(w);
    }
    assert_true(s_done && c_done);
    relay_all(w);
    edges(w);
    settle(&w->c);
    settle(&w->s);
}

/* What another connection's failed handshake leaves behind on this thread. */
static void stale_error(void)
{
    ERR_raise(ERR_LIB_SSL, SSL_R_TLSV1_ALERT_UNKNOWN_CA);
    assert_int_not_equal(ERR_peek_error(), 0);
}

/* A record that arrived in part: reading it would block, and it must say so
 * even with a stale error queued; the rest then reads fine. */
static void test_read_partial_record_is_again(void **state)
{
    (void)state;
    struct wire w;
    wire_open(&w);
    handshake(&w);

    assert_int_equal(tr_conn_write(&w.s, "ping", 4), 4);
    char rec[256];
    ssize_t len = recv(w.a1, rec, sizeof(rec), MSG_PEEK);
    assert_true(len > 4);
    assert_int_equal(relay(w.a1, w.b0, (size_t)len - 1), (size_t)len - 1);
    edges(&w);

    stale_error();
    char buf[16];
    assert_int_equal(tr_conn_read(&w.c, buf, sizeof(buf)), TR_AGAIN);
    assert_int_equal(relay(w.a1, w.b0, 1), 1);
    edges(&w);
    stale_error();
    assert_int_equal(tr_conn_read(&w.c, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "ping", 4);
    wire_close(&w);
}

/* A full socket buffer: the write that would block is "again", and every
 * byte the writer was told went out arrives once the reader catches up. */
static void test_write_full_socket_is_again(void **state)
{
    (void)state;
    struct wire w;
    wire_open(&w);
    handshake(&w);
    int small = 4096;
    assert_int_equal(setsockopt(w.c.io.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);

    static char chunk[16384];
    memset(chunk, 'x', sizeof(chunk));
    size_t sent = 0;
    ssize_t rc = 0;
    for (int i = 0; i < 4096; i++) {
        rc = tr_conn_write(&w.c, chunk, sizeof(chunk));
        if (rc == TR_AGAIN)
            break;
        assert_true(rc > 0);
        sent += (size_t)rc;
    }
    assert_int_equal(rc, TR_AGAIN);
    assert_false(w.c.tx_ready);

    /* The peer has not read: a write after a (spurious) EPOLLOUT still
     * blocks in the kernel. */
    stale_error();
    tr_conn_on_events(&w.c, EPOLLOUT);
    assert_int_equal(tr_conn_write(&w.c, chunk, sizeof(chunk)), TR_AGAIN);

    /* Catch up: relay and read everything on the server side, finishing the
     * interrupted write on the way (same buffer, as OpenSSL requires). */
    size_t got = 0;
    bool pending_write = true;
    char buf[16384];
    for (int i = 0; i < 10000 && (pending_write || got < sent); i++) {
        relay_all(&w);
        edges(&w);
        if (pending_write) {
            stale_error();
            rc = tr_conn_write(&w.c, chunk, sizeof(chunk));
            assert_true(rc > 0 || rc == TR_AGAIN);
            if (rc > 0) {
                sent += (size_t)rc;
                pending_write = false;
            }
        }
        for (;;) {
            ssize_t n = tr_conn_read(&w.s, buf, sizeof(buf));
            if (n == TR_AGAIN)
                break;
            assert_true(n > 0);
            got += (size_t)n;
        }
    }
    assert_false(pending_write);
    assert_int_equal(got, sent);
    ERR_clear_error();
    wire_close(&w);
}

/* Mid-handshake (the server waits for the client's second flight): a step
 * with nothing to read is "again" too. */
static void test_handshake_step_is_again(void **state)
{
    (void)state;
    struct wire w;
    wire_open(&w);
    assert_int_equal(tr_conn_handshake(&w.c), TR_AGAIN); /* ClientHello out */
    relay_all(&w);
    edges(&w);
    assert_int_equal(tr_conn_handshake(&w.s), TR_AGAIN); /* its flight out */
    stale_error();
    edges(&w);
    assert_int_equal(tr_conn_handshake(&w.s), TR_AGAIN); /* nothing new in */
    /* ... and the handshake still completes. */
    handshake(&w);
    assert_true(w.s.handshake_done && w.c.handshake_done);
    wire_close(&w);
}

/* Close_notify goes out without leaving anything queued behind. */
static void test_shutdown_leaves_queue_empty(void **state)
{
    (void)state;
    struct wire w;
    wire_open(&w);
    handshake(&w);
    stale_error();
    tr_conn_shutdown_write(&w.c);
    assert_int_equal(ERR_peek_error(), 0);
    relay_all(&w);
    edges(&w);
    char buf[16];
    assert_int_equal(tr_conn_read(&w.s, buf, sizeof(buf)), TR_EOF);
    wire_close(&w);
}

/* A fatal read error is logged and drained by the transport: the next
 * connection's I/O starts from an empty queue either way. */
static void test_fatal_read_drains_queue(void **state)
{
    (void)state;
    struct wire w;
    wire_open(&w);
    handshake(&w);
    /* A forged record: valid header, garbage body; decryption fails. */
    static const unsigned char junk[] = {
        0x17, 0x03, 0x03, 0x00, 0x20, 1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14,
        15,   16,   17,   18,   19,   20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    assert_int_equal(send(w.a1, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
    edges(&w);
    char buf[16];
    assert_int_equal(tr_conn_read(&w.s, buf, sizeof(buf)), -EPROTO);
    assert_int_equal(ERR_peek_error(), 0);
    wire_close(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_partial_record_is_again),
        cmocka_unit_test(test_write_full_socket_is_again),
        cmocka_unit_test(test_handshake_step_is_again),
        cmocka_unit_test(test_shutdown_leaves_queue_empty),
        cmocka_unit_test(test_fatal_read_drains_queue),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
