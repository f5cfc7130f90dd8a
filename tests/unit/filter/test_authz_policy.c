/* Unit tests for filter/authz.c policies: Istio's evaluation order and
 * matching, from the AuthorizationPolicy reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "filter/authz.h"
#include "router/router.h"

#define L(...)                                                                                     \
    (const char *[])                                                                               \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }
#define N(...)        (sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *))
#define F(field, ...) .field = L(__VA_ARGS__), .n_##field = N(__VA_ARGS__)

#define WEB   "spiffe://cluster.local/ns/default/sa/web"
#define FRONT "spiffe://cluster.local/ns/shop/sa/frontend"
#define OPS   "spiffe://cluster.local/ns/ops/sa/admin"

static struct tr_authz *build(struct tr_authz_policy_cfg *p, size_t n)
{
    struct tr_authz_cfg cfg = {.policies = p, .n_policies = n};
    char *err = NULL;
    struct tr_authz *a = tr_authz_build(&cfg, &err);
    if (a == NULL)
        fail_msg("build failed: %s", err ? err : "(no message)");
    return a;
}

static struct tr_authz_request http(const char *principal, const char *method, const char *path)
{
    struct tr_authz_request rq = {.principal = principal, .http = true};
    rq.method = tr_str_from(method, strlen(method));
    rq.path = tr_str_from(path, strlen(path));
    rq.host = TR_STR_LIT("shop.example.com:8080");
    rq.dest_port = 8080;
    tr_ip_parse("127.0.0.1", &rq.source_ip);
    rq.remote_ip = rq.source_ip;
    tr_ip_parse("127.0.0.2", &rq.dest_ip);
    return rq;
}

static struct tr_authz_result decide(const struct tr_authz *a, const struct tr_authz_request *rq)
{
    struct tr_authz_result r;
    tr_authz_decide(a, rq, &r);
    return r;
}

#define ALLOW TR_AUTHZ_VERDICT_ALLOW
#define DENY  TR_AUTHZ_VERDICT_DENY

/* The seed's recipe: an allow-nothing policy plus one admitting frontend. */
static void test_allow_nothing_plus_allow(void **state)
{
    struct tr_authz_source_cfg src = {F(principals, "cluster.local/ns/shop/sa/frontend")};
    struct tr_authz_policy_rule_cfg rule = {.from = &src, .n_from = 1};
    struct tr_authz_policy_cfg p[] = {
        {.name = "shop/deny-all", .action = TR_AUTHZ_ALLOW},
        {.name = "shop/allow-frontend", .action = TR_AUTHZ_ALLOW, .rules = &rule, .n_rules = 1},
    };
    struct tr_authz *a = build(p, 2);
    struct tr_authz_request rq = http(FRONT, "GET", "/");
    struct tr_authz_result r = decide(a, &rq);
    assert_int_equal(r.verdict, ALLOW);
    assert_int_equal(r.policy, 1);
    assert_int_equal(r.rule, 0);
    assert_string_equal(tr_authz_policy_name(a, r.policy), "shop/allow-frontend");
    rq = http(WEB, "GET", "/");
    r = decide(a, &rq);
    assert_int_equal(r.verdict, DENY);
    assert_int_equal(r.policy, -1);
    assert_int_equal(r.reason, TR_AZR_NO_ALLOW_MATCHED);
    tr_authz_free(a);

    /* spec: {} alone: default deny, even for plaintext and TCP. */
    a = build(p, 1);
    rq = http(NULL, "GET", "/");
    assert_int_equal(decide(a, &rq).verdict, DENY);
    rq.http = false;
    assert_int_equal(decide(a, &rq).verdict, DENY);
    tr_authz_free(a);
}

static void test_empty_rule_matches_all_and_deny_first(void **state)
{
    struct tr_authz_policy_rule_cfg any = {0};
    struct tr_authz_operation_cfg op = {F(paths, "/admin/{**}")};
    struct tr_authz_policy_rule_cfg admin = {.to = &op, .n_to = 1};
    struct tr_authz_policy_cfg p[] = {
        {.name = "ns/allow-all", .action = TR_AUTHZ_ALLOW, .rules = &any, .n_rules = 1},
        {.name = "ns/deny-admin", .action = TR_AUTHZ_DENY, .rules = &admin, .n_rules = 1},
        {.name = "ns/audit", .action = TR_AUTHZ_AUDIT, .rules = &any, .n_rules = 1},
    };
    struct tr_authz *a = build(p, 3);
    struct tr_authz_request rq = http(NULL, "GET", "/x");
    struct tr_authz_result r = decide(a, &rq);
    assert_int_equal(r.verdict, ALLOW);
    assert_int_equal(r.policy, 0);
    assert_int_equal(r.audit_policy, 2); /* AUDIT marks, never decides */
    rq = http(WEB, "GET", "/admin/users/1");
    r = decide(a, &rq);
    assert_int_equal(r.verdict, DENY);
    assert_int_equal(r.policy, 1);
    assert_int_equal(r.reason, TR_AZR_DENY_MATCHED);
    rq = http(WEB, "GET", "/admin/");
    assert_int_equal(decide(a, &rq).verdict, DENY);
    rq = http(WEB, "GET", "/admin"); /* {**} follows a "/" */
    assert_int_equal(decide(a, &rq).verdict, ALLOW);
    rq = http(WEB, "GET", "/admin/x?y=1"); /* the query never hides a path */
    assert_int_equal(decide(a, &rq).verdict, DENY);
    tr_authz_free(a);
}

/* HTTP-only fields on TCP: a DENY rule leaves them out (wider), an ALLOW
 * rule cannot match. */
static void test_tcp_fail_closed(void **state)
{
    struct tr_authz_operation_cfg get = {F(methods, "GET")};
    struct tr_authz_policy_rule_cfg rule = {.to = &get, .n_to = 1};
    struct tr_authz_policy_cfg deny = {
        .name = "d", .action = TR_AUTHZ_DENY, .rules = &rule, .n_rules = 1};
    struct tr_authz *a = build(&deny, 1);
    struct tr_authz_request rq = http(WEB, "POST", "/");
    assert_int_equal(decide(a, &rq).verdict, ALLOW);
    rq.http = false;
    assert_int_equal(decide(a, &rq).verdict, DENY);
    tr_authz_free(a);

    struct tr_authz_policy_cfg allow = {
        .name = "a", .action = TR_AUTHZ_ALLOW, .rules = &rule, .n_rules = 1};
    a = build(&allow, 1);
    rq = http(WEB, "GET", "/");
    assert_int_equal(decide(a, &rq).verdict, ALLOW);
    rq.http = false;
    assert_int_equal(decide(a, &rq).verdict, DENY);
    tr_authz_free(a);

    /* Ports are known on TCP. */
    struct tr_authz_operation_cfg port = {F(ports, "5432")};
    struct tr_authz_policy_rule_cfg prule = {.to = &port, .n_to = 1};
    struct tr_authz_policy_cfg allow_port = {
        .name = "a", .action = TR_AUTHZ_ALLOW, .rules = &prule, .n_rules = 1};
    a = build(&allow_port, 1);
    rq = (struct tr_authz_request){.principal = WEB, .dest_port = 5432};
    assert_int_equal(decide(a, &rq).verdict, ALLOW);
    rq.dest_port = 5433;
    assert_int_equal(decide(a, &rq).verdict, DENY);
    tr_authz_free(a);
}

static void test_sources(void **state)
{
    struct tr_authz_source_cfg srcs[] = {
        {F(namespaces, "shop"), F(not_principals, "*/sa/legacy")},
        {F(ip_blocks, "10.0.0.0/8"), F(not_ip_blocks, "10.1.0.0/16")},
        {F(principals, "*"), F(not_namespaces, "ops", "kube-*")},
    };
    struct tr_authz_policy_rule_cfg r0 = {.from = &srcs[0], .n_from = 1};
    struct tr_authz_policy_rule_cfg r1 = {.from = &srcs[1], .n_from = 1};
    struct tr_authz_policy_rule_cfg r2 = {.from = &srcs[2], .n_from = 1};
    struct tr_authz_policy_cfg p[] = {
        {.name = "a", .action = TR_AUTHZ_ALLOW, .rules = &r0, .n_rules = 1},
        {.name = "b", .action = TR_AUTHZ_ALLOW, .rules = &r1, .n_rules = 1},
        {.name = "c", .action = TR_AUTHZ_ALLOW, .rules = &r2, .n_rules = 1},
    };
    struct tr_authz *a = build(p, 3);
    struct tr_authz_request rq = http(FRONT, "GET", "/");
    assert_int_equal(decide(a, &rq).policy, 0);
    rq = http("spiffe://cluster.local/ns/shop/sa/legacy", "GET", "/");
    assert_int_equal(decide(a, &rq).policy, 2); /* not_principals excludes it from a */
    rq = http(OPS, "GET", "/");
    assert_int_equal(decide(a, &rq).verdict, DENY);
    rq = http(NULL, "GET", "/");
    assert_int_equal(decide(a, &rq).verdict, DENY); /* "*" needs a verified peer */
    tr_ip_parse("10.2.3.4", &rq.source_ip);
    assert_int_equal(decide(a, &rq).policy, 1);
    tr_ip_parse("10.1.3.4", &rq.source_ip);
    assert_int_equal(decide(a, &rq).verdict, DENY);
    tr_ip_parse("::ffff:10.2.3.4", &rq.source_ip); /* mapped IPv4 is IPv4 */
    assert_int_equal(decide(a, &rq).policy, 1);
    tr_authz_free(a);
}

static void test_operations(void **state)
{
    struct tr_authz_operation_cfg ops[] = {
        {F(hosts, "shop.example.com"), F(methods, "GET", "HEAD"), F(paths, "/items/{*}", "*.css")},
        {F(not_methods, "GET"), F(paths, "/api*"), F(not_paths, "/api/private*")},
    };
    struct tr_authz_policy_rule_cfg rule = {.to = ops, .n_to = 2};
    struct tr_authz_policy_cfg p = {
        .name = "a", .action = TR_AUTHZ_ALLOW, .rules = &rule, .n_rules = 1};
    struct tr_authz *a = build(&p, 1);
    struct {
        const char *method, *path;
        enum tr_authz_verdict v;
    } cases[] = {
        {"GET", "/items/1", ALLOW},       {"GET", "/items/1/x", DENY}, {"GET", "/items/", DENY},
        {"HEAD", "/a/b.css", ALLOW},      {"PUT", "/items/1", DENY},   {"POST", "/api/x", ALLOW},
        {"POST", "/api/private/1", DENY}, {"GET", "/api/x", DENY},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tr_authz_request rq = http(WEB, cases[i].method, cases[i].path);
        if (decide(a, &rq).verdict != cases[i].v)
            fail_msg("case %zu: %s %s", i, cases[i].method, cases[i].path);
    }
    struct tr_authz_request rq = http(WEB, "GET", "/items/1");
    rq.host = TR_STR_LIT("SHOP.example.com"); /* hosts are case-insensitive */
    assert_int_equal(decide(a, &rq).verdict, ALLOW);
    rq.host = TR_STR_LIT("other.example.com");
    assert_int_equal(decide(a, &rq).verdict, DENY);
    tr_authz_free(a);
}

static size_t claim_lookup(const void *claims, const tr_str *path, size_t depth, tr_str *out,
                           size_t max)
{
    (void)claims;
    if (depth == 2 && tr_str_eq(path[0], "realm", 5) && tr_str_eq(path[1], "roles", 5)) {
        if (max >= 2) {
            out[0] = TR_STR_LIT("viewer");
            out[1] = TR_STR_LIT("admin");
        }
        return 2;
    }
    return 0;
}

static void test_conditions_and_request_auth(void **state)
{
    struct tr_authz_condition_cfg when[] = {
        {.key = "request.headers[x-tenant]", F(values, "acme*"), F(not_values, "acme-evil")},
        {.key = "request.auth.claims[realm][roles]", F(values, "admin")},
        {.key = "destination.port", F(values, "8080")},
        {.key = "source.ip", F(not_values, "192.168.0.0/16")},
    };
    struct tr_authz_source_cfg src = {F(request_principals, "https://idp/*")};
    struct tr_authz_policy_rule_cfg rule = {.from = &src, .n_from = 1, .when = when, .n_when = 4};
    struct tr_authz_policy_cfg p = {
        .name = "a", .action = TR_AUTHZ_ALLOW, .rules = &rule, .n_rules = 1};
    struct tr_authz *a = build(&p, 1);
    struct tr_str_pair h[] = {{TR_STR_LIT("X-Tenant"), TR_STR_LIT("acme-1")}};
    struct tr_request_auth au = {
        .authenticated = true, .principal = TR_STR_LIT("https://idp/alice"), .claim = claim_lookup};
    struct tr_authz_request rq = http(WEB, "GET", "/");
    rq.headers = h;
    rq.n_headers = 1;
    assert_int_equal(decide(a, &rq).verdict, DENY); /* no token */
    rq.auth = &au;
    assert_int_equal(decide(a, &rq).verdict, ALLOW);
    h[0].value = TR_STR_LIT("acme-evil");
    assert_int_equal(decide(a, &rq).verdict, DENY);
    h[0].value = TR_STR_LIT("acme-1");
    tr_ip_parse("192.168.1.1", &rq.source_ip);
    assert_int_equal(decide(a, &rq).verdict, DENY);
    tr_ip_parse("127.0.0.1", &rq.source_ip);
    au.principal = TR_STR_LIT("https://other/alice");
    assert_int_equal(decide(a, &rq).verdict, DENY);
    tr_authz_free(a);
}

static void test_build_errors(void **state)
{
    struct tr_authz_condition_cfg bad = {
        .key = "request.nope",
        F(values, "x"),
        .loc = {.file = "p.yaml", .line = 3, .col = 5, .path = "listeners[0].authorization"}};
    struct tr_authz_policy_rule_cfg rule = {.when = &bad, .n_when = 1};
    struct tr_authz_policy_cfg p = {
        .name = "a", .action = TR_AUTHZ_ALLOW, .rules = &rule, .n_rules = 1};
    struct tr_authz_cfg cfg = {.policies = &p, .n_policies = 1};
    char *err = NULL;
    assert_null(tr_authz_build(&cfg, &err));
    assert_non_null(strstr(err, "p.yaml:3:5: listeners[0].authorization: unknown condition key"));
    free(err);
    struct tr_authz_source_cfg src = {F(ip_blocks, "10.0.0.300/8")};
    rule = (struct tr_authz_policy_rule_cfg){.from = &src, .n_from = 1};
    err = NULL;
    assert_null(tr_authz_build(&cfg, &err));
    assert_non_null(strstr(err, "ip_blocks[0]: invalid IP block"));
    free(err);
}

static void test_syntax(void **state)
{
    char why[256];
    struct tr_cidr c;
    assert_true(tr_cidr_parse("0.0.0.0/0", &c, why, sizeof(why)));
    assert_false(tr_cidr_parse("10.0.0.0/33", &c, why, sizeof(why)));
    assert_false(tr_cidr_parse("10.0.0.0/08", &c, why, sizeof(why)));
    assert_true(tr_cidr_parse("::1", &c, why, sizeof(why)));
    assert_int_equal(c.bits, 128);
    assert_true(tr_az_path_check("/a/{*}/b/{**}", why, sizeof(why)));
    assert_false(tr_az_path_check("/a/{*}x", why, sizeof(why)));
    assert_false(tr_az_path_check("/{*}/{*}/{*}/{*}/{*}/{*}", why, sizeof(why)));
    assert_true(tr_az_template_match(TR_STR_LIT("/a/{*}/b"), TR_STR_LIT("/a/x/b")));
    assert_false(tr_az_template_match(TR_STR_LIT("/a/{*}/b"), TR_STR_LIT("/a//b")));
    assert_false(tr_az_template_match(TR_STR_LIT("/a/{*}/b"), TR_STR_LIT("/a/x/b/")));
    assert_true(tr_az_template_match(TR_STR_LIT("/a/{**}"), TR_STR_LIT("/a/x/y/z")));
    /* {**} may stand anywhere once (Istio's /{**}/path/template). */
    assert_true(tr_az_path_check("/{**}/path/template", why, sizeof(why)));
    assert_false(tr_az_path_check("/{**}/a/{**}", why, sizeof(why)));
    assert_true(tr_az_template_match(TR_STR_LIT("/{**}/t"), TR_STR_LIT("/a/b/t")));
    assert_true(tr_az_template_match(TR_STR_LIT("/{**}/t"), TR_STR_LIT("//t")));
    assert_false(tr_az_template_match(TR_STR_LIT("/{**}/t"), TR_STR_LIT("/t")));
    assert_false(tr_az_template_match(TR_STR_LIT("/{**}/t"), TR_STR_LIT("/a/b/u")));
    assert_true(tr_az_template_match(TR_STR_LIT("/x/{*}/{**}/y/{*}"), TR_STR_LIT("/x/1/a/b/y/2")));
    assert_false(tr_az_template_match(TR_STR_LIT("/x/{*}/{**}/y/{*}"), TR_STR_LIT("/x/1/y/2")));
    assert_true(tr_az_template_match(TR_STR_LIT("/x/{*}/{**}/y/{*}"), TR_STR_LIT("/x/1//y/2")));
    assert_true(tr_az_path_check("rule-path", why, sizeof(why))); /* Istio accepts it */
    assert_false(tr_az_path_check("", why, sizeof(why)));
    tr_str arg[TR_AZ_MAX_CLAIM_DEPTH];
    size_t n;
    assert_int_equal(tr_az_key_parse("request.auth.claims[a][b]", arg, &n, why, sizeof(why)),
                     TR_AZK_AUTH_CLAIMS);
    assert_int_equal(n, 2);
    assert_int_equal(tr_az_key_parse("request.headers[]", arg, &n, why, sizeof(why)),
                     TR_AZK_INVALID);
    assert_int_equal(tr_az_key_parse("source.ip ", arg, &n, why, sizeof(why)), TR_AZK_INVALID);
}

/* CUSTOM policies: found by tr_authz_custom (their provider), ignored by
 * tr_authz_decide (the check comes first); a listener without one says so
 * at build time. */
static void test_custom(void **state)
{
    (void)state;
    struct tr_authz_operation_cfg op = {F(paths, "/api/*")};
    struct tr_authz_policy_rule_cfg rule = {.to = &op, .n_to = 1};
    struct tr_authz_policy_cfg p[] = {
        {.name = "shop/deny-nothing", .action = TR_AUTHZ_DENY},
        {.name = "shop/ext",
         .action = TR_AUTHZ_CUSTOM,
         .provider = 3,
         .rules = &rule,
         .n_rules = 1},
    };
    struct tr_authz *a = build(p, 2);
    assert_true(tr_authz_has_custom(a));
    int pol, r;
    struct tr_authz_request rq = http(WEB, "GET", "/api/items");
    assert_int_equal(tr_authz_custom(a, &rq, &pol, &r), 3);
    assert_int_equal(pol, 1);
    assert_int_equal(r, 0);
    assert_int_equal(decide(a, &rq).verdict, ALLOW); /* CUSTOM is not DENY or ALLOW */
    rq = http(WEB, "GET", "/other");
    assert_int_equal(tr_authz_custom(a, &rq, &pol, &r), -1);
    assert_int_equal(pol, -1);
    tr_authz_free(a);
    a = build(p, 1);
    assert_false(tr_authz_has_custom(a));
    assert_false(tr_authz_has_custom(NULL));
    tr_authz_free(a);
    /* A CUSTOM policy without a provider (validate refuses it first). */
    p[1].provider = -1;
    struct tr_authz_cfg cfg = {.policies = p, .n_policies = 2};
    char *err = NULL;
    assert_null(tr_authz_build(&cfg, &err));
    assert_non_null(strstr(err, "a CUSTOM policy needs a provider"));
    free(err);
}

/* The principal index against the scan: random policy sets over a small
 * vocabulary (exact and prefix principals, "*", notPrincipals,
 * namespaces, paths, methods; ALLOW, DENY, AUDIT; rules without sources),
 * random requests (each known principal, an unknown one, plaintext; HTTP
 * and TCP): every decision, deciding policy and rule, and AUDIT match must
 * be the scan's. */
static const char *const VOCAB_PRINCIPALS[] = {"cluster.local/ns/a/sa/x", "cluster.local/ns/a/sa/y",
                                               "cluster.local/ns/b/sa/x", "cluster.local/ns/a/*",
                                               "*"};
static const char *const VOCAB_PATHS[] = {"/a", "/a/*", "/b", "*"};
static const char *const VOCAB_METHODS[] = {"GET", "POST"};
static const char *const VOCAB_NS[] = {"a", "b"};

static uint64_t rnd_state = 42;
static uint32_t rnd(uint32_t n)
{
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return (uint32_t)((rnd_state * 2685821657736338717ull) >> 33) % n;
}

/* k random picks of v (with repeats), malloc'd; *n set. */
static const char **picks(const char *const *v, uint32_t nv, uint32_t max, size_t *n,
                          uint32_t exact_only)
{
    *n = rnd(max + 1);
    if (*n == 0)
        return NULL;
    const char **out = calloc(*n, sizeof(*out));
    assert_non_null(out);
    for (size_t i = 0; i < *n; i++)
        out[i] = v[rnd(exact_only ? exact_only : nv)];
    return out;
}

static void test_index_matches_scan(void **state)
{
    (void)state;
    size_t decisions = 0, skipped_some = 0;
    for (int round = 0; round < 300; round++) {
        size_t np = 1 + rnd(12);
        struct tr_authz_policy_cfg *pols = calloc(np, sizeof(*pols));
        assert_non_null(pols);
        for (size_t i = 0; i < np; i++) {
            static const enum tr_authz_action acts[] = {TR_AUTHZ_ALLOW, TR_AUTHZ_ALLOW,
                                                        TR_AUTHZ_DENY, TR_AUTHZ_AUDIT};
            pols[i].name = "p";
            pols[i].action = acts[rnd(4)];
            pols[i].provider = -1;
            pols[i].n_rules = rnd(3);
            pols[i].rules =
                pols[i].n_rules ? calloc(pols[i].n_rules, sizeof(*pols[i].rules)) : NULL;
            for (size_t r = 0; r < pols[i].n_rules; r++) {
                struct tr_authz_policy_rule_cfg *rule = &pols[i].rules[r];
                /* mostly exact principals: the index's case */
                bool exact = rnd(3) != 0;
                rule->n_from = rnd(3);
                rule->from = rule->n_from ? calloc(rule->n_from, sizeof(*rule->from)) : NULL;
                for (size_t f = 0; f < rule->n_from; f++) {
                    struct tr_authz_source_cfg *src = &rule->from[f];
                    src->principals =
                        picks(VOCAB_PRINCIPALS, 5, 2, &src->n_principals, exact ? 3 : 0);
                    if (rnd(4) == 0)
                        src->not_principals =
                            picks(VOCAB_PRINCIPALS, 5, 1, &src->n_not_principals, 0);
                    if (rnd(4) == 0)
                        src->namespaces = picks(VOCAB_NS, 2, 1, &src->n_namespaces, 0);
                }
                if (rnd(2)) {
                    rule->n_to = 1;
                    rule->to = calloc(1, sizeof(*rule->to));
                    rule->to->paths = picks(VOCAB_PATHS, 4, 2, &rule->to->n_paths, 0);
                    rule->to->methods = picks(VOCAB_METHODS, 2, 1, &rule->to->n_methods, 0);
                }
            }
        }
        struct tr_authz_cfg cfg = {.policies = pols, .n_policies = np};
        char *err = NULL;
        struct tr_authz *a = tr_authz_build(&cfg, &err);
        assert_null(err);
        assert_non_null(a);
        static const char *const who[] = {
            "spiffe://cluster.local/ns/a/sa/x", "spiffe://cluster.local/ns/a/sa/y",
            "spiffe://cluster.local/ns/b/sa/x", "spiffe://cluster.local/ns/c/sa/z", NULL};
        static const char *const paths[] = {"/a", "/a/b", "/b", "/c"};
        for (size_t w = 0; w < sizeof(who) / sizeof(who[0]); w++)
            for (size_t pa = 0; pa < 4; pa++)
                for (int m = 0; m < 2; m++)
                    for (int h = 0; h < 2; h++) {
                        struct tr_authz_request rq = http(who[w], VOCAB_METHODS[m], paths[pa]);
                        rq.http = h == 0;
                        struct tr_authz_result x, y;
                        tr_authz_decide(a, &rq, &x);
                        tr_authz_decide_scan(a, &rq, &y);
                        assert_int_equal(x.verdict, y.verdict);
                        assert_int_equal(x.reason, y.reason);
                        assert_int_equal(x.policy, y.policy);
                        assert_int_equal(x.rule, y.rule);
                        assert_int_equal(x.audit_policy, y.audit_policy);
                        assert_int_equal(x.audit_rule, y.audit_rule);
                        decisions++;
                    }
        tr_authz_free(a);
        for (size_t i = 0; i < np; i++) {
            for (size_t r = 0; r < pols[i].n_rules; r++) {
                struct tr_authz_policy_rule_cfg *rule = &pols[i].rules[r];
                for (size_t f = 0; f < rule->n_from; f++) {
                    free(rule->from[f].principals);
                    free(rule->from[f].not_principals);
                    free(rule->from[f].namespaces);
                }
                free(rule->from);
                if (rule->to != NULL) {
                    free(rule->to->paths);
                    free(rule->to->methods);
                    free(rule->to);
                }
            }
            free(pols[i].rules);
        }
        free(pols);
        skipped_some += np > 1;
    }
    assert_true(decisions > 10000);
    assert_true(skipped_some > 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allow_nothing_plus_allow),
        cmocka_unit_test(test_empty_rule_matches_all_and_deny_first),
        cmocka_unit_test(test_tcp_fail_closed),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_operations),
        cmocka_unit_test(test_conditions_and_request_auth),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_custom),
        cmocka_unit_test(test_index_matches_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
