/* upstream/mirror.h: shadow copies of requests (a route's `mirrors`, Istio's
 * mirror / mirrors with mirrorPercentage), fire and forget.
 *
 * A shadow is one detached HTTP/1.1 exchange with its own small state: a
 * copy of the request as it went to the primary upstream (the same head,
 * Host included: Istio >= 1.28 no longer appends "-shadow", and neither do
 * we; the same body), sent to a mirror cluster through the worker's pools
 * (upstream/h1_client.h). Its response is read to its end, so the pooled
 * connection is reused, and dropped; how it ended is only counted
 * (trellis_mirror_requests_total{result}). The client never waits for it.
 *
 * Life of a shadow:
 *   - made when the request is routed (tr_mirrors_start_h1 from the
 *     HTTP/1.1 byte path's rewritten head, tr_mirrors_start_fields from a
 *     stream's header list), one per mirror the route's percentages pick,
 *     and kept on a list the request owns;
 *   - the body is copied while it passes (tr_mirrors_body, or
 *     tr_mirrors_data and tr_mirrors_trailers to frame a stream's DATA), up
 *     to TR_MIRROR_MAX_BODY: a shadow whose body outgrows it is dropped
 *     (body_too_large);
 *   - once the whole request passed, tr_mirrors_launch hands every shadow
 *     over to the worker, which sends it after the current event batch
 *     (never on the request path's stack); a request that ends before its
 *     body did drops them (tr_mirrors_drop: incomplete);
 *   - it ends with its response, a failure, or its deadline: the route's
 *     timeout, or the listener's idle timeout without one.
 * At most TR_MIRROR_MAX_IN_FLIGHT shadows live per worker (made ones
 * included); beyond that requests are not mirrored (overflow). gRPC
 * requests (and requests that upgrade their connection) are not mirrored
 * (unsupported): shadows speak HTTP/1.1, and the loader refuses a mirror
 * cluster that speaks HTTP/2.
 *
 * Ownership: the request owns its list until launch or drop; a launched
 * shadow owns itself (on the worker's list, w->mirrors) and holds a use of
 * the worker snapshot its cluster belongs to. One worker thread.
 */
#ifndef TR_UPSTREAM_MIRROR_H
#define TR_UPSTREAM_MIRROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/model.h"

struct tr_worker;
struct tr_wsnap;
struct tr_mirror;
struct tr_h2_header;

#define TR_MIRROR_MAX_BODY      (64u * 1024u) /* body bytes a shadow carries */
#define TR_MIRROR_MAX_IN_FLIGHT 256u          /* shadows alive per worker */

/* The shadows of a request routed by route in ws (NULL when it has none or
 * none was picked: *list stays NULL). head: the request head as the byte
 * path sends it upstream. timeout_ms: the shadow exchange's deadline. */
void tr_mirrors_start_h1(struct tr_mirror **list, struct tr_worker *w, struct tr_wsnap *ws,
                         const struct tr_route_cfg *route, const char *head, uint32_t head_len,
                         uint64_t timeout_ms);
/* The same from a stream's upstream header list (HTTP/2 form); has_body: a
 * body follows (sent chunked unless the list has content-length). */
void tr_mirrors_start_fields(struct tr_mirror **list, struct tr_worker *w, struct tr_wsnap *ws,
                             const struct tr_route_cfg *route, const struct tr_h2_header *v,
                             size_t n, bool has_body, uint64_t timeout_ms);
/* A route whose request is not mirrored for want of support (gRPC, an
 * upgrade): counted once per mirror it names. */
void tr_mirrors_unsupported(struct tr_worker *w, const struct tr_route_cfg *route);

/* Body bytes, framed as the head says (the byte path's, verbatim). */
void tr_mirrors_body(struct tr_mirror **list, const void *p, size_t len);
/* A stream's DATA (framed here), its end, its trailers. */
void tr_mirrors_data(struct tr_mirror **list, const void *p, size_t len, bool end);
void tr_mirrors_trailers(struct tr_mirror **list, const struct tr_h2_header *h, size_t n);

/* The whole request passed: the shadows go (after this event batch). */
void tr_mirrors_launch(struct tr_mirror **list);
/* The request ended before its body did: the shadows never go. */
void tr_mirrors_drop(struct tr_mirror **list);

#endif
