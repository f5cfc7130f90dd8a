/* bench/control/cp_bench.c: many lightweight proxies for the control-plane
 * benchmark (docs/performance.md, "Control plane").
 *
 * Each simulated proxy is the real client of the protocol (control/client.h:
 * bootstrap with a token, CSR, stream, ACK), all on one event loop, without
 * a data plane: a model is acknowledged when it arrives. Phases:
 *   1. cold start: N proxies connect at once (a TLS handshake, a CSR signed
 *      by the CA, the stream); the time until every one has its certificate
 *      and its first model;
 *   2. for each change command given (-x CMD, run with /bin/sh -c): the
 *      time from the command's end until the last proxy whose model changed
 *      has the new one (a proxy counts as changed when a new version arrives
 *      within the window), and how many changed.
 * With --control-pid, also the control plane's CPU time (user + system)
 * during each phase (a change's: over its whole window, the command's run
 * included); the clients' own CPU time (this process) too, since both
 * share the machine. Prints one JSON object. Tokens are issued into the CA state directory
 * (tr_ca_token_issue), so run it against a throw-away state.
 *
 * usage: cp_bench --control IP:PORT --state DIR --proxies N [--ns NS] [--control-pid PID]
 *                 [--prefix NAME-] [--window-ms 3000] [-x CMD]... */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ca/ca.h"
#include "control/client.h"
#include "core/log.h"
#include "event/loop.h"
#include "transport/transport.h"

struct bp {
    struct tr_control_client *c;
    unsigned models, certs;
    uint64_t version;
    double first_model, last_model; /* ms, monotonic */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void on_identity(void *arg, const char *chain, const char *key, const char *bundle,
                        time_t not_after)
{
    (void)chain;
    (void)key;
    (void)bundle;
    (void)not_after;
    ((struct bp *)arg)->certs++;
}

static int on_model(void *arg, uint64_t version, const char *text, size_t len, char **err)
{
    (void)text;
    (void)len;
    *err = NULL;
    struct bp *p = arg;
    double t = now_ms();
    if (p->models++ == 0)
        p->first_model = t;
    p->last_model = t;
    p->version = version;
    return 0;
}

/* CPU time (user + system) of this process so far, in ms. */
static double self_cpu_ms(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/* CPU time (user + system) of process pid so far, in ms; -1 if unknown. */
static double cpu_ms(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = pid > 0 ? fopen(path, "r") : NULL;
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static const struct tr_control_client_ops ops = {.on_identity = on_identity, .on_model = on_model};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"control", required_argument, NULL, 'c'},     {"state", required_argument, NULL, 's'},
        {"proxies", required_argument, NULL, 'n'},     {"ns", required_argument, NULL, 'N'},
        {"prefix", required_argument, NULL, 'p'},      {"window-ms", required_argument, NULL, 'w'},
        {"control-pid", required_argument, NULL, 'P'}, {NULL, 0, NULL, 0},
    };
    const char *control = NULL, *state = NULL, *ns = "mesh", *prefix = "client-";
    const char *changes[8];
    size_t n_changes = 0;
    long n = 0, window = 3000, cp_pid = 0;
    int c;
    while ((c = getopt_long(argc, argv, "x:", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            control = optarg;
            break;
        case 's':
            state = optarg;
            break;
        case 'n':
            n = atol(optarg);
            break;
        case 'N':
            ns = optarg;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 'w':
            window = atol(optarg);
            break;
        case 'P':
            cp_pid = atol(optarg);
            break;
        case 'x':
            if (n_changes < 8)
                changes[n_changes++] = optarg;
            break;
        default:
            return 2;
        }
    }
    if (control == NULL || state == NULL || n <= 0) {
        fprintf(stderr, "usage: cp_bench --control IP:PORT --state DIR --proxies N [-x CMD]...\n");
        return 2;
    }
    tr_log_set_level(TR_LOG_ERROR);
    tr_transport_init();
    char tokdir[] = "/tmp/cp-bench-XXXXXX";
    if (mkdtemp(tokdir) == NULL)
        return 1;
    char bundle[4096];
    snprintf(bundle, sizeof(bundle), "%s/root-cert.pem", state);
    struct tr_loop *loop = tr_loop_new();
    struct bp *ps = calloc((size_t)n, sizeof(*ps));
    char **files = calloc((size_t)n, sizeof(*files));
    for (long i = 0; i < n; i++) {
        char sa[128], tok[TR_CA_TOKEN_HEX + 1];
        char *err = NULL;
        snprintf(sa, sizeof(sa), "%s%ld", prefix, i);
        if (tr_ca_token_issue(state, ns, sa, tok, &err) != 0) {
            fprintf(stderr, "token: %s\n", err ? err : "?");
            return 1;
        }
        if (asprintf(&files[i], "%s/%ld", tokdir, i) < 0)
            return 1;
        FILE *f = fopen(files[i], "w");
        fprintf(f, "%s\n", tok);
        fclose(f);
    }
    double t0 = now_ms(), cpu0 = cpu_ms(cp_pid), self0 = self_cpu_ms();
    for (long i = 0; i < n; i++) {
        char wl[256];
        snprintf(wl, sizeof(wl), "%s/%s%ld", ns, prefix, i);
        struct tr_control_client_options o = {
            .address = control, .workload = wl, .token_file = files[i], .ca_file = bundle};
        char *err = NULL;
        ps[i].c = tr_control_client_start(loop, &o, &ops, &ps[i], &err);
        if (ps[i].c == NULL) {
            fprintf(stderr, "client %ld: %s\n", i, err ? err : "?");
            return 1;
        }
    }
    long done = 0;
    while (done < n && now_ms() - t0 < 600000) {
        tr_loop_run_once(loop, 100);
        done = 0;
        for (long i = 0; i < n; i++)
            done += ps[i].models > 0;
    }
    double full = 0;
    for (long i = 0; i < n; i++)
        if (ps[i].first_model - t0 > full)
            full = ps[i].first_model - t0;
    double cpu1 = cpu_ms(cp_pid), self1 = self_cpu_ms();
    printf("{\"proxies\": %ld, \"with_model\": %ld, \"cold_start_ms\": %.1f", n, done, full);
    if (self0 >= 0 && self1 >= 0)
        printf(", \"cold_start_clients_cpu_ms\": %.0f", self1 - self0);
    if (cpu0 >= 0 && cpu1 >= 0)
        printf(", \"cold_start_control_cpu_ms\": %.0f", cpu1 - cpu0);
    for (size_t k = 0; k < n_changes; k++) {
        uint64_t *before = calloc((size_t)n, sizeof(*before));
        for (long i = 0; i < n; i++)
            before[i] = ps[i].version;
        double c0 = cpu_ms(cp_pid);
        int rc = system(changes[k]);
        double s0 = self_cpu_ms();
        double t1 = now_ms();
        while (now_ms() - t1 < (double)window)
            tr_loop_run_once(loop, 20);
        long changed = 0;
        double last = 0;
        for (long i = 0; i < n; i++)
            if (ps[i].version != before[i]) {
                changed++;
                if (ps[i].last_model - t1 > last)
                    last = ps[i].last_model - t1;
            }
        printf(", \"change_%zu\": {\"cmd_rc\": %d, \"changed\": %ld, \"last_ms\": %.1f", k, rc,
               changed, last);
        double c1 = cpu_ms(cp_pid), s1 = self_cpu_ms();
        if (c0 >= 0 && c1 >= 0)
            printf(", \"control_cpu_ms\": %.0f", c1 - c0);
        if (s0 >= 0 && s1 >= 0)
            printf(", \"clients_cpu_ms\": %.0f", s1 - s0);
        printf("}");
        free(before);
    }
    printf("}\n");
    for (long i = 0; i < n; i++) {
        tr_control_client_free(ps[i].c);
        unlink(files[i]);
        free(files[i]);
    }
    /* let closes and deferred frees run */
    for (int i = 0; i < 5; i++)
        tr_loop_run_once(loop, 10);
    rmdir(tokdir);
    free(files);
    free(ps);
    return 0;
}
