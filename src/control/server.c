/* control/server.c: `trellis control` (see server.h, docs/control.md). */
#include "control/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"
#include "config/load.h"
#include "config/write.h"
#include "control/link.h"
#include "control/protocol.h"
#include "core/diag.h"
#include "core/fmt.h"
#include "core/log.h"
#include "dialect/istio/istio.h"
#include "event/loop.h"
#include "net/sock.h"
#include "resource/resource.h"
#include "transport/transport.h"

#define MAX_CSR_BODY      (TR_CA_CSR_MAX + TR_CP_MAX_HEADER)
#define MAX_ACK_BODY      (64u * 1024)
#define CONTROL_NS        "trellis-system"
#define CONTROL_SA        "trellis-control"
#define OWN_CERT_LIFETIME (24L * 3600)
#define MAX_PROXIES       100000u
#define MAX_NACK_MESSAGE  2048u
/* Connections at once, and how long one may live without opening a stream
 * (a TLS handshake, a certificate request): whoever connects, the control
 * plane holds a bounded amount for a bounded time. */
#define MAX_CONNS         20000u
#define CONN_IDLE_MS      30000u

/* One proxy the control plane knows, by workload; kept while disconnected
 * so that status shows what it last had. */
struct proxy {
    struct proxy *next;
    char *workload; /* "NS/NAME" */
    char *ns, *name, *admin, *capture, *outbound_ip, *app_ip, *admin_socket;
    char *principal;   /* its SPIFFE ID */
    struct conn *conn; /* the connection holding its stream; NULL: disconnected */
    int32_t stream_id;
    char *model; /* the last model pushed (the last good one) */
    size_t model_len;
    uint64_t version, acked, nacked;
    char *nack_msg;
    time_t cert_not_after;
    time_t connected_at, disconnected_at;
    uint64_t errors_reported; /* the resources generation whose errors were logged */
    /* The hosts its last good compile named: after a change, a proxy whose
     * hosts the change does not reach keeps its model without a compile.
     * Not known (compiled at every change) while its compile has errors. */
    struct tr_istio_hosts hosts;
    bool hosts_known;
    bool resend; /* a new stream: send the model even if unchanged */
};

enum req_kind { REQ_CERT, REQ_STREAM, REQ_ACK, REQ_REFUSED };

struct req {
    struct req *next;
    int32_t sid;
    enum req_kind kind;
    struct tr_cp_reader rd;
    char token[TR_CA_TOKEN_HEX + 1];
    bool answered;
};

struct conn {
    struct conn *next, **pprev;
    struct tr_link *link;
    char *peer_id; /* verified client certificate's SPIFFE ID, or NULL */
    time_t peer_not_after;
    struct req *reqs;
    struct proxy *proxy;  /* bound by its stream */
    struct tr_timer idle; /* until a stream is bound: the connection's deadline */
};

static struct {
    const struct tr_control_options *o;
    struct tr_loop *loop;
    struct tr_store *store;
    struct tr_rset *rs;
    struct tr_istio_registry *reg; /* built once per snapshot, shared by every compile */
    /* When reg is a registry rebound to rs (a change of VirtualServices and
     * DestinationRules only), the registry built and the snapshot it was
     * built from, which reg's tables point into. */
    struct tr_istio_registry *base_reg;
    struct tr_rset *base_rs;
    uint64_t resources_generation;
    struct tr_ca *ca;
    char *bundle;
    size_t bundle_len;
    SSL_CTX *server_ctx;
    time_t own_not_after;
    struct tr_io listen_io, store_io, status_io, signal_io;
    struct tr_timer debounce, own_renew;
    double first_change_ms; /* of the changes not read yet; 0: none */
    struct conn *conns;
    size_t n_conns, refused_conns;
    struct tr_deferred accept_later;
    struct proxy *proxies;
    size_t n_proxies;
    uint64_t next_version;
    char *status_path;
} cp;

/* ---------------------------------------------------------- helpers */

static const char *header(const struct tr_h2_header *h, size_t n, const char *name)
{
    static char buf[4096];
    size_t nl = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (h[i].name.len == nl && memcmp(h[i].name.p, name, nl) == 0) {
            if (h[i].value.len >= sizeof(buf))
                return NULL;
            memcpy(buf, h[i].value.p, h[i].value.len);
            buf[h[i].value.len] = '\0';
            return buf;
        }
    return NULL;
}

/* The one URI SAN of a verified peer certificate, if it is a SPIFFE ID. */
static char *peer_spiffe_id(SSL *ssl, time_t *not_after)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (peer == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return NULL;
    GENERAL_NAMES *names = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);
    char *id = NULL;
    int uris = 0;
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI)
            continue;
        uris++;
        const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        int len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (len > 9 && len < 2048 && strncmp(u, "spiffe://", 9) == 0 &&
            memchr(u, '\0', (size_t)len) == NULL)
            id = strndup(u, (size_t)len);
    }
    GENERAL_NAMES_free(names);
    if (uris != 1) {
        free(id);
        return NULL;
    }
    struct tm tm;
    if (not_after != NULL && ASN1_TIME_to_tm(X509_get0_notAfter(peer), &tm) == 1)
        *not_after = timegm(&tm);
    return id;
}

static time_t pem_not_after(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    time_t t = 0;
    struct tm tm;
    if (x != NULL && ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        t = timegm(&tm);
    X509_free(x);
    BIO_free(b);
    return t;
}

/* ------------------------------------------------------------- TLS */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i + 1 <= inlen;) {
        unsigned l = in[i];
        if (i + 1 + l > inlen)
            break;
        if (l == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Our own certificate, signed by our CA; a fresh key each time. */
static SSL_CTX *make_server_ctx(char **err)
{
    char id[512];
    if (tr_ca_spiffe_id(tr_ca_trust_domain(cp.ca), CONTROL_NS, CONTROL_SA, id, sizeof(id)) < 0) {
        *err = strdup("cannot form the control plane's SPIFFE ID");
        return NULL;
    }
    EVP_PKEY *key = tr_ca_key_new();
    size_t csr_len = 0;
    char *csr = key ? tr_ca_csr_new(key, &csr_len) : NULL;
    char *chain = csr ? tr_ca_sign(cp.ca, csr, csr_len, id, OWN_CERT_LIFETIME, NULL, err) : NULL;
    free(csr);
    SSL_CTX *ctx = chain ? SSL_CTX_new(TLS_server_method()) : NULL;
    BIO *b = chain ? BIO_new_mem_buf(chain, -1) : NULL;
    X509 *leaf = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    bool ok = ctx != NULL && leaf != NULL && SSL_CTX_use_certificate(ctx, leaf) == 1 &&
              SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    X509 *extra;
    while (ok && (extra = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
            X509_free(extra);
            ok = false;
        }
    ERR_clear_error();
    X509_STORE *st = ok ? X509_STORE_new() : NULL;
    BIO *bb = st ? BIO_new_mem_buf(cp.bundle, -1) : NULL;
    while (bb != NULL && (extra = PEM_read_bio_X509(bb, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(st, extra);
        X509_free(extra);
    }
    ERR_clear_error();
    BIO_free(bb);
    if (ok && st != NULL) {
        SSL_CTX_set_cert_store(ctx, st);
        st = NULL;
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
        /* A client certificate is asked for, not required: the bootstrap
         * request authenticates with a token instead. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
        cp.own_not_after = pem_not_after(chain);
    } else if (*err == NULL) {
        *err = strdup("cannot build the control plane's TLS context");
    }
    X509_STORE_free(st);
    X509_free(leaf);
    BIO_free(b);
    EVP_PKEY_free(key);
    free(chain);
    if (!ok || *err != NULL) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static void on_own_renew(struct tr_timer *t)
{
    char *err = NULL;
    SSL_CTX *ctx = make_server_ctx(&err);
    if (ctx != NULL) {
        SSL_CTX_free(cp.server_ctx); /* connections keep their own reference */
        cp.server_ctx = ctx;
        tr_info("control: own certificate renewed");
    } else {
        tr_err("control: cannot renew own certificate: %s", err ? err : "error");
    }
    free(err);
    tr_timer_set(cp.loop, t, OWN_CERT_LIFETIME * 1000 / 2);
}

/* ---------------------------------------------------------- answers */

static void respond(struct conn *c, struct req *r, const char *status, bool end)
{
    struct tr_h2_header h[] = {
        {{":status", 7}, {status, 3}},
        {{"content-type", 12}, {"application/x-trellis", 21}},
    };
    tr_h2_submit_headers(tr_link_h2(c->link), r->sid, h, 2, end);
    r->answered = true;
    tr_link_flush(c->link);
}

static void send_msg(struct conn *c, int32_t sid, enum tr_cp_type t, uint64_t version,
                     const char *p, size_t len, bool end)
{
    char hdr[TR_CP_MAX_HEADER];
    size_t hl = tr_cp_header(hdr, t, version, len);
    if (tr_link_send(c->link, sid, hdr, hl, false) == 0)
        tr_link_send(c->link, sid, p, len, end);
}

/* ------------------------------------------------------------ proxies */

static struct proxy *proxy_find(const char *workload)
{
    for (struct proxy *p = cp.proxies; p != NULL; p = p->next)
        if (strcmp(p->workload, workload) == 0)
            return p;
    return NULL;
}

static void log_diags(const struct tr_diags *d, const char *what)
{
    char line[2048];
    for (size_t i = 0; i < d->n; i++) {
        tr_diag_format(&d->v[i], line, sizeof(line));
        if (d->v[i].severity == TR_DIAG_ERROR)
            tr_err("%s: %s", what, line);
        else
            tr_warn("%s: %s", what, line);
    }
}

/* Compiles p's model from the current resources and pushes it if it
 * changed. A model with errors replaces nothing the proxy already has: the
 * last good model stays (the errors are logged once per resource change). */
/* A proxy's settings, sent with its stream (Istio's proxy metadata). */
struct node {
    const char *admin, *admin_socket, *outbound_ip, *app_ip, *capture;
};

static struct tr_config *compile_for(const char *workload, const char *ns, const char *name,
                                     const struct node *nd, struct tr_diags *d)
{
    struct tr_istio_options o = {
        .ns = ns,
        .name = name,
        .trust_domain = tr_ca_trust_domain(cp.ca),
        .root_ns = cp.o->root_ns,
        .identity_from_control = true,
        .admin_address = nd->admin,
        .admin_socket = nd->admin_socket,
        .capture = nd->capture != NULL && strcmp(nd->capture, "redirect") == 0,
        .outbound_ip = nd->outbound_ip,
        .app_ip = nd->app_ip,
        .file_name = workload,
    };
    return cp.reg ? tr_istio_compile_with(cp.reg, &o, d) : NULL;
}

/* A model built for a proxy: its text (or why there is none), the
 * compiler's findings and the hosts it names. */
struct built {
    char *text;
    size_t len;
    char *err;
    struct tr_diags d;
    struct tr_istio_hosts hosts;
    bool hosts_ok;
};

/* cfg (freed here) and d (taken) into b. Touches no shared state and logs
 * nothing: it runs on compile threads too (compile_batch). */
static void build(struct tr_config *cfg, struct tr_diags *d, struct built *b)
{
    *b = (struct built){.d = *d};
    b->text = cfg ? tr_config_write(cfg, TR_CONFIG_YAML, &b->len, &b->err) : NULL;
    if (b->text != NULL && b->len > TR_CP_MAX_PAYLOAD) {
        free(b->text);
        b->text = NULL;
        if (asprintf(&b->err, "the model is %zu bytes, over the protocol's %u", b->len,
                     TR_CP_MAX_PAYLOAD) < 0)
            b->err = NULL;
    }
    b->hosts_ok = b->text != NULL && b->d.n_errors == 0 && tr_istio_model_hosts(cfg, &b->hosts);
    tr_config_free(cfg);
}

static void push_built(struct proxy *p, struct built *b);

static void push_compiled(struct proxy *p, struct tr_config *cfg, struct tr_diags *d)
{
    struct built b;
    build(cfg, d, &b);
    push_built(p, &b);
}

static struct node node_of(const struct proxy *p)
{
    return (struct node){p->admin, p->admin_socket, p->outbound_ip, p->app_ip, p->capture};
}

/* Pushes b's text (b is consumed) if it differs from what p has. A model
 * with errors replaces nothing the proxy already has: the last good model
 * stays (the errors are logged once per resource change). */
static void push_built(struct proxy *p, struct built *b)
{
    char *text = b->text, *err = b->err;
    size_t len = b->len;
    struct tr_diags d = b->d;
    tr_istio_hosts_free(&p->hosts);
    p->hosts = b->hosts;
    p->hosts_known = b->hosts_ok;
    if (text == NULL || (d.n_errors > 0 && p->model != NULL)) {
        if (p->errors_reported != cp.resources_generation) {
            p->errors_reported = cp.resources_generation;
            char what[600];
            snprintf(what, sizeof(what), "model of %s", p->workload);
            log_diags(&d, what);
            if (text == NULL)
                tr_err("model of %s: not built (%s); the proxy keeps its last model", p->workload,
                       err ? err : "errors above");
            else
                tr_err("model of %s: %zu error(s); the proxy keeps its last good model (version "
                       "%llu)",
                       p->workload, d.n_errors, (unsigned long long)p->version);
        }
        free(text);
        free(err);
        tr_diags_free(&d);
        if (p->resend && p->model != NULL) /* a new stream: the last good model */
            send_msg(p->conn, p->stream_id, TR_CP_MODEL, p->version, p->model, p->model_len, false);
        p->resend = false;
        return;
    }
    tr_diags_free(&d);
    free(err);
    bool resend = p->resend;
    p->resend = false;
    if (p->model != NULL && p->model_len == len && memcmp(p->model, text, len) == 0) {
        free(text);
        if (resend) /* unchanged, on a new stream: the same version again */
            send_msg(p->conn, p->stream_id, TR_CP_MODEL, p->version, p->model, p->model_len, false);
        return; /* unchanged: nothing to push */
    }
    free(p->model);
    p->model = text;
    p->model_len = len;
    p->version = ++cp.next_version;
    send_msg(p->conn, p->stream_id, TR_CP_MODEL, p->version, text, len, false);
    tr_info("control: pushed model version %llu to %s (%zu bytes)", (unsigned long long)p->version,
            p->workload, len);
}

/* --------------------------------------------------- compiling a batch */

/* After a change, the proxies it reaches are compiled on a few threads: a
 * compile is a pure function of the registry (read-only, shared) and the
 * proxy's settings, and builds its model in its own memory. The threads
 * live for one batch; the loop waits for them (a change's compiles are
 * what the proxies wait for anyway), and everything that touches the
 * control plane's state (pushing, logging) happens after, on the loop. */
#define BATCH_MIN_PER_THREAD 16u
#define BATCH_MAX_THREADS    8u

struct job {
    struct proxy *p;
    struct built b;
};

struct batch {
    struct job *jobs;
    size_t n;
    _Atomic size_t next;
};

static void *batch_worker(void *arg)
{
    struct batch *bt = arg;
    for (size_t i; (i = atomic_fetch_add(&bt->next, 1)) < bt->n;) {
        struct job *j = &bt->jobs[i];
        struct tr_diags d;
        tr_diags_init(&d);
        struct node nd = node_of(j->p);
        build(compile_for(j->p->workload, j->p->ns, j->p->name, &nd, &d), &d, &j->b);
    }
    return NULL;
}

static void compile_batch(struct job *jobs, size_t n)
{
    struct batch bt = {.jobs = jobs, .n = n};
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t threads = cpus > 1 ? (size_t)cpus : 1;
    if (threads > BATCH_MAX_THREADS)
        threads = BATCH_MAX_THREADS;
    if (threads > n / BATCH_MIN_PER_THREAD)
        threads = n / BATCH_MIN_PER_THREAD > 0 ? n / BATCH_MIN_PER_THREAD : 1;
    pthread_t tid[BATCH_MAX_THREADS];
    size_t started = 0;
    for (; started + 1 < threads; started++)
        if (pthread_create(&tid[started], NULL, batch_worker, &bt) != 0)
            break; /* fewer threads: the loop's thread does the rest */
    batch_worker(&bt);
    for (size_t k = 0; k < started; k++)
        pthread_join(tid[k], NULL);
}

static void push_model(struct proxy *p)
{
    if (p->conn == NULL || p->stream_id == 0 || cp.reg == NULL)
        return;
    struct tr_diags d;
    tr_diags_init(&d);
    struct node nd = node_of(p);
    push_compiled(p, compile_for(p->workload, p->ns, p->name, &nd, &d), &d);
}

static void proxy_free(struct proxy *p)
{
    free(p->workload);
    free(p->ns);
    free(p->name);
    free(p->admin);
    free(p->capture);
    free(p->outbound_ip);
    free(p->app_ip);
    free(p->admin_socket);
    free(p->principal);
    free(p->model);
    free(p->nack_msg);
    tr_istio_hosts_free(&p->hosts);
    free(p);
}

/* Forgets proxies disconnected for longer than max_age seconds (pods come
 * and go with every rollout: their last models must not pile up). */
static void evict_disconnected(time_t max_age)
{
    time_t now = time(NULL);
    for (struct proxy **pp = &cp.proxies; *pp != NULL;) {
        struct proxy *p = *pp;
        if (p->conn == NULL && now - p->disconnected_at >= max_age) {
            *pp = p->next;
            cp.n_proxies--;
            proxy_free(p);
        } else {
            pp = &p->next;
        }
    }
}

static void proxy_detach(struct proxy *p)
{
    if (p->conn != NULL)
        p->conn->proxy = NULL;
    p->conn = NULL;
    p->stream_id = 0;
    p->disconnected_at = time(NULL);
}

/* ------------------------------------------------------------ requests */

static struct req *req_of(struct conn *c, int32_t sid)
{
    for (struct req *r = c->reqs; r != NULL; r = r->next)
        if (r->sid == sid)
            return r;
    return NULL;
}

static void req_free(struct req *r)
{
    tr_cp_reader_free(&r->rd);
    OPENSSL_cleanse(r->token, sizeof(r->token));
    free(r);
}

/* ?workload=NS/NAME&admin=IP:PORT&capture=MODE; values are names,
 * addresses and modes only. */
static bool query_value(const char *query, const char *key, char *out, size_t size)
{
    size_t kl = strlen(key);
    for (const char *q = query; q != NULL && *q;) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        if (n > kl && strncmp(q, key, kl) == 0 && q[kl] == '=') {
            size_t vl = n - kl - 1;
            if (vl == 0 || vl >= size)
                return false;
            for (size_t i = 0; i < vl; i++) {
                char ch = q[kl + 1 + i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || strchr("-._/:[]", ch) != NULL))
                    return false;
            }
            memcpy(out, q + kl + 1, vl);
            out[vl] = '\0';
            return true;
        }
        q = amp ? amp + 1 : NULL;
    }
    return false;
}

static void open_stream(struct conn *c, struct req *r, const char *query)
{
    char workload[256], admin[128], capture[32], out_ip[64], app_ip[64], sock[256];
    bool has_admin = query_value(query, "admin", admin, sizeof(admin));
    bool has_capture = query_value(query, "capture", capture, sizeof(capture));
    bool has_out = query_value(query, "outbound_ip", out_ip, sizeof(out_ip));
    bool has_app = query_value(query, "app_ip", app_ip, sizeof(app_ip));
    bool has_sock = query_value(query, "admin_socket", sock, sizeof(sock)) && sock[0] == '/';
    char *slash =
        query_value(query, "workload", workload, sizeof(workload)) ? strchr(workload, '/') : NULL;
    if (slash == NULL || slash == workload || slash[1] == '\0' || strchr(slash + 1, '/')) {
        respond(c, r, "400", true);
        return;
    }
    if (c->peer_id == NULL) {
        respond(c, r, "401", true);
        return;
    }
    if (c->proxy != NULL) {
        /* One workload per connection: a second stream would leave the first
         * workload bound to a connection that no longer knows it. */
        respond(c, r, "409", true);
        return;
    }
    if (has_capture && strcmp(capture, "redirect") != 0) {
        tr_warn("control: %s asked for capture mode '%s'; only 'redirect' exists", c->peer_id,
                capture);
        respond(c, r, "400", true);
        return;
    }
    char ns[256];
    snprintf(ns, sizeof(ns), "%.*s", (int)(slash - workload), workload);
    const char *name = slash + 1;
    /* The workload's identity must be the one on the connection: compile
     * (the model it will get) to learn it (its Pod's service account). */
    struct tr_diags d;
    tr_diags_init(&d);
    struct node nd = {has_admin ? admin : NULL, has_sock ? sock : NULL, has_out ? out_ip : NULL,
                      has_app ? app_ip : NULL, has_capture ? capture : NULL};
    struct tr_config *cfg = compile_for(workload, ns, name, &nd, &d);
    bool known = cfg != NULL && cfg->node.principal != NULL;
    bool same = known && strcmp(cfg->node.principal, c->peer_id) == 0;
    if (!same) {
        tr_warn("control: %s asked for the model of %s (%s): refused", c->peer_id, workload,
                known ? cfg->node.principal : "no such workload");
        if (!known)
            log_diags(&d, "stream");
        tr_config_free(cfg);
        tr_diags_free(&d);
        respond(c, r, known ? "403" : "404", true);
        return;
    }
    struct proxy *p = proxy_find(workload);
    if (p == NULL && cp.n_proxies >= MAX_PROXIES)
        evict_disconnected(0);
    if (p == NULL) {
        if (cp.n_proxies >= MAX_PROXIES || (p = calloc(1, sizeof(*p))) == NULL) {
            tr_config_free(cfg);
            tr_diags_free(&d);
            respond(c, r, "503", true);
            return;
        }
        p->workload = strdup(workload);
        p->ns = strndup(workload, (size_t)(slash - workload));
        p->name = strdup(slash + 1);
        if (p->workload == NULL || p->ns == NULL || p->name == NULL) {
            free(p->workload);
            free(p->ns);
            free(p->name);
            free(p);
            tr_config_free(cfg);
            tr_diags_free(&d);
            respond(c, r, "503", true);
            return;
        }
        p->next = cp.proxies;
        cp.proxies = p;
        cp.n_proxies++;
    }
    if (p->conn != NULL) { /* a newer connection of the same workload wins */
        tr_info("control: %s reconnected; the older stream is closed", p->workload);
        struct conn *old = p->conn;
        tr_h2_reset_stream(tr_link_h2(old->link), p->stream_id, 0 /* NO_ERROR */);
        tr_link_flush(old->link);
        proxy_detach(p);
    }
    free(p->admin);
    free(p->capture);
    free(p->outbound_ip);
    free(p->app_ip);
    free(p->admin_socket);
    p->admin_socket = has_sock ? strdup(sock) : NULL;
    p->admin = has_admin ? strdup(admin) : NULL;
    p->capture = has_capture ? strdup(capture) : NULL;
    p->outbound_ip = has_out ? strdup(out_ip) : NULL;
    p->app_ip = has_app ? strdup(app_ip) : NULL;
    free(p->principal);
    p->principal = strdup(c->peer_id);
    p->conn = c;
    p->stream_id = r->sid;
    p->connected_at = time(NULL);
    p->cert_not_after = c->peer_not_after;
    c->proxy = p;
    tr_timer_cancel(cp.loop, &c->idle);
    p->errors_reported = 0;
    respond(c, r, "200", false);
    send_msg(c, r->sid, TR_CP_BUNDLE, 0, cp.bundle, cp.bundle_len, false);
    /* A reconnecting proxy gets its model again (it skips an unchanged one),
     * or the last good one when this compile has errors. */
    p->resend = true;
    push_compiled(p, cfg, &d);
    tr_info("control: %s connected as %s", p->workload, c->peer_id);
}

static int sign_csr(struct conn *c, struct req *r, const char *csr, size_t len)
{
    char id[512];
    char *ns = NULL, *sa = NULL, *err = NULL;
    if (c->peer_id != NULL && time(NULL) < c->peer_not_after && strlen(c->peer_id) < sizeof(id)) {
        /* renewal: the same identity as the certificate on the connection,
         * while that certificate is still valid (else: the token again) */
        snprintf(id, sizeof(id), "%s", c->peer_id);
    } else if (r->token[0] != '\0' &&
               tr_ca_token_check(cp.o->state_dir, r->token, &ns, &sa, &err) == 0) {
        if (tr_ca_spiffe_id(tr_ca_trust_domain(cp.ca), ns, sa, id, sizeof(id)) < 0)
            id[0] = '\0';
    } else {
        tr_warn("control: certificate refused: %s", err ? err : "no token and no certificate");
        free(err);
        respond(c, r, "401", true);
        return 0;
    }
    free(ns);
    free(sa);
    free(err);
    err = NULL;
    size_t chain_len = 0;
    time_t not_after = 0;
    char *chain = id[0] ? tr_ca_sign_until(cp.ca, csr, len, id, cp.o->cert_lifetime_s, &chain_len,
                                           &not_after, &err)
                        : NULL;
    if (chain == NULL) {
        tr_warn("control: certificate for %s refused: %s", id, err ? err : "bad identity");
        free(err);
        respond(c, r, "400", true);
        return 0;
    }
    time_t now = time(NULL);
    long life = not_after > now ? (long)(not_after - now) : 0;
    char renew[32];
    snprintf(renew, sizeof(renew), "%ld", (long)(life * cp.o->renew_fraction) + 1);
    struct tr_h2_header h[] = {
        {{":status", 7}, {"200", 3}},
        {{"content-type", 12}, {"application/x-trellis", 21}},
        {{"trellis-renew-in", 16}, {renew, strlen(renew)}},
    };
    tr_h2_submit_headers(tr_link_h2(c->link), r->sid, h, 3, false);
    r->answered = true;
    send_msg(c, r->sid, TR_CP_CERT, 0, chain, chain_len, false);
    send_msg(c, r->sid, TR_CP_BUNDLE, 0, cp.bundle, cp.bundle_len, true);
    tr_info("control: issued %s (valid %ld s)", id, life);
    if (c->peer_id != NULL && strcmp(c->peer_id, id) == 0) {
        /* The peer proved it holds the new key (the CSR's signature): this
         * long-lived connection is good for as long as that certificate. */
        c->peer_not_after = not_after;
    } else if (c->proxy == NULL) {
        /* A bootstrap: the token authenticated this connection for the
         * identity just issued to the key the CSR proves the peer holds,
         * so the peer may open its stream here, as it would on a new
         * connection presenting that certificate (one TLS handshake less
         * per proxy). A connection already bound to a stream keeps its
         * identity. */
        char *bound = strdup(id);
        if (bound != NULL) {
            free(c->peer_id);
            c->peer_id = bound;
            c->peer_not_after = not_after;
        }
    }
    if (c->proxy != NULL)
        c->proxy->cert_not_after = not_after;
    free(chain);
    return 0;
}

static int on_req_msg(void *arg, enum tr_cp_type t, uint64_t version, const char *p, size_t len)
{
    struct conn *c = ((void **)arg)[0];
    struct req *r = ((void **)arg)[1];
    if (r->answered)
        return 1; /* one message per request */
    if (r->kind == REQ_CERT && t == TR_CP_CERT)
        return sign_csr(c, r, p, len);
    if (r->kind == REQ_ACK && (t == TR_CP_ACK || t == TR_CP_NACK) && c->proxy != NULL) {
        struct proxy *px = c->proxy;
        if (t == TR_CP_ACK) {
            px->acked = version;
            if (px->nacked <= version) {
                free(px->nack_msg);
                px->nack_msg = NULL;
            }
            tr_info("control: %s acknowledged version %llu", px->workload,
                    (unsigned long long)version);
        } else {
            px->nacked = version;
            free(px->nack_msg);
            px->nack_msg = strndup(p, len > MAX_NACK_MESSAGE ? MAX_NACK_MESSAGE : len);
            tr_warn("control: %s refused version %llu: %s", px->workload,
                    (unsigned long long)version, px->nack_msg ? px->nack_msg : "");
        }
        respond(c, r, "200", true);
        return 0;
    }
    respond(c, r, "400", true);
    return 0;
}

/* ------------------------------------------------------- link callbacks */

static void conn_ready(void *owner, struct tr_link *l)
{
    struct conn *c = owner;
    c->peer_id = peer_spiffe_id(tr_link_ssl(l), &c->peer_not_after);
}

static int conn_headers(void *owner, struct tr_link *l, int32_t sid, const struct tr_h2_header *h,
                        size_t n, bool end_stream)
{
    struct conn *c = owner;
    (void)l;
    struct req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return 1;
    r->sid = sid;
    r->next = c->reqs;
    c->reqs = r;
    char method[8] = "", path[2048] = "";
    const char *v = header(h, n, ":method");
    snprintf(method, sizeof(method), "%s", v ? v : "");
    v = header(h, n, ":path");
    if (v == NULL || strlen(v) >= sizeof(path)) {
        r->kind = REQ_REFUSED;
        respond(c, r, "400", true);
        return 0;
    }
    strcpy(path, v);
    char *q = strchr(path, '?');
    if (q != NULL)
        *q++ = '\0';
    if (strcmp(method, "GET") == 0 && strcmp(path, TR_CP_PATH_STREAM) == 0) {
        r->kind = REQ_STREAM;
        open_stream(c, r, q);
        return 0;
    }
    if (strcmp(method, "POST") == 0 && strcmp(path, TR_CP_PATH_CERT) == 0 && !end_stream) {
        r->kind = REQ_CERT;
        tr_cp_reader_init(&r->rd, MAX_CSR_BODY);
        const char *auth = header(h, n, "authorization");
        if (auth != NULL && strncmp(auth, "Bearer ", 7) == 0 && strlen(auth + 7) == TR_CA_TOKEN_HEX)
            memcpy(r->token, auth + 7, TR_CA_TOKEN_HEX + 1);
        return 0;
    }
    if (strcmp(method, "POST") == 0 && strcmp(path, TR_CP_PATH_ACK) == 0 && !end_stream) {
        if (c->proxy == NULL) { /* only the connection holding a stream acknowledges */
            r->kind = REQ_REFUSED;
            respond(c, r, "401", true);
            return 0;
        }
        r->kind = REQ_ACK;
        tr_cp_reader_init(&r->rd, MAX_ACK_BODY);
        return 0;
    }
    r->kind = REQ_REFUSED;
    respond(c, r, "404", true);
    return 0;
}

static int conn_data(void *owner, struct tr_link *l, int32_t sid, const uint8_t *data, size_t len,
                     bool end_stream)
{
    struct conn *c = owner;
    (void)l;
    struct req *r = req_of(c, sid);
    if (r == NULL || (r->kind != REQ_CERT && r->kind != REQ_ACK))
        return 0; /* bodies of refused requests are dropped */
    const char *why = NULL;
    void *arg[2] = {c, r};
    if (tr_cp_read(&r->rd, data, len, on_req_msg, arg, &why) < 0 && !r->answered) {
        tr_warn("control: bad request body: %s", why ? why : "?");
        respond(c, r, "400", true);
    }
    if (end_stream && !r->answered)
        respond(c, r, "400", true);
    return 0;
}

static void conn_stream_close(void *owner, struct tr_link *l, int32_t sid, uint32_t error)
{
    struct conn *c = owner;
    (void)l;
    (void)error;
    for (struct req **pp = &c->reqs; *pp != NULL; pp = &(*pp)->next) {
        struct req *r = *pp;
        if (r->sid != sid)
            continue;
        *pp = r->next;
        if (r->kind == REQ_STREAM && c->proxy != NULL && c->proxy->stream_id == sid) {
            tr_info("control: %s disconnected", c->proxy->workload);
            proxy_detach(c->proxy);
        }
        req_free(r);
        return;
    }
}

static void conn_free(struct conn *c)
{
    tr_timer_cancel(cp.loop, &c->idle);
    cp.n_conns--;
    if (c->proxy != NULL) {
        tr_info("control: %s disconnected", c->proxy->workload);
        proxy_detach(c->proxy);
    }
    while (c->reqs != NULL) {
        struct req *r = c->reqs;
        c->reqs = r->next;
        req_free(r);
    }
    *c->pprev = c->next;
    if (c->next != NULL)
        c->next->pprev = c->pprev;
    free(c->peer_id);
    free(c);
}

static void conn_closed(void *owner, struct tr_link *l, const char *why)
{
    struct conn *c = owner;
    (void)l;
    tr_debug("control: connection closed: %s", why);
    conn_free(c);
}

static const struct tr_link_ops conn_ops = {
    .on_ready = conn_ready,
    .on_headers = conn_headers,
    .on_data = conn_data,
    .on_stream_close = conn_stream_close,
    .on_closed = conn_closed,
};

static void on_idle(struct tr_timer *t)
{
    struct conn *c = tr_container_of(t, struct conn, idle);
    if (c->proxy != NULL)
        return;
    tr_debug("control: a connection opened no stream in %u ms; closed", CONN_IDLE_MS);
    tr_link_close(c->link); /* silent: no on_closed; the memory goes after this turn */
    conn_free(c);
}

static void accept_later_cb(struct tr_deferred *d);

static void accept_some(void)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = tr_sock_accept(cp.listen_io.fd, &peer, &plen);
        if (fd < 0)
            return;
        if (cp.n_conns >= MAX_CONNS) {
            if (cp.refused_conns++ % 1000 == 0)
                tr_warn("control: %u connections open; refusing more (%zu so far)", MAX_CONNS,
                        cp.refused_conns);
            close(fd);
            continue;
        }
        SSL *ssl = SSL_new(cp.server_ctx);
        struct conn *c = calloc(1, sizeof(*c));
        if (ssl == NULL || c == NULL) {
            SSL_free(ssl);
            free(c);
            close(fd);
            continue;
        }
        c->link = tr_link_new(cp.loop, fd, ssl, TR_H2_SERVER, &conn_ops, c);
        if (c->link == NULL) {
            free(c);
            continue;
        }
        c->next = cp.conns;
        if (cp.conns != NULL)
            cp.conns->pprev = &c->next;
        c->pprev = &cp.conns;
        cp.conns = c;
        cp.n_conns++;
        tr_timer_init(&c->idle, on_idle);
        tr_timer_set(cp.loop, &c->idle, CONN_IDLE_MS);
    }
    /* More may wait: the listener is edge-triggered, so come back this turn
     * rather than wait for a connection that may never come. */
    tr_loop_defer(cp.loop, &cp.accept_later, accept_later_cb);
}

static void accept_later_cb(struct tr_deferred *d)
{
    (void)d;
    accept_some();
}

static void on_accept(struct tr_io *io, uint32_t events)
{
    (void)io;
    (void)events;
    accept_some();
}

/* ------------------------------------------------------------ resources */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void reload_resources(void)
{
    double t0 = now_ms();
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = tr_store_snapshot(cp.store, &d);
    tr_diags_sort(&d);
    log_diags(&d, "resources");
    tr_diags_free(&d);
    if (rs == NULL) {
        tr_err("control: resources could not be read; the last snapshot stays in force");
        return;
    }
    double t_snap = now_ms();
    /* What the change can reach (dialect/istio/change.c); out of memory:
     * everything. */
    struct tr_istio_hosts change;
    size_t n_changed = 0;
    bool kept = false;
    if (!tr_istio_change_hosts(cp.rs, rs, &change, &n_changed, &kept))
        change.any = true, kept = false;
    double t_diff = now_ms();
    /* Routes, rules and Endpoints of known hosts edited in place: the
     * registry (services, endpoints, instances) stays, rebound to the new
     * snapshot, the edited endpoints read again into it. */
    struct tr_istio_registry *reg =
        kept && cp.reg != NULL
            ? tr_istio_registry_rebind(cp.base_reg ? cp.base_reg : cp.reg, cp.rs, rs)
            : NULL;
    if (reg != NULL) {
        if (cp.base_reg != NULL) { /* the last rebound one goes */
            tr_istio_registry_free(cp.reg);
            tr_rset_free(cp.rs);
        } else {
            cp.base_reg = cp.reg;
            cp.base_rs = cp.rs;
        }
    } else {
        struct tr_istio_options ro = {.trust_domain = tr_ca_trust_domain(cp.ca),
                                      .root_ns = cp.o->root_ns};
        tr_diags_init(&d);
        reg = tr_istio_registry_new(rs, &ro, &d);
        tr_diags_sort(&d);
        log_diags(&d, "resources");
        tr_diags_free(&d);
        if (reg == NULL) {
            tr_rset_free(rs);
            tr_istio_hosts_free(&change);
            tr_err("control: out of memory building the registry; the last snapshot stays in "
                   "force");
            return;
        }
        tr_istio_registry_free(cp.reg);
        tr_rset_free(cp.rs);
        tr_istio_registry_free(cp.base_reg);
        tr_rset_free(cp.base_rs);
        cp.base_reg = NULL;
        cp.base_rs = NULL;
    }
    double t_reg = now_ms();
    cp.rs = rs;
    cp.reg = reg;
    cp.resources_generation++;
    evict_disconnected(3600);
    double t1 = now_ms();
    size_t n = 0, compiled = 0;
    for (struct proxy *p = cp.proxies; p != NULL; p = p->next, n++)
        compiled += p->conn != NULL && p->stream_id != 0 &&
                    (!p->hosts_known || tr_istio_hosts_meet(&p->hosts, &change));
    struct job *jobs = compiled > 0 ? calloc(compiled, sizeof(*jobs)) : NULL;
    size_t k = 0;
    for (struct proxy *p = cp.proxies; p != NULL; p = p->next)
        if (p->conn != NULL && p->stream_id != 0 &&
            (!p->hosts_known || tr_istio_hosts_meet(&p->hosts, &change))) {
            if (jobs != NULL)
                jobs[k++].p = p;
            else
                push_model(p); /* out of memory for the batch: one at a time */
        }
    double t2 = t1;
    if (jobs != NULL) {
        compile_batch(jobs, k);
        t2 = now_ms();
        for (size_t i = 0; i < k; i++)
            push_built(jobs[i].p, &jobs[i].b);
        free(jobs);
    }
    double t3 = now_ms();
    tr_info("control: resources generation %llu: %zu objects read in %.1f ms, %zu changed (%s) "
            "%.1f ms, registry %s %.1f ms; %zu of %zu proxies compiled in %.1f ms, pushes queued "
            "in %.1f ms",
            (unsigned long long)cp.resources_generation, tr_rset_count(rs), t_snap - t0, n_changed,
            change.any ? "any workload" : "by host", t_diff - t_snap,
            cp.base_reg != NULL ? "kept" : "built", t_reg - t_diff, compiled, n, t2 - t1, t3 - t2);
    tr_istio_hosts_free(&change);
}

static void on_debounce(struct tr_timer *t)
{
    (void)t;
    cp.first_change_ms = 0;
    reload_resources();
}

static void on_store_change(struct tr_io *io, uint32_t events)
{
    (void)io;
    (void)events;
    if (!tr_store_drain(cp.store))
        return;
    /* Each change restarts the quiet time, up to a bound: a file rewritten
     * without pause is still read. While a file is being written (written
     * to, not yet closed) the quiet time does not start: its close is a
     * change that starts it, so half a file is not read however slowly it
     * is written, and the quiet time only has to group files written
     * together. */
    double now = now_ms();
    if (cp.first_change_ms == 0)
        cp.first_change_ms = now;
    double left = cp.first_change_ms + TR_CONTROL_DEBOUNCE_MAX_MS - now;
    uint32_t wait = tr_store_writing(cp.store) ? TR_CONTROL_DEBOUNCE_MAX_MS : cp.o->debounce_ms;
    if (left < wait)
        wait = left > 0 ? (uint32_t)left : 0;
    tr_timer_set(cp.loop, &cp.debounce, wait);
}

/* --------------------------------------------------------------- status */

static void write_status(struct tr_fmt *f)
{
    time_t now = time(NULL);
    tr_fmt_printf(f, "{\"now\": %lld, \"trust_domain\": ", (long long)now);
    tr_fmt_json_cstr(f, tr_ca_trust_domain(cp.ca));
    tr_fmt_printf(f,
                  ", \"ca_not_after\": %lld, \"ca_expiry\": \"%s\", \"resources_generation\": "
                  "%llu, \"proxies\": [",
                  (long long)tr_ca_not_after(cp.ca),
                  tr_ca_expiry_name(tr_ca_expiry_status(0, tr_ca_not_after(cp.ca), true, now)),
                  (unsigned long long)cp.resources_generation);
    bool first = true;
    for (struct proxy *p = cp.proxies; p != NULL; p = p->next) {
        tr_fmt_printf(f, "%s\n  {\"workload\": ", first ? "" : ",");
        first = false;
        tr_fmt_json_cstr(f, p->workload);
        tr_fmt_cstr(f, ", \"admin_socket\": ");
        if (p->admin_socket)
            tr_fmt_json_cstr(f, p->admin_socket);
        else
            tr_fmt_cstr(f, "null");
        tr_fmt_cstr(f, ", \"identity\": ");
        if (p->principal)
            tr_fmt_json_cstr(f, p->principal);
        else
            tr_fmt_cstr(f, "null");
        /* A leaf's issue time is not kept: judge it by the configured life. */
        time_t nb = p->cert_not_after - cp.o->cert_lifetime_s;
        tr_fmt_printf(f,
                      ", \"connected\": %s, \"version\": %llu, \"acked\": %llu, \"nacked\": %llu, "
                      "\"cert_not_after\": %lld, \"cert_expiry\": \"%s\", \"connected_at\": %lld, "
                      "\"nack_message\": ",
                      p->conn ? "true" : "false", (unsigned long long)p->version,
                      (unsigned long long)p->acked, (unsigned long long)p->nacked,
                      (long long)p->cert_not_after,
                      p->cert_not_after ? tr_ca_expiry_name(tr_ca_expiry_status(
                                              nb, p->cert_not_after, false, now))
                                        : "none",
                      (long long)p->connected_at);
        if (p->nack_msg)
            tr_fmt_json_cstr(f, p->nack_msg);
        else
            tr_fmt_cstr(f, "null");
        tr_fmt_cstr(f, "}");
    }
    tr_fmt_cstr(f, "\n]}\n");
}

static void on_status(struct tr_io *io, uint32_t events)
{
    (void)events;
    for (;;) { /* edge-triggered: until EAGAIN (a local socket of mode 0600) */
        int fd = accept4(io->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct tr_fmt f;
        tr_fmt_init_growable(&f, 64u * 1024 * 1024);
        write_status(&f);
        size_t len = 0;
        char *text = tr_fmt_take(&f, &len);
        /* Blocking write with a timeout: a reader that stalls is dropped. */
        struct timeval tv = {.tv_sec = 1};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        for (size_t off = 0; text != NULL && off < len;) {
            ssize_t n = write(fd, text + off, len - off);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        free(text);
        tr_fmt_free(&f);
        close(fd);
    }
}

static int status_listen(char **err)
{
    if (asprintf(&cp.status_path, "%s/control.sock", cp.o->state_dir) < 0)
        return -1;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(cp.status_path) >= sizeof(a.sun_path)) {
        *err = strdup("state directory path too long for control.sock");
        return -1;
    }
    strcpy(a.sun_path, cp.status_path);
    unlink(cp.status_path); /* ours: the state directory is 0700 */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    mode_t old = umask(0077);
    int rc = fd >= 0 ? bind(fd, (struct sockaddr *)&a, sizeof(a)) : -1;
    umask(old);
    if (rc != 0 || listen(fd, 16) != 0) {
        if (asprintf(err, "%s: %s", cp.status_path, strerror(errno)) < 0)
            *err = NULL;
        if (fd >= 0)
            close(fd);
        return -1;
    }
    cp.status_io.fd = fd;
    cp.status_io.cb = on_status;
    return tr_loop_add(cp.loop, &cp.status_io, EPOLLIN);
}

/* ------------------------------------------------------------------ run */

/* SIGHUP: the CA's files again (a root rotation: add the new root to
 * root-cert.pem, later sign with it, later drop the old one). A CA that
 * does not load changes nothing. Every connected proxy gets the new trust
 * bundle; the control plane's own certificate is signed again. */
static void reload_ca(void)
{
    char *err = NULL;
    struct tr_ca *ca = tr_ca_load(cp.o->state_dir, &err);
    size_t len = 0;
    char *bundle = ca ? tr_ca_bundle_pem(ca, &len) : NULL;
    if (ca == NULL || bundle == NULL) {
        tr_err("control: SIGHUP: the CA in %s does not load (%s); the current one stays",
               cp.o->state_dir, err ? err : "out of memory");
        free(err);
        tr_ca_free(ca);
        return;
    }
    if (strcmp(tr_ca_trust_domain(ca), tr_ca_trust_domain(cp.ca)) != 0) {
        tr_err("control: SIGHUP: the CA's trust domain changed (%s -> %s): refused; the current "
               "one stays",
               tr_ca_trust_domain(cp.ca), tr_ca_trust_domain(ca));
        tr_ca_free(ca);
        free(bundle);
        return;
    }
    struct tr_ca *old = cp.ca;
    char *old_bundle = cp.bundle;
    cp.ca = ca;
    cp.bundle = bundle;
    cp.bundle_len = len;
    SSL_CTX *ctx = make_server_ctx(&err);
    if (ctx == NULL) {
        tr_err("control: SIGHUP: cannot sign our own certificate with the new CA (%s); the "
               "current CA stays",
               err ? err : "error");
        free(err);
        cp.ca = old;
        cp.bundle = old_bundle;
        cp.bundle_len = strlen(old_bundle);
        tr_ca_free(ca);
        free(bundle);
        return;
    }
    SSL_CTX_free(cp.server_ctx);
    cp.server_ctx = ctx;
    tr_ca_free(old);
    free(old_bundle);
    size_t n = 0;
    for (struct proxy *p = cp.proxies; p != NULL; p = p->next)
        if (p->conn != NULL && p->stream_id != 0) {
            send_msg(p->conn, p->stream_id, TR_CP_BUNDLE, 0, cp.bundle, cp.bundle_len, false);
            n++;
        }
    tr_info("control: SIGHUP: CA reloaded; trust bundle sent to %zu proxies", n);
}

static void on_signal(struct tr_io *io, uint32_t events)
{
    (void)events;
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            tr_loop_stop(cp.loop);
        else if (si.ssi_signo == SIGHUP)
            reload_ca();
    }
}

static bool parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *colon = strrchr(s, ':');
    char host[64];
    size_t hl = colon ? (size_t)(colon - s) : 0;
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (colon == NULL || hl == 0 || hl >= sizeof(host) || *end != '\0' || port < 0 || port > 65535)
        return false;
    memcpy(host, s, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof(*v4);
        return true;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*v6);
        return true;
    }
    return false;
}

static int fail(char *err)
{
    fprintf(stderr, "trellis control: %s\n", err ? err : "out of memory");
    free(err);
    return 1;
}

void tr_control_malloc_setup(void)
{
    mallopt(M_TRIM_THRESHOLD, (int)TR_CONTROL_TRIM_KEEP);
    mallopt(M_MMAP_THRESHOLD, (int)TR_CONTROL_MMAP_MIN);
}

int tr_control_run(const struct tr_control_options *o)
{
    tr_control_malloc_setup();
    cp.o = o;
    char *err = NULL;
    if (tr_transport_init() != 0)
        return fail(strdup("cannot initialize the transport layer"));
    struct stat st;
    char ca_key[4096];
    snprintf(ca_key, sizeof(ca_key), "%s/ca-key.pem", o->state_dir);
    if (stat(ca_key, &st) != 0) {
        if (tr_ca_init(o->state_dir, o->trust_domain, NULL, &err) != 0)
            return fail(err);
        tr_info("control: created a new root CA in %s", o->state_dir);
    }
    cp.ca = tr_ca_load(o->state_dir, &err);
    if (cp.ca == NULL)
        return fail(err);
    cp.bundle = tr_ca_bundle_pem(cp.ca, &cp.bundle_len);
    if (cp.bundle == NULL)
        return fail(NULL);
    cp.loop = tr_loop_new();
    if (cp.loop == NULL)
        return fail(NULL);
    cp.server_ctx = make_server_ctx(&err);
    if (cp.server_ctx == NULL)
        return fail(err);
    /* Versions grow across restarts too: a restarted control plane's first
     * push is newer than anything its predecessor sent. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cp.next_version = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;

    cp.store = tr_store_files_watched(o->resources, o->n_resources);
    if (cp.store == NULL)
        return fail(strdup("cannot watch the resources (inotify)"));
    reload_resources();
    if (cp.rs == NULL)
        return fail(strdup("the resources could not be read (see above)"));
    cp.store_io.fd = tr_store_change_fd(cp.store);
    cp.store_io.cb = on_store_change;
    tr_loop_add(cp.loop, &cp.store_io, EPOLLIN);
    tr_timer_init(&cp.debounce, on_debounce);
    tr_timer_init(&cp.own_renew, on_own_renew);
    tr_timer_set(cp.loop, &cp.own_renew, OWN_CERT_LIFETIME * 1000 / 2);

    struct sockaddr_storage ss;
    socklen_t slen;
    if (!parse_listen(o->listen, &ss, &slen))
        return fail(strdup("--listen takes IP:PORT"));
    int lfd = tr_sock_listen((struct sockaddr *)&ss, slen, false, 1024);
    if (lfd < 0) {
        if (asprintf(&err, "cannot listen on %s: %s", o->listen, strerror(-lfd)) < 0)
            err = NULL;
        return fail(err);
    }
    cp.listen_io.fd = lfd;
    cp.listen_io.cb = on_accept;
    tr_loop_add(cp.loop, &cp.listen_io, EPOLLIN);
    if (status_listen(&err) != 0)
        return fail(err);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    cp.signal_io.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    cp.signal_io.cb = on_signal;
    tr_loop_add(cp.loop, &cp.signal_io, EPOLLIN);

    tr_info("trellis control ready: listening on %s, trust domain %s, status %s", o->listen,
            tr_ca_trust_domain(cp.ca), cp.status_path);
    tr_loop_run(cp.loop);

    unlink(cp.status_path);
    tr_info("control: stopped");
    return 0;
}
