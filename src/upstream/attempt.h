/* upstream/attempt.h: which endpoint a request (or a TCP connection) goes to,
 * first and after a connect failure.
 *
 * A connection that fails before any byte of the request left the proxy
 * (connect refused or timed out, TLS handshake failure, an HTTP/2 stream
 * the server refused unprocessed) did no work upstream, so the request goes
 * to another endpoint: at most TR_CONNECT_ATTEMPTS attempts in all (Istio's
 * default retry policy re-sends connect failures twice). HTTP/1.1 upstreams
 * (upstream/h1_client.h), HTTP/2 upstream streams (proxy/stream.c) and the
 * TCP proxy all decide through here, so the policy exists once. */
#ifndef TR_UPSTREAM_ATTEMPT_H
#define TR_UPSTREAM_ATTEMPT_H

#include <stdbool.h>
#include <stdint.h>

struct tr_worker;
struct tr_cluster_rt;
struct tr_endpoint_rt;

#define TR_CONNECT_ATTEMPTS 3

/* The first endpoint, among the healthy ones; sets *attempts to 1. hash: the
 * request's consistent-hash key (ring_hash, maglev; other policies ignore
 * it). overflow (NULL for TCP connections): the cluster's share of
 * circuit_breakers.max_requests is checked first. NULL: *overflow set, the
 * caller answers 503 UO; else none is healthy, 503 UH. */
struct tr_endpoint_rt *tr_attempt_first(struct tr_worker *w, struct tr_cluster_rt *c, uint64_t hash,
                                        uint8_t *attempts, bool *overflow);

/* The endpoint for another attempt after the connection to failed (which the
 * pick avoids) failed before any request byte was sent; counts the attempt
 * and the retry metric. NULL: attempts are used up or no other endpoint
 * qualifies (the caller answers with the original failure, 503 UF). */
struct tr_endpoint_rt *tr_attempt_next(struct tr_worker *w, struct tr_cluster_rt *c, uint64_t hash,
                                       const struct tr_endpoint_rt *failed, uint8_t *attempts);

#endif
