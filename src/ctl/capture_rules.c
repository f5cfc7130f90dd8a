#include "ctl/capture_rules.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fmt.h"
#include "listener/capture.h"

void tr_capture_rules_defaults(struct tr_capture_rules_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->outbound_port = 15001;
    o->inbound_port = 15006;
    o->proxy_mark = TR_CAPTURE_PROXY_MARK;
}

static char *fail(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *fail(char **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0)
        *err = NULL;
    va_end(ap);
    return NULL;
}

/* "80", or a range "8000-8100". */
static bool port_ok(const char *s)
{
    char *end;
    errno = 0;
    unsigned long a = strtoul(s, &end, 10);
    if (end == s || errno != 0 || a < 1 || a > 65535)
        return false;
    if (*end == '\0')
        return true;
    if (*end != '-')
        return false;
    const char *b = end + 1;
    unsigned long z = strtoul(b, &end, 10);
    return end != b && *end == '\0' && z >= a && z <= 65535 && s[0] != '+' && b[0] != '+';
}

/* "10.0.0.0/8" or "10.1.2.3" (IPv4: the rules are IPv4 only). */
static bool cidr_ok(const char *s)
{
    char ip[INET_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t n = slash != NULL ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof(ip))
        return false;
    memcpy(ip, s, n);
    ip[n] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, ip, &a) != 1)
        return false;
    if (slash == NULL)
        return true;
    char *end;
    errno = 0;
    unsigned long len = strtoul(slash + 1, &end, 10);
    return end != slash + 1 && *end == '\0' && errno == 0 && len <= 32 && slash[1] != '+';
}

static char *take(struct tr_fmt *f)
{
    size_t len;
    return tr_fmt_take(f, &len);
}

static bool is_all(const char *const *v, size_t n)
{
    return n == 1 && strcmp(v[0], "*") == 0;
}

/* "{ a, b }" from a checked list. */
static void set_of(struct tr_fmt *f, const char *const *v, size_t n)
{
    tr_fmt_printf(f, "{ ");
    for (size_t i = 0; i < n; i++)
        tr_fmt_printf(f, "%s%s", i ? ", " : "", v[i]);
    tr_fmt_printf(f, " }");
}

static char *check_list(const char *const *v, size_t n, bool cidr, const char *what, char **err)
{
    if (is_all(v, n))
        return (char *)"";
    for (size_t i = 0; i < n; i++)
        if (!(cidr ? cidr_ok(v[i]) : port_ok(v[i])))
            return fail(err, "%s: \"%s\" is not %s", what, v[i],
                        cidr ? "an IPv4 address or CIDR" : "a port (1-65535) or a range A-B");
    return (char *)"";
}

/* "8000-8100" as iptables writes a range, "8000:8100". */
static void ipt_port(struct tr_fmt *f, const char *p)
{
    for (; *p != '\0'; p++)
        tr_fmt_printf(f, "%c", *p == '-' ? ':' : *p);
}

static char *iptables_script(const struct tr_capture_rules_opts *o, struct tr_fmt *f)
{
    tr_fmt_printf(f, "*nat\n"
                     ":TRELLIS_OUTPUT - [0:0]\n"
                     ":TRELLIS_PREROUTING - [0:0]\n"
                     "-A OUTPUT -p tcp -j TRELLIS_OUTPUT\n"
                     "-A PREROUTING -p tcp -j TRELLIS_PREROUTING\n");
    if (o->proxy_mark != 0)
        tr_fmt_printf(f, "-A TRELLIS_OUTPUT -m mark --mark %u -j RETURN\n", o->proxy_mark);
    if (o->has_proxy_uid)
        tr_fmt_printf(f, "-A TRELLIS_OUTPUT -m owner --uid-owner %u -j RETURN\n", o->proxy_uid);
    tr_fmt_printf(f, "-A TRELLIS_OUTPUT -d 127.0.0.0/8 -j RETURN\n");
    if (!is_all(o->exclude_cidrs, o->n_exclude_cidrs))
        for (size_t i = 0; i < o->n_exclude_cidrs; i++)
            tr_fmt_printf(f, "-A TRELLIS_OUTPUT -d %s -j RETURN\n", o->exclude_cidrs[i]);
    if (!is_all(o->exclude_outbound_ports, o->n_exclude_outbound_ports))
        for (size_t i = 0; i < o->n_exclude_outbound_ports; i++) {
            tr_fmt_printf(f, "-A TRELLIS_OUTPUT -p tcp --dport ");
            ipt_port(f, o->exclude_outbound_ports[i]);
            tr_fmt_printf(f, " -j RETURN\n");
        }
    if (o->n_include_cidrs > 0 && !is_all(o->include_cidrs, o->n_include_cidrs))
        for (size_t i = 0; i < o->n_include_cidrs; i++)
            tr_fmt_printf(f, "-A TRELLIS_OUTPUT -d %s -p tcp -j REDIRECT --to-ports %u\n",
                          o->include_cidrs[i], o->outbound_port);
    else
        tr_fmt_printf(f, "-A TRELLIS_OUTPUT -p tcp -j REDIRECT --to-ports %u\n", o->outbound_port);
    tr_fmt_printf(f, "-A TRELLIS_PREROUTING -i lo -j RETURN\n");
    if (!is_all(o->exclude_ports, o->n_exclude_ports))
        for (size_t i = 0; i < o->n_exclude_ports; i++) {
            tr_fmt_printf(f, "-A TRELLIS_PREROUTING -p tcp --dport ");
            ipt_port(f, o->exclude_ports[i]);
            tr_fmt_printf(f, " -j RETURN\n");
        }
    if (o->n_include_ports > 0 && !is_all(o->include_ports, o->n_include_ports))
        for (size_t i = 0; i < o->n_include_ports; i++) {
            tr_fmt_printf(f, "-A TRELLIS_PREROUTING -p tcp --dport ");
            ipt_port(f, o->include_ports[i]);
            tr_fmt_printf(f, " -j REDIRECT --to-ports %u\n", o->inbound_port);
        }
    else
        tr_fmt_printf(f, "-A TRELLIS_PREROUTING -p tcp -j REDIRECT --to-ports %u\n",
                      o->inbound_port);
    tr_fmt_printf(f, "COMMIT\n");
    return take(f);
}

/* Each runs with "iptables -w -t nat" before it; failures only mean there
 * was nothing to remove. The jumps are deleted up to this many times (a
 * rule added twice by hand). */
#define IPT_MAX_JUMPS 8
static const char *const ipt_removal[][4] = {
    {"-D", "OUTPUT", "-p tcp -j", "TRELLIS_OUTPUT"},
    {"-D", "PREROUTING", "-p tcp -j", "TRELLIS_PREROUTING"},
    {"-F", "TRELLIS_OUTPUT", NULL, NULL},
    {"-X", "TRELLIS_OUTPUT", NULL, NULL},
    {"-F", "TRELLIS_PREROUTING", NULL, NULL},
    {"-X", "TRELLIS_PREROUTING", NULL, NULL},
};

const char *tr_capture_rules_iptables_removal(void)
{
    return "iptables -w -t nat -D OUTPUT -p tcp -j TRELLIS_OUTPUT\n"
           "iptables -w -t nat -D PREROUTING -p tcp -j TRELLIS_PREROUTING\n"
           "iptables -w -t nat -F TRELLIS_OUTPUT\n"
           "iptables -w -t nat -X TRELLIS_OUTPUT\n"
           "iptables -w -t nat -F TRELLIS_PREROUTING\n"
           "iptables -w -t nat -X TRELLIS_PREROUTING\n";
}

char *tr_capture_rules_script(const struct tr_capture_rules_opts *o, bool remove, char **err)
{
    *err = NULL;
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 1u << 20);
    if (o->backend == TR_CAPTURE_IPTABLES && remove)
        return take(&f); /* the removal is commands: tr_capture_rules_iptables_removal */
    /* Declaring the table first makes the delete succeed when it is absent:
     * both forms are idempotent. */
    if (o->backend == TR_CAPTURE_NFTABLES)
        tr_fmt_printf(&f, "table inet trellis\ndelete table inet trellis\n");
    if (remove)
        return take(&f);
    if (check_list(o->include_ports, o->n_include_ports, false, "--include-ports", err) == NULL ||
        check_list(o->exclude_ports, o->n_exclude_ports, false, "--exclude-ports", err) == NULL ||
        check_list(o->exclude_outbound_ports, o->n_exclude_outbound_ports, false,
                   "--exclude-outbound-ports", err) == NULL ||
        check_list(o->include_cidrs, o->n_include_cidrs, true, "--include-cidrs", err) == NULL ||
        check_list(o->exclude_cidrs, o->n_exclude_cidrs, true, "--exclude-cidrs", err) == NULL) {
        tr_fmt_free(&f);
        return NULL;
    }
    if (o->outbound_port == 0 || o->inbound_port == 0) {
        tr_fmt_free(&f);
        return fail(err, "the outbound and inbound ports must be 1-65535");
    }
    if (o->proxy_mark == 0 && !o->has_proxy_uid) {
        tr_fmt_free(&f);
        return fail(err, "give --proxy-mark or --proxy-uid: the proxy's own connections would be "
                         "captured again");
    }
    if (o->backend == TR_CAPTURE_IPTABLES)
        return iptables_script(o, &f);
    tr_fmt_printf(&f, "table inet trellis {\n");
    /* The application's outbound connections. */
    tr_fmt_printf(&f, "    chain output {\n"
                      "        type nat hook output priority -100; policy accept;\n"
                      "        meta nfproto != ipv4 return\n"
                      "        meta l4proto != tcp return\n");
    if (o->proxy_mark != 0)
        tr_fmt_printf(&f, "        meta mark %u return\n", o->proxy_mark);
    if (o->has_proxy_uid)
        tr_fmt_printf(&f, "        meta skuid %u return\n", o->proxy_uid);
    tr_fmt_printf(&f, "        ip daddr 127.0.0.0/8 return\n");
    if (o->n_exclude_cidrs > 0 && !is_all(o->exclude_cidrs, o->n_exclude_cidrs)) {
        tr_fmt_printf(&f, "        ip daddr ");
        set_of(&f, o->exclude_cidrs, o->n_exclude_cidrs);
        tr_fmt_printf(&f, " return\n");
    }
    if (o->n_exclude_outbound_ports > 0 &&
        !is_all(o->exclude_outbound_ports, o->n_exclude_outbound_ports)) {
        tr_fmt_printf(&f, "        tcp dport ");
        set_of(&f, o->exclude_outbound_ports, o->n_exclude_outbound_ports);
        tr_fmt_printf(&f, " return\n");
    }
    if (o->n_include_cidrs > 0 && !is_all(o->include_cidrs, o->n_include_cidrs)) {
        tr_fmt_printf(&f, "        ip daddr != ");
        set_of(&f, o->include_cidrs, o->n_include_cidrs);
        tr_fmt_printf(&f, " return\n");
    }
    tr_fmt_printf(&f,
                  "        meta l4proto tcp counter redirect to :%u\n"
                  "    }\n",
                  o->outbound_port);
    /* Connections arriving for the workload. */
    tr_fmt_printf(&f, "    chain prerouting {\n"
                      "        type nat hook prerouting priority -100; policy accept;\n"
                      "        meta nfproto != ipv4 return\n"
                      "        meta l4proto != tcp return\n"
                      "        iifname \"lo\" return\n");
    if (o->n_exclude_ports > 0 && !is_all(o->exclude_ports, o->n_exclude_ports)) {
        tr_fmt_printf(&f, "        tcp dport ");
        set_of(&f, o->exclude_ports, o->n_exclude_ports);
        tr_fmt_printf(&f, " return\n");
    }
    if (o->n_include_ports > 0 && !is_all(o->include_ports, o->n_include_ports)) {
        tr_fmt_printf(&f, "        tcp dport != ");
        set_of(&f, o->include_ports, o->n_include_ports);
        tr_fmt_printf(&f, " return\n");
    }
    tr_fmt_printf(&f,
                  "        meta l4proto tcp counter redirect to :%u\n"
                  "    }\n"
                  "}\n",
                  o->inbound_port);
    return take(&f);
}

/* Run argv (a tool found on PATH) in the namespace nsfd (-1: ours) with
 * input on its stdin (NULL: none); quiet: its stderr to /dev/null. Returns
 * its exit status, or -1 with *err set. */
static int run_tool(int nsfd, const char *netns, char *const argv[], const char *input, bool quiet,
                    char **err)
{
    int in[2] = {-1, -1};
    if (input != NULL && pipe2(in, O_CLOEXEC) < 0) {
        fail(err, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fail(err, "fork: %s", strerror(errno));
        if (in[0] >= 0) {
            close(in[0]);
            close(in[1]);
        }
        return -1;
    }
    if (pid == 0) {
        /* The child alone enters the namespace; the tool inherits it. */
        if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) < 0) {
            fprintf(stderr, "trellis ctl iptables: setns %s: %s\n", netns, strerror(errno));
            _exit(126);
        }
        if (in[0] >= 0)
            dup2(in[0], STDIN_FILENO);
        if (quiet) {
            int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
            if (null >= 0)
                dup2(null, STDERR_FILENO);
        }
        execvp(argv[0], argv);
        fprintf(stderr, "trellis ctl iptables: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (in[0] >= 0) {
        close(in[0]);
        size_t len = strlen(input), off = 0;
        while (off < len) {
            ssize_t n = write(in[1], input + off, len - off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        close(in[1]);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fail(err, "waitpid: %s", strerror(errno));
            return -1;
        }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int iptables_remove(int nsfd, const char *netns, char **err)
{
    for (size_t i = 0; i < sizeof(ipt_removal) / sizeof(ipt_removal[0]); i++) {
        const char *const *r = ipt_removal[i];
        char *argv[12] = {"iptables", "-w", "-t", "nat", (char *)r[0], (char *)r[1]};
        size_t n = 6;
        if (r[2] != NULL) {
            argv[n++] = "-p";
            argv[n++] = "tcp";
            argv[n++] = "-j";
            argv[n++] = (char *)r[3];
        }
        argv[n] = NULL;
        bool jump = r[2] != NULL;
        for (int k = 0; k < (jump ? IPT_MAX_JUMPS : 1); k++) {
            int rc = run_tool(nsfd, netns, argv, NULL, true, err);
            if (rc < 0 || rc == 127 || rc == 126) {
                if (rc >= 0)
                    fail(err, "cannot run iptables in %s (install iptables)",
                         netns != NULL ? netns : "this namespace");
                return -1;
            }
            if (rc != 0)
                break; /* nothing (more) to remove */
        }
    }
    return 0;
}

int tr_capture_rules_apply(enum tr_capture_backend backend, const char *script, bool remove,
                           const char *netns, char **err)
{
    *err = NULL;
    int nsfd = -1;
    if (netns != NULL) {
        if (netns[0] == '\0' || strchr(netns, '/') != NULL || strcmp(netns, ".") == 0 ||
            strcmp(netns, "..") == 0) {
            fail(err, "--netns: \"%s\" is not a network namespace name", netns);
            return -1;
        }
        char path[512];
        snprintf(path, sizeof(path), "/run/netns/%s", netns);
        nsfd = open(path, O_RDONLY | O_CLOEXEC);
        if (nsfd < 0) {
            fail(err, "--netns %s: %s: %s", netns, path, strerror(errno));
            return -1;
        }
    }
    int rc;
    if (backend == TR_CAPTURE_NFTABLES) {
        char *argv[] = {"nft", "-f", "-", NULL};
        rc = run_tool(nsfd, netns, argv, script, false, err);
    } else {
        rc = iptables_remove(nsfd, netns, err);
        if (rc == 0 && !remove) {
            char *argv[] = {"iptables-restore", "-w", "--noflush", NULL};
            rc = run_tool(nsfd, netns, argv, script, false, err);
        }
    }
    if (nsfd >= 0)
        close(nsfd);
    return rc;
}
