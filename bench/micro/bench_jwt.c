/* bench/micro/bench_jwt.c: JWT verification per algorithm (issue 9: "JWT
 * verification per algorithm, ns per request (p50/p99)").
 *
 * Keys of every algorithm filter/jwt verifies are made with OpenSSL
 * (tests/support/jwt_mint.h: RSA 2048, P-256, P-384, Ed25519), their key
 * set is a rule's inline jwks, and one token per algorithm carries a
 * typical payload (issuer, subject, two audiences, exp, a few claims).
 * tr_jwt_authenticate is what a worker runs for a request with
 * "Authorization: Bearer TOKEN": find the token, decode it, pick the key,
 * verify the signature, check the claims. Each call is timed alone (a
 * verification costs tens of microseconds, a clock read 20 ns); before
 * timing, every token must verify and a token with a flipped signature
 * byte must not.
 *
 * usage: bench_jwt [--n COUNT] (verifications per algorithm, default 2000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tests/support/jwt_mint.h"
#include "filter/jwt.h"
#include "micro.h"
#include "router/router.h"

#define NOW   1700000000L
#define MAX_N 100000u
#define PAYLOAD                                                                                    \
    "{\"iss\":\"https://issuer.example\",\"sub\":\"alice\",\"aud\":[\"api\",\"web\"],"             \
    "\"exp\":1700003600,\"iat\":1699996400,\"azp\":\"cli\",\"scope\":\"read write\","              \
    "\"groups\":[\"eng\",\"ops\"]}"

static struct tr_jwt_request rq; /* large: one, reused, as a worker does */

static enum tr_jwt_status run(const struct tr_jwt_authn *a, const char *token)
{
    char value[9000];
    snprintf(value, sizeof(value), "Bearer %s", token);
    struct tr_str_pair h[] = {{TR_STR_LIT("host"), TR_STR_LIT("api.example.com")},
                              {TR_STR_LIT("authorization"), tr_str_from(value, strlen(value))}};
    const char *why = NULL;
    return tr_jwt_authenticate(a, TR_STR_LIT("/api/orders"), h, 2, NOW, &rq, &why);
}

int main(int argc, char **argv)
{
    unsigned n = 2000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--n") == 0 && i + 1 < argc)
            n = (unsigned)atoi(argv[++i]);
        else
            micro_die("bench_jwt", "usage: bench_jwt [--n COUNT]");
    }
    if (n == 0 || n > MAX_N)
        micro_die("bench_jwt", "--n takes 1..%u", MAX_N);
    struct jwt_keys keys;
    if (!jwt_keys_make(&keys))
        micro_die("bench_jwt", "cannot make keys");
    struct tr_jwt_rule_cfg rule = {.issuer = "https://issuer.example",
                                   .jwks = keys.jwks,
                                   .audiences = (const char *[]){"api"},
                                   .n_audiences = 1};
    struct tr_request_authn_cfg cfg = {.rules = &rule, .n_rules = 1};
    char *err = NULL;
    struct tr_jwt_authn *a = tr_jwt_authn_build(&cfg, &err);
    if (a == NULL)
        micro_die("bench_jwt", "tr_jwt_authn_build: %s", err ? err : "?");
    static const struct {
        const char *alg, *kid;
        int key; /* 0 rsa, 1 p256, 2 p384, 3 ed */
    } algs[] = {{"RS256", "r1", 0}, {"RS384", "r1", 0}, {"RS512", "r1", 0},
                {"PS256", "r1", 0}, {"PS384", "r1", 0}, {"PS512", "r1", 0},
                {"ES256", "e1", 1}, {"ES384", NULL, 2}, {"EdDSA", NULL, 3}};
    EVP_PKEY *k[] = {keys.rsa, keys.p256, keys.p384, keys.ed};
    printf("bench_jwt: tr_jwt_authenticate, %u verifications per algorithm\n", n);
    micro_print_machine(stdout);
    double *ns = calloc(n, sizeof(double));
    if (ns == NULL)
        micro_die("bench_jwt", "out of memory");
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        char header[128], token[8192];
        if (algs[i].kid)
            snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"%s\"}", algs[i].alg,
                     algs[i].kid);
        else
            snprintf(header, sizeof(header), "{\"alg\":\"%s\"}", algs[i].alg);
        if (!jwt_sign(algs[i].alg, k[algs[i].key], header, PAYLOAD, token, sizeof(token)))
            micro_die("bench_jwt", "%s: cannot sign", algs[i].alg);
        if (run(a, token) != TR_JWT_VERIFIED)
            micro_die("bench_jwt", "%s: the token does not verify", algs[i].alg);
        char bad[8192];
        memcpy(bad, token, sizeof(bad));
        size_t l = strlen(bad);
        bad[l - 2] = bad[l - 2] == 'A' ? 'B' : 'A'; /* a signature byte */
        if (run(a, bad) != TR_JWT_INVALID)
            micro_die("bench_jwt", "%s: a broken signature verifies", algs[i].alg);
        for (unsigned j = 0; j < n; j++) {
            uint64_t t0 = micro_now_ns();
            enum tr_jwt_status st = run(a, token);
            uint64_t t1 = micro_now_ns();
            if (st != TR_JWT_VERIFIED)
                micro_die("bench_jwt", "%s: verification %u failed", algs[i].alg, j);
            ns[j] = (double)(t1 - t0);
        }
        printf("  %-6s p50 %8.1f us  p99 %8.1f us  max %8.1f us  (token %zu bytes)\n", algs[i].alg,
               micro_quantile(ns, n, 0.5) / 1e3, micro_quantile(ns, n, 0.99) / 1e3,
               micro_quantile(ns, n, 1.0) / 1e3, strlen(token));
    }
    free(ns);
    tr_jwt_authn_free(a);
    jwt_keys_free(&keys);
    return 0;
}
