/* identity/tls.c: loading TLS contexts, SPIFFE peer verification, failure
 * classification and client session slots. See identity.h for the model. */
#include "identity/identity.h"

#include "config/load.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "core/log.h"

/* Read-ahead buffer: one full record (16 KiB + overhead) or many small ones
 * per read(2). */
#define TR_TLS_READ_BUF_LEN (17 * 1024)
/* Only used when TLS 1.2 is allowed: forward secrecy and AEAD only. */
#define TR_TLS12_CIPHERS                                                                           \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
/* SPIFFE leaves are issued directly by the trust domain's CA or through a
 * few intermediates; a short bound limits work spent on hostile chains. */
#define TR_TLS_VERIFY_DEPTH 8
/* Any fixed value: OpenSSL refuses to resume sessions on a verifying server
 * without one. Tickets from another tr_tls_ctx fail anyway (new ticket keys). */
#define TR_TLS_SID_CTX      "trellis"
#define TR_TRUST_DOMAIN_MAX 255
#define TR_MAX_PEM_BYTES    (4u << 20)

enum { F_CERT, F_KEY, F_CA, F_COUNT };

struct file_stamp {
    bool ok;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

/* Data the verify and ALPN callbacks need, owned by the SSL_CTX itself (freed
 * through its ex_data) so an SSL that outlives its tr_tls_ctx stays correct. */
struct ctx_data {
    enum tr_tls_kind kind;
    char *trust_domain;  /* NULL: any trust domain */
    uint64_t gen;        /* load generation, to match session slots */
    unsigned char *alpn; /* server preference list, wire format; NULL: none */
    size_t alpn_len;
};

/* Allowed server IDs of one client SSL, one allocation: the pointer array,
 * then the strings. */
struct peer_ids {
    size_t n;
    size_t size; /* of the whole block, for duplication */
    char *ids[];
};

struct tr_tls_ctx {
    _Atomic unsigned refs;
    SSL_CTX *server;
    SSL_CTX *client;
    char *own_id;
    time_t not_after;
    char *files[F_COUNT];
    struct file_stamp stamps[F_COUNT];
};

/* ex_data indexes, allocated once per process. */
static int ctx_data_idx = -1; /* SSL_CTX: struct ctx_data *, owned */
static int reason_idx = -1;   /* SSL: const char * (static), failure reason */
static int ids_idx = -1;      /* SSL: struct peer_ids *, owned */
static int slot_idx = -1;     /* SSL: struct tr_tls_session_slot *, borrowed */
static int sni_idx = -1;      /* SSL: const struct tr_tls_sni_table *, borrowed */
static int no_alpn_idx = -1;  /* SSL: non-NULL: select no application protocol */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t load_gen;

static void ctx_data_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    struct ctx_data *d = ptr;
    if (d == NULL)
        return;
    free(d->trust_domain);
    free(d->alpn);
    free(d);
}

static void peer_ids_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    free(ptr);
}

/* SSL_dup() copies ex_data pointers; give the copy its own block so both can
 * be freed. The string pointers are rebased into the new block. */
static int peer_ids_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx,
                        long argl, void *argp)
{
    const struct peer_ids *src = *from_d;
    if (src == NULL)
        return 1;
    struct peer_ids *dst = malloc(src->size);
    if (dst == NULL) {
        *from_d = NULL;
        return 0;
    }
    memcpy(dst, src, src->size);
    for (size_t i = 0; i < src->n; i++)
        dst->ids[i] = (char *)dst + (src->ids[i] - (const char *)src);
    *from_d = dst;
    return 1;
}

static void init_indexes(void)
{
    ctx_data_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_data_free);
    reason_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ids_idx = SSL_get_ex_new_index(0, NULL, NULL, peer_ids_dup, peer_ids_free);
    slot_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    sni_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    no_alpn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static bool ensure_init(void)
{
    pthread_once(&init_once, init_indexes);
    return ctx_data_idx >= 0 && reason_idx >= 0 && ids_idx >= 0 && slot_idx >= 0 && sni_idx >= 0 &&
           no_alpn_idx >= 0;
}

/* ---- SPIFFE IDs in certificates ---- */

/* Extracts the one SPIFFE ID among cert's URI SANs into out (size
 * TR_SPIFFE_ID_MAX + 1), NUL-terminated. Returns NULL on success, else the
 * failure reason. */
static const char *cert_spiffe_id(X509 *cert, char out[static TR_SPIFFE_ID_MAX + 1],
                                  size_t *out_len)
{
    /* X.509-SVIDs are leaves: a CA certificate must not act as a workload. */
    if (X509_get_extension_flags(cert) & EXFLAG_CA)
        return "bad_spiffe_id";

    int crit = -1;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (names == NULL)
        return crit == -2 ? "bad_spiffe_id" /* several SAN extensions */ : "no_spiffe_id";

    const ASN1_IA5STRING *uri = NULL;
    int n_uri = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type == GEN_URI) {
            n_uri++;
            uri = gn->d.uniformResourceIdentifier;
        }
    }

    const char *why = NULL;
    if (n_uri == 0) {
        why = "no_spiffe_id";
    } else if (n_uri > 1) {
        why = "bad_spiffe_id"; /* the X.509-SVID spec allows exactly one */
    } else {
        const char *p = (const char *)ASN1_STRING_get0_data(uri);
        size_t len = (size_t)ASN1_STRING_length(uri);
        if (len < 9 || strncasecmp(p, "spiffe://", 9) != 0)
            why = "no_spiffe_id";
        else if (tr_spiffe_id_parse(p, len, NULL, NULL) != 0)
            why = "bad_spiffe_id";
        else {
            memcpy(out, p, len); /* len <= TR_SPIFFE_ID_MAX, checked by the parser */
            out[len] = '\0';
            *out_len = len;
        }
    }
    GENERAL_NAMES_free(names);
    return why;
}

static struct ctx_data *ssl_ctx_data(const SSL *ssl)
{
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_data_idx);
}

/* Does a certificate's DNS name (maybe "*.rest": one whole leftmost label)
 * stand for host name want? Case-insensitive, as DNS. */
static bool dns_san_matches(const char *san, size_t san_len, const char *want)
{
    size_t wl = strlen(want);
    if (san_len == wl && strncasecmp(san, want, wl) == 0)
        return true;
    if (san_len < 3 || san[0] != '*' || san[1] != '.')
        return false;
    const char *dot = memchr(want, '.', wl);
    if (dot == NULL || dot == want)
        return false;
    size_t rest = wl - (size_t)(dot + 1 - want);
    return rest == san_len - 2 && strncasecmp(dot + 1, san + 2, rest) == 0;
}

/* A client context's check of the server's leaf: one of its DNS or URI SANs
 * is one of the names the cluster asks for (none asked: the chain alone,
 * only with insecure_skip_verify, which skips even that). */
static const char *check_server_names(SSL *ssl, X509 *leaf)
{
    const struct peer_ids *want = SSL_get_ex_data(ssl, ids_idx);
    if (want == NULL || want->n == 0)
        return NULL;
    GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    const char *why = "wrong_san";
    for (int i = 0; names != NULL && why != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type != GEN_DNS && gn->type != GEN_URI)
            continue;
        const ASN1_IA5STRING *v =
            gn->type == GEN_DNS ? gn->d.dNSName : gn->d.uniformResourceIdentifier;
        const char *p = (const char *)ASN1_STRING_get0_data(v);
        size_t len = (size_t)ASN1_STRING_length(v);
        if (memchr(p, '\0', len) != NULL)
            continue; /* an embedded NUL: never a name */
        for (size_t k = 0; k < want->n && why != NULL; k++) {
            if (gn->type == GEN_DNS
                    ? dns_san_matches(p, len, want->ids[k])
                    : (strlen(want->ids[k]) == len && memcmp(p, want->ids[k], len) == 0))
                why = NULL;
        }
    }
    GENERAL_NAMES_free(names);
    return why;
}

/* The checks on a chain-verified leaf presented to ssl, by the kind of its
 * context: SPIFFE for mesh, the names for client; a server context (client
 * certificates of MUTUAL termination) needs the chain only. Returns NULL if
 * acceptable, else the failure reason. */
static const char *check_peer(SSL *ssl, X509 *leaf)
{
    const struct ctx_data *kd = ssl_ctx_data(ssl);
    if (kd != NULL && kd->kind == TR_TLSK_SERVER)
        return NULL;
    if (kd != NULL && kd->kind == TR_TLSK_CLIENT)
        return check_server_names(ssl, leaf);
    char id[TR_SPIFFE_ID_MAX + 1];
    size_t len = 0;
    const char *why = cert_spiffe_id(leaf, id, &len);
    if (why)
        return why;

    const struct ctx_data *d = ssl_ctx_data(ssl);
    if (d && d->trust_domain) {
        tr_str td;
        (void)tr_spiffe_id_parse(id, len, &td, NULL);
        if (!tr_str_eq(td, d->trust_domain, strlen(d->trust_domain)))
            return "wrong_trust_domain";
    }

    const struct peer_ids *allowed = SSL_get_ex_data(ssl, ids_idx);
    if (allowed && allowed->n > 0) {
        for (size_t i = 0; i < allowed->n; i++)
            if (strcmp(allowed->ids[i], id) == 0)
                return NULL;
        return "wrong_spiffe_id";
    }
    return NULL;
}

static const char *reason_from_x509(long err)
{
    switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return "expired";
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return "not_yet_valid";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    /* An issuer name we trust but a signature we cannot verify: the cert was
     * made by a different CA that reuses the name. */
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return "unknown_ca";
    default:
        return "other";
    }
}

static void set_reason(SSL *ssl, const char *why)
{
    /* The first failure is the cause; later callbacks only echo it. */
    if (ssl && SSL_get_ex_data(ssl, reason_idx) == NULL)
        SSL_set_ex_data(ssl, reason_idx, (void *)why);
}

static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    if (!ok) {
        set_reason(ssl, reason_from_x509(X509_STORE_CTX_get_error(xs)));
        return 0;
    }
    /* Called with ok=1 once per certificate after the chain verified; the
     * SPIFFE rules concern only the leaf. */
    if (ssl == NULL || X509_STORE_CTX_get_error_depth(xs) != 0)
        return 1;
    const char *why = check_peer(ssl, X509_STORE_CTX_get_current_cert(xs));
    if (why) {
        set_reason(ssl, why);
        /* Maps to a bad_certificate alert for the peer. */
        X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);
        return 0;
    }
    return 1;
}

/* ---- public: per-connection ---- */

int tr_tls_client_setup(SSL *ssl, const char *sni, const char *const *server_ids, size_t n_ids)
{
    if (!ensure_init())
        return -1;
    if (sni && SSL_set_tlsext_host_name(ssl, sni) != 1)
        return -1;

    struct peer_ids *ids = NULL;
    if (n_ids > 0) {
        size_t size = sizeof(*ids) + n_ids * sizeof(char *);
        for (size_t i = 0; i < n_ids; i++)
            size += strlen(server_ids[i]) + 1;
        ids = malloc(size);
        if (ids == NULL)
            return -1;
        ids->n = n_ids;
        ids->size = size;
        char *p = (char *)&ids->ids[n_ids];
        for (size_t i = 0; i < n_ids; i++) {
            size_t l = strlen(server_ids[i]) + 1;
            memcpy(p, server_ids[i], l);
            ids->ids[i] = p;
            p += l;
        }
    }
    free(SSL_get_ex_data(ssl, ids_idx));
    if (SSL_set_ex_data(ssl, ids_idx, ids) != 1) {
        free(ids);
        SSL_set_ex_data(ssl, ids_idx, NULL);
        return -1;
    }
    return 0;
}

void tr_tls_client_insecure(SSL *ssl)
{
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
}

/* ---- SNI: certificate selection of TLS termination ---- */

int tr_tls_sni_parse(const unsigned char *ext, size_t len, const char **name, size_t *name_len)
{
    /* RFC 6066 3: ServerNameList <1..2^16-1> of {NameType, HostName
     * <1..2^16-1>}; one host_name (type 0) at most, other types skipped. */
    *name = NULL;
    *name_len = 0;
    if (len < 2 || (size_t)((ext[0] << 8) | ext[1]) != len - 2 || len == 2)
        return -1;
    for (size_t i = 2; i < len;) {
        if (len - i < 3)
            return -1;
        unsigned type = ext[i];
        size_t n = (size_t)((ext[i + 1] << 8) | ext[i + 2]);
        i += 3;
        if (n == 0 || n > len - i)
            return -1;
        if (type == 0) {
            if (*name != NULL || n > 255 || memchr(ext + i, '\0', n) != NULL)
                return -1;
            *name = (const char *)ext + i;
            *name_len = n;
        }
        i += n;
    }
    return 0;
}

static bool server_name_matches(const char *pattern, const char *name, size_t len)
{
    size_t pl = strlen(pattern);
    if (pl > 2 && pattern[0] == '*' && pattern[1] == '.')
        /* "*.example.com": any name below example.com, not example.com itself */
        return len > pl - 1 && name[len - (pl - 1) - 1] != '.' &&
               strncasecmp(name + len - (pl - 1), pattern + 1, pl - 1) == 0;
    return pl == len && strncasecmp(pattern, name, len) == 0;
}

const struct tr_tls_sni_choice *tr_tls_sni_pick(const struct tr_tls_sni_table *t, const char *name,
                                                size_t len)
{
    /* A name listed by a context wins; then the first context that lists none. */
    for (size_t i = 0; name != NULL && i < t->n; i++)
        for (size_t k = 0; k < t->choices[i].n_names; k++)
            if (server_name_matches(t->choices[i].names[k], name, len))
                return &t->choices[i];
    for (size_t i = 0; i < t->n; i++)
        if (t->choices[i].n_names == 0)
            return &t->choices[i];
    return NULL;
}

void tr_tls_server_select(SSL *ssl, const struct tr_tls_sni_table *t)
{
    if (ensure_init())
        SSL_set_ex_data(ssl, sni_idx, (void *)t);
}

/* Runs first on a ClientHello, before sessions or certificates are looked
 * at: the context chosen here decides both (each has its own session ID
 * context, so a session never crosses to a context with other rules). */
static int client_hello_cb(SSL *ssl, int *al, void *arg)
{
    const struct tr_tls_sni_table *t = SSL_get_ex_data(ssl, sni_idx);
    if (t == NULL)
        return SSL_CLIENT_HELLO_SUCCESS;
    const unsigned char *ext = NULL;
    size_t len = 0;
    const char *name = NULL;
    size_t name_len = 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len) == 1 &&
        tr_tls_sni_parse(ext, len, &name, &name_len) != 0) {
        set_reason(ssl, "protocol");
        *al = SSL_AD_DECODE_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    const struct tr_tls_sni_choice *pick = tr_tls_sni_pick(t, name, name_len);
    if (pick == NULL) {
        set_reason(ssl, "unknown_sni");
        *al = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_CTX *c = pick->ctx->server;
    if (c != SSL_get_SSL_CTX(ssl)) {
        if (SSL_set_SSL_CTX(ssl, c) != c) {
            *al = SSL_AD_INTERNAL_ERROR;
            return SSL_CLIENT_HELLO_ERROR;
        }
        /* SSL_set_SSL_CTX moves the certificate and session ID context,
         * not the verification rules or the ticket count. */
        SSL_set_verify(ssl, SSL_CTX_get_verify_mode(c), SSL_CTX_get_verify_callback(c));
        SSL_set_num_tickets(ssl, SSL_CTX_get_num_tickets(c));
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

int tr_identity_peer_id(SSL *ssl, char *out, size_t size)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    /* The verify result is kept in the session, so this also holds after
     * resumption, where no verification runs. */
    if (peer == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return -1;
    char id[TR_SPIFFE_ID_MAX + 1];
    size_t len = 0;
    if (cert_spiffe_id(peer, id, &len) != NULL || len + 1 > size)
        return -1;
    memcpy(out, id, len + 1);
    return (int)len;
}

static const char *reason_from_err(unsigned long e)
{
    if (e == 0 || ERR_GET_LIB(e) != ERR_LIB_SSL)
        return NULL;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return "no_peer_cert";
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        return "unknown_ca";
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        return "expired";
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_LENGTH_MISMATCH:
    case SSL_R_BAD_RECORD_TYPE:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_UNSUPPORTED_SSL_VERSION:
    case SSL_R_WRONG_SSL_VERSION:
    case SSL_R_BAD_PROTOCOL_VERSION_NUMBER:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_KEY_SHARE:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_TLSV1_ALERT_DECODE_ERROR:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        return "protocol";
    default:
        return NULL;
    }
}

static const char *failure_reason(SSL *ssl)
{
    if (ssl && ensure_init()) {
        const char *r = SSL_get_ex_data(ssl, reason_idx);
        if (r)
            return r;
        long vr = SSL_get_verify_result(ssl);
        if (vr != X509_V_OK)
            return reason_from_x509(vr);
    }
    /* The queue's first entry is usually the cause; the last one is checked
     * too since some paths push a generic error first. */
    const char *r = reason_from_err(ERR_peek_error());
    if (r == NULL)
        r = reason_from_err(ERR_peek_last_error());
    return r ? r : "other";
}

const char *tr_tls_failure_reason(SSL *ssl)
{
    const char *r = failure_reason(ssl);
    /* The reason is all anyone keeps: left queued, the errors would make the
     * thread's next SSL_get_error() report a fatal error for a connection
     * that only has to wait. */
    ERR_clear_error();
    return r;
}

/* ---- ALPN ---- */

static bool alpn_valid(const unsigned char *p, size_t len)
{
    if (len == 0 || len > 65535)
        return false;
    for (size_t i = 0; i < len; i += 1 + (size_t)p[i])
        if (p[i] == 0 || i + 1 + p[i] > len)
            return false;
    return true;
}

/* Server preference: the first of our protocols that the client offers. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    const struct ctx_data *d = arg;
    if (SSL_get_ex_data(ssl, no_alpn_idx) != NULL)
        return SSL_TLSEXT_ERR_NOACK;
    for (size_t i = 0; i < d->alpn_len; i += 1 + (size_t)d->alpn[i]) {
        const unsigned char *ours = &d->alpn[i];
        for (size_t j = 0; j < inlen; j += 1 + (size_t)in[j]) {
            if (j + 1 + (size_t)in[j] > inlen)
                break; /* malformed tail; OpenSSL validates, be safe anyway */
            if (in[j] == ours[0] && memcmp(&in[j + 1], ours + 1, ours[0]) == 0) {
                *out = ours + 1; /* points into our list: stable memory */
                *outlen = ours[0];
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

void tr_tls_server_no_alpn(SSL *ssl)
{
    static const char on = 1;
    if (ensure_init())
        SSL_set_ex_data(ssl, no_alpn_idx, (void *)&on);
}

int tr_tls_ctx_set_alpn(struct tr_tls_ctx *ctx, const unsigned char *protos, size_t len)
{
    if (!alpn_valid(protos, len))
        return -1;
    /* Note the inverted convention: 0 means success here. */
    if (ctx->client != NULL && SSL_CTX_set_alpn_protos(ctx->client, protos, (unsigned)len) != 0)
        return -1;
    if (ctx->server == NULL)
        return 0;
    struct ctx_data *d = SSL_CTX_get_ex_data(ctx->server, ctx_data_idx);
    unsigned char *copy = malloc(len);
    if (d == NULL || copy == NULL) {
        free(copy);
        return -1;
    }
    memcpy(copy, protos, len);
    free(d->alpn);
    d->alpn = copy;
    d->alpn_len = len;
    SSL_CTX_set_alpn_select_cb(ctx->server, alpn_select_cb, d);
    return 0;
}

/* ---- session slots ---- */

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tr_tls_session_slot *slot = SSL_get_ex_data(ssl, slot_idx);
    const struct ctx_data *d = ssl_ctx_data(ssl);
    if (slot == NULL || d == NULL)
        return 0;
    /* A private copy: SSL_free() on a connection that did not send
     * close_notify marks its current session unresumable, and in TLS 1.3
     * that object is this one. TLS 1.3 does not require that (RFC 8446
     * dropped the rule), and proxies close many connections without it. */
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    if (copy == NULL)
        return 0;
    if (slot->sess)
        SSL_SESSION_free(slot->sess);
    slot->sess = copy;
    slot->gen = d->gen;
    return 0; /* OpenSSL keeps its own reference to sess */
}

void tr_tls_session_slot_init(struct tr_tls_session_slot *slot)
{
    slot->sess = NULL;
    slot->gen = 0;
}

void tr_tls_session_slot_clear(struct tr_tls_session_slot *slot)
{
    if (slot->sess)
        SSL_SESSION_free(slot->sess);
    slot->sess = NULL;
    slot->gen = 0;
}

int tr_tls_session_resume(SSL *ssl, struct tr_tls_session_slot *slot)
{
    if (!ensure_init())
        return 0;
    SSL_set_ex_data(ssl, slot_idx, slot);
    if (slot->sess == NULL)
        return 0;
    const struct ctx_data *d = ssl_ctx_data(ssl);
    SSL_SESSION *s = slot->sess;
    long now = (long)time(NULL);
    if (d == NULL || slot->gen != d->gen || !SSL_SESSION_is_resumable(s) ||
        now > SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s)) {
        tr_tls_session_slot_clear(slot); /* stale for good */
        return 0;
    }
    /* Resumption skips certificate verification, so re-apply this SSL's
     * server ID rules to the identity the session was made with. */
    X509 *peer = SSL_SESSION_get0_peer(s);
    if (peer == NULL || check_peer(ssl, peer) != NULL)
        return 0;
    return SSL_set_session(ssl, s) == 1 ? 1 : 0;
}

void tr_tls_session_unbind(SSL *ssl)
{
    if (ensure_init())
        SSL_set_ex_data(ssl, slot_idx, NULL);
}

/* ---- loading ---- */

/* OpenSSL's reason for the latest failure, for error messages. */
static const char *ossl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unknown error";
}

static void stamp_file(const char *path, struct file_stamp *st)
{
    struct stat sb;
    memset(st, 0, sizeof(*st));
    if (stat(path, &sb) != 0)
        return;
    st->ok = true;
    st->dev = sb.st_dev;
    st->ino = sb.st_ino;
    st->size = sb.st_size;
    st->mtime = sb.st_mtim;
    st->ctime = sb.st_ctim;
}

/* Reads a whole (small) file into a malloc'd buffer. Returns 0 or an errno. */
static int read_file(const char *path, unsigned char **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return errno;
    size_t cap = 8192, len = 0;
    unsigned char *buf = malloc(cap);
    int rc = buf ? 0 : ENOMEM;
    while (rc == 0) {
        if (len == cap) {
            unsigned char *nb = cap >= TR_MAX_PEM_BYTES ? NULL : realloc(buf, cap * 2);
            if (nb == NULL) {
                rc = cap >= TR_MAX_PEM_BYTES ? EFBIG : ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f))
                rc = EIO;
            break;
        }
    }
    fclose(f);
    if (rc != 0) {
        if (buf)
            OPENSSL_cleanse(buf, len);
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

/* Never prompt on a terminal for an encrypted key: fail instead. */
static int no_password_cb(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

/* All certificates of a PEM file: the first one separately (with the
 * auxiliary trust data OpenSSL allows on a leaf), the rest in *rest. */
static int parse_certs(const unsigned char *pem, size_t len, X509 **first, STACK_OF(X509) * *rest)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (b == NULL)
        return -1;
    *first = PEM_read_bio_X509_AUX(b, NULL, no_password_cb, NULL);
    *rest = sk_X509_new_null();
    int rc = (*first && *rest) ? 0 : -1;
    while (rc == 0) {
        X509 *x = PEM_read_bio_X509(b, NULL, no_password_cb, NULL);
        if (x == NULL) {
            /* Running out of PEM blocks is the normal end. */
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
                ERR_clear_error();
            else
                rc = -1;
            break;
        }
        if (!sk_X509_push(*rest, x)) {
            X509_free(x);
            rc = -1;
        }
    }
    BIO_free(b);
    if (rc != 0) {
        X509_free(*first);
        sk_X509_pop_free(*rest, X509_free);
        *first = NULL;
        *rest = NULL;
    }
    return rc;
}

static bool trust_domain_valid(const char *td)
{
    size_t n = strlen(td);
    if (n == 0 || n > TR_TRUST_DOMAIN_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)td[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
            return false;
    }
    return true;
}

struct material {
    X509 *leaf;
    STACK_OF(X509) * chain;
    EVP_PKEY *key;
    X509_STORE *store;
};

static SSL_CTX *make_ssl_ctx(const struct tr_tls_cfg *cfg, const struct material *m,
                             uint16_t min_version, uint64_t gen, bool server)
{
    SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    struct ctx_data *d = calloc(1, sizeof(*d));
    if (c == NULL || d == NULL)
        goto fail;
    d->gen = gen;
    d->kind = cfg->kind;
    if (cfg->trust_domain && (d->trust_domain = strdup(cfg->trust_domain)) == NULL)
        goto fail;
    if (SSL_CTX_set_ex_data(c, ctx_data_idx, d) != 1)
        goto fail;
    d = NULL; /* owned by c from here */

    if (!SSL_CTX_set_min_proto_version(c, min_version) ||
        !SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION))
        goto fail;
    uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
    if (server)
        opts |= SSL_OP_CIPHER_SERVER_PREFERENCE;
    if (!cfg->session_resumption)
        opts |= SSL_OP_NO_TICKET;
    SSL_CTX_set_options(c, opts);
    if (min_version < TLS1_3_VERSION && SSL_CTX_set_cipher_list(c, TR_TLS12_CIPHERS) != 1)
        goto fail;
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(c, 1);
    SSL_CTX_set_default_read_buffer_len(c, TR_TLS_READ_BUF_LEN);

    /* A client context may have no certificate of its own. */
    if (m->leaf != NULL &&
        (SSL_CTX_use_certificate(c, m->leaf) != 1 || SSL_CTX_set1_chain(c, m->chain) != 1 ||
         SSL_CTX_use_PrivateKey(c, m->key) != 1))
        goto fail;
    if (m->store != NULL) {
        SSL_CTX_set1_cert_store(c, m->store);
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                           verify_cb);
    } else if (cfg->kind == TR_TLSK_CLIENT) {
        /* No bundle given: the system's (OpenSSL's default paths), as
         * Istio verifies a SIMPLE origination without caCertificates. */
        if (SSL_CTX_set_default_verify_paths(c) != 1)
            goto fail;
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, verify_cb);
    } else {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL); /* a server context without client CA */
    }
    SSL_CTX_set_verify_depth(c, TR_TLS_VERIFY_DEPTH);

    if (server) {
        /* A terminating context's sessions are its own: one resumed under
         * another context of the listener would skip this one's rules. */
        char sid[32] = TR_TLS_SID_CTX;
        if (cfg->kind == TR_TLSK_SERVER) {
            snprintf(sid, sizeof(sid), "%s-%llu", TR_TLS_SID_CTX, (unsigned long long)gen);
            SSL_CTX_set_client_hello_cb(c, client_hello_cb, NULL);
        }
        if (SSL_CTX_set_session_id_context(c, (const unsigned char *)sid, (unsigned)strlen(sid)) !=
            1)
            goto fail;
        /* Stateless tickets only: no server-side cache (and its lock) shared
         * by the workers. One ticket per handshake is enough for a pool. */
        SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
        if (SSL_CTX_set_num_tickets(c, cfg->session_resumption ? 1 : 0) != 1)
            goto fail;
    } else if (cfg->session_resumption) {
        /* Sessions go to the caller's slots only (new_session_cb). */
        SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(c, new_session_cb);
    } else {
        SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    }
    return c;

fail:
    if (d) {
        free(d->trust_domain);
        free(d);
    }
    SSL_CTX_free(c);
    return NULL;
}

static void material_free(struct material *m)
{
    X509_free(m->leaf);
    sk_X509_pop_free(m->chain, X509_free);
    EVP_PKEY_free(m->key);
    X509_STORE_free(m->store);
}

static void ctx_free(struct tr_tls_ctx *ctx)
{
    SSL_CTX_free(ctx->server);
    SSL_CTX_free(ctx->client);
    free(ctx->own_id);
    for (int i = 0; i < F_COUNT; i++)
        free(ctx->files[i]);
    free(ctx);
}

/* One of cert, key, ca: a file's contents or the inline PEM, in a malloc'd
 * buffer; *what names it for messages ("cert_file \"/x\"", "cert_pem").
 * Returns 0, 1 if neither is set, or -1 with *err set. */
static int read_source(const struct tr_tls_cfg *cfg, const char *file, const char *pem,
                       const char *key, unsigned char **out, size_t *out_len, char *what,
                       size_t what_size, char **err)
{
    if (file != NULL) {
        snprintf(what, what_size, "%s_file \"%s\"", key, file);
        int e = read_file(file, out, out_len);
        if (e != 0) {
            tr_cfg_errorf(err, &cfg->loc, "%s: %s", what, strerror(e));
            return -1;
        }
        return 0;
    }
    if (pem == NULL)
        return 1;
    snprintf(what, what_size, "%s_pem", key);
    size_t len = strlen(pem);
    if (len > TR_MAX_PEM_BYTES || (*out = malloc(len ? len : 1)) == NULL) {
        tr_cfg_errorf(err, &cfg->loc, "%s: %s", what, len ? "too long" : "out of memory");
        return -1;
    }
    memcpy(*out, pem, len);
    *out_len = len;
    return 0;
}

/* Reads and parses cert, key and ca (those the kind has) into m. Returns 0
 * or -1 with *err set. */
static int load_material(const struct tr_tls_cfg *cfg, struct material *m, char **err)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    char cert_what[320], what[320];

    int rc = read_source(cfg, cfg->cert_file, cfg->cert_pem, "cert", &buf, &len, cert_what,
                         sizeof(cert_what), err);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        rc = parse_certs(buf, len, &m->leaf, &m->chain);
        free(buf);
        if (rc != 0) {
            tr_cfg_errorf(err, &cfg->loc, "%s: no valid PEM certificate (%s)", cert_what,
                          ossl_reason());
            return -1;
        }
        if ((rc = read_source(cfg, cfg->key_file, cfg->key_pem, "key", &buf, &len, what,
                              sizeof(what), err)) != 0) {
            if (rc > 0)
                tr_cfg_errorf(err, &cfg->loc, "key: not set");
            return -1;
        }
        BIO *b = BIO_new_mem_buf(buf, (int)len);
        m->key = b ? PEM_read_bio_PrivateKey(b, NULL, no_password_cb, NULL) : NULL;
        BIO_free(b);
        OPENSSL_cleanse(buf, len); /* key material: do not leave it in freed memory */
        free(buf);
        if (m->key == NULL) {
            tr_cfg_errorf(err, &cfg->loc, "%s: no valid unencrypted PEM private key (%s)", what,
                          ossl_reason());
            return -1;
        }
        if (X509_check_private_key(m->leaf, m->key) != 1) {
            tr_cfg_errorf(err, &cfg->loc, "%s does not match the certificate in %s", what,
                          cert_what);
            return -1;
        }
    }

    rc = read_source(cfg, cfg->ca_file, cfg->ca_pem, "ca", &buf, &len, what, sizeof(what), err);
    if (rc != 0)
        return rc < 0 ? -1 : 0; /* no ca: a server context that asks for no client cert */
    X509 *first = NULL;
    STACK_OF(X509) *rest = NULL;
    rc = parse_certs(buf, len, &first, &rest);
    free(buf);
    if (rc != 0) {
        tr_cfg_errorf(err, &cfg->loc, "%s: no valid PEM certificate (%s)", what, ossl_reason());
        return -1;
    }
    m->store = X509_STORE_new();
    rc = m->store && X509_STORE_add_cert(m->store, first) == 1 ? 0 : -1;
    for (int i = 0; rc == 0 && i < sk_X509_num(rest); i++)
        if (X509_STORE_add_cert(m->store, sk_X509_value(rest, i)) != 1)
            rc = -1;
    X509_free(first);
    sk_X509_pop_free(rest, X509_free);
    if (rc != 0) {
        tr_cfg_errorf(err, &cfg->loc, "%s: %s", what, ossl_reason());
        return -1;
    }
    return 0;
}

/* "cert_file \"PATH\"" or "cert_pem", for messages. */
static const char *source_name(char *buf, size_t size, const char *key, const char *file)
{
    if (file != NULL)
        snprintf(buf, size, "%s_file \"%s\"", key, file);
    else
        snprintf(buf, size, "%s_pem", key);
    return buf;
}

/* Our own chain must lead to the bundle, else every peer would reject us;
 * dates are not checked here (see tr_tls_ctx_load). */
static int verify_own_chain(const struct tr_tls_cfg *cfg, const struct material *m, char **err)
{
    X509_STORE_CTX *xs = X509_STORE_CTX_new();
    if (xs == NULL || X509_STORE_CTX_init(xs, m->store, m->leaf, m->chain) != 1) {
        X509_STORE_CTX_free(xs);
        tr_cfg_errorf(err, &cfg->loc, "out of memory");
        return -1;
    }
    X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(xs), X509_V_FLAG_NO_CHECK_TIME);
    int ok = X509_verify_cert(xs);
    if (ok != 1) {
        char cert[300], ca[300];
        tr_cfg_errorf(err, &cfg->loc, "%s does not verify against %s: %s",
                      source_name(cert, sizeof(cert), "cert", cfg->cert_file),
                      source_name(ca, sizeof(ca), "ca", cfg->ca_file),
                      X509_verify_cert_error_string(X509_STORE_CTX_get_error(xs)));
    }
    X509_STORE_CTX_free(xs);
    return ok == 1 ? 0 : -1;
}

struct tr_tls_ctx *tr_tls_ctx_load(const struct tr_tls_cfg *cfg, char **err)
{
    if (err)
        *err = NULL;
    if (!ensure_init()) {
        tr_cfg_errorf(err, &cfg->loc, "OpenSSL initialisation failed");
        return NULL;
    }
    bool mesh = cfg->kind == TR_TLSK_MESH, client = cfg->kind == TR_TLSK_CLIENT;
    const char *missing = !cfg->cert_file && !cfg->cert_pem && !client ? "cert_file"
                          : !cfg->key_file && !cfg->key_pem && !client ? "key_file"
                          : !cfg->ca_file && !cfg->ca_pem && mesh      ? "ca_file"
                                                                       : NULL;
    if (missing) {
        tr_cfg_errorf(err, &cfg->loc, "%s: not set", missing);
        return NULL;
    }
    uint16_t min_version = cfg->min_version ? cfg->min_version : TLS1_3_VERSION;
    if (min_version != TLS1_2_VERSION && min_version != TLS1_3_VERSION) {
        tr_cfg_errorf(err, &cfg->loc, "min_version: must be TLS 1.2 or TLS 1.3");
        return NULL;
    }
    if (cfg->trust_domain && !trust_domain_valid(cfg->trust_domain)) {
        tr_cfg_errorf(err, &cfg->loc, "trust_domain \"%s\": not a valid SPIFFE trust domain",
                      cfg->trust_domain);
        return NULL;
    }

    struct tr_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        tr_cfg_errorf(err, &cfg->loc, "out of memory");
        return NULL;
    }
    atomic_init(&ctx->refs, 1u);
    const char *paths[F_COUNT] = {cfg->cert_file, cfg->key_file, cfg->ca_file};
    for (int i = 0; i < F_COUNT; i++) {
        if (paths[i] == NULL)
            continue; /* inline PEM or none: nothing to watch */
        if ((ctx->files[i] = strdup(paths[i])) == NULL) {
            tr_cfg_errorf(err, &cfg->loc, "out of memory");
            ctx_free(ctx);
            return NULL;
        }
        /* Stamped before reading: a write racing with this load then shows up
         * as a change at the next poll instead of being missed. */
        stamp_file(paths[i], &ctx->stamps[i]);
    }

    ERR_clear_error();
    struct material m = {0};
    char id[TR_SPIFFE_ID_MAX + 1];
    size_t id_len = 0;
    const char *why;
    char cert[300];
    source_name(cert, sizeof(cert), "cert", cfg->cert_file);
    if (load_material(cfg, &m, err) != 0)
        goto fail;
    /* A mesh leaf is an X.509-SVID that the bundle vouches for; a gateway's or
     * a client's certificate is whatever its peers trust. */
    if (mesh && (why = cert_spiffe_id(m.leaf, id, &id_len)) != NULL) {
        tr_cfg_errorf(err, &cfg->loc, "%s: leaf certificate is not a valid X.509-SVID (%s)", cert,
                      why);
        goto fail;
    }
    if (mesh && verify_own_chain(cfg, &m, err) != 0)
        goto fail;

    struct tm tm;
    if (m.leaf != NULL) {
        if (ASN1_TIME_to_tm(X509_get0_notAfter(m.leaf), &tm) != 1) {
            tr_cfg_errorf(err, &cfg->loc, "%s: unreadable notAfter", cert);
            goto fail;
        }
        ctx->not_after = timegm(&tm);
    }
    if (mesh && (ctx->own_id = strdup(id)) == NULL) {
        tr_cfg_errorf(err, &cfg->loc, "out of memory");
        goto fail;
    }

    uint64_t gen = atomic_fetch_add_explicit(&load_gen, 1, memory_order_relaxed) + 1;
    bool ok = true;
    if (cfg->kind != TR_TLSK_CLIENT)
        ok = (ctx->server = make_ssl_ctx(cfg, &m, min_version, gen, true)) != NULL;
    if (ok && cfg->kind != TR_TLSK_SERVER)
        ok = (ctx->client = make_ssl_ctx(cfg, &m, min_version, gen, false)) != NULL;
    if (!ok) {
        tr_cfg_errorf(err, &cfg->loc, "cannot set up TLS context: %s", ossl_reason());
        goto fail;
    }
    material_free(&m); /* the SSL_CTXs hold their own references */
    ERR_clear_error();

    if (ctx->not_after != 0 && ctx->not_after <= time(NULL))
        tr_warn("%s:%u:%u: %s: certificate %s (%s) has expired; peers will reject it",
                cfg->loc.file ? cfg->loc.file : "<config>", (unsigned)cfg->loc.line,
                (unsigned)cfg->loc.col, cfg->loc.path ? cfg->loc.path : "tls", cert,
                ctx->own_id ? ctx->own_id : "no SPIFFE ID");
    if (cfg->trust_domain) {
        tr_str td;
        (void)tr_spiffe_id_parse(id, id_len, &td, NULL);
        if (!tr_str_eq(td, cfg->trust_domain, strlen(cfg->trust_domain)))
            tr_warn("%s:%u:%u: %s: own ID %s is outside trust_domain %s",
                    cfg->loc.file ? cfg->loc.file : "<config>", (unsigned)cfg->loc.line,
                    (unsigned)cfg->loc.col, cfg->loc.path ? cfg->loc.path : "tls", ctx->own_id,
                    cfg->trust_domain);
    }
    return ctx;

fail:
    material_free(&m);
    ctx_free(ctx);
    ERR_clear_error();
    return NULL;
}

void tr_tls_ctx_ref(struct tr_tls_ctx *ctx)
{
    atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
}

void tr_tls_ctx_unref(struct tr_tls_ctx *ctx)
{
    if (ctx && atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) == 1)
        ctx_free(ctx);
}

SSL_CTX *tr_tls_ctx_server(const struct tr_tls_ctx *ctx)
{
    return ctx->server;
}

SSL_CTX *tr_tls_ctx_client(const struct tr_tls_ctx *ctx)
{
    return ctx->client;
}

const char *tr_tls_ctx_own_id(const struct tr_tls_ctx *ctx)
{
    return ctx->own_id;
}

time_t tr_tls_ctx_not_after(const struct tr_tls_ctx *ctx)
{
    return ctx->not_after;
}

bool tr_tls_ctx_files_changed(const struct tr_tls_ctx *ctx)
{
    for (int i = 0; i < F_COUNT; i++) {
        struct file_stamp now;
        if (ctx->files[i] == NULL)
            continue;
        stamp_file(ctx->files[i], &now);
        /* A missing file is usually mid-replacement: wait for it rather than
         * start a reload that can only fail. */
        if (!now.ok)
            continue;
        const struct file_stamp *was = &ctx->stamps[i];
        if (!was->ok || now.dev != was->dev || now.ino != was->ino || now.size != was->size ||
            now.mtime.tv_sec != was->mtime.tv_sec || now.mtime.tv_nsec != was->mtime.tv_nsec ||
            now.ctime.tv_sec != was->ctime.tv_sec || now.ctime.tv_nsec != was->ctime.tv_nsec)
            return true;
    }
    return false;
}
