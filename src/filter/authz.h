/* filter/authz.h: the compiled authorization policies of a listener (see
 * tr_authz_cfg in config/model.h and docs/config.md for the semantics).
 * Immutable, shared by all workers; evaluation does no allocation. The proxy
 * and `trellis ctl authz check` both decide with tr_authz_decide. */
#ifndef TR_FILTER_AUTHZ_H
#define TR_FILTER_AUTHZ_H

#include <stdbool.h>
#include <stdint.h>

#include "config/model.h"
#include "core/authz_syntax.h"
#include "core/str.h"
#include "filter/request_auth.h"

struct tr_authz;
struct tr_str_pair; /* router/router.h: a header name and value */

enum tr_authz_verdict { TR_AUTHZ_VERDICT_ALLOW = 0, TR_AUTHZ_VERDICT_DENY };

/* What decided, for messages, logs and `authz check`. */
enum tr_authz_reason {
    TR_AZR_NO_POLICY = 0,    /* nothing configured: allowed */
    TR_AZR_DENY_MATCHED,     /* a DENY policy's rule matched */
    TR_AZR_ALLOW_MATCHED,    /* an ALLOW policy's rule matched */
    TR_AZR_NO_ALLOW_POLICY,  /* no DENY matched, no ALLOW policy exists */
    TR_AZR_NO_ALLOW_MATCHED, /* ALLOW policies exist, none matched */
};

/* One request (or TCP connection) as authorization sees it. */
struct tr_authz_request {
    const char *principal;  /* the peer's verified SPIFFE ID, NULL for plaintext */
    struct tr_ip source_ip; /* the connection's peer */
    struct tr_ip remote_ip; /* the original client (no trusted XFF hops: the peer) */
    struct tr_ip dest_ip;   /* the address the connection came in on */
    uint16_t dest_port;
    tr_str sni;                /* TLS server name, or empty */
    bool http;                 /* false: a TCP connection (HTTP-only fields unknown) */
    tr_str method, host, path; /* HTTP: path normalised, without query */
    const struct tr_str_pair *headers;
    uint32_t n_headers;
    const struct tr_request_auth *auth; /* NULL: no request authentication ran */
};

struct tr_authz_result {
    enum tr_authz_verdict verdict;
    enum tr_authz_reason reason;
    int policy; /* the deciding policy's index (tr_authz_policy_name), -1: a default */
    int rule;   /* its rule's index, -1 with policy */
    int audit_policy, audit_rule; /* the first AUDIT policy that matched, else -1 */
};

/* NULL (no error) is returned for a config with no rules and no policies:
 * callers skip evaluation entirely. On error returns NULL and sets
 * malloc'd *err. */
struct tr_authz *tr_authz_build(const struct tr_authz_cfg *cfg, char **err);
void tr_authz_free(struct tr_authz *a);

/* a NULL: allowed, reason TR_AZR_NO_POLICY. Policies that can only match
 * requests of other principals, or HTTP requests of other paths, are
 * skipped through indexes built with a (authz.c, struct az_slot and struct
 * az_pslot): the result is the scan's. */
enum tr_authz_verdict tr_authz_decide(const struct tr_authz *a, const struct tr_authz_request *rq,
                                      struct tr_authz_result *out);
/* The same decision by trying every policy in order, without the index:
 * what tests and benchmarks compare tr_authz_decide with. */
enum tr_authz_verdict tr_authz_decide_scan(const struct tr_authz *a,
                                           const struct tr_authz_request *rq,
                                           struct tr_authz_result *out);

/* CUSTOM policies (external authorizers): has_custom says whether any
 * exists (else no request needs a check); tr_authz_custom returns the
 * provider (index into tr_config.ext_authz) of the first CUSTOM policy whose
 * rules match rq, with that policy and rule, or -1 when none matches.
 * tr_authz_decide ignores CUSTOM policies: the check comes first. */
bool tr_authz_has_custom(const struct tr_authz *a);
int tr_authz_custom(const struct tr_authz *a, const struct tr_authz_request *rq, int *policy,
                    int *rule);

/* Policies are numbered with the older `rules` first (named "rules[i]"),
 * then `policies` in order. */
const char *tr_authz_policy_name(const struct tr_authz *a, int policy);
enum tr_authz_action tr_authz_policy_action(const struct tr_authz *a, int policy);
const char *tr_authz_reason_name(enum tr_authz_reason r);

/* The older call: principal, method and path only (empty method: TCP). If
 * matched_rule is non-NULL it receives the deciding policy's index or -1. */
enum tr_authz_verdict tr_authz_eval(const struct tr_authz *a, const char *principal, tr_str method,
                                    tr_str path, int *matched_rule);

#endif
