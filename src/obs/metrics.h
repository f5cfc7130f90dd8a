/* obs/metrics.h: Istio-compatible metrics with per-worker counters.
 *
 * Each worker owns a fixed-capacity table of series; only that worker writes
 * it, with relaxed atomic stores (plain moves on x86: no lock prefix, no
 * shared cache line). The admin thread sums all workers at scrape time. A
 * series key holds pointers to interned strings, so recording a request is a
 * hash of a few words and some increments: no formatting, no allocation.
 *
 * Label strings are interned with tr_metrics_intern() (process lifetime,
 * bounded); pointer equality is string equality.
 */
#ifndef TR_OBS_METRICS_H
#define TR_OBS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tr_reporter { TR_REPORTER_DESTINATION = 0, TR_REPORTER_SOURCE };
enum tr_security_policy { TR_SEC_NONE = 0, TR_SEC_MUTUAL_TLS, TR_SEC_UNKNOWN };
enum tr_req_proto {
    TR_REQ_PROTO_HTTP = 0,
    TR_REQ_PROTO_HTTP2,
    TR_REQ_PROTO_GRPC,
    TR_REQ_PROTO_TCP
};

/* Istio/Envoy response flags (bitmask). */
enum {
    TR_RF_NR = 1u << 0,    /* no route */
    TR_RF_UH = 1u << 1,    /* no healthy upstream */
    TR_RF_UF = 1u << 2,    /* upstream connection failure */
    TR_RF_UT = 1u << 3,    /* upstream request timeout */
    TR_RF_UC = 1u << 4,    /* upstream connection termination */
    TR_RF_DC = 1u << 5,    /* downstream connection termination */
    TR_RF_UO = 1u << 6,    /* upstream overflow */
    TR_RF_DPE = 1u << 7,   /* downstream protocol error */
    TR_RF_UPE = 1u << 8,   /* upstream protocol error */
    TR_RF_RBAC = 1u << 9,  /* denied by authorization (Envoy: UAEX/RBAC) */
    TR_RF_DI = 1u << 10,   /* delay injected (route fault) */
    TR_RF_URX = 1u << 11,  /* upstream retry limit exceeded */
    TR_RF_HO = 1u << 12,   /* a route's header edits took the head over a limit (trellis) */
    TR_RF_FI = 1u << 13,   /* aborted by fault injection (route fault) */
    TR_RF_UAEX = 1u << 14, /* denied by an external authorizer (CUSTOM policy; Envoy's UAEX) */
    TR_RF_COUNT = 15,
};

struct tr_fmt;

/* Append flags like "UF,URX", or "-" for none, all or nothing (core/fmt.h);
 * the longest is "NR,UH,...,URX,HO,FI,UAEX", 51 bytes. */
bool tr_response_flags_append(struct tr_fmt *f, uint16_t flags);

/* Labels fixed per (listener, cluster, endpoint, peer): everything but the
 * response code and flags. All strings interned; NULL renders "unknown". */
struct tr_metric_labels {
    uint8_t reporter; /* enum tr_reporter */
    uint8_t protocol; /* enum tr_req_proto */
    uint8_t mtls;     /* connection_security_policy: enum tr_security_policy */
    uint8_t grpc;     /* grpc_response_status + 1; 0: not gRPC (rendered "") */
    const char *source_workload;
    const char *source_namespace;
    const char *source_principal;
    const char *destination_workload;
    const char *destination_namespace;
    const char *destination_principal;
    const char *destination_service;
};

struct tr_metrics; /* one per worker */

/* Intern a string for use in labels (thread-safe; not for the request path:
 * call at config build or at TLS handshake). NULL in, NULL out. */
const char *tr_metrics_intern(const char *s);

/* Create the table of worker `index` (registered for scraping). */
struct tr_metrics *tr_metrics_new(unsigned index);

/* One finished HTTP request. */
void tr_metrics_http(struct tr_metrics *m, const struct tr_metric_labels *l, uint16_t code,
                     uint16_t flags, uint64_t duration_us, uint64_t req_bytes, uint64_t resp_bytes);
/* TCP connection events. */
void tr_metrics_tcp_open(struct tr_metrics *m, const struct tr_metric_labels *l);
void tr_metrics_tcp_close(struct tr_metrics *m, const struct tr_metric_labels *l, uint16_t flags,
                          uint64_t sent, uint64_t received);

/* Process counters outside the Istio set. */
enum tr_counter {
    TR_C_DOWNSTREAM_CX_TOTAL = 0,
    TR_C_DOWNSTREAM_CX_ACTIVE, /* gauge: +1/-1 */
    TR_C_UPSTREAM_CX_TOTAL,
    TR_C_UPSTREAM_CX_ACTIVE, /* gauge */
    TR_C_UPSTREAM_REUSED,    /* requests sent on a pooled connection */
    TR_C_UPSTREAM_RESEND,    /* requests re-sent after a pooled connection closed */
    TR_C_HTTP_PARSE_ERRORS,
    TR_C_PLAINTEXT_REFUSED,       /* STRICT listeners */
    TR_C_UPSTREAM_TLS_HANDSHAKES, /* completed upstream TLS handshakes, resumed or not */
    TR_C_UPSTREAM_TLS_RESUMED,    /* ... of which resumed a session */
    TR_C_TLS_HANDSHAKES_DEFERRED, /* handshake steps moved to a later loop turn (worker.h) */
    TR_C_RETRY_BUDGET_EXHAUSTED,  /* retries a cluster's retry budget refused (upstream/retry.h) */
    TR_C_CAPTURE_PASSTHROUGH, /* captured connections relayed as they are (listener/capture.h) */
    TR_C_CAPTURE_REJECTED,    /* captured connections closed: unmatched reject, no original
                                   * destination, or addressed to the capture listener itself */
    TR_C_COUNT,
};
void tr_metrics_count(struct tr_metrics *m, enum tr_counter c, int64_t delta);

/* Retries, by what ended the try they follow
 * (trellis_upstream_requests_retried_total{reason="..."}). */
enum tr_retry_reason {
    TR_RETRY_REASON_CONNECT_FAILURE = 0,
    TR_RETRY_REASON_REFUSED_STREAM,
    TR_RETRY_REASON_RESET,
    TR_RETRY_REASON_PER_TRY_TIMEOUT,
    TR_RETRY_REASON_STATUS,      /* the response's status */
    TR_RETRY_REASON_GRPC_STATUS, /* the grpc-status of a response head */
    TR_RETRY_REASON_COUNT,
};
void tr_metrics_retry(struct tr_metrics *m, enum tr_retry_reason r);

/* Shadow requests (upstream/mirror.h), by how they ended
 * (trellis_mirror_requests_total{result="..."}). */
enum tr_mirror_result {
    TR_MIRROR_COMPLETED = 0,  /* a response came (its status is not looked at) */
    TR_MIRROR_FAILED,         /* none: no endpoint, connect failure, reset, timeout, invalid */
    TR_MIRROR_BODY_TOO_LARGE, /* not sent: the body is over the bound */
    TR_MIRROR_INCOMPLETE,     /* not sent: the client's request did not complete */
    TR_MIRROR_OVERFLOW,       /* not sent: too many shadows in flight on the worker */
    TR_MIRROR_UNSUPPORTED,    /* not sent: a gRPC request (mirrors speak HTTP/1.1) */
    TR_MIRROR_RESULT_COUNT,
};
void tr_metrics_mirror(struct tr_metrics *m, enum tr_mirror_result r);

/* Checks sent to external authorizers (CUSTOM policies, upstream/ext_authz.h),
 * by authorizer and outcome (trellis_ext_authz_checks_total{authorizer, result}). */
enum tr_ext_authz_result {
    TR_EXT_AUTHZ_ALLOWED = 0, /* a 2xx: the request went on */
    TR_EXT_AUTHZ_DENIED,      /* another status: the client got it */
    TR_EXT_AUTHZ_ERROR,       /* no answer (connect, timeout, invalid): status_on_error */
    TR_EXT_AUTHZ_FAILED_OPEN, /* no answer or a 5xx, and fail_open: the request went on */
    TR_EXT_AUTHZ_RESULT_COUNT,
};
/* authorizer: its name, interned (tr_metrics_intern; the snapshot's
 * ext_authz_names). */
void tr_metrics_ext_authz(struct tr_metrics *m, const char *authorizer, enum tr_ext_authz_result r);

/* Fetches of JSON Web Key Sets (jwks_uri, upstream/jwks_fetch.h), by result
 * (trellis_jwks_fetches_total{result="..."}). */
enum tr_jwks_fetch_result {
    TR_JWKS_FETCH_OK = 0,  /* the keys were replaced */
    TR_JWKS_FETCH_CONNECT, /* no endpoint, no connection, or it failed mid-exchange */
    TR_JWKS_FETCH_STATUS,  /* a status other than 200 */
    TR_JWKS_FETCH_BODY,    /* an invalid response, a body over 64 KiB or not a usable key set */
    TR_JWKS_FETCH_TIMEOUT, /* jwks_uri.timeout passed */
    TR_JWKS_FETCH_RESULT_COUNT,
};
void tr_metrics_jwks_fetch(struct tr_metrics *m, enum tr_jwks_fetch_result r);

/* A configured limit stopped a message that would otherwise have been cut
 * short: counted per limit (trellis_limit_exceeded_total{limit="..."}), so
 * an operator sees which limit to raise. The names are the config keys. */
enum tr_limit {
    TR_LIMIT_MAX_HEADERS = 0, /* limits.max_headers */
    TR_LIMIT_COUNT,
};
void tr_metrics_limit(struct tr_metrics *m, enum tr_limit l);
/* "max_headers": the config key of a limit, for log lines. */
const char *tr_limit_name(enum tr_limit l);

/* Per-cluster series (labelled cluster="NAME"): outlier detection and the
 * circuit breakers. cluster is an interned name. */
enum tr_cluster_metric {
    TR_CM_EJECTIONS = 0,        /* trellis_outlier_ejections_total */
    TR_CM_EJECTED,              /* trellis_outlier_ejected_endpoints (gauge: +1/-1) */
    TR_CM_EJECTIONS_SKIPPED,    /* trellis_outlier_ejections_skipped_total (max_ejection_percent) */
    TR_CM_OVERFLOW_CONNECTIONS, /* trellis_upstream_overflow_total{limit=...}: */
    TR_CM_OVERFLOW_PENDING,     /*   circuit_breakers.max_connections, .max_pending_requests, */
    TR_CM_OVERFLOW_REQUESTS,    /*   .max_requests, and pool.max_connections (per endpoint) */
    TR_CM_OVERFLOW_ENDPOINT_CONNECTIONS,
    TR_CM_COUNT,
};
void tr_metrics_cluster(struct tr_metrics *m, const char *cluster, enum tr_cluster_metric c,
                        int64_t delta);

/* TLS handshake failures by direction (0 inbound, 1 outbound) and reason
 * (a constant string from tr_tls_failure_reason; interned internally). */
void tr_metrics_tls_failure(struct tr_metrics *m, int outbound, const char *reason);

/* DNS lookups of cluster endpoint names (dns/resolver.c, main thread):
 * trellis_dns_resolutions_total{cluster,result}, one count per cluster that
 * uses the name. cluster is interned; at most TR_METRICS_DNS_CAP clusters
 * get their own series, the rest count under cluster="other". */
enum tr_dns_result {
    TR_DNS_RESULT_SUCCESS = 0, /* addresses */
    TR_DNS_RESULT_EMPTY,       /* NXDOMAIN, or no record of the family */
    TR_DNS_RESULT_FAILURE,     /* SERVFAIL, REFUSED, timeout, bad answer: last answer kept */
    TR_DNS_RESULT_COUNT,
};
#define TR_METRICS_DNS_CAP 4096
void tr_metrics_dns(const char *cluster, enum tr_dns_result r);

/* Render every worker's series, summed, in Prometheus text format (label
 * values escaped). Returns a malloc'd string (caller frees) and its length;
 * NULL with errno E2BIG if the text would exceed TR_METRICS_TEXT_MAX (an
 * error, never a cut exposition), ENOMEM if memory ran out. */
#define TR_METRICS_TEXT_MAX (64u * 1024u * 1024u)
char *tr_metrics_render(size_t *len);

/* Process-level gauges/counters set by the main thread. */
/* The configuration generation in force; a lower value than the one shown
 * is ignored (workers report adoptions concurrently). */
void tr_metrics_raise_config_generation(uint64_t gen);
void tr_metrics_config_reload(bool ok);

/* A proxy run by a control plane (control/client.h): what the exposition
 * shows of it, read at scrape time on the main thread (the admin endpoint's
 * and the client's thread). */
struct tr_metrics_control {
    bool connected;
    uint64_t version, acks, nacks, certificates, connects;
    int64_t cert_not_after; /* unix seconds; 0: none yet */
};
void tr_metrics_set_control_source(void (*fill)(struct tr_metrics_control *out));

#endif
