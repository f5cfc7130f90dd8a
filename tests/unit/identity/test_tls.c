/* Real TLS handshakes, in memory (BIO pairs), between SSLs made from
 * tr_tls_ctx contexts and deliberately broken peers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/log.h"
#include "identity/identity.h"
#include "pki.h"

#define TD        "example.org"
#define ID_SERVER "spiffe://example.org/ns/default/sa/server"
#define ID_CLIENT "spiffe://example.org/ns/default/sa/client"
#define ID_OTHER  "spiffe://example.org/ns/default/sa/other"
#define DAY       86400L

static struct tpki pki;

struct leaf_spec {
    const char *name;
    const char *san;
    enum tpki_issuer by;
    long nb, na;
};

static const struct leaf_spec leaves[] = {
    {"server", "URI:" ID_SERVER ",DNS:server.example.org", TPKI_CA, -DAY, DAY},
    {"client", "URI:" ID_CLIENT, TPKI_CA, -DAY, DAY},
    {"other", "URI:" ID_OTHER, TPKI_CA, -DAY, DAY},
    {"foreign", "URI:" ID_CLIENT, TPKI_FOREIGN, -DAY, DAY},
    {"impostor", "URI:" ID_CLIENT, TPKI_IMPOSTOR, -DAY, DAY},
    {"expired", "URI:" ID_CLIENT, TPKI_CA, -2 * DAY, -DAY},
    {"future", "URI:" ID_CLIENT, TPKI_CA, DAY, 2 * DAY},
    {"nospiffe", "DNS:client.example.org", TPKI_CA, -DAY, DAY},
    {"httpuri", "URI:https://example.org/client", TPKI_CA, -DAY, DAY},
    {"twouri", "URI:" ID_CLIENT ",URI:" ID_OTHER, TPKI_CA, -DAY, DAY},
    {"badid", "URI:spiffe://Example.org/a", TPKI_CA, -DAY, DAY},
    {"othertd", "URI:spiffe://other.org/ns/default/sa/client", TPKI_CA, -DAY, DAY},
};

/* ---- fixtures and helpers ---- */

static int group_setup(void **state)
{
    tr_log_set_level(TR_LOG_ERROR);
    if (tpki_init(&pki) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
        const struct leaf_spec *l = &leaves[i];
        if (tpki_leaf(&pki, l->name, l->san, l->by, l->nb, l->na) != 0)
            return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    tpki_cleanup(&pki);
    return 0;
}

static const char *pth(const char *name, const char *ext)
{
    /* A small ring so several paths can be live in one expression. */
    static char bufs[8][256];
    static unsigned next;
    char *b = bufs[next++ % 8];
    char file[128];
    snprintf(file, sizeof(file), "%s%s", name, ext);
    return tpki_path(&pki, file, b, 256);
}

static struct tr_tls_ctx *load_files(const char *crt, const char *key, const char *ca,
                                     const char *td, uint16_t minv, char **err)
{
    struct tr_tls_cfg cfg = {
        .name = "t",
        .cert_file = crt,
        .key_file = key,
        .ca_file = ca,
        .trust_domain = td,
        .min_version = minv,
        .session_resumption = true,
        .loc = {.file = "cfg.yaml", .line = 3, .col = 5, .path = "tls[0]"},
    };
    return tr_tls_ctx_load(&cfg, err);
}

static struct tr_tls_ctx *load_leaf(const char *name, const char *td, uint16_t minv)
{
    char *err = NULL;
    struct tr_tls_ctx *ctx =
        load_files(pth(name, ".crt"), pth(name, ".key"), pth("ca", ".pem"), td, minv, &err);
    if (ctx == NULL)
        fail_msg("load %s: %s", name, err ? err : "(no message)");
    assert_null(err);
    return ctx;
}

/* A plain OpenSSL context presenting the named leaf (NULL: none) and
 * verifying nothing: the broken peer. */
static SSL_CTX *bare_ctx(const char *name, bool server)
{
    SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    assert_non_null(c);
    if (name) {
        assert_int_equal(SSL_CTX_use_certificate_file(c, pth(name, ".crt"), SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(c, pth(name, ".key"), SSL_FILETYPE_PEM), 1);
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    return c;
}

struct side {
    SSL *ssl;
    bool done, failed;
    const char *reason;
};

struct conn {
    struct side s, c;
};

static void conn_init(struct conn *k, SSL_CTX *sctx, SSL_CTX *cctx)
{
    memset(k, 0, sizeof(*k));
    k->s.ssl = SSL_new(sctx);
    k->c.ssl = SSL_new(cctx);
    assert_non_null(k->s.ssl);
    assert_non_null(k->c.ssl);
    BIO *bs, *bc;
    assert_int_equal(BIO_new_bio_pair(&bs, 0, &bc, 0), 1);
    SSL_set_bio(k->s.ssl, bs, bs);
    SSL_set_bio(k->c.ssl, bc, bc);
    SSL_set_accept_state(k->s.ssl);
    SSL_set_connect_state(k->c.ssl);
}

static void conn_free(struct conn *k)
{
    SSL_free(k->s.ssl);
    SSL_free(k->c.ssl);
}

/* One non-blocking handshake step; a failure's reason is taken at once,
 * while the error queue still holds it. */
static void step(struct side *sd)
{
    if (sd->done || sd->failed)
        return;
    ERR_clear_error();
    int r = SSL_do_handshake(sd->ssl);
    if (r == 1) {
        sd->done = true;
        return;
    }
    int e = SSL_get_error(sd->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
    sd->failed = true;
    sd->reason = tr_tls_failure_reason(sd->ssl);
}

static void handshake(struct conn *k)
{
    for (int i = 0; i < 20; i++) {
        step(&k->c);
        step(&k->s);
        if ((k->c.done || k->c.failed) && (k->s.done || k->s.failed))
            return;
    }
    fail_msg("handshake did not finish");
}

/* After the server rejected a client that already finished (TLS 1.3: client
 * certificates are checked after the client's Finished): what the client
 * learns from the alert on its next read. */
static const char *client_read_reason(struct conn *k)
{
    char buf[16];
    ERR_clear_error();
    int r = SSL_read(k->c.ssl, buf, sizeof(buf));
    assert_true(r <= 0);
    return tr_tls_failure_reason(k->c.ssl);
}

static void exchange(struct conn *k)
{
    char buf[16];
    assert_int_equal(SSL_write(k->c.ssl, "ping", 4), 4);
    assert_int_equal(SSL_read(k->s.ssl, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(SSL_write(k->s.ssl, "pong", 4), 4);
    assert_int_equal(SSL_read(k->c.ssl, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "pong", 4);
}

static void assert_peer(SSL *ssl, const char *want)
{
    char id[TR_SPIFFE_ID_MAX + 1];
    int n = tr_identity_peer_id(ssl, id, sizeof(id));
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(id, want);
}

/* Server from a tr_tls_ctx, client bare with the named leaf: the server's
 * rejection reason. */
static const char *server_rejects(struct tr_tls_ctx *srv, const char *client_leaf)
{
    SSL_CTX *bare = bare_ctx(client_leaf, false);
    struct conn k;
    conn_init(&k, tr_tls_ctx_server(srv), bare);
    handshake(&k);
    assert_true(k.s.failed);
    assert_false(k.s.done);
    /* The rejected client never gets a verified identity out of it. */
    char id[TR_SPIFFE_ID_MAX + 1];
    assert_int_equal(tr_identity_peer_id(k.s.ssl, id, sizeof(id)), -1);
    const char *r = k.s.reason;
    conn_free(&k);
    SSL_CTX_free(bare);
    return r;
}

/* Server bare with the named leaf, client from a tr_tls_ctx. */
static const char *client_rejects(struct tr_tls_ctx *cli, const char *server_leaf)
{
    SSL_CTX *bare = bare_ctx(server_leaf, true);
    struct conn k;
    conn_init(&k, bare, tr_tls_ctx_client(cli));
    handshake(&k);
    assert_true(k.c.failed);
    const char *r = k.c.reason;
    conn_free(&k);
    SSL_CTX_free(bare);
    return r;
}

/* ---- tests ---- */

static void test_mutual_tls_ok(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, 0);
    struct tr_tls_ctx *cli = load_leaf("client", TD, 0);
    assert_string_equal(tr_tls_ctx_own_id(srv), ID_SERVER);
    assert_string_equal(tr_tls_ctx_own_id(cli), ID_CLIENT);
    time_t na = tr_tls_ctx_not_after(srv), now = time(NULL);
    assert_true(na > now + DAY - 120 && na <= now + DAY + 5);

    struct conn k;
    conn_init(&k, tr_tls_ctx_server(srv), tr_tls_ctx_client(cli));
    assert_int_equal(tr_tls_client_setup(k.c.ssl, "server.example.org", NULL, 0), 0);
    handshake(&k);
    assert_true(k.s.done && k.c.done);
    assert_int_equal(SSL_version(k.s.ssl), TLS1_3_VERSION); /* the default */
    assert_string_equal(SSL_get_servername(k.s.ssl, TLSEXT_NAMETYPE_host_name),
                        "server.example.org");
    assert_peer(k.s.ssl, ID_CLIENT);
    assert_peer(k.c.ssl, ID_SERVER);
    exchange(&k);

    /* A buffer too small for the ID is refused, not truncated. */
    char small[8];
    assert_int_equal(tr_identity_peer_id(k.s.ssl, small, sizeof(small)), -1);
    /* The SSL mode the proxy relies on. */
    long mode = SSL_get_mode(k.s.ssl);
    assert_true(mode & SSL_MODE_ENABLE_PARTIAL_WRITE);
    assert_true(mode & SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    assert_false(mode & SSL_MODE_RELEASE_BUFFERS);
    assert_int_equal(SSL_get_read_ahead(k.s.ssl), 1);
    assert_true(SSL_get_options(k.s.ssl) & SSL_OP_NO_RENEGOTIATION);
    conn_free(&k);
    tr_tls_ctx_unref(srv);
    tr_tls_ctx_unref(cli);
}

static void test_unknown_ca(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, 0);
    struct tr_tls_ctx *cli = load_leaf("client", TD, 0);
    assert_string_equal(server_rejects(srv, "foreign"), "unknown_ca");
    /* Same issuer name as our CA, different key. */
    assert_string_equal(server_rejects(srv, "impostor"), "unknown_ca");
    assert_string_equal(client_rejects(cli, "foreign"), "unknown_ca");

    /* The rejected client hears it as an unknown_ca alert. */
    SSL_CTX *bare = bare_ctx("foreign", false);
    struct conn k;
    conn_init(&k, tr_tls_ctx_server(srv), bare);
    handshake(&k);
    assert_true(k.s.failed && k.c.done);
    assert_string_equal(client_read_reason(&k), "unknown_ca");
    conn_free(&k);
    SSL_CTX_free(bare);
    tr_tls_ctx_unref(srv);
    tr_tls_ctx_unref(cli);
}

/* Taking the reason empties the thread's error queue: a worker's next
 * connection must not see this one's errors (transport/tls.c). */
static void test_failure_reason_empties_queue(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, 0);
    SSL_CTX *bare = bare_ctx("foreign", false);
    struct conn k;
    conn_init(&k, tr_tls_ctx_server(srv), bare);
    for (int i = 0; i < 20 && !k.s.failed; i++) {
        ERR_clear_error();
        int r = SSL_do_handshake(k.c.ssl);
        assert_true(r == 1 || SSL_get_error(k.c.ssl, r) == SSL_ERROR_WANT_READ);
        ERR_clear_error();
        r = SSL_do_handshake(k.s.ssl);
        if (r != 1 && SSL_get_error(k.s.ssl, r) == SSL_ERROR_SSL) {
            assert_int_not_equal(ERR_peek_error(), 0); /* the reason is queued */
            assert_string_equal(tr_tls_failure_reason(k.s.ssl), "unknown_ca");
            assert_int_equal(ERR_peek_error(), 0);
            k.s.failed = true;
        }
    }
    assert_true(k.s.failed);
    conn_free(&k);
    SSL_CTX_free(bare);
    tr_tls_ctx_unref(srv);
}

static void test_validity(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, 0);
    struct tr_tls_ctx *cli = load_leaf("client", TD, 0);
    assert_string_equal(server_rejects(srv, "expired"), "expired");
    assert_string_equal(server_rejects(srv, "future"), "not_yet_valid");
    assert_string_equal(client_rejects(cli, "expired"), "expired");
    tr_tls_ctx_unref(srv);
    tr_tls_ctx_unref(cli);
}

static void test_spiffe_checks(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, 0);
    struct tr_tls_ctx *cli = load_leaf("client", TD, 0);
    assert_string_equal(server_rejects(srv, "nospiffe"), "no_spiffe_id");
    assert_string_equal(server_rejects(srv, "httpuri"), "no_spiffe_id");
    assert_string_equal(server_rejects(srv, "twouri"), "bad_spiffe_id");
    assert_string_equal(server_rejects(srv, "badid"), "bad_spiffe_id");
    assert_string_equal(server_rejects(srv, NULL), "no_peer_cert");
    assert_string_equal(client_rejects(cli, "nospiffe"), "no_spiffe_id");
    assert_string_equal(client_rejects(cli, "twouri"), "bad_spiffe_id");
    tr_tls_ctx_unref(srv);
    tr_tls_ctx_unref(cli);
}

static void test_wrong_trust_domain(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, 0);
    struct tr_tls_ctx *cli = load_leaf("client", TD, 0);
    assert_string_equal(server_rejects(srv, "othertd"), "wrong_trust_domain");
    assert_string_equal(client_rejects(cli, "othertd"), "wrong_trust_domain");

    /* Without a configured trust domain, any ID the bundle vouches for. */
    struct tr_tls_ctx *any = load_leaf("server", NULL, 0);
    SSL_CTX *bare = bare_ctx("othertd", false);
    struct conn k;
    conn_init(&k, tr_tls_ctx_server(any), bare);
    handshake(&k);
    assert_true(k.s.done && k.c.done);
    assert_peer(k.s.ssl, "spiffe://other.org/ns/default/sa/client");
    conn_free(&k);
    SSL_CTX_free(bare);
    tr_tls_ctx_unref(any);
    tr_tls_ctx_unref(srv);
    tr_tls_ctx_unref(cli);
}

static void test_server_ids(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, 0);
    struct tr_tls_ctx *cli = load_leaf("client", TD, 0);

    /* Not an allowed ID: the client aborts inside the handshake, so the
     * request it wanted to send never leaves it. */
    const char *const wrong[] = {ID_OTHER};
    struct conn k;
    conn_init(&k, tr_tls_ctx_server(srv), tr_tls_ctx_client(cli));
    assert_int_equal(tr_tls_client_setup(k.c.ssl, NULL, wrong, 1), 0);
    int wr = 0;
    for (int i = 0; i < 20 && !k.c.failed; i++) {
        ERR_clear_error();
        wr = SSL_write(k.c.ssl, "secret", 6);
        if (wr <= 0) {
            int e = SSL_get_error(k.c.ssl, wr);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                k.c.failed = true;
                k.c.reason = tr_tls_failure_reason(k.c.ssl);
            }
        }
        step(&k.s);
    }
    assert_true(k.c.failed);
    assert_true(wr <= 0);
    assert_string_equal(k.c.reason, "wrong_spiffe_id");
    char buf[16];
    for (int i = 0; i < 3; i++) {
        ERR_clear_error();
        assert_true(SSL_read(k.s.ssl, buf, sizeof(buf)) <= 0);
    }
    assert_int_equal(SSL_pending(k.s.ssl), 0);
    conn_free(&k);

    /* An allowed ID among several passes. */
    const char *const ok[] = {ID_OTHER, ID_SERVER};
    conn_init(&k, tr_tls_ctx_server(srv), tr_tls_ctx_client(cli));
    assert_int_equal(tr_tls_client_setup(k.c.ssl, NULL, ok, 2), 0);
    handshake(&k);
    assert_true(k.s.done && k.c.done);
    exchange(&k);
    /* SSL_dup copies the allowed list (its own block, freed separately). */
    SSL *dup = SSL_dup(k.c.ssl);
    assert_non_null(dup);
    SSL_free(dup);
    conn_free(&k);

    tr_tls_ctx_unref(srv);
    tr_tls_ctx_unref(cli);
}

static void test_plaintext_is_protocol_error(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, 0);
    static const char *const inputs[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "hello there, this is not TLS at all\n",
    };
    for (size_t i = 0; i < 3; i++) {
        SSL *s = SSL_new(tr_tls_ctx_server(srv));
        BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
        BIO_write(in, inputs[i], (int)strlen(inputs[i]));
        SSL_set_bio(s, in, out);
        SSL_set_accept_state(s);
        ERR_clear_error();
        int r = SSL_do_handshake(s);
        assert_true(r <= 0);
        assert_int_equal(SSL_get_error(s, r), SSL_ERROR_SSL);
        assert_string_equal(tr_tls_failure_reason(s), "protocol");
        SSL_free(s);
    }
    ERR_clear_error();
    assert_string_equal(tr_tls_failure_reason(NULL), "other");
    tr_tls_ctx_unref(srv);
}

static void test_tls12(void **state)
{
    struct tr_tls_ctx *srv13 = load_leaf("server", TD, 0);
    struct tr_tls_ctx *srv12 = load_leaf("server", TD, TLS1_2_VERSION);
    struct tr_tls_ctx *cli = load_leaf("client", TD, TLS1_2_VERSION);

    /* A TLS 1.2-only client against the default (1.3 only) server. */
    struct conn k;
    conn_init(&k, tr_tls_ctx_server(srv13), tr_tls_ctx_client(cli));
    SSL_set_max_proto_version(k.c.ssl, TLS1_2_VERSION);
    handshake(&k);
    assert_true(k.s.failed);
    assert_string_equal(k.s.reason, "protocol");
    conn_free(&k);

    /* Allowed when configured; identities are checked the same way. */
    conn_init(&k, tr_tls_ctx_server(srv12), tr_tls_ctx_client(cli));
    SSL_set_max_proto_version(k.c.ssl, TLS1_2_VERSION);
    handshake(&k);
    assert_true(k.s.done && k.c.done);
    assert_int_equal(SSL_version(k.s.ssl), TLS1_2_VERSION);
    assert_peer(k.s.ssl, ID_CLIENT);
    assert_peer(k.c.ssl, ID_SERVER);
    exchange(&k);
    conn_free(&k);

    /* Still 1.3 when both can. */
    conn_init(&k, tr_tls_ctx_server(srv12), tr_tls_ctx_client(cli));
    handshake(&k);
    assert_int_equal(SSL_version(k.s.ssl), TLS1_3_VERSION);
    conn_free(&k);

    /* An identity failure under TLS 1.2 (server checks before finishing). */
    SSL_CTX *bare = bare_ctx("othertd", false);
    SSL_CTX_set_max_proto_version(bare, TLS1_2_VERSION);
    conn_init(&k, tr_tls_ctx_server(srv12), bare);
    handshake(&k);
    assert_true(k.s.failed && k.c.failed);
    assert_string_equal(k.s.reason, "wrong_trust_domain");
    conn_free(&k);
    SSL_CTX_free(bare);

    tr_tls_ctx_unref(srv13);
    tr_tls_ctx_unref(srv12);
    tr_tls_ctx_unref(cli);
}

static void resumption_round(struct tr_tls_ctx *srv, struct tr_tls_ctx *cli, int max_version)
{
    struct tr_tls_session_slot slot;
    tr_tls_session_slot_init(&slot);

    struct conn k;
    conn_init(&k, tr_tls_ctx_server(srv), tr_tls_ctx_client(cli));
    if (max_version)
        SSL_set_max_proto_version(k.c.ssl, max_version);
    assert_int_equal(tr_tls_client_setup(k.c.ssl, NULL, NULL, 0), 0);
    assert_int_equal(tr_tls_session_resume(k.c.ssl, &slot), 0); /* nothing stored yet */
    handshake(&k);
    assert_true(k.s.done && k.c.done);
    assert_false(SSL_session_reused(k.c.ssl));
    exchange(&k); /* TLS 1.3 tickets are read with the first data */
    assert_non_null(slot.sess);
    conn_free(&k);

    conn_init(&k, tr_tls_ctx_server(srv), tr_tls_ctx_client(cli));
    if (max_version)
        SSL_set_max_proto_version(k.c.ssl, max_version);
    const char *const ids[] = {ID_SERVER};
    assert_int_equal(tr_tls_client_setup(k.c.ssl, NULL, ids, 1), 0);
    assert_int_equal(tr_tls_session_resume(k.c.ssl, &slot), 1);
    handshake(&k);
    assert_true(k.s.done && k.c.done);
    assert_true(SSL_session_reused(k.c.ssl));
    assert_true(SSL_session_reused(k.s.ssl));
    /* The identities survive resumption (kept in the session). */
    assert_peer(k.s.ssl, ID_CLIENT);
    assert_peer(k.c.ssl, ID_SERVER);
    exchange(&k);
    conn_free(&k);

    /* A session is not offered to a connection whose allowed IDs exclude
     * the server it was made with: resumption skips verification. */
    assert_non_null(slot.sess);
    conn_init(&k, tr_tls_ctx_server(srv), tr_tls_ctx_client(cli));
    const char *const other[] = {ID_OTHER};
    assert_int_equal(tr_tls_client_setup(k.c.ssl, NULL, other, 1), 0);
    assert_int_equal(tr_tls_session_resume(k.c.ssl, &slot), 0);
    tr_tls_session_unbind(k.c.ssl);
    conn_free(&k);

    /* Nor to a client of another (e.g. rotated) context: dropped for good. */
    struct tr_tls_ctx *cli2 = load_leaf("client", TD, 0);
    conn_init(&k, tr_tls_ctx_server(srv), tr_tls_ctx_client(cli2));
    assert_int_equal(tr_tls_session_resume(k.c.ssl, &slot), 0);
    assert_null(slot.sess);
    handshake(&k);
    assert_true(k.c.done && !SSL_session_reused(k.c.ssl));
    conn_free(&k);
    tr_tls_ctx_unref(cli2);

    tr_tls_session_slot_clear(&slot);
}

static void test_session_resumption(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, TLS1_2_VERSION);
    struct tr_tls_ctx *cli = load_leaf("client", TD, TLS1_2_VERSION);
    resumption_round(srv, cli, 0);              /* TLS 1.3 tickets */
    resumption_round(srv, cli, TLS1_2_VERSION); /* TLS 1.2 tickets */
    tr_tls_ctx_unref(srv);
    tr_tls_ctx_unref(cli);
}

static void test_rotation(void **state)
{
    assert_int_equal(tpki_leaf(&pki, "rot", "URI:spiffe://example.org/sa/v1", TPKI_CA, -DAY, DAY),
                     0);
    struct tr_tls_ctx *a = load_leaf("rot", TD, 0);
    assert_string_equal(tr_tls_ctx_own_id(a), "spiffe://example.org/sa/v1");
    assert_false(tr_tls_ctx_files_changed(a));

    /* A connection made with A before the rotation. */
    struct tr_tls_ctx *peer = load_leaf("server", TD, 0);
    struct conn before;
    conn_init(&before, tr_tls_ctx_server(peer), tr_tls_ctx_client(a));
    handshake(&before);
    assert_true(before.s.done && before.c.done);

    assert_int_equal(
        tpki_leaf(&pki, "rot", "URI:spiffe://example.org/sa/v2", TPKI_CA, -DAY, 2 * DAY), 0);
    assert_true(tr_tls_ctx_files_changed(a));
    struct tr_tls_ctx *b = load_leaf("rot", TD, 0);
    assert_false(tr_tls_ctx_files_changed(b));
    assert_true(tr_tls_ctx_files_changed(a));
    assert_string_equal(tr_tls_ctx_own_id(b), "spiffe://example.org/sa/v2");
    assert_true(tr_tls_ctx_not_after(b) > tr_tls_ctx_not_after(a));

    /* A-made and B-made SSLs both work, against each other too. */
    struct conn k;
    conn_init(&k, tr_tls_ctx_server(a), tr_tls_ctx_client(b));
    handshake(&k);
    assert_true(k.s.done && k.c.done);
    assert_peer(k.s.ssl, "spiffe://example.org/sa/v2");
    assert_peer(k.c.ssl, "spiffe://example.org/sa/v1");
    conn_free(&k);
    conn_init(&k, tr_tls_ctx_server(b), tr_tls_ctx_client(a));
    handshake(&k);
    assert_true(k.s.done && k.c.done);
    assert_peer(k.s.ssl, "spiffe://example.org/sa/v1");
    conn_free(&k);

    /* A is retired (last reference gone) while SSLs made from it live on:
     * the pre-rotation connection keeps working, and so does a handshake
     * started from A just before. */
    conn_init(&k, tr_tls_ctx_server(a), tr_tls_ctx_client(b));
    tr_tls_ctx_ref(a);
    tr_tls_ctx_unref(a);
    tr_tls_ctx_unref(a);
    exchange(&before);
    assert_peer(before.s.ssl, "spiffe://example.org/sa/v1");
    handshake(&k);
    assert_true(k.s.done && k.c.done);
    exchange(&k);
    conn_free(&k);
    conn_free(&before);

    /* A missing file is "not yet", not a change. */
    char crt[256];
    tpki_path(&pki, "rot.crt", crt, sizeof(crt));
    assert_int_equal(unlink(crt), 0);
    assert_false(tr_tls_ctx_files_changed(b));

    tr_tls_ctx_unref(b);
    tr_tls_ctx_unref(peer);
}

static void assert_load_fails(const char *crt, const char *key, const char *ca, const char *td,
                              uint16_t minv, const char *want)
{
    char *err = NULL;
    struct tr_tls_ctx *ctx = load_files(crt, key, ca, td, minv, &err);
    assert_null(ctx);
    assert_non_null(err);
    if (strncmp(err, "cfg.yaml:3:5: tls[0]: ", 22) != 0 || strstr(err, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
    free(err);
}

static void test_load_errors(void **state)
{
    char ca[256];
    tpki_path(&pki, "ca.pem", ca, sizeof(ca));
    assert_load_fails(pth("missing", ".crt"), pth("client", ".key"), ca, TD, 0,
                      "No such file or directory");
    assert_load_fails(pth("client", ".crt"), pth("missing", ".key"), ca, TD, 0, "key_file");
    assert_load_fails(pth("client", ".crt"), pth("client", ".key"), pth("missing", ".pem"), TD, 0,
                      "ca_file");
    assert_load_fails(pth("client", ".crt"), pth("server", ".key"), ca, TD, 0,
                      "does not match the certificate");
    assert_load_fails(pth("nospiffe", ".crt"), pth("nospiffe", ".key"), ca, TD, 0,
                      "not a valid X.509-SVID (no_spiffe_id)");
    assert_load_fails(pth("twouri", ".crt"), pth("twouri", ".key"), ca, TD, 0, "bad_spiffe_id");
    assert_load_fails(pth("foreign", ".crt"), pth("foreign", ".key"), ca, TD, 0,
                      "does not verify against ca_file");
    assert_load_fails(pth("client", ".crt"), pth("client", ".key"), ca, TD, 0x0301, "min_version");
    assert_load_fails(pth("client", ".crt"), pth("client", ".key"), ca, "Example.org", 0,
                      "trust_domain");
    /* A key file where the certificate should be. */
    assert_load_fails(pth("client", ".key"), pth("client", ".key"), ca, TD, 0,
                      "no valid PEM certificate");
    assert_load_fails(pth("client", ".crt"), pth("client", ".key"), pth("client", ".key"), TD, 0,
                      "ca_file");
    struct tr_tls_cfg cfg = {.loc = {.file = "cfg.yaml", .line = 3, .col = 5, .path = "tls[0]"}};
    char *err = NULL;
    assert_null(tr_tls_ctx_load(&cfg, &err));
    assert_string_equal(err, "cfg.yaml:3:5: tls[0]: cert_file: not set");
    free(err);
    /* Loading leaves nothing on the thread's error queue. */
    assert_int_equal(ERR_peek_error(), 0);

    /* An expired own certificate loads (with a warning): rotation may be late. */
    struct tr_tls_ctx *old = load_leaf("expired", TD, 0);
    assert_true(tr_tls_ctx_not_after(old) < time(NULL));
    tr_tls_ctx_unref(old);
}

static void test_alpn(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, 0);
    struct tr_tls_ctx *cli = load_leaf("client", TD, 0);
    static const unsigned char protos[] = "\x02h2\x08http/1.1";
    assert_int_equal(tr_tls_ctx_set_alpn(srv, protos, sizeof(protos) - 1), 0);
    assert_int_equal(tr_tls_ctx_set_alpn(cli, protos, sizeof(protos) - 1), 0);
    assert_int_equal(tr_tls_ctx_set_alpn(cli, (const unsigned char *)"\x05h2", 3), -1);
    assert_int_equal(tr_tls_ctx_set_alpn(cli, (const unsigned char *)"\x00", 1), -1);

    const unsigned char *sel;
    unsigned sel_len;
    struct conn k;
    conn_init(&k, tr_tls_ctx_server(srv), tr_tls_ctx_client(cli));
    handshake(&k);
    SSL_get0_alpn_selected(k.c.ssl, &sel, &sel_len);
    assert_int_equal(sel_len, 2);
    assert_memory_equal(sel, "h2", 2);
    conn_free(&k);

    /* Client offers only http/1.1. */
    conn_init(&k, tr_tls_ctx_server(srv), tr_tls_ctx_client(cli));
    SSL_set_alpn_protos(k.c.ssl, (const unsigned char *)"\x08http/1.1", 9);
    handshake(&k);
    SSL_get0_alpn_selected(k.s.ssl, &sel, &sel_len);
    assert_int_equal(sel_len, 8);
    assert_memory_equal(sel, "http/1.1", 8);
    conn_free(&k);

    /* No overlap: the connection proceeds without ALPN. */
    conn_init(&k, tr_tls_ctx_server(srv), tr_tls_ctx_client(cli));
    SSL_set_alpn_protos(k.c.ssl, (const unsigned char *)"\x06spdy/3", 7);
    handshake(&k);
    assert_true(k.s.done && k.c.done);
    SSL_get0_alpn_selected(k.s.ssl, &sel, &sel_len);
    assert_int_equal(sel_len, 0);
    conn_free(&k);
    tr_tls_ctx_unref(srv);
    tr_tls_ctx_unref(cli);
}

/* Worker threads share one context, each with its own connections. */
struct thread_arg {
    struct tr_tls_ctx *srv, *cli;
    int ok;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    for (int i = 0; i < 10; i++) {
        tr_tls_ctx_ref(a->srv);
        SSL *s = SSL_new(tr_tls_ctx_server(a->srv));
        SSL *c = SSL_new(tr_tls_ctx_client(a->cli));
        BIO *bs, *bc;
        if (!s || !c || BIO_new_bio_pair(&bs, 0, &bc, 0) != 1) {
            SSL_free(s);
            SSL_free(c);
            tr_tls_ctx_unref(a->srv);
            continue;
        }
        SSL_set_bio(s, bs, bs);
        SSL_set_bio(c, bc, bc);
        SSL_set_accept_state(s);
        SSL_set_connect_state(c);
        int sd = 0, cd = 0;
        for (int j = 0; j < 20 && !(sd == 1 && cd == 1); j++) {
            if (cd != 1)
                cd = SSL_do_handshake(c);
            if (sd != 1)
                sd = SSL_do_handshake(s);
        }
        char id[TR_SPIFFE_ID_MAX + 1];
        if (sd == 1 && cd == 1 && tr_identity_peer_id(s, id, sizeof(id)) > 0 &&
            strcmp(id, ID_CLIENT) == 0)
            a->ok++;
        SSL_free(s);
        SSL_free(c);
        tr_tls_ctx_unref(a->srv);
    }
    ERR_clear_error();
    return NULL;
}

static void test_threads_share_context(void **state)
{
    struct tr_tls_ctx *srv = load_leaf("server", TD, 0);
    struct tr_tls_ctx *cli = load_leaf("client", TD, 0);
    struct thread_arg args[2] = {{srv, cli, 0}, {srv, cli, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, &args[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(args[0].ok, 10);
    assert_int_equal(args[1].ok, 10);
    tr_tls_ctx_unref(srv);
    tr_tls_ctx_unref(cli);
}

/* ---- contexts that are not mesh contexts ---- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[4][16384];
    static unsigned next;
    char *b = buf[next++ % 4];
    size_t n = fread(b, 1, sizeof(buf[0]) - 1, f);
    fclose(f);
    b[n] = '\0';
    return b;
}

/* A server or client context; cert, key, ca: leaf names / "ca" read from
 * files, or inline PEM when inline is set (NULL: none). */
static struct tr_tls_ctx *load_kind(enum tr_tls_kind kind, const char *leaf, const char *ca,
                                    bool inline_pem, char **err)
{
    struct tr_tls_cfg cfg = {
        .name = "k",
        .kind = kind,
        .session_resumption = true,
        .loc = {.file = "cfg.yaml", .line = 3, .col = 5, .path = "tls[0]"},
    };
    char cap[256];
    if (ca != NULL)
        tpki_path(&pki, ca, cap, sizeof(cap));
    if (inline_pem) {
        cfg.cert_pem = leaf ? slurp(pth(leaf, ".crt")) : NULL;
        cfg.key_pem = leaf ? slurp(pth(leaf, ".key")) : NULL;
        cfg.ca_pem = ca ? slurp(cap) : NULL;
    } else {
        cfg.cert_file = leaf ? pth(leaf, ".crt") : NULL;
        cfg.key_file = leaf ? pth(leaf, ".key") : NULL;
        cfg.ca_file = ca ? cap : NULL;
    }
    return tr_tls_ctx_load(&cfg, err);
}

/* A client context against a bare server presenting leaf: NULL if the
 * handshake succeeds, else the client's reason. */
static const char *client_kind_result(struct tr_tls_ctx *cli, const char *leaf, const char *sni,
                                      const char *const *names, size_t n, bool insecure)
{
    SSL_CTX *bare = bare_ctx(leaf, true);
    struct conn k;
    conn_init(&k, bare, tr_tls_ctx_client(cli));
    if (insecure)
        tr_tls_client_insecure(k.c.ssl);
    assert_int_equal(tr_tls_client_setup(k.c.ssl, sni, names, n), 0);
    handshake(&k);
    const char *r = k.c.done ? NULL : k.c.reason;
    if (k.c.done && !insecure)
        assert_int_equal(SSL_get_verify_result(k.c.ssl), X509_V_OK);
    conn_free(&k);
    SSL_CTX_free(bare);
    return r;
}

static void test_client_context(void **state)
{
    char *err = NULL;
    /* CA only, inline: no certificate of its own. */
    struct tr_tls_ctx *cli = load_kind(TR_TLSK_CLIENT, NULL, "ca.pem", true, &err);
    assert_null(err);
    assert_non_null(cli);
    assert_null(tr_tls_ctx_server(cli));
    assert_null(tr_tls_ctx_own_id(cli));
    const char *dns[] = {"SERVER.example.org"}, *uri[] = {ID_SERVER};
    const char *wrong[] = {"other.example.org", "spiffe://example.org/ns/default/sa/x"};
    const char *wild[] = {"a.wild.example.org"};
    assert_null(client_kind_result(cli, "server", "server.example.org", dns, 1, false));
    assert_null(client_kind_result(cli, "server", NULL, uri, 1, false));
    assert_string_equal(client_kind_result(cli, "server", NULL, wrong, 2, false), "wrong_san");
    assert_string_equal(client_kind_result(cli, "server", NULL, wild, 1, false), "wrong_san");
    /* A chain from another CA; insecure_skip_verify takes it. */
    assert_string_equal(client_kind_result(cli, "foreign", NULL, dns, 1, false), "unknown_ca");
    assert_null(client_kind_result(cli, "foreign", NULL, NULL, 0, true));
    /* A leaf without any SAN never matches a name. */
    assert_string_equal(client_kind_result(cli, "nospiffe", NULL, uri, 1, false), "wrong_san");
    tr_tls_ctx_unref(cli);

    /* No CA: the system's trust store, which knows nothing of the test CA. */
    cli = load_kind(TR_TLSK_CLIENT, NULL, NULL, false, &err);
    assert_null(err);
    assert_string_equal(client_kind_result(cli, "server", NULL, dns, 1, false), "unknown_ca");
    tr_tls_ctx_unref(cli);

    /* With a certificate: both cert and key; a mismatch is refused. */
    struct tr_tls_cfg bad = {.kind = TR_TLSK_CLIENT,
                             .cert_file = pth("client", ".crt"),
                             .key_file = pth("server", ".key"),
                             .ca_pem =
                                 "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                             .loc = {.file = "cfg.yaml", .line = 3, .col = 5, .path = "tls[0]"}};
    assert_null(tr_tls_ctx_load(&bad, &err));
    assert_non_null(strstr(err, "does not match the certificate in cert_file"));
    free(err);
    err = NULL;
    bad.key_file = pth("client", ".key");
    assert_null(tr_tls_ctx_load(&bad, &err));
    assert_non_null(strstr(err, "cfg.yaml:3:5: tls[0]: ca_pem: no valid PEM certificate"));
    free(err);
    assert_int_equal(ERR_peek_error(), 0);
}

/* Which certificate a TERMINATE listener's table serves for an SNI: the
 * leaf's first DNS SAN, or the reason the handshake failed. */
static const char *served_for(const struct tr_tls_sni_table *t, const char *sni,
                              const char *client_leaf, char *out, size_t size)
{
    SSL_CTX *bare = bare_ctx(client_leaf, false);
    struct conn k;
    conn_init(&k, tr_tls_ctx_server(t->choices[0].ctx), bare);
    tr_tls_server_select(k.s.ssl, t);
    if (sni != NULL)
        assert_int_equal(SSL_set_tlsext_host_name(k.c.ssl, sni), 1);
    handshake(&k);
    const char *r = k.s.reason;
    if (k.s.done && k.c.done) {
        X509 *peer = SSL_get1_peer_certificate(k.c.ssl);
        assert_non_null(peer);
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, out, (int)size);
        X509_free(peer);
        r = out;
    } else if (r == NULL) {
        r = client_read_reason(&k);
    }
    conn_free(&k);
    SSL_CTX_free(bare);
    return r;
}

static void test_server_contexts_by_sni(void **state)
{
    char *err = NULL;
    struct tr_tls_ctx *a = load_kind(TR_TLSK_SERVER, "server", NULL, false, &err);
    assert_null(err);
    struct tr_tls_ctx *b = load_kind(TR_TLSK_SERVER, "other", "ca.pem", true, &err);
    assert_null(err);
    assert_null(tr_tls_ctx_client(a));
    /* No SPIFFE checks on a server context's certificate: nospiffe loads. */
    struct tr_tls_ctx *c = load_kind(TR_TLSK_SERVER, "nospiffe", NULL, false, &err);
    assert_null(err);
    static const unsigned char alpn[] = "\x02h2\x08http/1.1";
    assert_int_equal(tr_tls_ctx_set_alpn(a, alpn, sizeof(alpn) - 1), 0);

    const char *a_names[] = {"a.example.org"}, *b_names[] = {"*.b.example.org"};
    struct tr_tls_sni_choice ch[] = {{a, a_names, 1}, {b, b_names, 1}, {c, NULL, 0}};
    struct tr_tls_sni_table t = {ch, 3};
    char cn[64];
    assert_string_equal(served_for(&t, "a.example.org", NULL, cn, sizeof(cn)), "server");
    assert_string_equal(served_for(&t, "A.EXAMPLE.ORG", NULL, cn, sizeof(cn)), "server");
    assert_string_equal(served_for(&t, "x.y.b.example.org", "client", cn, sizeof(cn)), "other");
    assert_string_equal(served_for(&t, "b.example.org", NULL, cn, sizeof(cn)), "nospiffe");
    assert_string_equal(served_for(&t, NULL, NULL, cn, sizeof(cn)), "nospiffe");
    /* b has a ca: a client certificate is required and must verify. */
    assert_string_equal(served_for(&t, "x.b.example.org", NULL, cn, sizeof(cn)), "no_peer_cert");
    assert_string_equal(served_for(&t, "x.b.example.org", "foreign", cn, sizeof(cn)), "unknown_ca");
    /* No context without names: an unknown name is refused. */
    struct tr_tls_sni_table t2 = {ch, 2};
    assert_string_equal(served_for(&t2, "c.example.org", NULL, cn, sizeof(cn)), "unknown_sni");
    assert_string_equal(served_for(&t2, NULL, NULL, cn, sizeof(cn)), "unknown_sni");
    tr_tls_ctx_unref(a);
    tr_tls_ctx_unref(b);
    tr_tls_ctx_unref(c);
}

static void test_sni_parse(void **state)
{
    const char *name;
    size_t len;
    static const unsigned char ok[] = {0, 8, 0, 0, 5, 'a', '.', 'o', 'r', 'g'};
    assert_int_equal(tr_tls_sni_parse(ok, sizeof(ok), &name, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(name, "a.org", 5);
    /* Another name type is skipped. */
    static const unsigned char other[] = {0, 4, 1, 0, 1, 'x'};
    assert_int_equal(tr_tls_sni_parse(other, sizeof(other), &name, &len), 0);
    assert_null(name);
    static const unsigned char two[] = {0, 8, 0, 0, 1, 'a', 0, 0, 1, 'b'};
    static const unsigned char short_list[] = {0, 9, 0, 0, 5, 'a', '.', 'o', 'r', 'g'};
    static const unsigned char long_name[] = {0, 8, 0, 0, 6, 'a', '.', 'o', 'r', 'g'};
    static const unsigned char empty_name[] = {0, 3, 0, 0, 0};
    static const unsigned char nul[] = {0, 4, 0, 0, 1, 0};
    static const unsigned char empty_list[] = {0, 0};
    static const unsigned char cut[] = {0, 2, 0, 0};
    assert_int_equal(tr_tls_sni_parse(two, sizeof(two), &name, &len), -1);
    assert_int_equal(tr_tls_sni_parse(short_list, sizeof(short_list), &name, &len), -1);
    assert_int_equal(tr_tls_sni_parse(long_name, sizeof(long_name), &name, &len), -1);
    assert_int_equal(tr_tls_sni_parse(empty_name, sizeof(empty_name), &name, &len), -1);
    assert_int_equal(tr_tls_sni_parse(nul, sizeof(nul), &name, &len), -1);
    assert_int_equal(tr_tls_sni_parse(empty_list, sizeof(empty_list), &name, &len), -1);
    assert_int_equal(tr_tls_sni_parse(cut, sizeof(cut), &name, &len), -1);
    assert_int_equal(tr_tls_sni_parse(ok, 1, &name, &len), -1);
    /* 256 bytes: longer than a host name may be. */
    unsigned char big[2 + 3 + 256];
    memset(big, 'a', sizeof(big));
    big[0] = 1, big[1] = 3, big[2] = 0, big[3] = 1, big[4] = 0;
    assert_int_equal(tr_tls_sni_parse(big, sizeof(big), &name, &len), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutual_tls_ok),
        cmocka_unit_test(test_unknown_ca),
        cmocka_unit_test(test_failure_reason_empties_queue),
        cmocka_unit_test(test_validity),
        cmocka_unit_test(test_spiffe_checks),
        cmocka_unit_test(test_wrong_trust_domain),
        cmocka_unit_test(test_server_ids),
        cmocka_unit_test(test_plaintext_is_protocol_error),
        cmocka_unit_test(test_tls12),
        cmocka_unit_test(test_session_resumption),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_threads_share_context),
        cmocka_unit_test(test_client_context),
        cmocka_unit_test(test_server_contexts_by_sni),
        cmocka_unit_test(test_sni_parse),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
