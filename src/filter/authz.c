/* filter/authz.c: compiled authorization policies (see authz.h, and
 * tr_authz_cfg in config/model.h for the semantics).
 *
 * Every pattern, address block and port is turned at build time into its
 * matcher (core/authz_syntax.h), so evaluation is comparisons over arrays
 * held in one arena. The older `rules` form is compiled into policies of one
 * rule each, placed first, which keeps its numbering and its meaning.
 */
#include "filter/authz.h"

#include "config/load.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/arena.h"
#include "router/router.h"

struct az_pats {
    struct tr_az_pat *p;
    uint32_t n;
};
struct az_cidrs {
    struct tr_cidr *c;
    uint32_t n;
};
struct az_ports {
    uint16_t *v;
    uint32_t n;
};

struct az_source {
    struct az_pats principals, not_principals, req_principals, not_req_principals, namespaces,
        not_namespaces;
    struct az_cidrs ip, not_ip, remote_ip, not_remote_ip;
};

struct az_operation {
    struct az_pats hosts, not_hosts, methods, not_methods, paths, not_paths;
    struct az_ports ports, not_ports;
};

struct az_cond {
    enum tr_az_key key;
    tr_str arg[TR_AZ_MAX_CLAIM_DEPTH];
    size_t n_arg;
    struct az_pats values, not_values; /* string keys */
    struct az_cidrs cidrs, not_cidrs;  /* *.ip keys */
    struct az_ports ports, not_ports;  /* destination.port */
};

struct az_rule {
    struct az_source *from;
    uint32_t n_from;
    struct az_operation *to;
    uint32_t n_to;
    struct az_cond *when;
    uint32_t n_when;
};

struct az_policy {
    const char *name;
    enum tr_authz_action action;
    /* The older form: a method or path never matches a TCP connection,
     * whatever the action (its listeners refuse such rules on tcp). */
    bool legacy;
    int provider; /* CUSTOM: index into tr_config.ext_authz */
    struct az_rule *rules;
    uint32_t n_rules;
};

/* Policy indexes in order, of one action. */
struct az_list {
    uint32_t *v;
    uint32_t n;
};

/* The principal index. A policy whose every rule has sources and whose
 * every source names exact principals can only match a request from one of
 * those principals: it is "bounded", and listed under each. Evaluation
 * tries, per action and in policy order, the unbounded policies and those
 * listed under the request's principal; skipping the others changes no
 * decision, since they cannot match. With 1,000 policies that each admit
 * one caller, a request tries a handful instead of all. */
enum { AZ_AUDIT_SET = 0, AZ_DENY_SET, AZ_ALLOW_SET, AZ_SETS };
struct az_slot {
    tr_str principal; /* empty: a free slot */
    struct az_list by[AZ_SETS];
};

/* The path index, for policies no principal bounds: a policy whose every
 * rule has operations and whose every operation names exact or prefix
 * paths can only match an HTTP request whose path is one of them or starts
 * with one. It is listed under each pattern; a request looks up its path
 * and its prefixes of the lengths some prefix pattern has. A TCP
 * connection tries every such policy (a path on TCP matches a DENY rule
 * and no ALLOW rule: Istio's HTTP-only rule). */
#define AZ_MAX_PLENS 8u /* distinct prefix lengths; more: no path index */
struct az_pslot {
    tr_str pattern; /* empty: a free slot */
    bool prefix;
    struct az_list by[AZ_SETS];
};

struct tr_authz {
    struct tr_arena *arena; /* owns this struct and everything it points to */
    struct az_policy *pols;
    size_t n_pols;
    bool has_allow, has_audit, has_custom;
    struct az_list open[AZ_SETS]; /* policies no principal or path bounds */
    struct az_slot *slots;        /* open addressing, cap a power of two; NULL: none bounded */
    size_t cap;
    struct az_list paths[AZ_SETS]; /* every path-bounded policy (for TCP) */
    struct az_pslot *pslots;       /* open addressing, pcap a power of two; NULL: none */
    size_t pcap;
    uint32_t plens[AZ_MAX_PLENS]; /* the prefix patterns' lengths, ascending */
    uint32_t n_plens;
};

struct az_build {
    struct tr_arena *ar;
    char **err;
    bool failed;
};

static void *az_alloc(struct az_build *b, size_t n, size_t size)
{
    if (n == 0)
        return NULL;
    void *p = tr_arena_calloc(b->ar, n, size);
    if (p == NULL && !b->failed) {
        tr_cfg_errorf(b->err, NULL, "out of memory");
        b->failed = true;
    }
    return p;
}

/* Validate refuses what fails here; this guards models built in code. */
static void az_fail(struct az_build *b, const struct tr_cfg_loc *loc, const char *what, size_t i,
                    const char *why)
{
    if (!b->failed) {
        if (what != NULL)
            tr_cfg_errorf(b->err, loc, "%s[%zu]: %s", what, i, why);
        else
            tr_cfg_errorf(b->err, loc, "%s", why);
    }
    b->failed = true;
}

static struct az_pats az_pats_at(struct az_build *b, const char **src, size_t n, bool paths,
                                 const struct tr_cfg_loc *loc, const char *what)
{
    struct az_pats out = {az_alloc(b, n, sizeof(struct tr_az_pat)), 0};
    for (size_t i = 0; out.p != NULL && i < n; i++) {
        if (src[i] == NULL || src[i][0] == '\0') {
            az_fail(b, loc, what, i, "is empty");
            return out;
        }
        out.p[out.n++] = tr_az_pat_make(src[i], paths);
    }
    return out;
}

static struct az_cidrs az_cidrs(struct az_build *b, const char **src, size_t n,
                                const struct tr_cfg_loc *loc, const char *what)
{
    struct az_cidrs out = {az_alloc(b, n, sizeof(struct tr_cidr)), 0};
    char why[256];
    for (size_t i = 0; out.c != NULL && i < n; i++) {
        if (!tr_cidr_parse(src[i], &out.c[out.n++], why, sizeof(why)))
            az_fail(b, loc, what, i, why);
    }
    return out;
}

static struct az_ports az_ports(struct az_build *b, const char **src, size_t n,
                                const struct tr_cfg_loc *loc, const char *what)
{
    struct az_ports out = {az_alloc(b, n, sizeof(uint16_t)), 0};
    for (size_t i = 0; out.v != NULL && i < n; i++) {
        char *end = NULL;
        unsigned long v = strtoul(src[i], &end, 10);
        if (end == src[i] || *end != '\0' || v == 0 || v > 65535)
            az_fail(b, loc, what, i, "not a port number");
        out.v[out.n++] = (uint16_t)v;
    }
    return out;
}

static void az_build_cond(struct az_build *b, struct az_cond *c,
                          const struct tr_authz_condition_cfg *cc)
{
    char why[256];
    c->key = tr_az_key_parse(cc->key, c->arg, &c->n_arg, why, sizeof(why));
    switch (c->key) {
    case TR_AZK_INVALID:
        az_fail(b, &cc->loc, NULL, 0, why);
        return;
    case TR_AZK_SOURCE_IP:
    case TR_AZK_REMOTE_IP:
    case TR_AZK_DEST_IP:
        c->cidrs = az_cidrs(b, cc->values, cc->n_values, &cc->loc, "values");
        c->not_cidrs = az_cidrs(b, cc->not_values, cc->n_not_values, &cc->loc, "not_values");
        return;
    case TR_AZK_DEST_PORT:
        c->ports = az_ports(b, cc->values, cc->n_values, &cc->loc, "values");
        c->not_ports = az_ports(b, cc->not_values, cc->n_not_values, &cc->loc, "not_values");
        return;
    default:
        c->values = az_pats_at(b, cc->values, cc->n_values, false, &cc->loc, "values");
        c->not_values =
            az_pats_at(b, cc->not_values, cc->n_not_values, false, &cc->loc, "not_values");
        return;
    }
}

static void az_build_rule(struct az_build *b, struct az_rule *r,
                          const struct tr_authz_policy_rule_cfg *rc)
{
    r->from = az_alloc(b, rc->n_from, sizeof(*r->from));
    r->n_from = r->from ? (uint32_t)rc->n_from : 0;
    for (size_t i = 0; i < r->n_from; i++) {
        const struct tr_authz_source_cfg *s = &rc->from[i];
        struct az_source *o = &r->from[i];
        o->principals = az_pats_at(b, s->principals, s->n_principals, false, &s->loc, "principals");
        o->not_principals =
            az_pats_at(b, s->not_principals, s->n_not_principals, false, &s->loc, "not_principals");
        o->req_principals = az_pats_at(b, s->request_principals, s->n_request_principals, false,
                                       &s->loc, "request_principals");
        o->not_req_principals =
            az_pats_at(b, s->not_request_principals, s->n_not_request_principals, false, &s->loc,
                       "not_request_principals");
        o->namespaces = az_pats_at(b, s->namespaces, s->n_namespaces, false, &s->loc, "namespaces");
        o->not_namespaces =
            az_pats_at(b, s->not_namespaces, s->n_not_namespaces, false, &s->loc, "not_namespaces");
        o->ip = az_cidrs(b, s->ip_blocks, s->n_ip_blocks, &s->loc, "ip_blocks");
        o->not_ip = az_cidrs(b, s->not_ip_blocks, s->n_not_ip_blocks, &s->loc, "not_ip_blocks");
        o->remote_ip =
            az_cidrs(b, s->remote_ip_blocks, s->n_remote_ip_blocks, &s->loc, "remote_ip_blocks");
        o->not_remote_ip = az_cidrs(b, s->not_remote_ip_blocks, s->n_not_remote_ip_blocks, &s->loc,
                                    "not_remote_ip_blocks");
    }
    r->to = az_alloc(b, rc->n_to, sizeof(*r->to));
    r->n_to = r->to ? (uint32_t)rc->n_to : 0;
    for (size_t i = 0; i < r->n_to; i++) {
        const struct tr_authz_operation_cfg *op = &rc->to[i];
        struct az_operation *o = &r->to[i];
        o->hosts = az_pats_at(b, op->hosts, op->n_hosts, false, &op->loc, "hosts");
        o->not_hosts = az_pats_at(b, op->not_hosts, op->n_not_hosts, false, &op->loc, "not_hosts");
        o->methods = az_pats_at(b, op->methods, op->n_methods, false, &op->loc, "methods");
        o->not_methods =
            az_pats_at(b, op->not_methods, op->n_not_methods, false, &op->loc, "not_methods");
        o->paths = az_pats_at(b, op->paths, op->n_paths, true, &op->loc, "paths");
        o->not_paths = az_pats_at(b, op->not_paths, op->n_not_paths, true, &op->loc, "not_paths");
        o->ports = az_ports(b, op->ports, op->n_ports, &op->loc, "ports");
        o->not_ports = az_ports(b, op->not_ports, op->n_not_ports, &op->loc, "not_ports");
    }
    r->when = az_alloc(b, rc->n_when, sizeof(*r->when));
    r->n_when = r->when ? (uint32_t)rc->n_when : 0;
    for (size_t i = 0; i < r->n_when; i++)
        az_build_cond(b, &r->when[i], &rc->when[i]);
}

/* An older rule: SPIFFE principals lose their "spiffe://" (policies match
 * Istio's form); "*" stays "any authenticated peer". */
static void az_build_legacy(struct az_build *b, struct az_policy *p,
                            const struct tr_authz_rule_cfg *rc, size_t idx)
{
    char name[32];
    snprintf(name, sizeof(name), "rules[%zu]", idx);
    p->name = tr_arena_strdup(b->ar, name);
    p->action = rc->action;
    p->legacy = true;
    p->rules = az_alloc(b, 1, sizeof(*p->rules));
    if (p->rules == NULL)
        return;
    p->n_rules = 1;
    struct az_rule *r = &p->rules[0];
    if (rc->n_principals > 0) {
        r->from = az_alloc(b, 1, sizeof(*r->from));
        if (r->from == NULL)
            return;
        r->n_from = 1;
        struct az_pats *ps = &r->from[0].principals;
        *ps = az_pats_at(b, rc->principals, rc->n_principals, false, &rc->loc, "principals");
        for (uint32_t i = 0; i < ps->n; i++) {
            static const char sp[] = "spiffe://";
            if (ps->p[i].kind != TR_AZP_ANY && ps->p[i].s.len >= sizeof(sp) - 1 &&
                memcmp(ps->p[i].s.p, sp, sizeof(sp) - 1) == 0) {
                ps->p[i].s.p += sizeof(sp) - 1;
                ps->p[i].s.len -= (uint32_t)(sizeof(sp) - 1);
            }
        }
    }
    if (rc->n_methods > 0 || rc->n_paths > 0) {
        r->to = az_alloc(b, 1, sizeof(*r->to));
        if (r->to == NULL)
            return;
        r->n_to = 1;
        r->to[0].methods = az_pats_at(b, rc->methods, rc->n_methods, false, &rc->loc, "methods");
        for (uint32_t i = 0; i < r->to[0].methods.n; i++)
            r->to[0].methods.p[i] = (struct tr_az_pat){
                TR_AZP_EXACT, tr_str_from(rc->methods[i], strlen(rc->methods[i]))};
        r->to[0].paths = az_pats_at(b, rc->paths, rc->n_paths, false, &rc->loc, "paths");
    }
}

/* ---------------------------------------------------- the principal index */

static int az_set_of(enum tr_authz_action act)
{
    return act == TR_AUTHZ_AUDIT   ? AZ_AUDIT_SET
           : act == TR_AUTHZ_DENY  ? AZ_DENY_SET
           : act == TR_AUTHZ_ALLOW ? AZ_ALLOW_SET
                                   : -1; /* CUSTOM: tried in order by tr_authz_custom */
}

/* Whether p can only match requests from the exact principals its sources
 * name (see struct az_slot). */
static bool az_bounded(const struct az_policy *p)
{
    if (p->legacy || p->n_rules == 0)
        return false; /* older rules; a policy without rules matches nothing anyway */
    for (uint32_t r = 0; r < p->n_rules; r++) {
        const struct az_rule *rule = &p->rules[r];
        if (rule->n_from == 0)
            return false;
        for (uint32_t s = 0; s < rule->n_from; s++) {
            const struct az_pats *ps = &rule->from[s].principals;
            if (ps->n == 0)
                return false;
            for (uint32_t k = 0; k < ps->n; k++)
                if (ps->p[k].kind != TR_AZP_EXACT)
                    return false;
        }
    }
    return true;
}

/* Whether p can only match HTTP requests whose path one of its exact or
 * prefix path patterns matches (see struct az_pslot). */
static bool az_path_bounded(const struct az_policy *p)
{
    if (p->legacy || p->n_rules == 0)
        return false;
    for (uint32_t r = 0; r < p->n_rules; r++) {
        const struct az_rule *rule = &p->rules[r];
        if (rule->n_to == 0)
            return false;
        for (uint32_t o = 0; o < rule->n_to; o++) {
            const struct az_pats *ps = &rule->to[o].paths;
            if (ps->n == 0)
                return false;
            for (uint32_t k = 0; k < ps->n; k++)
                if ((ps->p[k].kind != TR_AZP_EXACT && ps->p[k].kind != TR_AZP_PREFIX) ||
                    ps->p[k].s.len == 0)
                    return false;
        }
    }
    return true;
}

static uint64_t az_hash(tr_str s)
{
    uint64_t h = 1469598103934665603ull;
    for (uint32_t i = 0; i < s.len; i++)
        h = (h ^ (unsigned char)s.p[i]) * 1099511628211ull;
    return h;
}

static struct az_slot *az_slot_of(struct az_slot *slots, size_t cap, tr_str principal)
{
    size_t i = (size_t)az_hash(principal) & (cap - 1);
    while (slots[i].principal.len != 0 &&
           !(slots[i].principal.len == principal.len &&
             memcmp(slots[i].principal.p, principal.p, principal.len) == 0))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static struct az_pslot *az_pslot_of(struct az_pslot *slots, size_t cap, tr_str pattern, bool prefix)
{
    size_t i = (size_t)(az_hash(pattern) ^ (uint64_t)prefix) & (cap - 1);
    while (slots[i].pattern.len != 0 &&
           !(slots[i].prefix == prefix && slots[i].pattern.len == pattern.len &&
             memcmp(slots[i].pattern.p, pattern.p, pattern.len) == 0))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

struct az_pair {
    tr_str principal; /* or path pattern */
    uint32_t policy;
    bool prefix; /* path patterns: a prefix one */
};

static int az_pair_order(const void *pa, const void *pb)
{
    const struct az_pair *a = pa, *b = pb;
    if (a->prefix != b->prefix)
        return a->prefix ? 1 : -1;
    uint32_t n = a->principal.len < b->principal.len ? a->principal.len : b->principal.len;
    int c = memcmp(a->principal.p, b->principal.p, n);
    if (c == 0)
        c = (a->principal.len > b->principal.len) - (a->principal.len < b->principal.len);
    return c != 0 ? c : (a->policy > b->policy) - (a->policy < b->policy);
}

/* Sorted pairs into the slots of one index: per key, its policies of each
 * action once, in order; the lists out of b's arena. */
static bool az_fill(struct az_build *b, const struct tr_authz *a, struct az_pair *pairs,
                    size_t n_pairs, struct az_slot *slots, size_t cap, struct az_pslot *pslots,
                    size_t pcap)
{
    uint32_t *lists = az_alloc(b, n_pairs, sizeof(uint32_t));
    if (n_pairs > 0 && lists == NULL)
        return false;
    for (size_t i = 0; i < n_pairs;) {
        size_t j = i;
        while (j < n_pairs && pairs[j].prefix == pairs[i].prefix &&
               pairs[j].principal.len == pairs[i].principal.len &&
               memcmp(pairs[j].principal.p, pairs[i].principal.p, pairs[i].principal.len) == 0)
            j++;
        struct az_list *by;
        if (slots != NULL) {
            struct az_slot *slot = az_slot_of(slots, cap, pairs[i].principal);
            slot->principal = pairs[i].principal;
            by = slot->by;
        } else {
            struct az_pslot *slot = az_pslot_of(pslots, pcap, pairs[i].principal, pairs[i].prefix);
            slot->pattern = pairs[i].principal;
            slot->prefix = pairs[i].prefix;
            by = slot->by;
        }
        for (int set = 0; set < AZ_SETS; set++) {
            by[set].v = lists;
            for (size_t q = i; q < j; q++) {
                bool dup = by[set].n > 0 && by[set].v[by[set].n - 1] == pairs[q].policy;
                if (az_set_of(a->pols[pairs[q].policy].action) == set && !dup)
                    by[set].v[by[set].n++] = pairs[q].policy;
            }
            lists += by[set].n;
        }
        i = j;
    }
    return true;
}

static size_t az_distinct_keys(const struct az_pair *pairs, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += i == 0 || pairs[i].prefix != pairs[i - 1].prefix ||
             pairs[i].principal.len != pairs[i - 1].principal.len ||
             memcmp(pairs[i].principal.p, pairs[i - 1].principal.p, pairs[i].principal.len) != 0;
    return k;
}

static size_t az_cap_for(size_t keys)
{
    size_t cap = 16;
    while (cap < 2 * keys)
        cap *= 2;
    return cap;
}

/* Builds the principal and path indexes (a->open, slots, paths, pslots,
 * plens); false when out of memory. */
static bool az_index(struct az_build *b, struct tr_authz *a)
{
    enum { OPEN = 0, BY_PRINCIPAL, BY_PATH };
    uint8_t *kind = calloc(a->n_pols ? a->n_pols : 1, 1);
    if (kind == NULL)
        return false;
    /* which index bounds each policy; the prefix lengths in use */
    uint32_t lens[AZ_MAX_PLENS];
    uint32_t n_lens = 0;
    bool paths_ok = true;
    for (size_t i = 0; i < a->n_pols; i++) {
        const struct az_policy *p = &a->pols[i];
        if (az_set_of(p->action) < 0)
            continue;
        kind[i] = az_bounded(p) ? BY_PRINCIPAL : az_path_bounded(p) ? BY_PATH : OPEN;
        for (uint32_t r = 0; kind[i] == BY_PATH && r < p->n_rules; r++)
            for (uint32_t o = 0; o < p->rules[r].n_to; o++) {
                const struct az_pats *ps = &p->rules[r].to[o].paths;
                for (uint32_t q = 0; q < ps->n; q++) {
                    if (ps->p[q].kind != TR_AZP_PREFIX)
                        continue;
                    uint32_t l = ps->p[q].s.len, at = 0;
                    while (at < n_lens && lens[at] < l)
                        at++;
                    if (at < n_lens && lens[at] == l)
                        continue;
                    if (n_lens == AZ_MAX_PLENS) {
                        paths_ok = false;
                        continue;
                    }
                    memmove(lens + at + 1, lens + at, (n_lens - at) * sizeof(*lens));
                    lens[at] = l;
                    n_lens++;
                }
            }
    }
    size_t n_pp = 0, n_path = 0, n_open[AZ_SETS] = {0}, n_pathb[AZ_SETS] = {0};
    for (size_t i = 0; i < a->n_pols; i++) {
        const struct az_policy *p = &a->pols[i];
        int set = az_set_of(p->action);
        if (set < 0)
            continue;
        if (kind[i] == BY_PATH && !paths_ok)
            kind[i] = OPEN; /* too many prefix lengths to look up: tried always */
        n_open[set] += kind[i] == OPEN;
        n_pathb[set] += kind[i] == BY_PATH;
        for (uint32_t r = 0; r < p->n_rules; r++) {
            for (uint32_t q = 0; kind[i] == BY_PRINCIPAL && q < p->rules[r].n_from; q++)
                n_pp += p->rules[r].from[q].principals.n;
            for (uint32_t q = 0; kind[i] == BY_PATH && q < p->rules[r].n_to; q++)
                n_path += p->rules[r].to[q].paths.n;
        }
    }
    bool ok = true;
    for (int set = 0; set < AZ_SETS && ok; set++) {
        a->open[set].v = az_alloc(b, n_open[set], sizeof(uint32_t));
        a->paths[set].v = az_alloc(b, n_pathb[set], sizeof(uint32_t));
        ok = (n_open[set] == 0 || a->open[set].v != NULL) &&
             (n_pathb[set] == 0 || a->paths[set].v != NULL);
    }
    struct az_pair *pp = n_pp ? malloc(n_pp * sizeof(*pp)) : NULL;
    struct az_pair *pa = n_path ? malloc(n_path * sizeof(*pa)) : NULL;
    ok = ok && (n_pp == 0 || pp != NULL) && (n_path == 0 || pa != NULL);
    size_t k = 0, kp = 0;
    for (size_t i = 0; ok && i < a->n_pols; i++) {
        const struct az_policy *p = &a->pols[i];
        int set = az_set_of(p->action);
        if (set < 0)
            continue;
        if (kind[i] == OPEN)
            a->open[set].v[a->open[set].n++] = (uint32_t)i;
        if (kind[i] == BY_PATH)
            a->paths[set].v[a->paths[set].n++] = (uint32_t)i;
        for (uint32_t r = 0; r < p->n_rules; r++) {
            for (uint32_t f = 0; kind[i] == BY_PRINCIPAL && f < p->rules[r].n_from; f++) {
                const struct az_pats *ps = &p->rules[r].from[f].principals;
                for (uint32_t q = 0; q < ps->n; q++)
                    pp[k++] = (struct az_pair){ps->p[q].s, (uint32_t)i, false};
            }
            for (uint32_t o = 0; kind[i] == BY_PATH && o < p->rules[r].n_to; o++) {
                const struct az_pats *ps = &p->rules[r].to[o].paths;
                for (uint32_t q = 0; q < ps->n; q++)
                    pa[kp++] =
                        (struct az_pair){ps->p[q].s, (uint32_t)i, ps->p[q].kind == TR_AZP_PREFIX};
            }
        }
    }
    free(kind);
    if (ok && n_pp > 0) {
        qsort(pp, n_pp, sizeof(*pp), az_pair_order);
        a->cap = az_cap_for(az_distinct_keys(pp, n_pp));
        a->slots = az_alloc(b, a->cap, sizeof(*a->slots));
        ok = a->slots != NULL && az_fill(b, a, pp, n_pp, a->slots, a->cap, NULL, 0);
    }
    if (ok && n_path > 0) {
        qsort(pa, n_path, sizeof(*pa), az_pair_order);
        a->pcap = az_cap_for(az_distinct_keys(pa, n_path));
        a->pslots = az_alloc(b, a->pcap, sizeof(*a->pslots));
        ok = a->pslots != NULL && az_fill(b, a, pa, n_path, NULL, 0, a->pslots, a->pcap);
        memcpy(a->plens, lens, n_lens * sizeof(*lens));
        a->n_plens = n_lens;
    }
    free(pp);
    free(pa);
    return ok;
}

struct tr_authz *tr_authz_build(const struct tr_authz_cfg *cfg, char **err)
{
    if (err != NULL)
        *err = NULL;
    if (cfg == NULL || cfg->n_rules + cfg->n_policies == 0)
        return NULL;

    struct tr_arena *ar = tr_arena_new(4096);
    struct tr_authz *a = ar ? tr_arena_calloc(ar, 1, sizeof(*a)) : NULL;
    if (a == NULL) {
        tr_arena_free(ar);
        tr_cfg_errorf(err, NULL, "out of memory");
        return NULL;
    }
    struct az_build b = {.ar = ar, .err = err};
    a->arena = ar;
    a->n_pols = cfg->n_rules + cfg->n_policies;
    a->pols = az_alloc(&b, a->n_pols, sizeof(*a->pols));
    for (size_t i = 0; a->pols != NULL && i < cfg->n_rules && !b.failed; i++) {
        const struct tr_authz_rule_cfg *rc = &cfg->rules[i];
        if (rc->action != TR_AUTHZ_ALLOW && rc->action != TR_AUTHZ_DENY) {
            az_fail(&b, &rc->loc, "rules", i, "action must be ALLOW or DENY");
            break;
        }
        az_build_legacy(&b, &a->pols[i], rc, i);
    }
    for (size_t i = 0; a->pols != NULL && i < cfg->n_policies && !b.failed; i++) {
        const struct tr_authz_policy_cfg *pc = &cfg->policies[i];
        struct az_policy *p = &a->pols[cfg->n_rules + i];
        p->name = pc->name;
        p->action = pc->action;
        p->provider = pc->action == TR_AUTHZ_CUSTOM ? pc->provider : -1;
        if (pc->action == TR_AUTHZ_CUSTOM && pc->provider < 0) {
            az_fail(&b, &pc->loc, "policies", i, "a CUSTOM policy needs a provider");
            break;
        }
        p->rules = az_alloc(&b, pc->n_rules, sizeof(*p->rules));
        p->n_rules = p->rules ? (uint32_t)pc->n_rules : 0;
        for (size_t r = 0; r < p->n_rules; r++)
            az_build_rule(&b, &p->rules[r], &pc->rules[r]);
    }
    for (size_t i = 0; a->pols != NULL && i < a->n_pols; i++) {
        a->has_allow |= a->pols[i].action == TR_AUTHZ_ALLOW;
        a->has_audit |= a->pols[i].action == TR_AUTHZ_AUDIT;
        a->has_custom |= a->pols[i].action == TR_AUTHZ_CUSTOM;
    }
    if (!b.failed && a->pols != NULL && !az_index(&b, a))
        tr_cfg_errorf(err, NULL, "out of memory");
    if (b.failed || a->pols == NULL) {
        if (!b.failed)
            tr_cfg_errorf(err, NULL, "out of memory");
        tr_arena_free(ar);
        return NULL;
    }
    return a;
}

void tr_authz_free(struct tr_authz *a)
{
    if (a != NULL)
        tr_arena_free(a->arena);
}

/* ---- evaluation */

/* How a field that a TCP connection cannot know counts: for an ALLOW policy
 * (and the older rules) the rule cannot match; for DENY and AUDIT the field
 * is left out, which makes the rule wider (Istio's fail-closed reading). */
enum az_tcp { AZ_TCP_FAIL, AZ_TCP_SKIP };

struct az_ctx {
    const struct tr_authz_request *rq;
    tr_str principal;   /* without "spiffe://"; empty for plaintext */
    bool authenticated; /* a verified peer */
    tr_str ns;          /* the principal's namespace, or empty */
    tr_str rq_principal;
    enum az_tcp tcp;
};

static bool az_any(const struct az_pats *ps, tr_str v, bool caseless)
{
    for (uint32_t i = 0; i < ps->n; i++) {
        if (tr_az_pat_match(&ps->p[i], v, caseless))
            return true;
    }
    return false;
}

/* Principals: "*" means any authenticated peer, whatever its ID. */
static bool az_any_principal(const struct az_ctx *x, const struct az_pats *ps)
{
    for (uint32_t i = 0; i < ps->n; i++) {
        if (ps->p[i].kind == TR_AZP_ANY ? x->authenticated
                                        : tr_az_pat_match(&ps->p[i], x->principal, false))
            return true;
    }
    return false;
}

/* A positive list (n == 0: unchecked) and its negation. */
static bool az_pats_ok(const struct az_pats *yes, const struct az_pats *no, tr_str v, bool caseless)
{
    return (yes->n == 0 || az_any(yes, v, caseless)) && (no->n == 0 || !az_any(no, v, caseless));
}

static bool az_in_cidrs(const struct az_cidrs *cs, const struct tr_ip *ip)
{
    for (uint32_t i = 0; i < cs->n; i++) {
        if (tr_cidr_contains(&cs->c[i], ip))
            return true;
    }
    return false;
}

static bool az_cidrs_ok(const struct az_cidrs *yes, const struct az_cidrs *no,
                        const struct tr_ip *ip)
{
    return (yes->n == 0 || az_in_cidrs(yes, ip)) && (no->n == 0 || !az_in_cidrs(no, ip));
}

static bool az_in_ports(const struct az_ports *ps, uint16_t port)
{
    for (uint32_t i = 0; i < ps->n; i++) {
        if (ps->v[i] == port)
            return true;
    }
    return false;
}

static bool az_ports_ok(const struct az_ports *yes, const struct az_ports *no, uint16_t port)
{
    return (yes->n == 0 || az_in_ports(yes, port)) && (no->n == 0 || !az_in_ports(no, port));
}

/* An HTTP-only field (set: the rule has one) on a TCP connection: true with
 * *verdict the field's outcome (az_tcp); false when the field is unset or
 * the request is HTTP, and the caller evaluates it. */
static bool az_http_only(const struct az_ctx *x, bool set, bool *verdict)
{
    if (!set || x->rq->http)
        return false;
    *verdict = x->tcp == AZ_TCP_SKIP;
    return true;
}

static bool az_source_match(const struct az_ctx *x, const struct az_source *s)
{
    const struct tr_authz_request *rq = x->rq;
    if ((s->principals.n > 0 && !az_any_principal(x, &s->principals)) ||
        (s->not_principals.n > 0 && az_any_principal(x, &s->not_principals)) ||
        !az_pats_ok(&s->namespaces, &s->not_namespaces, x->ns, false) ||
        !az_cidrs_ok(&s->ip, &s->not_ip, &rq->source_ip) ||
        !az_cidrs_ok(&s->remote_ip, &s->not_remote_ip, &rq->remote_ip))
        return false;
    bool v;
    if (az_http_only(x, s->req_principals.n + s->not_req_principals.n > 0, &v))
        return v;
    return az_pats_ok(&s->req_principals, &s->not_req_principals, x->rq_principal, false);
}

/* The host with its ":port" cut, for hosts written without one. */
static tr_str az_host_no_port(tr_str h)
{
    if (h.len > 0 && h.p[h.len - 1] != ']') {
        for (uint32_t i = h.len; i-- > 0;) {
            if (h.p[i] == ':')
                return tr_str_from(h.p, i);
            if (h.p[i] < '0' || h.p[i] > '9')
                break;
        }
    }
    return h;
}

static bool az_operation_match(const struct az_ctx *x, const struct az_operation *o)
{
    const struct tr_authz_request *rq = x->rq;
    if (!az_ports_ok(&o->ports, &o->not_ports, rq->dest_port))
        return false;
    bool http_set = o->hosts.n + o->not_hosts.n + o->methods.n + o->not_methods.n + o->paths.n +
                        o->not_paths.n >
                    0;
    bool v;
    if (az_http_only(x, http_set, &v))
        return v;
    if (o->hosts.n + o->not_hosts.n > 0) {
        tr_str h = rq->host, bare = az_host_no_port(h);
        bool yes = o->hosts.n == 0 || az_any(&o->hosts, h, true) || az_any(&o->hosts, bare, true);
        bool no = o->not_hosts.n > 0 &&
                  (az_any(&o->not_hosts, h, true) || az_any(&o->not_hosts, bare, true));
        if (!yes || no)
            return false;
    }
    return az_pats_ok(&o->methods, &o->not_methods, rq->method, false) &&
           az_pats_ok(&o->paths, &o->not_paths, rq->path, false);
}

/* Does any of the values a key has for this request match the list? */
static bool az_cond_strings(const struct az_ctx *x, const struct az_cond *c,
                            const struct az_pats *ps)
{
    const struct tr_authz_request *rq = x->rq;
    const struct tr_request_auth *au =
        rq->auth != NULL && rq->auth->authenticated ? rq->auth : NULL;
    switch (c->key) {
    case TR_AZK_HEADER:
        for (uint32_t i = 0; i < rq->n_headers; i++) {
            if (rq->headers[i].name.len == c->arg[0].len &&
                strncasecmp(rq->headers[i].name.p, c->arg[0].p, c->arg[0].len) == 0 &&
                az_any(ps, rq->headers[i].value, false))
                return true;
        }
        return false;
    case TR_AZK_SOURCE_NS:
        return az_any(ps, x->ns, false);
    case TR_AZK_SOURCE_PRINCIPAL:
        return az_any(ps, x->principal, false);
    case TR_AZK_AUTH_PRINCIPAL:
        return au != NULL && az_any(ps, au->principal, false);
    case TR_AZK_AUTH_PRESENTER:
        return au != NULL && az_any(ps, au->presenter, false);
    case TR_AZK_AUTH_AUDIENCES:
        for (size_t i = 0; au != NULL && i < au->n_audiences; i++) {
            if (az_any(ps, au->audiences[i], false))
                return true;
        }
        return false;
    case TR_AZK_AUTH_CLAIMS: {
        if (au == NULL || au->claim == NULL)
            return false;
        tr_str vals[16];
        size_t n = au->claim(au->claims, c->arg, c->n_arg, vals, 16);
        for (size_t i = 0; i < n && i < 16; i++) {
            if (az_any(ps, vals[i], false))
                return true;
        }
        return false;
    }
    case TR_AZK_SNI:
        return az_any(ps, rq->sni, false);
    default:
        return false;
    }
}

static bool az_cond_match(const struct az_ctx *x, const struct az_cond *c)
{
    const struct tr_authz_request *rq = x->rq;
    bool v;
    if (az_http_only(x, tr_az_key_is_http(c->key), &v))
        return v;
    switch (c->key) {
    case TR_AZK_SOURCE_IP:
        return az_cidrs_ok(&c->cidrs, &c->not_cidrs, &rq->source_ip);
    case TR_AZK_REMOTE_IP:
        return az_cidrs_ok(&c->cidrs, &c->not_cidrs, &rq->remote_ip);
    case TR_AZK_DEST_IP:
        return az_cidrs_ok(&c->cidrs, &c->not_cidrs, &rq->dest_ip);
    case TR_AZK_DEST_PORT:
        return az_ports_ok(&c->ports, &c->not_ports, rq->dest_port);
    default:
        return (c->values.n == 0 || az_cond_strings(x, c, &c->values)) &&
               (c->not_values.n == 0 || !az_cond_strings(x, c, &c->not_values));
    }
}

static bool az_rule_match(const struct az_ctx *x, const struct az_rule *r)
{
    bool ok = r->n_from == 0;
    for (uint32_t i = 0; i < r->n_from && !ok; i++)
        ok = az_source_match(x, &r->from[i]);
    if (!ok)
        return false;
    ok = r->n_to == 0;
    for (uint32_t i = 0; i < r->n_to && !ok; i++)
        ok = az_operation_match(x, &r->to[i]);
    if (!ok)
        return false;
    for (uint32_t i = 0; i < r->n_when; i++) {
        if (!az_cond_match(x, &r->when[i]))
            return false;
    }
    return true;
}

/* The first rule of policy p that matches, or -1. */
static int az_policy_match(struct az_ctx *x, const struct az_policy *p)
{
    x->tcp = p->action == TR_AUTHZ_ALLOW || p->legacy ? AZ_TCP_FAIL : AZ_TCP_SKIP;
    for (uint32_t r = 0; r < p->n_rules; r++) {
        if (az_rule_match(x, &p->rules[r]))
            return (int)r;
    }
    return -1;
}

/* Istio's source.namespace: the segment after "/ns/" of the principal. */
static tr_str az_namespace(tr_str principal)
{
    for (uint32_t i = 0; i + 4 <= principal.len; i++) {
        if (memcmp(principal.p + i, "/ns/", 4) == 0) {
            uint32_t s = i + 4, e = s;
            while (e < principal.len && principal.p[e] != '/')
                e++;
            return tr_str_from(principal.p + s, e - s);
        }
    }
    return tr_str_from("", 0);
}

/* The matching context of rq (principal, namespace, path without query). */
static void az_ctx_init(struct az_ctx *x, const struct tr_authz_request *rq,
                        struct tr_authz_request *cut)
{
    *x = (struct az_ctx){.rq = rq};
    static const char sp[] = "spiffe://";
    if (rq->principal != NULL) {
        const char *p = rq->principal;
        if (strncmp(p, sp, sizeof(sp) - 1) == 0)
            p += sizeof(sp) - 1;
        x->principal = tr_str_from(p, strlen(p));
    } else {
        x->principal = tr_str_from("", 0);
    }
    x->authenticated = rq->principal != NULL;
    x->ns = az_namespace(x->principal);
    x->rq_principal =
        rq->auth != NULL && rq->auth->authenticated ? rq->auth->principal : tr_str_from("", 0);
    /* The path is cut at '?' defensively: a caller that forgets to strip
     * the query must not slip past an exact-path DENY with "/admin?x". */
    if (rq->path.len > 0 && memchr(rq->path.p, '?', rq->path.len) != NULL) {
        *cut = *rq;
        cut->path.len =
            (uint32_t)((const char *)memchr(rq->path.p, '?', rq->path.len) - rq->path.p);
        x->rq = cut;
    }
}

bool tr_authz_has_custom(const struct tr_authz *a)
{
    return a != NULL && a->has_custom;
}

int tr_authz_custom(const struct tr_authz *a, const struct tr_authz_request *rq, int *policy,
                    int *rule)
{
    *policy = -1;
    *rule = -1;
    if (a == NULL || !a->has_custom)
        return -1;
    struct az_ctx x;
    struct tr_authz_request cut;
    az_ctx_init(&x, rq, &cut);
    for (size_t i = 0; i < a->n_pols; i++) {
        if (a->pols[i].action != TR_AUTHZ_CUSTOM)
            continue;
        int r = az_policy_match(&x, &a->pols[i]);
        if (r >= 0) {
            *policy = (int)i;
            *rule = r;
            return a->pols[i].provider;
        }
    }
    return -1;
}

/* The policies of one action a request must try, in order: the open ones
 * merged with those listed under its principal and under its path and its
 * prefixes (every path-bounded one for TCP), each once; or every policy of
 * the action, for the scan the indexes are tested against. */
#define AZ_MAX_LISTS (3u + AZ_MAX_PLENS)
struct az_cand {
    const struct tr_authz *a;
    enum tr_authz_action act;
    bool scan;
    size_t i; /* scan: next policy */
    struct az_list l[AZ_MAX_LISTS];
    uint32_t at[AZ_MAX_LISTS];
    uint32_t n;
    int64_t last; /* the last one given, -1: none */
};

static void az_cand_add(struct az_cand *c, struct az_list l)
{
    if (l.n > 0 && c->n < AZ_MAX_LISTS)
        c->l[c->n++] = l;
}

static void az_cand_init(struct az_cand *c, const struct tr_authz *a, const struct az_ctx *x,
                         const struct az_slot *slot, enum tr_authz_action act, bool scan)
{
    int set = az_set_of(act);
    *c = (struct az_cand){.a = a, .act = act, .scan = scan, .last = -1};
    if (scan)
        return;
    az_cand_add(c, a->open[set]);
    if (slot != NULL)
        az_cand_add(c, slot->by[set]);
    if (a->pslots == NULL)
        return;
    if (!x->rq->http) { /* paths are HTTP's: every path-bounded policy is tried */
        az_cand_add(c, a->paths[set]);
        return;
    }
    tr_str path = x->rq->path;
    const struct az_pslot *ps = az_pslot_of(a->pslots, a->pcap, path, false);
    if (ps->pattern.len != 0)
        az_cand_add(c, ps->by[set]);
    for (uint32_t k = 0; k < a->n_plens && a->plens[k] <= path.len; k++) {
        ps = az_pslot_of(a->pslots, a->pcap, tr_str_from(path.p, a->plens[k]), true);
        if (ps->pattern.len != 0)
            az_cand_add(c, ps->by[set]);
    }
}

static bool az_cand_next(struct az_cand *c, size_t *out)
{
    if (c->scan) {
        while (c->i < c->a->n_pols && c->a->pols[c->i].action != c->act)
            c->i++;
        if (c->i >= c->a->n_pols)
            return false;
        *out = c->i++;
        return true;
    }
    for (;;) {
        int best = -1;
        for (uint32_t k = 0; k < c->n; k++)
            if (c->at[k] < c->l[k].n &&
                (best < 0 || c->l[k].v[c->at[k]] < c->l[best].v[c->at[best]]))
                best = (int)k;
        if (best < 0)
            return false;
        uint32_t v = c->l[best].v[c->at[best]++];
        if ((int64_t)v == c->last)
            continue; /* listed under two patterns the path matches */
        c->last = v;
        *out = v;
        return true;
    }
}

static enum tr_authz_verdict az_decide(const struct tr_authz *a, const struct tr_authz_request *rq,
                                       struct tr_authz_result *out, bool scan)
{
    struct tr_authz_result res = {.verdict = TR_AUTHZ_VERDICT_ALLOW,
                                  .reason = TR_AZR_NO_POLICY,
                                  .policy = -1,
                                  .rule = -1,
                                  .audit_policy = -1,
                                  .audit_rule = -1};
    if (a == NULL) {
        if (out != NULL)
            *out = res;
        return res.verdict;
    }
    struct az_ctx x;
    struct tr_authz_request cut;
    az_ctx_init(&x, rq, &cut);
    const struct az_slot *slot = NULL;
    if (a->slots != NULL && x.authenticated && x.principal.len > 0) {
        slot = az_slot_of(a->slots, a->cap, x.principal);
        if (slot->principal.len == 0)
            slot = NULL; /* no policy names it: only the unbounded ones can match */
    }
    struct az_cand c;
    size_t i;
    if (a->has_audit) {
        az_cand_init(&c, a, &x, slot, TR_AUTHZ_AUDIT, scan);
        while (res.audit_policy < 0 && az_cand_next(&c, &i)) {
            int r = az_policy_match(&x, &a->pols[i]);
            if (r >= 0) {
                res.audit_policy = (int)i;
                res.audit_rule = r;
            }
        }
    }
    az_cand_init(&c, a, &x, slot, TR_AUTHZ_DENY, scan);
    while (az_cand_next(&c, &i)) {
        int r = az_policy_match(&x, &a->pols[i]);
        if (r >= 0) {
            res.verdict = TR_AUTHZ_VERDICT_DENY;
            res.reason = TR_AZR_DENY_MATCHED;
            res.policy = (int)i;
            res.rule = r;
            goto done;
        }
    }
    if (!a->has_allow) {
        res.reason = TR_AZR_NO_ALLOW_POLICY;
        goto done;
    }
    az_cand_init(&c, a, &x, slot, TR_AUTHZ_ALLOW, scan);
    while (az_cand_next(&c, &i)) {
        int r = az_policy_match(&x, &a->pols[i]);
        if (r >= 0) {
            res.reason = TR_AZR_ALLOW_MATCHED;
            res.policy = (int)i;
            res.rule = r;
            goto done;
        }
    }
    res.verdict = TR_AUTHZ_VERDICT_DENY;
    res.reason = TR_AZR_NO_ALLOW_MATCHED;
done:
    if (out != NULL)
        *out = res;
    return res.verdict;
}

enum tr_authz_verdict tr_authz_decide(const struct tr_authz *a, const struct tr_authz_request *rq,
                                      struct tr_authz_result *out)
{
    return az_decide(a, rq, out, false);
}

enum tr_authz_verdict tr_authz_decide_scan(const struct tr_authz *a,
                                           const struct tr_authz_request *rq,
                                           struct tr_authz_result *out)
{
    return az_decide(a, rq, out, true);
}

const char *tr_authz_policy_name(const struct tr_authz *a, int policy)
{
    if (a == NULL || policy < 0 || (size_t)policy >= a->n_pols)
        return NULL;
    return a->pols[policy].name;
}

enum tr_authz_action tr_authz_policy_action(const struct tr_authz *a, int policy)
{
    if (a == NULL || policy < 0 || (size_t)policy >= a->n_pols)
        return TR_AUTHZ_ALLOW;
    return a->pols[policy].action;
}

const char *tr_authz_reason_name(enum tr_authz_reason r)
{
    switch (r) {
    case TR_AZR_NO_POLICY:
        return "no authorization policy applies";
    case TR_AZR_DENY_MATCHED:
        return "a DENY policy matched";
    case TR_AZR_ALLOW_MATCHED:
        return "an ALLOW policy matched";
    case TR_AZR_NO_ALLOW_POLICY:
        return "no DENY policy matched and there is no ALLOW policy";
    case TR_AZR_NO_ALLOW_MATCHED:
        return "no ALLOW policy matched (default deny)";
    }
    return "?";
}

enum tr_authz_verdict tr_authz_eval(const struct tr_authz *a, const char *principal, tr_str method,
                                    tr_str path, int *matched_rule)
{
    struct tr_authz_request rq = {
        .principal = principal, .http = method.len > 0, .method = method, .path = path};
    struct tr_authz_result res;
    enum tr_authz_verdict v = tr_authz_decide(a, &rq, &res);
    if (matched_rule != NULL)
        *matched_rule = res.policy;
    return v;
}
