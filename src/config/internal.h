/* config/internal.h: what the loader's parts share (not for other modules).
 *
 *   tree.c      YAML text -> tree of located nodes; input strictness; errors
 *               at nodes; field paths; finding a node by field path
 *   values.c    scalar parsers (strings, names, integers, durations, enums,
 *               addresses) and the pure syntax checks shared with validate
 *               (SPIFFE IDs, tokens, domains, regexes, host names)
 *   schema.c    one table per section and the generic walker that applies
 *               them: unknown keys, duplicates, required fields, types,
 *               ranges, defaults; the same tables check a built model
 *   sections.c  what a table cannot say: per-section cross-field logic
 *   validate.c  invariants of a whole model (names, references, ...)
 *   load.c      file -> tree -> schema walk -> validate
 */
#ifndef TR_CONFIG_INTERNAL_H
#define TR_CONFIG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/load.h"
#include "config/model.h"

/* Input and shape bounds: a control plane never needs more, and a broken or
 * hostile file must fail fast instead of exhausting memory. */
#define CFG_MAX_FILE_SIZE   (16u * 1024u * 1024u)
#define CFG_MAX_DEPTH       32u
#define CFG_MAX_NODES       4000000u
#define CFG_MAX_TLS         1024u
#define CFG_MAX_LISTENERS   1024u
#define CFG_MAX_TABLES      1024u
#define CFG_MAX_VHOSTS      10000u
#define CFG_MAX_DOMAINS     1000u
#define CFG_MAX_ROUTES      100000u /* per config, all tables together */
#define CFG_MAX_CLUSTERS    100000u
#define CFG_MAX_ENDPOINTS   10000u /* per cluster */
#define CFG_MAX_HEADERS     64u    /* header matches per route */
#define CFG_MAX_METHODS     32u
#define CFG_MAX_WEIGHTED    256u
#define CFG_MAX_RULES       10000u
#define CFG_MAX_LIST        1000u /* principals, paths, server_ids */
#define CFG_MAX_NAME        256u
#define CFG_MAX_STR         4096u  /* paths, regexes, file names, domains */
#define CFG_MAX_BODY        65536u /* direct_response body */
#define CFG_MAX_WEIGHT      1000000u
#define CFG_MAX_PRIORITY    127u /* endpoints[].priority */
#define CFG_MAX_LOCALITY    767u /* three 255-byte label values and two "/" */
#define CFG_MAX_DURATION_MS (24u * 3600u * 1000u)
#define CFG_MAX_WORKERS     256u
#define CFG_H1_HEADERS_CAP  256u  /* TR_H1_MAX_HEADERS_CAP in codec/h1/h1.h */
#define CFG_H2_STREAMS_DEF  100u  /* cluster http2.max_streams_per_connection */
#define CFG_DNS_REFRESH_DEF 5000u /* cluster dns.refresh (Envoy's dns_refresh_rate) */
#define CFG_MAX_CORS_LIST   64u   /* CORS origins, methods, headers per list */
#define CFG_MAX_GRPC_STATUS 16u   /* UNAUTHENTICATED, the highest gRPC status code */

/* Request matching and header edits. */
#define CFG_MAX_QUERY        64u   /* query parameter matches per route */
#define CFG_MAX_HEADER_OPS   64u   /* entries per set, add or remove of a header edit */
#define CFG_MAX_HEADER_VALUE 4096u /* bytes of a header edit's value */

/* Retries and mirroring. */
#define CFG_MAX_RETRY_ATTEMPTS    100u     /* retries after the first try */
#define CFG_MAX_RETRY_ON          16u      /* entries of retry_on */
#define CFG_MAX_RETRY_CODES       64u      /* entries of retriable_status_codes */
#define CFG_MAX_RETRY_BODY        1048576u /* max_body_for_retry */
#define CFG_MAX_BACKOFF_MS        60000u   /* backoff base and max */
#define CFG_MAX_MIRRORS           8u       /* mirrors per route */
/* Request authentication (filter/jwt.h holds the request-time limits). */
#define CFG_MAX_JWKS              65536u /* bytes of an inline JWKS */
#define CFG_MAX_JWT_RULES         64u    /* rules per listener */
#define CFG_MAX_JWT_LOCATIONS     16u    /* entries of from_headers, from_params, from_cookies */
#define CFG_MAX_JWT_CLAIM_HEADERS 16u    /* output_claim_to_headers entries */

/* TLS contexts that are not mesh contexts. */
#define CFG_MAX_PEM           (256u * 1024u) /* inline PEM text of one cert, key or ca */
#define CFG_MAX_SERVER_NAMES  1000u          /* a server context's server_names */
#define CFG_MAX_SNI_ROUTES    4096u          /* a listener's sni_routes (each: server_names) */
#define CFG_MAX_DEST_PREFIXES 256u           /* a virtual listener's destination_prefixes */
#define CFG_MAX_SNI_CONTEXTS  256u           /* a TERMINATE listener's contexts */

#define CFG_PATH_MAX 512u
#define CFG_ERR_MAX  1024u
#define CFG_WHY_MAX  256u /* a check's explanation */

/* ---------------------------------------------------------------- tree */

enum cnode_kind { CN_SCALAR, CN_MAP, CN_SEQ };

struct cnode {
    enum cnode_kind kind;
    bool plain;         /* plain (unquoted) scalar: eligible as bool/int/null */
    uint32_t line, col; /* 1-based */
    const char *s;      /* scalar text, NUL-terminated copy (may hold NULs) */
    size_t len;
    struct cnode *head, *tail, *next; /* children: map = key, value, key, ... */
    size_t n;                         /* children count (a map has 2 per pair) */
};

/* One load: the scratch arena (tree, tables) dies when loading ends; the
 * config arena holds nothing but the model. The first error wins. */
struct ld {
    struct tr_arena *tmp; /* tree and lookup tables */
    struct tr_arena *a;   /* the config's arena */
    struct tr_config *cfg;
    const char *file; /* in a */
    const char *dir;  /* config file's directory (in a), NULL: relative to cwd */
    char path[CFG_PATH_MAX];
    size_t plen;
    char *err; /* malloc'd; first error only */
    size_t nodes;
    size_t total_routes;
    const struct cnode *root;
};

/* Errors at a node (or line 1 col 1 if NULL) about the current field path. */
bool cfg_fail(struct ld *ld, const struct cnode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool cfg_vfail_at(struct ld *ld, uint32_t line, uint32_t col, const char *path, const char *fmt,
                  va_list ap) __attribute__((format(printf, 5, 0)));
bool cfg_fail_file(struct ld *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool cfg_oom(struct ld *ld);

/* Quotes s for a message: control bytes escaped, long values cut. */
const char *cfg_show(char *buf, size_t size, const char *s, size_t len, bool quotes);
/* "a mapping", "a list", "null" or the quoted scalar. */
const char *cfg_describe(const struct cnode *n, char *buf, size_t size);
bool cfg_is_null(const struct cnode *n);
bool cfg_expect_kind(struct ld *ld, const struct cnode *n, enum cnode_kind kind);

/* Field path: push returns the length to pop back to. */
size_t cfg_path_push_key(struct ld *ld, const char *key);
size_t cfg_path_push_index(struct ld *ld, size_t i);
void cfg_path_pop(struct ld *ld, size_t saved);
/* Location of node n at the current path, path copied into the config arena. */
bool cfg_loc_here(struct ld *ld, const struct cnode *n, struct tr_cfg_loc *loc);

/* Checks the raw bytes (UTF-8, printable, no "? " keys), then builds the
 * tree (depth, node count, one document, no aliases or tags). */
bool cfg_input_check(struct ld *ld, const unsigned char *p, size_t len);
bool cfg_tree_build(struct ld *ld, const char *buf, size_t len, struct cnode **rootp);

/* A Kubernetes resource (a mapping with apiVersion and kind at the top)
 * given instead of a proxy configuration: sets the error that says what it
 * is and points to `trellis ctl compile`, and returns true. False (nothing
 * set) for anything else. */
bool cfg_refuse_kubernetes(struct ld *ld, const struct cnode *root);

/* The node at a field path such as "listeners[1].tls.mode" below root: the
 * key node if want_key and the last step is a key, else the value. When a
 * step is missing, the deepest node found (the mapping that lacks the key);
 * *found says whether the whole path exists. */
const struct cnode *cfg_tree_find(const struct cnode *root, const char *path, bool want_key,
                                  bool *found);

/* --------------------------------------------------------------- values */

/* Parsers from a node; each fails at the node with the current path. */
bool cfg_text_of(struct ld *ld, const struct cnode *n, size_t maxlen, bool allow_ctl,
                 const char **out);
bool cfg_nonempty_of(struct ld *ld, const struct cnode *n, size_t maxlen, const char **out);
bool cfg_name_of(struct ld *ld, const struct cnode *n, const char **out);
bool cfg_bool_of(struct ld *ld, const struct cnode *n, bool *out);
bool cfg_u32_of(struct ld *ld, const struct cnode *n, uint32_t min, uint32_t max, uint32_t *out);
bool cfg_duration_of(struct ld *ld, const struct cnode *n, uint32_t min_ms, uint32_t max_ms,
                     uint32_t *out);
bool cfg_enum_of(struct ld *ld, const struct cnode *n, const char *const *names, size_t count,
                 int *out);
bool cfg_addr_of(struct ld *ld, const struct cnode *n, bool port0_ok, struct tr_cfg_addr *out);
/* A percentage 0-100 with at most 4 decimals ("12.5", unquoted), as a
 * share per million. */
bool cfg_percent_of(struct ld *ld, const struct cnode *n, uint32_t *per_million);
bool cfg_percent_parse(const char *s, uint32_t *per_million);

/* Durations as in Go / protobuf JSON ("100ms", "1.5s", "1m30s"). */
bool cfg_duration_parse(const char *s, uint64_t *out_us);
/* "IPv4:PORT" or "[IPv6]:PORT" into out (text not set); false with why. */
bool cfg_addr_parse(const char *s, bool port0_ok, struct tr_cfg_addr *out, char *why, size_t size);
bool cfg_addr_is_loopback(const struct tr_cfg_addr *a);
/* Endpoint addresses: "IP:PORT", or "NAME:PORT" with a DNS name (RFC 1123,
 * <= 253 bytes), which is s[0, *host_len) (0 for an IP address, in addr). */
bool cfg_endpoint_addr_parse(const char *s, struct tr_cfg_addr *addr, size_t *host_len,
                             uint16_t *port, char *why, size_t size);

/* Pure checks: true, or false with an explanation in why. Shared by the
 * walker (at the node) and validate (at the object). */
typedef bool (*cfg_check_fn)(const char *s, char *why, size_t size);
bool cfg_check_name(const char *s, char *why, size_t size);
bool cfg_check_token(const char *s, char *why, size_t size);
bool cfg_check_spiffe(const char *s, char *why, size_t size);
bool cfg_check_principal(const char *s, char *why, size_t size);
bool cfg_check_authz_path(const char *s, char *why, size_t size);
bool cfg_check_az_pattern(const char *s, char *why, size_t size);
/* A header name pattern (external authorizers): a token with at most one
 * "*", first or last. The check path prefix: "/..." without "?" or "#". */
bool cfg_check_header_pattern(const char *s, char *why, size_t size);
bool cfg_check_ext_authz_prefix(const char *s, char *why, size_t size);
bool cfg_check_az_port(const char *s, char *why, size_t size);
bool cfg_check_az_path(const char *s, char *why, size_t size);
bool cfg_check_az_key(const char *s, char *why, size_t size);
bool cfg_check_az_policy_name(const char *s, char *why, size_t size);
bool cfg_check_cidr(const char *s, char *why, size_t size);
bool cfg_check_domain(const char *s, char *why, size_t size);
bool cfg_check_trust_domain(const char *s, char *why, size_t size);
bool cfg_check_host(const char *s, char *why, size_t size);
bool cfg_check_sni(const char *s, char *why, size_t size);
/* A server context's server name: a host name or "*.suffix"; a SAN to
 * require of a server (a DNS name or a URI); inline PEM (a BEGIN line). */
bool cfg_check_server_name(const char *s, char *why, size_t size);
bool cfg_check_subject_alt_name(const char *s, char *why, size_t size);
bool cfg_check_pem(const char *s, char *why, size_t size);
bool cfg_check_dns_name(const char *s, char *why, size_t size);
bool cfg_check_dns_server(const char *s, char *why, size_t size);
bool cfg_check_text(const char *s, size_t maxlen, bool allow_ctl, char *why, size_t size);
/* rewrite.regex: the pattern compiled for searching (not anchored) into
 * arena a, the substitution turned from RE2's syntax (\N a capture group,
 * \\ a backslash) into PCRE2's ($ doubled, ${N}). NULL with why set when
 * either is unusable (a group the pattern does not have, a stray \). */
const void *cfg_regex_rewrite_compile(struct tr_arena *a, const char *pattern, const char *sub,
                                      const char **pcre_sub, char *why, size_t size);
bool cfg_check_regex(const char *re, bool caseless, char *why, size_t size);
/* A URI host for a Location (reg-name, IPv4 or [IPv6], no port) and an
 * absolute path (starts with "/", printable, no "#"). */
bool cfg_check_uri_host(const char *s, char *why, size_t size);
bool cfg_check_uri_path(const char *s, char *why, size_t size);
/* Request matching and header edits. */
bool cfg_check_header_match_name(const char *s, char *why, size_t size);
bool cfg_check_query_name(const char *s, char *why, size_t size);
bool cfg_check_query_value(const char *s, char *why, size_t size);
bool cfg_check_header_edit_name(const char *s, char *why, size_t size);
bool cfg_check_jwks(const char *s, char *why, size_t size);
bool cfg_check_jwks_url(const char *s, char *why, size_t size);
bool cfg_check_header_value(const char *s, char *why, size_t size);
/* Retries: a retry_on condition (its enum tr_retry_on bit, 0 if unknown),
 * a status code ("503"). */
uint32_t cfg_retry_on_bit(const char *s);
bool cfg_check_retry_on(const char *s, char *why, size_t size);
bool cfg_check_status_code(const char *s, char *why, size_t size);
void cfg_lower(char *s);
bool cfg_is_lower(const char *s);

/* --------------------------------------------------------------- schema */

enum cfg_kind {
    CK_STR,      /* const char *: non-empty unless CF_EMPTY_OK */
    CK_NAME,     /* const char *: an object name or a reference by name */
    CK_FILE,     /* const char *: resolved against the config's directory */
    CK_BOOL,     /* bool */
    CK_U32,      /* uint32_t in min..max */
    CK_U16,      /* uint16_t in min..max */
    CK_DURATION, /* uint32_t milliseconds in min..max */
    CK_ENUM,     /* int (or uint16_t with CF_U16, or const char * with CF_ENUM_STR) */
    CK_ADDR,     /* struct tr_cfg_addr */
    CK_STRLIST,  /* const char **, count at off_n */
    CK_SECTION,  /* a nested mapping: the sub-object at off */
    CK_LIST,     /* a list of sub-objects: array at off, count at off_n */
    CK_MAP,      /* a mapping of names to strings: struct tr_name_value_cfg array at
                  * off, count at off_n; names checked by check (CF_LOWER applies to
                  * them, each name once), values of at most maxlen bytes checked by
                  * value_check (CF_EMPTY_OK applies to them) */
    CK_CUSTOM,   /* set() does it; validate leaves it to validate.c */
    /* Local route actions' additions: */
    CK_OPTIONAL, /* a nested mapping that may be absent: pointer at off, NULL when
                  * absent, else an object of item_size allocated when read */
    CK_PERCENT,  /* uint32_t share per million: "12.5" (percent, <= 4 decimals) */
};

#define CF_REQ      0x0001u /* missing: "missing required field" */
#define CF_EMPTY_OK 0x0002u /* strings: "" allowed */
#define CF_CTL_OK   0x0004u /* strings: control characters allowed */
#define CF_LOWER    0x0008u /* strings: lower-cased when read, must be lower in a model */
#define CF_PORT0    0x0010u /* addresses: port 0 allowed */
#define CF_READ     0x0020u /* files: must be readable when loading */
#define CF_DEF      0x0040u /* def / def_str is the default */
#define CF_U16      0x0080u /* enums: stored as uint16_t */
#define CF_ENUM_STR 0x0100u /* enums: stored as the name (const char *) */

struct cfg_section;

struct cfg_field {
    const char *key;
    enum cfg_kind kind;
    uint32_t flags;
    size_t off;                    /* the value's offset in the object */
    size_t off_n;                  /* CK_STRLIST, CK_LIST: the count's offset */
    uint32_t min, max;             /* numbers: range; strings: max length; lists: entries */
    uint32_t maxlen;               /* CK_STRLIST: length of each entry; CK_MAP: of each value */
    uint32_t def;                  /* CF_DEF numbers, bools, enums (index into names) */
    const char *def_str;           /* CF_DEF strings and addresses */
    const char *const *names;      /* CK_ENUM: spellings */
    const int *values;             /* CK_ENUM: stored values (NULL: index) */
    size_t n_names;                /* CK_ENUM */
    cfg_check_fn check;            /* strings, list entries, map names */
    cfg_check_fn value_check;      /* CK_MAP values */
    const struct cfg_section *sub; /* CK_SECTION, CK_LIST */
    size_t item_size;              /* CK_LIST */
    /* CK_CUSTOM: reads value v (key k) into obj */
    bool (*set)(struct ld *ld, const struct cnode *k, const struct cnode *v, void *obj);
};

/* A mapping's entry for one field; k and v are NULL if absent. */
struct cfg_val {
    const struct cnode *k, *v;
};

#define CFG_MAX_FIELDS 24u

struct cfg_section {
    const char *name; /* for messages and docs, e.g. "listener" */
    const struct cfg_field *fields;
    size_t n_fields;
    size_t loc_off; /* offset of a struct tr_cfg_loc, or CFG_NO_LOC */
    /* Cross-field logic after the fields were read; idx: position in its
     * list. f has one entry per field, in table order. */
    bool (*after)(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                  size_t idx);
};

#define CFG_NO_LOC ((size_t)-1)

extern const struct cfg_section cfg_root_section;
extern const struct cfg_section cfg_tls_section;
extern const struct cfg_section cfg_listener_section;
extern const struct cfg_section cfg_route_table_section;
extern const struct cfg_section cfg_vhost_section;
extern const struct cfg_section cfg_route_section;
extern const struct cfg_section cfg_mirror_section;
extern const struct cfg_section cfg_cluster_section;
extern const struct cfg_section cfg_ext_authz_section;
extern const struct cfg_section cfg_endpoint_section;
extern const struct cfg_section cfg_path_match_section;
extern const struct cfg_section cfg_header_match_section;
extern const struct cfg_section cfg_redirect_section;
extern const struct cfg_section cfg_fault_section;
extern const struct cfg_section cfg_fault_delay_section;
extern const struct cfg_section cfg_fault_abort_section;
extern const struct cfg_section cfg_cors_section;
extern const struct cfg_section cfg_original_dst_section;
extern const struct cfg_section cfg_cors_origin_section;
extern const struct cfg_section cfg_query_match_section;
extern const struct cfg_section cfg_origin_section;
extern const struct cfg_section cfg_outlier_section;
extern const struct cfg_section cfg_hash_policy_section;
extern const struct cfg_section cfg_hash_cookie_section;
extern const struct cfg_section cfg_tcp_weighted_section; /* listeners[].tcp_clusters[] */
extern const struct cfg_section cfg_sni_route_section;    /* listeners[].sni_routes[] */

/* Index of key in sec's table (the schema is static: a wrong key aborts). */
size_t cfg_field_index(const struct cfg_section *sec, const char *key);

/* Defaults of sec (and its nested sections) into obj. */
void cfg_schema_defaults(const struct cfg_section *sec, void *obj);
/* Reads mapping map into obj (defaults already set) at the current path. */
bool cfg_schema_walk(struct ld *ld, const struct cnode *map, const struct cfg_section *sec,
                     void *obj, size_t idx);

/* Error about field f of mapping map: at its key, or the mapping if absent. */
bool cfg_fail_field(struct ld *ld, const struct cnode *map, const struct cfg_field *fd,
                    const struct cfg_val *f, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ------------------------------------------------------------- sections */

bool cfg_listener_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                        size_t idx);
bool cfg_sni_route_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                         size_t idx);
bool cfg_vhost_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                     size_t idx);
bool cfg_route_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                     size_t idx);
bool cfg_route_cluster_set(struct ld *ld, const struct cnode *k, const struct cnode *v, void *obj);
bool cfg_path_match_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                          void *obj, size_t idx);
bool cfg_header_match_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                            void *obj, size_t idx);
bool cfg_header_present_set(struct ld *ld, const struct cnode *k, const struct cnode *v, void *obj);
bool cfg_query_match_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                           void *obj, size_t idx);
bool cfg_query_present_set(struct ld *ld, const struct cnode *k, const struct cnode *v, void *obj);
/* The match kind of each of the query match rows exact .. present. */
extern const enum tr_header_match_kind cfg_query_match_kinds[4];
bool cfg_cluster_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                       size_t idx);
bool cfg_origin_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                      size_t idx);
/* Local route actions. */
bool cfg_redirect_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                        size_t idx);
bool cfg_fault_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                     size_t idx);
bool cfg_fault_abort_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                           void *obj, size_t idx);
bool cfg_fault_grpc_status_set(struct ld *ld, const struct cnode *k, const struct cnode *v,
                               void *obj);
bool cfg_cors_origin_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                           void *obj, size_t idx);
bool cfg_cors_max_age_set(struct ld *ld, const struct cnode *k, const struct cnode *v, void *obj);
bool cfg_endpoint_address_set(struct ld *ld, const struct cnode *k, const struct cnode *v,
                              void *obj);
/* Outlier detection, consistent hashing (obj: the section's own struct). */
bool cfg_outlier_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f, void *obj,
                       size_t idx);
bool cfg_hash_policy_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                           void *obj, size_t idx);
bool cfg_hash_cookie_after(struct ld *ld, const struct cnode *map, const struct cfg_val *f,
                           void *obj, size_t idx);

/* ---------------------------------------------------------------- patch */

/* Splices partial updates (config/load.h) into the tree of the base text. */
bool cfg_apply_patches(struct ld *ld, struct cnode *root, const struct tr_config_patch *p,
                       size_t n);

/* ------------------------------------------------------------- validate */

/* Validates cfg; with ld (loading), errors are placed at the tree's nodes,
 * otherwise at the objects' locations and origins. */
bool cfg_validate(struct tr_config *cfg, struct ld *ld, char **err);

#endif
