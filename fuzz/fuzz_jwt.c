/* libFuzzer target: the JWT filter's parsers (filter/jwt.h, core/json.h).
 *
 * Input: byte 0 picks what the rest is:
 *   0: a JSON Web Key Set (tr_jwks_parse);
 *   1: a JSON document (tr_json_parse), then every string decoded and the
 *      in-place unescape, checked to give the same bytes;
 *   else: a request: the rest split at the first NUL into the Authorization
 *      value and the request-target, authenticated against one rule with a
 *      fixed P-256 key (a forged signature never verifies, so the checks
 *      behind it are reached by tokens the corpus signs with no key: the
 *      invariant is no crash, no leak, and no VERIFIED result). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "filter/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char jwks[] = "{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"kid\": \"k1\", "
                           "\"x\": \"vzMf-mUgUezcBEWbnbi5lA9szBa7iXS_46JmODV8aiU\", \"y\": "
                           "\"bB7liq4hr2qZUCuFixkJ3-cCGZ8F6y-J_l98f2ztCK4\"}]}";

static struct tr_jwt_request rq;

static void fuzz_json(const char *text, size_t len)
{
    static struct tr_json_tok tok[512];
    struct tr_json j;
    const char *err;
    if (!tr_json_parse(text, len, tok, 512, &j, &err)) {
        CHECK(err != NULL);
        return;
    }
    CHECK(j.n_tok >= 1 && j.tok[0].next == j.n_tok);
    char *copy = malloc(len + 1);
    char *dec = malloc(len + 1);
    CHECK(copy != NULL && dec != NULL);
    memcpy(copy, text, len);
    static struct tr_json_tok before[512];
    memcpy(before, tok, j.n_tok * sizeof(*tok));
    tr_json_unescape(copy, tok, j.n_tok);
    struct tr_json orig = {text, before, j.n_tok};
    for (uint32_t t = 0; t < j.n_tok; t++) {
        if (before[t].type != TR_JSON_STRING)
            continue;
        long l = tr_json_str(&orig, t, dec, len + 1);
        CHECK(l >= 0 && (size_t)l == tok[t].len);
        CHECK(memcmp(dec, copy + tok[t].start, (size_t)l) == 0);
    }
    free(copy);
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tr_jwt_authn *authn;
    if (authn == NULL) {
        static struct tr_jwt_rule_cfg rule = {.issuer = "https://issuer.example", .jwks = jwks};
        static struct tr_request_authn_cfg cfg = {.rules = &rule, .n_rules = 1};
        char *err = NULL;
        authn = tr_jwt_authn_build(&cfg, &err);
        CHECK(authn != NULL);
    }
    if (size == 0)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] == 0) {
        char *err = NULL;
        struct tr_jwks *k = tr_jwks_parse(text, len, &err);
        CHECK((k == NULL) != (err == NULL));
        tr_jwks_free(k);
        free(err);
        return 0;
    }
    if (data[0] == 1) {
        fuzz_json(text, len);
        return 0;
    }
    const char *nul = memchr(text, '\0', len);
    size_t vlen = nul != NULL ? (size_t)(nul - text) : len;
    tr_str target = nul != NULL ? tr_str_from(nul + 1, len - vlen - 1) : TR_STR_LIT("/");
    struct tr_str_pair h[] = {{TR_STR_LIT("authorization"), tr_str_from(text, vlen)},
                              {TR_STR_LIT("cookie"), tr_str_from(text, vlen)}};
    const char *why;
    enum tr_jwt_status st = tr_jwt_authenticate(authn, target, h, 2, 1700000000, &rq, &why);
    CHECK(st != TR_JWT_VERIFIED);
    CHECK(st != TR_JWT_INVALID || why != NULL);
    CHECK(!rq.auth.authenticated);
    tr_jwt_request_edit(&rq, NULL);
    return 0;
}
