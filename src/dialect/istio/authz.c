/* dialect/istio/authz.c: AuthorizationPolicy (security.istio.io v1 and
 * v1beta1) -> listeners[].authorization.policies of the workload's inbound
 * listeners.
 *
 * Which policies apply: those of the root namespace (mesh-wide) and of the
 * workload's namespace, each when its selector matches the workload's
 * labels (no selector: every workload in scope), or, with targetRefs, when
 * a referenced Service selects the workload (then only on that Service's
 * ports). Every field is read or reported; the values are checked here with
 * the same syntax functions the model's validate uses (core/authz_syntax.h),
 * so a finding names the resource and its field.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/authz_syntax.h"
#include "dialect/istio/internal.h"

#define AZ_GROUP "security.istio.io"

enum az_vkind { AZV_PATTERN, AZV_CIDR, AZV_PORT, AZV_PATH, AZV_ANY };

static bool az_pattern_ok(const char *s, char *why, size_t size)
{
    size_t len = strlen(s);
    const char *star = strchr(s, '*');
    if (star != NULL && len > 1 &&
        (strchr(star + 1, '*') != NULL || (star != s && star != s + len - 1))) {
        snprintf(why, size, "\"*\" is only allowed once, at the start or the end, got \"%.128s\"",
                 s);
        return false;
    }
    return true;
}

static bool az_port_ok(const char *s, char *why, size_t size)
{
    size_t len = strlen(s);
    unsigned long v = strtoul(s, NULL, 10);
    if (len == 0 || len > 5 || strspn(s, "0123456789") != len || v == 0 || v > 65535) {
        snprintf(why, size, "a port is a number 1-65535, got \"%.64s\"", s);
        return false;
    }
    return true;
}

static bool az_value_ok(enum az_vkind k, const char *s, char *why, size_t size)
{
    struct tr_cidr cidr;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            snprintf(why, size, "control characters are not allowed");
            return false;
        }
    }
    if (s[0] == '\0') {
        snprintf(why, size, "must not be empty");
        return false;
    }
    switch (k) {
    case AZV_PATTERN:
        return az_pattern_ok(s, why, size);
    case AZV_CIDR:
        return tr_cidr_parse(s, &cidr, why, size);
    case AZV_PORT:
        return az_port_ok(s, why, size);
    case AZV_PATH:
        return tr_az_path_check(s, why, size);
    case AZV_ANY:
        return true;
    }
    return true;
}

/* map[key]: a list of strings, each checked, copied into the model. A bad
 * entry is an error (the resource is refused). */
static void az_strings(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                       const char *key, enum az_vkind k, const char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    const struct tr_rnode *l = ist_list(x, c, map, key);
    if (l == NULL || l->n == 0)
        return;
    const char **v = ist_malloc(x, l->n, sizeof(*v));
    if (v == NULL)
        return;
    size_t saved = ist_push_key(c, key), i = 0;
    for (const struct tr_rnode *e = l->head; e != NULL; e = e->next, i++) {
        size_t si = ist_push_index(c, i);
        const char *s;
        char why[256];
        if (!tr_rnode_str(e, &s) || e->kind != TR_RNODE_SCALAR) {
            ist_error(x, c, e, NULL, "expected a string");
        } else if (!az_value_ok(k, s, why, sizeof(why))) {
            ist_error(x, c, e, NULL, "%s", why);
        } else {
            if (k == AZV_PATH && s[0] != '/' && s[0] != '*')
                ist_warn(x, c, e, NULL, "\"%s\" matches no request path (paths start with \"/\")",
                         s);
            v[(*n)++] = ist_mstrdup(x, s);
        }
        ist_pop(c, si);
    }
    ist_pop(c, saved);
    *out = v;
}

#define AZ_PAIR(map, key, nkey, k, field)                                                          \
    do {                                                                                           \
        az_strings(x, c, (map), key, k, &o->field, &o->n_##field);                                 \
        az_strings(x, c, (map), nkey, k, &o->not_##field, &o->n_not_##field);                      \
    } while (0)

/* serviceAccounts "NS/SA" (or "SA", the policy's namespace) are principals
 * of any trust domain: the suffix pattern "*\/ns/NS/sa/SA". */
static void az_service_accounts(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                                const char *key, const char *ns, const char ***list, size_t *n)
{
    const char **sas;
    size_t n_sas;
    az_strings(x, c, map, key, AZV_ANY, &sas, &n_sas);
    if (n_sas == 0)
        return;
    const char **v = ist_malloc(x, *n + n_sas, sizeof(*v));
    if (v == NULL)
        return;
    if (*n > 0)
        memcpy(v, *list, *n * sizeof(*v));
    for (size_t i = 0; i < n_sas; i++) {
        const char *slash = strchr(sas[i], '/');
        if (strchr(sas[i], '*') != NULL || (slash != NULL && strchr(slash + 1, '/') != NULL)) {
            size_t saved = ist_push_key(c, key);
            ist_push_index(c, i);
            ist_error(x, c, tr_rnode_get(map, key), NULL,
                      "expected SERVICE_ACCOUNT or NAMESPACE/SERVICE_ACCOUNT, got \"%s\"", sas[i]);
            ist_pop(c, saved);
            continue;
        }
        v[(*n)++] = slash != NULL ? ist_mprintf(x, "*/ns/%.*s/sa/%s", (int)(slash - sas[i]), sas[i],
                                                slash + 1)
                                  : ist_mprintf(x, "*/ns/%s/sa/%s", ns, sas[i]);
    }
    *list = v;
}

static void az_source(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *src,
                      const char *ns, struct tr_authz_source_cfg *o)
{
    static const struct ist_key keys[] = {
        {"principals", NULL},        {"notPrincipals", NULL},
        {"requestPrincipals", NULL}, {"notRequestPrincipals", NULL},
        {"namespaces", NULL},        {"notNamespaces", NULL},
        {"ipBlocks", NULL},          {"notIpBlocks", NULL},
        {"remoteIpBlocks", NULL},    {"notRemoteIpBlocks", NULL},
        {"serviceAccounts", NULL},   {"notServiceAccounts", NULL},
    };
    if (!IST_KEYS(x, c, src, keys))
        return;
    AZ_PAIR(src, "principals", "notPrincipals", AZV_PATTERN, principals);
    AZ_PAIR(src, "requestPrincipals", "notRequestPrincipals", AZV_PATTERN, request_principals);
    AZ_PAIR(src, "namespaces", "notNamespaces", AZV_PATTERN, namespaces);
    AZ_PAIR(src, "ipBlocks", "notIpBlocks", AZV_CIDR, ip_blocks);
    AZ_PAIR(src, "remoteIpBlocks", "notRemoteIpBlocks", AZV_CIDR, remote_ip_blocks);
    az_service_accounts(x, c, src, "serviceAccounts", ns, &o->principals, &o->n_principals);
    az_service_accounts(x, c, src, "notServiceAccounts", ns, &o->not_principals,
                        &o->n_not_principals);
}

static void az_operation(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *op,
                         struct tr_authz_operation_cfg *o)
{
    static const struct ist_key keys[] = {
        {"hosts", NULL},   {"notHosts", NULL},   {"ports", NULL}, {"notPorts", NULL},
        {"methods", NULL}, {"notMethods", NULL}, {"paths", NULL}, {"notPaths", NULL},
    };
    if (!IST_KEYS(x, c, op, keys))
        return;
    AZ_PAIR(op, "hosts", "notHosts", AZV_PATTERN, hosts);
    AZ_PAIR(op, "ports", "notPorts", AZV_PORT, ports);
    AZ_PAIR(op, "methods", "notMethods", AZV_PATTERN, methods);
    AZ_PAIR(op, "paths", "notPaths", AZV_PATH, paths);
}

static void az_condition(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *w,
                         struct tr_authz_condition_cfg *o)
{
    static const struct ist_key keys[] = {{"key", NULL}, {"values", NULL}, {"notValues", NULL}};
    if (!IST_KEYS(x, c, w, keys))
        return;
    const char *key = NULL;
    if (!ist_str(x, c, w, "key", &key)) {
        ist_error(x, c, w, "key", "missing required field");
        return;
    }
    char why[256];
    tr_str arg[TR_AZ_MAX_CLAIM_DEPTH];
    size_t n_arg;
    enum tr_az_key k = tr_az_key_parse(key, arg, &n_arg, why, sizeof(why));
    if (k == TR_AZK_INVALID) {
        ist_error(x, c, tr_rnode_get(w, "key"), "key", "%s", why);
        return;
    }
    o->key = ist_mstrdup(x, key);
    enum az_vkind vk = k == TR_AZK_SOURCE_IP || k == TR_AZK_REMOTE_IP || k == TR_AZK_DEST_IP
                           ? AZV_CIDR
                       : k == TR_AZK_DEST_PORT ? AZV_PORT
                                               : AZV_PATTERN;
    az_strings(x, c, w, "values", vk, &o->values, &o->n_values);
    az_strings(x, c, w, "notValues", vk, &o->not_values, &o->n_not_values);
    const struct tr_rnode *vl = tr_rnode_get(w, "values"), *nl = tr_rnode_get(w, "notValues");
    if ((vl == NULL || vl->kind != TR_RNODE_SEQ || vl->n == 0) &&
        (nl == NULL || nl->kind != TR_RNODE_SEQ || nl->n == 0))
        ist_error(x, c, w, NULL, "one of values, notValues is required");
}

/* map[key] as a list of mappings: n entries of size into *out. */
static const struct tr_rnode *az_maps(struct ist_ctx *x, struct ist_cursor *c,
                                      const struct tr_rnode *map, const char *key, size_t size,
                                      void **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    const struct tr_rnode *l = ist_list(x, c, map, key);
    if (l == NULL || l->n == 0)
        return NULL;
    *out = ist_malloc(x, l->n, size);
    if (*out == NULL)
        return NULL;
    *n = l->n;
    return l;
}

static void az_rule(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *rule,
                    const char *ns, struct tr_authz_policy_rule_cfg *o)
{
    static const struct ist_key keys[] = {{"from", NULL}, {"to", NULL}, {"when", NULL}};
    if (!IST_KEYS(x, c, rule, keys))
        return;
    o->loc = ist_loc(x, c, rule);
    void *p;
    const struct tr_rnode *l = az_maps(x, c, rule, "from", sizeof(*o->from), &p, &o->n_from);
    o->from = p;
    size_t i = 0;
    for (const struct tr_rnode *e = l ? l->head : NULL; e != NULL; e = e->next, i++) {
        static const struct ist_key fkeys[] = {{"source", NULL}};
        size_t saved = ist_push_key(c, "from");
        ist_push_index(c, i);
        if (IST_KEYS(x, c, e, fkeys)) {
            const struct tr_rnode *src = ist_map(x, c, e, "source");
            if (src == NULL)
                ist_error(x, c, e, "source", "missing required field");
            size_t s2 = ist_push_key(c, "source");
            o->from[i].loc = ist_loc(x, c, src ? src : e);
            if (src != NULL)
                az_source(x, c, src, ns, &o->from[i]);
            ist_pop(c, s2);
        }
        ist_pop(c, saved);
    }
    l = az_maps(x, c, rule, "to", sizeof(*o->to), &p, &o->n_to);
    o->to = p;
    i = 0;
    for (const struct tr_rnode *e = l ? l->head : NULL; e != NULL; e = e->next, i++) {
        static const struct ist_key tkeys[] = {{"operation", NULL}};
        size_t saved = ist_push_key(c, "to");
        ist_push_index(c, i);
        if (IST_KEYS(x, c, e, tkeys)) {
            const struct tr_rnode *op = ist_map(x, c, e, "operation");
            if (op == NULL)
                ist_error(x, c, e, "operation", "missing required field");
            size_t s2 = ist_push_key(c, "operation");
            o->to[i].loc = ist_loc(x, c, op ? op : e);
            if (op != NULL)
                az_operation(x, c, op, &o->to[i]);
            ist_pop(c, s2);
        }
        ist_pop(c, saved);
    }
    l = az_maps(x, c, rule, "when", sizeof(*o->when), &p, &o->n_when);
    o->when = p;
    i = 0;
    for (const struct tr_rnode *e = l ? l->head : NULL; e != NULL; e = e->next, i++) {
        size_t saved = ist_push_key(c, "when");
        ist_push_index(c, i);
        o->when[i].loc = ist_loc(x, c, e);
        az_condition(x, c, e, &o->when[i]);
        ist_pop(c, saved);
    }
}

/* Where a policy applies on this workload. */
enum az_scope { AZ_NONE = 0, AZ_ALL_PORTS, AZ_SOME_PORTS };

/* selector / targetRefs: does r apply to the workload, and on which
 * inbound ports (ports[] of a Service referenced by targetRefs). */
static enum az_scope az_applies(struct ist_ctx *x, struct ist_cursor *c,
                                const struct tr_resource *r, uint32_t *ports, size_t *n_ports,
                                size_t max_ports)
{
    const char *rns = r->ns ? r->ns : "default";
    bool root = strcmp(rns, x->o->root_ns) == 0;
    *n_ports = 0;
    if (!root && (x->wl_ns == NULL || strcmp(rns, x->wl_ns) != 0))
        return AZ_NONE;
    const struct tr_rnode *sel = ist_map(x, c, r->spec, "selector");
    const struct tr_rnode *refs = ist_list(x, c, r->spec, "targetRefs");
    const struct tr_rnode *ref1 = ist_map(x, c, r->spec, "targetRef");
    if (sel != NULL) {
        static const struct ist_key skeys[] = {{"matchLabels", NULL}};
        size_t saved = ist_push_key(c, "selector");
        bool ok = IST_KEYS(x, c, sel, skeys);
        ist_pop(c, saved);
        if (!ok)
            return AZ_NONE;
        return ist_labels_match(tr_rnode_get(sel, "matchLabels"), x->wl_labels) ? AZ_ALL_PORTS
                                                                                : AZ_NONE;
    }
    if (refs == NULL && ref1 == NULL)
        return AZ_ALL_PORTS;
    enum az_scope scope = AZ_NONE;
    const struct tr_rnode *one[1] = {ref1};
    size_t i = 0;
    for (const struct tr_rnode *e = ref1 ? one[0] : refs->head; e != NULL;
         e = ref1 ? NULL : e->next, i++) {
        static const struct ist_key rkeys[] = {
            {"group", NULL}, {"kind", NULL}, {"name", NULL}, {"namespace", NULL}};
        size_t saved = ist_push_key(c, ref1 ? "targetRef" : "targetRefs");
        if (!ref1)
            ist_push_index(c, i);
        const char *group = "", *kind = NULL, *name = NULL, *ns = NULL;
        if (IST_KEYS(x, c, e, rkeys)) {
            ist_str(x, c, e, "group", &group);
            ist_str(x, c, e, "namespace", &ns);
            if (!ist_str(x, c, e, "kind", &kind) || !ist_str(x, c, e, "name", &name)) {
                ist_error(x, c, e, NULL, "kind and name are required");
            } else if (ns != NULL && strcmp(ns, rns) != 0) {
                ist_error(x, c, e, "namespace",
                          "a target must be in the policy's namespace (%s), got \"%s\"", rns, ns);
            } else if (strcmp(kind, "Service") == 0 &&
                       (group[0] == '\0' || strcmp(group, "core") == 0)) {
                for (size_t s = 0; s < x->n_svcs; s++) {
                    const struct ist_service *svc = x->svcs[s];
                    if (svc->name == NULL || strcmp(svc->name, name) != 0 ||
                        strcmp(svc->ns, rns) != 0 || svc->selector == NULL || x->wl_ns == NULL ||
                        strcmp(svc->ns, x->wl_ns) != 0 ||
                        !ist_labels_match(svc->selector, x->wl_labels))
                        continue;
                    scope = AZ_SOME_PORTS;
                    for (size_t p = 0; p < svc->n_ports && *n_ports < max_ports; p++) {
                        if (svc->ports[p].target != 0)
                            ports[(*n_ports)++] = svc->ports[p].target;
                    }
                }
            } else {
                bool core = group[0] == '\0' || strcmp(group, "core") == 0;
                ist_warn(x, c, e, core ? "kind" : "group",
                         "targets of kind %s%s%s are not supported yet (a sidecar enforces "
                         "Service targets): the policy is not applied",
                         group[0] ? group : "", group[0] ? "/" : "", kind);
            }
        }
        ist_pop(c, saved);
    }
    return scope;
}

/* One policy into the model (in the model's arena), or false when it does
 * not apply / was refused. */
static bool az_policy(struct ist_ctx *x, const struct tr_resource *r,
                      struct tr_authz_policy_cfg *out, uint32_t *ports, size_t *n_ports,
                      enum az_scope *scope)
{
    static const struct ist_key keys[] = {
        {"selector", NULL}, {"targetRef", NULL}, {"targetRefs", NULL},
        {"action", NULL},   {"rules", NULL},     {"provider", NULL},
    };
    struct ist_cursor c;
    ist_cursor_init(&c, r, "spec");
    const char *rns = r->ns ? r->ns : "default";
    if (r->spec == NULL) {
        /* No spec at all reads as `spec: {}`. */
    } else if (!IST_KEYS(x, &c, r->spec, keys)) {
        return false;
    }
    if (tr_rnode_get(r->spec, "selector") != NULL &&
        (tr_rnode_get(r->spec, "targetRefs") != NULL || tr_rnode_get(r->spec, "targetRef") != NULL))
        ist_error(x, &c, tr_rnode_get(r->spec, "selector"), "selector",
                  "selector and targetRefs are exclusive");
    *scope = az_applies(x, &c, r, ports, n_ports, 64);
    /* istio.io/dry-run: Istio evaluates the policy for its logs and
     * metrics only and never enforces it. Not enforcing it is the same
     * traffic; the shadow result is what trellis does not give yet. */
    bool dry_run = false;
    const struct tr_rnode *dr = tr_rnode_get(r->annotations, "istio.io/dry-run");
    if (dr != NULL) {
        struct ist_cursor mc;
        ist_cursor_init(&mc, r, "metadata");
        size_t saved = ist_push_key(&mc, "annotations");
        const char *v = NULL;
        tr_rnode_str(dr, &v);
        if (v != NULL && strcmp(v, "true") == 0) {
            dry_run = true;
            ist_warn(x, &mc, dr, "istio.io/dry-run",
                     "a dry-run policy is not enforced (as in Istio); trellis does not report "
                     "its shadow decision yet");
        } else if (v == NULL || strcmp(v, "false") != 0) {
            ist_warn(x, &mc, dr, "istio.io/dry-run",
                     "expected \"true\" or \"false\"; the policy is enforced");
        }
        ist_pop(&mc, saved);
    }
    const char *action = "ALLOW";
    const struct tr_rnode *an = tr_rnode_get(r->spec, "action");
    if (ist_str(x, &c, r->spec, "action", &action) && strcmp(action, "ALLOW") != 0 &&
        strcmp(action, "DENY") != 0 && strcmp(action, "AUDIT") != 0 &&
        strcmp(action, "CUSTOM") != 0)
        ist_error(x, &c, an, "action", "expected ALLOW, DENY, AUDIT or CUSTOM, got \"%s\"", action);
    out->name = ist_mprintf(x, "%s/%s", rns, r->name ? r->name : "");
    out->action = strcmp(action, "DENY") == 0    ? TR_AUTHZ_DENY
                  : strcmp(action, "AUDIT") == 0 ? TR_AUTHZ_AUDIT
                                                 : TR_AUTHZ_ALLOW;
    const struct tr_rnode *prov = tr_rnode_get(r->spec, "provider");
    bool fail_closed = false;
    if (strcmp(action, "CUSTOM") == 0) {
        /* The provider's external authorizer (mesh.c); one that cannot be
         * used fails closed: what it would be asked about is denied. */
        const char *name = NULL;
        if (prov == NULL)
            ist_error(x, &c, an, "action",
                      "CUSTOM needs spec.provider (an extension provider of the mesh "
                      "configuration): requests the rules match are denied");
        else
            name = ist_ext_authz_provider(x, &c, prov);
        if (name != NULL) {
            out->action = TR_AUTHZ_CUSTOM;
            out->provider_name = name;
        } else {
            out->action = TR_AUTHZ_DENY;
            fail_closed = true;
        }
    }
    if (prov != NULL && strcmp(action, "CUSTOM") != 0)
        ist_error(x, &c, prov, "provider", "provider is only allowed with action CUSTOM");
    else if (prov != NULL && prov->kind == TR_RNODE_MAP) {
        for (const struct tr_rnode *k = prov->head; k != NULL && k->next != NULL; k = k->next->next)
            if (k->s == NULL || strcmp(k->s, "name") != 0)
                ist_warn(x, &c, k, "provider", "unknown field %s: ignored", k->s ? k->s : "?");
    }
    out->loc = ist_loc(x, &c, r->spec);
    void *p;
    const struct tr_rnode *l =
        az_maps(x, &c, r->spec, "rules", sizeof(*out->rules), &p, &out->n_rules);
    out->rules = p;
    size_t i = 0;
    for (const struct tr_rnode *e = l ? l->head : NULL; e != NULL; e = e->next, i++) {
        size_t saved = ist_push_key(&c, "rules");
        ist_push_index(&c, i);
        if (e->kind != TR_RNODE_MAP && !(e->kind == TR_RNODE_SCALAR && e->len == 0))
            ist_error(x, &c, e, NULL, "expected a mapping");
        else
            az_rule(x, &c, e, rns, &out->rules[i]);
        ist_pop(&c, saved);
    }
    /* A refused policy is left out, but for a CUSTOM one whose authorizer
     * cannot be used: left out, it would let through what it was to check. */
    return *scope != AZ_NONE && (fail_closed || !ist_refused(x, r)) && !dry_run;
}

bool ist_authz(struct ist_ctx *x)
{
    size_t n1;
    const struct tr_resource *const *v1 =
        tr_rset_of_kind(x->rs, AZ_GROUP, "AuthorizationPolicy", &n1);
    struct tr_config *cfg = x->cfg;
    size_t n2 = n1;
    if (n2 == 0)
        return true;
    struct tr_authz_policy_cfg *pols = ist_alloc(x, n2, sizeof(*pols));
    uint32_t(*ports)[64] = ist_alloc(x, n2, sizeof(*ports));
    size_t *n_ports = ist_alloc(x, n2, sizeof(*n_ports));
    enum az_scope *scope = ist_alloc(x, n2, sizeof(*scope));
    if (pols == NULL || ports == NULL || n_ports == NULL || scope == NULL)
        return false;
    bool *use = ist_alloc(x, n2, sizeof(*use));
    if (use == NULL)
        return false;
    bool gateway = ist_is_gateway(x);
    for (size_t i = 0; i < n1; i++) {
        use[i] = az_policy(x, v1[i], &pols[i], ports[i], &n_ports[i], &scope[i]);
        if (use[i] && gateway && scope[i] != AZ_ALL_PORTS) {
            /* A Service's ports are the backends', not the gateway's
             * listeners: dropping it would open the gateway, so refuse. */
            struct ist_cursor c;
            ist_cursor_init(&c, v1[i], "spec");
            ist_error(x, &c, v1[i]->spec, NULL,
                      "applies to gateway %s/%s through a Service's ports: a gateway takes "
                      "policies that select it (selector), on every listener",
                      x->wl_ns, x->wl_name);
            use[i] = false;
        }
    }
    if (x->checking)
        return true;
    /* One provider per workload (Istio's rule): with CUSTOM policies naming
     * several, every CUSTOM policy of the workload fails closed. */
    const char *first = NULL;
    bool several = false;
    for (size_t i = 0; i < n2; i++) {
        if (!use[i] || pols[i].action != TR_AUTHZ_CUSTOM)
            continue;
        if (first == NULL)
            first = pols[i].provider_name;
        else if (strcmp(first, pols[i].provider_name) != 0)
            several = true;
    }
    for (size_t i = 0; several && i < n2; i++) {
        if (!use[i] || pols[i].action != TR_AUTHZ_CUSTOM)
            continue;
        struct ist_cursor c;
        ist_cursor_init(&c, v1[i], "spec");
        ist_error(x, &c, tr_rnode_get(tr_rnode_get(v1[i]->spec, "provider"), "name"),
                  "provider.name",
                  "the CUSTOM policies of workload %s/%s name more than one provider (\"%s\" and "
                  "others); Istio allows one: every CUSTOM policy of the workload denies what its "
                  "rules match",
                  x->wl_ns, x->wl_name, first);
        pols[i].action = TR_AUTHZ_DENY;
        pols[i].provider_name = NULL;
    }
    /* Each inbound listener gets the policies that apply to its port, in
     * resource order; a gateway's listeners (gateway|PORT) get the policies
     * that select the gateway, as Istio applies them at its gateways. */
    for (size_t li = 0; li < cfg->n_listeners; li++) {
        struct tr_listener_cfg *l = &cfg->listeners[li];
        bool inbound = l->direction == TR_DIR_INBOUND && strncmp(l->name, "inbound|", 8) == 0;
        if (!inbound && !(gateway && strncmp(l->name, "gateway|", 8) == 0))
            continue;
        uint32_t lport = (uint32_t)strtoul(l->name + 8, NULL, 10);
        size_t n = 0;
        for (size_t i = 0; i < n2; i++) {
            bool on = use[i] && (scope[i] == AZ_ALL_PORTS);
            for (size_t k = 0; use[i] && !on && k < n_ports[i]; k++)
                on = ports[i][k] == lport;
            n += on;
        }
        if (n == 0)
            continue;
        l->authz.policies = ist_malloc(x, n, sizeof(*l->authz.policies));
        if (l->authz.policies == NULL)
            return false;
        for (size_t i = 0; i < n2; i++) {
            bool on = use[i] && (scope[i] == AZ_ALL_PORTS);
            for (size_t k = 0; use[i] && !on && k < n_ports[i]; k++)
                on = ports[i][k] == lport;
            if (on)
                l->authz.policies[l->authz.n_policies++] = pols[i];
        }
    }
    return true;
}
