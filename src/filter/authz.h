/* filter/authz.h: compiled authorization rules of a listener (see
 * tr_authz_cfg in config/model.h for the semantics). Immutable, shared by all
 * workers; evaluation does no allocation. */
#ifndef TR_FILTER_AUTHZ_H
#define TR_FILTER_AUTHZ_H

#include <stdbool.h>

#include "config/model.h"
#include "core/str.h"

struct tr_authz;

enum tr_authz_verdict { TR_AUTHZ_VERDICT_ALLOW = 0, TR_AUTHZ_VERDICT_DENY };

/* NULL (no error) is returned for a config with no rules: callers skip
 * evaluation entirely. On error returns NULL and sets malloc'd *err. */
struct tr_authz *tr_authz_build(const struct tr_authz_cfg *cfg, char **err);
void tr_authz_free(struct tr_authz *a);

/* principal: the peer's verified SPIFFE ID, or NULL for plaintext peers.
 * method/path: the request's (path without query); for TCP pass empty
 * slices: rules with methods or paths never match a TCP connection. If
 * matched_rule is non-NULL it receives the index of the deciding rule or -1. */
enum tr_authz_verdict tr_authz_eval(const struct tr_authz *a, const char *principal, tr_str method,
                                    tr_str path, int *matched_rule);

#endif
