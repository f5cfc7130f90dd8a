/* filter/jwt: tokens made here with OpenSSL (RSA, RSA-PSS, ECDSA P-256 and
 * P-384, Ed25519), key sets built from the same keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "core/base64.h"
#include "filter/jwt.h"
#include "../../support/jwt_mint.h"

#define NOW 1700000000L

static EVP_PKEY *rsa_key, *p256_key, *p384_key, *ed_key, *other_rsa;
static struct jwt_keys keys; /* tests/support/jwt_mint.h */
static const char *jwks;
static struct tr_jwt_request rq;

static void b64url_str(const char *s, char *out)
{
    jwt_b64url((const unsigned char *)s, strlen(s), out);
}

static void bn_b64(EVP_PKEY *k, const char *param, char *out)
{
    assert_true(jwt_bn_b64(k, param, out));
}

static void ec_xy(EVP_PKEY *k, size_t size, char *x, char *y)
{
    assert_true(jwt_ec_xy(k, size, x, y));
}

static int setup(void **state)
{
    (void)state;
    if (!jwt_keys_make(&keys))
        return -1;
    rsa_key = keys.rsa;
    p256_key = keys.p256;
    p384_key = keys.p384;
    ed_key = keys.ed;
    jwks = keys.jwks;
    other_rsa = EVP_RSA_gen(2048);
    return other_rsa != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    jwt_keys_free(&keys);
    EVP_PKEY_free(other_rsa);
    return 0;
}

/* A compact token: header JSON, payload JSON, signed with key under alg. */
static void sign(const char *alg, EVP_PKEY *key, const char *header, const char *payload, char *out)
{
    assert_true(jwt_sign(alg, key, header, payload, out, 8192)); /* callers' buffers */
}

static const char *issuer = "https://issuer.example";

static struct tr_jwt_authn *build_rule(struct tr_jwt_rule_cfg *r)
{
    static struct tr_request_authn_cfg cfg;
    cfg = (struct tr_request_authn_cfg){.rules = r, .n_rules = 1};
    char *err = NULL;
    struct tr_jwt_authn *a = tr_jwt_authn_build(&cfg, &err);
    if (a == NULL)
        fail_msg("build: %s", err);
    return a;
}

/* The status of a request carrying "Authorization: Bearer token". */
static enum tr_jwt_status run(const struct tr_jwt_authn *a, const char *token, const char **why)
{
    char value[9000];
    snprintf(value, sizeof(value), "Bearer %s", token);
    struct tr_str_pair h[] = {{TR_STR_LIT("host"), TR_STR_LIT("x")},
                              {TR_STR_LIT("Authorization"), tr_str_from(value, strlen(value))}};
    return tr_jwt_authenticate(a, TR_STR_LIT("/"), h, 2, NOW, &rq, why);
}

#define PAYLOAD                                                                                    \
    "{\"iss\":\"https://issuer.example\",\"sub\":\"alice\",\"aud\":[\"api\",\"web\"],"             \
    "\"exp\":1700003600,\"azp\":\"cli\",\"scope\":\" read  write "                                 \
    "admin\",\"groups\":[\"a\",\"b\",1],\"org\":{\"unit\":\"x\"}}"

static void test_algorithms(void **state)
{
    struct tr_jwt_rule_cfg r = {.issuer = issuer, .jwks = jwks};
    struct tr_jwt_authn *a = build_rule(&r);
    static const struct {
        const char *alg, *kid;
        EVP_PKEY **key;
    } cases[] = {
        {"RS256", "r1", &rsa_key},  {"RS384", NULL, &rsa_key},  {"RS512", "r1", &rsa_key},
        {"PS256", "r1", &rsa_key},  {"PS384", NULL, &rsa_key},  {"PS512", "r1", &rsa_key},
        {"ES256", "e1", &p256_key}, {"ES384", NULL, &p384_key}, {"EdDSA", NULL, &ed_key},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char header[128], token[8192];
        if (cases[i].kid != NULL)
            snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"JWT\"}",
                     cases[i].alg, cases[i].kid);
        else
            snprintf(header, sizeof(header), "{\"alg\":\"%s\"}", cases[i].alg);
        sign(cases[i].alg, *cases[i].key, header, PAYLOAD, token);
        const char *why = NULL;
        if (run(a, token, &why) != TR_JWT_VERIFIED)
            fail_msg("%s: %s", cases[i].alg, why);
        assert_true(rq.auth.authenticated);
        assert_true(TR_STR_EQ_LIT(rq.auth.principal, "https://issuer.example/alice"));
        assert_true(TR_STR_EQ_LIT(rq.auth.presenter, "cli"));
        assert_int_equal(rq.auth.n_audiences, 2);
        assert_true(TR_STR_EQ_LIT(rq.auth.audiences[1], "web"));
        /* Not forwarded by default: the Authorization field is dropped. */
        assert_int_equal(rq.n_drop, 1);
        assert_true(TR_STR_EQ_LIT(rq.drop[0], "authorization"));
    }
    tr_jwt_authn_free(a);
}

static void test_claims(void **state)
{
    struct tr_jwt_claim_header_cfg out[] = {{.header = "x-sub", .claim = "sub"},
                                            {.header = "x-exp", .claim = "exp"},
                                            {.header = "x-none", .claim = "nope"}};
    struct tr_jwt_rule_cfg r = {.issuer = issuer,
                                .jwks = jwks,
                                .forward_original_token = true,
                                .output_payload_to_header = "x-payload",
                                .output_claim_to_headers = out,
                                .n_output_claim_to_headers = 3};
    struct tr_jwt_authn *a = build_rule(&r);
    char token[8192];
    sign("RS256", rsa_key, "{\"alg\":\"RS256\"}", PAYLOAD, token);
    const char *why;
    assert_int_equal(run(a, token, &why), TR_JWT_VERIFIED);
    tr_str v[4];
    size_t n = rq.auth.claim(rq.auth.claims, (tr_str[]){TR_STR_LIT("groups")}, 1, v, 4);
    assert_int_equal(n, 2);
    assert_true(TR_STR_EQ_LIT(v[1], "b"));
    n = rq.auth.claim(rq.auth.claims, (tr_str[]){TR_STR_LIT("org"), TR_STR_LIT("unit")}, 2, v, 4);
    assert_int_equal(n, 1);
    assert_true(TR_STR_EQ_LIT(v[0], "x"));
    assert_int_equal(rq.auth.claim(rq.auth.claims, (tr_str[]){TR_STR_LIT("exp")}, 1, v, 4), 0);
    /* scope is space-delimited (Istio's default); other strings are not. */
    n = rq.auth.claim(rq.auth.claims, (tr_str[]){TR_STR_LIT("scope")}, 1, v, 2);
    assert_int_equal(n, 3);
    assert_true(TR_STR_EQ_LIT(v[0], "read"));
    assert_true(TR_STR_EQ_LIT(v[1], "write"));
    n = rq.auth.claim(rq.auth.claims, (tr_str[]){TR_STR_LIT("azp")}, 1, v, 4);
    assert_int_equal(n, 1);
    assert_true(TR_STR_EQ_LIT(v[0], "cli"));
    /* Output fields: dropped from the client's request, then added. */
    assert_int_equal(rq.n_drop, 4);
    assert_int_equal(rq.n_add, 3);
    assert_true(TR_STR_EQ_LIT(rq.add[0].name, "x-payload"));
    const char *dot = strchr(token, '.');
    assert_int_equal(rq.add[0].value.len, strchr(dot + 1, '.') - dot - 1);
    assert_memory_equal(rq.add[0].value.p, dot + 1, rq.add[0].value.len);
    assert_true(TR_STR_EQ_LIT(rq.add[1].value, "alice"));
    assert_true(TR_STR_EQ_LIT(rq.add[2].value, "1700003600"));
    tr_jwt_authn_free(a);
}

static void test_refused(void **state)
{
    struct tr_jwt_rule_cfg r = {
        .issuer = issuer, .jwks = jwks, .audiences = (const char *[]){"api"}, .n_audiences = 1};
    struct tr_jwt_authn *a = build_rule(&r);
    char token[8192], other[8192];
    const char *why;
    static const char *const payloads[] = {
        /* expired beyond the skew */
        "{\"iss\":\"https://issuer.example\",\"sub\":\"a\",\"exp\":1699999939}",
        /* not yet valid beyond the skew */
        "{\"iss\":\"https://issuer.example\",\"sub\":\"a\",\"nbf\":1700000061}",
        /* wrong audience */
        "{\"iss\":\"https://issuer.example\",\"sub\":\"a\",\"aud\":\"other\"}",
        /* no audience */
        "{\"iss\":\"https://issuer.example\",\"sub\":\"a\"}",
        /* unknown issuer */
        "{\"iss\":\"https://evil.example\",\"sub\":\"a\",\"aud\":\"api\"}",
        /* duplicate claim */
        "{\"iss\":\"https://issuer.example\",\"sub\":\"a\",\"aud\":\"api\",\"sub\":\"b\"}",
    };
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        sign("ES256", p256_key, "{\"alg\":\"ES256\"}", payloads[i], token);
        if (run(a, token, &why) != TR_JWT_INVALID)
            fail_msg("accepted payload %zu", i);
        assert_non_null(why);
        assert_false(rq.auth.authenticated);
    }
    /* Within the skew: accepted. */
    sign("ES256", p256_key, "{\"alg\":\"ES256\"}",
         "{\"iss\":\"https://"
         "issuer.example\",\"aud\":\"api\",\"exp\":1699999941,\"nbf\":1700000059}",
         token);
    assert_int_equal(run(a, token, &why), TR_JWT_VERIFIED);
    assert_true(TR_STR_EQ_LIT(rq.auth.principal, "https://issuer.example/"));

    const char *good = "{\"iss\":\"https://issuer.example\",\"sub\":\"a\",\"aud\":\"api\"}";
    /* A key not in the set. */
    sign("RS256", other_rsa, "{\"alg\":\"RS256\"}", good, token);
    assert_int_equal(run(a, token, &why), TR_JWT_INVALID);
    assert_string_equal(why, "Jwt verification fails");
    /* The kid names another key. */
    sign("RS256", rsa_key, "{\"alg\":\"RS256\",\"kid\":\"zz\"}", good, token);
    assert_int_equal(run(a, token, &why), TR_JWT_INVALID);
    /* A tampered payload under a good signature. */
    sign("RS256", rsa_key, "{\"alg\":\"RS256\"}", good, token);
    char h[64], p[512];
    b64url_str("{\"alg\":\"RS256\"}", h);
    b64url_str("{\"iss\":\"https://issuer.example\",\"sub\":\"root\",\"aud\":\"api\"}", p);
    snprintf(other, sizeof(other), "%s.%s%s", h, p, strrchr(token, '.'));
    assert_int_equal(run(a, other, &why), TR_JWT_INVALID);
    /* alg none, HMAC, alg confusion (an ES signature called RS). */
    snprintf(other, sizeof(other), "%s.", strchr(token, '.') + 0);
    b64url_str("{\"alg\":\"none\"}", h);
    b64url_str(good, p);
    snprintf(other, sizeof(other), "%s.%s.", h, p);
    assert_int_equal(run(a, other, &why), TR_JWT_INVALID);
    snprintf(other, sizeof(other), "%s.%s.c2ln", h, p);
    assert_int_equal(run(a, other, &why), TR_JWT_INVALID);
    b64url_str("{\"alg\":\"HS256\"}", h);
    snprintf(other, sizeof(other), "%s.%s.c2lnbmF0dXJl", h, p);
    assert_int_equal(run(a, other, &why), TR_JWT_INVALID);
    assert_string_equal(why, "Jwt algorithm is not supported");
    sign("ES256", p256_key, "{\"alg\":\"RS256\"}", good, token);
    assert_int_equal(run(a, token, &why), TR_JWT_INVALID);
    /* Malformed compact forms. */
    static const char *const forms[] = {"abc", "a.b", "a.b.c.d", "!!.e30.c2ln", "e30=.e30.c2ln"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++)
        assert_int_equal(run(a, forms[i], &why), TR_JWT_INVALID);
    /* Missing: not refused. */
    struct tr_str_pair none[] = {{TR_STR_LIT("host"), TR_STR_LIT("x")}};
    assert_int_equal(tr_jwt_authenticate(a, TR_STR_LIT("/"), none, 1, NOW, &rq, &why),
                     TR_JWT_MISSING);
    assert_false(rq.auth.authenticated);
    tr_jwt_authn_free(a);
}

static void test_locations(void **state)
{
    struct tr_jwt_header_cfg hdr[] = {{.name = "x-jwt", .prefix = "Tok "}};
    struct tr_jwt_rule_cfg r = {.issuer = issuer,
                                .jwks = jwks,
                                .from_headers = hdr,
                                .n_from_headers = 1,
                                .from_params = (const char *[]){"jwt"},
                                .n_from_params = 1,
                                .from_cookies = (const char *[]){"session"},
                                .n_from_cookies = 1};
    struct tr_jwt_authn *a = build_rule(&r);
    char token[8192], value[8300], target[8300];
    const char *why;
    sign("EdDSA", ed_key, "{\"alg\":\"EdDSA\"}", "{\"iss\":\"https://issuer.example\"}", token);
    snprintf(value, sizeof(value), "Tok %s", token);
    struct tr_str_pair h1[] = {{TR_STR_LIT("X-JWT"), tr_str_from(value, strlen(value))}};
    assert_int_equal(tr_jwt_authenticate(a, TR_STR_LIT("/"), h1, 1, NOW, &rq, &why),
                     TR_JWT_VERIFIED);
    snprintf(target, sizeof(target), "/p?a=1&jwt=%s&b=2", token);
    assert_int_equal(
        tr_jwt_authenticate(a, tr_str_from(target, strlen(target)), NULL, 0, NOW, &rq, &why),
        TR_JWT_VERIFIED);
    assert_int_equal(rq.n_drop, 0); /* a parameter is not a header to drop */
    snprintf(value, sizeof(value), "a=b; session=%s; c=d", token);
    struct tr_str_pair h2[] = {{TR_STR_LIT("cookie"), tr_str_from(value, strlen(value))}};
    assert_int_equal(tr_jwt_authenticate(a, TR_STR_LIT("/"), h2, 1, NOW, &rq, &why),
                     TR_JWT_VERIFIED);
    /* The default locations are not looked at when others are given. */
    snprintf(value, sizeof(value), "Bearer %s", token);
    struct tr_str_pair h3[] = {{TR_STR_LIT("authorization"), tr_str_from(value, strlen(value))}};
    assert_int_equal(tr_jwt_authenticate(a, TR_STR_LIT("/?access_token=x"), h3, 1, NOW, &rq, &why),
                     TR_JWT_MISSING);
    tr_jwt_authn_free(a);
}

static void test_jwks_refused(void **state)
{
    static const char *const bad[] = {
        "{}",
        "{\"keys\":{}}",
        "{\"keys\":[]}",
        "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", /* short */
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
        "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed448\",\"x\":\"AAAA\"}]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\"}]}",
        "{\"keys\":[1]}",
        "not json",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        struct tr_jwks *k = tr_jwks_parse(bad[i], strlen(bad[i]), &err);
        if (k != NULL)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(err);
        free(err);
    }
    char *err = NULL;
    struct tr_jwks *k = tr_jwks_parse(jwks, strlen(jwks), &err);
    assert_non_null(k);
    assert_int_equal(tr_jwks_count(k), 4); /* the oct key skipped */
    tr_jwks_free(k);
    /* A P-256 point off the curve. */
    char off[512];
    char x[80], y[80];
    ec_xy(p256_key, 32, x, y);
    y[5] = y[5] == 'A' ? 'B' : 'A';
    snprintf(off, sizeof(off),
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}", x, y);
    assert_null(tr_jwks_parse(off, strlen(off), &err));
    free(err);
}

/* jwks_uri: keys fetched by the worker (upstream/jwks_fetch.h) replace the
 * inline ones; without either, every token is invalid. */
static void test_fetched_keys(void **state)
{
    (void)state;
    struct tr_jwks_uri_cfg uri = {.url = "http://keys/j", .cluster_name = "keys"};
    struct tr_jwt_rule_cfg r = {.issuer = issuer, .jwks_uri = &uri};
    struct tr_jwt_authn *a = build_rule(&r);
    char token[8192];
    sign("ES256", p256_key, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", PAYLOAD, token);
    char value[9000];
    snprintf(value, sizeof(value), "Bearer %s", token);
    struct tr_str_pair h[] = {{TR_STR_LIT("authorization"), tr_str_from(value, strlen(value))}};
    const char *why;
    /* Not fetched yet. */
    assert_int_equal(run(a, token, &why), TR_JWT_INVALID);
    assert_string_equal(why, "Jwks doesn't have key to match kid or alg from Jwt");
    struct tr_jwks *none[1] = {NULL};
    assert_int_equal(tr_jwt_authenticate_keys(a, none, TR_STR_LIT("/"), h, 1, NOW, &rq, &why),
                     TR_JWT_INVALID);
    /* A request without a token still goes on. */
    assert_int_equal(tr_jwt_authenticate_keys(a, none, TR_STR_LIT("/"), NULL, 0, NOW, &rq, &why),
                     TR_JWT_MISSING);
    char *err = NULL;
    struct tr_jwks *fetched[1] = {tr_jwks_parse(jwks, strlen(jwks), &err)};
    assert_non_null(fetched[0]);
    assert_int_equal(tr_jwt_authenticate_keys(a, fetched, TR_STR_LIT("/"), h, 1, NOW, &rq, &why),
                     TR_JWT_VERIFIED);
    tr_jwt_authn_free(a);

    /* Both: the inline keys (another key) until a fetch, then the fetched. */
    char other[2048], n[400], e[16];
    bn_b64(other_rsa, OSSL_PKEY_PARAM_RSA_N, n);
    bn_b64(other_rsa, OSSL_PKEY_PARAM_RSA_E, e);
    snprintf(other, sizeof(other), "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}]}", n,
             e);
    struct tr_jwt_rule_cfg both = {.issuer = issuer, .jwks = other, .jwks_uri = &uri};
    a = build_rule(&both);
    assert_int_equal(tr_jwt_authenticate_keys(a, none, TR_STR_LIT("/"), h, 1, NOW, &rq, &why),
                     TR_JWT_INVALID);
    assert_string_equal(why, "Jwt verification fails");
    assert_int_equal(tr_jwt_authenticate_keys(a, fetched, TR_STR_LIT("/"), h, 1, NOW, &rq, &why),
                     TR_JWT_VERIFIED);
    char rs[8192];
    sign("RS256", other_rsa, "{\"alg\":\"RS256\"}", PAYLOAD, rs);
    assert_int_equal(run(a, rs, &why), TR_JWT_VERIFIED);
    tr_jwt_authn_free(a);
    tr_jwks_free(fetched[0]);
}

static void test_base64url(void **state)
{
    unsigned char out[16];
    assert_int_equal(tr_base64url_decode("aGk", 3, out, sizeof(out)), 2);
    assert_memory_equal(out, "hi", 2);
    assert_int_equal(tr_base64url_decode("aGl", 3, out, sizeof(out)), -1); /* unused bits */
    assert_int_equal(tr_base64url_decode("aGk=", 4, out, sizeof(out)), -1);
    assert_int_equal(tr_base64url_decode("a+k", 3, out, sizeof(out)), -1);
    assert_int_equal(tr_base64url_decode("a", 1, out, sizeof(out)), -1);
    assert_int_equal(tr_base64url_decode("_-_-", 4, out, sizeof(out)), 3);
    assert_int_equal(tr_base64url_decode("aGVsbG8", 7, out, 4), -1); /* does not fit */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64url),    cmocka_unit_test(test_algorithms),
        cmocka_unit_test(test_claims),       cmocka_unit_test(test_refused),
        cmocka_unit_test(test_locations),    cmocka_unit_test(test_jwks_refused),
        cmocka_unit_test(test_fetched_keys),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
