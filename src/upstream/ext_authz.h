/* upstream/ext_authz.h: the check a CUSTOM authorization policy asks of an
 * HTTP external authorizer (model.h, struct tr_ext_authz_cfg; Istio's
 * envoyExtAuthzHttp), for one request.
 *
 * Which requests need one is decided per request by the listener's compiled
 * policies (filter/authz.h, tr_authz_custom; a listener without CUSTOM
 * policies never asks). proxy/decide.c says "check first" (struct
 * tr_decision, ext_authz); the caller (the HTTP/1.1 session or a stream)
 * starts the check here and holds the request, its body unread, until the
 * check is over; then it decides the request again with the check's
 * outcome (tr_decide), which either answers it with the authorizer's reply
 * or lets it go on to DENY and ALLOW policies and routing, which see the
 * request with the authorizer's fields (tr_ext_authz_request_view).
 *
 * The check is one HTTP/1.1 exchange through the authorizer's cluster and
 * the worker's pools (upstream/h1_client.h): the request's method, the
 * path_prefix followed by the normalised request target, Host, the request
 * fields that check_headers names and the check_add fields, Content-Length
 * 0 and no body. Its response is read to its end: the status, the fields
 * (at most the listener limits' header bytes) and the body, of which the
 * first TR_EXT_AUTHZ_MAX_BODY bytes are kept. The check ends with that
 * response, a failure (no endpoint, connect, reset, invalid response) or
 * the authorizer's timeout; then the owner's done callback runs, after the
 * event batch it ended in (never on the caller's stack).
 *
 * Outcome (counted: trellis_ext_authz_checks_total{result}):
 *   - a 2xx: allowed; the upstream_on_allow fields of the response replace
 *     the request's fields of those names, the downstream_on_allow ones the
 *     response's;
 *   - no response, or a 5xx, with fail_open: allowed, nothing added;
 *   - no response without fail_open: status_on_error, no body;
 *   - any other status: the client gets it, the kept body and the
 *     downstream_on_deny fields (every field but Host, framing and
 *     hop-by-hop ones when the list is empty).
 *
 * Ownership: the request owns its check (tr_ext_authz_free, also while in
 * flight: the exchange is abandoned, its connection closed); the check
 * holds a use of the worker snapshot its cluster belongs to. The edits
 * returned live as long as the check. One worker thread.
 */
#ifndef TR_UPSTREAM_EXT_AUTHZ_H
#define TR_UPSTREAM_EXT_AUTHZ_H

#include <stdbool.h>
#include <stdint.h>

#include "config/model.h"
#include "core/str.h"

struct tr_worker;
struct tr_wsnap;
struct tr_str_pair;
struct tr_ext_authz_check;

typedef void (*tr_ext_authz_done_cb)(void *owner);

/* Starts the check of authorizer `provider` (index into the snapshot's
 * tr_config.ext_authz) for one request: target is the normalised request
 * target (query included), headers the request's fields (any case). NULL
 * when memory ran out (the caller answers 503). */
struct tr_ext_authz_check *tr_ext_authz_start(struct tr_worker *w, struct tr_wsnap *ws,
                                              int provider, tr_str method, tr_str host,
                                              tr_str target, const struct tr_str_pair *headers,
                                              uint32_t n_headers, tr_ext_authz_done_cb done,
                                              void *owner);

/* Abandons a check in flight, or frees a finished one. NULL: nothing. */
void tr_ext_authz_free(struct tr_ext_authz_check *c);

/* The outcome of a finished check: true when the request goes on; false:
 * answer it with *status and *body (a C string, may be empty). */
bool tr_ext_authz_allowed(const struct tr_ext_authz_check *c, uint16_t *status, const char **body);

/* The check got no usable answer (a failure, a timeout; or a 5xx taken
 * as one by fail_open): the outcome is fail_open's or status_on_error. */
bool tr_ext_authz_failed(const struct tr_ext_authz_check *c);

/* The header edits of an allowed request: base (NULL: none) followed by the
 * authorizer's fields for the request sent upstream, and for the response.
 * For a denial, the response edit is the fields of the authorizer's reply
 * (base is not used: the authorizer's answer replaces the route's). */
const struct tr_header_edit *tr_ext_authz_request_edit(struct tr_ext_authz_check *c,
                                                       const struct tr_header_edit *base);
const struct tr_header_edit *tr_ext_authz_response_edit(struct tr_ext_authz_check *c,
                                                        const struct tr_header_edit *base);

/* The request's fields as DENY and ALLOW policies and routing see them
 * after an allowed check (Envoy's order: ext_authz before RBAC and the
 * router): headers with the authorizer's upstream_on_allow fields replacing
 * the fields of their names, as the request sent upstream carries them
 * (tr_ext_authz_request_edit). *out is headers itself when nothing changes,
 * else an array the check owns (until the next call or tr_ext_authz_free);
 * NULL when memory ran out (the caller answers 503). Returns the count. */
uint32_t tr_ext_authz_request_view(struct tr_ext_authz_check *c, const struct tr_str_pair *headers,
                                   uint32_t n_headers, const struct tr_str_pair **out);

/* Does a header pattern list (names, "prefix*", "*suffix", "*") match name
 * (any case)? Exposed for the unit tests. */
bool tr_ext_authz_name_match(const char *const *pats, size_t n, tr_str name);

#endif
