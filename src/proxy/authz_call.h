/* proxy/authz_call.h: what the proxy's call sites (decide.c for HTTP
 * requests, stream.c for CONNECT, tcp_session.c for connections) share to
 * ask authorization: the request's connection attributes, and one place
 * that decides and logs the deciding policy and rule. */
#ifndef TR_PROXY_AUTHZ_CALL_H
#define TR_PROXY_AUTHZ_CALL_H

#include <stdbool.h>

#include "filter/authz.h"

struct tr_session;

/* The connection's part of a request: peer principal and address, the
 * listener's address and port, the TLS server name. */
void tr_authz_conn_attrs(const struct tr_session *s, struct tr_authz_request *rq);

/* Decides rq with az (NULL: allowed); a denial is logged naming the policy
 * and rule that decided (or the default), an AUDIT match too. True when
 * denied; then *policy and *rule name the policy that denied (NULL and -1:
 * a default). The name lives as long as az. what: "request" or "TCP
 * connection", for the log line. */
bool tr_authz_denied(const struct tr_session *s, const struct tr_authz *az,
                     const struct tr_authz_request *rq, const char *what, const char **policy,
                     int *rule);

#endif
