/* router/router.h: compiled route tables. Built once per config snapshot from
 * a tr_route_table_cfg; matching a request does no allocation and no string
 * building: domains are pre-sorted by kind, regexes are PCRE2 JIT-compiled at
 * build time, methods are pre-parsed. Immutable after build, so all worker
 * threads share one router without locks. */
#ifndef TR_ROUTER_H
#define TR_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "config/model.h"
#include "core/str.h"

struct tr_router;

/* A request as the router sees it. headers/n_headers are the request headers
 * (name/value slices, names in any case). host is the Host or :authority
 * value, possibly with a port. path is the request-target: paths are matched
 * up to '?', query parameter matches read what follows it. */
struct tr_route_request {
    tr_str host;
    tr_str path; /* origin-form target, query included */
    tr_str method;
    tr_str scheme; /* "http" or "https" as the listener saw the connection */
    const struct tr_str_pair *headers;
    uint32_t n_headers;
};

/* Same layout as struct tr_h1_header (name, value), so codecs can pass their
 * arrays without copying. */
struct tr_str_pair {
    tr_str name;
    tr_str value;
};

/* Build the router for route_tables[idx] of cfg. Returns NULL and a malloc'd
 * *err (with the route's "file:line:col: path:" prefix) on failure. The router
 * points into cfg: cfg must outlive it. */
struct tr_router *tr_router_build(const struct tr_config *cfg, size_t idx, char **err);
void tr_router_free(struct tr_router *r);

/* First matching route of the best matching virtual host, or NULL (404).
 * Virtual host selection: exact domain, then longest "*.suffix" wildcard,
 * then longest "prefix.*", then "*"; case-insensitive; a domain without a
 * port matches any port, a domain with a port only that port.
 * Header matches named :authority (or host), :scheme and :method read
 * host, scheme and method, whatever the protocol. Query parameter matches
 * compare names and values as sent (never percent-decoded), the first
 * occurrence of a name counting; the query is split at most once per call,
 * and only when a route that has such matches is tried. */
const struct tr_route_cfg *tr_router_match(const struct tr_router *r,
                                           const struct tr_route_request *req);

/* The path a matched request goes upstream with: head followed by tail,
 * slices of the route and of the request (nothing is copied, so no length
 * limit). A prefix route's rewrite replaces the matched prefix; an exact or
 * regex route's replaces the whole path and keeps the query (Istio's
 * rewrite.uri); rewrite.regex replaces every match of its pattern in the path
 * and keeps the query (Istio's uriRegexRewrite). Without a rewrite, head is
 * the path and tail is empty. */
struct tr_path_rewrite {
    tr_str head;
    tr_str tail;
    bool failed; /* a regex rewrite could not be made (longer than
                  * TR_REWRITE_PATH_MAX, no memory): the request is refused */
};
/* A regex rewrite's result lives in a per-thread buffer of this size, until
 * the thread's next rewrite (the callers copy it at once). */
#define TR_REWRITE_PATH_MAX 8192
struct tr_path_rewrite tr_route_rewrite_path(const struct tr_route_cfg *route, tr_str path);

/* Pick one of n weighted clusters with probability weight / total; rnd is a
 * uniformly distributed 32-bit random number supplied by the caller
 * (per-worker PRNG). Returns the entry's index in clusters, or -1 if no
 * weight is left. The one weighted pick: routes and TCP listeners
 * (listeners[].tcp_clusters) both use it. */
int tr_weighted_pick(const struct tr_weighted_cluster_cfg *clusters, size_t n, uint32_t rnd);
/* tr_weighted_pick over a route's clusters: the index of the entry in
 * route->clusters (its cluster, header edits...), or -1 (also for NULL). */
int tr_route_pick(const struct tr_route_cfg *route, uint32_t rnd);
/* The same pick as the cluster's index in the configuration, or -1. */
int tr_route_pick_cluster(const struct tr_route_cfg *route, uint32_t rnd);

#endif
