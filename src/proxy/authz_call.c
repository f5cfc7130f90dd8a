/* proxy/authz_call.c: see authz_call.h. */
#include "proxy/authz_call.h"

#include <openssl/ssl.h>
#include <string.h>

#include "core/log.h"
#include "proxy/session.h"

void tr_authz_conn_attrs(const struct tr_session *s, struct tr_authz_request *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->principal = s->principal;
    rq->source_ip = tr_ip_from_sockaddr((const struct sockaddr *)&s->peer, NULL);
    /* No X-Forwarded-For hop is trusted: the original client is the peer. */
    rq->remote_ip = rq->source_ip;
    rq->dest_ip = tr_ip_from_sockaddr((const struct sockaddr *)&s->lcfg->addr.ss, &rq->dest_port);
    if (s->down.ssl != NULL) {
        const char *sni = SSL_get_servername(s->down.ssl, TLSEXT_NAMETYPE_host_name);
        if (sni != NULL)
            rq->sni = tr_str_from(sni, strlen(sni));
    } else if (s->peeked_sni.len > 0) {
        rq->sni = s->peeked_sni; /* TLS passed through: the ClientHello's, as peeked */
    }
}

bool tr_authz_denied(const struct tr_session *s, const struct tr_authz *az,
                     const struct tr_authz_request *rq, const char *what, const char **policy,
                     int *rule)
{
    *policy = NULL;
    *rule = -1;
    if (az == NULL)
        return false;
    struct tr_authz_result res;
    enum tr_authz_verdict v = tr_authz_decide(az, rq, &res);
    const char *who = s->principal != NULL ? s->principal : s->peer_ip;
    if (res.audit_policy >= 0)
        tr_info("listener %s: %s from %s audited by authorization policy %s rule %d", s->lcfg->name,
                what, who, tr_authz_policy_name(az, res.audit_policy), res.audit_rule);
    if (v == TR_AUTHZ_VERDICT_ALLOW)
        return false;
    *policy = tr_authz_policy_name(az, res.policy);
    *rule = res.rule;
    if (res.policy >= 0)
        tr_info("listener %s: %s from %s denied by authorization policy %s rule %d", s->lcfg->name,
                what, who, tr_authz_policy_name(az, res.policy), res.rule);
    else
        tr_info("listener %s: %s from %s denied by authorization: %s", s->lcfg->name, what, who,
                tr_authz_reason_name(res.reason));
    return true;
}
