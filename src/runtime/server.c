#include "runtime/server.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin/admin.h"
#include "config/load.h"
#include "control/client.h"
#include "core/log.h"
#include "dns/resolver.h"
#include "event/loop.h"
#include "identity/identity.h"
#include "net/sock.h"
#include "obs/metrics.h"
#include "runtime/snapshot.h"
#include "runtime/worker.h"
#include "transport/transport.h"

#define FILE_CHECK_MS 1000

static struct {
    const struct tr_server_options *opt;
    struct tr_loop *loop;
    struct tr_worker **workers;
    unsigned n_workers;
    uint64_t generation;
    _Atomic bool ready;
    bool draining;
    struct tr_io signal_io;
    struct tr_timer file_timer;
    struct tr_timer drain_timer;
    uint64_t files_fp;
    struct tr_admin *admin;
    /* What the running configuration was built from: the file's text and
     * the partial updates applied on top of it since (owned copies), so an
     * update is checked as a whole file is, and a certificate rotation
     * rebuilds from memory without dropping updates. */
    char *doc;
    size_t doc_len;
    char *doc_name; /* the file's path, or "control-plane:vVERSION" */
    /* Control mode: the client, and the first model's snapshot, built
     * before the workers start. */
    struct tr_control_client *control;
    struct tr_snapshot *first;
    struct tr_config_patch *log;
    size_t n_log;
    /* Endpoint names, looked up on this thread's loop (dns/resolver.h). */
    struct tr_resolver *resolver;
    bool started; /* workers and admin up: ready once the names settled */
} srv;

bool tr_server_ready(void)
{
    return atomic_load(&srv.ready);
}

uint64_t tr_server_generation(void)
{
    return srv.generation;
}

static void stat_file(const char *path, struct stat *st)
{
    if (path == NULL || stat(path, st) != 0)
        memset(st, 0, sizeof(*st));
}

/* New listener addresses must be bindable before the snapshot is published:
 * a worker that fails to bind would be left without the new config. */
static int check_new_listeners(const struct tr_config *next, const struct tr_config *cur,
                               char **err)
{
    for (size_t i = 0; i < next->n_listeners; i++) {
        const struct tr_listener_cfg *l = &next->listeners[i];
        if (!l->bind)
            continue; /* virtual: no socket */
        bool exists = false;
        for (size_t j = 0; cur != NULL && j < cur->n_listeners; j++)
            exists |= cur->listeners[j].bind &&
                      tr_sock_addr_equal(&cur->listeners[j].addr.ss, &l->addr.ss);
        if (exists)
            continue;
        int fd = tr_sock_listen((const struct sockaddr *)&l->addr.ss, l->addr.len, true, 1);
        if (fd < 0) {
            char loc[512];
            tr_cfg_loc_format(&l->loc, loc, sizeof(loc));
            if (asprintf(err, "%scannot listen on %s: %s", loc, l->addr.text, strerror(-fd)) < 0)
                *err = NULL;
            return -1;
        }
        close(fd);
    }
    return 0;
}

/* Builds the next snapshot from doc with patches (srv.log, then extra). */
static struct tr_snapshot *build_snapshot(const char *doc, size_t len,
                                          const struct tr_config_patch *patches, size_t n,
                                          const struct tr_snapshot *prev, char **err)
{
    struct tr_config *cfg = tr_config_load_patched(doc, len, srv.doc_name, patches, n, err);
    if (cfg == NULL)
        return NULL;
    struct tr_snapshot *snap = tr_snapshot_build(cfg, prev, srv.generation + 1, err);
    if (snap == NULL) {
        tr_config_free(cfg);
        return NULL;
    }
    return snap;
}

static void patch_free(struct tr_config_patch *p)
{
    free((char *)p->section);
    free((char *)p->name);
    free((char *)p->field);
    free((char *)p->yaml);
}

static bool patch_copy(struct tr_config_patch *dst, const struct tr_config_patch *src)
{
    *dst = (struct tr_config_patch){
        .section = strdup(src->section),
        .name = strdup(src->name),
        .field = src->field != NULL ? strdup(src->field) : NULL,
        .yaml = src->yaml != NULL ? strndup(src->yaml, src->len) : NULL,
        .len = src->len,
    };
    if (dst->section == NULL || dst->name == NULL || (src->field != NULL && dst->field == NULL) ||
        (src->yaml != NULL && dst->yaml == NULL)) {
        patch_free(dst);
        return false;
    }
    return true;
}

static void log_clear(void)
{
    for (size_t i = 0; i < srv.n_log; i++)
        patch_free(&srv.log[i]);
    free(srv.log);
    srv.log = NULL;
    srv.n_log = 0;
}

/* Records applied patches; an update of an object supersedes earlier ones of
 * the same object (or of the same field), so the log stays bounded by the
 * number of objects. */
static bool log_add(const struct tr_config_patch *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        for (size_t j = 0; j < srv.n_log; j++) {
            struct tr_config_patch *e = &srv.log[j];
            bool same =
                strcmp(e->section, p[i].section) == 0 && strcmp(e->name, p[i].name) == 0 &&
                (p[i].field == NULL || (e->field != NULL && strcmp(e->field, p[i].field) == 0));
            if (same)
                patch_free(e);
            else
                srv.log[k++] = *e;
        }
        srv.n_log = k;
        struct tr_config_patch *grown = realloc(srv.log, (srv.n_log + 1) * sizeof(*grown));
        if (grown == NULL)
            return false;
        srv.log = grown;
        if (!patch_copy(&srv.log[srv.n_log], &p[i]))
            return false;
        srv.n_log++;
    }
    return true;
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Settings fixed at start-up: an update that changes one is applied except
 * for that setting, and says so (they need a restart). Returns how many. */
static unsigned report_restart_settings(const struct tr_config *next, const struct tr_config *cur)
{
    unsigned n = 0;
#define RESTART(changed, what, fmt, a, b)                                                          \
    do {                                                                                           \
        if (changed) {                                                                             \
            tr_warn("%s: %s changed from " fmt " to " fmt                                          \
                    "; it takes effect at the next restart, the running value stays",              \
                    next->file, what, a, b);                                                       \
            n++;                                                                                   \
        }                                                                                          \
    } while (0)
    RESTART(next->workers != cur->workers, "workers", "%u", cur->workers, next->workers);
    RESTART(next->limits.buffer_size != cur->limits.buffer_size, "limits.buffer_size", "%u",
            cur->limits.buffer_size, next->limits.buffer_size);
    RESTART(next->admin.enabled != cur->admin.enabled, "admin.enabled", "%d", cur->admin.enabled,
            next->admin.enabled);
    RESTART(!str_eq(next->admin.addr.text, cur->admin.addr.text), "admin.address", "%s",
            cur->admin.addr.text ? cur->admin.addr.text : "(none)",
            next->admin.addr.text ? next->admin.addr.text : "(none)");
    RESTART(!str_eq(next->admin.socket, cur->admin.socket), "admin.socket", "%s",
            cur->admin.socket ? cur->admin.socket : "(none)",
            next->admin.socket ? next->admin.socket : "(none)");
    RESTART(next->access_log.enabled != cur->access_log.enabled, "access_log.enabled", "%d",
            cur->access_log.enabled, next->access_log.enabled);
    RESTART(!str_eq(next->access_log.path, cur->access_log.path), "access_log.path", "%s",
            cur->access_log.path ? cur->access_log.path : "(none)",
            next->access_log.path ? next->access_log.path : "(none)");
#undef RESTART
    return n;
}

/* Workers adopt a published snapshot from their own event loops; the
 * generation in force (the metric) is the oldest any worker still starts
 * requests with. Called by each worker after adopting; the value only grows. */
void tr_server_note_adopted(void)
{
    uint64_t oldest = UINT64_MAX;
    for (unsigned i = 0; i < srv.n_workers; i++) {
        uint64_t g = atomic_load(&srv.workers[i]->adopted_generation);
        if (g < oldest)
            oldest = g;
    }
    if (oldest != UINT64_MAX)
        tr_metrics_raise_config_generation(oldest);
}

/* ---- DNS names of cluster endpoints ---- */

/* New answers were published (dns/answers.h): workers rebuild their cluster
 * views from their loops. At start-up the proxy is ready once every name
 * had its first lookup, as Envoy's clusters warm. */
static void on_dns_published(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < srv.n_workers; i++)
        tr_worker_notify(srv.workers[i], TR_WCMD_DNS);
    if (srv.started && !srv.draining && tr_resolver_settled(srv.resolver))
        atomic_store(&srv.ready, true);
}

/* The names of cfg (just published) are looked up from now on. */
static void resolver_sync(const struct tr_config *cfg)
{
    char *err = NULL;
    if (tr_resolver_sync(srv.resolver, cfg, &err) < 0)
        tr_err("%s", err != NULL ? err : "dns: cannot update the resolver");
    free(err);
}

/* Publishes snap (built from the current one): workers take it from their
 * event loops (runtime/worker.c); nobody waits. */
static int publish(struct tr_snapshot *snap, struct tr_snapshot *cur, const char *what, char **err)
{
    if (check_new_listeners(snap->cfg, cur ? cur->cfg : NULL, err) < 0) {
        tr_snapshot_unref(snap);
        return -1;
    }
    if (cur != NULL)
        report_restart_settings(snap->cfg, cur->cfg);
    srv.generation++;
    size_t shared = snap->n_tls_shared, n_tls = snap->cfg->n_tls;
    /* Alive after the publish: the global slot holds it until the next
     * publish, which only this thread does. */
    const struct tr_config *cfg = snap->cfg;
    tr_snapshot_publish(snap);
    for (unsigned i = 0; i < srv.n_workers; i++)
        tr_worker_notify(srv.workers[i], TR_WCMD_SNAPSHOT);
    resolver_sync(cfg);
    tr_metrics_config_reload(true);
    tr_info("configuration generation %llu loaded from %s (%zu of %zu TLS contexts kept)",
            (unsigned long long)srv.generation, what, shared, n_tls);
    return 0;
}

/* Rebuilds from the text and updates in force (a new identity from the
 * control plane, SIGHUP in control mode). */
static int rebuild(const char *what, char **err)
{
    if (srv.doc == NULL) {
        *err = strdup("no model yet");
        return -1;
    }
    struct tr_snapshot *cur = tr_snapshot_current_acquire();
    struct tr_snapshot *snap = build_snapshot(srv.doc, srv.doc_len, srv.log, srv.n_log, cur, err);
    int rc = snap != NULL ? publish(snap, cur, what, err) : -1;
    tr_snapshot_unref(cur);
    if (rc < 0) {
        tr_metrics_config_reload(false);
        tr_err("%s: rebuild rejected, keeping generation %llu: %s", what,
               (unsigned long long)srv.generation, *err ? *err : "error");
    }
    return rc;
}

int tr_server_reload(char **err)
{
    if (srv.opt->config_path == NULL)
        return rebuild("the control plane's model", err);
    size_t len = 0;
    char *doc = tr_config_read_file(srv.opt->config_path, &len, err);
    if (doc == NULL)
        goto rejected;
    /* The same text as before (a certificate changed, or SIGHUP without an
     * edit): the partial updates stay. A new text replaces them. */
    bool same = srv.doc != NULL && len == srv.doc_len && memcmp(doc, srv.doc, len) == 0;
    struct tr_snapshot *cur = tr_snapshot_current_acquire();
    struct tr_snapshot *snap =
        build_snapshot(doc, len, same ? srv.log : NULL, same ? srv.n_log : 0, cur, err);
    int rc = snap != NULL ? publish(snap, cur, srv.opt->config_path, err) : -1;
    tr_snapshot_unref(cur);
    if (rc < 0) {
        free(doc);
        goto rejected;
    }
    if (!same && srv.n_log > 0) {
        tr_warn("%s changed: %zu partial updates applied since the last load are replaced by it",
                srv.opt->config_path, srv.n_log);
        log_clear();
    }
    free(srv.doc);
    srv.doc = doc;
    srv.doc_len = len;
    return 0;
rejected:
    tr_metrics_config_reload(false);
    tr_err("configuration rejected, keeping generation %llu: %s",
           (unsigned long long)srv.generation, *err ? *err : "error");
    return -1;
}

int tr_server_apply_patches(const struct tr_config_patch *p, size_t n, char **err)
{
    *err = NULL;
    if (srv.doc == NULL || srv.draining) {
        *err = strdup(srv.draining ? "draining: no updates" : "no configuration loaded");
        return -1;
    }
    struct tr_config_patch *all = calloc(srv.n_log + n + 1, sizeof(*all));
    if (all == NULL) {
        *err = strdup("out of memory");
        return -1;
    }
    if (srv.n_log > 0) /* srv.log is NULL before the first update */
        memcpy(all, srv.log, srv.n_log * sizeof(*all));
    memcpy(all + srv.n_log, p, n * sizeof(*all));
    struct tr_snapshot *cur = tr_snapshot_current_acquire();
    struct tr_snapshot *snap = build_snapshot(srv.doc, srv.doc_len, all, srv.n_log + n, cur, err);
    free(all);
    int rc = snap != NULL ? publish(snap, cur, "a partial update", err) : -1;
    tr_snapshot_unref(cur);
    if (rc < 0) {
        tr_metrics_config_reload(false);
        tr_err("partial update rejected, keeping generation %llu: %s",
               (unsigned long long)srv.generation, *err ? *err : "error");
        return -1;
    }
    if (!log_add(p, n)) {
        /* Applied but not recorded: the next rebuild from memory would lose
         * it, so say so loudly; the next file load starts afresh. */
        tr_err("out of memory recording a partial update; it is in force but a certificate "
               "rotation before the next configuration load would drop it");
    }
    return 0;
}

static uint64_t files_fingerprint(void);

static void reload_and_log(void)
{
    char *err = NULL;
    tr_server_reload(&err);
    free(err);
    srv.files_fp = files_fingerprint(); /* this state of the files has been tried */
}

/* A fingerprint of the files a reload would read: the config file and every
 * certificate, key and bundle of the running snapshot. */
static uint64_t fp_mix(uint64_t h, const struct stat *st)
{
    const uint64_t v[] = {(uint64_t)st->st_ino, (uint64_t)st->st_size, (uint64_t)st->st_mtim.tv_sec,
                          (uint64_t)st->st_mtim.tv_nsec};
    for (size_t i = 0; i < 4; i++)
        h = (h ^ v[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t files_fingerprint(void)
{
    struct stat st;
    stat_file(srv.opt->config_path, &st);
    uint64_t h = fp_mix(0xcbf29ce484222325ull, &st);
    struct tr_snapshot *cur = tr_snapshot_current_acquire();
    for (size_t i = 0; cur != NULL && i < cur->cfg->n_tls; i++) {
        const struct tr_tls_cfg *t = &cur->cfg->tls[i];
        const char *files[] = {t->cert_file, t->key_file, t->ca_file};
        for (size_t f = 0; f < 3; f++) {
            stat_file(files[f], &st);
            h = fp_mix(h, &st);
        }
    }
    tr_snapshot_unref(cur);
    return h;
}

/* Config or certificate files changed on disk: reload. Certificate rotation
 * rides on the same path: a new snapshot gets new TLS contexts while
 * connections made with the old ones continue. A reload that failed is not
 * retried until the files change again (a half-written rotation is retried as
 * soon as its second file lands, and a broken file is reported once). */
static void on_file_timer(struct tr_timer *t)
{
    uint64_t fp = files_fingerprint();
    if (fp != srv.files_fp && !srv.draining) {
        tr_info("configuration or certificate files changed; reloading");
        reload_and_log();
    }
    tr_timer_set(srv.loop, t, FILE_CHECK_MS);
}

static bool all_workers_exited(void)
{
    for (unsigned i = 0; i < srv.n_workers; i++)
        if (!atomic_load(&srv.workers[i]->exited))
            return false;
    return true;
}

static void on_drain_timer(struct tr_timer *t)
{
    if (all_workers_exited()) {
        tr_loop_stop(srv.loop);
        return;
    }
    tr_timer_set(srv.loop, t, 20);
}

static void on_drain_deadline(struct tr_timer *t)
{
    (void)t;
    tr_warn("drain deadline reached; closing remaining connections");
    tr_loop_stop(srv.loop);
}

static void start_drain(void)
{
    if (srv.draining)
        return;
    srv.draining = true;
    atomic_store(&srv.ready, false);
    struct tr_snapshot *cur = tr_snapshot_current_acquire();
    uint64_t deadline_ms = cur ? cur->cfg->drain_timeout_ms : 10000;
    tr_snapshot_unref(cur);
    tr_info("draining: %u workers, deadline %llu ms", srv.n_workers,
            (unsigned long long)deadline_ms);
    for (unsigned i = 0; i < srv.n_workers; i++)
        tr_worker_notify(srv.workers[i], TR_WCMD_DRAIN);
    /* One deadline for everything: when it passes, workers stop and the
     * connections still open are closed by exit. */
    static struct tr_timer hard;
    tr_timer_init(&hard, on_drain_deadline);
    tr_timer_set(srv.loop, &hard, deadline_ms);
    tr_timer_set(srv.loop, &srv.drain_timer, 20);
}

static void on_signal(struct tr_io *io, uint32_t events)
{
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGHUP:
            if (!srv.started) /* nothing to reload before the first model is in force */
                break;
            tr_info("SIGHUP: reloading configuration");
            reload_and_log();
            break;
        case SIGTERM:
        case SIGINT:
            start_drain();
            break;
        default:
            break;
        }
    }
}

/* ---- control mode: the control plane's client calls these ---- */

static void control_identity(void *arg, const char *chain, const char *key, const char *bundle,
                             time_t not_after)
{
    (void)arg;
    (void)not_after;
    /* Kept for a rebuild that fails: the identity in force stays the one
     * the running contexts were built from. */
    static char *in_force[3];
    tr_snapshot_set_identity(chain, key, bundle);
    char *err = NULL;
    if (srv.started && rebuild("a new identity from the control plane", &err) != 0) {
        tr_err("the new identity is not used: %s", err ? err : "error");
        tr_snapshot_set_identity(in_force[0], in_force[1], in_force[2]);
        free(err);
        return;
    }
    free(err);
    const char *now[3] = {chain, key, bundle};
    for (int i = 0; i < 3; i++) {
        if (in_force[i] != NULL)
            OPENSSL_cleanse(in_force[i], strlen(in_force[i]));
        free(in_force[i]);
        in_force[i] = now[i] ? strdup(now[i]) : NULL;
    }
}

static int control_model(void *arg, uint64_t version, const char *text, size_t len, char **err)
{
    (void)arg;
    *err = NULL;
    /* The same text again (a reconnect, a restarted control plane):
     * nothing to change, and nothing is disturbed. */
    if (srv.doc != NULL && len == srv.doc_len && memcmp(text, srv.doc, len) == 0)
        return 0;
    if (srv.draining) {
        *err = strdup("draining: no updates");
        return -1;
    }
    char *name = NULL, *doc = malloc(len + 1);
    if (doc == NULL || asprintf(&name, "control-plane:v%llu", (unsigned long long)version) < 0) {
        free(doc);
        *err = strdup("out of memory");
        return -1;
    }
    memcpy(doc, text, len);
    doc[len] = '\0';
    char *old_name = srv.doc_name;
    srv.doc_name = name;
    struct tr_snapshot *cur = srv.started ? tr_snapshot_current_acquire() : NULL;
    struct tr_snapshot *snap = build_snapshot(doc, len, NULL, 0, cur, err);
    int rc = -1;
    if (snap != NULL && srv.started) {
        rc = publish(snap, cur, name, err);
    } else if (snap != NULL) {
        tr_snapshot_unref(srv.first);
        srv.first = snap;
        rc = 0;
    }
    tr_snapshot_unref(cur);
    if (rc < 0) {
        srv.doc_name = old_name;
        free(name);
        free(doc);
        if (srv.started)
            tr_metrics_config_reload(false);
        return -1;
    }
    free(old_name);
    if (srv.n_log > 0) {
        tr_warn("a new model from the control plane replaces %zu partial updates", srv.n_log);
        log_clear();
    }
    free(srv.doc);
    srv.doc = doc;
    srv.doc_len = len;
    return 0;
}

static void control_metrics(struct tr_metrics_control *out)
{
    if (srv.control == NULL)
        return;
    struct tr_control_client_stats st;
    tr_control_client_stats(srv.control, &st);
    *out = (struct tr_metrics_control){
        .connected = st.connected != 0,
        .version = st.version,
        .acks = st.acks,
        .nacks = st.nacks,
        .certificates = st.certificates,
        .connects = st.connects,
        .cert_not_after = (int64_t)st.cert_not_after,
    };
}

static const struct tr_control_client_ops control_ops = {
    .on_identity = control_identity,
    .on_model = control_model,
};

/* The first snapshot: from the file, or, in control mode, from the control
 * plane once it issued a certificate and a model that loads (meanwhile
 * nothing listens: the application's traffic waits for a proxy that can
 * serve it). NULL when there is none (reported), or SIGTERM came first. */
static struct tr_snapshot *first_snapshot(const struct tr_server_options *opt)
{
    char *err = NULL;
    if (opt->config_path != NULL) {
        srv.doc_name = strdup(opt->config_path);
        srv.doc = tr_config_read_file(opt->config_path, &srv.doc_len, &err);
        struct tr_snapshot *snap =
            srv.doc != NULL ? build_snapshot(srv.doc, srv.doc_len, NULL, 0, NULL, &err) : NULL;
        if (snap == NULL) {
            fprintf(stderr, "trellis: %s\n", err ? err : "cannot load configuration");
            free(err);
        }
        return snap;
    }
    srv.control = tr_control_client_start(srv.loop, opt->control, &control_ops, NULL, &err);
    if (srv.control == NULL) {
        fprintf(stderr, "trellis: %s\n", err ? err : "cannot start the control client");
        free(err);
        return NULL;
    }
    tr_metrics_set_control_source(control_metrics);
    tr_info("waiting for a certificate and a model from the control plane at %s",
            opt->control->address);
    while (srv.first == NULL && !srv.draining)
        tr_loop_run_once(srv.loop, 1000);
    struct tr_snapshot *snap = srv.first;
    srv.first = NULL;
    return snap;
}

int tr_server_run(const struct tr_server_options *opt)
{
    srv.opt = opt;
    if (tr_transport_init() != 0) {
        fprintf(stderr, "trellis: cannot initialize the transport layer\n");
        return 1;
    }
    char *err = NULL;
    srv.loop = tr_loop_new();
    if (srv.loop == NULL)
        return 1;
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGPIPE);
    /* Block before starting threads so that they inherit the mask and the
     * signals arrive only at the signalfd. */
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    srv.signal_io.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    srv.signal_io.cb = on_signal;
    tr_loop_add(srv.loop, &srv.signal_io, EPOLLIN);
    tr_timer_init(&srv.drain_timer, on_drain_timer);

    struct tr_snapshot *snap = first_snapshot(opt);
    if (snap == NULL) {
        tr_control_client_free(srv.control);
        return srv.draining ? 0 : 1;
    }
    const struct tr_config *cfg = snap->cfg;
    const char *level = opt->log_level ? opt->log_level : cfg->log_level;
    if (level != NULL && tr_log_level_parse(level) >= 0)
        tr_log_set_level((enum tr_log_level)tr_log_level_parse(level));
    srv.generation = 1;
    tr_snapshot_publish(snap);
    tr_metrics_raise_config_generation(1);
    srv.files_fp = files_fingerprint();

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = opt->workers >= 0 ? (unsigned)opt->workers : cfg->workers;
    if (n == 0)
        n = ncpu > 0 ? (unsigned)ncpu : 1;
    srv.workers = calloc(n, sizeof(*srv.workers));
    if (srv.workers == NULL)
        return 1;
    srv.resolver = tr_resolver_new(srv.loop, on_dns_published, NULL);
    if (srv.resolver == NULL)
        return 1;

    for (unsigned i = 0; i < n; i++) {
        srv.workers[i] = tr_worker_start(i, n, &err);
        if (srv.workers[i] == NULL) {
            fprintf(stderr, "trellis: %s\n", err ? err : "cannot start worker");
            return 1;
        }
        srv.n_workers++;
    }
    if (cfg->admin.enabled) {
        srv.admin = tr_admin_start(srv.loop, &cfg->admin, &err);
        if (srv.admin == NULL) {
            fprintf(stderr, "trellis: %s\n", err ? err : "cannot start admin");
            return 1;
        }
    }
    tr_timer_init(&srv.file_timer, on_file_timer);
    tr_timer_set(srv.loop, &srv.file_timer, FILE_CHECK_MS);
    resolver_sync(cfg);
    srv.started = true;
    atomic_store(&srv.ready, tr_resolver_settled(srv.resolver));
    tr_info("trellis proxy ready: %u workers, %zu listeners, config %s", n, cfg->n_listeners,
            srv.doc_name);
    tr_loop_run(srv.loop);

    for (unsigned i = 0; i < srv.n_workers; i++)
        tr_worker_notify(srv.workers[i], TR_WCMD_STOP);
    for (unsigned i = 0; i < srv.n_workers; i++)
        tr_worker_join(srv.workers[i]);
    tr_metrics_set_control_source(NULL);
    tr_control_client_free(srv.control);
    srv.control = NULL;
    tr_admin_stop(srv.admin); /* removes the admin socket */
    srv.admin = NULL;
    tr_resolver_free(srv.resolver);
    srv.resolver = NULL;
    tr_info("stopped");
    return 0;
}
