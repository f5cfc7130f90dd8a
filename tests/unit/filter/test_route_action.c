/* Unit tests for filter/route_action.c: Locations, fault draws, CORS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "filter/route_action.h"

/* ---- redirect ---- */

static char *location(const struct tr_route_cfg *r, const char *scheme, const char *authority,
                      const char *path)
{
    struct tr_redirect_request rq = {
        tr_str_from(scheme, strlen(scheme)),
        tr_str_from(authority, strlen(authority)),
        tr_str_from(path, strlen(path)),
    };
    struct tr_location loc;
    tr_redirect_location(r, &rq, &loc);
    char *out = calloc(1, loc.len + 1);
    tr_location_write(&loc, out);
    assert_int_equal(strlen(out), loc.len);
    return out;
}

#define ASSERT_LOCATION(r, scheme, authority, path, want)                                          \
    do {                                                                                           \
        char *got_ = location((r), (scheme), (authority), (path));                                 \
        assert_string_equal(got_, (want));                                                         \
        free(got_);                                                                                \
    } while (0)

static void route_with(struct tr_route_cfg *r, struct tr_redirect_cfg *rd)
{
    memset(r, 0, sizeof(*r));
    r->path_kind = TR_PATH_PREFIX;
    r->path = "/old/";
    r->redirect = rd;
    memset(rd, 0, sizeof(*rd));
    rd->code = 301;
}

static void test_location_defaults_keep_the_request(void **state)
{
    (void)state;
    struct tr_route_cfg r;
    struct tr_redirect_cfg rd;
    route_with(&r, &rd);
    /* Nothing set: the same URL (scheme, authority with its port, path, query). */
    ASSERT_LOCATION(&r, "http", "a.example:8080", "/old/x?q=1", "http://a.example:8080/old/x?q=1");
    ASSERT_LOCATION(&r, "https", "[::1]:8443", "/old/", "https://[::1]:8443/old/");
    ASSERT_LOCATION(&r, "http", "[::1]", "/old/", "http://[::1]/old/");
    /* "OPTIONS *" becomes an absolute path, as in Envoy. */
    ASSERT_LOCATION(&r, "http", "a", "*", "http://a/*");
    /* HTTP/1.0 without Host: a relative reference. */
    ASSERT_LOCATION(&r, "http", "", "/old/x", "/old/x");
}

static void test_location_scheme_and_port(void **state)
{
    (void)state;
    struct tr_route_cfg r;
    struct tr_redirect_cfg rd;
    route_with(&r, &rd);
    rd.scheme = "https";
    /* The scheme changes: the old scheme's default port goes, another stays. */
    ASSERT_LOCATION(&r, "http", "a.example:80", "/old/x", "https://a.example/old/x");
    ASSERT_LOCATION(&r, "http", "a.example:8080", "/old/x", "https://a.example:8080/old/x");
    ASSERT_LOCATION(&r, "https", "a.example:443", "/old/x", "https://a.example:443/old/x");
    /* port replaces the request's; the new scheme's default is left out
     * (istiod's "Do not put explicit :80 or :443"). */
    rd.port = 8443;
    ASSERT_LOCATION(&r, "http", "a.example:8080", "/old/x", "https://a.example:8443/old/x");
    rd.port = 443;
    ASSERT_LOCATION(&r, "http", "a.example:8080", "/old/x", "https://a.example/old/x");
    rd.port = 80;
    ASSERT_LOCATION(&r, "http", "a.example", "/old/x", "https://a.example:80/old/x");
    rd.port = 0;
    /* port_from protocol_default: none, whatever the request had. */
    rd.port_from = TR_REDIRECT_PORT_PROTOCOL_DEFAULT;
    ASSERT_LOCATION(&r, "http", "a.example:8080", "/old/x", "https://a.example/old/x");
    /* port_from request: the request's port, else its scheme's default;
     * left out when it is the new scheme's default. */
    rd.port_from = TR_REDIRECT_PORT_REQUEST;
    ASSERT_LOCATION(&r, "http", "a.example:8080", "/old/x", "https://a.example:8080/old/x");
    ASSERT_LOCATION(&r, "http", "a.example", "/old/x", "https://a.example:80/old/x");
    ASSERT_LOCATION(&r, "https", "[fd00::1]", "/old/x", "https://[fd00::1]/old/x");
    ASSERT_LOCATION(&r, "http", "a.example:443", "/old/x", "https://a.example/old/x");
    rd.scheme = NULL;
    ASSERT_LOCATION(&r, "http", "a.example:80", "/old/x", "http://a.example/old/x");
    ASSERT_LOCATION(&r, "http", "a.example:65535", "/old/x", "http://a.example:65535/old/x");
}

static void test_location_host(void **state)
{
    (void)state;
    struct tr_route_cfg r;
    struct tr_redirect_cfg rd;
    route_with(&r, &rd);
    rd.host = "b.example";
    /* A new host drops the request's port unless one is asked for. */
    ASSERT_LOCATION(&r, "http", "a.example:8080", "/old/x", "http://b.example/old/x");
    rd.port_from = TR_REDIRECT_PORT_REQUEST;
    ASSERT_LOCATION(&r, "http", "a.example:8080", "/old/x", "http://b.example:8080/old/x");
    rd.port_from = TR_REDIRECT_PORT_KEEP;
    rd.port = 9000;
    ASSERT_LOCATION(&r, "http", "a.example:8080", "/old/x", "http://b.example:9000/old/x");
    /* Without Host, a configured host still makes it absolute. */
    ASSERT_LOCATION(&r, "http", "", "/old/x", "http://b.example:9000/old/x");
}

static void test_location_path_and_prefix(void **state)
{
    (void)state;
    struct tr_route_cfg r;
    struct tr_redirect_cfg rd;
    route_with(&r, &rd);
    rd.path = "/new";
    /* path replaces the whole path; the query stays... */
    ASSERT_LOCATION(&r, "http", "a", "/old/x/y?q=1&r=2", "http://a/new?q=1&r=2");
    ASSERT_LOCATION(&r, "http", "a", "/old/x", "http://a/new");
    /* ...unless the path brings its own. */
    rd.path = "/new?from=old";
    ASSERT_LOCATION(&r, "http", "a", "/old/x?q=1", "http://a/new?from=old");
    rd.path = NULL;
    /* prefix replaces the matched prefix (Envoy's prefix_rewrite). */
    rd.prefix = "/v2/";
    ASSERT_LOCATION(&r, "http", "a", "/old/x/y?q=1", "http://a/v2/x/y?q=1");
    ASSERT_LOCATION(&r, "http", "a", "/old/", "http://a/v2/");
    r.path = "/old";
    rd.prefix = "/new";
    ASSERT_LOCATION(&r, "http", "a", "/old/x", "http://a/new/x");
    /* Case-insensitive prefix routes match by length. */
    ASSERT_LOCATION(&r, "http", "a", "/OLD/x", "http://a/new/x");
}

/* A long path is never cut: the Location is slices, not a fixed buffer. */
static void test_location_long_path(void **state)
{
    (void)state;
    struct tr_route_cfg r;
    struct tr_redirect_cfg rd;
    route_with(&r, &rd);
    rd.scheme = "https";
    size_t n = 100000;
    char *path = malloc(n + 1);
    memcpy(path, "/old/", 5);
    memset(path + 5, 'p', n - 5);
    path[n] = '\0';
    char *got = location(&r, "http", "a", path);
    assert_int_equal(strlen(got), strlen("https://a") + n);
    assert_memory_equal(got + strlen("https://a"), path, n);
    free(got);
    free(path);
}

/* ---- fault ---- */

/* P(hit) = ceil(per_million * 2^32 / 10^6) / 2^32: the threshold on rnd
 * is exact, so a share is exact to 2^-32. */
static void test_share_threshold(void **state)
{
    (void)state;
    const uint32_t shares[] = {0, 1, 7, 1000, 125000, 500000, 999999, TR_PER_MILLION};
    for (size_t i = 0; i < sizeof(shares) / sizeof(shares[0]); i++) {
        uint64_t t = ((uint64_t)shares[i] << 32) / TR_PER_MILLION;
        if ((t * TR_PER_MILLION) >> 32 < shares[i])
            t++; /* ceil */
        if (t > 0)
            assert_true(tr_share_hit(shares[i], (uint32_t)(t - 1)));
        if (t <= UINT32_MAX)
            assert_false(tr_share_hit(shares[i], (uint32_t)t));
    }
    assert_false(tr_share_hit(0, 0));
    assert_true(tr_share_hit(TR_PER_MILLION, UINT32_MAX));
    assert_true(tr_share_hit(1, 0));
    assert_false(tr_share_hit(1, 4295));
}

/* Over the worker's kind of PRNG (xorshift64*), rates come out at the
 * configured share: 10^6 draws, within 5 standard deviations. */
static uint32_t xorshift(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (uint32_t)((*s * 2685821657736338717ull) >> 32);
}

static void test_fault_roll_rates(void **state)
{
    (void)state;
    struct tr_fault_delay_cfg delay = {.fixed_ms = 250, .per_million = 125000}; /* 12.5% */
    struct tr_fault_abort_cfg abort = {.status = 503, .per_million = 1000};     /* 0.1% */
    struct tr_fault_cfg f = {.delay = &delay, .abort = &abort};
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    const int n = 1000000;
    int delays = 0, aborts = 0, both = 0;
    for (int i = 0; i < n; i++) {
        struct tr_fault_draw d;
        tr_fault_roll(&f, xorshift(&seed), xorshift(&seed), &d);
        assert_true(d.delay_ms == 0 || d.delay_ms == 250);
        delays += d.delay_ms != 0;
        aborts += d.abort;
        both += d.delay_ms != 0 && d.abort;
    }
    /* sd = sqrt(n p (1-p)): 330.7 for 12.5%, 31.6 for 0.1%, 11.2 for both. */
    assert_in_range(delays, 125000 - 1654, 125000 + 1654);
    assert_in_range(aborts, 1000 - 158, 1000 + 158);
    assert_in_range(both, 125 - 56, 125 + 56); /* independent events */
}

static void test_fault_roll_parts(void **state)
{
    (void)state;
    struct tr_fault_delay_cfg delay = {.fixed_ms = 10, .per_million = TR_PER_MILLION};
    struct tr_fault_abort_cfg abort = {.grpc = true, .grpc_status = 14, .per_million = 0};
    struct tr_fault_cfg only_delay = {.delay = &delay};
    struct tr_fault_cfg never_abort = {.abort = &abort};
    struct tr_fault_draw d;
    tr_fault_roll(&only_delay, UINT32_MAX, 0, &d);
    assert_int_equal(d.delay_ms, 10);
    assert_false(d.abort);
    tr_fault_roll(&never_abort, 0, 0, &d);
    assert_int_equal(d.delay_ms, 0);
    assert_false(d.abort);
    abort.per_million = TR_PER_MILLION;
    tr_fault_roll(&never_abort, 0, UINT32_MAX, &d);
    assert_true(d.abort);
}

/* ---- CORS ---- */

static struct tr_cors *cors_build(struct tr_cors_cfg *c, struct tr_cors_origin_cfg *o, size_t n)
{
    c->origins = o;
    c->n_origins = n;
    char *err = NULL;
    struct tr_cors *p = tr_cors_build(c, &err);
    assert_null(err);
    assert_non_null(p);
    return p;
}

static struct tr_cors_request req(const char *method, const char *origin, const char *acrm,
                                  const char *acrh)
{
    return (struct tr_cors_request){
        tr_str_from(method, strlen(method)),
        tr_str_from(origin, strlen(origin)),
        tr_str_from(acrm, strlen(acrm)),
        tr_str_from(acrh, strlen(acrh)),
    };
}

static enum tr_cors_verdict check(const struct tr_cors *p, const char *method, const char *origin,
                                  const char *acrm)
{
    struct tr_cors_request rq = req(method, origin, acrm, "");
    return tr_cors_check(p, &rq);
}

static void test_cors_origins(void **state)
{
    (void)state;
    struct tr_cors_origin_cfg o[] = {
        {.kind = TR_ORIGIN_EXACT, .value = "https://a.example"},
        {.kind = TR_ORIGIN_PREFIX, .value = "http://localhost:"},
        {.kind = TR_ORIGIN_REGEX, .value = "https://[a-z]+\\.b\\.example"},
    };
    struct tr_cors_cfg c = {0};
    struct tr_cors *p = cors_build(&c, o, 3);
    assert_int_equal(check(p, "GET", "https://a.example", ""), TR_CORS_ALLOWED);
    assert_int_equal(check(p, "GET", "https://a.example.evil", ""), TR_CORS_NONE);
    assert_int_equal(check(p, "GET", "HTTPS://A.EXAMPLE", ""), TR_CORS_NONE); /* exact is exact */
    assert_int_equal(check(p, "GET", "http://localhost:3000", ""), TR_CORS_ALLOWED);
    assert_int_equal(check(p, "GET", "https://x.b.example", ""), TR_CORS_ALLOWED);
    /* A regex matches the whole origin, never a part of it. */
    assert_int_equal(check(p, "GET", "https://x.b.example.evil", ""), TR_CORS_NONE);
    assert_int_equal(check(p, "GET", "evil https://x.b.example", ""), TR_CORS_NONE);
    /* No Origin: not a CORS request. */
    assert_int_equal(check(p, "GET", "", ""), TR_CORS_NONE);
    /* An origin longer than any serialized origin matches nothing. */
    char big[TR_CORS_ORIGIN_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "http://localhost:", 17);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(check(p, "GET", big, ""), TR_CORS_NONE);
    big[TR_CORS_ORIGIN_MAX] = '\0';
    assert_int_equal(check(p, "GET", big, ""), TR_CORS_ALLOWED);
    tr_cors_free(p);
}

/* An entry that matches "*" allows every origin (Envoy's isOriginAllowed). */
static void test_cors_star(void **state)
{
    (void)state;
    struct tr_cors_origin_cfg exact[] = {{.kind = TR_ORIGIN_EXACT, .value = "*"}};
    struct tr_cors_origin_cfg regex[] = {{.kind = TR_ORIGIN_REGEX, .value = ".*"}};
    struct tr_cors_cfg c = {0};
    struct tr_cors *p = cors_build(&c, exact, 1);
    assert_int_equal(check(p, "GET", "https://any.example", ""), TR_CORS_ALLOWED);
    tr_cors_free(p);
    p = cors_build(&c, regex, 1);
    assert_int_equal(check(p, "POST", "null", ""), TR_CORS_ALLOWED);
    tr_cors_free(p);
}

static void test_cors_preflight(void **state)
{
    (void)state;
    struct tr_cors_origin_cfg o[] = {{.kind = TR_ORIGIN_EXACT, .value = "https://a.example"}};
    const char *methods[] = {"GET", "POST"};
    const char *headers[] = {"x-a", "X-B"};
    struct tr_cors_cfg c = {
        .allow_methods = methods,
        .n_allow_methods = 2,
        .allow_headers = headers,
        .n_allow_headers = 2,
        .has_max_age = true,
        .max_age_s = 600,
        .allow_credentials = true,
    };
    struct tr_cors *p = cors_build(&c, o, 1);
    /* A preflight is OPTIONS with an Origin and Access-Control-Request-Method. */
    assert_int_equal(check(p, "OPTIONS", "https://a.example", "PUT"), TR_CORS_PREFLIGHT);
    assert_int_equal(check(p, "OPTIONS", "https://a.example", ""), TR_CORS_ALLOWED);
    assert_int_equal(check(p, "GET", "https://a.example", "PUT"), TR_CORS_ALLOWED);
    /* Another origin's preflight goes on (unmatched_preflights forward). */
    assert_int_equal(check(p, "OPTIONS", "https://z.example", "PUT"), TR_CORS_NONE);

    struct tr_cors_request rq = req("OPTIONS", "https://a.example", "PUT", "x-a");
    struct tr_h2_header f[TR_CORS_PREFLIGHT_FIELDS];
    size_t n = tr_cors_preflight_fields(p, &rq, TR_CORS_PREFLIGHT, f);
    assert_int_equal(n, 5);
    const char *want[][2] = {
        {"access-control-allow-origin", "https://a.example"},
        {"access-control-allow-credentials", "true"},
        {"access-control-allow-methods", "GET,POST"},
        {"access-control-allow-headers", "x-a,X-B"},
        {"access-control-max-age", "600"},
    };
    for (size_t i = 0; i < n; i++) {
        assert_true(tr_str_eq(f[i].name, want[i][0], strlen(want[i][0])));
        assert_true(tr_str_eq(f[i].value, want[i][1], strlen(want[i][1])));
    }
    tr_cors_free(p);

    /* ignore: another origin's preflight is answered, without Allow-Origin;
     * "*" echoes what was asked; no max_age, no credentials: not sent. */
    const char *star[] = {"*"};
    struct tr_cors_cfg c2 = {
        .allow_methods = star,
        .n_allow_methods = 1,
        .allow_headers = star,
        .n_allow_headers = 1,
        .unmatched_preflights = TR_CORS_UNMATCHED_IGNORE,
    };
    p = cors_build(&c2, o, 1);
    assert_int_equal(check(p, "OPTIONS", "https://z.example", "PUT"), TR_CORS_PREFLIGHT_REFUSED);
    rq = req("OPTIONS", "https://z.example", "DELETE", "x-c, x-d");
    n = tr_cors_preflight_fields(p, &rq, TR_CORS_PREFLIGHT_REFUSED, f);
    assert_int_equal(n, 2);
    assert_true(TR_STR_EQ_LIT(f[0].name, "access-control-allow-methods"));
    assert_true(TR_STR_EQ_LIT(f[0].value, "DELETE"));
    assert_true(TR_STR_EQ_LIT(f[1].name, "access-control-allow-headers"));
    assert_true(TR_STR_EQ_LIT(f[1].value, "x-c, x-d"));
    /* "*" with nothing asked: no empty field. */
    rq = req("OPTIONS", "https://a.example", "GET", "");
    n = tr_cors_preflight_fields(p, &rq, TR_CORS_PREFLIGHT, f);
    assert_int_equal(n, 2);
    assert_true(TR_STR_EQ_LIT(f[0].value, "https://a.example"));
    assert_true(TR_STR_EQ_LIT(f[1].value, "GET"));
    tr_cors_free(p);
}

static void test_cors_response_fields(void **state)
{
    (void)state;
    struct tr_cors_origin_cfg o[] = {{.kind = TR_ORIGIN_PREFIX, .value = "https://"}};
    const char *expose[] = {"x-total", "x-page"};
    struct tr_cors_cfg c = {.expose_headers = expose, .n_expose_headers = 2};
    struct tr_cors *p = cors_build(&c, o, 1);
    struct tr_cors_echo e = {0};
    struct tr_h2_header f[TR_CORS_RESPONSE_FIELDS];
    assert_int_equal(tr_cors_response_fields(&e, f), 0);
    char origin[] = "https://a.example";
    tr_cors_echo_set(&e, p, tr_str_from(origin, strlen(origin)));
    origin[8] = 'X'; /* the request's bytes go; the echo keeps its copy */
    size_t n = tr_cors_response_fields(&e, f);
    assert_int_equal(n, 2);
    assert_true(TR_STR_EQ_LIT(f[0].name, "access-control-allow-origin"));
    assert_true(TR_STR_EQ_LIT(f[0].value, "https://a.example"));
    assert_true(TR_STR_EQ_LIT(f[1].name, "access-control-expose-headers"));
    assert_true(TR_STR_EQ_LIT(f[1].value, "x-total,x-page"));
    assert_true(tr_field_named_in(TR_STR_LIT("Access-Control-Allow-Origin"), f, n));
    assert_false(tr_field_named_in(TR_STR_LIT("access-control-allow-credentials"), f, n));
    tr_cors_free(p);
}

static void test_cors_bad_regex(void **state)
{
    (void)state;
    struct tr_cors_origin_cfg o[] = {
        {.kind = TR_ORIGIN_REGEX, .value = "(", .loc = {.file = "t.yaml", .line = 3, .col = 9}}};
    struct tr_cors_cfg c = {.origins = o, .n_origins = 1};
    char *err = NULL;
    assert_null(tr_cors_build(&c, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "t.yaml:3:9: "));
    assert_non_null(strstr(err, "invalid regex at offset 1"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_location_defaults_keep_the_request),
        cmocka_unit_test(test_location_scheme_and_port),
        cmocka_unit_test(test_location_host),
        cmocka_unit_test(test_location_path_and_prefix),
        cmocka_unit_test(test_location_long_path),
        cmocka_unit_test(test_share_threshold),
        cmocka_unit_test(test_fault_roll_rates),
        cmocka_unit_test(test_fault_roll_parts),
        cmocka_unit_test(test_cors_origins),
        cmocka_unit_test(test_cors_star),
        cmocka_unit_test(test_cors_preflight),
        cmocka_unit_test(test_cors_response_fields),
        cmocka_unit_test(test_cors_bad_regex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
