/* cluster/lb_hash.c: consistent hashing (lb ring_hash and maglev).
 *
 * A table maps a 64-bit hash to one of a cluster's endpoints. It depends on
 * the endpoints' addresses and weights only, so it is built once per
 * configuration on the main thread (runtime/snapshot.c) and shared
 * read-only by every worker, and taken over by the next configuration while
 * the endpoints stay the same. Endpoints are placed in the order of their
 * address text, never of the configuration, and the hash has no per-process
 * seed: two proxies given the same endpoints in any order send a key to the
 * same endpoint.
 *
 * Ring hash (Karger et al., as Envoy's ring_hash): each endpoint puts points
 * on a ring of 64-bit hashes, in proportion to its weight, at least
 * minimum_ring_size points in all (and fewer than twice that); a key goes to
 * the first point at or after its hash. Removing an endpoint moves only the
 * keys of its points.
 *
 * Maglev (Eisenbud et al., NSDI 2016): each endpoint has a permutation of
 * the table's slots (an offset and a skip from two hashes of its address;
 * the size is prime, so every skip visits every slot); endpoints take turns
 * claiming their next free preferred slot until the table is full, an
 * endpoint of weight w taking a turn w times for every w_max turns of the
 * heaviest. A key goes to the slot of its hash modulo the size.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>

#include "cluster/cluster.h"
#include "router/router.h"

#define RING_MAX_POINTS 8388608u /* Envoy's maximum_ring_size default */

struct tr_lb_table {
    _Atomic uint32_t refs;
    uint32_t size;    /* points on the ring, or Maglev slots */
    uint64_t *points; /* ring: sorted point hashes; NULL for Maglev */
    uint32_t *ep;     /* per point or slot: index into the cluster's endpoints */
};

uint64_t tr_lb_hash_bytes(const void *p, size_t n, uint64_t seed)
{
    /* FNV-1a over the bytes, then MurmurHash3's 64-bit finalizer so that
     * every input bit moves every output bit (FNV alone spreads short keys
     * such as "10.0.0.1:80" poorly over the top bits a ring compares). */
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull ^ (seed * 0x9e3779b97f4a7c15ull);
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* ---- building ---- */

struct placed {
    const char *text; /* address text */
    uint32_t index;   /* in the configuration */
    uint32_t dup;     /* how many earlier ones (in address order) share the text */
    uint32_t weight;
};

static int by_address(const void *a, const void *b)
{
    const struct placed *x = a, *y = b;
    int c = strcmp(x->text, y->text);
    /* Same address twice: configuration order, the only order there is. */
    return c != 0 ? c : (x->index > y->index) - (x->index < y->index);
}

/* The key an endpoint's points and permutation are hashed from. */
static uint64_t endpoint_hash(const struct placed *e, uint64_t seed)
{
    char key[TR_EP_ADDR_TEXT_MAX + 16];
    int n = snprintf(key, sizeof(key), "%s#%u", e->text, e->dup);
    return tr_lb_hash_bytes(key, n > 0 ? (size_t)n : 0, seed);
}

struct point {
    uint64_t hash;
    uint32_t rank; /* in address order: ties are the same on every proxy */
};

static int by_point(const void *a, const void *b)
{
    const struct point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

static bool ring_build(struct tr_lb_table *t, const struct placed *e, uint32_t n, uint32_t min_size)
{
    uint64_t total = 0, min_w = UINT32_MAX;
    for (uint32_t i = 0; i < n; i++) {
        total += e[i].weight;
        if (e[i].weight < min_w)
            min_w = e[i].weight;
    }
    /* The lightest endpoint gets k points: its share of min_size rounded up
     * to a power of two, so that the others keep their points when one
     * comes or goes (the count changes only past a power of two; a ring
     * rescaled to exactly min_size, as Envoy's, moves some of every
     * endpoint's keys). k x total / min_w points in all, at most
     * RING_MAX_POINTS; endpoint i ends at point floor(points x cum_i /
     * total). Integers throughout, so every machine places alike (weights
     * <= 1e6, endpoints <= 1e4: no product passes 2^64). */
    uint64_t share = (min_w * min_size + total - 1) / total, k = 1;
    while (k < share)
        k <<= 1;
    bool capped = k * total / min_w > RING_MAX_POINTS;
    uint32_t *count = calloc(n, sizeof(*count));
    if (count == NULL)
        return false;
    uint64_t cum = 0, placed = 0;
    for (uint32_t i = 0; i < n; i++) {
        cum += e[i].weight;
        uint64_t target = capped ? RING_MAX_POINTS * cum / total : k * cum / min_w;
        count[i] = (uint32_t)(target - placed);
        placed = target;
    }
    struct point *pts = calloc(placed + 1, sizeof(*pts));
    t->points = calloc(placed + 1, sizeof(*t->points));
    t->ep = calloc(placed + 1, sizeof(*t->ep));
    if (pts == NULL || t->points == NULL || t->ep == NULL) {
        free(pts);
        free(count);
        return false;
    }
    size_t np = 0;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < count[i]; j++)
            pts[np++] = (struct point){.hash = endpoint_hash(&e[i], j), .rank = i};
    qsort(pts, np, sizeof(*pts), by_point);
    for (size_t i = 0; i < np; i++) {
        t->points[i] = pts[i].hash;
        t->ep[i] = e[pts[i].rank].index;
    }
    t->size = (uint32_t)np;
    free(pts);
    free(count);
    return true;
}

/* Maglev's turns, in order: endpoint r's j-th turn comes at round
 * ceil(j * w_max / w_r); a binary heap on (round, rank) gives them in
 * O(log n) each, so a table costs O(size log n) whatever the weights. */
struct turn {
    uint64_t round;
    uint32_t rank;
};

static bool turn_before(const struct turn *a, const struct turn *b)
{
    return a->round != b->round ? a->round < b->round : a->rank < b->rank;
}

static void heap_down(struct turn *h, uint32_t n, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && turn_before(&h[l], &h[m]))
            m = l;
        if (r < n && turn_before(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        struct turn x = h[i];
        h[i] = h[m];
        h[m] = x;
        i = m;
    }
}

static bool maglev_build(struct tr_lb_table *t, const struct placed *e, uint32_t n, uint32_t size)
{
    uint64_t *offset = calloc(n, sizeof(*offset));
    uint64_t *skip = calloc(n, sizeof(*skip));
    uint64_t *next = calloc(n, sizeof(*next));
    uint64_t *turns = calloc(n, sizeof(*turns));
    struct turn *heap = calloc(n, sizeof(*heap));
    t->ep = malloc((size_t)size * sizeof(*t->ep));
    bool ok = offset != NULL && skip != NULL && next != NULL && turns != NULL && heap != NULL &&
              t->ep != NULL;
    uint32_t w_max = 0;
    for (uint32_t i = 0; ok && i < n; i++)
        if (e[i].weight > w_max)
            w_max = e[i].weight;
    for (uint32_t i = 0; ok && i < n; i++) {
        offset[i] = endpoint_hash(&e[i], 0x6d61676c6576ull) % size;
        skip[i] = endpoint_hash(&e[i], 0x736b6970ull) % (size - 1) + 1;
        heap[i] = (struct turn){.round = (w_max + e[i].weight - 1) / e[i].weight, .rank = i};
    }
    if (ok) {
        for (uint32_t i = n / 2; i-- > 0;)
            heap_down(heap, n, i);
        memset(t->ep, 0xff, (size_t)size * sizeof(*t->ep));
        for (uint32_t filled = 0; filled < size;) {
            uint32_t r = heap[0].rank;
            /* The next free slot of r's permutation: size is prime and
             * 0 < skip < size, so the permutation visits every slot. */
            uint64_t c = (offset[r] + next[r] * skip[r]) % size;
            while (t->ep[c] != UINT32_MAX) {
                next[r]++;
                c = (offset[r] + next[r] * skip[r]) % size;
            }
            t->ep[c] = e[r].index;
            next[r]++;
            filled++;
            turns[r]++;
            heap[0].round = ((turns[r] + 1) * w_max + e[r].weight - 1) / e[r].weight;
            heap_down(heap, n, 0);
        }
        t->size = size;
    }
    free(offset);
    free(skip);
    free(next);
    free(turns);
    free(heap);
    return ok;
}

struct tr_lb_table *tr_lb_table_build_list(const struct tr_cluster_cfg *cc,
                                           const struct tr_lb_member *m, uint32_t n)
{
    struct tr_lb_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    atomic_init(&t->refs, 1);
    if (n == 0)
        return t; /* nothing to pick: every request gets 503 UH */
    struct placed *e = calloc(n, sizeof(*e));
    if (e == NULL) {
        free(t);
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++)
        e[i] = (struct placed){.text = m[i].text != NULL ? m[i].text : "",
                               .index = i,
                               .weight = m[i].weight > 0 ? m[i].weight : 1};
    qsort(e, n, sizeof(*e), by_address);
    for (uint32_t i = 1; i < n; i++)
        if (strcmp(e[i].text, e[i - 1].text) == 0)
            e[i].dup = e[i - 1].dup + 1;
    bool ok;
    if (cc->lb == TR_LB_MAGLEV)
        ok = maglev_build(t, e, n,
                          cc->hash.maglev_table_size > 2 ? cc->hash.maglev_table_size : 65537);
    else
        ok = ring_build(t, e, n, cc->hash.ring_min_size > 0 ? cc->hash.ring_min_size : 1024);
    free(e);
    if (!ok) {
        tr_lb_table_unref(t);
        return NULL;
    }
    return t;
}

struct tr_lb_table *tr_lb_table_build(const struct tr_cluster_cfg *cc)
{
    uint32_t n = (uint32_t)cc->n_endpoints;
    struct tr_lb_member *m = calloc(n + 1, sizeof(*m));
    if (m == NULL)
        return NULL;
    for (uint32_t i = 0; i < n; i++)
        m[i] = (struct tr_lb_member){.text = cc->endpoints[i].addr.text,
                                     .weight = cc->endpoints[i].weight};
    struct tr_lb_table *t = tr_lb_table_build_list(cc, m, n);
    free(m);
    return t;
}

bool tr_lb_table_fits(const struct tr_cluster_cfg *prev, const struct tr_cluster_cfg *cc)
{
    if (prev->lb != cc->lb || prev->n_endpoints != cc->n_endpoints)
        return false;
    if (cc->lb == TR_LB_RING_HASH && prev->hash.ring_min_size != cc->hash.ring_min_size)
        return false;
    if (cc->lb == TR_LB_MAGLEV && prev->hash.maglev_table_size != cc->hash.maglev_table_size)
        return false;
    for (size_t i = 0; i < cc->n_endpoints; i++) {
        const struct tr_endpoint_cfg *a = &prev->endpoints[i], *b = &cc->endpoints[i];
        if (a->weight != b->weight || a->addr.text == NULL || b->addr.text == NULL ||
            strcmp(a->addr.text, b->addr.text) != 0)
            return false;
    }
    return true;
}

void tr_lb_table_ref(struct tr_lb_table *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void tr_lb_table_unref(struct tr_lb_table *t)
{
    if (t == NULL || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(t->points);
    free(t->ep);
    free(t);
}

uint32_t tr_lb_table_size(const struct tr_lb_table *t)
{
    return t->size;
}

uint32_t tr_lb_table_lookup(const struct tr_lb_table *t, uint64_t hash, uint32_t step)
{
    uint32_t i;
    if (t->points == NULL) {
        i = (uint32_t)(hash % t->size);
    } else {
        /* The first point at or after hash, wrapping to the first. */
        uint32_t lo = 0, hi = t->size;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (t->points[mid] < hash)
                lo = mid + 1;
            else
                hi = mid;
        }
        i = lo == t->size ? 0 : lo;
    }
    return t->ep[(uint32_t)(((uint64_t)i + step) % t->size)];
}

/* ---- the request's key ---- */

static bool name_is(tr_str name, const char *want)
{
    size_t n = strlen(want);
    return name.len == n && strncasecmp(name.p, want, n) == 0;
}

/* The value of cookie `name` in a Cookie header value ("a=1; b=2"), quotes
 * around it removed (RFC 6265 allows them). */
static bool cookie_find(tr_str v, const char *name, tr_str *out)
{
    size_t nlen = strlen(name);
    uint32_t i = 0;
    while (i < v.len) {
        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ';'))
            i++;
        uint32_t start = i;
        while (i < v.len && v.p[i] != ';')
            i++;
        tr_str pair = tr_str_from(v.p + start, i - start);
        const char *eq = memchr(pair.p, '=', pair.len);
        if (eq == NULL || (size_t)(eq - pair.p) != nlen || memcmp(pair.p, name, nlen) != 0)
            continue;
        tr_str val = tr_str_from(eq + 1, pair.len - nlen - 1);
        while (val.len > 0 && (val.p[val.len - 1] == ' ' || val.p[val.len - 1] == '\t'))
            val.len--;
        if (val.len >= 2 && val.p[0] == '"' && val.p[val.len - 1] == '"')
            val = tr_str_from(val.p + 1, val.len - 2);
        *out = val;
        return true;
    }
    return false;
}

/* The first `name` parameter of the target's query, raw (not decoded). */
static bool query_find(const char *target, uint32_t len, const char *name, tr_str *out)
{
    const char *q = memchr(target, '?', len);
    if (q == NULL)
        return false;
    size_t nlen = strlen(name);
    const char *end = target + len, *p = q + 1;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq != NULL ? eq : stop;
        if ((size_t)(kend - p) == nlen && memcmp(p, name, nlen) == 0) {
            *out = eq != NULL ? tr_str_from(eq + 1, (size_t)(stop - eq - 1)) : tr_str_from(p, 0);
            return true;
        }
        p = stop + 1;
    }
    return false;
}

static void cookie_text(uint64_t value, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)value);
}

bool tr_lb_request_hash(const struct tr_hash_policy_cfg *hp, const struct tr_lb_request *rq,
                        uint64_t *hash, uint64_t *new_cookie)
{
    *new_cookie = 0;
    switch (hp->source) {
    case TR_HASH_HEADER: {
        /* Every value of the header, in any order (a sum: no value cancels
         * another as with xor). */
        bool found = false;
        uint64_t h = 0;
        for (uint32_t i = 0; i < rq->n_headers; i++) {
            if (!name_is(rq->headers[i].name, hp->header))
                continue;
            h += tr_lb_hash_bytes(rq->headers[i].value.p, rq->headers[i].value.len, 0);
            found = true;
        }
        *hash = h;
        return found;
    }
    case TR_HASH_COOKIE: {
        tr_str v;
        for (uint32_t i = 0; i < rq->n_headers; i++) {
            if (name_is(rq->headers[i].name, "cookie") &&
                cookie_find(rq->headers[i].value, hp->cookie, &v)) {
                *hash = tr_lb_hash_bytes(v.p, v.len, 0);
                return true;
            }
        }
        if (!hp->cookie_generate)
            return false;
        /* A value per downstream connection (Envoy: of its addresses), so
         * requests racing on one connection get the same cookie. */
        uint64_t value = tr_lb_hash_bytes(&rq->conn_seed, sizeof(rq->conn_seed), 0x636f6f6b6965ull);
        value += value == 0;
        char text[17];
        cookie_text(value, text);
        *hash = tr_lb_hash_bytes(text, 16, 0);
        *new_cookie = value;
        return true;
    }
    case TR_HASH_SOURCE_IP: {
        const struct sockaddr_storage *ss = rq->peer;
        if (ss == NULL)
            return false;
        if (ss->ss_family == AF_INET) {
            const struct sockaddr_in *in = (const void *)ss;
            *hash = tr_lb_hash_bytes(&in->sin_addr, sizeof(in->sin_addr), 0);
            return true;
        }
        if (ss->ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const void *)ss;
            *hash = tr_lb_hash_bytes(&in6->sin6_addr, sizeof(in6->sin6_addr), 0);
            return true;
        }
        return false;
    }
    case TR_HASH_QUERY_PARAM: {
        tr_str v;
        if (rq->target == NULL || !query_find(rq->target, rq->target_len, hp->query_param, &v))
            return false;
        *hash = tr_lb_hash_bytes(v.p, v.len, 0);
        return true;
    }
    case TR_HASH_NONE:
    default:
        return false;
    }
}

size_t tr_lb_cookie_format(const struct tr_hash_policy_cfg *hp, uint64_t value, char *out,
                           size_t size)
{
    char text[17], age[32] = "";
    cookie_text(value, text);
    if (hp->cookie_ttl_ms != 0) /* whole seconds, never 0 for a ttl under one */
        snprintf(age, sizeof(age), "; Max-Age=%u", (hp->cookie_ttl_ms + 999) / 1000);
    int n = snprintf(out, size, "%s=%s%s%s%s; HttpOnly", hp->cookie, text, age,
                     hp->cookie_path != NULL ? "; Path=" : "",
                     hp->cookie_path != NULL ? hp->cookie_path : "");
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}
