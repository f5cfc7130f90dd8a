#include "filter/jwt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "core/base64.h"

enum key_kind { KEY_RSA, KEY_EC_P256, KEY_EC_P384, KEY_ED25519 };

struct jwk {
    EVP_PKEY *pkey;
    enum key_kind kind;
    char kid[128]; /* "" when the key has none */
    char alg[8];   /* "" when the key has none */
};

struct tr_jwks {
    struct jwk keys[TR_JWT_MAX_KEYS];
    size_t n;
};

struct jwt_rule {
    const struct tr_jwt_rule_cfg *cfg;
    struct tr_jwks *jwks;
};

struct tr_jwt_authn {
    struct jwt_rule *rules;
    size_t n_rules;
};

__attribute__((format(printf, 1, 2))) static char *fmt_err(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return strdup(buf);
}

/* ----------------------------------------------------------------- JWKS */

/* A base64url member of a JWK decoded into out. */
static long jwk_bytes(const struct tr_json *j, uint32_t key, const char *name, unsigned char *out,
                      size_t cap)
{
    int t = tr_json_get(j, key, name);
    tr_str s = t < 0 ? (tr_str){0} : tr_json_raw_str(j, (uint32_t)t);
    if (s.p == NULL || s.len == 0)
        return -1;
    return tr_base64url_decode(s.p, s.len, out, cap);
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params != NULL && ctx != NULL && EVP_PKEY_fromdata_init(ctx) > 0)
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static const char *jwk_rsa(const struct tr_json *j, uint32_t key, struct jwk *out)
{
    unsigned char n[1024], e[16];
    long nl = jwk_bytes(j, key, "n", n, sizeof(n)), el = jwk_bytes(j, key, "e", e, sizeof(e));
    if (nl < 0 || el < 0)
        return "an RSA key needs base64url n and e";
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bn != NULL && be != NULL && bld != NULL && BN_num_bits(bn) >= 2048 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        out->pkey = pkey_from_params("RSA", bld);
    bool short_key = bn != NULL && BN_num_bits(bn) < 2048;
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    if (short_key)
        return "an RSA key shorter than 2048 bits";
    out->kind = KEY_RSA;
    return out->pkey == NULL ? "an unusable RSA key" : NULL;
}

static const char *jwk_ec(const struct tr_json *j, uint32_t key, struct jwk *out)
{
    int c = tr_json_get(j, key, "crv");
    tr_str crv = c < 0 ? (tr_str){0} : tr_json_raw_str(j, (uint32_t)c);
    const char *group;
    size_t size;
    if (TR_STR_EQ_LIT(crv, "P-256")) {
        group = "prime256v1";
        size = 32;
        out->kind = KEY_EC_P256;
    } else if (TR_STR_EQ_LIT(crv, "P-384")) {
        group = "secp384r1";
        size = 48;
        out->kind = KEY_EC_P384;
    } else {
        return "an EC key's crv must be P-256 or P-384";
    }
    unsigned char point[1 + 2 * 48];
    point[0] = 0x04; /* uncompressed */
    if (jwk_bytes(j, key, "x", point + 1, size) != (long)size ||
        jwk_bytes(j, key, "y", point + 1 + size, size) != (long)size)
        return "an EC key needs x and y of the curve's size";
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bld != NULL && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * size))
        out->pkey = pkey_from_params("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    if (out->pkey == NULL)
        return "an EC key whose point is not on its curve";
    /* fromdata does not check the point: check it as a public key. */
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, out->pkey, NULL);
    bool ok = ctx != NULL && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok ? NULL : "an EC key whose point is not on its curve";
}

static const char *jwk_okp(const struct tr_json *j, uint32_t key, struct jwk *out)
{
    int c = tr_json_get(j, key, "crv");
    tr_str crv = c < 0 ? (tr_str){0} : tr_json_raw_str(j, (uint32_t)c);
    if (!TR_STR_EQ_LIT(crv, "Ed25519"))
        return "an OKP key's crv must be Ed25519";
    unsigned char x[32];
    if (jwk_bytes(j, key, "x", x, sizeof(x)) != 32)
        return "an Ed25519 key needs a 32-byte x";
    out->kind = KEY_ED25519;
    out->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, sizeof(x));
    return out->pkey == NULL ? "an unusable Ed25519 key" : NULL;
}

/* An optional string member copied into out; false if present but not a
 * short string. */
static bool jwk_opt_str(const struct tr_json *j, uint32_t key, const char *name, char *out,
                        size_t cap)
{
    int t = tr_json_get(j, key, name);
    out[0] = '\0';
    if (t < 0)
        return true;
    long l = tr_json_str(j, (uint32_t)t, out, cap - 1);
    if (l < 0)
        return false;
    out[l] = '\0';
    return true;
}

void tr_jwks_free(struct tr_jwks *k)
{
    if (k == NULL)
        return;
    for (size_t i = 0; i < k->n; i++)
        EVP_PKEY_free(k->keys[i].pkey);
    free(k);
}

size_t tr_jwks_count(const struct tr_jwks *k)
{
    return k == NULL ? 0 : k->n;
}

struct tr_jwks *tr_jwks_parse(const char *text, size_t len, char **err)
{
    if (len > TR_JWT_MAX_JWKS) {
        *err = fmt_err("a JWKS is at most %d bytes", TR_JWT_MAX_JWKS);
        return NULL;
    }
    enum { MAX_TOK = 2048 };
    struct tr_json_tok *tok = malloc(MAX_TOK * sizeof(*tok));
    struct tr_jwks *ks = calloc(1, sizeof(*ks));
    struct tr_json j;
    const char *why = NULL;
    if (tok == NULL || ks == NULL) {
        why = "out of memory";
        goto fail;
    }
    if (!tr_json_parse(text, len, tok, MAX_TOK, &j, &why))
        goto fail;
    int keys = tr_json_get(&j, 0, "keys");
    if (keys < 0 || j.tok[keys].type != TR_JSON_ARRAY) {
        why = "no \"keys\" array";
        goto fail;
    }
    for (uint32_t i = 0; i < j.tok[keys].n; i++) {
        uint32_t k = tr_json_elem(&j, (uint32_t)keys, i);
        if (j.tok[k].type != TR_JSON_OBJECT) {
            why = "a key is not an object";
            goto fail;
        }
        char kty[8], use[8];
        struct jwk *out = &ks->keys[ks->n];
        if (!jwk_opt_str(&j, k, "kty", kty, sizeof(kty)) ||
            !jwk_opt_str(&j, k, "use", use, sizeof(use)) ||
            !jwk_opt_str(&j, k, "kid", out->kid, sizeof(out->kid)) ||
            !jwk_opt_str(&j, k, "alg", out->alg, sizeof(out->alg))) {
            why = "a key's kty, use, kid or alg is not a short string";
            goto fail;
        }
        if (use[0] != '\0' && strcmp(use, "sig") != 0)
            continue; /* an encryption key */
        const char *bad;
        if (strcmp(kty, "RSA") == 0)
            bad = jwk_rsa(&j, k, out);
        else if (strcmp(kty, "EC") == 0)
            bad = jwk_ec(&j, k, out);
        else if (strcmp(kty, "OKP") == 0)
            bad = jwk_okp(&j, k, out);
        else
            continue; /* "oct" (HMAC secrets) and others: never used */
        if (bad != NULL) {
            EVP_PKEY_free(out->pkey);
            out->pkey = NULL;
            *err = fmt_err("keys[%u]: %s", i, bad);
            free(tok);
            tr_jwks_free(ks);
            return NULL;
        }
        if (++ks->n == TR_JWT_MAX_KEYS)
            break;
    }
    if (ks->n == 0) {
        why = "no usable signature key (RSA, EC P-256/P-384, OKP Ed25519)";
        goto fail;
    }
    free(tok);
    return ks;
fail:
    *err = fmt_err("%s", why);
    free(tok);
    tr_jwks_free(ks);
    return NULL;
}

/* ---------------------------------------------------------------- build */

void tr_jwt_authn_free(struct tr_jwt_authn *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n_rules; i++)
        tr_jwks_free(a->rules[i].jwks);
    free(a->rules);
    free(a);
}

struct tr_jwt_authn *tr_jwt_authn_build(const struct tr_request_authn_cfg *cfg, char **err)
{
    *err = NULL;
    if (cfg->n_rules == 0)
        return NULL;
    struct tr_jwt_authn *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->rules = calloc(cfg->n_rules, sizeof(*a->rules))) == NULL) {
        free(a);
        *err = strdup("out of memory");
        return NULL;
    }
    a->n_rules = cfg->n_rules;
    for (size_t i = 0; i < cfg->n_rules; i++) {
        const struct tr_jwt_rule_cfg *r = &cfg->rules[i];
        a->rules[i].cfg = r;
        char *why = NULL;
        if (r->jwks == NULL && r->jwks_uri != NULL)
            continue; /* fetched keys only: none until a fetch succeeds */
        a->rules[i].jwks = r->jwks == NULL ? NULL : tr_jwks_parse(r->jwks, strlen(r->jwks), &why);
        if (a->rules[i].jwks == NULL) {
            *err = fmt_err("rules[%zu].jwks: %s", i, why != NULL ? why : "missing");
            free(why);
            tr_jwt_authn_free(a);
            return NULL;
        }
    }
    return a;
}

/* ------------------------------------------------------------- extract */

static const tr_str default_header = TR_STR_LIT("authorization");
static const tr_str default_prefix = TR_STR_LIT("Bearer ");
static const tr_str default_param = TR_STR_LIT("access_token");

static tr_str trim(tr_str s)
{
    while (s.len > 0 && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.len--;
    }
    while (s.len > 0 && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
        s.len--;
    return s;
}

/* A token from a header: the value after prefix (when there is one). */
static tr_str from_header(const struct tr_str_pair *h, uint32_t n, tr_str name, tr_str prefix,
                          tr_str *field)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!tr_str_ieq(h[i].name, name.p, name.len))
            continue;
        tr_str v = trim(h[i].value);
        if (prefix.len > 0) {
            /* The scheme is case-insensitive (RFC 7235 2.1). */
            if (v.len < prefix.len || strncasecmp(v.p, prefix.p, prefix.len) != 0)
                continue;
            v.p += prefix.len;
            v.len -= prefix.len;
        }
        *field = name; /* the configured (lowercase) name, for the drop */
        return trim(v);
    }
    return (tr_str){0};
}

static tr_str from_param(tr_str target, tr_str name)
{
    const char *q = memchr(target.p, '?', target.len);
    if (q == NULL)
        return (tr_str){0};
    const char *p = q + 1, *end = target.p + target.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (eq != NULL && (size_t)(eq - p) == name.len && memcmp(p, name.p, name.len) == 0)
            return tr_str_from(eq + 1, (size_t)(e - eq - 1));
        p = e + 1;
    }
    return (tr_str){0};
}

static tr_str from_cookie(const struct tr_str_pair *h, uint32_t n, const char *name)
{
    size_t nl = strlen(name);
    for (uint32_t i = 0; i < n; i++) {
        if (!TR_STR_IEQ_LIT(h[i].name, "cookie"))
            continue;
        const char *p = h[i].value.p, *end = p + h[i].value.len;
        while (p < end) {
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *e = semi != NULL ? semi : end;
            tr_str pair = trim(tr_str_from(p, (size_t)(e - p)));
            const char *eq = memchr(pair.p, '=', pair.len);
            if (eq != NULL && (size_t)(eq - pair.p) == nl && memcmp(pair.p, name, nl) == 0)
                return tr_str_from(eq + 1, (size_t)(pair.p + pair.len - eq - 1));
            p = e + 1;
        }
    }
    return (tr_str){0};
}

/* The rule's token, and the header it came in (empty: another place). */
static tr_str rule_token(const struct tr_jwt_rule_cfg *r, tr_str target,
                         const struct tr_str_pair *h, uint32_t n, tr_str *field)
{
    tr_str t;
    *field = (tr_str){0};
    if (r->n_from_headers == 0 && r->n_from_params == 0 && r->n_from_cookies == 0) {
        t = from_header(h, n, default_header, default_prefix, field);
        return t.p != NULL ? t : from_param(target, default_param);
    }
    for (size_t i = 0; i < r->n_from_headers; i++) {
        const struct tr_jwt_header_cfg *fh = &r->from_headers[i];
        tr_str prefix =
            fh->prefix != NULL ? tr_str_from(fh->prefix, strlen(fh->prefix)) : (tr_str){0};
        t = from_header(h, n, tr_str_from(fh->name, strlen(fh->name)), prefix, field);
        if (t.p != NULL)
            return t;
    }
    for (size_t i = 0; i < r->n_from_params; i++) {
        t = from_param(target, tr_str_from(r->from_params[i], strlen(r->from_params[i])));
        if (t.p != NULL)
            return t;
    }
    for (size_t i = 0; i < r->n_from_cookies; i++) {
        t = from_cookie(h, n, r->from_cookies[i]);
        if (t.p != NULL)
            return t;
    }
    return (tr_str){0};
}

/* --------------------------------------------------------------- verify */

struct alg {
    const char *name;
    const char *md; /* NULL: EdDSA (no separate digest) */
    enum key_kind kind;
    bool pss;
    size_t ec_size; /* bytes of r and of s in an ECDSA signature */
};

static const struct alg algs[] = {
    {"RS256", "SHA256", KEY_RSA, false, 0},      {"RS384", "SHA384", KEY_RSA, false, 0},
    {"RS512", "SHA512", KEY_RSA, false, 0},      {"PS256", "SHA256", KEY_RSA, true, 0},
    {"PS384", "SHA384", KEY_RSA, true, 0},       {"PS512", "SHA512", KEY_RSA, true, 0},
    {"ES256", "SHA256", KEY_EC_P256, false, 32}, {"ES384", "SHA384", KEY_EC_P384, false, 48},
    {"EdDSA", NULL, KEY_ED25519, false, 0},
};

/* An ECDSA signature (r || s, RFC 7518 3.4) as DER. */
static int ecdsa_der(const unsigned char *sig, size_t size, unsigned char *out, size_t cap)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)size, NULL), *s = BN_bin2bn(sig + size, (int)size, NULL);
    int len = -1;
    if (es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* owned by es */
        int need = i2d_ECDSA_SIG(es, NULL);
        if (need > 0 && (size_t)need <= cap) {
            unsigned char *p = out;
            len = i2d_ECDSA_SIG(es, &p);
        }
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return len;
}

static bool verify_with(const struct alg *al, EVP_PKEY *pkey, const char *input, size_t input_len,
                        const unsigned char *sig, size_t sig_len)
{
    unsigned char der[160];
    if (al->ec_size != 0) {
        if (sig_len != 2 * al->ec_size)
            return false;
        int dl = ecdsa_der(sig, al->ec_size, der, sizeof(der));
        if (dl < 0)
            return false;
        sig = der;
        sig_len = (size_t)dl;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool ok =
        ctx != NULL && EVP_DigestVerifyInit_ex(ctx, &pctx, al->md, NULL, NULL, pkey, NULL) == 1;
    if (ok && al->pss) {
        /* RFC 7518 3.5: the salt is as long as the digest, MGF1 with it. */
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
    }
    ok = ok && EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)input, input_len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

static bool verify(const struct tr_jwks *ks, const struct alg *al, tr_str kid, const char *input,
                   size_t input_len, const unsigned char *sig, size_t sig_len)
{
    for (size_t i = 0; i < ks->n; i++) {
        const struct jwk *k = &ks->keys[i];
        if (k->kind != al->kind || (k->alg[0] != '\0' && strcmp(k->alg, al->name) != 0))
            continue;
        if (kid.p != NULL && k->kid[0] != '\0' &&
            (strlen(k->kid) != kid.len || memcmp(k->kid, kid.p, kid.len) != 0))
            continue;
        if (verify_with(al, k->pkey, input, input_len, sig, sig_len))
            return true;
    }
    return false;
}

/* The space-separated words of v into out (up to max); returns how many. */
static size_t split_words(tr_str v, tr_str *out, size_t max)
{
    size_t n = 0;
    for (uint32_t i = 0; i < v.len;) {
        while (i < v.len && v.p[i] == ' ')
            i++;
        uint32_t start = i;
        while (i < v.len && v.p[i] != ' ')
            i++;
        if (i > start) {
            if (n < max)
                out[n] = tr_str_from(v.p + start, i - start);
            n++;
        }
    }
    return n;
}

static size_t claim_lookup(const void *claims, const tr_str *path, size_t depth, tr_str *out,
                           size_t max)
{
    const struct tr_json *j = claims;
    if (j == NULL || j->n_tok == 0 || depth == 0)
        return 0;
    uint32_t t = 0;
    for (size_t i = 0; i < depth; i++) {
        char key[TR_JSON_MAX_KEY];
        if (!tr_str_to_cstr(key, sizeof(key), path[i]))
            return 0;
        int v = tr_json_get(j, t, key);
        if (v < 0)
            return 0;
        t = (uint32_t)v;
    }
    if (j->tok[t].type == TR_JSON_STRING) {
        tr_str v = tr_json_raw_str(j, t);
        /* Istio's default space-delimited claims: scope and permission
         * (OAuth 2.0 "a b c") are lists for authorization. */
        if (depth == 1 && (TR_STR_EQ_LIT(path[0], "scope") || TR_STR_EQ_LIT(path[0], "permission")))
            return split_words(v, out, max);
        if (max > 0)
            out[0] = v;
        return 1;
    }
    if (j->tok[t].type != TR_JSON_ARRAY)
        return 0;
    size_t n = 0;
    for (uint32_t i = 0, e = t + 1; i < j->tok[t].n; i++, e = j->tok[e].next) {
        if (j->tok[e].type != TR_JSON_STRING)
            continue;
        if (n < max)
            out[n] = tr_json_raw_str(j, e);
        n++;
    }
    return n;
}

static tr_str member_str(const struct tr_json *j, const char *name)
{
    int t = tr_json_get(j, 0, name);
    return t < 0 ? (tr_str){0} : tr_json_raw_str(j, (uint32_t)t);
}

/* A value fit for a header field: visible ASCII, spaces and tabs. */
static bool field_safe(tr_str v)
{
    for (uint32_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* Check a token against one rule (the one its issuer names). */
static const char *check_token(const struct jwt_rule *rule, const struct tr_jwks *keys,
                               tr_str token, int64_t now, struct tr_jwt_request *rq,
                               const char *dot1, const char *dot2)
{
    const char *err = NULL;
    size_t hl = (size_t)(dot1 - token.p);
    long hn = tr_base64url_decode(token.p, hl, (unsigned char *)rq->header, sizeof(rq->header));
    if (hn < 0)
        return "Jwt header is an invalid Base64url encoded";
    struct tr_json hj;
    if (!tr_json_parse(rq->header, (size_t)hn, rq->tok, TR_JWT_MAX_HEADER_JSON, &hj, &err) ||
        hj.tok[0].type != TR_JSON_OBJECT)
        return "Jwt header is an invalid JSON";
    tr_json_unescape(rq->header, rq->tok, hj.n_tok);
    if (tr_json_get(&hj, 0, "crit") >= 0)
        return "Jwt header has critical extensions";
    tr_str alg_name = member_str(&hj, "alg");
    const struct alg *al = NULL;
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        if (tr_str_eq(alg_name, algs[i].name, strlen(algs[i].name)))
            al = &algs[i];
    }
    if (al == NULL)
        return "Jwt algorithm is not supported";
    int kt = tr_json_get(&hj, 0, "kid");
    tr_str kid = kt < 0 ? (tr_str){0} : tr_json_raw_str(&hj, (uint32_t)kt);
    if (kt >= 0 && kid.p == NULL)
        return "Jwt kid is not a string";
    /* kid points into rq->header, which stays as it is from here on. */
    unsigned char sig[1024];
    const char *sig_b64 = dot2 + 1;
    long sn =
        tr_base64url_decode(sig_b64, (size_t)(token.p + token.len - sig_b64), sig, sizeof(sig));
    if (sn <= 0)
        return "Jwt signature is an invalid Base64url encoded";
    /* Envoy's words when the set has no key for the token, here also a
     * set not fetched yet (jwks_uri without inline keys). */
    if (keys == NULL)
        return "Jwks doesn't have key to match kid or alg from Jwt";
    if (!verify(keys, al, kid, token.p, (size_t)(dot2 - token.p), sig, (size_t)sn))
        return "Jwt verification fails";

    /* The payload was parsed already (to find the rule): its claims. */
    const struct tr_json *j = &rq->claims;
    int64_t exp, nbf;
    int t = tr_json_get(j, 0, "exp");
    if (t >= 0 && !tr_json_int(j, (uint32_t)t, &exp))
        return "Jwt exp is not a number";
    if (t >= 0 && exp + TR_JWT_CLOCK_SKEW_S < now)
        return "Jwt is expired";
    t = tr_json_get(j, 0, "nbf");
    if (t >= 0 && !tr_json_int(j, (uint32_t)t, &nbf))
        return "Jwt nbf is not a number";
    if (t >= 0 && nbf > now + TR_JWT_CLOCK_SKEW_S)
        return "Jwt not yet valid";

    struct tr_request_auth *au = &rq->auth;
    t = tr_json_get(j, 0, "aud");
    if (t >= 0) {
        size_t n = claim_lookup(j, &TR_STR_LIT("aud"), 1, rq->audiences, TR_JWT_MAX_AUDIENCES);
        if (j->tok[t].type == TR_JSON_STRING)
            n = 1;
        else if (j->tok[t].type != TR_JSON_ARRAY || n != j->tok[t].n)
            return "Jwt aud is not a string or a list of strings";
        if (n > TR_JWT_MAX_AUDIENCES)
            return "Jwt has too many audiences";
        au->audiences = rq->audiences;
        au->n_audiences = n;
    }
    const struct tr_jwt_rule_cfg *cfg = rule->cfg;
    if (cfg->n_audiences > 0) {
        bool found = false;
        for (size_t i = 0; i < cfg->n_audiences && !found; i++) {
            for (size_t k = 0; k < au->n_audiences && !found; k++)
                found = tr_str_eq(au->audiences[k], cfg->audiences[i], strlen(cfg->audiences[i]));
        }
        if (!found)
            return "Audiences in Jwt are not allowed";
    }
    tr_str iss = member_str(j, "iss"), sub = member_str(j, "sub");
    t = tr_json_get(j, 0, "sub");
    if (t >= 0 && sub.p == NULL)
        return "Jwt sub is not a string";
    int pl = snprintf(rq->principal, sizeof(rq->principal), "%.*s/%.*s", (int)iss.len, iss.p,
                      (int)sub.len, sub.p != NULL ? sub.p : "");
    if (pl < 0 || (size_t)pl >= sizeof(rq->principal))
        return "Jwt iss and sub are too long";
    au->principal = tr_str_from(rq->principal, (size_t)pl);
    au->presenter = member_str(j, "azp");
    au->claim = claim_lookup;
    au->claims = j;
    au->authenticated = true;

    /* What goes upstream. */
    if (cfg->output_payload_to_header != NULL) {
        const char *p = dot1 + 1;
        rq->add[rq->n_add++] = (struct tr_jwt_field){
            tr_str_from(cfg->output_payload_to_header, strlen(cfg->output_payload_to_header)),
            tr_str_from(p, (size_t)(dot2 - p))};
    }
    for (size_t i = 0; i < cfg->n_output_claim_to_headers && rq->n_add < TR_JWT_MAX_OUTPUTS; i++) {
        const struct tr_jwt_claim_header_cfg *ch = &cfg->output_claim_to_headers[i];
        int c = tr_json_get(j, 0, ch->claim);
        if (c < 0)
            continue;
        const struct tr_json_tok *ct = &j->tok[c];
        tr_str v = {0};
        if (ct->type == TR_JSON_STRING || ct->type == TR_JSON_NUMBER)
            v = tr_str_from(j->text + ct->start, ct->len);
        else if (ct->type == TR_JSON_TRUE)
            v = TR_STR_LIT("true");
        else if (ct->type == TR_JSON_FALSE)
            v = TR_STR_LIT("false");
        if (v.p == NULL || !field_safe(v))
            continue;
        rq->add[rq->n_add++] =
            (struct tr_jwt_field){tr_str_from(ch->header, strlen(ch->header)), v};
    }
    return NULL;
}

enum tr_jwt_status tr_jwt_authenticate(const struct tr_jwt_authn *a, tr_str target,
                                       const struct tr_str_pair *headers, uint32_t n_headers,
                                       int64_t now, struct tr_jwt_request *rq, const char **why)
{
    return tr_jwt_authenticate_keys(a, NULL, target, headers, n_headers, now, rq, why);
}

enum tr_jwt_status tr_jwt_authenticate_keys(const struct tr_jwt_authn *a,
                                            struct tr_jwks *const *fetched, tr_str target,
                                            const struct tr_str_pair *headers, uint32_t n_headers,
                                            int64_t now, struct tr_jwt_request *rq,
                                            const char **why)
{
    rq->auth = (struct tr_request_auth){0};
    rq->n_add = rq->n_drop = 0;
    rq->claims = (struct tr_json){0};
    *why = NULL;
    if (a == NULL)
        return TR_JWT_MISSING;
    /* Output fields never come from the client. */
    for (size_t i = 0; i < a->n_rules; i++) {
        const struct tr_jwt_rule_cfg *r = a->rules[i].cfg;
        if (r->output_payload_to_header != NULL && rq->n_drop < TR_JWT_MAX_OUTPUTS)
            rq->drop[rq->n_drop++] =
                tr_str_from(r->output_payload_to_header, strlen(r->output_payload_to_header));
        for (size_t k = 0; k < r->n_output_claim_to_headers && rq->n_drop < TR_JWT_MAX_OUTPUTS;
             k++) {
            const char *h = r->output_claim_to_headers[k].header;
            rq->drop[rq->n_drop++] = tr_str_from(h, strlen(h));
        }
    }
    bool seen = false;
    for (size_t i = 0; i < a->n_rules; i++) {
        const struct jwt_rule *rule = &a->rules[i];
        tr_str field;
        tr_str token = rule_token(rule->cfg, target, headers, n_headers, &field);
        if (token.p == NULL)
            continue;
        seen = true;
        if (token.len > TR_JWT_MAX_TOKEN) {
            *why = "Jwt is too long";
            return TR_JWT_INVALID;
        }
        const char *dot1 = memchr(token.p, '.', token.len);
        const char *dot2 =
            dot1 == NULL ? NULL : memchr(dot1 + 1, '.', (size_t)(token.p + token.len - dot1 - 1));
        if (dot2 == NULL ||
            memchr(dot2 + 1, '.', (size_t)(token.p + token.len - dot2 - 1)) != NULL) {
            *why = "Jwt is not in the form of Header.Payload.Signature";
            return TR_JWT_INVALID;
        }
        long pn = tr_base64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1),
                                      (unsigned char *)rq->payload, sizeof(rq->payload));
        const char *err;
        /* The payload's tokens go after the header's. */
        if (pn < 0 ||
            !tr_json_parse(rq->payload, (size_t)pn, rq->tok + TR_JWT_MAX_HEADER_JSON,
                           TR_JWT_MAX_JSON - TR_JWT_MAX_HEADER_JSON, &rq->claims, &err) ||
            rq->claims.tok[0].type != TR_JSON_OBJECT) {
            *why = "Jwt payload is an invalid JSON";
            return TR_JWT_INVALID;
        }
        tr_json_unescape(rq->payload, rq->tok + TR_JWT_MAX_HEADER_JSON, rq->claims.n_tok);
        tr_str iss = member_str(&rq->claims, "iss");
        if (!tr_str_eq(iss, rule->cfg->issuer, strlen(rule->cfg->issuer)))
            continue; /* another rule's token, perhaps */
        /* The header's JSON takes the first TR_JWT_MAX_HEADER_JSON of rq->tok. */
        const struct tr_jwks *keys =
            fetched != NULL && fetched[i] != NULL ? fetched[i] : rule->jwks;
        const char *bad = check_token(rule, keys, token, now, rq, dot1, dot2);
        if (bad != NULL) {
            rq->auth = (struct tr_request_auth){0};
            rq->n_add = 0;
            *why = bad;
            return TR_JWT_INVALID;
        }
        if (!rule->cfg->forward_original_token && field.p != NULL)
            rq->drop[rq->n_drop++] = field;
        return TR_JWT_VERIFIED;
    }
    if (seen) {
        *why = "Jwt issuer is not configured";
        return TR_JWT_INVALID;
    }
    return TR_JWT_MISSING;
}

const struct tr_header_edit *tr_jwt_request_edit(struct tr_jwt_request *rq,
                                                 const struct tr_header_edit *base)
{
    if (rq->n_drop == 0 && rq->n_add == 0)
        return base;
    uint32_t bd = base != NULL ? base->n_drop : 0, be = base != NULL ? base->n_emit : 0;
    if (bd + rq->n_drop > TR_JWT_MAX_EDIT || be + rq->n_add > TR_JWT_MAX_EDIT)
        return base; /* unreachable: routes edit at most a few hundred fields */
    struct tr_header_edit *e = &rq->edit;
    *e = (struct tr_header_edit){0};
    if (base != NULL) {
        memcpy(rq->edit_drop, base->drop, bd * sizeof(*base->drop));
        memcpy(rq->edit_emit, base->emit, be * sizeof(*base->emit));
        e->drop_len_mask = base->drop_len_mask;
        e->emit_bytes = base->emit_bytes;
    }
    e->n_drop = bd;
    e->n_emit = be;
    for (size_t i = 0; i < rq->n_drop; i++) {
        rq->edit_drop[e->n_drop++] = (struct tr_header_edit_name){rq->drop[i].p, rq->drop[i].len};
        e->drop_len_mask |= 1ull << (rq->drop[i].len % 64);
    }
    for (size_t i = 0; i < rq->n_add; i++) {
        const struct tr_jwt_field *f = &rq->add[i];
        rq->edit_emit[e->n_emit++] =
            (struct tr_header_edit_field){f->name.p, f->value.p, f->name.len, f->value.len};
        e->emit_bytes += f->name.len + f->value.len;
    }
    e->drop = rq->edit_drop;
    e->emit = rq->edit_emit;
    return e;
}

tr_str tr_jwt_challenge(struct tr_jwt_request *rq, tr_str scheme, tr_str host, tr_str target)
{
    const char *q = memchr(target.p, '?', target.len);
    size_t path_len = q != NULL ? (size_t)(q - target.p) : target.len;
    /* The realm is quoted: a '"' or '\\' in it would end or escape the
     * string, so such a request gets no realm text past them. */
    char realm[400];
    int rl = snprintf(realm, sizeof(realm), "%.*s://%.*s%.*s", (int)scheme.len, scheme.p,
                      (int)host.len, host.p, (int)path_len, target.p);
    size_t n = rl < 0 ? 0 : (size_t)rl < sizeof(realm) ? (size_t)rl : sizeof(realm) - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)realm[i];
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) {
            n = i;
            break;
        }
    }
    int l = snprintf(rq->challenge, sizeof(rq->challenge),
                     "Bearer realm=\"%.*s\", error=\"invalid_token\"", (int)n, realm);
    return tr_str_from(rq->challenge, l < 0 ? 0 : (size_t)l);
}
