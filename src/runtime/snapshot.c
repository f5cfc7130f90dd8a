#include "runtime/snapshot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <threads.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cluster/cluster.h"
#include "config/load.h"
#include "filter/authz.h"
#include "filter/jwt.h"
#include "filter/route_action.h"
#include "identity/identity.h"
#include "listener/capture.h"
#include "router/sni_route.h"
#include "net/sock.h"
#include "obs/metrics.h"
#include "router/router.h"

static struct tr_snapshot *_Atomic current;
/* Guards only the acquire/publish handshake (main thread and workers waking
 * up after a reload), never the request path. */
static mtx_t current_lock;
static once_flag current_once = ONCE_FLAG_INIT;

static void current_init(void)
{
    mtx_init(&current_lock, mtx_plain);
}

/* Frees what was compiled from cfg and the snapshot itself, not cfg. */
static void snapshot_free_compiled(struct tr_snapshot *s, const struct tr_config *cfg)
{
    if (s->tls != NULL)
        for (size_t i = 0; i < cfg->n_tls; i++)
            if (s->tls[i] != NULL)
                tr_tls_ctx_unref(s->tls[i]);
    if (s->routers != NULL)
        for (size_t i = 0; i < cfg->n_route_tables; i++)
            tr_router_free(s->routers[i]);
    if (s->authz != NULL)
        for (size_t i = 0; i < cfg->n_listeners; i++)
            tr_authz_free(s->authz[i]);
    if (s->jwt != NULL)
        for (size_t i = 0; i < cfg->n_listeners; i++)
            tr_jwt_authn_free(s->jwt[i]);
    if (s->cors != NULL)
        for (size_t i = 0; i < cfg->n_cors; i++)
            tr_cors_free(s->cors[i]);
    if (s->sni != NULL)
        for (size_t i = 0; i < cfg->n_listeners; i++)
            free((void *)s->sni[i].choices);
    if (s->lb_tables != NULL)
        for (size_t i = 0; i < cfg->n_clusters; i++)
            tr_lb_table_unref(s->lb_tables[i]);
    if (s->capture != NULL)
        for (size_t i = 0; i < cfg->n_listeners; i++)
            tr_capture_table_free(s->capture[i]);
    free(s->capture);
    if (s->sni_routes != NULL)
        for (size_t i = 0; i < cfg->n_listeners; i++)
            tr_sni_router_free(s->sni_routes[i]);
    free(s->sni_routes);
    free(s->tls);
    free(s->routers);
    free(s->authz);
    free(s->ext_authz_names);
    free(s->jwt);
    free(s->sni);
    free(s->cors);
    free(s->lb_tables);
    free(s);
}

static void snapshot_destroy(struct tr_snapshot *s)
{
    struct tr_config *cfg = s->cfg;
    snapshot_free_compiled(s, cfg);
    tr_config_free(cfg);
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static struct {
    char *cert, *key, *ca;
    uint64_t gen;
} identity;

static void wipe_free(char *s)
{
    if (s != NULL)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

void tr_snapshot_set_identity(const char *cert_pem, const char *key_pem, const char *ca_pem)
{
    wipe_free(identity.cert);
    wipe_free(identity.key);
    wipe_free(identity.ca);
    identity.cert = cert_pem ? strdup(cert_pem) : NULL;
    identity.key = key_pem ? strdup(key_pem) : NULL;
    identity.ca = ca_pem ? strdup(ca_pem) : NULL;
    identity.gen++;
}

bool tr_snapshot_has_identity(void)
{
    return identity.cert != NULL && identity.key != NULL && identity.ca != NULL;
}

/* A context's settings with the control plane's identity in place of files. */
static struct tr_tls_ctx *load_tls(const struct tr_tls_cfg *t, char **err)
{
    if (!t->from_control_plane)
        return tr_tls_ctx_load(t, err);
    if (!tr_snapshot_has_identity()) {
        tr_cfg_errorf(err, &t->loc,
                      "from_control_plane: this proxy holds no identity from a control plane "
                      "(run it with trellis proxy --control)");
        return NULL;
    }
    struct tr_tls_cfg tmp = *t;
    tmp.cert_pem = identity.cert;
    tmp.key_pem = identity.key;
    tmp.ca_pem = identity.ca;
    return tr_tls_ctx_load(&tmp, err);
}

/* prev's context for t, if it can serve t unchanged. */
static struct tr_tls_ctx *shared_tls(const struct tr_snapshot *prev, const struct tr_tls_cfg *t)
{
    if (t->from_control_plane && (prev == NULL || prev->identity_gen != identity.gen))
        return NULL;
    for (size_t j = 0; prev != NULL && j < prev->cfg->n_tls; j++) {
        const struct tr_tls_cfg *p = &prev->cfg->tls[j];
        if (!str_eq(p->name, t->name))
            continue;
        if (p->kind == t->kind && str_eq(p->cert_file, t->cert_file) &&
            str_eq(p->key_file, t->key_file) && str_eq(p->ca_file, t->ca_file) &&
            str_eq(p->cert_pem, t->cert_pem) && str_eq(p->key_pem, t->key_pem) &&
            str_eq(p->ca_pem, t->ca_pem) && str_eq(p->trust_domain, t->trust_domain) &&
            p->from_control_plane == t->from_control_plane && p->min_version == t->min_version &&
            p->session_resumption == t->session_resumption &&
            !tr_tls_ctx_files_changed(prev->tls[j]))
            return prev->tls[j];
        return NULL;
    }
    return NULL;
}

static int tls_index(const struct tr_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_tls; i++)
        if (strcmp(cfg->tls[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* TERMINATE listeners' SNI tables, from contexts validate resolved. */
static bool build_sni(struct tr_snapshot *s, const struct tr_config *cfg)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        if (l->tls_mode != TR_TLS_TERMINATE || l->n_tls_contexts == 0)
            continue;
        struct tr_tls_sni_choice *c = calloc(l->n_tls_contexts, sizeof(*c));
        if (c == NULL)
            return false;
        for (size_t k = 0; k < l->n_tls_contexts; k++) {
            int t = tls_index(cfg, l->tls_contexts[k]);
            if (t < 0) {
                free(c);
                return false; /* validate refuses this; never taken */
            }
            c[k].ctx = s->tls[t];
            c[k].names = cfg->tls[t].server_names;
            c[k].n_names = cfg->tls[t].n_server_names;
        }
        s->sni[i].choices = c;
        s->sni[i].n = l->n_tls_contexts;
    }
    return true;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Consistent-hash tables: prev's where a cluster's endpoints did not change
 * (building a Maglev table costs its 65537 entries), else new ones. prev's
 * clusters with a table are found by name through a scratch index. */
static bool lb_tables_build(struct tr_snapshot *s, const struct tr_snapshot *prev)
{
    const struct tr_config *cfg = s->cfg;
    s->lb_tables = calloc(cfg->n_clusters + 1, sizeof(*s->lb_tables));
    if (s->lb_tables == NULL)
        return false;
    size_t n_prev = prev != NULL && prev->lb_tables != NULL ? prev->cfg->n_clusters : 0;
    size_t mask = 0;
    uint32_t *slot = NULL; /* prev index + 1; 0: empty */
    for (size_t j = 0; j < n_prev; j++) {
        if (prev->lb_tables[j] == NULL)
            continue;
        if (slot == NULL) {
            size_t size = 16;
            while (size < 2 * n_prev)
                size <<= 1;
            if ((slot = calloc(size, sizeof(*slot))) == NULL)
                return false;
            mask = size - 1;
        }
        size_t k = name_hash(prev->cfg->clusters[j].name) & mask;
        while (slot[k] != 0)
            k = (k + 1) & mask;
        slot[k] = (uint32_t)j + 1;
    }
    bool ok = true;
    for (size_t i = 0; ok && i < cfg->n_clusters; i++) {
        const struct tr_cluster_cfg *cc = &cfg->clusters[i];
        /* Endpoints given by name: each view builds its table over the
         * addresses resolved (cluster/cluster.c). */
        if ((cc->lb != TR_LB_RING_HASH && cc->lb != TR_LB_MAGLEV) || cc->n_dns_endpoints > 0)
            continue;
        for (size_t k = slot != NULL ? name_hash(cc->name) & mask : 0; slot != NULL && slot[k] != 0;
             k = (k + 1) & mask) {
            size_t j = slot[k] - 1;
            if (strcmp(prev->cfg->clusters[j].name, cc->name) != 0)
                continue;
            if (tr_lb_table_fits(&prev->cfg->clusters[j], cc)) {
                tr_lb_table_ref(prev->lb_tables[j]);
                s->lb_tables[i] = prev->lb_tables[j];
            }
            break;
        }
        if (s->lb_tables[i] == NULL && (s->lb_tables[i] = tr_lb_table_build(cc)) == NULL)
            ok = false;
    }
    free(slot);
    return ok;
}

/* The routes' CORS policies, compiled at the index validate gave each. */
static bool build_cors(struct tr_snapshot *s, const struct tr_config *cfg, char **err)
{
    for (size_t t = 0; t < cfg->n_route_tables; t++) {
        const struct tr_route_table_cfg *rt = &cfg->route_tables[t];
        for (size_t v = 0; v < rt->n_vhosts; v++) {
            for (size_t r = 0; r < rt->vhosts[v].n_routes; r++) {
                const struct tr_cors_cfg *c = rt->vhosts[v].routes[r].cors;
                if (c == NULL || c->index >= cfg->n_cors)
                    continue;
                if ((s->cors[c->index] = tr_cors_build(c, err)) == NULL)
                    return false;
            }
        }
    }
    return true;
}

/* upstream_mark is only worth something if the kernel takes it (SO_MARK needs
 * CAP_NET_ADMIN): refuse the configuration now rather than fail every
 * upstream connection later. */
static bool upstream_mark_allowed(uint32_t mark, char **err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -errno : tr_sock_set_mark(fd, mark);
    if (fd >= 0)
        close(fd);
    if (rc == 0)
        return true;
    if (asprintf(err, "upstream_mark %u: cannot mark sockets: %s (SO_MARK needs CAP_NET_ADMIN)",
                 mark, strerror(-rc)) < 0)
        *err = NULL;
    return false;
}

struct tr_snapshot *tr_snapshot_build(struct tr_config *cfg, const struct tr_snapshot *prev,
                                      uint64_t generation, char **err)
{
    struct tr_snapshot *s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto oom;
    atomic_init(&s->refs, 1);
    s->generation = generation;
    s->identity_gen = identity.gen;
    s->cfg = cfg;
    s->tls = calloc(cfg->n_tls + 1, sizeof(*s->tls));
    s->routers = calloc(cfg->n_route_tables + 1, sizeof(*s->routers));
    s->authz = calloc(cfg->n_listeners + 1, sizeof(*s->authz));
    s->jwt = calloc(cfg->n_listeners + 1, sizeof(*s->jwt));
    s->sni = calloc(cfg->n_listeners + 1, sizeof(*s->sni));
    s->cors = calloc(cfg->n_cors + 1, sizeof(*s->cors));
    s->capture = calloc(cfg->n_listeners + 1, sizeof(*s->capture));
    s->sni_routes = calloc(cfg->n_listeners + 1, sizeof(*s->sni_routes));
    if (s->tls == NULL || s->routers == NULL || s->authz == NULL || s->jwt == NULL ||
        s->sni == NULL || s->cors == NULL || s->capture == NULL || s->sni_routes == NULL)
        goto oom;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (cfg->listeners[i].n_sni_routes == 0)
            continue;
        s->sni_routes[i] = tr_sni_router_build(&cfg->listeners[i]);
        if (s->sni_routes[i] == NULL)
            goto oom;
    }
    if (cfg->upstream_mark != 0 && !upstream_mark_allowed(cfg->upstream_mark, err))
        goto fail;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (cfg->listeners[i].original_destination == NULL)
            continue;
        s->capture[i] = tr_capture_table_build(cfg, i);
        if (s->capture[i] == NULL)
            goto oom;
    }
    for (size_t i = 0; i < cfg->n_tls; i++) {
        struct tr_tls_ctx *same = shared_tls(prev, &cfg->tls[i]);
        if (same != NULL) {
            tr_tls_ctx_ref(same);
            s->tls[i] = same;
            s->n_tls_shared++;
            continue;
        }
        s->tls[i] = load_tls(&cfg->tls[i], err);
        if (s->tls[i] == NULL)
            goto fail;
        /* Servers prefer h2; each upstream connection offers its cluster's
         * protocol itself (SSL_set_alpn_protos in upstream/pool.c). */
        static const unsigned char alpn[] = "\x02h2\x08http/1.1";
        if (tr_tls_ctx_set_alpn(s->tls[i], alpn, sizeof(alpn) - 1) != 0)
            goto oom;
    }
    if (!build_sni(s, cfg))
        goto oom;
    for (size_t i = 0; i < cfg->n_route_tables; i++) {
        s->routers[i] = tr_router_build(cfg, i, err);
        if (s->routers[i] == NULL)
            goto fail;
    }
    if (cfg->n_ext_authz > 0) {
        s->ext_authz_names = calloc(cfg->n_ext_authz, sizeof(*s->ext_authz_names));
        if (s->ext_authz_names == NULL)
            goto oom;
        for (size_t i = 0; i < cfg->n_ext_authz; i++)
            s->ext_authz_names[i] = tr_metrics_intern(cfg->ext_authz[i].name);
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (cfg->listeners[i].authz.n_rules + cfg->listeners[i].authz.n_policies == 0)
            continue;
        s->authz[i] = tr_authz_build(&cfg->listeners[i].authz, err);
        if (s->authz[i] == NULL)
            goto fail;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (cfg->listeners[i].request_authn.n_rules == 0)
            continue;
        s->jwt[i] = tr_jwt_authn_build(&cfg->listeners[i].request_authn, err);
        if (s->jwt[i] == NULL)
            goto fail;
    }
    if (!build_cors(s, cfg, err))
        goto fail;
    if (!lb_tables_build(s, prev))
        goto oom;
    s->h1_limits.max_request_line = cfg->limits.max_request_line;
    s->h1_limits.max_header_bytes = cfg->limits.max_header_bytes;
    s->h1_limits.max_headers = cfg->limits.max_headers;
    s->h2_limits = TR_H2_LIMITS_DEFAULT;
    s->h2_limits.max_concurrent_streams = cfg->limits.h2_max_concurrent_streams;
    s->h2_limits.initial_window_size = cfg->limits.h2_initial_window;
    s->h2_limits.connection_window_size = cfg->limits.h2_connection_window;
    s->h2_limits.max_resets_per_second = cfg->limits.h2_max_resets_per_second;
    s->h2_limits.max_header_list_size = cfg->limits.max_header_bytes;
    return s;
oom:
    if (*err == NULL)
        *err = strdup("out of memory building the configuration snapshot");
fail:
    /* The caller keeps cfg on failure. */
    if (s != NULL)
        snapshot_free_compiled(s, cfg);
    return NULL;
}

void tr_snapshot_ref(struct tr_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void tr_snapshot_unref(struct tr_snapshot *s)
{
    if (s != NULL && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        snapshot_destroy(s);
}

struct tr_snapshot *tr_snapshot_current_acquire(void)
{
    call_once(&current_once, current_init);
    mtx_lock(&current_lock);
    struct tr_snapshot *s = atomic_load_explicit(&current, memory_order_acquire);
    if (s != NULL)
        tr_snapshot_ref(s);
    mtx_unlock(&current_lock);
    return s;
}

void tr_snapshot_publish(struct tr_snapshot *s)
{
    call_once(&current_once, current_init);
    mtx_lock(&current_lock);
    struct tr_snapshot *old = atomic_exchange_explicit(&current, s, memory_order_acq_rel);
    mtx_unlock(&current_lock);
    tr_snapshot_unref(old);
}
