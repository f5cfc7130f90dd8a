/* bench/micro/bench_authz.c: tr_authz_decide with 1,000 policies in scope
 * (issue 9: "authorization with 1,000 policies in scope ... target: policy
 * evaluation under 1 us p99 with 1,000 policies compiled").
 *
 * The policy set is a mesh's worth for one workload, built as the model
 * holds it (config/model.h) and compiled with tr_authz_build, as a proxy
 * does at load:
 *   - 50 DENY policies, each denying one path prefix (/admin/NN/ and below) to
 *     everyone but one principal (notPrincipals);
 *   - 950 ALLOW policies, each admitting one caller (principal
 *     cluster.local/ns/nsNN/sa/saNNN) to GET and POST under its own prefix
 *     (/api/NNN/ and below) on port 8080, one of five also with a header condition
 *     (request.headers[x-tenant]).
 * Requests come in four classes: allowed by the last ALLOW policy, allowed
 * by the first one, denied by a DENY policy, denied because no ALLOW policy
 * matches (a caller no policy names). Each carries six ordinary headers.
 * Before timing, every class's verdict and deciding policy are checked,
 * with tr_authz_decide and with tr_authz_decide_scan (every policy tried in
 * order, no index), and both are timed: the ALLOW policies name exact
 * principals (the principal index), the DENY policies path prefixes (the
 * path index), so a request tries the ALLOW policies of its caller and the
 * DENY policies of its path.
 *
 * Timing: CLOCK_MONOTONIC around batches of 64 decisions of one class,
 * divided by 64 (a clock read costs about as much as a decision); quantiles
 * of these per-batch means over ROUNDS rounds of BATCHES batches. A batch
 * mean is one class's cost, not one request's tail: the class that tries
 * every policy bounds every request.
 *
 * usage: bench_authz [--rounds N] (default 5)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter/authz.h"
#include "micro.h"
#include "router/router.h"

#define N_DENY     50u
#define N_ALLOW    950u
#define BATCH      64u
#define BATCHES    2000u
#define MAX_ROUNDS 100u

/* A copy of buf (formatted by the caller) that lives as long as the run. */
static char *keep(const char *buf)
{
    char *s = strdup(buf);
    if (s == NULL)
        micro_die("bench_authz", "out of memory");
    return s;
}

static void *must(void *p)
{
    if (p == NULL)
        micro_die("bench_authz", "out of memory");
    return p;
}

static struct tr_authz *build_policies(void)
{
    size_t n = N_DENY + N_ALLOW;
    struct tr_authz_policy_cfg *p = must(calloc(n, sizeof(*p)));
    for (unsigned i = 0; i < N_DENY; i++) {
        struct tr_authz_policy_rule_cfg *r = must(calloc(1, sizeof(*r)));
        struct tr_authz_source_cfg *src = must(calloc(1, sizeof(*src)));
        struct tr_authz_operation_cfg *op = must(calloc(1, sizeof(*op)));
        src->not_principals = must(calloc(1, sizeof(char *)));
        src->not_principals[0] = "cluster.local/ns/ops/sa/admin";
        src->n_not_principals = 1;
        op->paths = must(calloc(1, sizeof(char *)));
        char buf[128];
        snprintf(buf, sizeof(buf), "/admin/%02u/*", i);
        op->paths[0] = keep(buf);
        op->n_paths = 1;
        *r = (struct tr_authz_policy_rule_cfg){.from = src, .n_from = 1, .to = op, .n_to = 1};
        snprintf(buf, sizeof(buf), "ops/deny-admin-%02u", i);
        p[i] = (struct tr_authz_policy_cfg){
            .name = keep(buf), .action = TR_AUTHZ_DENY, .provider = -1, .rules = r, .n_rules = 1};
    }
    static const char *methods[] = {"GET", "POST"};
    static const char *ports[] = {"8080"};
    for (unsigned i = 0; i < N_ALLOW; i++) {
        struct tr_authz_policy_rule_cfg *r = must(calloc(1, sizeof(*r)));
        struct tr_authz_source_cfg *src = must(calloc(1, sizeof(*src)));
        struct tr_authz_operation_cfg *op = must(calloc(1, sizeof(*op)));
        src->principals = must(calloc(1, sizeof(char *)));
        char buf[128];
        snprintf(buf, sizeof(buf), "cluster.local/ns/ns%02u/sa/sa%03u", i % 50, i);
        src->principals[0] = keep(buf);
        src->n_principals = 1;
        op->paths = must(calloc(1, sizeof(char *)));
        snprintf(buf, sizeof(buf), "/api/%03u/*", i);
        op->paths[0] = keep(buf);
        op->n_paths = 1;
        op->methods = methods;
        op->n_methods = 2;
        op->ports = ports;
        op->n_ports = 1;
        *r = (struct tr_authz_policy_rule_cfg){.from = src, .n_from = 1, .to = op, .n_to = 1};
        if (i % 5 == 4) {
            struct tr_authz_condition_cfg *w = must(calloc(1, sizeof(*w)));
            w->key = "request.headers[x-tenant]";
            w->values = must(calloc(1, sizeof(char *)));
            snprintf(buf, sizeof(buf), "tenant-%03u", i);
            w->values[0] = keep(buf);
            w->n_values = 1;
            r->when = w;
            r->n_when = 1;
        }
        snprintf(buf, sizeof(buf), "ns%02u/allow-%03u", i % 50, i);
        p[N_DENY + i] = (struct tr_authz_policy_cfg){
            .name = keep(buf), .action = TR_AUTHZ_ALLOW, .provider = -1, .rules = r, .n_rules = 1};
    }
    struct tr_authz_cfg cfg = {.policies = p, .n_policies = n};
    char *err = NULL;
    struct tr_authz *a = tr_authz_build(&cfg, &err);
    if (a == NULL)
        micro_die("bench_authz", "tr_authz_build: %s", err ? err : "?");
    return a; /* the configuration is kept by the process, as a proxy's model is */
}

struct klass {
    const char *name;
    const char *principal, *method, *path;
    enum tr_authz_verdict want;
    int want_policy; /* -1: a default */
    struct tr_authz_request rq;
};

static const struct tr_str_pair headers[] = {
    {TR_STR_LIT("user-agent"), TR_STR_LIT("curl/7.88.1")},
    {TR_STR_LIT("accept"), TR_STR_LIT("*/*")},
    {TR_STR_LIT("x-request-id"), TR_STR_LIT("6b2f0c1e-4e0b-4f5e-9d8f-2a7c1b3d4e5f")},
    {TR_STR_LIT("x-forwarded-proto"), TR_STR_LIT("https")},
    {TR_STR_LIT("content-type"), TR_STR_LIT("application/json")},
    {TR_STR_LIT("x-tenant"), TR_STR_LIT("tenant-949")},
};

static void request_of(struct klass *k)
{
    struct tr_authz_request *rq = &k->rq;
    *rq = (struct tr_authz_request){.principal = k->principal, .http = true, .dest_port = 8080};
    rq->method = tr_str_from(k->method, strlen(k->method));
    rq->path = tr_str_from(k->path, strlen(k->path));
    rq->host = TR_STR_LIT("shop.shop.svc.cluster.local:8080");
    rq->headers = headers;
    rq->n_headers = sizeof(headers) / sizeof(headers[0]);
    tr_ip_parse("198.18.0.10", &rq->source_ip);
    rq->remote_ip = rq->source_ip;
    tr_ip_parse("198.18.0.20", &rq->dest_ip);
}

int main(int argc, char **argv)
{
    unsigned rounds = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = (unsigned)atoi(argv[++i]);
        else
            micro_die("bench_authz", "usage: bench_authz [--rounds N]");
    }
    if (rounds == 0 || rounds > MAX_ROUNDS)
        micro_die("bench_authz", "--rounds takes 1..%u", MAX_ROUNDS);
    struct tr_authz *a = build_policies();
    struct klass ks[] = {
        {.name = "allowed by the last ALLOW policy",
         .principal = "spiffe://cluster.local/ns/ns49/sa/sa949",
         .method = "POST",
         .path = "/api/949/orders",
         .want = TR_AUTHZ_VERDICT_ALLOW,
         .want_policy = N_DENY + N_ALLOW - 1},
        {.name = "allowed by the first ALLOW policy",
         .principal = "spiffe://cluster.local/ns/ns00/sa/sa000",
         .method = "GET",
         .path = "/api/000/items",
         .want = TR_AUTHZ_VERDICT_ALLOW,
         .want_policy = N_DENY},
        {.name = "denied by a DENY policy",
         .principal = "spiffe://cluster.local/ns/ns00/sa/sa000",
         .method = "GET",
         .path = "/admin/49/users",
         .want = TR_AUTHZ_VERDICT_DENY,
         .want_policy = N_DENY - 1},
        {.name = "denied: no ALLOW policy matches",
         .principal = "spiffe://cluster.local/ns/x/sa/stranger",
         .method = "GET",
         .path = "/api/500/items",
         .want = TR_AUTHZ_VERDICT_DENY,
         .want_policy = -1},
    };
    size_t nk = sizeof(ks) / sizeof(ks[0]);
    for (size_t k = 0; k < nk; k++) {
        request_of(&ks[k]);
        for (int scan = 0; scan < 2; scan++) {
            struct tr_authz_result r;
            enum tr_authz_verdict v =
                scan ? tr_authz_decide_scan(a, &ks[k].rq, &r) : tr_authz_decide(a, &ks[k].rq, &r);
            if (v != ks[k].want || r.policy != ks[k].want_policy)
                micro_die("bench_authz", "%s: verdict %d by policy %d, want %d by %d", ks[k].name,
                          (int)v, r.policy, (int)ks[k].want, ks[k].want_policy);
        }
    }
    printf("bench_authz: %u policies (%u DENY, %u ALLOW, every fifth ALLOW with a header "
           "condition)\n",
           N_DENY + N_ALLOW, N_DENY, N_ALLOW);
    micro_print_machine(stdout);
    printf("clock read: %.1f ns (each batch of %u pays two)\n", micro_clock_cost_ns(), BATCH);
    double *means = must(calloc((size_t)rounds * BATCHES, sizeof(double)));
    volatile unsigned sink = 0;
    for (int scan = 0; scan < 2; scan++) {
        printf("%s:\n", scan ? "tr_authz_decide_scan (every policy in order)"
                             : "tr_authz_decide (the principal and path indexes)");
        for (size_t k = 0; k < nk; k++) {
            size_t n = 0;
            for (unsigned round = 0; round < rounds; round++)
                for (unsigned b = 0; b < BATCHES; b++) {
                    struct tr_authz_result r;
                    uint64_t t0 = micro_now_ns();
                    for (unsigned i = 0; i < BATCH; i++)
                        sink += (unsigned)(scan ? tr_authz_decide_scan(a, &ks[k].rq, &r)
                                                : tr_authz_decide(a, &ks[k].rq, &r));
                    uint64_t t1 = micro_now_ns();
                    means[n++] = (double)(t1 - t0) / BATCH;
                }
            double p50 = micro_quantile(means, n, 0.50), p99 = micro_quantile(means, n, 0.99);
            double mx = micro_quantile(means, n, 1.0);
            printf("  %-36s p50 %7.1f ns  p99 %7.1f ns  max %7.1f ns\n", ks[k].name, p50, p99, mx);
        }
    }
    (void)sink;
    free(means);
    tr_authz_free(a);
    return 0;
}
