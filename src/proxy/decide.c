#include "proxy/decide.h"

#include <stdio.h>
#include <string.h>

#include "cluster/cluster.h"
#include "filter/authz.h"
#include "net/sock.h"
#include "obs/metrics.h"
#include "proxy/session.h"
#include "runtime/worker.h"

void tr_decide(struct tr_session *s, tr_str host, tr_str path, tr_str method,
               const struct tr_str_pair *headers, uint32_t n_headers, struct tr_decision *d)
{
    struct tr_snapshot *snap = s->ws->snap;
    memset(d, 0, sizeof(*d));
    struct tr_route_request rr = {
        .host = host,
        .path = path,
        .method = method,
        .scheme =
            s->principal != NULL || s->down.ssl != NULL ? TR_STR_LIT("https") : TR_STR_LIT("http"),
        .headers = headers,
        .n_headers = n_headers,
    };
    const struct tr_route_cfg *route = tr_router_match(snap->routers[s->lcfg->route_table], &rr);
    const struct tr_authz *az = snap->authz[s->lidx];
    if (az != NULL) {
        tr_str p = path;
        const char *q = memchr(p.p, '?', p.len);
        if (q != NULL)
            p.len = (uint32_t)(q - p.p);
        if (tr_authz_eval(az, s->principal, method, p, NULL) == TR_AUTHZ_VERDICT_DENY) {
            *d = (struct tr_decision){
                .status = 403, .flags = TR_RF_RBAC, .body = "RBAC: access denied\n"};
            return;
        }
    }
    if (route == NULL) {
        *d = (struct tr_decision){.status = 404, .flags = TR_RF_NR};
        return;
    }
    d->route = route;
    d->response_edit = route->response_edit;
    if (route->direct_status != 0) {
        d->status = route->direct_status;
        d->flags = TR_RF_DI;
        d->body = route->direct_body;
        return;
    }
    int wi = tr_route_pick(route, tr_worker_rand(s->w));
    if (wi < 0) {
        d->status = 503;
        d->flags = TR_RF_UH;
        d->body = "no healthy upstream\n";
        return;
    }
    const struct tr_weighted_cluster_cfg *wc = &route->clusters[wi];
    d->cluster = &s->ws->clusters[wc->cluster];
    d->request_edit = wc->request_edit;
    d->response_edit = wc->response_edit;
}

const char *tr_upstream_error_body(char *buf, size_t size, const char *reason)
{
    snprintf(buf, size,
             "upstream connect error or disconnect/reset before headers. reset reason: %s\n",
             reason);
    return buf;
}

bool tr_session_adopt_current(struct tr_session *s)
{
    struct tr_wsnap *cur = s->w->ws;
    if (s->ws == cur)
        return true;
    const struct tr_config *cfg = cur->snap->cfg;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        if (!tr_sock_addr_equal(&l->addr.ss, &s->lcfg->addr.ss))
            continue;
        if (l->protocol == TR_LPROTO_TCP || l->tls_mode != s->lcfg->tls_mode)
            return false; /* the connection no longer fits the listener */
        struct tr_metric_labels old = s->labels;
        tr_wsnap_use(cur);
        tr_wsnap_release(s->ws);
        s->ws = cur;
        s->lcfg = l;
        s->lidx = (int)i;
        s->labels = cur->listener_labels[i];
        if (s->labels.reporter == TR_REPORTER_DESTINATION) {
            s->labels.mtls = old.mtls;
            s->labels.source_principal = old.source_principal;
        }
        return true;
    }
    return false;
}
