/* router/sni_route.c: first match wins over exact names and "*.x" suffixes,
 * case-insensitively, against a reference that walks the rules in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "router/sni_route.h"

static bool ref_match(const char *pattern, const char *name, size_t len)
{
    size_t pl = strlen(pattern);
    if (pl > 2 && pattern[0] == '*' && pattern[1] == '.')
        return len > pl - 1 && name[len - (pl - 1) - 1] != '.' &&
               strncasecmp(name + len - (pl - 1), pattern + 1, pl - 1) == 0;
    return pl == len && strncasecmp(pattern, name, len) == 0;
}

static int ref(const struct tr_listener_cfg *l, const char *name)
{
    for (size_t k = 0; k < l->n_sni_routes; k++)
        for (size_t m = 0; m < l->sni_routes[k].n_server_names; m++)
            if (ref_match(l->sni_routes[k].server_names[m], name, strlen(name)))
                return (int)k;
    return -1;
}

static void test_first_match(void **state)
{
    (void)state;
    static const char *r0[] = {"a.example.com", "*.deep.example.com"};
    static const char *r1[] = {"*.example.com", "B.Example.com"};
    static const char *r2[] = {"x.deep.example.com", "*.com", "example.com"};
    static const char *r3[] = {"*.org"};
    struct tr_sni_route_cfg rules[] = {
        {.server_names = r0, .n_server_names = 2},
        {.server_names = r1, .n_server_names = 2},
        {.server_names = r2, .n_server_names = 3},
        {.server_names = r3, .n_server_names = 1},
    };
    struct tr_listener_cfg l = {.sni_routes = rules, .n_sni_routes = 4};
    struct tr_sni_router *r = tr_sni_router_build(&l);
    assert_non_null(r);
    static const struct {
        const char *name;
        int want;
    } v[] = {
        {"a.example.com", 0},
        {"A.EXAMPLE.COM", 0},
        {"x.deep.example.com", 0}, /* rule 0's wildcard comes before rule 2's exact name */
        {"y.x.deep.example.com", 0},
        {"deep.example.com", 1}, /* not below deep.example.com: rule 1's wildcard */
        {"b.example.com", 1},
        {"c.example.com", 1},
        {"example.com", 2}, /* "*.example.com" does not take example.com itself */
        {"other.com", 2},
        {"com", -1},
        {".com", -1},   /* no label before the suffix */
        {"a..com", -1}, /* an empty label */
        {"a.org", 3},
        {"org", -1},
        {"a.example.net", -1},
        {"xa.example.com", 1},
        {"example.com.", -1}, /* a trailing dot is another name */
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        int got = tr_sni_router_match(r, v[i].name, strlen(v[i].name));
        if (got != v[i].want || got != ref(&l, v[i].name))
            fail_msg("%s: got %d want %d (reference %d)", v[i].name, got, v[i].want,
                     ref(&l, v[i].name));
    }
    assert_int_equal(tr_sni_router_match(r, "a.example.comXX", 13), 0); /* len, not NUL */
    assert_int_equal(tr_sni_router_match(r, "", 0), -1);
    char huge[300];
    memset(huge, 'a', sizeof(huge));
    memcpy(huge + sizeof(huge) - 4, ".org", 4);
    assert_int_equal(tr_sni_router_match(r, huge, sizeof(huge)), -1); /* longer than 255 */
    tr_sni_router_free(r);
}

/* Many rules and names: the table agrees with the reference everywhere. */
static void test_against_reference(void **state)
{
    (void)state;
    enum { RULES = 40, NAMES = 5 };
    static char buf[RULES][NAMES][32];
    static const char *ptr[RULES][NAMES];
    struct tr_sni_route_cfg rules[RULES];
    uint32_t x = 12345;
    for (size_t k = 0; k < RULES; k++) {
        for (size_t m = 0; m < NAMES; m++) {
            x = x * 1103515245u + 12345u;
            unsigned a = (x >> 8) % 7, b = (x >> 12) % 5, wild = (x >> 20) % 3 == 0;
            snprintf(buf[k][m], sizeof(buf[k][m]), "%s%c.%c.test", wild ? "*." : "", 'a' + (int)a,
                     'a' + (int)b);
            ptr[k][m] = buf[k][m];
        }
        rules[k] = (struct tr_sni_route_cfg){.server_names = ptr[k], .n_server_names = NAMES};
    }
    struct tr_listener_cfg l = {.sni_routes = rules, .n_sni_routes = RULES};
    struct tr_sni_router *r = tr_sni_router_build(&l);
    assert_non_null(r);
    char name[64];
    for (unsigned z = 0; z < 8; z++)
        for (unsigned a = 0; a < 8; a++)
            for (unsigned b = 0; b < 6; b++) {
                snprintf(name, sizeof(name), "%c.%c.%c.test", 'a' + z, 'a' + a, 'a' + b);
                const char *forms[] = {name, name + 2};
                for (size_t f = 0; f < 2; f++)
                    assert_int_equal(tr_sni_router_match(r, forms[f], strlen(forms[f])),
                                     ref(&l, forms[f]));
            }
    tr_sni_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_match),
        cmocka_unit_test(test_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
