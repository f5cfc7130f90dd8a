/* config/schema.c: the configuration format as tables, and one walker.
 *
 * Each section (a YAML mapping) is a table of fields: key, kind, where the
 * value lives in the model object, range or length, default, required,
 * syntax check. cfg_schema_walk() applies a table to a mapping: unknown and
 * duplicate keys, missing required fields, types, ranges and nested sections
 * and lists are handled here once for every section. What a table cannot say
 * (one of several keys, a default that depends on another field) is the
 * section's after() hook in sections.c; invariants between objects are in
 * validate.c, which checks built models with these same tables.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/prov_ssl.h>

#include "config/internal.h"
#include "core/arena.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define SEC(nm, tab, loc, after_fn)                                                                \
    {                                                                                              \
        .name = nm, .fields = tab, .n_fields = N_OF(tab), .loc_off = loc, .after = after_fn        \
    }

#define STR(k, T, m, fl, mx, chk)                                                                  \
    {                                                                                              \
        .key = k, .kind = CK_STR, .flags = (fl), .off = offsetof(T, m), .max = (mx),               \
        .check = (chk)                                                                             \
    }
#define STR_DEF(k, T, m, mx, d)                                                                    \
    {                                                                                              \
        .key = k, .kind = CK_STR, .flags = CF_DEF, .off = offsetof(T, m), .max = (mx),             \
        .def_str = d                                                                               \
    }
#define NAME(k, T, m, fl)                                                                          \
    {                                                                                              \
        .key = k, .kind = CK_NAME, .flags = (fl), .off = offsetof(T, m)                            \
    }
#define FILE_(k, T, m, fl, d)                                                                      \
    {                                                                                              \
        .key = k, .kind = CK_FILE, .flags = (fl), .off = offsetof(T, m), .max = CFG_MAX_STR,       \
        .def_str = d                                                                               \
    }
#define BOOL(k, T, m, d)                                                                           \
    {                                                                                              \
        .key = k, .kind = CK_BOOL, .flags = CF_DEF, .off = offsetof(T, m), .def = (d)              \
    }
#define NUM(kd, k, T, m, fl, lo, hi, d)                                                            \
    {                                                                                              \
        .key = k, .kind = kd, .flags = (fl), .off = offsetof(T, m), .min = (lo), .max = (hi),      \
        .def = (d)                                                                                 \
    }
#define U32(k, T, m, fl, lo, hi, d) NUM(CK_U32, k, T, m, fl, lo, hi, d)
#define DUR(k, T, m, fl, lo, hi, d) NUM(CK_DURATION, k, T, m, fl, lo, hi, d)
#define ENUM(k, T, m, fl, nm, vals, d)                                                             \
    {                                                                                              \
        .key = k, .kind = CK_ENUM, .flags = (fl), .off = offsetof(T, m), .names = nm,              \
        .values = vals, .n_names = N_OF(nm), .def = (d)                                            \
    }
#define ADDR(k, T, m, fl, d)                                                                       \
    {                                                                                              \
        .key = k, .kind = CK_ADDR, .flags = (fl), .off = offsetof(T, m), .def_str = d              \
    }
#define STRLIST(k, T, m, nm, fl, lo, hi, len, chk)                                                 \
    {                                                                                              \
        .key = k, .kind = CK_STRLIST, .flags = (fl), .off = offsetof(T, m),                        \
        .off_n = offsetof(T, nm), .min = (lo), .max = (hi), .maxlen = (len), .check = (chk)        \
    }
#define MAP(k, T, m, nm, fl, hi, len, chk, vchk)                                                   \
    {                                                                                              \
        .key = k, .kind = CK_MAP, .flags = (fl), .off = offsetof(T, m), .off_n = offsetof(T, nm),  \
        .max = (hi), .maxlen = (len), .check = (chk), .value_check = (vchk)                        \
    }
#define SECTION(k, off_, s)                                                                        \
    {                                                                                              \
        .key = k, .kind = CK_SECTION, .off = (off_), .sub = &(s)                                   \
    }
#define LIST(k, T, m, nm, fl, lo, hi, IT, s)                                                       \
    {                                                                                              \
        .key = k, .kind = CK_LIST, .flags = (fl), .off = offsetof(T, m), .off_n = offsetof(T, nm), \
        .min = (lo), .max = (hi), .sub = &(s), .item_size = sizeof(IT)                             \
    }
#define CUSTOM(k, fl, fn)                                                                          \
    {                                                                                              \
        .key = k, .kind = CK_CUSTOM, .flags = (fl), .set = (fn)                                    \
    }

/* The source of a compiled object, read into its tr_cfg_loc (last in each
 * table that has one, so it is read after the object's fields). */
#define ORIGIN(T) SECTION("origin", offsetof(T, loc), cfg_origin_section)

/* Local route actions' kinds. */
#define OPTIONAL(k, T, m, IT, s)                                                                   \
    {                                                                                              \
        .key = k, .kind = CK_OPTIONAL, .off = offsetof(T, m), .sub = &(s), .item_size = sizeof(IT) \
    }
#define PERCENT(k, T, m, fl)                                                                       \
    {                                                                                              \
        .key = k, .kind = CK_PERCENT, .flags = (fl), .off = offsetof(T, m), .max = TR_PER_MILLION  \
    }

#define REQ   CF_REQ
#define DEF   CF_DEF
#define MAXMS CFG_MAX_DURATION_MS

/* ----------------------------------------------------------- the tables */

/* Where a compiled object came from: the resource and the field path in it
 * (model.h, struct tr_cfg_loc). With it, errors about the object name the
 * resource: "FILE:LINE:COL: VirtualService default/reviews: spec.http[0]:
 * ...". A compiler writes it (config/write.h); people need not. */
static const struct cfg_field origin_fields[] = {
    NAME("kind", struct tr_cfg_loc, origin.kind, 0),
    NAME("namespace", struct tr_cfg_loc, origin.ns, 0),
    NAME("name", struct tr_cfg_loc, origin.name, 0),
    STR("path", struct tr_cfg_loc, path, 0, CFG_MAX_STR, NULL),
};
const struct cfg_section cfg_origin_section =
    SEC("origin", origin_fields, CFG_NO_LOC, cfg_origin_after);

static const struct cfg_field node_fields[] = {
    STR("id", struct tr_node_cfg, id, 0, CFG_MAX_NAME, NULL),
    STR("workload", struct tr_node_cfg, workload, 0, CFG_MAX_NAME, NULL),
    STR("namespace", struct tr_node_cfg, workload_namespace, 0, CFG_MAX_NAME, NULL),
    STR("service", struct tr_node_cfg, service, 0, CFG_MAX_NAME, NULL),
    STR("principal", struct tr_node_cfg, principal, 0, CFG_MAX_STR, cfg_check_spiffe),
};
static const struct cfg_section node_section = SEC("node", node_fields, CFG_NO_LOC, NULL);

static const struct cfg_field limits_h2_fields[] = {
    U32("max_concurrent_streams", struct tr_limits_cfg, h2_max_concurrent_streams, DEF, 1, 10000,
        100),
    U32("initial_window_size", struct tr_limits_cfg, h2_initial_window, DEF, 1024, 16777215, 65535),
    U32("connection_window_size", struct tr_limits_cfg, h2_connection_window, DEF, 65535, 1u << 30,
        1u << 20),
    U32("max_resets_per_second", struct tr_limits_cfg, h2_max_resets_per_second, DEF, 1, 1000000,
        200),
};
static const struct cfg_section limits_h2_section =
    SEC("limits.http2", limits_h2_fields, CFG_NO_LOC, NULL);

static const struct cfg_field limits_fields[] = {
    U32("max_request_line", struct tr_limits_cfg, max_request_line, DEF, 64, 1048576, 8192),
    U32("max_header_bytes", struct tr_limits_cfg, max_header_bytes, DEF, 1024, 1048576, 65536),
    U32("max_headers", struct tr_limits_cfg, max_headers, DEF, 1, CFG_H1_HEADERS_CAP, 100),
    U32("max_connections", struct tr_limits_cfg, max_connections, DEF, 1, 16777216, 65536),
    U32("buffer_size", struct tr_limits_cfg, buffer_size, DEF, 4096, 1048576, 16384),
    SECTION("http2", 0, limits_h2_section),
};
static const struct cfg_section limits_section = SEC("limits", limits_fields, CFG_NO_LOC, NULL);

static const struct cfg_field admin_fields[] = {
    ADDR("address", struct tr_admin_cfg, addr, CF_PORT0 | DEF, "127.0.0.1:15000"),
    BOOL("enabled", struct tr_admin_cfg, enabled, true),
    /* Not read at load: the proxy creates it. Its length is checked by
     * validate on the resolved path, which is what bind() gets. */
    FILE_("socket", struct tr_admin_cfg, socket, 0, NULL),
};
static const struct cfg_section admin_section = SEC("admin", admin_fields, CFG_NO_LOC, NULL);

static const struct cfg_field access_log_fields[] = {
    BOOL("enabled", struct tr_access_log_cfg, enabled, false),
    FILE_("path", struct tr_access_log_cfg, path, DEF, "/dev/stdout"),
};
static const struct cfg_section access_log_section =
    SEC("access_log", access_log_fields, CFG_NO_LOC, NULL);

static const char *const tls_versions[] = {"1.2", "1.3"};
static const int tls_version_values[] = {TLS1_2_VERSION, TLS1_3_VERSION};
static const char *const tls_kinds[] = {"mesh", "server", "client"};
/* Which of cert, key and ca a kind needs is validate.c's (check_tls): each
 * may come from a file or inline PEM. */
static const struct cfg_field tls_fields[] = {
    NAME("name", struct tr_tls_cfg, name, REQ),
    ENUM("type", struct tr_tls_cfg, kind, DEF, tls_kinds, NULL, TR_TLSK_MESH),
    FILE_("cert", struct tr_tls_cfg, cert_file, CF_READ, NULL),
    FILE_("key", struct tr_tls_cfg, key_file, CF_READ, NULL),
    FILE_("ca", struct tr_tls_cfg, ca_file, CF_READ, NULL),
    STR("cert_pem", struct tr_tls_cfg, cert_pem, CF_EMPTY_OK | CF_CTL_OK, CFG_MAX_PEM,
        cfg_check_pem),
    STR("key_pem", struct tr_tls_cfg, key_pem, CF_EMPTY_OK | CF_CTL_OK, CFG_MAX_PEM, cfg_check_pem),
    STR("ca_pem", struct tr_tls_cfg, ca_pem, CF_EMPTY_OK | CF_CTL_OK, CFG_MAX_PEM, cfg_check_pem),
    STRLIST("server_names", struct tr_tls_cfg, server_names, n_server_names, 0, 0,
            CFG_MAX_SERVER_NAMES, 255, cfg_check_server_name),
    STR("trust_domain", struct tr_tls_cfg, trust_domain, 0, CFG_MAX_NAME, cfg_check_trust_domain),
    ENUM("min_version", struct tr_tls_cfg, min_version, CF_U16 | DEF, tls_versions,
         tls_version_values, 1),
    BOOL("session_resumption", struct tr_tls_cfg, session_resumption, true),
    BOOL("from_control_plane", struct tr_tls_cfg, from_control_plane, false),
    ORIGIN(struct tr_tls_cfg),
};
const struct cfg_section cfg_tls_section =
    SEC("tls", tls_fields, offsetof(struct tr_tls_cfg, loc), NULL);

/* Listed in the order people think of them, not enum order. */
static const char *const tls_modes[] = {"STRICT", "PERMISSIVE", "DISABLE", "TERMINATE"};
static const int tls_mode_values[] = {TR_TLS_STRICT, TR_TLS_PERMISSIVE, TR_TLS_DISABLE,
                                      TR_TLS_TERMINATE};
static const struct cfg_field listener_tls_fields[] = {
    ENUM("mode", struct tr_listener_cfg, tls_mode, REQ | DEF, tls_modes, tls_mode_values, 2),
    NAME("context", struct tr_listener_cfg, tls_name, 0),
    STRLIST("contexts", struct tr_listener_cfg, tls_contexts, n_tls_contexts, 0, 0,
            CFG_MAX_SNI_CONTEXTS, CFG_MAX_NAME, cfg_check_name),
};
static const struct cfg_section listener_tls_section =
    SEC("listener.tls", listener_tls_fields, CFG_NO_LOC, NULL);

static const char *const xff_modes[] = {"append", "off"};
static const char *const reqid_modes[] = {"preserve", "always", "off"};
/* In enum tr_path_normalization order. */
static const char *const pathnorm_modes[] = {"STRICT", "NONE", "BASE", "MERGE_SLASHES",
                                             "DECODE_AND_MERGE_SLASHES"};
static const struct cfg_field listener_http_fields[] = {
    ENUM("xff", struct tr_listener_cfg, xff, DEF, xff_modes, NULL, TR_XFF_APPEND),
    BOOL("xfp", struct tr_listener_cfg, xfp, true),
    ENUM("request_id", struct tr_listener_cfg, request_id, DEF, reqid_modes, NULL,
         TR_REQID_PRESERVE),
    ENUM("path_normalization", struct tr_listener_cfg, path_normalization, DEF, pathnorm_modes,
         NULL, TR_PATHNORM_STRICT),
};
static const struct cfg_section listener_http_section =
    SEC("listener.http", listener_http_fields, CFG_NO_LOC, NULL);

static const struct cfg_field listener_timeouts_fields[] = {
    DUR("detect", struct tr_listener_cfg, detect_timeout_ms, DEF, 1, 60000, 100),
    DUR("idle", struct tr_listener_cfg, idle_timeout_ms, DEF, 1, MAXMS, 300000),
    DUR("request", struct tr_listener_cfg, request_timeout_ms, DEF, 1, MAXMS, 10000),
};
static const struct cfg_section listener_timeouts_section =
    SEC("listener.timeouts", listener_timeouts_fields, CFG_NO_LOC, NULL);

static const char *const authz_actions[] = {"ALLOW", "DENY"};
static const struct cfg_field rule_fields[] = {
    ENUM("action", struct tr_authz_rule_cfg, action, REQ, authz_actions, NULL, 0),
    STRLIST("principals", struct tr_authz_rule_cfg, principals, n_principals, 0, 0, CFG_MAX_LIST,
            CFG_MAX_STR, cfg_check_principal),
    STRLIST("methods", struct tr_authz_rule_cfg, methods, n_methods, 0, 0, CFG_MAX_METHODS, 64,
            cfg_check_token),
    STRLIST("paths", struct tr_authz_rule_cfg, paths, n_paths, 0, 0, CFG_MAX_LIST, CFG_MAX_STR,
            cfg_check_authz_path),
    ORIGIN(struct tr_authz_rule_cfg),
};
static const struct cfg_section rule_section =
    SEC("authorization rule", rule_fields, offsetof(struct tr_authz_rule_cfg, loc), NULL);

/* ---- authorization policies (Istio's AuthorizationPolicy as a model) */
#define AZ_LIST(k, T, m, chk)                                                                      \
    STRLIST(k, T, m, n_##m, 0, 0, CFG_MAX_LIST, CFG_MAX_STR, chk),                                 \
        STRLIST("not_" k, T, not_##m, n_not_##m, 0, 0, CFG_MAX_LIST, CFG_MAX_STR, chk)
static const struct cfg_field az_source_fields[] = {
    AZ_LIST("principals", struct tr_authz_source_cfg, principals, cfg_check_az_pattern),
    AZ_LIST("request_principals", struct tr_authz_source_cfg, request_principals,
            cfg_check_az_pattern),
    AZ_LIST("namespaces", struct tr_authz_source_cfg, namespaces, cfg_check_az_pattern),
    AZ_LIST("ip_blocks", struct tr_authz_source_cfg, ip_blocks, cfg_check_cidr),
    AZ_LIST("remote_ip_blocks", struct tr_authz_source_cfg, remote_ip_blocks, cfg_check_cidr),
    ORIGIN(struct tr_authz_source_cfg),
};
static const struct cfg_section az_source_section =
    SEC("authorization source", az_source_fields, offsetof(struct tr_authz_source_cfg, loc), NULL);

static const struct cfg_field az_operation_fields[] = {
    AZ_LIST("hosts", struct tr_authz_operation_cfg, hosts, cfg_check_az_pattern),
    AZ_LIST("ports", struct tr_authz_operation_cfg, ports, cfg_check_az_port),
    AZ_LIST("methods", struct tr_authz_operation_cfg, methods, cfg_check_az_pattern),
    AZ_LIST("paths", struct tr_authz_operation_cfg, paths, cfg_check_az_path),
    ORIGIN(struct tr_authz_operation_cfg),
};
static const struct cfg_section az_operation_section =
    SEC("authorization operation", az_operation_fields,
        offsetof(struct tr_authz_operation_cfg, loc), NULL);

/* Values are checked against the key by validate.c (check_authz_condition). */
static const struct cfg_field az_condition_fields[] = {
    STR("key", struct tr_authz_condition_cfg, key, REQ, CFG_MAX_STR, cfg_check_az_key),
    AZ_LIST("values", struct tr_authz_condition_cfg, values, NULL),
    ORIGIN(struct tr_authz_condition_cfg),
};
static const struct cfg_section az_condition_section =
    SEC("authorization condition", az_condition_fields,
        offsetof(struct tr_authz_condition_cfg, loc), NULL);

static const struct cfg_field az_policy_rule_fields[] = {
    LIST("from", struct tr_authz_policy_rule_cfg, from, n_from, 0, 0, CFG_MAX_LIST,
         struct tr_authz_source_cfg, az_source_section),
    LIST("to", struct tr_authz_policy_rule_cfg, to, n_to, 0, 0, CFG_MAX_LIST,
         struct tr_authz_operation_cfg, az_operation_section),
    LIST("when", struct tr_authz_policy_rule_cfg, when, n_when, 0, 0, CFG_MAX_LIST,
         struct tr_authz_condition_cfg, az_condition_section),
    ORIGIN(struct tr_authz_policy_rule_cfg),
};
static const struct cfg_section az_policy_rule_section =
    SEC("authorization policy rule", az_policy_rule_fields,
        offsetof(struct tr_authz_policy_rule_cfg, loc), NULL);

static const char *const az_policy_actions[] = {"ALLOW", "DENY", "AUDIT", "CUSTOM"};
static const struct cfg_field az_policy_fields[] = {
    STR("name", struct tr_authz_policy_cfg, name, REQ, CFG_MAX_NAME, cfg_check_az_policy_name),
    ENUM("action", struct tr_authz_policy_cfg, action, DEF, az_policy_actions, NULL,
         TR_AUTHZ_ALLOW),
    /* CUSTOM's authorizer (validate.c: check_authz_policies). */
    NAME("provider", struct tr_authz_policy_cfg, provider_name, 0),
    LIST("rules", struct tr_authz_policy_cfg, rules, n_rules, 0, 0, CFG_MAX_RULES,
         struct tr_authz_policy_rule_cfg, az_policy_rule_section),
    ORIGIN(struct tr_authz_policy_cfg),
};
static const struct cfg_section az_policy_section =
    SEC("authorization policy", az_policy_fields, offsetof(struct tr_authz_policy_cfg, loc), NULL);

static const struct cfg_field authz_fields[] = {
    LIST("rules", struct tr_authz_cfg, rules, n_rules, 0, 0, CFG_MAX_RULES,
         struct tr_authz_rule_cfg, rule_section),
    LIST("policies", struct tr_authz_cfg, policies, n_policies, 0, 0, CFG_MAX_RULES,
         struct tr_authz_policy_cfg, az_policy_section),
};
static const struct cfg_section authz_section =
    SEC("authorization", authz_fields, CFG_NO_LOC, NULL);

/* ---- request authentication (JWT): model.h, struct tr_request_authn_cfg;
 * the keys are checked here (cfg_check_jwks), built again per snapshot. */
static const struct cfg_field jwt_header_fields[] = {
    STR("name", struct tr_jwt_header_cfg, name, REQ | CF_LOWER, CFG_MAX_NAME,
        cfg_check_header_edit_name),
    STR("prefix", struct tr_jwt_header_cfg, prefix, 0, CFG_MAX_NAME, NULL),
    ORIGIN(struct tr_jwt_header_cfg),
};
static const struct cfg_section jwt_header_section =
    SEC("token header", jwt_header_fields, offsetof(struct tr_jwt_header_cfg, loc), NULL);

static const struct cfg_field jwt_claim_header_fields[] = {
    STR("header", struct tr_jwt_claim_header_cfg, header, REQ | CF_LOWER, CFG_MAX_NAME,
        cfg_check_header_edit_name),
    STR("claim", struct tr_jwt_claim_header_cfg, claim, REQ, CFG_MAX_NAME, NULL),
    ORIGIN(struct tr_jwt_claim_header_cfg),
};
static const struct cfg_section jwt_claim_header_section = SEC(
    "claim header", jwt_claim_header_fields, offsetof(struct tr_jwt_claim_header_cfg, loc), NULL);

/* One of jwks and jwks_uri at least (validate.c: check_jwt_rules). */
static const struct cfg_field jwks_uri_fields[] = {
    STR("url", struct tr_jwks_uri_cfg, url, REQ, CFG_MAX_STR, cfg_check_jwks_url),
    NAME("cluster", struct tr_jwks_uri_cfg, cluster_name, REQ),
    DUR("refresh", struct tr_jwks_uri_cfg, refresh_ms, DEF, 1000, MAXMS, 20u * 60u * 1000u),
    DUR("timeout", struct tr_jwks_uri_cfg, timeout_ms, DEF, 1, 60000, 5000),
};
static const struct cfg_section jwks_uri_section =
    SEC("jwks_uri", jwks_uri_fields, CFG_NO_LOC, NULL);

static const struct cfg_field jwt_rule_fields[] = {
    STR("issuer", struct tr_jwt_rule_cfg, issuer, REQ, CFG_MAX_STR, NULL),
    STRLIST("audiences", struct tr_jwt_rule_cfg, audiences, n_audiences, 0, 0, CFG_MAX_LIST,
            CFG_MAX_STR, NULL),
    STR("jwks", struct tr_jwt_rule_cfg, jwks, CF_EMPTY_OK | CF_CTL_OK, CFG_MAX_JWKS,
        cfg_check_jwks),
    OPTIONAL("jwks_uri", struct tr_jwt_rule_cfg, jwks_uri, struct tr_jwks_uri_cfg,
             jwks_uri_section),
    LIST("from_headers", struct tr_jwt_rule_cfg, from_headers, n_from_headers, 0, 0,
         CFG_MAX_JWT_LOCATIONS, struct tr_jwt_header_cfg, jwt_header_section),
    STRLIST("from_params", struct tr_jwt_rule_cfg, from_params, n_from_params, 0, 0,
            CFG_MAX_JWT_LOCATIONS, CFG_MAX_NAME, cfg_check_query_name),
    STRLIST("from_cookies", struct tr_jwt_rule_cfg, from_cookies, n_from_cookies, 0, 0,
            CFG_MAX_JWT_LOCATIONS, CFG_MAX_NAME, cfg_check_token),
    BOOL("forward_original_token", struct tr_jwt_rule_cfg, forward_original_token, false),
    STR("output_payload_to_header", struct tr_jwt_rule_cfg, output_payload_to_header, CF_LOWER,
        CFG_MAX_NAME, cfg_check_header_edit_name),
    LIST("output_claim_to_headers", struct tr_jwt_rule_cfg, output_claim_to_headers,
         n_output_claim_to_headers, 0, 0, CFG_MAX_JWT_CLAIM_HEADERS, struct tr_jwt_claim_header_cfg,
         jwt_claim_header_section),
    ORIGIN(struct tr_jwt_rule_cfg),
};
static const struct cfg_section jwt_rule_section =
    SEC("jwt rule", jwt_rule_fields, offsetof(struct tr_jwt_rule_cfg, loc), NULL);

static const struct cfg_field request_authn_fields[] = {
    LIST("rules", struct tr_request_authn_cfg, rules, n_rules, REQ, 0, CFG_MAX_JWT_RULES,
         struct tr_jwt_rule_cfg, jwt_rule_section),
};
static const struct cfg_section request_authn_section =
    SEC("request_authentication", request_authn_fields, CFG_NO_LOC, NULL);

/* ---- weighted TCP routes: a listener's tcp_clusters entry is a cluster and
 * its weight, the routes' weighted cluster without the header edits. */
static const struct cfg_field tcp_weighted_fields[] = {
    NAME("cluster", struct tr_weighted_cluster_cfg, cluster_name, REQ),
    U32("weight", struct tr_weighted_cluster_cfg, weight, REQ, 0, CFG_MAX_WEIGHT, 0),
    ORIGIN(struct tr_weighted_cluster_cfg),
};
const struct cfg_section cfg_tcp_weighted_section =
    SEC("tcp weighted cluster", tcp_weighted_fields, offsetof(struct tr_weighted_cluster_cfg, loc),
        NULL);

/* ---- TLS passthrough by SNI (model.h, tr_sni_route_cfg): a rule is its
 * names and a TCP destination, the listener's tcp_cluster / tcp_clusters. */
static const struct cfg_field sni_route_fields[] = {
    STRLIST("server_names", struct tr_sni_route_cfg, server_names, n_server_names, REQ, 1,
            CFG_MAX_SERVER_NAMES, 255, cfg_check_server_name),
    NAME("tcp_cluster", struct tr_sni_route_cfg, tcp_cluster_name, 0),
    LIST("tcp_clusters", struct tr_sni_route_cfg, tcp_clusters, n_tcp_clusters, 0, 1,
         CFG_MAX_WEIGHTED, struct tr_weighted_cluster_cfg, cfg_tcp_weighted_section),
    ORIGIN(struct tr_sni_route_cfg),
};
const struct cfg_section cfg_sni_route_section =
    SEC("listener.sni_routes", sni_route_fields, offsetof(struct tr_sni_route_cfg, loc),
        cfg_sni_route_after);

/* A capture listener (model.h, tr_original_dst_cfg): `original_destination:
 * {}` takes every default. */
static const char *const capture_unmatched[] = {"passthrough", "reject"};
static const struct cfg_field original_dst_fields[] = {
    ENUM("unmatched", struct tr_original_dst_cfg, unmatched, DEF, capture_unmatched, NULL,
         TR_CAPTURE_PASSTHROUGH),
    DUR("connect_timeout", struct tr_original_dst_cfg, connect_timeout_ms, DEF, 1, MAXMS, 1000),
};
const struct cfg_section cfg_original_dst_section =
    SEC("listener.original_destination", original_dst_fields, CFG_NO_LOC, NULL);

static const char *const directions[] = {"inbound", "outbound"};
static const char *const listener_protocols[] = {"http", "tcp", "auto"};
static const struct cfg_field listener_fields[] = {
    NAME("name", struct tr_listener_cfg, name, REQ),
    ADDR("address", struct tr_listener_cfg, addr, REQ | CF_PORT0, NULL),
    ENUM("direction", struct tr_listener_cfg, direction, DEF, directions, NULL, TR_DIR_INBOUND),
    ENUM("protocol", struct tr_listener_cfg, protocol, DEF, listener_protocols, NULL,
         TR_LPROTO_HTTP),
    SECTION("tls", 0, listener_tls_section),
    NAME("route_table", struct tr_listener_cfg, route_table_name, 0),
    NAME("tcp_cluster", struct tr_listener_cfg, tcp_cluster_name, 0),
    LIST("tcp_clusters", struct tr_listener_cfg, tcp_clusters, n_tcp_clusters, 0, 1,
         CFG_MAX_WEIGHTED, struct tr_weighted_cluster_cfg, cfg_tcp_weighted_section),
    SECTION("http", 0, listener_http_section),
    SECTION("timeouts", 0, listener_timeouts_section),
    SECTION("authorization", offsetof(struct tr_listener_cfg, authz), authz_section),
    SECTION("request_authentication", offsetof(struct tr_listener_cfg, request_authn),
            request_authn_section),
    BOOL("bind", struct tr_listener_cfg, bind, true),
    OPTIONAL("original_destination", struct tr_listener_cfg, original_destination,
             struct tr_original_dst_cfg, cfg_original_dst_section),
    STRLIST("destination_prefixes", struct tr_listener_cfg, destination_prefixes,
            n_destination_prefixes, 0, 1, CFG_MAX_DEST_PREFIXES, 64, cfg_check_cidr),
    LIST("sni_routes", struct tr_listener_cfg, sni_routes, n_sni_routes, 0, 1, CFG_MAX_SNI_ROUTES,
         struct tr_sni_route_cfg, cfg_sni_route_section),
    ORIGIN(struct tr_listener_cfg),
};
const struct cfg_section cfg_listener_section =
    SEC("listener", listener_fields, offsetof(struct tr_listener_cfg, loc), cfg_listener_after);

/* The value rows fill one model field: validate checks it once, by the
 * first row, and per kind in check_match() (validate.c). */
static const struct cfg_field header_fields[] = {
    STR("name", struct tr_header_match_cfg, name, REQ | CF_LOWER, CFG_MAX_NAME,
        cfg_check_header_match_name),
    /* An empty exact value is legitimate ("header present and empty"). */
    STR("exact", struct tr_header_match_cfg, value, CF_EMPTY_OK, CFG_MAX_STR, NULL),
    STR("prefix", struct tr_header_match_cfg, value, 0, CFG_MAX_STR, NULL),
    STR("suffix", struct tr_header_match_cfg, value, 0, CFG_MAX_STR, NULL),
    STR("regex", struct tr_header_match_cfg, value, 0, CFG_MAX_STR, NULL),
    CUSTOM("present", 0, cfg_header_present_set),
    {.key = "invert", .kind = CK_BOOL, .off = offsetof(struct tr_header_match_cfg, invert)},
    ORIGIN(struct tr_header_match_cfg),
};
const struct cfg_section cfg_header_match_section =
    SEC("header match", header_fields, offsetof(struct tr_header_match_cfg, loc),
        cfg_header_match_after);

/* Values as for header matches: one model field, checked per kind by
 * validate.c. */
static const struct cfg_field query_fields[] = {
    STR("name", struct tr_query_match_cfg, name, REQ, CFG_MAX_NAME, cfg_check_query_name),
    STR("exact", struct tr_query_match_cfg, value, CF_EMPTY_OK, CFG_MAX_STR, NULL),
    STR("prefix", struct tr_query_match_cfg, value, 0, CFG_MAX_STR, NULL),
    STR("regex", struct tr_query_match_cfg, value, 0, CFG_MAX_STR, NULL),
    CUSTOM("present", 0, cfg_query_present_set),
    ORIGIN(struct tr_query_match_cfg),
};
const struct cfg_section cfg_query_match_section =
    SEC("query parameter match", query_fields, offsetof(struct tr_query_match_cfg, loc),
        cfg_query_match_after);

static const struct cfg_field path_fields[] = {
    STR_DEF("prefix", struct tr_route_cfg, path, CFG_MAX_STR, "/"),
    STR("exact", struct tr_route_cfg, path, 0, CFG_MAX_STR, NULL),
    STR("regex", struct tr_route_cfg, path, 0, CFG_MAX_STR, NULL),
    {.key = "ignore_case", .kind = CK_BOOL, .off = offsetof(struct tr_route_cfg, path_ignore_case)},
};
const struct cfg_section cfg_path_match_section =
    SEC("route.match.path", path_fields, CFG_NO_LOC, cfg_path_match_after);

static const struct cfg_field match_fields[] = {
    SECTION("path", 0, cfg_path_match_section),
    STRLIST("methods", struct tr_route_cfg, methods, n_methods, 0, 1, CFG_MAX_METHODS, 64,
            cfg_check_token),
    LIST("headers", struct tr_route_cfg, headers, n_headers, 0, 0, CFG_MAX_HEADERS,
         struct tr_header_match_cfg, cfg_header_match_section),
    LIST("query_params", struct tr_route_cfg, query, n_query, 0, 0, CFG_MAX_QUERY,
         struct tr_query_match_cfg, cfg_query_match_section),
};
static const struct cfg_section match_section = SEC("route.match", match_fields, CFG_NO_LOC, NULL);

/* Header edits: one table for requests and responses, routes and
 * destinations (each at its own offset). */
static const struct cfg_field header_ops_fields[] = {
    STRLIST("remove", struct tr_header_ops_cfg, remove, n_remove, CF_LOWER, 0, CFG_MAX_HEADER_OPS,
            CFG_MAX_NAME, cfg_check_header_edit_name),
    MAP("set", struct tr_header_ops_cfg, set, n_set, CF_LOWER | CF_EMPTY_OK, CFG_MAX_HEADER_OPS,
        CFG_MAX_HEADER_VALUE, cfg_check_header_edit_name, cfg_check_header_value),
    MAP("add", struct tr_header_ops_cfg, add, n_add, CF_LOWER | CF_EMPTY_OK, CFG_MAX_HEADER_OPS,
        CFG_MAX_HEADER_VALUE, cfg_check_header_edit_name, cfg_check_header_value),
};
static const struct cfg_section header_ops_section =
    SEC("header edits", header_ops_fields, CFG_NO_LOC, NULL);

static const struct cfg_field weighted_fields[] = {
    NAME("cluster", struct tr_weighted_cluster_cfg, cluster_name, REQ),
    U32("weight", struct tr_weighted_cluster_cfg, weight, REQ, 0, CFG_MAX_WEIGHT, 0),
    SECTION("request_headers", offsetof(struct tr_weighted_cluster_cfg, request_headers),
            header_ops_section),
    SECTION("response_headers", offsetof(struct tr_weighted_cluster_cfg, response_headers),
            header_ops_section),
    ORIGIN(struct tr_weighted_cluster_cfg),
};
static const struct cfg_section weighted_section =
    SEC("weighted cluster", weighted_fields, offsetof(struct tr_weighted_cluster_cfg, loc), NULL);

static const struct cfg_field direct_fields[] = {
    NUM(CK_U16, "status", struct tr_route_cfg, direct_status, REQ, 200, 599, 0),
    STR("body", struct tr_route_cfg, direct_body, CF_EMPTY_OK | CF_CTL_OK, CFG_MAX_BODY, NULL),
};
static const struct cfg_section direct_section =
    SEC("route.direct_response", direct_fields, CFG_NO_LOC, NULL);

static const struct cfg_field rewrite_fields[] = {
    STR("prefix", struct tr_route_cfg, prefix_rewrite, 0, CFG_MAX_STR, NULL),
    STR("host", struct tr_route_cfg, host_rewrite, 0, CFG_MAX_NAME, cfg_check_host),
    STR("regex", struct tr_route_cfg, regex_rewrite, 0, CFG_MAX_STR, NULL),
    STR("substitution", struct tr_route_cfg, regex_substitution, CF_EMPTY_OK, CFG_MAX_STR, NULL),
};
static const struct cfg_section rewrite_section =
    SEC("route.rewrite", rewrite_fields, CFG_NO_LOC, NULL);

/* ---- Local route actions: redirect, fault, cors (filter/route_action.h). */

static bool check_scheme(const char *s, char *why, size_t size)
{
    if (strcmp(s, "http") == 0 || strcmp(s, "https") == 0)
        return true;
    char b[96];
    snprintf(why, size, "expected http or https, got %s",
             cfg_show(b, sizeof(b), s, strlen(s), true));
    return false;
}

static const char *const redirect_port_froms[] = {"keep", "protocol_default", "request"};
static const struct cfg_field redirect_fields[] = {
    STR("scheme", struct tr_redirect_cfg, scheme, 0, 5, check_scheme),
    STR("host", struct tr_redirect_cfg, host, 0, CFG_MAX_NAME, cfg_check_uri_host),
    /* port and port_from are one choice (one_of in sections.c). */
    NUM(CK_U16, "port", struct tr_redirect_cfg, port, 0, 1, 65535, 0),
    ENUM("port_from", struct tr_redirect_cfg, port_from, DEF, redirect_port_froms, NULL,
         TR_REDIRECT_PORT_KEEP),
    /* path and prefix too. */
    STR("path", struct tr_redirect_cfg, path, 0, CFG_MAX_STR, cfg_check_uri_path),
    STR("prefix", struct tr_redirect_cfg, prefix, 0, CFG_MAX_STR, cfg_check_uri_path),
    /* 301, 302, 303, 307, 308: validate refuses the others in the range. */
    NUM(CK_U16, "code", struct tr_redirect_cfg, code, DEF, 301, 308, 301),
};
const struct cfg_section cfg_redirect_section =
    SEC("route.redirect", redirect_fields, CFG_NO_LOC, cfg_redirect_after);

static const struct cfg_field fault_delay_fields[] = {
    DUR("fixed", struct tr_fault_delay_cfg, fixed_ms, REQ, 1, MAXMS, 0),
    PERCENT("percent", struct tr_fault_delay_cfg, per_million, REQ),
};
const struct cfg_section cfg_fault_delay_section =
    SEC("route.fault.delay", fault_delay_fields, CFG_NO_LOC, NULL);

static const struct cfg_field fault_abort_fields[] = {
    /* status and grpc_status are one choice (sections.c). */
    NUM(CK_U16, "status", struct tr_fault_abort_cfg, status, 0, 200, 599, 0),
    CUSTOM("grpc_status", 0, cfg_fault_grpc_status_set),
    PERCENT("percent", struct tr_fault_abort_cfg, per_million, REQ),
};
const struct cfg_section cfg_fault_abort_section =
    SEC("route.fault.abort", fault_abort_fields, CFG_NO_LOC, cfg_fault_abort_after);

static const struct cfg_field fault_fields[] = {
    OPTIONAL("delay", struct tr_fault_cfg, delay, struct tr_fault_delay_cfg,
             cfg_fault_delay_section),
    OPTIONAL("abort", struct tr_fault_cfg, abort, struct tr_fault_abort_cfg,
             cfg_fault_abort_section),
};
const struct cfg_section cfg_fault_section =
    SEC("route.fault", fault_fields, CFG_NO_LOC, cfg_fault_after);

static const struct cfg_field cors_origin_fields[] = {
    STR("exact", struct tr_cors_origin_cfg, value, 0, CFG_MAX_STR, NULL),
    STR("prefix", struct tr_cors_origin_cfg, value, 0, CFG_MAX_STR, NULL),
    STR("regex", struct tr_cors_origin_cfg, value, 0, CFG_MAX_STR, NULL),
    ORIGIN(struct tr_cors_origin_cfg),
};
const struct cfg_section cfg_cors_origin_section =
    SEC("CORS origin", cors_origin_fields, offsetof(struct tr_cors_origin_cfg, loc),
        cfg_cors_origin_after);

static const char *const cors_unmatched[] = {"forward", "ignore"};
static const struct cfg_field cors_fields[] = {
    LIST("allow_origins", struct tr_cors_cfg, origins, n_origins, REQ, 1, CFG_MAX_CORS_LIST,
         struct tr_cors_origin_cfg, cfg_cors_origin_section),
    STRLIST("allow_methods", struct tr_cors_cfg, allow_methods, n_allow_methods, 0, 1,
            CFG_MAX_CORS_LIST, 64, cfg_check_token),
    STRLIST("allow_headers", struct tr_cors_cfg, allow_headers, n_allow_headers, 0, 1,
            CFG_MAX_CORS_LIST, CFG_MAX_NAME, cfg_check_token),
    STRLIST("expose_headers", struct tr_cors_cfg, expose_headers, n_expose_headers, 0, 1,
            CFG_MAX_CORS_LIST, CFG_MAX_NAME, cfg_check_token),
    CUSTOM("max_age", 0, cfg_cors_max_age_set),
    BOOL("allow_credentials", struct tr_cors_cfg, allow_credentials, false),
    ENUM("unmatched_preflights", struct tr_cors_cfg, unmatched_preflights, DEF, cors_unmatched,
         NULL, TR_CORS_UNMATCHED_FORWARD),
};
const struct cfg_section cfg_cors_section = SEC("route.cors", cors_fields, CFG_NO_LOC, NULL);

/* Retries and mirroring: every default here is what a route without
 * `retries` runs with (model.h, tr_retry_cfg). */
static const struct cfg_field retry_backoff_fields[] = {
    DUR("base", struct tr_retry_cfg, backoff_base_ms, DEF, 1, CFG_MAX_BACKOFF_MS, 25),
    DUR("max", struct tr_retry_cfg, backoff_max_ms, DEF, 1, CFG_MAX_BACKOFF_MS, 250),
};
static const struct cfg_section retry_backoff_section =
    SEC("route.retries.backoff", retry_backoff_fields, CFG_NO_LOC, NULL);

static const struct cfg_field retry_budget_fields[] = {
    U32("percent", struct tr_retry_cfg, budget_percent, DEF, 0, 100, 20),
    U32("min_concurrency", struct tr_retry_cfg, budget_min_concurrency, DEF, 0, 1000000, 3),
};
static const struct cfg_section retry_budget_section =
    SEC("route.retries.budget", retry_budget_fields, CFG_NO_LOC, NULL);

static const struct cfg_field retry_fields[] = {
    U32("attempts", struct tr_retry_cfg, attempts, DEF, 0, CFG_MAX_RETRY_ATTEMPTS, 2),
    DUR("per_try_timeout", struct tr_retry_cfg, per_try_timeout_ms, 0, 0, MAXMS, 0),
    STRLIST("retry_on", struct tr_retry_cfg, retry_on, n_retry_on, 0, 1, CFG_MAX_RETRY_ON, 64,
            cfg_check_retry_on),
    STRLIST("retriable_status_codes", struct tr_retry_cfg, status_codes, n_status_codes, 0, 1,
            CFG_MAX_RETRY_CODES, 3, cfg_check_status_code),
    SECTION("backoff", 0, retry_backoff_section),
    BOOL("retry_non_idempotent", struct tr_retry_cfg, retry_non_idempotent, false),
    U32("max_body_for_retry", struct tr_retry_cfg, max_body, DEF, 0, CFG_MAX_RETRY_BODY, 65536),
    SECTION("budget", 0, retry_budget_section),
    U32("exclude_tried_priorities", struct tr_retry_cfg, exclude_tried_priorities, 0, 0,
        CFG_MAX_RETRY_ATTEMPTS, 0),
    BOOL("avoid_failed_endpoint", struct tr_retry_cfg, avoid_failed_endpoint, true),
};
static const struct cfg_section retry_section =
    SEC("route.retries", retry_fields, CFG_NO_LOC, NULL);

static const struct cfg_field mirror_fields[] = {
    NAME("cluster", struct tr_mirror_cfg, cluster_name, REQ),
    {.key = "percent",
     .kind = CK_PERCENT,
     .flags = DEF,
     .off = offsetof(struct tr_mirror_cfg, per_million),
     .max = TR_PER_MILLION,
     .def = TR_PER_MILLION},
    ORIGIN(struct tr_mirror_cfg),
};
const struct cfg_section cfg_mirror_section =
    SEC("mirror", mirror_fields, offsetof(struct tr_mirror_cfg, loc), NULL);

static const struct cfg_field route_fields[] = {
    NAME("name", struct tr_route_cfg, name, 0),
    SECTION("match", 0, match_section),
    CUSTOM("cluster", 0, cfg_route_cluster_set),
    LIST("weighted_clusters", struct tr_route_cfg, clusters, n_clusters, 0, 1, CFG_MAX_WEIGHTED,
         struct tr_weighted_cluster_cfg, weighted_section),
    SECTION("direct_response", 0, direct_section),
    /* After direct_response: the route's actions are one choice (sections.c). */
    OPTIONAL("redirect", struct tr_route_cfg, redirect, struct tr_redirect_cfg,
             cfg_redirect_section),
    DUR("timeout", struct tr_route_cfg, timeout_ms, 0, 0, MAXMS, 0),
    SECTION("rewrite", 0, rewrite_section),
    OPTIONAL("fault", struct tr_route_cfg, fault, struct tr_fault_cfg, cfg_fault_section),
    OPTIONAL("cors", struct tr_route_cfg, cors, struct tr_cors_cfg, cfg_cors_section),
    SECTION("request_headers", offsetof(struct tr_route_cfg, request_headers), header_ops_section),
    SECTION("response_headers", offsetof(struct tr_route_cfg, response_headers),
            header_ops_section),
    SECTION("retries", offsetof(struct tr_route_cfg, retries), retry_section),
    LIST("mirrors", struct tr_route_cfg, mirrors, n_mirrors, 0, 0, CFG_MAX_MIRRORS,
         struct tr_mirror_cfg, cfg_mirror_section),
    ORIGIN(struct tr_route_cfg),
};
const struct cfg_section cfg_route_section =
    SEC("route", route_fields, offsetof(struct tr_route_cfg, loc), cfg_route_after);

static const struct cfg_field vhost_fields[] = {
    NAME("name", struct tr_vhost_cfg, name, 0),
    STRLIST("domains", struct tr_vhost_cfg, domains, n_domains, REQ | CF_LOWER, 1, CFG_MAX_DOMAINS,
            256, cfg_check_domain),
    LIST("routes", struct tr_vhost_cfg, routes, n_routes, 0, 0, CFG_MAX_ROUTES, struct tr_route_cfg,
         cfg_route_section),
    ORIGIN(struct tr_vhost_cfg),
};
const struct cfg_section cfg_vhost_section =
    SEC("virtual host", vhost_fields, offsetof(struct tr_vhost_cfg, loc), cfg_vhost_after);

static const struct cfg_field route_table_fields[] = {
    NAME("name", struct tr_route_table_cfg, name, REQ),
    LIST("virtual_hosts", struct tr_route_table_cfg, vhosts, n_vhosts, REQ, 1, CFG_MAX_VHOSTS,
         struct tr_vhost_cfg, cfg_vhost_section),
    ORIGIN(struct tr_route_table_cfg),
};
const struct cfg_section cfg_route_table_section =
    SEC("route table", route_table_fields, offsetof(struct tr_route_table_cfg, loc), NULL);

/* "region/zone/subzone": at most three parts, each printable without
 * spaces (Kubernetes label values in practice); parts may be empty. */
static bool check_locality(const char *s, char *why, size_t size)
{
    int slashes = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '/' && ++slashes > 2) {
            snprintf(why, size, "expected region/zone/subzone (at most two \"/\")");
            return false;
        }
        if (*p <= 0x20 || *p >= 0x7f) {
            snprintf(why, size, "byte 0x%02x is not allowed in a locality", *p);
            return false;
        }
    }
    return true;
}

static const struct cfg_field endpoint_fields[] = {
    /* An IP address or a DNS name (sections.c; validate.c checks both forms). */
    CUSTOM("address", REQ, cfg_endpoint_address_set),
    U32("weight", struct tr_endpoint_cfg, weight, DEF, 1, CFG_MAX_WEIGHT, 1),
    STR("workload", struct tr_endpoint_cfg, workload, 0, CFG_MAX_NAME, NULL),
    STR("locality", struct tr_endpoint_cfg, locality, 0, CFG_MAX_LOCALITY, check_locality),
    U32("priority", struct tr_endpoint_cfg, priority, DEF, 0, CFG_MAX_PRIORITY, 0),
    ORIGIN(struct tr_endpoint_cfg),
};
const struct cfg_section cfg_endpoint_section =
    SEC("endpoint", endpoint_fields, offsetof(struct tr_endpoint_cfg, loc), NULL);

static const struct cfg_field pool_fields[] = {
    DUR("idle_timeout", struct tr_cluster_cfg, pool_idle_timeout_ms, DEF, 1, MAXMS, 50000),
    U32("max_idle", struct tr_cluster_cfg, pool_max_idle, DEF, 0, 65536, 64),
    U32("max_connections", struct tr_cluster_cfg, max_connections, DEF, 0, 1000000, 0),
    U32("max_requests_per_connection", struct tr_cluster_cfg, max_requests_per_connection, DEF, 0,
        UINT32_MAX, 0),
    DUR("max_connection_duration", struct tr_cluster_cfg, max_connection_duration_ms, DEF, 0, MAXMS,
        0),
};
static const struct cfg_section pool_section = SEC("cluster.pool", pool_fields, CFG_NO_LOC, NULL);

/* Whole seconds (the socket options'): validate.c checks. */
static const struct cfg_field tcp_keepalive_fields[] = {
    DUR("time", struct tr_tcp_keepalive_cfg, time_ms, DEF, 0, MAXMS, 0),
    DUR("interval", struct tr_tcp_keepalive_cfg, interval_ms, DEF, 0, MAXMS, 0),
    U32("probes", struct tr_tcp_keepalive_cfg, probes, DEF, 0, 127, 0),
};
static const struct cfg_section tcp_keepalive_section =
    SEC("cluster.tcp_keepalive", tcp_keepalive_fields, CFG_NO_LOC, NULL);

static const struct cfg_field cluster_retry_budget_fields[] = {
    U32("percent", struct tr_retry_budget_cfg, percent, DEF, 0, 100, 20),
    U32("min_concurrency", struct tr_retry_budget_cfg, min_concurrency, DEF, 0, 1000000, 3),
};
static const struct cfg_section cluster_retry_budget_section =
    SEC("cluster.retry_budget", cluster_retry_budget_fields, CFG_NO_LOC, NULL);

static const struct cfg_field cluster_tls_fields[] = {
    NAME("context", struct tr_cluster_cfg, tls_name, REQ),
    STRLIST("server_ids", struct tr_cluster_cfg, server_ids, n_server_ids, 0, 0, CFG_MAX_LIST,
            CFG_MAX_STR, cfg_check_spiffe),
    STR("sni", struct tr_cluster_cfg, sni, 0, 255, cfg_check_sni),
    STRLIST("subject_alt_names", struct tr_cluster_cfg, subject_alt_names, n_subject_alt_names, 0,
            0, CFG_MAX_LIST, CFG_MAX_STR, cfg_check_subject_alt_name),
    BOOL("insecure_skip_verify", struct tr_cluster_cfg, insecure_skip_verify, false),
};
static const struct cfg_section cluster_tls_section =
    SEC("cluster.tls", cluster_tls_fields, CFG_NO_LOC, NULL);

/* No default: 0 until validate, which tells "not set" from a setting that an
 * HTTP/1.1 cluster would ignore. */
static const struct cfg_field cluster_h2_fields[] = {
    U32("max_streams_per_connection", struct tr_cluster_cfg, h2_max_streams, 0, 1, 10000, 0),
};
static const struct cfg_section cluster_h2_section =
    SEC("cluster.http2", cluster_h2_fields, CFG_NO_LOC, NULL);

/* ---- DNS endpoints: the cluster's dns settings and the resolver ---- */
static const char *const dns_modes[] = {"all", "first"};
static const char *const dns_families[] = {"auto", "v4", "v6"};
/* refresh has no default here: 0 until validate, which tells "not set" from a
 * setting that a cluster without names would ignore. */
static const struct cfg_field cluster_dns_fields[] = {
    ENUM("mode", struct tr_dns_cfg, mode, DEF, dns_modes, NULL, TR_DNS_ALL),
    DUR("refresh", struct tr_dns_cfg, refresh_ms, 0, 1000, MAXMS, 0),
    ENUM("family", struct tr_dns_cfg, family, DEF, dns_families, NULL, TR_DNS_AUTO),
};
static const struct cfg_section cluster_dns_section =
    SEC("cluster.dns", cluster_dns_fields, CFG_NO_LOC, NULL);

static const struct cfg_field resolver_fields[] = {
    STRLIST("servers", struct tr_resolver_cfg, servers, n_servers, 0, 1, 8, 64,
            cfg_check_dns_server),
    DUR("timeout", struct tr_resolver_cfg, timeout_ms, DEF, 1, 60000, 2000),
    U32("attempts", struct tr_resolver_cfg, attempts, DEF, 1, 10, 3),
};
static const struct cfg_section resolver_section =
    SEC("resolver", resolver_fields, CFG_NO_LOC, NULL);

/* ---- outlier detection, consistent hashing, circuit breakers ---- */

/* Istio's OutlierDetection defaults (docs/config.md names the page). */
static const struct cfg_field outlier_fields[] = {
    BOOL("enabled", struct tr_outlier_cfg, enabled, false), /* true when written: sections.c */
    U32("consecutive_5xx_errors", struct tr_outlier_cfg, consecutive_5xx, DEF, 0, 1000000, 5),
    U32("consecutive_gateway_errors", struct tr_outlier_cfg, consecutive_gateway, DEF, 0, 1000000,
        0),
    U32("consecutive_local_origin_failures", struct tr_outlier_cfg, consecutive_local, DEF, 0,
        1000000, 5),
    BOOL("split_external_local_origin_errors", struct tr_outlier_cfg, split_local, false),
    DUR("interval", struct tr_outlier_cfg, interval_ms, DEF, 1, MAXMS, 10000),
    DUR("base_ejection_time", struct tr_outlier_cfg, base_ejection_ms, DEF, 1, MAXMS, 30000),
    U32("max_ejection_percent", struct tr_outlier_cfg, max_ejection_percent, DEF, 0, 100, 10),
    U32("min_health_percent", struct tr_outlier_cfg, min_health_percent, DEF, 0, 100, 0),
};
const struct cfg_section cfg_outlier_section =
    SEC("cluster.outlier_detection", outlier_fields, CFG_NO_LOC, cfg_outlier_after);

/* A cookie attribute value: printable, no ';' (it would end the attribute). */
static bool check_cookie_path(const char *s, char *why, size_t size)
{
    if (s[0] != '/') {
        snprintf(why, size, "must start with \"/\"");
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == ';') {
            snprintf(why, size, "byte 0x%02x is not allowed in a cookie path", *p);
            return false;
        }
    }
    return true;
}

static const struct cfg_field hash_cookie_fields[] = {
    STR("name", struct tr_hash_policy_cfg, cookie, REQ, CFG_MAX_NAME, cfg_check_token),
    STR("path", struct tr_hash_policy_cfg, cookie_path, 0, CFG_MAX_NAME, check_cookie_path),
    DUR("ttl", struct tr_hash_policy_cfg, cookie_ttl_ms, DEF, 0, MAXMS, 0),
    BOOL("generate", struct tr_hash_policy_cfg, cookie_generate, false), /* sections.c */
};
const struct cfg_section cfg_hash_cookie_section =
    SEC("cluster.hash_policy.cookie", hash_cookie_fields, CFG_NO_LOC, cfg_hash_cookie_after);

/* Exactly one of the four (sections.c), in this order. */
static const struct cfg_field hash_policy_fields[] = {
    STR("header", struct tr_hash_policy_cfg, header, CF_LOWER, CFG_MAX_NAME, cfg_check_token),
    SECTION("cookie", 0, cfg_hash_cookie_section),
    BOOL("source_ip", struct tr_hash_policy_cfg, source_ip, false),
    STR("query_param", struct tr_hash_policy_cfg, query_param, 0, CFG_MAX_NAME, cfg_check_token),
};
const struct cfg_section cfg_hash_policy_section =
    SEC("cluster.hash_policy", hash_policy_fields, CFG_NO_LOC, cfg_hash_policy_after);

/* Envoy's ring size bound (8M points) and Maglev's (5000011, a prime). */
static const struct cfg_field ring_hash_fields[] = {
    U32("minimum_ring_size", struct tr_hash_policy_cfg, ring_min_size, DEF, 1, 8388608, 1024),
};
static const struct cfg_section ring_hash_section =
    SEC("cluster.ring_hash", ring_hash_fields, CFG_NO_LOC, NULL);

static const struct cfg_field maglev_fields[] = {
    U32("table_size", struct tr_hash_policy_cfg, maglev_table_size, DEF, 3, 5000011, 65537),
};
static const struct cfg_section maglev_section =
    SEC("cluster.maglev", maglev_fields, CFG_NO_LOC, NULL);

static const struct cfg_field breakers_fields[] = {
    U32("max_connections", struct tr_circuit_breakers_cfg, max_connections, DEF, 0, UINT32_MAX, 0),
    U32("max_pending_requests", struct tr_circuit_breakers_cfg, max_pending_requests, DEF, 0,
        UINT32_MAX, 0),
    U32("max_requests", struct tr_circuit_breakers_cfg, max_requests, DEF, 0, UINT32_MAX, 0),
    U32("max_retries", struct tr_circuit_breakers_cfg, max_retries, DEF, 0, UINT32_MAX, 0),
};
static const struct cfg_section breakers_section =
    SEC("cluster.circuit_breakers", breakers_fields, CFG_NO_LOC, NULL);

/* Istio's WarmupConfiguration defaults: 10 %, aggression 1.0 (linear). */
static const struct cfg_field warmup_fields[] = {
    DUR("duration", struct tr_warmup_cfg, duration_ms, REQ, 1, MAXMS, 0),
    {.key = "minimum_percent",
     .kind = CK_PERCENT,
     .flags = DEF,
     .off = offsetof(struct tr_warmup_cfg, min_per_million),
     .max = TR_PER_MILLION,
     .def = 100000},
    /* A number like a percentage (0.0001 to 100, 4 decimals), read in
     * 1/10000 as a percentage is read in millionths of one. */
    {.key = "aggression",
     .kind = CK_PERCENT,
     .flags = DEF,
     .off = offsetof(struct tr_warmup_cfg, aggression),
     .max = TR_PER_MILLION,
     .def = 10000},
};
static const struct cfg_section warmup_section =
    SEC("cluster.warmup", warmup_fields, CFG_NO_LOC, NULL);

static const struct cfg_field locality_weight_fields[] = {
    STR("locality", struct tr_locality_weight_cfg, locality, REQ | CF_EMPTY_OK, CFG_MAX_LOCALITY,
        check_locality),
    U32("weight", struct tr_locality_weight_cfg, weight, REQ, 1, CFG_MAX_WEIGHT, 0),
};
static const struct cfg_section locality_weight_section =
    SEC("cluster.locality_weights", locality_weight_fields, CFG_NO_LOC, NULL);

static const char *const lb_policies[] = {"round_robin", "least_request", "random", "ring_hash",
                                          "maglev"};
static const char *const upstream_protocols[] = {"http1", "http2", "original"};
static const struct cfg_field cluster_fields[] = {
    NAME("name", struct tr_cluster_cfg, name, REQ),
    STR("service", struct tr_cluster_cfg, service, 0, CFG_MAX_NAME, NULL),
    STR("workload", struct tr_cluster_cfg, workload, 0, CFG_MAX_NAME, NULL),
    STR("namespace", struct tr_cluster_cfg, workload_namespace, 0, CFG_MAX_NAME, NULL),
    ENUM("lb", struct tr_cluster_cfg, lb, DEF, lb_policies, NULL, TR_LB_ROUND_ROBIN),
    DUR("connect_timeout", struct tr_cluster_cfg, connect_timeout_ms, DEF, 1, MAXMS, 1000),
    SECTION("pool", 0, pool_section),
    SECTION("tls", 0, cluster_tls_section),
    LIST("endpoints", struct tr_cluster_cfg, endpoints, n_endpoints, REQ, 0, CFG_MAX_ENDPOINTS,
         struct tr_endpoint_cfg, cfg_endpoint_section),
    BOOL("original_destination", struct tr_cluster_cfg, original_destination, false),
    ENUM("protocol", struct tr_cluster_cfg, protocol, DEF, upstream_protocols, NULL,
         TR_UPROTO_HTTP1),
    SECTION("http2", 0, cluster_h2_section),
    SECTION("dns", offsetof(struct tr_cluster_cfg, dns), cluster_dns_section),
    SECTION("outlier_detection", offsetof(struct tr_cluster_cfg, outlier), cfg_outlier_section),
    SECTION("hash_policy", offsetof(struct tr_cluster_cfg, hash), cfg_hash_policy_section),
    SECTION("ring_hash", offsetof(struct tr_cluster_cfg, hash), ring_hash_section),
    SECTION("maglev", offsetof(struct tr_cluster_cfg, hash), maglev_section),
    SECTION("circuit_breakers", offsetof(struct tr_cluster_cfg, breakers), breakers_section),
    OPTIONAL("tcp_keepalive", struct tr_cluster_cfg, tcp_keepalive, struct tr_tcp_keepalive_cfg,
             tcp_keepalive_section),
    OPTIONAL("retry_budget", struct tr_cluster_cfg, retry_budget, struct tr_retry_budget_cfg,
             cluster_retry_budget_section),
    SECTION("warmup", offsetof(struct tr_cluster_cfg, warmup), warmup_section),
    LIST("locality_weights", struct tr_cluster_cfg, locality_weights, n_locality_weights, 0, 0,
         CFG_MAX_ENDPOINTS, struct tr_locality_weight_cfg, locality_weight_section),
    ORIGIN(struct tr_cluster_cfg),
};
const struct cfg_section cfg_cluster_section =
    SEC("cluster", cluster_fields, offsetof(struct tr_cluster_cfg, loc), cfg_cluster_after);

/* ---- external authorizers (model.h, struct tr_ext_authz_cfg). */
#define EA_HEADERS(k, m)                                                                           \
    STRLIST(k, struct tr_ext_authz_cfg, m, n_##m, CF_LOWER, 0, CFG_MAX_HEADER_OPS, CFG_MAX_NAME,   \
            cfg_check_header_pattern)
static const struct cfg_field ext_authz_fields[] = {
    NAME("name", struct tr_ext_authz_cfg, name, REQ),
    NAME("cluster", struct tr_ext_authz_cfg, cluster_name, REQ),
    DUR("timeout", struct tr_ext_authz_cfg, timeout_ms, DEF, 1, MAXMS, 600000),
    STR("path_prefix", struct tr_ext_authz_cfg, path_prefix, 0, CFG_MAX_STR,
        cfg_check_ext_authz_prefix),
    BOOL("fail_open", struct tr_ext_authz_cfg, fail_open, false),
    U32("status_on_error", struct tr_ext_authz_cfg, status_on_error, DEF, 200, 599, 403),
    EA_HEADERS("check_headers", check_headers),
    MAP("check_add", struct tr_ext_authz_cfg, check_add, n_check_add, CF_LOWER | CF_EMPTY_OK,
        CFG_MAX_HEADER_OPS, CFG_MAX_HEADER_VALUE, cfg_check_header_edit_name,
        cfg_check_header_value),
    EA_HEADERS("upstream_on_allow", upstream_on_allow),
    EA_HEADERS("downstream_on_allow", downstream_on_allow),
    EA_HEADERS("downstream_on_deny", downstream_on_deny),
    ORIGIN(struct tr_ext_authz_cfg),
};
const struct cfg_section cfg_ext_authz_section =
    SEC("ext_authz", ext_authz_fields, offsetof(struct tr_ext_authz_cfg, loc), NULL);

static const char *const log_levels[] = {"error", "warn", "info", "debug"};
/* Lists are read in table order; references between them are resolved by
 * validate, so no order is needed. "listeners" must not be empty: validate
 * says so (after the objects it would refer to were checked). */
static const struct cfg_field root_fields[] = {
    SECTION("node", offsetof(struct tr_config, node), node_section),
    U32("workers", struct tr_config, workers, 0, 0, CFG_MAX_WORKERS, 0),
    DUR("drain_timeout", struct tr_config, drain_timeout_ms, DEF, 0, MAXMS, 10000),
    ENUM("log_level", struct tr_config, log_level, CF_ENUM_STR | DEF, log_levels, NULL, 2),
    SECTION("limits", offsetof(struct tr_config, limits), limits_section),
    SECTION("admin", offsetof(struct tr_config, admin), admin_section),
    SECTION("access_log", offsetof(struct tr_config, access_log), access_log_section),
    LIST("tls", struct tr_config, tls, n_tls, 0, 0, CFG_MAX_TLS, struct tr_tls_cfg,
         cfg_tls_section),
    LIST("listeners", struct tr_config, listeners, n_listeners, 0, 0, CFG_MAX_LISTENERS,
         struct tr_listener_cfg, cfg_listener_section),
    LIST("route_tables", struct tr_config, route_tables, n_route_tables, 0, 0, CFG_MAX_TABLES,
         struct tr_route_table_cfg, cfg_route_table_section),
    LIST("clusters", struct tr_config, clusters, n_clusters, 0, 0, CFG_MAX_CLUSTERS,
         struct tr_cluster_cfg, cfg_cluster_section),
    LIST("ext_authz", struct tr_config, ext_authz, n_ext_authz, 0, 0, CFG_MAX_LISTENERS,
         struct tr_ext_authz_cfg, cfg_ext_authz_section),
    SECTION("resolver", offsetof(struct tr_config, resolver), resolver_section),
    U32("upstream_mark", struct tr_config, upstream_mark, 0, 0, UINT32_MAX, 0),
};
const struct cfg_section cfg_root_section = SEC("config", root_fields, CFG_NO_LOC, NULL);

size_t cfg_field_index(const struct cfg_section *sec, const char *key)
{
    for (size_t i = 0; i < sec->n_fields; i++) {
        if (strcmp(sec->fields[i].key, key) == 0)
            return i;
    }
    abort(); /* a typo in sections.c or validate.c, caught by any test */
}

/* ------------------------------------------------------------ defaults */

static void *at(void *obj, size_t off)
{
    return (unsigned char *)obj + off;
}

static void enum_store(void *obj, const struct cfg_field *fd, size_t i)
{
    int v = fd->values != NULL ? fd->values[i] : (int)i;
    if (fd->flags & CF_ENUM_STR)
        *(const char **)at(obj, fd->off) = fd->names[i];
    else if (fd->flags & CF_U16)
        *(uint16_t *)at(obj, fd->off) = (uint16_t)v;
    else
        *(int *)at(obj, fd->off) = v;
}

void cfg_schema_defaults(const struct cfg_section *sec, void *obj)
{
    for (size_t i = 0; i < sec->n_fields; i++) {
        const struct cfg_field *fd = &sec->fields[i];
        if (fd->kind == CK_SECTION) {
            cfg_schema_defaults(fd->sub, at(obj, fd->off));
            continue;
        }
        if (!(fd->flags & CF_DEF))
            continue;
        switch (fd->kind) {
        case CK_BOOL:
            *(bool *)at(obj, fd->off) = fd->def != 0;
            break;
        case CK_U32:
        case CK_DURATION:
            *(uint32_t *)at(obj, fd->off) = fd->def;
            break;
        case CK_U16:
            *(uint16_t *)at(obj, fd->off) = (uint16_t)fd->def;
            break;
        case CK_PERCENT: /* per million */
            *(uint32_t *)at(obj, fd->off) = fd->def;
            break;
        case CK_ENUM:
            enum_store(obj, fd, fd->def);
            break;
        case CK_STR:
        case CK_NAME:
        case CK_FILE:
            *(const char **)at(obj, fd->off) = fd->def_str;
            break;
        case CK_ADDR: {
            struct tr_cfg_addr *a = at(obj, fd->off);
            char why[CFG_WHY_MAX];
            if (!cfg_addr_parse(fd->def_str, true, a, why, sizeof(why)))
                abort(); /* the table's own default */
            a->text = fd->def_str;
            break;
        }
        default:
            break;
        }
    }
}

/* -------------------------------------------------------------- walker */

bool cfg_fail_field(struct ld *ld, const struct cnode *map, const struct cfg_field *fd,
                    const struct cfg_val *f, const char *fmt, ...)
{
    size_t saved = cfg_path_push_key(ld, fd->key);
    const struct cnode *n = f->k != NULL ? f->k : map;
    va_list ap;
    va_start(ap, fmt);
    cfg_vfail_at(ld, n->line, n->col, ld->path, fmt, ap);
    va_end(ap);
    cfg_path_pop(ld, saved);
    return false;
}

/* Splits a mapping into the table's fields; unknown or repeated keys fail. */
static bool split(struct ld *ld, const struct cnode *map, const struct cfg_section *sec,
                  struct cfg_val *f)
{
    for (size_t i = 0; i < sec->n_fields; i++)
        f[i] = (struct cfg_val){0};
    if (!cfg_expect_kind(ld, map, CN_MAP))
        return false;
    for (const struct cnode *k = map->head; k != NULL && k->next != NULL; k = k->next->next) {
        char b[96];
        if (k->kind != CN_SCALAR)
            return cfg_fail(ld, k, "mapping keys must be strings, got %s",
                            cfg_describe(k, b, sizeof(b)));
        size_t i;
        for (i = 0; i < sec->n_fields; i++) {
            const char *key = sec->fields[i].key;
            if (strlen(key) == k->len && memcmp(key, k->s, k->len) == 0)
                break;
        }
        if (i == sec->n_fields) {
            char list[512];
            size_t o = 0;
            list[0] = '\0';
            for (size_t j = 0; j < sec->n_fields && o < sizeof(list); j++)
                o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", j != 0 ? ", " : "",
                                      sec->fields[j].key);
            size_t saved = cfg_path_push_key(ld, cfg_show(b, sizeof(b), k->s, k->len, false));
            cfg_fail(ld, k, "unknown field %s (accepted: %s)",
                     cfg_show(b, sizeof(b), k->s, k->len, true), list);
            cfg_path_pop(ld, saved);
            return false;
        }
        if (f[i].k != NULL) {
            size_t saved = cfg_path_push_key(ld, sec->fields[i].key);
            cfg_fail(ld, k, "duplicate field (first at line %u)", f[i].k->line);
            cfg_path_pop(ld, saved);
            return false;
        }
        f[i].k = k;
        f[i].v = k->next;
    }
    return true;
}

static bool list_of(struct ld *ld, const struct cnode *v, size_t min, size_t max)
{
    if (!cfg_expect_kind(ld, v, CN_SEQ))
        return false;
    if (v->n < min)
        return cfg_fail(ld, v, "must have at least %zu entr%s", min, min == 1 ? "y" : "ies");
    if (v->n > max)
        return cfg_fail(ld, v, "has %zu entries; the limit is %zu", v->n, max);
    return true;
}

/* A string in the config arena, lower-cased and checked as the field says. */
static bool read_str(struct ld *ld, const struct cnode *v, const struct cfg_field *fd,
                     size_t maxlen, const char **out)
{
    bool ok = (fd->flags & CF_EMPTY_OK)
                  ? cfg_text_of(ld, v, maxlen, (fd->flags & CF_CTL_OK) != 0, out)
                  : cfg_nonempty_of(ld, v, maxlen, out);
    if (!ok)
        return false;
    char why[CFG_WHY_MAX];
    if (fd->check != NULL && !fd->check(*out, why, sizeof(why)))
        return cfg_fail(ld, v, "%s", why);
    if (fd->flags & CF_LOWER)
        cfg_lower((char *)*out); /* our own copy in the arena */
    return true;
}

/* A file the proxy will read later (certificates, keys): resolved against
 * the config's directory and checked now so the error points here. */
static bool read_file(struct ld *ld, const struct cnode *v, const struct cfg_field *fd,
                      const char **out)
{
    const char *s;
    if (!cfg_nonempty_of(ld, v, CFG_MAX_STR, &s))
        return false;
    if (s[0] != '/' && ld->dir != NULL) {
        size_t dl = strlen(ld->dir), sl = strlen(s);
        char *j = tr_arena_alloc(ld->a, dl + 1 + sl + 1);
        if (j == NULL)
            return cfg_oom(ld);
        memcpy(j, ld->dir, dl);
        j[dl] = '/';
        memcpy(j + dl + 1, s, sl + 1);
        s = j;
    }
    if ((fd->flags & CF_READ) && access(s, R_OK) != 0) {
        char b[96];
        return cfg_fail(ld, v, "cannot read %s: %s", cfg_show(b, sizeof(b), s, strlen(s), true),
                        strerror(errno));
    }
    *out = s;
    return true;
}

static bool read_strlist(struct ld *ld, const struct cnode *v, const struct cfg_field *fd,
                         void *obj)
{
    if (!list_of(ld, v, fd->min, fd->max))
        return false;
    const char **arr = NULL;
    if (v->n > 0 && (arr = tr_arena_calloc(ld->a, v->n, sizeof(*arr))) == NULL)
        return cfg_oom(ld);
    size_t i = 0;
    for (const struct cnode *it = v->head; it != NULL; it = it->next, i++) {
        size_t saved = cfg_path_push_index(ld, i);
        bool ok = read_str(ld, it, fd, fd->maxlen, &arr[i]);
        cfg_path_pop(ld, saved);
        if (!ok)
            return false;
    }
    *(const char ***)at(obj, fd->off) = arr;
    *(size_t *)at(obj, fd->off_n) = v->n;
    return true;
}

/* CK_MAP: names as the field's check says (lower-cased with CF_LOWER), each
 * once; values as its value_check says. */
static bool read_map(struct ld *ld, const struct cnode *v, const struct cfg_field *fd, void *obj)
{
    if (!cfg_expect_kind(ld, v, CN_MAP))
        return false;
    size_t n = v->n / 2;
    if (n > fd->max)
        return cfg_fail(ld, v, "has %zu entries; the limit is %u", n, fd->max);
    struct tr_name_value_cfg *arr = NULL;
    if (n > 0 && (arr = tr_arena_calloc(ld->a, n, sizeof(*arr))) == NULL)
        return cfg_oom(ld);
    const struct cfg_field name_fd = {
        .kind = CK_STR, .flags = fd->flags & CF_LOWER, .check = fd->check};
    const struct cfg_field value_fd = {
        .kind = CK_STR, .flags = fd->flags & CF_EMPTY_OK, .check = fd->value_check};
    size_t i = 0;
    for (const struct cnode *k = v->head; k != NULL && k->next != NULL; k = k->next->next, i++) {
        char b[96];
        if (k->kind != CN_SCALAR)
            return cfg_fail(ld, k, "mapping keys must be strings, got %s",
                            cfg_describe(k, b, sizeof(b)));
        size_t saved = cfg_path_push_key(ld, cfg_show(b, sizeof(b), k->s, k->len, false));
        bool ok = read_str(ld, k, &name_fd, CFG_MAX_NAME, &arr[i].name) &&
                  read_str(ld, k->next, &value_fd, fd->maxlen, &arr[i].value);
        const struct cnode *first = v->head;
        for (size_t j = 0; ok && j < i; j++, first = first->next->next) {
            if (strcmp(arr[j].name, arr[i].name) == 0)
                ok = cfg_fail(ld, k, "duplicate name %s (first at line %u)",
                              cfg_show(b, sizeof(b), arr[i].name, strlen(arr[i].name), true),
                              first->line);
        }
        cfg_path_pop(ld, saved);
        if (!ok)
            return false;
    }
    *(struct tr_name_value_cfg **)at(obj, fd->off) = arr;
    *(size_t *)at(obj, fd->off_n) = n;
    return true;
}

static bool read_list(struct ld *ld, const struct cnode *v, const struct cfg_field *fd, void *obj)
{
    if (!list_of(ld, v, fd->min, fd->max))
        return false;
    unsigned char *arr = NULL;
    if (v->n > 0 && (arr = tr_arena_calloc(ld->a, v->n, fd->item_size)) == NULL)
        return cfg_oom(ld);
    size_t i = 0;
    for (const struct cnode *it = v->head; it != NULL; it = it->next, i++) {
        void *item = arr + i * fd->item_size;
        size_t saved = cfg_path_push_index(ld, i);
        cfg_schema_defaults(fd->sub, item);
        bool ok = cfg_schema_walk(ld, it, fd->sub, item, i);
        cfg_path_pop(ld, saved);
        if (!ok)
            return false;
    }
    *(void **)at(obj, fd->off) = arr;
    *(size_t *)at(obj, fd->off_n) = v->n;
    return true;
}

static bool read_field(struct ld *ld, const struct cfg_val *f, const struct cfg_field *fd,
                       void *obj)
{
    const struct cnode *v = f->v;
    switch (fd->kind) {
    case CK_STR:
        return read_str(ld, v, fd, fd->max, at(obj, fd->off));
    case CK_NAME:
        return cfg_name_of(ld, v, at(obj, fd->off));
    case CK_FILE:
        return read_file(ld, v, fd, at(obj, fd->off));
    case CK_BOOL:
        return cfg_bool_of(ld, v, at(obj, fd->off));
    case CK_U32:
        return cfg_u32_of(ld, v, fd->min, fd->max, at(obj, fd->off));
    case CK_U16: {
        uint32_t x;
        if (!cfg_u32_of(ld, v, fd->min, fd->max, &x))
            return false;
        *(uint16_t *)at(obj, fd->off) = (uint16_t)x;
        return true;
    }
    case CK_DURATION:
        return cfg_duration_of(ld, v, fd->min, fd->max, at(obj, fd->off));
    case CK_ENUM: {
        int i;
        if (!cfg_enum_of(ld, v, fd->names, fd->n_names, &i))
            return false;
        enum_store(obj, fd, (size_t)i);
        return true;
    }
    case CK_ADDR:
        return cfg_addr_of(ld, v, (fd->flags & CF_PORT0) != 0, at(obj, fd->off));
    case CK_STRLIST:
        return read_strlist(ld, v, fd, obj);
    case CK_SECTION:
        return cfg_schema_walk(ld, v, fd->sub, at(obj, fd->off), 0);
    case CK_LIST:
        return read_list(ld, v, fd, obj);
    case CK_MAP:
        return read_map(ld, v, fd, obj);
    case CK_CUSTOM:
        return fd->set(ld, f->k, v, obj);
    case CK_OPTIONAL: {
        void *item = tr_arena_calloc(ld->a, 1, fd->item_size);
        if (item == NULL)
            return cfg_oom(ld);
        cfg_schema_defaults(fd->sub, item);
        if (!cfg_schema_walk(ld, v, fd->sub, item, 0))
            return false;
        *(void **)at(obj, fd->off) = item;
        return true;
    }
    case CK_PERCENT:
        return cfg_percent_of(ld, v, at(obj, fd->off));
    }
    return false;
}

bool cfg_schema_walk(struct ld *ld, const struct cnode *map, const struct cfg_section *sec,
                     void *obj, size_t idx)
{
    struct cfg_val f[CFG_MAX_FIELDS];
    if (sec->n_fields > CFG_MAX_FIELDS)
        abort(); /* raise CFG_MAX_FIELDS with the table */
    if (!split(ld, map, sec, f))
        return false;
    if (sec->loc_off != CFG_NO_LOC && !cfg_loc_here(ld, map, at(obj, sec->loc_off)))
        return false;
    for (size_t i = 0; i < sec->n_fields; i++) {
        if ((sec->fields[i].flags & CF_REQ) && f[i].v == NULL) {
            size_t saved = cfg_path_push_key(ld, sec->fields[i].key);
            cfg_fail(ld, map, "missing required field");
            cfg_path_pop(ld, saved);
            return false;
        }
    }
    for (size_t i = 0; i < sec->n_fields; i++) {
        if (f[i].v == NULL)
            continue;
        size_t saved = cfg_path_push_key(ld, sec->fields[i].key);
        bool ok = read_field(ld, &f[i], &sec->fields[i], obj);
        cfg_path_pop(ld, saved);
        if (!ok)
            return false;
    }
    return sec->after == NULL || sec->after(ld, map, f, obj, idx);
}
