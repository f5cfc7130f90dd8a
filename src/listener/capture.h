/* listener/capture.h: original-destination capture.
 *
 * A capture listener (listeners[].original_destination) accepts connections
 * that a firewall rule redirected to it (trellis ctl iptables). On accept it
 * asks the kernel where each was going (SO_ORIGINAL_DST) and hands it to the
 * virtual listener (bind: false) of its direction with that address: exact
 * ip:port first, then the most specific destination_prefixes block holding
 * ip on that port, then 0.0.0.0:port for IPv4 or [::]:port for IPv6. The
 * table that answers is built once per snapshot for each capture listener
 * (runtime/snapshot.h): three sorted arrays and binary searches, so an
 * accept costs one getsockopt and O(log n) comparisons plus one per block
 * claimed on its port, never a scan of the listeners. Pure: no sockets here
 * except tr_capture_original_dst().
 */
#ifndef TR_LISTENER_CAPTURE_H
#define TR_LISTENER_CAPTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/model.h"
#include "core/authz_syntax.h"

/* The socket mark of the proxy's own connections that capture rules skip
 * by default (Istio's): tr_config.upstream_mark as the Istio compiler sets
 * it, trellis ctl iptables --proxy-mark's default, and the mark of the
 * control-plane connection of a proxy whose traffic is captured. */
#define TR_CAPTURE_PROXY_MARK 1337u

struct tr_capture_key {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t ip[16]; /* IPv4: the first 4 bytes; a wildcard entry: zeros */
    uint16_t port;  /* host order */
};

struct tr_capture_entry {
    struct tr_capture_key key;
    int listener; /* index into tr_config.listeners */
};

/* A destination_prefixes block of a virtual listener, on its port. */
struct tr_capture_prefix {
    struct tr_cidr cidr;
    uint16_t port;
    int listener;
};

struct tr_capture_table {
    struct tr_capture_entry *exact; /* sorted by key */
    size_t n_exact;
    struct tr_capture_entry *wild; /* 0.0.0.0:port and [::]:port, sorted by key */
    size_t n_wild;
    struct tr_capture_prefix *prefix; /* by family, port, then longest block first */
    size_t n_prefix;
};

/* The table of capture listener `capture` of cfg (a validated model): its
 * direction's virtual listeners. NULL when out of memory. */
struct tr_capture_table *tr_capture_table_build(const struct tr_config *cfg, size_t capture);
void tr_capture_table_free(struct tr_capture_table *t);

/* The virtual listener for original destination dst, or -1: none. */
int tr_capture_lookup(const struct tr_capture_table *t, const struct sockaddr_storage *dst);

/* The original destination of accepted socket fd (SO_ORIGINAL_DST, or
 * IP6T_SO_ORIGINAL_DST for IPv6). 0, or -errno (ENOENT: not redirected,
 * no conntrack entry). */
int tr_capture_original_dst(int fd, struct sockaddr_storage *out);

#endif
