/* dialect/istio/mesh.c: Istio's MeshConfig, as istiod reads it: the
 * ConfigMap `istio` in the root namespace, key data.mesh, a YAML string
 * parsed with the resource layer's reader (tr_rnode_parse).
 *
 * What trellis reads of it: extensionProviders[] with envoyExtAuthzHttp,
 * the external authorizers of CUSTOM AuthorizationPolicies (model.h,
 * struct tr_ext_authz_cfg), and pathNormalization, every listener's
 * path_normalization (Istio's values map one to one). Every other field of the mesh configuration,
 * every other provider kind and every other key of the ConfigMap's data is
 * a warning naming it: nothing is ignored silently.
 *
 * Findings inside the string name the ConfigMap and the field path after
 * "data.mesh: " (data.mesh: extensionProviders[0].envoyExtAuthzHttp.port),
 * at the location of data.mesh in its file, with the line inside the mesh
 * text in the message (the string's own lines are not the file's: a block
 * scalar is indented, a quoted one escaped). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dialect/istio/internal.h"

#define IST_EXT_AUTHZ_TIMEOUT_MS (600u * 1000u) /* Istio's default: 600s */
#define IST_MAX_DURATION_MS      (30u * 24u * 3600u * 1000u)

/* A cursor at "data.mesh: PATH" of the ConfigMap. */
static void mesh_cursor(struct ist_ctx *x, struct ist_cursor *c, const char *path)
{
    char p[IST_PATH_MAX];
    snprintf(p, sizeof(p), "data.mesh: %s", path);
    ist_cursor_init(c, x->mesh_cm, p);
}

static void mesh_report(struct ist_ctx *x, bool error, const char *path, const struct tr_rnode *n,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void mesh_report(struct ist_ctx *x, bool error, const char *path, const struct tr_rnode *n,
                        const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct ist_cursor c;
    mesh_cursor(x, &c, path);
    if (error)
        ist_error(x, &c, x->mesh_node, NULL, "%s (line %u of the mesh configuration)", msg,
                  n != NULL ? n->line : 0);
    else
        ist_warn(x, &c, x->mesh_node, NULL, "%s (line %u of the mesh configuration)", msg,
                 n != NULL ? n->line : 0);
}

/* pathNormalization: {normalization: DEFAULT|NONE|BASE|MERGE_SLASHES|
 * DECODE_AND_MERGE_SLASHES}. DEFAULT is Istio's default, BASE: written
 * out, it asks for Istio's behaviour rather than trellis's stricter one. */
static void read_path_normalization(struct ist_ctx *x, const struct tr_rnode *v)
{
    static const struct {
        const char *name;
        enum tr_path_normalization mode;
    } modes[] = {
        {"DEFAULT", TR_PATHNORM_BASE},
        {"NONE", TR_PATHNORM_NONE},
        {"BASE", TR_PATHNORM_BASE},
        {"MERGE_SLASHES", TR_PATHNORM_MERGE_SLASHES},
        {"DECODE_AND_MERGE_SLASHES", TR_PATHNORM_DECODE_AND_MERGE_SLASHES},
    };
    if (tr_rnode_is_null(v))
        return;
    if (v->kind != TR_RNODE_MAP) {
        mesh_report(x, true, "pathNormalization", v, "expected a mapping");
        return;
    }
    for (const struct tr_rnode *k = v->head; k != NULL && k->next != NULL; k = k->next->next) {
        if (k->s != NULL && strcmp(k->s, "normalization") == 0)
            continue;
        char sub[96];
        snprintf(sub, sizeof(sub), "pathNormalization.%s", k->s ? k->s : "?");
        mesh_report(x, false, sub, k, "unknown field: ignored");
    }
    const struct tr_rnode *n = tr_rnode_get(v, "normalization");
    const char *s;
    if (n == NULL)
        return; /* the enum's zero: DEFAULT, trellis's default stands */
    if (!tr_rnode_str(n, &s)) {
        mesh_report(x, true, "pathNormalization.normalization", n, "expected a string");
        return;
    }
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (strcmp(s, modes[i].name) == 0) {
            x->mesh_pathnorm_set = true;
            x->mesh_pathnorm = modes[i].mode;
            return;
        }
    mesh_report(x, true, "pathNormalization.normalization", n,
                "expected DEFAULT, NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES, got "
                "\"%s\"",
                s);
}

/* Reads the ConfigMap once per compile: the providers' nodes. */
void ist_mesh_read(struct ist_ctx *x)
{
    if (x->mesh_read)
        return;
    x->mesh_read = true;
    const struct tr_resource *cm = tr_rset_find(x->rs, "", "ConfigMap", x->o->root_ns, "istio");
    if (cm == NULL)
        return;
    x->mesh_cm = cm;
    struct ist_cursor c;
    ist_cursor_init(&c, cm, "data");
    const struct tr_rnode *data = tr_rnode_get(cm->obj, "data");
    if (data == NULL || data->kind != TR_RNODE_MAP)
        return;
    for (const struct tr_rnode *k = data->head; k != NULL && k->next != NULL; k = k->next->next) {
        if (k->s != NULL && strcmp(k->s, "mesh") == 0)
            continue;
        ist_warn(x, &c, k, k->s,
                 "not read by trellis (only data.mesh is, for extensionProviders): ignored");
    }
    const struct tr_rnode *mesh = tr_rnode_get(data, "mesh");
    const char *text;
    if (mesh == NULL || !tr_rnode_str(mesh, &text))
        return;
    x->mesh_node = mesh;
    char name[512];
    snprintf(name, sizeof(name), "%s (ConfigMap %s/istio data.mesh)", cm->file ? cm->file : "-",
             x->o->root_ns);
    struct tr_diags inner;
    tr_diags_init(&inner);
    const struct tr_rnode *root = NULL;
    x->mesh_rs = tr_rnode_parse(text, mesh->len, name, &inner, &root);
    if (x->mesh_rs == NULL) {
        tr_diags_free(&inner);
        ist_oom(x);
        return;
    }
    for (size_t i = 0; i < inner.n; i++)
        mesh_report(x, inner.v[i].severity == TR_DIAG_ERROR, "", NULL, "%s", inner.v[i].msg);
    tr_diags_free(&inner);
    if (root == NULL)
        return;
    if (root->kind != TR_RNODE_MAP) {
        mesh_report(x, true, "", root, "expected a mapping (a MeshConfig)");
        return;
    }
    for (const struct tr_rnode *k = root->head; k != NULL && k->next != NULL; k = k->next->next) {
        if (k->s != NULL && strcmp(k->s, "pathNormalization") == 0) {
            read_path_normalization(x, k->next);
            continue;
        }
        if (k->s != NULL && strcmp(k->s, "localityLbSetting") == 0) {
            /* The mesh-wide default a DestinationRule's own replaces. */
            if (k->next->kind != TR_RNODE_MAP)
                mesh_report(x, true, "localityLbSetting", k->next, "expected a mapping");
            else
                x->mesh_locality = k->next;
            continue;
        }
        if (k->s == NULL || strcmp(k->s, "extensionProviders") != 0) {
            mesh_report(x, false, k->s ? k->s : "?", k,
                        "this MeshConfig field is not read by trellis: ignored");
            continue;
        }
        const struct tr_rnode *l = k->next;
        if (tr_rnode_is_null(l))
            continue;
        if (l->kind != TR_RNODE_SEQ) {
            mesh_report(x, true, "extensionProviders", l, "expected a list");
            continue;
        }
        x->providers = ist_alloc(x, l->n ? l->n : 1, sizeof(*x->providers));
        if (x->providers == NULL)
            return;
        size_t i = 0;
        for (const struct tr_rnode *e = l->head; e != NULL; e = e->next, i++) {
            char path[64];
            snprintf(path, sizeof(path), "extensionProviders[%zu]", i);
            struct ist_provider *p = &x->providers[x->n_providers];
            *p = (struct ist_provider){.index = i, .model = -1};
            if (e->kind != TR_RNODE_MAP) {
                mesh_report(x, true, path, e, "expected a mapping");
                continue;
            }
            for (const struct tr_rnode *pk = e->head; pk != NULL && pk->next != NULL;
                 pk = pk->next->next) {
                const char *key = pk->s ? pk->s : "?";
                if (strcmp(key, "name") == 0) {
                    tr_rnode_str(pk->next, &p->name);
                } else if (strcmp(key, "envoyExtAuthzHttp") == 0) {
                    p->http = pk->next;
                    p->kind = key;
                } else {
                    /* envoyExtAuthzGrpc, zipkin, opentelemetry, envoyFileAccessLog... */
                    p->kind = key;
                    char sub[96];
                    snprintf(sub, sizeof(sub), "%s.%s", path, key);
                    mesh_report(x, false, sub, pk,
                                "extension provider kind %s is not supported by trellis (only "
                                "envoyExtAuthzHttp): ignored",
                                key);
                }
            }
            if (p->name == NULL) {
                mesh_report(x, true, path, e, "name: missing required field");
                continue;
            }
            for (size_t j = 0; j < x->n_providers; j++) {
                if (strcmp(x->providers[j].name, p->name) == 0) {
                    mesh_report(x, true, path, e,
                                "name \"%s\": a second provider of this name (the first wins)",
                                p->name);
                    p->name = NULL;
                    break;
                }
            }
            if (p->name != NULL)
                x->n_providers++;
        }
    }
}

/* A header name pattern as the model takes it: a token with at most one
 * "*", first or last (Istio's exact, prefix and suffix matches). */
static bool header_pattern_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 256)
        return false;
    const char *star = strchr(s, '*');
    if (star != NULL && n > 1 &&
        (strchr(star + 1, '*') != NULL || (star != s && star != s + n - 1)))
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("!#$%&'*+-.^_`|~", ch) != NULL))
            return false;
    }
    return true;
}

static char *lower_dup(struct ist_ctx *x, const char *s)
{
    char *d = ist_mstrdup(x, s);
    for (char *p = d; p != NULL && *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return d;
}

/* A list of header patterns at http[key]; false when one is refused. */
static bool patterns(struct ist_ctx *x, const char *path, const struct tr_rnode *http,
                     const char *key, const char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    const struct tr_rnode *l = tr_rnode_get(http, key);
    if (tr_rnode_is_null(l))
        return true;
    char sub[160];
    snprintf(sub, sizeof(sub), "%s.%s", path, key);
    if (l->kind != TR_RNODE_SEQ) {
        mesh_report(x, true, sub, l, "expected a list of header names");
        return false;
    }
    *out = ist_malloc(x, l->n ? l->n : 1, sizeof(**out));
    if (*out == NULL)
        return false;
    size_t i = 0;
    for (const struct tr_rnode *e = l->head; e != NULL; e = e->next, i++) {
        const char *s;
        if (!tr_rnode_str(e, &s) || !header_pattern_ok(s)) {
            char b[64];
            mesh_report(x, true, sub, e,
                        "[%zu]: expected a header name, \"prefix*\" or \"*suffix\", got %s", i,
                        tr_rnode_describe(e, b, sizeof(b)));
            return false;
        }
        (*out)[(*n)++] = lower_dup(x, s);
    }
    return true;
}

/* The model's external authorizer for provider p (made on first use). */
static int provider_model(struct ist_ctx *x, struct ist_provider *p)
{
    if (p->model >= 0 || p->failed)
        return p->model;
    p->failed = true;
    char path[96];
    snprintf(path, sizeof(path), "extensionProviders[%zu].envoyExtAuthzHttp", p->index);
    const struct tr_rnode *h = p->http;
    if (h->kind != TR_RNODE_MAP) {
        mesh_report(x, true, path, h, "expected a mapping");
        return -1;
    }
    static const char *const known[] = {
        "service",
        "port",
        "timeout",
        "pathPrefix",
        "failOpen",
        "statusOnError",
        "includeRequestHeadersInCheck",
        "includeHeadersInCheck",
        "includeAdditionalHeadersInCheck",
        "headersToUpstreamOnAllow",
        "headersToDownstreamOnAllow",
        "headersToDownstreamOnDeny",
        "includeRequestBodyInCheck",
        "clearRouteCache",
    };
    for (const struct tr_rnode *k = h->head; k != NULL && k->next != NULL; k = k->next->next) {
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]) && k->s != NULL; i++)
            ok |= strcmp(k->s, known[i]) == 0;
        char sub[160];
        snprintf(sub, sizeof(sub), "%s.%s", path, k->s ? k->s : "?");
        if (!ok)
            mesh_report(x, false, sub, k, "unknown field: ignored");
        else if (strcmp(k->s, "includeRequestBodyInCheck") == 0 && !tr_rnode_is_null(k->next))
            mesh_report(x, false, sub, k,
                        "not supported by trellis: the check is sent without the request body");
        else if (strcmp(k->s, "clearRouteCache") == 0) {
            bool b = false;
            if (tr_rnode_bool(k->next, &b) && b)
                mesh_report(x, false, sub, k,
                            "not supported by trellis: the route is chosen without the "
                            "authorizer's fields");
        }
    }
    struct tr_ext_authz_cfg e = {.name = ist_mstrdup(x, p->name),
                                 .cluster = -1,
                                 .timeout_ms = IST_EXT_AUTHZ_TIMEOUT_MS,
                                 .status_on_error = 403};
    char sub[160];
    /* service: [NAMESPACE/]HOST, a Service or ServiceEntry host. */
    const char *svc_s = NULL;
    snprintf(sub, sizeof(sub), "%s.service", path);
    if (!tr_rnode_str(tr_rnode_get(h, "service"), &svc_s)) {
        mesh_report(x, true, sub, h, "missing required field");
        return -1;
    }
    const char *host = svc_s, *slash = strchr(svc_s, '/');
    const char *sns = NULL;
    if (slash != NULL) {
        sns = ist_printf(x, "%.*s", (int)(slash - svc_s), svc_s);
        host = slash + 1;
    }
    const char *fq = ist_fqdn(x, host, sns != NULL ? sns : x->o->root_ns);
    const struct ist_service *svc = fq != NULL ? ist_service_by_host(x, fq) : NULL;
    while (svc != NULL && sns != NULL && strcmp(svc->ns, sns) != 0)
        svc = svc->same_host;
    if (svc == NULL) {
        mesh_report(x, true, sub, tr_rnode_get(h, "service"),
                    "\"%s\" is not a Service or ServiceEntry host of the registry", svc_s);
        return -1;
    }
    snprintf(sub, sizeof(sub), "%s.port", path);
    int64_t port = 0;
    const struct tr_rnode *pn = tr_rnode_get(h, "port");
    if (!tr_rnode_int(pn, &port) || port < 1 || port > 65535) {
        mesh_report(x, true, sub, pn != NULL ? pn : h,
                    pn == NULL ? "missing required field" : "expected a port number 1-65535");
        return -1;
    }
    size_t pi = svc->n_ports;
    for (size_t i = 0; i < svc->n_ports; i++)
        if (svc->ports[i].number == (uint32_t)port)
            pi = i;
    if (pi == svc->n_ports) {
        mesh_report(x, true, sub, pn, "service %s has no port %d", svc->host, (int)port);
        return -1;
    }
    if (svc->ports[pi].proto == IST_P_HTTP2 || svc->ports[pi].proto == IST_P_GRPC) {
        mesh_report(x, true, sub, pn,
                    "port %d of %s speaks HTTP/2; the check is sent with HTTP/1.1 "
                    "(envoyExtAuthzGrpc is not supported)",
                    (int)port, svc->host);
        return -1;
    }
    const struct tr_rnode *t = tr_rnode_get(h, "timeout");
    const char *ts;
    if (!tr_rnode_is_null(t)) {
        uint32_t ms = 0;
        snprintf(sub, sizeof(sub), "%s.timeout", path);
        if (!tr_rnode_str(t, &ts) || !ist_parse_duration_ms(ts, IST_MAX_DURATION_MS, &ms) ||
            ms == 0) {
            mesh_report(x, true, sub, t, "expected a duration such as \"1.5s\" or \"100ms\"");
            return -1;
        }
        e.timeout_ms = ms;
    }
    const char *pp;
    if (tr_rnode_str(tr_rnode_get(h, "pathPrefix"), &pp) && pp[0] != '\0') {
        bool ok = pp[0] == '/';
        for (const char *q = pp; *q != '\0' && ok; q++)
            ok = (unsigned char)*q > 0x20 && (unsigned char)*q < 0x7f && *q != '?' && *q != '#';
        if (!ok) {
            snprintf(sub, sizeof(sub), "%s.pathPrefix", path);
            mesh_report(x, true, sub, tr_rnode_get(h, "pathPrefix"),
                        "expected a path starting with \"/\", printable, without \"?\" or \"#\"");
            return -1;
        }
        e.path_prefix = ist_mstrdup(x, pp);
    }
    tr_rnode_bool(tr_rnode_get(h, "failOpen"), &e.fail_open);
    const struct tr_rnode *se = tr_rnode_get(h, "statusOnError");
    if (!tr_rnode_is_null(se)) {
        int64_t v = 0;
        if (!tr_rnode_int(se, &v) || v < 200 || v > 599) {
            snprintf(sub, sizeof(sub), "%s.statusOnError", path);
            mesh_report(x, true, sub, se, "expected an HTTP status 200-599");
            return -1;
        }
        e.status_on_error = (uint32_t)v;
    }
    const char **a = NULL, **b = NULL;
    size_t na = 0, nb = 0;
    if (!patterns(x, path, h, "includeRequestHeadersInCheck", &a, &na) ||
        !patterns(x, path, h, "includeHeadersInCheck", &b, &nb) ||
        !patterns(x, path, h, "headersToUpstreamOnAllow", &e.upstream_on_allow,
                  &e.n_upstream_on_allow) ||
        !patterns(x, path, h, "headersToDownstreamOnAllow", &e.downstream_on_allow,
                  &e.n_downstream_on_allow) ||
        !patterns(x, path, h, "headersToDownstreamOnDeny", &e.downstream_on_deny,
                  &e.n_downstream_on_deny))
        return -1;
    /* includeHeadersInCheck is the deprecated spelling: both are sent. */
    if (nb > 0) {
        snprintf(sub, sizeof(sub), "%s.includeHeadersInCheck", path);
        mesh_report(x, false, sub, tr_rnode_get(h, "includeHeadersInCheck"),
                    "deprecated (use includeRequestHeadersInCheck); read as that");
    }
    e.check_headers = ist_malloc(x, na + nb + 1, sizeof(*e.check_headers));
    if (e.check_headers == NULL)
        return -1;
    for (size_t i = 0; i < na; i++)
        e.check_headers[e.n_check_headers++] = a[i];
    for (size_t i = 0; i < nb; i++)
        e.check_headers[e.n_check_headers++] = b[i];
    const struct tr_rnode *add = tr_rnode_get(h, "includeAdditionalHeadersInCheck");
    if (!tr_rnode_is_null(add)) {
        snprintf(sub, sizeof(sub), "%s.includeAdditionalHeadersInCheck", path);
        if (add->kind != TR_RNODE_MAP) {
            mesh_report(x, true, sub, add, "expected a mapping of header names to values");
            return -1;
        }
        e.check_add = ist_malloc(x, add->n / 2 + 1, sizeof(*e.check_add));
        if (e.check_add == NULL)
            return -1;
        for (const struct tr_rnode *k = add->head; k != NULL && k->next != NULL;
             k = k->next->next) {
            const char *v;
            bool ok = k->s != NULL && header_pattern_ok(k->s) && strchr(k->s, '*') == NULL &&
                      tr_rnode_str(k->next, &v);
            for (const char *q = ok ? v : ""; ok && *q != '\0'; q++)
                ok = (unsigned char)*q >= 0x20 && (unsigned char)*q != 0x7f;
            if (!ok) {
                mesh_report(x, true, sub, k, "expected a header name and a printable value");
                return -1;
            }
            e.check_add[e.n_check_add++] =
                (struct tr_name_value_cfg){lower_dup(x, k->s), ist_mstrdup(x, v)};
        }
    }
    e.cluster_name = ist_cluster_for(x, svc, pi, NULL);
    if (e.cluster_name == NULL)
        return -1;
    struct ist_cursor c;
    mesh_cursor(x, &c, ist_printf(x, "extensionProviders[%zu]", p->index));
    e.loc = ist_loc(x, &c, x->mesh_node);
    /* Into the model's list (grown by one; the list lives in its arena). */
    struct tr_config *cfg = x->cfg;
    struct tr_ext_authz_cfg *v = ist_malloc(x, cfg->n_ext_authz + 1, sizeof(*v));
    if (v == NULL)
        return -1;
    if (cfg->n_ext_authz > 0)
        memcpy(v, cfg->ext_authz, cfg->n_ext_authz * sizeof(*v));
    v[cfg->n_ext_authz] = e;
    cfg->ext_authz = v;
    p->model = (int)cfg->n_ext_authz++;
    p->failed = false;
    return p->model;
}

const char *ist_ext_authz_provider(struct ist_ctx *x, struct ist_cursor *c,
                                   const struct tr_rnode *provider)
{
    ist_mesh_read(x);
    const char *name = NULL;
    const struct tr_rnode *nn = tr_rnode_get(provider, "name");
    if (provider == NULL || !tr_rnode_str(nn, &name)) {
        ist_error(x, c, provider, "provider.name",
                  "missing required field (CUSTOM names an extension provider of the mesh "
                  "configuration): requests the rules match are denied");
        return NULL;
    }
    struct ist_provider *p = NULL;
    for (size_t i = 0; i < x->n_providers && p == NULL; i++)
        if (strcmp(x->providers[i].name, name) == 0)
            p = &x->providers[i];
    if (p == NULL) {
        ist_error(x, c, nn, "provider.name",
                  "no extension provider \"%s\" in the mesh configuration (ConfigMap %s/istio, "
                  "data.mesh: extensionProviders): requests the rules match are denied",
                  name, x->o->root_ns);
        return NULL;
    }
    if (p->http == NULL) {
        ist_error(x, c, nn, "provider.name",
                  "extension provider \"%s\" is %s, not envoyExtAuthzHttp (the only kind trellis "
                  "supports): requests the rules match are denied",
                  name, p->kind != NULL ? p->kind : "of no kind");
        return NULL;
    }
    if (x->checking)
        return p->name;
    if (provider_model(x, p) < 0) {
        ist_error(x, c, nn, "provider.name",
                  "extension provider \"%s\" cannot be used (see the mesh configuration's "
                  "findings): requests the rules match are denied",
                  name);
        return NULL;
    }
    return x->cfg->ext_authz[p->model].name;
}
