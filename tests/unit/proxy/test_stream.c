/* proxy/stream: the gRPC helpers the exchange logic relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/stream.h"

static void test_grpc_timeout(void **state)
{
    (void)state;
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("100m")), 100);
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("5S")), 5000);
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("2M")), 120000);
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("1H")), 3600000);
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("1500u")), 2); /* rounds up */
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("1n")), 1);    /* never 0 */
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("99999999m")), 99999999);
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("123456789m")), 0); /* 9 digits */
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("10")), 0);
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("m")), 0);
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("-1S")), 0);
    assert_int_equal(tr_grpc_timeout_ms(TR_STR_LIT("1x")), 0);
}

static void test_grpc_status(void **state)
{
    (void)state;
    assert_int_equal(tr_grpc_status_parse(TR_STR_LIT("0")), 0);
    assert_int_equal(tr_grpc_status_parse(TR_STR_LIT("14")), 14);
    assert_int_equal(tr_grpc_status_parse(TR_STR_LIT("")), -1);
    assert_int_equal(tr_grpc_status_parse(TR_STR_LIT("1a")), -1);
    assert_int_equal(tr_grpc_status_parse(TR_STR_LIT("256")), -1);
    assert_int_equal(tr_grpc_status_parse(TR_STR_LIT("1000")), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpc_timeout),
        cmocka_unit_test(test_grpc_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
