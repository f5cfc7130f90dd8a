#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "obs/metrics.h"

static void test_http_series_summed_across_workers(void **state)
{
    struct tr_metrics *w0 = tr_metrics_new(0), *w1 = tr_metrics_new(1);
    struct tr_metric_labels l = {
        .reporter = TR_REPORTER_DESTINATION,
        .protocol = TR_REQ_PROTO_HTTP,
        .mtls = TR_SEC_MUTUAL_TLS,
        .source_principal = tr_metrics_intern("spiffe://cluster.local/ns/default/sa/web"),
        .destination_workload = tr_metrics_intern("api"),
        .destination_service = tr_metrics_intern("api.default.svc.cluster.local"),
    };
    /* Interning makes equal strings the same pointer. */
    assert_ptr_equal(l.destination_workload, tr_metrics_intern("api"));
    tr_metrics_http(w0, &l, 200, 0, 700, 10, 1000);   /* 0.7 ms */
    tr_metrics_http(w1, &l, 200, 0, 30000, 10, 1000); /* 30 ms */
    tr_metrics_http(w1, &l, 503, TR_RF_UF | TR_RF_URX, 100, 0, 19);
    /* gRPC: its own series per grpc-status, protocol "grpc". */
    struct tr_metric_labels g = l;
    g.protocol = TR_REQ_PROTO_GRPC;
    g.grpc = 14 + 1;
    tr_metrics_http(w1, &g, 200, 0, 100, 5, 5);
    g.protocol = TR_REQ_PROTO_HTTP2;
    g.grpc = 0;
    tr_metrics_http(w1, &g, 200, 0, 100, 5, 5);
    size_t len = 0;
    char *text = tr_metrics_render(&len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    const char *series =
        "istio_requests_total{reporter=\"destination\",source_workload=\"unknown\","
        "source_workload_namespace=\"unknown\",source_principal=\"spiffe://"
        "cluster.local/ns/default/sa/web\",destination_workload=\"api\","
        "destination_workload_namespace=\"unknown\",destination_principal="
        "\"unknown\",destination_service=\"api.default.svc.cluster.local\","
        "request_protocol=\"http\",connection_security_policy=\"mutual_tls\","
        "grpc_response_status=\"\",response_code=\"200\",response_flags=\"-\"} 2\n";
    assert_non_null(strstr(text, series));
    assert_non_null(strstr(text, "response_code=\"503\",response_flags=\"UF,URX\"} 1\n"));
    assert_non_null(strstr(text,
                           "request_protocol=\"grpc\",connection_security_policy=\"mutual_tls\","
                           "grpc_response_status=\"14\",response_code=\"200\""));
    assert_non_null(strstr(text,
                           "request_protocol=\"http/2\",connection_security_policy=\"mutual_tls\","
                           "grpc_response_status=\"\",response_code=\"200\""));
    /* Histogram: 0.7 ms lands in le="1", 30 ms in le="50"; cumulative. */
    assert_non_null(strstr(text, "response_code=\"200\",response_flags=\"-\",le=\"0.5\"} 0\n"));
    assert_non_null(strstr(text, "response_code=\"200\",response_flags=\"-\",le=\"1\"} 1\n"));
    assert_non_null(strstr(text, "response_code=\"200\",response_flags=\"-\",le=\"25\"} 1\n"));
    assert_non_null(strstr(text, "response_code=\"200\",response_flags=\"-\",le=\"50\"} 2\n"));
    assert_non_null(strstr(text, "response_code=\"200\",response_flags=\"-\",le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(text, "istio_request_duration_milliseconds_sum{"));
    assert_non_null(strstr(text, "response_code=\"200\",response_flags=\"-\"} 30.700\n"));
    free(text);
}

/* Retries by reason and shadows by result: labelled families where every
 * label value shows, 0 included, summed over workers. */
static void test_retry_and_mirror_counters(void **state)
{
    (void)state;
    struct tr_metrics *w6 = tr_metrics_new(6), *w7 = tr_metrics_new(7);
    tr_metrics_retry(w6, TR_RETRY_REASON_STATUS);
    tr_metrics_retry(w7, TR_RETRY_REASON_STATUS);
    tr_metrics_retry(w7, TR_RETRY_REASON_GRPC_STATUS);
    tr_metrics_count(w6, TR_C_RETRY_BUDGET_EXHAUSTED, 1);
    tr_metrics_mirror(w6, TR_MIRROR_COMPLETED);
    tr_metrics_mirror(w7, TR_MIRROR_BODY_TOO_LARGE);
    tr_metrics_mirror(w7, TR_MIRROR_BODY_TOO_LARGE);
    tr_metrics_jwks_fetch(w6, TR_JWKS_FETCH_OK);
    tr_metrics_jwks_fetch(w7, TR_JWKS_FETCH_TIMEOUT);
    tr_metrics_jwks_fetch(w7, TR_JWKS_FETCH_OK);
    size_t len;
    char *text = tr_metrics_render(&len);
    assert_non_null(text);
    assert_non_null(strstr(text,
                           "# TYPE trellis_upstream_requests_retried_total counter\n"
                           "trellis_upstream_requests_retried_total{reason=\"connect_failure\"} "
                           "0\n"
                           "trellis_upstream_requests_retried_total{reason=\"refused_stream\"} "
                           "0\n"
                           "trellis_upstream_requests_retried_total{reason=\"reset\"} 0\n"
                           "trellis_upstream_requests_retried_total{reason=\"per_try_timeout\"} "
                           "0\n"
                           "trellis_upstream_requests_retried_total{reason=\"status\"} 2\n"
                           "trellis_upstream_requests_retried_total{reason=\"grpc_status\"} 1\n"));
    assert_non_null(strstr(text, "trellis_upstream_retry_budget_exhausted_total 1\n"));
    assert_non_null(strstr(text, "# TYPE trellis_mirror_requests_total counter\n"
                                 "trellis_mirror_requests_total{result=\"completed\"} 1\n"
                                 "trellis_mirror_requests_total{result=\"failed\"} 0\n"
                                 "trellis_mirror_requests_total{result=\"body_too_large\"} 2\n"
                                 "trellis_mirror_requests_total{result=\"incomplete\"} 0\n"
                                 "trellis_mirror_requests_total{result=\"overflow\"} 0\n"
                                 "trellis_mirror_requests_total{result=\"unsupported\"} 0\n"));
    assert_non_null(strstr(text, "# TYPE trellis_jwks_fetches_total counter\n"
                                 "trellis_jwks_fetches_total{result=\"ok\"} 2\n"
                                 "trellis_jwks_fetches_total{result=\"connect\"} 0\n"
                                 "trellis_jwks_fetches_total{result=\"status\"} 0\n"
                                 "trellis_jwks_fetches_total{result=\"body\"} 0\n"
                                 "trellis_jwks_fetches_total{result=\"timeout\"} 1\n"));
    free(text);
}

static void test_tcp_and_counters(void **state)
{
    struct tr_metrics *w2 = tr_metrics_new(2);
    struct tr_metric_labels l = {.reporter = TR_REPORTER_SOURCE,
                                 .protocol = TR_REQ_PROTO_TCP,
                                 .mtls = TR_SEC_UNKNOWN,
                                 .destination_service = tr_metrics_intern("db")};
    tr_metrics_tcp_open(w2, &l);
    tr_metrics_tcp_close(w2, &l, 0, 1234, 99);
    tr_metrics_count(w2, TR_C_UPSTREAM_RESEND, 3);
    tr_metrics_tls_failure(w2, 0, "unknown_ca");
    struct tr_metrics *w3 = tr_metrics_new(3);
    tr_metrics_tls_failure(w3, 0, "unknown_ca");
    tr_metrics_limit(w2, TR_LIMIT_MAX_HEADERS);
    tr_metrics_limit(w3, TR_LIMIT_MAX_HEADERS);
    size_t len;
    char *text = tr_metrics_render(&len);
    assert_non_null(strstr(text, "istio_tcp_sent_bytes_total{reporter=\"source\""));
    assert_non_null(strstr(text,
                           "destination_service=\"db\",request_protocol=\"tcp\","
                           "connection_security_policy=\"unknown\",response_flags=\"-\"} 1234\n"));
    assert_non_null(strstr(text, "trellis_upstream_requests_resent_total 3\n"));
    /* Same reason from two workers: one series, summed. */
    const char *tls =
        "trellis_tls_handshake_errors_total{direction=\"inbound\",reason=\"unknown_ca\"} 2\n";
    const char *at = strstr(text, tls);
    assert_non_null(at);
    assert_null(strstr(at + strlen(tls), "reason=\"unknown_ca\""));
    /* Limits by config key, summed over workers. */
    assert_non_null(strstr(text, "# TYPE trellis_limit_exceeded_total counter\n"
                                 "trellis_limit_exceeded_total{limit=\"max_headers\"} 2\n"));
    assert_string_equal(tr_limit_name(TR_LIMIT_MAX_HEADERS), "max_headers");
    free(text);
}

static void test_label_values_escaped(void **state)
{
    struct tr_metrics *w4 = tr_metrics_new(4);
    /* A peer ID or workload name is not ours to trust: a quote, a backslash
     * and a newline must not end the value or the line. */
    struct tr_metric_labels l = {
        .reporter = TR_REPORTER_SOURCE,
        .protocol = TR_REQ_PROTO_GRPC,
        .grpc = 2 + 1,
        .source_workload = tr_metrics_intern("w\"1"),
        .destination_principal = tr_metrics_intern("spiffe://td/a\\b\nc"),
        .destination_service = tr_metrics_intern("bad\xffutf8"),
    };
    tr_metrics_http(w4, &l, 200, TR_RF_DC, 10, 1, 1);
    size_t len;
    char *text = tr_metrics_render(&len);
    assert_non_null(text);
    const char *series =
        "istio_requests_total{reporter=\"source\",source_workload=\"w\\\"1\","
        "source_workload_namespace=\"unknown\",source_principal=\"unknown\","
        "destination_workload=\"unknown\",destination_workload_namespace=\"unknown\","
        "destination_principal=\"spiffe://td/a\\\\b\\nc\","
        "destination_service=\"bad\xef\xbf\xbdutf8\",request_protocol=\"grpc\","
        "connection_security_policy=\"none\",grpc_response_status=\"2\",response_code=\"200\","
        "response_flags=\"DC\"} 1\n";
    assert_non_null(strstr(text, series));
    assert_non_null(strstr(text, "destination_principal=\"spiffe://td/a\\\\b\\nc\","
                                 "destination_service=\"bad\xef\xbf\xbdutf8\",request_protocol="
                                 "\"grpc\",connection_security_policy=\"none\","
                                 "grpc_response_status=\"2\",response_code=\"200\","
                                 "response_flags=\"DC\",le=\"+Inf\"} 1\n"));
    /* No raw newline inside any line: every line is a comment or a sample. */
    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        assert_true(*p == '#' || strncmp(p, "istio_", 6) == 0 || strncmp(p, "trellis_", 8) == 0);
        p = nl + 1;
    }
    free(text);
}

/* Last: the series it leaves behind makes every later scrape too large. */
static void test_too_large_is_an_error(void **state)
{
    struct tr_metrics *w5 = tr_metrics_new(5);
    size_t n = TR_METRICS_TEXT_MAX / 2 + 1; /* twice that once escaped */
    char *huge = malloc(n + 1);
    assert_non_null(huge);
    memset(huge, '"', n);
    huge[n] = '\0';
    struct tr_metric_labels l = {.destination_workload = tr_metrics_intern(huge)};
    free(huge);
    tr_metrics_http(w5, &l, 200, 0, 10, 1, 1);
    size_t len = 7;
    errno = 0;
    assert_null(tr_metrics_render(&len));
    assert_int_equal(errno, E2BIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_series_summed_across_workers),
        cmocka_unit_test(test_tcp_and_counters),
        cmocka_unit_test(test_retry_and_mirror_counters),
        cmocka_unit_test(test_label_values_escaped),
        cmocka_unit_test(test_too_large_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
