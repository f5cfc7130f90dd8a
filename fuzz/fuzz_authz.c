/* libFuzzer target: the authorization value syntaxes of core/authz_syntax.h
 * (CIDR blocks, condition keys, path patterns and templates) and the
 * evaluator of filter/authz.h on what they accept.
 *
 * Input: NUL-separated fields: a CIDR, a condition key, a path pattern, a
 * request path, an IP address. Checked invariants:
 *   - a block that parses contains its own network address, and its prefix
 *     length fits its family;
 *   - a key that parses yields its arguments as slices of the key itself
 *     (a header name, 1 to TR_AZ_MAX_CLAIM_DEPTH claim names);
 *   - a path pattern that the check accepts builds into a policy, and a
 *     template matches the path made by filling each {*} with "x" and a
 *     final {**} with "a/b";
 *   - deciding any request on it allows or denies, naming a policy only when
 *     one decided, and the indexes decide as the scan of every policy does. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/authz_syntax.h"
#include "filter/authz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define FIELDS 5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *buf = malloc(size + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *f[FIELDS];
    size_t n = 0;
    for (char *p = buf; n < FIELDS;) {
        f[n++] = p;
        char *z = memchr(p, '\0', size + 1 - (size_t)(p - buf));
        if (z == NULL || z == buf + size) {
            while (n < FIELDS)
                f[n++] = "";
            break;
        }
        p = z + 1;
    }
    char why[256];

    struct tr_cidr c;
    if (tr_cidr_parse(f[0], &c, why, sizeof(why))) {
        CHECK(c.ip.family == 4 || c.ip.family == 6);
        CHECK(c.bits <= (c.ip.family == 4 ? 32 : 128));
        CHECK(tr_cidr_contains(&c, &c.ip));
    }

    tr_str arg[TR_AZ_MAX_CLAIM_DEPTH];
    size_t n_arg = 0;
    enum tr_az_key k = tr_az_key_parse(f[1], arg, &n_arg, why, sizeof(why));
    size_t klen = strlen(f[1]);
    if (k == TR_AZK_HEADER)
        CHECK(n_arg == 1);
    if (k == TR_AZK_AUTH_CLAIMS)
        CHECK(n_arg >= 1 && n_arg <= TR_AZ_MAX_CLAIM_DEPTH);
    for (size_t i = 0; i < n_arg; i++)
        CHECK(arg[i].len > 0 && arg[i].p >= f[1] && arg[i].p + arg[i].len <= f[1] + klen);

    if (tr_az_path_check(f[2], why, sizeof(why)) && strchr(f[2], '{') != NULL) {
        /* Fill the template and it must match. */
        char filled[8192];
        size_t o = 0;
        for (const char *p = f[2]; *p != '\0' && o + 4 < sizeof(filled);) {
            if (strncmp(p, "{**}", 4) == 0) {
                memcpy(filled + o, "a/b", 3);
                o += 3;
                p += 4;
            } else if (strncmp(p, "{*}", 3) == 0) {
                filled[o++] = 'x';
                p += 3;
            } else {
                filled[o++] = *p++;
            }
        }
        filled[o] = '\0';
        CHECK(tr_az_template_match(tr_str_from(f[2], strlen(f[2])), tr_str_from(filled, o)));
    }

    if (tr_az_path_check(f[2], why, sizeof(why))) {
        const char *paths[1] = {f[2]};
        struct tr_authz_operation_cfg op = {.paths = paths, .n_paths = 1};
        struct tr_authz_policy_rule_cfg rule = {.to = &op, .n_to = 1};
        struct tr_authz_policy_cfg pol = {
            .name = "fuzz/p", .action = TR_AUTHZ_ALLOW, .rules = &rule, .n_rules = 1};
        struct tr_authz_cfg cfg = {.policies = &pol, .n_policies = 1};
        char *err = NULL;
        struct tr_authz *a = tr_authz_build(&cfg, &err);
        CHECK(a != NULL);
        struct tr_authz_request rq = {.http = true, .method = TR_STR_LIT("GET")};
        rq.path = tr_str_from(f[3], strlen(f[3]));
        tr_ip_parse(f[4], &rq.source_ip);
        struct tr_authz_result res;
        enum tr_authz_verdict v = tr_authz_decide(a, &rq, &res);
        CHECK(v == TR_AUTHZ_VERDICT_ALLOW || v == TR_AUTHZ_VERDICT_DENY);
        CHECK((res.policy >= 0) == (v == TR_AUTHZ_VERDICT_ALLOW));
        /* the indexes (a path-bounded policy here) decide as the scan does,
         * for HTTP and for TCP */
        for (int tcp = 0; tcp < 2; tcp++) {
            rq.http = tcp == 0;
            struct tr_authz_result x, y;
            CHECK(tr_authz_decide(a, &rq, &x) == tr_authz_decide_scan(a, &rq, &y));
            CHECK(x.policy == y.policy && x.rule == y.rule && x.reason == y.reason);
        }
        tr_authz_free(a);
        free(err);
    }
    free(buf);
    return 0;
}
