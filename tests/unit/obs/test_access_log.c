#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "obs/access_log.h"
#include "obs/metrics.h"

/* 2023-11-14T22:13:20.124456789Z; entries last 1 ms, so they began at .123. */
static const int64_t now_ns = 1700000000124456789;

static struct tr_access_entry entry(void)
{
    return (struct tr_access_entry){
        .method = "GET",
        .path = "/a?b=1",
        .authority = "example.com",
        .request_id = "0123",
        .status = 503,
        .flags = TR_RF_UF | TR_RF_URX,
        .duration_us = 1000,
        .req_bytes = 10,
        .resp_bytes = 20,
        .peer = "127.0.0.1:5555",
        .principal = NULL,
        .listener = "in",
        .cluster = "backend",
        .upstream = "127.0.0.1:80",
    };
}

static void test_exact_line(void **state)
{
    char line[TR_ACCESS_LOG_LINE_MAX + 1]; /* + 1: the tests add a NUL */
    struct tr_access_entry e = entry();
    size_t n = tr_access_log_format(line, &e, now_ns);
    const char *want =
        "{\"start_time\":\"2023-11-14T22:13:20.123Z\",\"method\":\"GET\",\"protocol\":"
        "\"HTTP/1.1\",\"response_code\":503,\"response_flags\":\"UF,URX\",\"duration_us\":1000,"
        "\"bytes_received\":10,\"bytes_sent\":20,\"request_id\":\"0123\",\"downstream_peer\":"
        "\"127.0.0.1:5555\",\"downstream_principal\":null,\"listener\":\"in\",\"cluster\":"
        "\"backend\",\"upstream_host\":\"127.0.0.1:80\",\"authority\":\"example.com\","
        "\"path\":\"/a?b=1\"}\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(line, want, n);

    /* gRPC, an empty request id (null), no flags, escaped values. */
    e.protocol = "grpc";
    e.grpc_status = "14";
    e.request_id = "";
    e.flags = 0;
    e.path = "/q\"\\\x01\xff";
    n = tr_access_log_format(line, &e, now_ns);
    line[n] = '\0';
    assert_non_null(strstr(line, "\"protocol\":\"grpc\",\"response_code\":503,"
                                 "\"grpc_status\":\"14\",\"response_flags\":\"-\","));
    assert_non_null(strstr(line, "\"request_id\":null,"));
    assert_non_null(strstr(line, ",\"path\":\"/q\\\"\\\\\\u0001\\ufffd\"}\n"));
    assert_null(strstr(line, "truncated"));
}

static void test_cut_upstream_is_marked(void **state)
{
    char line[TR_ACCESS_LOG_LINE_MAX + 1]; /* + 1: the tests add a NUL */
    struct tr_access_entry e = entry();
    e.truncated = true; /* the session kept only a prefix of the path */
    size_t n = tr_access_log_format(line, &e, now_ns);
    const char *end = "\"path\":\"/a?b=1\",\"truncated\":true}\n";
    assert_true(n > strlen(end));
    assert_memory_equal(line + n - strlen(end), end, strlen(end));
}

/* Every byte of line[0, n) outside strings balanced: one object, one line. */
static void assert_one_json_line(const char *line, size_t n)
{
    assert_true(n <= TR_ACCESS_LOG_LINE_MAX);
    assert_int_equal(line[0], '{');
    assert_int_equal(line[n - 2], '}');
    assert_int_equal(line[n - 1], '\n');
    assert_null(memchr(line, '\n', n - 1));
    bool in_str = false;
    int depth = 0;
    for (size_t i = 0; i < n - 1; i++) {
        char c = line[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            else
                assert_true((unsigned char)c >= 0x20);
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{') {
            depth++;
        } else if (c == '}') {
            depth--;
        }
    }
    assert_false(in_str);
    assert_int_equal(depth, 0);
}

static void test_long_values_are_cut_and_marked(void **state)
{
    char line[TR_ACCESS_LOG_LINE_MAX + 1]; /* + 1: the tests add a NUL */
    /* A path that escapes to 6 x 3000 bytes: cut to a prefix. */
    char *path = malloc(3001);
    memset(path, 0x01, 3000);
    path[3000] = '\0';
    struct tr_access_entry e = entry();
    e.path = path;
    size_t n = tr_access_log_format(line, &e, now_ns);
    assert_one_json_line(line, n);
    const char *end = ",\"truncated\":true}\n";
    assert_memory_equal(line + n - strlen(end), end, strlen(end));
    /* The values before the path are whole; the path is a prefix of whole
     * escapes, at most 6 bytes short of the limit. */
    line[n] = '\0';
    assert_non_null(strstr(line, ",\"authority\":\"example.com\",\"path\":\"\\u0001\\u0001"));
    assert_non_null(strstr(line, "\\u0001\",\"truncated\":true}\n"));
    assert_true(n > TR_ACCESS_LOG_LINE_MAX - 6);

    /* Every value huge: the first ones cut, the later ones left out whole
     * (key and all), still one valid line. */
    char *big = malloc(5001);
    memset(big, '"', 5000);
    big[5000] = '\0';
    e.listener = e.cluster = e.upstream = e.authority = e.path = big;
    n = tr_access_log_format(line, &e, now_ns);
    assert_one_json_line(line, n);
    line[n] = '\0';
    assert_non_null(strstr(line, "\"listener\":\"\\\"\\\""));
    assert_null(strstr(line, "\"path\""));
    assert_memory_equal(line + n - strlen(end), end, strlen(end));
    free(big);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_line),
        cmocka_unit_test(test_cut_upstream_is_marked),
        cmocka_unit_test(test_long_values_are_cut_and_marked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
