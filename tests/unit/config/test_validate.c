/* Unit tests for config/validate.c: models built in C (as a dialect compiler
 * builds them, with origins, referring to each other by name) must pass the
 * same checks as a file; each invariant is asserted with its exact message,
 * for the built model and for the same mistake written in YAML. */
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
#include <sys/un.h>

#include "config/load.h"
#include "core/arena.h"

#define VS                                                                                         \
    {                                                                                              \
        .kind = "VirtualService", .ns = "default", .name = "reviews"                               \
    }
#define DR                                                                                         \
    {                                                                                              \
        .kind = "DestinationRule", .ns = "default", .name = "reviews"                              \
    }
#define SC                                                                                         \
    {                                                                                              \
        .kind = "Sidecar", .ns = "default", .name = "default"                                      \
    }
#define PEER                                                                                       \
    {                                                                                              \
        .kind = "PeerAuthentication", .ns = "istio-system", .name = "default"                      \
    }

static void set_addr(struct tr_cfg_addr *a, const char *ip, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
        a->len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
        a->len = sizeof(*s4);
    }
}

/* Endpoints by name (a ServiceEntry with resolution DNS): host and port,
 * addr unset. */
static void set_host(struct tr_endpoint_cfg *e, const char *host, uint16_t port)
{
    memset(&e->addr, 0, sizeof(e->addr));
    e->host = host;
    e->port = port;
}

static void *alloc(struct tr_config *c, size_t n, size_t size)
{
    void *p = tr_arena_calloc(c->arena, n, size);
    assert_non_null(p);
    return p;
}

/* What a compiler would emit for: a TLS context, two subsets of reviews
 * (DestinationRule), a VirtualService splitting 90/10 between them, and an
 * outbound listener (Sidecar). No indexes, no route or vhost names, no
 * address texts: validate fills them. */
static struct tr_config *model(void)
{
    struct tr_config *c = tr_config_new("mesh");
    assert_non_null(c);

    c->n_tls = 1;
    c->tls = alloc(c, 1, sizeof(*c->tls));
    tr_cfg_tls_defaults(&c->tls[0]);
    c->tls[0].name = "workload";
    c->tls[0].cert_file = c->tls[0].key_file = c->tls[0].ca_file = "/dev/null";
    c->tls[0].loc = (struct tr_cfg_loc){.path = "spec.mtls", .origin = PEER};

    c->n_clusters = 2;
    c->clusters = alloc(c, 2, sizeof(*c->clusters));
    for (size_t i = 0; i < 2; i++) {
        struct tr_cluster_cfg *cl = &c->clusters[i];
        tr_cfg_cluster_defaults(cl);
        cl->name = i == 0 ? "reviews-v1" : "reviews-v2";
        cl->n_endpoints = 1;
        cl->endpoints = alloc(c, 1, sizeof(*cl->endpoints));
        tr_cfg_endpoint_defaults(&cl->endpoints[0]);
        set_addr(&cl->endpoints[0].addr, i == 0 ? "10.0.0.1" : "fd00::2", 9080);
        cl->loc = (struct tr_cfg_loc){.path = i == 0 ? "spec.subsets[0]" : "spec.subsets[1]",
                                      .origin = DR};
    }

    c->n_route_tables = 1;
    c->route_tables = alloc(c, 1, sizeof(*c->route_tables));
    struct tr_route_table_cfg *rt = &c->route_tables[0];
    rt->name = "outbound-80";
    rt->loc = (struct tr_cfg_loc){.path = "spec", .origin = VS};
    rt->n_vhosts = 1;
    rt->vhosts = alloc(c, 1, sizeof(*rt->vhosts));
    struct tr_vhost_cfg *vh = &rt->vhosts[0];
    vh->n_domains = 1;
    vh->domains = alloc(c, 1, sizeof(char *));
    vh->domains[0] = "reviews";
    vh->loc = (struct tr_cfg_loc){.path = "spec.hosts", .origin = VS};
    vh->n_routes = 1;
    vh->routes = alloc(c, 1, sizeof(*vh->routes));
    struct tr_route_cfg *r = &vh->routes[0];
    tr_cfg_route_defaults(r);
    r->loc = (struct tr_cfg_loc){.path = "spec.http[0]", .origin = VS};
    r->n_clusters = 2;
    r->clusters = alloc(c, 2, sizeof(*r->clusters));
    r->clusters[0] = (struct tr_weighted_cluster_cfg){
        .cluster_name = "reviews-v1",
        .weight = 90,
        .loc = {.path = "spec.http[0].route[0]", .origin = VS},
    };
    r->clusters[1] = (struct tr_weighted_cluster_cfg){
        .cluster_name = "reviews-v2",
        .weight = 10,
        .loc = {.path = "spec.http[0].route[1]", .origin = VS},
    };

    c->n_listeners = 1;
    c->listeners = alloc(c, 1, sizeof(*c->listeners));
    struct tr_listener_cfg *l = &c->listeners[0];
    tr_cfg_listener_defaults(l);
    l->name = "outbound";
    l->direction = TR_DIR_OUTBOUND;
    set_addr(&l->addr, "127.0.0.1", 15001);
    l->route_table_name = "outbound-80";
    l->loc = (struct tr_cfg_loc){.path = "spec.egress[0]", .origin = SC};
    return c;
}

static void test_model_ok(void **state)
{
    (void)state;
    struct tr_config *c = model();
    char *err = NULL;
    int rc = tr_config_validate(c, &err);
    if (rc != 0)
        fprintf(stderr, "unexpected: %s\n", err);
    assert_int_equal(rc, 0);
    assert_null(err);
    /* Names became indexes; what validate fills in is there. */
    const struct tr_listener_cfg *l = &c->listeners[0];
    assert_int_equal(l->route_table, 0);
    assert_int_equal(l->tls, -1);
    assert_int_equal(l->tcp_cluster, -1);
    const struct tr_route_cfg *r = &c->route_tables[0].vhosts[0].routes[0];
    assert_int_equal(r->clusters[0].cluster, 0);
    assert_int_equal(r->clusters[1].cluster, 1);
    assert_int_equal(r->total_weight, 100);
    assert_string_equal(r->name, "route-0");
    assert_string_equal(r->path, "/");
    assert_string_equal(c->route_tables[0].vhosts[0].name, "vhost-0");
    assert_string_equal(c->clusters[0].endpoints[0].name, "10.0.0.1:9080");
    assert_string_equal(c->clusters[1].endpoints[0].addr.text, "[fd00::2]:9080");
    assert_int_equal(c->clusters[0].tls, -1);
    assert_int_equal(c->clusters[0].h2_max_streams, 100);
    assert_int_equal(c->clusters[0].connect_timeout_ms, 1000);
    assert_string_equal(l->addr.text, "127.0.0.1:15001");
    assert_string_equal(c->admin.addr.text, "127.0.0.1:15000");
    assert_string_equal(c->log_level, "info");
    /* Validating again changes nothing. */
    rc = tr_config_validate(c, &err);
    if (rc != 0)
        fprintf(stderr, "unexpected: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(r->total_weight, 100);
    tr_config_free(c);
}

/* A cluster of DNS names as a compiler builds it: validate fills in the
 * address text (and name), counts the names and sets the refresh default. */
static void test_model_dns_ok(void **state)
{
    (void)state;
    struct tr_config *c = model();
    struct tr_cluster_cfg *cl = &c->clusters[0];
    set_host(&cl->endpoints[0], "reviews.example.com", 9080);
    cl->dns.mode = TR_DNS_FIRST;
    char *err = NULL;
    int rc = tr_config_validate(c, &err);
    if (rc != 0)
        fprintf(stderr, "unexpected: %s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(cl->endpoints[0].addr.text, "reviews.example.com:9080");
    assert_string_equal(cl->endpoints[0].name, "reviews.example.com:9080");
    assert_int_equal(cl->endpoints[0].addr.len, 0);
    assert_int_equal(cl->n_dns_endpoints, 1);
    assert_int_equal(cl->dns.refresh_ms, 5000);
    assert_int_equal(c->clusters[1].n_dns_endpoints, 0);
    assert_int_equal(c->resolver.timeout_ms, 2000);
    assert_int_equal(c->resolver.attempts, 3);
    assert_int_equal(c->resolver.n_servers, 0);
    /* Validating again changes nothing. */
    assert_int_equal(tr_config_validate(c, &err), 0);
    assert_int_equal(cl->n_dns_endpoints, 1);
    tr_config_free(c);
}

/* One invariant: a change to the model, and the same mistake in YAML. */
struct vcase {
    const char *what;
    void (*mutate)(struct tr_config *c);
    const char *want; /* exact message for the built model */
    const char *yaml; /* NULL: no YAML spelling (only a built model can say it) */
    const char *want_yaml;
};

#define ROUTE0(c) (&(c)->route_tables[0].vhosts[0].routes[0])

static void dup_cluster(struct tr_config *c)
{
    c->clusters[1].name = "reviews-v1";
}
static void unknown_weighted(struct tr_config *c)
{
    ROUTE0(c)->clusters[1].cluster_name = "nope";
}
static void zero_weights(struct tr_config *c)
{
    ROUTE0(c)->clusters[0].weight = 0;
    ROUTE0(c)->clusters[1].weight = 0;
}
static void big_weight(struct tr_config *c)
{
    ROUTE0(c)->clusters[1].weight = 2000000;
}
static void unknown_table(struct tr_config *c)
{
    c->listeners[0].route_table_name = "nope";
}
static void tcp_with_table(struct tr_config *c)
{
    c->listeners[0].protocol = TR_LPROTO_TCP;
    c->listeners[0].tcp_cluster_name = "reviews-v1";
}
static void http_with_tcp_cluster(struct tr_config *c)
{
    c->listeners[0].tcp_cluster_name = "reviews-v1";
}
static void strict_outbound(struct tr_config *c)
{
    c->listeners[0].tls_mode = TR_TLS_STRICT;
    c->listeners[0].tls_name = "workload";
}
static void permissive_no_context(struct tr_config *c)
{
    c->listeners[0].direction = TR_DIR_INBOUND;
    c->listeners[0].tls_mode = TR_TLS_PERMISSIVE;
}
static void unknown_cluster_tls(struct tr_config *c)
{
    c->clusters[0].tls_name = "x";
}
static void h2_on_http1(struct tr_config *c)
{
    c->clusters[1].h2_max_streams = 5;
}
static void bad_path_regex(struct tr_config *c)
{
    ROUTE0(c)->path_kind = TR_PATH_REGEX;
    ROUTE0(c)->path = "a(b";
}
static void bad_header_regex(struct tr_config *c)
{
    struct tr_route_cfg *r = ROUTE0(c);
    r->n_headers = 1;
    r->headers = alloc(c, 1, sizeof(*r->headers));
    r->headers[0] = (struct tr_header_match_cfg){
        .name = "x",
        .kind = TR_HMATCH_REGEX,
        .value = "[a",
        .loc = {.path = "spec.http[0].match[0].headers.x", .origin = VS}};
}
static void same_address(struct tr_config *c)
{
    struct tr_listener_cfg *l = alloc(c, 2, sizeof(*l));
    l[0] = c->listeners[0];
    tr_cfg_listener_defaults(&l[1]);
    l[1].name = "other";
    set_addr(&l[1].addr, "127.0.0.1", 15001);
    l[1].route_table_name = "outbound-80";
    l[1].loc = (struct tr_cfg_loc){.path = "spec.egress[1]", .origin = SC};
    c->listeners = l;
    c->n_listeners = 2;
}
/* ---- weighted TCP routes: the listener as a tcp listener splitting its
 * connections over n entries (a VirtualService's tcp route), 80/20 over the
 * two subsets, or weight 1 each past two. located: entries carry their
 * origin; else they are named by the listener's tcp_clusters[i]. */
static struct tr_weighted_cluster_cfg *tcp_split_n(struct tr_config *c, size_t n, bool located)
{
    struct tr_listener_cfg *l = &c->listeners[0];
    l->protocol = TR_LPROTO_TCP;
    l->route_table_name = NULL;
    l->n_tcp_clusters = n;
    l->tcp_clusters = alloc(c, n, sizeof(*l->tcp_clusters));
    for (size_t k = 0; k < n; k++) {
        struct tr_weighted_cluster_cfg *wc = &l->tcp_clusters[k];
        wc->cluster_name = k % 2 == 0 ? "reviews-v1" : "reviews-v2";
        wc->weight = n > 2 ? 1 : k == 0 ? 80 : 20;
        if (located) {
            char *path = tr_arena_alloc(c->arena, 32);
            assert_non_null(path);
            snprintf(path, 32, "spec.tcp[0].route[%zu]", k);
            wc->loc = (struct tr_cfg_loc){.path = path, .origin = VS};
        }
    }
    return l->tcp_clusters;
}
static void tcp_split_unknown(struct tr_config *c)
{
    tcp_split_n(c, 2, true)[1].cluster_name = "nope";
}
static void tcp_split_unknown_unlocated(struct tr_config *c)
{
    tcp_split_n(c, 2, false)[1].cluster_name = "nope";
}
static void tcp_split_zero(struct tr_config *c)
{
    struct tr_weighted_cluster_cfg *wc = tcp_split_n(c, 2, true);
    wc[0].weight = wc[1].weight = 0;
}
static void tcp_split_weight_range(struct tr_config *c)
{
    tcp_split_n(c, 2, true)[1].weight = 2000000;
}
static void tcp_split_too_many(struct tr_config *c)
{
    tcp_split_n(c, 257, true);
}
static void tcp_split_and_cluster(struct tr_config *c)
{
    tcp_split_n(c, 2, true);
    c->listeners[0].tcp_cluster_name = "reviews-v1";
}
static void tcp_split_on_http(struct tr_config *c)
{
    tcp_split_n(c, 2, true);
    c->listeners[0].protocol = TR_LPROTO_HTTP;
    c->listeners[0].route_table_name = "outbound-80";
}
static void tcp_split_edits(struct tr_config *c)
{
    struct tr_weighted_cluster_cfg *wc = tcp_split_n(c, 2, true);
    wc[0].response_headers.n_remove = 1;
    wc[0].response_headers.remove = alloc(c, 1, sizeof(char *));
    wc[0].response_headers.remove[0] = "x-a";
}
static void tcp_without_destination(struct tr_config *c)
{
    c->listeners[0].protocol = TR_LPROTO_TCP;
    c->listeners[0].route_table_name = NULL;
}

static void direct_and_clusters(struct tr_config *c)
{
    ROUTE0(c)->direct_status = 503;
}
static void no_action(struct tr_config *c)
{
    ROUTE0(c)->n_clusters = 0;
}
static void dup_domain(struct tr_config *c)
{
    struct tr_route_table_cfg *rt = &c->route_tables[0];
    struct tr_vhost_cfg *vh = alloc(c, 2, sizeof(*vh));
    vh[0] = rt->vhosts[0];
    vh[1].n_domains = 2;
    vh[1].domains = alloc(c, 2, sizeof(char *));
    vh[1].domains[0] = "ratings";
    vh[1].domains[1] = "reviews";
    vh[1].loc = (struct tr_cfg_loc){
        .path = "spec.hosts",
        .origin = {.kind = "VirtualService", .ns = "default", .name = "ratings"}};
    rt->vhosts = vh;
    rt->n_vhosts = 2;
}
static void upper_domain(struct tr_config *c)
{
    c->route_tables[0].vhosts[0].domains[0] = "Reviews";
}
static void admin_not_loopback(struct tr_config *c)
{
    set_addr(&c->admin.addr, "10.0.0.1", 15000);
}
static void long_admin_socket(struct tr_config *c)
{
    char *p = alloc(c, 1, 200);
    memset(p, 'a', 108);
    p[0] = '/';
    c->admin.socket = p;
}
static void request_line_too_big(struct tr_config *c)
{
    c->limits.max_request_line = 70000;
}
static void zero_connect_timeout(struct tr_config *c)
{
    c->clusters[0].connect_timeout_ms = 0;
}
static void endpoint_port0(struct tr_config *c)
{
    set_addr(&c->clusters[0].endpoints[0].addr, "10.0.0.1", 0);
}
static void unix_endpoint(struct tr_config *c)
{
    struct tr_cfg_addr *a = &c->clusters[0].endpoints[0].addr;
    memset(a, 0, sizeof(*a));
    a->ss.ss_family = AF_UNIX;
    a->len = sizeof(struct sockaddr_un);
}
static void bad_principal(struct tr_config *c)
{
    struct tr_listener_cfg *l = &c->listeners[0];
    l->authz.n_rules = 1;
    l->authz.rules = alloc(c, 1, sizeof(*l->authz.rules));
    l->authz.rules[0].n_principals = 1;
    l->authz.rules[0].principals = alloc(c, 1, sizeof(char *));
    l->authz.rules[0].principals[0] = "spiffe://a/*/b";
    l->authz.rules[0].loc = (struct tr_cfg_loc){
        .path = "spec.rules[0]",
        .origin = {.kind = "AuthorizationPolicy", .ns = "default", .name = "allow"}};
}
static void tcp_rule_methods(struct tr_config *c)
{
    bad_principal(c);
    c->listeners[0].authz.rules[0].principals[0] = "*";
    c->listeners[0].authz.rules[0].n_methods = 1;
    c->listeners[0].authz.rules[0].methods = alloc(c, 1, sizeof(char *));
    c->listeners[0].authz.rules[0].methods[0] = "GET";
    tcp_with_table(c);
    c->listeners[0].route_table_name = NULL;
}
static void no_listeners(struct tr_config *c)
{
    c->n_listeners = 0;
}
static void regex_rewrite(struct tr_config *c)
{
    ROUTE0(c)->path_kind = TR_PATH_REGEX;
    ROUTE0(c)->path = "/a.*";
    ROUTE0(c)->prefix_rewrite = "/b";
}
static void rewrite_with_direct(struct tr_config *c)
{
    ROUTE0(c)->n_clusters = 0;
    ROUTE0(c)->direct_status = 503;
    ROUTE0(c)->host_rewrite = "x";
}
static void tls_without_cert(struct tr_config *c)
{
    c->tls[0].cert_file = NULL;
}
static void server_ids_plaintext(struct tr_config *c)
{
    c->clusters[0].n_server_ids = 1;
    c->clusters[0].server_ids = alloc(c, 1, sizeof(char *));
    c->clusters[0].server_ids[0] = "spiffe://cluster.local/ns/default/sa/reviews";
}
static void bad_enum(struct tr_config *c)
{
    c->clusters[0].lb = (enum tr_lb_policy)7;
}
static void bad_name(struct tr_config *c)
{
    c->listeners[0].name = "out bound";
}
/* Request matching and header edits, as a compiler would build them. */
static const char **strs(struct tr_config *c, const char *a, const char *b)
{
    const char **v = alloc(c, 2, sizeof(char *));
    v[0] = a;
    v[1] = b;
    return v;
}
static struct tr_name_value_cfg *pairs(struct tr_config *c, const char *n1, const char *v1,
                                       const char *n2, const char *v2)
{
    struct tr_name_value_cfg *p = alloc(c, 2, sizeof(*p));
    p[0] = (struct tr_name_value_cfg){n1, v1};
    p[1] = (struct tr_name_value_cfg){n2, v2};
    return p;
}
static void edit_hop_by_hop(struct tr_config *c)
{
    ROUTE0(c)->request_headers.remove = strs(c, "x-a", "connection");
    ROUTE0(c)->request_headers.n_remove = 2;
}
static void edit_upper_name(struct tr_config *c)
{
    ROUTE0(c)->response_headers.set = pairs(c, "X-Served-By", "trellis", NULL, NULL);
    ROUTE0(c)->response_headers.n_set = 1;
}
static void edit_null_value(struct tr_config *c)
{
    ROUTE0(c)->clusters[1].request_headers.add = pairs(c, "x-a", NULL, NULL, NULL);
    ROUTE0(c)->clusters[1].request_headers.n_add = 1;
}
static void edit_dup_name(struct tr_config *c)
{
    ROUTE0(c)->request_headers.set = pairs(c, "x-a", "1", "x-a", "2");
    ROUTE0(c)->request_headers.n_set = 2;
}
static void edit_bad_value(struct tr_config *c)
{
    ROUTE0(c)->clusters[1].response_headers.set = pairs(c, "x-a", "v ", NULL, NULL);
    ROUTE0(c)->clusters[1].response_headers.n_set = 1;
}
/* Retries and mirrors, as a compiler would write them. */
static void retry_on_direct(struct tr_config *c)
{
    ROUTE0(c)->n_clusters = 0;
    ROUTE0(c)->direct_status = 503;
    ROUTE0(c)->retries.attempts = 1;
}
static void retry_unknown_condition(struct tr_config *c)
{
    ROUTE0(c)->retries.retry_on = strs(c, "5xx", "retry-harder");
    ROUTE0(c)->retries.n_retry_on = 2;
}
static void retry_codes_ignored(struct tr_config *c)
{
    ROUTE0(c)->retries.retry_on = strs(c, "gateway-error", NULL);
    ROUTE0(c)->retries.n_retry_on = 1;
    ROUTE0(c)->retries.status_codes = strs(c, "503", NULL);
    ROUTE0(c)->retries.n_status_codes = 1;
}
static void retry_backoff_inverted(struct tr_config *c)
{
    ROUTE0(c)->retries.backoff_base_ms = 100;
    ROUTE0(c)->retries.backoff_max_ms = 50;
}
static void retry_attempts_range(struct tr_config *c)
{
    ROUTE0(c)->retries.attempts = 1000;
}
static struct tr_mirror_cfg *mirror0(struct tr_config *c, const char *cluster)
{
    struct tr_route_cfg *r = ROUTE0(c);
    r->n_mirrors = 1;
    r->mirrors = alloc(c, 1, sizeof(*r->mirrors));
    r->mirrors[0] =
        (struct tr_mirror_cfg){.cluster_name = cluster,
                               .per_million = TR_PER_MILLION,
                               .loc = {.path = "spec.http[0].mirrors[0]", .origin = VS}};
    return &r->mirrors[0];
}
static void mirror_unknown(struct tr_config *c)
{
    mirror0(c, "reviews-v3");
}
static void mirror_to_http2(struct tr_config *c)
{
    mirror0(c, "reviews-v2");
    c->clusters[1].protocol = TR_UPROTO_HTTP2;
}
static void mirror_bad_percent(struct tr_config *c)
{
    mirror0(c, "reviews-v2")->per_million = 1000001;
}
static void header_match_empty_prefix(struct tr_config *c)
{
    bad_header_regex(c);
    ROUTE0(c)->headers[0].kind = TR_HMATCH_PREFIX;
    ROUTE0(c)->headers[0].value = "";
}
static void query_suffix(struct tr_config *c)
{
    struct tr_route_cfg *r = ROUTE0(c);
    r->n_query = 1;
    r->query = alloc(c, 1, sizeof(*r->query));
    r->query[0] = (struct tr_query_match_cfg){
        .name = "v",
        .kind = TR_HMATCH_SUFFIX,
        .value = "x",
        .loc = {.path = "spec.http[0].match[0].queryParams.v", .origin = VS}};
}
static void query_separator(struct tr_config *c)
{
    query_suffix(c);
    ROUTE0(c)->query[0].kind = TR_HMATCH_EXACT;
    ROUTE0(c)->query[0].value = "a&b";
}

/* Objects a builder left without a location are named by their place. */
static void dup_unlocated(struct tr_config *c)
{
    c->clusters[0].loc = (struct tr_cfg_loc){0};
    c->clusters[1].loc = (struct tr_cfg_loc){0};
    c->clusters[1].name = "reviews-v1";
}

/* ---- local route actions: redirect, fault, cors ---- */

static struct tr_redirect_cfg *redirect_only(struct tr_config *c)
{
    struct tr_route_cfg *r = ROUTE0(c);
    r->n_clusters = 0;
    r->clusters = NULL;
    r->redirect = alloc(c, 1, sizeof(*r->redirect));
    tr_cfg_redirect_defaults(r->redirect);
    return r->redirect;
}

static void redirect_and_clusters(struct tr_config *c)
{
    struct tr_route_cfg *r = ROUTE0(c);
    r->redirect = alloc(c, 1, sizeof(*r->redirect));
    tr_cfg_redirect_defaults(r->redirect);
}

static void redirect_code(struct tr_config *c)
{
    redirect_only(c)->code = 304;
}

static void redirect_prefix_exact(struct tr_config *c)
{
    redirect_only(c)->prefix = "/new/";
    ROUTE0(c)->path_kind = TR_PATH_EXACT;
    ROUTE0(c)->path = "/old";
}

static void redirect_rewrite(struct tr_config *c)
{
    redirect_only(c)->path = "/new";
    ROUTE0(c)->host_rewrite = "other";
}

static void redirect_port_twice(struct tr_config *c)
{
    struct tr_redirect_cfg *rd = redirect_only(c);
    rd->port = 8443;
    rd->port_from = TR_REDIRECT_PORT_REQUEST;
}

static void redirect_host(struct tr_config *c)
{
    redirect_only(c)->host = "a.example:80";
}

static void fault_empty(struct tr_config *c)
{
    ROUTE0(c)->fault = alloc(c, 1, sizeof(struct tr_fault_cfg));
}

static void fault_grpc(struct tr_config *c)
{
    struct tr_fault_cfg *f = ROUTE0(c)->fault = alloc(c, 1, sizeof(*f));
    f->abort = alloc(c, 1, sizeof(*f->abort));
    *f->abort = (struct tr_fault_abort_cfg){.grpc = true, .grpc_status = 17, .per_million = 5};
}

static void fault_percent(struct tr_config *c)
{
    struct tr_fault_cfg *f = ROUTE0(c)->fault = alloc(c, 1, sizeof(*f));
    f->delay = alloc(c, 1, sizeof(*f->delay));
    *f->delay = (struct tr_fault_delay_cfg){.fixed_ms = 5, .per_million = TR_PER_MILLION + 1};
}

static struct tr_cors_cfg *cors_on(struct tr_config *c, const char *origin_regex)
{
    struct tr_cors_cfg *cors = ROUTE0(c)->cors = alloc(c, 1, sizeof(*cors));
    tr_cfg_cors_defaults(cors);
    if (origin_regex != NULL) {
        cors->n_origins = 1;
        cors->origins = alloc(c, 1, sizeof(*cors->origins));
        cors->origins[0] =
            (struct tr_cors_origin_cfg){.kind = TR_ORIGIN_REGEX, .value = origin_regex};
    }
    return cors;
}

static void cors_on_redirect(struct tr_config *c)
{
    redirect_only(c)->path = "/new";
    cors_on(c, ".*");
}

static void cors_bad_regex(struct tr_config *c)
{
    cors_on(c, "(x");
}

static void cors_no_origin(struct tr_config *c)
{
    cors_on(c, NULL);
}

static void cors_star_and_more(struct tr_config *c)
{
    static const char *methods[] = {"GET", "*"};
    struct tr_cors_cfg *cors = cors_on(c, ".*");
    cors->allow_methods = methods;
    cors->n_allow_methods = 2;
}

static void host_and_addr(struct tr_config *c)
{
    c->clusters[0].endpoints[0].host = "reviews.example.com";
    c->clusters[0].endpoints[0].port = 9080;
}
static void upper_host(struct tr_config *c)
{
    set_host(&c->clusters[0].endpoints[0], "Reviews.example.com", 9080);
}
static void bad_host(struct tr_config *c)
{
    set_host(&c->clusters[0].endpoints[0], "reviews..example.com", 9080);
}
static void host_port0(struct tr_config *c)
{
    set_host(&c->clusters[0].endpoints[0], "reviews.example.com", 0);
}
static void dns_without_names(struct tr_config *c)
{
    c->clusters[0].dns.mode = TR_DNS_FIRST;
}
static void dns_refresh_range(struct tr_config *c)
{
    set_host(&c->clusters[0].endpoints[0], "reviews.example.com", 9080);
    c->clusters[0].dns.refresh_ms = 10;
}
static void bad_dns_server(struct tr_config *c)
{
    static const char *servers[] = {"dns.example:53"};
    c->resolver.servers = servers;
    c->resolver.n_servers = 1;
}

/* ---- capture: a capture listener and virtual listeners (listener/capture.h) */
static void virtual_without_capture(struct tr_config *c)
{
    c->listeners[0].bind = false;
}
static void capture_listener(struct tr_config *c)
{
    struct tr_listener_cfg *l = &c->listeners[0];
    l->original_destination = alloc(c, 1, sizeof(*l->original_destination));
    tr_cfg_original_dst_defaults(l->original_destination);
}
static void capture_http(struct tr_config *c)
{
    capture_listener(c); /* protocol http (the default) */
}
static void capture_with_table(struct tr_config *c)
{
    capture_listener(c);
    c->listeners[0].protocol = TR_LPROTO_TCP; /* route_table still set */
}
static void capture_unbound(struct tr_config *c)
{
    capture_listener(c);
    c->listeners[0].bind = false;
}
static void capture_strict(struct tr_config *c)
{
    capture_listener(c);
    c->listeners[0].protocol = TR_LPROTO_TCP;
    c->listeners[0].route_table_name = NULL;
    c->listeners[0].direction = TR_DIR_INBOUND;
    c->listeners[0].tls_mode = TR_TLS_STRICT;
    c->listeners[0].tls_name = "workload";
}
/* listeners[1] is virtual, outbound, on 0.0.0.0:9080; listeners[0] becomes
 * the outbound capture listener unless inbound_capture. */
static void with_virtual(struct tr_config *c, bool inbound_capture)
{
    struct tr_listener_cfg *l = alloc(c, 2, sizeof(*l));
    l[0] = c->listeners[0];
    l[0].protocol = TR_LPROTO_TCP;
    l[0].route_table_name = NULL;
    if (inbound_capture)
        l[0].direction = TR_DIR_INBOUND;
    l[0].original_destination = alloc(c, 1, sizeof(*l[0].original_destination));
    tr_cfg_original_dst_defaults(l[0].original_destination);
    tr_cfg_listener_defaults(&l[1]);
    l[1].name = "virtual";
    l[1].bind = false;
    l[1].direction = TR_DIR_OUTBOUND;
    set_addr(&l[1].addr, "0.0.0.0", 9080);
    l[1].route_table_name = "outbound-80";
    l[1].loc = (struct tr_cfg_loc){.path = "spec.egress[1]", .origin = SC};
    c->listeners = l;
    c->n_listeners = 2;
}
static void virtual_other_direction(struct tr_config *c)
{
    with_virtual(c, true);
}
static void virtual_port0(struct tr_config *c)
{
    with_virtual(c, false);
    set_addr(&c->listeners[1].addr, "0.0.0.0", 0);
}

#define Y_CTX "tls:\n- {name: workload, cert: /dev/null, key: /dev/null, ca: /dev/null}\n"
#define Y_CLUSTERS                                                                                 \
    "clusters:\n- {name: reviews-v1, endpoints: [{address: '10.0.0.1:9080'}]}\n"                   \
    "- {name: reviews-v2, endpoints: [{address: '[fd00::2]:9080'}]}\n"
#define Y_TABLE(route)                                                                             \
    "route_tables:\n- name: outbound-80\n  virtual_hosts:\n  - domains: [reviews]\n"               \
    "    routes:\n    - " route "\n"
#define Y_SPLIT                                                                                    \
    "{weighted_clusters: [{cluster: reviews-v1, weight: 90}, {cluster: reviews-v2, weight: 10}]}"
#define Y_LISTENER(extra)                                                                          \
    "listeners:\n- {name: outbound, address: 127.0.0.1:15001, direction: outbound" extra "}\n"
#define Y_BASE(route, extra) Y_CTX Y_CLUSTERS Y_TABLE(route) Y_LISTENER(extra)
#define R                    "route_tables[0].virtual_hosts[0].routes[0]"

static const struct vcase cases[] = {
    {"duplicate names", dup_cluster,
     "DestinationRule default/reviews: spec.subsets[1].name: duplicate cluster name "
     "\"reviews-v1\" (first defined by DestinationRule default/reviews)",
     Y_CTX "clusters:\n- {name: reviews-v1, endpoints: [{address: '10.0.0.1:9080'}]}\n"
           "- {name: reviews-v1, endpoints: [{address: '10.0.0.2:9080'}]}\n" Y_TABLE(
               "{cluster: reviews-v1}") Y_LISTENER(", route_table: outbound-80"),
     "t.yaml:5:10: clusters[1].name: duplicate cluster name \"reviews-v1\" (first defined at "
     "line 4)"},
    {"route -> cluster", unknown_weighted,
     "VirtualService default/reviews: spec.http[0].route[1].cluster: unknown cluster \"nope\"",
     Y_BASE("{weighted_clusters: [{cluster: reviews-v1, weight: 90}, {cluster: nope, weight: "
            "10}]}",
            ", route_table: outbound-80"),
     "t.yaml:11:73: " R ".weighted_clusters[1].cluster: unknown cluster \"nope\""},
    {"weights all 0", zero_weights,
     "VirtualService default/reviews: spec.http[0].weighted_clusters: the weights must not all "
     "be 0",
     Y_BASE("{weighted_clusters: [{cluster: reviews-v1, weight: 0}, {cluster: reviews-v2, weight: "
            "0}]}",
            ", route_table: outbound-80"),
     "t.yaml:11:27: " R ".weighted_clusters: the weights must not all be 0"},
    {"weight range", big_weight,
     "VirtualService default/reviews: spec.http[0].route[1].weight: must be between 0 and "
     "1000000, got 2000000",
     Y_BASE("{weighted_clusters: [{cluster: reviews-v1, weight: 90}, {cluster: reviews-v2, "
            "weight: 2000000}]}",
            ", route_table: outbound-80"),
     "t.yaml:11:93: " R ".weighted_clusters[1].weight: must be between 0 and 1000000, got "
     "2000000"},
    {"listener -> route table", unknown_table,
     "Sidecar default/default: spec.egress[0].route_table: unknown route table \"nope\"",
     Y_BASE(Y_SPLIT, ", route_table: nope"),
     "t.yaml:13:80: listeners[0].route_table: unknown route table \"nope\""},
    {"tcp listener with a route table", tcp_with_table,
     "Sidecar default/default: spec.egress[0].route_table: not allowed on a tcp listener (use "
     "tcp_cluster or tcp_clusters)",
     Y_BASE(Y_SPLIT, ", protocol: tcp, route_table: outbound-80, tcp_cluster: reviews-v1"),
     "t.yaml:13:82: listeners[0].route_table: not allowed on a tcp listener (use tcp_cluster or "
     "tcp_clusters)"},
    {"http listener with a tcp cluster", http_with_tcp_cluster,
     "Sidecar default/default: spec.egress[0].tcp_cluster: not allowed on an http listener (use "
     "protocol: auto or tcp)",
     Y_BASE(Y_SPLIT, ", route_table: outbound-80, tcp_cluster: reviews-v1"),
     "t.yaml:13:93: listeners[0].tcp_cluster: not allowed on an http listener (use protocol: auto "
     "or tcp)"},
    {"STRICT outbound", strict_outbound,
     "Sidecar default/default: spec.egress[0].tls.mode: STRICT is only valid on inbound listeners",
     Y_BASE(Y_SPLIT, ", route_table: outbound-80, tls: {mode: STRICT, context: workload}"),
     "t.yaml:13:99: listeners[0].tls.mode: STRICT is only valid on inbound listeners"},
    {"PERMISSIVE needs a context", permissive_no_context,
     "Sidecar default/default: spec.egress[0].tls.context: missing required field",
     Y_CTX Y_CLUSTERS Y_TABLE(Y_SPLIT) "listeners:\n- {name: outbound, address: 127.0.0.1:15001, "
                                       "route_table: outbound-80, tls: {mode: PERMISSIVE}}\n",
     "t.yaml:13:77: listeners[0].tls.context: missing required field"},
    {"cluster -> tls", unknown_cluster_tls,
     "DestinationRule default/reviews: spec.subsets[0].tls.context: unknown TLS context \"x\"",
     Y_CTX "clusters:\n- {name: reviews-v1, tls: {context: x}, endpoints: [{address: "
           "'10.0.0.1:9080'}]}\n"
           "- {name: reviews-v2, endpoints: [{address: '[fd00::2]:9080'}]}\n" Y_TABLE(Y_SPLIT)
               Y_LISTENER(", route_table: outbound-80"),
     "t.yaml:4:37: clusters[0].tls.context: unknown TLS context \"x\""},
    {"http2 settings on HTTP/1.1", h2_on_http1,
     "DestinationRule default/reviews: spec.subsets[1].http2: HTTP/2 settings on a cluster that "
     "speaks HTTP/1.1 (protocol: http1) would be ignored; set protocol to http2 or original, or "
     "remove them",
     Y_CTX "clusters:\n- {name: reviews-v1, endpoints: [{address: '10.0.0.1:9080'}]}\n"
           "- {name: reviews-v2, protocol: http1, http2: {max_streams_per_connection: 5}, "
           "endpoints: [{address: '[fd00::2]:9080'}]}\n" Y_TABLE(Y_SPLIT)
               Y_LISTENER(", route_table: outbound-80"),
     "t.yaml:5:39: clusters[1].http2: HTTP/2 settings on a cluster that speaks HTTP/1.1 "
     "(protocol: http1) would be ignored; set protocol to http2 or original, or remove them"},
    {"path regex", bad_path_regex,
     "VirtualService default/reviews: spec.http[0].match.path.regex: invalid regex at offset 3: "
     "missing closing parenthesis",
     Y_BASE("{match: {path: {regex: 'a(b'}}, cluster: reviews-v1}", ", route_table: outbound-80"),
     "t.yaml:11:30: " R ".match.path.regex: invalid regex at offset 3: missing closing "
     "parenthesis"},
    {"header regex", bad_header_regex,
     "VirtualService default/reviews: spec.http[0].match[0].headers.x.regex: invalid regex at "
     "offset 2: missing terminating ] for character class",
     Y_BASE("{match: {headers: [{name: x, regex: '[a'}]}, cluster: reviews-v1}",
            ", route_table: outbound-80"),
     "t.yaml:11:43: " R ".match.headers[0].regex: invalid regex at offset 2: missing terminating "
     "] for character class"},
    {"listener addresses", same_address,
     "Sidecar default/default: spec.egress[1].address: address 127.0.0.1:15001 is already used by "
     "listener \"outbound\"",
     Y_BASE(Y_SPLIT, ", route_table: outbound-80") "- {name: other, address: 127.0.0.1:15001, "
                                                   "route_table: outbound-80}\n",
     "t.yaml:14:26: listeners[1].address: address 127.0.0.1:15001 is already used by listener "
     "\"outbound\""},
    {"a virtual listener needs a capture listener", virtual_without_capture,
     "Sidecar default/default: spec.egress[0].bind: a virtual listener (bind: false) needs a "
     "capture listener (original_destination) of direction outbound",
     Y_BASE(Y_SPLIT, ", route_table: outbound-80, bind: false"),
     "t.yaml:13:99: listeners[0].bind: a virtual listener (bind: false) needs a capture listener "
     "(original_destination) of direction outbound"},
    {"... of its own direction", virtual_other_direction,
     "Sidecar default/default: spec.egress[1].bind: a virtual listener (bind: false) needs a "
     "capture listener (original_destination) of direction outbound",
     Y_CTX Y_CLUSTERS Y_TABLE(Y_SPLIT) "listeners:\n"
                                       "- {name: c, address: 0.0.0.0:15006, protocol: tcp, "
                                       "original_destination: {}}\n"
                                       "- {name: v, address: 0.0.0.0:9080, direction: outbound, "
                                       "bind: false, route_table: outbound-80}\n",
     "t.yaml:14:63: listeners[1].bind: a virtual listener (bind: false) needs a capture listener "
     "(original_destination) of direction outbound"},
    {"a virtual listener needs a port", virtual_port0,
     "Sidecar default/default: spec.egress[1].address: a virtual listener (bind: false) needs a "
     "port to match original destinations by",
     NULL, NULL},
    {"a capture listener is tcp", capture_http,
     "Sidecar default/default: spec.egress[0].protocol: a capture listener must have protocol "
     "tcp: it hands connections to virtual listeners, whose protocol applies",
     Y_BASE(Y_SPLIT, ", route_table: outbound-80, original_destination: {}"),
     "t.yaml:13:3: listeners[0].protocol: a capture listener must have protocol tcp: it hands "
     "connections to virtual listeners, whose protocol applies"},
    {"a capture listener has no route table", capture_with_table,
     "Sidecar default/default: spec.egress[0].route_table: not allowed on a capture listener "
     "(the virtual listener's applies)",
     Y_BASE(Y_SPLIT, ", protocol: tcp, route_table: outbound-80, original_destination: "
                     "{unmatched: reject}"),
     "t.yaml:13:82: listeners[0].route_table: not allowed on a capture listener (the virtual "
     "listener's applies)"},
    {"a capture listener is bound", capture_unbound,
     "Sidecar default/default: spec.egress[0].bind: a capture listener (original_destination) "
     "must be bound",
     NULL, NULL},
    {"a capture listener has no TLS", capture_strict,
     "Sidecar default/default: spec.egress[0].tls.mode: must be DISABLE on a capture listener "
     "(the virtual listener's applies)",
     NULL, NULL},
    {"clusters and direct_response", direct_and_clusters,
     "VirtualService default/reviews: spec.http[0].direct_response: conflicts with "
     "weighted_clusters; set exactly one of cluster, weighted_clusters, direct_response, "
     "redirect",
     Y_BASE("{cluster: reviews-v1, direct_response: {status: 503}}", ", route_table: outbound-80"),
     "t.yaml:11:29: " R ".direct_response: conflicts with cluster; set exactly one of cluster, "
     "weighted_clusters, direct_response, redirect"},
    {"a route needs an action", no_action,
     "VirtualService default/reviews: spec.http[0]: one of cluster, weighted_clusters, "
     "direct_response, redirect is required",
     Y_BASE("{name: x}", ", route_table: outbound-80"),
     "t.yaml:11:7: " R
     ": one of cluster, weighted_clusters, direct_response, redirect is required"},
    {"domains unique per table", dup_domain,
     "VirtualService default/ratings: spec.hosts.domains[1]: duplicate domain \"reviews\" (first "
     "defined by VirtualService default/reviews)",
     Y_CTX Y_CLUSTERS "route_tables:\n- name: outbound-80\n  virtual_hosts:\n"
                      "  - domains: [reviews]\n    routes: [" Y_SPLIT "]\n"
                      "  - domains: [ratings, reviews]\n    routes: [" Y_SPLIT
                      "]\n" Y_LISTENER(", route_table: outbound-80"),
     "t.yaml:11:24: route_tables[0].virtual_hosts[1].domains[1]: duplicate domain \"reviews\" "
     "(first defined at line 9)"},
    {"domains are lower case", upper_domain,
     "VirtualService default/reviews: spec.hosts.domains[0]: \"Reviews\" must be lower case", NULL,
     NULL},
    {"admin is loopback", admin_not_loopback,
     "mesh: admin.address: the admin address must be loopback (127.0.0.0/8 or [::1]), got "
     "\"10.0.0.1:15000\"",
     "admin: {address: '10.0.0.1:15000'}\n" Y_BASE(Y_SPLIT, ", route_table: outbound-80"),
     "t.yaml:1:18: admin.address: the admin address must be loopback (127.0.0.0/8 or [::1]), got "
     "\"10.0.0.1:15000\""},
    {"Unix socket path length", long_admin_socket,
     "mesh: admin.socket: path is 108 bytes, a Unix socket path is at most 107",
     "admin: {socket: "
     "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaa}\n" Y_BASE(Y_SPLIT, ", route_table: outbound-80"),
     "t.yaml:1:17: admin.socket: path is 108 bytes, a Unix socket path is at most 107"},
    {"limits between fields", request_line_too_big,
     "mesh: limits.max_request_line: max_request_line (70000) must not exceed max_header_bytes "
     "(65536)",
     "limits: {max_request_line: 70000}\n" Y_BASE(Y_SPLIT, ", route_table: outbound-80"),
     "t.yaml:1:10: limits.max_request_line: max_request_line (70000) must not exceed "
     "max_header_bytes (65536)"},
    {"duration range", zero_connect_timeout,
     "DestinationRule default/reviews: spec.subsets[0].connect_timeout: must be between 1ms and "
     "86400000ms, got 0ms",
     Y_CTX "clusters:\n- {name: reviews-v1, connect_timeout: 0s, endpoints: [{address: "
           "'10.0.0.1:9080'}]}\n"
           "- {name: reviews-v2, endpoints: [{address: '[fd00::2]:9080'}]}\n" Y_TABLE(Y_SPLIT)
               Y_LISTENER(", route_table: outbound-80"),
     "t.yaml:4:39: clusters[0].connect_timeout: must be between 1ms and 86400000ms, got \"0s\""},
    {"endpoint port", endpoint_port0,
     "DestinationRule default/reviews: spec.subsets[0].endpoints[0].address: port must be between "
     "1 and 65535, got 0",
     Y_CTX "clusters:\n- {name: reviews-v1, endpoints: [{address: '10.0.0.1:0'}]}\n"
           "- {name: reviews-v2, endpoints: [{address: '[fd00::2]:9080'}]}\n" Y_TABLE(Y_SPLIT)
               Y_LISTENER(", route_table: outbound-80"),
     "t.yaml:4:44: clusters[0].endpoints[0].address: port must be between 1 and 65535 in "
     "\"10.0.0.1:0\""},
    {"address family", unix_endpoint,
     "DestinationRule default/reviews: spec.subsets[0].endpoints[0].address: expected an IPv4 or "
     "IPv6 socket address (family 1, length 110)",
     NULL, NULL},
    {"principals", bad_principal,
     "AuthorizationPolicy default/allow: spec.rules[0].principals[0]: \"*\" is only allowed at "
     "the end of a principal, got \"spiffe://a/*/b\"",
     Y_BASE(Y_SPLIT, ", route_table: outbound-80, authorization: {rules: [{action: ALLOW, "
                     "principals: ['spiffe://a/*/b']}]}"),
     "t.yaml:13:146: listeners[0].authorization.rules[0].principals[0]: \"*\" is only allowed at "
     "the end of a principal, got \"spiffe://a/*/b\""},
    {"methods on tcp", tcp_rule_methods,
     "AuthorizationPolicy default/allow: spec.rules[0].methods: not allowed on a tcp listener (no "
     "HTTP requests to match)",
     Y_BASE(Y_SPLIT, ", protocol: tcp, tcp_cluster: reviews-v1, authorization: {rules: [{action: "
                     "ALLOW, methods: [GET]}]}"),
     "t.yaml:13:147: listeners[0].authorization.rules[0].methods: not allowed on a tcp listener "
     "(no HTTP requests to match)"},
    {"listeners", no_listeners, "mesh: listeners: missing required field",
     Y_CTX Y_CLUSTERS Y_TABLE(Y_SPLIT), "t.yaml:1:1: listeners: missing required field"},
    {"rewrite and direct_response", rewrite_with_direct,
     "VirtualService default/reviews: spec.http[0].rewrite: cannot be combined with "
     "direct_response",
     Y_BASE("{direct_response: {status: 503}, rewrite: {host: x}}", ", route_table: outbound-80"),
     "t.yaml:11:40: " R ".rewrite: cannot be combined with direct_response"},
    {"required fields", tls_without_cert,
     "PeerAuthentication istio-system/default: spec.mtls.cert: missing required field",
     "tls:\n- {name: workload, key: /dev/null, ca: /dev/null}\n" Y_CLUSTERS Y_TABLE(Y_SPLIT)
         Y_LISTENER(", route_table: outbound-80"),
     "t.yaml:2:3: tls[0].cert: missing required field"},
    {"server identities need TLS", server_ids_plaintext,
     "DestinationRule default/reviews: spec.subsets[0].tls.server_ids: needs tls.context (a "
     "plaintext cluster has no server identity to check)",
     NULL, NULL},
    {"enums", bad_enum,
     "DestinationRule default/reviews: spec.subsets[0].lb: expected one of round_robin, "
     "least_request, random, ring_hash, maglev, got value 7",
     Y_CTX "clusters:\n- {name: reviews-v1, lb: fastest, endpoints: [{address: "
           "'10.0.0.1:9080'}]}\n"
           "- {name: reviews-v2, endpoints: [{address: '[fd00::2]:9080'}]}\n" Y_TABLE(Y_SPLIT)
               Y_LISTENER(", route_table: outbound-80"),
     "t.yaml:4:26: clusters[0].lb: expected one of round_robin, least_request, random, "
     "ring_hash, maglev, got \"fastest\""},
    {"names", bad_name,
     "Sidecar default/default: spec.egress[0].name: invalid name \"out bound\": whitespace and "
     "control characters are not allowed",
     Y_CTX Y_CLUSTERS Y_TABLE(Y_SPLIT) "listeners:\n- {name: 'out bound', address: "
                                       "127.0.0.1:15001, route_table: outbound-80}\n",
     "t.yaml:13:10: listeners[0].name: invalid name \"out bound\": whitespace and control "
     "characters are not allowed"},
    /* Local route actions. */
    {"redirect and clusters", redirect_and_clusters,
     "VirtualService default/reviews: spec.http[0].redirect: conflicts with weighted_clusters; "
     "set exactly one of cluster, weighted_clusters, direct_response, redirect",
     Y_BASE("{cluster: reviews-v1, redirect: {path: /x}}", ", route_table: outbound-80"),
     "t.yaml:11:29: " R ".redirect: conflicts with cluster; set exactly one of cluster, "
     "weighted_clusters, direct_response, redirect"},
    {"redirect codes", redirect_code,
     "VirtualService default/reviews: spec.http[0].redirect.code: expected one of 301, 302, 303, "
     "307, 308, got 304",
     Y_BASE("{redirect: {code: 304}}", ", route_table: outbound-80"),
     "t.yaml:11:25: " R ".redirect.code: expected one of 301, 302, 303, 307, 308, got 304"},
    {"redirect prefix needs a prefix route", redirect_prefix_exact,
     "VirtualService default/reviews: spec.http[0].redirect.prefix: needs a prefix path match (it "
     "replaces the matched prefix); use path to replace the whole path",
     Y_BASE("{match: {path: {exact: /old}}, redirect: {prefix: /new/}}",
            ", route_table: outbound-80"),
     "t.yaml:11:49: " R ".redirect.prefix: needs a prefix path match (it replaces the matched "
     "prefix); use path to replace the whole path"},
    {"redirect and rewrite", redirect_rewrite,
     "VirtualService default/reviews: spec.http[0].rewrite: cannot be combined with redirect (set "
     "redirect.path, prefix or host)",
     Y_BASE("{redirect: {path: /new}, rewrite: {host: other}}", ", route_table: outbound-80"),
     "t.yaml:11:32: " R ".rewrite: cannot be combined with redirect (set redirect.path, prefix or "
     "host)"},
    {"redirect port twice", redirect_port_twice,
     "VirtualService default/reviews: spec.http[0].redirect.port_from: conflicts with port; set "
     "exactly one of port, port_from",
     Y_BASE("{redirect: {port: 8443, port_from: request}}", ", route_table: outbound-80"),
     "t.yaml:11:31: " R ".redirect.port_from: conflicts with port; set exactly one of port, "
     "port_from"},
    {"redirect host", redirect_host,
     "VirtualService default/reviews: spec.http[0].redirect.host: expected a host without a port "
     "(set port), got \"a.example:80\"",
     Y_BASE("{redirect: {host: 'a.example:80'}}", ", route_table: outbound-80"),
     "t.yaml:11:25: " R ".redirect.host: expected a host without a port (set port), got "
     "\"a.example:80\""},
    {"fault needs delay or abort", fault_empty,
     "VirtualService default/reviews: spec.http[0].fault: one of delay, abort is required",
     Y_BASE("{cluster: reviews-v1, fault: {}}", ", route_table: outbound-80"),
     "t.yaml:11:36: " R ".fault: one of delay, abort is required"},
    {"fault gRPC status", fault_grpc,
     "VirtualService default/reviews: spec.http[0].fault.abort.grpc_status: must be between 0 and "
     "16, got 17",
     Y_BASE("{cluster: reviews-v1, fault: {abort: {grpc_status: 17, percent: 0.0005}}}",
            ", route_table: outbound-80"),
     "t.yaml:11:58: " R ".fault.abort.grpc_status: must be between 0 and 16, got 17"},
    {"fault percent", fault_percent,
     "VirtualService default/reviews: spec.http[0].fault.delay.percent: must be between 0 and 100 "
     "percent, got 1000001 per million",
     Y_BASE("{cluster: reviews-v1, fault: {delay: {fixed: 5ms, percent: 100.0001}}}",
            ", route_table: outbound-80"),
     "t.yaml:11:66: " R ".fault.delay.percent: expected a percentage from 0 to 100 with at most "
     "4 decimals (the resolution is 0.0001%), got \"100.0001\""},
    {"cors on a redirect", cors_on_redirect,
     "VirtualService default/reviews: spec.http[0].cors: does not apply to a redirect route: its "
     "answer is the proxy's own",
     Y_BASE("{redirect: {path: /new}, cors: {allow_origins: [{regex: '.*'}]}}",
            ", route_table: outbound-80"),
     "t.yaml:11:32: " R ".cors: does not apply to a redirect route: its answer is the proxy's "
     "own"},
    {"cors origin regex", cors_bad_regex,
     "VirtualService default/reviews: spec.http[0].cors.allow_origins[0].regex: invalid regex at "
     "offset 2: missing closing parenthesis",
     Y_BASE("{cluster: reviews-v1, cors: {allow_origins: [{regex: '(x'}]}}",
            ", route_table: outbound-80"),
     "t.yaml:11:60: " R ".cors.allow_origins[0].regex: invalid regex at offset 2: missing "
     "closing parenthesis"},
    {"cors origins required", cors_no_origin,
     "VirtualService default/reviews: spec.http[0].cors.allow_origins: must have at least 1 entry",
     Y_BASE("{cluster: reviews-v1, cors: {allow_methods: [GET]}}", ", route_table: outbound-80"),
     "t.yaml:11:35: " R ".cors.allow_origins: missing required field"},
    {"cors star alone", cors_star_and_more,
     "VirtualService default/reviews: spec.http[0].cors.allow_methods[1]: \"*\" must be the only "
     "entry of allow_methods",
     Y_BASE("{cluster: reviews-v1, cors: {allow_origins: [{regex: '.*'}], allow_methods: [GET, "
            "'*']}}",
            ", route_table: outbound-80"),
     "t.yaml:11:89: " R ".cors.allow_methods[1]: \"*\" must be the only entry of allow_methods"},
    {"endpoint with an address and a host", host_and_addr,
     "DestinationRule default/reviews: spec.subsets[0].endpoints[0].address: both an IP "
     "address and a host name; an endpoint has one or the other",
     NULL, NULL},
    {"host names are lower case", upper_host,
     "DestinationRule default/reviews: spec.subsets[0].endpoints[0].address: host name "
     "\"Reviews.example.com\" must be lower case",
     NULL, NULL},
    {"host names are RFC 1123", bad_host,
     "DestinationRule default/reviews: spec.subsets[0].endpoints[0].address: invalid DNS name "
     "\"reviews..example.com\": labels are 1 to 63 letters, digits or '-', not starting or "
     "ending with '-'",
     NULL, NULL},
    {"host port", host_port0,
     "DestinationRule default/reviews: spec.subsets[0].endpoints[0].address: port must be "
     "between 1 and 65535, got 0",
     NULL, NULL},
    {"dns settings need names", dns_without_names,
     "DestinationRule default/reviews: spec.subsets[0].dns: DNS settings on a cluster whose "
     "endpoints are all IP addresses would be ignored; remove them",
     Y_CTX "clusters:\n- {name: reviews-v1, dns: {mode: first}, endpoints: [{address: "
           "'10.0.0.1:9080'}]}\n"
           "- {name: reviews-v2, endpoints: [{address: '[fd00::2]:9080'}]}\n" Y_TABLE(Y_SPLIT)
               Y_LISTENER(", route_table: outbound-80"),
     "t.yaml:4:22: clusters[0].dns: DNS settings on a cluster whose endpoints are all IP "
     "addresses would be ignored; remove them"},
    {"dns refresh range", dns_refresh_range,
     "DestinationRule default/reviews: spec.subsets[0].dns.refresh: must be between 1000ms and "
     "86400000ms, got 10ms",
     NULL, NULL},
    {"resolver servers", bad_dns_server,
     "mesh: resolver.servers[0]: expected an IP address, got \"dns.example\" (hostnames are "
     "not resolved)",
     NULL, NULL},
    {"header edit names", edit_hop_by_hop,
     "VirtualService default/reviews: spec.http[0].request_headers.remove[1]: \"connection\" is a "
     "hop-by-hop header: it belongs to one connection and cannot be edited",
     Y_BASE("{cluster: reviews-v1, request_headers: {remove: [x-a, connection]}}",
            ", route_table: outbound-80"),
     "t.yaml:11:61: " R ".request_headers.remove[1]: \"connection\" is a hop-by-hop header: it "
     "belongs to one connection and cannot be edited"},
    {"header edit names are lower case", edit_upper_name,
     "VirtualService default/reviews: spec.http[0].response_headers.set.X-Served-By: "
     "\"X-Served-By\" must be lower case",
     NULL, NULL},
    {"header edit values", edit_null_value,
     "VirtualService default/reviews: spec.http[0].route[1].request_headers.add.x-a: expected a "
     "string, got null",
     NULL, NULL},
    {"header edit names once", edit_dup_name,
     "VirtualService default/reviews: spec.http[0].request_headers.set.x-a: duplicate name "
     "\"x-a\"",
     Y_BASE("{cluster: reviews-v1, request_headers: {set: {x-a: '1', X-A: '2'}}}",
            ", route_table: outbound-80"),
     "t.yaml:11:63: " R ".request_headers.set.X-A: duplicate name \"x-a\" (first at line 11)"},
    {"header edit value whitespace", edit_bad_value,
     "VirtualService default/reviews: spec.http[0].route[1].response_headers.set.x-a: a header "
     "value must not begin or end with whitespace (parsers strip it)",
     Y_BASE("{weighted_clusters: [{cluster: reviews-v1, weight: 90}, {cluster: reviews-v2, weight: "
            "10, response_headers: {set: {x-a: 'v '}}}]}",
            ", route_table: outbound-80"),
     "t.yaml:11:127: " R ".weighted_clusters[1].response_headers.set.x-a: a header value must "
     "not begin or end with whitespace (parsers strip it)"},
    {"header match values per kind", header_match_empty_prefix,
     "VirtualService default/reviews: spec.http[0].match[0].headers.x.prefix: must not be empty",
     Y_BASE("{match: {headers: [{name: x, prefix: ''}]}, cluster: reviews-v1}",
            ", route_table: outbound-80"),
     "t.yaml:11:44: " R ".match.headers[0].prefix: must not be empty"},
    {"query match kinds", query_suffix,
     "VirtualService default/reviews: spec.http[0].match[0].queryParams.v: unknown query "
     "parameter match kind 2",
     NULL, NULL},
    {"query match values", query_separator,
     "VirtualService default/reviews: spec.http[0].match[0].queryParams.v.exact: value \"a&b\" "
     "holds '&', which separates query parameters; write it percent-encoded (%26)",
     Y_BASE("{match: {query_params: [{name: v, exact: 'a&b'}]}, cluster: reviews-v1}",
            ", route_table: outbound-80"),
     "t.yaml:11:48: " R ".match.query_params[0].exact: value \"a&b\" holds '&', which separates "
     "query parameters; write it percent-encoded (%26)"},
    {"retries on a direct response", retry_on_direct,
     "VirtualService default/reviews: spec.http[0].retries: a direct_response route sends no "
     "request upstream to retry",
     NULL, NULL},
    {"retry conditions", retry_unknown_condition,
     "VirtualService default/reviews: spec.http[0].retries.retry_on[1]: unknown retry condition "
     "\"retry-harder\" (accepted: 5xx, gateway-error, reset, reset-before-request, "
     "connect-failure, refused-stream, retriable-4xx, retriable-status-codes, cancelled, "
     "deadline-exceeded, resource-exhausted, internal, unavailable)",
     NULL, NULL},
    {"retriable codes without their condition", retry_codes_ignored,
     "VirtualService default/reviews: spec.http[0].retries.retriable_status_codes: would be "
     "ignored: retry_on does not name retriable-status-codes",
     NULL, NULL},
    {"backoff", retry_backoff_inverted,
     "VirtualService default/reviews: spec.http[0].retries.backoff.max: backoff.max (50 ms) must "
     "not be less than backoff.base (100 ms)",
     NULL, NULL},
    {"retry attempts", retry_attempts_range,
     "VirtualService default/reviews: spec.http[0].retries.attempts: must be between 0 and 100, "
     "got 1000",
     NULL, NULL},
    {"mirror cluster", mirror_unknown,
     "VirtualService default/reviews: spec.http[0].mirrors[0].cluster: unknown cluster "
     "\"reviews-v3\"",
     NULL, NULL},
    {"mirror protocol", mirror_to_http2,
     "VirtualService default/reviews: spec.http[0].mirrors[0].cluster: mirrors speak HTTP/1.1, "
     "and cluster \"reviews-v2\" speaks HTTP/2 (protocol: http2); mirror to a cluster with "
     "protocol http1 or original",
     NULL, NULL},
    {"mirror percentage", mirror_bad_percent,
     "VirtualService default/reviews: spec.http[0].mirrors[0].percent: must be between 0 and 100 "
     "percent, got 1000001 per million",
     NULL, NULL},
    /* weighted TCP routes (listeners[].tcp_clusters) */
    {"tcp route -> cluster", tcp_split_unknown,
     "VirtualService default/reviews: spec.tcp[0].route[1].cluster: unknown cluster \"nope\"",
     Y_BASE(Y_SPLIT, ", protocol: tcp, tcp_clusters: [{cluster: reviews-v1, weight: 80}, "
                     "{cluster: nope, weight: 20}]"),
     "t.yaml:13:142: listeners[0].tcp_clusters[1].cluster: unknown cluster \"nope\""},
    {"tcp route entries without a location", tcp_split_unknown_unlocated,
     "Sidecar default/default: spec.egress[0].tcp_clusters[1].cluster: unknown cluster \"nope\"",
     NULL, NULL},
    {"tcp route weights all 0", tcp_split_zero,
     "Sidecar default/default: spec.egress[0].tcp_clusters: the weights must not all be 0",
     Y_BASE(Y_SPLIT, ", protocol: tcp, tcp_clusters: [{cluster: reviews-v1, weight: 0}, "
                     "{cluster: reviews-v2, weight: 0}]"),
     "t.yaml:13:96: listeners[0].tcp_clusters: the weights must not all be 0"},
    {"tcp route weight range", tcp_split_weight_range,
     "VirtualService default/reviews: spec.tcp[0].route[1].weight: must be between 0 and "
     "1000000, got 2000000",
     Y_BASE(Y_SPLIT, ", protocol: tcp, tcp_clusters: [{cluster: reviews-v1, weight: 80}, "
                     "{cluster: reviews-v2, weight: 2000000}]"),
     "t.yaml:13:162: listeners[0].tcp_clusters[1].weight: must be between 0 and 1000000, got "
     "2000000"},
    {"tcp route entries", tcp_split_too_many,
     "Sidecar default/default: spec.egress[0].tcp_clusters: has 257 entries; the limit is 256",
     NULL, NULL},
    {"tcp_cluster and tcp_clusters", tcp_split_and_cluster,
     "Sidecar default/default: spec.egress[0].tcp_clusters: conflicts with tcp_cluster; set "
     "exactly one of tcp_cluster, tcp_clusters",
     Y_BASE(Y_SPLIT, ", protocol: tcp, tcp_cluster: reviews-v1, tcp_clusters: [{cluster: "
                     "reviews-v1, weight: 80}]"),
     "t.yaml:13:107: listeners[0].tcp_clusters: conflicts with tcp_cluster; set exactly one of "
     "tcp_cluster, tcp_clusters"},
    {"tcp routes on an http listener", tcp_split_on_http,
     "Sidecar default/default: spec.egress[0].tcp_clusters: not allowed on an http listener (use "
     "protocol: auto or tcp)",
     Y_BASE(Y_SPLIT, ", route_table: outbound-80, tcp_clusters: [{cluster: reviews-v1, weight: "
                     "80}]"),
     "t.yaml:13:93: listeners[0].tcp_clusters: not allowed on an http listener (use protocol: "
     "auto or tcp)"},
    {"header edits on a tcp route", tcp_split_edits,
     "VirtualService default/reviews: spec.tcp[0].route[0].response_headers: not allowed on a "
     "TCP destination (no HTTP message to edit)",
     NULL, NULL},
    {"a tcp listener needs a destination", tcp_without_destination,
     "Sidecar default/default: spec.egress[0]: one of tcp_cluster, tcp_clusters, sni_routes is "
     "required on a tcp listener",
     Y_BASE(Y_SPLIT, ", protocol: tcp"),
     "t.yaml:13:3: listeners[0]: one of tcp_cluster, tcp_clusters, sni_routes is required on a "
     "tcp listener"},
    {"objects without a location", dup_unlocated,
     "mesh: clusters[1].name: duplicate cluster name \"reviews-v1\" (first defined at "
     "clusters[0])",
     NULL, NULL},
};

static void test_invariants(void **state)
{
    (void)state;
    size_t failed = 0, n = sizeof(cases) / sizeof(cases[0]);
    assert_true(n >= 15);
    for (size_t i = 0; i < n; i++) {
        const struct vcase *vc = &cases[i];
        struct tr_config *c = model();
        vc->mutate(c);
        char *err = NULL;
        int rc = tr_config_validate(c, &err);
        if (rc != -1 || err == NULL || strcmp(err, vc->want) != 0) {
            fprintf(stderr, "case %zu (%s, model):\n  want: %s\n  got:  %s\n", i, vc->what,
                    vc->want,
                    rc == 0       ? "(valid)"
                    : err != NULL ? err
                                  : "(no message)");
            failed++;
        }
        free(err);
        tr_config_free(c);
        if (vc->yaml == NULL)
            continue;
        err = NULL;
        c = tr_config_load_buffer(vc->yaml, strlen(vc->yaml), "t.yaml", &err);
        if (c != NULL || err == NULL || strcmp(err, vc->want_yaml) != 0) {
            fprintf(stderr, "case %zu (%s, yaml):\n%s\n  want: %s\n  got:  %s\n", i, vc->what,
                    vc->yaml, vc->want_yaml, c != NULL ? "(loaded)" : err);
            failed++;
        }
        free(err);
        tr_config_free(c);
    }
    assert_int_equal(failed, 0);
}

/* A compiler's retry policy and mirrors: validate turns the conditions,
 * codes and percentages into what the proxy reads, and a validated model
 * validates again to the same. */
static void test_retries_and_mirrors_ok(void **state)
{
    (void)state;
    struct tr_config *c = model();
    struct tr_route_cfg *r = ROUTE0(c);
    r->retries.attempts = 3;
    r->retries.retry_on = strs(c, "gateway-error", "retriable-status-codes");
    r->retries.n_retry_on = 2;
    r->retries.status_codes = strs(c, "599", "200");
    r->retries.n_status_codes = 2;
    mirror0(c, "reviews-v2")->per_million = 1;
    for (int pass = 0; pass < 2; pass++) {
        char *err = NULL;
        int rc = tr_config_validate(c, &err);
        if (rc != 0)
            fprintf(stderr, "unexpected: %s\n", err);
        assert_int_equal(rc, 0);
        assert_int_equal(r->retries.on,
                         TR_RETRY_ON_GATEWAY_ERROR | TR_RETRY_ON_RETRIABLE_STATUS_CODES);
        const uint64_t *bits = r->retries.code_bits;
        assert_int_equal(bits[0], 1); /* 200 */
        assert_int_equal(bits[(599 - 200) / 64], 1ull << ((599 - 200) % 64));
        assert_int_equal(r->mirrors[0].cluster, 1);
        assert_int_equal(r->mirrors[0].per_million, 1);
    }
    tr_config_free(c);
}

/* Weighted TCP routes: names become indexes, on tcp and auto listeners; the
 * shorthand stays unset; validating again changes nothing. */
static void test_tcp_split_ok(void **state)
{
    (void)state;
    for (int auto_listener = 0; auto_listener < 2; auto_listener++) {
        struct tr_config *c = model();
        tcp_split_n(c, 3, true)[1].weight = 0;
        struct tr_listener_cfg *l = &c->listeners[0];
        if (auto_listener) {
            l->protocol = TR_LPROTO_AUTO;
            l->route_table_name = "outbound-80";
        }
        for (int pass = 0; pass < 2; pass++) {
            char *err = NULL;
            int rc = tr_config_validate(c, &err);
            if (rc != 0)
                fprintf(stderr, "unexpected: %s\n", err);
            assert_int_equal(rc, 0);
            assert_int_equal(l->tcp_cluster, -1);
            assert_int_equal(l->route_table, auto_listener ? 0 : -1);
            assert_int_equal(l->n_tcp_clusters, 3);
            assert_int_equal(l->tcp_clusters[0].cluster, 0);
            assert_int_equal(l->tcp_clusters[1].cluster, 1);
            assert_int_equal(l->tcp_clusters[2].cluster, 0);
            assert_null(l->tcp_clusters[0].request_edit);
            assert_null(l->tcp_clusters[0].response_edit);
        }
        tr_config_free(c);
    }
}

/* A rewrite on a regex (or exact) route is valid: it replaces the whole path
 * (router.h, tr_route_rewrite_path), as Istio's rewrite.uri does. */
static void test_regex_rewrite_ok(void **state)
{
    (void)state;
    struct tr_config *c = model();
    regex_rewrite(c);
    char *err = NULL;
    int rc = tr_config_validate(c, &err);
    if (rc != 0)
        fprintf(stderr, "unexpected: %s\n", err);
    assert_int_equal(rc, 0);
    tr_config_free(c);
}

static void assert_edit(const struct tr_header_edit *e, const char *const *drop, size_t n_drop,
                        const char *const (*emit)[2], size_t n_emit)
{
    assert_non_null(e);
    assert_int_equal(e->n_drop, n_drop);
    for (size_t i = 0; i < n_drop; i++) {
        assert_string_equal(e->drop[i].name, drop[i]);
        assert_int_equal(e->drop[i].len, strlen(drop[i]));
        assert_true((e->drop_len_mask >> (strlen(drop[i]) % 64)) & 1);
    }
    assert_int_equal(e->n_emit, n_emit);
    uint32_t bytes = 0;
    for (size_t i = 0; i < n_emit; i++) {
        assert_string_equal(e->emit[i].name, emit[i][0]);
        assert_string_equal(e->emit[i].value, emit[i][1]);
        assert_int_equal(e->emit[i].name_len, strlen(emit[i][0]));
        assert_int_equal(e->emit[i].value_len, strlen(emit[i][1]));
        bytes += e->emit[i].name_len + e->emit[i].value_len;
    }
    assert_int_equal(e->emit_bytes, bytes);
}

/* validate folds a route's header edits and then the picked destination's
 * into one program, in Envoy's order per level: remove, set (replace every
 * value), add (one more value). */
static void test_header_edit_programs(void **state)
{
    (void)state;
    struct tr_config *c = model();
    struct tr_route_cfg *r = ROUTE0(c);
    r->request_headers.remove = strs(c, "x-r", NULL);
    r->request_headers.n_remove = 1;
    r->request_headers.set = pairs(c, "x-s", "route", "x-t", "t");
    r->request_headers.n_set = 2;
    r->request_headers.add = pairs(c, "x-a", "route", NULL, NULL);
    r->request_headers.n_add = 1;
    struct tr_header_ops_cfg *d = &r->clusters[0].request_headers;
    d->remove = strs(c, "x-a", NULL);
    d->n_remove = 1;
    d->set = pairs(c, "x-t", "dest", "x-r", "back");
    d->n_set = 2;
    d->add = pairs(c, "x-a", "dest", "x-s", "more");
    d->n_add = 2;
    r->clusters[1].response_headers.add = pairs(c, "x-v", "2", NULL, NULL);
    r->clusters[1].response_headers.n_add = 1;
    char *err = NULL;
    for (int round = 0; round < 2; round++) { /* validating again builds the same */
        int rc = tr_config_validate(c, &err);
        if (rc != 0)
            fprintf(stderr, "unexpected: %s\n", err);
        assert_int_equal(rc, 0);
        /* The route alone: what every destination starts from. */
        static const char *const route_drop[] = {"x-r", "x-s", "x-t"};
        static const char *const route_emit[][2] = {
            {"x-s", "route"}, {"x-t", "t"}, {"x-a", "route"}};
        assert_edit(r->clusters[1].request_edit, route_drop, 3, route_emit, 3);
        /* Then the destination's: its remove takes the route's x-a, its set
         * replaces x-t and brings x-r back, its add appends. */
        static const char *const dest_drop[] = {"x-r", "x-s", "x-t", "x-a"};
        static const char *const dest_emit[][2] = {
            {"x-s", "route"}, {"x-t", "dest"}, {"x-r", "back"}, {"x-a", "dest"}, {"x-s", "more"}};
        assert_edit(r->clusters[0].request_edit, dest_drop, 4, dest_emit, 5);
        /* Response edits only where written. */
        assert_null(r->response_edit);
        assert_null(r->clusters[0].response_edit);
        static const char *const v_emit[][2] = {{"x-v", "2"}};
        assert_edit(r->clusters[1].response_edit, NULL, 0, v_emit, 1);
    }
    tr_config_free(c);

    /* The same from YAML, and the route's program for a direct response. */
    static const char text[] = Y_BASE(
        "{direct_response: {status: 200, body: '{}'}, response_headers: {remove: [server], set: "
        "{content-type: application/json}}}",
        ", route_table: outbound-80");
    struct tr_config *y = tr_config_load_buffer(text, sizeof(text) - 1, "t.yaml", &err);
    if (y == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(y);
    static const char *const json_drop[] = {"server", "content-type"};
    static const char *const json_emit[][2] = {{"content-type", "application/json"}};
    assert_edit(y->route_tables[0].vhosts[0].routes[0].response_edit, json_drop, 2, json_emit, 1);
    tr_config_free(y);
}

/* The YAML base the cases start from is valid and loads into the model the
 * builder makes: same indexes, same defaults. */
static void test_yaml_twin(void **state)
{
    (void)state;
    static const char text[] = Y_BASE(Y_SPLIT, ", route_table: outbound-80");
    char *err = NULL;
    struct tr_config *y = tr_config_load_buffer(text, sizeof(text) - 1, "t.yaml", &err);
    if (y == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(y);
    struct tr_config *m = model();
    assert_int_equal(tr_config_validate(m, NULL), 0);
    const struct tr_route_cfg *ry = &y->route_tables[0].vhosts[0].routes[0];
    const struct tr_route_cfg *rm = ROUTE0(m);
    assert_int_equal(ry->total_weight, rm->total_weight);
    assert_int_equal(ry->clusters[1].cluster, rm->clusters[1].cluster);
    assert_string_equal(ry->name, rm->name);
    assert_string_equal(ry->path, rm->path);
    assert_int_equal(y->listeners[0].route_table, m->listeners[0].route_table);
    assert_int_equal(y->listeners[0].tls, m->listeners[0].tls);
    assert_int_equal(y->listeners[0].idle_timeout_ms, m->listeners[0].idle_timeout_ms);
    assert_int_equal(y->listeners[0].xfp, m->listeners[0].xfp);
    assert_int_equal(y->clusters[1].protocol, m->clusters[1].protocol);
    assert_int_equal(y->clusters[1].h2_max_streams, m->clusters[1].h2_max_streams);
    assert_int_equal(y->clusters[1].pool_max_idle, m->clusters[1].pool_max_idle);
    assert_string_equal(y->clusters[1].endpoints[0].name, m->clusters[1].endpoints[0].name);
    assert_int_equal(y->tls[0].min_version, m->tls[0].min_version);
    assert_int_equal(y->tls[0].session_resumption, m->tls[0].session_resumption);
    assert_int_equal(y->limits.h2_connection_window, m->limits.h2_connection_window);
    /* Loaded objects keep their names for references. */
    assert_string_equal(y->listeners[0].route_table_name, "outbound-80");
    assert_string_equal(ry->clusters[0].cluster_name, "reviews-v1");
    tr_config_free(y);
    tr_config_free(m);
}

static void test_origin_format(void **state)
{
    (void)state;
    char buf[256];
    struct tr_cfg_loc loc = {.path = "spec.http[0].route[1].weight", .origin = VS};
    int n = tr_cfg_loc_format(&loc, buf, sizeof(buf));
    assert_string_equal(buf, "VirtualService default/reviews: spec.http[0].route[1].weight: ");
    assert_int_equal(n, (int)strlen(buf));
    /* Cluster-scoped resources have no namespace; a file position comes first. */
    loc = (struct tr_cfg_loc){.file = "istio.yaml",
                              .line = 12,
                              .col = 3,
                              .path = "spec",
                              .origin = {.kind = "GatewayClass", .name = "trellis"}};
    tr_cfg_loc_format(&loc, buf, sizeof(buf));
    assert_string_equal(buf, "istio.yaml:12:3: GatewayClass trellis: spec: ");
    char *err = NULL;
    tr_cfg_errorf(&err, &loc, "bad %d", 1);
    assert_string_equal(err, "istio.yaml:12:3: GatewayClass trellis: spec: bad 1");
    free(err);
}

/* ---- outlier detection, consistent hashing, circuit breakers ---- */

/* A compiler's DestinationRule with consistentHash, outlierDetection and
 * connectionPool settings: valid, and validate derives the hash source. */
static void test_cluster_policies_ok(void **state)
{
    (void)state;
    struct tr_config *c = model();
    struct tr_cluster_cfg *cl = &c->clusters[0];
    cl->lb = TR_LB_MAGLEV;
    cl->hash.query_param = "user";
    cl->hash.maglev_table_size = 5000011; /* the largest prime Maglev takes */
    cl->outlier.enabled = true;
    cl->outlier.consecutive_gateway = 2;
    cl->breakers.max_requests = 10;
    cl->max_requests_per_connection = 1;
    c->clusters[1].lb = TR_LB_RING_HASH; /* no key: every request hashes at random */
    char *err = NULL;
    if (tr_config_validate(c, &err) != 0)
        fprintf(stderr, "unexpected: %s\n", err);
    assert_null(err);
    assert_int_equal(cl->hash.source, TR_HASH_QUERY_PARAM);
    assert_int_equal(c->clusters[1].hash.source, TR_HASH_NONE);
    /* A validated model validates again. */
    assert_int_equal(tr_config_validate(c, NULL), 0);
    tr_config_free(c);
}

static void test_cluster_policies_refused(void **state)
{
    (void)state;
    static const struct {
        int what;
        const char *want;
    } policy_cases[] = {
        {0, "spec.subsets[0].hash_policy: set exactly one of header, cookie, source_ip, "
            "query_param"},
        {1, "spec.subsets[0].hash_policy: only used with lb: ring_hash or maglev; with this lb it "
            "would be ignored"},
        {2, "spec.subsets[0].maglev.table_size: must be a prime number (Maglev's permutations "
            "need it), got 65536"},
        {3, "spec.subsets[0].hash_policy.cookie.ttl: only used for a cookie the proxy generates, "
            "which generate: false turns off"},
        {4, "spec.subsets[0].hash_policy.cookie.name: missing required field"},
        {5, "spec.subsets[0].hash_policy.cookie.path: byte 0x3b is not allowed in a cookie path"},
        {6, "spec.subsets[0].outlier_detection.enabled: false, so the other outlier_detection "
            "settings would be ignored"},
        {7, "spec.subsets[0].outlier_detection.max_ejection_percent: must be between 0 and 100, "
            "got 200"},
        {8, "spec.subsets[0].ring_hash: only used with lb: ring_hash; with this lb it would be "
            "ignored"},
        {9, "spec.subsets[0].outlier_detection.consecutive_local_origin_failures: only used with "
            "split_external_local_origin_errors: true (otherwise local failures count as 503 and "
            "504 responses)"},
    };
    size_t failed = 0;
    for (size_t i = 0; i < sizeof(policy_cases) / sizeof(policy_cases[0]); i++) {
        struct tr_config *c = model();
        struct tr_cluster_cfg *cl = &c->clusters[0];
        cl->lb = TR_LB_RING_HASH;
        switch (policy_cases[i].what) {
        case 0:
            cl->hash.header = "x-user";
            cl->hash.source_ip = true;
            break;
        case 1:
            cl->lb = TR_LB_LEAST_REQUEST;
            cl->hash.header = "x-user";
            break;
        case 2:
            cl->lb = TR_LB_MAGLEV;
            cl->hash.maglev_table_size = 65536;
            break;
        case 3:
            cl->hash.cookie = "s";
            cl->hash.cookie_ttl_ms = 1000;
            break;
        case 4:
            cl->hash.cookie_generate = true;
            break;
        case 5:
            cl->hash.cookie = "s";
            cl->hash.cookie_generate = true;
            cl->hash.cookie_path = "/a;Domain=evil";
            break;
        case 6:
            cl->outlier.interval_ms = 1000;
            break;
        case 7:
            cl->outlier.enabled = true;
            cl->outlier.max_ejection_percent = 200;
            break;
        case 8:
            cl->lb = TR_LB_MAGLEV;
            cl->hash.ring_min_size = 64;
            break;
        case 9:
            cl->outlier.enabled = true;
            cl->outlier.consecutive_local = 1;
            break;
        }
        char *err = NULL, want[512];
        snprintf(want, sizeof(want), "DestinationRule default/reviews: %s", policy_cases[i].want);
        if (tr_config_validate(c, &err) != -1 || err == NULL || strcmp(err, want) != 0) {
            fprintf(stderr, "case %zu:\n  want: %s\n  got:  %s\n", i, want,
                    err != NULL ? err : "(valid)");
            failed++;
        }
        free(err);
        tr_config_free(c);
    }
    assert_int_equal(failed, 0);
}

/* A compiler's model with every local route action: valid, and valid again
 * (CORS indexes are counted afresh, not added up). */
static void test_local_actions_ok(void **state)
{
    (void)state;
    struct tr_config *c = model();
    struct tr_vhost_cfg *vh = &c->route_tables[0].vhosts[0];
    struct tr_route_cfg *routes = alloc(c, 3, sizeof(*routes));
    routes[0] = vh->routes[0];
    vh->routes = routes;
    vh->n_routes = 3;
    /* A redirect, a faulty split with CORS, another CORS route. */
    tr_cfg_route_defaults(&routes[1]);
    tr_cfg_route_defaults(&routes[2]);
    routes[1] = routes[0];
    routes[2].clusters = routes[0].clusters;
    routes[2].n_clusters = 1;
    struct tr_redirect_cfg *rd = alloc(c, 1, sizeof(*rd));
    tr_cfg_redirect_defaults(rd);
    rd->scheme = "https";
    rd->port_from = TR_REDIRECT_PORT_PROTOCOL_DEFAULT;
    routes[0].redirect = rd;
    routes[0].n_clusters = 0;
    routes[0].clusters = NULL;
    routes[0].path = "/old";
    struct tr_fault_cfg *f = alloc(c, 1, sizeof(*f));
    f->abort = alloc(c, 1, sizeof(*f->abort));
    *f->abort = (struct tr_fault_abort_cfg){.status = 503, .per_million = 500000};
    routes[1].fault = f;
    for (size_t i = 1; i < 3; i++) {
        struct tr_cors_cfg *cors = alloc(c, 1, sizeof(*cors));
        tr_cfg_cors_defaults(cors);
        cors->n_origins = 1;
        cors->origins = alloc(c, 1, sizeof(*cors->origins));
        cors->origins[0] = (struct tr_cors_origin_cfg){.kind = TR_ORIGIN_EXACT, .value = "*"};
        routes[i].cors = cors;
    }
    for (int round = 0; round < 2; round++) {
        char *err = NULL;
        int rc = tr_config_validate(c, &err);
        if (rc != 0)
            fprintf(stderr, "unexpected: %s\n", err);
        assert_int_equal(rc, 0);
        assert_int_equal(c->n_cors, 2);
        assert_int_equal(routes[1].cors->index, 0);
        assert_int_equal(routes[2].cors->index, 1);
        assert_int_equal(routes[0].redirect->code, 301); /* the default */
        assert_string_equal(routes[2].name, "route-2");
    }
    tr_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_ok),
        cmocka_unit_test(test_invariants),
        cmocka_unit_test(test_yaml_twin),
        cmocka_unit_test(test_regex_rewrite_ok),
        cmocka_unit_test(test_origin_format),
        cmocka_unit_test(test_local_actions_ok),
        cmocka_unit_test(test_header_edit_programs),
        cmocka_unit_test(test_model_dns_ok),
        cmocka_unit_test(test_cluster_policies_ok),
        cmocka_unit_test(test_cluster_policies_refused),
        cmocka_unit_test(test_retries_and_mirrors_ok),
        cmocka_unit_test(test_tcp_split_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
