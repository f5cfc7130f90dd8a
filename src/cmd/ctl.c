/* trellis ctl: operator tools that read resources and answer without running
 * anything (compile, and later analyze and route explain). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "config/load.h"
#include "config/write.h"
#include "core/diag.h"
#include "dialect/istio/istio.h"
#include "resource/resource.h"

static void ctl_usage(FILE *out)
{
    fprintf(out,
            "usage: trellis ctl <command> [options]\n"
            "\n"
            "commands:\n"
            "  compile PATH... --workload NAMESPACE/NAME [-o yaml|json]\n"
            "      print the proxy model of one workload, compiled from Kubernetes and Istio\n"
            "      resources (files or directories, read recursively)\n"
            "      --outbound-ip IP    address of the outbound listeners (default 127.0.0.1)\n"
            "      --app-ip IP         where the application listens (default 127.0.0.1)\n"
            "      --cert-dir DIR      the workload's cert.pem, key.pem, ca.pem (default certs)\n"
            "      --trust-domain TD   SPIFFE trust domain (default cluster.local)\n"
            "      --root-namespace NS Istio's root namespace (default istio-system)\n"
            "      --force             print the model even when resources had errors\n");
}

static void print_diags(struct tr_diags *d)
{
    tr_diags_sort(d);
    for (size_t i = 0; i < d->n; i++) {
        char line[2048];
        tr_diag_format(&d->v[i], line, sizeof(line));
        fprintf(stderr, "%s\n", line);
    }
    if (d->dropped)
        fprintf(stderr, "(%zu more findings not shown)\n", d->dropped);
}

/* Read every path into one set (the store interface: files today). */
static struct tr_rset *read_inputs(char **paths, int n, struct tr_diags *d)
{
    struct tr_store *st = tr_store_files((const char *const *)paths, (size_t)n);
    if (st == NULL)
        return NULL;
    struct tr_rset *rs = tr_store_snapshot(st, d);
    tr_store_free(st);
    return rs;
}

static bool split_workload(const char *s, char **ns, char **name)
{
    const char *slash = strchr(s, '/');
    if (slash == NULL || slash == s || slash[1] == '\0' || strchr(slash + 1, '/') != NULL)
        return false;
    *ns = strndup(s, (size_t)(slash - s));
    *name = strdup(slash + 1);
    return *ns != NULL && *name != NULL;
}

static int ctl_compile(int argc, char **argv)
{
    static const struct option opts[] = {
        {"workload", required_argument, NULL, 'w'},
        {"output", required_argument, NULL, 'o'},
        {"outbound-ip", required_argument, NULL, 'b'},
        {"app-ip", required_argument, NULL, 'a'},
        {"cert-dir", required_argument, NULL, 'c'},
        {"trust-domain", required_argument, NULL, 't'},
        {"root-namespace", required_argument, NULL, 'r'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct tr_istio_options o = {0};
    const char *workload = NULL, *fmt = "yaml";
    bool force = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "w:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'w':
            workload = optarg;
            break;
        case 'o':
            fmt = optarg;
            break;
        case 'b':
            o.outbound_ip = optarg;
            break;
        case 'a':
            o.app_ip = optarg;
            break;
        case 'c':
            o.cert_dir = optarg;
            break;
        case 't':
            o.trust_domain = optarg;
            break;
        case 'r':
            o.root_ns = optarg;
            break;
        case 'f':
            force = true;
            break;
        case 'h':
            ctl_usage(stdout);
            return 0;
        default:
            ctl_usage(stderr);
            return 2;
        }
    }
    char *ns = NULL, *name = NULL;
    if (optind >= argc || workload == NULL || !split_workload(workload, &ns, &name) ||
        (strcmp(fmt, "yaml") != 0 && strcmp(fmt, "json") != 0)) {
        fprintf(stderr, "trellis ctl compile: give PATH..., --workload NAMESPACE/NAME and -o "
                        "yaml or json\n");
        free(ns);
        free(name);
        return 2;
    }
    o.ns = ns;
    o.name = name;
    struct tr_diags d;
    tr_diags_init(&d);
    int rc = 1;
    struct tr_rset *rs = read_inputs(argv + optind, argc - optind, &d);
    struct tr_config *cfg = rs ? tr_istio_compile(rs, &o, &d) : NULL;
    print_diags(&d);
    if (cfg != NULL && (d.n_errors == 0 || force)) {
        size_t len;
        char *err = NULL;
        char *text = tr_config_write(cfg, strcmp(fmt, "json") == 0 ? TR_CONFIG_JSON : TR_CONFIG_YAML,
                                     &len, &err);
        if (text != NULL) {
            fwrite(text, 1, len, stdout);
            rc = d.n_errors ? 1 : 0;
        } else {
            fprintf(stderr, "trellis ctl compile: %s\n", err ? err : "out of memory");
        }
        free(text);
        free(err);
    } else if (cfg != NULL) {
        fprintf(stderr, "trellis ctl compile: %zu error(s): no model printed (--force prints it)\n",
                d.n_errors);
    }
    tr_config_free(cfg);
    tr_rset_free(rs);
    tr_diags_free(&d);
    free(ns);
    free(name);
    return rc;
}

int tr_cmd_ctl(int argc, char **argv)
{
    if (argc < 2) {
        ctl_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "compile") == 0)
        return ctl_compile(argc - 1, argv + 1);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        ctl_usage(stdout);
        return 0;
    }
    fprintf(stderr, "trellis ctl: unknown command '%s'\n", argv[1]);
    ctl_usage(stderr);
    return 2;
}
