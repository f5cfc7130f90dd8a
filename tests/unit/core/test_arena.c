#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/arena.h"

static void test_alloc_is_zeroed_and_aligned(void **state)
{
    struct tr_arena *a = tr_arena_new(1024);
    assert_non_null(a);
    for (int i = 1; i < 200; i++) {
        unsigned char *p = tr_arena_alloc(a, (size_t)i);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        for (int j = 0; j < i; j++)
            assert_int_equal(p[j], 0);
        memset(p, 0xab, (size_t)i);
    }
    tr_arena_free(a);
}

static void test_large_object_gets_own_block(void **state)
{
    struct tr_arena *a = tr_arena_new(256);
    char *small = tr_arena_alloc(a, 16);
    char *big = tr_arena_alloc(a, 100000);
    char *small2 = tr_arena_alloc(a, 16);
    assert_non_null(big);
    /* The small allocations still share the first block. */
    assert_ptr_equal(small2, small + 16);
    memset(big, 1, 100000);
    assert_true(tr_arena_used(a) >= 100032);
    tr_arena_free(a);
}

static void test_strdup(void **state)
{
    struct tr_arena *a = tr_arena_new(64);
    char *s = tr_arena_strdup(a, "spiffe://cluster.local/ns/default/sa/web");
    assert_string_equal(s, "spiffe://cluster.local/ns/default/sa/web");
    char *t = tr_arena_strndup(a, "abcdef", 3);
    assert_string_equal(t, "abc");
    assert_null(tr_arena_calloc(a, SIZE_MAX / 2, 4));
    tr_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_is_zeroed_and_aligned),
        cmocka_unit_test(test_large_object_gets_own_block),
        cmocka_unit_test(test_strdup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
