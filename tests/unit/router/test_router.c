#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <cmocka.h>

#include "router/router.h"

/* ---- fixtures: configs are built by hand from static arrays ------------ */

static struct tr_cluster_cfg test_clusters[4] = {
    {.name = "c0"},
    {.name = "c1"},
    {.name = "c2"},
    {.name = "c3"},
};

static struct tr_config test_cfg;
static struct tr_route_table_cfg test_table;

static struct tr_router *build_vhosts(struct tr_vhost_cfg *vh, size_t n, char **err)
{
    memset(&test_cfg, 0, sizeof(test_cfg));
    test_table = (struct tr_route_table_cfg){.name = "rt", .vhosts = vh, .n_vhosts = n};
    test_cfg.file = "test.yaml";
    test_cfg.route_tables = &test_table;
    test_cfg.n_route_tables = 1;
    test_cfg.clusters = test_clusters;
    test_cfg.n_clusters = 4;
    char *e = NULL;
    struct tr_router *r = tr_router_build(&test_cfg, 0, &e);
    if (err != NULL)
        *err = e;
    else
        free(e);
    return r;
}

/* One vhost "*" holding the given routes. */
static const char *star_domain[] = {"*"};
static struct tr_vhost_cfg one_vhost;
static struct tr_router *build_routes(struct tr_route_cfg *routes, size_t n)
{
    one_vhost = (struct tr_vhost_cfg){
        .name = "all", .domains = star_domain, .n_domains = 1, .routes = routes, .n_routes = n};
    char *err = NULL;
    struct tr_router *r = build_vhosts(&one_vhost, 1, &err);
    if (r == NULL)
        fail_msg("build failed: %s", err ? err : "(no message)");
    return r;
}

static const char *match_full(const struct tr_router *r, const char *host, const char *method,
                              const char *path, const struct tr_str_pair *h, uint32_t nh)
{
    struct tr_route_request req = {
        .host = tr_str_from(host, strlen(host)),
        .path = tr_str_from(path, strlen(path)),
        .method = tr_str_from(method, strlen(method)),
        .headers = h,
        .n_headers = nh,
    };
    const struct tr_route_cfg *rc = tr_router_match(r, &req);
    return rc ? rc->name : NULL;
}

/* With the connection's scheme (the router's :scheme). */
static const char *match_scheme(const struct tr_router *r, const char *scheme, const char *host,
                                const char *method, const char *path)
{
    struct tr_route_request req = {
        .host = tr_str_from(host, strlen(host)),
        .path = tr_str_from(path, strlen(path)),
        .method = tr_str_from(method, strlen(method)),
        .scheme = tr_str_from(scheme, strlen(scheme)),
    };
    const struct tr_route_cfg *rc = tr_router_match(r, &req);
    return rc ? rc->name : NULL;
}

static const char *match_host(const struct tr_router *r, const char *host)
{
    return match_full(r, host, "GET", "/", NULL, 0);
}

static const char *match_path(const struct tr_router *r, const char *method, const char *path)
{
    return match_full(r, "h", method, path, NULL, 0);
}

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        {(n), sizeof(n) - 1},                                                                      \
        {                                                                                          \
            (v), sizeof(v) - 1                                                                     \
        }                                                                                          \
    }

#define ASSERT_NAME(got, want)                                                                     \
    do {                                                                                           \
        const char *g_ = (got);                                                                    \
        if ((want) == NULL)                                                                        \
            assert_null(g_);                                                                       \
        else {                                                                                     \
            assert_non_null(g_);                                                                   \
            assert_string_equal(g_, (want));                                                       \
        }                                                                                          \
    } while (0)

/* A vhost whose single catch-all route is named after the vhost. */
#define VH(nm, ...)                                                                                \
    {                                                                                              \
        .name = nm, .domains = (const char *[]){__VA_ARGS__},                                      \
        .n_domains = sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *),                 \
        .routes = (struct tr_route_cfg[]){{.name = nm, .path = "/"}}, .n_routes = 1                \
    }

/* ---- virtual hosts ------------------------------------------------------ */

static void test_vhost_precedence(void **state)
{
    struct tr_vhost_cfg vh[] = {
        VH("any", "*"),
        VH("prefix", "foo.*"),
        VH("suffix", "*.example.com"),
        VH("suffix_long", "*.b.example.com"),
        VH("exact", "example.com", "Other.Example.ORG"),
        VH("port", "api.example.com:8080"),
        VH("v6", "[::1]:80"),
        VH("v6bare", "::2"),
        VH("prefix_long", "foo.bar.*"),
    };
    struct tr_router *r = build_vhosts(vh, sizeof(vh) / sizeof(vh[0]), NULL);
    assert_non_null(r);

    ASSERT_NAME(match_host(r, "example.com"), "exact");
    ASSERT_NAME(match_host(r, "EXAMPLE.Com"), "exact");
    ASSERT_NAME(match_host(r, "other.example.org"), "exact");
    ASSERT_NAME(match_host(r, "example.com:9999"), "exact"); /* port-less domain: any port */
    ASSERT_NAME(match_host(r, "x.example.com"), "suffix");
    ASSERT_NAME(match_host(r, "X.B.EXAMPLE.COM"), "suffix_long");
    ASSERT_NAME(match_host(r, "b.example.com"), "suffix");   /* "*" needs >= 1 char */
    ASSERT_NAME(match_host(r, "foo.example.com"), "suffix"); /* suffix beats prefix */
    ASSERT_NAME(match_host(r, "foo.net"), "prefix");
    ASSERT_NAME(match_host(r, "foo.bar.baz"), "prefix_long");
    ASSERT_NAME(match_host(r, "foo."), "any"); /* prefix wildcard needs >= 1 char */
    ASSERT_NAME(match_host(r, "nothing.here"), "any");
    ASSERT_NAME(match_host(r, ""), "any");
    ASSERT_NAME(match_host(r, "api.example.com:8080"), "port");
    ASSERT_NAME(match_host(r, "api.example.com:8081"), "suffix");
    ASSERT_NAME(match_host(r, "api.example.com"), "suffix");
    ASSERT_NAME(match_host(r, "[::1]:80"), "v6");
    ASSERT_NAME(match_host(r, "[::1]:81"), "any");
    ASSERT_NAME(match_host(r, "[::1]"), "any");
    ASSERT_NAME(match_host(r, "[::2]"), "v6bare");
    ASSERT_NAME(match_host(r, "[::2]:443"), "v6bare");
    ASSERT_NAME(match_host(r, "example.com:notaport"), "exact");
    tr_router_free(r);
}

static void test_vhost_ports_and_empty_host(void **state)
{
    struct tr_vhost_cfg vh[] = {
        VH("svc_any", "svc"), VH("svc_8080", "svc:8080"),     VH("star_8080", "*:8080"),
        VH("wild", "*.mesh"), VH("wild_9000", "*.mesh:9000"),
    };
    struct tr_router *r = build_vhosts(vh, sizeof(vh) / sizeof(vh[0]), NULL);
    assert_non_null(r);
    /* Same exact name: the port-specific domain wins over the port-less one. */
    ASSERT_NAME(match_host(r, "svc:8080"), "svc_8080");
    ASSERT_NAME(match_host(r, "SVC:8080"), "svc_8080");
    ASSERT_NAME(match_host(r, "svc:9"), "svc_any");
    ASSERT_NAME(match_host(r, "svc"), "svc_any");
    ASSERT_NAME(match_host(r, "a.mesh:9000"), "wild_9000");
    ASSERT_NAME(match_host(r, "a.mesh:9001"), "wild");
    ASSERT_NAME(match_host(r, "zzz:8080"), "star_8080");
    ASSERT_NAME(match_host(r, "zzz:8081"), NULL);
    ASSERT_NAME(match_host(r, "zzz"), NULL);
    /* Empty Host (HTTP/1.0) only matches "*" domains, and "*:8080" needs a port. */
    ASSERT_NAME(match_host(r, ""), NULL);
    tr_router_free(r);
}

static void test_vhost_many_exact(void **state)
{
    enum { N = 64 };
    static char names[N][16];
    static const char *doms[N][1];
    static struct tr_route_cfg routes[N];
    static struct tr_vhost_cfg vh[N];
    /* Inserted in scrambled order so the bisect is really exercised. */
    for (int i = 0; i < N; i++) {
        int k = (i * 37) % N;
        snprintf(names[i], sizeof(names[i]), "h%02d.Test", k);
        doms[i][0] = names[i];
        routes[i] = (struct tr_route_cfg){.name = names[i], .path = "/"};
        vh[i] = (struct tr_vhost_cfg){.name = names[i],
                                      .domains = doms[i],
                                      .n_domains = 1,
                                      .routes = &routes[i],
                                      .n_routes = 1};
    }
    struct tr_router *r = build_vhosts(vh, N, NULL);
    assert_non_null(r);
    for (int k = 0; k < N; k++) {
        char host[32], want[16];
        snprintf(host, sizeof(host), "H%02d.TEST:80", k);
        snprintf(want, sizeof(want), "h%02d.Test", k);
        ASSERT_NAME(match_host(r, host), want);
    }
    ASSERT_NAME(match_host(r, "h64.test"), NULL);
    ASSERT_NAME(match_host(r, "h0.test"), NULL);
    ASSERT_NAME(match_host(r, "h00.test0"), NULL);
    tr_router_free(r);
}

static void expect_build_error(struct tr_vhost_cfg *vh, size_t n, const char *needle)
{
    char *err = NULL;
    struct tr_router *r = build_vhosts(vh, n, &err);
    assert_null(r);
    assert_non_null(err);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, needle);
    free(err);
}

static void test_build_errors(void **state)
{
    struct tr_cfg_loc loc = {
        .file = "mesh.yaml", .line = 12, .col = 7, .path = "route_tables[0].vhosts[1].routes[0]"};
    struct tr_vhost_cfg dup[] = {VH("a", "x.com", "*.y.com"), VH("b", "X.COM")};
    expect_build_error(dup, 2, "listed twice");
    struct tr_vhost_cfg dupw[] = {VH("a", "*.y.com", "*.z.com", "*.y.com:1"), VH("b", "*.y.com")};
    expect_build_error(dupw, 2, "\"*.y.com\" is listed twice");
    struct tr_vhost_cfg mid[] = {VH("a", "a*b")};
    expect_build_error(mid, 1, "first or last");
    struct tr_vhost_cfg two[] = {VH("a", "*.x.*")};
    expect_build_error(two, 1, "at most one");
    struct tr_vhost_cfg port[] = {VH("a", "x.com:99999")};
    expect_build_error(port, 1, "invalid port");
    struct tr_vhost_cfg empty[] = {VH("a", "")};
    expect_build_error(empty, 1, "empty domain");

    struct tr_route_cfg bad_re = {
        .name = "re", .path_kind = TR_PATH_REGEX, .path = "/(x", .loc = loc};
    struct tr_vhost_cfg v1 = {
        .name = "v", .domains = star_domain, .n_domains = 1, .routes = &bad_re, .n_routes = 1};
    expect_build_error(&v1, 1,
                       "mesh.yaml:12:7: route_tables[0].vhosts[1].routes[0]: invalid regex");

    struct tr_header_match_cfg hm = {
        .name = "x", .kind = TR_HMATCH_REGEX, .value = "[", .loc = loc};
    struct tr_route_cfg bad_hre[] = {
        {.name = "ok", .path_kind = TR_PATH_REGEX, .path = "/ok.*"},
        {.name = "bad", .path = "/", .headers = &hm, .n_headers = 1},
    };
    struct tr_vhost_cfg v2 = {
        .name = "v", .domains = star_domain, .n_domains = 1, .routes = bad_hre, .n_routes = 2};
    expect_build_error(&v2, 1, "mesh.yaml:12:7:"); /* and no leak of the first regex */

    struct tr_weighted_cluster_cfg wc = {.cluster = 9, .weight = 1};
    struct tr_route_cfg bad_cl = {.name = "c", .path = "/", .clusters = &wc, .n_clusters = 1};
    struct tr_vhost_cfg v3 = {
        .name = "v", .domains = star_domain, .n_domains = 1, .routes = &bad_cl, .n_routes = 1};
    expect_build_error(&v3, 1, "unknown cluster 9");

    char *err = NULL;
    assert_null(tr_router_build(&test_cfg, 5, &err));
    assert_non_null(err);
    free(err);
}

/* ---- routes ------------------------------------------------------------- */

static void test_route_order_first_match_wins(void **state)
{
    struct tr_route_cfg routes[] = {
        {.name = "api", .path = "/api"},
        {.name = "root", .path = "/"},
        {.name = "api_v2", .path = "/api/v2"}, /* shadowed by "api" */
    };
    struct tr_router *r = build_routes(routes, 3);
    ASSERT_NAME(match_path(r, "GET", "/api/v2/x"), "api");
    ASSERT_NAME(match_path(r, "GET", "/apix"), "api"); /* byte prefix, not segment */
    ASSERT_NAME(match_path(r, "GET", "/other"), "root");
    ASSERT_NAME(match_path(r, "GET", ""), NULL);
    tr_router_free(r);

    struct tr_route_cfg rev[] = {{.name = "root", .path = "/"}, {.name = "api", .path = "/api"}};
    r = build_routes(rev, 2);
    ASSERT_NAME(match_path(r, "GET", "/api"), "root");
    tr_router_free(r);
}

static void test_path_kinds(void **state)
{
    struct tr_route_cfg routes[] = {
        {.name = "exact", .path_kind = TR_PATH_EXACT, .path = "/exact"},
        {.name = "user", .path_kind = TR_PATH_REGEX, .path = "/users/[0-9]+"},
        {.name = "alt", .path_kind = TR_PATH_REGEX, .path = "/a|/ab"},
        {.name = "prefix", .path_kind = TR_PATH_PREFIX, .path = "/p/"},
    };
    struct tr_router *r = build_routes(routes, 4);
    ASSERT_NAME(match_path(r, "GET", "/exact"), "exact");
    ASSERT_NAME(match_path(r, "GET", "/exact?q=1"), "exact");
    ASSERT_NAME(match_path(r, "GET", "/exact/"), NULL);
    ASSERT_NAME(match_path(r, "GET", "/exac"), NULL);
    ASSERT_NAME(match_path(r, "GET", "/EXACT"), NULL);
    ASSERT_NAME(match_path(r, "GET", "/users/42"), "user");
    ASSERT_NAME(match_path(r, "GET", "/users/42?x=/users/1"), "user");
    /* Full match: neither a longer path nor a path containing it matches. */
    ASSERT_NAME(match_path(r, "GET", "/users/42/edit"), NULL);
    ASSERT_NAME(match_path(r, "GET", "/x/users/42"), NULL);
    ASSERT_NAME(match_path(r, "GET", "/users/"), NULL);
    /* Alternation must be retried until the whole path is consumed. */
    ASSERT_NAME(match_path(r, "GET", "/ab"), "alt");
    ASSERT_NAME(match_path(r, "GET", "/a"), "alt");
    ASSERT_NAME(match_path(r, "GET", "/abc"), NULL);
    ASSERT_NAME(match_path(r, "GET", "/p/x"), "prefix");
    ASSERT_NAME(match_path(r, "GET", "/p"), NULL);
    ASSERT_NAME(match_path(r, "GET", "/P/x"), NULL);
    /* The query is cut before prefix matching too. */
    ASSERT_NAME(match_path(r, "GET", "/q?/p/x"), NULL);
    tr_router_free(r);
}

static void test_ignore_case(void **state)
{
    struct tr_route_cfg routes[] = {
        {.name = "exact", .path_kind = TR_PATH_EXACT, .path = "/Login", .path_ignore_case = true},
        {.name = "prefix", .path = "/Static/", .path_ignore_case = true},
    };
    struct tr_router *r = build_routes(routes, 2);
    ASSERT_NAME(match_path(r, "GET", "/login"), "exact");
    ASSERT_NAME(match_path(r, "GET", "/LOGIN?next=/"), "exact");
    ASSERT_NAME(match_path(r, "GET", "/logins"), NULL);
    ASSERT_NAME(match_path(r, "GET", "/sTaTiC/app.js"), "prefix");
    ASSERT_NAME(match_path(r, "GET", "/stat"), NULL);
    tr_router_free(r);

    /* A regex path with ignore_case matches in any case too (it was compiled
     * case-sensitively once, so the setting was silently ignored). */
    struct tr_route_cfg re[] = {
        {.name = "ci",
         .path_kind = TR_PATH_REGEX,
         .path = "/Img/[a-z]+\\.PNG",
         .path_ignore_case = true},
        {.name = "cs", .path_kind = TR_PATH_REGEX, .path = "/Doc/[a-z]+"},
    };
    r = build_routes(re, 2);
    ASSERT_NAME(match_path(r, "GET", "/img/CAT.png"), "ci");
    ASSERT_NAME(match_path(r, "GET", "/IMG/cat.PNG?x=1"), "ci");
    ASSERT_NAME(match_path(r, "GET", "/img/cat.gif"), NULL);
    ASSERT_NAME(match_path(r, "GET", "/Doc/readme"), "cs");
    ASSERT_NAME(match_path(r, "GET", "/doc/readme"), NULL);
    ASSERT_NAME(match_path(r, "GET", "/Doc/README"), NULL);
    tr_router_free(r);
}

static void test_methods(void **state)
{
    struct tr_route_cfg routes[] = {
        {.name = "read", .path = "/", .methods = (const char *[]){"GET", "HEAD"}, .n_methods = 2},
        {.name = "write", .path = "/", .methods = (const char *[]){"POST"}, .n_methods = 1},
    };
    struct tr_router *r = build_routes(routes, 2);
    ASSERT_NAME(match_path(r, "GET", "/x"), "read");
    ASSERT_NAME(match_path(r, "HEAD", "/x"), "read");
    ASSERT_NAME(match_path(r, "POST", "/x"), "write");
    ASSERT_NAME(match_path(r, "get", "/x"), NULL); /* case-sensitive */
    ASSERT_NAME(match_path(r, "GETX", "/x"), NULL);
    ASSERT_NAME(match_path(r, "GE", "/x"), NULL);
    ASSERT_NAME(match_path(r, "DELETE", "/x"), NULL);
    tr_router_free(r);
}

static void test_header_matchers(void **state)
{
    struct tr_header_match_cfg h_exact = {
        .name = "x-env", .kind = TR_HMATCH_EXACT, .value = "canary"};
    struct tr_header_match_cfg h_prefix = {
        .name = "x-ver", .kind = TR_HMATCH_PREFIX, .value = "v2."};
    struct tr_header_match_cfg h_suffix = {
        .name = "x-user", .kind = TR_HMATCH_SUFFIX, .value = "@corp"};
    struct tr_header_match_cfg h_regex = {
        .name = "x-id", .kind = TR_HMATCH_REGEX, .value = "[a-f0-9]{4}"};
    struct tr_header_match_cfg h_present = {.name = "x-debug", .kind = TR_HMATCH_PRESENT};
    struct tr_header_match_cfg h_not_beta = {
        .name = "x-tier", .kind = TR_HMATCH_EXACT, .value = "beta", .invert = true};
    struct tr_header_match_cfg h_not_present = {
        .name = "x-skip", .kind = TR_HMATCH_PRESENT, .invert = true};
    struct tr_header_match_cfg both[] = {
        {.name = "a", .kind = TR_HMATCH_EXACT, .value = "1"},
        {.name = "b", .kind = TR_HMATCH_EXACT, .value = "2"},
    };
    struct tr_route_cfg routes[] = {
        {.name = "exact", .path = "/e", .headers = &h_exact, .n_headers = 1},
        {.name = "prefix", .path = "/p", .headers = &h_prefix, .n_headers = 1},
        {.name = "suffix", .path = "/s", .headers = &h_suffix, .n_headers = 1},
        {.name = "regex", .path = "/r", .headers = &h_regex, .n_headers = 1},
        {.name = "present", .path = "/d", .headers = &h_present, .n_headers = 1},
        {.name = "notbeta", .path = "/i", .headers = &h_not_beta, .n_headers = 1},
        {.name = "noskip", .path = "/n", .headers = &h_not_present, .n_headers = 1},
        {.name = "both", .path = "/b", .headers = both, .n_headers = 2},
    };
    struct tr_router *r = build_routes(routes, 8);

    struct tr_str_pair e1[] = {HDR("X-Env", "canary")};
    struct tr_str_pair e2[] = {HDR("x-env", "canary2")};
    struct tr_str_pair e3[] = {HDR("x-env", "Canary")};
    ASSERT_NAME(match_full(r, "h", "GET", "/e", e1, 1), "exact");
    ASSERT_NAME(match_full(r, "h", "GET", "/e", e2, 1), NULL);
    ASSERT_NAME(match_full(r, "h", "GET", "/e", e3, 1), NULL);
    ASSERT_NAME(match_full(r, "h", "GET", "/e", NULL, 0), NULL);

    struct tr_str_pair p1[] = {HDR("x-ver", "v2.1.0")}, p2[] = {HDR("x-ver", "v3.2.")};
    ASSERT_NAME(match_full(r, "h", "GET", "/p", p1, 1), "prefix");
    ASSERT_NAME(match_full(r, "h", "GET", "/p", p2, 1), NULL);

    struct tr_str_pair s1[] = {HDR("x-user", "bob@corp")}, s2[] = {HDR("x-user", "bob@corp.evil")};
    ASSERT_NAME(match_full(r, "h", "GET", "/s", s1, 1), "suffix");
    ASSERT_NAME(match_full(r, "h", "GET", "/s", s2, 1), NULL);

    struct tr_str_pair r1[] = {HDR("X-ID", "beef")}, r2[] = {HDR("x-id", "beef0")},
                       r3[] = {HDR("x-id", "xbeef")};
    ASSERT_NAME(match_full(r, "h", "GET", "/r", r1, 1), "regex");
    ASSERT_NAME(match_full(r, "h", "GET", "/r", r2, 1), NULL);
    ASSERT_NAME(match_full(r, "h", "GET", "/r", r3, 1), NULL);

    struct tr_str_pair d1[] = {HDR("x-debug", "")};
    ASSERT_NAME(match_full(r, "h", "GET", "/d", d1, 1), "present");
    ASSERT_NAME(match_full(r, "h", "GET", "/d", e1, 1), NULL);

    /* invert: a different value matches, the value itself does not, and an
     * absent header fails the inner match so the inverted matcher holds. */
    struct tr_str_pair i1[] = {HDR("x-tier", "stable")}, i2[] = {HDR("x-tier", "beta")};
    ASSERT_NAME(match_full(r, "h", "GET", "/i", i1, 1), "notbeta");
    ASSERT_NAME(match_full(r, "h", "GET", "/i", i2, 1), NULL);
    ASSERT_NAME(match_full(r, "h", "GET", "/i", NULL, 0), "notbeta");
    struct tr_str_pair n1[] = {HDR("x-skip", "1")};
    ASSERT_NAME(match_full(r, "h", "GET", "/n", NULL, 0), "noskip");
    ASSERT_NAME(match_full(r, "h", "GET", "/n", n1, 1), NULL);

    /* Repeated header: any matching value is enough; inverted, none may match. */
    struct tr_str_pair rep[] = {HDR("x-env", "prod"), HDR("x-other", "canary"),
                                HDR("X-ENV", "canary")};
    ASSERT_NAME(match_full(r, "h", "GET", "/e", rep, 3), "exact");
    struct tr_str_pair rep2[] = {HDR("x-tier", "stable"), HDR("x-tier", "beta")};
    ASSERT_NAME(match_full(r, "h", "GET", "/i", rep2, 2), NULL);

    /* All matchers of a route must hold. */
    struct tr_str_pair b1[] = {HDR("a", "1"), HDR("b", "2")}, b2[] = {HDR("a", "1")};
    ASSERT_NAME(match_full(r, "h", "GET", "/b", b1, 2), "both");
    ASSERT_NAME(match_full(r, "h", "GET", "/b", b2, 1), NULL);
    tr_router_free(r);
}

/* :authority (and its HTTP/1.1 name host), :scheme and :method read the
 * request itself, not the header list, so HTTP/1.1 and HTTP/2 match alike;
 * they select among a virtual host's routes, never the virtual host. */
static void test_pseudo_header_matchers(void **state)
{
    struct tr_header_match_cfg auth_exact = {
        .name = ":authority", .kind = TR_HMATCH_EXACT, .value = "api.example.com:8443"};
    struct tr_header_match_cfg auth_regex = {
        .name = ":authority", .kind = TR_HMATCH_REGEX, .value = "[a-z]+\\.internal(:[0-9]+)?"};
    struct tr_header_match_cfg host_prefix = {
        .name = "host", .kind = TR_HMATCH_PREFIX, .value = "legacy."};
    struct tr_header_match_cfg auth_absent = {
        .name = ":authority", .kind = TR_HMATCH_PRESENT, .invert = true};
    struct tr_header_match_cfg https = {
        .name = ":scheme", .kind = TR_HMATCH_EXACT, .value = "https"};
    struct tr_header_match_cfg not_http = {
        .name = ":scheme", .kind = TR_HMATCH_EXACT, .value = "http", .invert = true};
    struct tr_header_match_cfg reads = {
        .name = ":method", .kind = TR_HMATCH_REGEX, .value = "GET|HEAD"};
    struct tr_header_match_cfg del_prefix = {
        .name = ":method", .kind = TR_HMATCH_PREFIX, .value = "DEL"};
    struct tr_route_cfg routes[] = {
        {.name = "auth_exact", .path = "/a", .headers = &auth_exact, .n_headers = 1},
        {.name = "auth_regex", .path = "/a", .headers = &auth_regex, .n_headers = 1},
        {.name = "host_prefix", .path = "/a", .headers = &host_prefix, .n_headers = 1},
        {.name = "no_host", .path = "/a", .headers = &auth_absent, .n_headers = 1},
        {.name = "https", .path = "/s", .headers = &https, .n_headers = 1},
        {.name = "not_http", .path = "/s", .headers = &not_http, .n_headers = 1},
        {.name = "reads", .path = "/m", .headers = &reads, .n_headers = 1},
        {.name = "delete", .path = "/m", .headers = &del_prefix, .n_headers = 1},
    };
    struct tr_router *r = build_routes(routes, 8);
    /* :authority is compared with the port, as received, case included. */
    ASSERT_NAME(match_scheme(r, "http", "api.example.com:8443", "GET", "/a"), "auth_exact");
    ASSERT_NAME(match_scheme(r, "http", "api.example.com", "GET", "/a"), NULL);
    ASSERT_NAME(match_scheme(r, "http", "API.example.com:8443", "GET", "/a"), NULL);
    ASSERT_NAME(match_scheme(r, "http", "db.internal", "GET", "/a"), "auth_regex");
    ASSERT_NAME(match_scheme(r, "http", "db.internal:5432", "GET", "/a"), "auth_regex");
    ASSERT_NAME(match_scheme(r, "http", "x.db.internal", "GET", "/a"), NULL);
    ASSERT_NAME(match_scheme(r, "http", "legacy.example.com", "GET", "/a"), "host_prefix");
    /* An empty host (HTTP/1.0 without Host) is an absent one. */
    ASSERT_NAME(match_scheme(r, "http", "", "GET", "/a"), "no_host");
    /* A header list carrying a host field does not count: the request's host does. */
    struct tr_str_pair fake[] = {HDR(":authority", "api.example.com:8443"),
                                 HDR("host", "legacy.example.com")};
    struct tr_route_request req = {.host = TR_STR_LIT("other"),
                                   .path = TR_STR_LIT("/a"),
                                   .method = TR_STR_LIT("GET"),
                                   .scheme = TR_STR_LIT("http"),
                                   .headers = fake,
                                   .n_headers = 2};
    assert_null(tr_router_match(r, &req));

    ASSERT_NAME(match_scheme(r, "https", "h", "GET", "/s"), "https");
    ASSERT_NAME(match_scheme(r, "http", "h", "GET", "/s"), NULL);
    ASSERT_NAME(match_scheme(r, "HTTPS", "h", "GET", "/s"), "not_http");

    ASSERT_NAME(match_scheme(r, "http", "h", "GET", "/m"), "reads");
    ASSERT_NAME(match_scheme(r, "http", "h", "HEAD", "/m"), "reads");
    ASSERT_NAME(match_scheme(r, "http", "h", "GETS", "/m"), NULL);
    ASSERT_NAME(match_scheme(r, "http", "h", "DELETE", "/m"), "delete");
    ASSERT_NAME(match_scheme(r, "http", "h", "POST", "/m"), NULL);
    tr_router_free(r);
}

/* Query parameters: names and values as sent (no percent-decoding), the
 * first occurrence of a name, "a" alone present with an empty value. */
static void test_query_params(void **state)
{
    struct tr_query_match_cfg q_exact = {.name = "v", .kind = TR_HMATCH_EXACT, .value = "2"};
    struct tr_query_match_cfg q_empty = {.name = "flag", .kind = TR_HMATCH_EXACT, .value = ""};
    struct tr_query_match_cfg q_prefix = {.name = "user", .kind = TR_HMATCH_PREFIX, .value = "adm"};
    struct tr_query_match_cfg q_regex = {
        .name = "id", .kind = TR_HMATCH_REGEX, .value = "[0-9]{3}"};
    struct tr_query_match_cfg q_present = {.name = "debug", .kind = TR_HMATCH_PRESENT};
    struct tr_query_match_cfg q_raw = {.name = "q", .kind = TR_HMATCH_EXACT, .value = "a%20b+c"};
    struct tr_query_match_cfg q_both[] = {
        {.name = "a", .kind = TR_HMATCH_EXACT, .value = "1"},
        {.name = "b", .kind = TR_HMATCH_PRESENT},
    };
    struct tr_route_cfg routes[] = {
        {.name = "exact", .path = "/e", .query = &q_exact, .n_query = 1},
        {.name = "empty", .path = "/f", .query = &q_empty, .n_query = 1},
        {.name = "prefix", .path = "/p", .query = &q_prefix, .n_query = 1},
        {.name = "regex", .path = "/r", .query = &q_regex, .n_query = 1},
        {.name = "present", .path = "/d", .query = &q_present, .n_query = 1},
        {.name = "raw", .path = "/q", .query = &q_raw, .n_query = 1},
        {.name = "both", .path = "/b", .query = q_both, .n_query = 2},
        {.name = "fallback", .path = "/"},
    };
    struct tr_router *r = build_routes(routes, 8);
    ASSERT_NAME(match_path(r, "GET", "/e?v=2"), "exact");
    ASSERT_NAME(match_path(r, "GET", "/e?x=1&v=2&y"), "exact");
    ASSERT_NAME(match_path(r, "GET", "/e?v=20"), "fallback");
    ASSERT_NAME(match_path(r, "GET", "/e?V=2"), "fallback"); /* names are case-sensitive */
    ASSERT_NAME(match_path(r, "GET", "/e?vv=2"), "fallback");
    ASSERT_NAME(match_path(r, "GET", "/e"), "fallback");
    ASSERT_NAME(match_path(r, "GET", "/e?"), "fallback");
    /* The first occurrence counts. */
    ASSERT_NAME(match_path(r, "GET", "/e?v=1&v=2"), "fallback");
    ASSERT_NAME(match_path(r, "GET", "/e?v=2&v=1"), "exact");
    /* Empty parameters are skipped; the first '=' ends the name. */
    ASSERT_NAME(match_path(r, "GET", "/e?&&v=2&"), "exact");
    ASSERT_NAME(match_path(r, "GET", "/e?v==2"), "fallback");

    ASSERT_NAME(match_path(r, "GET", "/f?flag"), "empty");
    ASSERT_NAME(match_path(r, "GET", "/f?flag="), "empty");
    ASSERT_NAME(match_path(r, "GET", "/f?flag=1"), "fallback");
    ASSERT_NAME(match_path(r, "GET", "/f?flagx"), "fallback");

    ASSERT_NAME(match_path(r, "GET", "/p?user=admin"), "prefix");
    ASSERT_NAME(match_path(r, "GET", "/p?user=adm"), "prefix");
    ASSERT_NAME(match_path(r, "GET", "/p?user=ad"), "fallback");
    ASSERT_NAME(match_path(r, "GET", "/p?user=xadmin"), "fallback");

    /* Regexes match the whole value. */
    ASSERT_NAME(match_path(r, "GET", "/r?id=123"), "regex");
    ASSERT_NAME(match_path(r, "GET", "/r?id=1234"), "fallback");
    ASSERT_NAME(match_path(r, "GET", "/r?id=x123"), "fallback");

    ASSERT_NAME(match_path(r, "GET", "/d?debug"), "present");
    ASSERT_NAME(match_path(r, "GET", "/d?a=1&debug=&b"), "present");
    ASSERT_NAME(match_path(r, "GET", "/d?debug=anything"), "present");
    ASSERT_NAME(match_path(r, "GET", "/d?debugx=1&xdebug=1"), "fallback");
    ASSERT_NAME(match_path(r, "GET", "/d"), "fallback");

    /* As sent: a percent-encoded or '+' value is not decoded. */
    ASSERT_NAME(match_path(r, "GET", "/q?q=a%20b+c"), "raw");
    ASSERT_NAME(match_path(r, "GET", "/q?q=a%20b%2Bc"), "fallback");
    ASSERT_NAME(match_path(r, "GET", "/q?q=a+b+c"), "fallback");

    ASSERT_NAME(match_path(r, "GET", "/b?b&a=1"), "both");
    ASSERT_NAME(match_path(r, "GET", "/b?a=1"), "fallback");
    ASSERT_NAME(match_path(r, "GET", "/b?b=1&a=2"), "fallback");

    /* Far more parameters than the router splits at once: the one matched
     * may come last, and the first occurrence still wins. */
    char many[4096];
    size_t o = (size_t)snprintf(many, sizeof(many), "/e?");
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(many + o, sizeof(many) - o, "p%d=%d&", i, i);
    snprintf(many + o, sizeof(many) - o, "v=2&v=3");
    ASSERT_NAME(match_path(r, "GET", many), "exact");
    snprintf(many + o, sizeof(many) - o, "v=3&v=2");
    ASSERT_NAME(match_path(r, "GET", many), "fallback");
    snprintf(many + o, sizeof(many) - o, "x=1");
    ASSERT_NAME(match_path(r, "GET", many), "fallback");
    /* ... and a first occurrence among the split ones hides a later one. */
    char early[4096];
    o = (size_t)snprintf(early, sizeof(early), "/e?v=1&");
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(early + o, sizeof(early) - o, "p%d=%d&", i, i);
    snprintf(early + o, sizeof(early) - o, "v=2");
    ASSERT_NAME(match_path(r, "GET", early), "fallback");
    tr_router_free(r);

    /* A table without query matches routes on paths with any query. */
    struct tr_route_cfg plain[] = {{.name = "x", .path_kind = TR_PATH_EXACT, .path = "/x"}};
    r = build_routes(plain, 1);
    ASSERT_NAME(match_path(r, "GET", "/x?v=2&&&=="), "x");
    tr_router_free(r);
}

static void test_hostile_regex_is_bounded(void **state)
{
    struct tr_header_match_cfg h = {
        .name = "x", .kind = TR_HMATCH_REGEX, .value = "(a+)+b", .invert = true};
    struct tr_header_match_cfg h2 = {.name = "x", .kind = TR_HMATCH_REGEX, .value = "(a|aa)+c"};
    struct tr_header_match_cfg h3 = {.name = "x", .kind = TR_HMATCH_REGEX, .value = "(?:[a-z]|-)+"};
    struct tr_route_cfg routes[] = {
        {.name = "inv", .path = "/inv", .headers = &h, .n_headers = 1},
        {.name = "alt", .path = "/alt", .headers = &h2, .n_headers = 1},
        {.name = "long", .path = "/long", .headers = &h3, .n_headers = 1},
    };
    struct tr_router *r = build_routes(routes, 3);
    /* "aaa...abca": the required 'b'/'c' is present, so PCRE2 cannot reject
     * early and backtracks exponentially before failing at the end. */
    static char val[2048];
    memset(val, 'a', sizeof(val));
    memcpy(val + sizeof(val) - 3, "bca", 3);
    struct tr_str_pair hp[] = {{TR_STR_LIT("x"), {val, sizeof(val)}}};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* The limit is hit: the matcher fails (even inverted: an undecidable
     * match must not select the route) instead of running for ages. */
    for (int i = 0; i < 20; i++) {
        ASSERT_NAME(match_full(r, "h", "GET", "/inv", hp, 1), NULL);
        ASSERT_NAME(match_full(r, "h", "GET", "/alt", hp, 1), NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs < 2.0);
    struct tr_str_pair ok[] = {HDR("x", "aaab")}, notb[] = {HDR("x", "aaac")};
    ASSERT_NAME(match_full(r, "h", "GET", "/inv", ok, 1), NULL);
    ASSERT_NAME(match_full(r, "h", "GET", "/inv", notb, 1), "inv");
    ASSERT_NAME(match_full(r, "h", "GET", "/alt", notb, 1), "alt");

    /* A legitimate group repetition over a long value still matches (needs
     * more than PCRE2's default 32 KiB JIT stack). */
    static char lv[6000];
    for (size_t i = 0; i < sizeof(lv); i++)
        lv[i] = (i % 7 == 3) ? '-' : (char)('a' + i % 26);
    struct tr_str_pair lh[] = {{TR_STR_LIT("x"), {lv, sizeof(lv)}}};
    ASSERT_NAME(match_full(r, "h", "GET", "/long", lh, 1), "long");
    lv[100] = '_';
    ASSERT_NAME(match_full(r, "h", "GET", "/long", lh, 1), NULL);
    tr_router_free(r);
}

struct thread_arg {
    const struct tr_router *r;
    int ok;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    struct tr_str_pair h1[] = {HDR("x-id", "abc123")};
    a->ok = 1;
    for (int i = 0; i < 2000; i++) {
        const char *g = match_full(a->r, "h", "GET", (i & 1) ? "/users/7" : "/users/x", h1, 1);
        if ((i & 1) ? (g == NULL || strcmp(g, "user") != 0) : g != NULL)
            a->ok = 0;
    }
    return NULL;
}

static void test_concurrent_match(void **state)
{
    struct tr_header_match_cfg h = {
        .name = "x-id", .kind = TR_HMATCH_REGEX, .value = "[a-z]+[0-9]+"};
    struct tr_route_cfg routes[] = {
        {.name = "user",
         .path_kind = TR_PATH_REGEX,
         .path = "/users/[0-9]+",
         .headers = &h,
         .n_headers = 1},
    };
    struct tr_router *r = build_routes(routes, 1);
    struct thread_arg args[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (struct thread_arg){.r = r};
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].ok, 1);
    }
    tr_router_free(r);
}

/* ---- weighted clusters -------------------------------------------------- */

static uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void test_pick_cluster(void **state)
{
    struct tr_weighted_cluster_cfg wc[] = {
        {.cluster = 2, .weight = 90},
        {.cluster = 3, .weight = 0},
        {.cluster = 1, .weight = 10},
    };
    struct tr_route_cfg route = {
        .name = "w", .path = "/", .clusters = wc, .n_clusters = 3, .total_weight = 100};
    int counts[4] = {0};
    uint32_t seed = 0x12345678u;
    for (int i = 0; i < 10000; i++) {
        int c = tr_route_pick_cluster(&route, xorshift32(&seed));
        assert_true(c >= 0 && c < 4);
        counts[c]++;
    }
    assert_int_equal(counts[3], 0);
    assert_int_equal(counts[0], 0);
    assert_true(counts[2] >= 8900 && counts[2] <= 9100);
    assert_true(counts[1] >= 900 && counts[1] <= 1100);

    /* Exact boundaries of the cumulative ranges. */
    assert_int_equal(tr_route_pick_cluster(&route, 0), 2);
    assert_int_equal(tr_route_pick_cluster(&route, 89), 2);
    assert_int_equal(tr_route_pick_cluster(&route, 90), 1);
    assert_int_equal(tr_route_pick_cluster(&route, 99), 1);
    assert_int_equal(tr_route_pick_cluster(&route, 100), 2);
    assert_int_equal(tr_route_pick_cluster(&route, UINT32_MAX), UINT32_MAX % 100 < 90 ? 2 : 1);

    /* tr_route_pick names the entry (for its header edits), not the cluster. */
    assert_int_equal(tr_route_pick(&route, 0), 0);
    assert_int_equal(tr_route_pick(&route, 90), 2);
    assert_int_equal(tr_route_pick(&route, 199), 2);
    assert_int_equal(tr_route_pick(NULL, 1), -1);

    struct tr_weighted_cluster_cfg one = {.cluster = 3, .weight = 1};
    struct tr_route_cfg single = {
        .name = "s", .path = "/", .clusters = &one, .n_clusters = 1, .total_weight = 1};
    assert_int_equal(tr_route_pick_cluster(&single, 12345), 3);

    struct tr_route_cfg none = {.name = "d", .path = "/", .direct_status = 404};
    assert_int_equal(tr_route_pick_cluster(&none, 7), -1);
    struct tr_weighted_cluster_cfg zero = {.cluster = 0, .weight = 0};
    struct tr_route_cfg zeros = {.name = "z", .path = "/", .clusters = &zero, .n_clusters = 1};
    assert_int_equal(tr_route_pick_cluster(&zeros, 7), -1);
    assert_int_equal(tr_route_pick_cluster(NULL, 7), -1);

    /* Weights whose sum exceeds 32 bits do not overflow. */
    struct tr_weighted_cluster_cfg big[] = {{.cluster = 0, .weight = UINT32_MAX},
                                            {.cluster = 1, .weight = UINT32_MAX}};
    struct tr_route_cfg bigr = {.name = "b", .path = "/", .clusters = big, .n_clusters = 2};
    assert_int_equal(tr_route_pick_cluster(&bigr, UINT32_MAX - 1), 0);
}

/* The pick itself, over a bare array (a TCP listener's tcp_clusters): the
 * same cumulative ranges as a route's; no weight left is -1. */
static void test_weighted_pick(void **state)
{
    (void)state;
    struct tr_weighted_cluster_cfg wc[] = {
        {.cluster = 5, .weight = 80},
        {.cluster = 6, .weight = 0},
        {.cluster = 7, .weight = 20},
    };
    int counts[3] = {0};
    for (uint32_t rnd = 0; rnd < 1000; rnd++) {
        int i = tr_weighted_pick(wc, 3, rnd);
        assert_true(i >= 0 && i < 3);
        counts[i]++;
    }
    /* 1000 consecutive numbers cover 10 whole cycles of the total, 100. */
    assert_int_equal(counts[0], 800);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 200);
    assert_int_equal(tr_weighted_pick(wc, 3, 79), 0);
    assert_int_equal(tr_weighted_pick(wc, 3, 80), 2);
    assert_int_equal(tr_weighted_pick(wc, 1, 12345), 0);
    assert_int_equal(tr_weighted_pick(wc, 0, 1), -1);
    assert_int_equal(tr_weighted_pick(&wc[1], 1, 1), -1);
    /* A route picks through it: the same entry for the same number. */
    struct tr_route_cfg route = {.name = "w", .path = "/", .clusters = wc, .n_clusters = 3};
    for (uint32_t rnd = 0; rnd < 300; rnd += 7)
        assert_int_equal(tr_route_pick(&route, rnd), tr_weighted_pick(wc, 3, rnd));
}

/* The upstream path: prefix routes swap the matched prefix, exact and regex
 * routes the whole path (the query stays); slices only, so any length. */
static void rewritten(const struct tr_route_cfg *r, const char *path, const char *want)
{
    struct tr_path_rewrite rw = tr_route_rewrite_path(r, tr_str_from(path, strlen(path)));
    char got[20000];
    assert_true(rw.head.len + rw.tail.len < sizeof(got));
    memcpy(got, rw.head.p, rw.head.len);
    memcpy(got + rw.head.len, rw.tail.p, rw.tail.len);
    got[rw.head.len + rw.tail.len] = '\0';
    assert_string_equal(got, want);
}

static void test_rewrite_path(void **state)
{
    (void)state;
    struct tr_route_cfg none = {.path_kind = TR_PATH_PREFIX, .path = "/api"};
    rewritten(&none, "/api/x?q=1", "/api/x?q=1");
    struct tr_route_cfg prefix = {
        .path_kind = TR_PATH_PREFIX, .path = "/api/", .prefix_rewrite = "/v2/"};
    rewritten(&prefix, "/api/x?q=1", "/v2/x?q=1");
    rewritten(&prefix, "/api/", "/v2/");
    struct tr_route_cfg icase = {.path_kind = TR_PATH_PREFIX,
                                 .path = "/api/",
                                 .path_ignore_case = true,
                                 .prefix_rewrite = "/"};
    rewritten(&icase, "/API/x", "/x");
    struct tr_route_cfg exact = {
        .path_kind = TR_PATH_EXACT, .path = "/old", .prefix_rewrite = "/new/place"};
    rewritten(&exact, "/old", "/new/place");
    rewritten(&exact, "/old?a=b&c", "/new/place?a=b&c");
    struct tr_route_cfg regex = {
        .path_kind = TR_PATH_REGEX, .path = "/u/[0-9]+", .prefix_rewrite = "/user"};
    rewritten(&regex, "/u/42", "/user");
    rewritten(&regex, "/u/42?x", "/user?x");
    /* Long paths are rewritten too (no fixed buffer). */
    static char longp[16384], want[16384];
    memset(longp, 'a', sizeof(longp) - 1);
    memcpy(longp, "/api/", 5);
    snprintf(want, sizeof(want), "/v2/%s", longp + 5);
    rewritten(&prefix, longp, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vhost_precedence),
        cmocka_unit_test(test_vhost_ports_and_empty_host),
        cmocka_unit_test(test_vhost_many_exact),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_route_order_first_match_wins),
        cmocka_unit_test(test_path_kinds),
        cmocka_unit_test(test_ignore_case),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_header_matchers),
        cmocka_unit_test(test_pseudo_header_matchers),
        cmocka_unit_test(test_query_params),
        cmocka_unit_test(test_hostile_regex_is_bounded),
        cmocka_unit_test(test_concurrent_match),
        cmocka_unit_test(test_pick_cluster),
        cmocka_unit_test(test_weighted_pick),
        cmocka_unit_test(test_rewrite_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
