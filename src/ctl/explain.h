/* ctl/explain.h: `trellis ctl route explain`, which request goes where, from
 * a compiled model and the resources it came from. */
#ifndef TR_CTL_EXPLAIN_H
#define TR_CTL_EXPLAIN_H

#include <stdbool.h>
#include <stddef.h>

#include "config/model.h"
#include "resource/resource.h"

struct tr_explain_request {
    const char *url;            /* http://HOST[:PORT]/PATH?QUERY */
    const char *method;         /* "GET" */
    const char *const *headers; /* "Name: value" */
    size_t n_headers;
};

/* The answer as text or as one JSON object (keys: virtual_service, rule,
 * rule_index, route, why, destinations, endpoints, rewrite, redirect,
 * direct_response, fault, timeout_ms, retries, mirrors, load_balancer,
 * connection_pool, outlier_detection, tls). cfg must be validated (the
 * route tables' indexes are used). Returns a malloc'd text (caller frees);
 * *status: 0 answered, 1 failed, 2 bad request. */
char *tr_ctl_route_explain(const struct tr_config *cfg, const struct tr_rset *rs,
                           const struct tr_explain_request *q, bool json, int *status);

#endif
