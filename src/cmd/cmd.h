/* cmd/cmd.h: entry points of trellis subcommands (argv[0] is the subcommand). */
#ifndef TR_CMD_H
#define TR_CMD_H

#define TR_VERSION "0.1.0"

int tr_cmd_proxy(int argc, char **argv);
int tr_cmd_ctl(int argc, char **argv);
int tr_cmd_control(int argc, char **argv);
/* trellis up DIR / trellis down (src/up/) */
int tr_cmd_up(int argc, char **argv);
int tr_cmd_down(int argc, char **argv);
/* trellis ctl ca ... (argv[0] is "ca") */
int tr_cmd_ctl_ca(int argc, char **argv);
/* trellis ctl status ... (argv[0] is "status") */
int tr_cmd_ctl_status(int argc, char **argv);
/* trellis ctl proxy-config ... (argv[0] is "proxy-config") */
int tr_cmd_ctl_proxy_config(int argc, char **argv);

#endif
