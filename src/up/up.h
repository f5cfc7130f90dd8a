/* up/up.h: `trellis up` and `trellis down`, the whole mesh on one machine
 * (docs/up.md).
 *
 * `up` reads a directory of Kubernetes/Istio resources, and for every Pod:
 * a network namespace (trl-NS-NAME) with a veth to a bridge that lives in a
 * hub namespace (trl-hub; nothing changes in the host's own namespace), an
 * address from 198.18.0.0/15, a sidecar proxy, and the Pod's
 * containers[0].command + args, started by a supervisor process per
 * workload (proxy first, the application once the proxy is ready; the proxy
 * stops when the application exits). Everything created is recorded in the
 * state directory before it is created, so `down` removes exactly that.
 *
 * Loopback mode (--loopback) makes no namespace and needs no root: each
 * workload's Pod address, application address and outbound listeners are
 * three addresses of its own on the caller's loopback (127.77/78/79.H.L),
 * its proxy's admin endpoint a free port on 127.0.0.1, and its application
 * learns where its sidecar is from the environment (tr_up_env_read).
 *
 * Modes of how a proxy gets its model and certificate (tr_up_provision):
 *   control  (default) `up` runs `trellis control` in the hub namespace on
 *            the staged resources; each proxy runs with --control, a
 *            bootstrap token `up` issued and the CA bundle, makes its own
 *            key and streams its model;
 *   static   (--static) `up` compiles each model in process and issues each
 *            certificate with the mesh CA, writes both into the workload's
 *            directory and runs `trellis proxy --config FILE`.
 */
#ifndef TR_UP_UP_H
#define TR_UP_UP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/model.h"
#include "core/diag.h"
#include "ca/ca.h"
#include "resource/resource.h"

#define TR_UP_STATE_DEFAULT "/run/trellis/up"
#define TR_UP_HUB_NETNS     "trl-hub"
#define TR_UP_BRIDGE        "trl-br0"
#define TR_UP_NETNS_PREFIX  "trl-"
/* In static mode (no capture) every outbound listener of a proxy is on this
 * address, and the hosts file maps every service name to it. */
#define TR_UP_OUTBOUND_IP   "127.0.0.2"
#define TR_UP_APP_IP        "127.0.0.1"
/* Control mode: `trellis control` runs in the hub namespace on the bridge. */
#define TR_UP_CONTROL_IP    "198.18.0.1"
#define TR_UP_CONTROL_ADDR  TR_UP_CONTROL_IP ":15012"
/* Loopback mode (--loopback): no namespaces; each workload gets three
 * addresses of its own on the host's loopback interface, the same host part
 * in three /16s: its Pod address (inbound listeners), its application's and
 * its sidecar's outbound listeners'. 127.77.0.1 is the control plane's. */
#define TR_UP_LO_POD_NET    0x7F4D0000u /* 127.77.0.0/16 */
#define TR_UP_LO_APP_NET    0x7F4E0000u /* 127.78.0.0/16 */
#define TR_UP_LO_OUT_NET    0x7F4F0000u /* 127.79.0.0/16 */
#define TR_UP_LO_CONTROL_IP "127.77.0.1"
/* Sidecar capture (netns mode, the default): each Service without a
 * spec.clusterIP gets a virtual IP from 198.19.128.0/17, reserved for them
 * (Pods are allocated from 198.18.0.10 up). The hosts files map service
 * names there; nothing answers these addresses: the workload's capture
 * rules redirect a connection to its sidecar before it leaves. */
#define TR_UP_VIP_NET       0xC6138000u /* 198.19.128.0/17 */
#define TR_UP_VIP_SIZE      0x8000u
#define TR_UP_MAX_PORTS     16
#define TR_UP_NAME_MAX      64

struct tr_up_workload {
    char *ns, *name; /* the Pod */
    char *sa;        /* its service account */
    char ip[16];     /* dotted quad in 198.18.0.0/15 (loopback mode: 127.77.0.0/16) */
    char app_ip[16]; /* where its application listens (netns: 127.0.0.1) */
    char out_ip[16]; /* its sidecar's outbound listeners (netns: 127.0.0.2) */
    bool ip_given;   /* from status.podIP; else allocated */
    bool sidecar;    /* false: label sidecar.istio.io/inject: "false" */
    char netns[TR_UP_NAME_MAX];
    char veth[16];                   /* its peer in the hub namespace */
    char dir[4096];                  /* STATE/workloads/NS.NAME (0700) */
    char spiffe_id[512];             /* spiffe://TD/ns/NS/sa/SA */
    char **argv;                     /* containers[0].command + args, NULL-terminated; NULL: none */
    char **env;                      /* containers[0].env as NAME=VALUE, NULL-terminated */
    char *cwd;                       /* the directory of the file that holds the Pod */
    uint16_t ports[TR_UP_MAX_PORTS]; /* containerPorts: the app is up when they accept */
    size_t n_ports;
    char admin[64]; /* the proxy's admin address (/ready); loopback mode: a free
                     * port on 127.0.0.1, chosen before provisioning */
    /* filled once started */
    pid_t sup, proxy, app;
    bool ready;
};

/* A Service's virtual IP (capture mode). */
struct tr_up_vip {
    char *ns, *name;
    char ip[16];
    bool given; /* spec.clusterIP; else allocated */
};

struct tr_up {
    const char *state;   /* state directory (absolute) */
    const char *res_dir; /* the resources (absolute) */
    const char *trust_domain;
    const char *self;      /* path of the trellis binary */
    bool control;          /* control mode (else static) */
    bool loopback;         /* --loopback: no namespaces, per-workload loopback addresses */
    bool capture;          /* netns mode without --no-capture: sidecar capture rules, VIPs */
    char control_addr[64]; /* where the control plane listens (IP:PORT) */
    struct tr_up_workload *w;
    size_t n;
    struct tr_up_vip *vips; /* capture mode: one per Service (not headless) */
    size_t n_vips;
};

/* ---- resources (stage.c) ---- */

/* Every Pod of rs as a workload, addresses given or allocated (keeping the
 * ones in `keep`, "NS/NAME IP" lines, when not NULL); reported in d (file,
 * line). Returns 0, or -1 after an error in d. */
int tr_up_workloads(struct tr_up *u, const struct tr_rset *rs, const char *keep,
                    struct tr_diags *d);
void tr_up_workloads_free(struct tr_up *u);
/* Capture mode: every Service's virtual IP into u->vips: its spec.clusterIP
 * when it is an IPv4 address, none for a headless one ("None"), else one
 * from 198.19.128.0/17 chosen by a hash of NAMESPACE/NAME (the same on every
 * run and reload while no two collide), never a workload's address. Call
 * after tr_up_workloads. 0, or -1 (out of memory). */
int tr_up_vips(struct tr_up *u, const struct tr_rset *rs, struct tr_diags *d);
/* The virtual IP of the Service a host name of an outbound route names
 * (NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.DOMAIN; a short name in ns);
 * NULL when it names none. */
const char *tr_up_vip_of(const struct tr_up *u, const char *host, const char *ns);
/* Whether ip (a VIP) is outside 198.18.0.0/15, the subnet of the workloads'
 * eth0: a connect() to it needs a route (`ip route replace IP/32 dev eth0`)
 * before the capture rules can redirect it (the kernel picks a route, or
 * fails with ENETUNREACH, before the packet reaches the nat hook). */
bool tr_up_vip_needs_route(const char *ip);
/* Writes rs as one JSON `kind: List` to path, each Pod that `up` runs given
 * its address (status.podIP) and the sidecar label Istio's injector adds
 * (security.istio.io/tlsMode: istio). 0 or -1 (errno). */
int tr_up_stage(const struct tr_up *u, const struct tr_rset *rs, const char *path);

/* ---- one workload's proxy (provision.c) ---- */

/* Everything the proxy of w needs, and how to run it. Both modes compile
 * its model from the staged resources into w->dir/model.yaml (in control
 * mode a check, and what the control plane will send) and write
 * w->dir/hosts (the names its outbound listeners answer). Static mode
 * issues its certificate into w->dir/certs and sets *argv (malloc'd,
 * NULL-terminated) to `trellis proxy --config FILE`; control mode issues a
 * bootstrap token into w->dir/token (0600) and sets *argv to `trellis proxy
 * --control ADDR --workload NS/NAME --token-file F --ca-bundle F`. 0, or -1
 * with a message printed. */
int tr_up_provision(struct tr_up *u, struct tr_up_workload *w, const struct tr_rset *staged,
                    struct tr_ca *ca, char ***argv);
/* Recompiles w's model and hosts file; rewrites the model (atomically)
 * only when it changed. Returns 1 changed, 0 same, -1 error (printed). */
int tr_up_recompile(struct tr_up *u, struct tr_up_workload *w, const struct tr_rset *staged);

/* Loopback mode: the environment of w's application (and of `up --exec`),
 * as NAME=VALUE lines in w->dir/env: TRELLIS_POD_IP, TRELLIS_APP_IP,
 * TRELLIS_OUTBOUND_IP, TRELLIS_ADMIN, and for each Service its short name
 * reaches, NAME_SERVICE_HOST (the outbound address) and NAME_SERVICE_PORT
 * (the first port), as Kubernetes names them. Written by tr_up_provision
 * and tr_up_recompile; read by the supervisor and `up --exec`. NULL-terminated
 * malloc'd list, NULL when it cannot be read. */
char **tr_up_env_read(const char *dir);
void tr_up_env_free(char **env);

/* ---- processes and commands (run.c) ---- */

/* Runs argv (argv[0] looked up in PATH), stdout to /dev/null, stderr kept;
 * returns its exit status, or -1 when it could not run. */
int tr_up_cmd(char *const argv[]);
/* `ip ARGS...` (NULL-terminated); prints a message naming the command when
 * it fails unless quiet. 0 or -1. */
int tr_up_ip(int quiet, ...);
/* The start time of pid (/proc/PID/stat field 22), 0 if gone. */
unsigned long long tr_up_pid_start(pid_t pid);

/* ---- the supervisor of one workload (super.c) ---- */

/* Runs in a child of `up`: starts the proxy (proxy_argv), waits for its
 * /ready, starts the application, and writes "ready PROXY_PID APP_PID\n" or
 * "failed REASON\n" to report_fd; then stays until the application exits
 * (then stops the proxy) or it is told to stop (SIGTERM/SIGINT: stops the
 * application, then the proxy). Never returns. */
_Noreturn void tr_up_supervise(const struct tr_up *u, const struct tr_up_workload *w,
                               char **proxy_argv, int report_fd);

/* ---- commands (up.c) ---- */

int tr_up_main(int argc, char **argv);
int tr_down_main(int argc, char **argv);

#endif
