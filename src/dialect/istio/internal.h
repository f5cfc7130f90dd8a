/* dialect/istio/internal.h: what the Istio compiler's parts share.
 *
 *   walk.c      field paths, diagnostics at nodes, known-field tables (every
 *               key of a resource is handled, or reported), StringMatch
 *   registry.c  services and their endpoints: Kubernetes Services, Pods and
 *               workload templates, Endpoints, EndpointSlices; Istio
 *               ServiceEntry and WorkloadEntry; the proxy's own workload
 *   policy.c    DestinationRule: subsets and traffic policy -> clusters
 *   routes.c    VirtualService -> routes of a virtual host
 *   compile.c   scope (Sidecar, exportTo), listeners, route tables, the model
 *   peer_auth.c PeerAuthentication -> the inbound mTLS mode per port
 *   authn.c     RequestAuthentication -> the inbound listeners' JWT rules
 *   authz.c     AuthorizationPolicy -> the inbound listeners' authorization
 *   secret.c    Kubernetes Secrets (credentialName) -> the model's inline TLS
 *               contexts
 */
#ifndef TR_DIALECT_ISTIO_INTERNAL_H
#define TR_DIALECT_ISTIO_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/model.h"
#include "core/diag.h"
#include "core/strmap.h"
#include "dialect/istio/istio.h"
#include "resource/resource.h"

#define IST_GROUP       "networking.istio.io"
#define IST_PATH_MAX    512u
#define IST_MAX_PORTS   1024u /* per service */
#define IST_MAX_SUBSETS 256u

/* ------------------------------------------------------------ walking */

/* The resource being read and where in it: every finding names both. */
struct ist_cursor {
    const struct tr_resource *res;
    char path[IST_PATH_MAX];
    size_t len;
};

struct ist_ctx;

void ist_cursor_init(struct ist_cursor *c, const struct tr_resource *res, const char *path);
size_t ist_push_key(struct ist_cursor *c, const char *key);
size_t ist_push_index(struct ist_cursor *c, size_t i);
void ist_pop(struct ist_cursor *c, size_t saved);

/* Findings at node n (NULL: the resource's start) under the cursor's path
 * (+ ".key" when key is given). Errors mark the resource refused. */
void ist_warn(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *n, const char *key,
              const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void ist_error(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *n, const char *key,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A mistake that breaks traffic but not the resource (a route to a subset
 * nobody defines): a warning when compiling, an error for `ctl analyze`. */
void ist_finding(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *n, const char *key,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* One key a table knows. why == NULL: the compiler reads it; else the key is
 * accepted and ignored with this reason (a warning, once per occurrence). */
struct ist_key {
    const char *key;
    const char *why;
};

/* Checks that map is a mapping and every key in it is in the table; an
 * unknown key is a warning (Kubernetes prunes unknown fields of Istio's
 * CRDs). Returns false (error reported) when map is not a mapping. NULL map:
 * true (absent). */
bool ist_keys(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
              const struct ist_key *tab, size_t n);
#define IST_KEYS(x, c, map, tab) ist_keys((x), (c), (map), (tab), sizeof(tab) / sizeof((tab)[0]))

/* Typed reads of map[key], each reporting an error on the wrong type.
 * Absent (or null): false with *present = false and nothing reported. */
bool ist_str(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map, const char *key,
             const char **out);
bool ist_bool(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map, const char *key,
              bool *out);
bool ist_u32(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map, const char *key,
             uint32_t min, uint32_t max, uint32_t *out);
/* A protobuf Duration in its JSON form ("1.5s", "100ms" also accepted as
 * Istio's validation does): milliseconds, rounded up; max bounds it. */
bool ist_duration(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                  const char *key, uint32_t max_ms, uint32_t *out_ms);
/* Istio Percent {value: double}: parts per million (0..1000000). */
bool ist_percent(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                 const char *key, uint32_t *out_ppm);
/* The same without a node: a Go duration string in ms (false: not one, or
 * longer than max_ms). */
bool ist_parse_duration_ms(const char *s, uint32_t max_ms, uint32_t *out_ms);
/* A list's node (reported when not a list). */
const struct tr_rnode *ist_list(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                                const char *key);
const struct tr_rnode *ist_map(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                               const char *key);

/* Istio StringMatch {exact | prefix | regex}: kind and value. An empty
 * mapping ({}) has kind IST_SM_ANY. */
enum ist_sm_kind { IST_SM_NONE = 0, IST_SM_EXACT, IST_SM_PREFIX, IST_SM_REGEX, IST_SM_ANY };
struct ist_sm {
    enum ist_sm_kind kind;
    const char *value;
};
bool ist_string_match(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                      const char *key, struct ist_sm *out);

/* ----------------------------------------------------------- registry */

enum ist_proto {
    IST_P_UNKNOWN = 0, /* no protocol named: detected per connection */
    IST_P_HTTP,
    IST_P_HTTP2,
    IST_P_GRPC,
    IST_P_TCP,
    IST_P_TLS,
};

struct ist_port {
    const char *name; /* may be NULL */
    uint32_t number;
    uint32_t target;         /* targetPort number; 0: by name (target_name) */
    const char *target_name; /* targetPort by name: a container port's name */
    enum ist_proto proto;
    bool proto_named; /* from appProtocol or the port name's prefix */
};

/* One instance of a workload: a Pod, a WorkloadEntry or a ServiceEntry's
 * endpoint. */
struct ist_inst {
    const char *name; /* pod name, or NULL */
    const char *ns;
    const char *ip; /* address text */
    const struct tr_rnode *labels;
    const struct tr_rnode *container_ports; /* Pod: spec.containers (for named targets) */
    const char *sa;                         /* service account */
    bool sidecar;                           /* has a trellis/Istio proxy: speaks mTLS */
    /* A Pod that takes no new traffic: terminating (deletionTimestamp) or
     * not Ready; it is an endpoint only of Services that publish
     * not-ready addresses. A finished one (phase Succeeded or Failed) is
     * never an endpoint. Either still has its own model. */
    bool not_ready, finished;
    uint32_t port_override[8]; /* ServiceEntry endpoint ports by service port index (0: none) */
    const char *port_names[8];
    size_t n_overrides;
    uint32_t weight;
    /* "region/zone/subzone" as Istio derives it (registry.c, ist_locality_of);
     * NULL: unknown */
    const char *locality;
};

struct ist_svc_list {
    struct ist_service **v;
    size_t n, cap;
};

struct ist_inst_list {
    struct ist_inst **v;
    size_t n, cap;
};

/* An endpoint of one service port: where to connect. */
struct ist_ep {
    const char *ip;
    uint32_t port;
    const struct ist_inst *inst; /* labels, identity; NULL when unknown */
};

enum ist_resolution { IST_RES_STATIC = 0, IST_RES_NONE, IST_RES_DNS, IST_RES_DNS_RR };

struct ist_service {
    const char *host; /* FQDN (or ServiceEntry host, possibly a wildcard) */
    const char *name; /* Kubernetes name (NULL for ServiceEntry hosts) */
    const char *ns;
    const struct tr_resource *res;
    struct ist_port *ports;
    size_t n_ports;
    const struct tr_rnode *selector; /* Service spec.selector / SE workloadSelector.labels */
    struct ist_inst **insts;         /* selected instances */
    size_t n_insts;
    /* From Endpoints / EndpointSlices, per port index: when any exist they
     * are authoritative (Pods then only lend labels through targetRef). */
    struct ist_ep **eps_by_port;
    size_t *n_eps_by_port;
    bool have_slices;
    bool external; /* MESH_EXTERNAL */
    enum ist_resolution resolution;
    const char **export_to; /* NULL: everywhere */
    size_t n_export_to;
    bool headless;
    bool publish_not_ready; /* publishNotReadyAddresses: not-ready endpoints get traffic */
    const char *vips[2];    /* clusterIP(s): virtual hosts answer to them too */
    size_t n_vips;
    size_t index;                  /* position in x->svcs */
    struct ist_service *same_host; /* the next service of x->svcs with this host */
};

/* ---------------------------------------------------------- the context */

/* A portLevelMtls entry of the workload's PeerAuthentication. */
struct ist_pa_port {
    uint32_t port; /* target (container) port */
    enum tr_tls_mode mode;
    const struct tr_rnode *key; /* for messages */
    bool used;                  /* an inbound listener took it */
};

/* An extension provider of the mesh configuration (mesh.c). */
struct ist_provider {
    const char *name;
    const struct tr_rnode *http; /* envoyExtAuthzHttp, NULL: another kind */
    const char *kind;            /* the kind's key, for messages */
    size_t index;                /* in extensionProviders */
    int model;                   /* index in the model's ext_authz once made, -1 */
    bool failed;                 /* it could not be made (reported) */
};

struct ist_ctx {
    const struct tr_rset *rs;
    const struct tr_istio_options *o; /* = &opts */
    struct tr_istio_options opts;     /* with defaults filled in */
    struct tr_diags *d;
    struct tr_arena *tmp;      /* compiler scratch */
    struct tr_config *cfg;     /* the model being built (its arena) */
    uint8_t *refused;          /* bit per resource (tr_resource.index): refused */
    struct tr_strmap dr_index; /* "NS|HOST" -> struct ist_dr_list (built on first use) */
    bool dr_indexed;
    bool oom;
    bool quiet;    /* findings already reported by a check pass: do not repeat them */
    bool checking; /* a check pass: report, build nothing */
    bool analyze;  /* `ctl analyze`: no workload; findings about traffic are errors */
    /* ist_loc: the model's copies of the last resource's names, shared by
     * every location in it (one resource's objects are made together) */
    const struct tr_resource *loc_res;
    struct tr_cfg_loc loc_names;

    /* clusters, created on demand by ist_cluster_for */
    struct tr_cluster_cfg *clusters;
    size_t n_clusters, cap_clusters;
    struct tr_strmap cluster_by_name; /* name -> index + 1 */
    bool uses_mesh_tls;
    /* TLS contexts other than "mesh" (secret.c), in the model's arena */
    struct tr_tls_cfg *tls_ctx;
    size_t n_tls_ctx, cap_tls_ctx;

    /* registry */
    struct ist_service **svcs;
    size_t n_svcs;
    struct tr_strmap svc_by_host; /* host -> ist_service (first wins) */
    /* "NS\nKEY=VALUE" -> struct ist_inst_list: the instances (Pods,
     * WorkloadEntries) carrying each label, built once they are read, so a
     * selector looks only at the instances with its first label (not at
     * every instance of the mesh for every Service). */
    struct tr_strmap inst_by_label;
    size_t n_indexed; /* x->insts[0, n_indexed) are in it */
    struct ist_inst **insts;
    size_t n_insts;
    /* "NS\nKEY=VALUE" -> struct ist_svc_list: the Kubernetes Services whose
     * selector's first label is KEY=VALUE ("NS\n": a selector without
     * labels, or not a map), so a workload finds the services that may
     * select it without matching every Service of the mesh. */
    struct tr_strmap svc_by_selector;
    bool svc_selector_indexed;

    /* the workload */
    const char *wl_ns, *wl_name, *wl_sa;
    const char *wl_ip;
    const struct tr_rnode *wl_labels;
    const struct tr_resource *wl_res;
    const char *wl_locality; /* "region/zone/subzone"; NULL: unknown */

    /* the mesh configuration (mesh.c): read on first use */
    bool mesh_read;
    const struct tr_resource *mesh_cm;    /* ConfigMap istio in the root namespace, or NULL */
    const struct tr_rnode *mesh_node;     /* its data.mesh */
    struct tr_rset *mesh_rs;              /* owns the parsed mesh configuration */
    const struct tr_rnode *mesh_locality; /* its localityLbSetting (a map), or NULL */
    struct ist_provider *providers;
    size_t n_providers;
    /* pathNormalization.normalization of the mesh configuration, for every
     * listener of the model; unset: trellis's STRICT */
    bool mesh_pathnorm_set;
    enum tr_path_normalization mesh_pathnorm;

    /* inbound mTLS (peer_auth.c) */
    enum tr_tls_mode pa_mode;              /* the workload's ports by default */
    const struct tr_resource *pa_workload; /* its selector policy, or NULL */
    struct ist_pa_port *pa_ports;          /* that policy's portLevelMtls */
    size_t n_pa_ports;
};

bool ist_oom(struct ist_ctx *x);
bool ist_refused(const struct ist_ctx *x, const struct tr_resource *r);
void *ist_alloc(struct ist_ctx *x, size_t n, size_t size); /* scratch */
char *ist_printf(struct ist_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *ist_mstrdup(struct ist_ctx *x, const char *s); /* into the model's arena */
/* parts[0..n) concatenated, into the model's arena: names made by the
 * thousand (routes, clusters) without printf's cost. At most IST_JOIN_MAX. */
#define IST_JOIN_MAX 12
char *ist_mjoin(struct ist_ctx *x, const char *const *parts, size_t n);
/* v in decimal, at the end of buf (returned). */
#define IST_UTOA_MAX 24
const char *ist_utoa(char buf[IST_UTOA_MAX], uint64_t v);
char *ist_mprintf(struct ist_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void *ist_malloc(struct ist_ctx *x, size_t n, size_t size); /* model arena */
/* A compiled object's location: the resource and the cursor's path. */
struct tr_cfg_loc ist_loc(struct ist_ctx *x, const struct ist_cursor *c, const struct tr_rnode *n);

/* Does labels (a map) hold every key=value of selector (a map)? An empty or
 * absent selector selects everything. */
bool ist_labels_match(const struct tr_rnode *selector, const struct tr_rnode *labels);

/* "reviews" in namespace "default" -> "reviews.default.svc.cluster.local";
 * FQDNs and wildcards unchanged, lower-cased. */
const char *ist_fqdn(struct ist_ctx *x, const char *host, const char *ns);

int ist_registry_build(struct ist_ctx *x);
/* The endpoints of a service port (registry order, deterministic). */
size_t ist_service_eps(struct ist_ctx *x, const struct ist_service *s, size_t port_idx,
                       struct ist_ep **out);
const struct ist_service *ist_service_by_host(const struct ist_ctx *x, const char *host);
/* Reads an Endpoints object edited in place again into the registry x was
 * built into (a rebind): its service's endpoints become the new ones.
 * false when that cannot be done in place (EndpointSlices feed the
 * service, out of memory): build a registry instead. */
bool ist_registry_patch_endpoints(struct ist_ctx *x, const struct tr_resource *r);
/* Whether ist_registry_patch_endpoints can take r (no EndpointSlice feeds
 * its service): asked of every edit before any is applied. */
bool ist_registry_endpoints_patchable(struct ist_ctx *x, const struct tr_resource *r);
int ist_workload_find(struct ist_ctx *x);

/* ------------------------------------------------------------- routes */

/* The virtual host being built: a service on one port. */
struct ist_vhost {
    const struct ist_service *svc; /* NULL at a gateway (the host is the VirtualService's) */
    uint32_t port;
    const char *gateway; /* "NS/NAME" of the Gateway; NULL for a sidecar ("mesh") */
};

struct ist_routes {
    struct tr_route_cfg *v; /* scratch; copied into the model when the host is done */
    size_t n, cap;
};

/* A new route with the model's defaults at the end of rs (NULL: no memory). */
struct tr_route_cfg *ist_route_new(struct ist_ctx *x, struct ist_routes *rs);
/* Does the VirtualService apply to sidecars (gateways empty or "mesh")? */
bool ist_vs_for_mesh(const struct tr_resource *vs);
/* Does list name gateway ("NS/NAME"; NULL: "mesh")? */
bool ist_gateway_listed(const struct tr_resource *vs, const struct tr_rnode *list,
                        const char *gateway);
/* Gateways (gateway.c): the listeners of a gateway workload; check every
 * Gateway once. */
bool ist_gateways(struct ist_ctx *x);
/* Is the workload a gateway (some Gateway's selector picks it)? Then its
 * model holds only the gateway's listeners, as an Istio gateway proxy's. */
bool ist_is_gateway(const struct ist_ctx *x);
/* Room for n listeners and route tables in the model (compile.c). */
bool ist_alloc_listeners(struct ist_ctx *x, size_t n);
/* ip:port as a model address (compile.c); false when ip is not an address. */
bool ist_make_addr(struct ist_ctx *x, const char *ip, uint32_t port, struct tr_cfg_addr *a);
void ist_gateway_check(struct ist_ctx *x, const struct tr_resource *gw);
/* Append vs's routes for vh (NULL: check every rule, build nothing);
 * returns true when a route matches every request (no default needed). */
bool ist_vs_routes(struct ist_ctx *x, const struct tr_resource *vs, const struct ist_vhost *vh,
                   struct ist_routes *out);
void ist_vs_check(struct ist_ctx *x, const struct tr_resource *vs);
/* A VirtualService without hosts is a delegate: its http rules are merged
 * into the root rules that name it (Istio's delegate VirtualServices). */
bool ist_vs_is_delegate(const struct tr_resource *vs);
/* The VirtualService ns/name (one written without a namespace is in
 * "default"), or NULL. */
const struct tr_resource *ist_vs_find(const struct ist_ctx *x, const char *ns, const char *name);

/* RequestAuthentication (authn.c): check every policy once; the combined
 * jwtRules of the policies that apply to the workload (none: n_rules 0);
 * a warning per applying policy when the workload is a gateway. */
void ist_ra_check_all(struct ist_ctx *x);
bool ist_request_authn(struct ist_ctx *x, struct tr_request_authn_cfg *out);
/* At a gateway (gateway: "NS/NAME", the workload's labels and namespace
 * for sourceLabels and sourceNamespace): the weighted clusters of vs's
 * first tcp rule for the server port: true when a rule applies (*n 0: it
 * routes nowhere), false when none does. */
bool ist_vs_gateway_tcp(struct ist_ctx *x, const struct tr_resource *vs, const char *gateway,
                        uint32_t port, struct tr_weighted_cluster_cfg **out, size_t *n);
/* A tcp rule whose match blocks name destinationSubnets (and otherwise
 * apply to the workload and port): with capture, a virtual listener claims
 * those blocks for the rule's destinations. */
struct ist_subnet_route {
    const char **subnets; /* as blocks: "10.1.0.0/16" */
    size_t n_subnets;
    struct tr_weighted_cluster_cfg *split; /* NULL, 0: routes nowhere (fails closed) */
    size_t n_split;
    size_t rule; /* index in spec.tcp */
    struct tr_cfg_loc loc;
};
/* vs's subnet rules for (svc, port), in rule order up to the first rule
 * that takes every destination (later ones are never reached); a block an
 * earlier rule claims is left out of later ones. Returns how many. */
size_t ist_vs_tcp_subnet_routes(struct ist_ctx *x, const struct tr_resource *vs,
                                const struct ist_service *svc, uint32_t port,
                                struct ist_subnet_route **out);
/* The weighted clusters of vs's first tcp rule for (svc, port): true when
 * a rule applies (*n 0: it routes nowhere), false when none does. */
bool ist_vs_tcp_clusters(struct ist_ctx *x, const struct tr_resource *vs,
                         const struct ist_service *svc, uint32_t port,
                         struct tr_weighted_cluster_cfg **out, size_t *n);

/* A VirtualService's tls rules (TLSRoute: TLS passed through, routed by
 * SNI) as they apply to vh: the sidecar of vh->svc on vh->port, or the
 * Gateway vh->gateway on its port vh->port. Each applying rule gives the
 * sniHosts of its applying match blocks and its weighted clusters (n_split
 * 0: some share goes nowhere, the rule fails closed). vh NULL: check every
 * rule, build nothing. Appends to *out (arena memory). */
struct ist_tls_rule {
    const char **names;
    size_t n_names;
    /* Non-empty: the rule of a match block with destinationSubnets (these
     * blocks), only for the listeners that claim them (a sidecar's, with
     * capture); such rules follow the others of their VirtualService rule. */
    const char **subnets;
    size_t n_subnets;
    struct tr_weighted_cluster_cfg *split;
    size_t n_split;
    struct tr_cfg_loc loc;
};
bool ist_vs_tls_rules(struct ist_ctx *x, const struct tr_resource *vs, const struct ist_vhost *vh,
                      struct ist_tls_rule **out, size_t *n, size_t *cap);
/* A listener's sni_routes as they are built: a rule per call, with the
 * names no earlier rule took (lower-cased; first match wins). */
#define IST_MAX_SNI_RULES 4096 /* the model's limit (config/internal.h, CFG_MAX_SNI_ROUTES) */
struct ist_sni_rules {
    struct tr_sni_route_cfg *v; /* scratch; ist_sni_rules_copy puts it in the model */
    size_t n, cap;
    struct tr_strmap seen;
    bool ready;
    bool overflow; /* more than IST_MAX_SNI_RULES: the rest were left out (report it) */
    /* A rule with the name "*": every name it is reached by and no SNI go
     * to its split (the listener's tcp_cluster(s)); later rules are not. */
    bool has_default;
    const struct tr_weighted_cluster_cfg *default_split;
    size_t n_default;
    const char *default_nowhere;
};
/* names -> split (n_split 1: its cluster; 0: to nowhere, which is the
 * cluster nowhere, or, when NULL, no rule: the names stay unrouted, so the
 * listener's default or a close takes them). The name "*" makes split the
 * listener's default (see has_default). false on no memory. */
bool ist_sni_rules_add(struct ist_ctx *x, struct ist_sni_rules *rs, const char *const *names,
                       size_t n_names, const struct tr_weighted_cluster_cfg *split, size_t n_split,
                       const char *nowhere, struct tr_cfg_loc loc);
bool ist_sni_rules_copy(struct ist_ctx *x, const struct ist_sni_rules *rs,
                        struct tr_listener_cfg *l);

/* The cluster outbound|PORT|SUBSET|HOST (created on first use, with its
 * endpoints and DestinationRule policy); its name in the model's arena. */
const char *ist_cluster_for(struct ist_ctx *x, const struct ist_service *s, size_t port_idx,
                            const char *subset);

/* The cluster a key set at jwksUri is fetched through (authn.c). A
 * registry host's port: its outbound cluster; for https, when that cluster
 * does not originate TLS itself (no DestinationRule SIMPLE or MUTUAL), a
 * copy jwks|PORT|HOST that does, with the system's trust store and host
 * (the URL's) as SNI and name to verify. A host outside the registry (s
 * NULL): a cluster jwks|PORT|HOST that the proxy resolves by DNS. loc: the
 * rule's. */
const char *ist_jwks_cluster(struct ist_ctx *x, const struct ist_service *s, size_t pi,
                             const char *host, uint32_t port, bool https,
                             const struct tr_cfg_loc *loc);

/* Check every Istio resource once (compile.c). */
void ist_check_all(struct ist_ctx *x);
/* Set up and tear down a context (compile.c). */
bool ist_ctx_init(struct ist_ctx *x, const struct tr_rset *rs, const struct tr_istio_options *o,
                  struct tr_diags *d);
void ist_ctx_fini(struct ist_ctx *x);

/* A copy of the service port's cluster with no endpoint (compile.c). */
const char *ist_empty_cluster(struct ist_ctx *x, const struct ist_service *s, size_t pi);
/* The service port's cluster (of subset, or NULL) as AUTO_PASSTHROUGH
 * names it, outbound_.PORT_.SUBSET_.HOST, with no TLS of its own (compile.c). */
const char *ist_passthrough_cluster(struct ist_ctx *x, const struct ist_service *s, size_t pi,
                                    const char *subset);

/* ------------------------------------------------------------- policy */

enum ist_tls {
    IST_TLS_AUTO = 0,     /* mTLS when every endpoint has a sidecar, else plaintext */
    IST_TLS_DISABLE,      /* plaintext */
    IST_TLS_ISTIO_MUTUAL, /* mesh mTLS */
    IST_TLS_SIMPLE,       /* TLS origination: verify the server */
    IST_TLS_MUTUAL,       /* ... and present credentialName's certificate */
    IST_TLS_UNSUPPORTED,  /* what cannot be done: fail closed (no endpoints) */
};

struct ist_cluster_policy {
    enum tr_lb_policy lb;
    uint32_t connect_timeout_ms;
    uint32_t idle_timeout_ms;
    struct tr_circuit_breakers_cfg breakers; /* per proxy; 0: unlimited */
    uint32_t max_requests_per_connection;
    struct tr_outlier_cfg outlier;
    struct tr_hash_policy_cfg hash;
    uint32_t h2_max_streams; /* 0: default */
    bool h2_upgrade;
    bool use_client_protocol;
    enum ist_tls tls;
    const char *sni;
    const struct tr_rnode *sans;
    /* SIMPLE and MUTUAL: the context made of credentialName's Secret (or
     * the system's trust store); NULL: none could be made (reported) */
    const char *client_ctx;
    bool insecure;                       /* insecureSkipVerify */
    uint32_t max_connection_duration_ms; /* tcp.maxConnectionDuration; 0: none */
    bool has_keepalive;                  /* tcp.tcpKeepalive */
    struct tr_tcp_keepalive_cfg keepalive;
    bool has_retry_budget; /* retryBudget */
    struct tr_retry_budget_cfg retry_budget;
    struct tr_warmup_cfg warmup; /* duration 0: none */
    /* The rule's loadBalancer.localityLbSetting (NULL: the mesh's), and
     * whether failover may apply (the policy has outlierDetection). */
    const struct tr_rnode *locality;
    bool failover;
    bool original_dst; /* PASSTHROUGH with capture: to the original destination */
};

/* A ConnectionPoolSettings (connectionPool), checked as istiod does (the
 * cursor at it); and applied to an inbound cluster (a Sidecar's
 * inboundConnectionPool or ingress[].connectionPool, of resource res):
 * limits, timeouts, keepalive, protocol choices, as for outbound ones. */
void ist_check_pool(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *pool,
                    bool inbound);
/* Server TLS (ServerTLSSettings) that terminates, SIMPLE or MUTUAL, of a
 * Gateway server or a Sidecar ingress listener (res): checked as for a
 * gateway (the cursor at the tls block), and made into a server context
 * named name from credentialName's Secret (in the workload's namespace,
 * else res's); NULL when it cannot be made (reported by the check). */
void ist_server_tls_check(struct ist_ctx *x, struct ist_cursor *c, const struct tr_resource *res,
                          const struct tr_rnode *tls);
const char *ist_server_tls_context(struct ist_ctx *x, const struct tr_resource *res,
                                   const struct tr_rnode *tls, const char *name);
/* A DestinationRule's connectionPool for a port: its portLevelSettings' for
 * the port, else its trafficPolicy's; NULL: none (what inbound clusters of
 * the rule's service fall back to). */
const struct tr_rnode *ist_dr_pool(const struct tr_resource *dr, uint32_t port);
void ist_inbound_pool_apply(struct ist_ctx *x, const struct tr_resource *res,
                            const struct tr_rnode *pool, bool http_port, struct tr_cluster_cfg *c);
/* Istio's protocol of a port: appProtocol or a port name (prefix_only: a
 * name "http-web" counts as http). *named: a protocol was recognised. */
enum ist_proto ist_proto_of(const char *s, bool prefix_only, bool *named);
/* Locality load balancing (locality.c): sets the endpoints' locality,
 * priority and the cluster's locality weights for the workload x compiles
 * for, from the policy's (or the mesh's) localityLbSetting. insts[i] is the
 * instance of c->endpoints[i] (NULL: unknown); endpoints that distribute
 * drops leave both arrays. */
void ist_locality_apply(struct ist_ctx *x, struct tr_cluster_cfg *c, const struct ist_inst **insts,
                        const struct ist_cluster_policy *p);
/* Checks a localityLbSetting (the cursor at it; ls may be NULL) as istiod's
 * validation does. */
void ist_check_locality_setting(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *ls);
/* Istio's locality of an instance from its labels: istio-locality
 * ("region.zone.subzone", or with "/"), else spec.nodeName's Node topology
 * labels; NULL when neither says. */
const char *ist_locality_of(struct ist_ctx *x, const struct tr_rnode *labels, const char *node);

/* ------------------------------------------------------------ secrets */

/* A Secret's TLS material as PEM text in the model's arena; NULL: absent. */
struct ist_secret {
    const struct tr_resource *res;
    const char *crt, *key, *ca;
};
/* The Secret ns/name in the input, or NULL. */
const struct tr_resource *ist_secret_find(struct ist_ctx *x, const char *ns, const char *name);
/* Decodes s; an unusable value is an error at node at, field key (false). */
bool ist_secret_read(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *at,
                     const char *key, const struct tr_resource *s, struct ist_secret *out);
/* The model's TLS context name (made once; s NULL: no material, a client
 * context on the system's trust store) with s's certificate and key
 * (with_cert) and CA (with_ca); NULL when out of memory. The pointer is
 * valid until the next call. */
struct tr_tls_cfg *ist_tls_context(struct ist_ctx *x, enum tr_tls_kind kind, const char *name,
                                   const struct ist_secret *s, bool with_cert, bool with_ca);

/* The DestinationRule for host as seen from the workload, or NULL. */
const struct tr_resource *ist_dr_for(struct ist_ctx *x, const char *host, const char *svc_ns);
/* The subset entry named name, or NULL. */
const struct tr_rnode *ist_dr_subset(const struct tr_resource *dr, const char *name);
/* Report every finding in a DestinationRule (once per rule). */
void ist_dr_check(struct ist_ctx *x, const struct tr_resource *dr);
/* The effective policy of (dr, subset, port), with Istio's defaults. */
void ist_policy_apply(struct ist_ctx *x, const struct tr_resource *dr, const char *subset,
                      uint32_t port, struct ist_cluster_policy *p);

/* ------------------------------------------------- peer authentication */

/* Check every PeerAuthentication once; report the mesh- and namespace-wide
 * ones that lose to an older one. */
void ist_peer_auth_check_all(struct ist_ctx *x);
/* The workload's policy (before its inbound listeners): sets pa_mode and
 * pa_ports; reports workload policies that lose to an older one. */
void ist_peer_auth_resolve(struct ist_ctx *x);
/* The inbound mode of a target port (marks a port-level entry used). */
enum tr_tls_mode ist_peer_auth_mode(struct ist_ctx *x, uint32_t target);
/* Report port-level entries no inbound listener took. */
void ist_peer_auth_unused(struct ist_ctx *x);
/* `ctl analyze`: report workload policies that lose to older ones. */
void ist_peer_auth_analyze(struct ist_ctx *x);
/* Does instance in take plaintext only on its (target) port (its policies
 * say DISABLE)? Istio's clients then send it plaintext (auto mTLS). */
bool ist_peer_auth_plaintext(struct ist_ctx *x, const struct ist_inst *in, uint32_t port);

/* ------------------------------------------------------ authorization */

/* AuthorizationPolicy (security.istio.io): every policy is read and
 * checked; those that apply to the workload go to its inbound listeners
 * (authz.c). Call after the inbound listeners exist. */
bool ist_authz(struct ist_ctx *x);

/* ------------------------------------------------- mesh configuration */

/* Reads the mesh configuration (ConfigMap istio in the root namespace,
 * data.mesh) once per compile, warning about what trellis does not read. */
void ist_mesh_read(struct ist_ctx *x);
/* A CUSTOM policy's spec.provider: the model's external authorizer name
 * (made on first use, with its outbound cluster), or NULL when it cannot be
 * used (an error at the policy: the caller fails closed). */
const char *ist_ext_authz_provider(struct ist_ctx *x, struct ist_cursor *c,
                                   const struct tr_rnode *provider);

#endif
