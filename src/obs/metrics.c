#include "obs/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include "core/fmt.h"
#include "event/loop.h"

#define MAX_WORKERS     256
#define HTTP_SERIES_CAP 4096 /* per worker; more distinct label sets go to overflow */
#define TCP_SERIES_CAP  1024
#define TLS_FAIL_CAP    64
#define CLUSTER_CAP     4096 /* per worker; more clusters with events share the last slot */
#define INTERN_CAP      65536

/* Istio's default buckets. */
static const double dur_bounds_ms[] = {0.5,   1,      5,      10,      25,     50,    100,
                                       250,   500,    1000,   2500,    5000,   10000, 30000,
                                       60000, 300000, 600000, 1800000, 3600000};
#define N_DUR (sizeof(dur_bounds_ms) / sizeof(dur_bounds_ms[0]))
static const uint64_t size_bounds[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000};
#define N_SIZE (sizeof(size_bounds) / sizeof(size_bounds[0]))

typedef _Atomic uint64_t counter_t;

/* Single writer: load + add + store, relaxed; readers see torn-free words. */
static inline void counter_add(counter_t *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}
static inline uint64_t counter_get(counter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

struct http_series {
    _Atomic uint32_t used; /* published with release once key is written */
    struct tr_metric_labels labels;
    uint16_t code;
    uint16_t flags;
    counter_t count;
    counter_t dur_sum_us;
    counter_t dur[N_DUR + 1];
    counter_t req_sum;
    counter_t req[N_SIZE + 1];
    counter_t resp_sum;
    counter_t resp[N_SIZE + 1];
};

struct tcp_series {
    _Atomic uint32_t used;
    struct tr_metric_labels labels;
    uint16_t flags;
    counter_t opened;
    counter_t closed;
    counter_t sent;
    counter_t received;
};

struct tls_fail_series {
    _Atomic uint32_t used;
    int outbound;
    const char *reason;
    counter_t count;
};

struct cluster_series {
    _Atomic(const char *) cluster; /* interned; published with release */
    counter_t v[TR_CM_COUNT];
};

/* One external authorizer's checks by result (EXT_AUTHZ_CAP per worker; more
 * authorizers share the last slot, rendered authorizer=""). */
#define EXT_AUTHZ_CAP 64
struct ext_authz_series {
    _Atomic(const char *) name; /* interned; published with release */
    counter_t v[TR_EXT_AUTHZ_RESULT_COUNT];
};

struct tr_metrics {
    struct cluster_series *clusters; /* CLUSTER_CAP + 1 (last: overflow, cluster "") */
    struct http_series *http;        /* HTTP_SERIES_CAP + 1 (last: overflow) */
    struct tcp_series *tcp;          /* TCP_SERIES_CAP + 1 */
    struct tls_fail_series tls_fail[TLS_FAIL_CAP];
    counter_t counters[TR_C_COUNT];
    counter_t limits[TR_LIMIT_COUNT];
    counter_t retries[TR_RETRY_REASON_COUNT];
    counter_t mirrors[TR_MIRROR_RESULT_COUNT];
    counter_t jwks_fetches[TR_JWKS_FETCH_RESULT_COUNT];
    struct ext_authz_series ext_authz[EXT_AUTHZ_CAP + 1];
};

static struct tr_metrics *_Atomic workers[MAX_WORKERS];
static _Atomic uint64_t config_generation;
static _Atomic uint64_t reloads_ok, reloads_failed;

/* ---- interning ---- */

static mtx_t intern_lock;
static once_flag intern_once = ONCE_FLAG_INIT;
static const char **intern_table; /* open addressing */
static size_t intern_count;

static void intern_init(void)
{
    mtx_init(&intern_lock, mtx_plain);
    intern_table = calloc(INTERN_CAP, sizeof(*intern_table));
}

static uint64_t hash_bytes(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

const char *tr_metrics_intern(const char *s)
{
    if (s == NULL)
        return NULL;
    call_once(&intern_once, intern_init);
    if (intern_table == NULL)
        return "unknown";
    mtx_lock(&intern_lock);
    size_t i = hash_bytes(s) & (INTERN_CAP - 1);
    const char *found = "unknown";
    while (intern_table[i] != NULL) {
        if (strcmp(intern_table[i], s) == 0) {
            found = intern_table[i];
            goto out;
        }
        i = (i + 1) & (INTERN_CAP - 1);
    }
    if (intern_count < INTERN_CAP / 2) { /* bounded: label cardinality is capped */
        char *copy = strdup(s);
        if (copy != NULL) {
            intern_table[i] = copy;
            intern_count++;
            found = copy;
        }
    }
out:
    mtx_unlock(&intern_lock);
    return found;
}

/* ---- per-worker tables ---- */

struct tr_metrics *tr_metrics_new(unsigned index)
{
    if (index >= MAX_WORKERS)
        return NULL;
    struct tr_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    /* calloc'd pages stay untouched (and cost no RSS) until a series lands. */
    m->http = calloc(HTTP_SERIES_CAP + 1, sizeof(*m->http));
    m->tcp = calloc(TCP_SERIES_CAP + 1, sizeof(*m->tcp));
    m->clusters = calloc(CLUSTER_CAP + 1, sizeof(*m->clusters));
    if (m->http == NULL || m->tcp == NULL || m->clusters == NULL) {
        free(m->http);
        free(m->tcp);
        free(m->clusters);
        free(m);
        return NULL;
    }
    atomic_store_explicit(&workers[index], m, memory_order_release);
    return m;
}

static uint64_t labels_hash(const struct tr_metric_labels *l, uint64_t extra)
{
    uint64_t h = extra * 0x9e3779b97f4a7c15ull;
    const uintptr_t words[] = {(uintptr_t)l->reporter | ((uintptr_t)l->protocol << 8) |
                                   ((uintptr_t)l->mtls << 16) | ((uintptr_t)l->grpc << 24),
                               (uintptr_t)l->source_workload,
                               (uintptr_t)l->source_namespace,
                               (uintptr_t)l->source_principal,
                               (uintptr_t)l->destination_workload,
                               (uintptr_t)l->destination_namespace,
                               (uintptr_t)l->destination_principal,
                               (uintptr_t)l->destination_service};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        h = (h ^ words[i]) * 0xff51afd7ed558ccdull;
    return h ^ (h >> 29);
}

static bool labels_eq(const struct tr_metric_labels *a, const struct tr_metric_labels *b)
{
    return a->reporter == b->reporter && a->protocol == b->protocol && a->mtls == b->mtls &&
           a->grpc == b->grpc && a->source_workload == b->source_workload &&
           a->source_namespace == b->source_namespace &&
           a->source_principal == b->source_principal &&
           a->destination_workload == b->destination_workload &&
           a->destination_namespace == b->destination_namespace &&
           a->destination_principal == b->destination_principal &&
           a->destination_service == b->destination_service;
}

static struct http_series *http_find(struct tr_metrics *m, const struct tr_metric_labels *l,
                                     uint16_t code, uint16_t flags)
{
    uint64_t h = labels_hash(l, ((uint64_t)code << 16) | flags);
    for (size_t probe = 0; probe < 64; probe++) {
        struct http_series *s = &m->http[(h + probe) & (HTTP_SERIES_CAP - 1)];
        if (atomic_load_explicit(&s->used, memory_order_relaxed) == 0) {
            s->labels = *l;
            s->code = code;
            s->flags = flags;
            atomic_store_explicit(&s->used, 1, memory_order_release);
            return s;
        }
        if (s->code == code && s->flags == flags && labels_eq(&s->labels, l))
            return s;
    }
    return &m->http[HTTP_SERIES_CAP]; /* overflow series: counted, labelled "overflow" */
}

static unsigned dur_bucket(uint64_t us)
{
    unsigned i = 0;
    while (i < N_DUR && (double)us > dur_bounds_ms[i] * 1000.0)
        i++;
    return i;
}

static unsigned size_bucket(uint64_t v)
{
    unsigned i = 0;
    while (i < N_SIZE && v > size_bounds[i])
        i++;
    return i;
}

void tr_metrics_http(struct tr_metrics *m, const struct tr_metric_labels *l, uint16_t code,
                     uint16_t flags, uint64_t duration_us, uint64_t req_bytes, uint64_t resp_bytes)
{
    struct http_series *s = http_find(m, l, code, flags);
    counter_add(&s->count, 1);
    counter_add(&s->dur_sum_us, duration_us);
    counter_add(&s->dur[dur_bucket(duration_us)], 1);
    counter_add(&s->req_sum, req_bytes);
    counter_add(&s->req[size_bucket(req_bytes)], 1);
    counter_add(&s->resp_sum, resp_bytes);
    counter_add(&s->resp[size_bucket(resp_bytes)], 1);
}

static struct tcp_series *tcp_find(struct tr_metrics *m, const struct tr_metric_labels *l,
                                   uint16_t flags)
{
    uint64_t h = labels_hash(l, flags);
    for (size_t probe = 0; probe < 64; probe++) {
        struct tcp_series *s = &m->tcp[(h + probe) & (TCP_SERIES_CAP - 1)];
        if (atomic_load_explicit(&s->used, memory_order_relaxed) == 0) {
            s->labels = *l;
            s->flags = flags;
            atomic_store_explicit(&s->used, 1, memory_order_release);
            return s;
        }
        if (s->flags == flags && labels_eq(&s->labels, l))
            return s;
    }
    return &m->tcp[TCP_SERIES_CAP];
}

void tr_metrics_tcp_open(struct tr_metrics *m, const struct tr_metric_labels *l)
{
    counter_add(&tcp_find(m, l, 0)->opened, 1);
}

void tr_metrics_tcp_close(struct tr_metrics *m, const struct tr_metric_labels *l, uint16_t flags,
                          uint64_t sent, uint64_t received)
{
    struct tcp_series *s = tcp_find(m, l, 0);
    counter_add(&s->closed, 1);
    counter_add(&s->sent, sent);
    counter_add(&s->received, received);
    (void)flags; /* Istio's TCP series carry response_flags only on close; kept on one series */
}

void tr_metrics_count(struct tr_metrics *m, enum tr_counter c, int64_t delta)
{
    counter_add(&m->counters[c], (uint64_t)delta);
}

void tr_metrics_retry(struct tr_metrics *m, enum tr_retry_reason r)
{
    counter_add(&m->retries[r], 1);
}

void tr_metrics_mirror(struct tr_metrics *m, enum tr_mirror_result r)
{
    counter_add(&m->mirrors[r], 1);
}

void tr_metrics_ext_authz(struct tr_metrics *m, const char *authorizer, enum tr_ext_authz_result r)
{
    struct ext_authz_series *s = &m->ext_authz[EXT_AUTHZ_CAP];
    for (size_t i = 0; authorizer != NULL && i < EXT_AUTHZ_CAP; i++) {
        const char *k = atomic_load_explicit(&m->ext_authz[i].name, memory_order_relaxed);
        if (k == NULL) {
            atomic_store_explicit(&m->ext_authz[i].name, authorizer, memory_order_release);
            s = &m->ext_authz[i];
            break;
        }
        if (k == authorizer) {
            s = &m->ext_authz[i];
            break;
        }
    }
    counter_add(&s->v[r], 1);
}

void tr_metrics_jwks_fetch(struct tr_metrics *m, enum tr_jwks_fetch_result r)
{
    counter_add(&m->jwks_fetches[r], 1);
}

void tr_metrics_limit(struct tr_metrics *m, enum tr_limit l)
{
    counter_add(&m->limits[l], 1);
}

const char *tr_limit_name(enum tr_limit l)
{
    static const char *const names[TR_LIMIT_COUNT] = {"max_headers"};
    return (unsigned)l < TR_LIMIT_COUNT ? names[l] : "unknown";
}

void tr_metrics_tls_failure(struct tr_metrics *m, int outbound, const char *reason)
{
    for (size_t i = 0; i < TLS_FAIL_CAP; i++) {
        struct tls_fail_series *s = &m->tls_fail[i];
        if (atomic_load_explicit(&s->used, memory_order_relaxed) == 0) {
            s->outbound = outbound;
            s->reason = reason;
            atomic_store_explicit(&s->used, 1, memory_order_release);
        } else if (s->outbound != outbound || strcmp(s->reason, reason) != 0) {
            continue;
        }
        counter_add(&s->count, 1);
        return;
    }
}

void tr_metrics_cluster(struct tr_metrics *m, const char *cluster, enum tr_cluster_metric c,
                        int64_t delta)
{
    if (m == NULL || cluster == NULL)
        return;
    uint64_t h = (uint64_t)(uintptr_t)cluster * 0x9e3779b97f4a7c15ull;
    struct cluster_series *s = &m->clusters[CLUSTER_CAP];
    for (size_t probe = 0; probe < 64; probe++) {
        struct cluster_series *t = &m->clusters[((h >> 20) + probe) & (CLUSTER_CAP - 1)];
        const char *k = atomic_load_explicit(&t->cluster, memory_order_relaxed);
        if (k == NULL) {
            atomic_store_explicit(&t->cluster, cluster, memory_order_release);
            s = t;
            break;
        }
        if (k == cluster) {
            s = t;
            break;
        }
    }
    counter_add(&s->v[c], (uint64_t)delta);
}

void tr_metrics_raise_config_generation(uint64_t gen)
{
    uint64_t cur = atomic_load(&config_generation);
    while (cur < gen && !atomic_compare_exchange_weak(&config_generation, &cur, gen))
        ;
}

void tr_metrics_config_reload(bool ok)
{
    atomic_fetch_add(ok ? &reloads_ok : &reloads_failed, 1);
}

/* ---- DNS lookups (one writer: the main thread; read at scrape) ---- */

struct dns_series {
    _Atomic(const char *) cluster; /* published once its counters are zero */
    counter_t count[TR_DNS_RESULT_COUNT];
};
static struct dns_series dns_series[TR_METRICS_DNS_CAP + 1]; /* last: "other" */

void tr_metrics_dns(const char *cluster, enum tr_dns_result r)
{
    if ((unsigned)r >= TR_DNS_RESULT_COUNT)
        return;
    size_t i = 0;
    for (; i < TR_METRICS_DNS_CAP; i++) {
        const char *c = atomic_load_explicit(&dns_series[i].cluster, memory_order_relaxed);
        if (c == cluster)
            break;
        if (c == NULL) {
            atomic_store_explicit(&dns_series[i].cluster, cluster, memory_order_release);
            break;
        }
    }
    counter_add(&dns_series[i].count[r], 1);
}

/* ---- rendering ---- */

static const char *const flag_names[TR_RF_COUNT] = {"NR", "UH",  "UF",  "UT",  "UC",
                                                    "DC", "UO",  "DPE", "UPE", "RBAC",
                                                    "DI", "URX", "HO",  "FI",  "UAEX"};

bool tr_response_flags_append(struct tr_fmt *f, uint16_t flags)
{
    char buf[56]; /* every flag: 51 bytes */
    struct tr_fmt b;
    tr_fmt_init_fixed(&b, buf, sizeof(buf));
    for (unsigned i = 0; i < TR_RF_COUNT; i++)
        if (flags & (1u << i))
            tr_fmt_printf(&b, "%s%s", b.len != 0 ? "," : "", flag_names[i]);
    if (b.len == 0)
        tr_fmt_cstr(&b, "-");
    return tr_fmt_bytes(f, buf, b.len);
}

/* name="value" with the value escaped; NULL renders "unknown". */
static void label(struct tr_fmt *o, const char *name, const char *value)
{
    if (value == NULL)
        value = "unknown";
    tr_fmt_printf(o, "%s=\"", name);
    tr_fmt_prom_label_value(o, value, strlen(value));
    tr_fmt_cstr(o, "\"");
}

/* HTTP/2 is "http/2" (the HTTP/2 issue asks for it; Istio itself says "http"). */
static const char *const proto_names[] = {"http", "http/2", "grpc", "tcp"};

static void labels_append(struct tr_fmt *o, const struct tr_metric_labels *l)
{
    const struct {
        const char *name, *value;
    } v[] = {
        {"reporter", l->reporter == TR_REPORTER_SOURCE ? "source" : "destination"},
        {"source_workload", l->source_workload},
        {"source_workload_namespace", l->source_namespace},
        {"source_principal", l->source_principal},
        {"destination_workload", l->destination_workload},
        {"destination_workload_namespace", l->destination_namespace},
        {"destination_principal", l->destination_principal},
        {"destination_service", l->destination_service},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        if (i > 0)
            tr_fmt_cstr(o, ",");
        label(o, v[i].name, v[i].value);
    }
    tr_fmt_printf(o, ",request_protocol=\"%s\",connection_security_policy=\"%s\"",
                  proto_names[l->protocol & 3],
                  l->mtls == TR_SEC_MUTUAL_TLS ? "mutual_tls"
                  : l->mtls == TR_SEC_UNKNOWN  ? "unknown"
                                               : "none");
    if (l->protocol != TR_REQ_PROTO_TCP) {
        if (l->grpc != 0)
            tr_fmt_printf(o, ",grpc_response_status=\"%u\"", (unsigned)l->grpc - 1);
        else
            tr_fmt_cstr(o, ",grpc_response_status=\"\"");
    }
}

/* Aggregation: series from all workers with the same key are summed. The
 * scrape path may allocate; it is not the request path. */
struct agg_http {
    struct tr_metric_labels labels;
    uint16_t code, flags;
    uint64_t count, dur_sum_us, dur[N_DUR + 1], req_sum, req[N_SIZE + 1], resp_sum,
        resp[N_SIZE + 1];
    char *key; /* its labels as text, escaped, with response_code and response_flags */
    size_t key_len;
};

static void render_hist(struct tr_fmt *o, const char *name, const struct agg_http *a,
                        const uint64_t *buckets, const char *const *bounds, size_t n, double sum)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= n; i++) {
        cum += buckets[i];
        tr_fmt_printf(o, "%s_bucket{", name);
        tr_fmt_bytes(o, a->key, a->key_len);
        tr_fmt_printf(o, ",le=\"%s\"} %" PRIu64 "\n", i < n ? bounds[i] : "+Inf", cum);
    }
    tr_fmt_printf(o, "%s_sum{", name);
    tr_fmt_bytes(o, a->key, a->key_len);
    tr_fmt_printf(o, "} %.3f\n", sum);
    tr_fmt_printf(o, "%s_count{", name);
    tr_fmt_bytes(o, a->key, a->key_len);
    tr_fmt_printf(o, "} %" PRIu64 "\n", cum);
}

/* Every worker's HTTP series summed by key into *out (malloc'd, caller
 * frees); false if memory ran out. */
static bool aggregate_http(struct agg_http **out, size_t *n_out)
{
    size_t cap = 1024, n = 0;
    struct agg_http *agg = calloc(cap, sizeof(*agg));
    if (agg == NULL)
        return false;
    for (unsigned w = 0; w < MAX_WORKERS; w++) {
        struct tr_metrics *m = atomic_load_explicit(&workers[w], memory_order_acquire);
        if (m == NULL)
            continue;
        for (size_t i = 0; i <= HTTP_SERIES_CAP; i++) {
            struct http_series *s = &m->http[i];
            if (i < HTTP_SERIES_CAP && atomic_load_explicit(&s->used, memory_order_acquire) == 0)
                continue;
            if (i == HTTP_SERIES_CAP && counter_get(&s->count) == 0)
                continue;
            size_t j = 0;
            while (j < n && !(agg[j].code == s->code && agg[j].flags == s->flags &&
                              labels_eq(&agg[j].labels, &s->labels)))
                j++;
            if (j == n) {
                if (n == cap) {
                    struct agg_http *g = realloc(agg, cap * 2 * sizeof(*agg));
                    if (g == NULL) {
                        free(agg);
                        return false;
                    }
                    agg = g;
                    cap *= 2;
                }
                memset(&agg[n], 0, sizeof(agg[n]));
                agg[n].labels = s->labels;
                agg[n].code = s->code;
                agg[n].flags = s->flags;
                n++;
            }
            struct agg_http *a = &agg[j];
            a->count += counter_get(&s->count);
            a->dur_sum_us += counter_get(&s->dur_sum_us);
            a->req_sum += counter_get(&s->req_sum);
            a->resp_sum += counter_get(&s->resp_sum);
            for (size_t b = 0; b <= N_DUR; b++)
                a->dur[b] += counter_get(&s->dur[b]);
            for (size_t b = 0; b <= N_SIZE; b++) {
                a->req[b] += counter_get(&s->req[b]);
                a->resp[b] += counter_get(&s->resp[b]);
            }
        }
    }
    *out = agg;
    *n_out = n;
    return true;
}

/* The label text of each aggregated series, escaped once and used for every
 * line of it. False if it is too long or memory ran out (f's flags say). */
static bool http_keys(struct agg_http *agg, size_t n, struct tr_fmt *o)
{
    for (size_t j = 0; j < n; j++) {
        struct tr_fmt k;
        tr_fmt_init_growable(&k, TR_METRICS_TEXT_MAX);
        labels_append(&k, &agg[j].labels);
        tr_fmt_printf(&k, ",response_code=\"%u\",response_flags=\"", agg[j].code);
        tr_response_flags_append(&k, agg[j].flags);
        tr_fmt_cstr(&k, "\"");
        bool oom = k.oom;
        agg[j].key = tr_fmt_take(&k, &agg[j].key_len);
        if (agg[j].key == NULL) {
            o->truncated = true;
            o->oom = oom;
            return false;
        }
    }
    return true;
}

static void render_http(struct tr_fmt *o, struct agg_http *agg, size_t n)
{
    char dur_txt[N_DUR][16], size_txt[N_SIZE][16];
    const char *dur_b[N_DUR], *size_b[N_SIZE];
    for (size_t i = 0; i < N_DUR; i++) {
        struct tr_fmt t;
        tr_fmt_init_fixed(&t, dur_txt[i], sizeof(dur_txt[i]));
        tr_fmt_printf(&t, "%g", dur_bounds_ms[i]);
        dur_b[i] = dur_txt[i];
    }
    for (size_t i = 0; i < N_SIZE; i++) {
        struct tr_fmt t;
        tr_fmt_init_fixed(&t, size_txt[i], sizeof(size_txt[i]));
        tr_fmt_printf(&t, "%" PRIu64, size_bounds[i]);
        size_b[i] = size_txt[i];
    }

    tr_fmt_cstr(o, "# TYPE istio_requests_total counter\n");
    for (size_t j = 0; j < n; j++) {
        tr_fmt_cstr(o, "istio_requests_total{");
        tr_fmt_bytes(o, agg[j].key, agg[j].key_len);
        tr_fmt_printf(o, "} %" PRIu64 "\n", agg[j].count);
    }
    static const char *const hists[] = {"istio_request_duration_milliseconds",
                                        "istio_request_bytes", "istio_response_bytes"};
    for (size_t h = 0; h < 3; h++) {
        tr_fmt_printf(o, "# TYPE %s histogram\n", hists[h]);
        for (size_t j = 0; j < n; j++) {
            const struct agg_http *a = &agg[j];
            if (h == 0)
                render_hist(o, hists[h], a, a->dur, dur_b, N_DUR, (double)a->dur_sum_us / 1000.0);
            else if (h == 1)
                render_hist(o, hists[h], a, a->req, size_b, N_SIZE, (double)a->req_sum);
            else
                render_hist(o, hists[h], a, a->resp, size_b, N_SIZE, (double)a->resp_sum);
        }
    }
}

/* TCP series: summed across workers the same way. */
static void render_tcp(struct tr_fmt *o)
{
    static const char *const tcp_names[] = {
        "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
        "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"};
    for (int k = 0; k < 4; k++) {
        tr_fmt_printf(o, "# TYPE %s counter\n", tcp_names[k]);
        for (unsigned w = 0; w < MAX_WORKERS; w++) {
            struct tr_metrics *m = atomic_load_explicit(&workers[w], memory_order_acquire);
            if (m == NULL)
                continue;
            for (size_t i = 0; i < TCP_SERIES_CAP; i++) {
                struct tcp_series *s = &m->tcp[i];
                if (atomic_load_explicit(&s->used, memory_order_acquire) == 0)
                    continue;
                /* Sum this key over workers only once: at its first worker. */
                bool seen = false;
                for (unsigned v = 0; v < w && !seen; v++) {
                    struct tr_metrics *mv = atomic_load_explicit(&workers[v], memory_order_acquire);
                    for (size_t q = 0; mv != NULL && q < TCP_SERIES_CAP; q++)
                        if (atomic_load_explicit(&mv->tcp[q].used, memory_order_acquire) &&
                            labels_eq(&mv->tcp[q].labels, &s->labels)) {
                            seen = true;
                            break;
                        }
                }
                if (seen)
                    continue;
                uint64_t total = 0;
                for (unsigned v = w; v < MAX_WORKERS; v++) {
                    struct tr_metrics *mv = atomic_load_explicit(&workers[v], memory_order_acquire);
                    for (size_t q = 0; mv != NULL && q < TCP_SERIES_CAP; q++) {
                        struct tcp_series *t = &mv->tcp[q];
                        if (!atomic_load_explicit(&t->used, memory_order_acquire) ||
                            !labels_eq(&t->labels, &s->labels))
                            continue;
                        counter_t *c[] = {&t->opened, &t->closed, &t->sent, &t->received};
                        total += counter_get(c[k]);
                    }
                }
                tr_fmt_printf(o, "%s{", tcp_names[k]);
                labels_append(o, &s->labels);
                tr_fmt_printf(o, ",response_flags=\"-\"} %" PRIu64 "\n", total);
            }
        }
    }
}

/* The external authorizers' checks of every worker, summed by authorizer. */
static void render_ext_authz(struct tr_fmt *o)
{
    static const char *const results[TR_EXT_AUTHZ_RESULT_COUNT] = {"allowed", "denied", "error",
                                                                   "failed_open"};
    const char *names[EXT_AUTHZ_CAP + 1];
    uint64_t v[EXT_AUTHZ_CAP + 1][TR_EXT_AUTHZ_RESULT_COUNT];
    size_t n = 0;
    memset(v, 0, sizeof(v));
    for (unsigned w = 0; w < MAX_WORKERS; w++) {
        struct tr_metrics *m = atomic_load_explicit(&workers[w], memory_order_acquire);
        for (size_t i = 0; m != NULL && i <= EXT_AUTHZ_CAP; i++) {
            const char *k = i < EXT_AUTHZ_CAP
                                ? atomic_load_explicit(&m->ext_authz[i].name, memory_order_acquire)
                                : "";
            if (k == NULL)
                break; /* slots fill in order */
            size_t j = 0;
            while (j < n && names[j] != k)
                j++;
            if (j == n) {
                if (n == EXT_AUTHZ_CAP + 1)
                    j = EXT_AUTHZ_CAP; /* more names than slots: the last shares */
                else
                    names[n++] = k;
            }
            for (int r = 0; r < TR_EXT_AUTHZ_RESULT_COUNT; r++)
                v[j][r] += counter_get(&m->ext_authz[i].v[r]);
        }
    }
    tr_fmt_cstr(o, "# TYPE trellis_ext_authz_checks_total counter\n");
    for (size_t j = 0; j < n; j++) {
        bool any = false;
        for (int r = 0; r < TR_EXT_AUTHZ_RESULT_COUNT; r++)
            any |= v[j][r] != 0;
        if (names[j][0] == '\0' && !any)
            continue; /* the overflow slot, unused */
        for (int r = 0; r < TR_EXT_AUTHZ_RESULT_COUNT; r++) {
            tr_fmt_cstr(o, "trellis_ext_authz_checks_total{");
            label(o, "authorizer", names[j]);
            tr_fmt_printf(o, ",result=\"%s\"} %" PRIu64 "\n", results[r], v[j][r]);
        }
    }
}

/* The per-cluster series of every worker, summed by cluster. */
static void render_clusters(struct tr_fmt *o)
{
    size_t cap = 64, n = 0;
    struct agg_cluster {
        const char *cluster; /* "" for the overflow slot */
        uint64_t v[TR_CM_COUNT];
    } *agg = calloc(cap, sizeof(*agg));
    if (agg == NULL) {
        o->oom = o->truncated = true;
        return;
    }
    for (unsigned w = 0; w < MAX_WORKERS; w++) {
        struct tr_metrics *m = atomic_load_explicit(&workers[w], memory_order_acquire);
        for (size_t i = 0; m != NULL && i <= CLUSTER_CAP; i++) {
            struct cluster_series *s = &m->clusters[i];
            const char *k =
                i < CLUSTER_CAP ? atomic_load_explicit(&s->cluster, memory_order_acquire) : "";
            if (k == NULL)
                continue;
            size_t j = 0;
            while (j < n && agg[j].cluster != k)
                j++;
            if (j == n) {
                if (n == cap) {
                    struct agg_cluster *g = realloc(agg, cap * 2 * sizeof(*agg));
                    if (g == NULL) {
                        free(agg);
                        o->oom = o->truncated = true;
                        return;
                    }
                    agg = g;
                    cap *= 2;
                }
                memset(&agg[n], 0, sizeof(agg[n]));
                agg[n++].cluster = k;
            }
            for (int c = 0; c < TR_CM_COUNT; c++)
                agg[j].v[c] += counter_get(&s->v[c]);
        }
    }
    static const struct {
        const char *name, *type;
    } families[] = {
        {"trellis_outlier_ejections_total", "counter"},
        {"trellis_outlier_ejected_endpoints", "gauge"},
        {"trellis_outlier_ejections_skipped_total", "counter"},
    };
    for (int c = 0; c <= TR_CM_EJECTIONS_SKIPPED; c++) {
        tr_fmt_printf(o, "# TYPE %s %s\n", families[c].name, families[c].type);
        for (size_t j = 0; j < n; j++) {
            if (agg[j].cluster[0] == '\0' && agg[j].v[c] == 0)
                continue;
            tr_fmt_printf(o, "%s{", families[c].name);
            label(o, "cluster", agg[j].cluster);
            tr_fmt_printf(o, "} %" PRId64 "\n", (int64_t)agg[j].v[c]);
        }
    }
    static const char *const limits[] = {"circuit_breakers.max_connections",
                                         "circuit_breakers.max_pending_requests",
                                         "circuit_breakers.max_requests", "pool.max_connections"};
    tr_fmt_cstr(o, "# TYPE trellis_upstream_overflow_total counter\n");
    for (size_t j = 0; j < n; j++) {
        for (int c = TR_CM_OVERFLOW_CONNECTIONS; c < TR_CM_COUNT; c++) {
            if (agg[j].v[c] == 0)
                continue;
            tr_fmt_cstr(o, "trellis_upstream_overflow_total{");
            label(o, "cluster", agg[j].cluster);
            tr_fmt_printf(o, ",limit=\"%s\"} %" PRIu64 "\n", limits[c - TR_CM_OVERFLOW_CONNECTIONS],
                          agg[j].v[c]);
        }
    }
    free(agg);
}

static void render_process(struct tr_fmt *o)
{
    static const char *const counter_names[TR_C_COUNT] = {
        "trellis_downstream_connections_total",   "trellis_downstream_connections_active",
        "trellis_upstream_connections_total",     "trellis_upstream_connections_active",
        "trellis_upstream_requests_reused_total", "trellis_upstream_requests_resent_total",
        "trellis_http_parse_errors_total",        "trellis_tls_plaintext_refused_total",
        "trellis_upstream_tls_handshakes_total",  "trellis_upstream_tls_resumed_total",
        "trellis_tls_handshakes_deferred_total",  "trellis_upstream_retry_budget_exhausted_total",
        "trellis_capture_passthrough_total",      "trellis_capture_rejected_total",
    };
    for (int c = 0; c < TR_C_COUNT; c++) {
        uint64_t total = 0;
        for (unsigned w = 0; w < MAX_WORKERS; w++) {
            struct tr_metrics *m = atomic_load_explicit(&workers[w], memory_order_acquire);
            if (m != NULL)
                total += counter_get(&m->counters[c]);
        }
        bool gauge = c == TR_C_DOWNSTREAM_CX_ACTIVE || c == TR_C_UPSTREAM_CX_ACTIVE;
        tr_fmt_printf(o, "# TYPE %s %s\n%s %" PRId64 "\n", counter_names[c],
                      gauge ? "gauge" : "counter", counter_names[c], (int64_t)total);
    }

    /* Labelled counters: every label value always shown, 0 included. */
    static const char *const retry_reasons[TR_RETRY_REASON_COUNT] = {
        "connect_failure", "refused_stream", "reset", "per_try_timeout", "status", "grpc_status"};
    static const char *const mirror_results[TR_MIRROR_RESULT_COUNT] = {
        "completed", "failed", "body_too_large", "incomplete", "overflow", "unsupported"};
    static const char *const jwks_results[TR_JWKS_FETCH_RESULT_COUNT] = {"ok", "connect", "status",
                                                                         "body", "timeout"};
    static const struct {
        const char *name, *label;
        size_t off, n;
        const char *const *values;
    } families[] = {
        {"trellis_upstream_requests_retried_total", "reason", offsetof(struct tr_metrics, retries),
         TR_RETRY_REASON_COUNT, retry_reasons},
        {"trellis_mirror_requests_total", "result", offsetof(struct tr_metrics, mirrors),
         TR_MIRROR_RESULT_COUNT, mirror_results},
        {"trellis_jwks_fetches_total", "result", offsetof(struct tr_metrics, jwks_fetches),
         TR_JWKS_FETCH_RESULT_COUNT, jwks_results},
    };
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
        tr_fmt_printf(o, "# TYPE %s counter\n", families[f].name);
        for (size_t i = 0; i < families[f].n; i++) {
            uint64_t total = 0;
            for (unsigned w = 0; w < MAX_WORKERS; w++) {
                struct tr_metrics *m = atomic_load_explicit(&workers[w], memory_order_acquire);
                if (m != NULL)
                    total += counter_get((counter_t *)((char *)m + families[f].off) + i);
            }
            tr_fmt_printf(o, "%s{%s=\"%s\"} %" PRIu64 "\n", families[f].name, families[f].label,
                          families[f].values[i], total);
        }
    }

    tr_fmt_cstr(o, "# TYPE trellis_limit_exceeded_total counter\n");
    for (int l = 0; l < TR_LIMIT_COUNT; l++) {
        uint64_t total = 0;
        for (unsigned w = 0; w < MAX_WORKERS; w++) {
            struct tr_metrics *m = atomic_load_explicit(&workers[w], memory_order_acquire);
            if (m != NULL)
                total += counter_get(&m->limits[l]);
        }
        tr_fmt_printf(o, "trellis_limit_exceeded_total{limit=\"%s\"} %" PRIu64 "\n",
                      tr_limit_name((enum tr_limit)l), total);
    }

    tr_fmt_cstr(o, "# TYPE trellis_tls_handshake_errors_total counter\n");
    struct {
        int outbound;
        const char *reason;
        uint64_t count;
    } fails[TLS_FAIL_CAP * 2];
    size_t n_fails = 0;
    for (unsigned w = 0; w < MAX_WORKERS; w++) {
        struct tr_metrics *m = atomic_load_explicit(&workers[w], memory_order_acquire);
        for (size_t i = 0; m != NULL && i < TLS_FAIL_CAP; i++) {
            struct tls_fail_series *s = &m->tls_fail[i];
            if (!atomic_load_explicit(&s->used, memory_order_acquire))
                continue;
            size_t j = 0;
            while (j < n_fails &&
                   !(fails[j].outbound == s->outbound && strcmp(fails[j].reason, s->reason) == 0))
                j++;
            if (j == n_fails) {
                if (n_fails == sizeof(fails) / sizeof(fails[0]))
                    continue;
                fails[n_fails].outbound = s->outbound;
                fails[n_fails].reason = s->reason;
                fails[n_fails].count = 0;
                n_fails++;
            }
            fails[j].count += counter_get(&s->count);
        }
    }
    for (size_t j = 0; j < n_fails; j++) {
        tr_fmt_printf(o, "trellis_tls_handshake_errors_total{direction=\"%s\",",
                      fails[j].outbound ? "outbound" : "inbound");
        label(o, "reason", fails[j].reason);
        tr_fmt_printf(o, "} %" PRIu64 "\n", fails[j].count);
    }
    render_clusters(o);
    render_ext_authz(o);
    tr_fmt_printf(o,
                  "# TYPE trellis_config_generation gauge\ntrellis_config_generation %" PRIu64 "\n"
                  "# TYPE trellis_config_reloads_total counter\n"
                  "trellis_config_reloads_total{result=\"ok\"} %" PRIu64 "\n"
                  "trellis_config_reloads_total{result=\"rejected\"} %" PRIu64 "\n",
                  atomic_load(&config_generation), atomic_load(&reloads_ok),
                  atomic_load(&reloads_failed));
}

static void (*control_source)(struct tr_metrics_control *out);

void tr_metrics_set_control_source(void (*fill)(struct tr_metrics_control *out))
{
    control_source = fill;
}

static void render_control(struct tr_fmt *o)
{
    if (control_source == NULL)
        return;
    struct tr_metrics_control m = {0};
    control_source(&m);
    tr_fmt_printf(o,
                  "# TYPE trellis_control_connected gauge\ntrellis_control_connected %d\n"
                  "# TYPE trellis_control_connects_total counter\n"
                  "trellis_control_connects_total %" PRIu64 "\n"
                  "# TYPE trellis_control_model_version gauge\n"
                  "trellis_control_model_version %" PRIu64 "\n"
                  "# TYPE trellis_control_models_total counter\n"
                  "trellis_control_models_total{result=\"ack\"} %" PRIu64 "\n"
                  "trellis_control_models_total{result=\"nack\"} %" PRIu64 "\n"
                  "# TYPE trellis_control_certificates_total counter\n"
                  "trellis_control_certificates_total %" PRIu64 "\n"
                  "# TYPE trellis_workload_cert_expiry_timestamp_seconds gauge\n"
                  "trellis_workload_cert_expiry_timestamp_seconds %" PRId64 "\n",
                  m.connected ? 1 : 0, m.connects, m.version, m.acks, m.nacks, m.certificates,
                  m.cert_not_after);
}

/* DNS lookups of cluster endpoint names, per cluster and result. */
static void render_dns(struct tr_fmt *o)
{
    static const char *const results[TR_DNS_RESULT_COUNT] = {"success", "empty", "failure"};
    tr_fmt_cstr(o, "# TYPE trellis_dns_resolutions_total counter\n");
    for (size_t i = 0; i <= TR_METRICS_DNS_CAP; i++) {
        const char *c = i < TR_METRICS_DNS_CAP
                            ? atomic_load_explicit(&dns_series[i].cluster, memory_order_acquire)
                            : "other";
        if (c == NULL)
            break;
        for (int r = 0; r < TR_DNS_RESULT_COUNT; r++) {
            uint64_t v = counter_get(&dns_series[i].count[r]);
            if (i == TR_METRICS_DNS_CAP && v == 0)
                continue;
            tr_fmt_cstr(o, "trellis_dns_resolutions_total{");
            label(o, "cluster", c);
            tr_fmt_printf(o, ",result=\"%s\"} %" PRIu64 "\n", results[r], v);
        }
    }
}

/* Event-loop turns of every loop thread (event/loop.h), labelled by thread
 * id so that they can be matched with /proc/PID/task/TID (e.g. schedstat). */
static void render_loops(struct tr_fmt *o)
{
    size_t n = 0;
    struct tr_loop_stats *st = NULL;
    if (!tr_loop_stats_all(&st, &n)) {
        o->oom = o->truncated = true; /* a scrape without them would be incomplete */
        return;
    }
    static const char *const phases[TR_LOOP_PHASE_COUNT] = {"io", "deferred", "timers"};
    static const struct {
        const char *name, *help;
    } hists[] = {
        {"trellis_event_loop_turn_seconds",
         "Duration of event-loop turns (epoll_wait return to end of deferred calls)."},
        {"trellis_event_loop_wakeup_delay_seconds",
         "How late epoll_wait returned after its timeout when nothing happened "
         "(scheduling delay)."},
    };
    for (int h = 0; h < 2; h++) {
        tr_fmt_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].name, hists[h].help,
                      hists[h].name);
        for (size_t i = 0; i < n; i++) {
            const struct tr_loop_stats *s = &st[i];
            if (s->tid == 0)
                continue; /* created, not running */
            const uint64_t *b = h == 0 ? s->turn_bucket : s->wakeup_bucket;
            uint64_t cum = 0;
            for (unsigned k = 0; k <= TR_LOOP_BUCKETS; k++) {
                cum += b[k];
                if (k < TR_LOOP_BUCKETS)
                    tr_fmt_printf(o, "%s_bucket{tid=\"%d\",le=\"%g\"} %" PRIu64 "\n", hists[h].name,
                                  s->tid, tr_loop_bucket_us[k] / 1e6, cum);
                else
                    tr_fmt_printf(o, "%s_bucket{tid=\"%d\",le=\"+Inf\"} %" PRIu64 "\n",
                                  hists[h].name, s->tid, cum);
            }
            tr_fmt_printf(o, "%s_sum{tid=\"%d\"} %.6f\n%s_count{tid=\"%d\"} %" PRIu64 "\n",
                          hists[h].name, s->tid,
                          (double)(h == 0 ? s->turn_sum_us : s->wakeup_late_sum_us) / 1e6,
                          hists[h].name, s->tid, cum);
        }
    }
    tr_fmt_printf(o,
                  "# HELP trellis_event_loop_slow_turns_total Turns of at least %u us.\n"
                  "# TYPE trellis_event_loop_slow_turns_total counter\n",
                  TR_LOOP_SLOW_TURN_US);
    for (size_t i = 0; i < n; i++)
        if (st[i].tid != 0)
            tr_fmt_printf(o, "trellis_event_loop_slow_turns_total{tid=\"%d\"} %" PRIu64 "\n",
                          st[i].tid, st[i].slow_turns);
    tr_fmt_cstr(o, "# TYPE trellis_event_loop_slow_turn_phase_seconds_total counter\n"
                   "# TYPE trellis_event_loop_slow_turn_calls_total counter\n"
                   "# TYPE trellis_event_loop_longest_turn_seconds gauge\n"
                   "# TYPE trellis_event_loop_longest_turn_start_seconds gauge\n"
                   "# TYPE trellis_event_loop_longest_turn_phase_seconds gauge\n"
                   "# TYPE trellis_event_loop_longest_turn_calls gauge\n");
    for (size_t i = 0; i < n; i++) {
        const struct tr_loop_stats *s = &st[i];
        if (s->tid == 0)
            continue;
        for (int p = 0; p < TR_LOOP_PHASE_COUNT; p++)
            tr_fmt_printf(
                o,
                "trellis_event_loop_slow_turn_phase_seconds_total{tid=\"%d\",phase=\"%s\"} %.6f\n"
                "trellis_event_loop_slow_turn_calls_total{tid=\"%d\",phase=\"%s\"} %" PRIu64 "\n",
                s->tid, phases[p], (double)s->slow_phase_us[p] / 1e6, s->tid, phases[p],
                s->slow_calls[p]);
        /* start: CLOCK_MONOTONIC, to place the turn within a measured run. */
        tr_fmt_printf(o,
                      "trellis_event_loop_longest_turn_seconds{tid=\"%d\"} %.6f\n"
                      "trellis_event_loop_longest_turn_start_seconds{tid=\"%d\"} %.6f\n",
                      s->tid, (double)s->longest.duration_us / 1e6, s->tid,
                      (double)s->longest.start_us / 1e6);
        for (int p = 0; p < TR_LOOP_PHASE_COUNT; p++)
            tr_fmt_printf(
                o,
                "trellis_event_loop_longest_turn_phase_seconds{tid=\"%d\",phase=\"%s\"} %.6f\n"
                "trellis_event_loop_longest_turn_calls{tid=\"%d\",phase=\"%s\"} %" PRIu64 "\n",
                s->tid, phases[p], (double)s->longest.phase_us[p] / 1e6, s->tid, phases[p],
                s->longest.calls[p]);
    }
    free(st);
}

char *tr_metrics_render(size_t *len)
{
    struct tr_fmt o;
    tr_fmt_init_growable(&o, TR_METRICS_TEXT_MAX);
    struct agg_http *agg = NULL;
    size_t n = 0;
    if (!aggregate_http(&agg, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    if (http_keys(agg, n, &o)) {
        render_http(&o, agg, n);
        render_tcp(&o);
        render_process(&o);
        render_dns(&o);
        render_control(&o);
        render_loops(&o);
    }
    for (size_t j = 0; j < n; j++)
        free(agg[j].key);
    free(agg);
    bool oom = o.oom;
    char *text = tr_fmt_take(&o, len);
    if (text == NULL)
        errno = oom ? ENOMEM : E2BIG;
    return text;
}
