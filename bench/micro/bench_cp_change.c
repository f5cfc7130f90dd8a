/* bench/micro/bench_cp_change.c: the control plane's work for one change,
 * in one thread and without a network (docs/performance.md, "Control plane
 * at scale"), for profiling what bench/control/run.py measures end to end.
 *
 * usage: bench_cp_change DIR ROUNDS CMD...
 *
 * DIR is a mesh of bench/control/gen_mesh.py. Takes a watched store's first
 * snapshot, builds the registry and compiles every client workload
 * (client-0 .. client-N-1 in namespace mesh, until one does not exist) to
 * know the hosts its model names. Then ROUNDS times: runs the next CMD in
 * turn (/bin/sh -c; e.g. "gen_mesh.py DIR --hot weight", then "... --hot
 * endpoint", as run.py does), and times what
 * trellis control does after the quiet time: the snapshot, the diff
 * (tr_istio_change_hosts), the registry (rebound when it may be, else
 * built), and the compile and write of the workloads the change reaches,
 * one after the other on this thread (the control plane spreads them over
 * one thread per CPU), with the allocator set as the control plane sets it
 * (tr_control_malloc_setup). Prints each phase in milliseconds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "config/model.h"
#include "config/write.h"
#include "control/server.h"
#include "core/diag.h"
#include "dialect/istio/istio.h"
#include "micro.h"
#include "resource/resource.h"

#define MAX_WORKLOADS 100000u

static double ms_since(uint64_t t0)
{
    return (double)(micro_now_ns() - t0) / 1e6;
}

/* The model of client-i written, its hosts into *h; false when the
 * workload does not exist. */
static bool compile_one(const struct tr_istio_registry *reg, size_t i, struct tr_istio_hosts *h,
                        size_t *bytes)
{
    char name[32];
    snprintf(name, sizeof(name), "client-%zu", i);
    struct tr_istio_options o = {.ns = "mesh", .name = name, .identity_from_control = true};
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_config *cfg = tr_istio_compile_with(reg, &o, &d);
    if (cfg == NULL) {
        tr_diags_free(&d);
        return false;
    }
    if (d.n_errors > 0)
        micro_die("compile", "%s: %zu errors", name, d.n_errors);
    size_t len = 0;
    char *err = NULL;
    char *text = tr_config_write(cfg, TR_CONFIG_YAML, &len, &err);
    if (text == NULL)
        micro_die("write", "%s: %s", name, err ? err : "?");
    *bytes += len;
    free(text);
    if (h != NULL) {
        tr_istio_hosts_free(h);
        if (!tr_istio_model_hosts(cfg, h))
            micro_die("hosts", "out of memory");
    }
    tr_config_free(cfg);
    tr_diags_free(&d);
    return true;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s DIR ROUNDS CMD...\n", argv[0]);
        return 2;
    }
    int rounds = atoi(argv[2]);
    tr_control_malloc_setup(); /* the allocator as trellis control sets it */
    const char *paths[] = {argv[1]};
    struct tr_store *s = tr_store_files_watched(paths, 1);
    if (s == NULL)
        micro_die("store", "cannot watch %s", argv[1]);
    micro_print_machine(stdout);
    struct tr_rset *rs = tr_store_snapshot(s, NULL);
    if (rs == NULL)
        micro_die("snapshot", "no snapshot of %s", argv[1]);
    struct tr_istio_options ro = {0};
    struct tr_istio_registry *reg = tr_istio_registry_new(rs, &ro, NULL);
    struct tr_istio_registry *base = NULL;
    struct tr_rset *base_rs = NULL;
    if (reg == NULL)
        micro_die("registry", "out of memory");
    struct tr_istio_hosts *hosts = calloc(MAX_WORKLOADS, sizeof(*hosts));
    size_t n = 0, bytes = 0;
    while (n < MAX_WORKLOADS && compile_one(reg, n, &hosts[n], &bytes))
        n++;
    printf("%zu objects, %zu workloads, %.1f KB per model\n", tr_rset_count(rs), n,
           n ? (double)bytes / 1e3 / (double)n : 0);
    for (int r = 0; r < rounds; r++) {
        const char *cmd = argv[3 + r % (argc - 3)];
        if (system(cmd) != 0)
            micro_die("command", "%s failed", cmd);
        tr_store_drain(s);
        uint64_t t0 = micro_now_ns();
        struct tr_rset *next = tr_store_snapshot(s, NULL);
        if (next == NULL)
            micro_die("snapshot", "none");
        double t_snap = ms_since(t0);
        t0 = micro_now_ns();
        struct tr_istio_hosts change;
        size_t n_changed = 0;
        bool kept = false;
        if (!tr_istio_change_hosts(rs, next, &change, &n_changed, &kept))
            micro_die("diff", "out of memory");
        double t_diff = ms_since(t0);
        t0 = micro_now_ns();
        struct tr_istio_registry *nreg =
            kept ? tr_istio_registry_rebind(base ? base : reg, rs, next) : NULL;
        if (nreg != NULL) { /* as trellis control keeps them */
            if (base != NULL) {
                tr_istio_registry_free(reg);
                tr_rset_free(rs);
            } else {
                base = reg;
                base_rs = rs;
            }
        } else {
            nreg = tr_istio_registry_new(next, &ro, NULL);
            if (nreg == NULL)
                micro_die("registry", "out of memory");
            tr_istio_registry_free(reg);
            tr_rset_free(rs);
            tr_istio_registry_free(base);
            tr_rset_free(base_rs);
            base = NULL;
            base_rs = NULL;
        }
        double t_reg = ms_since(t0);
        reg = nreg;
        rs = next;
        t0 = micro_now_ns();
        size_t compiled = 0;
        bytes = 0;
        for (size_t i = 0; i < n; i++)
            if (tr_istio_hosts_meet(&hosts[i], &change)) {
                compile_one(reg, i, &hosts[i], &bytes);
                compiled++;
            }
        double t_comp = ms_since(t0);
        printf("round %d: snapshot %.1f ms, diff %.1f ms (%zu objects, %s), registry %s %.1f ms, "
               "%zu compiled and written in %.1f ms (%.2f ms each)\n",
               r, t_snap, t_diff, n_changed, change.any ? "any" : "by host",
               base != NULL ? "kept" : "built", t_reg, compiled, t_comp,
               compiled ? t_comp / (double)compiled : 0);
        tr_istio_hosts_free(&change);
    }
    for (size_t i = 0; i < n; i++)
        tr_istio_hosts_free(&hosts[i]);
    free(hosts);
    tr_istio_registry_free(reg);
    tr_rset_free(rs);
    tr_istio_registry_free(base);
    tr_rset_free(base_rs);
    tr_store_free(s);
    return 0;
}
