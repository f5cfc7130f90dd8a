/* trellis proxy: the data plane. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "config/load.h"
#include "control/client.h"
#include "runtime/server.h"

static void proxy_usage(FILE *out)
{
    fprintf(out, "usage: trellis proxy --config FILE [--workers N] [--log-level LEVEL] [--check]\n"
                 "       trellis proxy --control IP:PORT --workload NS/NAME --token-file FILE\n"
                 "                     --ca-bundle FILE [--admin IP:PORT] [--workers N]\n"
                 "  --config FILE     proxy configuration (YAML or JSON; see docs/config.md)\n"
                 "  --control ADDR    get the model and the identity from trellis control\n"
                 "  --workload NS/NAME  the workload this proxy serves (a Pod or WorkloadEntry)\n"
                 "  --token-file FILE bootstrap token (trellis ctl ca token)\n"
                 "  --ca-bundle FILE  trust bundle that verifies the control plane\n"
                 "  --admin IP:PORT   where this proxy's admin endpoint listens (sent to the\n"
                 "                    control plane; default 127.0.0.1:15000)\n"
                 "  --outbound-ip IP  where outbound listeners bind (default 127.0.0.1)\n"
                 "  --app-ip IP       where the application listens (default 127.0.0.1)\n"
                 "  --admin-socket P  the admin Unix socket (absolute path; /config_dump,\n"
                 "                    trellis ctl proxy-config)\n"
                 "  --capture         this workload's traffic is captured (trellis ctl iptables):\n"
                 "                    the control plane compiles capture listeners (15001/15006)\n"
                 "  --workers N       worker threads (default: config, or one per core)\n"
                 "  --log-level L     error, warn, info or debug\n"
                 "  --check           validate the configuration and exit\n");
}

/* path made absolute against the working directory, lexically: symlinks
 * stay (a mounted ConfigMap is swapped through one, and a reload must see
 * the new file). A running proxy holds this name, and file names in its
 * configuration are resolved against its directory: a relative one would
 * leave them relative to the directory the proxy was started from, and what
 * /config_dump prints would pass --check only from there. malloc'd (caller
 * frees); NULL with errno set. */
static char *absolute_path(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char *cwd = getcwd(NULL, 0);
    if (cwd == NULL)
        return NULL;
    /* "./proxy.yaml" is cwd/proxy.yaml */
    while (path[0] == '.' && path[1] == '/') {
        path += 2;
        while (path[0] == '/')
            path++;
    }
    char *out = NULL;
    if (asprintf(&out, "%s%s%s", cwd, strcmp(cwd, "/") == 0 ? "" : "/", path) < 0)
        out = NULL;
    free(cwd);
    return out;
}

int tr_cmd_proxy(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'l'},
        {"check", no_argument, NULL, 'k'},
        {"control", required_argument, NULL, 'C'},
        {"workload", required_argument, NULL, 'W'},
        {"token-file", required_argument, NULL, 'T'},
        {"ca-bundle", required_argument, NULL, 'B'},
        {"admin", required_argument, NULL, 'A'},
        {"outbound-ip", required_argument, NULL, 'O'},
        {"app-ip", required_argument, NULL, 'P'},
        {"admin-socket", required_argument, NULL, 'S'},
        {"capture", no_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct tr_server_options o = {.workers = -1};
    struct tr_control_client_options co = {0};
    int check = 0, c;
    while ((c = getopt_long(argc, argv, "c:w:l:kh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o.config_path = optarg;
            break;
        case 'w': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end != '\0' || n < 0 || n > 256) {
                fprintf(stderr, "trellis proxy: --workers takes 0..256\n");
                return 2;
            }
            o.workers = (int)n;
            break;
        }
        case 'l':
            o.log_level = optarg;
            break;
        case 'k':
            check = 1;
            break;
        case 'C':
            co.address = optarg;
            break;
        case 'W':
            co.workload = optarg;
            break;
        case 'T':
            co.token_file = optarg;
            break;
        case 'B':
            co.ca_file = optarg;
            break;
        case 'A':
            co.admin = optarg;
            break;
        case 'O':
            co.outbound_ip = optarg;
            break;
        case 'P':
            co.app_ip = optarg;
            break;
        case 'S':
            co.admin_socket = optarg;
            break;
        case 'R':
            co.capture = "redirect";
            break;
        case 'h':
            proxy_usage(stdout);
            return 0;
        default:
            proxy_usage(stderr);
            return 2;
        }
    }
    if (co.address != NULL) {
        if (o.config_path != NULL || check || co.workload == NULL || co.token_file == NULL ||
            co.ca_file == NULL) {
            fprintf(stderr, "trellis proxy: --control needs --workload, --token-file and "
                            "--ca-bundle, and takes no --config\n");
            return 2;
        }
        o.control = &co;
        return tr_server_run(&o);
    }
    if (o.config_path == NULL) {
        proxy_usage(stderr);
        return 2;
    }
    if (check) {
        char *err = NULL;
        struct tr_config *cfg = tr_config_load_file(o.config_path, &err);
        if (cfg == NULL) {
            fprintf(stderr, "%s\n", err ? err : "invalid configuration");
            free(err);
            return 1;
        }
        tr_config_free(cfg);
        printf("%s: ok\n", o.config_path);
        return 0;
    }
    char *config_path = absolute_path(o.config_path);
    if (config_path == NULL) {
        fprintf(stderr, "trellis proxy: %s: cannot make the path absolute: %s\n", o.config_path,
                strerror(errno));
        return 1;
    }
    o.config_path = config_path;
    int rc = tr_server_run(&o);
    free(config_path);
    return rc;
}
