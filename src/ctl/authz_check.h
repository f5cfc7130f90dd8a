/* ctl/authz_check.h: `trellis ctl authz check`, the decision a workload's
 * proxy takes on one request, from its compiled model, with the proxy's own
 * evaluator (filter/authz.h): nothing runs. */
#ifndef TR_CTL_AUTHZ_CHECK_H
#define TR_CTL_AUTHZ_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/model.h"

struct tr_authz_check_request {
    const char *from;           /* the client's SPIFFE ID (spiffe:// optional); NULL: plaintext */
    const char *method;         /* "GET" */
    const char *path;           /* "/api/x?y" */
    const char *host;           /* the Host header; NULL: the listener's address */
    const char *const *headers; /* "Name=value" (or "Name: value") */
    size_t n_headers;
    uint32_t port;          /* the inbound port (listener inbound|PORT); 0: the first */
    const char *source_ip;  /* NULL: 127.0.0.1 */
    const char *sni;        /* NULL: none */
    const char *jwt_claims; /* a verified token's payload as JSON; NULL: no token */
    bool tcp;               /* a TCP connection rather than an HTTP request */
};

/* The answer as text or as one JSON object (keys: decision "ALLOW"|"DENY",
 * policy "NS/NAME" or null, rule index or null, action of the deciding
 * policy or null, reason, normalized_path, listener, audit). cfg must be a
 * validated model. Returns a malloc'd text (caller frees); *status: 0
 * answered, 1 failed, 2 bad request (the text says why). */
char *tr_ctl_authz_check(const struct tr_config *cfg, const struct tr_authz_check_request *q,
                         bool json, int *status);

#endif
