/* DestinationRule: which rule applies to a host, its subsets, and the
 * traffic policy of one (host, port, subset) as cluster settings.
 *
 * Inheritance is Istio's (pilot's MergeTrafficPolicy): a subset's
 * trafficPolicy replaces the rule's connectionPool, loadBalancer,
 * outlierDetection and tls one message at a time (a message set in the
 * subset wins whole; one not set is inherited); a portLevelSettings entry
 * for the port replaces all four at its level, without inheriting (what it
 * leaves out takes the defaults). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config/load.h"
#include "dialect/istio/internal.h"

/* The four messages a policy level sets. */
struct tp_parts {
    const struct tr_rnode *pool, *lb, *outlier, *tls;
};

static void parts_of(const struct tr_rnode *tp, struct tp_parts *p)
{
    *p = (struct tp_parts){
        .pool = tr_rnode_get(tp, "connectionPool"),
        .lb = tr_rnode_get(tp, "loadBalancer"),
        .outlier = tr_rnode_get(tp, "outlierDetection"),
        .tls = tr_rnode_get(tp, "tls"),
    };
}

static const struct tr_rnode *port_level(const struct tr_rnode *tp, uint32_t port)
{
    const struct tr_rnode *pls = tr_rnode_get(tp, "portLevelSettings");
    for (const struct tr_rnode *e = pls && pls->kind == TR_RNODE_SEQ ? pls->head : NULL; e;
         e = e->next) {
        int64_t n;
        if (tr_rnode_int(tr_rnode_get(tr_rnode_get(e, "port"), "number"), &n) && n == (int64_t)port)
            return e;
    }
    return NULL;
}

/* One level: its own messages, then the port's entry replacing all four. */
static void level(const struct tr_rnode *tp, uint32_t port, struct tp_parts *out, bool inherit)
{
    struct tp_parts mine;
    parts_of(tp, &mine);
    if (!inherit) {
        *out = mine;
    } else {
        if (mine.pool)
            out->pool = mine.pool;
        if (mine.lb)
            out->lb = mine.lb;
        if (mine.outlier)
            out->outlier = mine.outlier;
        if (mine.tls)
            out->tls = mine.tls;
    }
    const struct tr_rnode *pl = port_level(tp, port);
    if (pl != NULL)
        parts_of(pl, out);
}

/* ------------------------------------------------------- which rule */

static bool dr_exported_to(const struct tr_resource *r, const char *ns)
{
    const struct tr_rnode *exp = tr_rnode_get(r->spec, "exportTo");
    if (exp == NULL || exp->kind != TR_RNODE_SEQ || exp->n == 0)
        return true;
    const char *rns = r->ns ? r->ns : "default";
    for (const struct tr_rnode *e = exp->head; e; e = e->next) {
        const char *s;
        if (!tr_rnode_str(e, &s))
            continue;
        if (strcmp(s, "*") == 0 || strcmp(s, ns) == 0 ||
            (strcmp(s, ".") == 0 && strcmp(rns, ns) == 0))
            return true;
    }
    return false;
}

static bool host_matches(const char *pattern, const char *host)
{
    if (strcmp(pattern, host) == 0 || strcmp(pattern, "*") == 0)
        return true;
    if (pattern[0] == '*' && pattern[1] == '.') {
        size_t pl = strlen(pattern + 1), hl = strlen(host);
        return hl > pl && strcmp(host + hl - pl, pattern + 1) == 0;
    }
    return false;
}

/* DestinationRules by "NAMESPACE|HOST" (host as written, resolved to an
 * FQDN), in load order; wildcard hosts under "NAMESPACE|*". Built once per
 * compile: looking a rule up costs a hash, not a scan of every rule. */
struct dr_list {
    const struct tr_resource **v;
    const char **host; /* the rule's resolved host */
    size_t n, cap;
};

static bool dr_list_add(struct ist_ctx *x, const char *key, const struct tr_resource *r,
                        const char *host)
{
    struct dr_list *l = tr_strmap_get(&x->dr_index, key);
    if (l == NULL) {
        l = ist_alloc(x, 1, sizeof(*l));
        bool oom = false;
        if (l == NULL || (tr_strmap_put(&x->dr_index, key, l, &oom), oom))
            return ist_oom(x);
    }
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 2;
        const struct tr_resource **nv = ist_alloc(x, nc, sizeof(*nv));
        const char **nh = ist_alloc(x, nc, sizeof(*nh));
        if (nv == NULL || nh == NULL)
            return false;
        if (l->n) {
            memcpy(nv, l->v, l->n * sizeof(*nv));
            memcpy(nh, l->host, l->n * sizeof(*nh));
        }
        l->v = nv;
        l->host = nh;
        l->cap = nc;
    }
    l->v[l->n] = r;
    l->host[l->n++] = host;
    return true;
}

static void dr_index_build(struct ist_ctx *x)
{
    x->dr_indexed = true;
    size_t n;
    const struct tr_resource *const *v = tr_rset_of_kind(x->rs, IST_GROUP, "DestinationRule", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        const char *rns = r->ns ? r->ns : "default";
        const char *h;
        if (!tr_rnode_str(tr_rnode_get(r->spec, "host"), &h))
            continue;
        const char *fq = ist_fqdn(x, h, rns);
        const char *key = fq ? ist_printf(x, "%s|%s", rns, fq[0] == '*' ? "*" : fq) : NULL;
        if (key == NULL || !dr_list_add(x, key, r, fq))
            return;
    }
}

/* The first usable rule of one namespace for host: exact before wildcard. */
static const struct tr_resource *dr_in_ns(struct ist_ctx *x, const char *ns, const char *host,
                                          bool other_ns)
{
    char key[600];
    size_t nl = strnlen(ns, 300);
    memcpy(key, ns, nl);
    key[nl] = '|';
    for (int pass = 0; pass < 2; pass++) {
        /* "NS|HOST", then "NS|*": looked up for every route's destination */
        const char *h = pass == 0 ? host : "*";
        size_t hl = strnlen(h, sizeof(key) - nl - 2);
        memcpy(key + nl + 1, h, hl);
        key[nl + 1 + hl] = '\0';
        const struct dr_list *l = tr_strmap_get(&x->dr_index, key);
        for (size_t i = 0; l && i < l->n; i++) {
            const struct tr_resource *r = l->v[i];
            if (ist_refused(x, r) || (other_ns && !dr_exported_to(r, x->wl_ns)))
                continue;
            const struct tr_rnode *sel = tr_rnode_get(r->spec, "workloadSelector");
            if (sel != NULL && !ist_labels_match(tr_rnode_get(sel, "matchLabels"), x->wl_labels))
                continue;
            if (pass == 1 && !host_matches(l->host[i], host))
                continue;
            return r;
        }
    }
    return NULL;
}

/* Istio looks for a rule in the client's namespace, then the service's,
 * then the root namespace; within one, an exact host beats a wildcard, and
 * the first in load order wins (Istio: the oldest). */
const struct tr_resource *ist_dr_for(struct ist_ctx *x, const char *host, const char *svc_ns)
{
    if (!x->dr_indexed)
        dr_index_build(x);
    const char *order[3] = {x->wl_ns, svc_ns, x->o->root_ns};
    for (int o = 0; o < 3; o++) {
        if (order[o] == NULL || (o > 0 && strcmp(order[o], order[0]) == 0) ||
            (o == 2 && strcmp(order[2], order[1]) == 0))
            continue;
        const struct tr_resource *r = dr_in_ns(x, order[o], host, o > 0);
        if (r != NULL)
            return r;
    }
    return NULL;
}

const struct tr_rnode *ist_dr_subset(const struct tr_resource *dr, const char *name)
{
    const struct tr_rnode *subs = dr ? tr_rnode_get(dr->spec, "subsets") : NULL;
    for (const struct tr_rnode *s = subs && subs->kind == TR_RNODE_SEQ ? subs->head : NULL; s;
         s = s->next) {
        const char *n;
        if (tr_rnode_str(tr_rnode_get(s, "name"), &n) && strcmp(n, name) == 0)
            return s;
    }
    return NULL;
}

/* --------------------------------------------------- checking a rule */

/* warmup (or the older warmupDurationSecs): slow start, which Istio sets
 * only on ROUND_ROBIN and LEAST_REQUEST clusters (the default included). */
static void check_warmup(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *lb)
{
    static const struct ist_key keys[] = {
        {"duration", NULL}, {"minimumPercent", NULL}, {"aggression", NULL}};
    uint32_t ms;
    const struct tr_rnode *w = ist_map(x, c, lb, "warmup");
    size_t saved = ist_push_key(c, "warmup");
    if (w != NULL && IST_KEYS(x, c, w, keys)) {
        if (!ist_duration(x, c, w, "duration", 24u * 3600u * 1000u, &ms) || ms == 0)
            ist_error(x, c, w, "duration", "a duration of at least 1ms is required");
        double d;
        const struct tr_rnode *mp = tr_rnode_get(w, "minimumPercent");
        if (mp != NULL && (!tr_rnode_double(mp, &d) || !(d >= 0 && d <= 100)))
            ist_error(x, c, mp, "minimumPercent", "expected a number from 0 to 100");
        const struct tr_rnode *ag = tr_rnode_get(w, "aggression");
        if (ag != NULL && (!tr_rnode_double(ag, &d) || !(d >= 0 && d <= 100)))
            ist_error(x, c, ag, "aggression", "expected a number from 0 to 100");
        else if (ag != NULL && d == 0)
            ist_warn(x, c, ag, "aggression", "0 is not a valid ramp; Envoy uses 1.0 (linear)");
    }
    ist_pop(c, saved);
    const struct tr_rnode *wd = tr_rnode_get(lb, "warmupDurationSecs");
    if (wd != NULL &&
        (!ist_duration(x, c, lb, "warmupDurationSecs", 24u * 3600u * 1000u, &ms) || ms == 0))
        ist_error(x, c, wd, "warmupDurationSecs", "a duration of at least 1ms is required");
    const char *s = NULL;
    tr_rnode_str(tr_rnode_get(lb, "simple"), &s);
    bool ramped =
        tr_rnode_get(lb, "consistentHash") == NULL && (s == NULL || strcmp(s, "RANDOM") != 0);
    if ((w != NULL || wd != NULL) && !ramped)
        ist_warn(x, c, w != NULL ? w : wd, w != NULL ? "warmup" : "warmupDurationSecs",
                 "slow start applies to ROUND_ROBIN and LEAST_REQUEST only (as in Istio): "
                 "ignored with %s",
                 s != NULL ? s : "consistentHash");
}

static void check_lb(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *lb)
{
    static const struct ist_key keys[] = {
        {"simple", NULL},
        {"consistentHash", NULL},
        {"localityLbSetting", NULL},
        {"warmupDurationSecs", NULL},
        {"warmup", NULL},
        {"zoneAwareLbSetting", "zone-aware load balancing is not supported yet"},
    };
    if (!IST_KEYS(x, c, lb, keys))
        return;
    size_t saved = ist_push_key(c, "localityLbSetting");
    ist_check_locality_setting(x, c, ist_map(x, c, lb, "localityLbSetting"));
    ist_pop(c, saved);
    check_warmup(x, c, lb);
    const char *s;
    if (ist_str(x, c, lb, "simple", &s) && strcmp(s, "ROUND_ROBIN") != 0 &&
        strcmp(s, "LEAST_REQUEST") != 0 && strcmp(s, "LEAST_CONN") != 0 &&
        strcmp(s, "RANDOM") != 0 && strcmp(s, "UNSPECIFIED") != 0) {
        if (strcmp(s, "PASSTHROUGH") == 0) {
            if (!x->o->capture)
                ist_warn(x, c, tr_rnode_get(lb, "simple"), "simple",
                         "PASSTHROUGH sends each connection to the caller's original "
                         "destination, which needs traffic capture (--capture): without it "
                         "least request is used");
        } else {
            ist_error(x, c, tr_rnode_get(lb, "simple"), "simple",
                      "expected ROUND_ROBIN, LEAST_REQUEST, RANDOM or PASSTHROUGH, got \"%s\"", s);
        }
    }
}

static void check_hash(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *ch)
{
    static const struct ist_key keys[] = {
        {"httpHeaderName", NULL},         {"httpCookie", NULL}, {"useSourceIp", NULL},
        {"httpQueryParameterName", NULL}, {"ringHash", NULL},   {"maglev", NULL},
        {"minimumRingSize", NULL},
    };
    static const struct ist_key cookie_keys[] = {
        {"name", NULL},
        {"path", NULL},
        {"ttl", NULL},
        {"attributes", "cookie attributes are not supported yet"}};
    if (!IST_KEYS(x, c, ch, keys))
        return;
    int keys_set = (tr_rnode_get(ch, "httpHeaderName") != NULL) +
                   (tr_rnode_get(ch, "httpCookie") != NULL) +
                   (tr_rnode_get(ch, "useSourceIp") != NULL) +
                   (tr_rnode_get(ch, "httpQueryParameterName") != NULL);
    if (keys_set != 1)
        ist_error(x, c, ch, NULL,
                  "exactly one of httpHeaderName, httpCookie, useSourceIp and "
                  "httpQueryParameterName (a oneof)");
    const char *s;
    bool b;
    uint32_t v;
    ist_str(x, c, ch, "httpHeaderName", &s);
    ist_str(x, c, ch, "httpQueryParameterName", &s);
    ist_bool(x, c, ch, "useSourceIp", &b);
    const struct tr_rnode *ck = ist_map(x, c, ch, "httpCookie");
    size_t saved = ist_push_key(c, "httpCookie");
    if (ck != NULL && IST_KEYS(x, c, ck, cookie_keys)) {
        if (!ist_str(x, c, ck, "name", &s))
            ist_error(x, c, ck, "name", "a cookie name is required");
        if (ist_str(x, c, ck, "path", &s) && tr_rnode_get(ck, "ttl") == NULL)
            ist_warn(x, c, tr_rnode_get(ck, "path"), "path",
                     "a path only applies to a cookie the proxy sets, which needs a ttl: ignored");
        ist_duration(x, c, ck, "ttl", 24u * 3600u * 1000u, &v);
    }
    ist_pop(c, saved);
    const struct tr_rnode *rh = ist_map(x, c, ch, "ringHash");
    const struct tr_rnode *mg = ist_map(x, c, ch, "maglev");
    static const struct ist_key rk[] = {{"minimumRingSize", NULL}};
    static const struct ist_key mk[] = {{"tableSize", NULL}};
    saved = ist_push_key(c, "ringHash");
    if (rh != NULL && IST_KEYS(x, c, rh, rk))
        ist_u32(x, c, rh, "minimumRingSize", 1, 8388608, &v);
    ist_pop(c, saved);
    saved = ist_push_key(c, "maglev");
    if (mg != NULL && IST_KEYS(x, c, mg, mk))
        ist_u32(x, c, mg, "tableSize", 1, 5000011, &v);
    ist_pop(c, saved);
    if (rh != NULL && mg != NULL)
        ist_error(x, c, ch, NULL, "only one of ringHash and maglev (a oneof)");
    ist_u32(x, c, ch, "minimumRingSize", 1, 8388608, &v);
}

static void check_outlier(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *od)
{
    static const struct ist_key keys[] = {
        {"splitExternalLocalOriginErrors", NULL},
        {"consecutiveLocalOriginFailures", NULL},
        {"consecutiveGatewayErrors", NULL},
        {"consecutive5xxErrors", NULL},
        {"interval", NULL},
        {"baseEjectionTime", NULL},
        {"maxEjectionPercent", NULL},
        {"minHealthPercent", NULL},
        {"consecutiveErrors", "deprecated, and ignored by istiod too: use consecutive5xxErrors"},
        {"outlierDetectionHttpErrorCodes", "custom error codes for outlier detection are not "
                                           "supported yet: 5xx and gateway errors count"},
    };
    if (!IST_KEYS(x, c, od, keys))
        return;
    uint32_t v;
    bool b;
    ist_bool(x, c, od, "splitExternalLocalOriginErrors", &b);
    ist_u32(x, c, od, "consecutiveLocalOriginFailures", 0, INT32_MAX, &v);
    ist_u32(x, c, od, "consecutiveGatewayErrors", 0, INT32_MAX, &v);
    ist_u32(x, c, od, "consecutive5xxErrors", 0, INT32_MAX, &v);
    ist_duration(x, c, od, "interval", 24u * 3600u * 1000u, &v);
    ist_duration(x, c, od, "baseEjectionTime", 24u * 3600u * 1000u, &v);
    ist_u32(x, c, od, "maxEjectionPercent", 0, 100, &v);
    ist_u32(x, c, od, "minHealthPercent", 0, 100, &v);
}

static void check_pool(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *pool)
{
    static const struct ist_key keys[] = {{"tcp", NULL}, {"http", NULL}};
    static const struct ist_key tcp_keys[] = {
        {"maxConnections", NULL},
        {"connectTimeout", NULL},
        {"tcpKeepalive", NULL},
        {"maxConnectionDuration", NULL},
        {"idleTimeout", "a TCP idle timeout is not supported yet"},
    };
    static const struct ist_key http_keys[] = {
        {"http1MaxPendingRequests", NULL},
        {"http2MaxRequests", NULL},
        {"maxRequestsPerConnection", NULL},
        {"maxRetries", NULL},
        {"idleTimeout", NULL},
        {"h2UpgradePolicy", NULL},
        {"useClientProtocol", NULL},
        {"maxConcurrentStreams", NULL},
        {"http2KeepAlive", "HTTP/2 keepalive pings are not supported yet"},
    };
    if (!IST_KEYS(x, c, pool, keys))
        return;
    const struct tr_rnode *tcp = ist_map(x, c, pool, "tcp");
    const struct tr_rnode *http = ist_map(x, c, pool, "http");
    size_t saved = ist_push_key(c, "tcp");
    if (IST_KEYS(x, c, tcp, tcp_keys)) {
        uint32_t v;
        ist_u32(x, c, tcp, "maxConnections", 0, INT32_MAX, &v);
        ist_duration(x, c, tcp, "connectTimeout", 24u * 3600u * 1000u, &v);
        if (ist_duration(x, c, tcp, "maxConnectionDuration", 24u * 3600u * 1000u, &v) && v == 0)
            ist_error(x, c, tr_rnode_get(tcp, "maxConnectionDuration"), "maxConnectionDuration",
                      "must be at least 1ms");
        static const struct ist_key ka_keys[] = {
            {"time", NULL}, {"interval", NULL}, {"probes", NULL}};
        const struct tr_rnode *ka = ist_map(x, c, tcp, "tcpKeepalive");
        size_t sk = ist_push_key(c, "tcpKeepalive");
        if (ka != NULL && IST_KEYS(x, c, ka, ka_keys)) {
            ist_duration(x, c, ka, "time", 24u * 3600u * 1000u, &v);
            ist_duration(x, c, ka, "interval", 24u * 3600u * 1000u, &v);
            ist_u32(x, c, ka, "probes", 0, 127, &v);
        }
        ist_pop(c, sk);
    }
    ist_pop(c, saved);
    saved = ist_push_key(c, "http");
    if (IST_KEYS(x, c, http, http_keys)) {
        uint32_t v;
        bool b;
        const char *s;
        ist_duration(x, c, http, "idleTimeout", 24u * 3600u * 1000u, &v);
        ist_u32(x, c, http, "http1MaxPendingRequests", 0, INT32_MAX, &v);
        ist_u32(x, c, http, "http2MaxRequests", 0, INT32_MAX, &v);
        ist_u32(x, c, http, "maxRequestsPerConnection", 0, INT32_MAX, &v);
        ist_u32(x, c, http, "maxRetries", 0, INT32_MAX, &v);
        ist_bool(x, c, http, "useClientProtocol", &b);
        ist_u32(x, c, http, "maxConcurrentStreams", 1, 10000, &v);
        if (ist_str(x, c, http, "h2UpgradePolicy", &s) && strcmp(s, "DEFAULT") != 0 &&
            strcmp(s, "DO_NOT_UPGRADE") != 0 && strcmp(s, "UPGRADE") != 0)
            ist_error(x, c, tr_rnode_get(http, "h2UpgradePolicy"), "h2UpgradePolicy",
                      "expected DEFAULT, DO_NOT_UPGRADE or UPGRADE, got \"%s\"", s);
    }
    ist_pop(c, saved);
}

#define IST_SAN_MAX 4096u /* the model's subject_alt_names entries */

/* What the model takes as a SAN (uri: ':' and '/' too) or an SNI. */
static bool name_ok(const char *v, size_t len, size_t max, bool uri)
{
    if (len == 0 || len > max || strlen(v) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch <= ' ' || ch >= 0x7f || (!uri && (ch == '/' || ch == ':')))
            return false;
    }
    return true;
}

/* credentialName's Secret: in the DestinationRule's namespace, else the
 * workload's (where Istio looks for a sidecar's). */
static const struct tr_resource *credential_secret(struct ist_ctx *x, const struct tr_resource *dr,
                                                   const char *name)
{
    const struct tr_resource *s = ist_secret_find(x, dr->ns ? dr->ns : "default", name);
    if (s == NULL && x->wl_ns != NULL)
        s = ist_secret_find(x, x->wl_ns, name);
    return s;
}

static void check_tls(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *tls)
{
    /* A path on the proxy's file system: a compiled model carries no file of
     * a pod (it runs where the compiler put it), so only a Secret in the
     * input can be used. Refused rather than sent with less verification. */
    static const char files_why[] =
        "a file on the proxy's file system, which a compiled model cannot carry: put the "
        "certificates in a Secret in the input and name it in credentialName";
    static const struct ist_key keys[] = {
        {"mode", NULL},
        {"clientCertificate", NULL},
        {"privateKey", NULL},
        {"caCertificates", NULL},
        {"credentialName", NULL},
        {"subjectAltNames", NULL},
        {"sni", NULL},
        {"insecureSkipVerify", NULL},
        {"caCrl", NULL},
    };
    if (!IST_KEYS(x, c, tls, keys))
        return;
    const char *m = "DISABLE";
    if (ist_str(x, c, tls, "mode", &m) && strcmp(m, "DISABLE") != 0 &&
        strcmp(m, "ISTIO_MUTUAL") != 0 && strcmp(m, "SIMPLE") != 0 && strcmp(m, "MUTUAL") != 0) {
        ist_error(x, c, tr_rnode_get(tls, "mode"), "mode",
                  "expected DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL, got \"%s\"", m);
        return;
    }
    bool origination = strcmp(m, "SIMPLE") == 0 || strcmp(m, "MUTUAL") == 0;
    static const char *const file_keys[] = {"clientCertificate", "privateKey", "caCertificates",
                                            "caCrl"};
    for (size_t i = 0; i < sizeof(file_keys) / sizeof(file_keys[0]); i++) {
        const char *v;
        if (!ist_str(x, c, tls, file_keys[i], &v))
            continue;
        if (origination)
            ist_error(x, c, tr_rnode_get(tls, file_keys[i]), file_keys[i], "%s", files_why);
        else
            ist_warn(x, c, tr_rnode_get(tls, file_keys[i]), file_keys[i],
                     "only read with mode SIMPLE or MUTUAL; ignored");
    }
    const char *cred = NULL, *sni = NULL;
    bool insecure = false;
    ist_str(x, c, tls, "sni", &sni);
    ist_bool(x, c, tls, "insecureSkipVerify", &insecure);
    if (ist_str(x, c, tls, "credentialName", &cred)) {
        const struct tr_rnode *at = tr_rnode_get(tls, "credentialName");
        const struct tr_resource *s = origination ? credential_secret(x, c->res, cred) : NULL;
        struct ist_secret sec;
        if (!origination)
            ist_warn(x, c, at, "credentialName", "only read with mode SIMPLE or MUTUAL; ignored");
        else if (s == NULL) {
            const char *dns = c->res->ns ? c->res->ns : "default";
            bool other = x->wl_ns != NULL && strcmp(x->wl_ns, dns) != 0;
            ist_error(x, c, at, "credentialName",
                      "no Secret \"%s\" in the input (namespace %s%s%s): the proxy fetches "
                      "nothing; add the Secret to what you compile",
                      cred, dns, other ? " or " : "", other ? x->wl_ns : "");
        } else if (ist_secret_read(x, c, at, "credentialName", s, &sec) &&
                   strcmp(m, "MUTUAL") == 0 && (sec.crt == NULL || sec.key == NULL))
            ist_error(x, c, at, "credentialName",
                      "Secret %s/%s has no client certificate and key (tls.crt and tls.key) "
                      "for MUTUAL",
                      s->ns ? s->ns : "default", s->name);
    } else if (strcmp(m, "MUTUAL") == 0 && tr_rnode_get(tls, "clientCertificate") == NULL) {
        ist_warn(x, c, tr_rnode_get(tls, "mode"), "mode",
                 "MUTUAL needs a client certificate: name a Secret in credentialName; the proxy "
                 "refuses to send this traffic without one, so requests to it fail with 503");
    }
    if (insecure && !origination)
        ist_warn(x, c, tr_rnode_get(tls, "insecureSkipVerify"), "insecureSkipVerify",
                 "only read with mode SIMPLE or MUTUAL; ignored");
    const struct tr_rnode *sans = ist_list(x, c, tls, "subjectAltNames");
    size_t i = 0;
    for (const struct tr_rnode *s = sans ? sans->head : NULL; s; s = s->next, i++) {
        const char *v;
        size_t saved = ist_push_key(c, "subjectAltNames");
        ist_push_index(c, i);
        if (!tr_rnode_str(s, &v))
            ist_error(x, c, s, NULL, "expected a string");
        else if (origination && insecure)
            ist_warn(x, c, s, NULL, "not checked: insecureSkipVerify is set");
        else if (!origination && strncmp(v, "spiffe://", 9) != 0)
            ist_warn(x, c, s, NULL, "only spiffe:// identities are checked; this name is ignored");
        else if (origination && !name_ok(v, s->len, IST_SAN_MAX, true))
            ist_error(x, c, s, NULL, "expected a DNS name or a URI (printable, no spaces)");
        ist_pop(c, saved);
    }
    const struct tr_rnode *sn = tr_rnode_get(tls, "sni");
    if (sni != NULL && origination && !name_ok(sni, sn->len, 255, false))
        ist_error(x, c, sn, "sni", "expected a host name (at most 255 bytes, no port)");
    const char *host = NULL;
    tr_rnode_str(tr_rnode_get(c->res->spec, "host"), &host);
    if (origination && !insecure && sni == NULL && (sans == NULL || sans->n == 0) && host &&
        host[0] == '*')
        ist_warn(x, c, tr_rnode_get(tls, "mode"), "mode",
                 "a wildcard host and no sni: the proxy cannot name the server (Istio takes "
                 "the name from each request), so requests to it fail with 503; set sni");
}

/* retryBudget.percent (a DoubleValue: a bare number), as the model's whole
 * percent; false when absent or not 0..100 (reported by the check). */
static bool budget_percent(const struct tr_rnode *rb, uint32_t *out, double *exact)
{
    double d;
    if (!tr_rnode_double(tr_rnode_get(rb, "percent"), &d) || !(d >= 0 && d <= 100))
        return false;
    *out = (uint32_t)llround(d);
    *exact = d;
    return true;
}

static void check_retry_budget(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *rb)
{
    static const struct ist_key keys[] = {
        {"percent", NULL}, {"minRetryConcurrency", NULL}, {"budgetInterval", NULL}};
    if (rb == NULL || !IST_KEYS(x, c, rb, keys))
        return;
    const struct tr_rnode *pn = tr_rnode_get(rb, "percent");
    uint32_t pct, min;
    double d;
    char b[64];
    if (pn != NULL && !budget_percent(rb, &pct, &d))
        ist_error(x, c, pn, "percent", "expected a percentage 0..100, got %s",
                  tr_rnode_describe(pn, b, sizeof(b)));
    else if (pn != NULL && d != (double)pct)
        ist_warn(x, c, pn, "percent", "taken as %u: the retry budget counts whole percents",
                 (unsigned)pct);
    ist_u32(x, c, rb, "minRetryConcurrency", 0, 1000000, &min);
    uint32_t ms;
    if (ist_duration(x, c, rb, "budgetInterval", 24u * 3600u * 1000u, &ms) && ms > 0)
        ist_warn(x, c, tr_rnode_get(rb, "budgetInterval"), "budgetInterval",
                 "ignored: retries are counted against the requests in flight (as with "
                 "budgetInterval 0), not over a window of recent requests");
}

static void check_policy(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *tp,
                         bool port_level_ok)
{
    static const struct ist_key keys[] = {
        {"loadBalancer", NULL},
        {"connectionPool", NULL},
        {"outlierDetection", NULL},
        {"tls", NULL},
        {"portLevelSettings", NULL},
        {"tunnel", "tunnelling (CONNECT to a proxy) is not supported yet"},
        {"proxyProtocol", "the PROXY protocol is not supported yet"},
        {"retryBudget", NULL},
    };
    static const struct ist_key port_keys[] = {
        {"port", NULL},
        {"loadBalancer", NULL},
        {"connectionPool", NULL},
        {"outlierDetection", NULL},
        {"tls", NULL},
    };
    if (!(port_level_ok ? IST_KEYS(x, c, tp, keys) : IST_KEYS(x, c, tp, port_keys)))
        return;
    size_t saved = ist_push_key(c, "loadBalancer");
    const struct tr_rnode *lbn =
        ist_map(x, c, tp, "loadBalancer") ? tr_rnode_get(tp, "loadBalancer") : NULL;
    check_lb(x, c, lbn);
    const struct tr_rnode *ch = lbn ? ist_map(x, c, lbn, "consistentHash") : NULL;
    size_t sh = ist_push_key(c, "consistentHash");
    if (ch != NULL)
        check_hash(x, c, ch);
    ist_pop(c, sh);
    if (ch != NULL && tr_rnode_get(lbn, "simple") != NULL)
        ist_error(x, c, lbn, NULL, "only one of simple and consistentHash (a oneof)");
    ist_pop(c, saved);
    saved = ist_push_key(c, "outlierDetection");
    check_outlier(x, c, ist_map(x, c, tp, "outlierDetection"));
    ist_pop(c, saved);
    saved = ist_push_key(c, "connectionPool");
    check_pool(x, c, tr_rnode_get(tp, "connectionPool"));
    ist_pop(c, saved);
    saved = ist_push_key(c, "tls");
    check_tls(x, c, tr_rnode_get(tp, "tls"));
    ist_pop(c, saved);
    if (!port_level_ok)
        return;
    saved = ist_push_key(c, "retryBudget");
    check_retry_budget(x, c, ist_map(x, c, tp, "retryBudget"));
    ist_pop(c, saved);
    const struct tr_rnode *pls = ist_list(x, c, tp, "portLevelSettings");
    size_t i = 0;
    for (const struct tr_rnode *e = pls ? pls->head : NULL; e; e = e->next, i++) {
        saved = ist_push_key(c, "portLevelSettings");
        ist_push_index(c, i);
        const struct tr_rnode *port = ist_map(x, c, e, "port");
        uint32_t num;
        size_t sp = ist_push_key(c, "port");
        static const struct ist_key pk[] = {{"number", NULL}};
        if (port == NULL)
            ist_error(x, c, e, NULL, "a port is required");
        else if (IST_KEYS(x, c, port, pk) && !ist_u32(x, c, port, "number", 1, 65535, &num))
            ist_error(x, c, port, "number", "a port number is required");
        ist_pop(c, sp);
        check_policy(x, c, e, false);
        ist_pop(c, saved);
    }
}

void ist_dr_check(struct ist_ctx *x, const struct tr_resource *r)
{
    static const struct ist_key keys[] = {
        {"host", NULL},     {"trafficPolicy", NULL},    {"subsets", NULL},
        {"exportTo", NULL}, {"workloadSelector", NULL},
    };
    struct ist_cursor c;
    ist_cursor_init(&c, r, "spec");
    if (r->spec == NULL) {
        ist_error(x, &c, NULL, NULL, "spec is required");
        return;
    }
    if (!IST_KEYS(x, &c, r->spec, keys))
        return;
    const char *h;
    if (!ist_str(x, &c, r->spec, "host", &h))
        ist_error(x, &c, r->spec, "host", "a host is required");
    size_t saved = ist_push_key(&c, "trafficPolicy");
    check_policy(x, &c,
                 ist_map(x, &c, r->spec, "trafficPolicy") ? tr_rnode_get(r->spec, "trafficPolicy")
                                                          : NULL,
                 true);
    ist_pop(&c, saved);
    const struct tr_rnode *subs = ist_list(x, &c, r->spec, "subsets");
    size_t i = 0;
    for (const struct tr_rnode *s = subs ? subs->head : NULL; s; s = s->next, i++) {
        static const struct ist_key skeys[] = {
            {"name", NULL}, {"labels", NULL}, {"trafficPolicy", NULL}};
        saved = ist_push_key(&c, "subsets");
        ist_push_index(&c, i);
        if (IST_KEYS(x, &c, s, skeys)) {
            const char *n;
            if (!ist_str(x, &c, s, "name", &n))
                ist_error(x, &c, s, "name", "a subset name is required");
            else if (ist_dr_subset(r, n) != s)
                ist_error(x, &c, s, "name", "subset \"%s\" is defined twice", n);
            ist_map(x, &c, s, "labels");
            size_t sp = ist_push_key(&c, "trafficPolicy");
            check_policy(
                x, &c, ist_map(x, &c, s, "trafficPolicy") ? tr_rnode_get(s, "trafficPolicy") : NULL,
                true);
            ist_pop(&c, sp);
        }
        ist_pop(&c, saved);
    }
    const struct tr_rnode *sel = ist_map(x, &c, r->spec, "workloadSelector");
    static const struct ist_key selkeys[] = {{"matchLabels", NULL}};
    saved = ist_push_key(&c, "workloadSelector");
    IST_KEYS(x, &c, sel, selkeys);
    ist_pop(&c, saved);
}

/* ------------------------------------------------- applying a policy */

/* SIMPLE and MUTUAL: the client context, from credentialName's Secret (its
 * CA, and for MUTUAL its certificate and key), else the system's trust
 * store. Findings were reported by the rule's check (a rule with errors is
 * never applied). */
static void client_context(struct ist_ctx *x, const struct tr_resource *dr,
                           const struct tr_rnode *tls, struct ist_cluster_policy *p)
{
    bool mutual = p->tls == IST_TLS_MUTUAL;
    tr_rnode_bool(tr_rnode_get(tls, "insecureSkipVerify"), &p->insecure);
    const char *cred = NULL;
    if (!tr_rnode_str(tr_rnode_get(tls, "credentialName"), &cred)) {
        if (!mutual)
            p->client_ctx = ist_tls_context(x, TR_TLSK_CLIENT, "system-roots", NULL, false, false)
                                ? "system-roots"
                                : NULL;
        return;
    }
    const struct tr_resource *s = credential_secret(x, dr, cred);
    struct ist_cursor c;
    ist_cursor_init(&c, dr, NULL);
    struct ist_secret sec;
    bool quiet = x->quiet;
    x->quiet = true;
    bool ok = s != NULL && ist_secret_read(x, &c, NULL, NULL, s, &sec);
    x->quiet = quiet;
    if (!ok || (mutual && (sec.crt == NULL || sec.key == NULL)))
        return;
    char name[600];
    snprintf(name, sizeof(name), "%s|%s/%s", mutual ? "mutual" : "simple",
             s->ns ? s->ns : "default", s->name);
    const struct tr_tls_cfg *t = ist_tls_context(x, TR_TLSK_CLIENT, name, &sec, mutual, true);
    p->client_ctx = t ? t->name : NULL;
}

/* tcp.tcpKeepalive (whole seconds, rounded up as the model wants them)
 * and tcp.maxConnectionDuration. */
static void pool_extras(struct ist_ctx *x, const struct tr_resource *dr, const struct tr_rnode *tcp,
                        struct ist_cluster_policy *p)
{
    struct ist_cursor c;
    ist_cursor_init(&c, dr, NULL);
    bool quiet = x->quiet;
    x->quiet = true; /* checked once by ist_dr_check */
    uint32_t ms;
    if (ist_duration(x, &c, tcp, "maxConnectionDuration", 24u * 3600u * 1000u, &ms))
        p->max_connection_duration_ms = ms;
    const struct tr_rnode *ka = tr_rnode_get(tcp, "tcpKeepalive");
    if (ka != NULL && ka->kind == TR_RNODE_MAP) {
        p->has_keepalive = true;
        p->keepalive = (struct tr_tcp_keepalive_cfg){0};
        if (ist_duration(x, &c, ka, "time", 24u * 3600u * 1000u, &ms))
            p->keepalive.time_ms = (ms + 999) / 1000 * 1000;
        if (ist_duration(x, &c, ka, "interval", 24u * 3600u * 1000u, &ms))
            p->keepalive.interval_ms = (ms + 999) / 1000 * 1000;
        if (ist_u32(x, &c, ka, "probes", 0, 127, &ms))
            p->keepalive.probes = ms;
    }
    x->quiet = quiet;
}

void ist_check_pool(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *pool,
                    bool inbound)
{
    check_pool(x, c, pool);
    const struct tr_rnode *http = tr_rnode_get(pool, "http");
    static const char *const outbound_only[] = {"h2UpgradePolicy", "useClientProtocol"};
    size_t saved = ist_push_key(c, "http");
    for (size_t i = 0; inbound && http != NULL && i < 2; i++)
        if (tr_rnode_get(http, outbound_only[i]) != NULL)
            ist_warn(x, c, tr_rnode_get(http, outbound_only[i]), outbound_only[i],
                     "ignored on the inbound side, as istiod ignores it there: the application's "
                     "port protocol decides");
    ist_pop(c, saved);
}

const struct tr_rnode *ist_dr_pool(const struct tr_resource *dr, uint32_t port)
{
    const struct tr_rnode *tp = dr ? tr_rnode_get(dr->spec, "trafficPolicy") : NULL;
    const struct tr_rnode *pl = port_level(tp, port);
    const struct tr_rnode *pool = tr_rnode_get(pl, "connectionPool");
    if (pool == NULL)
        pool = tr_rnode_get(tp, "connectionPool");
    return pool != NULL && pool->kind == TR_RNODE_MAP ? pool : NULL;
}

void ist_inbound_pool_apply(struct ist_ctx *x, const struct tr_resource *res,
                            const struct tr_rnode *pool, bool http_port, struct tr_cluster_cfg *c)
{
    const struct tr_rnode *tcp = tr_rnode_get(pool, "tcp");
    const struct tr_rnode *http = tr_rnode_get(pool, "http");
    int64_t n;
    if (tr_rnode_int(tr_rnode_get(tcp, "maxConnections"), &n) && n > 0 && n <= INT32_MAX)
        c->breakers.max_connections = (uint32_t)n;
    if (tr_rnode_int(tr_rnode_get(http, "http1MaxPendingRequests"), &n) && n > 0 && n <= INT32_MAX)
        c->breakers.max_pending_requests = (uint32_t)n;
    if (tr_rnode_int(tr_rnode_get(http, "http2MaxRequests"), &n) && n > 0 && n <= INT32_MAX)
        c->breakers.max_requests = (uint32_t)n;
    if (tr_rnode_int(tr_rnode_get(http, "maxRequestsPerConnection"), &n) && n > 0 && n <= INT32_MAX)
        c->max_requests_per_connection = (uint32_t)n;
    if (tr_rnode_int(tr_rnode_get(http, "maxRetries"), &n) && n > 0 && n <= INT32_MAX)
        c->breakers.max_retries = (uint32_t)n;
    struct ist_cluster_policy p = {0};
    pool_extras(x, res, tcp, &p);
    c->max_connection_duration_ms = p.max_connection_duration_ms;
    if (p.has_keepalive && (c->tcp_keepalive = ist_malloc(x, 1, sizeof(*c->tcp_keepalive))))
        *c->tcp_keepalive = p.keepalive;
    struct ist_cursor cur;
    ist_cursor_init(&cur, res, NULL);
    bool quiet = x->quiet;
    x->quiet = true; /* checked once by the Sidecar's check */
    uint32_t ms;
    if (ist_duration(x, &cur, tcp, "connectTimeout", 24u * 3600u * 1000u, &ms) && ms > 0)
        c->connect_timeout_ms = ms;
    if (ist_duration(x, &cur, http, "idleTimeout", 24u * 3600u * 1000u, &ms) && ms > 0)
        c->pool_idle_timeout_ms = ms;
    x->quiet = quiet;
    /* h2UpgradePolicy and useClientProtocol are outbound settings (istiod
     * applies neither inbound): the port's protocol decides. */
    if (http_port && tr_rnode_int(tr_rnode_get(http, "maxConcurrentStreams"), &n) && n > 0 &&
        n <= 10000 && c->protocol == TR_UPROTO_HTTP2)
        c->h2_max_streams = (uint32_t)n;
}

/* Slow start for ROUND_ROBIN and LEAST_REQUEST: warmup, else
 * warmupDurationSecs, with Envoy's defaults (10 %, aggression 1.0). */
static void warmup_apply(struct ist_ctx *x, const struct tr_resource *dr, const struct tr_rnode *lb,
                         struct ist_cluster_policy *p)
{
    if (p->lb != TR_LB_ROUND_ROBIN && p->lb != TR_LB_LEAST_REQUEST)
        return;
    const struct tr_rnode *w = tr_rnode_get(lb, "warmup");
    struct ist_cursor c;
    ist_cursor_init(&c, dr, NULL);
    bool q = x->quiet;
    x->quiet = true; /* checked once by ist_dr_check */
    uint32_t ms = 0;
    if (w != NULL)
        ist_duration(x, &c, w, "duration", 24u * 3600u * 1000u, &ms);
    else
        ist_duration(x, &c, lb, "warmupDurationSecs", 24u * 3600u * 1000u, &ms);
    x->quiet = q;
    if (ms == 0)
        return;
    p->warmup =
        (struct tr_warmup_cfg){.duration_ms = ms, .min_per_million = 100000, .aggression = 10000};
    double d;
    if (tr_rnode_double(tr_rnode_get(w, "minimumPercent"), &d) && d >= 0 && d <= 100)
        p->warmup.min_per_million = (uint32_t)llround(d * 10000.0);
    if (tr_rnode_double(tr_rnode_get(w, "aggression"), &d) && d > 0 && d <= 100) {
        long v = llround(d * 10000.0);
        p->warmup.aggression = v > 0 ? (uint32_t)v : 1;
    }
}

void ist_policy_apply(struct ist_ctx *x, const struct tr_resource *dr, const char *subset,
                      uint32_t port, struct ist_cluster_policy *p)
{
    /* Istio's defaults for a sidecar's outbound cluster (istio.io
     * reference, DestinationRule; meshConfig.connectTimeout 10s). */
    *p = (struct ist_cluster_policy){
        .lb = TR_LB_LEAST_REQUEST,
        .connect_timeout_ms = 10000,
        .idle_timeout_ms = 3600000,
        .tls = IST_TLS_AUTO,
    };
    /* the model's own defaults for what Istio leaves unset */
    struct tr_cluster_cfg def;
    tr_cfg_cluster_defaults(&def);
    p->outlier = def.outlier;
    p->hash = def.hash;
    p->breakers = def.breakers;
    p->max_requests_per_connection = def.max_requests_per_connection;
    if (dr == NULL)
        return;
    struct tp_parts parts = {0};
    level(tr_rnode_get(dr->spec, "trafficPolicy"), port, &parts, false);
    const struct tr_rnode *sub = subset ? ist_dr_subset(dr, subset) : NULL;
    const struct tr_rnode *stp = tr_rnode_get(sub, "trafficPolicy");
    if (stp != NULL)
        level(stp, port, &parts, true);
    const char *s;
    if (tr_rnode_str(tr_rnode_get(parts.lb, "simple"), &s)) {
        if (strcmp(s, "ROUND_ROBIN") == 0)
            p->lb = TR_LB_ROUND_ROBIN;
        else if (strcmp(s, "RANDOM") == 0)
            p->lb = TR_LB_RANDOM;
        else if (strcmp(s, "PASSTHROUGH") == 0)
            p->original_dst = x->o->capture; /* else least request (reported) */
    }
    const struct tr_rnode *tcp = tr_rnode_get(parts.pool, "tcp");
    const struct tr_rnode *http = tr_rnode_get(parts.pool, "http");
    int64_t n;
    /* Istio's limits are per upstream cluster per proxy: circuit breakers,
     * which the proxy shares out among its workers. 0: Istio's default, no
     * limit. */
    if (tr_rnode_int(tr_rnode_get(tcp, "maxConnections"), &n) && n > 0 && n <= INT32_MAX)
        p->breakers.max_connections = (uint32_t)n;
    if (tr_rnode_int(tr_rnode_get(http, "http1MaxPendingRequests"), &n) && n > 0 && n <= INT32_MAX)
        p->breakers.max_pending_requests = (uint32_t)n;
    if (tr_rnode_int(tr_rnode_get(http, "http2MaxRequests"), &n) && n > 0 && n <= INT32_MAX)
        p->breakers.max_requests = (uint32_t)n;
    if (tr_rnode_int(tr_rnode_get(http, "maxRequestsPerConnection"), &n) && n > 0 && n <= INT32_MAX)
        p->max_requests_per_connection = (uint32_t)n;
    if (tr_rnode_int(tr_rnode_get(http, "maxRetries"), &n) && n > 0 && n <= INT32_MAX)
        p->breakers.max_retries = (uint32_t)n;
    pool_extras(x, dr, tcp, p);
    /* retryBudget: the subset's replaces the rule's (no port level). */
    const struct tr_rnode *rb = tr_rnode_get(stp, "retryBudget");
    if (rb == NULL)
        rb = tr_rnode_get(tr_rnode_get(dr->spec, "trafficPolicy"), "retryBudget");
    if (rb != NULL && rb->kind == TR_RNODE_MAP) {
        /* Envoy's defaults for what the budget leaves out: 20%, 3. */
        p->retry_budget = (struct tr_retry_budget_cfg){.percent = 20, .min_concurrency = 3};
        p->has_retry_budget = true;
        double d;
        uint32_t pct;
        if (budget_percent(rb, &pct, &d))
            p->retry_budget.percent = pct;
        if (tr_rnode_int(tr_rnode_get(rb, "minRetryConcurrency"), &n) && n >= 0 && n <= 1000000)
            p->retry_budget.min_concurrency = (uint32_t)n;
    }
    p->locality = tr_rnode_get(parts.lb, "localityLbSetting");
    p->failover = parts.outlier != NULL && parts.outlier->kind == TR_RNODE_MAP;
    const struct tr_rnode *ch = tr_rnode_get(parts.lb, "consistentHash");
    if (ch != NULL) {
        struct tr_hash_policy_cfg *h = &p->hash;
        const struct tr_rnode *mg = tr_rnode_get(ch, "maglev");
        p->lb = mg != NULL ? TR_LB_MAGLEV : TR_LB_RING_HASH;
        h->ring_min_size = 1024;
        h->maglev_table_size = 65537;
        if (tr_rnode_int(tr_rnode_get(tr_rnode_get(ch, "ringHash"), "minimumRingSize"), &n) ||
            tr_rnode_int(tr_rnode_get(ch, "minimumRingSize"), &n))
            h->ring_min_size = (uint32_t)n;
        if (tr_rnode_int(tr_rnode_get(mg, "tableSize"), &n))
            h->maglev_table_size = (uint32_t)n;
        tr_rnode_str(tr_rnode_get(ch, "httpHeaderName"), &h->header);
        tr_rnode_str(tr_rnode_get(ch, "httpQueryParameterName"), &h->query_param);
        bool src = false;
        if (tr_rnode_bool(tr_rnode_get(ch, "useSourceIp"), &src))
            h->source_ip = src;
        const struct tr_rnode *ck = tr_rnode_get(ch, "httpCookie");
        if (ck != NULL) {
            tr_rnode_str(tr_rnode_get(ck, "name"), &h->cookie);
            /* Istio: with a ttl the proxy creates the cookie when absent. */
            if (tr_rnode_get(ck, "ttl") != NULL) {
                struct ist_cursor hc;
                ist_cursor_init(&hc, dr, NULL);
                bool q = x->quiet;
                x->quiet = true;
                uint32_t ms = 0;
                ist_duration(x, &hc, ck, "ttl", 24u * 3600u * 1000u, &ms);
                x->quiet = q;
                h->cookie_ttl_ms = ms;
                h->cookie_generate = true;
                tr_rnode_str(tr_rnode_get(ck, "path"), &h->cookie_path);
            }
        }
    }
    warmup_apply(x, dr, parts.lb, p); /* after consistentHash: none with it */
    const struct tr_rnode *od = parts.outlier;
    if (od != NULL && od->kind == TR_RNODE_MAP) {
        /* Istio's defaults (DestinationRule reference, OutlierDetection). */
        struct tr_outlier_cfg *o = &p->outlier;
        o->enabled = true;
        o->consecutive_5xx = 5;
        o->consecutive_gateway = 0;
        o->consecutive_local = 5;
        o->interval_ms = 10000;
        o->base_ejection_ms = 30000;
        o->max_ejection_percent = 10;
        o->min_health_percent = 0;
        struct ist_cursor oc;
        ist_cursor_init(&oc, dr, NULL);
        bool q = x->quiet;
        x->quiet = true;
        uint32_t v;
        bool b;
        if (ist_u32(x, &oc, od, "consecutive5xxErrors", 0, INT32_MAX, &v))
            o->consecutive_5xx = v;
        if (ist_u32(x, &oc, od, "consecutiveGatewayErrors", 0, INT32_MAX, &v))
            o->consecutive_gateway = v;
        if (ist_u32(x, &oc, od, "consecutiveLocalOriginFailures", 0, INT32_MAX, &v))
            o->consecutive_local = v;
        if (ist_bool(x, &oc, od, "splitExternalLocalOriginErrors", &b))
            o->split_local = b;
        if (ist_duration(x, &oc, od, "interval", 24u * 3600u * 1000u, &v) && v > 0)
            o->interval_ms = v;
        if (ist_duration(x, &oc, od, "baseEjectionTime", 24u * 3600u * 1000u, &v) && v > 0)
            o->base_ejection_ms = v;
        /* 0 means the default (istiod), i.e. 10% */
        if (ist_u32(x, &oc, od, "maxEjectionPercent", 0, 100, &v) && v > 0)
            o->max_ejection_percent = v;
        if (ist_u32(x, &oc, od, "minHealthPercent", 0, 100, &v))
            o->min_health_percent = v;
        x->quiet = q;
    }
    struct ist_cursor c;
    ist_cursor_init(&c, dr, NULL);
    bool quiet = x->quiet;
    x->quiet = true; /* checked once by ist_dr_check */
    uint32_t ms;
    if (ist_duration(x, &c, tcp, "connectTimeout", 24u * 3600u * 1000u, &ms) && ms > 0)
        p->connect_timeout_ms = ms;
    if (ist_duration(x, &c, http, "idleTimeout", 24u * 3600u * 1000u, &ms) && ms > 0)
        p->idle_timeout_ms = ms;
    x->quiet = quiet;
    if (tr_rnode_str(tr_rnode_get(http, "h2UpgradePolicy"), &s) && strcmp(s, "UPGRADE") == 0)
        p->h2_upgrade = true;
    bool b;
    if (tr_rnode_bool(tr_rnode_get(http, "useClientProtocol"), &b) && b)
        p->use_client_protocol = true;
    if (tr_rnode_int(tr_rnode_get(http, "maxConcurrentStreams"), &n) && n > 0 && n <= 10000)
        p->h2_max_streams = (uint32_t)n;
    if (tr_rnode_str(tr_rnode_get(parts.tls, "mode"), &s)) {
        if (strcmp(s, "DISABLE") == 0)
            p->tls = IST_TLS_DISABLE;
        else if (strcmp(s, "ISTIO_MUTUAL") == 0)
            p->tls = IST_TLS_ISTIO_MUTUAL;
        else if (strcmp(s, "SIMPLE") == 0)
            p->tls = IST_TLS_SIMPLE;
        else if (strcmp(s, "MUTUAL") == 0)
            p->tls = IST_TLS_MUTUAL;
        else
            p->tls = IST_TLS_UNSUPPORTED;
    }
    tr_rnode_str(tr_rnode_get(parts.tls, "sni"), &p->sni);
    p->sans = tr_rnode_get(parts.tls, "subjectAltNames");
    if (p->tls == IST_TLS_SIMPLE || p->tls == IST_TLS_MUTUAL)
        client_context(x, dr, parts.tls, p);
}
