#include "listener/capture.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <linux/netfilter_ipv4.h>            /* SO_ORIGINAL_DST */
#include <linux/netfilter_ipv6/ip6_tables.h> /* IP6T_SO_ORIGINAL_DST */

static void key_of(const struct sockaddr_storage *ss, struct tr_capture_key *k)
{
    memset(k, 0, sizeof(*k));
    k->family = (uint8_t)ss->ss_family;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        memcpy(k->ip, &a->sin6_addr, 16);
        k->port = ntohs(a->sin6_port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        memcpy(k->ip, &a->sin_addr, 4);
        k->port = ntohs(a->sin_port);
    }
}

static int key_cmp(const struct tr_capture_key *a, const struct tr_capture_key *b)
{
    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    if (a->port != b->port)
        return a->port < b->port ? -1 : 1;
    return memcmp(a->ip, b->ip, sizeof(a->ip));
}

static int entry_cmp(const void *a, const void *b)
{
    return key_cmp(&((const struct tr_capture_entry *)a)->key,
                   &((const struct tr_capture_entry *)b)->key);
}

static bool key_is_wild(const struct tr_capture_key *k)
{
    static const uint8_t zero[16];
    return memcmp(k->ip, zero, sizeof(zero)) == 0;
}

static int prefix_cmp(const void *pa, const void *pb)
{
    const struct tr_capture_prefix *a = pa, *b = pb;
    if (a->cidr.ip.family != b->cidr.ip.family)
        return a->cidr.ip.family < b->cidr.ip.family ? -1 : 1;
    if (a->port != b->port)
        return a->port < b->port ? -1 : 1;
    if (a->cidr.bits != b->cidr.bits)
        return a->cidr.bits > b->cidr.bits ? -1 : 1; /* the most specific first */
    return memcmp(a->cidr.ip.a, b->cidr.ip.a, sizeof(a->cidr.ip.a));
}

struct tr_capture_table *tr_capture_table_build(const struct tr_config *cfg, size_t capture)
{
    struct tr_capture_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    enum tr_direction dir = cfg->listeners[capture].direction;
    size_t n = 0, np = 0;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (!cfg->listeners[i].bind && cfg->listeners[i].direction == dir) {
            n++;
            np += cfg->listeners[i].n_destination_prefixes;
        }
    t->exact = calloc(n + 1, sizeof(*t->exact));
    t->wild = calloc(n + 1, sizeof(*t->wild));
    t->prefix = calloc(np + 1, sizeof(*t->prefix));
    if (t->exact == NULL || t->wild == NULL || t->prefix == NULL) {
        tr_capture_table_free(t);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        if (l->bind || l->direction != dir)
            continue;
        struct tr_capture_entry e = {.listener = (int)i};
        key_of(&l->addr.ss, &e.key);
        if (l->n_destination_prefixes > 0) {
            /* It claims its blocks, not its (wildcard) address. */
            for (size_t k = 0; k < l->n_destination_prefixes; k++) {
                struct tr_capture_prefix *p = &t->prefix[t->n_prefix];
                char why[96];
                if (!tr_cidr_parse(l->destination_prefixes[k], &p->cidr, why, sizeof(why)))
                    continue; /* validate refused it already */
                p->port = e.key.port;
                p->listener = (int)i;
                t->n_prefix++;
            }
        } else if (key_is_wild(&e.key))
            t->wild[t->n_wild++] = e;
        else
            t->exact[t->n_exact++] = e;
    }
    qsort(t->exact, t->n_exact, sizeof(*t->exact), entry_cmp);
    qsort(t->wild, t->n_wild, sizeof(*t->wild), entry_cmp);
    qsort(t->prefix, t->n_prefix, sizeof(*t->prefix), prefix_cmp);
    return t;
}

void tr_capture_table_free(struct tr_capture_table *t)
{
    if (t == NULL)
        return;
    free(t->exact);
    free(t->wild);
    free(t->prefix);
    free(t);
}

static int find(const struct tr_capture_entry *arr, size_t n, const struct tr_capture_key *k)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(&arr[mid].key, k);
        if (c == 0)
            return arr[mid].listener;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* The most specific block holding dst's address on its port: the first
 * of that family and port (by binary search) that holds it. */
static int find_prefix(const struct tr_capture_table *t, const struct sockaddr_storage *dst)
{
    uint16_t port;
    struct tr_ip ip = tr_ip_from_sockaddr((const struct sockaddr *)dst, &port);
    size_t lo = 0, hi = t->n_prefix;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct tr_capture_prefix *p = &t->prefix[mid];
        if (p->cidr.ip.family < ip.family || (p->cidr.ip.family == ip.family && p->port < port))
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = lo;
         k < t->n_prefix && t->prefix[k].cidr.ip.family == ip.family && t->prefix[k].port == port;
         k++)
        if (tr_cidr_contains(&t->prefix[k].cidr, &ip))
            return t->prefix[k].listener;
    return -1;
}

int tr_capture_lookup(const struct tr_capture_table *t, const struct sockaddr_storage *dst)
{
    if (dst->ss_family != AF_INET && dst->ss_family != AF_INET6)
        return -1;
    struct tr_capture_key k;
    key_of(dst, &k);
    int i = find(t->exact, t->n_exact, &k);
    if (i >= 0)
        return i;
    if (t->n_prefix > 0 && (i = find_prefix(t, dst)) >= 0)
        return i;
    memset(k.ip, 0, sizeof(k.ip));
    return find(t->wild, t->n_wild, &k);
}

int tr_capture_original_dst(int fd, struct sockaddr_storage *out)
{
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
        return -errno;
    memset(out, 0, sizeof(*out));
    len = sizeof(*out);
    int rc = local.ss_family == AF_INET6 ? getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, out, &len)
                                         : getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, &len);
    return rc < 0 ? -errno : 0;
}
