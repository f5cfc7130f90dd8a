/* admin/admin.h: the admin endpoint, on the main thread's loop, loopback only.
 *   GET  /ready               200 when serving, 503 before start and while draining
 *   GET  /stats/prometheus    metrics, Prometheus text format
 *   GET  /config_dump         the running configuration model as JSON
 *   GET  /logging             current level; POST /logging?level=debug changes it
 * One request per connection; requests are parsed by the same strict codec as
 * the data plane. */
#ifndef TR_ADMIN_H
#define TR_ADMIN_H

#include "config/model.h"
#include "event/loop.h"

struct tr_admin;

struct tr_admin *tr_admin_start(struct tr_loop *loop, const struct tr_admin_cfg *cfg, char **err);

#endif
