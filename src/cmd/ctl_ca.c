/* trellis ctl ca: operate the mesh CA's state directory (src/ca/). Exit
 * status: 0 done / all good, 1 failed (check: a certificate close to expiry),
 * 2 usage error (check: something expired or unreadable). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca/ca.h"
#include "cmd/cmd.h"

static void ca_usage(FILE *out)
{
    fprintf(out,
            "usage: trellis ctl ca <command> DIR [options]\n"
            "\n"
            "commands:\n"
            "  init DIR [--trust-domain TD] [--plugin-certs PLUGIN_DIR]\n"
            "      create the CA state in DIR: a new EC P-256 root, or the Istio plug-in CA\n"
            "      files of PLUGIN_DIR (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)\n"
            "  sign DIR --csr FILE --id spiffe://TD/ns/NS/sa/SA [--lifetime 24h] [-o FILE]\n"
            "      issue an X.509 SVID for a CSR; prints the chain (leaf, intermediates)\n"
            "  bundle DIR\n"
            "      print the trust bundle (the roots)\n"
            "  token DIR NAMESPACE/SERVICE_ACCOUNT\n"
            "      issue a bootstrap token bound to the workload (only its hash is stored)\n"
            "  check DIR [CERT_FILE...]\n"
            "      print expiries of the roots, intermediates and the given leaves; exit 1 if\n"
            "      a CA certificate expires within %d days or a leaf is past %d%% of its\n"
            "      life, 2 if one has expired\n",
            TR_CA_WARN_CA_DAYS, TR_CA_WARN_LEAF_PERCENT);
}

static int fail(const char *cmd, char *err)
{
    fprintf(stderr, "trellis ctl ca %s: %s\n", cmd, err ? err : "out of memory");
    free(err);
    return 1;
}

/* "90s", "30m", "24h", "7d" (one integer and one unit) into seconds. */
static int parse_lifetime(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || v <= 0 || end[0] == '\0' || end[1] != '\0')
        return -1;
    long unit;
    switch (end[0]) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    default:
        return -1;
    }
    if (v > TR_CA_LIFETIME_MAX / unit + 1)
        return -1;
    *out = v * unit;
    return 0;
}

static char *read_bounded(const char *path, size_t max, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(max + 2);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    if (f != stdin)
        fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

struct ca_args {
    const char *trust_domain, *plugin_dir, *csr, *id, *lifetime, *output;
};

/* Returns the index of the first positional argument, -1 on usage error, -2 for --help. */
static int ca_parse(int argc, char **argv, struct ca_args *a)
{
    static const struct option opts[] = {
        {"trust-domain", required_argument, NULL, 't'},
        {"plugin-certs", required_argument, NULL, 'p'},
        {"csr", required_argument, NULL, 'c'},
        {"id", required_argument, NULL, 'i'},
        {"lifetime", required_argument, NULL, 'l'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            a->trust_domain = optarg;
            break;
        case 'p':
            a->plugin_dir = optarg;
            break;
        case 'c':
            a->csr = optarg;
            break;
        case 'i':
            a->id = optarg;
            break;
        case 'l':
            a->lifetime = optarg;
            break;
        case 'o':
            a->output = optarg;
            break;
        case 'h':
            ca_usage(stdout);
            return -2;
        default:
            ca_usage(stderr);
            return -1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "trellis ctl ca %s: give the CA directory\n", argv[0]);
        return -1;
    }
    return optind;
}

static int ca_init(const struct ca_args *a, const char *dir)
{
    char *err = NULL;
    if (tr_ca_init(dir, a->trust_domain, a->plugin_dir, &err) != 0)
        return fail("init", err);
    struct tr_ca *ca = tr_ca_load(dir, &err);
    if (ca == NULL)
        return fail("init", err);
    char when[32];
    time_t na = tr_ca_not_after(ca);
    struct tm tm;
    gmtime_r(&na, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("CA ready in %s: trust domain %s, %s, signing certificate expires %s\n", dir,
           tr_ca_trust_domain(ca), a->plugin_dir ? "plug-in certificates" : "new root", when);
    tr_ca_free(ca);
    return 0;
}

static int write_output(const char *path, const char *data, size_t len)
{
    if (path == NULL)
        return fwrite(data, 1, len, stdout) == len ? 0 : -1;
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    int rc = fwrite(data, 1, len, f) == len ? 0 : -1;
    return fclose(f) != 0 ? -1 : rc;
}

static int ca_sign(const struct ca_args *a, const char *dir)
{
    long lifetime = TR_CA_LIFETIME_DEFAULT;
    if (a->csr == NULL || a->id == NULL) {
        fprintf(stderr, "trellis ctl ca sign: give --csr FILE and --id spiffe://...\n");
        return 2;
    }
    if (a->lifetime != NULL && parse_lifetime(a->lifetime, &lifetime) != 0) {
        fprintf(stderr,
                "trellis ctl ca sign: --lifetime: expected a duration such as 24h, 90m, 7d\n");
        return 2;
    }
    size_t len;
    char *csr = read_bounded(a->csr, TR_CA_CSR_MAX, &len);
    if (csr == NULL) {
        fprintf(stderr, "trellis ctl ca sign: %s: %s\n", a->csr, strerror(errno));
        return 1;
    }
    char *err = NULL;
    struct tr_ca *ca = tr_ca_load(dir, &err);
    if (ca == NULL) {
        free(csr);
        return fail("sign", err);
    }
    size_t out_len;
    char *chain = tr_ca_sign(ca, csr, len, a->id, lifetime, &out_len, &err);
    free(csr);
    tr_ca_free(ca);
    if (chain == NULL)
        return fail("sign", err);
    int rc = write_output(a->output, chain, out_len);
    free(chain);
    if (rc != 0) {
        fprintf(stderr, "trellis ctl ca sign: cannot write the certificate: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

static int ca_bundle(const struct ca_args *a, const char *dir)
{
    char *err = NULL;
    struct tr_ca *ca = tr_ca_load(dir, &err);
    if (ca == NULL)
        return fail("bundle", err);
    size_t len;
    char *pem = tr_ca_bundle_pem(ca, &len);
    tr_ca_free(ca);
    int rc = pem != NULL && write_output(a->output, pem, len) == 0 ? 0 : 1;
    free(pem);
    return rc;
}

static int ca_token(const char *dir, const char *workload)
{
    const char *slash = strchr(workload, '/');
    if (slash == NULL) {
        fprintf(stderr, "trellis ctl ca token: give NAMESPACE/SERVICE_ACCOUNT\n");
        return 2;
    }
    char *ns = strndup(workload, (size_t)(slash - workload));
    char tok[TR_CA_TOKEN_HEX + 1], *err = NULL;
    int rc = ns ? tr_ca_token_issue(dir, ns, slash + 1, tok, &err) : -1;
    free(ns);
    if (rc != 0)
        return fail("token", err);
    printf("%s\n", tok);
    return 0;
}

static int ca_check(const char *dir, char **files, int n)
{
    char *err = NULL;
    int rc = tr_ca_check(dir, (const char *const *)files, (size_t)n, time(NULL), stdout, &err);
    if (rc < 0) {
        fail("check", err);
        return 2;
    }
    return rc == TR_CA_EXPIRY_OK ? 0 : rc == TR_CA_EXPIRY_WARN ? 1 : 2;
}

int tr_cmd_ctl_ca(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        ca_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    static const char *const known[] = {"init", "sign", "bundle", "token", "check"};
    bool found = false;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        found |= strcmp(cmd, known[i]) == 0;
    if (!found) {
        fprintf(stderr, "trellis ctl ca: unknown command '%s'\n", cmd);
        ca_usage(stderr);
        return 2;
    }
    struct ca_args a;
    int first = ca_parse(argc - 1, argv + 1, &a);
    if (first < 0)
        return first == -2 ? 0 : 2;
    char **pos = argv + 1 + first;
    int npos = argc - 1 - first;
    if (strcmp(cmd, "init") == 0 && npos == 1)
        return ca_init(&a, pos[0]);
    if (strcmp(cmd, "sign") == 0 && npos == 1)
        return ca_sign(&a, pos[0]);
    if (strcmp(cmd, "bundle") == 0 && npos == 1)
        return ca_bundle(&a, pos[0]);
    if (strcmp(cmd, "token") == 0 && npos == 2)
        return ca_token(pos[0], pos[1]);
    if (strcmp(cmd, "check") == 0)
        return ca_check(pos[0], pos + 1, npos - 1);
    fprintf(stderr, "trellis ctl ca: unknown command or wrong arguments: %s\n", cmd);
    ca_usage(stderr);
    return 2;
}
