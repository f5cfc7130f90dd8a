/* up/up.c: `trellis up DIR`, `trellis up --reload`, `trellis down`.
 *
 * The state directory holds up.state, one line per thing created, written
 * (and flushed to disk) before the thing is created:
 *   net loopback (first, in loopback mode: no namespaces, no root needed)
 *   resources DIR | trust_domain TD | netns NAME | etc /etc/netns/NAME
 *   forget NAME (a namespace `ip netns add` did not create after all)
 *   workload NS/NAME NETNS IP SPIFFE_ID DIR (loopback mode: the proxy's admin
 *     address where NETNS goes)
 *   control_addr IP:PORT | ctl PID START (the control plane)
 *   sup PID START NS/NAME
 * and workloads/NS.NAME/ (0700): model.yaml, certs/ (key 0600), hosts,
 * env (loopback mode), pids (written by the supervisor), proxy.log, app.log,
 * admin.sock.
 * `down` reads it and removes exactly that: processes by PID (checked
 * against their recorded start time, so a reused PID is never signalled),
 * namespaces and files by their recorded names. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ca/ca.h"
#include "dialect/istio/istio.h"
#include "ctl/capture_rules.h"
#include "up/up.h"

#define UP_READY_S   30
#define DOWN_WAIT_MS 15000

static void up_usage(FILE *out)
{
    fprintf(out,
            "usage: trellis up DIR [--state DIR] [--detach] [--static] [--loopback]\n"
            "                  [--no-capture] [--trust-domain TD]\n"
            "       trellis up --reload [--state DIR]\n"
            "       trellis up --status [--state DIR]\n"
            "       trellis up --exec NAMESPACE/NAME [--state DIR] -- COMMAND [ARGS...]\n"
            "       trellis down [--state DIR]\n"
            "\n"
            "  up        run every Pod of the resources in DIR on this machine: the control\n"
            "            plane in the namespace trl-hub, one network namespace per Pod\n"
            "            (trl-NS-NAME, addresses from 198.18.0.0/15 on a bridge in trl-hub),\n"
            "            its sidecar, then its command; prints a status table, then stays\n"
            "            until Ctrl-C (--detach: returns)\n"
            "  --static  no control plane: models and certificates written by up\n"
            "  --loopback  no root, no namespaces: every workload on addresses of its own\n"
            "            in 127.77-79.0.0/16 of this machine's loopback; applications find\n"
            "            their sidecar in the environment (NAME_SERVICE_HOST/PORT)\n"
            "  --no-capture  namespaces without capture rules: service names resolve to\n"
            "            the sidecar's outbound listeners on 127.0.0.2 (the default\n"
            "            captures every workload's TCP, as Istio's init container, and\n"
            "            names resolve to the Services' virtual IPs)\n"
            "  --reload  recompile every workload's model from DIR after an edit; each proxy\n"
            "            picks up its new model within a second\n"
            "  --status  the status table again: which recorded processes still run\n"
            "  --exec    run a command inside a workload, as its application runs\n"
            "  down      stop everything `up` started and remove what it created\n"
            "\n"
            "  --state DIR   where up records what it created (default %s as root, else\n"
            "                $XDG_RUNTIME_DIR/trellis/up or /tmp/trellis-up-UID)\n"
            "Needs root (network namespaces), except with --loopback. docs/up.md has the "
            "details.\n",
            TR_UP_STATE_DEFAULT);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the state file ---- */

static FILE *state_f;

static int state_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int state_line(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfprintf(state_f, fmt, ap);
    va_end(ap);
    fputc('\n', state_f);
    if (rc < 0 || fflush(state_f) != 0 || fsync(fileno(state_f)) != 0) {
        fprintf(stderr, "trellis up: cannot write the state file: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            char *nb = realloc(buf, cap = cap * 2 + 8192);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t k = fread(buf + len, 1, 4096, f);
        len += k;
        if (k == 0)
            break;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return -1;
    return chmod(tmp, mode);
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
    char *data = read_all(from);
    if (data == NULL)
        return -1;
    char tmp[PATH_MAX + 64];
    snprintf(tmp, sizeof(tmp), "%s.tmp", to);
    FILE *f = fopen(tmp, "w");
    int rc = f != NULL && fputs(data, f) >= 0 ? 0 : -1;
    if (f != NULL && fclose(f) != 0)
        rc = -1;
    free(data);
    if (rc == 0 && chmod(tmp, mode) == 0 && rename(tmp, to) == 0)
        return 0;
    unlink(tmp);
    return -1;
}

/* Whether the mesh recorded in state (its up.state) runs in loopback mode:
 * then nothing of it needs root. */
static bool state_loopback(const char *state)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/up.state", state);
    char *text = read_all(path);
    bool lo = text != NULL && (strncmp(text, "net loopback\n", 13) == 0 ||
                               strstr(text, "\nnet loopback\n") != NULL);
    free(text);
    return lo;
}

/* A free TCP port on ip (the kernel's choice; closed again, so another
 * process could take it before ours binds it: the proxy then fails to start,
 * and `up` says so). 0 on failure. */
static unsigned free_port(const char *ip)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof(sa);
    unsigned port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* ---- reading the resources ---- */

static struct tr_rset *read_dir(const char *dir, struct tr_diags *d)
{
    const char *paths[] = {dir};
    struct tr_store *st = tr_store_files(paths, 1);
    if (st == NULL)
        return NULL;
    struct tr_rset *rs = tr_store_snapshot(st, d);
    tr_store_free(st);
    return rs;
}

/* The resources of u->res_dir checked (what the compiler and the analysis
 * say, with the user's file and line), the workloads found, and the staged
 * copy read back. keep: addresses to keep ("NS/NAME IP" lines). */
static int load_mesh(struct tr_up *u, const char *keep, struct tr_rset **out_staged)
{
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = read_dir(u->res_dir, &d);
    struct tr_istio_options o = {.trust_domain = u->trust_domain};
    int rc = -1;
    if (rs != NULL && tr_istio_analyze(rs, &o, &d) >= 0 && tr_up_workloads(u, rs, keep, &d) == 0 &&
        (!u->capture || tr_up_vips(u, rs, &d) == 0) && d.n_errors == 0)
        rc = 0;
    tr_diags_print(&d, stderr, false);
    if (rc != 0) {
        fprintf(stderr, "trellis up: %s: %zu error(s), %zu warning(s): nothing changed\n",
                u->res_dir, d.n_errors, d.n_warnings);
        tr_diags_free(&d);
        tr_rset_free(rs);
        return -1;
    }
    if (d.n_warnings)
        fprintf(stderr, "trellis up: %s: %zu warning(s)\n", u->res_dir, d.n_warnings);
    tr_diags_free(&d);
    char staged_path[PATH_MAX + 32];
    snprintf(staged_path, sizeof(staged_path), "%s/resources", u->state);
    if (mkdir_p(staged_path, 0700) != 0) {
        fprintf(stderr, "trellis up: %s: %s\n", staged_path, strerror(errno));
        tr_rset_free(rs);
        return -1;
    }
    /* One file in a directory of its own: the control plane watches the
     * directory, and the rename that replaces the file is one event. */
    snprintf(staged_path, sizeof(staged_path), "%s/resources/mesh.json", u->state);
    if (tr_up_stage(u, rs, staged_path) != 0) {
        fprintf(stderr, "trellis up: %s: %s\n", staged_path, strerror(errno));
        tr_rset_free(rs);
        return -1;
    }
    tr_rset_free(rs);
    tr_diags_init(&d);
    *out_staged = read_dir(staged_path, &d);
    if (*out_staged == NULL || d.n_errors) {
        tr_diags_print(&d, stderr, false);
        tr_diags_free(&d);
        tr_rset_free(*out_staged);
        *out_staged = NULL;
        return -1;
    }
    tr_diags_free(&d);
    for (size_t i = 0; i < u->n; i++) {
        struct tr_up_workload *w = &u->w[i];
        snprintf(w->dir, sizeof(w->dir), "%s/workloads/%s.%s", u->state, w->ns, w->name);
        if (tr_ca_spiffe_id(u->trust_domain, w->ns, w->sa, w->spiffe_id, sizeof(w->spiffe_id)) !=
            0) {
            fprintf(stderr, "trellis up: %s/%s: no SPIFFE ID from service account \"%s\"\n", w->ns,
                    w->name, w->sa);
            return -1;
        }
    }
    return 0;
}

/* ---- the network ---- */

static bool netns_exists(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "/run/netns/%s", name);
    return access(path, F_OK) == 0;
}

/* Records a namespace, then creates it. If `ip netns add` fails (someone
 * else made one of that name in the meantime), the record is withdrawn, so
 * that down never deletes what is not ours. */
static int netns_add(const char *name)
{
    if (state_line("netns %s", name) != 0)
        return -1;
    if (tr_up_ip(0, "netns", "add", name, NULL) != 0) {
        state_line("forget %s", name);
        return -1;
    }
    return 0;
}

static int net_hub(void)
{
    if (netns_add(TR_UP_HUB_NETNS) != 0 ||
        tr_up_ip(0, "-n", TR_UP_HUB_NETNS, "link", "set", "lo", "up", NULL) != 0 ||
        tr_up_ip(0, "-n", TR_UP_HUB_NETNS, "link", "add", TR_UP_BRIDGE, "type", "bridge", NULL) !=
            0 ||
        tr_up_ip(0, "-n", TR_UP_HUB_NETNS, "link", "set", TR_UP_BRIDGE, "up", NULL) != 0)
        return -1;
    return 0;
}

/* Istio's init container: the capture rules in w's namespace, before its
 * proxy starts (nftables, table inet trellis; the proxy's own connections
 * carry mark 1337 and are let through). The namespace goes with `down`, and
 * the rules with it. */
static int capture_rules(const struct tr_up_workload *w)
{
    struct tr_capture_rules_opts o;
    tr_capture_rules_defaults(&o);
    char *err = NULL;
    char *script = tr_capture_rules_script(&o, false, &err);
    int rc = script ? tr_capture_rules_apply(o.backend, script, false, w->netns, &err) : -1;
    free(script);
    if (rc != 0) {
        const char *why = err ? err : rc > 0 ? "nft failed" : "out of memory";
        fprintf(stderr,
                "trellis up: %s/%s: capture rules in %s: %s (nftables needed; --no-capture runs "
                "without)\n",
                w->ns, w->name, w->netns, why);
        free(err);
        return -1;
    }
    return 0;
}

/* Capture mode: a route on eth0 for each Service address outside the
 * workloads' subnet (a spec.clusterIP such as 10.96.0.10), or connect()
 * fails before the capture rules see the packet. Idempotent (reload). */
static int vip_routes(const struct tr_up *u, const struct tr_up_workload *w)
{
    for (size_t i = 0; i < u->n_vips; i++) {
        char dst[32];
        if (!tr_up_vip_needs_route(u->vips[i].ip))
            continue;
        snprintf(dst, sizeof(dst), "%s/32", u->vips[i].ip);
        if (tr_up_ip(0, "-n", w->netns, "route", "replace", dst, "dev", "eth0", NULL) != 0)
            return -1;
    }
    return 0;
}

static int net_workload(const struct tr_up *u, const struct tr_up_workload *w)
{
    char cidr[32], etc[PATH_MAX], hosts[PATH_MAX + 16], from[PATH_MAX + 16];
    snprintf(cidr, sizeof(cidr), "%s/15", w->ip);
    if (netns_add(w->netns) != 0 ||
        tr_up_ip(0, "-n", w->netns, "link", "set", "lo", "up", NULL) != 0 ||
        tr_up_ip(0, "-n", TR_UP_HUB_NETNS, "link", "add", w->veth, "type", "veth", "peer", "name",
                 "eth0", "netns", w->netns, NULL) != 0 ||
        tr_up_ip(0, "-n", TR_UP_HUB_NETNS, "link", "set", w->veth, "master", TR_UP_BRIDGE, "up",
                 NULL) != 0 ||
        tr_up_ip(0, "-n", w->netns, "addr", "add", cidr, "dev", "eth0", NULL) != 0 ||
        tr_up_ip(0, "-n", w->netns, "link", "set", "eth0", "up", NULL) != 0 ||
        (u->capture && w->sidecar && (capture_rules(w) != 0 || vip_routes(u, w) != 0)))
        return -1;
    snprintf(etc, sizeof(etc), "/etc/netns/%s", w->netns);
    snprintf(hosts, sizeof(hosts), "%s/hosts", etc);
    snprintf(from, sizeof(from), "%s/hosts", w->dir);
    if (state_line("etc %s", etc) != 0)
        return -1;
    if (mkdir_p(etc, 0755) != 0 || copy_file(from, hosts, 0644) != 0) {
        fprintf(stderr, "trellis up: %s: %s\n", hosts, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- down ---- */

struct proc {
    pid_t pid;
    unsigned long long start;
};

static bool proc_alive(const struct proc *p)
{
    return p->pid > 0 && p->start != 0 && tr_up_pid_start(p->pid) == p->start;
}

static void add_proc(struct proc **v, size_t *n, int pid, unsigned long long start)
{
    struct proc *nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (nv == NULL)
        return;
    *v = nv;
    nv[(*n)++] = (struct proc){pid, start};
}

static int do_down(const char *state, bool quiet)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/up.state", state);
    char *text = read_all(path);
    if (text == NULL) {
        if (!quiet)
            fprintf(stderr, "trellis down: nothing is up (%s: %s)\n", path, strerror(errno));
        return 0;
    }
    struct proc *sups = NULL, *all = NULL, *ctls = NULL;
    size_t n_sups = 0, n_all = 0, n_ctls = 0;
    char **netns = NULL, **etc = NULL;
    size_t n_netns = 0, n_etc = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        int pid;
        unsigned long long start;
        char name[PATH_MAX];
        if (sscanf(line, "ctl %d %llu", &pid, &start) == 2) {
            add_proc(&ctls, &n_ctls, pid, start);
        } else if (sscanf(line, "sup %d %llu", &pid, &start) == 2) {
            add_proc(&sups, &n_sups, pid, start);
            add_proc(&all, &n_all, pid, start);
        } else if (sscanf(line, "netns %255s", name) == 1) {
            char **nv = realloc(netns, (n_netns + 1) * sizeof(char *));
            if (nv != NULL && (nv[n_netns] = strdup(name)) != NULL)
                n_netns++;
            netns = nv ? nv : netns;
        } else if (sscanf(line, "forget %255s", name) == 1) {
            for (size_t i = 0; i < n_netns; i++)
                if (strcmp(netns[i], name) == 0) {
                    free(netns[i]);
                    memmove(netns + i, netns + i + 1, (--n_netns - i) * sizeof(char *));
                    break;
                }
        } else if (sscanf(line, "etc %4000s", name) == 1) {
            char **nv = realloc(etc, (n_etc + 1) * sizeof(char *));
            if (nv != NULL && (nv[n_etc] = strdup(name)) != NULL)
                n_etc++;
            etc = nv ? nv : etc;
        } else if (sscanf(line, "workload %*s %*s %*s %*s %4000s", name) == 1) {
            char pids[PATH_MAX + 8], token[PATH_MAX + 8];
            snprintf(token, sizeof(token), "%s/token", name);
            if (unlink(token) != 0 && errno != ENOENT)
                fprintf(stderr, "trellis down: %s: %s\n", token, strerror(errno));
            snprintf(pids, sizeof(pids), "%s/pids", name);
            char *pt = read_all(pids);
            for (char *s = pt, *e; s && *s; s = e ? e + 1 : s + strlen(s)) {
                e = strchr(s, '\n');
                if (sscanf(s, "%*s %d %llu", &pid, &start) == 2)
                    add_proc(&all, &n_all, pid, start);
            }
            free(pt);
        }
    }
    free(text);
    /* The supervisors stop their application, then its proxy. */
    size_t stopped = 0;
    for (size_t i = 0; i < n_sups; i++)
        if (proc_alive(&sups[i]) && kill(sups[i].pid, SIGTERM) == 0)
            stopped++;
    long long end = now_ms() + DOWN_WAIT_MS;
    for (;;) {
        size_t alive = 0;
        for (size_t i = 0; i < n_all; i++)
            alive += proc_alive(&all[i]);
        if (alive == 0 || now_ms() > end)
            break;
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    /* The control plane last: proxies that lose it keep serving anyway. */
    for (size_t i = 0; i < n_ctls; i++)
        if (proc_alive(&ctls[i]))
            kill(ctls[i].pid, SIGTERM);
    for (long long cend = now_ms() + 5000; now_ms() < cend;) {
        size_t alive = 0;
        for (size_t i = 0; i < n_ctls; i++)
            alive += proc_alive(&ctls[i]);
        if (alive == 0)
            break;
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    size_t killed = 0;
    for (size_t i = 0; i < n_all; i++)
        if (proc_alive(&all[i]) && kill(all[i].pid, SIGKILL) == 0)
            killed++;
    for (size_t i = 0; i < n_ctls; i++)
        if (proc_alive(&ctls[i]) && kill(ctls[i].pid, SIGKILL) == 0)
            killed++;
    int rc = 0;
    /* Workload namespaces first (their veth peers go with them), the hub last. */
    for (size_t i = n_netns; i-- > 0;) {
        if (netns_exists(netns[i]) && tr_up_ip(0, "netns", "del", netns[i], NULL) != 0)
            rc = 1;
        free(netns[i]);
    }
    for (size_t i = n_etc; i-- > 0;) {
        char hosts[PATH_MAX + 8];
        snprintf(hosts, sizeof(hosts), "%s/hosts", etc[i]);
        bool top = strcmp(etc[i], "/etc/netns") == 0;
        if ((!top && unlink(hosts) != 0 && errno != ENOENT) ||
            (rmdir(etc[i]) != 0 && errno != ENOENT && !(top && errno == ENOTEMPTY))) {
            fprintf(stderr, "trellis down: %s: %s\n", etc[i], strerror(errno));
            rc = 1;
        }
        free(etc[i]);
    }
    if (!quiet && n_netns > 0)
        printf("trellis down: stopped %zu workload(s)%s, removed %zu network namespace(s)\n",
               stopped, killed ? " (some killed after the deadline)" : "", n_netns);
    else if (!quiet)
        printf("trellis down: stopped %zu workload(s)%s\n", stopped,
               killed ? " (some killed after the deadline)" : "");
    if (rc == 0 && unlink(path) != 0)
        rc = 1;
    free(netns);
    free(etc);
    free(sups);
    free(all);
    free(ctls);
    return rc;
}

/* ---- up ---- */

static void print_table(const struct tr_up *u)
{
    printf("\n%-26s %-30s %-13s %-55s %7s %7s %s\n", "WORKLOAD",
           u->loopback ? "PROXY ADMIN" : "NETNS", "POD IP", "IDENTITY", "PROXY", "APP", "READY");
    for (size_t i = 0; i < u->n; i++) {
        const struct tr_up_workload *w = &u->w[i];
        char name[600], proxy[16] = "-", app[16] = "-";
        snprintf(name, sizeof(name), "%s/%s", w->ns, w->name);
        if (w->proxy > 0)
            snprintf(proxy, sizeof(proxy), "%d", (int)w->proxy);
        if (w->app > 0)
            snprintf(app, sizeof(app), "%d", (int)w->app);
        printf("%-26s %-30s %-13s %-55s %7s %7s %s\n", name, u->loopback ? w->admin : w->netns,
               w->ip, w->sidecar ? w->spiffe_id : "(no sidecar)", proxy, app,
               w->ready ? "yes" : "no");
    }
    printf("\n");
}

static volatile sig_atomic_t stop_sig;

/* Control mode: `trellis control` in the hub namespace, on the bridge
 * (198.18.0.1), watching the staged resources, its CA the one `up` made.
 * Ready when its status socket (made after its TCP listener) accepts. */
static int start_control(const struct tr_up *u, pid_t *out)
{
    char log[PATH_MAX + 32], res[PATH_MAX + 32], ca[PATH_MAX + 32], sock[PATH_MAX + 48];
    snprintf(log, sizeof(log), "%s/control.log", u->state);
    snprintf(res, sizeof(res), "%s/resources", u->state);
    snprintf(ca, sizeof(ca), "%s/ca", u->state);
    snprintf(sock, sizeof(sock), "%s/ca/control.sock", u->state);
    if (!u->loopback && tr_up_ip(0, "-n", TR_UP_HUB_NETNS, "addr", "add", TR_UP_CONTROL_IP "/15",
                                 "dev", TR_UP_BRIDGE, NULL) != 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setsid();
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        char *v[] = {"ip",
                     "netns",
                     "exec",
                     TR_UP_HUB_NETNS,
                     (char *)u->self,
                     "control",
                     "--resources",
                     res,
                     "--state",
                     ca,
                     "--listen",
                     (char *)u->control_addr,
                     "--trust-domain",
                     (char *)u->trust_domain,
                     NULL};
        /* Loopback mode: no hub namespace, the control plane runs here. */
        char **argv = u->loopback ? v + 4 : v;
        execvp(argv[0], argv);
        fprintf(stderr, "trellis up: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    *out = pid;
    if (state_line("ctl %d %llu", (int)pid, tr_up_pid_start(pid)) != 0)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t slen = strlen(sock);
    if (slen >= sizeof(sa.sun_path)) {
        fprintf(stderr, "trellis up: %s: too long for a Unix socket\n", sock);
        return -1;
    }
    memcpy(sa.sun_path, sock, slen + 1);
    long long end = now_ms() + 10000;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return 0;
        if (waitpid(pid, NULL, WNOHANG) == pid || now_ms() > end || stop_sig) {
            fprintf(stderr, "trellis up: the control plane %s (see %s)\n",
                    stop_sig ? "was interrupted" : "did not start", log);
            return -1;
        }
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
}

static void on_stop(int sig)
{
    stop_sig = sig;
}

static int start_workloads(struct tr_up *u, char ***proxy_argv)
{
    int fds[256];
    size_t n = u->n < 256 ? u->n : 256;
    for (size_t i = 0; i < n; i++) {
        struct tr_up_workload *w = &u->w[i];
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0)
            return -1;
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0) {
            close(p[0]);
            fclose(state_f);
            int null = open("/dev/null", O_RDWR);
            if (null >= 0) {
                dup2(null, 0);
                dup2(null, 1);
                dup2(null, 2);
            }
            tr_up_supervise(u, w, proxy_argv[i], p[1]);
        }
        close(p[1]);
        fds[i] = p[0];
        w->sup = pid;
        /* A tiny window: the supervisor might not have exec'd anything yet;
         * its start time is what down checks. */
        if (state_line("sup %d %llu %s/%s", (int)pid, tr_up_pid_start(pid), w->ns, w->name) != 0)
            return -1;
    }
    printf("trellis up: starting %zu workload(s): proxy first, then the application\n", n);
    fflush(stdout);
    int rc = 0;
    long long deadline = now_ms() + UP_READY_S * 1000;
    for (size_t i = 0; i < n; i++) {
        struct tr_up_workload *w = &u->w[i];
        char buf[512];
        size_t len = 0;
        for (;;) {
            struct timespec ts = {0, 20 * 1000000};
            fd_set rd;
            FD_ZERO(&rd);
            FD_SET(fds[i], &rd);
            struct timeval tv = {0, 100000};
            int k = select(fds[i] + 1, &rd, NULL, NULL, &tv);
            if (k > 0) {
                ssize_t r = read(fds[i], buf + len, sizeof(buf) - 1 - len);
                if (r <= 0)
                    break;
                len += (size_t)r;
                if (memchr(buf, '\n', len) || len == sizeof(buf) - 1)
                    break;
            }
            if (stop_sig || now_ms() > deadline)
                break;
            (void)ts;
        }
        buf[len] = '\0';
        close(fds[i]);
        int proxy = 0, app = 0;
        long long tp = 0, ta = 0;
        if (sscanf(buf, "ready %d %d %lld %lld", &proxy, &app, &tp, &ta) == 4) {
            w->proxy = proxy;
            w->app = app;
            w->ready = true;
            printf("  %s/%s: %s%s", w->ns, w->name, w->sidecar ? "proxy ready" : "no sidecar",
                   w->sidecar ? "" : "");
            if (w->sidecar)
                printf(" in %lld ms", tp);
            if (w->argv != NULL)
                printf(", application %s in %lld ms", w->n_ports ? "listening" : "started", ta);
            printf("\n");
        } else {
            char *nl = strchr(buf, '\n');
            if (nl)
                *nl = '\0';
            fprintf(stderr, "trellis up: %s/%s: %s\n", w->ns, w->name,
                    strncmp(buf, "failed ", 7) == 0 ? buf + 7
                    : stop_sig                      ? "interrupted"
                                                    : "not ready in time");
            rc = -1;
        }
        fflush(stdout);
    }
    for (size_t i = n; i < u->n; i++)
        rc = -1;
    return rc;
}

static int self_path(char *out, size_t size)
{
    ssize_t k = readlink("/proc/self/exe", out, size - 1);
    if (k <= 0)
        return -1;
    out[k] = '\0';
    return 0;
}

struct up_opts {
    const char *state, *trust_domain, *dir, *exec;
    char **cmd; /* --exec: the command */
    bool detach, reload, status, static_mode, loopback, no_capture;
};

/* The default state directory: /run/trellis/up for root; for anyone else
 * (loopback mode) one of their own. */
static const char *default_state(void)
{
    static char buf[PATH_MAX];
    if (geteuid() == 0)
        return TR_UP_STATE_DEFAULT;
    const char *rt = getenv("XDG_RUNTIME_DIR");
    if (rt != NULL && rt[0] == '/')
        snprintf(buf, sizeof(buf), "%s/trellis/up", rt);
    else
        /* one level under /tmp (sticky: no one else can rename it away);
         * up refuses it when someone else made it first */
        snprintf(buf, sizeof(buf), "/tmp/trellis-up-%u", (unsigned)geteuid());
    return buf;
}

static int parse(int argc, char **argv, struct up_opts *o, bool down)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'},
        {"detach", no_argument, NULL, 'd'},
        {"reload", no_argument, NULL, 'r'},
        {"status", no_argument, NULL, 'S'},
        {"exec", required_argument, NULL, 'x'},
        {"static", no_argument, NULL, 'm'},
        {"loopback", no_argument, NULL, 'l'},
        {"trust-domain", required_argument, NULL, 't'},
        {"no-capture", no_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->state = default_state();
    o->trust_domain = "cluster.local";
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            o->state = optarg;
            break;
        case 'd':
            o->detach = true;
            break;
        case 'r':
            o->reload = true;
            break;
        case 'S':
            o->status = true;
            break;
        case 'x':
            o->exec = optarg;
            break;
        case 'm':
            o->static_mode = true;
            break;
        case 'l':
            o->loopback = true;
            break;
        case 'N':
            o->no_capture = true;
            break;
        case 't':
            o->trust_domain = optarg;
            break;
        case 'h':
            up_usage(stdout);
            return 1;
        default:
            up_usage(stderr);
            return -1;
        }
    }
    if (down &&
        (optind != argc || o->detach || o->reload || o->status || o->loopback || o->no_capture)) {
        up_usage(stderr);
        return -1;
    }
    if (!down && o->exec != NULL) {
        if (o->reload || o->status || o->detach || o->loopback || o->no_capture || optind >= argc) {
            fprintf(stderr, "trellis up --exec NS/NAME -- COMMAND [ARGS...]\n");
            return -1;
        }
        o->cmd = argv + optind;
        return 0;
    }
    if ((o->reload && o->status) || ((o->reload || o->status) && (o->loopback || o->no_capture))) {
        up_usage(stderr);
        return -1;
    }
    if (!down && !o->reload && !o->status) {
        if (optind != argc - 1) {
            fprintf(stderr, "trellis up: give one directory of resources\n");
            up_usage(stderr);
            return -1;
        }
        o->dir = argv[optind];
    } else if (!down && optind != argc) {
        fprintf(stderr, "trellis up --reload/--status: the directory is the one `up` was given\n");
        return -1;
    }
    return 0;
}

static int check_root(const char *cmd)
{
    if (geteuid() != 0) {
        fprintf(stderr, "trellis %s: network namespaces need root (run with sudo)\n", cmd);
        return -1;
    }
    return 0;
}

/* Creates or opens the mesh CA in STATE/ca. */
static struct tr_ca *open_ca(const struct tr_up *u)
{
    char dir[PATH_MAX], *err = NULL;
    snprintf(dir, sizeof(dir), "%s/ca", u->state);
    bool fresh = access(dir, F_OK) != 0;
    if (fresh && tr_ca_init(dir, u->trust_domain, NULL, &err) != 0) {
        fprintf(stderr, "trellis up: CA: %s\n", err ? err : "out of memory");
        free(err);
        return NULL;
    }
    struct tr_ca *ca = tr_ca_load(dir, &err);
    if (ca == NULL) {
        fprintf(stderr, "trellis up: CA: %s\n", err ? err : "out of memory");
        free(err);
        return NULL;
    }
    if (strcmp(tr_ca_trust_domain(ca), u->trust_domain) != 0) {
        fprintf(stderr, "trellis up: the CA in %s is for trust domain %s, not %s\n", dir,
                tr_ca_trust_domain(ca), u->trust_domain);
        tr_ca_free(ca);
        return NULL;
    }
    /* The last run's bootstrap tokens die here: only this run's proxies may
     * get certificates (the control plane is not running yet). */
    char tokens[PATH_MAX + 16];
    snprintf(tokens, sizeof(tokens), "%s/tokens", dir);
    if (unlink(tokens) != 0 && errno != ENOENT) {
        fprintf(stderr, "trellis up: %s: %s\n", tokens, strerror(errno));
        tr_ca_free(ca);
        return NULL;
    }
    printf("trellis up: mesh CA %s (%s), trust domain %s\n", dir, fresh ? "created" : "reused",
           u->trust_domain);
    return ca;
}

static int reload(const char *state);

/* A hash of every file's path, size, inode and mtime under dir: changes
 * when a file is edited, added, removed or replaced. */
static uint64_t sig_acc;

static int sig_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    uint64_t h = sig_acc ^ 1469598103934665603ull;
    for (const char *p = path; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    if (type == FTW_F) {
        const uint64_t v[] = {(uint64_t)st->st_size, (uint64_t)st->st_ino,
                              (uint64_t)st->st_mtim.tv_sec, (uint64_t)st->st_mtim.tv_nsec};
        for (size_t i = 0; i < 4; i++)
            h = (h ^ v[i]) * 1099511628211ull;
    }
    sig_acc = h;
    return 0;
}

static uint64_t dir_signature(const char *dir)
{
    sig_acc = 0;
    nftw(dir, sig_visit, 16, FTW_PHYS);
    return sig_acc;
}

static int cmd_up(const struct up_opts *o)
{
    char state[PATH_MAX], res[PATH_MAX], self[PATH_MAX], path[PATH_MAX + 16];
    if (!o->loopback && check_root("up") != 0)
        return 1;
    struct stat sst;
    if (mkdir_p(o->state, 0700) != 0 || realpath(o->state, state) == NULL ||
        stat(state, &sst) != 0) {
        fprintf(stderr, "trellis up: %s: %s\n", o->state, strerror(errno));
        return 1;
    }
    if (sst.st_uid != geteuid()) {
        /* Tokens, keys and the PIDs down signals live here: ours only. */
        fprintf(stderr, "trellis up: %s belongs to another user (uid %u): give --state\n", state,
                (unsigned)sst.st_uid);
        return 1;
    }
    if (realpath(o->dir, res) == NULL) {
        fprintf(stderr, "trellis up: %s: %s\n", o->dir, strerror(errno));
        return 1;
    }
    if (self_path(self, sizeof(self)) != 0) {
        fprintf(stderr, "trellis up: cannot find the trellis binary: %s\n", strerror(errno));
        return 1;
    }
    snprintf(path, sizeof(path), "%s/up.state", state);
    if (access(path, F_OK) == 0) {
        fprintf(stderr, "trellis up: %s exists: a mesh is up (trellis down --state %s)\n", path,
                o->state);
        return 1;
    }
    struct tr_up u = {.state = state,
                      .res_dir = res,
                      .trust_domain = o->trust_domain,
                      .self = self,
                      .control = !o->static_mode,
                      .loopback = o->loopback,
                      .capture = !o->loopback && !o->no_capture};
    snprintf(u.control_addr, sizeof(u.control_addr), "%s", TR_UP_CONTROL_ADDR);
    if (o->loopback && u.control) {
        unsigned port = free_port(TR_UP_LO_CONTROL_IP);
        if (port == 0) {
            fprintf(stderr, "trellis up: no free port on %s: %s\n", TR_UP_LO_CONTROL_IP,
                    strerror(errno));
            return 1;
        }
        snprintf(u.control_addr, sizeof(u.control_addr), "%s:%u", TR_UP_LO_CONTROL_IP, port);
    }
    struct tr_rset *staged = NULL;
    printf("trellis up: reading %s\n", res);
    if (load_mesh(&u, NULL, &staged) != 0) {
        tr_up_workloads_free(&u);
        return 1;
    }
    if (u.n == 0) {
        fprintf(stderr, "trellis up: %s has no Pods: nothing to run\n", res);
        tr_rset_free(staged);
        tr_up_workloads_free(&u);
        return 1;
    }
    int rc = 1;
    bool busy = !u.loopback && netns_exists(TR_UP_HUB_NETNS);
    for (size_t i = 0; i < u.n && !busy && !u.loopback; i++)
        busy = netns_exists(u.w[i].netns);
    /* Loopback mode: each proxy's admin endpoint on a free port of its own. */
    for (size_t i = 0; i < u.n && u.loopback; i++) {
        unsigned port = free_port("127.0.0.1");
        if (port == 0) {
            fprintf(stderr, "trellis up: no free port on 127.0.0.1: %s\n", strerror(errno));
            tr_rset_free(staged);
            tr_up_workloads_free(&u);
            return 1;
        }
        snprintf(u.w[i].admin, sizeof(u.w[i].admin), "127.0.0.1:%u", port);
    }
    if (busy) {
        fprintf(stderr,
                "trellis up: network namespace %s or a workload's already exists (another "
                "trellis up? `ip netns list`)\n",
                TR_UP_HUB_NETNS);
        tr_rset_free(staged);
        tr_up_workloads_free(&u);
        return 1;
    }
    struct tr_ca *ca = open_ca(&u);
    char ***argvs = calloc(u.n, sizeof(char **));
    bool ok = ca != NULL && argvs != NULL;
    snprintf(path, sizeof(path), "%s/workloads", state);
    ok = ok && mkdir_p(path, 0700) == 0;
    /* Models and certificates before any namespace: a compile error leaves
     * nothing to clean up. */
    for (size_t i = 0; ok && i < u.n; i++) {
        struct tr_up_workload *w = &u.w[i];
        snprintf(path, sizeof(path), "%s/pids", w->dir);
        ok = mkdir_p(w->dir, 0700) == 0 && (unlink(path) == 0 || errno == ENOENT) &&
             tr_up_provision(&u, w, staged, ca, &argvs[i]) == 0;
        if (ok)
            printf("  %s/%s: %s for %s, address %s%s\n", w->ns, w->name,
                   u.control ? "model compiled, bootstrap token" : "model and certificate",
                   w->spiffe_id, w->ip, w->ip_given ? "" : " (allocated)");
    }
    tr_ca_free(ca);
    tr_rset_free(staged);
    snprintf(path, sizeof(path), "%s/up.state", state);
    if (ok && (state_f = fopen(path, "w")) == NULL) {
        fprintf(stderr, "trellis up: %s: %s\n", path, strerror(errno));
        ok = false;
    }
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL); /* the terminal went away: stop, as Ctrl-C */
    if (ok) {
        ok = (!u.loopback || state_line("net loopback") == 0) &&
             state_line("resources %s", res) == 0 &&
             state_line("trust_domain %s", o->trust_domain) == 0 &&
             state_line("mode %s", u.control ? "control" : "static") == 0 &&
             (!u.capture || state_line("capture redirect") == 0);
        for (size_t i = 0; ok && i < u.n; i++) {
            const struct tr_up_workload *w = &u.w[i];
            /* Loopback mode: where the namespace's name goes, the proxy's admin
             * address (the table shows it; a reload compiles it in again). */
            ok = state_line("workload %s/%s %s %s %s %s", w->ns, w->name,
                            u.loopback ? w->admin : w->netns, w->ip, w->spiffe_id, w->dir) == 0;
        }
        if (ok && u.control)
            ok = state_line("control_addr %s", u.control_addr) == 0;
        /* /etc/netns itself, when up creates it, goes last (down walks the
         * etc lines backwards and leaves a directory others use). */
        if (ok && !u.loopback && access("/etc/netns", F_OK) != 0)
            ok = state_line("etc /etc/netns") == 0;
        ok = ok && (u.loopback || net_hub() == 0);
        pid_t ctl = 0;
        if (ok && u.control) {
            ok = start_control(&u, &ctl) == 0;
            if (ok)
                printf("trellis up: control plane on %s%s%s (pid %d), log %s/control.log\n",
                       u.control_addr, u.loopback ? "" : " in namespace ",
                       u.loopback ? "" : TR_UP_HUB_NETNS, (int)ctl, state);
        }
        for (size_t i = 0; ok && i < u.n && !u.loopback; i++)
            ok = net_workload(&u, &u.w[i]) == 0;
        if (ok && u.loopback)
            printf("trellis up: network: loopback mode, no namespaces: %zu workload(s) on "
                   "127.77.0.0/16 (application 127.78, outbound 127.79)\n",
                   u.n);
        else if (ok)
            printf("trellis up: network: bridge %s in namespace %s, %zu workload namespace(s) "
                   "on 198.18.0.0/15\n",
                   TR_UP_BRIDGE, TR_UP_HUB_NETNS, u.n);
        ok = ok && !stop_sig && start_workloads(&u, argvs) == 0;
    }
    if (ok) {
        print_table(&u);
        printf("run a command %s a workload: trellis up --state %s --exec %s/%s -- COMMAND\n"
               "logs and models: %s/workloads/NS.NAME/\n"
               "after editing %s: trellis up --reload --state %s\n",
               u.loopback ? "with the environment of" : "in", o->state, u.w[u.n - 1].ns,
               u.w[u.n - 1].name, state, res, o->state);
        if (u.control)
            printf("what each proxy acknowledged: trellis ctl status --state %s/ca\n", state);
        rc = 0;
    }
    for (size_t i = 0; argvs && i < u.n; i++) {
        for (size_t j = 0; argvs[i] && argvs[i][j]; j++)
            free(argvs[i][j]);
        free(argvs[i]);
    }
    free(argvs);
    tr_up_workloads_free(&u);
    if (state_f != NULL) {
        fclose(state_f);
        state_f = NULL;
    }
    if (rc != 0) {
        if (access(path, F_OK) == 0) {
            fprintf(stderr, "trellis up: failed: removing what was started\n");
            do_down(state, true);
        }
        return 1;
    }
    if (o->detach) {
        printf("stop it: trellis down --state %s\n", o->state);
        return 0;
    }
    printf("running; edits to %s are applied within a second; Ctrl-C stops it\n", res);
    fflush(stdout);
    uint64_t seen = dir_signature(res);
    while (!stop_sig && access(path, F_OK) == 0) {
        sleep(1);
        uint64_t now = dir_signature(res);
        if (now != seen && !stop_sig) {
            seen = now;
            printf("trellis up: %s changed: recompiling\n", res);
            reload(state);
        }
    }
    if (access(path, F_OK) != 0)
        return 0; /* someone ran trellis down */
    printf("\ntrellis up: stopping\n");
    return do_down(state, false);
}

/* Recompiles every workload of the mesh recorded in state (absolute). */
static int reload(const char *state)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/up.state", state);
    char *text = read_all(path);
    if (text == NULL) {
        fprintf(stderr, "trellis up --reload: nothing is up (%s: %s)\n", path, strerror(errno));
        return 1;
    }
    char res[PATH_MAX] = "", td[256] = "cluster.local";
    bool control = false, loopback = false, capture = false;
    char *keep = NULL, *admins = NULL;
    size_t keep_len = 0, admins_len = 0;
    FILE *kf = open_memstream(&keep, &keep_len);
    FILE *af = open_memstream(&admins, &admins_len);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char wl[600], ip[32], admin[64];
        char mode[16];
        if (sscanf(line, "mode %15s", mode) == 1) {
            control = strcmp(mode, "control") == 0;
            continue;
        }
        if (strcmp(line, "net loopback") == 0) {
            loopback = true;
            continue;
        }
        if (strcmp(line, "capture redirect") == 0) {
            capture = true;
            continue;
        }
        if (sscanf(line, "workload %599s %63s", wl, admin) == 2 && af != NULL)
            fprintf(af, "%s %s\n", wl, admin);
        if (sscanf(line, "resources %4095s", res) == 1 ||
            sscanf(line, "trust_domain %255s", td) == 1)
            continue;
        if (sscanf(line, "workload %599s %*s %31s", wl, ip) == 2 && kf != NULL)
            fprintf(kf, "%s %s\n", wl, ip);
    }
    if (kf != NULL)
        fclose(kf);
    if (af != NULL)
        fclose(af);
    struct tr_up u = {.state = state,
                      .res_dir = res,
                      .trust_domain = td,
                      .control = control,
                      .loopback = loopback,
                      .capture = capture};
    struct tr_rset *staged = NULL;
    int rc = 1;
    if (res[0] != '\0' && load_mesh(&u, keep, &staged) == 0) {
        rc = 0;
        size_t changed = 0;
        for (size_t i = 0; i < u.n; i++) {
            struct tr_up_workload *w = &u.w[i];
            char want[700];
            snprintf(want, sizeof(want), "%s/%s %s\n", w->ns, w->name, w->ip);
            if (keep == NULL || strstr(keep, want) == NULL) {
                fprintf(stderr,
                        "trellis up --reload: %s/%s is new: Pods added or removed need "
                        "`trellis down` and `trellis up`\n",
                        w->ns, w->name);
                continue;
            }
            if (loopback) {
                /* the admin address the proxy runs with, compiled in again */
                snprintf(want, sizeof(want), "%s/%s ", w->ns, w->name);
                const char *a = admins ? strstr(admins, want) : NULL;
                if (a != NULL)
                    sscanf(a + strlen(want), "%63s", w->admin);
            }
            int k = tr_up_recompile(&u, w, staged);
            char from[PATH_MAX + 16], to[PATH_MAX];
            snprintf(from, sizeof(from), "%s/hosts", w->dir);
            snprintf(to, sizeof(to), "/etc/netns/%s/hosts", w->netns);
            if (k >= 0 && !loopback && copy_file(from, to, 0644) != 0) {
                fprintf(stderr, "trellis up --reload: %s: %s\n", to, strerror(errno));
                k = -1;
            }
            if (k >= 0 && capture && w->sidecar && vip_routes(&u, w) != 0)
                k = -1; /* a Service given a clusterIP since */
            if (k < 0) {
                rc = 1;
                continue;
            }
            if (k > 0) {
                changed++;
                printf("  %s/%s: new model\n", w->ns, w->name);
            }
        }
        printf("trellis up --reload: %zu of %zu model(s) changed; %s\n", changed, u.n,
               u.control ? "the control plane pushes them to their proxies"
                         : "proxies load them within a second");
    }
    tr_rset_free(staged);
    tr_up_workloads_free(&u);
    free(keep);
    free(admins);
    free(text);
    return rc;
}

static int cmd_reload(const struct up_opts *o)
{
    char state[PATH_MAX];
    if (realpath(o->state, state) == NULL) {
        fprintf(stderr, "trellis up --reload: %s: %s\n", o->state, strerror(errno));
        return 1;
    }
    if (!state_loopback(state) && check_root("up --reload") != 0)
        return 1;
    return reload(state);
}

/* The table again, from the state directory: each recorded process alive
 * or not (by PID and start time). */
static int cmd_status(const struct up_opts *o)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/up.state", o->state);
    char *text = read_all(path);
    if (text == NULL) {
        fprintf(stderr, "trellis up --status: nothing is up (%s: %s)\n", path, strerror(errno));
        return 1;
    }
    bool lo_state = strncmp(text, "net loopback\n", 13) == 0;
    printf("%-26s %-30s %-13s %-55s %7s %7s %s\n", "WORKLOAD", lo_state ? "PROXY ADMIN" : "NETNS",
           "POD IP", "IDENTITY", "PROXY", "APP", "STATE");
    size_t running = 0, n = 0;
    bool loopback = false;
    char caddr[64] = TR_UP_CONTROL_ADDR;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char wl[600], netns[TR_UP_NAME_MAX], ip[32], id[512], dir[PATH_MAX];
        struct proc cp;
        if (strcmp(line, "net loopback") == 0) {
            loopback = true;
            continue;
        }
        if (sscanf(line, "control_addr %63s", caddr) == 1)
            continue;
        if (sscanf(line, "ctl %d %llu", &cp.pid, &cp.start) == 2) {
            char cip[64];
            snprintf(cip, sizeof(cip), "%s", caddr);
            if (strrchr(cip, ':') != NULL)
                *strrchr(cip, ':') = '\0';
            printf("%-26s %-30s %-13s %-55s %7s %7d %s\n", "(control plane)",
                   loopback ? "-" : TR_UP_HUB_NETNS, cip, caddr, "-", (int)cp.pid,
                   proc_alive(&cp) ? "running" : "gone");
            continue;
        }
        if (sscanf(line, "workload %599s %63s %31s %511s %4095s", wl, netns, ip, id, dir) != 5)
            continue;
        n++;
        char pids[PATH_MAX + 8], proxy[32] = "-", app[32] = "-";
        snprintf(pids, sizeof(pids), "%s/pids", dir);
        char *pt = read_all(pids);
        int has_proxy = 0, has_app = 0, proxy_up = 0, app_up = 0;
        for (char *s = pt, *e; s && *s; s = e ? e + 1 : s + strlen(s)) {
            e = strchr(s, '\n');
            char what[16];
            struct proc p;
            if (sscanf(s, "%15s %d %llu", what, &p.pid, &p.start) != 3)
                continue;
            bool up = proc_alive(&p);
            if (strcmp(what, "proxy") == 0) {
                has_proxy = 1;
                proxy_up = up;
                snprintf(proxy, sizeof(proxy), "%d", (int)p.pid);
            } else if (strcmp(what, "app") == 0) {
                has_app = 1;
                app_up = up;
                snprintf(app, sizeof(app), "%d", (int)p.pid);
            }
        }
        free(pt);
        const char *st = (!has_proxy || proxy_up) && (!has_app || app_up)  ? "running"
                         : has_app && !app_up && (!has_proxy || !proxy_up) ? "finished"
                         : has_proxy && !proxy_up                          ? "proxy gone"
                                                                           : "app gone";
        running += strcmp(st, "running") == 0;
        printf("%-26s %-30s %-13s %-55s %7s %7s %s\n", wl, netns, ip,
               has_proxy ? id : "(no sidecar)", proxy, app, st);
    }
    free(text);
    printf("%zu of %zu workload(s) running\n", running, n);
    return 0;
}

/* Runs a command in a workload's namespace, as its application runs (the
 * workload's hosts file mounted over /etc/hosts): `ip netns exec`. */
static int cmd_exec(const struct up_opts *o)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/up.state", o->state);
    char *text = read_all(path);
    if (text == NULL) {
        fprintf(stderr, "trellis up --exec: nothing is up (%s: %s)\n", path, strerror(errno));
        return 1;
    }
    char netns[TR_UP_NAME_MAX] = "", dir[PATH_MAX] = "";
    bool loopback = false;
    for (char *line = strtok(text, "\n"); line && !netns[0]; line = strtok(NULL, "\n")) {
        char wl[600], ns[TR_UP_NAME_MAX];
        if (strcmp(line, "net loopback") == 0)
            loopback = true;
        if (sscanf(line, "workload %599s %63s %*s %*s %4095s", wl, ns, dir) == 3 &&
            strcmp(wl, o->exec) == 0)
            snprintf(netns, sizeof(netns), "%s", ns);
    }
    free(text);
    if (!netns[0]) {
        fprintf(stderr, "trellis up --exec: no workload %s in %s (NAMESPACE/NAME)\n", o->exec,
                path);
        return 1;
    }
    if (loopback) {
        /* No namespace to enter: the command gets the workload's environment
         * (its addresses, where its sidecar listens), as its application. */
        char **env = tr_up_env_read(dir);
        if (env == NULL) {
            fprintf(stderr, "trellis up --exec: %s/env: %s\n", dir, strerror(errno));
            return 1;
        }
        for (size_t i = 0; env[i]; i++)
            putenv(env[i]); /* the strings become the environment's: not freed */
        free(env);
        execvp(o->cmd[0], o->cmd);
        fprintf(stderr, "trellis up --exec: cannot run %s: %s\n", o->cmd[0], strerror(errno));
        return 127;
    }
    size_t n = 0;
    while (o->cmd[n] != NULL)
        n++;
    char **v = calloc(n + 5, sizeof(char *));
    if (v == NULL)
        return 1;
    v[0] = "ip";
    v[1] = "netns";
    v[2] = "exec";
    v[3] = netns;
    memcpy(v + 4, o->cmd, n * sizeof(char *));
    execvp(v[0], v);
    fprintf(stderr, "trellis up --exec: cannot run ip: %s\n", strerror(errno));
    free(v);
    return 127;
}

int tr_up_main(int argc, char **argv)
{
    struct up_opts o;
    int k = parse(argc, argv, &o, false);
    if (k != 0)
        return k > 0 ? 0 : 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (o.exec != NULL)
        return cmd_exec(&o);
    return o.status ? cmd_status(&o) : o.reload ? cmd_reload(&o) : cmd_up(&o);
}

int tr_down_main(int argc, char **argv)
{
    struct up_opts o;
    int k = parse(argc, argv, &o, true);
    if (k != 0)
        return k > 0 ? 0 : 2;
    char state[PATH_MAX];
    if (realpath(o.state, state) == NULL) {
        fprintf(stderr, "trellis down: nothing is up (%s: %s)\n", o.state, strerror(errno));
        return 0;
    }
    /* A loopback mesh has no namespace to delete: its owner stops it. */
    if (!state_loopback(state) && check_root("down") != 0)
        return 1;
    return do_down(state, false);
}
