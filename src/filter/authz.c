/* filter/authz.c: compiled authorization rules (see authz.h, and tr_authz_cfg
 * in config/model.h for the semantics).
 *
 * Every pattern is turned at build time into a slice plus a kind (exact,
 * prefix, any), so evaluation is plain length checks and memcmp. The path is
 * cut at '?' defensively: a caller that forgets to strip the query must not
 * be able to slip past an exact-path DENY rule with "/admin?x".
 */
#include "filter/authz.h"

#include "config/load.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"

enum tr_az_pat_kind { TR_AZ_EXACT = 0, TR_AZ_PREFIX, TR_AZ_ANY };

struct tr_az_pat {
    enum tr_az_pat_kind kind;
    tr_str s; /* the exact value, or the prefix without its '*' */
};

struct tr_az_rule {
    enum tr_authz_action action;
    struct tr_az_pat *principals;
    uint32_t n_principals;
    tr_str *methods;
    uint32_t n_methods;
    struct tr_az_pat *paths;
    uint32_t n_paths;
};

struct tr_authz {
    struct tr_arena *arena; /* owns this struct and everything it points to */
    struct tr_az_rule *rules;
    size_t n_rules;
    bool has_allow;
};

/* "*" alone -> ANY; "x*" -> PREFIX "x"; else EXACT. The slices point into
 * the config, which outlives the compiled rules. */
static bool tr_az_pats_build(struct tr_arena *ar, const char **src, size_t n,
                             struct tr_az_pat **out, uint32_t *n_out, const char *what,
                             const struct tr_cfg_loc *loc, char **err)
{
    if (n == 0)
        return true;
    struct tr_az_pat *p = tr_arena_calloc(ar, n, sizeof(*p));
    if (p == NULL) {
        tr_cfg_errorf(err, loc, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = src[i] ? strlen(src[i]) : 0;
        if (len == 0) {
            tr_cfg_errorf(err, loc, "%s[%zu] is empty", what, i);
            return false;
        }
        p[i].s = tr_str_from(src[i], len);
        if (len == 1 && src[i][0] == '*') {
            p[i].kind = TR_AZ_ANY;
        } else if (src[i][len - 1] == '*') {
            p[i].kind = TR_AZ_PREFIX;
            p[i].s.len--;
        }
    }
    *out = p;
    *n_out = (uint32_t)n;
    return true;
}

struct tr_authz *tr_authz_build(const struct tr_authz_cfg *cfg, char **err)
{
    if (err != NULL)
        *err = NULL;
    if (cfg == NULL || cfg->n_rules == 0)
        return NULL;

    struct tr_arena *ar = tr_arena_new(4096);
    struct tr_authz *a = ar ? tr_arena_alloc(ar, sizeof(*a)) : NULL;
    if (a == NULL)
        goto oom;
    a->arena = ar;
    a->rules = tr_arena_calloc(ar, cfg->n_rules, sizeof(*a->rules));
    if (a->rules == NULL)
        goto oom;
    a->n_rules = cfg->n_rules;

    for (size_t i = 0; i < cfg->n_rules; i++) {
        const struct tr_authz_rule_cfg *rc = &cfg->rules[i];
        struct tr_az_rule *r = &a->rules[i];
        if (rc->action != TR_AUTHZ_ALLOW && rc->action != TR_AUTHZ_DENY) {
            tr_cfg_errorf(err, &rc->loc, "unknown action %d", (int)rc->action);
            goto fail;
        }
        r->action = rc->action;
        if (rc->action == TR_AUTHZ_ALLOW)
            a->has_allow = true;
        if (!tr_az_pats_build(ar, rc->principals, rc->n_principals, &r->principals,
                              &r->n_principals, "principals", &rc->loc, err) ||
            !tr_az_pats_build(ar, rc->paths, rc->n_paths, &r->paths, &r->n_paths, "paths", &rc->loc,
                              err))
            goto fail;
        if (rc->n_methods > 0) {
            r->methods = tr_arena_calloc(ar, rc->n_methods, sizeof(*r->methods));
            if (r->methods == NULL)
                goto oom;
            for (size_t m = 0; m < rc->n_methods; m++) {
                if (rc->methods[m] == NULL || rc->methods[m][0] == '\0') {
                    tr_cfg_errorf(err, &rc->loc, "methods[%zu] is empty", m);
                    goto fail;
                }
                r->methods[m] = tr_str_from(rc->methods[m], strlen(rc->methods[m]));
            }
            r->n_methods = (uint32_t)rc->n_methods;
        }
    }
    return a;

oom:
    tr_cfg_errorf(err, NULL, "out of memory");
fail:
    tr_arena_free(ar);
    return NULL;
}

void tr_authz_free(struct tr_authz *a)
{
    if (a != NULL)
        tr_arena_free(a->arena);
}

static bool tr_az_pat_match(const struct tr_az_pat *p, const char *s, size_t len)
{
    switch (p->kind) {
    case TR_AZ_ANY:
        return true;
    case TR_AZ_PREFIX:
        return len >= p->s.len && memcmp(s, p->s.p, p->s.len) == 0;
    case TR_AZ_EXACT:
        return len == p->s.len && memcmp(s, p->s.p, len) == 0;
    }
    return false;
}

static bool tr_az_rule_match(const struct tr_az_rule *r, const char *principal,
                             size_t principal_len, tr_str method, tr_str path)
{
    if (r->n_principals > 0) {
        /* Every principal pattern, "*" included, needs an authenticated peer. */
        if (principal == NULL)
            return false;
        bool ok = false;
        for (uint32_t i = 0; i < r->n_principals && !ok; i++)
            ok = tr_az_pat_match(&r->principals[i], principal, principal_len);
        if (!ok)
            return false;
    }
    if (r->n_methods > 0) {
        if (method.len == 0)
            return false;
        bool ok = false;
        for (uint32_t i = 0; i < r->n_methods && !ok; i++)
            ok = method.len == r->methods[i].len &&
                 memcmp(method.p, r->methods[i].p, method.len) == 0;
        if (!ok)
            return false;
    }
    if (r->n_paths > 0) {
        if (path.len == 0)
            return false;
        bool ok = false;
        for (uint32_t i = 0; i < r->n_paths && !ok; i++)
            ok = tr_az_pat_match(&r->paths[i], path.p, path.len);
        if (!ok)
            return false;
    }
    return true;
}

enum tr_authz_verdict tr_authz_eval(const struct tr_authz *a, const char *principal, tr_str method,
                                    tr_str path, int *matched_rule)
{
    if (matched_rule != NULL)
        *matched_rule = -1;
    if (a == NULL)
        return TR_AUTHZ_VERDICT_ALLOW; /* no rules */
    if (path.len > 0) {
        const char *q = memchr(path.p, '?', path.len);
        if (q != NULL)
            path.len = (uint32_t)(q - path.p);
    }
    size_t plen = principal ? strlen(principal) : 0;

    for (size_t i = 0; i < a->n_rules; i++) {
        if (a->rules[i].action == TR_AUTHZ_DENY &&
            tr_az_rule_match(&a->rules[i], principal, plen, method, path)) {
            if (matched_rule != NULL)
                *matched_rule = (int)i;
            return TR_AUTHZ_VERDICT_DENY;
        }
    }
    if (!a->has_allow)
        return TR_AUTHZ_VERDICT_ALLOW;
    for (size_t i = 0; i < a->n_rules; i++) {
        if (a->rules[i].action == TR_AUTHZ_ALLOW &&
            tr_az_rule_match(&a->rules[i], principal, plen, method, path)) {
            if (matched_rule != NULL)
                *matched_rule = (int)i;
            return TR_AUTHZ_VERDICT_ALLOW;
        }
    }
    return TR_AUTHZ_VERDICT_DENY;
}
