/* cluster/cluster.h: a worker's runtime view of the configured clusters:
 * endpoints with their connection pools, load-balancer and health state.
 *
 * Two lifetimes. A cluster view (tr_cluster_rt) is built per (worker,
 * snapshot) and lives in that worker snapshot (tr_wsnap): it is cheap and
 * points at its own snapshot's configuration. Endpoints (tr_endpoint_rt) are
 * long-lived and shared: when a new snapshot keeps a cluster under the same
 * name with the same connection settings (TLS context, SNI, server IDs,
 * protocol), its view takes over the previous view's endpoint objects for
 * every address that remains, so pooled and HTTP/2 connections, TLS session
 * tickets, balancer and health state survive configuration updates. An
 * endpoint no longer in the current view is retired: its idle connections
 * close at once, busy ones when their request ends.
 *
 * Ownership: an endpoint is counted by every view that lists it and by every
 * upstream connection object made to it; it is freed when the count drops to
 * zero. While it has connections it also holds a use of the worker snapshot
 * of its newest view (ep->cluster), so the cluster settings that connections
 * read through ep->cluster stay valid. Everything belongs to one worker
 * thread: load balancing needs no atomics.
 */
#ifndef TR_CLUSTER_H
#define TR_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include <sys/socket.h>

#include <openssl/ssl.h>

#include "config/model.h"
#include "identity/identity.h"

struct tr_upstream;
struct tr_h2_upconn;
struct tr_dns_ip;
struct tr_wsnap;
struct tr_tls_ctx;

/* Longest endpoint address text: "[" IPv6 "]:" port, or a Unix path. */
#define TR_EP_ADDR_TEXT_MAX 112

struct tr_endpoint_rt {
    struct sockaddr_storage addr; /* a copy: valid as long as the endpoint */
    socklen_t addr_len;
    char addr_text[TR_EP_ADDR_TEXT_MAX];
    struct tr_cluster_rt *cluster; /* newest view that lists it */
    const char *workload;          /* interned label */
    uint32_t refs;                 /* views listing it + connection objects */
    uint32_t conn_objs;            /* connection objects alive (hold a use of cluster->ws) */
    bool retired;                  /* not in the worker's current view: no new connections pool */
    struct tr_upstream *idle;      /* idle pooled connections, most recent first */
    uint32_t n_idle;
    uint32_t n_conns;                    /* open connections (idle + busy + connecting) */
    uint32_t active_requests;            /* least_request */
    int64_t rr_current;                  /* smooth weighted round robin */
    struct tr_tls_session_slot tls_slot; /* TLS session resumption */
    struct tr_h2_upconn *h2conns;        /* multiplexed HTTP/2 connections (upstream/h2_upconn.h) */
    uint32_t n_h2conns;
    /* Connect health: an endpoint whose connections fail is left out of
     * picks until unhealthy_until_ms, a back-off that doubles with each
     * consecutive failure (TR_EP_BACKOFF_BASE_MS .. TR_EP_BACKOFF_MAX_MS). */
    uint32_t connect_failures; /* consecutive */
    uint64_t unhealthy_until_ms;
    /* A name in a `dns: {mode: first}` cluster: one endpoint whose address
     * follows the name's first answer (taken over by name, not address). */
    bool logical;
};

#define TR_EP_BACKOFF_BASE_MS 1000u
#define TR_EP_BACKOFF_MAX_MS  30000u

struct tr_cluster_rt {
    const struct tr_cluster_cfg *cfg; /* in the view's own snapshot */
    struct tr_wsnap *ws;
    struct tr_tls_ctx *tls; /* origination context, NULL = plaintext (not owned) */
    const char *service;    /* interned labels */
    const char *workload;
    const char *workload_namespace;
    struct tr_endpoint_rt **eps; /* shared endpoint objects, one per cfg->endpoints[i] */
    uint32_t *weights;           /* cfg->endpoints[i].weight */
    uint32_t n_eps;
    /* A cluster with endpoints given by name (cfg->n_dns_endpoints > 0) has
     * one endpoint per resolved address instead (ws->dns, dns/answers.h):
     * ep_cfg[i] is the configured endpoint eps[i] came from (its weight and
     * workload), ep_ip[i] its resolved address (NULL: a configured IP).
     * Both NULL for other clusters. */
    const struct tr_endpoint_cfg **ep_cfg;
    const struct tr_dns_ip **ep_ip;
    uint32_t n_unhealthy; /* endpoints in connect back-off (may include expired ones) */
    int64_t total_weight;
    uint32_t n_kept; /* endpoints taken over from the previous view (for tests and logs) */
};

/* Build the views of ws's snapshot, with the addresses of endpoint names
 * from ws->dns (none for a name not in it yet). prev (may be NULL): the
 * worker's current views and their snapshot, whose endpoints are taken over
 * where the new configuration (or answer) keeps them. Returns an array of cfg->n_clusters (free with
 * tr_clusters_free) or NULL on allocation failure (nothing taken over then). */
struct tr_cluster_rt *tr_clusters_build(struct tr_wsnap *ws, struct tr_cluster_rt *prev,
                                        size_t n_prev);
/* The views just built become the worker's current ones: their endpoints
 * move to them (connections read the new settings), and the endpoints of
 * prev that were not taken over are retired (idle connections close now,
 * busy ones when their request ends). */
void tr_clusters_commit(struct tr_cluster_rt *c, size_t n, struct tr_cluster_rt *prev,
                        size_t n_prev);
/* Drops the views' endpoint references and frees the array. */
void tr_clusters_free(struct tr_cluster_rt *c, size_t n);

/* Connection objects of an endpoint (upstream/pool.c): each holds a reference. */
void tr_endpoint_conn_hold(struct tr_endpoint_rt *ep);
void tr_endpoint_conn_drop(struct tr_endpoint_rt *ep);
/* Close every idle connection of every endpoint in the views (drain). */
void tr_clusters_close_idle(struct tr_cluster_rt *c, size_t n);

/* Pick an endpoint by the cluster's policy among the healthy ones (not in
 * connect back-off at now_ms), other than avoid (may be NULL: the endpoint a
 * failed attempt of the same request went to). rnd is a random 32-bit number.
 * Returns NULL when no endpoint qualifies: the caller answers 503 UH. */
struct tr_endpoint_rt *tr_cluster_pick(struct tr_cluster_rt *c, uint32_t rnd,
                                       const struct tr_endpoint_rt *avoid, uint64_t now_ms);

/* Connection outcomes, reported by the upstream pool: a failed connect or
 * TLS handshake starts or lengthens the endpoint's back-off; a success ends it. */
void tr_endpoint_connect_failed(struct tr_endpoint_rt *ep, uint64_t now_ms);
void tr_endpoint_connect_ok(struct tr_endpoint_rt *ep);
static inline bool tr_endpoint_healthy(const struct tr_endpoint_rt *ep, uint64_t now_ms)
{
    return ep->unhealthy_until_ms <= now_ms;
}

#endif
