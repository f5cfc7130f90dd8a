/* Unit tests for upstream/ext_authz.c: the header name patterns of an
 * external authorizer (Istio's: exact, "prefix*", "*suffix", "*"; any case). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "upstream/ext_authz.h"

static bool match(const char *const *pats, size_t n, const char *name)
{
    return tr_ext_authz_name_match(pats, n, tr_str_from(name, strlen(name)));
}

static void test_name_patterns(void **state)
{
    (void)state;
    const char *const pats[] = {"x-ext-authz", "x-user-*", "*-token"};
    assert_true(match(pats, 3, "x-ext-authz"));
    assert_true(match(pats, 3, "X-Ext-Authz")); /* field names are caseless */
    assert_false(match(pats, 3, "x-ext-authz-2"));
    assert_true(match(pats, 3, "x-user-id"));
    assert_true(match(pats, 3, "x-user-"));
    assert_false(match(pats, 3, "x-use"));
    assert_true(match(pats, 3, "session-token"));
    assert_true(match(pats, 3, "-TOKEN"));
    assert_false(match(pats, 3, "token"));
    assert_false(match(pats, 3, "authorization"));
    assert_false(match(pats, 0, "x-ext-authz"));
    const char *const any[] = {"*"};
    assert_true(match(any, 1, "anything"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_patterns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
