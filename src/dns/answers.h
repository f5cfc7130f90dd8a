/* dns/answers.h: the addresses of the names that cluster endpoints are given
 * by, as the workers see them.
 *
 * The resolver (dns/resolver.h, main thread) keeps one answer per lookup, a
 * (name, family) pair; an answer is immutable and reference-counted, so a
 * new table shares every answer that did not change. A table (all answers)
 * is published the way configuration snapshots are: one pointer swapped
 * under a lock that only the publish/acquire handshake takes; workers are
 * woken and adopt it from their own event loops when they build cluster
 * views (cluster/cluster.h), never on the request path. Reference counts
 * are atomic (tables cross threads) and move per table and worker, never
 * per request.
 *
 * The rest is pure (ordering, comparing, delays) and unit-tested.
 */
#ifndef TR_DNS_ANSWERS_H
#define TR_DNS_ANSWERS_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/model.h"

/* Addresses used of one name; more are left out (the resolver warns). */
#define TR_DNS_MAX_ADDRS      128u
/* No name is looked up again sooner than this after an answer. */
#define TR_DNS_MIN_REFRESH_MS 1000u

/* One resolved address, without a port (each endpoint brings its own). */
struct tr_dns_ip {
    sa_family_t family; /* AF_INET or AF_INET6 */
    union {
        struct in_addr v4;
        struct in6_addr v6;
    } u;
};

/* The last good answer of one lookup; immutable. n_ips 0: the name has no
 * address (NXDOMAIN, or no record of the family). */
struct tr_dns_answer {
    _Atomic uint32_t refs;
    enum tr_dns_family family; /* of the lookup */
    const char *host;          /* lower case, in this allocation */
    uint32_t n_ips;
    struct tr_dns_ip ips[]; /* the first is what mode `first` uses */
};

/* Every answer, sorted by (host, family). */
struct tr_dns_table {
    _Atomic uint32_t refs;
    uint64_t version; /* grows with each publish */
    size_t n;
    struct tr_dns_answer *answers[]; /* each holds a reference */
};

/* A new answer (one reference) with copies of host and ips; NULL when out of
 * memory. n at most TR_DNS_MAX_ADDRS. */
struct tr_dns_answer *tr_dns_answer_new(const char *host, enum tr_dns_family family,
                                        const struct tr_dns_ip *ips, size_t n);
void tr_dns_answer_ref(struct tr_dns_answer *a);
void tr_dns_answer_unref(struct tr_dns_answer *a);
/* Does a (NULL: no answer yet) say what ips[0..n) say: the same first
 * address and the same set? Another order of the rest changes nothing the
 * endpoints depend on. */
bool tr_dns_answer_same(const struct tr_dns_answer *a, const struct tr_dns_ip *ips, size_t n);

/* The addresses a lookup of family uses, in place: duplicates dropped, for
 * TR_DNS_AUTO only the IPv4 ones when there are any (Envoy's V4_PREFERRED),
 * at most max kept, server order otherwise. Returns the new count; *cut
 * says whether addresses were left out for max. */
size_t tr_dns_ips_select(struct tr_dns_ip *ips, size_t n, enum tr_dns_family family, size_t max,
                         bool *cut);

/* When to look a name up again: after an answer with TTL ttl_s (seconds;
 * 0: none given), min(ttl, refresh) but at least TR_DNS_MIN_REFRESH_MS, and
 * refresh when the TTL is 0 (Envoy); after the n-th consecutive failure
 * (n >= 1), 1 s doubling up to refresh. */
uint64_t tr_dns_refresh_ms(uint32_t ttl_s, uint32_t refresh_ms);
uint64_t tr_dns_retry_ms(uint32_t failures, uint32_t refresh_ms);

/* A socket address of ip at port. */
void tr_dns_ip_sockaddr(const struct tr_dns_ip *ip, uint16_t port, struct sockaddr_storage *ss,
                        socklen_t *len);

/* A table of answers[0..n) (each gains a reference), sorted; NULL when out
 * of memory. */
struct tr_dns_table *tr_dns_table_new(struct tr_dns_answer *const *answers, size_t n,
                                      uint64_t version);
void tr_dns_table_ref(struct tr_dns_table *t);
void tr_dns_table_unref(struct tr_dns_table *t); /* NULL is fine */
/* The answer of (host, family) in t (may be NULL), or NULL. O(log n). */
const struct tr_dns_answer *tr_dns_table_find(const struct tr_dns_table *t, const char *host,
                                              enum tr_dns_family family);

/* The published table (a reference for the caller), or NULL before the
 * first publish. */
struct tr_dns_table *tr_dns_table_current_acquire(void);
/* Publish t (the caller's reference moves to the global slot; NULL clears
 * it); the previous table loses the slot's reference. */
void tr_dns_table_publish(struct tr_dns_table *t);

#endif
