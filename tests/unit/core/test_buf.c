#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/buf.h"

static void test_pool_reuses_and_bounds_free_list(void **state)
{
    struct tr_buf_pool p;
    tr_buf_pool_init(&p, 1024, 2);
    struct tr_buf *a = tr_buf_get(&p), *b = tr_buf_get(&p), *c = tr_buf_get(&p);
    assert_int_equal(p.outstanding, 3);
    tr_buf_put(&p, a);
    tr_buf_put(&p, b);
    tr_buf_put(&p, c); /* over max_free: freed, not kept */
    assert_int_equal(p.n_free, 2);
    assert_int_equal(p.outstanding, 0);
    struct tr_buf *d = tr_buf_get(&p);
    assert_true(d == a || d == b);
    assert_int_equal(tr_buf_len(d), 0);
    assert_int_equal(d->cap, 1024);
    tr_buf_put(&p, d);
    tr_buf_pool_destroy(&p);
    assert_int_equal(p.n_free, 0);
}

static void test_append_consume_compact(void **state)
{
    struct tr_buf_pool p;
    tr_buf_pool_init(&p, 16, 4);
    struct tr_buf *b = tr_buf_get(&p);
    assert_int_equal(tr_buf_append(b, "0123456789", 10), 10);
    tr_buf_consume(b, 4);
    assert_int_equal(tr_buf_len(b), 6);
    assert_memory_equal(tr_buf_head(b), "456789", 6);
    /* 10 more bytes only fit after compaction; 16 - 6 = 10. */
    assert_int_equal(tr_buf_append(b, "abcdefghijXYZ", 13), 10);
    assert_int_equal(b->start, 0);
    assert_memory_equal(tr_buf_head(b), "456789abcdefghij", 16);
    tr_buf_consume(b, 16);
    assert_int_equal(b->start, 0); /* emptied buffers rewind */
    assert_int_equal(b->end, 0);
    tr_buf_put(&p, b);
    tr_buf_pool_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_reuses_and_bounds_free_list),
        cmocka_unit_test(test_append_consume_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
