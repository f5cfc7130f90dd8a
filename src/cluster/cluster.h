/* cluster/cluster.h: a worker's runtime view of the configured clusters:
 * endpoints with their connection pools and load-balancer state. Built per
 * (worker, snapshot); owned by the worker and touched only by its thread, so
 * load balancing needs no atomics. */
#ifndef TR_CLUSTER_H
#define TR_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "config/model.h"
#include "identity/identity.h"

struct tr_upstream;
struct tr_h2_upconn;
struct tr_wsnap;
struct tr_tls_ctx;

struct tr_endpoint_rt {
    const struct tr_endpoint_cfg *cfg;
    struct tr_cluster_rt *cluster;
    const char *workload;     /* interned label */
    struct tr_upstream *idle; /* idle pooled connections, most recent first */
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
};

#define TR_EP_BACKOFF_BASE_MS 1000u
#define TR_EP_BACKOFF_MAX_MS  30000u

struct tr_cluster_rt {
    const struct tr_cluster_cfg *cfg;
    struct tr_wsnap *ws;
    struct tr_tls_ctx *tls; /* origination context, NULL = plaintext (not owned) */
    const char *service;    /* interned labels */
    const char *workload;
    const char *workload_namespace;
    struct tr_endpoint_rt *eps;
    uint32_t n_eps;
    uint32_t n_unhealthy; /* endpoints in connect back-off (may include expired ones) */
    int64_t total_weight;
};

/* Build runtime clusters for a snapshot. Returns an array of cfg->n_clusters
 * (malloc'd; free with tr_clusters_free) or NULL on allocation failure. */
struct tr_cluster_rt *tr_clusters_build(struct tr_wsnap *ws);
/* Closes idle connections and frees the array (busy ones must be gone). */
void tr_clusters_free(struct tr_cluster_rt *c, size_t n);

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
