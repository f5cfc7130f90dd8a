/* bench/micro/bench_route_match.c: tr_router_match over a route table of
 * 1,000 virtual hosts x 10 routes (issue 8: "route matching with 10,000
 * routes across 1,000 hosts", target p99 under 1 us for exact/prefix rules).
 *
 * The table is written as native YAML and read by tr_config_load_buffer, as a
 * proxy reads it, then compiled with tr_router_build. Each virtual host is a
 * service, svc-NNNN.ns-MM, with three domains (the FQDN, "svc-NNNN.ns-MM" and
 * the FQDN with :9080) and the same ten routes, first match wins:
 *
 *   pos  "full" mix                       "plain" mix (exact/prefix only)
 *   0    exact  /healthz                  same
 *   1    prefix /api/ + header x-canary   prefix /canary/
 *   2    exact  /api/v1/users/me          same
 *   3    prefix /api/v1/users/            same
 *   4    exact  /api/v1/orders            same
 *   5    prefix /api/v1/orders/           same
 *   6    regex  /api/v2/items/[0-9]+      exact /api/v2/items
 *   7    prefix /static/                  same
 *   8    exact  /api/v1/cart              same
 *   9    prefix /api/                     same
 *
 * so "full" is 4 exact, 4 prefix, 1 header (with a prefix) and 1 regex route
 * per host. Requests come in twelve classes: a hit on each position (the
 * router tries every route before it), a path no route takes (all ten tried,
 * the regex too) and a host no virtual host has. Hosts are drawn uniformly
 * over the 1,000 services and their three spellings; every request carries
 * six ordinary headers, hits on position 1 also x-canary: 1. Before timing,
 * every request's answer is checked against the route it must hit.
 *
 * Timing: CLOCK_MONOTONIC around batches of 64 consecutive lookups (a clock
 * read costs more than a lookup), divided by 64; the report gives quantiles
 * of these per-batch means. A batch mean is not one request's time: the
 * per-class runs (every request of a batch in the same class) are what bound
 * the cost of each kind of request, the mixed run is the average of a real
 * mix.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "core/arena.h"
#include "core/fmt.h"
#include "router/router.h"

#include "micro.h"

#define N_HOSTS         1000u
#define N_ROUTES        10u
#define N_CLASSES       (N_ROUTES + 2u) /* hits on 0..9, path miss, host miss */
#define CLASS_MISS_PATH N_ROUTES
#define CLASS_MISS_HOST (N_ROUTES + 1u)
#define BATCH           64u
#define MIXED_REQUESTS  16384u /* a multiple of BATCH */
#define CLASS_REQUESTS  4096u  /* per class, a multiple of BATCH */
#define HOST_TEXT       64u    /* bytes per host spelling, NUL included */
#define MAX_ROUNDS      5000u

enum mix { MIX_FULL = 0, MIX_PLAIN };

struct route_def {
    const char *match[2]; /* YAML of the match, per mix */
    const char *path[2];  /* a path that this route takes (and no earlier one) */
};

static const struct route_def ROUTES[N_ROUTES] = {
    {{"{path: {exact: /healthz}}", "{path: {exact: /healthz}}"}, {"/healthz", "/healthz"}},
    {{"{path: {prefix: /api/}, headers: [{name: x-canary, exact: \"1\"}]}",
      "{path: {prefix: /canary/}}"},
     {"/api/v1/users/7", "/canary/x"}},
    {{"{path: {exact: /api/v1/users/me}}", "{path: {exact: /api/v1/users/me}}"},
     {"/api/v1/users/me", "/api/v1/users/me"}},
    {{"{path: {prefix: /api/v1/users/}}", "{path: {prefix: /api/v1/users/}}"},
     {"/api/v1/users/42?fields=name", "/api/v1/users/42?fields=name"}},
    {{"{path: {exact: /api/v1/orders}}", "{path: {exact: /api/v1/orders}}"},
     {"/api/v1/orders", "/api/v1/orders"}},
    {{"{path: {prefix: /api/v1/orders/}}", "{path: {prefix: /api/v1/orders/}}"},
     {"/api/v1/orders/1234", "/api/v1/orders/1234"}},
    {{"{path: {regex: \"/api/v2/items/[0-9]+\"}}", "{path: {exact: /api/v2/items}}"},
     {"/api/v2/items/123456", "/api/v2/items"}},
    {{"{path: {prefix: /static/}}", "{path: {prefix: /static/}}"},
     {"/static/js/app.3f9a.js", "/static/js/app.3f9a.js"}},
    {{"{path: {exact: /api/v1/cart}}", "{path: {exact: /api/v1/cart}}"},
     {"/api/v1/cart", "/api/v1/cart"}},
    {{"{path: {prefix: /api/}}", "{path: {prefix: /api/}}"},
     {"/api/v3/search?q=shoes&page=2", "/api/v3/search?q=shoes&page=2"}},
};

static const char *const MISS_PATH = "/other/page.html";

static const struct tr_str_pair HEADERS[] = {
    {TR_STR_LIT("user-agent"), TR_STR_LIT("python-requests/2.31.0")},
    {TR_STR_LIT("accept"), TR_STR_LIT("*/*")},
    {TR_STR_LIT("accept-encoding"), TR_STR_LIT("gzip, deflate")},
    {TR_STR_LIT("x-request-id"), TR_STR_LIT("6f1c2a9e-4b7d-4e0b-9a51-0c7d3e2f8b14")},
    {TR_STR_LIT("x-b3-traceid"), TR_STR_LIT("80f198ee56343ba864fe8b2a57d3eff7")},
    {TR_STR_LIT("x-forwarded-proto"), TR_STR_LIT("http")},
    {TR_STR_LIT("x-canary"), TR_STR_LIT("1")}, /* only hits on position 1 send it */
};
#define N_HEADERS_PLAIN 6u

/* One request of the set, and the route it must get (NULL: none). */
struct sample {
    struct tr_route_request req;
    const struct tr_route_cfg *want;
    uint32_t cls;
};

static void host_spelling(char *out, uint32_t svc, uint32_t form, bool known)
{
    const char *what = known ? "svc" : "nohost";
    if (form == 0)
        snprintf(out, HOST_TEXT, "%s-%04u.ns-%02u.svc.cluster.local", what, svc, svc % 50u);
    else if (form == 1)
        snprintf(out, HOST_TEXT, "%s-%04u.ns-%02u", what, svc, svc % 50u);
    else
        snprintf(out, HOST_TEXT, "%s-%04u.ns-%02u.svc.cluster.local:9080", what, svc, svc % 50u);
}

/* The native configuration: one route table, one cluster per service. */
static char *table_yaml(enum mix mix, size_t *len)
{
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 64u * 1024u * 1024u);
    tr_fmt_cstr(&f, "listeners:\n  - name: outbound\n    address: 127.0.0.1:15001\n"
                    "    route_table: outbound\nroute_tables:\n  - name: outbound\n"
                    "    virtual_hosts:\n");
    for (uint32_t s = 0; s < N_HOSTS; s++) {
        char fqdn[HOST_TEXT], shortn[HOST_TEXT], port[HOST_TEXT];
        host_spelling(fqdn, s, 0, true);
        host_spelling(shortn, s, 1, true);
        host_spelling(port, s, 2, true);
        tr_fmt_printf(&f, "      - name: svc-%04u\n        domains: [\"%s\", \"%s\", \"%s\"]\n", s,
                      fqdn, shortn, port);
        tr_fmt_cstr(&f, "        routes:\n");
        for (uint32_t r = 0; r < N_ROUTES; r++)
            tr_fmt_printf(&f, "          - {name: svc-%04u-r%u, match: %s, cluster: svc-%04u}\n", s,
                          r, ROUTES[r].match[mix], s);
    }
    tr_fmt_cstr(&f, "clusters:\n");
    for (uint32_t s = 0; s < N_HOSTS; s++)
        tr_fmt_printf(&f, "  - {name: svc-%04u, endpoints: [{address: \"127.0.%u.%u:9080\"}]}\n", s,
                      1u + s / 250u, 1u + s % 250u);
    if (f.truncated)
        micro_die("bench_route_match", "the generated table does not fit in 64 MiB");
    return tr_fmt_take(&f, len);
}

/* n requests of class cls (or of a uniformly drawn class when cls is
 * N_CLASSES), hosts in hosts[i * HOST_TEXT]. */
static void make_samples(struct sample *out, char *hosts, size_t n, uint32_t cls, enum mix mix,
                         const struct tr_config *cfg, struct micro_rng *rng)
{
    const struct tr_route_table_cfg *t = &cfg->route_tables[0];
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cls < N_CLASSES ? cls : micro_rng_below(rng, N_CLASSES);
        uint32_t svc = micro_rng_below(rng, N_HOSTS);
        char *host = hosts + i * HOST_TEXT;
        host_spelling(host, svc, micro_rng_below(rng, 3), c != CLASS_MISS_HOST);
        const char *path = c < N_ROUTES ? ROUTES[c].path[mix] : MISS_PATH;
        out[i] = (struct sample){
            .req =
                {
                    .host = tr_str_from(host, strlen(host)),
                    .path = tr_str_from(path, strlen(path)),
                    .method = TR_STR_LIT("GET"),
                    .scheme = TR_STR_LIT("http"),
                    .headers = HEADERS,
                    .n_headers = N_HEADERS_PLAIN + (c == 1 && mix == MIX_FULL),
                },
            .want = c < N_ROUTES ? &t->vhosts[svc].routes[c] : NULL,
            .cls = c,
        };
    }
}

static void check_samples(const struct tr_router *r, const struct sample *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct tr_route_cfg *got = tr_router_match(r, &s[i].req);
        if (got != s[i].want)
            micro_die("bench_route_match", "host %.*s path %.*s: got route %s, want %s",
                      (int)s[i].req.host.len, s[i].req.host.p, (int)s[i].req.path.len,
                      s[i].req.path.p, got ? got->name : "none",
                      s[i].want ? s[i].want->name : "none");
    }
}

/* rounds passes over s[0..n) (n a multiple of BATCH): each batch's mean (ns
 * per match) goes to means, each round's mean to round_means[round]; the sum
 * of the answers goes to *sink, so that no lookup can be optimized away.
 * Returns the number of batch means. */
static size_t time_samples(const struct tr_router *r, const struct sample *s, size_t n,
                           uint32_t rounds, double *means, double *round_means, uintptr_t *sink)
{
    size_t k = 0;
    for (uint32_t round = 0; round < rounds; round++) {
        uint64_t round_ns = 0;
        for (size_t b = 0; b < n; b += BATCH) {
            uintptr_t acc = 0;
            uint64_t t0 = micro_now_ns();
            for (size_t i = b; i < b + BATCH; i++)
                acc += (uintptr_t)tr_router_match(r, &s[i].req);
            uint64_t t1 = micro_now_ns();
            *sink += acc;
            round_ns += t1 - t0;
            means[k++] = (double)(t1 - t0) / BATCH;
        }
        round_means[round] = (double)round_ns / (double)n;
    }
    return k;
}

static void report(const char *what, double *means, size_t n_means, double *round_means,
                   uint32_t rounds)
{
    double p50 = micro_quantile(means, n_means, 0.50);
    double p99 = micro_quantile(means, n_means, 0.99);
    double p999 = micro_quantile(means, n_means, 0.999);
    double mx = means[n_means - 1];
    double r_min = micro_quantile(round_means, rounds, 0.0);
    double r_med = micro_quantile(round_means, rounds, 0.5);
    double r_max = round_means[rounds - 1];
    printf("  %-22s p50 %7.1f  p99 %7.1f  p99.9 %7.1f  max %8.1f   rounds %6.1f / %6.1f / %6.1f\n",
           what, p50, p99, p999, mx, r_min, r_med, r_max);
}

static const char *class_name(uint32_t c, enum mix mix, char *buf, size_t size)
{
    if (c == CLASS_MISS_PATH)
        return "miss: no route";
    if (c == CLASS_MISS_HOST)
        return "miss: unknown host";
    static const char *const kind[2][N_ROUTES] = {
        {"exact", "prefix+header", "exact", "prefix", "exact", "prefix", "regex", "prefix", "exact",
         "prefix"},
        {"exact", "prefix", "exact", "prefix", "exact", "prefix", "exact", "prefix", "exact",
         "prefix"},
    };
    snprintf(buf, size, "hit %u (%s)", c, kind[mix][c]);
    return buf;
}

static void run_mix(enum mix mix, uint32_t rounds, uintptr_t *sink)
{
    const char *mix_name =
        mix == MIX_FULL ? "full (exact, prefix, header, regex)" : "plain (exact and prefix only)";
    size_t yaml_len;
    char *yaml = table_yaml(mix, &yaml_len);

    size_t heap0 = micro_heap_bytes(), rss0 = micro_rss_kib();
    uint64_t t0 = micro_now_ns();
    char *err = NULL;
    struct tr_config *cfg = tr_config_load_buffer(yaml, yaml_len, "bench-routes.yaml", &err);
    uint64_t t1 = micro_now_ns();
    if (cfg == NULL)
        micro_die("bench_route_match", "the generated table does not load: %s", err);
    size_t heap1 = micro_heap_bytes(), rss1 = micro_rss_kib();
    struct tr_router *r = tr_router_build(cfg, 0, &err);
    uint64_t t2 = micro_now_ns();
    if (r == NULL)
        micro_die("bench_route_match", "tr_router_build: %s", err);
    size_t heap2 = micro_heap_bytes(), rss2 = micro_rss_kib();

    size_t n_routes = 0;
    for (size_t v = 0; v < cfg->route_tables[0].n_vhosts; v++)
        n_routes += cfg->route_tables[0].vhosts[v].n_routes;
    printf("\nmix %s: %zu virtual hosts, %zu routes, YAML %zu bytes\n", mix_name,
           cfg->route_tables[0].n_vhosts, n_routes, yaml_len);
    printf("  load %.1f ms, model: arena %zu KiB, heap +%zu KiB, RSS +%zu KiB\n",
           (double)(t1 - t0) / 1e6, tr_arena_used(cfg->arena) / 1024u, (heap1 - heap0) / 1024u,
           rss1 > rss0 ? rss1 - rss0 : 0);
    printf("  router build %.1f ms, router: heap +%zu KiB (%.0f bytes per route), RSS +%zu KiB\n",
           (double)(t2 - t1) / 1e6, (heap2 - heap1) / 1024u,
           (double)(heap2 - heap1) / (double)n_routes, rss2 > rss1 ? rss2 - rss1 : 0);

    struct micro_rng rng = {0x9e3779b97f4a7c15ull + (uint64_t)mix};
    size_t n_samples = MIXED_REQUESTS > CLASS_REQUESTS ? MIXED_REQUESTS : CLASS_REQUESTS;
    struct sample *s = calloc(n_samples, sizeof(*s));
    char *hosts = calloc(n_samples, HOST_TEXT);
    uint32_t class_rounds = rounds / 4u > 0 ? rounds / 4u : 1u;
    size_t max_batches = (size_t)rounds * (MIXED_REQUESTS / BATCH);
    size_t max_class = (size_t)class_rounds * (CLASS_REQUESTS / BATCH);
    if (max_class > max_batches)
        max_batches = max_class;
    double *means = calloc(max_batches, sizeof(*means));
    double *round_means = calloc(rounds, sizeof(*round_means));
    if (s == NULL || hosts == NULL || means == NULL || round_means == NULL)
        micro_die("bench_route_match", "out of memory");

    printf("  ns per match, per-batch means (batch %u); rounds: min / median / max of each "
           "round's mean\n",
           BATCH);
    make_samples(s, hosts, MIXED_REQUESTS, N_CLASSES, mix, cfg, &rng);
    check_samples(r, s, MIXED_REQUESTS);
    size_t k = time_samples(r, s, MIXED_REQUESTS, rounds, means, round_means, sink);
    char label[64];
    snprintf(label, sizeof(label), "mixed (%u req x %u)", MIXED_REQUESTS, rounds);
    report(label, means, k, round_means, rounds);

    for (uint32_t c = 0; c < N_CLASSES; c++) {
        make_samples(s, hosts, CLASS_REQUESTS, c, mix, cfg, &rng);
        check_samples(r, s, CLASS_REQUESTS);
        k = time_samples(r, s, CLASS_REQUESTS, class_rounds, means, round_means, sink);
        report(class_name(c, mix, label, sizeof(label)), means, k, round_means, class_rounds);
    }

    free(round_means);
    free(means);
    free(hosts);
    free(s);
    tr_router_free(r);
    tr_config_free(cfg);
    free(yaml);
}

int main(int argc, char **argv)
{
    uint32_t rounds = 200;
    int only = -1; /* -1: both mixes */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end != '\0' || v < 4 || v > MAX_ROUNDS)
                micro_die("bench_route_match", "--rounds: a number from 4 to %u", MAX_ROUNDS);
            rounds = (uint32_t)v;
        } else if (strcmp(argv[i], "--mix") == 0 && i + 1 < argc) {
            i++;
            if (strcmp(argv[i], "full") == 0)
                only = MIX_FULL;
            else if (strcmp(argv[i], "plain") == 0)
                only = MIX_PLAIN;
            else
                micro_die("bench_route_match", "--mix: full or plain");
        } else {
            fprintf(stderr, "usage: bench_route_match [--rounds N] [--mix full|plain]\n");
            return 2;
        }
    }
    printf("bench_route_match: tr_router_match, %u hosts x %u routes\n", N_HOSTS, N_ROUTES);
    micro_print_machine(stdout);
    printf("clock_gettime(CLOCK_MONOTONIC): %.0f ns per read (in each batch: 2 reads / %u "
           "matches)\n",
           micro_clock_cost_ns(), BATCH);
    uintptr_t sink = 0;
    for (int m = MIX_FULL; m <= MIX_PLAIN; m++)
        if (only < 0 || only == m)
            run_mix((enum mix)m, rounds, &sink);
    printf("\n(checksum %zx)\n", (size_t)(sink & 0xfff));
    return 0;
}
