/* admin/admin.h: the admin endpoint, on the main thread's loop.
 *
 * Two doors. The loopback TCP address serves what probes and scrapers need,
 * and nothing else, because everything on loopback (in a pod: the
 * application too) can reach it:
 *   GET  /ready               200 when serving, 503 before start and while draining
 *   GET  /stats/prometheus    metrics, Prometheus text format
 * The Unix socket (admin.socket, created mode 0600: only our user, and root,
 * may connect) serves those and the privileged calls:
 *   GET  /config_dump         the running configuration model as JSON
 *   GET  /logging             current level; POST /logging?level=debug changes it
 * Over TCP the privileged calls get 403 with a body naming the socket (or
 * saying none is configured).
 *
 * The socket file: one left by a dead process is replaced (only if it is a
 * socket nobody answers on); anything else at the path is an error. It is
 * created before listen(), chmod 0600 in between, so no connection is ever
 * accepted under wider permissions. tr_admin_stop() removes it (if it is
 * still ours).
 *
 * One request per connection; requests are parsed by the same strict codec as
 * the data plane. */
#ifndef TR_ADMIN_H
#define TR_ADMIN_H

#include "config/model.h"
#include "event/loop.h"

struct tr_admin;

/* Starts listening; NULL and *err (malloc'd) on failure. cfg is copied. */
struct tr_admin *tr_admin_start(struct tr_loop *loop, const struct tr_admin_cfg *cfg, char **err);
/* Stops listening, removes the socket file, frees a (NULL is fine). Call at
 * exit: connections still open are not tracked. */
void tr_admin_stop(struct tr_admin *a);

#endif
