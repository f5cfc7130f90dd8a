#include "dns/resolver.h"

#include <ares.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include "core/log.h"
#include "dns/answers.h"
#include "net/sock.h"
#include "obs/metrics.h"

/* A socket c-ares opened, registered with the loop. A closed one is freed
 * by the next housekeeping timer, after the event batch (epoll may still
 * hold an event for it in this one). */
struct rsock {
    struct tr_io io;
    struct tr_resolver *r;
    bool want_write;
    bool closed;
    struct rsock *next;
};

/* One lookup: a (name, family) pair and everything that uses it. */
struct lookup {
    struct tr_resolver *r;
    char *host;
    enum tr_dns_family family;
    uint32_t refresh_ms;   /* the smallest of its clusters' */
    const char **clusters; /* interned names, for metrics */
    size_t n_clusters, cap_clusters;
    size_t last_cluster;          /* sync: index of the cluster added last, + 1 */
    struct tr_dns_answer *answer; /* last good; NULL until the first */
    uint32_t failures;            /* consecutive */
    bool settled;                 /* had its first lookup */
    bool in_flight, queued, removed, seen, cut_warned;
    struct tr_timer timer; /* next lookup */
    struct lookup *next_queued;
};

struct tr_resolver {
    struct tr_loop *loop;
    ares_channel channel;
    bool have_channel;
    /* What the channel was made with. */
    char *servers; /* "IP:PORT,IP:PORT" (c-ares CSV); NULL: the system's */
    uint32_t timeout_ms, attempts;
    uint32_t mark; /* SO_MARK of its sockets (tr_config.upstream_mark); 0: none */
    /* Live lookups: open addressing on (host, family), power-of-two size. */
    struct lookup **slots;
    size_t cap, n;
    struct lookup *queue_head, *queue_tail;
    uint32_t in_flight;
    uint32_t unsettled;
    struct rsock *socks;           /* open */
    struct rsock *dead;            /* closed, freed by pump_timer */
    struct tr_timer ares_timer;    /* c-ares' own query timeouts */
    struct tr_timer publish_timer; /* coalesces answers into one table */
    /* Housekeeping after the event batch: starts queued lookups (never
     * from inside a c-ares callback, which may run inside a start) and
     * frees closed sockets. */
    struct tr_timer pump_timer;
    bool dirty;   /* the table lacks a change */
    bool settled; /* reported: see tr_resolver_settled */
    uint64_t version;
    tr_resolver_published_cb published;
    void *arg;
};

static const char *family_name(enum tr_dns_family f)
{
    return f == TR_DNS_V4 ? "v4" : f == TR_DNS_V6 ? "v6" : "auto";
}

/* ---- sockets and timeouts ---- */

static void pump_soon(struct tr_resolver *r)
{
    if (!tr_timer_armed(&r->pump_timer))
        tr_timer_set(r->loop, &r->pump_timer, 0);
}

static void timeouts_update(struct tr_resolver *r)
{
    struct timeval tv;
    if (!r->have_channel || ares_timeout(r->channel, NULL, &tv) == NULL) {
        tr_timer_cancel(r->loop, &r->ares_timer);
        return;
    }
    uint64_t ms = (uint64_t)tv.tv_sec * 1000u + ((uint64_t)tv.tv_usec + 999u) / 1000u;
    tr_timer_set(r->loop, &r->ares_timer, ms);
}

static void resolver_on_ares_timer(struct tr_timer *t)
{
    struct tr_resolver *r = tr_container_of(t, struct tr_resolver, ares_timer);
    if (r->have_channel)
        ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    timeouts_update(r);
}

static void resolver_on_socket(struct tr_io *io, uint32_t events)
{
    struct rsock *s = tr_container_of(io, struct rsock, io);
    struct tr_resolver *r = s->r;
    if (s->closed || !r->have_channel)
        return;
    int fd = s->io.fd;
    bool readable = (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    bool writable = (events & EPOLLOUT) != 0 && s->want_write;
    if (!readable && !writable)
        return;
    ares_process_fd(r->channel, readable ? fd : ARES_SOCKET_BAD, writable ? fd : ARES_SOCKET_BAD);
    /* The loop is edge-triggered: c-ares drains a UDP socket per call but
     * reads a TCP one once, so ask again while bytes are waiting (bounded;
     * DNS over TCP is rare: truncated answers only). */
    for (int i = 0; i < 64 && readable && !s->closed; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 0) != 1 || (p.revents & (POLLIN | POLLHUP | POLLERR)) == 0)
            break;
        ares_process_fd(r->channel, fd, ARES_SOCKET_BAD);
    }
    timeouts_update(r);
}

/* c-ares opens, watches and closes its sockets through this. */
static void resolver_on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct tr_resolver *r = data;
    struct rsock **pp = &r->socks, *s;
    while ((s = *pp) != NULL && s->io.fd != fd)
        pp = &s->next;
    if (!readable && !writable) {
        if (s == NULL)
            return;
        *pp = s->next;
        tr_loop_del(r->loop, &s->io);
        s->closed = true;
        s->io.fd = -1;
        s->next = r->dead;
        r->dead = s;
        pump_soon(r);
        return;
    }
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL) {
            tr_err("dns: out of memory watching a resolver socket");
            return; /* its queries time out */
        }
        s->r = r;
        s->io.fd = fd;
        s->io.cb = resolver_on_socket;
        if (tr_loop_add(r->loop, &s->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) < 0) {
            tr_err("dns: cannot watch a resolver socket: %s", strerror(errno));
            free(s);
            return;
        }
        s->next = r->socks;
        r->socks = s;
    }
    s->want_write = writable != 0;
}

/* ---- the channel ---- */

static once_flag ares_once = ONCE_FLAG_INIT;
static int ares_init_status;

static void ares_global_init(void)
{
    ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static void channel_destroy(struct tr_resolver *r)
{
    if (!r->have_channel)
        return;
    /* Queries in flight end with ARES_EDESTRUCTION (they go back to the
     * queue), sockets close through the state callback. */
    ares_channel ch = r->channel;
    ares_destroy(ch);
    r->have_channel = false;
    tr_timer_cancel(r->loop, &r->ares_timer);
}

/* c-ares made a socket, before it connects: the proxy's own traffic carries
 * upstream_mark, so capture rules (trellis ctl iptables) let DNS over TCP
 * through as they do every upstream connection. */
static int resolver_on_sock_configure(ares_socket_t fd, int type, void *data)
{
    (void)type;
    const struct tr_resolver *r = data;
    return r->mark != 0 && tr_sock_set_mark(fd, r->mark) < 0 ? -1 : 0;
}

static int channel_create(struct tr_resolver *r, char **err)
{
    call_once(&ares_once, ares_global_init);
    if (ares_init_status != ARES_SUCCESS) {
        if (asprintf(err, "dns: cannot initialize c-ares: %s", ares_strerror(ares_init_status)) < 0)
            *err = NULL;
        return -1;
    }
    struct ares_options o = {0};
    o.sock_state_cb = resolver_on_sock_state;
    o.sock_state_cb_data = r;
    o.timeout = (int)r->timeout_ms;
    o.tries = (int)r->attempts;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    int rc = ares_init_options(&r->channel, &o, mask);
    if (rc == ARES_SUCCESS && r->servers != NULL) {
        rc = ares_set_servers_ports_csv(r->channel, r->servers);
        if (rc != ARES_SUCCESS)
            ares_destroy(r->channel);
    }
    if (rc != ARES_SUCCESS) {
        if (asprintf(err, "dns: cannot create the resolver: %s", ares_strerror(rc)) < 0)
            *err = NULL;
        return -1;
    }
    ares_set_socket_configure_callback(r->channel, resolver_on_sock_configure, r);
    r->have_channel = true;
    return 0;
}

/* ---- lookups ---- */

static uint64_t lookup_hash(const char *host, enum tr_dns_family family)
{
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)family;
    for (; *host != '\0'; host++)
        h = (h ^ (unsigned char)*host) * 0x100000001b3ull;
    return h;
}

static struct lookup **slot_of(struct tr_resolver *r, const char *host, enum tr_dns_family family)
{
    size_t k = lookup_hash(host, family) & (r->cap - 1);
    for (; r->slots[k] != NULL; k = (k + 1) & (r->cap - 1))
        if (r->slots[k]->family == family && strcmp(r->slots[k]->host, host) == 0)
            break;
    return &r->slots[k];
}

/* Rebuilds the index over the live lookups of old (size old_cap) into a
 * table of cap slots. */
static bool index_rebuild(struct tr_resolver *r, size_t cap)
{
    struct lookup **old = r->slots;
    size_t old_cap = r->cap;
    struct lookup **slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return false;
    r->slots = slots;
    r->cap = cap;
    r->n = 0;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i] != NULL && !old[i]->removed) {
            *slot_of(r, old[i]->host, old[i]->family) = old[i];
            r->n++;
        }
    }
    free(old);
    return true;
}

static void lookup_free(struct lookup *lk)
{
    tr_dns_answer_unref(lk->answer);
    free(lk->clusters);
    free(lk->host);
    free(lk);
}

/* Frees lk once nothing refers to it (the queue and c-ares do). */
static void lookup_maybe_free(struct lookup *lk)
{
    if (lk->removed && !lk->in_flight && !lk->queued)
        lookup_free(lk);
}

static void enqueue(struct lookup *lk)
{
    struct tr_resolver *r = lk->r;
    if (lk->queued || lk->in_flight || lk->removed)
        return;
    tr_timer_cancel(r->loop, &lk->timer);
    lk->queued = true;
    lk->next_queued = NULL;
    if (r->queue_tail != NULL)
        r->queue_tail->next_queued = lk;
    else
        r->queue_head = lk;
    r->queue_tail = lk;
    pump_soon(r);
}

static void schedule_publish(struct tr_resolver *r)
{
    if (!tr_timer_armed(&r->publish_timer))
        tr_timer_set(r->loop, &r->publish_timer, TR_RESOLVER_PUBLISH_DELAY_MS);
}

static void lookup_on_timer(struct tr_timer *t)
{
    enqueue(tr_container_of(t, struct lookup, timer));
}

static void count(const struct lookup *lk, enum tr_dns_result res)
{
    for (size_t i = 0; i < lk->n_clusters; i++)
        tr_metrics_dns(lk->clusters[i], res);
}

/* The addresses of a successful lookup and the smallest TTL of its records
 * (CNAMEs included), selected for the family. */
static size_t collect(const struct lookup *lk, const struct ares_addrinfo *res,
                      struct tr_dns_ip *ips, size_t cap, uint32_t *ttl, bool *cut)
{
    size_t n = 0;
    bool more = false;
    int min_ttl = -1;
    for (const struct ares_addrinfo_node *nd = res != NULL ? res->nodes : NULL; nd != NULL;
         nd = nd->ai_next) {
        if (nd->ai_family != AF_INET && nd->ai_family != AF_INET6)
            continue;
        if (n == cap) {
            more = true;
            break;
        }
        struct tr_dns_ip *ip = &ips[n];
        memset(ip, 0, sizeof(*ip));
        ip->family = (sa_family_t)nd->ai_family;
        if (nd->ai_family == AF_INET)
            ip->u.v4 = ((const struct sockaddr_in *)(const void *)nd->ai_addr)->sin_addr;
        else
            ip->u.v6 = ((const struct sockaddr_in6 *)(const void *)nd->ai_addr)->sin6_addr;
        n++;
        if (min_ttl < 0 || nd->ai_ttl < min_ttl)
            min_ttl = nd->ai_ttl;
    }
    for (const struct ares_addrinfo_cname *c = res != NULL ? res->cnames : NULL; c != NULL;
         c = c->next)
        if (min_ttl < 0 || c->ttl < min_ttl)
            min_ttl = c->ttl;
    *ttl = min_ttl > 0 ? (uint32_t)min_ttl : 0;
    n = tr_dns_ips_select(ips, n, lk->family, TR_DNS_MAX_ADDRS, cut);
    *cut |= more;
    return n;
}

static void log_answer(const struct lookup *lk, const struct tr_dns_answer *a)
{
    char first[64] = "";
    if (a->n_ips > 0) {
        struct sockaddr_storage ss;
        socklen_t len;
        tr_dns_ip_sockaddr(&a->ips[0], 0, &ss, &len);
        tr_sock_addr_ip(&ss, first, sizeof(first));
    }
    tr_info("dns: %s (%s): %u address%s%s%s", lk->host, family_name(lk->family), a->n_ips,
            a->n_ips == 1 ? "" : "es", a->n_ips > 0 ? ", first " : "", first);
}

static void lookup_on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    struct lookup *lk = arg;
    struct tr_resolver *r = lk->r;
    lk->in_flight = false;
    r->in_flight--;
    if (lk->removed || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        /* Dropped by a sync, or its channel was replaced: ask the new one. */
        ares_freeaddrinfo(res);
        if (lk->removed)
            lookup_maybe_free(lk);
        else
            enqueue(lk);
        return;
    }
    struct tr_dns_ip ips[TR_DNS_MAX_ADDRS];
    uint32_t ttl = 0;
    bool cut = false;
    size_t n = 0;
    enum tr_dns_result result;
    if (status == ARES_SUCCESS) {
        n = collect(lk, res, ips, TR_DNS_MAX_ADDRS, &ttl, &cut);
        result = n > 0 ? TR_DNS_RESULT_SUCCESS : TR_DNS_RESULT_EMPTY;
    } else if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
        result = TR_DNS_RESULT_EMPTY;
    } else {
        result = TR_DNS_RESULT_FAILURE;
    }
    ares_freeaddrinfo(res);
    count(lk, result);

    uint64_t next_ms;
    if (result == TR_DNS_RESULT_FAILURE) {
        lk->failures++;
        if (lk->failures == 1)
            tr_warn("dns: lookup of %s (%s) failed: %s; keeping %s", lk->host,
                    family_name(lk->family), ares_strerror(status),
                    lk->answer != NULL ? "the last answer" : "no endpoint (none yet)");
        else
            tr_debug("dns: lookup of %s (%s) failed again (%u): %s", lk->host,
                     family_name(lk->family), lk->failures, ares_strerror(status));
        next_ms = tr_dns_retry_ms(lk->failures, lk->refresh_ms);
    } else {
        if (lk->failures > 0)
            tr_info("dns: %s (%s) answers again after %u failed lookups", lk->host,
                    family_name(lk->family), lk->failures);
        lk->failures = 0;
        if (cut && !lk->cut_warned)
            tr_warn("dns: %s (%s) has more than %u addresses; the rest are left out", lk->host,
                    family_name(lk->family), TR_DNS_MAX_ADDRS);
        lk->cut_warned = cut;
        if (!tr_dns_answer_same(lk->answer, ips, n)) {
            struct tr_dns_answer *a = tr_dns_answer_new(lk->host, lk->family, ips, n);
            if (a == NULL) {
                tr_err("dns: out of memory keeping the answer for %s", lk->host);
            } else {
                tr_dns_answer_unref(lk->answer);
                lk->answer = a;
                r->dirty = true;
                log_answer(lk, a);
            }
        }
        next_ms = result == TR_DNS_RESULT_SUCCESS ? tr_dns_refresh_ms(ttl, lk->refresh_ms)
                                                  : lk->refresh_ms;
    }
    if (!lk->settled) {
        lk->settled = true;
        if (--r->unsettled == 0)
            r->dirty = true; /* publish, then report settled */
    }
    if (r->dirty)
        schedule_publish(r);
    tr_timer_set(r->loop, &lk->timer, next_ms);
    pump_soon(r);
}

static void lookup_start(struct tr_resolver *r, struct lookup *lk)
{
    struct ares_addrinfo_hints hints = {0};
    hints.ai_family = lk->family == TR_DNS_V4   ? AF_INET
                      : lk->family == TR_DNS_V6 ? AF_INET6
                                                : AF_UNSPEC;
    /* Server order: `first` means the server's first address, and sorting
     * (RFC 6724) would connect a socket per address. */
    hints.ai_flags = ARES_AI_NOSORT;
    lk->in_flight = true;
    r->in_flight++;
    /* May answer at once (from /etc/hosts, or an error). */
    ares_getaddrinfo(r->channel, lk->host, NULL, &hints, lookup_on_answer, lk);
}

/* Frees closed sockets; starts queued lookups while fewer than the
 * maximum are in flight. */
static void resolver_on_pump_timer(struct tr_timer *t)
{
    struct tr_resolver *r = tr_container_of(t, struct tr_resolver, pump_timer);
    for (struct rsock *s = r->dead, *next; s != NULL; s = next) {
        next = s->next;
        free(s);
    }
    r->dead = NULL;
    while (r->have_channel && r->queue_head != NULL && r->in_flight < TR_RESOLVER_MAX_IN_FLIGHT) {
        struct lookup *lk = r->queue_head;
        r->queue_head = lk->next_queued;
        if (r->queue_head == NULL)
            r->queue_tail = NULL;
        lk->queued = false;
        if (lk->removed) {
            lookup_maybe_free(lk);
            continue;
        }
        lookup_start(r, lk);
    }
    timeouts_update(r);
}

static void resolver_on_publish_timer(struct tr_timer *t)
{
    struct tr_resolver *r = tr_container_of(t, struct tr_resolver, publish_timer);
    struct tr_dns_answer **all = calloc(r->n + 1, sizeof(*all));
    if (all == NULL) {
        tr_err("dns: out of memory publishing answers; retrying");
        tr_timer_set(r->loop, t, 1000);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < r->cap; i++)
        if (r->slots[i] != NULL && r->slots[i]->answer != NULL)
            all[k++] = r->slots[i]->answer;
    struct tr_dns_table *table = tr_dns_table_new(all, k, r->version + 1);
    free(all);
    if (table == NULL) {
        tr_err("dns: out of memory publishing answers; retrying");
        tr_timer_set(r->loop, t, 1000);
        return;
    }
    r->version++;
    r->dirty = false;
    tr_dns_table_publish(table);
    if (r->unsettled == 0)
        r->settled = true;
    r->published(r->arg);
}

/* ---- API ---- */

struct tr_resolver *tr_resolver_new(struct tr_loop *loop, tr_resolver_published_cb published,
                                    void *arg)
{
    struct tr_resolver *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->loop = loop;
    r->published = published;
    r->arg = arg;
    r->settled = true; /* until a sync brings names */
    r->cap = 16;
    r->slots = calloc(r->cap, sizeof(*r->slots));
    if (r->slots == NULL) {
        free(r);
        return NULL;
    }
    tr_timer_init(&r->ares_timer, resolver_on_ares_timer);
    tr_timer_init(&r->publish_timer, resolver_on_publish_timer);
    tr_timer_init(&r->pump_timer, resolver_on_pump_timer);
    return r;
}

bool tr_resolver_settled(const struct tr_resolver *r)
{
    return r->settled;
}

/* "a,b" of the configured servers (c-ares' CSV form is ours), NULL: none. */
static char *servers_csv(const struct tr_resolver_cfg *rc)
{
    if (rc->n_servers == 0)
        return NULL;
    size_t len = 1;
    for (size_t i = 0; i < rc->n_servers; i++)
        len += strlen(rc->servers[i]) + 1;
    char *s = malloc(len), *p = s;
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < rc->n_servers; i++)
        p += sprintf(p, "%s%s", i != 0 ? "," : "", rc->servers[i]);
    return s;
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The lookup of (host, family) for cluster ci, made if new. */
static struct lookup *lookup_use(struct tr_resolver *r, const char *host, enum tr_dns_family family,
                                 size_t ci, const char *cluster, uint32_t refresh_ms)
{
    if ((r->n + 1) * 2 > r->cap && !index_rebuild(r, r->cap * 2))
        return NULL;
    struct lookup **sl = slot_of(r, host, family), *lk = *sl;
    if (lk == NULL) {
        lk = calloc(1, sizeof(*lk));
        if (lk == NULL || (lk->host = strdup(host)) == NULL) {
            free(lk);
            return NULL;
        }
        lk->r = r;
        lk->family = family;
        tr_timer_init(&lk->timer, lookup_on_timer);
        *sl = lk;
        r->n++;
        r->unsettled++;
        r->settled = false;
        enqueue(lk);
    }
    if (!lk->seen) {
        lk->seen = true;
        lk->n_clusters = 0;
        lk->last_cluster = 0;
        lk->refresh_ms = refresh_ms;
    }
    if (refresh_ms < lk->refresh_ms) {
        lk->refresh_ms = refresh_ms;
        /* A shorter refresh applies to the lookup already scheduled. */
        if (tr_timer_armed(&lk->timer) &&
            lk->timer.deadline_ms > tr_loop_now_ms(r->loop) + refresh_ms)
            tr_timer_set(r->loop, &lk->timer, refresh_ms);
    }
    if (lk->last_cluster != ci + 1) {
        if (lk->n_clusters == lk->cap_clusters) {
            size_t cap = lk->cap_clusters ? lk->cap_clusters * 2 : 2;
            const char **grown = realloc(lk->clusters, cap * sizeof(*grown));
            if (grown == NULL)
                return lk; /* only its metrics miss this cluster */
            lk->clusters = grown;
            lk->cap_clusters = cap;
        }
        lk->clusters[lk->n_clusters++] = cluster;
        lk->last_cluster = ci + 1;
    }
    return lk;
}

int tr_resolver_sync(struct tr_resolver *r, const struct tr_config *cfg, char **err)
{
    int rc = 0;
    r->mark = cfg->upstream_mark; /* read as sockets are made */
    /* The channel: made anew when the settings change. */
    char *servers = servers_csv(&cfg->resolver);
    if (cfg->resolver.n_servers > 0 && servers == NULL) {
        *err = strdup("dns: out of memory");
        return -1;
    }
    if (!r->have_channel || !str_eq(servers, r->servers) ||
        r->timeout_ms != cfg->resolver.timeout_ms || r->attempts != cfg->resolver.attempts) {
        channel_destroy(r);
        free(r->servers);
        r->servers = servers;
        r->timeout_ms = cfg->resolver.timeout_ms;
        r->attempts = cfg->resolver.attempts;
        rc = channel_create(r, err);
    } else {
        free(servers);
    }

    /* The names: mark what cfg uses, then drop the rest. */
    for (size_t i = 0; i < r->cap; i++)
        if (r->slots[i] != NULL)
            r->slots[i]->seen = false;
    for (size_t ci = 0; ci < cfg->n_clusters; ci++) {
        const struct tr_cluster_cfg *c = &cfg->clusters[ci];
        if (c->n_dns_endpoints == 0)
            continue;
        const char *label = tr_metrics_intern(c->name);
        for (size_t e = 0; e < c->n_endpoints; e++) {
            const struct tr_endpoint_cfg *ec = &c->endpoints[e];
            if (ec->host != NULL &&
                lookup_use(r, ec->host, c->dns.family, ci, label, c->dns.refresh_ms) == NULL) {
                if (*err == NULL)
                    *err = strdup("dns: out of memory adding a name");
                rc = -1;
            }
        }
    }
    size_t n_drop = 0;
    for (size_t i = 0; i < r->cap; i++)
        n_drop += r->slots[i] != NULL && !r->slots[i]->seen;
    if (n_drop > 0) {
        /* A new index of the live lookups; a dropped one is freed now, or
         * when c-ares or the queue lets go of it. */
        struct lookup **old = r->slots, **keep = calloc(r->cap, sizeof(*keep));
        if (keep == NULL) {
            if (*err == NULL)
                *err = strdup("dns: out of memory dropping names (kept until the next update)");
            rc = -1;
        } else {
            size_t old_cap = r->cap;
            r->slots = keep;
            r->n = 0;
            for (size_t i = 0; i < old_cap; i++) {
                struct lookup *lk = old[i];
                if (lk == NULL)
                    continue;
                if (lk->seen) {
                    *slot_of(r, lk->host, lk->family) = lk;
                    r->n++;
                    continue;
                }
                lk->removed = true;
                tr_timer_cancel(r->loop, &lk->timer);
                if (!lk->settled)
                    r->unsettled--;
                if (lk->answer != NULL)
                    r->dirty = true;
                lookup_maybe_free(lk);
            }
            free(old);
        }
    }
    if (r->unsettled == 0 && !r->settled)
        r->dirty = true;
    if (r->dirty)
        schedule_publish(r);
    pump_soon(r);
    return rc;
}

void tr_resolver_free(struct tr_resolver *r)
{
    if (r == NULL)
        return;
    /* Lookups in flight end with ARES_EDESTRUCTION: live ones go back to
     * the queue, dropped ones free themselves unless queued. Then the
     * queue lets go of the dropped ones and the index of the live ones. */
    channel_destroy(r);
    for (struct lookup *lk = r->queue_head, *next; lk != NULL; lk = next) {
        next = lk->next_queued;
        lk->queued = false;
        lookup_maybe_free(lk);
    }
    for (size_t i = 0; i < r->cap; i++) {
        struct lookup *lk = r->slots[i];
        if (lk != NULL) {
            tr_timer_cancel(r->loop, &lk->timer);
            lookup_free(lk);
        }
    }
    tr_timer_cancel(r->loop, &r->publish_timer);
    tr_timer_cancel(r->loop, &r->ares_timer);
    tr_timer_cancel(r->loop, &r->pump_timer);
    for (struct rsock *s = r->socks, *next; s != NULL; s = next) {
        next = s->next;
        tr_loop_del(r->loop, &s->io);
        free(s);
    }
    for (struct rsock *s = r->dead, *next; s != NULL; s = next) {
        next = s->next;
        free(s);
    }
    free(r->slots);
    free(r->servers);
    free(r);
}
