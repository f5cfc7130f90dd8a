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
 *
 * What a worker counts for a cluster as a whole (requests, connections,
 * ejected endpoints: struct tr_cluster_state) lives as long as the
 * endpoints do: it moves to the new views together with them.
 *
 * Outlier detection (clusters[].outlier_detection) is per worker, like
 * connect back-off: each worker counts the responses and failures it sees
 * and ejects on its own (Envoy counts per host across its workers and
 * ejects from its main thread). Consistent hashing (lb ring_hash, maglev)
 * looks up a table built once per configuration and shared by all workers
 * (struct tr_lb_table), so every worker and every proxy with the same
 * endpoints sends a key to the same endpoint.
 */
#ifndef TR_CLUSTER_H
#define TR_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include <sys/socket.h>

#include <openssl/ssl.h>

#include "config/model.h"
#include "event/loop.h"
#include "identity/identity.h"

struct tr_upstream;
struct tr_h2_upconn;
struct tr_dns_ip;
struct tr_wsnap;
struct tr_tls_ctx;
struct tr_worker;
struct tr_lb_table;
struct tr_str_pair;

/* One worker's counts for a cluster, shared by the views of one cluster
 * name and the endpoints taken over between them; counted by both. */
struct tr_cluster_state {
    uint32_t refs;
    const char *name;          /* interned: the metrics' cluster label */
    uint32_t active_requests;  /* requests with an endpoint (circuit_breakers.max_requests) */
    uint32_t pending_requests; /* waiting for a connection being established */
    uint32_t connections;      /* open to its endpoints, connecting ones included */
    uint32_t n_ejected;        /* endpoints ejected by outlier detection now */
    /* The retry budget (upstream/retry.h): requests in flight from their
     * start to their end (backoffs included), and the retries among them. */
    uint32_t rq_in_flight;
    uint32_t retries_in_flight;
};

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
    struct tr_cluster_state *state; /* its cluster's (counted), for the endpoint's life */
    /* Outlier detection (cluster/outlier.c): failures in a row by kind, and
     * the ejection. An ejected endpoint is out of every pick until
     * ejected_until_ms; its timer ends the ejection for the metrics. */
    uint32_t consecutive_5xx;
    uint32_t consecutive_gateway;
    uint32_t consecutive_local;
    uint32_t ejections;        /* times ejected */
    uint32_t eject_multiplier; /* x base_ejection_time: +1 per ejection, -1 per healthy interval */
    uint64_t ejected_until_ms; /* 0: not ejected */
    /* Warm-up (clusters[].warmup): when this endpoint object was made, on
     * the worker's clock; kept by later views that take it over. 0: not
     * known (no worker), never warming. */
    uint64_t added_ms;
    uint64_t unejected_at_ms; /* when the last ejection ended; 0: none yet */
    uint8_t prio;             /* its (compacted) priority level in its newest view */
    struct tr_timer eject_timer;
    struct tr_worker *eject_w; /* whose loop holds eject_timer; NULL: not armed */
};

/* A run of the view's endpoint order with one priority (and, with
 * locality_weights, one locality). */
struct tr_lb_group {
    uint32_t lo, hi; /* order[lo, hi) */
    uint32_t prio;   /* 0: the first level, compacted */
    uint32_t weight; /* its locality's weight; 0 without locality_weights */
};

/* Priority levels a view keeps apart (the model allows 0..127). */
#define TR_LB_MAX_PRIOS 128u

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
    struct tr_cluster_state *state; /* counted */
    struct tr_lb_table *table;      /* ring_hash, maglev (counted): the snapshot's, or the
                                      * view's own over resolved names; else NULL */
    /* Priorities and locality groups, built with the view so a pick only
     * counts: order lists endpoint indexes by priority, then locality;
     * groups[prio_group[p] .. prio_group[p + 1]) are priority p's; ep_prio
     * is each endpoint's (compacted) priority. All NULL and 0 when every
     * endpoint has priority 0 and localities are not weighted. */
    uint32_t *order;
    struct tr_lb_group *groups;
    uint32_t n_groups;
    uint32_t *prio_group; /* n_prios + 1 entries */
    uint32_t n_prios;
    uint8_t *ep_prio;
    /* Warm-up: no endpoint of the view warms after this (0: none does). */
    uint64_t warm_until_ms;
    /* This worker's share of the cluster's circuit breakers (0: no limit):
     * limit / workers, the remainder to the first ones, at least 1. */
    uint32_t max_connections;
    uint32_t max_pending_requests;
    uint32_t max_requests;
    uint32_t max_retries; /* circuit_breakers.max_retries, this worker's share */
    /* original_destination clusters: the endpoints made so far, one per
     * original destination, in an open-addressing table of
     * TR_ORIG_DST_SLOTS (made at the first pick; NULL: none yet). */
    struct tr_endpoint_rt **orig;
    uint32_t n_orig;
};

/* An original_destination view keeps at most this many endpoints per
 * worker; a new destination then replaces one without connections. */
#define TR_ORIG_DST_MAX   1024u
#define TR_ORIG_DST_SLOTS (2u * TR_ORIG_DST_MAX)

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

/* What a retry's pick leaves out: the endpoint the failed try went to, and
 * the priority levels earlier tries went to (a route's
 * retries.exclude_tried_priorities, Envoy's previous_priorities): bit p of
 * prios is level p (levels from 64 on are never left out). */
struct tr_pick_avoid {
    const struct tr_endpoint_rt *ep; /* may be NULL */
    uint64_t prios;
};

/* Pick an endpoint by the cluster's policy among the healthy ones (not in
 * connect back-off at now_ms, not ejected by outlier detection unless fewer
 * than outlier_detection.min_health_percent are healthy), other than
 * avoid->ep. With priorities, a level is drawn first by Envoy's
 * priority load (each level's healthy share x 1.4, the rest spilling to the
 * next; the levels in avoid->prios count as having none, unless that leaves
 * none at all), with locality_weights a locality of it by weight x its
 * healthy share x 1.4 (at most 1); warming endpoints (clusters[].warmup)
 * count with their ramped weight. avoid (may be NULL) is what a failed
 * attempt of the same request leaves out.
 * rnd is a random 32-bit number; hash the request's consistent-hash key
 * (ring_hash, maglev; tr_lb_request_hash), which other policies ignore.
 * Returns NULL when no endpoint qualifies: the caller answers 503 UH. */
struct tr_endpoint_rt *tr_cluster_pick(struct tr_cluster_rt *c, uint32_t rnd, uint64_t hash,
                                       const struct tr_pick_avoid *avoid, uint64_t now_ms);

/* An original_destination cluster's endpoint for dst, the original
 * destination of the request's downstream connection: the view's, made on
 * first use (its address is its name in logs and metrics). NULL when dst is
 * NULL (the connection was not captured) or not IP, when the endpoint is in
 * connect back-off, or when TR_ORIG_DST_MAX endpoints all have connections:
 * the caller answers 503 UH. */
struct tr_endpoint_rt *tr_cluster_pick_original(struct tr_cluster_rt *c,
                                                const struct sockaddr_storage *dst,
                                                uint64_t now_ms);

/* Circuit breakers: may another request start (max_requests)? false: the
 * caller answers 503 UO; counted in trellis_upstream_overflow_total. */
bool tr_cluster_admit_request(struct tr_cluster_rt *c, struct tr_worker *w);
/* A request holds ep (least_request's count and the cluster's). */
static inline void tr_endpoint_request_begin(struct tr_endpoint_rt *ep)
{
    ep->active_requests++;
    ep->state->active_requests++;
}
static inline void tr_endpoint_request_end(struct tr_endpoint_rt *ep)
{
    ep->active_requests--;
    ep->state->active_requests--;
}
/* The worker's share of a per-proxy limit (0: none): limit / workers, one
 * more for the first limit % workers, at least 1. */
uint32_t tr_limit_share(uint32_t limit, unsigned index, unsigned workers);

/* Connection outcomes, reported by the upstream pool: a failed connect or
 * TLS handshake starts or lengthens the endpoint's back-off; a success ends
 * it. Both count for outlier detection as local-origin results. */
void tr_endpoint_connect_failed(struct tr_endpoint_rt *ep, uint64_t now_ms);
void tr_endpoint_connect_ok(struct tr_endpoint_rt *ep, uint64_t now_ms);
static inline bool tr_endpoint_healthy(const struct tr_endpoint_rt *ep, uint64_t now_ms)
{
    return ep->unhealthy_until_ms <= now_ms;
}

/* ---- outlier detection (cluster/outlier.c) ---- */

/* What became of an exchange with an endpoint: an HTTP status (100-999) of
 * a final response head (for gRPC, the status a trailers-only response's
 * grpc-status maps to), or one of these local-origin results. */
enum {
    TR_OUTCOME_CONNECTED = -1, /* a connection was established */
    TR_OUTCOME_FAILED = -2,    /* connect or TLS failure, reset or close before the response
                                * ended (Envoy's "local origin connect failed": a 503) */
    TR_OUTCOME_TIMEOUT = -3,   /* no response head in time (a 504) */
};

void tr_outlier_report(struct tr_endpoint_rt *ep, int outcome, uint64_t now_ms);
/* The one hook: every place that sees a response head or a failure calls it.
 * Costs a test when the cluster has no outlier detection. */
static inline void tr_endpoint_report(struct tr_endpoint_rt *ep, int outcome, uint64_t now_ms)
{
    if (ep != NULL && ep->cluster != NULL && ep->cluster->cfg->outlier.enabled)
        tr_outlier_report(ep, outcome, now_ms);
}
static inline bool tr_endpoint_ejected(const struct tr_endpoint_rt *ep, uint64_t now_ms)
{
    return ep->ejected_until_ms > now_ms;
}
/* The ejection of ep ends now (its time is up, or it left the
 * configuration): counters reset, metrics updated. No-op if not ejected. */
void tr_outlier_end(struct tr_endpoint_rt *ep, uint64_t now_ms);

/* ---- consistent hashing (cluster/lb_hash.c) ---- */

/* The fixed 64-bit hash of consistent hashing: no per-process seed, so
 * every proxy maps a key alike. */
uint64_t tr_lb_hash_bytes(const void *p, size_t n, uint64_t seed);

/* A ring (ring_hash) or lookup table (maglev) over cc's endpoints, ordered
 * by address so that two proxies listing the same endpoints in another
 * order build the same one; entries are indexes into the endpoint list.
 * Immutable; shared by snapshots and workers (atomic count). NULL: out of
 * memory. A cluster with endpoint names gets its table per view, over the
 * resolved addresses (tr_lb_table_build_list). */
struct tr_lb_table *tr_lb_table_build(const struct tr_cluster_cfg *cc);
struct tr_lb_member {
    const char *text; /* address text: what the table is built from */
    uint32_t weight;
};
struct tr_lb_table *tr_lb_table_build_list(const struct tr_cluster_cfg *cc,
                                           const struct tr_lb_member *m, uint32_t n);
/* prev's table serves cc as it is: same policy and size, same endpoints
 * (address and weight) in the same order. */
bool tr_lb_table_fits(const struct tr_cluster_cfg *prev, const struct tr_cluster_cfg *cc);
void tr_lb_table_ref(struct tr_lb_table *t);
void tr_lb_table_unref(struct tr_lb_table *t);
/* Index (into the cluster's endpoints) of the table's entry for hash, and
 * the following entries in order (step 1, 2, ...), for skipping endpoints
 * that cannot take the request. */
uint32_t tr_lb_table_size(const struct tr_lb_table *t);
uint32_t tr_lb_table_lookup(const struct tr_lb_table *t, uint64_t hash, uint32_t step);

/* What a request offers to hash (HTTP: headers as received, names in any
 * case, HTTP/2 pseudo-headers skipped; the target with its query). */
struct tr_lb_request {
    const struct tr_str_pair *headers;
    uint32_t n_headers;
    const char *target; /* request target (path and query) */
    uint32_t target_len;
    const struct sockaddr_storage *peer; /* the client */
    uint64_t conn_seed;                  /* per downstream connection: a generated cookie */
};

/* The request's hash under hp (lb ring_hash and maglev). Returns true with
 * *hash set when the request has the key; false when it has none (the
 * caller hashes a random number, as Envoy does). A cookie policy that
 * generates its cookie sets *new_cookie (else 0) to the value to hash and
 * set on the response (tr_lb_cookie_format). */
bool tr_lb_request_hash(const struct tr_hash_policy_cfg *hp, const struct tr_lb_request *rq,
                        uint64_t *hash, uint64_t *new_cookie);
/* The Set-Cookie value "NAME=VALUE[; Max-Age=N][; Path=P]; HttpOnly" of a
 * generated cookie into out; returns its length (0 if size is too small). */
#define TR_LB_COOKIE_MAX 600
size_t tr_lb_cookie_format(const struct tr_hash_policy_cfg *hp, uint64_t value, char *out,
                           size_t size);

#endif
