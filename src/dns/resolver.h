/* dns/resolver.h: the proxy's own DNS client for cluster endpoints given by
 * name (docs/config.md, clusters[].dns and resolver).
 *
 * It runs on the main thread's event loop, never on a worker's: c-ares
 * (asynchronous, no thread) reports the sockets it opens through its socket
 * state callback, and they are registered with the loop (event/loop.h);
 * its query timeouts are one loop timer. A lookup is one (name, family)
 * pair, shared by every cluster endpoint that names it; each is looked up
 * again after min(TTL, refresh), at least 1 s after its answer
 * (dns/answers.h). A failed lookup keeps the last good answer and is
 * retried with a back-off; an answer without addresses (NXDOMAIN, NODATA)
 * replaces it. When answers change, a new table (dns/answers.h) is
 * published after a short coalescing delay and the owner's callback wakes
 * the workers, which rebuild their cluster views from it as they do for a
 * configuration update (cluster/cluster.h): addresses that remain keep
 * their endpoints and connections.
 *
 * Bounds: at most TR_RESOLVER_MAX_IN_FLIGHT lookups at once (the rest wait
 * in a queue), TR_DNS_MAX_ADDRS addresses per answer.
 */
#ifndef TR_DNS_RESOLVER_H
#define TR_DNS_RESOLVER_H

#include <stdbool.h>

#include "config/model.h"
#include "event/loop.h"

#define TR_RESOLVER_MAX_IN_FLIGHT    256u
/* Answers arriving within this window go out in one table. */
#define TR_RESOLVER_PUBLISH_DELAY_MS 20u

struct tr_resolver;

/* Called on the loop after a new table was published (dns/answers.h). */
typedef void (*tr_resolver_published_cb)(void *arg);

/* A resolver on loop (its thread only); NULL when out of memory. */
struct tr_resolver *tr_resolver_new(struct tr_loop *loop, tr_resolver_published_cb published,
                                    void *arg);

/* Make the set of lookups match cfg's endpoint names, after cfg was
 * published: new names are looked up now, names that remain keep their
 * answers and schedules, names gone are dropped from the next table. A
 * change of cfg->resolver starts a new c-ares channel and looks every name
 * up again (answers are kept meanwhile). Returns 0, or -1 with *err
 * (malloc'd) when the channel cannot be made (the names then wait for the
 * next sync). */
int tr_resolver_sync(struct tr_resolver *r, const struct tr_config *cfg, char **err);

/* Every name has had its first lookup (answered or failed) and the table
 * with those answers is published. True at once without names. */
bool tr_resolver_settled(const struct tr_resolver *r);

/* Cancels everything (no callback) and frees r. NULL is fine. */
void tr_resolver_free(struct tr_resolver *r);

#endif
