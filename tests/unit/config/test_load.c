/* Unit tests for config/load.c: the full format, defaults, JSON twin, a table
 * of invalid configs with exact locations, limits and robustness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/load.h"

#ifndef TR_SOURCE_ROOT
#define TR_SOURCE_ROOT "."
#endif

/* Temporary directory holding certs/{web.pem,web.key,ca.pem}; relative TLS
 * paths in full.yaml resolve here because the config is loaded under the
 * name TMPDIR/proxy.yaml. */
static char g_dir[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int group_setup(void **state)
{
    (void)state;
    char p[128];
    snprintf(g_dir, sizeof(g_dir), "/tmp/trellis-cfg-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(p, sizeof(p), "%s/certs", g_dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/certs/web.pem", g_dir);
    write_file(p, "cert\n");
    snprintf(p, sizeof(p), "%s/certs/web.key", g_dir);
    write_file(p, "key\n");
    snprintf(p, sizeof(p), "%s/certs/ca.pem", g_dir);
    write_file(p, "ca\n");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    const char *files[] = {"certs/web.pem", "certs/web.key", "certs/ca.pem",
                           "proxy.yaml",    "certs",         ""};
    char p[128];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", g_dir, files[i]);
        remove(p);
    }
    return 0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static struct tr_config *load_ok(const char *text, size_t len, const char *name)
{
    char *err = NULL;
    struct tr_config *cfg = tr_config_load_buffer(text, len, name, &err);
    if (cfg == NULL) {
        fprintf(stderr, "unexpected error: %s\n", err);
        free(err);
        fail();
    }
    assert_null(err);
    return cfg;
}

static struct tr_config *load_source_file(const char *rel, const char *as_name)
{
    char path[512], name[128];
    size_t len;
    snprintf(path, sizeof(path), "%s/%s", TR_SOURCE_ROOT, rel);
    snprintf(name, sizeof(name), "%s/%s", g_dir, as_name);
    char *text = slurp(path, &len);
    struct tr_config *cfg = load_ok(text, len, name);
    free(text);
    return cfg;
}

static uint16_t port_of(const struct tr_cfg_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

static void assert_addr(const struct tr_cfg_addr *a, int family, const char *ip, uint16_t port,
                        const char *text)
{
    char buf[INET6_ADDRSTRLEN];
    assert_int_equal(a->ss.ss_family, family);
    if (family == AF_INET) {
        assert_int_equal(a->len, sizeof(struct sockaddr_in));
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, buf, sizeof(buf));
    } else {
        assert_int_equal(a->len, sizeof(struct sockaddr_in6));
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, buf, sizeof(buf));
    }
    assert_string_equal(buf, ip);
    assert_int_equal(port_of(a), port);
    assert_string_equal(a->text, text);
}

static void assert_path_in_dir(const char *path, const char *rel)
{
    char want[256];
    snprintf(want, sizeof(want), "%s/%s", g_dir, rel);
    assert_string_equal(path, want);
}

/* ------------------------------------------------------------ full */

static void check_full(const struct tr_config *c)
{
    char want[256];
    snprintf(want, sizeof(want), "%s/proxy.yaml", g_dir);
    assert_string_equal(c->file, want);

    assert_string_equal(c->node.id, "web-0");
    assert_string_equal(c->node.workload, "web");
    assert_string_equal(c->node.workload_namespace, "default");
    assert_string_equal(c->node.service, "web.default.svc.cluster.local");
    assert_string_equal(c->node.principal, "spiffe://cluster.local/ns/default/sa/web");
    assert_int_equal(c->workers, 4);
    assert_int_equal(c->drain_timeout_ms, 2500);
    assert_string_equal(c->log_level, "debug");
    assert_int_equal(c->limits.max_request_line, 4096);
    assert_int_equal(c->limits.max_header_bytes, 32768);
    assert_int_equal(c->limits.max_headers, 50);
    assert_int_equal(c->limits.max_connections, 1000);
    assert_int_equal(c->limits.buffer_size, 8192);
    assert_int_equal(c->limits.h2_max_concurrent_streams, 64);
    assert_int_equal(c->limits.h2_initial_window, 32768);
    assert_int_equal(c->limits.h2_connection_window, 262144);
    assert_int_equal(c->limits.h2_max_resets_per_second, 50);
    assert_addr(&c->admin.addr, AF_INET6, "::1", 15001, "[::1]:15001");
    assert_false(c->admin.enabled);
    assert_path_in_dir(c->admin.socket, "run/admin.sock");
    assert_true(c->access_log.enabled);
    assert_path_in_dir(c->access_log.path, "logs/access.log");

    /* TLS contexts */
    assert_int_equal(c->n_tls, 5);
    const struct tr_tls_cfg *t = &c->tls[0];
    assert_int_equal(t->kind, TR_TLSK_MESH);
    assert_string_equal(t->name, "workload");
    assert_path_in_dir(t->cert_file, "certs/web.pem");
    assert_path_in_dir(t->key_file, "certs/web.key");
    assert_path_in_dir(t->ca_file, "certs/ca.pem");
    assert_string_equal(t->trust_domain, "cluster.local");
    assert_int_equal(t->min_version, 0x0303);
    assert_false(t->session_resumption);
    assert_int_equal(t->loc.line, 17);
    assert_int_equal(t->loc.col, 5);
    assert_string_equal(t->loc.path, "tls[0]");
    t = &c->tls[1];
    assert_string_equal(t->name, "other");
    assert_null(t->trust_domain);
    assert_int_equal(t->min_version, 0x0304);
    assert_true(t->session_resumption);
    /* TLS termination and origination: inline PEM next to files */
    t = &c->tls[2];
    assert_string_equal(t->name, "gateway");
    assert_int_equal(t->kind, TR_TLSK_SERVER);
    assert_path_in_dir(t->cert_file, "certs/web.pem");
    assert_null(t->key_file);
    assert_string_equal(t->key_pem,
                        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n");
    assert_null(t->ca_file);
    assert_string_equal(t->ca_pem,
                        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    assert_int_equal(t->n_server_names, 2);
    assert_string_equal(t->server_names[0], "gw.example.com");
    assert_string_equal(t->server_names[1], "*.example.org");
    t = &c->tls[3];
    assert_int_equal(t->kind, TR_TLSK_SERVER);
    assert_null(t->ca_file);
    assert_null(t->ca_pem);
    assert_int_equal(t->n_server_names, 0);
    t = &c->tls[4];
    assert_string_equal(t->name, "external");
    assert_int_equal(t->kind, TR_TLSK_CLIENT);
    assert_null(t->cert_file);
    assert_non_null(t->cert_pem);
    assert_path_in_dir(t->key_file, "certs/web.key");
    assert_path_in_dir(t->ca_file, "certs/ca.pem");

    /* listeners */
    assert_int_equal(c->n_listeners, 4);
    const struct tr_listener_cfg *l = &c->listeners[0];
    assert_string_equal(l->name, "inbound");
    assert_addr(&l->addr, AF_INET, "0.0.0.0", 15006, "0.0.0.0:15006");
    assert_int_equal(l->direction, TR_DIR_INBOUND);
    assert_int_equal(l->protocol, TR_LPROTO_AUTO);
    assert_int_equal(l->tls_mode, TR_TLS_PERMISSIVE);
    assert_int_equal(l->tls, 0);
    assert_int_equal(l->route_table, 1);
    assert_int_equal(l->tcp_cluster, 3);
    assert_int_equal(l->n_tcp_clusters, 0);
    assert_int_equal(l->xff, TR_XFF_OFF);
    assert_false(l->xfp);
    assert_int_equal(l->request_id, TR_REQID_ALWAYS);
    assert_int_equal(l->path_normalization, TR_PATHNORM_DECODE_AND_MERGE_SLASHES);
    assert_int_equal(l->detect_timeout_ms, 1); /* 250us rounds up */
    assert_int_equal(l->idle_timeout_ms, 300000);
    assert_int_equal(l->request_timeout_ms, 3600000);
    const struct tr_request_authn_cfg *ra = &l->request_authn;
    assert_int_equal(ra->n_rules, 3);
    const struct tr_jwt_rule_cfg *j0 = &ra->rules[0], *j1 = &ra->rules[1], *j2 = &ra->rules[2];
    assert_string_equal(j0->issuer, "https://accounts.example.com");
    assert_int_equal(j0->n_audiences, 2);
    assert_string_equal(j0->audiences[1], "web");
    assert_non_null(strstr(j0->jwks, "\"kty\": \"EC\""));
    assert_int_equal(j0->n_from_headers, 2);
    assert_string_equal(j0->from_headers[0].name, "authorization"); /* lower-cased */
    assert_string_equal(j0->from_headers[0].prefix, "Bearer ");
    assert_null(j0->from_headers[1].prefix);
    assert_int_equal(j0->n_from_params, 1);
    assert_string_equal(j0->from_params[0], "token");
    assert_int_equal(j0->n_from_cookies, 1);
    assert_string_equal(j0->from_cookies[0], "session");
    assert_true(j0->forward_original_token);
    assert_string_equal(j0->output_payload_to_header, "x-jwt-payload");
    assert_int_equal(j0->n_output_claim_to_headers, 1);
    assert_string_equal(j0->output_claim_to_headers[0].header, "x-user");
    assert_string_equal(j0->output_claim_to_headers[0].claim, "sub");
    assert_string_equal(j0->loc.path, "listeners[0].request_authentication.rules[0]");
    assert_string_equal(j1->issuer, "spiffe-issuer");
    assert_false(j1->forward_original_token); /* Istio's default */
    assert_null(j1->output_payload_to_header);
    assert_int_equal(j1->n_from_headers + j1->n_from_params + j1->n_from_cookies, 0);
    assert_null(j1->jwks_uri);
    assert_non_null(j0->jwks_uri);
    assert_string_equal(j0->jwks_uri->url, "http://keys.example.com:8080/.well-known/jwks.json");
    assert_string_equal(j0->jwks_uri->cluster_name, "db");
    assert_int_equal(j0->jwks_uri->cluster, 3);
    assert_int_equal(j0->jwks_uri->refresh_ms, 90000);
    assert_int_equal(j0->jwks_uri->timeout_ms, 2000);
    assert_null(j2->jwks); /* fetched keys only */
    assert_non_null(j2->jwks_uri);
    assert_int_equal(j2->jwks_uri->refresh_ms, 20 * 60 * 1000); /* Istio's default */
    assert_int_equal(j2->jwks_uri->timeout_ms, 5000);
    assert_int_equal(l->authz.n_rules, 2);
    const struct tr_authz_rule_cfg *r0 = &l->authz.rules[0], *r1 = &l->authz.rules[1];
    assert_int_equal(r0->action, TR_AUTHZ_DENY);
    assert_int_equal(r0->n_principals, 0);
    assert_int_equal(r0->n_methods, 0);
    assert_int_equal(r0->n_paths, 1);
    assert_string_equal(r0->paths[0], "/admin*");
    assert_string_equal(r0->loc.path, "listeners[0].authorization.rules[0]");
    assert_int_equal(r1->action, TR_AUTHZ_ALLOW);
    assert_int_equal(r1->n_principals, 2);
    assert_string_equal(r1->principals[0], "spiffe://cluster.local/ns/default/sa/web");
    assert_string_equal(r1->principals[1], "spiffe://cluster.local/ns/prod/*");
    assert_int_equal(r1->n_methods, 2);
    assert_string_equal(r1->methods[0], "GET");
    assert_string_equal(r1->methods[1], "POST");
    assert_int_equal(r1->n_paths, 2);
    assert_string_equal(r1->paths[1], "/healthz");
    assert_string_equal(l->loc.path, "listeners[0]");
    assert_int_equal(l->loc.line, 47);

    l = &c->listeners[1];
    assert_string_equal(l->name, "outbound");
    assert_int_equal(l->direction, TR_DIR_OUTBOUND);
    assert_int_equal(l->protocol, TR_LPROTO_HTTP);
    assert_int_equal(l->tls_mode, TR_TLS_DISABLE);
    assert_int_equal(l->tls, -1);
    assert_int_equal(l->route_table, 0);
    assert_int_equal(l->tcp_cluster, -1);
    /* defaults */
    assert_int_equal(l->xff, TR_XFF_APPEND);
    assert_true(l->xfp);
    assert_int_equal(l->request_id, TR_REQID_PRESERVE);
    assert_int_equal(l->path_normalization, TR_PATHNORM_STRICT);
    assert_int_equal(l->detect_timeout_ms, 100);
    assert_int_equal(l->idle_timeout_ms, 300000);
    assert_int_equal(l->request_timeout_ms, 10000);
    assert_int_equal(l->authz.n_rules, 0);

    l = &c->listeners[2];
    assert_string_equal(l->name, "db");
    assert_addr(&l->addr, AF_INET6, "::1", 15432, "[::1]:15432");
    assert_int_equal(l->protocol, TR_LPROTO_TCP);
    assert_int_equal(l->tls_mode, TR_TLS_STRICT);
    assert_int_equal(l->tls, 1);
    assert_int_equal(l->route_table, -1);
    /* weighted TCP routes: the shorthand stays unset */
    assert_int_equal(l->tcp_cluster, -1);
    assert_null(l->tcp_cluster_name);
    assert_int_equal(l->n_tcp_clusters, 2);
    assert_string_equal(l->tcp_clusters[0].cluster_name, "db");
    assert_int_equal(l->tcp_clusters[0].cluster, 3);
    assert_int_equal(l->tcp_clusters[0].weight, 3);
    assert_string_equal(l->tcp_clusters[0].loc.path, "listeners[2].tcp_clusters[0]");
    assert_string_equal(l->tcp_clusters[1].cluster_name, "local");
    assert_int_equal(l->tcp_clusters[1].cluster, 0);
    assert_int_equal(l->tcp_clusters[1].weight, 0);
    assert_string_equal(l->tcp_clusters[1].loc.path, "listeners[2].tcp_clusters[1]");
    assert_int_equal(l->authz.n_rules, 1);
    assert_string_equal(l->authz.rules[0].principals[0], "*");
    assert_int_equal(l->authz.n_policies, 3);
    const struct tr_authz_policy_cfg *pol = &l->authz.policies[0];
    assert_string_equal(pol->name, "prod/deny-ops");
    assert_int_equal(pol->action, TR_AUTHZ_DENY);
    assert_string_equal(pol->loc.origin.name, "deny-ops");
    assert_int_equal(pol->n_rules, 1);
    assert_int_equal(pol->rules[0].n_from, 1);
    assert_int_equal(pol->rules[0].from[0].n_ip_blocks, 2);
    assert_string_equal(pol->rules[0].from[0].ip_blocks[1], "2001:db8::/32");
    assert_string_equal(pol->rules[0].from[0].not_remote_ip_blocks[0], "192.168.1.0/24");
    assert_string_equal(pol->rules[0].to[0].paths[0], "/api/{*}/items/{**}");
    assert_string_equal(pol->rules[0].to[0].not_ports[0], "5433");
    assert_int_equal(pol->rules[0].n_when, 4);
    assert_string_equal(pol->rules[0].when[1].key, "request.auth.claims[groups][0]");
    assert_string_equal(pol->rules[0].when[0].not_values[0], "bad");
    assert_string_equal(pol->rules[0].when[2].loc.path,
                        "listeners[2].authorization.policies[0].rules[0].when[2]");
    assert_int_equal(l->authz.policies[1].action, TR_AUTHZ_ALLOW); /* the default */
    assert_int_equal(l->authz.policies[1].n_rules, 0);
    assert_int_equal(l->authz.policies[2].action, TR_AUTHZ_AUDIT);
    assert_int_equal(l->authz.policies[2].n_rules, 1);

    /* External authorizers and the CUSTOM policy naming one. */
    assert_int_equal(c->listeners[0].authz.n_policies, 1);
    assert_int_equal(c->listeners[0].authz.policies[0].action, TR_AUTHZ_CUSTOM);
    assert_string_equal(c->listeners[0].authz.policies[0].provider_name, "checker");
    assert_int_equal(c->listeners[0].authz.policies[0].provider, 0);
    assert_int_equal(c->n_ext_authz, 2);
    const struct tr_ext_authz_cfg *ea = &c->ext_authz[0];
    assert_string_equal(ea->name, "checker");
    assert_int_equal(ea->cluster, 0);
    assert_int_equal(ea->timeout_ms, 250);
    assert_string_equal(ea->path_prefix, "/check");
    assert_true(ea->fail_open);
    assert_int_equal(ea->status_on_error, 503);
    assert_int_equal(ea->n_check_headers, 3);
    assert_string_equal(ea->check_headers[2], "*-token");
    assert_int_equal(ea->n_check_add, 1);
    assert_string_equal(ea->check_add[0].name, "x-checked-by");
    assert_string_equal(ea->check_add[0].value, "trellis");
    assert_string_equal(ea->upstream_on_allow[0], "x-ext-authz-check-result");
    assert_string_equal(ea->downstream_on_allow[0], "x-allow-note");
    assert_int_equal(ea->n_downstream_on_deny, 2);
    assert_string_equal(ea->loc.origin.kind, "ConfigMap");
    ea = &c->ext_authz[1];
    assert_int_equal(ea->timeout_ms, 600000); /* Istio's default */
    assert_null(ea->path_prefix);
    assert_false(ea->fail_open);
    assert_int_equal(ea->status_on_error, 403);
    assert_int_equal(ea->n_downstream_on_deny, 0);

    l = &c->listeners[3];
    assert_string_equal(l->name, "gateway");
    assert_int_equal(l->tls_mode, TR_TLS_TERMINATE);
    assert_null(l->tls_name);
    assert_int_equal(l->tls, -1);
    assert_int_equal(l->n_tls_contexts, 2);
    assert_string_equal(l->tls_contexts[0], "gateway");
    assert_string_equal(l->tls_contexts[1], "fallback");

    /* route tables */
    assert_int_equal(c->n_route_tables, 2);
    const struct tr_route_table_cfg *rt = &c->route_tables[0];
    assert_string_equal(rt->name, "outbound");
    assert_int_equal(rt->n_vhosts, 1);
    const struct tr_vhost_cfg *vh = &rt->vhosts[0];
    assert_string_equal(vh->name, "backend");
    assert_int_equal(vh->n_domains, 5);
    assert_string_equal(vh->domains[0], "backend");
    assert_string_equal(vh->domains[1], "backend.default.svc.cluster.local:8080");
    assert_string_equal(vh->domains[2], "*.example.com"); /* lower-cased */
    assert_string_equal(vh->domains[3], "api.*");
    assert_string_equal(vh->domains[4], "*-v2.internal:80");
    assert_int_equal(vh->n_routes, 6);

    const struct tr_route_cfg *ro = &vh->routes[0];
    assert_string_equal(ro->name, "canary");
    assert_int_equal(ro->path_kind, TR_PATH_EXACT);
    assert_string_equal(ro->path, "/v1/items");
    assert_true(ro->path_ignore_case);
    assert_int_equal(ro->n_methods, 1);
    assert_string_equal(ro->methods[0], "GET");
    assert_int_equal(ro->n_headers, 6);
    assert_string_equal(ro->headers[0].name, "x-canary"); /* lower-cased */
    assert_int_equal(ro->headers[0].kind, TR_HMATCH_EXACT);
    assert_string_equal(ro->headers[0].value, "1");
    assert_false(ro->headers[0].invert);
    assert_int_equal(ro->headers[1].kind, TR_HMATCH_PREFIX);
    assert_string_equal(ro->headers[1].value, "adm");
    assert_int_equal(ro->headers[2].kind, TR_HMATCH_SUFFIX);
    assert_string_equal(ro->headers[2].value, "-prod");
    assert_true(ro->headers[2].invert);
    assert_int_equal(ro->headers[3].kind, TR_HMATCH_REGEX);
    assert_string_equal(ro->headers[3].value, "[0-9]+");
    assert_int_equal(ro->headers[4].kind, TR_HMATCH_PRESENT);
    assert_null(ro->headers[4].value);
    assert_string_equal(ro->headers[4].loc.path,
                        "route_tables[0].virtual_hosts[0].routes[0].match.headers[4]");
    assert_int_equal(ro->headers[4].loc.line, 117);
    assert_int_equal(ro->headers[4].loc.col, 19);
    assert_int_equal(ro->n_clusters, 2);
    assert_int_equal(ro->clusters[0].cluster, 1);
    assert_int_equal(ro->clusters[0].weight, 90);
    assert_int_equal(ro->clusters[1].cluster, 2);
    assert_int_equal(ro->clusters[1].weight, 10);
    assert_int_equal(ro->total_weight, 100);
    assert_int_equal(ro->direct_status, 0);
    assert_int_equal(ro->timeout_ms, 15000);
    assert_string_equal(ro->prefix_rewrite, "/v2");
    assert_string_equal(ro->host_rewrite, "backend.internal");
    /* request matching and header edits */
    assert_string_equal(ro->headers[5].name, ":authority"); /* lower-cased */
    assert_int_equal(ro->headers[5].kind, TR_HMATCH_PREFIX);
    assert_int_equal(ro->n_query, 3);
    assert_string_equal(ro->query[0].name, "v");
    assert_int_equal(ro->query[0].kind, TR_HMATCH_EXACT);
    assert_string_equal(ro->query[0].value, "2");
    assert_int_equal(ro->query[1].kind, TR_HMATCH_REGEX);
    assert_string_equal(ro->query[1].value, "[0-9]+");
    assert_int_equal(ro->query[2].kind, TR_HMATCH_PRESENT);
    assert_null(ro->query[2].value);
    assert_int_equal(ro->request_headers.n_remove, 1);
    assert_string_equal(ro->request_headers.remove[0], "x-debug");
    assert_int_equal(ro->request_headers.n_set, 1);
    assert_string_equal(ro->request_headers.set[0].name, "x-route"); /* lower-cased */
    assert_string_equal(ro->request_headers.set[0].value, "canary");
    assert_int_equal(ro->request_headers.n_add, 1);
    assert_string_equal(ro->request_headers.add[0].name, "x-trace");
    assert_int_equal(ro->response_headers.n_set, 1);
    assert_string_equal(ro->response_headers.set[0].value, "no-store");
    assert_int_equal(ro->clusters[0].request_headers.n_set, 1);
    assert_string_equal(ro->clusters[0].request_headers.set[0].name, "x-dest");
    assert_int_equal(ro->clusters[1].response_headers.n_remove, 1);
    /* validate's programs: the route's edits, then the destination's */
    assert_int_equal(ro->clusters[0].request_edit->n_emit, 3); /* x-route, x-trace, x-dest */
    assert_string_equal(ro->clusters[0].request_edit->emit[2].name, "x-dest");
    assert_int_equal(ro->clusters[1].request_edit->n_emit, 2);
    assert_ptr_equal(ro->clusters[0].response_edit, ro->response_edit);
    assert_int_equal(ro->clusters[1].response_edit->n_drop, 2); /* cache-control, x-internal */
    /* retries: as written, and what validate made of them */
    const struct tr_retry_cfg *rp = &ro->retries;
    assert_int_equal(rp->attempts, 3);
    assert_int_equal(rp->per_try_timeout_ms, 500);
    assert_int_equal(rp->n_retry_on, 4);
    assert_string_equal(rp->retry_on[3], "unavailable");
    assert_int_equal(rp->on, TR_RETRY_ON_5XX | TR_RETRY_ON_RESET |
                                 TR_RETRY_ON_RETRIABLE_STATUS_CODES | TR_RETRY_ON_UNAVAILABLE);
    assert_int_equal(rp->n_status_codes, 2);
    assert_string_equal(rp->status_codes[0], "409");
    assert_string_equal(rp->status_codes[1], "418");
    for (unsigned code = TR_RETRY_CODE_MIN; code <= TR_RETRY_CODE_MAX; code++) {
        unsigned i = code - TR_RETRY_CODE_MIN;
        bool set = (rp->code_bits[i / 64] >> (i % 64)) & 1u;
        assert_int_equal(set, code == 409 || code == 418);
    }
    assert_int_equal(rp->backoff_base_ms, 10);
    assert_int_equal(rp->backoff_max_ms, 1000);
    assert_true(rp->retry_non_idempotent);
    assert_int_equal(rp->max_body, 8192);
    assert_int_equal(rp->budget_percent, 30);
    assert_int_equal(rp->budget_min_concurrency, 5);
    assert_int_equal(ro->n_mirrors, 2);
    assert_string_equal(ro->mirrors[0].cluster_name, "v2");
    assert_int_equal(ro->mirrors[0].cluster, 2);
    assert_int_equal(ro->mirrors[0].per_million, 125000);
    assert_int_equal(ro->mirrors[1].cluster, 3);
    assert_int_equal(ro->mirrors[1].per_million, 1000000);
    assert_string_equal(ro->mirrors[1].loc.path,
                        "route_tables[0].virtual_hosts[0].routes[0].mirrors[1]");

    ro = &vh->routes[1];
    assert_string_equal(ro->name, "route-1"); /* generated */
    assert_int_equal(ro->path_kind, TR_PATH_REGEX);
    assert_string_equal(ro->path, "/items/[0-9]+");
    assert_int_equal(ro->direct_status, 404);
    assert_string_equal(ro->direct_body, "no such item");
    assert_int_equal(ro->n_clusters, 0);
    assert_int_equal(ro->total_weight, 0);
    assert_int_equal(ro->timeout_ms, 0);

    /* Local route actions. */
    assert_null(vh->routes[0].redirect);
    assert_null(vh->routes[0].fault);
    assert_null(vh->routes[0].cors);
    ro = &vh->routes[2];
    assert_string_equal(ro->name, "moved");
    assert_int_equal(ro->n_clusters, 0);
    const struct tr_redirect_cfg *rd = ro->redirect;
    assert_non_null(rd);
    assert_string_equal(rd->scheme, "https");
    assert_string_equal(rd->host, "new.example");
    assert_int_equal(rd->port, 8443);
    assert_int_equal(rd->port_from, TR_REDIRECT_PORT_KEEP);
    assert_null(rd->path);
    assert_string_equal(rd->prefix, "/new/");
    assert_int_equal(rd->code, 308);
    rd = vh->routes[3].redirect;
    assert_non_null(rd);
    assert_null(rd->scheme);
    assert_null(rd->host);
    assert_int_equal(rd->port, 0);
    assert_int_equal(rd->port_from, TR_REDIRECT_PORT_REQUEST);
    assert_string_equal(rd->path, "/n?x=1");
    assert_int_equal(rd->code, 307);
    ro = &vh->routes[4];
    assert_string_equal(ro->name, "chaos");
    assert_int_equal(ro->clusters[0].cluster, 2);
    const struct tr_fault_cfg *f = ro->fault;
    assert_non_null(f);
    assert_int_equal(f->delay->fixed_ms, 1500);
    assert_int_equal(f->delay->per_million, 125000);
    assert_true(f->abort->grpc);
    assert_int_equal(f->abort->grpc_status, 14);
    assert_int_equal(f->abort->status, 0);
    assert_int_equal(f->abort->per_million, 1);
    const struct tr_cors_cfg *co = ro->cors;
    assert_non_null(co);
    assert_int_equal(co->n_origins, 3);
    assert_int_equal(co->origins[0].kind, TR_ORIGIN_EXACT);
    assert_string_equal(co->origins[0].value, "https://a.example");
    assert_int_equal(co->origins[1].kind, TR_ORIGIN_PREFIX);
    assert_string_equal(co->origins[1].value, "http://localhost:");
    assert_int_equal(co->origins[2].kind, TR_ORIGIN_REGEX);
    assert_string_equal(co->origins[2].value, "https://[a-z]+[.]b[.]example");
    assert_int_equal(co->n_allow_methods, 2);
    assert_string_equal(co->allow_methods[1], "POST");
    assert_int_equal(co->n_allow_headers, 2);
    assert_string_equal(co->allow_headers[1], "X-B");
    assert_int_equal(co->n_expose_headers, 1);
    assert_string_equal(co->expose_headers[0], "*");
    assert_true(co->has_max_age);
    assert_int_equal(co->max_age_s, 600);
    assert_true(co->allow_credentials);
    assert_int_equal(co->unmatched_preflights, TR_CORS_UNMATCHED_IGNORE);
    assert_int_equal(co->index, 0);
    assert_int_equal(c->n_cors, 1);

    ro = &vh->routes[5];
    assert_string_equal(ro->name, "rest");
    assert_int_equal(ro->path_kind, TR_PATH_PREFIX);
    assert_string_equal(ro->path, "/");
    assert_false(ro->path_ignore_case);
    assert_int_equal(ro->n_methods, 0);
    assert_int_equal(ro->n_headers, 0);
    assert_int_equal(ro->n_clusters, 1);
    assert_int_equal(ro->clusters[0].cluster, 1);
    assert_int_equal(ro->total_weight, 1);
    assert_null(ro->prefix_rewrite);
    assert_null(ro->host_rewrite);
    assert_null(ro->direct_body);
    assert_null(ro->redirect);
    assert_null(ro->fault);
    assert_null(ro->cors);
    /* Without `retries`: the defaults, Istio's default policy. */
    rp = &ro->retries;
    assert_int_equal(rp->attempts, 2);
    assert_int_equal(rp->per_try_timeout_ms, 0);
    assert_int_equal(rp->n_retry_on, 0);
    assert_int_equal(rp->on, TR_RETRY_ON_CONNECT_FAILURE | TR_RETRY_ON_REFUSED_STREAM |
                                 TR_RETRY_ON_UNAVAILABLE | TR_RETRY_ON_CANCELLED |
                                 TR_RETRY_ON_RETRIABLE_STATUS_CODES);
    for (size_t i = 0; i < sizeof(rp->code_bits) / sizeof(rp->code_bits[0]); i++)
        assert_int_equal(rp->code_bits[i], 0);
    assert_int_equal(rp->backoff_base_ms, 25);
    assert_int_equal(rp->backoff_max_ms, 250);
    assert_false(rp->retry_non_idempotent);
    assert_int_equal(rp->max_body, 65536);
    assert_int_equal(rp->budget_percent, 20);
    assert_int_equal(rp->budget_min_concurrency, 3);
    assert_int_equal(ro->n_mirrors, 0);

    rt = &c->route_tables[1];
    assert_string_equal(rt->name, "inbound");
    assert_string_equal(rt->vhosts[0].name, "vhost-0");
    assert_string_equal(rt->vhosts[0].routes[0].name, "all");
    assert_int_equal(rt->vhosts[0].routes[0].clusters[0].cluster, 0);

    /* clusters */
    assert_int_equal(c->n_clusters, 9);
    const struct tr_cluster_cfg *cl = &c->clusters[0];
    assert_string_equal(cl->name, "local");
    assert_null(cl->service);
    assert_null(cl->workload);
    assert_null(cl->workload_namespace);
    assert_int_equal(cl->lb, TR_LB_ROUND_ROBIN);
    assert_int_equal(cl->connect_timeout_ms, 1000);
    assert_int_equal(cl->pool_idle_timeout_ms, 50000);
    assert_int_equal(cl->pool_max_idle, 64);
    assert_int_equal(cl->max_connections, 0);
    assert_int_equal(cl->protocol, TR_UPROTO_HTTP1);
    assert_int_equal(cl->h2_max_streams, 100);
    assert_int_equal(cl->tls, -1);
    assert_int_equal(cl->n_server_ids, 0);
    assert_null(cl->sni);
    assert_int_equal(cl->n_endpoints, 1);
    assert_addr(&cl->endpoints[0].addr, AF_INET, "127.0.0.1", 8080, "127.0.0.1:8080");
    assert_int_equal(cl->endpoints[0].weight, 1);
    assert_null(cl->endpoints[0].workload);

    cl = &c->clusters[1];
    assert_string_equal(cl->name, "v1");
    assert_string_equal(cl->service, "backend.default.svc.cluster.local");
    assert_string_equal(cl->workload, "backend-v1");
    assert_string_equal(cl->workload_namespace, "default");
    assert_int_equal(cl->lb, TR_LB_LEAST_REQUEST);
    assert_int_equal(cl->connect_timeout_ms, 250);
    assert_int_equal(cl->pool_idle_timeout_ms, 30000);
    assert_int_equal(cl->pool_max_idle, 8);
    assert_int_equal(cl->max_connections, 100);
    assert_int_equal(cl->protocol, TR_UPROTO_HTTP2);
    assert_int_equal(cl->h2_max_streams, 50);
    assert_int_equal(cl->tls, 0);
    assert_int_equal(cl->n_server_ids, 1);
    assert_string_equal(cl->server_ids[0], "spiffe://cluster.local/ns/default/sa/backend");
    assert_string_equal(cl->sni, "backend.default");
    assert_int_equal(cl->n_endpoints, 2);
    assert_addr(&cl->endpoints[0].addr, AF_INET, "10.0.0.1", 8080, "10.0.0.1:8080");
    assert_int_equal(cl->endpoints[0].weight, 3);
    assert_string_equal(cl->endpoints[0].workload, "backend-v1-a");
    assert_string_equal(cl->endpoints[0].loc.path, "clusters[1].endpoints[0]");
    assert_addr(&cl->endpoints[1].addr, AF_INET6, "fd00::1", 8080, "[fd00::1]:8080");
    assert_int_equal(c->clusters[2].lb, TR_LB_RANDOM);
    assert_string_equal(c->clusters[3].name, "db");
    /* IP-only clusters get the DNS defaults (validate fills refresh in). */
    assert_int_equal(c->clusters[3].n_dns_endpoints, 0);
    assert_null(c->clusters[3].endpoints[0].host);
    assert_int_equal(c->clusters[3].dns.refresh_ms, 5000);

    /* endpoints by name */
    cl = &c->clusters[4];
    assert_string_equal(cl->name, "api");
    assert_int_equal(cl->dns.mode, TR_DNS_FIRST);
    assert_int_equal(cl->dns.refresh_ms, 30000);
    assert_int_equal(cl->dns.family, TR_DNS_V6);
    assert_int_equal(cl->n_dns_endpoints, 1);
    assert_string_equal(cl->endpoints[0].host, "api.example.com"); /* lower-cased */
    assert_int_equal(cl->endpoints[0].port, 8443);
    assert_int_equal(cl->endpoints[0].addr.len, 0);
    assert_string_equal(cl->endpoints[0].addr.text, "api.example.com:8443");
    assert_string_equal(cl->endpoints[0].name, "api.example.com:8443");
    assert_int_equal(cl->endpoints[0].weight, 2);
    assert_null(cl->endpoints[1].host);
    assert_addr(&cl->endpoints[1].addr, AF_INET, "10.0.0.4", 8443, "10.0.0.4:8443");

    /* resolver */
    assert_int_equal(c->resolver.n_servers, 2);
    assert_string_equal(c->resolver.servers[0], "127.0.0.1:5353");
    assert_string_equal(c->resolver.servers[1], "[::1]:53");
    assert_int_equal(c->resolver.timeout_ms, 500);
    assert_int_equal(c->resolver.attempts, 2);

    /* Without the sections: no outlier detection, no limits, no hashing. */
    assert_false(c->clusters[3].outlier.enabled);
    assert_int_equal(c->clusters[3].outlier.consecutive_5xx, 5);
    assert_int_equal(c->clusters[3].outlier.base_ejection_ms, 30000);
    assert_int_equal(c->clusters[3].outlier.max_ejection_percent, 10);
    assert_int_equal(c->clusters[3].breakers.max_requests, 0);
    assert_int_equal(c->clusters[3].max_requests_per_connection, 0);
    assert_int_equal(c->clusters[3].hash.source, TR_HASH_NONE);
    assert_int_equal(c->clusters[3].hash.ring_min_size, 1024);
    assert_int_equal(c->clusters[3].hash.maglev_table_size, 65537);

    cl = &c->clusters[5];
    assert_int_equal(cl->lb, TR_LB_RING_HASH);
    assert_int_equal(cl->hash.source, TR_HASH_COOKIE);
    assert_string_equal(cl->hash.cookie, "session");
    assert_string_equal(cl->hash.cookie_path, "/app");
    assert_int_equal(cl->hash.cookie_ttl_ms, 3600000);
    assert_true(cl->hash.cookie_generate); /* a ttl: Istio generates it */
    assert_int_equal(cl->hash.ring_min_size, 4096);
    const struct tr_outlier_cfg *o = &cl->outlier;
    assert_true(o->enabled);
    assert_int_equal(o->consecutive_5xx, 7);
    assert_int_equal(o->consecutive_gateway, 3);
    assert_int_equal(o->consecutive_local, 2);
    assert_true(o->split_local);
    assert_int_equal(o->interval_ms, 5000);
    assert_int_equal(o->base_ejection_ms, 60000);
    assert_int_equal(o->max_ejection_percent, 50);
    assert_int_equal(o->min_health_percent, 25);
    assert_int_equal(cl->breakers.max_connections, 40);
    assert_int_equal(cl->breakers.max_pending_requests, 20);
    assert_int_equal(cl->breakers.max_requests, 200);
    assert_int_equal(cl->max_requests_per_connection, 1000);
    cl = &c->clusters[6];
    assert_int_equal(cl->lb, TR_LB_MAGLEV);
    assert_int_equal(cl->hash.source, TR_HASH_HEADER);
    assert_string_equal(cl->hash.header, "x-user"); /* lower-cased */
    assert_int_equal(cl->hash.maglev_table_size, 251);
    assert_false(cl->outlier.enabled);
    cl = &c->clusters[7];
    assert_string_equal(cl->name, "external");
    assert_int_equal(cl->tls, 4);
    assert_false(cl->mesh_tls);
    assert_string_equal(cl->sni, "api.example.com");
    assert_int_equal(cl->n_subject_alt_names, 2);
    assert_string_equal(cl->subject_alt_names[1], "spiffe://example.com/api");
    assert_false(cl->insecure_skip_verify);
    assert_int_equal(cl->protocol, TR_UPROTO_ORIGINAL);
    cl = &c->clusters[8];
    assert_true(cl->insecure_skip_verify);
    assert_int_equal(cl->n_subject_alt_names, 0);
    assert_true(c->clusters[1].mesh_tls);
}

static void test_full_yaml(void **state)
{
    (void)state;
    struct tr_config *c = load_source_file("tests/unit/config/full.yaml", "proxy.yaml");
    check_full(c);
    /* Everything, the struct included, lives in the arena. */
    tr_config_free(c);
}

/* The JSON twin (generated from full.yaml) must give the same model. */
static void test_full_json(void **state)
{
    (void)state;
    struct tr_config *c = load_source_file("tests/unit/config/full.json", "proxy.yaml");
    /* Values equal; locations differ, so compare everything but lines. */
    assert_string_equal(c->tls[0].loc.path, "tls[0]");
    c->tls[0].loc.line = 17;
    c->tls[0].loc.col = 5;
    c->listeners[0].loc.line = 47;
    struct tr_header_match_cfg *h = &c->route_tables[0].vhosts[0].routes[0].headers[4];
    assert_true(h->loc.line > 0);
    h->loc.line = 117;
    h->loc.col = 19;
    check_full(c);
    tr_config_free(c);
}

/* The shipped example loads, and every omitted field takes its default. */
static void test_example_defaults(void **state)
{
    (void)state;
    char path[512], *err = NULL;
    snprintf(path, sizeof(path), "%s/examples/proxy-minimal.yaml", TR_SOURCE_ROOT);
    struct tr_config *c = tr_config_load_file(path, &err);
    if (c == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(c);
    assert_string_equal(c->file, path);
    assert_string_equal(c->node.id, "web-0");
    assert_null(c->node.principal);
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->drain_timeout_ms, 10000);
    assert_string_equal(c->log_level, "info");
    assert_int_equal(c->limits.max_request_line, 8192);
    assert_int_equal(c->limits.max_header_bytes, 65536);
    assert_int_equal(c->limits.max_headers, 100);
    assert_int_equal(c->limits.max_connections, 65536);
    assert_int_equal(c->limits.buffer_size, 16384);
    assert_int_equal(c->limits.h2_max_concurrent_streams, 100);
    assert_int_equal(c->limits.h2_initial_window, 65535);
    assert_int_equal(c->limits.h2_connection_window, 1u << 20);
    assert_int_equal(c->limits.h2_max_resets_per_second, 200);
    assert_addr(&c->admin.addr, AF_INET, "127.0.0.1", 15000, "127.0.0.1:15000");
    assert_true(c->admin.enabled);
    assert_null(c->admin.socket); /* privileged admin calls are off by default */
    assert_false(c->access_log.enabled);
    assert_string_equal(c->access_log.path, "/dev/stdout");
    assert_int_equal(c->n_tls, 0);
    assert_int_equal(c->n_listeners, 1);
    const struct tr_listener_cfg *l = &c->listeners[0];
    assert_string_equal(l->name, "inbound");
    assert_int_equal(l->direction, TR_DIR_INBOUND);
    assert_int_equal(l->protocol, TR_LPROTO_HTTP);
    assert_int_equal(l->tls_mode, TR_TLS_DISABLE);
    assert_int_equal(l->tls, -1);
    assert_int_equal(l->route_table, 0);
    assert_int_equal(l->tcp_cluster, -1);
    assert_int_equal(c->route_tables[0].vhosts[0].routes[0].clusters[0].cluster, 0);
    assert_int_equal(c->clusters[0].endpoints[0].weight, 1);
    assert_int_equal(c->clusters[0].connect_timeout_ms, 1000);

    char buf[256];
    int n = tr_cfg_loc_format(&l->loc, buf, sizeof(buf));
    char want[600];
    snprintf(want, sizeof(want), "%s:10:5: listeners[0]: ", path);
    assert_string_equal(buf, want);
    assert_int_equal(n, (int)strlen(want));
    tr_config_free(c);
}

/* --------------------------------------------------------- invalid */

#define BASE_TAIL                                                                                  \
    "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n"                             \
    "route_tables:\n- {name: rt, virtual_hosts: [{domains: ['*'], routes: [{cluster: c}]}]}\n"     \
    "clusters:\n- {name: c, endpoints: [{address: 127.0.0.1:2}]}\n"

#define RT_C                                                                                       \
    "route_tables:\n- {name: rt, virtual_hosts: [{domains: ['*'], routes: [{cluster: c}]}]}\n"     \
    "clusters:\n- {name: c, endpoints: [{address: 127.0.0.1:2}]}\n"

#define CTX "tls:\n- {name: w, cert: /dev/null, key: /dev/null, ca: /dev/null}\n"
#define SRV "tls:\n- {name: s, type: server, cert: /dev/null, key: /dev/null}\n"
#define CLI "tls:\n- {name: k, type: client, ca: /dev/null}\n"

/* A route under test, on line 3 of the file; column 5 starts its body. */
#define ROUTE_HEAD "route_tables:\n- name: rt\n  virtual_hosts:\n  - domains: ['*']\n    routes:\n"
#define ROUTE_TAIL                                                                                 \
    "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n"                             \
    "clusters:\n- {name: c, endpoints: [{address: 127.0.0.1:2}]}\n"                                \
    "- {name: d, endpoints: [{address: 127.0.0.1:3}]}\n"
#define R "route_tables[0].virtual_hosts[0].routes[0]"

struct bad_case {
    const char *yaml;
    const char *prefix; /* exact start of the error */
    const char *msg;    /* substring of the rest */
};

static const struct bad_case bad_cases[] = {
    /* top level */
    {"workers: 300\n" BASE_TAIL, "t.yaml:1:10: workers: ", "must be between 0 and 256, got 300"},
    {"workers: \"4\"\n" BASE_TAIL, "t.yaml:1:10: workers: ", "expected an integer, got \"4\""},
    {"workers: -1\n" BASE_TAIL, "t.yaml:1:10: workers: ", "must be between 0 and 256, got -1"},
    {"workers: 1.5\n" BASE_TAIL, "t.yaml:1:10: workers: ", "expected an integer"},
    {"drain_timeout: 10\n" BASE_TAIL,
     "t.yaml:1:16: drain_timeout: ", "expected a duration such as"},
    {"drain_timeout: 25h\n" BASE_TAIL,
     "t.yaml:1:16: drain_timeout: ", "must be between 0ms and 86400000ms"},
    {"log_level: verbose\n" BASE_TAIL,
     "t.yaml:1:12: log_level: ", "expected one of error, warn, info, debug, got \"verbose\""},
    {"bogus: 1\n" BASE_TAIL, "t.yaml:1:1: bogus: ",
     "unknown field \"bogus\" (accepted: node, workers, drain_timeout, log_level, limits, admin, "
     "access_log, tls, "
     "listeners, route_tables, clusters, ext_authz, resolver, upstream_mark)"},
    {"workers: 1\n", "t.yaml:1:1: listeners: ", "missing required field"},
    {"listeners: []\n", "t.yaml:1:12: listeners: ", "must have at least 1 entry"},
    {"listeners: {}\n", "t.yaml:1:12: listeners: ", "expected a list, got a mapping"},
    {"workers: 1\nworkers: 2\n" BASE_TAIL,
     "t.yaml:2:1: workers: ", "duplicate field (first at line 1)"},
    {"{[a]: 1}\n", "t.yaml:1:2: ", "mapping keys must be strings, got a list"},
    {"node: [a]\n" BASE_TAIL, "t.yaml:1:7: node: ", "expected a mapping, got a list"},
    {"node: {id: \"a\\0b\"}\n" BASE_TAIL, "t.yaml:1:12: node.id: ", "string contains a NUL byte"},
    {"node: {id: }\n" BASE_TAIL, "t.yaml:1:8: node.id: ", "expected a string, got null"},
    {"node: {id: \"a\\r\\nb\"}\n" BASE_TAIL,
     "t.yaml:1:12: node.id: ", "string contains control character 0x0d"},
    {"node: {principal: web}\n" BASE_TAIL, "t.yaml:1:19: node.principal: ", "expected a SPIFFE ID"},
    {"limits: {max_headers: 300}\n" BASE_TAIL,
     "t.yaml:1:23: limits.max_headers: ", "must be between 1 and 256, got 300"},
    {"limits: {buffer_size: 100}\n" BASE_TAIL,
     "t.yaml:1:23: limits.buffer_size: ", "must be between 4096 and 1048576"},
    {"limits: {max_request_line: 70000}\n" BASE_TAIL, "t.yaml:1:10: limits.max_request_line: ",
     "max_request_line (70000) must not exceed max_header_bytes (65536)"},
    {"admin: {address: 10.0.0.1:15000}\n" BASE_TAIL,
     "t.yaml:1:18: admin.address: ", "must be loopback"},
    {"admin: {address: localhost:15000}\n" BASE_TAIL,
     "t.yaml:1:18: admin.address: ", "hostnames are not resolved"},
    {"admin: {enabled: yes}\n" BASE_TAIL,
     "t.yaml:1:18: admin.enabled: ", "expected true or false, got \"yes\""},
    {"admin: {socket: ''}\n" BASE_TAIL, "t.yaml:1:17: admin.socket: ", "must not be empty"},
    {"admin: {socket: [a]}\n" BASE_TAIL, "t.yaml:1:17: admin.socket: ", "expected a string"},
    {"access_log: {path: ''}\n" BASE_TAIL, "t.yaml:1:20: access_log.path: ", "must not be empty"},

    /* TLS contexts */
    {"tls:\n- {name: w, key: /dev/null, ca: /dev/null}\n" BASE_TAIL,
     "t.yaml:2:3: tls[0].cert: ", "missing required field"},
    {"tls:\n- {name: w, cert: /nonexistent/x.pem, key: /dev/null, ca: /dev/null}\n" BASE_TAIL,
     "t.yaml:2:19: tls[0].cert: ", "cannot read \"/nonexistent/x.pem\": No such file or directory"},
    {"tls:\n- {name: w, cert: /dev/null, key: /dev/null, ca: /dev/null, min_version: "
     "1.1}\n" BASE_TAIL,
     "t.yaml:2:74: tls[0].min_version: ", "expected one of 1.2, 1.3, got \"1.1\""},
    {"tls:\n- {name: w, cert: /dev/null, key: /dev/null, ca: /dev/null, trust_domain: "
     "spiffe://x}\n" BASE_TAIL,
     "t.yaml:2:75: tls[0].trust_domain: ", "expected a trust domain name"},
    {CTX "- {name: w, cert: /dev/null, key: /dev/null, ca: /dev/null}\n" BASE_TAIL,
     "t.yaml:3:10: tls[1].name: ", "duplicate TLS context name \"w\" (first defined at line 2)"},

    /* the identity from the control plane: nothing else may say where it is */
    {"tls:\n- {name: m, from_control_plane: true, cert: /dev/null}\n" BASE_TAIL,
     "t.yaml:2:39: tls[0].cert: ",
     "conflicts with from_control_plane: the control plane provides it"},
    {"tls:\n- {name: m, from_control_plane: true, ca_pem: \"-----BEGIN X-----\"}\n" BASE_TAIL,
     "t.yaml:2:39: tls[0].ca_pem: ",
     "conflicts with from_control_plane: the control plane provides it"},
    {"tls:\n- {name: s, type: server, from_control_plane: true}\n" BASE_TAIL,
     "t.yaml:2:27: tls[0].from_control_plane: ",
     "only for type mesh (the control plane issues workload identities)"},
    {"tls:\n- {name: m, from_control_plane: true, server_names: [a.b]}\n" BASE_TAIL,
     "t.yaml:2:39: tls[0].server_names: ",
     "only for type server (it selects a certificate by SNI)"},

    /* TLS contexts that are not mesh contexts */
    {"tls:\n- {name: s, type: server, cert: /dev/null, key: /dev/null, trust_domain: "
     "a}\n" BASE_TAIL,
     "t.yaml:2:60: tls[0].trust_domain: ",
     "only for type mesh (a server context checks no SPIFFE ID)"},
    {"tls:\n- {name: k, type: client, cert: /dev/null}\n" BASE_TAIL,
     "t.yaml:2:3: tls[0].key: ", "a client certificate needs both cert and key"},
    {"tls:\n- {name: s, type: server, key: /dev/null}\n" BASE_TAIL,
     "t.yaml:2:3: tls[0].cert: ", "missing required field"},
    {"tls:\n- {name: s, type: server, cert: /dev/null, cert_pem: \"-----BEGIN X-----\", key: "
     "/dev/null}\n" BASE_TAIL,
     "t.yaml:2:27: tls[0].cert: ", "conflicts with cert_pem; set one of them"},
    {"tls:\n- {name: s, type: server, cert_pem: \"MIIB\", key: /dev/null}\n" BASE_TAIL,
     "t.yaml:2:37: tls[0].cert_pem: ", "expected PEM text"},
    {"tls:\n- {name: k, type: client, ca: /dev/null, cert: /dev/null}\n" BASE_TAIL,
     "t.yaml:2:3: tls[0].key: ", "a client certificate needs both cert and key"},
    {CTX
     "- {name: m, cert: /dev/null, key: /dev/null, ca: /dev/null, server_names: [a.b]}\n" BASE_TAIL,
     "t.yaml:3:61: tls[1].server_names: ",
     "only for type server (it selects a certificate by SNI)"},
    {"tls:\n- {name: s, type: server, cert: /dev/null, key: /dev/null, server_names: "
     "[\"a*b\"]}\n" BASE_TAIL,
     "t.yaml:2:75: tls[0].server_names[0]: ", "expected a host name or *.domain, got \"a*b\""},

    /* listeners */
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tls: {mode: strict-ish, "
     "context: x}\n" RT_C,
     "t.yaml:5:15: listeners[0].tls.mode: ",
     "expected one of STRICT, PERMISSIVE, DISABLE, TERMINATE, got \"strict-ish\""},
    {CTX "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tls: {mode: STRICT, "
         "context: nope}\n" RT_C,
     "t.yaml:7:32: listeners[0].tls.context: ", "unknown TLS context \"nope\""},
    {CTX "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  direction: outbound\n"
         "  tls: {mode: STRICT, context: w}\n" RT_C,
     "t.yaml:8:9: listeners[0].tls.mode: ", "STRICT is only valid on inbound listeners"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tls: {mode: "
     "PERMISSIVE}\n" RT_C,
     "t.yaml:5:8: listeners[0].tls.context: ", "missing required field"},
    {CTX "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tls: {mode: DISABLE, "
         "context: w}\n" RT_C,
     "t.yaml:7:24: listeners[0].tls.context: ", "must not be set when mode is DISABLE"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  http: "
     "{path_normalization: MERGE}\n" RT_C,
     "t.yaml:5:30: listeners[0].http.path_normalization: ",
     "expected one of STRICT, NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES, got \"MERGE\""},
    {SRV "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tls: {mode: "
         "TERMINATE}\n" RT_C,
     "t.yaml:7:8: listeners[0].tls.contexts: ",
     "missing required field (mode TERMINATE needs server contexts)"},
    {CTX "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tls: {mode: "
         "TERMINATE, contexts: [w]}\n" RT_C,
     "t.yaml:7:37: listeners[0].tls.contexts[0]: ", "TLS context w is not of type server"},
    {SRV "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tls: {mode: "
         "TERMINATE, contexts: [s, s]}\n" RT_C,
     "t.yaml:7:40: listeners[0].tls.contexts[1]: ", "TLS context s is listed twice"},
    {SRV "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tls: {mode: "
         "STRICT, context: s}\n" RT_C,
     "t.yaml:7:32: listeners[0].tls.context: ",
     "STRICT needs a mesh context; TLS context s is not one (use TERMINATE)"},
    {SRV "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tls: {mode: "
         "TERMINATE, context: s}\n" RT_C,
     "t.yaml:7:26: listeners[0].tls.context: ",
     "must not be set when mode is TERMINATE (use contexts)"},
    {SRV "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  protocol: auto\n"
         "  tls: {mode: TERMINATE, contexts: [s]}\n" RT_C,
     "t.yaml:7:13: listeners[0].protocol: ",
     "auto detects plaintext protocols; with tls.mode TERMINATE use http or tcp"},
    {CTX "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tls: {mode: "
         "PERMISSIVE, context: w, contexts: [w]}\n" RT_C,
     "t.yaml:7:39: listeners[0].tls.contexts: ", "only for mode TERMINATE"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: nope\n" RT_C,
     "t.yaml:4:16: listeners[0].route_table: ", "unknown route table \"nope\""},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tlz: {}\n" RT_C,
     "t.yaml:5:3: listeners[0].tlz: ",
     "unknown field \"tlz\" (accepted: name, address, direction, protocol, tls, route_table, "
     "tcp_cluster, tcp_clusters, http, "
     "timeouts, authorization, request_authentication, bind, original_destination, "
     "destination_prefixes, sni_routes, "
     "origin)"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n" RT_C,
     "t.yaml:2:3: listeners[0].route_table: ", "missing required field"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  protocol: tcp\n  route_table: rt\n  "
     "tcp_cluster: c\n" RT_C,
     "t.yaml:5:3: listeners[0].route_table: ", "not allowed on a tcp listener"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  protocol: tcp\n" RT_C,
     "t.yaml:2:3: listeners[0]: ",
     "one of tcp_cluster, tcp_clusters, sni_routes is required on a tcp listener"},
/* TLS passthrough by SNI (listeners[].sni_routes) */
#define SNIL "listeners:\n- name: l\n  address: 127.0.0.1:1\n  protocol: tcp\n  sni_routes:\n"
    {SNIL "  - {server_names: [a.example.com]}\n" RT_C,
     "t.yaml:6:5: listeners[0].sni_routes[0]: ", "one of tcp_cluster, tcp_clusters is required"},
    {SNIL "  - {tcp_cluster: c}\n" RT_C,
     "t.yaml:6:5: listeners[0].sni_routes[0].server_names: ", "missing required field"},
    {SNIL "  - {server_names: [], tcp_cluster: c}\n" RT_C,
     "t.yaml:6:20: listeners[0].sni_routes[0].server_names: ", "must have at least 1 entry"},
    {SNIL "  - {server_names: [a], tcp_cluster: c, tcp_clusters: [{cluster: c, weight: 1}]}\n" RT_C,
     "t.yaml:6:41: listeners[0].sni_routes[0].tcp_clusters: ",
     "conflicts with tcp_cluster; set exactly one of tcp_cluster, tcp_clusters"},
    {SNIL "  - {server_names: [a], tcp_clusters: [{cluster: c, weight: 0}]}\n" RT_C,
     "t.yaml:6:39: listeners[0].sni_routes[0].tcp_clusters: ", "the weights must not all be 0"},
    {SNIL "  - {server_names: [a], tcp_cluster: nope}\n" RT_C,
     "t.yaml:6:38: listeners[0].sni_routes[0].tcp_cluster: ", "unknown cluster \"nope\""},
    {SNIL "  - {server_names: ['a b'], tcp_cluster: c}\n" RT_C,
     "t.yaml:6:21: listeners[0].sni_routes[0].server_names[0]: ",
     "expected a host name or *.domain"},
    {SNIL "  - {server_names: ['*'], tcp_cluster: c}\n" RT_C,
     "t.yaml:6:21: listeners[0].sni_routes[0].server_names[0]: ",
     "expected a host name or *.domain"},
    {SNIL "  - {server_names: [a.x, '*.y'], tcp_cluster: c}\n"
          "  - {server_names: [b.x, A.X], tcp_cluster: c}\n" RT_C,
     "t.yaml:7:20: listeners[0].sni_routes[1].server_names: ",
     "A.X is already routed by sni_routes[0] (first match wins)"},
    {SNIL "  - {server_names: [a], tcp_cluster: c, weight: 1}\n" RT_C,
     "t.yaml:6:41: listeners[0].sni_routes[0].weight: ",
     "unknown field \"weight\" (accepted: server_names, tcp_cluster, tcp_clusters, origin)"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  sni_routes: "
     "[{server_names: [a], tcp_cluster: c}]\n" RT_C,
     "t.yaml:5:3: listeners[0].sni_routes: ",
     "only on a tcp listener (it passes TLS through by the ClientHello's SNI)"},
    {SRV
     "listeners:\n- name: l\n  address: 127.0.0.1:1\n  protocol: tcp\n  tls: {mode: TERMINATE, "
     "contexts: [s]}\n  tcp_cluster: c\n  sni_routes: [{server_names: [a], tcp_cluster: c}]\n" RT_C,
     "t.yaml:9:3: listeners[0].sni_routes: ",
     "needs tls.mode DISABLE: the TLS is passed through, never terminated"},
/* weighted TCP routes (listeners[].tcp_clusters); the rest of their
     * checks are in test_validate.c, for files and built models alike */
#define TCPL "listeners:\n- name: l\n  address: 127.0.0.1:1\n  protocol: tcp\n"
    {TCPL "  tcp_clusters: [{cluster: c, weight: 1}]\n  tcp_cluster: c\n" RT_C,
     "t.yaml:6:3: listeners[0].tcp_cluster: ",
     "conflicts with tcp_clusters; set exactly one of tcp_cluster, tcp_clusters"},
    {TCPL "  tcp_clusters: []\n" RT_C,
     "t.yaml:5:17: listeners[0].tcp_clusters: ", "must have at least 1 entry"},
    {TCPL "  tcp_clusters: c\n" RT_C,
     "t.yaml:5:17: listeners[0].tcp_clusters: ", "expected a list, got \"c\""},
    {TCPL "  tcp_clusters:\n" RT_C,
     "t.yaml:5:3: listeners[0].tcp_clusters: ", "expected a list, got null"},
    {TCPL "  tcp_clusters: [c]\n" RT_C,
     "t.yaml:5:18: listeners[0].tcp_clusters[0]: ", "expected a mapping, got \"c\""},
    {TCPL "  tcp_clusters: [{cluster: c}]\n" RT_C,
     "t.yaml:5:18: listeners[0].tcp_clusters[0].weight: ", "missing required field"},
    {TCPL "  tcp_clusters: [{weight: 1}]\n" RT_C,
     "t.yaml:5:18: listeners[0].tcp_clusters[0].cluster: ", "missing required field"},
    {TCPL "  tcp_clusters: [{cluster: c, weight: '80'}]\n" RT_C,
     "t.yaml:5:39: listeners[0].tcp_clusters[0].weight: ", "expected an integer, got \"80\""},
    {TCPL "  tcp_clusters: [{cluster: c, weight: -1}]\n" RT_C,
     "t.yaml:5:39: listeners[0].tcp_clusters[0].weight: ", "must be between 0 and 1000000, got -1"},
    {TCPL "  tcp_clusters: [{cluster: 'a b', weight: 1}]\n" RT_C,
     "t.yaml:5:28: listeners[0].tcp_clusters[0].cluster: ",
     "invalid name \"a b\": whitespace and control characters are not allowed"},
    {TCPL "  tcp_clusters: [{cluster: c, weight: 1, request_headers: {remove: [x-a]}}]\n" RT_C,
     "t.yaml:5:42: listeners[0].tcp_clusters[0].request_headers: ",
     "unknown field \"request_headers\" (accepted: cluster, weight, origin)"},
    {TCPL "  tcp_clusters: [{cluster: c, weight: 1}, {cluster: c, weight: 1, cluster: d}]\n" RT_C,
     "t.yaml:5:67: listeners[0].tcp_clusters[1].cluster: ", "duplicate field (first at line 5)"},
#undef TCPL
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  tcp_cluster: c\n" RT_C,
     "t.yaml:5:3: listeners[0].tcp_cluster: ", "not allowed on an http listener"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  protocol: tcp\n  tcp_cluster: c\n"
     "  authorization: {rules: [{action: ALLOW, methods: [GET]}]}\n" RT_C,
     "t.yaml:6:43: listeners[0].authorization.rules[0].methods: ", "not allowed on a tcp listener"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n"
     "  authorization: {rules: [{principals: ['*']}]}\n" RT_C,
     "t.yaml:5:27: listeners[0].authorization.rules[0].action: ", "missing required field"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n"
     "  authorization: {rules: [{action: ALLOW, principals: ['spiffe://a/*/b']}]}\n" RT_C,
     "t.yaml:5:56: listeners[0].authorization.rules[0].principals[0]: ", "only allowed at the end"},
/* request_authentication.rules[].jwks_uri */
#define JWL                                                                                        \
    "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  "                         \
    "request_authentication:\n    rules:\n"
    {JWL "    - {issuer: i, jwks_uri: {url: 'https://k.example/jwks', cluster: c}}\n" RT_C,
     "t.yaml:7:70: listeners[0].request_authentication.rules[0].jwks_uri.cluster: ",
     "the key set's URL is https, and cluster \"c\" does not originate TLS (tls.context naming "
     "a context of type client)"},
    {JWL "    - {issuer: i, jwks_uri: {url: 'ftp://k.example/jwks', cluster: c}}\n" RT_C,
     "t.yaml:7:35: listeners[0].request_authentication.rules[0].jwks_uri.url: ",
     "\"ftp://k.example/jwks\": not an http:// or https:// URL"},
    {JWL "    - {issuer: i, jwks_uri: {url: 'http://k.example', cluster: c}}\n" RT_C,
     "t.yaml:7:35: listeners[0].request_authentication.rules[0].jwks_uri.url: ",
     "\"http://k.example\": no path (e.g. /.well-known/jwks.json)"},
    {JWL "    - {issuer: i, jwks_uri: {url: 'http://u@k.example/j', cluster: c}}\n" RT_C,
     "t.yaml:7:35: listeners[0].request_authentication.rules[0].jwks_uri.url: ",
     "\"http://u@k.example/j\": user information is not allowed"},
    {JWL "    - {issuer: i}\n" RT_C,
     "t.yaml:7:7: listeners[0].request_authentication.rules[0].jwks: ",
     "missing required field (jwks, jwks_uri or both)"},
    {JWL "    - {issuer: i, jwks_uri: {url: 'http://k/j', cluster: nope}}\n" RT_C,
     "t.yaml:7:58: listeners[0].request_authentication.rules[0].jwks_uri.cluster: ",
     "unknown cluster \"nope\""},
    {JWL "    - {issuer: i, jwks_uri: {url: 'http://k/j', cluster: c, refresh: 500ms}}\n" RT_C,
     "t.yaml:7:70: listeners[0].request_authentication.rules[0].jwks_uri.refresh: ",
     "must be between 1000ms and 86400000ms, got \"500ms\""},
    {JWL "    - {issuer: i, jwks_uri: {url: 'http://k/j'}}\n" RT_C,
     "t.yaml:7:29: listeners[0].request_authentication.rules[0].jwks_uri.cluster: ",
     "missing required field"},
    {JWL "    - {issuer: i, jwks_uri: {url: 'http://k/j', cluster: h2}}\n" RT_C
         "- {name: h2, protocol: http2, endpoints: [{address: 127.0.0.1:3}]}\n",
     "t.yaml:7:58: listeners[0].request_authentication.rules[0].jwks_uri.cluster: ",
     "the key set is fetched with HTTP/1.1, and cluster \"h2\" speaks HTTP/2 (protocol: http2); "
     "use "
     "a cluster with protocol http1 or original"},
#undef JWL
#define AZL "listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  authorization:\n"
    {AZL "    policies: [{name: p, rules: [{when: [{key: request.foo, values: [x]}]}]}]\n" RT_C,
     "t.yaml:6:48: listeners[0].authorization.policies[0].rules[0].when[0].key: ",
     "unknown condition key \"request.foo\""},
    {AZL "    policies: [{name: p, rules: [{when: [{key: source.ip, values: [abc]}]}]}]\n" RT_C,
     "t.yaml:6:68: listeners[0].authorization.policies[0].rules[0].when[0].values[0]: ",
     "invalid IP block"},
    {AZL "    policies: [{name: p, rules: [{when: [{key: source.ip}]}]}]\n" RT_C,
     "t.yaml:6:42: listeners[0].authorization.policies[0].rules[0].when[0]: ",
     "one of values, not_values is required"},
    {AZL "    policies: [{name: p, rules: [{from: [{ip_blocks: [10.0.0.1/8]}]}]}]\n" RT_C,
     "t.yaml:6:55: listeners[0].authorization.policies[0].rules[0].from[0].ip_blocks[0]: ",
     "bits set beyond its prefix length"},
    {AZL "    policies: [{name: p, rules: [{to: [{paths: [\"/{**}/a/{**}\"]}]}]}]\n" RT_C,
     "t.yaml:6:49: listeners[0].authorization.policies[0].rules[0].to[0].paths[0]: ",
     "at most one \"{**}\""},
    {AZL "    policies: [{name: p, rules: [{to: [{ports: [\"0\"]}]}]}]\n" RT_C,
     "t.yaml:6:49: listeners[0].authorization.policies[0].rules[0].to[0].ports[0]: ",
     "a port is a number 1-65535"},
    {AZL "    policies: [{name: p, action: CUSTOM}]\n" RT_C,
     "t.yaml:6:16: listeners[0].authorization.policies[0].provider: ", "missing required field"},
    {AZL "    policies: [{name: p, rules: [{from: [{source: {}}]}]}]\n" RT_C,
     "t.yaml:6:43: listeners[0].authorization.policies[0].rules[0].from[0].source: ",
     "unknown field \"source\""},
    {AZL "    policies: [{name: p, rules: [{to: [{methods: [\"G*T\"]}]}]}]\n" RT_C,
     "t.yaml:6:51: listeners[0].authorization.policies[0].rules[0].to[0].methods[0]: ",
     "only allowed once, at the start or the end"},
/* CUSTOM policies and their external authorizers (ext_authz). */
#define EA "ext_authz:\n- {name: ea, cluster: c}\n"
    {AZL "    policies: [{name: p, action: CUSTOM, rules: [{}]}]\n" RT_C EA,
     "t.yaml:6:16: listeners[0].authorization.policies[0].provider: ",
     "missing required field (action CUSTOM names an ext_authz entry)"},
    {AZL "    policies: [{name: p, action: CUSTOM, provider: nope, rules: [{}]}]\n" RT_C EA,
     "t.yaml:6:52: listeners[0].authorization.policies[0].provider: ",
     "unknown ext_authz \"nope\""},
    {AZL "    policies: [{name: p, action: DENY, provider: ea, rules: [{}]}]\n" RT_C EA,
     "t.yaml:6:40: listeners[0].authorization.policies[0].provider: ",
     "only allowed with action CUSTOM"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  protocol: tcp\n  tcp_cluster: c\n"
     "  authorization: {policies: [{name: p, action: CUSTOM, provider: ea}]}\n" RT_C EA,
     "t.yaml:6:48: listeners[0].authorization.policies[0].action: ",
     "CUSTOM is not allowed on a tcp listener"},
    {RT_C "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n"
          "ext_authz:\n- {name: ea, cluster: nope}\n",
     "t.yaml:8:23: ext_authz[0].cluster: ", "unknown cluster \"nope\""},
    {RT_C "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n" EA
          "- {name: ea, cluster: c}\n",
     "t.yaml:9:10: ext_authz[1].name: ", "duplicate ext_authz name \"ea\""},
    {RT_C "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n"
          "ext_authz:\n- {name: ea, cluster: c, check_headers: ['x-*-y']}\n",
     "t.yaml:8:42: ext_authz[0].check_headers[0]: ", "only allowed once, at the start or the end"},
    {RT_C "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n"
          "ext_authz:\n- {name: ea, cluster: c, path_prefix: check}\n",
     "t.yaml:8:39: ext_authz[0].path_prefix: ", "a path prefix starts with \"/\""},
    {RT_C "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n"
          "ext_authz:\n- {name: ea, cluster: c, status_on_error: 99}\n",
     "t.yaml:8:43: ext_authz[0].status_on_error: ", "must be between 200 and 599, got 99"},
    {RT_C "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n"
          "ext_authz:\n- {name: ea, cluster: c, failOpen: true}\n",
     "t.yaml:8:26: ext_authz[0].failOpen: ", "unknown field \"failOpen\""},
    {RT_C "- {name: h2, protocol: http2, endpoints: [{address: 127.0.0.1:3}]}\n"
          "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n"
          "ext_authz:\n- {name: ea, cluster: h2}\n",
     "t.yaml:9:23: ext_authz[0].cluster: ", "the check is sent with HTTP/1.1"},
#undef EA
#undef AZL
    {"listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n- {name: l, address: "
     "127.0.0.1:2, route_table: rt}\n" RT_C,
     "t.yaml:3:10: listeners[1].name: ", "duplicate listener name \"l\" (first defined at line 2)"},
    {"listeners:\n- {name: a, address: 127.0.0.1:1, route_table: rt}\n- {name: b, address: "
     "127.0.0.1:1, route_table: rt}\n" RT_C,
     "t.yaml:3:22: listeners[1].address: ",
     "address 127.0.0.1:1 is already used by listener \"a\""},
#define CAP                                                                                        \
    "listeners:\n- {name: cap, address: 127.0.0.1:15001, direction: outbound, protocol: tcp, "     \
    "original_destination: {}}\n"
#define VL(addr, more)                                                                             \
    "- {name: v, address: " addr ", direction: outbound, protocol: tcp, tcp_cluster: c" more "}\n"
    /* destination_prefixes: blocks on virtual listeners, each claimed once */
    {CAP VL("0.0.0.0:3306", ", bind: false, destination_prefixes: [10.0.0.1/8]") RT_C,
     "t.yaml:3:124: listeners[1].destination_prefixes[0]: ",
     "\"10.0.0.1/8\" has bits set beyond its prefix length"},
    {CAP VL("0.0.0.0:3306", ", bind: false, destination_prefixes: [10.0.0.0/8, 10.0.0.0/8]") RT_C,
     "t.yaml:3:136: listeners[1].destination_prefixes[1]: ", "10.0.0.0/8 is listed twice"},
    {CAP VL("10.0.0.1:3306", ", bind: false, destination_prefixes: [10.0.0.0/8]") RT_C,
     "t.yaml:3:22: listeners[1].address: ", "the address must be 0.0.0.0:PORT or [::]:PORT"},
    {CAP VL("127.0.0.1:3306", ", destination_prefixes: [10.0.0.0/8]") RT_C,
     "t.yaml:3:90: listeners[1].destination_prefixes: ", "only for a virtual listener"},
    {CAP VL(
         "0.0.0.0:3306",
         ", bind: false, destination_prefixes: [10.0.0.0/8]") "- {name: w, address: '[::]:3306', "
                                                              "direction: outbound, bind: false, "
                                                              "protocol: tcp, "
                                                              "tcp_cluster: c, "
                                                              "destination_prefixes: ['fd00::/8', "
                                                              "10.0.0.0/8]}\n" RT_C,
     "t.yaml:4:135: listeners[2].destination_prefixes[1]: ",
     "10.0.0.0/8 on port 3306 is already claimed by listener \"v\""},
#undef VL
#undef CAP
    /* original_destination: the endpoints come from the connections */
    {"listeners:\n- {name: l, address: 127.0.0.1:1, protocol: tcp, tcp_cluster: c}\n"
     "clusters:\n- {name: c, original_destination: true, endpoints: [{address: 127.0.0.1:2}]}\n",
     "t.yaml:4:41: clusters[0].endpoints: ", "must be empty with original_destination"},
    {"listeners:\n- {name: l, address: 127.0.0.1:1, protocol: tcp, tcp_cluster: c}\n"
     "clusters:\n- {name: c, original_destination: true, lb: maglev, endpoints: []}\n",
     "t.yaml:4:45: clusters[0].lb: ", "a hash balancer has nothing to choose"},
    {"listeners:\n- {name: l, address: 127.0.0.1, route_table: rt}\n" RT_C,
     "t.yaml:2:22: listeners[0].address: ", "expected IP:PORT, got \"127.0.0.1\" (missing port)"},
    {"listeners:\n- {name: l, address: '::1:80', route_table: rt}\n" RT_C,
     "t.yaml:2:22: listeners[0].address: ", "IPv6 addresses must be in brackets"},
    {"listeners:\n- {name: l, address: 127.0.0.1:70000, route_table: rt}\n" RT_C,
     "t.yaml:2:22: listeners[0].address: ", "port must be between 0 and 65535"},
    {"listeners:\n- {name: l, address: '[::g]:80', route_table: rt}\n" RT_C,
     "t.yaml:2:22: listeners[0].address: ", "invalid IPv6 address \"::g\""},
    {"listeners:\n- {name: 'a b', address: 127.0.0.1:1, route_table: rt}\n" RT_C,
     "t.yaml:2:10: listeners[0].name: ", "whitespace and control characters are not allowed"},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  http: {xff: "
     "replace}\n" RT_C,
     "t.yaml:5:15: listeners[0].http.xff: ", "expected one of append, off, got \"replace\""},
    {"listeners:\n- name: l\n  address: 127.0.0.1:1\n  route_table: rt\n  timeouts: {detect: "
     "0s}\n" RT_C,
     "t.yaml:5:22: listeners[0].timeouts.detect: ", "must be between 1ms and 60000ms, got \"0s\""},

    /* local route actions (body on line 6, column 7) */
    {ROUTE_HEAD "    - {redirect: {path: /x, uri: /y}}\n" ROUTE_TAIL,
     "t.yaml:6:29: " R ".redirect.uri: ",
     "unknown field \"uri\" (accepted: scheme, host, port, port_from, path, prefix, code)"},
    {ROUTE_HEAD "    - {redirect: {scheme: ftp}}\n" ROUTE_TAIL,
     "t.yaml:6:27: " R ".redirect.scheme: ", "expected http or https, got \"ftp\""},
    {ROUTE_HEAD "    - {redirect: {path: /a, prefix: /b}}\n" ROUTE_TAIL,
     "t.yaml:6:29: " R ".redirect.prefix: ",
     "conflicts with path; set exactly one of path, prefix"},
    {ROUTE_HEAD "    - {redirect: {path: /x}, timeout: 1s}\n" ROUTE_TAIL,
     "t.yaml:6:30: " R ".timeout: ",
     "a redirect is answered at once: the timeout would never apply"},
    {ROUTE_HEAD "    - {redirect: {path: /x}, request_headers: {set: {x-a: '1'}}}\n" ROUTE_TAIL,
     "t.yaml:6:30: " R ".request_headers: ", "a redirect route sends no request upstream to edit"},
    {ROUTE_HEAD "    - {redirect: {path: /x}, response_headers: {remove: [location]}}\n" ROUTE_TAIL,
     "t.yaml:6:30: " R ".response_headers: ", "edits location, which the redirect sets"},
    {ROUTE_HEAD "    - {cluster: c, cors: {allow_origins: [{exact: a}]}, response_headers: {set: "
                "{access-control-allow-origin: '*'}}}\n" ROUTE_TAIL,
     "t.yaml:6:57: " R ".response_headers: ",
     "edits access-control-allow-origin, which the route's cors sets"},
    {ROUTE_HEAD "    - {cluster: c, fault: {abort: {status: 503, percent: '5'}}}\n" ROUTE_TAIL,
     "t.yaml:6:58: " R ".fault.abort.percent: ",
     "expected a percentage from 0 to 100 with at most 4 decimals (the resolution is 0.0001%), got "
     "\"5\""},
    {ROUTE_HEAD "    - {cluster: c, fault: {abort: {status: 503, percent: 1.23456}}}\n" ROUTE_TAIL,
     "t.yaml:6:58: " R ".fault.abort.percent: ", "with at most 4 decimals"},
    {ROUTE_HEAD "    - {cluster: c, fault: {abort: {status: 503}}}\n" ROUTE_TAIL,
     "t.yaml:6:35: " R ".fault.abort.percent: ", "missing required field"},
    {ROUTE_HEAD "    - {cluster: c, fault: {delay: {percent: 5}}}\n" ROUTE_TAIL,
     "t.yaml:6:35: " R ".fault.delay.fixed: ", "missing required field"},
    {ROUTE_HEAD "    - {cluster: c, fault: {delay: {fixed: 0s, percent: 5}}}\n" ROUTE_TAIL,
     "t.yaml:6:43: " R ".fault.delay.fixed: ", "must be between 1ms and 86400000ms, got \"0s\""},
    {ROUTE_HEAD "    - {cluster: c, fault: {abort: {status: 600, percent: 5}}}\n" ROUTE_TAIL,
     "t.yaml:6:44: " R ".fault.abort.status: ", "must be between 200 and 599, got 600"},
    {ROUTE_HEAD
     "    - {cluster: c, cors: {allow_origins: [{exact: a}], max_age: 1.5s}}\n" ROUTE_TAIL,
     "t.yaml:6:65: " R ".cors.max_age: ", "must be a whole number of seconds"},
    {ROUTE_HEAD
     "    - {cluster: c, cors: {allow_origins: [{exact: a}], allow_headers: ['x y']}}\n" ROUTE_TAIL,
     "t.yaml:6:72: " R ".cors.allow_headers[0]: ", "\"x y\" is not a valid HTTP token"},
    {ROUTE_HEAD "    - {cluster: c, cors: {allow_origins: [{suffix: a}]}}\n" ROUTE_TAIL,
     "t.yaml:6:44: " R ".cors.allow_origins[0].suffix: ",
     "unknown field \"suffix\" (accepted: exact, prefix, regex, origin)"},
    {ROUTE_HEAD "    - {cluster: c, cors: {allow_origins: [{}]}}\n" ROUTE_TAIL,
     "t.yaml:6:43: " R ".cors.allow_origins[0]: ", "one of exact, prefix, regex is required"},
    {ROUTE_HEAD "    - {cluster: c, cors: {allow_origins: [{exact: a}], unmatched_preflights: "
                "drop}}\n" ROUTE_TAIL,
     "t.yaml:6:78: " R ".cors.unmatched_preflights: ",
     "expected one of forward, ignore, got \"drop\""},
    {ROUTE_HEAD
     "    - {direct_response: {status: 200}, cors: {allow_origins: [{exact: a}]}}\n" ROUTE_TAIL,
     "t.yaml:6:40: " R ".cors: ", "does not apply to a direct_response route"},
    {ROUTE_HEAD "    - {match: {methods: [GET, CONNECT]}, cluster: c, fault: {abort: {status: 503, "
                "percent: 1}}}\n" ROUTE_TAIL,
     "t.yaml:6:54: " R ".fault: ",
     "does not apply to CONNECT tunnels; give CONNECT a route of its own"},

    /* routes (body on line 6, column 7) */
    {ROUTE_HEAD "    - {cluster: c, weighted_clusters: [{cluster: d, weight: 1}]}\n" ROUTE_TAIL,
     "t.yaml:6:20: " R ".weighted_clusters: ", "conflicts with cluster"},
    {ROUTE_HEAD "    - {name: x}\n" ROUTE_TAIL, "t.yaml:6:7: " R ": ",
     "one of cluster, weighted_clusters, direct_response, redirect is required"},
    {ROUTE_HEAD "    - {cluster: nope}\n" ROUTE_TAIL,
     "t.yaml:6:17: " R ".cluster: ", "unknown cluster \"nope\""},
    {ROUTE_HEAD
     "    - weighted_clusters: [{cluster: c, weight: 0}, {cluster: d, weight: 0}]\n" ROUTE_TAIL,
     "t.yaml:6:26: " R ".weighted_clusters: ", "the weights must not all be 0"},
    {ROUTE_HEAD "    - weighted_clusters: [{cluster: c, weight: 1000001}]\n" ROUTE_TAIL,
     "t.yaml:6:48: " R ".weighted_clusters[0].weight: ", "must be between 0 and 1000000"},
    {ROUTE_HEAD "    - weighted_clusters: [{cluster: c}]\n" ROUTE_TAIL,
     "t.yaml:6:27: " R ".weighted_clusters[0].weight: ", "missing required field"},
    {ROUTE_HEAD "    - direct_response: {status: 700}\n" ROUTE_TAIL,
     "t.yaml:6:33: " R ".direct_response.status: ", "must be between 200 and 599, got 700"},
    {ROUTE_HEAD "    - {direct_response: {status: 503}, rewrite: {host: x}}\n" ROUTE_TAIL,
     "t.yaml:6:40: " R ".rewrite: ", "cannot be combined with direct_response"},
    {ROUTE_HEAD "    - {match: {path: {regex: 'a(b'}}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:30: " R ".match.path.regex: ",
     "invalid regex at offset 3: missing closing parenthesis"},
    {ROUTE_HEAD "    - {match: {path: {prefix: /a, exact: /b}}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:35: " R ".match.path.exact: ", "conflicts with prefix"},
    {ROUTE_HEAD "    - {match: {path: {prefix: api}}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:31: " R ".match.path.prefix: ", "must start with \"/\""},
    {ROUTE_HEAD "    - {match: {path: {regex: '/a', prefix: /b}}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:36: " R ".match.path.prefix: ",
     "conflicts with regex; set exactly one of prefix, exact, regex"},
    {ROUTE_HEAD "    - {match: {methods: [GET, 'B D']}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:31: " R ".match.methods[1]: ", "\"B D\" is not a valid HTTP token"},
    {ROUTE_HEAD "    - {match: {headers: [{name: x, regex: '[a'}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:43: " R ".match.headers[0].regex: ",
     "invalid regex at offset 2: missing terminating ]"},
    {ROUTE_HEAD "    - {match: {headers: [{name: x}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:26: " R ".match.headers[0]: ",
     "one of exact, prefix, suffix, regex, present is required"},
    {ROUTE_HEAD "    - {match: {headers: [{name: x, present: false}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:36: " R ".match.headers[0].present: ", "must be true; use invert: true"},
    {ROUTE_HEAD "    - {match: {headers: [{name: 'x y', exact: a}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:33: " R ".match.headers[0].name: ", "\"x y\" is not a valid HTTP token"},
    {ROUTE_HEAD
     "    - {match: {headers: [{name: x, exact: a, prefix: b}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:46: " R ".match.headers[0].prefix: ", "conflicts with exact"},
    {ROUTE_HEAD "    - {cluster: c, rewrite: {prefix: v2}}\n" ROUTE_TAIL,
     "t.yaml:6:38: " R ".rewrite.prefix: ", "must start with \"/\""},
    {ROUTE_HEAD "    - {cluster: c, rewrite: {host: \"a\\r\\nx-evil: 1\"}}\n" ROUTE_TAIL,
     "t.yaml:6:36: " R ".rewrite.host: ", "string contains control character 0x0d"},
    {ROUTE_HEAD "    - {cluster: c, timeout: soon}\n" ROUTE_TAIL,
     "t.yaml:6:29: " R ".timeout: ", "expected a duration such as"},

    /* virtual hosts and route tables */
    {"route_tables:\n- {name: rt, virtual_hosts: [{domains: []}]}\n" ROUTE_TAIL,
     "t.yaml:2:40: route_tables[0].virtual_hosts[0].domains: ", "must have at least 1 entry"},
    {"route_tables:\n- {name: rt, virtual_hosts: [{name: v}]}\n" ROUTE_TAIL,
     "t.yaml:2:30: route_tables[0].virtual_hosts[0].domains: ", "missing required field"},
    {"route_tables:\n- {name: rt, virtual_hosts: [{domains: ['*']}, {domains: [a, "
     "'*']}]}\n" ROUTE_TAIL,
     "t.yaml:2:62: route_tables[0].virtual_hosts[1].domains[1]: ",
     "duplicate domain \"*\" (first defined at line 2)"},
    {"route_tables:\n- {name: rt, virtual_hosts: [{domains: ['a*b']}]}\n" ROUTE_TAIL,
     "t.yaml:2:41: route_tables[0].virtual_hosts[0].domains[0]: ",
     "\"*\" must be the first or last character"},
    {"route_tables:\n- {name: rt, virtual_hosts: [{domains: ['*a*']}]}\n" ROUTE_TAIL,
     "t.yaml:2:41: route_tables[0].virtual_hosts[0].domains[0]: ",
     "a domain may hold only one \"*\""},
    {"route_tables:\n- {name: rt, virtual_hosts: [{domains: ['*.a.com:8*']}]}\n" ROUTE_TAIL,
     "t.yaml:2:41: route_tables[0].virtual_hosts[0].domains[0]: ", "only one"},
    {"route_tables:\n- {name: rt, virtual_hosts: [{domains: ['a.*:80', 'b/c']}]}\n" ROUTE_TAIL,
     "t.yaml:2:51: route_tables[0].virtual_hosts[0].domains[1]: ", "invalid domain \"b/c\""},
    {"route_tables:\n- {name: rt}\n" ROUTE_TAIL,
     "t.yaml:2:3: route_tables[0].virtual_hosts: ", "missing required field"},
    {"route_tables:\n- {name: rt, virtual_hosts: [{domains: ['*']}]}\n- {name: rt, virtual_hosts: "
     "[{domains: ['*']}]}\n" ROUTE_TAIL,
     "t.yaml:3:10: route_tables[1].name: ", "duplicate route table name \"rt\""},

    /* clusters */
    {"clusters:\n- {name: c}\n", "t.yaml:2:3: clusters[0].endpoints: ", "missing required field"},
    {"clusters:\n- {name: c, endpoints: [{address: 127.0.0.1:1, weight: 0}]}\n",
     "t.yaml:2:56: clusters[0].endpoints[0].weight: ", "must be between 1 and 1000000, got 0"},
    {"clusters:\n- {name: c, endpoints: [{address: 127.0.0.1:0}]}\n",
     "t.yaml:2:35: clusters[0].endpoints[0].address: ", "port must be between 1 and 65535"},
    {"clusters:\n- {name: c, lb: fastest, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:17: clusters[0].lb: ",
     "expected one of round_robin, least_request, random, ring_hash, maglev, got \"fastest\""},
    {"clusters:\n- {name: c, tls: {context: w}, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:28: clusters[0].tls.context: ", "unknown TLS context \"w\""},
    {CTX "clusters:\n- {name: c, tls: {context: w, server_ids: [backend]}, endpoints: [{address: "
         "127.0.0.1:1}]}\n",
     "t.yaml:4:44: clusters[0].tls.server_ids[0]: ", "expected a SPIFFE ID"},
    {CLI "clusters:\n- {name: c, tls: {context: k}, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:4:13: clusters[0].tls: ",
     "a client context needs the server's name: set sni or subject_alt_names (or "
     "insecure_skip_verify)"},
    {SRV "clusters:\n- {name: c, tls: {context: s}, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:4:28: clusters[0].tls.context: ",
     "TLS context s is of type server; a cluster needs a mesh or client context"},
    {CTX "clusters:\n- {name: c, tls: {context: w, subject_alt_names: [a]}, endpoints: [{address: "
         "127.0.0.1:1}]}\n",
     "t.yaml:4:31: clusters[0].tls.subject_alt_names: ",
     "only with a client context (a mesh context checks server_ids)"},
    {CLI "clusters:\n- {name: c, tls: {context: k, sni: a, server_ids: [\"spiffe://a/b\"]}, "
         "endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:4:39: clusters[0].tls.server_ids: ",
     "only with a mesh context (a client context checks subject_alt_names)"},
    {CLI "clusters:\n- {name: c, tls: {context: k, insecure_skip_verify: true, subject_alt_names: "
         "[a]}, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:4:59: clusters[0].tls.subject_alt_names: ",
     "would be ignored: insecure_skip_verify is set"},
    {CTX "clusters:\n- {name: c, tls: {context: w, insecure_skip_verify: true}, endpoints: "
         "[{address: 127.0.0.1:1}]}\n",
     "t.yaml:4:31: clusters[0].tls.insecure_skip_verify: ",
     "only with a client context (mesh peers are always verified)"},
    {"clusters:\n- {name: c, endpoints: [{address: 127.0.0.1:1}]}\n- {name: c, endpoints: "
     "[{address: 127.0.0.1:1}]}\n",
     "t.yaml:3:10: clusters[1].name: ", "duplicate cluster name \"c\" (first defined at line 2)"},
    {"clusters:\n- {name: c, pool: {max_idle: lots}, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:30: clusters[0].pool.max_idle: ", "expected an integer, got \"lots\""},
    {"clusters:\n- {name: c, connect_timeout: 0s, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:30: clusters[0].connect_timeout: ", "must be between 1ms"},
    {"clusters:\n- {name: c, protocol: h2, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:23: clusters[0].protocol: ", "expected one of http1, http2, original, got \"h2\""},
    {"clusters:\n- {name: c, http2: {max_streams_per_connection: 5}, endpoints: [{address: "
     "127.0.0.1:1}]}\n",
     "t.yaml:2:13: clusters[0].http2: ", "HTTP/2 settings on a cluster that speaks HTTP/1.1"},
    {"clusters:\n- {name: c, protocol: http2, http2: {max_streams_per_connection: 0}, endpoints: "
     "[{address: "
     "127.0.0.1:1}]}\n",
     "t.yaml:2:66: clusters[0].http2.max_streams_per_connection: ", "must be between 1 and 10000"},
    {"clusters:\n- {name: c, protocol: http2, http2: {streams: 5}, endpoints: [{address: "
     "127.0.0.1:1}]}\n",
     "t.yaml:2:38: clusters[0].http2.streams: ",
     "unknown field \"streams\" (accepted: max_streams_per_connection)"},
    /* outlier detection, consistent hashing, circuit breakers */
    {"clusters:\n- {name: c, hash_policy: {header: x}, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:13: clusters[0].hash_policy: ",
     "only used with lb: ring_hash or maglev; with lb: round_robin it would be ignored"},
    {"clusters:\n- {name: c, lb: random, maglev: {table_size: 7}, endpoints: [{address: "
     "127.0.0.1:1}]}\n",
     "t.yaml:2:25: clusters[0].maglev: ", "only used with lb: maglev; with lb: random"},
    {"clusters:\n- {name: c, lb: maglev, ring_hash: {minimum_ring_size: 7}, endpoints: [{address: "
     "127.0.0.1:1}]}\n",
     "t.yaml:2:25: clusters[0].ring_hash: ", "only used with lb: ring_hash"},
    {"clusters:\n- {name: c, lb: maglev, maglev: {table_size: 100}, endpoints: [{address: "
     "127.0.0.1:1}]}\n",
     "t.yaml:2:46: clusters[0].maglev.table_size: ", "must be a prime number"},
    {"clusters:\n- {name: c, lb: ring_hash, ring_hash: {minimum_ring_size: 9000000}, endpoints: "
     "[{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:59: clusters[0].ring_hash.minimum_ring_size: ", "must be between 1 and 8388608"},
    {"clusters:\n- {name: c, lb: ring_hash, hash_policy: {header: a, query_param: b}, endpoints: "
     "[{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:53: clusters[0].hash_policy.query_param: ",
     "conflicts with header; set exactly one of header, cookie, source_ip, query_param"},
    {"clusters:\n- {name: c, lb: ring_hash, hash_policy: {}, endpoints: [{address: "
     "127.0.0.1:1}]}\n",
     "t.yaml:2:41: clusters[0].hash_policy: ", "one of header, cookie, source_ip, query_param"},
    {"clusters:\n- {name: c, lb: ring_hash, hash_policy: {source_ip: false}, endpoints: "
     "[{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:42: clusters[0].hash_policy.source_ip: ", "must be true"},
    {"clusters:\n- {name: c, lb: ring_hash, hash_policy: {header: 'x y'}, endpoints: "
     "[{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:50: clusters[0].hash_policy.header: ", "\"x y\" is not a valid HTTP token"},
    {"clusters:\n- {name: c, lb: ring_hash, hash_policy: {cookie: {path: /}}, endpoints: "
     "[{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:50: clusters[0].hash_policy.cookie.name: ", "missing required field"},
    {"clusters:\n- {name: c, lb: ring_hash, hash_policy: {cookie: {name: s, generate: false, "
     "ttl: 1h}}, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:77: clusters[0].hash_policy.cookie.ttl: ",
     "only used for a cookie the proxy generates"},
    {"clusters:\n- {name: c, lb: ring_hash, hash_policy: {cookie: {name: s, path: 'a;b', ttl: "
     "1s}}, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:66: clusters[0].hash_policy.cookie.path: ", "must start with \"/\""},
    {"clusters:\n- {name: c, outlier_detection: {enabled: false, interval: 1s}, endpoints: "
     "[{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:42: clusters[0].outlier_detection.enabled: ",
     "false, so the other outlier_detection settings would be ignored"},
    {"clusters:\n- {name: c, outlier_detection: {consecutive_local_origin_failures: 2}, "
     "endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:33: clusters[0].outlier_detection.consecutive_local_origin_failures: ",
     "only used with split_external_local_origin_errors: true"},
    {"clusters:\n- {name: c, outlier_detection: {max_ejection_percent: 101}, endpoints: "
     "[{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:55: clusters[0].outlier_detection.max_ejection_percent: ",
     "must be between 0 and 100"},
    {"clusters:\n- {name: c, outlier_detection: {interval: 0s}, endpoints: [{address: "
     "127.0.0.1:1}]}\n",
     "t.yaml:2:43: clusters[0].outlier_detection.interval: ", "must be between 1ms"},
    {"clusters:\n- {name: c, outlier_detection: {consecutive_errors: 3}, endpoints: [{address: "
     "127.0.0.1:1}]}\n",
     "t.yaml:2:33: clusters[0].outlier_detection.consecutive_errors: ", "unknown field"},
    {"clusters:\n- {name: c, circuit_breakers: {max_requests: -1}, endpoints: [{address: "
     "127.0.0.1:1}]}\n",
     "t.yaml:2:46: clusters[0].circuit_breakers.max_requests: ",
     "must be between 0 and 4294967295, got -1"},
    {"limits: {http2: {initial_window_size: 10}}\n" BASE_TAIL,
     "t.yaml:1:39: limits.http2.initial_window_size: ", "must be between 1024 and 16777215"},
    {"limits: {http2: {max_concurrent_streams: 0}}\n" BASE_TAIL,
     "t.yaml:1:42: limits.http2.max_concurrent_streams: ", "must be between 1 and 10000"},

    /* endpoints by name, dns, resolver */
    {"clusters:\n- {name: c, endpoints: [{address: api.example.com}]}\n",
     "t.yaml:2:35: clusters[0].endpoints[0].address: ",
     "expected IP:PORT or NAME:PORT, got \"api.example.com\" (missing port)"},
    {"clusters:\n- {name: c, endpoints: [{address: 'api.example.com:0'}]}\n",
     "t.yaml:2:35: clusters[0].endpoints[0].address: ", "port must be between 1 and 65535"},
    {"clusters:\n- {name: c, endpoints: [{address: 'api.example.com:65536'}]}\n",
     "t.yaml:2:35: clusters[0].endpoints[0].address: ", "port must be between 1 and 65535"},
    {"clusters:\n- {name: c, endpoints: [{address: 'api_v1.example.com:80'}]}\n",
     "t.yaml:2:35: clusters[0].endpoints[0].address: ",
     "invalid DNS name \"api_v1.example.com\": character 0x5f"},
    {"clusters:\n- {name: c, endpoints: [{address: '-api.example.com:80'}]}\n",
     "t.yaml:2:35: clusters[0].endpoints[0].address: ", "not starting or ending with '-'"},
    {"clusters:\n- {name: c, endpoints: [{address: 'api..example.com:80'}]}\n",
     "t.yaml:2:35: clusters[0].endpoints[0].address: ", "labels are 1 to 63"},
    {"clusters:\n- {name: c, endpoints: [{address: "
     "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com:80'}]}\n",
     "t.yaml:2:35: clusters[0].endpoints[0].address: ", "labels are 1 to 63"},
    {"clusters:\n- {name: c, endpoints: [{address: '10.0.0.300:80'}]}\n",
     "t.yaml:2:35: clusters[0].endpoints[0].address: ", "invalid IPv4 address \"10.0.0.300\""},
    {"clusters:\n- {name: c, endpoints: [{address: 'db.10:80'}]}\n",
     "t.yaml:2:35: clusters[0].endpoints[0].address: ", "the last label is all digits"},
    {"clusters:\n- {name: c, dns: {mode: first}, endpoints: [{address: 127.0.0.1:1}]}\n",
     "t.yaml:2:13: clusters[0].dns: ",
     "DNS settings on a cluster whose endpoints are all IP addresses would be ignored"},
    {"clusters:\n- {name: c, dns: {mode: some}, endpoints: [{address: 'a.example:1'}]}\n",
     "t.yaml:2:25: clusters[0].dns.mode: ", "expected one of all, first, got \"some\""},
    {"clusters:\n- {name: c, dns: {refresh: 500ms}, endpoints: [{address: 'a.example:1'}]}\n",
     "t.yaml:2:28: clusters[0].dns.refresh: ", "must be between 1000ms and 86400000ms"},
    {"clusters:\n- {name: c, dns: {family: ipv4}, endpoints: [{address: 'a.example:1'}]}\n",
     "t.yaml:2:27: clusters[0].dns.family: ", "expected one of auto, v4, v6, got \"ipv4\""},
    {"resolver: {servers: [localhost:53]}\n" BASE_TAIL,
     "t.yaml:1:22: resolver.servers[0]: ", "hostnames are not resolved"},
    {"resolver: {servers: []}\n" BASE_TAIL,
     "t.yaml:1:21: resolver.servers: ", "must have at least 1 entry"},
    {"resolver: {attempts: 0}\n" BASE_TAIL,
     "t.yaml:1:22: resolver.attempts: ", "must be between 1 and 10"},
    {"resolver: {port: 53}\n" BASE_TAIL, "t.yaml:1:12: resolver.port: ",
     "unknown field \"port\" (accepted: servers, timeout, attempts)"},
    /* request matching */
    {ROUTE_HEAD "    - {match: {query_params: [{name: q}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:31: " R ".match.query_params[0]: ",
     "one of exact, prefix, regex, present is required"},
    {ROUTE_HEAD "    - {match: {query_params: [{name: 'a b', exact: x}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:38: " R ".match.query_params[0].name: ",
     "name \"a b\" holds a byte a request's query cannot carry (0x20); query parameters are "
     "matched as sent, not percent-decoded: write it percent-encoded (%20)"},
    {ROUTE_HEAD "    - {match: {query_params: [{name: 'a=b', exact: x}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:38: " R ".match.query_params[0].name: ",
     "holds '=', which separates query parameters from their values; write it percent-encoded "
     "(%3D)"},
    {ROUTE_HEAD "    - {match: {query_params: [{name: a, exact: 'x&y'}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:48: " R ".match.query_params[0].exact: ",
     "holds '&', which separates query parameters; write it percent-encoded (%26)"},
    {ROUTE_HEAD "    - {match: {query_params: [{name: a, prefix: ''}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:49: " R ".match.query_params[0].prefix: ", "must not be empty"},
    {ROUTE_HEAD "    - {match: {query_params: [{name: a, regex: 'a(b'}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:48: " R ".match.query_params[0].regex: ",
     "invalid regex at offset 3: missing closing parenthesis"},
    {ROUTE_HEAD
     "    - {match: {query_params: [{name: a, exact: x, present: true}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:51: " R ".match.query_params[0].present: ",
     "conflicts with exact; set exactly one of exact, prefix, regex, present"},
    {ROUTE_HEAD
     "    - {match: {query_params: [{name: a, present: false}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:41: " R ".match.query_params[0].present: ", "must be true"},
    {ROUTE_HEAD "    - {match: {query_params: [{name: a, suffix: x}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:41: " R ".match.query_params[0].suffix: ",
     "unknown field \"suffix\" (accepted: name, exact, prefix, regex, present, origin)"},
    {ROUTE_HEAD "    - {match: {headers: [{name: ':path', exact: /}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:33: " R ".match.headers[0].name: ",
     "pseudo-header \":path\" cannot be matched; the ones that can are :authority, :scheme and "
     ":method"},
    {ROUTE_HEAD "    - {match: {headers: [{name: x, prefix: ''}]}, cluster: c}\n" ROUTE_TAIL,
     "t.yaml:6:44: " R ".match.headers[0].prefix: ", "must not be empty"},

    /* header edits */
    {ROUTE_HEAD "    - {cluster: c, request_headers: {remove: [Connection]}}\n" ROUTE_TAIL,
     "t.yaml:6:47: " R ".request_headers.remove[0]: ",
     "\"Connection\" is a hop-by-hop header: it belongs to one connection and cannot be edited"},
    {ROUTE_HEAD "    - {weighted_clusters: [{cluster: c, weight: 1, request_headers: {remove: "
                "[te]}}]}\n" ROUTE_TAIL,
     "t.yaml:6:79: " R ".weighted_clusters[0].request_headers.remove[0]: ",
     "\"te\" is a hop-by-hop header"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {set: {Host: x}}}\n" ROUTE_TAIL,
     "t.yaml:6:44: " R ".request_headers.set.Host: ",
     "\"host\" cannot be edited; use rewrite.host"},
    {ROUTE_HEAD "    - {cluster: c, response_headers: {add: {content-length: '1'}}}\n" ROUTE_TAIL,
     "t.yaml:6:45: " R ".response_headers.add.content-length: ",
     "\"content-length\" frames the message: the proxy sets it and it cannot be edited"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {set: {trellis-orig-proto: x}}}\n" ROUTE_TAIL,
     "t.yaml:6:44: " R ".request_headers.set.trellis-orig-proto: ",
     "trellis-* headers are internal to the mesh and cannot be edited"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {set: {':authority': x}}}\n" ROUTE_TAIL,
     "t.yaml:6:44: " R ".request_headers.set.:authority: ",
     "pseudo-header \":authority\" cannot be edited"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {set: {'x a': v}}}\n" ROUTE_TAIL,
     "t.yaml:6:44: " R ".request_headers.set.x a: ", "\"x a\" is not a valid HTTP token"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {set: {x-a: ' v'}}}\n" ROUTE_TAIL,
     "t.yaml:6:49: " R ".request_headers.set.x-a: ",
     "a header value must not begin or end with whitespace"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {set: {x-a: \"a\\r\\nb: c\"}}}\n" ROUTE_TAIL,
     "t.yaml:6:49: " R ".request_headers.set.x-a: ", "string contains control character 0x0d"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {set: {x-a: \"a\\0b\"}}}\n" ROUTE_TAIL,
     "t.yaml:6:49: " R ".request_headers.set.x-a: ", "string contains a NUL byte"},
    {ROUTE_HEAD
     "    - cluster: c\n      request_headers:\n        set:\n          x-a:\n" ROUTE_TAIL,
     "t.yaml:9:11: " R ".request_headers.set.x-a: ", "expected a string, got null"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {set: {X-A: '1', x-a: '2'}}}\n" ROUTE_TAIL,
     "t.yaml:6:54: " R ".request_headers.set.x-a: ", "duplicate name \"x-a\" (first at line 6)"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {remove: [x-a, X-A]}}\n" ROUTE_TAIL,
     "t.yaml:6:52: " R ".request_headers.remove[1]: ",
     "duplicate name \"x-a\" (first at remove[0])"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {append: {x-a: '1'}}}\n" ROUTE_TAIL,
     "t.yaml:6:38: " R ".request_headers.append: ",
     "unknown field \"append\" (accepted: remove, set, add)"},
    {ROUTE_HEAD "    - {cluster: c, request_headers: {set: [x-a]}}\n" ROUTE_TAIL,
     "t.yaml:6:43: " R ".request_headers.set: ", "expected a mapping, got a list"},
    {ROUTE_HEAD
     "    - {direct_response: {status: 200}, request_headers: {set: {x-a: '1'}}}\n" ROUTE_TAIL,
     "t.yaml:6:40: " R ".request_headers: ",
     "a direct_response route sends no request upstream to edit"},
    {ROUTE_HEAD "    - {match: {methods: [CONNECT]}, cluster: c, response_headers: {add: {x-a: "
                "'1'}}}\n" ROUTE_TAIL,
     "t.yaml:6:25: " R ".match.methods: ",
     "header edits do not apply to CONNECT tunnels (no HTTP message is forwarded)"},
    {"limits: {max_headers: 3}\n" ROUTE_HEAD
     "    - {cluster: c, response_headers: {add: {x-a: '1'}}}\n" ROUTE_TAIL,
     "t.yaml:7:20: " R ".response_headers: ",
     "the edits add 1 header field (with the 3 fields of a reply the proxy makes itself), more "
     "than limits.max_headers (3)"},
    {"limits: {max_headers: 2}\n" ROUTE_HEAD
     "    - {weighted_clusters: [{cluster: c, weight: 1, request_headers: {add: {x-b: '1'}}}], "
     "request_headers: {set: {x-a: '1', x-c: '2'}}}\n" ROUTE_TAIL,
     "t.yaml:7:52: " R ".weighted_clusters[0].request_headers: ",
     "the edits add 3 header fields, more than limits.max_headers (2)"},

    /* retries and mirrors */
    {ROUTE_HEAD "    - {cluster: c, retries: {attempts: 101}}\n" ROUTE_TAIL,
     "t.yaml:6:40: " R ".retries.attempts: ", "must be between 0 and 100, got 101"},
    {ROUTE_HEAD "    - {cluster: c, retries: {retry_on: [5xx, bogus]}}\n" ROUTE_TAIL,
     "t.yaml:6:46: " R ".retries.retry_on[1]: ",
     "unknown retry condition \"bogus\" (accepted: 5xx, gateway-error, reset, "
     "reset-before-request, connect-failure, refused-stream, retriable-4xx, "
     "retriable-status-codes, cancelled, deadline-exceeded, resource-exhausted, internal, "
     "unavailable)"},
    {ROUTE_HEAD "    - {cluster: c, retries: {retry_on: [retriable-headers]}}\n" ROUTE_TAIL,
     "t.yaml:6:41: " R ".retries.retry_on[0]: ", "\"retriable-headers\" is not supported"},
    {ROUTE_HEAD "    - {cluster: c, retries: {retry_on: ['503']}}\n" ROUTE_TAIL,
     "t.yaml:6:41: " R ".retries.retry_on[0]: ",
     "\"503\": write status codes in retriable_status_codes"},
    {ROUTE_HEAD "    - {cluster: c, retries: {retry_on: [reset, reset]}}\n" ROUTE_TAIL,
     "t.yaml:6:48: " R ".retries.retry_on[1]: ", "duplicate condition \"reset\""},
    {ROUTE_HEAD "    - {cluster: c, retries: {retry_on: []}}\n" ROUTE_TAIL,
     "t.yaml:6:40: " R ".retries.retry_on: ", "must have at least 1 entry"},
    {ROUTE_HEAD
     "    - {cluster: c, retries: {retry_on: [5xx], retriable_status_codes: [503]}}\n" ROUTE_TAIL,
     "t.yaml:6:47: " R ".retries.retriable_status_codes: ",
     "would be ignored: retry_on does not name retriable-status-codes"},
    {ROUTE_HEAD "    - {cluster: c, retries: {retriable_status_codes: [99]}}\n" ROUTE_TAIL,
     "t.yaml:6:55: " R ".retries.retriable_status_codes[0]: ",
     "expected an HTTP status code from 200 to 599, got \"99\""},
    {ROUTE_HEAD "    - {cluster: c, retries: {retriable_status_codes: [503, 503]}}\n" ROUTE_TAIL,
     "t.yaml:6:60: " R ".retries.retriable_status_codes[1]: ", "duplicate status code 503"},
    {ROUTE_HEAD "    - {cluster: c, retries: {backoff: {base: 100ms, max: 50ms}}}\n" ROUTE_TAIL,
     "t.yaml:6:58: " R ".retries.backoff.max: ",
     "backoff.max (50 ms) must not be less than backoff.base (100 ms)"},
    {ROUTE_HEAD "    - {cluster: c, retries: {backoff: {base: 2m}}}\n" ROUTE_TAIL,
     "t.yaml:6:46: " R ".retries.backoff.base: ", "must be between 1ms and 60000ms"},
    {ROUTE_HEAD
     "    - {cluster: c, retries: {budget: {percent: 0, min_concurrency: 0}}}\n" ROUTE_TAIL,
     "t.yaml:6:30: " R ".retries.budget: ",
     "percent and min_concurrency are both 0, so no retry could ever go; set attempts: 0"},
    {ROUTE_HEAD "    - {cluster: c, retries: {budget: {percent: 101}}}\n" ROUTE_TAIL,
     "t.yaml:6:48: " R ".retries.budget.percent: ", "must be between 0 and 100, got 101"},
    {ROUTE_HEAD "    - {cluster: c, retries: {max_body_for_retry: 2000000}}\n" ROUTE_TAIL,
     "t.yaml:6:50: " R ".retries.max_body_for_retry: ", "must be between 0 and 1048576"},
    {ROUTE_HEAD "    - {cluster: c, retries: {per_try_timeout: 10}}\n" ROUTE_TAIL,
     "t.yaml:6:47: " R ".retries.per_try_timeout: ", "expected a duration"},
    {ROUTE_HEAD "    - {cluster: c, retries: {bogus: 1}}\n" ROUTE_TAIL,
     "t.yaml:6:30: " R ".retries.bogus: ",
     "unknown field \"bogus\" (accepted: attempts, per_try_timeout, retry_on, "
     "retriable_status_codes, backoff, retry_non_idempotent, max_body_for_retry, budget, "
     "exclude_tried_priorities, avoid_failed_endpoint)"},
    {ROUTE_HEAD "    - {direct_response: {status: 200}, retries: {attempts: 1}}\n" ROUTE_TAIL,
     "t.yaml:6:40: " R ".retries: ", "a direct_response route sends no request upstream to retry"},
    {ROUTE_HEAD "    - {cluster: c, mirrors: [{cluster: nope}]}\n" ROUTE_TAIL,
     "t.yaml:6:40: " R ".mirrors[0].cluster: ", "unknown cluster \"nope\""},
    {ROUTE_HEAD "    - {cluster: c, mirrors: [{percent: 5}]}\n" ROUTE_TAIL,
     "t.yaml:6:30: " R ".mirrors[0].cluster: ", "missing required field"},
    {ROUTE_HEAD "    - {cluster: c, mirrors: [{cluster: d, percent: 101}]}\n" ROUTE_TAIL,
     "t.yaml:6:52: " R ".mirrors[0].percent: ",
     "expected a percentage from 0 to 100 with at most 4 decimals (the resolution is 0.0001%), "
     "got \"101\""},
    {ROUTE_HEAD "    - {cluster: c, mirrors: [{cluster: d, percent: 0.00001}]}\n" ROUTE_TAIL,
     "t.yaml:6:52: " R ".mirrors[0].percent: ", "got \"0.00001\""},
    {ROUTE_HEAD "    - {cluster: c, mirrors: [{cluster: d, percent: '50'}]}\n" ROUTE_TAIL,
     "t.yaml:6:52: " R ".mirrors[0].percent: ", "got \"50\""},
    {ROUTE_HEAD "    - {cluster: c, mirrors: [{cluster: d}, {cluster: d}]}\n" ROUTE_TAIL,
     "t.yaml:6:54: " R ".mirrors[1].cluster: ", "cluster \"d\" is mirrored twice"},
    {ROUTE_HEAD "    - {direct_response: {status: 200}, mirrors: [{cluster: d}]}\n" ROUTE_TAIL,
     "t.yaml:6:40: " R ".mirrors: ", "a direct_response route sends no request upstream to mirror"},
    {ROUTE_HEAD
     "    - {match: {methods: [CONNECT]}, cluster: c, mirrors: [{cluster: d}]}\n" ROUTE_TAIL,
     "t.yaml:6:49: " R ".mirrors: ", "CONNECT tunnels are not mirrored"},
    {ROUTE_HEAD "    - {cluster: c, mirrors: [{cluster: h}]}\n" ROUTE_TAIL
                "- {name: h, protocol: http2, endpoints: [{address: 127.0.0.1:4}]}\n",
     "t.yaml:6:40: " R ".mirrors[0].cluster: ",
     "mirrors speak HTTP/1.1, and cluster \"h\" speaks HTTP/2 (protocol: http2)"},

    /* YAML-level */
    {"? fp:\t:\t", "t.yaml:1:1: ", "explicit mapping keys (\"? \") are not supported"},
    {"a:\n  ? b\n", "t.yaml:2:3: ", "explicit mapping keys (\"? \") are not supported"},
    {"a: &x 1\nb: *x\n", "t.yaml:2:4: ", "YAML aliases are not supported"},
    {"workers: !!int 1\n", "t.yaml:1:16: ", "YAML tags are not supported"},
    {"workers: 1\n---\nworkers: 2\n", "t.yaml:2:1: ", "more than one YAML document"},
};

static void test_invalid_table(void **state)
{
    (void)state;
    size_t n = sizeof(bad_cases) / sizeof(bad_cases[0]);
    size_t failed = 0;
    assert_true(n >= 30);
    for (size_t i = 0; i < n; i++) {
        const struct bad_case *bc = &bad_cases[i];
        char *err = NULL;
        struct tr_config *c = tr_config_load_buffer(bc->yaml, strlen(bc->yaml), "t.yaml", &err);
        if (c != NULL || err == NULL || strncmp(err, bc->prefix, strlen(bc->prefix)) != 0 ||
            strstr(err + strlen(bc->prefix), bc->msg) == NULL) {
            fprintf(stderr, "case %zu:\n%s\n  want: %s...%s\n  got:  %s\n", i, bc->yaml, bc->prefix,
                    bc->msg, err != NULL ? err : "(loaded)");
            tr_config_free(c);
            failed++;
        }
        free(err);
    }
    assert_int_equal(failed, 0);
}

/* Weighted TCP routes: up to 256 entries (the routes' limit) on tcp and auto
 * listeners, each with its weight and place; one more is an error. */
static void test_tcp_clusters(void **state)
{
    (void)state;
    enum { LIMIT = 256 };
    size_t cap = 128 + (LIMIT + 1) * 40;
    char *text = malloc(cap);
    assert_non_null(text);
    for (size_t n = LIMIT; n <= LIMIT + 1; n++) {
        size_t o = (size_t)snprintf(text, cap,
                                    "listeners:\n- name: t\n  address: 127.0.0.1:1\n"
                                    "  protocol: tcp\n  tcp_clusters:\n");
        for (size_t k = 0; k < n; k++)
            o += (size_t)snprintf(text + o, cap - o, "  - {cluster: %s, weight: %zu}\n",
                                  k % 2 ? "b" : "a", k % 3);
        o += (size_t)snprintf(text + o, cap - o,
                              "- {name: u, address: 127.0.0.1:2, protocol: auto, route_table: rt, "
                              "tcp_clusters: [{cluster: b, weight: 1}]}\n" RT_C
                              "- {name: a, endpoints: [{address: 127.0.0.1:3}]}\n"
                              "- {name: b, endpoints: [{address: 127.0.0.1:4}]}\n");
        assert_true(o < cap);
        char *err = NULL;
        struct tr_config *c = tr_config_load_buffer(text, o, "t.yaml", &err);
        if (n > LIMIT) {
            assert_null(c);
            assert_non_null(err);
            assert_string_equal(err, "t.yaml:6:3: listeners[0].tcp_clusters: has 257 entries; the "
                                     "limit is 256");
            free(err);
            continue;
        }
        if (c == NULL)
            fprintf(stderr, "unexpected error: %s\n", err);
        assert_non_null(c);
        const struct tr_listener_cfg *l = &c->listeners[0];
        assert_int_equal(l->tcp_cluster, -1);
        assert_int_equal(l->n_tcp_clusters, LIMIT);
        for (size_t k = 0; k < LIMIT; k++) {
            assert_int_equal(l->tcp_clusters[k].cluster, k % 2 ? 2 : 1);
            assert_int_equal(l->tcp_clusters[k].weight, k % 3);
            assert_int_equal(l->tcp_clusters[k].loc.line, 6 + k);
            assert_int_equal(l->tcp_clusters[k].loc.col, 5);
        }
        assert_string_equal(l->tcp_clusters[255].loc.path, "listeners[0].tcp_clusters[255]");
        l = &c->listeners[1];
        assert_int_equal(l->protocol, TR_LPROTO_AUTO);
        assert_int_equal(l->route_table, 0);
        assert_int_equal(l->n_tcp_clusters, 1);
        assert_int_equal(l->tcp_clusters[0].cluster, 2);
        tr_config_free(c);
    }
    free(text);
}

/* TLS passthrough by SNI: rules in order, names as written, each rule's
 * destination resolved; the listener's tcp_cluster is the default. */
static void test_sni_routes(void **state)
{
    (void)state;
    static const char text[] =
        "listeners:\n- name: pass\n  address: 127.0.0.1:1\n  protocol: tcp\n"
        "  tcp_cluster: c\n  sni_routes:\n"
        "  - {server_names: [a.example.com, '*.B.example.com'], tcp_cluster: d}\n"
        "  - server_names: [c.example.com]\n"
        "    tcp_clusters: [{cluster: c, weight: 1}, {cluster: d, weight: 3}]\n"
        "- {name: nodefault, address: 127.0.0.1:2, protocol: tcp, sni_routes: [{server_names: "
        "[x], tcp_cluster: c}]}\n" RT_C "- {name: d, endpoints: [{address: 127.0.0.1:3}]}\n";
    char *err = NULL;
    struct tr_config *c = tr_config_load_buffer(text, strlen(text), "t.yaml", &err);
    if (c == NULL)
        fail_msg("%s", err);
    const struct tr_listener_cfg *l = &c->listeners[0];
    assert_int_equal(l->tcp_cluster, 0);
    assert_int_equal(l->n_sni_routes, 2);
    assert_int_equal(l->sni_routes[0].n_server_names, 2);
    assert_string_equal(l->sni_routes[0].server_names[0], "a.example.com");
    assert_string_equal(l->sni_routes[0].server_names[1], "*.B.example.com");
    assert_int_equal(l->sni_routes[0].tcp_cluster, 1);
    assert_int_equal(l->sni_routes[0].n_tcp_clusters, 0);
    assert_int_equal(l->sni_routes[0].loc.line, 7);
    assert_string_equal(l->sni_routes[1].loc.path, "listeners[0].sni_routes[1]");
    assert_int_equal(l->sni_routes[1].tcp_cluster, -1);
    assert_int_equal(l->sni_routes[1].n_tcp_clusters, 2);
    assert_int_equal(l->sni_routes[1].tcp_clusters[1].cluster, 1);
    assert_int_equal(l->sni_routes[1].tcp_clusters[1].weight, 3);
    l = &c->listeners[1];
    assert_int_equal(l->tcp_cluster, -1);
    assert_int_equal(l->n_tcp_clusters, 0);
    assert_int_equal(l->n_sni_routes, 1);
    tr_config_free(c);
}

/* The upstream protocol's default depends on mTLS: a mesh hop keeps the
 * client's protocol, a plaintext cluster speaks HTTP/1.1. */
static void test_cluster_protocol_defaults(void **state)
{
    (void)state;
    static const char text[] =
        "tls:\n- {name: w, cert: /dev/null, key: /dev/null, ca: /dev/null}\n"
        "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n"
        "route_tables:\n- {name: rt, virtual_hosts: [{domains: ['*'], routes: [{cluster: a}]}]}\n"
        "clusters:\n"
        "- {name: a, tls: {context: w}, endpoints: [{address: 127.0.0.1:2}]}\n"
        "- {name: b, endpoints: [{address: 127.0.0.1:2}]}\n"
        "- {name: c, protocol: http1, tls: {context: w}, endpoints: [{address: 127.0.0.1:2}]}\n"
        "- {name: d, protocol: http2, endpoints: [{address: 127.0.0.1:2}]}\n";
    struct tr_config *c = load_ok(text, sizeof(text) - 1, "t.yaml");
    assert_int_equal(c->clusters[0].protocol, TR_UPROTO_ORIGINAL);
    assert_int_equal(c->clusters[1].protocol, TR_UPROTO_HTTP1);
    assert_int_equal(c->clusters[2].protocol, TR_UPROTO_HTTP1);
    assert_int_equal(c->clusters[3].protocol, TR_UPROTO_HTTP2);
    tr_config_free(c);
}

/* ---------------------------------------------------- limits, edges */

static void expect_err(const char *buf, size_t len, const char *want_prefix, const char *want_sub)
{
    char *err = NULL;
    struct tr_config *c = tr_config_load_buffer(buf, len, "t.yaml", &err);
    assert_null(c);
    assert_non_null(err);
    if (strncmp(err, want_prefix, strlen(want_prefix)) != 0 || strstr(err, want_sub) == NULL) {
        fprintf(stderr, "want %s...%s\ngot  %s\n", want_prefix, want_sub, err);
        free(err);
        fail();
    }
    free(err);
}

static void test_empty_and_root(void **state)
{
    (void)state;
    expect_err("", 0, "t.yaml: ", "configuration is empty");
    expect_err(NULL, 0, "t.yaml: ", "configuration is empty");
    expect_err("# only a comment\n", 17, "t.yaml: ", "configuration is empty");
    expect_err("---\n", 4, "t.yaml: ", "configuration is empty");
    expect_err("- a\n- b\n", 8, "t.yaml:1:1: ", "expected a mapping at the top level, got a list");
    expect_err("hello\n", 6, "t.yaml:1:1: ", "expected a mapping at the top level, got \"hello\"");
    expect_err("[1, 2]", 6, "t.yaml:1:1: ", "expected a mapping at the top level");
}

/* Kubernetes resources given to the proxy: say what they are and where to
 * take them, instead of "unknown field" or "more than one document". */
static void test_kubernetes_resources(void **state)
{
    (void)state;
    const char *hint = "not a trellis proxy configuration: compile it with 'trellis ctl compile "
                       "DIR --workload NAMESPACE/NAME'";
    const char *vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n"
                     "  name: reviews\nspec:\n  hosts: [reviews]\n";
    char *err = NULL;
    assert_null(tr_config_load_buffer(vs, strlen(vs), "t.yaml", &err));
    char want[512];
    snprintf(
        want, sizeof(want),
        "t.yaml:1:1: this is a Kubernetes resource (networking.istio.io/v1 VirtualService), %s",
        hint);
    assert_string_equal(err, want);
    free(err);

    /* Several documents: the first one tells (after comments, at its line). */
    const char *multi = "# bookinfo\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n"
                        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n";
    expect_err(multi, strlen(multi), "t.yaml:3:1: ", "this is a Kubernetes resource (v1 Service)");
    expect_err(multi, strlen(multi), "t.yaml:3:1: ", hint);
    /* JSON, kind before apiVersion. */
    const char *json = "{\"kind\": \"Gateway\", \"apiVersion\": "
                       "\"gateway.networking.k8s.io/v1\", \"metadata\": {\"name\": \"g\"}}";
    expect_err(json, strlen(json), "t.yaml:1:1: ",
               "this is a Kubernetes resource (gateway.networking.k8s.io/v1 Gateway)");
    /* Odd values are not shown, the rest of the message stands. */
    const char *odd = "apiVersion: [v1]\nkind: Service\n";
    expect_err(odd, strlen(odd), "t.yaml:1:1: ", "this is a Kubernetes resource, not a trellis");
    /* Not a resource: a proxy configuration keeps its own errors. */
    expect_err("apiVersion: v1\nlisteners: []\n", 29, "t.yaml:1:1: apiVersion: ", "unknown field");
    expect_err("kind: Service\n", 14, "t.yaml:1:1: kind: ", "unknown field");
    const char *native_first = "workers: 1\n---\napiVersion: v1\nkind: Service\n";
    expect_err(native_first, strlen(native_first), "t.yaml:2:1: ", "more than one YAML document");
}

static void test_syntax_errors(void **state)
{
    (void)state;
    const char *a = "workers: 1\nlisteners: [1, 2\n";
    expect_err(a, strlen(a),
               "t.yaml:3:1: ", "YAML syntax error: flow sequence without a closing bracket");
    const char *b = "workers: 1\nnode: {id: \"abc\n";
    expect_err(b, strlen(b), "t.yaml:", "YAML syntax error: ");
    const char *c = "\tworkers: 1\n";
    expect_err(c, strlen(c), "t.yaml:1:1: ", "YAML syntax error: ");
    const char *d = "{\"workers\": 1,, }";
    expect_err(d, strlen(d), "t.yaml:1:", "YAML syntax error");
    /* The stream must be printable UTF-8; columns count characters. */
    const char e[] = "workers: 1\nnode: {id: \xc3\xa9\xff}\n";
    expect_err(e, sizeof(e) - 1, "t.yaml:2:13: ", "invalid UTF-8 (byte 0xff)");
    const char f[] = "workers: 1\n\0listeners: []\n";
    expect_err(f, sizeof(f) - 1, "t.yaml:2:1: ", "character U+0000 is not allowed in YAML");
    expect_err("a: \xc0\xaf", 5, "t.yaml:1:4: ", "invalid UTF-8 (byte 0xc0)"); /* overlong "/" */
    expect_err("a: \xed\xa0\x80", 6,
               "t.yaml:1:4: ", "invalid UTF-8 (bad sequence)"); /* surrogate */
    expect_err("a: \xe2\x82", 5, "t.yaml:1:4: ", "invalid UTF-8 (truncated sequence)");
    expect_err("a: \x1b[0m", 7, "t.yaml:1:4: ", "character U+001B is not allowed");
    /* Malformed UTF-8 in a directive used to hang libfyaml 0.7.12. */
    expect_err("%x\xfd", 3, "t.yaml:1:3: ", "invalid UTF-8");
    /* A BOM and non-ASCII text are fine. */
    const char g[] = "\xef\xbb\xbfnode: {id: caf\xc3\xa9}\n" BASE_TAIL;
    struct tr_config *cfg = load_ok(g, sizeof(g) - 1, "t.yaml");
    assert_string_equal(cfg->node.id, "caf\xc3\xa9");
    tr_config_free(cfg);
}

static void test_oversized(void **state)
{
    (void)state;
    size_t len = 16u * 1024 * 1024 + 1;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, '#', len);
    expect_err(big, len,
               "t.yaml: ", "configuration is 16777217 bytes; the limit is 16777216 bytes");

    /* load_file stops reading past the limit too. */
    char path[128];
    snprintf(path, sizeof(path), "%s/proxy.yaml", g_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(big, 1, len, f), len);
    fclose(f);
    char *err = NULL;
    assert_null(tr_config_load_file(path, &err));
    assert_non_null(strstr(err, "the limit is 16777216 bytes"));
    assert_true(strncmp(err, path, strlen(path)) == 0);
    free(err);
    remove(path);
    free(big);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    size_t depth = 100000;
    char *buf = malloc(depth * 2 + 1);
    assert_non_null(buf);
    memset(buf, '[', depth);
    memset(buf + depth, ']', depth);
    expect_err(buf, depth * 2, "t.yaml:1:33: ", "nesting deeper than 32 levels");
    /* Block style too. */
    char yaml[4096];
    size_t o = 0;
    for (int i = 0; i < 40; i++)
        o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "%*sk%d:\n", i, "", i);
    expect_err(yaml, o, "t.yaml:", "nesting deeper than 32 levels");
    free(buf);
}

static char *gen_cluster(size_t n_endpoints, size_t *len)
{
    size_t cap = 64 + n_endpoints * 40, o = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    o += (size_t)snprintf(b + o, cap - o, "clusters:\n- name: c\n  endpoints:\n");
    for (size_t i = 0; i < n_endpoints; i++)
        o += (size_t)snprintf(b + o, cap - o, "  - address: 10.%zu.%zu.1:80\n", i / 256, i % 256);
    *len = o;
    return b;
}

/* 4096 bytes of "v" for long values (callers take a prefix). */
static const char *gen_text(void)
{
    static char text[4097];
    if (text[0] == '\0')
        memset(text, 'v', 4096);
    return text;
}

static void test_count_limits(void **state)
{
    (void)state;
    size_t len;
    char *b = gen_cluster(10001, &len);
    expect_err(b, len,
               "t.yaml:4:3: clusters[0].endpoints: ", "has 10001 entries; the limit is 10000");
    free(b);

    /* 100001 routes over two virtual hosts: the config-wide cap. */
    size_t cap = 8u * 1024 * 1024, o = 0;
    b = malloc(cap);
    assert_non_null(b);
    o += (size_t)snprintf(b + o, cap - o, "route_tables:\n- name: rt\n  virtual_hosts:\n");
    for (int v = 0; v < 2; v++) {
        o += (size_t)snprintf(b + o, cap - o, "  - domains: [d%d]\n    routes:\n", v);
        for (int i = 0; i < 50001; i++)
            o += (size_t)snprintf(b + o, cap - o, "    - {cluster: c}\n");
    }
    o += (size_t)snprintf(b + o, cap - o,
                          "clusters:\n- {name: c, endpoints: [{address: 127.0.0.1:1}]}\n");
    expect_err(b, o, "t.yaml:50009:5: route_tables[0].virtual_hosts[1].routes: ",
               "more than 100000 routes");
    free(b);

    /* Header edits: 64 entries per set, add and remove, 4096 bytes a value;
     * query parameter matches: 64. One past each is an error naming it. */
    static const char *const lists[] = {"request_headers: {set: {", "request_headers: {add: {",
                                        "response_headers: {remove: [", "match: {query_params: ["};
    static const char *const want[] = {R ".request_headers.set: ", R ".request_headers.add: ",
                                       R ".response_headers.remove: ", R ".match.query_params: "};
    for (size_t k = 0; k < 4; k++) {
        for (int n = 64; n <= 65; n++) {
            cap = 64 * 1024;
            o = 0;
            b = malloc(cap);
            assert_non_null(b);
            o += (size_t)snprintf(b + o, cap - o, "%s    - {cluster: c, %s", ROUTE_HEAD, lists[k]);
            for (int i = 0; i < n; i++)
                o += (size_t)snprintf(b + o, cap - o,
                                      k < 2    ? "%sx-h%d: v"
                                      : k == 2 ? "%sx-h%d"
                                               : "%s{name: p%d, present: true}",
                                      i != 0 ? ", " : "", i);
            o += (size_t)snprintf(b + o, cap - o, "%s}\n%s", k < 2 ? "}}" : "]}", ROUTE_TAIL);
            if (n == 64) {
                tr_config_free(load_ok(b, o, "t.yaml"));
            } else {
                char prefix[160];
                snprintf(prefix, sizeof(prefix), "t.yaml:6:%d: %s",
                         k == 3   ? 42
                         : k == 2 ? 47
                                  : 43,
                         want[k]);
                expect_err(b, o, prefix, "has 65 entries; the limit is 64");
            }
            free(b);
        }
    }
    for (int n = 4096; n <= 4097; n++) {
        cap = 8192;
        b = malloc(cap);
        assert_non_null(b);
        o = (size_t)snprintf(b, cap,
                             "%s    - {cluster: c, response_headers: {add: {x-a: %.*s%s}}}\n%s",
                             ROUTE_HEAD, n - 1, gen_text(), "z", ROUTE_TAIL);
        if (n == 4096)
            tr_config_free(load_ok(b, o, "t.yaml"));
        else
            expect_err(b, o, "t.yaml:6:50: " R ".response_headers.add.x-a: ",
                       "string is 4097 bytes long; the limit is 4096");
        free(b);
    }
}

static void test_load_file_and_relative_paths(void **state)
{
    (void)state;
    char path[128], *err = NULL;
    snprintf(path, sizeof(path), "%s/proxy.yaml", g_dir);
    write_file(
        path,
        "tls:\n- {name: w, cert: certs/web.pem, key: ./certs/web.key, ca: certs/../certs/ca.pem}\n"
        "listeners:\n- {name: l, address: 127.0.0.1:0, protocol: tcp, tcp_cluster: c,"
        " tls: {mode: STRICT, context: w}}\n"
        "clusters:\n- {name: c, endpoints: [{address: '[::1]:5'}]}\n");
    struct tr_config *c = tr_config_load_file(path, &err);
    if (c == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(c);
    assert_path_in_dir(c->tls[0].cert_file, "certs/web.pem");
    assert_path_in_dir(c->tls[0].key_file, "./certs/web.key");
    assert_path_in_dir(c->tls[0].ca_file, "certs/../certs/ca.pem");
    assert_int_equal(port_of(&c->listeners[0].addr), 0);
    tr_config_free(c);

    /* A relative certificate that is missing is reported at its field. */
    write_file(
        path,
        "tls:\n- name: w\n  cert: certs/missing.pem\n  key: certs/web.key\n  ca: certs/ca.pem\n"
        "listeners:\n- {name: l, address: 127.0.0.1:0, protocol: tcp, tcp_cluster: c}\n"
        "clusters:\n- {name: c, endpoints: [{address: '[::1]:5'}]}\n");
    assert_null(tr_config_load_file(path, &err));
    char want[256];
    snprintf(want, sizeof(want),
             "%s:3:9: tls[0].cert: cannot read \"%s/certs/missing.pem\": ", path, g_dir);
    assert_non_null(err);
    if (strncmp(err, want, strlen(want)) != 0)
        fprintf(stderr, "want %s\ngot  %s\n", want, err);
    assert_true(strncmp(err, want, strlen(want)) == 0);
    free(err);

    assert_null(tr_config_load_file("/nonexistent/dir/p.yaml", &err));
    assert_string_equal(err, "/nonexistent/dir/p.yaml: cannot open: No such file or directory");
    free(err);
    assert_null(tr_config_load_file(g_dir, &err));
    assert_non_null(strstr(err, "is a directory"));
    free(err);
    /* err may be NULL. */
    assert_null(tr_config_load_file("/nonexistent/p.yaml", NULL));
    remove(path);
}

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint32_t ms;
    } ok[] = {
        {"0", 0},         {"0s", 0},        {"250us", 1},   {"1500us", 2},
        {"100ms", 100},   {"1.5s", 1500},   {"5m", 300000}, {"1h", 3600000},
        {"1m30s", 90000}, {"\"2s\"", 2000}, {"0.001s", 1},  {"24h", 86400000},
    };
    static const char *const bad[] = {
        "1",   "s",    "1.s5", "1x", "-1s", "1 s", "1S", ".s", "99999999999999999999h",
        "1h1", "true", "[1s]"};
    char buf[256];
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int n = snprintf(buf, sizeof(buf), "drain_timeout: %s\n" BASE_TAIL, ok[i].text);
        struct tr_config *c = load_ok(buf, (size_t)n, "t.yaml");
        assert_int_equal(c->drain_timeout_ms, ok[i].ms);
        tr_config_free(c);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int n = snprintf(buf, sizeof(buf), "drain_timeout: %s\n" BASE_TAIL, bad[i]);
        expect_err(buf, (size_t)n, "t.yaml:1:16: drain_timeout: ", "expected a duration");
    }
}

static void test_scalars(void **state)
{
    (void)state;
    char buf[512];
    /* Booleans in the YAML 1.2 core spellings; integers with a + sign. */
    int n = snprintf(buf, sizeof(buf),
                     "workers: +8\nadmin: {enabled: False, address: '127.1.2.3:9'}\n" BASE_TAIL);
    struct tr_config *c = load_ok(buf, (size_t)n, "t.yaml");
    assert_int_equal(c->workers, 8);
    assert_false(c->admin.enabled);
    assert_addr(&c->admin.addr, AF_INET, "127.1.2.3", 9, "127.1.2.3:9");
    tr_config_free(c);
    /* The admin socket path: the kernel's limit (sun_path) is an error naming
     * it, checked on the resolved path; at the limit it loads. */
    n = snprintf(buf, sizeof(buf), "admin: {socket: /%0107d}\n" BASE_TAIL, 0);
    expect_err(buf, (size_t)n, "t.yaml:1:17: admin.socket: ",
               "path is 108 bytes, a Unix socket path is at most 107");
    n = snprintf(buf, sizeof(buf), "admin: {socket: /%0106d}\n" BASE_TAIL, 0);
    c = load_ok(buf, (size_t)n, "t.yaml");
    assert_int_equal(strlen(c->admin.socket), 107);
    tr_config_free(c);
    n = snprintf(buf, sizeof(buf), "admin: {socket: %0100d}\n" BASE_TAIL, 0);
    char *serr = NULL;
    assert_null(tr_config_load_buffer(buf, (size_t)n, "/etc/trellis/t.yaml", &serr));
    assert_non_null(serr);
    assert_string_equal(serr, "/etc/trellis/t.yaml:1:17: admin.socket: path is 113 bytes, a Unix "
                              "socket path is at most 107");
    free(serr);
    /* Quoted true is a string, not a boolean. */
    n = snprintf(buf, sizeof(buf), "admin: {enabled: 'true'}\n" BASE_TAIL);
    expect_err(buf, (size_t)n,
               "t.yaml:1:18: admin.enabled: ", "expected true or false, got \"true\"");
    /* Overflow. */
    n = snprintf(buf, sizeof(buf), "workers: 99999999999999999999999\n" BASE_TAIL);
    expect_err(buf, (size_t)n, "t.yaml:1:10: workers: ", "must be between 0 and 256");
    /* Long values are cut in messages. */
    n = snprintf(buf, sizeof(buf), "log_level: %0200d\n" BASE_TAIL, 7);
    char *err = NULL;
    assert_null(tr_config_load_buffer(buf, (size_t)n, "t.yaml", &err));
    assert_true(strlen(err) < 300);
    assert_non_null(strstr(err, "...\""));
    free(err);
    /* A direct_response body may hold any text, line breaks included. */
    n = snprintf(buf, sizeof(buf),
                 "route_tables:\n- {name: rt, virtual_hosts: [{domains: ['*'], routes: "
                 "[{direct_response: {status: 200, body: \"ok\\r\\n\\tdone\\n\"}}]}]}\n"
                 "listeners:\n- {name: l, address: 127.0.0.1:1, route_table: rt}\n");
    c = load_ok(buf, (size_t)n, "t.yaml");
    assert_string_equal(c->route_tables[0].vhosts[0].routes[0].direct_body, "ok\r\n\tdone\n");
    assert_int_equal(c->n_clusters, 0);
    tr_config_free(c);
    /* An empty exact header value means "present and empty" (the other
     * header match kinds must not be empty; validate checks the value once,
     * not once per key that may hold it). */
    n = snprintf(buf, sizeof(buf),
                 ROUTE_HEAD
                 "    - {match: {headers: [{name: x, exact: ''}]}, cluster: c}\n" ROUTE_TAIL);
    c = load_ok(buf, (size_t)n, "t.yaml");
    assert_string_equal(c->route_tables[0].vhosts[0].routes[0].headers[0].value, "");
    tr_config_free(c);
    n = snprintf(buf, sizeof(buf),
                 ROUTE_HEAD
                 "    - {match: {headers: [{name: x, suffix: ''}]}, cluster: c}\n" ROUTE_TAIL);
    expect_err(buf, (size_t)n, "t.yaml:6:44: " R ".match.headers[0].suffix: ", "must not be empty");
    /* A NULL name is allowed. */
    assert_null(tr_config_load_buffer("x: 1", 4, NULL, &err));
    assert_true(strncmp(err, "<config>:1:1: x: unknown field", 30) == 0);
    free(err);
    tr_config_free(NULL);
}

/* An origin: the resource a compiled object came from, read into its loc.
 * Errors about the object name the resource and the path in it, at the
 * object's place in the file. */
#define ORIGIN_TEXT(LISTENER_ORIGIN, ROUTE_TABLE, CLUSTER)                                         \
    "listeners:\n"                                                                                 \
    "- name: l\n"                                                                                  \
    "  address: 127.0.0.1:1\n"                                                                     \
    "  route_table: " ROUTE_TABLE "\n"                                                             \
    "  origin: " LISTENER_ORIGIN "\n"                                                              \
    "route_tables:\n"                                                                              \
    "- name: rt\n"                                                                                 \
    "  virtual_hosts:\n"                                                                           \
    "  - domains: ['*']\n"                                                                         \
    "    origin: {kind: VirtualService, namespace: default, name: reviews}\n"                      \
    "    routes:\n"                                                                                \
    "    - cluster: " CLUSTER "\n"                                                                 \
    "      origin: {kind: VirtualService, namespace: default, name: reviews, path: "               \
    "'spec.http[0]'}\n"                                                                            \
    "clusters:\n"                                                                                  \
    "- name: c\n"                                                                                  \
    "  endpoints: [{address: 127.0.0.1:2, origin: {kind: ServiceEntry, name: db}}]\n"
#define SIDECAR "{kind: Sidecar, namespace: default, name: default, path: 'spec.egress[0]'}"

static void test_origin(void **state)
{
    (void)state;
    static const char text[] = ORIGIN_TEXT(SIDECAR, "rt", "c");
    struct tr_config *c = load_ok(text, sizeof(text) - 1, "t.yaml");
    const struct tr_cfg_loc *l = &c->listeners[0].loc;
    assert_string_equal(l->origin.kind, "Sidecar");
    assert_string_equal(l->origin.ns, "default");
    assert_string_equal(l->origin.name, "default");
    assert_string_equal(l->path, "spec.egress[0]");
    assert_string_equal(l->file, "t.yaml");
    assert_int_equal(l->line, 2);
    assert_int_equal(l->col, 3);
    /* Without a path in the origin, the object has none (not the file's). */
    const struct tr_vhost_cfg *vh = &c->route_tables[0].vhosts[0];
    assert_string_equal(vh->loc.origin.name, "reviews");
    assert_null(vh->loc.path);
    /* `cluster: NAME` is the route's own field: the route's source. */
    const struct tr_route_cfg *r = &vh->routes[0];
    assert_string_equal(r->loc.path, "spec.http[0]");
    assert_string_equal(r->clusters[0].loc.origin.kind, "VirtualService");
    assert_string_equal(r->clusters[0].loc.path, "spec.http[0]");
    const struct tr_endpoint_cfg *e = &c->clusters[0].endpoints[0];
    assert_string_equal(e->loc.origin.kind, "ServiceEntry");
    assert_null(e->loc.origin.ns);
    /* An object without one keeps its place in the file. */
    assert_null(c->clusters[0].loc.origin.kind);
    assert_string_equal(c->clusters[0].loc.path, "clusters[0]");
    assert_null(c->route_tables[0].loc.origin.name);
    tr_config_free(c);

    static const char bad_cluster[] = ORIGIN_TEXT(SIDECAR, "rt", "nope");
    expect_err(bad_cluster, sizeof(bad_cluster) - 1,
               "t.yaml:12:7: VirtualService default/reviews: spec.http[0].cluster: ",
               "unknown cluster \"nope\"");
    static const char bad_table[] = ORIGIN_TEXT(SIDECAR, "nope", "c");
    expect_err(bad_table, sizeof(bad_table) - 1,
               "t.yaml:2:3: Sidecar default/default: spec.egress[0].route_table: ",
               "unknown route table \"nope\"");
    static const char no_name[] = ORIGIN_TEXT("{path: spec}", "rt", "c");
    expect_err(no_name, sizeof(no_name) - 1, "t.yaml:5:11: listeners[0].origin: ",
               "needs kind or name (the resource the object was compiled from)");
    static const char unknown[] = ORIGIN_TEXT("{kind: Sidecar, file: x.yaml}", "rt", "c");
    expect_err(unknown, sizeof(unknown) - 1, "t.yaml:5:27: listeners[0].origin.file: ",
               "unknown field \"file\" (accepted: kind, namespace, name, path)");
    static const char spaced[] = ORIGIN_TEXT("{kind: Sidecar, name: 'a b'}", "rt", "c");
    expect_err(spaced, sizeof(spaced) - 1, "t.yaml:5:33: listeners[0].origin.name: ",
               "whitespace and control characters are not allowed");
    static const char empty_ns[] =
        ORIGIN_TEXT("{kind: Sidecar, namespace: '', name: x}", "rt", "c");
    expect_err(empty_ns, sizeof(empty_ns) - 1,
               "t.yaml:5:38: listeners[0].origin.namespace: ", "must not be empty");
}

static void test_loc_format(void **state)
{
    (void)state;
    char buf[128];
    struct tr_cfg_loc loc = {
        .file = "p.yaml", .line = 12, .col = 15, .path = "listeners[0].tls.mode"};
    assert_int_equal(tr_cfg_loc_format(&loc, buf, sizeof(buf)), 37);
    assert_string_equal(buf, "p.yaml:12:15: listeners[0].tls.mode: ");
    loc.line = 0;
    tr_cfg_loc_format(&loc, buf, sizeof(buf));
    assert_string_equal(buf, "p.yaml: listeners[0].tls.mode: ");
    loc = (struct tr_cfg_loc){.file = "p.yaml", .line = 1, .col = 1};
    tr_cfg_loc_format(&loc, buf, sizeof(buf));
    assert_string_equal(buf, "p.yaml:1:1: ");
    /* Truncates like snprintf. */
    loc.path = "x";
    assert_int_equal(tr_cfg_loc_format(&loc, buf, 4), 15);
    assert_string_equal(buf, "p.y");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_yaml),
        cmocka_unit_test(test_full_json),
        cmocka_unit_test(test_example_defaults),
        cmocka_unit_test(test_invalid_table),
        cmocka_unit_test(test_cluster_protocol_defaults),
        cmocka_unit_test(test_tcp_clusters),
        cmocka_unit_test(test_sni_routes),
        cmocka_unit_test(test_empty_and_root),
        cmocka_unit_test(test_kubernetes_resources),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_count_limits),
        cmocka_unit_test(test_load_file_and_relative_paths),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_origin),
        cmocka_unit_test(test_loc_format),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
