/* upstream/jwks_fetch.h: JSON Web Key Sets fetched from a rule's jwks_uri
 * (request_authentication; Istio's jwksUri), per worker.
 *
 * Each worker fetches for itself, in the background: one HTTP/1.1 GET per
 * rule with a jwks_uri through the rule's cluster (upstream/h1_client.h,
 * the worker's pools), when a worker snapshot is made and every
 * jwks_uri.refresh after a success. A 200 response whose body (at most
 * TR_JWT_MAX_JWKS bytes) is a usable key set (filter/jwt.h) replaces the
 * rule's keys for the requests that follow; anything else keeps the last
 * keys, is logged once per run of failures and is tried again after a
 * backoff (1s, doubling, at most refresh). Fetches are counted by result
 * (obs/metrics.h, trellis_jwks_fetches_total).
 *
 * The keys live in the worker snapshot (runtime/worker.h, struct tr_wsnap)
 * and only its worker thread touches them: the request path reads them
 * (tr_jwks_fetched) with no lock, and a swap frees the old set at once (no
 * verification is ever in progress across events). A new worker snapshot
 * takes over the last good keys and the schedule of the one before it, for
 * the same listener, issuer, URL and cluster: a reload or a DNS update
 * neither loses keys nor fetches again early.
 *
 * Life: tr_jwks_fetch_new with the worker snapshot (the first fetch goes
 * after the current event batch), tr_jwks_fetch_stop when it is retired
 * (the exchange in flight is abandoned, its connection released), and
 * tr_jwks_fetch_free when it is freed (the keys go). One worker thread. */
#ifndef TR_UPSTREAM_JWKS_FETCH_H
#define TR_UPSTREAM_JWKS_FETCH_H

struct tr_wsnap;
struct tr_jwks;
struct tr_jwks_fetch;

/* The fetchers of ws's rules with a jwks_uri, taking over from prev's (may
 * be NULL). NULL when there are none, or memory ran out (then the rules
 * keep their inline keys only; logged). */
struct tr_jwks_fetch *tr_jwks_fetch_new(struct tr_wsnap *ws, const struct tr_jwks_fetch *prev);
void tr_jwks_fetch_stop(struct tr_jwks_fetch *f);
void tr_jwks_fetch_free(struct tr_jwks_fetch *f);

/* Listener lidx's fetched keys, per rule (an entry is NULL until its
 * first fetch succeeds, and for rules without jwks_uri); NULL: none. */
struct tr_jwks *const *tr_jwks_fetched(const struct tr_jwks_fetch *f, int lidx);

#endif
