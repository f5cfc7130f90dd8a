/* Unit tests for the Istio compiler's AuthorizationPolicy (dialect/istio/
 * authz.c): which policies reach which inbound listener, what they become,
 * and the findings; decisions are taken with the proxy's evaluator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "core/diag.h"
#include "dialect/istio/istio.h"
#include "filter/authz.h"
#include "resource/resource.h"

/* backend (two ports, one named by a second Service) and frontend. */
static const char MESH[] =
    "apiVersion: v1\nkind: Service\nmetadata: {name: backend, namespace: prod}\n"
    "spec:\n  selector: {app: backend}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: backend-admin, namespace: prod}\n"
    "spec:\n  selector: {app: backend}\n  ports: [{name: http-admin, port: 81, targetPort: 9090}]\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: backend-1, namespace: prod, labels: "
    "{app: backend, security.istio.io/tlsMode: istio}}\nspec: {serviceAccountName: backend}\n"
    "status: {podIP: 127.0.2.1}\n";

#define AP(ns, name, spec)                                                                         \
    "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: " name     \
    ", namespace: " ns "}\nspec:\n" spec

struct compiled {
    struct tr_rset *rs;
    struct tr_config *cfg;
    struct tr_diags d;
    char msgs[8192];
};

static void compile_for(struct compiled *c, const char *policies, const char *name)
{
    size_t n = strlen(MESH) + strlen(policies) + 1;
    char *text = malloc(n);
    assert_non_null(text);
    snprintf(text, n, "%s%s", MESH, policies);
    tr_diags_init(&c->d);
    c->rs = tr_rset_from_buffer(text, strlen(text), "mesh.yaml", &c->d);
    free(text);
    assert_non_null(c->rs);
    struct tr_istio_options o = {.ns = "prod", .name = name, .cert_dir = "/nonexistent"};
    c->cfg = tr_istio_compile(c->rs, &o, &c->d);
    size_t off = 0;
    c->msgs[0] = '\0';
    for (size_t i = 0; i < c->d.n && off < sizeof(c->msgs) - 1; i++) {
        int k = tr_diag_format(&c->d.v[i], c->msgs + off, sizeof(c->msgs) - off);
        off += k > 0 ? (size_t)k : 0;
        if (off < sizeof(c->msgs) - 1)
            c->msgs[off++] = '\n';
        c->msgs[off < sizeof(c->msgs) ? off : sizeof(c->msgs) - 1] = '\0';
    }
}

static void compile_text(struct compiled *c, const char *policies)
{
    compile_for(c, policies, "backend-1");
}

static void compiled_free(struct compiled *c)
{
    tr_config_free(c->cfg);
    tr_rset_free(c->rs);
    tr_diags_free(&c->d);
}

static const struct tr_listener_cfg *listener(const struct compiled *c, const char *name)
{
    assert_non_null(c->cfg);
    for (size_t i = 0; i < c->cfg->n_listeners; i++) {
        if (strcmp(c->cfg->listeners[i].name, name) == 0)
            return &c->cfg->listeners[i];
    }
    fail_msg("no listener %s", name);
    return NULL;
}

/* The decision of listener l for an HTTP request from principal. */
static struct tr_authz_result decide(const struct tr_listener_cfg *l, const char *principal,
                                     const char *method, const char *path, const char **policy)
{
    char *err = NULL;
    struct tr_authz *a = tr_authz_build(&l->authz, &err);
    assert_null(err);
    struct tr_authz_request rq = {.principal = principal, .http = true};
    rq.method = tr_str_from(method, strlen(method));
    rq.path = tr_str_from(path, strlen(path));
    rq.host = TR_STR_LIT("backend");
    rq.dest_port = 8080;
    struct tr_authz_result r;
    tr_authz_decide(a, &rq, &r);
    static char name[128];
    const char *nm = tr_authz_policy_name(a, r.policy);
    snprintf(name, sizeof(name), "%s", nm ? nm : "-");
    *policy = name;
    tr_authz_free(a);
    return r;
}

#define FRONT "spiffe://cluster.local/ns/prod/sa/frontend"
#define OTHER "spiffe://cluster.local/ns/dev/sa/web"

/* The seed's recipe: deny-all (spec: {}) plus allow-frontend. */
static void test_deny_all_plus_allow(void **state)
{
    struct compiled c;
    compile_text(&c, AP("prod", "deny-all", "  {}\n") AP("prod", "allow-frontend",
                                                         "  selector: {matchLabels: {app: "
                                                         "backend}}\n"
                                                         "  rules:\n  - from:\n    - source: "
                                                         "{principals: "
                                                         "[cluster.local/ns/prod/sa/frontend]}\n"
                                                         "    to:\n    - operation: {methods: "
                                                         "[GET], paths: [\"/api/*\"]}\n"));
    assert_int_equal(c.d.n_errors, 0);
    const struct tr_listener_cfg *l = listener(&c, "inbound|8080");
    assert_int_equal(l->authz.n_policies, 2);
    assert_string_equal(l->authz.policies[0].name, "prod/deny-all");
    assert_int_equal(l->authz.policies[0].n_rules, 0);
    assert_string_equal(l->authz.policies[1].loc.origin.name, "allow-frontend");
    const char *pol;
    struct tr_authz_result r = decide(l, FRONT, "GET", "/api/x", &pol);
    assert_int_equal(r.verdict, TR_AUTHZ_VERDICT_ALLOW);
    assert_string_equal(pol, "prod/allow-frontend");
    assert_int_equal(r.rule, 0);
    r = decide(l, FRONT, "POST", "/api/x", &pol);
    assert_int_equal(r.verdict, TR_AUTHZ_VERDICT_DENY);
    assert_int_equal(r.reason, TR_AZR_NO_ALLOW_MATCHED);
    r = decide(l, OTHER, "GET", "/api/x", &pol);
    assert_int_equal(r.verdict, TR_AUTHZ_VERDICT_DENY);
    compiled_free(&c);
}

/* Scope: root namespace mesh-wide, own namespace, not others; selectors;
 * targetRefs to a Service: only its ports. */
static void test_scope(void **state)
{
    struct compiled c;
    compile_text(&c, AP("istio-system", "mesh-deny",
                        "  action: DENY\n  rules:\n  - to:\n    - "
                        "operation: {methods: [TRACE]}\n")
                         AP("dev", "elsewhere", "  action: DENY\n  rules: [{}]\n")
                             AP("prod", "other-app",
                                "  selector: {matchLabels: {app: x}}\n"
                                "  action: DENY\n  rules: [{}]\n")
                                 AP("prod", "admin-only",
                                    "  targetRefs: [{kind: Service, group: \"\", name: "
                                    "backend-admin}]\n  rules:\n  - from:\n    - source: "
                                    "{namespaces: [ops]}\n"));
    assert_int_equal(c.d.n_errors, 0);
    const struct tr_listener_cfg *l = listener(&c, "inbound|8080");
    assert_int_equal(l->authz.n_policies, 1);
    assert_string_equal(l->authz.policies[0].name, "istio-system/mesh-deny");
    const char *pol;
    assert_int_equal(decide(l, OTHER, "TRACE", "/", &pol).verdict, TR_AUTHZ_VERDICT_DENY);
    assert_string_equal(pol, "istio-system/mesh-deny");
    assert_int_equal(decide(l, OTHER, "GET", "/", &pol).verdict, TR_AUTHZ_VERDICT_ALLOW);
    l = listener(&c, "inbound|9090");
    assert_int_equal(l->authz.n_policies, 2);
    assert_string_equal(l->authz.policies[1].name, "prod/admin-only");
    assert_int_equal(decide(l, OTHER, "GET", "/", &pol).verdict, TR_AUTHZ_VERDICT_DENY);
    assert_int_equal(decide(l, "spiffe://cluster.local/ns/ops/sa/a", "GET", "/", &pol).verdict,
                     TR_AUTHZ_VERDICT_ALLOW);
    compiled_free(&c);
}

static void test_every_field(void **state)
{
    struct compiled c;
    compile_text(
        &c,
        "---\napiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\n"
        "metadata: {name: all, namespace: prod}\nspec:\n  action: AUDIT\n  rules:\n"
        "  - from:\n    - source:\n        principals: [a]\n        notPrincipals: [b]\n"
        "        requestPrincipals: [\"iss/*\"]\n        notRequestPrincipals: [iss/x]\n"
        "        namespaces: [n]\n        notNamespaces: [m]\n        ipBlocks: [10.0.0.0/8]\n"
        "        notIpBlocks: [10.0.0.1]\n        remoteIpBlocks: [\"::1\"]\n"
        "        notRemoteIpBlocks: [\"::2/128\"]\n        serviceAccounts: [ops/admin, web]\n"
        "    to:\n    - operation:\n        hosts: [\"*.x\"]\n        notHosts: [y]\n"
        "        ports: [\"8080\", 9090]\n        notPorts: [\"1\"]\n        methods: [GET]\n"
        "        notMethods: [PUT]\n        paths: [\"/a/{*}/b/{**}\"]\n        notPaths: [/z]\n"
        "    when:\n    - {key: \"request.headers[x-a]\", values: [v], notValues: [w]}\n"
        "    - {key: \"request.auth.claims[realm][roles]\", values: [admin]}\n"
        "    - {key: connection.sni, values: [\"*.local\"]}\n");
    assert_int_equal(c.d.n_errors, 0);
    assert_int_equal(c.d.n_warnings, 0);
    const struct tr_listener_cfg *l = listener(&c, "inbound|8080");
    assert_int_equal(l->authz.n_policies, 1);
    const struct tr_authz_policy_cfg *p = &l->authz.policies[0];
    assert_int_equal(p->action, TR_AUTHZ_AUDIT);
    const struct tr_authz_source_cfg *s = &p->rules[0].from[0];
    assert_int_equal(s->n_principals, 3);
    assert_string_equal(s->principals[1], "*/ns/ops/sa/admin");
    assert_string_equal(s->principals[2], "*/ns/prod/sa/web");
    assert_string_equal(s->not_remote_ip_blocks[0], "::2/128");
    const struct tr_authz_operation_cfg *o = &p->rules[0].to[0];
    assert_string_equal(o->ports[1], "9090");
    assert_string_equal(o->paths[0], "/a/{*}/b/{**}");
    assert_int_equal(p->rules[0].n_when, 3);
    assert_string_equal(p->rules[0].when[0].not_values[0], "w");
    assert_string_equal(p->rules[0].when[0].loc.path, "spec.rules[0].when[0]");
    compiled_free(&c);
}

static void test_findings(void **state)
{
    struct compiled c;
    compile_text(&c, AP("prod", "ext", "  action: CUSTOM\n  provider: {name: opa}\n  rules: [{}]\n")
                         AP("prod", "bad",
                            "  rules:\n  - when:\n    - {key: request.nope, values: "
                            "[x]}\n    - {key: source.ip, values: [10.0.0.1/8]}\n"
                            "  - to:\n    - operation: {paths: [\"/a/{x}/b\"], "
                            "ports: [\"0\"]}\n  - from:\n    - {}\n"));
    assert_non_null(strstr(c.msgs, "AuthorizationPolicy prod/ext: spec.provider.name: no "
                                   "extension provider \"opa\" in the mesh configuration"));
    assert_non_null(strstr(c.msgs, "spec.rules[0].when[0].key: unknown condition key "
                                   "\"request.nope\""));
    assert_non_null(strstr(c.msgs, "spec.rules[0].when[1].values[0]: \"10.0.0.1/8\" has bits"));
    assert_non_null(strstr(c.msgs, "spec.rules[1].to[0].operation.paths[0]: a path template's "
                                   "operators are whole segments"));
    assert_non_null(strstr(c.msgs, "spec.rules[1].to[0].operation.ports[0]: a port is a number"));
    assert_non_null(strstr(c.msgs, "spec.rules[2].from[0].source: missing required field"));
    if (c.d.n_errors != 6)
        fail_msg("%s", c.msgs);
    compiled_free(&c);

    compile_text(&c, AP("prod", "both",
                        "  selector: {matchLabels: {app: backend}}\n  targetRefs: "
                        "[{kind: Service, name: backend}]\n")
                         AP("prod", "gw",
                            "  targetRefs: [{kind: Gateway, group: "
                            "gateway.networking.k8s.io, name: g}]\n"));
    assert_non_null(strstr(c.msgs, "spec.selector: selector and targetRefs are exclusive"));
    assert_non_null(strstr(c.msgs, "warning"));
    assert_non_null(strstr(c.msgs, "targets of kind gateway.networking.k8s.io/Gateway are not "
                                   "supported yet"));
    compiled_free(&c);
}

/* A gateway takes the policies that select it, on every listener (as
 * Istio applies them at gateways); a policy reaching it through a
 * Service's ports is refused rather than dropped (dropping would open it). */
#define GATEWAY                                                                                    \
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: gw-1, namespace: prod, labels: "             \
    "{istio: ingressgateway}}\nstatus: {podIP: 127.0.2.9}\n"                                       \
    "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, "                \
    "namespace: prod}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - "               \
    "port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n"                       \
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, "        \
    "namespace: prod}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http: [{route: "               \
    "[{destination: {host: backend}}]}]\n"

static void test_gateway_policies(void **state)
{
    (void)state;
    struct compiled c;
    compile_for(&c,
                GATEWAY AP("prod", "allow-nothing",
                           "  selector: {matchLabels: {istio: "
                           "ingressgateway}}\n")
                    AP("prod", "deny-admin",
                       "  selector: {matchLabels: {istio: ingressgateway}}\n  action: DENY\n"
                       "  rules: [{to: [{operation: {paths: [\"/admin*\"]}}]}]\n")
                        AP("prod", "elsewhere", "  selector: {matchLabels: {app: other}}\n"),
                "gw-1");
    if (c.d.n_errors)
        fail_msg("%s", c.msgs);
    const struct tr_listener_cfg *l = listener(&c, "gateway|8080");
    assert_int_equal(l->authz.n_policies, 2);
    assert_string_equal(l->authz.policies[0].name, "prod/allow-nothing");
    assert_int_equal(l->authz.policies[0].n_rules, 0);
    assert_string_equal(l->authz.policies[1].name, "prod/deny-admin");
    assert_int_equal(l->authz.policies[1].action, TR_AUTHZ_DENY);
    compiled_free(&c);

    /* request authentication at the gateway: its rules on the gateway's listener */
    compile_for(&c,
                GATEWAY "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
                        "metadata: {name: jwt, namespace: prod}\nspec:\n  selector: "
                        "{matchLabels: {istio: ingressgateway}}\n  jwtRules:\n  - {issuer: "
                        "https://issuer.example, jwksUri: 'http://backend.prod.svc.cluster."
                        "local:80/jwks.json'}\n",
                "gw-1");
    if (c.d.n_errors)
        fail_msg("%s", c.msgs);
    l = listener(&c, "gateway|8080");
    assert_int_equal(l->request_authn.n_rules, 1);
    assert_string_equal(l->request_authn.rules[0].issuer, "https://issuer.example");
    assert_non_null(l->request_authn.rules[0].jwks_uri);
    compiled_free(&c);

    compile_for(&c,
                GATEWAY "---\napiVersion: v1\nkind: Service\nmetadata: {name: gw, namespace: "
                        "prod}\nspec:\n  selector: {istio: ingressgateway}\n  ports: [{name: "
                        "http, port: 80, targetPort: 8080}]\n" AP(
                            "prod", "by-service", "  targetRefs: [{kind: Service, name: gw}]\n"),
                "gw-1");
    assert_non_null(strstr(c.msgs, "AuthorizationPolicy prod/by-service: spec: applies to gateway "
                                   "prod/gw-1 through a Service's ports"));
    compiled_free(&c);
}

/* istio.io/dry-run: checked, warned about, never enforced (as Istio). */
static void test_dry_run_not_enforced(void **state)
{
    (void)state;
    struct compiled c;
    compile_text(&c, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                     "metadata:\n  name: deny-all\n  namespace: prod\n"
                     "  annotations: {istio.io/dry-run: \"true\"}\n"
                     "spec: {action: DENY, rules: [{}]}\n"
                     "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                     "metadata:\n  name: deny-post\n  namespace: prod\n"
                     "  annotations: {istio.io/dry-run: \"false\"}\n"
                     "spec: {action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}\n");
    assert_int_equal(c.d.n_errors, 0);
    assert_non_null(strstr(c.msgs, "metadata.annotations.istio.io/dry-run: a dry-run policy is "
                                   "not enforced"));
    const struct tr_listener_cfg *l = listener(&c, "inbound|8080");
    assert_int_equal(l->authz.n_policies, 1);
    assert_string_equal(l->authz.policies[0].name, "prod/deny-post");
    const char *pol;
    assert_int_equal(decide(l, FRONT, "GET", "/", &pol).verdict, TR_AUTHZ_VERDICT_ALLOW);
    assert_int_equal(decide(l, FRONT, "POST", "/", &pol).verdict, TR_AUTHZ_VERDICT_DENY);
    compiled_free(&c);
}

/* A corpus file (Istio's samples), NUL-terminated, malloc'd. */
static char *corpus(const char *rel)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/../shared/corpus/istio/%s", TR_SOURCE_ROOT, rel);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    static char buf[64 * 1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

/* Istio's mesh configuration: two HTTP external authorizers (the samples'
 * ext-authz Service and local ServiceEntry), a gRPC one, other fields. */
static const char MESH_CM[] =
    "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
    "data:\n  meshNetworks: 'networks: {}'\n  mesh: |-\n"
    "    accessLogFile: /dev/stdout\n"
    "    extensionProviders:\n"
    "    - name: sample-ext-authz-http\n"
    "      envoyExtAuthzHttp:\n"
    "        service: ext-authz.default.svc.cluster.local\n"
    "        port: \"8000\"\n"
    "        timeout: 1.5s\n"
    "        pathPrefix: /check\n"
    "        failOpen: true\n"
    "        statusOnError: \"503\"\n"
    "        includeRequestHeadersInCheck: [\"x-ext-authz\", \"X-User-*\"]\n"
    "        includeAdditionalHeadersInCheck: {X-Via: trellis}\n"
    "        headersToUpstreamOnAllow: [\"x-ext-authz-check-result\"]\n"
    "        headersToDownstreamOnAllow: [\"x-note\"]\n"
    "        headersToDownstreamOnDeny: [\"x-ext-authz-check-result\", \"*-reason\"]\n"
    "        includeRequestBodyInCheck: {maxRequestBytes: 100}\n"
    "    - name: local-http\n"
    "      envoyExtAuthzHttp: {service: ext-authz-http.local, port: 8000}\n"
    "    - name: sample-ext-authz-grpc\n"
    "      envoyExtAuthzGrpc: {service: ext-authz.default.svc.cluster.local, port: 9000}\n";

/* CUSTOM with the samples' authorizers: a CUSTOM policy naming the provider,
 * the model's external authorizer with its outbound cluster; what trellis
 * does not read warned about, a provider it cannot use failing closed. */
static void test_custom_ext_authz(void **state)
{
    (void)state;
    char *svc = corpus("extauthz/ext-authz.yaml");
    char *local = corpus("extauthz/local-ext-authz.yaml");
    size_t n = strlen(svc) + strlen(local) + strlen(MESH_CM) + 2048;
    char *text = malloc(n);
    assert_non_null(text);
    snprintf(text, n,
             "---\n%s\n---\n%s%s" AP("prod", "ext",
                                     "  action: CUSTOM\n  provider: {name: "
                                     "sample-ext-authz-http}\n  rules: [{to: "
                                     "[{operation: {paths: [\"/api/*\"]}}]}]\n")
                 AP("prod", "grpc",
                    "  action: CUSTOM\n  provider: {name: sample-ext-authz-grpc}\n"
                    "  rules: [{to: [{operation: {paths: [\"/grpc\"]}}]}]\n"),
             svc, local, MESH_CM);
    free(svc);
    free(local);
    struct compiled c;
    compile_text(&c, text);
    free(text);
    assert_non_null(c.cfg); /* validated: every reference resolves */
    const struct tr_config *cfg = c.cfg;
    assert_int_equal(cfg->n_ext_authz, 1);
    const struct tr_ext_authz_cfg *e = &cfg->ext_authz[0];
    assert_string_equal(e->name, "sample-ext-authz-http");
    assert_string_equal(e->cluster_name, "outbound|8000||ext-authz.default.svc.cluster.local");
    assert_int_equal(e->timeout_ms, 1500);
    assert_string_equal(e->path_prefix, "/check");
    assert_true(e->fail_open);
    assert_int_equal(e->status_on_error, 503);
    assert_int_equal(e->n_check_headers, 2);
    assert_string_equal(e->check_headers[1], "x-user-*");
    assert_string_equal(e->check_add[0].name, "x-via");
    assert_string_equal(e->upstream_on_allow[0], "x-ext-authz-check-result");
    assert_string_equal(e->downstream_on_allow[0], "x-note");
    assert_string_equal(e->downstream_on_deny[1], "*-reason");
    assert_string_equal(e->loc.origin.kind, "ConfigMap");
    assert_string_equal(e->loc.path, "data.mesh: extensionProviders[0]");
    const struct tr_listener_cfg *l = listener(&c, "inbound|8080");
    assert_int_equal(l->authz.n_policies, 2);
    assert_int_equal(l->authz.policies[0].action, TR_AUTHZ_CUSTOM);
    assert_string_equal(l->authz.policies[0].provider_name, "sample-ext-authz-http");
    /* The gRPC provider cannot be used: its policy denies what it matches. */
    assert_int_equal(l->authz.policies[1].action, TR_AUTHZ_DENY);
    const char *pol;
    assert_int_equal(decide(l, FRONT, "GET", "/grpc", &pol).verdict, TR_AUTHZ_VERDICT_DENY);
    assert_int_equal(decide(l, FRONT, "GET", "/api/x", &pol).verdict, TR_AUTHZ_VERDICT_ALLOW);
    /* The requests a check is asked for. */
    char *err = NULL;
    struct tr_authz *a = tr_authz_build(&l->authz, &err);
    assert_non_null(a);
    struct tr_authz_request rq = {.principal = FRONT, .http = true};
    rq.method = TR_STR_LIT("GET");
    rq.path = TR_STR_LIT("/api/x");
    int p, r;
    assert_int_equal(tr_authz_custom(a, &rq, &p, &r), 0);
    rq.path = TR_STR_LIT("/other");
    assert_int_equal(tr_authz_custom(a, &rq, &p, &r), -1);
    tr_authz_free(a);
    /* Findings: the ConfigMap and the field path in the mesh text. */
    static const char *const want[] = {
        "ConfigMap istio-system/istio: data.meshNetworks: not read by trellis",
        "ConfigMap istio-system/istio: data.mesh: accessLogFile: this MeshConfig field is not "
        "read by trellis: ignored (line 1 of the mesh configuration)",
        "data.mesh: extensionProviders[0].envoyExtAuthzHttp.includeRequestBodyInCheck: not "
        "supported by trellis",
        "data.mesh: extensionProviders[2].envoyExtAuthzGrpc: extension provider kind "
        "envoyExtAuthzGrpc is not supported",
        "AuthorizationPolicy prod/grpc: spec.provider.name: extension provider "
        "\"sample-ext-authz-grpc\" is envoyExtAuthzGrpc, not envoyExtAuthzHttp",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (strstr(c.msgs, want[i]) == NULL)
            fail_msg("missing \"%s\" in:\n%s", want[i], c.msgs);
    assert_int_equal(c.d.n_errors, 1);
    compiled_free(&c);

    /* The samples' local authorizer: a ServiceEntry host. */
    local = corpus("extauthz/local-ext-authz.yaml");
    n = strlen(local) + strlen(MESH_CM) + 1024;
    text = malloc(n);
    assert_non_null(text);
    snprintf(text, n,
             "---\n%s%s" AP("prod", "local",
                            "  action: CUSTOM\n  provider: {name: local-http}\n"
                            "  rules: [{to: [{operation: {paths: [\"/l\"]}}]}]\n"),
             local, MESH_CM);
    free(local);
    compile_text(&c, text);
    free(text);
    assert_int_equal(c.d.n_errors, 0);
    assert_int_equal(c.cfg->n_ext_authz, 1);
    e = &c.cfg->ext_authz[0];
    assert_string_equal(e->name, "local-http");
    assert_string_equal(e->cluster_name, "outbound|8000||ext-authz-http.local");
    assert_int_equal(e->timeout_ms, 600000);
    assert_false(e->fail_open);
    assert_int_equal(e->status_on_error, 403);
    l = listener(&c, "inbound|8080");
    assert_int_equal(l->authz.policies[0].action, TR_AUTHZ_CUSTOM);
    compiled_free(&c);

    /* A provider whose service port does not exist: an error naming the
     * field, and the policy fails closed. */
    compile_text(&c, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: "
                     "istio-system}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: x\n"
                     "      envoyExtAuthzHttp: {service: backend.prod.svc.cluster.local, port: "
                     "99}\n" AP("prod", "ext",
                                "  action: CUSTOM\n  provider: {name: x}\n"
                                "  rules: [{}]\n"));
    assert_non_null(strstr(c.msgs, "data.mesh: extensionProviders[0].envoyExtAuthzHttp.port: "
                                   "service backend.prod.svc.cluster.local has no port 99"));
    l = listener(&c, "inbound|8080");
    assert_int_equal(l->authz.n_policies, 1);
    assert_int_equal(l->authz.policies[0].action, TR_AUTHZ_DENY);
    assert_int_equal(c.cfg->n_ext_authz, 0);
    compiled_free(&c);
}

/* Istio's authz builder cases (the corpus's authz-builder/http/custom-*):
 * their "default" provider is defined in Go; here it is the same provider
 * in a mesh ConfigMap, and the model must say what Istio's ext_authz filter
 * says (custom-http-provider-out2.yaml); CUSTOM policies of one workload
 * naming two providers all deny what they match (custom-bad-multiple-
 * providers-out1.yaml). */
static const char BUILDER_MESH[] =
    "apiVersion: v1\nkind: Service\nmetadata: {name: my-custom-ext-authz, namespace: foo}\n"
    "spec:\n  selector: {app: ext-authz}\n  ports: [{name: http, port: 9000}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: httpbin, namespace: foo}\n"
    "spec:\n  selector: {app: httpbin}\n  ports: [{name: http, port: 8000, targetPort: 80}]\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: httpbin-1, namespace: foo, labels: "
    "{app: httpbin, version: v1}}\nstatus: {podIP: 127.0.3.1}\n"
    "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
    "data:\n  mesh: |\n    extensionProviders:\n    - name: default\n"
    "      envoyExtAuthzHttp:\n"
    "        service: foo/my-custom-ext-authz.foo.svc.cluster.local\n"
    "        port: 9000\n        timeout: 10s\n        pathPrefix: /check\n"
    "        failOpen: true\n"
    "        includeRequestHeadersInCheck: [x-custom-id, x-prefix-*, \"*-suffix\"]\n"
    "        includeAdditionalHeadersInCheck: {x-header-1: value-1, x-header-2: value-2}\n"
    "        headersToUpstreamOnAllow: [Authorization, x-prefix-*, \"*-suffix\"]\n"
    "        headersToDownstreamOnAllow: [Set-cookie, x-prefix-*, \"*-suffix\"]\n"
    "        headersToDownstreamOnDeny: [Set-cookie, x-prefix-*, \"*-suffix\"]\n"
    "    - name: another\n"
    "      envoyExtAuthzHttp: {service: my-custom-ext-authz.foo.svc.cluster.local, port: 9000}\n";

static void compile_builder(struct compiled *c, const char *corpus_file)
{
    char *pols = corpus(corpus_file);
    size_t n = strlen(BUILDER_MESH) + strlen(pols) + 16;
    char *text = malloc(n);
    assert_non_null(text);
    snprintf(text, n, "%s---\n%s", BUILDER_MESH, pols);
    free(pols);
    tr_diags_init(&c->d);
    c->rs = tr_rset_from_buffer(text, strlen(text), "mesh.yaml", &c->d);
    free(text);
    assert_non_null(c->rs);
    struct tr_istio_options o = {.ns = "foo", .name = "httpbin-1", .cert_dir = "/nonexistent"};
    c->cfg = tr_istio_compile(c->rs, &o, &c->d);
    size_t off = 0;
    c->msgs[0] = '\0';
    for (size_t i = 0; i < c->d.n && off < sizeof(c->msgs) - 1; i++) {
        int k = tr_diag_format(&c->d.v[i], c->msgs + off, sizeof(c->msgs) - off);
        off += k > 0 ? (size_t)k : 0;
        if (off < sizeof(c->msgs) - 1)
            c->msgs[off++] = '\n';
        c->msgs[off < sizeof(c->msgs) ? off : sizeof(c->msgs) - 1] = '\0';
    }
}

static void test_custom_authz_builder_corpus(void **state)
{
    (void)state;
    struct compiled c;
    compile_builder(&c, "authz-builder/http/custom-simple-http-in.yaml");
    if (c.d.n != 0)
        fail_msg("%s", c.msgs);
    const struct tr_config *cfg = c.cfg;
    assert_int_equal(cfg->n_ext_authz, 1);
    const struct tr_ext_authz_cfg *e = &cfg->ext_authz[0];
    assert_string_equal(e->cluster_name,
                        "outbound|9000||my-custom-ext-authz.foo.svc.cluster.local");
    assert_int_equal(e->timeout_ms, 10000);
    assert_string_equal(e->path_prefix, "/check");
    assert_true(e->fail_open);                 /* failureModeAllow: true */
    assert_int_equal(e->status_on_error, 403); /* statusOnError: Forbidden */
    assert_int_equal(e->n_check_headers, 3);   /* allowedHeaders */
    assert_string_equal(e->check_headers[0], "x-custom-id");
    assert_string_equal(e->check_headers[1], "x-prefix-*");
    assert_string_equal(e->check_headers[2], "*-suffix");
    assert_int_equal(e->n_check_add, 2); /* headersToAdd */
    assert_string_equal(e->check_add[1].name, "x-header-2");
    assert_string_equal(e->check_add[1].value, "value-2");
    assert_string_equal(e->upstream_on_allow[0], "authorization"); /* allowedUpstreamHeaders */
    assert_string_equal(e->downstream_on_allow[0], "set-cookie");  /* ...ClientHeadersOnSuccess */
    assert_string_equal(e->downstream_on_deny[2], "*-suffix");     /* allowedClientHeaders */
    const struct tr_listener_cfg *l = listener(&c, "inbound|80");
    assert_int_equal(l->authz.n_policies, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(l->authz.policies[i].action, TR_AUTHZ_CUSTOM);
        assert_string_equal(l->authz.policies[i].provider_name, "default");
    }
    compiled_free(&c);

    compile_builder(&c, "authz-builder/http/custom-bad-multiple-providers-in.yaml");
    assert_non_null(strstr(c.msgs, "AuthorizationPolicy foo/httpbin-2: spec.provider.name: the "
                                   "CUSTOM policies of workload foo/httpbin-1 name more than one "
                                   "provider"));
    l = listener(&c, "inbound|80");
    assert_int_equal(l->authz.n_policies, 2);
    const char *pol;
    for (size_t i = 0; i < 2; i++)
        assert_int_equal(l->authz.policies[i].action, TR_AUTHZ_DENY);
    assert_int_equal(decide(l, FRONT, "GET", "/httpbin1", &pol).verdict, TR_AUTHZ_VERDICT_DENY);
    assert_int_equal(decide(l, FRONT, "GET", "/httpbin2", &pol).verdict, TR_AUTHZ_VERDICT_DENY);
    assert_int_equal(decide(l, FRONT, "GET", "/other", &pol).verdict, TR_AUTHZ_VERDICT_ALLOW);
    compiled_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dry_run_not_enforced),
        cmocka_unit_test(test_deny_all_plus_allow),
        cmocka_unit_test(test_scope),
        cmocka_unit_test(test_every_field),
        cmocka_unit_test(test_findings),
        cmocka_unit_test(test_gateway_policies),
        cmocka_unit_test(test_custom_ext_authz),
        cmocka_unit_test(test_custom_authz_builder_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
