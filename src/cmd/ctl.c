/* trellis ctl: operator tools that read resources and answer without running
 * anything (compile, and later analyze and route explain). */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "config/load.h"
#include "config/write.h"
#include "ctl/authz_check.h"
#include "ctl/capture_rules.h"
#include "ctl/explain.h"
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
            "      --dns-server IP:PORT where the proxy resolves ServiceEntry names (default:\n"
            "                          the system's resolver)\n"
            "      --force             print the model even when resources had errors\n"
            "      --capture           sidecar capture (trellis ctl iptables): virtual\n"
            "                          listeners behind 127.0.0.1:15001 and 0.0.0.0:15006\n"
            "  analyze PATH...\n"
            "      report what breaks traffic (routes to undefined subsets or unknown hosts,\n"
            "      conflicting VirtualServices, unreachable rules...); exit 1 on errors\n"
            "  route explain PATH... --from NAMESPACE/WORKLOAD --url URL [-X METHOD]\n"
            "                [-H 'Name: value']... [-o json]\n"
            "      which rule a request matches and where it goes, from the model the\n"
            "      workload's proxy runs (the proxy's own router decides)\n"
            "  authz check PATH... --from SPIFFE_ID --to NAMESPACE/WORKLOAD [--method M]\n"
            "              [--path P] [--header 'Name=value']... [--port N] [--host H]\n"
            "              [--jwt-claims JSON] [--source-ip IP] [--sni NAME] [--tcp] [-o json]\n"
            "      whether the workload's proxy admits a request, and the policy and rule\n"
            "      that decide (the proxy's own evaluator decides); --from none: plaintext\n"
            "  iptables [--netns NAME] [--outbound-port P] [--inbound-port P]\n"
            "           [--proxy-mark MARK] [--proxy-uid UID] [--include-ports LIST]\n"
            "           [--exclude-ports LIST] [--exclude-outbound-ports LIST]\n"
            "           [--include-cidrs LIST] [--exclude-cidrs LIST] [--dry-run] [--remove]\n"
            "           [--backend nftables|iptables]\n"
            "      write the sidecar capture rules (nftables table inet trellis) into the\n"
            "      current network namespace or NAME: outbound TCP to 127.0.0.1:15001,\n"
            "      inbound TCP to 15006; the proxy's own traffic excluded by mark 1337\n"
            "      (and/or uid); LIST is comma-separated, \"*\" for all (docs/config.md)\n"
            "  ca init|sign|bundle|token|check DIR ...\n"
            "      the mesh CA: create or plug in a CA, issue SVIDs and bootstrap tokens,\n"
            "      report expiries (trellis ctl ca help)\n"
            "  status --state DIR [-o json]\n"
            "      the proxies of a running trellis control: workload, identity, connected,\n"
            "      model version pushed and acknowledged, last refusal, certificate expiry\n"
            "  proxy-config NAMESPACE/WORKLOAD --state DIR\n"
            "      what that workload's proxy runs: its own /config_dump (JSON), read over the\n"
            "      admin socket it told the control plane about (--admin-socket)\n");
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

struct ctl_args {
    struct tr_istio_options o;
    const char *workload, *fmt, *url, *method;
    const char *headers[64];
    size_t n_headers;
    bool force;
    char *ns, *name;
};

static void ctl_args_free(struct ctl_args *a)
{
    free(a->ns);
    free(a->name);
}

/* Options shared by the subcommands; returns the index of the first path,
 * or -1 after printing usage (-2 for --help). */
static int ctl_parse(int argc, char **argv, struct ctl_args *a)
{
    static const struct option opts[] = {
        {"workload", required_argument, NULL, 'w'},
        {"from", required_argument, NULL, 'w'},
        {"output", required_argument, NULL, 'o'},
        {"outbound-ip", required_argument, NULL, 'b'},
        {"app-ip", required_argument, NULL, 'a'},
        {"cert-dir", required_argument, NULL, 'c'},
        {"trust-domain", required_argument, NULL, 't'},
        {"root-namespace", required_argument, NULL, 'r'},
        {"dns-server", required_argument, NULL, 'd'},
        {"url", required_argument, NULL, 'u'},
        {"request", required_argument, NULL, 'X'},
        {"header", required_argument, NULL, 'H'},
        {"force", no_argument, NULL, 'f'},
        {"capture", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    a->fmt = NULL;
    a->method = "GET";
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "w:o:u:X:H:h", opts, NULL)) != -1) {
        switch (c) {
        case 'w':
            a->workload = optarg;
            break;
        case 'o':
            a->fmt = optarg;
            break;
        case 'b':
            a->o.outbound_ip = optarg;
            break;
        case 'a':
            a->o.app_ip = optarg;
            break;
        case 'c':
            a->o.cert_dir = optarg;
            break;
        case 't':
            a->o.trust_domain = optarg;
            break;
        case 'r':
            a->o.root_ns = optarg;
            break;
        case 'd':
            a->o.dns_server = optarg;
            break;
        case 'u':
            a->url = optarg;
            break;
        case 'X':
            a->method = optarg;
            break;
        case 'H':
            if (a->n_headers == sizeof(a->headers) / sizeof(a->headers[0])) {
                fprintf(stderr, "trellis ctl: at most 64 -H options\n");
                return -1;
            }
            a->headers[a->n_headers++] = optarg;
            break;
        case 'f':
            a->force = true;
            break;
        case 'C':
            a->o.capture = true;
            break;
        case 'h':
            ctl_usage(stdout);
            return -2;
        default:
            ctl_usage(stderr);
            return -1;
        }
    }
    if (a->o.capture && a->o.outbound_ip != NULL) {
        fprintf(stderr, "trellis ctl: --outbound-ip has no effect with --capture (outbound "
                        "listeners are virtual, on 0.0.0.0:PORT)\n");
        return -1;
    }
    if (a->workload != NULL) {
        if (!split_workload(a->workload, &a->ns, &a->name)) {
            fprintf(stderr, "trellis ctl: a workload is NAMESPACE/NAME, got \"%s\"\n", a->workload);
            return -1;
        }
        a->o.ns = a->ns;
        a->o.name = a->name;
    }
    if (optind >= argc) {
        fprintf(stderr, "trellis ctl: give the resources (files or directories)\n");
        return -1;
    }
    return optind;
}

static int ctl_analyze(int argc, char **argv)
{
    struct ctl_args a;
    int first = ctl_parse(argc, argv, &a);
    if (first < 0) {
        ctl_args_free(&a);
        return first == -2 ? 0 : 2;
    }
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = read_inputs(argv + first, argc - first, &d);
    int rc = rs ? tr_istio_analyze(rs, &a.o, &d) : -1;
    tr_diags_print(&d, stderr, false);
    fprintf(stderr, "%zu error(s), %zu warning(s)\n", d.n_errors, d.n_warnings);
    rc = rc < 0 || d.n_errors ? 1 : 0;
    tr_rset_free(rs);
    tr_diags_free(&d);
    ctl_args_free(&a);
    return rc;
}

static int ctl_explain(int argc, char **argv)
{
    struct ctl_args a;
    int first = ctl_parse(argc, argv, &a);
    if (first < 0) {
        ctl_args_free(&a);
        return first == -2 ? 0 : 2;
    }
    if (a.workload == NULL || a.url == NULL ||
        (a.fmt != NULL && strcmp(a.fmt, "json") != 0 && strcmp(a.fmt, "text") != 0)) {
        fprintf(stderr, "trellis ctl route explain: give PATH..., --from NAMESPACE/WORKLOAD, "
                        "--url URL (and -o json or text)\n");
        ctl_args_free(&a);
        return 2;
    }
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = read_inputs(argv + first, argc - first, &d);
    struct tr_config *cfg = rs ? tr_istio_compile(rs, &a.o, &d) : NULL;
    int rc = 1;
    if (d.n_errors)
        tr_diags_print(&d, stderr, false);
    if (cfg != NULL) {
        struct tr_explain_request q = {
            .url = a.url,
            .method = a.method,
            .headers = a.headers,
            .n_headers = a.n_headers,
        };
        char *out = tr_ctl_route_explain(cfg, rs, &q, a.fmt && strcmp(a.fmt, "json") == 0, &rc);
        if (out != NULL)
            fputs(out, rc ? stderr : stdout);
        free(out);
    }
    tr_config_free(cfg);
    tr_rset_free(rs);
    tr_diags_free(&d);
    ctl_args_free(&a);
    return rc;
}

static int ctl_authz_check(int argc, char **argv)
{
    static const struct option opts[] = {
        {"from", required_argument, NULL, 'F'},
        {"to", required_argument, NULL, 'T'},
        {"method", required_argument, NULL, 'X'},
        {"path", required_argument, NULL, 'P'},
        {"header", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 's'},
        {"jwt-claims", required_argument, NULL, 'j'},
        {"source-ip", required_argument, NULL, 'i'},
        {"sni", required_argument, NULL, 'n'},
        {"tcp", no_argument, NULL, 'c'},
        {"output", required_argument, NULL, 'o'},
        {"trust-domain", required_argument, NULL, 't'},
        {"root-namespace", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct tr_authz_check_request q = {.method = "GET", .path = "/"};
    struct tr_istio_options o = {0};
    const char *headers[64], *to = NULL, *fmt = "text";
    size_t n_headers = 0;
    bool from_set = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "X:H:o:h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'F':
            from_set = true;
            q.from = strcmp(optarg, "none") == 0 ? NULL : optarg;
            break;
        case 'T':
            to = optarg;
            break;
        case 'X':
            q.method = optarg;
            break;
        case 'P':
            q.path = optarg;
            break;
        case 'H':
            if (n_headers == sizeof(headers) / sizeof(headers[0])) {
                fprintf(stderr, "trellis ctl authz check: at most 64 --header options\n");
                return 2;
            }
            headers[n_headers++] = optarg;
            break;
        case 'p': {
            unsigned long v = strtoul(optarg, &end, 10);
            if (end == optarg || *end != '\0' || v == 0 || v > 65535) {
                fprintf(stderr, "trellis ctl authz check: --port is 1-65535\n");
                return 2;
            }
            q.port = (uint32_t)v;
            break;
        }
        case 's':
            q.host = optarg;
            break;
        case 'j':
            q.jwt_claims = optarg;
            break;
        case 'i':
            q.source_ip = optarg;
            break;
        case 'n':
            q.sni = optarg;
            break;
        case 'c':
            q.tcp = true;
            break;
        case 'o':
            fmt = optarg;
            break;
        case 't':
            o.trust_domain = optarg;
            break;
        case 'r':
            o.root_ns = optarg;
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
    if (!from_set || to == NULL || optind >= argc ||
        (strcmp(fmt, "json") != 0 && strcmp(fmt, "text") != 0) || !split_workload(to, &ns, &name)) {
        fprintf(stderr, "trellis ctl authz check: give PATH..., --from SPIFFE_ID (or none), --to "
                        "NAMESPACE/WORKLOAD (and -o json or text)\n");
        free(ns);
        free(name);
        return 2;
    }
    o.ns = ns;
    o.name = name;
    q.headers = headers;
    q.n_headers = n_headers;
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = read_inputs(argv + optind, argc - optind, &d);
    struct tr_config *cfg = rs ? tr_istio_compile(rs, &o, &d) : NULL;
    int rc = 1;
    if (d.n_errors)
        tr_diags_print(&d, stderr, false);
    if (cfg != NULL && d.n_errors == 0) {
        char *out = tr_ctl_authz_check(cfg, &q, strcmp(fmt, "json") == 0, &rc);
        if (out != NULL)
            fputs(out, rc ? stderr : stdout);
        free(out);
    } else if (cfg != NULL) {
        fprintf(stderr, "trellis ctl authz check: %zu error(s) in the resources: no decision\n",
                d.n_errors);
    }
    tr_config_free(cfg);
    tr_rset_free(rs);
    tr_diags_free(&d);
    free(ns);
    free(name);
    return rc;
}

static int ctl_compile(int argc, char **argv)
{
    struct ctl_args a;
    int first = ctl_parse(argc, argv, &a);
    if (first < 0) {
        ctl_args_free(&a);
        return first == -2 ? 0 : 2;
    }
    const char *fmt = a.fmt ? a.fmt : "yaml";
    if (a.workload == NULL || (strcmp(fmt, "yaml") != 0 && strcmp(fmt, "json") != 0)) {
        fprintf(stderr, "trellis ctl compile: give PATH..., --workload NAMESPACE/NAME and -o "
                        "yaml or json\n");
        ctl_args_free(&a);
        return 2;
    }
    struct tr_diags d;
    tr_diags_init(&d);
    int rc = 1;
    struct tr_rset *rs = read_inputs(argv + first, argc - first, &d);
    struct tr_config *cfg = rs ? tr_istio_compile(rs, &a.o, &d) : NULL;
    tr_diags_print(&d, stderr, false);
    if (cfg != NULL && (d.n_errors == 0 || a.force)) {
        size_t len;
        char *err = NULL;
        char *text = tr_config_write(
            cfg, strcmp(fmt, "json") == 0 ? TR_CONFIG_JSON : TR_CONFIG_YAML, &len, &err);
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
    ctl_args_free(&a);
    return rc;
}

/* "a,b,c" into v (pointing into s, which is modified). */
static bool split_list(char *s, const char **v, size_t *n, const char *opt)
{
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n == TR_CAPTURE_MAX_LIST) {
            fprintf(stderr, "trellis ctl iptables: %s: at most %d entries\n", opt,
                    TR_CAPTURE_MAX_LIST);
            return false;
        }
        v[(*n)++] = tok;
    }
    return true;
}

static bool parse_u32(const char *s, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0 || v > max || s[0] == '-' || s[0] == '+')
        return false;
    *out = (uint32_t)v;
    return true;
}

static int ctl_iptables(int argc, char **argv)
{
    static const struct option opts[] = {
        {"netns", required_argument, NULL, 'n'},
        {"outbound-port", required_argument, NULL, 'O'},
        {"inbound-port", required_argument, NULL, 'I'},
        {"proxy-mark", required_argument, NULL, 'm'},
        {"proxy-uid", required_argument, NULL, 'u'},
        {"include-ports", required_argument, NULL, 'b'},
        {"exclude-ports", required_argument, NULL, 'd'},
        {"exclude-outbound-ports", required_argument, NULL, 'o'},
        {"include-cidrs", required_argument, NULL, 'i'},
        {"exclude-cidrs", required_argument, NULL, 'x'},
        {"dry-run", no_argument, NULL, 'D'},
        {"remove", no_argument, NULL, 'R'},
        {"backend", required_argument, NULL, 'B'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct tr_capture_rules_opts o;
    tr_capture_rules_defaults(&o);
    const char *netns = NULL;
    bool dry = false, remove = false, ok = true;
    uint32_t v;
    int c;
    optind = 1;
    while (ok && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            netns = optarg;
            break;
        case 'O':
        case 'I':
            ok = parse_u32(optarg, 65535, &v) && v > 0;
            if (!ok)
                fprintf(stderr, "trellis ctl iptables: %s: not a port: %s\n",
                        c == 'O' ? "--outbound-port" : "--inbound-port", optarg);
            *(c == 'O' ? &o.outbound_port : &o.inbound_port) = (uint16_t)v;
            break;
        case 'm':
            ok = parse_u32(optarg, UINT32_MAX, &o.proxy_mark);
            if (!ok)
                fprintf(stderr, "trellis ctl iptables: --proxy-mark: not a mark: %s\n", optarg);
            break;
        case 'u':
            ok = parse_u32(optarg, UINT32_MAX - 1, &o.proxy_uid);
            o.has_proxy_uid = true;
            if (!ok)
                fprintf(stderr, "trellis ctl iptables: --proxy-uid: not a uid: %s\n", optarg);
            break;
        case 'b':
            ok = split_list(optarg, o.include_ports, &o.n_include_ports, "--include-ports");
            break;
        case 'd':
            ok = split_list(optarg, o.exclude_ports, &o.n_exclude_ports, "--exclude-ports");
            break;
        case 'o':
            ok = split_list(optarg, o.exclude_outbound_ports, &o.n_exclude_outbound_ports,
                            "--exclude-outbound-ports");
            break;
        case 'i':
            ok = split_list(optarg, o.include_cidrs, &o.n_include_cidrs, "--include-cidrs");
            break;
        case 'x':
            ok = split_list(optarg, o.exclude_cidrs, &o.n_exclude_cidrs, "--exclude-cidrs");
            break;
        case 'D':
            dry = true;
            break;
        case 'R':
            remove = true;
            break;
        case 'B':
            ok = strcmp(optarg, "nftables") == 0 || strcmp(optarg, "iptables") == 0;
            o.backend = strcmp(optarg, "iptables") == 0 ? TR_CAPTURE_IPTABLES : TR_CAPTURE_NFTABLES;
            if (!ok)
                fprintf(stderr, "trellis ctl iptables: --backend: nftables or iptables, got %s\n",
                        optarg);
            break;
        case 'h':
            ctl_usage(stdout);
            return 0;
        default:
            ctl_usage(stderr);
            return 2;
        }
    }
    if (!ok)
        return 2;
    if (optind < argc) {
        fprintf(stderr, "trellis ctl iptables: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    char *err = NULL;
    char *script = tr_capture_rules_script(&o, remove, &err);
    if (script == NULL) {
        fprintf(stderr, "trellis ctl iptables: %s\n", err ? err : "out of memory");
        free(err);
        return 2;
    }
    bool ipt = o.backend == TR_CAPTURE_IPTABLES;
    if (dry) {
        if (ipt)
            printf("# first (each may fail: nothing to remove)\n%s%s",
                   tr_capture_rules_iptables_removal(),
                   remove ? "" : "# then: iptables-restore -w --noflush <<EOF\n");
        fputs(script, stdout);
        if (ipt && !remove)
            fputs("EOF\n", stdout);
        free(script);
        return 0;
    }
    int rc = tr_capture_rules_apply(o.backend, script, remove, netns, &err);
    free(script);
    if (rc < 0) {
        fprintf(stderr, "trellis ctl iptables: %s\n", err ? err : "failed");
        free(err);
        return 1;
    }
    if (rc != 0)
        fprintf(stderr, "trellis ctl iptables: %s failed (exit %d)\n",
                ipt ? "iptables-restore" : "nft", rc);
    return rc == 0 ? 0 : 1;
}

int tr_cmd_ctl(int argc, char **argv)
{
    if (argc < 2) {
        ctl_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "compile") == 0)
        return ctl_compile(argc - 1, argv + 1);
    if (strcmp(argv[1], "analyze") == 0)
        return ctl_analyze(argc - 1, argv + 1);
    if (strcmp(argv[1], "proxy-config") == 0)
        return tr_cmd_ctl_proxy_config(argc - 1, argv + 1);
    if (strcmp(argv[1], "status") == 0)
        return tr_cmd_ctl_status(argc - 1, argv + 1);
    if (strcmp(argv[1], "ca") == 0)
        return tr_cmd_ctl_ca(argc - 1, argv + 1);
    if (strcmp(argv[1], "iptables") == 0)
        return ctl_iptables(argc - 1, argv + 1);
    if (strcmp(argv[1], "route") == 0 && argc > 2 && strcmp(argv[2], "explain") == 0)
        return ctl_explain(argc - 2, argv + 2);
    if (strcmp(argv[1], "authz") == 0 && argc > 2 && strcmp(argv[2], "check") == 0)
        return ctl_authz_check(argc - 2, argv + 2);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        ctl_usage(stdout);
        return 0;
    }
    fprintf(stderr, "trellis ctl: unknown command '%s'\n", argv[1]);
    ctl_usage(stderr);
    return 2;
}
