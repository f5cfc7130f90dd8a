/* upstream/h1_client: the exchange's bytes over a real socket pair (no
 * endpoint, no pool): request bytes written, the response head found
 * (split, larger than a pool buffer, over the limit) and parsed into the
 * body's framing (HEAD, 204, 304, 1xx, 101, Content-Length, chunked, until
 * close), the body read to its end or cut short, and the one reply each
 * failure maps to. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "obs/metrics.h"
#include "runtime/worker.h"
#include "upstream/h1_client.h"
#include "upstream/pool.h"

/* A client whose connection is one end of a socket pair; the test plays the
 * server on the other end. */
struct fixture {
    struct tr_worker *w;
    struct tr_upstream up;
    struct tr_h1_client c;
    int server;
    struct tr_h1_limits lim;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->w = calloc(1, sizeof(*f->w)); /* the client uses its buffer pool only */
    assert_non_null(f->w);
    tr_buf_pool_init(&f->w->bufs, 256, 4);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    tr_conn_init_raw(&f->up.conn, sv[0], NULL);
    f->server = sv[1];
    f->c.w = f->w;
    f->c.up = &f->up;
    f->lim = (struct tr_h1_limits){8192, 1024, 100};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    f->c.up = NULL; /* not the pool's: released by hand below */
    tr_h1c_release(&f->c, false);
    tr_conn_close(NULL, &f->up.conn, false);
    if (f->server >= 0)
        close(f->server);
    assert_int_equal(f->w->bufs.outstanding, 0);
    tr_buf_pool_destroy(&f->w->bufs);
    free(f->w);
    free(f);
    return 0;
}

static void server_send(struct fixture *f, const char *p)
{
    size_t len = strlen(p);
    assert_int_equal(write(f->server, p, len), (ssize_t)len);
    f->up.conn.rx_ready = true; /* the edge the event loop would report */
}

/* Read until a head is complete; returns its length. */
static int read_head(struct fixture *f, struct tr_buf **in)
{
    for (int guard = 0; guard < 100; guard++) {
        int r = tr_h1c_head_end(&f->c, in, &f->lim);
        if (r != 0)
            return r;
        if (tr_h1c_read(&f->c, in) <= 0)
            return 0;
    }
    return 0;
}

static int parse(struct fixture *f, struct tr_buf *in, int head_len, enum tr_h1_method method,
                 struct tr_h1_message *m)
{
    static struct tr_h1_header headers[100];
    memset(m, 0, sizeof(*m));
    m->headers = headers;
    int rc = tr_h1c_parse_response(&f->c, tr_buf_head(in), (uint32_t)head_len, &f->lim, method, m);
    if (rc == 0)
        tr_buf_consume(in, (uint32_t)head_len);
    return rc;
}

static void test_write(void **state)
{
    struct fixture *f = *state;
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    uint32_t sent = 0;
    assert_int_equal(tr_h1c_write(&f->c, req, sizeof(req) - 1, &sent), 1);
    assert_int_equal(sent, sizeof(req) - 1);
    char got[64];
    assert_int_equal(read(f->server, got, sizeof(got)), sizeof(req) - 1);
    assert_memory_equal(got, req, sizeof(req) - 1);
    /* A connection that takes no more: the rest waits, nothing is lost. */
    static char big[1 << 20];
    sent = 0;
    int rc = tr_h1c_write(&f->c, big, sizeof(big), &sent);
    assert_int_equal(rc, 0);
    assert_true(sent > 0 && sent < sizeof(big));
    assert_false(f->up.conn.tx_ready);
    /* The server is gone: a failure (the caller maps it to UC). */
    close(f->server);
    f->server = -1;
    f->up.conn.tx_ready = true;
    assert_int_equal(tr_h1c_write(&f->c, big, sizeof(big), &sent), -1);
}

static void test_head_split_and_framings(void **state)
{
    struct fixture *f = *state;
    struct tr_buf *in = NULL;
    struct tr_h1_message m;
    /* A head arriving in pieces, then an interim 100, then the final one. */
    server_send(f, "HTTP/1.1 100 Con");
    assert_int_equal(read_head(f, &in), 0);
    server_send(f, "tinue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n");
    int r = read_head(f, &in);
    assert_true(r > 0);
    assert_int_equal(parse(f, in, r, TR_H1_M_GET, &m), 0);
    assert_int_equal(m.status, 100);
    assert_false(f->c.head_done); /* interim: the final head follows */
    assert_true(f->c.got_byte);
    assert_false(tr_h1c_may_resend(&f->c)); /* the server answered */
    assert_int_equal(read_head(f, &in), 0);
    server_send(f, "Keep-Alive: timeout=7\r\n\r\nhel");
    r = read_head(f, &in);
    assert_true(r > 0);
    assert_int_equal(parse(f, in, r, TR_H1_M_GET, &m), 0);
    assert_int_equal(m.status, 200);
    assert_true(f->c.head_done);
    assert_int_equal(f->c.resp.framing, TR_H1_BODY_LENGTH);
    assert_int_equal(f->c.resp.remaining, 5);
    assert_false(f->c.resp.done);
    assert_int_equal(f->up.server_idle_ms, 7000);
    assert_false(f->c.conn_close);
    /* The body: what came with the head, then the rest. */
    server_send(f, "lo");
    assert_int_equal(tr_h1c_read(&f->c, &in), 2);
    uint32_t n;
    assert_int_equal(tr_h1_body_sendable(&f->c.resp, tr_buf_head(in), tr_buf_len(in), &n), 0);
    assert_int_equal(n, 5);
    tr_h1_body_sent(&f->c.resp, n);
    tr_buf_consume(in, n);
    assert_true(f->c.resp.done);
    tr_buf_put(&f->w->bufs, in);
}

/* The framing a final head sets up, for each kind of response. */
static void expect_framing(struct fixture *f, const char *head, enum tr_h1_method method,
                           enum tr_h1_body framing, bool done)
{
    struct tr_buf *in = NULL;
    f->c.head_done = false;
    server_send(f, head);
    int r = read_head(f, &in);
    assert_int_equal(r, (int)strlen(head));
    struct tr_h1_message m;
    assert_int_equal(parse(f, in, r, method, &m), 0);
    assert_true(f->c.head_done);
    assert_int_equal(f->c.resp.framing, framing);
    assert_int_equal(f->c.resp.done, done);
    tr_buf_put(&f->w->bufs, in);
}

static void test_bodyless_responses(void **state)
{
    struct fixture *f = *state;
    /* HEAD, 204 and 304 have no body whatever their head says. */
    expect_framing(f, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", TR_H1_M_HEAD,
                   TR_H1_BODY_NONE, true);
    expect_framing(f, "HTTP/1.1 204 No Content\r\n\r\n", TR_H1_M_POST, TR_H1_BODY_NONE, true);
    expect_framing(f, "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", TR_H1_M_GET,
                   TR_H1_BODY_NONE, true);
    expect_framing(f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", TR_H1_M_GET,
                   TR_H1_BODY_LENGTH, true);
    expect_framing(f, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", TR_H1_M_GET,
                   TR_H1_BODY_CHUNKED, false);
    expect_framing(f,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: upgrade\r\n\r\n",
                   TR_H1_M_GET, TR_H1_BODY_TUNNEL, false);
    expect_framing(f, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", TR_H1_M_GET,
                   TR_H1_BODY_UNTIL_CLOSE, false);
    assert_true(f->c.conn_close); /* the connection does not go back to the pool */
}

static void test_until_close_ends_with_the_connection(void **state)
{
    struct fixture *f = *state;
    struct tr_buf *in = NULL;
    server_send(f, "HTTP/1.0 200 OK\r\n\r\nall of it");
    int r = read_head(f, &in);
    assert_true(r > 0);
    struct tr_h1_message m;
    assert_int_equal(parse(f, in, r, TR_H1_M_GET, &m), 0);
    assert_int_equal(f->c.resp.framing, TR_H1_BODY_UNTIL_CLOSE);
    assert_int_equal(tr_buf_len(in), 9);
    shutdown(f->server, SHUT_WR);
    f->up.conn.rx_ready = true;
    assert_int_equal(tr_h1c_read(&f->c, &in), TR_H1C_READ_END);
    assert_true(f->c.resp.done);
    tr_buf_put(&f->w->bufs, in);
}

static void test_cut_short(void **state)
{
    struct fixture *f = *state;
    struct tr_buf *in = NULL;
    /* Before the head: the connection failed (a re-send may follow). */
    f->c.reused = true;
    assert_true(tr_h1c_may_resend(&f->c)); /* pooled, nothing came back */
    server_send(f, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345");
    int r = read_head(f, &in);
    struct tr_h1_message m;
    assert_int_equal(parse(f, in, r, TR_H1_M_GET, &m), 0);
    assert_false(tr_h1c_may_resend(&f->c));
    shutdown(f->server, SHUT_WR);
    f->up.conn.rx_ready = true;
    /* 5 of 10 bytes, then the end: cut short, never a complete response. */
    assert_int_equal(tr_h1c_read(&f->c, &in), TR_H1C_READ_FAILED);
    assert_false(f->c.resp.done);
    tr_buf_put(&f->w->bufs, in);
}

static void test_eof_before_head(void **state)
{
    struct fixture *f = *state;
    struct tr_buf *in = NULL;
    shutdown(f->server, SHUT_WR);
    assert_int_equal(tr_h1c_read(&f->c, &in), TR_H1C_READ_FAILED);
    assert_false(f->c.got_byte);
    tr_buf_put(&f->w->bufs, in);
}

static void test_head_larger_than_a_buffer(void **state)
{
    struct fixture *f = *state;
    /* Pool buffers of 256 bytes, heads up to 1024: the head moves to a
     * buffer that holds the largest allowed. */
    char head[900];
    size_t len = 0;
    len += (size_t)snprintf(head + len, sizeof(head) - len, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; len < 700; i++)
        len += (size_t)snprintf(head + len, sizeof(head) - len, "x-filler-%02d: %s\r\n", i,
                                "0123456789012345678901234567890123456789");
    len += (size_t)snprintf(head + len, sizeof(head) - len, "Content-Length: 0\r\n\r\n");
    struct tr_buf *in = NULL;
    server_send(f, head);
    int r = read_head(f, &in);
    assert_int_equal(r, (int)len);
    assert_true(in->cap >= f->lim.max_header_bytes + 1);
    struct tr_h1_message m;
    assert_int_equal(parse(f, in, r, TR_H1_M_GET, &m), 0);
    assert_true(f->c.resp.done);
    tr_buf_put(&f->w->bufs, in);
}

static void test_head_over_the_limit(void **state)
{
    struct fixture *f = *state;
    char head[1400];
    size_t len = 0;
    len += (size_t)snprintf(head + len, sizeof(head) - len, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; len < 1300; i++)
        len += (size_t)snprintf(head + len, sizeof(head) - len, "x-filler-%02d: %s\r\n", i,
                                "0123456789012345678901234567890123456789");
    struct tr_buf *in = NULL;
    server_send(f, head);
    assert_int_equal(read_head(f, &in), -TR_H1C_HEAD_TOO_LARGE);
    tr_buf_put(&f->w->bufs, in);
}

static void test_head_malformed_while_scanning(void **state)
{
    struct fixture *f = *state;
    struct tr_buf *in = NULL;
    server_send(f, "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"); /* a bare LF */
    assert_int_equal(read_head(f, &in), -TR_H1C_BAD_HEAD);
    tr_buf_put(&f->w->bufs, in);
}

static void test_invalid_head(void **state)
{
    struct fixture *f = *state;
    struct tr_buf *in = NULL;
    server_send(f, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    int r = read_head(f, &in);
    assert_true(r > 0);
    struct tr_h1_message m;
    assert_true(parse(f, in, r, TR_H1_M_GET, &m) < 0);
    assert_false(f->c.head_done);
    tr_buf_put(&f->w->bufs, in);
}

static void test_replies(void **state)
{
    (void)state;
    struct tr_h1c_reply r = tr_h1c_reply(TR_H1C_NO_HEALTHY, NULL);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.flag, TR_RF_UH);
    assert_string_equal(r.body, "no healthy upstream\n");
    r = tr_h1c_reply(TR_H1C_OVERFLOW, NULL);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.flag, TR_RF_UO);
    assert_string_equal(r.reason, "overflow");
    r = tr_h1c_reply(TR_H1C_FAILED, "connect_refused");
    assert_int_equal(r.flag, TR_RF_UF);
    assert_string_equal(r.reason, "connect_refused");
    r = tr_h1c_reply(TR_H1C_CLOSED, NULL);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.flag, TR_RF_UC);
    assert_string_equal(r.reason, "connection termination");
    r = tr_h1c_reply(TR_H1C_BAD_HEAD, NULL);
    assert_int_equal(r.status, 502);
    assert_int_equal(r.flag, TR_RF_UPE);
    assert_null(r.reason);
    r = tr_h1c_reply(TR_H1C_HEAD_TOO_LARGE, NULL);
    assert_int_equal(r.status, 502);
    assert_int_equal(r.flag, TR_RF_UPE);
    assert_int_equal(tr_h1c_reply(TR_H1C_BAD_BODY, NULL).flag, TR_RF_UPE);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_write),
        T(test_head_split_and_framings),
        T(test_bodyless_responses),
        T(test_until_close_ends_with_the_connection),
        T(test_cut_short),
        T(test_eof_before_head),
        T(test_head_larger_than_a_buffer),
        T(test_head_over_the_limit),
        T(test_head_malformed_while_scanning),
        T(test_invalid_head),
        T(test_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
