/* upstream/attempt.h: which endpoint a request (or a TCP connection) goes to,
 * first and after a connect failure.
 *
 * A connection that fails before any byte of the request left the proxy
 * (connect refused or timed out, TLS handshake failure, an HTTP/2 stream
 * the server refused unprocessed) did no work upstream, so the request goes
 * to another endpoint: at most TR_CONNECT_ATTEMPTS attempts in all (Istio's
 * default retry policy re-sends connect failures twice). HTTP requests follow
 * their route's retry policy (upstream/retry.h), which picks through
 * tr_attempt_retry; the TCP proxy retries connect failures with
 * tr_attempt_next. Every pick goes through here. */
#ifndef TR_UPSTREAM_ATTEMPT_H
#define TR_UPSTREAM_ATTEMPT_H

#include <stdint.h>

struct tr_worker;
struct tr_cluster_rt;
struct tr_endpoint_rt;

#define TR_CONNECT_ATTEMPTS 3

/* The first endpoint, among the healthy ones; sets *attempts to 1. NULL: none
 * is healthy (the caller answers 503 UH). */
struct tr_endpoint_rt *tr_attempt_first(struct tr_worker *w, struct tr_cluster_rt *c,
                                        uint8_t *attempts);

/* The endpoint for another attempt after the connection to failed (which the
 * pick avoids) failed before any request byte was sent; counts the attempt
 * and the retry metric. NULL: attempts are used up or no other endpoint
 * qualifies (the caller answers with the original failure, 503 UF). */
struct tr_endpoint_rt *tr_attempt_next(struct tr_worker *w, struct tr_cluster_rt *c,
                                       const struct tr_endpoint_rt *failed, uint8_t *attempts);

/* The endpoint for a retry (upstream/retry.h): another one than avoid when
 * one qualifies, else avoid itself if it is healthy. NULL: none is healthy. */
struct tr_endpoint_rt *tr_attempt_retry(struct tr_worker *w, struct tr_cluster_rt *c,
                                        const struct tr_endpoint_rt *avoid);

#endif
