/* config/model.h: the proxy's internal configuration model.
 *
 * Every dialect (Istio, Gateway API, Linkerd, Cilium) is compiled by the
 * control plane into this one model; the proxy knows nothing else. A
 * tr_config is immutable once validated and owned by its arena: everything
 * it points to is freed by tr_config_free().
 *
 * Objects refer to each other by name (listener.route_table_name, a weighted
 * cluster's cluster_name, ...). tr_config_validate() (config/load.h), which
 * the loader runs and a compiler must run on a model it built, checks every
 * invariant and resolves the names into the index fields (listener.tls,
 * route_table, tcp_cluster; cluster.tls; weighted cluster.cluster) so the
 * request path never looks anything up by name. A builder sets names, never
 * indexes: validate overwrites them.
 *
 * Each object keeps its source location (file, line, column, field path, and
 * for compiled objects the source resource) so that validate and later
 * stages (TLS loading, socket binding) report errors in the same
 * "file:line:col: path: message" shape as the loader.
 */
#ifndef TR_CONFIG_MODEL_H
#define TR_CONFIG_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The resource an object was compiled from, e.g. VirtualService
 * default/reviews; all NULL for objects read from a trellis file. */
struct tr_cfg_origin {
    const char *kind; /* "VirtualService", "HTTPRoute", ... */
    const char *ns;   /* namespace; NULL for cluster-scoped resources */
    const char *name;
};

struct tr_cfg_loc {
    const char *file; /* config file name */
    uint32_t line;    /* 1-based; 0 if unknown */
    uint32_t col;     /* 1-based */
    const char *path; /* field path, e.g. "listeners[1].tls.mode"; for a compiled
                       * object, its path in the source resource ("spec.http[0]") */
    struct tr_cfg_origin origin;
};

struct tr_cfg_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    const char *text; /* as written: "127.0.0.1:8080", "[::1]:80" */
};

enum tr_tls_mode {
    TR_TLS_DISABLE = 0, /* plaintext only */
    TR_TLS_PERMISSIVE,  /* mTLS or plaintext, detected per connection */
    TR_TLS_STRICT,      /* mTLS only; plaintext refused */
    TR_TLS_TERMINATE,   /* TLS with server contexts (a gateway), chosen by SNI */
};

/* What a TLS context is for. */
enum tr_tls_kind {
    TR_TLSK_MESH = 0, /* SPIFFE mTLS: our SVID, the bundle, peer IDs checked */
    TR_TLSK_SERVER,   /* TLS termination: a server certificate; ca: client certs required */
    TR_TLSK_CLIENT,   /* TLS origination: ca verifies the server; optional client cert */
};

enum tr_direction {
    TR_DIR_INBOUND = 0, /* in front of the local workload: reporter="destination" */
    TR_DIR_OUTBOUND,    /* from the local workload to others: reporter="source" */
};

enum tr_listener_protocol {
    TR_LPROTO_HTTP = 0, /* HTTP/1.1 (HTTP/2 later); routed by route_table */
    TR_LPROTO_TCP,      /* opaque bytes to tcp_cluster */
    TR_LPROTO_AUTO,     /* detect HTTP vs opaque TCP per connection */
};

enum tr_request_id_mode {
    TR_REQID_PRESERVE = 0, /* keep x-request-id if present, generate if absent */
    TR_REQID_ALWAYS,       /* always replace with a new one */
    TR_REQID_OFF,          /* neither add nor touch */
};

/* How a listener normalises request paths before every decision
 * (filter/path_normalize.h). STRICT, the default, is trellis's own;
 * the others are Istio's meshConfig pathNormalization. */
enum tr_path_normalization {
    TR_PATHNORM_STRICT = 0,
    TR_PATHNORM_NONE,
    TR_PATHNORM_BASE,
    TR_PATHNORM_MERGE_SLASHES,
    TR_PATHNORM_DECODE_AND_MERGE_SLASHES,
};

enum tr_xff_mode {
    TR_XFF_APPEND = 0, /* append the peer address to X-Forwarded-For */
    TR_XFF_OFF,        /* leave X-Forwarded-For as received */
};

/* A TLS context: a certificate, its key and a trust bundle. Each of the
 * three comes from a file or inline PEM (at most one of the two); which are
 * required depends on kind (docs/config.md). */
struct tr_tls_cfg {
    const char *name;
    enum tr_tls_kind kind;     /* default mesh */
    const char *cert_file;     /* PEM chain; a mesh leaf carries one spiffe:// URI SAN */
    const char *key_file;      /* PEM private key */
    const char *ca_file;       /* PEM trust bundle */
    const char *cert_pem;      /* inline PEM instead of cert_file */
    const char *key_pem;       /* inline PEM instead of key_file */
    const char *ca_pem;        /* inline PEM instead of ca_file */
    const char **server_names; /* server: SNI names this certificate serves ("*.x" too); 0: any */
    size_t n_server_names;
    const char *trust_domain; /* peers must be spiffe://<trust_domain>/...; NULL: any */
    uint16_t min_version;     /* TLS1_2_VERSION or TLS1_3_VERSION (default 1.3) */
    bool session_resumption;  /* default true */
    /* mesh only: cert, key and bundle are the identity the proxy obtained
     * from its control plane (runtime/snapshot.h), not files or PEM here */
    bool from_control_plane;
    struct tr_cfg_loc loc;
};

/* Authorization, evaluated per request on HTTP listeners and per connection on
 * TCP ones, in Istio's order (docs/config.md, "listeners[].authorization"):
 * any matching DENY policy denies; then, if any ALLOW policy exists, a
 * request must match one; otherwise it is allowed. AUDIT policies only mark.
 * `rules` is the older, simpler form: each rule acts as a policy of its own. */
enum tr_authz_action { TR_AUTHZ_ALLOW = 0, TR_AUTHZ_DENY, TR_AUTHZ_AUDIT, TR_AUTHZ_CUSTOM };

struct tr_authz_rule_cfg {
    enum tr_authz_action action; /* ALLOW or DENY */
    const char **principals;     /* SPIFFE IDs; "*" any authenticated; trailing "*" = prefix */
    size_t n_principals;         /* 0: any source (incl. plaintext) */
    const char **methods;        /* HTTP only; 0: any */
    size_t n_methods;
    const char **paths; /* HTTP only; exact, or prefix if ending in "*"; 0: any */
    size_t n_paths;
    struct tr_cfg_loc loc;
};

/* One source of a policy rule (Istio's rules[].from[].source): every list
 * that is set must match; n_x == 0 leaves x unchecked. Principals are
 * Istio's, without "spiffe://". */
struct tr_authz_source_cfg {
    const char **principals, **not_principals;
    size_t n_principals, n_not_principals;
    const char **request_principals, **not_request_principals;
    size_t n_request_principals, n_not_request_principals;
    const char **namespaces, **not_namespaces;
    size_t n_namespaces, n_not_namespaces;
    const char **ip_blocks, **not_ip_blocks;
    size_t n_ip_blocks, n_not_ip_blocks;
    const char **remote_ip_blocks, **not_remote_ip_blocks;
    size_t n_remote_ip_blocks, n_not_remote_ip_blocks;
    struct tr_cfg_loc loc;
};

/* One operation (rules[].to[].operation). Ports are decimal strings. */
struct tr_authz_operation_cfg {
    const char **hosts, **not_hosts;
    size_t n_hosts, n_not_hosts;
    const char **ports, **not_ports;
    size_t n_ports, n_not_ports;
    const char **methods, **not_methods;
    size_t n_methods, n_not_methods;
    const char **paths, **not_paths;
    size_t n_paths, n_not_paths;
    struct tr_cfg_loc loc;
};

/* One condition (rules[].when[]): key as Istio spells it. */
struct tr_authz_condition_cfg {
    const char *key;
    const char **values, **not_values;
    size_t n_values, n_not_values;
    struct tr_cfg_loc loc;
};

/* A rule matches when one of its sources (or none given), one of its
 * operations (or none given) and all of its conditions match. */
struct tr_authz_policy_rule_cfg {
    struct tr_authz_source_cfg *from;
    size_t n_from;
    struct tr_authz_operation_cfg *to;
    size_t n_to;
    struct tr_authz_condition_cfg *when;
    size_t n_when;
    struct tr_cfg_loc loc;
};

/* A policy matches when one of its rules does; with no rules it matches
 * nothing (Istio's `spec: {}`, an ALLOW policy that admits nothing). */
struct tr_authz_policy_cfg {
    const char *name; /* how decisions name it: "NAMESPACE/NAME" for Istio's */
    enum tr_authz_action action;
    /* CUSTOM only (required there, refused otherwise): the external
     * authorizer (tr_config.ext_authz) asked about the requests the rules
     * match, before DENY and ALLOW policies decide (Istio's order). */
    const char *provider_name;
    int provider; /* set by validate: index into tr_config.ext_authz, else -1 */
    struct tr_authz_policy_rule_cfg *rules;
    size_t n_rules;
    struct tr_cfg_loc loc;
};

struct tr_authz_cfg {
    struct tr_authz_rule_cfg *rules;
    size_t n_rules;
    struct tr_authz_policy_cfg *policies;
    size_t n_policies;
};

/* Request authentication (JWT; Istio's RequestAuthentication), per HTTP
 * listener: filter/jwt.h. A request's token is looked for in each rule's
 * locations; a token is verified against the rule whose issuer it names
 * (signature with the rule's keys, aud against audiences, exp and nbf with
 * TR_JWT_CLOCK_SKEW_S). An invalid token is answered 401; a request without
 * one goes on unauthenticated (authorization decides). */
struct tr_jwt_header_cfg {
    const char *name;   /* lowercase field name */
    const char *prefix; /* the value starts with it ("Bearer "); NULL: none */
    struct tr_cfg_loc loc;
};

struct tr_jwt_claim_header_cfg {
    const char *header; /* lowercase field name set on the request sent upstream */
    const char *claim;  /* a top-level claim: string, number or boolean */
    struct tr_cfg_loc loc;
};

/* Where a rule's key set is fetched from (Istio's jwksUri): GET url
 * through cluster every refresh_ms; a failed fetch keeps the last keys. */
struct tr_jwks_uri_cfg {
    const char *url;          /* http://host[:port]/path (https is refused at load) */
    const char *cluster_name; /* the cluster the request goes through */
    int cluster;              /* set by validate: index into tr_config.clusters */
    uint32_t refresh_ms;      /* default 20m (Istio's), at least 1s */
    uint32_t timeout_ms;      /* one fetch's; default 5s */
};

struct tr_jwt_rule_cfg {
    const char *issuer;
    const char **audiences; /* 0: any (or none) */
    size_t n_audiences;
    const char *jwks;                 /* the JSON Web Key Set, inline; NULL: none */
    struct tr_jwks_uri_cfg *jwks_uri; /* NULL: keys are inline only */
    /* Where the token is: with none of the three, Envoy's defaults
     * (Authorization "Bearer " and the access_token query parameter). */
    struct tr_jwt_header_cfg *from_headers;
    size_t n_from_headers;
    const char **from_params;
    size_t n_from_params;
    const char **from_cookies;
    size_t n_from_cookies;
    bool forward_original_token;          /* false: the token's header is not sent upstream */
    const char *output_payload_to_header; /* its base64url payload to this field; NULL: none */
    struct tr_jwt_claim_header_cfg *output_claim_to_headers;
    size_t n_output_claim_to_headers;
    struct tr_cfg_loc loc;
};

struct tr_request_authn_cfg {
    struct tr_jwt_rule_cfg *rules;
    size_t n_rules;
};

/* ---- original-destination capture (listeners[].original_destination) ----
 * A capture listener accepts connections that a firewall rule redirected
 * to it (trellis ctl iptables), recovers where each was going
 * (SO_ORIGINAL_DST) and hands it to the virtual listener (bind: false) of
 * its direction with that address: exact ip:port first, then 0.0.0.0:port or
 * [::]:port. Istio's outboundTrafficPolicy says what happens without one. */
enum tr_capture_unmatched {
    TR_CAPTURE_PASSTHROUGH = 0, /* a plain TCP relay to the original destination
                                 * (Istio ALLOW_ANY, PassthroughCluster) */
    TR_CAPTURE_REJECT,          /* close (Istio REGISTRY_ONLY) */
};

struct tr_original_dst_cfg {
    enum tr_capture_unmatched unmatched; /* default passthrough */
    uint32_t connect_timeout_ms;         /* passthrough connects; default 1000 */
};

/* ---- TLS passthrough by SNI (listeners[].sni_routes) ----
 * A tcp listener (tls DISABLE) that reads the SNI of each connection's TLS
 * ClientHello without consuming or terminating anything (detect/detect.h,
 * tr_detect_sni) and sends the bytes, untouched, to the first rule that
 * lists the name: exact, or "*.x" for any name below x, case-insensitive.
 * A connection no rule takes (no SNI, another name, not TLS, nothing sent
 * in time) goes to the listener's tcp_cluster / tcp_clusters, or is closed
 * when it has neither; a malformed ClientHello is closed. The snapshot
 * compiles the rules into sorted tables (router/sni_route.h). */
struct tr_sni_route_cfg {
    const char **server_names; /* 1..1000: host names or "*.domain" */
    size_t n_server_names;
    const char *tcp_cluster_name; /* exactly one of this and tcp_clusters */
    int tcp_cluster;              /* set by validate: index into tr_config.clusters, else -1 */
    struct tr_weighted_cluster_cfg *tcp_clusters; /* 0, or 1..256 with a positive total */
    size_t n_tcp_clusters;
    struct tr_cfg_loc loc;
};

struct tr_listener_cfg {
    const char *name;
    struct tr_cfg_addr addr;
    enum tr_direction direction;
    enum tr_listener_protocol protocol;
    enum tr_tls_mode tls_mode; /* STRICT, PERMISSIVE: inbound only; TERMINATE: any direction */
    const char *tls_name;      /* mesh TLS context (tls.context); NULL: none */
    const char **tls_contexts; /* TERMINATE: server contexts (tls.contexts), by SNI */
    size_t n_tls_contexts;
    const char *route_table_name; /* HTTP and auto: route table; else NULL */
    const char *tcp_cluster_name; /* TCP and auto: cluster (or tcp_clusters); else NULL */
    int tls;                      /* set by validate: index into tr_config.tls, -1 if none */
    int route_table;              /* set by validate: index into tr_config.route_tables, else -1 */
    int tcp_cluster;              /* set by validate: index into tr_config.clusters, else -1 */
    enum tr_xff_mode xff;
    bool xfp; /* set X-Forwarded-Proto */
    enum tr_request_id_mode request_id;
    enum tr_path_normalization path_normalization; /* default STRICT */
    uint32_t detect_timeout_ms;  /* protocol detection (AUTO, PERMISSIVE); default 100 */
    uint32_t idle_timeout_ms;    /* downstream idle; default 300000 */
    uint32_t request_timeout_ms; /* whole request head must arrive within; default 10000 */
    struct tr_authz_cfg authz;
    struct tr_request_authn_cfg request_authn;
    struct tr_cfg_loc loc;
    /* ---- weighted TCP routes (listeners[].tcp_clusters) ----
     * Exclusive with tcp_cluster (the one-cluster shorthand, kept as it is).
     * Each TCP connection (a tcp listener's, an auto listener's non-HTTP
     * ones) goes to one entry, picked by weight before connecting
     * (router.h, tr_weighted_pick); validate resolves each cluster_name into
     * cluster and refuses header edits, which a byte stream cannot carry. */
    struct tr_weighted_cluster_cfg *tcp_clusters; /* 0, or 1..256 with a positive total */
    size_t n_tcp_clusters;
    /* ---- capture (see tr_original_dst_cfg) ---- */
    bool bind; /* default true; false: a virtual listener, reached only through a
                * capture listener of its direction (no socket of its own) */
    struct tr_original_dst_cfg *original_destination; /* non-NULL: a capture listener */
    /* A virtual listener with destination_prefixes claims the original
     * destinations in these CIDR blocks on its address's port, instead of
     * its address (a wildcard); the most specific claim wins (Envoy's
     * filter chain destination_prefix_ranges, Istio's destinationSubnets).
     * 0..256 blocks, each checked by tr_cidr_parse. */
    const char **destination_prefixes;
    size_t n_destination_prefixes;
    /* ---- TLS passthrough by SNI (see tr_sni_route_cfg): 0..256 rules ---- */
    struct tr_sni_route_cfg *sni_routes;
    size_t n_sni_routes;
};

enum tr_path_match { TR_PATH_PREFIX = 0, TR_PATH_EXACT, TR_PATH_REGEX };

enum tr_header_match_kind {
    TR_HMATCH_EXACT = 0,
    TR_HMATCH_PREFIX,
    TR_HMATCH_SUFFIX,
    TR_HMATCH_REGEX, /* PCRE2, anchored at both ends (RE2-style full match) */
    TR_HMATCH_PRESENT,
};

struct tr_header_match_cfg {
    const char *name; /* lower-cased at load */
    enum tr_header_match_kind kind;
    const char *value; /* NULL for PRESENT */
    bool invert;
    struct tr_cfg_loc loc;
};

/* ---- request matching beyond path, method and headers; header edits ----
 * (Istio HTTPMatchRequest.queryParams, authority, scheme, method; Headers).
 * Query parameters are matched as sent: names and values byte for byte,
 * never percent-decoded, the first occurrence of a name counting (Envoy's
 * rule). */
struct tr_query_match_cfg {
    const char *name;               /* raw, case-sensitive */
    enum tr_header_match_kind kind; /* EXACT, PREFIX, REGEX or PRESENT */
    const char *value;              /* NULL for PRESENT */
    struct tr_cfg_loc loc;
};

/* One NAME: VALUE of a header edit's set or add mapping. */
struct tr_name_value_cfg {
    const char *name; /* lower-cased HTTP token */
    const char *value;
};

/* Header edits as written (Envoy's order: remove, then set, then add).
 * Names exclude what would break framing or the mesh (hop-by-hop,
 * content-length, host, pseudo-headers, trellis-*). */
struct tr_header_ops_cfg {
    const char **remove; /* every value of these names goes */
    size_t n_remove;
    struct tr_name_value_cfg *set; /* replaces every value, or adds */
    size_t n_set;
    struct tr_name_value_cfg *add; /* appends one more value */
    size_t n_add;
};

/* What the proxy applies to one message: a route's edits followed by those
 * of the destination that was picked, merged by validate into one program:
 * values of names in drop (received, or added by the proxy's own policy
 * such as x-forwarded-for) are not sent, then emit is appended in order. */
struct tr_header_edit_name {
    const char *name; /* lower case */
    uint32_t len;
};
struct tr_header_edit_field {
    const char *name; /* lower case */
    const char *value;
    uint32_t name_len, value_len;
};
struct tr_header_edit {
    const struct tr_header_edit_name *drop;
    uint32_t n_drop;
    const struct tr_header_edit_field *emit;
    uint32_t n_emit;
    uint32_t emit_bytes;    /* sum of name and value lengths of emit */
    uint64_t drop_len_mask; /* bit (length % 64) of each drop name: a quick "no" */
};

struct tr_weighted_cluster_cfg {
    const char *cluster_name;
    int cluster; /* set by validate: index into tr_config.clusters */
    uint32_t weight;
    struct tr_cfg_loc loc; /* path NULL: errors name the route's weighted_clusters[i] */
    /* header edits when this destination is picked, after the route's */
    struct tr_header_ops_cfg request_headers, response_headers;
    /* set by validate: the route's edits then these; NULL: nothing to do */
    const struct tr_header_edit *request_edit, *response_edit;
};

/* ---- retries and mirroring (routes[].retries, routes[].mirrors) ----
 * Every route has a retry policy: a route that does not write `retries`
 * gets the defaults of the table (config/schema.c), which are Istio's
 * default policy as trellis applies it (docs/config.md, "Retries"). The
 * proxy side is upstream/retry.h and upstream/mirror.h. */

/* retry_on conditions (Envoy's names, which Istio's retryOn passes on). */
enum tr_retry_on {
    TR_RETRY_ON_5XX = 1u << 0,                    /* a 5xx, or no response at all */
    TR_RETRY_ON_GATEWAY_ERROR = 1u << 1,          /* 502, 503, 504, or no response at all */
    TR_RETRY_ON_RESET = 1u << 2,                  /* no response: reset, closed, per-try timeout */
    TR_RETRY_ON_RESET_BEFORE_REQUEST = 1u << 3,   /* ... before any byte of the request left */
    TR_RETRY_ON_CONNECT_FAILURE = 1u << 4,        /* no connection (or TLS handshake) */
    TR_RETRY_ON_REFUSED_STREAM = 1u << 5,         /* HTTP/2 REFUSED_STREAM, beyond a GOAWAY */
    TR_RETRY_ON_RETRIABLE_4XX = 1u << 6,          /* 409 */
    TR_RETRY_ON_RETRIABLE_STATUS_CODES = 1u << 7, /* retriable_status_codes */
    TR_RETRY_ON_CANCELLED = 1u << 8,              /* grpc-status of a response head: 1 */
    TR_RETRY_ON_DEADLINE_EXCEEDED = 1u << 9,      /* 4 */
    TR_RETRY_ON_RESOURCE_EXHAUSTED = 1u << 10,    /* 8 */
    TR_RETRY_ON_INTERNAL = 1u << 11,              /* 13 */
    TR_RETRY_ON_UNAVAILABLE = 1u << 12,           /* 14 */
};
/* The conditions that read a response head's grpc-status. */
#define TR_RETRY_ON_GRPC                                                                           \
    (TR_RETRY_ON_CANCELLED | TR_RETRY_ON_DEADLINE_EXCEEDED | TR_RETRY_ON_RESOURCE_EXHAUSTED |      \
     TR_RETRY_ON_INTERNAL | TR_RETRY_ON_UNAVAILABLE)

/* The status codes a retry policy can name: 200-599, one bit each. */
#define TR_RETRY_CODE_MIN 200u
#define TR_RETRY_CODE_MAX 599u

struct tr_retry_cfg {
    uint32_t attempts;           /* retries after the first try; 0: none at all; default 2 */
    uint32_t per_try_timeout_ms; /* each try, until its response head; 0 (default): none */
    const char **retry_on;       /* condition names as written; none: the default list */
    size_t n_retry_on;
    const char **status_codes; /* retriable_status_codes as written ("503") */
    size_t n_status_codes;
    uint32_t backoff_base_ms;        /* default 25 */
    uint32_t backoff_max_ms;         /* default 250 */
    bool retry_non_idempotent;       /* also re-send what may have reached the upstream; false */
    uint32_t max_body;               /* max_body_for_retry, bytes; default 65536 */
    uint32_t budget_percent;         /* retries in flight <= max(min, percent% of requests); 20 */
    uint32_t budget_min_concurrency; /* default 3 */
    uint32_t
        exclude_tried_priorities; /* every N tries, leave their levels out; 0 (default): never */
    bool avoid_failed_endpoint;   /* a retry prefers another endpoint; default true */
    /* set by validate */
    uint32_t on; /* enum tr_retry_on bits */
    uint64_t code_bits[(TR_RETRY_CODE_MAX - TR_RETRY_CODE_MIN) / 64 + 1];
};

/* A shadow copy of the route's requests to another cluster (Istio's
 * mirror / mirrors with mirrorPercentage): fire and forget. */
struct tr_mirror_cfg {
    const char *cluster_name;
    int cluster;          /* set by validate: index into tr_config.clusters */
    uint32_t per_million; /* the share of requests mirrored (percent); default all */
    struct tr_cfg_loc loc;
};

/* ---- Local route actions: a redirect, fault injection, CORS. The proxy
 * answers (or delays) these requests itself; filter/route_action.h applies
 * them, docs/config.md describes them. Optional sub-objects of a route:
 * NULL when absent. ---- */

/* Where the port of a redirect's Location comes from when redirect.port is
 * not set (Istio HTTPRedirect.derivePort). */
enum tr_redirect_port_from {
    TR_REDIRECT_PORT_KEEP = 0,         /* Envoy's rule: the request's authority port, kept
                                        * with the request's host (dropped when the scheme
                                        * changes away from that port's default); none with
                                        * a new host */
    TR_REDIRECT_PORT_PROTOCOL_DEFAULT, /* none: the scheme's default (80, 443) */
    TR_REDIRECT_PORT_REQUEST,          /* the request's port (its authority's, else its
                                        * scheme's default) */
};

struct tr_redirect_cfg {
    const char *scheme; /* "http" or "https"; NULL: the request's */
    const char *host;   /* URI host without port; NULL: the request's */
    uint16_t port;      /* 1-65535; 0: per port_from. A port that is the new scheme's
                         * default is left out of the Location (as istiod does) */
    enum tr_redirect_port_from port_from;
    const char *path;   /* replaces the whole path; NULL: the request's */
    const char *prefix; /* replaces the matched prefix (prefix routes only); NULL: none */
    uint16_t code;      /* 301 (default), 302, 303, 307 or 308 */
};

/* Shares of requests are per million (percent x 10^4): the resolution of
 * Istio's Percent as Envoy receives it (FractionalPercent per MILLION). */
#define TR_PER_MILLION 1000000u

struct tr_fault_delay_cfg {
    uint32_t fixed_ms;    /* 1ms-24h */
    uint32_t per_million; /* requests delayed */
};

struct tr_fault_abort_cfg {
    uint16_t status;      /* HTTP status 200-599; 0 when grpc */
    bool grpc;            /* answer gRPC status grpc_status instead */
    uint8_t grpc_status;  /* 0-16 when grpc */
    uint32_t per_million; /* requests aborted */
};

struct tr_fault_cfg {
    struct tr_fault_delay_cfg *delay; /* NULL: none */
    struct tr_fault_abort_cfg *abort; /* NULL: none; at least one of the two is set */
};

enum tr_origin_match { TR_ORIGIN_EXACT = 0, TR_ORIGIN_PREFIX, TR_ORIGIN_REGEX };

struct tr_cors_origin_cfg {
    enum tr_origin_match kind;
    const char *value; /* REGEX: PCRE2, full match */
    struct tr_cfg_loc loc;
};

enum tr_cors_unmatched { TR_CORS_UNMATCHED_FORWARD = 0, TR_CORS_UNMATCHED_IGNORE };

struct tr_cors_cfg {
    struct tr_cors_origin_cfg *origins; /* >= 1; any match allows the origin */
    size_t n_origins;
    const char **allow_methods; /* tokens, or "*" (echo the requested method) */
    size_t n_allow_methods;
    const char **allow_headers; /* tokens, or "*" (echo the requested headers) */
    size_t n_allow_headers;
    const char **expose_headers; /* tokens, or "*" */
    size_t n_expose_headers;
    bool has_max_age;   /* Access-Control-Max-Age is sent */
    uint32_t max_age_s; /* 0-86400 */
    bool allow_credentials;
    enum tr_cors_unmatched unmatched_preflights;
    uint32_t index; /* set by validate: this policy's place among the config's
                     * (tr_config.n_cors), where the snapshot keeps it compiled */
};

struct tr_route_cfg {
    const char *name; /* NULL: validate names it "route-<index>" */
    enum tr_path_match path_kind;
    const char *path; /* prefix "/" matches everything; NULL: validate sets "/" for prefix */
    bool path_ignore_case;
    const char **methods; /* 0: any */
    size_t n_methods;
    struct tr_header_match_cfg *headers; /* all must match */
    size_t n_headers;
    struct tr_weighted_cluster_cfg *clusters; /* >= 1 unless direct_status or redirect */
    size_t n_clusters;
    uint32_t total_weight;  /* set by validate */
    uint16_t direct_status; /* nonzero: answer locally with this status */
    const char *direct_body;
    uint32_t timeout_ms;        /* whole request; 0 = none */
    const char *prefix_rewrite; /* NULL: none (replaces the matched prefix) */
    const char *host_rewrite;   /* NULL: none */
    /* rewrite.regex / substitution (Istio's uriRegexRewrite, Envoy's
     * regex_rewrite): every match of the pattern in the path (not the
     * query) replaced; \N in the substitution is capture group N. */
    const char *regex_rewrite; /* NULL: none */
    const char *regex_substitution;
    /* set by validate: the pattern compiled (PCRE2, in the config's arena)
     * and the substitution in PCRE2's syntax */
    const void *regex_rewrite_code;
    const char *regex_substitution_pcre;
    /* Local route actions (see above). */
    struct tr_redirect_cfg *redirect; /* NULL: none; else instead of clusters */
    struct tr_fault_cfg *fault;       /* NULL: none */
    struct tr_cors_cfg *cors;         /* NULL: none */
    struct tr_cfg_loc loc;
    /* request matching and header edits (see tr_query_match_cfg) */
    struct tr_query_match_cfg *query; /* all must match */
    size_t n_query;
    struct tr_header_ops_cfg request_headers, response_headers;
    /* set by validate: the route's own response edits, for a reply without
     * a destination (direct_response); NULL: nothing to do */
    const struct tr_header_edit *response_edit;
    /* retries and mirroring (see tr_retry_cfg) */
    struct tr_retry_cfg retries;
    struct tr_mirror_cfg *mirrors;
    size_t n_mirrors;
};

struct tr_vhost_cfg {
    const char *name;     /* NULL: validate names it "vhost-<index>" */
    const char **domains; /* "*", "*.suffix", "prefix.*", exact; optional :port */
    size_t n_domains;
    struct tr_route_cfg *routes; /* first match wins */
    size_t n_routes;
    struct tr_cfg_loc loc;
};

struct tr_route_table_cfg {
    const char *name;
    struct tr_vhost_cfg *vhosts;
    size_t n_vhosts;
    struct tr_cfg_loc loc;
};

enum tr_lb_policy {
    TR_LB_ROUND_ROBIN = 0,
    TR_LB_LEAST_REQUEST,
    TR_LB_RANDOM,
    TR_LB_RING_HASH, /* consistent hashing by hash_policy (ketama ring) */
    TR_LB_MAGLEV,    /* consistent hashing by hash_policy (Maglev lookup table) */
};

/* What the proxy speaks to a cluster's endpoints. */
enum tr_upstream_protocol {
    TR_UPROTO_HTTP1 = 0, /* pooled HTTP/1.1 connections, one request at a time each */
    TR_UPROTO_HTTP2,     /* multiplexed HTTP/2 (h2 by ALPN over TLS, else prior knowledge) */
    TR_UPROTO_ORIGINAL,  /* what the request arrived as (HTTP/2 stays HTTP/2); over a
                          * trellis mesh hop, the protocol the client originally spoke */
};

struct tr_endpoint_cfg {
    const char *name; /* NULL: validate names it after addr.text */
    struct tr_cfg_addr addr;
    uint32_t weight;      /* default 1 */
    const char *workload; /* destination_workload label; NULL: cluster's */
    /* Where the endpoint runs, "region/zone/subzone" (any part may be
     * empty); NULL: unknown. Groups endpoints for locality_weights. */
    const char *locality;
    /* Failover level: picks go to priority 0 while it is healthy enough,
     * then spill to 1, 2, ... (Envoy's priority levels); a compiler sets it
     * per client from the localities. */
    uint32_t priority;
    /* A DNS name instead of an IP address (the cluster's dns settings say
     * how it is resolved): host (RFC 1123, lower case) and port are set and
     * addr is unset except addr.text ("host:port"; validate fills it in for
     * a built model). The resolved addresses live in the runtime (dns/),
     * never in this immutable model. host NULL: addr is the address. */
    const char *host;
    uint16_t port;
    struct tr_cfg_loc loc;
};

/* ---- Outlier detection, consistent hashing, circuit breakers ----
 * Istio's DestinationRule outlierDetection, loadBalancer.consistentHash and
 * connectionPool limits (docs/config.md says where each default comes from).
 * Everything here is counted per worker (cluster/cluster.h). */

/* Passive health: an endpoint whose responses fail in a row is left out of
 * load balancing for base_ejection_ms x the times it was ejected. */
struct tr_outlier_cfg {
    bool enabled;                  /* the section is present (default: no ejection at all) */
    uint32_t consecutive_5xx;      /* 5xx in a row before an ejection; 0: off; default 5 */
    uint32_t consecutive_gateway;  /* 502/503/504 in a row; 0 (default): off */
    uint32_t consecutive_local;    /* local-origin failures in a row (split_local only); 5 */
    bool split_local;              /* count connect failures, resets and timeouts apart */
    uint32_t interval_ms;          /* ejection multiplier decays by one per interval; 10 s */
    uint32_t base_ejection_ms;     /* default 30 s */
    uint32_t max_ejection_percent; /* of the cluster's endpoints; default 10 */
    uint32_t min_health_percent;   /* below it ejections are ignored (panic); default 0 */
};

/* What a consistent-hash cluster hashes; validate sets source from which of
 * the fields is set (exactly one, or none: every request hashes at random). */
enum tr_hash_source {
    TR_HASH_NONE = 0,
    TR_HASH_HEADER,
    TR_HASH_COOKIE,
    TR_HASH_SOURCE_IP,
    TR_HASH_QUERY_PARAM,
};

struct tr_hash_policy_cfg {
    enum tr_hash_source source; /* set by validate */
    const char *header;         /* request header name (lower-cased); NULL: not this */
    const char *cookie;         /* cookie name; NULL: not this */
    const char *cookie_path;    /* Path of a generated cookie; NULL: none */
    uint32_t cookie_ttl_ms;     /* Max-Age of a generated cookie; 0: a session cookie */
    bool cookie_generate;       /* set the cookie on the response when the request has none */
    bool source_ip;             /* the client's IP address */
    const char *query_param;    /* query parameter name; NULL: not this */
    uint32_t ring_min_size;     /* ring_hash: points on the ring at least; default 1024 */
    uint32_t maglev_table_size; /* maglev: lookup table entries, a prime; default 65537 */
};

/* Slow start (Istio's warmup, Envoy's slow_start_config): an endpoint new
 * to the proxy gets weight x max(min_per_million / 1e6, (t / duration) ^
 * (1 / aggression)) until duration has passed since it appeared. */
struct tr_warmup_cfg {
    uint32_t duration_ms;     /* 0: no warm-up (the section is absent) */
    uint32_t min_per_million; /* of the weight; default 10% */
    uint32_t aggression;      /* in 1/10000: 10000 is 1.0, linear (default) */
};

/* Locality-weighted picks (Istio's localityLbSetting.distribute): within a
 * priority, a locality is drawn by weight (scaled by its share of healthy
 * endpoints), then an endpoint of it. */
struct tr_locality_weight_cfg {
    const char *locality; /* as in endpoints[].locality */
    uint32_t weight;
};

/* Per cluster per proxy (each worker enforces an even share, at least 1);
 * 0: no limit. Beyond one, requests fail at once with 503 UO. */
struct tr_circuit_breakers_cfg {
    uint32_t max_connections;      /* connections to all endpoints together */
    uint32_t max_pending_requests; /* requests waiting for a connection to be established */
    uint32_t max_requests;         /* requests in flight */
    uint32_t max_retries;          /* retries in flight (Istio http.maxRetries); 0: no cap */
};

/* TCP keep-alive on the cluster's upstream connections (Istio's
 * connectionPool.tcp.tcpKeepalive): SO_KEEPALIVE on; each value 0 keeps the
 * system's (Linux: 7200 s, 75 s, 9 probes). Whole seconds. */
struct tr_tcp_keepalive_cfg {
    uint32_t time_ms;     /* idle time before the first probe */
    uint32_t interval_ms; /* between probes */
    uint32_t probes;      /* unanswered probes before the connection is dead */
};

/* The cluster's own retry budget (Istio's DestinationRule retryBudget):
 * replaces the route's `retries.budget` for requests to this cluster. */
struct tr_retry_budget_cfg {
    uint32_t percent;         /* retries in flight <= max(min, percent% of requests) */
    uint32_t min_concurrency; /* retries always allowed */
};

/* ---- DNS endpoints (resolved by the proxy: dns/resolver.h) ---- */

enum tr_dns_mode {
    TR_DNS_ALL = 0, /* every resolved address is an endpoint (Istio resolution DNS,
                     * Envoy STRICT_DNS) */
    TR_DNS_FIRST,   /* one endpoint per name, at the first address of the latest answer;
                     * its connections are kept when the address changes (Istio
                     * DNS_ROUND_ROBIN, Envoy LOGICAL_DNS) */
};

enum tr_dns_family {
    TR_DNS_AUTO = 0, /* A and AAAA: the IPv4 addresses if there are any, else the IPv6
                      * ones (Envoy V4_PREFERRED) */
    TR_DNS_V4,       /* A only */
    TR_DNS_V6,       /* AAAA only */
};

struct tr_dns_cfg {
    enum tr_dns_mode mode;
    uint32_t refresh_ms; /* re-resolve after min(TTL, refresh), at least 1 s; 0 before
                          * validate: default 5000 (Envoy's dns_refresh_rate) */
    enum tr_dns_family family;
};

/* The proxy's own DNS client (top-level `resolver`). */
struct tr_resolver_cfg {
    const char **servers; /* "IP:PORT" texts; 0: the system's (/etc/resolv.conf) */
    size_t n_servers;
    uint32_t timeout_ms; /* first attempt of a query; c-ares doubles it per round; default 2000 */
    uint32_t attempts;   /* tries per server before a lookup fails; default 3 */
};

struct tr_cluster_cfg {
    const char *name;
    const char *service;  /* destination_service label, e.g. reviews.default.svc.cluster.local */
    const char *workload; /* destination_workload label */
    const char *workload_namespace;
    enum tr_lb_policy lb;
    struct tr_endpoint_cfg *endpoints;
    size_t n_endpoints;
    /* Envoy's ORIGINAL_DST (Istio's PASSTHROUGH, resolution NONE): no
     * endpoints listed; each connection (and each request on it) goes to
     * the original destination of the downstream connection, which a
     * capture listener recovered. */
    bool original_destination;
    uint32_t connect_timeout_ms;   /* default 1000 */
    uint32_t pool_idle_timeout_ms; /* default 50000; keep below the upstream's */
    uint32_t pool_max_idle;        /* idle connections kept per endpoint per worker; default 64 */
    uint32_t max_connections;      /* per endpoint per worker; 0 = unlimited */
    const char *tls_name;          /* originate mTLS with this context; NULL: plaintext */
    int tls;                       /* set by validate: index into tr_config.tls, -1 = plaintext */
    const char **server_ids;       /* SPIFFE IDs the upstream may present; 0: any in trust domain */
    size_t n_server_ids;
    const char *sni; /* SNI to send; NULL: none */
    /* A client context (not mesh): names the server certificate must carry as
     * DNS or URI SANs (0: the sni), or no verification at all. */
    const char **subject_alt_names;
    size_t n_subject_alt_names;
    bool insecure_skip_verify;
    bool mesh_tls; /* set by validate: tls is a mesh context (a trellis peer) */
    enum tr_upstream_protocol protocol;
    uint32_t h2_max_streams; /* HTTP/2: streams per connection before another opens; 0 before
                              * validate: default 100; another value with protocol http1 is
                              * an error (it would be ignored) */
    struct tr_dns_cfg dns;   /* for endpoints given by name */
    size_t n_dns_endpoints;  /* set by validate: endpoints with a host name */
    /* Outlier detection, consistent hashing, pool limits (above). */
    struct tr_outlier_cfg outlier;
    struct tr_hash_policy_cfg hash; /* lb ring_hash and maglev only */
    struct tr_circuit_breakers_cfg breakers;
    uint32_t max_requests_per_connection;       /* pool: then the connection closes; 0: no limit */
    uint32_t max_connection_duration_ms;        /* pool: no new request on a connection this old; 0:
                                           * no limit */
    struct tr_tcp_keepalive_cfg *tcp_keepalive; /* NULL: off */
    struct tr_retry_budget_cfg *retry_budget;   /* NULL: each route's */
    struct tr_warmup_cfg warmup;                /* round_robin and least_request only */
    struct tr_locality_weight_cfg *locality_weights; /* 0: localities are not weighted */
    size_t n_locality_weights;
    struct tr_cfg_loc loc;
};

struct tr_node_cfg {
    const char *id;       /* proxy instance id (for logs) */
    const char *workload; /* this workload's name (source/destination_workload) */
    const char *workload_namespace;
    const char *service;   /* inbound destination_service label */
    const char *principal; /* this workload's SPIFFE ID, for metrics labels */
};

struct tr_limits_cfg {
    uint32_t max_request_line; /* default 8192 */
    uint32_t max_header_bytes; /* default 65536 */
    uint32_t max_headers;      /* default 100 */
    uint32_t max_connections;  /* per worker; default 65536 */
    uint32_t buffer_size;      /* per direction per connection; default 16384 */
    /* HTTP/2 (downstream connections; upstream ones use the same windows) */
    uint32_t h2_max_concurrent_streams; /* default 100 */
    uint32_t h2_initial_window;         /* per stream; default 65535 */
    uint32_t h2_connection_window;      /* default 1 MiB */
    uint32_t h2_max_resets_per_second;  /* rapid-reset budget; default 200 */
};

/* Longest Unix socket path: sizeof(sun_path) - 1 on Linux (admin.c checks). */
#define TR_UNIX_PATH_MAX 107

struct tr_admin_cfg {
    struct tr_cfg_addr addr; /* must be loopback; default 127.0.0.1:15000 */
    bool enabled;            /* default true */
    /* Unix socket (mode 0600) for the calls that change state or show the
     * configuration (/logging, /config_dump); NULL: those calls are off.
     * Relative paths are resolved against the config file's directory; at
     * most TR_UNIX_PATH_MAX bytes. */
    const char *socket;
};

struct tr_access_log_cfg {
    bool enabled;     /* default false */
    const char *path; /* "/dev/stdout" or a file; default /dev/stdout */
};

/* An HTTP external authorizer (Istio's envoyExtAuthzHttp extension
 * provider): a request that a CUSTOM policy's rules match is first sent as a
 * check (same method, path_prefix + the normalised path, the headers below,
 * no body) to cluster (HTTP/1.1); 2xx: the request goes on (DENY and ALLOW
 * policies next) with the headers_to_upstream_on_allow fields of the check's
 * response, its response with headers_to_downstream_on_allow; another status:
 * the client gets that status, the check's body (up to
 * TR_EXT_AUTHZ_MAX_BODY) and the headers_to_downstream_on_deny fields (all
 * but Host when the list is empty); a failure or timeout (or a 5xx with
 * fail_open): fail_open ? on : status_on_error. Header name lists are
 * Istio's patterns: "name", "prefix*", "*suffix", "*"; lowercase. */
#define TR_EXT_AUTHZ_MAX_BODY (8u * 1024u)
struct tr_ext_authz_cfg {
    const char *name;
    const char *cluster_name;
    int cluster;                /* set by validate: index into tr_config.clusters */
    uint32_t timeout_ms;        /* default 600 s (Istio's) */
    const char *path_prefix;    /* NULL: none */
    bool fail_open;             /* default false */
    uint32_t status_on_error;   /* default 403 */
    const char **check_headers; /* client request fields sent in the check, besides Host,
                                 * Method, Path, Content-Length (Istio's defaults) */
    size_t n_check_headers;
    struct tr_name_value_cfg *check_add; /* fixed fields added to the check */
    size_t n_check_add;
    const char **upstream_on_allow; /* check response fields set on the request */
    size_t n_upstream_on_allow;
    const char **downstream_on_allow; /* check response fields set on the response */
    size_t n_downstream_on_allow;
    const char **downstream_on_deny; /* check response fields sent with a denial; 0: all */
    size_t n_downstream_on_deny;
    struct tr_cfg_loc loc;
};

struct tr_config {
    const char *file; /* path the config was loaded from */
    struct tr_node_cfg node;
    uint32_t workers;          /* 0: one per core */
    uint32_t drain_timeout_ms; /* SIGTERM drain deadline; default 10000 */
    struct tr_limits_cfg limits;
    struct tr_admin_cfg admin;
    struct tr_access_log_cfg access_log;
    const char *log_level; /* "error", "warn", "info", "debug"; default "info" */
    struct tr_resolver_cfg resolver;
    /* SO_MARK of every upstream and DNS socket (0: none), so that capture rules can
     * leave the proxy's own connections alone (Istio uses 1337). Setting it
     * needs CAP_NET_ADMIN; the snapshot build checks it can. */
    uint32_t upstream_mark;

    struct tr_tls_cfg *tls;
    size_t n_tls;
    struct tr_listener_cfg *listeners;
    size_t n_listeners;
    struct tr_route_table_cfg *route_tables;
    size_t n_route_tables;
    struct tr_cluster_cfg *clusters;
    size_t n_clusters;
    struct tr_ext_authz_cfg *ext_authz; /* external authorizers (CUSTOM policies) */
    size_t n_ext_authz;
    size_t n_cors; /* set by validate: routes with a CORS policy (tr_cors_cfg.index) */

    struct tr_arena *arena; /* owns every byte above */
};

#endif
