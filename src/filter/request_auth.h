/* filter/request_auth.h: what request authentication (JWT, RequestAuthentication)
 * established about a request, as authorization reads it. The JWT filter
 * fills one per request; authorization only reads it. Both sides depend on
 * this header alone, so neither links against the other.
 *
 * Lifetime: everything points into the request's own storage (the verified
 * token and its decoded payload) and is valid until the request ends. */
#ifndef TR_FILTER_REQUEST_AUTH_H
#define TR_FILTER_REQUEST_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/str.h"

struct tr_request_auth {
    /* A token was presented and verified. When false, the request carries
     * no verified token (a missing token; an invalid one never gets this
     * far, it is answered 401) and every other field is empty. */
    bool authenticated;
    tr_str principal;        /* "<iss>/<sub>", Istio's request.auth.principal */
    tr_str presenter;        /* the azp claim, or empty */
    const tr_str *audiences; /* the aud claim (a string or a list) */
    size_t n_audiences;
    /* Claim lookup for request.auth.claims[a][b]...: path[0..depth) names
     * nested object keys. Writes up to max string values to out (a string
     * claim gives one, a list of strings gives each, other types none) and
     * returns how many the claim holds (may exceed max). NULL when there is
     * no token. */
    size_t (*claim)(const void *claims, const tr_str *path, size_t depth, tr_str *out, size_t max);
    const void *claims;
};

#endif
