/* upstream/attempt.h: which endpoint a request (or a TCP connection) goes to:
 * the first pick, and the pick for another try.
 *
 * Picks skip endpoints in connect back-off (cluster/cluster.h). An HTTP
 * request that failed goes again as its route's retry policy says
 * (upstream/retry.h), to the endpoint tr_attempt_retry picks: another one
 * than the failed one when one qualifies. A TCP connection that failed
 * before any byte left goes to another endpoint at once, at most
 * TR_CONNECT_ATTEMPTS attempts in all (tr_attempt_next). */
#ifndef TR_UPSTREAM_ATTEMPT_H
#define TR_UPSTREAM_ATTEMPT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct tr_worker;
struct tr_cluster_rt;
struct tr_endpoint_rt;
struct tr_pick_avoid;

#define TR_CONNECT_ATTEMPTS 3

/* The first endpoint, among the healthy ones; sets *attempts to 1. hash: the
 * request's consistent-hash key (ring_hash, maglev; other policies ignore
 * it). orig: the original destination of the downstream connection (NULL:
 * it was not captured), the endpoint of an original_destination cluster.
 * overflow (NULL for TCP connections): the cluster's share of
 * circuit_breakers.max_requests is checked first. NULL: *overflow set, the
 * caller answers 503 UO; else none is healthy, 503 UH. */
struct tr_endpoint_rt *tr_attempt_first(struct tr_worker *w, struct tr_cluster_rt *c, uint64_t hash,
                                        const struct sockaddr_storage *orig, uint8_t *attempts,
                                        bool *overflow);

/* The endpoint for another attempt after the connection to failed (which the
 * pick avoids) failed before any request byte was sent; counts the attempt
 * and the retry metric. NULL: attempts are used up or no other endpoint
 * qualifies (the caller answers with the original failure, 503 UF). */
struct tr_endpoint_rt *tr_attempt_next(struct tr_worker *w, struct tr_cluster_rt *c, uint64_t hash,
                                       const struct tr_endpoint_rt *failed, uint8_t *attempts);

/* The endpoint for a retry (upstream/retry.h), a new upstream request: the
 * circuit breakers admit it (else NULL with *overflow set: 503 UO), then
 * one that avoid leaves out of the pick (cluster/cluster.h) when one
 * qualifies, else any healthy one (the failed endpoint itself included).
 * NULL without *overflow: none is healthy. hash: as for tr_attempt_first. */
struct tr_endpoint_rt *tr_attempt_retry(struct tr_worker *w, struct tr_cluster_rt *c, uint64_t hash,
                                        const struct sockaddr_storage *orig,
                                        const struct tr_pick_avoid *avoid, bool *overflow);

#endif
