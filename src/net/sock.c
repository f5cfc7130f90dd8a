#include "net/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int tr_sock_listen(const struct sockaddr *addr, socklen_t len, bool reuseport, int backlog)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (addr->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, addr, len) < 0 || listen(fd, backlog) < 0)
        goto fail;
    return fd;
fail:;
    int err = errno;
    close(fd);
    return -err;
}

int tr_sock_set_mark(int fd, uint32_t mark)
{
    return setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0 ? -errno : 0;
}

static int set_int(int fd, int level, int opt, uint32_t value)
{
    int v = (int)value;
    return setsockopt(fd, level, opt, &v, sizeof(v)) < 0 ? -errno : 0;
}

int tr_sock_set_keepalive(int fd, uint32_t idle_s, uint32_t interval_s, uint32_t probes)
{
    int rc = set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    if (rc == 0 && idle_s != 0)
        rc = set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle_s);
    if (rc == 0 && interval_s != 0)
        rc = set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, interval_s);
    if (rc == 0 && probes != 0)
        rc = set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, probes);
    return rc;
}

int tr_sock_connect(const struct sockaddr *addr, socklen_t len, uint32_t mark)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (mark != 0) {
        int rc = tr_sock_set_mark(fd, mark);
        if (rc < 0) {
            close(fd);
            return rc;
        }
    }
    if (connect(fd, addr, len) < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int tr_sock_connect_result(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

int tr_sock_accept(int lfd, struct sockaddr_storage *peer, socklen_t *peer_len)
{
    *peer_len = sizeof(*peer);
    int fd = accept4(lfd, (struct sockaddr *)peer, peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

size_t tr_sock_addr_ip(const struct sockaddr_storage *ss, char *out, size_t size)
{
    const void *src = ss->ss_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    if (inet_ntop(ss->ss_family, src, out, (socklen_t)size) == NULL) {
        snprintf(out, size, "unknown");
    }
    return strlen(out);
}

size_t tr_sock_addr_str(const struct sockaddr_storage *ss, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    tr_sock_addr_ip(ss, ip, sizeof(ip));
    int n;
    if (ss->ss_family == AF_INET6)
        n = snprintf(out, size, "[%s]:%u", ip, ntohs(((const struct sockaddr_in6 *)ss)->sin6_port));
    else
        n = snprintf(out, size, "%s:%u", ip, ntohs(((const struct sockaddr_in *)ss)->sin_port));
    return n < 0 ? 0 : ((size_t)n >= size ? size - 1 : (size_t)n);
}

bool tr_sock_addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

bool tr_sock_addr_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
    return false;
}
