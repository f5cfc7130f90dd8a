/* trellis control: the control plane (control/server.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "cmd/cmd.h"
#include "control/server.h"
#include "core/log.h"

static void control_usage(FILE *out)
{
    fprintf(out,
            "usage: trellis control --resources PATH [--resources PATH...] --state DIR\n"
            "                       [--listen IP:PORT] [--trust-domain TD] [--root-namespace NS]\n"
            "                       [--cert-lifetime DURATION] [--renew-at FRACTION]\n"
            "                       [--debounce MS] [--log-level LEVEL]\n"
            "  --resources PATH  YAML/JSON files or directories (watched; recompiled on change)\n"
            "  --state DIR       the mesh CA (created on first start: ca-cert.pem, ca-key.pem,\n"
            "                    root-cert.pem, cert-chain.pem, Istio's plug-in names) and\n"
            "                    control.sock (trellis ctl status)\n"
            "  --listen IP:PORT  where proxies connect (default 127.0.0.1:15012)\n"
            "  --cert-lifetime D workload certificates' life: 20s, 30m, 24h (default 24h)\n"
            "  --renew-at F      proxies renew at this fraction of the life (default 0.5)\n"
            "  --debounce MS     quiet time before a change of the resources is read, once\n"
            "                    no file is being written (default 10; 0..1000; read at\n"
            "                    most 1 s after it began)\n");
}

/* "20s", "30m", "24h", or seconds. */
static long parse_duration(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v <= 0)
        return -1;
    long mul = *end == '\0' || strcmp(end, "s") == 0 ? 1
               : strcmp(end, "m") == 0               ? 60
               : strcmp(end, "h") == 0               ? 3600
                                                     : -1;
    return mul < 0 || v > TR_CA_LIFETIME_MAX / mul ? -1 : v * mul;
}

int tr_cmd_control(int argc, char **argv)
{
    static const struct option opts[] = {
        {"resources", required_argument, NULL, 'r'},
        {"state", required_argument, NULL, 's'},
        {"listen", required_argument, NULL, 'l'},
        {"trust-domain", required_argument, NULL, 't'},
        {"root-namespace", required_argument, NULL, 'n'},
        {"cert-lifetime", required_argument, NULL, 'L'},
        {"renew-at", required_argument, NULL, 'R'},
        {"debounce", required_argument, NULL, 'D'},
        {"log-level", required_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *resources[64];
    struct tr_control_options o = {
        .resources = resources,
        .listen = "127.0.0.1:15012",
        .cert_lifetime_s = TR_CA_LIFETIME_DEFAULT,
        .renew_fraction = 0.5,
        .debounce_ms = TR_CONTROL_DEBOUNCE_DEFAULT_MS,
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            if (o.n_resources == sizeof(resources) / sizeof(resources[0])) {
                fprintf(stderr, "trellis control: at most 64 --resources\n");
                return 2;
            }
            resources[o.n_resources++] = optarg;
            break;
        case 's':
            o.state_dir = optarg;
            break;
        case 'l':
            o.listen = optarg;
            break;
        case 't':
            o.trust_domain = optarg;
            break;
        case 'n':
            o.root_ns = optarg;
            break;
        case 'L':
            o.cert_lifetime_s = parse_duration(optarg);
            if (o.cert_lifetime_s < TR_CA_LIFETIME_MIN) {
                fprintf(stderr, "trellis control: --cert-lifetime takes %ds..366d, e.g. 24h\n",
                        TR_CA_LIFETIME_MIN);
                return 2;
            }
            break;
        case 'R': {
            char *end;
            o.renew_fraction = strtod(optarg, &end);
            if (*end != '\0' || !(o.renew_fraction >= 0.1 && o.renew_fraction <= 0.9)) {
                fprintf(stderr, "trellis control: --renew-at takes 0.1..0.9\n");
                return 2;
            }
            break;
        }
        case 'D': {
            char *end;
            long ms = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || ms < 0 || ms > TR_CONTROL_DEBOUNCE_MAX_MS) {
                fprintf(stderr, "trellis control: --debounce takes 0..%u (milliseconds)\n",
                        TR_CONTROL_DEBOUNCE_MAX_MS);
                return 2;
            }
            o.debounce_ms = (uint32_t)ms;
            break;
        }
        case 'v':
            if (tr_log_level_parse(optarg) < 0) {
                fprintf(stderr, "trellis control: unknown log level '%s'\n", optarg);
                return 2;
            }
            tr_log_set_level((enum tr_log_level)tr_log_level_parse(optarg));
            break;
        case 'h':
            control_usage(stdout);
            return 0;
        default:
            control_usage(stderr);
            return 2;
        }
    }
    if (o.n_resources == 0 || o.state_dir == NULL || optind != argc) {
        control_usage(stderr);
        return 2;
    }
    return tr_control_run(&o);
}
