/* trellis: one binary, one subcommand per program of the mesh. */
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: trellis <command> [options]\n"
                 "\n"
                 "commands:\n"
                 "  proxy     run the data plane (trellis proxy --config FILE)\n"
                 "  control   run the control plane (trellis control --resources DIR --state DIR)\n"
                 "  ctl       operator tools (trellis ctl compile DIR --workload NS/NAME)\n"
                 "  up        run a directory of Pods and Istio resources as a mesh on this\n"
                 "            machine (trellis up DIR [--detach]; docs/up.md)\n"
                 "  down      stop what trellis up started\n"
                 "  version   print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "proxy") == 0)
        return tr_cmd_proxy(argc - 1, argv + 1);
    if (strcmp(cmd, "control") == 0)
        return tr_cmd_control(argc - 1, argv + 1);
    if (strcmp(cmd, "ctl") == 0)
        return tr_cmd_ctl(argc - 1, argv + 1);
    if (strcmp(cmd, "up") == 0)
        return tr_cmd_up(argc - 1, argv + 1);
    if (strcmp(cmd, "down") == 0)
        return tr_cmd_down(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("trellis %s\n", TR_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "trellis: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
