/* up/super.c: the supervisor of one workload, a child of `trellis up` in
 * its own session: proxy first, the application once the proxy answers
 * /ready with 200 (and the application's ports accept), the proxy stopped
 * when the application exits (batch jobs finish), both stopped on SIGTERM.
 *
 * Signals are blocked and taken with sigtimedwait, children reaped with
 * waitpid(WNOHANG): no handler, no race between a signal and a wait. The
 * supervisor joins the workload's network namespace (setns) to probe the
 * proxy's admin port; the proxy and the application are started through
 * `ip netns exec NAME`, which also mounts /etc/netns/NAME/hosts over
 * /etc/hosts for them. In loopback mode there is no namespace: both run
 * here, the application with the environment in DIR/env. Their PIDs go to DIR/pids ("proxy PID START", "app
 * PID START") before anything waits on them, so `trellis down` finds them
 * even if this process is gone. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "up/up.h"

#define PROXY_READY_MS 15000
#define APP_READY_MS   15000
#define APP_STOP_MS    5000
#define PROXY_STOP_MS  12000

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void report(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(int fd, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (fd >= 0 && n > 0)
        (void)!write(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void record(const struct tr_up_workload *w, const char *what, pid_t pid)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/pids", w->dir);
    FILE *f = fopen(path, "a");
    if (f == NULL)
        return;
    fprintf(f, "%s %d %llu\n", what, (int)pid, tr_up_pid_start(pid));
    fclose(f);
}

/* `ip netns exec NETNS ARGV...` with stdout and stderr to log, in cwd;
 * loopback mode: ARGV itself, with the workload's environment (lo_env)
 * before its own. */
static pid_t spawn(const struct tr_up *u, const struct tr_up_workload *w, char **argv,
                   const char *log, const char *cwd, char **env, char **lo_env)
{
    size_t n = 0;
    while (argv[n] != NULL)
        n++;
    char **v = calloc(n + 5, sizeof(char *));
    if (v == NULL)
        return -1;
    size_t k = 0;
    if (!u->loopback) {
        v[k++] = "ip";
        v[k++] = "netns";
        v[k++] = "exec";
        v[k++] = (char *)w->netns;
    }
    memcpy(v + k, argv, n * sizeof(char *));
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        if (cwd != NULL && chdir(cwd) != 0) {
            fprintf(stderr, "trellis up: %s: %s\n", cwd, strerror(errno));
            _exit(126);
        }
        for (size_t i = 0; lo_env && lo_env[i]; i++)
            putenv(lo_env[i]);
        for (size_t i = 0; env && env[i]; i++)
            putenv(env[i]);
        execvp(v[0], v);
        fprintf(stderr, "trellis up: cannot run %s: %s\n", v[0], strerror(errno));
        _exit(127);
    }
    free(v);
    return pid;
}

/* Connects to ip:port (this namespace) within 200 ms; with a request, the
 * status line must say 200. */
static bool probe(const char *ip, uint16_t port, const char *request)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return false;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (ok && request != NULL) {
        ok = write(fd, request, strlen(request)) == (ssize_t)strlen(request);
        char buf[64] = "";
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t k = ok && poll(&p, 1, 200) == 1 ? read(fd, buf, sizeof(buf) - 1) : -1;
        ok = k >= 12 && strncmp(buf, "HTTP/1.1 200", 12) == 0;
    }
    close(fd);
    return ok;
}

static bool admin_ready(const struct tr_up_workload *w)
{
    char ip[64];
    snprintf(ip, sizeof(ip), "%s", w->admin);
    char *colon = strrchr(ip, ':');
    if (colon == NULL)
        return false;
    *colon = '\0';
    return probe(ip, (uint16_t)atoi(colon + 1),
                 "GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
}

/* Reaps whatever exited; sets *gone for the proxy and the app. */
static void reap(pid_t proxy, pid_t app, bool *proxy_gone, bool *app_gone, int *app_status)
{
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
        if (p == proxy)
            *proxy_gone = true;
        if (p == app) {
            *app_gone = true;
            *app_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
    }
}

/* SIGTERM, then SIGKILL after ms. */
static void stop(pid_t pid, long long ms, pid_t other, bool *gone, bool *other_gone, int *st)
{
    if (pid <= 0 || *gone)
        return;
    kill(pid, SIGTERM);
    long long end = now_ms() + ms;
    while (!*gone && now_ms() < end) {
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
        if (other == 0)
            reap(pid, 0, gone, other_gone, st);
        else
            reap(other, pid, other_gone, gone, st);
    }
    if (!*gone) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        *gone = true;
    }
}

_Noreturn void tr_up_supervise(const struct tr_up *u, const struct tr_up_workload *w,
                               char **proxy_argv, int report_fd)
{
    setsid();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char path[4200], log[4200];
    char **lo_env = NULL;
    if (u->loopback) {
        /* No namespace: the application learns its addresses and where its
         * sidecar listens from the environment `up` wrote (DIR/env). */
        if ((lo_env = tr_up_env_read(w->dir)) == NULL) {
            report(report_fd, "failed cannot read %s/env: %s\n", w->dir, strerror(errno));
            _exit(1);
        }
    } else {
        snprintf(path, sizeof(path), "/run/netns/%s", w->netns);
        int nfd = open(path, O_RDONLY | O_CLOEXEC);
        if (nfd < 0 || setns(nfd, CLONE_NEWNET) != 0) {
            report(report_fd, "failed cannot enter %s: %s\n", path, strerror(errno));
            _exit(1);
        }
        close(nfd);
    }

    pid_t proxy = 0, app = 0;
    bool proxy_gone = true, app_gone = true;
    int app_status = 0;
    long long t0 = now_ms();
    if (w->sidecar) {
        snprintf(log, sizeof(log), "%s/proxy.log", w->dir);
        proxy = spawn(u, w, proxy_argv, log, w->dir, NULL, NULL);
        if (proxy < 0) {
            report(report_fd, "failed fork: %s\n", strerror(errno));
            _exit(1);
        }
        proxy_gone = false;
        record(w, "proxy", proxy);
        while (!admin_ready(w)) {
            reap(proxy, 0, &proxy_gone, &app_gone, &app_status);
            struct timespec z = {0, 0};
            int sig = sigtimedwait(&set, NULL, &z);
            if (proxy_gone || (sig > 0 && sig != SIGCHLD) || now_ms() - t0 > PROXY_READY_MS) {
                report(report_fd, "failed the proxy %s (see %s)\n",
                       proxy_gone ? "exited"
                       : sig > 0  ? "was stopped"
                                  : "never became ready",
                       log);
                stop(proxy, PROXY_STOP_MS, 0, &proxy_gone, &app_gone, &app_status);
                _exit(1);
            }
            struct timespec ts = {0, 25 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    long long t_proxy = now_ms();
    if (w->argv != NULL) {
        snprintf(log, sizeof(log), "%s/app.log", w->dir);
        app = spawn(u, w, w->argv, log, w->cwd, w->env, lo_env);
        if (app < 0) {
            report(report_fd, "failed fork: %s\n", strerror(errno));
            stop(proxy, PROXY_STOP_MS, 0, &proxy_gone, &app_gone, &app_status);
            _exit(1);
        }
        app_gone = false;
        record(w, "app", app);
        for (size_t i = 0; i < w->n_ports; i++) {
            while (!probe(w->app_ip, w->ports[i], NULL)) {
                reap(proxy, app, &proxy_gone, &app_gone, &app_status);
                if (app_gone || now_ms() - t_proxy > APP_READY_MS) {
                    report(report_fd, "failed the application %s (see %s)\n",
                           app_gone ? "exited" : "never listened on its port", log);
                    stop(app, APP_STOP_MS, proxy, &app_gone, &proxy_gone, &app_status);
                    stop(proxy, PROXY_STOP_MS, 0, &proxy_gone, &app_gone, &app_status);
                    _exit(1);
                }
                struct timespec ts = {0, 25 * 1000000};
                nanosleep(&ts, NULL);
            }
        }
    }
    report(report_fd, "ready %d %d %lld %lld\n", (int)proxy, (int)app, t_proxy - t0,
           now_ms() - t_proxy);
    close(report_fd);

    /* Steady state: until the application exits or we are told to stop. */
    for (;;) {
        reap(proxy, app, &proxy_gone, &app_gone, &app_status);
        if (w->argv != NULL && app_gone) {
            stop(proxy, PROXY_STOP_MS, 0, &proxy_gone, &app_gone, &app_status);
            _exit(app_status);
        }
        if (w->sidecar && proxy_gone) {
            /* A workload without its sidecar has no identity: stop it too. */
            stop(app, APP_STOP_MS, 0, &app_gone, &proxy_gone, &app_status);
            _exit(1);
        }
        if (w->argv == NULL && !w->sidecar)
            _exit(0);
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            stop(app, APP_STOP_MS, proxy, &app_gone, &proxy_gone, &app_status);
            stop(proxy, PROXY_STOP_MS, 0, &proxy_gone, &app_gone, &app_status);
            _exit(0);
        }
    }
}
