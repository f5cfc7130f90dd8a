/* runtime/snapshot.h: an immutable, reference-counted configuration snapshot:
 * the loaded tr_config plus everything compiled from it (TLS contexts,
 * routers, authorization). The main thread builds one, then publishes it;
 * workers adopt it for new requests while in-flight requests keep the one they
 * started with. The reference count is atomic because snapshots cross threads,
 * but it is touched per connection (and per snapshot change), never per
 * request. */
#ifndef TR_RUNTIME_SNAPSHOT_H
#define TR_RUNTIME_SNAPSHOT_H

#include <stdatomic.h>
#include <stdint.h>

#include "codec/h1/h1.h"
#include "codec/h2/h2.h"
#include "config/model.h"

struct tr_tls_ctx;
struct tr_router;
struct tr_authz;
struct tr_jwt_authn;
struct tr_cors;
struct tr_lb_table;
struct tr_capture_table;
struct tr_sni_router;

struct tr_snapshot {
    _Atomic uint32_t refs;
    uint64_t generation;
    struct tr_config *cfg;        /* owned */
    struct tr_tls_ctx **tls;      /* per cfg->tls; each holds one reference */
    struct tr_router **routers;   /* per cfg->route_tables */
    struct tr_authz **authz;      /* per cfg->listeners; NULL: no rules */
    struct tr_jwt_authn **jwt;    /* per cfg->listeners: request authentication; NULL: none */
    const char **ext_authz_names; /* per cfg->ext_authz: the name interned (metrics labels) */
    /* Per cfg->listeners: a TERMINATE listener's server contexts by SNI
     * (identity.h), else empty (n == 0). */
    struct tr_tls_sni_table *sni;
    struct tr_cors **cors; /* per cfg->n_cors: routes' CORS policies, compiled */
    /* Per cfg->listeners: a capture listener's virtual listeners by original
     * destination (listener/capture.h), else NULL. */
    struct tr_capture_table **capture;
    /* Per cfg->listeners: a listener's sni_routes, compiled
     * (router/sni_route.h), else NULL. */
    struct tr_sni_router **sni_routes;
    /* Per cfg->clusters: the consistent-hash table (lb ring_hash, maglev),
     * else NULL; each holds a reference, shared with the previous snapshot
     * while the cluster's endpoints are unchanged (cluster/cluster.h). */
    struct tr_lb_table **lb_tables;
    struct tr_h1_limits h1_limits;
    struct tr_h2_limits h2_limits; /* downstream and upstream HTTP/2 connections */
    size_t n_tls_shared;           /* contexts taken over from the previous snapshot */
    uint64_t identity_gen;         /* tr_snapshot_set_identity's count it was built with */
};

/* The workload identity obtained from the control plane (control/client.h):
 * certificate chain, private key and trust bundle as PEM, for TLS contexts
 * with from_control_plane. Copied; the key stays in this process's memory
 * and is never written to a file or to /config_dump. Main thread only,
 * before building the snapshot that should use it (each call makes contexts
 * from_control_plane reload). NULLs clear it. */
void tr_snapshot_set_identity(const char *cert_pem, const char *key_pem, const char *ca_pem);
bool tr_snapshot_has_identity(void);

/* Compile cfg into a snapshot. Takes ownership of cfg on success only.
 * prev (may be NULL): the snapshot in force, whose TLS contexts are shared
 * where the new configuration names the same context with the same settings
 * and its files are unchanged on disk: the SSL_CTXs, their session-ticket
 * keys and the upstream endpoints that depend on them (cluster/cluster.h)
 * survive the update. */
struct tr_snapshot *tr_snapshot_build(struct tr_config *cfg, const struct tr_snapshot *prev,
                                      uint64_t generation, char **err);
void tr_snapshot_ref(struct tr_snapshot *s);
void tr_snapshot_unref(struct tr_snapshot *s);

/* The published snapshot. Workers read it when woken; the main thread swaps it. */
struct tr_snapshot *tr_snapshot_current_acquire(void);
/* Publish s (the caller's reference moves to the global slot); the previous
 * one loses the global slot's reference. */
void tr_snapshot_publish(struct tr_snapshot *s);

#endif
