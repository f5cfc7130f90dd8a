#include "admin/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "codec/h1/h1.h"
#include "core/log.h"
#include "net/sock.h"
#include "obs/metrics.h"
#include "runtime/server.h"
#include "runtime/snapshot.h"
#include "admin/config_dump.h"
#include "config/load.h"

#define ADMIN_MAX_REQUEST 8192
#define ADMIN_MAX_BODY    (16u * 1024u * 1024u) /* the loader's file size limit */
#define ADMIN_TIMEOUT_MS  5000

_Static_assert(TR_UNIX_PATH_MAX == sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1,
               "TR_UNIX_PATH_MAX must match sun_path");

struct tr_admin {
    struct tr_io tcp;  /* loopback: /ready and /stats/prometheus only */
    struct tr_io sock; /* the admin socket: everything; fd -1 if not configured */
    struct tr_loop *loop;
    char *socket_path; /* owned; NULL if not configured */
    dev_t socket_dev;  /* the socket file we made, so that stop removes only */
    ino_t socket_ino;  /* ours, not a successor's */
};

struct admin_conn {
    struct tr_io io;
    struct tr_admin *admin;
    bool privileged; /* came in over the admin socket */
    struct tr_timer timer;
    struct tr_deferred free_later;
    char *out; /* response being written (malloc'd) */
    size_t out_len, out_off;
    size_t in_len;
    size_t scanned;
    /* A configuration update's body (PUT /config/...): malloc'd to its
     * Content-Length, at most ADMIN_MAX_BODY. */
    char *body;
    size_t body_len, body_want;
    char target[512]; /* the update's target, kept while its body arrives */
    char in[ADMIN_MAX_REQUEST];
};

static void conn_free(struct tr_deferred *d)
{
    struct admin_conn *c = tr_container_of(d, struct admin_conn, free_later);
    free(c->out);
    free(c->body);
    free(c);
}

static void conn_close(struct admin_conn *c)
{
    if (c->io.fd < 0)
        return;
    tr_timer_cancel(c->admin->loop, &c->timer);
    tr_loop_del(c->admin->loop, &c->io);
    close(c->io.fd);
    c->io.fd = -1;
    tr_loop_defer(c->admin->loop, &c->free_later, conn_free);
}

static void conn_flush(struct admin_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->io.fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    conn_close(c);
}

static void respond(struct admin_conn *c, int status, const char *ctype, char *body,
                    size_t body_len)
{
    char *out = NULL;
    int n = asprintf(&out,
                     "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                     "connection: close\r\n\r\n",
                     status, tr_h1_reason(status), ctype, body_len);
    if (n < 0) {
        free(body);
        conn_close(c);
        return;
    }
    char *all = realloc(out, (size_t)n + body_len);
    if (all == NULL) {
        free(out);
        free(body);
        conn_close(c);
        return;
    }
    if (body_len > 0)
        memcpy(all + n, body, body_len);
    free(body);
    c->out = all;
    c->out_len = (size_t)n + body_len;
    conn_flush(c);
}

static void respond_text(struct admin_conn *c, int status, const char *text)
{
    char *b = strdup(text);
    respond(c, b ? status : 500, "text/plain", b, b ? strlen(b) : 0);
}

static bool query_param(tr_str target, const char *key, char *out, size_t size)
{
    const char *q = memchr(target.p, '?', target.len);
    if (q == NULL)
        return false;
    const char *end = target.p + target.len;
    size_t klen = strlen(key);
    for (const char *p = q + 1; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pend = amp ? amp : end;
        if ((size_t)(pend - p) > klen && memcmp(p, key, klen) == 0 && p[klen] == '=') {
            size_t vlen = (size_t)(pend - p) - klen - 1;
            if (vlen >= size)
                return false;
            memcpy(out, p + klen + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        p = pend + 1;
    }
    return false;
}

/* Calls that change state or show the configuration (the topology, peers'
 * identities): only over the admin socket. */
static bool is_update(tr_str path)
{
    return path.len > 8 && memcmp(path.p, "/config/", 8) == 0;
}

static bool path_privileged(tr_str path)
{
    return TR_STR_EQ_LIT(path, "/config_dump") || TR_STR_EQ_LIT(path, "/logging") ||
           is_update(path);
}

/* PUT /config/SECTION/NAME[/FIELD] (body: the new value) or DELETE
 * /config/SECTION/NAME: a partial update (config/load.h). Names are plain
 * (no percent-encoding), so the target is split as is. */
static void handle_update(struct admin_conn *c, bool remove)
{
    char *parts[4] = {0};
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(c->target + 8, "/", &save); t != NULL; t = strtok_r(NULL, "/", &save)) {
        if (n == 3 || strchr(t, '%') != NULL) {
            respond_text(c, 400, "expected /config/SECTION/NAME or /config/SECTION/NAME/FIELD\n");
            return;
        }
        parts[n++] = t;
    }
    if (n < 2 || (remove && n != 2)) {
        respond_text(c, 400,
                     remove ? "expected DELETE /config/SECTION/NAME\n"
                            : "expected /config/SECTION/NAME or /config/SECTION/NAME/FIELD\n");
        return;
    }
    struct tr_config_patch p = {
        .section = parts[0],
        .name = parts[1],
        .field = parts[2],
        .yaml = remove ? NULL : (c->body != NULL ? c->body : ""),
        .len = remove ? 0 : c->body_len,
    };
    char *err = NULL;
    if (tr_server_apply_patches(&p, 1, &err) != 0) {
        char *msg = NULL;
        if (asprintf(&msg, "%s\n", err != NULL ? err : "update rejected") < 0)
            msg = NULL;
        free(err);
        respond(c, msg != NULL ? 400 : 500, "text/plain", msg, msg != NULL ? strlen(msg) : 0);
        return;
    }
    char ok[64];
    snprintf(ok, sizeof(ok), "generation %llu\n", (unsigned long long)tr_server_generation());
    respond_text(c, 200, ok);
}

static void respond_forbidden(struct admin_conn *c, tr_str path)
{
    char body[256];
    const char *sock = c->admin->socket_path;
    if (sock != NULL)
        snprintf(body, sizeof(body), "%.*s is only served on the admin socket %s\n", (int)path.len,
                 path.p, sock);
    else
        snprintf(body, sizeof(body),
                 "%.*s is only served on the admin socket, and none is configured "
                 "(admin.socket)\n",
                 (int)path.len, path.p);
    respond_text(c, 403, body);
}

static void handle(struct admin_conn *c, const struct tr_h1_message *m)
{
    tr_str path = m->target;
    const char *q = memchr(path.p, '?', path.len);
    if (q != NULL)
        path.len = (uint32_t)(q - path.p);
    bool get = m->method_id == TR_H1_M_GET || m->method_id == TR_H1_M_HEAD;
    if (!c->privileged && path_privileged(path)) {
        respond_forbidden(c, path);
    } else if (is_update(path) && m->method_id == TR_H1_M_DELETE) {
        handle_update(c, true);
    } else if (is_update(path) && m->method_id != TR_H1_M_PUT) {
        respond_text(c, 405, "use PUT (with the new value) or DELETE\n");
    } else if (TR_STR_EQ_LIT(path, "/ready") && get) {
        bool ok = tr_server_ready();
        respond_text(c, ok ? 200 : 503, ok ? "LIVE\n" : "NOT READY\n");
    } else if (TR_STR_EQ_LIT(path, "/stats/prometheus") && get) {
        size_t len = 0;
        char *text = tr_metrics_render(&len);
        if (text == NULL && errno == E2BIG)
            respond_text(c, 503, "metrics exceed TR_METRICS_TEXT_MAX (64 MiB)\n");
        else if (text == NULL)
            respond_text(c, 500, "out of memory\n");
        else
            respond(c, 200, "text/plain; version=0.0.4", text, len);
    } else if (TR_STR_EQ_LIT(path, "/config_dump") && get) {
        struct tr_snapshot *snap = tr_snapshot_current_acquire();
        size_t len = 0;
        char *err = NULL;
        char *json = snap ? tr_config_dump_json(snap->cfg, snap->generation, &len, &err) : NULL;
        tr_snapshot_unref(snap);
        if (json == NULL) {
            char msg[1100];
            snprintf(msg, sizeof(msg), "%s\n",
                     snap == NULL  ? "no configuration"
                     : err != NULL ? err
                                   : "out of memory");
            respond_text(c, 500, msg);
        } else {
            respond(c, 200, "application/json", json, len);
        }
        free(err);
    } else if (TR_STR_EQ_LIT(path, "/logging")) {
        char level[16];
        if (m->method_id == TR_H1_M_POST && query_param(m->target, "level", level, sizeof(level))) {
            int l = tr_log_level_parse(level);
            if (l < 0) {
                respond_text(c, 400, "unknown level; use error, warn, info or debug\n");
                return;
            }
            tr_log_set_level((enum tr_log_level)l);
            tr_info("log level set to %s", level);
        } else if (m->method_id != TR_H1_M_GET && m->method_id != TR_H1_M_POST) {
            respond_text(c, 405, "method not allowed\n");
            return;
        }
        char buf[64];
        snprintf(buf, sizeof(buf), "level: %s\n", tr_log_level_name(tr_log_get_level()));
        respond_text(c, 200, buf);
    } else {
        respond_text(c, 404,
                     c->privileged ? "not found; try /ready, /stats/prometheus, /config_dump, "
                                     "/logging\n"
                                   : "not found; try /ready, /stats/prometheus (/config_dump and "
                                     "/logging: on the admin socket)\n");
    }
}

/* The body of an update, after its head: complete it, then apply it. */
static void read_body(struct admin_conn *c)
{
    while (c->body_len < c->body_want) {
        ssize_t n = read(c->io.fd, c->body + c->body_len, c->body_want - c->body_len);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_close(c);
            return;
        }
        if (n < 0)
            return;
        c->body_len += (size_t)n;
    }
    c->body_want = 0;
    handle_update(c, false);
}

/* A PUT /config/... head arrived: take its body (Content-Length only, since
 * an update is one bounded document). Returns false if it answered. */
static bool start_body(struct admin_conn *c, const struct tr_h1_message *m, tr_str path,
                       size_t head_len)
{
    if (path.len >= sizeof(c->target)) {
        respond_text(c, 414, "target too long\n");
        return false;
    }
    memcpy(c->target, path.p, path.len);
    c->target[path.len] = '\0';
    if (m->body != TR_H1_BODY_LENGTH) {
        respond_text(c, 411, "an update needs a Content-Length body\n");
        return false;
    }
    if (m->content_length > ADMIN_MAX_BODY) {
        respond_text(c, 413, "an update is at most 16 MiB\n");
        return false;
    }
    c->body_want = (size_t)m->content_length;
    c->body = malloc(c->body_want + 1);
    if (c->body == NULL) {
        respond_text(c, 500, "out of memory\n");
        return false;
    }
    size_t extra = c->in_len - head_len;
    if (extra > c->body_want)
        extra = c->body_want;
    memcpy(c->body, c->in + head_len, extra);
    c->body_len = extra;
    c->body[c->body_want] = '\0';
    return true;
}

static void conn_on_io(struct tr_io *io, uint32_t events)
{
    struct admin_conn *c = tr_container_of(io, struct admin_conn, io);
    if (c->out != NULL) {
        conn_flush(c);
        return;
    }
    if (c->body_want > 0) {
        read_body(c);
        return;
    }
    for (;;) {
        if (c->in_len == sizeof(c->in)) {
            respond_text(c, 431, "request too large\n");
            return;
        }
        ssize_t n = read(io->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_close(c);
            return;
        }
        if (n < 0)
            return;
        c->in_len += (size_t)n;
        struct tr_h1_limits lim = {4096, ADMIN_MAX_REQUEST, 64};
        int r = tr_h1_head_end(c->in, c->in_len, &lim, 1, &c->scanned);
        if (r < 0) {
            respond_text(c, tr_h1_error_status(r), "bad request\n");
            return;
        }
        if (r == 0)
            continue;
        struct tr_h1_header headers[64];
        struct tr_h1_message m;
        memset(&m, 0, sizeof(m));
        m.headers = headers;
        int rc = tr_h1_parse_request(c->in, (size_t)r, &lim, &m);
        if (rc < 0) {
            respond_text(c, tr_h1_error_status(rc), "bad request\n");
            return;
        }
        tr_str path = m.target;
        const char *q = memchr(path.p, '?', path.len);
        if (q != NULL)
            path.len = (uint32_t)(q - path.p);
        if (c->privileged && is_update(path) && m.method_id == TR_H1_M_PUT) {
            if (start_body(c, &m, path, (size_t)r))
                read_body(c);
            return;
        }
        if (c->privileged && is_update(path)) {
            memcpy(c->target, path.p, path.len < sizeof(c->target) ? path.len : 0);
            c->target[path.len < sizeof(c->target) ? path.len : 0] = '\0';
        }
        handle(c, &m);
        return;
    }
}

static void conn_on_timer(struct tr_timer *t)
{
    conn_close(tr_container_of(t, struct admin_conn, timer));
}

static void admin_accept(struct tr_admin *a, int lfd, bool privileged)
{
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen;
        int fd = tr_sock_accept(lfd, &peer, &plen);
        if (fd < 0)
            return;
        struct admin_conn *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->admin = a;
        c->privileged = privileged;
        c->io.fd = fd;
        c->io.cb = conn_on_io;
        tr_timer_init(&c->timer, conn_on_timer);
        tr_timer_set(a->loop, &c->timer, ADMIN_TIMEOUT_MS);
        tr_loop_add(a->loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
    }
}

static void admin_on_accept_tcp(struct tr_io *io, uint32_t events)
{
    (void)events;
    admin_accept(tr_container_of(io, struct tr_admin, tcp), io->fd, false);
}

static void admin_on_accept_unix(struct tr_io *io, uint32_t events)
{
    (void)events;
    admin_accept(tr_container_of(io, struct tr_admin, sock), io->fd, true);
}

/* "admin.socket PATH: WHAT: strerror(e)" into *err; returns -1. */
static int socket_fail(char **err, const char *path, const char *what, int e)
{
    if (asprintf(err, "admin.socket %s: %s: %s", path, what, strerror(e)) < 0)
        *err = NULL;
    return -1;
}

/* A socket file at path: left by a process that died (nobody answers: ours
 * to replace), or in use. Anything else is not ours to delete. */
static int clear_stale_socket(const char *path, const struct sockaddr_un *sun, char **err)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        return socket_fail(err, path, "cannot stat", errno);
    }
    if (!S_ISSOCK(st.st_mode)) {
        if (asprintf(err, "admin.socket %s exists and is not a socket; not replacing it", path) < 0)
            *err = NULL;
        return -1;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return socket_fail(err, path, "socket", errno);
    int rc = connect(probe, (const struct sockaddr *)sun, sizeof(*sun));
    int e = errno;
    close(probe);
    if (rc == 0 || e != ECONNREFUSED) {
        if (asprintf(err, "admin.socket %s is in use by another process (%s)", path,
                     rc == 0 ? "it accepted a connection" : strerror(e)) < 0)
            *err = NULL;
        return -1;
    }
    if (unlink(path) != 0 && errno != ENOENT)
        return socket_fail(err, path, "cannot remove the stale socket", errno);
    tr_info("admin: removed stale socket %s", path);
    return 0;
}

static int listen_unix(struct tr_admin *a, const char *path, char **err)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len > TR_UNIX_PATH_MAX) {
        if (asprintf(err, "admin.socket %s: path is %zu bytes, a Unix socket path is at most %d",
                     path, len, TR_UNIX_PATH_MAX) < 0)
            *err = NULL;
        return -1;
    }
    memcpy(sun.sun_path, path, len + 1);
    if (clear_stale_socket(path, &sun, err) != 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return socket_fail(err, path, "socket", errno);
    /* Connections are possible only after listen(): the mode is in place
     * before the first one, whatever the umask was at bind(). */
    struct stat st;
    if (bind(fd, (const struct sockaddr *)&sun, sizeof(sun)) != 0) {
        int e = errno;
        close(fd);
        return socket_fail(err, path, "cannot bind", e);
    }
    if (chmod(path, 0600) != 0 || lstat(path, &st) != 0 || listen(fd, 64) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return socket_fail(err, path, "cannot set up", e);
    }
    a->socket_dev = st.st_dev;
    a->socket_ino = st.st_ino;
    a->sock.fd = fd;
    a->sock.cb = admin_on_accept_unix;
    tr_loop_add(a->loop, &a->sock, EPOLLIN);
    return 0;
}

struct tr_admin *tr_admin_start(struct tr_loop *loop, const struct tr_admin_cfg *cfg, char **err)
{
    if (!tr_sock_addr_is_loopback(&cfg->addr.ss)) {
        if (asprintf(err, "admin address %s is not a loopback address", cfg->addr.text) < 0)
            *err = NULL;
        return NULL;
    }
    struct tr_admin *a = calloc(1, sizeof(*a));
    if (a == NULL || (cfg->socket != NULL && (a->socket_path = strdup(cfg->socket)) == NULL)) {
        free(a);
        if (asprintf(err, "admin: out of memory") < 0)
            *err = NULL;
        return NULL;
    }
    a->loop = loop;
    a->tcp.fd = -1;
    a->sock.fd = -1;
    int fd = tr_sock_listen((const struct sockaddr *)&cfg->addr.ss, cfg->addr.len, false, 64);
    if (fd < 0) {
        if (asprintf(err, "admin: cannot listen on %s: %s", cfg->addr.text, strerror(-fd)) < 0)
            *err = NULL;
        free(a->socket_path);
        free(a);
        return NULL;
    }
    a->tcp.fd = fd;
    a->tcp.cb = admin_on_accept_tcp;
    tr_loop_add(loop, &a->tcp, EPOLLIN);
    if (a->socket_path != NULL && listen_unix(a, a->socket_path, err) != 0) {
        tr_admin_stop(a);
        return NULL;
    }
    return a;
}

void tr_admin_stop(struct tr_admin *a)
{
    if (a == NULL)
        return;
    if (a->tcp.fd >= 0) {
        tr_loop_del(a->loop, &a->tcp);
        close(a->tcp.fd);
    }
    if (a->sock.fd >= 0) {
        tr_loop_del(a->loop, &a->sock);
        close(a->sock.fd);
        struct stat st;
        if (lstat(a->socket_path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == a->socket_dev &&
            st.st_ino == a->socket_ino)
            unlink(a->socket_path);
    }
    free(a->socket_path);
    free(a);
}
