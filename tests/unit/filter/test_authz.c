#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "filter/authz.h"

#define LIST(...)                                                                                  \
    (const char *[])                                                                               \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }
#define COUNT(...)      (sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *))
#define PRINCIPALS(...) .principals = LIST(__VA_ARGS__), .n_principals = COUNT(__VA_ARGS__)
#define METHODS(...)    .methods = LIST(__VA_ARGS__), .n_methods = COUNT(__VA_ARGS__)
#define PATHS(...)      .paths = LIST(__VA_ARGS__), .n_paths = COUNT(__VA_ARGS__)

#define WEB      "spiffe://cluster.local/ns/default/sa/web"
#define ADMIN    "spiffe://cluster.local/ns/ops/sa/admin"
#define OTHER_TD "spiffe://evil.example/ns/default/sa/web"

static struct tr_authz *build(struct tr_authz_rule_cfg *rules, size_t n)
{
    struct tr_authz_cfg cfg = {.rules = rules, .n_rules = n};
    char *err = NULL;
    struct tr_authz *a = tr_authz_build(&cfg, &err);
    if (a == NULL)
        fail_msg("build failed: %s", err ? err : "(no message)");
    return a;
}

static enum tr_authz_verdict eval(const struct tr_authz *a, const char *principal,
                                  const char *method, const char *path, int *rule)
{
    return tr_authz_eval(a, principal, tr_str_from(method, strlen(method)),
                         tr_str_from(path, strlen(path)), rule);
}

#define ALLOW TR_AUTHZ_VERDICT_ALLOW
#define DENY  TR_AUTHZ_VERDICT_DENY

static void test_no_rules(void **state)
{
    struct tr_authz_cfg empty = {0};
    char *err = (char *)"sentinel";
    assert_null(tr_authz_build(&empty, &err));
    assert_null(err); /* NULL without error: skip evaluation */
    int rule = 5;
    assert_int_equal(tr_authz_eval(NULL, NULL, TR_STR_LIT("GET"), TR_STR_LIT("/"), &rule), ALLOW);
    assert_int_equal(rule, -1);
    tr_authz_free(NULL);
}

static void test_deny_precedes_allow(void **state)
{
    struct tr_authz_rule_cfg rules[] = {
        {.action = TR_AUTHZ_ALLOW, PRINCIPALS(WEB)},
        {.action = TR_AUTHZ_DENY, PRINCIPALS(WEB), PATHS("/admin*")},
        {.action = TR_AUTHZ_ALLOW, PRINCIPALS(ADMIN)},
    };
    struct tr_authz *a = build(rules, 3);
    int rule;
    assert_int_equal(eval(a, WEB, "GET", "/api", &rule), ALLOW);
    assert_int_equal(rule, 0);
    /* The DENY rule wins although the earlier ALLOW rule matches too. */
    assert_int_equal(eval(a, WEB, "GET", "/admin/users", &rule), DENY);
    assert_int_equal(rule, 1);
    assert_int_equal(eval(a, ADMIN, "GET", "/admin/users", &rule), ALLOW);
    assert_int_equal(rule, 2);
    /* Allow rules exist and none matches: deny with no deciding rule. */
    assert_int_equal(eval(a, OTHER_TD, "GET", "/api", &rule), DENY);
    assert_int_equal(rule, -1);
    assert_int_equal(eval(a, NULL, "GET", "/api", &rule), DENY);
    assert_int_equal(rule, -1);
    assert_int_equal(eval(a, WEB, "GET", "/api", NULL), ALLOW); /* matched_rule optional */
    tr_authz_free(a);
}

static void test_only_deny_rules(void **state)
{
    struct tr_authz_rule_cfg rules[] = {
        {.action = TR_AUTHZ_DENY, PRINCIPALS("spiffe://evil.example/*")},
        {.action = TR_AUTHZ_DENY, METHODS("DELETE")},
    };
    struct tr_authz *a = build(rules, 2);
    int rule;
    assert_int_equal(eval(a, WEB, "GET", "/", &rule), ALLOW);
    assert_int_equal(rule, -1);
    assert_int_equal(eval(a, NULL, "GET", "/", &rule), ALLOW);
    assert_int_equal(eval(a, OTHER_TD, "GET", "/", &rule), DENY);
    assert_int_equal(rule, 0);
    assert_int_equal(eval(a, NULL, "DELETE", "/x", &rule), DENY);
    assert_int_equal(rule, 1);
    /* TCP: the methods rule cannot match, the principal rule still can. */
    assert_int_equal(eval(a, WEB, "", "", &rule), ALLOW);
    assert_int_equal(eval(a, OTHER_TD, "", "", &rule), DENY);
    assert_int_equal(rule, 0);
    tr_authz_free(a);
}

static void test_principal_patterns(void **state)
{
    struct tr_authz_rule_cfg any_auth[] = {{.action = TR_AUTHZ_ALLOW, PRINCIPALS("*")}};
    struct tr_authz *a = build(any_auth, 1);
    assert_int_equal(eval(a, WEB, "GET", "/", NULL), ALLOW);
    assert_int_equal(eval(a, "", "GET", "/", NULL), ALLOW);  /* non-NULL is authenticated */
    assert_int_equal(eval(a, NULL, "GET", "/", NULL), DENY); /* plaintext is not */
    tr_authz_free(a);

    struct tr_authz_rule_cfg ns[] = {
        {.action = TR_AUTHZ_ALLOW, PRINCIPALS("spiffe://cluster.local/ns/default/*", ADMIN)},
    };
    a = build(ns, 1);
    assert_int_equal(eval(a, WEB, "GET", "/", NULL), ALLOW);
    assert_int_equal(eval(a, "spiffe://cluster.local/ns/default/", "GET", "/", NULL), ALLOW);
    assert_int_equal(eval(a, "spiffe://cluster.local/ns/defaultx/sa/a", "GET", "/", NULL), DENY);
    assert_int_equal(eval(a, "spiffe://cluster.local/ns/default", "GET", "/", NULL), DENY);
    assert_int_equal(eval(a, ADMIN, "GET", "/", NULL), ALLOW);
    assert_int_equal(eval(a, ADMIN "x", "GET", "/", NULL), DENY); /* exact, not prefix */
    assert_int_equal(eval(a, "spiffe://cluster.local/ns/ops/sa/admi", "GET", "/", NULL), DENY);
    assert_int_equal(eval(a, NULL, "GET", "/", NULL), DENY);
    tr_authz_free(a);

    /* No principals: any source, plaintext included. */
    struct tr_authz_rule_cfg anyone[] = {{.action = TR_AUTHZ_ALLOW, METHODS("GET")}};
    a = build(anyone, 1);
    assert_int_equal(eval(a, NULL, "GET", "/", NULL), ALLOW);
    assert_int_equal(eval(a, WEB, "GET", "/", NULL), ALLOW);
    assert_int_equal(eval(a, WEB, "POST", "/", NULL), DENY);
    tr_authz_free(a);
}

static void test_methods_and_paths(void **state)
{
    struct tr_authz_rule_cfg rules[] = {
        {.action = TR_AUTHZ_ALLOW, METHODS("GET", "HEAD"), PATHS("/public/*", "/health")},
        {.action = TR_AUTHZ_ALLOW, METHODS("POST"), PATHS("*")},
    };
    struct tr_authz *a = build(rules, 2);
    int rule;
    assert_int_equal(eval(a, NULL, "GET", "/public/a/b", &rule), ALLOW);
    assert_int_equal(rule, 0);
    assert_int_equal(eval(a, NULL, "HEAD", "/health", NULL), ALLOW);
    assert_int_equal(eval(a, NULL, "GET", "/health/x", NULL), DENY); /* exact */
    assert_int_equal(eval(a, NULL, "GET", "/healt", NULL), DENY);
    assert_int_equal(eval(a, NULL, "GET", "/public", NULL), DENY); /* prefix is "/public/" */
    assert_int_equal(eval(a, NULL, "GET", "/public/", NULL), ALLOW);
    assert_int_equal(eval(a, NULL, "get", "/health", NULL), DENY); /* case-sensitive */
    assert_int_equal(eval(a, NULL, "PUT", "/public/x", NULL), DENY);
    assert_int_equal(eval(a, NULL, "POST", "/anything", &rule), ALLOW);
    assert_int_equal(rule, 1);
    /* A query string never affects the path decision. */
    assert_int_equal(eval(a, NULL, "GET", "/health?x=1", NULL), ALLOW);
    /* TCP (empty method and path): rules with methods/paths never match,
     * even the "*" path. */
    assert_int_equal(eval(a, WEB, "", "", &rule), DENY);
    assert_int_equal(rule, -1);
    tr_authz_free(a);

    struct tr_authz_rule_cfg deny_exact[] = {
        {.action = TR_AUTHZ_DENY, PATHS("/admin")},
    };
    a = build(deny_exact, 1);
    assert_int_equal(eval(a, NULL, "GET", "/admin", NULL), DENY);
    assert_int_equal(eval(a, NULL, "GET", "/admin?bypass=1", NULL), DENY);
    assert_int_equal(eval(a, NULL, "GET", "/admin2", NULL), ALLOW);
    tr_authz_free(a);
}

static void test_tcp_principal_only(void **state)
{
    struct tr_authz_rule_cfg rules[] = {
        {.action = TR_AUTHZ_ALLOW, PRINCIPALS("spiffe://cluster.local/*")},
        {.action = TR_AUTHZ_ALLOW, PRINCIPALS(OTHER_TD), METHODS("GET")},
    };
    struct tr_authz *a = build(rules, 2);
    int rule;
    assert_int_equal(eval(a, WEB, "", "", &rule), ALLOW);
    assert_int_equal(rule, 0);
    assert_int_equal(eval(a, NULL, "", "", NULL), DENY);
    assert_int_equal(eval(a, OTHER_TD, "", "", NULL), DENY); /* its rule needs a method */
    assert_int_equal(eval(a, OTHER_TD, "GET", "/", &rule), ALLOW);
    assert_int_equal(rule, 1);
    tr_authz_free(a);
}

static void test_build_errors(void **state)
{
    struct tr_authz_rule_cfg rules[] = {
        {.action = TR_AUTHZ_ALLOW, PRINCIPALS(WEB)},
        {.action = TR_AUTHZ_DENY,
         METHODS("GET", ""),
         .loc = {.file = "l.yaml", .line = 4, .col = 9, .path = "listeners[0].authz[1]"}},
    };
    struct tr_authz_cfg cfg = {.rules = rules, .n_rules = 2};
    char *err = NULL;
    assert_null(tr_authz_build(&cfg, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "l.yaml:4:9: listeners[0].authz[1]: methods[1]"));
    free(err);

    rules[1] = (struct tr_authz_rule_cfg){.action = TR_AUTHZ_DENY, PATHS("/x", NULL)};
    err = NULL;
    assert_null(tr_authz_build(&cfg, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "paths[1]"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_rules),          cmocka_unit_test(test_deny_precedes_allow),
        cmocka_unit_test(test_only_deny_rules),   cmocka_unit_test(test_principal_patterns),
        cmocka_unit_test(test_methods_and_paths), cmocka_unit_test(test_tcp_principal_only),
        cmocka_unit_test(test_build_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
