/* filter/jwt.h: request authentication with JSON Web Tokens (RFC 7519,
 * compact JWS of RFC 7515), Istio's RequestAuthentication as Envoy's
 * jwt_authn filter enforces it.
 *
 * Config time: tr_jwt_authn_build() turns a listener's rules
 * (config/model.h, struct tr_request_authn_cfg) into immutable state shared
 * by all workers (keys fetched from a rule's jwks_uri are each worker's,
 * upstream/jwks_fetch.h, passed in by tr_jwt_authenticate_keys), with every JWKS key made an OpenSSL EVP_PKEY there (RSA
 * n/e, EC P-256/P-384 x/y, OKP Ed25519 x). Request time:
 * tr_jwt_authenticate() finds the token, checks it and fills a struct
 * tr_request_auth (filter/request_auth.h) in fixed per-request storage (no
 * allocation but OpenSSL's verify context).
 *
 * Accepted algorithms: RS256/384/512, PS256/384/512, ES256/384, EdDSA
 * (Ed25519). "none" and HMAC (HS*) are refused: a key set is public, so an
 * HMAC "key" from it proves nothing. exp and nbf are checked with
 * TR_JWT_CLOCK_SKEW_S of tolerance either way. */
#ifndef TR_FILTER_JWT_H
#define TR_FILTER_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/model.h"
#include "core/json.h"
#include "core/str.h"
#include "filter/request_auth.h"
#include "router/router.h"

#define TR_JWT_CLOCK_SKEW_S    60
#define TR_JWT_MAX_TOKEN       8192 /* bytes of a compact token */
#define TR_JWT_MAX_JSON        1024 /* JSON values of a token: header and payload */
#define TR_JWT_MAX_HEADER_JSON 64   /* of them, the header's at most */
#define TR_JWT_MAX_AUDIENCES   16
#define TR_JWT_MAX_PRINCIPAL   1024
#define TR_JWT_MAX_OUTPUTS     17 /* the payload header and 16 claim headers */
#define TR_JWT_MAX_JWKS        (64 * 1024)
#define TR_JWT_MAX_KEYS        32
#define TR_JWT_MAX_EDIT        512 /* fields of a route's edit with the token's */

struct tr_jwt_authn;
struct tr_jwks;

/* A JSON Web Key Set: the usable signature keys of text (keys of other
 * types, or with "use" other than "sig", are skipped; a set with no usable
 * key is an error). NULL with a malloc'd *err. */
struct tr_jwks *tr_jwks_parse(const char *text, size_t len, char **err);
void tr_jwks_free(struct tr_jwks *k);
size_t tr_jwks_count(const struct tr_jwks *k);

/* NULL without error for no rules. On error NULL and a malloc'd *err that
 * names the rule ("rules[i].jwks: ..."). */
struct tr_jwt_authn *tr_jwt_authn_build(const struct tr_request_authn_cfg *cfg, char **err);
void tr_jwt_authn_free(struct tr_jwt_authn *a);

enum tr_jwt_status {
    TR_JWT_MISSING = 0, /* no token in any location: unauthenticated, not refused */
    TR_JWT_VERIFIED,
    TR_JWT_INVALID, /* answer 401 */
};

/* A field the request sent upstream gets (value empty: removed only). */
struct tr_jwt_field {
    tr_str name, value;
};

/* One request's storage: the verified token's decoded parts and what the
 * request carries on. Large (about 40 KiB): a worker keeps one and reuses
 * it; everything in auth and fields is valid until the next call. */
struct tr_jwt_request {
    char header[TR_JWT_MAX_TOKEN], payload[TR_JWT_MAX_TOKEN];
    struct tr_json_tok tok[TR_JWT_MAX_JSON];
    struct tr_json claims;
    tr_str audiences[TR_JWT_MAX_AUDIENCES];
    char principal[TR_JWT_MAX_PRINCIPAL];
    struct tr_request_auth auth;
    /* For the request sent upstream: fields to drop (the token's header
     * when it is not forwarded, and every output field's name, so a client
     * cannot supply them) and fields to add. */
    tr_str drop[TR_JWT_MAX_OUTPUTS + 1];
    size_t n_drop;
    struct tr_jwt_field add[TR_JWT_MAX_OUTPUTS];
    size_t n_add;
    /* tr_jwt_request_edit's result and its arrays. */
    struct tr_header_edit edit;
    struct tr_header_edit_name edit_drop[TR_JWT_MAX_EDIT];
    struct tr_header_edit_field edit_emit[TR_JWT_MAX_EDIT];
    /* A 401's WWW-Authenticate value (tr_jwt_challenge). */
    char challenge[512];
};

/* target: the request-target (its query is searched for from_params);
 * now: Unix time in seconds. *why: a constant reason when INVALID (for the
 * log and the WWW-Authenticate error_description). */
enum tr_jwt_status tr_jwt_authenticate(const struct tr_jwt_authn *a, tr_str target,
                                       const struct tr_str_pair *headers, uint32_t n_headers,
                                       int64_t now, struct tr_jwt_request *rq, const char **why);

/* The same with keys fetched for the rules (jwks_uri; upstream/jwks_fetch.h):
 * fetched[i], when fetched and it are not NULL, replaces rule i's inline
 * keys. A rule with neither has no key: its tokens are invalid. */
enum tr_jwt_status tr_jwt_authenticate_keys(const struct tr_jwt_authn *a,
                                            struct tr_jwks *const *fetched, tr_str target,
                                            const struct tr_str_pair *headers, uint32_t n_headers,
                                            int64_t now, struct tr_jwt_request *rq,
                                            const char **why);

/* The header edit of the request sent upstream: base (the route's, may be
 * NULL) with the token's drops and additions (the drops first: a route's
 * own field of an output's name is replaced). Returns base when the token
 * changes nothing; else an edit in rq, valid as rq is. */
const struct tr_header_edit *tr_jwt_request_edit(struct tr_jwt_request *rq,
                                                 const struct tr_header_edit *base);

/* The WWW-Authenticate value of a 401, as Envoy's jwt_authn sends it:
 * Bearer realm="<scheme>://<host><path without query>", error="invalid_token".
 * Written into rq->challenge (cut to fit); returns it as a slice. */
tr_str tr_jwt_challenge(struct tr_jwt_request *rq, tr_str scheme, tr_str host, tr_str target);

#endif
