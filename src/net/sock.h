/* net/sock.h: socket helpers. All sockets are non-blocking and close-on-exec. */
#ifndef TR_NET_SOCK_H
#define TR_NET_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Listening socket with SO_REUSEADDR and (if reuseport) SO_REUSEPORT, so each
 * worker owns one and the kernel spreads connections. Returns fd or -errno. */
int tr_sock_listen(const struct sockaddr *addr, socklen_t len, bool reuseport, int backlog);

/* Start a non-blocking connect from a socket marked with mark (SO_MARK; 0:
 * unmarked), so capture rules pass the proxy's own connections
 * (tr_config.upstream_mark). Returns fd (connect may be in progress) or
 * -errno. */
int tr_sock_connect(const struct sockaddr *addr, socklen_t len, uint32_t mark);

/* SO_MARK on fd: 0 or -errno (EPERM without CAP_NET_ADMIN). */
int tr_sock_set_mark(int fd, uint32_t mark);

/* SO_KEEPALIVE on fd, with TCP_KEEPIDLE, TCP_KEEPINTVL (seconds) and
 * TCP_KEEPCNT where not 0 (0: the system's). 0 or -errno. */
int tr_sock_set_keepalive(int fd, uint32_t idle_s, uint32_t interval_s, uint32_t probes);

/* After EPOLLOUT on a connecting socket: 0 if connected, else -errno. */
int tr_sock_connect_result(int fd);

/* Accept one connection (non-blocking, cloexec, TCP_NODELAY). Returns fd or -errno. */
int tr_sock_accept(int lfd, struct sockaddr_storage *peer, socklen_t *peer_len);

/* "1.2.3.4" or "::1" (no port) into out; returns length. */
size_t tr_sock_addr_ip(const struct sockaddr_storage *ss, char *out, size_t size);
/* "1.2.3.4:80" or "[::1]:80" into out; returns length. */
size_t tr_sock_addr_str(const struct sockaddr_storage *ss, char *out, size_t size);
bool tr_sock_addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
bool tr_sock_addr_is_loopback(const struct sockaddr_storage *ss);

#endif
