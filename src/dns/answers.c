#include "dns/answers.h"

#include <stdlib.h>
#include <string.h>
#include <threads.h>

/* ---- answers ---- */

struct tr_dns_answer *tr_dns_answer_new(const char *host, enum tr_dns_family family,
                                        const struct tr_dns_ip *ips, size_t n)
{
    if (n > TR_DNS_MAX_ADDRS)
        n = TR_DNS_MAX_ADDRS;
    size_t hlen = strlen(host);
    size_t head = sizeof(struct tr_dns_answer) + n * sizeof(struct tr_dns_ip);
    struct tr_dns_answer *a = malloc(head + hlen + 1);
    if (a == NULL)
        return NULL;
    atomic_init(&a->refs, 1);
    a->family = family;
    a->n_ips = (uint32_t)n;
    if (n > 0)
        memcpy(a->ips, ips, n * sizeof(*ips));
    char *h = (char *)a + head;
    memcpy(h, host, hlen + 1);
    a->host = h;
    return a;
}

void tr_dns_answer_ref(struct tr_dns_answer *a)
{
    atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
}

void tr_dns_answer_unref(struct tr_dns_answer *a)
{
    if (a != NULL && atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        free(a);
}

static bool ip_equal(const struct tr_dns_ip *a, const struct tr_dns_ip *b)
{
    if (a->family != b->family)
        return false;
    return a->family == AF_INET ? a->u.v4.s_addr == b->u.v4.s_addr
                                : memcmp(&a->u.v6, &b->u.v6, sizeof(a->u.v6)) == 0;
}

static bool ip_in(const struct tr_dns_ip *ip, const struct tr_dns_ip *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ip_equal(ip, &set[i]))
            return true;
    return false;
}

/* Sets of at most TR_DNS_MAX_ADDRS without duplicates: equal sizes and one
 * inside the other is equality (quadratic, bounded by the cap). */
bool tr_dns_answer_same(const struct tr_dns_answer *a, const struct tr_dns_ip *ips, size_t n)
{
    if (a == NULL || a->n_ips != n)
        return false;
    if (n == 0)
        return true;
    if (!ip_equal(&a->ips[0], &ips[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!ip_in(&ips[i], a->ips, a->n_ips))
            return false;
    return true;
}

size_t tr_dns_ips_select(struct tr_dns_ip *ips, size_t n, enum tr_dns_family family, size_t max,
                         bool *cut)
{
    bool any_v4 = false;
    for (size_t i = 0; i < n; i++)
        any_v4 |= ips[i].family == AF_INET;
    sa_family_t want = family == TR_DNS_V4   ? AF_INET
                       : family == TR_DNS_V6 ? AF_INET6
                       : any_v4              ? AF_INET
                                             : AF_INET6;
    size_t k = 0;
    *cut = false;
    for (size_t i = 0; i < n; i++) {
        if (ips[i].family != want || ip_in(&ips[i], ips, k))
            continue;
        if (k == max) {
            *cut = true;
            break;
        }
        ips[k++] = ips[i];
    }
    return k;
}

uint64_t tr_dns_refresh_ms(uint32_t ttl_s, uint32_t refresh_ms)
{
    uint64_t ms = refresh_ms;
    if (ttl_s != 0 && (uint64_t)ttl_s * 1000u < ms)
        ms = (uint64_t)ttl_s * 1000u;
    return ms < TR_DNS_MIN_REFRESH_MS ? TR_DNS_MIN_REFRESH_MS : ms;
}

uint64_t tr_dns_retry_ms(uint32_t failures, uint32_t refresh_ms)
{
    uint64_t ms = TR_DNS_MIN_REFRESH_MS;
    for (uint32_t i = 1; i < failures && ms < refresh_ms; i++)
        ms *= 2;
    if (ms > refresh_ms)
        ms = refresh_ms;
    return ms < TR_DNS_MIN_REFRESH_MS ? TR_DNS_MIN_REFRESH_MS : ms;
}

void tr_dns_ip_sockaddr(const struct tr_dns_ip *ip, uint16_t port, struct sockaddr_storage *ss,
                        socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (ip->family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        in->sin_addr = ip->u.v4;
        *len = sizeof(*in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        in6->sin6_addr = ip->u.v6;
        *len = sizeof(*in6);
    }
}

/* ---- tables ---- */

static int key_cmp(const char *host_a, enum tr_dns_family fa, const char *host_b,
                   enum tr_dns_family fb)
{
    int c = strcmp(host_a, host_b);
    return c != 0 ? c : (int)fa - (int)fb;
}

static int answer_cmp(const void *x, const void *y)
{
    const struct tr_dns_answer *a = *(struct tr_dns_answer *const *)x;
    const struct tr_dns_answer *b = *(struct tr_dns_answer *const *)y;
    return key_cmp(a->host, a->family, b->host, b->family);
}

struct tr_dns_table *tr_dns_table_new(struct tr_dns_answer *const *answers, size_t n,
                                      uint64_t version)
{
    struct tr_dns_table *t = malloc(sizeof(*t) + n * sizeof(t->answers[0]));
    if (t == NULL)
        return NULL;
    atomic_init(&t->refs, 1);
    t->version = version;
    t->n = n;
    for (size_t i = 0; i < n; i++) {
        tr_dns_answer_ref(answers[i]);
        t->answers[i] = answers[i];
    }
    if (n > 1)
        qsort(t->answers, n, sizeof(t->answers[0]), answer_cmp);
    return t;
}

void tr_dns_table_ref(struct tr_dns_table *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void tr_dns_table_unref(struct tr_dns_table *t)
{
    if (t == NULL || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < t->n; i++)
        tr_dns_answer_unref(t->answers[i]);
    free(t);
}

const struct tr_dns_answer *tr_dns_table_find(const struct tr_dns_table *t, const char *host,
                                              enum tr_dns_family family)
{
    size_t lo = 0, hi = t != NULL ? t->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct tr_dns_answer *a = t->answers[mid];
        int c = key_cmp(host, family, a->host, a->family);
        if (c == 0)
            return a;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- the published table (as runtime/snapshot.c does for snapshots) ---- */

static struct tr_dns_table *_Atomic current;
/* Guards only the acquire/publish handshake, never the request path. */
static mtx_t current_lock;
static once_flag current_once = ONCE_FLAG_INIT;

static void current_init(void)
{
    mtx_init(&current_lock, mtx_plain);
}

struct tr_dns_table *tr_dns_table_current_acquire(void)
{
    call_once(&current_once, current_init);
    mtx_lock(&current_lock);
    struct tr_dns_table *t = atomic_load_explicit(&current, memory_order_acquire);
    if (t != NULL)
        tr_dns_table_ref(t);
    mtx_unlock(&current_lock);
    return t;
}

void tr_dns_table_publish(struct tr_dns_table *t)
{
    call_once(&current_once, current_init);
    mtx_lock(&current_lock);
    struct tr_dns_table *old = atomic_exchange_explicit(&current, t, memory_order_acq_rel);
    mtx_unlock(&current_lock);
    tr_dns_table_unref(old);
}
