#include "runtime/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "dns/answers.h"
#include "listener/listener.h"
#include "net/sock.h"
#include "obs/access_log.h"
#include "runtime/server.h"
#include "upstream/jwks_fetch.h"
#include "upstream/pool.h"

/* ---- worker snapshots ---- */

static void wsnap_free(struct tr_wsnap *ws)
{
    tr_jwks_fetch_free(ws->jwks);
    tr_clusters_free(ws->clusters, ws->snap->cfg->n_clusters);
    free(ws->listener_labels);
    tr_snapshot_unref(ws->snap);
    tr_dns_table_unref(ws->dns);
    free(ws);
}

void tr_wsnap_use(struct tr_wsnap *ws)
{
    ws->users++;
}

void tr_wsnap_release(struct tr_wsnap *ws)
{
    if (--ws->users == 0 && ws->retired)
        wsnap_free(ws);
}

/* Base metric labels of each listener: the node's identity on one side. */
static void listener_labels_build(struct tr_wsnap *ws)
{
    const struct tr_config *cfg = ws->snap->cfg;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        struct tr_metric_labels *m = &ws->listener_labels[i];
        memset(m, 0, sizeof(*m));
        m->protocol = l->protocol == TR_LPROTO_TCP ? TR_REQ_PROTO_TCP : TR_REQ_PROTO_HTTP;
        if (l->direction == TR_DIR_INBOUND) {
            m->reporter = TR_REPORTER_DESTINATION;
            m->destination_workload = tr_metrics_intern(cfg->node.workload);
            m->destination_namespace = tr_metrics_intern(cfg->node.workload_namespace);
            m->destination_principal = tr_metrics_intern(cfg->node.principal);
            m->destination_service = tr_metrics_intern(cfg->node.service);
        } else {
            m->reporter = TR_REPORTER_SOURCE;
            m->mtls = TR_SEC_UNKNOWN; /* Istio: the client side reports "unknown" */
            m->source_workload = tr_metrics_intern(cfg->node.workload);
            m->source_namespace = tr_metrics_intern(cfg->node.workload_namespace);
            m->source_principal = tr_metrics_intern(cfg->node.principal);
        }
    }
}

/* Takes over the references to snap and dns on success only. */
static struct tr_wsnap *wsnap_new(struct tr_worker *w, struct tr_snapshot *snap,
                                  struct tr_dns_table *dns)
{
    struct tr_wsnap *ws = calloc(1, sizeof(*ws));
    if (ws == NULL)
        return NULL;
    ws->snap = snap;
    ws->dns = dns;
    ws->w = w;
    ws->users = 1; /* the worker's own reference while current */
    ws->listener_labels = calloc(snap->cfg->n_listeners + 1, sizeof(*ws->listener_labels));
    const struct tr_wsnap *prev = w->ws;
    ws->clusters =
        tr_clusters_build(ws, prev ? prev->clusters : NULL, prev ? prev->snap->cfg->n_clusters : 0);
    if (ws->listener_labels == NULL || ws->clusters == NULL) {
        free(ws->listener_labels);
        free(ws);
        return NULL;
    }
    listener_labels_build(ws);
    ws->jwks = tr_jwks_fetch_new(ws, prev != NULL ? prev->jwks : NULL);
    return ws;
}

/* ---- listeners ---- */

/* Listener structs are freed after the current event batch: epoll may have
 * returned an event for one that a command earlier in the batch removed. */
static void listener_free_now(struct tr_deferred *d)
{
    free(tr_container_of(d, struct tr_listener_rt, free_later));
}

static void listener_retire(struct tr_worker *w, struct tr_listener_rt *l)
{
    tr_timer_cancel(w->loop, &l->retry);
    tr_loop_del(w->loop, &l->io);
    close(l->io.fd);
    l->io.fd = -1;
    l->io.cb = tr_listener_on_accept_closed;
    tr_loop_defer(w->loop, &l->free_later, listener_free_now);
}

static void listeners_close(struct tr_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i] != NULL)
            listener_retire(w, w->listeners[i]);
    free(w->listeners);
    w->listeners = NULL;
    w->n_listeners = 0;
}

/* Make the worker's listening sockets match cfg: a listener whose address is
 * unchanged keeps its socket (no connection in its accept queue is lost) and
 * its struct; new ones are opened; the rest are closed. A virtual listener
 * (bind: false) has no socket: its slot stays NULL (capture listeners hand
 * connections to it, listener/capture.h). */
static int listeners_sync(struct tr_worker *w, const struct tr_config *cfg, char **err)
{
    struct tr_listener_rt **next = calloc(cfg->n_listeners + 1, sizeof(*next));
    bool *kept = calloc(w->n_listeners + 1, sizeof(*kept));
    if (next == NULL || kept == NULL) {
        free(next);
        free(kept);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *lc = &cfg->listeners[i];
        if (!lc->bind)
            continue;
        for (size_t j = 0; j < w->n_listeners; j++) {
            if (w->listeners[j] != NULL && !kept[j] &&
                tr_sock_addr_equal(&w->listeners[j]->addr, &lc->addr.ss)) {
                kept[j] = true;
                next[i] = w->listeners[j];
                break;
            }
        }
        if (next[i] != NULL)
            continue;
        int fd = tr_sock_listen((const struct sockaddr *)&lc->addr.ss, lc->addr.len, true, 4096);
        struct tr_listener_rt *l = fd >= 0 ? calloc(1, sizeof(*l)) : NULL;
        if (l == NULL) {
            if (fd >= 0)
                close(fd);
            if (err != NULL && asprintf(err, "listener %s: cannot listen on %s: %s", lc->name,
                                        lc->addr.text, strerror(fd < 0 ? -fd : ENOMEM)) < 0)
                *err = NULL;
            /* Undo: close what this call opened; the kept ones stay as they were. */
            for (size_t k = 0; k < i; k++) {
                if (next[k] == NULL)
                    continue;
                bool old = false;
                for (size_t j = 0; j < w->n_listeners; j++)
                    old |= w->listeners[j] == next[k];
                if (!old) {
                    close(next[k]->io.fd);
                    free(next[k]);
                }
            }
            free(next);
            free(kept);
            return fd < 0 ? fd : -ENOMEM;
        }
        l->w = w;
        l->io.fd = fd;
        l->io.cb = tr_listener_on_accept;
        memcpy(&l->addr, &lc->addr.ss, sizeof(l->addr));
        tr_timer_init(&l->retry, tr_listener_on_retry);
        next[i] = l;
    }
    for (size_t j = 0; j < w->n_listeners; j++)
        if (w->listeners[j] != NULL && !kept[j])
            listener_retire(w, w->listeners[j]);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct tr_listener_rt *l = next[i];
        if (l == NULL)
            continue;
        bool is_new = true;
        for (size_t j = 0; j < w->n_listeners; j++)
            is_new &= w->listeners[j] != l;
        l->cfg_idx = (int)i;
        if (is_new)
            tr_loop_add(w->loop, &l->io, EPOLLIN);
    }
    free(w->listeners);
    free(kept);
    w->listeners = next;
    w->n_listeners = cfg->n_listeners;
    return 0;
}

/* ---- commands ---- */

/* Adopts the published snapshot and DNS answers (dns/answers.h). New
 * answers alone rebuild the cluster views of the same snapshot, exactly as
 * a configuration update does: endpoints that remain are taken over. */
static int adopt_snapshot(struct tr_worker *w, char **err)
{
    struct tr_snapshot *snap = tr_snapshot_current_acquire();
    if (snap == NULL)
        return -EINVAL;
    struct tr_dns_table *dns = tr_dns_table_current_acquire();
    if (w->ws != NULL && w->ws->snap == snap && w->ws->dns == dns) {
        tr_snapshot_unref(snap);
        tr_dns_table_unref(dns);
        return 0;
    }
    bool same_snap = w->ws != NULL && w->ws->snap == snap;
    struct tr_wsnap *ws = wsnap_new(w, snap, dns);
    if (ws == NULL) {
        tr_snapshot_unref(snap);
        tr_dns_table_unref(dns);
        return -ENOMEM;
    }
    if (!w->draining && !same_snap) {
        int rc = listeners_sync(w, snap->cfg, err);
        if (rc < 0) {
            tr_jwks_fetch_stop(ws->jwks);
            ws->retired = true;
            tr_wsnap_release(ws);
            return rc;
        }
    }
    struct tr_wsnap *old = w->ws;
    w->ws = ws;
    tr_clusters_commit(ws->clusters, snap->cfg->n_clusters, old ? old->clusters : NULL,
                       old ? old->snap->cfg->n_clusters : 0);
    atomic_store(&w->adopted_generation, snap->generation);
    if (old != NULL && !same_snap)
        tr_server_note_adopted();
    if (old != NULL) {
        tr_jwks_fetch_stop(old->jwks);
        old->retired = true;
        tr_wsnap_release(old);
    }
    return 0;
}

static void maybe_finish_drain(struct tr_worker *w)
{
    if (w->draining && w->n_sessions == 0)
        tr_loop_stop(w->loop);
}

static void worker_on_wake(struct tr_io *io, uint32_t events)
{
    struct tr_worker *w = tr_container_of(io, struct tr_worker, wake_io);
    uint64_t v;
    ssize_t n = read(w->wake_fd, &v, sizeof(v));
    (void)n;
    unsigned cmd = atomic_exchange(&w->cmd, 0);
    if (cmd & (TR_WCMD_SNAPSHOT | TR_WCMD_DNS)) {
        char *err = NULL;
        if (adopt_snapshot(w, &err) < 0) {
            tr_err("worker could not adopt the new configuration: %s", err ? err : "error");
            free(err);
        }
    }
    if ((cmd & TR_WCMD_DRAIN) && !w->draining) {
        w->draining = true;
        listeners_close(w);
        for (struct tr_session_link *l = w->sessions.next; l != &w->sessions;) {
            struct tr_session_link *next = l->next;
            l->drain(l);
            l = next;
        }
        if (w->ws != NULL) {
            tr_jwks_fetch_stop(w->ws->jwks); /* the keys stay for the last requests */
            tr_clusters_close_idle(w->ws->clusters, w->ws->snap->cfg->n_clusters);
        }
    }
    if (cmd & TR_WCMD_STOP)
        tr_loop_stop(w->loop);
    maybe_finish_drain(w);
}

void tr_worker_session_add(struct tr_worker *w, struct tr_session_link *l)
{
    l->next = w->sessions.next;
    l->prev = &w->sessions;
    w->sessions.next->prev = l;
    w->sessions.next = l;
    w->n_sessions++;
}

void tr_worker_session_remove(struct tr_worker *w, struct tr_session_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->next = l->prev = l;
    w->n_sessions--;
    maybe_finish_drain(w);
}

static void *worker_main(void *arg)
{
    struct tr_worker *w = arg;
    tr_log_set_thread_name(w->name);
    tr_loop_run(w->loop);
    /* Stopped: close what is left. Sessions still open past the drain
     * deadline are cut by process exit. */
    listeners_close(w);
    free(w->path_buf);
    w->path_buf = NULL;
    atomic_store(&w->exited, true);
    return NULL;
}

struct tr_worker *tr_worker_start(unsigned index, unsigned n_workers, char **err)
{
    struct tr_worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->index = index;
    w->n_workers = n_workers;
    snprintf(w->name, sizeof(w->name), "w%u", index);
    w->sessions.next = w->sessions.prev = &w->sessions;
    w->access_log_fd = -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    w->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)index << 56) ^
             (uint64_t)(uintptr_t)w;
    if (w->rng == 0)
        w->rng = 0x9e3779b97f4a7c15ull;
    w->loop = tr_loop_new();
    w->metrics = tr_metrics_new(index);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->loop == NULL || w->metrics == NULL || w->wake_fd < 0)
        goto fail;
    w->wake_io.fd = w->wake_fd;
    w->wake_io.cb = worker_on_wake;
    tr_loop_add(w->loop, &w->wake_io, EPOLLIN);
    if (adopt_snapshot(w, err) < 0)
        goto fail;
    const struct tr_config *cfg = w->ws->snap->cfg;
    tr_buf_pool_init(&w->bufs, cfg->limits.buffer_size, 256);
    if (cfg->access_log.enabled)
        w->access_log_fd = tr_access_log_open(cfg->access_log.path);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        goto fail;
    return w;
fail:
    if (err != NULL && *err == NULL)
        *err = strdup("cannot start worker");
    return NULL; /* start-up failure exits the process; nothing to reclaim */
}

void tr_worker_notify(struct tr_worker *w, enum tr_worker_cmd cmd)
{
    atomic_fetch_or(&w->cmd, (unsigned)cmd);
    uint64_t one = 1;
    ssize_t n = write(w->wake_fd, &one, sizeof(one));
    (void)n;
}

void tr_worker_join(struct tr_worker *w)
{
    pthread_join(w->thread, NULL);
}
