/* trellis ctl status: the proxies a control plane knows (control/server.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "core/json.h"

#define STATUS_MAX (64u * 1024 * 1024)

/* Everything fd gives until EOF (at most STATUS_MAX bytes), NUL-terminated;
 * closes fd. NULL when out of memory. */
static char *read_all(int fd, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    while (buf != NULL) {
        if (n == cap) {
            char *nb = cap < STATUS_MAX ? realloc(buf, cap * 2 + 1) : NULL;
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (buf != NULL)
        buf[n] = '\0';
    *len = n;
    return buf;
}

static char *read_status(const char *state_dir, size_t *len)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if ((size_t)snprintf(a.sun_path, sizeof(a.sun_path), "%s/control.sock", state_dir) >=
        sizeof(a.sun_path)) {
        fprintf(stderr, "trellis ctl status: state path too long\n");
        return NULL;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 5};
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        fprintf(stderr, "trellis ctl status: %s: %s (is trellis control running?)\n", a.sun_path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    return read_all(fd, len);
}

static void str_of(const struct tr_json *j, uint32_t obj, const char *key, char *out, size_t cap)
{
    int t = tr_json_get(j, obj, key);
    long n = t >= 0 ? tr_json_str(j, (uint32_t)t, out, cap - 1) : -1;
    if (n < 0)
        snprintf(out, cap, "-");
    else
        out[n] = '\0';
}

static int64_t int_of(const struct tr_json *j, uint32_t obj, const char *key)
{
    int t = tr_json_get(j, obj, key);
    int64_t v = 0;
    if (t < 0 || !tr_json_int(j, (uint32_t)t, &v))
        return 0;
    return v;
}

static void fmt_left(char *out, size_t cap, int64_t secs)
{
    if (secs <= 0)
        snprintf(out, cap, "expired");
    else if (secs < 3600)
        snprintf(out, cap, "%lldm%llds", (long long)secs / 60, (long long)secs % 60);
    else
        snprintf(out, cap, "%lldh%lldm", (long long)secs / 3600, (long long)secs % 3600 / 60);
}

int tr_cmd_ctl_status(int argc, char **argv)
{
    const char *state = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
            state = argv[++i];
        else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc && strcmp(argv[i + 1], "json") == 0)
            json = true, i++;
        else {
            fprintf(stderr, "usage: trellis ctl status --state DIR [-o json]\n");
            return 2;
        }
    }
    if (state == NULL) {
        fprintf(stderr, "usage: trellis ctl status --state DIR [-o json]\n");
        return 2;
    }
    size_t len = 0;
    char *text = read_status(state, &len);
    if (text == NULL)
        return 1;
    if (json) {
        fwrite(text, 1, len, stdout);
        free(text);
        return 0;
    }
    uint32_t cap = 16 + 40 * 100000;
    struct tr_json_tok *tok = malloc(cap * sizeof(*tok));
    struct tr_json j;
    const char *err = NULL;
    if (tok == NULL || !tr_json_parse(text, len, tok, cap, &j, &err)) {
        fprintf(stderr, "trellis ctl status: unreadable answer: %s\n", err ? err : "no memory");
        free(tok);
        free(text);
        return 1;
    }
    int64_t now = int_of(&j, 0, "now");
    char td[256], ca_exp[32], left[32];
    str_of(&j, 0, "trust_domain", td, sizeof(td));
    str_of(&j, 0, "ca_expiry", ca_exp, sizeof(ca_exp));
    fmt_left(left, sizeof(left), int_of(&j, 0, "ca_not_after") - now);
    printf("trust domain %s, CA expires in %s (%s), resources generation %lld\n\n", td, left,
           ca_exp, (long long)int_of(&j, 0, "resources_generation"));
    int worst = 0;
    int p = tr_json_get(&j, 0, "proxies");
    int w_wl = 8, w_id = 8; /* columns as wide as their longest value */
    for (uint32_t i = 0; p >= 0 && i < tok[p].n; i++) {
        uint32_t e = tr_json_elem(&j, (uint32_t)p, i);
        char v[512];
        str_of(&j, e, "workload", v, sizeof(v));
        w_wl = (int)strlen(v) > w_wl ? (int)strlen(v) : w_wl;
        str_of(&j, e, "identity", v, sizeof(v));
        w_id = (int)strlen(v) > w_id ? (int)strlen(v) : w_id;
    }
    printf("%-*s  %-*s  %-5s  %-15s  %-15s  %-14s  %s\n", w_wl, "WORKLOAD", w_id, "IDENTITY",
           "STATE", "VERSION", "ACKED", "CERT EXPIRES", "LAST NACK");
    for (uint32_t i = 0; p >= 0 && i < tok[p].n; i++) {
        uint32_t e = tr_json_elem(&j, (uint32_t)p, i);
        char wl[256], id[512], exp[32], nack[512], cert[64];
        str_of(&j, e, "workload", wl, sizeof(wl));
        str_of(&j, e, "identity", id, sizeof(id));
        str_of(&j, e, "cert_expiry", exp, sizeof(exp));
        str_of(&j, e, "nack_message", nack, sizeof(nack));
        int conn = tr_json_get(&j, e, "connected");
        bool up = conn >= 0 && tok[conn].type == TR_JSON_TRUE;
        int64_t na = int_of(&j, e, "cert_not_after");
        fmt_left(left, sizeof(left), na - now);
        snprintf(cert, sizeof(cert), "%s %s", na ? left : "-", strcmp(exp, "ok") == 0 ? "" : exp);
        int64_t version = int_of(&j, e, "version"), acked = int_of(&j, e, "acked"),
                nacked = int_of(&j, e, "nacked");
        printf("%-*s  %-*s  %-5s  %-15lld  %-15lld  %-14s  %s\n", w_wl, wl, w_id, id,
               up ? "up" : "down", (long long)version, (long long)acked, cert,
               nacked > acked ? nack : "-");
        if (strcmp(exp, "warn") == 0 && worst < 1)
            worst = 1;
        if (strcmp(exp, "expired") == 0)
            worst = 2;
    }
    free(tok);
    free(text);
    return worst;
}

/* GET /config_dump over the proxy's admin socket; the body to stdout. */
static int config_dump(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(a.sun_path)) {
        fprintf(stderr, "trellis ctl proxy-config: %s: path too long\n", path);
        return 1;
    }
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 10};
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        fprintf(stderr, "trellis ctl proxy-config: %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    static const char req[] =
        "GET /config_dump HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        close(fd);
        return 1;
    }
    size_t n = 0;
    char *buf = read_all(fd, &n);
    if (buf == NULL)
        return 1;
    char *body = strstr(buf, "\r\n\r\n");
    int rc = strncmp(buf, "HTTP/1.1 200", 12) == 0 && body != NULL ? 0 : 1;
    if (rc != 0)
        fprintf(stderr, "trellis ctl proxy-config: the proxy answered: %.*s\n",
                (int)strcspn(buf, "\r\n"), buf);
    else
        fputs(body + 4, stdout);
    free(buf);
    return rc;
}

int tr_cmd_ctl_proxy_config(int argc, char **argv)
{
    const char *state = NULL, *workload = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
            state = argv[++i];
        else if (workload == NULL && argv[i][0] != '-')
            workload = argv[i];
        else
            workload = NULL, state = NULL, i = argc;
    }
    if (state == NULL || workload == NULL) {
        fprintf(stderr, "usage: trellis ctl proxy-config NAMESPACE/WORKLOAD --state DIR\n");
        return 2;
    }
    size_t len = 0;
    char *text = read_status(state, &len);
    if (text == NULL)
        return 1;
    uint32_t cap = 16 + 40 * 100000;
    struct tr_json_tok *tok = malloc(cap * sizeof(*tok));
    struct tr_json j;
    const char *err = NULL;
    if (tok == NULL || !tr_json_parse(text, len, tok, cap, &j, &err)) {
        fprintf(stderr, "trellis ctl proxy-config: unreadable status: %s\n", err ? err : "memory");
        free(tok);
        free(text);
        return 1;
    }
    int rc = 1;
    bool found = false;
    int p = tr_json_get(&j, 0, "proxies");
    for (uint32_t i = 0; p >= 0 && i < tok[p].n && !found; i++) {
        uint32_t e = tr_json_elem(&j, (uint32_t)p, i);
        char wl[256], sock[512];
        str_of(&j, e, "workload", wl, sizeof(wl));
        if (strcmp(wl, workload) != 0)
            continue;
        found = true;
        str_of(&j, e, "admin_socket", sock, sizeof(sock));
        if (sock[0] != '/')
            fprintf(stderr,
                    "trellis ctl proxy-config: the proxy of %s has no admin socket (start it "
                    "with --admin-socket PATH)\n",
                    workload);
        else
            rc = config_dump(sock);
    }
    if (!found)
        fprintf(stderr, "trellis ctl proxy-config: the control plane knows no proxy of %s\n",
                workload);
    free(tok);
    free(text);
    return rc;
}
