/* ctl/authz_check.c: see authz_check.h. */
#include "ctl/authz_check.h"

#include <libfyaml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fmt.h"
#include "filter/authz.h"
#include "filter/path_normalize.h"
#include "router/router.h"

#define CHECK_MAX_HEADERS 64u
#define CHECK_MAX_AUD     32u

/* The JWT payload: claims looked up in a libfyaml document (JSON is YAML). */
static size_t claim_lookup(const void *claims, const tr_str *path, size_t depth, tr_str *out,
                           size_t max)
{
    struct fy_node *n = fy_document_root((struct fy_document *)(uintptr_t)claims);
    for (size_t i = 0; i < depth && n != NULL; i++) {
        if (!fy_node_is_mapping(n))
            return 0;
        n = fy_node_mapping_lookup_by_string(n, path[i].p, path[i].len);
    }
    if (n == NULL)
        return 0;
    size_t len, count = 0;
    if (fy_node_is_scalar(n)) {
        const char *s = fy_node_get_scalar(n, &len);
        if (s != NULL && max > 0)
            out[0] = tr_str_from(s, len);
        return s != NULL;
    }
    if (!fy_node_is_sequence(n))
        return 0;
    void *it = NULL;
    for (struct fy_node *e; (e = fy_node_sequence_iterate(n, &it)) != NULL;) {
        const char *s = fy_node_is_scalar(e) ? fy_node_get_scalar(e, &len) : NULL;
        if (s == NULL)
            continue;
        if (count < max)
            out[count] = tr_str_from(s, len);
        count++;
    }
    return count;
}

static tr_str claim_str(struct fy_document *doc, const char *name)
{
    tr_str key = tr_str_from(name, strlen(name)), v = {"", 0};
    claim_lookup(doc, &key, 1, &v, 1);
    return v;
}

static char *fail(int *status, int code, const char *msg)
{
    *status = code;
    char *s = malloc(strlen(msg) + 2);
    if (s != NULL)
        sprintf(s, "%s\n", msg);
    return s;
}

/* The listener inbound|PORT, or a gateway's gateway|PORT (port 0: the
 * first of them). */
static const struct tr_listener_cfg *inbound_listener(const struct tr_config *cfg, uint32_t port)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        bool inbound = l->direction == TR_DIR_INBOUND && strncmp(l->name, "inbound|", 8) == 0;
        if (!inbound && strncmp(l->name, "gateway|", 8) != 0)
            continue;
        if (port == 0 || strtoul(l->name + 8, NULL, 10) == port)
            return l;
    }
    return NULL;
}

/* The listener refuses the path (400 DPE) before authorization runs. */
static char *path_refused(int *status, bool json, const struct tr_listener_cfg *l,
                          enum tr_path_status pst)
{
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 4096);
    char reason[256];
    snprintf(reason, sizeof(reason), "path refused before authorization (400): %s",
             tr_path_status_str(pst));
    if (json) {
        tr_fmt_cstr(&f, "{\"decision\":\"DENY\",\"policy\":null,\"rule\":null,\"action\":null,"
                        "\"reason\":");
        tr_fmt_json_cstr(&f, reason);
        tr_fmt_cstr(&f, ",\"normalized_path\":null,\"listener\":");
        tr_fmt_json_cstr(&f, l->name);
        tr_fmt_cstr(&f, ",\"audit\":null}\n");
    } else {
        tr_fmt_printf(&f, "DENY: %s\nlistener: %s\n", reason, l->name);
    }
    *status = 0;
    size_t len;
    return tr_fmt_take(&f, &len);
}

char *tr_ctl_authz_check(const struct tr_config *cfg, const struct tr_authz_check_request *q,
                         bool json, int *status)
{
    const struct tr_listener_cfg *l = inbound_listener(cfg, q->port);
    if (l == NULL)
        return fail(status, 2,
                    q->port ? "trellis ctl authz check: the workload serves no such port (no "
                              "listener inbound|PORT or gateway|PORT)"
                            : "trellis ctl authz check: the workload serves no port (no inbound "
                              "or gateway listener)");
    if (q->n_headers > CHECK_MAX_HEADERS)
        return fail(status, 2, "trellis ctl authz check: at most 64 headers");

    struct tr_authz_request rq = {0};
    char principal[1024];
    if (q->from != NULL && q->from[0] != '\0') {
        snprintf(principal, sizeof(principal), "%s%s",
                 strncmp(q->from, "spiffe://", 9) == 0 ? "" : "spiffe://", q->from);
        rq.principal = principal;
    }
    if (!tr_ip_parse(q->source_ip ? q->source_ip : "127.0.0.1", &rq.source_ip))
        return fail(status, 2, "trellis ctl authz check: --source-ip is not an IP address");
    rq.remote_ip = rq.source_ip;
    rq.dest_ip = tr_ip_from_sockaddr((const struct sockaddr *)&l->addr.ss, &rq.dest_port);
    if (q->sni != NULL)
        rq.sni = tr_str_from(q->sni, strlen(q->sni));
    rq.http = !q->tcp && l->protocol != TR_LPROTO_TCP;

    const char *path = q->path ? q->path : "/";
    size_t plen = strlen(path);
    struct tr_str_pair hdrs[CHECK_MAX_HEADERS];
    char host[512];
    static char npath[16384]; /* the path as the proxy normalises it */
    if (rq.http) {
        if (path[0] != '/')
            return fail(status, 2, "trellis ctl authz check: --path must start with \"/\"");
        if (plen >= sizeof(npath))
            return fail(status, 2, "trellis ctl authz check: --path is longer than 16383 bytes");
        /* The proxy decides on the normalised path, or refuses the request
         * (400) before authorization: the same function, the listener's mode. */
        enum tr_path_status pst =
            tr_path_normalize(l->path_normalization, path, plen, npath, sizeof(npath), &plen);
        if (pst != TR_PATH_OK)
            return path_refused(status, json, l, pst);
        path = npath;
        const char *query = memchr(path, '?', plen);
        if (query != NULL)
            plen = (size_t)(query - path);
        rq.method =
            tr_str_from(q->method ? q->method : "GET", strlen(q->method ? q->method : "GET"));
        rq.path = tr_str_from(path, plen);
        if (q->host != NULL)
            snprintf(host, sizeof(host), "%s", q->host);
        else
            snprintf(host, sizeof(host), "%s", l->addr.text ? l->addr.text : "");
        rq.host = tr_str_from(host, strlen(host));
        for (size_t i = 0; i < q->n_headers; i++) {
            const char *h = q->headers[i];
            size_t nl = strcspn(h, "=:");
            if (nl == 0 || h[nl] == '\0')
                return fail(status, 2,
                            "trellis ctl authz check: a header is 'Name=value' or 'Name: value'");
            const char *v = h + nl + 1;
            while (*v == ' ')
                v++;
            hdrs[i] = (struct tr_str_pair){tr_str_from(h, nl), tr_str_from(v, strlen(v))};
        }
        rq.headers = hdrs;
        rq.n_headers = (uint32_t)q->n_headers;
    }

    struct fy_document *claims = NULL;
    struct tr_request_auth auth = {0};
    tr_str auds[CHECK_MAX_AUD];
    char pbuf[2048]; /* the request principal "ISS/SUB" */
    if (q->jwt_claims != NULL) {
        claims = fy_document_build_from_string(NULL, q->jwt_claims, FY_NT);
        if (claims == NULL || !fy_node_is_mapping(fy_document_root(claims))) {
            fy_document_destroy(claims);
            return fail(status, 2, "trellis ctl authz check: --jwt-claims is not a JSON object");
        }
        tr_str iss = claim_str(claims, "iss"), sub = claim_str(claims, "sub");
        snprintf(pbuf, sizeof(pbuf), "%.*s/%.*s", (int)iss.len, iss.p, (int)sub.len, sub.p);
        auth.authenticated = true;
        auth.principal = tr_str_from(pbuf, strlen(pbuf));
        auth.presenter = claim_str(claims, "azp");
        tr_str aud_key = TR_STR_LIT("aud");
        size_t na = claim_lookup(claims, &aud_key, 1, auds, CHECK_MAX_AUD);
        auth.audiences = auds;
        auth.n_audiences = na < CHECK_MAX_AUD ? na : CHECK_MAX_AUD;
        auth.claim = claim_lookup;
        auth.claims = claims;
        rq.auth = &auth;
    }

    char *err = NULL;
    struct tr_authz *az = tr_authz_build(&l->authz, &err);
    if (err != NULL) {
        fy_document_destroy(claims);
        char *out = fail(status, 1, err);
        free(err);
        return out;
    }
    struct tr_authz_result res;
    tr_authz_decide(az, &rq, &res);
    /* A CUSTOM policy's match: the external authorizer is asked first
     * (the proxy's order); the decision below is what follows an allow. */
    int cpol = -1, crule = -1;
    int prov = rq.http ? tr_authz_custom(az, &rq, &cpol, &crule) : -1;
    const char *cname = tr_authz_policy_name(az, cpol);
    const char *provider =
        prov >= 0 && (size_t)prov < cfg->n_ext_authz ? cfg->ext_authz[prov].name : NULL;
    fy_document_destroy(claims);

    const char *decision = res.verdict == TR_AUTHZ_VERDICT_ALLOW ? "ALLOW" : "DENY";
    const char *pname = tr_authz_policy_name(az, res.policy);
    static const char *const actions[] = {"ALLOW", "DENY", "AUDIT", "CUSTOM"};
    const char *action = res.policy >= 0 ? actions[tr_authz_policy_action(az, res.policy)] : NULL;
    const char *audit = tr_authz_policy_name(az, res.audit_policy);
    const char *reason = tr_authz_reason_name(res.reason);
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 1u << 20);
    if (json) {
        tr_fmt_printf(&f, "{\"decision\":\"%s\",\"policy\":", decision);
        tr_fmt_json_cstr(&f, pname);
        if (res.rule >= 0)
            tr_fmt_printf(&f, ",\"rule\":%d", res.rule);
        else
            tr_fmt_cstr(&f, ",\"rule\":null");
        tr_fmt_cstr(&f, ",\"action\":");
        tr_fmt_json_cstr(&f, action);
        tr_fmt_cstr(&f, ",\"reason\":");
        tr_fmt_json_cstr(&f, reason);
        tr_fmt_cstr(&f, ",\"normalized_path\":");
        if (rq.http)
            tr_fmt_json_str(&f, path, plen);
        else
            tr_fmt_cstr(&f, "null");
        tr_fmt_cstr(&f, ",\"listener\":");
        tr_fmt_json_cstr(&f, l->name);
        tr_fmt_cstr(&f, ",\"audit\":");
        tr_fmt_json_cstr(&f, audit);
        tr_fmt_cstr(&f, ",\"ext_authz\":");
        if (provider != NULL) {
            tr_fmt_cstr(&f, "{\"provider\":");
            tr_fmt_json_cstr(&f, provider);
            tr_fmt_cstr(&f, ",\"policy\":");
            tr_fmt_json_cstr(&f, cname);
            tr_fmt_printf(&f, ",\"rule\":%d}", crule);
        } else {
            tr_fmt_cstr(&f, "null");
        }
        tr_fmt_cstr(&f, "}\n");
    } else {
        if (provider != NULL)
            tr_fmt_printf(&f,
                          "CHECK by external authorizer %s (CUSTOM policy %s, rule %d) first; "
                          "if it allows:\n",
                          provider, cname != NULL ? cname : "?", crule);
        tr_fmt_printf(&f, "%s", decision);
        if (pname != NULL)
            tr_fmt_printf(&f, " by %s policy %s, rule %d", action, pname, res.rule);
        tr_fmt_printf(&f, ": %s\nlistener: %s\n", reason, l->name);
        if (rq.http)
            tr_fmt_printf(&f, "normalized path: %.*s\n", (int)plen, path);
        if (audit != NULL)
            tr_fmt_printf(&f, "audited by: %s, rule %d\n", audit, res.audit_rule);
    }
    tr_authz_free(az);
    *status = 0;
    size_t len;
    return tr_fmt_take(&f, &len);
}
