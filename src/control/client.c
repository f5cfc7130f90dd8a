/* control/client.c: the proxy's control-plane client (see client.h). */
#include "control/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"
#include "control/link.h"
#include "control/protocol.h"
#include "core/log.h"
#include "listener/capture.h"
#include "net/sock.h"

#define BACKOFF_FIRST_MS 200u
#define BACKOFF_MAX_MS   10000u
#define MAX_CERT_BODY    (256u * 1024)
#define CONTROL_SA_PATH  "/ns/trellis-system/sa/trellis-control"

struct tr_control_client {
    struct tr_loop *loop;
    const struct tr_control_client_ops *ops;
    void *arg;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char *address, *workload, *admin, *capture, *outbound_ip, *app_ip, *admin_socket;
    char token[TR_CA_TOKEN_HEX + 1];
    char *bundle; /* PEM: the file's, then what the control plane pushes */
    /* Our identity: key and chain as PEM (key wiped on replace). */
    char *key_pem, *chain_pem;
    time_t not_after;
    EVP_PKEY *pending_key; /* the key of the CSR in flight */
    struct tr_link *link;
    bool link_has_cert;
    bool link_bound; /* a bootstrap link the control plane bound to our identity */
    int32_t cert_stream, stream_stream;
    struct tr_cp_reader cert_reader, stream_reader;
    int cert_status, stream_status;
    char *got_chain, *got_bundle; /* a certificate answer being read */
    uint64_t renew_in_s;          /* from the answer's trellis-renew-in */
    struct tr_timer retry_timer, renew_timer;
    uint32_t backoff_ms;
    struct tr_control_client_stats stats;
};

static void client_connect(struct tr_control_client *c);

static void wipe_free(char *s)
{
    if (s != NULL)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

static char *read_small_file(const char *path, size_t max, char **err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (asprintf(err, "%s: %s", path, strerror(errno)) < 0)
            *err = NULL;
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n > max) {
        free(buf);
        if (asprintf(err, "%s: larger than %zu bytes", path, max) < 0)
            *err = NULL;
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* ---- TLS ---- */

static X509_STORE *store_from_pem(const char *pem)
{
    X509_STORE *st = X509_STORE_new();
    BIO *b = BIO_new_mem_buf(pem, -1);
    int n = 0;
    X509 *x;
    while (st != NULL && b != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(st, x) == 1)
            n++;
        X509_free(x);
    }
    ERR_clear_error();
    BIO_free(b);
    if (n == 0) {
        X509_STORE_free(st);
        return NULL;
    }
    return st;
}

static SSL_CTX *client_ctx(struct tr_control_client *c, bool with_cert)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    X509_STORE *st = store_from_pem(c->bundle);
    if (ctx == NULL || st == NULL)
        goto fail;
    SSL_CTX_set_cert_store(ctx, st);
    st = NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    static const unsigned char alpn[] = "\x02h2";
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0)
        goto fail;
    if (with_cert) {
        BIO *kb = BIO_new_mem_buf(c->key_pem, -1);
        EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
        BIO_free(kb);
        BIO *cb = BIO_new_mem_buf(c->chain_pem, -1);
        X509 *leaf = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
        bool ok = key != NULL && leaf != NULL && SSL_CTX_use_certificate(ctx, leaf) == 1 &&
                  SSL_CTX_use_PrivateKey(ctx, key) == 1;
        X509 *extra;
        while (ok && cb != NULL && (extra = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL) {
            ok = SSL_CTX_add1_chain_cert(ctx, extra) == 1;
            X509_free(extra);
        }
        ERR_clear_error();
        EVP_PKEY_free(key);
        X509_free(leaf);
        BIO_free(cb);
        if (!ok)
            goto fail;
    }
    return ctx;
fail:
    X509_STORE_free(st);
    SSL_CTX_free(ctx);
    return NULL;
}

/* The control plane must present spiffe://TD/ns/trellis-system/sa/trellis-control
 * (any trust domain: the bundle already says which CA we trust). */
static bool server_id_ok(SSL *ssl)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (peer == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return false;
    GENERAL_NAMES *names = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);
    bool ok = false;
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI)
            continue;
        const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        int len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        size_t tail = strlen(CONTROL_SA_PATH);
        ok = len > 9 + (int)tail && strncmp(u, "spiffe://", 9) == 0 &&
             memcmp(u + len - tail, CONTROL_SA_PATH, tail) == 0 &&
             memchr(u + 9, '/', (size_t)len - 9 - tail) == NULL;
    }
    GENERAL_NAMES_free(names);
    return ok;
}

/* ---- requests ---- */

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        {(n), sizeof(n) - 1},                                                                      \
        {                                                                                          \
            (v), strlen(v)                                                                         \
        }                                                                                          \
    }

static int32_t submit(struct tr_control_client *c, const char *method, const char *path,
                      const char *auth, bool end_stream)
{
    struct tr_h2_header h[6] = {
        HDR(":method", method),
        HDR(":scheme", "https"),
        HDR(":authority", "trellis-control"),
        HDR(":path", path),
        HDR("content-type", "application/x-trellis"),
    };
    size_t n = 5;
    char bearer[TR_CA_TOKEN_HEX + 16];
    if (auth != NULL) {
        snprintf(bearer, sizeof(bearer), "Bearer %s", auth);
        h[n++] = (struct tr_h2_header)HDR("authorization", bearer);
    }
    int32_t id = tr_h2_submit_request(tr_link_h2(c->link), h, n, end_stream);
    tr_link_flush(c->link);
    OPENSSL_cleanse(bearer, sizeof(bearer));
    return id;
}

static void send_message(struct tr_control_client *c, int32_t sid, enum tr_cp_type t,
                         uint64_t version, const char *payload, size_t len)
{
    char hdr[TR_CP_MAX_HEADER];
    size_t hl = tr_cp_header(hdr, t, version, len);
    if (tr_link_send(c->link, sid, hdr, hl, false) == 0)
        tr_link_send(c->link, sid, payload, len, true);
}

/* Tries again after the backoff, with jitter (between half and all of
 * it, so proxies that lost a restarted control plane together do not come
 * back together), and doubles it. */
static void retry_later(struct tr_control_client *c, const char *why)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (uint32_t)time(NULL);
    uint32_t wait = c->backoff_ms / 2 + r % (c->backoff_ms / 2 + 1);
    tr_warn("control %s: %s; retrying in %u ms", c->address, why, wait);
    tr_timer_set(c->loop, &c->retry_timer, wait);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* Closes the link (its memory goes after this loop turn) and forgets every
 * stream of it, whoever closes it. */
static void drop_link(struct tr_control_client *c)
{
    tr_link_close(c->link);
    c->link = NULL;
    c->cert_stream = c->stream_stream = 0;
    c->link_bound = false;
    EVP_PKEY_free(c->pending_key);
    c->pending_key = NULL;
    if (c->stats.connected)
        c->stats.disconnects++;
    c->stats.connected = 0;
}

static void request_certificate(struct tr_control_client *c)
{
    EVP_PKEY_free(c->pending_key);
    c->pending_key = tr_ca_key_new();
    size_t csr_len = 0;
    char *csr = c->pending_key ? tr_ca_csr_new(c->pending_key, &csr_len) : NULL;
    if (csr == NULL) {
        drop_link(c);
        c->backoff_ms = BACKOFF_MAX_MS;
        retry_later(c, "cannot make a key and CSR");
        return;
    }
    tr_cp_reader_free(&c->cert_reader);
    tr_cp_reader_init(&c->cert_reader, MAX_CERT_BODY);
    c->cert_status = 0;
    c->renew_in_s = 0;
    c->cert_stream = submit(c, "POST", TR_CP_PATH_CERT, c->link_has_cert ? NULL : c->token, false);
    if (c->cert_stream > 0)
        send_message(c, c->cert_stream, TR_CP_CERT, 0, csr, csr_len);
    free(csr);
}

static void open_stream(struct tr_control_client *c)
{
    char path[1024];
    const char *keys[] = {"admin", "capture", "outbound_ip", "app_ip", "admin_socket"};
    const char *vals[] = {c->admin, c->capture, c->outbound_ip, c->app_ip, c->admin_socket};
    int n = snprintf(path, sizeof(path), "%s?workload=%s", TR_CP_PATH_STREAM, c->workload);
    for (size_t i = 0; i < 5 && n > 0 && (size_t)n < sizeof(path); i++)
        if (vals[i] != NULL)
            n += snprintf(path + n, sizeof(path) - (size_t)n, "&%s=%s", keys[i], vals[i]);
    if (n <= 0 || (size_t)n >= sizeof(path)) {
        drop_link(c);
        c->backoff_ms = BACKOFF_MAX_MS;
        retry_later(c, "the stream's request does not fit");
        return;
    }
    tr_cp_reader_free(&c->stream_reader);
    tr_cp_reader_init(&c->stream_reader, TR_CP_MAX_PAYLOAD);
    c->stream_status = 0;
    c->stream_stream = submit(c, "GET", path, NULL, true);
}

static void send_ack(struct tr_control_client *c, uint64_t version, const char *nack)
{
    int32_t sid = submit(c, "POST", TR_CP_PATH_ACK, NULL, false);
    if (sid > 0)
        send_message(c, sid, nack ? TR_CP_NACK : TR_CP_ACK, version, nack ? nack : "",
                     nack ? strlen(nack) : 0);
}

/* ---- certificate answers ---- */

static time_t chain_not_after(const char *chain)
{
    BIO *b = BIO_new_mem_buf(chain, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    time_t t = 0;
    if (x != NULL) {
        struct tm tm;
        if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
            t = timegm(&tm);
    }
    X509_free(x);
    BIO_free(b);
    return t;
}

static char *key_to_pem(EVP_PKEY *key)
{
    BIO *b = BIO_new(BIO_s_secmem());
    char *out = NULL;
    if (b != NULL && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        out = n > 0 ? strndup(p, (size_t)n) : NULL;
    }
    BIO_free(b);
    return out;
}

static int on_cert_msg(void *arg, enum tr_cp_type t, uint64_t version, const char *p, size_t len)
{
    struct tr_control_client *c = arg;
    (void)version;
    (void)len;
    char **slot = t == TR_CP_CERT ? &c->got_chain : t == TR_CP_BUNDLE ? &c->got_bundle : NULL;
    if (slot == NULL)
        return 1;
    free(*slot);
    *slot = strdup(p);
    return 0;
}

static void identity_changed(struct tr_control_client *c)
{
    c->ops->on_identity(c->arg, c->chain_pem, c->key_pem, c->bundle, c->not_after);
}

static void schedule_renewal(struct tr_control_client *c)
{
    uint64_t s = c->renew_in_s;
    if (s == 0) { /* no hint: half of what is left */
        time_t now = time(NULL);
        s = c->not_after > now ? (uint64_t)(c->not_after - now) / 2 : 1;
    }
    tr_timer_set(c->loop, &c->renew_timer, s * 1000);
}

static void cert_done(struct tr_control_client *c)
{
    c->cert_stream = 0;
    char *key = c->pending_key ? key_to_pem(c->pending_key) : NULL;
    EVP_PKEY_free(c->pending_key);
    c->pending_key = NULL;
    if (c->cert_status != 200 || c->got_chain == NULL || key == NULL) {
        tr_err("control %s: certificate refused (status %d)", c->address, c->cert_status);
        wipe_free(key);
        drop_link(c);
        if (c->cert_status == 401 && c->chain_pem != NULL) {
            /* A renewal refused (our certificate expired or was not
             * accepted): the next connection authenticates with the token. */
            free(c->chain_pem);
            c->chain_pem = NULL;
            c->not_after = 0;
        }
        c->backoff_ms = BACKOFF_MAX_MS;
        retry_later(c, "no certificate");
        return;
    }
    wipe_free(c->key_pem);
    c->key_pem = key;
    free(c->chain_pem);
    c->chain_pem = c->got_chain;
    c->got_chain = NULL;
    if (c->got_bundle != NULL) {
        X509_STORE *st = store_from_pem(c->got_bundle);
        if (st != NULL) { /* a bundle without a certificate is not adopted */
            free(c->bundle);
            c->bundle = c->got_bundle;
            c->got_bundle = NULL;
        }
        X509_STORE_free(st);
    }
    c->not_after = chain_not_after(c->chain_pem);
    c->stats.certificates++;
    c->stats.cert_not_after = c->not_after;
    tr_info("control %s: certificate issued, valid until %lld", c->address,
            (long long)c->not_after);
    identity_changed(c);
    schedule_renewal(c);
    if (!c->link_has_cert && c->link != NULL && c->stream_stream == 0) {
        /* The control plane binds this connection to the identity it just
         * issued: the stream opens here, and renewals go over it (a
         * refusal, 401 from an older one, sends us to a new connection
         * presenting the certificate). */
        c->link_bound = true;
        open_stream(c);
    }
}

/* ---- stream messages ---- */

static int on_stream_msg(void *arg, enum tr_cp_type t, uint64_t version, const char *p, size_t len)
{
    struct tr_control_client *c = arg;
    if (t == TR_CP_BUNDLE) {
        if (strcmp(p, c->bundle) != 0) {
            X509_STORE *st = store_from_pem(p);
            X509_STORE_free(st);
            if (st == NULL) {
                tr_err("control %s: a trust bundle without a certificate; kept the last one",
                       c->address);
                return 0;
            }
            char *b = strdup(p);
            if (b == NULL)
                return 1;
            free(c->bundle);
            c->bundle = b;
            tr_info("control %s: new trust bundle", c->address);
            identity_changed(c);
        }
        return 0;
    }
    if (t != TR_CP_MODEL)
        return 1;
    c->stats.models++;
    char *err = NULL;
    if (c->ops->on_model(c->arg, version, p, len, &err) == 0) {
        c->stats.acks++;
        c->stats.version = version;
        send_ack(c, version, NULL);
    } else {
        c->stats.nacks++;
        tr_warn("control %s: model version %llu refused: %s", c->address,
                (unsigned long long)version, err ? err : "error");
        send_ack(c, version, err ? err : "refused");
    }
    free(err);
    return 0;
}

/* ---- link callbacks ---- */

static int status_of(const struct tr_h2_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (h[i].name.len == 7 && memcmp(h[i].name.p, ":status", 7) == 0 && h[i].value.len == 3)
            return (h[i].value.p[0] - '0') * 100 + (h[i].value.p[1] - '0') * 10 +
                   (h[i].value.p[2] - '0');
    return 0;
}

static uint64_t renew_in_of(const struct tr_h2_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (h[i].name.len == 16 && memcmp(h[i].name.p, "trellis-renew-in", 16) == 0) {
            uint64_t v = 0;
            for (size_t k = 0; k < h[i].value.len && k < 9; k++) {
                char ch = h[i].value.p[k];
                if (ch < '0' || ch > '9')
                    return 0;
                v = v * 10 + (uint64_t)(ch - '0');
            }
            return v;
        }
    return 0;
}

static void link_ready(void *owner, struct tr_link *l)
{
    struct tr_control_client *c = owner;
    if (!server_id_ok(tr_link_ssl(l))) {
        (void)l;
        drop_link(c);
        retry_later(c, "the server is not trellis-control of our trust bundle");
        return;
    }
    c->stats.connects++;
    if (!c->link_has_cert)
        request_certificate(c);
    else
        open_stream(c);
}

static int link_headers(void *owner, struct tr_link *l, int32_t sid, const struct tr_h2_header *h,
                        size_t n, bool end_stream)
{
    struct tr_control_client *c = owner;
    (void)l;
    (void)end_stream;
    if (sid == c->cert_stream) {
        c->cert_status = status_of(h, n);
        c->renew_in_s = renew_in_of(h, n);
    } else if (sid == c->stream_stream) {
        c->stream_status = status_of(h, n);
        if (c->stream_status == 200) {
            c->stats.connected = 1;
            c->backoff_ms = BACKOFF_FIRST_MS; /* only a stream that opened resets it */
            tr_info("control %s: stream open for %s", c->address, c->workload);
        } else {
            tr_err("control %s: stream refused with status %d", c->address, c->stream_status);
        }
    }
    return 0;
}

static int link_data(void *owner, struct tr_link *l, int32_t sid, const uint8_t *data, size_t len,
                     bool end_stream)
{
    struct tr_control_client *c = owner;
    (void)l;
    (void)end_stream;
    const char *why = NULL;
    if (sid == c->cert_stream && c->cert_status == 200) {
        if (tr_cp_read(&c->cert_reader, data, len, on_cert_msg, c, &why) != 0)
            return 1;
    } else if (sid == c->stream_stream && c->stream_status == 200) {
        if (tr_cp_read(&c->stream_reader, data, len, on_stream_msg, c, &why) != 0) {
            tr_err("control %s: bad message on the stream: %s", c->address, why ? why : "?");
            return 1;
        }
    }
    return 0;
}

static void link_stream_close(void *owner, struct tr_link *l, int32_t sid, uint32_t error)
{
    struct tr_control_client *c = owner;
    (void)l;
    (void)error;
    if (sid == c->cert_stream) {
        cert_done(c);
    } else if (sid == c->stream_stream) {
        /* The control plane ended or refused the stream: start over on a
         * new connection, after the backoff. */
        int status = c->stream_status;
        drop_link(c);
        char why[64];
        snprintf(why, sizeof(why), "stream ended (status %d)", status);
        retry_later(c, why);
    }
}

static void link_closed(void *owner, struct tr_link *l, const char *why)
{
    struct tr_control_client *c = owner;
    (void)l;
    c->link = NULL; /* freed by the link after this: nothing to close */
    if (c->link_has_cert && !c->stats.connected && c->chain_pem != NULL &&
        (strcmp(why, "tls_handshake_failed") == 0 || strcmp(why, "tls_error") == 0)) {
        /* TLS failed before our stream opened on a connection presenting our
         * certificate: the control plane refused it (expired by its clock,
         * or signed by a root it dropped; TLS 1.3 says so after the client's
         * side of the handshake). Bootstrap with the token again. */
        free(c->chain_pem);
        c->chain_pem = NULL;
        c->not_after = 0;
    }
    drop_link(c);
    char msg[96];
    snprintf(msg, sizeof(msg), "connection lost (%s)", why);
    retry_later(c, msg);
}

static const struct tr_link_ops link_ops = {
    .on_ready = link_ready,
    .on_headers = link_headers,
    .on_data = link_data,
    .on_stream_close = link_stream_close,
    .on_closed = link_closed,
};

static void client_connect(struct tr_control_client *c)
{
    bool with_cert = c->chain_pem != NULL && c->not_after > time(NULL);
    SSL_CTX *ctx = client_ctx(c, with_cert);
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    /* A captured workload's rules skip the proxy's mark: without it this
     * connection would be redirected back into the proxy. */
    uint32_t mark = c->capture != NULL ? TR_CAPTURE_PROXY_MARK : 0;
    int fd = ssl ? tr_sock_connect((const struct sockaddr *)&c->addr, c->addr_len, mark) : -1;
    if (fd < 0) {
        SSL_free(ssl);
        tr_warn("control %s: cannot connect: %s", c->address, fd < 0 ? strerror(-fd) : "TLS");
        tr_timer_set(c->loop, &c->retry_timer, c->backoff_ms);
        c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
        return;
    }
    c->link_has_cert = with_cert;
    c->link = tr_link_new(c->loop, fd, ssl, TR_H2_CLIENT, &link_ops, c);
    if (c->link == NULL)
        tr_timer_set(c->loop, &c->retry_timer, BACKOFF_MAX_MS);
}

static void on_retry(struct tr_timer *t)
{
    struct tr_control_client *c = tr_container_of(t, struct tr_control_client, retry_timer);
    if (c->link == NULL)
        client_connect(c);
}

static void on_renew(struct tr_timer *t)
{
    struct tr_control_client *c = tr_container_of(t, struct tr_control_client, renew_timer);
    if (c->link != NULL && tr_link_ready(c->link) && (c->link_has_cert || c->link_bound) &&
        c->cert_stream == 0) {
        request_certificate(c);
        return;
    }
    /* Not connected: try again soon; a reconnect with an expired certificate
     * falls back to the bootstrap token by itself. */
    tr_timer_set(c->loop, &c->renew_timer, 1000);
}

static bool parse_address(struct tr_control_client *c, const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return false;
    char host[64];
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    if (hl >= sizeof(host))
        return false;
    memcpy(host, s, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535)
        return false;
    memset(&c->addr, 0, sizeof(c->addr));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&c->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&c->addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        c->addr_len = sizeof(*v4);
        return true;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        c->addr_len = sizeof(*v6);
        return true;
    }
    return false;
}

/* Query values we send: names, addresses and modes only. */
static bool query_safe(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("-._/:[]", *s) != NULL))
            return false;
    return true;
}

struct tr_control_client *tr_control_client_start(struct tr_loop *loop,
                                                  const struct tr_control_client_options *o,
                                                  const struct tr_control_client_ops *ops,
                                                  void *arg, char **err)
{
    *err = NULL;
    struct tr_control_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->ops = ops;
    c->arg = arg;
    c->backoff_ms = BACKOFF_FIRST_MS;
    tr_timer_init(&c->retry_timer, on_retry);
    tr_timer_init(&c->renew_timer, on_renew);
    tr_cp_reader_init(&c->cert_reader, MAX_CERT_BODY);
    tr_cp_reader_init(&c->stream_reader, TR_CP_MAX_PAYLOAD);
    const char *slash = o->workload ? strchr(o->workload, '/') : NULL;
    if (o->address == NULL || !parse_address(c, o->address)) {
        if (asprintf(err, "--control: '%s' is not IP:PORT", o->address ? o->address : "") < 0)
            *err = NULL;
        goto fail;
    }
    if (slash == NULL || slash == o->workload || slash[1] == '\0' ||
        strchr(slash + 1, '/') != NULL || !query_safe(o->workload) ||
        (o->admin && !query_safe(o->admin)) || (o->capture && !query_safe(o->capture)) ||
        (o->outbound_ip && !query_safe(o->outbound_ip)) || (o->app_ip && !query_safe(o->app_ip)) ||
        (o->admin_socket && (o->admin_socket[0] != '/' || !query_safe(o->admin_socket)))) {
        *err = strdup("--workload takes NAMESPACE/NAME, --admin an address, --admin-socket an "
                      "absolute path");
        goto fail;
    }
    char *tok = read_small_file(o->token_file, 256, err);
    if (tok == NULL)
        goto fail;
    size_t tl = strcspn(tok, "\r\n");
    if (tl != TR_CA_TOKEN_HEX) {
        wipe_free(tok);
        if (asprintf(err, "%s: not a bootstrap token (%d hex digits)", o->token_file,
                     TR_CA_TOKEN_HEX) < 0)
            *err = NULL;
        goto fail;
    }
    memcpy(c->token, tok, TR_CA_TOKEN_HEX);
    wipe_free(tok);
    c->bundle = read_small_file(o->ca_file, 1024 * 1024, err);
    if (c->bundle == NULL)
        goto fail;
    X509_STORE *st = store_from_pem(c->bundle);
    if (st == NULL) {
        if (asprintf(err, "%s: no certificate in the trust bundle", o->ca_file) < 0)
            *err = NULL;
        goto fail;
    }
    X509_STORE_free(st);
    c->address = strdup(o->address);
    c->workload = strdup(o->workload);
    c->admin = o->admin ? strdup(o->admin) : NULL;
    c->capture = o->capture ? strdup(o->capture) : NULL;
    c->outbound_ip = o->outbound_ip ? strdup(o->outbound_ip) : NULL;
    c->app_ip = o->app_ip ? strdup(o->app_ip) : NULL;
    c->admin_socket = o->admin_socket ? strdup(o->admin_socket) : NULL;
    client_connect(c);
    return c;
fail:
    tr_control_client_free(c);
    return NULL;
}

void tr_control_client_free(struct tr_control_client *c)
{
    if (c == NULL)
        return;
    tr_link_close(c->link);
    tr_timer_cancel(c->loop, &c->retry_timer);
    tr_timer_cancel(c->loop, &c->renew_timer);
    tr_cp_reader_free(&c->cert_reader);
    tr_cp_reader_free(&c->stream_reader);
    EVP_PKEY_free(c->pending_key);
    wipe_free(c->key_pem);
    free(c->chain_pem);
    free(c->got_chain);
    free(c->got_bundle);
    free(c->bundle);
    free(c->address);
    free(c->workload);
    free(c->admin);
    free(c->capture);
    free(c->outbound_ip);
    free(c->app_ip);
    free(c->admin_socket);
    OPENSSL_cleanse(c->token, sizeof(c->token));
    free(c);
}

void tr_control_client_stats(const struct tr_control_client *c, struct tr_control_client_stats *out)
{
    *out = c->stats;
}
