/* bench/micro/bench_istio_compile.c: tr_istio_compile for one workload of a
 * mesh of 1,000 services with 10 HTTP routes each (issue 8: "compiling a mesh
 * of 1,000 services with 10 routes each for one workload: target under 100
 * ms").
 *
 * The mesh is Kubernetes + Istio YAML text, as `trellis ctl compile` reads
 * it: for each service svc-NNNN in namespace ns-MM (10 namespaces), a
 * Service (one http port, 9080 -> 8080), two Pods (version v1 and v2), a
 * DestinationRule with two subsets (LEAST_REQUEST, one subset with its own
 * policy) and a VirtualService with 10 http rules: header matches (exact,
 * prefix, a cookie regex), uri exact/prefix/regex, a method, two ORed match
 * blocks, weighted subsets (90/10, 80/20, 50/50), a rewrite, timeouts.
 * (No retries: the compiler warns that it ignores them for now.) The client is one more Pod in ns-00 with no Sidecar, so its
 * model holds every service: the worst case for one proxy.
 *
 * Each round reads the text (tr_rset_from_buffer) and compiles it
 * (tr_istio_compile), timed apart; the report gives min / median / max over
 * the rounds, the model's size and the size of its written text
 * (config/write.h). A compile with errors stops the benchmark: a model with
 * resources left out would be measured cheaper than it is.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "config/write.h"
#include "control/server.h"
#include "core/arena.h"
#include "core/diag.h"
#include "core/fmt.h"
#include "dialect/istio/istio.h"
#include "resource/resource.h"

#include "micro.h"

#define N_SERVICES     1000u
#define N_NAMESPACES   10u
#define MAX_ROUNDS     1000u
#define SHOWN_FINDINGS 5u

static void service_yaml(struct tr_fmt *f, uint32_t i)
{
    char name[32], ns[32];
    snprintf(name, sizeof(name), "svc-%04u", i);
    snprintf(ns, sizeof(ns), "ns-%02u", i % N_NAMESPACES);
    tr_fmt_printf(f,
                  "---\napiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\n"
                  "spec:\n  selector: {app: %s}\n"
                  "  ports: [{name: http, port: 9080, targetPort: 8080}]\n",
                  name, ns, name);
    for (uint32_t v = 1; v <= 2; v++)
        tr_fmt_printf(f,
                      "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s-v%u\n"
                      "  namespace: %s\n  labels: {app: %s, version: v%u}\n"
                      "spec:\n  serviceAccountName: %s\n"
                      "  containers: [{name: app, ports: [{containerPort: 8080}]}]\n"
                      "status: {podIP: 127.%u.%u.%u}\n",
                      name, v, ns, name, v, name, 1u + i / 250u, 1u + i % 250u, v);
    tr_fmt_printf(f,
                  "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                  "metadata: {name: %s, namespace: %s}\n"
                  "spec:\n  host: %s\n"
                  "  trafficPolicy:\n    loadBalancer: {simple: LEAST_REQUEST}\n"
                  "    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, "
                  "baseEjectionTime: 30s}\n"
                  "  subsets:\n  - {name: v1, labels: {version: v1}}\n"
                  "  - name: v2\n    labels: {version: v2}\n"
                  "    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n",
                  name, ns, name);
    /* Ten http rules; the last one is the default route. */
    tr_fmt_printf(f,
                  "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                  "metadata: {name: %s, namespace: %s}\n"
                  "spec:\n  hosts: [%s]\n  http:\n"
                  "  - name: user-jason\n    match: [{headers: {end-user: {exact: jason}}}]\n"
                  "    route: [{destination: {host: %s, subset: v2}}]\n"
                  "  - name: internal-tester\n"
                  "    match: [{uri: {prefix: /api/}, headers: {x-tester: {prefix: team-}}}]\n"
                  "    route: [{destination: {host: %s, subset: v2}}]\n"
                  "  - name: health\n    match: [{uri: {exact: /healthz}}]\n"
                  "    route: [{destination: {host: %s, subset: v1}}]\n"
                  "  - name: users\n    match: [{uri: {prefix: /api/v1/users/}}]\n"
                  "    route:\n    - {destination: {host: %s, subset: v1}, weight: 90}\n"
                  "    - {destination: {host: %s, subset: v2}, weight: 10}\n    timeout: 2s\n"
                  "  - name: orders\n"
                  "    match: [{uri: {exact: /api/v1/orders}}, {uri: {prefix: /api/v1/orders/}}]\n"
                  "    route:\n    - {destination: {host: %s, subset: v1}, weight: 80}\n"
                  "    - {destination: {host: %s, subset: v2}, weight: 20}\n"
                  "  - name: items\n    match: [{uri: {regex: \"/api/v2/items/[0-9]+\"}}]\n"
                  "    route: [{destination: {host: %s, subset: v2}}]\n"
                  "  - name: static\n    match: [{uri: {prefix: /static/}, method: {exact: GET}}]\n"
                  "    route: [{destination: {host: %s, subset: v1}}]\n"
                  "  - name: cookie-b\n"
                  "    match: [{headers: {cookie: {regex: \"^(.*?;)?(user=b)(;.*)?$\"}}}]\n"
                  "    route: [{destination: {host: %s, subset: v2}}]\n"
                  "  - name: legacy\n    match: [{uri: {prefix: /v1/legacy/}}]\n"
                  "    rewrite: {uri: /api/v1/}\n"
                  "    route: [{destination: {host: %s, subset: v1}}]\n"
                  "  - name: default\n"
                  "    route:\n    - {destination: {host: %s, subset: v1}, weight: 50}\n"
                  "    - {destination: {host: %s, subset: v2}, weight: 50}\n"
                  "    timeout: 5s\n",
                  name, ns, name, name, name, name, name, name, name, name, name, name, name, name,
                  name, name);
}

static char *mesh_yaml(size_t *len)
{
    struct tr_fmt f;
    tr_fmt_init_growable(&f, TR_RES_MAX_FILE_SIZE);
    for (uint32_t n = 0; n < N_NAMESPACES; n++)
        tr_fmt_printf(&f, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns-%02u}\n", n);
    tr_fmt_cstr(&f, "---\napiVersion: v1\nkind: Pod\n"
                    "metadata: {name: client, namespace: ns-00, labels: {app: client}}\n"
                    "spec: {serviceAccountName: client}\nstatus: {podIP: 127.0.0.10}\n");
    for (uint32_t i = 0; i < N_SERVICES; i++)
        service_yaml(&f, i);
    if (f.truncated)
        micro_die("bench_istio_compile", "the mesh does not fit in one %u-byte buffer",
                  TR_RES_MAX_FILE_SIZE);
    return tr_fmt_take(&f, len);
}

static void print_findings(const struct tr_diags *d)
{
    for (size_t i = 0; i < d->n && i < SHOWN_FINDINGS; i++) {
        char line[1024];
        tr_diag_format(&d->v[i], line, sizeof(line));
        printf("    %s\n", line);
    }
    if (d->n > SHOWN_FINDINGS)
        printf("    ... and %zu more\n", d->n - SHOWN_FINDINGS);
}

static void print_times(const char *what, double *ms, uint32_t n)
{
    double lo = micro_quantile(ms, n, 0.0), med = micro_quantile(ms, n, 0.5), hi = ms[n - 1];
    printf("  %-28s min %8.1f ms  median %8.1f ms  max %8.1f ms\n", what, lo, med, hi);
}

int main(int argc, char **argv)
{
    uint32_t rounds = 10;
    const char *mesh_out = NULL;
    bool glibc_default = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end != '\0' || v < 1 || v > MAX_ROUNDS)
                micro_die("bench_istio_compile", "--rounds: a number from 1 to %u", MAX_ROUNDS);
            rounds = (uint32_t)v;
        } else if (strcmp(argv[i], "--mesh-out") == 0 && i + 1 < argc) {
            mesh_out = argv[++i];
        } else if (strcmp(argv[i], "--glibc-default") == 0) {
            glibc_default = true;
        } else {
            fprintf(stderr, "usage: bench_istio_compile [--rounds N] [--mesh-out FILE] "
                            "[--glibc-default]\n");
            return 2;
        }
    }
    /* The allocator as `trellis control`, which runs these compiles, sets
     * it; --glibc-default measures without (docs/performance.md gives
     * both). */
    if (!glibc_default)
        tr_control_malloc_setup();
    printf("bench_istio_compile: %u services x 10 http rules, one client workload%s\n", N_SERVICES,
           glibc_default ? " (glibc's default trim threshold)" : "");
    micro_print_machine(stdout);

    size_t yaml_len;
    char *yaml = mesh_yaml(&yaml_len);
    if (mesh_out != NULL) {
        /* The input alone, for `trellis ctl compile FILE --workload ns-00/client`
         * and for profiling. */
        FILE *f = fopen(mesh_out, "w");
        if (f == NULL || fwrite(yaml, 1, yaml_len, f) != yaml_len || fclose(f) != 0)
            micro_die("bench_istio_compile", "cannot write %s", mesh_out);
        printf("mesh written to %s\n", mesh_out);
        free(yaml);
        return 0;
    }
    double *read_ms = calloc(rounds, sizeof(*read_ms));
    double *compile_ms = calloc(rounds, sizeof(*compile_ms));
    double *write_ms = calloc(rounds, sizeof(*write_ms));
    if (read_ms == NULL || compile_ms == NULL || write_ms == NULL)
        micro_die("bench_istio_compile", "out of memory");

    const struct tr_istio_options o = {.ns = "ns-00", .name = "client", .cert_dir = "certs"};
    size_t n_resources = 0, text_len = 0, arena = 0, heap = 0;
    size_t n_clusters = 0, n_listeners = 0, n_tables = 0, n_vhosts = 0, n_routes = 0;
    size_t n_warnings = 0;
    for (uint32_t round = 0; round < rounds; round++) {
        struct tr_diags d;
        tr_diags_init(&d);
        uint64_t t0 = micro_now_ns();
        struct tr_rset *rs = tr_rset_from_buffer(yaml, yaml_len, "mesh.yaml", &d);
        uint64_t t1 = micro_now_ns();
        if (rs == NULL || d.n_errors > 0) {
            print_findings(&d);
            micro_die("bench_istio_compile", "the generated mesh does not read cleanly");
        }
        size_t heap0 = micro_heap_bytes();
        uint64_t t2 = micro_now_ns();
        struct tr_config *cfg = tr_istio_compile(rs, &o, &d);
        uint64_t t3 = micro_now_ns();
        size_t heap1 = micro_heap_bytes();
        if (cfg == NULL || d.n_errors > 0) {
            print_findings(&d);
            micro_die("bench_istio_compile", "the generated mesh does not compile cleanly");
        }
        char *err = NULL;
        uint64_t t4 = micro_now_ns();
        char *text = tr_config_write(cfg, TR_CONFIG_YAML, &text_len, &err);
        uint64_t t5 = micro_now_ns();
        if (text == NULL)
            micro_die("bench_istio_compile", "tr_config_write: %s", err);
        read_ms[round] = (double)(t1 - t0) / 1e6;
        compile_ms[round] = (double)(t3 - t2) / 1e6;
        write_ms[round] = (double)(t5 - t4) / 1e6;
        if (round == 0) {
            n_resources = tr_rset_count(rs);
            n_warnings = d.n_warnings;
            arena = tr_arena_used(cfg->arena);
            heap = heap1 - heap0;
            n_clusters = cfg->n_clusters;
            n_listeners = cfg->n_listeners;
            n_tables = cfg->n_route_tables;
            for (size_t t = 0; t < cfg->n_route_tables; t++) {
                n_vhosts += cfg->route_tables[t].n_vhosts;
                for (size_t v = 0; v < cfg->route_tables[t].n_vhosts; v++)
                    n_routes += cfg->route_tables[t].vhosts[v].n_routes;
            }
            if (d.n > 0) {
                printf("  findings (warnings) of the compile:\n");
                print_findings(&d);
            }
        }
        free(text);
        tr_config_free(cfg);
        tr_rset_free(rs);
        tr_diags_free(&d);
    }

    printf("input: %zu bytes of YAML, %zu resources\n", yaml_len, n_resources);
    printf("model: %zu listeners, %zu route tables, %zu virtual hosts, %zu routes, %zu clusters; "
           "%zu warnings\n",
           n_listeners, n_tables, n_vhosts, n_routes, n_clusters, n_warnings);
    printf("model memory: arena %zu KiB, heap +%zu KiB after compile; written YAML %zu bytes\n",
           arena / 1024u, heap / 1024u, text_len);
    printf("%u rounds:\n", rounds);
    print_times("read (tr_rset_from_buffer)", read_ms, rounds);
    print_times("compile (tr_istio_compile)", compile_ms, rounds);
    print_times("write (tr_config_write)", write_ms, rounds);

    free(write_ms);
    free(compile_ms);
    free(read_ms);
    free(yaml);
    return 0;
}
