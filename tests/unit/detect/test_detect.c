#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "detect/detect.h"

static enum tr_detected det(const char *s, size_t n)
{
    return tr_detect_protocol((const unsigned char *)s, n);
}

static void test_classification(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
        enum tr_detected want;
    } v[] = {
        {"", 0, TR_DETECT_NEED_MORE},
        {"\x16\x03\x01\x02\x00", 5, TR_DETECT_TLS},
        {"\x16\x03\x03", 3, TR_DETECT_TLS},
        {"\x16\x03", 2, TR_DETECT_NEED_MORE},
        {"\x16\x02\x00", 3, TR_DETECT_OPAQUE},
        {"\x16\x03\x09", 3, TR_DETECT_OPAQUE},
        {"GET / HTTP/1.1\r\n", 16, TR_DETECT_HTTP1},
        {"POST ", 5, TR_DETECT_HTTP1},
        {"GE", 2, TR_DETECT_NEED_MORE},
        {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24, TR_DETECT_HTTP2},
        {"PRI * HTTP/2", 12, TR_DETECT_NEED_MORE},
        {"PRI * HTTP/1.1\r\n", 16, TR_DETECT_HTTP1},
        {"get / HTTP/1.1", 14, TR_DETECT_OPAQUE},
        {" GET", 4, TR_DETECT_OPAQUE},
        {"\x00\x01\x02", 3, TR_DETECT_OPAQUE},
        {"SSH-2.0-OpenSSH", 15, TR_DETECT_OPAQUE},
        {"AAAAAAAAAAAAAAAAAAAAAAAA", 24, TR_DETECT_OPAQUE},
        {"*1\r\n$4\r\nPING\r\n", 14, TR_DETECT_OPAQUE},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        enum tr_detected got = det(v[i].bytes, v[i].len);
        if (got != v[i].want)
            fail_msg("vector %zu: got %d want %d", i, got, v[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_classification)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
